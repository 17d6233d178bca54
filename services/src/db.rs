//! Connecting to the database.
//!
//! SQLite (the embedded default): one file in WAL mode with `synchronous = NORMAL` (a commit
//! survives a crash of the process; only an OS crash or power loss can lose the last
//! transactions), `busy_timeout` so writers queue instead of failing, foreign keys on. Two
//! pools share the file: a general one for reads and short writes, and a single connection
//! for the inbound group-commit writer, so webhooks never wait behind page queries.

use std::str::FromStr;
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::jobs::Notifier;

/// Connections of the general SQLite pool. Reads run concurrently under WAL; writes serialize.
pub const SQLITE_POOL_SIZE: u32 = 8;
/// How long a writer waits for SQLite's write lock before giving up, in seconds.
pub const SQLITE_BUSY_TIMEOUT_SECS: u64 = 10;

/// The database handles the services use.
#[derive(Clone, Debug)]
pub struct Database {
    /// sea-orm over the general pool.
    pub orm: DatabaseConnection,
    /// The single connection of the inbound writer.
    pub writer: SqlitePool,
}

/// Errors while opening the database.
#[derive(Debug, thiserror::Error)]
pub enum DbOpenError {
    #[error("DATABASE_URL: {0}")]
    Url(String),
    #[error("DATABASE_URL: cannot create the database directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] DbErr),
    #[error("DATABASE_URL: Postgres is not supported yet by this build; use sqlite://")]
    Unsupported,
}

fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, DbOpenError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| DbOpenError::Url(e.to_string()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(SQLITE_BUSY_TIMEOUT_SECS))
        .foreign_keys(true)
        .pragma("temp_store", "memory")
        .pragma("cache_size", "-16000")
        .statement_cache_capacity(256);
    if let Some(dir) = options.get_filename().parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| DbOpenError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(options)
}

/// Opens the database at `url` and applies pending migrations. `notifier` gets its hooks on
/// every connection, so committing a job wakes the workers.
///
/// # Errors
/// [`DbOpenError`] naming what failed.
pub async fn open(url: &str, notifier: &Notifier) -> Result<Database, DbOpenError> {
    if !url.starts_with("sqlite:") {
        return Err(DbOpenError::Unsupported);
    }
    let options = sqlite_options(url)?;
    let pool = |size: u32| {
        let notifier = notifier.clone();
        SqlitePoolOptions::new()
            .max_connections(size)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_connect(move |conn, _| {
                let notifier = notifier.clone();
                Box::pin(async move { notifier.install(conn).await })
            })
    };
    let general = pool(SQLITE_POOL_SIZE).connect_with(options.clone()).await?;
    let writer = pool(1).connect_with(options).await?;
    let orm = DatabaseConnection::from(general);
    switchboard_migration::run(&orm).await?;
    Ok(Database { orm, writer })
}
