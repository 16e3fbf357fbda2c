//! The controller's side of health checking (a child module of
//! `controller`, kept here with the rest of health/): the monitor follows
//! every apply, and a backend's change of state patches its VIP's live
//! table, each swapped in whole like an apply's.

use std::sync::{Arc, Mutex, MutexGuard};

use super::Controller;
use xlb_core::health::{Membership, Monitor, patch};

/// The monitor, even if a holder panicked (its state stays usable).
pub(crate) fn lock(m: &Mutex<Monitor>) -> MutexGuard<'_, Monitor> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Controller {
    /// The monitor the daemon's check loop shares.
    pub fn health_monitor(&self) -> Arc<Mutex<Monitor>> {
        self.health.clone()
    }

    /// After an apply (or an adoption) replaced `applied`: check what its
    /// config says, and record what its tables hold (`memberships`, from
    /// `health::patch_desired`; none: every table is the config's).
    pub(super) fn health_follow(&mut self, memberships: Vec<(String, Membership)>) {
        let Some(applied) = self.applied.as_ref() else {
            return;
        };
        let mut monitor = lock(&self.health);
        monitor.sync(&applied.config, xlb_core::clock::Clock::now());
        for (vip, m) in memberships {
            monitor.set_live(&vip, m);
        }
    }

    /// After an adoption: check what the adopted config says, and take the
    /// health patches found in the pinned tables (`memberships`, from
    /// `adopt::adopt`) as live, their left-out backends down.
    pub(super) fn health_adopt(&mut self, memberships: Vec<(String, Membership)>) {
        self.health_follow(Vec::new());
        let mut monitor = lock(&self.health);
        let now = xlb_core::clock::Clock::now();
        for (vip, m) in memberships {
            log::info!(
                "VIP {vip}: health: the pinned table is {}, as an earlier daemon's checks left it; \
                 kept, those backends start down",
                describe(&m)
            );
            monitor.adopt_live(&vip, m, now);
        }
    }

    /// Bring every VIP's live table in line with its backends' health, if
    /// any changed (or a write failed) since the last call: each VIP whose
    /// table should hold other backends gets its patched table swapped in
    /// whole. The daemon calls it when a check changes a state, and `tick`
    /// once a second (the retry of a failed write).
    pub fn health_sync(&mut self) {
        let Some(desired) = self.applied.as_mut() else {
            return;
        };
        let mut monitor = lock(&self.health);
        if !monitor.take_dirty() {
            return;
        }
        let seed = desired.config.hash_seed;
        for vip in &mut desired.vips {
            let wanted = monitor.wanted(&vip.config);
            if &wanted == monitor.live(&vip.config.name) {
                continue;
            }
            let p = patch::patched(vip, &wanted, seed);
            let moved = p
                .slots
                .iter()
                .zip(&vip.slots)
                .filter(|(a, b)| a != b)
                .count();
            let started = std::time::Instant::now();
            match self.dataplane.install_table(vip.id, &p.slots) {
                Ok(()) => {
                    self.metrics
                        .table_swap
                        .observe(started.elapsed().as_secs_f64());
                    log::info!(
                        "VIP {}: health: table now {} ({moved} of {} slots moved)",
                        vip.config.name,
                        describe(&wanted),
                        p.slots.len()
                    );
                    vip.slots = p.slots;
                    vip.table_shares = p.shares;
                    monitor.set_live(&vip.config.name, wanted);
                    // What the drift check compared the old table with is
                    // history.
                    self.drift.remove(&vip.config.name);
                }
                Err(e) => {
                    log::error!(
                        "VIP {}: health: writing its table failed ({e}); trying again in a second",
                        vip.config.name
                    );
                    monitor.mark_dirty();
                }
            }
        }
    }
}

fn describe(m: &Membership) -> String {
    match m {
        Membership::Full => "as the config builds it".to_string(),
        Membership::Without(down) => format!(
            "without {}",
            down.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        Membership::Closed => "closed (every backend down, fail_closed)".to_string(),
    }
}
