//! Switchboard's use cases, shared by the REST API, the web pages and the workers.
//!
//! Everything takes an [`App`] (the process's shared handles) and, for tenant work, a
//! [`TenantCtx`]; data access goes through `switchboard-entity`'s scoped queries inside a
//! tenant-bound transaction. Provider I/O never happens on a webhook's request path: webhooks
//! store and enqueue; jobs decide and send.

use std::sync::Arc;

use secrecy::SecretString;
use switchboard_config::Settings;
use switchboard_providers::SmsProvider;
use switchboard_providers::mail::ResendMail;
use switchboard_providers::simulator::SimulatorSms;
use switchboard_providers::twilio::{TwilioHttp, TwilioSms};

pub mod accounts;
pub mod agency;
pub mod conversations;
pub mod correlation;
pub mod crypto;
pub mod ctx;
pub mod dashboard;
pub mod db;
pub mod events;
pub mod fanout;
pub mod group;
pub mod inbound;
pub mod ingest;
pub mod invites;
pub mod jobs;
pub mod mail;
pub mod messaging;
pub mod metrics;
pub mod oidc;
pub mod recovery;
pub mod sessions;
pub mod settings;
pub mod sweep;
pub mod tenancy;
pub mod walbuf;
pub mod webhooks;

pub use ctx::TenantCtx;

/// The error every service returns; the API maps each variant to one status code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// 404: no such row for this tenant (another tenant's id included).
    #[error("not found")]
    NotFound,
    /// 400/422: input that names its field.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// 403: the member's role does not allow this (the row exists and is theirs to see).
    #[error("{0}")]
    Forbidden(String),
    /// 409: the request contradicts existing data.
    #[error("{0}")]
    Conflict(String),
    /// 500: the database failed.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// 500: the database failed (direct SQL through sqlx).
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// 500: the database failed (the inbound writer's own connection).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// 500: a stored credential cannot be decrypted.
    #[error(transparent)]
    Credential(#[from] crypto::OpenError),
    /// 503: the job queue refused a job.
    #[error("job queue: {0}")]
    Queue(String),
    /// 503: Redis (the session store, the job queues, the live bus) failed or cannot be
    /// reached.
    #[error("redis: {0}")]
    Redis(String),
    /// 503: the mail provider refused or could not be reached.
    #[error("mail: {0}")]
    Mail(String),
    /// 503: the SMS provider (Twilio) could not answer a check the request needs, or refused
    /// the stored credentials; the message says which.
    #[error("{0}")]
    Provider(String),
    /// 500: the WAL could not be synced to disk (or was not, the store having failed: see
    /// [`db::StoreHealth`]); the texts may be on disk after all (a webhook retried after the
    /// restart then finds them: a duplicate).
    #[error("database: syncing the WAL: {0}")]
    WalSync(String),
    /// 503 from the API, 500 on pages and webhooks: the database could not take a batch of
    /// work ([`ServiceError::is_database_unavailable`]); what each caller of the batch gets,
    /// with the database's message.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// 503: the inbound writer stopped (shutting down), or the store failed
    /// ([`db::StoreHealth`]) and takes no more texts.
    #[error("the inbound writer is not running")]
    WriterGone,
}

impl ServiceError {
    /// An [`ServiceError::Invalid`] for `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// True when the database could not take the work at all, rather than refusing one
    /// item of it: busy or locked past the busy timeout (another process holds SQLite's
    /// write lock), no connection in time, out of memory, read-only, an I/O error, a full
    /// disk, a lost Postgres connection. The items of a batch that failed this way are not
    /// retried one by one: each would wait out the same timeout, holding up every writer.
    pub fn is_database_unavailable(&self) -> bool {
        use sea_orm::{DbErr, RuntimeErr};
        match self {
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                sqlite_unavailable(e.extended_code)
            }
            Self::Sqlx(e) => sqlx_unavailable(e),
            Self::Db(DbErr::ConnectionAcquire(_)) => true,
            Self::Db(
                DbErr::Conn(RuntimeErr::SqlxError(e))
                | DbErr::Exec(RuntimeErr::SqlxError(e))
                | DbErr::Query(RuntimeErr::SqlxError(e)),
            ) => sqlx_unavailable(e),
            Self::Unavailable(_) => true,
            _ => false,
        }
    }
}

/// SQLite result codes (`extended` & 0xff, the primary code) of a database that could not
/// take the work: BUSY (5), LOCKED (6), NOMEM (7), READONLY (8), IOERR (10), FULL (13),
/// CANTOPEN (14).
fn sqlite_unavailable(extended: i32) -> bool {
    matches!(extended & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14)
}

/// [`ServiceError::is_database_unavailable`] for an sqlx error: the pool, the connection's
/// I/O, SQLite's codes above, or Postgres SQLSTATE classes 08 (connection exception), 53
/// (insufficient resources) and 57P (operator intervention: shutting down).
fn sqlx_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                code.parse().is_ok_and(sqlite_unavailable)
            } else {
                ["08", "53", "57P"]
                    .iter()
                    .any(|class| code.starts_with(class))
            }
        }
        _ => false,
    }
}

/// Chooses the provider that sends for an account.
#[derive(Clone)]
pub struct Providers {
    twilio: TwilioHttp,
    /// How long after an attempt started its request may still be in flight.
    in_flight: std::time::Duration,
    platform: Option<Arc<dyn SmsProvider>>,
    simulator: Arc<dyn SmsProvider>,
    /// Resend, when `RESEND_API_KEY` is set (else mail goes to the simulator mailbox).
    pub(crate) mail: Option<ResendMail>,
}

impl Providers {
    /// Providers for these settings: Twilio at `TWILIO_API_BASE`, the platform account when
    /// configured, and the simulator.
    pub fn new(settings: &Settings) -> Self {
        let timeout = std::time::Duration::from_secs(settings.twilio_timeout_secs);
        let twilio = TwilioHttp::new(settings.twilio_api_base.as_str(), timeout);
        let platform = settings.twilio.as_ref().map(|a| {
            Arc::new(twilio.account(&a.account_sid, a.auth_token.clone())) as Arc<dyn SmsProvider>
        });
        Self {
            twilio,
            in_flight: timeout + std::time::Duration::from_secs(2),
            platform,
            simulator: Arc::new(SimulatorSms),
            mail: settings
                .resend_api_key
                .clone()
                .map(|key| ResendMail::new(settings.resend_api_base.as_str(), key)),
        }
    }

    /// How long after a send attempt started its request may still be in flight (the provider
    /// timeout plus 2 s): until then another job leaves the message alone.
    pub fn in_flight(&self) -> std::time::Duration {
        self.in_flight
    }

    /// A Twilio client for one account (settings' "test connection").
    pub fn twilio(&self, account_sid: &str, auth_token: SecretString) -> TwilioSms {
        self.twilio.account(account_sid, auth_token)
    }

    /// The tenant's own account when it has one, else the platform account, else the
    /// simulator.
    pub fn for_account(&self, own: Option<(String, SecretString)>) -> Arc<dyn SmsProvider> {
        match own {
            Some((sid, token)) => Arc::new(self.twilio.account(&sid, token)),
            None => self
                .platform
                .clone()
                .unwrap_or_else(|| self.simulator.clone()),
        }
    }
}

/// The handles one process shares: settings, database, job queue, live bus, inbound writer.
///
/// | `DATABASE_URL` | `REDIS_URL` | job queue        | live bus          | sessions |
/// |----------------|-------------|------------------|-------------------|----------|
/// | sqlite         | —           | apalis-sqlite    | in-process        | table    |
/// | sqlite         | set         | apalis-redis     | Redis pub/sub     | Redis    |
/// | postgres       | set         | apalis-redis     | Redis pub/sub     | Redis    |
/// | postgres       | —           | refused at start ([`StartError::RedisRequired`]) |||
pub struct App {
    pub settings: Settings,
    pub db: db::Db,
    pub events: events::EventBus,
    pub jobs: jobs::JobQueue,
    pub ingest: ingest::Ingestor,
    /// Fails for good on a failed WAL sync or a panicked inbound writer: the process must
    /// restart (`/health` answers 503, `switchboard serve` exits; see [`db::StoreHealth`]).
    pub health: db::StoreHealth,
    pub sealer: crypto::Sealer,
    pub providers: Providers,
    /// Sign-in through `OIDC_ISSUER_URL`, when configured.
    pub oidc: Option<oidc::Oidc>,
    /// Where sign-in sessions live (the database, or Redis with `REDIS_URL`).
    pub sessions: sessions::Store,
    pub(crate) routes: tenancy::RouteCache,
    /// The demo tenant, once found ([`tenancy::demo_tenant`]; it never changes).
    pub(crate) demo: std::sync::OnceLock<switchboard_domain::TenantId>,
    /// Group commit of the send jobs' claims and acceptances.
    pub(crate) sends: messaging::SendGroups,
    /// Group commit of the inbound texts' claims (bot decisions).
    pub(crate) handles: group::Groups<inbound::Claim>,
}

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbOpenError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("REDIS_URL: is required with a Postgres DATABASE_URL")]
    RedisRequired,
}

impl From<redis::RedisError> for ServiceError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e.to_string())
    }
}

impl App {
    /// Opens (and migrates) the database, starts the inbound writer, and seeds the demo tenant
    /// on an empty database when `DEMO_SEED` is on. Workers are started separately
    /// (`switchboard-worker`).
    ///
    /// # Errors
    /// [`StartError`] naming what failed.
    pub async fn start(settings: Settings) -> Result<Arc<App>, StartError> {
        metrics::install();
        let redis = match &settings.redis_url {
            Some(url) => {
                let client = redis::Client::open(url.as_str()).map_err(ServiceError::from)?;
                let conn = client
                    .get_connection_manager()
                    .await
                    .map_err(ServiceError::from)?;
                Some((client, conn))
            }
            None => None,
        };
        let sessions = sessions::Store::open(&settings, redis.as_ref().map(|r| r.1.clone()));
        let url = settings.database_url.as_str();
        let postgres = db::is_postgres(url);
        if postgres && redis.is_none() {
            return Err(StartError::RedisRequired);
        }
        let wakers = jobs::Wakers::default();
        let hooks = wakers.clone();
        let health = db::StoreHealth::default();
        let db = if postgres {
            db::open_postgres(url, settings.database_max_connections).await?
        } else {
            db::open_sqlite(url, &wakers, &health).await?
        };
        let (jobs, events) = match redis {
            Some((client, conn)) => {
                let jobs = jobs::JobQueue::redis(conn.clone(), &settings.redis_prefix);
                let events = fanout::start(client, conn, &settings.redis_prefix, jobs.clone());
                (jobs, events)
            }
            None => (
                jobs::JobQueue::sqlite(db.write.get_sqlite_connection_pool().clone(), wakers),
                events::EventBus::new(),
            ),
        };
        let ingest = if postgres {
            let pool = db.write.get_postgres_connection_pool().clone();
            ingest::Ingestor::start_postgres(pool, events.clone(), jobs.clone(), &health)
        } else {
            ingest::Ingestor::start_sqlite(
                db::open_inbound_writer(url)?,
                db.write.get_sqlite_connection_pool().clone(),
                events.clone(),
                jobs.clone(),
                &health,
            )
        };
        let app = Arc::new(App {
            sealer: crypto::Sealer::new(&settings.secret_key),
            providers: Providers::new(&settings),
            sessions,
            oidc: settings
                .oidc
                .clone()
                .map(|o| oidc::Oidc::new(o, settings.public_url(oidc::CALLBACK_PATH))),
            settings,
            sends: messaging::SendGroups::new(&db, &hooks),
            handles: group::Groups::new(db.clone(), hooks),
            db,
            events,
            jobs,
            ingest,
            health,
            routes: tenancy::RouteCache::default(),
            demo: std::sync::OnceLock::new(),
        });
        if app.settings.demo_seed
            && let Some(demo) = tenancy::seed_demo(&app).await?
        {
            use secrecy::ExposeSecret;
            tracing::info!(
                tenant_id = %demo.tenant.tenant_id,
                api_key = demo.tenant.api_key.expose_secret(),
                email = tenancy::DEMO_EMAIL,
                password = demo.password.expose_secret(),
                "created the demo tenant {} with number {}; sign in at {} with this email and \
                 password (shown once; the API key too)",
                tenancy::DEMO_NAME,
                tenancy::DEMO_NUMBER,
                app.settings.public_url("/login"),
            );
        }
        Ok(app)
    }
}
