//! Header parsing: Ethernet, IPv4 (any IHL) or IPv6, then TCP or UDP. Every
//! read is bounds-checked against data_end; anything we do not balance makes
//! the parser return None and the packet goes on untouched (XDP_PASS).
//!
//! Length fields are checked too (found by fuzzing, tests/tests/fuzz.rs): an
//! IP packet longer than its frame, or a TCP/UDP header longer than its IP
//! payload, is malformed, and the balancer never sends a malformed packet to
//! a backend; the host's stack drops it as it would without us.

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use lb_common::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, VipKey, hash::FlowWords};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// IPv4 "more fragments" flag and fragment offset bits.
const IPV4_FRAG_MASK: u16 = 0x3fff;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// What the balancer needs from a packet.
pub struct Parsed {
    /// The destination as a VIP key (exact port; the caller tries port 0 next).
    pub vip: VipKey,
    /// The flow as the hash sees it.
    pub flow: FlowWords,
    /// A TCP SYN without ACK: a connection starting, whatever the
    /// connection table remembers of an earlier one on the same ports.
    pub new_connection: bool,
}

/// A pointer to a `T` at `offset`, if the whole `T` lies inside the packet.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

#[inline(always)]
fn word(b: [u8; 4]) -> u32 {
    u32::from_le_bytes(b)
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Option<Parsed> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    let ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut vip = VipKey {
        addr: [0; 16],
        port_be: 0,
        proto: 0,
        family: 0,
    };
    let mut flow = FlowWords {
        src: [0; 4],
        dst: [0; 4],
        ports: 0,
        proto: 0,
    };
    let frame_len = ctx.data_end() - ctx.data();
    // (offset of the L4 header, bytes of IP payload the IP header declares)
    let (l4_offset, ip_payload) = match ether_type {
        ETH_P_IPV4 => {
            let ip: *const Ipv4Hdr = ptr_at(ctx, EthHdr::LEN)?;
            let ip = unsafe { &*ip };
            if ip.vihl >> 4 != 4 {
                return None;
            }
            // IHL counts 32-bit words; the mask tells the verifier it is at most 60.
            let ihl = ((ip.vihl & 0x0f) as usize) * 4;
            if ihl < Ipv4Hdr::LEN {
                return None;
            }
            // Fragments are passed on for now: only the first carries ports.
            if u16::from_be_bytes(ip.frags) & IPV4_FRAG_MASK != 0 {
                return None;
            }
            // The packet must fit its frame (a longer frame is padding).
            let tot_len = u16::from_be_bytes(ip.tot_len) as usize;
            if tot_len < ihl || EthHdr::LEN + tot_len > frame_len {
                return None;
            }
            vip.family = FAMILY_V4;
            vip.proto = ip.proto;
            vip.addr[..4].copy_from_slice(&ip.dst_addr);
            flow.src[0] = word(ip.src_addr);
            flow.dst[0] = word(ip.dst_addr);
            (EthHdr::LEN + ihl, tot_len - ihl)
        }
        ETH_P_IPV6 => {
            let ip: *const Ipv6Hdr = ptr_at(ctx, EthHdr::LEN)?;
            let ip = unsafe { &*ip };
            if ip.vcf[0] >> 4 != 6 {
                return None;
            }
            // Extension headers are passed on: TCP or UDP must follow directly.
            let payload_len = u16::from_be_bytes(ip.payload_len) as usize;
            if EthHdr::LEN + Ipv6Hdr::LEN + payload_len > frame_len {
                return None;
            }
            vip.family = FAMILY_V6;
            vip.proto = ip.next_hdr;
            vip.addr = ip.dst_addr;
            let (s, d) = (&ip.src_addr, &ip.dst_addr);
            flow.src = [
                word([s[0], s[1], s[2], s[3]]),
                word([s[4], s[5], s[6], s[7]]),
                word([s[8], s[9], s[10], s[11]]),
                word([s[12], s[13], s[14], s[15]]),
            ];
            flow.dst = [
                word([d[0], d[1], d[2], d[3]]),
                word([d[4], d[5], d[6], d[7]]),
                word([d[8], d[9], d[10], d[11]]),
                word([d[12], d[13], d[14], d[15]]),
            ];
            (EthHdr::LEN + Ipv6Hdr::LEN, payload_len)
        }
        _ => return None,
    };
    // Both headers start with the source and destination ports; require the
    // whole header so a truncated one is never balanced.
    let mut new_connection = false;
    let ports: [u8; 4] = match vip.proto {
        PROTO_TCP => {
            let tcp: *const TcpHdr = ptr_at(ctx, l4_offset)?;
            // Data offset: the high nibble of byte 12 (read directly; the
            // crate's bitfield accessor costs instructions for nothing).
            let doff = unsafe { *(tcp as *const u8).add(12) } >> 4;
            if doff < 5 || (doff as usize) * 4 > ip_payload {
                return None;
            }
            let flags = unsafe { *(tcp as *const u8).add(13) };
            new_connection = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
            let tcp = unsafe { &*tcp };
            [tcp.source[0], tcp.source[1], tcp.dest[0], tcp.dest[1]]
        }
        PROTO_UDP => {
            let udp: *const UdpHdr = ptr_at(ctx, l4_offset)?;
            let udp = unsafe { &*udp };
            let len = u16::from_be_bytes(udp.len) as usize;
            if len < UdpHdr::LEN || len > ip_payload {
                return None;
            }
            [udp.src[0], udp.src[1], udp.dst[0], udp.dst[1]]
        }
        _ => return None,
    };
    vip.port_be = u16::from_ne_bytes([ports[2], ports[3]]);
    flow.ports = word(ports);
    flow.proto = vip.proto as u32;
    Some(Parsed {
        vip,
        flow,
        new_connection,
    })
}
