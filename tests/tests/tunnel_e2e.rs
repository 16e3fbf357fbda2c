//! IPIP and GUE end to end in network namespaces: a client, the real `xlb`
//! daemon on the LB, and three backends that each run `xlb decap` (no tunnel
//! device: this kernel has none) and real TCP and UDP servers bound to the
//! VIPs, which they hold on `lo` as for direct server return. Every way of
//! tunnelling (IPIP and GUE; IPv4 in IPv4, IPv6 in IPv6, IPv4 in IPv6), TCP
//! and UDP: 6,000 real exchanges per VIP, none may fail, each backend's
//! share within 3 points of its weight; then the backends' decap counters
//! must account for every exchange, by tunnel kind. Needs root.
//!
//! What the LB needs for tunnels (kernel-spec.md): the next hop comes from
//! bpf_fib_lookup, which answers only with forwarding on and a neighbour
//! entry for the backend, so the LB namespace gets both.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tests::client::{Exchange, Proto, Tally, Until, drive};
use tests::netns::Netns;
use tests::testbed::{Host, Testbed};
use tests::tunnel::DecapProcess;
use tests::xlbd::Daemon;

/// Exchanges per VIP. Client ports are random, so a share is too: with
/// 6,000, a 50% share's standard error is 0.65 points, and ±3 points (4.6 of
/// them) fails a correct split in one of the 12 VIPs about once in 20,000
/// runs (with 3,000: about once in 60). About 0.5 s per VIP.
const FLOWS: usize = 6000;
/// Client threads per VIP.
const WORKERS: usize = 8;
/// Allowed distance of an observed share from the expected one.
const TOLERANCE: f64 = 0.03;
/// Outer source prefixes ([tunnel]); the flow hash fills their host bits.
const SOURCE_V4: &str = "198.18.200.0/24";
const SOURCE_V6: &str = "2001:db8:ff::/96";
/// Not the default (6080): the balancer and `xlb decap` must both take the
/// configured one.
const GUE_PORT: u16 = 7080;

/// One way of tunnelling a VIP's packets: a TCP and a UDP VIP each.
struct Kind {
    /// Names the VIPs: `<name>-tcp`, `<name>-udp`.
    name: &'static str,
    /// The config's `forwarding`.
    method: &'static str,
    vip_v6: bool,
    /// The backends' addresses are of this family: the outer header's.
    backend_v6: bool,
    /// Of both VIPs (TCP and UDP); one port per kind keeps the VIPs apart.
    port: u16,
    /// Of b1, b2, b3. Not the same for every kind, so a VIP served from
    /// another VIP's table shows.
    weights: [u32; 3],
    /// The decap counter its frames move (`xlb decap`'s STAT_NAMES).
    counter: &'static str,
}

const KINDS: [Kind; 6] = [
    Kind {
        name: "ipip-4in4",
        method: "ipip",
        vip_v6: false,
        backend_v6: false,
        port: 8001,
        weights: [1, 1, 2],
        counter: "ipip4",
    },
    Kind {
        name: "ipip-6in6",
        method: "ipip",
        vip_v6: true,
        backend_v6: true,
        port: 8002,
        weights: [1, 1, 2],
        counter: "ipip6",
    },
    Kind {
        name: "ipip-4in6",
        method: "ipip",
        vip_v6: false,
        backend_v6: true,
        port: 8003,
        weights: [2, 1, 1],
        counter: "ipip6",
    },
    Kind {
        name: "gue-4in4",
        method: "gue",
        vip_v6: false,
        backend_v6: false,
        port: 8004,
        weights: [1, 2, 1],
        counter: "gue4",
    },
    Kind {
        name: "gue-6in6",
        method: "gue",
        vip_v6: true,
        backend_v6: true,
        port: 8005,
        weights: [1, 2, 1],
        counter: "gue6",
    },
    Kind {
        name: "gue-4in6",
        method: "gue",
        vip_v6: false,
        backend_v6: true,
        port: 8006,
        weights: [1, 1, 2],
        counter: "gue6",
    },
];

const PROTOS: [(Proto, &str); 2] = [(Proto::Tcp, "tcp"), (Proto::Udp, "udp")];

impl Kind {
    fn target(&self) -> SocketAddr {
        SocketAddr::new(Testbed::vip(self.vip_v6), self.port)
    }

    fn backend_address(&self, b: &Host) -> IpAddr {
        if self.backend_v6 {
            b.v6.into()
        } else {
            b.v4.into()
        }
    }

    /// (backend name, expected share) in backend order.
    fn expected_shares(&self, backends: &[Host]) -> Vec<(String, f64)> {
        let total: u32 = self.weights.iter().sum();
        backends
            .iter()
            .zip(self.weights)
            .map(|(b, w)| (b.name.clone(), f64::from(w) / f64::from(total)))
            .collect()
    }
}

/// The daemon's config: [tunnel], then a TCP and a UDP VIP per kind, every
/// backend without a MAC (the LB's neighbour table names the next hop).
fn config(backends: &[Host]) -> String {
    let mut out = format!(
        "interface = \"eth0\"\nhash_seed = 1\n\n[tunnel]\nsource_v4 = \"{SOURCE_V4}\"\n\
         source_v6 = \"{SOURCE_V6}\"\ngue_port = {GUE_PORT}\n"
    );
    for kind in &KINDS {
        for (_, proto) in PROTOS {
            out.push_str(&format!(
                "\n[[vip]]\nname = \"{}-{proto}\"\naddress = \"{}\"\nport = {}\n\
                 protocol = \"{proto}\"\nforwarding = \"{}\"\n",
                kind.name,
                Testbed::vip(kind.vip_v6),
                kind.port,
                kind.method
            ));
            for (b, w) in backends.iter().zip(kind.weights) {
                out.push_str(&format!(
                    "\n[[vip.backend]]\nname = \"{}\"\naddress = \"{}\"\nweight = {w}\n",
                    b.name,
                    kind.backend_address(b)
                ));
            }
        }
    }
    out
}

/// The LB's kernel as bpf_fib_lookup needs it: forwarding on and a
/// neighbour entry for each backend address (nothing else would resolve
/// them here).
fn prepare_lb(bed: &Testbed) -> anyhow::Result<()> {
    tests::tunnel::route_to_backends(&bed.lb.ns, "eth0", &bed.backends)
}

/// Wait until `fd` is readable or 100 ms passed.
fn readable(fd: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(100u16)).is_ok_and(|n| n > 0)
}

/// Answer each connection's request line with `name`.
fn serve_tcp(listener: TcpListener, name: String, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        if !readable(&listener) {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        // A failure here is the client's to see (a reset or a timeout).
        if BufReader::new(&stream).read_line(&mut line).is_ok() {
            let _ = (&stream).write_all(format!("{name}\n").as_bytes());
        }
    }
}

/// Answer each datagram with `name`, from the VIP the socket is bound to.
fn serve_udp(socket: UdpSocket, name: String, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        if !readable(&socket) {
            continue;
        }
        if let Ok((_, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(format!("{name}\n").as_bytes(), peer);
        }
    }
}

/// TCP and UDP servers on every backend, bound to every VIP (address and
/// port) of every kind, answering with the backend's name; stopped on drop.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    fn start(backends: &[Host]) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for b in backends {
            // Bound inside the backend's namespace; a socket stays in the
            // namespace it was made in, whichever thread serves it.
            let (listeners, sockets) = Netns::in_named(&b.ns.name, || {
                let targets: Vec<SocketAddr> = KINDS.iter().map(Kind::target).collect();
                let listeners = targets
                    .iter()
                    .map(|t| TcpListener::bind(t).with_context(|| format!("TCP on {t}")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let sockets = targets
                    .iter()
                    .map(|t| UdpSocket::bind(t).with_context(|| format!("UDP on {t}")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok((listeners, sockets))
            })
            .with_context(|| format!("servers on {}", b.name))?;
            for l in listeners {
                let (name, stop) = (b.name.clone(), stop.clone());
                threads.push(std::thread::spawn(move || serve_tcp(l, name, stop)));
            }
            for s in sockets {
                let (name, stop) = (b.name.clone(), stop.clone());
                threads.push(std::thread::spawn(move || serve_udp(s, name, stop)));
            }
        }
        Ok(Self { stop, threads })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The daemon's action, drop and event counters that are not zero: what to
/// look at when a VIP does not answer (no route, encapsulation failed, ...).
fn nonzero_counters(daemon: &Daemon) -> String {
    let status = match daemon.status() {
        Ok(s) => s,
        Err(e) => return format!("(xlb status failed: {e:#})"),
    };
    let mut out = Vec::new();
    for key in ["actions", "drops"] {
        for c in status[key].as_array().into_iter().flatten() {
            if c["packets"].as_u64().is_some_and(|n| n > 0) {
                out.push(format!("{key} {}={}", c["name"], c["packets"]));
            }
        }
    }
    for (name, n) in status["events"].as_object().into_iter().flatten() {
        if n.as_u64().is_some_and(|n| n > 0) {
            out.push(format!("event {name}={n}"));
        }
    }
    out.join(", ")
}

/// The observed share of each backend of `vip` in `xlb status` (the
/// kernel's per-backend counters since the apply).
fn status_shares(daemon: &Daemon, vip: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let status = daemon.status()?;
    let v = status["vips"]
        .as_array()
        .and_then(|vips| vips.iter().find(|v| v["name"] == vip))
        .with_context(|| format!("no VIP {vip} in xlb status"))?;
    Ok(v["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or("?").to_string(),
                b["observed_share_ratio"].as_f64().unwrap_or(0.0),
            )
        })
        .collect())
}

/// A handful of exchanges first: when the balancer does not tunnel a VIP at
/// all, fail within one timeout (3 s), not after thousands of them.
fn probe(
    bed: &Testbed,
    daemon: &Daemon,
    vip: &str,
    kind: &Kind,
    proto: Proto,
) -> anyhow::Result<()> {
    let probe = drive(
        &bed.client.ns,
        kind.target(),
        proto,
        WORKERS,
        Until::Count(WORKERS),
    );
    let tally = Tally::of(&probe);
    ensure!(
        tally.failures.is_empty(),
        "VIP {vip} ({} to {}): {} of {} probe exchanges failed, first: {:?}; the balancer's \
         counters: {}",
        kind.method,
        kind.target(),
        tally.failures.len(),
        probe.len(),
        tally.failures.first(),
        nonzero_counters(daemon)
    );
    Ok(())
}

/// `FLOWS` exchanges to one VIP: none may fail, and the split seen by the
/// client and by the daemon must follow the weights. Returns who served.
fn check_vip(
    bed: &Testbed,
    daemon: &Daemon,
    kind: &Kind,
    (proto, proto_name): (Proto, &str),
) -> anyhow::Result<Tally> {
    let vip = format!("{}-{proto_name}", kind.name);
    probe(bed, daemon, &vip, kind, proto)?;
    let t0 = Instant::now();
    let exchanges: Vec<Exchange> = drive(
        &bed.client.ns,
        kind.target(),
        proto,
        WORKERS,
        Until::Count(FLOWS),
    );
    let tally = Tally::of(&exchanges);
    eprintln!(
        "{vip}: {} exchanges in {:.2?}: {:?}",
        exchanges.len(),
        t0.elapsed(),
        tally.per_backend
    );
    ensure!(
        tally.failures.is_empty(),
        "VIP {vip}: {} of {} exchanges failed, first: {:?}; the balancer's counters: {}",
        tally.failures.len(),
        exchanges.len(),
        tally.failures.first(),
        nonzero_counters(daemon)
    );
    ensure!(
        exchanges.len() == FLOWS,
        "VIP {vip}: {} exchanges made",
        exchanges.len()
    );
    let observed = status_shares(daemon, &vip)?;
    for (name, share) in kind.expected_shares(&bed.backends) {
        let got = tally.share(&name);
        ensure!(
            (got - share).abs() <= TOLERANCE,
            "VIP {vip}: backend {name} served {:.1}% of {FLOWS} exchanges, expected {:.1}% ± 3 \
             points ({:?})",
            got * 100.0,
            share * 100.0,
            tally.per_backend
        );
        let seen = observed.get(&name).copied().unwrap_or(0.0);
        ensure!(
            (seen - share).abs() <= TOLERANCE,
            "VIP {vip}: xlb status says backend {name} got {:.1}% of the packets, expected \
             {:.1}% ± 3 points ({observed:?})",
            seen * 100.0,
            share * 100.0
        );
    }
    Ok(tally)
}

/// Each backend's decap counters against what it served: every exchange
/// sent at least one frame of its kind, so a counter is at least the
/// exchanges of its kinds that backend answered; and nothing was malformed.
fn check_decap_counters(
    name: &str,
    counters: &serde_json::Value,
    served: &BTreeMap<&str, u64>,
) -> anyhow::Result<()> {
    for counter in ["ipip4", "ipip6", "gue4", "gue6"] {
        let want = served.get(counter).copied().unwrap_or(0);
        let got = counters[counter].as_u64().unwrap_or(0);
        ensure!(
            want > 0 && got >= want,
            "backend {name}: xlb decap counted {got} {counter} frames, but it answered {want} \
             exchanges tunnelled that way ({counters})"
        );
    }
    ensure!(
        counters["malformed"] == 0,
        "backend {name}: xlb decap saw malformed tunnel frames ({counters})"
    );
    Ok(())
}

#[test]
fn ipip_and_gue_carry_real_tcp_and_udp_to_decapsulating_backends() {
    tests::require_privileges!();
    tests::in_workdir("tunnel-e2e", |dir| {
        let started = Instant::now();
        let bed = Testbed::new("xlbtun", 3)?;
        prepare_lb(&bed)?;
        let _servers = Servers::start(&bed.backends)?;
        let mut decaps = Vec::new();
        for b in &bed.backends {
            // The balancer's [tunnel] prefixes: its only outer sources.
            decaps.push(DecapProcess::start_for(
                &b.ns,
                dir,
                "eth0",
                GUE_PORT,
                &[SOURCE_V4, SOURCE_V6],
            )?);
        }
        let config_path = dir.join("xlb.toml");
        std::fs::write(&config_path, config(&bed.backends))?;
        let mut daemon = Daemon::start(&bed.lb.ns, &config_path, dir)?;
        eprintln!("testbed, decap and daemon up in {:.2?}", started.elapsed());

        // backend -> decap counter -> exchanges it answered through it.
        let mut served: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
        for kind in &KINDS {
            for proto in PROTOS {
                let tally = check_vip(&bed, &daemon, kind, proto)?;
                for (backend, n) in tally.per_backend {
                    *served
                        .entry(backend)
                        .or_default()
                        .entry(kind.counter)
                        .or_default() += n;
                }
            }
        }

        for (b, decap) in bed.backends.iter().zip(decaps) {
            let counters = decap.stop_with_counters()?;
            eprintln!("{}: xlb decap counted {counters}", b.name);
            let mine = served.get(&b.name).cloned().unwrap_or_default();
            check_decap_counters(&b.name, &counters, &mine)?;
        }
        let status = daemon.stop()?;
        ensure!(
            status.success(),
            "xlb run exited with {status}: {}",
            daemon.log_text()
        );
        eprintln!("whole test: {:.2?}", started.elapsed());
        Ok(())
    });
}
