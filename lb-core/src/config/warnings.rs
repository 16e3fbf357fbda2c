//! Warnings: a config that works but is likely a mistake. `xlb validate`,
//! `plan` and `apply` print them on stderr (and `-o json` carries them);
//! they never change an exit code. What cannot work is an error instead
//! (validate.rs).

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::types::{CheckKind, Config, Forwarding, Protocol, Vip};

/// One warning: the field it is about (`vip[web]`, `vip[web].backend[b2].mac`)
/// and why it is likely a mistake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// From this many VIPs on, [`warnings`] looks at them on every core.
const PARALLEL_VIPS: usize = 64;

/// Every warning of `config`, VIP by VIP in file order. Each VIP's own:
/// at the declared limits (1,000 VIPs x 64 backends) they are looked for
/// on every core, a plan's and an apply's serial work otherwise.
pub fn warnings(config: &Config) -> Vec<Warning> {
    if config.vips.len() < PARALLEL_VIPS {
        let mut out = Vec::new();
        for v in &config.vips {
            vip_warnings(v, &mut out);
        }
        return out;
    }
    let each: Vec<Vec<Warning>> = config
        .vips
        .par_iter()
        .map(|v| {
            let mut out = Vec::new();
            vip_warnings(v, &mut out);
            out
        })
        .collect();
    each.concat()
}

/// `v`'s warnings, added to `out`.
fn vip_warnings(v: &Vip, out: &mut Vec<Warning>) {
    let at = |field: &str| {
        if field.is_empty() {
            format!("vip[{}]", v.name)
        } else {
            format!("vip[{}].{field}", v.name)
        }
    };
    if v.backends.is_empty() {
        out.push(Warning {
            field: at(""),
            message: "has no backends: every packet to it is dropped".into(),
        });
    } else if v.table_backends().next().is_none() {
        out.push(Warning {
            field: at(""),
            message: "has no active backend (all draining or disabled): new flows to it \
                      are dropped"
                .into(),
        });
    }
    if v.forwarding == Forwarding::Dsr {
        // Keyed by the bytes: formatting 64,000 MACs to compare them
        // was most of a large config's warnings.
        let mut macs: HashMap<[u8; 6], &str> = HashMap::with_capacity(v.backends.len());
        for b in &v.backends {
            match macs.get(&b.mac.0) {
                Some(first) => out.push(Warning {
                    field: at(&format!("backend[{}].mac", b.name)),
                    message: format!(
                        "{} is also {first}'s: with L2 DSR both backends' frames go to \
                         one host",
                        b.mac
                    ),
                }),
                None => {
                    macs.insert(b.mac.0, b.name.as_str());
                }
            }
        }
        if v.address.is_ipv6()
            && v.backends.iter().all(|b| b.address.is_ipv4())
            && v.health.enabled()
        {
            out.push(Warning {
                field: at("health"),
                message: "an IPv6 VIP whose backends have only IPv4 addresses: its health \
                          checks test IPv4, not the IPv6 service clients reach"
                    .into(),
            });
        }
    }
    if v.protocol == Protocol::Udp && v.health.kind != CheckKind::None {
        out.push(Warning {
            field: at("health"),
            message: format!(
                "a UDP VIP checked by TCP connects to port {} (a top-level [health] applies \
                 to every VIP): is a TCP service there? Give it its own [vip.health], or \
                 kind = \"none\"",
                v.health.port
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On every core or not, the warnings come VIP by VIP in file order.
    #[test]
    fn many_vips_warn_in_file_order() {
        for n in [3, PARALLEL_VIPS, 2 * PARALLEL_VIPS + 1] {
            let mut text = String::from("interface = \"eth0\"\n");
            for i in 0..n {
                // Every other VIP: its two backends on one MAC.
                let mac = if i % 2 == 0 { 1 } else { 2 };
                text.push_str(&format!(
                    "[[vip]]\nname = \"v{i}\"\naddress = \"198.18.100.{}\"\nport = {}\n\
                     protocol = \"tcp\"\n[[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.1\"\n\
                     mac = \"02:00:00:00:00:01\"\n[[vip.backend]]\nname = \"b\"\n\
                     address = \"198.18.0.2\"\nmac = \"02:00:00:00:00:0{mac}\"\n",
                    i % 250 + 1,
                    80 + i / 250
                ));
            }
            let config = crate::config::parse(&text, "f.toml").unwrap();
            let mut one_by_one = Vec::new();
            for v in &config.vips {
                vip_warnings(v, &mut one_by_one);
            }
            let all = warnings(&config);
            assert_eq!(all, one_by_one, "{n} VIPs");
            assert_eq!(all.len(), n.div_ceil(2), "{all:#?}");
            assert_eq!(all[0].field, "vip[v0].backend[b].mac");
            assert_eq!(all[1].field, "vip[v2].backend[b].mac");
        }
    }
}
