//! Data-plane events (`lb_common::stats::EV_*`), counted per CPU: below
//! every step of the packet's way, so each step counts its own.

use crate::maps::XLB_EVENT_STATS;

/// One data-plane event on this CPU.
#[inline(always)]
pub fn count_event(event: u32) {
    if let Some(c) = XLB_EVENT_STATS.get_ptr_mut(event) {
        // SAFETY: a per-CPU slot of this program's own map: no other CPU
        // writes it, and an XDP run is not preempted on its CPU.
        unsafe { *c += 1 };
    }
}
