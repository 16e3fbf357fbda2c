//! The decap program's maps (lb-ebpf/src/decap.rs), shared with `xlb decap`
//! (lb-dataplane/src/decap.rs) like the balancer's are: one definition for
//! both compilers.

use bytemuck::{Pod, Zeroable};
use core::mem::size_of;
use core::net::IpAddr;

use crate::{FAMILY_V4, FAMILY_V6};

/// The XDP program in the decap object.
pub const PROGRAM: &str = "xlb_decap";
/// Host address (`DecapAddr`) -> 1: outer destinations to decapsulate for.
pub const ADDRS_MAP: &str = "XLB_DECAP_ADDRS";
/// The single `DecapConfig`.
pub const CONFIG_MAP: &str = "XLB_DECAP_CONFIG";
/// Per-CPU u64 per outcome (`STAT_*`), indexed as `STAT_NAMES`.
pub const STATS_MAP: &str = "XLB_DECAP_STATS";
/// LPM trie: outer source prefix (`SourceKey`) -> 1: the balancers a tunnel
/// packet is accepted from (`xlb decap --from`). A tunnel packet for this
/// host from any other source is dropped (`STAT_SOURCE_REFUSED`).
pub const SOURCES_MAP: &str = "XLB_DECAP_SOURCES";
/// Every map the decap object must define.
pub const MAPS: [&str; 4] = [ADDRS_MAP, CONFIG_MAP, STATS_MAP, SOURCES_MAP];
/// Entries of `ADDRS_MAP` (userspace refuses more addresses).
pub const MAX_ADDRS: usize = 1024;
/// Entries of `SOURCES_MAP` (userspace refuses more prefixes).
pub const MAX_SOURCES: usize = 1024;

/// Counter indices of `STATS_MAP`. Decapsulated frames are counted by kind
/// and outer family.
pub const STAT_IPIP4: u32 = 0;
pub const STAT_IPIP6: u32 = 1;
pub const STAT_GUE4: u32 = 2;
pub const STAT_GUE6: u32 = 3;
/// Passed untouched: not a tunnel packet for this host.
pub const STAT_NOT_OURS: u32 = 4;
/// Passed untouched (or dropped, when the frame was already cut): a tunnel
/// packet for this host that cannot be decapsulated.
pub const STAT_MALFORMED: u32 = 5;
/// Dropped: a tunnel packet for this host from an outer source outside
/// `SOURCES_MAP`.
pub const STAT_SOURCE_REFUSED: u32 = 6;
pub const STAT_COUNT: usize = 7;
/// What each counter counts, in index order.
pub const STAT_NAMES: [&str; STAT_COUNT] = [
    "ipip4",
    "ipip6",
    "gue4",
    "gue6",
    "not_ours",
    "malformed",
    "source_refused",
];

/// Key of `ADDRS_MAP`: an IPv4 address fills the first four bytes of `addr`,
/// the rest are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct DecapAddr {
    pub addr: [u8; 16],
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<DecapAddr>() == 20);

/// An address as the decap maps hold it: (family, 16 bytes, an IPv4
/// address in the first four and zeros after).
fn family_and_bytes(ip: IpAddr) -> (u8, [u8; 16]) {
    match ip {
        IpAddr::V4(v4) => {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(&v4.octets());
            (FAMILY_V4, addr)
        }
        IpAddr::V6(v6) => (FAMILY_V6, v6.octets()),
    }
}

impl DecapAddr {
    pub fn new(ip: IpAddr) -> Self {
        let (family, addr) = family_and_bytes(ip);
        Self {
            addr,
            family,
            _pad: [0; 3],
        }
    }
}

/// The data of a `SOURCES_MAP` key (after the LPM trie's u32 prefix
/// length, in bits): the family byte, then the address. The family takes
/// the first 8 bits of every prefix, so one trie holds both families and an
/// IPv4 prefix never matches an IPv6 source: a prefix of `n` address bits
/// has length `8 + n` (`SourceKey::prefix_len`). An IPv4 address fills the
/// first four bytes of `addr`, the rest are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SourceKey {
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<SourceKey>() == 17);

impl SourceKey {
    /// The key of a source address (or a prefix's first address).
    pub fn new(ip: IpAddr) -> Self {
        let (family, addr) = family_and_bytes(ip);
        Self { family, addr }
    }

    /// The LPM trie's prefix length for `bits` bits of address: the family
    /// byte's 8 first.
    pub const fn prefix_len(bits: u8) -> u32 {
        8 + bits as u32
    }
}

/// The single entry of `CONFIG_MAP`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct DecapConfig {
    /// GUE destination port, network byte order; 0: GUE off.
    pub gue_port_be: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<DecapConfig>() == 8);

#[cfg(feature = "user")]
mod user {
    // SAFETY: bytemuck::Pod is derived for it (checked #[repr(C)], no padding holes),
    // so any bytes the kernel hands back are a valid value.
    unsafe impl aya::Pod for super::DecapAddr {}
    // SAFETY: bytemuck::Pod is derived for it (checked #[repr(C)], no padding holes).
    unsafe impl aya::Pod for super::DecapConfig {}
    // SAFETY: bytemuck::Pod is derived for it (checked #[repr(C)], u8 fields only).
    unsafe impl aya::Pod for super::SourceKey {}
}
