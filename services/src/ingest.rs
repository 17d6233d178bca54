//! The inbound writer: group commit for webhooks.
//!
//! Every verified inbound text is handed to one writer task. The writer takes whatever has
//! queued up (up to [`MAX_BATCH`]), writes it in ONE transaction with set-based statements
//! ([`switchboard_entity::ingest::write_batch`]) together with one `HandleInbound` job per
//! stored message, commits, and only then answers each waiting webhook. Under light load a
//! batch is one webhook and nothing waits; under heavy load the per-commit cost is shared.
//! Durability is not traded: a webhook is answered 200 only after its commit.

use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, Sqlite, SqliteConnection, SqlitePool};
use switchboard_entity::ingest::{NewInbound, Written, write_batch};
use tokio::sync::{mpsc, oneshot};

use crate::ServiceError;
use crate::events::{Event, EventBus, EventKind};
use crate::jobs::{self, Enqueue, Job};

/// Most webhooks written in one transaction.
pub const MAX_BATCH: usize = 256;
/// Webhooks that may wait for the writer before submitters wait for room.
pub const QUEUE_DEPTH: usize = 8192;

struct Pending {
    item: NewInbound,
    reply: oneshot::Sender<Result<Written, ServiceError>>,
}

/// Handle to the writer task.
#[derive(Clone, Debug)]
pub struct Ingestor {
    tx: mpsc::Sender<Pending>,
}

impl Ingestor {
    /// Starts the writer on `pool` (the write connection). The writer runs on its own OS
    /// thread: each statement is a round trip to SQLite's thread, and on the shared runtime
    /// every round trip would wait behind the request handlers in the run queue.
    pub fn start(pool: SqlitePool, events: EventBus) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("inbound-writer".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("writer runtime");
                rt.block_on(run(pool, events, rx));
            })
            .expect("writer thread");
        Self { tx }
    }

    /// Stores one inbound text; returns once it is committed (or found to be a duplicate).
    ///
    /// # Errors
    /// Database errors (the webhook answers 500 and Twilio retries), or
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

/// Longest time the writer keeps the write connection across back-to-back batches before
/// letting other writers (jobs, tenant updates) have it, in milliseconds.
pub const MAX_HOLD_MS: u64 = 10;

async fn run(pool: SqlitePool, events: EventBus, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    // Acquiring the one write connection costs a round trip through the pool; while webhooks
    // keep coming, keep it for consecutive batches (bounded by MAX_HOLD_MS).
    let mut held: Option<(PoolConnection<Sqlite>, Instant)> = None;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (conn, since) = match held.take() {
            Some(h) => h,
            None => match pool.acquire().await {
                Ok(conn) => (conn, Instant::now()),
                Err(e) => {
                    tracing::error!(error = %e, "write connection unavailable");
                    for p in batch.drain(..) {
                        let _ = p
                            .reply
                            .send(Err(ServiceError::Sqlx(sqlx::Error::PoolTimedOut)));
                    }
                    continue;
                }
            },
        };
        let mut conn = conn;
        let items: Vec<NewInbound> = batch.iter().map(|p| p.item.clone()).collect();
        match write(&mut conn, &items).await {
            Ok(results) => answer(&events, std::mem::take(&mut batch), results),
            Err(e) if batch.len() == 1 => {
                tracing::error!(error = %e, "inbound write failed");
                let p = batch.pop().expect("one pending");
                let _ = p.reply.send(Err(e));
            }
            Err(e) => {
                // One bad item must not fail the others: write them one by one.
                tracing::warn!(error = %e, size = batch.len(), "inbound batch failed; retrying one by one");
                for p in std::mem::take(&mut batch) {
                    match write(&mut conn, std::slice::from_ref(&p.item)).await {
                        Ok(results) => answer(&events, vec![p], results),
                        Err(e) => {
                            tracing::error!(error = %e, sid = %p.item.provider_sid, "inbound write failed");
                            let _ = p.reply.send(Err(e));
                        }
                    }
                }
            }
        }
        if !rx.is_empty() && since.elapsed() < Duration::from_millis(MAX_HOLD_MS) {
            held = Some((conn, since));
        }
    }
}

/// One transaction: the rows, and a `HandleInbound` job per stored message.
async fn write(
    conn: &mut SqliteConnection,
    items: &[NewInbound],
) -> Result<Vec<Written>, ServiceError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let results = write_batch(&mut tx, items).await?;
    let jobs: Vec<Enqueue> = results
        .iter()
        .zip(items)
        .filter_map(|(r, it)| match r {
            Written::Stored { message_id, .. } => Some(Enqueue::now(
                Job::HandleInbound {
                    tenant_id: it.tenant_id,
                    message_id: *message_id,
                },
                format!("inbound:{message_id}"),
            )),
            Written::Duplicate => None,
        })
        .collect();
    jobs::push_in(&mut tx, &jobs).await?;
    tx.commit().await?;
    Ok(results)
}

fn answer(events: &EventBus, batch: Vec<Pending>, results: Vec<Written>) {
    for (p, r) in batch.into_iter().zip(results) {
        if let Written::Stored {
            message_id,
            conversation_id,
            ..
        } = &r
        {
            events.publish(Event {
                kind: EventKind::MessageCreated,
                tenant_id: p.item.tenant_id,
                conversation_id: *conversation_id,
                message_id: Some(*message_id),
            });
        }
        let _ = p.reply.send(Ok(r));
    }
}
