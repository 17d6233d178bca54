//! The live bus: every message created or changed is announced here after its transaction
//! commits; the SSE streams of the inbox, dashboard and simulator listen.
//!
//! In-process (tokio broadcast) in the embedded default.

use serde::Serialize;
use switchboard_domain::{ConversationId, MessageId, TenantId};
use tokio::sync::broadcast;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    /// The message concerned (absent for conversation-level events).
    pub message_id: Option<MessageId>,
}

/// Events a slow listener may fall behind by before it skips ahead (it then reloads).
pub const BUS_CAPACITY: usize = 4096;

/// Fan-out of [`Event`]s to every listener of this process.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with [`BUS_CAPACITY`].
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(BUS_CAPACITY).0,
        }
    }

    /// Announces `event` to current listeners (none listening is fine).
    pub fn publish(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    /// A new listener; it sees events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
