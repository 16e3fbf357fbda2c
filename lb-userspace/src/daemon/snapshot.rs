//! The status document as a snapshot: built once per collector tick or
//! change, shared (`Arc`) by every reader of it (`xlb status` on the
//! control socket, `/api/status`, `/metrics`), each of its encodings made
//! once. At 1,000 VIPs x 64 backends the document takes a good part of a
//! second to build and tens of MB to encode, so no request builds it while
//! an older one may still be served:
//!
//! - after a collector tick (`invalidate`: counters moved) the document
//!   still served to scrapes and `xlb status --vip` is the previous one,
//!   and the first request after the tick starts one rebuild on a thread
//!   of its own (never two at once);
//! - `xlb status` (`fresh`) is answered with a document built after it
//!   asked (one build, shared by whoever asks meanwhile): its counters are
//!   those of the moment it asked, as operators and tests reading counters
//!   right after traffic expect;
//! - after a change (`invalidate_change`: an apply, an edit, a health
//!   change) the old document is no longer true, and requests wait for the
//!   new one (one build, whoever asks).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use prometheus_client::metrics::counter::Counter;
use xlb_core::status::Status;

/// How long a request waits for a document being built before it says so.
pub const BUILD_WAIT: Duration = Duration::from_secs(30);

/// What builds a status document (under the controller's lock).
pub type Build = Arc<dyn Fn() -> Result<Status, String> + Send + Sync>;

/// One status document and its encodings, each made on first use and then
/// shared.
#[derive(Debug)]
pub struct Published {
    pub status: Arc<Status>,
    /// The invalidations it reflects (`Generations`).
    made: Generations,
    /// The /metrics text.
    pub text: OnceLock<Bytes>,
    /// `/api/status`: the document's JSON (and, framed, the control
    /// socket's answer: `answer`).
    pub json: OnceLock<Result<Bytes, String>>,
}

impl Published {
    /// The document as JSON (made once).
    pub fn json(&self) -> Result<Bytes, String> {
        self.json
            .get_or_init(|| {
                serde_json::to_vec(&*self.status)
                    .map(Bytes::from)
                    .map_err(|e| format!("encoding the status document: {e}"))
            })
            .clone()
    }

    /// The control socket's answer to `status`, in parts to write one
    /// after the other: `{"status":`, the document's JSON (the very bytes
    /// `/api/status` serves), `}` and a newline: what
    /// `api::Response::Status` encodes, without another copy of the
    /// document.
    pub fn answer(&self) -> Result<[Bytes; 3], String> {
        Ok([
            Bytes::from_static(ANSWER_HEAD),
            self.json()?,
            Bytes::from_static(b"}\n"),
        ])
    }
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
}

/// A build to run on the builder thread, and where its document goes.
type Job = (Build, std::sync::mpsc::Sender<Result<Status, String>>);

/// The snapshots: the current document, and who builds the next.
#[derive(Debug)]
pub struct Snapshots {
    state: Mutex<State>,
    built: Condvar,
    /// Documents built (`xlb_http_status_builds_total`).
    builds: Counter,
    /// The one thread every document is built on (None if it could not
    /// be started: then the asking thread builds). One long-lived thread,
    /// because reading the per-CPU counters needs the number of CPUs, which
    /// aya reads from sysfs once per thread: a thread made for one build
    /// opens that file again, and fails when the daemon is out of file
    /// descriptors (tests/daemon_io.rs), where this one read it long before.
    builder: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

impl Snapshots {
    pub fn new(builds: Counter) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let builder = std::thread::Builder::new()
            .name("xlb-status".into())
            .spawn(move || {
                for (build, reply) in queue {
                    // The asker may have given up (its timeout): nothing
                    // to do then.
                    let _ = reply.send(build());
                }
            });
        if let Err(e) = &builder {
            log::warn!("starting the status document's builder thread: {e}; each request builds");
        }
        Self {
            state: Mutex::default(),
            built: Condvar::new(),
            builds,
            builder: Mutex::new(builder.ok().map(|_| jobs)),
        }
    }

    /// Run `build` on the builder thread and wait for its document.
    fn run(&self, build: &Build) -> Result<Status, String> {
        let sender = self
            .builder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(sender) = sender else {
            return build();
        };
        let (reply, answer) = std::sync::mpsc::channel();
        if sender.send((build.clone(), reply)).is_err() {
            return build();
        }
        answer
            .recv()
            .map_err(|_| "the status document's builder thread ended".to_string())?
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
    /// document made before.
    pub fn invalidate_change(&self) {
        self.lock().now.changes += 1;
    }

    /// The document to answer with (blocking: call it off the reactor).
    /// Waits only when there is no document, or when a change made it
    /// untrue; after a tick it answers at once and starts a rebuild, unless
    /// `fresh` (`xlb status`: the counters of now), when it waits for a
    /// document begun after it asked (one build, shared).
    pub fn document(
        self: &Arc<Self>,
        build: &Build,
        fresh: bool,
    ) -> Result<Arc<Published>, String> {
        let started = Instant::now();
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
                if current.made.ticks != state.now.ticks && !state.building {
                    state.building = true;
                    drop(state);
                    let (me, build) = (self.clone(), build.clone());
                    let spawned = std::thread::Builder::new()
                        .name("xlb-status-rebuild".into())
                        .spawn(move || {
                            if let Err(e) = me.build(&build) {
                                log::warn!("building the status document: {e}");
                            }
                        });
                    if let Err(e) = spawned {
                        log::warn!("starting the status document's rebuild: {e}");
                        self.lock().building = false;
                    }
                }
                return Ok(current);
            }
            if !state.building {
                break;
            }
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
        state.building = true;
        drop(state);
        self.build(build)
    }

    /// Build a document now (`building` is set by the caller), make it the
    /// current one, and wake whoever waits.
    fn build(&self, build: &Build) -> Result<Arc<Published>, String> {
        let made = self.lock().now;
        self.builds.inc();
        let result = self.run(build).map(|status| {
            Arc::new(Published {
                status: Arc::new(status),
                made,
                text: OnceLock::new(),
                json: OnceLock::new(),
            })
        });
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

    /// A builder whose documents carry the build's number as `revision`,
    /// each build taking `delay`.
    fn counting(delay: Duration) -> (Build, Arc<AtomicU64>) {
        let n = Arc::new(AtomicU64::new(0));
        let counted = n.clone();
        let build: Build = Arc::new(move || {
            std::thread::sleep(delay);
            let mut s: Status = serde_json::from_value(serde_json::json!({
                "schema_version": 1, "interface": "eth0", "revision": 0,
                "applied_at_unix_seconds": 0, "observed_seconds": 0.0,
                "generated_at_unix_seconds": 0.0, "vips": [], "actions": [],
                "drops": [], "cpus": [], "bake": null, "maps": []
            }))
            .map_err(|e| e.to_string())?;
            s.revision = counted.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(s)
        });
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
        let (build, builds) = counting(Duration::from_millis(200));
        // None yet: the first request builds and waits.
        assert_eq!(
            snapshots.document(&build, false).unwrap().status.revision,
            1
        );
        // Shared until something happens.
        let a = snapshots.document(&build, false).unwrap();
        let b = snapshots.document(&build, false).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(builds.load(Ordering::SeqCst), 1);

        // A tick: answered at once with the old one, one rebuild started.
        snapshots.invalidate();
        let started = Instant::now();
        for _ in 0..5 {
            assert_eq!(
                snapshots.document(&build, false).unwrap().status.revision,
                1
            );
        }
        assert!(started.elapsed() < Duration::from_millis(100));
        wait_for("the rebuild", || {
            snapshots.document(&build, false).unwrap().status.revision == 2
        });
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        // Asked fresh (`xlb status`), a tick is waited for: one build.
        snapshots.invalidate();
        assert_eq!(snapshots.document(&build, true).unwrap().status.revision, 3);
        assert_eq!(
            snapshots.document(&build, false).unwrap().status.revision,
            3
        );
        assert_eq!(builds.load(Ordering::SeqCst), 3);
        // Asked fresh with no tick since: built anew all the same (the
        // counters of now, not of the last build).
        assert_eq!(snapshots.document(&build, true).unwrap().status.revision, 4);
        assert_eq!(builds.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_change_is_never_answered_with_the_old_document() {
        let snapshots = Arc::new(Snapshots::new(Counter::default()));
        let (build, builds) = counting(Duration::from_millis(50));
        snapshots.document(&build, false).unwrap();
        snapshots.invalidate_change();
        // Eight readers at once: all wait for the one new document.
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let (s, b) = (snapshots.clone(), build.clone());
                std::thread::spawn(move || s.document(&b, false).unwrap().status.revision)
            })
            .collect();
        for r in readers {
            assert_eq!(r.join().unwrap(), 2);
        }
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        // The socket's answer is the API's encoding, byte for byte.
        let doc = snapshots.document(&build, false).unwrap();
        let answer: Vec<u8> = doc.answer().unwrap().concat();
        let api = xlb_core::api::Response::Status(Box::new((*doc.status).clone()));
        let mut expected = serde_json::to_vec(&api).unwrap();
        expected.push(b'\n');
        assert_eq!(answer, expected);
        // The JSON is made once and shared.
        assert_eq!(doc.json().unwrap().as_ptr(), doc.json().unwrap().as_ptr());
    }

    #[test]
    fn a_failed_build_is_said_and_the_next_request_tries_again() {
        let snapshots = Arc::new(Snapshots::new(Counter::default()));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let failing = fail.clone();
        let (good, _) = counting(Duration::ZERO);
        let build: Build = Arc::new(move || {
            if failing.load(Ordering::SeqCst) {
                Err("map XLB_STATS: lookup failed".to_string())
            } else {
                good()
            }
        });
        let e = snapshots.document(&build, false).unwrap_err();
        assert!(e.contains("XLB_STATS"), "{e}");
        fail.store(false, Ordering::SeqCst);
        assert_eq!(
            snapshots.document(&build, false).unwrap().status.revision,
            1
        );
    }
}
