//! `/simulator`: a fake handset for numbers without Twilio. Texts typed here enter the same
//! inbound pipeline as Twilio's webhook (minus the signature); the replies the simulator
//! provider "delivers" show up here, live.

use std::sync::Arc;
use std::time::Duration;

use maud::{Markup, html};
use poem::http::StatusCode;
use poem::web::sse::SSE;
use poem::web::{Form, Query, Redirect};
use poem::{IntoResponse, Response, handler};
use serde::Deserialize;
use switchboard_api::auth::CsrfToken;
use switchboard_domain::message::Direction;
use switchboard_domain::phone::E164;
use switchboard_services::conversations::{self, MessageView};
use switchboard_services::webhooks::{self, WebhookError};
use switchboard_services::{App, TenantCtx, tenancy};

use crate::layout::{Chrome, page};
use crate::live::{SESSION_CHECK_SECS, tenant_stream};
use crate::{AppData, PageError};

/// The customer phone the simulator starts with.
pub const DEFAULT_CUSTOMER: &str = "+15555550123";

#[derive(Deserialize, Default)]
pub(crate) struct Handset {
    number: Option<String>,
    phone: Option<String>,
}

impl From<WebhookError> for PageError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Service(inner) => inner.into(),
            WebhookError::Unknown => PageError(
                StatusCode::NOT_FOUND,
                "That number does not send through the simulator.".into(),
            ),
            other => PageError(StatusCode::BAD_REQUEST, other.to_string()),
        }
    }
}

/// `value` of form or query field `field` in E.164 (`+1 (555) 555-0199` is `+15555550199`),
/// as stored; a 400 naming the field when it is no phone number.
fn e164(field: &str, value: &str) -> Result<String, PageError> {
    E164::parse(value)
        .map(|n| n.to_string())
        .map_err(|e| PageError(StatusCode::BAD_REQUEST, format!("{field}: {e}")))
}

/// The handset's business number and customer phone, in E.164 (the number defaults to the
/// first of `numbers`, the simulator's, the phone to [`DEFAULT_CUSTOMER`]), and the number's
/// tenant.
async fn resolve(
    app: &App,
    q: &Handset,
    numbers: &[tenancy::SimulatorNumber],
) -> Result<(String, String, Option<TenantCtx>), PageError> {
    let number = match q.number.as_deref().filter(|n| !n.trim().is_empty()) {
        Some(n) => e164("number", n)?,
        None => numbers.first().map(|n| n.e164.clone()).unwrap_or_default(),
    };
    let phone = match q.phone.as_deref().filter(|p| !p.trim().is_empty()) {
        Some(p) => e164("phone", p)?,
        None => DEFAULT_CUSTOMER.into(),
    };
    let ctx = if number.is_empty() {
        None
    } else {
        Some(webhooks::simulator_tenant(app, &number).await?)
    };
    Ok((number, phone, ctx))
}

fn thread(messages: &[MessageView]) -> Markup {
    html! {
        div.handset-messages id="handset" {
            @if messages.is_empty() { p.hint { "Say something — e.g. “my water heater is leaking”." } }
            @for m in messages {
                // On the handset, the customer's own texts are on the right.
                div class={ "bubble " (if m.direction == Direction::Inbound { "out" } else { "in" }) } id={ "h-" (m.id) } {
                    p { (m.body) }
                }
            }
        }
    }
}

/// `GET /simulator[?number=&phone=]`.
#[handler]
pub(crate) async fn page_handler(
    app: AppData<'_>,
    csrf: CsrfToken,
    Query(q): Query<Handset>,
) -> Result<Response, PageError> {
    let numbers = tenancy::simulator_numbers(app.0).await?;
    let (number, phone, ctx) = resolve(app.0, &q, &numbers).await?;
    let messages = match &ctx {
        Some(ctx) => conversations::handset_thread(app.0, ctx, &number, &phone).await?,
        None => Vec::new(),
    };
    let chrome = Chrome::visitor(&csrf);
    let body = html! {
        div.simulator data-live="simulator" data-number=(number) data-phone=(phone) {
            @if numbers.is_empty() {
                section.card.empty { p { "No number sends through the simulator (Twilio credentials are configured)." } }
            } @else {
                form.card.handset-pick method="get" action="/simulator" {
                    label { "Business number "
                        select name="number" {
                            @for n in &numbers {
                                option value=(n.e164) selected[n.e164 == number] { (n.e164) " — " (n.tenant_name) }
                            }
                        }
                    }
                    label { "Your phone " input name="phone" value=(phone) inputmode="tel" required; }
                    button.secondary type="submit" { "Open" }
                }
                section.handset {
                    header { strong { (number) } small { "texting as " (phone) } }
                    (thread(&messages))
                    form.compose method="post" action="/simulator/send" {
                        (chrome.csrf_field())
                        input type="hidden" name="to" value=(number);
                        input type="hidden" name="from" value=(phone);
                        textarea name="body" rows="2" maxlength="1600" required placeholder="Text message" {}
                        button type="submit" { "Send" }
                    }
                }
            }
        }
    };
    Ok(page(&chrome, "Phone simulator", Some("/simulator"), body).into_response())
}

/// `GET /simulator/thread?number=&phone=`: the handset thread alone (live refresh).
#[handler]
pub(crate) async fn thread_fragment(
    app: AppData<'_>,
    Query(q): Query<Handset>,
) -> Result<Markup, PageError> {
    // The live refresh always names its number: no default needed.
    let (number, phone, ctx) = resolve(app.0, &q, &[]).await?;
    let messages = match &ctx {
        Some(ctx) => conversations::handset_thread(app.0, ctx, &number, &phone).await?,
        None => Vec::new(),
    };
    Ok(thread(&messages))
}

#[derive(Deserialize)]
pub(crate) struct SimText {
    to: String,
    from: String,
    body: String,
}

/// `POST /simulator/send` (form `to`, `from`, `body`): the customer texts the number.
#[handler]
pub(crate) async fn send(
    app: AppData<'_>,
    Form(form): Form<SimText>,
) -> Result<Redirect, PageError> {
    let (to, from) = (e164("to", &form.to)?, e164("from", &form.from)?);
    webhooks::simulate_sms(app.0, &to, &from, &form.body).await?;
    let query =
        serde_urlencoded::to_string([("number", &to), ("phone", &from)]).unwrap_or_default();
    Ok(Redirect::see_other(format!("/simulator?{query}")))
}

/// `GET /simulator/events?number=`: the number's tenant's events (the page reloads its thread),
/// for as long as the number is a simulator number of that tenant: checked again every
/// [`SESSION_CHECK_SECS`] (through the route cache, so a change made by another process
/// shows up to `ROUTE_TTL_SECS` later), since this stream needs no sign-in (the tenant may
/// connect Twilio meanwhile, and its numbers' events are then its own).
#[handler]
pub(crate) async fn events(app: AppData<'_>, Query(q): Query<Handset>) -> Result<SSE, PageError> {
    let number = q.number.unwrap_or_default();
    let tenant = webhooks::simulator_tenant(app.0, &number)
        .await?
        .tenant_id();
    let app = Arc::clone(app.0);
    let bus = app.events.clone();
    let gone = async move {
        let mut tick = tokio::time::interval(Duration::from_secs(SESSION_CHECK_SECS));
        tick.tick().await;
        loop {
            tick.tick().await;
            match webhooks::simulator_tenant(&app, &number).await {
                Ok(ctx) if ctx.tenant_id() == tenant => {}
                _ => break,
            }
        }
    };
    Ok(tenant_stream(&bus, tenant, gone))
}
