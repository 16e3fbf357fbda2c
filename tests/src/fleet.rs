//! A fleet in namespaces (issue 14): a router running BIRD with ECMP
//! multipath to three balancer nodes, each running `xlb run` and its own
//! BIRD; backends on the nodes' segment (they hold the VIPs on `lo` and
//! answer through the router); a client behind the router. The nodes
//! forward by L2 DSR, or by IPIP or GUE ([`Forwarding`],
//! [`Fleet::build_with`]): then every backend runs `xlb decap`.
//!
//! ```text
//!  client 198.18.1.2 ── eth1 router eth0 198.18.0.1 ── br0 (switch) ─┬─ n21 n22 n23  (xlb + BIRD)
//!                              BIRD, ECMP                            └─ b1 b2 b3     (.11-.13)
//! ```
//!
//! The router's and the nodes' BIRD run the shipped configs of deploy/bird/
//! (the nodes' with their own addresses in the site block). Each node
//! announces the VIPs xlb serves as routes in kernel table [`TABLE`]
//! (`xlb run --announce-table`); the router installs one route per VIP
//! address with one next hop per announcing node and hashes on L4 ports.
//! BFD (100 ms x 3) finds a lost node. Everything is removed on drop, also
//! when a test fails.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use crate::confine::Bpffs;
use crate::echo::EchoServers;
use crate::etcd::{self, Etcd, Store};
use crate::netns::Netns;
use crate::testbed::{self, Host, TCP_PORT, VIP4, VIP6};
use crate::tunnel::DecapProcess;
use crate::xlbd::{Daemon, xlb_binary};

/// The kernel table xlb writes its announced VIPs into, and BIRD learns.
pub const TABLE: &str = "100";
/// The routing protocol number of xlb's routes (BIRD's `krt_source`).
pub const PROTO: &str = "248";
/// The port each backend answers health checks on.
pub const HEALTH_PORT: u16 = 9000;
/// The nodes' last address byte: 198.18.0.21, .22, .23.
pub const NODES: [u8; 3] = [21, 22, 23];
/// `xlb run --announce-hold` in the fleet: how long a VIP withdrawn because
/// every backend was down waits with a backend up before it is announced
/// again (the default is 10 s).
pub const ANNOUNCE_HOLD: &str = "2s";
/// BFD's detection time on both sides (deploy/bird: 100 ms x 3).
pub const BFD_DETECTION: Duration = Duration::from_millis(300);

/// The shipped BIRD configs.
pub const NODE_BIRD: &str = include_str!("../../deploy/bird/node.conf");
pub const ROUTER_BIRD: &str = include_str!("../../deploy/bird/router.conf");

/// The node's BIRD config: the shipped one with node `last`'s addresses in
/// its site block.
pub fn node_bird_conf(last: u8) -> anyhow::Result<String> {
    let mut conf = NODE_BIRD.to_string();
    for (from, to) in [
        (
            "define NODE_V4 = 198.18.0.21;",
            format!("define NODE_V4 = 198.18.0.{last};"),
        ),
        (
            "define NODE_V6 = 2001:db8::21;",
            format!("define NODE_V6 = 2001:db8::{last};"),
        ),
        (
            "define XLB_TABLE = 100;",
            format!("define XLB_TABLE = {TABLE};"),
        ),
        (
            "define XLB_PROTO = 248;",
            format!("define XLB_PROTO = {PROTO};"),
        ),
    ] {
        ensure!(
            conf.contains(from),
            "deploy/bird/node.conf has no line {from:?} in its site block"
        );
        conf = conf.replace(from, &to);
    }
    Ok(conf)
}

/// A BIRD daemon in a namespace with its own control socket, killed on drop.
pub struct Bird {
    child: Child,
    pub ctl: PathBuf,
    pub log: PathBuf,
}

impl Bird {
    /// Write `conf` to `dir/bird.conf`, check it (`bird -p`), start BIRD in
    /// the foreground in `ns` and wait until its control socket answers.
    pub fn start(ns: &Netns, conf: &str, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("bird.conf");
        std::fs::write(&path, conf)?;
        let path = path.to_str().context("utf-8 path")?;
        crate::netns::sh(&["bird", "-p", "-c", path])
            .context("BIRD refused the config (Debian package bird2; `cargo xtask setup`)")?;
        let ctl = dir.join("bird.ctl");
        let log = dir.join("bird.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "bird", "-f", "-c", path, "-s"])
            .arg(&ctl)
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting bird")?;
        let mut bird = Self { child, ctl, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while bird.birdc(&["show", "status"]).is_err() {
            if let Some(status) = bird.child.try_wait()? {
                bail!("bird exited with {status}: {}", bird.log_text());
            }
            if Instant::now() > deadline {
                bail!("bird did not answer within 10 s: {}", bird.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(bird)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `birdc -s CTL ARGS...`: its output.
    pub fn birdc(&self, args: &[&str]) -> anyhow::Result<String> {
        let ctl = self.ctl.to_str().context("utf-8 path")?;
        let mut full = vec!["birdc", "-s", ctl];
        full.extend_from_slice(args);
        crate::netns::sh(&full)
    }

    /// The BGP sessions that are Established.
    pub fn established(&self) -> anyhow::Result<usize> {
        Ok(self
            .birdc(&["show", "protocols"])?
            .lines()
            .filter(|l| l.contains(" BGP ") && l.contains("Established"))
            .count())
    }

    /// SIGKILL, as in a crash; the drop does nothing more.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One balancer node: `xlb run` and BIRD in its namespace, its bpffs.
/// Fields drop in order: the daemon, BIRD, the bpffs, the namespace.
pub struct Node {
    pub daemon: Option<Daemon>,
    pub bird: Option<Bird>,
    pub bpffs: Bpffs,
    pub host: Host,
    /// Its port on the switch's bridge (`n21`...).
    pub port: String,
    /// `http://198.18.0.<last>:9470`: /metrics and /api/status.
    pub url: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Further `xlb run` arguments (the fleet store's, a bake window).
    pub args: Vec<String>,
}

impl Node {
    /// The running daemon.
    pub fn daemon(&self) -> anyhow::Result<&Daemon> {
        self.daemon
            .as_ref()
            .with_context(|| format!("node {} runs no daemon", self.host.name))
    }

    /// `xlb run` on this node with its config, announcing into [`TABLE`].
    pub fn start_daemon(&mut self) -> anyhow::Result<()> {
        let metrics = format!("{}:9470", self.host.v4);
        // A short hold-down after every backend was down, and a short
        // grace on SIGTERM: the tests wait for both.
        let mut args = vec![
            "--bpffs",
            self.bpffs.arg(),
            "--metrics-address",
            &metrics,
            "--announce-table",
            TABLE,
            "--announce-hold",
            ANNOUNCE_HOLD,
            "--withdraw-grace",
            "1s",
        ];
        args.extend(self.args.iter().map(String::as_str));
        self.daemon = Some(Daemon::start_with(
            &self.host.ns,
            &self.config,
            &self.dir,
            &args,
        )?);
        Ok(())
    }

    /// `xlb ARGS...` against this node's daemon: exit code and output.
    pub fn xlb(&self, args: &[&str]) -> anyhow::Result<(i32, String)> {
        let out = self.daemon()?.xlb(args)?;
        Ok((
            out.status.code().context("xlb killed by a signal")?,
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ))
    }

    /// New flows of VIP `vip` this node has steered since it started.
    pub fn new_flows(&self, vip: &str) -> anyhow::Result<u64> {
        let status = self.daemon()?.status()?;
        status["vips"]
            .as_array()
            .context("status has no vips")?
            .iter()
            .find(|v| v["name"] == vip)
            .and_then(|v| v["new_flows"].as_u64())
            .with_context(|| format!("node {}: no VIP {vip} in the status", self.host.name))
    }

    /// The announced routes in [`TABLE`].
    pub fn announced(&self) -> anyhow::Result<String> {
        Ok(self.host.ns.ip(&["route", "show", "table", TABLE])?
            + &self.host.ns.ip(&["-6", "route", "show", "table", TABLE])?)
    }
}

/// What a node's config says: its hash seed and the backends' weights.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub hash_seed: u32,
    pub weights: [u32; 3],
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            hash_seed: 1,
            weights: [1, 1, 2],
        }
    }
}

/// How the nodes forward to the backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Forwarding {
    /// L2 DSR: the backend's MAC, the frame bounced out (`XDP_TX`).
    #[default]
    Dsr,
    /// IPIP to the backend's address; the backends run `xlb decap`.
    Ipip,
    /// GUE to [`GUE_PORT`]; the backends run `xlb decap --gue-port`.
    Gue,
}

impl Forwarding {
    /// The VIPs' `forwarding = ...` value; None for L2 DSR (the default, no
    /// key written).
    pub fn method(self) -> Option<&'static str> {
        match self {
            Self::Dsr => None,
            Self::Ipip => Some("ipip"),
            Self::Gue => Some("gue"),
        }
    }
}

/// The nodes' `[tunnel]` outer source prefixes (the flow hash fills their
/// host bits): the backends' `xlb decap --from`.
pub const TUNNEL_SOURCE_V4: &str = "198.18.200.0/24";
pub const TUNNEL_SOURCE_V6: &str = "2001:db8:ff::/96";
/// The GUE port of the nodes and the backends (not the default 6080, so
/// both must take the configured one).
pub const GUE_PORT: u16 = 7080;

/// The fleet's config for one node: VIPs `web` (198.18.100.1:8080) and
/// `web6` ([2001:db8:100::1]:8080) over b1..b3, health-checked on
/// [`HEALTH_PORT`] every 300 ms (down after 2 failures, up after 2 passes).
pub fn config(node: &NodeConfig) -> String {
    config_of(node.hash_seed, &node.weights)
}

/// [`config`] with backends b1.. at `weights` (fewer than three: b3 and
/// after removed).
pub fn config_of(hash_seed: u32, weights: &[u32]) -> String {
    config_forwarding(hash_seed, weights, Forwarding::Dsr)
}

/// [`config_of`] with every VIP forwarding by `forwarding`: for IPIP and
/// GUE a `[tunnel]` section ([`TUNNEL_SOURCE_V4`], [`TUNNEL_SOURCE_V6`],
/// [`GUE_PORT`]) and backends without a MAC (the nodes' neighbour tables
/// name the next hop).
pub fn config_forwarding(hash_seed: u32, weights: &[u32], forwarding: Forwarding) -> String {
    let mut out = format!(
        "interface = \"eth0\"\nhash_seed = {}\n\n[health]\nkind = \"tcp\"\nport = {HEALTH_PORT}\n\
         interval = \"300ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\nflap_limit = 0\n",
        hash_seed
    );
    let method = forwarding.method();
    if method.is_some() {
        out.push_str(&format!(
            "\n[tunnel]\nsource_v4 = \"{TUNNEL_SOURCE_V4}\"\nsource_v6 = \"{TUNNEL_SOURCE_V6}\"\n\
             gue_port = {GUE_PORT}\n"
        ));
    }
    for (name, vip) in [("web", IpAddr::V4(VIP4)), ("web6", IpAddr::V6(VIP6))] {
        out.push_str(&format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{vip}\"\nport = {TCP_PORT}\nprotocol = \"tcp\"\n"
        ));
        let backends = testbed::backend_sections(weights, vip.is_ipv6());
        match method {
            None => out.push_str(&backends),
            Some(method) => {
                out.push_str(&format!("forwarding = \"{method}\"\n"));
                for line in backends.lines().filter(|l| !l.starts_with("mac = ")) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// Health ports on the backends that can be closed and opened again: a
/// closed port refuses connections, so the nodes' checks fail.
pub struct HealthPorts {
    up: Vec<Arc<AtomicBool>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// Listen on [`HEALTH_PORT`] while `up`, accept and close; closed while not.
fn health_port(up: Arc<AtomicBool>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut listener: Option<std::net::TcpListener> = None;
    while !stop.load(Ordering::Relaxed) {
        if up.load(Ordering::Relaxed) {
            if listener.is_none() {
                let l = std::net::TcpListener::bind(SocketAddr::from((
                    std::net::Ipv6Addr::UNSPECIFIED,
                    HEALTH_PORT,
                )))?;
                l.set_nonblocking(true)?;
                listener = Some(l);
            }
            if let Some(l) = &listener {
                while let Ok((conn, _)) = l.accept() {
                    drop(conn);
                }
            }
        } else {
            listener = None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

impl HealthPorts {
    pub fn start(backends: &[Host]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let up: Vec<_> = backends
            .iter()
            .map(|_| Arc::new(AtomicBool::new(true)))
            .collect();
        let threads = backends
            .iter()
            .zip(&up)
            .map(|(b, up)| {
                let (up, stop) = (up.clone(), stop.clone());
                b.ns.spawn(move || health_port(up, stop))
            })
            .collect();
        Self { up, stop, threads }
    }

    /// Open (`true`) or close backend `i`'s health port.
    pub fn set(&self, i: usize, up: bool) {
        self.up[i].store(up, Ordering::Relaxed);
    }
}

impl Drop for HealthPorts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The whole fleet; dropping it stops every process and removes every
/// namespace (fields drop in declaration order).
pub struct Fleet {
    pub nodes: Vec<Node>,
    /// The fleet's store, when the nodes join one ([`Spec::store`]).
    pub etcd: Option<Etcd>,
    pub store: Option<Store>,
    pub etcd_host: Option<Host>,
    pub router_bird: Bird,
    _echo: Option<EchoServers>,
    pub health: HealthPorts,
    /// `xlb decap` on every backend when the nodes tunnel (in backend
    /// order), empty for L2 DSR.
    pub decaps: Vec<DecapProcess>,
    pub backends: Vec<Host>,
    pub client: Netns,
    pub router: Netns,
    _peer_program: aya::Ebpf,
    pub switch: Netns,
    pub dir: PathBuf,
}

/// The router's next hops for `vip` (none when it has no route).
pub fn next_hops(router: &Netns, vip: IpAddr) -> anyhow::Result<Vec<IpAddr>> {
    let family = if vip.is_ipv6() { "-6" } else { "-4" };
    let text = router.ip(&[family, "route", "show", &vip.to_string()])?;
    let mut hops = Vec::new();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "via" {
            let hop = words.next().context("`via` without an address")?;
            hops.push(hop.parse().with_context(|| format!("next hop {hop:?}"))?);
        }
    }
    Ok(hops)
}

/// What a fleet is built with.
pub struct Spec {
    /// Backends b1..bN (198.18.0.11...), each with a health port.
    pub backends: usize,
    /// Echo servers on the backends' [`TCP_PORT`] (false: the caller serves
    /// it, as the incident replay's login servers do).
    pub echo: bool,
    /// One config text per node.
    pub configs: [String; 3],
    /// Further `xlb run` arguments of every node.
    pub node_args: Vec<String>,
    /// A fleet name: etcd (TLS, client certificates) runs at [`ETCD`] and
    /// every node joins that fleet as `n21`, `n22`, `n23`.
    pub store: Option<String>,
    /// The VIP addresses the router must have three next hops for before
    /// the fleet is ready.
    pub announced: Vec<IpAddr>,
}

impl Spec {
    /// Three backends with echo servers, one config per node, alone.
    pub fn alone(configs: [NodeConfig; 3]) -> Self {
        Self {
            backends: 3,
            echo: true,
            configs: configs.map(|c| config(&c)),
            node_args: Vec::new(),
            store: None,
            announced: vec![IpAddr::V4(VIP4), IpAddr::V6(VIP6)],
        }
    }
}

impl Fleet {
    /// Build the fleet with one config per node, start BIRD everywhere and
    /// the nodes' daemons, and wait until the router has every VIP with
    /// three next hops (bounded: 30 s).
    pub fn new(prefix: &str, dir: &Path, configs: [NodeConfig; 3]) -> anyhow::Result<Self> {
        Self::build(prefix, dir, Spec::alone(configs))
    }

    /// Build the fleet `spec` describes; as [`Fleet::new`].
    pub fn build(prefix: &str, dir: &Path, spec: Spec) -> anyhow::Result<Self> {
        Self::build_with(prefix, dir, spec, Forwarding::Dsr)
    }

    /// [`Fleet::build`] for nodes forwarding by `forwarding` (their configs,
    /// [`config_forwarding`], say the same). For IPIP and GUE every backend
    /// runs `xlb decap` (from the nodes' [`TUNNEL_SOURCE_V4`] and
    /// [`TUNNEL_SOURCE_V6`], GUE on [`GUE_PORT`]), and every node forwards
    /// and has a neighbour entry for each backend address, as
    /// `bpf_fib_lookup` needs ([`crate::tunnel::route_to_backends`]).
    pub fn build_with(
        prefix: &str,
        dir: &Path,
        spec: Spec,
        forwarding: Forwarding,
    ) -> anyhow::Result<Self> {
        let switch = Netns::new(&format!("{prefix}-sw"))?;
        switch.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;

        // The router: eth0 on the bridge (198.18.0.1), eth1 to the client.
        let router = testbed::host(prefix, &switch, "r", 1)?;
        let client = Netns::new(&format!("{prefix}-client"))?;
        client.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        client.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        router.ns.ip(&[
            "link",
            "add",
            "eth1",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &client.name,
        ])?;
        router
            .ns
            .ip(&["addr", "add", "198.18.1.1/24", "dev", "eth1"])?;
        router.ns.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "eth1",
            "nodad",
        ])?;
        router.ns.ip(&["link", "set", "eth1", "up"])?;
        client.ip(&["addr", "add", "198.18.1.2/24", "dev", "eth0"])?;
        client.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:1::2/64",
            "dev",
            "eth0",
            "nodad",
        ])?;
        client.ip(&["link", "set", "eth0", "up"])?;
        client.ip(&["route", "add", "default", "via", "198.18.1.1"])?;
        client.ip(&["-6", "route", "add", "default", "via", "2001:db8:1::1"])?;
        // Frames the nodes bounce with XDP_TX lose the checksum-offload
        // metadata: the client sends full checksums (TESTBED.md), and so do
        // the router's ports.
        client.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
        for iface in ["eth0", "eth1"] {
            router.ns.exec(&["ethtool", "-K", iface, "tx", "off"])?;
        }
        router.ns.sysctl("net.ipv4.ip_forward", "1")?;
        router.ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        // ECMP on the L4 ports, not only the addresses.
        router
            .ns
            .sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        router
            .ns
            .sysctl("net.ipv6.fib_multipath_hash_policy", "1")?;

        let mut backends = Vec::new();
        for i in 0..spec.backends {
            let b = testbed::backend(prefix, &switch, i)?;
            b.ns.ip(&["route", "add", "default", "via", "198.18.0.1"])?;
            b.ns.ip(&["-6", "route", "add", "default", "via", "2001:db8::1"])?;
            backends.push(b);
        }
        let echo = if spec.echo {
            Some(EchoServers::start(&backends, TCP_PORT)?)
        } else {
            None
        };
        let health = HealthPorts::start(&backends);
        let mut decaps = Vec::new();
        if forwarding.method().is_some() {
            for b in &backends {
                decaps.push(DecapProcess::start_for(
                    &b.ns,
                    dir,
                    "eth0",
                    GUE_PORT,
                    &[TUNNEL_SOURCE_V4, TUNNEL_SOURCE_V6],
                )?);
            }
        }
        let (etcd_host, etcd, store) = match &spec.store {
            Some(fleet) => {
                let certs = dir.join("certs");
                etcd::certificates(&certs)?;
                let host = testbed::host(prefix, &switch, "etcd", 5)?;
                // The client (behind the router) runs CLIs too.
                host.ns
                    .ip(&["route", "add", "default", "via", "198.18.0.1"])?;
                let etcd = Etcd::start(&host.ns, dir, &certs)?;
                let store = Store {
                    certs,
                    fleet: fleet.clone(),
                };
                (Some(host), Some(etcd), Some(store))
            }
            None => (None, None, None),
        };

        let router_bird = Bird::start(&router.ns, ROUTER_BIRD, &dir.join("router"))?;

        let mut nodes = Vec::new();
        for (last, node_config) in NODES.into_iter().zip(spec.configs) {
            let port = format!("n{last}");
            let host = testbed::host(prefix, &switch, &port, last)?;
            let node_dir = dir.join(&port);
            std::fs::create_dir_all(&node_dir)?;
            let bpffs = Bpffs::mount(&node_dir.join("bpffs"))?;
            let config_path = node_dir.join("xlb.toml");
            std::fs::write(&config_path, node_config)?;
            let mut args = spec.node_args.clone();
            if let Some(store) = &store {
                args.extend(["--fleet".to_string(), store.url()]);
                args.extend(["--node".to_string(), port.clone()]);
                args.extend(store.tls());
            }
            if forwarding.method().is_some() {
                crate::tunnel::route_to_backends(&host.ns, "eth0", &backends)?;
            }
            let bird = Bird::start(&host.ns, &node_bird_conf(last)?, &node_dir.join("bird"))?;
            nodes.push(Node {
                daemon: None,
                bird: Some(bird),
                bpffs,
                url: format!("http://{}:9470", host.v4),
                host,
                port,
                dir: node_dir,
                config: config_path,
                args,
            });
        }
        let ports: Vec<&str> = nodes.iter().map(|n| n.port.as_str()).collect();
        let peer_program = testbed::pass_on_ports(&switch, &ports)?;

        let mut fleet = Self {
            nodes,
            etcd,
            store,
            etcd_host,
            router_bird,
            _echo: echo,
            health,
            decaps,
            backends,
            client,
            router: router.ns,
            _peer_program: peer_program,
            switch,
            dir: dir.to_path_buf(),
        };
        for node in &mut fleet.nodes {
            node.start_daemon()?;
        }
        for vip in spec.announced {
            fleet.wait_next_hops(vip, 3, Duration::from_secs(30))?;
        }
        Ok(fleet)
    }

    /// The router's next hops for `vip`.
    pub fn next_hops(&self, vip: IpAddr) -> anyhow::Result<Vec<IpAddr>> {
        next_hops(&self.router, vip)
    }

    /// Wait (polling every 5 ms, at most `limit`) until the router has `n`
    /// next hops for `vip`; how long it took.
    pub fn wait_next_hops(
        &self,
        vip: IpAddr,
        n: usize,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let begun = Instant::now();
        loop {
            let hops = self.next_hops(vip)?;
            if hops.len() == n {
                return Ok(begun.elapsed());
            }
            if begun.elapsed() > limit {
                bail!(
                    "the router has {} next hops for {vip} after {limit:?}, not {n}: {hops:?}\n{}",
                    hops.len(),
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// BGP and route state of the router and every node, for a failure's
    /// message.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "router protocols:\n{}",
            self.router_bird
                .birdc(&["show", "protocols"])
                .unwrap_or_else(|e| e.to_string())
        );
        for n in &self.nodes {
            out.push_str(&format!(
                "node {} table {TABLE}:\n{}",
                n.host.name,
                n.announced().unwrap_or_else(|e| e.to_string())
            ));
        }
        out
    }

    /// Cut node `i` off, as a host that hangs or a link that dies behind
    /// the switch: its bridge port is set to STP state `disabled`, so no
    /// frame goes in or out. The bridge keeps the node's MAC in its table,
    /// so frames for it are dropped, not flooded to the other nodes (whose
    /// XDP programs would take them: a veth has no MAC filter before XDP).
    /// Taking the port *down* would flush the MAC and flood. The router's
    /// own interface stays up: only BFD (or the hold timer) finds out.
    pub fn cut(&self, i: usize) -> anyhow::Result<()> {
        self.port_state(i, "0")
    }

    /// Node `i`'s port forwarding again.
    pub fn reconnect(&self, i: usize) -> anyhow::Result<()> {
        self.port_state(i, "3")
    }

    fn port_state(&self, i: usize, state: &str) -> anyhow::Result<()> {
        self.switch
            .exec(&[
                "bridge",
                "link",
                "set",
                "dev",
                &self.nodes[i].port,
                "state",
                state,
            ])
            .map(drop)
    }

    /// Cut node `i` off from the fleet's store and nothing else: etcd's
    /// host drops what it sends to the node (a partition: the node's
    /// requests go unanswered and time out).
    pub fn cut_from_store(&self, i: usize) -> anyhow::Result<()> {
        self.store_route(i, "add")
    }

    /// Node `i` reaches the store again.
    pub fn reconnect_to_store(&self, i: usize) -> anyhow::Result<()> {
        self.store_route(i, "del")
    }

    fn store_route(&self, i: usize, op: &str) -> anyhow::Result<()> {
        let host = self.etcd_host.as_ref().context("this fleet has no store")?;
        let node = format!("{}/32", self.nodes[i].host.v4);
        host.ns.ip(&["route", op, "blackhole", &node]).map(drop)
    }

    /// The store's CLI helper (a fleet built with [`Spec::store`]).
    pub fn store(&self) -> anyhow::Result<&Store> {
        self.store.as_ref().context("this fleet has no store")
    }

    /// The nodes' status URLs.
    /// `n` long-lived connections from the client to `target`, each
    /// exchanging every 200 ms for at most `max_life`; all established
    /// (bounded: 20 s).
    pub fn long_lived(
        &self,
        target: SocketAddr,
        n: usize,
        max_life: Duration,
    ) -> anyhow::Result<crate::echo::LongConnections> {
        let pace = crate::echo::Pace {
            gap: Duration::from_millis(200),
            stall: Duration::from_secs(8),
            max_life,
        };
        let long = crate::echo::LongConnections::open(
            &self.client,
            &vec![target; n],
            pace,
            Duration::from_millis(5),
        );
        ensure!(
            long.wait_settled(Duration::from_secs(20)),
            "the long-lived connections were not all established within 20 s"
        );
        Ok(long)
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// `xlb -o FORMAT fleet status URL...` over every node, run in node 0's
    /// namespace: exit code and output.
    pub fn fleet_status(&self, format: &str) -> anyhow::Result<(i32, String)> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.nodes[0].host.ns.name])
            .arg(xlb_binary()?)
            .args(["-o", format, "fleet", "status"])
            .args(self.urls())
            .stdin(Stdio::null())
            .output()?;
        Ok((
            out.status.code().context("xlb killed by a signal")?,
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ))
    }

    /// Each node's new flows of VIP `vip` so far.
    pub fn new_flows(&self, vip: &str) -> anyhow::Result<Vec<u64>> {
        self.nodes.iter().map(|n| n.new_flows(vip)).collect()
    }
}

/// One short connection through the VIP: when it started, how long it
/// took, and the backend that answered (or why it failed).
#[derive(Clone, Debug)]
pub struct Attempt {
    pub started: Instant,
    pub took: Duration,
    pub result: Result<String, String>,
}

/// `n` short connections to `target` from `workers` threads in `client`.
pub fn connections(
    client: &Netns,
    target: SocketAddr,
    n: usize,
    workers: usize,
) -> anyhow::Result<Vec<Attempt>> {
    let per = n.div_ceil(workers);
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            client.spawn(move || {
                Ok((0..per)
                    .map(|_| attempt(target, Duration::from_secs(3)))
                    .collect::<Vec<_>>())
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"))??,
        );
    }
    Ok(out)
}

fn attempt(target: SocketAddr, timeout: Duration) -> Attempt {
    let started = Instant::now();
    let result = crate::echo::probe(target, timeout).map(|(_, name)| name);
    Attempt {
        started,
        took: started.elapsed(),
        result,
    }
}

/// A steady stream of new connections from `client` until stopped: `workers`
/// threads, each about `per_second / workers` a second, so that a slow
/// connection (a lost SYN waits 1 s) does not hold the others back. Bounded
/// at `max`.
pub struct Stream {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<Vec<Attempt>>>>,
}

impl Stream {
    pub fn start(
        client: &Netns,
        target: SocketAddr,
        per_second: u32,
        workers: u32,
        max: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let gap = Duration::from_secs(1) * workers / per_second.max(1);
        let threads = (0..workers)
            .map(|w| {
                let flag = stop.clone();
                client.spawn(move || {
                    let begun = Instant::now();
                    // Spread the workers' starts over one gap.
                    let mut next = begun + gap * w / workers.max(1);
                    let mut out = Vec::new();
                    while !flag.load(Ordering::Relaxed) && begun.elapsed() < max {
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        out.push(attempt(target, Duration::from_secs(3)));
                        next += gap;
                    }
                    Ok(out)
                })
            })
            .collect();
        Self { stop, threads }
    }

    /// Stop, and every attempt of every worker.
    pub fn finish(mut self) -> anyhow::Result<Vec<Attempt>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for t in self.threads.drain(..) {
            out.extend(
                t.join()
                    .map_err(|_| anyhow::anyhow!("stream thread panicked"))??,
            );
        }
        Ok(out)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a stream of new connections saw around an event.
#[derive(Debug, Default)]
pub struct StreamReport {
    pub attempts: usize,
    /// Failed outright (refused, reset, no answer within 3 s).
    pub failed: usize,
    /// Succeeded, but only after a SYN retransmission (took 900 ms or more):
    /// their first SYN went to a node that was gone.
    pub delayed: usize,
    /// The failures, with their start relative to the event.
    pub failures: Vec<(f64, String)>,
}

impl StreamReport {
    pub fn of(attempts: &[Attempt], event: Instant) -> Self {
        let mut r = Self {
            attempts: attempts.len(),
            ..Self::default()
        };
        for a in attempts {
            let at = if a.started >= event {
                (a.started - event).as_secs_f64()
            } else {
                -(event - a.started).as_secs_f64()
            };
            match &a.result {
                Err(e) => {
                    r.failed += 1;
                    r.failures.push((at, e.clone()));
                }
                Ok(_) if a.took >= Duration::from_millis(900) => r.delayed += 1,
                Ok(_) => {}
            }
        }
        r
    }
}
