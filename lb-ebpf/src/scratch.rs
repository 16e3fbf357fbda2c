//! Per-packet working memory. The BPF stack is 512 bytes for the whole call
//! chain; what a packet's way needs (the parsed headers, the fragment key,
//! the outer addresses and the route lookup's parameters) lives in one
//! per-CPU map value instead. XDP runs to completion on its CPU without being
//! preempted by another XDP run there, so one slot per CPU is enough.

use aya_ebpf::{bindings::bpf_fib_lookup, btf_maps::PerCpuArray, macros::btf_map};
use lb_common::{
    VipKey,
    hash::{FlowWords, FragKey},
};

/// A TCP or UDP packet (or a fragment of one) for a VIP.
pub const KIND_FLOW: u8 = 0;
/// An ICMP echo request (answered when the address has an echo entry).
pub const KIND_ECHO: u8 = 1;
/// An ICMP "fragmentation needed" / "packet too big" about a VIP flow; the
/// flow is the quoted one, reversed (client to VIP).
pub const KIND_ICMP_ERROR: u8 = 2;
/// Not parsed to the end, and the parser does not handle it, but its
/// destination address was read (`vip.addr`, `family`): a VIP address's
/// `unhandled` setting decides. An IPv6 extension header other than one
/// fragment header ...
pub const KIND_UNHANDLED_EXT_HEADER: u8 = 3;
/// ... a second VLAN tag ...
pub const KIND_UNHANDLED_VLAN: u8 = 4;
/// ... a later fragment whose first was not seen ...
pub const KIND_UNHANDLED_FRAGMENT: u8 = 5;
/// ... ICMP other than an echo request or the two errors handled.
pub const KIND_UNHANDLED_ICMP: u8 = 6;

/// Not a fragment (or an atomic IPv6 fragment).
pub const FRAG_NONE: u8 = 0;
/// The first fragment: it carries the ports, which are remembered.
pub const FRAG_FIRST: u8 = 1;
/// A later fragment: its ports came from the fragment tracker.
pub const FRAG_LATER: u8 = 2;

/// What the parser found.
#[repr(C)]
pub struct Parsed {
    /// The destination as a VIP key (exact port; the lookup tries port 0 next).
    pub vip: VipKey,
    /// The flow as the hash and the connection table see it.
    pub flow: FlowWords,
    /// The datagram, for fragments.
    pub frag_key: FragKey,
    /// Offset of the IP header: 14, or 18 after an 802.1Q tag.
    pub l3_off: u32,
    /// The IP packet's length as its header declares it (header included).
    pub ip_len: u32,
    /// Bytes of L4 segment (the IP payload after any fragment header).
    pub l4_len: u32,
    /// Offset of the L4 header.
    pub l4_off: u32,
    pub kind: u8,
    /// `FAMILY_V4` or `FAMILY_V6` (also in `vip.family`).
    pub family: u8,
    /// A TCP SYN without ACK.
    pub new_connection: u8,
    /// The frame carries an 802.1Q tag.
    pub vlan: u8,
    /// `FRAG_*`.
    pub frag: u8,
    /// IPv4 "don't fragment".
    pub df: u8,
    /// IPv4 TOS / IPv6 traffic class, copied to the outer header.
    pub tos: u8,
    /// The L4 checksum covers exactly this segment and is set: the outer GUE
    /// checksum over IPv6 can be derived from it (local checksum offload).
    pub lco: u8,
}

// `lookup::slot` reads `Parsed::vip` as five aligned u32: it must sit at
// a 4-aligned offset of a 4-aligned struct placed at the start of the
// scratch (map values are 8-aligned).
const _: () = assert!(core::mem::offset_of!(Parsed, vip) == 0);
const _: () = assert!(core::mem::align_of::<Parsed>() >= 4);

/// The working memory of one packet.
#[repr(C)]
pub struct Scratch {
    /// First: `lookup::slot` relies on its offset (0).
    pub p: Parsed,
    /// Outer (tunnel) source and destination, 4 or 16 bytes used.
    pub outer_src: [u8; 16],
    pub outer_dst: [u8; 16],
    /// bpf_fib_lookup's parameters and result.
    pub fib: bpf_fib_lookup,
    /// The chosen backend (the next-hop cache's key).
    pub backend_id: u32,
    /// The flow's 5-tuple hash: the outer source, GUE port and flow label.
    pub flow_hash: u32,
}

const _: () = assert!(core::mem::offset_of!(Scratch, p) == 0);

#[btf_map]
pub static XLB_SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// This CPU's scratch.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: get_ptr_mut checked the index; the slot is this CPU's, and XDP
    // runs to completion on its CPU, so this is the only reference to it
    // (balance takes it once per packet).
    XLB_SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}
