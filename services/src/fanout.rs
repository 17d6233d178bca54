//! Redis pub/sub for a process that shares its work with others (`REDIS_URL`).
//!
//! One publisher task sends this process's live events to the channel `{REDIS_PREFIX}events`,
//! in order. One listener connection subscribes to that channel and to apalis-redis' "job
//! available" channel of each queue: events go to the process's [`EventBus`], job
//! announcements wake this process's workers of that queue at once (they also poll every
//! [`crate::jobs::FALLBACK_POLL_SECS`], which covers a dropped connection and delayed
//! retries). Both reconnect after a Redis failure, waiting [`RECONNECT_SECS`] between tries.
//! Events lost that way (a failed `PUBLISH`, the time the listener was disconnected) are
//! recorded as a gap on the bus ([`EventBus::gap`]): the open live streams end, and their
//! pages reload. A failed `PUBLISH` is announced to every process with [`GAP_MARKER`] once
//! Redis takes it.

use std::time::Duration;

use futures::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use crate::events::{Event, EventBus};
use crate::jobs::{JobQueue, QUEUE_INBOUND, QUEUE_SEND};

/// Seconds between attempts to re-subscribe after the pub/sub connection failed.
pub const RECONNECT_SECS: u64 = 1;

/// The channel live events travel on.
pub fn events_channel(prefix: &str) -> String {
    format!("{prefix}events")
}

/// Starts the publisher and the listener; returns the bus that publishes through them.
pub fn start(
    client: redis::Client,
    conn: ConnectionManager,
    prefix: &str,
    jobs: JobQueue,
) -> EventBus {
    let (tx, rx) = mpsc::unbounded_channel();
    let bus = EventBus::relayed(tx);
    let channel = events_channel(prefix);
    tokio::spawn(publish(conn, channel.clone(), rx, bus.clone()));
    tokio::spawn(listen(client, channel, bus.clone(), jobs));
    bus
}

/// Published on the events channel once events could not be: every process's listener then
/// records a gap ([`EventBus::gap`]), so pages served by any process reload what they missed.
pub const GAP_MARKER: &str = "gap";

async fn publish(
    mut conn: ConnectionManager,
    channel: String,
    mut rx: mpsc::UnboundedReceiver<Event>,
    bus: EventBus,
) {
    let send = async |conn: &mut ConnectionManager, payload: &str| {
        redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async::<i64>(conn)
            .await
    };
    // True from a failed PUBLISH until the gap marker went out.
    let mut gap = false;
    loop {
        let event = if gap {
            tokio::select! {
                event = rx.recv() => event,
                () = tokio::time::sleep(Duration::from_secs(RECONNECT_SECS)) => {
                    gap = send(&mut conn, GAP_MARKER).await.is_err();
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(event) = event else { return };
        if gap {
            gap = send(&mut conn, GAP_MARKER).await.is_err();
        }
        let payload = serde_json::to_string(&event).expect("events serialize");
        if let Err(e) = send(&mut conn, &payload).await {
            // Nobody gets the event, this process included: its open pages reload now, every
            // other process's once the gap marker goes out.
            tracing::warn!(error = %e, "live event not published");
            bus.gap();
            gap = true;
        }
    }
}

async fn listen(client: redis::Client, channel: String, bus: EventBus, jobs: JobQueue) {
    let queues = jobs.redis_queues().cloned();
    let wake: Vec<(String, &'static str)> = queues
        .iter()
        .flat_map(|q| [QUEUE_INBOUND, QUEUE_SEND].map(|name| (q.available_channel(name), name)))
        .collect();
    let mut lost = false;
    loop {
        let mut pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "Redis pub/sub unavailable; retrying");
                tokio::time::sleep(Duration::from_secs(RECONNECT_SECS)).await;
                continue;
            }
        };
        let mut channels = vec![channel.clone()];
        channels.extend(wake.iter().map(|(c, _)| c.clone()));
        if let Err(e) = pubsub.subscribe(&channels).await {
            tracing::warn!(error = %e, "Redis SUBSCRIBE failed; retrying");
            tokio::time::sleep(Duration::from_secs(RECONNECT_SECS)).await;
            continue;
        }
        if lost {
            // Events published while the connection was down never reach this process.
            bus.gap();
        }
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let name = msg.get_channel_name();
            if name == channel {
                match msg.get_payload::<String>().map_err(|e| e.to_string()) {
                    Ok(p) if p == GAP_MARKER => bus.gap(),
                    Ok(p) => match serde_json::from_str::<Event>(&p) {
                        Ok(event) => bus.deliver(event),
                        Err(e) => tracing::warn!(error = %e, "unreadable live event ignored"),
                    },
                    Err(e) => tracing::warn!(error = %e, "unreadable live event ignored"),
                }
            } else if let Some((_, queue)) = wake.iter().find(|(c, _)| c == name) {
                jobs.notifier(queue).notify();
            }
        }
        lost = true;
        tracing::warn!("Redis pub/sub connection lost; re-subscribing");
        tokio::time::sleep(Duration::from_secs(RECONNECT_SECS)).await;
    }
}
