//! The namespace testbed of TESTBED.md: a "switch" namespace with a bridge,
//! and client, load-balancer and backend namespaces each on a bridge port.
//! The client routes the VIPs via the LB; the LB's XDP program rewrites the
//! MACs and bounces frames (XDP_TX) to a backend; backends hold the VIPs on
//! `lo` and answer the client directly (L2 direct server return).
//!
//! Addresses: 198.18.0.0/24 and 2001:db8::/64 on the wire, VIPs 198.18.100.1
//! and 2001:db8:100::1, as in examples/xlb.toml.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context as _;

use crate::netns::Netns;

pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 8053;
pub const LB_MAC: &str = "02:00:00:00:00:02";

/// One host: its namespace and addresses.
pub struct Host {
    pub name: String,
    pub ns: Netns,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub mac: String,
}

/// Everything the testbed made; dropping it removes it all.
pub struct Testbed {
    pub client: Host,
    pub lb: Host,
    pub backends: Vec<Host>,
    /// Holds the XDP_PASS program on the LB's switch port (TESTBED.md: the
    /// peer of a veth that sends XDP_TX frames needs an XDP program).
    _peer_program: aya::Ebpf,
    /// Last, so the ports go after the hosts.
    pub switch: Netns,
}

/// A host `<prefix>-<name>` whose eth0 is a port `name` of the switch's br0,
/// with 198.18.0.<last>/24, 2001:db8::<last>/64 and MAC 02:00:00:00:00:<last>.
pub fn host(prefix: &str, switch: &Netns, name: &str, last: u8) -> anyhow::Result<Host> {
    let ns = Netns::new(&format!("{prefix}-{name}"))?;
    // No duplicate address detection: addresses are usable at once.
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
    ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
    // `last` is written as decimal digits in every address: host 11 is
    // 198.18.0.11, 2001:db8::11 and 02:00:00:00:00:11.
    let mac = format!("02:00:00:00:00:{last:02}");
    switch.ip(&[
        "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ])?;
    switch.ip(&["link", "set", name, "master", "br0", "up"])?;
    ns.ip(&["link", "set", "eth0", "address", &mac, "up"])?;
    let v4 = Ipv4Addr::new(198, 18, 0, last);
    let v6: Ipv6Addr = format!("2001:db8::{last}").parse()?;
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
    Ok(Host {
        name: name.to_string(),
        ns,
        v4,
        v6,
        mac,
    })
}

/// Backend `i` (b1 at .11, b2 at .12, ...): a [`host`] holding both VIPs on
/// `lo`, answering ARP only for its own address (L2 DSR, TESTBED.md).
pub fn backend(prefix: &str, switch: &Netns, i: usize) -> anyhow::Result<Host> {
    let b = host(prefix, switch, &format!("b{}", i + 1), 11 + i as u8)?;
    b.ns.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"])?;
    b.ns.ip(&["-6", "addr", "add", &format!("{VIP6}/128"), "dev", "lo"])?;
    for iface in ["all", "default", "eth0"] {
        b.ns.sysctl(&format!("net.ipv4.conf.{iface}.arp_ignore"), "1")?;
        b.ns.sysctl(&format!("net.ipv4.conf.{iface}.arp_announce"), "2")?;
        b.ns.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "0")?;
    }
    Ok(b)
}

/// xlb_pass attached to the switch's `ports` (the peers of interfaces that
/// send XDP_TX frames need an XDP program, TESTBED.md); held while the value
/// lives.
pub fn pass_on_ports(switch: &Netns, ports: &[&str]) -> anyhow::Result<aya::Ebpf> {
    let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    switch
        .spawn(move || {
            let mut ebpf = aya::Ebpf::load(xlb_dataplane::aux_object())?;
            let prog: &mut aya::programs::Xdp = ebpf
                .program_mut(lb_common::aux::PASS_PROGRAM)
                .context("xlb_pass program")?
                .try_into()?;
            prog.load()?;
            for port in &ports {
                prog.attach(port, aya::programs::XdpMode::Default)
                    .with_context(|| format!("attaching xlb_pass to {port}"))?;
            }
            Ok(ebpf)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("attaching xlb_pass panicked"))?
}

impl Testbed {
    /// Build the testbed with `backends` backends (b1, b2, ... at .11, .12, ...).
    /// The namespaces are `<prefix>-sw-<pid>-<n>`, `<prefix>-client-...`,
    /// `<prefix>-lb-...`, `<prefix>-b1-...` (`Netns::new` makes them unique).
    pub fn new(prefix: &str, backends: usize) -> anyhow::Result<Self> {
        let switch = Netns::new(&format!("{prefix}-sw"))?;
        switch.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;

        let client = host(prefix, &switch, "client", 1)?;
        // Frames the XDP program bounces lose the checksum-offload metadata:
        // the client must send full checksums (TESTBED.md).
        client.ns.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
        switch.exec(&["ethtool", "-K", "client", "tx", "off"])?;
        client
            .ns
            .ip(&["route", "add", "198.18.100.0/24", "via", "198.18.0.2"])?;
        client.ns.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:100::/48",
            "via",
            "2001:db8::2",
        ])?;

        let lb = host(prefix, &switch, "lb", 2)?;

        let mut hosts = Vec::new();
        for i in 0..backends {
            hosts.push(backend(prefix, &switch, i)?);
        }

        let peer_program = pass_on_ports(&switch, &["lb"])?;

        Ok(Self {
            client,
            lb,
            backends: hosts,
            _peer_program: peer_program,
            switch,
        })
    }

    /// The VIP for a family.
    pub fn vip(v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(VIP6)
        } else {
            IpAddr::V4(VIP4)
        }
    }
}

/// A config for this testbed: the three VIPs of examples/xlb.toml with the
/// given weights (one per backend, in order).
pub fn config(weights: &[u32]) -> String {
    let mut out = String::from("interface = \"eth0\"\nhash_seed = 1\n");
    for (name, addr, proto, port, v6) in [
        ("web", VIP4.to_string(), "tcp", TCP_PORT, false),
        ("dns", VIP4.to_string(), "udp", UDP_PORT, false),
        ("web6", VIP6.to_string(), "tcp", TCP_PORT, true),
        ("dns6", VIP6.to_string(), "udp", UDP_PORT, true),
    ] {
        out.push_str(&format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{addr}\"\nport = {port}\nprotocol = \"{proto}\"\n"
        ));
        out.push_str(&backend_sections(weights, v6));
    }
    out
}

/// The `[[vip.backend]]` sections of b1, b2, ... (one per weight, in
/// order) at their IPv4 or IPv6 addresses and MACs.
pub fn backend_sections(weights: &[u32], v6: bool) -> String {
    let mut out = String::new();
    for (i, w) in weights.iter().enumerate() {
        let last = 11 + i;
        let address = if v6 {
            format!("2001:db8::{last}")
        } else {
            format!("198.18.0.{last}")
        };
        out.push_str(&format!(
            "\n[[vip.backend]]\nname = \"b{}\"\naddress = \"{address}\"\nmac = \"02:00:00:00:00:{last:02}\"\nweight = {w}\n",
            i + 1
        ));
    }
    out
}

/// `text` (a config over b1..b3 with `hash_seed = 1`) with capacities
/// 1:1:2 and a 3 s detection window judged from 5 new flows/s, so a bake
/// judges in seconds (tests/bake.rs, tests/rollout.rs).
pub fn with_capacities_and_short_window(text: String) -> String {
    let mut text = text;
    for (b, capacity) in [("b1", 1), ("b2", 1), ("b3", 2)] {
        text = text.replace(
            &format!("name = \"{b}\"\n"),
            &format!("name = \"{b}\"\ncapacity = {capacity}\n"),
        );
    }
    text.replacen(
        "hash_seed = 1\n",
        "hash_seed = 1\n\n[imbalance]\nwindow = \"3s\"\nmin_new_flow_rate = 5\n",
        1,
    )
}
