//! Synthetic traffic: for each VIP, distinct random client 5-tuples from the
//! documentation/benchmark ranges, and the frames that carry them.
//!
//! Deterministic: a VIP's flows depend only on the seed, the VIP's name,
//! address, port and protocol, and on the other VIPs sharing its address
//! (whose ports a port-0 VIP's flows avoid), never on the order of the file.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{PROTO_TCP, PROTO_UDP};

use xlb_core::config::{Config, Vip};
use xlb_core::prng::SplitMix64;
use xlb_core::simulate::Flow;

/// Destination MAC of the frames we make: the simulated interface's. The
/// program only copies its configured MAC into the source of frames it
/// sends on, so any locally administered unicast address does.
pub const SIM_IFACE_MAC: [u8; 6] = [0x02, 0x78, 0x6c, 0x62, 0x00, 0x01];
/// Source MAC of the frames we make: the router in front of the balancer.
pub const SIM_ROUTER_MAC: [u8; 6] = [0x02, 0x78, 0x6c, 0x62, 0x00, 0x02];

/// Client addresses of IPv4 VIPs: 198.18.0.0/15 (RFC 2544, benchmarking).
const CLIENT_V4_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const CLIENT_V4_COUNT: u64 = 1 << 17;
/// Client addresses of IPv6 VIPs: 2001:db8::/32 (RFC 3849, documentation).
const CLIENT_V6_PREFIX: u128 = 0x2001_0db8 << 96;
/// Source ports: the ephemeral range a client stack picks from.
const FIRST_SOURCE_PORT: u16 = 1024;

/// The per-VIP generator seed: the run's seed mixed with what identifies the
/// VIP, so adding or reordering VIPs does not change another VIP's flows.
fn vip_seed(vip: &Vip, seed: u64) -> u64 {
    let id = format!("{}|{}", vip.name, vip.endpoint());
    xxhash_rust::xxh64::xxh64(id.as_bytes(), seed)
}

/// Ports of the other VIPs on `vip`'s address and protocol: a flow of a
/// port-0 VIP must not go to one of those ports, or the program (rightly)
/// counts it for the more specific VIP.
fn taken_ports(config: &Config, vip: &Vip) -> HashSet<u16> {
    config
        .vips
        .iter()
        .filter(|v| v.address == vip.address && v.protocol == vip.protocol && v.port != 0)
        .map(|v| v.port)
        .collect()
}

/// One random client of `vip`'s address family (never the VIP itself).
fn client(rng: &mut SplitMix64, vip: &Vip) -> IpAddr {
    loop {
        let addr = match vip.address {
            IpAddr::V4(_) => {
                let host = rng.below(CLIENT_V4_COUNT) as u32;
                IpAddr::V4(Ipv4Addr::from(CLIENT_V4_BASE | host))
            }
            IpAddr::V6(_) => {
                let low = (u128::from(rng.next_u64()) << 32) | u128::from(rng.next_u64() >> 32);
                IpAddr::V6(Ipv6Addr::from(CLIENT_V6_PREFIX | low))
            }
        };
        if addr != vip.address {
            return addr;
        }
    }
}

/// A random destination port for a port-0 VIP, avoiding `taken`.
fn any_port(rng: &mut SplitMix64, taken: &HashSet<u16>) -> u16 {
    loop {
        let port = 1 + rng.below(65535) as u16;
        if !taken.contains(&port) {
            return port;
        }
    }
}

/// A 64-bit key of a flow, for the duplicate check. Two equal flows always
/// have equal keys; a rare collision of two different flows only makes us
/// draw once more, so the flows stay distinct either way.
fn flow_key(f: &Flow) -> u64 {
    let words = f.words();
    xxhash_rust::xxh64::xxh64(bytemuck::bytes_of(&words), 0)
}

/// `vip`'s `count` distinct synthetic flows, in generation order. The space
/// (2^17 IPv4 clients x 64,512 source ports, or 2^96 IPv6 clients) is far
/// larger than any count the caller allows, so the loop ends.
pub fn vip_flows(config: &Config, vip: &Vip, count: usize, seed: u64) -> Vec<Flow> {
    let mut rng = SplitMix64(vip_seed(vip, seed));
    let taken = taken_ports(config, vip);
    let mut seen = HashSet::with_capacity(count);
    let mut flows = Vec::with_capacity(count);
    let source_ports = u64::from(u16::MAX - FIRST_SOURCE_PORT) + 1;
    while flows.len() < count {
        let flow = Flow {
            src: client(&mut rng, vip),
            dst: vip.address,
            src_port: FIRST_SOURCE_PORT + rng.below(source_ports) as u16,
            dst_port: if vip.port == 0 {
                any_port(&mut rng, &taken)
            } else {
                vip.port
            },
            proto: vip.protocol.number(),
        };
        if seen.insert(flow_key(&flow)) {
            flows.push(flow);
        }
    }
    flows
}

/// Write the frame a client sends to open `flow` into `buf` (replacing its
/// contents): Ethernet from `SIM_ROUTER_MAC` to `SIM_IFACE_MAC`, IPv4 (with
/// its header checksum) or IPv6, then a TCP SYN when `flow.proto` is TCP,
/// else a UDP header; no payload, L4 checksums left 0 (the program reads
/// none). A flow mixing families is written as IPv6, the IPv4 address
/// v4-mapped.
pub fn write_frame(flow: &Flow, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&SIM_IFACE_MAC);
    buf.extend_from_slice(&SIM_ROUTER_MAC);
    let tcp = flow.proto == PROTO_TCP;
    let (l4_len, proto) = if tcp {
        (20u16, PROTO_TCP)
    } else {
        (8, PROTO_UDP)
    };
    match (flow.src, flow.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => write_ipv4(buf, src, dst, proto, l4_len),
        (src, dst) => write_ipv6(buf, v6(src), v6(dst), proto, l4_len),
    }
    buf.extend_from_slice(&flow.src_port.to_be_bytes());
    buf.extend_from_slice(&flow.dst_port.to_be_bytes());
    if tcp {
        // Sequence number, acknowledgment number, data offset 5 words, SYN,
        // window, checksum, urgent pointer.
        buf.extend_from_slice(&0x1000_0000u32.to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 0, 5 << 4, 0x02]);
        buf.extend_from_slice(&64240u16.to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 0]);
    } else {
        buf.extend_from_slice(&l4_len.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
    }
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn write_ipv4(buf: &mut Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: u16) {
    buf.extend_from_slice(&0x0800u16.to_be_bytes());
    let start = buf.len();
    // Version 4, IHL 5; total length; id 0; Don't Fragment; TTL 64.
    buf.extend_from_slice(&[0x45, 0]);
    buf.extend_from_slice(&(20 + l4_len).to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&dst.octets());
    let sum = ipv4_checksum(&buf[start..]);
    buf[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
}

/// The IPv4 header checksum: a capture of these frames (or a replay of it
/// through a real stack) should not look corrupt.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn write_ipv6(buf: &mut Vec<u8>, src: Ipv6Addr, dst: Ipv6Addr, proto: u8, l4_len: u16) {
    buf.extend_from_slice(&0x86ddu16.to_be_bytes());
    // Version 6, no traffic class or flow label; payload length; next
    // header; hop limit 64.
    buf.extend_from_slice(&[0x60, 0, 0, 0]);
    buf.extend_from_slice(&l4_len.to_be_bytes());
    buf.extend_from_slice(&[proto, 64]);
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&dst.octets());
}

#[cfg(test)]
mod tests {
    use super::*;
    use xlb_core::config::parse;

    fn config() -> Config {
        parse(
            r#"
interface = "eth0"
[[vip]]
name = "any"
address = "198.18.100.1"
port = 0
protocol = "tcp"
[[vip]]
name = "web"
address = "198.18.100.1"
port = 80
protocol = "tcp"
[[vip]]
name = "dns6"
address = "2001:db8:100::1"
port = 53
protocol = "udp"
"#,
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn flows_are_distinct_in_range_and_reproducible() {
        let c = config();
        for vip in &c.vips {
            let flows = vip_flows(&c, vip, 5000, 7);
            assert_eq!(flows, vip_flows(&c, vip, 5000, 7));
            assert_ne!(flows, vip_flows(&c, vip, 5000, 8));
            let distinct: HashSet<_> = flows.iter().map(|f| format!("{f:?}")).collect();
            assert_eq!(distinct.len(), 5000);
            for f in &flows {
                assert_eq!((f.dst, f.proto), (vip.address, vip.protocol.number()));
                assert!(f.src_port >= FIRST_SOURCE_PORT);
                match f.src {
                    IpAddr::V4(a) => assert_eq!(u32::from(a) >> 17, CLIENT_V4_BASE >> 17),
                    IpAddr::V6(a) => assert_eq!(u128::from(a) >> 96, CLIENT_V6_PREFIX >> 96),
                }
                if vip.port == 0 {
                    assert!(f.dst_port != 0 && f.dst_port != 80, "{f:?}");
                } else {
                    assert_eq!(f.dst_port, vip.port);
                }
            }
        }
    }

    #[test]
    fn a_vips_flows_do_not_depend_on_the_others() {
        let c = config();
        let mut alone = c.clone();
        alone.vips.retain(|v| v.name == "dns6");
        assert_eq!(
            vip_flows(&c, &c.vips[2], 100, 1),
            vip_flows(&alone, &alone.vips[0], 100, 1)
        );
    }

    #[test]
    fn frames_have_the_expected_layout() {
        let flow = Flow {
            src: "198.18.0.9".parse().unwrap(),
            dst: "198.18.100.1".parse().unwrap(),
            src_port: 40000,
            dst_port: 80,
            proto: PROTO_TCP,
        };
        let mut buf = Vec::new();
        write_frame(&flow, &mut buf);
        assert_eq!(buf.len(), 14 + 20 + 20);
        assert_eq!(&buf[12..14], &[0x08, 0x00]);
        // A header with its checksum in place sums to zero.
        assert_eq!(ipv4_checksum(&buf[14..34]), 0);
        assert_eq!(&buf[34..38], &[0x9c, 0x40, 0, 80]);
        assert_eq!(buf[34 + 13], 0x02, "SYN");

        let flow = Flow {
            src: "2001:db8::9".parse().unwrap(),
            dst: "2001:db8:100::1".parse().unwrap(),
            proto: PROTO_UDP,
            ..flow
        };
        write_frame(&flow, &mut buf);
        assert_eq!(buf.len(), 14 + 40 + 8);
        assert_eq!(&buf[12..14], &[0x86, 0xdd]);
        assert_eq!((buf[14 + 6], &buf[18..20]), (PROTO_UDP, &[0u8, 8][..]));
    }
}
