//! `xlb run`: load, attach (or adopt the pins of an earlier daemon:
//! restart.rs), apply, then serve the control API until SIGTERM or SIGINT,
//! which exit and leave the program attached and its maps pinned (`xlb
//! detach` removes them). SIGHUP re-reads the config file.

pub mod announce;
pub mod audit;
pub mod controller;
pub mod edit;
pub mod exposition;
pub mod fleet;
pub mod health;
pub mod held;
pub mod http;
pub mod http_history;
pub mod metrics;
pub mod notify;
pub mod peer;
pub mod privileges;
pub mod restart;
pub mod snapshot;
pub mod start;
pub mod trace;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::body::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use xlb_core::change::{ApplyOptions, Candidate, Origin};
use xlb_core::revision::Kind;

use crate::daemon::controller::{ApplyError, Controller};
use crate::daemon::start::StartError;
use xlb_core::api::{ApiError, ErrorKind, NodeAction, Request, Response};

pub struct RunOptions {
    /// The config file, parsed where it entered (`xlb run` parses it to
    /// find the interface before anything is loaded); recorded as the
    /// startup revision.
    pub candidate: Candidate,
    pub socket: PathBuf,
    pub mode: xlb_dataplane::AttachMode,
    /// Overrides the config's `metrics_address`.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Where revisions are kept (`<state_dir>/revisions`).
    pub state_dir: PathBuf,
    pub keep_revisions: usize,
    pub bake: controller::BakePolicy,
    /// The collector's period while a revision bakes.
    pub bake_tick: std::time::Duration,
    /// `--socket-group`: who besides root may use the control socket.
    pub socket_group: Option<peer::SocketGroup>,
    /// The bpffs mount the pins live under (`<bpffs>/xlb/<interface>/`).
    pub bpffs: PathBuf,
    /// Load the balancer from this object file instead of the embedded one.
    pub object: Option<PathBuf>,
    /// `--announce-table`: announce VIPs through this routing table.
    pub announce_table: Option<u32>,
    /// The hold-down before a withdrawn VIP is announced again.
    pub announce_hold: std::time::Duration,
    /// On SIGTERM while announcing: forward this long after withdrawing.
    pub withdraw_grace: std::time::Duration,
    /// `--fleet URL --node NAME`: the node's agent in its fleet (fleet.rs);
    /// None: the node works alone.
    pub fleet: Option<fleet::FleetOptions>,
}

/// Bind the control socket: root only, or root and `--socket-group`
/// (peer.rs).
fn bind(socket: &Path, group: Option<&peer::SocketGroup>) -> anyhow::Result<UnixListener> {
    peer::bind(socket, group)
}

/// Run the daemon until SIGTERM or SIGINT (with `--announce-table`: the
/// VIPs are withdrawn first, and forwarding goes on for the grace). Every check that can fail runs
/// first (`start::check`, `restart::inspect`): a start refused there has
/// touched neither the interface nor the pins.
pub fn run(opts: RunOptions) -> Result<(), StartError> {
    let config = &opts.candidate.config;
    let interface = config.interface.clone();
    restart::ignore_hangup_for_now();
    let metrics_address = opts.metrics_address.unwrap_or(config.metrics_address);
    let ready = start::check(&start::Checks {
        interface: &interface,
        state_dir: &opts.state_dir,
        bpffs: &opts.bpffs,
        run_dir: Path::new(crate::lock::RUN_DIR),
        socket: &opts.socket,
        metrics_address,
        keep_revisions: opts.keep_revisions,
    })?;
    // Held until the daemon exits: one daemon per interface and state dir.
    let _locks = ready.locks;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::failed)?;
    // Announcing: the drain state and the route table are read before
    // anything is loaded (a failure here leaves forwarding as it was).
    let announcing =
        controller::Announcing::new(opts.announce_table, opts.announce_hold.as_secs_f64())
            .with_drain_file(&opts.state_dir)
            .map_err(|e| {
                StartError::Failed(anyhow::anyhow!(
                    "reading {}: {e}",
                    opts.state_dir.join(controller::DRAIN_FILE).display()
                ))
            })?;
    let wake = announcing.wake();
    let routes = runtime
        .block_on(async {
            let Some(table) = opts.announce_table else {
                return Ok(None);
            };
            let routes = xlb_routes::Routes::open(table)?;
            let held = routes.list().await?;
            log::info!(
                "announcing through routing table {table} ({} routes of xlb there now)",
                held.len()
            );
            Ok::<_, xlb_routes::RouteError>(Some(routes))
        })
        .map_err(StartError::failed)?;
    let inspected = restart::inspect(
        &interface,
        config.conn_table_size,
        &opts.bpffs,
        opts.object.as_deref(),
    )?;
    // A fresh start (no pinned state to adopt) builds the config's tables
    // while the kernel verifies the program, a core each: ~0.3 s of one
    // core at 1,000 VIPs x 64 backends with a pool each, beside ~0.15 s
    // of loading (docs/BENCHMARKS.md, issue 20, "Twelfth round").
    let ahead = (!inspected.pinned.holds_state()).then(|| {
        let config = config.clone();
        std::thread::Builder::new()
            .name("xlb-tables".into())
            .spawn(move || xlb_core::state::prebuild(&config))
    });
    // From here on the interface and the pins change.
    // The connection table is sized here, once (and pinned): a later apply
    // that changes conn_table_size is refused.
    let loaded = restart::load_and_attach(inspected, &interface, opts.mode);
    // A thread that could not be made or failed builds nothing ahead: the
    // apply builds every table.
    let ahead = ahead.and_then(|spawned| spawned.ok()?.join().ok());
    let (dataplane, pinned) = loaded.map_err(StartError::Failed)?;
    let metrics = Arc::new(metrics::Metrics::new());
    let controller = Controller::new(dataplane, interface, ready.host, metrics)
        .with_revisions(ready.store)
        .with_bake(opts.bake)
        .with_audit(ready.audit)
        .with_announcing(announcing);
    let mut controller = match opts.metrics_address {
        // `--metrics-address` overrides the config's: its changes do nothing.
        Some(_) => controller,
        None => controller.with_metrics_bound(metrics_address),
    };
    let config_file = PathBuf::from(&opts.candidate.file);
    let revision = restart::first_apply(&mut controller, &pinned, opts.candidate, ahead)
        .map_err(StartError::Failed)?;
    log::info!("serving revision {revision}");
    // The start's parse and tables were made here and on the pool.
    crate::memory::give_back();
    let conns = controller.conn_table();
    // A daemon killed during a trace left the pinned switch on: no one
    // reads that session's records, so it goes off here.
    if let Some(tracer) = controller.tracer() {
        let mut t = tracer.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_on().unwrap_or(true) {
            log::info!("switching off a trace an earlier daemon left on");
            if let Err(e) = t.stop() {
                log::warn!("switching tracing off: {e}");
            }
        }
    }
    let progress = controller.metrics().progress.clone();
    let controller = Arc::new(Mutex::new(controller));
    // Its own thread: it waits on no lock and no reactor (notify.rs).
    let watchdog = notify::Watchdog::spawn(progress).map_err(StartError::failed)?;
    // Its own thread and runtime: scrapes never delay the control socket.
    let mut http = http::spawn(ready.metrics, controller.clone()).map_err(StartError::Failed)?;

    let policy = Arc::new(peer::Policy::new(opts.socket_group.clone()));
    log::info!("metrics, status page and /api/status on http://{metrics_address}/");
    let result = runtime.block_on(async {
        tokio::select! {
            r = serve(controller.clone(), &opts.socket, policy, revision) => r,
            r = http.ended() => r,
            r = collect(controller.clone(), opts.bake_tick) => r,
            r = count_conns(controller.clone(), conns) => r,
            r = health::serve(controller.clone()) => r,
            r = restart::reload_on_hangup(controller.clone(), config_file) => r,
            r = announce::serve(controller.clone(), routes.clone(), wake) => r,
            r = announce::stop(controller.clone(), routes.clone(), opts.withdraw_grace) => r,
            r = fleet::serve(controller.clone(), opts.fleet.clone()) => r,
            r = held::serve(controller.clone(), opts.fleet.clone()) => r,
        }
    });
    notify::stopping();
    drop(watchdog);
    http.stop();
    let _ = std::fs::remove_file(&opts.socket);
    // The pinned link keeps the program attached, the pinned maps keep
    // their tables and flows: forwarding goes on until the next start.
    drop(controller);
    log::info!("exiting; the program stays attached (`xlb detach` removes it)");
    result.map_err(StartError::Failed)
}

/// Once a second: the detector and the drift check.
/// Once a second: the detector and the drift check; every `bake_tick`
/// while a revision bakes, so a bad change is judged, and rolled back, in a
/// fraction of the time (each tick is evidence the detector can use). The
/// loop wakes every `bake_tick` to notice a bake as soon as an apply starts
/// one, and otherwise runs the tick once a second.
async fn collect(
    controller: Arc<Mutex<Controller>>,
    bake_tick: std::time::Duration,
) -> anyhow::Result<()> {
    let second = std::time::Duration::from_secs(1);
    let wake = bake_tick.min(second);
    let mut last: Option<std::time::Instant> = None;
    loop {
        let controller = controller.clone();
        let due = last;
        let ran = tokio::task::spawn_blocking(move || {
            let mut c = controller.lock().unwrap_or_else(|p| p.into_inner());
            if c.baking() || due.is_none_or(|t| t.elapsed() >= second) {
                if let Err(e) = c.tick(xlb_core::clock::unix_now()) {
                    log::warn!("collector: {e}");
                }
                // The HTTP side's document is rebuilt from this tick on.
                c.metrics().invalidate();
                // What the tick freed, given back before its thread sleeps.
                crate::memory::give_back_here();
                // The watchdog's sign of life (notify.rs).
                c.metrics().progress.beat();
                return true;
            }
            false
        })
        .await?;
        if ran {
            last = Some(std::time::Instant::now());
        }
        tokio::time::sleep(wake).await;
    }
}

/// Every `CONN_SCAN_PERIOD` (the first at once; longer after a slow scan):
/// count the connection table on the blocking pool, without the
/// controller's lock (a full table of 16 M entries takes seconds), then
/// record the count under it.
async fn count_conns(
    controller: Arc<Mutex<Controller>>,
    conns: xlb_dataplane::ConnTable,
) -> anyhow::Result<()> {
    loop {
        let controller = controller.clone();
        let conns = conns.clone();
        let took = tokio::task::spawn_blocking(move || match conns.scan() {
            Ok(scan) => {
                let took = scan.seconds;
                controller
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record_conn_scan(scan);
                took
            }
            Err(e) => {
                log::warn!("connection-table scan: {e}");
                0.0
            }
        })
        .await?;
        tokio::time::sleep(xlb_dataplane::conn_scan_pause(took)).await;
    }
}

/// A control request (one JSON line) must arrive whole within this, and
/// its answer be taken within it.
pub const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest control request: the largest valid config (an apply or plan
/// carries the file's text, JSON-escaped), from the declared maxima of
/// lb_common::maps: `MAX_BACKENDS` (65,536) backends at
/// `REQUEST_BYTES_PER_BACKEND` each, `MAX_VIPS` (1,024) VIPs at
/// `REQUEST_BYTES_PER_VIP` each, and `REQUEST_BYTES_BASE` for the top-level
/// keys and the request's own fields: 65,536 x 384 + 1,024 x 4,096 +
/// 65,536 = 29,425,664 bytes (28.06 MiB). A backend written out in full
/// (six keys, a 63-character name, the longest IPv6 address, a MAC,
/// weight 10000, state "draining", a capacity) is under 256 bytes with its
/// quotes and newlines escaped; the rest is room for indentation and
/// comments (docs/RELIABILITY.md).
pub const MAX_REQUEST_BYTES: usize = lb_common::maps::MAX_BACKENDS as usize
    * REQUEST_BYTES_PER_BACKEND
    + lb_common::maps::MAX_VIPS as usize * REQUEST_BYTES_PER_VIP
    + REQUEST_BYTES_BASE;
pub const REQUEST_BYTES_PER_BACKEND: usize = 384;
pub const REQUEST_BYTES_PER_VIP: usize = 4096;
pub const REQUEST_BYTES_BASE: usize = 65_536;

/// Control connections served at once, at most.
pub const MAX_CONTROL_CONNECTIONS: usize = 64;

/// After a failed `accept` (EMFILE, ENFILE, ENOBUFS): wait this long, so a
/// daemon out of descriptors neither exits nor spins.
pub const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Serve the control socket; READY=1 to systemd once it listens (the
/// first apply, `revision`, is done by then). Each connection is served on
/// its own task: a slow client delays nobody else.
async fn serve(
    controller: Arc<Mutex<Controller>>,
    socket: &Path,
    policy: Arc<peer::Policy>,
    revision: u64,
) -> anyhow::Result<()> {
    let listener = bind(socket, policy.group.as_ref())?;
    log::info!("control socket {}", socket.display());
    notify::ready(revision);
    let metrics = controller
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .metrics()
        .clone();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONTROL_CONNECTIONS));
    loop {
        // At most MAX_CONTROL_CONNECTIONS at once: more wait in the
        // listen backlog (each served one is done within CONTROL_TIMEOUT
        // of reading, plus its own work).
        let permit = permits.clone().acquire_owned().await?;
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (or buffers): the daemon goes on
                // forwarding and checking; try again shortly.
                metrics.control_accept_errors.inc();
                log::warn!("control socket: accept: {e}; retrying in {ACCEPT_BACKOFF:?}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let controller = controller.clone();
        let policy = policy.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = handle(stream, controller, policy, metrics).await {
                log::warn!("control connection: {e:#}");
            }
        });
    }
}

/// Why a request was answered before it was parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum BadRequest {
    TooBig,
    TimedOut,
    NotUtf8,
    /// The connection ended before the raw text its line announced.
    ShortText {
        got: u64,
        expected: u64,
    },
}

impl BadRequest {
    fn reason(&self) -> &'static str {
        match self {
            BadRequest::TooBig => "too_big",
            BadRequest::TimedOut => "timed_out",
            BadRequest::NotUtf8 => "not_utf8",
            BadRequest::ShortText { .. } => "short_text",
        }
    }

    fn response(&self) -> Response {
        let message = match self {
            BadRequest::TooBig => format!(
                "bad request: larger than {MAX_REQUEST_BYTES} bytes (the largest valid config, \
                 1024 VIPs and 65536 backends, fits)"
            ),
            BadRequest::TimedOut => format!(
                "bad request: no complete request line within {}s",
                CONTROL_TIMEOUT.as_secs()
            ),
            BadRequest::NotUtf8 => "bad request: not UTF-8".to_string(),
            BadRequest::ShortText { got, expected } => format!(
                "bad request: the connection ended after {got} of the {expected} bytes of text \
                 its line announced (`text_bytes`)"
            ),
        };
        Response::Error(ApiError {
            kind: ErrorKind::BadInput,
            message,
        })
    }
}

/// A request as read: its line, its `op`, and the raw text that followed
/// the line when it said `text_bytes` (api.rs).
#[derive(Debug, PartialEq, Eq)]
pub struct Incoming {
    pub line: String,
    /// The line's `op` (None: no JSON object with one; `peer::admit` says
    /// what is wrong).
    pub op: Option<String>,
    pub text: Option<String>,
}

/// What the daemon reads of a line before it is admitted: its `op` and
/// whether a raw text follows. Only these fields are built (an old
/// client's line may carry a config of megabytes inline).
#[derive(serde::Deserialize)]
struct LineHead {
    op: Option<String>,
    text_bytes: Option<u64>,
}

/// Read one request: its line, then the raw text the line announces
/// (`text_bytes`), at most `limit` bytes in all, within `timeout`. None:
/// the client closed without sending anything.
pub async fn read_request<R: tokio::io::AsyncRead + Unpin>(
    read: R,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Option<Incoming>, BadRequest> {
    let mut reader = BufReader::new(read.take(limit as u64 + 1));
    match tokio::time::timeout(timeout, read_whole(&mut reader, limit)).await {
        Err(_) => Err(BadRequest::TimedOut),
        Ok(read) => read,
    }
}

async fn read_whole<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Option<Incoming>, BadRequest> {
    let mut line = Vec::new();
    // A read error is a closed connection: nothing to answer.
    if reader.read_until(b'\n', &mut line).await.is_err() || line.is_empty() {
        return Ok(None);
    }
    if line.len() > limit {
        return Err(BadRequest::TooBig);
    }
    let line = String::from_utf8(line).map_err(|_| BadRequest::NotUtf8)?;
    let Ok(head) = serde_json::from_str::<LineHead>(&line) else {
        return Ok(Some(Incoming {
            line,
            op: None,
            text: None,
        }));
    };
    let text = match head.text_bytes {
        None => None,
        Some(n) if n > (limit - line.len()) as u64 => return Err(BadRequest::TooBig),
        Some(n) => {
            let mut text = vec![0; n as usize];
            let mut got = 0;
            while got < text.len() {
                match reader.read(&mut text[got..]).await {
                    Ok(0) | Err(_) => {
                        return Err(BadRequest::ShortText {
                            got: got as u64,
                            expected: n,
                        });
                    }
                    Ok(read) => got += read,
                }
            }
            Some(String::from_utf8(text).map_err(|_| BadRequest::NotUtf8)?)
        }
    };
    Ok(Some(Incoming {
        line,
        op: head.op,
        text,
    }))
}

/// The requests that change what the daemon serves (the HTTP side's
/// published document is rebuilt after them).
fn changes(request: &Request) -> bool {
    !matches!(
        request,
        Request::Status
            | Request::StatusZstd
            | Request::StatusVip { .. }
            | Request::History
            | Request::Show { .. }
            | Request::Plan { .. }
            | Request::Version
    )
}

/// One JSON line.
fn encode(response: &Response) -> anyhow::Result<Vec<u8>> {
    let mut out = serde_json::to_vec(response)?;
    out.push(b'\n');
    Ok(out)
}

async fn handle(
    stream: UnixStream,
    controller: Arc<Mutex<Controller>>,
    policy: Arc<peer::Policy>,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<()> {
    // Who is asking, from the kernel: decides what it may do (peer.rs).
    let peer = peer::Peer::of(&stream).context("reading the peer's credentials")?;
    let (mut read, mut write) = stream.into_split();
    let out = match read_request(&mut read, MAX_REQUEST_BYTES, CONTROL_TIMEOUT).await {
        Ok(None) => return Ok(()),
        Err(bad) => {
            metrics.control_bad_request(bad.reason());
            log::warn!(
                "control socket: bad request from pid {:?}: {}",
                peer.pid,
                bad.reason()
            );
            vec![Bytes::from(encode(&bad.response())?)]
        }
        Ok(Some(incoming)) if incoming.op.as_deref() == Some("trace") => {
            // A stream, not one answer: served on this task (trace.rs).
            return match peer::admit(&policy, &peer, &incoming.line, incoming.text) {
                Ok(Request::Trace(request)) => {
                    trace::serve(request, read, write, controller, metrics).await
                }
                Ok(_) => Ok(()),
                Err(e) => {
                    let out = encode(&Response::Error(e))?;
                    write.write_all(&out).await?;
                    Ok(())
                }
            };
        }
        Ok(Some(incoming)) => {
            // Map writes and reads are blocking syscalls (and so is the
            // peer's user lookup): keep them off the reactor.
            let metrics = metrics.clone();
            // So is encoding the answer: a status at 1,000 VIPs x 64
            // backends is a second of JSON.
            let (answered, answer_rx) = tokio::sync::oneshot::channel();
            tokio::task::spawn_blocking(move || {
                let (out, large) = match peer::admit(&policy, &peer, &incoming.line, incoming.text)
                {
                    Err(e) => (
                        encode(&Response::Error(e)).map(|b| vec![Bytes::from(b)]),
                        false,
                    ),
                    Ok(request) => {
                        // A plan or a change parsed a config and built
                        // tables, here and on the pool (memory.rs).
                        let large = changes(&request) || matches!(request, Request::Plan { .. });
                        (answer(&controller, &metrics, request), large)
                    }
                };
                // The answer goes out while what made it is given back.
                let _ = answered.send(out);
                if large {
                    crate::memory::give_back();
                }
            });
            answer_rx
                .await
                .context("the request's worker ended without an answer")??
        }
    };
    // The answer's parts one after the other (the status: its JSON framed,
    // not copied).
    tokio::time::timeout(CONTROL_TIMEOUT, async {
        for part in &out {
            write.write_all(part).await?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .context("writing the answer: timed out")??;
    // The request's text (read here) and its answer are freed on this
    // worker, which may then sleep (memory.rs).
    drop(out);
    crate::memory::give_back_here();
    Ok(())
}

/// The answer to `request`: the status from the snapshot (snapshot.rs:
/// built once per tick or change, its encoding made once), every other
/// request through `dispatch`.
fn answer(
    controller: &Arc<Mutex<Controller>>,
    metrics: &metrics::Metrics,
    request: Request,
) -> anyhow::Result<Vec<Bytes>> {
    // `xlb status` waits for the document of the last tick (its counters
    // are as of then at least); `--vip` takes the current one.
    let snapshot = |fresh| {
        metrics
            .snapshots
            .document(&http::builder(controller.clone()), fresh)
    };
    let response = match request {
        Request::Status => match snapshot(true).and_then(|p| p.answer()) {
            Ok(parts) => return Ok(parts.to_vec()),
            Err(e) => internal(e),
        },
        Request::StatusZstd => match snapshot(true).and_then(|p| p.answer_zstd()) {
            Ok(parts) => return Ok(parts),
            Err(e) => internal(e),
        },
        Request::StatusVip { vip } => match snapshot(false).and_then(|p| p.answer_vip(&vip)) {
            Ok(Ok(parts)) => return Ok(parts),
            Ok(Err(message)) => Response::Error(ApiError {
                kind: ErrorKind::BadInput,
                message,
            }),
            Err(e) => internal(e),
        },
        request => {
            let changed = changes(&request);
            let (as_text, text_raw) = match request {
                Request::Plan {
                    as_text, text_raw, ..
                } => (as_text, text_raw),
                _ => (false, false),
            };
            let mut response = dispatch(controller, request);
            if changed {
                metrics.invalidate_change();
            }
            // The plan's text is rendered here, out of the controller's
            // lock (on every core at many VIPs), and sent instead of the
            // whole document: raw after the line when the client reads it
            // so (api.rs).
            if as_text && let Response::Plan(plan) = &response {
                let text = plan.to_text();
                // The document is freed while the text goes out.
                crate::memory::drop_aside(response);
                if text_raw {
                    let head = encode(&Response::PlanTextRaw {
                        bytes: text.text.len() as u64,
                        verdict: text.verdict,
                    })?;
                    return Ok(vec![Bytes::from(head), Bytes::from(text.text.into_bytes())]);
                }
                response = Response::PlanText(Box::new(text));
            }
            response
        }
    };
    Ok(vec![Bytes::from(encode(&response)?)])
}

fn internal(message: String) -> Response {
    Response::Error(ApiError {
        kind: ErrorKind::Internal,
        message,
    })
}

fn dispatch(controller: &Mutex<Controller>, request: Request) -> Response {
    let mut controller = controller
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match request {
        Request::Version => Response::Version(crate::build_info::build_info()),
        Request::Status | Request::StatusZstd => match controller.status() {
            Ok(s) => Response::Status(Box::new(s)),
            Err(e) => Response::Error(ApiError {
                kind: ErrorKind::Internal,
                message: e.to_string(),
            }),
        },
        Request::StatusVip { vip } => match controller.status() {
            Ok(s) => match s.one_vip(&vip) {
                Ok(one) => Response::Status(Box::new(one)),
                Err(message) => Response::Error(ApiError {
                    kind: ErrorKind::BadInput,
                    message,
                }),
            },
            Err(e) => internal(e.to_string()),
        },
        Request::Repair => match controller.repair() {
            Ok(repaired) => Response::Repaired(repaired),
            Err(e) => Response::Error(ApiError {
                kind: ErrorKind::Internal,
                message: e.to_string(),
            }),
        },
        // The store's index: no revision file is read.
        Request::History => Response::History(
            controller
                .revisions()
                .map(|s| s.summaries())
                .unwrap_or_default(),
        ),
        Request::Show { number } => match controller.revisions().map(|s| s.get(number)) {
            Some(Ok(Some(rev))) => Response::Revision(Box::new(rev)),
            Some(Ok(None)) | None => Response::Error(ApiError {
                kind: ErrorKind::BadInput,
                message: format!("no revision {number} (see `xlb history`)"),
            }),
            Some(Err(e)) => internal(e.to_string()),
        },
        Request::Rollback { to, user, message } => {
            match controller.rollback(to, &Origin { user, message }) {
                Ok(revision) => Response::Applied {
                    revision,
                    warnings: Vec::new(),
                },
                Err(e) => e.response(),
            }
        }
        Request::Edit(edit) => edit::respond(&mut controller, edit),
        Request::Trace(_) => Response::Error(ApiError {
            kind: ErrorKind::BadInput,
            message: "a trace is a stream, served on its own connection".to_string(),
        }),
        Request::Node {
            action,
            user,
            message,
        } => {
            let done = match action {
                NodeAction::Drain => controller.drain_node(&user, message),
                NodeAction::Undrain => controller.undrain_node(&user, message),
            };
            match done {
                Ok(node) => Response::Node(Box::new(node)),
                Err(e) => internal(e.to_string()),
            }
        }
        Request::Plan {
            file, text, user, ..
        } => {
            let origin = Origin {
                user,
                message: None,
            };
            match controller.candidate(text, file, origin) {
                Ok(candidate) => {
                    let planned = controller.plan_audited(&candidate);
                    // Not freed under the controller's lock.
                    crate::memory::drop_aside(candidate);
                    match planned {
                        Ok(plan) => Response::Plan(Box::new(plan)),
                        Err(e) => e.response(),
                    }
                }
                Err(e) => ApplyError::from(e).response(),
            }
        }
        Request::Apply {
            file,
            text,
            user,
            message,
            force,
            expect_revision,
        } => {
            let applied = controller
                .candidate(text, file.clone(), Origin { user, message })
                .map_err(ApplyError::from)
                .and_then(|candidate| {
                    let options = ApplyOptions::operator(Kind::Apply, force, expect_revision);
                    controller.apply(candidate, options)
                });
            match applied {
                // The config's warnings, as its plan found them (an
                // operator's apply is always planned).
                Ok(applied) => Response::Applied {
                    revision: applied.revision,
                    warnings: applied.plan.map(|p| p.warnings).unwrap_or_default(),
                },
                Err(e) => {
                    log::warn!("apply of {file} refused: {e}");
                    e.response()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request limit's per-backend share holds the longest backend the
    /// config accepts, written out in full and JSON-escaped, with room.
    #[test]
    fn the_request_limit_holds_the_largest_valid_config() {
        let name = "b".repeat(63);
        let backend = format!(
            "  [[vip.backend]]\n  name = \"{name}\"\n  address = \"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\"\n  \
             mac = \"02:00:00:00:00:11\"\n  weight = 10000\n  state = \"draining\"\n  capacity = 4294967295\n"
        );
        let escaped = serde_json::to_string(&backend).unwrap();
        assert!(escaped.len() < 256, "{} bytes", escaped.len());
        assert!(escaped.len() * 3 / 2 <= REQUEST_BYTES_PER_BACKEND);
        assert_eq!(MAX_REQUEST_BYTES, 29_425_664);
    }

    #[test]
    fn bad_requests_are_told_apart() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ok = read_request(&b"{\"op\":\"status\"}\n"[..], 100, CONTROL_TIMEOUT).await;
            assert_eq!(
                ok,
                Ok(Some(Incoming {
                    line: "{\"op\":\"status\"}\n".to_string(),
                    op: Some("status".into()),
                    text: None
                }))
            );
            // A raw text after its line: read whole, and no further.
            let framed = b"{\"op\":\"plan\",\"text_bytes\":5}\na = 1trailing";
            let read = read_request(&framed[..], 100, CONTROL_TIMEOUT).await;
            assert_eq!(read.unwrap().unwrap().text.as_deref(), Some("a = 1"));
            assert_eq!(
                read_request(&framed[..30], 100, CONTROL_TIMEOUT).await,
                Err(BadRequest::ShortText {
                    got: 1,
                    expected: 5
                })
            );
            // The limit counts the line and its text.
            assert_eq!(
                read_request(&framed[..], 30, CONTROL_TIMEOUT).await,
                Err(BadRequest::TooBig)
            );
            assert_eq!(
                read_request(
                    &b"{\"op\":\"plan\",\"text_bytes\":2}\n\xff\xfe"[..],
                    100,
                    CONTROL_TIMEOUT
                )
                .await,
                Err(BadRequest::NotUtf8)
            );
            assert_eq!(
                read_request(&b"\xff\xfe\n"[..], 100, CONTROL_TIMEOUT).await,
                Err(BadRequest::NotUtf8)
            );
            assert_eq!(
                read_request(&[b'a'; 101][..], 100, CONTROL_TIMEOUT).await,
                Err(BadRequest::TooBig)
            );
            assert_eq!(read_request(&b""[..], 100, CONTROL_TIMEOUT).await, Ok(None));
            let (client, server) = tokio::io::duplex(64);
            let slow = read_request(server, 100, std::time::Duration::from_millis(50)).await;
            assert_eq!(slow, Err(BadRequest::TimedOut));
            drop(client);
        });
    }
}
