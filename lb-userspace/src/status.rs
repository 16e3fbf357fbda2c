//! `xlb status`: the document the daemon serves and the CLI renders. Built by
//! a pure function from the applied state and two counter snapshots, so the
//! arithmetic is tested without a kernel.

use serde::{Deserialize, Serialize};

use crate::dataplane::CounterSnapshot;
use crate::state::Desired;
use lb_common::stats::{ACTION_NAMES, DROP_REASON_NAMES};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub schema_version: u32,
    pub interface: String,
    /// Increases by one with every successful apply.
    pub revision: u64,
    pub applied_at_unix_seconds: u64,
    /// Seconds over which `observed_share_ratio` was measured (since the apply).
    pub observed_seconds: f64,
    pub vips: Vec<VipStatus>,
    pub actions: Vec<NamedCounter>,
    pub drops: Vec<NamedCounter>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedCounter {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub table_size: u32,
    /// Since the VIP's id was created.
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    pub mac: String,
    pub state: String,
    pub weight: u32,
    /// weight / sum of the weights of the VIP's active backends.
    pub expected_share_ratio: f64,
    /// Fraction of the VIP's Maglev table slots that name this backend.
    pub table_share_ratio: f64,
    /// Fraction of the VIP's forwarded packets since the last apply; null
    /// before any packet arrived.
    pub observed_share_ratio: Option<f64>,
    /// Since the backend's id was created.
    pub packets: u64,
    pub bytes: u64,
    /// Since the last apply.
    pub packets_since_apply: u64,
}

/// Inputs that are not in `Desired`.
pub struct StatusContext<'a> {
    pub interface: &'a str,
    pub revision: u64,
    pub applied_at_unix_seconds: u64,
    pub observed_seconds: f64,
}

pub fn build(
    ctx: &StatusContext<'_>,
    desired: &Desired,
    now: &CounterSnapshot,
    at_apply: &CounterSnapshot,
) -> Status {
    let vips = desired
        .vips
        .iter()
        .map(|v| {
            let weight_sum: u64 = v.config.table_backends().map(|b| b.weight as u64).sum();
            let shares = v.table.shares();
            let since = |id: u32| {
                let n = now.backends.get(&id).map_or(0, |c| c.packets);
                let b = at_apply.backends.get(&id).map_or(0, |c| c.packets);
                n.saturating_sub(b)
            };
            let vip_since: u64 = v.backend_ids.iter().map(|&id| since(id)).sum();
            let backends = v
                .config
                .backends
                .iter()
                .zip(&v.backend_ids)
                .map(|(b, &id)| {
                    let in_table = b.state == crate::config::BackendState::Active;
                    let counters = now.backends.get(&id).copied().unwrap_or_default();
                    let packets_since_apply = since(id);
                    BackendStatus {
                        name: b.name.clone(),
                        address: b.address.to_string(),
                        mac: b.mac.to_string(),
                        state: b.state.to_string(),
                        weight: b.weight,
                        expected_share_ratio: if in_table && weight_sum > 0 {
                            b.weight as f64 / weight_sum as f64
                        } else {
                            0.0
                        },
                        table_share_ratio: v
                            .table
                            .index_of(&b.name)
                            .map_or(0.0, |i| shares[i as usize]),
                        observed_share_ratio: (vip_since > 0)
                            .then(|| packets_since_apply as f64 / vip_since as f64),
                        packets: counters.packets,
                        bytes: counters.bytes,
                        packets_since_apply,
                    }
                })
                .collect();
            let counters = now.vips.get(&v.id).copied().unwrap_or_default();
            VipStatus {
                name: v.config.name.clone(),
                address: v.config.address.to_string(),
                port: v.config.port,
                protocol: v.config.protocol.to_string(),
                table_size: v.config.table_size,
                packets: counters.packets,
                bytes: counters.bytes,
                backends,
            }
        })
        .collect();
    let named = |names: &[&str], values: &[lb_common::Counters]| {
        names
            .iter()
            .zip(values)
            .map(|(n, c)| NamedCounter {
                name: n.to_string(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect()
    };
    Status {
        schema_version: SCHEMA_VERSION,
        interface: ctx.interface.to_string(),
        revision: ctx.revision,
        applied_at_unix_seconds: ctx.applied_at_unix_seconds,
        observed_seconds: ctx.observed_seconds,
        vips,
        actions: named(&ACTION_NAMES, &now.actions),
        drops: named(&DROP_REASON_NAMES, &now.drops),
    }
}

fn pct(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

/// kubectl-like borderless table; `wide` adds addresses and byte counts.
pub fn render_table(s: &Status, wide: bool) -> String {
    let mut out = format!(
        "interface {}  revision {}  observed over {:.0}s since apply\n\n",
        s.interface, s.revision, s.observed_seconds
    );
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec![
        "VIP", "BACKEND", "STATE", "WEIGHT", "EXPECTED", "TABLE", "OBSERVED", "PACKETS",
    ];
    if wide {
        header.extend(["BYTES", "ADDRESS", "MAC"]);
    }
    rows.push(header.iter().map(|h| h.to_string()).collect());
    for v in &s.vips {
        let port = if v.port == 0 {
            "*".to_string()
        } else {
            v.port.to_string()
        };
        let host = if v.address.contains(':') {
            format!("[{}]", v.address)
        } else {
            v.address.clone()
        };
        let vip = format!("{} ({host}:{port}/{})", v.name, v.protocol);
        if v.backends.is_empty() {
            rows.push(vec![
                vip.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                v.packets.to_string(),
            ]);
        }
        for b in &v.backends {
            let mut row = vec![
                vip.clone(),
                b.name.clone(),
                b.state.clone(),
                b.weight.to_string(),
                pct(b.expected_share_ratio),
                pct(b.table_share_ratio),
                b.observed_share_ratio.map_or("-".into(), pct),
                b.packets.to_string(),
            ];
            if wide {
                row.extend([b.bytes.to_string(), b.address.clone(), b.mac.clone()]);
            }
            rows.push(row);
        }
    }
    out.push_str(&crate::table::render(&rows));
    let drops: Vec<String> = s
        .drops
        .iter()
        .filter(|d| d.packets > 0)
        .map(|d| format!("{} {}", d.name, d.packets))
        .collect();
    if !drops.is_empty() {
        out.push_str(&format!("\ndropped: {}\n", drops.join(", ")));
    }
    out
}
