//! `xlb decap` end to end in two network namespaces joined by a veth: a
//! sender builds IPIP and GUE frames by hand (as xlb's balancer sends them)
//! and puts them on its wire with an AF_PACKET socket; the backend runs the
//! real `xlb decap --interface eth0` and holds the VIPs on `lo`. A UDP
//! datagram must reach a socket bound to the VIP (and its answer come back
//! to the sender's socket), a TCP SYN must be answered with a SYN-ACK; IPv4
//! and IPv6, native and generic XDP. Then SIGTERM: the program is detached
//! and the counters it prints match what was sent. A tunnel frame from an
//! outer source outside `--from` must not reach the VIP's socket, and is
//! counted as refused. Needs root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use tests::netns::Netns;
use tests::tunnel::{DecapProcess, Encap, Link, PacketSocket, encapsulate, tcp_syn, udp_datagram};
use tests::xlbd::xlb_binary;

const SENDER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SENDER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// `--from`: the sender's own address of each family.
const FROM: [&str; 4] = ["--from", "198.18.0.1/32", "--from", "2001:db8::1/128"];
/// Outer sources outside `FROM`, on the same wire: a forger.
const FORGER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 66);
const FORGER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x66);
const BACKEND4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const BACKEND6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const SENDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 8053;
/// The sender's UDP socket (the inner datagrams' source port).
const SENDER_UDP_PORT: u16 = 41001;
/// How long to wait for any one answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// A sender and a backend namespace joined by a veth (eth0 on both sides);
/// dropping it removes both (and so the veth).
struct Pair {
    sender: Netns,
    backend: Netns,
}

fn pair(prefix: &str) -> anyhow::Result<Pair> {
    let sender = Netns::new(&format!("{prefix}-snd"))?;
    let backend = Netns::new(&format!("{prefix}-be"))?;
    for ns in [&sender, &backend] {
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
    }
    sender.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &backend.name,
    ])?;
    for (ns, mac, v4, v6) in [
        (&sender, SENDER_MAC, SENDER4, SENDER6),
        (&backend, BACKEND_MAC, BACKEND4, BACKEND6),
    ] {
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        ns.ip(&["link", "set", "eth0", "address", &mac, "up"])?;
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
    }
    // The backend holds the VIPs on lo and answers from them (TESTBED.md).
    backend.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"])?;
    backend.ip(&["-6", "addr", "add", &format!("{VIP6}/128"), "dev", "lo"])?;
    for iface in ["all", "default", "eth0"] {
        backend.sysctl(&format!("net.ipv4.conf.{iface}.arp_ignore"), "1")?;
        backend.sysctl(&format!("net.ipv4.conf.{iface}.arp_announce"), "2")?;
        backend.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "0")?;
    }
    // Answers come from the VIPs: the sender routes them back via the backend.
    sender.ip(&[
        "route",
        "add",
        "198.18.100.0/24",
        "via",
        &BACKEND4.to_string(),
    ])?;
    sender.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:100::/48",
        "via",
        &BACKEND6.to_string(),
    ])?;
    Ok(Pair { sender, backend })
}

/// One way of tunnelling, as the balancer would.
struct Case {
    name: &'static str,
    outer_v6: bool,
    inner_v6: bool,
    gue: bool,
    /// The counter it must move (twice: one UDP, one TCP frame).
    counter: &'static str,
}

const CASES: [Case; 6] = [
    Case {
        name: "IPIP IPv4-in-IPv4",
        outer_v6: false,
        inner_v6: false,
        gue: false,
        counter: "ipip4",
    },
    Case {
        name: "IPIP IPv6-in-IPv6",
        outer_v6: true,
        inner_v6: true,
        gue: false,
        counter: "ipip6",
    },
    Case {
        name: "IPIP IPv4-in-IPv6",
        outer_v6: true,
        inner_v6: false,
        gue: false,
        counter: "ipip6",
    },
    Case {
        name: "GUE over IPv4, IPv4 inside",
        outer_v6: false,
        inner_v6: false,
        gue: true,
        counter: "gue4",
    },
    Case {
        name: "GUE over IPv6, IPv6 inside",
        outer_v6: true,
        inner_v6: true,
        gue: true,
        counter: "gue6",
    },
    Case {
        name: "GUE over IPv4, IPv6 inside",
        outer_v6: false,
        inner_v6: true,
        gue: true,
        counter: "gue4",
    },
];

fn addr(v6: bool, v4: Ipv4Addr, v6a: Ipv6Addr) -> IpAddr {
    if v6 { v6a.into() } else { v4.into() }
}

/// The sockets each side needs, made inside its namespace (a socket stays
/// in the namespace it was made in, whichever thread uses it later).
struct Sockets {
    wire: PacketSocket,
    /// The sender's UDP sockets (IPv4, IPv6): where answers come back.
    sender_udp: [UdpSocket; 2],
    /// The backend's UDP sockets on the VIPs (IPv4, IPv6).
    backend_udp: [UdpSocket; 2],
    /// Listeners on the VIPs: the backend's kernel answers SYNs.
    _listeners: [TcpListener; 2],
}

fn sockets(pair: &Pair) -> anyhow::Result<Sockets> {
    let (wire, sender_udp) = Netns::in_named(&pair.sender.name, || {
        let wire = PacketSocket::open("eth0")?;
        let udp = [
            UdpSocket::bind((SENDER4, SENDER_UDP_PORT))?,
            UdpSocket::bind((SENDER6, SENDER_UDP_PORT))?,
        ];
        for s in &udp {
            s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        }
        Ok((wire, udp))
    })?;
    let (backend_udp, listeners) = Netns::in_named(&pair.backend.name, || {
        let udp = [
            UdpSocket::bind((VIP4, UDP_PORT))?,
            UdpSocket::bind((VIP6, UDP_PORT))?,
        ];
        for s in &udp {
            s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        }
        let listeners = [
            TcpListener::bind((VIP4, TCP_PORT))?,
            TcpListener::bind((VIP6, TCP_PORT))?,
        ];
        Ok((udp, listeners))
    })?;
    Ok(Sockets {
        wire,
        sender_udp,
        backend_udp,
        _listeners: listeners,
    })
}

fn tunnel_frame(case: &Case, index: u16, inner: &[u8]) -> Vec<u8> {
    tunnel_frame_from(case, index, addr(case.outer_v6, SENDER4, SENDER6), inner)
}

/// A tunnel frame of `case` with outer source `src`.
fn tunnel_frame_from(case: &Case, index: u16, src: IpAddr, inner: &[u8]) -> Vec<u8> {
    let link = Link {
        dst_mac: BACKEND_MAC,
        src_mac: SENDER_MAC,
        vlan: None,
    };
    let encap = if case.gue {
        Encap::Gue {
            src_port: 40000 + index,
            dst_port: lb_common::DEFAULT_GUE_PORT,
            checksum: case.outer_v6,
        }
    } else {
        Encap::Ipip
    };
    encapsulate(
        &link,
        src,
        addr(case.outer_v6, BACKEND4, BACKEND6),
        encap,
        inner,
    )
}

/// A UDP datagram to the VIP, tunnelled: the backend's socket must get it
/// from the sender's address, and its answer must reach the sender.
fn udp_round_trip(s: &Sockets, case: &Case, index: u16) -> anyhow::Result<()> {
    let family = usize::from(case.inner_v6);
    let sender = addr(case.inner_v6, SENDER4, SENDER6);
    let vip = addr(case.inner_v6, VIP4, VIP6);
    let payload = format!("case {index}: {}", case.name);
    let inner = udp_datagram(
        (sender, SENDER_UDP_PORT),
        (vip, UDP_PORT),
        payload.as_bytes(),
    );
    s.wire.send(&tunnel_frame(case, index, &inner))?;
    let mut buf = [0u8; 1500];
    let (n, from) = s.backend_udp[family]
        .recv_from(&mut buf)
        .with_context(|| format!("{}: no UDP datagram on the VIP", case.name))?;
    ensure!(
        &buf[..n] == payload.as_bytes(),
        "{}: the VIP's socket got {:?}",
        case.name,
        String::from_utf8_lossy(&buf[..n])
    );
    ensure!(
        from == SocketAddr::new(sender, SENDER_UDP_PORT),
        "{}: datagram from {from}",
        case.name
    );
    let answer = format!("answer {index}");
    s.backend_udp[family].send_to(answer.as_bytes(), from)?;
    let (n, from) = s.sender_udp[family]
        .recv_from(&mut buf)
        .with_context(|| format!("{}: no UDP answer at the sender", case.name))?;
    ensure!(
        &buf[..n] == answer.as_bytes() && from == SocketAddr::new(vip, UDP_PORT),
        "{}: the sender got {:?} from {from}",
        case.name,
        String::from_utf8_lossy(&buf[..n])
    );
    Ok(())
}

/// Whether `frame` is a SYN-ACK from `vip`:TCP_PORT to `sender`:`port`.
fn is_syn_ack(frame: &[u8], vip: IpAddr, sender: IpAddr, port: u16) -> bool {
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return false;
    };
    let (src, dst): (IpAddr, IpAddr) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        _ => return false,
    };
    match &p.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            src == vip
                && dst == sender
                && tcp.source_port() == TCP_PORT
                && tcp.destination_port() == port
                && tcp.syn()
                && tcp.ack()
        }
        _ => false,
    }
}

/// A TCP SYN to the VIP, tunnelled: a SYN-ACK must come back on the wire.
fn syn_answered(s: &Sockets, case: &Case, index: u16) -> anyhow::Result<()> {
    let sender = addr(case.inner_v6, SENDER4, SENDER6);
    let vip = addr(case.inner_v6, VIP4, VIP6);
    let port = 42000 + index;
    let inner = tcp_syn((sender, port), (vip, TCP_PORT));
    s.wire.send(&tunnel_frame(case, index, &inner))?;
    let got = s
        .wire
        .recv_until(ANSWER_TIMEOUT, |f| is_syn_ack(f, vip, sender, port))?;
    ensure!(
        got.is_some(),
        "{}: no SYN-ACK from {vip} within {ANSWER_TIMEOUT:?}",
        case.name
    );
    Ok(())
}

fn decap_end_to_end(prefix: &str, mode: &'static str) {
    tests::in_workdir(prefix, |dir| {
        let pair = pair(prefix)?;
        let s = sockets(&pair)?;
        let mut args = vec!["--mode", mode];
        args.extend(FROM);
        let decap = DecapProcess::start(&pair.backend, dir, "eth0", &args)?;
        let log = decap.log_text();
        for a in [BACKEND4.to_string(), BACKEND6.to_string()] {
            ensure!(log.contains(&a), "the decap log names no {a}: {log}");
        }
        let mut expected = serde_json::Map::new();
        for (i, case) in CASES.iter().enumerate() {
            udp_round_trip(&s, case, i as u16)?;
            syn_answered(&s, case, i as u16)?;
            let n = expected
                .get(case.counter)
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            expected.insert(case.counter.into(), (n + 2).into());
        }
        let (status, out) = decap.stop()?;
        ensure!(status.success(), "xlb decap exited with {status}: {out}");
        let doc: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("xlb decap printed {out:?}"))?;
        ensure!(doc["interface"] == "eth0", "{doc}");
        for name in ["ipip4", "ipip6", "gue4", "gue6"] {
            let want = expected.get(name).and_then(|v| v.as_u64()).unwrap_or(0);
            ensure!(
                doc["packets"][name] == want,
                "counter {name}: {} printed, {want} sent ({doc})",
                doc["packets"][name]
            );
        }
        ensure!(doc["packets"]["malformed"] == 0, "{doc}");
        // Detached: no XDP program left on the interface.
        let link = pair.backend.ip(&["link", "show", "eth0"])?;
        ensure!(
            !link.contains("xdp"),
            "still attached after SIGTERM: {link}"
        );
        Ok(())
    });
}

/// A forger's tunnel frame (outer source outside `--from`) carrying a UDP
/// datagram to the VIP, then the sender's own: the VIP's socket must get
/// the sender's datagram first and nothing after it.
fn forged_datagram_dropped(s: &Sockets, case: &Case, index: u16) -> anyhow::Result<()> {
    let family = usize::from(case.inner_v6);
    let sender = addr(case.inner_v6, SENDER4, SENDER6);
    let vip = addr(case.inner_v6, VIP4, VIP6);
    let forger = addr(case.outer_v6, FORGER4, FORGER6);
    let forged = format!("forged {index}: {}", case.name);
    let inner = udp_datagram(
        (sender, SENDER_UDP_PORT),
        (vip, UDP_PORT),
        forged.as_bytes(),
    );
    s.wire
        .send(&tunnel_frame_from(case, index, forger, &inner))?;
    let genuine = format!("genuine {index}: {}", case.name);
    let inner = udp_datagram(
        (sender, SENDER_UDP_PORT),
        (vip, UDP_PORT),
        genuine.as_bytes(),
    );
    s.wire.send(&tunnel_frame(case, index, &inner))?;
    let socket = &s.backend_udp[family];
    let mut buf = [0u8; 1500];
    let (n, _) = socket
        .recv_from(&mut buf)
        .with_context(|| format!("{}: no UDP datagram on the VIP", case.name))?;
    ensure!(
        &buf[..n] == genuine.as_bytes(),
        "{}: from {forger} (not in --from) the VIP's socket got {:?}",
        case.name,
        String::from_utf8_lossy(&buf[..n])
    );
    socket.set_nonblocking(true)?;
    let late = socket.recv_from(&mut buf);
    socket.set_nonblocking(false)?;
    if let Ok((n, _)) = late {
        anyhow::bail!(
            "{}: the VIP's socket got {:?} after the genuine datagram",
            case.name,
            String::from_utf8_lossy(&buf[..n])
        );
    }
    Ok(())
}

#[test]
fn decap_drops_tunnels_from_sources_outside_from() {
    tests::require_privileges!();
    tests::in_workdir("xdcf", |dir| {
        let pair = pair("xdcf")?;
        let s = sockets(&pair)?;
        let mut args = vec!["--mode", "generic"];
        args.extend(FROM);
        let decap = DecapProcess::start(&pair.backend, dir, "eth0", &args)?;
        let log = decap.log_text();
        for prefix in ["198.18.0.1/32", "2001:db8::1/128"] {
            ensure!(
                log.contains(prefix),
                "the decap log names no {prefix}: {log}"
            );
        }
        let mut decapsulated = 0;
        for (i, case) in CASES.iter().enumerate() {
            forged_datagram_dropped(&s, case, i as u16)?;
            decapsulated += 1;
        }
        let counters = decap.stop_with_counters()?;
        ensure!(
            counters["source_refused"] == CASES.len(),
            "source_refused: {} counted, {} forged frames sent ({counters})",
            counters["source_refused"],
            CASES.len()
        );
        let total: u64 = ["ipip4", "ipip6", "gue4", "gue6"]
            .iter()
            .filter_map(|k| counters[*k].as_u64())
            .sum();
        ensure!(
            total == decapsulated,
            "{total} decapsulated, {decapsulated} genuine sent ({counters})"
        );
        ensure!(counters["malformed"] == 0, "{counters}");
        Ok(())
    });
}

#[test]
fn decap_native_xdp_carries_tcp_and_udp() {
    tests::require_privileges!();
    decap_end_to_end("xdcn", "native");
}

#[test]
fn decap_generic_xdp_carries_tcp_and_udp() {
    tests::require_privileges!();
    decap_end_to_end("xdcg", "generic");
}

/// `xlb decap` in `ns` with `args`; (exit code, stderr).
fn decap_fails(ns: &Netns, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(xlb_binary()?)
        .arg("decap")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn decap_refuses_bad_input_with_exit_2() {
    tests::require_privileges!();
    let ns = Netns::new("xdce-be").expect("namespace");
    // A veth left down has no address at all (not even link-local).
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])
    .expect("veth");
    for (args, needle) in [
        (
            &["--interface", "nosuch0", "--from", "198.18.0.1"][..],
            "no such interface: nosuch0",
        ),
        (
            &["--interface", "eth0", "--from", "198.18.0.1"][..],
            "interface eth0 has no IPv4 or IPv6 address",
        ),
        (
            &["--interface", "eth0", "--gue-port", "0"][..],
            "--gue-port",
        ),
        (&["--interface", "eth0", "--mode", "turbo"][..], "--mode"),
        (
            &["--interface", "eth0", "--address", "198.18.0"][..],
            "--address",
        ),
        // --from is required, and says why and how to accept every source.
        (
            &["--interface", "eth0", "--address", "198.18.0.11"][..],
            "--from is required",
        ),
        (
            &["--interface", "eth0", "--from", "198.18.0.1/24"][..],
            "'--from <PREFIX>': 198.18.0.1/24: bits set after the first 24; the prefix is 198.18.0.0/24",
        ),
        (
            &["--interface", "eth0", "--from", "2001:db8::/129"][..],
            "'--from <PREFIX>': 2001:db8::/129: prefix length 129 is longer than 128",
        ),
        (
            &["--interface", "eth0", "--from", "balancers"][..],
            "'--from <PREFIX>': \"balancers\" is not an IPv4 or IPv6 prefix",
        ),
    ] {
        let (code, stderr) = decap_fails(&ns, args).expect("run xlb decap");
        assert_eq!(code, 2, "xlb decap {args:?}: exit {code}: {stderr}");
        assert!(
            stderr.contains(needle),
            "xlb decap {args:?}: stderr lacks {needle:?}: {stderr}"
        );
    }
    // With an address given, the same address-less interface is accepted:
    // it attaches (generic XDP on a down veth), runs, and stops on SIGTERM.
    // Every source said outright: accepted, with a warning naming the risk.
    tests::in_workdir("decap-cli", |dir| {
        let p = DecapProcess::start(
            &ns,
            dir,
            "eth0",
            &[
                "--address",
                "198.18.0.11",
                "--mode",
                "generic",
                "--from",
                "0.0.0.0/0",
                "--from",
                "::/0",
            ],
        )?;
        let log = p.log_text();
        for needle in [
            "--from 0.0.0.0/0 accepts tunnel packets from every IPv4 source",
            "--from ::/0 accepts tunnel packets from every IPv6 source",
            "CVE-2020-10136",
        ] {
            ensure!(log.contains(needle), "the log lacks {needle:?}: {log}");
        }
        let (status, out) = p.stop()?;
        ensure!(status.success(), "exit {status}: {out}");
        let doc: serde_json::Value = serde_json::from_str(&out)?;
        ensure!(doc["packets"]["ipip4"] == 0, "{doc}");
        ensure!(doc["packets"]["source_refused"] == 0, "{doc}");
        Ok(())
    });
}
