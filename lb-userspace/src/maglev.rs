//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016), pure and
//! deterministic.
//!
//! A VIP's Maglev table is an array of `M` slots (M prime); the XDP program
//! picks a new flow's backend as `slots[flow_hash % M]`. The table is built
//! here, in userspace, and written into a BPF map as a whole.
//!
//! Why it is built this way:
//!
//! * Every xlb node behind ECMP must compute the *same* table from the same
//!   configuration, or a flow would go to different backends depending on
//!   which node received it. So the table depends only on the backends'
//!   names, weights, the table size and the fleet-wide seed: the input is
//!   sorted by name first (the order in the file does not matter), the
//!   permutations come from xxh64 (a fixed, portable function of bytes), and
//!   nothing here iterates a `HashMap` or draws random numbers.
//! * Each backend walks its own permutation of the slots (`offset`, then
//!   `offset + skip`, ... mod M) and claims the first free one when its turn
//!   comes. Because permutations barely depend on each other, removing a
//!   backend mostly hands over its own slots and leaves the rest in place:
//!   existing flows of the other backends keep their backend.
//! * Weights follow Katran's "MaglevV2": turns are handed out in rounds; in each
//!   round every backend adds its weight to a credit and takes a turn each time
//!   the credit reaches the largest weight. A backend thus takes
//!   `weight / max_weight` turns per round and ends with a share of the table
//!   proportional to its weight (within a slot or two, see the tests).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use xxhash_rust::xxh64::xxh64;

/// True when `n` is prime (table sizes must be).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// One backend as Maglev sees it: a stable name and a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend<'a> {
    /// Stable, unique name; the backend's permutation is derived from it, so
    /// renaming a backend moves its flows, but re-addressing it does not.
    pub name: &'a str,
    /// Relative weight, at least 1. A backend that must take no new flows is
    /// left out of the table (drained), not given weight 0.
    pub weight: u32,
}

/// A built Maglev table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    /// Backend names in table order: sorted by name (byte order).
    pub names: Vec<String>,
    /// slots[i] = index into `names` of the backend owning slot i; len ==
    /// table_size. Empty when there are no backends.
    pub slots: Vec<u32>,
}

/// Why a table cannot be built. Each variant names the offending value, so the
/// caller can point at the field in the configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    /// Maglev's permutations only visit every slot when the size is prime
    /// (every skip in 1..M is then coprime with M).
    #[error("table size {table_size} is not a prime number (at least 2)")]
    TableSizeNotPrime { table_size: u32 },
    /// Every backend needs at least one slot.
    #[error("table size {table_size} is smaller than the number of backends ({backends})")]
    TableTooSmall { table_size: u32, backends: usize },
    /// Names identify backends (and their permutations); two backends with one
    /// name would be indistinguishable.
    #[error("backend name {name:?} appears more than once")]
    DuplicateName { name: String },
    /// Weight 0 is not a way to remove a backend: leave it out of the table.
    #[error("backend {name:?} has weight 0 (the weight must be at least 1)")]
    ZeroWeight { name: String },
}

/// Low halves of the two xxh64 keys; the seed goes in the high half. Distinct
/// tags make the offset and the skip independent hashes of the name, and the
/// mapping seed -> key is injective, so two seeds never share permutations.
const OFFSET_KEY_TAG: u64 = 0x4f46_4653; // "OFFS"
const SKIP_KEY_TAG: u64 = 0x534b_4950; // "SKIP"

/// The start and the stride of `name`'s permutation of a table of size `m`
/// (prime, >= 2): it visits `offset`, `offset + skip`, ... (mod m). The skip
/// lies in 1..m, coprime with the prime m, so the walk visits every slot once.
pub fn permutation(name: &str, table_size: u32, seed: u32) -> (u32, u32) {
    let m = u64::from(table_size);
    let key = u64::from(seed) << 32;
    let offset = xxh64(name.as_bytes(), key | OFFSET_KEY_TAG) % m;
    let skip = xxh64(name.as_bytes(), key | SKIP_KEY_TAG) % (m - 1) + 1;
    // Both are < m <= u32::MAX.
    (offset as u32, skip as u32)
}

/// Per-backend state while the table fills.
struct Walker {
    /// Next slot of the permutation to try.
    pos: u64,
    skip: u64,
    weight: u64,
    /// Turns taken so far.
    turns: u64,
}

/// Builds the table of `table_size` slots for `backends` (in any order) with
/// the fleet-wide `seed`.
pub fn build(
    backends: &[MaglevBackend<'_>],
    table_size: u32,
    seed: u32,
) -> Result<MaglevTable, MaglevError> {
    if !is_prime(table_size) {
        return Err(MaglevError::TableSizeNotPrime { table_size });
    }
    // Sort first so that everything below, including which error is reported
    // when there are several, is independent of the input order.
    let mut sorted: Vec<MaglevBackend<'_>> = backends.to_vec();
    sorted.sort_unstable_by(|a, b| a.name.cmp(b.name));
    for pair in sorted.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(MaglevError::DuplicateName {
                name: pair[0].name.to_owned(),
            });
        }
    }
    if let Some(b) = sorted.iter().find(|b| b.weight == 0) {
        return Err(MaglevError::ZeroWeight {
            name: b.name.to_owned(),
        });
    }
    if sorted.len() > table_size as usize {
        return Err(MaglevError::TableTooSmall {
            table_size,
            backends: sorted.len(),
        });
    }
    let names: Vec<String> = sorted.iter().map(|b| b.name.to_owned()).collect();
    if sorted.is_empty() {
        return Ok(MaglevTable {
            names,
            slots: Vec::new(),
        });
    }

    let m = u64::from(table_size);
    let max_weight = sorted.iter().map(|b| u64::from(b.weight)).max().unwrap_or(1);
    let mut walkers: Vec<Walker> = sorted
        .iter()
        .map(|b| {
            let (offset, skip) = permutation(b.name, table_size, seed);
            Walker {
                pos: u64::from(offset),
                skip: u64::from(skip),
                weight: u64::from(b.weight),
                turns: 0,
            }
        })
        .collect();

    // Katran's MaglevV2 loop is
    //
    //     loop { for i in 0..n { credit[i] += w[i];
    //            if credit[i] >= max_w { credit[i] -= max_w; take_turn(i) } } }
    //
    // Backend i's k-th turn (k >= 1) therefore comes in round
    // ceil(k * max_w / w[i]), and within a round, turns go in index order. We
    // replay exactly that order with a min-heap keyed by (round, index): the
    // literal loop costs O(M * max_w / mean_w) credit updates, which is up to
    // O(M * N) with skewed weights (seconds at M ~ 1M, N = 4096), while the
    // heap costs O(M log N) whatever the weights. The tests keep the literal
    // loop as a reference and check that both agree.
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> = walkers
        .iter()
        .enumerate()
        .map(|(i, w)| Reverse((next_round(0, max_weight, w.weight), i as u32)))
        .collect();

    // Which slots are taken, one bit each: the probe loop below reads only
    // this (8 KiB at M = 65537, so it stays in L1 cache) rather than the
    // 32-bit slots, which roughly halves the build time.
    let mut taken = vec![0u64; (table_size as usize).div_ceil(64)];
    let mut slots = vec![0u32; table_size as usize];
    let mut filled: u64 = 0;
    while filled < m {
        // The heap never runs dry: every pop pushes the backend back.
        let Some(Reverse((_, i))) = heap.pop() else {
            unreachable!("maglev heap holds every backend");
        };
        let w = &mut walkers[i as usize];
        // Walk the permutation to the first free slot. It exists (filled < m)
        // and the walk reaches it because the permutation visits every slot.
        // Slots skipped here are taken for good, so `pos` only moves forward
        // and each backend walks its permutation at most once overall.
        let mut pos = w.pos;
        while taken[(pos >> 6) as usize] & (1 << (pos & 63)) != 0 {
            pos += w.skip;
            if pos >= m {
                pos -= m;
            }
        }
        taken[(pos >> 6) as usize] |= 1 << (pos & 63);
        slots[pos as usize] = i;
        pos += w.skip;
        if pos >= m {
            pos -= m;
        }
        w.pos = pos;
        w.turns += 1;
        filled += 1;
        heap.push(Reverse((next_round(w.turns, max_weight, w.weight), i)));
    }
    Ok(MaglevTable { names, slots })
}

/// The round in which a backend that has taken `turns` turns takes the next
/// one: the first round r with r * weight >= (turns + 1) * max_weight.
/// No overflow: turns < M <= u32::MAX and max_weight <= u32::MAX, so
/// (turns + 1) * max_weight <= (2^32 - 1)^2 < 2^64.
fn next_round(turns: u64, max_weight: u64, weight: u64) -> u64 {
    ((turns + 1) * max_weight).div_ceil(weight)
}

impl MaglevTable {
    /// Number of slots; 0 for a table without backends.
    pub fn table_size(&self) -> usize {
        self.slots.len()
    }

    /// Slots owned by each backend, indexed like `names`.
    pub fn slot_counts(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.names.len()];
        for &s in &self.slots {
            counts[s as usize] += 1;
        }
        counts
    }

    /// Share of the table owned by each backend (slot count / table size),
    /// indexed like `names`: the share of new flows it is expected to get.
    pub fn shares(&self) -> Vec<f64> {
        let m = self.table_size() as f64;
        self.slot_counts()
            .into_iter()
            .map(|c| c as f64 / m)
            .collect()
    }

    /// Index in `names` (the value stored in slots) of the backend `name`.
    pub fn index_of(&self, name: &str) -> Option<u32> {
        // `names` is sorted by `str`'s order, so a binary search finds it.
        self.names
            .binary_search_by(|n| n.as_str().cmp(name))
            .ok()
            .map(|i| i as u32)
    }

    /// Name of the backend owning `slot`, if the slot exists.
    pub fn owner(&self, slot: usize) -> Option<&str> {
        self.slots
            .get(slot)
            .map(|&i| self.names[i as usize].as_str())
    }

    /// Number of slots whose backend (by name) differs between `self` and
    /// `other`: the new flows that would go elsewhere after switching tables.
    /// `None` when the sizes differ, since then `flow_hash % M` itself changes
    /// and slots do not correspond.
    pub fn moved_slots(&self, other: &MaglevTable) -> Option<u64> {
        if self.table_size() != other.table_size() {
            return None;
        }
        // Compare by name, since indices shift when backends come or go.
        // Translate self's indices into other's once, not per slot.
        let map: Vec<Option<u32>> = self.names.iter().map(|n| other.index_of(n)).collect();
        let moved = self
            .slots
            .iter()
            .zip(&other.slots)
            .filter(|&(&a, &b)| map[a as usize] != Some(b))
            .count();
        Some(moved as u64)
    }
}
