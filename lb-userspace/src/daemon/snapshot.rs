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
//!   of its own (never two at once);
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
use xlb_core::counters::CounterSnapshot;
use xlb_core::status::{Decisions, Status};

use crate::daemon::exposition::VipText;

/// How long a request waits for a document being built before it says so.
pub const BUILD_WAIT: Duration = Duration::from_secs(30);

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

/// One status document and its encodings, made when it is published.
/// Each VIP's encodings are kept apart (`VipParts`) and shared with the
/// document before when that VIP's part of the document did not change,
/// so a document costs the encoding of the VIPs that changed only, and
/// no encoding is ever copied into one buffer: the answers are their parts
/// one after the other.
#[derive(Debug)]
pub struct Published {
    pub status: Arc<Status>,
    /// The invalidations it reflects (`Generations`).
    made: Generations,
    /// Each VIP's encodings, in `status.vips`'s order.
    vips: Vec<Arc<VipParts>>,
    /// `/api/status`: the document's JSON (`serde_json::to_vec` of
    /// `status`, byte for byte), in parts: the fields before the VIPs,
    /// each VIP's (commas between), the fields after.
    json: Vec<Bytes>,
    /// The status families of /metrics, in parts (exposition.rs).
    text: Vec<Bytes>,
    /// The counters `status` shows, as read for it (None: not known).
    counters: Option<CounterSnapshot>,
}

/// One VIP's encodings.
#[derive(Debug)]
struct VipParts {
    json: Bytes,
    text: VipText,
    /// Whether the node announced when they were made (the VIP's
    /// announce series depend on it).
    announcing: bool,
}

/// How the VIPs' array opens in a document with none, and where it is
/// cut.
const NO_VIPS: &[u8] = b"\"vips\":[]";

impl Published {
    /// Publish `status`, encoding the VIPs whose part differs from
    /// `previous`'s and taking the others' encodings from it.
    pub fn new(mut status: Status, previous: Option<&Published>) -> Result<Self, String> {
        Self::made(&mut status, previous).map(|(vips, json, text)| Published {
            status: Arc::new(status),
            made: Generations::default(),
            vips,
            json,
            text,
            counters: None,
        })
    }

    #[expect(
        clippy::type_complexity,
        reason = "the three parts of a Published, made together"
    )]
    fn made(
        status: &mut Status,
        previous: Option<&Published>,
    ) -> Result<(Vec<Arc<VipParts>>, Vec<Bytes>, Vec<Bytes>), String> {
        let encoding = |e: serde_json::Error| format!("encoding the status document: {e}");
        // The fields around the VIPs: the document without them, cut
        // where their array is (the first `"vips":[]`: a string holding
        // it would have its quotes escaped).
        let vips = std::mem::take(&mut status.vips);
        let shell = serde_json::to_vec(&*status).map_err(encoding);
        status.vips = vips;
        let shell = Bytes::from(shell?);
        let cut = shell
            .windows(NO_VIPS.len())
            .position(|w| w == NO_VIPS)
            .ok_or("encoding the status document: no VIPs' array in it")?
            + NO_VIPS.len()
            - 1;
        let announcing = status.announce.is_some();
        let before: std::collections::HashMap<&str, usize> = previous
            .map(|p| {
                p.status
                    .vips
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.name.as_str(), i))
                    .collect()
            })
            .unwrap_or_default();
        let mut parts = Vec::with_capacity(status.vips.len());
        for vip in &status.vips {
            let kept = previous.and_then(|p| {
                let i = *before.get(vip.name.as_str())?;
                let part = &p.vips[i];
                (part.announcing == announcing && p.status.vips[i] == *vip).then(|| part.clone())
            });
            let part = match kept {
                Some(part) => part,
                None => Arc::new(VipParts {
                    json: Bytes::from(crate::daemon::exposition::exact(
                        serde_json::to_vec(vip).map_err(encoding)?,
                    )),
                    text: crate::daemon::exposition::vip_text(status, vip),
                    announcing,
                }),
            };
            parts.push(part);
        }
        let mut json = Vec::with_capacity(parts.len() * 2 + 2);
        json.push(shell.slice(..cut));
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                json.push(Bytes::from_static(b","));
            }
            json.push(part.json.clone());
        }
        json.push(shell.slice(cut..));
        let texts: Vec<&VipText> = parts.iter().map(|p| &p.text).collect();
        let text = crate::daemon::exposition::document_text(status, &texts);
        Ok((parts, json, text))
    }

    /// The document as JSON, in parts to write one after the other.
    pub fn json(&self) -> Vec<Bytes> {
        self.json.clone()
    }

    /// The status families of /metrics, in parts.
    pub fn text(&self) -> &[Bytes] {
        &self.text
    }

    /// The bytes its encodings hold: the JSON and the /metrics text
    /// (`xlb_http_status_bytes`).
    pub fn encoded_bytes(&self) -> (usize, usize) {
        let json = self.json.iter().map(Bytes::len).sum();
        let text = self.text.iter().map(Bytes::len).sum();
        (json, text)
    }

    /// The control socket's answer to `status`, in parts to write one
    /// after the other: `{"status":`, the document's JSON (the very bytes
    /// `/api/status` serves), `}` and a newline: what
    /// `api::Response::Status` encodes, without another copy of the
    /// document.
    pub fn answer(&self) -> Result<Vec<Bytes>, String> {
        let mut parts = Vec::with_capacity(self.json.len() + 2);
        parts.push(Bytes::from_static(ANSWER_HEAD));
        parts.extend(self.json.iter().cloned());
        parts.push(Bytes::from_static(b"}\n"));
        Ok(parts)
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
type Job = (Build, std::sync::mpsc::Sender<Result<Built, String>>);

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
    /// Each VIP's decision, kept between builds (`status::Decisions`).
    decisions: Mutex<Decisions>,
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
                    let _ = reply.send((build.document)());
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
            decisions: Mutex::default(),
        }
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
        let now = (build.counters)()?;
        let unchanged = now.is_some() && current.counters == now;
        Ok((unchanged && current.made.changes == self.lock().now.changes).then_some(current))
    }

    /// The document to answer with (blocking: call it off the reactor).
    /// Waits only when there is no document, or when a change made it
    /// untrue; after a tick it answers at once and starts a rebuild,
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
                if current.made.ticks != state.now.ticks && !state.building {
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
        let (made, previous) = {
            let state = self.lock();
            (state.now, state.current.clone())
        };
        self.builds.inc();
        let result = self.run(build).and_then(|(status, counters)| {
            let mut published = Published::new(status, previous.as_deref())?;
            published.made = made;
            published.counters = counters;
            Ok(Arc::new(published))
        });
        // The document before is let go of before the next is kept: never
        // two documents' parts held longer than this build.
        drop(previous);
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
        // Asked fresh (`xlb status`) with counters that cannot be read
        // back: built anew (the counters of now, not of the last build).
        assert_eq!(snapshots.document(&build, true).unwrap().status.revision, 3);
        assert_eq!(
            snapshots.document(&build, false).unwrap().status.revision,
            3
        );
        assert_eq!(builds.load(Ordering::SeqCst), 3);
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
        assert_eq!(snapshots.document(&build, true).unwrap().status.revision, 2);
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        // A tick moved no counter: still the same document.
        snapshots.invalidate();
        assert_eq!(snapshots.document(&build, true).unwrap().status.revision, 2);
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        // A change: never the old document (built by this request).
        snapshots.invalidate_change();
        assert_eq!(snapshots.document(&build, true).unwrap().status.revision, 3);
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
                std::thread::spawn(move || s.document(&b, false).unwrap().status.revision)
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
        assert_eq!(
            snapshots.document(&build, false).unwrap().status.revision,
            1
        );
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
        let (reports, drift, checked) = Default::default();
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

    fn joined(parts: &[Bytes]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn only_the_vips_that_changed_are_encoded_again() {
        let first = Published::new(three_vips(1, 5, 3), None).unwrap();
        // The JSON in parts is the document's, byte for byte, and the
        // socket's answer is the API's encoding of it.
        assert_eq!(
            joined(&first.json()),
            serde_json::to_vec(&*first.status).unwrap()
        );
        let api = xlb_core::api::Response::Status(Box::new((*first.status).clone()));
        let mut expected = serde_json::to_vec(&api).unwrap();
        expected.push(b'\n');
        assert_eq!(joined(&first.answer().unwrap()), expected);

        // VIP web1's counters moved: its parts are made again, the others'
        // are the first document's own.
        let second = Published::new(three_vips(1, 9, 3), Some(&first)).unwrap();
        assert!(Arc::ptr_eq(&first.vips[0], &second.vips[0]));
        assert!(!Arc::ptr_eq(&first.vips[1], &second.vips[1]));
        assert!(Arc::ptr_eq(&first.vips[2], &second.vips[2]));
        assert_eq!(
            joined(&second.json()),
            serde_json::to_vec(&*second.status).unwrap()
        );
        // The /metrics text in parts is the text of a document made whole.
        let whole = Published::new(three_vips(1, 9, 3), None).unwrap();
        assert_eq!(joined(second.text()), joined(whole.text()));
        let text = String::from_utf8(joined(second.text())).unwrap();
        assert!(
            text.contains("xlb_backend_packets_total{vip=\"web1\",backend=\"a\"} 9\n"),
            "{text}"
        );

        // VIP web2 removed: gone from both encodings.
        let third = Published::new(three_vips(1, 9, 2), Some(&second)).unwrap();
        assert_eq!(third.vips.len(), 2);
        assert!(Arc::ptr_eq(&second.vips[1], &third.vips[1]));
        let json = String::from_utf8(joined(&third.json())).unwrap();
        assert!(!json.contains("web2") && json.contains("web1"), "{json}");
        let text = String::from_utf8(joined(third.text())).unwrap();
        assert!(!text.contains("web2") && text.contains("web1"), "{text}");
        assert_eq!(
            json.as_bytes(),
            &serde_json::to_vec(&*third.status).unwrap()[..]
        );
    }
}
