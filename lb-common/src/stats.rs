//! Indices of the action and drop-reason counters.

/// XDP actions as the kernel numbers them; also the index into ACTION_STATS.
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
pub const ACTION_COUNT: u32 = 5;
pub const ACTION_NAMES: [&str; ACTION_COUNT as usize] =
    ["aborted", "drop", "pass", "tx", "redirect"];

/// Why the balancer dropped a frame; the index into DROP_STATS.
pub const DROP_NO_BACKEND: u32 = 0;
pub const DROP_NO_CONFIG: u32 = 1;
pub const DROP_REASON_COUNT: u32 = 2;
pub const DROP_REASON_NAMES: [&str; DROP_REASON_COUNT as usize] = ["no_backend", "no_config"];
