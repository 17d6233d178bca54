//! Job payloads (ids only) and the queue they go through.
//!
//! Embedded default: apalis-sqlite's `Jobs` table in the same SQLite file, so a job can be
//! enqueued inside the transaction that writes the row it works on (the inbound writer does
//! this). Workers wake through SQLite's commit hook the moment a transaction that inserted a
//! job commits (apalis-sqlite's own update hook fires before the commit, when the row is not
//! yet visible), and poll every [`FALLBACK_POLL_SECS`] for delayed retries.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis::prelude::{TaskBuilder, TaskId};
use apalis_redis::{Config as RedisConfig, ConnectionManager, RedisTask};
use apalis_sqlite::SqliteTask;
use futures::task::AtomicWaker;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteOperation, SqlitePool};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use switchboard_domain::{MessageId, TenantId};
use switchboard_entity::TenantTx;
use ulid::Ulid;

use crate::ServiceError;

/// apalis queue (the `Jobs.job_type` column) of [`HandleInbound`].
pub const QUEUE_INBOUND: &str = "switchboard.handle_inbound";
/// apalis queue of [`SendMessage`].
pub const QUEUE_SEND: &str = "switchboard.send_message";
/// Seconds between polls when no commit wakes the workers (delayed retries become due).
pub const FALLBACK_POLL_SECS: u64 = 1;
/// Times apalis re-runs a job whose handler returned an error (database trouble). Provider
/// failures do not count: they are rescheduled by our own backoff as new jobs.
pub const MAX_JOB_ATTEMPTS: usize = 10;

/// Decide the replies to stored inbound texts of one tenant: `message_id` and each of `more`,
/// listed in arrival order. The worker handles them concurrently; `inbound::handle` keeps the
/// texts of one conversation in their order.
///
/// The inbound writer stores ONE such job per tenant per commit on the SQLite queue, where a
/// job row is a row and six index entries written by the one write connection: a job per
/// text was ~20% of the inbound path (docs/BENCHMARKS.md). On Redis it pushes one job per
/// text (`more` empty), which spreads the texts over the worker processes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleInbound {
    pub tenant_id: TenantId,
    pub message_id: MessageId,
    /// Correlation id of the webhook that stored the text ([`crate::correlation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The tenant's other texts stored in the same commit, in arrival order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<InboundText>,
}

/// One stored inbound text of a [`HandleInbound`] job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundText {
    pub message_id: MessageId,
    /// Correlation id of the webhook that stored the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl HandleInbound {
    /// A job for one text.
    pub fn one(tenant_id: TenantId, message_id: MessageId, request_id: Option<String>) -> Self {
        Self {
            tenant_id,
            message_id,
            request_id,
            more: Vec::new(),
        }
    }

    /// Every text of the job, in arrival order.
    pub fn texts(self) -> impl Iterator<Item = InboundText> {
        let first = InboundText {
            message_id: self.message_id,
            request_id: self.request_id,
        };
        std::iter::once(first).chain(self.more)
    }
}

/// Hand one outbox row to its provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessage {
    pub tenant_id: TenantId,
    pub message_id: MessageId,
    /// Correlation id of the webhook, request or job that created the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl SendMessage {
    /// A send of `message_id`, carrying the current correlation id.
    pub fn new(tenant_id: TenantId, message_id: MessageId) -> Self {
        Self {
            tenant_id,
            message_id,
            request_id: crate::correlation::current(),
        }
    }
}

/// Any job (its payload is one of the structs above).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    HandleInbound(HandleInbound),
    SendMessage(SendMessage),
}

impl Job {
    /// The queue (apalis job type) this job goes to: [`QUEUE_INBOUND`] or [`QUEUE_SEND`].
    pub fn queue(&self) -> &'static str {
        match self {
            Self::HandleInbound(_) => QUEUE_INBOUND,
            Self::SendMessage(_) => QUEUE_SEND,
        }
    }

    fn args(&self) -> Vec<u8> {
        match self {
            Self::HandleInbound(job) => serde_json::to_vec(job),
            Self::SendMessage(job) => serde_json::to_vec(job),
        }
        .expect("job payloads serialize")
    }
}

/// A job to store: the job, an idempotency key (a second push with the same key while the
/// first row exists is ignored), and when it may run.
#[derive(Clone, Debug)]
pub struct Enqueue {
    pub job: Job,
    pub key: String,
    pub run_at: Option<SystemTime>,
}

impl Enqueue {
    /// Run as soon as possible, deduplicated by `key`.
    pub fn now(job: Job, key: impl Into<String>) -> Self {
        Self {
            job,
            key: key.into(),
            run_at: None,
        }
    }

    /// Run after `delay` (a backoff), deduplicated by `key`.
    pub fn after(job: Job, key: impl Into<String>, delay: Duration) -> Self {
        Self {
            job,
            key: key.into(),
            run_at: Some(SystemTime::now() + delay),
        }
    }

    /// The apalis task, with `id` when given (else the backend picks one).
    fn task(&self, id: Option<&str>) -> SqliteTask {
        let mut b = TaskBuilder::new(self.job.args())
            .max_attempts(MAX_JOB_ATTEMPTS)
            .idempotency_key(self.key.clone());
        if let Some(at) = self.run_at {
            b = b.run_at_time(at);
        }
        if let Some(id) = id {
            b = b.task_id(TaskId::from_string(id));
        }
        b.build()
    }
}

/// One `Jobs` row, exactly as apalis-sqlite's own `push_tasks` writes it.
struct JobRow {
    args: Vec<u8>,
    /// A ULID: apalis parses the id back with `Ulid::from_string`.
    id: String,
    queue: &'static str,
    max_attempts: i64,
    /// Unix seconds.
    run_at: i64,
    priority: i64,
    metadata: String,
    key: String,
}

impl Enqueue {
    fn row(&self, now_secs: u64) -> JobRow {
        let task = self.task(None);
        JobRow {
            id: Ulid::generate().to_string(),
            queue: self.job.queue(),
            max_attempts: task.max_attempts().unwrap_or(MAX_JOB_ATTEMPTS) as i64,
            run_at: task.run_at().unwrap_or(now_secs) as i64,
            priority: task.priority().unwrap_or_default() as i64,
            metadata: serde_json::to_string(task.metadata()).unwrap_or_default(),
            key: self.key.clone(),
            args: task.args,
        }
    }
}

/// The time now in Unix seconds (apalis' `run_at` and `done_at`, apalis-redis' scores).
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

const INSERT_JOBS: &str = "INSERT INTO Jobs (job, id, job_type, status, attempts, max_attempts, run_at, priority, metadata, idempotency_key) ";
const ON_DUPLICATE_KEY: &str = " ON CONFLICT(job_type, idempotency_key) DO NOTHING";

/// Stores jobs inside the caller's sqlx transaction with one multi-row `INSERT` (they become
/// visible, and wake the workers, when it commits). A job whose key is already stored is
/// skipped.
///
/// # Errors
/// Database errors.
pub async fn push_in(conn: &mut SqliteConnection, jobs: &[Enqueue]) -> Result<(), ServiceError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let now = now_secs();
    let rows: Vec<JobRow> = jobs.iter().map(|e| e.row(now)).collect();
    let mut q = QueryBuilder::<Sqlite>::new(INSERT_JOBS);
    q.push_values(rows, |mut b, r| {
        b.push_bind(r.args)
            .push_bind(r.id)
            .push_bind(r.queue)
            .push_bind("Pending")
            .push_bind(0_i64)
            .push_bind(r.max_attempts)
            .push_bind(r.run_at)
            .push_bind(r.priority)
            .push_bind(r.metadata)
            .push_bind(r.key);
    });
    q.push(ON_DUPLICATE_KEY);
    q.build().execute(&mut *conn).await?;
    Ok(())
}

/// [`push_in`] for the inbound writer's own (rusqlite) transaction. The caller wakes the
/// workers ([`Notifier::notify`]) after its commit.
///
/// # Errors
/// Database errors.
pub fn push_in_sync(tx: &rusqlite::Transaction<'_>, jobs: &[Enqueue]) -> rusqlite::Result<()> {
    let now = now_secs();
    let mut insert = tx.prepare_cached(&format!(
        "{INSERT_JOBS} VALUES (?1, ?2, ?3, 'Pending', 0, ?4, ?5, ?6, ?7, ?8){ON_DUPLICATE_KEY}"
    ))?;
    for r in jobs.iter().map(|e| e.row(now)) {
        insert.execute(rusqlite::params![
            r.args,
            r.id,
            r.queue,
            r.max_attempts,
            r.run_at,
            r.priority,
            r.metadata,
            r.key
        ])?;
    }
    Ok(())
}

/// Wakes workers after a commit that inserted jobs. Each worker subscribes once; wake-ups
/// coalesce (a worker that has one pending does not queue another).
#[derive(Clone, Default)]
pub struct Notifier {
    subscribers: Arc<Mutex<Vec<Arc<Signal>>>>,
}

/// One worker's pending wake-up and the task to wake for it.
#[derive(Default)]
struct Signal {
    pending: AtomicBool,
    waker: AtomicWaker,
}

/// The wake-ups of one worker ([`Notifier::subscribe`]): yields once per burst of
/// [`Notifier::notify`] calls since it was last polled.
///
/// Unlike a channel's receiver, it registers the polling task on EVERY poll, also on one
/// that yields. apalis' poll strategy ignores what the stream yields and fetches: when it
/// took a wake-up while a fetch was already running (one that read the queue before the new
/// job), that fetch came back empty and a channel had no task to wake for the next job any
/// more, so the worker slept until its fallback poll ([`FALLBACK_POLL_SECS`]). Measured on
/// Postgres + Redis: reply p99 230-820 ms, every stall ending within 1 s (within 200 ms with
/// a 200 ms poll).
pub struct WakeUps(Arc<Signal>);

impl futures::Stream for WakeUps {
    type Item = ();

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<()>> {
        self.0.waker.register(cx.waker());
        if self.0.pending.swap(false, Ordering::AcqRel) {
            std::task::Poll::Ready(Some(()))
        } else {
            std::task::Poll::Pending
        }
    }
}

impl Notifier {
    /// A stream of wake-ups for one worker.
    pub fn subscribe(&self) -> WakeUps {
        let signal = Arc::new(Signal::default());
        self.subscribers
            .lock()
            .expect("notifier lock")
            .push(signal.clone());
        WakeUps(signal)
    }

    /// Wakes every subscribed worker (coalesced). Commits on the shared write connection do
    /// this through the hooks of [`Wakers::install`].
    pub fn notify(&self) {
        // A signal only the list still holds belongs to a worker that is gone.
        self.subscribers
            .lock()
            .expect("notifier lock")
            .retain(|signal| {
                signal.pending.store(true, Ordering::Release);
                signal.waker.wake();
                Arc::strong_count(signal) > 1
            });
    }
}

/// This process's wake-up sources: one [`Notifier`] per queue.
#[derive(Clone, Default)]
pub struct Wakers {
    /// By [`queue_index`].
    notifiers: [Notifier; 2],
    /// Queues that the open transaction on the SQLite write connection added jobs to (bit
    /// `1 << queue_index`); its commit wakes only their workers.
    staged: Arc<AtomicU8>,
    /// What the open transaction on the SQLite write connection changed, and whether it may
    /// commit without its own WAL sync (see [`Wakers::install`]).
    tx: Arc<TxState>,
    /// The WAL's group syncer (SQLite; set once the database is open).
    wal: Arc<std::sync::OnceLock<crate::db::WalSyncer>>,
}

/// `queue`'s place in [`Wakers`]: 0 for [`QUEUE_INBOUND`], 1 for [`QUEUE_SEND`].
fn queue_index(queue: &str) -> usize {
    usize::from(queue == QUEUE_SEND)
}

impl Wakers {
    /// The wake-up source of `queue`'s workers.
    pub fn of(&self, queue: &str) -> &Notifier {
        &self.notifiers[queue_index(queue)]
    }

    /// Notes that the open write transaction adds a job to `queue`.
    fn stage(&self, queue: &str) {
        self.staged
            .fetch_or(1 << queue_index(queue), Ordering::AcqRel);
    }

    /// Installs the hooks on the SQLite write connection:
    /// - an insert into `Jobs` marks the transaction, and its commit wakes the workers of the
    ///   queues it added jobs to (every queue's when the rows did not come through
    ///   [`JobQueue`]). A worker woken for a queue with nothing new would spend a write
    ///   transaction on an empty fetch.
    /// - a commit that only moved apalis' bookkeeping ([`is_bookkeeping`]), or that its
    ///   writer let go unsynced ([`Wakers::commit_unsynced`]), skips its WAL sync
    ///   ([`crate::walbuf::skip_commit_sync`]); every other commit syncs.
    ///
    /// # Errors
    /// When the connection's handle cannot be locked.
    pub async fn install(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        let state = &self.tx;
        let (on_change, on_commit, on_rollback) = (state.clone(), state.clone(), state.clone());
        let (wakers, dropped) = (self.clone(), self.staged.clone());
        let mut handle = conn.lock_handle().await?;
        handle.set_update_hook(move |ev| {
            if ev.operation == SqliteOperation::Insert && ev.table == "Jobs" {
                on_change.inserted_job.store(true, Ordering::Relaxed);
            }
            let flag = if is_bookkeeping(ev.operation, ev.table) {
                &on_change.bookkeeping
            } else {
                &on_change.other
            };
            flag.store(true, Ordering::Relaxed);
        });
        handle.set_commit_hook(move || {
            let (bookkeeping, other) = on_commit.take_changes();
            let unsynced = on_commit.end_transaction();
            // Only a commit seen to move apalis' rows and nothing else skips by itself: one
            // whose changes the update hook cannot see (a schema change) syncs.
            crate::walbuf::skip_commit_sync((bookkeeping && !other) || unsynced);
            let staged = wakers.staged.swap(0, Ordering::AcqRel);
            if on_commit.inserted_job.swap(false, Ordering::Relaxed) {
                for (i, notifier) in wakers.notifiers.iter().enumerate() {
                    if staged == 0 || staged & (1 << i) != 0 {
                        notifier.notify();
                    }
                }
            }
            true
        });
        handle.set_rollback_hook(move || {
            on_rollback.inserted_job.store(false, Ordering::Relaxed);
            on_rollback.take_changes();
            on_rollback.end_transaction();
            dropped.store(0, Ordering::Release);
        });
        Ok(())
    }

    /// Lets the transaction open on the SQLite write connection commit without syncing the
    /// WAL itself. Call it inside that transaction, while holding the connection, and only
    /// for a transaction whose loss in a power failure is harmless because nothing outside
    /// the database acts on it before a later commit syncs (a synced commit makes the whole
    /// WAL before it durable). It applies to that one transaction: its commit or rollback
    /// ends it. No effect on Postgres (no hooks there).
    pub fn commit_unsynced(&self) {
        let open = self.tx.generation.load(Ordering::Acquire);
        self.tx.unsynced.store(open, Ordering::Release);
    }

    /// Hands over the WAL's group syncer (once, when the SQLite database is open).
    pub(crate) fn set_wal(&self, syncer: crate::db::WalSyncer) {
        let _ = self.wal.set(syncer);
    }

    /// The WAL's group syncer: `None` on Postgres, whose commits are durable as they return.
    pub fn wal(&self) -> Option<&crate::db::WalSyncer> {
        self.wal.get()
    }
}

/// What the open transaction of the write connection changed, as its update hook saw it, and
/// which transaction may commit unsynced.
struct TxState {
    inserted_job: AtomicBool,
    bookkeeping: AtomicBool,
    other: AtomicBool,
    /// Counts the write connection's transactions: each commit or rollback ends one.
    generation: AtomicU64,
    /// The `generation` of the transaction that may commit unsynced (`u64::MAX`: none), so
    /// a mark that its commit never consumed cannot reach a later transaction.
    unsynced: AtomicU64,
}

impl Default for TxState {
    fn default() -> Self {
        Self {
            inserted_job: AtomicBool::new(false),
            bookkeeping: AtomicBool::new(false),
            other: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            unsynced: AtomicU64::new(u64::MAX),
        }
    }
}

impl TxState {
    /// Ends the open transaction; whether it was marked to commit unsynced.
    fn end_transaction(&self) -> bool {
        let ended = self.generation.fetch_add(1, Ordering::AcqRel);
        self.unsynced.load(Ordering::Acquire) == ended
    }

    /// (moved apalis' bookkeeping, changed anything else), reset for the next transaction.
    fn take_changes(&self) -> (bool, bool) {
        (
            self.bookkeeping.swap(false, Ordering::Relaxed),
            self.other.swap(false, Ordering::Relaxed),
        )
    }
}

/// A change that only moves apalis' bookkeeping: a job's state (fetched, locked, done,
/// retried, purged) or a worker's registration and heartbeat. Losing it in a power failure
/// is harmless, so its commit need not sync the WAL itself: a job that was taken or finished
/// runs again, and its handler finds its work done (a send's claim, which is synced before
/// the provider is called, says the text went out). Inserting a job is not bookkeeping: the
/// job is the outbox of work still to do.
pub fn is_bookkeeping(operation: SqliteOperation, table: &str) -> bool {
    match table {
        "Jobs" => operation != SqliteOperation::Insert,
        "Workers" => true,
        _ => false,
    }
}

/// The job queue handle of a process: apalis-sqlite's `Jobs` table in the SQLite file, or
/// apalis-redis (with `REDIS_URL`), which every web and worker process shares.
#[derive(Clone)]
pub struct JobQueue {
    backend: Backend,
    wakers: Wakers,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Redis(RedisQueues),
}

/// apalis-redis queues: one per job type, named `{REDIS_PREFIX}{queue}`.
#[derive(Clone)]
pub struct RedisQueues {
    conn: ConnectionManager,
    prefix: String,
}

/// Seconds between apalis-redis worker heartbeats. A worker silent for
/// [`REDIS_MISSED_HEARTBEATS`] beats counts as dead, and the next heartbeat of any other
/// worker puts its in-flight jobs back on the queue (apalis-redis' orphan recovery; its
/// default is 10 beats of 30 s, 300 s).
pub const REDIS_HEARTBEAT_SECS: u64 = 10;
/// See [`REDIS_HEARTBEAT_SECS`]: a SIGKILLed worker's jobs run again after 40-50 s (a worker
/// too busy to beat for 40 s loses its jobs to others; the outbox claim keeps that safe).
pub const REDIS_MISSED_HEARTBEATS: usize = 4;
/// Moves jobs that are due now from the scheduled set to the active list and announces them.
///
/// apalis-redis 1.0's `push_tasks` puts EVERY job into the scheduled set (it never passes a
/// run time of 0), so each would wait for a worker's fetch to promote it, unannounced; and its
/// fetch promotes all due jobs with one Lua `unpack`, which fails ("too many results to
/// unpack") once some 8,000 are due at once, stopping every worker of the queue. Promoting
/// our own immediate jobs at push time keeps the scheduled set to real delays (retries).
/// KEYS: scheduled set, active list, signal list; ARGV: the channel to announce on, then
/// the task ids. Returns how many moved (a job refused by its idempotency key is not there).
static PROMOTE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local moved = 0
        for i = 2, #ARGV do
            if redis.call('zrem', KEYS[1], ARGV[i]) == 1 then
                redis.call('rpush', KEYS[2], ARGV[i])
                moved = moved + 1
            end
        end
        if moved > 0 then
            redis.call('del', KEYS[3])
            redis.call('lpush', KEYS[3], 1)
            redis.call('publish', ARGV[1], moved)
        end
        return moved
        ",
    )
});

/// Ids asked of Redis per `SSCAN` page of [`RedisQueues`]' vacuum.
const VACUUM_PAGE_SIZE: usize = 500;

/// Of the finished jobs ARGV[2..] (ids from the set KEYS[1], the done or dead set), deletes
/// those finished at or before ARGV[1] (Unix seconds; apalis-redis' `done_at`): their data
/// (a field of KEYS[2]), metadata (the hash KEYS[3] .. ':' .. id, which holds the result too)
/// and set entry. An id without metadata is only dropped from the set. Returns how many ids
/// left the set (an id `SSCAN` returned twice counts once).
static VACUUM_PAGE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local deleted = 0
        for i = 2, #ARGV do
            local id = ARGV[i]
            local meta = KEYS[3] .. ':' .. id
            local done_at = redis.call('hget', meta, 'done_at')
            if not done_at or tonumber(done_at) <= tonumber(ARGV[1]) then
                redis.call('hdel', KEYS[2], id)
                redis.call('del', meta)
                deleted = deleted + redis.call('srem', KEYS[1], id)
            end
        end
        return deleted
        ",
    )
});

/// Due retries moved from a queue's scheduled set to its active list per round trip of
/// [`RedisQueues::promote_due`].
pub const PROMOTE_DUE_CHUNK: usize = 1000;

/// Milliseconds between two runs of [`RedisQueues::promote_due`] in a worker process.
pub const PROMOTE_DUE_MS: u64 = 250;

/// Moves up to ARGV[2] jobs due at ARGV[1] (Unix seconds, apalis-redis' scores) from the
/// scheduled set to the active list and, when it moved any, announces them on the channel
/// ARGV[3] (the workers' wake-up) and in the signal list, as [`PROMOTE`] does. KEYS:
/// scheduled set, active list, signal list. Returns how many moved.
static PROMOTE_DUE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local due = redis.call('zrangebyscore', KEYS[1], 0, ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
        for _, id in ipairs(due) do
            redis.call('zrem', KEYS[1], id)
            redis.call('rpush', KEYS[2], id)
        end
        if #due > 0 then
            redis.call('del', KEYS[3])
            redis.call('lpush', KEYS[3], 1)
            redis.call('publish', ARGV[3], #due)
        end
        return #due
        ",
    )
});

/// How long apalis-redis remembers an idempotency key, in seconds (keys carry the message id
/// and the attempt or sweep bucket, so a later, legitimate job never reuses one).
pub const REDIS_IDEMPOTENCY_TTL_SECS: u64 = 3600;

impl RedisQueues {
    /// apalis-redis' configuration of `queue` (one of the `QUEUE_*` names).
    ///
    /// Task locks are off. apalis-redis 1.0 takes a lock as a job starts with an `LREM` of the
    /// job from the queue's active list, which its fetch already took it off with `LTRIM`: the
    /// `LREM` finds nothing and scans the whole list, so every job costs Redis a pass over the
    /// backlog (a 20,000-job backlog drained at 3,171-4,711 no-op jobs/s locked, 43,148-46,798
    /// unlocked; see docs/BENCHMARKS.md). The lock only records `Running` and its holder in the
    /// job's metadata, which nothing here reads. A job in hand stays in its worker's in-flight
    /// set from the fetch either way, and that set is what orphan recovery puts back on the
    /// queue when the worker dies ([`REDIS_HEARTBEAT_SECS`]).
    pub fn config(&self, queue: &str) -> RedisConfig {
        RedisConfig::default()
            .queue(format!("{}{queue}", self.prefix))
            .heartbeat_interval(Duration::from_secs(REDIS_HEARTBEAT_SECS))
            .missed_heartbeats(REDIS_MISSED_HEARTBEATS)
            .idempotency_ttl(Some(Duration::from_secs(REDIS_IDEMPOTENCY_TTL_SECS)))
            .lock_tasks(false)
    }

    /// The connection the queues use.
    pub fn conn(&self) -> &ConnectionManager {
        &self.conn
    }

    /// The pub/sub channel that announces a job pushed to `queue` (`tasks:{active list}:available`,
    /// the name apalis-redis' `batch_push` script uses when it announces one itself).
    pub fn available_channel(&self, queue: &str) -> String {
        format!("tasks:{}:available", self.config(queue).active_jobs_list())
    }

    async fn push(&self, jobs: &[Enqueue]) -> Result<(), ServiceError> {
        for queue in [QUEUE_INBOUND, QUEUE_SEND] {
            let mut now = Vec::new();
            let tasks: Vec<RedisTask> = jobs
                .iter()
                .filter(|e| e.job.queue() == queue)
                .map(|e| {
                    let id = Ulid::generate().to_string();
                    if e.run_at.is_none() {
                        now.push(id.clone());
                    }
                    // apalis-redis reads ids back as ULIDs.
                    e.task(Some(&id))
                })
                .collect();
            if tasks.is_empty() {
                continue;
            }
            let config = self.config(queue);
            let mut conn = self.conn.clone();
            apalis_redis::queries::push_tasks(&mut conn, &config, &tasks)
                .await
                .map_err(|e| ServiceError::Queue(e.to_string()))?;
            if now.is_empty() {
                continue;
            }
            let _: i64 = PROMOTE
                .key(config.scheduled_jobs_set())
                .key(config.active_jobs_list())
                .key(config.signal_list())
                .arg(self.available_channel(queue))
                .arg(&now)
                .invoke_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Deletes the data of jobs finished (done, or dead after their last attempt) more than
    /// `age` ago, and their ids from the queue's done and dead sets. Returns how many jobs were
    /// deleted.
    ///
    /// apalis-redis' own `vacuum_before` reads the whole job-data hash (`HGETALL`) in one Lua
    /// script: with finished jobs kept an hour, that is every job of the last hour, and Redis,
    /// which also holds the sessions and takes the webhooks' job pushes, does nothing else
    /// meanwhile. Here the done and dead sets are walked with `SSCAN`, and each page of ids is
    /// checked and deleted by one short script ([`VACUUM_PAGE`]).
    async fn vacuum(&self, age: Duration) -> Result<u64, ServiceError> {
        let cutoff = now_secs().saturating_sub(age.as_secs());
        let mut conn = self.conn.clone();
        let mut total = 0;
        for queue in [QUEUE_INBOUND, QUEUE_SEND] {
            let config = self.config(queue);
            for set in [config.done_jobs_set(), config.dead_jobs_set()] {
                let mut cursor = 0u64;
                loop {
                    let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                        .arg(&set)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(VACUUM_PAGE_SIZE)
                        .query_async(&mut conn)
                        .await?;
                    if !ids.is_empty() {
                        let deleted: u64 = VACUUM_PAGE
                            .key(&set)
                            .key(config.job_data_hash())
                            .key(config.job_meta_hash())
                            .arg(cutoff)
                            .arg(&ids)
                            .invoke_async(&mut conn)
                            .await?;
                        total += deleted;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        Ok(total)
    }

    /// Moves every due retry of both queues from the scheduled set to the active list,
    /// [`PROMOTE_DUE_CHUNK`] per round trip; returns how many moved.
    ///
    /// apalis-redis' fetch promotes all due jobs with one Lua `unpack`, which fails ("too many
    /// results to unpack") once some 8,000 are due at once, and then fails at every fetch:
    /// the queue stops for every tenant. That many come due together when the workers were
    /// down while a provider incident scheduled retries (each send retries after a backoff).
    /// A worker process runs this before its workers start and every [`PROMOTE_DUE_MS`], so a
    /// fetch finds at most what came due since.
    ///
    /// # Errors
    /// [`ServiceError::Redis`] when Redis fails.
    pub async fn promote_due(&self) -> Result<u64, ServiceError> {
        // One second ahead: apalis-redis' fetch sees a job due from the start of its second,
        // and a burst due in one second must be moved before a fetch in that second finds it.
        let horizon = now_secs() + 1;
        let mut moved = 0;
        for queue in [QUEUE_INBOUND, QUEUE_SEND] {
            let config = self.config(queue);
            loop {
                let n: u64 = PROMOTE_DUE
                    .key(config.scheduled_jobs_set())
                    .key(config.active_jobs_list())
                    .key(config.signal_list())
                    .arg(horizon)
                    .arg(PROMOTE_DUE_CHUNK)
                    .arg(self.available_channel(queue))
                    .invoke_async(&mut self.conn.clone())
                    .await?;
                moved += n;
                if n < PROMOTE_DUE_CHUNK as u64 {
                    break;
                }
            }
        }
        Ok(moved)
    }

    /// Jobs waiting in `queue`: ready to run plus scheduled (a retry's backoff).
    async fn depth(&self, queue: &str) -> Result<u64, ServiceError> {
        let config = self.config(queue);
        let (ready, scheduled): (u64, u64) = redis::pipe()
            .llen(config.active_jobs_list())
            .zcard(config.scheduled_jobs_set())
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(ready + scheduled)
    }
}

impl JobQueue {
    /// A queue in the SQLite database behind `pool`, woken by `wakers`' hooks.
    pub fn sqlite(pool: SqlitePool, wakers: Wakers) -> Self {
        Self {
            backend: Backend::Sqlite(pool),
            wakers,
        }
    }

    /// apalis-redis queues on `conn`, their keys starting with `prefix`.
    pub fn redis(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            backend: Backend::Redis(RedisQueues {
                conn,
                prefix: prefix.to_string(),
            }),
            wakers: Wakers::default(),
        }
    }

    /// The SQLite database the jobs live in (`None` on Redis).
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.backend {
            Backend::Sqlite(pool) => Some(pool),
            Backend::Redis(_) => None,
        }
    }

    /// The Redis queues (`None` on SQLite).
    pub fn redis_queues(&self) -> Option<&RedisQueues> {
        match &self.backend {
            Backend::Redis(r) => Some(r),
            Backend::Sqlite(_) => None,
        }
    }

    /// The wake-up source `queue`'s workers subscribe to.
    pub fn notifier(&self, queue: &str) -> &Notifier {
        self.wakers.of(queue)
    }

    /// Stores jobs (on SQLite, in their own transaction).
    ///
    /// # Errors
    /// [`ServiceError::Queue`] / database errors.
    pub async fn push(&self, jobs: &[Enqueue]) -> Result<(), ServiceError> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                push_in(&mut tx, jobs).await?;
                jobs.iter().for_each(|e| self.wakers.stage(e.job.queue()));
                tx.commit().await?;
                Ok(())
            }
            Backend::Redis(r) => r.push(jobs).await,
        }
    }

    /// Enqueues `jobs` as part of the unit of work `tx`. On SQLite the rows are written in
    /// it: they commit (and wake the workers) with it, or not at all, and no transaction of
    /// their own is needed. On Redis nothing is written here; the jobs are returned, to be
    /// given to [`JobQueue::push`] after the commit.
    ///
    /// # Errors
    /// Database errors.
    pub async fn stage(
        &self,
        tx: &TenantTx,
        jobs: Vec<Enqueue>,
    ) -> Result<Vec<Enqueue>, ServiceError> {
        use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
        if jobs.is_empty() || matches!(self.backend, Backend::Redis(_)) {
            return Ok(jobs);
        }
        let now = now_secs();
        let mut sql = String::from(INSERT_JOBS);
        let mut values: Vec<Value> = Vec::with_capacity(jobs.len() * 8);
        for (i, r) in jobs.iter().map(|e| e.row(now)).enumerate() {
            sql.push_str(if i == 0 { "VALUES " } else { ", " });
            sql.push_str("(?, ?, ?, 'Pending', 0, ?, ?, ?, ?, ?)");
            values.extend([
                r.args.into(),
                r.id.into(),
                r.queue.into(),
                r.max_attempts.into(),
                r.run_at.into(),
                r.priority.into(),
                r.metadata.into(),
                r.key.into(),
            ]);
        }
        sql.push_str(ON_DUPLICATE_KEY);
        tx.conn()
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                sql,
                values,
            ))
            .await?;
        jobs.iter().for_each(|e| self.wakers.stage(e.job.queue()));
        Ok(Vec::new())
    }

    /// Jobs waiting to run in `queue` (ready or scheduled), for `/metrics`.
    ///
    /// # Errors
    /// Database or Redis errors.
    pub async fn depth(&self, queue: &str) -> Result<u64, ServiceError> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM Jobs WHERE job_type = ? AND status IN ('Pending', 'Queued')",
                )
                .bind(queue)
                .fetch_one(pool)
                .await?;
                Ok(n as u64)
            }
            Backend::Redis(r) => r.depth(queue).await,
        }
    }

    /// Deletes jobs that finished (`Done`, `Killed`, or `Failed` with no attempts left) more
    /// than `age` ago, at most `limit` rows per call (short write transactions). The outcome
    /// of the work itself lives on our own rows (a message's status), not in `Jobs`. On Redis
    /// one call removes every finished job older than `age`, in short steps of its own
    /// (`limit` does not apply; see `RedisQueues::vacuum`).
    ///
    /// # Errors
    /// Database errors.
    pub async fn purge_finished(&self, age: Duration, limit: i64) -> Result<u64, ServiceError> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let before = now_secs().saturating_sub(age.as_secs()) as i64;
                let deleted = sqlx::query(
                    // Spelled so the partial index on finished jobs (status IN (…) AND done_at
                    // IS NOT NULL) serves it.
                    "DELETE FROM Jobs WHERE rowid IN (SELECT rowid FROM Jobs \
                     WHERE status IN ('Done', 'Failed', 'Killed') AND done_at IS NOT NULL AND done_at < ? \
                     AND (status <> 'Failed' OR attempts >= max_attempts) LIMIT ?)",
                )
                .bind(before)
                .bind(limit)
                .execute(pool)
                .await?
                .rows_affected();
                Ok(deleted)
            }
            Backend::Redis(r) => r.vacuum(age).await,
        }
    }

    /// Schedules `job` to run after `delay` (a backoff), deduplicated by `key`.
    ///
    /// # Errors
    /// As [`JobQueue::push`].
    pub async fn push_after(
        &self,
        job: Job,
        key: String,
        delay: Duration,
    ) -> Result<(), ServiceError> {
        self.push(&[Enqueue::after(job, key, delay)]).await
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll, Wake, Waker};

    use futures::Stream;

    use super::*;

    /// A task's waker that counts how often it was woken.
    #[derive(Default)]
    struct Woken(AtomicUsize);

    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wake_up_after_one_the_worker_took_still_wakes_it() {
        let notifier = Notifier::default();
        let mut wake_ups = notifier.subscribe();
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut poll = |s: &mut WakeUps| Pin::new(s).poll_next(&mut cx);

        assert_eq!(poll(&mut wake_ups), Poll::Pending);
        notifier.notify();
        notifier.notify();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "woken once");
        assert_eq!(poll(&mut wake_ups), Poll::Ready(Some(())), "coalesced");
        // The worker took that wake-up and fetches without polling the stream again; the
        // next job's wake-up must still reach it.
        notifier.notify();
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);
        assert_eq!(poll(&mut wake_ups), Poll::Ready(Some(())));
        assert_eq!(poll(&mut wake_ups), Poll::Pending);
    }

    #[test]
    fn a_dropped_worker_is_no_longer_notified() {
        let notifier = Notifier::default();
        let kept = notifier.subscribe();
        drop(notifier.subscribe());
        notifier.notify();
        assert_eq!(notifier.subscribers.lock().expect("lock").len(), 1);
        drop(kept);
    }
}
