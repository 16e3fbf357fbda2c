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
/// A tunnelled frame with no next hop: bpf_fib_lookup named none and no
/// gateway MAC is configured.
pub const DROP_NO_ROUTE: u32 = 2;
/// The frame could not be grown for the outer headers (bpf_xdp_adjust_head).
pub const DROP_ENCAP_FAILED: u32 = 3;
/// The encapsulated packet would exceed the MTU and no ICMP error could be
/// built in its place.
pub const DROP_TOO_BIG: u32 = 4;
/// A packet to a VIP address that the parser does not handle, dropped by
/// `unhandled = "drop"` (the default): an IPv6 extension header other than
/// one fragment header ...
pub const DROP_UNHANDLED_EXT_HEADER: u32 = 5;
/// ... a second VLAN tag (802.1Q in 802.1Q, or an 802.1ad outer tag) ...
pub const DROP_UNHANDLED_VLAN: u32 = 6;
/// ... a later fragment whose first fragment was not seen ...
pub const DROP_UNHANDLED_FRAGMENT: u32 = 7;
/// ... an ICMP message other than an echo request or a "fragmentation
/// needed" / "packet too big".
pub const DROP_UNHANDLED_ICMP: u32 = 8;
pub const DROP_REASON_COUNT: u32 = 9;
pub const DROP_REASON_NAMES: [&str; DROP_REASON_COUNT as usize] = [
    "no_backend",
    "no_config",
    "no_route",
    "encap_failed",
    "too_big",
    "unhandled_ext_header",
    "unhandled_vlan",
    "unhandled_fragment",
    "unhandled_icmp",
];

/// Data-plane events, counted per CPU in EVENT_STATS (one u64 each): what the
/// connection table, the fragment tracker and the ICMP paths did.
/// A VIP packet whose flow the connection table knew.
pub const EV_CONN_HIT: u32 = 0;
/// A VIP packet hashed onto the Maglev table (and remembered).
pub const EV_CONN_MISS: u32 = 1;
/// The connection table named a backend that is gone (or now another
/// VIP's): the flow was hashed onto the table again.
pub const EV_CONN_RESTEER: u32 = 2;
/// The first fragment of a VIP datagram: its ports were remembered.
pub const EV_FRAG_FIRST: u32 = 3;
/// A later fragment that found its datagram's ports.
pub const EV_FRAG_FOLLOW: u32 = 4;
/// A later fragment whose first fragment was not seen: passed to the stack.
pub const EV_FRAG_UNKNOWN: u32 = 5;
/// An ICMP "fragmentation needed" / "packet too big" about a VIP flow,
/// steered to that flow's backend.
pub const EV_ICMP_ERROR_STEERED: u32 = 6;
/// An ICMP echo request to a VIP address, answered.
pub const EV_ICMP_ECHO_REPLY: u32 = 7;
/// A packet too big for the tunnel, answered with ICMP.
pub const EV_ICMP_TOO_BIG_SENT: u32 = 8;
/// bpf_fib_lookup could not name the next hop; the gateway MAC was used.
pub const EV_FIB_FALLBACK: u32 = 9;
/// A VIP packet that carried an 802.1Q tag.
pub const EV_VLAN: u32 = 10;
/// A packet to a VIP address the parser does not handle, passed to the
/// host's stack by `unhandled = "pass"`, by reason (as the
/// `DROP_UNHANDLED_*` reasons of the packets `unhandled = "drop"` drops).
pub const EV_UNHANDLED_EXT_HEADER_PASSED: u32 = 11;
pub const EV_UNHANDLED_VLAN_PASSED: u32 = 12;
pub const EV_UNHANDLED_FRAGMENT_PASSED: u32 = 13;
pub const EV_UNHANDLED_ICMP_PASSED: u32 = 14;
pub const EVENT_COUNT: u32 = 15;
pub const EVENT_NAMES: [&str; EVENT_COUNT as usize] = [
    "conn_hit",
    "conn_miss",
    "conn_resteer",
    "frag_first",
    "frag_follow",
    "frag_unknown",
    "icmp_error_steered",
    "icmp_echo_reply",
    "icmp_too_big_sent",
    "fib_fallback",
    "vlan",
    "unhandled_ext_header_passed",
    "unhandled_vlan_passed",
    "unhandled_fragment_passed",
    "unhandled_icmp_passed",
];
