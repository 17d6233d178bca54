//! The HTTP edge of Switchboard: Twilio's webhooks, the REST API under `/api/v1` (OpenAPI at
//! `/api/openapi.json`, Swagger UI at `/api/docs`), `/health` and `/ready`.
//!
//! Handlers are thin: they parse input into domain types, call one service, and map the
//! result to a status code.

use std::sync::Arc;

use poem::{
    EndpointExt, IntoResponse, Response, Route, get, handler, http::StatusCode, post, web::Data,
};
use switchboard_services::App;

pub mod auth;
pub mod error;
pub mod rest;
pub mod webhooks;

/// Routes of this crate, to be nested at `/` by the binary. `app` is attached as data.
pub fn routes(app: Arc<App>) -> Route {
    let api = rest::service(&app.settings.public_url("/api/v1"));
    let ui = api.swagger_ui();
    let spec = api.spec_endpoint();
    Route::new()
        .at("/webhooks/twilio/sms", post(webhooks::twilio_sms))
        .at("/webhooks/twilio/status", post(webhooks::twilio_status))
        .nest("/api/v1", api)
        .at("/api/openapi.json", spec)
        .nest("/api/docs", ui)
        .at("/health", get(health))
        .at("/ready", get(ready))
}

/// Attaches the app to any endpoint tree (used by the binary and the test harness).
pub fn with_app<E: poem::Endpoint + 'static>(ep: E, app: Arc<App>) -> impl poem::Endpoint {
    ep.data(app)
}

/// `GET /health`: the process is up.
#[handler]
fn health() -> &'static str {
    "ok"
}

/// `GET /ready`: the database (which also holds the job queue) answers. 503 otherwise.
#[handler]
async fn ready(Data(app): Data<&Arc<App>>) -> Response {
    match app.db.read.ping().await {
        Ok(()) => (StatusCode::OK, "ready: database ok, queue ok").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: database unreachable",
            )
                .into_response()
        }
    }
}
