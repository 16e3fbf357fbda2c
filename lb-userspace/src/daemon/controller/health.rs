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
        // Every VIP whose table should hold other backends, patched; then
        // all of them swapped in with one call (a backend shared by many
        // VIPs going down changes them together, not one grace period each).
        let mut patched = Vec::new();
        for (i, vip) in desired.vips.iter().enumerate() {
            let wanted = monitor.wanted(&vip.config);
            if &wanted == monitor.live(&vip.config.name) {
                continue;
            }
            patched.push((i, patch::patched(vip, &wanted, seed), wanted));
        }
        if patched.is_empty() {
            return;
        }
        let tables: Vec<(u32, &[u32])> = patched
            .iter()
            .map(|(i, p, _)| (desired.vips[*i].id, p.slots.as_slice()))
            .collect();
        let started = std::time::Instant::now();
        if let Err(e) = self.dataplane.install_tables(&tables) {
            log::error!(
                "health: writing {} patched tables failed ({e}); trying again in a second",
                tables.len()
            );
            monitor.mark_dirty();
            return;
        }
        self.metrics
            .table_swap
            .observe(started.elapsed().as_secs_f64());
        for (i, p, wanted) in patched {
            let vip = &mut desired.vips[i];
            let moved = p
                .slots
                .iter()
                .zip(vip.slot_iter())
                .filter(|&(&a, b)| a != b)
                .count();
            log::info!(
                "VIP {}: health: table now {} ({moved} of {} slots moved)",
                vip.config.name,
                describe(&wanted),
                p.slots.len()
            );
            let vip = Arc::make_mut(vip);
            vip.set_slots(p.slots);
            vip.table_shares = p.shares;
            vip.health_patched = wanted != Membership::Full;
            monitor.set_live(&vip.config.name, wanted);
            // What the drift check compared the old table with is history.
            self.drift.remove(&vip.config.name);
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
