//! The daemon's state machine: the loaded dataplane, what it holds, and the
//! counters at the last apply. Every change goes through `apply`, which
//! validates first and writes nothing unless everything validated. `tick`,
//! once a second, runs the imbalance detector and the drift check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::daemon::metrics::Metrics;
use crate::store::Store;
use xlb_core::api::Repaired;
use xlb_core::bake::{BakeState, BakeStatus, Decision};
use xlb_core::clock::unix_now;
use xlb_core::config::{self, Config};
use xlb_core::detect::{BackendSample, Cumulative, Detector, VipReport, VipSample};
use xlb_core::drift::{self, Finding};
use xlb_core::revision::{Kind, Outcome, Revision};
use xlb_core::state::{self, Allocation, Desired};
use xlb_core::status::{self, Status, StatusContext};
use xlb_dataplane::{ConnScan, CounterSnapshot, Dataplane, DataplaneError};

mod health;

/// Table slots the drift check reads per tick at most (well under a
/// millisecond of reading and hashing): with many large tables it walks them
/// round-robin instead of all each second. 1,000 VIPs of 6,421 slots take 25
/// ticks; 4 VIPs of 65,537 slots take 1.
const DRIFT_SLOTS_PER_TICK: usize = 1 << 18;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error(
        "{file}: interface: the running daemon is attached to {running}; a config for {wanted} needs a restart"
    )]
    InterfaceChange {
        file: String,
        running: String,
        wanted: String,
    },
    /// The connection table is sized when the program loads.
    #[error(
        "{file}: conn_table_size: {wanted} needs a restart after `xlb detach` (the pinned connection table has {running} entries)"
    )]
    ConnTableSizeChange {
        file: String,
        running: u32,
        wanted: u32,
    },
    #[error("{0}")]
    State(#[from] state::StateError),
    #[error("{0}")]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    Plan(#[from] xlb_core::plan::PlanError),
    /// A safety check refused the change (exit 1).
    #[error("refused by the safety checks (apply with --force to override):\n{0}")]
    Refused(String),
    /// A reviewed plan no longer applies (exit 1).
    #[error(
        "stale plan: it was made against revision {planned}, the live revision is {live}; plan again"
    )]
    Stale { planned: u64, live: u64 },
    #[error("{0}")]
    NoRevision(String),
}

impl ApplyError {
    /// Bad input (the operator's to fix) or a failure of the daemon/kernel.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::Config(_)
                | Self::InterfaceChange { .. }
                | Self::ConnTableSizeChange { .. }
                | Self::State(_)
                | Self::Plan(_)
                | Self::NoRevision(_)
        )
    }

    /// Refused by a safety check: the operator may force it.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::Stale { .. })
    }
}

pub struct Controller {
    dataplane: Dataplane,
    interface: String,
    host: xlb_dataplane::HostInterface,
    applied: Option<Desired>,
    revision: u64,
    applied_at: SystemTime,
    applied_instant: Instant,
    at_apply: CounterSnapshot,
    detector: Detector,
    reports: BTreeMap<String, VipReport>,
    drift: BTreeMap<String, Finding>,
    drift_checked_at: BTreeMap<String, f64>,
    /// Where the round-robin drift check goes on next tick (a VIP index).
    drift_cursor: usize,
    metrics: Arc<Metrics>,
    /// Every apply recorded as a numbered revision (the daemon always has
    /// one; benchmarks and tests of the dataplane may run without).
    revisions: Option<Store>,
    /// The revision in force: number, config text, file name (the target
    /// of the next automatic rollback).
    current: Option<(u64, String, String)>,
    /// What the last apply is rolled back to if its bake fails.
    rollback_target: Option<(u64, String, String)>,
    bake_policy: BakePolicy,
    bake: Option<BakeStatus>,
    /// Judges a baking revision against capacity shares (see `bake`).
    capacity_detector: Detector,
    /// The plan of the apply being recorded.
    next_plan: Option<serde_json::Value>,
    audit: Option<crate::daemon::audit::AuditLog>,
    /// The last count of the connection table (the daemon scans it every
    /// `CONN_SCAN_PERIOD`, outside this controller's lock).
    conn_scan: Option<ConnScan>,
    /// Health checks: each backend's state and what each VIP's live table
    /// holds (health/); shared with the daemon's check loop.
    health: Arc<std::sync::Mutex<xlb_core::health::Monitor>>,
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

/// Who asked for a change and why, for the revision record.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    pub user: String,
    pub message: Option<String>,
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
            at_apply: CounterSnapshot::default(),
            detector: Detector::new(),
            reports: BTreeMap::new(),
            drift: BTreeMap::new(),
            drift_checked_at: BTreeMap::new(),
            drift_cursor: 0,
            metrics,
            revisions: None,
            current: None,
            rollback_target: None,
            bake_policy: BakePolicy {
                window_seconds: 0.0,
                hold_seconds: 0.0,
            },
            bake: None,
            capacity_detector: Detector::new(),
            next_plan: None,
            audit: None,
            conn_scan: None,
            health: Default::default(),
        }
    }

    /// Append every plan, apply, refusal and rollback to `log`.
    pub fn with_audit(mut self, log: crate::daemon::audit::AuditLog) -> Self {
        self.audit = Some(log);
        self
    }

    fn audit(
        &mut self,
        event: &str,
        user: &str,
        revision: Option<u64>,
        file: Option<&str>,
        text: Option<&str>,
        detail: Option<String>,
    ) {
        if let Some(log) = self.audit.as_mut() {
            log.record(&crate::daemon::audit::Event {
                ts_unix_seconds: unix_now(),
                event: event.to_string(),
                user: user.to_string(),
                revision,
                file: file.map(str::to_string),
                config_hash: text.map(xlb_core::revision::config_hash),
                detail,
            });
        }
    }

    /// Re-apply revision `to` (default: the live revision before the current
    /// one) as a new revision. No safety checks: it goes back to a state that
    /// served before.
    pub fn rollback(&mut self, to: Option<u64>, origin: &Origin) -> Result<u64, ApplyError> {
        let Some(store) = self.revisions.as_ref() else {
            return Err(ApplyError::NoRevision(
                "this daemon keeps no revisions".into(),
            ));
        };
        let list = store
            .list()
            .map_err(|e| ApplyError::NoRevision(e.to_string()))?;
        let current = self.revision;
        let target = match to {
            Some(n) => list.iter().find(|r| r.number == n).ok_or_else(|| {
                ApplyError::NoRevision(format!("no revision {n} is kept (see `xlb history`)"))
            })?,
            None => list
                .iter()
                .rev()
                .find(|r| r.number < current && r.outcome.is_live())
                .ok_or_else(|| {
                    ApplyError::NoRevision(format!(
                        "no earlier live revision than {current} to roll back to"
                    ))
                })?,
        };
        if target.number == current {
            return Err(ApplyError::NoRevision(format!(
                "revision {current} is the live one already"
            )));
        }
        let (number, text, file) = (
            target.number,
            target.config_text.clone(),
            target.config_file.clone(),
        );
        let new = self.apply_recorded(&text, &file, origin, Kind::Rollback { to: number })?;
        if let Some(store) = self.revisions.as_mut()
            && let Ok(Some(old)) = store.get(current)
            && !old.outcome.is_final()
        {
            let _ = store.update_outcome(
                current,
                Outcome::RolledBack {
                    at_unix_seconds: unix_now(),
                    by: new,
                    reason: origin
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("rolled back by {}", origin.user)),
                },
            );
        }
        // A manual rollback ends a bake.
        self.bake = None;
        self.audit(
            "rollback",
            &origin.user.clone(),
            Some(new),
            Some(&file),
            Some(&text),
            Some(format!("to revision {number}")),
        );
        Ok(new)
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

    /// The plan of changing from the applied config to `text`, against the
    /// live revision.
    pub fn plan_text(&self, text: &str, file: &str) -> Result<xlb_core::plan::Plan, ApplyError> {
        let candidate = config::parse(text, file)?;
        let base = match &self.applied {
            Some(d) => d.config.clone(),
            // Nothing applied yet: only the VIPs are new.
            None => Config {
                interface: self.interface.clone(),
                vips: vec![],
                ..candidate.clone()
            },
        };
        let mut plan = xlb_core::plan::plan(&base, &candidate)?;
        plan.base_revision = Some(self.revision);
        Ok(plan)
    }

    /// Plan for an operator, and put it in the audit log.
    pub fn plan_audited(
        &mut self,
        text: &str,
        file: &str,
        user: &str,
    ) -> Result<xlb_core::plan::Plan, ApplyError> {
        let plan = self.plan_text(text, file)?;
        let detail = if plan.refused() {
            format!("refused: {} safety findings", plan.lints.len())
        } else if plan.changed {
            "changes, no findings".to_string()
        } else {
            "no changes".to_string()
        };
        self.audit(
            "plan",
            user,
            plan.base_revision,
            Some(file),
            Some(text),
            Some(detail),
        );
        Ok(plan)
    }

    /// An operator's apply: refused when `expect_revision` (a reviewed
    /// plan's base) is not the live revision, or when the safety checks
    /// refuse it and it is not forced; else applied, baked and recorded with
    /// its plan.
    pub fn apply_checked(
        &mut self,
        text: &str,
        file: &str,
        origin: &Origin,
        force: bool,
        expect_revision: Option<u64>,
    ) -> Result<u64, ApplyError> {
        self.apply_checked_as(text, file, origin, force, expect_revision, Kind::Apply)
            .map(|(revision, _)| revision)
    }

    /// `apply_checked`, recorded as `kind` (an operator's apply, or an
    /// edit of the live config: `xlb drain`), with the plan it applied.
    pub fn apply_checked_as(
        &mut self,
        text: &str,
        file: &str,
        origin: &Origin,
        force: bool,
        expect_revision: Option<u64>,
        kind: Kind,
    ) -> Result<(u64, xlb_core::plan::Plan), ApplyError> {
        if let Some(planned) = expect_revision
            && planned != self.revision
        {
            let e = ApplyError::Stale {
                planned,
                live: self.revision,
            };
            self.audit(
                "refused",
                &origin.user,
                None,
                Some(file),
                Some(text),
                Some(e.to_string()),
            );
            return Err(e);
        }
        let plan = self.plan_text(text, file)?;
        if plan.refused() && !force {
            let lines: Vec<String> = plan
                .lints
                .iter()
                .map(|l| format!("  {}: {}", l.vip, l.message))
                .collect();
            let e = ApplyError::Refused(lines.join("\n"));
            self.audit(
                "refused",
                &origin.user,
                None,
                Some(file),
                Some(text),
                Some(e.to_string()),
            );
            return Err(e);
        }
        if plan.refused() {
            log::warn!(
                "{file}: safety checks overridden with --force by {}",
                origin.user
            );
        }
        self.next_plan = serde_json::to_value(&plan).ok();
        let edit = match &kind {
            Kind::Edit { command } => Some(command.clone()),
            _ => None,
        };
        let result = self.apply_recorded(text, file, origin, kind);
        let (event, revision, detail) = match &result {
            Ok(n) => (
                "apply",
                Some(*n),
                match (force && plan.refused(), &origin.message) {
                    (true, m) => Some(format!(
                        "forced past {} safety findings; {}",
                        plan.lints.len(),
                        m.as_deref().unwrap_or("")
                    )),
                    (false, m) => m.clone(),
                },
            ),
            Err(e) => ("failed", None, Some(e.to_string())),
        };
        // An edit says which: `drain web b2; <message>`.
        let detail = match (edit, detail) {
            (Some(c), Some(d)) => Some(format!("{c}; {d}")),
            (Some(c), None) => Some(c),
            (None, d) => d,
        };
        self.audit(
            event,
            &origin.user,
            revision,
            Some(file),
            Some(text),
            detail,
        );
        result.map(|revision| (revision, plan))
    }

    /// The live revision: its number, config text and file name (None
    /// before the first apply). `xlb drain` edits this text.
    pub fn live_revision(&self) -> Option<(u64, &str, &str)> {
        self.current
            .as_ref()
            .map(|(n, text, file)| (*n, text.as_str(), file.as_str()))
    }

    /// Validate config text, apply it and record it as a revision with its
    /// outcome. Bad input is refused before anything is written or recorded;
    /// a kernel failure is recorded as a failed revision.
    pub fn apply_recorded(
        &mut self,
        text: &str,
        file: &str,
        origin: &Origin,
        kind: Kind,
    ) -> Result<u64, ApplyError> {
        let config = config::parse(text, file)?;
        let number = self
            .revisions
            .as_ref()
            .map_or(self.revision + 1, |s| s.next_number());
        let result = self.apply_numbered(config, file, number);
        let mut baking = false;
        if result.is_ok() {
            let previous = self
                .current
                .replace((number, text.to_string(), file.to_string()));
            // An operator's apply (or edit) that replaces a revision bakes; a rollback
            // (manual or automatic) and the startup config do not.
            if let (Kind::Apply | Kind::Edit { .. }, Some(previous)) = (&kind, previous)
                && self.bake_policy.window_seconds > 0.0
            {
                let now = unix_now();
                self.bake = Some(BakeStatus {
                    revision: number,
                    state: BakeState::Baking,
                    started_at_unix_seconds: now,
                    until_unix_seconds: now + self.bake_policy.window_seconds,
                    rollback_to: previous.0,
                    reason: None,
                    rollback_revision: None,
                });
                self.rollback_target = Some(previous);
                self.capacity_detector = Detector::new();
                baking = true;
            }
        }
        if let Some(store) = self.revisions.as_mut() {
            let outcome = match &result {
                Ok(_) if baking => Outcome::Baking,
                Ok(_) => Outcome::Applied,
                Err(e) if e.is_bad_input() => return result,
                Err(e) => Outcome::Failed {
                    error: e.to_string(),
                },
            };
            let rev = Revision {
                schema_version: xlb_core::revision::SCHEMA_VERSION,
                number,
                created_at_unix_seconds: unix_now(),
                user: origin.user.clone(),
                message: origin.message.clone(),
                config_file: file.to_string(),
                config_text: text.to_string(),
                config_hash: xlb_core::revision::config_hash(text),
                kind,
                plan: self.next_plan.take(),
                outcome,
            };
            if let Err(e) = store.record(&rev) {
                // The change is in force; losing its record must be loud.
                log::error!("revision {number} is applied but could not be recorded: {e}");
            }
        }
        result
    }

    /// A handle to the connection table, to count it without this lock.
    pub fn conn_table(&self) -> xlb_dataplane::ConnTable {
        self.dataplane.conn_table()
    }

    /// Keep a connection-table count for the status and /metrics.
    pub fn record_conn_scan(&mut self, scan: ConnScan) {
        self.conn_scan = Some(scan);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Take over what an earlier daemon left in the pinned maps: the applied
    /// state becomes `text`'s (the live revision `number`, when it is one)
    /// under the ids the maps hold (`adopt::adopt`), so the next apply moves
    /// only what changes. Where the maps differ from it (a daemon killed in
    /// the middle of an apply), they are rewritten to it first, each table
    /// swapped in whole. Returns those differences.
    pub fn adopt(
        &mut self,
        text: &str,
        file: &str,
        number: Option<u64>,
    ) -> Result<Vec<String>, ApplyError> {
        let config = config::parse(text, file)?;
        let live = self.dataplane.read_live()?;
        let adopted = xlb_core::adopt::adopt(&config, &self.host, &live)?;
        if !adopted.differences.is_empty() {
            for d in &adopted.differences {
                log::warn!("adopting {file}: the pinned maps differ: {d}");
            }
            self.dataplane
                .reconcile(&self.host, &adopted.desired, &adopted.stray)?;
        }
        self.dataplane.adopt_tables(&adopted.desired)?;
        self.at_apply = self.snapshot(&adopted.desired)?;
        self.drift.clear();
        self.drift_checked_at.clear();
        self.applied = Some(adopted.desired);
        self.health_adopt(adopted.health);
        if let Some(n) = number {
            self.revision = n;
            self.current = Some((n, text.to_string(), file.to_string()));
        }
        self.applied_at = SystemTime::now();
        self.applied_instant = Instant::now();
        Ok(adopted.differences)
    }

    /// Validate config text and apply it. On any error nothing is written.
    pub fn apply_text(&mut self, text: &str, file: &str) -> Result<u64, ApplyError> {
        let config = config::parse(text, file)?;
        self.apply(config, file)
    }

    pub fn apply(&mut self, config: Config, file: &str) -> Result<u64, ApplyError> {
        self.apply_numbered(config, file, self.revision + 1)
    }

    fn apply_numbered(
        &mut self,
        config: Config,
        file: &str,
        number: u64,
    ) -> Result<u64, ApplyError> {
        if config.interface != self.interface {
            return Err(ApplyError::InterfaceChange {
                file: file.to_string(),
                running: self.interface.clone(),
                wanted: config.interface,
            });
        }
        if config.conn_table_size != self.dataplane.conn_table_size() {
            return Err(ApplyError::ConnTableSizeChange {
                file: file.to_string(),
                running: self.dataplane.conn_table_size(),
                wanted: config.conn_table_size,
            });
        }
        let empty = Allocation::default();
        let previous = self.applied.as_ref();
        let started = Instant::now();
        let mut desired = state::desired(&config, previous.map_or(&empty, |p| &p.allocation))?;
        // Backends the checks call down stay out of the new tables.
        let memberships =
            xlb_core::health::patch_desired(&health::lock(&self.health), &mut desired);
        self.metrics
            .maglev_build
            .observe(started.elapsed().as_secs_f64());
        let swaps = self.dataplane.apply(self.host, &desired, previous)?;
        for seconds in swaps {
            self.metrics.table_swap.observe(seconds);
        }
        self.at_apply = self.snapshot(&desired)?;
        // What the drift check compared is history now.
        self.drift.clear();
        self.drift_checked_at.clear();
        self.applied = Some(desired);
        self.health_follow(memberships);
        self.revision = number;
        self.applied_at = SystemTime::now();
        self.applied_instant = Instant::now();
        log::info!("applied revision {} from {file}", self.revision);
        Ok(self.revision)
    }

    fn snapshot(&self, desired: &Desired) -> Result<CounterSnapshot, DataplaneError> {
        self.dataplane.snapshot(
            desired.vips.iter().map(|v| v.id),
            desired
                .vips
                .iter()
                .flat_map(|v| v.backend_ids.iter().copied()),
        )
    }

    /// One collector pass: check drift (round-robin within a budget), then
    /// feed the detector the counters. Called once a second.
    pub fn tick(&mut self, now_unix_seconds: f64) -> Result<(), DataplaneError> {
        let started = Instant::now();
        if self.applied.is_none() {
            return Ok(());
        }
        // A failed health table write is tried again here.
        self.health_sync();
        self.check_drift(now_unix_seconds, DRIFT_SLOTS_PER_TICK)?;
        let desired = self.applied.as_ref().expect("checked above");
        // A backend health took out of the table expects no share.
        let health = health::lock(&self.health);
        // Counters straight from the mapped arrays: no snapshot map here,
        // this runs for every backend every second.
        let dataplane = &self.dataplane;
        let samples: Vec<VipSample<'_>> = desired
            .vips
            .iter()
            .map(|v| {
                let serving = health.live(&v.config.name);
                let weight_sum: u64 = v
                    .config
                    .table_backends()
                    .filter(|b| serving.serves(&b.name))
                    .map(|b| b.weight as u64)
                    .sum();
                let live = self
                    .drift
                    .get(&v.config.name)
                    .and_then(|f| f.live_table_shares.as_ref());
                VipSample {
                    vip: &v.config.name,
                    thresholds: &v.config.imbalance,
                    backends: v
                        .config
                        .backends
                        .iter()
                        .zip(&v.backend_ids)
                        .zip(&v.table_shares)
                        .map(|((b, id), &applied_share)| {
                            let active =
                                b.state == config::BackendState::Active && serving.serves(&b.name);
                            let c = dataplane.backend_counters(*id);
                            BackendSample {
                                name: &b.name,
                                active,
                                expected_share: if active && weight_sum > 0 {
                                    b.weight as f64 / weight_sum as f64
                                } else {
                                    0.0
                                },
                                table_share: match live {
                                    Some(live) => live.get(&b.name).copied().unwrap_or(0.0),
                                    None => applied_share,
                                },
                                counters: Cumulative {
                                    new_flows: c.new_flows,
                                    packets: c.packets,
                                    bytes: c.bytes,
                                },
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        drop(health);
        let reports = self.detector.observe(now_unix_seconds, &samples);
        let baking = self
            .bake
            .as_ref()
            .is_some_and(|b| b.state == BakeState::Baking);
        let capacity_reports = if baking {
            capacity_view(
                &mut self.capacity_detector,
                desired,
                self.bake_policy,
                now_unix_seconds,
                &samples,
            )
        } else {
            Vec::new()
        };
        let decision = match &self.bake {
            Some(bake) => {
                xlb_core::bake::decide(bake, now_unix_seconds, &reports, &capacity_reports)
            }
            None => Decision::Wait,
        };
        self.reports = reports.into_iter().map(|r| (r.vip.clone(), r)).collect();
        self.metrics
            .collector
            .observe(started.elapsed().as_secs_f64());
        match decision {
            Decision::Wait => {}
            Decision::Baked => self.finish_bake(),
            Decision::RollBack(reason) => self.roll_back(&reason),
        }
        Ok(())
    }

    fn finish_bake(&mut self) {
        let Some(bake) = self.bake.as_mut() else {
            return;
        };
        bake.state = BakeState::Baked;
        log::info!("revision {} baked", bake.revision);
        let number = bake.revision;
        if let Some(store) = self.revisions.as_mut()
            && let Err(e) = store.update_outcome(number, Outcome::Baked)
        {
            log::error!("recording that revision {number} baked: {e}");
        }
    }

    /// Put the previous revision back, as a new revision, and record why.
    fn roll_back(&mut self, reason: &str) {
        let (Some(bake), Some((to, text, file))) =
            (self.bake.clone(), self.rollback_target.clone())
        else {
            return;
        };
        log::warn!(
            "revision {}: automatic rollback to revision {to}: {reason}",
            bake.revision
        );
        let origin = Origin {
            user: "xlb".into(),
            message: Some(format!("automatic rollback of revision {}", bake.revision)),
        };
        let kind = Kind::AutomaticRollback {
            to,
            reason: reason.to_string(),
        };
        match self.apply_recorded(&text, &file, &origin, kind) {
            Ok(new) => {
                self.metrics.automatic_rollbacks.inc();
                self.audit(
                    "automatic_rollback",
                    "xlb",
                    Some(new),
                    Some(&file),
                    Some(&text),
                    Some(format!("revision {} -> {to}: {reason}", bake.revision)),
                );
                if let Some(store) = self.revisions.as_mut()
                    && let Err(e) = store.update_outcome(
                        bake.revision,
                        Outcome::RolledBack {
                            at_unix_seconds: unix_now(),
                            by: new,
                            reason: reason.to_string(),
                        },
                    )
                {
                    log::error!("recording the rollback of revision {}: {e}", bake.revision);
                }
                self.bake = Some(BakeStatus {
                    state: BakeState::RolledBack,
                    reason: Some(reason.to_string()),
                    rollback_revision: Some(new),
                    ..bake
                });
                self.rollback_target = None;
            }
            Err(e) => log::error!(
                "automatic rollback of revision {} failed: {e}; still on it",
                bake.revision
            ),
        }
    }

    /// Compare live tables and backend entries with the applied ones, for as
    /// many VIPs as the slot budget allows, continuing where the last call
    /// stopped.
    /// At least one VIP is checked whatever its size.
    fn check_drift(&mut self, now_unix_seconds: f64, slots: usize) -> Result<(), DataplaneError> {
        let Some(desired) = self.applied.as_ref() else {
            return Ok(());
        };
        let n = desired.vips.len();
        let mut budget = slots;
        for checked in 0..n {
            let vip = &desired.vips[self.drift_cursor % n];
            if budget < vip.slots.len() && checked > 0 {
                break;
            }
            budget = budget.saturating_sub(vip.slots.len());
            let finding = find_drift(&self.dataplane, vip)?;
            if finding.drifted && !self.drift.get(&vip.config.name).is_some_and(|f| f.drifted) {
                log::warn!(
                    "VIP {}: drift: {}",
                    vip.config.name,
                    finding.reason.as_deref().unwrap_or("")
                );
            }
            self.drift.insert(vip.config.name.clone(), finding);
            self.drift_checked_at
                .insert(vip.config.name.clone(), now_unix_seconds);
            self.drift_cursor = (self.drift_cursor + 1) % n;
        }
        Ok(())
    }

    /// Rewrite every table and backend entry from the applied state, each
    /// table swapped in whole; then check again.
    pub fn repair(&mut self) -> Result<Repaired, DataplaneError> {
        let Some(desired) = self.applied.as_ref() else {
            return Ok(Repaired {
                drifted: vec![],
                rewritten: vec![],
            });
        };
        let now = unix_now();
        // Know the whole picture first, not just the round-robin's part.
        let mut drifted = Vec::new();
        for vip in &desired.vips {
            if find_drift(&self.dataplane, vip)?.drifted {
                drifted.push(vip.config.name.clone());
            }
        }
        self.dataplane.rewrite(desired)?;
        let rewritten = desired.vips.iter().map(|v| v.config.name.clone()).collect();
        log::info!("repair: rewrote every table; drifted were {drifted:?}");
        self.drift.clear();
        self.drift_checked_at.clear();
        self.check_drift(now, usize::MAX)?;
        Ok(Repaired { drifted, rewritten })
    }

    pub fn status(&self) -> Result<Status, DataplaneError> {
        let empty = Desired {
            config: Config::empty(self.interface.clone()),
            vips: vec![],
            echo: vec![],
            allocation: Allocation::default(),
        };
        let desired = self.applied.as_ref().unwrap_or(&empty);
        let now = self.snapshot(desired)?;
        let ctx = StatusContext {
            interface: &self.interface,
            revision: self.revision,
            applied_at_unix_seconds: self
                .applied_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            observed_seconds: self.applied_instant.elapsed().as_secs_f64(),
            generated_at_unix_seconds: unix_now(),
            reports: &self.reports,
            drift: &self.drift,
            drift_checked_at: &self.drift_checked_at,
            bake: self.bake.as_ref(),
            conn_scan: self.conn_scan.as_ref(),
        };
        let mut status = status::build(&ctx, desired, &now, &self.at_apply);
        xlb_core::health::annotate(&mut status, &health::lock(&self.health));
        Ok(status)
    }
}

/// The capacity detector's reports: the same samples, with each active
/// backend's expected share its capacity share, and the shorter hold.
fn capacity_view(
    detector: &mut Detector,
    desired: &Desired,
    policy: BakePolicy,
    now: f64,
    samples: &[VipSample<'_>],
) -> Vec<VipReport> {
    let thresholds: Vec<xlb_core::detect::Thresholds> = desired
        .vips
        .iter()
        .map(|v| xlb_core::detect::Thresholds {
            hold_seconds: v.config.imbalance.hold_seconds.min(policy.hold_seconds),
            ..v.config.imbalance.clone()
        })
        .collect();
    let samples: Vec<VipSample<'_>> = samples
        .iter()
        .zip(&desired.vips)
        .zip(&thresholds)
        .map(|((sample, v), t)| {
            // Over the backends in the live table (health may have taken
            // some out).
            let total: f64 = sample
                .backends
                .iter()
                .zip(&v.config.backends)
                .filter(|(s, _)| s.active)
                .map(|(_, b)| b.capacity)
                .sum();
            VipSample {
                vip: sample.vip,
                thresholds: t,
                backends: sample
                    .backends
                    .iter()
                    .zip(&v.config.backends)
                    .map(|(s, b)| BackendSample {
                        expected_share: if s.active && total > 0.0 {
                            b.capacity / total
                        } else {
                            0.0
                        },
                        ..s.clone()
                    })
                    .collect(),
            }
        })
        .collect();
    detector.observe(now, &samples)
}

/// Read a VIP's live table and backend entries and compare them with what
/// was applied.
fn find_drift(
    dataplane: &Dataplane,
    vip: &xlb_core::state::DesiredVip,
) -> Result<Finding, DataplaneError> {
    let live_table = dataplane.live_table(vip.id)?;
    let live_backends: BTreeMap<u32, lb_common::Backend> = vip
        .backend_ids
        .iter()
        .map(|&id| (id, dataplane.live_backend(id)))
        .collect();
    Ok(drift::check(vip, live_table.as_deref(), &live_backends))
}
