//! `/`: the dashboard — stat cards and the live activity table.

use maud::{Markup, html};
use poem::handler;
use poem::web::Path;
use switchboard_api::auth::{CsrfToken, Member};
use switchboard_domain::MessageId;
use switchboard_domain::message::{Direction, Source};
use switchboard_services::dashboard::{self, Activity, WINDOW_DAYS};
use uuid::Uuid;

use crate::layout::{Chrome, ago, page};
use crate::{AppData, PageError};

/// One activity row; `id="a-{message id}"` so live updates can replace it. The whole row
/// links to the conversation.
fn row(a: &Activity) -> Markup {
    let what = match (a.direction, a.source) {
        (Direction::Inbound, _) => "received",
        (_, Source::Bot) => "bot reply",
        (_, Source::Manual) => "manual reply",
        (_, Source::Compliance) => "auto-reply",
        (_, Source::Alert) => "owner alert",
        (_, Source::Customer) => "sent",
    };
    let href = format!("/conversations?c={}", a.conversation_id);
    html! {
        tr id={ "a-" (a.message_id) } {
            td { a href=(href) { (a.contact) } }
            td { span class={ "kind " (if a.direction == Direction::Inbound { "in" } else { "out" }) } { (what) } }
            td.preview-cell { a href=(href) { (a.preview) } }
            td { (a.status.as_str()) }
            td { time datetime=(a.at.to_rfc3339()) title=(a.at.to_rfc3339()) { (ago(a.at)) } }
        }
    }
}

/// `GET /`.
#[handler]
pub(crate) async fn page_handler(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
) -> Result<Markup, PageError> {
    let stats = dashboard::stats(app.0, member.ctx()).await?;
    let rows = dashboard::activity(app.0, member.ctx(), None).await?;
    let rate = stats
        .response_rate_pct
        .map_or_else(|| "—".to_string(), |p| format!("{p}%"));
    let cards = [
        (
            "Active conversations",
            stats.active_conversations.to_string(),
            format!("open, a message in the last {WINDOW_DAYS} days"),
        ),
        (
            "Messages today",
            stats.messages_today.to_string(),
            "sent and received since midnight".into(),
        ),
        (
            "Leads this week",
            stats.leads_this_week.to_string(),
            "new contacts since Monday".into(),
        ),
        (
            "Response rate",
            rate,
            format!("inbound texts answered by the bot or a person, last {WINDOW_DAYS} days"),
        ),
    ];
    let body = html! {
        div.dashboard data-live="dashboard" {
            section.stats {
                @for (label, value, hint) in &cards {
                    div.card.stat { span.label { (label) } strong.value { (value) } small { (hint) } }
                }
            }
            section.card {
                h2 { "Activity" }
                table.activity {
                    thead { tr { th { "Contact" } th { "Event" } th { "Message" } th { "Status" } th { "When" } } }
                    tbody id="activity" {
                        @for a in &rows { (row(a)) }
                    }
                }
                @if rows.is_empty() {
                    p.empty { "No messages yet. Connect your Twilio number in " a href="/settings" { "Settings" } ", or try the " a href="/simulator" { "simulator" } "." }
                }
            }
        }
    };
    Ok(page(
        &Chrome::member(app.0, &member, &csrf).await?,
        "Dashboard",
        Some("/"),
        body,
    ))
}

/// `GET /activity/:message_id`: one activity row (live updates).
#[handler]
pub(crate) async fn row_fragment(
    app: AppData<'_>,
    member: Member,
    Path(id): Path<Uuid>,
) -> Result<Markup, PageError> {
    let rows = dashboard::activity(app.0, member.ctx(), Some(MessageId(id))).await?;
    Ok(html! { @for a in &rows { (row(a)) } })
}
