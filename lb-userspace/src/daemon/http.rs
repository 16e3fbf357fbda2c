//! The daemon's HTTP side, on the metrics address (loopback by default):
//! `/metrics` for Prometheus, `/api/status` (the `xlb status -o json`
//! document) and `/`, the live status page that polls it.
//!
//! Bounded so it cannot starve the daemon (docs/RELIABILITY.md):
//! - at most `MAX_CONNECTIONS` connections; one more is closed at once
//!   (counted in `xlb_http_connections_refused_total`);
//! - a request's head must arrive within `HEADER_READ_TIMEOUT` (hyper's
//!   timer; it also closes a keep-alive connection idle that long), a
//!   request must be answered within `REQUEST_TIMEOUT` (tower's timeout,
//!   408), and a connection lives at most `CONNECTION_LIFETIME` (a client
//!   that never reads its response holds nothing for long);
//! - a scrape never encodes under the controller's lock: the status
//!   document is built once per collector tick or change (the lock held for
//!   that alone), and its encodings once, outside the lock, shared by every
//!   scrape until the next tick (`Metrics::published`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use crate::daemon::controller::Controller;
use crate::daemon::metrics::Metrics;

/// The status page: one file, no build step, no CDN.
pub const STATUS_PAGE: &str = include_str!("web/status.html");

/// Connections open at once, at most (Prometheus servers, status pages).
pub const MAX_CONNECTIONS: usize = 256;
/// A request head must arrive within this (and an idle keep-alive
/// connection is closed after it).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request must be answered within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection is closed after this, whatever it is doing.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// After a failed `accept` (out of descriptors), wait this long.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

type Shared = Arc<Mutex<Controller>>;

#[derive(Clone)]
struct State {
    controller: Shared,
    metrics: Arc<Metrics>,
}

/// Bind now (so a taken port fails the daemon's start, not later).
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the metrics address {address}"))
}

/// The routes, with the request timeout.
fn app(state: State) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    (StatusCode::REQUEST_TIMEOUT, "request timed out\n")
                }))
                .timeout(REQUEST_TIMEOUT),
        )
        .with_state(state)
}

pub async fn serve(listener: tokio::net::TcpListener, controller: Shared) -> anyhow::Result<()> {
    let metrics = controller
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .metrics()
        .clone();
    let app = app(State {
        controller,
        metrics: metrics.clone(),
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("metrics server: accept: {e}; retrying in {ACCEPT_BACKOFF:?}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.http_connections_refused.inc();
            log::debug!("metrics server: {MAX_CONNECTIONS} connections open; closing a new one");
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::debug!("metrics server connection: {e}"),
                Err(_) => {
                    log::debug!("metrics server connection: closed after {CONNECTION_LIFETIME:?}")
                }
            }
        });
    }
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        STATUS_PAGE,
    )
        .into_response()
}

fn internal(message: String) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
}

/// Run `f` off the reactor, its error an HTTP 500.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(internal(message)),
        Err(e) => Err(internal(e.to_string())),
    }
}

/// The published status document: built under the controller's lock by
/// the first scrape after a tick or a change (the lock held for the build
/// only), then shared.
async fn document(
    state: &State,
) -> Result<
    (
        Arc<crate::daemon::metrics::Published>,
        Arc<xlb_core::status::Status>,
    ),
    Response,
> {
    let published = state.metrics.published();
    let controller = state.controller.clone();
    let metrics = state.metrics.clone();
    let status = published
        .status
        .get_or_try_init(|| {
            blocking(move || {
                metrics.http_status_builds.inc();
                let guard = controller.lock().unwrap_or_else(|p| p.into_inner());
                guard.status().map(Arc::new).map_err(|e| e.to_string())
            })
        })
        .await?
        .clone();
    Ok((published, status))
}

async fn status(axum::extract::State(state): axum::extract::State<State>) -> Response {
    let json = match document(&state).await {
        Ok((published, status)) => published
            .json
            .get_or_try_init(|| {
                blocking(move || {
                    serde_json::to_vec(&*status)
                        .map(Bytes::from)
                        .map_err(|e| e.to_string())
                })
            })
            .await
            .cloned(),
        Err(r) => Err(r),
    };
    match json {
        Ok(json) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            json,
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn metrics(axum::extract::State(state): axum::extract::State<State>) -> Response {
    let text = match document(&state).await {
        Ok((published, status)) => {
            let metrics = state.metrics.clone();
            published
                .text
                .get_or_try_init(|| {
                    blocking(move || Ok(Bytes::from(metrics.encode_shared(status))))
                })
                .await
                .cloned()
        }
        Err(r) => Err(r),
    };
    match text {
        Ok(text) => (
            [(header::CONTENT_TYPE, crate::daemon::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(r) => r,
    }
}
