//! What differs: one VIP's backends, predicted shares and diff lines, and
//! the config-wide lines. Backends are matched by name and listed by name,
//! so the order of the file never shows as a change.

use std::fmt::Display;

use itertools::{EitherOrBoth, Itertools as _};

use crate::config::{Backend, Config, Safety, Thresholds, Vip};

use super::flows::{Built, moved_ratio};
use super::types::{BackendPlan, Change, Established, VipPlan, ratio};

/// One side of a VIP's change: its config and the table it builds.
#[derive(Clone, Copy)]
pub(super) struct Side<'a> {
    pub vip: &'a Vip,
    pub built: &'a Built,
}

/// The plan of one VIP, present in `before`, `after` or both.
pub(super) fn vip_plan(before: Option<Side<'_>>, after: Option<Side<'_>>) -> VipPlan {
    let name = after
        .or(before)
        .map(|s| s.vip.name.clone())
        .expect("a VIP is on one side at least");
    let both = union(before, after);
    let backends = backend_plans(before, after, &both);
    let (change, details, flows_moved_ratio) = match (before, after) {
        (Some(b), Some(a)) => {
            let details = vip_details(b, a, &both);
            let change = if details.is_empty() {
                Change::Unchanged
            } else {
                Change::Changed
            };
            (change, details, ratio(moved_ratio(b.built, a.built)))
        }
        (None, Some(a)) => (
            Change::Added,
            vec![format!(
                "VIP added: {}, {}table_size {}, {}",
                a.vip.endpoint(),
                non_default_methods(a.vip),
                a.vip.table_size,
                count_backends(a.vip)
            )],
            1.0,
        ),
        (Some(b), None) => (
            Change::Removed,
            vec![format!(
                "VIP removed: {}, {}",
                b.vip.endpoint(),
                count_backends(b.vip)
            )],
            1.0,
        ),
        (None, None) => unreachable!("checked above"),
    };
    VipPlan {
        name,
        change,
        details,
        flows_moved_ratio,
        backends,
        notes: Vec::new(),
    }
}

/// Lines for changes outside any one VIP.
pub(super) fn config_details(base: &Config, candidate: &Config) -> Vec<String> {
    let mut out = Vec::new();
    diff(&mut out, "interface", &base.interface, &candidate.interface);
    diff(&mut out, "hash_seed", &base.hash_seed, &candidate.hash_seed);
    diff(
        &mut out,
        "metrics_address",
        &base.metrics_address,
        &candidate.metrics_address,
    );
    diff(
        &mut out,
        "conn_table_size",
        &base.conn_table_size,
        &candidate.conn_table_size,
    );
    diff(&mut out, "icmp_echo", &base.icmp_echo, &candidate.icmp_echo);
    diff(&mut out, "unhandled", &base.unhandled, &candidate.unhandled);
    let (b, c) = (&base.tunnel, &candidate.tunnel);
    diff(
        &mut out,
        "tunnel.source_v4",
        &shown(b.source_v4),
        &shown(c.source_v4),
    );
    diff(
        &mut out,
        "tunnel.source_v6",
        &shown(b.source_v6),
        &shown(c.source_v6),
    );
    diff(&mut out, "tunnel.gue_port", &b.gue_port, &c.gue_port);
    diff(
        &mut out,
        "tunnel.gateway_mac",
        &shown(b.gateway_mac),
        &shown(c.gateway_mac),
    );
    out
}

/// An optional setting as a diff line shows it: its value, or `none`.
fn shown<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

/// "forwarding gue, hash source, " for what differs from the defaults
/// (L2 DSR, the 5-tuple); empty for a VIP on both.
fn non_default_methods(vip: &Vip) -> String {
    let mut out = String::new();
    if vip.forwarding != Default::default() {
        out.push_str(&format!("forwarding {}, ", vip.forwarding));
    }
    if vip.hash != Default::default() {
        out.push_str(&format!("hash {}, ", vip.hash));
    }
    out
}

/// "3 backends (2 active)".
fn count_backends(vip: &Vip) -> String {
    let n = vip.backends.len();
    let active = vip.table_backends().count();
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} backend{plural} ({active} active)")
}

/// A backend name of either side, with its backend on each.
type Both<'a> = (&'a str, Option<&'a Backend>, Option<&'a Backend>);

/// Backends of either side, by name (names are unique on a side): each
/// side sorted, then merged.
fn union<'a>(before: Option<Side<'a>>, after: Option<Side<'a>>) -> Vec<Both<'a>> {
    let sorted = |side: Option<Side<'a>>| {
        let mut backends: Vec<&'a Backend> =
            side.map_or(&[][..], |s| &s.vip.backends).iter().collect();
        backends.sort_unstable_by(|x, y| x.name.cmp(&y.name));
        backends
    };
    sorted(before)
        .into_iter()
        .merge_join_by(sorted(after), |b, a| b.name.cmp(&a.name))
        .map(|sides| match sides {
            EitherOrBoth::Left(b) => (b.name.as_str(), Some(b), None),
            EitherOrBoth::Right(a) => (a.name.as_str(), None, Some(a)),
            EitherOrBoth::Both(b, a) => (a.name.as_str(), Some(b), Some(a)),
        })
        .collect()
}

fn backend_plans(
    before: Option<Side<'_>>,
    after: Option<Side<'_>>,
    both: &[Both<'_>],
) -> Vec<BackendPlan> {
    let mut shares_before = before.map(|s| s.built.shares_in_order());
    let mut shares_after = after.map(|s| s.built.shares_in_order());
    // The after side's capacity, summed once (`Vip::capacity_share`).
    let capacity_total = after.map_or(0.0, |s| s.vip.capacity_total());
    both.iter()
        .map(|&(name, b, a)| BackendPlan {
            name: name.to_string(),
            change: match (b, a) {
                (None, _) => Change::Added,
                (_, None) => Change::Removed,
                (Some(b), Some(a)) if b == a => Change::Unchanged,
                _ => Change::Changed,
            },
            weight_before: b.map(|b| b.weight),
            weight_after: a.map(|a| a.weight),
            state_before: b.map(|b| b.state.to_string()),
            state_after: a.map(|a| a.state.to_string()),
            share_before_ratio: ratio(shares_before.as_mut().map_or(0.0, |s| s.share(name))),
            share_after_ratio: ratio(shares_after.as_mut().map_or(0.0, |s| s.share(name))),
            capacity_share_ratio: ratio(
                a.map_or(0.0, |a| Vip::capacity_share_of(a, capacity_total)),
            ),
            established: match (b, a) {
                (None, _) => Established::None,
                (_, None) => Established::CutRemoved,
                (Some(b), Some(a)) if b.address != a.address => Established::CutAddressChanged,
                _ => Established::Kept,
            },
        })
        .collect()
}

/// The diff lines of a VIP in both configs: its own keys, then its
/// backends by name.
fn vip_details(before: Side<'_>, after: Side<'_>, both: &[Both<'_>]) -> Vec<String> {
    let (b, a) = (before.vip, after.vip);
    let mut out = Vec::new();
    diff(&mut out, "address", &b.address, &a.address);
    diff(&mut out, "port", &b.port, &a.port);
    diff(&mut out, "protocol", &b.protocol, &a.protocol);
    diff(&mut out, "forwarding", &b.forwarding, &a.forwarding);
    diff(&mut out, "hash", &b.hash, &a.hash);
    diff(&mut out, "unhandled", &b.unhandled, &a.unhandled);
    diff(&mut out, "table_size", &b.table_size, &a.table_size);
    diff(&mut out, "hash_seed", &before.built.seed, &after.built.seed);
    imbalance_details(&mut out, &b.imbalance, &a.imbalance);
    safety_details(&mut out, &b.safety, &a.safety);
    out.extend(crate::health::plan_details(&b.health, &a.health));
    for &(name, b, a) in both {
        match (b, a) {
            (None, Some(a)) => {
                let mut line = format!("backend {name} added (weight {}", a.weight);
                if a.capacity != f64::from(a.weight) {
                    line.push_str(&format!(", capacity {}", a.capacity));
                }
                line.push_str(&format!(", {})", a.state));
                out.push(line);
            }
            (Some(_), None) => out.push(format!("backend {name} removed")),
            // Nothing to tell (and no key to write for each field: a
            // change of every VIP at the declared limits compares 64,000
            // backends, nearly all alike).
            (Some(b), Some(a)) if b == a => {}
            (Some(b), Some(a)) => {
                let key = |field: &str| format!("backend {name}: {field}");
                diff(&mut out, &key("weight"), &b.weight, &a.weight);
                diff(&mut out, &key("state"), &b.state, &a.state);
                // A capacity that follows the weight (the default) is
                // already told by the weight line.
                let follows =
                    b.capacity == f64::from(b.weight) && a.capacity == f64::from(a.weight);
                if !follows {
                    diff(&mut out, &key("capacity"), &b.capacity, &a.capacity);
                }
                diff(&mut out, &key("address"), &b.address, &a.address);
                diff(&mut out, &key("mac"), &b.mac, &a.mac);
            }
            (None, None) => {}
        }
    }
    out
}

fn imbalance_details(out: &mut Vec<String>, b: &Thresholds, a: &Thresholds) {
    let keys: [(&str, f64, f64, &str); 6] = [
        ("max_ratio", b.max_ratio, a.max_ratio, ""),
        ("max_cv", b.max_cv, a.max_cv, ""),
        (
            "min_new_flow_rate",
            b.min_new_flow_rate,
            a.min_new_flow_rate,
            "",
        ),
        ("min_packet_rate", b.min_packet_rate, a.min_packet_rate, ""),
        ("hold", b.hold_seconds, a.hold_seconds, "s"),
        ("window", b.window_seconds, a.window_seconds, "s"),
    ];
    for (key, b, a, unit) in keys {
        if b != a {
            out.push(format!("imbalance.{key} {b}{unit} -> {a}{unit}"));
        }
    }
}

fn safety_details(out: &mut Vec<String>, b: &Safety, a: &Safety) {
    let keys: [(&str, f64, f64); 4] = [
        ("max_share_growth", b.max_share_growth, a.max_share_growth),
        (
            "max_capacity_ratio",
            b.max_capacity_ratio,
            a.max_capacity_ratio,
        ),
        ("max_flows_moved", b.max_flows_moved, a.max_flows_moved),
        (
            "max_capacity_removed",
            b.max_capacity_removed,
            a.max_capacity_removed,
        ),
    ];
    for (key, b, a) in keys {
        if b != a {
            out.push(format!("safety.{key} {b} -> {a}"));
        }
    }
}

/// `key before -> after` when they differ.
fn diff<T: PartialEq + Display>(out: &mut Vec<String>, key: &str, b: &T, a: &T) {
    if b != a {
        out.push(format!("{key} {b} -> {a}"));
    }
}
