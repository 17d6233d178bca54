//! The live bus: every message created or changed is announced here after its transaction
//! commits; the SSE streams of the inbox, dashboard and simulator listen.
//!
//! In-process (tokio broadcast) in the embedded default. With `REDIS_URL`, every event is
//! published on one Redis channel and each process's listener ([`crate::fanout`]) re-emits
//! what arrives on its own bus, so an SSE client of one web process sees a message that a
//! worker process handled for another web process's webhook.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use switchboard_domain::{ConversationId, MessageId, TenantId};

use tokio::sync::{broadcast, mpsc, watch};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new inbound or outbound message row.
    MessageCreated,
    /// A message's status, SID or error changed.
    MessageUpdated,
    /// Conversation settings changed (bot paused/resumed, read).
    ConversationUpdated,
}

/// One announcement. Carries ids only; listeners reload through tenant-scoped queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    /// The message concerned (absent for conversation-level events).
    pub message_id: Option<MessageId>,
}

/// Events a slow listener may fall behind by before it skips ahead (it then reloads).
pub const BUS_CAPACITY: usize = 4096;

/// Fan-out of [`Event`]s to every listener of this process (and, with Redis, of every other
/// process).
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    /// To the Redis publisher task, when events cross processes.
    remote: Option<mpsc::UnboundedSender<Event>>,
    /// Counts the times events may have been lost on the way (a failed Redis `PUBLISH`, a
    /// lost pub/sub connection): listeners then end their streams, and the pages reload.
    gaps: Arc<watch::Sender<u64>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// An in-process bus with [`BUS_CAPACITY`].
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(BUS_CAPACITY).0,
            remote: None,
            gaps: Arc::new(watch::channel(0).0),
        }
    }

    /// A bus whose events go out through `remote` (the Redis publisher) and come back to
    /// [`EventBus::deliver`] through the process's pub/sub listener, so every process,
    /// this one included, sees each event once.
    pub fn relayed(remote: mpsc::UnboundedSender<Event>) -> Self {
        Self {
            tx: broadcast::channel(BUS_CAPACITY).0,
            remote: Some(remote),
            gaps: Arc::new(watch::channel(0).0),
        }
    }

    /// Announces `event` to current listeners (none listening is fine).
    pub fn publish(&self, event: Event) {
        match &self.remote {
            Some(remote) => {
                // The publisher task only stops with the process.
                let _ = remote.send(event);
            }
            None => self.deliver(event),
        }
    }

    /// Hands `event` to this process's listeners.
    pub fn deliver(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    /// A new listener; it sees events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Records that events may have been lost (see [`EventBus::gap_seen`]).
    pub fn gap(&self) {
        self.gaps.send_modify(|n| *n += 1);
    }

    /// Resolves at the first gap after this call: a listener's stream is then incomplete,
    /// and it should end so that its page reloads what it missed.
    pub fn gap_seen(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut gaps = self.gaps.subscribe();
        async move {
            // An error means the bus is gone: no further events either way.
            let _ = gaps.changed().await;
        }
    }
}
