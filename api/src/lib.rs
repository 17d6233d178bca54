//! The HTTP edge of Switchboard: Twilio's webhooks, the REST API under `/api/v1` (OpenAPI at
//! `/api/openapi.json`, Swagger UI at `/api/docs`), `/health` and `/ready`.
//!
//! Handlers are thin: they parse input into domain types, call one service, and map the
//! result to a status code.

use std::sync::Arc;

use poem::{
    Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler, http::StatusCode,
    post, web::Data,
};
use switchboard_services::App;

pub mod auth;
pub mod error;
pub mod rest;
pub mod webhooks;

/// A [`Route`] that records the paths it registers, so tests can enumerate every route (the
/// isolation sweep fails on a route it does not cover).
pub struct RouteTable {
    route: Route,
    paths: Vec<&'static str>,
}

impl RouteTable {
    pub fn new(route: Route) -> Self {
        Self {
            route,
            paths: Vec::new(),
        }
    }

    /// `Route::at`, recorded.
    pub fn at<E: poem::IntoEndpoint>(&mut self, path: &'static str, ep: E)
    where
        E::Endpoint: 'static,
    {
        self.route = std::mem::take(&mut self.route).at(path, ep);
        self.paths.push(path);
    }

    /// `Route::nest`, recorded (the nested endpoint's own paths are its business: the REST
    /// API's are in its OpenAPI document).
    pub fn nest<E: poem::IntoEndpoint>(&mut self, path: &'static str, ep: E)
    where
        E::Endpoint: 'static,
    {
        self.route = std::mem::take(&mut self.route).nest(path, ep);
        self.paths.push(path);
    }

    /// The route and the recorded paths.
    pub fn into_parts(self) -> (Route, Vec<&'static str>) {
        (self.route, self.paths)
    }
}

fn table(app: &App) -> RouteTable {
    let api = rest::service(&app.settings.public_url("/api/v1"));
    let ui = api.swagger_ui();
    let spec = api.spec_endpoint();
    let mut t = RouteTable::new(Route::new());
    t.at("/webhooks/twilio/sms", post(webhooks::twilio_sms));
    t.at("/webhooks/twilio/status", post(webhooks::twilio_status));
    t.nest("/api/v1", api.around(api_edge));
    t.at("/api/openapi.json", spec);
    t.nest("/api/docs", ui);
    t.at("/health", get(health));
    t.at("/ready", get(ready));
    t.at("/metrics", get(metrics_text));
    t
}

/// Largest REST API request body, in bytes (64 KiB; a message body is at most 1,600
/// characters). Larger: 413, read no further.
pub const MAX_API_BODY_BYTES: usize = 64 * 1024;

/// The REST API's edge: reads the request body up to [`MAX_API_BODY_BYTES`] before the API
/// sees it (poem-openapi's JSON payload reads a body whole, whatever its size), and answers
/// every error in the API's JSON error shape ([`error::as_json`]).
async fn api_edge<E: Endpoint>(ep: Arc<E>, mut req: Request) -> poem::Result<Response> {
    let resp = match req.take_body().into_bytes_limit(MAX_API_BODY_BYTES).await {
        Ok(bytes) => {
            req.set_body(bytes);
            match ep.call(req).await {
                Ok(resp) => resp.into_response(),
                Err(e) => e.into_response(),
            }
        }
        Err(poem::error::ReadBodyError::PayloadTooLarge) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {MAX_API_BODY_BYTES} bytes"),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("unreadable body: {e}")).into_response(),
    };
    Ok(error::as_json(resp).await)
}

/// `GET /metrics`: Prometheus text format (see `switchboard_services::metrics` for the
/// series). No tenant data: labels are endpoints, results, job types, queues and codes.
#[handler]
async fn metrics_text(Data(app): Data<&Arc<App>>) -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(switchboard_services::metrics::render(app).await)
}

/// Header carrying the correlation id, in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// Middleware (use with `EndpointExt::around`): takes the caller's `X-Request-Id` or makes
/// one ([`switchboard_services::correlation::accept`]), runs the request in a span and a
/// correlation scope with it (so the jobs a webhook enqueues carry it), and returns it in the
/// response's `X-Request-Id`.
///
/// # Errors
/// Those of the inner endpoint.
pub async fn request_id<E: poem::Endpoint>(next: E, req: poem::Request) -> poem::Result<Response> {
    use switchboard_services::correlation;
    use tracing::Instrument;
    let id = correlation::accept(req.header(REQUEST_ID));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = correlation::scope(id.clone(), next.call(req).instrument(span))
        .await?
        .into_response();
    if let Ok(value) = poem::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(resp)
}

/// Routes of this crate, to be nested at `/` by the binary. `app` is attached as data.
pub fn routes(app: Arc<App>) -> Route {
    table(&app).into_parts().0
}

/// Every path [`routes`] registers (the isolation sweep covers each; `/api/v1`'s operations
/// are listed in `/api/openapi.json`).
pub fn route_list(app: &App) -> Vec<&'static str> {
    table(app).into_parts().1
}

/// What a `switchboard worker` process serves with `--metrics-bind`: `/health`, `/ready`
/// and `/metrics` only. Its jobs' and sends' series (`switchboard_jobs_total`,
/// `switchboard_send_seconds`, `switchboard_provider_errors_total`) are recorded in its own
/// process, where the web processes' `/metrics` cannot see them.
pub fn ops_routes(app: Arc<App>) -> impl poem::Endpoint {
    Route::new()
        .at("/health", get(health))
        .at("/ready", get(ready))
        .at("/metrics", get(metrics_text))
        .data(app)
}

/// Attaches the app to any endpoint tree (used by the binary and the test harness).
pub fn with_app<E: poem::Endpoint + 'static>(ep: E, app: Arc<App>) -> impl poem::Endpoint {
    ep.data(app)
}

/// `GET /health`: the process is up and its store can be trusted; 503 naming the failure
/// once it cannot ([`switchboard_services::db::StoreHealth`]: a failed WAL sync or a
/// panicked inbound writer), so that a supervisor restarts it.
#[handler]
fn health(Data(app): Data<&Arc<App>>) -> Response {
    match store_failure(app) {
        Some(failed) => failed,
        None => "ok".into_response(),
    }
}

/// The 503 of a store that failed, if it has.
fn store_failure(app: &App) -> Option<Response> {
    let reason = app.health.failure()?;
    let text = format!("unhealthy: {reason}; restart the process");
    Some((StatusCode::SERVICE_UNAVAILABLE, text).into_response())
}

/// `GET /ready`: the store has not failed (see `/health`), and the database (which also
/// holds the job queue) and the session store (Redis, when configured) answer. 503 naming
/// the one that does not.
#[handler]
async fn ready(Data(app): Data<&Arc<App>>) -> Response {
    if let Some(failed) = store_failure(app) {
        return failed;
    }
    if let Err(e) = app.db.read.ping().await {
        tracing::warn!(error = %e, "readiness check failed: database");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database unreachable",
        )
            .into_response();
    }
    if let Err(e) = switchboard_services::sessions::ping(app).await {
        tracing::warn!(error = %e, "readiness check failed: session store");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: session store unreachable",
        )
            .into_response();
    }
    let text = format!(
        "ready: database ok, queue ok, sessions in the {}",
        app.sessions.kind()
    );
    (StatusCode::OK, text).into_response()
}
