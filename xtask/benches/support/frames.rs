//! The frames the data-plane benches send, and the check of what the
//! balancer made of them: a figure counts only if the program did the whole
//! job of its forwarding method (a tunnel row whose frame left unencapsulated
//! would time the wrong work).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;

/// The client's MAC (source of every frame sent) and the balancer's.
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const LB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
/// The backend's MAC: DSR rewrites to it; a tunnel reaches it through the
/// FIB (a neighbour entry the bench writes).
pub const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x11];
/// `[tunnel] gateway_mac`: where a tunnel frame goes when the FIB names no
/// next hop. Seen in the output: the balancer took the fallback.
pub const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
pub const BACKEND_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
pub const BACKEND_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
pub const GUE_PORT: u16 = 6080;

pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    pub fn client(self) -> IpAddr {
        match self {
            Family::V4 => CLIENT_V4.into(),
            Family::V6 => CLIENT_V6.into(),
        }
    }

    pub fn vip(self) -> IpAddr {
        match self {
            Family::V4 => VIP_V4.into(),
            Family::V6 => VIP_V6.into(),
        }
    }

    pub fn backend(self) -> IpAddr {
        match self {
            Family::V4 => BACKEND_V4.into(),
            Family::V6 => BACKEND_V6.into(),
        }
    }
}

/// A VIP's `forwarding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    L2Dsr,
    Ipip,
    Gue,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::L2Dsr, Method::Ipip, Method::Gue];

    /// The value of `forwarding` in the config.
    pub fn config_value(self) -> &'static str {
        match self {
            Method::L2Dsr => "dsr",
            Method::Ipip => "ipip",
            Method::Gue => "gue",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Method::L2Dsr => "L2 DSR",
            Method::Ipip => "IPIP",
            Method::Gue => "GUE",
        }
    }

    pub fn tunnels(self) -> bool {
        self != Method::L2Dsr
    }

    /// Bytes the method puts between the Ethernet header and the client's
    /// IP packet, with an outer header of `outer`'s family (GUE variant 1:
    /// outer IP and UDP, no GUE header).
    pub fn overhead(self, outer: Family) -> usize {
        let ip = match outer {
            Family::V4 => 20,
            Family::V6 => 40,
        };
        match self {
            Method::L2Dsr => 0,
            Method::Ipip => ip,
            Method::Gue => ip + 8,
        }
    }
}

/// A TCP segment from the client to `dst` (the VIP, or any address), from
/// `src_port`: a SYN (a connection starting) or an ACK (one going on).
pub fn tcp(family: Family, dst: IpAddr, dst_port: u16, src_port: u16, syn: bool) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let ip = match (family.client(), dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("{dst} is not an {} address", family.label()),
    };
    let tcp = ip.tcp(src_port, dst_port, 1, 65535);
    let tcp = if syn { tcp.syn() } else { tcp.ack(1) };
    let mut out = Vec::new();
    tcp.write(&mut out, &[0u8; 20]).expect("a TCP frame");
    out
}

/// A UDP datagram from the client to the IPv4 VIP.
pub fn udp_v4(dst_port: u16, src_port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT_V4.octets(), VIP_V4.octets(), 64)
        .udp(src_port, dst_port)
        .write(&mut out, &[0u8; 32])
        .expect("a UDP frame");
    out
}

/// The connection-table key the balancer files a TCP flow of `family` under.
pub fn tcp_flow_key(family: Family, dst_port: u16, src_port: u16) -> lb_common::hash::FlowWords {
    xlb_core::simulate::Flow {
        src: family.client(),
        dst: family.vip(),
        src_port,
        dst_port,
        proto: lb_common::PROTO_TCP,
    }
    .words()
}

/// Who the balancer sent a forwarded frame to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// The backend's MAC (DSR; or a tunnel whose FIB lookup named it).
    Backend,
    /// `[tunnel] gateway_mac`: the FIB lookup named no next hop.
    Gateway,
}

/// What the balancer made of a VIP frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The frame left as the method builds it, towards this next hop.
    Forwarded(NextHop),
    /// A tunnel VIP's frame left with only its Ethernet addresses changed:
    /// the loaded balancer forwards with L2 DSR whatever the VIP's method.
    NotEncapsulated,
}

/// Check the balancer's answer to `input` (a frame for a VIP of `method`
/// whose backend is `family`'s): its action and output frame. An error
/// names what is wrong.
pub fn check(
    method: Method,
    family: Family,
    input: &[u8],
    action: u32,
    output: &[u8],
) -> Result<Outcome, String> {
    if action != XDP_TX {
        return Err(format!("action {action}, expected XDP_TX ({XDP_TX})"));
    }
    if output.len() < 14 {
        return Err(format!("output frame of {} bytes", output.len()));
    }
    if output[6..12] != LB_MAC {
        return Err(format!(
            "source MAC {:02x?}, expected the balancer's",
            &output[6..12]
        ));
    }
    let next_hop = match &output[..6] {
        m if m == BACKEND_MAC => NextHop::Backend,
        m if m == GATEWAY_MAC && method.tunnels() => NextHop::Gateway,
        m => {
            return Err(format!(
                "destination MAC {m:02x?}: neither backend nor gateway"
            ));
        }
    };
    let unchanged = output.len() == input.len() && output[12..] == input[12..];
    if !method.tunnels() || unchanged {
        if !unchanged {
            return Err("L2 DSR changed more than the Ethernet addresses".into());
        }
        return Ok(if method.tunnels() {
            Outcome::NotEncapsulated
        } else {
            Outcome::Forwarded(next_hop)
        });
    }
    check_tunnel(method, family, input, output)?;
    Ok(Outcome::Forwarded(next_hop))
}

/// The outer headers of a tunnel frame: length, EtherType, protocol, the
/// backend as destination, the GUE port, and the client's packet whole
/// behind them.
fn check_tunnel(method: Method, family: Family, input: &[u8], output: &[u8]) -> Result<(), String> {
    let overhead = method.overhead(family);
    if output.len() != input.len() + overhead {
        return Err(format!(
            "{} bytes out for {} in: expected {overhead} more ({} over {})",
            output.len(),
            input.len(),
            method.label(),
            family.label()
        ));
    }
    let ip = &output[14..];
    let inner_is_v6 = input[12..14] == [0x86, 0xdd];
    let (ethertype, proto, dst): ([u8; 2], u8, &[u8]) = match family {
        Family::V4 => ([0x08, 0x00], ip[9], &ip[16..20]),
        Family::V6 => ([0x86, 0xdd], ip[6], &ip[24..40]),
    };
    let expected_proto = match method {
        Method::Gue => lb_common::PROTO_UDP,
        _ if inner_is_v6 => lb_common::PROTO_IPV6,
        _ => lb_common::PROTO_IPIP,
    };
    if output[12..14] != ethertype {
        return Err(format!("EtherType {:02x?}", &output[12..14]));
    }
    if proto != expected_proto {
        return Err(format!("outer protocol {proto}, expected {expected_proto}"));
    }
    let backend = match family.backend() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    if dst != backend.as_slice() {
        return Err(format!(
            "outer destination {dst:02x?}, expected the backend"
        ));
    }
    if method == Method::Gue {
        let udp = &ip[overhead - 8..];
        let port = u16::from_be_bytes([udp[2], udp[3]]);
        if port != GUE_PORT {
            return Err(format!("GUE to port {port}, expected {GUE_PORT}"));
        }
    }
    if output[14 + overhead..] != input[14..] {
        return Err("the client's packet behind the outer headers is not the one sent".into());
    }
    Ok(())
}

/// `02:00:00:00:00:01`, as `ip` takes it.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}
