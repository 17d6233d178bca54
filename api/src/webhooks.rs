//! Twilio webhook endpoints. Each reads at most [`MAX_WEBHOOK_BYTES`], parses the form, and
//! hands it to the service that verifies the signature before anything is written.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{Body, IntoResponse, Request, Response, error::ReadBodyError, handler};
use switchboard_domain::MessageId;
use switchboard_services::App;
use switchboard_services::webhooks::{self, WebhookError};

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
#[handler]
pub async fn twilio_sms(req: &Request, body: Body, Data(app): Data<&Arc<App>>) -> Response {
    let params = match read_form(body).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let signature = req.header("X-Twilio-Signature");
    match webhooks::receive_sms(app, path_and_query(req), &params, signature).await {
        Ok(_) => twiml_ok(),
        Err(e) => error_response(e),
    }
}

/// `POST /webhooks/twilio/status` (a message's StatusCallback): 200 when applied or ignored as
/// out of order.
#[handler]
pub async fn twilio_status(req: &Request, body: Body, Data(app): Data<&Arc<App>>) -> Response {
    let params = match read_form(body).await {
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
        Ok(_) => twiml_ok(),
        Err(e) => error_response(e),
    }
    .into_response()
}
