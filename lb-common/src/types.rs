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
    /// Reserved for per-VIP options (forwarding method, hash mode); zero today.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<VipMeta>() == 16);

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
    pub family: u8,
    /// The backend's own address (tunnels and health checks; unused by L2 DSR).
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<Backend>() == 24);

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
    pub _pad: [u8; 2],
    /// Fleet-wide seed of the flow hash: every node with the same seed and
    /// tables sends a flow to the same backend.
    pub hash_seed: u32,
    /// `LAYOUT_VERSION` of the controller that wrote the maps.
    pub layout_version: u32,
}
const _: () = assert!(size_of::<GlobalConfig>() == 16);

/// Bumped whenever a map's key or value layout changes.
pub const LAYOUT_VERSION: u32 = 2;

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type is #[repr(C)], Pod (bytemuck-checked), with no padding holes.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipMeta {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::GlobalConfig {}
    unsafe impl aya::Pod for crate::hash::FlowWords {}
}
