//! Warnings: a config that works but is likely a mistake. `xlb validate`,
//! `plan` and `apply` print them on stderr (and `-o json` carries them);
//! they never change an exit code. What cannot work is an error instead
//! (validate.rs).

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
        return config.vips.iter().flat_map(|v| vip_warnings(v)).collect();
    }
    let each: Vec<Vec<Warning>> = config.vips.par_iter().map(|v| vip_warnings(v)).collect();
    each.concat()
}

/// `v`'s own warnings.
fn vip_warnings(v: &Vip) -> Vec<Warning> {
    let mut out = Vec::new();
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
        // Each backend whose MAC an earlier one has, in file order, named
        // with the first: the backends sorted by MAC (then place), not
        // hashed, and only the duplicates' places sorted back (a hash map
        // per VIP was most of a large config's warnings).
        let mut by_mac: Vec<([u8; 6], usize)> = v
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.mac.0, i))
            .collect();
        by_mac.sort_unstable();
        let mut again: Vec<(usize, usize)> = by_mac
            .chunk_by(|a, b| a.0 == b.0)
            .flat_map(|same| same[1..].iter().map(|&(_, i)| (i, same[0].1)))
            .collect();
        again.sort_unstable();
        for (i, first) in again {
            let b = &v.backends[i];
            out.push(Warning {
                field: at(&format!("backend[{}].mac", b.name)),
                message: format!(
                    "{} is also {}'s: with L2 DSR both backends' frames go to one host",
                    b.mac, v.backends[first].name
                ),
            });
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each backend on an earlier one's MAC is named once, in file order,
    /// with the first backend on that MAC.
    #[test]
    fn a_mac_taken_again_names_the_first() {
        let mut text = String::from(
            "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\n\
             port = 80\nprotocol = \"tcp\"\n",
        );
        for (i, (name, mac)) in [("d", 1), ("c", 2), ("b", 1), ("a", 1), ("e", 2), ("f", 3)]
            .into_iter()
            .enumerate()
        {
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"{name}\"\naddress = \"198.18.0.{}\"\n\
                 mac = \"02:00:00:00:00:0{mac}\"\n",
                i + 1
            ));
        }
        let config = crate::config::parse(&text, "f.toml").unwrap();
        let said: Vec<String> = warnings(&config).iter().map(ToString::to_string).collect();
        let also = |name: &str, mac: u8, first: &str| {
            format!(
                "vip[web].backend[{name}].mac: 02:00:00:00:00:0{mac} is also {first}'s: with \
                 L2 DSR both backends' frames go to one host"
            )
        };
        assert_eq!(
            said,
            [also("b", 1, "d"), also("a", 1, "d"), also("e", 2, "c")]
        );
    }

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
            let one_by_one: Vec<Warning> =
                config.vips.iter().flat_map(|v| vip_warnings(v)).collect();
            let all = warnings(&config);
            assert_eq!(all, one_by_one, "{n} VIPs");
            assert_eq!(all.len(), n.div_ceil(2), "{all:#?}");
            assert_eq!(all[0].field, "vip[v0].backend[b].mac");
            assert_eq!(all[1].field, "vip[v2].backend[b].mac");
        }
    }
}
