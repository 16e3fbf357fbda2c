//! From config text to a validated `Config`, or every problem in the file.
//!
//! Three steps: TOML syntax (`toml`'s parser, one problem at the first
//! syntax error), shape (`model`: known keys, required fields, value types)
//! and rules (value ranges and formats, uniqueness, limits: here, and for
//! the forwarding settings and health checks in `forwarding` and `health`,
//! which this file calls). Shape and rule problems are all collected; any
//! problem means no `Config` at all.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use lb_common::maps::{DEFAULT_TABLE_SIZE, MAX_BACKENDS, MAX_TABLE_SIZE, MAX_VIPS};
use toml::de::DeTable;

use super::check::{Checker, DurationRule, Issues, LineIndex, Sp, field_at, field_path};
use super::error::{ConfigError, Problem};
use super::forwarding::{self, VipContext};
use super::health::{self, HealthBase};
use super::model::{RawBackend, RawConfig, RawImbalance, RawSafety, RawVip};
use super::types::{
    Announce, Backend, BackendState, Config, DEFAULT_METRICS_ADDRESS, Protocol, Safety, Thresholds,
    Tunnel, Unhandled, Vip,
};
use crate::maglev::is_prime;

/// Largest backend weight (`xlb weight` checks it too).
pub const MAX_WEIGHT: u32 = 10_000;
/// Smallest Maglev table.
const MIN_TABLE_SIZE: u32 = 101;
/// A VIP's table has at least this many slots per backend, so that Maglev
/// can follow the weights closely (its imbalance shrinks as slots/backend
/// grows).
const SLOTS_PER_BACKEND: u64 = 100;
/// Longest VIP or backend name.
const MAX_NAME_LEN: usize = 63;
/// Linux's IFNAMSIZ less the NUL.
const MAX_IFNAME_LEN: usize = 15;

/// Largest backend capacity.
const MAX_CAPACITY: f64 = 1e6;

/// The rule of a number key of `[imbalance]` or `[safety]`.
struct NumberRule {
    key: &'static str,
    valid: fn(f64) -> bool,
    /// What `valid` checks, for the error message.
    rule: &'static str,
}

const MAX_RATIO: NumberRule = NumberRule {
    key: "max_ratio",
    valid: |x| x > 1.0 && x <= 100.0,
    rule: "must be a number greater than 1 and at most 100",
};
const MAX_CV: NumberRule = NumberRule {
    key: "max_cv",
    valid: |x| x > 0.0 && x <= 10.0,
    rule: "must be a number greater than 0 and at most 10",
};
const MIN_NEW_FLOW_RATE: NumberRule = NumberRule {
    key: "min_new_flow_rate",
    valid: |x| x >= 0.0 && x.is_finite(),
    rule: "must be a finite number of new flows per second, at least 0",
};
const MIN_PACKET_RATE: NumberRule = NumberRule {
    key: "min_packet_rate",
    valid: |x| x >= 0.0 && x.is_finite(),
    rule: "must be a finite number of packets per second, at least 0",
};

const MAX_SHARE_GROWTH: NumberRule = NumberRule {
    key: "max_share_growth",
    valid: |x| x > 1.0 && x.is_finite(),
    rule: "must be a finite number greater than 1",
};
const MAX_CAPACITY_RATIO: NumberRule = NumberRule {
    key: "max_capacity_ratio",
    valid: |x| x > 1.0 && x.is_finite(),
    rule: "must be a finite number greater than 1",
};
const MAX_FLOWS_MOVED: NumberRule = NumberRule {
    key: "max_flows_moved",
    valid: |x| x > 0.0 && x <= 1.0,
    rule: "must be a fraction greater than 0 and at most 1",
};
const MAX_CAPACITY_REMOVED: NumberRule = NumberRule {
    key: "max_capacity_removed",
    valid: |x| x > 0.0 && x <= 1.0,
    rule: "must be a fraction greater than 0 and at most 1",
};

/// The bounds of the duration keys of `[imbalance]`.
const HOLD: DurationRule = DurationRule {
    key: "hold",
    min: Duration::ZERO,
    max: Duration::from_secs(3600),
};
/// The daemon samples once a second: a window spans at least two samples,
/// and at most 600 (the detector keeps up to 4096).
const WINDOW: DurationRule = DurationRule {
    key: "window",
    min: Duration::from_secs(2),
    max: Duration::from_secs(600),
};

pub(super) fn parse_and_validate(text: &str, file: &str) -> Result<Config, ConfigError> {
    let lines = LineIndex::new(text);
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            let (line, column) = lines.position(offset);
            return Err(ConfigError::Invalid {
                file: file.to_string(),
                problems: vec![Problem {
                    line,
                    column,
                    field: "toml".to_string(),
                    reason: syntax_reason(text, &e),
                }],
            });
        }
    };
    let mut issues = Issues::default();
    let raw = RawConfig::read(&doc, &mut issues);
    let config = Checker {
        issues: &mut issues,
        lines: &lines,
    }
    .config(&raw);
    match config {
        Some(config) if issues.is_empty() => Ok(config),
        _ => {
            if issues.is_empty() {
                // Every path that drops a value records why; this is a bug.
                issues.push(
                    &(0..0),
                    "toml",
                    "internal error: config rejected without a reason",
                );
            }
            let mut issues = issues.0;
            // File order; problems at the same place keep the order found.
            issues.sort_by_key(|i| i.offset);
            let problems = issues
                .into_iter()
                .map(|i| {
                    let (line, column) = lines.position(i.offset);
                    Problem {
                        line,
                        column,
                        field: i.field,
                        reason: i.reason,
                    }
                })
                .collect();
            Err(ConfigError::Invalid {
                file: file.to_string(),
                problems,
            })
        }
    }
}

/// `toml`'s message, on one line; a duplicate key names the key.
fn syntax_reason(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    let message = if message.is_empty() {
        "invalid TOML".to_string()
    } else {
        message
    };
    let key = e
        .span()
        .and_then(|s| text.get(s))
        .filter(|k| !k.is_empty() && !k.contains('\n'));
    match key {
        Some(key) if message == "duplicate key" => {
            format!("duplicate key {key:?} (each key may appear once per table)")
        }
        _ => message,
    }
}

/// What a VIP inherits from the top level.
struct VipDefaults<'a> {
    imbalance: &'a Thresholds,
    safety: &'a Safety,
    /// None when `[health]` is invalid (reported).
    health: Option<&'a HealthBase>,
    /// None when `[tunnel]` is invalid (reported).
    tunnel: Option<&'a Tunnel>,
    unhandled: Unhandled,
    announce: Announce,
}

/// Where a VIP endpoint or a name was first seen.
struct First {
    offset: usize,
    what: String,
}

/// The rules of this file: the top level, VIPs, backends, `[imbalance]`
/// and `[safety]`. Private: only this file calls them.
impl Checker<'_, '_> {
    fn config(&mut self, raw: &RawConfig) -> Option<Config> {
        let interface = raw.interface.as_ref().and_then(|i| self.interface(i));
        let hash_seed = match &raw.hash_seed {
            None => Some(0),
            Some(seed) => self
                .in_range(seed, "hash_seed", 0, u32::MAX.into(), "")
                .map(|s| s as u32),
        };

        if raw.vips.len() > MAX_VIPS as usize {
            let extra = &raw.vips[MAX_VIPS as usize];
            self.problem(
                &extra.span,
                extra.path.clone(),
                format!(
                    "too many VIPs: at most {MAX_VIPS} are supported, this file has {}",
                    raw.vips.len()
                ),
            );
        }
        let total: usize = raw.vips.iter().map(|v| v.backends.len()).sum();
        if total > MAX_BACKENDS as usize {
            // Point at the first backend past the limit.
            if let Some(extra) = raw
                .vips
                .iter()
                .flat_map(|v| &v.backends)
                .nth(MAX_BACKENDS as usize)
            {
                self.problem(
                    &extra.span,
                    extra.path.clone(),
                    format!(
                        "too many backends: at most {MAX_BACKENDS} in all VIPs together are \
                         supported, this file has {total}"
                    ),
                );
            }
        }

        let metrics_address = match &raw.metrics_address {
            None => Some(DEFAULT_METRICS_ADDRESS),
            Some(a) => self.metrics_address(a),
        };
        let conn_table_size = forwarding::conn_table_size(self, raw);
        let icmp_echo = forwarding::icmp_echo(self, raw);
        let unhandled = forwarding::unhandled(
            self,
            raw.unhandled.as_ref(),
            "unhandled",
            Default::default(),
        );
        let announce =
            forwarding::announce(self, raw.announce.as_ref(), "announce", Default::default());
        let tunnel = forwarding::tunnel(self, raw);
        // The defaults of every VIP. If they are wrong (reported), VIPs are
        // still checked against the built-in defaults, to report their own
        // problems too.
        let builtin = Thresholds::default();
        let defaults = match &raw.imbalance {
            None => Some(builtin.clone()),
            Some(table) => {
                self.section_placement(&table.span, &table.path, "imbalance", "thresholds", raw);
                self.thresholds(table, &builtin)
            }
        };
        let builtin_safety = Safety::default();
        let safety_defaults = match &raw.safety {
            None => Some(builtin_safety.clone()),
            Some(table) => {
                self.section_placement(&table.span, &table.path, "safety", "limits", raw);
                self.safety(table, &builtin_safety)
            }
        };
        let health_defaults = match &raw.health {
            None => Some(HealthBase::default()),
            Some(table) => {
                self.section_placement(&table.span, &table.path, "health", "health check", raw);
                health::health_table(self, table, &HealthBase::default())
            }
        };

        let mut names: HashMap<String, First> = HashMap::new();
        let mut endpoints: HashMap<(IpAddr, u16, Protocol), First> = HashMap::new();
        let mut vips = Vec::with_capacity(raw.vips.len());
        let mut all_ok = true;
        let mut unhandled_by_address: HashMap<IpAddr, (Unhandled, First)> = HashMap::new();
        for raw_vip in &raw.vips {
            let base = defaults.as_ref().unwrap_or(&builtin);
            let base_safety = safety_defaults.as_ref().unwrap_or(&builtin_safety);
            let defaults = VipDefaults {
                imbalance: base,
                safety: base_safety,
                health: health_defaults.as_ref(),
                tunnel: tunnel.as_ref(),
                unhandled: unhandled.unwrap_or_default(),
                announce: announce.unwrap_or_default(),
            };
            match self.vip(raw_vip, &defaults, &mut names, &mut endpoints) {
                Some(vip) => {
                    self.same_unhandled(&vip, raw_vip, &mut unhandled_by_address);
                    vips.push(std::sync::Arc::new(vip));
                }
                None => all_ok = false,
            }
        }
        defaults?;
        safety_defaults?;
        health_defaults?;
        Some(Config {
            interface: interface?,
            hash_seed: hash_seed?,
            metrics_address: metrics_address?,
            conn_table_size: conn_table_size?,
            icmp_echo: icmp_echo?,
            unhandled: unhandled?,
            announce: announce?,
            tunnel: tunnel?,
            vips: if all_ok { vips } else { return None },
        })
    }

    /// Linux's rules for an interface name (`dev_valid_name`).
    fn interface(&mut self, v: &Sp<String>) -> Option<String> {
        let name = &v.value;
        let reason = if name.is_empty() {
            "must not be empty: name the network interface to attach to, like \"eth0\"".to_string()
        } else if name.len() > MAX_IFNAME_LEN {
            format!(
                "interface name {name:?} is {} bytes long; Linux allows at most {MAX_IFNAME_LEN}",
                name.len()
            )
        } else if name == "." || name == ".." {
            format!("{name:?} is not a valid interface name")
        } else if let Some(c) = name
            .chars()
            .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
        {
            format!(
                "interface name {name:?} contains {c:?}; Linux interface names cannot contain '/', \
                 ':', whitespace or control characters"
            )
        } else {
            return Some(name.clone());
        };
        self.problem(&v.span, "interface", reason);
        None
    }

    fn vip(
        &mut self,
        raw: &RawVip,
        defaults: &VipDefaults<'_>,
        names: &mut HashMap<String, First>,
        endpoints: &mut HashMap<(IpAddr, u16, Protocol), First>,
    ) -> Option<Vip> {
        let path = &raw.path;
        let name = raw
            .name
            .as_ref()
            .and_then(|n| self.name(n, &field_path(path, "name")));
        if let (Some(name), Some(raw_name)) = (&name, &raw.name) {
            self.unique(
                names,
                name.clone(),
                raw_name,
                field_at(path, "name"),
                || format!("duplicate VIP name {name:?}"),
            );
        }
        let address = raw
            .address
            .as_ref()
            .and_then(|a| self.address(a, &field_path(path, "address"), true));
        let port = raw.port.as_ref().and_then(|p| {
            self.in_range(p, field_at(path, "port"), 0, 65535, " (0 means every port)")
                .map(|p| p as u16)
        });
        let protocol = raw
            .protocol
            .as_ref()
            .and_then(|p| self.protocol(p, &field_path(path, "protocol")));
        let forwarding = forwarding::vip_forwarding(self, raw.forwarding.as_ref(), path);
        let hash = forwarding::hash_mode(self, raw.hash.as_ref(), path);
        let unhandled = forwarding::unhandled(
            self,
            raw.unhandled.as_ref(),
            &field_path(path, "unhandled"),
            defaults.unhandled,
        );
        let announce = forwarding::announce(
            self,
            raw.announce.as_ref(),
            &field_path(path, "announce"),
            defaults.announce,
        );

        if let (Some(address), Some(port), Some(protocol), Some(raw_address)) =
            (address, port, protocol, &raw.address)
        {
            let vip = Vip {
                name: String::new(),
                address,
                port,
                protocol,
                forwarding: Default::default(),
                hash: Default::default(),
                unhandled: Default::default(),
                announce: Default::default(),
                table_size: 0,
                imbalance: Default::default(),
                safety: Default::default(),
                health: Default::default(),
                backends: Vec::new(),
            };
            let endpoint = vip.endpoint();
            let label = match &name {
                Some(n) => format!("VIP {n:?}"),
                None => path.clone(),
            };
            match endpoints.entry((address, port, protocol)) {
                Entry::Vacant(e) => {
                    e.insert(First {
                        offset: raw_address.span.start,
                        what: label,
                    });
                }
                Entry::Occupied(e) => {
                    let first = e.get();
                    let reason = format!(
                        "{endpoint} is already used by {} (line {}); address, port and protocol \
                         together must be unique across VIPs",
                        first.what,
                        self.lines.line(first.offset)
                    );
                    self.problem(&raw_address.span, field_path(path, "address"), reason);
                }
            }
        }

        let mut ctx = VipContext {
            label: match &name {
                Some(n) => format!("VIP {n:?}"),
                None => path.clone(),
            },
            address,
            forwarding,
            tunnel: defaults.tunnel,
            missing_v4_reported: false,
            missing_v6_reported: false,
        };
        let backends = self.backends(raw, &mut ctx);
        let table_size = self.table_size(raw);
        let imbalance = match &raw.imbalance {
            None => Some(defaults.imbalance.clone()),
            Some(table) => self.thresholds(table, defaults.imbalance),
        };
        let safety = match &raw.safety {
            None => Some(defaults.safety.clone()),
            Some(table) => self.safety(table, defaults.safety),
        };
        let health = health::vip_health(
            self,
            raw.health.as_ref(),
            defaults.health,
            port,
            &raw.span,
            path,
        );

        Some(Vip {
            name: name?,
            address: address?,
            port: port?,
            protocol: protocol?,
            forwarding: forwarding?,
            hash: hash?,
            unhandled: unhandled?,
            announce: announce?,
            table_size: table_size?,
            imbalance: imbalance?,
            safety: safety?,
            health: health?,
            backends: backends?,
        })
    }

    /// VIPs at one address must agree on `unhandled`: the kernel reads it
    /// per address (an unhandled packet may have no port to tell VIPs apart).
    fn same_unhandled(
        &mut self,
        vip: &Vip,
        raw: &RawVip,
        seen: &mut HashMap<IpAddr, (Unhandled, First)>,
    ) {
        let span = raw.unhandled.as_ref().map_or(&raw.span, |u| &u.span);
        match seen.entry(vip.address) {
            Entry::Vacant(e) => {
                e.insert((
                    vip.unhandled,
                    First {
                        offset: span.start,
                        what: format!("VIP {:?}", vip.name),
                    },
                ));
            }
            Entry::Occupied(e) => {
                let (first_value, first) = e.get();
                if *first_value != vip.unhandled {
                    let reason = format!(
                        "unhandled = \"{}\" but {} (line {}) at the same address {} has \"{}\"; \
                         VIPs sharing an address must agree",
                        vip.unhandled,
                        first.what,
                        self.lines.line(first.offset),
                        vip.address,
                        first_value
                    );
                    self.problem(span, field_path(&raw.path, "unhandled"), reason);
                }
            }
        }
    }

    fn backends(&mut self, vip: &RawVip, ctx: &mut VipContext<'_>) -> Option<Vec<Backend>> {
        let mut names: HashMap<String, First> = HashMap::new();
        let mut addresses: HashMap<IpAddr, First> = HashMap::new();
        let mut out = Vec::with_capacity(vip.backends.len());
        let mut all_ok = true;
        for raw in &vip.backends {
            match self.backend(raw, ctx, &mut names, &mut addresses) {
                Some(b) => out.push(b),
                None => all_ok = false,
            }
        }
        all_ok.then_some(out)
    }

    fn backend(
        &mut self,
        raw: &RawBackend,
        ctx: &mut VipContext<'_>,
        names: &mut HashMap<String, First>,
        addresses: &mut HashMap<IpAddr, First>,
    ) -> Option<Backend> {
        let path = &raw.path;
        let name = raw
            .name
            .as_ref()
            .and_then(|n| self.name(n, field_at(path, "name")));
        if let (Some(name), Some(raw_name)) = (&name, &raw.name) {
            self.unique(
                names,
                name.clone(),
                raw_name,
                field_at(path, "name"),
                || format!("duplicate backend name {name:?} in this VIP"),
            );
        }
        let address = raw
            .address
            .as_ref()
            .and_then(|a| self.address(a, field_at(path, "address"), false));
        if let (Some(address), Some(raw_address)) = (address, &raw.address) {
            self.unique(
                addresses,
                address,
                raw_address,
                field_at(path, "address"),
                || format!("duplicate backend address {address} in this VIP"),
            );
        }
        if let (Some(address), Some(raw_address)) = (address, &raw.address)
            && ctx.address == Some(address)
        {
            self.problem(
                &raw_address.span,
                field_path(path, "address"),
                format!(
                    "{address} is the VIP's own address: the backend must be another host \
                     (frames or tunnels to it would come back to this balancer)"
                ),
            );
        }
        if let (Some(address), Some(raw_address)) = (address, &raw.address) {
            let label = raw.name.as_ref().map_or(path.as_str(), |n| &n.value);
            forwarding::tunnel_backend(self, ctx, label, address, raw_address, path);
        }
        let mac = forwarding::backend_mac(self, raw.mac.as_ref(), &raw.span, path, ctx);
        let weight = match &raw.weight {
            None => Some(1),
            Some(w) => self.weight(w, field_at(path, "weight")),
        };
        let state = match &raw.state {
            None => Some(BackendState::Active),
            Some(s) => self.state(s, field_at(path, "state")),
        };
        // Checked even when the weight is wrong, to report both.
        let capacity = match &raw.capacity {
            None => Some(None),
            Some(c) => self.capacity(c, field_at(path, "capacity")).map(Some),
        };
        let weight = weight?;
        Some(Backend {
            name: name?,
            address: address?,
            mac: mac?,
            weight,
            capacity: capacity?.unwrap_or(f64::from(weight)),
            state: state?,
        })
    }

    /// Records a duplicate, naming the line of the first one.
    fn unique<K: std::hash::Hash + Eq, T>(
        &mut self,
        seen: &mut HashMap<K, First>,
        key: K,
        at: &Sp<T>,
        field: impl std::fmt::Display,
        reason: impl FnOnce() -> String,
    ) {
        match seen.entry(key) {
            Entry::Vacant(e) => {
                e.insert(First {
                    offset: at.span.start,
                    what: String::new(),
                });
            }
            Entry::Occupied(e) => {
                let line = self.lines.line(e.get().offset);
                self.problem(
                    &at.span,
                    field.to_string(),
                    format!("{} (first at line {line})", reason()),
                );
            }
        }
    }

    /// VIP and backend names: metric labels and Maglev input.
    fn name(&mut self, v: &Sp<String>, field: impl std::fmt::Display + Copy) -> Option<String> {
        let name = &v.value;
        let reason = if name.is_empty() {
            "must not be empty".to_string()
        } else if name.chars().count() > MAX_NAME_LEN {
            format!(
                "{name:?} is {} characters long; at most {MAX_NAME_LEN} are allowed",
                name.chars().count()
            )
        } else if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            format!(
                "{name:?} contains {c:?}; names may only contain letters A-Z and a-z, digits, \
                 '_', '.' and '-'"
            )
        } else {
            return Some(name.clone());
        };
        self.problem(&v.span, field.to_string(), reason);
        None
    }

    fn address(
        &mut self,
        v: &Sp<String>,
        field: impl std::fmt::Display + Copy,
        is_vip: bool,
    ) -> Option<IpAddr> {
        let text = v.value.trim();
        let address: IpAddr = match text.parse() {
            Ok(a) => a,
            Err(_) => {
                let hint = if text.parse::<SocketAddr>().is_ok() {
                    if is_vip {
                        "; give the port in `port`, not in the address"
                    } else {
                        "; a backend address has no port (the VIP's port is kept)"
                    }
                } else if text.contains('/') {
                    "; give a single address, without a prefix length"
                } else {
                    ""
                };
                self.problem(
                    &v.span,
                    field.to_string(),
                    format!("{:?} is not an IPv4 or IPv6 address{hint}", v.value),
                );
                return None;
            }
        };
        let what = if is_vip { "a VIP" } else { "a backend" };
        let bad = if address.is_unspecified() {
            Some("the unspecified address")
        } else if address.is_multicast() {
            Some("a multicast address")
        } else if matches!(address, IpAddr::V4(a) if a.is_broadcast()) {
            Some("the broadcast address")
        } else {
            None
        };
        if let Some(bad) = bad {
            self.problem(
                &v.span,
                field.to_string(),
                format!("{address} is {bad}; {what} needs a unicast address"),
            );
            return None;
        }
        Some(address)
    }

    fn protocol(&mut self, v: &Sp<String>, field: &str) -> Option<Protocol> {
        match v.value.as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            other => {
                let hint = if matches!(other.to_ascii_lowercase().as_str(), "tcp" | "udp") {
                    " (lowercase)"
                } else {
                    ""
                };
                self.problem(
                    &v.span,
                    field,
                    format!("unsupported protocol {other:?}: must be \"tcp\" or \"udp\"{hint}"),
                );
                None
            }
        }
    }

    fn table_size(&mut self, vip: &RawVip) -> Option<u32> {
        let field = field_path(&vip.path, "table_size");
        let backends = vip.backends.len() as u64;
        let needed = backends * SLOTS_PER_BACKEND;
        let (size, span) = match &vip.table_size {
            None => {
                if u64::from(DEFAULT_TABLE_SIZE) < needed {
                    let reason = format!(
                        "the default table_size {DEFAULT_TABLE_SIZE} is too small for {backends} \
                         backends (at least {SLOTS_PER_BACKEND} slots per backend): {}",
                        self.bigger_table_advice(needed)
                    );
                    self.problem(&vip.span, field, reason);
                    return None;
                }
                return Some(DEFAULT_TABLE_SIZE);
            }
            Some(v) => (v.value, &v.span),
        };
        let range = format!(
            "a prime between {MIN_TABLE_SIZE} and {MAX_TABLE_SIZE} (default {DEFAULT_TABLE_SIZE})"
        );
        if size < i128::from(MIN_TABLE_SIZE) {
            self.problem(
                span,
                field,
                format!("must be at least {MIN_TABLE_SIZE}: use {range}"),
            );
            return None;
        }
        if size > i128::from(MAX_TABLE_SIZE) {
            self.problem(
                span,
                field,
                format!(
                    "must be at most {MAX_TABLE_SIZE}, the largest supported table: use {range}"
                ),
            );
            return None;
        }
        let size = size as u32;
        let mut ok = true;
        if !is_prime(size) {
            let suggestion = next_prime(size)
                .filter(|p| *p <= MAX_TABLE_SIZE)
                .unwrap_or(MAX_TABLE_SIZE);
            self.problem(
                span,
                field.clone(),
                format!("must be a prime number ({size} is not; {suggestion} is)"),
            );
            ok = false;
        }
        if u64::from(size) < needed {
            let reason = format!(
                "{size} is too small for {backends} backends (at least {SLOTS_PER_BACKEND} slots \
                 per backend, {needed}): {}",
                self.bigger_table_advice(needed)
            );
            self.problem(span, field, reason);
            ok = false;
        }
        ok.then_some(size)
    }

    fn bigger_table_advice(&self, needed: u64) -> String {
        match u32::try_from(needed).ok().and_then(next_prime) {
            Some(p) if p <= MAX_TABLE_SIZE => {
                format!("set table_size to a prime >= {needed}, such as {p}")
            }
            _ => format!(
                "even the largest table ({MAX_TABLE_SIZE}) is too small; split the backends \
                 across VIPs"
            ),
        }
    }

    fn weight(&mut self, v: &Sp<i128>, field: impl std::fmt::Display + Copy) -> Option<u32> {
        if v.value < 1 {
            self.problem(
                &v.span,
                field.to_string(),
                format!(
                    "must be at least 1 (got {}); weight 0 is not a state: use state = \"disabled\" \
                     to take a backend out, or state = \"draining\" to let its flows finish",
                    v.value
                ),
            );
            return None;
        }
        self.in_range(v, field, 1, MAX_WEIGHT.into(), "")
            .map(|w| w as u32)
    }

    /// A backend's relative capacity: a number in (0, 1e6].
    fn capacity(&mut self, v: &Sp<f64>, field: impl std::fmt::Display + Copy) -> Option<f64> {
        if v.value > 0.0 && v.value <= MAX_CAPACITY {
            return Some(v.value);
        }
        self.problem(
            &v.span,
            field.to_string(),
            format!(
                "must be a number greater than 0 and at most {MAX_CAPACITY} (default: the \
                 backend's weight), got {}",
                v.value
            ),
        );
        None
    }

    fn state(
        &mut self,
        v: &Sp<String>,
        field: impl std::fmt::Display + Copy,
    ) -> Option<BackendState> {
        match v.value.as_str() {
            "active" => Some(BackendState::Active),
            "draining" => Some(BackendState::Draining),
            "disabled" => Some(BackendState::Disabled),
            other => {
                self.problem(
                    &v.span,
                    field.to_string(),
                    format!(
                        "unknown state {other:?}: must be one of \"active\", \"draining\", \
                         \"disabled\""
                    ),
                );
                None
            }
        }
    }

    /// `127.0.0.1:9470`, `[::1]:9470`: where the daemon serves /metrics.
    fn metrics_address(&mut self, v: &Sp<String>) -> Option<SocketAddr> {
        const EXAMPLE: &str = "for example \"127.0.0.1:9470\" or \"[::1]:9470\"";
        let text = v.value.trim();
        let reason = match text.parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => format!(
                "{:?}: the port must be between 1 and 65535, got 0; give a fixed port, {EXAMPLE}",
                v.value
            ),
            Ok(a)
                if a.ip().is_multicast()
                    || matches!(a.ip(), IpAddr::V4(ip) if ip.is_broadcast()) =>
            {
                format!(
                    "{:?}: cannot listen on a multicast or broadcast address; give a local \
                     address, {EXAMPLE}",
                    v.value
                )
            }
            Ok(a) => return Some(a),
            Err(_) => {
                let bare = text
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .unwrap_or(text);
                let port_hint = match bare.parse::<IpAddr>() {
                    Ok(IpAddr::V4(ip)) => Some(format!("write \"{ip}:9470\"")),
                    Ok(IpAddr::V6(ip)) => Some(format!(
                        "an IPv6 address takes brackets before the port: write \"[{ip}]:9470\""
                    )),
                    Err(_) => None,
                };
                match port_hint {
                    Some(hint) => format!("{:?} has no port; {hint}", v.value),
                    None => match text.rsplit_once(':') {
                        Some((host, port))
                            if host
                                .trim_matches(|c| c == '[' || c == ']')
                                .parse::<IpAddr>()
                                .is_ok()
                                && !port.is_empty()
                                && port.bytes().all(|b| b.is_ascii_digit()) =>
                        {
                            format!(
                                "{:?}: the port must be between 1 and 65535, got {port}; \
                                 {EXAMPLE}",
                                v.value
                            )
                        }
                        _ => format!(
                            "{:?} is not an IP address and port: expected an IPv4 address or a \
                             bracketed IPv6 address, then ':' and a port, {EXAMPLE} (host names \
                             are not resolved)",
                            v.value
                        ),
                    },
                }
            }
        };
        self.problem(&v.span, "metrics_address", reason);
        None
    }

    /// A top-level `[imbalance]` or `[safety]` written below a `[[vip]]` is
    /// still the defaults of every VIP, whatever its place suggests. Refuse
    /// it there: whoever wrote it under a VIP most likely meant
    /// `[vip.imbalance]` (`[vip.safety]`). `what` names its keys: "thresholds".
    pub(super) fn section_placement(
        &mut self,
        span: &Range<usize>,
        path: &str,
        section: &str,
        what: &str,
        raw: &RawConfig,
    ) {
        if let Some(vip) = raw.vips.first()
            && span.start > vip.span.start
        {
            let reason = format!(
                "the [{section}] section sets the defaults of every VIP, but it is written below \
                 the first [[vip]] (line {}): move it above the first [[vip]], or, for one VIP's \
                 own {what}, write [vip.{section}] under that VIP",
                self.lines.line(vip.span.start)
            );
            self.problem(span, path, reason);
        }
    }

    /// A `[safety]` or `[vip.safety]` table over `base`: each key given
    /// replaces the base's value, the others are kept.
    fn safety(&mut self, raw: &RawSafety, base: &Safety) -> Option<Safety> {
        let builtin = Safety::default();
        let path = &raw.path;
        let max_share_growth = self.threshold(
            raw.max_share_growth.as_ref(),
            path,
            &MAX_SHARE_GROWTH,
            base.max_share_growth,
            builtin.max_share_growth,
        );
        let max_capacity_ratio = self.threshold(
            raw.max_capacity_ratio.as_ref(),
            path,
            &MAX_CAPACITY_RATIO,
            base.max_capacity_ratio,
            builtin.max_capacity_ratio,
        );
        let max_flows_moved = self.threshold(
            raw.max_flows_moved.as_ref(),
            path,
            &MAX_FLOWS_MOVED,
            base.max_flows_moved,
            builtin.max_flows_moved,
        );
        let max_capacity_removed = self.threshold(
            raw.max_capacity_removed.as_ref(),
            path,
            &MAX_CAPACITY_REMOVED,
            base.max_capacity_removed,
            builtin.max_capacity_removed,
        );
        Some(Safety {
            max_share_growth: max_share_growth?,
            max_capacity_ratio: max_capacity_ratio?,
            max_flows_moved: max_flows_moved?,
            max_capacity_removed: max_capacity_removed?,
        })
    }

    /// An `[imbalance]` or `[vip.imbalance]` table over `base`: each key
    /// given replaces the base's value, the others are kept.
    fn thresholds(&mut self, raw: &RawImbalance, base: &Thresholds) -> Option<Thresholds> {
        let builtin = Thresholds::default();
        let path = &raw.path;
        let max_ratio = self.threshold(
            raw.max_ratio.as_ref(),
            path,
            &MAX_RATIO,
            base.max_ratio,
            builtin.max_ratio,
        );
        let max_cv = self.threshold(
            raw.max_cv.as_ref(),
            path,
            &MAX_CV,
            base.max_cv,
            builtin.max_cv,
        );
        let min_new_flow_rate = self.threshold(
            raw.min_new_flow_rate.as_ref(),
            path,
            &MIN_NEW_FLOW_RATE,
            base.min_new_flow_rate,
            builtin.min_new_flow_rate,
        );
        let min_packet_rate = self.threshold(
            raw.min_packet_rate.as_ref(),
            path,
            &MIN_PACKET_RATE,
            base.min_packet_rate,
            builtin.min_packet_rate,
        );
        let hold_seconds = self.period(
            raw.hold.as_ref(),
            path,
            &HOLD,
            base.hold_seconds,
            builtin.hold_seconds,
        );
        let window_seconds = self.period(
            raw.window.as_ref(),
            path,
            &WINDOW,
            base.window_seconds,
            builtin.window_seconds,
        );
        Some(Thresholds {
            max_ratio: max_ratio?,
            max_cv: max_cv?,
            min_new_flow_rate: min_new_flow_rate?,
            min_packet_rate: min_packet_rate?,
            hold_seconds: hold_seconds?,
            window_seconds: window_seconds?,
        })
    }

    /// A number threshold: `base` if not given, else the value if it keeps
    /// the rule.
    fn threshold(
        &mut self,
        v: Option<&Sp<f64>>,
        path: &str,
        rule: &NumberRule,
        base: f64,
        builtin: f64,
    ) -> Option<f64> {
        let Some(v) = v else { return Some(base) };
        if (rule.valid)(v.value) {
            return Some(v.value);
        }
        self.problem(
            &v.span,
            field_path(path, rule.key),
            format!("{} (default {builtin}), got {}", rule.rule, v.value),
        );
        None
    }
}

/// The smallest prime >= n, if it fits in a u32.
fn next_prime(n: u32) -> Option<u32> {
    (n.max(2)..=u32::MAX).find(|&p| is_prime(p))
}

#[cfg(test)]
mod tests {
    use super::super::check::{format_duration, parse_duration};
    use super::super::types::MacAddr;
    use super::*;

    const EXAMPLE: &str = r#"
# comment
interface = "eth0"
hash_seed = 1
metrics_address = "[::1]:9471"

[imbalance]
max_ratio = 2

[[vip]]
name = "web"
address = "198.18.100.1"
port = 8080
protocol = "tcp"
table_size = 65537

  [[vip.backend]]
  name = "b1"
  address = "198.18.0.11"
  mac = "02:00:00:00:00:11"
  weight = 1

  [[vip.backend]]
  name = "b2"
  address = "198.18.0.12"
  mac = "02:00:00:00:00:12"
  state = "draining"

  [[vip.backend]]
  name = "b3"
  address = "198.18.0.13"
  mac = "02:AB:00:00:00:13"
  weight = 2
  state = "disabled"

  [vip.imbalance]
  hold = "30s"

[[vip]]
name = "dns6"
address = "2001:db8:100::1"
port = 0
protocol = "udp"
backend = [
  { name = "z", address = "2001:db8::11", mac = "02:00:00:00:00:11" },
  { name = "a", address = "2001:db8::12", mac = "02:00:00:00:00:12", weight = 10000 },
]

[[vip]]
name = "empty"
address = "198.18.100.2"
port = 53
protocol = "udp"
table_size = 101
"#;

    fn backend(
        name: &str,
        address: &str,
        mac: [u8; 6],
        weight: u32,
        state: BackendState,
    ) -> Backend {
        Backend {
            name: name.into(),
            address: address.parse().unwrap(),
            mac: MacAddr(mac),
            weight,
            capacity: f64::from(weight),
            state,
        }
    }

    #[test]
    fn example_parses_with_defaults_in_file_order() {
        let config = parse_and_validate(EXAMPLE, "x.toml").unwrap();
        let defaults = Thresholds {
            max_ratio: 2.0,
            ..Thresholds::default()
        };
        let expected = Config {
            interface: "eth0".into(),
            hash_seed: 1,
            metrics_address: "[::1]:9471".parse().unwrap(),
            conn_table_size: lb_common::maps::CONN_TABLE_SIZE,
            icmp_echo: Default::default(),
            unhandled: Default::default(),
            announce: Default::default(),
            tunnel: Default::default(),
            vips: vec![
                std::sync::Arc::new(Vip {
                    name: "web".into(),
                    address: "198.18.100.1".parse().unwrap(),
                    port: 8080,
                    protocol: Protocol::Tcp,
                    forwarding: Default::default(),
                    hash: Default::default(),
                    unhandled: Default::default(),
                    announce: Default::default(),
                    table_size: 65537,
                    imbalance: Thresholds {
                        hold_seconds: 30.0,
                        ..defaults.clone()
                    },
                    safety: Safety::default(),
                    health: Default::default(),
                    backends: vec![
                        backend(
                            "b1",
                            "198.18.0.11",
                            [2, 0, 0, 0, 0, 0x11],
                            1,
                            BackendState::Active,
                        ),
                        backend(
                            "b2",
                            "198.18.0.12",
                            [2, 0, 0, 0, 0, 0x12],
                            1,
                            BackendState::Draining,
                        ),
                        backend(
                            "b3",
                            "198.18.0.13",
                            [2, 0xab, 0, 0, 0, 0x13],
                            2,
                            BackendState::Disabled,
                        ),
                    ],
                }),
                std::sync::Arc::new(Vip {
                    name: "dns6".into(),
                    address: "2001:db8:100::1".parse().unwrap(),
                    port: 0,
                    protocol: Protocol::Udp,
                    forwarding: Default::default(),
                    hash: Default::default(),
                    unhandled: Default::default(),
                    announce: Default::default(),
                    table_size: DEFAULT_TABLE_SIZE,
                    imbalance: defaults.clone(),
                    safety: Safety::default(),
                    health: Default::default(),
                    backends: vec![
                        backend(
                            "z",
                            "2001:db8::11",
                            [2, 0, 0, 0, 0, 0x11],
                            1,
                            BackendState::Active,
                        ),
                        backend(
                            "a",
                            "2001:db8::12",
                            [2, 0, 0, 0, 0, 0x12],
                            10000,
                            BackendState::Active,
                        ),
                    ],
                }),
                std::sync::Arc::new(Vip {
                    name: "empty".into(),
                    address: "198.18.100.2".parse().unwrap(),
                    port: 53,
                    protocol: Protocol::Udp,
                    forwarding: Default::default(),
                    hash: Default::default(),
                    unhandled: Default::default(),
                    announce: Default::default(),
                    table_size: 101,
                    imbalance: defaults.clone(),
                    safety: Safety::default(),
                    health: Default::default(),
                    backends: vec![],
                }),
            ],
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn minimal_config_defaults() {
        let config = parse_and_validate("interface = \"lo\"\n", "x.toml").unwrap();
        assert_eq!(
            config,
            Config {
                interface: "lo".into(),
                hash_seed: 0,
                metrics_address: DEFAULT_METRICS_ADDRESS,
                conn_table_size: lb_common::maps::CONN_TABLE_SIZE,
                icmp_echo: crate::config::IcmpEcho::Reply,
                unhandled: Default::default(),
                announce: Default::default(),
                tunnel: Tunnel {
                    source_v4: None,
                    source_v6: None,
                    gue_port: lb_common::DEFAULT_GUE_PORT,
                    gateway_mac: None,
                },
                vips: vec![]
            }
        );
    }

    #[test]
    fn same_address_port_different_protocol_or_port_is_fine() {
        let text = r#"
interface = "eth0"
hash_seed = 4294967295
[[vip]]
name = "a"
address = "198.18.100.1"
port = 53
protocol = "tcp"
[[vip]]
name = "b"
address = "198.18.100.1"
port = 53
protocol = "udp"
[[vip]]
name = "c"
address = "198.18.100.1"
port = 0
protocol = "udp"
"#;
        let config = parse_and_validate(text, "x.toml").unwrap();
        assert_eq!(config.vips.len(), 3);
        assert_eq!(config.hash_seed, u32::MAX);
    }

    fn problems(text: &str) -> Vec<String> {
        match parse_and_validate(text, "f.toml") {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
        }
    }

    fn vip_with_backends(n: usize, table_size: Option<u32>) -> String {
        let mut text = String::from(
            "interface = \"eth0\"\n[[vip]]\nname = \"v\"\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n",
        );
        if let Some(t) = table_size {
            text.push_str(&format!("table_size = {t}\n"));
        }
        for i in 0..n {
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"b{i}\"\naddress = \"10.1.{}.{}\"\nmac = \"02:00:00:00:{:02x}:{:02x}\"\n",
                i / 256,
                i % 256,
                i / 256,
                i % 256
            ));
        }
        text
    }

    #[test]
    fn default_table_too_small_for_many_backends() {
        let p = problems(&vip_with_backends(656, None));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "2:1: vip[0].table_size: the default table_size 65537 is too small for 656 backends"
            ),
            "{p:?}"
        );
        assert!(p[0].contains("such as 65609"), "{p:?}");
        assert!(parse_and_validate(&vip_with_backends(655, None), "x").is_ok());
        assert!(parse_and_validate(&vip_with_backends(656, Some(65609)), "x").is_ok());
    }

    #[test]
    fn too_many_backends_and_vips() {
        let mut text = String::from("interface = \"eth0\"\n");
        for v in 0..=MAX_VIPS {
            text.push_str(&format!(
                "[[vip]]\nname = \"v{v}\"\naddress = \"10.0.{}.{}\"\nport = 80\nprotocol = \"tcp\"\n",
                v / 256,
                v % 256
            ));
            for b in 0..65 {
                text.push_str(&format!(
                    "[[vip.backend]]\nname = \"b{b}\"\naddress = \"10.1.0.{b}\"\nmac = \"02:00:00:00:00:01\"\n"
                ));
            }
        }
        let p = problems(&text);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("vip[1008].backend[16]: too many backends: at most 65536"),
            "{p:?}"
        );
        assert!(
            p[1].contains(
                "vip[1024]: too many VIPs: at most 1024 are supported, this file has 1025"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            MacAddr::parse("02:00:00:00:00:11"),
            Some(MacAddr([2, 0, 0, 0, 0, 0x11]))
        );
        assert_eq!(
            MacAddr::parse("aA:bb:cc:dd:ee:ff"),
            Some(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]))
        );
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:11:22",
            "2:00:00:00:00:11",
            "02-00-00-00-00-11",
            "02:00:00:00:00:1g",
            "+2:00:00:00:00:11",
        ] {
            assert_eq!(MacAddr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations() {
        for (text, secs) in [
            ("0s", 0.0),
            ("10s", 10.0),
            ("500ms", 0.5),
            ("1.5s", 1.5),
            ("2m", 120.0),
            ("1h", 3600.0),
            (" 10s ", 10.0),
        ] {
            assert_eq!(
                parse_duration(text).map(|d| d.as_secs_f64()),
                Ok(secs),
                "{text}"
            );
        }
        for bad in [
            "",
            "10",
            "1.5",
            "s",
            "-1s",
            "10 parsecs",
            "ten seconds",
            "1,5s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(
            parse_duration("10")
                .unwrap_err()
                .contains("write e.g. \"10s\"")
        );
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn primes() {
        assert_eq!(next_prime(65536), Some(65537));
        assert_eq!(next_prime(100), Some(101));
        assert_eq!(next_prime(MAX_TABLE_SIZE), Some(MAX_TABLE_SIZE));
        assert!(
            is_prime(DEFAULT_TABLE_SIZE) && is_prime(MAX_TABLE_SIZE) && is_prime(MIN_TABLE_SIZE)
        );
        // A single VIP of 10,000 backends still gets a big enough table.
        assert!(SLOTS_PER_BACKEND * 10_000 <= u64::from(MAX_TABLE_SIZE));
    }

    #[test]
    fn positions_count_characters() {
        let index = LineIndex::new("a\nbé = 1\n\n");
        assert_eq!(index.position(0), (1, 1));
        assert_eq!(index.position(2), (2, 1));
        assert_eq!(index.position(6), (2, 4));
        assert_eq!(index.position(11), (4, 1));
        assert_eq!(index.position(999), (4, 1));
    }

    #[test]
    fn syntax_error_is_one_line() {
        let p = problems("interface = \"eth0\nhash_seed = 1\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("1:18: toml: "), "{p:?}");
        assert!(!p[0].contains('\n'));
    }
}
