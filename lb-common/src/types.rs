//! Map keys and values. `_be` marks fields in network byte order.

use bytemuck::{Pod, Zeroable};
use core::mem::size_of;

/// Address family tags used in keys (not the kernel's AF_* values, which differ
/// between families of operating systems; these are ours and fixed).
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers that xlb balances.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;
/// IPv4 carried in IP (outer IPv4 protocol / IPv6 next header).
pub const PROTO_IPIP: u8 = 4;
/// IPv6 carried in IP.
pub const PROTO_IPV6: u8 = 41;

/// Key of the VIP map: (address, port, protocol). An IPv4 address fills the
/// first four bytes of `addr`, the rest are zero. `port_be == 0` is the
/// wildcard entry that takes every port of the address and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct VipKey {
    pub addr: [u8; 16],
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
}
const _: () = assert!(size_of::<VipKey>() == 20);

/// Value of the VIP map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct VipMeta {
    /// Index into the Maglev outer map and the per-VIP counters.
    pub vip_id: u32,
    /// Number of slots of this VIP's Maglev table (a prime).
    pub table_size: u32,
    /// How frames reach the backend: `METHOD_*`.
    pub method: u8,
    /// What the flow hash covers: `HASH_*`.
    pub hash: u8,
    /// `VIP_F_*`.
    pub flags: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(size_of::<VipMeta>() == 16);

/// L2 direct server return: the backend holds the VIP; only the Ethernet
/// addresses change.
pub const METHOD_L2_DSR: u8 = 0;
/// IP-in-IP: an outer IPv4 or IPv6 header to the backend's address (IPv4 in
/// IPv4, IPv6 in IPv6, IPv4 in IPv6).
pub const METHOD_IPIP: u8 = 1;
/// GUE variant 1 (direct IP encapsulation): outer IP + UDP to the GUE port,
/// the inner IP packet as the UDP payload; the UDP source port follows the
/// flow so the backend's NIC spreads flows over its queues (RSS).
pub const METHOD_GUE: u8 = 2;

/// Hash the 5-tuple (default).
pub const HASH_FIVE_TUPLE: u8 = 0;
/// Hash the source address only: a client sticks to one backend.
pub const HASH_SOURCE: u8 = 1;
/// Hash addresses and protocol, not ports (for UDP services whose clients
/// change ports, or whose datagrams fragment).
pub const HASH_NO_PORTS: u8 = 2;

/// The entry is the ICMP echo entry of a VIP address (key: the address, port
/// 0, protocol ICMP or ICMPv6): echo requests to it are answered.
pub const VIP_F_ECHO_REPLY: u8 = 1;

/// The entry is the address entry of a VIP address (the ICMP echo entry's
/// key; present for every VIP address, with `VIP_F_ECHO_REPLY` only when
/// echo requests are answered): packets to the address that the parser does
/// not handle are looked up by it.
pub const VIP_F_ADDRESS: u8 = 2;

/// In an address entry: packets to the address that the parser does not
/// handle are passed to the host's stack (`unhandled = "pass"`); without it
/// they are dropped.
pub const VIP_F_UNHANDLED_PASS: u8 = 4;

/// The entry may be used for forwarding. A zeroed (never written or retired)
/// entry lacks it, so a table slot that names it drops instead of sending the
/// frame to a zero MAC.
pub const BACKEND_F_VALID: u8 = 1;

/// Value of the backend map, indexed by backend id (the value of a Maglev slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Backend {
    /// Destination MAC for L2 direct server return.
    pub mac: [u8; 6],
    pub flags: u8,
    /// `FAMILY_V4` or `FAMILY_V6`: the family of `addr`.
    pub family: u8,
    /// The backend's own address: the tunnel destination.
    pub addr: [u8; 16],
    /// The VIP the entry belongs to. A connection-table entry is used only if
    /// its backend still belongs to the packet's VIP: ids are reused by later
    /// applies, and an old flow must never reach another VIP's backend.
    pub vip_id: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Backend>() == 32);

/// What every counter map holds, one per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    /// Packets that missed the connection table and were hashed onto the
    /// Maglev table: TCP SYNs, first packets of UDP flows, evicted flows.
    /// Zero in the action and drop counters.
    pub new_flows: u64,
}
const _: () = assert!(size_of::<Counters>() == 24);

/// Host-wide settings, the single entry of the config map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct GlobalConfig {
    /// Source MAC for frames the balancer sends: the interface's own.
    pub iface_mac: [u8; 6],
    /// Next hop for tunnelled frames when bpf_fib_lookup cannot name one
    /// (no route or no neighbour entry yet); all zero: none, such frames drop.
    pub gateway_mac: [u8; 6],
    /// Fleet-wide seed of the flow hash: every node with the same seed and
    /// tables sends a flow to the same backend.
    pub hash_seed: u32,
    /// `LAYOUT_VERSION` of the controller that wrote the maps.
    pub layout_version: u32,
    /// The interface the balancer is attached to (bpf_fib_lookup's ifindex).
    pub ifindex: u32,
    /// The interface's MTU: a tunnelled packet whose outer IP packet exceeds
    /// it is answered with ICMP "fragmentation needed" / "packet too big".
    pub mtu: u16,
    /// GUE destination port, network byte order.
    pub gue_port_be: u16,
    /// `GLOBAL_F_*`.
    pub flags: u32,
    /// Outer IPv4 source of tunnelled frames: `tunnel_src_v4 | (flow hash &
    /// tunnel_src_v4_hostmask)`, so the outer addresses vary with the inner
    /// flow and the backend's NIC spreads IPIP flows over its queues.
    pub tunnel_src_v4: [u8; 4],
    /// Host bits of the IPv4 tunnel source prefix (network byte order).
    pub tunnel_src_v4_hostmask: [u8; 4],
    /// Outer IPv6 source prefix; the flow hash fills the hostmask's bits of
    /// the last four bytes.
    pub tunnel_src_v6: [u8; 16],
    /// Host bits within the last four bytes of the IPv6 source (network order).
    pub tunnel_src_v6_hostmask: [u8; 4],
    pub _pad: u32,
}
const _: () = assert!(size_of::<GlobalConfig>() == 64);

/// `GlobalConfig.flags`: some VIP has port 0 (every port), so a packet whose
/// exact (address, port, protocol) is no VIP is looked up again with port 0.
/// Without it a packet not for a VIP costs one hash lookup, not two.
pub const GLOBAL_F_PORT_WILDCARD: u32 = 1;

/// Default GUE destination port (Katran's).
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// Bumped whenever a map's key or value layout changes.
/// 4: the drop-reason and event counter arrays grew (the `unhandled_*`
/// reasons and events).
/// 5: a connection-table value is a `hash::ConnEntry` (backend id and the
/// flow's hash), not a bare backend id.
/// 6: IPv4 flows live in `XLB_CONNS_V4` (16-byte key), `XLB_CONNS` holds
/// IPv6 flows only. Pins of layout 5 are upgraded in place
/// (`LAYOUT_UPGRADES_FROM`): their IPv4 flows are moved into the new map.
pub const LAYOUT_VERSION: u32 = 6;
/// The older layout a start may take over and upgrade (docs/RESTART.md).
pub const LAYOUT_UPGRADES_FROM: u32 = 5;

#[cfg(feature = "user")]
mod user {
    // SAFETY: bytemuck::Pod is derived for it (checked #[repr(C)], no padding holes),
    // so any bytes the kernel hands back are a valid value.
    unsafe impl aya::Pod for super::VipKey {}
    // SAFETY: bytemuck::Pod is derived for it (checked #[repr(C)], no padding holes).
    unsafe impl aya::Pod for super::VipMeta {}
    // SAFETY: bytemuck::Pod is derived for it (checked #[repr(C)], no padding holes).
    unsafe impl aya::Pod for super::Backend {}
    // SAFETY: bytemuck::Pod is derived for it (checked #[repr(C)], no padding holes).
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: bytemuck::Pod is derived for it (checked #[repr(C)], no padding holes).
    unsafe impl aya::Pod for super::GlobalConfig {}
}
