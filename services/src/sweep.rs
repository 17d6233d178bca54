//! The safety net behind the outbox: messages whose job was lost (a crash between a commit and
//! the enqueue that follows it, or a job that exhausted its re-runs on database errors) are
//! found by their own state and enqueued again. Jobs are idempotent, so a spare one is
//! harmless: `HandleInbound` checks `handled_at`, `SendMessage` claims the row before sending.

use chrono::Utc;
use switchboard_domain::MessageId;
use switchboard_domain::message::Direction;
use switchboard_entity::lookup;

use crate::jobs::{Enqueue, HandleInbound, Job, SendMessage};
use crate::messaging::{MAX_BACKOFF_SECS, RATE_LIMITED_HOURS, UNKNOWN_OUTCOME_HOURS};
use crate::{App, ServiceError};

/// Seconds between sweeps.
pub const INTERVAL_SECS: u64 = 60;
/// A message untouched for this many seconds while it still awaits its job counts as stuck:
/// a minute past the longest wait a send job schedules between attempts
/// ([`MAX_BACKOFF_SECS`], which also caps a provider's `Retry-After`), so a reply waiting out
/// its backoff is never given a second job early.
pub const STUCK_AFTER_SECS: i64 = MAX_BACKOFF_SECS as i64 + 60;
/// Hours back the sweep looks: messages made earlier are not searched. Every state a message
/// awaits its job in ends within a day (a send gives up after [`RATE_LIMITED_HOURS`] or
/// [`UNKNOWN_OUTCOME_HOURS`]); one still waiting after three has had thousands of sweeps. The
/// window keeps a sweep to the recent end of `messages` (a primary-key range, ids being
/// time-ordered) instead of a scan of every message ever stored, once a minute.
pub const LOOK_BACK_HOURS: i64 = 72;
const _: () = assert!(
    LOOK_BACK_HOURS >= 3 * RATE_LIMITED_HOURS && LOOK_BACK_HOURS >= 3 * UNKNOWN_OUTCOME_HOURS
);
/// Most messages re-enqueued per sweep.
pub const MAX_PER_SWEEP: u64 = 1000;
/// Finished jobs are kept this long (seconds) for inspection, then purged.
pub const KEEP_FINISHED_JOBS_SECS: u64 = 3600;
/// On Redis, finished jobs are purged every this many sweeps (each purge walks the finished
/// jobs of the last [`KEEP_FINISHED_JOBS_SECS`]); they are kept up to that many minutes more.
pub const REDIS_PURGE_EVERY: i64 = 10;
/// Finished jobs deleted per write transaction (keeps each one short: webhooks share the
/// write connection).
pub const PURGE_CHUNK: i64 = 2_000;

/// One sweep: re-enqueues stuck messages, and purges old finished jobs, ended sign-in
/// sessions and long-expired mailed links. Returns how many jobs were (re-)enqueued.
///
/// # Errors
/// Database errors.
pub async fn run(app: &App) -> Result<usize, ServiceError> {
    let before = Utc::now() - chrono::Duration::seconds(STUCK_AFTER_SECS);
    let since = MessageId::first_at(
        std::time::SystemTime::now()
            - std::time::Duration::from_secs(LOOK_BACK_HOURS as u64 * 3600),
    );
    let stuck = lookup::stuck_messages(&app.db.read, since, before, MAX_PER_SWEEP).await?;
    // Keys carry the sweep's time, so a message found stuck again gets a new job.
    let bucket = Utc::now().timestamp() / INTERVAL_SECS as i64;
    let jobs: Vec<Enqueue> = stuck
        .iter()
        .map(|s| match s.direction {
            Direction::Inbound => Enqueue::now(
                Job::HandleInbound(HandleInbound::one(s.tenant_id, s.message_id, None)),
                format!("sweep-inbound:{}:{bucket}", s.message_id),
            ),
            Direction::Outbound => Enqueue::now(
                Job::SendMessage(SendMessage {
                    tenant_id: s.tenant_id,
                    message_id: s.message_id,
                    request_id: None,
                }),
                format!("sweep-send:{}:{bucket}", s.message_id),
            ),
        })
        .collect();
    if !jobs.is_empty() {
        app.jobs.push(&jobs).await?;
    }
    let keep = std::time::Duration::from_secs(KEEP_FINISHED_JOBS_SECS);
    let mut purged = 0;
    // Redis walks every finished job of the last hour to find the old ones (in one call, in
    // steps of its own): not at every sweep.
    if app.jobs.redis_queues().is_some() {
        if bucket % REDIS_PURGE_EVERY == 0 {
            purged = app.jobs.purge_finished(keep, PURGE_CHUNK).await?;
        }
    } else {
        loop {
            let n = app.jobs.purge_finished(keep, PURGE_CHUNK).await?;
            purged += n;
            if n < PURGE_CHUNK as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    if purged > 0 {
        tracing::debug!(purged, "purged finished jobs");
    }
    let sessions = crate::sessions::purge_ended(app).await?;
    let links = crate::recovery::purge_expired(app).await?;
    if sessions + links > 0 {
        tracing::debug!(
            sessions,
            links,
            "purged ended sessions and expired mailed links"
        );
    }
    Ok(jobs.len())
}
