//! Prometheus metrics (`GET /metrics`), recorded through the `metrics` facade and rendered by
//! `metrics-exporter-prometheus`. One recorder per process, installed by [`install`].
//!
//! | name | type | labels |
//! |------|------|--------|
//! | `switchboard_webhooks_total` | counter | `endpoint` (sms, status), `result` |
//! | `switchboard_jobs_total` | counter | `job` (handle_inbound, send_message), `outcome` (ok, gone, error) |
//! | `switchboard_queue_depth` | gauge | `queue`: jobs ready or scheduled, read at scrape time |
//! | `switchboard_send_seconds` | histogram | `provider`: one provider API call, seconds |
//! | `switchboard_provider_errors_total` | counter | `provider`, `code` (Twilio error code or HTTP status) |
//! | `switchboard_sqlite_commits_total` | counter | `wal_sync` (synced, skipped): commits of the SQLite write pool, read at scrape time (see `walbuf::CommitSync`) |
//! | `switchboard_sqlite_wal_group_syncs_total` | counter | none: WAL syncs by `db::WalSyncer` after commits that skipped theirs, read at scrape time |
//! | `switchboard_inbound_commits_total` | counter | none: transactions of the inbound writer (`ingest::PipelineStats`), read at scrape time |
//! | `switchboard_inbound_texts_total` | counter | none: webhooks in those transactions (divided by the commits: the mean batch) |
//! | `switchboard_inbound_write_microseconds_total` | counter | none: wall-clock time the writer spent writing and committing them |
//! | `switchboard_inbound_wal_syncs_total` | counter | none: WAL syncs of the inbound writer's syncer (SQLite) |
//! | `switchboard_inbound_wal_sync_microseconds_total` | counter | none: wall-clock time in those syncs |

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::App;
use crate::jobs::{QUEUE_INBOUND, QUEUE_SEND};

/// Webhook calls by endpoint and result.
pub const WEBHOOKS: &str = "switchboard_webhooks_total";
/// Finished job runs by job type and outcome.
pub const JOBS: &str = "switchboard_jobs_total";
/// Jobs waiting per queue.
pub const QUEUE_DEPTH: &str = "switchboard_queue_depth";
/// Duration of one provider send call, seconds.
pub const SEND_SECONDS: &str = "switchboard_send_seconds";
/// Provider errors by code.
pub const PROVIDER_ERRORS: &str = "switchboard_provider_errors_total";

/// Commits of the SQLite write pool by whether they synced the WAL.
pub const SQLITE_COMMITS: &str = "switchboard_sqlite_commits_total";

/// WAL syncs of the SQLite WAL's group syncer.
pub const SQLITE_GROUP_SYNCS: &str = "switchboard_sqlite_wal_group_syncs_total";

/// Transactions of the inbound writer.
pub const INBOUND_COMMITS: &str = "switchboard_inbound_commits_total";
/// Webhooks in the inbound writer's transactions.
pub const INBOUND_TEXTS: &str = "switchboard_inbound_texts_total";
/// Time the inbound writer spent in its transactions, microseconds.
pub const INBOUND_WRITE_MICROS: &str = "switchboard_inbound_write_microseconds_total";
/// WAL syncs of the inbound writer's syncer.
pub const INBOUND_WAL_SYNCS: &str = "switchboard_inbound_wal_syncs_total";
/// Time the inbound writer's syncer spent in WAL syncs, microseconds.
pub const INBOUND_WAL_SYNC_MICROS: &str = "switchboard_inbound_wal_sync_microseconds_total";

/// Histogram buckets of [`SEND_SECONDS`], seconds.
pub const SEND_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once; later calls do nothing). `None` when another
/// recorder was installed first (then `/metrics` says so).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(SEND_SECONDS.into()), SEND_BUCKETS)
                .expect("buckets are not empty");
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// Counts one webhook call.
pub fn webhook(endpoint: &'static str, result: &'static str) {
    metrics::counter!(WEBHOOKS, "endpoint" => endpoint, "result" => result).increment(1);
}

/// Counts one finished job run; for `handle_inbound`, one per text the job handled (a job
/// may carry several, see [`crate::jobs::HandleInbound`]).
pub fn job(job: &'static str, outcome: &'static str) {
    metrics::counter!(JOBS, "job" => job, "outcome" => outcome).increment(1);
}

/// Records one provider send call that took `seconds`.
pub fn send(provider: &'static str, seconds: f64) {
    metrics::histogram!(SEND_SECONDS, "provider" => provider).record(seconds);
}

/// Counts one provider error with its code.
pub fn provider_error(provider: &'static str, code: i32) {
    metrics::counter!(PROVIDER_ERRORS, "provider" => provider, "code" => code.to_string())
        .increment(1);
}

/// The Prometheus text exposition of this process, after reading the queue depths.
///
/// # Errors
/// None: a queue that cannot be read keeps its last depth (and is logged).
pub async fn render(app: &App) -> String {
    for queue in [QUEUE_INBOUND, QUEUE_SEND] {
        match app.jobs.depth(queue).await {
            Ok(n) => metrics::gauge!(QUEUE_DEPTH, "queue" => queue).set(n as f64),
            Err(e) => tracing::warn!(error = %e, queue, "queue depth unavailable"),
        }
    }
    let (synced, skipped) = crate::walbuf::commit_syncs();
    metrics::counter!(SQLITE_COMMITS, "wal_sync" => "synced").absolute(synced);
    metrics::counter!(SQLITE_COMMITS, "wal_sync" => "skipped").absolute(skipped);
    metrics::counter!(SQLITE_GROUP_SYNCS).absolute(crate::db::group_syncs());
    let inbound = app.ingest.stats();
    let micros = |time: std::time::Duration| u64::try_from(time.as_micros()).unwrap_or(u64::MAX);
    metrics::counter!(INBOUND_COMMITS).absolute(inbound.commits);
    metrics::counter!(INBOUND_TEXTS).absolute(inbound.texts);
    metrics::counter!(INBOUND_WRITE_MICROS).absolute(micros(inbound.write_time));
    metrics::counter!(INBOUND_WAL_SYNCS).absolute(inbound.wal_syncs);
    metrics::counter!(INBOUND_WAL_SYNC_MICROS).absolute(micros(inbound.wal_sync_time));
    match install() {
        Some(handle) => handle.render(),
        None => "# metrics recorder unavailable in this process\n".into(),
    }
}
