//! Outbound texts: the outbox row, the send attempt, and status callbacks.
//!
//! A reply is a `messages` row first (status `queued`, with an idempotency key), then a
//! `SendMessage { tenant_id, message_id }` job runs [`deliver`]. The row records every
//! attempt, so a retried or duplicated job never sends a text twice:
//! - before calling the provider the row moves to `sending` (committed);
//! - a job that finds a row still `sending` does not know whether the last call reached the
//!   provider, so it asks the provider ([`SmsProvider::find_recent`]) before sending again.

use std::time::Duration;

use chrono::Utc;
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, sea_query::OnConflict};
use switchboard_domain::message::{Direction, MessageStatus, Source};
use switchboard_domain::{ConversationId, MessageId, segments};
use switchboard_entity::lookup;
use switchboard_entity::{
    TenantOwned, TenantTx, contact, conversation, ingest::preview, message, phone_number,
};
use switchboard_providers::{Accepted, OutboundSms, SendError, SmsProvider};

use crate::events::{Event, EventKind};
use crate::jobs::{Enqueue, Job, SendMessage};
use crate::{App, ServiceError, TenantCtx, tenancy};

/// Longest body we accept for one outbound text, in characters (Twilio's limit for `Body`).
pub const MAX_BODY_CHARS: usize = 1600;
/// Send attempts before a message is marked failed.
pub const MAX_SEND_ATTEMPTS: i32 = 8;
/// Hours a message whose last attempt has an unknown outcome keeps being checked with the
/// provider before it is marked failed (with a note that it may have been sent).
pub const UNKNOWN_OUTCOME_HOURS: i64 = 24;
/// Longest wait between attempts, in seconds.
pub const MAX_BACKOFF_SECS: u64 = 300;

/// Wait before attempt `attempt + 1` (1 s, 2 s, 4 s, … capped at [`MAX_BACKOFF_SECS`]).
pub fn backoff(attempt: i32) -> Duration {
    let exp = attempt.clamp(0, 16) as u32;
    Duration::from_secs((1u64 << exp).min(MAX_BACKOFF_SECS))
}

/// Checks an outbound body: 1 to [`MAX_BODY_CHARS`] characters after trimming.
///
/// # Errors
/// [`ServiceError::Invalid`] naming the field `body`.
pub fn check_body(body: &str) -> Result<String, ServiceError> {
    let body = body.trim();
    if body.is_empty() {
        return Err(ServiceError::invalid("body", "must not be empty"));
    }
    if body.chars().count() > MAX_BODY_CHARS {
        return Err(ServiceError::invalid(
            "body",
            format!("must be at most {MAX_BODY_CHARS} characters"),
        ));
    }
    Ok(body.to_string())
}

/// An outbox row written inside a unit of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outboxed {
    pub id: MessageId,
    /// False when the idempotency key already had a row (nothing new to send).
    pub created: bool,
}

/// Writes an outbound message (status `queued`) to `conversation` and moves the conversation's
/// preview. The caller commits, then enqueues [`Job::SendMessage`] for created rows.
///
/// # Errors
/// Database errors.
pub(crate) async fn insert_outbound(
    tx: &TenantTx,
    conversation: &conversation::Model,
    body: &str,
    source: Source,
    idempotency_key: Option<String>,
) -> Result<Outboxed, ServiceError> {
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
    })
    .on_conflict(
        OnConflict::columns([message::Column::TenantId, message::Column::IdempotencyKey])
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

/// Enqueues the send of freshly written outbox rows and announces them. Call after commit.
/// Never fails: the rows are committed, so a queue error is logged and the sweep
/// ([`crate::sweep`]) enqueues them later; reporting it would make a caller retry a reply
/// that will be sent anyway.
pub(crate) async fn dispatch(
    app: &App,
    ctx: &TenantCtx,
    conversation_id: ConversationId,
    rows: &[Outboxed],
) {
    for row in rows.iter().filter(|r| r.created) {
        let job = Job::SendMessage(SendMessage::new(ctx.tenant_id(), row.id));
        if let Err(e) = app.jobs.push(&[Enqueue::now(job, send_key(row.id))]).await {
            tracing::error!(error = %e, message_id = %row.id, "could not enqueue a send; the sweep will");
        }
        app.events.publish(Event {
            kind: EventKind::MessageCreated,
            tenant_id: ctx.tenant_id(),
            conversation_id,
            message_id: Some(row.id),
        });
    }
}

/// Enqueues the send of every reply of `conversation_id` still in the outbox (`queued`),
/// under the same keys [`dispatch`] used, so a job already queued is not doubled. For a
/// re-run of a job whose first run committed replies and then died before enqueueing them;
/// without it they would wait for the sweep.
///
/// # Errors
/// Database and queue errors.
pub(crate) async fn redispatch_queued(
    app: &App,
    ctx: &TenantCtx,
    conversation_id: ConversationId,
) -> Result<(), ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let queued: Vec<MessageId> = message::Entity::scoped(tx.tenant())
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::Direction.eq(Direction::Outbound))
        .filter(message::Column::Status.eq(MessageStatus::Queued))
        .order_by_asc(message::Column::Id)
        .all(tx.conn())
        .await?
        .into_iter()
        .map(|m| m.id)
        .collect();
    drop(tx);
    let jobs: Vec<Enqueue> = queued
        .into_iter()
        .map(|id| {
            Enqueue::now(
                Job::SendMessage(SendMessage::new(ctx.tenant_id(), id)),
                send_key(id),
            )
        })
        .collect();
    if !jobs.is_empty() {
        app.jobs.push(&jobs).await?;
    }
    Ok(())
}

/// A person's reply from the inbox or the API: queued as `manual`, and the bot pauses for
/// this conversation until someone resumes it.
///
/// # Errors
/// [`ServiceError::NotFound`] for a conversation of another tenant or none;
/// [`ServiceError::Invalid`] for a bad body.
#[tracing::instrument(skip(app, body), fields(tenant_id = %ctx.tenant_id()))]
pub async fn send_manual(
    app: &App,
    ctx: &TenantCtx,
    conversation_id: ConversationId,
    body: &str,
    idempotency_key: Option<String>,
) -> Result<MessageId, ServiceError> {
    let body = check_body(body)?;
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let conversation = conversation::Entity::by_id(tx.tenant(), conversation_id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    // Scoped to the conversation: the same key on another conversation is another message.
    let key = idempotency_key.map(|k| format!("manual:{conversation_id}:{k}"));
    let row = insert_outbound(&tx, &conversation, &body, Source::Manual, key).await?;
    if !conversation.bot_paused {
        conversation::Entity::by_id_update(tx.tenant(), conversation.id)
            .col_expr(conversation::Column::BotPaused, true.into())
            .exec(tx.conn())
            .await?;
    }
    tx.commit().await?;
    dispatch(app, ctx, conversation_id, &[row]).await;
    Ok(row.id)
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
    let next = next_queued(&tx, msg).await?;
    tx.commit().await?;
    announce_update(app, ctx, msg.conversation_id, msg.id);
    push_next(app, ctx, msg, next).await
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

/// Records that the contact opted out at the provider (Twilio error 21610).
async fn opt_out_from_provider(
    app: &App,
    ctx: &TenantCtx,
    contact_id: switchboard_domain::ContactId,
) -> Result<(), ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let now = Utc::now();
    contact::Entity::by_id_update(tx.tenant(), contact_id)
        .filter(contact::Column::OptedOutAt.is_null())
        .col_expr(contact::Column::OptedOutAt, Some(now).into())
        .col_expr(
            contact::Column::OptOutKeyword,
            Some("twilio:21610".to_string()).into(),
        )
        .col_expr(contact::Column::UpdatedAt, now.into())
        .exec(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(())
}

/// One attempt to hand `message_id` to its provider (the `SendMessage` job). On a retryable
/// failure it schedules the next attempt itself (a new job after [`backoff`]).
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
    // Load the row, its contact and number (one read transaction).
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let Some(msg) = message::Entity::by_id(tx.tenant(), message_id)
        .one(tx.conn())
        .await?
    else {
        tracing::info!(%message_id, "message is gone; nothing to send");
        return Ok(Delivery::Done);
    };
    if msg.direction != Direction::Outbound
        || !awaits_provider(msg.status, msg.provider_sid.is_some())
    {
        drop(tx);
        release_next(app, ctx, &msg).await?;
        return Ok(Delivery::Done);
    }
    let conversation = conversation::Entity::by_id(tx.tenant(), msg.conversation_id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    let contact = contact::Entity::by_id(tx.tenant(), msg.contact_id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    let number = phone_number::Entity::by_id(tx.tenant(), conversation.phone_number_id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    let earlier = message::Entity::scoped(tx.tenant())
        .filter(message::Column::ConversationId.eq(msg.conversation_id))
        .filter(message::Column::Direction.eq(Direction::Outbound))
        .filter(message::Column::Id.lt(msg.id))
        .filter(message::awaiting_provider())
        .one(tx.conn())
        .await?;
    if let Some(earlier) = earlier {
        tracing::debug!(%message_id, waits_for = %earlier.id, "an older reply goes first");
        return Ok(Delivery::Waiting);
    }
    let provider = tenancy::provider_for(app, &tx).await?;
    drop(tx);
    let sms = OutboundSms {
        to: contact.phone.clone(),
        from: number.e164.clone(),
        body: msg.body.clone(),
        status_callback: status_callback_url(app, msg.id),
    };

    // A previous attempt with an unknown outcome: wait while it may be in flight, then ask.
    if msg.status == MessageStatus::Sending {
        let age = (Utc::now() - msg.updated_at).to_std().unwrap_or_default();
        let in_flight = app.providers.in_flight();
        if age < in_flight {
            return retry(app, ctx, &msg, in_flight - age).await;
        }
        match reconcile(app, provider.as_ref(), &sms, &msg).await {
            Ok(Some(found)) => {
                record_accepted(app, ctx, &msg, found).await?;
                return Ok(Delivery::Done);
            }
            Ok(None) => {} // It never reached the provider: send it below.
            Err(e)
                if Utc::now() - msg.created_at > chrono::Duration::hours(UNKNOWN_OUTCOME_HOURS) =>
            {
                // Give up asking; the text may or may not have gone out, and the thread says so.
                tracing::error!(error = %e, %message_id, "send outcome still unknown; giving up");
                set_status(app, ctx, &msg, |m| {
                    m.status = Set(MessageStatus::Failed);
                    m.error_message = Set(Some(format!(
                        "outcome unknown: the provider could not be asked for {UNKNOWN_OUTCOME_HOURS} h ({e}); it may have been sent"
                    )));
                })
                .await?;
                release_next(app, ctx, &msg).await?;
                return Ok(Delivery::Done);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell yet whether the last attempt was sent");
                let delay = match e {
                    SendError::RateLimited {
                        retry_after: Some(d),
                    } => d.max(backoff(msg.attempts)),
                    _ => backoff(msg.attempts),
                };
                set_status(app, ctx, &msg, |m| {
                    m.error_message = Set(Some(format!("{e}; checking again")))
                })
                .await?;
                return retry(app, ctx, &msg, delay).await;
            }
        }
    }

    // Opt-out is checked at send time, so queued jobs obey a STOP that arrived after them.
    // Only the confirmation of that opt-out (created after it) still goes out (CTIA).
    if let Some(opted_out_at) = contact.opted_out_at
        && !(msg.source == Source::Compliance && msg.created_at >= opted_out_at)
    {
        set_status(app, ctx, &msg, |m| {
            m.status = Set(MessageStatus::Suppressed);
            m.error_message = Set(Some("recipient opted out".into()));
        })
        .await?;
        release_next(app, ctx, &msg).await?;
        return Ok(Delivery::Done);
    }

    if msg.attempts >= MAX_SEND_ATTEMPTS {
        set_status(app, ctx, &msg, |m| {
            m.status = Set(MessageStatus::Failed);
            m.error_message = Set(Some(format!("gave up after {MAX_SEND_ATTEMPTS} attempts")));
        })
        .await?;
        release_next(app, ctx, &msg).await?;
        return Ok(Delivery::Done);
    }

    // Claim the attempt: only one job can move the row from what we read to `sending`.
    let Some(msg) = claim(app, ctx, msg).await? else {
        tracing::info!(%message_id, "another job is sending this message");
        return Ok(Delivery::Done);
    };

    let started = std::time::Instant::now();
    let sent = provider.send(&sms).await;
    crate::metrics::send(provider.name(), started.elapsed().as_secs_f64());
    match &sent {
        Err(SendError::RateLimited { .. }) => {
            crate::metrics::provider_error(provider.name(), 20429)
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
        Ok(accepted) => {
            record_accepted(app, ctx, &msg, accepted).await?;
            Ok(Delivery::Done)
        }
        Err(SendError::RateLimited { retry_after }) => {
            // Nothing was created by this call, and the provider had nothing before it: back
            // to the outbox.
            set_status(app, ctx, &msg, |m| {
                m.status = Set(MessageStatus::Queued);
                m.error_code = Set(Some(20429));
                m.error_message = Set(Some("rate limited by the provider; retrying".into()));
            })
            .await?;
            retry(
                app,
                ctx,
                &msg,
                retry_after.unwrap_or_else(|| backoff(msg.attempts)),
            )
            .await
        }
        Err(SendError::Rejected {
            code,
            message,
            status,
        }) => {
            if code == Some(SendError::TWILIO_UNSUBSCRIBED) {
                opt_out_from_provider(app, ctx, msg.contact_id).await?;
            }
            set_status(app, ctx, &msg, |m| {
                m.status = Set(MessageStatus::Failed);
                m.error_code = Set(code.or(Some(i32::from(status))));
                m.error_message = Set(Some(message));
            })
            .await?;
            release_next(app, ctx, &msg).await?;
            Ok(Delivery::Done)
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
) -> Result<Delivery, ServiceError> {
    let job = Job::SendMessage(SendMessage::new(ctx.tenant_id(), msg.id));
    let key = format!("retry:{}:{}", msg.id, uuid::Uuid::now_v7().simple());
    app.jobs.push_after(job, key, delay).await?;
    Ok(Delivery::RetryAfter(delay))
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
        // An identical text sent earlier is already ours under its own MessageSid.
        match lookup::message_by_provider_sid(&app.db.read, &candidate.sid).await {
            Ok(None) => return Ok(Some(candidate)),
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

/// Records the provider's acceptance without moving the status backwards (a status callback
/// may have arrived first, through the message id in its URL), and enqueues the reply that
/// waited for this one, found in the same transaction.
async fn record_accepted(
    app: &App,
    ctx: &TenantCtx,
    msg: &message::Model,
    accepted: Accepted,
) -> Result<(), ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let current = message::Entity::by_id(tx.tenant(), msg.id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    let mut am = message::ActiveModel {
        status: Set(current
            .status
            .max_with(accepted.status.max_with(MessageStatus::Sending))),
        updated_at: Set(Utc::now()),
        ..Default::default()
    };
    if current.provider_sid.is_none() {
        am.provider_sid = Set(Some(accepted.sid));
    }
    if current.sent_at.is_none() {
        am.sent_at = Set(Some(Utc::now()));
    }
    if current.status == MessageStatus::Sending {
        am.error_code = Set(None);
        am.error_message = Set(None);
    }
    message::Entity::update_by_id(tx.tenant(), msg.id, am)
        .exec(tx.conn())
        .await?;
    let next = next_queued(&tx, msg).await?;
    tx.commit().await?;
    announce_update(app, ctx, msg.conversation_id, msg.id);
    push_next(app, ctx, msg, next).await
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
    Ok(message::Entity::scoped(tx.tenant())
        .filter(message::Column::ConversationId.eq(msg.conversation_id))
        .filter(message::Column::Direction.eq(Direction::Outbound))
        .filter(message::Column::Id.gt(msg.id))
        .filter(message::Column::Status.eq(MessageStatus::Queued))
        .order_by_asc(message::Column::Id)
        .one(tx.conn())
        .await?
        .map(|m| m.id))
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

/// Moves the row to `sending` and counts the attempt, if it is still exactly as read.
/// Returns the row as it is now (status `sending`, attempts + 1), or `None` when another job
/// got there first.
async fn claim(
    app: &App,
    ctx: &TenantCtx,
    msg: message::Model,
) -> Result<Option<message::Model>, ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let now = Utc::now();
    let claimed = message::Entity::by_id_update(tx.tenant(), msg.id)
        .filter(message::Column::Status.eq(msg.status))
        .filter(message::Column::Attempts.eq(msg.attempts))
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
    tx.commit().await?;
    Ok(claimed.then(|| message::Model {
        status: MessageStatus::Sending,
        attempts: msg.attempts + 1,
        updated_at: now,
        ..msg
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
    let msg = message::Entity::by_id(tx.tenant(), message_id)
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
    if !advance && msg.provider_sid.is_some() {
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
        if let Some(code) = update.error_code {
            am.error_code = Set(Some(code));
        }
        if msg.sent_at.is_none() && !matches!(update.status, MessageStatus::Failed) {
            am.sent_at = Set(Some(Utc::now()));
        }
    }
    am.updated_at = Set(Utc::now());
    message::Entity::update_by_id(tx.tenant(), message_id, am)
        .exec(tx.conn())
        .await?;
    tx.commit().await?;
    if update.error_code == Some(SendError::TWILIO_UNSUBSCRIBED) {
        opt_out_from_provider(app, ctx, contact_id).await?;
    }
    announce_update(app, ctx, conversation_id, message_id);
    if awaits_provider(msg.status, msg.provider_sid.is_some()) {
        // The callback settled a row the send job had not: its successors may go.
        release_next(app, ctx, &msg).await?;
    }
    Ok(advance)
}
