//! IPIP and GUE: the balancer puts an outer IP header (and for GUE a UDP
//! header) in front of the packet and sends it to the backend's address; the
//! backend's decap program (decap.rs) takes it off again. The backend answers
//! clients directly, as with DSR.
//!
//! The outer source address (IPv4: host bits of a configured prefix; IPv6:
//! the last 32 bits at most) and, for GUE, the UDP source port are taken
//! from the flow's hash, so the outer headers vary with the inner flow and
//! the backend's NIC spreads tunnelled flows over its queues (RSS); the IPv6
//! flow label carries the hash too.

use aya_ebpf::{
    helpers::{bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    Backend, FAMILY_V4, FAMILY_V6, GlobalConfig, METHOD_GUE, PROTO_IPIP, PROTO_IPV6, PROTO_UDP,
    stats::{DROP_ENCAP_FAILED, DROP_NO_ROUTE, DROP_TOO_BIG},
};
use lb_ebpf::packet::{bounds, copy, ptr_at, put_v4};

use crate::{
    csum,
    forward::{ROUTE_NONE, ROUTE_TX, Sent, route},
    headers, icmp,
    scratch::{Parsed, Scratch},
};

const IPV4_LEN: u32 = 20;
const IPV6_LEN: u32 = 40;
const UDP_LEN: u32 = 8;

/// Encapsulate the packet for `b` and send it (or answer it with ICMP when
/// the result would not fit the interface's MTU).
#[inline(always)]
pub fn send(
    ctx: &XdpContext,
    s: &mut Scratch,
    b: &Backend,
    cfg: &GlobalConfig,
    method: u8,
) -> Sent {
    let outer_family = b.family;
    if outer_family == FAMILY_V4 && s.p.family == FAMILY_V6 {
        return Sent::drop(DROP_ENCAP_FAILED);
    }
    let gue = method == METHOD_GUE;
    let overhead = if outer_family == FAMILY_V6 {
        IPV6_LEN
    } else {
        IPV4_LEN
    } + if gue { UDP_LEN } else { 0 };
    if s.p.ip_len + overhead > cfg.mtu as u32 {
        // Too big for the link once wrapped: a router would say so, and the
        // client's path MTU discovery shrinks its packets. IPv4 without DF
        // would be fragmented by a router; we cannot, so it is dropped.
        if s.p.family == FAMILY_V4 && s.p.df == 0 {
            return Sent::drop(DROP_TOO_BIG);
        }
        return icmp::too_big(ctx, s, cfg, cfg.mtu as u32 - overhead);
    }
    let h = s.flow_hash;
    outer_addresses(s, b, cfg, h);
    let next_hop = route(ctx, s, cfg, outer_family);
    if next_hop == ROUTE_NONE {
        return Sent::drop(DROP_NO_ROUTE);
    }
    if encapsulate(ctx, s, cfg, overhead, h).is_none() {
        return Sent::drop(DROP_ENCAP_FAILED);
    }
    if next_hop == ROUTE_TX {
        return Sent::TX;
    }
    // SAFETY: a BPF helper taking plain integers; it touches no memory of ours.
    Sent(unsafe { bpf_redirect(next_hop, 0) } as u32)
}

/// The outer source and destination into the scratch.
#[inline(always)]
fn outer_addresses(s: &mut Scratch, b: &Backend, cfg: &GlobalConfig, h: u32) {
    let hb = h.to_be_bytes();
    // Not `s.outer_dst = b.addr`: that became a call to the byte-at-a-time
    // `memmove` (packet.rs, `copy`) on every tunnelled packet.
    copy(&mut s.outer_dst, &b.addr);
    if b.family == FAMILY_V6 {
        copy(&mut s.outer_src, &cfg.tunnel_src_v6);
        let p = &cfg.tunnel_src_v6;
        let a = u32::from_ne_bytes([p[12], p[13], p[14], p[15]]);
        let m = u32::from_ne_bytes(cfg.tunnel_src_v6_hostmask);
        let last = (a & !m) | (u32::from_ne_bytes(hb) & m);
        s.outer_src[12..].copy_from_slice(&last.to_ne_bytes());
    } else {
        let a = u32::from_ne_bytes(cfg.tunnel_src_v4);
        let m = u32::from_ne_bytes(cfg.tunnel_src_v4_hostmask);
        let src = (a & !m) | (u32::from_ne_bytes(hb) & m);
        put_v4(&mut s.outer_src, &src.to_ne_bytes());
    }
}

/// Make room for the outer headers and write them. `overhead` says which:
/// IPv4 20 / 28 (IPIP / GUE), IPv6 40 / 48. `h` is the flow hash.
#[inline(always)]
fn encapsulate(
    ctx: &XdpContext,
    s: &mut Scratch,
    cfg: &GlobalConfig,
    overhead: u32,
    h: u32,
) -> Option<()> {
    let outer_v6 = overhead >= IPV6_LEN;
    let gue = overhead == IPV4_LEN + UDP_LEN || overhead == IPV6_LEN + UDP_LEN;
    let p = &s.p;
    let l3 = p.l3_off as usize;
    let inner_len = p.ip_len;
    // The outer checksum for GUE over IPv6 is derived from the inner one;
    // read what it needs before the packet moves.
    let lco = gue && outer_v6 && p.lco != 0;
    let inner_sum = if lco { lco_sum(ctx, p)? } else { 0 };
    // Ethernet padding after the inner packet is not carried along.
    let (start, end) = bounds(ctx);
    let excess = (end - start) as i64 - (l3 as i64 + inner_len as i64);
    // SAFETY: a helper on this run's own context, shrinking by less than
    // the frame's length; every packet pointer is taken again after it.
    if excess > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(excess as i32)) } != 0 {
        return None;
    }
    // SAFETY: as above; the kernel refuses (and leaves the frame alone)
    // when the headroom is too small.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(overhead as i32)) } != 0 {
        return None;
    }
    // The L2 header moves to the new start (overhead >= 20 > 18).
    headers::move_l2(ctx, overhead as usize & 0x3f, &s.fib.dmac, &s.fib.smac)?;
    let ether_type: [u8; 2] = if outer_v6 { [0x86, 0xdd] } else { [0x08, 0x00] };
    // The type after the tag, if any (the tag's own type stays 0x8100).
    let type_at: *mut [u8; 2] = ptr_at(ctx, if p.vlan != 0 { 16 } else { 12 })?;
    // SAFETY: ptr_at checked the 2 bytes lie inside the frame as it is after
    // adjust_head; a byte array has no alignment to keep.
    unsafe { *type_at = ether_type };
    let l3 = l3 & 0x1f;
    let inner_proto = if p.family == FAMILY_V6 {
        PROTO_IPV6
    } else {
        PROTO_IPIP
    };
    let proto = if gue { PROTO_UDP } else { inner_proto };
    let udp_len = inner_len + UDP_LEN;
    let l4 = if outer_v6 {
        let ip: *mut [u8; 40] = ptr_at(ctx, l3)?;
        let payload = if gue { udp_len } else { inner_len };
        let label = h & 0x000f_ffff;
        let (src, dst) = (&s.outer_src, &s.outer_dst);
        // SAFETY: ptr_at checked the 40 bytes lie inside the grown frame; bytes.
        unsafe { *ip = headers::ipv6(p.tos, label, payload as u16, proto, src, dst) };
        l3 + IPV6_LEN as usize
    } else {
        let ip: *mut [u8; 20] = ptr_at(ctx, l3)?;
        let total = (inner_len + overhead) as u16;
        // RFC 2003: DF copied from the inner header.
        let (src, dst) = (&s.outer_src[..4], &s.outer_dst[..4]);
        // SAFETY: ptr_at checked the 20 bytes lie inside the grown frame; bytes.
        unsafe { *ip = headers::ipv4(p.tos, total, p.df != 0, proto, src, dst) };
        l3 + IPV4_LEN as usize
    };
    if gue {
        let udp: *mut [u8; 8] = ptr_at(ctx, l4)?;
        let mut u = [0u8; 8];
        u[..2].copy_from_slice(&(0xc000 | (h & 0x3fff) as u16).to_be_bytes());
        u[2..4].copy_from_slice(&cfg.gue_port_be.to_ne_bytes());
        u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        if lco {
            let sum = inner_sum + csum::sum_bytes(&u) + pseudo_outer_v6(s, udp_len);
            let mut c = csum::finish(sum);
            if c == [0, 0] {
                c = [0xff, 0xff];
            }
            u[6..].copy_from_slice(&c);
        }
        // SAFETY: ptr_at checked the 8 bytes lie inside the grown frame; bytes.
        unsafe { *udp = u };
    }
    Some(())
}

/// The outer IPv6 pseudo-header's sum for a UDP datagram of `udp_len`.
#[inline(always)]
fn pseudo_outer_v6(s: &Scratch, udp_len: u32) -> u64 {
    csum::sum_bytes(&s.outer_src)
        + csum::sum_bytes(&s.outer_dst)
        + csum::be16(udp_len as u16)
        + csum::be16(PROTO_UDP as u16)
}

/// Local checksum offload (LCO): the sum of the whole inner packet, from
/// its headers and its L4 checksum, without reading the payload. With a
/// right L4 checksum, pseudo-header + segment sum to -0, so the segment sums
/// to the complement of the pseudo-header. Only for unfragmented TCP, and
/// UDP with a checksum (`p.lco`); otherwise the outer checksum stays 0.
/// An IPv4 header with its right checksum sums to -0 too: it adds nothing.
#[inline(always)]
fn lco_sum(ctx: &XdpContext, p: &Parsed) -> Option<u64> {
    let mut sum = csum::be16(p.l4_len as u16) + csum::be16(p.flow.proto as u16);
    let mut i = 0;
    while i < 4 {
        sum += csum::word(p.flow.src[i]) + csum::word(p.flow.dst[i]);
        i += 1;
    }
    let segment = (!csum::fold(sum)) as u64;
    if p.family == FAMILY_V4 {
        return Some(segment);
    }
    let l3 = p.l3_off as usize & 0x1f;
    // The IPv6 header, and an atomic fragment's header if there is one.
    let headers = if p.l4_off - p.l3_off == IPV6_LEN {
        let hdr: *const [u8; 40] = ptr_at(ctx, l3)?;
        // SAFETY: ptr_at checked the header lies inside the frame, not moved
        // yet (this runs before adjust_head); bytes.
        csum::sum_bytes(unsafe { &*hdr })
    } else {
        let hdr: *const [u8; 48] = ptr_at(ctx, l3)?;
        // SAFETY: ptr_at checked the header lies inside the frame, not moved
        // yet (this runs before adjust_head); bytes.
        csum::sum_bytes(unsafe { &*hdr })
    };
    Some(headers + segment)
}
