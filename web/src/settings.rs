//! `/settings`: business profile, members, API keys, the Twilio connection and numbers, and
//! the webhook URLs to paste into Twilio. Owners and admins change them; agents see them
//! read-only and get 403 on every change.

use maud::{Markup, html};
use poem::http::StatusCode;
use poem::web::{Form, Path, Query, Redirect};
use poem::{IntoResponse, Response, handler};
use secrecy::ExposeSecret;
use serde::Deserialize;
use switchboard_api::auth::{CsrfToken, Member};
use switchboard_domain::accounts::Role;
use switchboard_domain::phone::E164;
use switchboard_domain::{ApiKeyId, InviteId, MembershipId, PhoneNumberId};
use switchboard_services::accounts::{self, NewBusiness};
use switchboard_services::settings::{self, Profile};
use switchboard_services::tenancy::BotKind;
use switchboard_services::{App, ServiceError, invites};
use uuid::Uuid;

use crate::layout::{Chrome, ago, business_fields, page};
use crate::{AppData, PageError, optional_phone};

/// What the page says above the sections after an action.
#[derive(Default)]
struct Flash {
    notice: Option<String>,
    error: Option<String>,
    /// A key created just now, shown once.
    new_key: Option<String>,
    /// What the user typed into the form that failed, shown again in place of the stored
    /// values (or the empty field).
    typed: Typed,
}

/// A refused form's fields as typed (the auth token is never sent back).
#[derive(Default)]
struct Typed {
    /// Business name, time zone, notification phone.
    profile: Option<(String, String, String)>,
    account_sid: Option<String>,
    e164: Option<String>,
    invite_email: Option<String>,
    key_name: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct Done {
    done: Option<String>,
}

/// Notices by the `?done=` code a redirect carries (never text from the URL).
fn notice(code: &str) -> Option<&'static str> {
    Some(match code {
        "profile" => "Business profile saved.",
        "twilio" => "Twilio account connected.",
        "twilio-off" => "Twilio account disconnected.",
        "number" => "Number added. Point its messaging webhook at the URL below.",
        "number-off" => "Number removed: its conversations stay in the inbox, read-only.",
        "revoked" => "API key revoked.",
        "member" => "Member updated.",
        "invited" => "Invite sent. The link works for 7 days.",
        "invite-off" => "Invite withdrawn.",
        _ => return None,
    })
}

async fn render(
    app: &App,
    member: &Member,
    csrf: &CsrfToken,
    flash: Flash,
    status: StatusCode,
) -> Result<Response, PageError> {
    let ctx = member.ctx();
    let profile = settings::profile(app, ctx).await?;
    let members = accounts::members(app, ctx).await?;
    let keys = settings::api_keys(app, ctx).await?;
    let pending = invites::pending(app, ctx).await?;
    let chrome = Chrome::member(app, member, csrf).await?;
    let manage = member.role().manages();
    let sms_url = app.settings.public_url("/webhooks/twilio/sms");
    let status_url = app.settings.public_url("/webhooks/twilio/status");
    let body = html! {
        div.settings {
            @if let Some(n) = &flash.notice { p.card.notice role="status" { (n) } }
            @if let Some(e) = &flash.error { p.card.form-error role="alert" { (e) } }
            @if let Some(k) = &flash.new_key {
                section.card {
                    h2 { "Your new API key" }
                    p { "Copy it now: it is shown only this once. Use it as " code { "Authorization: Bearer <key>" } "." }
                    p.secret { (k) }
                    button.secondary type="button" data-copy=(k) { "Copy" }
                }
            }
            @if !manage {
                p.card.empty { "You are an agent here: settings are read-only for you." }
            }
            (profile_section(&chrome, &profile, &flash.typed, manage))
            (webhooks_section(&sms_url, &status_url))
            (twilio_section(&chrome, &profile, &flash.typed, manage))
            (members_section(&chrome, &members, &pending, &flash.typed, member, manage))
            (keys_section(&chrome, &keys, &flash.typed, manage))
        }
    };
    Ok((status, page(&chrome, "Settings", Some("/settings"), body)).into_response())
}

fn profile_section(chrome: &Chrome, p: &Profile, typed: &Typed, manage: bool) -> Markup {
    let (name, time_zone, notify) = match &typed.profile {
        Some((name, tz, notify)) => (name.as_str(), tz.as_str(), notify.as_str()),
        None => (
            p.name.as_str(),
            p.time_zone.as_str(),
            p.notify_phone.as_deref().unwrap_or(""),
        ),
    };
    html! {
        section.card id="profile" {
            h2 { "Business profile" }
            form.stack method="post" action="/settings/profile" {
                (chrome.csrf_field())
                fieldset disabled[!manage] {
                    (business_fields(name, time_zone, notify))
                    @if manage { button type="submit" { "Save profile" } }
                }
            }
        }
    }
}

fn webhooks_section(sms_url: &str, status_url: &str) -> Markup {
    html! {
        section.card id="webhooks" {
            h2 { "Webhook URLs" }
            p.hint { "In Twilio Console → Phone Numbers → your number → Messaging, set “A message comes in” to:" }
            div.row { code { (sms_url) } button.secondary type="button" data-copy=(sms_url) { "Copy" } }
            p.hint { "Delivery status callbacks are requested with each message we send; they go to:" }
            div.row { code { (status_url) } button.secondary type="button" data-copy=(status_url) { "Copy" } }
        }
    }
}

fn twilio_section(chrome: &Chrome, p: &Profile, typed: &Typed, manage: bool) -> Markup {
    let account_sid = typed
        .account_sid
        .as_deref()
        .or(p.twilio_account_sid.as_deref())
        .unwrap_or("");
    html! {
        section.card id="twilio" {
            h2 { "Twilio connection" }
            @match (&p.twilio_account_sid, &p.twilio_token_last4) {
                (Some(sid), Some(last4)) => {
                    p { "Account " code { (sid) } ", auth token " code { "••••••••" (last4) } }
                    @if manage {
                        div.row {
                            form method="post" action="/settings/twilio/test" { (chrome.csrf_field()) button.secondary type="submit" { "Test connection" } }
                            form method="post" action="/settings/twilio/disconnect" { (chrome.csrf_field()) button.danger type="submit" { "Disconnect" } }
                        }
                    }
                }
                _ => p.hint { "No Twilio account of your own is connected: texts go through the platform account, or the simulator when there is none." }
            }
            @if manage {
                form.stack method="post" action="/settings/twilio" {
                    (chrome.csrf_field())
                    label { "Account SID" input name="account_sid" value=(account_sid) placeholder="AC…" pattern="AC[0-9a-fA-F]{32}" required; }
                    label { "Auth token " small { "(stored encrypted; leave empty to keep the current one)" }
                        input type="password" name="auth_token" autocomplete="off";
                    }
                    button type="submit" { "Save Twilio account" }
                }
            }
            h2 { "Numbers" }
            table {
                thead { tr { th { "Number" } th { "Answered by" } th {} } }
                tbody {
                    @for n in &p.numbers {
                        tr {
                            td { (n.e164) }
                            td { @match n.bot { BotKind::Qualify => "built-in qualification bot", BotKind::None => "no bot (inbox only)" } }
                            td { @if manage {
                                form method="post" action={ "/settings/numbers/" (n.id) "/remove" } { (chrome.csrf_field()) button.danger type="submit" { "Remove" } }
                            } }
                        }
                    }
                }
            }
            @if p.numbers.is_empty() { p.empty { "No numbers yet." } }
            @if !p.removed_numbers.is_empty() {
                h3 { "Removed numbers" }
                p.hint { "Their conversations stay in the inbox, read-only. Adding one back brings them back to life." }
                table {
                    tbody {
                        @for n in &p.removed_numbers {
                            tr {
                                td { (n.e164) }
                                td { @if manage {
                                    form method="post" action="/settings/numbers" {
                                        (chrome.csrf_field())
                                        input type="hidden" name="e164" value=(n.e164);
                                        button.secondary type="submit" { "Add back" }
                                    }
                                } }
                            }
                        }
                    }
                }
            }
            @if p.numbers_by_operator {
                p.hint { "Numbers on the platform's Twilio account are assigned by its operator. To add your own, connect your Twilio account above." }
            } @else if manage {
                form.row method="post" action="/settings/numbers" {
                    (chrome.csrf_field())
                    input type="tel" name="e164" value=[typed.e164.as_deref()] placeholder="+15125550123" required aria-label="Number in E.164";
                    button type="submit" { "Add number" }
                }
            }
        }
    }
}

fn members_section(
    chrome: &Chrome,
    members: &[accounts::MemberView],
    pending: &[invites::InviteView],
    typed: &Typed,
    me: &Member,
    manage: bool,
) -> Markup {
    html! {
        section.card id="members" {
            h2 { "Members" }
            table {
                thead { tr { th { "Email" } th { "Role" } th { "Joined" } th {} } }
                tbody {
                    @for m in members {
                        tr {
                            td { (m.email) @if m.user_id == me.user_id { " (you)" } }
                            td { (m.role.as_str()) }
                            td { (ago(m.joined_at)) }
                            td { @if manage {
                                form.row method="post" action={ "/settings/members/" (m.id) } {
                                    (chrome.csrf_field())
                                    select name="role" aria-label="Role" {
                                        @for r in Role::ALL {
                                            option value=(r.as_str()) selected[r == m.role] { (r.as_str()) }
                                        }
                                        option value="remove" { "remove from business" }
                                    }
                                    button.secondary type="submit" { "Apply" }
                                }
                            } }
                        }
                    }
                    @for i in pending {
                        tr {
                            td { (i.email) }
                            td { (i.role.as_str()) }
                            td { @if i.expires_at > chrono::Utc::now() { span.pill.pending { "invited" } } @else { span.pill.closed { "invite expired" } } }
                            td { @if manage {
                                form method="post" action={ "/settings/invites/" (i.id) "/revoke" } { (chrome.csrf_field()) button.danger type="submit" { "Withdraw" } }
                            } }
                        }
                    }
                }
            }
            @if manage {
                form.row method="post" action="/settings/invites" {
                    (chrome.csrf_field())
                    input type="email" name="email" value=[typed.invite_email.as_deref()] placeholder="colleague@example.com" required aria-label="Email to invite";
                    select name="role" aria-label="Role" {
                        @for r in Role::ALL.into_iter().rev() { option value=(r.as_str()) { (r.as_str()) } }
                    }
                    button type="submit" { "Invite" }
                }
            }
        }
    }
}

fn keys_section(
    chrome: &Chrome,
    keys: &[settings::ApiKeyView],
    typed: &Typed,
    manage: bool,
) -> Markup {
    html! {
        section.card id="api-keys" {
            h2 { "API keys" }
            p.hint { "For the REST API (" a href="/api/docs" { "documentation" } "). A key acts for this business only." }
            table {
                thead { tr { th { "Name" } th { "Key" } th { "Created" } th { "Status" } th {} } }
                tbody {
                    @for k in keys {
                        tr {
                            td { (k.name) }
                            td { code { (k.prefix) "…" } }
                            td { (ago(k.created_at)) }
                            td { @if k.revoked_at.is_some() { span.pill.closed { "revoked" } } @else { span.pill.active { "active" } } }
                            td { @if manage && k.revoked_at.is_none() {
                                form method="post" action={ "/settings/api-keys/" (k.id) "/revoke" } { (chrome.csrf_field()) button.danger type="submit" { "Revoke" } }
                            } }
                        }
                    }
                }
            }
            @if manage {
                form.row method="post" action="/settings/api-keys" {
                    (chrome.csrf_field())
                    input name="name" value=[typed.key_name.as_deref()] placeholder="Key name, e.g. Zapier" maxlength="60" required aria-label="Key name";
                    button type="submit" { "Create key" }
                }
            }
        }
    }
}

/// `GET /settings[?done=code]`.
#[handler]
pub(crate) async fn page_handler(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Query(q): Query<Done>,
) -> Result<Response, PageError> {
    let flash = Flash {
        notice: q.done.as_deref().and_then(notice).map(String::from),
        ..Flash::default()
    };
    render(app.0, &member, &csrf, flash, StatusCode::OK).await
}

/// After a change: back to the page with a notice, or the page again with the error (400 for
/// invalid input naming the field, 409 for a conflict, 404 for another tenant's id).
async fn outcome(
    app: &App,
    member: &Member,
    csrf: &CsrfToken,
    result: Result<(), ServiceError>,
    done: &str,
) -> Result<Response, PageError> {
    outcome_typed(app, member, csrf, result, done, Typed::default()).await
}

/// [`outcome`], the page again showing what the user `typed` when the change was refused.
async fn outcome_typed(
    app: &App,
    member: &Member,
    csrf: &CsrfToken,
    result: Result<(), ServiceError>,
    done: &str,
    typed: Typed,
) -> Result<Response, PageError> {
    let e = match result {
        Ok(()) => {
            return Ok(Redirect::see_other(format!("/settings?done={done}")).into_response());
        }
        Err(e) => e,
    };
    let status = match &e {
        ServiceError::Invalid { .. } => StatusCode::BAD_REQUEST,
        ServiceError::Conflict(_) => StatusCode::CONFLICT,
        ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
        ServiceError::Provider(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => return Err(e.into()),
    };
    let flash = Flash {
        error: Some(e.to_string()),
        typed,
        ..Flash::default()
    };
    render(app, member, csrf, flash, status).await
}

#[derive(Deserialize)]
pub(crate) struct ProfileForm {
    business_name: String,
    time_zone: String,
    notify_phone: Option<String>,
}

/// `POST /settings/profile`.
#[handler]
pub(crate) async fn save_profile(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Form(f): Form<ProfileForm>,
) -> Result<Response, PageError> {
    member.must_manage()?;
    let typed = Typed {
        profile: Some((
            f.business_name.clone(),
            f.time_zone.clone(),
            f.notify_phone.clone().unwrap_or_default(),
        )),
        ..Typed::default()
    };
    let result = async {
        let notify_phone = optional_phone("notify_phone", f.notify_phone.as_deref())?;
        let new = NewBusiness {
            name: f.business_name,
            time_zone: f.time_zone,
            notify_phone,
        };
        settings::update_profile(app.0, member.ctx(), new).await
    }
    .await;
    outcome_typed(app.0, &member, &csrf, result, "profile", typed).await
}

#[derive(Deserialize)]
pub(crate) struct TwilioForm {
    account_sid: String,
    #[serde(default)]
    auth_token: String,
}

/// `POST /settings/twilio` (`account_sid`, `auth_token`).
#[handler]
pub(crate) async fn save_twilio(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Form(f): Form<TwilioForm>,
) -> Result<Response, PageError> {
    member.must_manage()?;
    let result = settings::set_twilio(app.0, member.ctx(), &f.account_sid, &f.auth_token).await;
    let typed = Typed {
        account_sid: Some(f.account_sid),
        ..Typed::default()
    };
    outcome_typed(app.0, &member, &csrf, result, "twilio", typed).await
}

/// `POST /settings/twilio/disconnect`.
#[handler]
pub(crate) async fn twilio_disconnect(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
) -> Result<Response, PageError> {
    member.must_manage()?;
    let result = settings::clear_twilio(app.0, member.ctx()).await;
    outcome(app.0, &member, &csrf, result, "twilio-off").await
}

/// `POST /settings/twilio/test`: calls Twilio's account endpoint and says what it answered.
#[handler]
pub(crate) async fn twilio_test(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
) -> Result<Response, PageError> {
    member.must_manage()?;
    let flash = match settings::test_twilio(app.0, member.ctx()).await {
        Ok(info) => Flash {
            notice: Some(format!(
                "Connected to Twilio: “{}” ({}).",
                info.friendly_name, info.status
            )),
            ..Flash::default()
        },
        Err(settings::ConnectionError::Service(e)) => return Err(e.into()),
        Err(e) => Flash {
            error: Some(e.to_string()),
            ..Flash::default()
        },
    };
    render(app.0, &member, &csrf, flash, StatusCode::OK).await
}

#[derive(Deserialize)]
pub(crate) struct NumberForm {
    e164: String,
}

/// `POST /settings/numbers` (`e164`): the number, answered by the built-in bot.
#[handler]
pub(crate) async fn add_number(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Form(f): Form<NumberForm>,
) -> Result<Response, PageError> {
    member.must_manage()?;
    let result = async {
        let number =
            E164::parse(f.e164.trim()).map_err(|e| ServiceError::invalid("e164", e.to_string()))?;
        settings::add_number(app.0, member.ctx(), &number, BotKind::Qualify)
            .await
            .map(|_| ())
    }
    .await;
    let typed = Typed {
        e164: Some(f.e164),
        ..Typed::default()
    };
    outcome_typed(app.0, &member, &csrf, result, "number", typed).await
}

/// `POST /settings/numbers/:id/remove`.
#[handler]
pub(crate) async fn remove_number(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Path(id): Path<Uuid>,
) -> Result<Response, PageError> {
    member.must_manage()?;
    let result = settings::remove_number(app.0, member.ctx(), PhoneNumberId(id)).await;
    outcome(app.0, &member, &csrf, result, "number-off").await
}

#[derive(Deserialize)]
pub(crate) struct KeyForm {
    name: String,
}

/// `POST /settings/api-keys` (`name`): the page with the new key, shown once.
#[handler]
pub(crate) async fn create_key(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Form(f): Form<KeyForm>,
) -> Result<Response, PageError> {
    member.must_manage()?;
    match settings::create_api_key(app.0, member.ctx(), &f.name).await {
        Ok(key) => {
            let flash = Flash {
                notice: Some(format!("API key “{}” created.", f.name.trim())),
                new_key: Some(key.expose_secret().to_string()),
                ..Flash::default()
            };
            render(app.0, &member, &csrf, flash, StatusCode::OK).await
        }
        Err(e) => {
            let typed = Typed {
                key_name: Some(f.name),
                ..Typed::default()
            };
            outcome_typed(app.0, &member, &csrf, Err(e), "", typed).await
        }
    }
}

/// `POST /settings/api-keys/:id/revoke`.
#[handler]
pub(crate) async fn revoke_key(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Path(id): Path<Uuid>,
) -> Result<Response, PageError> {
    member.must_manage()?;
    let result = settings::revoke_api_key(app.0, member.ctx(), ApiKeyId(id)).await;
    outcome(app.0, &member, &csrf, result, "revoked").await
}

fn parse_role(role: &str) -> Result<Role, ServiceError> {
    Role::parse(role).ok_or_else(|| ServiceError::invalid("role", "must be owner, admin or agent"))
}

#[derive(Deserialize)]
pub(crate) struct InviteForm {
    email: String,
    role: String,
}

/// `POST /settings/invites` (`email`, `role`): mails an invite link.
#[handler]
pub(crate) async fn invite(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Form(f): Form<InviteForm>,
) -> Result<Response, PageError> {
    member.must_manage()?;
    let result = async {
        let role = parse_role(&f.role)?;
        invites::invite(
            app.0,
            member.ctx(),
            member.role(),
            member.user_id,
            &f.email,
            role,
        )
        .await
    }
    .await;
    let typed = Typed {
        invite_email: Some(f.email),
        ..Typed::default()
    };
    outcome_typed(app.0, &member, &csrf, result, "invited", typed).await
}

/// `POST /settings/invites/:id/revoke`.
#[handler]
pub(crate) async fn revoke_invite(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Path(id): Path<Uuid>,
) -> Result<Response, PageError> {
    member.must_manage()?;
    let result = invites::revoke(app.0, member.ctx(), InviteId(id)).await;
    outcome(app.0, &member, &csrf, result, "invite-off").await
}

#[derive(Deserialize)]
pub(crate) struct MemberForm {
    /// `owner`, `admin`, `agent`, or `remove`.
    role: String,
}

/// `POST /settings/members/:id` (`role`): change a member's role or remove them.
#[handler]
pub(crate) async fn change_member(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Path(id): Path<Uuid>,
    Form(f): Form<MemberForm>,
) -> Result<Response, PageError> {
    member.must_manage()?;
    let role = match f.role.as_str() {
        "remove" => None,
        other => match parse_role(other) {
            Ok(role) => Some(role),
            Err(e) => return outcome(app.0, &member, &csrf, Err(e), "").await,
        },
    };
    let result =
        accounts::change_member(app.0, member.ctx(), member.role(), MembershipId(id), role).await;
    outcome(app.0, &member, &csrf, result, "member").await
}
