//! The status page's history (`/api/history`): what happened over the
//! last hours, for an operator who looks at a time line, not at counters.
//!
//! - **Samples**: every `SAMPLE_EVERY` the HTTP side takes the published
//!   status document (the one `/api/status` serves, built once per tick)
//!   and keeps each backend's observed share (the detector's new-flow
//!   window, else packets since the apply) in a ring of at most
//!   `MAX_SAMPLES` samples (an hour) of at most `MAX_SERIES` backends: the
//!   ring's size is bounded whatever the daemon serves.
//! - **Events**, found by comparing each sample with the one before: a VIP's
//!   kernel table drifting or matching again, a backend going down or up,
//!   the detector calling a VIP imbalanced or ok again (`MAX_EVENTS`).
//! - **Revisions** of the last `REVISION_SECONDS`, from the revision store
//!   when the page asks: who, what (a forced apply is marked: its plan was
//!   refused), the plan's predicted shares, the bake's outcome, the
//!   automatic rollbacks.
//!
//! Pure: `Ring::observe` takes a status document, `document` builds the
//! answer; http.rs does the sampling and the serving.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use xlb_core::revision::{Kind, Outcome, Revision, Summary};
use xlb_core::status::{Status, VipStatus};

/// How often a sample is taken.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: an hour at `SAMPLE_EVERY`.
pub const MAX_SAMPLES: usize = 1800;
/// Backends (VIP, backend pairs) charted, at most; more are counted in
/// `series_dropped`. With `MAX_SAMPLES` the ring holds at most 1800 x 1024
/// shares (7 MiB as f32).
pub const MAX_SERIES: usize = 1024;
/// Events kept.
pub const MAX_EVENTS: usize = 512;
/// Revisions shown: those of the last six hours, at most `MAX_REVISIONS`.
pub const REVISION_SECONDS: f64 = 6.0 * 3600.0;
pub const MAX_REVISIONS: usize = 100;
/// The document's version (the page says when it is newer than it knows).
pub const SCHEMA_VERSION: u32 = 1;

/// One charted backend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    pub vip: String,
    pub backend: String,
}

/// The observed shares at one time, in `series` order (None: not observed,
/// or the backend was not there).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub at_unix_seconds: f64,
    pub shares: Vec<Option<f32>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The kernel's table no longer matches the applied config.
    Drift,
    /// It matches again.
    DriftCleared,
    HealthDown,
    HealthUp,
    /// The detector called the VIP imbalanced.
    Imbalanced,
    /// Judged within thresholds again.
    Balanced,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub at_unix_seconds: f64,
    pub kind: EventKind,
    pub vip: String,
    pub backend: Option<String>,
    pub detail: String,
}

/// A VIP as the last sample saw it, to find what changed.
#[derive(Default)]
struct Seen {
    drifted: bool,
    imbalanced: bool,
    /// backend -> "up" | "down"
    health: HashMap<String, &'static str>,
}

/// The samples and events, bounded.
#[derive(Default)]
pub struct Ring {
    series: Vec<Series>,
    index: HashMap<(String, String), usize>,
    series_dropped: usize,
    samples: VecDeque<Sample>,
    events: VecDeque<Event>,
    seen: HashMap<String, Seen>,
}

/// The share the page charts: what the detector judges, else packets since
/// the apply.
fn observed(b: &xlb_core::status::BackendStatus) -> Option<f32> {
    b.window
        .new_flows
        .or(b.observed_share_ratio)
        .map(|r| r as f32)
}

impl Ring {
    fn series_of(&mut self, vip: &str, backend: &str) -> Option<usize> {
        let key = (vip.to_string(), backend.to_string());
        if let Some(&i) = self.index.get(&key) {
            return Some(i);
        }
        if self.series.len() >= MAX_SERIES {
            self.series_dropped += 1;
            return None;
        }
        self.series.push(Series {
            vip: key.0.clone(),
            backend: key.1.clone(),
        });
        self.index.insert(key, self.series.len() - 1);
        Some(self.series.len() - 1)
    }

    fn event(&mut self, event: Event) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The events of one VIP since the last sample.
    fn compare(&mut self, at: f64, vip: &VipStatus) {
        let mut events = Vec::new();
        let seen = self.seen.entry(vip.name.clone()).or_default();
        let event = |kind, backend: Option<&str>, detail: String| Event {
            at_unix_seconds: at,
            kind,
            vip: vip.name.clone(),
            backend: backend.map(str::to_string),
            detail,
        };
        // A VIP seen for the first time starts from `Seen::default()`: only
        // a drifted or imbalanced one is an event.
        if vip.drift.drifted != seen.drifted {
            let (kind, detail) = if vip.drift.drifted {
                (
                    EventKind::Drift,
                    vip.drift.reason.clone().unwrap_or_default(),
                )
            } else {
                (EventKind::DriftCleared, "kernel table matches".to_string())
            };
            events.push(event(kind, None, detail));
        }
        seen.drifted = vip.drift.drifted;
        let imbalanced = vip.imbalance.state == xlb_core::detect::State::Imbalanced;
        if imbalanced != seen.imbalanced {
            let kind = if imbalanced {
                EventKind::Imbalanced
            } else {
                EventKind::Balanced
            };
            events.push(event(
                kind,
                vip.imbalance.backend.as_deref().filter(|_| imbalanced),
                vip.imbalance.reason.clone(),
            ));
        }
        seen.imbalanced = imbalanced;
        for b in &vip.backends {
            let Some(h) = &b.health else { continue };
            let now = h.machine.state.as_str();
            let before = seen.health.insert(b.name.clone(), now);
            // The first sight of a backend that is up is no event.
            if before.unwrap_or("up") != now {
                let kind = if now == "down" {
                    EventKind::HealthDown
                } else {
                    EventKind::HealthUp
                };
                let detail = h.machine.last_error.clone().filter(|_| now == "down");
                events.push(event(
                    kind,
                    Some(&b.name),
                    detail.unwrap_or_else(|| format!("{} {now}", h.check)),
                ));
            }
        }
        for e in events {
            self.event(e);
        }
    }

    /// Keep one status document's shares, and what changed since the last.
    pub fn observe(&mut self, status: &Status) {
        let at = status.generated_at_unix_seconds;
        if self.samples.back().is_some_and(|s| s.at_unix_seconds >= at) {
            // The same published document again (no tick since).
            return;
        }
        let mut shares = vec![None; self.series.len()];
        for vip in &status.vips {
            self.compare(at, vip);
            for b in &vip.backends {
                if let Some(i) = self.series_of(&vip.name, &b.name) {
                    if shares.len() <= i {
                        shares.resize(i + 1, None);
                    }
                    shares[i] = observed(b);
                }
            }
        }
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at_unix_seconds: at,
            shares,
        });
    }

    /// The revisions the page shows, by number, from the store's index:
    /// those of the last `REVISION_SECONDS`, the newest `MAX_REVISIONS`
    /// (only these are read whole).
    pub fn shown(summaries: &[Summary], now: f64) -> Vec<u64> {
        let since = now - REVISION_SECONDS;
        let recent: Vec<u64> = summaries
            .iter()
            .filter(|s| s.created_at_unix_seconds >= since)
            .map(|s| s.number)
            .collect();
        let skip = recent.len().saturating_sub(MAX_REVISIONS);
        recent[skip..].to_vec()
    }

    /// The answer of `/api/history`.
    pub fn document(&self, revisions: &[Revision], now: f64) -> HistoryDoc {
        let since = now - REVISION_SECONDS;
        let recent: Vec<&Revision> = revisions
            .iter()
            .filter(|r| r.created_at_unix_seconds >= since)
            .collect();
        let skip = recent.len().saturating_sub(MAX_REVISIONS);
        HistoryDoc {
            schema_version: SCHEMA_VERSION,
            generated_at_unix_seconds: now,
            sample_every_seconds: SAMPLE_EVERY.as_secs_f64(),
            series: self.series.clone(),
            series_dropped: self.series_dropped,
            samples: self.samples.iter().cloned().collect(),
            events: self.events.iter().cloned().collect(),
            revisions: recent[skip..].iter().map(|r| point(r)).collect(),
        }
    }
}

/// A backend's predicted share in a revision's plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Predicted {
    pub vip: String,
    pub backend: String,
    pub before_ratio: f64,
    pub after_ratio: f64,
}

/// One revision on the time line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RevisionPoint {
    pub number: u64,
    pub at_unix_seconds: f64,
    pub user: String,
    pub message: Option<String>,
    /// `apply`, `rollback`, `automatic_rollback`, `startup`, `edit`.
    pub kind: &'static str,
    /// `apply web.toml`, `weight web b1 10`, `rollback to 3`.
    pub what: String,
    /// Applied although its plan was refused by a safety check.
    pub forced: bool,
    /// An automatic rollback's reason.
    pub reason: Option<String>,
    /// `applied`, `baking`, `baked`, `rolled_back`, `failed`.
    pub outcome: &'static str,
    /// Why it was rolled back (and by which revision), or why it failed.
    pub outcome_detail: Option<String>,
    /// The predicted shares of the backends of the VIPs it changed.
    pub predicted: Vec<Predicted>,
}

fn point(r: &Revision) -> RevisionPoint {
    let (kind, what, reason) = match &r.kind {
        Kind::Apply => ("apply", format!("apply {}", r.config_file), None),
        Kind::Rollback { to } => ("rollback", format!("rollback to {to}"), None),
        Kind::AutomaticRollback { to, reason } => (
            "automatic_rollback",
            format!("automatic rollback to {to}"),
            Some(reason.clone()),
        ),
        Kind::Startup => ("startup", format!("start with {}", r.config_file), None),
        Kind::Edit { command } => ("edit", command.clone(), None),
    };
    let (outcome, outcome_detail) = match &r.outcome {
        Outcome::Applied => ("applied", None),
        Outcome::Baking => ("baking", None),
        Outcome::Baked => ("baked", None),
        Outcome::Failed { error } => ("failed", Some(error.clone())),
        Outcome::RolledBack { by, reason, .. } => {
            ("rolled_back", Some(format!("by {by}: {reason}")))
        }
    };
    let plan = r.plan.as_ref().map(|p| p.value());
    let mut predicted = Vec::new();
    for vip in plan
        .as_ref()
        .and_then(|p| p["vips"].as_array())
        .into_iter()
        .flatten()
    {
        if vip["change"] == "unchanged" {
            continue;
        }
        let name = vip["name"].as_str().unwrap_or_default();
        for b in vip["backends"].as_array().into_iter().flatten() {
            predicted.push(Predicted {
                vip: name.to_string(),
                backend: b["name"].as_str().unwrap_or_default().to_string(),
                before_ratio: b["share_before_ratio"].as_f64().unwrap_or(0.0),
                after_ratio: b["share_after_ratio"].as_f64().unwrap_or(0.0),
            });
        }
    }
    RevisionPoint {
        number: r.number,
        at_unix_seconds: r.created_at_unix_seconds,
        user: r.user.clone(),
        message: r.message.clone(),
        kind,
        what,
        forced: plan.is_some_and(|p| p["refused"] == true),
        reason,
        outcome,
        outcome_detail,
        predicted,
    }
}

/// `/api/history`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryDoc {
    pub schema_version: u32,
    pub generated_at_unix_seconds: f64,
    pub sample_every_seconds: f64,
    pub series: Vec<Series>,
    pub series_dropped: usize,
    pub samples: Vec<Sample>,
    pub events: Vec<Event>,
    pub revisions: Vec<RevisionPoint>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A status at `at` of VIP `web` over b1..b3 with these observed shares.
    fn status(at: f64, shares: [f64; 3], drifted: bool, imbalanced: bool) -> Status {
        let rates = json!({
            "new_flows_per_second": 0.0, "packets_per_second": 0.0, "bytes_per_second": 0.0,
        });
        let backends: Vec<_> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "name": format!("b{}", i + 1), "id": i, "address": "198.18.0.11",
                    "mac": "02:00:00:00:00:11", "state": "active", "weight": 1,
                    "expected_share_ratio": 1.0 / 3.0, "table_share_ratio": 1.0 / 3.0,
                    "observed_share_ratio": s, "window": { "new_flows": s },
                    "rates": rates.clone(), "packets": 0, "bytes": 0, "new_flows": 0,
                    "packets_since_apply": 0,
                })
            })
            .collect();
        let state = if imbalanced { "imbalanced" } else { "ok" };
        serde_json::from_value(json!({
            "schema_version": 2, "interface": "eth0", "revision": 1,
            "applied_at_unix_seconds": 0, "observed_seconds": 1.0,
            "generated_at_unix_seconds": at,
            "vips": [{
                "name": "web", "id": 0, "address": "198.18.100.1", "port": 80,
                "protocol": "tcp", "table_size": 65537, "packets": 0, "bytes": 0,
                "new_flows": 0,
                "imbalance": { "state": state, "cause": null,
                               "backend": if imbalanced { Some("b1") } else { None },
                               "ratio": null, "since_unix_seconds": null,
                               "reason": "b1 gets 2.1x its expected share" },
                "signals": [],
                "drift": { "drifted": drifted, "checked_at_unix_seconds": at,
                           "reason": if drifted { Some("slot 3 names b9") } else { None } },
                "rates": rates.clone(), "backends": backends,
            }],
            "actions": [], "drops": [], "cpus": [], "bake": null, "maps": [],
        }))
        .expect("a status document")
    }

    #[test]
    fn samples_keep_each_backends_share_in_series_order() {
        let mut ring = Ring::default();
        ring.observe(&status(10.0, [0.33, 0.33, 0.34], false, false));
        ring.observe(&status(12.0, [0.70, 0.15, 0.15], false, false));
        // The same document again adds nothing.
        ring.observe(&status(12.0, [0.70, 0.15, 0.15], false, false));
        let doc = ring.document(&[], 13.0);
        assert_eq!(doc.series.len(), 3);
        assert_eq!(doc.series[0].backend, "b1");
        assert_eq!(doc.samples.len(), 2);
        assert_eq!(doc.samples[1].shares[0], Some(0.70));
        assert!(doc.events.is_empty(), "{:?}", doc.events);
    }

    #[test]
    fn the_ring_is_bounded() {
        let mut ring = Ring::default();
        for i in 0..MAX_SAMPLES + 5 {
            ring.observe(&status(i as f64, [0.3, 0.3, 0.4], false, false));
        }
        let doc = ring.document(&[], 1e9);
        assert_eq!(doc.samples.len(), MAX_SAMPLES);
        assert_eq!(doc.samples[0].at_unix_seconds, 5.0);
    }

    #[test]
    fn drift_and_imbalance_are_marked_when_they_change() {
        let mut ring = Ring::default();
        ring.observe(&status(1.0, [0.3, 0.3, 0.4], false, false));
        ring.observe(&status(2.0, [0.7, 0.1, 0.2], false, true));
        ring.observe(&status(3.0, [0.7, 0.1, 0.2], true, true));
        ring.observe(&status(4.0, [0.3, 0.3, 0.4], false, false));
        let kinds: Vec<(f64, EventKind)> = ring
            .document(&[], 5.0)
            .events
            .iter()
            .map(|e| (e.at_unix_seconds, e.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                (2.0, EventKind::Imbalanced),
                (3.0, EventKind::Drift),
                (4.0, EventKind::DriftCleared),
                (4.0, EventKind::Balanced),
            ]
        );
        let imbalanced = &ring.events[0];
        assert_eq!(imbalanced.backend.as_deref(), Some("b1"));
        assert_eq!(ring.events[1].detail, "slot 3 names b9");
    }

    fn revision(
        number: u64,
        at: f64,
        kind: serde_json::Value,
        outcome: serde_json::Value,
        refused: bool,
    ) -> Revision {
        // From text: a recorded plan is JSON text (`RecordedPlan`), which
        // does not come out of a `Value`.
        serde_json::from_str(&json!({
            "schema_version": 1, "number": number, "created_at_unix_seconds": at,
            "user": "alice", "message": null, "config_file": "web.toml",
            "config_text": "", "config_hash": "", "kind": kind, "outcome": outcome,
            "plan": { "refused": refused, "vips": [
                { "name": "web", "change": "changed", "backends": [
                    { "name": "b1", "share_before_ratio": 0.25, "share_after_ratio": 0.625 } ] },
                { "name": "dns", "change": "unchanged", "backends": [
                    { "name": "d1", "share_before_ratio": 1.0, "share_after_ratio": 1.0 } ] } ] },
        })
        .to_string())
        .expect("a revision")
    }

    #[test]
    fn revisions_say_who_what_predicted_and_how_it_ended() {
        let now = 100_000.0;
        let revisions = [
            revision(
                1,
                now - REVISION_SECONDS - 1.0,
                json!({"type": "startup"}),
                json!({"type": "baked"}),
                false,
            ),
            revision(
                2,
                now - 60.0,
                json!({"type": "edit", "command": "weight web b1 10"}),
                json!({"type": "rolled_back", "at_unix_seconds": now - 30.0, "by": 3, "reason": "b1 imbalanced"}),
                true,
            ),
            revision(
                3,
                now - 30.0,
                json!({"type": "automatic_rollback", "to": 1, "reason": "b1 imbalanced"}),
                json!({"type": "applied"}),
                false,
            ),
        ];
        let doc = Ring::default().document(&revisions, now);
        // Older than the window: left out.
        let numbers: Vec<u64> = doc.revisions.iter().map(|r| r.number).collect();
        assert_eq!(numbers, [2, 3]);
        let forced = &doc.revisions[0];
        assert!(forced.forced);
        assert_eq!(forced.what, "weight web b1 10");
        assert_eq!(forced.outcome, "rolled_back");
        assert_eq!(
            forced.outcome_detail.as_deref(),
            Some("by 3: b1 imbalanced")
        );
        // Only the VIPs the plan changed.
        assert_eq!(
            forced.predicted,
            [Predicted {
                vip: "web".into(),
                backend: "b1".into(),
                before_ratio: 0.25,
                after_ratio: 0.625
            }]
        );
        let rollback = &doc.revisions[1];
        assert_eq!(rollback.kind, "automatic_rollback");
        assert_eq!(rollback.reason.as_deref(), Some("b1 imbalanced"));
        assert!(!rollback.forced);
    }
}
