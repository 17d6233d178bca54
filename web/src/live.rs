//! Server-sent events: each open page holds one stream of its tenant's events (ids only; the
//! page fetches the fragments it needs).

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use poem::handler;
use poem::web::sse::{Event as SseEvent, SSE};
use switchboard_domain::TenantId;
use switchboard_services::accounts;
use switchboard_services::events::EventBus;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use switchboard_api::auth::Member;

use crate::{AppData, PageError};

/// Seconds between keep-alive comments (proxies close idle streams).
pub const KEEP_ALIVE_SECS: u64 = 15;

/// Seconds between the checks of an open `/events` stream's session (see [`events`]).
pub const SESSION_CHECK_SECS: u64 = 15;

/// The tenant's events from `bus` as SSE messages (`event: message_created` etc., data: JSON).
/// A listener that fell behind gets `event: resync` and reloads; the stream ends at a gap on
/// the bus (events lost between processes), and the page reloads when it reconnects.
fn tenant_events(
    bus: &EventBus,
    tenant: TenantId,
) -> impl Stream<Item = SseEvent> + Send + 'static {
    let gap = bus.gap_seen();
    BroadcastStream::new(bus.subscribe())
        .take_until(gap)
        .filter_map(move |item| {
            let out = match item {
                Ok(e) if e.tenant_id == tenant => {
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
        })
}

/// [`tenant_events`] as an SSE response, with keep-alives, until `end` resolves.
pub(crate) fn tenant_stream(
    bus: &EventBus,
    tenant: TenantId,
    end: impl Future<Output = ()> + Send + 'static,
) -> SSE {
    sse(tenant_events(bus, tenant).take_until(end))
}

fn sse(stream: impl Stream<Item = SseEvent> + Send + 'static) -> SSE {
    SSE::new(stream).keep_alive(Duration::from_secs(KEEP_ALIVE_SECS))
}

/// `GET /events`: the inbox's live stream, for as long as its session may see the tenant.
///
/// Every [`SESSION_CHECK_SECS`] the session is looked up again (without counting as
/// activity); the stream ends once it is signed out, expired, moved to another business, or
/// its user was removed from this one or disabled. The browser's `EventSource` then reconnects
/// through the sign-in check like any other request.
#[handler]
pub(crate) async fn events(app: AppData<'_>, member: Member) -> Result<SSE, PageError> {
    let tenant = member.ctx().tenant_id();
    let bus = app.events.clone();
    let app = Arc::clone(app.0);
    let revoked = async move {
        let mut tick = tokio::time::interval(Duration::from_secs(SESSION_CHECK_SECS));
        tick.tick().await;
        loop {
            tick.tick().await;
            match accounts::session_unseen(&app, &member.session_id).await {
                Ok(Some(s))
                    if s.workspace
                        .as_ref()
                        .is_some_and(|w| w.ctx.tenant_id() == tenant) => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "live stream: the session check failed; ending the stream");
                    break;
                }
            }
        }
    };
    Ok(tenant_stream(&bus, tenant, revoked))
}
