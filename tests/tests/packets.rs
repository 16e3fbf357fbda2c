//! Packet fixtures through the loaded balancer with BPF_PROG_TEST_RUN,
//! katran-style: each fixture is a description, an input frame, the expected
//! action and the expected output frame, checked byte for byte. For XDP_TX
//! the expected output is the input with the destination MAC of the backend
//! the userspace simulator picks and the balancer's MAC as source; for
//! XDP_PASS and XDP_DROP it is the input unchanged. Every run is also checked
//! against the counters it must move, and nothing else.

use std::collections::BTreeMap;

use lb_common::{
    Counters, PROTO_TCP, PROTO_UDP,
    stats::{
        DROP_NO_BACKEND, EV_UNHANDLED_EXT_HEADER_PASSED, EV_UNHANDLED_FRAGMENT_PASSED,
        EV_UNHANDLED_ICMP_PASSED, EV_UNHANDLED_VLAN_PASSED, EVENT_NAMES, XDP_DROP, XDP_PASS,
        XDP_TX,
    },
};
use tests::depth_frames;
use tests::packets::{
    ETH_LEN, FrameBuilder, IPV4_LEN, IPV6_LEN, LB_MAC, TCP_LEN, UDP_LEN, action_name, arp_request,
    expected_backend, flow, frame, icmpv4_echo, run, set_ip_version, set_ipv4_ihl,
    set_tcp_data_offset, with_macs,
};
use xlb_core::simulate::{Flow, vip_for};
use xlb_core::state::{Allocation, Desired};
use xlb_dataplane::{CounterSnapshot, Dataplane};

/// The fixtures' services. Every backend has its own MAC
/// (02:00:00:<vip>:00:<backend>), so an output frame names one backend.
const CONFIG: &str = r#"
interface = "xlbtest0"
hash_seed = 7
# Echo replies have their own fixtures (depth.rs); here pings go to the host.
icmp_echo = "pass"

[[vip]]
name = "web4"
address = "198.18.100.1"
port = 80
protocol = "tcp"
table_size = 1021
  [[vip.backend]]
  name = "a"
  address = "198.18.1.1"
  mac = "02:00:00:01:00:01"
  weight = 1
  [[vip.backend]]
  name = "b"
  address = "198.18.1.2"
  mac = "02:00:00:01:00:02"
  weight = 2
  [[vip.backend]]
  name = "c"
  address = "198.18.1.3"
  mac = "02:00:00:01:00:03"
  weight = 3

[[vip]]
name = "dns4"
address = "198.18.100.1"
port = 53
protocol = "udp"
table_size = 1021
  [[vip.backend]]
  name = "a"
  address = "198.18.1.1"
  mac = "02:00:00:02:00:01"
  [[vip.backend]]
  name = "b"
  address = "198.18.1.2"
  mac = "02:00:00:02:00:02"

[[vip]]
name = "any4"
address = "198.18.100.2"
port = 0
protocol = "tcp"
table_size = 1021
  [[vip.backend]]
  name = "a"
  address = "198.18.1.1"
  mac = "02:00:00:03:00:01"
  [[vip.backend]]
  name = "b"
  address = "198.18.1.2"
  mac = "02:00:00:03:00:02"
  [[vip.backend]]
  name = "c"
  address = "198.18.1.3"
  mac = "02:00:00:03:00:03"

[[vip]]
name = "any4-8080"
address = "198.18.100.2"
port = 8080
protocol = "tcp"
table_size = 1021
  [[vip.backend]]
  name = "x"
  address = "198.18.1.4"
  mac = "02:00:00:04:00:01"
  [[vip.backend]]
  name = "y"
  address = "198.18.1.5"
  mac = "02:00:00:04:00:02"

[[vip]]
name = "web6"
address = "2001:db8:100::1"
# Packets to the address that the balancer does not handle go to the host.
unhandled = "pass"
port = 443
protocol = "tcp"
table_size = 1021
  [[vip.backend]]
  name = "a"
  address = "2001:db8:1::1"
  mac = "02:00:00:05:00:01"
  weight = 5
  [[vip.backend]]
  name = "b"
  address = "2001:db8:1::2"
  mac = "02:00:00:05:00:02"
  weight = 1
  [[vip.backend]]
  name = "c"
  address = "2001:db8:1::3"
  mac = "02:00:00:05:00:03"
  weight = 1

[[vip]]
name = "dns6"
address = "2001:db8:100::1"
unhandled = "pass"
port = 53
protocol = "udp"
table_size = 1021
  [[vip.backend]]
  name = "a"
  address = "2001:db8:1::1"
  mac = "02:00:00:06:00:01"
  [[vip.backend]]
  name = "b"
  address = "2001:db8:1::2"
  mac = "02:00:00:06:00:02"

[[vip]]
name = "any6"
address = "2001:db8:100::2"
port = 0
protocol = "udp"
table_size = 1021
  [[vip.backend]]
  name = "a"
  address = "2001:db8:1::1"
  mac = "02:00:00:07:00:01"
  [[vip.backend]]
  name = "b"
  address = "2001:db8:1::2"
  mac = "02:00:00:07:00:02"

[[vip]]
name = "off4"
address = "198.18.100.3"
port = 80
protocol = "tcp"
table_size = 1021
  [[vip.backend]]
  name = "a"
  address = "198.18.1.1"
  mac = "02:00:00:08:00:01"
  state = "disabled"
  [[vip.backend]]
  name = "b"
  address = "198.18.1.2"
  mac = "02:00:00:08:00:02"
  state = "disabled"

[[vip]]
name = "empty6"
address = "2001:db8:100::3"
port = 53
protocol = "udp"
table_size = 1021
"#;

/// What the program must do with a fixture's frame.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// XDP_TX to the backend the simulator picks for this flow.
    Tx(Flow),
    /// XDP_PASS, frame untouched; no `unhandled_*_passed` event moves.
    Pass,
    /// XDP_PASS, frame untouched, by `unhandled = "pass"`: this
    /// `EV_UNHANDLED_*_PASSED` event moves by one, no other of them does,
    /// and no drop counter moves.
    PassUnhandled(u32),
    /// XDP_DROP for this flow's VIP (no backend), frame untouched.
    Drop(Flow),
    /// BPF_PROG_TEST_RUN refuses the frame (shorter than an Ethernet header:
    /// the kernel's bpf_test_init answers EINVAL), so no program runs.
    Refused,
}

struct Fixture {
    description: &'static str,
    frame: Vec<u8>,
    expect: Expect,
}

fn fx(description: &'static str, frame: Vec<u8>, expect: Expect) -> Fixture {
    Fixture {
        description,
        frame,
        expect,
    }
}

/// `frame` with `patch` applied.
fn patched(mut frame: Vec<u8>, patch: impl FnOnce(&mut [u8])) -> Vec<u8> {
    patch(&mut frame);
    frame
}

/// The first `len` bytes of `frame`.
fn truncated(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    assert!(len < frame.len(), "not a truncation");
    frame.truncate(len);
    frame
}

fn fixtures() -> Vec<Fixture> {
    use Expect::*;
    let tcp = |s: &str, d: &str| flow(PROTO_TCP, s, d);
    let udp = |s: &str, d: &str| flow(PROTO_UDP, s, d);

    let web4 = tcp("198.18.0.10:40001", "198.18.100.1:80");
    let dns4 = udp("198.18.0.10:40002", "198.18.100.1:53");
    let web6 = tcp("[2001:db8::10]:40001", "[2001:db8:100::1]:443");
    let dns6 = udp("[2001:db8::10]:40002", "[2001:db8:100::1]:53");
    let fb = FrameBuilder::new;

    let mut list = vec![
        // --- balanced: XDP_TX ---
        fx(
            "IPv4 TCP SYN to web4 :80, header ends the frame",
            frame(web4),
            Tx(web4),
        ),
        fx(
            "IPv4 TCP ACK+PSH, 100 bytes, same flow (connection table hit)",
            fb(web4).established().payload(100).build(),
            Tx(web4),
        ),
        {
            let f = tcp("198.18.0.11:50000", "198.18.100.1:80");
            fx(
                "IPv4 TCP SYN to web4 :80, another client",
                fb(f).payload(10).build(),
                Tx(f),
            )
        },
        {
            let f = tcp("198.18.255.254:1", "198.18.100.1:80");
            fx("IPv4 TCP SYN to web4 :80, source port 1", frame(f), Tx(f))
        },
        fx(
            "IPv4 UDP to dns4 :53, 64 bytes",
            fb(dns4).payload(64).build(),
            Tx(dns4),
        ),
        {
            let f = udp("198.18.0.12:40003", "198.18.100.1:53");
            fx(
                "IPv4 UDP to dns4 :53, header ends the frame",
                frame(f),
                Tx(f),
            )
        },
        {
            let f = tcp("198.18.0.13:40004", "198.18.100.1:80");
            fx(
                "IPv4 IHL 6 (4 bytes of options), TCP to web4",
                fb(f).ipv4_options(1).payload(20).build(),
                Tx(f),
            )
        },
        {
            let f = udp("198.18.0.13:40005", "198.18.100.1:53");
            fx(
                "IPv4 IHL 15 (40 bytes of options), UDP to dns4",
                fb(f).ipv4_options(10).payload(20).build(),
                Tx(f),
            )
        },
        {
            let f = tcp("198.18.0.14:40006", "198.18.100.2:22");
            fx("IPv4 TCP to wildcard any4, port 22", frame(f), Tx(f))
        },
        {
            let f = tcp("198.18.0.14:40007", "198.18.100.2:65535");
            fx("IPv4 TCP to wildcard any4, port 65535", frame(f), Tx(f))
        },
        {
            let f = tcp("198.18.0.14:40008", "198.18.100.2:8080");
            fx(
                "IPv4 TCP to 198.18.100.2:8080: exact any4-8080 beats the wildcard",
                frame(f),
                Tx(f),
            )
        },
        fx(
            "IPv6 TCP SYN to web6 :443, header ends the frame",
            frame(web6),
            Tx(web6),
        ),
        fx(
            "IPv6 TCP ACK+PSH, 200 bytes, same flow (connection table hit)",
            fb(web6).established().payload(200).build(),
            Tx(web6),
        ),
        fx(
            "IPv6 UDP to dns6 :53, 32 bytes",
            fb(dns6).payload(32).build(),
            Tx(dns6),
        ),
        {
            let f = udp("[2001:db8:ffff::1]:5353", "[2001:db8:100::1]:53");
            fx(
                "IPv6 UDP to dns6 :53, header ends the frame",
                frame(f),
                Tx(f),
            )
        },
        {
            let f = udp("[2001:db8::20]:40009", "[2001:db8:100::2]:5353");
            fx(
                "IPv6 UDP to wildcard any6, port 5353",
                fb(f).payload(8).build(),
                Tx(f),
            )
        },
        {
            let f = udp("[2001:db8::20]:40010", "[2001:db8:100::2]:1");
            fx("IPv6 UDP to wildcard any6, port 1", frame(f), Tx(f))
        },
        // --- not for a VIP: XDP_PASS ---
        fx(
            "IPv4 TCP to a non-VIP address",
            frame(tcp("198.18.0.10:40001", "198.18.200.1:80")),
            Pass,
        ),
        fx(
            "IPv6 TCP to a non-VIP address",
            frame(tcp("[2001:db8::10]:40001", "[2001:db8:200::1]:443")),
            Pass,
        ),
        fx(
            "IPv4 TCP to the VIP address, port 81",
            frame(tcp("198.18.0.10:40001", "198.18.100.1:81")),
            Pass,
        ),
        fx(
            "IPv6 TCP to the VIP address, port 444",
            frame(tcp("[2001:db8::10]:40001", "[2001:db8:100::1]:444")),
            Pass,
        ),
        fx(
            "IPv4 UDP to web4's address and port (TCP VIP)",
            frame(udp("198.18.0.10:40001", "198.18.100.1:80")),
            Pass,
        ),
        fx(
            "IPv4 TCP to dns4's address and port (UDP VIP)",
            frame(tcp("198.18.0.10:40001", "198.18.100.1:53")),
            Pass,
        ),
        fx(
            "IPv4 UDP to wildcard any4's address (TCP VIP)",
            frame(udp("198.18.0.10:40001", "198.18.100.2:22")),
            Pass,
        ),
        fx(
            "IPv6 TCP to web6's address :53 (dns6 is UDP)",
            frame(tcp("[2001:db8::10]:40001", "[2001:db8:100::1]:53")),
            Pass,
        ),
        fx(
            "IPv4 ICMP echo to a VIP address, icmp_echo = \"pass\"",
            icmpv4_echo([198, 18, 0, 10], [198, 18, 100, 1]),
            Pass,
        ),
        fx(
            "ARP request for a VIP address",
            arp_request([198, 18, 0, 1], [198, 18, 100, 1]),
            Pass,
        ),
        fx(
            "IPv6 Hop-by-Hop header before TCP to web6 :443 (unhandled = \"pass\")",
            fb(web6).ipv6_hop_by_hop().build(),
            PassUnhandled(EV_UNHANDLED_EXT_HEADER_PASSED),
        ),
        fx(
            "IPv6 TCP to web6 behind two 802.1Q tags (unhandled = \"pass\")",
            depth_frames::double_tagged(
                depth_frames::ETH_P_8021Q,
                &depth_frames::Packet::new(web6).ip(),
            ),
            PassUnhandled(EV_UNHANDLED_VLAN_PASSED),
        ),
        {
            let f = udp("[2001:db8::10]:40009", "[2001:db8:100::1]:53");
            let [_, later] =
                depth_frames::fragments(&depth_frames::Packet::new(f).payload(150), 80, 0x0bad);
            fx(
                "IPv6 later fragment to dns6, first never seen (unhandled = \"pass\")",
                depth_frames::framed(&depth_frames::Link::incoming(), &later),
                PassUnhandled(EV_UNHANDLED_FRAGMENT_PASSED),
            )
        },
        {
            let ip = depth_frames::icmpv6(
                depth_frames::V6Fields {
                    src: depth_frames::v6("2001:db8::fe".parse().unwrap()),
                    dst: depth_frames::v6("2001:db8:100::1".parse().unwrap()),
                    hop_limit: 61,
                    traffic_class: 0,
                    flow_label: 0,
                },
                etherparse::Icmpv6Type::DestinationUnreachable(
                    etherparse::icmpv6::DestUnreachableCode::Port,
                ),
                &[0x60, 0, 0, 0, 0, 8, 17, 64],
            );
            fx(
                "ICMPv6 port unreachable to web6's address (unhandled = \"pass\")",
                depth_frames::framed(&depth_frames::Link::incoming(), &ip),
                PassUnhandled(EV_UNHANDLED_ICMP_PASSED),
            )
        },
        fx(
            "IPv4 first fragment (MF, offset 0) of TCP to web4: balanced, ports remembered",
            fb(web4).ipv4_fragment(true, 0).payload(40).build(),
            Tx(web4),
        ),
        fx(
            "IPv4 middle fragment (MF, offset 1) of the same datagram: its flow's backend",
            fb(web4).ipv4_fragment(true, 1).payload(40).build(),
            Tx(web4),
        ),
        fx(
            "IPv4 last fragment (offset 185) of the same datagram: its flow's backend",
            fb(web4).ipv4_fragment(false, 185).payload(40).build(),
            Tx(web4),
        ),
        // --- malformed or truncated: XDP_PASS ---
        fx(
            "Ethernet header only (14 bytes, type IPv4)",
            truncated(frame(web4), ETH_LEN),
            Pass,
        ),
        fx(
            "IPv4 header truncated (19 of 20 bytes)",
            truncated(frame(web4), ETH_LEN + IPV4_LEN - 1),
            Pass,
        ),
        fx(
            "IPv4 IHL 6 (24 bytes) but the frame ends 22 bytes into IP",
            truncated(fb(web4).ipv4_options(1).build(), ETH_LEN + 22),
            Pass,
        ),
        fx(
            "IPv4 IHL 15, frame ends with the options (no TCP)",
            truncated(fb(web4).ipv4_options(10).build(), ETH_LEN + 60),
            Pass,
        ),
        fx(
            "IPv4 IHL 4 (< 5)",
            patched(frame(web4), |f| set_ipv4_ihl(f, 4)),
            Pass,
        ),
        fx(
            "IPv4 version 6 on ethertype 0x0800",
            patched(frame(web4), |f| set_ip_version(f, 6)),
            Pass,
        ),
        fx(
            "IPv6 header truncated (39 of 40 bytes)",
            truncated(frame(web6), ETH_LEN + IPV6_LEN - 1),
            Pass,
        ),
        fx(
            "IPv6 version 4 on ethertype 0x86dd",
            patched(frame(web6), |f| set_ip_version(f, 4)),
            Pass,
        ),
        fx(
            "IPv4 TCP header truncated (19 of 20 bytes)",
            truncated(frame(web4), ETH_LEN + IPV4_LEN + TCP_LEN - 1),
            Pass,
        ),
        fx(
            "IPv6 TCP header truncated (19 of 20 bytes)",
            truncated(frame(web6), ETH_LEN + IPV6_LEN + TCP_LEN - 1),
            Pass,
        ),
        fx(
            "IPv4 TCP data offset 4 (< 5)",
            patched(fb(web4).payload(8).build(), |f| set_tcp_data_offset(f, 4)),
            Pass,
        ),
        fx(
            "IPv6 TCP data offset 0",
            patched(frame(web6), |f| set_tcp_data_offset(f, 0)),
            Pass,
        ),
        // Length fields that claim more than the frame holds (found by
        // fuzzing): malformed, so passed untouched, never sent.
        fx(
            "IPv4 total length 100 bytes past the frame, TCP to web4",
            patched(frame(web4), |f| {
                let n = u16::from_be_bytes([f[ETH_LEN + 2], f[ETH_LEN + 3]]) + 100;
                f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&n.to_be_bytes());
            }),
            Pass,
        ),
        fx(
            "IPv6 payload length 50 bytes past the frame, UDP to dns6",
            patched(frame(dns6), |f| {
                let n = u16::from_be_bytes([f[ETH_LEN + 4], f[ETH_LEN + 5]]) + 50;
                f[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&n.to_be_bytes());
            }),
            Pass,
        ),
        fx(
            "IPv4 UDP length longer than the IP payload, to dns4",
            patched(frame(dns4), |f| {
                let at = ETH_LEN + IPV4_LEN + 4;
                let n = u16::from_be_bytes([f[at], f[at + 1]]) + 1;
                f[at..at + 2].copy_from_slice(&n.to_be_bytes());
            }),
            Pass,
        ),
        fx(
            "IPv4 UDP header truncated (7 of 8 bytes)",
            truncated(frame(dns4), ETH_LEN + IPV4_LEN + UDP_LEN - 1),
            Pass,
        ),
        fx(
            "IPv6 UDP header truncated (7 of 8 bytes)",
            truncated(frame(dns6), ETH_LEN + IPV6_LEN + UDP_LEN - 1),
            Pass,
        ),
        fx(
            "Ethernet header truncated (13 bytes)",
            truncated(frame(web4), ETH_LEN - 1),
            Refused,
        ),
    ];
    // --- for a VIP without backends: XDP_DROP ---
    let off4 = tcp("198.18.0.10:40001", "198.18.100.3:80");
    let empty6 = udp("[2001:db8::10]:40001", "[2001:db8:100::3]:53");
    list.push(fx(
        "IPv4 TCP to off4 (all backends disabled)",
        fb(off4).payload(10).build(),
        Drop(off4),
    ));
    list.push(fx(
        "IPv6 UDP to empty6 (no backends)",
        frame(empty6),
        Drop(empty6),
    ));
    list
}

/// `c` plus one packet of `bytes`.
fn plus_one(c: Counters, bytes: usize) -> Counters {
    Counters {
        packets: c.packets + 1,
        bytes: c.bytes + bytes as u64,
        new_flows: c.new_flows,
    }
}

/// `c` plus one packet of `bytes`, and one new flow if `new_flow`.
fn plus_flow(c: Counters, bytes: usize, new_flow: bool) -> Counters {
    Counters {
        new_flows: c.new_flows + new_flow as u64,
        ..plus_one(c, bytes)
    }
}

/// A TCP segment with SYN and without ACK: it always starts a new flow.
/// A first fragment carries the TCP header too (etherparse does not parse
/// transports of fragments, so it is read from the IP payload).
fn is_syn(frame: &[u8]) -> bool {
    let Ok(p) = etherparse::SlicedPacket::from_ethernet(frame) else {
        return false;
    };
    let tcp = match (&p.transport, &p.net) {
        (Some(etherparse::TransportSlice::Tcp(t)), _) => Some(t.to_header()),
        (None, Some(etherparse::NetSlice::Ipv4(v4)))
            if v4.header().fragments_offset().value() == 0
                && v4.header().protocol() == etherparse::IpNumber::TCP =>
        {
            etherparse::TcpHeader::from_slice(v4.payload().payload)
                .ok()
                .map(|(t, _)| t)
        }
        _ => None,
    };
    tcp.is_some_and(|t| t.syn && !t.ack)
}

/// The events of `unhandled = "pass"`: every fixture says which one of
/// them it moves (`PassUnhandled`), or that it moves none. (The other
/// events, such as the connection table's, are not predicted here.)
const UNHANDLED_PASSED: [u32; 4] = [
    EV_UNHANDLED_EXT_HEADER_PASSED,
    EV_UNHANDLED_VLAN_PASSED,
    EV_UNHANDLED_FRAGMENT_PASSED,
    EV_UNHANDLED_ICMP_PASSED,
];

/// Differences between two snapshots, as readable lines.
fn snapshot_diff(want: &CounterSnapshot, got: &CounterSnapshot) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut cmp = |what: String, w: Option<&Counters>, g: Option<&Counters>| {
        if w != g {
            diffs.push(format!("{what}: want {w:?}, got {g:?}"));
        }
    };
    for id in want.vips.keys().chain(got.vips.keys()) {
        cmp(format!("vip {id}"), want.vips.get(id), got.vips.get(id));
    }
    for id in want.backends.keys().chain(got.backends.keys()) {
        cmp(
            format!("backend {id}"),
            want.backends.get(id),
            got.backends.get(id),
        );
    }
    for i in 0..want.actions.len().max(got.actions.len()) {
        cmp(
            format!("action {}", action_name(i as u32)),
            want.actions.get(i),
            got.actions.get(i),
        );
    }
    for i in 0..want.drops.len().max(got.drops.len()) {
        cmp(
            format!("drop reason {i}"),
            want.drops.get(i),
            got.drops.get(i),
        );
    }
    for ev in UNHANDLED_PASSED {
        let (w, g) = (want.events.get(ev as usize), got.events.get(ev as usize));
        if w != g {
            diffs.push(format!(
                "event {}: want {w:?}, got {g:?}",
                EVENT_NAMES[ev as usize]
            ));
        }
    }
    diffs.dedup();
    diffs
}

/// Load the balancer and apply the fixtures' config.
fn loaded() -> (Dataplane, Desired) {
    let config = xlb_core::config::parse(CONFIG, "fixture.toml").expect("fixture config is valid");
    let desired = xlb_core::state::desired(&config, &Allocation::default()).expect("desired state");
    let mut dp = Dataplane::load().expect("load the balancer");
    dp.apply(LB_MAC, &desired, None)
        .expect("apply the fixture config");
    (dp, desired)
}

#[test]
fn packet_fixtures() {
    tests::require_privileges!();
    let (dp, desired) = loaded();
    let vip_ids: Vec<u32> = desired.vips.iter().map(|v| v.id).collect();
    let backend_ids: Vec<u32> = desired
        .vips
        .iter()
        .flat_map(|v| v.backend_ids.iter().copied())
        .collect();
    let snapshot = || {
        dp.snapshot(vip_ids.iter().copied(), backend_ids.iter().copied())
            .expect("read counters")
    };

    let fixtures = fixtures();
    assert!(fixtures.len() >= 20);
    // Each reason of `unhandled = "pass"` has its fixture.
    for ev in UNHANDLED_PASSED {
        assert!(
            fixtures
                .iter()
                .any(|f| matches!(f.expect, Expect::PassUnhandled(e) if e == ev)),
            "no fixture moves {}",
            EVENT_NAMES[ev as usize]
        );
    }
    let mut out = vec![0u8; 4096];
    let mut failures = Vec::new();
    // Backend id -> (frames, bytes) the TX fixtures sent it.
    let mut sent: BTreeMap<u32, Counters> = BTreeMap::new();
    // Flows the connection table has seen: their next non-SYN packet is no
    // new flow.
    let mut known: std::collections::BTreeSet<String> = Default::default();

    for (n, f) in fixtures.iter().enumerate() {
        let len = f.frame.len();
        // What the program must return, the frame it must leave, and the
        // counters it must move.
        let before = snapshot();
        let mut want = before.clone();
        let (action, expected_frame, target) = match f.expect {
            Expect::Tx(flow) => {
                let (backend, id) =
                    expected_backend(&desired, &flow).expect("the simulator picks a backend");
                let vip = vip_for(&desired, &flow).expect("a VIP flow");
                let new_flow = known.insert(format!("{flow:?}")) || is_syn(&f.frame);
                want.vips
                    .insert(vip.id, plus_flow(want.vips[&vip.id], len, new_flow));
                want.backends
                    .insert(id, plus_flow(want.backends[&id], len, new_flow));
                let s = sent.entry(id).or_default();
                *s = plus_flow(*s, len, new_flow);
                (
                    XDP_TX,
                    with_macs(&f.frame, backend.mac.0, LB_MAC),
                    format!("{}/{}", vip.config.name, backend.name),
                )
            }
            Expect::Drop(flow) => {
                assert_eq!(
                    xlb_core::simulate::pick(&desired, &flow),
                    None,
                    "{}: the simulator picks a backend",
                    f.description
                );
                let vip = vip_for(&desired, &flow).expect("a VIP flow");
                want.vips.insert(vip.id, plus_one(want.vips[&vip.id], len));
                let d = DROP_NO_BACKEND as usize;
                want.drops[d] = plus_one(want.drops[d], len);
                (
                    XDP_DROP,
                    f.frame.clone(),
                    format!("{} (no backend)", vip.config.name),
                )
            }
            Expect::Pass => (XDP_PASS, f.frame.clone(), String::new()),
            Expect::PassUnhandled(ev) => {
                want.events[ev as usize] += 1;
                (
                    XDP_PASS,
                    f.frame.clone(),
                    EVENT_NAMES[ev as usize].to_string(),
                )
            }
            Expect::Refused => (u32::MAX, f.frame.clone(), String::new()),
        };
        if action != u32::MAX {
            want.actions[action as usize] = plus_one(want.actions[action as usize], len);
        }

        out.fill(0xa5);
        let result = run(dp.program(), &f.frame, &mut out);
        let mut problems = Vec::new();
        let verdict = match (&f.expect, result) {
            (Expect::Refused, Err(e)) => {
                let errno = match &e {
                    aya::programs::ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
                    _ => None,
                };
                if errno != Some(nix::libc::EINVAL) {
                    problems.push(format!("test run failed with {e:?}, want EINVAL"));
                }
                "EINVAL".to_string()
            }
            (Expect::Refused, Ok(o)) => {
                problems.push(format!(
                    "the kernel ran the program: {}",
                    action_name(o.action)
                ));
                action_name(o.action).to_string()
            }
            (_, Err(e)) => {
                problems.push(format!("test run failed: {e}"));
                "error".to_string()
            }
            (_, Ok(o)) => {
                if o.action != action {
                    problems.push(format!(
                        "action {}, want {}",
                        action_name(o.action),
                        action_name(action)
                    ));
                }
                let got = &out[..o.len.min(out.len())];
                if got.len() != expected_frame.len() {
                    problems.push(format!(
                        "output {} bytes, want {}",
                        got.len(),
                        expected_frame.len()
                    ));
                }
                let differing: Vec<usize> = (0..got.len().min(expected_frame.len()))
                    .filter(|&i| got[i] != expected_frame[i])
                    .collect();
                if !differing.is_empty() {
                    problems.push(format!(
                        "output differs at bytes {differing:?}\n      got  {}\n      want {}",
                        hex(got),
                        hex(&expected_frame)
                    ));
                }
                action_name(o.action).to_string()
            }
        };
        for d in snapshot_diff(&want, &snapshot()) {
            problems.push(format!("counter {d}"));
        }
        let status = if problems.is_empty() { "ok" } else { "FAIL" };
        println!(
            "{n:2} {status:4} {verdict:>6} {len:4}B {target:20} {}",
            f.description
        );
        if !problems.is_empty() {
            failures.push(format!(
                "{n} {}: input {}\n    {}",
                f.description,
                hex(&f.frame),
                problems.join("\n    ")
            ));
        }
    }

    // The backend counters hold exactly the frames and bytes sent to each.
    let end = snapshot();
    for id in &backend_ids {
        let want = sent.get(id).copied().unwrap_or_default();
        if end.backends[id] != want {
            failures.push(format!(
                "backend {id}: counters {:?}, sent {want:?}",
                end.backends[id]
            ));
        }
    }
    let tx_backends = sent.len();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
    println!(
        "{} fixtures ok; TX frames went to {tx_backends} backends, counters match",
        fixtures.len()
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
