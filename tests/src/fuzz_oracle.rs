//! The fuzzer's judge (tests/tests/fuzz.rs): given a frame, what the
//! balancer did with it (action and output bytes) and what it was told (the
//! applied `Desired`, the interface MTU, `[tunnel]`), says which path the
//! frame took or what is wrong. Written from the behaviour the balancer
//! promises (docs/DATAPLANE.md), never from its output:
//!
//! - XDP_PASS / XDP_DROP: the frame is byte for byte as it came; a frame
//!   for a VIP is never passed, and only a frame too big for its tunnel is
//!   dropped;
//! - XDP_TX by L2 DSR: only the MACs differ, the destination being the
//!   MAC of the backend the flow hashes to;
//! - XDP_TX through a tunnel: [eth (+ the same tag)][outer IPv4/IPv6 with
//!   the right lengths, TOS, DF, TTL and header checksum, from the tunnel
//!   prefix with the flow's hash in its host bits, to the backend the flow
//!   hashes to][UDP to the GUE port, right length and checksum][the input's
//!   IP packet, byte for byte, Ethernet padding dropped];
//! - XDP_TX of an echo reply: the request with MACs and addresses swapped,
//!   type "reply", TTL 64, and checksums that sum as the request's did (so
//!   valid when the request's were);
//! - XDP_TX of a "too big" answer: exactly the ICMP fragmentation-needed /
//!   packet-too-big a router would send for the input, from the VIP,
//!   quoting its first 64 bytes, advertising the MTU minus the tunnel's
//!   overhead.
//!
//! Checksums of what the balancer carries unchanged (DSR, the inner packet)
//! are not its business: it reads none, and a corrupt one stays corrupt.
//! The checksums it writes must be right.
//!
//! The judge reads a frame the way the balancer must (`Ingress`), but only
//! inside the IP packet: a header that lies partly in Ethernet padding is
//! no header, and a frame steered by one is a finding.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{Icmpv4Type, Icmpv6Type};
use lb_common::hash::flow_hash;
use lb_common::stats::{XDP_DROP, XDP_PASS, XDP_TX};
use lb_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use xlb_core::config::Forwarding;
use xlb_core::simulate::{Flow, pick, vip_for};
use xlb_core::state::{Desired, DesiredVip};

use crate::depth_frames::{
    BALANCER_TTL, TOO_BIG_QUOTE, V4Fields, V6Fields, icmpv4, icmpv6, in_prefix, tunnel_source_v4,
    tunnel_source_v6,
};
use crate::packets::action_name;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV6_FRAGMENT: u8 = 44;
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6: u8 = 41;

/// What the balancer was told: the applied state, its interface, `[tunnel]`.
pub struct World {
    pub desired: Desired,
    pub lb_mac: [u8; 6],
    pub mtu: u16,
    pub gateway_mac: [u8; 6],
    pub gue_port: u16,
    source_v4: (Ipv4Addr, u8),
    source_v6: (Ipv6Addr, u8),
    /// Kernel backend id -> (address, MAC).
    backends: HashMap<u32, (IpAddr, [u8; 6])>,
}

impl World {
    /// The world of `desired` applied on an interface with `lb_mac` and
    /// `mtu`. Its `[tunnel]` must name a gateway MAC and both source
    /// prefixes (the judge needs them all).
    pub fn new(desired: Desired, lb_mac: [u8; 6], mtu: u16) -> Result<Self, String> {
        let t = &desired.config.tunnel;
        let gateway_mac = t.gateway_mac.ok_or("[tunnel] needs a gateway_mac")?.0;
        let v4 = t.source_v4.ok_or("[tunnel] needs source_v4")?;
        let v6 = t.source_v6.ok_or("[tunnel] needs source_v6")?;
        let mut backends = HashMap::new();
        for v in &desired.vips {
            for (b, id) in v.config.backends.iter().zip(&v.backend_ids) {
                backends.insert(*id, (b.address, b.mac.0));
            }
        }
        Ok(Self {
            gue_port: t.gue_port,
            gateway_mac,
            source_v4: (v4.addr, v4.len),
            source_v6: (v6.addr, v6.len),
            backends,
            lb_mac,
            mtu,
            desired,
        })
    }

    fn backend(&self, id: u32) -> (IpAddr, [u8; 6]) {
        self.backends[&id]
    }

    /// Bytes `vip`'s tunnel to `backend` puts in front of a packet (None
    /// for L2 DSR).
    fn overhead(&self, vip: &DesiredVip, backend: IpAddr) -> Option<usize> {
        let outer = if backend.is_ipv6() { 40 } else { 20 };
        match vip.config.forwarding {
            Forwarding::Dsr => None,
            Forwarding::Ipip => Some(outer),
            Forwarding::Gue => Some(outer + 8),
        }
    }

    /// The tunnels a frame may take, as (VIP name, overhead): to the flow's
    /// backend, or for a later fragment to any backend of its VIPs.
    fn tunnels<'w>(&'w self, intent: &Intent<'w>) -> Vec<(&'w str, usize)> {
        let mut t = Vec::new();
        match intent {
            Intent::Flow { vip, backend, .. } => {
                if let Some(o) = self.overhead(vip, self.backend(*backend).0) {
                    t.push((vip.config.name.as_str(), o));
                }
            }
            Intent::Later(vips) => {
                for v in vips {
                    for b in &v.config.backends {
                        if let Some(o) = self.overhead(v, b.address) {
                            t.push((v.config.name.as_str(), o));
                        }
                    }
                }
            }
            Intent::Echo | Intent::None => {}
        }
        t.dedup();
        t
    }

    /// True when `ing` is too big for a tunnel it may take.
    fn too_big(&self, ing: &Ingress, intent: &Intent) -> bool {
        self.tunnels(intent)
            .iter()
            .any(|(_, o)| ing.ip.len() + o > usize::from(self.mtu))
    }
}

/// Whether and where an IP packet is a fragment (as the balancer sees it:
/// an IPv6 atomic fragment is whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    Whole,
    First,
    Later,
}

/// The path a frame took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Drop,
    Dsr { v6: bool },
    Ipip { outer_v6: bool, inner_v6: bool },
    Gue { outer_v6: bool, inner_v6: bool },
    Echo { v6: bool },
    TooBig { v6: bool },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        use Outcome::*;
        match *self {
            Pass => "pass",
            Drop => "drop",
            Dsr { v6: false } => "dsr4",
            Dsr { v6: true } => "dsr6",
            Ipip {
                outer_v6: false,
                inner_v6: false,
            } => "ipip 4in4",
            Ipip {
                outer_v6: true,
                inner_v6: false,
            } => "ipip 4in6",
            Ipip {
                outer_v6: true,
                inner_v6: true,
            } => "ipip 6in6",
            Ipip {
                outer_v6: false,
                inner_v6: true,
            } => "ipip 6in4",
            Gue {
                outer_v6: false,
                inner_v6: false,
            } => "gue 4in4",
            Gue {
                outer_v6: true,
                inner_v6: false,
            } => "gue 4in6",
            Gue {
                outer_v6: true,
                inner_v6: true,
            } => "gue 6in6",
            Gue {
                outer_v6: false,
                inner_v6: true,
            } => "gue 6in4",
            Echo { v6: false } => "echo4",
            Echo { v6: true } => "echo6",
            TooBig { v6: false } => "too-big4",
            TooBig { v6: true } => "too-big6",
        }
    }

    /// Sent on to a backend (not answered, passed or dropped).
    pub fn forwarded(&self) -> bool {
        matches!(
            self,
            Outcome::Dsr { .. } | Outcome::Ipip { .. } | Outcome::Gue { .. }
        )
    }
}

/// The judge's answer for a frame that is all right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// The input had one 802.1Q tag.
    pub tagged: bool,
    /// The input's fragment kind (None when it is not IP the balancer reads).
    pub frag: Option<Frag>,
    /// The input was an ICMP error steered as the flow it quotes.
    pub icmp_error: bool,
    /// An echo reply to a request whose checksums were already wrong (they
    /// stay wrong: the balancer patches, it does not recompute).
    pub echo_of_corrupt: bool,
}

/// An input frame as the balancer must read it, up to the L4 header.
#[derive(Clone, Debug)]
pub struct Ingress<'a> {
    /// Ethernet header length: 14, or 18 with one 802.1Q tag.
    pub l2: usize,
    /// The IP packet (the frame after the L2 header, padding cut off).
    pub ip: &'a [u8],
    pub v6: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol of the L4 data (after an IPv6 Fragment header).
    pub proto: u8,
    /// Offset of the L4 data in `ip`.
    pub l4: usize,
    pub frag: Frag,
    /// Bytes of the frame after the IP packet (Ethernet padding).
    pub padding: usize,
    /// IPv4 Don't Fragment (false for IPv6).
    pub df: bool,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn addr4(b: &[u8]) -> IpAddr {
    IpAddr::from(<[u8; 4]>::try_from(&b[..4]).expect("4 bytes"))
}

fn addr16(b: &[u8]) -> IpAddr {
    IpAddr::from(<[u8; 16]>::try_from(&b[..16]).expect("16 bytes"))
}

impl<'a> Ingress<'a> {
    /// The frame's link and IP layers, or why the balancer must leave it.
    pub fn read(frame: &'a [u8]) -> Result<Self, &'static str> {
        if frame.len() < 14 {
            return Err("shorter than an Ethernet header");
        }
        let (mut ether_type, mut l2) = (be16(&frame[12..]), 14);
        if ether_type == ETH_P_8021Q {
            let inner = frame.get(16..18).ok_or("802.1Q tag cut short")?;
            ether_type = be16(inner);
            if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
                return Err("two VLAN tags");
            }
            l2 = 18;
        }
        let rest = &frame[l2..];
        match ether_type {
            ETH_P_IPV4 => {
                if rest.len() < 20 || rest[0] >> 4 != 4 {
                    return Err("no IPv4 header");
                }
                let ihl = usize::from(rest[0] & 0x0f) * 4;
                let total = usize::from(be16(&rest[2..]));
                if ihl < 20 || total < ihl || total > rest.len() {
                    return Err("IPv4 lengths");
                }
                let ip = &rest[..total];
                let frags = be16(&ip[6..]);
                let frag = match (frags & 0x3fff != 0, frags & 0x1fff != 0) {
                    (false, _) => Frag::Whole,
                    (true, false) => Frag::First,
                    (true, true) => Frag::Later,
                };
                Ok(Self {
                    l2,
                    ip,
                    v6: false,
                    src: addr4(&ip[12..]),
                    dst: addr4(&ip[16..]),
                    proto: ip[9],
                    l4: ihl,
                    frag,
                    padding: rest.len() - total,
                    df: frags & 0x4000 != 0,
                    tos: ip[1],
                })
            }
            ETH_P_IPV6 => {
                if rest.len() < 40 || rest[0] >> 4 != 6 {
                    return Err("no IPv6 header");
                }
                let total = 40 + usize::from(be16(&rest[4..]));
                if total > rest.len() {
                    return Err("IPv6 payload length");
                }
                let ip = &rest[..total];
                let (mut proto, mut l4, mut frag) = (ip[6], 40, Frag::Whole);
                if proto == IPV6_FRAGMENT {
                    if total < 48 {
                        return Err("IPv6 Fragment header cut short");
                    }
                    let word = be16(&ip[42..]);
                    proto = ip[40];
                    l4 = 48;
                    if word & 0xfff9 != 0 {
                        frag = if word & 0xfff8 != 0 {
                            Frag::Later
                        } else {
                            Frag::First
                        };
                    }
                }
                Ok(Self {
                    l2,
                    ip,
                    v6: true,
                    src: addr16(&ip[8..]),
                    dst: addr16(&ip[24..]),
                    proto,
                    l4,
                    frag,
                    padding: rest.len() - total,
                    df: false,
                    tos: (ip[0] << 4) | (ip[1] >> 4),
                })
            }
            _ => Err("not IP"),
        }
    }

    fn l4_data(&self) -> &'a [u8] {
        &self.ip[self.l4..]
    }

    /// The ports of a TCP or UDP header that is whole and sane inside the
    /// IP packet (UDP length unchecked in a first fragment: it is the
    /// datagram's).
    fn ports(&self) -> Option<(u16, u16)> {
        let l4 = self.l4_data();
        match self.proto {
            PROTO_TCP => {
                let doff = usize::from(*l4.get(12)? >> 4) * 4;
                (l4.len() >= 20 && doff >= 20 && doff <= l4.len()).then_some(())?
            }
            PROTO_UDP => {
                let len = usize::from(be16(l4.get(4..6)?));
                (l4.len() >= 8 && (self.frag == Frag::First || (8..=l4.len()).contains(&len)))
                    .then_some(())?
            }
            _ => return None,
        }
        Some((be16(&l4[0..]), be16(&l4[2..])))
    }

    /// An ICMP header (8 bytes) inside the packet, of an unfragmented packet.
    fn icmp(&self) -> Option<(u8, u8)> {
        let icmp_proto = if self.v6 { PROTO_ICMPV6 } else { PROTO_ICMP };
        if self.proto != icmp_proto || self.frag != Frag::Whole || self.l4_data().len() < 8 {
            return None;
        }
        Some((self.l4_data()[0], self.l4_data()[1]))
    }

    fn is_echo_request(&self) -> bool {
        match self.icmp() {
            Some((8, 0)) => !self.v6,
            Some((128, _)) => self.v6,
            _ => false,
        }
    }

    /// The flow an ICMP "fragmentation needed" / "packet too big" is about:
    /// the quoted packet (VIP to client) reversed. Its IP header and ports
    /// must lie inside this packet.
    fn quoted_flow(&self) -> Option<Flow> {
        let ty = self.icmp()?;
        let q = &self.l4_data()[8..];
        let (src, dst, proto, ports) = if self.v6 {
            if ty.0 != 2 || q.len() < 44 || q[0] >> 4 != 6 {
                return None;
            }
            (addr16(&q[8..]), addr16(&q[24..]), q[6], &q[40..44])
        } else {
            if ty != (3, 4) || q.len() < 20 || q[0] >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(q[0] & 0x0f) * 4;
            if ihl < 20 || be16(&q[6..]) & 0x1fff != 0 || q.len() < ihl + 4 {
                return None;
            }
            (addr4(&q[12..]), addr4(&q[16..]), q[9], &q[ihl..ihl + 4])
        };
        // An error is about a VIP flow only if it is addressed to the
        // address the quoted packet came from (the VIP's); any other
        // destination is the host's.
        if src != self.dst {
            return None;
        }
        (proto == PROTO_TCP || proto == PROTO_UDP).then(|| Flow {
            src: dst,
            dst: src,
            src_port: be16(&ports[2..]),
            dst_port: be16(&ports[0..]),
            proto,
        })
    }
}

/// What the balancer may do with a frame, by what it is.
enum Intent<'w> {
    /// A TCP/UDP packet (or a first fragment) of a VIP flow, or an ICMP
    /// error about one: to `backend` (kernel id) by `vip`'s method.
    Flow {
        flow: Flow,
        vip: &'w DesiredVip,
        backend: u32,
        icmp_error: bool,
    },
    /// A later fragment to a VIP address: its ports are the tracker's, so
    /// any of these VIPs (same address and protocol) may be its; or passed.
    Later(Vec<&'w DesiredVip>),
    /// An echo request to a VIP address.
    Echo,
    /// Nothing the balancer may touch.
    None,
}

fn intent<'w>(w: &'w World, ing: &Ingress) -> Intent<'w> {
    if ing.frag == Frag::Later {
        if ing.proto != PROTO_TCP && ing.proto != PROTO_UDP {
            return Intent::None;
        }
        let vips: Vec<&DesiredVip> = w
            .desired
            .vips
            .iter()
            .filter(|v| v.config.address == ing.dst && v.config.protocol.number() == ing.proto)
            .map(|v| &**v)
            .collect();
        return if vips.is_empty() {
            Intent::None
        } else {
            Intent::Later(vips)
        };
    }
    if ing.is_echo_request() {
        let vip_address = w.desired.vips.iter().any(|v| v.config.address == ing.dst);
        return if vip_address {
            Intent::Echo
        } else {
            Intent::None
        };
    }
    let (flow, icmp_error) = match ing.ports() {
        Some((src_port, dst_port)) => (
            Flow {
                src: ing.src,
                dst: ing.dst,
                src_port,
                dst_port,
                proto: ing.proto,
            },
            false,
        ),
        None => match ing.quoted_flow() {
            Some(f) => (f, true),
            None => return Intent::None,
        },
    };
    match (vip_for(&w.desired, &flow), pick(&w.desired, &flow)) {
        (Some(vip), Some(backend)) => Intent::Flow {
            flow,
            vip,
            backend,
            icmp_error,
        },
        _ => Intent::None,
    }
}

/// Why a frame the program handled as a VIP's is none, for the report:
/// mostly a header that is not inside the IP packet.
fn no_vip(ing: &Ingress) -> String {
    let l4 = ing.l4_data().len();
    let short = match ing.proto {
        PROTO_TCP => l4 < 20,
        PROTO_UDP => l4 < 8,
        PROTO_ICMP | PROTO_ICMPV6 => {
            let quoted = if ing.v6 { 40 } else { 20 };
            l4 < 8 + quoted + 4
        }
        _ => false,
    };
    if short && ing.padding > 0 {
        format!(
            "its IP packet holds {l4} bytes of protocol {} data, too few for the headers \
             it was steered by; the rest of the frame ({} bytes) is Ethernet padding",
            ing.proto, ing.padding
        )
    } else {
        format!("no VIP of {} protocol {}", ing.dst, ing.proto)
    }
}

/// Why a frame to a VIP address is one the balancer does not handle
/// (docs/DATAPLANE.md, "Traffic the balancer does not understand"), read
/// from the frame here, on its own: its destination address and the rule.
fn unhandled_reason(input: &[u8]) -> Option<(IpAddr, &'static str)> {
    if input.len() < 14 {
        return None;
    }
    let outer = be16(&input[12..]);
    // Two tags: 802.1Q or 802.1ad outside, 802.1Q inside, then IP.
    if outer == ETH_P_8021Q || outer == ETH_P_8021AD {
        let inner = be16(input.get(16..18)?);
        if inner == ETH_P_8021Q {
            let ip = &input[22.min(input.len())..];
            return match be16(input.get(20..22)?) {
                ETH_P_IPV4 if ip.len() >= 20 && ip[0] >> 4 == 4 => {
                    Some((addr4(&ip[16..]), "two VLAN tags"))
                }
                ETH_P_IPV6 if ip.len() >= 40 && ip[0] >> 4 == 6 => {
                    Some((addr16(&ip[24..]), "two VLAN tags"))
                }
                _ => None,
            };
        }
        if outer == ETH_P_8021AD {
            return None;
        }
    }
    let ing = Ingress::read(input).ok()?;
    // IANA's IPv6 extension headers but the fragment header.
    let extension = |n: u8| [0u8, 43, 60, 51, 135, 139, 140, 253, 254].contains(&n);
    if ing.v6 {
        let first = ing.ip[6];
        if extension(first) {
            return Some((ing.dst, "an IPv6 extension header"));
        }
        if first == IPV6_FRAGMENT && (extension(ing.proto) || ing.proto == IPV6_FRAGMENT) {
            return Some((
                ing.dst,
                "an IPv6 extension header after the fragment header",
            ));
        }
    }
    if ing.frag == Frag::Later && (ing.proto == PROTO_TCP || ing.proto == PROTO_UDP) {
        return Some((
            ing.dst,
            "a later fragment (its first may not have been seen)",
        ));
    }
    let ty = ing.icmp()?;
    let handled = if ing.v6 {
        ty.0 == 128 || ty.0 == 2
    } else {
        ty == (8, 0) || ty == (3, 4)
    };
    (!handled).then_some((ing.dst, "ICMP of another type"))
}

/// The `unhandled` setting of the VIPs at `addr`, if it is a VIP address.
fn unhandled_mode(w: &World, addr: IpAddr) -> Option<xlb_core::config::Unhandled> {
    w.desired
        .vips
        .iter()
        .find(|v| v.config.address == addr)
        .map(|v| v.config.unhandled)
}

/// Judge one run: `input` went in, the program answered `action` and left
/// `output`. Ok: the path it took; Err: what is wrong.
pub fn judge(w: &World, input: &[u8], action: u32, output: &[u8]) -> Result<Verdict, String> {
    let ing = Ingress::read(input);
    let verdict = |outcome| Verdict {
        outcome,
        tagged: ing.as_ref().is_ok_and(|i| i.l2 == 18),
        frag: ing.as_ref().ok().map(|i| i.frag),
        icmp_error: false,
        echo_of_corrupt: false,
    };
    match action {
        XDP_PASS | XDP_DROP => {
            if output != input {
                return Err(format!(
                    "{}: the frame changed ({} bytes in, {} out)",
                    action_name(action),
                    input.len(),
                    output.len()
                ));
            }
            if let Some((dst, why)) = unhandled_reason(input)
                && let Some(mode) = unhandled_mode(w, dst)
            {
                let drop = mode == xlb_core::config::Unhandled::Drop;
                // A later fragment whose first was seen is sent as its flow.
                return match (action, drop) {
                    (XDP_DROP, true) => Ok(verdict(Outcome::Drop)),
                    (XDP_PASS, false) => Ok(verdict(Outcome::Pass)),
                    _ => Err(format!(
                        "{} {why} to VIP address {dst} with unhandled = \"{mode}\"",
                        if action == XDP_PASS {
                            "passed"
                        } else {
                            "dropped"
                        }
                    )),
                };
            }
            let Ok(ing) = &ing else {
                return match action {
                    XDP_PASS => Ok(verdict(Outcome::Pass)),
                    _ => Err("dropped a frame that is not IP it reads".into()),
                };
            };
            if action == XDP_PASS {
                passed(ing, &intent(w, ing)).map(|()| verdict(Outcome::Pass))
            } else {
                dropped(w, ing, &intent(w, ing)).map(|()| verdict(Outcome::Drop))
            }
        }
        XDP_TX => {
            let ing = ing.map_err(|e| format!("sent a frame it must pass ({e})"))?;
            let intent = intent(w, &ing);
            let mut v = sent(w, &ing, &intent, input, output)?;
            v.icmp_error = matches!(
                intent,
                Intent::Flow {
                    icmp_error: true,
                    ..
                }
            );
            Ok(v)
        }
        other => Err(format!("action {}", action_name(other))),
    }
}

fn passed(ing: &Ingress, intent: &Intent) -> Result<(), String> {
    match intent {
        Intent::Flow { vip, flow, .. } => Err(format!(
            "passed a frame of VIP {} (flow {flow:?})",
            vip.config.name
        )),
        Intent::Echo => Err(format!("passed an echo request to VIP address {}", ing.dst)),
        Intent::Later(_) | Intent::None => Ok(()),
    }
}

/// A drop is right only for a frame too big for its tunnel that cannot be
/// answered: IPv4 without DF, an ICMP error (never answered with one), or
/// a packet shorter than the quote.
fn dropped(w: &World, ing: &Ingress, intent: &Intent) -> Result<(), String> {
    let unanswerable =
        |icmp_error: bool| (!ing.v6 && !ing.df) || icmp_error || ing.ip.len() < TOO_BIG_QUOTE;
    match intent {
        Intent::Flow {
            vip, icmp_error, ..
        } => {
            if !w.too_big(ing, intent) {
                return Err(format!(
                    "dropped a frame of VIP {} ({}) that fits its path",
                    vip.config.name, vip.config.forwarding
                ));
            }
            if !unanswerable(*icmp_error) {
                return Err(format!(
                    "dropped a too-big frame of VIP {} instead of answering it",
                    vip.config.name
                ));
            }
            Ok(())
        }
        Intent::Later(_) => {
            if w.too_big(ing, intent) && unanswerable(false) {
                Ok(())
            } else {
                Err("dropped a later fragment that fits or could be answered".into())
            }
        }
        Intent::Echo | Intent::None => Err(format!("dropped a frame for no VIP ({})", no_vip(ing))),
    }
}

/// An XDP_TX: which of the shapes a sent frame may have is it?
fn sent(
    w: &World,
    ing: &Ingress,
    intent: &Intent,
    input: &[u8],
    out: &[u8],
) -> Result<Verdict, String> {
    if out.len() < 14 {
        return Err(format!("sent {} bytes", out.len()));
    }
    if out[6..12] != w.lb_mac {
        return Err(format!(
            "source MAC {:02x?} is not the balancer's",
            &out[6..12]
        ));
    }
    // The shapes the destination MAC allows, in turn (a frame's source MAC
    // may be the gateway's or a backend's: the first shape that fits wins).
    let shapes = [
        (
            out.len() == input.len() && out[12..] == input[12..],
            Shape::Dsr,
        ),
        (out[..6] == w.gateway_mac, Shape::Tunnel),
        (out[..6] == input[6..12], Shape::Answer),
    ];
    let mut first_problem = None;
    for (_, shape) in shapes.iter().filter(|(fits, _)| *fits) {
        let judged = match shape {
            Shape::Dsr => dsr(w, ing, intent, out).map(|o| (o, false)),
            Shape::Tunnel => tunnelled(w, ing, intent, input, out).map(|o| (o, false)),
            Shape::Answer => answer(w, ing, intent, input, out),
        };
        match judged {
            Ok((outcome, echo_of_corrupt)) => {
                return Ok(Verdict {
                    outcome,
                    tagged: ing.l2 == 18,
                    frag: Some(ing.frag),
                    icmp_error: false,
                    echo_of_corrupt,
                });
            }
            Err(e) => {
                first_problem.get_or_insert(e);
            }
        }
    }
    Err(first_problem
        .unwrap_or_else(|| format!("sent a frame of no known shape to {:02x?}", &out[..6])))
}

/// What a sent frame may be, by its destination MAC.
enum Shape {
    /// The input with new MACs (to a backend).
    Dsr,
    /// Tunnelled (to the gateway).
    Tunnel,
    /// An answer the balancer makes (back to the frame's source).
    Answer,
}

/// An echo reply or a "too big" answer; true when an echo reply answers a
/// request whose checksums were already wrong.
fn answer(
    w: &World,
    ing: &Ingress,
    intent: &Intent,
    input: &[u8],
    out: &[u8],
) -> Result<(Outcome, bool), String> {
    if !ing.is_echo_request() {
        return too_big_answer(w, ing, intent, input, out).map(|o| (o, false));
    }
    if !matches!(intent, Intent::Echo) {
        return Err("answered an echo request to no VIP address".into());
    }
    let corrupt = echo_reply(ing, input, out)?;
    Ok((Outcome::Echo { v6: ing.v6 }, corrupt))
}

fn dsr(w: &World, ing: &Ingress, intent: &Intent, out: &[u8]) -> Result<Outcome, String> {
    let mac: [u8; 6] = out[..6].try_into().expect("6 bytes");
    let ok = match intent {
        Intent::Flow { vip, backend, .. } => {
            if vip.config.forwarding != Forwarding::Dsr {
                return Err(format!(
                    "sent by L2 DSR a frame of VIP {} ({})",
                    vip.config.name, vip.config.forwarding
                ));
            }
            w.backend(*backend).1 == mac
        }
        Intent::Later(vips) => vips.iter().any(|v| {
            v.config.forwarding == Forwarding::Dsr
                && v.config.backends.iter().any(|b| b.mac.0 == mac)
        }),
        Intent::Echo | Intent::None => {
            return Err(format!(
                "sent by L2 DSR a frame for no VIP ({})",
                no_vip(ing)
            ));
        }
    };
    if !ok {
        return Err(format!(
            "sent by L2 DSR to {mac:02x?}, not the flow's backend"
        ));
    }
    Ok(Outcome::Dsr { v6: ing.v6 })
}

/// The sum of `parts` in ones' complement (RFC 1071), folded; an odd part
/// is padded with a zero byte (only the last part may be odd).
pub fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            sum += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo-header of a `proto` segment of `len` bytes from `src` to `dst`.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            p.extend_from_slice(&addr_bytes16(src));
            p.extend_from_slice(&addr_bytes16(dst));
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        }
    }
    p
}

fn addr_bytes16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// The inner packet's own checksums are right: the IPv4 header's, and the
/// TCP / UDP checksum (UDP over its own length).
fn inner_checksums_right(ing: &Ingress) -> bool {
    if !ing.v6 && ones_sum(&[&ing.ip[..ing.l4]]) != 0xffff {
        return false;
    }
    let l4 = ing.l4_data();
    let covered = match ing.proto {
        PROTO_TCP => l4,
        PROTO_UDP => match l4.get(4..6).map(be16) {
            Some(len) if usize::from(len) <= l4.len() => &l4[..usize::from(len)],
            _ => return false,
        },
        _ => return false,
    };
    let pseudo = pseudo_header(ing.src, ing.dst, ing.proto, covered.len());
    ones_sum(&[&pseudo, covered]) == 0xffff
}

/// The outer header fields that come from the flow hash, when it is known.
fn hashed_fields(w: &World, flow: Option<&Flow>, outer_v6: bool) -> Option<(IpAddr, u16, u32)> {
    let h = flow_hash(&flow?.words(), w.desired.config.hash_seed);
    let src = if outer_v6 {
        let (p, len) = w.source_v6;
        IpAddr::from(tunnel_source_v6(p.octets(), len, h))
    } else {
        let (p, len) = w.source_v4;
        IpAddr::from(tunnel_source_v4(p.octets(), len, h))
    };
    Some((src, 0xc000 | (h & 0x3fff) as u16, h & 0xf_ffff))
}

fn tunnelled(
    w: &World,
    ing: &Ingress,
    intent: &Intent,
    input: &[u8],
    out: &[u8],
) -> Result<Outcome, String> {
    let l2 = ing.l2;
    let outer = out
        .get(l2..)
        .filter(|o| !o.is_empty())
        .ok_or("no outer header")?;
    let outer_v6 = match outer[0] >> 4 {
        4 => false,
        6 => true,
        v => return Err(format!("outer IP version {v}")),
    };
    let ether_type: [u8; 2] = if outer_v6 { [0x86, 0xdd] } else { [0x08, 0x00] };
    let link_ok = if l2 == 18 {
        out[12..14] == [0x81, 0x00] && out[14..16] == input[14..16] && out[16..18] == ether_type
    } else {
        out[12..14] == ether_type
    };
    if !link_ok {
        return Err(format!(
            "link header {:02x?} for input {:02x?}",
            &out[12..l2],
            &input[12..l2]
        ));
    }
    // The outer IP header.
    let (hdr, proto, src, dst, label) = if outer_v6 {
        if outer.len() < 40 {
            return Err("outer IPv6 header cut short".into());
        }
        let tc = (outer[0] << 4) | (outer[1] >> 4);
        let label = u32::from_be_bytes([0, outer[1] & 0x0f, outer[2], outer[3]]);
        let problems = [
            (tc != ing.tos, "traffic class"),
            (
                usize::from(be16(&outer[4..])) != outer.len() - 40,
                "payload length",
            ),
            (outer[7] != BALANCER_TTL, "hop limit"),
        ];
        if let Some((_, what)) = problems.iter().find(|(bad, _)| *bad) {
            return Err(format!("outer IPv6 {what}: {:02x?}", &outer[..40]));
        }
        (
            40,
            outer[6],
            addr16(&outer[8..]),
            addr16(&outer[24..]),
            Some(label),
        )
    } else {
        if outer.len() < 20 {
            return Err("outer IPv4 header cut short".into());
        }
        let df = if !ing.v6 && ing.df { 0x4000 } else { 0 };
        let problems = [
            (outer[0] != 0x45, "version/IHL"),
            (outer[1] != ing.tos, "TOS"),
            (
                usize::from(be16(&outer[2..])) != outer.len(),
                "total length",
            ),
            (be16(&outer[4..]) != 0, "id"),
            (be16(&outer[6..]) != df, "flags/offset"),
            (outer[8] != BALANCER_TTL, "TTL"),
            (ones_sum(&[&outer[..20]]) != 0xffff, "header checksum"),
        ];
        if let Some((_, what)) = problems.iter().find(|(bad, _)| *bad) {
            return Err(format!("outer IPv4 {what}: {:02x?}", &outer[..20]));
        }
        (20, outer[9], addr4(&outer[12..]), addr4(&outer[16..]), None)
    };
    if !outer_v6 && ing.v6 {
        return Err("an IPv6 packet tunnelled over IPv4".into());
    }
    let (method, inner, gue) = match proto {
        PROTO_UDP => {
            let udp = outer.get(hdr..hdr + 8).ok_or("GUE UDP header cut short")?;
            let inner = &outer[hdr + 8..];
            let (sport, dport, len, csum) =
                (be16(udp), be16(&udp[2..]), be16(&udp[4..]), be16(&udp[6..]));
            if sport & 0xc000 != 0xc000
                || dport != w.gue_port
                || usize::from(len) != 8 + inner.len()
            {
                return Err(format!("GUE UDP header {udp:02x?}"));
            }
            (Forwarding::Gue, inner, Some((sport, csum)))
        }
        PROTO_IPIP if !ing.v6 => (Forwarding::Ipip, &outer[hdr..], None),
        PROTO_IPV6 if ing.v6 => (Forwarding::Ipip, &outer[hdr..], None),
        p => {
            return Err(format!(
                "outer protocol {p} for an IPv{} packet",
                if ing.v6 { 6 } else { 4 }
            ));
        }
    };
    let sport = gue.map(|(port, _)| port);
    if inner != ing.ip {
        return Err(format!(
            "the tunnelled packet ({} bytes) is not the input's IP packet ({} bytes)",
            inner.len(),
            ing.ip.len()
        ));
    }
    let overhead = outer.len() - inner.len();
    if outer.len() > usize::from(w.mtu) {
        return Err(format!(
            "sent a {}-byte outer packet over MTU {} ({overhead} bytes of tunnel)",
            outer.len(),
            w.mtu
        ));
    }
    // To whom, from where.
    let prefix = if outer_v6 {
        (IpAddr::V6(w.source_v6.0), w.source_v6.1)
    } else {
        (IpAddr::V4(w.source_v4.0), w.source_v4.1)
    };
    if !in_prefix(src, prefix.0, prefix.1) {
        return Err(format!(
            "outer source {src} is not in {}/{}",
            prefix.0, prefix.1
        ));
    }
    match intent {
        Intent::Flow {
            flow, vip, backend, ..
        } => {
            if vip.config.forwarding != method {
                return Err(format!(
                    "sent by {} a frame of VIP {} ({})",
                    method, vip.config.name, vip.config.forwarding
                ));
            }
            let want = w.backend(*backend).0;
            if dst != want {
                return Err(format!("tunnelled to {dst}, the flow's backend is {want}"));
            }
            let (want_src, want_sport, want_label) =
                hashed_fields(w, Some(flow), outer_v6).expect("a known flow");
            if src != want_src
                || sport.is_some_and(|p| p != want_sport)
                || label.is_some_and(|l| l != want_label)
            {
                return Err(format!(
                    "outer source {src}, GUE port {sport:?}, label {label:?}; the flow hash gives {want_src}, {want_sport}, {want_label}"
                ));
            }
        }
        Intent::Later(vips) => {
            let known = vips.iter().any(|v| {
                v.config.forwarding == method && v.config.backends.iter().any(|b| b.address == dst)
            });
            if !known {
                return Err(format!(
                    "tunnelled a later fragment to {dst}, no backend of its VIPs"
                ));
            }
            if let (Some(p), Some(l)) = (sport, label)
                && u32::from(p & 0x3fff) != l & 0x3fff
            {
                return Err(format!(
                    "GUE port {p:#x} and flow label {l:#x} from different hashes"
                ));
            }
        }
        Intent::Echo | Intent::None => {
            return Err(format!("tunnelled a frame for no VIP ({})", no_vip(ing)));
        }
    }
    // Last: a wrong address above also makes a wrong checksum.
    if let Some((_, csum)) = gue {
        gue_checksum(ing, outer_v6, src, dst, &outer[hdr..], csum)?;
    }
    let inner_v6 = ing.v6;
    Ok(match method {
        Forwarding::Gue => Outcome::Gue { outer_v6, inner_v6 },
        _ => Outcome::Ipip { outer_v6, inner_v6 },
    })
}

/// GUE's UDP checksum: 0 over IPv4; over IPv6 the real one for an
/// unfragmented TCP packet or UDP datagram with a checksum (derived from
/// the inner one: right when the inner packet's checksums are), else 0.
/// A UDP datagram shorter than its IP payload (bytes after it that its
/// checksum does not cover) may get either: a sum derived from the inner
/// checksum alone cannot cover those bytes, but a 0 is honest.
fn gue_checksum(
    ing: &Ingress,
    outer_v6: bool,
    src: IpAddr,
    dst: IpAddr,
    udp: &[u8],
    csum: u16,
) -> Result<(), String> {
    let l4 = ing.l4_data();
    let whole = ing.frag == Frag::Whole;
    let udp_summed = ing.proto == PROTO_UDP && l4.get(6..8).is_some_and(|c| c != [0, 0]);
    let udp_trailer = udp_summed
        && l4
            .get(4..6)
            .is_some_and(|n| usize::from(be16(n)) != l4.len());
    let carried = whole && (ing.proto == PROTO_TCP || (udp_summed && !udp_trailer));
    let either = outer_v6 && whole && udp_trailer;
    if csum == 0 && either {
        return Ok(());
    }
    if !outer_v6 || !(carried || either) {
        return match csum {
            0 => Ok(()),
            c => Err(format!("GUE UDP checksum {c:#06x}, want 0")),
        };
    }
    if csum == 0 {
        return Err("GUE over IPv6 without a UDP checksum".into());
    }
    let pseudo = pseudo_header(src, dst, PROTO_UDP, udp.len());
    if inner_checksums_right(ing) && ones_sum(&[&pseudo, udp]) != 0xffff {
        let trailer = if udp_trailer {
            " (the inner UDP datagram is shorter than its IP payload)"
        } else {
            ""
        };
        return Err(format!(
            "GUE UDP checksum {csum:#06x} is wrong, the inner packet's are right{trailer}"
        ));
    }
    Ok(())
}

/// The echo request answered in place. Returns whether the request's
/// checksums were already wrong.
fn echo_reply(ing: &Ingress, input: &[u8], out: &[u8]) -> Result<bool, String> {
    let l2 = ing.l2;
    if out.len() != input.len() || out[12..l2] != input[12..l2] {
        return Err("echo reply: length or link header changed".into());
    }
    let ip_in = ing.ip;
    let ip_out = &out[l2..l2 + ip_in.len()];
    if out[l2 + ip_in.len()..] != input[l2 + ip_in.len()..] {
        return Err("echo reply: the Ethernet padding changed".into());
    }
    // The request with the reply's changes, checksums not yet compared.
    let mut want = ip_in.to_vec();
    let l4 = ing.l4;
    let (header_sum, icmp_sum_at) = if ing.v6 {
        want[7] = BALANCER_TTL;
        want[8..24].copy_from_slice(&ip_in[24..40]);
        want[24..40].copy_from_slice(&ip_in[8..24]);
        want[l4] = 129;
        (None, l4 + 2)
    } else {
        want[8] = BALANCER_TTL;
        want[12..16].copy_from_slice(&ip_in[16..20]);
        want[16..20].copy_from_slice(&ip_in[12..16]);
        want[10..12].copy_from_slice(&ip_out[10..12]);
        want[l4] = 0;
        (Some(l4), l4 + 2)
    };
    want[icmp_sum_at..icmp_sum_at + 2].copy_from_slice(&ip_out[icmp_sum_at..icmp_sum_at + 2]);
    if ip_out != want.as_slice() {
        let at: Vec<usize> = (0..want.len()).filter(|&i| ip_out[i] != want[i]).collect();
        return Err(format!(
            "echo reply differs from the request's at IP bytes {at:?}"
        ));
    }
    // Patched checksums keep their sums: right if and only if they were.
    let mut corrupt = false;
    if let Some(ihl) = header_sum {
        let (a, b) = (ones_sum(&[&ip_in[..ihl]]), ones_sum(&[&ip_out[..ihl]]));
        if a != b {
            return Err(format!(
                "echo reply IPv4 header sums to {b:#06x}, the request's to {a:#06x}"
            ));
        }
        corrupt |= a != 0xffff;
    }
    let icmp_pseudo = |ip: &[u8], src: IpAddr, dst: IpAddr| {
        if ing.v6 {
            pseudo_header(src, dst, PROTO_ICMPV6, ip.len() - l4)
        } else {
            Vec::new()
        }
    };
    let a = ones_sum(&[&icmp_pseudo(ip_in, ing.src, ing.dst), &ip_in[l4..]]);
    let b = ones_sum(&[&icmp_pseudo(ip_out, ing.dst, ing.src), &ip_out[l4..]]);
    if a != b {
        return Err(format!(
            "echo reply ICMP sums to {b:#06x}, the request's to {a:#06x}"
        ));
    }
    Ok(corrupt || a != 0xffff)
}

/// The exact answer a router would give: checked byte for byte against one
/// built from the input for each VIP the frame may be for.
fn too_big_answer(
    w: &World,
    ing: &Ingress,
    intent: &Intent,
    input: &[u8],
    out: &[u8],
) -> Result<Outcome, String> {
    match intent {
        Intent::Flow {
            icmp_error: true, ..
        } => return Err("answered an ICMP error with an ICMP error".into()),
        Intent::Flow { .. } | Intent::Later(_) => {}
        Intent::Echo | Intent::None => {
            return Err(
                "answered a frame that is neither an echo request to a VIP address \
                 (whole, with its ICMP header inside the IP packet) nor a VIP packet"
                    .into(),
            );
        }
    }
    if !ing.v6 && !ing.df {
        return Err("answered \"too big\" for an IPv4 packet without DF".into());
    }
    let mut last = String::from("answered \"too big\" a frame that fits its tunnel");
    let limit = usize::from(w.mtu);
    for (vip, overhead) in w.tunnels(intent) {
        if ing.ip.len() + overhead <= limit {
            continue;
        }
        let mtu = limit - overhead;
        let want = too_big_frame(w, ing, input, mtu as u16);
        if out == want.as_slice() {
            return Ok(Outcome::TooBig { v6: ing.v6 });
        }
        let at: Vec<usize> = (0..out.len().min(want.len()))
            .filter(|&i| out[i] != want[i])
            .collect();
        last = format!(
            "a \"too big\" answer of {} bytes (want {} for VIP {vip}, MTU {mtu}) differing at {at:?}",
            out.len(),
            want.len(),
        );
    }
    Err(last)
}

/// The ICMP answer to `input` advertising `mtu`: to the frame's source MAC
/// from ours with its tag, from the VIP to the client, TTL 64, quoting the
/// first 64 bytes of the IP packet.
pub fn too_big_frame(w: &World, ing: &Ingress, input: &[u8], mtu: u16) -> Vec<u8> {
    let quote = &ing.ip[..ing.ip.len().min(TOO_BIG_QUOTE)];
    let ip = match (ing.dst, ing.src) {
        (IpAddr::V4(vip), IpAddr::V4(client)) => icmpv4(
            V4Fields {
                src: vip.octets(),
                dst: client.octets(),
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
        (vip, client) => icmpv6(
            V6Fields {
                src: addr_bytes16(vip),
                dst: addr_bytes16(client),
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
    let mut frame = Vec::with_capacity(ing.l2 + ip.len());
    frame.extend_from_slice(&input[6..12]);
    frame.extend_from_slice(&w.lb_mac);
    frame.extend_from_slice(&input[12..ing.l2]);
    frame.extend_from_slice(&ip);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::depth_frames::{Link, Packet, TunnelOut, echo4, encapsulated, fragments, framed};
    use crate::packets::{LB_MAC, ROUTER_MAC, flow, with_macs};
    use xlb_core::state::Allocation;

    const CONFIG: &str = r#"
interface = "xlbfuzz0"
hash_seed = 5
icmp_echo = "reply"
[tunnel]
source_v4 = "198.18.192.0/20"
source_v6 = "2001:db8:ff::/112"
gue_port = 7777
gateway_mac = "02:00:00:00:00:fe"

[[vip]]
name = "dsr"
address = "198.18.100.1"
port = 80
protocol = "tcp"
  [[vip.backend]]
  name = "a"
  address = "198.18.1.1"
  mac = "02:00:00:01:00:01"
  [[vip.backend]]
  name = "b"
  address = "198.18.1.2"
  mac = "02:00:00:01:00:02"

[[vip]]
name = "gue6"
address = "2001:db8:100::4"
port = 53
protocol = "udp"
forwarding = "gue"
  [[vip.backend]]
  name = "a"
  address = "2001:db8:4::1"
  [[vip.backend]]
  name = "b"
  address = "2001:db8:4::2"

[[vip]]
name = "ipip4"
address = "198.18.100.2"
port = 80
protocol = "tcp"
forwarding = "ipip"
  [[vip.backend]]
  name = "a"
  address = "198.18.2.1"
"#;

    fn world() -> World {
        let config = xlb_core::config::parse(CONFIG, "oracle.toml").expect("config");
        let d = xlb_core::state::desired(&config, &Allocation::default()).expect("desired");
        World::new(d, LB_MAC, 200).expect("world")
    }

    fn tunnel_out(w: &World, f: &Flow, gue: bool, input: &[u8]) -> Vec<u8> {
        let vip = vip_for(&w.desired, f).unwrap();
        let (addr, _) = w.backend(pick(&w.desired, f).unwrap());
        let (src, _, _) = hashed_fields(w, Some(f), addr.is_ipv6()).unwrap();
        let t = TunnelOut {
            gue_port: gue.then_some(w.gue_port),
            outer_src: src,
            outer_dst: addr,
            hash: flow_hash(&f.words(), w.desired.config.hash_seed),
            dst_mac: w.gateway_mac,
            src_mac: LB_MAC,
        };
        assert_ne!(vip.config.forwarding, Forwarding::Dsr);
        encapsulated(input, &t)
    }

    #[test]
    fn a_dsr_frame_to_the_flows_backend_passes_and_to_another_fails() {
        let w = world();
        let f = flow(6, "198.18.0.1:1000", "198.18.100.1:80");
        let input = Packet::new(f).frame(&Link::incoming());
        let (_, mac) = w.backend(pick(&w.desired, &f).unwrap());
        let v = judge(&w, &input, XDP_TX, &with_macs(&input, mac, LB_MAC)).unwrap();
        assert_eq!(v.outcome, Outcome::Dsr { v6: false });
        let other = if mac[5] == 1 { 2 } else { 1 };
        let wrong = with_macs(&input, [2, 0, 0, 1, 0, other], LB_MAC);
        assert!(
            judge(&w, &input, XDP_TX, &wrong)
                .unwrap_err()
                .contains("not the flow's backend")
        );
        // Passing it is wrong too: it is for a VIP.
        assert!(
            judge(&w, &input, XDP_PASS, &input)
                .unwrap_err()
                .contains("passed")
        );
        let not_vip =
            Packet::new(flow(6, "198.18.0.1:1000", "198.18.100.9:80")).frame(&Link::incoming());
        assert_eq!(
            judge(&w, &not_vip, XDP_PASS, &not_vip).unwrap().outcome,
            Outcome::Pass
        );
        assert!(judge(&w, &not_vip, XDP_TX, &with_macs(&not_vip, mac, LB_MAC)).is_err());
    }

    #[test]
    fn a_gue_frame_as_promised_passes_and_each_broken_field_fails() {
        let w = world();
        let f = flow(17, "[2001:db8::1]:1000", "[2001:db8:100::4]:53");
        let input = Packet::new(f).payload(9).frame(&Link::tagged(7));
        let good = tunnel_out(&w, &f, true, &input);
        let v = judge(&w, &input, XDP_TX, &good).unwrap();
        assert_eq!(
            v.outcome,
            Outcome::Gue {
                outer_v6: true,
                inner_v6: true
            }
        );
        assert!(v.tagged);
        // offsets: 18 link, 40 IPv6, 8 UDP: hop limit, source, UDP length,
        // UDP checksum, the inner packet, the VLAN id.
        for (at, what) in [
            (18 + 7, "hop limit"),
            (18 + 8 + 12, "source"),
            (18 + 40 + 5, "GUE UDP header"),
            (18 + 40 + 7, "checksum"),
            (18 + 48 + 30, "not the input's"),
            (15, "link header"),
        ] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            let e = judge(&w, &input, XDP_TX, &bad).unwrap_err();
            assert!(e.contains(what), "byte {at}: {e}");
        }
        // Over the MTU (200): too big, answered with ICMPv6.
        let big = Packet::new(f).payload(200).frame(&Link::incoming());
        let ing = Ingress::read(&big).unwrap();
        let answer = too_big_frame(&w, &ing, &big, 200 - 48);
        let v = judge(&w, &big, XDP_TX, &answer).unwrap();
        assert_eq!(v.outcome, Outcome::TooBig { v6: true });
        assert!(judge(&w, &big, XDP_TX, &too_big_frame(&w, &ing, &big, 200 - 40)).is_err());
        assert!(
            judge(&w, &big, XDP_DROP, &big)
                .unwrap_err()
                .contains("instead of answering")
        );
        assert!(
            judge(&w, &input, XDP_DROP, &input)
                .unwrap_err()
                .contains("fits")
        );
    }

    #[test]
    fn a_udp_datagram_shorter_than_its_ip_payload_may_get_gue_checksum_0() {
        let w = world();
        let f = flow(17, "[2001:db8::1]:1000", "[2001:db8:100::4]:53");
        let mut ip = Packet::new(f).payload(9).ip();
        ip.extend_from_slice(&[0xee; 6]);
        let payload = (ip.len() - 40) as u16;
        ip[4..6].copy_from_slice(&payload.to_be_bytes());
        let input = framed(&Link::tagged(7), &ip);
        // The right checksum (over every byte), or 0: both fine.
        let right = tunnel_out(&w, &f, true, &input);
        assert!(judge(&w, &input, XDP_TX, &right).is_ok());
        let at = 18 + 40 + 6;
        let mut zero = right.clone();
        zero[at..at + 2].copy_from_slice(&[0, 0]);
        assert!(judge(&w, &input, XDP_TX, &zero).is_ok());
        // One derived from the UDP checksum alone misses the 6 bytes.
        let mut derived = right.clone();
        let sum = u16::from_be_bytes([right[at], right[at + 1]]);
        let missed = ones_sum(&[&[0xee; 6]]);
        let wrong = ones_sum(&[&sum.to_be_bytes(), &missed.to_be_bytes()]);
        derived[at..at + 2].copy_from_slice(&wrong.to_be_bytes());
        let e = judge(&w, &input, XDP_TX, &derived).unwrap_err();
        assert!(e.contains("shorter than its IP payload"), "{e}");
    }

    #[test]
    fn an_ipip_frame_and_a_later_fragment_are_judged() {
        let w = world();
        let f = flow(6, "198.18.0.1:1000", "198.18.100.2:80");
        let input = Packet::new(f).payload(9).frame(&Link::tagged(7));
        let good = tunnel_out(&w, &f, false, &input);
        let v = judge(&w, &input, XDP_TX, &good).unwrap();
        assert_eq!(
            v.outcome,
            Outcome::Ipip {
                outer_v6: false,
                inner_v6: false
            }
        );
        let mut bad = good.clone();
        bad[18 + 10] ^= 1; // outer header checksum
        assert!(
            judge(&w, &input, XDP_TX, &bad)
                .unwrap_err()
                .contains("checksum")
        );
        // A later fragment of a datagram whose first was not seen: the
        // VIP's address has `unhandled = "drop"`, so dropping it is right
        // and passing it is not.
        let [_, later] = fragments(&Packet::new(f).payload(100), 64, 9);
        let later = framed(&Link::incoming(), &later);
        assert_eq!(
            judge(&w, &later, XDP_DROP, &later).unwrap().frag,
            Some(Frag::Later)
        );
        assert!(judge(&w, &later, XDP_PASS, &later).is_err());
    }

    #[test]
    fn an_echo_reply_must_be_the_request_turned_around() {
        let w = world();
        let (request, reply) = echo4([198, 18, 0, 1], [198, 18, 100, 2], b"ping");
        let input = framed(&Link::incoming(), &request);
        let out = framed(&Link::incoming().with_macs(ROUTER_MAC, LB_MAC), &reply);
        let v = judge(&w, &input, XDP_TX, &out).unwrap();
        assert_eq!(v.outcome, Outcome::Echo { v6: false });
        assert!(!v.echo_of_corrupt);
        let mut bad = out.clone();
        bad[14 + 20 + 2] ^= 0x10; // ICMP checksum
        assert!(
            judge(&w, &input, XDP_TX, &bad)
                .unwrap_err()
                .contains("sums")
        );
        assert!(
            judge(&w, &input, XDP_PASS, &input)
                .unwrap_err()
                .contains("echo")
        );
    }

    #[test]
    fn ones_sum_of_a_right_header_is_all_ones() {
        let p = Packet::new(flow(6, "198.18.0.1:1000", "198.18.100.2:80")).ip();
        assert_eq!(ones_sum(&[&p[..20]]), 0xffff);
        let ing = Ingress::read(&framed(&Link::incoming(), &p)).map(|i| inner_checksums_right(&i));
        assert_eq!(ing, Ok(true));
    }
}
