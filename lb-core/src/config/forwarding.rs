//! Rules of the settings that say how frames reach backends: the connection
//! table's size, ICMP echo, `[tunnel]`, each VIP's `forwarding` and `hash`,
//! and what a tunnelling VIP asks of its backends (address family, a tunnel
//! source of that family), and MAC addresses. Functions that `validate`
//! calls with its `Checker`: same checker, same problems.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use lb_common::maps::CONN_TABLE_SIZE;

use super::check::{Checker, Sp, field_at, field_path};
use super::model::{RawConfig, RawTunnel};
use super::types::{
    Announce, Forwarding, HashMode, IcmpEcho, Ipv4Prefix, Ipv6Prefix, MacAddr, Tunnel, Unhandled,
};

/// Connection-table sizes: at least a few pages' worth, at most what a
/// host can spare for it (the kernel takes about 100 bytes per entry, so
/// 16M entries are about 1.6 GB).
const MIN_CONN_TABLE_SIZE: i128 = 1024;
const MAX_CONN_TABLE_SIZE: i128 = 1 << 24;

/// The flow hash is 32 bits: an IPv6 tunnel source varies in its last 32
/// bits at most.
const MIN_SOURCE_V6_LEN: u8 = 96;
/// An IPv4 tunnel source keeps at least its first octet: the flow hash
/// then never makes it a loopback, "this network", multicast or reserved
/// address, whichever bits it fills (the first octet says which of those a
/// prefix is). 24 bits of hash are far more than a NIC's queues need.
const MIN_SOURCE_V4_LEN: u8 = 8;

/// What the checks of a backend need to know of its VIP.
pub(super) struct VipContext<'a> {
    /// `VIP "web"`, or `vip[0]` when the name is invalid.
    pub label: String,
    /// None when invalid (reported).
    pub address: Option<IpAddr>,
    /// None when invalid (reported): the rules that depend on it are skipped.
    pub forwarding: Option<Forwarding>,
    /// None when `[tunnel]` is invalid (reported).
    pub tunnel: Option<&'a Tunnel>,
    /// A missing `source_v4` / `source_v6` is reported once per VIP.
    pub missing_v4_reported: bool,
    pub missing_v6_reported: bool,
}

pub(super) fn conn_table_size(ck: &mut Checker<'_, '_>, raw: &RawConfig) -> Option<u32> {
    let Some(v) = &raw.conn_table_size else {
        return Some(CONN_TABLE_SIZE);
    };
    ck.in_range(
        v,
        "conn_table_size",
        MIN_CONN_TABLE_SIZE,
        MAX_CONN_TABLE_SIZE,
        &format!(" (default {CONN_TABLE_SIZE}; each entry takes about 100 bytes of kernel memory)"),
    )
    .map(|n| n as u32)
}

pub(super) fn icmp_echo(ck: &mut Checker<'_, '_>, raw: &RawConfig) -> Option<IcmpEcho> {
    match &raw.icmp_echo {
        None => Some(IcmpEcho::default()),
        Some(v) => choice(ck, v, "icmp_echo", "icmp_echo value", &IcmpEcho::ALL),
    }
}

/// `unhandled` at the top (`field` "unhandled", default drop) or in a VIP
/// (default: the top's).
pub(super) fn unhandled(
    ck: &mut Checker<'_, '_>,
    v: Option<&Sp<String>>,
    field: &str,
    default: Unhandled,
) -> Option<Unhandled> {
    match v {
        None => Some(default),
        Some(v) => choice(ck, v, field, "unhandled value", &Unhandled::ALL),
    }
}

/// `announce` at the top (`field` "announce", default healthy) or in a VIP
/// (default: the top's).
pub(super) fn announce(
    ck: &mut Checker<'_, '_>,
    v: Option<&Sp<String>>,
    field: &str,
    default: Announce,
) -> Option<Announce> {
    match v {
        None => Some(default),
        Some(v) => choice(ck, v, field, "announce value", &Announce::ALL),
    }
}

/// `[tunnel]`; the defaults when absent.
pub(super) fn tunnel(ck: &mut Checker<'_, '_>, raw: &RawConfig) -> Option<Tunnel> {
    let Some(t) = &raw.tunnel else {
        return Some(Tunnel::default());
    };
    tunnel_placement(ck, t, raw);
    let source_v4 = match &t.source_v4 {
        None => Some(None),
        Some(v) => source_v4(ck, v).map(Some),
    };
    let source_v6 = match &t.source_v6 {
        None => Some(None),
        Some(v) => source_v6(ck, v).map(Some),
    };
    let gue_port = match &t.gue_port {
        None => Some(lb_common::DEFAULT_GUE_PORT),
        Some(v) => ck
            .in_range(
                v,
                "tunnel.gue_port",
                1,
                65535,
                &format!(" (default {})", lb_common::DEFAULT_GUE_PORT),
            )
            .map(|p| p as u16),
    };
    let gateway_mac = match &t.gateway_mac {
        None => Some(None),
        Some(v) => mac(ck, v, "tunnel.gateway_mac", "the gateway's").map(Some),
    };
    Some(Tunnel {
        source_v4: source_v4?,
        source_v6: source_v6?,
        gue_port: gue_port?,
        gateway_mac: gateway_mac?,
    })
}

/// `[tunnel]` is host-wide, like `[imbalance]`: it goes with the other
/// top-level settings, above the VIPs, where a reader looks for them.
fn tunnel_placement(ck: &mut Checker<'_, '_>, t: &RawTunnel, raw: &RawConfig) {
    if let Some(vip) = raw.vips.first()
        && t.span.start > vip.span.start
    {
        let reason = format!(
            "the [tunnel] section holds host-wide settings, but it is written below the \
             first [[vip]] (line {}): move it above the first [[vip]], with the other \
             top-level settings",
            ck.lines.line(vip.span.start)
        );
        ck.problem(&t.span, "tunnel", reason);
    }
}

pub(super) fn vip_forwarding(
    ck: &mut Checker<'_, '_>,
    v: Option<&Sp<String>>,
    path: &str,
) -> Option<Forwarding> {
    match v {
        None => Some(Forwarding::default()),
        Some(v) => choice(
            ck,
            v,
            &field_path(path, "forwarding"),
            "forwarding method",
            &Forwarding::ALL,
        ),
    }
}

pub(super) fn hash_mode(
    ck: &mut Checker<'_, '_>,
    v: Option<&Sp<String>>,
    path: &str,
) -> Option<HashMode> {
    match v {
        None => Some(HashMode::default()),
        Some(v) => choice(
            ck,
            v,
            &field_path(path, "hash"),
            "hash mode",
            &HashMode::ALL,
        ),
    }
}

/// One of `all`, spelt as its `Display`; else a problem listing them.
fn choice<T: Copy + std::fmt::Display>(
    ck: &mut Checker<'_, '_>,
    v: &Sp<String>,
    field: &str,
    what: &str,
    all: &[T],
) -> Option<T> {
    if let Some(found) = all.iter().find(|c| c.to_string() == v.value) {
        return Some(*found);
    }
    let allowed: Vec<String> = all.iter().map(|c| format!("\"{c}\"")).collect();
    let hint = if all
        .iter()
        .any(|c| c.to_string() == v.value.to_ascii_lowercase())
    {
        " (lowercase)"
    } else {
        ""
    };
    ck.problem(
        &v.span,
        field,
        format!(
            "unknown {what} {:?}: must be one of {}{hint}",
            v.value,
            allowed.join(", ")
        ),
    );
    None
}

/// A backend's `mac`: required for an L2 DSR VIP (the frame goes to it),
/// optional for a tunnelling one (the FIB names the next hop): all zeros
/// when absent.
pub(super) fn backend_mac(
    ck: &mut Checker<'_, '_>,
    v: Option<&Sp<String>>,
    backend_span: &Range<usize>,
    path: &str,
    ctx: &VipContext<'_>,
) -> Option<MacAddr> {
    let field = field_at(path, "mac");
    match (v, ctx.forwarding) {
        (Some(v), _) => mac(ck, v, field, "the backend's"),
        (None, Some(f)) if f.tunnels() => Some(MacAddr([0; 6])),
        (None, Some(_)) => {
            ck.problem(
                backend_span,
                field.to_string(),
                "required field is missing (an L2 DSR VIP sends frames to the backend's \
                 MAC; only \"ipip\" and \"gue\" VIPs may leave it out)",
            );
            None
        }
        // The VIP's forwarding is invalid (reported): whether a MAC is
        // needed is unknown.
        (None, None) => None,
    }
}

/// What a tunnelling VIP asks of a backend's address: a family it can
/// be tunnelled over, and a tunnel source of that family.
pub(super) fn tunnel_backend(
    ck: &mut Checker<'_, '_>,
    ctx: &mut VipContext<'_>,
    backend: &str,
    address: IpAddr,
    at: &Sp<String>,
    path: &str,
) {
    let Some(forwarding) = ctx.forwarding.filter(|f| f.tunnels()) else {
        return;
    };
    if let (Some(IpAddr::V6(_)), IpAddr::V4(_)) = (ctx.address, address) {
        ck.problem(
            &at.span,
            field_path(path, "address"),
            format!(
                "{} is IPv6 and forwards with \"{forwarding}\", but backend {backend:?} has \
                 the IPv4 address {address}: IPv6 in IPv4 is not supported; give the \
                 backend's IPv6 address",
                ctx.label
            ),
        );
        return;
    }
    let Some(tunnel) = ctx.tunnel else { return };
    let (missing, key, family, example) = match address {
        IpAddr::V4(_) => (
            tunnel.source_v4.is_none() && !ctx.missing_v4_reported,
            "source_v4",
            "IPv4",
            "\"198.18.200.0/24\"",
        ),
        IpAddr::V6(_) => (
            tunnel.source_v6.is_none() && !ctx.missing_v6_reported,
            "source_v6",
            "IPv6",
            "\"2001:db8:ff::/96\"",
        ),
    };
    if !missing {
        return;
    }
    match address {
        IpAddr::V4(_) => ctx.missing_v4_reported = true,
        IpAddr::V6(_) => ctx.missing_v6_reported = true,
    }
    ck.problem(
        &at.span,
        format!("tunnel.{key}"),
        format!(
            "required by {} (forwarding = \"{forwarding}\"): its backend {backend:?} \
             ({address}) is reached over {family}; set {key} in a [tunnel] section above \
             the first [[vip]], the {family} prefix tunnelled frames come from, like \
             {example}",
            ctx.label
        ),
    );
}

/// `source_v4 = "198.18.200.0/24"`: 8 to 32 bits, host bits zero, a
/// routable unicast prefix.
fn source_v4(ck: &mut Checker<'_, '_>, v: &Sp<String>) -> Option<Ipv4Prefix> {
    const FIELD: &str = "tunnel.source_v4";
    let (addr, len) = prefix(ck, v, FIELD, "198.18.200.0/24", 32)?;
    let IpAddr::V4(addr) = addr else {
        ck.problem(
            &v.span,
            FIELD,
            format!("{:?} is an IPv6 prefix: put it in source_v6", v.value),
        );
        return None;
    };
    if !(MIN_SOURCE_V4_LEN..=32).contains(&len) {
        prefix_length(
            ck,
            v,
            FIELD,
            &format!("{MIN_SOURCE_V4_LEN} and 32"),
            "198.18.200.0/24",
        );
        return None;
    }
    let host = u32::from_be_bytes(Ipv4Prefix { addr, len }.hostmask());
    let bits = u32::from(addr);
    if bits & host != 0 {
        let network = Ipv4Prefix {
            addr: Ipv4Addr::from(bits & !host),
            len,
        };
        host_bits_set(ck, v, FIELD, &network.to_string());
        return None;
    }
    let kind = match addr.octets()[0] {
        0 => Some("in 0.0.0.0/8 (\"this network\")"),
        127 => Some("a loopback prefix"),
        224..=239 => Some("a multicast prefix"),
        240.. => Some("in 240.0.0.0/4 (reserved, and the broadcast address)"),
        _ => None,
    };
    if let Some(kind) = kind {
        ck.problem(
            &v.span,
            FIELD,
            format!(
                "{:?} is {kind}; tunnelled frames need a routable unicast source",
                v.value
            ),
        );
        return None;
    }
    Some(Ipv4Prefix { addr, len })
}

/// `source_v6 = "2001:db8:ff::/96"`: 96 to 128 bits, host bits zero, a
/// routable unicast prefix.
fn source_v6(ck: &mut Checker<'_, '_>, v: &Sp<String>) -> Option<Ipv6Prefix> {
    const FIELD: &str = "tunnel.source_v6";
    let (addr, len) = prefix(ck, v, FIELD, "2001:db8:ff::/96", 128)?;
    let IpAddr::V6(addr) = addr else {
        ck.problem(
            &v.span,
            FIELD,
            format!("{:?} is an IPv4 prefix: put it in source_v4", v.value),
        );
        return None;
    };
    if len > 128 {
        prefix_length(ck, v, FIELD, "96 and 128", "2001:db8:ff::/96");
        return None;
    }
    if len < MIN_SOURCE_V6_LEN {
        ck.problem(
            &v.span,
            FIELD,
            format!(
                "prefix length /{len} is too short: the flow hash fills at most the last 32 \
                 bits of the source address, so the length must be between \
                 {MIN_SOURCE_V6_LEN} and 128, like \"2001:db8:ff::/96\""
            ),
        );
        return None;
    }
    let host = u128::from(u32::from_be_bytes(Ipv6Prefix { addr, len }.hostmask()));
    let bits = u128::from(addr);
    if bits & host != 0 {
        let network = Ipv6Prefix {
            addr: Ipv6Addr::from(bits & !host),
            len,
        };
        host_bits_set(ck, v, FIELD, &network.to_string());
        return None;
    }
    // The first 96 bits stay as written (at least /96): they say what
    // kind of address every source of the prefix is.
    let kind = if addr.is_multicast() {
        Some("a multicast prefix")
    } else if addr.segments()[..6] == [0; 6] {
        Some("in ::/96 (unspecified, loopback and IPv4-compatible addresses)")
    } else if addr.to_ipv4_mapped().is_some() {
        Some("in ::ffff:0:0/96 (IPv4-mapped addresses; give an IPv4 source in source_v4)")
    } else {
        None
    };
    if let Some(kind) = kind {
        ck.problem(
            &v.span,
            FIELD,
            format!(
                "{:?} is {kind}; tunnelled frames need a routable unicast source",
                v.value
            ),
        );
        return None;
    }
    Some(Ipv6Prefix { addr, len })
}

fn host_bits_set(ck: &mut Checker<'_, '_>, v: &Sp<String>, field: &str, network: &str) {
    ck.problem(
        &v.span,
        field,
        format!(
            "{:?} has host bits set; write the prefix as {network:?} (the flow hash fills \
             the host bits)",
            v.value
        ),
    );
}

fn prefix_length(
    ck: &mut Checker<'_, '_>,
    v: &Sp<String>,
    field: &str,
    range: &str,
    example: &str,
) {
    ck.problem(
        &v.span,
        field,
        format!(
            "{:?}: the prefix length must be between {range}, like \"{example}\"",
            v.value
        ),
    );
}

/// `address/length`, either family (the caller checks it and the
/// length's range); `example` shows the syntax and `max` the length of
/// one fixed address.
fn prefix(
    ck: &mut Checker<'_, '_>,
    v: &Sp<String>,
    field: &str,
    example: &str,
    max: u8,
) -> Option<(IpAddr, u8)> {
    let text = v.value.trim();
    let reason = match text.split_once('/') {
        None => match text.parse::<IpAddr>() {
            Ok(_) => format!(
                "{:?} has no prefix length: write a prefix like \"{example}\" (a /{max} is \
                 one fixed source address)",
                v.value
            ),
            Err(_) => format!(
                "{:?} is not a prefix: expected an address, '/' and a length, like \
                 \"{example}\"",
                v.value
            ),
        },
        Some((addr, len)) => match (addr.parse::<IpAddr>(), len.parse::<u8>()) {
            (Err(_), _) => {
                format!("{addr:?} is not an IP address: expected a prefix like \"{example}\"")
            }
            (Ok(a), Ok(len)) => return Some((a, len)),
            (Ok(_), Err(_)) => format!(
                "{:?}: the prefix length {len:?} is not a number; write a prefix like \
                 \"{example}\"",
                v.value
            ),
        },
    };
    ck.problem(&v.span, field, reason);
    None
}

/// `02:00:00:00:00:11`: the backend's (or the gateway's) Ethernet
/// address; `whose` says which, in the messages: "the backend's".
fn mac(
    ck: &mut Checker<'_, '_>,
    v: &Sp<String>,
    field: impl std::fmt::Display,
    whose: &str,
) -> Option<MacAddr> {
    let Some(mac) = MacAddr::parse(&v.value) else {
        ck.problem(
            &v.span,
            field.to_string(),
            format!(
                "{:?} is not a MAC address: expected six pairs of hex digits separated by ':', \
                 like \"02:00:00:00:00:11\"",
                v.value
            ),
        );
        return None;
    };
    let reason = if mac.0 == [0; 6] {
        format!("{mac} is all zeros; give {whose} unicast MAC address")
    } else if mac.0 == [0xff; 6] {
        format!("{mac} is the broadcast address; give {whose} unicast MAC address")
    } else if mac.0[0] & 1 == 1 {
        format!(
            "{mac} is a multicast address (bit 0 of the first octet is set); give {whose} \
             unicast MAC address"
        )
    } else {
        return Some(mac);
    };
    ck.problem(&v.span, field.to_string(), reason);
    None
}
