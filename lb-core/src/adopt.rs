//! Adoption, the pure half: a daemon that starts over pinned maps works out
//! which ids the maps give to the VIPs and backends of a config (the live
//! revision's), so its applied state is the one the kernel runs and its
//! first apply moves nothing that does not change. Ids are history (handed
//! out next-fit over many applies), so they are read back, not recomputed:
//!
//! - a VIP's id is the one its VIP entry (by address, port, protocol) names;
//! - a backend's id is the valid backend entry with the VIP's id, the
//!   backend's MAC and address; when several match (two names on one host),
//!   the one the live table puts where the backend's Maglev slots are;
//! - whatever the config has that the maps do not (a VIP without entry, a
//!   backend without entry) gets a fresh id, never one a valid entry or a
//!   VIP entry holds;
//! - the next-fit cursor goes one past the highest backend id ever written.
//!
//! Then the config's desired state under those ids is compared with the
//! maps, entry by entry; every difference is reported (a daemon killed in
//! the middle of an apply leaves some), and the caller rewrites them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use lb_common::{
    BACKEND_F_VALID, Backend as KernelBackend, GlobalConfig, VIP_F_ADDRESS, VIP_F_ECHO_REPLY,
    VipKey, VipMeta,
    maps::{MAX_BACKENDS, MAX_VIPS},
};

use crate::config::Config;
use crate::health::Membership;
use crate::host::HostInterface;
use crate::state::{
    Allocation, BackendIdentity, Desired, StateError, VipIdentity, desired, global_config,
    kernel_backend, vip_key,
};

/// Where a backend entry sends frames: (VIP id, MAC, family, address).
type Target = (u32, [u8; 6], u8, [u8; 16]);

/// What the pinned maps hold, as adoption needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveMaps {
    pub global: GlobalConfig,
    /// Every VIP map entry (VIPs and ICMP echo entries).
    pub vips: Vec<(VipKey, VipMeta)>,
    /// The live table of each VIP id a VIP entry names.
    pub tables: BTreeMap<u32, Vec<u32>>,
    /// Every backend entry, by id.
    pub backends: Vec<KernelBackend>,
}

/// The applied state read back from the maps.
#[derive(Clone, Debug, PartialEq)]
pub struct Adopted {
    /// The config's state under the ids the maps hold.
    pub desired: Desired,
    /// Where the maps differ from `desired`, one line each; empty when they
    /// hold exactly it.
    pub differences: Vec<String>,
    /// VIP map entries `desired` does not have (to remove).
    pub stray: Vec<VipKey>,
    /// The VIPs whose live table holds a health patch (the backends an
    /// earlier daemon's checks took out, `health::patch::recognise`): their
    /// `desired` table is that patched table, kept as it is.
    pub health: Vec<(String, Membership)>,
}

/// Name of the placeholder identities that keep ids the maps use, but the
/// config does not explain, from being handed out (no config name starts
/// with a NUL).
const RESERVED: &str = "\0reserved";

/// Read `config`'s ids back from `live` and compare (see the module docs).
pub fn adopt(
    config: &Config,
    host: &HostInterface,
    live: &LiveMaps,
) -> Result<Adopted, StateError> {
    let allocation = read_ids(config, live);
    let mut desired = desired(config, &allocation)?;
    let health = keep_health_patches(&mut desired, live);
    let (differences, stray) = compare(&desired, host, live);
    Ok(Adopted {
        desired,
        differences,
        stray,
        health,
    })
}

/// Take each live table that is a health patch of its VIP's config table
/// (see `Adopted::health`) as the VIP's table, so it is no difference.
fn keep_health_patches(desired: &mut Desired, live: &LiveMaps) -> Vec<(String, Membership)> {
    let seed = desired.config.hash_seed;
    let mut out = Vec::new();
    for vip in &mut desired.vips {
        let Some(slots) = live.tables.get(&vip.id) else {
            continue;
        };
        if let Some(m) = crate::health::patch::recognise(vip, slots, seed) {
            let p = crate::health::patch::patched(vip, &m, seed);
            let vip = std::sync::Arc::make_mut(vip);
            vip.set_slots(p.slots);
            vip.table_shares = p.shares;
            vip.health_patched = true;
            out.push((vip.config.name.clone(), m));
        }
    }
    out
}

/// The allocation the maps imply for `config`, with every other id in use
/// reserved.
fn read_ids(config: &Config, live: &LiveMaps) -> Allocation {
    let mut allocation = Allocation::default();
    let entries: HashMap<VipKey, VipMeta> = live.vips.iter().copied().collect();

    let mut vip_ids = BTreeMap::new();
    let mut claimed_vips = BTreeSet::new();
    for v in &config.vips {
        let Some(meta) = entries.get(&vip_key(v)) else {
            continue;
        };
        if meta.flags & (VIP_F_ECHO_REPLY | VIP_F_ADDRESS) != 0
            || meta.vip_id >= MAX_VIPS
            || !claimed_vips.insert(meta.vip_id)
        {
            continue;
        }
        vip_ids.insert(v.name.clone(), meta.vip_id);
        allocation.vips.insert(
            VipIdentity {
                name: v.name.clone(),
                table_size: v.table_size,
            },
            meta.vip_id,
        );
    }
    for (_, meta) in &live.vips {
        if meta.vip_id < MAX_VIPS && claimed_vips.insert(meta.vip_id) {
            allocation.vips.insert(
                VipIdentity {
                    name: format!("{RESERVED}{}", meta.vip_id),
                    table_size: 0,
                },
                meta.vip_id,
            );
        }
    }

    // Valid entries by what they point at.
    let mut by_target: BTreeMap<Target, Vec<u32>> = BTreeMap::new();
    for (id, b) in live.backends.iter().enumerate() {
        if b.flags & BACKEND_F_VALID != 0 {
            by_target
                .entry((b.vip_id, b.mac, b.family, b.addr))
                .or_default()
                .push(id as u32);
        }
    }
    let mut claimed = BTreeSet::new();
    for v in &config.vips {
        let Some(&vip_id) = vip_ids.get(&v.name) else {
            continue;
        };
        let mut votes: Option<BTreeMap<String, BTreeSet<u32>>> = None;
        for b in &v.backends {
            let want = kernel_backend(b, vip_id);
            let candidates: Vec<u32> = by_target
                .get(&(vip_id, want.mac, want.family, want.addr))
                .into_iter()
                .flatten()
                .copied()
                .filter(|id| !claimed.contains(id))
                .collect();
            let id = match candidates[..] {
                [] => continue,
                [one] => one,
                _ => {
                    let votes = votes.get_or_insert_with(|| table_votes(v, config, live, vip_id));
                    let named = votes.get(&b.name);
                    *candidates
                        .iter()
                        .find(|id| named.is_some_and(|n| n.contains(id)))
                        .unwrap_or(&candidates[0])
                }
            };
            claimed.insert(id);
            allocation.insert_backend(
                &BackendIdentity {
                    vip: v.name.clone(),
                    name: b.name.clone(),
                    mac: b.mac.0,
                    address: b.address,
                },
                id,
            );
        }
    }
    for ids in by_target.values() {
        for &id in ids {
            if claimed.insert(id) {
                allocation.insert_backend(
                    &BackendIdentity {
                        vip: RESERVED.to_string(),
                        name: id.to_string(),
                        mac: [0; 6],
                        address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    },
                    id,
                );
            }
        }
    }
    let zero = KernelBackend {
        mac: [0; 6],
        flags: 0,
        family: 0,
        addr: [0; 16],
        vip_id: 0,
        _pad: 0,
    };
    allocation.next_backend_id = live
        .backends
        .iter()
        .rposition(|b| *b != zero)
        .map_or(0, |last| (last as u32 + 1) % MAX_BACKENDS);
    allocation
}

/// For a VIP whose backends cannot be told apart by their entries: the ids
/// the live table holds at each backend name's Maglev slots.
fn table_votes(
    v: &crate::config::Vip,
    config: &Config,
    live: &LiveMaps,
    vip_id: u32,
) -> BTreeMap<String, BTreeSet<u32>> {
    let mut votes: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let Some(slots) = live.tables.get(&vip_id) else {
        return votes;
    };
    let Ok(table) = crate::state::vip_table(v, config.hash_seed) else {
        return votes;
    };
    if table.slots.len() != slots.len() {
        return votes;
    }
    for (index, &id) in table.slots.iter().zip(slots) {
        votes
            .entry(table.names[index as usize].clone())
            .or_default()
            .insert(id);
    }
    votes
}

/// Every entry where `live` differs from `desired`, and the stray VIP
/// entries.
fn compare(desired: &Desired, host: &HostInterface, live: &LiveMaps) -> (Vec<String>, Vec<VipKey>) {
    let mut out = Vec::new();
    if live.global != global_config(host, &desired.config) {
        out.push("the host entry (XLB_CONFIG) differs from the config's".to_string());
    }
    let entries: HashMap<VipKey, VipMeta> = live.vips.iter().copied().collect();
    for vip in &desired.vips {
        let name = &vip.config.name;
        match entries.get(&vip.key) {
            None => out.push(format!("vip {name}: no VIP entry")),
            Some(meta) if *meta != vip.meta => out.push(format!(
                "vip {name}: the VIP entry names id {} of {} slots, expected id {} of {}",
                meta.vip_id, meta.table_size, vip.meta.vip_id, vip.meta.table_size
            )),
            Some(_) => {}
        }
        if live.tables.get(&vip.id).is_none_or(|live| {
            live.len() != vip.slot_count() || !live.iter().copied().eq(vip.slot_iter())
        }) {
            out.push(format!(
                "vip {name}: the live table (id {}) differs",
                vip.id
            ));
        }
        for (b, &id) in vip.config.backends.iter().zip(&vip.backend_ids) {
            if live.backends.get(id as usize) != Some(&kernel_backend(b, vip.id)) {
                out.push(format!(
                    "vip {name}: backend {}: no entry (id {id})",
                    b.name
                ));
            }
        }
    }
    for (key, meta) in &desired.echo {
        if entries.get(key) != Some(meta) {
            out.push(format!("the ICMP echo entry of {} differs", addr_text(key)));
        }
    }
    let known: HashSet<&VipKey> = desired
        .vips
        .iter()
        .map(|v| &v.key)
        .chain(desired.echo.iter().map(|(k, _)| k))
        .collect();
    let stray: Vec<VipKey> = live
        .vips
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !known.contains(k))
        .collect();
    for key in &stray {
        out.push(format!(
            "a VIP entry the config does not have: {} port {} protocol {}",
            addr_text(key),
            u16::from_be(key.port_be),
            key.proto
        ));
    }
    (out, stray)
}

fn addr_text(key: &VipKey) -> String {
    if key.family == lb_common::FAMILY_V4 {
        Ipv4Addr::new(key.addr[0], key.addr[1], key.addr[2], key.addr[3]).to_string()
    } else {
        std::net::Ipv6Addr::from(key.addr).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use bytemuck::Zeroable as _;

    const HOST: HostInterface = HostInterface {
        mac: [2, 0, 0, 0, 0, 2],
        ifindex: 7,
        mtu: 1500,
    };

    /// A config of VIPs `web` (TCP 80) and `dns` (UDP 53) over `backends`
    /// (name, last address byte, weight, state).
    fn config(backends: &[(&str, u8, u32, &str)], web_size: u32) -> Config {
        let mut text = String::from("interface = \"eth0\"\nhash_seed = 7\n");
        for (vip, port, proto, size) in [("web", 80, "tcp", web_size), ("dns", 53, "udp", 503)] {
            text.push_str(&format!(
                "[[vip]]\nname = \"{vip}\"\naddress = \"198.18.100.1\"\nport = {port}\nprotocol = \"{proto}\"\ntable_size = {size}\n"
            ));
            for (name, last, weight, state) in backends {
                text.push_str(&format!(
                    "[[vip.backend]]\nname = \"{name}\"\naddress = \"198.18.0.{last}\"\nmac = \"02:00:00:00:00:{last:02x}\"\nweight = {weight}\nstate = \"{state}\"\n"
                ));
            }
        }
        parse(&text, "adopt.toml").unwrap()
    }

    /// What the writer leaves in the maps after applying `steps` in order:
    /// every step's entries (later ones over earlier ones), retired ids
    /// invalid, the last step's tables and VIP entries.
    fn maps_after(steps: &[&Config]) -> (Desired, LiveMaps) {
        let mut backends = vec![
            KernelBackend {
                mac: [0; 6],
                flags: 0,
                family: 0,
                addr: [0; 16],
                vip_id: 0,
                _pad: 0,
            };
            MAX_BACKENDS as usize
        ];
        let mut previous: Option<Desired> = None;
        for config in steps {
            let empty = Allocation::default();
            let prev_alloc = previous.as_ref().map_or(&empty, |p| &p.allocation);
            let d = desired(config, prev_alloc).unwrap();
            for vip in &d.vips {
                for (b, &id) in vip.config.backends.iter().zip(&vip.backend_ids) {
                    backends[id as usize] = kernel_backend(b, vip.id);
                }
            }
            for id in d.retired_backend_ids(prev_alloc) {
                backends[id as usize].flags &= !BACKEND_F_VALID;
            }
            previous = Some(d);
        }
        let d = previous.unwrap();
        let live = LiveMaps {
            global: global_config(&HOST, &d.config),
            vips: d
                .vips
                .iter()
                .map(|v| (v.key, v.meta))
                .chain(d.echo.iter().copied())
                .collect(),
            tables: d
                .vips
                .iter()
                .map(|v| (v.id, v.slots().into_owned()))
                .collect(),
            backends,
        };
        (d, live)
    }

    #[test]
    fn the_ids_of_a_long_history_are_read_back_exactly() {
        let a = config(&[("b1", 11, 1, "active"), ("b2", 12, 1, "active")], 1021);
        // b3 joins, b2 leaves, b1's address changes (a new id), web's
        // table grows (a new VIP id), b4 drains.
        let b = config(
            &[
                ("b1", 11, 2, "active"),
                ("b2", 12, 1, "active"),
                ("b3", 13, 1, "active"),
            ],
            1021,
        );
        let c = config(&[("b1", 21, 2, "active"), ("b3", 13, 1, "active")], 2039);
        let d = config(
            &[
                ("b1", 21, 2, "active"),
                ("b3", 13, 3, "active"),
                ("b4", 14, 1, "draining"),
            ],
            2039,
        );
        let (applied, live) = maps_after(&[&a, &b, &c, &d]);
        let adopted = adopt(&d, &HOST, &live).unwrap();
        assert_eq!(adopted.differences, Vec::<String>::new());
        assert!(adopted.stray.is_empty());
        assert_eq!(adopted.desired.vips, applied.vips);
        assert_eq!(adopted.desired.echo, applied.echo);
        // The next apply hands out the same ids a daemon that never
        // restarted would: the cursor is where it was.
        let e = config(&[("b1", 21, 2, "active"), ("b5", 15, 1, "active")], 2039);
        let kept = desired(&e, &applied.allocation).unwrap();
        let after_adoption = desired(&e, &adopted.desired.allocation).unwrap();
        assert_eq!(kept.vips, after_adoption.vips);
    }

    #[test]
    fn a_duplicate_valid_entry_is_told_apart_by_the_live_table() {
        // b2 left; its web id (1) was never retired (the daemon died within
        // the grace) and, as if reused, now points where b3 does. Only the
        // table tells b3's real id.
        let a = config(
            &[
                ("b1", 11, 1, "active"),
                ("b2", 12, 1, "active"),
                ("b3", 13, 1, "active"),
            ],
            1021,
        );
        let b = config(&[("b1", 11, 1, "active"), ("b3", 13, 1, "active")], 1021);
        let (applied, mut live) = maps_after(&[&a, &b]);
        let web = &applied.vips[0];
        let b3 = web.backend_ids[1];
        assert!(b3 > 1);
        live.backends[1] = live.backends[b3 as usize];
        let adopted = adopt(&b, &HOST, &live).unwrap();
        assert_eq!(adopted.differences, Vec::<String>::new());
        assert_eq!(adopted.desired.vips, applied.vips);
    }

    #[test]
    fn maps_a_step_ahead_of_the_revision_are_reported_and_fresh_ids_avoid_theirs() {
        // The revision says `a`; the daemon died after writing `b` into the
        // maps but before recording it. In `b`, b2 moved to another address
        // (its old id retired at once; a removed backend's would be
        // retained, valid: state::retain) and b3 joined.
        let a = config(&[("b1", 11, 1, "active"), ("b2", 12, 1, "active")], 1021);
        let b = config(
            &[
                ("b1", 11, 1, "active"),
                ("b2", 22, 1, "active"),
                ("b3", 13, 1, "active"),
            ],
            1021,
        );
        let (_, live) = maps_after(&[&a, &b]);
        let adopted = adopt(&a, &HOST, &live).unwrap();
        assert!(!adopted.differences.is_empty());
        assert!(
            adopted
                .differences
                .iter()
                .any(|d| d.contains("backend b2: no entry")),
            "{:?}",
            adopted.differences
        );
        // b2's fresh id is none that a valid entry holds (b3's among them).
        let valid: BTreeSet<u32> = live
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.flags & BACKEND_F_VALID != 0)
            .map(|(id, _)| id as u32)
            .collect();
        let web = &adopted.desired.vips[0];
        let b2 = web.backend_ids[1];
        assert!(!valid.contains(&b2), "b2 got {b2}, held by a live entry");
        // b1 kept its id.
        assert_eq!(
            web.backend_ids[0],
            live.tables[&web.id][..]
                .iter()
                .copied()
                .find(|&id| live.backends[id as usize].addr[3] == 11)
                .unwrap()
        );
    }

    #[test]
    fn stray_vip_entries_are_reported_and_their_ids_kept_free() {
        let a = config(&[("b1", 11, 1, "active")], 1021);
        let (_, mut live) = maps_after(&[&a]);
        let stray_key = VipKey {
            addr: [198, 18, 100, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            port_be: 443u16.to_be(),
            proto: lb_common::PROTO_TCP,
            family: lb_common::FAMILY_V4,
        };
        let stray_id = 0;
        // The config's web lost its entry; the stray one holds id 0.
        live.vips.retain(|(_, m)| m.vip_id != stray_id);
        live.vips.push((
            stray_key,
            VipMeta {
                vip_id: stray_id,
                table_size: 1021,
                method: 0,
                hash: 0,
                flags: 0,
                _pad: [0; 5],
            },
        ));
        let adopted = adopt(&a, &HOST, &live).unwrap();
        assert_eq!(adopted.stray, vec![stray_key]);
        assert!(adopted.desired.vips.iter().all(|v| v.id != stray_id));
        assert!(
            adopted
                .differences
                .iter()
                .any(|d| d.contains("198.18.100.9 port 443")),
            "{:?}",
            adopted.differences
        );
    }

    #[test]
    fn a_health_patched_table_is_kept_and_anything_else_rewritten() {
        let mut checked = config(
            &[
                ("b1", 11, 1, "active"),
                ("b2", 12, 1, "active"),
                ("b3", 13, 2, "active"),
            ],
            1021,
        );
        checked.vip_mut(0).health.kind = crate::config::CheckKind::Tcp;
        let (applied, mut live) = maps_after(&[&checked]);
        let web = &applied.vips[0];
        let m = Membership::Without(["b2".to_string()].into());
        let p = crate::health::patch::patched(web, &m, checked.hash_seed);
        live.tables.insert(web.id, p.slots.clone());
        let adopted = adopt(&checked, &HOST, &live).unwrap();
        assert_eq!(adopted.differences, Vec::<String>::new());
        assert_eq!(adopted.health, [("web".to_string(), m.clone())]);
        assert_eq!(adopted.desired.vips[0].slots(), p.slots);
        assert_eq!(adopted.desired.vips[0].table_shares, p.shares);
        assert_eq!(adopted.desired.vips[0].table, web.table);
        // The same table under a config that does not check web: a
        // difference, rewritten to the config's table.
        let mut unchecked = checked.clone();
        unchecked.vip_mut(0).health.kind = crate::config::CheckKind::None;
        let adopted = adopt(&unchecked, &HOST, &live).unwrap();
        assert!(adopted.health.is_empty());
        assert_eq!(
            adopted.differences,
            [format!("vip web: the live table (id {}) differs", web.id)]
        );
        assert_eq!(adopted.desired.vips[0].slots(), web.slots());
        // Nor is a table with b2 out in some other way.
        let mut other = p.slots.clone();
        let i = other.iter().position(|&id| id != other[0]).unwrap();
        other.swap(0, i);
        live.tables.insert(web.id, other);
        let adopted = adopt(&checked, &HOST, &live).unwrap();
        assert!(adopted.health.is_empty());
        assert_eq!(adopted.differences.len(), 1, "{:?}", adopted.differences);
    }

    #[test]
    fn empty_maps_differ_everywhere() {
        let a = config(&[("b1", 11, 1, "active")], 1021);
        let (_, mut live) = maps_after(&[&a]);
        live.vips.clear();
        live.tables.clear();
        live.backends.iter_mut().for_each(|b| b.flags = 0);
        live.global = GlobalConfig::zeroed();
        let adopted = adopt(&a, &HOST, &live).unwrap();
        // Host entry, 2 VIP entries, 2 tables, 2 backend entries, 1 echo.
        assert_eq!(adopted.differences.len(), 8, "{:?}", adopted.differences);
    }
}
