//! The table a VIP serves while some of its backends are down: the
//! config's Maglev table with only the down backends' slots given to others.
//! Pure and deterministic: every node that sees the same backends down
//! computes the same table.
//!
//! Each slot of a down backend goes to the live backend with the highest
//! weighted rendezvous score for that slot (Schindelhauer and Schomaker's
//! weighted HRW: the score of backend `b` for slot `s` is `-w_b / ln(u)`,
//! `u` a hash of the seed, `b`'s name and `s`, uniform in (0, 1)). So:
//!
//! - every slot of a live backend keeps its backend;
//! - each live backend gets each freed slot with probability
//!   `w_b / Σ w_live`: the freed slots are shared in proportion to the
//!   weights (binomially: with 3 equal backends at M = 65,537, one down,
//!   each of the two others gets 50% ± 0.35% of its slots, one sigma);
//! - the table depends only on the config and the set of down backends, not
//!   on the order they went down in; and when one more backend goes down,
//!   only the slots it held move (its own and the freed slots it had won),
//!   since each slot's ranking of the others does not change. When it comes
//!   back, exactly those slots return to it.
//!
//! Cost: one hash per freed slot and live backend, done once per change of
//! the down set.

use std::collections::BTreeSet;

use xxhash_rust::xxh64::xxh64;

use crate::maglev::MaglevTable;
use crate::state::{DesiredVip, NO_BACKEND};

/// Which of a VIP's table backends serve.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Membership {
    /// The table as the config builds it.
    #[default]
    Full,
    /// Without these backends (by name): their slots refilled.
    Without(BTreeSet<String>),
    /// None: every slot names no backend (fail-closed with every backend
    /// down); the program drops the VIP's new flows as `no_backend`.
    Closed,
}

impl Membership {
    /// `name` (a backend in the config's table) is in the served table.
    pub fn serves(&self, name: &str) -> bool {
        match self {
            Membership::Full => true,
            Membership::Without(down) => !down.contains(name),
            Membership::Closed => false,
        }
    }
}

/// Key tag of the per-backend base hash (the seed goes in the high half).
const HRW_KEY_TAG: u64 = 0x4852_5721; // "HRW!"

/// SplitMix64's finalizer: a good 64-bit mix of (base, slot).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `-ln(u) / w` for backend `base` at `slot`: the lowest wins (the same
/// order as the highest `-w / ln(u)`).
fn cost(base: u64, slot: u64, weight: f64) -> f64 {
    let h = mix(base ^ slot.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // 53 bits, never 0 or 1: u in (0, 1).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -u.ln() / weight
}

/// The slots of `table` (indices into `table.names`) with every slot of a
/// backend in `down` given to a live one, as the module describes.
/// `weights[i]` is `table.names[i]`'s weight. None when no backend is live.
pub fn refill(table: &MaglevTable, weights: &[u32], down: &[bool], seed: u32) -> Option<Vec<u16>> {
    let live: Vec<(u16, u64, f64)> = table
        .names
        .iter()
        .enumerate()
        .filter(|(i, _)| !down[*i])
        .map(|(i, name)| {
            let base = xxh64(name.as_bytes(), (u64::from(seed) << 32) | HRW_KEY_TAG);
            // i < MAX_TABLE_BACKENDS: a table index.
            (i as u16, base, f64::from(weights[i].max(1)))
        })
        .collect();
    if live.is_empty() {
        return None;
    }
    let mut slots = table.slots.to_vec();
    for (s, owner) in slots.iter_mut().enumerate() {
        if !down[*owner as usize] {
            continue;
        }
        let mut best = (f64::INFINITY, 0u16);
        for &(i, base, w) in &live {
            let c = cost(base, s as u64, w);
            // Ties (never seen in practice) go to the lower index.
            if c < best.0 {
                best = (c, i);
            }
        }
        *owner = best.1;
    }
    Some(slots)
}

/// A VIP's kernel table and each backend's share of it under `m`.
#[derive(Clone, Debug, PartialEq)]
pub struct Patched {
    /// Kernel backend ids, one per slot.
    pub slots: Vec<u32>,
    /// Indexed like `vip.config.backends`.
    pub shares: Vec<f64>,
}

/// The kernel table of `vip` under `m`: from its config-built Maglev table
/// (`vip.table`, never patched), whatever `vip.slots` holds now.
pub fn patched(vip: &DesiredVip, m: &Membership, seed: u32) -> Patched {
    let table = &vip.table;
    // Config index of each table index.
    let config_index: Vec<usize> = table
        .names
        .iter()
        .map(|n| {
            vip.config
                .backends
                .iter()
                .position(|b| &b.name == n)
                .expect("table names come from the VIP")
        })
        .collect();
    let m_slots = table.slots.len();
    if m_slots == 0 {
        // No backend in the table at all: nothing to patch.
        return Patched {
            slots: vec![NO_BACKEND],
            shares: vec![0.0; vip.config.backends.len()],
        };
    }
    let indices = match m {
        Membership::Full => Some(table.slots.to_vec()),
        Membership::Without(gone) => {
            let down: Vec<bool> = table.names.iter().map(|n| gone.contains(n)).collect();
            let weights: Vec<u32> = config_index
                .iter()
                .map(|&c| vip.config.backends[c].weight)
                .collect();
            // Nobody left would be `Closed`; the monitor never asks for it,
            // but keep serving rather than build an empty table.
            Some(refill(table, &weights, &down, seed).unwrap_or_else(|| table.slots.to_vec()))
        }
        Membership::Closed => None,
    };
    let mut shares = vec![0.0; vip.config.backends.len()];
    let Some(indices) = indices else {
        return Patched {
            slots: vec![NO_BACKEND; m_slots],
            shares,
        };
    };
    let mut counts = vec![0u64; table.names.len()];
    for &i in &indices {
        counts[i as usize] += 1;
    }
    for (t, &c) in config_index.iter().enumerate() {
        shares[c] = counts[t] as f64 / m_slots as f64;
    }
    let slots = indices
        .iter()
        .map(|&i| vip.backend_ids[config_index[i as usize]])
        .collect();
    Patched { slots, shares }
}

/// The health patch a restarted daemon finds in `vip`'s live table, if
/// that is what it holds: the config's table backends that hold no slot in
/// `live` form a set D, and `live` is exactly `patched(vip, Without(D))`
/// (or, when the VIP fails closed, every slot names no backend: `Closed`).
/// None for anything else, the config's own table included (it is not a
/// patch), and for a VIP without health checks.
pub fn recognise(vip: &DesiredVip, live: &[u32], seed: u32) -> Option<Membership> {
    let check = &vip.config.health;
    let names = &vip.table.names;
    if !check.enabled() || names.is_empty() || live.len() != vip.table.slots.len() {
        return None;
    }
    if check.all_down == crate::config::AllDown::FailClosed
        && live.iter().all(|&id| id == NO_BACKEND)
    {
        return Some(Membership::Closed);
    }
    let held: BTreeSet<u32> = live.iter().copied().collect();
    let gone: BTreeSet<String> = vip
        .config
        .backends
        .iter()
        .zip(&vip.backend_ids)
        .filter(|(b, id)| names.contains(&b.name) && !held.contains(id))
        .map(|(b, _)| b.name.clone())
        .collect();
    // Nobody out, or nobody left (that would be `Closed`, or fail-open's
    // full table): not a patch.
    if gone.is_empty() || gone.len() == names.len() {
        return None;
    }
    let m = Membership::Without(gone);
    (patched(vip, &m, seed).slots == live).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maglev::{MaglevBackend, build};

    fn table(weights: &[u32], m: u32) -> (MaglevTable, Vec<String>) {
        let names: Vec<String> = (0..weights.len()).map(|i| format!("b{i:02}")).collect();
        let input: Vec<MaglevBackend<'_>> = names
            .iter()
            .zip(weights)
            .map(|(n, &w)| MaglevBackend { name: n, weight: w })
            .collect();
        (build(&input, m, 7).unwrap(), names)
    }

    fn down_of(t: &MaglevTable, gone: &[&str]) -> Vec<bool> {
        t.names.iter().map(|n| gone.contains(&n.as_str())).collect()
    }

    /// Slots whose owner differs.
    fn moved(a: &[u16], b: &[u16]) -> Vec<usize> {
        (0..a.len()).filter(|&i| a[i] != b[i]).collect()
    }

    #[test]
    fn only_the_down_backends_slots_move_and_in_proportion_to_weight() {
        // Three backends 1:1:2 at the default table size; b01 goes down.
        let weights = [1, 1, 2];
        let (t, _) = table(&weights, 65537);
        let down = down_of(&t, &["b01"]);
        let patched = refill(&t, &weights, &down, 1).unwrap();
        let freed: Vec<usize> = (0..t.slots.len())
            .filter(|&s| t.slots.get(s) == Some(1))
            .collect();
        // Exactly its slots changed...
        assert_eq!(moved(&t.slots.to_vec(), &patched), freed);
        // ...every other slot kept its backend, and no slot names it now.
        assert!(patched.iter().all(|&o| o != 1));
        // The freed slots went 1:2 to b00 and b02, within 4 sigma.
        let n = freed.len() as f64;
        let to_b02 = freed.iter().filter(|&&s| patched[s] == 2).count() as f64;
        let p = 2.0 / 3.0;
        let sigma = (n * p * (1.0 - p)).sqrt();
        assert!(
            (to_b02 - n * p).abs() < 4.0 * sigma,
            "b02 got {to_b02} of {n} freed slots, expected {:.0} ± {:.0}",
            n * p,
            4.0 * sigma
        );
        // So the whole table follows the live weights 1:2.
        let share_b02 = patched.iter().filter(|&&o| o == 2).count() as f64 / 65537.0;
        assert!((share_b02 - p).abs() < 0.01, "{share_b02}");
    }

    #[test]
    fn a_second_failure_moves_only_the_slots_it_held() {
        let weights = [3, 1, 4, 1, 5, 9, 2, 6];
        let (t, _) = table(&weights, 65537);
        let one = refill(&t, &weights, &down_of(&t, &["b02"]), 9).unwrap();
        let two = refill(&t, &weights, &down_of(&t, &["b02", "b05"]), 9).unwrap();
        let held_by_b05: Vec<usize> = (0..one.len()).filter(|&s| one[s] == 5).collect();
        assert_eq!(moved(&one, &two), held_by_b05);
        // The order of failures does not matter.
        let other_order = refill(&t, &weights, &down_of(&t, &["b05", "b02"]), 9).unwrap();
        assert_eq!(two, other_order);
        // And when b05 comes back, exactly those slots return to it.
        assert_eq!(moved(&two, &one), held_by_b05);
    }

    #[test]
    fn nothing_down_is_the_table_and_everything_down_is_none() {
        let weights = [1, 2, 3];
        let (t, _) = table(&weights, 1021);
        assert_eq!(
            refill(&t, &weights, &[false, false, false], 0).unwrap(),
            t.slots.to_vec()
        );
        assert_eq!(refill(&t, &weights, &[true, true, true], 0), None);
        // One left: it gets everything.
        let all = refill(&t, &weights, &[true, false, true], 0).unwrap();
        assert!(all.iter().all(|&o| o == 1));
    }

    #[test]
    fn deterministic_and_seeded() {
        let weights = [1; 10];
        let (t, _) = table(&weights, 4093);
        let down = down_of(&t, &["b03"]);
        let a = refill(&t, &weights, &down, 5).unwrap();
        assert_eq!(a, refill(&t, &weights, &down, 5).unwrap());
        assert_ne!(a, refill(&t, &weights, &down, 6).unwrap());
    }

    #[test]
    fn equal_weights_share_freed_slots_evenly_over_many_backends() {
        // 20 equal backends, 5 down: each of the 15 others gets 1/15 of the
        // freed slots, within 4 sigma.
        let weights = [1; 20];
        let (t, names) = table(&weights, 65537);
        let gone: Vec<&str> = names[..5].iter().map(String::as_str).collect();
        let patched = refill(&t, &weights, &down_of(&t, &gone), 3).unwrap();
        let freed: Vec<usize> = (0..t.slots.len())
            .filter(|&s| t.slots.get(s).unwrap() < 5)
            .collect();
        assert_eq!(moved(&t.slots.to_vec(), &patched), freed);
        let n = freed.len() as f64;
        let p = 1.0 / 15.0;
        let sigma = (n * p * (1.0 - p)).sqrt();
        for b in 5..20u32 {
            let got = freed
                .iter()
                .filter(|&&s| u32::from(patched[s]) == b)
                .count() as f64;
            assert!((got - n * p).abs() < 4.0 * sigma, "b{b}: {got} of {n}");
        }
    }

    fn vip() -> DesiredVip {
        let text = "interface = \"eth0\"\nhash_seed = 2\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n\
            [[vip.backend]]\nname = \"c\"\naddress = \"198.18.0.13\"\nmac = \"02:00:00:00:00:13\"\n\
            [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\nweight = 2\n\
            [[vip.backend]]\nname = \"off\"\naddress = \"198.18.0.14\"\nmac = \"02:00:00:00:00:14\"\nstate = \"disabled\"\n\
            [[vip.backend]]\nname = \"b\"\naddress = \"198.18.0.12\"\nmac = \"02:00:00:00:00:12\"\n";
        let config = crate::config::parse(text, "t.toml").unwrap();
        std::sync::Arc::unwrap_or_clone(
            crate::state::desired(&config, &Default::default())
                .unwrap()
                .vips
                .remove(0),
        )
    }

    #[test]
    fn kernel_tables_under_each_membership() {
        let v = vip();
        // Full: what state::desired built, ids and shares alike.
        let full = patched(&v, &Membership::Full, 2);
        assert_eq!(full.slots, *v.slots());
        assert_eq!(full.shares, v.table_shares);
        // Without a: only a's slots change, to b's and c's ids.
        let without = patched(&v, &Membership::Without(["a".to_string()].into()), 2);
        let (id_c, id_a, id_off, id_b) = (
            v.backend_ids[0],
            v.backend_ids[1],
            v.backend_ids[2],
            v.backend_ids[3],
        );
        for (s, (&before, &after)) in v.slots().iter().zip(&without.slots).enumerate() {
            if before == id_a {
                assert!(after == id_b || after == id_c, "slot {s}");
            } else {
                assert_eq!(before, after, "slot {s}");
            }
        }
        assert_eq!(without.shares[1], 0.0);
        assert_eq!(without.shares[2], 0.0);
        assert!((without.shares[0] + without.shares[3] - 1.0).abs() < 1e-9);
        assert!(!without.slots.contains(&id_off));
        // Closed: the same size, every slot names no backend.
        let closed = patched(&v, &Membership::Closed, 2);
        assert_eq!(closed.slots, vec![NO_BACKEND; 1021]);
        assert!(closed.shares.iter().all(|&s| s == 0.0));
    }

    fn checked_vip(all_down: &str) -> DesiredVip {
        let text = format!(
            "interface = \"eth0\"\nhash_seed = 2\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n\
            [vip.health]\nall_down = \"{all_down}\"\n\
            [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\n\
            [[vip.backend]]\nname = \"b\"\naddress = \"198.18.0.12\"\nmac = \"02:00:00:00:00:12\"\nweight = 2\n\
            [[vip.backend]]\nname = \"c\"\naddress = \"198.18.0.13\"\nmac = \"02:00:00:00:00:13\"\n"
        );
        let config = crate::config::parse(&text, "t.toml").unwrap();
        std::sync::Arc::unwrap_or_clone(
            crate::state::desired(&config, &Default::default())
                .unwrap()
                .vips
                .remove(0),
        )
    }

    #[test]
    fn a_health_patch_is_recognised_in_a_live_table_and_nothing_else_is() {
        let v = checked_vip("fail_open");
        let without =
            |names: &[&str]| Membership::Without(names.iter().map(|n| n.to_string()).collect());
        // The config's own table is no patch.
        assert_eq!(recognise(&v, &v.slots(), 2), None);
        // One or two backends out: recognised, whichever.
        for gone in [&["a"][..], &["b"], &["a", "c"]] {
            let m = without(gone);
            let live = patched(&v, &m, 2).slots;
            assert_eq!(recognise(&v, &live, 2), Some(m), "{gone:?}");
            // Under another seed it is not the patch this config makes
            // (unless one backend is left: it holds every slot either way).
            if gone.len() == 1 {
                assert_eq!(recognise(&v, &live, 3), None, "{gone:?}");
            }
            // One slot given back to a backend that is out: not a patch.
            let mut off = live.clone();
            let out = v.config.backends.iter().position(|b| b.name == gone[0]);
            off[0] = v.backend_ids[out.unwrap()];
            assert_eq!(recognise(&v, &off, 2), None, "{gone:?}");
        }
        // A table of another size, or without a backend but otherwise the
        // config's (a backend that left in an unrecorded apply): not a patch.
        assert_eq!(recognise(&v, &v.slots()[1..], 2), None);
        let a = v.backend_ids[0];
        let b = v.backend_ids[1];
        let no_a: Vec<u32> = v
            .slots()
            .iter()
            .map(|&id| if id == a { b } else { id })
            .collect();
        assert_eq!(recognise(&v, &no_a, 2), None);
        // Every slot empty: `Closed` when the VIP fails closed, only.
        let empty = vec![NO_BACKEND; v.slot_count()];
        assert_eq!(recognise(&v, &empty, 2), None);
        let closed = checked_vip("fail_closed");
        assert_eq!(recognise(&closed, &empty, 2), Some(Membership::Closed));
        // A VIP without checks never holds a patch.
        let plain = vip();
        let live = patched(&plain, &without(&["a"]), 2).slots;
        assert_eq!(recognise(&plain, &live, 2), None);
    }

    #[test]
    fn membership_serves() {
        let m = Membership::Without(["a".to_string()].into());
        assert!(!m.serves("a") && m.serves("b"));
        assert!(Membership::Full.serves("a"));
        assert!(!Membership::Closed.serves("a"));
    }
}
