//! `messages`: every inbound and outbound text. Outbound rows are the outbox: a row is written
//! (status `queued`) before any provider call, and the send job works from it.

use sea_orm::entity::prelude::*;
use switchboard_domain::compliance::KeywordKind;
use switchboard_domain::message::{Direction, MessageStatus, Source};
use switchboard_domain::{ContactId, ConversationId, MessageId, TenantId};

use crate::TenantOwned;

/// One text.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    pub contact_id: ContactId,
    pub direction: Direction,
    pub source: Source,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    /// MMS attachments: JSON array of `{url, content_type}`.
    pub media: Option<Json>,
    /// The provider's id (Twilio MessageSid `SM…`/`MM…`); unique, so a retried webhook is a no-op.
    pub provider_sid: Option<String>,
    pub status: MessageStatus,
    /// Provider error code (e.g. Twilio 21610, 30007).
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    /// Outbox key: the same decision never creates two rows (`reply:{inbound id}:{n}`, …).
    pub idempotency_key: Option<String>,
    /// SMS segments the body takes (GSM-7: 160/153 septets, UCS-2: 70/67 code units).
    pub segments: i32,
    /// `gsm7` or `ucs2`.
    pub encoding: String,
    /// Send attempts made so far (outbound).
    pub attempts: i32,
    /// Inbound: when the HandleInbound job finished deciding the reply.
    pub handled_at: Option<DateTimeUtc>,
    /// Inbound: the compliance keyword that took effect (STOP/START/HELP families), if any.
    pub compliance: Option<KeywordKind>,
    /// Inbound: Twilio Advanced Opt-Out already answered this keyword (`OptOutType` was
    /// present), so we record the state change but send no confirmation of our own.
    pub provider_replied: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub sent_at: Option<DateTimeUtc>,
    /// Outbound: the inbound text this reply answers (bot and compliance replies); `None` for
    /// inbound texts and manual sends.
    pub in_reply_to: Option<MessageId>,
    /// Outbound: no attempt, and no asking the provider about an earlier one, before this
    /// time: the end of the wait the provider's last rate limit (Twilio error 20429) set, its
    /// `Retry-After` or our backoff. `None` for a reply never rate-limited; in the past once
    /// the wait is over.
    pub not_before: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl TenantOwned for Entity {
    fn tenant_column() -> Column {
        Column::TenantId
    }

    fn id_column() -> Column {
        Column::Id
    }
}

/// `EXISTS` an older outbound message of the same tenant and conversation as the `messages`
/// row of the outer query that the provider does not have yet ([`awaiting_provider`]): a
/// reply behind it waits its turn (replies of a conversation go out in order).
pub fn older_reply_awaiting_provider() -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
    let e = Alias::new("earlier");
    let col = |c: Column| Expr::col((e.clone(), c));
    let older_waiting = Query::select()
        .expr(Expr::val(1))
        .from_as(Entity, e.clone())
        .and_where(col(Column::TenantId).equals((Entity, Column::TenantId)))
        .and_where(col(Column::ConversationId).equals((Entity, Column::ConversationId)))
        .and_where(col(Column::Direction).eq(Direction::Outbound.as_str()))
        .and_where(col(Column::Id).lt(Expr::col((Entity, Column::Id))))
        .cond_where(
            sea_orm::Condition::any()
                .add(col(Column::Status).eq(MessageStatus::Queued.as_str()))
                .add(
                    col(Column::Status)
                        .eq(MessageStatus::Sending.as_str())
                        .and(col(Column::ProviderSid).is_null()),
                ),
        )
        .to_owned();
    Expr::exists(older_waiting)
}

/// Outbound rows the provider does not have yet: `queued`, or `sending` without a MessageSid
/// (see `services::messaging::awaits_provider`). A filter for any message query.
pub fn awaiting_provider() -> sea_orm::Condition {
    use sea_orm::Condition;
    Condition::any()
        .add(Column::Status.eq(MessageStatus::Queued))
        .add(
            Condition::all()
                .add(Column::Status.eq(MessageStatus::Sending))
                .add(Column::ProviderSid.is_null()),
        )
}
