//! Held flows, replicated across a fleet (second chance, issue 21).
//!
//! Every node of a fleet computes the same Maglev tables, so a flow that
//! moves to another node (its ECMP next hop went away) lands on the same
//! backend, except when the flow's backend is no longer the table's pick:
//! the backend is draining, or a weight change moved the flow's slot, and
//! only the connection table of the node that saw the flow begin keeps it
//! there. Those entries are the "held" flows. They are the only ones another
//! node cannot recompute, so they are the only ones the fleet replicates:
//!
//! - `select`: the held flows of a connection table, grouped by VIP and
//!   backend, named by names and addresses (ids differ per node); a
//!   removed backend's flows among them while its VIP retains it
//!   (`state::retain`): every node applied the same revision, so every
//!   node retains it and can install them;
//! - `chunks`: those groups cut into records small enough for one etcd
//!   value (`HeldChunk`, JSON);
//! - `to_install`: another node's record translated into this node's
//!   backend ids, without the flows its own table already sends there.
//!
//! Pure: the connection table is read and written by lb-dataplane, the
//! records are stored by lb-fleet, the daemon's `held` module runs the loop.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::hash::{FlowWords, flow_hash};
use serde::{Deserialize, Serialize};

use crate::simulate::{Flow, pick, vip_for};
use crate::state::{Desired, DesiredVip};

/// Flows per record at most: a flow is about 25 bytes of JSON, so a record
/// stays near 250 KB, well under etcd's 1.5 MiB request limit.
pub const FLOWS_PER_CHUNK: usize = 10_000;

/// One backend's held flows in a node's record. The flows' destination is
/// the VIP's address and their protocol the VIP's: each flow is written
/// `"<source address> <source port> <destination port>"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldGroup {
    pub vip: String,
    pub vip_address: IpAddr,
    pub protocol: u8,
    pub backend: String,
    pub address: IpAddr,
    pub flows: Vec<String>,
}

/// One record of a node's held flows (`/xlb/<fleet>/held/<node>/<chunk>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldChunk {
    pub node: String,
    /// This record's number and how many the node published this time.
    pub chunk: u32,
    pub chunks: u32,
    /// When the connection table was read, and when this was published
    /// (Unix seconds): the receiver's delay is measured from them.
    pub scanned_at_unix_seconds: f64,
    pub published_at_unix_seconds: f64,
    pub groups: Vec<HeldGroup>,
}

impl HeldChunk {
    /// Flows in this record.
    pub fn flows(&self) -> usize {
        self.groups.iter().map(|g| g.flows.len()).sum()
    }
}

/// What `xlb status` says of the held flows (`fleet.held`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldStatus {
    /// This node's held flows as last published, and when (Unix seconds).
    pub published: u64,
    pub published_at_unix_seconds: f64,
    /// Per VIP and backend: this node's held flows (the flows that rely on
    /// the replication).
    pub per_backend: Vec<HeldCount>,
    /// Other nodes' entries inserted into this node's table, and those it
    /// already had its own entry for, since the start.
    pub installed: u64,
    pub present: u64,
    /// From another node's scan to the insertion here, for the last record
    /// installed.
    pub delay_seconds: Option<f64>,
}

/// Held flows of one backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldCount {
    pub vip: String,
    pub backend: String,
    pub flows: u64,
    /// The backend was removed from the config and is retained.
    #[serde(default)]
    pub removed: bool,
}

impl HeldStatus {
    /// `held flows: 75 published, 140 installed from other nodes (delay 0.42 s)`.
    pub fn line(&self) -> String {
        let delay = self
            .delay_seconds
            .map(|d| format!(" (delay {d:.2} s)"))
            .unwrap_or_default();
        format!(
            "held flows: {} published, {} installed from other nodes{delay}",
            self.published, self.installed
        )
    }
}

/// The backend a held flow is on: a configured backend of its VIP, or a
/// removed one the VIP retains (`state::retain`), by name and address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldBackend {
    pub name: String,
    pub address: IpAddr,
    /// Removed from the config, retained.
    pub removed: bool,
}

/// A connection table's held flows: per (VIP index of the desired state,
/// backend), the flows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    pub held: BTreeMap<(usize, HeldBackend), Vec<Flow>>,
    /// Entries read, and those left out because their VIP or backend id is
    /// not in the live state (a retired id: the kernel hashes them again).
    pub entries: u64,
    pub unknown: u64,
}

impl Selection {
    /// Held flows in all.
    pub fn total(&self) -> usize {
        self.held.values().map(Vec::len).sum()
    }

    /// Held flows per VIP and backend: what `xlb status` and `/metrics`
    /// show.
    pub fn per_backend(&self, desired: &Desired) -> Vec<HeldCount> {
        self.held
            .iter()
            .map(|((v, b), flows)| HeldCount {
                vip: desired.vips[*v].config.name.clone(),
                backend: b.name.clone(),
                flows: flows.len() as u64,
                removed: b.removed,
            })
            .collect()
    }
}

/// The destination port of a flow's `ports` word (the wire's bytes: source
/// port then destination port, read little-endian).
pub(crate) fn ports(words: &FlowWords) -> (u16, u16) {
    let b = words.ports.to_le_bytes();
    (
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    )
}

pub(crate) fn address(words: &[u32; 4], v6: bool) -> IpAddr {
    let mut bytes = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    if v6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

/// The flow a connection-table key's words stand for, as the VIP it is for
/// sees it (the words carry no address family: the VIP's address says it),
/// with the VIP's index; None when no VIP of `desired` takes it.
pub fn flow_of(desired: &Desired, words: &FlowWords) -> Option<(usize, Flow)> {
    let (src_port, dst_port) = ports(words);
    for v6 in [false, true] {
        let flow = Flow {
            src: address(&words.src, v6),
            dst: address(&words.dst, v6),
            src_port,
            dst_port,
            proto: words.proto as u8,
        };
        // An IPv4 reading of IPv6 words (or the reverse) names another
        // address: the words must come back whole.
        if flow.words() != *words {
            continue;
        }
        if let Some(vip) = vip_for(desired, &flow) {
            let index = desired.vips.iter().position(|v| std::ptr::eq(&**v, vip))?;
            return Some((index, flow));
        }
    }
    None
}

/// Each backend id of `desired` (configured or retained) with its VIP's
/// index and the backend as a held record names it.
fn backends_by_id(desired: &Desired) -> HashMap<u32, (usize, HeldBackend)> {
    let mut out = HashMap::new();
    for (v, vip) in desired.vips.iter().enumerate() {
        for (b, &id) in vip.config.backends.iter().zip(&vip.backend_ids) {
            let backend = HeldBackend {
                name: b.name.clone(),
                address: b.address,
                removed: false,
            };
            out.insert(id, (v, backend));
        }
        for r in desired.retained_of(&vip.config.name) {
            let backend = HeldBackend {
                name: r.name,
                address: r.address,
                removed: true,
            };
            out.insert(r.id, (v, backend));
        }
    }
    out
}

/// The held flows among `entries` (a key's words, the backend id its entry
/// names): those whose backend is a backend of their VIP (by id; a removed
/// one it retains among them) and not the live table's pick for them.
pub fn select(desired: &Desired, entries: impl IntoIterator<Item = (FlowWords, u32)>) -> Selection {
    let mut out = Selection::default();
    let mut entries = entries.into_iter().peekable();
    // No entries, nothing held: the map of every backend (65,000 at the
    // declared limits) is not made for nothing.
    if entries.peek().is_none() {
        return out;
    }
    let by_id = backends_by_id(desired);
    for (words, backend_id) in entries {
        out.entries += 1;
        let Some((v, flow)) = flow_of(desired, &words) else {
            out.unknown += 1;
            continue;
        };
        let Some((_, backend)) = by_id.get(&backend_id).filter(|(bv, _)| *bv == v) else {
            out.unknown += 1;
            continue;
        };
        if pick(desired, &flow) != Some(backend_id) {
            out.held.entry((v, backend.clone())).or_default().push(flow);
        }
    }
    out
}

fn flow_text(flow: &Flow) -> String {
    format!("{} {} {}", flow.src, flow.src_port, flow.dst_port)
}

/// A flow of `group` read back; None if the text is not one.
fn parse_flow(group: &HeldGroup, text: &str) -> Option<Flow> {
    let mut parts = text.split(' ');
    let src: IpAddr = parts.next()?.parse().ok()?;
    let src_port = parts.next()?.parse().ok()?;
    let dst_port = parts.next()?.parse().ok()?;
    if parts.next().is_some() || src.is_ipv6() != group.vip_address.is_ipv6() {
        return None;
    }
    Some(Flow {
        src,
        dst: group.vip_address,
        src_port,
        dst_port,
        proto: group.protocol,
    })
}

/// `selection` cut into records of at most `per_chunk` flows (a group may
/// be split over records), numbered from 0; none when nothing is held.
pub fn chunks(
    node: &str,
    desired: &Desired,
    selection: &Selection,
    per_chunk: usize,
    scanned_at_unix_seconds: f64,
    published_at_unix_seconds: f64,
) -> Vec<HeldChunk> {
    let per_chunk = per_chunk.max(1);
    let mut out: Vec<HeldChunk> = Vec::new();
    let mut room = 0;
    for ((v, backend), flows) in &selection.held {
        let vip: &DesiredVip = &desired.vips[*v];
        for flow in flows {
            if room == 0 {
                out.push(HeldChunk {
                    node: node.to_string(),
                    chunk: out.len() as u32,
                    chunks: 0,
                    scanned_at_unix_seconds,
                    published_at_unix_seconds,
                    groups: Vec::new(),
                });
                room = per_chunk;
            }
            let chunk = out.last_mut().expect("pushed above");
            let same = chunk
                .groups
                .last()
                .is_some_and(|g| g.vip == vip.config.name && g.backend == backend.name);
            if !same {
                chunk.groups.push(HeldGroup {
                    vip: vip.config.name.clone(),
                    vip_address: vip.config.address,
                    protocol: vip.config.protocol.number(),
                    backend: backend.name.clone(),
                    address: backend.address,
                    flows: Vec::new(),
                });
            }
            chunk
                .groups
                .last_mut()
                .expect("pushed above")
                .flows
                .push(flow_text(flow));
            room -= 1;
        }
    }
    let n = out.len() as u32;
    for c in &mut out {
        c.chunks = n;
    }
    out
}

/// Another node's record in this node's terms: (flow, backend id, the
/// kernel's tuple hash of the flow) to insert, and how many flows were
/// left out (their VIP or backend is unknown here, under another address,
/// the text is not a flow, or this node's table already picks that backend
/// for them: no entry needed).
pub fn to_install(desired: &Desired, chunk: &HeldChunk) -> (Vec<(Flow, u32, u32)>, u64) {
    let mut out = Vec::new();
    let mut skipped = 0;
    for group in &chunk.groups {
        let local = desired.vips.iter().find(|v| {
            v.config.name == group.vip
                && v.config.address == group.vip_address
                && v.config.protocol.number() == group.protocol
        });
        // A configured backend, or a removed one this node retains too (it
        // applied the same revision).
        let id = local.and_then(|v| {
            v.config
                .backends
                .iter()
                .position(|b| b.name == group.backend && b.address == group.address)
                .map(|i| v.backend_ids[i])
                .or_else(|| {
                    desired
                        .retained_of(&v.config.name)
                        .into_iter()
                        .find(|r| r.name == group.backend && r.address == group.address)
                        .map(|r| r.id)
                })
        });
        let Some(id) = id else {
            skipped += group.flows.len() as u64;
            continue;
        };
        for text in &group.flows {
            match parse_flow(group, text) {
                Some(flow) if pick(desired, &flow) != Some(id) => {
                    let hash = flow_hash(&flow.words(), desired.config.hash_seed);
                    out.push((flow, id, hash));
                }
                _ => skipped += 1,
            }
        }
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Allocation, desired};

    /// VIPs web and web6 over b1..b3, b3 in state `b3`; `extra` first.
    fn text(b3: &str, weights: [u32; 3], extra: &str) -> String {
        let mut text = format!("interface = \"eth0\"\nhash_seed = 3\n{extra}");
        for (name, address) in [("web", "198.18.100.1"), ("web6", "2001:db8:100::1")] {
            text.push_str(&format!(
                "[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = 8080\nprotocol = \"tcp\"\n"
            ));
            for (i, w) in weights.iter().enumerate() {
                let state = if i == 2 { b3 } else { "active" };
                let addr = if address.contains(':') {
                    format!("2001:db8::{}", 11 + i)
                } else {
                    format!("198.18.0.{}", 11 + i)
                };
                text.push_str(&format!(
                    "[[vip.backend]]\nname = \"b{}\"\naddress = \"{addr}\"\nmac = \"02:00:00:00:00:{:02x}\"\nweight = {w}\nstate = \"{state}\"\n",
                    i + 1,
                    i + 1
                ));
            }
        }
        text
    }

    fn config(b3: &str, weights: [u32; 3]) -> Desired {
        let config = crate::config::parse(&text(b3, weights, ""), "t.toml").unwrap();
        desired(&config, &Allocation::default()).unwrap()
    }

    fn flows(n: u16, v6: bool) -> Vec<Flow> {
        (0..n)
            .map(|i| Flow {
                src: if v6 {
                    format!("2001:db8:1::{:x}", i % 7 + 1).parse().unwrap()
                } else {
                    IpAddr::V4(Ipv4Addr::new(198, 18, 2, (i % 7) as u8 + 1))
                },
                dst: if v6 {
                    "2001:db8:100::1".parse().unwrap()
                } else {
                    "198.18.100.1".parse().unwrap()
                },
                src_port: 30_000 + i,
                dst_port: 8080,
                proto: 6,
            })
            .collect()
    }

    /// The connection table a node fills while `before` is live: each flow
    /// on the backend `before` picks.
    fn table(before: &Desired, flows: &[Flow]) -> Vec<(FlowWords, u32)> {
        flows
            .iter()
            .map(|f| (f.words(), pick(before, f).unwrap()))
            .collect()
    }

    fn id_of(d: &Desired, vip: &str, name: &str) -> u32 {
        let v = d.vips.iter().find(|v| v.config.name == vip).unwrap();
        v.backend_ids[v
            .config
            .backends
            .iter()
            .position(|b| b.name == name)
            .unwrap()]
    }

    #[test]
    fn nothing_is_held_while_every_flow_is_on_the_tables_pick() {
        let d = config("active", [1, 1, 2]);
        let mut all = flows(500, false);
        all.extend(flows(500, true));
        let s = select(&d, table(&d, &all));
        assert_eq!((s.entries, s.unknown, s.total()), (1000, 0, 0));
        assert!(chunks("n1", &d, &s, 100, 1.0, 2.0).is_empty());
    }

    /// Flows of `all` whose backend under `before` is not `after`'s pick.
    fn moved(before: &Desired, after: &Desired, all: &[Flow]) -> usize {
        all.iter()
            .filter(|f| {
                crate::simulate::pick_name(before, f) != crate::simulate::pick_name(after, f)
            })
            .count()
    }

    #[test]
    fn a_drained_backends_flows_are_held_and_the_few_maglev_moved() {
        let before = config("active", [1, 1, 2]);
        let after = desired(&config("draining", [1, 1, 2]).config, &before.allocation).unwrap();
        let mut all = flows(1000, false);
        all.extend(flows(1000, true));
        let entries = table(&before, &all);
        let on_b3 = all
            .iter()
            .filter(|f| crate::simulate::pick_name(&before, f) == Some("b3"))
            .count();
        let s = select(&after, entries);
        assert!(on_b3 > 600, "b3 has half the weight: {on_b3}");
        // Maglev moves a few flows between the backends that stay, too.
        assert_eq!(s.total(), moved(&before, &after, &all));
        let on_b3_held: u64 = s
            .per_backend(&after)
            .iter()
            .filter(|c| c.backend == "b3")
            .map(|c| c.flows)
            .sum();
        assert_eq!(on_b3_held, on_b3 as u64);
        assert!(s.total() - on_b3 < 10, "{} held, {on_b3} on b3", s.total());
    }

    #[test]
    fn a_weight_change_holds_the_flows_it_moved() {
        let before = config("active", [1, 1, 2]);
        let after = desired(&config("active", [4, 1, 1]).config, &before.allocation).unwrap();
        let all = flows(2000, false);
        let moved = moved(&before, &after, &all);
        let s = select(&after, table(&before, &all));
        assert!(moved > 100, "{moved}");
        assert_eq!(s.total(), moved);
    }

    #[test]
    fn unknown_ids_and_foreign_flows_are_left_out() {
        let d = config("draining", [1, 1, 2]);
        let f = flows(3, false);
        let mut other = f[0];
        other.dst = "198.18.100.9".parse().unwrap();
        let s = select(
            &d,
            [
                (f[0].words(), 999_999),
                (other.words(), 0),
                (f[1].words(), id_of(&d, "web", "b3")),
            ],
        );
        assert_eq!((s.entries, s.unknown, s.total()), (3, 2, 1));
    }

    /// A VIP more, first in the file: another node's ids differ.
    const EXTRA_VIP: &str = "[[vip]]\nname = \"x\"\naddress = \"198.18.100.7\"\nport = 1\nprotocol = \"udp\"\n\
                             [[vip.backend]]\nname = \"x1\"\naddress = \"198.18.0.77\"\nmac = \"02:00:00:00:00:77\"\n";

    /// Another node's state: `EXTRA_VIP`, then web and web6 with b3 in
    /// state `b3`.
    fn other_node(b3: &str) -> Desired {
        let config = crate::config::parse(&text(b3, [1, 1, 2], EXTRA_VIP), "t.toml").unwrap();
        desired(&config, &Allocation::default()).unwrap()
    }

    #[test]
    fn records_round_trip_into_another_nodes_ids() {
        let before = config("active", [1, 1, 2]);
        let here = desired(&config("draining", [1, 1, 2]).config, &before.allocation).unwrap();
        let mut all = flows(3000, false);
        all.extend(flows(3000, true));
        let s = select(&here, table(&before, &all));
        let recs = chunks("n1", &here, &s, 1000, 1.0, 2.0);
        assert_eq!(recs.len(), s.total().div_ceil(1000));
        assert!(
            recs.iter()
                .all(|r| r.chunks == recs.len() as u32 && r.flows() <= 1000)
        );
        assert_eq!(recs.iter().map(HeldChunk::flows).sum::<usize>(), s.total());
        // JSON, as stored.
        let recs: Vec<HeldChunk> = recs
            .iter()
            .map(|r| serde_json::from_slice(&serde_json::to_vec(r).unwrap()).unwrap())
            .collect();

        // Another node, whose ids differ: an earlier config with a VIP more.
        let there = other_node("draining");
        assert_ne!(id_of(&there, "web", "b3"), id_of(&here, "web", "b3"));
        let mut installed = 0;
        for r in &recs {
            let (flows, skipped) = to_install(&there, r);
            assert_eq!(skipped, 0);
            for (flow, id, hash) in flows {
                let v = if flow.src.is_ipv6() { "web6" } else { "web" };
                let name = crate::simulate::pick_name(&before, &flow).unwrap();
                assert_eq!(id, id_of(&there, v, name), "{flow:?}");
                assert_eq!(hash, flow_hash(&flow.words(), 3));
                installed += 1;
            }
        }
        assert_eq!(installed, s.total());
        // A node where b3 is the table's pick again needs none of them.
        let undrained = config("active", [1, 1, 2]);
        let (flows, skipped) = to_install(&undrained, &recs[0]);
        assert!(flows.len() < recs[0].flows() && skipped > 0);
    }

    #[test]
    fn a_removed_backends_flows_are_held_and_installed_by_a_node_that_never_saw_them() {
        // b3 removed (the config lists b1 and b2 only) on two nodes whose
        // ids differ; the flows were on b3 before.
        let before = config("active", [1, 1, 2]);
        let removed = |extra: &str, from: &Allocation| {
            let mut config =
                crate::config::parse(&text("active", [1, 1, 2], extra), "t.toml").unwrap();
            for v in config.vips_mut() {
                v.backends.retain(|b| b.name != "b3");
            }
            desired(&config, from).unwrap()
        };
        let here = removed("", &before.allocation);
        assert!(here.vips.iter().all(|v| v.config.backends.len() == 2));
        assert_eq!(here.retained_of("web").len(), 1);
        let mut all = flows(500, false);
        all.extend(flows(500, true));
        let on_b3 = all
            .iter()
            .filter(|f| crate::simulate::pick_name(&before, f) == Some("b3"))
            .count();
        let s = select(&here, table(&before, &all));
        assert_eq!(s.unknown, 0);
        let removed_flows: u64 = s
            .per_backend(&here)
            .iter()
            .filter(|c| c.backend == "b3")
            .inspect(|c| assert!(c.removed))
            .map(|c| c.flows)
            .sum();
        assert_eq!(removed_flows, on_b3 as u64);
        let recs = chunks("n1", &here, &s, 10_000, 1.0, 2.0);

        // Another node, other ids (a VIP more first), b3 removed the same way.
        let there = removed(EXTRA_VIP, &other_node("active").allocation);
        let b3_there: Vec<u32> = there.allocation.retained().iter().map(|r| r.id).collect();
        assert_eq!(b3_there.len(), 2);
        let (install, skipped) = to_install(&there, &recs[0]);
        assert_eq!(skipped, 0);
        let onto_b3 = install
            .iter()
            .filter(|(_, id, _)| b3_there.contains(id))
            .count();
        assert_eq!(onto_b3, on_b3);
        // Once the other node's retention ended, it has nowhere to put them.
        let mut ended = there.clone();
        ended.allocation.retained.clear();
        let (install, skipped) = to_install(&ended, &recs[0]);
        assert_eq!((install.len() + on_b3, skipped), (s.total(), on_b3 as u64));
    }

    #[test]
    fn a_record_naming_unknown_backends_or_bad_flows_installs_nothing_of_them() {
        let d = config("draining", [1, 1, 2]);
        let group = HeldGroup {
            vip: "web".into(),
            vip_address: "198.18.100.1".parse().unwrap(),
            protocol: 6,
            backend: "b3".into(),
            address: "198.18.0.99".parse().unwrap(),
            flows: vec!["198.18.2.1 1 8080".into()],
        };
        let bad_text = HeldGroup {
            address: "198.18.0.13".parse().unwrap(),
            flows: vec![
                "198.18.2.1 x 8080".into(),
                "2001:db8::1 1 8080".into(),
                "".into(),
            ],
            ..group.clone()
        };
        let chunk = HeldChunk {
            node: "n2".into(),
            chunk: 0,
            chunks: 1,
            scanned_at_unix_seconds: 0.0,
            published_at_unix_seconds: 0.0,
            groups: vec![group, bad_text],
        };
        assert_eq!(to_install(&d, &chunk), (vec![], 4));
    }
}
