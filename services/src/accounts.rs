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
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use sha2::{Digest, Sha256};
use switchboard_domain::accounts::{Email, Password, Role};
use switchboard_domain::phone::E164;
use switchboard_domain::{MembershipId, TenantId, UserId};
use switchboard_entity::{TenantOwned, TenantTx, membership, tenant, user};

use crate::{App, ServiceError, TenantCtx, sessions, tenancy};

/// A session ends after this long without a request, in seconds (12 h).
pub const SESSION_IDLE_SECS: i64 = 12 * 3600;
/// A session ends this long after sign-in however active, in seconds (7 days).
pub const SESSION_ABSOLUTE_SECS: i64 = 7 * 24 * 3600;
/// `last_seen_at` is refreshed at most this often, in seconds (not one write per request).
pub const SESSION_TOUCH_SECS: i64 = 60;

/// The business `/onboarding` creates (sign-up's second step).
#[derive(Debug)]
pub struct NewBusiness {
    /// The business name, 1 to 100 characters.
    pub name: String,
    /// IANA time zone, e.g. `America/Chicago`.
    pub time_zone: String,
    /// The business's own phone, for owner notifications.
    pub notify_phone: Option<E164>,
}

/// Checks a business name: 1 to 100 characters after trimming, no control characters (it
/// goes into every compliance reply; Postgres refuses NUL in text).
///
/// # Errors
/// [`ServiceError::Invalid`] naming `business_name`.
pub fn check_business_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    if name.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "business_name",
            "must not contain control characters",
        ));
    }
    match name.chars().count() {
        0 => Err(ServiceError::invalid("business_name", "must not be empty")),
        1..=100 => Ok(name.to_string()),
        _ => Err(ServiceError::invalid(
            "business_name",
            "must be at most 100 characters",
        )),
    }
}

/// Checks a notification phone: not one of the numbers Switchboard answers (any tenant's),
/// where the bot's lead alerts would arrive as a lead's texts (the job sends none there
/// either).
///
/// # Errors
/// [`ServiceError::Invalid`] naming `notify_phone`; database errors.
async fn check_notify_phone(app: &App, phone: Option<&E164>) -> Result<(), ServiceError> {
    match phone {
        Some(p) if tenancy::answers_texts(app, p.as_str()).await? => Err(ServiceError::invalid(
            "notify_phone",
            "is a number Switchboard answers texts on; enter your own mobile",
        )),
        _ => Ok(()),
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

/// Argon2 runs at most this many at once in a process: each takes 19 MiB for ~50 ms of one
/// CPU, and the forms that hash (sign-in, sign-up, reset, invite) are open to anyone, so
/// without a cap a burst of them could take the process's memory (512 blocking threads x
/// 19 MiB). Past the cap they wait their turn.
const HASHING_AT_ONCE: usize = 4;

static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HASHING_AT_ONCE);

/// Runs one Argon2 computation on a blocking thread, within [`HASHING_AT_ONCE`]. The turn is
/// held by the computation itself: a request that goes away meanwhile (client gone) does not
/// free it while the hash still runs.
async fn argon2_job<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let turn = HASHING
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        job()
    })
    .await
}

pub(crate) async fn hash_password(password: &Password) -> Result<String, ServiceError> {
    let password = password.expose().to_string();
    argon2_job(move || {
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
    argon2_job(move || {
        PasswordHash::new(&stored).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

fn email_taken() -> ServiceError {
    ServiceError::Conflict("an account with this email exists; sign in instead".into())
}

/// Fails with [`email_taken`] when `email` has an account. Checked before a password is
/// hashed, so a taken address costs no hashing; [`insert_user`] checks again.
async fn check_email_free<C: sea_orm::ConnectionTrait>(
    db: &C,
    email: &Email,
) -> Result<(), ServiceError> {
    let taken = user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(db)
        .await?
        .is_some();
    if taken { Err(email_taken()) } else { Ok(()) }
}

/// A unique-index violation as [`ServiceError::Conflict`] (`conflict`), anything else as a
/// database error: two requests that both passed a "not taken yet" check (a double-clicked
/// form on Postgres, where they run at once) get a 409 for the second, not a 500.
pub(crate) fn unique_or(
    e: sea_orm::DbErr,
    conflict: impl FnOnce() -> ServiceError,
) -> ServiceError {
    match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => conflict(),
        _ => ServiceError::Db(e),
    }
}

async fn insert_user<C: sea_orm::ConnectionTrait>(
    db: &C,
    email: &Email,
    password_hash: String,
) -> Result<UserId, ServiceError> {
    check_email_free(db, email).await?;
    let id = UserId::new();
    user::ActiveModel {
        id: Set(id),
        email: Set(email.as_str().to_string()),
        password_hash: Set(Some(password_hash)),
        name: Set(None),
        email_verified_at: Set(None),
        disabled_at: Set(None),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .map_err(|e| unique_or(e, email_taken))?;
    Ok(id)
}

/// Creates a local account (sign-up's first step). The user has no business yet.
///
/// # Errors
/// [`ServiceError::Conflict`] when the email already has an account.
pub async fn create_account(
    app: &App,
    email: &Email,
    password: &Password,
) -> Result<UserId, ServiceError> {
    check_email_free(&app.db.read, email).await?;
    let hash = hash_password(password).await?;
    let txn = app.db.write.begin().await?;
    let id = insert_user(&txn, email, hash).await?;
    txn.commit().await?;
    Ok(id)
}

/// Creates a business owned by `user_id` and makes it the session's current tenant.
///
/// # Errors
/// Invalid name or time zone (naming the field); database errors.
pub async fn create_business(
    app: &App,
    session_id: &str,
    user_id: UserId,
    new: NewBusiness,
) -> Result<TenantId, ServiceError> {
    let new = check_business(app, &new).await?;
    let txn = app.db.write.begin().await?;
    let tenant_id = insert_business(app, &txn, &new, None).await?;
    add_member(&txn, tenant_id, user_id, Role::Owner).await?;
    txn.commit().await?;
    set_session_tenant(app, session_id, user_id, tenant_id).await?;
    Ok(tenant_id)
}

/// A [`NewBusiness`] that passed [`check_business`].
pub(crate) struct CheckedBusiness {
    pub(crate) name: String,
    pub(crate) time_zone: String,
    pub(crate) notify_phone: Option<E164>,
}

/// Checks `new`'s name, time zone and notification phone, before the caller's write
/// transaction (the phone's check reads the database).
///
/// # Errors
/// [`ServiceError::Invalid`] naming the field; database errors.
pub(crate) async fn check_business(
    app: &App,
    new: &NewBusiness,
) -> Result<CheckedBusiness, ServiceError> {
    let name = check_business_name(&new.name)?;
    let time_zone = check_time_zone(&new.time_zone)?;
    check_notify_phone(app, new.notify_phone.as_ref()).await?;
    Ok(CheckedBusiness {
        name,
        time_zone,
        notify_phone: new.notify_phone.clone(),
    })
}

/// Inserts the `tenants` row of `new` (under `agency_id` for a sub-account).
pub(crate) async fn insert_business<C: sea_orm::ConnectionTrait>(
    app: &App,
    db: &C,
    new: &CheckedBusiness,
    agency_id: Option<switchboard_domain::AgencyId>,
) -> Result<TenantId, ServiceError> {
    let tenant_id = TenantId::new();
    tenancy::insert_tenant_row(
        app,
        db,
        tenant_id,
        tenancy::TenantRow {
            name: &new.name,
            time_zone: &new.time_zone,
            notify_phone: new.notify_phone.as_ref(),
            twilio: None,
            agency_id,
        },
    )
    .await?;
    Ok(tenant_id)
}

/// Points the session at `tenant_id` (the caller checked the user may work there, and
/// committed whatever made it so).
pub(crate) async fn set_session_tenant(
    app: &App,
    session_id: &str,
    user_id: UserId,
    tenant_id: TenantId,
) -> Result<(), ServiceError> {
    sessions::set_tenant(app, &hash_token(session_id), user_id, tenant_id).await
}

pub(crate) async fn add_member<C: sea_orm::ConnectionTrait>(
    db: &C,
    tenant_id: TenantId,
    user_id: UserId,
    role: Role,
) -> Result<(), ServiceError> {
    switchboard_entity::tenancy::bind_tenant(db, tenant_id).await?;
    membership::ActiveModel {
        id: Set(MembershipId::new()),
        tenant_id: Set(tenant_id),
        user_id: Set(user_id),
        role: Set(role),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .map_err(|e| {
        unique_or(e, || {
            ServiceError::Conflict("this person is already a member of this business".into())
        })
    })?;
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
    check_email_free(&app.db.read, email).await?;
    let hash = hash_password(password).await?;
    let txn = app.db.write.begin().await?;
    let user_id = insert_user(&txn, email, hash).await?;
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

/// A random token (128 bits, hex) — a session id or a mailed link's — and the SHA-256 (hex)
/// stored for it.
pub(crate) fn new_token() -> (String, String) {
    let id = hex::encode(rand::random::<[u8; 16]>());
    let hash = hash_token(&id);
    (id, hash)
}

/// The SHA-256 (hex) stored for a token.
pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Starts a new session for `user` (a fresh id: sign-in never reuses a session, so a planted
/// id is worthless), working in the first tenant the user may work in
/// ([`crate::agency::reach`]). Returns the id for
/// the cookie.
///
/// # Errors
/// Database errors.
pub async fn start_session(app: &App, user_id: UserId) -> Result<String, ServiceError> {
    let tenant_id = crate::agency::reach(app, user_id)
        .await?
        .choices
        .first()
        .map(|w| w.tenant_id);
    let (id, hash) = new_token();
    let now = Utc::now();
    let record = sessions::Record {
        user_id,
        tenant_id,
        created_at: now,
        last_seen_at: now,
        expires_at: now + Duration::seconds(SESSION_ABSOLUTE_SECS),
    };
    sessions::insert(app, &hash, &record).await?;
    Ok(id)
}

/// The tenant a session works in, and the user's role there.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// The tenant the session acts for.
    pub ctx: TenantCtx,
    pub name: String,
    pub role: Role,
}

/// A live session's user.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub user_id: UserId,
    pub email: String,
    /// `None` until the user created or joined a business (onboarding), or when they are no
    /// longer a member of the session's tenant.
    pub workspace: Option<Workspace>,
}

/// The signed-in user behind a session id, if the session is live and the user enabled. The
/// workspace is checked too: a removed membership takes effect on the next request. A request
/// counts as activity: it moves the session's idle timeout on.
///
/// # Errors
/// Database errors.
pub async fn session(app: &App, id: &str) -> Result<Option<SignedIn>, ServiceError> {
    look_up_session(app, id, true).await
}

/// [`session`] without counting as activity, for checks a long-lived response makes on its
/// own (an open page's live stream): a tab left open must not keep a session from going idle.
///
/// # Errors
/// Database errors.
pub async fn session_unseen(app: &App, id: &str) -> Result<Option<SignedIn>, ServiceError> {
    look_up_session(app, id, false).await
}

async fn look_up_session(
    app: &App,
    id: &str,
    seen: bool,
) -> Result<Option<SignedIn>, ServiceError> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let hash = hash_token(id);
    let Some(mut s) = sessions::get(app, &hash).await? else {
        return Ok(None);
    };
    let now = Utc::now();
    if now >= s.ends_at() {
        sessions::delete(app, &hash).await?;
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
    let workspace = match s.tenant_id {
        Some(tenant_id) => workspace(app, u.id, tenant_id).await?,
        None => None,
    };
    if seen && now - s.last_seen_at >= Duration::seconds(SESSION_TOUCH_SECS) {
        s.last_seen_at = now;
        sessions::touch(app, &hash, &s).await?;
    }
    Ok(Some(SignedIn {
        user_id: u.id,
        email: u.email,
        workspace,
    }))
}

/// `user_id`'s workspace in `tenant_id`, if they are a member.
/// A member works with their membership's role; an admin of the tenant's agency works as an
/// admin. Anyone else has no workspace there.
pub(crate) async fn workspace(
    app: &App,
    user_id: UserId,
    tenant_id: TenantId,
) -> Result<Option<Workspace>, ServiceError> {
    let tx = TenantTx::read(&app.db, tenant_id).await?;
    let Some(t) = tenant::Entity::find_by_id(tenant_id).one(tx.conn()).await? else {
        return Ok(None);
    };
    let member_role = membership::Entity::scoped(tenant_id)
        .filter(membership::Column::UserId.eq(user_id))
        .one(tx.conn())
        .await?
        .map(|m| m.role);
    drop(tx);
    let role = match (member_role, t.agency_id) {
        (Some(role), _) => role,
        (None, Some(agency_id)) if crate::agency::is_admin(app, agency_id, user_id).await? => {
            Role::Admin
        }
        _ => return Ok(None),
    };
    Ok(Some(Workspace {
        ctx: TenantCtx::new(tenant_id),
        name: t.name,
        role,
    }))
}

/// Ends a session (sign-out). Unknown ids are fine.
///
/// # Errors
/// Database errors.
pub async fn end_session(app: &App, id: &str) -> Result<(), ServiceError> {
    sessions::delete(app, &hash_token(id)).await
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
    txn.commit().await?;
    // Sessions are refused from the commit on (a disabled user has no session), and gone now.
    sessions::delete_user(app, user_id).await
}

/// Every IANA time zone name the tz database knows (chrono-tz), for pickers.
pub fn time_zones() -> impl Iterator<Item = &'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
}

/// A member of a tenant, as `/settings` lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub id: MembershipId,
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub joined_at: chrono::DateTime<Utc>,
}

/// The tenant's members, oldest first.
///
/// # Errors
/// Database errors.
pub async fn members(app: &App, ctx: &TenantCtx) -> Result<Vec<MemberView>, ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let rows = membership::Entity::scoped(tx.tenant())
        .order_by_asc(membership::Column::CreatedAt)
        .all(tx.conn())
        .await?;
    let users: std::collections::HashMap<UserId, String> = user::Entity::find()
        .filter(user::Column::Id.is_in(rows.iter().map(|m| m.user_id)))
        .all(tx.conn())
        .await?
        .into_iter()
        .map(|u| (u.id, u.email))
        .collect();
    Ok(rows
        .into_iter()
        .map(|m| MemberView {
            id: m.id,
            user_id: m.user_id,
            email: users.get(&m.user_id).cloned().unwrap_or_default(),
            role: m.role,
            joined_at: m.created_at,
        })
        .collect())
}

/// Changes a member's role, or removes them (`role: None`), on behalf of a member whose role
/// is `actor`. Only an owner grants, changes or removes the owner role; a business always
/// keeps an owner. A removed member's sessions stop working for this tenant on their next
/// request.
///
/// # Errors
/// [`ServiceError::NotFound`] when the membership is not this tenant's;
/// [`ServiceError::Forbidden`] when `actor` may not; [`ServiceError::Conflict`] when it would
/// leave the business without an owner.
pub async fn change_member(
    app: &App,
    ctx: &TenantCtx,
    actor: Role,
    id: MembershipId,
    role: Option<Role>,
) -> Result<(), ServiceError> {
    if !actor.manages() {
        return Err(ServiceError::Forbidden(
            "only owners and admins change members".into(),
        ));
    }
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let m = membership::Entity::by_id(tx.tenant(), id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    if (m.role == Role::Owner || role == Some(Role::Owner)) && actor != Role::Owner {
        return Err(ServiceError::Forbidden(
            "only an owner can grant, change or remove the owner role".into(),
        ));
    }
    if m.role == Role::Owner && role != Some(Role::Owner) {
        // The owners' rows stay locked until the commit (Postgres; SQLite's writes are serial
        // anyway): two owners demoting each other at once must not both see the other one.
        let owners = membership::Entity::scoped(tx.tenant())
            .filter(membership::Column::Role.eq(Role::Owner))
            .lock_exclusive()
            .all(tx.conn())
            .await?;
        if owners.len() <= 1 {
            return Err(ServiceError::Conflict(
                "a business needs an owner: make someone else owner first".into(),
            ));
        }
    }
    match role {
        Some(role) => {
            let mut am: membership::ActiveModel = m.into();
            am.role = Set(role);
            am.update(tx.conn()).await?;
        }
        None => {
            membership::Entity::delete_by_id_scoped(tx.tenant(), id)
                .exec(tx.conn())
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
