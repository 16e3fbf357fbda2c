//! The status document as a snapshot: built once per collector tick or
//! change, shared (`Arc`) by every reader of it (`xlb status` on the
//! control socket, `/api/status`, `/metrics`), its encodings made when it
//! is published, per VIP, and kept while that VIP's part does not change
//! (`Published`). At 1,000 VIPs x 64 backends a document is tens of MB of
//! encodings, so no request builds one while an older one may still be
//! served:
//!
//! - after a collector tick (`invalidate`: counters moved) the document
//!   still served to scrapes and `xlb status --vip` is the previous one,
//!   and the first request after the tick starts one rebuild on a thread
//!   of its own (never two at once, nor two within `REBUILD_EVERY`);
//! - `xlb status` (`fresh`) is answered with the counters of the moment it
//!   asked: the current document if none of the counters it shows moved
//!   since it was built (read again to compare) and no change came since,
//!   else a document built after it asked (one build, shared by whoever
//!   asks meanwhile);
//! - after a change (`invalidate_change`: an apply, an edit, a health
//!   change) the old document is no longer true, and requests wait for the
//!   new one (built by the first request after the change, so changes in a
//!   row never wait for a build under the controller's lock).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use prometheus_client::metrics::counter::Counter;
use rayon::prelude::*;
use xlb_core::counters::CounterSnapshot;
use xlb_core::status::{Decisions, Status};

use crate::daemon::exposition::{Deflated, VipText};

/// How long a request waits for a document being built before it says so.
pub const BUILD_WAIT: Duration = Duration::from_secs(30);

/// The least time between the starts of two builds that collector ticks
/// ask for (`invalidate`). While a revision bakes the collector ticks four
/// times a second, and at 1,000 VIPs x 64 backends a build is ~0.1 s of
/// a core: rebuilt after every tick, under a steady scrape load the
/// builds ran back to back, a core's worth, and `xlb status` waited for
/// the CPU (docs/BENCHMARKS.md, issue 20). A scrape is then answered with
/// a document at most this much older than the last tick; `xlb status`
/// (`fresh`) and changes are not limited.
pub const REBUILD_EVERY: Duration = Duration::from_secs(1);

/// A status document, and the counters it shows (None: not known).
pub type Built = (Status, Option<CounterSnapshot>);

/// What builds a status document and reads the counters it shows (each
/// under the controller's lock).
#[derive(Clone)]
pub struct Build {
    pub document: Arc<dyn Fn() -> Result<Built, String> + Send + Sync>,
    /// The counters now; None when not known (a fresh request then builds).
    pub counters: Arc<dyn Fn() -> Result<Option<CounterSnapshot>, String> + Send + Sync>,
}

impl std::fmt::Debug for Build {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Build")
    }
}

/// One status document's encodings, made when it is published, and kept
/// compressed: each VIP's JSON as a zstd frame, each VIP's /metrics series
/// deflated (exposition.rs). The document itself is not kept (its JSON
/// around the VIPs is, for `xlb status --vip`), and each VIP's part is
/// compared with the document before's by a hash of its JSON. A
/// VIP whose JSON hashes the same as the document before's keeps its
/// parts (an `Arc`), so a document costs the encoding and compression of
/// the VIPs that changed only.
#[derive(Debug)]
pub struct Published {
    /// The document's revision.
    revision: u64,
    /// The invalidations it reflects (`Generations`).
    made: Generations,
    /// Each VIP's name and encodings, in the document's order.
    vips: Vec<Arc<VipParts>>,
    /// The JSON before the VIPs and after them (zstd frames, with their
    /// JSON's lengths), and the length of the whole document's JSON.
    json_head: (Bytes, u64),
    json_tail: (Bytes, u64),
    json_len: u64,
    /// The status families of /metrics, one deflated segment
    /// (exposition.rs).
    text: Deflated,
    /// The counters the document shows, as read for it (None: not known).
    counters: Option<CounterSnapshot>,
}

/// One VIP's encodings.
#[derive(Debug)]
struct VipParts {
    name: String,
    /// Its JSON (`serde_json::to_vec` of its `VipStatus`) as one zstd
    /// frame, the JSON's length, and its hash (xxh64).
    json: Bytes,
    json_len: u64,
    hash: u64,
    text: VipText,
    /// Whether the node announced when they were made (the VIP's
    /// announce series depend on it).
    announcing: bool,
}

/// How the VIPs' array opens in a document with none, and where it is
/// cut.
const NO_VIPS: &[u8] = b"\"vips\":[]";

/// The zstd level of the kept JSON: the fastest of the normal levels
/// (docs/BENCHMARKS.md, "Sixth round", has sizes and times).
const ZSTD_LEVEL: i32 = 1;

/// At least this many VIPs to a job of [`Published::new`] (each job makes
/// its encoders: a deflater allocates ~300 KiB).
const VIPS_PER_JOB: usize = 16;

/// What a document's encodings are made with: one compressor of each
/// kind, reused for the VIPs of one job.
struct Encoders {
    zstd: zstd::bulk::Compressor<'static>,
    deflater: crate::daemon::exposition::Deflater,
}

impl Encoders {
    fn new() -> Result<Self, String> {
        Ok(Self {
            zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .map_err(|e| format!("starting a zstd compressor: {e}"))?,
            deflater: Default::default(),
        })
    }

    fn frame(&mut self, json: &[u8]) -> Result<Bytes, String> {
        self.zstd
            .compress(json)
            .map(|f| Bytes::from(crate::daemon::exposition::exact(f)))
            .map_err(|e| format!("compressing the status document: {e}"))
    }
}

impl Published {
    /// Publish `status`, encoding the VIPs whose part differs from
    /// `previous`'s and taking the others' encodings from it.
    pub fn new(mut status: Status, previous: Option<&Published>) -> Result<Self, String> {
        let encoding = |e: serde_json::Error| format!("encoding the status document: {e}");
        // The fields around the VIPs: the document without them, cut
        // where their array is (the first `"vips":[]`: a string holding
        // it would have its quotes escaped).
        let vips = std::mem::take(&mut status.vips);
        let shell = serde_json::to_vec(&status).map_err(encoding);
        status.vips = vips;
        let shell = shell?;
        let cut = shell
            .windows(NO_VIPS.len())
            .position(|w| w == NO_VIPS)
            .ok_or("encoding the status document: no VIPs' array in it")?
            + NO_VIPS.len()
            - 1;
        let announcing = status.announce.is_some();
        let before: std::collections::HashMap<&str, &Arc<VipParts>> = previous
            .map(|p| p.vips.iter().map(|v| (v.name.as_str(), v)).collect())
            .unwrap_or_default();
        // Each VIP's encodings on every core, each worker with encoders of
        // its own: a first document (a start, or a change of every VIP)
        // at 1,000 VIPs x 64 backends encodes ~37 MB of JSON and ~40 MB of
        // text: 190-310 ms on one thread, 135-190 ms on two cores
        // (docs/BENCHMARKS.md, issue 20, "Thirteenth round").
        let parts: Vec<Arc<VipParts>> = status
            .vips
            .par_iter()
            .with_min_len(VIPS_PER_JOB)
            .map_init(
                || (Encoders::new(), Vec::new()),
                |(encoders, json), vip| {
                    json.clear();
                    serde_json::to_writer(&mut *json, vip).map_err(encoding)?;
                    let hash = xxhash_rust::xxh64::xxh64(json, 0);
                    let kept = before.get(vip.name.as_str()).filter(|p| {
                        p.hash == hash
                            && p.announcing == announcing
                            && p.json_len == json.len() as u64
                    });
                    if let Some(&part) = kept {
                        return Ok(part.clone());
                    }
                    let encoders = encoders.as_mut().map_err(|e| e.clone())?;
                    Ok(Arc::new(VipParts {
                        name: vip.name.clone(),
                        json: encoders.frame(json)?,
                        json_len: json.len() as u64,
                        hash,
                        text: crate::daemon::exposition::vip_text(
                            &status,
                            vip,
                            &mut encoders.deflater,
                        ),
                        announcing,
                    }))
                },
            )
            .collect::<Result<_, String>>()?;
        let mut encoders = Encoders::new()?;
        drop(before);
        let texts: Vec<&VipText> = parts.iter().map(|p| &p.text).collect();
        let text =
            crate::daemon::exposition::document_text(&status, &texts, &mut encoders.deflater);
        drop(texts);
        let commas = parts.len().saturating_sub(1) as u64;
        let json_len = shell.len() as u64 + commas + parts.iter().map(|p| p.json_len).sum::<u64>();
        let (json_head, json_tail) = (
            (encoders.frame(&shell[..cut])?, cut as u64),
            (encoders.frame(&shell[cut..])?, (shell.len() - cut) as u64),
        );
        Ok(Published {
            revision: status.revision,
            made: Generations::default(),
            vips: parts,
            json_head,
            json_tail,
            json_len,
            text,
            counters: None,
        })
    }

    /// The document as JSON, zstd frames one after the other (a zstd
    /// stream of several frames, which any zstd decoder reads as one).
    pub fn json_zstd(&self) -> Vec<Bytes> {
        self.frames().map(|(frame, _)| frame).collect()
    }

    /// The document's JSON frames, each with the length of its JSON.
    fn frames(&self) -> impl Iterator<Item = (Bytes, u64)> + '_ {
        let comma = comma_frame();
        std::iter::once(self.json_head.clone())
            .chain(self.vips.iter().enumerate().flat_map(move |(i, part)| {
                let comma = (i > 0).then(|| (comma.clone(), 1));
                comma
                    .into_iter()
                    .chain(std::iter::once((part.json.clone(), part.json_len)))
            }))
            .chain(std::iter::once(self.json_tail.clone()))
    }

    /// The length of the document's JSON.
    pub fn json_len(&self) -> u64 {
        self.json_len
    }

    /// The document's JSON, decompressed a frame at a time (a VIP's JSON
    /// at most at once), for a client that did not ask for zstd.
    pub fn json_plain(&self) -> impl Iterator<Item = Bytes> + Send + 'static {
        let mut decompressor = zstd::bulk::Decompressor::new().ok();
        let frames: Vec<(Bytes, u64)> = self.frames().collect();
        frames.into_iter().filter_map(move |(frame, len)| {
            let d = decompressor.as_mut()?;
            match d.decompress(&frame, len as usize) {
                Ok(plain) => Some(Bytes::from(plain)),
                Err(e) => {
                    // Made here: an error is a bug; the client sees the
                    // body end short of its length.
                    log::error!("decompressing a kept status part: {e}");
                    None
                }
            }
        })
    }

    /// The document's revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The status families of /metrics, one deflated segment.
    pub fn text(&self) -> &Deflated {
        &self.text
    }

    /// The bytes its encodings hold: the JSON and the /metrics text, as
    /// kept (compressed: the VIPs' pieces and the document's joined text),
    /// and the plain JSON's and text's lengths.
    pub fn encoded_bytes(&self) -> [u64; 4] {
        let json = self.frames().map(|(b, _)| b.len() as u64).sum();
        let text = self.vips.iter().map(|p| p.text.len() as u64).sum::<u64>()
            + self.text.bytes.len() as u64;
        [json, text, self.json_len, self.text.len]
    }

    /// The control socket's answer to `status_zstd`: a line saying how
    /// many bytes follow and what they decompress to, then the document's
    /// JSON as zstd frames (`json_zstd`).
    pub fn answer_zstd(&self) -> Result<Vec<Bytes>, String> {
        let frames = self.json_zstd();
        let bytes = frames.iter().map(|b| b.len() as u64).sum();
        let head = xlb_core::api::Response::StatusZstd {
            bytes,
            plain: self.json_len,
        };
        let mut line =
            serde_json::to_vec(&head).map_err(|e| format!("encoding the answer: {e}"))?;
        line.push(b'\n');
        let mut parts = Vec::with_capacity(frames.len() + 1);
        parts.push(Bytes::from(line));
        parts.extend(frames);
        Ok(parts)
    }

    /// The control socket's answer to `status`, in parts to write one
    /// after the other: `{"status":`, the document's JSON (the very bytes
    /// `/api/status` serves), `}` and a newline: what
    /// `api::Response::Status` encodes. Decompressed here (`xlb status`
    /// asks `status_zstd`; this is for other clients of the socket).
    pub fn answer(&self) -> Result<Vec<Bytes>, String> {
        let mut parts = Vec::with_capacity(self.vips.len() * 2 + 4);
        parts.push(Bytes::from_static(ANSWER_HEAD));
        parts.extend(self.json_plain());
        parts.push(Bytes::from_static(b"}\n"));
        Ok(parts)
    }

    /// The control socket's answer to `status_vip`: the document with VIP
    /// `name` only, as `answer` writes it (its fields around the VIPs and
    /// the VIP's kept JSON, decompressed, never decoded: a float read back
    /// by serde_json may not print the same); the inner error names the
    /// VIPs it has.
    pub fn answer_vip(&self, name: &str) -> Result<Result<Vec<Bytes>, String>, String> {
        let Some(part) = self.vips.iter().find(|p| p.name == name) else {
            return Ok(Err(xlb_core::status::unknown_vip(
                name,
                self.vips.iter().map(|p| p.name.as_str()),
            )));
        };
        let mut d = zstd::bulk::Decompressor::new()
            .map_err(|e| format!("starting a zstd decompressor: {e}"))?;
        let mut parts = vec![Bytes::from_static(ANSWER_HEAD)];
        for (frame, len) in [
            &self.json_head,
            &(part.json.clone(), part.json_len),
            &self.json_tail,
        ] {
            let plain = d
                .decompress(frame, *len as usize)
                .map_err(|e| format!("decompressing VIP {name}'s status: {e}"))?;
            parts.push(Bytes::from(plain));
        }
        parts.push(Bytes::from_static(b"}\n"));
        Ok(Ok(parts))
    }
}

/// A comma as a zstd frame (between the VIPs' frames), made once.
fn comma_frame() -> Bytes {
    static COMMA: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    COMMA
        .get_or_init(|| {
            Bytes::from(zstd::bulk::compress(b",", ZSTD_LEVEL).expect("compressing one byte"))
        })
        .clone()
}

/// How `api::Response::Status` opens (serde: externally tagged, snake
/// case); tested against it.
const ANSWER_HEAD: &[u8] = b"{\"status\":";

/// Counts of invalidations: a document made at `changes` = the current
/// count may be served; one made at an older `ticks` is rebuilt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Generations {
    ticks: u64,
    changes: u64,
}

#[derive(Debug, Default)]
struct State {
    current: Option<Arc<Published>>,
    now: Generations,
    building: bool,
    /// When the last build began.
    began: Option<Instant>,
}

/// A build to run on the builder thread, and where its document goes.
type Job = (Build, std::sync::mpsc::Sender<Result<Built, String>>);

/// The snapshots: the current document, and who builds the next.
#[derive(Debug)]
pub struct Snapshots {
    state: Mutex<State>,
    built: Condvar,
    /// Documents built (`xlb_http_status_builds_total`).
    builds: Counter,
    /// How long the last build took, its publication included.
    last_build: Mutex<Duration>,
    /// The one thread every document is built on (None if it could not
    /// be started: then the asking thread builds). One long-lived thread,
    /// because reading the per-CPU counters needs the number of CPUs, which
    /// aya reads from sysfs once per thread: a thread made for one build
    /// opens that file again, and fails when the daemon is out of file
    /// descriptors (tests/daemon_io.rs), where this one read it long before.
    builder: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    /// Each VIP's decision, kept between builds (`status::Decisions`).
    decisions: Mutex<Decisions>,
    /// What sees each document built before it is published (the status
    /// page's history: the document itself is not kept).
    observer: Mutex<Observer>,
    /// [`REBUILD_EVERY`] (shorter in tests).
    rebuild_every: Duration,
    /// The counters of the applied ids, read without the controller's
    /// lock (set by the controller: `set_counters`); None: through
    /// `Build::counters`.
    counters: std::sync::RwLock<Option<Counted>>,
}

/// The counter arrays and the ids the applied state counts: what
/// `still_true` compares a document's counters with. Read without the
/// controller's lock, which a collector tick holds ~15 ms four times a
/// second while a revision bakes (far longer when the cores are busy).
#[derive(Clone)]
pub struct Counted {
    pub counting: xlb_dataplane::Counting,
    pub vip_ids: Arc<[u32]>,
    pub backend_ids: Arc<[u32]>,
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted")
            .field("vips", &self.vip_ids.len())
            .field("backends", &self.backend_ids.len())
            .finish_non_exhaustive()
    }
}

/// What is given each document built.
type Observe = Box<dyn FnMut(&Status) + Send>;

/// A function given each document built.
#[derive(Default)]
struct Observer(Option<Observe>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl Snapshots {
    pub fn new(builds: Counter) -> Self {
        Self::rebuilding_every(builds, REBUILD_EVERY)
    }

    /// What `still_true` reads the counters of now from, from now on.
    pub fn set_counters(&self, counted: Counted) {
        *self.counters.write().unwrap_or_else(|p| p.into_inner()) = Some(counted);
    }

    /// [`Snapshots::new`], with ticks' rebuilds at most `every`.
    fn rebuilding_every(builds: Counter, every: Duration) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let builder = std::thread::Builder::new()
            .name("xlb-status".into())
            .spawn(move || {
                for (build, reply) in queue {
                    // The asker may have given up (its timeout): nothing
                    // to do then.
                    let _ = reply.send((build.document)());
                    crate::memory::give_back_here();
                }
            });
        if let Err(e) = &builder {
            log::warn!("starting the status document's builder thread: {e}; each request builds");
        }
        Self {
            state: Mutex::default(),
            built: Condvar::new(),
            builds,
            last_build: Mutex::default(),
            builder: Mutex::new(builder.ok().map(|_| jobs)),
            counters: std::sync::RwLock::new(None),
            decisions: Mutex::default(),
            observer: Mutex::default(),
            rebuild_every: every,
        }
    }

    /// How long the last document's build took (zero before the first).
    pub fn last_build(&self) -> Duration {
        *self.last_build.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give `observe` every document built, before it is published.
    pub fn observe(&self, observe: impl FnMut(&Status) + Send + 'static) {
        self.observer.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(Box::new(observe));
    }

    /// Run `build` on the builder thread and wait for its document.
    fn run(&self, build: &Build) -> Result<Built, String> {
        let sender = self
            .builder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(sender) = sender else {
            return (build.document)();
        };
        let (reply, answer) = std::sync::mpsc::channel();
        if sender.send((build.clone(), reply)).is_err() {
            return (build.document)();
        }
        answer
            .recv()
            .map_err(|_| "the status document's builder thread ended".to_string())?
    }

    /// The VIPs' decisions kept for the builds (locked by the build).
    pub fn decisions(&self) -> MutexGuard<'_, Decisions> {
        self.decisions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counters moved (a collector tick): the document is rebuilt at the
    /// next request, which is answered with the current one meanwhile.
    pub fn invalidate(&self) {
        self.lock().now.ticks += 1;
    }

    /// What the daemon serves changed: no request is answered with a
    /// document made before; the next request builds it. Not built at
    /// once: a build holds the controller's lock for up to a few hundred
    /// ms at 1,000 VIPs x 64 backends, and an apply that follows an apply
    /// (a rollout, a script, a bench) waited for it.
    pub fn invalidate_change(&self) {
        self.lock().now.changes += 1;
    }

    /// Start a build on a thread of its own (`state`: not building).
    fn rebuild(self: &Arc<Self>, mut state: MutexGuard<'_, State>, build: Build) {
        state.building = true;
        drop(state);
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("xlb-status-rebuild".into())
            .spawn(move || {
                if let Err(e) = me.build(&build) {
                    log::warn!("building the status document: {e}");
                }
                crate::memory::give_back_here();
            });
        if let Err(e) = spawned {
            log::warn!("starting the status document's rebuild: {e}");
            self.lock().building = false;
            self.built.notify_all();
        }
    }

    /// Wait while a document is being built (at most until `started` +
    /// `BUILD_WAIT`).
    fn settled<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        started: Instant,
    ) -> Result<MutexGuard<'a, State>, String> {
        while state.building {
            let left = BUILD_WAIT.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "the status document was not built within {BUILD_WAIT:?}"
                ));
            }
            state = self
                .built
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(state)
    }

    /// The current document when its counters are those of now: made
    /// after the last change, and no counter it shows has moved since
    /// (read now). None otherwise.
    fn still_true(
        &self,
        build: &Build,
        started: Instant,
    ) -> Result<Option<Arc<Published>>, String> {
        let mut state = self.lock();
        if state
            .current
            .as_ref()
            .is_some_and(|c| c.made.changes != state.now.changes)
        {
            // A change is being built: wait for its document.
            state = self.settled(state, started)?;
        }
        let Some(current) = state.current.clone() else {
            return Ok(None);
        };
        if current.made.changes != state.now.changes || current.counters.is_none() {
            return Ok(None);
        }
        drop(state);
        let counted = self
            .counters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let now = match counted {
            // A change since reads as untrue below (`changes`), whatever
            // ids these are.
            Some(c) => c
                .counting
                .snapshot(c.vip_ids.iter().copied(), c.backend_ids.iter().copied())
                .map(Some)
                .map_err(|e| e.to_string())?,
            None => (build.counters)()?,
        };
        let unchanged = now.is_some() && current.counters == now;
        Ok((unchanged && current.made.changes == self.lock().now.changes).then_some(current))
    }

    /// The document to answer with (blocking: call it off the reactor).
    /// Waits only when there is no document, or when a change made it
    /// untrue; after a tick it answers at once and starts a rebuild (unless
    /// one began within [`REBUILD_EVERY`]),
    /// unless `fresh` (`xlb status`: the counters of now), when it answers
    /// with the current document if its counters are those of now
    /// (`still_true`: no change since it was built and no counter moved),
    /// else with a document begun after it asked (one build, shared).
    pub fn document(
        self: &Arc<Self>,
        build: &Build,
        fresh: bool,
    ) -> Result<Arc<Published>, String> {
        let started = Instant::now();
        if fresh && let Some(current) = self.still_true(build, started)? {
            return Ok(current);
        }
        let mut state = self.lock();
        if fresh {
            // As a tick: only a document begun after this will do.
            state.now.ticks += 1;
        }
        loop {
            if let Some(current) = state.current.clone()
                && current.made.changes == state.now.changes
                && (!fresh || current.made.ticks == state.now.ticks)
            {
                if current.made.ticks != state.now.ticks
                    && !state.building
                    && state
                        .began
                        .is_none_or(|t| t.elapsed() >= self.rebuild_every)
                {
                    self.rebuild(state, build.clone());
                }
                return Ok(current);
            }
            if !state.building {
                break;
            }
            state = self.settled(state, started)?;
        }
        state.building = true;
        drop(state);
        self.build(build)
    }

    /// Build a document now (`building` is set by the caller), make it the
    /// current one, and wake whoever waits.
    fn build(&self, build: &Build) -> Result<Arc<Published>, String> {
        let began = Instant::now();
        let (made, previous) = {
            let mut state = self.lock();
            state.began = Some(began);
            (state.now, state.current.clone())
        };
        self.builds.inc();
        let result = self.run(build).and_then(|(status, counters)| {
            if let Some(observe) = &mut self.observer.lock().unwrap_or_else(|p| p.into_inner()).0 {
                observe(&status);
            }
            let started = Instant::now();
            let mut published = Published::new(status, previous.as_deref())?;
            let [json, text, json_plain, text_plain] = published.encoded_bytes();
            log::debug!(
                "status document published in {:?}: JSON {json} bytes kept ({json_plain} plain), \
                 /metrics text {text} bytes kept ({text_plain} plain)",
                started.elapsed()
            );
            published.made = made;
            published.counters = counters;
            Ok(Arc::new(published))
        });
        // The document before is let go of before the next is kept: never
        // two documents' parts held longer than this build.
        drop(previous);
        // What the build freed here (the status itself: ~20 MB at 1,000
        // VIPs x 64 backends, and the parts the document before no longer
        // shares) is given back before anyone is answered with the new
        // document, not after: the daemon's size right after a status is
        // then its size.
        crate::memory::give_back_here();
        *self.last_build.lock().unwrap_or_else(|p| p.into_inner()) = began.elapsed();
        let mut state = self.lock();
        state.building = false;
        if let Ok(published) = &result {
            state.current = Some(published.clone());
        }
        self.built.notify_all();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn empty_status(revision: u64) -> Status {
        let mut s: Status = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "interface": "eth0", "revision": 0,
            "applied_at_unix_seconds": 0, "observed_seconds": 0.0,
            "generated_at_unix_seconds": 0.0, "vips": [], "actions": [],
            "drops": [], "cpus": [], "bake": null, "maps": []
        }))
        .expect("a document");
        s.revision = revision;
        s
    }

    /// A builder whose documents carry the build's number as `revision`,
    /// each build taking `delay`; its counters are `packets` (VIP 0's
    /// packets), or unknown when `packets` is None.
    fn counting(delay: Duration, packets: Option<Arc<AtomicU64>>) -> (Build, Arc<AtomicU64>) {
        let n = Arc::new(AtomicU64::new(0));
        let counted = n.clone();
        let read = move || {
            packets.as_ref().map(|p| {
                let mut c = CounterSnapshot::default();
                c.vips.insert(
                    0,
                    lb_common::Counters {
                        packets: p.load(Ordering::SeqCst),
                        ..Default::default()
                    },
                );
                c
            })
        };
        let reader = read.clone();
        let build = Build {
            document: Arc::new(move || {
                std::thread::sleep(delay);
                let revision = counted.fetch_add(1, Ordering::SeqCst) + 1;
                Ok((empty_status(revision), read()))
            }),
            counters: Arc::new(move || Ok(reader())),
        };
        (build, n)
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(5), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_tick_serves_the_old_document_while_one_rebuild_runs() {
        let snapshots = Arc::new(Snapshots::new(Counter::default()));
        let (build, builds) = counting(Duration::from_millis(200), None);
        // None yet: the first request builds and waits.
        assert_eq!(snapshots.document(&build, false).unwrap().revision(), 1);
        // Shared until something happens.
        let a = snapshots.document(&build, false).unwrap();
        let b = snapshots.document(&build, false).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(builds.load(Ordering::SeqCst), 1);

        // A tick: answered at once with the old one, one rebuild started.
        snapshots.invalidate();
        let started = Instant::now();
        for _ in 0..5 {
            assert_eq!(snapshots.document(&build, false).unwrap().revision(), 1);
        }
        assert!(started.elapsed() < Duration::from_millis(100));
        wait_for("the rebuild", || {
            snapshots.document(&build, false).unwrap().revision() == 2
        });
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        // Asked fresh (`xlb status`) with counters that cannot be read
        // back: built anew (the counters of now, not of the last build).
        assert_eq!(snapshots.document(&build, true).unwrap().revision(), 3);
        assert_eq!(snapshots.document(&build, false).unwrap().revision(), 3);
        assert_eq!(builds.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn ticks_rebuild_at_most_once_an_interval() {
        let every = Duration::from_millis(300);
        let snapshots = Arc::new(Snapshots::rebuilding_every(Counter::default(), every));
        let (build, builds) = counting(Duration::ZERO, None);
        snapshots.document(&build, false).unwrap();
        // Ticks four times as often as the interval, a scrape after each,
        // for three intervals: one rebuild an interval at most.
        let started = Instant::now();
        while started.elapsed() < every * 3 {
            snapshots.invalidate();
            snapshots.document(&build, false).unwrap();
            std::thread::sleep(every / 4);
        }
        wait_for("the last rebuild", || !snapshots.lock().building);
        let n = builds.load(Ordering::SeqCst);
        assert!((2..=5).contains(&n), "{n} builds");
        // A fresh request is not limited: built now.
        let before = builds.load(Ordering::SeqCst);
        snapshots.document(&build, true).unwrap();
        assert_eq!(builds.load(Ordering::SeqCst), before + 1);
    }

    #[test]
    fn fresh_is_the_current_document_until_a_counter_moves() {
        let snapshots = Arc::new(Snapshots::new(Counter::default()));
        let packets = Arc::new(AtomicU64::new(10));
        let (build, builds) = counting(Duration::from_millis(50), Some(packets.clone()));
        let first = snapshots.document(&build, true).unwrap();
        // Nothing moved: the same document, no build.
        let again = snapshots.document(&build, true).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        // Traffic: a counter moved, so a document of now.
        packets.store(11, Ordering::SeqCst);
        assert_eq!(snapshots.document(&build, true).unwrap().revision(), 2);
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        // A tick moved no counter: still the same document.
        snapshots.invalidate();
        assert_eq!(snapshots.document(&build, true).unwrap().revision(), 2);
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        // A change: never the old document (built by this request).
        snapshots.invalidate_change();
        assert_eq!(snapshots.document(&build, true).unwrap().revision(), 3);
        assert_eq!(builds.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_change_is_never_answered_with_the_old_document() {
        let snapshots = Arc::new(Snapshots::new(Counter::default()));
        let (build, builds) = counting(Duration::from_millis(50), None);
        snapshots.document(&build, false).unwrap();
        snapshots.invalidate_change();
        // Eight readers at once: all wait for the one new document.
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let (s, b) = (snapshots.clone(), build.clone());
                std::thread::spawn(move || s.document(&b, false).unwrap().revision())
            })
            .collect();
        for r in readers {
            assert_eq!(r.join().unwrap(), 2);
        }
        assert_eq!(builds.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_build_is_said_and_the_next_request_tries_again() {
        let snapshots = Arc::new(Snapshots::new(Counter::default()));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let failing = fail.clone();
        let (good, _) = counting(Duration::ZERO, None);
        let document = good.document.clone();
        let build = Build {
            document: Arc::new(move || {
                if failing.load(Ordering::SeqCst) {
                    Err("map XLB_STATS: lookup failed".to_string())
                } else {
                    document()
                }
            }),
            counters: good.counters.clone(),
        };
        let e = snapshots.document(&build, false).unwrap_err();
        assert!(e.contains("XLB_STATS"), "{e}");
        fail.store(false, Ordering::SeqCst);
        assert_eq!(snapshots.document(&build, false).unwrap().revision(), 1);
    }

    /// A document of three VIPs (web0..web2, two backends each), VIP
    /// `busy`'s first backend at `packets`.
    fn three_vips(busy: usize, packets: u64, vips: usize) -> Status {
        let mut text = String::from("interface = \"eth0\"\n");
        for v in 0..vips {
            text.push_str(&format!(
                "[[vip]]\nname = \"web{v}\"\naddress = \"198.18.100.{}\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 251\n\
                 [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\n\
                 [[vip.backend]]\nname = \"b\"\naddress = \"198.18.0.12\"\nmac = \"02:00:00:00:00:12\"\n",
                v + 1
            ));
        }
        let config = xlb_core::config::parse(&text, "t.toml").unwrap();
        let desired = xlb_core::state::desired(&config, &Default::default()).unwrap();
        let mut now = CounterSnapshot::default();
        for v in &desired.vips {
            now.vips.insert(v.id, Default::default());
            for &id in &v.backend_ids {
                now.backends.insert(id, Default::default());
            }
        }
        if let Some(v) = desired.vips.get(busy) {
            let c = lb_common::Counters {
                packets,
                bytes: packets * 100,
                new_flows: 1,
            };
            now.backends.insert(v.backend_ids[0], c);
            now.vips.insert(v.id, c);
        }
        let reports = xlb_core::detect::Detector::new();
        let (drift, checked) = Default::default();
        let ctx = xlb_core::status::StatusContext {
            interface: "eth0",
            revision: 1,
            applied_at_unix_seconds: 0,
            observed_seconds: 1.0,
            generated_at_unix_seconds: 2.0,
            reports: &reports,
            drift: &drift,
            drift_checked_at: &checked,
            bake: None,
            conn_scan: None,
        };
        xlb_core::status::build(&ctx, &desired, &now, &Default::default())
    }

    fn joined(parts: impl IntoIterator<Item = Bytes>) -> Vec<u8> {
        parts.into_iter().flat_map(|b| b.to_vec()).collect()
    }

    /// The document's JSON as kept (zstd frames) and as sent plain.
    fn json_of(p: &Published) -> Vec<u8> {
        let plain = joined(p.json_plain());
        let frames = joined(p.json_zstd());
        assert_eq!(zstd::stream::decode_all(&frames[..]).unwrap(), plain);
        assert_eq!(plain.len() as u64, p.json_len());
        plain
    }

    #[test]
    fn only_the_vips_that_changed_are_encoded_again() {
        let first = Published::new(three_vips(1, 5, 3), None).unwrap();
        // The JSON in parts is the document's, byte for byte, and the
        // socket's answer is the API's encoding of it.
        let document = three_vips(1, 5, 3);
        assert_eq!(json_of(&first), serde_json::to_vec(&document).unwrap());
        let api = xlb_core::api::Response::Status(Box::new(document.clone()));
        let mut expected = serde_json::to_vec(&api).unwrap();
        expected.push(b'\n');
        assert_eq!(joined(first.answer().unwrap()), expected);
        // The compressed answer: a line saying what follows, then frames
        // that decompress to the document.
        let answer = joined(first.answer_zstd().unwrap());
        let newline = answer.iter().position(|&b| b == b'\n').unwrap();
        let head: xlb_core::api::Response = serde_json::from_slice(&answer[..newline]).unwrap();
        let xlb_core::api::Response::StatusZstd { bytes, plain } = head else {
            panic!("{head:?}");
        };
        let frames = &answer[newline + 1..];
        assert_eq!(frames.len() as u64, bytes);
        let json = zstd::bulk::decompress(frames, plain as usize).unwrap();
        assert_eq!(json, serde_json::to_vec(&document).unwrap());

        // VIP web1's counters moved: its parts are made again, the others'
        // are the first document's own.
        let second = Published::new(three_vips(1, 9, 3), Some(&first)).unwrap();
        assert!(Arc::ptr_eq(&first.vips[0], &second.vips[0]));
        assert!(!Arc::ptr_eq(&first.vips[1], &second.vips[1]));
        assert!(Arc::ptr_eq(&first.vips[2], &second.vips[2]));
        assert_eq!(
            json_of(&second),
            serde_json::to_vec(&three_vips(1, 9, 3)).unwrap()
        );
        // The /metrics text in parts is the text of a document made whole.
        let whole = Published::new(three_vips(1, 9, 3), None).unwrap();
        assert_eq!(second.text().inflate(), whole.text().inflate());
        assert_eq!(second.text().crc, whole.text().crc);
        let text = String::from_utf8(second.text().inflate()).unwrap();
        assert!(
            text.contains("xlb_backend_packets_total{vip=\"web1\",backend=\"a\"} 9\n"),
            "{text}"
        );
        assert_eq!(text.len() as u64, second.text().len);

        // `status --vip`: from the kept JSON, the API's encoding of the
        // whole document's VIP, byte for byte.
        let one = joined(second.answer_vip("web1").unwrap().unwrap());
        let api =
            xlb_core::api::Response::Status(Box::new(three_vips(1, 9, 3).one_vip("web1").unwrap()));
        let mut expected = serde_json::to_vec(&api).unwrap();
        expected.push(b'\n');
        assert_eq!(one, expected);
        let e = second.answer_vip("web9").unwrap().unwrap_err();
        assert_eq!(e, three_vips(1, 9, 3).one_vip("web9").unwrap_err());

        // VIP web2 removed: gone from both encodings.
        let third = Published::new(three_vips(1, 9, 2), Some(&second)).unwrap();
        assert_eq!(third.vips.len(), 2);
        assert!(Arc::ptr_eq(&second.vips[1], &third.vips[1]));
        let json = String::from_utf8(json_of(&third)).unwrap();
        assert!(!json.contains("web2") && json.contains("web1"), "{json}");
        let text = String::from_utf8(third.text().inflate()).unwrap();
        assert!(!text.contains("web2") && text.contains("web1"), "{text}");
        assert_eq!(
            json.as_bytes(),
            &serde_json::to_vec(&three_vips(1, 9, 2)).unwrap()[..]
        );
    }

    /// VIPs encoded in several jobs (on every core) come in their order,
    /// and a change of one keeps every other VIP's parts.
    #[test]
    fn vips_encoded_in_several_jobs_keep_their_order() {
        let n = VIPS_PER_JOB * 6 + 5;
        let first = Published::new(three_vips(1, 5, n), None).unwrap();
        assert_eq!(
            json_of(&first),
            serde_json::to_vec(&three_vips(1, 5, n)).unwrap()
        );
        let busy = VIPS_PER_JOB * 3 + 2;
        let second = Published::new(three_vips(busy, 9, n), Some(&first)).unwrap();
        assert_eq!(
            json_of(&second),
            serde_json::to_vec(&three_vips(busy, 9, n)).unwrap()
        );
        for (i, (a, b)) in first.vips.iter().zip(&second.vips).enumerate() {
            assert_eq!(b.name, format!("web{i}"));
            assert_eq!(Arc::ptr_eq(a, b), i != 1 && i != busy, "VIP {i}");
        }
        let whole = Published::new(three_vips(busy, 9, n), None).unwrap();
        assert_eq!(second.text().inflate(), whole.text().inflate());
    }

    /// Each document built is seen by the observer before it is published.
    #[test]
    fn the_observer_sees_every_document_built() {
        let snapshots = Arc::new(Snapshots::new(Counter::default()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        snapshots.observe(move |s| into.lock().unwrap().push(s.revision));
        let (build, _) = counting(Duration::ZERO, None);
        snapshots.document(&build, false).unwrap();
        snapshots.invalidate_change();
        snapshots.document(&build, false).unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
    }
}
