//! `/conversations`: the two-panel inbox (list + thread) and its small form endpoints.

use maud::{Markup, html};
use poem::http::StatusCode;
use poem::web::{Form, Path, Query, Redirect};
use poem::{IntoResponse, Response, handler};
use serde::Deserialize;
use switchboard_domain::message::{Direction, MessageStatus, Source};
use switchboard_domain::{ConversationId, MessageId, TenantId};
use switchboard_services::conversations::{self, ConversationSummary, MessageView};
use switchboard_services::{ServiceError, messaging};
use uuid::Uuid;

use switchboard_api::auth::{CSRF_FIELD, CsrfToken, Member};

use crate::layout::{Chrome, ago, page};
use crate::{AppData, PageError};

#[derive(Deserialize)]
pub(crate) struct Selected {
    c: Option<Uuid>,
    /// The business the conversation `c` belongs to (a lead alert's link), when the link may
    /// be opened while the session works in another of the user's businesses.
    b: Option<Uuid>,
}

fn initials(s: &ConversationSummary) -> String {
    match &s.contact_name {
        Some(name) => name
            .split_whitespace()
            .filter_map(|w| w.chars().next())
            .take(2)
            .collect::<String>()
            .to_uppercase(),
        None => "#".into(),
    }
}

fn display_name(s: &ConversationSummary) -> &str {
    s.contact_name.as_deref().unwrap_or(&s.contact_phone)
}

fn list(rows: &[ConversationSummary], selected: Option<ConversationId>) -> Markup {
    html! {
        ul.conversation-list id="conversation-list" {
            @if rows.is_empty() {
                li.empty { "No conversations yet. Text the demo number from the " a href="/simulator" { "simulator" } "." }
            }
            @for s in rows {
                li class=[(Some(s.id) == selected).then_some("selected")] {
                    a href={ "/conversations?c=" (s.id) } {
                        span.avatar { (initials(s)) }
                        span.who {
                            strong { (display_name(s)) }
                            @if s.contact_name.is_some() { small { (s.contact_phone) } }
                            span.preview { (s.last_message_preview) }
                        }
                        span.meta {
                            time datetime=(s.last_message_at.to_rfc3339()) { (ago(s.last_message_at)) }
                            @if s.unread_count > 0 { span.badge { (s.unread_count) } }
                            @if s.opted_out { span.pill.closed { "opted out" } }
                            @else if s.bot_paused { span.pill.pending { "human" } }
                        }
                    }
                }
            }
        }
    }
}

fn status_line(m: &MessageView) -> Markup {
    let class = match m.status {
        MessageStatus::Failed | MessageStatus::Undelivered | MessageStatus::Suppressed => {
            "status bad"
        }
        MessageStatus::Delivered | MessageStatus::Read => "status good",
        _ => "status",
    };
    html! {
        span class=(class) {
            (m.status.as_str())
            @if let Some(code) = m.error_code { " · error " (code) }
            @if let Some(err) = &m.error_message { " · " (err) }
        }
    }
}

/// One message bubble of conversation `s`; `id="m-{id}"` so live updates can replace it. An
/// outbound message that did not reach the customer gets a "Send again" form carrying `csrf`
/// where the conversation allows it ([`messaging::offers_send_again`]).
pub(crate) fn bubble(s: &ConversationSummary, m: &MessageView, csrf: &str) -> Markup {
    let side = match m.direction {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
    };
    let who = match m.source {
        Source::Customer => "customer",
        Source::Bot => "bot",
        Source::Manual => "you",
        Source::Compliance => "auto-reply",
        Source::Alert => "owner alert",
    };
    html! {
        div class={ "bubble " (side) } id={ "m-" (m.id) } {
            @if !m.body.is_empty() { p { (m.body) } }
            @for media in &m.media {
                a.media href=(media.url) rel="noopener noreferrer" target="_blank" { "📎 " (media.content_type) }
            }
            footer {
                span.source { (who) }
                time datetime=(m.created_at.to_rfc3339()) title=(m.created_at.to_rfc3339()) { (m.created_at.format("%H:%M")) }
                @if m.direction == Direction::Outbound { (status_line(m)) }
                @if messaging::offers_send_again(s, m) {
                    form.again method="post" action={ "/conversations/" (m.conversation_id) "/messages/" (m.id) "/retry" } {
                        input type="hidden" name=(CSRF_FIELD) value=(csrf);
                        button type="submit" { "Send again" }
                    }
                }
            }
        }
    }
}

fn thread(chrome: &Chrome, s: &ConversationSummary, messages: &[MessageView]) -> Markup {
    html! {
        section.thread data-conversation=(s.id) {
            header.thread-head {
                span.avatar { (initials(s)) }
                div {
                    strong { (display_name(s)) }
                    small { (s.contact_phone) " → " (s.number) }
                }
                div.actions {
                    @if s.opted_out { span.pill.closed { "opted out" } }
                    form method="post" action={ "/conversations/" (s.id) "/bot" } {
                        (chrome.csrf_field())
                        @if s.bot_paused {
                            input type="hidden" name="paused" value="false";
                            button.secondary type="submit" { "Resume bot" }
                        } @else {
                            span.pill.active { "bot on" }
                            input type="hidden" name="paused" value="true";
                            button.secondary type="submit" { "Pause bot" }
                        }
                    }
                }
            }
            div.messages id="messages" {
                @for m in messages { (bubble(s, m, chrome.csrf)) }
            }
            @if s.number_removed {
                p.compose.hint {
                    (s.number) " was removed in Settings: this history stays, and nothing can be "
                    "sent from it until the number is added again."
                }
            } @else {
                form.compose method="post" action={ "/conversations/" (s.id) "/messages" } {
                    (chrome.csrf_field())
                    // One key per rendered form: resubmitting or double-clicking sends once.
                    input type="hidden" name="key" value=(uuid::Uuid::new_v4().simple());
                    textarea name="body" rows="2" maxlength="1600" required placeholder="Type a message… (sending pauses the bot)" {}
                    button type="submit" { "Send" }
                }
            }
        }
    }
}

/// `GET /conversations[?c=id]`.
#[handler]
pub(crate) async fn page_handler(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Query(q): Query<Selected>,
) -> Result<Response, PageError> {
    let ctx = *member.ctx();
    let chrome = Chrome::member(app.0, &member, &csrf).await?;
    if let Some(b) = q.b.map(TenantId).filter(|b| *b != ctx.tenant_id()) {
        return switch_first(&chrome, b, q.c);
    }
    let rows = conversations::list(app.0, &ctx, 100).await?;
    let selected =
        q.c.map(ConversationId)
            .or_else(|| rows.first().map(|r| r.id));
    let open = match selected {
        Some(id) => Some(conversations::thread(app.0, &ctx, id).await?),
        None => None,
    };
    let body = html! {
        div.inbox data-live="inbox" {
            aside.panel { (list(&rows, selected)) }
            @match &open {
                Some((s, messages)) => (thread(&chrome, s, messages)),
                None => section.thread.empty { p { "Select a conversation." } },
            }
        }
    };
    Ok(page(&chrome, "Conversations", Some("/conversations"), body).into_response())
}

/// The page a link to conversation `c` of business `b` shows while the session works in
/// another business: a button that switches to `b` and opens it, if the user may work in
/// `b` (one of the switcher's choices); a 404 otherwise, as for any other tenant's id.
fn switch_first(chrome: &Chrome<'_>, b: TenantId, c: Option<Uuid>) -> Result<Response, PageError> {
    let Some(business) = chrome.reach.choices.iter().find(|x| x.tenant_id == b) else {
        return Err(ServiceError::NotFound.into());
    };
    let next = c.map_or("/conversations".to_owned(), |c| {
        format!("/conversations?c={c}")
    });
    let body = html! {
        section.card {
            p { "This conversation is in " strong { (business.name) } "." }
            form method="post" action="/switch" {
                (chrome.csrf_field())
                input type="hidden" name="tenant" value=(b);
                input type="hidden" name="next" value=(next);
                button type="submit" { "Switch to " (business.name) }
            }
        }
    };
    Ok(page(chrome, "Conversations", Some("/conversations"), body).into_response())
}

/// `GET /conversations/list`: the list panel alone (live refresh).
#[handler]
pub(crate) async fn list_fragment(
    app: AppData<'_>,
    member: Member,
    Query(q): Query<Selected>,
) -> Result<Markup, PageError> {
    let ctx = *member.ctx();
    let rows = conversations::list(app.0, &ctx, 100).await?;
    Ok(list(&rows, q.c.map(ConversationId)))
}

/// `GET /conversations/:id/messages/:mid`: one bubble (live append or status change).
#[handler]
pub(crate) async fn message_fragment(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Path((id, mid)): Path<(Uuid, Uuid)>,
) -> Result<Markup, PageError> {
    let ctx = *member.ctx();
    let (s, m) =
        conversations::message_in_thread(app.0, &ctx, ConversationId(id), MessageId(mid)).await?;
    Ok(bubble(&s, &m, &csrf.0))
}

#[derive(Deserialize)]
pub(crate) struct Compose {
    body: String,
    /// Idempotency key rendered into the form.
    key: Option<String>,
}

/// `POST /conversations/:id/messages` (form `body`): a manual reply; the bot pauses.
#[handler]
pub(crate) async fn send(
    app: AppData<'_>,
    member: Member,
    Path(id): Path<Uuid>,
    Form(form): Form<Compose>,
) -> Result<Redirect, PageError> {
    let ctx = *member.ctx();
    if let Some(key) = &form.key {
        messaging::check_idempotency_key("key", key)?;
    }
    messaging::send_manual(app.0, &ctx, ConversationId(id), &form.body, form.key).await?;
    Ok(Redirect::see_other(format!("/conversations?c={id}")))
}

/// `POST /conversations/:id/messages/:mid/retry`: sends a message that did not reach the
/// customer again (see `messaging::send_again`).
#[handler]
pub(crate) async fn send_again(
    app: AppData<'_>,
    member: Member,
    Path((id, mid)): Path<(Uuid, Uuid)>,
) -> Result<Redirect, PageError> {
    let ctx = *member.ctx();
    messaging::send_again(app.0, &ctx, ConversationId(id), MessageId(mid)).await?;
    Ok(Redirect::see_other(format!("/conversations?c={id}")))
}

/// `POST /conversations/:id/read`: clears the unread count (sent by the page's script when a
/// thread is shown).
#[handler]
pub(crate) async fn read(
    app: AppData<'_>,
    member: Member,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, PageError> {
    let ctx = *member.ctx();
    conversations::mark_read(app.0, &ctx, ConversationId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct BotForm {
    paused: bool,
}

/// `POST /conversations/:id/bot` (form `paused=true|false`): pause or resume the bot.
#[handler]
pub(crate) async fn bot(
    app: AppData<'_>,
    member: Member,
    Path(id): Path<Uuid>,
    Form(form): Form<BotForm>,
) -> Result<Redirect, PageError> {
    let ctx = *member.ctx();
    messaging::set_bot_paused(app.0, &ctx, ConversationId(id), form.paused).await?;
    Ok(Redirect::see_other(format!("/conversations?c={id}")))
}
