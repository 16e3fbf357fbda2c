//! The daemon's HTTP side, on the metrics address (loopback by default):
//! `/metrics` for Prometheus, `/api/status` (the `xlb status -o json`
//! document) and `/`, the live status page that polls it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::daemon::controller::Controller;

/// The status page: one file, no build step, no CDN.
pub const STATUS_PAGE: &str = include_str!("web/status.html");

type Shared = Arc<Mutex<Controller>>;

/// Bind now (so a taken port fails the daemon's start, not later).
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the metrics address {address}"))
}

pub async fn serve(listener: tokio::net::TcpListener, controller: Shared) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(controller);
    axum::serve(listener, app).await.context("metrics server")
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

/// Run `f` on the controller off the reactor (it reads maps: syscalls).
async fn with_controller<T: Send + 'static>(
    controller: Shared,
    f: impl FnOnce(&Controller) -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    let joined = tokio::task::spawn_blocking(move || {
        let guard = controller.lock().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    })
    .await;
    match joined {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err((StatusCode::INTERNAL_SERVER_ERROR, message).into_response()),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()),
    }
}

async fn status(axum::extract::State(controller): axum::extract::State<Shared>) -> Response {
    match with_controller(controller, |c| c.status().map_err(|e| e.to_string())).await {
        Ok(s) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(s)).into_response(),
        Err(r) => r,
    }
}

async fn metrics(axum::extract::State(controller): axum::extract::State<Shared>) -> Response {
    let text = with_controller(controller, |c| {
        let status = c.status().map_err(|e| e.to_string())?;
        Ok(c.metrics().encode(status))
    })
    .await;
    match text {
        Ok(text) => (
            [(header::CONTENT_TYPE, crate::daemon::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(r) => r,
    }
}
