//! Reading counters and live tables. Per-CPU values are summed here, never
//! exported per CPU (except the per-CPU totals of `actions_per_cpu`).

use aya::maps::{MapData, PerCpuArray};
use lb_common::{
    Counters, maps,
    stats::{ACTION_COUNT, DROP_REASON_COUNT, EVENT_COUNT},
};

use crate::handle::Counting;
use crate::{Dataplane, DataplaneError, error::map_err, mmap::MappedArray};

fn per_cpu(
    map: &PerCpuArray<MapData, Counters>,
    name: &'static str,
    index: u32,
) -> Result<Vec<Counters>, DataplaneError> {
    Ok(map.get(&index, 0).map_err(map_err(name))?.to_vec())
}

fn add(a: Counters, b: &Counters) -> Counters {
    Counters {
        packets: a.packets + b.packets,
        bytes: a.bytes + b.bytes,
        new_flows: a.new_flows + b.new_flows,
    }
}

fn total(values: &[Counters]) -> Counters {
    values.iter().fold(Counters::default(), add)
}

/// One event counter summed over CPUs. Wrapping, as the kernel's per-CPU
/// increments wrap: a Prometheus counter that wraps reads as a reset.
pub(crate) fn sum_cpus(values: &[u64]) -> u64 {
    values.iter().fold(0, |a, b| a.wrapping_add(*b))
}

pub use xlb_core::counters::CounterSnapshot;

impl Counting {
    pub fn vip_counters(&self, vip_id: u32) -> Counters {
        self.maps().vip_stats.sum(vip_id)
    }

    pub fn backend_counters(&self, backend_id: u32) -> Counters {
        self.maps().backend_stats.sum(backend_id)
    }

    /// Counters of the given VIP and backend ids, and all action, drop and
    /// event counters.
    pub fn snapshot(
        &self,
        vip_ids: impl IntoIterator<Item = u32>,
        backend_ids: impl IntoIterator<Item = u32>,
    ) -> Result<CounterSnapshot, DataplaneError> {
        let m = self.maps();
        // Collected, then built in bulk (sorted once): 64,000 backends
        // inserted one by one were a tenth of an apply of one VIP.
        let mut s = CounterSnapshot {
            vips: vip_ids
                .into_iter()
                .map(|id| (id, self.vip_counters(id)))
                .collect(),
            backends: backend_ids
                .into_iter()
                .map(|id| (id, self.backend_counters(id)))
                .collect(),
            ..CounterSnapshot::default()
        };
        for a in 0..ACTION_COUNT {
            let cpus = per_cpu(&m.action_stats, maps::ACTION_STATS, a)?;
            if s.per_cpu.len() < cpus.len() {
                s.per_cpu.resize(cpus.len(), Counters::default());
            }
            for (sum, c) in s.per_cpu.iter_mut().zip(&cpus) {
                *sum = add(*sum, c);
            }
            s.actions.push(total(&cpus));
        }
        for d in 0..DROP_REASON_COUNT {
            s.drops
                .push(total(&per_cpu(&m.drop_stats, maps::DROP_STATS, d)?));
        }
        for ev in 0..EVENT_COUNT {
            let cpus = m
                .event_stats
                .get(&ev, 0)
                .map_err(map_err(maps::EVENT_STATS))?;
            s.events.push(sum_cpus(&cpus));
        }
        Ok(s)
    }
}

impl Dataplane {
    pub fn vip_counters(&self, vip_id: u32) -> Counters {
        self.counting.vip_counters(vip_id)
    }

    pub fn backend_counters(&self, backend_id: u32) -> Counters {
        self.counting.backend_counters(backend_id)
    }

    /// The counter arrays, shared: read them without this handle.
    pub fn counting(&self) -> Counting {
        self.counting.clone()
    }

    /// Counters of the given VIP and backend ids, and all action, drop and
    /// event counters.
    pub fn snapshot(
        &self,
        vip_ids: impl IntoIterator<Item = u32>,
        backend_ids: impl IntoIterator<Item = u32>,
    ) -> Result<CounterSnapshot, DataplaneError> {
        self.counting.snapshot(vip_ids, backend_ids)
    }

    /// The Maglev table the kernel holds for `vip_id` now, slot by slot;
    /// None if it holds none.
    ///
    /// The outer map's entry is read as a map id with a plain lookup: when
    /// it is the table we swapped in, it is read through our mapping, with
    /// no further syscall and no privilege beyond CAP_BPF. Another map
    /// (swapped in by something else, or pinned by an earlier daemon) can
    /// only be opened by id, which needs CAP_SYS_ADMIN; without it, that
    /// table reads as empty: it differs from every applied table, so the
    /// drift check flags it, and adoption swaps in a fresh copy of the
    /// applied table (same slots: no flow moves).
    pub fn live_table(&self, vip_id: u32) -> Result<Option<Vec<u32>>, DataplaneError> {
        use std::os::fd::AsFd;
        let name = maps::MAGLEV_TABLES;
        let id = match crate::sys::lookup_elem(self.tables_fd.as_fd(), vip_id, 4) {
            Ok(v) => u32::from_ne_bytes(v[..4].try_into().expect("4 bytes")),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(crate::error::io_err(name)(e)),
        };
        // Still the table we swapped in: read it through our mapping.
        if let Some(ours) = self.installed.get(&vip_id)
            && ours.map_id == id
        {
            return Ok(Some(ours.mem.to_vec()));
        }
        let inner = match MapData::from_id(id) {
            Ok(inner) => inner,
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EPERM) =>
            {
                log::debug!(
                    "VIP id {vip_id}: its table is map {id}, not ours; reading it needs \
                     CAP_SYS_ADMIN: taken as different"
                );
                return Ok(Some(Vec::new()));
            }
            Err(e) => return Err(map_err(name)(e)),
        };
        let info = inner.info().map_err(map_err(name))?;
        let len = info.max_entries() as usize;
        let mem = MappedArray::<u32>::new(inner.fd(), len).map_err(crate::error::io_err(name))?;
        Ok(Some(mem.to_vec()))
    }

    /// The kernel's VIP entry for `key`, if any.
    pub fn live_vip(
        &self,
        key: &lb_common::VipKey,
    ) -> Result<Option<lb_common::VipMeta>, DataplaneError> {
        match self.vips.get(key, 0) {
            Ok(meta) => Ok(Some(meta)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(maps::VIPS)(e)),
        }
    }

    /// The kernel's backend entry for `backend_id` (from memory).
    pub fn live_backend(&self, backend_id: u32) -> lb_common::Backend {
        self.backends.get(backend_id as usize)
    }
}

/// A second fd of the loaded XLB_MAGLEV_TABLES (aya keeps the typed map's
/// own private): BPF_MAP_LOOKUP_ELEM on an array of maps gives the inner
/// map's id, which is all the drift check needs to know that a table is
/// still ours. aya's `ArrayOfMaps::get` turns the id into an fd with
/// BPF_MAP_GET_FD_BY_ID, which needs CAP_SYS_ADMIN.
pub(super) fn tables_fd(ebpf: &aya::Ebpf) -> Result<std::os::fd::OwnedFd, DataplaneError> {
    use std::os::fd::AsFd;
    let name = maps::MAGLEV_TABLES;
    match ebpf.map(name) {
        Some(aya::maps::Map::ArrayOfMaps(data)) => data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(crate::error::io_err(name)),
        _ => Err(DataplaneError::Missing { kind: "map", name }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_summed_over_cpus() {
        assert_eq!(sum_cpus(&[]), 0);
        assert_eq!(sum_cpus(&[3, 0, 4, 10]), 17);
        // A CPU's counter that wrapped does not panic the collector.
        assert_eq!(sum_cpus(&[u64::MAX, 2]), 1);
    }
}
