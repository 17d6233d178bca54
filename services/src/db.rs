//! Connecting to the database.
//!
//! SQLite (the embedded default): one file in WAL mode with `synchronous = NORMAL` (a commit
//! survives a crash of the process; only an OS crash or power loss can lose the last
//! transactions), foreign keys on. Every write goes through ONE connection: the inbound
//! writer, tenant write transactions and the job queue queue for it in-process (FIFO), so no
//! transaction ever waits in SQLite's busy handler. Reads use a pool of read-only connections.

use std::str::FromStr;
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
pub use switchboard_entity::Db;

use crate::jobs::Notifier;

/// Read-only connections. Reads run concurrently under WAL.
pub const SQLITE_READERS: u32 = 8;
/// Seconds between background WAL checkpoints: a separate connection copies the WAL back into
/// the database file with `PRAGMA wal_checkpoint(PASSIVE)`, which never blocks the writer or
/// readers. Under continuous writes that alone never lets the WAL restart (measured: 270,000
/// frames in seconds, each batch slower than the last), so the write connection still
/// checkpoints itself, but only every [`WAL_AUTOCHECKPOINT_PAGES`].
pub const CHECKPOINT_INTERVAL_SECS: u64 = 1;

/// WAL pages (4 KiB) after which the write connection checkpoints inside a commit and the
/// WAL restarts. SQLite's default (1000) put a checkpoint and its fsync in the commit path many
/// times a second at full load (ingest: 7.7k req/s; with 40000: 10.3-10.9k req/s). The WAL
/// file is truncated back to [`WAL_SIZE_LIMIT_BYTES`] after a restart.
pub const WAL_AUTOCHECKPOINT_PAGES: &str = "40000";

/// `journal_size_limit`: bytes the WAL file keeps after a restart (64 MiB).
pub const WAL_SIZE_LIMIT_BYTES: &str = "67108864";
/// How long a connection waits for SQLite's lock before giving up, in seconds (only other
/// processes, e.g. a `switchboard migrate`, can hold it: in-process writers queue for the one
/// write connection instead).
pub const SQLITE_BUSY_TIMEOUT_SECS: u64 = 10;

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
    #[error(
        "DATABASE_URL: an in-memory SQLite database cannot be shared by the connections; use a file"
    )]
    InMemory,
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
        .pragma("cache_size", "-65536")
        .pragma("mmap_size", "268435456")
        .pragma("journal_size_limit", WAL_SIZE_LIMIT_BYTES)
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
/// the write connection, so committing a job wakes the workers.
///
/// # Errors
/// [`DbOpenError`] naming what failed.
pub async fn open(url: &str, notifier: &Notifier) -> Result<Db, DbOpenError> {
    if !url.starts_with("sqlite:") {
        return Err(DbOpenError::Unsupported);
    }
    let options = sqlite_options(url)?;
    if options.get_filename().as_os_str() == ":memory:" || url.contains("mode=memory") {
        return Err(DbOpenError::InMemory);
    }
    let hooks = notifier.clone();
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(60))
        .idle_timeout(None)
        .max_lifetime(None)
        .after_connect(move |conn, _| {
            let hooks = hooks.clone();
            Box::pin(async move { hooks.install(conn).await })
        })
        .connect_with(
            options
                .clone()
                .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES),
        )
        .await?;
    let write = DatabaseConnection::from(writer);
    switchboard_migration::run(&write).await?;
    spawn_checkpointer(options.clone()).await?;
    let readers = SqlitePoolOptions::new()
        .max_connections(SQLITE_READERS)
        .min_connections(1)
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options.read_only(true))
        .await?;
    Ok(Db {
        read: DatabaseConnection::from(readers),
        write,
    })
}

/// Runs `PRAGMA wal_checkpoint(PASSIVE)` every [`CHECKPOINT_INTERVAL_SECS`] on its own
/// connection, for as long as the process lives.
async fn spawn_checkpointer(options: SqliteConnectOptions) -> Result<(), DbOpenError> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(CHECKPOINT_INTERVAL_SECS));
        loop {
            tick.tick().await;
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut conn)
                .await
            {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying next tick");
            }
        }
    });
    Ok(())
}

/// Opens the inbound writer's own connection to the database file behind `url` (after
/// [`open`] created and migrated it), with the same settings as the pools' connections.
///
/// # Errors
/// [`DbOpenError`] naming what failed.
pub fn open_inbound_writer(url: &str) -> Result<rusqlite::Connection, DbOpenError> {
    let path = sqlite_options(url)?.get_filename().to_path_buf();
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(SQLITE_BUSY_TIMEOUT_SECS))?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA temp_store = memory; PRAGMA cache_size = -65536; PRAGMA mmap_size = 268435456; \
         PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}; PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};"
    ))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}
