//! Data-plane depth fixtures (issue 6), katran-style: each fixture is a
//! description, an input frame, the expected action, the exact expected
//! output frame and the event counters it must move. They check the
//! balancer against its written behaviour (IPIP and GUE encapsulation,
//! next hop from the FIB or the gateway MAC, MTU answers, 802.1Q tags,
//! fragments, ICMP echo and error steering, hash modes, the connection
//! table across applies), so they were written from that behaviour alone:
//! the expected frames are built with etherparse from the input and the
//! config (tests/src/depth_frames.rs), never copied from program output.
//!
//! Each group of fixtures runs in a fresh network namespace of its own
//! ("xlbdepth-<group>-<pid>-<n>", removed on drop), on a thread that entered
//! it: BPF_PROG_TEST_RUN runs the program on that namespace's loopback,
//! and bpf_fib_lookup looks there. In a fresh namespace forwarding is off,
//! so the lookup fails and tunnelled frames take the gateway MAC; the `fib`
//! group builds a route and a neighbour so that it succeeds.
//!
//! Every run is checked for: the action; the output frame, byte for byte
//! (not for XDP_DROP: a dropped frame goes nowhere); the checksums of every
//! frame sent, re-parsed by etherparse; the EV_* event counters, exactly;
//! the action, drop-reason, VIP and backend counters. Counted bytes are the
//! frame's length as received. Forwarded packets count one packet for their
//! VIP and backend, and a new flow when the connection table missed or
//! re-steered; answers the balancer makes itself count no backend: an echo
//! reply counts one packet for the VIP its echo entry names, a "too big"
//! answer's VIP counters are not checked (the behaviour does not say).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use lb_common::hash::{flow_hash, hash_input};
use lb_common::stats::{
    DROP_NO_ROUTE, DROP_TOO_BIG, DROP_UNHANDLED_EXT_HEADER, DROP_UNHANDLED_FRAGMENT,
    DROP_UNHANDLED_ICMP, DROP_UNHANDLED_VLAN, EV_CONN_HIT, EV_CONN_MISS, EV_CONN_RESTEER,
    EV_FIB_FALLBACK, EV_FRAG_FIRST, EV_FRAG_FOLLOW, EV_FRAG_UNKNOWN, EV_ICMP_ECHO_REPLY,
    EV_ICMP_ERROR_STEERED, EV_ICMP_TOO_BIG_SENT, EV_VLAN, EVENT_COUNT, EVENT_NAMES, XDP_DROP,
    XDP_PASS, XDP_REDIRECT, XDP_TX,
};
use lb_common::{Counters, HASH_FIVE_TUPLE};
use tests::depth_frames::{
    ETH_P_8021AD, ETH_P_8021Q, LB_MAC, Link, Packet, ROUTER_MAC, TunnelOut, V4Fields, V6Fields,
    atomic_fragment, check_checksums, double_tagged, echo4, echo6, encapsulated, frag_needed,
    fragments, framed, hex, icmpv4, icmpv6, in_prefix, padded, split_frame, tcp, too_big_reply,
    tunnel_source_v4, tunnel_source_v6, udp, v4, v6,
};
use tests::netns::Netns;
use tests::packets::{FrameBuilder, action_name, run, with_macs};
use xlb_core::config::Forwarding;
use xlb_core::simulate::{Flow, pick, pick_name, vip_for};
use xlb_core::state::{Allocation, Desired, DesiredVip};
use xlb_dataplane::{CounterSnapshot, Dataplane, HostInterface};

/// Next hop when the FIB names none (groups `main` and `fib`).
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
/// The MTU of the interface the balancer sends on, in every group.
const MTU: u16 = 1500;
/// Tunnel source prefixes: a /20 (host bits not on a byte boundary) and a
/// /112 (the hash fills only the last two bytes).
const SOURCE_V4: ([u8; 4], u8) = ([198, 18, 192, 0], 20);
const SOURCE_V6: (&str, u8) = ("2001:db8:ff::", 112);
const GUE_PORT: u16 = 7777;

/// `[tunnel]` of the `main` and `fib` groups; `noroute` has no gateway.
fn tunnel_section(gateway: bool) -> String {
    let [a, b, c, d] = SOURCE_V4.0;
    let mut s = format!(
        "[tunnel]\nsource_v4 = \"{a}.{b}.{c}.{d}/{}\"\nsource_v6 = \"{}/{}\"\ngue_port = {GUE_PORT}\n",
        SOURCE_V4.1, SOURCE_V6.0, SOURCE_V6.1
    );
    if gateway {
        s.push_str("gateway_mac = \"02:00:00:00:00:fe\"\n");
    }
    s
}

/// One `[[vip]]` with `backends` given as (name, address, MAC or "").
fn vip(
    name: &str,
    address: &str,
    port: u16,
    proto: &str,
    forwarding: &str,
    hash: &str,
    backends: &[(&str, &str, &str)],
) -> String {
    let mut s = format!(
        "[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = {port}\nprotocol = \"{proto}\"\n\
         forwarding = \"{forwarding}\"\nhash = \"{hash}\"\ntable_size = 1021\n"
    );
    for (b, addr, mac) in backends {
        s.push_str(&format!(
            "  [[vip.backend]]\n  name = \"{b}\"\n  address = \"{addr}\"\n"
        ));
        if !mac.is_empty() {
            s.push_str(&format!("  mac = \"{mac}\"\n"));
        }
    }
    s
}

/// Eight backends 198.18.<net>.1-8 with MACs 02:00:00:<net>:00:0N.
fn eight(net: u8) -> Vec<(String, String, String)> {
    (1..=8)
        .map(|i| {
            (
                format!("s{i}"),
                format!("198.18.{net}.{i}"),
                format!("02:00:00:{net:02x}:00:{i:02x}"),
            )
        })
        .collect()
}

fn refs(v: &[(String, String, String)]) -> Vec<(&str, &str, &str)> {
    v.iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect()
}

/// The `main` group's services: every forwarding method and family pair,
/// the three hash modes, echo answered.
fn main_config() -> String {
    let mut s = String::from("interface = \"xlbdepth0\"\nhash_seed = 11\nicmp_echo = \"reply\"\n");
    s += &tunnel_section(true);
    let dsr3 = [
        ("a", "198.18.1.1", "02:00:00:01:00:01"),
        ("b", "198.18.1.2", "02:00:00:01:00:02"),
        ("c", "198.18.1.3", "02:00:00:01:00:03"),
    ];
    s += &vip(
        "dsr4",
        "198.18.100.1",
        80,
        "tcp",
        "dsr",
        "five_tuple",
        &dsr3,
    );
    let dsr2 = [
        ("a", "198.18.1.1", "02:00:00:02:00:01"),
        ("b", "198.18.1.2", "02:00:00:02:00:02"),
    ];
    s += &vip(
        "dsr4-udp",
        "198.18.100.1",
        53,
        "udp",
        "dsr",
        "five_tuple",
        &dsr2,
    );
    let dsr6 = [
        ("a", "2001:db8:1::1", "02:00:00:03:00:01"),
        ("b", "2001:db8:1::2", "02:00:00:03:00:02"),
    ];
    s += &vip(
        "dsr6",
        "2001:db8:100::1",
        443,
        "tcp",
        "dsr",
        "five_tuple",
        &dsr6,
    );
    let dsr6u = [
        ("a", "2001:db8:1::1", "02:00:00:04:00:01"),
        ("b", "2001:db8:1::2", "02:00:00:04:00:02"),
    ];
    s += &vip(
        "dsr6-udp",
        "2001:db8:100::1",
        53,
        "udp",
        "dsr",
        "five_tuple",
        &dsr6u,
    );
    // A tunnel backend's MAC is not where its frames go (the next hop is):
    // one backend has one, to catch a program that uses it.
    let t4 = [
        ("a", "198.18.2.1", "02:00:00:05:00:01"),
        ("b", "198.18.2.2", ""),
        ("c", "198.18.2.3", ""),
    ];
    s += &vip(
        "ipip4",
        "198.18.100.2",
        80,
        "tcp",
        "ipip",
        "five_tuple",
        &t4,
    );
    s += &vip(
        "ipip4-udp",
        "198.18.100.2",
        53,
        "udp",
        "ipip",
        "five_tuple",
        &t4[..2],
    );
    let t6 = [
        ("a", "2001:db8:2::1", "02:00:00:06:00:01"),
        ("b", "2001:db8:2::2", ""),
        ("c", "2001:db8:2::3", ""),
    ];
    s += &vip(
        "ipip6",
        "2001:db8:100::2",
        80,
        "tcp",
        "ipip",
        "five_tuple",
        &t6,
    );
    s += &vip(
        "ipip6-udp",
        "2001:db8:100::2",
        53,
        "udp",
        "ipip",
        "five_tuple",
        &t6[..2],
    );
    let t46 = [("a", "2001:db8:3::1", ""), ("b", "2001:db8:3::2", "")];
    s += &vip(
        "ipip46",
        "198.18.100.3",
        80,
        "tcp",
        "ipip",
        "five_tuple",
        &t46,
    );
    s += &vip(
        "ipip46-udp",
        "198.18.100.3",
        53,
        "udp",
        "ipip",
        "five_tuple",
        &t46,
    );
    let g4 = [("a", "198.18.4.1", ""), ("b", "198.18.4.2", "")];
    s += &vip("gue4", "198.18.100.4", 80, "tcp", "gue", "five_tuple", &g4);
    s += &vip(
        "gue4-udp",
        "198.18.100.4",
        53,
        "udp",
        "gue",
        "five_tuple",
        &g4,
    );
    let g6 = [("a", "2001:db8:4::1", ""), ("b", "2001:db8:4::2", "")];
    s += &vip(
        "gue6",
        "2001:db8:100::4",
        80,
        "tcp",
        "gue",
        "five_tuple",
        &g6,
    );
    s += &vip(
        "gue6-udp",
        "2001:db8:100::4",
        53,
        "udp",
        "gue",
        "five_tuple",
        &g6,
    );
    let g46 = [("a", "2001:db8:5::1", ""), ("b", "2001:db8:5::2", "")];
    s += &vip(
        "gue46",
        "198.18.100.5",
        80,
        "tcp",
        "gue",
        "five_tuple",
        &g46,
    );
    s += &vip(
        "gue46-udp",
        "198.18.100.5",
        53,
        "udp",
        "gue",
        "five_tuple",
        &g46,
    );
    s += &vip(
        "by-source",
        "198.18.100.6",
        0,
        "tcp",
        "dsr",
        "source",
        &refs(&eight(0x16)),
    );
    s += &vip(
        "no-ports",
        "198.18.100.7",
        53,
        "udp",
        "dsr",
        "no_ports",
        &refs(&eight(0x17)),
    );
    s += &vip(
        "five",
        "198.18.100.8",
        0,
        "udp",
        "dsr",
        "five_tuple",
        &refs(&eight(0x18)),
    );
    s
}

/// What the program must do with a fixture's frame.
#[derive(Clone, Debug)]
enum Expect {
    /// Sent to a backend of `flow`'s VIP by the VIP's method: the backend
    /// named, or else the one the Maglev table picks for `flow` (the
    /// userspace simulator's pick). `flow` also gives the tunnel's flow hash.
    Forward {
        flow: Flow,
        backend: Option<&'static str>,
        next_hop: NextHop,
    },
    /// Answered by the balancer itself with exactly this frame (XDP_TX).
    Reply(Vec<u8>),
    /// An echo request answered with exactly this frame (XDP_TX), counted
    /// as one packet of the VIP called `vip`: the first VIP at the address,
    /// whose id the echo entry carries.
    Echo { reply: Vec<u8>, vip: &'static str },
    /// XDP_PASS, frame untouched.
    Pass,
    /// XDP_DROP for `flow`'s VIP, counted under `reason`.
    Drop { flow: Flow, reason: u32 },
}

/// Where a tunnelled frame goes next (L2 DSR ignores this).
#[derive(Clone, Copy, Debug)]
enum NextHop {
    /// The FIB names none: the gateway MAC, from the interface MAC (XDP_TX).
    Gateway,
    /// The FIB's answer: neighbour MAC and egress interface MAC (XDP_TX,
    /// or XDP_REDIRECT: the test-run device is the loopback, not the
    /// configured interface, so both are right).
    Fib { dst: [u8; 6], src: [u8; 6] },
}

#[derive(Clone, Debug)]
struct Fixture {
    what: String,
    frame: Vec<u8>,
    expect: Expect,
    /// Events the run must count, once per entry; every other event must
    /// stay put, except those in `loose`.
    events: Vec<u32>,
    /// Events the behaviour leaves open for this fixture: not checked (and
    /// then neither is the new-flow counter).
    loose: Vec<u32>,
}

enum Step {
    /// Apply this config (computing ids from the previous apply's).
    Apply(String),
    /// End the retention of the removed backends (what the daemon does
    /// once a connection-table count finds no entry naming them, or after
    /// `RETENTION_SECONDS`): their entries are retired.
    Retire,
    Run(Fixture),
}

struct Group {
    name: &'static str,
    steps: Vec<Step>,
}

impl Group {
    fn fixtures(&self) -> impl Iterator<Item = &Fixture> {
        self.steps.iter().filter_map(|s| match s {
            Step::Run(f) => Some(f),
            Step::Apply(_) | Step::Retire => None,
        })
    }
}

/// Builds a group's steps.
struct Steps(Vec<Step>);

impl Steps {
    fn apply(&mut self, config: String) {
        self.0.push(Step::Apply(config));
    }

    fn retire(&mut self) {
        self.0.push(Step::Retire);
    }

    fn add(&mut self, what: impl Into<String>, frame: Vec<u8>, expect: Expect, events: &[u32]) {
        self.add_loose(what, frame, expect, events, &[]);
    }

    fn add_loose(
        &mut self,
        what: impl Into<String>,
        frame: Vec<u8>,
        expect: Expect,
        events: &[u32],
        loose: &[u32],
    ) {
        self.0.push(Step::Run(Fixture {
            what: what.into(),
            frame,
            expect,
            events: events.to_vec(),
            loose: loose.to_vec(),
        }));
    }
}

/// To the table's pick, tunnels through the gateway MAC.
fn fwd(flow: Flow) -> Expect {
    Expect::Forward {
        flow,
        backend: None,
        next_hop: NextHop::Gateway,
    }
}

/// To the backend called `name`.
fn fwd_to(flow: Flow, name: &'static str) -> Expect {
    Expect::Forward {
        flow,
        backend: Some(name),
        next_hop: NextHop::Gateway,
    }
}

fn parse_desired(text: &str, previous: &Allocation) -> Desired {
    let config = xlb_core::config::parse(text, "depth.toml").expect("fixture config is valid");
    xlb_core::state::desired(&config, previous).expect("desired state")
}

/// The backend id `flow`'s VIP table would pick if it hashed the 5-tuple.
fn five_tuple_pick(d: &Desired, vip: &DesiredVip, flow: &Flow) -> u32 {
    let h = flow_hash(
        &hash_input(&flow.words(), HASH_FIVE_TUPLE),
        d.config.hash_seed,
    );
    vip.slot_iter()
        .nth((h % vip.slot_count() as u32) as usize)
        .expect("a slot")
}

/// The reply packet of `flow` (VIP to client), `len` bytes long, with
/// `quote` bytes of it kept: what an ICMP error about it quotes.
fn quoted_reply(flow: &Flow, len: usize, quote: usize) -> Vec<u8> {
    let reply = Flow {
        src: flow.dst,
        dst: flow.src,
        src_port: flow.dst_port,
        dst_port: flow.src_port,
        proto: flow.proto,
    };
    let mut p = Packet::new(reply).ack().ip_len(len).ip();
    p.truncate(quote);
    p
}

const ROUTER4: [u8; 4] = [198, 18, 0, 254];

fn router6() -> [u8; 16] {
    v6("2001:db8::fe".parse().unwrap())
}

/// An ICMPv4 error from a router on the path to the VIP address the quoted
/// packet came from.
fn icmp4_error(flow: &Flow, ty: etherparse::Icmpv4Type) -> Vec<u8> {
    icmp4_error_to(flow, ty, v4(flow.dst))
}

/// As `icmp4_error`, but addressed to `dst` (not necessarily the VIP's).
fn icmp4_error_to(flow: &Flow, ty: etherparse::Icmpv4Type, dst: [u8; 4]) -> Vec<u8> {
    let ip = icmpv4(
        V4Fields {
            src: ROUTER4,
            dst,
            ttl: 61,
            tos: 0xc0,
            id: 0x7777,
            df: false,
        },
        ty,
        &quoted_reply(flow, 1500, 28),
    );
    framed(&Link::incoming(), &ip)
}

/// An ICMPv6 error from a router, quoting 100 bytes of the reply packet.
fn icmp6_error(flow: &Flow, ty: etherparse::Icmpv6Type) -> Vec<u8> {
    icmp6_error_to(flow, ty, v6(flow.dst))
}

/// As `icmp6_error`, but addressed to `dst` (not necessarily the VIP's).
fn icmp6_error_to(flow: &Flow, ty: etherparse::Icmpv6Type, dst: [u8; 16]) -> Vec<u8> {
    let ip = icmpv6(
        V6Fields {
            src: router6(),
            dst,
            hop_limit: 61,
            traffic_class: 0,
            flow_label: 0,
        },
        ty,
        &quoted_reply(flow, 1500, 100),
    );
    framed(&Link::incoming(), &ip)
}

fn main_group() -> Group {
    use Expect::*;
    let d = parse_desired(&main_config(), &Allocation::default());
    let mut s = Steps(Vec::new());
    s.apply(main_config());
    let inc = Link::incoming();
    let tunnel_new = [EV_CONN_MISS, EV_FIB_FALLBACK];
    let tunnel_hit = [EV_CONN_HIT, EV_FIB_FALLBACK];

    // --- IPIP and GUE, every family pair, TCP and UDP ---
    let f = tcp("198.18.0.10:40001", "198.18.100.2:80");
    s.add(
        "IPIP 4in4: TCP SYN, TOS 0x28 and DF copied to the outer header",
        Packet::new(f).tos(0x28).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    s.add(
        "IPIP 4in4: the same flow's ACK, 100 bytes (conn hit, same outer source)",
        Packet::new(f).ack().payload(100).tos(0x28).frame(&inc),
        fwd(f),
        &tunnel_hit,
    );
    let f = udp("198.18.0.10:40002", "198.18.100.2:53");
    s.add(
        "IPIP 4in4: UDP, 30 bytes, no DF (outer DF clear)",
        Packet::new(f).df(false).payload(30).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = tcp("198.18.0.11:40003", "198.18.100.2:80");
    s.add(
        "IPIP 4in4: 54-byte TCP ACK padded to 60: padding not carried",
        padded(Packet::new(f).ack().frame(&inc), 60),
        fwd(f),
        &tunnel_new,
    );
    let f = tcp("[2001:db8::10]:40004", "[2001:db8:100::2]:80");
    s.add(
        "IPIP 6in6: TCP SYN, class 0xb8, inner flow label 0x12345 (outer label from the hash)",
        Packet::new(f).tos(0xb8).flow_label(0x12345).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = udp("[2001:db8::10]:40005", "[2001:db8:100::2]:53");
    s.add(
        "IPIP 6in6: UDP, 40 bytes",
        Packet::new(f).payload(40).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = tcp("198.18.0.10:40006", "198.18.100.3:80");
    s.add(
        "IPIP 4in6: TCP SYN, TOS 0x48 to the outer traffic class",
        Packet::new(f).tos(0x48).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = udp("198.18.0.10:40007", "198.18.100.3:53");
    s.add(
        "IPIP 4in6: UDP, 12 bytes",
        Packet::new(f).payload(12).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = tcp("198.18.0.10:40008", "198.18.100.4:80");
    s.add(
        "GUE over IPv4, IPv4 inside: TCP SYN (outer UDP checksum 0)",
        Packet::new(f).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = udp("198.18.0.10:40009", "198.18.100.4:53");
    s.add(
        "GUE over IPv4, IPv4 inside: UDP, 20 bytes",
        Packet::new(f).payload(20).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = tcp("[2001:db8::10]:40010", "[2001:db8:100::4]:80");
    s.add(
        "GUE over IPv6, IPv6 inside: TCP SYN, 10 bytes (outer UDP checksum computed)",
        Packet::new(f).payload(10).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = udp("[2001:db8::10]:40011", "[2001:db8:100::4]:53");
    s.add(
        "GUE over IPv6, IPv6 inside: UDP, 33 bytes (outer UDP checksum computed)",
        Packet::new(f).payload(33).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = tcp("198.18.0.10:40012", "198.18.100.5:80");
    s.add(
        "GUE over IPv6, IPv4 inside: TCP ACK, 50 bytes, TOS 0x04",
        Packet::new(f).ack().payload(50).tos(0x04).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = udp("198.18.0.10:40013", "198.18.100.5:53");
    s.add(
        "GUE over IPv6, IPv4 inside: UDP without checksum (outer checksum 0)",
        Packet::new(f).payload(16).no_udp_checksum().frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = udp("198.18.0.10:40014", "198.18.100.5:53");
    s.add(
        "GUE over IPv6, IPv4 inside: UDP with checksum (outer checksum computed)",
        Packet::new(f).payload(16).frame(&inc),
        fwd(f),
        &tunnel_new,
    );

    // --- the MTU: cfg.mtu 1500; IPIP adds 20 (IPv4) or 40 (IPv6), GUE 8 more ---
    // The too-big fixtures leave fib_fallback open: whether the next hop
    // is looked up before the size check is not said.
    let too_big_loose = [EV_FIB_FALLBACK];
    let f = tcp("198.18.0.12:41001", "198.18.100.2:80");
    s.add(
        "MTU: IPIP 4in4, 1480-byte packet makes a 1500-byte outer packet: sent",
        Packet::new(f).ack().ip_len(1480).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = tcp("198.18.0.12:41002", "198.18.100.2:80");
    let frame = Packet::new(f).ack().ip_len(1481).frame(&inc);
    s.add_loose(
        "MTU: IPIP 4in4, 1481 bytes with DF: ICMP fragmentation needed, MTU 1480",
        frame.clone(),
        Reply(too_big_reply(&frame, LB_MAC, 1480)),
        &[EV_CONN_MISS, EV_ICMP_TOO_BIG_SENT],
        &too_big_loose,
    );
    let f = udp("198.18.0.12:41003", "198.18.100.2:53");
    s.add_loose(
        "MTU: IPIP 4in4, 1481-byte UDP without DF: dropped (too_big)",
        Packet::new(f).df(false).ip_len(1481).frame(&inc),
        Drop {
            flow: f,
            reason: DROP_TOO_BIG,
        },
        &[EV_CONN_MISS],
        &too_big_loose,
    );
    let f = tcp("[2001:db8::12]:41004", "[2001:db8:100::2]:80");
    let frame = Packet::new(f).ack().ip_len(1461).frame(&inc);
    s.add_loose(
        "MTU: IPIP 6in6, 1461 bytes: ICMPv6 packet too big, MTU 1460",
        frame.clone(),
        Reply(too_big_reply(&frame, LB_MAC, 1460)),
        &[EV_CONN_MISS, EV_ICMP_TOO_BIG_SENT],
        &too_big_loose,
    );
    let f = tcp("198.18.0.12:41005", "198.18.100.4:80");
    let frame = Packet::new(f).ack().ip_len(1473).frame(&inc);
    s.add_loose(
        "MTU: GUE over IPv4, 1473 bytes with DF: fragmentation needed, MTU 1472",
        frame.clone(),
        Reply(too_big_reply(&frame, LB_MAC, 1472)),
        &[EV_CONN_MISS, EV_ICMP_TOO_BIG_SENT],
        &too_big_loose,
    );
    let f = tcp("198.18.0.12:41006", "198.18.100.5:80");
    let frame = Packet::new(f).ack().ip_len(1453).frame(&inc);
    s.add_loose(
        "MTU: GUE over IPv6, IPv4 inside, 1453 bytes with DF: fragmentation needed, MTU 1452",
        frame.clone(),
        Reply(too_big_reply(&frame, LB_MAC, 1452)),
        &[EV_CONN_MISS, EV_ICMP_TOO_BIG_SENT],
        &too_big_loose,
    );
    let f = udp("[2001:db8::12]:41007", "[2001:db8:100::4]:53");
    s.add(
        "MTU: GUE over IPv6, 1452-byte UDP makes a 1500-byte outer packet: sent",
        Packet::new(f).ip_len(1452).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    let f = tcp("198.18.0.12:41008", "198.18.100.2:80");
    let frame = Packet::new(f).ack().ip_len(1481).frame(&Link::tagged(100));
    s.add_loose(
        "MTU: 802.1Q-tagged IPIP 4in4, 1481 bytes with DF: the answer keeps the tag",
        frame.clone(),
        Reply(too_big_reply(&frame, LB_MAC, 1480)),
        &[EV_CONN_MISS, EV_ICMP_TOO_BIG_SENT, EV_VLAN],
        &too_big_loose,
    );

    // --- 802.1Q ---
    let f = tcp("198.18.0.13:42001", "198.18.100.1:80");
    s.add(
        "VLAN: 802.1Q-tagged TCP SYN via L2 DSR: tag kept, MACs rewritten",
        Packet::new(f).payload(5).frame(&Link::tagged(100)),
        fwd(f),
        &[EV_CONN_MISS, EV_VLAN],
    );
    let f = tcp("198.18.0.13:42002", "198.18.100.2:80");
    s.add(
        "VLAN: 802.1Q-tagged TCP SYN via IPIP 4in4: outer header after the tag",
        Packet::new(f).frame(&Link::tagged(200)),
        fwd(f),
        &[EV_CONN_MISS, EV_FIB_FALLBACK, EV_VLAN],
    );
    let f = udp("[2001:db8::13]:42003", "[2001:db8:100::4]:53");
    s.add(
        "VLAN: 802.1Q-tagged IPv6 UDP via GUE over IPv6: tag kept",
        Packet::new(f).payload(7).frame(&Link::tagged(300)),
        fwd(f),
        &[EV_CONN_MISS, EV_FIB_FALLBACK, EV_VLAN],
    );
    let f = tcp("198.18.0.13:42004", "198.18.100.1:80");
    s.add(
        "VLAN: two 802.1Q tags (QinQ with TPID 0x8100) before TCP to a VIP: dropped (unhandled = drop)",
        double_tagged(ETH_P_8021Q, &Packet::new(f).ip()),
        Drop {
            flow: f,
            reason: DROP_UNHANDLED_VLAN,
        },
        &[],
    );
    s.add(
        "VLAN: 802.1ad outer tag (0x88a8) and 802.1Q inner before TCP to a VIP: dropped (unhandled = drop)",
        double_tagged(ETH_P_8021AD, &Packet::new(f).ip()),
        Drop {
            flow: f,
            reason: DROP_UNHANDLED_VLAN,
        },
        &[],
    );
    s.add(
        "VLAN: two 802.1Q tags before TCP to a non-VIP address: passed",
        double_tagged(
            ETH_P_8021Q,
            &Packet::new(tcp("198.18.0.13:42006", "198.18.200.1:80")).ip(),
        ),
        Pass,
        &[],
    );
    s.add(
        "VLAN: 802.1Q-tagged TCP to a non-VIP address: passed, no vlan event",
        Packet::new(tcp("198.18.0.13:42005", "198.18.200.1:80")).frame(&Link::tagged(100)),
        Pass,
        &[],
    );

    // --- fragments ---
    let f = udp("198.18.0.14:43001", "198.18.100.1:53");
    let [first, later] = fragments(&Packet::new(f).payload(200), 64, 0x4242);
    s.add(
        "Fragments: IPv4 first fragment via L2 DSR, UDP length 208 > the 64 bytes it carries: balanced",
        framed(&inc, &first),
        fwd(f),
        &[EV_FRAG_FIRST, EV_CONN_MISS],
    );
    s.add(
        "Fragments: IPv4 later fragment of that datagram via L2 DSR: the same backend",
        framed(&inc, &later),
        fwd(f),
        &[EV_FRAG_FOLLOW, EV_CONN_HIT],
    );
    let f = udp("198.18.0.14:43002", "198.18.100.2:53");
    let [first, later] = fragments(&Packet::new(f).payload(100), 48, 0x4343);
    s.add(
        "Fragments: IPv4 first fragment via IPIP 4in4",
        framed(&inc, &first),
        fwd(f),
        &[EV_FRAG_FIRST, EV_CONN_MISS, EV_FIB_FALLBACK],
    );
    s.add(
        "Fragments: IPv4 later fragment via IPIP 4in4: same backend, same outer source",
        framed(&inc, &later),
        fwd(f),
        &[EV_FRAG_FOLLOW, EV_CONN_HIT, EV_FIB_FALLBACK],
    );
    let f = udp("198.18.0.14:43003", "198.18.100.1:53");
    let [_, later] = fragments(&Packet::new(f).payload(100), 48, 0x4444);
    s.add(
        "Fragments: IPv4 later fragment to a VIP whose first was not seen: dropped (unhandled = drop)",
        framed(&inc, &later),
        // Counted under the address's first VIP, whose id its address entry carries.
        Drop {
            flow: tcp("198.18.0.14:43003", "198.18.100.1:80"),
            reason: DROP_UNHANDLED_FRAGMENT,
        },
        &[EV_FRAG_UNKNOWN],
    );
    let f = udp("[2001:db8::14]:43004", "[2001:db8:100::1]:53");
    let [first, later] = fragments(&Packet::new(f).payload(150), 80, 0xdead_beef);
    s.add(
        "Fragments: IPv6 first fragment (Fragment header) via L2 DSR",
        framed(&inc, &first),
        fwd(f),
        &[EV_FRAG_FIRST, EV_CONN_MISS],
    );
    s.add(
        "Fragments: IPv6 later fragment via L2 DSR: the same backend",
        framed(&inc, &later),
        fwd(f),
        &[EV_FRAG_FOLLOW, EV_CONN_HIT],
    );
    let f = udp("[2001:db8::14]:43005", "[2001:db8:100::4]:53");
    let [first, later] = fragments(&Packet::new(f).payload(90), 40, 0x0102_0304);
    s.add(
        "Fragments: IPv6 first fragment via GUE over IPv6: outer UDP checksum 0",
        framed(&inc, &first),
        fwd(f),
        &[EV_FRAG_FIRST, EV_CONN_MISS, EV_FIB_FALLBACK],
    );
    s.add(
        "Fragments: IPv6 later fragment via GUE over IPv6: the same backend",
        framed(&inc, &later),
        fwd(f),
        &[EV_FRAG_FOLLOW, EV_CONN_HIT, EV_FIB_FALLBACK],
    );
    let f = udp("[2001:db8::14]:43006", "[2001:db8:100::1]:53");
    let [_, later] = fragments(&Packet::new(f).payload(150), 80, 0x0bad_cafe);
    s.add(
        "Fragments: IPv6 later fragment to a VIP whose first was not seen: dropped (unhandled = drop)",
        framed(&inc, &later),
        Drop {
            flow: tcp("[2001:db8::14]:43006", "[2001:db8:100::1]:443"),
            reason: DROP_UNHANDLED_FRAGMENT,
        },
        &[EV_FRAG_UNKNOWN],
    );
    let f = tcp("[2001:db8::14]:43008", "[2001:db8:100::1]:443");
    s.add(
        "IPv6 Hop-by-Hop header before TCP to a VIP: dropped (unhandled = drop)",
        FrameBuilder::new(f).ipv6_hop_by_hop().build(),
        Drop {
            flow: f,
            reason: DROP_UNHANDLED_EXT_HEADER,
        },
        &[],
    );
    s.add(
        "IPv6 Hop-by-Hop header before TCP to a non-VIP address: passed",
        FrameBuilder::new(tcp("[2001:db8::14]:43009", "[2001:db8:200::1]:443"))
            .ipv6_hop_by_hop()
            .build(),
        Pass,
        &[],
    );
    let f = tcp("[2001:db8::14]:43007", "[2001:db8:100::1]:443");
    s.add(
        "Fragments: IPv6 atomic fragment (offset 0, M clear) of TCP via L2 DSR: balanced as unfragmented",
        framed(&inc, &atomic_fragment(&Packet::new(f).payload(20), 0x55)),
        fwd(f),
        &[EV_CONN_MISS],
    );
    let f = udp("198.18.0.14:43008", "198.18.200.1:53");
    let [first, _] = fragments(&Packet::new(f).payload(100), 48, 0x4545);
    s.add(
        "Fragments: IPv4 first fragment to a non-VIP address: passed, not tracked",
        framed(&inc, &first),
        Pass,
        &[],
    );

    // --- ICMP ---
    let (request, reply) = echo4([198, 18, 0, 15], [198, 18, 100, 1], b"xlb echo 4 fixture");
    s.add(
        "ICMP: echo request to a VIP address: answered in place",
        framed(&inc, &request),
        Echo {
            reply: framed(&inc.with_macs(ROUTER_MAC, LB_MAC), &reply),
            vip: "dsr4",
        },
        &[EV_ICMP_ECHO_REPLY],
    );
    let client6 = v6("2001:db8::15".parse().unwrap());
    let vip6 = v6("2001:db8:100::1".parse().unwrap());
    let (request, reply) = echo6(client6, vip6, b"xlb echo 6 fixture");
    s.add(
        "ICMPv6: echo request to a VIP address: answered in place",
        framed(&inc, &request),
        Echo {
            reply: framed(&inc.with_macs(ROUTER_MAC, LB_MAC), &reply),
            vip: "dsr6",
        },
        &[EV_ICMP_ECHO_REPLY],
    );
    let (request, _) = echo4([198, 18, 0, 15], [198, 18, 200, 1], b"not a VIP");
    s.add(
        "ICMP: echo request to a non-VIP address: passed",
        framed(&inc, &request),
        Pass,
        &[],
    );
    let f = tcp("198.18.0.16:44001", "198.18.100.1:80");
    s.add(
        "ICMP: TCP SYN via L2 DSR, the flow the next ICMP error is about",
        Packet::new(f).frame(&inc),
        fwd(f),
        &[EV_CONN_MISS],
    );
    s.add(
        "ICMP: fragmentation needed quoting that flow's reply: steered to the flow's backend",
        icmp4_error(&f, frag_needed(1400)),
        fwd(f),
        &[EV_ICMP_ERROR_STEERED, EV_CONN_HIT],
    );
    s.add(
        "ICMP: port unreachable quoting that flow's reply: dropped (unhandled = drop)",
        icmp4_error(
            &f,
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ),
        ),
        Drop {
            flow: f,
            reason: DROP_UNHANDLED_ICMP,
        },
        &[],
    );
    s.add(
        "ICMP: time exceeded quoting that flow's reply: dropped (unhandled = drop)",
        icmp4_error(
            &f,
            etherparse::Icmpv4Type::TimeExceeded(
                etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
            ),
        ),
        Drop {
            flow: f,
            reason: DROP_UNHANDLED_ICMP,
        },
        &[],
    );
    s.add(
        "ICMP: fragmentation needed quoting that flow's reply, addressed to a non-VIP address: passed",
        icmp4_error_to(&f, frag_needed(1400), [198, 18, 200, 9]),
        Pass,
        &[],
    );
    s.add(
        "ICMP: fragmentation needed quoting that flow's reply, addressed to another VIP address: passed",
        icmp4_error_to(&f, frag_needed(1400), [198, 18, 100, 2]),
        Pass,
        &[],
    );
    let other_port = tcp("198.18.0.16:44001", "198.18.100.1:8080");
    s.add(
        "ICMP: fragmentation needed quoting a packet from the VIP address, another port: passed",
        icmp4_error(&other_port, frag_needed(1400)),
        Pass,
        &[],
    );
    let f = tcp("[2001:db8::16]:44002", "[2001:db8:100::1]:443");
    s.add(
        "ICMPv6: TCP SYN via L2 DSR, the flow the next ICMPv6 error is about",
        Packet::new(f).frame(&inc),
        fwd(f),
        &[EV_CONN_MISS],
    );
    s.add(
        "ICMPv6: packet too big quoting that flow's reply: steered to the flow's backend",
        icmp6_error(&f, etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 }),
        fwd(f),
        &[EV_ICMP_ERROR_STEERED, EV_CONN_HIT],
    );
    s.add(
        "ICMPv6: packet too big quoting that flow's reply, addressed to a non-VIP address: passed",
        icmp6_error_to(
            &f,
            etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 },
            v6("2001:db8:200::9".parse().unwrap()),
        ),
        Pass,
        &[],
    );
    s.add(
        "ICMPv6: destination unreachable quoting that flow's reply: dropped (unhandled = drop)",
        icmp6_error(
            &f,
            etherparse::Icmpv6Type::DestinationUnreachable(
                etherparse::icmpv6::DestUnreachableCode::Port,
            ),
        ),
        Drop {
            flow: f,
            reason: DROP_UNHANDLED_ICMP,
        },
        &[],
    );
    let f = tcp("198.18.0.16:44003", "198.18.100.2:80");
    s.add(
        "ICMP: TCP SYN via IPIP 4in4, the flow the next ICMP error is about",
        Packet::new(f).frame(&inc),
        fwd(f),
        &tunnel_new,
    );
    s.add(
        "ICMP: fragmentation needed about an IPIP flow: tunnelled to the flow's backend",
        icmp4_error(&f, frag_needed(1300)),
        fwd(f),
        &[EV_ICMP_ERROR_STEERED, EV_CONN_HIT, EV_FIB_FALLBACK],
    );
    let f = tcp("198.18.0.16:44004", "198.18.100.1:80");
    s.add_loose(
        "ICMP: fragmentation needed about a VIP flow never seen: steered by the Maglev table",
        icmp4_error(&f, frag_needed(1400)),
        fwd(f),
        &[EV_ICMP_ERROR_STEERED],
        &[EV_CONN_HIT, EV_CONN_MISS],
    );

    // --- hash modes ---
    let by_source = d
        .vips
        .iter()
        .find(|v| v.config.name == "by-source")
        .unwrap();
    let (a, b) = differing_pair(&d, by_source, |i| {
        tcp(
            &format!("198.18.0.20:{}", 1000 + i),
            &format!("198.18.100.6:{}", 80 + i),
        )
    });
    assert_eq!(
        pick(&d, &a),
        pick(&d, &b),
        "hash source: one client, one backend"
    );
    s.add(
        format!(
            "Hash source: client 198.18.0.20 port {} to :{}",
            a.src_port, a.dst_port
        ),
        Packet::new(a).frame(&inc),
        fwd(a),
        &[EV_CONN_MISS],
    );
    s.add(
        format!(
            "Hash source: the same client, port {} to :{}: the same backend",
            b.src_port, b.dst_port
        ),
        Packet::new(b).frame(&inc),
        fwd(b),
        &[EV_CONN_MISS],
    );
    let no_ports = d.vips.iter().find(|v| v.config.name == "no-ports").unwrap();
    let (a, b) = differing_pair(&d, no_ports, |i| {
        udp(&format!("198.18.0.21:{}", 2000 + i), "198.18.100.7:53")
    });
    assert_eq!(
        pick(&d, &a),
        pick(&d, &b),
        "hash no_ports: one client, one backend"
    );
    s.add(
        format!("Hash no_ports: UDP from 198.18.0.21 port {}", a.src_port),
        Packet::new(a).payload(8).frame(&inc),
        fwd(a),
        &[EV_CONN_MISS],
    );
    s.add(
        format!(
            "Hash no_ports: UDP from the same client, port {}: the same backend",
            b.src_port
        ),
        Packet::new(b).payload(8).frame(&inc),
        fwd(b),
        &[EV_CONN_MISS],
    );
    let spread: Vec<Flow> = (0..4)
        .map(|i| udp(&format!("198.18.0.22:{}", 3000 + i), "198.18.100.8:5000"))
        .collect();
    let picked: BTreeSet<u32> = spread.iter().filter_map(|f| pick(&d, f)).collect();
    assert!(
        picked.len() >= 2,
        "the 5-tuple spreads one client's flows: {picked:?}"
    );
    for f in spread {
        s.add(
            format!("Hash five_tuple: UDP from 198.18.0.22 port {}", f.src_port),
            Packet::new(f).frame(&inc),
            fwd(f),
            &[EV_CONN_MISS],
        );
    }

    // --- L2 DSR keeps the frame whole ---
    let f = tcp("198.18.0.17:45001", "198.18.100.1:80");
    s.add(
        "L2 DSR: 54-byte TCP ACK padded to 60: sent whole, padding included",
        padded(Packet::new(f).ack().frame(&inc), 60),
        fwd(f),
        &[EV_CONN_MISS],
    );
    Group {
        name: "main",
        steps: s.0,
    }
}

/// Two flows (the `i`th and `j`th of `make`) that a 5-tuple hash would send
/// to different backends of `vip`: a hash mode that ignores ports must
/// still send them to one.
fn differing_pair(d: &Desired, vip: &DesiredVip, make: impl Fn(u16) -> Flow) -> (Flow, Flow) {
    let first = make(0);
    let base = five_tuple_pick(d, vip, &first);
    let other = (1..200)
        .map(&make)
        .find(|f| five_tuple_pick(d, vip, f) != base)
        .expect("some flow of 200 hashes elsewhere");
    (first, other)
}

/// Tunnels without a gateway MAC, and echo passed to the host.
fn noroute_group() -> Group {
    use Expect::*;
    let mut config =
        String::from("interface = \"xlbdepth0\"\nhash_seed = 11\nicmp_echo = \"pass\"\n");
    config += &tunnel_section(false);
    config += &vip(
        "ipip4",
        "198.18.100.2",
        80,
        "tcp",
        "ipip",
        "five_tuple",
        &[("a", "198.18.2.1", ""), ("b", "198.18.2.2", "")],
    );
    config += &vip(
        "gue6",
        "2001:db8:100::4",
        80,
        "tcp",
        "gue",
        "five_tuple",
        &[("a", "2001:db8:4::1", ""), ("b", "2001:db8:4::2", "")],
    );
    config += &vip(
        "dsr4",
        "198.18.100.1",
        80,
        "tcp",
        "dsr",
        "five_tuple",
        &[
            ("a", "198.18.1.1", "02:00:00:01:00:01"),
            ("b", "198.18.1.2", "02:00:00:01:00:02"),
        ],
    );
    let mut s = Steps(Vec::new());
    s.apply(config);
    let inc = Link::incoming();
    let f = tcp("198.18.0.40:46001", "198.18.100.2:80");
    s.add(
        "No route: IPIP 4in4 with no FIB answer and no gateway MAC: dropped (no_route)",
        Packet::new(f).frame(&inc),
        Drop {
            flow: f,
            reason: DROP_NO_ROUTE,
        },
        &[EV_CONN_MISS],
    );
    let f = tcp("[2001:db8::40]:46002", "[2001:db8:100::4]:80");
    s.add(
        "No route: GUE over IPv6 with no FIB answer and no gateway MAC: dropped (no_route)",
        Packet::new(f).payload(10).frame(&inc),
        Drop {
            flow: f,
            reason: DROP_NO_ROUTE,
        },
        &[EV_CONN_MISS],
    );
    let f = tcp("198.18.0.40:46003", "198.18.100.1:80");
    s.add(
        "No route: L2 DSR needs none: sent to the backend's MAC",
        Packet::new(f).frame(&inc),
        fwd(f),
        &[EV_CONN_MISS],
    );
    let (request, _) = echo4([198, 18, 0, 40], [198, 18, 100, 1], b"ping");
    s.add(
        "icmp_echo = \"pass\": echo request to a VIP address passed",
        framed(&inc, &request),
        Pass,
        &[],
    );
    let (request, _) = echo6(
        v6("2001:db8::40".parse().unwrap()),
        v6("2001:db8:100::4".parse().unwrap()),
        b"ping",
    );
    s.add(
        "icmp_echo = \"pass\": ICMPv6 echo request to a VIP address passed",
        framed(&inc, &request),
        Pass,
        &[],
    );
    Group {
        name: "noroute",
        steps: s.0,
    }
}

/// The `fib` group's namespace: veth xd0 (MAC FIB_SMAC) with
/// 198.18.60.1/24 and 2001:db8:60::1/64, permanent neighbours for the
/// backends 198.18.60.10 and 2001:db8:60::10, 198.18.61.0/24 routed via
/// 198.18.60.254 (no neighbour entry), forwarding on.
const FIB_SMAC: [u8; 6] = [0x02, 0, 0, 0, 0x60, 0x01];
const FIB_NEIGH4: [u8; 6] = [0x02, 0, 0, 0, 0x60, 0x10];
const FIB_NEIGH6: [u8; 6] = [0x02, 0, 0, 0, 0x60, 0x11];

fn fib_setup(ns: &Netns) -> anyhow::Result<u32> {
    ns.ip(&["link", "add", "xd0", "type", "veth", "peer", "name", "xd1"])?;
    ns.ip(&["link", "set", "xd0", "address", "02:00:00:00:60:01"])?;
    ns.ip(&["link", "set", "xd0", "up"])?;
    ns.ip(&["link", "set", "xd1", "up"])?;
    ns.ip(&["addr", "add", "198.18.60.1/24", "dev", "xd0"])?;
    ns.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:60::1/64",
        "dev",
        "xd0",
        "nodad",
    ])?;
    ns.ip(&[
        "neigh",
        "add",
        "198.18.60.10",
        "lladdr",
        "02:00:00:00:60:10",
        "nud",
        "permanent",
        "dev",
        "xd0",
    ])?;
    ns.ip(&[
        "-6",
        "neigh",
        "add",
        "2001:db8:60::10",
        "lladdr",
        "02:00:00:00:60:11",
        "nud",
        "permanent",
        "dev",
        "xd0",
    ])?;
    ns.ip(&[
        "route",
        "add",
        "198.18.61.0/24",
        "via",
        "198.18.60.254",
        "dev",
        "xd0",
    ])?;
    // After the devices exist: ip_forward and all.forwarding are copied to
    // every device, and bpf_fib_lookup asks the ingress device's.
    ns.sysctl("net.ipv4.ip_forward", "1")?;
    ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
    let line = ns.ip(&["-o", "link", "show", "xd0"])?;
    let index = line
        .split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no ifindex in `ip link show xd0`: {line}"))?;
    Ok(index)
}

fn fib_group() -> Group {
    let mut config = String::from("interface = \"xd0\"\nhash_seed = 11\n");
    config += &tunnel_section(true);
    config += &vip(
        "near4",
        "198.18.100.2",
        80,
        "tcp",
        "ipip",
        "five_tuple",
        &[("n", "198.18.60.10", "")],
    );
    config += &vip(
        "near6",
        "2001:db8:100::4",
        80,
        "tcp",
        "gue",
        "five_tuple",
        &[("n", "2001:db8:60::10", "")],
    );
    config += &vip(
        "far4",
        "198.18.100.3",
        80,
        "tcp",
        "ipip",
        "five_tuple",
        &[("f", "198.18.61.10", "")],
    );
    let mut s = Steps(Vec::new());
    s.apply(config);
    let inc = Link::incoming();
    let f = tcp("198.18.0.50:47001", "198.18.100.2:80");
    s.add(
        "FIB: IPIP 4in4 to a backend with a route and a permanent neighbour: the neighbour's MAC, from xd0's",
        Packet::new(f).frame(&inc),
        Expect::Forward {
            flow: f,
            backend: None,
            next_hop: NextHop::Fib {
                dst: FIB_NEIGH4,
                src: FIB_SMAC,
            },
        },
        &[EV_CONN_MISS],
    );
    let f = tcp("[2001:db8::50]:47002", "[2001:db8:100::4]:80");
    s.add(
        "FIB: GUE over IPv6 to a backend with a route and a permanent neighbour",
        Packet::new(f).payload(9).frame(&inc),
        Expect::Forward {
            flow: f,
            backend: None,
            next_hop: NextHop::Fib {
                dst: FIB_NEIGH6,
                src: FIB_SMAC,
            },
        },
        &[EV_CONN_MISS],
    );
    let f = tcp("198.18.0.50:47003", "198.18.100.3:80");
    s.add(
        "FIB: IPIP 4in4 routed via a gateway without a neighbour entry: the gateway MAC",
        Packet::new(f).frame(&inc),
        fwd(f),
        &[EV_CONN_MISS, EV_FIB_FALLBACK],
    );
    Group {
        name: "fib",
        steps: s.0,
    }
}

/// A VIP 198.18.100.9:80 over backends `names` (a-e, 198.18.7.1-5), with
/// their states.
fn conn_config(backends: &[(&str, &str)]) -> String {
    let mut s = String::from("interface = \"xlbdepth0\"\nhash_seed = 7\n");
    s += "[[vip]]\nname = \"web\"\naddress = \"198.18.100.9\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n";
    for (name, state) in backends {
        let n = name.as_bytes()[0] - b'a' + 1;
        s += &format!(
            "  [[vip.backend]]\n  name = \"{name}\"\n  address = \"198.18.7.{n}\"\n  mac = \"02:00:00:07:00:{n:02x}\"\n  state = \"{state}\"\n"
        );
    }
    s
}

/// The first flow from `client` whose pick satisfies `want`.
fn find_flow(client: &str, want: impl Fn(&Flow) -> bool) -> Flow {
    (10_000..20_000)
        .map(|p| tcp(&format!("{client}:{p}"), "198.18.100.9:80"))
        .find(|f| want(f))
        .expect("a flow with the wanted picks among 10,000")
}

/// The connection table across applies: established flows keep their
/// backend, SYNs re-hash, a removed backend's flows are re-steered once its
/// retention ends (while retained they stay: tests/retired_backends.rs,
/// resteer.rs), a draining backend keeps its flows.
fn conn_group() -> Group {
    let c1 = conn_config(&[
        ("a", "active"),
        ("b", "active"),
        ("c", "active"),
        ("d", "active"),
    ]);
    let c2 = conn_config(&[
        ("a", "active"),
        ("b", "active"),
        ("c", "active"),
        ("d", "active"),
        ("e", "active"),
    ]);
    let c3 = conn_config(&[
        ("a", "active"),
        ("c", "active"),
        ("d", "active"),
        ("e", "active"),
    ]);
    let c4 = conn_config(&[
        ("a", "active"),
        ("c", "draining"),
        ("d", "active"),
        ("e", "active"),
    ]);
    let d1 = parse_desired(&c1, &Allocation::default());
    let d2 = parse_desired(&c2, &d1.allocation);
    let d3 = parse_desired(&c3, &d2.allocation);
    let d4 = parse_desired(&c4, &d3.allocation);
    let name = |d: &Desired, f: &Flow| pick_name(d, f).expect("a backend").to_string();
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };

    // F moves when e joins; G is on b, which leaves; H is on c, which drains.
    let f = find_flow("198.18.0.30", |f| name(&d1, f) != name(&d2, f));
    let (x, y) = (leak(name(&d1, &f)), leak(name(&d2, &f)));
    let g = find_flow("198.18.0.31", |g| name(&d2, g) == "b");
    let g3 = leak(name(&d3, &g));
    let h = find_flow("198.18.0.32", |h| name(&d3, h) == "c");
    let h4 = leak(name(&d4, &h));
    assert_ne!(h4, "c", "a draining backend takes no new flows");

    let inc = Link::incoming();
    let ack = |f: Flow| Packet::new(f).ack().payload(10).frame(&inc);
    let syn = |f: Flow| Packet::new(f).frame(&inc);
    let mut s = Steps(Vec::new());
    s.apply(c1);
    s.add(
        format!("Conns: ACK of a flow never seen: hashed to {x} and remembered"),
        ack(f),
        fwd_to(f, x),
        &[EV_CONN_MISS],
    );
    s.apply(c2);
    s.add(
        format!(
            "Conns: backend e added, the flow's slot now names {y}: its next ACK still goes to {x}"
        ),
        ack(f),
        fwd_to(f, x),
        &[EV_CONN_HIT],
    );
    s.add(
        format!("Conns: a SYN of the same 5-tuple starts anew: hashed to {y}"),
        syn(f),
        fwd_to(f, y),
        &[EV_CONN_MISS],
    );
    s.add(
        format!("Conns: the next ACK follows the new connection to {y}"),
        ack(f),
        fwd_to(f, y),
        &[EV_CONN_HIT],
    );
    s.add(
        "Conns: a flow on backend b",
        ack(g),
        fwd_to(g, "b"),
        &[EV_CONN_MISS],
    );
    s.apply(c3);
    s.retire();
    s.add(
        format!("Conns: backend b removed and retired: its flow's next ACK is re-steered to {g3}"),
        ack(g),
        fwd_to(g, g3),
        &[EV_CONN_RESTEER],
    );
    s.add(
        format!("Conns: and the ACK after that is a hit on {g3}"),
        ack(g),
        fwd_to(g, g3),
        &[EV_CONN_HIT],
    );
    s.add(
        "Conns: a flow on backend c",
        ack(h),
        fwd_to(h, "c"),
        &[EV_CONN_MISS],
    );
    s.apply(c4);
    s.add(
        "Conns: backend c draining: its flow's next ACK still goes to c",
        ack(h),
        fwd_to(h, "c"),
        &[EV_CONN_HIT],
    );
    s.add(
        format!("Conns: a SYN of that 5-tuple goes to an active backend ({h4})"),
        syn(h),
        fwd_to(h, h4),
        &[EV_CONN_MISS],
    );
    Group {
        name: "conn",
        steps: s.0,
    }
}

// ---------------------------------------------------------------------------
// The runner.

/// What a fixture's run must show.
struct Want {
    /// Acceptable actions (the first is the one normally expected).
    actions: Vec<u32>,
    /// The output frame (None: not compared, for XDP_DROP).
    frame: Option<Vec<u8>>,
    /// VIP id and the counters it must gain (None: not checked).
    vip: Option<(u32, Counters)>,
    /// Backend id and the counters it must gain; every other backend none.
    backend: Option<(u32, Counters)>,
    drop_reason: Option<u32>,
    /// The tunnel source prefix the outer source must lie in.
    source_prefix: Option<(IpAddr, u8)>,
    /// Where the frame goes, for the listing.
    target: String,
}

fn counters(packets: u64, bytes: usize, new_flows: u64) -> Counters {
    Counters {
        packets,
        bytes: bytes as u64,
        new_flows,
    }
}

fn source_prefix_v6() -> [u8; 16] {
    v6(SOURCE_V6.0.parse().unwrap())
}

/// What `f` must do under `d`, on `host`.
fn want(d: &Desired, host: &HostInterface, f: &Fixture) -> Want {
    let len = f.frame.len();
    let new_flow = (f.events.contains(&EV_CONN_MISS) || f.events.contains(&EV_CONN_RESTEER)) as u64;
    let conn_loose = f.loose.contains(&EV_CONN_MISS) || f.loose.contains(&EV_CONN_HIT);
    match &f.expect {
        Expect::Forward {
            flow,
            backend,
            next_hop,
        } => {
            let vip = vip_for(d, flow).expect("a VIP flow");
            let i = match backend {
                Some(name) => vip.config.backends.iter().position(|b| b.name == *name),
                None => pick(d, flow).and_then(|id| vip.backend_ids.iter().position(|&b| b == id)),
            }
            .unwrap_or_else(|| panic!("{}: no backend for {flow:?}", f.what));
            let b = &vip.config.backends[i];
            let id = vip.backend_ids[i];
            let hash = flow_hash(&flow.words(), d.config.hash_seed);
            let (dst_mac, src_mac, actions) = match next_hop {
                NextHop::Gateway => (GATEWAY_MAC, host.mac, vec![XDP_TX]),
                NextHop::Fib { dst, src } => (*dst, *src, vec![XDP_TX, XDP_REDIRECT]),
            };
            let tunnel = |gue_port| {
                let (outer_src, prefix) = match b.address {
                    IpAddr::V4(_) => (
                        IpAddr::from(tunnel_source_v4(SOURCE_V4.0, SOURCE_V4.1, hash)),
                        (IpAddr::from(SOURCE_V4.0), SOURCE_V4.1),
                    ),
                    IpAddr::V6(_) => (
                        IpAddr::from(tunnel_source_v6(source_prefix_v6(), SOURCE_V6.1, hash)),
                        (IpAddr::from(source_prefix_v6()), SOURCE_V6.1),
                    ),
                };
                let out = TunnelOut {
                    gue_port,
                    outer_src,
                    outer_dst: b.address,
                    hash,
                    dst_mac,
                    src_mac,
                };
                (encapsulated(&f.frame, &out), Some(prefix))
            };
            let (frame, source_prefix, actions) = match vip.config.forwarding {
                Forwarding::Dsr => (with_macs(&f.frame, b.mac.0, host.mac), None, vec![XDP_TX]),
                Forwarding::Ipip => {
                    let (frame, p) = tunnel(None);
                    (frame, p, actions)
                }
                Forwarding::Gue => {
                    let (frame, p) = tunnel(Some(d.config.tunnel.gue_port));
                    (frame, p, actions)
                }
            };
            let gained = counters(1, len, new_flow);
            let gained = if conn_loose {
                Counters {
                    new_flows: u64::MAX,
                    ..gained
                }
            } else {
                gained
            };
            Want {
                actions,
                frame: Some(frame),
                vip: Some((vip.id, gained)),
                backend: Some((id, gained)),
                drop_reason: None,
                source_prefix,
                target: format!("{}/{}", vip.config.name, b.name),
            }
        }
        Expect::Echo { reply, vip } => {
            let v = d
                .vips
                .iter()
                .find(|v| v.config.name == *vip)
                .expect("the VIP");
            Want {
                actions: vec![XDP_TX],
                frame: Some(reply.clone()),
                vip: Some((v.id, counters(1, len, 0))),
                backend: None,
                drop_reason: None,
                source_prefix: None,
                target: format!("answer ({vip})"),
            }
        }
        Expect::Reply(frame) => Want {
            actions: vec![XDP_TX],
            frame: Some(frame.clone()),
            vip: None,
            backend: None,
            drop_reason: None,
            source_prefix: None,
            target: "answer".into(),
        },
        Expect::Pass => Want {
            actions: vec![XDP_PASS],
            frame: Some(f.frame.clone()),
            vip: None,
            backend: None,
            drop_reason: None,
            source_prefix: None,
            target: String::new(),
        },
        Expect::Drop { flow, reason } => {
            let vip = vip_for(d, flow).expect("a VIP flow");
            Want {
                actions: vec![XDP_DROP],
                frame: None,
                // New flows of dropped packets are not said: not checked.
                vip: Some((vip.id, counters(1, len, u64::MAX))),
                backend: None,
                drop_reason: Some(*reason),
                source_prefix: None,
                target: format!(
                    "{} ({})",
                    vip.config.name,
                    lb_common::stats::DROP_REASON_NAMES[*reason as usize]
                ),
            }
        }
    }
}

fn minus(a: &Counters, b: &Counters) -> Counters {
    Counters {
        packets: a.packets.wrapping_sub(b.packets),
        bytes: a.bytes.wrapping_sub(b.bytes),
        new_flows: a.new_flows.wrapping_sub(b.new_flows),
    }
}

/// Counters equal, `new_flows == u64::MAX` in `want` meaning "any".
fn same(want: &Counters, got: &Counters) -> bool {
    want.packets == got.packets
        && want.bytes == got.bytes
        && (want.new_flows == u64::MAX || want.new_flows == got.new_flows)
}

/// Problems with the counters a run moved (`before` to `after`).
fn counter_problems(
    f: &Fixture,
    w: &Want,
    action: u32,
    before: &CounterSnapshot,
    after: &CounterSnapshot,
) -> Vec<String> {
    let mut problems = Vec::new();
    let len = f.frame.len();
    let zero = Counters::default();
    for (i, (b, a)) in before.actions.iter().zip(&after.actions).enumerate() {
        let want = if i as u32 == action {
            counters(1, len, 0)
        } else {
            zero
        };
        if minus(a, b) != want {
            problems.push(format!(
                "action counter {}: +{:?}, want +{want:?}",
                action_name(i as u32),
                minus(a, b)
            ));
        }
    }
    for (i, (b, a)) in before.drops.iter().zip(&after.drops).enumerate() {
        let want = if w.drop_reason == Some(i as u32) {
            counters(1, len, 0)
        } else {
            zero
        };
        if minus(a, b) != want {
            problems.push(format!(
                "drop counter {}: +{:?}, want +{want:?}",
                lb_common::stats::DROP_REASON_NAMES[i],
                minus(a, b)
            ));
        }
    }
    let mut want_events = [0u64; EVENT_COUNT as usize];
    for &e in &f.events {
        want_events[e as usize] += 1;
    }
    for e in 0..EVENT_COUNT as usize {
        let got = after.events[e].wrapping_sub(before.events[e]);
        // The program keeps a backend's next hop for a second
        // (forward.rs, XLB_NEXT_HOPS): a fallback to the gateway MAC is
        // counted when the next hop is looked up, not on every packet, so a
        // fixture that routes may count it once or, cached, not at all.
        let cached = e as u32 == EV_FIB_FALLBACK && want_events[e] == 1 && got == 0;
        if !f.loose.contains(&(e as u32)) && got != want_events[e] && !cached {
            problems.push(format!(
                "event {}: +{got}, want +{}",
                EVENT_NAMES[e], want_events[e]
            ));
        }
    }
    let check_vips = !matches!(f.expect, Expect::Reply(_));
    if check_vips {
        for (id, b) in &before.vips {
            let got = minus(&after.vips[id], b);
            let want = match w.vip {
                Some((v, c)) if v == *id => c,
                _ => zero,
            };
            if !same(&want, &got) {
                problems.push(format!("vip {id} counters: +{got:?}, want +{want:?}"));
            }
        }
    }
    for (id, b) in &before.backends {
        let got = minus(&after.backends[id], b);
        let want = match w.backend {
            Some((v, c)) if v == *id => c,
            _ => zero,
        };
        if !same(&want, &got) {
            problems.push(format!("backend {id} counters: +{got:?}, want +{want:?}"));
        }
    }
    problems
}

/// The outer source address of a tunnelled frame.
fn outer_source(frame: &[u8]) -> Option<IpAddr> {
    let (_, ip) = std::panic::catch_unwind(|| {
        let (l, ip) = split_frame(frame);
        (l, ip.to_vec())
    })
    .ok()?;
    match ip[0] >> 4 {
        4 if ip.len() >= 20 => Some(IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).ok()?)),
        6 if ip.len() >= 40 => Some(IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?)),
        _ => None,
    }
}

/// Run one fixture; returns the listing line and the problems.
fn run_fixture(
    dp: &Dataplane,
    d: &Desired,
    host: &HostInterface,
    ids: (&BTreeSet<u32>, &BTreeSet<u32>),
    f: &Fixture,
    out: &mut [u8],
) -> (String, Vec<String>) {
    let w = want(d, host, f);
    let mut problems = Vec::new();
    let snapshot = || {
        dp.snapshot(ids.0.iter().copied(), ids.1.iter().copied())
            .expect("read counters")
    };
    if let Some(frame) = &w.frame
        && w.actions[0] != XDP_PASS
        && let Err(e) = check_checksums(frame, GUE_PORT)
    {
        problems.push(format!("fixture bug: the expected frame is not sound: {e}"));
    }
    let before = snapshot();
    out.fill(0xa5);
    let verdict = match run(dp.program(), &f.frame, out) {
        Err(e) => {
            problems.push(format!("test run failed: {e}"));
            "error".to_string()
        }
        Ok(o) => {
            if !w.actions.contains(&o.action) {
                let names: Vec<&str> = w.actions.iter().map(|&a| action_name(a)).collect();
                problems.push(format!(
                    "action {}, want {}",
                    action_name(o.action),
                    names.join(" or ")
                ));
            }
            let got = &out[..o.len.min(out.len())];
            if let Some(want) = &w.frame
                && o.action != XDP_DROP
                && got != &want[..]
            {
                let differing: Vec<usize> = (0..got.len().min(want.len()))
                    .filter(|&i| got[i] != want[i])
                    .collect();
                problems.push(format!(
                    "output {} bytes (want {}), differs at bytes {differing:?}\n      got  {}\n      want {}",
                    got.len(),
                    want.len(),
                    hex(got),
                    hex(want)
                ));
            }
            if o.action == XDP_TX || o.action == XDP_REDIRECT {
                if let Err(e) = check_checksums(got, GUE_PORT) {
                    problems.push(format!("sent frame: {e}"));
                }
                if let Some((prefix, len)) = w.source_prefix {
                    match outer_source(got) {
                        Some(src) if in_prefix(src, prefix, len) => {}
                        src => problems.push(format!(
                            "outer source {src:?} is not in the tunnel prefix {prefix}/{len}"
                        )),
                    }
                }
            }
            problems.extend(counter_problems(f, &w, o.action, &before, &snapshot()));
            action_name(o.action).to_string()
        }
    };
    let status = if problems.is_empty() { "ok" } else { "FAIL" };
    let line = format!(
        "{status:4} {verdict:>8} {:4}B {:22} {}",
        f.frame.len(),
        w.target,
        f.what
    );
    (line, problems)
}

/// What a group's run found.
struct Report {
    lines: Vec<String>,
    failures: Vec<String>,
    fixtures: usize,
}

/// The retention of `d`'s removed backends ended as two connection-table
/// counts that find no entry naming them end it; their ids.
fn retire(d: &mut Desired) -> BTreeSet<u32> {
    let none = BTreeMap::new();
    let first = d.allocation.expire_retained(&none, 0.0, 1.0);
    assert!(first.is_empty(), "retention ends at the second count");
    d.allocation.expire_retained(&none, 2.0, 3.0)
}

/// Load the balancer (in the calling thread's namespace) and run `steps`.
fn run_steps(host: HostInterface, steps: Vec<Step>) -> anyhow::Result<Report> {
    let mut dp = Dataplane::load()?;
    let mut current: Option<Desired> = None;
    let (mut vip_ids, mut backend_ids) = (BTreeSet::new(), BTreeSet::new());
    let mut report = Report {
        lines: Vec::new(),
        failures: Vec::new(),
        fixtures: 0,
    };
    let mut out = vec![0u8; 4096];
    for step in steps {
        match step {
            Step::Apply(text) => {
                let empty = Allocation::default();
                let previous = current.as_ref().map_or(&empty, |d| &d.allocation);
                let d = parse_desired(&text, previous);
                dp.apply(host, &d, current.as_ref())?;
                for v in &d.vips {
                    vip_ids.insert(v.id);
                    backend_ids.extend(v.backend_ids.iter().copied());
                }
                report
                    .lines
                    .push(format!("-- applied: {} VIPs", d.vips.len()));
                current = Some(d);
            }
            Step::Retire => {
                let d = current.as_mut().expect("a config is applied first");
                let ended = retire(d);
                dp.retire_retained(&ended);
                report
                    .lines
                    .push(format!("-- retired: {} removed backends", ended.len()));
            }
            Step::Run(f) => {
                let d = current.as_ref().expect("a config is applied first");
                let (line, problems) =
                    run_fixture(&dp, d, &host, (&vip_ids, &backend_ids), &f, &mut out);
                report.lines.push(format!("{:2} {line}", report.fixtures));
                if !problems.is_empty() {
                    report.failures.push(format!(
                        "{} {}: input {}\n    {}",
                        report.fixtures,
                        f.what,
                        hex(&f.frame),
                        problems.join("\n    ")
                    ));
                }
                report.fixtures += 1;
            }
        }
    }
    Ok(report)
}

/// Run `group` in a fresh namespace that `setup` prepares (returning the
/// ifindex of the interface the balancer sends on), and fail the test with
/// every failing fixture.
fn run_group(group: Group, setup: impl FnOnce(&Netns) -> anyhow::Result<u32>) {
    let ns = Netns::new(&format!("xlbdepth-{}", group.name)).expect("create the namespace");
    let ifindex = setup(&ns).expect("prepare the namespace");
    let host = HostInterface {
        mac: LB_MAC,
        ifindex,
        mtu: MTU,
    };
    let started = std::time::Instant::now();
    let report = ns
        .spawn(move || run_steps(host, group.steps))
        .join()
        .expect("the namespace thread panicked")
        .expect("load the balancer and apply the configs");
    for line in &report.lines {
        println!("{line}");
    }
    println!(
        "group {}: {} fixtures, {} failed, {:.2} s",
        ns.name,
        report.fixtures,
        report.failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        report.failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        report.failures.len(),
        report.fixtures,
        report.failures.join("\n")
    );
}

/// The loopback's index: the interface of a namespace with no other.
fn loopback(_: &Netns) -> anyhow::Result<u32> {
    Ok(1)
}

#[test]
fn depth_tunnels_mtu_vlan_fragments_icmp_hash() {
    tests::require_privileges!();
    run_group(main_group(), loopback);
}

#[test]
fn depth_no_route_and_echo_passed() {
    tests::require_privileges!();
    run_group(noroute_group(), loopback);
}

#[test]
fn depth_next_hop_from_the_fib() {
    tests::require_privileges!();
    run_group(fib_group(), fib_setup);
}

#[test]
fn depth_connection_table_across_applies() {
    tests::require_privileges!();
    run_group(conn_group(), loopback);
}

/// Without privileges: there are at least 40 fixtures, each named once,
/// every input frame and every answer built in advance has sound checksums
/// (the builders are right), and every fixture's expectation resolves.
#[test]
fn depth_fixtures_are_well_formed() {
    let groups = [main_group(), noroute_group(), fib_group(), conn_group()];
    let mut names = BTreeMap::new();
    let mut total = 0;
    for g in &groups {
        for f in g.fixtures() {
            total += 1;
            assert!(
                names.insert(f.what.clone(), g.name).is_none(),
                "two fixtures called {:?}",
                f.what
            );
            // The checker reads no IPv6 extension header; those frames come
            // from packets.rs's FrameBuilder (etherparse), checked there.
            if !f.what.contains("Hop-by-Hop") {
                check_checksums(&f.frame, GUE_PORT)
                    .unwrap_or_else(|e| panic!("{}: input frame: {e}", f.what));
            }
            if let Expect::Reply(r) | Expect::Echo { reply: r, .. } = &f.expect {
                check_checksums(r, GUE_PORT).unwrap_or_else(|e| panic!("{}: answer: {e}", f.what));
            }
        }
    }
    assert!(total >= 40, "only {total} fixtures");
    // Every expectation resolves against its group's config, and every
    // expected frame a forward makes is sound.
    let host = HostInterface {
        mac: LB_MAC,
        ifindex: 1,
        mtu: MTU,
    };
    for g in groups {
        let mut current: Option<Desired> = None;
        for step in g.steps {
            match step {
                Step::Apply(text) => {
                    let empty = Allocation::default();
                    let prev = current.as_ref().map_or(&empty, |d| &d.allocation);
                    current = Some(parse_desired(&text, prev));
                }
                Step::Retire => {
                    retire(current.as_mut().expect("a config is applied first"));
                }
                Step::Run(f) => {
                    let w = want(current.as_ref().unwrap(), &host, &f);
                    if let (Some(frame), Expect::Forward { .. }) = (&w.frame, &f.expect) {
                        check_checksums(frame, GUE_PORT)
                            .unwrap_or_else(|e| panic!("{}: expected frame: {e}", f.what));
                    }
                }
            }
        }
    }
    println!("{total} fixtures");
}
