//! The safety net behind the outbox: messages whose job was lost (a crash between a commit and
//! the enqueue that follows it, or a job that exhausted its re-runs on database errors) are
//! found by their own state and enqueued again. Jobs are idempotent, so a spare one is
//! harmless: `HandleInbound` checks `handled_at`, `SendMessage` claims the row before sending.

use chrono::Utc;
use switchboard_domain::message::Direction;
use switchboard_entity::lookup;

use crate::jobs::{Enqueue, Job};
use crate::{App, ServiceError};

/// Seconds between sweeps.
pub const INTERVAL_SECS: u64 = 60;
/// A message untouched for this many seconds while it still awaits its job counts as stuck.
pub const STUCK_AFTER_SECS: i64 = 120;
/// Most messages re-enqueued per sweep.
pub const MAX_PER_SWEEP: u64 = 1000;

/// One sweep; returns how many jobs were (re-)enqueued.
///
/// # Errors
/// Database errors.
pub async fn run(app: &App) -> Result<usize, ServiceError> {
    let before = Utc::now() - chrono::Duration::seconds(STUCK_AFTER_SECS);
    let stuck = lookup::stuck_messages(&app.db.orm, before, MAX_PER_SWEEP).await?;
    let jobs: Vec<Enqueue> = stuck
        .iter()
        .map(|s| match s.direction {
            Direction::Inbound => Enqueue::now(
                Job::HandleInbound {
                    tenant_id: s.tenant_id,
                    message_id: s.message_id,
                },
                format!("sweep-inbound:{}", s.message_id),
            ),
            Direction::Outbound => Enqueue::now(
                Job::SendMessage {
                    tenant_id: s.tenant_id,
                    message_id: s.message_id,
                },
                format!("sweep-send:{}:{}", s.message_id, s.attempts),
            ),
        })
        .collect();
    if !jobs.is_empty() {
        app.jobs.push(&jobs).await?;
    }
    Ok(jobs.len())
}
