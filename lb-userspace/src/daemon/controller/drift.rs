//! The drift check: the kernel's tables and backend entries compared with
//! what was applied (round-robin within a budget each tick), and `repair`.

use std::collections::BTreeMap;

use xlb_core::api::Repaired;
use xlb_core::clock::unix_now;
use xlb_core::drift::{self, Finding};
use xlb_dataplane::{Dataplane, DataplaneError};

use super::Controller;

/// Table slots the drift check reads per tick at most (well under a
/// millisecond of reading and hashing): with many large tables it walks them
/// round-robin instead of all each second. 1,000 VIPs of 6,421 slots take 25
/// ticks; 4 VIPs of 65,537 slots take 1.
pub(super) const DRIFT_SLOTS_PER_TICK: usize = 1 << 18;

impl Controller {
    /// Compare live tables and backend entries with the applied ones, for as
    /// many VIPs as the slot budget allows, continuing where the last call
    /// stopped.
    /// At least one VIP is checked whatever its size.
    pub(super) fn check_drift(
        &mut self,
        now_unix_seconds: f64,
        slots: usize,
    ) -> Result<(), DataplaneError> {
        let Some(desired) = self.applied.as_ref() else {
            return Ok(());
        };
        let n = desired.vips.len();
        let mut budget = slots;
        for checked in 0..n {
            let vip = &desired.vips[self.drift_cursor % n];
            if budget < vip.slot_count() && checked > 0 {
                break;
            }
            budget = budget.saturating_sub(vip.slot_count());
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
    let mut finding = drift::check(vip, live_table.as_deref(), &live_backends);
    if !finding.drifted && dataplane.vip_slot_drifted(&vip.key) {
        finding.drifted = true;
        finding.reason = Some("its VIP slot (XLB_VIP_SLOTS) does not hold what was written".into());
    }
    Ok(finding)
}
