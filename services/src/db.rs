//! Connecting to the database.
//!
//! Postgres (`postgres://…`): migrations run on their own connection as the `DATABASE_URL`
//! user (the owner of the tables); the application's pool then works as the role
//! `switchboard_app` (row-level security applies to it), both
//! `Db::read` and `Db::write` being the same pool, [`DATABASE_MAX_CONNECTIONS`] connections.
//!
//! [`DATABASE_MAX_CONNECTIONS`]: switchboard_config::Settings::database_max_connections
//!
//! SQLite (the embedded default): one file in WAL mode, foreign keys on. Writes commit with
//! `synchronous = FULL`: a committed webhook, reply or status survives a power loss, not only
//! a crash of the process (with NORMAL, a lost commit could let a reply that already reached
//! Twilio be decided and sent again). Group commit keeps the fsyncs few. The inbound writer
//! syncs the WAL itself, off its thread, before it answers (see [`crate::ingest`]); every
//! other write is on disk before its caller acts, which makes the inbound commits before it
//! durable too. Most sync at their commit; a synced group-commit unit (a send's claim, its
//! recorded acceptance) syncs right after it, through [`WalSyncer`], so the write connection
//! is free while the disk works. Two kinds of write-pool commit do not sync at all
//! ([`crate::walbuf::CommitSync::Selective`], decided by the hooks of
//! [`crate::jobs::Wakers::install`]): one that only moves apalis' bookkeeping (a job fetched,
//! locked, finished), and a group-commit unit that declares it may
//! ([`crate::group::Unit::SYNCED`]: handling a text). Losing either in a power failure only
//! runs a job again; the next synced commit makes them durable with it.
//!
//! One writer at a time: tenant write transactions and the job queue share ONE write
//! connection (a pool of one, FIFO in-process), and the inbound writer, which writes through
//! its own connection on its own thread, holds that pooled connection as the lock while it
//! writes. No transaction ever waits in SQLite's sleeping busy handler. Reads use a pool of
//! read-only connections. Checkpoints run in the background (see [`CHECKPOINT_INTERVAL_MS`]).

use std::str::FromStr;
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
pub use switchboard_entity::Db;

use crate::jobs::Wakers;

/// Read-only connections. Reads run concurrently under WAL.
pub const SQLITE_READERS: u32 = 8;
/// Milliseconds between background WAL checkpoints. Small and frequent: a checkpoint's
/// fsync of the WAL blocks the writer's WAL appends (ext4), so each must have little to sync
/// (ingest p99 at half load: 90 ms at 1 s, ~33 ms at 100 ms, ~26 ms at 50 ms, 12-25 ms at 25 ms).
///
/// No write connection checkpoints by itself (`wal_autocheckpoint = 0`): a checkpoint inside
/// a commit stalls every webhook waiting on that commit (measured: 180 ms p99 at half load with
/// a 40,000-page WAL, 29 ms with 4,000 pages at 10% less throughput). Instead a background task
/// runs, on its own connection, `PRAGMA wal_checkpoint(PASSIVE)`, which copies the WAL into
/// the database file without blocking anyone. A PASSIVE checkpoint alone never lets the WAL
/// restart under continuous writes (measured: 270,000 frames within seconds, each batch slower
/// than the last), so once the WAL holds [`WAL_RESTART_PAGES`] the task takes the write lock
/// (the write pool's connection) and runs `RESTART`: little is left to copy, the pause is
/// short, and the next write starts the WAL from the beginning.
///
/// Just before each RESTART the task syncs the database file itself, on a blocking thread and
/// outside the lock. SQLite syncs the database file at the end of a checkpoint only when that
/// checkpoint copied the WAL up to its end (`walCheckpoint` in SQLite 3.51: the sync sits under
/// `mxSafeFrame == mxFrame`), which under continuous writes a PASSIVE never does: a writer has
/// always appended meanwhile. So every page the PASSIVEs copied since the last RESTART was
/// still unsynced when the RESTART's own `fsync` ran, under the write lock, stopping the
/// inbound writer while the disk wrote them all. Synced beforehand, that `fsync` covers only
/// the last few ticks' pages (and, with the writeback started every [`WRITEBACK_FRAMES`], few
/// of those are still unwritten). Syncing after every PASSIVE instead cut that p99 further but
/// wrote each hot page to the disk at every tick, and lost ~11% of the throughput; syncing
/// only before a RESTART kept it (bench `--only-ingest --with-latency`, 7 alternating runs
/// each; see docs/BENCHMARKS.md).
pub const CHECKPOINT_INTERVAL_MS: u64 = 25;

/// WAL size (4 KiB pages) at which the background task restarts the WAL under the write lock.
pub const WAL_RESTART_PAGES: i64 = 16_000;

/// WAL frames the background checkpoints copy into the database file between two starts of
/// its writeback (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: the kernel begins writing those
/// pages to the disk; nothing waits for it, nothing is flushed).
///
/// Otherwise the pages the checkpoints copied stay dirty in the page cache until the sync
/// before the next WAL restart (see [`CHECKPOINT_INTERVAL_MS`]) writes them all at once, tens
/// of megabytes, and every WAL `fdatasync` the inbound syncer makes meanwhile waits behind
/// them: on a VM whose disk flushes slowly, 25-67 ms for the syncs that normally take 1.5-2
/// ms (`perf trace`), so those webhooks were answered that much later. Started every quarter
/// of a restart's worth of frames, the writes are spread out: bench `--only-ingest
/// --with-latency`, 4 alternating pairs, p99 at half load 18.0-22.0 ms against 27.5-31.1 ms,
/// throughput within noise (7,764 against 7,824 req/s on means). Every tick (each hot page
/// written 40 times a second) cost ~7% of the throughput; every 2,048 frames gave 11-14 ms
/// but lost 4 of 6 pairs on throughput (docs/BENCHMARKS.md).
pub const WRITEBACK_FRAMES: i64 = WAL_RESTART_PAGES / 4;

/// When the checkpointer next starts the database file's writeback (see [`WRITEBACK_FRAMES`]).
#[derive(Debug, Default)]
struct Writeback {
    /// The WAL's checkpointed-frame count when writeback last started.
    started_at: i64,
}

impl Writeback {
    /// Whether writeback is due now that a checkpoint reports `copied` frames of the current
    /// WAL checkpointed (the third column of `PRAGMA wal_checkpoint`, which starts over when
    /// the WAL restarts); marks it started when it is.
    fn due(&mut self, copied: i64) -> bool {
        if copied < self.started_at {
            // The WAL restarted; the sync before the restart wrote everything back.
            self.started_at = 0;
        }
        let due = copied - self.started_at >= WRITEBACK_FRAMES;
        if due {
            self.started_at = copied;
        }
        due
    }
}

/// Starts writing the database file's dirty pages to the disk, on a blocking thread (the
/// call can wait for room in the device's queue). Linux only; elsewhere the sync before each
/// WAL restart does all of it.
async fn start_writeback(db_file: std::sync::Arc<std::fs::File>) {
    #[cfg(target_os = "linux")]
    {
        let started = tokio::task::spawn_blocking(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: an open descriptor of the database file, owned by `db_file`; offset 0
            // and length 0 mean the whole file; WRITE only starts writeback.
            let rc = unsafe {
                libc::sync_file_range(db_file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = started {
            tracing::debug!(error = %e, "starting the database file's writeback failed");
        }
    }
    #[cfg(not(target_os = "linux"))]
    drop(db_file);
}

/// Bytes one WAL frame takes: a 24-byte frame header and a 4 KiB page (SQLite's WAL format).
pub const WAL_FRAME_BYTES: i64 = 24 + 4096;

/// `journal_size_limit`: bytes the WAL file keeps after a restart, twice what
/// [`WAL_RESTART_PAGES`] frames take (~126 MiB).
///
/// Above what the WAL reaches, so a restart never truncates it: the writer then overwrites
/// blocks the file already has. Under load the WAL grows past [`WAL_RESTART_PAGES`] before the
/// restart gets the lock (to ~73 MB, bench `--only-ingest`). With the former limit of 64 MiB,
/// under that, the first write after each restart cut the file back (ext4 discarding the
/// freed blocks) and the next pass allocated them again, so the inbound syncer's `fdatasync`
/// also wrote the file's metadata: in 2 s of `--only-ingest`, 10 truncates of the WAL, 164
/// block allocations and 10 inode writes in the syncer's syncs, against none, 3 and none with
/// this limit. Ingest rose ~5% (7 alternating pairs, all won: 20,091 against 19,127 req/s on
/// average; docs/BENCHMARKS.md).
pub const WAL_SIZE_LIMIT_BYTES: i64 = 2 * WAL_RESTART_PAGES * WAL_FRAME_BYTES;

/// `cache_size` of the two write connections (the write pool's and the inbound writer's), in
/// KiB as SQLite's negative form takes it: 2 MiB, 512 pages. The readers keep
/// [`READER_CACHE_KIB`].
///
/// A writer's cache is kept small because SQLite walks all of it at many commits: a B-tree
/// page split (`balance_nonroot`) parks a page under the pending-byte page number (262,145
/// with 4 KiB pages) while it reorders pages, which leaves pcache1's highest key far past the
/// end of the database, and the commit then truncates the cache by scanning every page it
/// holds (`pcache1TruncateUnsafe`; seen under gdb on SQLite 3.51.3). With 64 MiB that scan was
/// ~18% of the inbound writer's time; with 8 MiB inbound throughput rose ~10% (bench
/// `--only-ingest`, 3 alternating runs each: 8,146 → 8,951 req/s). 2 MiB was then slower
/// again (pages the writer dropped are read back from the WAL), but once the inbound writer
/// reached known senders' rows by rowid ([`switchboard_entity::ingest::RowCache`]) it read
/// fewer pages, and 2 MiB beat 8 MiB: 12,250 against 11,430 req/s on average over 8
/// alternating `--only-ingest` runs each (6 of 8 pairs won), p99 at half load unchanged.
pub const WRITER_CACHE_KIB: i64 = 2048;
/// `cache_size` of the read pool's connections (and the checkpointer's), in KiB: 8 MiB each,
/// so the 8 readers hold at most 64 MiB of pages.
///
/// The pooled connections read without a memory map (`mmap_size` 0). With one, a read
/// transaction that follows another connection's commit unmapped the connection's whole map
/// (`pagerBeginReadTransaction`) and faulted it back in page by page, and here some connection
/// commits every millisecond or so. Without the map and with this cache the workers drained a
/// backlog ~22% faster (4,200 / 3,984 against 3,302 / 3,382 texts/s, bench `--only-drain`,
/// alternating) at a lower peak RSS (146,000 / 163,048 against 215,616 / 175,152 kB), reply
/// latency unchanged (docs/BENCHMARKS.md). Such a commit empties a reader's page cache anyway,
/// so a larger one (64 MiB before) only grew the memory without the map.
pub const READER_CACHE_KIB: i64 = 8192;
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
    /// The database file or its `-wal` file could not be opened for syncing.
    #[error("database: cannot open {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    /// A thread of the database layer could not be started.
    #[error("database: cannot start the {name} thread: {source}")]
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] DbErr),
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
        .pragma("cache_size", format!("-{READER_CACHE_KIB}"))
        // No memory map: see READER_CACHE_KIB.
        .pragma("mmap_size", "0")
        .pragma("journal_size_limit", WAL_SIZE_LIMIT_BYTES.to_string())
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

/// Run on every new pooled Postgres connection: from then on the connection works as the
/// application role, which row-level security applies to (see `migration::postgres`).
const SET_APP_ROLE: &str = "SET ROLE switchboard_app";

/// How long a pooled Postgres connection may sit idle before it is pinged when taken again.
const PING_AFTER_IDLE: Duration = Duration::from_secs(30);

/// True for a `postgres://` or `postgresql://` URL.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the Postgres database at `url` and applies pending migrations; the pool holds at
/// most `max_connections`.
///
/// # Errors
/// [`DbOpenError`] naming what failed.
pub async fn open_postgres(url: &str, max_connections: u32) -> Result<Db, DbOpenError> {
    let owner = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let owner = DatabaseConnection::from(owner);
    switchboard_migration::run(&owner).await?;
    owner.close().await?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings every connection it hands out (a round trip before every transaction,
        // two per send job). Only a connection idle long enough to have been dropped by the
        // server or a middlebox is checked; a busy one is used as it is.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                use sqlx::Connection;
                if meta.idle_for < PING_AFTER_IDLE {
                    return Ok(true);
                }
                Ok(conn.ping().await.is_ok())
            })
        })
        .after_connect(|conn, _| {
            Box::pin(async move {
                use sqlx::Executor;
                conn.execute(SET_APP_ROLE).await.map(drop)
            })
        })
        .connect(url)
        .await?;
    let conn = DatabaseConnection::from(pool);
    Ok(Db {
        read: conn.clone(),
        write: conn,
    })
}

/// Opens the SQLite database at `url` and applies pending migrations. `wakers` get their
/// hooks on the write connection, so committing a job wakes the workers; the WAL syncer
/// reports to `health`.
///
/// # Errors
/// [`DbOpenError`] naming what failed.
pub async fn open_sqlite(
    url: &str,
    wakers: &Wakers,
    health: &StoreHealth,
) -> Result<Db, DbOpenError> {
    let options = sqlite_options(url)?;
    if options.get_filename().as_os_str() == ":memory:" || url.contains("mode=memory") {
        return Err(DbOpenError::InMemory);
    }
    let hooks = wakers.clone();
    crate::walbuf::register()?;
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(60))
        .idle_timeout(None)
        .max_lifetime(None)
        .after_connect(move |conn, _| {
            let hooks = hooks.clone();
            Box::pin(async move {
                plan_once(conn).await?;
                check_walbuf_settings(conn).await?;
                hooks.install(conn).await
            })
        })
        .connect_with(
            options
                .clone()
                .vfs(
                    crate::walbuf::SELECTIVE_VFS_NAME
                        .to_str()
                        .expect("ASCII name"),
                )
                .synchronous(SqliteSynchronous::Full)
                .pragma("cache_spill", "OFF") // see walbuf::NO_CACHE_SPILL
                .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
                .pragma("wal_autocheckpoint", "0"),
        )
        .await?;
    let write = DatabaseConnection::from(writer);
    switchboard_migration::run(&write).await?;
    spawn_checkpointer(options.clone(), write.get_sqlite_connection_pool().clone()).await?;
    wakers.set_wal(WalSyncer::start(options.get_filename(), health)?);
    let readers = SqlitePoolOptions::new()
        .max_connections(SQLITE_READERS)
        .min_connections(1)
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .after_connect(|conn, _| Box::pin(plan_once(conn)))
        .connect_with(options.read_only(true))
        .await?;
    Ok(Db {
        read: DatabaseConnection::from(readers),
        write,
    })
}

/// Checks that the write pool's connection has the settings its VFS needs
/// ([`crate::walbuf::settings_problem`]): they come from the connect options, and anything
/// that changed them would let a commit be published before it is written.
///
/// # Errors
/// The settings cannot be read, or one is wrong.
async fn check_walbuf_settings(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let settings = sqlx::query_as(crate::walbuf::SETTINGS_QUERY)
        .fetch_one(&mut *conn)
        .await?;
    match crate::walbuf::settings_problem(settings) {
        None => Ok(()),
        Some(problem) => Err(sqlx::Error::Configuration(
            format!("the write connection {problem}").into(),
        )),
    }
}

/// Turns on SQLite's query planner stability guarantee (`SQLITE_DBCONFIG_ENABLE_QPSG`) for a
/// pooled connection, so a cached statement is planned once.
///
/// Without it SQLite plans some statements from their bound values, and binding such a
/// statement again marks it expired: its next step parses and plans it anew
/// (`sqlite3Reprepare`). Every `LIMIT ?` is one (sea-orm binds the `LIMIT 1` of each `.one()`,
/// apalis-sqlite the batch size of each fetch), so the statement cache saved nothing on them:
/// re-preparing was 31% of the samples of the bench process while workers drained a backlog
/// (docs/BENCHMARKS.md). With the guarantee a plan depends on the statement's text, the schema
/// and the planner statistics, never on bound values; no partial index here needs a bound
/// value to match (their predicates are `IS NOT NULL`, or apalis' statuses, which its queries
/// repeat as literals).
///
/// # Errors
/// The connection's handle is unavailable, or SQLite refuses the setting.
async fn plan_once(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    if stable_plans(conn, 1).await? {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            "SQLite refused SQLITE_DBCONFIG_ENABLE_QPSG".into(),
        ))
    }
}

/// Sets `conn`'s `SQLITE_DBCONFIG_ENABLE_QPSG` (`on`: 1 on, 0 off, -1 leave as is) and
/// returns whether it is on.
async fn stable_plans(
    conn: &mut sqlx::SqliteConnection,
    on: std::ffi::c_int,
) -> Result<bool, sqlx::Error> {
    use rusqlite::ffi;
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    let mut state: std::ffi::c_int = -1;
    // SAFETY: `db` is this connection's open handle, locked for the call; this option takes
    // an int and an int* that receives the state.
    let rc =
        unsafe { ffi::sqlite3_db_config(db, ffi::SQLITE_DBCONFIG_ENABLE_QPSG, on, &raw mut state) };
    if rc != ffi::SQLITE_OK {
        return Err(sqlx::Error::Configuration(
            format!("SQLITE_DBCONFIG_ENABLE_QPSG: SQLite error {rc}").into(),
        ));
    }
    Ok(state == 1)
}

/// Runs the background checkpoints (see [`CHECKPOINT_INTERVAL_MS`]) for as long as the
/// process lives. `lock` is the write pool: holding its connection excludes every writer.
async fn spawn_checkpointer(
    options: SqliteConnectOptions,
    lock: SqlitePool,
) -> Result<(), DbOpenError> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    let db_file = std::sync::Arc::new(open_for_sync(options.get_filename())?);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(CHECKPOINT_INTERVAL_MS));
        // Ticks missed during a long checkpoint are skipped, not run back to back.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The WAL size (frames) the last RESTART left. Until a writer writes, the WAL keeps
        // that size, all of it checkpointed; the writer's next transaction then starts the
        // WAL over. So the same size again means there is nothing to restart.
        let mut restarted_at = None;
        let mut writeback = Writeback::default();
        loop {
            tick.tick().await;
            // Columns: busy flag, WAL pages, pages copied.
            let pages = match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut conn)
                .await
            {
                Ok((_, pages, copied)) => {
                    if writeback.due(copied) {
                        start_writeback(db_file.clone()).await;
                    }
                    pages
                }
                Err(e) => {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retrying next tick");
                    continue;
                }
            };
            if pages >= WAL_RESTART_PAGES && restarted_at != Some(pages) {
                // Outside the lock: see CHECKPOINT_INTERVAL_MS. A failure only leaves the
                // RESTART more to sync, so it is logged and the RESTART goes on.
                let file = db_file.clone();
                let synced = tokio::task::spawn_blocking(move || file.sync_data())
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                if let Err(e) = synced {
                    tracing::warn!(error = %e, "database file sync before the WAL restart failed");
                }
                let restarted = match lock.acquire().await {
                    Ok(writer) => restart_wal(writer).await,
                    Err(e) => Err(e),
                };
                match restarted {
                    // Not busy: every frame copied and no reader left on the WAL.
                    Ok((0, left, _)) => restarted_at = Some(left),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, pages, "WAL restart failed; retrying next tick")
                    }
                }
            }
        }
    });
    Ok(())
}

/// Longest a WAL restart waits for readers still on the WAL, in milliseconds: it holds the
/// write lock meanwhile, so every writer waits with it. A reader that takes longer (a search
/// over a large inbox) makes this RESTART busy instead, and the next tick tries again.
pub const RESTART_BUSY_MS: u64 = 250;

/// `PRAGMA wal_checkpoint(RESTART)` on the write pool's connection `writer` (the write lock),
/// waiting at most [`RESTART_BUSY_MS`] for readers instead of the connection's busy timeout;
/// its columns (busy flag, WAL pages, pages copied). A connection whose busy timeout could
/// not be put back is closed, so the pool opens a new one with its own settings.
///
/// # Errors
/// The database's.
async fn restart_wal(
    mut writer: sqlx::pool::PoolConnection<sqlx::Sqlite>,
) -> Result<(i64, i64, i64), sqlx::Error> {
    // Only our own constants go into the text.
    let busy = |ms: u64| sqlx::AssertSqlSafe(format!("PRAGMA busy_timeout = {ms}"));
    sqlx::query(busy(RESTART_BUSY_MS))
        .execute(&mut *writer)
        .await?;
    let restarted = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
        .fetch_one(&mut *writer)
        .await;
    if let Err(e) = sqlx::query(busy(SQLITE_BUSY_TIMEOUT_SECS * 1000))
        .execute(&mut *writer)
        .await
    {
        tracing::warn!(error = %e, "restoring the write connection's busy timeout failed; closing it");
        writer.close_on_drop();
    }
    restarted
}

/// Whether this process's store can still be trusted with a text, shared by the WAL syncers
/// and the inbound writers; [`App::health`](crate::App::health).
///
/// It fails for good on the first failed WAL sync: on Linux a writeback error is reported
/// once per open file and the pages may already be marked clean, so later syncs can succeed
/// over frames that never reached the disk, and a crash would then lose every commit chained
/// after them. It also fails when an inbound writer or syncer panics. From then on no WAL
/// sync is attempted: no inbound commit is answered and no synced group-commit unit (a send's
/// claim, its recorded acceptance) returns, no text is taken (so no Twilio retry is answered
/// 200 for a text that may not be on disk), `/health` and `/ready` answer 503, and
/// `switchboard serve` and `worker` stop gracefully and exit non-zero so that their
/// supervisor restarts them: only reopening the database recovers what is really on disk (the
/// stance Postgres takes with its PANIC on a failed fsync). Commits that SQLite syncs itself
/// (a status callback, a setting) are not stopped in the seconds the stop takes, and a failed
/// sync inside such a commit is that request's error, not noticed here.
#[derive(Clone, Debug)]
pub struct StoreHealth(std::sync::Arc<tokio::sync::watch::Sender<Option<std::sync::Arc<str>>>>);

impl Default for StoreHealth {
    fn default() -> Self {
        Self(std::sync::Arc::new(tokio::sync::watch::Sender::new(None)))
    }
}

impl StoreHealth {
    /// Marks the store failed with `reason`, unless it already is (the first reason stays).
    pub fn fail(&self, reason: impl Into<String>) {
        let reason: String = reason.into();
        let first = self.0.send_if_modified(|failure| {
            failure.is_none() && {
                *failure = Some(reason.as_str().into());
                true
            }
        });
        if first {
            tracing::error!(%reason, "the store failed: no more texts are taken; restart the process");
        }
    }

    /// Why the store failed, if it has.
    pub fn failure(&self) -> Option<std::sync::Arc<str>> {
        self.0.borrow().clone()
    }

    /// Returns once the store has failed, with the reason.
    pub async fn failed(&self) -> std::sync::Arc<str> {
        let mut failure = self.0.subscribe();
        let reason = failure
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives in self");
        reason.clone().expect("waited for Some")
    }

    /// A guard that marks the store failed if the thread or task holding it panics.
    pub(crate) fn fail_on_panic(&self, what: &'static str) -> FailOnPanic {
        FailOnPanic(self.clone(), what)
    }

    /// `task`, marking the store failed if it panics (named `what` in the reason).
    pub(crate) fn watching<F: Future>(
        &self,
        what: &'static str,
        task: F,
    ) -> impl Future<Output = F::Output> + use<F> {
        let guard = self.fail_on_panic(what);
        async move {
            let _guard = guard;
            task.await
        }
    }
}

/// See [`StoreHealth::fail_on_panic`].
pub(crate) struct FailOnPanic(StoreHealth, &'static str);

impl Drop for FailOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail(format!("the {} panicked", self.1));
        }
    }
}

/// Group `fdatasync` of the SQLite database's WAL, on a thread of its own, for commits of the
/// write pool that must be on disk before their caller acts but need not hold the write
/// connection while the disk works ([`crate::group`]'s synced units commit unsynced, give the
/// connection back, then wait here). Every caller waiting when a sync starts is answered by
/// it; a sync covers every commit before it (the WAL is one file, synced as a whole).
#[derive(Clone)]
pub struct WalSyncer {
    requests: std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

/// WAL syncs made by [`WalSyncer`]s in this process (each answers one or more commits).
static GROUP_SYNCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// See [`GROUP_SYNCS`]; exported at `/metrics`.
pub fn group_syncs() -> u64 {
    GROUP_SYNCS.load(std::sync::atomic::Ordering::Relaxed)
}

impl WalSyncer {
    /// Starts the syncer of the database file `path` (its `-wal` file must exist: the write
    /// pool has opened the database). The thread ends when the last handle is dropped.
    ///
    /// # Errors
    /// [`DbOpenError::File`] when the WAL file cannot be opened, [`DbOpenError::Thread`] when
    /// the thread cannot start.
    pub fn start(path: &std::path::Path, health: &StoreHealth) -> Result<Self, DbOpenError> {
        let wal = open_wal(path)?;
        let health = health.clone();
        let (requests, waiting) =
            std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<Result<(), String>>>();
        std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || {
                let _guard = health.fail_on_panic("WAL syncer");
                while let Ok(first) = waiting.recv() {
                    let group: Vec<_> = std::iter::once(first).chain(waiting.try_iter()).collect();
                    let synced = sync_unless_failed(&wal, &health);
                    GROUP_SYNCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    for caller in group {
                        let _ = caller.send(synced.clone());
                    }
                }
            })
            .map_err(|source| DbOpenError::Thread {
                name: "wal-sync",
                source,
            })?;
        Ok(Self { requests })
    }

    /// Returns once the WAL is on disk up to at least every commit that returned before this
    /// call.
    ///
    /// # Errors
    /// Why it is not known to be on disk: the sync failed, or the syncer stopped.
    pub async fn sync(&self) -> Result<(), String> {
        const STOPPED: &str = "the WAL syncer stopped";
        let (done, synced) = tokio::sync::oneshot::channel();
        self.requests.send(done).map_err(|_| STOPPED.to_string())?;
        synced.await.map_err(|_| STOPPED.to_string())?
    }
}

/// `fdatasync` of `wal`, unless `health` has failed (then not tried: see [`StoreHealth`]); a
/// failed sync fails `health`.
///
/// # Errors
/// The reason the commits before this call are not known to be on disk.
pub(crate) fn sync_unless_failed(wal: &impl SyncData, health: &StoreHealth) -> Result<(), String> {
    if let Some(failure) = health.failure() {
        return Err(format!("not synced: {failure}"));
    }
    wal.sync_data().map_err(|e| {
        let reason = format!("WAL sync failed: {e}");
        health.fail(reason.clone());
        reason
    })
}

/// What the WAL syncers need of the WAL file: `fdatasync`. A trait so that tests can make it
/// fail.
pub(crate) trait SyncData {
    /// Flushes the file's data to the disk.
    fn sync_data(&self) -> std::io::Result<()>;
}

impl SyncData for std::fs::File {
    fn sync_data(&self) -> std::io::Result<()> {
        std::fs::File::sync_data(self)
    }
}

/// The `-wal` file of the database file `path`, opened for `fdatasync` only. It stays the
/// same file while the process runs: SQLite deletes a WAL only when its last connection
/// closes, and the write pool keeps its connection open.
fn open_wal(path: &std::path::Path) -> Result<std::fs::File, DbOpenError> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    open_for_sync(std::path::Path::new(&wal))
}

/// `path` opened read-only, for `fsync`/`fdatasync` only: any descriptor of a file syncs all
/// of its written pages, whoever wrote them.
fn open_for_sync(path: &std::path::Path) -> Result<std::fs::File, DbOpenError> {
    std::fs::File::open(path).map_err(|source| DbOpenError::File {
        path: path.display().to_string(),
        source,
    })
}

/// The inbound writer's own connection, and the WAL file its commits go to.
pub struct InboundDb {
    /// Opened through [`crate::walbuf`]: a commit writes its frames to the WAL in a few large
    /// writes and does not sync them; the writer's syncer does, on [`InboundDb::wal`], before any
    /// webhook of the commit is answered (see [`crate::ingest`]).
    pub conn: rusqlite::Connection,
    /// The `-wal` file, opened for `fdatasync` only. It stays the same file while the
    /// process runs: SQLite deletes a WAL only when its last connection closes, and `conn`
    /// is open for as long as this is.
    pub wal: std::fs::File,
}

/// Opens the inbound writer's own connection to the database file behind `url` (after
/// [`open_sqlite`] created and migrated it) through [`crate::walbuf`], with the same settings
/// as the pools' connections except how it syncs, and its WAL file.
///
/// # Errors
/// [`DbOpenError`] naming what failed (the WAL file missing included).
pub fn open_inbound_writer(url: &str) -> Result<InboundDb, DbOpenError> {
    let path = sqlite_options(url)?.get_filename().to_path_buf();
    let conn = crate::walbuf::open(&path)?;
    conn.busy_timeout(Duration::from_secs(SQLITE_BUSY_TIMEOUT_SECS))?;
    conn.execute_batch(&format!(
        "PRAGMA foreign_keys = ON; PRAGMA temp_store = memory; PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA mmap_size = 268435456; \
         PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}; PRAGMA wal_autocheckpoint = 0;"
    ))?;
    conn.set_prepared_statement_cache_capacity(32);
    let wal = open_wal(&path)?;
    Ok(InboundDb { conn, wal })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writeback starts once per [`WRITEBACK_FRAMES`] checkpointed frames, counted again from
    /// the start of each new WAL.
    #[test]
    fn writeback_starts_every_quarter_of_a_restart() {
        let mut w = Writeback::default();
        let q = WRITEBACK_FRAMES;
        assert!(!w.due(0));
        assert!(!w.due(q - 1));
        assert!(w.due(q), "a quarter copied");
        assert!(!w.due(q + 10), "counted from the last start");
        assert!(!w.due(2 * q - 1));
        assert!(w.due(2 * q + 5));
        // The WAL restarted: its frames count from zero again.
        assert!(!w.due(100));
        assert!(!w.due(q - 1));
        assert!(w.due(q));
    }

    /// Both pools' connections plan each cached statement once ([`plan_once`]) and read
    /// without a memory map; the readers' page cache is [`READER_CACHE_KIB`].
    #[tokio::test]
    async fn every_pooled_sqlite_connection_keeps_its_plans_and_maps_nothing() {
        let dir = std::env::temp_dir().join(format!("plans-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/app.db", dir.display());
        let db = open_sqlite(&url, &Wakers::default(), &StoreHealth::default())
            .await
            .expect("opened");
        for (pool, name) in [(&db.write, "write"), (&db.read, "read")] {
            let mut conn = pool
                .get_sqlite_connection_pool()
                .acquire()
                .await
                .expect("a connection");
            assert!(
                stable_plans(&mut conn, -1).await.expect("readable"),
                "the {name} pool's connection re-plans statements on every binding"
            );
            let pragma = |p: &'static str| sqlx::query_scalar::<_, i64>(p);
            let mapped = pragma("PRAGMA mmap_size").fetch_one(&mut *conn).await;
            assert_eq!(
                mapped.expect("mmap_size"),
                0,
                "the {name} pool maps the file"
            );
            let cache = pragma("PRAGMA cache_size").fetch_one(&mut *conn).await;
            let kib = if name == "read" {
                READER_CACHE_KIB
            } else {
                WRITER_CACHE_KIB
            };
            assert_eq!(
                cache.expect("cache_size"),
                -kib,
                "the {name} pool's page cache"
            );
        }
        // A connection opened without it (what the pools' hook changes).
        let mut plain = {
            use sqlx::Connection;
            sqlx::SqliteConnection::connect(&url)
                .await
                .expect("connected")
        };
        assert!(!stable_plans(&mut plain, -1).await.expect("readable"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The workspace's `.cargo/config.toml` builds the bundled SQLite without the shared page
    /// cache and without memory statistics (two process-wide mutexes).
    #[tokio::test]
    async fn the_bundled_sqlite_gives_each_connection_its_own_page_cache() {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("connected");
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(&mut conn)
            .await
            .expect("compile options");
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "SQLite built with ENABLE_MEMORY_MANAGEMENT (LIBSQLITE3_FLAGS not applied): {options:?}"
        );
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "SQLite keeps memory statistics (LIBSQLITE3_FLAGS not applied): {options:?}"
        );
    }

    /// A WAL restart must not cut the file below what the WAL grows to before the restart
    /// (see [`WAL_SIZE_LIMIT_BYTES`]). SQLite cuts it to the limit of the connection that
    /// writes first after the restart: the write pool's or the inbound writer's.
    #[tokio::test]
    async fn no_write_connection_cuts_the_wal_below_what_it_grows_to() {
        let dir = std::env::temp_dir().join(format!("wal-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/app.db", dir.display());
        let db = open_sqlite(&url, &Wakers::default(), &StoreHealth::default())
            .await
            .expect("opened");
        let limit = "PRAGMA journal_size_limit";
        let kept = sqlx::query_scalar::<_, i64>(limit)
            .fetch_one(db.write.get_sqlite_connection_pool())
            .await;
        assert_eq!(
            kept.expect("journal_size_limit"),
            WAL_SIZE_LIMIT_BYTES,
            "the write pool"
        );
        let inbound = open_inbound_writer(&url).expect("inbound writer");
        let kept = inbound.conn.query_row(limit, [], |r| r.get::<_, i64>(0));
        assert_eq!(
            kept.expect("journal_size_limit"),
            WAL_SIZE_LIMIT_BYTES,
            "the inbound writer"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A WAL restart waits for a reader still on the WAL for [`RESTART_BUSY_MS`], not the
    /// busy timeout of the write connection it holds (every writer waits with it); that
    /// connection keeps its own busy timeout afterwards.
    #[tokio::test]
    async fn a_wal_restart_waits_briefly_for_a_long_reader() {
        use sea_orm::ConnectionTrait;
        let dir = std::env::temp_dir().join(format!("restart-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/app.db", dir.display());
        let db = open_sqlite(&url, &Wakers::default(), &StoreHealth::default())
            .await
            .expect("opened");
        db.write
            .execute_unprepared("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1)")
            .await
            .expect("a commit in the WAL");
        // A search over a large inbox: a read transaction on the WAL's frames.
        let reader = rusqlite::Connection::open(dir.join("app.db")).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let n: i64 = reader
            .query_row("SELECT n FROM t", [], |r| r.get(0))
            .expect("read");
        assert_eq!(n, 1);

        let pool = db.write.get_sqlite_connection_pool();
        let writer = pool.acquire().await.expect("the write lock");
        let restarted = tokio::time::timeout(Duration::from_secs(5), restart_wal(writer))
            .await
            .expect("given up on the reader well within the busy timeout")
            .expect("checkpoint");
        assert_eq!(restarted.0, 1, "busy: the reader is still on the WAL");
        let kept = sqlx::query_scalar::<_, i64>("PRAGMA busy_timeout")
            .fetch_one(pool)
            .await
            .expect("busy timeout");
        assert_eq!(kept, SQLITE_BUSY_TIMEOUT_SECS as i64 * 1000);

        reader.execute_batch("COMMIT").expect("the reader is done");
        let writer = pool.acquire().await.expect("the write lock");
        let restarted = restart_wal(writer).await.expect("checkpoint");
        assert_eq!(restarted.0, 0, "no reader left: restarted");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
