//! Fleet agreement. Behind ECMP any node may receive any flow, and after a
//! node fails another one does, so every node must send a flow to the same
//! backend. What decides that on one node is a VIP's `Decision`: the hash
//! seed and mode, the table size, each backend's identity, weight, state and
//! whether it is in the live table, and the live table itself (by backend
//! name). Its fingerprint is equal on two nodes exactly when they pick the
//! same backend for every new flow of the VIP; `compare` says which inputs
//! differ and what share of flows would reach another backend through the
//! other node.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh64::{Xxh64, xxh64};

use lb_common::hash::{FlowWords, flow_hash, hash_input};
use lb_common::{HASH_FIVE_TUPLE, HASH_NO_PORTS, HASH_SOURCE};

use crate::config::MacAddr;
use crate::maglev::{self, MaglevBackend};
use crate::prng::SplitMix64;
use crate::state::{DesiredVip, NO_BACKEND};

/// Everything on one node that decides which backend a VIP's new flow takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub hash_seed: u32,
    /// `five_tuple`, `source` or `no_ports`.
    pub hash_mode: String,
    pub table_size: u32,
    /// By name.
    pub backends: Vec<DecisionBackend>,
    /// 16 hex digits of xxh64 over the fields above and the live table's
    /// slots (as indices into `backends`).
    pub fingerprint: String,
}

/// One backend of a decision. Its JSON is all strings and numbers
/// (`address` and `mac` as text): held as values, a daemon's decisions of
/// 64,000 backends are 6 MB less than as strings, and are made without
/// formatting each address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionBackend {
    pub name: String,
    pub address: IpAddr,
    pub mac: MacAddr,
    pub weight: u32,
    /// `active`, `draining` or `disabled` (any text from another node).
    pub state: Cow<'static, str>,
    /// Some slot of the live table names it (active, and not taken out by
    /// a health check).
    pub in_table: bool,
}

/// The decision of `vip` as applied (health patches included). Runs for
/// every VIP of every status document, so it is linear in the table and
/// allocates little: at 1,000 VIPs of 16,381 slots a set of each table's
/// ids and a hash update per slot took a second a document.
pub fn decision(vip: &DesiredVip, hash_seed: u32) -> Decision {
    let backends = &vip.config.backends;
    // The backends by name: the order every node agrees on.
    let mut order: Vec<usize> = (0..backends.len().min(vip.backend_ids.len())).collect();
    order.sort_by(|&a, &b| backends[a].name.cmp(&backends[b].name));
    // Each backend id's place in that order, in a table over the VIP's id
    // range (ids index the kernel's backend array: at most MAX_BACKENDS).
    let low = vip.backend_ids.iter().copied().min().unwrap_or(0);
    let high = vip.backend_ids.iter().copied().max().unwrap_or(0);
    let mut place = vec![u32::MAX; (high - low) as usize + 1];
    for (i, &k) in order.iter().enumerate() {
        place[(vip.backend_ids[k] - low) as usize] = i as u32;
    }
    let place_of = |slot: u32| {
        if slot == NO_BACKEND || slot < low || slot > high {
            u32::MAX
        } else {
            place[(slot - low) as usize]
        }
    };
    let mut in_table = vec![false; order.len()];
    let mut table = Vec::with_capacity(vip.slot_count() * 4);
    for slot in vip.slot_iter() {
        let i = place_of(slot);
        if let Some(seen) = in_table.get_mut(i as usize) {
            *seen = true;
        }
        table.extend_from_slice(&i.to_le_bytes());
    }
    let mut d = Decision {
        hash_seed,
        hash_mode: vip.config.hash.to_string(),
        table_size: vip.config.table_size,
        backends: order
            .iter()
            .zip(&in_table)
            .map(|(&k, &in_table)| {
                let b = &backends[k];
                DecisionBackend {
                    name: b.name.clone(),
                    address: b.address,
                    mac: b.mac,
                    weight: b.weight,
                    state: Cow::Borrowed(b.state.as_str()),
                    in_table,
                }
            })
            .collect(),
        fingerprint: String::new(),
    };
    let mut h = Xxh64::new(0);
    h.update(&serde_json::to_vec(&d).expect("a decision serializes"));
    // The slots as places in `backends` (u32::MAX: none), little-endian.
    h.update(&table);
    d.fingerprint = format!("{:016x}", h.digest());
    d
}

/// One fingerprint for a node: of every VIP's name and fingerprint.
pub fn node_fingerprint<'a>(vips: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut lines: Vec<String> = vips
        .into_iter()
        .map(|(name, fp)| format!("{name}={fp}\n"))
        .collect();
    lines.sort();
    format!("{:016x}", xxh64(lines.concat().as_bytes(), 0))
}

/// How a VIP's decision on another node differs from the reference one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// What differs, one item each: `hash_seed 4 -> 7`, `b2 weight 1 -> 3`.
    pub fields: Vec<String>,
    /// Estimated share of new flows that the other node sends to another
    /// backend than the reference does.
    pub flows_elsewhere_ratio: f64,
}

/// Flows drawn to estimate `flows_elsewhere_ratio` (its standard error is
/// below 0.4 points).
pub const SAMPLE_FLOWS: u32 = 20_000;

/// None when the fingerprints are equal.
pub fn compare(reference: &Decision, other: &Decision) -> Option<Difference> {
    if reference.fingerprint == other.fingerprint {
        return None;
    }
    let mut fields = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            fields.push(format!("{name} {a} -> {b}"));
        }
    };
    field(
        "hash_seed",
        reference.hash_seed.to_string(),
        other.hash_seed.to_string(),
    );
    field(
        "hash_mode",
        reference.hash_mode.clone(),
        other.hash_mode.clone(),
    );
    field(
        "table_size",
        reference.table_size.to_string(),
        other.table_size.to_string(),
    );
    let by_name = |d: &Decision| -> BTreeMap<String, DecisionBackend> {
        d.backends
            .iter()
            .map(|b| (b.name.clone(), b.clone()))
            .collect()
    };
    let (a, b) = (by_name(reference), by_name(other));
    for name in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        match (a.get(name), b.get(name)) {
            (Some(_), None) => fields.push(format!("backend {name} missing")),
            (None, Some(_)) => fields.push(format!("backend {name} extra")),
            (Some(x), Some(y)) => {
                let mut backend = |what: &str, p: String, q: String| {
                    if p != q {
                        fields.push(format!("{name} {what} {p} -> {q}"));
                    }
                };
                backend("address", x.address.to_string(), y.address.to_string());
                backend("mac", x.mac.to_string(), y.mac.to_string());
                backend("weight", x.weight.to_string(), y.weight.to_string());
                backend("state", x.state.to_string(), y.state.to_string());
                backend("in_table", x.in_table.to_string(), y.in_table.to_string());
            }
            (None, None) => {}
        }
    }
    if fields.is_empty() {
        fields.push("table: the same inputs, other slots (drift or a health patch)".into());
    }
    Some(Difference {
        fields,
        flows_elsewhere_ratio: flows_elsewhere(reference, other),
    })
}

/// A decision's table rebuilt from its inputs: the backends in the table,
/// by weight. (A health-patched table moves only the down backends' slots;
/// rebuilt without them the estimate can be a little high.)
fn rebuilt(d: &Decision) -> Option<Vec<Option<String>>> {
    let backends: Vec<MaglevBackend<'_>> = d
        .backends
        .iter()
        .filter(|b| b.in_table)
        .map(|b| MaglevBackend {
            name: &b.name,
            weight: b.weight,
        })
        .collect();
    let table = maglev::build(&backends, d.table_size, d.hash_seed).ok()?;
    Some(
        (0..table.table_size())
            .map(|slot| table.owner(slot).map(str::to_string))
            .collect(),
    )
}

fn mode_code(mode: &str) -> u8 {
    match mode {
        "source" => HASH_SOURCE,
        "no_ports" => HASH_NO_PORTS,
        _ => HASH_FIVE_TUPLE,
    }
}

/// The share of `SAMPLE_FLOWS` pseudo-random flows (the same ones for every
/// comparison) that the two decisions send to different backends, each
/// hashing with its own seed and mode into its own table; 1 when a table
/// cannot be rebuilt.
fn flows_elsewhere(a: &Decision, b: &Decision) -> f64 {
    let (Some(ta), Some(tb)) = (rebuilt(a), rebuilt(b)) else {
        return 1.0;
    };
    if ta.is_empty() || tb.is_empty() {
        return if ta.is_empty() && tb.is_empty() {
            0.0
        } else {
            1.0
        };
    }
    let mut rng = SplitMix64(0x666c_6565_7421);
    let pick = |d: &Decision, t: &[Option<String>], w: &FlowWords| {
        let h = flow_hash(&hash_input(w, mode_code(&d.hash_mode)), d.hash_seed);
        t[(h % t.len() as u32) as usize].clone()
    };
    let mut elsewhere = 0u32;
    for _ in 0..SAMPLE_FLOWS {
        let r = rng.next_u64();
        let words = FlowWords {
            src: [r as u32, (r >> 32) as u32, 0, 0],
            dst: [0xc612_640a, 0, 0, 0],
            ports: rng.next_u64() as u32,
            proto: 6,
        };
        if pick(a, &ta, &words) != pick(b, &tb, &words) {
            elsewhere += 1;
        }
    }
    f64::from(elsewhere) / f64::from(SAMPLE_FLOWS)
}

/// One VIP across the nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipAgreement {
    pub vip: String,
    /// The fingerprint most nodes have (the first node's on a tie).
    pub fingerprint: String,
    /// The nodes that differ from it, in the order given.
    pub differing: Vec<NodeDifference>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeDifference {
    pub node: String,
    /// Null when the node does not serve the VIP.
    pub fingerprint: Option<String>,
    pub fields: Vec<String>,
    pub flows_elsewhere_ratio: f64,
}

/// Every VIP any node serves, compared across `nodes` (name, and its
/// decisions by VIP).
pub fn agreement(nodes: &[(String, BTreeMap<String, Decision>)]) -> Vec<VipAgreement> {
    let vips: BTreeSet<&String> = nodes.iter().flat_map(|(_, d)| d.keys()).collect();
    vips.into_iter()
        .map(|vip| {
            // The most common fingerprint; the first node's wins a tie.
            let mut counts: Vec<(&Decision, usize)> = Vec::new();
            for d in nodes.iter().filter_map(|(_, ds)| ds.get(vip)) {
                match counts
                    .iter_mut()
                    .find(|(r, _)| r.fingerprint == d.fingerprint)
                {
                    Some((_, n)) => *n += 1,
                    None => counts.push((d, 1)),
                }
            }
            let reference = counts
                .iter()
                .fold(
                    None,
                    |best: Option<(&Decision, usize)>, &(d, n)| match best {
                        Some((_, m)) if m >= n => best,
                        _ => Some((d, n)),
                    },
                )
                .map(|(d, _)| d)
                .expect("some node serves it");
            let differing = nodes
                .iter()
                .filter_map(|(node, ds)| match ds.get(vip) {
                    None => Some(NodeDifference {
                        node: node.clone(),
                        fingerprint: None,
                        fields: vec!["does not serve the VIP".into()],
                        flows_elsewhere_ratio: 1.0,
                    }),
                    Some(d) => compare(reference, d).map(|diff| NodeDifference {
                        node: node.clone(),
                        fingerprint: Some(d.fingerprint.clone()),
                        fields: diff.fields,
                        flows_elsewhere_ratio: diff.flows_elsewhere_ratio,
                    }),
                })
                .collect();
            VipAgreement {
                vip: vip.clone(),
                fingerprint: reference.fingerprint.clone(),
                differing,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Allocation, desired};

    fn vip(seed: u32, weights: &[u32], states: &[&str]) -> Decision {
        let mut text = format!(
            "interface = \"eth0\"\nhash_seed = {seed}\n[[vip]]\nname = \"web\"\n\
             address = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n"
        );
        for (i, (w, s)) in weights.iter().zip(states).enumerate() {
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"b{i}\"\naddress = \"198.18.0.{i}\"\n\
                 mac = \"02:00:00:00:00:{i:02x}\"\nweight = {w}\nstate = \"{s}\"\n"
            ));
        }
        let config = crate::config::parse(&text, "t.toml").unwrap();
        let d = desired(&config, &Allocation::default()).unwrap();
        decision(&d.vips[0], config.hash_seed)
    }

    const ACTIVE: [&str; 4] = ["active"; 4];

    #[test]
    fn the_same_config_gives_the_same_fingerprint() {
        let a = vip(4, &[1, 1, 2, 1], &ACTIVE);
        let b = vip(4, &[1, 1, 2, 1], &ACTIVE);
        assert_eq!(a, b);
        assert_eq!(compare(&a, &b), None);
        assert_eq!(a.fingerprint.len(), 16);
    }

    #[test]
    fn another_seed_sends_most_flows_elsewhere() {
        let a = vip(4, &[1, 1, 1, 1], &ACTIVE);
        let b = vip(5, &[1, 1, 1, 1], &ACTIVE);
        let d = compare(&a, &b).expect("they differ");
        assert_eq!(d.fields, ["hash_seed 4 -> 5"]);
        // Independent tables and hashes: 3 of 4 flows land elsewhere.
        assert!(
            (d.flows_elsewhere_ratio - 0.75).abs() < 0.03,
            "{}",
            d.flows_elsewhere_ratio
        );
    }

    #[test]
    fn a_weight_change_is_named_and_moves_few_flows() {
        let a = vip(4, &[1, 1, 1, 1], &ACTIVE);
        let b = vip(4, &[1, 1, 1, 2], &ACTIVE);
        let d = compare(&a, &b).expect("they differ");
        assert_eq!(d.fields, ["b3 weight 1 -> 2"]);
        // b3 goes from 1/4 to 2/5 of the slots: at least 15% move to it.
        assert!(
            (0.12..0.35).contains(&d.flows_elsewhere_ratio),
            "{}",
            d.flows_elsewhere_ratio
        );
    }

    #[test]
    fn a_draining_backend_is_out_of_the_table() {
        let a = vip(4, &[1, 1, 1, 1], &ACTIVE);
        let b = vip(
            4,
            &[1, 1, 1, 1],
            &["active", "active", "active", "draining"],
        );
        let d = compare(&a, &b).expect("they differ");
        assert_eq!(
            d.fields,
            ["b3 state active -> draining", "b3 in_table true -> false"]
        );
        assert!(
            (0.2..0.3).contains(&d.flows_elsewhere_ratio),
            "{}",
            d.flows_elsewhere_ratio
        );
    }

    #[test]
    fn the_odd_node_out_is_named() {
        let same = vip(4, &[1, 1, 1, 1], &ACTIVE);
        let odd = vip(9, &[1, 1, 1, 1], &ACTIVE);
        let node = |n: &str, d: &Decision| {
            (
                n.to_string(),
                BTreeMap::from([("web".to_string(), d.clone())]),
            )
        };
        let nodes = [
            node("a", &same),
            node("b", &odd),
            node("c", &same),
            ("d".to_string(), BTreeMap::new()),
        ];
        let got = agreement(&nodes);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].fingerprint, same.fingerprint);
        let names: Vec<&str> = got[0].differing.iter().map(|d| d.node.as_str()).collect();
        assert_eq!(names, ["b", "d"]);
        assert_eq!(got[0].differing[0].fields, ["hash_seed 4 -> 9"]);
        assert_eq!(got[0].differing[1].fingerprint, None);
        let agreeing = [node("a", &same), node("c", &same)];
        assert!(agreement(&agreeing)[0].differing.is_empty());
    }

    /// The first way `decision` was computed (sets and maps, a hash update
    /// a slot): the fingerprint must not change with the faster one, or
    /// nodes of two versions would disagree in a rolling upgrade.
    fn fingerprint_by_sets(vip: &DesiredVip, hash_seed: u32) -> String {
        let live: BTreeSet<u32> = vip.slot_iter().collect();
        let mut backends: Vec<(u32, DecisionBackend)> = vip
            .config
            .backends
            .iter()
            .zip(&vip.backend_ids)
            .map(|(b, &id)| {
                let backend = DecisionBackend {
                    name: b.name.clone(),
                    address: b.address,
                    mac: b.mac,
                    weight: b.weight,
                    state: b.state.to_string().into(),
                    in_table: live.contains(&id),
                };
                (id, backend)
            })
            .collect();
        backends.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        let index: BTreeMap<u32, u32> = backends
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i as u32))
            .collect();
        let d = Decision {
            hash_seed,
            hash_mode: vip.config.hash.to_string(),
            table_size: vip.config.table_size,
            backends: backends.into_iter().map(|(_, b)| b).collect(),
            fingerprint: String::new(),
        };
        let mut h = Xxh64::new(0);
        h.update(&serde_json::to_vec(&d).unwrap());
        for slot in &*vip.slots() {
            let i = match *slot {
                NO_BACKEND => u32::MAX,
                s => index.get(&s).copied().unwrap_or(u32::MAX),
            };
            h.update(&i.to_le_bytes());
        }
        format!("{:016x}", h.digest())
    }

    #[test]
    fn the_fingerprint_is_the_first_versions() {
        let text = |states: &[&str]| {
            let mut t = "interface = \"eth0\"\nhash_seed = 7\n[[vip]]\nname = \"web\"\n\
                         address = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n\
                         table_size = 1021\n"
                .to_string();
            // Names out of id order, so the by-name order matters.
            for (i, s) in states.iter().enumerate() {
                t.push_str(&format!(
                    "[[vip.backend]]\nname = \"b{}\"\naddress = \"198.18.0.{i}\"\n\
                     mac = \"02:00:00:00:00:{i:02x}\"\nweight = {}\nstate = \"{s}\"\n",
                    9 - i,
                    i + 1
                ));
            }
            t
        };
        for states in [&ACTIVE[..], &["active", "draining", "active", "active"]] {
            let config = crate::config::parse(&text(states), "t.toml").unwrap();
            let mut d = desired(&config, &Allocation::default()).unwrap();
            let vip = std::sync::Arc::make_mut(&mut d.vips[0]);
            assert_eq!(
                decision(vip, 7).fingerprint,
                fingerprint_by_sets(vip, 7),
                "{states:?}"
            );
            // A health patch's table: a backend out, some slots on none.
            let out = vip.backend_ids[2];
            let mut slots = vip.slots().into_owned();
            for slot in slots.iter_mut().filter(|s| **s == out) {
                *slot = NO_BACKEND;
            }
            vip.set_slots(slots);
            assert!(!decision(vip, 7).backends.iter().all(|b| b.in_table));
            assert_eq!(decision(vip, 7).fingerprint, fingerprint_by_sets(vip, 7));
        }
    }

    /// A decision's JSON and fingerprint, as every version since the
    /// first made them (the fingerprint pinned from the version that held
    /// addresses, MACs and states as strings): nodes of two versions must
    /// agree, and read each other's decisions.
    #[test]
    fn the_json_and_fingerprint_are_every_versions() {
        const JSON: &str = r#"{"hash_seed":7,"hash_mode":"five_tuple","table_size":1021,"backends":[{"name":"b0","address":"198.18.0.1","mac":"02:00:00:00:00:0a","weight":1,"state":"active","in_table":true},{"name":"b1","address":"2001:db8::1","mac":"02:00:00:00:00:0b","weight":2,"state":"draining","in_table":false}],"fingerprint":"5b4b21ae53805dab"}"#;
        let text = "interface = \"eth0\"\nhash_seed = 7\n[[vip]]\nname = \"web\"\n\
             address = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n\
             [[vip.backend]]\nname = \"b0\"\naddress = \"198.18.0.1\"\n\
             mac = \"02:00:00:00:00:0a\"\nweight = 1\nstate = \"active\"\n\
             [[vip.backend]]\nname = \"b1\"\naddress = \"2001:db8::1\"\n\
             mac = \"02:00:00:00:00:0b\"\nweight = 2\nstate = \"draining\"\n";
        let config = crate::config::parse(text, "t.toml").unwrap();
        let d = desired(&config, &Allocation::default()).unwrap();
        let made = decision(&d.vips[0], config.hash_seed);
        assert_eq!(serde_json::to_string(&made).unwrap(), JSON);
        let read: Decision = serde_json::from_str(JSON).unwrap();
        assert_eq!(read, made);
        // A state this version does not know is read as it is; a MAC that
        // is not one is named.
        let other: Decision =
            serde_json::from_str(&JSON.replace("\"draining\"", "\"resting\"")).unwrap();
        assert_eq!(other.backends[1].state, "resting");
        let e = serde_json::from_str::<Decision>(&JSON.replace("02:00:00:00:00:0b", "02:00"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"02:00\" is not a MAC address"), "{e}");
    }

    #[test]
    fn a_node_fingerprint_does_not_depend_on_order() {
        assert_eq!(
            node_fingerprint([("a", "1"), ("b", "2")]),
            node_fingerprint([("b", "2"), ("a", "1")])
        );
        assert_ne!(
            node_fingerprint([("a", "1"), ("b", "2")]),
            node_fingerprint([("a", "1"), ("b", "3")])
        );
    }
}
