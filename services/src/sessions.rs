//! Where sign-in sessions are kept: the `sessions` table, or Redis when `REDIS_URL` is set.
//! Either way a session is stored under the SHA-256 of its id, so the store alone does not
//! let anyone use a session.
//!
//! Redis layout (every key starts with `REDIS_PREFIX`): `session:{hash}` holds the record as
//! JSON and expires by itself at the session's end (idle or absolute, whichever comes first;
//! refreshed as the user works); `user_sessions:{user id}` is the set of a user's session
//! hashes, so disabling a user or resetting a password ends every session at once.

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use switchboard_domain::{TenantId, UserId};
use switchboard_entity::session;

use crate::accounts::SESSION_IDLE_SECS;
use crate::{App, ServiceError};

/// One session, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub user_id: UserId,
    /// The tenant the session works in.
    pub tenant_id: Option<TenantId>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The absolute end.
    pub expires_at: DateTime<Utc>,
}

impl Record {
    /// When the session ends if nothing happens: idle timeout or absolute end.
    pub(crate) fn ends_at(&self) -> DateTime<Utc> {
        (self.last_seen_at + chrono::Duration::seconds(SESSION_IDLE_SECS)).min(self.expires_at)
    }
}

/// The session store of this process.
#[derive(Clone)]
pub enum Store {
    /// The `sessions` table.
    Db,
    /// Redis, with the key prefix.
    Redis {
        conn: ConnectionManager,
        prefix: String,
    },
}

impl Store {
    /// Redis (on the process's shared connection) when `REDIS_URL` is set, else the table.
    pub fn open(settings: &switchboard_config::Settings, redis: Option<ConnectionManager>) -> Self {
        match redis {
            Some(conn) => Self::Redis {
                conn,
                prefix: settings.redis_prefix.clone(),
            },
            None => Self::Db,
        }
    }

    /// `db` or `redis`, for logs and `/ready`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Db => "database",
            Self::Redis { .. } => "redis",
        }
    }
}

fn keys(prefix: &str, hash: &str, user: UserId) -> (String, String) {
    (
        format!("{prefix}session:{hash}"),
        format!("{prefix}user_sessions:{user}"),
    )
}

/// Stores a new session.
pub(crate) async fn insert(app: &App, hash: &str, r: &Record) -> Result<(), ServiceError> {
    match &app.sessions {
        Store::Db => {
            session::ActiveModel {
                id_hash: Set(hash.to_string()),
                user_id: Set(r.user_id),
                tenant_id: Set(r.tenant_id),
                created_at: Set(r.created_at),
                last_seen_at: Set(r.last_seen_at),
                expires_at: Set(r.expires_at),
            }
            .insert(&app.db.write)
            .await?;
        }
        Store::Redis { conn, prefix } => {
            let (key, set) = keys(prefix, hash, r.user_id);
            let json = serde_json::to_string(r).expect("a record serializes");
            redis::pipe()
                .atomic()
                .set(&key, json)
                .pexpire_at(&key, r.ends_at().timestamp_millis())
                .sadd(&set, hash)
                .pexpire_at(&set, r.expires_at.timestamp_millis())
                .exec_async(&mut conn.clone())
                .await?;
        }
    }
    Ok(())
}

/// The session stored under `hash`, if any.
pub(crate) async fn get(app: &App, hash: &str) -> Result<Option<Record>, ServiceError> {
    match &app.sessions {
        Store::Db => Ok(session::Entity::find_by_id(hash.to_string())
            .one(&app.db.read)
            .await?
            .map(|s| Record {
                user_id: s.user_id,
                tenant_id: s.tenant_id,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
                expires_at: s.expires_at,
            })),
        Store::Redis { conn, prefix } => {
            let json: Option<String> = conn.clone().get(format!("{prefix}session:{hash}")).await?;
            Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
        }
    }
}

/// Moves the session to `tenant_id` (a switch), leaving its other fields as stored.
pub(crate) async fn set_tenant(
    app: &App,
    hash: &str,
    user: UserId,
    tenant_id: TenantId,
) -> Result<(), ServiceError> {
    match &app.sessions {
        Store::Db => {
            session::Entity::update_many()
                .filter(session::Column::IdHash.eq(hash))
                .filter(session::Column::UserId.eq(user))
                .col_expr(session::Column::TenantId, Some(tenant_id).into())
                .exec(&app.db.write)
                .await?;
        }
        Store::Redis { conn, prefix } => {
            let (key, _) = keys(prefix, hash, user);
            set_field(conn, key, user, "tenant_id", &tenant_id.to_string(), None).await?;
        }
    }
    Ok(())
}

/// Moves the session's `last_seen_at` to `r.last_seen_at` (and, in Redis, its expiry with
/// it), leaving its other fields as stored.
pub(crate) async fn touch(app: &App, hash: &str, r: &Record) -> Result<(), ServiceError> {
    match &app.sessions {
        Store::Db => {
            session::Entity::update_many()
                .filter(session::Column::IdHash.eq(hash))
                .col_expr(session::Column::LastSeenAt, r.last_seen_at.into())
                .exec(&app.db.write)
                .await?;
        }
        Store::Redis { conn, prefix } => {
            let (key, _) = keys(prefix, hash, r.user_id);
            let seen = serde_json::to_value(r.last_seen_at).expect("a time serializes");
            let seen = seen.as_str().expect("a time serializes as a string");
            set_field(
                conn,
                key,
                r.user_id,
                "last_seen_at",
                seen,
                Some(r.ends_at()),
            )
            .await?;
        }
    }
    Ok(())
}

/// Sets one string field of `user`'s session record at `key` inside Redis, atomically, and
/// its expiry to `expires` (else the expiry stays): a touch and a tenant switch each change
/// their own field, so neither undoes the other by writing back a record read earlier. A
/// session that ended meanwhile stays ended.
async fn set_field(
    conn: &ConnectionManager,
    key: String,
    user: UserId,
    field: &str,
    value: &str,
    expires: Option<DateTime<Utc>>,
) -> Result<(), ServiceError> {
    const SET_FIELD: &str = r"
        local stored = redis.call('GET', KEYS[1])
        if not stored then return 0 end
        local record = cjson.decode(stored)
        if record['user_id'] ~= ARGV[4] then return 0 end
        record[ARGV[1]] = ARGV[2]
        if ARGV[3] == '' then
            redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
        else
            redis.call('SET', KEYS[1], cjson.encode(record), 'PXAT', ARGV[3])
        end
        return 1";
    let expires = expires.map_or(String::new(), |at| at.timestamp_millis().to_string());
    let _: i64 = redis::Script::new(SET_FIELD)
        .key(key)
        .arg(field)
        .arg(value)
        .arg(expires)
        .arg(user.to_string())
        .invoke_async(&mut conn.clone())
        .await?;
    Ok(())
}

/// Ends one session.
pub(crate) async fn delete(app: &App, hash: &str) -> Result<(), ServiceError> {
    match &app.sessions {
        Store::Db => {
            session::Entity::delete_by_id(hash.to_string())
                .exec(&app.db.write)
                .await?;
        }
        Store::Redis { conn, prefix } => {
            let mut conn = conn.clone();
            let key = format!("{prefix}session:{hash}");
            let json: Option<String> = conn.get_del(&key).await?;
            if let Some(r) = json.and_then(|j| serde_json::from_str::<Record>(&j).ok()) {
                let (_, set) = keys(prefix, hash, r.user_id);
                let _: () = conn.srem(set, hash).await?;
            }
        }
    }
    Ok(())
}

/// Deletes the database store's sessions that have ended (idle past
/// [`SESSION_IDLE_SECS`] or past their absolute end) and that nobody signed out of: a refused
/// session is removed when it comes back, an abandoned one would stay forever. Redis expires
/// its keys itself. Returns how many were deleted.
///
/// # Errors
/// Database errors.
pub(crate) async fn purge_ended(app: &App) -> Result<u64, ServiceError> {
    if !matches!(app.sessions, Store::Db) {
        return Ok(0);
    }
    let now = Utc::now();
    let idle_since = now - chrono::Duration::seconds(SESSION_IDLE_SECS);
    let ended = sea_orm::Condition::any()
        .add(session::Column::ExpiresAt.lt(now))
        .add(session::Column::LastSeenAt.lt(idle_since));
    Ok(session::Entity::delete_many()
        .filter(ended)
        .exec(&app.db.write)
        .await?
        .rows_affected)
}

/// Ends every session of `user`.
pub(crate) async fn delete_user(app: &App, user: UserId) -> Result<(), ServiceError> {
    match &app.sessions {
        Store::Db => {
            session::Entity::delete_many()
                .filter(session::Column::UserId.eq(user))
                .exec(&app.db.write)
                .await?;
        }
        Store::Redis { conn, prefix } => {
            let set = format!("{prefix}user_sessions:{user}");
            let mut conn = conn.clone();
            let hashes: Vec<String> = conn.smembers(&set).await?;
            let mut pipe = redis::pipe();
            pipe.atomic();
            for h in &hashes {
                pipe.del(format!("{prefix}session:{h}"));
            }
            pipe.del(&set).exec_async(&mut conn).await?;
        }
    }
    Ok(())
}

/// How many live sessions `user` has.
///
/// # Errors
/// Database or Redis errors.
pub async fn count_for_user(app: &App, user: UserId) -> Result<u64, ServiceError> {
    match &app.sessions {
        Store::Db => Ok(session::Entity::find()
            .filter(session::Column::UserId.eq(user))
            .count(&app.db.read)
            .await?),
        Store::Redis { conn, prefix } => {
            let mut conn = conn.clone();
            let hashes: Vec<String> = conn
                .smembers(format!("{prefix}user_sessions:{user}"))
                .await?;
            let mut live = 0;
            for h in hashes {
                let exists: bool = conn.exists(format!("{prefix}session:{h}")).await?;
                live += u64::from(exists);
            }
            Ok(live)
        }
    }
}

/// Checks the store answers (`/ready`): a database round trip, or a Redis `PING`.
///
/// # Errors
/// The store's error.
pub async fn ping(app: &App) -> Result<(), ServiceError> {
    match &app.sessions {
        Store::Db => Ok(app.db.read.ping().await?),
        Store::Redis { conn, .. } => {
            let _: String = redis::cmd("PING").query_async(&mut conn.clone()).await?;
            Ok(())
        }
    }
}
