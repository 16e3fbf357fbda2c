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

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::Counters;

    #[test]
    fn shares_come_from_weights_table_and_counters_since_apply() {
        let text = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n\
            [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\nweight = 1\n\
            [[vip.backend]]\nname = \"b\"\naddress = \"198.18.0.12\"\nmac = \"02:00:00:00:00:12\"\nweight = 3\n\
            [[vip.backend]]\nname = \"c\"\naddress = \"198.18.0.13\"\nmac = \"02:00:00:00:00:13\"\nstate = \"draining\"\n";
        let config = crate::config::parse(text, "t.toml").unwrap();
        let desired = crate::state::desired(&config, &Default::default()).unwrap();
        let ids = desired.vips[0].backend_ids.clone();
        let c = |packets| Counters {
            packets,
            bytes: packets * 100,
            new_flows: packets / 10,
        };
        let mut at_apply = CounterSnapshot::default();
        at_apply.backends.insert(ids[0], c(1000));
        let mut now = CounterSnapshot::default();
        now.backends.insert(ids[0], c(1000 + 30));
        now.backends.insert(ids[1], c(70));
        now.backends.insert(ids[2], c(0));
        let ctx = StatusContext {
            interface: "eth0",
            revision: 2,
            applied_at_unix_seconds: 0,
            observed_seconds: 1.0,
        };
        let s = build(&ctx, &desired, &now, &at_apply);
        let b = &s.vips[0].backends;
        assert_eq!(
            (
                b[0].expected_share_ratio,
                b[1].expected_share_ratio,
                b[2].expected_share_ratio
            ),
            (0.25, 0.75, 0.0)
        );
        assert!((b[0].table_share_ratio - 0.25).abs() < 0.01 && b[2].table_share_ratio == 0.0);
        assert_eq!(b[0].observed_share_ratio, Some(0.3));
        assert_eq!(b[1].observed_share_ratio, Some(0.7));
        assert_eq!((b[0].packets, b[0].packets_since_apply), (1030, 30));
        let table = render_table(&s, false);
        assert!(table.contains("web (198.18.100.1:80/tcp)   a"), "{table}");
    }

    #[test]
    fn no_traffic_means_no_observed_share() {
        let config = crate::config::parse(
            "interface = \"eth0\"\n[[vip]]\nname = \"w\"\naddress = \"2001:db8::1\"\nport = 0\nprotocol = \"udp\"\n\
             [[vip.backend]]\nname = \"a\"\naddress = \"2001:db8::11\"\nmac = \"02:00:00:00:00:11\"\n",
            "t.toml",
        )
        .unwrap();
        let desired = crate::state::desired(&config, &Default::default()).unwrap();
        let ctx = StatusContext {
            interface: "eth0",
            revision: 1,
            applied_at_unix_seconds: 0,
            observed_seconds: 0.0,
        };
        let s = build(
            &ctx,
            &desired,
            &CounterSnapshot::default(),
            &CounterSnapshot::default(),
        );
        assert_eq!(s.vips[0].backends[0].observed_share_ratio, None);
        assert!(render_table(&s, false).contains("w ([2001:db8::1]:*/udp)"));
    }
}
