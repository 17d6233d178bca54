//! Switchboard's workers: one apalis worker per job type, each handler a few lines that
//! rebuild the [`TenantCtx`] from the job's tenant id and call one service.
//!
//! Jobs carry ids only. A job whose target is gone succeeds (logged); a handler returns an
//! error only when running it again can help (database trouble), and apalis then re-runs it
//! up to [`jobs::MAX_JOB_ATTEMPTS`] times. Provider failures are not errors here: the send
//! service records them and schedules its own retry with backoff.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use apalis_sqlite::{Config, SqliteStorage};
use switchboard_domain::MessageId;
use switchboard_services::jobs::{
    self, FALLBACK_POLL_SECS, HandleInbound, RedisQueues, SendMessage,
};
use switchboard_services::{
    App, ServiceError, TenantCtx, correlation, inbound, messaging, metrics, sweep,
};

/// Seconds between worker heartbeats. A worker silent for [`MISSED_HEARTBEATS`] beats is
/// presumed dead and its running jobs are handed to another worker (crash recovery).
pub const HEARTBEAT_SECS: u64 = 10;
/// See [`HEARTBEAT_SECS`]: jobs of a crashed worker are re-run after about 30 s.
pub const MISSED_HEARTBEATS: usize = 3;
/// Seconds a shutting-down worker waits for running jobs before giving up on them (they are
/// then re-run elsewhere).
pub const SHUTDOWN_GRACE_SECS: u64 = 20;

/// Inbound texts handled at once in this process, across all `HandleInbound` jobs: the
/// `WORKER_CONCURRENCY_INBOUND` setting. A job lists one commit's texts of a tenant (on
/// SQLite, a burst can put dozens in one job), so the number of jobs running alone would
/// not bound them.
#[derive(Clone)]
struct TextPermits(Arc<tokio::sync::Semaphore>);

/// Handles the job's texts concurrently, each under its own webhook's correlation id and a
/// permit of [`TextPermits`] (texts of one conversation still take their turn: see
/// [`inbound::handle`]). A text that fails does not hold up the others; the job then fails
/// with the first error and apalis runs it again, and the re-run finds the texts already
/// handled done.
async fn handle_inbound(
    job: HandleInbound,
    app: Data<Arc<App>>,
    permits: Data<TextPermits>,
) -> Result<(), BoxDynError> {
    let ctx = TenantCtx::for_job(job.tenant_id);
    let permits: &tokio::sync::Semaphore = &permits.0.0;
    let handled = futures::future::join_all(job.texts().map(|text| {
        let (app, ctx) = (&app, &ctx);
        async move {
            let _permit = permits
                .acquire()
                .await
                .expect("the permits are never closed");
            let work = inbound::handle(app, ctx, text.message_id);
            let decision = traced("handle_inbound", text.request_id, work).await;
            finish("handle_inbound", text.message_id, decision)
        }
    }))
    .await;
    handled.into_iter().collect()
}

async fn send_message(job: SendMessage, app: Data<Arc<App>>) -> Result<(), BoxDynError> {
    let ctx = TenantCtx::for_job(job.tenant_id);
    let work = messaging::deliver(&app, &ctx, job.message_id);
    let delivery = traced("send_message", job.request_id, work).await;
    finish("send_message", job.message_id, delivery)
}

/// Runs a job's work in a span carrying the correlation id from its payload (a new one for a
/// job that has none, e.g. from the sweep), which jobs it enqueues inherit.
async fn traced<F: Future>(job: &'static str, request_id: Option<String>, work: F) -> F::Output {
    use tracing::Instrument;
    let id = correlation::accept(request_id.as_deref());
    let span = tracing::info_span!("job", job, request_id = %id);
    correlation::scope(id, work.instrument(span)).await
}

/// A job whose rows are gone succeeds (logged); other errors make apalis run it again.
fn finish<T: std::fmt::Debug>(
    job: &'static str,
    message_id: MessageId,
    result: Result<T, ServiceError>,
) -> Result<(), BoxDynError> {
    match result {
        Ok(outcome) => {
            metrics::job(job, "ok");
            tracing::debug!(job, %message_id, ?outcome, "job finished");
            Ok(())
        }
        Err(ServiceError::NotFound) => {
            metrics::job(job, "gone");
            tracing::info!(job, %message_id, "a row the job needs is gone; nothing to do");
            Ok(())
        }
        Err(e) => {
            metrics::job(job, "error");
            Err(e.into())
        }
    }
}

/// Wake-ups of `queue`'s workers: each announcement of a new job (a commit that inserted one
/// on SQLite, apalis-redis' pub/sub message on Redis), and a poll every
/// [`FALLBACK_POLL_SECS`] (delayed retries; a wake-up can be missed between two fetches).
fn wake(app: &App, queue: &str) -> Strategy {
    Strategy::new()
        .stream(app.jobs.notifier(queue).subscribe())
        .interval(Duration::from_secs(FALLBACK_POLL_SECS))
}

/// `queue` in the SQLite file, on the write connection, fetching up to `batch` jobs per
/// call (see [`redis_storage`]).
fn sqlite_storage<T>(app: &App, queue: &str, batch: usize) -> PollWith<SqliteStorage<T>, Strategy> {
    let pool = app.jobs.sqlite_pool().expect("the SQLite queue");
    let config = Config::default()
        .queue(queue)
        .batch_size(batch)
        .heartbeat_interval(Duration::from_secs(HEARTBEAT_SECS))
        .missed_heartbeats(MISSED_HEARTBEATS);
    SqliteStorage::<T>::new(pool)
        .with_config(config)
        .poll_with_strategy(wake(app, queue))
}

/// `queue` in Redis, shared by every process (orphan recovery as configured by
/// [`RedisQueues::config`]), fetching up to `batch` jobs per call: the worker's concurrency,
/// rather than apalis' default of 10 (sends 2,224 / 2,263 vs 2,125 / 2,198 per second with
/// 32 in flight, docs/BENCHMARKS.md).
fn redis_storage<T>(app: &App, queue: &str, batch: usize) -> PollWith<RedisStorage<T>, Strategy> {
    let queues: &RedisQueues = app.jobs.redis_queues().expect("the Redis queues");
    RedisStorage::<T>::new(queues.conn().clone())
        .with_config(queues.config(queue).batch_size(batch))
        .poll_with_strategy(wake(app, queue))
}

/// Registers one worker per job type on `monitor`, on whichever queue backend the app has,
/// each with its queue's concurrency.
fn register(monitor: Monitor, app: &Arc<App>) -> Monitor {
    let instance = format!("{}-{}", hostname(), std::process::id());
    let settings = &app.settings;
    // One registration: the worker's name, queue, concurrency, storage, and handler.
    macro_rules! worker {
        ($monitor:expr, $name:literal, $queue:expr, $n:expr, $storage:expr, $handler:expr $(, $data:ident)?) => {{
            let (app, instance, n) = (app.clone(), instance.clone(), $n);
            $(let $data = $data.clone();)?
            $monitor.register(move |restarts| {
                WorkerBuilder::new(format!("{}-{instance}-{restarts}", $name))
                    .backend($storage(&app, $queue, n))
                    .data(app.clone())
                    $(.data($data.clone()))?
                    .concurrency(n)
                    .catch_panic()
                    .build($handler)
            })
        }};
    }
    // Shared by the inbound worker's restarts, so the bound holds across them.
    let permits = TextPermits(Arc::new(tokio::sync::Semaphore::new(
        settings.worker_concurrency_inbound,
    )));
    macro_rules! both {
        ($storage:ident) => {{
            let monitor = worker!(
                monitor,
                "inbound",
                jobs::QUEUE_INBOUND,
                settings.worker_concurrency_inbound,
                $storage::<HandleInbound>,
                handle_inbound,
                permits
            );
            worker!(
                monitor,
                "send",
                jobs::QUEUE_SEND,
                settings.worker_concurrency_send,
                $storage::<SendMessage>,
                send_message
            )
        }};
    }
    if app.jobs.redis_queues().is_some() {
        both!(redis_storage)
    } else {
        both!(sqlite_storage)
    }
}

/// Runs the workers (and the periodic sweep) until `shutdown` completes, then lets running
/// jobs finish for up to [`SHUTDOWN_GRACE_SECS`].
///
/// # Errors
/// When the worker monitor fails.
pub async fn run(
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MonitorError> {
    let monitor = register(Monitor::new(), &app)
        .should_restart(|worker, error| {
            tracing::error!(worker = worker.name(), %error, "worker stopped; restarting");
            true
        })
        .shutdown_timeout(Duration::from_secs(SHUTDOWN_GRACE_SECS));

    if let Some(queues) = app.jobs.redis_queues() {
        // Before the first fetch: see `promote_forever`.
        promote(queues).await;
    }
    let promoter = tokio::spawn(promote_forever(app.clone()));
    let sweeper = tokio::spawn(sweep_forever(app));
    let result = monitor
        .run_with_signal(async move {
            shutdown.await;
            Ok(())
        })
        .await;
    sweeper.abort();
    promoter.abort();
    result
}

/// Every [`jobs::PROMOTE_DUE_MS`], move the Redis queues' due retries to their active lists
/// in chunks, so that apalis-redis' fetch, which would promote them all in one Lua `unpack`,
/// never finds the thousands that fail it (see [`RedisQueues::promote_due`]).
async fn promote_forever(app: Arc<App>) {
    let Some(queues) = app.jobs.redis_queues() else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(jobs::PROMOTE_DUE_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        promote(queues).await;
    }
}

async fn promote(queues: &RedisQueues) {
    if let Err(e) = queues.promote_due().await {
        tracing::error!(error = %e, "due retries not promoted");
    }
}

/// Every [`sweep::INTERVAL_SECS`], re-enqueue work that lost its job (see [`sweep::run`]).
async fn sweep_forever(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(sweep::INTERVAL_SECS));
    loop {
        tick.tick().await;
        match sweep::run(&app).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(requeued = n, "sweep re-enqueued stuck messages"),
            Err(e) => tracing::error!(error = %e, "sweep failed"),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into())
}
