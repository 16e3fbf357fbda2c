//! Frames for the data-plane depth fixtures (tests/tests/depth.rs), and the
//! frames the balancer must send for them, built from the behaviour the
//! balancer promises (IPIP, GUE, VLAN, fragments, ICMP), never from its
//! output: every header is an etherparse header filled in by hand.
//!
//! - `Packet`: a TCP or UDP IP packet of a flow (TOS, DF, id, flow label);
//!   `fragments` cuts its datagram in two;
//! - `Link` and `framed`: the Ethernet header (and 802.1Q tag) around it;
//! - ICMP packets: echo requests and replies, errors quoting a packet;
//! - `encapsulated`, `too_big_reply`: the expected output of a tunnelled
//!   frame and of one too big for the tunnel;
//! - `check_checksums`: a frame re-parsed with etherparse, every checksum
//!   in it verified.

use std::net::IpAddr;

use etherparse::{
    EtherType, Ethernet2Header, IcmpEchoHeader, Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type,
    IpDscp, IpEcn, IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header,
    PacketBuilder, SingleVlanHeader, TcpHeaderSlice, UdpHeader, VlanId, VlanPcp,
};
use xlb_core::simulate::Flow;

pub use crate::packets::{LB_MAC, ROUTER_MAC};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// TTL / hop limit of the headers the balancer writes.
pub const BALANCER_TTL: u8 = 64;

/// The Ethernet header of a frame: MACs and an optional 802.1Q tag (VLAN id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub vlan: Option<u16>,
}

impl Link {
    /// A frame from the router in front of the balancer to the balancer.
    pub fn incoming() -> Self {
        Self {
            dst: LB_MAC,
            src: ROUTER_MAC,
            vlan: None,
        }
    }

    /// The same, tagged with VLAN `vid` (priority 3, so the TCI is not
    /// just the id).
    pub fn tagged(vid: u16) -> Self {
        Self {
            vlan: Some(vid),
            ..Self::incoming()
        }
    }

    /// This link with other MACs, the tag kept.
    pub fn with_macs(self, dst: [u8; 6], src: [u8; 6]) -> Self {
        Self { dst, src, ..self }
    }

    pub fn header_len(&self) -> usize {
        if self.vlan.is_some() { 18 } else { 14 }
    }

    /// The header bytes for a payload of `ether_type`.
    pub fn header(&self, ether_type: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(18);
        let outer_type = if self.vlan.is_some() {
            ETH_P_8021Q
        } else {
            ether_type
        };
        Ethernet2Header {
            destination: self.dst,
            source: self.src,
            ether_type: EtherType(outer_type),
        }
        .write(&mut out)
        .expect("write to a Vec");
        if let Some(vid) = self.vlan {
            SingleVlanHeader {
                pcp: VlanPcp::try_new(3).expect("3-bit priority"),
                drop_eligible_indicator: false,
                vlan_id: VlanId::try_new(vid).expect("12-bit VLAN id"),
                ether_type: EtherType(ether_type),
            }
            .write(&mut out)
            .expect("write to a Vec");
        }
        out
    }
}

/// The frame carrying `ip` (an IPv4 or IPv6 packet, after its version) on `link`.
pub fn framed(link: &Link, ip: &[u8]) -> Vec<u8> {
    let mut out = link.header(ether_type_of(ip));
    out.extend_from_slice(ip);
    out
}

/// A frame with two VLAN tags (outer TPID `outer_tpid`, VLAN 10, then
/// 802.1Q VLAN 20) around `ip`.
pub fn double_tagged(outer_tpid: u16, ip: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Ethernet2Header {
        destination: LB_MAC,
        source: ROUTER_MAC,
        ether_type: EtherType(outer_tpid),
    }
    .write(&mut out)
    .expect("write to a Vec");
    for (vid, next) in [(10, ETH_P_8021Q), (20, ether_type_of(ip))] {
        SingleVlanHeader {
            pcp: VlanPcp::try_new(0).expect("3-bit priority"),
            drop_eligible_indicator: false,
            vlan_id: VlanId::try_new(vid).expect("12-bit VLAN id"),
            ether_type: EtherType(next),
        }
        .write(&mut out)
        .expect("write to a Vec");
    }
    out.extend_from_slice(ip);
    out
}

/// `frame` with zero bytes appended up to `len` (Ethernet padding of a
/// short frame).
pub fn padded(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    assert!(frame.len() < len, "nothing to pad");
    frame.resize(len, 0);
    frame
}

/// The EtherType of an IP packet, from its version nibble.
pub fn ether_type_of(ip: &[u8]) -> u16 {
    match ip[0] >> 4 {
        4 => ETH_P_IPV4,
        6 => ETH_P_IPV6,
        v => panic!("IP version {v}"),
    }
}

/// A frame taken apart: its link header and its IP packet (Ethernet
/// padding after the IP packet's own length cut off).
pub fn split_frame(frame: &[u8]) -> (Link, &[u8]) {
    let (eth, rest) = Ethernet2Header::from_slice(frame).expect("an Ethernet frame");
    let (vlan, ip) = if eth.ether_type.0 == ETH_P_8021Q {
        let (tag, rest) = SingleVlanHeader::from_slice(rest).expect("an 802.1Q tag");
        (Some(tag.vlan_id.value()), rest)
    } else {
        (None, rest)
    };
    let len = ip_len(ip);
    let link = Link {
        dst: eth.destination,
        src: eth.source,
        vlan,
    };
    (link, &ip[..len])
}

/// Length of the IP packet at the start of `ip`, from its own header.
fn ip_len(ip: &[u8]) -> usize {
    match ip[0] >> 4 {
        4 => usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        6 => 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])),
        v => panic!("IP version {v}"),
    }
}

/// What a `Packet`'s transport header is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// TCP with SYN only: a new connection.
    Syn,
    /// TCP with ACK (and PSH): a segment of an established connection.
    Ack,
    /// UDP, checksum computed.
    Udp,
    /// UDP with checksum 0 (none: allowed over IPv4).
    UdpNoChecksum,
}

/// A TCP or UDP IP packet of a flow, built with etherparse.
#[derive(Clone, Debug)]
pub struct Packet {
    pub flow: Flow,
    pub segment: Segment,
    pub payload: usize,
    /// IPv4 TOS / IPv6 traffic class byte.
    pub tos: u8,
    /// IPv4 Don't Fragment.
    pub df: bool,
    /// IPv4 identification.
    pub id: u16,
    /// IPv6 flow label.
    pub flow_label: u32,
    pub ttl: u8,
}

impl Packet {
    /// A SYN (TCP flows) or a datagram with a checksum (UDP flows) with no
    /// payload, TOS 0, DF set, TTL 60 (not the balancer's 64, so a header
    /// the balancer wrote is told from one it carried).
    pub fn new(flow: Flow) -> Self {
        let segment = match flow.proto {
            lb_common::PROTO_TCP => Segment::Syn,
            lb_common::PROTO_UDP => Segment::Udp,
            p => panic!("no packets of IP protocol {p}"),
        };
        Self {
            flow,
            segment,
            payload: 0,
            tos: 0,
            df: true,
            id: 0x3c3c,
            flow_label: 0,
            ttl: 60,
        }
    }

    pub fn ack(mut self) -> Self {
        assert_eq!(self.flow.proto, lb_common::PROTO_TCP, "ACK of a UDP flow");
        self.segment = Segment::Ack;
        self
    }

    pub fn no_udp_checksum(mut self) -> Self {
        assert!(self.flow.src.is_ipv4(), "IPv6 UDP needs its checksum");
        self.segment = Segment::UdpNoChecksum;
        self
    }

    pub fn payload(mut self, n: usize) -> Self {
        self.payload = n;
        self
    }

    pub fn tos(mut self, tos: u8) -> Self {
        self.tos = tos;
        self
    }

    pub fn df(mut self, df: bool) -> Self {
        self.df = df;
        self
    }

    pub fn flow_label(mut self, label: u32) -> Self {
        self.flow_label = label;
        self
    }

    /// A payload that makes the IP packet exactly `len` bytes long.
    pub fn ip_len(self, len: usize) -> Self {
        let headers = self.ip().len() - self.payload;
        assert!(
            len >= headers,
            "an IP packet of {len} bytes cannot hold its headers"
        );
        self.payload(len - headers)
    }

    fn payload_bytes(&self) -> Vec<u8> {
        (0..self.payload).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// The IP header (no options, no extension headers) for `payload_len`
    /// bytes of `proto` after it.
    fn ip_header(&self) -> IpHeaders {
        match (self.flow.src, self.flow.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = Ipv4Header::new(0, self.ttl, IpNumber::TCP, s.octets(), d.octets())
                    .expect("empty payload");
                set_tos(&mut h, self.tos);
                h.dont_fragment = self.df;
                h.identification = self.id;
                IpHeaders::Ipv4(h, Default::default())
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
                Ipv6Header {
                    traffic_class: self.tos,
                    flow_label: Ipv6FlowLabel::try_new(self.flow_label).expect("20-bit label"),
                    payload_length: 0,
                    next_header: IpNumber::TCP,
                    hop_limit: self.ttl,
                    source: s.octets(),
                    destination: d.octets(),
                },
                Default::default(),
            ),
            _ => panic!("flow {:?} mixes address families", self.flow),
        }
    }

    /// The IP packet.
    pub fn ip(&self) -> Vec<u8> {
        let f = &self.flow;
        let step = PacketBuilder::ip(self.ip_header());
        let mut out = Vec::new();
        let payload = self.payload_bytes();
        match self.segment {
            Segment::Syn => step
                .tcp(f.src_port, f.dst_port, 0x1000_0000, 64240)
                .syn()
                .write(&mut out, &payload),
            Segment::Ack => step
                .tcp(f.src_port, f.dst_port, 0x1000_0001, 64240)
                .ack(0x2000_0000)
                .psh()
                .write(&mut out, &payload),
            Segment::Udp | Segment::UdpNoChecksum => {
                step.udp(f.src_port, f.dst_port).write(&mut out, &payload)
            }
        }
        .expect("write to a Vec");
        if self.segment == Segment::UdpNoChecksum {
            let at = out.len() - payload.len() - 2;
            out[at..at + 2].copy_from_slice(&[0, 0]);
        }
        out
    }

    /// The frame from the router to the balancer on `link`.
    pub fn frame(&self, link: &Link) -> Vec<u8> {
        framed(link, &self.ip())
    }

    /// The L4 header and payload: what fragments of this datagram carry.
    fn l4(&self) -> Vec<u8> {
        let ip = self.ip();
        let header = match ip[0] >> 4 {
            4 => usize::from(ip[0] & 0x0f) * 4,
            _ => 40,
        };
        ip[header..].to_vec()
    }
}

fn set_tos(h: &mut Ipv4Header, tos: u8) {
    h.dscp = IpDscp::try_new(tos >> 2).expect("6 bits");
    h.ecn = IpEcn::try_new(tos & 3).expect("2 bits");
}

/// The datagram of `p` cut into two fragments at `split` bytes of its L4
/// data (a multiple of 8), with IP identification `id` (16 bits of it for
/// IPv4): the first fragment (offset 0, more fragments) carries the L4
/// header, whose length field and checksum describe the whole datagram, the
/// second (the rest, last) none. Returns the two IP packets.
pub fn fragments(p: &Packet, split: usize, id: u32) -> [Vec<u8>; 2] {
    assert_eq!(split % 8, 0, "fragment data comes in 8-byte units");
    let l4 = p.l4();
    assert!(split < l4.len(), "the split leaves no second fragment");
    let proto = IpNumber(p.flow.proto);
    let pieces = [
        (&l4[..split], 0u16, true),
        (&l4[split..], (split / 8) as u16, false),
    ];
    pieces.map(|(data, offset, more)| {
        let mut out = Vec::new();
        match (p.flow.src, p.flow.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h =
                    Ipv4Header::new(data.len() as u16, p.ttl, proto, s.octets(), d.octets())
                        .expect("payload fits");
                set_tos(&mut h, p.tos);
                h.dont_fragment = false;
                h.more_fragments = more;
                h.fragment_offset = IpFragOffset::try_new(offset).expect("13-bit offset");
                h.identification = id as u16;
                h.write(&mut out).expect("write to a Vec");
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                Ipv6Header {
                    traffic_class: p.tos,
                    flow_label: Ipv6FlowLabel::try_new(p.flow_label).expect("20-bit label"),
                    payload_length: (8 + data.len()) as u16,
                    next_header: IpNumber::IPV6_FRAGMENTATION_HEADER,
                    hop_limit: p.ttl,
                    source: s.octets(),
                    destination: d.octets(),
                }
                .write(&mut out)
                .expect("write to a Vec");
                out.extend_from_slice(&ipv6_fragment_header(proto.0, offset, more, id));
            }
            _ => panic!("flow {:?} mixes address families", p.flow),
        }
        out.extend_from_slice(data);
        out
    })
}

/// An IPv6 Fragment header (RFC 8200 4.5): next header, reserved, then
/// one big-endian word `offset << 3 | M`, then the identification.
///
/// Written by hand: etherparse 0.19's `Ipv6FragmentHeader` puts the low
/// offset bits and M at the wrong ends of byte 3 (M as 0x80; etherparse
/// issue #150, fixed in 0.20), symmetrically in its reader, so its bytes
/// round-trip through etherparse but no other stack reads them right.
pub fn ipv6_fragment_header(next: u8, offset: u16, more: bool, id: u32) -> [u8; 8] {
    assert!(offset < 1 << 13, "13-bit fragment offset");
    let word = (offset << 3) | u16::from(more);
    let [w0, w1] = word.to_be_bytes();
    let [i0, i1, i2, i3] = id.to_be_bytes();
    [next, 0, w0, w1, i0, i1, i2, i3]
}

/// The next header of an IPv6 Fragment header at the start of `h`, and
/// whether it fragments (offset or M set; not an atomic fragment).
fn read_fragment_header(h: &[u8]) -> Option<(u8, bool)> {
    let word = u16::from_be_bytes([*h.get(2)?, *h.get(3)?]);
    Some((*h.first()?, word & 0xfff9 != 0))
}

/// `p` as an IPv6 "atomic fragment": a Fragment header with offset 0 and M
/// clear before the whole datagram (RFC 6946), identification `id`.
pub fn atomic_fragment(p: &Packet, id: u32) -> Vec<u8> {
    let l4 = p.l4();
    let (IpAddr::V6(s), IpAddr::V6(d)) = (p.flow.src, p.flow.dst) else {
        panic!("atomic fragments are IPv6");
    };
    let mut out = Vec::new();
    Ipv6Header {
        traffic_class: p.tos,
        flow_label: Ipv6FlowLabel::try_new(p.flow_label).expect("20-bit label"),
        payload_length: (8 + l4.len()) as u16,
        next_header: IpNumber::IPV6_FRAGMENTATION_HEADER,
        hop_limit: p.ttl,
        source: s.octets(),
        destination: d.octets(),
    }
    .write(&mut out)
    .expect("write to a Vec");
    out.extend_from_slice(&ipv6_fragment_header(p.flow.proto, 0, false, id));
    out.extend_from_slice(&l4);
    out
}

/// Fields of an IPv4 header that an ICMP packet is built with.
#[derive(Clone, Copy, Debug)]
pub struct V4Fields {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    pub tos: u8,
    pub id: u16,
    pub df: bool,
}

/// An ICMPv4 packet (header checksum and ICMP checksum computed).
pub fn icmpv4(f: V4Fields, ty: Icmpv4Type, payload: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, f.ttl, IpNumber::ICMP, f.src, f.dst).expect("empty payload");
    set_tos(&mut h, f.tos);
    h.identification = f.id;
    h.dont_fragment = f.df;
    let mut out = Vec::new();
    PacketBuilder::ip(IpHeaders::Ipv4(h, Default::default()))
        .icmpv4(ty)
        .write(&mut out, payload)
        .expect("write to a Vec");
    out
}

/// Fields of an IPv6 header that an ICMPv6 packet is built with.
#[derive(Clone, Copy, Debug)]
pub struct V6Fields {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

/// An ICMPv6 packet (checksum computed over the pseudo header).
pub fn icmpv6(f: V6Fields, ty: Icmpv6Type, payload: &[u8]) -> Vec<u8> {
    let h = Ipv6Header {
        traffic_class: f.traffic_class,
        flow_label: Ipv6FlowLabel::try_new(f.flow_label).expect("20-bit label"),
        payload_length: 0,
        next_header: IpNumber::IPV6_ICMP,
        hop_limit: f.hop_limit,
        source: f.src,
        destination: f.dst,
    };
    let mut out = Vec::new();
    PacketBuilder::ip(IpHeaders::Ipv6(h, Default::default()))
        .icmpv6(ty)
        .write(&mut out, payload)
        .expect("write to a Vec");
    out
}

/// An ICMPv4 echo request and the reply the balancer must make of it in
/// place: addresses swapped, TTL 64, type 0, TOS, id and DF kept.
pub fn echo4(client: [u8; 4], vip: [u8; 4], payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let echo = IcmpEchoHeader { id: 0x4d2, seq: 7 };
    let request = V4Fields {
        src: client,
        dst: vip,
        ttl: 57,
        tos: 0x10,
        id: 0x1111,
        df: true,
    };
    let reply = V4Fields {
        src: vip,
        dst: client,
        ttl: BALANCER_TTL,
        ..request
    };
    (
        icmpv4(request, Icmpv4Type::EchoRequest(echo), payload),
        icmpv4(reply, Icmpv4Type::EchoReply(echo), payload),
    )
}

/// An ICMPv6 echo request and its in-place reply: addresses swapped, hop
/// limit 64, type 129, traffic class and flow label kept.
pub fn echo6(client: [u8; 16], vip: [u8; 16], payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let echo = IcmpEchoHeader { id: 0x4d3, seq: 9 };
    let request = V6Fields {
        src: client,
        dst: vip,
        hop_limit: 57,
        traffic_class: 0x20,
        flow_label: 0x0abcd,
    };
    let reply = V6Fields {
        src: vip,
        dst: client,
        hop_limit: BALANCER_TTL,
        ..request
    };
    (
        icmpv6(request, Icmpv6Type::EchoRequest(echo), payload),
        icmpv6(reply, Icmpv6Type::EchoReply(echo), payload),
    )
}

/// Where a tunnelled frame goes, as the balancer must build it.
#[derive(Clone, Copy, Debug)]
pub struct TunnelOut {
    /// GUE destination port, or None for IPIP.
    pub gue_port: Option<u16>,
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    /// flow_hash of the flow (5-tuple) with the fleet seed.
    pub hash: u32,
    /// The next hop's MAC and ours (from the FIB, or gateway and interface).
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}

/// True when `ip` is an IPv4 fragment or an IPv6 packet whose Fragment
/// header is not atomic.
pub fn is_fragment(ip: &[u8]) -> bool {
    match ip[0] >> 4 {
        4 => ip[6] & 0x20 != 0 || (u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff) != 0,
        _ => {
            ip[6] == IpNumber::IPV6_FRAGMENTATION_HEADER.0
                && read_fragment_header(&ip[40..]).is_some_and(|(_, f)| f)
        }
    }
}

/// The IP protocol of the L4 data `ip` carries (after a Fragment header)
/// and where that data starts.
fn l4_of(ip: &[u8]) -> (u8, usize) {
    match ip[0] >> 4 {
        4 => (ip[9], usize::from(ip[0] & 0x0f) * 4),
        _ if ip[6] == IpNumber::IPV6_FRAGMENTATION_HEADER.0 => (ip[40], 48),
        _ => (ip[6], 40),
    }
}

/// The frame the balancer must send for `input` (a frame to a VIP)
/// tunnelled as `t`: [Ethernet][tag kept][outer IP][UDP for GUE][the inner
/// IP packet unchanged, Ethernet padding dropped].
///
/// Outer IPv4: TOS of the inner packet, id 0, DF of the inner IPv4 packet
/// (0 for IPv6), TTL 64. Outer IPv6: traffic class of the inner packet,
/// flow label `hash & 0xfffff`, hop limit 64. GUE: source port `0xc000 |
/// (hash & 0x3fff)`; UDP checksum 0 over IPv4, and over IPv6 the correct
/// checksum when the inner packet is unfragmented TCP or UDP with a
/// checksum, else 0.
pub fn encapsulated(input: &[u8], t: &TunnelOut) -> Vec<u8> {
    let (link, inner) = split_frame(input);
    let inner_v4 = inner[0] >> 4 == 4;
    let tos = if inner_v4 {
        inner[1]
    } else {
        (u16::from_be_bytes([inner[0], inner[1]]) >> 4) as u8
    };
    let inner_df = inner_v4 && inner[6] & 0x40 != 0;
    let gue = t.gue_port.map(|port| {
        let sport = 0xc000 | (t.hash & 0x3fff) as u16;
        (sport, port)
    });
    let ip_proto = match (gue, inner_v4) {
        (Some(_), _) => IpNumber::UDP,
        (None, true) => IpNumber::IPV4,
        (None, false) => IpNumber::IPV6,
    };
    let udp_len = gue.map_or(0, |_| 8);
    let payload_len = udp_len + inner.len();
    let mut out = link
        .with_macs(t.dst_mac, t.src_mac)
        .header(match t.outer_dst {
            IpAddr::V4(_) => ETH_P_IPV4,
            IpAddr::V6(_) => ETH_P_IPV6,
        });
    match (t.outer_src, t.outer_dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            assert!(inner_v4 || gue.is_some(), "IPv6 in IPIP over IPv4");
            let mut h = Ipv4Header::new(
                payload_len as u16,
                BALANCER_TTL,
                ip_proto,
                s.octets(),
                d.octets(),
            )
            .expect("payload fits");
            set_tos(&mut h, tos);
            h.identification = 0;
            h.dont_fragment = inner_df;
            h.write(&mut out).expect("write to a Vec");
            if let Some((sport, dport)) = gue {
                UdpHeader {
                    source_port: sport,
                    destination_port: dport,
                    length: (8 + inner.len()) as u16,
                    checksum: 0,
                }
                .write(&mut out)
                .expect("write to a Vec");
            }
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = Ipv6Header {
                traffic_class: tos,
                flow_label: Ipv6FlowLabel::try_new(t.hash & 0xfffff).expect("20 bits"),
                payload_length: payload_len as u16,
                next_header: ip_proto,
                hop_limit: BALANCER_TTL,
                source: s.octets(),
                destination: d.octets(),
            };
            h.write(&mut out).expect("write to a Vec");
            if let Some((sport, dport)) = gue {
                let (proto, at) = l4_of(inner);
                let checked = !is_fragment(inner)
                    && (proto == lb_common::PROTO_TCP
                        || (proto == lb_common::PROTO_UDP && inner[at + 6..at + 8] != [0, 0]));
                let udp = if checked {
                    UdpHeader::with_ipv6_checksum(sport, dport, &h, inner).expect("length fits")
                } else {
                    UdpHeader {
                        source_port: sport,
                        destination_port: dport,
                        length: (8 + inner.len()) as u16,
                        checksum: 0,
                    }
                };
                udp.write(&mut out).expect("write to a Vec");
            }
        }
        _ => panic!(
            "outer addresses {} and {} mix families",
            t.outer_src, t.outer_dst
        ),
    }
    out.extend_from_slice(inner);
    out
}

/// How many bytes of the offending packet an ICMP "too big" answer quotes.
pub const TOO_BIG_QUOTE: usize = 64;

/// The answer the balancer must send for `input`, a frame too big for the
/// tunnel: to the frame's source MAC from `iface_mac` (tag kept), from the
/// inner packet's destination (the VIP) to its source (the client), TTL 64,
/// quoting the first 64 bytes of the inner IP packet. IPv4: type 3 code 4
/// with next-hop MTU `mtu`; IPv6: type 2 with MTU `mtu`.
///
/// Header fields the behaviour leaves open are those of a fresh header, as
/// Katran writes them: IPv4 TOS 0, id 0, no DF; IPv6 traffic class 0, flow
/// label 0.
pub fn too_big_reply(input: &[u8], iface_mac: [u8; 6], mtu: u16) -> Vec<u8> {
    let (link, inner) = split_frame(input);
    let quote = &inner[..inner.len().min(TOO_BIG_QUOTE)];
    let link = link.with_macs(link.src, iface_mac);
    let ip = match inner[0] >> 4 {
        4 => icmpv4(
            V4Fields {
                src: inner[16..20].try_into().unwrap(),
                dst: inner[12..16].try_into().unwrap(),
                ttl: BALANCER_TTL,
                tos: 0,
                id: 0,
                df: false,
            },
            Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: mtu,
                },
            ),
            quote,
        ),
        _ => icmpv6(
            V6Fields {
                src: inner[24..40].try_into().unwrap(),
                dst: inner[8..24].try_into().unwrap(),
                hop_limit: BALANCER_TTL,
                traffic_class: 0,
                flow_label: 0,
            },
            Icmpv6Type::PacketTooBig {
                mtu: u32::from(mtu),
            },
            quote,
        ),
    };
    framed(&link, &ip)
}

/// Host bits of the last 32 bits of a prefix of `len` bits out of `bits`
/// (32 for IPv4, 128 for IPv6), network byte order.
fn host_mask(len: u8, bits: u8) -> [u8; 4] {
    let fixed = u32::from(len.saturating_sub(bits - 32));
    let mask = if fixed >= 32 { 0 } else { u32::MAX >> fixed };
    mask.to_be_bytes()
}

/// `prefix`'s last four bytes with the host bits taken from the flow hash's
/// big-endian bytes: `(prefix & !mask) | (hash_be & mask)`.
fn fill_host_bits(last4: &mut [u8], mask: [u8; 4], hash: u32) {
    let h = hash.to_be_bytes();
    for i in 0..4 {
        last4[i] = (last4[i] & !mask[i]) | (h[i] & mask[i]);
    }
}

/// The outer source of a tunnelled frame from the IPv4 prefix `prefix/len`.
pub fn tunnel_source_v4(prefix: [u8; 4], len: u8, hash: u32) -> [u8; 4] {
    let mut a = prefix;
    fill_host_bits(&mut a, host_mask(len, 32), hash);
    a
}

/// The outer source of a tunnelled frame from the IPv6 prefix `prefix/len`
/// (96 to 128 bits: the hash fills host bits of the last four bytes only).
pub fn tunnel_source_v6(prefix: [u8; 16], len: u8, hash: u32) -> [u8; 16] {
    let mut a = prefix;
    fill_host_bits(&mut a[12..], host_mask(len, 128), hash);
    a
}

/// True when `addr` lies in `prefix/len` (same family).
pub fn in_prefix(addr: IpAddr, prefix: IpAddr, len: u8) -> bool {
    match (addr, prefix) {
        (IpAddr::V4(a), IpAddr::V4(p)) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(a) & m == u32::from(p) & m
        }
        (IpAddr::V6(a), IpAddr::V6(p)) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(a) & m == u128::from(p) & m
        }
        _ => false,
    }
}

/// Re-parse `frame` with etherparse and verify every checksum in it: IPv4
/// header checksums, TCP and UDP checksums (UDP only where non-zero) and
/// ICMP checksums, in the outer packet and in a packet it tunnels (IPIP, or
/// UDP to `gue_port`). L4 checksums of fragments are not checked (they
/// cover the whole datagram); the packet an ICMP error quotes is not
/// either (it is cut short). Returns what was checked, or what is wrong.
pub fn check_checksums(frame: &[u8], gue_port: u16) -> Result<Vec<&'static str>, String> {
    let (eth, mut rest) =
        Ethernet2Header::from_slice(frame).map_err(|e| format!("Ethernet: {e}"))?;
    let mut ether_type = eth.ether_type.0;
    // At most two tags (802.1ad or 802.1Q, then 802.1Q).
    for _ in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let (tag, after) =
            SingleVlanHeader::from_slice(rest).map_err(|e| format!("VLAN tag: {e}"))?;
        ether_type = tag.ether_type.0;
        rest = after;
    }
    let mut checked = Vec::new();
    match ether_type {
        ETH_P_IPV4 | ETH_P_IPV6 => check_ip(rest, gue_port, 0, &mut checked)?,
        other => return Err(format!("ethertype {other:#06x} is not IP")),
    }
    Ok(checked)
}

fn check_ip(
    ip: &[u8],
    gue_port: u16,
    depth: u8,
    checked: &mut Vec<&'static str>,
) -> Result<(), String> {
    if depth > 1 {
        return Err("more than one level of tunnelling".into());
    }
    match ip.first().map(|b| b >> 4) {
        Some(4) => {
            let (h, _) = Ipv4Header::from_slice(ip).map_err(|e| format!("IPv4 header: {e}"))?;
            if h.header_checksum != h.calc_header_checksum() {
                return Err(format!(
                    "IPv4 header checksum {:#06x}, want {:#06x}",
                    h.header_checksum,
                    h.calc_header_checksum()
                ));
            }
            checked.push("ipv4 header");
            let total = usize::from(h.total_len);
            if total > ip.len() || total < h.header_len() {
                return Err(format!("IPv4 total length {total} of {} bytes", ip.len()));
            }
            if h.more_fragments || h.fragment_offset.value() != 0 {
                return Ok(());
            }
            let body = &ip[h.header_len()..total];
            check_l4(
                h.protocol.0,
                body,
                Pseudo::V4(h.source, h.destination),
                gue_port,
                depth,
                checked,
            )
        }
        Some(6) => {
            let (h, after) = Ipv6Header::from_slice(ip).map_err(|e| format!("IPv6 header: {e}"))?;
            let len = usize::from(h.payload_length);
            if len > after.len() {
                return Err(format!(
                    "IPv6 payload length {len} of {} bytes",
                    after.len()
                ));
            }
            let body = &after[..len];
            let pseudo = Pseudo::V6(h.source, h.destination);
            if h.next_header == IpNumber::IPV6_FRAGMENTATION_HEADER {
                let (next, fragments) = read_fragment_header(body)
                    .filter(|_| body.len() >= 8)
                    .ok_or("IPv6 Fragment header cut short")?;
                if fragments {
                    return Ok(());
                }
                return check_l4(next, &body[8..], pseudo, gue_port, depth, checked);
            }
            check_l4(h.next_header.0, body, pseudo, gue_port, depth, checked)
        }
        v => Err(format!("IP version {v:?}")),
    }
}

#[derive(Clone, Copy)]
enum Pseudo {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

fn check_l4(
    proto: u8,
    body: &[u8],
    pseudo: Pseudo,
    gue_port: u16,
    depth: u8,
    checked: &mut Vec<&'static str>,
) -> Result<(), String> {
    match proto {
        4 | 41 => check_ip(body, gue_port, depth + 1, checked),
        6 => {
            let tcp = TcpHeaderSlice::from_slice(body).map_err(|e| format!("TCP header: {e}"))?;
            let payload = &body[tcp.slice().len()..];
            let want = match pseudo {
                Pseudo::V4(s, d) => tcp.calc_checksum_ipv4_raw(s, d, payload),
                Pseudo::V6(s, d) => tcp.calc_checksum_ipv6_raw(s, d, payload),
            }
            .map_err(|e| format!("TCP checksum: {e}"))?;
            if tcp.checksum() != want {
                return Err(format!(
                    "TCP checksum {:#06x}, want {want:#06x}",
                    tcp.checksum()
                ));
            }
            checked.push("tcp");
            Ok(())
        }
        17 => {
            let (udp, payload) =
                UdpHeader::from_slice(body).map_err(|e| format!("UDP header: {e}"))?;
            if usize::from(udp.length) != body.len() {
                return Err(format!("UDP length {} of {} bytes", udp.length, body.len()));
            }
            if udp.checksum != 0 {
                let want = match pseudo {
                    Pseudo::V4(s, d) => udp.calc_checksum_ipv4_raw(s, d, payload),
                    Pseudo::V6(s, d) => udp.calc_checksum_ipv6_raw(s, d, payload),
                }
                .map_err(|e| format!("UDP checksum: {e}"))?;
                if udp.checksum != want {
                    return Err(format!(
                        "UDP checksum {:#06x}, want {want:#06x}",
                        udp.checksum
                    ));
                }
                checked.push("udp");
            }
            if udp.destination_port == gue_port && depth == 0 {
                return check_ip(payload, gue_port, depth + 1, checked);
            }
            Ok(())
        }
        1 => {
            let icmp = Icmpv4Slice::from_slice(body).map_err(|e| format!("ICMP: {e}"))?;
            let want = icmp.icmp_type().calc_checksum(icmp.payload());
            if icmp.checksum() != want {
                return Err(format!(
                    "ICMP checksum {:#06x}, want {want:#06x}",
                    icmp.checksum()
                ));
            }
            checked.push("icmp");
            Ok(())
        }
        58 => {
            let icmp = Icmpv6Slice::from_slice(body).map_err(|e| format!("ICMPv6: {e}"))?;
            let Pseudo::V6(s, d) = pseudo else {
                return Err("ICMPv6 in IPv4".into());
            };
            if !icmp.is_checksum_valid(s, d) {
                return Err(format!("ICMPv6 checksum {:#06x} is wrong", icmp.checksum()));
            }
            checked.push("icmpv6");
            Ok(())
        }
        other => Err(format!("IP protocol {other} not expected here")),
    }
}

/// A TCP flow from `s` to `d` ("addr:port", IPv6 in brackets).
pub fn tcp(s: &str, d: &str) -> Flow {
    crate::packets::flow(lb_common::PROTO_TCP, s, d)
}

/// A UDP flow from `s` to `d`.
pub fn udp(s: &str, d: &str) -> Flow {
    crate::packets::flow(lb_common::PROTO_UDP, s, d)
}

/// The octets of an IPv4 address.
pub fn v4(a: IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => panic!("{a} is not IPv4"),
    }
}

/// The octets of an IPv6 address.
pub fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => panic!("{a} is not IPv6"),
    }
}

/// Bytes as lowercase hex, for messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// ICMP "fragmentation needed" advertising `mtu`.
pub fn frag_needed(mtu: u16) -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(proto: u8, s: &str, d: &str) -> Flow {
        crate::packets::flow(proto, s, d)
    }

    #[test]
    fn a_built_packet_has_valid_checksums_and_a_broken_one_fails() {
        let p = Packet::new(flow(6, "198.18.0.1:1000", "198.18.100.1:80")).payload(9);
        let frame = p.frame(&Link::tagged(5));
        assert_eq!(
            check_checksums(&frame, 6080).unwrap(),
            vec!["ipv4 header", "tcp"]
        );
        let mut broken = frame.clone();
        *broken.last_mut().unwrap() ^= 1;
        assert!(
            check_checksums(&broken, 6080)
                .unwrap_err()
                .contains("TCP checksum")
        );
    }

    #[test]
    fn fragments_carry_the_datagram() {
        let p = Packet::new(flow(17, "[2001:db8::1]:1000", "[2001:db8:100::1]:53")).payload(100);
        let [a, b] = fragments(&p, 64, 0x0102_0304);
        assert!(is_fragment(&a) && is_fragment(&b));
        assert_eq!(a.len() + b.len() - 2 * 48, 108);
        assert!(!is_fragment(&atomic_fragment(&p, 1)));
        // RFC 8200: the first fragment's word is M alone (0x0001), the
        // second's offset 8 units (0x0040).
        assert_eq!(&a[40..48], &[17, 0, 0, 1, 1, 2, 3, 4]);
        assert_eq!(&b[40..44], &[17, 0, 0, 64]);
        assert_eq!(
            ipv6_fragment_header(6, 0x1fff, true, 9),
            [6, 0, 0xff, 0xf9, 0, 0, 0, 9]
        );
    }

    #[test]
    fn tunnel_sources_keep_the_prefix() {
        let h = 0xdead_beef;
        assert_eq!(
            tunnel_source_v4([198, 18, 192, 0], 20, h),
            [198, 18, 206, 0xef]
        );
        assert_eq!(
            tunnel_source_v4([198, 18, 192, 7], 32, h),
            [198, 18, 192, 7]
        );
        let mut p = [0u8; 16];
        p[0] = 0x20;
        let s = tunnel_source_v6(p, 112, h);
        assert_eq!(s[12..], [0, 0, 0xbe, 0xef]);
        assert_eq!(tunnel_source_v6(p, 96, h)[12..], [0xde, 0xad, 0xbe, 0xef]);
    }
}
