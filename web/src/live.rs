//! Server-sent events: each open page holds one stream of its tenant's events (ids only; the
//! page fetches the fragments it needs).

use std::time::Duration;

use futures::{Stream, StreamExt};
use poem::handler;
use poem::web::sse::{Event as SseEvent, SSE};
use switchboard_domain::TenantId;
use switchboard_services::events::{Event, EventBus};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use switchboard_api::auth::Member;

use crate::{AppData, PageError};

/// Seconds between keep-alive comments (proxies close idle streams).
pub const KEEP_ALIVE_SECS: u64 = 15;

/// The tenant's events from `bus` as SSE messages (`event: message_created` etc., data: JSON).
/// A listener that fell behind gets `event: resync` and reloads.
pub(crate) fn tenant_stream(
    bus: &EventBus,
    tenant: TenantId,
    keep: impl Fn(&Event) -> bool + Send + 'static,
) -> SSE {
    let stream = BroadcastStream::new(bus.subscribe()).filter_map(move |item| {
        let out = match item {
            Ok(e) if e.tenant_id == tenant && keep(&e) => {
                let kind = serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                Some(
                    SseEvent::message(serde_json::to_string(&e).unwrap_or_default())
                        .event_type(kind),
                )
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(_)) => {
                Some(SseEvent::message("{}").event_type("resync"))
            }
        };
        futures::future::ready(out)
    });
    sse(stream)
}

fn sse(stream: impl Stream<Item = SseEvent> + Send + 'static) -> SSE {
    SSE::new(stream).keep_alive(Duration::from_secs(KEEP_ALIVE_SECS))
}

/// `GET /events`: the inbox's live stream.
#[handler]
pub(crate) async fn events(app: AppData<'_>, member: Member) -> Result<SSE, PageError> {
    Ok(tenant_stream(&app.events, member.ctx().tenant_id(), |_| {
        true
    }))
}
