//! The balancer's maps. Names and sizes come from lb_common::maps; the
//! `#[btf_map]` statics must carry those names, and a test checks the built
//! object against lb_common::maps::ALL.

use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use lb_common::{
    Backend, Counters, GlobalConfig, VipKey, VipMeta,
    hash::{ConnEntry, FlowKey4, FlowWords, FragKey},
    maps::{
        BPF_F_MMAPABLE, CONN_TABLE_SIZE, FRAG_TABLE_SIZE, MAGLEV_TABLE_FLAGS, MAGLEV_TEMPLATE_SIZE,
        MAX_BACKENDS, MAX_VIPS, VIP_ENTRIES,
    },
    stats::{ACTION_COUNT, DROP_REASON_COUNT, EVENT_COUNT},
    vipslot::{SOLE_WORDS, VIP_SLOTS, VipSlot},
};

/// (address, port, protocol) -> VIP id and table size, and each VIP
/// address's entry (port 0, ICMP); written by the controller.
#[btf_map]
pub static XLB_VIPS: HashMap<VipKey, VipMeta, { VIP_ENTRIES as usize }> = HashMap::new();

/// A direct-mapped copy of the VIP entries (`lb_common::vipslot`), tried
/// before XLB_VIPS; mmapable, so the controller orders its writes (the key's
/// last word last).
#[btf_map]
pub static XLB_VIP_SLOTS: Array<VipSlot, { VIP_SLOTS as usize }, { BPF_F_MMAPABLE as usize }> =
    Array::new();

/// One bit per VIP slot (`lb_common::vipslot::sole_bit`): set when the
/// slot's key is the only VIP entry that falls on it, so a miss there
/// needs no XLB_VIPS lookup; mmapable, so the controller orders its writes
/// with the slots'.
#[btf_map]
pub static XLB_VIP_SOLE: Array<u64, { SOLE_WORDS as usize }, { BPF_F_MMAPABLE as usize }> =
    Array::new();

/// vip_id -> that VIP's Maglev table (slot -> backend id). The controller
/// builds a new inner array aside and swaps it in with one update, so a packet
/// sees either the old table or the new one, never a mix. BPF_F_INNER_MAP lets
/// each VIP's table have its own (prime) size; BPF_F_MMAPABLE lets the
/// controller fill and check a table through memory.
#[btf_map]
pub static XLB_MAGLEV_TABLES: ArrayOfMaps<
    Array<u32, { MAGLEV_TEMPLATE_SIZE as usize }, { MAGLEV_TABLE_FLAGS as usize }>,
    { MAX_VIPS as usize },
> = ArrayOfMaps::new();

/// backend id -> where to send the frame. Mmapable, so the controller's
/// drift check reads every entry without a syscall each.
#[btf_map]
pub static XLB_BACKENDS: Array<Backend, { MAX_BACKENDS as usize }, { BPF_F_MMAPABLE as usize }> =
    Array::new();

/// Counters per CPU and VIP, slot `cpu * MAX_VIPS + vip_id` (see
/// lb_common::maps::VIP_STATS for why not a per-CPU array). The size here is
/// one CPU's stripe; the loader sets the real size, stripe x possible CPUs.
#[btf_map]
pub static XLB_VIP_STATS: Array<Counters, { MAX_VIPS as usize }, { BPF_F_MMAPABLE as usize }> =
    Array::new();

/// Counters per CPU and backend, slot `cpu * MAX_BACKENDS + backend_id`.
#[btf_map]
pub static XLB_BACKEND_STATS: Array<
    Counters,
    { MAX_BACKENDS as usize },
    { BPF_F_MMAPABLE as usize },
> = Array::new();

/// Per-CPU packets and bytes per XDP action.
#[btf_map]
pub static XLB_ACTION_STATS: PerCpuArray<Counters, { ACTION_COUNT as usize }> = PerCpuArray::new();

/// Per-CPU packets and bytes per drop reason.
#[btf_map]
pub static XLB_DROP_STATS: PerCpuArray<Counters, { DROP_REASON_COUNT as usize }> =
    PerCpuArray::new();

/// Host-wide settings: the interface MAC and the hash seed.
#[btf_map]
pub static XLB_CONFIG: Array<GlobalConfig, 1> = Array::new();

/// Connection table of IPv6 flows: flow -> backend id and the flow's hash.
/// A known flow keeps its backend when the Maglev table changes, and a
/// tunnelled one takes its outer headers' hash bits from here instead of
/// hashing again; one LRU shared by all CPUs, so a flow whose packets
/// arrive on several queues still finds its entry.
#[btf_map]
pub static XLB_CONNS: LruHashMap<FlowWords, ConnEntry, { CONN_TABLE_SIZE as usize }> =
    LruHashMap::new();

/// Connection table of IPv4 flows, as XLB_CONNS, keyed by 16 bytes instead
/// of 40 (a hash map has one key size): the kernel's jhash2 and `memcmp`
/// of the key are the largest part of a known flow's lookup.
#[btf_map]
pub static XLB_CONNS_V4: LruHashMap<FlowKey4, ConnEntry, { CONN_TABLE_SIZE as usize }> =
    LruHashMap::new();

/// Per-CPU count of each data-plane event (`lb_common::stats::EV_*`).
#[btf_map]
pub static XLB_EVENT_STATS: PerCpuArray<u64, { EVENT_COUNT as usize }> = PerCpuArray::new();

/// Fragment tracker: datagram -> the ports word its first fragment carried.
#[btf_map]
pub static XLB_FRAGS: LruHashMap<FragKey, u32, { FRAG_TABLE_SIZE as usize }> = LruHashMap::new();
