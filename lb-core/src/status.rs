//! `xlb status`: the document the daemon serves and the CLI renders. Built by
//! a pure function from the applied state and two counter snapshots, so the
//! arithmetic is tested without a kernel; `annotate` adds the health
//! monitor's views (the status is above `health`, which never names it).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::config::AllDown;
use crate::counters::{ConnScan, CounterSnapshot, PacketsAt};
use crate::detect::{Detector, Signal, State, VipReport};
use crate::fleet::{self, Decision};
use crate::health::{BackendHealth, Health, Membership, Monitor, VipHealth};
use crate::state::{Desired, DesiredVip};
use lb_common::maps::{MAX_BACKENDS, MAX_VIPS};
use lb_common::stats::{ACTION_NAMES, DROP_REASON_NAMES, EVENT_NAMES};
use std::sync::Arc;

pub use crate::detect::Verdict;

/// 2: new flows, the detector's verdict, drift, window shares and rates,
/// per-CPU totals and map fill. Later additions within 2 (absent from an
/// older daemon's document, so they default): `events`, `conn_table`, each
/// backend's `flows`, each VIP's and backend's `health`.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub schema_version: u32,
    pub interface: String,
    /// Increases by one with every successful apply.
    pub revision: u64,
    pub applied_at_unix_seconds: u64,
    /// Seconds over which `observed_share_ratio` was measured (since the apply).
    pub observed_seconds: f64,
    pub generated_at_unix_seconds: f64,
    pub vips: Vec<VipStatus>,
    pub actions: Vec<NamedCounter>,
    pub drops: Vec<NamedCounter>,
    /// Packets and bytes the program saw on each CPU (all actions).
    pub cpus: Vec<CpuCounter>,
    /// The bake of the last apply, if any.
    pub bake: Option<crate::bake::BakeStatus>,
    pub maps: Vec<MapFill>,
    /// Data-plane events since the program was loaded, by name
    /// (`conn_hit`, `conn_miss`, ...: lb_common::stats::EVENT_NAMES).
    #[serde(default)]
    pub events: BTreeMap<String, u64>,
    /// The last count of the connection table; null until the first.
    #[serde(default)]
    pub conn_table: Option<ConnTableStatus>,
    /// Of every VIP's decision fingerprint: equal on nodes that agree.
    #[serde(default)]
    pub fingerprint: String,
    /// The `--config` file against the live revision (`reload`): whether
    /// it differs and why the daemon keeps the live revision; null when the
    /// daemon has no file (tests, benchmarks).
    #[serde(default)]
    pub config_file: Option<crate::reload::ConfigFileStatus>,
    /// What the node announces to its routers (`announce`); null from a
    /// daemon older than announcing.
    #[serde(default)]
    pub announce: Option<crate::announce::NodeAnnounce>,
    /// The node's place in its fleet (`xlb run --fleet`): whether it
    /// reaches the store, the fleet revision it serves; null for a node
    /// that works alone.
    #[serde(default)]
    pub fleet: Option<FleetNodeStatus>,
    /// The `xlb trace` or `xlb capture` running now; null when none.
    #[serde(default)]
    pub trace: Option<crate::trace::TraceActive>,
}

/// What `xlb status --vip NAME` says when the daemon serves no VIP of that
/// name: the VIPs it serves.
pub fn unknown_vip<'a>(name: &str, served: impl Iterator<Item = &'a str>) -> String {
    let served: Vec<&str> = served.collect();
    format!(
        "--vip {name}: the daemon serves no VIP of that name (it serves: {})",
        served.join(", ")
    )
}

impl Status {
    /// The document with VIP `name` only (`xlb status --vip`); the error
    /// names the VIPs it has.
    pub fn one_vip(&self, name: &str) -> Result<Status, String> {
        let Some(vip) = self.vips.iter().find(|v| v.name == name) else {
            return Err(unknown_vip(name, self.vips.iter().map(|v| v.name.as_str())));
        };
        Ok(Status {
            schema_version: self.schema_version,
            interface: self.interface.clone(),
            revision: self.revision,
            applied_at_unix_seconds: self.applied_at_unix_seconds,
            observed_seconds: self.observed_seconds,
            generated_at_unix_seconds: self.generated_at_unix_seconds,
            vips: vec![vip.clone()],
            actions: self.actions.clone(),
            drops: self.drops.clone(),
            cpus: self.cpus.clone(),
            bake: self.bake.clone(),
            maps: self.maps.clone(),
            events: self.events.clone(),
            conn_table: self.conn_table.clone(),
            fingerprint: self.fingerprint.clone(),
            config_file: self.config_file.clone(),
            announce: self.announce.clone(),
            fleet: self.fleet.clone(),
            trace: self.trace.clone(),
        })
    }
}

/// A fleet node's view of its fleet, as its agent last saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetNodeStatus {
    /// The fleet's name (the store URL's path) and this node's.
    pub fleet: String,
    pub node: String,
    pub endpoints: Vec<String>,
    /// Whether the agent reaches the store now. Cut off, the node forwards
    /// on its live revision and everything local goes on.
    pub connected: bool,
    /// Since when `connected` has held (Unix seconds).
    pub since_unix_seconds: f64,
    /// Why the store is not reached (while cut off).
    pub error: Option<String>,
    /// The fleet revision the node serves (None: its own config).
    pub serving: Option<u64>,
    /// The fleet revision the rollout wants here, as last read.
    pub target: Option<u64>,
    /// The last fleet revision applied here and what became of it
    /// ("5 baked", "6 rolled_back: ...").
    pub last: Option<String>,
    /// A local change made outside the fleet since its last fleet apply.
    pub diverged: Option<String>,
    /// The held flows replicated through the store (second chance).
    #[serde(default)]
    pub held: Option<crate::held::HeldStatus>,
}

impl FleetNodeStatus {
    /// The status line: `fleet: edge as node lb1, connected; serving fleet
    /// revision 5`.
    pub fn line(&self, now_unix_seconds: f64) -> String {
        let mut line = format!("fleet: {} as node {}, ", self.fleet, self.node);
        let since = (now_unix_seconds - self.since_unix_seconds).max(0.0);
        if self.connected {
            line.push_str("connected");
        } else {
            line.push_str(&format!(
                "CUT OFF from the store for {since:.0} s ({}); forwarding on the live revision",
                self.error.as_deref().unwrap_or("not connected yet")
            ));
        }
        match self.serving {
            Some(n) => line.push_str(&format!("; serving fleet revision {n}")),
            None => line.push_str("; serving no fleet revision yet"),
        }
        if let Some(t) = self.target.filter(|t| Some(*t) != self.serving) {
            line.push_str(&format!(" (target {t})"));
        }
        if let Some(last) = &self.last {
            line.push_str(&format!("; last {last}"));
        }
        if let Some(d) = &self.diverged {
            line.push_str(&format!("; DIVERGED: {d}"));
        }
        if let Some(h) = &self.held {
            line.push_str(&format!("; {}", h.line()));
        }
        line
    }
}

/// What the last connection-table scan found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnTableStatus {
    /// Flows the table remembers.
    pub entries: u64,
    /// Its max_entries: the LRU evicts the least recently used flow beyond.
    pub capacity: u64,
    /// Entries naming a backend id that is not in the applied config.
    pub stale_entries: u64,
    pub scanned_at_unix_seconds: f64,
    /// How long the scan took.
    pub scan_seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuCounter {
    pub cpu: u32,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapFill {
    pub name: String,
    pub entries: u64,
    pub max_entries: u64,
}

/// Per second, over the detector's window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub new_flows_per_second: f64,
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
}

/// A backend's share of each signal over the detector's window (None
/// without traffic).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowShares {
    pub new_flows: Option<f64>,
    pub packets: Option<f64>,
    pub bytes: Option<f64>,
}

/// The last drift check of a VIP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftStatus {
    pub drifted: bool,
    pub checked_at_unix_seconds: Option<f64>,
    pub reason: Option<String>,
}

/// One signal of the detector, without the per-backend detail (that is in
/// each backend's `window` and `rates`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalStatus {
    pub signal: Signal,
    pub rate_per_second: f64,
    pub worst_backend: Option<String>,
    pub worst_ratio: Option<f64>,
    pub cv: Option<f64>,
    pub state: State,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedCounter {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    pub name: String,
    /// The VIP's index in the kernel's maps (for bpftool).
    pub id: u32,
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub table_size: u32,
    /// Since the VIP's id was created.
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// The imbalance detector's verdict.
    pub imbalance: Verdict,
    pub signals: Vec<SignalStatus>,
    pub drift: DriftStatus,
    pub rates: Rates,
    pub backends: Vec<BackendStatus>,
    /// The VIP's health check, if it has one (health/): the check, the
    /// all-down policy and whether it applies now.
    #[serde(default)]
    pub health: Option<VipHealth>,
    /// What decides a new flow's backend here, and its fingerprint: equal
    /// on every node of a fleet that agrees (`xlb fleet status`).
    #[serde(default)]
    /// Shared with the daemon's decisions (`Decisions`), which outlive a
    /// document: 64,000 backends' names and addresses are 4 MB.
    pub decision: Option<Arc<Decision>>,
    /// Whether the node announces this VIP, and why; null from a daemon
    /// older than announcing.
    #[serde(default)]
    pub announce: Option<crate::announce::VipAnnounce>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    /// The backend's index in the kernel's backend map (for bpftool).
    pub id: u32,
    pub address: String,
    pub mac: String,
    pub state: String,
    pub weight: u32,
    /// weight / sum of the weights of the VIP's active backends.
    pub expected_share_ratio: f64,
    /// Fraction of the VIP's live Maglev table's slots that name this
    /// backend (the applied table's, unless the live one drifted from it).
    pub table_share_ratio: f64,
    /// Fraction of the VIP's forwarded packets since the last apply; null
    /// before any packet arrived.
    pub observed_share_ratio: Option<f64>,
    /// Shares over the detector's window.
    pub window: WindowShares,
    pub rates: Rates,
    /// Since the backend's id was created.
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// Since the last apply.
    pub packets_since_apply: u64,
    /// Flows the connection table remembers for this backend at the last
    /// scan: what a draining backend still carries. Null before the first.
    #[serde(default)]
    pub flows: Option<u64>,
    /// The backend's health: up or down, since when, the last error; null
    /// when its VIP has no health check (or it is disabled).
    #[serde(default)]
    pub health: Option<BackendHealth>,
}

/// Inputs that are not in `Desired`.
pub struct StatusContext<'a> {
    pub interface: &'a str,
    pub revision: u64,
    pub applied_at_unix_seconds: u64,
    pub observed_seconds: f64,
    pub generated_at_unix_seconds: f64,
    /// The detector's last reports, by VIP name.
    pub reports: &'a (dyn Reports + Sync),
    /// The last drift check, by VIP name.
    pub drift: &'a BTreeMap<String, crate::drift::Finding>,
    pub drift_checked_at: &'a BTreeMap<String, f64>,
    pub bake: Option<&'a crate::bake::BakeStatus>,
    /// The last connection-table scan, if any.
    pub conn_scan: Option<&'a ConnScan>,
}

/// Where a status document finds each VIP's last imbalance report, with
/// its per-backend shares.
pub trait Reports {
    fn report(&self, vip: &str) -> Option<Cow<'_, VipReport>>;
}

impl Reports for BTreeMap<String, Arc<VipReport>> {
    fn report(&self, vip: &str) -> Option<Cow<'_, VipReport>> {
        self.get(vip).map(|r| Cow::Borrowed(&**r))
    }
}

/// The daemon's: a [`Detector::shares_on_demand`] makes each report with
/// its shares as the document asks for it (none for an idle VIP: the
/// document shows a missing share as None and a missing rate as 0, what
/// an idle VIP's shares say).
impl Reports for Detector {
    fn report(&self, vip: &str) -> Option<Cow<'_, VipReport>> {
        Detector::report_unless_idle(self, vip)
    }
}

fn no_verdict() -> Verdict {
    Verdict {
        state: State::LowRate,
        cause: None,
        backend: None,
        ratio: None,
        since_unix_seconds: None,
        reason: "no measurement yet".to_string(),
    }
}

/// A removed backend its VIP retains (`state::retain`): in no table, its
/// state `removed, N flows kept` (N from the last connection-table count,
/// `?` before one).
fn retained_status(
    r: &crate::state::RetainedBackend,
    scan: Option<&ConnScan>,
    now: &CounterSnapshot,
) -> BackendStatus {
    let flows = scan.map(|s| s.by_backend.get(&r.id).copied().unwrap_or(0));
    let counters = now.backends.get(&r.id).copied().unwrap_or_default();
    BackendStatus {
        name: r.name.clone(),
        id: r.id,
        address: r.address.to_string(),
        mac: crate::config::MacAddr(r.mac).to_string(),
        state: format!(
            "removed, {} flows kept",
            flows.map_or("?".to_string(), |n| n.to_string())
        ),
        weight: 0,
        expected_share_ratio: 0.0,
        table_share_ratio: 0.0,
        observed_share_ratio: None,
        window: WindowShares::default(),
        rates: Rates::default(),
        packets: counters.packets,
        bytes: counters.bytes,
        new_flows: counters.new_flows,
        packets_since_apply: 0,
        flows,
        health: None,
    }
}

/// Each VIP's decision (`fleet::decision`: one pass over its table's
/// slots and a hash of them, the costliest part of a VIP's status at
/// 16,381 slots), kept for the VIP state it was made of: a VIP an apply
/// left as it was is the same `Arc` (state's sharing), and holding that
/// `Arc` here keeps it unchanged (an `Arc` shared is never mutated in
/// place). Entries of VIPs no longer applied go at the next build.
#[derive(Debug, Default)]
pub struct Decisions {
    /// By the address of the `Arc` held beside (only compared).
    by_vip: std::collections::HashMap<usize, (Arc<DesiredVip>, u32, Arc<Decision>)>,
}

fn address(vip: &Arc<DesiredVip>) -> usize {
    Arc::as_ptr(vip) as usize
}

impl Decisions {
    /// The kept decision of `vip` under `hash_seed`, when made of this very
    /// VIP state and seed.
    fn kept(&self, vip: &Arc<DesiredVip>, hash_seed: u32) -> Option<&Arc<Decision>> {
        self.by_vip
            .get(&address(vip))
            .filter(|(kept, seed, _)| Arc::ptr_eq(kept, vip) && *seed == hash_seed)
            .map(|(_, _, decision)| decision)
    }

    /// Make and keep the decisions of `desired`'s VIPs not kept, on every
    /// core (after an apply of every VIP at 1,000 VIPs x 64 backends, a
    /// walk of 16 million table slots).
    fn make(&mut self, desired: &Desired) {
        let seed = desired.config.hash_seed;
        let made: Vec<_> = desired
            .vips
            .par_iter()
            .filter(|v| self.kept(v, seed).is_none())
            .map(|v| {
                let decision = Arc::new(fleet::decision(v, seed));
                (address(v), (v.clone(), seed, decision))
            })
            .collect();
        self.by_vip.extend(made);
    }

    /// `vip`'s decision under `hash_seed`: the kept one when made of this
    /// very VIP state and seed (`make`), else made now.
    fn of(&self, vip: &Arc<DesiredVip>, hash_seed: u32) -> Arc<Decision> {
        self.kept(vip, hash_seed)
            .cloned()
            .unwrap_or_else(|| Arc::new(fleet::decision(vip, hash_seed)))
    }

    /// Keep only the decisions of `desired`'s VIPs.
    fn retain(&mut self, desired: &Desired) {
        let live: std::collections::HashSet<usize> = desired.vips.iter().map(address).collect();
        self.by_vip.retain(|key, _| live.contains(key));
    }

    /// The decisions kept.
    pub fn len(&self) -> usize {
        self.by_vip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_vip.is_empty()
    }
}

pub fn build(
    ctx: &StatusContext<'_>,
    desired: &Desired,
    now: &CounterSnapshot,
    at_apply: &PacketsAt,
) -> Status {
    build_with(ctx, desired, now, at_apply, &mut Decisions::default())
}

/// `build`, taking each unchanged VIP's decision from `decisions`.
pub fn build_with(
    ctx: &StatusContext<'_>,
    desired: &Desired,
    now: &CounterSnapshot,
    at_apply: &PacketsAt,
    decisions: &mut Decisions,
) -> Status {
    decisions.retain(desired);
    decisions.make(desired);
    let decisions = &*decisions;
    // VIP by VIP on every core: 64,000 backends at the declared limits.
    let vips = desired
        .vips
        .par_iter()
        .map(|v| {
            let weight_sum: u64 = v.config.table_backends().map(|b| b.weight as u64).sum();
            let since = |id: u32| {
                let n = now.backends.get(&id).map_or(0, |c| c.packets);
                let b = at_apply.packets(id);
                n.saturating_sub(b)
            };
            let vip_since: u64 = v.backend_ids.iter().map(|&id| since(id)).sum();
            let report = ctx.reports.report(&v.config.name);
            let report = report.as_deref();
            let finding = ctx.drift.get(&v.config.name);
            let live_shares = finding.and_then(|f| f.live_table_shares.as_ref());
            // (signal, backend name) -> (share, rate) from the detector.
            let mut window: BTreeMap<(Signal, &str), (Option<f64>, f64)> = BTreeMap::new();
            for sig in report.map_or(&[][..], |r| &r.signals[..]) {
                for b in &sig.backends {
                    window.insert(
                        (sig.signal, b.backend.as_str()),
                        (b.observed_share_ratio, b.rate_per_second),
                    );
                }
            }
            let mut backends: Vec<BackendStatus> = v
                .config
                .backends
                .iter()
                .zip(&v.backend_ids)
                .zip(&v.table_shares)
                .map(|((b, &id), &applied_share)| {
                    let in_table = b.state == crate::config::BackendState::Active;
                    let counters = now.backends.get(&id).copied().unwrap_or_default();
                    let packets_since_apply = since(id);
                    BackendStatus {
                        name: b.name.clone(),
                        id,
                        address: b.address.to_string(),
                        mac: b.mac.to_string(),
                        state: b.state.to_string(),
                        weight: b.weight,
                        expected_share_ratio: if in_table && weight_sum > 0 {
                            b.weight as f64 / weight_sum as f64
                        } else {
                            0.0
                        },
                        table_share_ratio: match live_shares {
                            Some(live) => live.get(&b.name).copied().unwrap_or(0.0),
                            None => applied_share,
                        },
                        observed_share_ratio: (vip_since > 0)
                            .then(|| packets_since_apply as f64 / vip_since as f64),
                        window: WindowShares {
                            new_flows: window
                                .get(&(Signal::NewFlows, &b.name[..]))
                                .and_then(|w| w.0),
                            packets: window
                                .get(&(Signal::Packets, &b.name[..]))
                                .and_then(|w| w.0),
                            bytes: window.get(&(Signal::Bytes, &b.name[..])).and_then(|w| w.0),
                        },
                        rates: Rates {
                            new_flows_per_second: window
                                .get(&(Signal::NewFlows, &b.name[..]))
                                .map_or(0.0, |w| w.1),
                            packets_per_second: window
                                .get(&(Signal::Packets, &b.name[..]))
                                .map_or(0.0, |w| w.1),
                            bytes_per_second: window
                                .get(&(Signal::Bytes, &b.name[..]))
                                .map_or(0.0, |w| w.1),
                        },
                        packets: counters.packets,
                        bytes: counters.bytes,
                        new_flows: counters.new_flows,
                        packets_since_apply,
                        flows: ctx
                            .conn_scan
                            .map(|scan| scan.by_backend.get(&id).copied().unwrap_or(0)),
                        health: None,
                    }
                })
                .collect();
            backends.extend(
                desired
                    .retained_of(&v.config.name)
                    .into_iter()
                    .map(|r| retained_status(&r, ctx.conn_scan, now)),
            );
            let counters = now.vips.get(&v.id).copied().unwrap_or_default();
            let signals: Vec<SignalStatus> = report.map_or(Vec::new(), |r| {
                r.signals
                    .iter()
                    .map(|s| SignalStatus {
                        signal: s.signal,
                        rate_per_second: s.rate_per_second,
                        worst_backend: s.worst_backend.clone(),
                        worst_ratio: s.worst_ratio,
                        cv: s.cv,
                        state: s.verdict.state,
                    })
                    .collect()
            });
            let rate = |signal| {
                signals
                    .iter()
                    .find(|s| s.signal == signal)
                    .map_or(0.0, |s| s.rate_per_second)
            };
            VipStatus {
                name: v.config.name.clone(),
                id: v.id,
                address: v.config.address.to_string(),
                port: v.config.port,
                protocol: v.config.protocol.to_string(),
                table_size: v.config.table_size,
                packets: counters.packets,
                bytes: counters.bytes,
                new_flows: counters.new_flows,
                imbalance: report.map_or_else(no_verdict, |r| r.verdict.clone()),
                rates: Rates {
                    new_flows_per_second: rate(Signal::NewFlows),
                    packets_per_second: rate(Signal::Packets),
                    bytes_per_second: rate(Signal::Bytes),
                },
                signals,
                drift: DriftStatus {
                    drifted: finding.is_some_and(|f| f.drifted),
                    checked_at_unix_seconds: ctx.drift_checked_at.get(&v.config.name).copied(),
                    reason: finding.and_then(|f| f.reason.clone()),
                },
                backends,
                health: None,
                decision: Some(decisions.of(v, desired.config.hash_seed)),
                announce: None,
            }
        })
        .collect();
    let named = |names: &[&str], values: &[lb_common::Counters]| {
        names
            .iter()
            .zip(values)
            .map(|(n, c)| NamedCounter {
                name: n.to_string(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect()
    };
    let backend_ids: usize = desired.vips.iter().map(|v| v.backend_ids.len()).sum();
    let known: std::collections::BTreeSet<u32> = desired
        .vips
        .iter()
        .flat_map(|v| v.backend_ids.iter().copied())
        .chain(desired.allocation.retained().iter().map(|r| r.id))
        .collect();
    let fill = |name: &str, entries: usize, max: u32| MapFill {
        name: name.to_string(),
        entries: entries as u64,
        max_entries: max.into(),
    };
    let mut status = Status {
        schema_version: SCHEMA_VERSION,
        interface: ctx.interface.to_string(),
        revision: ctx.revision,
        applied_at_unix_seconds: ctx.applied_at_unix_seconds,
        observed_seconds: ctx.observed_seconds,
        generated_at_unix_seconds: ctx.generated_at_unix_seconds,
        vips,
        actions: named(&ACTION_NAMES, &now.actions),
        drops: named(&DROP_REASON_NAMES, &now.drops),
        bake: ctx.bake.cloned(),
        cpus: now
            .per_cpu
            .iter()
            .enumerate()
            .map(|(cpu, c)| CpuCounter {
                cpu: cpu as u32,
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect(),
        maps: vec![
            fill("vips", desired.vips.len(), MAX_VIPS),
            fill("backends", backend_ids, MAX_BACKENDS),
            fill("maglev_tables", desired.vips.len(), MAX_VIPS),
        ],
        events: EVENT_NAMES
            .iter()
            .zip(&now.events)
            .map(|(n, c)| (n.to_string(), *c))
            .collect(),
        config_file: None,
        announce: None,
        fleet: None,
        trace: None,
        conn_table: ctx.conn_scan.map(|scan| ConnTableStatus {
            entries: scan.entries,
            capacity: scan.capacity.into(),
            stale_entries: scan.stale_entries(|id| known.contains(&id)),
            scanned_at_unix_seconds: scan.scanned_at_unix_seconds,
            scan_seconds: scan.seconds,
        }),
        fingerprint: String::new(),
    };
    status.fingerprint = fleet::node_fingerprint(status.vips.iter().filter_map(|v| {
        v.decision
            .as_ref()
            .map(|d| (v.name.as_str(), d.fingerprint.as_str()))
    }));
    status
}

/// Add each checked backend's and VIP's health to `status`, and take the
/// backends health removed out of the expected shares (their zero share is
/// not a skew).
pub fn annotate(status: &mut Status, monitor: &Monitor) {
    for v in &mut status.vips {
        v.health = monitor.vip_view(&v.name);
        let live = monitor.live(&v.name);
        for b in &mut v.backends {
            b.health = monitor.backend_view(&v.name, &b.name);
        }
        if *live == Membership::Full {
            continue;
        }
        let serves = |b: &BackendStatus| b.state == "active" && live.serves(&b.name);
        let total: u64 = v
            .backends
            .iter()
            .filter(|b| serves(b))
            .map(|b| u64::from(b.weight))
            .sum();
        for b in &mut v.backends {
            b.expected_share_ratio = if serves(b) && total > 0 {
                f64::from(b.weight) / total as f64
            } else {
                0.0
            };
        }
    }
}

/// `web: imbalanced (traffic skew) since 2026-11-25T10:00:03Z (45s): b3 gets
/// 2.29x its expected share; <the detector's reason>`.
pub fn verdict_line(v: &VipStatus, now_unix_seconds: f64) -> String {
    let i = &v.imbalance;
    let state = match i.state {
        State::Ok => "ok",
        State::LowRate => "not judged (low rate)",
        State::Pending => "pending",
        State::Imbalanced => "IMBALANCED",
    };
    let mut line = format!("{}: {state}", v.name);
    if let Some(cause) = i.cause {
        line.push_str(match cause {
            crate::detect::Cause::Table => " (table skew)",
            crate::detect::Cause::Traffic => " (traffic skew)",
        });
    }
    if let Some(since) = i.since_unix_seconds {
        line.push_str(&format!(
            " since {} ({:.0}s)",
            rfc3339(since),
            (now_unix_seconds - since).max(0.0)
        ));
    }
    if let (Some(b), Some(r)) = (&i.backend, i.ratio) {
        line.push_str(&format!(": {b} gets {r:.2}x its expected share"));
    }
    line.push_str(&format!("; {}", i.reason));
    line
}

/// `revision 4: baking, 42s left (rolls back to 3 on skew)` and the like.
pub fn bake_line(b: &crate::bake::BakeStatus, now: f64) -> String {
    use crate::bake::BakeState;
    match b.state {
        BakeState::Baking => format!(
            "revision {}: baking, {:.0}s left (rolls back to {} on skew)",
            b.revision,
            (b.until_unix_seconds - now).max(0.0),
            b.rollback_to
        ),
        BakeState::Baked => format!("revision {}: baked", b.revision),
        BakeState::RolledBack => format!(
            "revision {}: ROLLED BACK to {} as revision {}: {}",
            b.revision,
            b.rollback_to,
            b.rollback_revision.map_or("?".into(), |r| r.to_string()),
            b.reason.as_deref().unwrap_or("")
        ),
    }
}

/// `connection table: 1234 of 262144 flows (0.5%), 0 stale, counted 3s
/// ago in 4.1 ms; hits 100, misses 20, re-steered 0`.
pub fn conn_table_line(c: &ConnTableStatus, events: &BTreeMap<String, u64>, now: f64) -> String {
    let fill = if c.capacity > 0 {
        c.entries as f64 / c.capacity as f64
    } else {
        0.0
    };
    let mut line = format!(
        "connection table: {} of {} flows ({}), {} stale, counted {:.0}s ago in {:.1} ms",
        c.entries,
        c.capacity,
        pct(fill),
        c.stale_entries,
        (now - c.scanned_at_unix_seconds).max(0.0),
        c.scan_seconds * 1e3
    );
    let event = |name: &str| events.get(name).copied();
    if let (Some(hit), Some(miss), Some(resteer)) =
        (event("conn_hit"), event("conn_miss"), event("conn_resteer"))
    {
        line.push_str(&format!(
            "; hits {hit}, misses {miss}, re-steered {resteer}"
        ));
    }
    line
}

/// The `HEALTH` cell of a backend in `xlb status`: `-` (not checked), `up`,
/// `down 12s`, `up (flapping)`.
pub fn health_cell(h: Option<&BackendHealth>, now_unix: f64) -> String {
    let Some(h) = h else {
        return "-".to_string();
    };
    let m = &h.machine;
    let mut s = m.state.as_str().to_string();
    if m.state == Health::Down {
        s.push_str(&format!(
            " {:.0}s",
            (now_unix - m.since_unix_seconds).max(0.0)
        ));
    }
    if m.flapping {
        s.push_str(" (flapping)");
    }
    s
}

/// Lines under the `xlb status` table for one VIP: each down backend with
/// since when and why, and the all-down policy when it applies.
pub fn health_lines(v: &VipStatus, now_unix: f64) -> Vec<String> {
    let mut out = Vec::new();
    for b in &v.backends {
        let Some(h) = &b.health else { continue };
        if h.machine.state != Health::Down {
            continue;
        }
        out.push(format!(
            "{}: backend {} DOWN since {} ({:.0}s): {}{}",
            v.name,
            b.name,
            rfc3339(h.machine.since_unix_seconds),
            (now_unix - h.machine.since_unix_seconds).max(0.0),
            h.machine.last_error.as_deref().unwrap_or("failed checks"),
            if h.in_table {
                "; still in the table (fail-open: every backend is down)"
            } else {
                "; out of the table"
            }
        ));
    }
    if let Some(h) = &v.health
        && h.all_down
    {
        out.push(match h.all_down_policy {
            AllDown::FailOpen => format!(
                "{}: EVERY BACKEND DOWN: failing open (the whole table serves)",
                v.name
            ),
            AllDown::FailClosed => format!(
                "{}: EVERY BACKEND DOWN: failing closed (new flows are dropped)",
                v.name
            ),
        });
    }
    out
}

/// Unix seconds as an RFC 3339 UTC timestamp.
pub fn rfc3339(unix_seconds: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_seconds.max(0.0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn pct(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

/// kubectl-like borderless table; `wide` adds addresses and byte counts.
pub fn render_table(s: &Status, wide: bool) -> String {
    let mut out = format!(
        "interface {}  revision {}  observed over {:.0}s since apply\n\n",
        s.interface, s.revision, s.observed_seconds
    );
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec![
        "VIP", "BACKEND", "STATE", "HEALTH", "WEIGHT", "EXPECTED", "TABLE", "OBSERVED", "PACKETS",
        "FLOWS",
    ];
    if wide {
        header.extend(["BYTES", "ADDRESS", "MAC"]);
    }
    rows.push(header.iter().map(|h| h.to_string()).collect());
    for v in &s.vips {
        let port = if v.port == 0 {
            "*".to_string()
        } else {
            v.port.to_string()
        };
        let host = if v.address.contains(':') {
            format!("[{}]", v.address)
        } else {
            v.address.clone()
        };
        let vip = format!("{} ({host}:{port}/{})", v.name, v.protocol);
        if v.backends.is_empty() {
            rows.push(vec![
                vip.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                v.packets.to_string(),
                "-".into(),
            ]);
        }
        for b in &v.backends {
            let mut row = vec![
                vip.clone(),
                b.name.clone(),
                b.state.clone(),
                health_cell(b.health.as_ref(), s.generated_at_unix_seconds),
                b.weight.to_string(),
                pct(b.expected_share_ratio),
                pct(b.table_share_ratio),
                b.observed_share_ratio.map_or("-".into(), pct),
                b.packets.to_string(),
                b.flows.map_or("-".into(), |n| n.to_string()),
            ];
            if wide {
                row.extend([b.bytes.to_string(), b.address.clone(), b.mac.clone()]);
            }
            rows.push(row);
        }
    }
    crate::table::render_into(&mut out, &rows, "");
    out.push('\n');
    for v in &s.vips {
        out.push_str(&verdict_line(v, s.generated_at_unix_seconds));
        out.push('\n');
        for line in health_lines(v, s.generated_at_unix_seconds) {
            out.push_str(&line);
            out.push('\n');
        }
        if v.drift.drifted {
            out.push_str(&format!(
                "{}: TABLE DRIFT: {}; run `xlb repair` to rewrite the applied tables\n",
                v.name,
                v.drift.reason.as_deref().unwrap_or("the kernel differs")
            ));
        }
    }
    if let Some(b) = &s.bake {
        out.push_str(&bake_line(b, s.generated_at_unix_seconds));
        out.push('\n');
    }
    if let Some(line) = s.config_file.as_ref().and_then(|c| c.line()) {
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(line) = announce_line(s) {
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(f) = &s.fleet {
        out.push_str(&f.line(s.generated_at_unix_seconds));
        out.push('\n');
    }
    if let Some(c) = &s.conn_table {
        out.push_str(&conn_table_line(c, &s.events, s.generated_at_unix_seconds));
        out.push('\n');
    }
    if let Some(t) = &s.trace {
        out.push_str(&t.line(s.generated_at_unix_seconds));
        out.push('\n');
    }
    let drops: Vec<String> = s
        .drops
        .iter()
        .filter(|d| d.packets > 0)
        .map(|d| format!("{} {}", d.name, d.packets))
        .collect();
    if !drops.is_empty() {
        out.push_str(&format!("\ndropped: {}\n", drops.join(", ")));
    }
    if wide {
        // What `xlb fleet status` compares across nodes.
        let vips: Vec<String> = s
            .vips
            .iter()
            .filter_map(|v| {
                v.decision
                    .as_ref()
                    .map(|d| format!("{} {}", v.name, d.fingerprint))
            })
            .collect();
        out.push_str(&format!(
            "\nfingerprint {} (VIPs: {})\n",
            s.fingerprint,
            vips.join(", ")
        ));
    }
    out
}

/// One line on what the node announces, when it announces at all.
fn announce_line(s: &Status) -> Option<String> {
    let a = s.announce.as_ref()?;
    let table = a.table?;
    let mut line = format!(
        "announce: node {}, {} route(s) in table {table}",
        a.state.as_str(),
        a.routes.len()
    );
    let withdrawn: Vec<String> = s
        .vips
        .iter()
        .filter_map(|v| v.announce.as_ref().filter(|a| !a.announced).map(|a| (v, a)))
        .map(|(v, a)| format!("{} ({})", v.name, a.reason.describe()))
        .collect();
    if !withdrawn.is_empty() && a.state == crate::announce::NodeState::Serving {
        line.push_str(&format!("; withdrawn: {}", withdrawn.join(", ")));
    }
    if let Some(e) = &a.error {
        line.push_str(&format!("; ROUTES NOT WRITTEN: {e}"));
    }
    Some(line)
}

/// `xlb node status`: the node's announce state, each VIP's announcement
/// and why, and the traffic still arriving.
pub fn render_node(s: &Status) -> String {
    let mut out = String::new();
    match &s.announce {
        None => out.push_str("this daemon does not report announcing (older xlb)\n"),
        Some(a) => {
            out.push_str(&format!("node {}", a.state.as_str()));
            if let (Some(since), by) = (a.drained_since_unix_seconds, &a.drained_by) {
                out.push_str(&format!(
                    " for {:.0}s{}",
                    (s.generated_at_unix_seconds - since).max(0.0),
                    by.as_ref().map_or(String::new(), |b| format!(" (by {b})"))
                ));
            }
            match a.table {
                Some(t) => {
                    let routes: Vec<String> = a.routes.iter().map(|r| r.to_string()).collect();
                    out.push_str(&format!(
                        "; routes in table {t}: {}\n",
                        if routes.is_empty() {
                            "none".to_string()
                        } else {
                            routes.join(", ")
                        }
                    ));
                }
                None => out.push_str("; no --announce-table: nothing is announced\n"),
            }
            if let Some(e) = &a.error {
                out.push_str(&format!("ROUTES NOT WRITTEN: {e}\n"));
            }
        }
    }
    let (pps, nfs) = arriving(s);
    out.push_str(&format!(
        "arriving: {pps:.0} packets/s, {nfs:.0} new flows/s{}\n\n",
        s.conn_table.as_ref().map_or(String::new(), |c| format!(
            ", {} flows in the connection table",
            c.entries
        ))
    ));
    let mut rows = vec![
        [
            "VIP",
            "ADDRESS",
            "POLICY",
            "ANNOUNCED",
            "BACKENDS UP",
            "WHY",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>(),
    ];
    for v in &s.vips {
        let a = v.announce.as_ref();
        rows.push(vec![
            v.name.clone(),
            v.address.clone(),
            a.map_or("-".into(), |a| a.policy.to_string()),
            a.map_or("-".into(), |a| {
                if a.announced { "yes" } else { "no" }.into()
            }),
            a.map_or("-".into(), |a| a.backends_up.to_string()),
            a.map_or("-".into(), |a| match a.hold_remaining_seconds {
                Some(h) => format!("{} ({h:.0}s left)", a.reason.describe()),
                None => a.reason.describe().to_string(),
            }),
        ]);
    }
    crate::table::render_into(&mut out, &rows, "");
    out
}

/// Packets and new flows a second over every VIP (the collector's rates).
pub fn arriving(s: &Status) -> (f64, f64) {
    s.vips.iter().fold((0.0, 0.0), |(p, n), v| {
        (
            p + v.rates.packets_per_second,
            n + v.rates.new_flows_per_second,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::Counters;

    static NO_REPORTS: BTreeMap<String, Arc<VipReport>> = BTreeMap::new();
    static NO_DRIFT: BTreeMap<String, crate::drift::Finding> = BTreeMap::new();
    static NO_CHECKS: BTreeMap<String, f64> = BTreeMap::new();

    /// A context with nothing detected, drifted, baking or scanned.
    fn context<'a>(revision: u64, observed: f64, generated_at: f64) -> StatusContext<'a> {
        StatusContext {
            interface: "eth0",
            revision,
            applied_at_unix_seconds: 0,
            observed_seconds: observed,
            generated_at_unix_seconds: generated_at,
            reports: &NO_REPORTS,
            drift: &NO_DRIFT,
            drift_checked_at: &NO_CHECKS,
            bake: None,
            conn_scan: None,
        }
    }

    #[test]
    fn shares_come_from_weights_table_and_counters_since_apply() {
        let text = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n\
            [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\nweight = 1\n\
            [[vip.backend]]\nname = \"b\"\naddress = \"198.18.0.12\"\nmac = \"02:00:00:00:00:12\"\nweight = 3\n\
            [[vip.backend]]\nname = \"c\"\naddress = \"198.18.0.13\"\nmac = \"02:00:00:00:00:13\"\nstate = \"draining\"\n";
        let config = crate::config::parse(text, "t.toml").unwrap();
        let desired = crate::state::desired(&config, &Default::default()).unwrap();
        let ids = desired.vips[0].backend_ids.clone();
        let c = |packets| Counters {
            packets,
            bytes: packets * 100,
            new_flows: packets / 10,
        };
        let at_apply = PacketsAt::new([(ids[0], 1000)]);
        let mut now = CounterSnapshot::default();
        now.backends.insert(ids[0], c(1000 + 30));
        now.backends.insert(ids[1], c(70));
        now.backends.insert(ids[2], c(0));
        let ctx = context(2, 1.0, 1.0);
        let s = build(&ctx, &desired, &now, &at_apply);
        let b = &s.vips[0].backends;
        assert_eq!(
            (
                b[0].expected_share_ratio,
                b[1].expected_share_ratio,
                b[2].expected_share_ratio
            ),
            (0.25, 0.75, 0.0)
        );
        assert!((b[0].table_share_ratio - 0.25).abs() < 0.01 && b[2].table_share_ratio == 0.0);
        assert_eq!(b[0].observed_share_ratio, Some(0.3));
        assert_eq!(b[1].observed_share_ratio, Some(0.7));
        assert_eq!((b[0].packets, b[0].packets_since_apply), (1030, 30));
        let table = render_table(&s, false);
        assert!(table.contains("web (198.18.100.1:80/tcp)   a"), "{table}");
    }

    #[test]
    fn the_fleet_line_says_whether_the_store_is_reached() {
        let mut f = FleetNodeStatus {
            fleet: "edge".into(),
            node: "lb1".into(),
            endpoints: vec!["https://198.18.0.5:2379".into()],
            connected: true,
            since_unix_seconds: 100.0,
            error: None,
            serving: Some(5),
            target: Some(5),
            last: Some("5 baked".into()),
            held: None,
            diverged: None,
        };
        assert_eq!(
            f.line(130.0),
            "fleet: edge as node lb1, connected; serving fleet revision 5; last 5 baked"
        );
        f.connected = false;
        f.error = Some("request timed out".into());
        f.target = Some(6);
        f.diverged = Some("live revision 9 was made outside the fleet".into());
        assert_eq!(
            f.line(130.0),
            "fleet: edge as node lb1, CUT OFF from the store for 30 s (request timed out); \
             forwarding on the live revision; serving fleet revision 5 (target 6); last 5 baked; \
             DIVERGED: live revision 9 was made outside the fleet"
        );
    }

    #[test]
    fn no_traffic_means_no_observed_share() {
        let config = crate::config::parse(
            "interface = \"eth0\"\n[[vip]]\nname = \"w\"\naddress = \"2001:db8::1\"\nport = 0\nprotocol = \"udp\"\n\
             [[vip.backend]]\nname = \"a\"\naddress = \"2001:db8::11\"\nmac = \"02:00:00:00:00:11\"\n",
            "t.toml",
        )
        .unwrap();
        let desired = crate::state::desired(&config, &Default::default()).unwrap();
        let ctx = context(1, 0.0, 0.0);
        let s = build(
            &ctx,
            &desired,
            &CounterSnapshot::default(),
            &PacketsAt::default(),
        );
        assert_eq!(s.vips[0].backends[0].observed_share_ratio, None);
        assert!(render_table(&s, false).contains("w ([2001:db8::1]:*/udp)"));
    }

    #[test]
    fn flows_per_backend_stale_entries_and_events() {
        let text = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n\
            [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\n\
            [[vip.backend]]\nname = \"b\"\naddress = \"198.18.0.12\"\nmac = \"02:00:00:00:00:12\"\nstate = \"draining\"\n";
        let config = crate::config::parse(text, "t.toml").unwrap();
        let desired = crate::state::desired(&config, &Default::default()).unwrap();
        let ids = desired.vips[0].backend_ids.clone();
        let gone = (0..).find(|id| !ids.contains(id)).unwrap();
        let scan = ConnScan {
            entries: 100,
            capacity: 1000,
            by_backend: BTreeMap::from([(ids[0], 60), (ids[1], 30), (gone, 10)]),
            scanned_at_unix_seconds: 7.0,
            seconds: 0.004,
        };
        let now = CounterSnapshot {
            events: (0..EVENT_NAMES.len() as u64).map(|i| i * 10).collect(),
            ..Default::default()
        };
        let mut ctx = context(1, 1.0, 10.0);
        ctx.conn_scan = Some(&scan);
        let s = build(&ctx, &desired, &now, &PacketsAt::default());
        let b = &s.vips[0].backends;
        assert_eq!((b[0].flows, b[1].flows), (Some(60), Some(30)));
        let c = s.conn_table.as_ref().expect("a scan was given");
        assert_eq!((c.entries, c.capacity, c.stale_entries), (100, 1000, 10));
        assert_eq!(s.events["conn_hit"], 0);
        assert_eq!(s.events["conn_miss"], 10);
        assert_eq!(s.events["vlan"], 100);
        assert_eq!(s.events.len(), EVENT_NAMES.len());

        let table = render_table(&s, false);
        let draining = table
            .lines()
            .find(|l| l.contains(" b ") && l.contains("draining"))
            .unwrap_or_else(|| panic!("no row for b:\n{table}"));
        assert!(draining.trim_end().ends_with("30"), "{draining}");
        assert!(
            table.contains(
                "connection table: 100 of 1000 flows (10.0%), 10 stale, counted 3s ago in 4.0 ms; \
                 hits 0, misses 10, re-steered 20"
            ),
            "{table}"
        );

        // Before the first scan: no flows and no conn-table line.
        ctx.conn_scan = None;
        let s = build(&ctx, &desired, &now, &PacketsAt::default());
        assert_eq!((s.vips[0].backends[1].flows, &s.conn_table), (None, &None));
        assert!(!render_table(&s, false).contains("connection table"));
    }

    #[test]
    fn a_document_without_the_new_fields_still_reads() {
        let config = crate::config::parse(
            "interface = \"eth0\"\n[[vip]]\nname = \"w\"\naddress = \"198.18.100.2\"\nport = 80\nprotocol = \"tcp\"\n\
             [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\n",
            "t.toml",
        )
        .unwrap();
        let desired = crate::state::desired(&config, &Default::default()).unwrap();
        let ctx = context(1, 0.0, 0.0);
        let s = build(
            &ctx,
            &desired,
            &CounterSnapshot::default(),
            &PacketsAt::default(),
        );
        let mut json = serde_json::to_value(&s).unwrap();
        json.as_object_mut().unwrap().remove("events");
        json.as_object_mut().unwrap().remove("conn_table");
        json["vips"][0]["backends"][0]
            .as_object_mut()
            .unwrap()
            .remove("flows");
        let back: Status = serde_json::from_value(json).expect("an older document parses");
        assert_eq!(back, s);
    }
}
