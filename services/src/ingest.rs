//! The inbound writer: group commit for webhooks.
//!
//! Every verified inbound text is handed to one writer thread. The writer takes whatever has
//! queued up (up to [`MAX_BATCH`]), writes it in ONE transaction
//! ([`switchboard_entity::ingest::write_batch`]) together with one `HandleInbound` job per
//! stored message, commits, and only then answers each waiting webhook. Under light load a
//! batch is one webhook and nothing waits; under heavy load the per-commit cost is shared.
//! Durability is not traded: a webhook is answered 200 only after its commit.
//!
//! The writer runs SQLite synchronously on its own thread through its own connection (no
//! round trip to another thread per statement). SQLite allows one writer at a time, and every
//! other write in the process goes through the one connection of the write pool: the writer
//! holds that connection while it writes, as the lock, so writes never wait in SQLite's
//! sleeping busy handler.

use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqlitePool};
use switchboard_entity::ingest::{NewInbound, Written, write_batch};
use tokio::sync::{mpsc, oneshot};

use crate::ServiceError;
use crate::events::{Event, EventBus, EventKind};
use crate::jobs::{self, Enqueue, HandleInbound, Job, Notifier};

/// Most webhooks written in one transaction.
pub const MAX_BATCH: usize = 256;
/// Webhooks that may wait for the writer before submitters wait for room.
pub const QUEUE_DEPTH: usize = 8192;

struct Pending {
    item: NewInbound,
    reply: oneshot::Sender<Result<Written, ServiceError>>,
}

/// Handle to the writer thread.
#[derive(Clone, Debug)]
pub struct Ingestor {
    tx: mpsc::Sender<Pending>,
}

impl Ingestor {
    /// Starts the writer thread on `conn` (its own connection to the database file), taking
    /// `lock` (the write pool, whose one connection is the process's write lock) for each run
    /// of batches.
    pub fn start(
        conn: rusqlite::Connection,
        lock: SqlitePool,
        events: EventBus,
        notifier: Notifier,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("inbound-writer".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("writer runtime");
                rt.block_on(run(conn, lock, events, notifier, rx));
            })
            .expect("writer thread");
        Self { tx }
    }

    /// Stores one inbound text; returns once it is committed (or found to be a duplicate).
    ///
    /// # Errors
    /// Database errors (the webhook answers 500; nothing is stored), or
    /// [`ServiceError::WriterGone`] while shutting down.
    pub async fn submit(&self, item: NewInbound) -> Result<Written, ServiceError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { item, reply })
            .await
            .map_err(|_| ServiceError::WriterGone)?;
        rx.await.map_err(|_| ServiceError::WriterGone)?
    }
}

/// Longest time the writer keeps the write lock across back-to-back batches before letting
/// other writers (jobs, tenant updates) have it, in milliseconds.
pub const MAX_HOLD_MS: u64 = 10;

async fn run(
    mut conn: rusqlite::Connection,
    lock: SqlitePool,
    events: EventBus,
    notifier: Notifier,
    mut rx: mpsc::Receiver<Pending>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut held: Option<(PoolConnection<Sqlite>, Instant)> = None;
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
        match write(&mut conn, &items) {
            Ok(results) => answer(&events, &notifier, &items, replies, results),
            Err(e) if items.len() == 1 => {
                tracing::error!(error = %e, "inbound write failed");
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) => {
                // One bad item must not fail the others: write them one by one.
                tracing::warn!(error = %e, size = items.len(), "inbound batch failed; retrying one by one");
                for (item, reply) in items.into_iter().zip(replies) {
                    let one = std::slice::from_ref(&item);
                    match write(&mut conn, one) {
                        Ok(results) => answer(&events, &notifier, one, vec![reply], results),
                        Err(e) => {
                            tracing::error!(error = %e, sid = %item.provider_sid, "inbound write failed");
                            let _ = reply.send(Err(e));
                        }
                    }
                }
            }
        }
        if !rx.is_empty() && since.elapsed() < Duration::from_millis(MAX_HOLD_MS) {
            held = Some((guard, since));
        }
    }
}

/// One transaction: the rows, and a `HandleInbound` job per stored message.
fn write(
    conn: &mut rusqlite::Connection,
    items: &[NewInbound],
) -> Result<Vec<Written>, ServiceError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let results = write_batch(&tx, items)?;
    let jobs: Vec<Enqueue> = results
        .iter()
        .zip(items)
        .filter_map(|(r, it)| match r {
            Written::Stored { message_id, .. } => Some(Enqueue::now(
                Job::HandleInbound(HandleInbound {
                    tenant_id: it.tenant_id,
                    message_id: *message_id,
                }),
                format!("inbound:{message_id}"),
            )),
            Written::Duplicate => None,
        })
        .collect();
    jobs::push_in_sync(&tx, &jobs)?;
    tx.commit()?;
    Ok(results)
}

fn answer(
    events: &EventBus,
    notifier: &Notifier,
    items: &[NewInbound],
    replies: Vec<oneshot::Sender<Result<Written, ServiceError>>>,
    results: Vec<Written>,
) {
    if results.iter().any(|r| matches!(r, Written::Stored { .. })) {
        notifier.notify();
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
