//! Drift: the kernel's tables and backend entries compared with what the
//! daemon last applied. Something else (bpftool, another program, a bug)
//! writing our maps would change the split silently; this makes it loud.
//! Pure: the caller reads the kernel and passes what it found.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use lb_common::Backend as KernelBackend;

use crate::state::{DesiredVip, kernel_backend};

/// The checksum of a table: xxh64 over its slots, little-endian.
pub fn table_checksum(slots: &[u32]) -> u64 {
    xxhash_rust::xxh64::xxh64(bytemuck::cast_slice(slots), 0)
}

/// What one check of one VIP found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub drifted: bool,
    /// Why, in a sentence; None when clean.
    pub reason: Option<String>,
    /// The live table's share per backend name, when the live table differs
    /// from the applied one; slots naming no backend of this VIP are counted
    /// under `"(unknown)"`.
    pub live_table_shares: Option<BTreeMap<String, f64>>,
}

/// The name under which live slots naming a foreign or unknown id are counted.
pub const UNKNOWN_BACKEND: &str = "(unknown)";

/// Compare a VIP's live table (None: the kernel has none) and live backend
/// entries (by backend id) with what was applied.
pub fn check(
    vip: &DesiredVip,
    live_table: Option<&[u32]>,
    live_backends: &BTreeMap<u32, KernelBackend>,
) -> Finding {
    let mut reasons = Vec::new();
    let mut live_table_shares = None;
    let slots = vip.slots();
    match live_table {
        None => reasons.push("the kernel holds no Maglev table for this VIP".to_string()),
        Some(live) if live.len() != slots.len() => {
            reasons.push(format!(
                "the live table has {} slots, the applied one {}",
                live.len(),
                slots.len()
            ));
            live_table_shares = Some(shares(vip, live));
        }
        Some(live) if table_checksum(live) != table_checksum(&slots) => {
            let differ = live
                .iter()
                .zip(slots.iter())
                .filter(|(a, b)| a != b)
                .count();
            reasons.push(format!(
                "{differ} of {} table slots differ from the applied table",
                live.len()
            ));
            live_table_shares = Some(shares(vip, live));
        }
        Some(_) => {}
    }
    for (b, id) in vip.config.backends.iter().zip(&vip.backend_ids) {
        let want = kernel_backend(b, vip.id);
        match live_backends.get(id) {
            Some(got) if *got == want => {}
            Some(got) => reasons.push(format!(
                "backend {}'s kernel entry changed (MAC {} -> {})",
                b.name,
                mac(&want.mac),
                mac(&got.mac)
            )),
            None => reasons.push(format!("backend {}'s kernel entry is missing", b.name)),
        }
    }
    Finding {
        drifted: !reasons.is_empty(),
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        live_table_shares,
    }
}

fn shares(vip: &DesiredVip, live: &[u32]) -> BTreeMap<String, f64> {
    let names: BTreeMap<u32, &str> = vip
        .backend_ids
        .iter()
        .zip(&vip.config.backends)
        .map(|(id, b)| (*id, b.name.as_str()))
        .collect();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for id in live {
        let name = names.get(id).copied().unwrap_or(UNKNOWN_BACKEND);
        *counts.entry(name.to_string()).or_default() += 1;
    }
    let total = live.len().max(1) as f64;
    counts
        .into_iter()
        .map(|(name, n)| (name, n as f64 / total))
        .collect()
}

fn mac(m: &[u8; 6]) -> String {
    crate::config::MacAddr(*m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> crate::state::Desired {
        let text = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.10\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 211\n\
            [[vip.backend]]\nname = \"a\"\naddress = \"198.18.1.1\"\nmac = \"02:00:00:00:00:01\"\n\
            [[vip.backend]]\nname = \"b\"\naddress = \"198.18.1.2\"\nmac = \"02:00:00:00:00:02\"\n";
        let config = crate::config::parse(text, "t.toml").unwrap();
        crate::state::desired(&config, &Default::default()).unwrap()
    }

    fn live_backends(vip: &DesiredVip) -> BTreeMap<u32, KernelBackend> {
        vip.config
            .backends
            .iter()
            .zip(&vip.backend_ids)
            .map(|(b, id)| (*id, kernel_backend(b, vip.id)))
            .collect()
    }

    #[test]
    fn clean_when_the_kernel_holds_what_was_applied() {
        let d = desired();
        let vip = &d.vips[0];
        let f = check(vip, Some(&vip.slots()), &live_backends(vip));
        assert!(!f.drifted, "{f:?}");
        assert_eq!(f.reason, None);
        assert_eq!(f.live_table_shares, None);
    }

    #[test]
    fn rewritten_slots_are_drift_with_the_live_shares() {
        let d = desired();
        let vip = &d.vips[0];
        // Point every slot at backend a: a's live share is 100%.
        let a = vip.backend_ids[0];
        let live = vec![a; vip.slot_count()];
        let f = check(vip, Some(&live), &live_backends(vip));
        assert!(f.drifted);
        let reason = f.reason.unwrap();
        assert!(reason.contains("table slots differ"), "{reason}");
        let shares = f.live_table_shares.unwrap();
        assert_eq!(shares.get("a"), Some(&1.0));
        assert_eq!(shares.get("b"), None);
    }

    #[test]
    fn a_foreign_id_counts_as_unknown() {
        let d = desired();
        let vip = &d.vips[0];
        let mut live = vip.slots().into_owned();
        live[0] = 9999;
        let f = check(vip, Some(&live), &live_backends(vip));
        assert!(f.drifted);
        let shares = f.live_table_shares.unwrap();
        assert!((shares[UNKNOWN_BACKEND] - 1.0 / 211.0).abs() < 1e-12);
        assert!(f.reason.unwrap().starts_with("1 of 211 table slots"));
    }

    #[test]
    fn a_missing_table_or_a_changed_backend_entry_is_drift() {
        let d = desired();
        let vip = &d.vips[0];
        let f = check(vip, None, &live_backends(vip));
        assert!(f.drifted);
        assert!(f.reason.unwrap().contains("no Maglev table"));

        let mut backends = live_backends(vip);
        backends.get_mut(&vip.backend_ids[1]).unwrap().mac = [2, 0, 0, 0, 0, 0x99];
        let f = check(vip, Some(&vip.slots()), &backends);
        assert_eq!(
            f.reason.as_deref(),
            Some("backend b's kernel entry changed (MAC 02:00:00:00:00:02 -> 02:00:00:00:00:99)")
        );
        backends.remove(&vip.backend_ids[0]);
        assert!(
            check(vip, Some(&vip.slots()), &backends)
                .reason
                .unwrap()
                .contains("backend a's kernel entry is missing")
        );
    }

    #[test]
    fn checksum_depends_on_every_slot() {
        let a = vec![1u32, 2, 3];
        let mut b = a.clone();
        assert_eq!(table_checksum(&a), table_checksum(&b));
        b[2] = 4;
        assert_ne!(table_checksum(&a), table_checksum(&b));
    }
}
