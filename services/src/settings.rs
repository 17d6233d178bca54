//! `/settings`: the business profile, the tenant's Twilio connection and numbers, and its API
//! keys. Every function acts for one tenant; callers check the member's role (owners and
//! admins change settings, agents only read).

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use secrecy::{ExposeSecret, SecretString};
use switchboard_domain::phone::E164;
use switchboard_domain::{ApiKeyId, PhoneNumberId};
use switchboard_entity::{TenantOwned, TenantTx, api_key, contact, lookup, phone_number, tenant};
use switchboard_providers::SendError;
use switchboard_providers::twilio::{AccountInfo, TwilioSms};

use crate::accounts::{NewBusiness, check_business};
use crate::tenancy::{self, BotKind};
use crate::{App, ServiceError, TenantCtx};

/// A number of the tenant, as the settings list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberView {
    pub id: PhoneNumberId,
    /// E.164.
    pub e164: String,
    pub bot: BotKind,
}

/// The settings page's view of a tenant. Secrets are never in it: the auth token shows as its
/// last 4 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub time_zone: String,
    pub notify_phone: Option<String>,
    /// `AC…`, when the tenant connected its own Twilio account.
    pub twilio_account_sid: Option<String>,
    /// The last 4 characters of the stored auth token.
    pub twilio_token_last4: Option<String>,
    /// The numbers in use.
    pub numbers: Vec<NumberView>,
    /// The numbers the tenant removed, which it may add back ([`add_number`]) with their
    /// conversations.
    pub removed_numbers: Vec<NumberView>,
    /// True when the operator assigns this tenant's numbers: it has no Twilio account of its
    /// own on a platform with one (see [`add_number`]).
    pub numbers_by_operator: bool,
}

/// The tenant's profile, Twilio connection (masked) and numbers.
///
/// # Errors
/// Database errors; a stored token that cannot be opened.
pub async fn profile(app: &App, ctx: &TenantCtx) -> Result<Profile, ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let t = tenant::Entity::find_by_id(ctx.tenant_id())
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    let (numbers, removed_numbers): (Vec<_>, Vec<_>) = phone_number::Entity::scoped(tx.tenant())
        .order_by_asc(phone_number::Column::E164)
        .all(tx.conn())
        .await?
        .into_iter()
        .partition(|n| n.released_at.is_none());
    let view = |rows: Vec<phone_number::Model>| {
        rows.into_iter()
            .map(|n| NumberView {
                id: n.id,
                e164: n.e164,
                bot: n.bot,
            })
            .collect()
    };
    let last4 = match &t.twilio_auth_token_sealed {
        Some(sealed) => {
            let token = app.sealer.open(sealed)?;
            let token = token.expose_secret();
            let tail: String = token
                .chars()
                .skip(token.chars().count().saturating_sub(4))
                .collect();
            Some(tail)
        }
        None => None,
    };
    let numbers_by_operator = app.settings.twilio.is_some() && last4.is_none();
    Ok(Profile {
        numbers_by_operator,
        name: t.name,
        time_zone: t.time_zone,
        notify_phone: t.notify_phone,
        twilio_account_sid: t.twilio_account_sid,
        twilio_token_last4: last4,
        numbers: view(numbers),
        removed_numbers: view(removed_numbers),
    })
}

/// Changes the business name, time zone and notification phone (a contact that was the
/// owner's former phone, [`contact::OWNER`], goes back to `new`, unnamed if it was named
/// [`contact::OWNER_NAME`]).
///
/// # Errors
/// Invalid name, time zone or notification phone ([`check_business`]), naming the field;
/// database errors.
pub async fn update_profile(
    app: &App,
    ctx: &TenantCtx,
    new: NewBusiness,
) -> Result<(), ServiceError> {
    let new = check_business(app, &new).await?;
    let notify_phone = new.notify_phone.map(|p| p.as_str().to_string());
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    tenant::Entity::update_many()
        .filter(tenant::Column::Id.eq(ctx.tenant_id()))
        .col_expr(tenant::Column::Name, new.name.into())
        .col_expr(tenant::Column::TimeZone, new.time_zone.into())
        .col_expr(tenant::Column::NotifyPhone, notify_phone.clone().into())
        .exec(tx.conn())
        .await?;
    // The owner's former phone is a contact like any other again (a lead, if it texts),
    // without the name its alerts gave it.
    let unnamed = Expr::case(
        contact::Column::Name.eq(contact::OWNER_NAME),
        Option::<String>::None,
    )
    .finally(Expr::col(contact::Column::Name));
    contact::Entity::scoped_update(tx.tenant())
        .filter(contact::Column::Status.eq(contact::OWNER))
        .filter(contact::Column::Phone.ne(notify_phone.unwrap_or_default()))
        .col_expr(contact::Column::Status, "new".into())
        .col_expr(contact::Column::Name, unnamed.into())
        .exec(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Connects the tenant's own Twilio account (its SID and auth token; the token is sealed).
/// An empty token keeps the stored one (the form never shows it).
///
/// Twilio signs a number's webhooks with the token of the account that holds it, and sends
/// only from an account's own numbers: so when the account changes (another SID, or the
/// first one), every number the tenant uses must be on the new account, asked with the
/// credentials being saved ([`TwilioSms::holds_number`]). A new token for the same account
/// is saved as it is.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `account_sid` (`AC` + 32 hex; or a number in use that the
/// account does not hold) or `auth_token` (malformed, missing, or refused by Twilio);
/// [`ServiceError::Provider`] when Twilio cannot answer.
pub async fn set_twilio(
    app: &App,
    ctx: &TenantCtx,
    account_sid: &str,
    auth_token: &str,
) -> Result<(), ServiceError> {
    let sid = tenancy::check_account_sid(account_sid)?;
    let given = auth_token.trim();
    if !given.is_empty() {
        tenancy::check_auth_token(given)?;
    }
    let stored = lookup::tenant_twilio_account(&app.db.read, ctx.tenant_id()).await?;
    let token = match (given, &stored) {
        ("", None) => return Err(ServiceError::invalid("auth_token", "is required")),
        ("", Some((_, sealed))) => app.sealer.open(sealed)?,
        (token, _) => SecretString::from(token),
    };
    if stored.as_ref().is_none_or(|(old, _)| old != sid) {
        numbers_are_on(app, ctx, sid, token.clone()).await?;
    }
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let mut update = tenant::Entity::update_many()
        .filter(tenant::Column::Id.eq(ctx.tenant_id()))
        .col_expr(tenant::Column::TwilioAccountSid, Some(sid).into());
    if !given.is_empty() {
        update = update.col_expr(
            tenant::Column::TwilioAuthTokenSealed,
            Some(app.sealer.seal(given)).into(),
        );
    }
    update.exec(tx.conn()).await?;
    tx.commit().await?;
    app.routes.clear();
    Ok(())
}

/// Checks that Twilio account `sid` (asked with `token`) holds every number the tenant uses.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `account_sid` for a number it does not hold, or
/// `auth_token` when Twilio refuses the credentials; [`ServiceError::Provider`] when Twilio
/// cannot answer.
async fn numbers_are_on(
    app: &App,
    ctx: &TenantCtx,
    sid: &str,
    token: SecretString,
) -> Result<(), ServiceError> {
    let numbers = numbers_in_use(app, ctx).await?;
    let twilio = app.providers.twilio(sid, token);
    for number in numbers {
        match twilio.holds_number(&number).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ServiceError::invalid(
                    "account_sid",
                    format!(
                        "{number} is not a number of account {sid}: its texts could be neither \
                         verified nor sent. Remove it first, or move it to that account in Twilio"
                    ),
                ));
            }
            Err(SendError::Rejected { message, .. }) => {
                return Err(ServiceError::invalid(
                    "auth_token",
                    format!("Twilio refused these credentials for {sid}: {message}"),
                ));
            }
            Err(e) => {
                return Err(ServiceError::Provider(format!(
                    "Twilio could not confirm that {number} is on account {sid}: {e}"
                )));
            }
        }
    }
    Ok(())
}

/// The E.164 numbers the tenant uses (not removed).
async fn numbers_in_use(app: &App, ctx: &TenantCtx) -> Result<Vec<String>, ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    Ok(phone_number::Entity::scoped(tx.tenant())
        .filter(phone_number::Column::ReleasedAt.is_null())
        .all(tx.conn())
        .await?
        .into_iter()
        .map(|n| n.e164)
        .collect())
}

/// Disconnects the tenant's own Twilio account (it falls back to the platform account or the
/// simulator). Only without numbers in use: they are on this account, which alone can verify
/// their webhooks and send from them; without it every text to them would be refused (403)
/// and every reply fail, or, with the simulator, be shown delivered without being sent.
///
/// # Errors
/// [`ServiceError::Conflict`] while the tenant has numbers in use; database errors.
pub async fn clear_twilio(app: &App, ctx: &TenantCtx) -> Result<(), ServiceError> {
    let numbers = numbers_in_use(app, ctx).await?;
    if !numbers.is_empty() {
        return Err(ServiceError::Conflict(format!(
            "Remove your numbers first ({}): they are on this Twilio account, which alone can \
             verify their texts and send from them.",
            numbers.join(", ")
        )));
    }
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    tenant::Entity::update_many()
        .filter(tenant::Column::Id.eq(ctx.tenant_id()))
        .col_expr(tenant::Column::TwilioAccountSid, None::<String>.into())
        .col_expr(tenant::Column::TwilioAuthTokenSealed, None::<String>.into())
        .exec(tx.conn())
        .await?;
    tx.commit().await?;
    app.routes.clear();
    Ok(())
}

/// Why "test connection" failed, in words for the settings page.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("no Twilio account is connected")]
    NotConnected,
    #[error("Twilio refused these credentials (HTTP {status}{}): {message}", code.map(|c| format!(", error {c}")).unwrap_or_default())]
    Refused {
        status: u16,
        code: Option<i32>,
        message: String,
    },
    #[error("Twilio could not be reached: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// A Twilio client on the tenant's own account (its stored credentials), with the account's
/// SID; `None` when it has not connected one.
///
/// # Errors
/// Database errors; a stored token that cannot be opened.
async fn own_twilio(
    app: &App,
    ctx: &TenantCtx,
) -> Result<Option<(String, TwilioSms)>, ServiceError> {
    let Some((sid, sealed)) = lookup::tenant_twilio_account(&app.db.read, ctx.tenant_id()).await?
    else {
        return Ok(None);
    };
    let token: SecretString = app.sealer.open(&sealed)?;
    let client = app.providers.twilio(&sid, token);
    Ok(Some((sid, client)))
}

/// Calls Twilio's account endpoint with the stored credentials.
///
/// # Errors
/// [`ConnectionError`] saying what went wrong.
pub async fn test_twilio(app: &App, ctx: &TenantCtx) -> Result<AccountInfo, ConnectionError> {
    let (_, twilio) = own_twilio(app, ctx)
        .await?
        .ok_or(ConnectionError::NotConnected)?;
    match twilio.fetch_account().await {
        Ok(info) => Ok(info),
        Err(SendError::Rejected {
            status,
            code,
            message,
        }) => Err(ConnectionError::Refused {
            status,
            code,
            message,
        }),
        Err(SendError::RateLimited { .. }) => Err(ConnectionError::Unreachable(
            "rate limited; try again".into(),
        )),
        Err(SendError::Unavailable { message, .. }) => Err(ConnectionError::Unreachable(message)),
    }
}

/// Adds a number to the tenant, answered by `bot`. Webhooks for it are routed to this tenant
/// from now on, and verified with the auth token of the account that holds it.
///
/// So the tenant must show that the number is its own:
/// - with its own Twilio account connected, Twilio must list the number among that account's
///   IncomingPhoneNumbers. Otherwise the tenant could claim a number of another business not
///   yet added here, and that business, adding it later, would find it taken;
/// - without one, on a platform with a Twilio account (`TWILIO_AUTH_TOKEN`), its webhooks are
///   verified with the platform's token: it could claim a number the operator bought for
///   another business and receive that business's texts. Such a tenant's numbers are
///   assigned by the operator (`switchboard admin create-tenant`); it may only take back one
///   it removed ([`remove_number`]), which nobody else has taken since;
/// - without any Twilio account (the simulator) every tenant may add numbers.
///
/// A number the tenant removed comes back as it was: the same row, so its conversations go
/// on, and the bot it had (`bot` is then not used).
///
/// # Errors
/// [`ServiceError::Forbidden`] for a tenant without its own account on a platform with one;
/// [`ServiceError::Invalid`] (`e164`) for a number its Twilio account does not hold;
/// [`ServiceError::Provider`] when Twilio cannot answer that (or refuses the stored
/// credentials); [`ServiceError::Conflict`] when any tenant already has the number.
pub async fn add_number(
    app: &App,
    ctx: &TenantCtx,
    number: &E164,
    bot: BotKind,
) -> Result<PhoneNumberId, ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let released = phone_number::Entity::scoped(tx.tenant())
        .filter(phone_number::Column::E164.eq(number.as_str()))
        .filter(phone_number::Column::ReleasedAt.is_not_null())
        .one(tx.conn())
        .await?;
    drop(tx);
    match own_twilio(app, ctx).await? {
        Some((sid, twilio)) => {
            let held = twilio.holds_number(number.as_str()).await.map_err(|e| {
                ServiceError::Provider(format!(
                    "Twilio could not confirm that {number} is on account {sid}: {e}"
                ))
            })?;
            if !held {
                return Err(ServiceError::invalid(
                    "e164",
                    format!(
                        "{number} is not a number of your Twilio account {sid}; buy or port it \
                         there first"
                    ),
                ));
            }
        }
        None if app.settings.twilio.is_some() && released.is_none() => {
            return Err(ServiceError::Forbidden(
                "Connect your own Twilio account first: numbers on the platform's account are \
                 assigned by its operator."
                    .into(),
            ));
        }
        None => {}
    }
    let taken = || ServiceError::Conflict(format!("{number} is already connected to a business"));
    if lookup::number_owner(&app.db.read, number.as_str())
        .await?
        .is_some()
    {
        return Err(taken());
    }
    let unique = |e: sea_orm::DbErr| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => taken(),
        _ => e.into(),
    };
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let id = match released {
        Some(row) => {
            let back = phone_number::Entity::by_id_update(tx.tenant(), row.id)
                .col_expr(
                    phone_number::Column::ReleasedAt,
                    Expr::value(None::<DateTime<Utc>>),
                )
                .filter(phone_number::Column::ReleasedAt.is_not_null())
                .exec(tx.conn())
                .await
                .map_err(unique)?;
            if back.rows_affected == 0 {
                return Err(taken());
            }
            row.id
        }
        None => {
            let id = PhoneNumberId::new();
            phone_number::ActiveModel {
                id: Set(id),
                tenant_id: Set(tx.tenant()),
                e164: Set(number.as_str().to_string()),
                label: Set(None),
                bot: Set(bot),
                created_at: Set(Utc::now()),
                released_at: Set(None),
            }
            .insert(tx.conn())
            .await
            .map_err(unique)?;
            id
        }
    };
    tx.commit().await?;
    app.routes.clear();
    Ok(id)
}

/// Removes one of the tenant's numbers: it is released (see
/// [`phone_number::Model::released_at`]), not deleted. Webhooks for it answer 404 from now on
/// and nothing more is sent from it: replies still queued in its conversations fail
/// ([`crate::messaging`]), and new ones are refused. Its conversations stay, with their whole
/// history, readable in the inbox.
///
/// # Errors
/// [`ServiceError::NotFound`] when the number is not one of this tenant's numbers in use.
pub async fn remove_number(
    app: &App,
    ctx: &TenantCtx,
    id: PhoneNumberId,
) -> Result<(), ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let released = phone_number::Entity::by_id_update(tx.tenant(), id)
        .col_expr(phone_number::Column::ReleasedAt, Expr::value(Utc::now()))
        .filter(phone_number::Column::ReleasedAt.is_null())
        .exec(tx.conn())
        .await?;
    if released.rows_affected == 0 {
        return Err(ServiceError::NotFound);
    }
    tx.commit().await?;
    app.routes.clear();
    Ok(())
}

/// An API key as the settings list it: never the key, only its prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    /// The first 10 characters (`sb_` + 7), to recognise the key.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The tenant's API keys, newest first.
///
/// # Errors
/// Database errors.
pub async fn api_keys(app: &App, ctx: &TenantCtx) -> Result<Vec<ApiKeyView>, ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    Ok(api_key::Entity::scoped(tx.tenant())
        .order_by_desc(api_key::Column::CreatedAt)
        .all(tx.conn())
        .await?
        .into_iter()
        .map(|k| ApiKeyView {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        })
        .collect())
}

/// Creates a named API key; the key itself is returned once and stored only as a hash.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `name` (1 to 60 characters, no control characters).
pub async fn create_api_key(
    app: &App,
    ctx: &TenantCtx,
    name: &str,
) -> Result<SecretString, ServiceError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 60 || name.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "name",
            "must be 1 to 60 characters, without control characters",
        ));
    }
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let key = tenancy::insert_api_key(tx.conn(), tx.tenant(), name).await?;
    tx.commit().await?;
    Ok(key)
}

/// Revokes an API key: requests with it are 401 from now on.
///
/// # Errors
/// [`ServiceError::NotFound`] when the key is not this tenant's.
pub async fn revoke_api_key(app: &App, ctx: &TenantCtx, id: ApiKeyId) -> Result<(), ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let done = api_key::Entity::by_id_update(tx.tenant(), id)
        .filter(api_key::Column::RevokedAt.is_null())
        .col_expr(api_key::Column::RevokedAt, Some(Utc::now()).into())
        .exec(tx.conn())
        .await?;
    if done.rows_affected == 0
        && api_key::Entity::by_id(tx.tenant(), id)
            .one(tx.conn())
            .await?
            .is_none()
    {
        return Err(ServiceError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}
