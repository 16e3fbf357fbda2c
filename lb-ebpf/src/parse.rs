//! Header parsing: Ethernet with at most one 802.1Q tag, IPv4 (any IHL) or
//! IPv6 (with at most a fragment header), then TCP, UDP or ICMP. Every read is
//! bounds-checked against data_end; anything we do not balance makes the
//! parser return false and the packet goes on untouched (XDP_PASS).
//!
//! Length fields are checked too (found by fuzzing, tests/tests/fuzz.rs): an
//! IP packet longer than its frame, or a TCP/UDP header longer than its IP
//! payload, is malformed, and the balancer never sends a malformed packet on.
//!
//! Fragments follow their datagram's flow (as in Cilium): the first fragment
//! carries the ports and the balancer remembers them (XLB_FRAGS, written once
//! the packet is known to be for a VIP); later fragments find them there and
//! take the flow's way. A later fragment whose first was not seen (lost,
//! reordered, or not for a VIP) is not handled (below).
//!
//! What the parser does not handle but can still read the destination
//! address of (an IPv6 extension header, a second VLAN tag, a later fragment
//! whose first was not seen, other ICMP) it marks with a `KIND_UNHANDLED_*`
//! kind: if the address is a VIP's, its `unhandled` setting drops or passes
//! the packet (main.rs); otherwise it is passed like any other.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, stats::EV_FRAG_UNKNOWN,
};
use lb_ebpf::packet::{
    ETH_LEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, VLAN_LEN, bounds, copy, ptr_at,
    put_v4,
};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::{
    events::count_event,
    maps::XLB_FRAGS,
    scratch::{
        FRAG_FIRST, FRAG_LATER, FRAG_NONE, KIND_ECHO, KIND_FLOW, KIND_ICMP_ERROR,
        KIND_UNHANDLED_EXT_HEADER, KIND_UNHANDLED_FRAGMENT, KIND_UNHANDLED_ICMP,
        KIND_UNHANDLED_VLAN, Parsed,
    },
};

const IPV6_FRAGMENT: u8 = 44;
/// IPv6 extension headers (RFC 8200 4, IANA's list) other than the fragment
/// header: hop-by-hop, routing, destination options, AH, mobility, HIP,
/// shim6, and the two experimental numbers.
#[inline(always)]
fn ipv6_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 60 | 51 | 135 | 139 | 140 | 253 | 254)
}
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_ECHO_REQUEST: u8 = 128;

#[inline(always)]
fn word(b: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*b)
}

#[inline(always)]
fn words16(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_le_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_le_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_le_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_le_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// Parse the frame into `p`. True if it is a TCP/UDP/ICMP packet the
/// balancer may handle (whether its address is a VIP is looked up next);
/// false with `p.kind` one of `KIND_UNHANDLED_*` if it is one the parser
/// does not handle but whose destination address it read.
#[inline(always)]
pub fn parse(ctx: &XdpContext, p: &mut Parsed) -> bool {
    p.kind = KIND_FLOW;
    parse_frame(ctx, p).is_some()
}

/// Two VLAN tags (802.1Q or 802.1ad, then 802.1Q): read the IP destination
/// behind them into `p` and mark the packet unhandled. None if what follows
/// is not IPv4/IPv6 (then it is passed as before).
#[inline(always)]
fn double_tagged(ctx: &XdpContext, p: &mut Parsed) -> Option<()> {
    let l3 = ETH_LEN + 2 * VLAN_LEN;
    let inner: *const [u8; 2] = ptr_at(ctx, l3 - 2)?;
    // SAFETY: ptr_at checked the two bytes lie inside the frame; bytes.
    let ether_type = u16::from_be_bytes(unsafe { *inner });
    match ether_type {
        ETH_P_IPV4 => {
            let ip: *const Ipv4Hdr = ptr_at(ctx, l3)?;
            // SAFETY: ptr_at checked the whole header lies inside the frame;
            // the network-types headers are bytes only (alignment 1).
            let ip = unsafe { &*ip };
            if ip.vihl >> 4 != 4 {
                return None;
            }
            p.family = FAMILY_V4;
            put_v4(&mut p.vip.addr, &ip.dst_addr);
        }
        ETH_P_IPV6 => {
            let ip: *const Ipv6Hdr = ptr_at(ctx, l3)?;
            // SAFETY: as for IPv4.
            let ip = unsafe { &*ip };
            if ip.vcf[0] >> 4 != 6 {
                return None;
            }
            p.family = FAMILY_V6;
            copy(&mut p.vip.addr, &ip.dst_addr);
        }
        _ => return None,
    }
    p.kind = KIND_UNHANDLED_VLAN;
    None
}

#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys live in the per-CPU scratch; passed by value they would be copied to the 512-byte stack"
)]
#[inline(always)]
fn parse_frame(ctx: &XdpContext, p: &mut Parsed) -> Option<()> {
    let (start, end) = bounds(ctx);
    let frame_len = end - start;
    let ether_type: *const [u8; 2] = ptr_at(ctx, 12)?;
    // SAFETY: ptr_at checked the two bytes lie inside the frame; a byte
    // array has no alignment to keep.
    let mut ether_type = u16::from_be_bytes(unsafe { *ether_type });
    let mut l3_off = ETH_LEN;
    p.vlan = 0;
    if ether_type == ETH_P_8021AD {
        let inner: *const [u8; 2] = ptr_at(ctx, ETH_LEN + 2)?;
        // SAFETY: as above (ptr_at, bytes).
        if u16::from_be_bytes(unsafe { *inner }) == ETH_P_8021Q {
            return double_tagged(ctx, p);
        }
        return None;
    }
    if ether_type == ETH_P_8021Q {
        // One tag: TCI, then the inner type. Its VLAN id is the interface's
        // business (the frame left on the VLAN it came in on).
        let inner: *const [u8; 2] = ptr_at(ctx, ETH_LEN + 2)?;
        // SAFETY: as above (ptr_at, bytes).
        ether_type = u16::from_be_bytes(unsafe { *inner });
        if ether_type == ETH_P_8021Q {
            return double_tagged(ctx, p);
        }
        if ether_type == ETH_P_8021AD {
            return None;
        }
        l3_off += VLAN_LEN;
        p.vlan = 1;
    }
    p.l3_off = l3_off as u32;
    p.frag = FRAG_NONE;
    p.new_connection = 0;
    p.lco = 0;
    p.df = 0;
    p.vip.port_be = 0;
    p.flow.ports = 0;
    // The IP payload: offset of the L4 header, its length, protocol.
    let (l4_off, l4_len, proto) = match ether_type {
        ETH_P_IPV4 => {
            let ip: *const Ipv4Hdr = ptr_at(ctx, l3_off)?;
            // SAFETY: ptr_at checked the whole header lies inside the frame, which
            // the parser never moves; the network-types headers are bytes only
            // (alignment 1).
            let ip = unsafe { &*ip };
            if ip.vihl >> 4 != 4 {
                return None;
            }
            // IHL counts 32-bit words; the mask tells the verifier it is at most 60.
            let ihl = ((ip.vihl & 0x0f) as usize) * 4;
            if ihl < Ipv4Hdr::LEN {
                return None;
            }
            // The packet must fit its frame (a longer frame is padding).
            let tot_len = u16::from_be_bytes(ip.tot_len) as usize;
            if tot_len < ihl || l3_off + tot_len > frame_len {
                return None;
            }
            let frags = u16::from_be_bytes(ip.frags);
            p.family = FAMILY_V4;
            p.tos = ip.tos;
            p.df = (frags & 0x4000 != 0) as u8;
            p.ip_len = tot_len as u32;
            put_v4(&mut p.vip.addr, &ip.dst_addr);
            p.flow.src = [word(&ip.src_addr), 0, 0, 0];
            p.flow.dst = [word(&ip.dst_addr), 0, 0, 0];
            if frags & 0x3fff != 0 {
                p.frag_key.id = u16::from_le_bytes(ip.id) as u32;
                p.frag = if frags & 0x1fff != 0 {
                    FRAG_LATER
                } else {
                    FRAG_FIRST
                };
            }
            (l3_off + ihl, tot_len - ihl, ip.proto)
        }
        ETH_P_IPV6 => {
            let ip: *const Ipv6Hdr = ptr_at(ctx, l3_off)?;
            // SAFETY: ptr_at checked the whole header lies inside the frame, which
            // the parser never moves; the network-types headers are bytes only
            // (alignment 1).
            let ip = unsafe { &*ip };
            if ip.vcf[0] >> 4 != 6 {
                return None;
            }
            let payload_len = u16::from_be_bytes(ip.payload_len) as usize;
            if l3_off + Ipv6Hdr::LEN + payload_len > frame_len {
                return None;
            }
            p.family = FAMILY_V6;
            p.tos = (ip.vcf[0] << 4) | (ip.vcf[1] >> 4);
            p.ip_len = (Ipv6Hdr::LEN + payload_len) as u32;
            copy(&mut p.vip.addr, &ip.dst_addr);
            p.flow.src = words16(&ip.src_addr);
            p.flow.dst = words16(&ip.dst_addr);
            let mut l4_off = l3_off + Ipv6Hdr::LEN;
            let mut l4_len = payload_len;
            let mut next = ip.next_hdr;
            if ipv6_extension(next) {
                p.kind = KIND_UNHANDLED_EXT_HEADER;
                return None;
            }
            if next == IPV6_FRAGMENT {
                // Next header, reserved, offset (13 bits) + M, identification.
                let fh: *const [u8; 8] = ptr_at(ctx, l4_off)?;
                // SAFETY: ptr_at checked the 8 bytes lie inside the frame; bytes.
                let fh = unsafe { &*fh };
                if l4_len < 8 {
                    return None;
                }
                next = fh[0];
                if ipv6_extension(next) || next == IPV6_FRAGMENT {
                    p.kind = KIND_UNHANDLED_EXT_HEADER;
                    return None;
                }
                let offset_m = u16::from_be_bytes([fh[2], fh[3]]);
                l4_off += 8;
                l4_len -= 8;
                // An atomic fragment (offset 0, M 0) is a whole packet.
                if offset_m & 0xfff9 != 0 {
                    p.frag_key.id = u32::from_le_bytes([fh[4], fh[5], fh[6], fh[7]]);
                    p.frag = if offset_m & 0xfff8 != 0 {
                        FRAG_LATER
                    } else {
                        FRAG_FIRST
                    };
                }
            }
            (l4_off, l4_len, next)
        }
        _ => return None,
    };
    p.vip.family = p.family;
    p.vip.proto = proto;
    p.flow.proto = proto as u32;
    p.l4_off = l4_off as u32;
    p.l4_len = l4_len as u32;
    if p.frag != FRAG_NONE {
        if proto != PROTO_TCP && proto != PROTO_UDP {
            return None;
        }
        p.frag_key.src = p.flow.src;
        p.frag_key.dst = p.flow.dst;
        p.frag_key.proto = proto as u32;
        if p.frag == FRAG_LATER {
            // SAFETY: `get` is unsafe because the entry may be changed or
            // evicted while the reference lives; the u32 is copied out at once.
            let Some(ports) = (unsafe { XLB_FRAGS.get(&p.frag_key) }).copied() else {
                count_event(EV_FRAG_UNKNOWN);
                p.kind = KIND_UNHANDLED_FRAGMENT;
                return None;
            };
            p.flow.ports = ports;
            p.vip.port_be = (ports >> 16) as u16;
            return Some(());
        }
    }
    match proto {
        PROTO_TCP => tcp(ctx, p, l4_off, l4_len),
        PROTO_UDP => udp(ctx, p, l4_off, l4_len),
        PROTO_ICMP if p.family == FAMILY_V4 => icmp(ctx, p, l4_off, l4_len),
        PROTO_ICMPV6 if p.family == FAMILY_V6 => icmp(ctx, p, l4_off, l4_len),
        _ => None,
    }
}

/// Store the ports word (source then destination port, as on the wire).
#[inline(always)]
fn set_ports(p: &mut Parsed, ports: [u8; 4]) {
    p.flow.ports = u32::from_le_bytes(ports);
    p.vip.port_be = u16::from_ne_bytes([ports[2], ports[3]]);
}

#[inline(always)]
fn tcp(ctx: &XdpContext, p: &mut Parsed, off: usize, l4_len: usize) -> Option<()> {
    // Require the whole header so a truncated one is never balanced.
    let tcp: *const [u8; 20] = ptr_at(ctx, off)?;
    // SAFETY: ptr_at checked the 20 bytes lie inside the frame, which the
    // parser never moves; bytes (alignment 1).
    let tcp = unsafe { &*tcp };
    let doff = (tcp[12] >> 4) as usize;
    if doff < 5 || doff * 4 > l4_len {
        return None;
    }
    p.new_connection = (tcp[13] & (TCP_SYN | TCP_ACK) == TCP_SYN) as u8;
    p.lco = (p.frag == FRAG_NONE) as u8;
    set_ports(p, [tcp[0], tcp[1], tcp[2], tcp[3]]);
    Some(())
}

#[inline(always)]
fn udp(ctx: &XdpContext, p: &mut Parsed, off: usize, l4_len: usize) -> Option<()> {
    let udp: *const [u8; 8] = ptr_at(ctx, off)?;
    // SAFETY: as in tcp (ptr_at, 8 bytes).
    let udp = unsafe { &*udp };
    if l4_len < 8 {
        return None;
    }
    // A first fragment's UDP length is the whole datagram's.
    if p.frag == FRAG_NONE {
        let len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
        if len < 8 || len > l4_len {
            return None;
        }
        // A zero checksum (IPv4) means "none": nothing to derive from.
        p.lco = (udp[6] | udp[7] != 0 && len == l4_len) as u8;
    }
    set_ports(p, [udp[0], udp[1], udp[2], udp[3]]);
    Some(())
}

/// Echo requests, and the two errors path MTU discovery depends on. Any
/// other ICMP goes to the host's stack.
#[inline(always)]
fn icmp(ctx: &XdpContext, p: &mut Parsed, off: usize, l4_len: usize) -> Option<()> {
    if l4_len < 8 {
        return None;
    }
    let hdr: *const [u8; 8] = ptr_at(ctx, off)?;
    // SAFETY: ptr_at checked the 8 bytes lie inside the frame; bytes.
    let (kind, code) = unsafe { ((*hdr)[0], (*hdr)[1]) };
    let v4 = p.family == FAMILY_V4;
    if (v4 && kind == ICMP_ECHO_REQUEST && code == 0) || (!v4 && kind == ICMPV6_ECHO_REQUEST) {
        p.kind = KIND_ECHO;
        return Some(());
    }
    if (v4 && (kind != ICMP_DEST_UNREACH || code != ICMP_FRAG_NEEDED))
        || (!v4 && kind != ICMPV6_PACKET_TOO_BIG)
    {
        p.kind = KIND_UNHANDLED_ICMP;
        return None;
    }
    // The quoted packet was sent by a backend from the VIP to a client: the
    // flow to steer is its reverse, client to VIP.
    let quoted = off + 8;
    let (ports_off, proto) = if v4 {
        let ip: *const Ipv4Hdr = ptr_at(ctx, quoted)?;
        // SAFETY: ptr_at checked the whole header lies inside the frame, which
        // the parser never moves; the network-types headers are bytes only
        // (alignment 1).
        let ip = unsafe { &*ip };
        let ihl = ((ip.vihl & 0x0f) as usize) * 4;
        if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || u16::from_be_bytes(ip.frags) & 0x1fff != 0 {
            return None;
        }
        if l4_len < 8 + ihl + 4 {
            return None;
        }
        // Only an error addressed to the VIP address it quotes is the VIP's:
        // one to any other address (the host's own) is the host's business.
        if word(&ip.src_addr) != p.flow.dst[0] {
            return None;
        }
        put_v4(&mut p.vip.addr, &ip.src_addr);
        p.flow.src = [word(&ip.dst_addr), 0, 0, 0];
        p.flow.dst = [word(&ip.src_addr), 0, 0, 0];
        (quoted + ihl, ip.proto)
    } else {
        let ip: *const Ipv6Hdr = ptr_at(ctx, quoted)?;
        // SAFETY: ptr_at checked the whole header lies inside the frame, which
        // the parser never moves; the network-types headers are bytes only
        // (alignment 1).
        let ip = unsafe { &*ip };
        if ip.vcf[0] >> 4 != 6 || l4_len < 8 + Ipv6Hdr::LEN + 4 {
            return None;
        }
        // As for IPv4: addressed to the VIP address it quotes, or passed.
        // Word by word: an array comparison could become a call to bcmp,
        // which BPF does not have.
        let q = words16(&ip.src_addr);
        let d = &p.flow.dst;
        if q[0] != d[0] || q[1] != d[1] || q[2] != d[2] || q[3] != d[3] {
            return None;
        }
        copy(&mut p.vip.addr, &ip.src_addr);
        p.flow.src = words16(&ip.dst_addr);
        p.flow.dst = words16(&ip.src_addr);
        (quoted + Ipv6Hdr::LEN, ip.next_hdr)
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let ports: *const [u8; 4] = ptr_at(ctx, ports_off)?;
    // SAFETY: ptr_at checked the 4 bytes lie inside the frame; bytes.
    let ports = unsafe { *ports };
    p.kind = KIND_ICMP_ERROR;
    p.vip.proto = proto;
    p.flow.proto = proto as u32;
    set_ports(p, [ports[2], ports[3], ports[0], ports[1]]);
    // The reversed flow's destination port is the VIP's: the quoted source.
    Some(())
}
