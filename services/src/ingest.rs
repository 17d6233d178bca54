//! The inbound writer: group commit for webhooks.
//!
//! Every verified inbound text is handed to one writer thread. The writer takes whatever has
//! queued up (up to [`MAX_BATCH`]), writes it in ONE transaction
//! ([`switchboard_entity::ingest::write_batch`]) together with one `HandleInbound` job per
//! tenant listing its stored messages, commits, and hands the commit to the syncer thread,
//! which syncs the WAL to disk and only then answers each waiting webhook (see
//! `run_syncer`); meanwhile the writer writes the next batch.
//! Under light load a batch is one webhook and nothing waits; under heavy load the per-commit
//! cost is shared.
//! Durability is not traded: a webhook is answered 200 only after its commit is on disk.
//!
//! The writer runs SQLite synchronously on its own thread through its own connection (no
//! round trip to another thread per statement). SQLite allows one writer at a time, and every
//! other write in the process goes through the one connection of the write pool: the writer
//! holds that connection while it writes, as the lock, so writes never wait in SQLite's
//! sleeping busy handler.
//!
//! On Postgres there are [`PG_WRITERS`] writers, tasks on the process's runtime with a pooled
//! connection per batch, each with its own queue: a sender's texts all go to one of them, in
//! order. Other processes write concurrently, and Postgres orders them. Jobs then go to Redis
//! after the commit (a crash between the two leaves a stored text without a job, which the
//! sweep re-enqueues: the row is the outbox).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Sqlite, SqlitePool};
use switchboard_entity::ingest::{NewInbound, RowCache, Written, write_batch, write_batch_pg};
use tokio::sync::{mpsc, oneshot};

use crate::ServiceError;
use crate::db::{InboundDb, StoreHealth, SyncData, sync_unless_failed};
use crate::events::{Event, EventBus, EventKind};
use crate::jobs::{self, Enqueue, HandleInbound, InboundText, Job, JobQueue};

/// Most webhooks written in one transaction.
pub const MAX_BATCH: usize = 256;
/// Webhooks that may wait for the writer before submitters wait for room.
pub const QUEUE_DEPTH: usize = 8192;
/// Postgres writer tasks per process. Each statement is a round trip to the server, so one
/// writer leaves the database idle between them; several write their batches concurrently.
/// Each has its own queue, and every text of one sender to one tenant goes to the same one
/// ([`shard_of`]), so a sender's texts are written in the order they arrived.
pub const PG_WRITERS: usize = 4;

struct Pending {
    item: NewInbound,
    reply: oneshot::Sender<Result<Written, ServiceError>>,
}

type Reply = oneshot::Sender<Result<Written, ServiceError>>;

/// Handle to the writer.
#[derive(Clone, Debug)]
pub struct Ingestor {
    /// The writers' queues (one on SQLite); see [`shard_of`].
    queues: Arc<[mpsc::Sender<Pending>]>,
    /// Webhooks submitted and not yet answered.
    in_flight: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    health: StoreHealth,
}

/// Running totals of one [`Ingestor`] (all its writers) since it started, from
/// [`Ingestor::stats`]; exported at `/metrics`. They show where a webhook's time in the store
/// goes: `texts / commits` is the mean batch, `write_time / commits` a batch's time in the
/// writer, `wal_sync_time / wal_syncs` one WAL `fdatasync`, `commits / wal_syncs` the
/// commits each sync answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Transactions the writers committed (one per batch, or per webhook when a batch that
    /// failed is written again one by one).
    pub commits: u64,
    /// Webhooks in those commits, stored or found to be duplicates.
    pub texts: u64,
    /// Wall-clock time the writers spent writing and committing those transactions, time
    /// their thread waited for a CPU included.
    pub write_time: Duration,
    /// WAL syncs of the SQLite syncer, failed ones included (0 on Postgres, whose commit is
    /// durable by itself).
    pub wal_syncs: u64,
    /// Wall-clock time spent in those syncs.
    pub wal_sync_time: Duration,
}

/// The atomics behind [`PipelineStats`]; durations in nanoseconds.
#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    texts: AtomicU64,
    write_nanos: AtomicU64,
    wal_syncs: AtomicU64,
    wal_sync_nanos: AtomicU64,
}

impl Counters {
    /// Counts one commit of `texts` webhooks that took since `started`.
    fn committed(&self, texts: usize, started: Instant) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.texts.fetch_add(texts as u64, Ordering::Relaxed);
        self.write_nanos
            .fetch_add(nanos_since(started), Ordering::Relaxed);
    }

    /// Counts one WAL sync that took since `started`.
    fn synced(&self, started: Instant) {
        self.wal_syncs.fetch_add(1, Ordering::Relaxed);
        self.wal_sync_nanos
            .fetch_add(nanos_since(started), Ordering::Relaxed);
    }
}

fn nanos_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Ingestor {
    /// Starts the SQLite writer thread on `db` (its own connection to the database file),
    /// taking `lock` (the write pool, whose one connection is the process's write lock) for
    /// each run of batches, and its syncer thread. A failed WAL sync or a panic of either
    /// thread fails `health`.
    pub fn start_sqlite(
        db: InboundDb,
        lock: SqlitePool,
        events: EventBus,
        jobs: JobQueue,
        health: &StoreHealth,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (committed, to_sync) = mpsc::unbounded_channel();
        let in_tx = jobs.sqlite_pool().is_some();
        let InboundDb { conn, wal } = db;
        let counters = Arc::new(Counters::default());
        let syncer = run_syncer(
            wal,
            events,
            jobs,
            in_tx,
            to_sync,
            counters.clone(),
            health.clone(),
        );
        on_own_thread("inbound-sync", health.watching("inbound syncer", syncer));
        let writer = run_sqlite(conn, lock, in_tx, rx, committed, counters.clone());
        on_own_thread("inbound-writer", health.watching("inbound writer", writer));
        Self::new(vec![tx], counters, health)
    }

    /// Starts [`PG_WRITERS`] Postgres writer tasks on `pool`, each with its own queue; a
    /// panic of one fails `health`.
    pub fn start_postgres(
        pool: PgPool,
        events: EventBus,
        jobs: JobQueue,
        health: &StoreHealth,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let queues = (0..PG_WRITERS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE_DEPTH / PG_WRITERS);
                let writer = run_postgres(
                    pool.clone(),
                    events.clone(),
                    jobs.clone(),
                    rx,
                    counters.clone(),
                );
                tokio::spawn(health.watching("inbound writer", writer));
                tx
            })
            .collect();
        Self::new(queues, counters, health)
    }

    fn new(
        queues: Vec<mpsc::Sender<Pending>>,
        counters: Arc<Counters>,
        health: &StoreHealth,
    ) -> Self {
        Self {
            queues: queues.into(),
            in_flight: Arc::default(),
            counters,
            health: health.clone(),
        }
    }

    /// The writers' running totals since they started.
    pub fn stats(&self) -> PipelineStats {
        let c = &self.counters;
        let time = |nanos: &AtomicU64| Duration::from_nanos(nanos.load(Ordering::Relaxed));
        PipelineStats {
            commits: c.commits.load(Ordering::Relaxed),
            texts: c.texts.load(Ordering::Relaxed),
            write_time: time(&c.write_nanos),
            wal_syncs: c.wal_syncs.load(Ordering::Relaxed),
            wal_sync_time: time(&c.wal_sync_nanos),
        }
    }

    /// Webhooks handed to the writer and not yet answered: queued, or in the batch being
    /// written.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Stores one inbound text; returns once it is committed (or found to be a duplicate).
    ///
    /// # Errors
    /// Database errors (the webhook answers 500; nothing is stored), or
    /// [`ServiceError::WriterGone`] while shutting down or once the store has failed
    /// ([`StoreHealth`]).
    pub async fn submit(&self, item: NewInbound) -> Result<Written, ServiceError> {
        if self.health.failure().is_some() {
            return Err(ServiceError::WriterGone);
        }
        let _counted = InFlight::enter(&self.in_flight);
        let (reply, rx) = oneshot::channel();
        self.queues[shard_of(&item, self.queues.len())]
            .send(Pending { item, reply })
            .await
            .map_err(|_| ServiceError::WriterGone)?;
        rx.await.map_err(|_| ServiceError::WriterGone)?
    }
}

/// The queue (of `queues`) that `item` goes to: the same for every text of one sender to one
/// tenant. A writer takes its queue's texts in order and writes one batch at a time, so the
/// texts of a sender are stored in the order they arrived: their ids (the order the bot
/// answers them and the thread shows them) and the order their STOP and START take effect.
/// Texts of different senders are independent and spread over the writers.
fn shard_of(item: &NewInbound, queues: usize) -> usize {
    use std::hash::{DefaultHasher, Hash, Hasher};
    if queues == 1 {
        return 0;
    }
    let mut h = DefaultHasher::new();
    (item.tenant_id, item.from.as_str()).hash(&mut h);
    (h.finish() % queues as u64) as usize
}

/// One webhook counted in [`Ingestor::in_flight`] until dropped (answered, failed or
/// cancelled).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Longest time the writer keeps the write lock across back-to-back batches before letting
/// other writers (jobs, tenant updates) have it, in milliseconds.
pub const MAX_HOLD_MS: u64 = 10;

/// Runs `task` on a new thread named `name`, on a runtime of its own.
fn on_own_thread(name: &str, task: impl Future<Output = ()> + Send + 'static) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime of an inbound thread")
                .block_on(task)
        })
        .expect("inbound thread");
}

/// A committed batch on its way to the syncer.
struct Committed {
    items: Vec<NewInbound>,
    replies: Vec<Reply>,
    results: Vec<Written>,
}

/// Most committed batches answered after one WAL sync.
const MAX_SYNC_GROUP: usize = 1024;

/// The syncer: `fdatasync`s the WAL after each commit (or several, when commits come faster
/// than syncs), then answers the commits' webhooks, wakes the workers and announces the
/// messages, in commit order.
///
/// The writer's commits write their frames without syncing them ([`crate::walbuf`]), and it
/// goes on with its next batch while this thread waits for the disk: durability is the same
/// as `FULL` for every webhook answered (its frames are on disk before its 200), and the
/// writer never idles in `fsync`. The WAL is a prefix chain (each frame's checksum covers the
/// frames before it), so a power loss keeps whole commits in order; a commit lost that way
/// was never answered, and Twilio retries it. Until its sync a commit is visible to this
/// process's readers, whose own writes sync the WAL before any effect outside it (a send job
/// syncs its claim first).
///
/// A failed sync fails the webhooks of its commits (500: Twilio retries) and `health`, for
/// good: every later commit fails too, unsynced, and [`Ingestor::submit`] takes no more
/// texts, until the process restarts and SQLite recovers the WAL from what is on disk (a
/// text that did reach it is then a duplicate, answered 200).
async fn run_syncer(
    wal: impl SyncData,
    events: EventBus,
    jobs: JobQueue,
    in_tx: bool,
    mut to_sync: mpsc::UnboundedReceiver<Committed>,
    counters: Arc<Counters>,
    health: StoreHealth,
) {
    let mut group = Vec::with_capacity(MAX_SYNC_GROUP);
    while to_sync.recv_many(&mut group, MAX_SYNC_GROUP).await > 0 {
        let started = Instant::now();
        let synced = sync_unless_failed(&wal, &health);
        counters.synced(started);
        if let Err(e) = &synced {
            tracing::error!(error = %e, commits = group.len(), "WAL not synced; their webhooks fail");
        }
        for Committed {
            items,
            replies,
            results,
        } in group.drain(..)
        {
            match &synced {
                Ok(()) => answer(&events, &jobs, in_tx, &items, replies, results).await,
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(ServiceError::WalSync(e.clone())));
                    }
                }
            }
        }
    }
}

async fn run_sqlite(
    mut conn: rusqlite::Connection,
    lock: SqlitePool,
    in_tx: bool,
    mut rx: mpsc::Receiver<Pending>,
    committed: mpsc::UnboundedSender<Committed>,
    counters: Arc<Counters>,
) {
    // With the SQLite queue (`in_tx`) a batch's jobs commit with its rows; otherwise they
    // are pushed after the commit.
    let commit = |items, replies, results| {
        // A closed syncer (shutting down) drops the replies: their webhooks fail.
        let _ = committed.send(Committed {
            items,
            replies,
            results,
        });
    };
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut held: Option<(PoolConnection<Sqlite>, Instant)> = None;
    let mut rows = RowCache::default();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (items, replies): (Vec<NewInbound>, Vec<_>) =
            batch.drain(..).map(|p| (p.item, p.reply)).unzip();
        let (guard, since) = match held.take() {
            Some(h) => h,
            None => match lock.acquire().await {
                Ok(guard) => (guard, Instant::now()),
                Err(e) => {
                    tracing::error!(error = %e, "write lock unavailable");
                    for reply in replies {
                        let _ = reply.send(Err(ServiceError::Sqlx(sqlx::Error::PoolTimedOut)));
                    }
                    continue;
                }
            },
        };
        match write_sqlite(&mut conn, &items, in_tx, &mut rows, &counters) {
            Ok(results) => commit(items, replies, results),
            Err(e) if items.len() == 1 => fail(replies.into_iter().next().expect("one reply"), e),
            Err(e) if e.is_database_unavailable() => fail_all(replies, &e),
            Err(e) => {
                // One bad item must not fail the others: write them one by one.
                tracing::warn!(error = %e, size = items.len(), "inbound batch failed; retrying one by one");
                for (item, reply) in items.into_iter().zip(replies) {
                    let one = vec![item];
                    match write_sqlite(&mut conn, &one, in_tx, &mut rows, &counters) {
                        Ok(results) => commit(one, vec![reply], results),
                        Err(e) => fail(reply, e),
                    }
                }
            }
        }
        if !rx.is_empty() && since.elapsed() < Duration::from_millis(MAX_HOLD_MS) {
            held = Some((guard, since));
        }
    }
}

/// One transaction: the rows, and (with `in_tx`) a `HandleInbound` job per tenant of the
/// batch; counted in `counters` once committed.
fn write_sqlite(
    conn: &mut rusqlite::Connection,
    items: &[NewInbound],
    in_tx: bool,
    rows: &mut RowCache,
    counters: &Counters,
) -> Result<Vec<Written>, ServiceError> {
    let started = Instant::now();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let results = write_batch(&tx, items, rows)?;
    if in_tx {
        jobs::push_in_sync(&tx, &handle_jobs(items, &results, true))?;
    }
    tx.commit()?;
    counters.committed(items.len(), started);
    Ok(results)
}

async fn run_postgres(
    pool: PgPool,
    events: EventBus,
    jobs: JobQueue,
    mut rx: mpsc::Receiver<Pending>,
    counters: Arc<Counters>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (items, replies): (Vec<NewInbound>, Vec<_>) =
            batch.drain(..).map(|p| (p.item, p.reply)).unzip();
        match write_postgres(&pool, &items, &counters).await {
            Ok(results) => answer(&events, &jobs, false, &items, replies, results).await,
            Err(e) if e.is_database_unavailable() => fail_all(replies, &e),
            Err(e) => {
                if items.len() > 1 {
                    tracing::warn!(error = %e, size = items.len(), "inbound batch failed; retrying one by one");
                }
                for (item, reply) in items.into_iter().zip(replies) {
                    let one = std::slice::from_ref(&item);
                    match write_postgres(&pool, one, &counters).await {
                        Ok(results) => {
                            answer(&events, &jobs, false, one, vec![reply], results).await
                        }
                        // Another process stored the same MessageSid between our check and
                        // our insert (a Twilio retry racing the original): a duplicate.
                        Err(ServiceError::Sqlx(sqlx::Error::Database(db)))
                            if db.constraint() == Some("ux_messages_provider_sid") =>
                        {
                            let _ = reply.send(Ok(Written::Duplicate));
                        }
                        Err(e) => fail(reply, e),
                    }
                }
            }
        }
    }
}

/// One transaction of `items`, counted in `counters` once committed.
async fn write_postgres(
    pool: &PgPool,
    items: &[NewInbound],
    counters: &Counters,
) -> Result<Vec<Written>, ServiceError> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let results = write_batch_pg(&mut tx, items).await?;
    tx.commit().await?;
    counters.committed(items.len(), started);
    Ok(results)
}

/// The `HandleInbound` jobs of a batch's stored texts: one per tenant, listing its texts in
/// arrival order (`per_tenant`, the SQLite queue, where every job row is written by the one
/// writer), or one per text (Redis, where separate jobs spread over the worker processes).
/// Each job's key is its first text's.
fn handle_jobs(items: &[NewInbound], results: &[Written], per_tenant: bool) -> Vec<Enqueue> {
    let mut jobs: Vec<HandleInbound> = Vec::new();
    for (r, it) in results.iter().zip(items) {
        let Written::Stored { message_id, .. } = r else {
            continue;
        };
        let text = InboundText {
            message_id: *message_id,
            request_id: it.request_id.clone(),
        };
        match jobs
            .iter_mut()
            .find(|j| per_tenant && j.tenant_id == it.tenant_id)
        {
            Some(job) => job.more.push(text),
            None => jobs.push(HandleInbound::one(
                it.tenant_id,
                text.message_id,
                text.request_id,
            )),
        }
    }
    jobs.into_iter()
        .map(|job| {
            let key = format!("inbound:{}", job.message_id);
            Enqueue::now(Job::HandleInbound(job), key)
        })
        .collect()
}

fn fail(reply: Reply, e: ServiceError) {
    tracing::error!(error = %e, "inbound write failed");
    let _ = reply.send(Err(e));
}

/// Fails every webhook of a batch the database could not take
/// ([`ServiceError::is_database_unavailable`]): Twilio retries each later.
fn fail_all(replies: Vec<Reply>, e: &ServiceError) {
    tracing::error!(error = %e, size = replies.len(), "inbound batch failed; the database is unavailable");
    for reply in replies {
        let _ = reply.send(Err(ServiceError::Unavailable(e.to_string())));
    }
}

/// After the commit (on SQLite, after its WAL sync): push the jobs (unless they were
/// committed with the rows), wake the workers, announce the messages, answer the webhooks.
async fn answer(
    events: &EventBus,
    jobs: &JobQueue,
    pushed: bool,
    items: &[NewInbound],
    replies: Vec<Reply>,
    results: Vec<Written>,
) {
    if pushed {
        if results.iter().any(|r| matches!(r, Written::Stored { .. })) {
            jobs.notifier(jobs::QUEUE_INBOUND).notify();
        }
    } else {
        let pending = handle_jobs(items, &results, false);
        if !pending.is_empty()
            && let Err(e) = jobs.push(&pending).await
        {
            // The texts are stored: the sweep enqueues their jobs later.
            tracing::error!(error = %e, count = pending.len(), "inbound jobs not enqueued; the sweep will");
        }
    }
    for ((item, reply), r) in items.iter().zip(replies).zip(results) {
        if let Written::Stored {
            message_id,
            conversation_id,
            ..
        } = &r
        {
            events.publish(Event {
                kind: EventKind::MessageCreated,
                tenant_id: item.tenant_id,
                conversation_id: *conversation_id,
                message_id: Some(*message_id),
            });
        }
        let _ = reply.send(Ok(r));
    }
}

#[cfg(test)]
mod tests {
    use switchboard_domain::{PhoneNumberId, TenantId};

    use super::*;

    /// A committed batch of one webhook, and where its answer arrives.
    fn one_commit() -> (Committed, oneshot::Receiver<Result<Written, ServiceError>>) {
        let (reply, answer) = oneshot::channel();
        let item = NewInbound {
            tenant_id: TenantId::new(),
            phone_number_id: PhoneNumberId::new(),
            from: "+15125550111".into(),
            provider_sid: "SM00000000000000000000000000000001".into(),
            body: "hi".into(),
            media: None,
            segments: 1,
            encoding: "gsm7",
            received_at: chrono::Utc::now(),
            keyword: None,
            provider_replied: false,
            request_id: None,
        };
        let committed = Committed {
            items: vec![item],
            replies: vec![reply],
            results: vec![Written::Duplicate],
        };
        (committed, answer)
    }

    /// A WAL whose syncs fail while `failing` is set, counting the syncs tried.
    #[derive(Default)]
    struct Disk {
        failing: std::sync::atomic::AtomicBool,
        tried: AtomicUsize,
    }

    impl SyncData for &Disk {
        fn sync_data(&self) -> std::io::Result<()> {
            self.tried.fetch_add(1, Ordering::Relaxed);
            if self.failing.load(Ordering::Relaxed) {
                Err(std::io::Error::from_raw_os_error(5)) // EIO
            } else {
                Ok(())
            }
        }
    }

    /// Runs the syncer on `wal` for one commit; returns the webhook's answer (the sync is
    /// counted whether it succeeded, failed or was not tried).
    async fn answer_after_sync(
        wal: &'static Disk,
        health: &StoreHealth,
    ) -> Result<Written, ServiceError> {
        // Never connected: the syncer only wakes the (absent) workers through it.
        let pool = SqlitePool::connect_lazy("sqlite::memory:").expect("pool");
        let jobs = JobQueue::sqlite(pool, crate::jobs::Wakers::default());
        let (to_syncer, to_sync) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let syncer = tokio::spawn(run_syncer(
            wal,
            EventBus::new(),
            jobs,
            true,
            to_sync,
            counters.clone(),
            health.clone(),
        ));
        let (committed, answer) = one_commit();
        assert!(to_syncer.send(committed).is_ok(), "syncer running");
        drop(to_syncer);
        syncer.await.expect("syncer ends with its channel");
        assert_eq!(
            counters.wal_syncs.load(Ordering::Relaxed),
            1,
            "one sync counted"
        );
        answer.await.expect("answered")
    }

    #[tokio::test]
    async fn after_a_failed_wal_sync_no_commit_is_answered_and_no_text_taken() {
        let disk: &'static Disk = Box::leak(Box::default());
        let health = StoreHealth::default();
        assert_eq!(
            answer_after_sync(disk, &health).await.expect("synced"),
            Written::Duplicate
        );

        // EIO: the webhook fails, so Twilio retries, and the store fails.
        disk.failing.store(true, Ordering::Relaxed);
        match answer_after_sync(disk, &health).await {
            Err(ServiceError::WalSync(reason)) => assert!(reason.contains("WAL sync failed")),
            other => panic!("expected a WAL sync error, got {other:?}"),
        }
        assert!(
            health
                .failure()
                .is_some_and(|f| f.contains("WAL sync failed"))
        );

        // The disk answers again, but what the failed sync covered may be lost: a retried
        // webhook found as a duplicate is still not answered 200, and nothing is synced.
        disk.failing.store(false, Ordering::Relaxed);
        match answer_after_sync(disk, &health).await {
            Err(ServiceError::WalSync(reason)) => assert!(reason.starts_with("not synced")),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(
            disk.tried.load(Ordering::Relaxed),
            2,
            "no sync tried once failed"
        );

        let (queue, mut queued) = mpsc::channel(1);
        let ingestor = Ingestor::new(vec![queue], Arc::default(), &health);
        let (committed, _) = one_commit();
        assert!(matches!(
            ingestor.submit(committed.items[0].clone()).await,
            Err(ServiceError::WriterGone)
        ));
        assert!(queued.try_recv().is_err(), "nothing reached the writer");
    }

    #[tokio::test]
    async fn a_second_copy_of_a_text_to_a_released_number_is_not_answered_as_stored() {
        let dir = std::env::temp_dir().join(format!("released-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let url = format!("sqlite://{}", dir.join("switchboard.db").display());
        let health = StoreHealth::default();
        let _db = crate::db::open_sqlite(&url, &crate::jobs::Wakers::default(), &health)
            .await
            .expect("opened");
        let mut writer = crate::db::open_inbound_writer(&url).expect("writer");
        let (copy, _) = one_commit();
        let text = copy.items[0].clone();
        let tx = writer.conn.transaction().expect("transaction");
        tx.execute(
            "INSERT INTO tenants (id, name, time_zone, created_at) VALUES (?1, 'Old owner', 'UTC', '2026-01-01')",
            [text.tenant_id.uuid().as_bytes()],
        )
        .expect("tenant");
        tx.execute(
            "INSERT INTO phone_numbers (id, tenant_id, e164, bot, created_at, released_at) \
             VALUES (?1, ?2, '+15125550100', 'none', '2026-01-01', '2026-01-02')",
            [
                text.phone_number_id.uuid().as_bytes(),
                text.tenant_id.uuid().as_bytes(),
            ],
        )
        .expect("a released number");
        // A Twilio retry that arrived while the first copy was queued: the same batch.
        let written =
            write_batch(&tx, &[text.clone(), text], &mut RowCache::default()).expect("written");
        assert_eq!(written, [Written::Released, Written::Released]);
        drop(tx);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Calls of the busy handler of the writer in the test below.
    static BUSY_CALLS: AtomicUsize = AtomicUsize::new(0);

    /// A busy handler that gives up at once, counting its calls.
    fn give_up_when_busy(_: i32) -> bool {
        BUSY_CALLS.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// While another process holds SQLite's write lock, a batch fails as a whole after one
    /// wait for the lock: its texts are not tried one by one, each waiting out the busy
    /// timeout again while every other writer waits. Each webhook gets an error (Twilio
    /// retries it).
    #[tokio::test]
    async fn a_batch_the_busy_database_refuses_fails_after_one_wait() {
        let dir = std::env::temp_dir().join(format!("busy-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let url = format!("sqlite://{}", dir.join("switchboard.db").display());
        let db = crate::db::open_sqlite(
            &url,
            &crate::jobs::Wakers::default(),
            &StoreHealth::default(),
        )
        .await
        .expect("opened");
        let writer = crate::db::open_inbound_writer(&url).expect("writer");
        writer
            .conn
            .busy_handler(Some(give_up_when_busy))
            .expect("busy handler");
        let other =
            rusqlite::Connection::open(dir.join("switchboard.db")).expect("another process");
        other
            .execute_batch("BEGIN IMMEDIATE")
            .expect("holds the write lock");

        let (queue, queued) = mpsc::channel(8);
        let mut answers = Vec::new();
        for n in 0..3 {
            let (mut pending, answer) = one_commit();
            let mut item = pending.items.remove(0);
            item.provider_sid = format!("SM0000000000000000000000000000000{n}");
            let reply = pending.replies.remove(0);
            assert!(queue.send(Pending { item, reply }).await.is_ok());
            answers.push(answer);
        }
        drop(queue);
        let (committed, _to_sync) = mpsc::unbounded_channel();
        let lock = db.write.get_sqlite_connection_pool().clone();
        run_sqlite(writer.conn, lock, false, queued, committed, Arc::default()).await;
        for answer in answers {
            match answer.await.expect("answered") {
                Err(e) => assert!(e.to_string().contains("locked"), "{e}"),
                Ok(written) => panic!("stored while the lock was held elsewhere: {written:?}"),
            }
        }
        assert_eq!(
            BUSY_CALLS.load(Ordering::Relaxed),
            1,
            "one wait for the lock, for the whole batch"
        );
        drop(other);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_panicking_writer_fails_the_store() {
        let health = StoreHealth::default();
        let guard = health.fail_on_panic("inbound writer");
        let _ = std::thread::spawn(move || {
            let _guard = guard;
            panic!("a bug");
        })
        .join();
        assert_eq!(
            health.failure().as_deref(),
            Some("the inbound writer panicked")
        );

        let clean = StoreHealth::default();
        drop(clean.fail_on_panic("inbound writer"));
        assert_eq!(
            clean.failure(),
            None,
            "a writer that ends at shutdown is no failure"
        );
    }
}
