//! The daemon's state machine: the loaded data plane, what it holds, the
//! revisions, and the counters at the last apply. Split by job:
//!
//! - `apply`: plan a candidate, and the one apply path every change takes
//!   (checks, write, record, bake, audit); adoption of pinned maps;
//! - `history`: a rollback to a recorded revision;
//! - `collect`: the once-a-second tick (counters, detector) and the status;
//! - `bake`: judging a new revision, and the automatic rollback;
//! - `rollback`: the live revision and what a rollback returns to, their
//!   texts kept as the store compressed them;
//! - `drift`: the kernel's maps compared with what was applied, and repair;
//! - `health`: health checks following applies, and patched tables;
//! - `announcing` (the state) and `announce` (fed from the controller):
//!   what the node announces to its routers, and its drain.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use xlb_core::api::{ApiError, ErrorKind, Response};
use xlb_core::bake::{BakeState, BakeStatus};
use xlb_core::change::LiveRevision;
use xlb_core::clock::unix_now;
use xlb_core::config;
use xlb_core::counters::PacketsAt;
use xlb_core::detect::Detector;
use xlb_core::drift::Finding;
use xlb_core::reload::ConfigFileStatus;
use xlb_core::state::{self, Desired};
use xlb_dataplane::{ConnScan, Dataplane, DataplaneError};

use crate::daemon::audit::{AuditLog, Event};
use crate::daemon::metrics::Metrics;
use crate::store::{Store, StoreError};
use rollback::Kept;

mod announce;
mod announcing;
mod apply;
mod bake;
mod collect;
mod drift;
mod health;
mod history;
mod rollback;

pub use announcing::{Announcing, DRAIN_FILE, DrainError};
pub use apply::Applied;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// Keys only a restart takes (`xlb_core::config::keys`): the
    /// interface, the pinned connection table's size, the metrics address.
    #[error("{file}: {}", changes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    RestartOnly {
        file: String,
        changes: Vec<config::keys::RestartChange>,
    },
    #[error("{0}")]
    State(#[from] state::StateError),
    #[error("{0}")]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    Plan(#[from] xlb_core::plan::PlanError),
    /// A safety check refused the change (exit 1).
    #[error("refused by the safety checks (the same command with --force applies it anyway):\n{0}")]
    Refused(String),
    /// A reviewed plan no longer applies (exit 1).
    #[error(
        "stale plan: it was made against revision {planned}, the live revision is {live}; plan again"
    )]
    Stale { planned: u64, live: u64 },
    #[error("{0}")]
    NoRevision(String),
    /// The tables were written but the revision could not be recorded
    /// (disk full, read-only directory): the tables were put back, nothing
    /// is applied (exit 4).
    #[error("revision {number} is not applied: it could not be recorded: {cause}; {restored}")]
    NotRecorded {
        number: u64,
        cause: String,
        /// What became of the tables ("the tables are back at revision 3").
        restored: String,
    },
}

impl ApplyError {
    /// Bad input (the operator's to fix) or a failure of the daemon/kernel.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::Config(_)
                | Self::RestartOnly { .. }
                | Self::State(_)
                | Self::Plan(_)
                | Self::NoRevision(_)
        )
    }

    /// The control socket's answer: refused (exit 1), bad input (2) or a
    /// failure of the daemon or the kernel (4).
    pub fn response(&self) -> Response {
        let kind = if self.is_refusal() {
            ErrorKind::Refused
        } else if self.is_bad_input() {
            ErrorKind::BadInput
        } else {
            ErrorKind::Internal
        };
        Response::Error(ApiError {
            kind,
            message: self.to_string(),
        })
    }

    /// Refused by a safety check: the operator may force it.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::Stale { .. })
    }
}

pub struct Controller {
    pub(super) dataplane: Dataplane,
    interface: String,
    host: xlb_dataplane::HostInterface,
    applied: Option<Desired>,
    revision: u64,
    applied_at: SystemTime,
    applied_instant: Instant,
    at_apply: PacketsAt,
    /// The imbalance detector; it keeps each VIP's last report, and makes
    /// the per-backend shares of one when the status document asks.
    detector: Detector,
    drift: BTreeMap<String, Finding>,
    drift_checked_at: BTreeMap<String, f64>,
    /// Where the round-robin drift check goes on next tick (a VIP index).
    drift_cursor: usize,
    metrics: Arc<Metrics>,
    /// Every apply recorded as a numbered revision (the daemon always has
    /// one; benchmarks and tests of the dataplane may run without).
    revisions: Option<Store>,
    /// The revision in force (the target of the next automatic rollback),
    /// its text as the store recorded it.
    current: Option<Kept>,
    /// Its text's cut (hashes of its pieces), which candidates are parsed
    /// against (`candidate`).
    current_cut: Option<config::TextCut>,
    /// What the last apply is rolled back to if its bake fails.
    rollback_target: Option<Kept>,
    bake_policy: BakePolicy,
    bake: Option<BakeStatus>,
    /// Judges a baking revision against capacity shares (see `bake`).
    capacity_detector: Detector,
    audit: Option<AuditLog>,
    /// The last count of the connection table (the daemon scans it every
    /// `CONN_SCAN_PERIOD`, outside this controller's lock).
    conn_scan: Option<ConnScan>,
    /// Health checks: each backend's state and what each VIP's live table
    /// holds (health/); shared with the daemon's check loop.
    health: Arc<std::sync::Mutex<xlb_core::health::Monitor>>,
    /// The `--config` file against the live revision (`restart`): set at
    /// the start and by each SIGHUP, followed by every apply.
    config_file: Option<ConfigFileStatus>,
    /// The address /metrics is served on when it is the config's (None when
    /// `--metrics-address` overrides it: the config's then changes nothing).
    metrics_bound: Option<std::net::SocketAddr>,
    /// What the node announces to its routers (announce.rs).
    announcing: Announcing,
    /// The node's place in its fleet, as the fleet agent last set it
    /// (None without `--fleet`).
    fleet: Option<xlb_core::status::FleetNodeStatus>,
    /// The held-flow replication's counts (daemon/held.rs; None without
    /// `--fleet`).
    held: Option<xlb_core::held::HeldStatus>,
}

/// How long a new revision bakes, and how long a skew must last to roll it
/// back (the shorter of this and the VIP's `hold`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BakePolicy {
    /// 0 turns the bake off.
    pub window_seconds: f64,
    pub hold_seconds: f64,
}

impl Default for BakePolicy {
    fn default() -> Self {
        Self {
            window_seconds: 60.0,
            hold_seconds: 1.0,
        }
    }
}

impl Controller {
    pub fn new(
        dataplane: Dataplane,
        interface: String,
        host: impl Into<xlb_dataplane::HostInterface>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            dataplane,
            interface,
            host: host.into(),
            applied: None,
            revision: 0,
            applied_at: SystemTime::now(),
            applied_instant: Instant::now(),
            at_apply: PacketsAt::default(),
            detector: Detector::shares_on_demand(),
            drift: BTreeMap::new(),
            drift_checked_at: BTreeMap::new(),
            drift_cursor: 0,
            metrics,
            revisions: None,
            current: None,
            current_cut: None,
            rollback_target: None,
            bake_policy: BakePolicy {
                window_seconds: 0.0,
                hold_seconds: 0.0,
            },
            bake: None,
            capacity_detector: Detector::verdicts_only(),
            audit: None,
            conn_scan: None,
            health: Default::default(),
            config_file: None,
            metrics_bound: None,
            announcing: Announcing::default(),
            fleet: None,
            held: None,
        }
    }

    /// Append every plan, apply, refusal and rollback to `log`.
    pub fn with_audit(mut self, log: AuditLog) -> Self {
        self.audit = Some(log);
        self
    }

    fn audit(
        &mut self,
        event: &str,
        user: &str,
        revision: Option<u64>,
        file: Option<&str>,
        config_hash: Option<String>,
        detail: Option<String>,
    ) {
        if let Some(log) = self.audit.as_mut() {
            log.record(&Event {
                ts_unix_seconds: unix_now(),
                event: event.to_string(),
                user: user.to_string(),
                revision,
                file: file.map(str::to_string),
                config_hash,
                detail,
            });
        }
    }

    /// Bake every apply (that replaces a revision) under `policy`.
    pub fn with_bake(mut self, policy: BakePolicy) -> Self {
        self.bake_policy = policy;
        self
    }

    pub fn bake(&self) -> Option<&BakeStatus> {
        self.bake.as_ref()
    }

    /// A revision is baking now.
    pub fn baking(&self) -> bool {
        self.bake
            .as_ref()
            .is_some_and(|b| b.state == BakeState::Baking)
    }

    /// Record applies in `store`; revision numbers continue from it.
    pub fn with_revisions(mut self, store: Store) -> Self {
        self.revisions = Some(store);
        self
    }

    pub fn revisions(&self) -> Option<&Store> {
        self.revisions.as_ref()
    }

    /// The desired state of the live revision (None before the first
    /// apply).
    pub fn applied(&self) -> Option<&Desired> {
        self.applied.as_ref()
    }

    /// A handle to the connection table, to count it without this lock.
    pub fn conn_table(&self) -> xlb_dataplane::ConnTable {
        self.dataplane.conn_table()
    }

    /// The trace switch and ring (daemon/trace.rs), used without this lock.
    pub fn tracer(&self) -> Option<xlb_dataplane::SharedTracer> {
        self.dataplane.tracer()
    }

    /// Keep a connection-table count for the status and /metrics, and end
    /// the retention of removed backends it finds no entry for, or that
    /// were retained long enough (`xlb_core::state::retain`).
    pub fn record_conn_scan(&mut self, scan: ConnScan) {
        if let Some(applied) = self.applied.as_mut() {
            let started = scan.scanned_at_unix_seconds - scan.seconds;
            let retained = applied.allocation.retained();
            let ended = applied.allocation.expire_retained(
                &scan.by_backend,
                started,
                scan.scanned_at_unix_seconds,
            );
            if !ended.is_empty() {
                let names: Vec<String> = retained
                    .iter()
                    .filter(|r| ended.contains(&r.id))
                    .map(|r| format!("{}/{} (id {})", r.vip, r.name, r.id))
                    .collect();
                log::info!(
                    "removed backends {}: retention over (no connection entry names them, or {} s passed); retired",
                    names.join(", "),
                    state::RETENTION_SECONDS
                );
                self.dataplane.retire_retained(&ended);
            }
        }
        self.conn_scan = Some(scan);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// /metrics is served on `address`, from the config (not from
    /// `--metrics-address`): a config with another address needs a restart.
    pub fn with_metrics_bound(mut self, address: std::net::SocketAddr) -> Self {
        self.metrics_bound = Some(address);
        self
    }

    /// What the start or the last SIGHUP found of the `--config` file.
    pub fn config_file(&self) -> Option<&ConfigFileStatus> {
        self.config_file.as_ref()
    }

    /// Say what the `--config` file is against the live revision (status,
    /// `xlb_config_file_differs`); logged when it differs.
    pub fn set_config_file(&mut self, status: ConfigFileStatus) {
        if let Some(line) = status.line() {
            log::warn!("{line}");
        }
        self.config_file = Some(status);
    }

    /// The live revision (None before the first apply), its text
    /// decompressed: `xlb drain` edits it.
    pub fn live_revision(&self) -> Result<Option<LiveRevision>, StoreError> {
        self.current.as_ref().map(Kept::revision).transpose()
    }

    /// The live revision's number (None before the first apply).
    pub fn live_number(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.number)
    }

    /// Parse `text` for a change, against the live revision's text and the
    /// config it applied (`Candidate::parse_against`: only changed VIPs are
    /// parsed).
    pub fn candidate(
        &self,
        text: impl Into<String>,
        file: impl Into<String>,
        origin: xlb_core::change::Origin,
    ) -> Result<xlb_core::change::Candidate, config::ConfigError> {
        let previous = match (&self.current_cut, &self.applied) {
            (Some(cut), Some(applied)) => Some((cut, &applied.config)),
            _ => None,
        };
        xlb_core::change::Candidate::parse_against(text, file, origin, previous)
    }
}
