//! The only queries that are not tenant-scoped. Most find WHICH tenant a request belongs to,
//! before a [`crate::TenantTx`] exists, returning just enough to identify and authenticate the
//! tenant; [`stuck_messages`] serves the maintenance sweep, which works for every tenant.
//!
//! On Postgres each runs in its own read-only transaction as [`LOOKUP_ROLE`], the one role
//! whose row-level security policies show every tenant's rows, for `SELECT` only; everything
//! else the application does sees one tenant at a time.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use switchboard_domain::{AgencyId, ApiKeyId, MessageId, PhoneNumberId, TenantId, UserId};

use crate::phone_number::BotKind;
use crate::tenancy::LOOKUP_ROLE;
use crate::{api_key, invite, membership, message, phone_number, tenant};

/// Runs `read` in a transaction of its own; as [`LOOKUP_ROLE`] (which may only `SELECT`) on
/// Postgres. It commits as soon as `read` is done: a transaction left to a lazy rollback on
/// drop would keep a SQLite read snapshot open on an idle pooled connection, which holds
/// back WAL checkpoints.
async fn lookup<T>(
    db: &DatabaseConnection,
    read: impl AsyncFnOnce(&DatabaseTransaction) -> Result<T, DbErr>,
) -> Result<T, DbErr> {
    let txn = db.begin().await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared(&format!("SET LOCAL ROLE {LOOKUP_ROLE}"))
            .await?;
    }
    let out = read(&txn).await?;
    txn.commit().await?;
    Ok(out)
}

/// Who owns a phone number, and how to check the signature of webhooks sent to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberOwner {
    pub tenant_id: TenantId,
    pub phone_number_id: PhoneNumberId,
    pub bot: BotKind,
    /// The tenant's own Twilio account, if any (`None`: the platform account or the simulator).
    pub twilio_account_sid: Option<String>,
    /// Its sealed auth token (see [`crate::tenant::Model::twilio_auth_token_sealed`]).
    pub twilio_auth_token_sealed: Option<String>,
}

/// The tenant that owns `e164` (a webhook's `To`), or `None` for a number nobody uses (never
/// added, or released).
///
/// # Errors
/// Database errors.
pub async fn number_owner(
    db: &DatabaseConnection,
    e164: &str,
) -> Result<Option<NumberOwner>, DbErr> {
    lookup(db, async |db| {
        let Some(number) = phone_number::Entity::find()
            .filter(phone_number::Column::E164.eq(e164))
            .filter(phone_number::Column::ReleasedAt.is_null())
            .one(db)
            .await?
        else {
            return Ok(None);
        };
        let Some(t) = tenant::Entity::find_by_id(number.tenant_id).one(db).await? else {
            return Ok(None);
        };
        Ok(Some(NumberOwner {
            tenant_id: t.id,
            phone_number_id: number.id,
            bot: number.bot,
            twilio_account_sid: t.twilio_account_sid,
            twilio_auth_token_sealed: t.twilio_auth_token_sealed,
        }))
    })
    .await
}

/// The tenant `e164` was first added to (its oldest row, released or not), or `None` when no
/// tenant ever had it.
///
/// # Errors
/// Database errors.
pub async fn first_holder(db: &DatabaseConnection, e164: &str) -> Result<Option<TenantId>, DbErr> {
    lookup(db, async |db| {
        phone_number::Entity::find()
            .select_only()
            .column(phone_number::Column::TenantId)
            .filter(phone_number::Column::E164.eq(e164))
            .order_by_asc(phone_number::Column::CreatedAt)
            .order_by_asc(phone_number::Column::Id)
            .into_tuple::<TenantId>()
            .one(db)
            .await
    })
    .await
}

/// The tenant and key id of a live (not revoked) API key, by the key's SHA-256 hex.
///
/// # Errors
/// Database errors.
pub async fn api_key_owner(
    db: &DatabaseConnection,
    key_hash: &str,
) -> Result<Option<(TenantId, ApiKeyId)>, DbErr> {
    lookup(db, async |db| {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::KeyHash.eq(key_hash))
            .filter(api_key::Column::RevokedAt.is_null())
            .one(db)
            .await?
            .map(|k| (k.tenant_id, k.id)))
    })
    .await
}

/// The tenants `user` is a member of, oldest membership first (a user's memberships span
/// tenants).
///
/// # Errors
/// Database errors.
pub async fn memberships_of(db: &DatabaseConnection, user: UserId) -> Result<Vec<TenantId>, DbErr> {
    lookup(db, async |db| {
        use sea_orm::QueryOrder;
        Ok(membership::Entity::find()
            .filter(membership::Column::UserId.eq(user))
            .order_by_asc(membership::Column::CreatedAt)
            .all(db)
            .await?
            .into_iter()
            .map(|m| m.tenant_id)
            .collect())
    })
    .await
}

/// The tenants with these ids or under these agencies, by name (what a user may switch to:
/// their memberships and the sub-accounts of the agencies they administer).
///
/// # Errors
/// Database errors.
pub async fn reachable_tenants(
    db: &DatabaseConnection,
    ids: &[TenantId],
    agencies: Vec<AgencyId>,
) -> Result<Vec<tenant::Model>, DbErr> {
    use sea_orm::{Condition, QueryOrder};
    lookup(db, async |db| {
        tenant::Entity::find()
            .filter(
                Condition::any()
                    .add(tenant::Column::Id.is_in(ids.iter().copied()))
                    .add(tenant::Column::AgencyId.is_in(agencies)),
            )
            .order_by_asc(tenant::Column::Name)
            .all(db)
            .await
    })
    .await
}

/// The invite a mailed link's token names, by the token's SHA-256 hex (the token is the
/// proof; the invite names its tenant).
///
/// # Errors
/// Database errors.
pub async fn invite_by_token_hash(
    db: &DatabaseConnection,
    token_hash: &str,
) -> Result<Option<invite::Model>, DbErr> {
    lookup(db, async |db| {
        invite::Entity::find()
            .filter(invite::Column::TokenHash.eq(token_hash))
            .one(db)
            .await
    })
    .await
}

/// The tenant and id of the message a provider knows as `sid` (for status callbacks).
///
/// # Errors
/// Database errors.
pub async fn message_by_provider_sid(
    db: &DatabaseConnection,
    sid: &str,
) -> Result<Option<(TenantId, MessageId)>, DbErr> {
    lookup(db, async |db| {
        message::Entity::find()
            .select_only()
            .column(message::Column::TenantId)
            .column(message::Column::Id)
            .filter(message::Column::ProviderSid.eq(sid))
            .into_tuple::<(TenantId, MessageId)>()
            .one(db)
            .await
    })
    .await
}

/// The Twilio credentials stored for a tenant (account SID and sealed token), if any.
///
/// # Errors
/// Database errors.
pub async fn tenant_twilio_account(
    db: &DatabaseConnection,
    tenant_id: TenantId,
) -> Result<Option<(String, String)>, DbErr> {
    lookup(db, async |db| {
        Ok(tenant::Entity::find_by_id(tenant_id)
            .one(db)
            .await?
            .and_then(|t| t.twilio_account_sid.zip(t.twilio_auth_token_sealed)))
    })
    .await
}

/// Most tenants [`twilio_account_tokens`] returns.
pub const MAX_ACCOUNT_TENANTS: u64 = 16;

/// The sealed auth tokens stored for the Twilio account `account_sid`, by every tenant that
/// connected it (an agency may run several businesses on one account), at most
/// [`MAX_ACCOUNT_TENANTS`] of them.
///
/// # Errors
/// Database errors.
pub async fn twilio_account_tokens(
    db: &DatabaseConnection,
    account_sid: &str,
) -> Result<Vec<String>, DbErr> {
    lookup(db, async |db| {
        Ok(tenant::Entity::find()
            .select_only()
            .column(tenant::Column::TwilioAuthTokenSealed)
            .filter(tenant::Column::TwilioAccountSid.eq(account_sid))
            .filter(tenant::Column::TwilioAuthTokenSealed.is_not_null())
            .limit(MAX_ACCOUNT_TENANTS)
            .into_tuple::<Option<String>>()
            .all(db)
            .await?
            .into_iter()
            .flatten()
            .collect())
    })
    .await
}

/// True when no tenant exists yet (first start).
///
/// # Errors
/// Database errors.
pub async fn no_tenants(db: &DatabaseConnection) -> Result<bool, DbErr> {
    lookup(db, async |db| {
        use sea_orm::PaginatorTrait;
        Ok(tenant::Entity::find().count(db).await? == 0)
    })
    .await
}

/// The tenant of message `id` (for a status callback that carries our id).
///
/// # Errors
/// Database errors.
pub async fn message_tenant(
    db: &DatabaseConnection,
    id: MessageId,
) -> Result<Option<TenantId>, DbErr> {
    lookup(db, async |db| {
        message::Entity::find_by_id(id)
            .select_only()
            .column(message::Column::TenantId)
            .into_tuple::<TenantId>()
            .one(db)
            .await
    })
    .await
}

/// A message still waiting for its job (see `services::sweep`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    pub tenant_id: TenantId,
    pub message_id: MessageId,
    pub direction: switchboard_domain::message::Direction,
    pub attempts: i32,
}

/// Across tenants (a maintenance sweep): of the messages with an id from `since` on (made
/// since then: a primary-key range), inbound ones not yet handled and outbound ones the
/// provider does not have yet, untouched since `before`; least recently touched first. Of a
/// conversation's waiting replies only the oldest counts: the others wait their turn (never
/// touched meanwhile, so they would sort first and crowd out work whose job was really lost),
/// and the send job of the oldest goes on with them.
///
/// # Errors
/// Database errors.
pub async fn stuck_messages(
    db: &DatabaseConnection,
    since: MessageId,
    before: chrono::DateTime<chrono::Utc>,
    limit: u64,
) -> Result<Vec<Stuck>, DbErr> {
    lookup(db, async |db| {
        use sea_orm::sea_query::ExprTrait;
        use sea_orm::{Condition, QueryOrder};
        use switchboard_domain::message::Direction;
        let rows = message::Entity::find()
            .filter(message::Column::Id.gte(since))
            .filter(message::Column::UpdatedAt.lt(before))
            .filter(
                Condition::any()
                    .add(
                        Condition::all()
                            .add(message::Column::Direction.eq(Direction::Inbound))
                            .add(message::Column::HandledAt.is_null()),
                    )
                    .add(
                        Condition::all()
                            .add(message::Column::Direction.eq(Direction::Outbound))
                            .add(message::awaiting_provider())
                            .add(message::older_reply_awaiting_provider().not()),
                    ),
            )
            .order_by_asc(message::Column::UpdatedAt)
            .limit(limit)
            .all(db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|m| Stuck {
                tenant_id: m.tenant_id,
                message_id: m.id,
                direction: m.direction,
                attempts: m.attempts,
            })
            .collect())
    })
    .await
}
