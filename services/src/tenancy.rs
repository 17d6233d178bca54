//! Tenants, their numbers and API keys; which provider and which auth token serve a number.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use switchboard_domain::accounts::{Email, Password, Role};
use switchboard_domain::phone::E164;
use switchboard_domain::signature::twilio::{self, is_account_sid};
use switchboard_domain::{AgencyId, ApiKeyId, PhoneNumberId, TenantId};
use switchboard_entity::lookup::{self, NumberOwner};
pub use switchboard_entity::phone_number::BotKind;
use switchboard_entity::{TenantOwned, TenantTx, api_key, phone_number, tenant};
use switchboard_providers::SmsProvider;

use crate::{App, ServiceError, TenantCtx};

/// The demo business created on first start of an empty embedded database.
pub const DEMO_NAME: &str = "Demo Plumbing";
/// Its number (a US fictional-range number; texts to it go through the simulator).
pub const DEMO_NUMBER: &str = "+15125550100";
/// Its time zone.
pub const DEMO_TIME_ZONE: &str = "America/Chicago";

/// How long a number -> tenant route stays cached, in seconds. Changes made through this
/// process invalidate at once; other processes see them within this time, except that a
/// webhook the cached route's token does not verify reads the route again before it is
/// refused (see `webhooks::receive_sms`): a new auth token, or a number that moved to another
/// tenant, takes effect at once everywhere.
pub const ROUTE_TTL_SECS: u64 = 30;

/// A tenant's own Twilio account, as given by its owner.
#[derive(Clone, Debug)]
pub struct TwilioCredentials {
    /// `AC` + 32 hex characters.
    pub account_sid: String,
    pub auth_token: SecretString,
}

/// What `switchboard admin create-tenant` (and sign-up, later) provide.
#[derive(Clone, Debug)]
pub struct NewTenant {
    pub name: String,
    pub time_zone: String,
    pub number: E164,
    pub bot: BotKind,
    pub twilio: Option<TwilioCredentials>,
}

/// A created tenant and its first API key (shown once, stored only as a hash).
#[derive(Debug)]
pub struct CreatedTenant {
    pub tenant_id: TenantId,
    pub phone_number_id: PhoneNumberId,
    pub api_key: SecretString,
}

/// Everything a webhook for one of our numbers needs before it may write.
#[derive(Clone)]
pub struct NumberRoute {
    pub owner: NumberOwner,
    /// The auth token Twilio signs this number's webhooks with: the tenant's own account's,
    /// or the platform's. `None`: nobody can sign for it (simulator-only number).
    pub signing_token: Option<SecretString>,
    /// The provider that sends from this number.
    pub provider: Arc<dyn SmsProvider>,
}

/// Cache of number routes (E.164 -> route), filled from [`lookup::number_owner`].
#[derive(Default)]
pub(crate) struct RouteCache {
    entries: RwLock<HashMap<String, (Instant, Option<NumberRoute>)>>,
}

impl RouteCache {
    pub(crate) fn clear(&self) {
        self.entries.write().expect("route cache lock").clear();
    }

    /// Drops the cached route of `number` (E.164), if any.
    pub(crate) fn forget(&self, number: &str) {
        self.entries
            .write()
            .expect("route cache lock")
            .remove(number);
    }
}

/// Whether `phone` is a number some tenant answers texts on (it has a [`route`]); text that
/// is no E.164 number is none. A tenant's notification phone may not be one: the bot's lead
/// alert from the lead's own number Twilio refuses (error 21266), and another of our numbers
/// would take it for a lead's text, and its bot would answer ours.
///
/// # Errors
/// As [`route`].
pub async fn answers_texts(app: &App, phone: &str) -> Result<bool, ServiceError> {
    match E164::parse(phone) {
        Ok(number) => Ok(route(app, &number).await?.is_some()),
        Err(_) => Ok(false),
    }
}

/// The route for `number`, or `None` when no tenant owns it.
///
/// # Errors
/// Database errors, or a stored credential that cannot be opened.
pub async fn route(app: &App, number: &E164) -> Result<Option<NumberRoute>, ServiceError> {
    if let Some((at, route)) = app
        .routes
        .entries
        .read()
        .expect("route cache lock")
        .get(number.as_str())
        && at.elapsed() < Duration::from_secs(ROUTE_TTL_SECS)
    {
        return Ok(route.clone());
    }
    let route = match lookup::number_owner(&app.db.read, number.as_str()).await? {
        None => None,
        Some(owner) => {
            let own = own_account(
                app,
                owner.twilio_account_sid.clone(),
                owner.twilio_auth_token_sealed.as_deref(),
            )?;
            let signing_token = own
                .as_ref()
                .map(|(_, token)| token.clone())
                .or_else(|| app.settings.twilio.as_ref().map(|t| t.auth_token.clone()));
            let provider = app.providers.for_account(own);
            Some(NumberRoute {
                owner,
                signing_token,
                provider,
            })
        }
    };
    // Only owned numbers are cached: `To` is read before the signature check, so caching
    // misses would let anyone grow the cache with made-up numbers.
    if let Some(found) = &route {
        app.routes
            .entries
            .write()
            .expect("route cache lock")
            .insert(
                number.as_str().to_string(),
                (Instant::now(), Some(found.clone())),
            );
    }
    Ok(route)
}

/// The provider that sends for a tenant: its own Twilio account (the AccountSid and the
/// sealed auth token stored on `tenants`), else the platform's account, else the simulator.
///
/// # Errors
/// A stored credential that cannot be opened.
pub fn provider_from(
    app: &App,
    account_sid: Option<String>,
    sealed_token: Option<String>,
) -> Result<Arc<dyn SmsProvider>, ServiceError> {
    let own = own_account(app, account_sid, sealed_token.as_deref())?;
    Ok(app.providers.for_account(own))
}

/// A tenant's own Twilio account with its auth token unsealed, or `None` when it has none.
fn own_account(
    app: &App,
    account_sid: Option<String>,
    sealed_token: Option<&str>,
) -> Result<Option<(String, SecretString)>, ServiceError> {
    match account_sid.zip(sealed_token) {
        Some((sid, sealed)) => Ok(Some((sid, app.sealer.open(sealed)?))),
        None => Ok(None),
    }
}

/// Checks a Twilio Account SID: `AC` and 32 hexadecimal characters (surrounding spaces
/// ignored); returns it trimmed.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `account_sid`.
pub fn check_account_sid(sid: &str) -> Result<&str, ServiceError> {
    let sid = sid.trim();
    if is_account_sid(sid) {
        Ok(sid)
    } else {
        Err(ServiceError::invalid(
            "account_sid",
            "must be AC followed by 32 hexadecimal characters (Twilio Console → Account Info)",
        ))
    }
}

/// Checks a Twilio auth token ([`twilio::is_auth_token`], after trimming): webhooks to the
/// tenant's numbers are verified with it, and an HMAC with an empty key is one anyone can
/// compute.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `auth_token`.
pub fn check_auth_token(token: &str) -> Result<(), ServiceError> {
    if twilio::is_auth_token(token.trim()) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "auth_token",
            "must be the 32-character auth token from Twilio Console",
        ))
    }
}

/// Creates a tenant with one number and one API key (`switchboard admin create-tenant`). The
/// name, time zone and Twilio credentials are checked as the web forms check them.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `business_name`, `time_zone`, `account_sid` or
/// `auth_token`; [`ServiceError::Conflict`] when the number already belongs to a tenant;
/// database errors.
pub async fn create_tenant(app: &App, new: NewTenant) -> Result<CreatedTenant, ServiceError> {
    let name = crate::accounts::check_business_name(&new.name)?;
    let time_zone = crate::accounts::check_time_zone(&new.time_zone)?;
    let twilio = match new.twilio {
        Some(t) => {
            let account_sid = check_account_sid(&t.account_sid)?.to_string();
            check_auth_token(t.auth_token.expose_secret())?;
            Some(TwilioCredentials {
                account_sid,
                auth_token: SecretString::from(t.auth_token.expose_secret().trim()),
            })
        }
        None => None,
    };
    let now = Utc::now();
    let tenant_id = TenantId::new();
    let phone_number_id = PhoneNumberId::new();
    if lookup::number_owner(&app.db.read, new.number.as_str())
        .await?
        .is_some()
    {
        return Err(ServiceError::Conflict(format!(
            "{} already belongs to a tenant",
            new.number
        )));
    }
    let txn = app.db.write.begin().await?;
    insert_tenant_row(
        app,
        &txn,
        tenant_id,
        TenantRow {
            name: &name,
            time_zone: &time_zone,
            notify_phone: None,
            twilio: twilio.as_ref(),
            agency_id: None,
        },
    )
    .await?;
    phone_number::ActiveModel {
        id: Set(phone_number_id),
        tenant_id: Set(tenant_id),
        e164: Set(new.number.as_str().to_string()),
        label: Set(None),
        bot: Set(new.bot),
        created_at: Set(now),
        released_at: Set(None),
    }
    .insert(&txn)
    .await?;
    let api_key = insert_api_key(&txn, tenant_id, "default").await?;
    txn.commit().await?;
    app.routes.clear();
    Ok(CreatedTenant {
        tenant_id,
        phone_number_id,
        api_key,
    })
}

/// The columns of a new `tenants` row.
pub(crate) struct TenantRow<'a> {
    pub name: &'a str,
    pub time_zone: &'a str,
    pub notify_phone: Option<&'a E164>,
    pub twilio: Option<&'a TwilioCredentials>,
    pub agency_id: Option<AgencyId>,
}

/// Inserts the `tenants` row (a tenant's Twilio token is sealed here).
pub(crate) async fn insert_tenant_row<C: sea_orm::ConnectionTrait>(
    app: &App,
    db: &C,
    tenant_id: TenantId,
    row: TenantRow<'_>,
) -> Result<(), ServiceError> {
    // The rest of the caller's transaction writes this tenant's rows (row-level security).
    switchboard_entity::tenancy::bind_tenant(db, tenant_id).await?;
    tenant::ActiveModel {
        id: Set(tenant_id),
        name: Set(row.name.to_string()),
        time_zone: Set(row.time_zone.to_string()),
        twilio_account_sid: Set(row.twilio.map(|t| t.account_sid.clone())),
        twilio_auth_token_sealed: Set(row
            .twilio
            .map(|t| app.sealer.seal(t.auth_token.expose_secret()))),
        created_at: Set(Utc::now()),
        notify_phone: Set(row.notify_phone.map(|p| p.as_str().to_string())),
        agency_id: Set(row.agency_id),
    }
    .insert(db)
    .await?;
    Ok(())
}

/// Key format: `sb_` + 40 hex characters (160 random bits).
fn new_api_key() -> String {
    format!("sb_{}", hex::encode(rand::random::<[u8; 20]>()))
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub(crate) async fn insert_api_key<C: sea_orm::ConnectionTrait>(
    db: &C,
    tenant_id: TenantId,
    name: &str,
) -> Result<SecretString, ServiceError> {
    let key = new_api_key();
    api_key::ActiveModel {
        id: Set(ApiKeyId::new()),
        tenant_id: Set(tenant_id),
        name: Set(name.to_string()),
        prefix: Set(key[..10].to_string()),
        key_hash: Set(hash_key(&key)),
        created_at: Set(Utc::now()),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(SecretString::from(key))
}

/// The tenant of a bearer API key, if the key exists and is not revoked.
///
/// # Errors
/// Database errors.
pub async fn authenticate_api_key(app: &App, key: &str) -> Result<Option<TenantCtx>, ServiceError> {
    if !key.starts_with("sb_") || key.len() > 100 {
        return Ok(None);
    }
    Ok(lookup::api_key_owner(&app.db.read, &hash_key(key))
        .await?
        .map(|(tenant, _)| TenantCtx::new(tenant)))
}

/// The demo workspace's owner, created with it.
pub const DEMO_EMAIL: &str = "owner@demo-plumbing.example";

/// What [`seed_demo`] created; the secrets are shown once.
pub struct SeededDemo {
    pub tenant: CreatedTenant,
    /// The owner's password ([`DEMO_EMAIL`]): 20 random characters.
    pub password: SecretString,
}

/// Creates the demo tenant and its owner ([`DEMO_EMAIL`], random password) when the database
/// has no tenant at all.
///
/// # Errors
/// Database errors.
pub async fn seed_demo(app: &App) -> Result<Option<SeededDemo>, ServiceError> {
    if !lookup::no_tenants(&app.db.read).await? {
        return Ok(None);
    }
    let created = create_tenant(
        app,
        NewTenant {
            name: DEMO_NAME.into(),
            time_zone: DEMO_TIME_ZONE.into(),
            number: E164::parse(DEMO_NUMBER).expect("demo number is valid E.164"),
            bot: BotKind::Qualify,
            twilio: None,
        },
    )
    .await?;
    let password = hex::encode(rand::random::<[u8; 10]>());
    crate::accounts::create_member(
        app,
        created.tenant_id,
        &Email::parse(DEMO_EMAIL).expect("demo email is valid"),
        &Password::parse(&password).expect("20 characters is a valid password"),
        Role::Owner,
    )
    .await?;
    Ok(Some(SeededDemo {
        tenant: created,
        password: SecretString::from(password),
    }))
}

/// The demo tenant (the simulator texts it), when `DEMO_SEED` is on: the tenant
/// [`DEMO_NUMBER`] was seeded for, its first holder. Not whoever holds it now: a business
/// that added the number after the demo released it would otherwise become the demo, its
/// threads readable on the public simulator page. Found once, then kept: the first holder
/// of a number never changes.
///
/// # Errors
/// Database errors.
pub async fn demo_tenant(app: &App) -> Result<Option<TenantCtx>, ServiceError> {
    if !app.settings.demo_seed {
        return Ok(None);
    }
    if let Some(&tenant) = app.demo.get() {
        return Ok(Some(TenantCtx::new(tenant)));
    }
    let found = lookup::first_holder(&app.db.read, DEMO_NUMBER).await?;
    Ok(found.map(|tenant| TenantCtx::new(*app.demo.get_or_init(|| tenant))))
}

/// A number shown on the simulator page.
#[derive(Clone, Debug)]
pub struct SimulatorNumber {
    pub e164: String,
    pub tenant_name: String,
}

/// The numbers the simulator may text: the demo workspace's numbers, when they send through
/// the simulator (no Twilio account for it, and no platform account). Real tenants never
/// appear here, whatever their setup: the simulator page needs no sign-in.
///
/// # Errors
/// Database errors.
pub async fn simulator_numbers(app: &App) -> Result<Vec<SimulatorNumber>, ServiceError> {
    let Some(ctx) = demo_tenant(app).await? else {
        return Ok(Vec::new());
    };
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let name = tenant_name(tx.conn(), &ctx).await?;
    let numbers = phone_number::Entity::scoped(tx.tenant())
        .filter(phone_number::Column::ReleasedAt.is_null())
        .order_by_asc(phone_number::Column::E164)
        .all(tx.conn())
        .await?;
    drop(tx);
    let mut out = Vec::with_capacity(numbers.len());
    for n in numbers {
        let number =
            E164::parse(&n.e164).map_err(|e| ServiceError::invalid("e164", e.to_string()))?;
        if route(app, &number)
            .await?
            .is_some_and(|r| r.provider.name() == "simulator")
        {
            out.push(SimulatorNumber {
                e164: n.e164,
                tenant_name: name.clone(),
            });
        }
    }
    Ok(out)
}

/// The business name of `ctx`'s tenant.
///
/// # Errors
/// [`ServiceError::NotFound`] when the tenant is gone; database errors.
pub async fn tenant_name<C: sea_orm::ConnectionTrait>(
    db: &C,
    ctx: &TenantCtx,
) -> Result<String, ServiceError> {
    Ok(tenant_of(db, ctx).await?.name)
}

/// The row of `ctx`'s tenant.
///
/// # Errors
/// [`ServiceError::NotFound`] when the tenant is gone; database errors.
pub async fn tenant_of<C: sea_orm::ConnectionTrait>(
    db: &C,
    ctx: &TenantCtx,
) -> Result<tenant::Model, ServiceError> {
    tenant::Entity::find_by_id(ctx.tenant_id())
        .one(db)
        .await?
        .ok_or(ServiceError::NotFound)
}
