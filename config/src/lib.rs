//! Switchboard's settings, loaded once at start-up.
//!
//! Layers, later ones win: built-in defaults -> `switchboard.toml` in the working directory
//! (optional) -> environment variables. Every key is the lower-case name of its environment
//! variable (`APP_URL` is `app_url` in the TOML file). Nothing outside this crate reads the
//! environment.
//!
//! Secrets are [`SecretString`]s: they never appear in `Debug` output or logs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

/// Sends in flight per process when `WORKER_CONCURRENCY_SEND` is unset. Measured against a
/// zero-latency mock on 2 cores with Postgres + Redis (docs/BENCHMARKS.md): 8 gave ~1,250
/// sends/s, 32 1,860-2,260, 64 no more.
pub const DEFAULT_SEND_CONCURRENCY: usize = 32;

/// Environment variables Switchboard reads (all optional for the embedded default).
pub const ENV_VARS: &[&str] = &[
    "BIND",
    "APP_URL",
    "DATABASE_URL",
    "SECRET_KEY",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_API_BASE",
    "TWILIO_TIMEOUT_SECS",
    "RUST_LOG",
    "LOG_FORMAT",
    "DEMO_SEED",
    "WORKER_CONCURRENCY",
    "WORKER_CONCURRENCY_INBOUND",
    "WORKER_CONCURRENCY_SEND",
    "DATABASE_MAX_CONNECTIONS",
    "OIDC_ISSUER_URL",
    "OIDC_CLIENT_ID",
    "OIDC_CLIENT_SECRET",
    "REDIS_URL",
    "REDIS_PREFIX",
    "RESEND_API_KEY",
    "RESEND_API_BASE",
    "MAIL_FROM",
    "CLIENT_IP_HEADER",
];

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line (`LOG_FORMAT=json`).
    Json,
}

/// Raw settings as read from the layers; turned into [`Settings`] by [`Settings::load`].
#[derive(Debug, Serialize, Deserialize)]
struct Raw {
    bind: String,
    app_url: Option<String>,
    database_url: String,
    secret_key: Option<String>,
    twilio_account_sid: Option<String>,
    twilio_auth_token: Option<String>,
    twilio_api_base: String,
    twilio_timeout_secs: u64,
    rust_log: String,
    log_format: LogFormat,
    demo_seed: Option<bool>,
    worker_concurrency: usize,
    worker_concurrency_inbound: Option<usize>,
    worker_concurrency_send: Option<usize>,
    database_max_connections: u32,
    oidc_issuer_url: Option<String>,
    oidc_client_id: Option<String>,
    oidc_client_secret: Option<String>,
    resend_api_key: Option<String>,
    resend_api_base: String,
    mail_from: Option<String>,
    redis_url: Option<String>,
    redis_prefix: String,
    client_ip_header: Option<String>,
}

impl Default for Raw {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:3000".into(),
            app_url: None,
            database_url: "sqlite://./data/switchboard.db".into(),
            secret_key: None,
            twilio_account_sid: None,
            twilio_auth_token: None,
            twilio_api_base: "https://api.twilio.com".into(),
            twilio_timeout_secs: 10,
            rust_log: "info,sqlx=warn,sea_orm=warn,apalis=warn,apalis_core=warn,poem::middleware::tracing_mw=warn".into(),
            log_format: LogFormat::Text,
            demo_seed: None,
            worker_concurrency: 8,
            worker_concurrency_inbound: None,
            worker_concurrency_send: None,
            database_max_connections: 16,
            oidc_issuer_url: None,
            oidc_client_id: None,
            oidc_client_secret: None,
            resend_api_key: None,
            resend_api_base: "https://api.resend.com".into(),
            mail_from: None,
            redis_url: None,
            redis_prefix: "sb:".into(),
            client_ip_header: None,
        }
    }
}

/// The platform's own Twilio account (`TWILIO_ACCOUNT_SID` + `TWILIO_AUTH_TOKEN`). Used for
/// tenants that did not bring their own account, and to check signatures for their numbers.
#[derive(Clone, Debug)]
pub struct TwilioAccount {
    /// `AC` followed by 32 hex characters.
    pub account_sid: String,
    /// The account's auth token: signs webhooks (HMAC-SHA1) and authenticates API calls.
    pub auth_token: SecretString,
}

/// Sign-in through an OpenID Connect provider (`OIDC_ISSUER_URL`, `OIDC_CLIENT_ID`,
/// `OIDC_CLIENT_SECRET`, all three together). The provider must allow the redirect URI
/// `{APP_URL}/auth/oidc/callback`.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// Exactly as the provider publishes it in its discovery document (`issuer`), trailing
    /// slash included or not: it is compared as a string.
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

/// Validated settings. Built once by [`Settings::load`] and passed down by reference.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `BIND`: the socket the HTTP server listens on (default `127.0.0.1:3000`).
    pub bind: SocketAddr,
    /// `APP_URL`: the public base URL, without a trailing slash (default `http://{BIND}`).
    /// Webhook URLs given to Twilio and Twilio signature checks are built from it.
    pub app_url: Url,
    /// `DATABASE_URL`: `sqlite://path` (default `sqlite://./data/switchboard.db`) or
    /// `postgres://…`.
    pub database_url: String,
    /// `SECRET_KEY`: at least 32 characters. Derives the key that encrypts stored credentials.
    /// On SQLite, when unset, a random key is generated once and kept next to the database.
    pub secret_key: SecretString,
    /// The platform Twilio account, when both `TWILIO_ACCOUNT_SID` and `TWILIO_AUTH_TOKEN` are
    /// set. Without it (and without a tenant's own account) texts go to the simulator.
    pub twilio: Option<TwilioAccount>,
    /// `TWILIO_API_BASE`: base URL of Twilio's REST API (default `https://api.twilio.com`);
    /// point it at a mock or Prism in tests.
    pub twilio_api_base: Url,
    /// `TWILIO_TIMEOUT_SECS`: seconds allowed for one Twilio API call (default 10, 1 to 60).
    /// Past it the outcome of a send is unknown and is checked with Twilio before any resend.
    pub twilio_timeout_secs: u64,
    /// `RUST_LOG`: a tracing filter directive.
    pub rust_log: String,
    /// `LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// `DEMO_SEED`: create the demo tenant on first start with an empty database (default: on
    /// for SQLite, off for Postgres).
    pub demo_seed: bool,
    /// `WORKER_CONCURRENCY`: jobs run at once per queue by an in-process or `worker` process
    /// (default 8), unless the queue's own setting below says otherwise.
    pub worker_concurrency: usize,
    /// `WORKER_CONCURRENCY_INBOUND`: inbound texts (bot decisions) handled at once per process
    /// (default `WORKER_CONCURRENCY`).
    pub worker_concurrency_inbound: usize,
    /// `WORKER_CONCURRENCY_SEND`: provider sends in flight at once per process (default
    /// [`DEFAULT_SEND_CONCURRENCY`], whatever `WORKER_CONCURRENCY` says). A send mostly waits
    /// for the provider's answer (Twilio's create call takes 100-300 ms), so this is the knob
    /// for send throughput against the real API; the database writes of concurrent sends share
    /// transactions (group commit), so more in flight means fewer round trips per send. Twilio
    /// queues what exceeds a number's MPS on its side.
    pub worker_concurrency_send: usize,
    /// `DATABASE_MAX_CONNECTIONS`: Postgres connections per process (default 16, 1 to 1000).
    /// SQLite ignores it (one writer and a fixed set of readers).
    pub database_max_connections: u32,
    /// OIDC sign-in, when configured; without it the sign-in page shows no provider button.
    pub oidc: Option<OidcSettings>,
    /// `RESEND_API_KEY`: mail (invites, verification, password reset) goes through Resend;
    /// without it, into the simulator mailbox at `/simulator/mail`.
    pub resend_api_key: Option<SecretString>,
    /// `RESEND_API_BASE`: Resend's API (default `https://api.resend.com`; a mock in tests).
    pub resend_api_base: Url,
    /// `MAIL_FROM`: the sender of our mail (default `Switchboard <noreply@{APP_URL host}>`).
    pub mail_from: String,
    /// `REDIS_URL` (`redis://…` or `rediss://…`): every job queue is apalis-redis, live
    /// updates fan out through Redis pub/sub to every instance, and sign-in sessions live in
    /// Redis instead of the database table. Required with Postgres: several processes share
    /// the work only through it.
    pub redis_url: Option<String>,
    /// `REDIS_PREFIX`: prepended to every key Switchboard writes (default `sb:`), so several
    /// deployments or test runs can share one Redis.
    pub redis_prefix: String,
    /// `CLIENT_IP_HEADER`: the header a reverse proxy in front of Switchboard puts the
    /// client's IP address in (`Fly-Client-IP` on Fly.io; its first address when it lists
    /// several), lower-cased. Unset (the default): the connection's peer address. The
    /// per-address limits (sign-in attempts, refused webhooks) count by it: behind a proxy
    /// every peer address is the proxy's, so without it all clients share one limit. Set it
    /// only behind a proxy that overwrites the header: a client could send any value.
    pub client_ip_header: Option<String>,
}

/// A setting that could not be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read (bad TOML, wrong type in an env var).
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is present but unusable.
    #[error("{var}: {reason}")]
    Invalid {
        /// The environment variable (or TOML key in upper case).
        var: &'static str,
        /// What is wrong, and what is expected.
        reason: String,
    },
    /// The generated secret key file could not be read or written.
    #[error("SECRET_KEY: not set, and the key file {path} could not be used: {source}")]
    KeyFile {
        /// The key file's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

impl Settings {
    /// Loads defaults, `./switchboard.toml` (if present) and the environment, then validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first variable that is missing or malformed.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_figment(
            Figment::from(Serialized::defaults(Raw::default()))
                .merge(Toml::file("switchboard.toml"))
                .merge(Env::raw().only(ENV_VARS)),
        )
    }

    /// Settings for tests and tools: defaults overridden by `pairs` of (ENV_NAME, value); the
    /// process environment is not read.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Raw::default()));
        for (k, v) in pairs {
            let key = k.to_ascii_lowercase();
            figment = figment.merge(figment::providers::Serialized::default(
                &key,
                parse_scalar(v),
            ));
        }
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let raw: Raw = figment.extract().map_err(Box::new)?;
        raw.validate()
    }

    /// The public URL of `path` (which starts with `/`), e.g. the Twilio status callback.
    pub fn public_url(&self, path: &str) -> String {
        let base = self.app_url.as_str().trim_end_matches('/');
        format!("{base}{path}")
    }
}

/// Env values arrive as strings; give figment the same typed value `Env` would.
fn parse_scalar(v: &str) -> figment::value::Value {
    use figment::value::Value;
    if let Ok(b) = v.parse::<bool>() {
        return Value::from(b);
    }
    if let Ok(n) = v.parse::<u64>() {
        return Value::from(n);
    }
    Value::from(v.to_string())
}

impl Raw {
    fn validate(self) -> Result<Settings, ConfigError> {
        let bind: SocketAddr = self.bind.parse().map_err(|_| {
            invalid(
                "BIND",
                format!(
                    "expected host:port such as 127.0.0.1:3000, got {:?}",
                    self.bind
                ),
            )
        })?;

        let app_url_text = self.app_url.unwrap_or_else(|| format!("http://{bind}"));
        let app_url = Url::parse(&app_url_text)
            .map_err(|e| invalid("APP_URL", format!("{e} in {app_url_text:?}")))?;
        if !matches!(app_url.scheme(), "http" | "https") || app_url.host_str().is_none() {
            return Err(invalid(
                "APP_URL",
                "must be an absolute http(s) URL such as https://sb.example.com",
            ));
        }
        if app_url.query().is_some() || app_url.fragment().is_some() {
            return Err(invalid("APP_URL", "must not have a query or fragment"));
        }

        let is_sqlite = self.database_url.starts_with("sqlite:");
        if !is_sqlite
            && !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return Err(invalid(
                "DATABASE_URL",
                "must start with sqlite:// or postgres://",
            ));
        }

        let twilio = match (self.twilio_account_sid, self.twilio_auth_token) {
            (None, None) => None,
            (Some(sid), Some(token)) => {
                if !switchboard_domain::signature::twilio::is_account_sid(&sid) {
                    return Err(invalid(
                        "TWILIO_ACCOUNT_SID",
                        "must be AC followed by 32 hex characters",
                    ));
                }
                // Webhooks are verified with it: an empty or short token would be a key
                // anyone can sign with; a stray newline would make every signature fail.
                let token = token.trim();
                if !switchboard_domain::signature::twilio::is_auth_token(token) {
                    return Err(invalid(
                        "TWILIO_AUTH_TOKEN",
                        "must be the 32-character auth token from Twilio Console",
                    ));
                }
                Some(TwilioAccount {
                    account_sid: sid,
                    auth_token: token.to_string().into(),
                })
            }
            (Some(_), None) => {
                return Err(invalid(
                    "TWILIO_AUTH_TOKEN",
                    "must be set together with TWILIO_ACCOUNT_SID",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "TWILIO_ACCOUNT_SID",
                    "must be set together with TWILIO_AUTH_TOKEN",
                ));
            }
        };

        let oidc = match (
            self.oidc_issuer_url,
            self.oidc_client_id,
            self.oidc_client_secret,
        ) {
            (None, None, None) => None,
            (Some(issuer_url), Some(client_id), Some(client_secret)) => {
                let parsed = Url::parse(&issuer_url)
                    .map_err(|e| invalid("OIDC_ISSUER_URL", format!("{e} in {issuer_url:?}")))?;
                if !matches!(parsed.scheme(), "https" | "http") {
                    return Err(invalid("OIDC_ISSUER_URL", "must be an http(s) URL"));
                }
                Some(OidcSettings {
                    issuer_url,
                    client_id,
                    client_secret: client_secret.into(),
                })
            }
            (issuer, id, _) => {
                let missing = if issuer.is_none() {
                    "OIDC_ISSUER_URL"
                } else if id.is_none() {
                    "OIDC_CLIENT_ID"
                } else {
                    "OIDC_CLIENT_SECRET"
                };
                return Err(invalid(
                    missing,
                    "OIDC_ISSUER_URL, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET must be set together",
                ));
            }
        };

        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(invalid(
                "REDIS_URL",
                "must start with redis:// or rediss://",
            ));
        }
        let client_ip_header = match self.client_ip_header.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
                Some(name.to_ascii_lowercase())
            }
            Some(name) => {
                return Err(invalid(
                    "CLIENT_IP_HEADER",
                    format!("{name:?} is not a header name (letters, digits and '-')"),
                ));
            }
        };
        let mail_from = self.mail_from.unwrap_or_else(|| {
            format!(
                "Switchboard <noreply@{}>",
                app_url.host_str().unwrap_or("localhost")
            )
        });
        let resend_api_base = Url::parse(&self.resend_api_base).map_err(|e| {
            invalid(
                "RESEND_API_BASE",
                format!("{e} in {:?}", self.resend_api_base),
            )
        })?;
        let resend_api_key = match self.resend_api_key {
            Some(k) if k.trim().is_empty() => {
                return Err(invalid("RESEND_API_KEY", "must not be empty when set"));
            }
            k => k.map(SecretString::from),
        };

        let twilio_api_base = Url::parse(&self.twilio_api_base).map_err(|e| {
            invalid(
                "TWILIO_API_BASE",
                format!("{e} in {:?}", self.twilio_api_base),
            )
        })?;

        if !(1..=60).contains(&self.twilio_timeout_secs) {
            return Err(invalid("TWILIO_TIMEOUT_SECS", "must be between 1 and 60"));
        }
        let concurrency = |var: &'static str, n: usize| {
            if n == 0 || n > 1024 {
                Err(invalid(var, "must be between 1 and 1024"))
            } else {
                Ok(n)
            }
        };
        let worker_concurrency = concurrency("WORKER_CONCURRENCY", self.worker_concurrency)?;
        let worker_concurrency_inbound = concurrency(
            "WORKER_CONCURRENCY_INBOUND",
            self.worker_concurrency_inbound
                .unwrap_or(worker_concurrency),
        )?;
        let worker_concurrency_send = concurrency(
            "WORKER_CONCURRENCY_SEND",
            self.worker_concurrency_send
                .unwrap_or(DEFAULT_SEND_CONCURRENCY),
        )?;
        if !(1..=1000).contains(&self.database_max_connections) {
            return Err(invalid(
                "DATABASE_MAX_CONNECTIONS",
                "must be between 1 and 1000",
            ));
        }
        if !is_sqlite && self.redis_url.is_none() {
            return Err(invalid(
                "REDIS_URL",
                "is required with a Postgres DATABASE_URL: the job queues and live updates \
                 that several processes share go through Redis (redis://host:6379)",
            ));
        }

        let secret_key = match self.secret_key {
            Some(k) if k.len() >= 32 => SecretString::from(k),
            Some(_) => return Err(invalid("SECRET_KEY", "must be at least 32 characters")),
            None if is_sqlite => {
                load_or_create_key_file(&sqlite_dir(&self.database_url).join("secret.key"))?
            }
            None => {
                return Err(invalid(
                    "SECRET_KEY",
                    "is required with a Postgres DATABASE_URL (at least 32 random characters)",
                ));
            }
        };

        Ok(Settings {
            bind,
            app_url,
            database_url: self.database_url,
            secret_key,
            twilio,
            twilio_api_base,
            twilio_timeout_secs: self.twilio_timeout_secs,
            rust_log: self.rust_log,
            log_format: self.log_format,
            demo_seed: self.demo_seed.unwrap_or(is_sqlite),
            worker_concurrency,
            worker_concurrency_inbound,
            worker_concurrency_send,
            database_max_connections: self.database_max_connections,
            oidc,
            resend_api_key,
            resend_api_base,
            mail_from,
            redis_url: self.redis_url,
            redis_prefix: self.redis_prefix,
            client_ip_header,
        })
    }
}

/// The directory that holds a SQLite database file (`.` for in-memory databases).
fn sqlite_dir(database_url: &str) -> PathBuf {
    let path = database_url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return PathBuf::from(".");
    }
    Path::new(path)
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Reads the generated key, or creates it (64 hex chars from the OS RNG, mode 0600). Created
/// with `create_new`, so two processes starting on a fresh directory agree on one key; a file
/// that is not a usable key is an error, never silently replaced (it would orphan every stored
/// credential).
fn load_or_create_key_file(path: &Path) -> Result<SecretString, ConfigError> {
    let err = |source| ConfigError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    let read = |path: &Path| -> Result<SecretString, ConfigError> {
        let key = std::fs::read_to_string(path).map_err(err)?;
        if key.trim().len() < 32 {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "shorter than 32 characters",
            )));
        }
        Ok(SecretString::from(key.trim().to_string()))
    };
    if path.exists() {
        return read(path);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let key = hex::encode(rand::random::<[u8; 32]>());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    match options.open(path) {
        Ok(mut f) => {
            f.write_all(key.as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
            Ok(SecretString::from(key))
        }
        // Another process created it first: use its key.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn with_key(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = vec![("SECRET_KEY", "0123456789abcdef0123456789abcdef")];
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let s = Settings::from_pairs(&with_key(&[])).unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:3000");
        assert_eq!(
            s.public_url("/webhooks/twilio/status"),
            "http://127.0.0.1:3000/webhooks/twilio/status"
        );
        assert!(s.database_url.starts_with("sqlite:"));
        assert!(s.demo_seed);
        assert!(s.twilio.is_none());
    }

    #[test]
    fn errors_name_the_variable() {
        let e = Settings::from_pairs(&with_key(&[("APP_URL", "ftp://x")])).unwrap_err();
        assert!(e.to_string().starts_with("APP_URL:"), "{e}");
        let e = Settings::from_pairs(&with_key(&[(
            "TWILIO_ACCOUNT_SID",
            "AC00000000000000000000000000000000",
        )]))
        .unwrap_err();
        assert!(e.to_string().starts_with("TWILIO_AUTH_TOKEN:"), "{e}");
        let e = Settings::from_pairs(&with_key(&[
            ("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000"),
            ("TWILIO_AUTH_TOKEN", "short"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("TWILIO_AUTH_TOKEN:"), "{e}");
        let e = Settings::from_pairs(&with_key(&[
            ("TWILIO_ACCOUNT_SID", "XY1"),
            ("TWILIO_AUTH_TOKEN", "t"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("TWILIO_ACCOUNT_SID:"), "{e}");
        let e = Settings::from_pairs(&[
            ("DATABASE_URL", "postgres://localhost/x"),
            ("REDIS_URL", "redis://localhost"),
        ])
        .unwrap_err();
        assert!(e.to_string().starts_with("SECRET_KEY:"), "{e}");
        let e = Settings::from_pairs(&with_key(&[("DATABASE_URL", "postgres://localhost/x")]))
            .unwrap_err();
        assert!(e.to_string().starts_with("REDIS_URL: is required"), "{e}");
        let e = Settings::from_pairs(&with_key(&[("WORKER_CONCURRENCY_SEND", "0")])).unwrap_err();
        assert!(e.to_string().starts_with("WORKER_CONCURRENCY_SEND:"), "{e}");
        let e = Settings::from_pairs(&with_key(&[("BIND", "nope")])).unwrap_err();
        assert!(e.to_string().starts_with("BIND:"), "{e}");
        let e = Settings::from_pairs(&with_key(&[
            ("OIDC_ISSUER_URL", "https://id.example.com"),
            ("OIDC_CLIENT_ID", "sb"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("OIDC_CLIENT_SECRET:"), "{e}");
        let e = Settings::from_pairs(&with_key(&[
            ("OIDC_ISSUER_URL", "not a url"),
            ("OIDC_CLIENT_ID", "sb"),
            ("OIDC_CLIENT_SECRET", "s"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("OIDC_ISSUER_URL:"), "{e}");
        let e =
            Settings::from_pairs(&with_key(&[("CLIENT_IP_HEADER", "Fly Client IP")])).unwrap_err();
        assert!(e.to_string().starts_with("CLIENT_IP_HEADER:"), "{e}");
        let s = Settings::from_pairs(&with_key(&[("CLIENT_IP_HEADER", "Fly-Client-IP")])).unwrap();
        assert_eq!(s.client_ip_header.as_deref(), Some("fly-client-ip"));
    }

    #[test]
    fn app_url_without_trailing_slash_joins_paths() {
        let s = Settings::from_pairs(&with_key(&[("APP_URL", "https://sb.example.com")])).unwrap();
        assert_eq!(
            s.public_url("/webhooks/twilio/sms"),
            "https://sb.example.com/webhooks/twilio/sms"
        );
    }

    #[test]
    fn generated_key_is_kept_next_to_the_database() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
        let url = format!("sqlite://{}/x.db", dir.display());
        let a = Settings::from_pairs(&[("DATABASE_URL", &url)]).unwrap();
        let b = Settings::from_pairs(&[("DATABASE_URL", &url)]).unwrap();
        assert_eq!(a.secret_key.expose_secret(), b.secret_key.expose_secret());
        assert_eq!(a.secret_key.expose_secret().len(), 64);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
