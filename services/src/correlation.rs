//! The correlation id of a unit of work: a webhook's `X-Request-Id` (or one made up for it),
//! carried into the jobs it enqueues, and from them into the jobs they enqueue, so one
//! customer's text can be followed through every log line from webhook to send.
//!
//! Within a task the id lives in a task-local ([`scope`]); across the queue it travels in the
//! job payload (`request_id`). Log lines get it from the `request_id` field of the span the
//! HTTP middleware and the worker open.

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// Longest accepted incoming `X-Request-Id`, in bytes; a longer or non-printable one is
/// replaced by a new id.
pub const MAX_LEN: usize = 128;

/// The id of the current unit of work, if it has one.
pub fn current() -> Option<String> {
    CURRENT.try_with(|id| id.to_string()).ok()
}

/// Runs `work` with `id` as the current correlation id.
pub async fn scope<F: Future>(id: Arc<str>, work: F) -> F::Output {
    CURRENT.scope(id, work).await
}

/// The caller's `X-Request-Id` when usable (1 to [`MAX_LEN`] printable ASCII characters),
/// else a new UUIDv7.
pub fn accept(header: Option<&str>) -> Arc<str> {
    match header {
        Some(h)
            if !h.is_empty() && h.len() <= MAX_LEN && h.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Arc::from(h)
        }
        _ => Arc::from(uuid::Uuid::now_v7().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_are_kept_or_made_and_scoped() {
        assert_eq!(&*accept(Some("abc-123")), "abc-123");
        assert_eq!(accept(Some("bad id\n")).len(), 36);
        assert_eq!(accept(Some(&"x".repeat(MAX_LEN + 1))).len(), 36);
        assert_eq!(current(), None);
        let seen = scope(Arc::from("r1"), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("r1"));
    }
}
