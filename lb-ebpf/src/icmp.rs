//! ICMP the balancer writes itself: echo replies for VIP addresses, and
//! "fragmentation needed" / "packet too big" for packets that would not fit
//! the link once tunnelled, as a router on the path would send.

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    FAMILY_V4, GlobalConfig, PROTO_ICMP, PROTO_ICMPV6,
    stats::{DROP_ENCAP_FAILED, DROP_TOO_BIG},
};
use lb_ebpf::packet::{bounds, ptr_at};

use crate::{
    csum,
    forward::Sent,
    headers,
    scratch::{KIND_ICMP_ERROR, Parsed, Scratch},
};

/// Bytes of the offending packet an ICMP error quotes: its IP header and
/// the start of its TCP/UDP header at least, which is what the client needs
/// to find the connection (RFC 792 asks for header + 8 bytes).
const QUOTE: usize = 64;

/// Answer an echo request in place: addresses swapped, type "reply".
/// Swapping addresses changes no checksum (the sums commute); the type and
/// TTL changes are patched in incrementally (RFC 1624).
#[inline(never)]
pub fn echo_reply(ctx: &XdpContext, p: &Parsed, iface_mac: &[u8; 6]) -> bool {
    reply_in_place(ctx, p, iface_mac).is_some()
}

#[inline(always)]
fn reply_in_place(ctx: &XdpContext, p: &Parsed, iface_mac: &[u8; 6]) -> Option<()> {
    let l3 = p.l3_off as usize & 0x1f;
    let l4 = p.l4_off as usize & 0x7f;
    let eth: *mut [u8; 12] = ptr_at(ctx, 0)?;
    let icmp: *mut [u8; 4] = ptr_at(ctx, l4)?;
    // SAFETY: ptr_at checked the 12 bytes lie inside the frame, which this
    // function never moves; bytes (alignment 1); they do not overlap the
    // ICMP header `icmp` points at (l4 > 12).
    unsafe {
        let client = [
            (*eth)[6],
            (*eth)[7],
            (*eth)[8],
            (*eth)[9],
            (*eth)[10],
            (*eth)[11],
        ];
        (&mut *eth)[..6].copy_from_slice(&client);
        (&mut *eth)[6..].copy_from_slice(iface_mac);
    }
    if p.family == FAMILY_V4 {
        let ip: *mut [u8; 20] = ptr_at(ctx, l3)?;
        // SAFETY: ptr_at checked the 20 bytes lie inside the frame; bytes;
        // the only live reference into them.
        unsafe {
            let ip = &mut *ip;
            let (src, dst) = (
                [ip[12], ip[13], ip[14], ip[15]],
                [ip[16], ip[17], ip[18], ip[19]],
            );
            ip[12..16].copy_from_slice(&dst);
            ip[16..20].copy_from_slice(&src);
            let old = [ip[8], ip[9]];
            ip[8] = headers::TTL;
            let c = csum::replace([ip[10], ip[11]], old, [ip[8], ip[9]]);
            ip[10..12].copy_from_slice(&c);
        }
    } else {
        let ip: *mut [u8; 40] = ptr_at(ctx, l3)?;
        // SAFETY: as for IPv4, 40 bytes.
        unsafe {
            let ip = &mut *ip;
            let mut src = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            ip.copy_within(24..40, 8);
            ip[24..40].copy_from_slice(&src);
            ip[7] = headers::TTL;
        }
    }
    // Echo request -> echo reply: ICMP type 0, ICMPv6 type 129.
    let reply = if p.family == FAMILY_V4 { 0 } else { 129 };
    // SAFETY: ptr_at checked the 4 bytes lie inside the frame (still where
    // it was); bytes; no other reference to them is alive.
    unsafe {
        let icmp = &mut *icmp;
        let old = [icmp[0], icmp[1]];
        icmp[0] = reply;
        let c = csum::replace([icmp[2], icmp[3]], old, [icmp[0], icmp[1]]);
        icmp[2..4].copy_from_slice(&c);
    }
    Some(())
}

/// Turn the packet into an ICMP "fragmentation needed" (IPv4) or "packet
/// too big" (IPv6) from the VIP to the client, advertising `mtu`, quoting the
/// packet's first QUOTE bytes, and send it back where it came from.
#[inline(never)]
pub fn too_big(ctx: &XdpContext, s: &mut Scratch, cfg: &GlobalConfig, mtu: u32) -> Sent {
    // An ICMP error about an ICMP error is never sent (RFC 1122); a packet
    // shorter than the quote cannot be too big for any real link.
    if s.p.kind == KIND_ICMP_ERROR || (s.p.ip_len as usize) < QUOTE {
        return Sent::drop(DROP_TOO_BIG);
    }
    match write_too_big(ctx, &s.p, cfg, mtu) {
        Some(()) => Sent::REPLIED,
        None => Sent::drop(DROP_ENCAP_FAILED),
    }
}

#[inline(always)]
fn write_too_big(ctx: &XdpContext, p: &Parsed, cfg: &GlobalConfig, mtu: u32) -> Option<()> {
    let v4 = p.family == FAMILY_V4;
    let ip_len: usize = if v4 { 20 } else { 40 };
    let grow = ip_len + 8;
    let l3 = p.l3_off as usize & 0x1f;
    let client_mac: *const [u8; 6] = ptr_at(ctx, 6)?;
    // SAFETY: ptr_at checked the 6 bytes lie inside the frame, read before
    // it is cut or grown; bytes.
    let client_mac = unsafe { *client_mac };
    // Keep [L2][IP header + ICMP header][the first QUOTE bytes of the packet].
    let (start, end) = bounds(ctx);
    let keep = (l3 + QUOTE) as i64 - (end - start) as i64;
    // SAFETY: a helper on this run's own context, shrinking by less than
    // the frame's length; every packet pointer is taken again after it.
    if keep < 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, keep as i32) } != 0 {
        return None;
    }
    // SAFETY: as above; the kernel refuses (and leaves the frame alone)
    // when the headroom is too small.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return None;
    }
    headers::move_l2(ctx, grow, &client_mac, &cfg.iface_mac)?;
    // The addresses: from the VIP (the packet's destination) to the client.
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    let mut i = 0;
    while i < 4 {
        dst[i * 4..i * 4 + 4].copy_from_slice(&p.flow.src[i].to_le_bytes());
        src[i * 4..i * 4 + 4].copy_from_slice(&p.flow.dst[i].to_le_bytes());
        i += 1;
    }
    let icmp_len = (8 + QUOTE) as u16;
    let mut sum = 0u64;
    if v4 {
        let ip: *mut [u8; 20] = ptr_at(ctx, l3)?;
        let h = headers::ipv4(0, 20 + icmp_len, false, PROTO_ICMP, &src[..4], &dst[..4]);
        // SAFETY: ptr_at checked the 20 bytes lie inside the grown frame; bytes.
        unsafe { *ip = h };
    } else {
        let ip: *mut [u8; 40] = ptr_at(ctx, l3)?;
        // SAFETY: ptr_at checked the 40 bytes lie inside the grown frame; bytes.
        unsafe { *ip = headers::ipv6(0, 0, icmp_len, PROTO_ICMPV6, &src, &dst) };
        // ICMPv6's checksum covers a pseudo-header.
        sum = csum::sum_bytes(&src)
            + csum::sum_bytes(&dst)
            + csum::be16(icmp_len)
            + csum::be16(PROTO_ICMPV6 as u16);
    }
    let icmp: *mut [u8; 8 + QUOTE] = ptr_at(ctx, (l3 + ip_len) & 0x7f)?;
    // SAFETY: ptr_at checked the ICMP header and quote lie inside the frame,
    // not moved again before we return; bytes; no other reference to them.
    let icmp = unsafe { &mut *icmp };
    let mut h = [0u8; 8];
    if v4 {
        h[0] = 3; // destination unreachable
        h[1] = 4; // fragmentation needed
        h[6..8].copy_from_slice(&(mtu as u16).to_be_bytes());
    } else {
        h[0] = 2; // packet too big
        h[4..8].copy_from_slice(&mtu.to_be_bytes());
    }
    icmp[..8].copy_from_slice(&h);
    let c = csum::finish(sum + csum::sum_bytes(icmp));
    icmp[2..4].copy_from_slice(&c);
    Some(())
}
