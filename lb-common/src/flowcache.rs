//! The flow cache: a per-CPU, direct-mapped copy of the IPv4 connection-table
//! entries this CPU used last, tried before the LRU (`maps::CONNS_V4`). A hit
//! costs a multiply, one array load and a 16-byte compare instead of the
//! kernel's jhash2 of the key, the bucket walk and the element's lines.
//!
//! The LRU stays the truth. A slot is written by the program only, from the
//! LRU: when a lookup found the flow there, or when the program filed a new
//! flow (hashed) into it. A slot therefore holds what the LRU held for its
//! flow at some moment; what may change the LRU's entry since, without this
//! CPU seeing it, is bounded by `RECHECK`: after that many hits a slot's
//! flow is looked up in the LRU again (which also keeps the LRU's entry of
//! a busy flow referenced, so the LRU does not evict it as idle), and the
//! slot follows what the LRU says (another backend, or no entry: the flow
//! is hashed as before). Userspace that deletes an entry clears its slot on
//! every CPU (`xlb_dataplane::ConnFlows::remove`).

use bytemuck::{Pod, Zeroable};

/// Slots per CPU: a power of two. 4,096 x 32 bytes = 128 KiB a CPU.
pub const FLOW_CACHE_SLOTS: u32 = 4096;
const _: () = assert!(FLOW_CACHE_SLOTS.is_power_of_two());

/// Hits a slot serves before its flow is looked up in the LRU again.
pub const RECHECK: u32 = 64;

/// One slot: the flow's key as the program builds it (`FlowKey4::to_u64s`;
/// all zeros, no flow's key since a flow's protocol is never 0, marks an
/// empty slot), its connection-table entry, and the hits since the LRU was
/// last asked.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowCacheSlot {
    pub key: [u64; 2],
    pub backend_id: u32,
    pub flow_hash: u32,
    pub hits: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<FlowCacheSlot>() == 32);

/// The slot of an IPv4 flow's key (`FlowKey4::to_u64s`): the two words
/// folded, multiplied by 2^64 / phi, the top bits.
#[inline(always)]
pub fn slot_index(key: &[u64; 2]) -> u32 {
    let x = (key[0] ^ key[1].rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> (64 - FLOW_CACHE_SLOTS.trailing_zeros())) as u32
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: #[repr(C)], Pod (bytemuck-checked), with no padding holes.
    unsafe impl aya::Pod for super::FlowCacheSlot {}
}
