//! The inbox: conversation lists, threads, read state and human takeover.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, Condition, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use switchboard_domain::message::{Direction, Media, MessageStatus, Source};
use switchboard_domain::{ContactId, ConversationId, MessageId};
use switchboard_entity::{TenantOwned, TenantTx, contact, conversation, message, phone_number};

use crate::events::{Event, EventKind};
use crate::{App, ServiceError, TenantCtx};

/// Most conversations one list returns.
pub const MAX_LIST: u64 = 200;
/// Most messages one thread returns (the latest ones).
pub const MAX_THREAD: u64 = 500;

/// A row of the inbox list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConversationSummary {
    pub id: ConversationId,
    pub contact_id: ContactId,
    pub contact_name: Option<String>,
    /// Contact's E.164 phone.
    pub contact_phone: String,
    /// The tenant's number of this thread, E.164.
    pub number: String,
    /// `open` or `closed`.
    pub status: String,
    pub bot_paused: bool,
    pub opted_out: bool,
    /// The number was removed in Settings: the history stays, nothing is sent from it
    /// ([`crate::messaging::NUMBER_RELEASED`]).
    pub number_removed: bool,
    pub unread_count: i32,
    pub last_message_at: DateTime<Utc>,
    pub last_message_preview: String,
}

/// One message as the inbox and API show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageView {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub direction: Direction,
    pub source: Source,
    pub body: String,
    pub media: Vec<Media>,
    pub status: MessageStatus,
    /// Provider error code of a failed send (e.g. 21610, 30007).
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub provider_sid: Option<String>,
    /// SMS segments of the body.
    pub segments: i32,
    pub created_at: DateTime<Utc>,
}

impl From<message::Model> for MessageView {
    fn from(m: message::Model) -> Self {
        Self {
            id: m.id,
            conversation_id: m.conversation_id,
            direction: m.direction,
            source: m.source,
            body: m.body,
            media: m
                .media
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            status: m.status,
            error_code: m.error_code,
            error_message: m.error_message,
            provider_sid: m.provider_sid,
            segments: m.segments,
            created_at: m.created_at,
        }
    }
}

async fn summaries(
    tx: &TenantTx,
    rows: Vec<conversation::Model>,
) -> Result<Vec<ConversationSummary>, ServiceError> {
    let contact_ids: Vec<ContactId> = rows.iter().map(|c| c.contact_id).collect();
    let contacts: HashMap<ContactId, contact::Model> = contact::Entity::scoped(tx.tenant())
        .filter(contact::Column::Id.is_in(contact_ids))
        .all(tx.conn())
        .await?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    let numbers: HashMap<_, phone_number::Model> = phone_number::Entity::scoped(tx.tenant())
        .all(tx.conn())
        .await?
        .into_iter()
        .map(|n| (n.id, n))
        .collect();
    Ok(rows
        .into_iter()
        .filter_map(|c| {
            let contact = contacts.get(&c.contact_id)?;
            let number = numbers.get(&c.phone_number_id)?;
            Some(ConversationSummary {
                id: c.id,
                contact_id: c.contact_id,
                contact_name: contact.name.clone(),
                contact_phone: contact.phone.clone(),
                number: number.e164.clone(),
                status: c.status,
                bot_paused: c.bot_paused,
                opted_out: contact.opted_out_at.is_some(),
                number_removed: number.released_at.is_some(),
                unread_count: c.unread_count,
                last_message_at: c.last_message_at,
                last_message_preview: c.last_message_preview,
            })
        })
        .collect())
}

/// The tenant's conversations, most recent first (at most `limit`, capped at [`MAX_LIST`]).
///
/// # Errors
/// Database errors.
pub async fn list(
    app: &App,
    ctx: &TenantCtx,
    limit: u64,
) -> Result<Vec<ConversationSummary>, ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let rows = conversation::Entity::scoped(tx.tenant())
        .order_by_desc(conversation::Column::LastMessageAt)
        .limit(limit.clamp(1, MAX_LIST))
        .all(tx.conn())
        .await?;
    summaries(&tx, rows).await
}

/// One conversation with its latest messages (oldest first).
///
/// # Errors
/// [`ServiceError::NotFound`] when the conversation is not this tenant's.
pub async fn thread(
    app: &App,
    ctx: &TenantCtx,
    id: ConversationId,
) -> Result<(ConversationSummary, Vec<MessageView>), ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let summary = summary_in(&tx, id).await?;
    let messages = latest_messages(&tx, id, Condition::all()).await?;
    Ok((summary, messages))
}

/// Message `message_id` of conversation `id`, with the conversation as the list shows it
/// (what a live update of one bubble needs), read in one transaction.
///
/// # Errors
/// [`ServiceError::NotFound`] when the conversation is not this tenant's, or the message not
/// in it.
pub async fn message_in_thread(
    app: &App,
    ctx: &TenantCtx,
    id: ConversationId,
    message_id: MessageId,
) -> Result<(ConversationSummary, MessageView), ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let message = message_in(&tx, message_id).await?;
    if message.conversation_id != id {
        return Err(ServiceError::NotFound);
    }
    Ok((summary_in(&tx, id).await?, message))
}

async fn summary_in(
    tx: &TenantTx,
    id: ConversationId,
) -> Result<ConversationSummary, ServiceError> {
    let row = conversation::Entity::by_id(tx.tenant(), id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    summaries(tx, vec![row])
        .await?
        .pop()
        .ok_or(ServiceError::NotFound)
}

/// The latest [`MAX_THREAD`] messages of a conversation matching `filter`, oldest first.
async fn latest_messages(
    tx: &TenantTx,
    id: ConversationId,
    filter: Condition,
) -> Result<Vec<MessageView>, ServiceError> {
    let mut messages: Vec<MessageView> = message::Entity::scoped(tx.tenant())
        .filter(message::Column::ConversationId.eq(id))
        .filter(filter)
        .order_by_desc(message::Column::Id)
        .limit(MAX_THREAD)
        .all(tx.conn())
        .await?
        .into_iter()
        .map(MessageView::from)
        .collect();
    messages.reverse();
    Ok(messages)
}

/// One message of `tx`'s tenant, read inside `tx` (so it sees what `tx` wrote).
///
/// # Errors
/// [`ServiceError::NotFound`] when the message is not that tenant's.
pub(crate) async fn message_in(tx: &TenantTx, id: MessageId) -> Result<MessageView, ServiceError> {
    message::Entity::by_id(tx.tenant(), id)
        .one(tx.conn())
        .await?
        .map(MessageView::from)
        .ok_or(ServiceError::NotFound)
}

/// Clears the unread count (someone opened the thread).
///
/// # Errors
/// [`ServiceError::NotFound`] when the conversation is not this tenant's.
pub async fn mark_read(app: &App, ctx: &TenantCtx, id: ConversationId) -> Result<(), ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let result = conversation::Entity::by_id_update(tx.tenant(), id)
        .col_expr(conversation::Column::UnreadCount, 0i32.into())
        .col_expr(conversation::Column::UpdatedAt, Utc::now().into())
        .exec(tx.conn())
        .await?;
    if result.rows_affected == 0 {
        return Err(ServiceError::NotFound);
    }
    tx.commit().await?;
    app.events.publish(Event {
        kind: EventKind::ConversationUpdated,
        tenant_id: ctx.tenant_id(),
        conversation_id: id,
        message_id: None,
    });
    Ok(())
}

/// The simulator's view of one customer phone texting one number: the thread as the
/// customer's handset would show it (inbound texts, and replies that were delivered).
///
/// # Errors
/// Database errors.
pub async fn handset_thread(
    app: &App,
    ctx: &TenantCtx,
    number: &str,
    customer: &str,
) -> Result<Vec<MessageView>, ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let Some(contact) = contact::Entity::scoped(tx.tenant())
        .filter(contact::Column::Phone.eq(customer))
        .one(tx.conn())
        .await?
    else {
        return Ok(Vec::new());
    };
    let Some(number) = phone_number::Entity::scoped(tx.tenant())
        .filter(phone_number::Column::E164.eq(number))
        .one(tx.conn())
        .await?
    else {
        return Ok(Vec::new());
    };
    let Some(conversation) = conversation::Entity::scoped(tx.tenant())
        .filter(conversation::Column::ContactId.eq(contact.id))
        .filter(conversation::Column::PhoneNumberId.eq(number.id))
        .one(tx.conn())
        .await?
    else {
        return Ok(Vec::new());
    };
    // The handset shows what it received: its own texts and replies that were delivered.
    let delivered = Condition::any()
        .add(message::Column::Direction.eq(Direction::Inbound))
        .add(message::Column::Status.is_in([
            MessageStatus::Sent,
            MessageStatus::Delivered,
            MessageStatus::Read,
        ]));
    latest_messages(&tx, conversation.id, delivered).await
}

/// What the top bar's search finds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchResults {
    /// Contacts whose name or phone contains the query, with their latest conversation.
    pub contacts: Vec<(contact::Model, Option<ConversationId>)>,
    /// Messages whose text contains the query, newest first.
    pub messages: Vec<MessageView>,
}

/// Most rows of each kind a search returns.
pub const MAX_SEARCH: u64 = 25;

/// Longest search, in characters (a phone number, a name, words of a message).
pub const MAX_SEARCH_CHARS: usize = 200;

/// Searches `ctx`'s contacts (name, phone) and messages (text), case-insensitively. A query
/// under 2 characters finds nothing.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `q` past [`MAX_SEARCH_CHARS`] or with control
/// characters; database errors.
pub async fn search(
    app: &App,
    ctx: &TenantCtx,
    query: &str,
) -> Result<SearchResults, ServiceError> {
    use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
    let q = query.trim().to_lowercase();
    if q.chars().count() < 2 {
        return Ok(SearchResults::default());
    }
    if q.chars().count() > MAX_SEARCH_CHARS || q.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "q",
            format!("must be at most {MAX_SEARCH_CHARS} characters, without control characters"),
        ));
    }
    // `%`, `_` and the escape itself are literal in the user's text.
    let escaped: String = q
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let pattern = || LikeExpr::new(format!("%{escaped}%")).escape('\\');
    fn lower(col: impl sea_orm::sea_query::IntoColumnRef) -> Expr {
        Expr::expr(Func::lower(Expr::col(col)))
    }
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let contacts = contact::Entity::scoped(tx.tenant())
        .filter(
            Condition::any()
                .add(lower(contact::Column::Name).like(pattern()))
                .add(contact::Column::Phone.like(pattern())),
        )
        .order_by_desc(contact::Column::UpdatedAt)
        .limit(MAX_SEARCH)
        .all(tx.conn())
        .await?;
    // Each contact's latest conversation, in one query.
    let mut latest: HashMap<ContactId, ConversationId> = HashMap::new();
    for c in conversation::Entity::scoped(tx.tenant())
        .filter(conversation::Column::ContactId.is_in(contacts.iter().map(|c| c.id)))
        .order_by_asc(conversation::Column::LastMessageAt)
        .all(tx.conn())
        .await?
    {
        latest.insert(c.contact_id, c.id);
    }
    let with_conversation = contacts
        .into_iter()
        .map(|c| {
            let id = latest.get(&c.id).copied();
            (c, id)
        })
        .collect();
    let messages = message::Entity::scoped(tx.tenant())
        .filter(lower(message::Column::Body).like(pattern()))
        .order_by_desc(message::Column::Id)
        .limit(MAX_SEARCH)
        .all(tx.conn())
        .await?
        .into_iter()
        .map(MessageView::from)
        .collect();
    Ok(SearchResults {
        contacts: with_conversation,
        messages,
    })
}
