//! The tables both configs would build, and how many flows change backend
//! between them.
//!
//! A new flow goes to `slots[flow_hash(hash_input(flow, hash), hash_seed) %
//! M]`. Treating the flow hash as uniformly distributed (it is MurmurHash3's
//! finaliser over what the VIP's hash mode keeps of the flow), the fraction
//! of flows that change backend is:
//!
//! * same `table_size`, same `hash_seed`, same `hash` mode: a flow keeps its
//!   slot, so it is exactly the fraction of slots whose owner (by name)
//!   differs;
//! * another `table_size` (sizes are primes, so coprime), another
//!   `hash_seed` or another `hash` mode: a flow's old slot and new slot are
//!   independent: with a new seed or a new mode the hash itself is new (the
//!   mode changes the hash's input), and with sizes M1 != M2 every pair (h mod
//!   M1, h mod M2) occurs exactly once in any M1 x M2 consecutive hash values
//!   (Chinese remainder theorem). A flow then stays on its backend with
//!   probability sum over backends of share_before x share_after, and the
//!   moved fraction is 1 minus that, computed exactly from slot counts in
//!   O(M), where sampling would be both slower and approximate. (Comparing
//!   slot i with slot i would be wrong after a seed change: the flow that
//!   hashed to slot i no longer does.)
//!
//! No active backend on one side: every flow's fate changes (dropped <->
//! served), 1.0; on neither side, 0.

use std::collections::BTreeMap;

use crate::config::HashMode;
use crate::maglev::MaglevTable;

/// A VIP's table as one config builds it, with that config's seed and the
/// VIP's hash mode: together, where a flow lands.
pub(super) struct Built {
    pub table: MaglevTable,
    pub seed: u32,
    pub hash: HashMode,
    /// `table.shares()`, indexed like `table.names`.
    shares: Vec<f64>,
}

/// The table the daemon would build for `vip`: its active backends, its
/// table size, the config's `hash_seed` (what `state::desired` does).
#[cfg(test)]
pub(super) fn build(
    vip: &crate::config::Vip,
    seed: u32,
) -> Result<Built, crate::maglev::MaglevError> {
    Ok(Built::from_table(
        crate::state::vip_table(vip, seed)?,
        seed,
        vip.hash,
    ))
}

impl Built {
    pub fn from_table(table: MaglevTable, seed: u32, hash: HashMode) -> Built {
        // Empty only without backends, so `shares` is then empty too.
        let shares = table.shares();
        Built {
            table,
            seed,
            hash,
            shares,
        }
    }

    /// The share of the table `name` owns (0 when not in it).
    pub fn share(&self, name: &str) -> f64 {
        self.table
            .index_of(name)
            .map_or(0.0, |i| self.shares[i as usize])
    }

    /// Shares of names asked in increasing order (a walk along the
    /// table's sorted names, not a search for each).
    pub fn shares_in_order(&self) -> SharesInOrder<'_> {
        SharesInOrder {
            built: self,
            next: 0,
        }
    }

    /// Slot counts by name, of the backends that own any.
    fn counts(&self) -> BTreeMap<&str, u64> {
        self.table
            .names
            .iter()
            .map(String::as_str)
            .zip(self.table.slot_counts())
            .filter(|&(_, c)| c > 0)
            .collect()
    }
}

/// [`Built::shares_in_order`].
pub(super) struct SharesInOrder<'a> {
    built: &'a Built,
    /// The first of the table's names not passed yet.
    next: usize,
}

impl SharesInOrder<'_> {
    /// As [`Built::share`], for a name after every name asked before.
    pub fn share(&mut self, name: &str) -> f64 {
        let names = &self.built.table.names;
        while self.next < names.len() && names[self.next].as_str() < name {
            self.next += 1;
        }
        match names.get(self.next) {
            Some(n) if n == name => self.built.shares[self.next],
            _ => 0.0,
        }
    }
}

/// Fraction of flows whose backend differs between `before` and `after`,
/// in 0..=1 (see the module's doc).
pub(super) fn moved_ratio(before: &Built, after: &Built) -> f64 {
    let (m1, m2) = (before.table.slots.len(), after.table.slots.len());
    match (m1, m2) {
        (0, 0) => return 0.0,
        (0, _) | (_, 0) => return 1.0,
        _ => {}
    }
    if m1 == m2 && before.seed == after.seed && before.hash == after.hash {
        let moved = before
            .table
            .moved_slots(&after.table)
            .expect("same table size");
        return moved as f64 / m1 as f64;
    }
    // Independent slots: flows that stay = sum of c1 * c2 over backends, out
    // of m1 * m2 (exact in integers: at most 2^40 each).
    let c1 = before.counts();
    let c2 = after.counts();
    let stay: u128 = c1
        .iter()
        .filter_map(|(name, &a)| c2.get(name).map(|&b| u128::from(a) * u128::from(b)))
        .sum();
    let total = m1 as u128 * m2 as u128;
    (total - stay) as f64 / total as f64
}
