//! From a validated config to what the kernel maps must hold: VIP ids,
//! backend ids and each VIP's Maglev table in backend ids. Pure: the writer
//! turns a `Desired` into map updates, the simulator reads it.
//!
//! Ids are a local translation of names; Maglev tables themselves depend only
//! on names, weights and the hash seed, so every node picks the same backend.
//! An id is never rewritten while a live table may still name it: a changed
//! backend (MAC or address) gets a new id, and ids freed by an apply are
//! reused only by a later one, long after packets stopped reading them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use lb_common::{
    BACKEND_F_VALID, Backend as KernelBackend, FAMILY_V4, FAMILY_V6, VipKey, VipMeta,
    maps::{MAX_BACKENDS, MAX_VIPS},
};

use crate::config::{Backend, Config, Vip};
use crate::maglev::{self, MaglevBackend, MaglevTable};

/// Table slot value of a VIP without active backends: no such backend
/// exists, so the program drops the packet and counts `no_backend`.
pub const NO_BACKEND: u32 = u32::MAX;

/// What identifies a VIP's id: a new table size needs a new id, so a packet
/// never pairs one size with a table of another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct VipIdentity {
    name: String,
    table_size: u32,
}

/// What identifies a backend's id: any change of where frames go is a new id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct BackendIdentity {
    vip: String,
    name: String,
    mac: [u8; 6],
    address: IpAddr,
}

/// Which ids are in use, and by whom.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    vips: BTreeMap<VipIdentity, u32>,
    backends: BTreeMap<BackendIdentity, u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DesiredVip {
    pub config: Vip,
    pub id: u32,
    pub key: VipKey,
    pub meta: VipMeta,
    /// The Maglev table over the VIP's active backends (names, slots).
    pub table: MaglevTable,
    /// Kernel backend id of each `config.backends[i]`.
    pub backend_ids: Vec<u32>,
    /// The kernel table: slot -> backend id (`[NO_BACKEND]` when empty).
    pub slots: Vec<u32>,
    /// Each `config.backends[i]`'s share of the table's slots (computed once
    /// here: the collector needs them every second).
    pub table_shares: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub config: Config,
    pub vips: Vec<DesiredVip>,
    pub allocation: Allocation,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("vip[{vip}]: Maglev table: {source}")]
    Maglev {
        vip: String,
        #[source]
        source: maglev::MaglevError,
    },
    #[error("out of {kind} ids (at most {max}, counting ids the previous config still holds)")]
    OutOfIds { kind: &'static str, max: u32 },
}

pub fn vip_key(vip: &Vip) -> VipKey {
    let (addr, family) = addr_bytes(vip.address);
    VipKey {
        addr,
        port_be: vip.port.to_be(),
        proto: vip.protocol.number(),
        family,
    }
}

pub fn addr_bytes(a: IpAddr) -> ([u8; 16], u8) {
    let mut addr = [0u8; 16];
    match a {
        IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            (addr, FAMILY_V4)
        }
        IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
    }
}

/// The kernel entry of backend `b` of the VIP with id `vip_id`.
pub fn kernel_backend(b: &Backend, vip_id: u32) -> KernelBackend {
    let (addr, family) = addr_bytes(b.address);
    KernelBackend {
        mac: b.mac.0,
        flags: BACKEND_F_VALID,
        family,
        addr,
        vip_id,
        _pad: 0,
    }
}

/// Lowest ids not in `used`, `n` of them.
fn take_free(
    used: &BTreeSet<u32>,
    max: u32,
    n: usize,
    kind: &'static str,
) -> Result<Vec<u32>, StateError> {
    let free: Vec<u32> = (0..max).filter(|id| !used.contains(id)).take(n).collect();
    if free.len() < n {
        return Err(StateError::OutOfIds { kind, max });
    }
    Ok(free)
}

/// Compute the desired kernel state for `config`, keeping the ids of
/// everything `previous` already placed.
pub fn desired(config: &Config, previous: &Allocation) -> Result<Desired, StateError> {
    let mut allocation = Allocation::default();

    // VIP ids: keep, then allocate the new ones from ids nobody held before.
    let vip_identities: Vec<VipIdentity> = config
        .vips
        .iter()
        .map(|v| VipIdentity {
            name: v.name.clone(),
            table_size: v.table_size,
        })
        .collect();
    let used: BTreeSet<u32> = previous.vips.values().copied().collect();
    let new_count = vip_identities
        .iter()
        .filter(|i| !previous.vips.contains_key(i))
        .count();
    let mut fresh = take_free(&used, MAX_VIPS, new_count, "VIP")?.into_iter();
    for ident in &vip_identities {
        let id = match previous.vips.get(ident) {
            Some(&id) => id,
            None => fresh.next().expect("counted above"),
        };
        allocation.vips.insert(ident.clone(), id);
    }

    // Backend ids, the same way.
    let backend_identities: Vec<Vec<BackendIdentity>> = config
        .vips
        .iter()
        .map(|v| {
            v.backends
                .iter()
                .map(|b| BackendIdentity {
                    vip: v.name.clone(),
                    name: b.name.clone(),
                    mac: b.mac.0,
                    address: b.address,
                })
                .collect()
        })
        .collect();
    let used: BTreeSet<u32> = previous.backends.values().copied().collect();
    let new_count = backend_identities
        .iter()
        .flatten()
        .filter(|i| !previous.backends.contains_key(i))
        .count();
    let mut fresh = take_free(&used, MAX_BACKENDS, new_count, "backend")?.into_iter();
    for ident in backend_identities.iter().flatten() {
        let id = match previous.backends.get(ident) {
            Some(&id) => id,
            None => fresh.next().expect("counted above"),
        };
        allocation.backends.insert(ident.clone(), id);
    }

    let mut vips = Vec::with_capacity(config.vips.len());
    for (v, (vip_ident, b_idents)) in config
        .vips
        .iter()
        .zip(vip_identities.iter().zip(&backend_identities))
    {
        let id = allocation.vips[vip_ident];
        let backend_ids: Vec<u32> = b_idents.iter().map(|i| allocation.backends[i]).collect();
        let inputs: Vec<MaglevBackend<'_>> = v
            .table_backends()
            .map(|b| MaglevBackend {
                name: &b.name,
                weight: b.weight,
            })
            .collect();
        let table = maglev::build(&inputs, v.table_size, config.hash_seed).map_err(|source| {
            StateError::Maglev {
                vip: v.name.clone(),
                source,
            }
        })?;
        let slots = if table.slots.is_empty() {
            vec![NO_BACKEND]
        } else {
            // Table index -> config index -> kernel id.
            let ids_by_table_index: Vec<u32> = table
                .names
                .iter()
                .map(|n| {
                    let i = v
                        .backends
                        .iter()
                        .position(|b| &b.name == n)
                        .expect("table names come from the VIP");
                    backend_ids[i]
                })
                .collect();
            table
                .slots
                .iter()
                .map(|&i| ids_by_table_index[i as usize])
                .collect()
        };
        let shares = table.shares();
        let table_shares = v
            .backends
            .iter()
            .map(|b| table.index_of(&b.name).map_or(0.0, |i| shares[i as usize]))
            .collect();
        vips.push(DesiredVip {
            table_shares,
            config: v.clone(),
            id,
            key: vip_key(v),
            meta: VipMeta {
                vip_id: id,
                table_size: slots.len() as u32,
                method: lb_common::METHOD_L2_DSR,
                hash: lb_common::HASH_FIVE_TUPLE,
                flags: 0,
                _pad: [0; 5],
            },
            table,
            backend_ids,
            slots,
        });
    }
    Ok(Desired {
        config: config.clone(),
        vips,
        allocation,
    })
}

impl Desired {
    /// Backend ids in use that `previous` did not have: their entries and
    /// counters must be written before any table names them.
    pub fn new_backend_ids(&self, previous: &Allocation) -> BTreeSet<u32> {
        let old: BTreeSet<u32> = previous.backends.values().copied().collect();
        self.allocation
            .backends
            .values()
            .copied()
            .filter(|id| !old.contains(id))
            .collect()
    }

    pub fn new_vip_ids(&self, previous: &Allocation) -> BTreeSet<u32> {
        let old: BTreeSet<u32> = previous.vips.values().copied().collect();
        self.allocation
            .vips
            .values()
            .copied()
            .filter(|id| !old.contains(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config(backends: &[(&str, &str, u32)]) -> Config {
        let mut text = String::from(
            "interface = \"eth0\"\nhash_seed = 3\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n",
        );
        for (name, mac, weight) in backends {
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"{name}\"\naddress = \"198.18.0.{}\"\nmac = \"{mac}\"\nweight = {weight}\n",
                10 + name.len()
            ));
        }
        parse(&text, "test.toml").unwrap()
    }

    #[test]
    fn ids_survive_an_apply_and_new_ones_avoid_the_old() {
        let first = desired(
            &config(&[
                ("a", "02:00:00:00:00:01", 1),
                ("bb", "02:00:00:00:00:02", 1),
            ]),
            &Allocation::default(),
        )
        .unwrap();
        assert_eq!(first.vips[0].backend_ids, vec![0, 1]);
        // "a" goes, "ccc" comes: "bb" keeps id 1, and "ccc" must not take
        // id 0, which the live table may still name.
        let second = desired(
            &config(&[
                ("bb", "02:00:00:00:00:02", 1),
                ("ccc", "02:00:00:00:00:03", 1),
            ]),
            &first.allocation,
        )
        .unwrap();
        assert_eq!(second.vips[0].backend_ids, vec![1, 2]);
        assert_eq!(
            second
                .new_backend_ids(&first.allocation)
                .into_iter()
                .collect::<Vec<_>>(),
            vec![2]
        );
        // A later apply may reuse id 0.
        let third = desired(
            &config(&[
                ("bb", "02:00:00:00:00:02", 1),
                ("dddd", "02:00:00:00:00:04", 1),
            ]),
            &second.allocation,
        )
        .unwrap();
        assert_eq!(third.vips[0].backend_ids, vec![1, 0]);
    }

    #[test]
    fn a_changed_mac_is_a_new_id() {
        let first = desired(
            &config(&[("a", "02:00:00:00:00:01", 1)]),
            &Allocation::default(),
        )
        .unwrap();
        let second = desired(&config(&[("a", "02:00:00:00:00:09", 1)]), &first.allocation).unwrap();
        assert_ne!(first.vips[0].backend_ids, second.vips[0].backend_ids);
    }

    #[test]
    fn kernel_slots_translate_the_maglev_table() {
        let d = desired(
            &config(&[
                ("a", "02:00:00:00:00:01", 1),
                ("bb", "02:00:00:00:00:02", 3),
            ]),
            &Allocation::default(),
        )
        .unwrap();
        let v = &d.vips[0];
        assert_eq!(v.slots.len(), 1021);
        assert_eq!(v.meta.table_size, 1021);
        for (slot, &id) in v.slots.iter().enumerate() {
            let name = &v.table.names[v.table.slots[slot] as usize];
            let i = v
                .config
                .backends
                .iter()
                .position(|b| &b.name == name)
                .unwrap();
            assert_eq!(v.backend_ids[i], id);
        }
        let weight_weighted =
            v.slots.iter().filter(|&&id| id == v.backend_ids[1]).count() as f64 / 1021.0;
        assert!((weight_weighted - 0.75).abs() < 0.01);
    }

    #[test]
    fn a_vip_without_active_backends_gets_a_table_that_drops() {
        let mut c = config(&[("a", "02:00:00:00:00:01", 1)]);
        c.vips[0].backends[0].state = crate::config::BackendState::Disabled;
        let d = desired(&c, &Allocation::default()).unwrap();
        assert_eq!(d.vips[0].slots, vec![NO_BACKEND]);
        assert_eq!(d.vips[0].meta.table_size, 1);
        // The disabled backend still has an id (for its counters).
        assert_eq!(d.vips[0].backend_ids.len(), 1);
    }

    #[test]
    fn vip_keys_are_network_order() {
        let d = desired(
            &config(&[("a", "02:00:00:00:00:01", 1)]),
            &Allocation::default(),
        )
        .unwrap();
        let k = d.vips[0].key;
        assert_eq!(&k.addr[..4], &[198, 18, 100, 1]);
        assert_eq!(k.port_be.to_ne_bytes(), [0, 80]);
        assert_eq!(
            (k.proto, k.family),
            (lb_common::PROTO_TCP, lb_common::FAMILY_V4)
        );
    }
}
