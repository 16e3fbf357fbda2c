//! `xlb decap`: the backend side of IPIP and GUE. Loads the `xlb_decap` XDP
//! program (lb-ebpf/src/decap.rs), tells it the host's addresses, the
//! balancers' source prefixes (`--from`) and the GUE port, attaches it to
//! one interface and keeps it there until SIGINT or SIGTERM; then detaches
//! it and reports what it did.
//!
//! The program's maps, key and config layouts are lb-common's (`decap`), as
//! the balancer's are; a test reads the map names and sizes out of the built
//! object.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, MapData, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{Xdp, xdp::XdpLinkId},
};

use crate::AttachMode;
use crate::{DataplaneError, decap_object, load_xdp, map_err, take};

pub use lb_common::decap::{
    ADDRS_MAP, CONFIG_MAP, DecapAddr, DecapConfig, MAPS, MAX_ADDRS, MAX_SOURCES, PROGRAM,
    SOURCES_MAP, STAT_NAMES, STATS_MAP, SourceKey,
};

#[derive(Debug, thiserror::Error)]
pub enum DecapError {
    #[error("no such interface: {interface}")]
    NoSuchInterface { interface: String },
    #[error(
        "interface {interface} has no IPv4 or IPv6 address; add one, or name the \
         tunnel destination with --address"
    )]
    NoAddress { interface: String },
    #[error("{count} addresses to decapsulate for; the program holds at most {max}")]
    TooManyAddresses { count: usize, max: usize },
    #[error(
        "--from is required: name the balancers' source prefixes (--from PREFIX, \
         repeatable, e.g. --from 198.18.0.0/24 --from 2001:db8::/64); a tunnel packet \
         from any other source is dropped. Decapsulating from any source lets anyone who \
         can reach this host inject packets with a forged inner source past its filters \
         (CVE-2020-10136); to accept that, say so: --from 0.0.0.0/0 --from ::/0"
    )]
    NoSources,
    #[error("--from: {count} prefixes; the program holds at most {max}")]
    TooManySources { count: usize, max: usize },
    #[error("reading the addresses of interface {interface}: {source}")]
    ReadAddresses {
        interface: String,
        #[source]
        source: nix::Error,
    },
    #[error("waiting for SIGINT/SIGTERM: {0}")]
    Signal(#[source] std::io::Error),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

impl DecapError {
    /// The user's mistake (exit 2), not the kernel's refusal (exit 4).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::NoSuchInterface { .. }
                | Self::NoAddress { .. }
                | Self::TooManyAddresses { .. }
                | Self::NoSources
                | Self::TooManySources { .. }
        )
    }
}

/// Every IPv4 and IPv6 address of `interface` now (link-local ones too: a
/// tunnel may be addressed to one).
pub fn interface_addresses(interface: &str) -> Result<Vec<IpAddr>, DecapError> {
    if nix::net::if_::if_nametoindex(interface).is_err() {
        return Err(DecapError::NoSuchInterface {
            interface: interface.to_string(),
        });
    }
    let read_err = |source| DecapError::ReadAddresses {
        interface: interface.to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in nix::ifaddrs::getifaddrs().map_err(read_err)? {
        if entry.interface_name != interface {
            continue;
        }
        let Some(addr) = entry.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            out.push(IpAddr::V6(v6.ip()));
        }
    }
    Ok(out)
}

/// The addresses to decapsulate for: the interface's and the extra ones,
/// each once, in order; refused when there are none or too many.
pub fn addresses_to_hold(
    interface: &str,
    found: &[IpAddr],
    extra: &[IpAddr],
) -> Result<Vec<IpAddr>, DecapError> {
    let all: BTreeSet<IpAddr> = found.iter().chain(extra).copied().collect();
    if all.is_empty() {
        return Err(DecapError::NoAddress {
            interface: interface.to_string(),
        });
    }
    if all.len() > MAX_ADDRS {
        return Err(DecapError::TooManyAddresses {
            count: all.len(),
            max: MAX_ADDRS,
        });
    }
    Ok(all.into_iter().collect())
}

/// An outer source prefix tunnel packets are accepted from (`--from`):
/// an address and a length, host bits zero. A bare address is the prefix
/// of that address alone (/32, /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePrefix {
    address: IpAddr,
    len: u8,
}

impl SourcePrefix {
    /// `address/len`; refused when `len` is longer than the family's
    /// addresses or `address` has bits set past `len` (the message names
    /// the prefix meant).
    pub fn new(address: IpAddr, len: u8) -> Result<Self, String> {
        let max = if address.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!(
                "{address}/{len}: prefix length {len} is longer than {max} ({})",
                if address.is_ipv4() { "IPv4" } else { "IPv6" }
            ));
        }
        let network = masked(address, len);
        if network != address {
            return Err(format!(
                "{address}/{len}: bits set after the first {len}; the prefix is {network}/{len}"
            ));
        }
        Ok(Self { address, len })
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    pub fn length(&self) -> u8 {
        self.len
    }

    /// Every source of its family: 0.0.0.0/0 or ::/0.
    pub fn is_any(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` is inside (what the program's trie answers).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.address.is_ipv4() && masked(ip, self.len) == self.address
    }

    /// The key of `SOURCES_MAP` that holds it.
    pub fn key(&self) -> Key<SourceKey> {
        Key::new(
            SourceKey::prefix_len(self.len),
            SourceKey::new(self.address),
        )
    }
}

/// `ip` with every bit after the first `len` cleared (`len` at most the
/// family's length).
fn masked(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

impl FromStr for SourcePrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not an IPv4 or IPv6 prefix (ADDRESS/LENGTH, e.g. 198.18.0.0/24 or \
                 2001:db8::/64, or one address)"
            )
        };
        let (address, len) = match s.split_once('/') {
            Some((address, len)) => (address, Some(len)),
            None => (s, None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let len = match len {
            None if address.is_ipv4() => 32,
            None => 128,
            // Digits only: u8's parser takes a leading '+'.
            Some(len) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => len
                .parse::<u8>()
                .map_err(|_| format!("{s}: prefix length {len} is longer than the address"))?,
            Some(_) => return Err(bad()),
        };
        Self::new(address, len)
    }
}

impl fmt::Display for SourcePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.len)
    }
}

/// The prefixes to accept tunnels from, each once, in order; refused when
/// there are none (`--from` is required: DecapError::NoSources says why)
/// or too many.
pub fn sources_to_hold(from: &[SourcePrefix]) -> Result<Vec<SourcePrefix>, DecapError> {
    let all: BTreeSet<SourcePrefix> = from.iter().copied().collect();
    if all.is_empty() {
        return Err(DecapError::NoSources);
    }
    if all.len() > MAX_SOURCES {
        return Err(DecapError::TooManySources {
            count: all.len(),
            max: MAX_SOURCES,
        });
    }
    Ok(all.into_iter().collect())
}

/// Packets per outcome, summed over CPUs (`STAT_NAMES` order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecapCounters {
    pub ipip4: u64,
    pub ipip6: u64,
    pub gue4: u64,
    pub gue6: u64,
    pub not_ours: u64,
    pub malformed: u64,
    /// Tunnel packets for this host from a source outside `--from`: dropped.
    pub source_refused: u64,
}

impl DecapCounters {
    /// From the counters in `STAT_NAMES` order.
    pub fn from_slots(s: [u64; STAT_NAMES.len()]) -> Self {
        Self {
            ipip4: s[0],
            ipip6: s[1],
            gue4: s[2],
            gue6: s[3],
            not_ours: s[4],
            malformed: s[5],
            source_refused: s[6],
        }
    }

    pub fn slots(&self) -> [u64; STAT_NAMES.len()] {
        [
            self.ipip4,
            self.ipip6,
            self.gue4,
            self.gue6,
            self.not_ours,
            self.malformed,
            self.source_refused,
        ]
    }

    pub fn decapsulated(&self) -> u64 {
        self.ipip4 + self.ipip6 + self.gue4 + self.gue6
    }

    /// A borderless table: one line per counter.
    pub fn render_table(&self) -> String {
        let mut out = format!("{:<14} {:>12}\n", "OUTCOME", "PACKETS");
        for (name, n) in STAT_NAMES.iter().zip(self.slots()) {
            out.push_str(&format!("{name:<14} {n:>12}\n"));
        }
        out
    }
}

/// The loaded decap program and its maps.
pub struct DecapProgram {
    ebpf: Ebpf,
    addrs: HashMap<MapData, DecapAddr, u8>,
    sources: LpmTrie<MapData, SourceKey, u8>,
    config: Array<MapData, DecapConfig>,
    stats: PerCpuArray<MapData, u64>,
    link: Option<XdpLinkId>,
}

impl DecapProgram {
    /// Load the object and its program (the verifier runs here); no
    /// address, no source (every tunnel packet refused), GUE off, attached
    /// to nothing.
    pub fn load() -> Result<Self, DataplaneError> {
        let object = decap_object();
        if object.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let mut ebpf = Ebpf::load(object)?;
        load_xdp(&mut ebpf, PROGRAM)?;
        Ok(Self {
            addrs: take(&mut ebpf, ADDRS_MAP)?,
            sources: take(&mut ebpf, SOURCES_MAP)?,
            config: take(&mut ebpf, CONFIG_MAP)?,
            stats: take(&mut ebpf, STATS_MAP)?,
            ebpf,
            link: None,
        })
    }

    /// Decapsulate packets addressed to `ip`.
    pub fn add_address(&mut self, ip: IpAddr) -> Result<(), DataplaneError> {
        self.addrs
            .insert(DecapAddr::new(ip), 1, 0)
            .map_err(map_err(ADDRS_MAP))
    }

    /// Accept tunnel packets whose outer source is in `prefix`.
    pub fn add_source(&mut self, prefix: SourcePrefix) -> Result<(), DataplaneError> {
        self.sources
            .insert(&prefix.key(), 1, 0)
            .map_err(map_err(SOURCES_MAP))
    }

    /// Decapsulate UDP to `port` as GUE; 0 turns GUE off.
    pub fn set_gue_port(&mut self, port: u16) -> Result<(), DataplaneError> {
        let config = DecapConfig {
            gue_port_be: port.to_be(),
            _pad: [0; 6],
        };
        self.config.set(0, config, 0).map_err(map_err(CONFIG_MAP))
    }

    /// The loaded program (for BPF_PROG_TEST_RUN, or to attach).
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("checked in load")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("checked in load")
    }

    /// Attach to `interface`; detached by `detach` or when `self` is dropped.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<(), DataplaneError> {
        let link = self
            .program_mut()
            .attach(interface, mode.xdp())
            .map_err(|source| DataplaneError::Attach {
                interface: interface.to_string(),
                source,
            })?;
        self.link = Some(link);
        Ok(())
    }

    /// Detach from the interface, if attached.
    pub fn detach(&mut self) -> Result<(), DataplaneError> {
        let Some(link) = self.link.take() else {
            return Ok(());
        };
        self.program_mut()
            .detach(link)
            .map_err(|source| DataplaneError::Program {
                name: PROGRAM,
                source,
            })
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<DecapCounters, DataplaneError> {
        let mut slots = [0u64; STAT_NAMES.len()];
        for (i, slot) in slots.iter_mut().enumerate() {
            let per_cpu = self.stats.get(&(i as u32), 0).map_err(map_err(STATS_MAP))?;
            *slot = per_cpu.iter().sum();
        }
        Ok(DecapCounters::from_slots(slots))
    }
}

/// What `xlb decap` was asked to do.
#[derive(Clone, Debug)]
pub struct DecapOptions {
    pub interface: String,
    pub gue_port: u16,
    /// Tunnel destinations besides the interface's own addresses.
    pub extra_addresses: Vec<IpAddr>,
    /// The balancers' source prefixes (`--from`); required.
    pub from: Vec<SourcePrefix>,
    pub mode: AttachMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keys_put_ipv4_first_and_zero_the_rest() {
        let k = DecapAddr::new(ip("198.18.0.11"));
        assert_eq!(k.addr[..4], [198, 18, 0, 11]);
        assert_eq!(k.addr[4..], [0; 12]);
        assert_eq!(k.family, lb_common::FAMILY_V4);
        let k = DecapAddr::new(ip("2001:db8::11"));
        assert_eq!(k.addr, ip6_octets("2001:db8::11"));
        assert_eq!(k.family, lb_common::FAMILY_V6);
    }

    fn ip6_octets(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn addresses_are_merged_once_each() {
        let found = [ip("198.18.0.11"), ip("2001:db8::11")];
        let extra = [ip("198.18.0.11"), ip("198.18.0.99")];
        let all = addresses_to_hold("eth0", &found, &extra).unwrap();
        assert_eq!(
            all,
            [ip("198.18.0.11"), ip("198.18.0.99"), ip("2001:db8::11")]
        );
    }

    #[test]
    fn no_address_is_bad_input_naming_the_interface() {
        let e = addresses_to_hold("eth7", &[], &[]).unwrap_err();
        assert!(e.is_bad_input());
        assert!(e.to_string().contains("eth7"), "{e}");
        assert!(e.to_string().contains("--address"), "{e}");
    }

    #[test]
    fn too_many_addresses_are_refused() {
        let many: Vec<IpAddr> = (0..=MAX_ADDRS as u32)
            .map(|i| IpAddr::V4((0xc612_0000 + i).into()))
            .collect();
        let e = addresses_to_hold("eth0", &many, &[]).unwrap_err();
        assert!(matches!(e, DecapError::TooManyAddresses { count, .. } if count == MAX_ADDRS + 1));
    }

    #[test]
    fn a_missing_interface_is_named() {
        let e = interface_addresses("xlb-no-such0").unwrap_err();
        assert!(e.is_bad_input());
        assert_eq!(e.to_string(), "no such interface: xlb-no-such0");
    }

    #[test]
    fn loopback_has_its_address() {
        let found = interface_addresses("lo").unwrap();
        assert!(found.contains(&ip("127.0.0.1")), "{found:?}");
    }

    #[test]
    fn counters_keep_the_object_order() {
        let c = DecapCounters::from_slots([1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(c.slots(), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(c.decapsulated(), 10);
        assert_eq!(c.source_refused, 7);
        let table = c.render_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 1 + STAT_NAMES.len());
        assert!(lines[1].starts_with("ipip4") && lines[1].ends_with(" 1"));
        assert!(lines[6].starts_with("malformed") && lines[6].ends_with(" 6"));
        assert!(lines[7].starts_with("source_refused") && lines[7].ends_with(" 7"));
    }

    fn prefix(s: &str) -> Result<SourcePrefix, String> {
        s.parse()
    }

    #[test]
    fn prefixes_of_both_families_parse() {
        let p = prefix("198.18.0.0/24").unwrap();
        assert_eq!((p.address(), p.length()), (ip("198.18.0.0"), 24));
        assert_eq!(p.to_string(), "198.18.0.0/24");
        assert_eq!(prefix("2001:db8::/64").unwrap().length(), 64);
        assert_eq!(prefix("198.18.0.2").unwrap().to_string(), "198.18.0.2/32");
        assert_eq!(
            prefix("2001:db8::2").unwrap().to_string(),
            "2001:db8::2/128"
        );
        assert!(prefix("0.0.0.0/0").unwrap().is_any());
        assert!(prefix("::/0").unwrap().is_any());
        assert!(!prefix("198.18.0.0/15").unwrap().is_any());
    }

    #[test]
    fn bad_prefixes_are_refused_saying_why() {
        for (s, needle) in [
            ("198.18.0", "not an IPv4 or IPv6 prefix"),
            ("198.18.0.0/", "not an IPv4 or IPv6 prefix"),
            ("198.18.0.0/+8", "not an IPv4 or IPv6 prefix"),
            ("198.18.0.0/-1", "not an IPv4 or IPv6 prefix"),
            ("eth0", "not an IPv4 or IPv6 prefix"),
            ("198.18.0.0/33", "prefix length 33 is longer than 32 (IPv4)"),
            (
                "2001:db8::/129",
                "prefix length 129 is longer than 128 (IPv6)",
            ),
            ("198.18.0.0/300", "prefix length 300 is longer"),
            ("198.18.0.1/24", "the prefix is 198.18.0.0/24"),
            ("2001:db8::1/64", "the prefix is 2001:db8::/64"),
        ] {
            let e = prefix(s).unwrap_err();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }

    #[test]
    fn a_prefix_contains_its_family_only() {
        let p = prefix("198.18.0.0/24").unwrap();
        assert!(p.contains(ip("198.18.0.2")));
        assert!(p.contains(ip("198.18.0.255")));
        assert!(!p.contains(ip("198.18.1.2")));
        assert!(!p.contains(ip("::ffff:198.18.0.2")));
        let any4 = prefix("0.0.0.0/0").unwrap();
        assert!(any4.contains(ip("203.0.113.9")));
        assert!(!any4.contains(ip("2001:db8::1")));
        let p6 = prefix("2001:db8:0:1::/64").unwrap();
        assert!(p6.contains(ip("2001:db8:0:1::99")));
        assert!(!p6.contains(ip("2001:db8:0:2::99")));
    }

    #[test]
    fn keys_lead_with_the_family_byte() {
        let k = prefix("198.18.0.0/24").unwrap().key();
        assert_eq!(k.prefix_len(), 8 + 24);
        assert_eq!(k.data().family, lb_common::FAMILY_V4);
        assert_eq!(k.data().addr[..4], [198, 18, 0, 0]);
        let k = prefix("::/0").unwrap().key();
        assert_eq!(k.prefix_len(), 8);
        assert_eq!(k.data().family, lb_common::FAMILY_V6);
    }

    #[test]
    fn sources_are_required_and_merged_once_each() {
        let e = sources_to_hold(&[]).unwrap_err();
        assert!(e.is_bad_input());
        let message = e.to_string();
        for needle in [
            "--from is required",
            "CVE-2020-10136",
            "--from 0.0.0.0/0 --from ::/0",
        ] {
            assert!(message.contains(needle), "{message}");
        }
        let a = prefix("198.18.0.0/24").unwrap();
        let b = prefix("2001:db8::/64").unwrap();
        assert_eq!(sources_to_hold(&[b, a, b]).unwrap(), [a, b]);
        let many: Vec<SourcePrefix> = (0..=MAX_SOURCES as u32)
            .map(|i| SourcePrefix::new(IpAddr::V4((0xc612_0000 + i).into()), 32).unwrap())
            .collect();
        let e = sources_to_hold(&many).unwrap_err();
        assert!(matches!(e, DecapError::TooManySources { count, .. } if count == MAX_SOURCES + 1));
    }
}
