//! What the data plane counted, as plain data: the per-CPU counters summed
//! (`CounterSnapshot`) and a count of the connection table (`ConnScan`).
//! The dataplane crate reads them; status, metrics and detection use them.

use std::collections::BTreeMap;
use std::time::Duration;

use lb_common::Counters;

/// How often the daemon counts the table: a full default table takes about
/// 0.1 s of CPU and one of 16 M entries some seconds, so not every
/// collector tick.
pub const SCAN_PERIOD: Duration = Duration::from_secs(10);

/// The pause after a scan is at least this many times the scan's own
/// duration, so counting costs at most 1/20 of a core however big the
/// table (a full default table takes about 0.1 s: the pause is
/// `SCAN_PERIOD`, and counting costs about 1% of a core).
const SCAN_PAUSE_FACTOR: f64 = 20.0;

/// How long to wait after a scan that took `scan_seconds`.
pub fn pause_after(scan_seconds: f64) -> Duration {
    let scaled = Duration::try_from_secs_f64(scan_seconds.max(0.0) * SCAN_PAUSE_FACTOR)
        .unwrap_or(Duration::MAX);
    scaled.max(SCAN_PERIOD)
}

/// One count of the connection table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnScan {
    /// Entries read.
    pub entries: u64,
    /// The table's max_entries.
    pub capacity: u32,
    /// backend id -> entries naming it.
    pub by_backend: BTreeMap<u32, u64>,
    /// When the scan ended.
    pub scanned_at_unix_seconds: f64,
    /// How long it took.
    pub seconds: f64,
}

impl ConnScan {
    /// Entries naming a backend id that `known` does not know: ids no longer
    /// in the applied config (the kernel re-steers such a flow on its next
    /// packet, or the LRU evicts it).
    pub fn stale_entries(&self, known: impl Fn(u32) -> bool) -> u64 {
        self.by_backend
            .iter()
            .filter(|(id, _)| !known(**id))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Each backend's packet count at one moment (the last apply), by backend
/// id: what a status's "packets since apply" counts from. Dense by id (ids
/// are below `MAX_BACKENDS`): taken at every apply, where a map of 64,000
/// entries cost a tenth of an apply of one VIP.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PacketsAt {
    by_id: Vec<u64>,
}

impl PacketsAt {
    /// From `(backend id, packets)` pairs; an id given twice keeps the last.
    pub fn new(pairs: impl IntoIterator<Item = (u32, u64)>) -> Self {
        let mut by_id = Vec::new();
        for (id, packets) in pairs {
            let i = id as usize;
            if by_id.len() <= i {
                by_id.resize(i + 1, 0);
            }
            by_id[i] = packets;
        }
        Self { by_id }
    }

    /// Backend `id`'s packets then; 0 for an id not taken.
    pub fn packets(&self, id: u32) -> u64 {
        self.by_id.get(id as usize).copied().unwrap_or(0)
    }
}

/// Every counter the status needs, read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CounterSnapshot {
    /// By vip id.
    pub vips: BTreeMap<u32, Counters>,
    /// By backend id.
    pub backends: BTreeMap<u32, Counters>,
    /// By XDP action value.
    pub actions: Vec<Counters>,
    /// By drop reason.
    pub drops: Vec<Counters>,
    /// All actions of each CPU, by CPU number.
    pub per_cpu: Vec<Counters>,
    /// Data-plane events, by `stats::EV_*`.
    pub events: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_at_reads_what_was_taken_and_zero_elsewhere() {
        let at = PacketsAt::new([(5, 50), (2, 20), (5, 55)]);
        assert_eq!(at.packets(5), 55);
        assert_eq!(at.packets(2), 20);
        assert_eq!(at.packets(3), 0);
        assert_eq!(at.packets(60_000), 0);
        assert_eq!(PacketsAt::default().packets(0), 0);
    }

    #[test]
    fn a_slow_scan_waits_longer() {
        assert_eq!(pause_after(0.03), SCAN_PERIOD);
        assert_eq!(pause_after(-1.0), SCAN_PERIOD);
        assert_eq!(pause_after(2.0), Duration::from_secs(40));
        assert_eq!(pause_after(f64::INFINITY), Duration::MAX);
    }
}
