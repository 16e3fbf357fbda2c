//! Warnings: a config that works but is likely a mistake. `xlb validate`,
//! `plan` and `apply` print them on stderr (and `-o json` carries them);
//! they never change an exit code. What cannot work is an error instead
//! (validate.rs).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::types::{CheckKind, Config, Forwarding, Protocol};

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

/// Every warning of `config`, VIP by VIP in file order.
pub fn warnings(config: &Config) -> Vec<Warning> {
    let mut out = Vec::new();
    for v in &config.vips {
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
    out
}
