//! `/agency`: an agency admin's sub-accounts, and the tenant switcher's `POST /switch`.

use maud::html;
use poem::http::StatusCode;
use poem::web::{Form, Redirect};
use poem::{IntoResponse, Response, handler};
use serde::Deserialize;
use switchboard_api::auth::{CsrfToken, Member, User};
use switchboard_domain::TenantId;
use switchboard_services::accounts::NewBusiness;
use switchboard_services::{App, ServiceError, agency};
use uuid::Uuid;

use crate::layout::{Chrome, business_fields, page};
use crate::{AppData, PageError, optional_phone};

/// The agency page; after a refused sub-account form, its `error` and the fields as typed
/// (business name, time zone, notification phone).
async fn render(
    app: &App,
    member: &Member,
    csrf: &CsrfToken,
    refused: Option<(&str, &SubAccountForm)>,
) -> Result<maud::Markup, PageError> {
    let error = refused.map(|(e, _)| e);
    let (name, time_zone, notify) = match refused {
        Some((_, f)) => (
            f.business_name.as_str(),
            f.time_zone.as_str(),
            f.notify_phone.as_deref().unwrap_or(""),
        ),
        None => ("", "America/Chicago", ""),
    };
    let chrome = Chrome::member(app, member, csrf).await?;
    let Some(agency) = &chrome.reach.agency else {
        return Err(ServiceError::Forbidden("This page is for agency admins.".into()).into());
    };
    let body = html! {
        div.settings {
            @if let Some(e) = error { p.card.form-error role="alert" { (e) } }
            section.card {
                h2 { (agency.name) ": sub-accounts" }
                table {
                    thead { tr { th { "Business" } th { "Access" } th {} } }
                    tbody {
                        @for c in &chrome.reach.choices {
                            tr {
                                td { (c.name) }
                                td { @if c.via_agency { "agency admin" } @else { "member" } }
                                td {
                                    @if c.tenant_id == member.ctx().tenant_id() { span.pill.active { "current" } }
                                    @else {
                                        form method="post" action="/switch" {
                                            (chrome.csrf_field())
                                            input type="hidden" name="tenant" value=(c.tenant_id);
                                            button.secondary type="submit" { "Switch to" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { "New sub-account" }
                form.stack method="post" action="/agency/sub-accounts" {
                    (chrome.csrf_field())
                    (business_fields(name, time_zone, notify))
                    button type="submit" { "Create sub-account" }
                }
            }
        }
    };
    Ok(page(&chrome, "Agency", Some("/agency"), body))
}

/// `GET /agency` (agency admins; 403 for anyone else).
#[handler]
pub(crate) async fn page_handler(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
) -> Result<maud::Markup, PageError> {
    render(app.0, &member, &csrf, None).await
}

#[derive(Deserialize)]
pub(crate) struct SubAccountForm {
    business_name: String,
    time_zone: String,
    notify_phone: Option<String>,
}

/// `POST /agency/sub-accounts`: creates the business under the agency and switches to it.
#[handler]
pub(crate) async fn create(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Form(f): Form<SubAccountForm>,
) -> Result<Response, PageError> {
    let result = async {
        let notify_phone = optional_phone("notify_phone", f.notify_phone.as_deref())?;
        let new = NewBusiness {
            name: f.business_name.clone(),
            time_zone: f.time_zone.clone(),
            notify_phone,
        };
        agency::create_sub_account(app.0, &member.session_id, member.user_id, new).await
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::see_other("/").into_response()),
        Err(e @ ServiceError::Invalid { .. }) => {
            let page = render(app.0, &member, &csrf, Some((&e.to_string(), &f))).await?;
            Ok((StatusCode::BAD_REQUEST, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub(crate) struct SwitchForm {
    tenant: Uuid,
    /// Where to go once switched (a local path; the dashboard otherwise).
    next: Option<String>,
}

/// `POST /switch` (`tenant`, optional `next`): works in another business from now on, if the
/// user may (404 otherwise: another agency's tenant does not exist for them), then goes to
/// `next` (a local path) or the dashboard. Any signed-in user may ask, also one just removed
/// from the session's business, who still belongs to others.
#[handler]
pub(crate) async fn switch(
    app: AppData<'_>,
    user: User,
    Form(f): Form<SwitchForm>,
) -> Result<Redirect, PageError> {
    agency::switch(
        app.0,
        &user.session_id,
        user.user.user_id,
        TenantId(f.tenant),
    )
    .await?;
    Ok(Redirect::see_other(crate::auth::safe_next(
        f.next.as_deref(),
    )))
}
