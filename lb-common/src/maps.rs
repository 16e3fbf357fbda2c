//! Map names and sizes: the one place both sides take them from.

/// (address, port, protocol) -> `VipMeta`.
pub const VIPS: &str = "XLB_VIPS";
/// `vipslot::VipSlot`s: a direct-mapped copy of the VIP entries in front of
/// `VIPS`, indexed by `vipslot::slot_index` (mmapable; written by the
/// controller, `VIPS` stays the truth).
pub const VIP_SLOTS: &str = "XLB_VIP_SLOTS";
/// One bit per VIP slot (`vipslot::sole_bit`): set when no key that falls
/// on the slot is in `VIPS` without being the slot's, so a packet whose
/// key misses its slot is for no VIP without a `VIPS` lookup (mmapable;
/// written by the controller; all clear: look `VIPS` up, as before).
pub const VIP_SOLE: &str = "XLB_VIP_SOLE";
/// Array of maps: vip_id -> that VIP's Maglev table (array of backend ids).
pub const MAGLEV_TABLES: &str = "XLB_MAGLEV_TABLES";
/// backend id -> `Backend`.
pub const BACKENDS: &str = "XLB_BACKENDS";
/// `Counters` per CPU and vip_id, CPU-striped: slot `cpu * MAX_VIPS + vip_id`.
/// A plain array with BPF_F_MMAPABLE rather than a per-CPU array, so the
/// collector reads every counter from memory instead of one syscall per
/// entry (1,000 VIPs x 64 backends would cost ~65 ms of syscalls a second).
pub const VIP_STATS: &str = "XLB_VIP_STATS";
/// `Counters` per CPU and backend id: slot `cpu * MAX_BACKENDS + backend_id`.
pub const BACKEND_STATS: &str = "XLB_BACKEND_STATS";
/// Per-CPU `Counters` per XDP action (index = action value).
pub const ACTION_STATS: &str = "XLB_ACTION_STATS";
/// Per-CPU `Counters` per drop reason (`stats::DropReason`).
pub const DROP_STATS: &str = "XLB_DROP_STATS";
/// Single `GlobalConfig` entry.
pub const CONFIG: &str = "XLB_CONFIG";
/// LRU: IPv6 flow (`hash::FlowWords`) -> `hash::ConnEntry` (backend id and
/// the flow's hash), so a flow keeps its backend when tables change. Before
/// layout 6 it held IPv4 flows too (now in `CONNS_V4`).
pub const CONNS: &str = "XLB_CONNS";
/// LRU: IPv4 flow (`hash::FlowKey4`, 16 bytes) -> `hash::ConnEntry`. A hash
/// map has one key size: IPv4 flows get a table of their own so that the
/// kernel hashes and compares 16 bytes, not 40. Userspace tells the
/// families apart by the words' shape (`FlowKey4::of`): an IPv6 flow
/// between two addresses whose last 96 bits are zero is written there by
/// userspace (held flows from other nodes), where the program never looks
/// for it (it is hashed again, as a flow without an entry).
pub const CONNS_V4: &str = "XLB_CONNS_V4";
/// The generation of the connection tables' contents, one u64 in an
/// mmapable array: userspace adds 1 after each of its writes and deletes,
/// and the program's flow cache (each CPU's copy of the entries it used
/// last, docs/DATAPLANE.md) serves no slot filled under another. The
/// program's own map, like the cache: not pinned and not in `ALL`.
pub const FLOW_CACHE_GEN: &str = "XLB_FLOW_CACHE_GEN";

/// Per-CPU u64 per data-plane event (`stats::EV_*`).
pub const EVENT_STATS: &str = "XLB_EVENT_STATS";
/// LRU: IP datagram (`FragKey`) -> the ports its first fragment carried, so
/// every fragment of a datagram goes where its first went.
pub const FRAGS: &str = "XLB_FRAGS";

/// The trace switch: one `trace::TraceConfig` (`xlb trace`, `xlb capture`).
pub const TRACE: &str = "XLB_TRACE";
/// Ring buffer of `trace::TraceRecord`s, one per traced packet.
pub const TRACE_RING: &str = "XLB_TRACE_RING";

/// Every map the balancer object must define.
pub const ALL: [&str; 16] = [
    TRACE,
    TRACE_RING,
    EVENT_STATS,
    FRAGS,
    CONNS,
    CONNS_V4,
    VIPS,
    VIP_SLOTS,
    VIP_SOLE,
    MAGLEV_TABLES,
    BACKENDS,
    VIP_STATS,
    BACKEND_STATS,
    ACTION_STATS,
    DROP_STATS,
    CONFIG,
];

/// Name of the balancer's XDP program in the object.
pub const BALANCER_PROGRAM: &str = "xlb_balancer";

pub const MAX_VIPS: u32 = 1024;
/// Entries of XLB_VIPS: one per VIP, and one address entry (ICMP echo,
/// `unhandled`) per distinct VIP address, so 1,024 VIPs on 1,024 addresses
/// fit.
pub const VIP_ENTRIES: u32 = 2 * MAX_VIPS;
/// Backend ids are per (VIP, backend): 1,024 VIPs x 64 backends.
pub const MAX_BACKENDS: u32 = 65536;
/// Connection-table entries when the config names no size (about 100 bytes
/// each in the kernel); `conn_table_size` in the config sets it at load.
/// Each family's table (`CONNS`, `CONNS_V4`) has this many entries.
pub const CONN_TABLE_SIZE: u32 = 1 << 18;
/// Datagrams whose fragments are tracked at once.
pub const FRAG_TABLE_SIZE: u32 = 8192;
/// BPF_F_NO_COMMON_LRU: each CPU evicts from its own LRU list (no shared
/// list lock on insert); the hash table itself stays shared, so a flow whose
/// packets arrive on several CPUs still finds its entry.
pub const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
/// Inner tables are created with BPF_F_INNER_MAP, so each VIP's table may have
/// its own size; this is only the size of the template in the object.
pub const MAGLEV_TEMPLATE_SIZE: u32 = 65537;
/// Largest table size the controller accepts (the largest prime below 2^20).
pub const MAX_TABLE_SIZE: u32 = 1_048_573;
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// BPF_F_INNER_MAP: lets inner arrays of one outer map differ in max_entries.
pub const BPF_F_INNER_MAP: u32 = 1 << 12;
/// BPF_F_MMAPABLE: an array userspace can mmap. Maglev tables are written and
/// checked through it, counters read through it.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;
/// Flags of every Maglev inner table (the template's and each created one's
/// must be equal for the kernel to accept the swap).
pub const MAGLEV_TABLE_FLAGS: u32 = BPF_F_INNER_MAP | BPF_F_MMAPABLE;
