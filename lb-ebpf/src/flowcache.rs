//! The flow cache: each CPU's direct-mapped copy of the connection-table
//! entries it used last, tried before the LRU. A hit costs an index mix,
//! the slot's loads and a key compare instead of the kernel's lookup call
//! (jhash2, bucket walk, `memcmp`: ~45 ns a packet on this project's CPU,
//! docs/BENCHMARKS.md).
//!
//! The LRU stays the truth. The program writes a slot only with what it
//! read from the LRU or wrote to it: the entry a lookup found, or the entry
//! it filed (a SYN, a miss, a re-steer), so this CPU's own writes are in
//! its slot at once. Each slot records the generation
//! (`XLB_FLOW_CACHE_GEN`) read before the LRU was, and serves only while
//! that is still the generation: every write and delete the controller
//! makes in the connection tables (`xlb_dataplane::ConnFlows`: held flows,
//! tools and tests through it) bumps it after the write, so every slot of
//! every CPU is followed at the next packet. What bumps nothing (another
//! CPU filing the same 5-tuple, an eviction, a write to the pinned tables
//! by another process, a program loaded anew over the same pins while the
//! old one still runs) is followed within `FLOW_CACHE_JIFFIES`: a slot
//! serves only while younger than that, then its flow is looked up in the
//! LRU again (which also keeps a busy flow's LRU entry referenced). A
//! slot's backend passes the same `usable` check as an LRU entry's, so a
//! retired backend's flows re-steer at once. Not pinned: a program loaded
//! anew starts with empty slots.

use aya_ebpf::{
    btf_maps::{Array, PerCpuArray},
    helpers::bpf_jiffies64,
    macros::btf_map,
};
use lb_common::{hash::ConnEntry, maps::BPF_F_MMAPABLE};

use crate::scratch::Parsed;

/// Slots per CPU and family: a power of two.
const SLOTS: u32 = 4096;
const _: () = assert!(SLOTS.is_power_of_two());

/// How long a slot serves before its flow is looked up in the LRU again, in
/// jiffies: a slot filled at jiffy `j` serves while `jiffies - j < 2`, so
/// at most 2 ticks, 2 ms (HZ 1000) to 20 ms (HZ 100); 8 ms at this
/// project's HZ 250. Jiffies because the verifier inlines bpf_jiffies64 as
/// one load (docs/DATAPLANE.md, the next-hop cache).
pub const FLOW_CACHE_JIFFIES: u64 = 2;

/// An IPv4 flow's slot: the key as `FlowKey4::to_u64s` (all zeros, which
/// no flow's key is, since its protocol is never 0: empty), the entry, and
/// its stamp: the generation it was filled under (high 32 bits) and the
/// jiffy (low 32 bits).
#[repr(C)]
pub struct Slot4 {
    key: [u64; 2],
    entry: ConnEntry,
    stamp: u64,
}

/// An IPv6 flow's slot: the key as `FlowWords`' ten words.
#[repr(C)]
pub struct Slot6 {
    key: [u32; 10],
    entry: ConnEntry,
    stamp: u64,
    _pad: u64,
}

const _: () = assert!(size_of::<Slot4>() == 32 && size_of::<Slot6>() == 64);

/// Each CPU's IPv4 slots.
#[btf_map]
static XLB_FLOW_CACHE_V4: PerCpuArray<Slot4, { SLOTS as usize }> = PerCpuArray::new();

/// Each CPU's IPv6 slots.
#[btf_map]
static XLB_FLOW_CACHE_V6: PerCpuArray<Slot6, { SLOTS as usize }> = PerCpuArray::new();

/// The generation of the connection tables' contents
/// (`lb_common::maps::FLOW_CACHE_GEN`): bumped by userspace after each of
/// its writes. Mmapable, so the bump is one atomic add. Not pinned.
#[btf_map]
static XLB_FLOW_CACHE_GEN: Array<u64, 1, { BPF_F_MMAPABLE as usize }> = Array::new();

/// The stamp a slot filled now gets, and that a slot must be less than
/// `FLOW_CACHE_JIFFIES` below to serve: the generation in the high 32
/// bits, the jiffy in the low 32. A slot of another generation is at
/// least 2^32 away; a jiffy counter that wrapped past 2^32 since the fill
/// makes the slot miss once.
#[inline(always)]
pub fn stamp() -> u64 {
    // SAFETY: get_ptr checked the index; array values are never freed;
    // volatile, so the generation is read before the slot and the LRU.
    let generation = XLB_FLOW_CACHE_GEN
        .get_ptr(0)
        .map_or(0, |g| unsafe { g.read_volatile() });
    // SAFETY: a BPF helper without arguments; it only reads `jiffies_64`
    // (the verifier inlines it as that load).
    let now = unsafe { bpf_jiffies64() };
    generation << 32 | (now & 0xffff_ffff)
}

#[inline(always)]
fn index(x: u64) -> u32 {
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as u32
}

/// The flow's words as the IPv6 slot holds them.
#[inline(always)]
fn words6(p: &Parsed) -> [u32; 10] {
    let f = &p.flow;
    [
        f.src[0], f.src[1], f.src[2], f.src[3], f.dst[0], f.dst[1], f.dst[2], f.dst[3], f.ports,
        f.proto,
    ]
}

/// This CPU's slot of a flow: a pointer to its slot in its family's
/// cache, the other null (two pointers, not an enum: the verifier refuses
/// the spill of an enum's unset payload).
pub struct At {
    v4: *mut Slot4,
    v6: *mut Slot6,
}

/// The slot of an IPv4 flow's key (`FlowKey4::to_u64s`).
#[inline(always)]
pub fn at4(k: &[u64; 2]) -> At {
    At {
        v4: XLB_FLOW_CACHE_V4
            .get_ptr_mut(index(k[0] ^ k[1].rotate_left(32)))
            .unwrap_or(core::ptr::null_mut()),
        v6: core::ptr::null_mut(),
    }
}

/// The slot of an IPv6 flow.
#[inline(always)]
pub fn at6(p: &Parsed) -> At {
    let f = &p.flow;
    let x = (f.src[3] as u64 | (f.dst[3] as u64) << 32)
        ^ (f.src[2] as u64 | (f.dst[2] as u64) << 32).rotate_left(17)
        ^ (f.ports as u64 | (f.proto as u64) << 32).rotate_left(29)
        ^ (f.src[1] as u64 | (f.dst[1] as u64) << 32)
        ^ (f.src[0] as u64 | (f.dst[0] as u64) << 32).rotate_left(43);
    At {
        v4: core::ptr::null_mut(),
        v6: XLB_FLOW_CACHE_V6
            .get_ptr_mut(index(x))
            .unwrap_or(core::ptr::null_mut()),
    }
}

/// The entry slot `at` holds for this flow, if it holds this flow, was
/// filled under this `stamp`'s generation and is younger than
/// `FLOW_CACHE_JIFFIES`.
#[inline(always)]
pub fn get(at: &At, p: &Parsed, k4: &[u64; 2], stamp: u64) -> Option<ConnEntry> {
    // SAFETY: get_ptr_mut checked the index; the slot is this CPU's, and
    // an XDP run is not preempted by another on its CPU: no one else
    // writes it while this run reads it.
    unsafe {
        if let Some(s) = at.v4.as_ref() {
            if s.key[0] != k4[0] || s.key[1] != k4[1] {
                return None;
            }
            if stamp.wrapping_sub(s.stamp) >= FLOW_CACHE_JIFFIES {
                return None;
            }
            return Some(s.entry);
        }
        let s = at.v6.as_ref()?;
        let w = words6(p);
        // The ten words compared without a branch each.
        let d = s.key.iter().zip(&w).fold(0, |d, (a, b)| d | (a ^ b));
        if d != 0 || stamp.wrapping_sub(s.stamp) >= FLOW_CACHE_JIFFIES {
            return None;
        }
        Some(s.entry)
    }
}

/// Slot `at` made this CPU's copy of the flow's entry, as the LRU has it,
/// under `stamp` (taken before the LRU was read or written).
#[inline(always)]
pub fn put(at: &At, p: &Parsed, k4: &[u64; 2], entry: &ConnEntry, stamp: u64) {
    // SAFETY: as in `get`.
    unsafe {
        if let Some(s) = at.v4.as_mut() {
            s.key = *k4;
            s.entry = *entry;
            s.stamp = stamp;
        } else if let Some(s) = at.v6.as_mut() {
            s.key = words6(p);
            s.entry = *entry;
            s.stamp = stamp;
        }
    }
}

/// Slot `at` emptied: it serves no flow until filled again (its stamp
/// 2^63 from `stamp`: as far as the generation can be).
#[inline(always)]
pub fn clear(at: &At, stamp: u64) {
    // SAFETY: as in `get`.
    unsafe {
        if let Some(s) = at.v4.as_mut() {
            s.stamp = stamp ^ (1 << 63);
        } else if let Some(s) = at.v6.as_mut() {
            s.stamp = stamp ^ (1 << 63);
        }
    }
}
