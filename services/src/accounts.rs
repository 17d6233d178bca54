//! Accounts and sign-in sessions.
//!
//! Passwords are hashed with Argon2id (argon2 crate defaults: v19, m = 19 MiB, t = 2, p = 1,
//! the OWASP baseline) on a blocking thread. Sessions are server-side: the browser holds a
//! random 128-bit id, the database its SHA-256; a session ends after [`SESSION_IDLE_SECS`]
//! without a request or [`SESSION_ABSOLUTE_SECS`] after sign-in, at sign-out, when the user
//! is disabled, and (for a tenant) when the membership is removed: both are checked on every
//! request.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use chrono::{Duration, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};
use sha2::{Digest, Sha256};
use switchboard_domain::accounts::{Email, Password, Role};
use switchboard_domain::phone::E164;
use switchboard_domain::{MembershipId, TenantId, UserId};
use switchboard_entity::{TenantOwned, membership, session, tenant, user};

use crate::{App, ServiceError, TenantCtx, tenancy};

/// A session ends after this long without a request, in seconds (12 h).
pub const SESSION_IDLE_SECS: i64 = 12 * 3600;
/// A session ends this long after sign-in however active, in seconds (7 days).
pub const SESSION_ABSOLUTE_SECS: i64 = 7 * 24 * 3600;
/// `last_seen_at` is refreshed at most this often, in seconds (not one write per request).
pub const SESSION_TOUCH_SECS: i64 = 60;

/// What `/signup` asks for.
#[derive(Debug)]
pub struct SignUp {
    pub email: Email,
    pub password: Password,
    /// The business name, 1 to 100 characters.
    pub business_name: String,
    /// IANA time zone, e.g. `America/Chicago`.
    pub time_zone: String,
    /// The business's own phone, for owner notifications.
    pub notify_phone: Option<E164>,
}

/// Checks a business name: 1 to 100 characters after trimming.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `business_name`.
pub fn check_business_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    match name.chars().count() {
        0 => Err(ServiceError::invalid("business_name", "must not be empty")),
        1..=100 => Ok(name.to_string()),
        _ => Err(ServiceError::invalid(
            "business_name",
            "must be at most 100 characters",
        )),
    }
}

/// Checks an IANA time zone name (the tz database, via chrono-tz).
///
/// # Errors
/// [`ServiceError::Invalid`] naming `time_zone`.
pub fn check_time_zone(tz: &str) -> Result<String, ServiceError> {
    tz.trim()
        .parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_string())
        .map_err(|_| {
            ServiceError::invalid("time_zone", "must be a time zone such as America/Chicago")
        })
}

async fn hash_password(password: &Password) -> Result<String, ServiceError> {
    let password = password.expose().to_string();
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| ServiceError::invalid("password", format!("cannot be hashed: {e}")))
    })
    .await
    .map_err(|e| ServiceError::invalid("password", format!("cannot be hashed: {e}")))?
}

/// True when `password` matches the stored PHC string. Runs on a blocking thread.
async fn verify_password(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// Creates the user, the business, and the user's owner membership, in one transaction.
///
/// # Errors
/// [`ServiceError::Conflict`] when the email already has an account; invalid input.
pub async fn sign_up(app: &App, new: SignUp) -> Result<(UserId, TenantId), ServiceError> {
    let name = check_business_name(&new.business_name)?;
    let time_zone = check_time_zone(&new.time_zone)?;
    let hash = hash_password(&new.password).await?;
    let (user_id, tenant_id) = (UserId::new(), TenantId::new());
    let now = Utc::now();
    let txn = app.db.write.begin().await?;
    let taken = user::Entity::find()
        .filter(user::Column::Email.eq(new.email.as_str()))
        .one(&txn)
        .await?
        .is_some();
    if taken {
        return Err(ServiceError::Conflict(
            "an account with this email exists; sign in instead".into(),
        ));
    }
    user::ActiveModel {
        id: Set(user_id),
        email: Set(new.email.as_str().to_string()),
        password_hash: Set(Some(hash)),
        name: Set(None),
        email_verified_at: Set(None),
        disabled_at: Set(None),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    tenancy::insert_tenant_row(
        app,
        &txn,
        tenant_id,
        &name,
        &time_zone,
        new.notify_phone.as_ref(),
        None,
    )
    .await?;
    add_member(&txn, tenant_id, user_id, Role::Owner).await?;
    txn.commit().await?;
    Ok((user_id, tenant_id))
}

pub(crate) async fn add_member<C: sea_orm::ConnectionTrait>(
    db: &C,
    tenant_id: TenantId,
    user_id: UserId,
    role: Role,
) -> Result<(), ServiceError> {
    membership::ActiveModel {
        id: Set(MembershipId::new()),
        tenant_id: Set(tenant_id),
        user_id: Set(user_id),
        role: Set(role),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await?;
    Ok(())
}

/// Creates a local account that is a member of an existing tenant (the demo user; invites
/// later).
///
/// # Errors
/// [`ServiceError::Conflict`] when the email already has an account.
pub async fn create_member(
    app: &App,
    tenant_id: TenantId,
    email: &Email,
    password: &Password,
    role: Role,
) -> Result<UserId, ServiceError> {
    let hash = hash_password(password).await?;
    let user_id = UserId::new();
    let txn = app.db.write.begin().await?;
    if user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(&txn)
        .await?
        .is_some()
    {
        return Err(ServiceError::Conflict(
            "an account with this email exists".into(),
        ));
    }
    user::ActiveModel {
        id: Set(user_id),
        email: Set(email.as_str().to_string()),
        password_hash: Set(Some(hash)),
        name: Set(None),
        email_verified_at: Set(None),
        disabled_at: Set(None),
        created_at: Set(Utc::now()),
    }
    .insert(&txn)
    .await?;
    add_member(&txn, tenant_id, user_id, role).await?;
    txn.commit().await?;
    Ok(user_id)
}

/// The user with this email and password, if both match and the user is not disabled. A wrong
/// email and a wrong password take the same time and give the same answer.
///
/// # Errors
/// Database errors.
pub async fn sign_in(
    app: &App,
    email: &str,
    password: &str,
) -> Result<Option<UserId>, ServiceError> {
    let found = match Email::parse(email) {
        Ok(email) => {
            user::Entity::find()
                .filter(user::Column::Email.eq(email.as_str()))
                .one(&app.db.read)
                .await?
        }
        Err(_) => None,
    };
    // Verify against a real hash even for an unknown address, so timing does not tell.
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$O5Dy6bhH0Y4fLT/Jrs4Ktj39U2BSyOFvqoylnB2zL9s";
    let stored = found
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| DUMMY.to_string());
    let matches = verify_password(password.to_string(), stored).await;
    Ok(found
        .filter(|u| matches && u.password_hash.is_some() && u.disabled_at.is_none())
        .map(|u| u.id))
}

/// A random session id (128 bits, hex) and the hash stored for it.
fn new_session_id() -> (String, String) {
    let id = hex::encode(rand::random::<[u8; 16]>());
    let hash = hex::encode(Sha256::digest(id.as_bytes()));
    (id, hash)
}

fn hash_session_id(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// Starts a new session for `user` (a fresh id: sign-in never reuses a session, so a planted
/// id is worthless), working in the first tenant the user is a member of. Returns the id for
/// the cookie.
///
/// # Errors
/// Database errors.
pub async fn start_session(app: &App, user_id: UserId) -> Result<String, ServiceError> {
    let tenant_id = membership::Entity::find()
        .filter(membership::Column::UserId.eq(user_id))
        .order_by_asc(membership::Column::CreatedAt)
        .one(&app.db.read)
        .await?
        .map(|m| m.tenant_id);
    let (id, hash) = new_session_id();
    let now = Utc::now();
    session::ActiveModel {
        id_hash: Set(hash),
        user_id: Set(user_id),
        tenant_id: Set(tenant_id),
        created_at: Set(now),
        last_seen_at: Set(now),
        expires_at: Set(now + Duration::seconds(SESSION_ABSOLUTE_SECS)),
    }
    .insert(&app.db.write)
    .await?;
    Ok(id)
}

/// A signed-in user working in a tenant.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub tenant_name: String,
    /// The tenant the session acts for.
    pub ctx: TenantCtx,
}

/// The signed-in user behind a session id, if the session is live, the user enabled, and the
/// user still a member of the session's tenant.
///
/// # Errors
/// Database errors.
pub async fn session(app: &App, id: &str) -> Result<Option<SignedIn>, ServiceError> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let hash = hash_session_id(id);
    let Some(s) = session::Entity::find_by_id(hash.clone())
        .one(&app.db.read)
        .await?
    else {
        return Ok(None);
    };
    let now = Utc::now();
    if now >= s.expires_at || now - s.last_seen_at >= Duration::seconds(SESSION_IDLE_SECS) {
        session::Entity::delete_by_id(hash)
            .exec(&app.db.write)
            .await?;
        return Ok(None);
    }
    let Some(u) = user::Entity::find_by_id(s.user_id)
        .one(&app.db.read)
        .await?
    else {
        return Ok(None);
    };
    if u.disabled_at.is_some() {
        return Ok(None);
    }
    let Some(tenant_id) = s.tenant_id else {
        return Ok(None);
    };
    let Some(m) = membership::Entity::scoped(tenant_id)
        .filter(membership::Column::UserId.eq(u.id))
        .one(&app.db.read)
        .await?
    else {
        return Ok(None);
    };
    let tenant_name = tenant::Entity::find_by_id(tenant_id)
        .one(&app.db.read)
        .await?
        .map(|t| t.name)
        .unwrap_or_default();
    if now - s.last_seen_at >= Duration::seconds(SESSION_TOUCH_SECS) {
        let mut am: session::ActiveModel = s.into();
        am.last_seen_at = Set(now);
        am.update(&app.db.write).await?;
    }
    Ok(Some(SignedIn {
        user_id: u.id,
        email: u.email,
        role: m.role,
        tenant_name,
        ctx: TenantCtx::new(tenant_id),
    }))
}

/// Ends a session (sign-out). Unknown ids are fine.
///
/// # Errors
/// Database errors.
pub async fn end_session(app: &App, id: &str) -> Result<(), ServiceError> {
    session::Entity::delete_by_id(hash_session_id(id))
        .exec(&app.db.write)
        .await?;
    Ok(())
}

/// Disables a user: no more sign-ins, and every session of theirs ends now.
///
/// # Errors
/// Database errors.
pub async fn disable_user(app: &App, user_id: UserId) -> Result<(), ServiceError> {
    let txn = app.db.write.begin().await?;
    user::Entity::update_many()
        .filter(user::Column::Id.eq(user_id))
        .col_expr(user::Column::DisabledAt, Some(Utc::now()).into())
        .exec(&txn)
        .await?;
    session::Entity::delete_many()
        .filter(session::Column::UserId.eq(user_id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}
