//! The one test harness (dev-dependency only).
//!
//! [`spawn_app`] starts the real binary's endpoint and workers on port 0, on a fresh SQLite
//! file, with Twilio's API replaced by a loopback [`MockServer`] that answers like Twilio
//! (201 with a unique MessageSid; every number asked about is held by the account) unless a
//! test mounts something else. Tenants get their own Twilio account (SID + auth token) so
//! webhooks are signed exactly as Twilio would sign them.
//!
//! With `TEST_DATABASE_URL=postgres://…` every test gets its own database, created from that
//! server (dropped when the test ends); with `TEST_REDIS_URL=redis://…` its own key prefix
//! (`sbt:{uuid}:`, whose keys are deleted when the test ends). Postgres requires Redis (the
//! job queues), so the first without the second is refused.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use secrecy::SecretString;
use switchboard_config::Settings;
use switchboard_domain::phone::E164;
use switchboard_domain::signature::twilio;
use switchboard_domain::{TenantId, UserId};
use switchboard_entity::{contact, conversation, message, session};
use switchboard_services::tenancy::{self, BotKind, NewTenant, TwilioCredentials};
use switchboard_services::{App, sessions};
use tokio::sync::oneshot;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub use wiremock;

mod browser;
pub mod idp;
pub use browser::{Browser, PASSWORD, csrf_in};

/// Path pattern of Twilio's Messages resource.
pub const MESSAGES_PATH: &str = r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages\.json$";
/// Path pattern of Twilio's IncomingPhoneNumbers list, for any account.
pub const INCOMING_NUMBERS_PATH: &str =
    r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/IncomingPhoneNumbers\.json$";

/// A tenant created for a test, with the credentials its webhooks are signed with.
#[derive(Clone, Debug)]
pub struct TestTenant {
    pub tenant_id: TenantId,
    /// The tenant's number, E.164.
    pub number: String,
    pub api_key: String,
    pub account_sid: String,
    pub auth_token: String,
}

/// A running Switchboard for one test.
pub struct TestApp {
    pub app: Arc<App>,
    /// The test's own view of the database, for setting up and checking rows: every tenant's
    /// rows. The app's connection on SQLite; on Postgres a separate pool as the
    /// `TEST_DATABASE_URL` user, which must be a superuser (as `postgres` is) because it
    /// bypasses row-level security, which the app's own connections never do.
    pub db: switchboard_entity::Db,
    /// `http://127.0.0.1:{port}`; also the app's `APP_URL`.
    pub address: String,
    /// Loopback Twilio REST API.
    pub twilio: MockServer,
    pub http: reqwest::Client,
    /// Tenant "A" (the built-in bot answers its number).
    pub tenant: TestTenant,
    shutdown: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
    _services: Services,
}

/// Seconds a test waits for the app's background work (sends, status changes) before it
/// fails. Generous: every commit is fsynced, and right after a fresh build (how a CI run
/// starts) the VM's disk is still writing the build back, which once stretched a 3 s retry
/// test past an earlier 10 s limit. A passing test waits only as long as the work takes.
pub const WAIT_SECS: u64 = 30;

/// True when `TEST_DATABASE_URL` asks for Postgres (the Postgres-only suites assert it, so a
/// run without it fails instead of passing vacuously).
pub fn postgres_requested() -> bool {
    std::env::var("TEST_DATABASE_URL").is_ok()
}

/// The per-test Postgres database and Redis prefix, removed on drop.
#[derive(Default)]
pub struct Services {
    /// (server URL to connect to for the drop, database name)
    database: Option<(String, String)>,
    /// (Redis URL, key prefix)
    redis: Option<(String, String)>,
}

impl Services {
    /// Creates what `TEST_DATABASE_URL` / `TEST_REDIS_URL` ask for; returns the settings
    /// (`DATABASE_URL`, `REDIS_URL`, `REDIS_PREFIX`) that point an app at them.
    pub async fn create() -> (Self, Vec<(String, String)>) {
        let database = std::env::var("TEST_DATABASE_URL").ok();
        let redis = std::env::var("TEST_REDIS_URL").ok();
        assert!(
            database.is_none() || redis.is_some(),
            "TEST_DATABASE_URL needs TEST_REDIS_URL (Postgres runs its jobs on Redis)"
        );
        Self::create_with(database.as_deref(), redis.as_deref()).await
    }

    /// A new database on the Postgres server `database` (a URL whose user may create
    /// databases) and a new key prefix on `redis`, each when given.
    pub async fn create_with(
        database: Option<&str>,
        redis: Option<&str>,
    ) -> (Self, Vec<(String, String)>) {
        let mut services = Self::default();
        let mut settings = Vec::new();
        if let Some(server) = database {
            use sqlx::Connection;
            let name = format!("sbt_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(server)
                .await
                .expect("Postgres: cannot connect");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create the test database");
            let mut url = url::Url::parse(server).expect("a Postgres URL");
            url.set_path(&name);
            settings.push(("DATABASE_URL".into(), url.to_string()));
            services.database = Some((server.to_string(), name));
        }
        if let Some(redis) = redis {
            let prefix = format!("sbt:{}:", uuid::Uuid::new_v4().simple());
            settings.push(("REDIS_URL".into(), redis.to_string()));
            settings.push(("REDIS_PREFIX".into(), prefix.clone()));
            services.redis = Some((redis.to_string(), prefix));
        }
        (services, settings)
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        let (database, redis) = (self.database.take(), self.redis.take());
        if database.is_none() && redis.is_none() {
            return;
        }
        // A thread with its own runtime: the test's runtime may be shutting down.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Some((server, name)) = database {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&server).await {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                }
                if let Some((url, prefix)) = redis {
                    delete_redis_prefix(&url, &prefix).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Deletes every key under `prefix` in the Redis at `url`, best effort. SCAN, not KEYS: KEYS
/// blocks Redis for every other client while it walks the whole keyspace (14-63 ms per call
/// seen in SLOWLOG while the suites ran).
pub async fn delete_redis_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let mut cursor = 0_u64;
    loop {
        let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
        else {
            return;
        };
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// Answers `POST …/Messages.json` like Twilio: 201 with a fresh `SM…` sid, status `queued`.
pub struct TwilioCreate;

impl Respond for TwilioCreate {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": format!("SM{}", uuid::Uuid::new_v4().simple()),
            "status": "queued",
        }))
    }
}

/// Answers `GET …/IncomingPhoneNumbers.json?PhoneNumber=…` as if the account held whatever
/// number is asked about (the check before a tenant adds a number).
pub struct TwilioHoldsEveryNumber;

impl Respond for TwilioHoldsEveryNumber {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let query: Vec<(String, String)> = req.url.query_pairs().into_owned().collect();
        let held: Vec<serde_json::Value> = param(&query, "PhoneNumber")
            .map(|n| serde_json::json!({ "phone_number": n }))
            .into_iter()
            .collect();
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({ "incoming_phone_numbers": held }))
    }
}

/// A Twilio Messages resource that remembers what it created: `POST` answers 201 with a new
/// `SM…` sid and records the text; `GET` lists the recorded texts with the query's `To` and
/// `From`, newest first, as Twilio's list does (for the send reconciliation). Mount it for
/// both methods on [`MESSAGES_PATH`].
#[derive(Clone, Default)]
pub struct TwilioLedger {
    /// Every created text as its form fields, in order.
    pub sent: Arc<std::sync::Mutex<Vec<Form>>>,
}

/// Form fields as received, in order.
pub type Form = Vec<(String, String)>;

impl TwilioLedger {
    /// The texts created so far.
    pub fn sent(&self) -> Vec<Form> {
        self.sent.lock().expect("ledger").clone()
    }
}

impl Respond for TwilioLedger {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut sent = self.sent.lock().expect("ledger");
        if req.method.as_str() == "POST" {
            let mut form = url_decode_form(&req.body);
            let sid = message_sid();
            form.push(("Sid".into(), sid.clone()));
            form.push(("DateCreated".into(), chrono::Utc::now().to_rfc2822()));
            sent.push(form);
            return ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": sid, "status": "queued"}));
        }
        let query: Vec<(String, String)> = req.url.query_pairs().into_owned().collect();
        let matches = |form: &[(String, String)], key: &str| param(form, key) == param(&query, key);
        let messages: Vec<serde_json::Value> = sent
            .iter()
            .rev()
            .filter(|f| matches(f, "To") && matches(f, "From"))
            .map(|f| {
                serde_json::json!({
                    "sid": param(f, "Sid"),
                    "status": "queued",
                    "body": param(f, "Body"),
                    "date_created": param(f, "DateCreated"),
                })
            })
            .collect();
        ResponseTemplate::new(200).set_body_json(serde_json::json!({ "messages": messages }))
    }
}

/// Options of [`spawn_app_with`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Seed the demo tenant (the web pages act for it).
    pub demo: bool,
    /// Do not mount the default Twilio answers (the test mounts its own): the Messages create
    /// ([`TwilioCreate`]) and the IncomingPhoneNumbers list ([`TwilioHoldsEveryNumber`]).
    pub bare_twilio: bool,
    /// Extra settings as (ENV_NAME, value).
    pub settings: Vec<(String, String)>,
    /// Serve without in-process workers (another process runs them).
    pub no_worker: bool,
}

/// [`spawn_app_with`] with default options.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

/// [`spawn_app_with`] without in-process workers: jobs wait in the queue, and the test runs
/// what it needs itself (`inbound::handle`, `messaging::deliver`, `sweep::run`).
pub async fn spawn_app_without_workers() -> TestApp {
    spawn_app_with(Options {
        no_worker: true,
        ..Options::default()
    })
    .await
}

/// Starts Switchboard for a test.
///
/// # Panics
/// When anything needed for the test cannot be set up.
pub async fn spawn_app_with(options: Options) -> TestApp {
    // `RUST_LOG=…` shows the app's logs in a failing test's output.
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let twilio = MockServer::start().await;
    if !options.bare_twilio {
        Mock::given(method("POST"))
            .and(path_regex(MESSAGES_PATH))
            .respond_with(TwilioCreate)
            .mount(&twilio)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(INCOMING_NUMBERS_PATH))
            .respond_with(TwilioHoldsEveryNumber)
            .mount(&twilio)
            .await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let db = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    let (services, service_settings) = Services::create().await;
    let mut pairs: Vec<(String, String)> = vec![
        ("APP_URL".into(), address.clone()),
        ("DATABASE_URL".into(), db),
        (
            "SECRET_KEY".into(),
            "test-secret-key-test-secret-key-0123".into(),
        ),
        ("TWILIO_API_BASE".into(), twilio.uri()),
        ("DEMO_SEED".into(), options.demo.to_string()),
        ("TWILIO_TIMEOUT_SECS".into(), "1".into()),
    ];
    pairs.extend(service_settings);
    pairs.extend(options.settings.iter().cloned());
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let settings = Settings::from_pairs(&refs).expect("test settings");
    let app = App::start(settings).await.expect("app starts");
    let db = if services.database.is_some() {
        let conn = sea_orm::Database::connect(app.settings.database_url.as_str())
            .await
            .expect("the test's own database connection");
        switchboard_entity::Db {
            read: conn.clone(),
            write: conn,
        }
    } else {
        app.db.clone()
    };

    let (tx, rx) = oneshot::channel::<()>();
    let serving = app.clone();
    let workers = !options.no_worker;
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.await;
        };
        if let Err(e) = switchboard::serve(serving, listener, workers, shutdown).await {
            eprintln!("test server stopped: {e}");
        }
    });

    let tenant = create_tenant(&app, "Acme Plumbing", "+14155550100", BotKind::Qualify).await;
    TestApp {
        app,
        db,
        address,
        twilio,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        tenant,
        shutdown: Some(tx),
        _dir: dir,
        _services: services,
    }
}

/// Creates a tenant with its own (fake) Twilio account.
///
/// # Panics
/// When the tenant cannot be created.
pub async fn create_tenant(app: &App, name: &str, number: &str, bot: BotKind) -> TestTenant {
    let account_sid = format!("AC{}", uuid::Uuid::new_v4().simple());
    let auth_token = uuid::Uuid::new_v4().simple().to_string();
    let created = tenancy::create_tenant(
        app,
        NewTenant {
            name: name.into(),
            time_zone: "America/Chicago".into(),
            number: E164::parse(number).expect("test number"),
            bot,
            twilio: Some(TwilioCredentials {
                account_sid: account_sid.clone(),
                auth_token: SecretString::from(auth_token.clone()),
            }),
        },
    )
    .await
    .expect("tenant");
    use secrecy::ExposeSecret;
    TestTenant {
        tenant_id: created.tenant_id,
        number: number.into(),
        api_key: created.api_key.expose_secret().to_string(),
        account_sid,
        auth_token,
    }
}

/// A fresh Twilio-shaped MessageSid.
pub fn message_sid() -> String {
    format!("SM{}", uuid::Uuid::new_v4().simple())
}

/// Form parameters of an inbound text from `from` to `to`, shaped like Twilio's.
pub fn inbound(account_sid: &str, from: &str, to: &str, body: &str) -> Vec<(String, String)> {
    let sid = message_sid();
    [
        ("ToCountry", "US"),
        ("SmsMessageSid", sid.as_str()),
        ("NumMedia", "0"),
        ("SmsSid", sid.as_str()),
        ("SmsStatus", "received"),
        ("Body", body),
        ("To", to),
        ("NumSegments", "1"),
        ("MessageSid", sid.as_str()),
        ("AccountSid", account_sid),
        ("From", from),
        ("ApiVersion", "2010-04-01"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The value of `name` in form parameters.
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl TestApp {
    /// Stops the server and workers.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// POSTs `params` to `path` signed with `token` as Twilio would (X-Twilio-Signature over
    /// APP_URL + path + sorted params).
    pub async fn post_signed(
        &self,
        path: &str,
        token: &str,
        params: &[(String, String)],
    ) -> reqwest::Response {
        let url = format!("{}{path}", self.address);
        let signature = twilio::compute(token, &url, params);
        self.http
            .post(&url)
            .header("X-Twilio-Signature", signature)
            .form(params)
            .send()
            .await
            .expect("request")
    }

    /// Tenant A's signed status callback for its message `message_id` (Twilio's `sid`):
    /// `MessageStatus` `status`, plus `extra` fields (e.g. `ErrorCode`).
    pub async fn status_callback(
        &self,
        message_id: switchboard_domain::MessageId,
        sid: &str,
        status: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut params = vec![
            ("MessageSid".to_string(), sid.to_string()),
            ("MessageStatus".to_string(), status.to_string()),
            ("AccountSid".to_string(), self.tenant.account_sid.clone()),
        ];
        params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.status_callback_from(message_id, &params, &self.tenant.auth_token)
            .await
    }

    /// A status callback for `message_id` with exactly `params`, signed with `token`.
    pub async fn status_callback_from(
        &self,
        message_id: switchboard_domain::MessageId,
        params: &[(String, String)],
        token: &str,
    ) -> reqwest::Response {
        let path = format!("/webhooks/twilio/status?m={message_id}");
        self.post_signed(&path, token, params).await
    }

    /// A signed inbound webhook for tenant A.
    pub async fn post_sms(&self, params: &[(String, String)]) -> reqwest::Response {
        self.post_signed("/webhooks/twilio/sms", &self.tenant.auth_token, params)
            .await
    }

    /// Tenant A receives a text from `from`.
    pub async fn text_in(&self, from: &str, body: &str) -> reqwest::Response {
        let params = inbound(&self.tenant.account_sid, from, &self.tenant.number, body);
        self.post_sms(&params).await
    }

    /// The simulator's "send" form: `from` texts the demo number (`Options::demo`).
    pub async fn simulate(&self, from: &str, body: &str) -> reqwest::Response {
        let mut browser = self.browser();
        browser.page("/simulator").await;
        browser
            .post_form(
                "/simulator/send",
                &[("to", "+15125550100"), ("from", from), ("body", body)],
            )
            .await
    }

    /// A bearer-authenticated API request.
    pub fn api(&self, method: reqwest::Method, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.address))
            .bearer_auth(key)
    }

    /// `GET /api/v1/conversations` with `key`, as JSON.
    pub async fn conversations(&self, key: &str) -> serde_json::Value {
        self.api(reqwest::Method::GET, "/conversations", key)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }

    /// Tenant A's contact with this phone.
    ///
    /// # Panics
    /// When there is none.
    pub async fn contact(&self, phone: &str) -> contact::Model {
        contact::Entity::find()
            .filter(contact::Column::TenantId.eq(self.tenant.tenant_id))
            .filter(contact::Column::Phone.eq(phone))
            .one(&self.db.read)
            .await
            .expect("query")
            .expect("contact")
    }

    /// The form bodies of every Messages create call the mock Twilio received, in order.
    pub async fn twilio_sends(&self) -> Vec<Vec<(String, String)>> {
        self.twilio
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/Messages.json"))
            .map(|r| url_decode_form(&r.body))
            .collect()
    }

    /// Waits until `twilio_sends()` has at least `n` entries (at most [`WAIT_SECS`]) and returns
    /// them.
    ///
    /// # Panics
    /// On timeout.
    pub async fn wait_for_sends(&self, n: usize) -> Vec<Vec<(String, String)>> {
        self.wait_for_sends_within(n, Duration::from_secs(WAIT_SECS))
            .await
    }

    /// [`Self::wait_for_sends`], waiting at most `limit`.
    ///
    /// # Panics
    /// On timeout.
    pub async fn wait_for_sends_within(
        &self,
        n: usize,
        limit: Duration,
    ) -> Vec<Vec<(String, String)>> {
        let deadline = Instant::now() + limit;
        loop {
            let sends = self.twilio_sends().await;
            if sends.len() >= n {
                return sends;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} sends to Twilio, got {}: {sends:?}",
                sends.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rows of each table for `tenant` (messages, contacts, conversations).
    pub async fn counts(&self, tenant: TenantId) -> (u64, u64, u64) {
        let db = &self.db.read;
        (
            message::Entity::find()
                .filter(message::Column::TenantId.eq(tenant))
                .count(db)
                .await
                .expect("count"),
            contact::Entity::find()
                .filter(contact::Column::TenantId.eq(tenant))
                .count(db)
                .await
                .expect("count"),
            conversation::Entity::find()
                .filter(conversation::Column::TenantId.eq(tenant))
                .count(db)
                .await
                .expect("count"),
        )
    }

    /// Every message of `tenant`, oldest first.
    pub async fn messages(&self, tenant: TenantId) -> Vec<message::Model> {
        use sea_orm::QueryOrder;
        message::Entity::find()
            .filter(message::Column::TenantId.eq(tenant))
            .order_by_asc(message::Column::Id)
            .all(&self.db.read)
            .await
            .expect("messages")
    }

    /// One message row, by id (any tenant's).
    ///
    /// # Panics
    /// When there is no such message.
    pub async fn message(&self, id: switchboard_domain::MessageId) -> message::Model {
        message::Entity::find_by_id(id)
            .one(&self.db.read)
            .await
            .expect("message")
            .expect("the message exists")
    }

    /// Waits until `check` holds for the tenant's messages (at most [`WAIT_SECS`]); returns them.
    ///
    /// # Panics
    /// On timeout, showing the messages.
    pub async fn wait_messages(
        &self,
        tenant: TenantId,
        check: impl Fn(&[message::Model]) -> bool,
    ) -> Vec<message::Model> {
        let deadline = Instant::now() + Duration::from_secs(WAIT_SECS);
        loop {
            let rows = self.messages(tenant).await;
            if check(&rows) {
                return rows;
            }
            if Instant::now() > deadline {
                let brief: Vec<_> = rows
                    .iter()
                    .map(|m| {
                        (
                            m.direction,
                            m.source,
                            m.status,
                            m.body.clone(),
                            m.error_code,
                        )
                    })
                    .collect();
                panic!("condition on messages not met within {WAIT_SECS} s: {brief:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn url_decode_form(body: &[u8]) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The repository's fixtures directory (`testkit/fixtures`).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A Twilio webhook sample from `testkit/fixtures/twilio/{name}.json` as form parameters.
///
/// # Panics
/// When the file is missing or not a flat JSON object of strings.
pub fn twilio_fixture(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fixtures_dir().join("twilio").join(format!("{name}.json")))
        .expect("fixture");
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).expect("fixture json");
    map.into_iter()
        .map(|(k, v)| (k, v.as_str().expect("string values").to_string()))
        .collect()
}

/// Replaces (or adds) `name` in form parameters.
pub fn set(params: &mut Vec<(String, String)>, name: &str, value: &str) {
    match params.iter_mut().find(|(k, _)| k == name) {
        Some((_, v)) => *v = value.to_string(),
        None => params.push((name.to_string(), value.to_string())),
    }
}

/// Which time of a stored session [`TestApp::age_sessions`] moves.
#[derive(Clone, Copy, Debug)]
pub enum SessionTime {
    /// The last request (idle timeout).
    LastSeen,
    /// The absolute end.
    Expires,
}

impl TestApp {
    /// Every stored sign-in session as (storage key, record), from the table or from Redis,
    /// whichever the app uses.
    pub async fn stored_sessions(&self) -> Vec<(String, sessions::Record)> {
        match &self.app.sessions {
            sessions::Store::Db => session::Entity::find()
                .all(&self.db.read)
                .await
                .expect("sessions")
                .into_iter()
                .map(|s| {
                    let record = sessions::Record {
                        user_id: s.user_id,
                        tenant_id: s.tenant_id,
                        created_at: s.created_at,
                        last_seen_at: s.last_seen_at,
                        expires_at: s.expires_at,
                    };
                    (s.id_hash, record)
                })
                .collect(),
            sessions::Store::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}session:*"))
                    .query_async(&mut conn)
                    .await
                    .expect("session keys");
                let mut out = Vec::new();
                for key in keys {
                    let json: Option<String> = redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .expect("session");
                    if let Some(json) = json {
                        out.push((key, serde_json::from_str(&json).expect("a session record")));
                    }
                }
                out
            }
        }
    }

    /// The stored sessions of `user`.
    pub async fn sessions_of(&self, user: UserId) -> Vec<sessions::Record> {
        self.stored_sessions()
            .await
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r.user_id == user)
            .collect()
    }

    /// Moves `which` time of every session of `user` to `by` before now.
    pub async fn age_sessions(&self, user: UserId, which: SessionTime, by: chrono::Duration) {
        let at = chrono::Utc::now() - by;
        for (key, mut record) in self.stored_sessions().await {
            if record.user_id != user {
                continue;
            }
            match which {
                SessionTime::LastSeen => record.last_seen_at = at,
                SessionTime::Expires => record.expires_at = at,
            }
            match &self.app.sessions {
                sessions::Store::Db => {
                    use sea_orm::ActiveValue::Set;
                    session::Entity::update(session::ActiveModel {
                        id_hash: Set(key),
                        last_seen_at: Set(record.last_seen_at),
                        expires_at: Set(record.expires_at),
                        ..Default::default()
                    })
                    .exec(&self.db.write)
                    .await
                    .expect("age a session");
                }
                sessions::Store::Redis { conn, .. } => {
                    let _: () = redis::cmd("SET")
                        .arg(&key)
                        .arg(serde_json::to_string(&record).expect("a record serializes"))
                        .arg("KEEPTTL")
                        .query_async(&mut conn.clone())
                        .await
                        .expect("age a session");
                }
            }
        }
    }
}
