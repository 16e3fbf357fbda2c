//! Map names and sizes: the one place both sides take them from.

/// (address, port, protocol) -> `VipMeta`.
pub const VIPS: &str = "XLB_VIPS";
/// Array of maps: vip_id -> that VIP's Maglev table (array of backend ids).
pub const MAGLEV_TABLES: &str = "XLB_MAGLEV_TABLES";
/// backend id -> `Backend`.
pub const BACKENDS: &str = "XLB_BACKENDS";
/// Per-CPU `Counters` per vip_id.
pub const VIP_STATS: &str = "XLB_VIP_STATS";
/// Per-CPU `Counters` per backend id.
pub const BACKEND_STATS: &str = "XLB_BACKEND_STATS";
/// Per-CPU `Counters` per XDP action (index = action value).
pub const ACTION_STATS: &str = "XLB_ACTION_STATS";
/// Per-CPU `Counters` per drop reason (`stats::DropReason`).
pub const DROP_STATS: &str = "XLB_DROP_STATS";
/// Single `GlobalConfig` entry.
pub const CONFIG: &str = "XLB_CONFIG";
/// LRU: flow (`hash::FlowWords`) -> backend id, so a flow keeps its backend
/// when tables change.
pub const CONNS: &str = "XLB_CONNS";

/// Every map the balancer object must define.
pub const ALL: [&str; 9] = [
    CONNS,
    VIPS,
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

pub const MAX_VIPS: u32 = 256;
pub const MAX_BACKENDS: u32 = 4096;
/// Connection-table entries (about 100 bytes each in the kernel).
pub const CONN_TABLE_SIZE: u32 = 1 << 18;
/// Inner tables are created with BPF_F_INNER_MAP, so each VIP's table may have
/// its own size; this is only the size of the template in the object.
pub const MAGLEV_TEMPLATE_SIZE: u32 = 65537;
/// Largest table size the controller accepts (the largest prime below 2^20).
pub const MAX_TABLE_SIZE: u32 = 1_048_573;
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// BPF_F_INNER_MAP: lets inner arrays of one outer map differ in max_entries.
pub const BPF_F_INNER_MAP: u32 = 1 << 12;
