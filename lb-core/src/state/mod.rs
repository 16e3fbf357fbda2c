//! From a validated config to what the kernel maps must hold: VIP ids,
//! backend ids and each VIP's Maglev table in backend ids. Pure: the writer
//! turns a `Desired` into map updates, the simulator reads it.
//!
//! Besides one VIP map entry per VIP, each distinct VIP address gets an
//! address entry, (address, port 0, ICMP or ICMPv6), with `VIP_F_ADDRESS`,
//! `VIP_F_ECHO_REPLY` when `icmp_echo = "reply"` (the program answers pings
//! to it) and `VIP_F_UNHANDLED_PASS` when its VIPs have `unhandled = "pass"`
//! (the program reads it for packets to the address it does not handle).
//!
//! Ids are a local translation of names; Maglev tables themselves depend only
//! on names, weights and the hash seed, so every node picks the same backend.
//! An id is never rewritten while a live table may still name it: a changed
//! backend (MAC or address) gets a new id. A removed backend's id is
//! retained first, valid and in no table, while connection entries may name
//! it (`retain`). An id freed by an apply (its backend changed, its VIP
//! gone, its retention over) is retired by the writer once no table names
//! it (its entry loses `BACKEND_F_VALID`, so flows the connection table still
//! remembers on it are hashed again onto the live table), and backend ids are
//! handed out next-fit (`ids`), so a freed id is not given to another backend
//! until the whole id space has been gone through.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use lb_common::{
    BACKEND_F_VALID, Backend as KernelBackend, FAMILY_V4, FAMILY_V6, GLOBAL_F_PORT_WILDCARD,
    GlobalConfig, LAYOUT_VERSION, PROTO_ICMP, PROTO_ICMPV6, VIP_F_ADDRESS, VIP_F_ECHO_REPLY,
    VIP_F_UNHANDLED_PASS, VipKey, VipMeta,
    maps::{MAX_BACKENDS, MAX_VIPS},
};
use rayon::prelude::*;

use crate::config::vip_hash;
use crate::config::{Backend, Config, IcmpEcho, Unhandled, Vip, same_vip};
use crate::host::HostInterface;
use crate::maglev::{self, MaglevBackend, MaglevTable, SlotsView};

mod error;
mod ids;
mod retain;

pub use error::StateError;
pub use retain::{RETENTION_SECONDS, Retained, RetainedBackend};

/// Table slot value of a VIP without active backends: no such backend
/// exists, so the program drops the packet and counts `no_backend`.
pub const NO_BACKEND: u32 = u32::MAX;

/// What identifies a VIP's id: a new table size needs a new id, so a packet
/// never pairs one size with a table of another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct VipIdentity {
    pub(crate) name: String,
    pub(crate) table_size: u32,
}

/// What identifies a backend's id: any change of where frames go is a new id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct BackendIdentity {
    pub(crate) vip: String,
    pub(crate) name: String,
    pub(crate) mac: [u8; 6],
    pub(crate) address: IpAddr,
}

impl BackendIdentity {
    fn of(vip: &str, b: &Backend) -> Self {
        Self {
            vip: vip.to_owned(),
            name: b.name.clone(),
            mac: b.mac.0,
            address: b.address,
        }
    }
}

/// A configured backend's id within its VIP's map (keyed by its name:
/// names are unique within a VIP), with what else identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BackendSlot {
    pub(crate) mac: [u8; 6],
    pub(crate) address: IpAddr,
    pub(crate) id: u32,
}

/// One VIP's configured backends' ids, by backend name.
pub(crate) type VipBackends = BTreeMap<String, BackendSlot>;

/// Which ids are in use, and by whom.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    pub(crate) vips: BTreeMap<VipIdentity, u32>,
    /// Configured backends' ids by VIP name. A VIP's map is shared (the
    /// same `Arc`) by the states before and after an apply that leaves its
    /// backends as they were: such an apply copies none of it.
    pub(crate) backends: BTreeMap<String, Arc<VipBackends>>,
    /// Removed backends whose ids and kernel entries are kept (in no
    /// table) while connection entries may still name them (`retain`).
    pub(crate) retained: BTreeMap<BackendIdentity, Retained>,
    /// Where the search for the next new backend id starts: one past the
    /// last one handed out (next-fit, see `ids`).
    pub(crate) next_backend_id: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DesiredVip {
    /// The applied config's own VIP (the same `Arc` as in `Desired::config`).
    pub config: Arc<Vip>,
    pub id: u32,
    pub key: VipKey,
    pub meta: VipMeta,
    /// The Maglev table over the VIP's active backends (names, slots): the
    /// one copy of the table the state holds; the kernel table is read
    /// from it ([`DesiredVip::slots`]) unless a health patch changed it.
    pub table: MaglevTable,
    /// Kernel backend id of each `config.backends[i]`.
    pub backend_ids: Vec<u32>,
    /// Kernel backend id of each table index (`table.names[i]`'s).
    table_ids: Vec<u32>,
    /// The kernel table where a health patch made it other than the
    /// table's own (`set_slots`); None: read through `table_ids`. A
    /// second table of 4 bytes a slot only for the VIPs that need one.
    patched_slots: Option<Vec<u32>>,
    /// Each `config.backends[i]`'s share of the table's slots (computed once
    /// here: the collector needs them every second).
    pub table_shares: Vec<f64>,
    /// Whether health checks took backends out of `slots` and
    /// `table_shares` (`health::patch_desired`): then they are not what
    /// `table` says, and a later state does not take them as they are.
    pub health_patched: bool,
    /// `config::vip_hash(&config)`: a plan hashes again only changed VIPs.
    pub config_hash: u64,
}

impl DesiredVip {
    /// The kernel table: slot -> backend id (`[NO_BACKEND]` when the table
    /// is empty). Made from the Maglev table when asked (4 bytes a slot,
    /// freed by the caller) unless a health patch holds it.
    pub fn slots(&self) -> Cow<'_, [u32]> {
        match &self.patched_slots {
            Some(slots) => Cow::Borrowed(slots),
            None => {
                // Through `fold`: one match on the width, not one a slot.
                let slots = self.slot_iter();
                let mut out = Vec::with_capacity(slots.len());
                slots.for_each(|id| out.push(id));
                Cow::Owned(out)
            }
        }
    }

    /// The kernel table's slots one by one, as [`DesiredVip::slots`] has
    /// them, without making the table.
    pub fn slot_iter(&self) -> KernelSlots<'_> {
        match &self.patched_slots {
            Some(slots) => KernelSlots::Held(slots.iter()),
            None if self.table.slots.is_empty() => KernelSlots::Held([NO_BACKEND].iter()),
            None => match self.table.slots.view() {
                SlotsView::Narrow(s) => KernelSlots::Narrow(s.iter(), &self.table_ids),
                SlotsView::Wide(s) => KernelSlots::Wide(s.iter(), &self.table_ids),
            },
        }
    }

    /// The kernel table's length: the table size, 1 for an empty table.
    pub fn slot_count(&self) -> usize {
        self.slot_iter().len()
    }

    /// Whether `self` and `other` have the same kernel table, compared
    /// without making either.
    pub fn same_slots(&self, other: &DesiredVip) -> bool {
        if self.patched_slots.is_none()
            && other.patched_slots.is_none()
            && self.table_ids == other.table_ids
        {
            return self.table.slots == other.table.slots;
        }
        self.slot_count() == other.slot_count() && self.slot_iter().eq(other.slot_iter())
    }

    /// Sets the kernel table (a health patch, or its end): held apart only
    /// when it differs from the Maglev table's own.
    pub fn set_slots(&mut self, slots: Vec<u32>) {
        self.patched_slots = None;
        if !(slots.len() == self.slot_count() && slots.iter().copied().eq(self.slot_iter())) {
            self.patched_slots = Some(slots);
        }
    }
}

/// A kernel table's slots (backend ids), read from where `DesiredVip`
/// keeps them.
#[derive(Clone, Debug)]
pub enum KernelSlots<'a> {
    /// Table indices (one byte a slot: at most 256 backends) translated to
    /// backend ids.
    Narrow(std::slice::Iter<'a, u8>, &'a [u32]),
    /// Table indices (two bytes a slot) translated to backend ids.
    Wide(std::slice::Iter<'a, u16>, &'a [u32]),
    /// Backend ids as they are held.
    Held(std::slice::Iter<'a, u32>),
}

impl Iterator for KernelSlots<'_> {
    type Item = u32;

    #[inline]
    fn next(&mut self) -> Option<u32> {
        match self {
            KernelSlots::Narrow(slots, ids) => slots.next().map(|&i| ids[usize::from(i)]),
            KernelSlots::Wide(slots, ids) => slots.next().map(|&i| ids[usize::from(i)]),
            KernelSlots::Held(slots) => slots.next().copied(),
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            KernelSlots::Narrow(slots, _) => slots.size_hint(),
            KernelSlots::Wide(slots, _) => slots.size_hint(),
            KernelSlots::Held(slots) => slots.size_hint(),
        }
    }

    /// A jump, not `n` steps (`simulate` asks for one slot).
    #[inline]
    fn nth(&mut self, n: usize) -> Option<u32> {
        match self {
            KernelSlots::Narrow(slots, ids) => slots.nth(n).map(|&i| ids[usize::from(i)]),
            KernelSlots::Wide(slots, ids) => slots.nth(n).map(|&i| ids[usize::from(i)]),
            KernelSlots::Held(slots) => slots.nth(n).copied(),
        }
    }

    /// One match, then a loop over one slice (`for_each`, `sum`, `count`
    /// and `DesiredVip::slots` go through here; a `for` loop calls `next`).
    #[inline]
    fn fold<B, F: FnMut(B, u32) -> B>(self, init: B, mut f: F) -> B {
        match self {
            KernelSlots::Narrow(slots, ids) => {
                slots.fold(init, |acc, &i| f(acc, ids[usize::from(i)]))
            }
            KernelSlots::Wide(slots, ids) => {
                slots.fold(init, |acc, &i| f(acc, ids[usize::from(i)]))
            }
            KernelSlots::Held(slots) => slots.fold(init, |acc, &id| f(acc, id)),
        }
    }
}

impl ExactSizeIterator for KernelSlots<'_> {}

#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub config: Config,
    /// Shared: a VIP that an apply leaves as it was is the same `Arc` in
    /// the states before and after (`desired_reusing`), so an apply that
    /// changes one VIP copies nothing of the others. Changed through
    /// `Arc::make_mut`.
    pub vips: Vec<Arc<DesiredVip>>,
    /// The ICMP echo entries of the VIP map, one per distinct VIP address
    /// (the address entries: with `VIP_F_ECHO_REPLY` only when
    /// `icmp_echo = "reply"`), in file order.
    pub echo: Vec<(VipKey, VipMeta)>,
    pub allocation: Allocation,
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

/// The config map's entry for `config` on `host`. Tunnel settings that are
/// not configured are zero (no gateway MAC; a zero source prefix, which the
/// config refuses for a VIP that would need it).
pub fn global_config(host: &HostInterface, config: &Config) -> GlobalConfig {
    let tunnel = &config.tunnel;
    let (tunnel_src_v4, tunnel_src_v4_hostmask) = tunnel
        .source_v4
        .map_or(([0; 4], [0; 4]), |p| (p.addr.octets(), p.hostmask()));
    let (tunnel_src_v6, tunnel_src_v6_hostmask) = tunnel
        .source_v6
        .map_or(([0; 16], [0; 4]), |p| (p.addr.octets(), p.hostmask()));
    GlobalConfig {
        iface_mac: host.mac,
        gateway_mac: tunnel.gateway_mac.map_or([0; 6], |m| m.0),
        hash_seed: config.hash_seed,
        layout_version: LAYOUT_VERSION,
        ifindex: host.ifindex,
        mtu: host.mtu,
        gue_port_be: tunnel.gue_port.to_be(),
        flags: if config.vips.iter().any(|v| v.port == 0) {
            GLOBAL_F_PORT_WILDCARD
        } else {
            0
        },
        tunnel_src_v4,
        tunnel_src_v4_hostmask,
        tunnel_src_v6,
        tunnel_src_v6_hostmask,
        _pad: 0,
    }
}

/// Compute the desired kernel state for `config`, keeping the ids of
/// everything `previous` already placed.
pub fn desired(config: &Config, previous: &Allocation) -> Result<Desired, StateError> {
    desired_reusing(Cow::Borrowed(config), previous, None, None, &|| {})
}

/// Whether `a` and `b` build the same Maglev table: same size, same seed,
/// the same table backends (names and weights, in order). The table depends
/// on nothing else (`maglev::build`).
pub(crate) fn same_table_inputs(a: &Vip, a_seed: u32, b: &Vip, b_seed: u32) -> bool {
    a_seed == b_seed
        && a.table_size == b.table_size
        && a.table_backends()
            .map(|x| (&x.name, x.weight))
            .eq(b.table_backends().map(|x| (&x.name, x.weight)))
}

/// Maglev tables built for a config before it is applied (by the plan the
/// apply checks it against), by VIP name, each with the VIP it was built
/// for: `desired_reusing` takes one instead of building it again where the
/// VIP's table inputs are the same.
#[derive(Debug, Default)]
pub struct Prebuilt {
    pub seed: u32,
    pub tables: HashMap<String, (Arc<Vip>, MaglevTable)>,
}

/// Every table of `config`, built ahead of its apply (`desired_reusing`
/// takes them): a daemon's start builds them while the kernel verifies
/// its program. A table that fails to build is left out, for the apply to
/// build again and report.
pub fn prebuild(config: &Config) -> Prebuilt {
    let vips: Vec<Option<&Vip>> = config.vips.iter().map(|v| Some(&**v)).collect();
    let tables = vip_tables(&vips, config.hash_seed)
        .into_iter()
        .zip(&config.vips)
        .filter_map(|(table, v)| Some((v.name.clone(), (Arc::clone(v), table?.ok()?))))
        .collect();
    Prebuilt {
        seed: config.hash_seed,
        tables,
    }
}

/// The Maglev table `v` builds under `seed`: its table backends (active,
/// weighted) and its table size.
pub fn vip_table(v: &Vip, seed: u32) -> Result<MaglevTable, maglev::MaglevError> {
    let inputs: Vec<MaglevBackend<'_>> = v
        .table_backends()
        .map(|b| MaglevBackend {
            name: &b.name,
            weight: b.weight,
        })
        .collect();
    maglev::build(&inputs, v.table_size, seed)
}

/// The Maglev tables of `vips` under `seed` (None where None), as
/// [`vip_table`] builds each, on every core; but a table whose inputs
/// (table size, table backends' names and weights) are those of an earlier
/// VIP of the list is that table copied, not built again. VIPs served by
/// one pool of backends have one table: at 1,000 such VIPs x 64 backends a
/// build is ~0.35 ms of a core and a copy of its 16 KB ~2 us.
pub fn vip_tables(
    vips: &[Option<&Vip>],
    seed: u32,
) -> Vec<Option<Result<MaglevTable, maglev::MaglevError>>> {
    // A table's inputs, its backends in name order (`maglev::build` sorts
    // them so: the file's order is not an input).
    type Inputs<'a> = (u32, Vec<(&'a str, u32)>);
    let inputs: Vec<Option<Inputs<'_>>> = vips
        .par_iter()
        .map(|v| {
            v.map(|v| {
                let mut backends: Vec<(&str, u32)> = v
                    .table_backends()
                    .map(|b| (b.name.as_str(), b.weight))
                    .collect();
                backends.sort_unstable();
                (v.table_size, backends)
            })
        })
        .collect();
    // Each VIP's source: the first VIP of the list with its inputs.
    let mut first: HashMap<&Inputs<'_>, usize> = HashMap::with_capacity(vips.len());
    let source: Vec<Option<usize>> = inputs
        .iter()
        .enumerate()
        .map(|(i, inputs)| inputs.as_ref().map(|k| *first.entry(k).or_insert(i)))
        .collect();
    let mut built: Vec<Option<Result<MaglevTable, maglev::MaglevError>>> = vips
        .par_iter()
        .zip(&source)
        .enumerate()
        .map(|(i, (v, source))| match (v, source) {
            (Some(v), Some(j)) if *j == i => Some(vip_table(v, seed)),
            _ => None,
        })
        .collect();
    let copies: Vec<Option<Result<MaglevTable, maglev::MaglevError>>> = source
        .par_iter()
        .enumerate()
        .map(|(i, source)| match source {
            Some(j) if *j != i => built[*j].clone(),
            _ => None,
        })
        .collect();
    for (slot, copy) in built.iter_mut().zip(copies) {
        if copy.is_some() {
            *slot = copy;
        }
    }
    built
}

/// The ids `config` gets after `previous` (`desired_reusing`'s, without
/// building anything): an apply fails with the error this returns, so a
/// plan asks it too. `built`: the state applied now, if any.
pub fn allocate(
    config: &Config,
    previous: &Allocation,
    built: Option<&Desired>,
) -> Result<Allocation, StateError> {
    let built_by_name: HashMap<&str, &Arc<DesiredVip>> = built
        .map(|d| d.vips.iter().map(|v| (v.config.name.as_str(), v)).collect())
        .unwrap_or_default();
    allocated(config, previous, built, &built_by_name).map(|a| a.allocation)
}

/// What [`allocated`] hands out.
struct Allocated<'p> {
    allocation: Allocation,
    /// Each VIP's identity, in `config`'s order.
    vip_identities: Vec<VipIdentity>,
    /// Each VIP's map of backend ids where it is kept whole.
    kept_backends: Vec<Option<&'p Arc<VipBackends>>>,
}

/// [`allocate`], with what `desired_reusing` goes on with.
fn allocated<'p>(
    config: &Config,
    previous: &'p Allocation,
    built: Option<&Desired>,
    built_by_name: &HashMap<&str, &Arc<DesiredVip>>,
) -> Result<Allocated<'p>, StateError> {
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
    let mut fresh = ids::lowest_free(&used, MAX_VIPS, new_count, "VIP")?.into_iter();
    for ident in &vip_identities {
        let id = match previous.vips.get(ident) {
            Some(&id) => id,
            None => fresh.next().expect("counted above"),
        };
        allocation.vips.insert(ident.clone(), id);
    }

    // A VIP whose backends (names, MACs, addresses, in order) are those of
    // the built VIP of its name keeps its map of ids whole. Only valid when
    // `built` is the state `previous` was made for.
    let built_is_previous = built.is_some_and(|d| std::ptr::eq(&d.allocation, previous));
    let kept_backends: Vec<Option<&Arc<VipBackends>>> = config
        .vips
        .iter()
        .map(|v| {
            let b = built_by_name
                .get(v.name.as_str())
                .filter(|_| built_is_previous)?;
            let map = previous.backends.get(&v.name)?;
            // (The same `Arc`: the same backends, nothing to compare.)
            let same = map.len() == v.backends.len()
                && (Arc::ptr_eq(&b.config, v)
                    || b.config.backends.len() == v.backends.len()
                        && b.config.backends.iter().zip(&v.backends).all(|(x, y)| {
                            x.name == y.name && x.mac == y.mac && x.address == y.address
                        }));
            same.then_some(map)
        })
        .collect();
    // Backend ids, next-fit: the ids the previous config holds stay taken
    // (a packet may still read them), and the search goes on from the last
    // id handed out, so an id freed now is not handed out again soon.
    let new_count = config
        .vips
        .iter()
        .zip(&kept_backends)
        .filter(|(_, kept)| kept.is_none())
        .flat_map(|(v, _)| v.backends.iter().map(move |b| (v, b)))
        .filter(|(v, b)| previous.id_of(&BackendIdentity::of(&v.name, b)).is_none())
        .count();
    let taken = if new_count == 0 {
        ids::Taken {
            ids: Vec::new(),
            next: previous.next_backend_id,
        }
    } else {
        ids::next_fit(
            &previous.ids(),
            previous.next_backend_id,
            MAX_BACKENDS,
            new_count,
            "backend",
        )?
    };
    allocation.next_backend_id = taken.next;
    let mut fresh = taken.ids.into_iter();
    for (v, kept) in config.vips.iter().zip(&kept_backends) {
        if let Some(map) = kept {
            allocation.backends.insert(v.name.clone(), Arc::clone(map));
            continue;
        }
        for b in &v.backends {
            let ident = BackendIdentity::of(&v.name, b);
            let id = match previous.id_of(&ident) {
                Some(id) => id,
                None => fresh.next().expect("counted above"),
            };
            allocation.insert_backend(&ident, id);
        }
    }
    allocation.retained = carried(previous, &allocation);
    Ok(Allocated {
        allocation,
        vip_identities,
        kept_backends,
    })
}

/// [`desired`], taking the Maglev table of each VIP whose table inputs
/// (size, seed, table backends and weights) are those it had in `built`
/// from there instead of building it again: an apply that changes one VIP
/// builds one table. `built`'s tables are never health-patched
/// (`DesiredVip::table`), so they are what `maglev::build` would return.
/// The tables to build are built on every core (rayon); then `progress`
/// is called once for each table built (the daemon's watchdog: the
/// largest config's tables take about a second of one core). An owned
/// `config` moves into the state instead of being copied.
pub fn desired_reusing(
    config: Cow<'_, Config>,
    previous: &Allocation,
    built: Option<&Desired>,
    prebuilt: Option<Prebuilt>,
    progress: &dyn Fn(),
) -> Result<Desired, StateError> {
    let owned = config;
    let config: &Config = &owned;
    let built_by_name: HashMap<&str, &Arc<DesiredVip>> = built
        .map(|d| d.vips.iter().map(|v| (v.config.name.as_str(), v)).collect())
        .unwrap_or_default();
    let built_seed = built.map_or(0, |d| d.config.hash_seed);
    let Allocated {
        allocation,
        vip_identities,
        kept_backends,
    } = allocated(config, previous, built, &built_by_name)?;

    // Each VIP: the built one whole where nothing of it changed, else its
    // table where the table's inputs are the same; the others' tables
    // built on every core.
    let same_seed = built_seed == config.hash_seed;
    // The tables the plan of this very change built, where they fit.
    let mut prebuilt = prebuilt.unwrap_or_default();
    let mut handed: Vec<Option<MaglevTable>> = config
        .vips
        .iter()
        .map(|v| {
            let (vip, _) = prebuilt.tables.get(&v.name)?;
            same_table_inputs(vip, prebuilt.seed, v, config.hash_seed)
                .then(|| prebuilt.tables.remove(&v.name).map(|(_, t)| t))
                .flatten()
        })
        .collect();
    let reused: Vec<Option<&Arc<DesiredVip>>> = config
        .vips
        .iter()
        .map(|v| {
            built_by_name
                .get(v.name.as_str())
                .filter(|b| same_table_inputs(&b.config, built_seed, v, config.hash_seed))
                .copied()
        })
        .collect();
    // The others' tables, each distinct one built once.
    let to_build: Vec<Option<&Vip>> = config
        .vips
        .iter()
        .zip(&reused)
        .zip(&handed)
        .map(|((v, reused), handed)| (reused.is_none() && handed.is_none()).then_some(&**v))
        .collect();
    let mut fresh = vip_tables(&to_build, config.hash_seed);
    let tables: Vec<Reuse> = config
        .vips
        .par_iter()
        .zip(reused)
        .zip(handed.par_iter_mut())
        .zip(fresh.par_iter_mut())
        .map(|(((v, reused), handed), fresh)| {
            if let Some(b) = reused {
                if same_seed && !b.health_patched && same_vip(&b.config, v) {
                    return Ok(Reuse::Whole(Arc::clone(b)));
                }
                return Ok(Reuse::Table(b.table.clone(), false, vip_hash(v)));
            }
            if let Some(table) = handed.take() {
                return Ok(Reuse::Table(table, false, vip_hash(v)));
            }
            let built = fresh.take().expect("built: neither reused nor handed");
            built
                .map(|table| Reuse::Table(table, true, vip_hash(v)))
                .map_err(|source| StateError::Maglev {
                    vip: v.name.clone(),
                    source,
                })
        })
        .collect::<Result<_, _>>()?;
    for _ in tables
        .iter()
        .filter(|r| matches!(r, Reuse::Table(_, true, _)))
    {
        progress();
    }
    let mut vips = Vec::with_capacity(config.vips.len());
    for (((v, vip_ident), reuse), kept) in config
        .vips
        .iter()
        .zip(&vip_identities)
        .zip(tables)
        .zip(&kept_backends)
    {
        let id = allocation.vips[vip_ident];
        // The same config under the same id with its map of ids kept whole:
        // the same kernel ids, without looking each backend up again.
        if let Reuse::Whole(b) = &reuse
            && kept.is_some()
            && b.id == id
        {
            vips.push(Arc::clone(b));
            continue;
        }
        // A VIP without backends has no map.
        let backend_ids: Vec<u32> = allocation
            .backends
            .get(&v.name)
            .map_or_else(Vec::new, |ids| {
                v.backends.iter().map(|b| ids[&b.name].id).collect()
            });
        let (table, hash) = match reuse {
            // Same config, same ids: the same kernel state.
            Reuse::Whole(b) if b.id == id && b.backend_ids == backend_ids => {
                vips.push(b);
                continue;
            }
            Reuse::Whole(b) => (b.table.clone(), b.config_hash),
            Reuse::Table(table, _, hash) => (table, hash),
        };
        vips.push(Arc::new(desired_vip(v, id, table, backend_ids, hash)));
    }
    let echo = echo_entries(config.icmp_echo, &vips);
    // The config's VIPs are the state's (one copy held): a VIP kept whole
    // may have come from a parse of its own, equal but not the same `Arc`.
    let mut config = owned.into_owned();
    for (c, d) in config.vips.iter_mut().zip(&vips) {
        *c = Arc::clone(&d.config);
    }
    Ok(Desired {
        config,
        vips,
        echo,
        allocation,
    })
}

/// What `desired_reusing` takes from the earlier state for one VIP.
enum Reuse {
    /// The earlier VIP as it was (config, table, kernel slots).
    Whole(Arc<DesiredVip>),
    /// A table, whether it was built now (else reused), and the VIP's
    /// `plan::vip_hash`.
    Table(MaglevTable, bool, u64),
}

/// The desired state of VIP `v` with id `id`, table `table` and kernel
/// backend ids `backend_ids` (one per `v.backends`).
fn desired_vip(
    v: &Arc<Vip>,
    id: u32,
    table: MaglevTable,
    backend_ids: Vec<u32>,
    config_hash: u64,
) -> DesiredVip {
    // Table index -> config index -> kernel id.
    let table_ids: Vec<u32> = table
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
    let table_size = table.slots.len().max(1) as u32;
    let shares = table.shares();
    let table_shares = v
        .backends
        .iter()
        .map(|b| table.index_of(&b.name).map_or(0.0, |i| shares[i as usize]))
        .collect();
    DesiredVip {
        table_shares,
        config: Arc::clone(v),
        id,
        key: vip_key(v),
        meta: VipMeta {
            vip_id: id,
            table_size,
            method: v.forwarding.method(),
            hash: v.hash.code(),
            flags: 0,
            _pad: [0; 5],
        },
        table,
        backend_ids,
        table_ids,
        patched_slots: None,
        health_patched: false,
        config_hash,
    }
}

/// One ICMP echo entry per distinct VIP address, from the first VIP at that
/// address (its id names the counters the echo traffic is counted under; its
/// method and hash go along so the entry reads like the VIP's own). No table:
/// `table_size` 0.
fn echo_entries(icmp_echo: IcmpEcho, vips: &[Arc<DesiredVip>]) -> Vec<(VipKey, VipMeta)> {
    let mut seen = BTreeSet::new();
    vips.iter()
        .filter(|v| seen.insert(v.config.address))
        .map(|v| {
            let (addr, family) = addr_bytes(v.config.address);
            let proto = if family == FAMILY_V4 {
                PROTO_ICMP
            } else {
                PROTO_ICMPV6
            };
            let key = VipKey {
                addr,
                port_be: 0,
                proto,
                family,
            };
            let meta = VipMeta {
                table_size: 0,
                flags: VIP_F_ADDRESS
                    | if icmp_echo == IcmpEcho::Reply {
                        VIP_F_ECHO_REPLY
                    } else {
                        0
                    }
                    | if v.config.unhandled == Unhandled::Pass {
                        VIP_F_UNHANDLED_PASS
                    } else {
                        0
                    },
                ..v.meta
            };
            (key, meta)
        })
        .collect()
}

impl Desired {
    /// Backend ids in use that `previous` did not have: their entries and
    /// counters must be written before any table names them.
    pub fn new_backend_ids(&self, previous: &Allocation) -> BTreeSet<u32> {
        // A retained id was in `previous` already, configured or retained.
        self.allocation.ids_not_in(previous)
    }

    /// Backend ids `previous` had (configured or retained) that are not in
    /// use any more (their backend changed and got a new id, its VIP went,
    /// or its retention ended): once no live table names them, their
    /// entries must stop being valid, so the flows the connection table
    /// remembers on them are hashed again. A removed backend's id is
    /// retained instead (`retain`).
    pub fn retired_backend_ids(&self, previous: &Allocation) -> BTreeSet<u32> {
        previous.ids_not_in(&self.allocation)
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

// Retention (`retain`): the allocation's retained backends.

impl Allocation {
    /// Every backend id in use: configured and retained.
    pub(crate) fn ids(&self) -> BTreeSet<u32> {
        self.backends
            .values()
            .flat_map(|m| m.values().map(|s| s.id))
            .chain(self.retained.values().map(|r| r.id))
            .collect()
    }

    /// The ids in use here and not in `other`: configured and retained.
    /// A VIP map both share holds the same ids in both, and an id is in
    /// one place only of an allocation, so only the others are compared.
    pub(crate) fn ids_not_in(&self, other: &Allocation) -> BTreeSet<u32> {
        let unshared = |a: &Allocation, b: &Allocation| -> BTreeSet<u32> {
            a.backends
                .iter()
                .filter(|(vip, m)| b.backends.get(*vip).is_none_or(|o| !Arc::ptr_eq(m, o)))
                .flat_map(|(_, m)| m.values().map(|s| s.id))
                .chain(a.retained.values().map(|r| r.id))
                .collect()
        };
        let theirs = unshared(other, self);
        unshared(self, other)
            .into_iter()
            .filter(|id| !theirs.contains(id))
            .collect()
    }

    /// The configured id of `ident`.
    pub(crate) fn configured_id(&self, ident: &BackendIdentity) -> Option<u32> {
        self.backends
            .get(&ident.vip)?
            .get(&ident.name)
            .filter(|s| s.mac == ident.mac && s.address == ident.address)
            .map(|s| s.id)
    }

    /// The id `ident` holds, configured or retained.
    pub(crate) fn id_of(&self, ident: &BackendIdentity) -> Option<u32> {
        self.configured_id(ident)
            .or_else(|| self.retained.get(ident).map(|r| r.id))
    }

    /// Give `ident` the configured id `id`.
    pub(crate) fn insert_backend(&mut self, ident: &BackendIdentity, id: u32) {
        Arc::make_mut(self.backends.entry(ident.vip.clone()).or_default()).insert(
            ident.name.clone(),
            BackendSlot {
                mac: ident.mac,
                address: ident.address,
                id,
            },
        );
    }

    /// The retained backends, by VIP and name.
    pub fn retained(&self) -> Vec<RetainedBackend> {
        self.retained
            .iter()
            .map(|(i, r)| RetainedBackend {
                vip: i.vip.clone(),
                name: i.name.clone(),
                address: i.address,
                mac: i.mac,
                id: r.id,
                since_unix_seconds: r.since_unix_seconds,
            })
            .collect()
    }

    /// After a connection-table count (`by_backend`: entries per backend
    /// id; the count began at `scan_started` and ended at `now`, Unix
    /// seconds): the retained ids whose retention ends, taken out of this
    /// allocation (the caller retires their entries). A backend counted
    /// for the first time is stamped `now` and kept.
    pub fn expire_retained(
        &mut self,
        by_backend: &BTreeMap<u32, u64>,
        scan_started: f64,
        now: f64,
    ) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        self.retained.retain(|_, r| {
            let Some(since) = r.since_unix_seconds else {
                r.since_unix_seconds = Some(now.max(0.0) as u64);
                return true;
            };
            let named = by_backend.get(&r.id).copied().unwrap_or(0);
            let expired = now - since as f64 >= RETENTION_SECONDS as f64
                || (named == 0 && scan_started >= since as f64);
            if expired {
                out.insert(r.id);
            }
            !expired
        });
        out
    }
}

impl Desired {
    /// The retained backends of the VIP named `vip`.
    pub fn retained_of(&self, vip: &str) -> Vec<RetainedBackend> {
        self.allocation
            .retained()
            .into_iter()
            .filter(|r| r.vip == vip)
            .collect()
    }
}

/// The retained backends of `now` (configured ids already chosen), from
/// `previous`: its backends removed now and its retained ones, each kept
/// when its VIP keeps its id and no backend of the VIP has its name.
fn carried(previous: &Allocation, now: &Allocation) -> BTreeMap<BackendIdentity, Retained> {
    let kept_vips: BTreeSet<&str> = previous
        .vips
        .iter()
        .filter(|(i, id)| now.vips.get(*i) == Some(*id))
        .map(|(i, _)| i.name.as_str())
        .collect();
    let keep = |vip: &str, name: &str| {
        kept_vips.contains(vip) && !now.backends.get(vip).is_some_and(|m| m.contains_key(name))
    };
    // A VIP map `now` shares has every backend still configured.
    let removed = previous
        .backends
        .iter()
        .filter(|(vip, m)| now.backends.get(*vip).is_none_or(|o| !Arc::ptr_eq(m, o)))
        .flat_map(|(vip, m)| m.iter().map(move |(name, slot)| (vip, name, slot)))
        .filter(|(vip, name, _)| keep(vip, name))
        .map(|(vip, name, slot)| {
            (
                BackendIdentity {
                    vip: vip.clone(),
                    name: name.clone(),
                    mac: slot.mac,
                    address: slot.address,
                },
                Retained {
                    id: slot.id,
                    since_unix_seconds: None,
                },
            )
        });
    let still = previous
        .retained
        .iter()
        .filter(|(i, _)| keep(&i.vip, &i.name))
        .map(|(i, r)| (i.clone(), *r));
    removed.chain(still).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    /// Two VIPs; `web`'s b2 at `b2_weight` and MAC `b2_mac`, `api`'s table
    /// of `api_size` slots.
    fn two_vips(seed: u32, b2_weight: u32, b2_mac: &str, api_size: u32) -> Config {
        let text = format!(
            "interface = \"eth0\"\nhash_seed = {seed}\n\
             [[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n\
             [[vip.backend]]\nname = \"b1\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\n\
             [[vip.backend]]\nname = \"b2\"\naddress = \"198.18.0.12\"\nmac = \"{b2_mac}\"\nweight = {b2_weight}\n\
             [[vip]]\nname = \"api\"\naddress = \"198.18.100.2\"\nport = 80\nprotocol = \"tcp\"\ntable_size = {api_size}\n\
             [[vip.backend]]\nname = \"b1\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\n\
             [[vip.backend]]\nname = \"b3\"\naddress = \"198.18.0.13\"\nmac = \"02:00:00:00:00:13\"\n"
        );
        parse(&text, "test.toml").unwrap()
    }

    /// Reusing the tables of an earlier state gives exactly the state a
    /// full build gives, whatever changed: weights, a MAC (a new id, the
    /// same table), a table size, the seed; also when the earlier state's
    /// kernel slots were health-patched (only `table` is reused).
    #[test]
    fn reusing_tables_gives_the_state_a_full_build_gives() {
        let first = two_vips(3, 1, "02:00:00:00:00:12", 1031);
        let mut before = desired(&first, &Allocation::default()).unwrap();
        // As a health patch would: the kernel slots all on one backend.
        let b1 = before.vips[0].backend_ids[0];
        let patched = Arc::make_mut(&mut before.vips[0]);
        let all_b1 = vec![b1; patched.slot_count()];
        patched.set_slots(all_b1);
        patched.health_patched = true;
        for next in [
            two_vips(3, 1, "02:00:00:00:00:12", 1031),
            two_vips(3, 2, "02:00:00:00:00:12", 1031),
            two_vips(3, 1, "02:00:00:00:00:99", 1031),
            two_vips(3, 1, "02:00:00:00:00:12", 1033),
            two_vips(4, 1, "02:00:00:00:00:12", 1031),
        ] {
            let full = desired(&next, &before.allocation).unwrap();
            let builds = std::cell::Cell::new(0);
            let reused = desired_reusing(
                Cow::Borrowed(&next),
                &before.allocation,
                Some(&before),
                None,
                &|| builds.set(builds.get() + 1),
            )
            .unwrap();
            assert_eq!(reused, full);
            // Only the tables whose inputs changed were built.
            let changed = next
                .vips
                .iter()
                .zip(&first.vips)
                .filter(|(n, f)| !same_table_inputs(f, first.hash_seed, n, next.hash_seed))
                .count();
            assert_eq!(builds.get(), changed);
        }
    }

    /// VIPs of one pool (the same names and weights, in any order, the same
    /// size) get the table each would build alone; so does every other VIP,
    /// and a VIP left out gets none. A table that cannot be built gives
    /// each VIP of its inputs the error.
    #[test]
    fn each_vip_gets_its_own_table_when_pools_are_shared() {
        let text = |order: &[usize], weight: u32, size: u32, name: &str| {
            let mut t = format!(
                "[[vip]]\nname = \"{name}\"\naddress = \"198.18.100.{}\"\nport = 80\nprotocol = \"tcp\"\ntable_size = {size}\n",
                name.len()
            );
            for &b in order {
                let w = if b == 1 { weight } else { 1 };
                t.push_str(&format!(
                    "[[vip.backend]]\nname = \"b{b}\"\naddress = \"198.18.0.{b}\"\nmac = \"02:00:00:00:00:0{b}\"\nweight = {w}\n"
                ));
            }
            t
        };
        let config = parse(
            &[
                "interface = \"eth0\"\nhash_seed = 5\n".to_string(),
                text(&[1, 2, 3], 1, 1021, "a"),
                text(&[3, 1, 2], 1, 1021, "bb"),
                text(&[1, 2, 3], 2, 1021, "ccc"),
                text(&[1, 2, 3], 1, 1031, "dddd"),
                text(&[2, 3, 1], 1, 1021, "eeeee"),
                text(&[1, 2], 1, 1021, "ffffff"),
            ]
            .concat(),
            "test.toml",
        )
        .unwrap();
        let mut vips: Vec<Option<&Vip>> = config.vips.iter().map(|v| Some(&**v)).collect();
        vips[5] = None;
        let tables = vip_tables(&vips, config.hash_seed);
        assert_eq!(tables.len(), 6);
        for (v, table) in config.vips.iter().zip(&tables).take(5) {
            assert_eq!(table.as_ref(), Some(&vip_table(v, 5)), "{}", v.name);
        }
        assert!(tables[5].is_none());
        // Not all one table: the weight and the size are inputs.
        let t = |i: usize| tables[i].clone().unwrap().unwrap();
        assert_eq!(t(0), t(1));
        assert_eq!(t(0), t(4));
        assert_ne!(t(0), t(2));
        assert_ne!(t(0).slots.len(), t(3).slots.len());
        // An error, for the first VIP of its inputs and for the copy.
        let mut bad = (*config.vips[0]).clone();
        bad.table_size = 1020;
        let mut copy = (*config.vips[1]).clone();
        copy.table_size = 1020;
        let errors = vip_tables(&[Some(&bad), Some(&copy)], 5);
        for e in &errors {
            assert_eq!(
                e,
                &Some(Err(maglev::MaglevError::TableSizeNotPrime {
                    table_size: 1020
                }))
            );
        }
    }

    /// A VIP an apply leaves as it was is the earlier state's own (the same
    /// `Arc`: nothing of it is copied); a changed one, or one whose kernel
    /// slots a health check patched, is made again.
    #[test]
    fn an_unchanged_vip_is_shared_not_copied() {
        let first = two_vips(3, 1, "02:00:00:00:00:12", 1031);
        let before = desired(&first, &Allocation::default()).unwrap();
        let next = two_vips(3, 2, "02:00:00:00:00:12", 1031);
        let after = desired_reusing(
            Cow::Borrowed(&next),
            &before.allocation,
            Some(&before),
            None,
            &|| {},
        )
        .unwrap();
        assert!(!Arc::ptr_eq(&before.vips[0], &after.vips[0]), "web changed");
        assert!(Arc::ptr_eq(&before.vips[1], &after.vips[1]), "api did not");
        // The config's VIPs are the state's, held once: `next` was parsed
        // apart from `first`, so api's config became `before`'s own.
        let held_once = |d: &Desired| {
            d.config
                .vips
                .iter()
                .zip(&d.vips)
                .all(|(c, v)| Arc::ptr_eq(c, &v.config))
        };
        assert!(held_once(&before) && held_once(&after));
        assert!(Arc::ptr_eq(&after.config.vips[1], &before.config.vips[1]));
        // api's backend ids too; web's weights changed, not its backends.
        let shared = |vip: &str| {
            Arc::ptr_eq(
                &before.allocation.backends[vip],
                &after.allocation.backends[vip],
            )
        };
        assert!(shared("api") && shared("web"));
        // A new MAC for web's b2: a new id, web's map made again.
        let moved = two_vips(3, 1, "02:00:00:00:00:99", 1031);
        let m = desired_reusing(
            Cow::Borrowed(&moved),
            &before.allocation,
            Some(&before),
            None,
            &|| {},
        )
        .unwrap();
        assert!(!Arc::ptr_eq(
            &before.allocation.backends["web"],
            &m.allocation.backends["web"]
        ));
        // The differences of shared maps are the differences of the sets.
        let naive = |a: &Allocation, b: &Allocation| -> BTreeSet<u32> {
            a.ids().difference(&b.ids()).copied().collect()
        };
        assert_eq!(
            m.new_backend_ids(&before.allocation),
            naive(&m.allocation, &before.allocation)
        );
        assert_eq!(m.new_backend_ids(&before.allocation).len(), 1);
        assert_eq!(
            m.retired_backend_ids(&before.allocation),
            naive(&before.allocation, &m.allocation)
        );
        assert_eq!(m.retired_backend_ids(&before.allocation).len(), 1);
        assert!(after.new_backend_ids(&before.allocation).is_empty());
        // The same config again, with api's slots patched by health.
        let mut patched = after.clone();
        Arc::make_mut(&mut patched.vips[1]).health_patched = true;
        let again = desired_reusing(
            Cow::Borrowed(&next),
            &patched.allocation,
            Some(&patched),
            None,
            &|| {},
        )
        .unwrap();
        assert!(Arc::ptr_eq(&patched.vips[0], &again.vips[0]));
        assert!(!Arc::ptr_eq(&patched.vips[1], &again.vips[1]));
        assert_eq!(*again.vips[1], *after.vips[1]);
        // Another seed: every table changes.
        let seeded = two_vips(4, 2, "02:00:00:00:00:12", 1031);
        let other = desired_reusing(
            Cow::Borrowed(&seeded),
            &after.allocation,
            Some(&after),
            None,
            &|| {},
        )
        .unwrap();
        assert!(
            other
                .vips
                .iter()
                .zip(&after.vips)
                .all(|(a, b)| !Arc::ptr_eq(a, b))
        );
    }

    /// Tables a plan built for the candidate are taken, not built again,
    /// where their inputs are the candidate's; the state is the same.
    #[test]
    fn prebuilt_tables_are_taken_where_they_fit() {
        let first = two_vips(3, 1, "02:00:00:00:00:12", 1031);
        let before = desired(&first, &Allocation::default()).unwrap();
        let next = two_vips(3, 2, "02:00:00:00:00:12", 1033);
        let full = desired(&next, &before.allocation).unwrap();
        // The candidate's tables as a plan under `seed` builds them.
        let built_under = |seed: u32| Prebuilt {
            seed,
            tables: next
                .vips
                .iter()
                .map(|v| (v.name.clone(), (v.clone(), vip_table(v, seed).unwrap())))
                .collect(),
        };
        let builds = std::cell::Cell::new(0);
        let count = || builds.set(builds.get() + 1);
        let apply = |prebuilt| {
            desired_reusing(
                Cow::Borrowed(&next),
                &before.allocation,
                Some(&before),
                Some(prebuilt),
                &count,
            )
            .unwrap()
        };
        assert_eq!(apply(built_under(3)), full);
        assert_eq!(builds.get(), 0, "both tables were handed over");
        // Built under another seed: not taken.
        assert_eq!(apply(built_under(4)), full);
        assert_eq!(builds.get(), 2, "web's weights and api's size changed");
    }

    /// A start's tables built ahead (`prebuild`) are every VIP's, and a
    /// first state made with them builds nothing and is the state made
    /// without them.
    #[test]
    fn tables_built_ahead_make_the_first_state() {
        let config = two_vips(3, 2, "02:00:00:00:00:12", 1033);
        let ahead = prebuild(&config);
        assert_eq!(ahead.seed, config.hash_seed);
        assert_eq!(ahead.tables.len(), config.vips.len());
        for v in &config.vips {
            assert_eq!(
                ahead.tables[&v.name].1,
                vip_table(v, config.hash_seed).unwrap()
            );
        }
        let builds = std::cell::Cell::new(0);
        let first = desired_reusing(
            Cow::Borrowed(&config),
            &Allocation::default(),
            None,
            Some(ahead),
            &|| builds.set(builds.get() + 1),
        )
        .unwrap();
        assert_eq!(builds.get(), 0, "every table was built ahead");
        assert_eq!(first, desired(&config, &Allocation::default()).unwrap());
    }

    /// A VIP without backends (a warning, not an error) has an empty table
    /// and no backend ids, built fresh or over an earlier state.
    #[test]
    fn a_vip_without_backends_has_a_state() {
        let none = config(&[]);
        let first = desired(&none, &Allocation::default()).unwrap();
        assert_eq!(first.vips[0].slots(), vec![NO_BACKEND]);
        assert!(first.vips[0].backend_ids.is_empty());
        let again = desired_reusing(
            Cow::Borrowed(&none),
            &first.allocation,
            Some(&first),
            None,
            &|| {},
        )
        .unwrap();
        assert_eq!(again, first);
        let one = config(&[("a", "02:00:00:00:00:01", 1)]);
        let filled = desired_reusing(
            Cow::Borrowed(&one),
            &first.allocation,
            Some(&first),
            None,
            &|| {},
        )
        .unwrap();
        let emptied = desired_reusing(
            Cow::Borrowed(&none),
            &filled.allocation,
            Some(&filled),
            None,
            &|| {},
        )
        .unwrap();
        assert_eq!(emptied.vips[0].slots(), vec![NO_BACKEND]);
        assert_eq!(emptied.retained_of("web").len(), 1, "a is retained");
    }

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

    /// At the declared limits every backend id is held by the live config:
    /// `allocate` refuses a config with one backend renamed (one new id
    /// beside them), as `desired_reusing` does, and takes the same config.
    #[test]
    fn allocate_refuses_what_the_id_space_cannot_hold() {
        let limits = |renamed: usize| {
            let mut c = config(&[("b", "02:00:00:00:00:01", 1)]);
            let template = (*c.vips[0]).clone();
            let per_vip = (MAX_BACKENDS / MAX_VIPS) as usize;
            c.vips = (0..MAX_VIPS as usize)
                .map(|v| {
                    let mut vip = template.clone();
                    vip.name = format!("vip{v}");
                    vip.backends = (0..per_vip)
                        .map(|b| {
                            let mut backend = template.backends[0].clone();
                            let fresh = if v * per_vip + b < renamed { "r" } else { "b" };
                            backend.name = format!("{fresh}{b}");
                            backend
                        })
                        .collect();
                    Arc::new(vip)
                })
                .collect();
            c
        };
        let live = allocate(&limits(0), &Allocation::default(), None).unwrap();
        assert_eq!(allocate(&limits(0), &live, None).unwrap().ids(), live.ids());
        let refused = StateError::OutOfIds {
            kind: "backend",
            max: MAX_BACKENDS,
        };
        assert_eq!(allocate(&limits(1), &live, None).unwrap_err(), refused);
        let reused = desired_reusing(Cow::Owned(limits(1)), &live, None, None, &|| {});
        assert_eq!(reused.unwrap_err(), refused);
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
        // "a" is retained (state::retain), not retired.
        assert!(second.retired_backend_ids(&first.allocation).is_empty());
        assert_eq!(second.retained_of("web")[0].id, 0);
        // Nor does a later apply reuse id 0 once its retention ended: the
        // connection table may still remember flows on it. The search goes
        // on past the last id given.
        let mut after_retention = second.allocation.clone();
        after_retention.retained.clear();
        let third = desired(
            &config(&[
                ("bb", "02:00:00:00:00:02", 1),
                ("dddd", "02:00:00:00:00:04", 1),
            ]),
            &after_retention,
        )
        .unwrap();
        assert_eq!(third.vips[0].backend_ids, vec![1, 3]);
        assert_eq!(
            third
                .retained_of("web")
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn a_freed_backend_id_is_not_reused_before_the_id_space_cycles() {
        // "a" stays; a second backend is replaced on every apply. Each new
        // one gets an id nobody held before.
        let mut previous = Allocation::default();
        let mut seen = BTreeSet::new();
        for round in 0..50u32 {
            let other = format!("b{round}");
            let d = desired(
                &config(&[
                    ("a", "02:00:00:00:00:01", 1),
                    (&other, "02:00:00:00:00:02", 1),
                ]),
                &previous,
            )
            .unwrap();
            let ids = &d.vips[0].backend_ids;
            assert_eq!(ids[0], 0, "round {round}: a keeps its id");
            assert!(seen.insert(ids[1]), "round {round}: id {} reused", ids[1]);
            previous = d.allocation;
            // Each replaced backend is retained; say its retention ended.
            previous.retained.clear();
        }
        assert_eq!(seen, (1..=50).collect());
        // Deep into the space, the search wraps over MAX_BACKENDS and takes
        // the lowest id free again.
        previous.next_backend_id = MAX_BACKENDS - 1;
        let d = desired(
            &config(&[
                ("a", "02:00:00:00:00:01", 1),
                ("xx", "02:00:00:00:00:03", 1),
                ("yyy", "02:00:00:00:00:04", 1),
            ]),
            &previous,
        )
        .unwrap();
        assert_eq!(d.vips[0].backend_ids, vec![0, MAX_BACKENDS - 1, 1]);
        assert_eq!(d.allocation.next_backend_id, 2);
    }

    #[test]
    fn only_ids_that_left_the_config_are_retired() {
        let first = desired(
            &config(&[
                ("a", "02:00:00:00:00:01", 1),
                ("bb", "02:00:00:00:00:02", 1),
                ("ccc", "02:00:00:00:00:03", 1),
            ]),
            &Allocation::default(),
        )
        .unwrap();
        // bb drains (still configured: keeps its id and its flows), ccc
        // gets a new MAC (a new id; the old one is retired), a is removed
        // (retained: state::retain).
        let mut c = config(&[
            ("bb", "02:00:00:00:00:02", 1),
            ("ccc", "02:00:00:00:00:09", 1),
        ]);
        c.vip_mut(0).backends[0].state = crate::config::BackendState::Draining;
        let second = desired(&c, &first.allocation).unwrap();
        assert_eq!(second.vips[0].backend_ids, vec![1, 3]);
        assert_eq!(
            second
                .retired_backend_ids(&first.allocation)
                .into_iter()
                .collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(second.retained_of("web")[0].id, 0);
        // Nothing changes: nothing retired.
        let again = desired(&c, &second.allocation).unwrap();
        assert!(again.retired_backend_ids(&second.allocation).is_empty());
        assert_eq!(again.allocation, second.allocation);
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
        assert_eq!(v.slot_count(), 1021);
        assert_eq!(v.meta.table_size, 1021);
        for (slot, &id) in v.slots().iter().enumerate() {
            let name = &v.table.names[usize::from(v.table.slots.get(slot).unwrap())];
            let i = v
                .config
                .backends
                .iter()
                .position(|b| &b.name == name)
                .unwrap();
            assert_eq!(v.backend_ids[i], id);
        }
        let weight_weighted = v
            .slots()
            .iter()
            .filter(|&&id| id == v.backend_ids[1])
            .count() as f64
            / 1021.0;
        assert!((weight_weighted - 0.75).abs() < 0.01);
    }

    /// The kernel table read from a one-byte (256 backends) and a
    /// two-byte (257) Maglev table, every way a caller reads it: `next`,
    /// `fold`, `nth`, `slots`, against the table's `u16` indices mapped by
    /// hand.
    #[test]
    fn kernel_slots_of_either_width() {
        for n in [256, 257] {
            let mut text = String::from(
                "interface = \"eth0\"\nhash_seed = 3\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 25703\n",
            );
            for b in 0..n {
                text.push_str(&format!(
                    "[[vip.backend]]\nname = \"b{b}\"\naddress = \"198.18.{}.{}\"\nmac = \"02:00:00:00:{:02x}:{:02x}\"\n",
                    1 + b / 250,
                    1 + b % 250,
                    b / 256,
                    b % 256
                ));
            }
            let d = desired(&parse(&text, "test.toml").unwrap(), &Allocation::default()).unwrap();
            let v = &d.vips[0];
            let narrow = matches!(v.slot_iter(), KernelSlots::Narrow(..));
            assert_eq!(narrow, n == 256, "N = {n}");
            let expected: Vec<u32> = v
                .table
                .slots
                .to_vec()
                .into_iter()
                .map(|i| {
                    let name = &v.table.names[usize::from(i)];
                    let c = v.config.backends.iter().position(|b| &b.name == name);
                    v.backend_ids[c.unwrap()]
                })
                .collect();
            assert_eq!(expected.len(), 25703);
            let mut by_next = Vec::new();
            let it = v.slot_iter();
            assert_eq!(it.len(), 25703);
            // A `for` loop calls `next`.
            for id in it {
                by_next.push(id);
            }
            assert_eq!(by_next, expected, "N = {n}");
            assert_eq!(*v.slots(), expected[..], "N = {n}");
            let mut by_fold = Vec::new();
            v.slot_iter().for_each(|id| by_fold.push(id));
            assert_eq!(by_fold, expected, "N = {n}");
            for k in [0, 1, 255, 256, 25702] {
                assert_eq!(v.slot_iter().nth(k), Some(expected[k]), "N = {n}");
            }
            let mut it = v.slot_iter();
            assert_eq!(
                (it.nth(10), it.next(), it.len()),
                (Some(expected[10]), Some(expected[11]), 25703 - 12)
            );
            assert_eq!(v.slot_iter().nth(25703), None);
            assert!(v.same_slots(v));
        }
    }

    #[test]
    fn a_vip_without_active_backends_gets_a_table_that_drops() {
        let mut c = config(&[("a", "02:00:00:00:00:01", 1)]);
        c.vip_mut(0).backends[0].state = crate::config::BackendState::Disabled;
        let d = desired(&c, &Allocation::default()).unwrap();
        assert_eq!(d.vips[0].slots(), vec![NO_BACKEND]);
        assert_eq!(d.vips[0].meta.table_size, 1);
        // The disabled backend still has an id (for its counters).
        assert_eq!(d.vips[0].backend_ids.len(), 1);
    }

    /// Three VIPs on two addresses (one IPv4, one IPv6), with their own
    /// forwarding and hash; `top` goes above the first VIP.
    fn methods_config(top: &str) -> Config {
        let text = format!(
            "interface = \"eth0\"\n{top}\n\
             [tunnel]\nsource_v4 = \"198.18.200.0/24\"\nsource_v6 = \"2001:db8:ff::/96\"\n\
             [[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n\
             forwarding = \"ipip\"\nhash = \"source\"\ntable_size = 1021\n\
             [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.10\"\n\
             [[vip]]\nname = \"dns\"\naddress = \"198.18.100.1\"\nport = 53\nprotocol = \"udp\"\n\
             forwarding = \"gue\"\nhash = \"no_ports\"\ntable_size = 1021\n\
             [[vip.backend]]\nname = \"a\"\naddress = \"2001:db8::10\"\n\
             [[vip]]\nname = \"web6\"\naddress = \"2001:db8:100::1\"\nport = 80\n\
             protocol = \"tcp\"\ntable_size = 1021\n\
             [[vip.backend]]\nname = \"a\"\naddress = \"2001:db8::10\"\nmac = \"02:00:00:00:00:01\"\n"
        );
        parse(&text, "test.toml").unwrap()
    }

    #[test]
    fn method_and_hash_are_encoded_in_the_vip_entry() {
        let d = desired(&methods_config(""), &Allocation::default()).unwrap();
        let encoded: Vec<(u8, u8, u8)> = d
            .vips
            .iter()
            .map(|v| (v.meta.method, v.meta.hash, v.meta.flags))
            .collect();
        assert_eq!(
            encoded,
            [
                (lb_common::METHOD_IPIP, lb_common::HASH_SOURCE, 0),
                (lb_common::METHOD_GUE, lb_common::HASH_NO_PORTS, 0),
                (lb_common::METHOD_L2_DSR, lb_common::HASH_FIVE_TUPLE, 0),
            ]
        );
        // A tunnelled backend without a MAC: the zero MAC, its address the
        // tunnel's destination.
        let b = kernel_backend(&d.vips[1].config.backends[0], d.vips[1].id);
        assert_eq!(b.mac, [0; 6]);
        assert_eq!(b.family, FAMILY_V6);
        assert_eq!(
            b.addr,
            "2001:db8::10"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }

    #[test]
    fn one_echo_entry_per_distinct_vip_address() {
        let d = desired(&methods_config(""), &Allocation::default()).unwrap();
        // web and dns share 198.18.100.1: one entry, from web (the first).
        assert_eq!(d.echo.len(), 2);
        let (k4, m4) = d.echo[0];
        assert_eq!(&k4.addr[..4], &[198, 18, 100, 1]);
        assert_eq!(&k4.addr[4..], &[0; 12]);
        assert_eq!(
            (k4.port_be, k4.proto, k4.family),
            (0, PROTO_ICMP, FAMILY_V4)
        );
        assert_eq!(
            m4,
            VipMeta {
                vip_id: d.vips[0].id,
                table_size: 0,
                method: lb_common::METHOD_IPIP,
                hash: lb_common::HASH_SOURCE,
                flags: VIP_F_ADDRESS | VIP_F_ECHO_REPLY,
                _pad: [0; 5],
            }
        );
        let (k6, m6) = d.echo[1];
        assert_eq!(
            k6.addr,
            "2001:db8:100::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(
            (k6.port_be, k6.proto, k6.family),
            (0, PROTO_ICMPV6, FAMILY_V6)
        );
        assert_eq!(
            (m6.vip_id, m6.table_size, m6.flags, m6.method),
            (
                d.vips[2].id,
                0,
                VIP_F_ADDRESS | VIP_F_ECHO_REPLY,
                lb_common::METHOD_L2_DSR
            )
        );
        // No echo key is a VIP key.
        assert!(
            d.echo
                .iter()
                .all(|(k, _)| d.vips.iter().all(|v| v.key != *k))
        );

        let d = desired(
            &methods_config("icmp_echo = \"pass\""),
            &Allocation::default(),
        )
        .unwrap();
        // Still one address entry per address, without the echo flag.
        assert_eq!(d.echo.len(), 2);
        assert!(d.echo.iter().all(|(_, m)| m.flags == VIP_F_ADDRESS));
        let d = desired(
            &methods_config("unhandled = \"pass\""),
            &Allocation::default(),
        )
        .unwrap();
        assert!(
            d.echo
                .iter()
                .all(|(_, m)| m.flags == VIP_F_ADDRESS | VIP_F_ECHO_REPLY | VIP_F_UNHANDLED_PASS)
        );
        let d = desired(
            &methods_config("icmp_echo = \"reply\""),
            &Allocation::default(),
        )
        .unwrap();
        assert_eq!(d.echo.len(), 2);
    }

    #[test]
    fn the_port_wildcard_flag_says_whether_a_vip_takes_every_port() {
        let host = HostInterface::from([2, 0, 0, 0, 0, 0xaa]);
        let exact = methods_config("");
        assert_eq!(
            global_config(&host, &exact).flags & GLOBAL_F_PORT_WILDCARD,
            0
        );
        let mut any_port = exact.clone();
        any_port.vip_mut(1).port = 0;
        assert_ne!(
            global_config(&host, &any_port).flags & GLOBAL_F_PORT_WILDCARD,
            0
        );
    }

    #[test]
    fn global_config_carries_the_tunnel_settings() {
        let host = HostInterface {
            mac: [2, 0, 0, 0, 0, 0xaa],
            ifindex: 7,
            mtu: 9000,
        };
        let g = global_config(&host, &methods_config("hash_seed = 9"));
        assert_eq!(g.iface_mac, host.mac);
        assert_eq!((g.ifindex, g.mtu, g.hash_seed), (7, 9000, 9));
        assert_eq!(g.layout_version, LAYOUT_VERSION);
        assert_eq!(g.gue_port_be.to_ne_bytes(), 6080u16.to_be_bytes());
        assert_eq!(g.tunnel_src_v4, [198, 18, 200, 0]);
        assert_eq!(g.tunnel_src_v4_hostmask, [0, 0, 0, 255]);
        assert_eq!(
            g.tunnel_src_v6,
            "2001:db8:ff::"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(g.tunnel_src_v6_hostmask, [255; 4]);
        assert_eq!(g.gateway_mac, [0; 6]);

        // Other prefix lengths, a gateway, another GUE port.
        let text = "interface = \"eth0\"\n[tunnel]\nsource_v4 = \"198.18.0.0/15\"\n\
                    source_v6 = \"2001:db8:ff::1/128\"\ngue_port = 9999\n\
                    gateway_mac = \"02:00:00:00:00:01\"\n";
        let g = global_config(&host, &parse(text, "t.toml").unwrap());
        assert_eq!(g.tunnel_src_v4, [198, 18, 0, 0]);
        assert_eq!(g.tunnel_src_v4_hostmask, [0, 1, 255, 255]);
        assert_eq!(g.tunnel_src_v6[15], 1);
        assert_eq!(g.tunnel_src_v6_hostmask, [0; 4]);
        assert_eq!(g.gue_port_be.to_ne_bytes(), [0x27, 0x0f]);
        assert_eq!(g.gateway_mac, [2, 0, 0, 0, 0, 1]);
        let text = "interface = \"eth0\"\n[tunnel]\nsource_v4 = \"198.18.200.9/32\"\n\
                    source_v6 = \"2001:db8:ff::100/120\"\n";
        let g = global_config(&host, &parse(text, "t.toml").unwrap());
        assert_eq!(g.tunnel_src_v4_hostmask, [0; 4]);
        assert_eq!(g.tunnel_src_v6_hostmask, [0, 0, 0, 255]);

        // Nothing configured: zero.
        let g = global_config(&host, &parse("interface = \"eth0\"\n", "t.toml").unwrap());
        assert_eq!(
            (g.tunnel_src_v4, g.tunnel_src_v4_hostmask),
            ([0; 4], [0; 4])
        );
        assert_eq!(
            (g.tunnel_src_v6, g.tunnel_src_v6_hostmask),
            ([0; 16], [0; 4])
        );
        assert_eq!(g.gateway_mac, [0; 6]);
        assert_eq!(g.gue_port_be, lb_common::DEFAULT_GUE_PORT.to_be());
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
        assert_eq!((k.proto, k.family), (lb_common::PROTO_TCP, FAMILY_V4));
    }
}

#[cfg(test)]
mod retain_tests {
    use super::*;
    use crate::config::parse;

    /// VIP web (table `size`) over `backends` (name, MAC's last byte).
    fn config(backends: &[(&str, u8)], size: u32) -> Config {
        let mut text = format!(
            "interface = \"eth0\"\nhash_seed = 3\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = {size}\n"
        );
        for (name, mac) in backends {
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"{name}\"\naddress = \"198.18.0.{}\"\nmac = \"02:00:00:00:00:{mac:02x}\"\n",
                10 + name.len()
            ));
        }
        parse(&text, "test.toml").unwrap()
    }

    fn ids(set: BTreeSet<u32>) -> Vec<u32> {
        set.into_iter().collect()
    }

    #[test]
    fn a_removed_backend_keeps_its_id_in_no_table_and_is_not_reused() {
        let first = desired(
            &config(&[("a", 1), ("bb", 2)], 1021),
            &Allocation::default(),
        )
        .unwrap();
        let second = desired(&config(&[("a", 1)], 1021), &first.allocation).unwrap();
        // bb is retained: not retired, in no table, id 1 still in use.
        assert!(second.retired_backend_ids(&first.allocation).is_empty());
        let kept = second.retained_of("web");
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].name.as_str(), kept[0].id), ("bb", 1));
        assert_eq!(kept[0].since_unix_seconds, None);
        assert!(!second.vips[0].slots().contains(&1));
        // A new backend does not take id 1, even from the start of the space.
        let mut alloc = second.allocation.clone();
        alloc.next_backend_id = 0;
        let third = desired(&config(&[("a", 1), ("ccc", 3)], 1021), &alloc).unwrap();
        assert_eq!(third.vips[0].backend_ids, vec![0, 2]);
        assert_eq!(third.retained_of("web").len(), 1);
        // bb back with the same MAC and address: its own id again, nothing new.
        let back = desired(&config(&[("a", 1), ("bb", 2)], 1021), &second.allocation).unwrap();
        assert_eq!(back.vips[0].backend_ids, vec![0, 1]);
        assert!(back.new_backend_ids(&second.allocation).is_empty());
        assert!(back.retained_of("web").is_empty());
        assert!(back.retired_backend_ids(&second.allocation).is_empty());
    }

    #[test]
    fn retention_ends_with_a_new_mac_a_new_vip_id_or_the_vip_gone() {
        let first = desired(
            &config(&[("a", 1), ("bb", 2)], 1021),
            &Allocation::default(),
        )
        .unwrap();
        let removed = desired(&config(&[("a", 1)], 1021), &first.allocation).unwrap();
        // bb configured again under another MAC: the retained id goes.
        let changed = desired(&config(&[("a", 1), ("bb", 9)], 1021), &removed.allocation).unwrap();
        assert_eq!(
            ids(changed.retired_backend_ids(&removed.allocation)),
            vec![1]
        );
        assert!(changed.retained_of("web").is_empty());
        // The VIP's table size changes (a new VIP id): retired.
        let resized = desired(&config(&[("a", 1)], 2039), &removed.allocation).unwrap();
        assert!(ids(resized.retired_backend_ids(&removed.allocation)).contains(&1));
        assert!(resized.allocation.retained.is_empty());
    }

    #[test]
    fn counts_stamp_then_expire_on_no_entries_or_age() {
        let first = desired(
            &config(&[("a", 1), ("bb", 2)], 1021),
            &Allocation::default(),
        )
        .unwrap();
        let mut alloc = desired(&config(&[("a", 1)], 1021), &first.allocation)
            .unwrap()
            .allocation;
        let none = BTreeMap::new();
        // The first count stamps it, whatever it found.
        assert!(alloc.expire_retained(&none, 995.0, 1000.0).is_empty());
        assert_eq!(alloc.retained()[0].since_unix_seconds, Some(1000));
        // A count begun before the stamp says nothing of it.
        assert!(alloc.expire_retained(&none, 999.0, 1010.0).is_empty());
        // Entries name it: kept, until the retention is over.
        let named = BTreeMap::from([(1, 3)]);
        assert!(alloc.expire_retained(&named, 1001.0, 1010.0).is_empty());
        let mut old = alloc.clone();
        assert_eq!(
            ids(old.expire_retained(&named, 1200.0, 1000.0 + RETENTION_SECONDS as f64)),
            vec![1]
        );
        assert!(old.retained().is_empty());
        // No entry names it in a count begun after the stamp: retired.
        assert_eq!(ids(alloc.expire_retained(&none, 1001.0, 1011.0)), vec![1]);
        // Retired, the id is free for next-fit again, and an apply no
        // longer holds it.
        let again = desired(&config(&[("a", 1)], 1021), &alloc).unwrap();
        assert!(again.retained_of("web").is_empty());
        assert!(!again.allocation.ids().contains(&1));
    }
}
