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
/// process, until `shutdown` completes or the store fails
/// ([`switchboard_services::db::StoreHealth`]).
///
/// # Errors
/// I/O errors of the listener; the store's failure, after a graceful stop, so that the
/// process exits non-zero and its supervisor restarts it.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    workers: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = until_failed(&app, shutdown);
    let worker =
        workers.then(|| tokio::spawn(switchboard_worker::run(app.clone(), shutdown.clone())));
    http(listener, endpoint(app.clone()), shutdown).await?;
    if let Some(worker) = worker {
        worker.await??;
    }
    unless_failed(&app)
}

/// `shutdown`, or the failure of `app`'s store, whichever comes first.
fn until_failed(
    app: &App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> futures::future::Shared<futures::future::BoxFuture<'static, ()>> {
    let health = app.health.clone();
    async move {
        tokio::select! {
            () = shutdown => {}
            reason = health.failed() => tracing::error!(%reason, "stopping: the store failed"),
        }
    }
    .boxed()
    .shared()
}

/// The process's exit after a graceful stop: an error if the store failed.
fn unless_failed(app: &App) -> anyhow::Result<()> {
    match app.health.failure() {
        Some(reason) => anyhow::bail!("the store failed ({reason}); restart to recover it"),
        None => Ok(()),
    }
}

/// Runs the job workers until `shutdown` completes or the store fails (`switchboard
/// worker`), serving [`switchboard_api::ops_routes`] on `metrics` when given.
///
/// # Errors
/// I/O errors of the listener; a worker that failed to start; the store's failure.
pub async fn work(
    app: Arc<App>,
    metrics: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = until_failed(&app, shutdown);
    let ops = metrics.map(|listener| {
        let ops = switchboard_api::ops_routes(app.clone());
        tokio::spawn(http(listener, ops, shutdown.clone()))
    });
    switchboard_worker::run(app.clone(), shutdown).await?;
    if let Some(ops) = ops {
        ops.await??;
    }
    unless_failed(&app)
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
