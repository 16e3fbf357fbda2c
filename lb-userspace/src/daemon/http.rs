//! The daemon's HTTP side, on the metrics address (loopback by default):
//! `/metrics` for Prometheus, `/api/status` (the `xlb status -o json`
//! document), `/api/history` (the last hours: revisions, each backend's
//! observed share, events; http_history.rs) and `/`, the live status page
//! that polls them.
//!
//! Bounded so it cannot starve the daemon (docs/RELIABILITY.md):
//! - at most `MAX_CONNECTIONS` connections; one more is closed at once
//!   (counted in `xlb_http_connections_refused_total`);
//! - a request's head must arrive within `HEADER_READ_TIMEOUT` (hyper's
//!   timer; it also closes a keep-alive connection idle that long), a
//!   request must be answered within `REQUEST_TIMEOUT` (tower's timeout,
//!   408), and a connection lives at most `CONNECTION_LIFETIME` (a client
//!   that never reads its response holds nothing for long);
//! - a scrape never encodes under the controller's lock, nor encodes the
//!   document at all: the status document is built once per collector tick
//!   or change (the lock held for that alone) and encoded when published,
//!   per VIP, compressed, the parts of unchanged VIPs kept; a scrape that
//!   takes gzip gets those parts as they are (a tenth of the text's bytes),
//!   any other client has them inflated as they are sent; after a tick the
//!   previous document is served while the next is built, so a scrape never
//!   waits for a build (snapshot.rs);
//! - it runs on a thread and a runtime of its own (`spawn`), at a lower
//!   CPU priority (`HTTP_NICE`): writing scrape bodies (37 MB of text at
//!   1,000 VIPs x 64 backends, ~4 MB with gzip) never waits for, nor holds up, the control
//!   socket, the collector or the health checks on the daemon's main
//!   runtime, and when the CPU is short the scrapes are what slows.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
use crate::daemon::http_history::{Ring, SAMPLE_EVERY};
use crate::daemon::metrics::Metrics;
use crate::daemon::snapshot::{Build, Published};

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
    /// The samples and events of the history, taken every `SAMPLE_EVERY`.
    history: Arc<Mutex<Ring>>,
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
        .route("/api/history", get(history))
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

/// The HTTP side on its own thread and runtime (`spawn`): stopped and
/// joined by `stop`, or on drop.
pub struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    ended: Option<tokio::sync::oneshot::Receiver<anyhow::Result<()>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Blocking tasks of the HTTP runtime at once: the document's build (under
/// the controller's lock) and its two encodings are made once per tick and
/// shared, so a few threads serve any number of scrapes.
const HTTP_BLOCKING_THREADS: usize = 4;

/// The nice value of the HTTP side's threads (the daemon's others run at
/// 0): with the CPU short, a thread at 10 gets about a tenth of the share
/// of one at 0, so a flood of scrapes slows itself, not `xlb status`, an
/// apply or the collector.
pub const HTTP_NICE: i32 = 10;

/// Lower the calling thread's CPU priority to `HTTP_NICE` (Linux: the nice
/// value is per thread). A failure is logged: the thread serves anyway.
fn lower_priority() {
    // SAFETY: setpriority reads no memory of ours; PRIO_PROCESS with who 0
    // is the calling thread on Linux.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HTTP_NICE) };
    if rc != 0 {
        log::warn!(
            "metrics server: setpriority({HTTP_NICE}): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Serve `listener` (bound by the start checks, non-blocking) on a thread
/// and a current-thread runtime of its own, at nice `HTTP_NICE`.
pub fn spawn(listener: std::net::TcpListener, controller: Shared) -> anyhow::Result<Server> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("xlb-http-blocking")
        .on_thread_start(lower_priority)
        .max_blocking_threads(HTTP_BLOCKING_THREADS)
        .build()
        .context("building the HTTP side's runtime")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (end, ended) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("xlb-http".into())
        .spawn(move || {
            lower_priority();
            let result = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                tokio::select! {
                    r = serve(listener, controller) => r,
                    _ = stopped => Ok(()),
                }
            });
            // A build or an encoding still running ends within a tick's
            // work; its result is of no use any more.
            runtime.shutdown_timeout(Duration::from_secs(1));
            let _ = end.send(result);
        })
        .context("starting the HTTP side's thread")?;
    Ok(Server {
        stop: Some(stop),
        ended: Some(ended),
        thread: Some(thread),
    })
}

impl Server {
    /// Resolves when the HTTP side ends on its own (an error: it serves
    /// until stopped otherwise).
    pub async fn ended(&mut self) -> anyhow::Result<()> {
        let Some(ended) = self.ended.as_mut() else {
            return std::future::pending().await;
        };
        let result = ended
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the HTTP side's thread panicked")));
        self.ended = None;
        result.context("the metrics server")
    }

    /// Stop serving and wait for the thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();
    }
}

pub async fn serve(listener: tokio::net::TcpListener, controller: Shared) -> anyhow::Result<()> {
    let metrics = controller
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .metrics()
        .clone();
    let state = State {
        controller,
        metrics: metrics.clone(),
        history: Arc::new(Mutex::new(Ring::default())),
    };
    observe_history(&state);
    tokio::spawn(sample(state.clone()));
    let app = app(state);
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

/// The status document now (snapshot.rs: built once per tick or change,
/// under the controller's lock for the build only, then shared).
async fn document(state: &State) -> Result<Arc<Published>, Response> {
    let (controller, snapshots) = (state.controller.clone(), state.metrics.snapshots.clone());
    blocking(move || snapshots.document(&builder(controller), false)).await
}

/// What builds the status document: the controller's `status`, with the
/// VIPs' decisions the snapshots keep; and what reads its counters.
pub fn builder(controller: Shared) -> Build {
    let reader = controller.clone();
    Build {
        document: Arc::new(move || {
            let guard = controller.lock().unwrap_or_else(|p| p.into_inner());
            let snapshots = guard.metrics().snapshots.clone();
            let mut decisions = snapshots.decisions();
            let (status, counters) = guard
                .status_with(&mut decisions)
                .map_err(|e| e.to_string())?;
            Ok((status, Some(counters)))
        }),
        counters: Arc::new(move || {
            let guard = reader.lock().unwrap_or_else(|p| p.into_inner());
            guard.status_counters().map(Some).map_err(|e| e.to_string())
        }),
    }
}

async fn status(
    axum::extract::State(state): axum::extract::State<State>,
    headers: axum::http::HeaderMap,
) -> Response {
    document(&state)
        .await
        .map_or_else(|r| r, |published| status_body(&published, &headers))
}

/// `/api/status` of `published`, encoded as `headers` accept.
fn status_body(published: &Published, headers: &axum::http::HeaderMap) -> Response {
    // Kept as zstd frames: sent as they are to a client that takes zstd,
    // decompressed as they are sent to any other.
    let body = if accepts(headers, "zstd") {
        let frames = published.json_zstd();
        let len = frames.iter().map(|f| f.len() as u64).sum();
        (Parts::body(frames.into_iter(), len), Some("zstd"))
    } else {
        let len = published.json_len();
        (Parts::body(published.json_plain(), len), None)
    };
    encoded(json_answer(Ok(body.0)), body.1)
}

/// Whether a request's Accept-Encoding takes `coding` (RFC 9110 12.5.3:
/// a list of codings, each with an optional weight; weight 0 refuses).
fn accepts(headers: &axum::http::HeaderMap, coding: &str) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut fields = item.split(';').map(str::trim);
            let named = fields
                .next()
                .is_some_and(|c| c.eq_ignore_ascii_case(coding));
            let refused = fields.any(|f| {
                f.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            named && !refused
        })
}

/// `response` with its Content-Encoding (if any), and `Vary:
/// Accept-Encoding` (its body depends on it).
fn encoded(mut response: Response, coding: Option<&'static str>) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::VARY,
        axum::http::HeaderValue::from_static("accept-encoding"),
    );
    if let Some(coding) = coding {
        headers.insert(
            header::CONTENT_ENCODING,
            axum::http::HeaderValue::from_static(coding),
        );
    }
    response
}

/// A response body of parts written one after the other, never joined
/// into one buffer (a document's encodings are kept in parts: snapshot.rs),
/// made as they are sent (decompressed, for a client that takes no
/// compression); its length is known, so it is sent with a
/// Content-Length.
struct Parts {
    parts: Box<dyn Iterator<Item = Bytes> + Send>,
    left: u64,
}

impl Parts {
    /// A body of `parts`, `len` bytes in all.
    fn body(parts: impl Iterator<Item = Bytes> + Send + 'static, len: u64) -> axum::body::Body {
        axum::body::Body::new(Parts {
            parts: Box::new(parts.filter(|p| !p.is_empty())),
            left: len,
        })
    }
}

impl hyper::body::Body for Parts {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let next = self.parts.next();
        std::task::Poll::Ready(Some(match next {
            Some(part) if part.len() as u64 <= self.left => {
                self.left -= part.len() as u64;
                Ok(hyper::body::Frame::data(part))
            }
            // Parts that do not add up to the length said: a bug; the
            // connection is cut rather than a wrong body sent.
            _ => Err(std::io::Error::other(format!(
                "a response body ended {} bytes short of, or beyond, its length",
                self.left
            ))),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

/// Every `SAMPLE_EVERY`, ask for the status document, so one is built
/// after each tick at least that often; the history observes each
/// document built (`observe_history`), as the documents themselves are not
/// kept.
async fn sample(state: State) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = Instant::now();
    loop {
        every.tick().await;
        if Instant::now() < next {
            continue;
        }
        let _ = document(&state).await;
        next = Instant::now() + state.metrics.snapshots.last_build() * SAMPLE_BUDGET;
    }
}

/// The history's sampler asks for a document (a build, when a tick came
/// since) at most once per this many times the last build took: builds no
/// one else asked for take at most 1/20 of a core. Small configs build in
/// milliseconds and are sampled every `SAMPLE_EVERY`; at 1,000 VIPs x 64
/// backends a build of 0.1-0.3 s (more on a loaded machine) makes it every
/// 2-6 s, where every 2 s kept a core busy a tenth of the time or more.
const SAMPLE_BUDGET: u32 = 20;

/// Each document built into the history's ring, at most one per
/// `SAMPLE_EVERY` (less a tenth: builds follow the sampler's requests,
/// not a clock), as the sampler took the published one before.
fn observe_history(state: &State) {
    let history = state.history.clone();
    let mut last: Option<f64> = None;
    let every = SAMPLE_EVERY.as_secs_f64() * 0.9;
    state.metrics.snapshots.observe(move |status| {
        let at = status.generated_at_unix_seconds;
        if last.is_some_and(|last| at - last < every) {
            return;
        }
        last = Some(at);
        history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(status);
    });
}

/// A JSON body, never cached (the API's answers), or the error's response.
fn json_answer(json: Result<impl IntoResponse, Response>) -> Response {
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

/// `/api/history`: the ring's samples and events, and the revisions of the
/// last hours read from the revision store.
async fn history(axum::extract::State(state): axum::extract::State<State>) -> Response {
    let json = blocking(move || {
        let now = xlb_core::clock::unix_now();
        let revisions = {
            let guard = state.controller.lock().unwrap_or_else(|p| p.into_inner());
            let mut revisions = Vec::new();
            if let Some(store) = guard.revisions() {
                for number in Ring::shown(&store.summaries(), now) {
                    match store.get(number) {
                        Ok(r) => revisions.extend(r),
                        Err(e) => return Err(format!("reading revision {number}: {e}")),
                    }
                }
            }
            revisions
        };
        let doc = state
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .document(&revisions, now);
        serde_json::to_vec(&doc).map_err(|e| e.to_string())
    })
    .await;
    json_answer(json)
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<State>,
    headers: axum::http::HeaderMap,
) -> Response {
    document(&state).await.map_or_else(
        |r| r,
        |published| metrics_body(&state.metrics, &published, &headers),
    )
}

/// `/metrics` of `published`, encoded as `headers` accept.
fn metrics_body(
    metrics: &Metrics,
    published: &Published,
    headers: &axum::http::HeaderMap,
) -> Response {
    // The registry's few series are written now, the document's were when
    // it was published, and kept deflated (exposition.rs).
    let registry = metrics.registry_text();
    let text = published.text();
    let (body, coding) = if accepts(headers, "gzip") {
        let mut deflater = crate::daemon::exposition::Deflater::default();
        let registry = deflater.piece(&registry);
        let parts = crate::daemon::exposition::gzip(&[&registry, text], EOF, &mut deflater);
        let len = parts.iter().map(|p| p.len() as u64).sum();
        (Parts::body(parts.into_iter(), len), Some("gzip"))
    } else {
        let len = registry.len() as u64 + text.len + EOF.len() as u64;
        let inflated = crate::daemon::exposition::Inflating::new(text.bytes.clone(), 1 << 18);
        let parts = std::iter::once(registry)
            .chain(inflated)
            .chain(std::iter::once(Bytes::from_static(EOF)));
        (Parts::body(parts, len), None)
    };
    encoded(
        (
            [(header::CONTENT_TYPE, crate::daemon::metrics::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        coding,
    )
}

/// How the OpenMetrics text ends.
const EOF: &[u8] = b"# EOF\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_read_as_a_list_with_weights() {
        let with = |value: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, value.parse().unwrap());
            h
        };
        // What Prometheus sends.
        assert!(accepts(&with("gzip"), "gzip"));
        assert!(accepts(&with("deflate, GZIP;q=0.5, br"), "gzip"));
        assert!(accepts(&with("gzip, deflate, br, zstd"), "zstd"));
        assert!(!accepts(&with("gzip;q=0"), "gzip"));
        assert!(!accepts(&with("identity"), "gzip"));
        assert!(!accepts(&with("xgzip"), "gzip"));
        assert!(!accepts(&axum::http::HeaderMap::new(), "gzip"));
    }
}
