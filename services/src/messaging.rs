//! Outbound texts: the outbox row, the send attempt, and status callbacks.
//!
//! A reply is a `messages` row first (status `queued`, with an idempotency key), then a
//! `SendMessage { tenant_id, message_id }` job runs [`deliver`]. The row records every
//! attempt, so a retried or duplicated job never sends a text twice:
//! - before calling the provider the row moves to `sending` (committed);
//! - a job that finds a row still `sending` does not know whether the last call reached the
//!   provider, so it asks the provider ([`SmsProvider::find_recent`]) before sending again.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait, Condition, DbErr, EntityTrait, FromQueryResult, JoinType, QueryFilter, QueryOrder,
    QueryResult, QuerySelect,
    sea_query::{Expr, OnConflict},
};
use switchboard_domain::message::{Direction, MessageStatus, Source};
use switchboard_domain::{ConversationId, MessageId, TenantId, segments};
use switchboard_entity::lookup;
use switchboard_entity::{
    TenantOwned, TenantTx, contact, conversation, ingest::preview, message, phone_number, tenant,
};
use switchboard_providers::{Accepted, OutboundSms, SendError, SmsProvider};

use crate::conversations::{ConversationSummary, MessageView};
use crate::events::{Event, EventKind};
use crate::group::{Groups, Unit};
use crate::jobs::{Enqueue, Job, JobQueue, SendMessage};
use crate::{App, ServiceError, TenantCtx, tenancy};

/// Longest body we accept for one outbound text, in characters (Twilio's limit for `Body`).
pub const MAX_BODY_CHARS: usize = 1600;
/// Send attempts before a message is marked failed. Attempts the provider rate-limited do not
/// end a message: see [`RATE_LIMITED_HOURS`].
pub const MAX_SEND_ATTEMPTS: i32 = 8;
/// Hours a reply whose last attempt the provider rate-limited (Twilio error 20429: nothing was
/// created) keeps being retried, past [`MAX_SEND_ATTEMPTS`], before it is marked failed. A
/// burst over the account's limits can outlast eight backoffs (~8.5 minutes without
/// `Retry-After`), and a rate limit says "later", not "never".
pub const RATE_LIMITED_HOURS: i64 = 24;
/// Hours a message whose last attempt has an unknown outcome keeps being checked with the
/// provider before it is marked failed (with a note that it may have been sent).
pub const UNKNOWN_OUTCOME_HOURS: i64 = 24;
/// Longest wait between attempts, in seconds (a provider's `Retry-After` included).
pub const MAX_BACKOFF_SECS: u64 = 300;
/// Longest time from a send's claim to the start of its provider request, in milliseconds.
/// Other jobs leave a claimed message alone for [`crate::Providers::in_flight`] from the claim
/// (the provider timeout plus 2 s), then ask the provider and send again if it has nothing; a
/// request started later than this after its claim (a slow WAL sync or group commit) could
/// reach the provider after such a check, and the text would go out twice. It is not made:
/// the message stays claimed with an unknown outcome (the attempt given back), and its next
/// attempt asks first; after [`UNKNOWN_OUTCOME_HOURS`] of this it fails. Clocks of the
/// processes must agree to well within the 0.5 s left.
pub const MAX_CLAIM_TO_SEND_MS: i64 = 1500;
/// Why a compliance reply to an opted-out contact that Twilio refused with error 21610 is
/// suppressed, not failed: Twilio's default opt-out handling (on for a number outside a
/// Messaging Service with Advanced Opt-Out) answers STOP and HELP itself, and then refuses
/// every text from the number to the contact.
pub const TWILIO_ANSWERED: &str =
    "Twilio answered the keyword itself (its default opt-out handling; error 21610)";
/// Longest a send job waits out a reply's `not_before` itself, in milliseconds, rather than
/// scheduling another job for it: the queues run a delayed job up to this much early (run
/// times in whole seconds; Redis promotes due jobs one second ahead), so the retry job
/// scheduled for `not_before` finds a moment left to wait.
pub const SHORT_WAIT_MS: u64 = 2000;

/// Wait before attempt `attempt + 1` (1 s, 2 s, 4 s, … capped at [`MAX_BACKOFF_SECS`]).
pub fn backoff(attempt: i32) -> Duration {
    let exp = attempt.clamp(0, 16) as u32;
    Duration::from_secs((1u64 << exp).min(MAX_BACKOFF_SECS))
}

/// A provider's `Retry-After`, at most [`MAX_BACKOFF_SECS`]: no attempt waits longer (the
/// sweep counts on it, see `sweep::STUCK_AFTER_SECS`).
fn capped(retry_after: Duration) -> Duration {
    retry_after.min(Duration::from_secs(MAX_BACKOFF_SECS))
}

/// How long `msg` is still held back by the provider's rate limit (its `not_before`) at
/// `now`; `None` when it may be attempted.
fn held_back(msg: &message::Model, now: chrono::DateTime<Utc>) -> Option<Duration> {
    (msg.not_before? - now)
        .to_std()
        .ok()
        .filter(|wait| !wait.is_zero())
}

/// The time `wait` from now.
fn after(wait: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()
}

/// Wait before asking the provider again whether it has a text whose last attempt's outcome
/// is unknown, after it could not be asked just now: a quarter of the time since the text was
/// written (`age`), at least [`backoff`] of its `attempts` and at most [`MAX_BACKOFF_SECS`].
/// Asking does not count as an attempt, so `backoff` alone would stay at a few seconds: an
/// outage of the provider's API would cost a request and a write every few seconds for each
/// such text, for [`UNKNOWN_OUTCOME_HOURS`].
pub fn recheck_delay(attempts: i32, age: Duration) -> Duration {
    (age / 4).clamp(backoff(attempts), Duration::from_secs(MAX_BACKOFF_SECS))
}

/// Checks an outbound body: 1 to [`MAX_BODY_CHARS`] characters after trimming, line breaks
/// counted once (a browser's textarea sends `\r\n` for each, and counts it as one against
/// its `maxlength`; the body is stored with `\n`), and no control characters but line
/// breaks and tabs (Postgres refuses NUL in text).
///
/// # Errors
/// [`ServiceError::Invalid`] naming the field `body`.
pub fn check_body(body: &str) -> Result<String, ServiceError> {
    let body = body.trim().replace("\r\n", "\n");
    if body.is_empty() {
        return Err(ServiceError::invalid("body", "must not be empty"));
    }
    if body.chars().count() > MAX_BODY_CHARS {
        return Err(ServiceError::invalid(
            "body",
            format!("must be at most {MAX_BODY_CHARS} characters"),
        ));
    }
    if body
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ServiceError::invalid(
            "body",
            "must not contain control characters",
        ));
    }
    Ok(body)
}

/// Longest idempotency key, in characters (as Stripe's).
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Checks an idempotency key (the API's `Idempotency-Key`, the inbox form's `key`): 1 to
/// [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters. One outside that is refused, not
/// ignored: an empty key would tie unrelated replies together, and a very long one exceeds
/// what the database indexes.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn check_idempotency_key(field: &'static str, key: &str) -> Result<(), ServiceError> {
    if (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(bad_idempotency_key(field))
    }
}

/// The error [`check_idempotency_key`] gives for `field`.
pub fn bad_idempotency_key(field: &'static str) -> ServiceError {
    ServiceError::invalid(
        field,
        format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
    )
}

/// An outbox row written inside a unit of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outboxed {
    pub id: MessageId,
    /// False when the idempotency key already had a row (nothing new to send).
    pub created: bool,
}

/// Writes an outbound message (status `queued`) to `conversation`, answering the inbound text
/// `in_reply_to` if any, and moves the conversation's preview. The caller commits, then
/// enqueues [`Job::SendMessage`] for created rows.
///
/// # Errors
/// Database errors.
pub(crate) async fn insert_outbound(
    tx: &TenantTx,
    conversation: &conversation::Model,
    body: &str,
    source: Source,
    idempotency_key: Option<String>,
    in_reply_to: Option<MessageId>,
) -> Result<Outboxed, ServiceError> {
    use sea_orm::sea_query::ExprTrait;
    let now = Utc::now();
    let id = MessageId::new();
    let count = segments::count(body);
    let inserted = message::Entity::insert(message::ActiveModel {
        id: Set(id),
        tenant_id: Set(tx.tenant()),
        conversation_id: Set(conversation.id),
        contact_id: Set(conversation.contact_id),
        direction: Set(Direction::Outbound),
        source: Set(source),
        body: Set(body.to_string()),
        media: Set(None),
        provider_sid: Set(None),
        status: Set(MessageStatus::Queued),
        error_code: Set(None),
        error_message: Set(None),
        idempotency_key: Set(idempotency_key.clone()),
        segments: Set(count.segments as i32),
        encoding: Set(count.encoding.as_str().to_string()),
        attempts: Set(0),
        handled_at: Set(None),
        compliance: Set(None),
        provider_replied: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
        sent_at: Set(None),
        in_reply_to: Set(in_reply_to),
        not_before: Set(None),
    })
    .on_conflict(
        // The partial unique index `ux_messages_idempotency`: keyed rows only.
        OnConflict::columns([message::Column::TenantId, message::Column::IdempotencyKey])
            .target_and_where(Expr::col(message::Column::IdempotencyKey).is_not_null())
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(tx.conn())
    .await?;
    if inserted == 0 {
        let existing = message::Entity::scoped(tx.tenant())
            .filter(message::Column::IdempotencyKey.eq(idempotency_key))
            .one(tx.conn())
            .await?
            .ok_or(ServiceError::NotFound)?;
        return Ok(Outboxed {
            id: existing.id,
            created: false,
        });
    }
    conversation::Entity::by_id_update(tx.tenant(), conversation.id)
        .col_expr(conversation::Column::LastMessageAt, now.into())
        .col_expr(
            conversation::Column::LastMessagePreview,
            preview(body, false).into(),
        )
        .col_expr(conversation::Column::UpdatedAt, now.into())
        .exec(tx.conn())
        .await?;
    Ok(Outboxed { id, created: true })
}

/// Enqueues, as part of `tx`, the send job of the oldest of the freshly written outbox `rows`
/// (see [`JobQueue::stage`]); returns what must instead be pushed after the commit, for
/// [`dispatch`]. Only the oldest new row gets a job: the send job goes on with the
/// conversation's next reply once a reply is accepted ([`deliver`]), so a customer reads
/// replies in order and no job runs only to find that it must wait. The job carries
/// `request_id`, the correlation id of what decided the replies.
///
/// # Errors
/// Database errors.
pub(crate) async fn stage_send(
    jobs: &JobQueue,
    tx: &TenantTx,
    rows: &[Outboxed],
    request_id: Option<String>,
) -> Result<Vec<Enqueue>, ServiceError> {
    let pending = rows
        .iter()
        .find(|r| r.created)
        .map(|r| {
            let job = Job::SendMessage(SendMessage {
                tenant_id: tx.tenant(),
                message_id: r.id,
                request_id,
            });
            Enqueue::now(job, send_key(r.id))
        })
        .into_iter()
        .collect();
    jobs.stage(tx, pending).await
}

/// After the commit of `rows`: pushes the jobs [`stage_send`] left (Redis) and announces the
/// new rows. Never fails: the rows are committed, so a queue error is logged and the sweep
/// ([`crate::sweep`]) enqueues them later; reporting it would make a caller retry a reply
/// that will be sent anyway.
pub(crate) async fn dispatch(
    app: &App,
    ctx: &TenantCtx,
    conversation_id: ConversationId,
    rows: &[Outboxed],
    later: Vec<Enqueue>,
) {
    if !later.is_empty()
        && let Err(e) = app.jobs.push(&later).await
    {
        tracing::error!(error = %e, %conversation_id, "could not enqueue a send; the sweep will");
    }
    for row in rows.iter().filter(|r| r.created) {
        app.events.publish(Event {
            kind: EventKind::MessageCreated,
            tenant_id: ctx.tenant_id(),
            conversation_id,
            message_id: Some(row.id),
        });
    }
}

/// Enqueues the send of the oldest reply of `conversation_id` still in the outbox
/// (`queued`), under the key [`stage_send`] used, so a job already queued is not doubled; the
/// ones after it follow it. For a re-run of a job whose first run committed
/// replies and then died before enqueueing them; without it they would wait for the sweep.
///
/// # Errors
/// Database and queue errors.
pub(crate) async fn redispatch_queued(
    app: &App,
    ctx: &TenantCtx,
    conversation_id: ConversationId,
) -> Result<(), ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let oldest = oldest_outbound(&tx, conversation_id, None, queued()).await?;
    drop(tx);
    if let Some(oldest) = oldest {
        let job = Job::SendMessage(SendMessage::new(ctx.tenant_id(), oldest));
        app.jobs
            .push(&[Enqueue::now(job, send_key(oldest))])
            .await?;
    }
    Ok(())
}

/// A person's reply from the inbox or the API: queued as `manual`, and the bot pauses for
/// this conversation until someone resumes it.
///
/// Returns the message as the request left it, read before its send job can run: a new one
/// is `queued`; for an `idempotency_key` that already made one, that message as it stands.
///
/// # Errors
/// [`ServiceError::NotFound`] for a conversation of another tenant or none;
/// [`ServiceError::Invalid`] for a bad body; [`ServiceError::Conflict`]
/// ([`NUMBER_RELEASED`]) when the conversation's number was removed.
#[tracing::instrument(skip(app, body), fields(tenant_id = %ctx.tenant_id()))]
pub async fn send_manual(
    app: &App,
    ctx: &TenantCtx,
    conversation_id: ConversationId,
    body: &str,
    idempotency_key: Option<String>,
) -> Result<MessageView, ServiceError> {
    let body = check_body(body)?;
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let conversation = conversation::Entity::by_id(tx.tenant(), conversation_id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    let number = phone_number::Entity::by_id(tx.tenant(), conversation.phone_number_id)
        .one(tx.conn())
        .await?;
    if number.is_none_or(|n| n.released_at.is_some()) {
        return Err(ServiceError::Conflict(NUMBER_RELEASED.into()));
    }
    // Scoped to the conversation: the same key on another conversation is another message.
    let key = idempotency_key.map(|k| format!("manual:{conversation_id}:{k}"));
    let row = insert_outbound(&tx, &conversation, &body, Source::Manual, key, None).await?;
    if !row.created {
        // A replay must be the same reply: a key reused for another text (a page that kept
        // its form's key for a second reply) would otherwise drop that text silently.
        let first = message::Entity::by_id(tx.tenant(), row.id)
            .one(tx.conn())
            .await?
            .ok_or(ServiceError::NotFound)?;
        if first.body != body {
            return Err(ServiceError::Conflict(
                "this idempotency key was used for another message; send this one with a new key"
                    .into(),
            ));
        }
    }
    // A replayed request (its key made a row before) changes nothing else either: someone
    // may have resumed the bot since, and its replies must not be withdrawn by a retry.
    let mut withdrawn = Vec::new();
    if row.created && !conversation.bot_paused {
        withdrawn = set_paused_in(&tx, conversation.id, true).await?;
    }
    let view = commit_and_send(app, ctx, tx, conversation_id, row).await?;
    for id in withdrawn {
        announce_update(app, ctx, conversation_id, id);
    }
    Ok(view)
}

/// Pauses (`true`: a person takes over) or resumes (`false`) the bot for one conversation.
/// Pausing withdraws the bot's replies still in the outbox ([`WITHDRAWN_BY_TAKEOVER`]), as a
/// person's reply does: the bot's questions must not reach the customer after someone took
/// over.
///
/// # Errors
/// [`ServiceError::NotFound`] when the conversation is not this tenant's.
pub async fn set_bot_paused(
    app: &App,
    ctx: &TenantCtx,
    conversation_id: ConversationId,
    paused: bool,
) -> Result<(), ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let withdrawn = set_paused_in(&tx, conversation_id, paused).await?;
    tx.commit().await?;
    announce_paused(app, ctx, conversation_id, &withdrawn);
    Ok(())
}

/// After the commit of [`set_paused_in`]: announces the conversation's new bot state and the
/// bot replies it `withdrew`.
pub(crate) fn announce_paused(
    app: &App,
    ctx: &TenantCtx,
    conversation_id: ConversationId,
    withdrawn: &[MessageId],
) {
    app.events.publish(Event {
        kind: EventKind::ConversationUpdated,
        tenant_id: ctx.tenant_id(),
        conversation_id,
        message_id: None,
    });
    for id in withdrawn {
        announce_update(app, ctx, conversation_id, *id);
    }
}

/// [`set_bot_paused`] in the caller's transaction: the ids of the bot replies it withdrew.
pub(crate) async fn set_paused_in(
    tx: &TenantTx,
    conversation_id: ConversationId,
    paused: bool,
) -> Result<Vec<MessageId>, ServiceError> {
    let changed = conversation::Entity::by_id_update(tx.tenant(), conversation_id)
        .col_expr(conversation::Column::BotPaused, paused.into())
        .col_expr(conversation::Column::UpdatedAt, Utc::now().into())
        .exec(tx.conn())
        .await?;
    if changed.rows_affected == 0 {
        return Err(ServiceError::NotFound);
    }
    if !paused {
        return Ok(Vec::new());
    }
    withdraw_bot_replies(tx, conversation_id).await
}

/// Stages the send of `row` (written in `tx`), commits, and hands its job over; returns the
/// row as committed, before its send job can run.
async fn commit_and_send(
    app: &App,
    ctx: &TenantCtx,
    tx: TenantTx,
    conversation_id: ConversationId,
    row: Outboxed,
) -> Result<MessageView, ServiceError> {
    let view = crate::conversations::message_in(&tx, row.id).await?;
    let later = stage_send(&app.jobs, &tx, &[row], crate::correlation::current()).await?;
    tx.commit().await?;
    dispatch(app, ctx, conversation_id, &[row], later).await;
    Ok(view)
}

/// True for an outbound status a person may send again ([`send_again`]): the provider did
/// not deliver it (`failed`, `undelivered`) or we did not send it (`suppressed`).
pub fn can_send_again(direction: Direction, status: MessageStatus) -> bool {
    direction == Direction::Outbound
        && matches!(
            status,
            MessageStatus::Failed | MessageStatus::Undelivered | MessageStatus::Suppressed
        )
}

/// True when the inbox offers "send again" for `m` in conversation `s`: [`can_send_again`],
/// and [`send_again`] would not refuse it for the conversation's state (its number removed;
/// the contact opted out, unless `m` is a compliance reply, which may answer a text sent after
/// the opt-out; the send job's exact rule decides that one).
pub fn offers_send_again(s: &ConversationSummary, m: &MessageView) -> bool {
    can_send_again(m.direction, m.status)
        && !s.number_removed
        && (!s.opted_out || m.source == Source::Compliance)
}

/// A person's "send again" of an outbound message that did not reach the customer: its text
/// goes out as a new message through the outbox, with the same source and answering the same
/// text; the original keeps its status and error code, so the thread shows both. The bot's
/// state is left as it is. Once per message: repeating it returns the message the first call
/// made, as it stands.
///
/// # Errors
/// [`ServiceError::NotFound`] for a message that is not in this tenant's `conversation_id`;
/// [`ServiceError::Conflict`] for one that is not [`can_send_again`], that the contact's
/// opt-out (STOP; Twilio error 21610) stops by the rule the send job applies, or whose
/// conversation's number was removed ([`NUMBER_RELEASED`]).
#[tracing::instrument(skip(app), fields(tenant_id = %ctx.tenant_id()))]
pub async fn send_again(
    app: &App,
    ctx: &TenantCtx,
    conversation_id: ConversationId,
    message_id: MessageId,
) -> Result<MessageView, ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    // The message as the send job reads it: with its recipient's opt-out and the answered
    // text's time.
    let out = Outgoing::load(&tx, message_id)
        .await?
        .filter(|out| out.msg.conversation_id == conversation_id)
        .ok_or(ServiceError::NotFound)?;
    let original = &out.msg;
    if !can_send_again(original.direction, original.status) {
        return Err(ServiceError::Conflict(format!(
            "only a message that was not delivered can be sent again; this one is {}",
            original.status.as_str()
        )));
    }
    if out.suppressed() {
        return Err(ServiceError::Conflict(
            "the contact opted out (STOP): nothing can be sent until they text START".into(),
        ));
    }
    if out.number_released {
        return Err(ServiceError::Conflict(NUMBER_RELEASED.into()));
    }
    let conversation = conversation::Entity::by_id(tx.tenant(), conversation_id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    let key = Some(format!("again:{message_id}"));
    let row = insert_outbound(
        &tx,
        &conversation,
        &original.body,
        original.source,
        key,
        original.in_reply_to,
    )
    .await?;
    commit_and_send(app, ctx, tx, conversation_id, row).await
}

/// Why nothing is sent in a conversation whose number was removed in Settings (released: see
/// [`crate::settings::remove_number`]): a queued reply fails with it, a new one or a "send
/// again" is refused (409) with it.
pub const NUMBER_RELEASED: &str = "this conversation's number was removed in Settings; add it \
                                   again to reply from it";

/// Why a bot reply that was still in the outbox when a person took over was not sent.
pub const WITHDRAWN_BY_TAKEOVER: &str = "not sent: a person took over the conversation";

/// Marks the conversation's bot replies still in the outbox (`queued`: waiting behind an
/// earlier reply, a rate limit or a retry) `suppressed`, in the caller's transaction, and
/// returns their ids. A person taking over answers from here; the bot's questions must not
/// follow theirs. A bot reply whose last attempt's outcome is unknown (`sending`) may already be
/// at the provider and is left to its job. A send job that later reads one of these rows finds
/// it settled, and its claim (status `queued`) fails.
async fn withdraw_bot_replies(
    tx: &TenantTx,
    conversation_id: ConversationId,
) -> Result<Vec<MessageId>, ServiceError> {
    let ids: Vec<MessageId> = message::Entity::scoped(tx.tenant())
        .select_only()
        .column(message::Column::Id)
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::Direction.eq(Direction::Outbound))
        .filter(message::Column::Source.eq(Source::Bot))
        .filter(message::Column::Status.eq(MessageStatus::Queued))
        .into_tuple()
        .all(tx.conn())
        .await?;
    if !ids.is_empty() {
        message::Entity::scoped_update(tx.tenant())
            .filter(message::Column::Id.is_in(ids.clone()))
            .filter(message::Column::Status.eq(MessageStatus::Queued))
            .col_expr(
                message::Column::Status,
                MessageStatus::Suppressed.as_str().into(),
            )
            .col_expr(message::Column::ErrorCode, None::<i32>.into())
            .col_expr(
                message::Column::ErrorMessage,
                Some(WITHDRAWN_BY_TAKEOVER.to_string()).into(),
            )
            .col_expr(message::Column::UpdatedAt, Utc::now().into())
            .exec(tx.conn())
            .await?;
    }
    Ok(ids)
}

/// True while the provider does not have the message yet: `queued` (our outbox), or
/// `sending` without a MessageSid (a call whose outcome we do not know). `sending` WITH a
/// MessageSid means the provider took it and status callbacks will move it on.
pub fn awaits_provider(status: MessageStatus, has_sid: bool) -> bool {
    status == MessageStatus::Queued || (status == MessageStatus::Sending && !has_sid)
}

/// What the send job should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Nothing more to do (sent, failed for good, suppressed, or the row is gone).
    Done,
    /// An older message of the same conversation is not sent yet; this one goes after it
    /// (whatever settles the older one, its send job or a status callback, releases it), so
    /// a customer reads replies in order.
    Waiting,
    /// Try again after this long (rate limited, or the provider was unavailable).
    RetryAfter(Duration),
}

/// Writes `update` to `msg`'s row. A caller that settles the row (it no longer awaits the
/// provider) then releases the next reply ([`release_next`]); one that leaves it waiting
/// (a retry) does not.
async fn set_status(
    app: &App,
    ctx: &TenantCtx,
    msg: &message::Model,
    update: impl FnOnce(&mut message::ActiveModel),
) -> Result<(), ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let mut am = message::ActiveModel {
        ..Default::default()
    };
    update(&mut am);
    am.updated_at = Set(Utc::now());
    message::Entity::update_by_id(tx.tenant(), msg.id, am)
        .exec(tx.conn())
        .await?;
    tx.commit().await?;
    announce_update(app, ctx, msg.conversation_id, msg.id);
    Ok(())
}

/// Gives back the attempt `msg`'s claim counted but [`attempt`] did not make, unless another
/// job has claimed it since: it stays `sending` from its claim's time, so its next attempt
/// waits out [`crate::Providers::in_flight`], asks the provider, and sends only if the
/// provider has nothing, without having used up one of [`MAX_SEND_ATTEMPTS`].
async fn give_back_attempt(
    app: &App,
    ctx: &TenantCtx,
    msg: &message::Model,
) -> Result<(), ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    message::Entity::by_id_update(tx.tenant(), msg.id)
        .filter(message::Column::Status.eq(MessageStatus::Sending))
        .filter(message::Column::Attempts.eq(msg.attempts))
        .filter(message::Column::ProviderSid.is_null())
        .col_expr(message::Column::Attempts, (msg.attempts - 1).into())
        .exec(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Settles `msg` for good without sending it (`status`, with `reason` on it for the thread),
/// and starts the conversation's next reply, which no longer waits for it.
async fn settle_unsent(
    app: &App,
    ctx: &TenantCtx,
    msg: &message::Model,
    status: MessageStatus,
    reason: String,
) -> Result<(), ServiceError> {
    set_status(app, ctx, msg, |m| {
        m.status = Set(status);
        m.error_message = Set(Some(reason));
    })
    .await?;
    release_next(app, ctx, msg).await
}

/// Tells live listeners that a message changed.
fn announce_update(
    app: &App,
    ctx: &TenantCtx,
    conversation_id: ConversationId,
    message_id: MessageId,
) {
    app.events.publish(Event {
        kind: EventKind::MessageUpdated,
        tenant_id: ctx.tenant_id(),
        conversation_id,
        message_id: Some(message_id),
    });
}

/// Records that the contact opted out at the provider (Twilio error 21610); true when it had
/// not opted out with us before.
async fn opt_out_from_provider(
    app: &App,
    ctx: &TenantCtx,
    contact_id: switchboard_domain::ContactId,
) -> Result<bool, ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let newly = opt_out_in(&tx, contact_id).await?;
    tx.commit().await?;
    Ok(newly)
}

/// [`opt_out_from_provider`] inside the caller's write transaction.
async fn opt_out_in(
    tx: &TenantTx,
    contact_id: switchboard_domain::ContactId,
) -> Result<bool, ServiceError> {
    let now = Utc::now();
    Ok(contact::Entity::by_id_update(tx.tenant(), contact_id)
        .filter(contact::Column::OptedOutAt.is_null())
        .col_expr(contact::Column::OptedOutAt, Some(now).into())
        .col_expr(
            contact::Column::OptOutKeyword,
            Some("twilio:21610".to_string()).into(),
        )
        .col_expr(contact::Column::UpdatedAt, now.into())
        .exec(tx.conn())
        .await?
        .rows_affected
        == 1)
}

/// A reply as the send job needs it, read in one statement: the row, its recipient, the
/// tenant's number and account, and whether an older reply of the conversation still waits.
struct Outgoing {
    msg: message::Model,
    /// The contact's number (E.164).
    to: String,
    /// When the contact opted out, if they did.
    opted_out_at: Option<chrono::DateTime<Utc>>,
    /// When the inbound text this reply answers was received (`in_reply_to`), if it names one.
    answered_at: Option<chrono::DateTime<Utc>>,
    /// The tenant's number the conversation is on (E.164).
    from: String,
    /// The tenant's own Twilio AccountSid and sealed auth token, when it has an account.
    account_sid: Option<String>,
    sealed_token: Option<String>,
    /// An older outbound message of the conversation still waits for the provider.
    blocked: bool,
    /// The conversation's number was removed ([`phone_number::Model::released_at`]).
    number_released: bool,
    /// A person has taken the conversation over ([`conversation::Model::bot_paused`]).
    bot_paused: bool,
}

impl FromQueryResult for Outgoing {
    fn from_query_result(row: &QueryResult, pre: &str) -> Result<Self, DbErr> {
        Ok(Self {
            msg: message::Model::from_query_result(row, pre)?,
            to: row.try_get(pre, "to_phone")?,
            opted_out_at: row.try_get(pre, "opted_out_at")?,
            answered_at: row.try_get(pre, "answered_at")?,
            from: row.try_get(pre, "from_number")?,
            account_sid: row.try_get(pre, "account_sid")?,
            sealed_token: row.try_get(pre, "sealed_token")?,
            blocked: row.try_get(pre, "blocked")?,
            number_released: row.try_get(pre, "number_released")?,
            bot_paused: row.try_get(pre, "bot_paused")?,
        })
    }
}

impl Outgoing {
    /// `message_id` of `tx`'s tenant with its contact, conversation, number and tenant
    /// (joined on the tenant too), or `None` when the row is gone.
    async fn load(tx: &TenantTx, message_id: MessageId) -> Result<Option<Self>, ServiceError> {
        use message::Column as M;
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
        // The receipt time of the text this reply answers.
        let a = Alias::new("answered");
        let answered_at = Query::select()
            .expr(Expr::col((a.clone(), M::CreatedAt)))
            .from_as(message::Entity, a.clone())
            .and_where(Expr::col((a.clone(), M::TenantId)).equals((message::Entity, M::TenantId)))
            .and_where(Expr::col((a.clone(), M::Id)).equals((message::Entity, M::InReplyTo)))
            .to_owned();
        // Only a compliance reply's suppression looks at it.
        let answered_only: Expr = Expr::case(
            Expr::col((message::Entity, M::Source)).eq(Source::Compliance.as_str()),
            answered_at,
        )
        .finally(Expr::val(None::<chrono::DateTime<Utc>>))
        .into();
        let to_conversation = message::Entity::belongs_to(conversation::Entity)
            .from((M::ConversationId, M::TenantId))
            .to((conversation::Column::Id, conversation::Column::TenantId));
        let to_contact = message::Entity::belongs_to(contact::Entity)
            .from((M::ContactId, M::TenantId))
            .to((contact::Column::Id, contact::Column::TenantId));
        let to_number = conversation::Entity::belongs_to(phone_number::Entity)
            .from((
                conversation::Column::PhoneNumberId,
                conversation::Column::TenantId,
            ))
            .to((phone_number::Column::Id, phone_number::Column::TenantId));
        let to_tenant = message::Entity::belongs_to(tenant::Entity)
            .from(M::TenantId)
            .to(tenant::Column::Id);
        Ok(message::Entity::by_id(tx.tenant(), message_id)
            .join(JoinType::InnerJoin, to_conversation.into())
            .join(JoinType::InnerJoin, to_contact.into())
            .join(JoinType::InnerJoin, to_number.into())
            .join(JoinType::InnerJoin, to_tenant.into())
            .column_as(contact::Column::Phone, "to_phone")
            .column_as(contact::Column::OptedOutAt, "opted_out_at")
            .column_as(answered_only, "answered_at")
            .column_as(phone_number::Column::E164, "from_number")
            .column_as(tenant::Column::TwilioAccountSid, "account_sid")
            .column_as(tenant::Column::TwilioAuthTokenSealed, "sealed_token")
            .column_as(message::older_reply_awaiting_provider(), "blocked")
            .column_as(conversation::Column::BotPaused, "bot_paused")
            .column_as(
                Expr::col((phone_number::Entity, phone_number::Column::ReleasedAt)).is_not_null(),
                "number_released",
            )
            .into_model::<Self>()
            .one(tx.conn())
            .await?)
    }

    /// Plainly due as read: an outbound reply still in the outbox, not held back by a rate
    /// limit, nothing older of its conversation waiting, the recipient not opted out, attempts
    /// left. Everything else goes through the checks of [`attempt_one`].
    fn due(&self) -> bool {
        self.msg.direction == Direction::Outbound
            && self.msg.status == MessageStatus::Queued
            && held_back(&self.msg, Utc::now()).is_none()
            && !self.blocked
            && !self.suppressed()
            && !self.number_released
            && self.msg.attempts < MAX_SEND_ATTEMPTS
    }

    /// What the provider gets.
    fn sms(&self, app: &App) -> OutboundSms {
        OutboundSms {
            to: self.to.clone(),
            from: self.from.clone(),
            body: self.msg.body.clone(),
            status_callback: status_callback_url(app, self.msg.id),
        }
    }

    /// Claims it in `tx` (see [`claim`]): itself as claimed, or `None` when another job got
    /// there first.
    async fn claim(self, tx: &TenantTx) -> Result<Option<Self>, ServiceError> {
        Ok(claim(tx, &self.msg).await?.map(|msg| Self { msg, ..self }))
    }

    /// True when the contact's opt-out stops this message: every message once the contact
    /// opted out, except a compliance reply to a text received from the opt-out on, which is
    /// the confirmation of that STOP (CTIA requires one) or the answer to a later HELP. A
    /// START's or HELP's reply to a text from before the opt-out is suppressed however late it
    /// was decided. A compliance reply that names no text (written before `in_reply_to`
    /// existed) counts from its own creation.
    fn suppressed(&self) -> bool {
        let answers = self.answered_at.unwrap_or(self.msg.created_at);
        self.opted_out_at
            .is_some_and(|at| !(self.msg.source == Source::Compliance && answers >= at))
    }
}

/// One attempt to hand `message_id` to its provider (the `SendMessage` job). On a retryable
/// failure it schedules the next attempt itself (a new job after [`backoff`]).
///
/// The common case is one write transaction (read the row with everything the send needs,
/// claim the attempt), the provider call, and one write transaction (record the MessageSid,
/// find and claim the reply that waited for this one). The job then sends that reply, so the
/// replies of one turn of a conversation go out in order from one job, with one write
/// transaction per reply after the first. Both write transactions are shared with the other
/// send jobs of the tenant that write at the same moment ([`crate::group`]).
///
/// Never sends a text twice: a row whose last attempt has an unknown outcome (`sending`
/// without a MessageSid) is first left alone while that attempt may still be in flight
/// ([`crate::Providers::in_flight`]), then looked up at the provider (a message with this
/// recipient, sender and body created since the row, whose MessageSid we do not already hold), and only
/// sent again when the provider has none; if the provider cannot be asked, it stays `sending`
/// and is retried later. The row is claimed (compare-and-set on status and attempts) before
/// every provider call, so two jobs never call the provider for one attempt.
///
/// # Errors
/// Database errors only (the job is then re-run); provider failures are recorded on the
/// message and returned as a [`Delivery`].
#[tracing::instrument(skip(app), fields(tenant_id = %ctx.tenant_id()))]
pub async fn deliver(
    app: &App,
    ctx: &TenantCtx,
    message_id: MessageId,
) -> Result<Delivery, ServiceError> {
    let mut step = attempt_one(app, ctx, message_id).await?;
    loop {
        step = match step {
            Step::Next(id) => attempt_one(app, ctx, id).await?,
            Step::Claimed(out) => send_claimed(app, ctx, *out).await?,
            Step::Finished(delivery) => return Ok(delivery),
        };
    }
}

/// What one message's attempt left for the send job. The replies of a conversation that
/// waited for the message go out from the same job, in order, without a job of their own.
enum Step {
    /// The conversation's next reply, to read and decide on.
    Next(MessageId),
    /// The conversation's next reply, already claimed in the transaction that recorded the
    /// message's acceptance: send it.
    Claimed(Box<Outgoing>),
    Finished(Delivery),
}

impl From<Delivery> for Step {
    fn from(d: Delivery) -> Self {
        Step::Finished(d)
    }
}

/// [`deliver`] for one message.
async fn attempt_one(
    app: &App,
    ctx: &TenantCtx,
    message_id: MessageId,
) -> Result<Step, ServiceError> {
    let out = match app
        .sends
        .claims
        .run(ctx.tenant_id(), ClaimIfDue(message_id))
        .await?
    {
        Found::Gone => {
            tracing::info!(%message_id, "message is gone; nothing to send");
            return Ok(Delivery::Done.into());
        }
        Found::Claimed(out) => return send_claimed(app, ctx, out).await,
        Found::Taken => {
            tracing::info!(%message_id, "another job is sending this message");
            return Ok(Delivery::Done.into());
        }
        // Everything else writes in transactions of its own.
        Found::NotDue(out) => out,
    };
    let msg = out.msg.clone();
    if msg.direction != Direction::Outbound {
        return Ok(Delivery::Done.into());
    }
    if !awaits_provider(msg.status, msg.provider_sid.is_some()) {
        // Settled already: a second job, or the re-run of a job whose worker died after this
        // message, in the middle of the conversation's replies. Go on with the next reply
        // the provider lacks (queued, or claimed by that worker with its outcome unknown),
        // as the first run would have.
        let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
        let next = oldest_outbound(
            &tx,
            msg.conversation_id,
            Some(msg.id),
            message::awaiting_provider(),
        )
        .await?;
        return Ok(next.map_or(Step::Finished(Delivery::Done), Step::Next));
    }
    if out.blocked {
        tracing::debug!(%message_id, "an older reply goes first");
        return Ok(Delivery::Waiting.into());
    }
    // The provider asked us to wait (`Retry-After`), and this job came early: its own retry
    // job a moment early, the re-run of the job of the reply before it, a second job.
    if let Some(wait) = held_back(&msg, Utc::now()) {
        if wait > Duration::from_millis(SHORT_WAIT_MS) {
            tracing::debug!(%message_id, ?wait, "held back by the provider's rate limit");
            return retry(app, ctx, &msg, wait).await;
        }
        // Then read it again: a STOP may have come meanwhile.
        tokio::time::sleep(wait).await;
        return Ok(Step::Next(message_id));
    }
    // `sending` here: an earlier attempt whose outcome is unknown.
    let provider = match provider_for(app, ctx, &out, msg.status == MessageStatus::Sending).await? {
        ControlFlow::Continue(provider) => provider,
        ControlFlow::Break(step) => return Ok(step),
    };
    let sms = out.sms(app);

    // A previous attempt with an unknown outcome: wait while it may be in flight, then ask.
    if msg.status == MessageStatus::Sending {
        let age = (Utc::now() - msg.updated_at).to_std().unwrap_or_default();
        let in_flight = app.providers.in_flight();
        if age < in_flight {
            return retry(app, ctx, &msg, in_flight - age).await;
        }
        match reconcile(app, provider.as_ref(), &sms, &msg).await {
            Ok(Some(found)) => return record_accepted(app, ctx, &msg, found).await,
            // It never reached the provider, and a person took over since: withdrawn, as the
            // takeover withdrew the bot's queued replies (the person's reply waits behind it).
            Ok(None) if msg.source == Source::Bot && out.bot_paused => {
                let reason = WITHDRAWN_BY_TAKEOVER.to_string();
                settle_unsent(app, ctx, &msg, MessageStatus::Suppressed, reason).await?;
                return Ok(Delivery::Done.into());
            }
            Ok(None) => {} // It never reached the provider: send it below.
            Err(e)
                if Utc::now() - msg.created_at > chrono::Duration::hours(UNKNOWN_OUTCOME_HOURS) =>
            {
                // Give up asking; the text may or may not have gone out, and the thread says so.
                tracing::error!(error = %e, %message_id, "send outcome still unknown; giving up");
                let reason = format!(
                    "outcome unknown: the provider could not be asked for {UNKNOWN_OUTCOME_HOURS} h ({e}); it may have been sent"
                );
                settle_unsent(app, ctx, &msg, MessageStatus::Failed, reason).await?;
                return Ok(Delivery::Done.into());
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell yet whether the last attempt was sent");
                let age = (Utc::now() - msg.created_at).to_std().unwrap_or_default();
                let delay = recheck_delay(msg.attempts, age);
                let (delay, not_before) = match e {
                    // Asking was rate-limited too: no job asks again before then.
                    SendError::RateLimited { retry_after } => {
                        let delay = retry_after.map_or(delay, |d| capped(d).max(delay));
                        (delay, Some(after(delay)))
                    }
                    _ => (delay, None),
                };
                set_status(app, ctx, &msg, |m| {
                    m.error_message = Set(Some(format!("{e}; checking again")));
                    if not_before.is_some() {
                        m.not_before = Set(not_before);
                    }
                })
                .await?;
                return retry(app, ctx, &msg, delay).await;
            }
        }
    }

    // Opt-out is checked at send time, so queued jobs obey a STOP that arrived after them.
    if out.suppressed() {
        let reason = "recipient opted out".to_string();
        settle_unsent(app, ctx, &msg, MessageStatus::Suppressed, reason).await?;
        return Ok(Delivery::Done.into());
    }
    if out.number_released {
        let reason = format!("not sent: {NUMBER_RELEASED}");
        settle_unsent(app, ctx, &msg, MessageStatus::Failed, reason).await?;
        return Ok(Delivery::Done.into());
    }

    let rate_limited = msg.error_code == Some(SendError::TWILIO_RATE_LIMITED)
        && Utc::now() - msg.created_at < chrono::Duration::hours(RATE_LIMITED_HOURS);
    if msg.attempts >= MAX_SEND_ATTEMPTS && !rate_limited {
        let reason = format!("gave up after {} attempts", msg.attempts);
        settle_unsent(app, ctx, &msg, MessageStatus::Failed, reason).await?;
        return Ok(Delivery::Done.into());
    }

    // Claim the attempt: only one job can move the row from what we read to `sending`.
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let claimed = claim(&tx, &msg).await?;
    tx.commit().await?;
    let Some(msg) = claimed else {
        tracing::info!(%message_id, "another job is sending this message");
        return Ok(Delivery::Done.into());
    };
    attempt(app, ctx, provider.as_ref(), &sms, msg).await
}

/// The group-commit lanes of the send jobs ([`crate::group`]): their claims, and their records
/// of the provider's acceptance.
pub(crate) struct SendGroups {
    claims: Groups<ClaimIfDue>,
    accepts: Groups<RecordAccepted>,
}

impl SendGroups {
    pub(crate) fn new(db: &switchboard_entity::Db, wakers: &crate::jobs::Wakers) -> Self {
        Self {
            claims: Groups::new(db.clone(), wakers.clone()),
            accepts: Groups::new(db.clone(), wakers.clone()),
        }
    }
}

/// The send job's first transaction for a message (a [`group`](crate::group) unit): read it
/// with what its send needs and, when plainly due, claim the attempt.
struct ClaimIfDue(MessageId);

/// What [`ClaimIfDue`] found.
enum Found {
    /// The row is gone.
    Gone,
    /// Claimed for this job: send it.
    Claimed(Outgoing),
    /// Plainly due, but another job claimed it first.
    Taken,
    /// Not plainly due: [`attempt_one`] decides what it needs.
    NotDue(Outgoing),
}

impl Unit for ClaimIfDue {
    type Output = Found;

    async fn run(&self, tx: &TenantTx) -> Result<Found, ServiceError> {
        claim_if_due(tx, self.0).await
    }
}

/// Reads message `id` with what its send needs and, when plainly due, claims the attempt.
async fn claim_if_due(tx: &TenantTx, id: MessageId) -> Result<Found, ServiceError> {
    Ok(match Outgoing::load(tx, id).await? {
        None => Found::Gone,
        Some(out) if !out.due() => Found::NotDue(out),
        Some(out) => out.claim(tx).await?.map_or(Found::Taken, Found::Claimed),
    })
}

/// [`attempt`] for a reply claimed together with what its send needs.
async fn send_claimed(app: &App, ctx: &TenantCtx, out: Outgoing) -> Result<Step, ServiceError> {
    // Claimed by this job a moment ago: nothing was sent.
    let provider = match provider_for(app, ctx, &out, false).await? {
        ControlFlow::Continue(provider) => provider,
        ControlFlow::Break(step) => return Ok(step),
    };
    let sms = out.sms(app);
    attempt(app, ctx, provider.as_ref(), &sms, out.msg).await
}

/// The provider that sends `out` (its tenant's own Twilio account, or the platform's).
///
/// When the tenant's stored auth token cannot be opened (sealed under another `SECRET_KEY`,
/// or damaged), no retry can help, and a row left `sending` would be retried and swept forever
/// with nothing shown on it: the message fails for good with the reason on it, the
/// conversation's next reply is released (and fails the same way until the account is
/// connected again in Settings), and the job is done (`Break`). `in_doubt`: an earlier
/// attempt's outcome is unknown, and the provider cannot be asked without the credentials.
async fn provider_for(
    app: &App,
    ctx: &TenantCtx,
    out: &Outgoing,
    in_doubt: bool,
) -> Result<ControlFlow<Step, Arc<dyn SmsProvider>>, ServiceError> {
    let error = match tenancy::provider_from(app, out.account_sid.clone(), out.sealed_token.clone())
    {
        Ok(provider) => return Ok(ControlFlow::Continue(provider)),
        Err(ServiceError::Credential(e)) => e,
        Err(e) => return Err(e),
    };
    let msg = &out.msg;
    tracing::error!(%error, message_id = %msg.id, "the tenant's stored Twilio credentials cannot be opened");
    let reason = if in_doubt {
        "outcome unknown: the stored Twilio credentials cannot be read, so the provider cannot \
         be asked whether it has this text; it may have been sent. Reconnect the Twilio account \
         in Settings."
    } else {
        "not sent: the stored Twilio credentials cannot be read. Reconnect the Twilio account \
         in Settings."
    };
    settle_unsent(app, ctx, msg, MessageStatus::Failed, reason.to_string()).await?;
    Ok(ControlFlow::Break(Delivery::Done.into()))
}

/// Calls the provider for a claimed row (status `sending`, attempt counted) and records the
/// outcome on it.
async fn attempt(
    app: &App,
    ctx: &TenantCtx,
    provider: &dyn SmsProvider,
    sms: &OutboundSms,
    msg: message::Model,
) -> Result<Step, ServiceError> {
    if Utc::now() - msg.updated_at > chrono::Duration::milliseconds(MAX_CLAIM_TO_SEND_MS) {
        if Utc::now() - msg.created_at > chrono::Duration::hours(UNKNOWN_OUTCOME_HOURS) {
            let reason = format!(
                "not sent: for {UNKNOWN_OUTCOME_HOURS} h no attempt could start soon enough after its claim"
            );
            settle_unsent(app, ctx, &msg, MessageStatus::Failed, reason).await?;
            return Ok(Delivery::Done.into());
        }
        tracing::warn!(message_id = %msg.id, claimed_at = %msg.updated_at, "claimed too long ago to send safely; asking the provider first");
        give_back_attempt(app, ctx, &msg).await?;
        return retry(app, ctx, &msg, app.providers.in_flight()).await;
    }
    let started = std::time::Instant::now();
    let sent = provider.send(sms).await;
    crate::metrics::send(provider.name(), started.elapsed().as_secs_f64());
    match &sent {
        Err(SendError::RateLimited { .. }) => {
            crate::metrics::provider_error(provider.name(), SendError::TWILIO_RATE_LIMITED)
        }
        Err(SendError::Rejected { code, status, .. }) => {
            crate::metrics::provider_error(provider.name(), code.unwrap_or(i32::from(*status)))
        }
        Err(SendError::Unavailable { status, .. }) => {
            crate::metrics::provider_error(provider.name(), status.map_or(0, i32::from))
        }
        Ok(_) => {}
    }
    match sent {
        Ok(accepted) => record_accepted(app, ctx, &msg, accepted).await,
        Err(SendError::RateLimited { retry_after }) => {
            // Nothing was created by this call, and the provider had nothing before it: back
            // to the outbox, held back until the wait is over.
            let wait = retry_after.map_or_else(|| backoff(msg.attempts), capped);
            set_status(app, ctx, &msg, |m| {
                m.status = Set(MessageStatus::Queued);
                m.error_code = Set(Some(SendError::TWILIO_RATE_LIMITED));
                m.error_message = Set(Some("rate limited by the provider; retrying".into()));
                m.not_before = Set(Some(after(wait)));
            })
            .await?;
            retry(app, ctx, &msg, wait).await
        }
        Err(SendError::Rejected {
            code,
            message,
            status: status_code,
        }) => {
            // Our confirmation of an opt-out the contact made with us (or our answer to a HELP
            // since), refused because Twilio's default opt-out handling answered the keyword
            // itself and blocks the number's texts to the contact: nothing failed.
            let answered_by_twilio = code == Some(SendError::TWILIO_UNSUBSCRIBED)
                && !opt_out_from_provider(app, ctx, msg.contact_id).await?
                && msg.source == Source::Compliance;
            let (status, message) = if answered_by_twilio {
                (
                    MessageStatus::Suppressed,
                    format!("not sent: {TWILIO_ANSWERED}"),
                )
            } else {
                (MessageStatus::Failed, message)
            };
            set_status(app, ctx, &msg, |m| {
                m.status = Set(status);
                m.error_code = Set(code.or(Some(i32::from(status_code))));
                m.error_message = Set(Some(message));
            })
            .await?;
            release_next(app, ctx, &msg).await?;
            Ok(Delivery::Done.into())
        }
        Err(SendError::Unavailable { status, message }) => {
            // Outcome unknown: stay `sending`; the next attempt waits out the request, then
            // asks the provider before sending again.
            set_status(app, ctx, &msg, |m| {
                m.error_code = Set(status.map(i32::from));
                m.error_message = Set(Some(format!("{message}; retrying")));
            })
            .await?;
            retry(
                app,
                ctx,
                &msg,
                backoff(msg.attempts).max(app.providers.in_flight()),
            )
            .await
        }
    }
}

/// Schedules another attempt for `msg` after `delay`. Each schedule is its own job (a unique
/// key): the job scheduling it may be running under the key a derived one would repeat, and
/// the claim, not the queue, is what keeps two attempts from sending.
async fn retry(
    app: &App,
    ctx: &TenantCtx,
    msg: &message::Model,
    delay: Duration,
) -> Result<Step, ServiceError> {
    let job = Job::SendMessage(SendMessage::new(ctx.tenant_id(), msg.id));
    let key = format!("retry:{}:{}", msg.id, uuid::Uuid::now_v7().simple());
    app.jobs.push_after(job, key, delay).await?;
    Ok(Delivery::RetryAfter(delay).into())
}

/// The provider's record of `msg` from an earlier attempt, if it has one we do not hold yet.
async fn reconcile(
    app: &App,
    provider: &dyn SmsProvider,
    sms: &OutboundSms,
    msg: &message::Model,
) -> Result<Option<Accepted>, SendError> {
    let candidates = provider.find_recent(sms, msg.created_at).await?;
    for candidate in candidates {
        match lookup::message_by_provider_sid(&app.db.read, &candidate.sid).await {
            Ok(None) => return Ok(Some(candidate)),
            // Another job found it for this very message a moment ago and recorded it.
            Ok(Some((_, id))) if id == msg.id => return Ok(Some(candidate)),
            // An identical text sent earlier is already ours under its own MessageSid.
            Ok(Some(_)) => continue,
            Err(e) => {
                return Err(SendError::Unavailable {
                    status: None,
                    message: format!("database: {e}"),
                });
            }
        }
    }
    Ok(None)
}

/// Records the provider's acceptance of `msg` ([`RecordAccepted`], in a shared transaction)
/// and announces the change; returns what the job does next.
async fn record_accepted(
    app: &App,
    ctx: &TenantCtx,
    msg: &message::Model,
    accepted: Accepted,
) -> Result<Step, ServiceError> {
    let unit = RecordAccepted {
        id: msg.id,
        conversation_id: msg.conversation_id,
        accepted,
    };
    let step = app.sends.accepts.run(ctx.tenant_id(), unit).await?;
    announce_update(app, ctx, msg.conversation_id, msg.id);
    Ok(step)
}

/// Records the provider's acceptance of message `id` without moving the status backwards (a
/// status callback may have arrived first, through the message id in its URL), and returns the
/// reply that waited for this one, found (and, when plainly due, claimed) in the same
/// transaction. One UPDATE decides against the row as it is when written, so a callback
/// committed meanwhile is never overwritten. A [`group`](crate::group) unit.
struct RecordAccepted {
    id: MessageId,
    conversation_id: ConversationId,
    accepted: Accepted,
}

impl Unit for RecordAccepted {
    type Output = Step;

    /// One `UPDATE … RETURNING`, plus the next reply's read and claim when there is one.
    async fn run(&self, tx: &TenantTx) -> Result<Step, ServiceError> {
        use message::Column as M;
        use sea_orm::sea_query::{Expr, ExprTrait, Func, Query};
        use sea_orm::{ConnectionTrait, QueryTrait};
        let status = self.accepted.status.max_with(MessageStatus::Sending);
        let behind: Vec<&str> = MessageStatus::ALL
            .into_iter()
            .filter(|s| s.can_advance_to(status))
            .map(MessageStatus::as_str)
            .collect();
        let sending = || Expr::col(M::Status).eq(MessageStatus::Sending.as_str());
        // RETURNING the conversation's oldest later reply still in the outbox (or NULL).
        let next =
            oldest_outbound_query(tx.tenant(), self.conversation_id, Some(self.id), queued())
                .into_query();
        let now = Utc::now();
        let mut update = message::Entity::by_id_update(tx.tenant(), self.id)
            .col_expr(
                M::Status,
                Expr::case(Expr::col(M::Status).is_in(behind), status.as_str())
                    .finally(Expr::col(M::Status))
                    .into(),
            )
            .col_expr(
                M::ProviderSid,
                Func::coalesce([
                    Expr::col(M::ProviderSid),
                    Expr::val(self.accepted.sid.clone()),
                ])
                .into(),
            )
            .col_expr(
                M::SentAt,
                Func::coalesce([Expr::col(M::SentAt), Expr::val(now)]).into(),
            )
            // The provider's error replaces what our own attempt noted on a `sending` row (a
            // timeout, a 500); on a row a callback moved on, it only fills a missing one.
            .col_expr(
                M::ErrorCode,
                Expr::case(sending(), Expr::val(self.accepted.error_code))
                    .finally(Func::coalesce([
                        Expr::col(M::ErrorCode),
                        Expr::val(self.accepted.error_code),
                    ]))
                    .into(),
            )
            .col_expr(
                M::ErrorMessage,
                Expr::case(sending(), Expr::val(self.accepted.error_message.clone()))
                    .finally(Func::coalesce([
                        Expr::col(M::ErrorMessage),
                        Expr::val(self.accepted.error_message.clone()),
                    ]))
                    .into(),
            )
            .col_expr(M::UpdatedAt, now.into())
            .into_query();
        update.returning(Query::returning().expr(Expr::SubQuery(None, Box::new(next.into()))));
        let backend = tx.conn().get_database_backend();
        let row = tx
            .conn()
            .query_one_raw(backend.build(&update))
            .await?
            .ok_or(ServiceError::NotFound)?;
        let next: Option<MessageId> = row.try_get_by_index(0)?;
        // The next reply, claimed here when it is plainly due (one transaction fewer per reply).
        Ok(match next {
            None => Step::Finished(Delivery::Done),
            Some(next) => match claim_if_due(tx, next).await? {
                Found::Claimed(out) => Step::Claimed(Box::new(out)),
                Found::Taken => Step::Finished(Delivery::Done), // another job is sending it
                Found::Gone | Found::NotDue(_) => Step::Next(next),
            },
        })
    }
}

/// After `msg` stopped waiting for the provider, starts the conversation's next unsent reply.
async fn release_next(
    app: &App,
    ctx: &TenantCtx,
    msg: &message::Model,
) -> Result<(), ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let next = next_queued(&tx, msg).await?;
    drop(tx);
    push_next(app, ctx, msg, next).await
}

/// The conversation's oldest reply after `msg` still in the outbox.
async fn next_queued(
    tx: &TenantTx,
    msg: &message::Model,
) -> Result<Option<MessageId>, ServiceError> {
    oldest_outbound(tx, msg.conversation_id, Some(msg.id), queued()).await
}

/// Outbound rows still in the outbox.
fn queued() -> Condition {
    message::Column::Status.eq(MessageStatus::Queued).into()
}

/// The oldest outbound message of `conversation_id` (after `after`, when given) that matches
/// `condition`.
async fn oldest_outbound(
    tx: &TenantTx,
    conversation_id: ConversationId,
    after: Option<MessageId>,
    condition: Condition,
) -> Result<Option<MessageId>, ServiceError> {
    Ok(
        oldest_outbound_query(tx.tenant(), conversation_id, after, condition)
            .into_tuple::<MessageId>()
            .one(tx.conn())
            .await?,
    )
}

/// [`oldest_outbound`] as a query of `tenant`'s rows (`SELECT id … LIMIT 1`), also run as a
/// subquery of the acceptance `UPDATE`.
fn oldest_outbound_query(
    tenant: TenantId,
    conversation_id: ConversationId,
    after: Option<MessageId>,
    condition: Condition,
) -> sea_orm::Select<message::Entity> {
    let mut query = message::Entity::scoped(tenant)
        .select_only()
        .column(message::Column::Id)
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::Direction.eq(Direction::Outbound))
        .filter(condition);
    if let Some(after) = after {
        query = query.filter(message::Column::Id.gt(after));
    }
    query.order_by_asc(message::Column::Id).limit(1)
}

/// Enqueues the send of `next`, the reply that waited for `msg`.
async fn push_next(
    app: &App,
    ctx: &TenantCtx,
    msg: &message::Model,
    next: Option<MessageId>,
) -> Result<(), ServiceError> {
    if let Some(next) = next {
        let job = Job::SendMessage(SendMessage::new(ctx.tenant_id(), next));
        // Keyed by the predecessor: the next message's own job may be running right now and
        // must not swallow this one.
        app.jobs
            .push(&[Enqueue::now(job, format!("after:{next}:{}", msg.id))])
            .await?;
    }
    Ok(())
}

/// Moves the row to `sending` and counts the attempt, if it is still exactly as read and the
/// provider has no MessageSid for it, in the caller's write transaction. Returns the row as it
/// is then (status `sending`, attempts + 1), or `None` when another job got there first.
///
/// The MessageSid condition matters for a row whose last attempt's outcome was unknown: a job
/// that read it, asked the provider, and found nothing of ours may have been overtaken by
/// another job that found the text at the provider and recorded its MessageSid while leaving
/// status (still `sending` at Twilio) and attempts as they were.
async fn claim(
    tx: &TenantTx,
    msg: &message::Model,
) -> Result<Option<message::Model>, ServiceError> {
    let now = Utc::now();
    let claimed = message::Entity::by_id_update(tx.tenant(), msg.id)
        .filter(message::Column::Status.eq(msg.status))
        .filter(message::Column::Attempts.eq(msg.attempts))
        .filter(message::Column::ProviderSid.is_null())
        .col_expr(
            message::Column::Status,
            MessageStatus::Sending.as_str().into(),
        )
        .col_expr(message::Column::Attempts, (msg.attempts + 1).into())
        .col_expr(message::Column::UpdatedAt, now.into())
        .exec(tx.conn())
        .await?
        .rows_affected
        == 1;
    Ok(claimed.then(|| message::Model {
        status: MessageStatus::Sending,
        attempts: msg.attempts + 1,
        updated_at: now,
        ..msg.clone()
    }))
}

/// Idempotency key of the first send job of a message: a second push is ignored.
pub fn send_key(id: MessageId) -> String {
    format!("send:{id}:0")
}

/// The StatusCallback URL for a message: `{APP_URL}/webhooks/twilio/status?m={message id}`.
/// The id lets a callback that outruns our own record of the MessageSid (or follows a timed-out
/// create call) still find its row.
pub fn status_callback_url(app: &App, id: MessageId) -> String {
    format!(
        "{}?m={id}",
        app.settings.public_url("/webhooks/twilio/status")
    )
}

/// A status callback, parsed.
#[derive(Clone, Debug)]
pub struct StatusUpdate {
    pub sid: String,
    pub status: MessageStatus,
    pub error_code: Option<i32>,
}

/// Applies a status callback to `message_id`: the status only moves forward; an error code is
/// kept; a 21610 failure opts the contact out.
///
/// # Errors
/// [`ServiceError::NotFound`] when the message is not this tenant's; database errors.
#[tracing::instrument(skip(app), fields(tenant_id = %ctx.tenant_id()))]
pub async fn apply_status(
    app: &App,
    ctx: &TenantCtx,
    message_id: MessageId,
    update: StatusUpdate,
) -> Result<bool, ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    // Locked until the commit (Postgres; SQLite's writes are serial anyway): two callbacks for
    // one message ("sent", "delivered") may run at once on several processes, and the one that
    // read the older status must not write after the other.
    let msg = message::Entity::by_id(tx.tenant(), message_id)
        .lock_exclusive()
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    if msg
        .provider_sid
        .as_deref()
        .is_some_and(|sid| sid != update.sid)
    {
        // The id in the callback URL and the MessageSid disagree: trust neither.
        return Err(ServiceError::NotFound);
    }
    let advance = msg.status.can_advance_to(update.status);
    // The same final status again, now with the error code it lacked (the send job found the
    // failure at the provider before this callback brought the code).
    let fills_code =
        msg.status == update.status && msg.error_code.is_none() && update.error_code.is_some();
    if !advance && !fills_code && msg.provider_sid.is_some() {
        return Ok(false);
    }
    let conversation_id = msg.conversation_id;
    let contact_id = msg.contact_id;
    let mut am = message::ActiveModel {
        provider_sid: Set(Some(update.sid)),
        ..Default::default()
    };
    if advance {
        am.status = Set(update.status);
        if msg.provider_sid.is_none() {
            // The first word from the provider: an error on the row is our own attempt's
            // ("no answer in time; retrying"), which this outcome replaces.
            am.error_code = Set(update.error_code);
            am.error_message = Set(None);
        } else if let Some(code) = update.error_code {
            am.error_code = Set(Some(code));
        }
        if msg.sent_at.is_none() && !matches!(update.status, MessageStatus::Failed) {
            am.sent_at = Set(Some(Utc::now()));
        }
    } else if fills_code {
        am.error_code = Set(update.error_code);
    }
    am.updated_at = Set(Utc::now());
    message::Entity::update_by_id(tx.tenant(), message_id, am)
        .exec(tx.conn())
        .await?;
    // In the same transaction: a retried callback finds the status final and changes nothing.
    if update.error_code == Some(SendError::TWILIO_UNSUBSCRIBED) {
        opt_out_in(&tx, contact_id).await?;
    }
    tx.commit().await?;
    announce_update(app, ctx, conversation_id, message_id);
    if awaits_provider(msg.status, msg.provider_sid.is_some()) {
        // The callback settled a row the send job had not: its successors may go.
        release_next(app, ctx, &msg).await?;
    }
    Ok(advance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asking_again_about_an_unknown_outcome_slows_down_with_age() {
        let secs = Duration::from_secs;
        assert_eq!(
            recheck_delay(1, secs(0)),
            backoff(1),
            "at first, the attempt's backoff"
        );
        assert_eq!(recheck_delay(1, secs(120)), secs(30));
        assert_eq!(recheck_delay(1, secs(3600)), secs(MAX_BACKOFF_SECS));
        assert_eq!(
            recheck_delay(4, secs(8)),
            backoff(4),
            "never below the backoff"
        );
    }
}
