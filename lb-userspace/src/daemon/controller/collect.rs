//! The collector: once a second, the drift check's share, the counters
//! fed to the imbalance detector (and, while a revision bakes, to the
//! capacity detector), and what the bake decides; the status document.

use std::time::{Instant, UNIX_EPOCH};

use xlb_core::bake::{BakeState, Decision};
use xlb_core::clock::unix_now;
use xlb_core::config::{self, Config};
use xlb_core::counters::PacketsAt;
use xlb_core::detect::{BackendSample, Cumulative, VipSample};
use xlb_core::state::{Allocation, Desired};
use xlb_core::status::{self, FleetNodeStatus, Status, StatusContext};
use xlb_dataplane::{CounterSnapshot, DataplaneError};

use super::bake::capacity_view;
use super::drift::DRIFT_SLOTS_PER_TICK;
use super::{Controller, health};

impl Controller {
    pub(super) fn snapshot(&self, desired: &Desired) -> Result<CounterSnapshot, DataplaneError> {
        self.dataplane.snapshot(
            desired.vips.iter().map(|v| v.id),
            desired
                .vips
                .iter()
                .flat_map(|v| v.backend_ids.iter().copied()),
        )
    }

    /// Each backend's packets now: what "since apply" counts from.
    pub(super) fn packets_at(&self, desired: &Desired) -> PacketsAt {
        PacketsAt::new(desired.vips.iter().flat_map(|v| {
            v.backend_ids
                .iter()
                .map(|&id| (id, self.dataplane.backend_counters(id).packets))
        }))
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
        // The detector hands back an unchanged VIP's last report, adjusted
        // in place when no one else holds it: the reports are let go of
        // after the bake's decision (the detector keeps them for status).
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
        drop(reports);
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

    pub fn status(&self) -> Result<Status, DataplaneError> {
        Ok(self.status_with(&mut status::Decisions::default())?.0)
    }

    /// Tell the status snapshots which ids the applied state counts, and
    /// where (`snapshot::Counted`): after every change of `applied`.
    pub(super) fn publish_counted(&self) {
        let empty = Vec::new();
        let vips = self.applied.as_ref().map_or(&empty, |d| &d.vips);
        self.metrics
            .snapshots
            .set_counters(crate::daemon::snapshot::Counted {
                counting: self.dataplane.counting(),
                vip_ids: vips.iter().map(|v| v.id).collect(),
                backend_ids: vips
                    .iter()
                    .flat_map(|v| v.backend_ids.iter().copied())
                    .collect(),
            });
    }

    /// The counters a status document shows, read now (the status
    /// document's snapshots compare them with a document's: snapshot.rs).
    pub fn status_counters(&self) -> Result<CounterSnapshot, DataplaneError> {
        match self.applied.as_ref() {
            Some(desired) => self.snapshot(desired),
            None => self.snapshot(&self.no_vips()),
        }
    }

    fn no_vips(&self) -> Desired {
        Desired {
            config: Config::empty(self.interface.clone()),
            vips: vec![],
            echo: vec![],
            allocation: Allocation::default(),
        }
    }

    /// `status`, taking each unchanged VIP's decision from `decisions`
    /// (the status document's builder keeps them: snapshot.rs), and the
    /// counters it shows.
    pub fn status_with(
        &self,
        decisions: &mut status::Decisions,
    ) -> Result<(Status, CounterSnapshot), DataplaneError> {
        let empty = self.no_vips();
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
            reports: &self.detector,
            drift: &self.drift,
            drift_checked_at: &self.drift_checked_at,
            bake: self.bake.as_ref(),
            conn_scan: self.conn_scan.as_ref(),
        };
        let mut status = status::build_with(&ctx, desired, &now, &self.at_apply, decisions);
        xlb_core::health::annotate(&mut status, &health::lock(&self.health));
        status.config_file = self.config_file.clone();
        self.annotate_announce(&mut status);
        status.fleet = self.fleet.clone();
        status.trace = self
            .metrics()
            .trace_active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(f) = status.fleet.as_mut() {
            f.held = self.held.clone();
        }
        Ok((status, now))
    }

    /// The fleet agent's view of the fleet, for the status.
    /// What the held-flow replication (daemon/held.rs) did last.
    pub fn set_held(&mut self, held: xlb_core::held::HeldStatus) {
        self.held = Some(held);
    }

    pub fn set_fleet(&mut self, fleet: FleetNodeStatus) {
        self.fleet = Some(fleet);
    }
}
