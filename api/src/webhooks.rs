//! Twilio webhook endpoints. Each reads at most [`MAX_WEBHOOK_BYTES`], parses the form, and
//! hands it to the service that verifies the signature before anything is written.

use std::net::IpAddr;
use std::sync::Arc;

use poem::http::{HeaderValue, StatusCode, header};
use poem::web::Data;
use poem::{Body, IntoResponse, Request, Response, error::ReadBodyError, handler};
use switchboard_domain::MessageId;
use switchboard_entity::ingest::Written;
use switchboard_services::webhooks::{self, WebhookError};
use switchboard_services::{App, metrics};

use crate::auth::client_ip;

/// Largest webhook body accepted, in bytes (64 KiB; Twilio's are a few hundred). Larger: 413.
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// Empty TwiML: we answer asynchronously through the REST API, never inline.
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

fn twiml_ok() -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .content_type("text/xml")
        .body(EMPTY_TWIML)
}

fn plain(status: StatusCode, text: String) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/plain; charset=utf-8")
        .body(text)
}

/// Reads and decodes the form body; the error response is final.
async fn read_form(body: Body) -> Result<Vec<(String, String)>, Response> {
    let bytes = body
        .into_bytes_limit(MAX_WEBHOOK_BYTES)
        .await
        .map_err(|e| match e {
            ReadBodyError::PayloadTooLarge => plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {MAX_WEBHOOK_BYTES} bytes"),
            ),
            other => plain(StatusCode::BAD_REQUEST, format!("unreadable body: {other}")),
        })?;
    serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| plain(StatusCode::BAD_REQUEST, format!("body: not a form ({e})")))
}

fn path_and_query(req: &Request) -> &str {
    req.uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or_else(|| req.uri().path())
}

fn error_response(e: WebhookError) -> Response {
    match e {
        WebhookError::Missing(_) | WebhookError::Invalid { .. } => {
            plain(StatusCode::BAD_REQUEST, e.to_string())
        }
        WebhookError::Unknown => plain(StatusCode::NOT_FOUND, e.to_string()),
        WebhookError::Forbidden => plain(StatusCode::FORBIDDEN, e.to_string()),
        WebhookError::Service(inner) => {
            tracing::error!(error = %inner, "webhook could not be stored; answered 500");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "temporary failure".into(),
            )
        }
    }
}

/// `POST /webhooks/twilio/sms` ("A message comes in"): 200 with empty TwiML once stored
/// (a retried MessageSid is also 200, stored once).
/// Refused webhook calls (bad signature, unknown number, malformed form) allowed per source
/// IP: [`REFUSED_BURST`] at once, then one per [`REFUSED_EVERY_MS`] milliseconds. Past that,
/// a refused call is answered 429 with `Retry-After` instead of its 4xx.
///
/// Only calls that were already refused count, and the limit only changes how they are
/// refused: a correctly signed call is verified and processed whatever its IP did before, so
/// Twilio's own traffic is never limited, even from an address that also carries forgeries
/// (any Twilio customer can point a number's webhook at us). In memory, per process.
pub struct WebhookLimiter {
    per_ip: governor::DefaultKeyedRateLimiter<IpAddr>,
    clock: governor::clock::DefaultClock,
}

/// See [`WebhookLimiter`].
pub const REFUSED_BURST: u32 = 30;
/// See [`WebhookLimiter`].
pub const REFUSED_EVERY_MS: u64 = 1000;
/// Source addresses remembered before old ones are pruned.
const LIMITER_KEYS: usize = 100_000;

impl Default for WebhookLimiter {
    fn default() -> Self {
        use governor::{Quota, RateLimiter};
        let quota = Quota::with_period(std::time::Duration::from_millis(REFUSED_EVERY_MS))
            .expect("non-zero period")
            .allow_burst(std::num::NonZeroU32::new(REFUSED_BURST).expect("non-zero"));
        Self {
            per_ip: RateLimiter::keyed(quota),
            clock: governor::clock::DefaultClock::default(),
        }
    }
}

impl WebhookLimiter {
    /// Counts one refused call from `ip`; `Err(seconds to wait)` once over the limit.
    fn refused(&self, ip: Option<IpAddr>) -> Result<(), u64> {
        use governor::clock::Clock;
        let Some(ip) = ip else { return Ok(()) };
        if self.per_ip.len() > LIMITER_KEYS {
            self.per_ip.retain_recent();
        }
        self.per_ip
            .check_key(&ip)
            .map_err(|n| n.wait_time_from(self.clock.now()).as_secs() + 1)
    }
}

/// The answer to a webhook call that failed, counted as `endpoint`'s `result`.
fn refuse(
    endpoint: &'static str,
    e: WebhookError,
    limiter: &WebhookLimiter,
    req: &Request,
) -> Response {
    let result = match &e {
        WebhookError::Missing(_) | WebhookError::Invalid { .. } => "invalid",
        WebhookError::Unknown => "unknown",
        WebhookError::Forbidden => "forbidden",
        WebhookError::Service(_) => {
            metrics::webhook(endpoint, "error");
            return error_response(e);
        }
    };
    limited(endpoint, result, limiter, req).unwrap_or_else(|| error_response(e))
}

/// Counts a refused call from the request's client address ([`client_ip`]): the 429 answer
/// once the address is over [`WebhookLimiter`]'s limit, else `None` (the caller gives the
/// call's own 4xx, counted as `result`). The 429 carries `Retry-After` (seconds) and
/// `X-RateLimit-Limit` ([`REFUSED_BURST`]), `X-RateLimit-Remaining` (0) and
/// `X-RateLimit-Reset` (seconds until the next refused call is taken, as `Retry-After`).
fn limited(
    endpoint: &'static str,
    result: &'static str,
    limiter: &WebhookLimiter,
    req: &Request,
) -> Option<Response> {
    let Err(wait) = limiter.refused(client_ip(req)) else {
        metrics::webhook(endpoint, result);
        return None;
    };
    metrics::webhook(endpoint, "rate_limited");
    let mut resp = plain(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many refused webhook calls from this address; retry in {wait} s"),
    );
    let headers = resp.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(wait));
    headers.insert("x-ratelimit-limit", HeaderValue::from(REFUSED_BURST));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(0u32));
    headers.insert("x-ratelimit-reset", HeaderValue::from(wait));
    Some(resp)
}

/// The form of a webhook call, or the response refusing it (counted like [`refuse`]).
async fn form_or_refuse(
    endpoint: &'static str,
    body: Body,
    limiter: &WebhookLimiter,
    req: &Request,
) -> Result<Vec<(String, String)>, Response> {
    read_form(body)
        .await
        .map_err(|resp| limited(endpoint, "invalid", limiter, req).unwrap_or(resp))
}

#[handler]
pub async fn twilio_sms(
    req: &Request,
    body: Body,
    Data(app): Data<&Arc<App>>,
    Data(limiter): Data<&Arc<WebhookLimiter>>,
) -> Response {
    let params = match form_or_refuse("sms", body, limiter, req).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let signature = req.header("X-Twilio-Signature");
    match webhooks::receive_sms(app, path_and_query(req), &params, signature).await {
        Ok(written) => {
            let result = match written {
                Written::Stored { .. } => "stored",
                Written::Duplicate => "duplicate",
                // Not returned: receive_sms reads the route again, and answers 404 when
                // nobody holds the number.
                Written::Released => "unknown",
            };
            metrics::webhook("sms", result);
            twiml_ok()
        }
        Err(e) => refuse("sms", e, limiter, req),
    }
}

/// `POST /webhooks/twilio/status` (a message's StatusCallback): 200 when applied or ignored as
/// out of order.
#[handler]
pub async fn twilio_status(
    req: &Request,
    body: Body,
    Data(app): Data<&Arc<App>>,
    Data(limiter): Data<&Arc<WebhookLimiter>>,
) -> Response {
    let params = match form_or_refuse("status", body, limiter, req).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let our_id = req
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .and_then(|q| q.into_iter().find(|(k, _)| k == "m"))
        .and_then(|(_, v)| v.parse::<MessageId>().ok());
    let signature = req.header("X-Twilio-Signature");
    match webhooks::receive_status(app, path_and_query(req), &params, signature, our_id).await {
        Ok(moved) => {
            metrics::webhook("status", if moved { "updated" } else { "unchanged" });
            twiml_ok()
        }
        Err(e) => refuse("status", e, limiter, req),
    }
    .into_response()
}
