//! The dashboard's numbers and its activity table, per tenant, from the database.

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use switchboard_domain::message::{Direction, MessageStatus, Source};
use switchboard_domain::{ConversationId, MessageId};
use switchboard_entity::{TenantOwned, TenantTx, contact, conversation, message, tenant};

use crate::{App, ServiceError, TenantCtx};

/// How far back "active" and the response rate look, in days.
pub const WINDOW_DAYS: i64 = 7;
/// Rows of the activity table.
pub const ACTIVITY_ROWS: u64 = 20;

/// The stat cards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Open conversations with a message in the last [`WINDOW_DAYS`] days; this, the leads and
    /// the response rate leave out the [`contact::OWNER`]'s phone (the bot's lead alerts).
    pub active_conversations: u64,
    /// Messages in either direction since midnight in the tenant's time zone.
    pub messages_today: u64,
    /// Contacts first seen since Monday 00:00 in the tenant's time zone.
    pub leads_this_week: u64,
    /// The share of inbound customer texts of the last [`WINDOW_DAYS`] days that a bot or a
    /// person replied to (a bot or manual message later in the same conversation), in percent
    /// (rounded down); `None` when there was no inbound text. Several replies to one text
    /// count once, so it never exceeds 100.
    pub response_rate_pct: Option<u64>,
}

/// Local midnight today and local Monday 00:00 of this week, as UTC instants.
fn day_and_week_start(tz: chrono_tz::Tz, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = now.with_timezone(&tz).date_naive();
    let monday = local - Duration::days(i64::from(local.weekday().num_days_from_monday()));
    let at_midnight = |d: chrono::NaiveDate| {
        // The earliest instant of that local date (a DST gap at midnight moves it later).
        (0..3)
            .find_map(|h| {
                tz.from_local_datetime(&d.and_time(NaiveTime::from_hms_opt(h, 0, 0)?))
                    .earliest()
            })
            .map_or(now, |t| t.with_timezone(&Utc))
    };
    (at_midnight(local), at_midnight(monday))
}

/// The stat cards of `ctx`'s tenant, at `now`.
///
/// # Errors
/// Database errors.
pub async fn stats(app: &App, ctx: &TenantCtx) -> Result<Stats, ServiceError> {
    let now = Utc::now();
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let tz: chrono_tz::Tz = tenant::Entity::find_by_id(ctx.tenant_id())
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?
        .time_zone
        .parse()
        .unwrap_or(chrono_tz::UTC);
    let (today, week) = day_and_week_start(tz, now);
    let window = now - Duration::days(WINDOW_DAYS);
    let t = tx.tenant();
    // The owner's own phone (its lead alerts, its answers to them) is not a customer's.
    let owner = Query::select()
        .column(contact::Column::Id)
        .from(contact::Entity)
        .and_where(contact::Column::TenantId.eq(t))
        .and_where(contact::Column::Status.eq(contact::OWNER))
        .to_owned();
    let active_conversations = conversation::Entity::scoped(t)
        .filter(conversation::Column::Status.eq("open"))
        .filter(conversation::Column::LastMessageAt.gte(window))
        .filter(conversation::Column::ContactId.not_in_subquery(owner.clone()))
        .count(tx.conn())
        .await?;
    let messages_today = message::Entity::scoped(t)
        .filter(message::Column::CreatedAt.gte(today))
        .count(tx.conn())
        .await?;
    let leads_this_week = contact::Entity::scoped(t)
        .filter(contact::Column::CreatedAt.gte(week))
        .filter(contact::Column::Status.ne(contact::OWNER))
        .count(tx.conn())
        .await?;
    let inbound = message::Entity::scoped(t)
        .filter(message::Column::CreatedAt.gte(window))
        .filter(message::Column::Direction.eq(Direction::Inbound))
        .filter(message::Column::ContactId.not_in_subquery(owner.clone()))
        .count(tx.conn())
        .await?;
    let reply = Alias::new("reply");
    let replied_to = Query::select()
        .expr(Expr::val(1))
        .from_as(message::Entity, reply.clone())
        .and_where(Expr::col((reply.clone(), message::Column::TenantId)).eq(t))
        .and_where(
            Expr::col((reply.clone(), message::Column::ConversationId))
                .equals((message::Entity, message::Column::ConversationId)),
        )
        .and_where(Expr::col((reply.clone(), message::Column::Direction)).eq(Direction::Outbound))
        .and_where(
            Expr::col((reply.clone(), message::Column::Source))
                .is_in([Source::Bot, Source::Manual]),
        )
        .and_where(
            Expr::col((reply.clone(), message::Column::CreatedAt))
                .gte(Expr::col((message::Entity, message::Column::CreatedAt))),
        )
        .to_owned();
    let answered = message::Entity::scoped(t)
        .filter(message::Column::CreatedAt.gte(window))
        .filter(message::Column::Direction.eq(Direction::Inbound))
        .filter(message::Column::ContactId.not_in_subquery(owner))
        .filter(Expr::exists(replied_to))
        .count(tx.conn())
        .await?;
    Ok(Stats {
        active_conversations,
        messages_today,
        leads_this_week,
        response_rate_pct: (inbound > 0).then(|| answered * 100 / inbound),
    })
}

/// One row of the activity table: a message and who it was with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activity {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    /// The contact's name, or their E.164 phone.
    pub contact: String,
    pub direction: Direction,
    pub source: Source,
    /// The first 80 characters of the body.
    pub preview: String,
    pub status: MessageStatus,
    pub at: DateTime<Utc>,
}

/// The latest messages of `ctx`'s tenant, newest first; with `only`, just that message (the
/// page's live updates fetch rows one by one).
///
/// # Errors
/// [`ServiceError::NotFound`] when `only` is not this tenant's message; database errors.
pub async fn activity(
    app: &App,
    ctx: &TenantCtx,
    only: Option<MessageId>,
) -> Result<Vec<Activity>, ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let query = match only {
        Some(id) => message::Entity::by_id(tx.tenant(), id),
        None => message::Entity::scoped(tx.tenant())
            .order_by_desc(message::Column::Id)
            .limit(ACTIVITY_ROWS),
    };
    let messages = query.all(tx.conn()).await?;
    if only.is_some() && messages.is_empty() {
        return Err(ServiceError::NotFound);
    }
    let contacts: std::collections::HashMap<_, _> = contact::Entity::scoped(tx.tenant())
        .filter(contact::Column::Id.is_in(messages.iter().map(|m| m.contact_id)))
        .all(tx.conn())
        .await?
        .into_iter()
        .map(|c| (c.id, c.name.unwrap_or(c.phone)))
        .collect();
    Ok(messages
        .into_iter()
        .map(|m| Activity {
            message_id: m.id,
            conversation_id: m.conversation_id,
            contact: contacts.get(&m.contact_id).cloned().unwrap_or_default(),
            direction: m.direction,
            source: m.source,
            preview: m.body.chars().take(80).collect(),
            status: m.status,
            at: m.created_at,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_and_week_start_follow_the_tenant_time_zone() {
        let tz: chrono_tz::Tz = "America/Chicago".parse().unwrap();
        // Wednesday 2026-11-18 03:00 UTC is Tuesday 21:00 in Chicago (CST, UTC-6).
        let now = Utc.with_ymd_and_hms(2026, 11, 18, 3, 0, 0).unwrap();
        let (day, week) = day_and_week_start(tz, now);
        assert_eq!(day, Utc.with_ymd_and_hms(2026, 11, 17, 6, 0, 0).unwrap());
        assert_eq!(week, Utc.with_ymd_and_hms(2026, 11, 16, 6, 0, 0).unwrap());
    }
}
