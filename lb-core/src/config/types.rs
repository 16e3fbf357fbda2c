//! The validated configuration: what the rest of xlb works from. Every value
//! here has passed `validate`; nothing downstream re-checks it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

pub use crate::detect::Thresholds;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    /// Network interface the balancer attaches to.
    pub interface: String,
    /// Fleet-wide seed of the flow hash and of Maglev's permutations.
    pub hash_seed: u32,
    /// Where the daemon serves /metrics, the status page and /api/status.
    pub metrics_address: SocketAddr,
    /// Connection-table entries. Fixed while the program runs: the map is
    /// sized when the daemon loads it.
    pub conn_table_size: u32,
    /// What happens to ICMP echo requests to a VIP address.
    pub icmp_echo: IcmpEcho,
    /// The default `unhandled` of every VIP.
    pub unhandled: Unhandled,
    /// The default `announce` of every VIP.
    pub announce: Announce,
    /// Settings of IPIP and GUE forwarding (`[tunnel]`).
    pub tunnel: Tunnel,
    /// Shared: a VIP an apply leaves as it was is the same `Arc` in the
    /// configs before and after it (`parse_against`), and in the applied
    /// state's `DesiredVip::config`, so the applied config's VIPs are held
    /// once. Changed through `Arc::make_mut` (or [`Config::vip_mut`]).
    /// Serialized as the VIPs themselves (serde's `rc`).
    pub vips: Vec<Arc<Vip>>,
}

impl Config {
    /// No VIPs on `interface`, every other key at its default: what a
    /// daemon serves before its first apply.
    pub fn empty(interface: String) -> Config {
        Config {
            interface,
            hash_seed: 0,
            metrics_address: DEFAULT_METRICS_ADDRESS,
            conn_table_size: lb_common::maps::CONN_TABLE_SIZE,
            icmp_echo: IcmpEcho::default(),
            unhandled: Unhandled::default(),
            announce: Announce::default(),
            tunnel: Tunnel::default(),
            vips: Vec::new(),
        }
    }

    /// VIP `i` to change: its own copy if another config or state shares it.
    pub fn vip_mut(&mut self, i: usize) -> &mut Vip {
        Arc::make_mut(&mut self.vips[i])
    }

    /// Every VIP to change (each copied first where it is shared).
    pub fn vips_mut(&mut self) -> impl Iterator<Item = &mut Vip> {
        self.vips.iter_mut().map(Arc::make_mut)
    }
}

/// Whether two VIPs are equal: at once when they are the same `Arc` (as an
/// incremental parse leaves an unchanged VIP), else field by field (64
/// backends).
pub fn same_vip(a: &Arc<Vip>, b: &Arc<Vip>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// The metrics address when the config names none: loopback only.
pub const DEFAULT_METRICS_ADDRESS: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9470);

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Vip {
    /// Stable, unique name (metrics label `vip`).
    pub name: String,
    pub address: IpAddr,
    /// 0 takes every port.
    pub port: u16,
    pub protocol: Protocol,
    /// How frames reach the backends.
    pub forwarding: Forwarding,
    /// What of a flow picks its backend.
    pub hash: HashMode,
    /// What happens to packets to the VIP's address that the balancer does
    /// not handle. VIPs sharing an address agree on it (checked).
    pub unhandled: Unhandled,
    /// When a node announces the VIP's address to its routers (through
    /// `xlb run --announce-table`); not part of the fleet fingerprint: it
    /// decides where traffic arrives, not where a flow goes.
    pub announce: Announce,
    /// Maglev table size: a prime.
    pub table_size: u32,
    /// When the imbalance detector calls this VIP's split uneven.
    pub imbalance: Thresholds,
    /// What `xlb plan` lets a change do to this VIP.
    pub safety: Safety,
    /// How its backends are checked (`[health]`, `[vip.health]`).
    pub health: HealthCheck,
    pub backends: Vec<Backend>,
}

/// Per-VIP safety limits of a change (`[safety]` / `[vip.safety]` in the
/// config): `xlb plan` refuses a change that breaks one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Safety {
    /// A backend's predicted share may be at most this multiple of today's.
    pub max_share_growth: f64,
    /// A backend's predicted share may be at most this multiple of its
    /// capacity share.
    pub max_capacity_ratio: f64,
    /// At most this fraction of the VIP's flows may hash to another backend.
    pub max_flows_moved: f64,
    /// At most this fraction of the VIP's active capacity may leave at once.
    pub max_capacity_removed: f64,
}

impl Default for Safety {
    fn default() -> Self {
        Self {
            max_share_growth: 1.5,
            max_capacity_ratio: 1.5,
            max_flows_moved: 0.3,
            max_capacity_removed: 0.5,
        }
    }
}

/// What a check does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CheckKind {
    /// No checks: every backend counts as up.
    None,
    /// A TCP connect to the backend's address and the check port.
    Tcp,
    /// A TCP connect, then `GET path HTTP/1.1` (Host: the backend's address);
    /// the status code must be in `status_min..=status_max`.
    Http {
        path: String,
        status_min: u16,
        status_max: u16,
    },
}

impl CheckKind {
    /// `tcp`, `http`, `none`: as the config spells it.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::None => "none",
            CheckKind::Tcp => "tcp",
            CheckKind::Http { .. } => "http",
        }
    }
}

/// What a VIP's table holds when every checked backend in it is down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllDown {
    /// Keep the whole table, as the config builds it: traffic goes on to the
    /// backends the checks call down (a check that fails for everyone is
    /// more likely wrong than every backend dead).
    #[default]
    FailOpen,
    /// Drop the VIP's new flows (the table names no backend; counted as
    /// `no_backend`).
    FailClosed,
}

impl AllDown {
    pub const ALL: [AllDown; 2] = [AllDown::FailOpen, AllDown::FailClosed];
}

impl fmt::Display for AllDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllDown::FailOpen => "fail_open",
            AllDown::FailClosed => "fail_closed",
        })
    }
}

/// One VIP's health check, resolved (defaults and overrides merged).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// The port checked on each backend: the VIP's port unless `port` is
    /// set; never 0 when `kind` is not `None` (0 then).
    pub port: u16,
    pub interval_seconds: f64,
    /// A check that has not finished after this fails; at most the interval.
    pub timeout_seconds: f64,
    /// Consecutive successes that bring a down backend back.
    pub rise: u32,
    /// Consecutive failures that take an up backend out.
    pub fall: u32,
    /// A backend that went down this many times within `flap_window` is
    /// flapping: it must pass every check for `flap_hold` (and `rise`
    /// checks) before it comes back. 0: no damping.
    pub flap_limit: u32,
    pub flap_window_seconds: f64,
    pub flap_hold_seconds: f64,
    pub all_down: AllDown,
}

impl Default for HealthCheck {
    /// No checks; the other values are the defaults a `[health]` table gets.
    fn default() -> Self {
        Self {
            kind: CheckKind::None,
            port: 0,
            interval_seconds: 2.0,
            timeout_seconds: 1.0,
            rise: 2,
            fall: 3,
            flap_limit: 3,
            flap_window_seconds: 60.0,
            flap_hold_seconds: 30.0,
            all_down: AllDown::FailOpen,
        }
    }
}

impl HealthCheck {
    /// The backends of this VIP are checked.
    pub fn enabled(&self) -> bool {
        self.kind != CheckKind::None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backend {
    /// Stable name, unique within the VIP; Maglev tables depend on it.
    pub name: String,
    pub address: IpAddr,
    /// The backend's MAC (L2 DSR). All zeros for a backend of an IPIP or GUE
    /// VIP that names none: the next hop comes from the kernel's FIB.
    pub mac: MacAddr,
    /// At least 1. Taking a backend out is a `state`, not weight 0.
    pub weight: u32,
    /// Relative capacity (> 0; the weight when not given): the backend's
    /// capacity share is capacity / the sum over the VIP's active backends.
    pub capacity: f64,
    pub state: BackendState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// In the Maglev table.
    Active,
    /// Takes no new flows (out of the table); keeps existing ones once a
    /// connection table exists.
    Draining,
    /// Out of the table.
    Disabled,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// How a VIP's frames reach its backends (`forwarding`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// L2 direct server return: only the Ethernet addresses change; the
    /// backend shares the balancer's L2 segment and holds the VIP.
    #[default]
    Dsr,
    /// IP-in-IP to the backend's address.
    Ipip,
    /// GUE (IP in UDP) to the backend's address, so its NIC spreads flows.
    Gue,
}

/// What of a flow the Maglev hash covers (`hash`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashMode {
    /// Addresses, ports and protocol.
    #[default]
    FiveTuple,
    /// The client's address only: every flow of a client to one backend.
    Source,
    /// Addresses and protocol, not ports: meant for UDP services whose
    /// clients change source ports.
    NoPorts,
}

/// ICMP echo requests to VIP addresses (`icmp_echo`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IcmpEcho {
    /// The XDP program answers them.
    #[default]
    Reply,
    /// They go on to the host's stack.
    Pass,
}

/// Packets to a VIP address that the balancer's parser does not handle
/// (`unhandled`): IPv6 extension headers other than one fragment header, a
/// second VLAN tag, later fragments whose first was not seen, ICMP other
/// than echo requests and "fragmentation needed" / "packet too big".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unhandled {
    /// The XDP program drops them (counted by reason).
    #[default]
    Drop,
    /// They go on to the host's stack (counted by reason).
    Pass,
}

/// When a node announces a VIP's address over BGP (`announce`): the
/// daemon keeps a route for each announced address in its
/// `--announce-table`, which the node's BIRD exports (deploy/bird/).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Announce {
    /// While at least one active backend is up (with a hold-down after a
    /// withdrawal, so a flapping backend does not flap the route).
    #[default]
    Healthy,
    /// Whenever the daemon serves it, whatever its backends' health.
    Always,
    /// Never: traffic reaches it only through routes made elsewhere.
    Never,
}

impl Announce {
    pub const ALL: [Announce; 3] = [Announce::Healthy, Announce::Always, Announce::Never];
}

impl fmt::Display for Announce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Announce::Healthy => "healthy",
            Announce::Always => "always",
            Announce::Never => "never",
        })
    }
}

impl Unhandled {
    pub const ALL: [Unhandled; 2] = [Unhandled::Drop, Unhandled::Pass];
}

impl fmt::Display for Unhandled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unhandled::Drop => "drop",
            Unhandled::Pass => "pass",
        })
    }
}

/// `[tunnel]`: how IPIP and GUE frames are built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tunnel {
    /// Outer IPv4 source prefix; the flow hash fills its host bits.
    pub source_v4: Option<Ipv4Prefix>,
    /// Outer IPv6 source prefix (/96 to /128); the flow hash fills the host
    /// bits, all within the last 32.
    pub source_v6: Option<Ipv6Prefix>,
    /// GUE destination port.
    pub gue_port: u16,
    /// Next hop when the kernel's FIB cannot name one.
    pub gateway_mac: Option<MacAddr>,
}

impl Default for Tunnel {
    fn default() -> Self {
        Self {
            source_v4: None,
            source_v6: None,
            gue_port: lb_common::DEFAULT_GUE_PORT,
            gateway_mac: None,
        }
    }
}

/// An IPv4 prefix whose host bits are zero: `198.18.200.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Prefix {
    pub addr: Ipv4Addr,
    /// 0 to 32.
    pub len: u8,
}

/// An IPv6 prefix whose host bits are zero: `2001:db8:ff::/96`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Prefix {
    pub addr: Ipv6Addr,
    /// 96 to 128 (validated): the host bits fit in the last 32.
    pub len: u8,
}

/// The host bits of a prefix of `len` bits within a 32-bit word, in network
/// byte order: /24 -> 0.0.0.255, /32 -> 0, /0 -> 255.255.255.255.
fn host_bits(len: u8) -> [u8; 4] {
    u32::MAX
        .checked_shr(u32::from(len))
        .unwrap_or(0)
        .to_be_bytes()
}

impl Ipv4Prefix {
    /// The bits the flow hash fills (network byte order).
    pub fn hostmask(&self) -> [u8; 4] {
        host_bits(self.len)
    }
}

impl Ipv6Prefix {
    /// The bits of the last four bytes the flow hash fills (network byte
    /// order): /96 -> ff.ff.ff.ff, /120 -> 0.0.0.ff, /128 -> 0.
    pub fn hostmask(&self) -> [u8; 4] {
        host_bits(self.len.saturating_sub(96))
    }
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::PROTO_TCP,
            Protocol::Udp => lb_common::PROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl Forwarding {
    /// Every value, as the config spells it.
    pub const ALL: [Forwarding; 3] = [Forwarding::Dsr, Forwarding::Ipip, Forwarding::Gue];

    /// `lb_common::METHOD_*`.
    pub fn method(self) -> u8 {
        match self {
            Forwarding::Dsr => lb_common::METHOD_L2_DSR,
            Forwarding::Ipip => lb_common::METHOD_IPIP,
            Forwarding::Gue => lb_common::METHOD_GUE,
        }
    }

    /// The backend's address is a tunnel's destination.
    pub fn tunnels(self) -> bool {
        self != Forwarding::Dsr
    }
}

impl HashMode {
    pub const ALL: [HashMode; 3] = [HashMode::FiveTuple, HashMode::Source, HashMode::NoPorts];

    /// `lb_common::HASH_*`.
    pub fn code(self) -> u8 {
        match self {
            HashMode::FiveTuple => lb_common::HASH_FIVE_TUPLE,
            HashMode::Source => lb_common::HASH_SOURCE,
            HashMode::NoPorts => lb_common::HASH_NO_PORTS,
        }
    }
}

impl IcmpEcho {
    pub const ALL: [IcmpEcho; 2] = [IcmpEcho::Reply, IcmpEcho::Pass];
}

impl fmt::Display for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forwarding::Dsr => "dsr",
            Forwarding::Ipip => "ipip",
            Forwarding::Gue => "gue",
        })
    }
}

impl fmt::Display for HashMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HashMode::FiveTuple => "five_tuple",
            HashMode::Source => "source",
            HashMode::NoPorts => "no_ports",
        })
    }
}

impl fmt::Display for IcmpEcho {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IcmpEcho::Reply => "reply",
            IcmpEcho::Pass => "pass",
        })
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Ipv4Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Ipv6Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Active => "active",
            BackendState::Draining => "draining",
            BackendState::Disabled => "disabled",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl MacAddr {
    /// Six pairs of hex digits separated by ':'.
    pub fn parse(text: &str) -> Option<MacAddr> {
        let mut out = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut out {
            let part = parts.next()?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some(MacAddr(out))
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// As it serializes: six pairs of hex digits separated by ':'.
impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        MacAddr::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a MAC address (six pairs of hex digits separated by ':')"
            ))
        })
    }
}

impl Vip {
    /// Backends that belong in the Maglev table.
    /// `backend`'s capacity over the capacities of the VIP's active
    /// backends (0 when it is not active): the share of new flows it can
    /// take, which `max_capacity_ratio` bounds (plan, bake, simulate).
    pub fn capacity_share(&self, backend: &Backend) -> f64 {
        Self::capacity_share_of(backend, self.capacity_total())
    }

    /// The capacity of the table backends, summed (in file order).
    pub fn capacity_total(&self) -> f64 {
        self.table_backends().map(|b| b.capacity).sum()
    }

    /// [`Vip::capacity_share`] with the VIP's `capacity_total` known.
    pub fn capacity_share_of(backend: &Backend, total: f64) -> f64 {
        if backend.state != BackendState::Active {
            return 0.0;
        }
        if total > 0.0 {
            backend.capacity / total
        } else {
            0.0
        }
    }

    pub fn table_backends(&self) -> impl Iterator<Item = &Backend> {
        self.backends
            .iter()
            .filter(|b| b.state == BackendState::Active)
    }

    /// `198.18.0.10:80/tcp`, `[2001:db8::10]:*/udp`.
    pub fn endpoint(&self) -> String {
        let port = if self.port == 0 {
            "*".to_string()
        } else {
            self.port.to_string()
        };
        match self.address {
            IpAddr::V4(a) => format!("{a}:{port}/{}", self.protocol),
            IpAddr::V6(a) => format!("[{a}]:{port}/{}", self.protocol),
        }
    }
}
