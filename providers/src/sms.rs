//! The provider-neutral face of sending a text.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use switchboard_domain::message::MessageStatus;

/// One outbound text as a provider needs it.
#[derive(Clone, Debug)]
pub struct OutboundSms {
    /// Recipient, E.164.
    pub to: String,
    /// Sender: one of the tenant's numbers, E.164.
    pub from: String,
    pub body: String,
    /// Where the provider posts status callbacks for this message.
    pub status_callback: String,
}

/// The provider took the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Provider message id (Twilio `SM…`).
    pub sid: String,
    /// Status the provider reported with its answer (usually `queued`).
    pub status: MessageStatus,
    /// The provider's error for a message it reports `failed` or `undelivered` (Twilio's
    /// `error_code`, e.g. 30003 "Unreachable destination handset"), when it gave one.
    pub error_code: Option<i32>,
    /// The provider's description of that error, when it gave one.
    pub error_message: Option<String>,
}

/// Why a send did not go through; decides whether the job retries.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// HTTP 429 (Twilio error 20429, "Too Many Requests"): retry later; nothing was sent.
    #[error("rate limited by the provider")]
    RateLimited {
        /// The provider's `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// The provider refused this message for good (4xx), e.g. Twilio error 21610 (recipient
    /// unsubscribed), 21211 (invalid `To`), 21606 (`From` not SMS-capable). Not retried.
    #[error("rejected by the provider: {code:?} {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Provider error code (Twilio's `code`).
        code: Option<i32>,
        message: String,
    },
    /// 5xx, timeout or connection failure: the provider MAY have created the message.
    /// Reconcile with [`SmsProvider::find_recent`] before sending again.
    #[error("provider unavailable: {message}")]
    Unavailable {
        /// HTTP status, when a response arrived.
        status: Option<u16>,
        message: String,
    },
}

impl SendError {
    /// Twilio error 21610: the recipient replied STOP to this number at the carrier/Twilio level.
    pub const TWILIO_UNSUBSCRIBED: i32 = 21610;
    /// Twilio error 20429 "Too Many Requests" (HTTP 429), kept on a message the provider
    /// rate-limited.
    pub const TWILIO_RATE_LIMITED: i32 = 20429;
}

/// Sends texts through one provider account.
#[async_trait]
pub trait SmsProvider: Send + Sync {
    /// Creates the message at the provider.
    ///
    /// # Errors
    /// [`SendError`], classified so the caller knows whether to retry, reconcile or stop.
    async fn send(&self, sms: &OutboundSms) -> Result<Accepted, SendError>;

    /// Messages already created at the provider with this `to`, `from` and `body` since
    /// `since`, newest first: after an unknown outcome, the caller looks for its own among
    /// them (skipping ones it already holds) so a text is never sent twice.
    ///
    /// # Errors
    /// Any [`SendError`] when the provider cannot be asked (including 429); the caller keeps
    /// the outcome unknown and asks again later.
    async fn find_recent(
        &self,
        sms: &OutboundSms,
        since: DateTime<Utc>,
    ) -> Result<Vec<Accepted>, SendError>;

    /// A short name for logs and metrics (`twilio`, `simulator`).
    fn name(&self) -> &'static str;
}
