//! The composition root, as a library so the test harness serves exactly what the binary
//! serves: [`endpoint`] assembles every route; [`serve`] runs the HTTP server and the workers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use poem::listener::TcpAcceptor;
use poem::middleware::Tracing;
use poem::{Endpoint, EndpointExt, Server};
use switchboard_services::App;

/// Seconds the server waits for in-flight requests after a shutdown signal.
pub const HTTP_SHUTDOWN_SECS: u64 = 10;

/// Every HTTP route of Switchboard, with the app attached.
pub fn endpoint(app: Arc<App>) -> impl Endpoint + 'static {
    let guard = switchboard_api::auth::WebGuard::new(&app);
    switchboard_web::routes(switchboard_api::routes(app.clone()))
        .with(guard)
        .with(Tracing)
        .around(switchboard_api::request_id)
        .data(Arc::new(switchboard_api::auth::SignInLimiter::default()))
        .data(Arc::new(
            switchboard_api::webhooks::WebhookLimiter::default(),
        ))
        .data(app)
}

/// Serves HTTP on `listener` and, when `workers` is true, runs the job workers in the same
/// process, until `shutdown` completes.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    workers: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    let worker =
        workers.then(|| tokio::spawn(switchboard_worker::run(app.clone(), shutdown.clone())));
    http(listener, endpoint(app), shutdown).await?;
    if let Some(worker) = worker {
        worker.await??;
    }
    Ok(())
}

/// Runs the job workers until `shutdown` completes (`switchboard worker`), serving
/// [`switchboard_api::ops_routes`] on `metrics` when given.
///
/// # Errors
/// I/O errors of the listener; a worker that failed to start.
pub async fn work(
    app: Arc<App>,
    metrics: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    let ops = metrics.map(|listener| {
        let ops = switchboard_api::ops_routes(app.clone());
        tokio::spawn(http(listener, ops, shutdown.clone()))
    });
    switchboard_worker::run(app, shutdown).await?;
    if let Some(ops) = ops {
        ops.await??;
    }
    Ok(())
}

/// Serves `ep` on `listener` until `shutdown`, then lets in-flight requests finish for up to
/// [`HTTP_SHUTDOWN_SECS`].
async fn http(
    listener: tokio::net::TcpListener,
    ep: impl Endpoint + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::new_with_acceptor(TcpAcceptor::from_tokio(listener)?)
        .run_with_graceful_shutdown(ep, shutdown, Some(Duration::from_secs(HTTP_SHUTDOWN_SECS)))
        .await?;
    Ok(())
}

/// Every path [`endpoint`] registers (a nested API as its prefix): the isolation sweep
/// (`tests/e2e/isolation.rs`) fails on any path it does not cover.
pub fn route_list(app: &App) -> Vec<&'static str> {
    let mut paths = switchboard_api::route_list(app);
    paths.extend(switchboard_web::route_list());
    paths
}
