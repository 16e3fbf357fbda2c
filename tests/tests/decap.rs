//! Packet fixtures through the loaded decap program (`xlb_decap`) with
//! BPF_PROG_TEST_RUN, exact bytes. A tunnel frame for this host from one of
//! the balancers' prefixes (`--from`) must come out as its link header (tag
//! kept, EtherType of the inner family) and the inner packet, byte for
//! byte, with XDP_PASS; a tunnel frame for this host from any other source
//! must be dropped; every other frame must come out untouched with
//! XDP_PASS. Each run moves exactly one counter, the one named in the
//! fixture. Also: the built object against the userspace mirror of its
//! maps, and the GUE port taken from the config map.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use lb_common::stats::XDP_DROP;
use lb_common::stats::XDP_PASS;
use tests::packets::{action_name, arp_request, run};
use tests::tunnel::{
    ETH_P_IPV4, ETH_P_IPV6, Encap, Link, decapsulated, encapsulate, encapsulate_with, tcp_syn,
    udp_datagram,
};
use xlb_dataplane::decap::{
    DecapCounters, DecapProgram, MAPS, MAX_ADDRS, MAX_SOURCES, STAT_NAMES, SourcePrefix,
};

/// The backend running the decap program: its addresses are in the map.
const HOST4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
/// Another backend: tunnel packets for it are not ours.
const OTHER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x12);
/// The balancer: the outer source.
const LB4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x2);
/// The balancers' prefixes (`--from`): LB4 and LB6 are inside, and so are
/// their neighbours .3 and ::3.
const FROM: [&str; 2] = ["198.18.0.0/30", "2001:db8::/126"];
/// Outer sources outside `FROM`: just past each prefix, another subnet,
/// and another subnet of each family.
const UNLISTED4: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 0, 4), Ipv4Addr::new(198, 19, 0, 2)];
const UNLISTED6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x4),
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x2),
];
/// The client and the VIP: the inner packet's addresses.
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 50, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x50, 0, 0, 0, 0, 1);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);

const GUE_PORT: u16 = lb_common::DEFAULT_GUE_PORT;

fn link(vlan: bool) -> Link {
    Link {
        dst_mac: [0x02, 0, 0, 0, 0, 0x11],
        src_mac: [0x02, 0, 0, 0, 0, 0x02],
        vlan: vlan.then_some(0x0064),
    }
}

fn gue(checksum: bool) -> Encap {
    Encap::Gue {
        src_port: 40123,
        dst_port: GUE_PORT,
        checksum,
    }
}

/// The inner packet a client sends to the VIP: a TCP SYN or a UDP datagram.
fn inner(v6: bool, tcp: bool) -> Vec<u8> {
    let (client, vip) = if v6 {
        (IpAddr::V6(CLIENT6), IpAddr::V6(VIP6))
    } else {
        (IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
    };
    if tcp {
        tcp_syn((client, 41000), (vip, 80))
    } else {
        udp_datagram((client, 41001), (vip, 53), b"decap me, please")
    }
}

/// (outer source, outer destination) of a family; `ours`: to this host.
fn outer(v6: bool, ours: bool) -> (IpAddr, IpAddr) {
    match (v6, ours) {
        (false, true) => (LB4.into(), HOST4.into()),
        (false, false) => (LB4.into(), OTHER4.into()),
        (true, true) => (LB6.into(), HOST6.into()),
        (true, false) => (LB6.into(), OTHER6.into()),
    }
}

fn family(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

/// The index of a counter by name.
fn stat(name: &str) -> usize {
    STAT_NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// What the program must do with a fixture's frame.
enum Expect {
    /// XDP_PASS with exactly these bytes; counter `stat` moves.
    Decap { output: Vec<u8>, stat: usize },
    /// XDP_PASS, frame untouched; counter `stat` moves.
    Untouched { stat: usize },
    /// XDP_DROP; counter `source_refused` moves.
    Refused,
}

struct Fixture {
    description: String,
    frame: Vec<u8>,
    expect: Expect,
}

fn decap(description: String, l: &Link, frame: Vec<u8>, inner: &[u8], counter: &str) -> Fixture {
    Fixture {
        description,
        frame,
        expect: Expect::Decap {
            output: decapsulated(l, inner),
            stat: stat(counter),
        },
    }
}

fn untouched(description: &str, frame: Vec<u8>, counter: &str) -> Fixture {
    Fixture {
        description: description.to_string(),
        frame,
        expect: Expect::Untouched {
            stat: stat(counter),
        },
    }
}

fn refused(description: String, frame: Vec<u8>) -> Fixture {
    Fixture {
        description,
        frame,
        expect: Expect::Refused,
    }
}

/// Every tunnel kind, outer and inner family, with and without a tag, TCP
/// and UDP inside.
fn decap_fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for vlan in [false, true] {
        let l = link(vlan);
        let tag = if vlan { ", 802.1Q tag" } else { "" };
        for tcp in [true, false] {
            let l4 = if tcp { "TCP SYN" } else { "UDP" };
            // IPIP: IPv4-in-IPv4, IPv6-in-IPv6, IPv4-in-IPv6, IPv6-in-IPv4.
            for (outer_v6, inner_v6) in [(false, false), (true, true), (true, false), (false, true)]
            {
                let i = inner(inner_v6, tcp);
                let (src, dst) = outer(outer_v6, true);
                out.push(decap(
                    format!(
                        "IPIP {}-in-{}, {l4}{tag}",
                        family(inner_v6),
                        family(outer_v6)
                    ),
                    &l,
                    encapsulate(&l, src, dst, Encap::Ipip, &i),
                    &i,
                    if outer_v6 { "ipip6" } else { "ipip4" },
                ));
            }
            // GUE over IPv4 and IPv6, either family inside; the UDP
            // checksum zero over IPv4 (as always) and real over IPv6.
            for (outer_v6, inner_v6) in [(false, false), (false, true), (true, true), (true, false)]
            {
                let i = inner(inner_v6, tcp);
                let (src, dst) = outer(outer_v6, true);
                out.push(decap(
                    format!(
                        "GUE over {}, {} {l4} inside{tag}",
                        family(outer_v6),
                        family(inner_v6)
                    ),
                    &l,
                    encapsulate(&l, src, dst, gue(outer_v6), &i),
                    &i,
                    if outer_v6 { "gue6" } else { "gue4" },
                ));
            }
        }
    }
    let l = link(false);
    let i4 = inner(false, false);
    let i6 = inner(true, true);
    let (s4, d4) = outer(false, true);
    let (s6, d6) = outer(true, true);
    out.push(decap(
        "GUE over IPv6 with a zero UDP checksum (RFC 6935)".into(),
        &l,
        encapsulate(&l, s6, d6, gue(false), &i6),
        &i6,
        "gue6",
    ));
    out.push(decap(
        "GUE over IPv4 with a real UDP checksum".into(),
        &l,
        encapsulate(&l, s4, d4, gue(true), &i4),
        &i4,
        "gue4",
    ));
    out.push(decap(
        "IPIP with outer IPv4 options (IHL 8)".into(),
        &l,
        encapsulate_with(&l, s4, d4, Encap::Ipip, &i4, 3),
        &i4,
        "ipip4",
    ));
    out.push(decap(
        "GUE with outer IPv4 options (IHL 15), 802.1Q tag".into(),
        &link(true),
        encapsulate_with(&link(true), s4, d4, gue(false), &i6, 10),
        &i6,
        "gue4",
    ));
    // Ethernet padding after the outer packet stays after the inner one;
    // the stack trims it by the inner IP length.
    let mut padded = encapsulate(&l, s4, d4, Encap::Ipip, &i4);
    padded.extend_from_slice(&[0; 6]);
    let mut expected = decapsulated(&l, &i4);
    expected.extend_from_slice(&[0; 6]);
    out.push(Fixture {
        description: "IPIP with 6 bytes of Ethernet padding after it".into(),
        frame: padded,
        expect: Expect::Decap {
            output: expected,
            stat: stat("ipip4"),
        },
    });
    out
}

/// Frames that are no tunnel packet for this host.
fn not_ours_fixtures() -> Vec<Fixture> {
    let l = link(false);
    let i4 = inner(false, true);
    let i6 = inner(true, false);
    let (s4, d4) = outer(false, true);
    let (s6, d6) = outer(true, true);
    let (o4s, o4d) = outer(false, false);
    let (o6s, o6d) = outer(true, false);
    let with_link = |l: &Link, packet: &[u8]| {
        let mut f = l.header(tests::tunnel::ether_type_of(packet));
        f.extend_from_slice(packet);
        f
    };
    let other_port = Encap::Gue {
        src_port: 40123,
        dst_port: GUE_PORT + 1,
        checksum: false,
    };
    // IPv6 with a Hop-by-Hop header (8 bytes of PadN) before the IPIP payload.
    let mut hop_by_hop = encapsulate(&l, s6, d6, Encap::Ipip, &i6);
    let mut ext = vec![41, 0, 1, 4, 0, 0, 0, 0];
    let v6_at = 14;
    hop_by_hop[v6_at + 6] = 0; // next header: Hop-by-Hop
    let payload_len = u16::from_be_bytes([hop_by_hop[v6_at + 4], hop_by_hop[v6_at + 5]]) + 8;
    hop_by_hop[v6_at + 4..v6_at + 6].copy_from_slice(&payload_len.to_be_bytes());
    let mut with_ext = hop_by_hop[..v6_at + 40].to_vec();
    with_ext.append(&mut ext);
    with_ext.extend_from_slice(&hop_by_hop[v6_at + 40..]);
    hop_by_hop = with_ext;
    // 802.1ad (QinQ) outer tag: only one 802.1Q tag is parsed.
    let mut qinq = encapsulate(&link(true), s4, d4, Encap::Ipip, &i4);
    qinq[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    let mut arp_tagged = arp_request([198, 18, 0, 2], [198, 18, 0, 11]);
    arp_tagged.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
    vec![
        untouched(
            "IPIP to another host's IPv4 address",
            encapsulate(&l, o4s, o4d, Encap::Ipip, &i4),
            "not_ours",
        ),
        untouched(
            "IPIP to another host's IPv6 address",
            encapsulate(&l, o6s, o6d, Encap::Ipip, &i6),
            "not_ours",
        ),
        untouched(
            "GUE to another host's IPv6 address",
            encapsulate(&l, o6s, o6d, gue(true), &i6),
            "not_ours",
        ),
        untouched(
            "GUE-shaped UDP to this host on another port",
            encapsulate(&l, s4, d4, other_port, &i4),
            "not_ours",
        ),
        untouched(
            "GUE-shaped UDP over IPv6 to this host on another port",
            encapsulate(&l, s6, d6, other_port, &i6),
            "not_ours",
        ),
        untouched(
            "plain TCP SYN to this host's IPv4 address",
            with_link(&l, &tcp_syn((CLIENT4.into(), 41000), (HOST4.into(), 22))),
            "not_ours",
        ),
        untouched(
            "plain UDP to this host's IPv6 address, 802.1Q tag",
            with_link(
                &link(true),
                &udp_datagram((CLIENT6.into(), 41000), (HOST6.into(), 53), b"query"),
            ),
            "not_ours",
        ),
        untouched(
            "ARP request for this host",
            arp_request([198, 18, 0, 2], [198, 18, 0, 11]),
            "not_ours",
        ),
        untouched("ARP request with an 802.1Q tag", arp_tagged, "not_ours"),
        untouched(
            "IPIP after an IPv6 Hop-by-Hop header",
            hop_by_hop,
            "not_ours",
        ),
        untouched("IPIP behind an 802.1ad (QinQ) tag", qinq, "not_ours"),
        untouched(
            "truncated: half an outer IPv4 header",
            encapsulate(&l, s4, d4, Encap::Ipip, &i4)[..14 + 10].to_vec(),
            "not_ours",
        ),
        untouched(
            "truncated: half an outer IPv6 header",
            encapsulate(&l, s6, d6, Encap::Ipip, &i6)[..14 + 30].to_vec(),
            "not_ours",
        ),
        untouched(
            "truncated: GUE with half a UDP header",
            encapsulate(&l, s4, d4, gue(false), &i4)[..14 + 20 + 4].to_vec(),
            "not_ours",
        ),
    ]
}

/// Tunnel packets for this host that cannot be decapsulated.
fn malformed_fixtures() -> Vec<Fixture> {
    let l = link(false);
    let i4 = inner(false, false);
    let i6 = inner(true, true);
    let (s4, d4) = outer(false, true);
    let (s6, d6) = outer(true, true);
    let at4 = 14 + 20; // the inner packet after an IPv4 outer header
    let mut version5 = i4.clone();
    version5[0] = 0x55;
    let mut ihl4 = i4.clone();
    ihl4[0] = 0x44;
    // The inner IPv4 header claims 4 bytes more than the outer gives it.
    let mut short_inner = i4.clone();
    short_inner.truncate(i4.len() - 4);
    // Outer IPv4 More Fragments.
    let mut fragment = encapsulate(&l, s4, d4, Encap::Ipip, &i4);
    fragment[14 + 6] |= 0x20;
    // GUE whose UDP length runs past the IP payload / is below 8.
    let mut udp_long = encapsulate(&l, s4, d4, gue(false), &i4);
    let udp_len_at = at4 + 4;
    let long = u16::from_be_bytes([udp_long[udp_len_at], udp_long[udp_len_at + 1]]) + 10;
    udp_long[udp_len_at..udp_len_at + 2].copy_from_slice(&long.to_be_bytes());
    let mut udp_short = encapsulate(&l, s4, d4, gue(false), &i4);
    udp_short[udp_len_at..udp_len_at + 2].copy_from_slice(&7u16.to_be_bytes());
    let cut = |mut f: Vec<u8>| {
        f.truncate(f.len() - 4);
        f
    };
    // Protocol 4 (IPv4 inside) with an IPv6 packet inside.
    let mut mislabelled = encapsulate(&l, s4, d4, Encap::Ipip, &i6);
    mislabelled[14 + 9] = lb_common::PROTO_IPIP;
    vec![
        untouched(
            "GUE, inner version 5",
            encapsulate(&l, s4, d4, gue(false), &version5),
            "malformed",
        ),
        untouched(
            "IPIP over IPv6, inner version 5",
            encapsulate(&l, s6, d6, Encap::Ipip, &version5),
            "malformed",
        ),
        untouched("IPIP protocol 4 carrying IPv6", mislabelled, "malformed"),
        untouched(
            "GUE, inner IPv4 IHL 4",
            encapsulate(&l, s4, d4, gue(false), &ihl4),
            "malformed",
        ),
        untouched(
            "IPIP, inner IPv6 header cut short (30 bytes)",
            encapsulate(&l, s6, d6, Encap::Ipip, &i6[..30]),
            "malformed",
        ),
        untouched(
            "GUE, inner IPv4 longer than the UDP payload",
            encapsulate(&l, s6, d6, gue(true), &short_inner),
            "malformed",
        ),
        untouched(
            "IPIP, outer IPv4 longer than the frame",
            cut(encapsulate(&l, s4, d4, Encap::Ipip, &i4)),
            "malformed",
        ),
        untouched(
            "GUE, outer IPv6 longer than the frame, 802.1Q tag",
            cut(encapsulate(&link(true), s6, d6, gue(true), &i6)),
            "malformed",
        ),
        untouched(
            "IPIP, outer IPv4 fragment (More Fragments)",
            fragment,
            "malformed",
        ),
        untouched("GUE, UDP length past the IP payload", udp_long, "malformed"),
        untouched("GUE, UDP length 7", udp_short, "malformed"),
        untouched(
            "GUE with an empty UDP payload",
            encapsulate(&l, s4, d4, gue(false), &[]),
            "malformed",
        ),
    ]
}

/// Tunnel frames for this host from outer sources outside `FROM`, of every
/// kind and family; and the same frames from the listed neighbours (.3,
/// ::3), which are decapsulated.
fn source_fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for vlan in [false, true] {
        let l = link(vlan);
        let tag = if vlan { ", 802.1Q tag" } else { "" };
        for (outer_v6, inner_v6) in [(false, false), (false, true), (true, true), (true, false)] {
            let i = inner(inner_v6, !inner_v6);
            let host: IpAddr = if outer_v6 { HOST6.into() } else { HOST4.into() };
            let unlisted: Vec<IpAddr> = if outer_v6 {
                UNLISTED6.iter().map(|a| (*a).into()).collect()
            } else {
                UNLISTED4.iter().map(|a| (*a).into()).collect()
            };
            for src in unlisted {
                for (kind, encap) in [("IPIP", Encap::Ipip), ("GUE", gue(outer_v6))] {
                    out.push(refused(
                        format!(
                            "{kind} {}-in-{} from unlisted {src}{tag}",
                            family(inner_v6),
                            family(outer_v6)
                        ),
                        encapsulate(&l, src, host, encap, &i),
                    ));
                }
            }
            let neighbour: IpAddr = if outer_v6 {
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x3).into()
            } else {
                Ipv4Addr::new(198, 18, 0, 3).into()
            };
            out.push(decap(
                format!(
                    "IPIP {}-in-{} from listed {neighbour}{tag}",
                    family(inner_v6),
                    family(outer_v6)
                ),
                &l,
                encapsulate(&l, neighbour, host, Encap::Ipip, &i),
                &i,
                if outer_v6 { "ipip6" } else { "ipip4" },
            ));
        }
    }
    let l = link(false);
    let i4 = inner(false, true);
    let stranger: IpAddr = UNLISTED4[1].into();
    // Judged on its source before its shape: a broken tunnel packet from a
    // stranger is refused, not passed to the stack as malformed.
    let mut fragment = encapsulate(&l, stranger, HOST4.into(), Encap::Ipip, &i4);
    fragment[14 + 6] |= 0x20;
    out.push(refused(
        format!("IPIP outer fragment from unlisted {stranger}"),
        fragment,
    ));
    // Not a tunnel packet for this host: a stranger's own traffic, or a
    // tunnel for another host, passes untouched.
    out.push(untouched(
        "IPIP from an unlisted source to another host",
        encapsulate(&l, stranger, OTHER4.into(), Encap::Ipip, &i4),
        "not_ours",
    ));
    out.push(untouched(
        "GUE-shaped UDP from an unlisted source on another port",
        encapsulate(
            &l,
            stranger,
            HOST4.into(),
            Encap::Gue {
                src_port: 40123,
                dst_port: GUE_PORT + 1,
                checksum: false,
            },
            &i4,
        ),
        "not_ours",
    ));
    let mut plain = l.header(ETH_P_IPV4);
    plain.extend_from_slice(&tcp_syn((stranger, 41000), (HOST4.into(), 22)));
    out.push(untouched(
        "plain TCP SYN from an unlisted source to this host",
        plain,
        "not_ours",
    ));
    out
}

/// The program loaded, holding HOST4 and HOST6, GUE on the default port,
/// tunnels accepted from `from`.
fn loaded_from(from: &[&str]) -> DecapProgram {
    let mut d = DecapProgram::load().expect("load the decap program");
    d.add_address(HOST4.into()).expect("add HOST4");
    d.add_address(HOST6.into()).expect("add HOST6");
    for prefix in from {
        let prefix: SourcePrefix = prefix.parse().expect("a prefix");
        d.add_source(prefix).expect("add a source prefix");
    }
    d.set_gue_port(GUE_PORT).expect("set the GUE port");
    d
}

/// `loaded_from(FROM)`: the balancers LB4 and LB6 listed.
fn loaded() -> DecapProgram {
    loaded_from(&FROM)
}

/// The counters that moved between two snapshots.
fn moved(before: &DecapCounters, after: &DecapCounters) -> [u64; STAT_NAMES.len()] {
    let (b, a) = (before.slots(), after.slots());
    std::array::from_fn(|i| a[i] - b[i])
}

/// The inner packet of a decapsulated frame, checked by etherparse: the
/// family its EtherType says, the tag kept, the TCP or UDP checksum right.
fn check_with_etherparse(description: &str, frame: &[u8], vlan: bool) {
    let p = SlicedPacket::from_ethernet(frame)
        .unwrap_or_else(|e| panic!("{description}: etherparse refuses the output: {e}"));
    assert_eq!(p.vlan().is_some(), vlan, "{description}: 802.1Q tag");
    let (src, dst): (Vec<u8>, Vec<u8>) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source().to_vec(),
            ip.header().destination().to_vec(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source().to_vec(),
            ip.header().destination().to_vec(),
        ),
        other => panic!("{description}: no IP inside: {other:?}"),
    };
    let sum = |v4: &dyn Fn([u8; 4], [u8; 4]) -> u16, v6: &dyn Fn([u8; 16], [u8; 16]) -> u16| {
        if src.len() == 4 {
            v4(src[..].try_into().unwrap(), dst[..].try_into().unwrap())
        } else {
            v6(src[..].try_into().unwrap(), dst[..].try_into().unwrap())
        }
    };
    match &p.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let want = sum(&|s, d| tcp.calc_checksum_ipv4(s, d).unwrap(), &|s, d| {
                tcp.calc_checksum_ipv6(s, d).unwrap()
            });
            assert_eq!(tcp.checksum(), want, "{description}: TCP checksum");
        }
        Some(TransportSlice::Udp(udp)) => {
            let h = udp.to_header();
            let want = sum(
                &|s, d| h.calc_checksum_ipv4_raw(s, d, udp.payload()).unwrap(),
                &|s, d| h.calc_checksum_ipv6_raw(s, d, udp.payload()).unwrap(),
            );
            assert_eq!(udp.checksum(), want, "{description}: UDP checksum");
        }
        other => panic!("{description}: no TCP or UDP inside: {other:?}"),
    }
}

fn run_fixtures(d: &DecapProgram, fixtures: &[Fixture]) {
    let mut out = vec![0u8; 4096];
    for f in fixtures {
        let before = d.counters().expect("counters");
        let outcome = run(d.program(), &f.frame, &mut out)
            .unwrap_or_else(|e| panic!("{}: test run failed: {e}", f.description));
        let after = d.counters().expect("counters");
        let want_action = match f.expect {
            Expect::Refused => XDP_DROP,
            _ => XDP_PASS,
        };
        assert_eq!(
            outcome.action,
            want_action,
            "{}: action {}",
            f.description,
            action_name(outcome.action)
        );
        let got = &out[..outcome.len];
        let (want, counter): (Option<&[u8]>, usize) = match &f.expect {
            Expect::Decap { output, stat } => (Some(output), *stat),
            Expect::Untouched { stat } => (Some(&f.frame), *stat),
            Expect::Refused => (None, stat("source_refused")),
        };
        if let Some(want) = want {
            assert!(
                got == want,
                "{}: output differs\n got  {got:02x?}\n want {want:02x?}",
                f.description
            );
        }
        let mut expected_moves = [0u64; STAT_NAMES.len()];
        expected_moves[counter] = 1;
        assert_eq!(
            moved(&before, &after),
            expected_moves,
            "{}: counters moved (order {STAT_NAMES:?})",
            f.description
        );
        if let Expect::Decap { .. } = f.expect {
            let tagged = u16::from_be_bytes([got[12], got[13]]) == 0x8100;
            let ether_type = if tagged {
                u16::from_be_bytes([got[16], got[17]])
            } else {
                u16::from_be_bytes([got[12], got[13]])
            };
            assert!(
                [ETH_P_IPV4, ETH_P_IPV6].contains(&ether_type),
                "{}: EtherType {ether_type:#06x}",
                f.description
            );
            check_with_etherparse(&f.description, got, tagged);
        }
    }
}

#[test]
fn tunnel_frames_for_this_host_are_decapsulated() {
    tests::require_privileges!();
    let fixtures = decap_fixtures();
    assert!(fixtures.len() >= 37, "{} fixtures", fixtures.len());
    run_fixtures(&loaded(), &fixtures);
}

#[test]
fn other_frames_pass_untouched() {
    tests::require_privileges!();
    let mut fixtures = not_ours_fixtures();
    fixtures.extend(malformed_fixtures());
    assert!(fixtures.len() >= 26, "{} fixtures", fixtures.len());
    run_fixtures(&loaded(), &fixtures);
}

#[test]
fn tunnel_frames_from_unlisted_sources_are_dropped() {
    tests::require_privileges!();
    let fixtures = source_fixtures();
    let refused = fixtures
        .iter()
        .filter(|f| matches!(f.expect, Expect::Refused))
        .count();
    assert!(refused >= 33, "{refused} refused fixtures");
    run_fixtures(&loaded(), &fixtures);
}

#[test]
fn sources_are_judged_per_family() {
    tests::require_privileges!();
    let l = link(false);
    let i = inner(false, false);
    let from4 = |src: IpAddr| encapsulate(&l, src, HOST4.into(), Encap::Ipip, &i);
    let from6 = |src: IpAddr| encapsulate(&l, src, HOST6.into(), Encap::Ipip, &i);
    // No --from: nothing is accepted (userspace refuses to start so).
    run_fixtures(
        &loaded_from(&[]),
        &[
            refused("IPIP over IPv4, no prefix listed".into(), from4(LB4.into())),
            refused("IPIP over IPv6, no prefix listed".into(), from6(LB6.into())),
        ],
    );
    // Every IPv4 source, and no IPv6 one.
    run_fixtures(
        &loaded_from(&["0.0.0.0/0"]),
        &[
            decap(
                "IPIP over IPv4 from anywhere, 0.0.0.0/0 listed".into(),
                &l,
                from4(UNLISTED4[1].into()),
                &i,
                "ipip4",
            ),
            refused(
                "IPIP over IPv6, only 0.0.0.0/0 listed".into(),
                from6(LB6.into()),
            ),
        ],
    );
    // One host of each family, and a longer prefix inside a shorter one.
    run_fixtures(
        &loaded_from(&[
            "198.18.0.2",
            "2001:db8::2",
            "198.19.0.0/16",
            "198.19.7.0/24",
        ]),
        &[
            decap(
                "IPIP from LB4, listed alone".into(),
                &l,
                from4(LB4.into()),
                &i,
                "ipip4",
            ),
            decap(
                "IPIP from LB6, listed alone".into(),
                &l,
                from6(LB6.into()),
                &i,
                "ipip6",
            ),
            refused(
                "IPIP from 198.18.0.3, not listed".into(),
                from4(Ipv4Addr::new(198, 18, 0, 3).into()),
            ),
            decap(
                "IPIP from 198.19.0.2 in 198.19.0.0/16".into(),
                &l,
                from4(UNLISTED4[1].into()),
                &i,
                "ipip4",
            ),
        ],
    );
    // A prefix added while running is accepted from then on.
    let mut d = loaded_from(&["198.18.0.0/30"]);
    let stranger = from4(UNLISTED4[0].into());
    run_fixtures(
        &d,
        &[refused(
            "IPIP from 198.18.0.4, not yet listed".into(),
            stranger.clone(),
        )],
    );
    d.add_source("198.18.0.4/32".parse().unwrap())
        .expect("add a source");
    run_fixtures(
        &d,
        &[decap(
            "IPIP from 198.18.0.4, listed".into(),
            &l,
            stranger,
            &i,
            "ipip4",
        )],
    );
}

#[test]
fn the_gue_port_is_the_configured_one() {
    tests::require_privileges!();
    let mut d = loaded();
    d.set_gue_port(7777).expect("set the GUE port");
    let l = link(false);
    let i = inner(false, true);
    let (s, dst) = outer(false, true);
    let on = |port| Encap::Gue {
        src_port: 40000,
        dst_port: port,
        checksum: false,
    };
    run_fixtures(
        &d,
        &[
            decap(
                "GUE to the configured port 7777".into(),
                &l,
                encapsulate(&l, s, dst, on(7777), &i),
                &i,
                "gue4",
            ),
            untouched(
                "GUE to the default port, not configured",
                encapsulate(&l, s, dst, on(GUE_PORT), &i),
                "not_ours",
            ),
        ],
    );
    // An address learnt later is decapsulated from then on.
    let frame = encapsulate(&l, s, OTHER4.into(), Encap::Ipip, &i);
    run_fixtures(
        &d,
        &[untouched(
            "IPIP to OTHER4, not added",
            frame.clone(),
            "not_ours",
        )],
    );
    d.add_address(OTHER4.into()).expect("add OTHER4");
    run_fixtures(
        &d,
        &[decap(
            "IPIP to OTHER4, added".into(),
            &l,
            frame,
            &i,
            "ipip4",
        )],
    );
}

#[test]
fn object_matches_the_userspace_mirror() {
    let object =
        aya_obj::Object::parse(xlb_dataplane::decap_object()).expect("parse the decap object");
    for name in MAPS {
        assert!(object.maps.contains_key(name), "map {name} missing");
    }
    assert!(
        object.programs.contains_key(xlb_dataplane::decap::PROGRAM),
        "program {} missing",
        xlb_dataplane::decap::PROGRAM
    );
    let addrs = &object.maps[xlb_dataplane::decap::ADDRS_MAP];
    assert_eq!(
        addrs.key_size() as usize,
        size_of::<xlb_dataplane::decap::DecapAddr>()
    );
    assert_eq!(addrs.max_entries() as usize, MAX_ADDRS);
    let config = &object.maps[xlb_dataplane::decap::CONFIG_MAP];
    assert_eq!(
        config.value_size() as usize,
        size_of::<xlb_dataplane::decap::DecapConfig>()
    );
    let sources = &object.maps[xlb_dataplane::decap::SOURCES_MAP];
    assert_eq!(
        sources.map_type(),
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_LPM_TRIE as u32
    );
    assert_eq!(
        sources.key_size() as usize,
        4 + size_of::<xlb_dataplane::decap::SourceKey>()
    );
    assert_eq!(sources.max_entries() as usize, MAX_SOURCES);
    let stats = &object.maps[xlb_dataplane::decap::STATS_MAP];
    assert_eq!(stats.max_entries() as usize, STAT_NAMES.len());
    assert_eq!(stats.value_size() as usize, size_of::<u64>());
}
