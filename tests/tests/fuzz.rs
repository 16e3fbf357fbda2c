//! Fuzzing the balancer through BPF_PROG_TEST_RUN: 1,000,000 frames, random
//! bytes and mutations of valid frames of every data-plane path (L2 DSR,
//! IPIP and GUE over IPv4 and IPv6, IPv4 in IPv6, 802.1Q tags, fragments
//! whose datagrams the tracker follows, ICMP echo, ICMP errors steered as
//! the flow they quote, frames too big for their tunnel, frames not for a
//! VIP), reproducible from a seed: XLB_FUZZ_SEED (default below) and
//! XLB_FUZZ_FRAMES (default 1,000,000) make the same frames in the same
//! order, so the kernel's connection table and fragment tracker see the
//! same history.
//!
//! Every run is judged by tests/src/fuzz_oracle.rs from the behaviour the
//! balancer promises (the list is there): a frame passed or dropped is
//! unchanged, one for a VIP is never passed, a frame sent has exactly one
//! of the shapes the balancer may send, to the backend the flow hashes to,
//! with right lengths and the checksums it writes right. Any other outcome
//! is a finding, reported with the frame's number, input and output.
//!
//! The run happens in a fresh network namespace ("xlbfuzz-<pid>-<n>", removed
//! on drop): there forwarding is off, bpf_fib_lookup fails, and tunnelled
//! frames take `[tunnel] gateway_mac`, deterministically. The interface MTU
//! the balancer is given is 576 bytes, so frames near the seeds' sizes
//! cross the tunnels' limits both ways.
//!
//! Before the fuzzing, each seed goes through once as built and must take
//! the path it was written for (checks the seeds, the config and the judge
//! as much as the program). After it, every path must have been taken a
//! minimum number of times (per path and per kernel event counter), or the
//! run proves little.

use std::collections::BTreeMap;

use etherparse::{Icmpv4Type, Icmpv6Type};
use lb_common::stats::{
    EV_CONN_HIT, EV_CONN_MISS, EV_FIB_FALLBACK, EV_FRAG_FIRST, EV_FRAG_FOLLOW, EV_FRAG_UNKNOWN,
    EV_ICMP_ECHO_REPLY, EV_ICMP_ERROR_STEERED, EV_ICMP_TOO_BIG_SENT, EV_VLAN, EVENT_NAMES,
};
use lb_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tests::depth_frames::{
    ETH_P_8021AD, ETH_P_8021Q, Link, Packet, V4Fields, V6Fields, atomic_fragment, check_checksums,
    double_tagged, echo4, echo6, frag_needed, fragments, framed, hex, icmpv4, icmpv6, padded, tcp,
    udp, v4, v6,
};
use tests::fuzz_oracle::{Frag, Ingress, Verdict, World, judge, ones_sum, pseudo_header};
use tests::netns::Netns;
use tests::packets::{FrameBuilder, LB_MAC, action_name, arp_request, run};
use xlb_core::simulate::Flow;
use xlb_core::state::Allocation;
use xlb_dataplane::{Dataplane, HostInterface};

const DEFAULT_SEED: u64 = 0x786c_6266_757a_7a00;
const DEFAULT_FRAMES: usize = 1_000_000;
/// The MTU of the interface the balancer sends on: IPIP over IPv4 carries
/// at most 556 bytes, IPv6 536, GUE 548 / 528.
const MTU: u16 = 576;
/// A mutated frame has its bytes changed mostly here: the headers.
const HEADER_BYTES: usize = 100;
/// Examples kept of each kind of finding, and kinds after which the run
/// stops (the first ones say enough).
const EXAMPLES: usize = 3;
const MAX_KINDS: usize = 20;

/// One `[[vip]]`: name, address, port, protocol, forwarding, hash, and
/// backends as (address, MAC or "").
type VipSpec = (
    &'static str,
    &'static str,
    u16,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const DSR4: &[(&str, &str)] = &[
    ("198.18.1.1", "02:00:00:01:00:01"),
    ("198.18.1.2", "02:00:00:01:00:02"),
    ("198.18.1.3", "02:00:00:01:00:03"),
];
const DSR6: &[(&str, &str)] = &[
    ("2001:db8:1::1", "02:00:00:03:00:01"),
    ("2001:db8:1::2", "02:00:00:03:00:02"),
];
/// One backend with a MAC: a tunnel must not use it.
const TUN4: &[(&str, &str)] = &[
    ("198.18.2.1", "02:00:00:05:00:01"),
    ("198.18.2.2", ""),
    ("198.18.2.3", ""),
];
const TUN6: &[(&str, &str)] = &[
    ("2001:db8:2::1", "02:00:00:06:00:01"),
    ("2001:db8:2::2", ""),
    ("2001:db8:2::3", ""),
];
const TUN46: &[(&str, &str)] = &[("2001:db8:3::1", ""), ("2001:db8:3::2", "")];
const GUE4: &[(&str, &str)] = &[("198.18.4.1", ""), ("198.18.4.2", "")];
const GUE6: &[(&str, &str)] = &[("2001:db8:4::1", ""), ("2001:db8:4::2", "")];
const GUE46: &[(&str, &str)] = &[("2001:db8:5::1", ""), ("2001:db8:5::2", "")];

/// Every forwarding method and family pair, TCP and UDP, port wildcards
/// and the three hash modes.
const VIPS: &[VipSpec] = &[
    ("dsr4", "198.18.100.1", 80, "tcp", "dsr", "five_tuple", DSR4),
    (
        "dsr4-udp",
        "198.18.100.1",
        53,
        "udp",
        "dsr",
        "five_tuple",
        DSR4,
    ),
    (
        "dsr6",
        "2001:db8:100::1",
        443,
        "tcp",
        "dsr",
        "five_tuple",
        DSR6,
    ),
    (
        "dsr6-any",
        "2001:db8:100::1",
        0,
        "udp",
        "dsr",
        "five_tuple",
        DSR6,
    ),
    ("by-source", "198.18.100.6", 0, "tcp", "dsr", "source", DSR4),
    (
        "ipip4",
        "198.18.100.2",
        80,
        "tcp",
        "ipip",
        "five_tuple",
        TUN4,
    ),
    (
        "ipip4-udp",
        "198.18.100.2",
        53,
        "udp",
        "ipip",
        "five_tuple",
        TUN4,
    ),
    (
        "ipip6",
        "2001:db8:100::2",
        80,
        "tcp",
        "ipip",
        "five_tuple",
        TUN6,
    ),
    (
        "ipip6-any",
        "2001:db8:100::2",
        0,
        "udp",
        "ipip",
        "five_tuple",
        TUN6,
    ),
    (
        "ipip46",
        "198.18.100.3",
        80,
        "tcp",
        "ipip",
        "five_tuple",
        TUN46,
    ),
    (
        "ipip46-udp",
        "198.18.100.3",
        53,
        "udp",
        "ipip",
        "five_tuple",
        TUN46,
    ),
    ("gue4", "198.18.100.4", 80, "tcp", "gue", "five_tuple", GUE4),
    (
        "gue4-udp",
        "198.18.100.4",
        53,
        "udp",
        "gue",
        "five_tuple",
        GUE4,
    ),
    (
        "gue6",
        "2001:db8:100::4",
        80,
        "tcp",
        "gue",
        "five_tuple",
        GUE6,
    ),
    (
        "gue6-udp",
        "2001:db8:100::4",
        53,
        "udp",
        "gue",
        "five_tuple",
        GUE6,
    ),
    (
        "gue6-no-ports",
        "2001:db8:100::5",
        53,
        "udp",
        "gue",
        "no_ports",
        GUE6,
    ),
    (
        "gue46",
        "198.18.100.5",
        80,
        "tcp",
        "gue",
        "five_tuple",
        GUE46,
    ),
    (
        "gue46-udp",
        "198.18.100.5",
        53,
        "udp",
        "gue",
        "five_tuple",
        GUE46,
    ),
];

fn config() -> String {
    let mut s = String::from(
        "interface = \"xlbfuzz0\"\nhash_seed = 11\nicmp_echo = \"reply\"\n\n[tunnel]\n\
         source_v4 = \"198.18.192.0/20\"\nsource_v6 = \"2001:db8:ff::/112\"\n\
         gue_port = 7777\ngateway_mac = \"02:00:00:00:00:fe\"\n",
    );
    for (name, address, port, proto, forwarding, hash, backends) in VIPS {
        s += &format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = {port}\n\
             protocol = \"{proto}\"\nforwarding = \"{forwarding}\"\nhash = \"{hash}\"\n\
             table_size = 1021\n"
        );
        // One address of each mode: IPv4 VIPs drop what the balancer does
        // not handle (the default), the IPv6 VIPs at 2001:db8:100::1 pass it.
        if *address == "2001:db8:100::1" {
            s += "unhandled = \"pass\"\n";
        }
        for (i, (addr, mac)) in backends.iter().enumerate() {
            s += &format!("  [[vip.backend]]\n  name = \"b{i}\"\n  address = \"{addr}\"\n");
            if !mac.is_empty() {
                s += &format!("  mac = \"{mac}\"\n");
            }
        }
    }
    s
}

/// A frame to start mutations from, and the path it takes as built.
struct Seed {
    what: &'static str,
    frame: Vec<u8>,
    expect: &'static str,
}

/// The first `quote` bytes of a 1400-byte reply of `flow` (VIP to client):
/// what an ICMP error about the reply quotes.
fn quoted_reply(flow: &Flow, quote: usize) -> Vec<u8> {
    let reply = Flow {
        src: flow.dst,
        dst: flow.src,
        src_port: flow.dst_port,
        dst_port: flow.src_port,
        proto: flow.proto,
    };
    let mut p = Packet::new(reply);
    if flow.proto == PROTO_TCP {
        p = p.ack();
    }
    let mut p = p.ip_len(1400).ip();
    p.truncate(quote);
    p
}

/// An ICMPv4 error of type `ty` from a router to the VIP, about `flow`'s reply.
fn icmp4_error(flow: &Flow, ty: Icmpv4Type) -> Vec<u8> {
    let ip = icmpv4(
        V4Fields {
            src: [198, 18, 0, 254],
            dst: v4(flow.dst),
            ttl: 61,
            tos: 0xc0,
            id: 0x7777,
            df: false,
        },
        ty,
        &quoted_reply(flow, 28),
    );
    framed(&Link::incoming(), &ip)
}

/// An ICMPv6 error of type `ty` from a router, quoting 100 bytes of the reply.
fn icmp6_error(flow: &Flow, ty: Icmpv6Type) -> Vec<u8> {
    let ip = icmpv6(
        V6Fields {
            src: v6("2001:db8::fe".parse().unwrap()),
            dst: v6(flow.dst),
            hop_limit: 61,
            traffic_class: 0,
            flow_label: 0,
        },
        ty,
        &quoted_reply(flow, 100),
    );
    framed(&Link::incoming(), &ip)
}

/// `p`'s IP packet with `extra` bytes after its UDP datagram, inside the IP
/// packet (lengths and IPv4 header checksum fixed, UDP checksum still right
/// over the UDP length).
fn udp_shorter_than_ip(p: &Packet, extra: usize) -> Vec<u8> {
    let mut ip = p.ip();
    ip.extend((0..extra).map(|i| 0xe0 | i as u8));
    let total = ip.len();
    if ip[0] >> 4 == 4 {
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let sum = !ones_sum(&[&ip[..20]]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    } else {
        ip[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    }
    ip
}

fn seeds() -> Vec<Seed> {
    let inc = Link::incoming();
    let mut s = Vec::new();
    let mut add = |what: &'static str, frame: Vec<u8>, expect: &'static str| {
        s.push(Seed {
            what,
            frame,
            expect,
        })
    };

    // L2 DSR.
    let f = tcp("198.18.0.5:40000", "198.18.100.1:80");
    add("DSR v4 TCP SYN", Packet::new(f).frame(&inc), "dsr4");
    add(
        "DSR v4 TCP ACK, tagged",
        Packet::new(f).ack().payload(100).frame(&Link::tagged(100)),
        "dsr4",
    );
    add(
        "DSR v4 TCP ACK padded to 60 bytes",
        padded(Packet::new(f).ack().frame(&inc), 60),
        "dsr4",
    );
    add(
        "DSR v4 TCP with IPv4 options",
        FrameBuilder::new(f).ipv4_options(3).payload(20).build(),
        "dsr4",
    );
    let f = udp("198.18.0.5:40001", "198.18.100.1:53");
    add("DSR v4 UDP", Packet::new(f).payload(30).frame(&inc), "dsr4");
    let f = udp("[2001:db8::5]:5353", "[2001:db8:100::1]:53");
    add(
        "DSR v6 UDP to a port wildcard",
        Packet::new(f).payload(20).frame(&inc),
        "dsr6",
    );
    let f = tcp("[2001:db8::5]:40002", "[2001:db8:100::1]:443");
    add(
        "DSR v6 TCP ACK, tagged",
        Packet::new(f).ack().payload(30).frame(&Link::tagged(300)),
        "dsr6",
    );
    add(
        "DSR v6 TCP as an atomic fragment",
        framed(&inc, &atomic_fragment(&Packet::new(f).payload(16), 0x55)),
        "dsr6",
    );
    let f = tcp("198.18.0.6:40003", "198.18.100.6:8080");
    add(
        "DSR v4 TCP, hash by source",
        Packet::new(f).frame(&inc),
        "dsr4",
    );

    // IPIP.
    let f = tcp("198.18.0.10:40010", "198.18.100.2:80");
    add(
        "IPIP 4in4 TCP SYN, TOS 0x28",
        Packet::new(f).tos(0x28).frame(&inc),
        "ipip 4in4",
    );
    let f = udp("198.18.0.10:40011", "198.18.100.2:53");
    add(
        "IPIP 4in4 UDP without DF, tagged",
        Packet::new(f)
            .df(false)
            .payload(30)
            .frame(&Link::tagged(200)),
        "ipip 4in4",
    );
    let f = tcp("[2001:db8::10]:40012", "[2001:db8:100::2]:80");
    add(
        "IPIP 6in6 TCP, class 0xb8, flow label",
        Packet::new(f).tos(0xb8).flow_label(0x12345).frame(&inc),
        "ipip 6in6",
    );
    let f = udp("[2001:db8::10]:40013", "[2001:db8:100::2]:9999");
    add(
        "IPIP 6in6 UDP to a port wildcard",
        Packet::new(f).payload(40).frame(&inc),
        "ipip 6in6",
    );
    let f = tcp("198.18.0.10:40014", "198.18.100.3:80");
    add(
        "IPIP 4in6 TCP, tagged",
        Packet::new(f).tos(0x48).frame(&Link::tagged(201)),
        "ipip 4in6",
    );
    let f = udp("198.18.0.10:40015", "198.18.100.3:53");
    add(
        "IPIP 4in6 UDP",
        Packet::new(f).payload(12).frame(&inc),
        "ipip 4in6",
    );

    // GUE.
    let f = tcp("198.18.0.11:40020", "198.18.100.4:80");
    add("GUE 4in4 TCP SYN", Packet::new(f).frame(&inc), "gue 4in4");
    let f = udp("198.18.0.11:40021", "198.18.100.4:53");
    add(
        "GUE 4in4 UDP, tagged",
        Packet::new(f).payload(20).frame(&Link::tagged(202)),
        "gue 4in4",
    );
    let f = tcp("[2001:db8::11]:40022", "[2001:db8:100::4]:80");
    add(
        "GUE 6in6 TCP ACK",
        Packet::new(f).ack().payload(10).frame(&inc),
        "gue 6in6",
    );
    add(
        "GUE 6in6 TCP as an atomic fragment",
        framed(&inc, &atomic_fragment(&Packet::new(f).payload(24), 0x66)),
        "gue 6in6",
    );
    let f = udp("[2001:db8::11]:40023", "[2001:db8:100::4]:53");
    add(
        "GUE 6in6 UDP",
        Packet::new(f).payload(33).frame(&inc),
        "gue 6in6",
    );
    add(
        "GUE 6in6 UDP datagram shorter than its IP payload",
        framed(&inc, &udp_shorter_than_ip(&Packet::new(f).payload(20), 12)),
        "gue 6in6",
    );
    let f = udp("[2001:db8::12]:40024", "[2001:db8:100::5]:53");
    add(
        "GUE 6in6 UDP, hash without ports",
        Packet::new(f).payload(8).frame(&inc),
        "gue 6in6",
    );
    let f = tcp("198.18.0.11:40025", "198.18.100.5:80");
    add(
        "GUE 4in6 TCP ACK, TOS 0x04",
        Packet::new(f).ack().payload(50).tos(0x04).frame(&inc),
        "gue 4in6",
    );
    let f = udp("198.18.0.11:40026", "198.18.100.5:53");
    add(
        "GUE 4in6 UDP without checksum",
        Packet::new(f).payload(16).no_udp_checksum().frame(&inc),
        "gue 4in6",
    );
    add(
        "GUE 4in6 UDP with checksum",
        Packet::new(f).payload(16).frame(&inc),
        "gue 4in6",
    );
    add(
        "GUE 4in6 UDP datagram shorter than its IP payload",
        framed(&inc, &udp_shorter_than_ip(&Packet::new(f).payload(16), 10)),
        "gue 4in6",
    );

    // The MTU (576): each tunnel's largest packet, and one byte more.
    let f = tcp("198.18.0.12:41001", "198.18.100.2:80");
    add(
        "MTU: IPIP 4in4, 556 bytes fit",
        Packet::new(f).ack().ip_len(556).frame(&inc),
        "ipip 4in4",
    );
    add(
        "MTU: IPIP 4in4, 557 bytes with DF",
        Packet::new(f).ack().ip_len(557).frame(&inc),
        "too-big4",
    );
    add(
        "MTU: IPIP 4in4, 557 bytes with DF, tagged",
        Packet::new(f).ack().ip_len(557).frame(&Link::tagged(9)),
        "too-big4",
    );
    let f = udp("198.18.0.12:41002", "198.18.100.2:53");
    add(
        "MTU: IPIP 4in4, 557 bytes without DF",
        Packet::new(f).df(false).ip_len(557).frame(&inc),
        "drop",
    );
    let f = tcp("[2001:db8::12]:41003", "[2001:db8:100::2]:80");
    add(
        "MTU: IPIP 6in6, 536 bytes fit",
        Packet::new(f).ack().ip_len(536).frame(&inc),
        "ipip 6in6",
    );
    add(
        "MTU: IPIP 6in6, 537 bytes",
        Packet::new(f).ack().ip_len(537).frame(&inc),
        "too-big6",
    );
    let f = udp("198.18.0.12:41004", "198.18.100.3:53");
    add(
        "MTU: IPIP 4in6, 537 bytes with DF",
        Packet::new(f).ip_len(537).frame(&inc),
        "too-big4",
    );
    let f = tcp("198.18.0.12:41005", "198.18.100.4:80");
    add(
        "MTU: GUE 4in4, 548 bytes fit",
        Packet::new(f).ack().ip_len(548).frame(&inc),
        "gue 4in4",
    );
    add(
        "MTU: GUE 4in4, 549 bytes with DF",
        Packet::new(f).ack().ip_len(549).frame(&inc),
        "too-big4",
    );
    let f = udp("[2001:db8::12]:41006", "[2001:db8:100::4]:53");
    add(
        "MTU: GUE 6in6, 528 bytes fit",
        Packet::new(f).ip_len(528).frame(&inc),
        "gue 6in6",
    );
    add(
        "MTU: GUE 6in6, 529 bytes, tagged",
        Packet::new(f).ip_len(529).frame(&Link::tagged(10)),
        "too-big6",
    );
    let f = tcp("198.18.0.12:41007", "198.18.100.5:80");
    add(
        "MTU: GUE 4in6, 529 bytes with DF",
        Packet::new(f).ack().ip_len(529).frame(&inc),
        "too-big4",
    );
    add(
        "MTU: GUE 4in6, 529 bytes without DF",
        Packet::new(f).ack().df(false).ip_len(529).frame(&inc),
        "drop",
    );

    // Fragments: first then later of one datagram (the tracker), per path.
    let f = udp("198.18.0.14:43001", "198.18.100.1:53");
    let [first, later] = fragments(&Packet::new(f).payload(200), 64, 0x4242);
    add("Fragments: v4 first, DSR", framed(&inc, &first), "dsr4");
    add("Fragments: v4 later, DSR", framed(&inc, &later), "dsr4");
    let f = udp("198.18.0.14:43002", "198.18.100.2:53");
    let [first, later] = fragments(&Packet::new(f).payload(100), 48, 0x4343);
    add(
        "Fragments: v4 first, IPIP 4in4, tagged",
        framed(&Link::tagged(11), &first),
        "ipip 4in4",
    );
    add(
        "Fragments: v4 later, IPIP 4in4",
        framed(&inc, &later),
        "ipip 4in4",
    );
    let f = tcp("198.18.0.14:43003", "198.18.100.5:80");
    let [first, later] = fragments(&Packet::new(f).ack().payload(120), 64, 0x4646);
    add(
        "Fragments: v4 TCP first, GUE 4in6",
        framed(&inc, &first),
        "gue 4in6",
    );
    add(
        "Fragments: v4 TCP later, GUE 4in6",
        framed(&inc, &later),
        "gue 4in6",
    );
    let f = udp("[2001:db8::14]:43004", "[2001:db8:100::1]:53");
    let [first, later] = fragments(&Packet::new(f).payload(150), 80, 0xdead_beef);
    add("Fragments: v6 first, DSR", framed(&inc, &first), "dsr6");
    add("Fragments: v6 later, DSR", framed(&inc, &later), "dsr6");
    let f = udp("[2001:db8::14]:43005", "[2001:db8:100::4]:53");
    let [first, later] = fragments(&Packet::new(f).payload(90), 40, 0x0102_0304);
    add(
        "Fragments: v6 first, GUE 6in6",
        framed(&inc, &first),
        "gue 6in6",
    );
    add(
        "Fragments: v6 later, GUE 6in6",
        framed(&inc, &later),
        "gue 6in6",
    );
    let f = udp("[2001:db8::14]:43006", "[2001:db8:100::2]:53");
    let [first, later] = fragments(&Packet::new(f).payload(1000), 512, 0x0bad_f00d);
    add(
        "Fragments: v6 first too big for IPIP 6in6",
        framed(&inc, &first),
        "too-big6",
    );
    add(
        "Fragments: v6 later too big for IPIP 6in6",
        framed(&inc, &later),
        "too-big6",
    );
    let f = udp("198.18.0.14:43007", "198.18.100.1:53");
    let [_, later] = fragments(&Packet::new(f).payload(100), 48, 0x4444);
    add(
        "Fragments: v4 later, first never seen",
        framed(&inc, &later),
        "drop",
    );
    let f = udp("198.18.0.14:43008", "198.18.200.1:53");
    let [first, _] = fragments(&Packet::new(f).payload(100), 48, 0x4545);
    add(
        "Fragments: v4 first to no VIP",
        framed(&inc, &first),
        "pass",
    );

    // ICMP echo.
    let (request, _) = echo4([198, 18, 0, 15], [198, 18, 100, 1], b"xlb fuzz echo 4");
    add("Echo: v4 to a VIP address", framed(&inc, &request), "echo4");
    let (request, _) = echo4([198, 18, 0, 15], [198, 18, 100, 4], b"tagged");
    add(
        "Echo: v4 to a VIP address, tagged",
        framed(&Link::tagged(12), &request),
        "echo4",
    );
    let (request, _) = echo6(
        v6("2001:db8::15".parse().unwrap()),
        v6("2001:db8:100::2".parse().unwrap()),
        b"xlb fuzz echo 6",
    );
    add("Echo: v6 to a VIP address", framed(&inc, &request), "echo6");
    let (request, _) = echo4([198, 18, 0, 15], [198, 18, 200, 1], b"not a VIP");
    add("Echo: v4 to no VIP", framed(&inc, &request), "pass");

    // ICMP errors about a VIP flow's reply: steered as the flow.
    let f = tcp("198.18.0.16:44001", "198.18.100.1:80");
    add(
        "ICMP frag needed, DSR flow",
        icmp4_error(&f, frag_needed(1400)),
        "dsr4",
    );
    add(
        "ICMP port unreachable, DSR flow",
        icmp4_error(
            &f,
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port),
        ),
        "drop",
    );
    let f = tcp("198.18.0.16:44002", "198.18.100.2:80");
    add(
        "ICMP frag needed, IPIP 4in4 flow",
        icmp4_error(&f, frag_needed(1300)),
        "ipip 4in4",
    );
    let f = udp("198.18.0.16:44003", "198.18.100.5:53");
    add(
        "ICMP frag needed, GUE 4in6 flow",
        icmp4_error(&f, frag_needed(1300)),
        "gue 4in6",
    );
    let f = tcp("198.18.0.16:44004", "198.18.100.1:8080");
    add(
        "ICMP frag needed, no VIP port",
        icmp4_error(&f, frag_needed(1300)),
        "pass",
    );
    let f = tcp("[2001:db8::16]:44005", "[2001:db8:100::1]:443");
    add(
        "ICMPv6 packet too big, DSR flow",
        icmp6_error(&f, Icmpv6Type::PacketTooBig { mtu: 1280 }),
        "dsr6",
    );
    let f = tcp("[2001:db8::16]:44006", "[2001:db8:100::4]:80");
    add(
        "ICMPv6 packet too big, GUE 6in6 flow",
        icmp6_error(&f, Icmpv6Type::PacketTooBig { mtu: 1280 }),
        "gue 6in6",
    );

    // Not for a VIP, or not what the balancer reads.
    let f = tcp("198.18.0.13:42004", "198.18.100.1:80");
    add(
        "Two 802.1Q tags",
        double_tagged(ETH_P_8021Q, &Packet::new(f).ip()),
        "drop",
    );
    add(
        "802.1ad and 802.1Q tags",
        double_tagged(ETH_P_8021AD, &Packet::new(f).ip()),
        "drop",
    );
    add(
        "Tagged TCP to no VIP",
        Packet::new(tcp("198.18.0.13:42005", "198.18.200.1:80")).frame(&Link::tagged(100)),
        "pass",
    );
    add(
        "TCP to another address",
        Packet::new(tcp("198.18.0.5:40000", "198.18.100.9:80")).frame(&inc),
        "pass",
    );
    add(
        "TCP to another port",
        Packet::new(tcp("198.18.0.5:40000", "198.18.100.1:81")).frame(&inc),
        "pass",
    );
    add(
        "UDP to a TCP VIP's port",
        Packet::new(udp("198.18.0.5:40000", "198.18.100.2:80")).frame(&inc),
        "pass",
    );
    add(
        "v6 TCP to another address",
        Packet::new(tcp("[2001:db8::5]:40000", "[2001:db8:100::9]:80")).frame(&inc),
        "pass",
    );
    add(
        "v6 with a hop-by-hop header to a VIP",
        FrameBuilder::new(tcp("[2001:db8::5]:40000", "[2001:db8:100::1]:443"))
            .ipv6_hop_by_hop()
            .build(),
        "pass",
    );
    add(
        "ARP request",
        arp_request([198, 18, 0, 1], [198, 18, 100, 1]),
        "pass",
    );
    s
}

/// `frame`'s IP packet made `delta` bytes longer or shorter (never shorter
/// than its headers), its lengths and checksums made right again: sizes
/// around the tunnels' MTU limits, still well formed.
fn resized(frame: &[u8], delta: i32) -> Option<Vec<u8>> {
    let ing = Ingress::read(frame).ok()?;
    let min = ing.l4 + 8 + if ing.proto == PROTO_TCP { 12 } else { 0 };
    let len = (ing.ip.len() as i64 + i64::from(delta)).max(min as i64) as usize;
    let mut ip = ing.ip.to_vec();
    ip.resize(len, 0x5a);
    if ing.v6 {
        ip[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    } else {
        ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    }
    let l4 = ing.l4;
    let whole = ing.frag == Frag::Whole;
    if whole && ing.proto == PROTO_UDP {
        ip[l4 + 4..l4 + 6].copy_from_slice(&((len - l4) as u16).to_be_bytes());
    }
    // L4 checksum (ICMPv4 has no pseudo-header), then the IPv4 header's.
    let sum_at = match ing.proto {
        PROTO_TCP => Some(16),
        PROTO_UDP if ip[l4 + 6..l4 + 8] != [0, 0] => Some(6),
        PROTO_ICMP | PROTO_ICMPV6 => Some(2),
        _ => None,
    };
    if let (true, Some(at)) = (whole, sum_at) {
        ip[l4 + at..l4 + at + 2].copy_from_slice(&[0, 0]);
        let pseudo = match ing.proto {
            PROTO_ICMP => Vec::new(),
            p => pseudo_header(ing.src, ing.dst, p, len - l4),
        };
        let mut sum = !ones_sum(&[&pseudo, &ip[l4..]]);
        if sum == 0 && ing.proto == PROTO_UDP {
            sum = 0xffff;
        }
        ip[l4 + at..l4 + at + 2].copy_from_slice(&sum.to_be_bytes());
    }
    if !ing.v6 {
        ip[10..12].copy_from_slice(&[0, 0]);
        let sum = !ones_sum(&[&ip[..l4]]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let mut out = frame[..ing.l2].to_vec();
    out.extend_from_slice(&ip);
    Some(out)
}

/// One fuzz input: random bytes (1 in 10), or a seed, perhaps resized
/// around its size, with a few bytes changed (mostly in the headers:
/// random values, flipped bits, edge values), perhaps cut short or grown.
fn input(rng: &mut StdRng, seeds: &[Seed]) -> Vec<u8> {
    if rng.random_range(0..10) == 0 {
        let n = rng.random_range(14..=128);
        return (0..n).map(|_| rng.random()).collect();
    }
    let seed = &seeds[rng.random_range(0..seeds.len())].frame;
    let mut f = seed.clone();
    let resize = rng.random_range(0..4) == 0;
    if resize && let Some(r) = resized(&f, rng.random_range(-48..=48)) {
        f = r;
    }
    let changes = if resize {
        rng.random_range(0..=2)
    } else {
        rng.random_range(1..=4)
    };
    for _ in 0..changes {
        let i = if rng.random_range(0..4) == 0 {
            rng.random_range(0..f.len())
        } else {
            rng.random_range(0..f.len().min(HEADER_BYTES))
        };
        f[i] = match rng.random_range(0..4) {
            0 => f[i] ^ (1 << rng.random_range(0..8)),
            1 => [0x00, 0x01, 0x7f, 0x80, 0xff][rng.random_range(0..5)],
            _ => rng.random(),
        };
    }
    match rng.random_range(0..8) {
        0 => f.truncate(rng.random_range(14..=f.len())),
        1 => f.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
        _ => {}
    }
    f
}

/// Findings of one kind (the problem's text without its numbers): how
/// many frames, and the first few in full.
struct Finding {
    kind: String,
    frames: u64,
    examples: Vec<String>,
}

/// What a run found.
#[derive(Default)]
struct Report {
    findings: Vec<Finding>,
    /// Frames per path (Outcome label), and per input trait of sent frames.
    paths: BTreeMap<&'static str, u64>,
    /// Kernel event counters after the run (EV_* order).
    events: Vec<u64>,
    frames: usize,
}

impl Report {
    fn finding(&mut self, problem: &str, example: String) {
        let kind: String = problem.chars().filter(|c| !c.is_ascii_hexdigit()).collect();
        let i = match self.findings.iter().position(|f| f.kind == kind) {
            Some(i) => i,
            None => {
                self.findings.push(Finding {
                    kind,
                    frames: 0,
                    examples: Vec::new(),
                });
                self.findings.len() - 1
            }
        };
        let f = &mut self.findings[i];
        f.frames += 1;
        if f.examples.len() < EXAMPLES {
            f.examples.push(example);
        }
    }

    /// The findings, each kind with its count and examples.
    fn findings_text(&self) -> String {
        let mut s = String::new();
        for f in &self.findings {
            s += &format!(
                "-- {} frame(s):
",
                f.frames
            );
            for e in &f.examples {
                s += &format!(
                    "{e}
"
                );
            }
        }
        s
    }

    fn count(&mut self, v: &Verdict) {
        *self.paths.entry(v.outcome.label()).or_default() += 1;
        let sent = v.outcome.forwarded();
        for (yes, what) in [
            (sent && v.tagged, "sent: tagged"),
            (sent && v.frag == Some(Frag::First), "sent: first fragment"),
            (sent && v.frag == Some(Frag::Later), "sent: later fragment"),
            (sent && v.icmp_error, "sent: ICMP error steered"),
            (v.echo_of_corrupt, "note: echo reply to a corrupt request"),
        ] {
            if yes {
                *self.paths.entry(what).or_default() += 1;
            }
        }
    }
}

/// Load the balancer in the calling thread's namespace, run the seeds once
/// each and then `count` fuzz inputs from `seed`, judging every run.
fn fuzz(seed: u64, count: usize) -> anyhow::Result<Report> {
    let config = xlb_core::config::parse(&config(), "fuzz.toml")?;
    let desired = xlb_core::state::desired(&config, &Allocation::default())?;
    let host = HostInterface {
        mac: LB_MAC,
        ifindex: 1,
        mtu: MTU,
    };
    let mut dp = Dataplane::load()?;
    dp.apply(host, &desired, None)?;
    let ids = (
        desired.vips.iter().map(|v| v.id).collect::<Vec<_>>(),
        desired
            .vips
            .iter()
            .flat_map(|v| v.backend_ids.clone())
            .collect::<Vec<_>>(),
    );
    let world = World::new(desired, LB_MAC, MTU).map_err(anyhow::Error::msg)?;
    let mut report = Report::default();
    let mut out = vec![0u8; 4096];
    let mut one = |what: String, f: &[u8], report: &mut Report| -> Option<Verdict> {
        let o = match run(dp.program(), f, &mut out) {
            Ok(o) => o,
            Err(e) => {
                // Inputs are never shorter than an Ethernet header, so the
                // kernel refusing one is a finding.
                report.finding(
                    "the kernel refused the run",
                    format!("{what}: the kernel refused the run ({e}): input {}", hex(f)),
                );
                return None;
            }
        };
        let got = &out[..o.len];
        match judge(&world, f, o.action, got) {
            Ok(v) => Some(v),
            Err(problem) => {
                let example = format!(
                    "{what} ({}): {problem}\n    input  {}\n    output {}",
                    action_name(o.action),
                    hex(f),
                    hex(got)
                );
                report.finding(&problem, example);
                None
            }
        }
    };
    for s in seeds() {
        if let Some(v) = one(format!("seed \"{}\"", s.what), &s.frame, &mut report)
            && v.outcome.label() != s.expect
        {
            let problem = format!(
                "seed \"{}\" took path {}, written for {}",
                s.what,
                v.outcome.label(),
                s.expect
            );
            report.finding(&problem, problem.clone());
        }
    }
    let seeds = seeds();
    let mut rng = StdRng::seed_from_u64(seed);
    for n in 0..count {
        if report.findings.len() >= MAX_KINDS {
            break;
        }
        let f = input(&mut rng, &seeds);
        if let Some(v) = one(format!("frame {n}"), &f, &mut report) {
            report.count(&v);
        }
        report.frames = n + 1;
    }
    report.events = dp.snapshot(ids.0, ids.1)?.events;
    Ok(report)
}

#[test]
fn a_million_random_and_mutated_frames() {
    tests::require_privileges!();
    let seed: u64 = std::env::var("XLB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let count: usize = std::env::var("XLB_FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_FRAMES);
    let ns = Netns::new("xlbfuzz").expect("create the namespace");
    let started = std::time::Instant::now();
    let report = ns
        .spawn(move || fuzz(seed, count))
        .join()
        .expect("the namespace thread panicked")
        .expect("load the balancer and apply the config");
    eprintln!(
        "fuzz seed {seed:#x}: {} of {count} frames in {:.1} s",
        report.frames,
        started.elapsed().as_secs_f64()
    );
    for (path, n) in &report.paths {
        eprintln!("  {path:40} {n:>8}");
    }
    for (name, n) in EVENT_NAMES.iter().zip(&report.events) {
        eprintln!("  event {name:34} {n:>8}");
    }
    assert!(
        report.findings.is_empty(),
        "seed {seed:#x} (XLB_FUZZ_SEED={seed} XLB_FUZZ_FRAMES={count}): {} kinds of findings:\n{}",
        report.findings.len(),
        report.findings_text()
    );
    // Every path, taken often enough to mean something: at least one in
    // 4,000 frames (250 in a million) each.
    let min = (count as u64 / 4_000).max(1);
    let mut thin: Vec<String> = seeds()
        .iter()
        .map(|s| s.expect)
        .chain([
            "sent: tagged",
            "sent: first fragment",
            "sent: later fragment",
            "sent: ICMP error steered",
        ])
        .filter_map(|p| {
            let n = report.paths.get(p).copied().unwrap_or(0);
            (n < min).then(|| format!("{p}: {n}"))
        })
        .collect();
    for e in [
        EV_CONN_HIT,
        EV_CONN_MISS,
        EV_FRAG_FIRST,
        EV_FRAG_FOLLOW,
        EV_FRAG_UNKNOWN,
        EV_ICMP_ERROR_STEERED,
        EV_ICMP_ECHO_REPLY,
        EV_ICMP_TOO_BIG_SENT,
        EV_FIB_FALLBACK,
        EV_VLAN,
    ] {
        let n = report.events[e as usize];
        if n < min {
            thin.push(format!("event {}: {n}", EVENT_NAMES[e as usize]));
        }
    }
    thin.dedup();
    assert!(
        thin.is_empty(),
        "paths taken fewer than {min} times: {}",
        thin.join(", ")
    );
}

/// Without privileges: the seeds are named once each and cover every path
/// the judge knows, and resizing a sound seed leaves it sound (lengths and
/// checksums right), so resized frames reach the paths past the parser.
#[test]
fn seeds_cover_every_path_and_resizing_keeps_them_sound() {
    let seeds = seeds();
    let mut names = std::collections::BTreeSet::new();
    for s in &seeds {
        assert!(names.insert(s.what), "two seeds called {:?}", s.what);
    }
    let covered: std::collections::BTreeSet<&str> = seeds.iter().map(|s| s.expect).collect();
    let every = [
        "pass",
        "drop",
        "dsr4",
        "dsr6",
        "ipip 4in4",
        "ipip 6in6",
        "ipip 4in6",
        "gue 4in4",
        "gue 6in6",
        "gue 4in6",
        "echo4",
        "echo6",
        "too-big4",
        "too-big6",
    ];
    assert_eq!(covered, every.into_iter().collect());
    let mut resized_sound = 0;
    for s in &seeds {
        if Ingress::read(&s.frame).is_err() || check_checksums(&s.frame, 7777).is_err() {
            continue; // not IP it reads, or not sound on purpose (UDP shorter than IP)
        }
        for delta in [-48, -1, 1, 48] {
            let r =
                resized(&s.frame, delta).unwrap_or_else(|| panic!("{} does not resize", s.what));
            check_checksums(&r, 7777)
                .unwrap_or_else(|e| panic!("{} resized by {delta}: {e}", s.what));
            resized_sound += 1;
        }
    }
    assert!(
        resized_sound > 200,
        "only {resized_sound} resized frames checked"
    );
}
