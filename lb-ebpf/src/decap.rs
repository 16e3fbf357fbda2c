//! xlb's decap program, for backends behind an xlb that tunnels (IPIP, GUE).
//! This kernel has no tunnel devices, so the backend strips the outer headers
//! itself, in XDP, and the stack sees the client's packet as if it had come
//! straight off the wire: source the client, destination the VIP (held on
//! `lo`), and the backend answers the client directly.
//!
//! A frame is decapsulated only when all of these hold: Ethernet, optionally
//! one 802.1Q tag (kept), then an outer IPv4 or IPv6 header addressed to one
//! of the host's addresses (`XLB_DECAP_ADDRS`), carrying
//! - IPIP: IPv4 (protocol 4) or IPv6 (protocol 41) in IPv4 or IPv6, or
//! - GUE variant 1: UDP to the GUE port (`XLB_DECAP_CONFIG`) whose payload is
//!   an IPv4 or IPv6 packet (no GUE header; the first nibble is the version),
//!
//! and the inner packet is whole, and the outer source is in one of the
//! balancers' prefixes (`XLB_DECAP_SOURCES`, `xlb decap --from`). Then the
//! outer IP (and UDP) header goes, the
//! Ethernet header (and tag) moves up to the inner packet with the inner
//! family's EtherType, and the frame is passed to the stack. The outer UDP
//! checksum is not checked: the stack checks the inner packet's own.
//!
//! A tunnel packet for this host from any other outer source is dropped and
//! counted (`source_refused`): decapsulated, it would reach the stack with
//! whatever inner source its sender chose, past every filter that judges
//! the outer one (CVE-2020-10136). It is judged before anything else about
//! it, so a refused sender learns nothing from how its packets are treated.
//!
//! Everything else is passed untouched, byte for byte: the host's own
//! traffic, tunnel packets for other hosts, IPv6 with extension headers,
//! outer fragments (the balancer never fragments), and tunnel
//! packets for us that are broken (counted apart, as malformed).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    helpers::{bpf_xdp_adjust_head, bpf_xdp_load_bytes},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use core::ffi::c_void;
use lb_common::{
    FAMILY_V4, FAMILY_V6, PROTO_IPIP, PROTO_IPV6, PROTO_UDP,
    decap::{
        DecapAddr, DecapConfig, MAX_ADDRS, MAX_SOURCES, STAT_COUNT, STAT_GUE4, STAT_GUE6,
        STAT_IPIP4, STAT_IPIP6, STAT_MALFORMED, STAT_NOT_OURS, STAT_SOURCE_REFUSED, SourceKey,
    },
};
use lb_ebpf::packet::{
    ETH_LEN, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPV4_FRAG_MASK, VLAN_LEN, bounds, ptr_at,
};
use network_types::{
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};

/// The host's addresses: outer destinations we decapsulate for (value 1;
/// only presence matters). Written by `xlb decap` before it attaches.
#[btf_map]
pub static XLB_DECAP_ADDRS: HashMap<DecapAddr, u8, MAX_ADDRS> = HashMap::new();

/// The GUE port; written by `xlb decap` before it attaches.
#[btf_map]
pub static XLB_DECAP_CONFIG: Array<DecapConfig, 1> = Array::new();

/// The balancers' source prefixes: a tunnel packet is decapsulated only
/// when its outer source is in one (value 1; only presence matters).
/// Written by `xlb decap --from` before it attaches; empty, every tunnel
/// packet is refused.
#[btf_map]
pub static XLB_DECAP_SOURCES: LpmTrie<SourceKey, u8, MAX_SOURCES> = LpmTrie::new();

/// Per-CPU packet counts by outcome (`STAT_*`).
#[btf_map]
pub static XLB_DECAP_STATS: PerCpuArray<u64, STAT_COUNT> = PerCpuArray::new();

/// What happens to a frame: the counter it moves and the action.
#[derive(Clone, Copy)]
enum Outcome {
    /// Decapsulated; the counter of its kind.
    Decapsulated(u32),
    NotOurs,
    /// Ours but broken: passed untouched for the stack to judge.
    Malformed,
    /// Ours, from a source outside `XLB_DECAP_SOURCES`: dropped.
    SourceRefused,
    /// The frame was already shrunk when its new Ethernet header could not be
    /// written (cannot happen: see `write_l2`); dropped, not passed as junk.
    Broken,
}

#[xdp]
pub fn xlb_decap(ctx: XdpContext) -> u32 {
    let outcome = match find_tunnel(&ctx) {
        Ok(tunnel) => strip(&ctx, &tunnel),
        Err(outcome) => outcome,
    };
    let (stat, action) = match outcome {
        Outcome::Decapsulated(stat) => (stat, xdp_action::XDP_PASS),
        Outcome::NotOurs => (STAT_NOT_OURS, xdp_action::XDP_PASS),
        Outcome::Malformed => (STAT_MALFORMED, xdp_action::XDP_PASS),
        Outcome::SourceRefused => (STAT_SOURCE_REFUSED, xdp_action::XDP_DROP),
        Outcome::Broken => (STAT_MALFORMED, xdp_action::XDP_DROP),
    };
    if let Some(n) = XLB_DECAP_STATS.get_ptr_mut(stat) {
        // SAFETY: the pointer is to this CPU's slot of a per-CPU array, valid
        // for the whole run; XDP is not preempted by another XDP run on the
        // same CPU, so nothing else writes it meanwhile.
        unsafe { *n += 1 };
    }
    action
}

/// A tunnel packet for this host, ready to strip.
struct Tunnel {
    /// Ethernet header, plus the 802.1Q tag if there is one: 14 or 18.
    l2_len: u32,
    /// Bytes to remove after the L2 header: the outer IP header (+ UDP).
    outer_len: u32,
    /// The inner packet's family: `FAMILY_V4` or `FAMILY_V6`.
    inner_family: u8,
    /// The counter of this kind of tunnel.
    stat: u32,
}

/// The outer header of a tunnel packet: what it carries, where its payload
/// starts and how long the IP header says it is.
struct Outer {
    /// IP protocol / next header of the outer packet.
    proto: u8,
    /// Offset of the outer payload (IPIP: the inner packet; GUE: UDP).
    /// Offsets and lengths that live across map lookups are u32: LLVM spills
    /// a usize known to fit in 32 bits as two 32-bit halves, and the
    /// verifier then forgets its bounds (pointer math on it is refused).
    payload_at: u32,
    /// Bytes of payload the outer IP header declares.
    payload_len: u32,
    /// The outer packet fits its frame and is not a fragment.
    whole: bool,
    /// The outer destination as a map key.
    dst: DecapAddr,
    /// The outer source as a `XLB_DECAP_SOURCES` key: all its bits.
    src: Key<SourceKey>,
    /// The counters of this outer family: (IPIP, GUE).
    stats: (u32, u32),
}

#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys live in the per-CPU scratch; passed by value they would be copied to the 512-byte stack"
)]
#[inline(always)]
fn find_tunnel(ctx: &XdpContext) -> Result<Tunnel, Outcome> {
    let eth_type: *const [u8; 2] = ptr_at(ctx, ETH_LEN - 2).ok_or(Outcome::NotOurs)?;
    // SAFETY: ptr_at checked that the two bytes lie inside the frame, which
    // nothing has moved yet; a byte array has no alignment to keep.
    let mut ether_type = u16::from_be_bytes(unsafe { *eth_type });
    let mut l2_len = ETH_LEN;
    if ether_type == ETH_P_8021Q {
        // The tag: TCI, then the inner EtherType.
        let inner: *const [u8; 2] = ptr_at(ctx, l2_len + 2).ok_or(Outcome::NotOurs)?;
        // SAFETY: as above (ptr_at, bytes).
        ether_type = u16::from_be_bytes(unsafe { *inner });
        l2_len += VLAN_LEN;
    }
    let outer = match ether_type {
        ETH_P_IPV4 => outer_v4(ctx, l2_len)?,
        ETH_P_IPV6 => outer_v6(ctx, l2_len)?,
        _ => return Err(Outcome::NotOurs),
    };
    // The shape first (cheap), then the map lookup, then the details.
    let mut whole = outer.whole;
    let (inner_at, inner_len, stat) = match outer.proto {
        PROTO_IPIP | PROTO_IPV6 => (outer.payload_at, outer.payload_len, outer.stats.0),
        PROTO_UDP => {
            let udp: *const UdpHdr =
                ptr_at(ctx, outer.payload_at as usize).ok_or(Outcome::NotOurs)?;
            // SAFETY: ptr_at checked the whole header is inside the frame;
            // UdpHdr is bytes only (alignment 1); the frame is not moved
            // while the reference lives.
            let udp = unsafe { &*udp };
            let config = XLB_DECAP_CONFIG.get(0).ok_or(Outcome::NotOurs)?;
            let port_be = u16::from_ne_bytes(udp.dst);
            if config.gue_port_be == 0 || port_be != config.gue_port_be {
                return Err(Outcome::NotOurs);
            }
            // The UDP length must fit the IP payload (judged below, once
            // the packet is known to be for this host).
            let len = u16::from_be_bytes(udp.len) as u32;
            whole &= len >= UdpHdr::LEN as u32 && len <= outer.payload_len;
            (
                outer.payload_at + UdpHdr::LEN as u32,
                len.saturating_sub(UdpHdr::LEN as u32),
                outer.stats.1,
            )
        }
        _ => return Err(Outcome::NotOurs),
    };
    // SAFETY: `get` is unsafe because userspace may change or delete the
    // entry while we hold the reference; only its presence is used here.
    if unsafe { XLB_DECAP_ADDRS.get(&outer.dst) }.is_none() {
        return Err(Outcome::NotOurs);
    }
    if XLB_DECAP_SOURCES.get(&outer.src).is_none() {
        return Err(Outcome::SourceRefused);
    }
    if !whole {
        return Err(Outcome::Malformed);
    }
    let inner_family = inner_family(ctx, inner_at as usize, inner_len as usize)?;
    // IPIP says in its protocol what it carries; it must be what it is.
    let expected = match outer.proto {
        PROTO_IPIP => FAMILY_V4,
        PROTO_IPV6 => FAMILY_V6,
        _ => inner_family,
    };
    if inner_family != expected {
        return Err(Outcome::Malformed);
    }
    Ok(Tunnel {
        l2_len: l2_len as u32,
        outer_len: inner_at - l2_len as u32,
        inner_family,
        stat,
    })
}

#[inline(always)]
fn outer_v4(ctx: &XdpContext, at: usize) -> Result<Outer, Outcome> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, at).ok_or(Outcome::NotOurs)?;
    // SAFETY: ptr_at checked the whole header is inside the frame; Ipv4Hdr
    // is bytes only (alignment 1); the frame is not moved meanwhile.
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != 4 {
        return Err(Outcome::NotOurs);
    }
    // IHL counts 32-bit words; the mask tells the verifier it is at most 60.
    let ihl = ((ip.vihl & 0x0f) as usize) * 4;
    if ihl < Ipv4Hdr::LEN {
        return Err(Outcome::NotOurs);
    }
    let tot_len = u16::from_be_bytes(ip.tot_len) as usize;
    let (start, end) = bounds(ctx);
    let frame_len = end - start;
    let fragment = u16::from_be_bytes(ip.frags) & IPV4_FRAG_MASK != 0;
    let whole = !fragment && tot_len >= ihl && at + tot_len <= frame_len;
    let mut dst = DecapAddr {
        addr: [0; 16],
        family: FAMILY_V4,
        _pad: [0; 3],
    };
    dst.addr[..4].copy_from_slice(&ip.dst_addr);
    let mut src = SourceKey {
        family: FAMILY_V4,
        addr: [0; 16],
    };
    src.addr[..4].copy_from_slice(&ip.src_addr);
    Ok(Outer {
        proto: ip.proto,
        payload_at: (at + ihl) as u32,
        payload_len: if whole { (tot_len - ihl) as u32 } else { 0 },
        whole,
        dst,
        src: Key::new(SourceKey::prefix_len(32), src),
        stats: (STAT_IPIP4, STAT_GUE4),
    })
}

#[inline(always)]
fn outer_v6(ctx: &XdpContext, at: usize) -> Result<Outer, Outcome> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, at).ok_or(Outcome::NotOurs)?;
    // SAFETY: as in outer_v4 (ptr_at, Ipv6Hdr is bytes only).
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != 6 {
        return Err(Outcome::NotOurs);
    }
    let payload_len = u16::from_be_bytes(ip.payload_len) as usize;
    let (start, end) = bounds(ctx);
    let frame_len = end - start;
    let whole = at + Ipv6Hdr::LEN + payload_len <= frame_len;
    // Extension headers are not what the balancer sends: `proto` is then
    // none of ours and the caller passes the frame on.
    Ok(Outer {
        proto: ip.next_hdr,
        payload_at: (at + Ipv6Hdr::LEN) as u32,
        payload_len: if whole { payload_len as u32 } else { 0 },
        whole,
        dst: DecapAddr {
            addr: ip.dst_addr,
            family: FAMILY_V6,
            _pad: [0; 3],
        },
        src: Key::new(
            SourceKey::prefix_len(128),
            SourceKey {
                family: FAMILY_V6,
                addr: ip.src_addr,
            },
        ),
        stats: (STAT_IPIP6, STAT_GUE6),
    })
}

/// The family of the inner packet at `at`, if its whole header, and the
/// whole packet its header declares, lie in the `len` bytes the outer
/// headers give it.
#[inline(always)]
fn inner_family(ctx: &XdpContext, at: usize, len: usize) -> Result<u8, Outcome> {
    // Both families' headers are at least an IPv4 header long. (Reading the
    // version byte alone does not work: LLVM turns its bound check into
    // `ptr < end`, from which the verifier grants no bytes at offset 0.)
    let v4: *const Ipv4Hdr = ptr_at(ctx, at).ok_or(Outcome::Malformed)?;
    // SAFETY: ptr_at checked the whole header is inside the frame; Ipv4Hdr
    // is bytes only (alignment 1); the frame is not moved meanwhile.
    let v4 = unsafe { &*v4 };
    match v4.vihl >> 4 {
        4 => {
            let ihl = ((v4.vihl & 0x0f) as usize) * 4;
            let tot_len = u16::from_be_bytes(v4.tot_len) as usize;
            if ihl < Ipv4Hdr::LEN || tot_len < ihl || tot_len > len {
                return Err(Outcome::Malformed);
            }
            Ok(FAMILY_V4)
        }
        6 => {
            let ip: *const Ipv6Hdr = ptr_at(ctx, at).ok_or(Outcome::Malformed)?;
            // SAFETY: as above (ptr_at, Ipv6Hdr is bytes only).
            let payload_len = u16::from_be_bytes(unsafe { (*ip).payload_len }) as usize;
            if Ipv6Hdr::LEN + payload_len > len {
                return Err(Outcome::Malformed);
            }
            Ok(FAMILY_V6)
        }
        _ => Err(Outcome::Malformed),
    }
}

/// Remove the outer headers: save the L2 header, move the frame's start past
/// the outer headers, write the L2 header back in front of the inner packet
/// with the inner family's EtherType.
#[inline(always)]
fn strip(ctx: &XdpContext, t: &Tunnel) -> Outcome {
    // Copied with a helper, not through a pointer: LLVM drops a bounds check
    // at offset 0 here (it knows the frame is longer), and the verifier,
    // which tracked only the inner header's pointer, would refuse the read.
    // Both L2 lengths are at most 18 and the outer headers follow, so 18
    // bytes are always there.
    let mut l2 = [0u8; 18];
    // SAFETY: the helper copies 18 bytes of the frame into `l2`, a local of
    // exactly that size, and fails without writing when the frame is shorter.
    let copied =
        unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, l2.as_mut_ptr() as *mut c_void, l2.len() as u32) };
    if copied != 0 {
        return Outcome::Malformed;
    }
    let inner_type = if t.inner_family == FAMILY_V4 {
        ETH_P_IPV4
    } else {
        ETH_P_IPV6
    };
    // SAFETY: a helper on this run's own context; on failure the frame is
    // unchanged; every packet pointer is taken again after it (write_l2).
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, t.outer_len as i32) } != 0 {
        return Outcome::Malformed;
    }
    // The EtherType of the payload: the tag's when tagged (the tag stays).
    if t.l2_len as usize == ETH_LEN + VLAN_LEN {
        l2[16..18].copy_from_slice(&inner_type.to_be_bytes());
        write_l2::<18>(ctx, &l2)
    } else {
        l2[12..14].copy_from_slice(&inner_type.to_be_bytes());
        write_l2::<14>(ctx, &l2)
    }
    .map_or(Outcome::Broken, |()| Outcome::Decapsulated(t.stat))
}

/// Write the first `N` bytes of `l2` at the frame's (new) start. The inner
/// packet is at least 20 bytes long, so this never fails; the verifier wants
/// the check all the same (the head moved, every old bound is forgotten).
#[inline(always)]
fn write_l2<const N: usize>(ctx: &XdpContext, l2: &[u8; 18]) -> Option<()> {
    let dst: *mut [u8; N] = ptr_at(ctx, 0)?;
    let mut bytes = [0u8; N];
    bytes.copy_from_slice(&l2[..N]);
    // SAFETY: ptr_at checked the N bytes lie inside the frame as it is after
    // adjust_head; a byte array has no alignment to keep.
    unsafe { *dst = bytes };
    Some(())
}
