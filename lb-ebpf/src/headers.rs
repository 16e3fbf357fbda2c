//! Headers the balancer writes itself: outer IP headers of tunnelled frames
//! and of its ICMP answers, and the L2 header moved to a frame's new start
//! after bpf_xdp_adjust_head.

use aya_ebpf::programs::XdpContext;

use lb_ebpf::packet::{copy, ptr_at};

use crate::csum;

/// TTL / hop limit of every IP header the balancer writes.
pub const TTL: u8 = 64;

/// An IPv4 header without options, with its checksum.
#[inline(always)]
pub fn ipv4(tos: u8, total_len: u16, df: bool, proto: u8, src: &[u8], dst: &[u8]) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&total_len.to_be_bytes());
    h[6] = if df { 0x40 } else { 0 };
    h[8] = TTL;
    h[9] = proto;
    h[12..16].copy_from_slice(&src[..4]);
    h[16..20].copy_from_slice(&dst[..4]);
    let c = csum::finish(csum::sum_bytes(&h));
    h[10..12].copy_from_slice(&c);
    h
}

/// An IPv6 header.
#[inline(always)]
pub fn ipv6(
    traffic_class: u8,
    flow_label: u32,
    payload_len: u16,
    next: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[0] = 0x60 | (traffic_class >> 4);
    h[1] = (traffic_class << 4) | ((flow_label >> 16) & 0x0f) as u8;
    h[2] = (flow_label >> 8) as u8;
    h[3] = flow_label as u8;
    h[4..6].copy_from_slice(&payload_len.to_be_bytes());
    h[6] = next;
    h[7] = TTL;
    // Word copies: `copy_from_slice` of the addresses became 32 byte loads
    // and 32 byte stores.
    let (_, addrs) = h.split_at_mut(8);
    let (s, d) = addrs.split_at_mut(16);
    copy(as16(s), src);
    copy(as16(d), dst);
    h
}

/// A 16-byte slice as an array (its length is a constant at every use).
#[inline(always)]
fn as16(b: &mut [u8]) -> &mut [u8; 16] {
    // SAFETY: the callers pass slices of exactly 16 bytes (`split_at_mut`
    // of a 40-byte array at constant offsets); [u8; 16] has alignment 1.
    unsafe { &mut *(b.as_mut_ptr() as *mut [u8; 16]) }
}

/// After bpf_xdp_adjust_head grew the frame by `grown` bytes (more than
/// 18, so the copies cannot overlap): the Ethernet header and a possible
/// 802.1Q tag (18 bytes; without a tag the last 4 are overwritten by the
/// caller's IP header) to the new start, with new MACs.
#[inline(always)]
pub fn move_l2(ctx: &XdpContext, grown: usize, dmac: &[u8; 6], smac: &[u8; 6]) -> Option<()> {
    let old: *const [u8; 18] = ptr_at(ctx, grown)?;
    let l2: *mut [u8; 18] = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked both ranges lie inside the frame as it is after
    // adjust_head; they do not overlap (grown > 18); bytes (alignment 1).
    unsafe {
        let l2 = &mut *l2;
        copy(l2, &*old);
        // Word copies (a u32 and a u16 each), not 12 byte copies.
        let macs = l2.as_mut_ptr();
        copy(&mut *(macs as *mut [u8; 6]), dmac);
        copy(&mut *(macs.add(6) as *mut [u8; 6]), smac);
    }
    Some(())
}
