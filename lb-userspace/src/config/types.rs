//! The validated configuration: what the rest of xlb works from. Every value
//! here has passed `validate`; nothing downstream re-checks it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

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
    pub vips: Vec<Vip>,
}

/// The metrics address when the config names none: loopback only.
pub const DEFAULT_METRICS_ADDRESS: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9470);

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Vip {
    /// Stable, unique name (metrics label `vip`).
    pub name: String,
    pub address: IpAddr,
    /// 0 takes every port.
    pub port: u16,
    pub protocol: Protocol,
    /// Maglev table size: a prime.
    pub table_size: u32,
    /// When the imbalance detector calls this VIP's split uneven.
    pub imbalance: Thresholds,
    /// What `xlb plan` lets a change do to this VIP.
    pub safety: Safety,
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

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendState::Active => "active",
            BackendState::Draining => "draining",
            BackendState::Disabled => "disabled",
        })
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

impl Vip {
    /// Backends that belong in the Maglev table.
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
