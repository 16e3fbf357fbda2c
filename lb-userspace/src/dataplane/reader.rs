//! Reading counters: per-CPU values are summed here, never exported per CPU.

use aya::maps::{MapData, PerCpuArray};
use lb_common::{
    Counters, maps,
    stats::{ACTION_COUNT, DROP_REASON_COUNT},
};

use super::{Dataplane, DataplaneError, loader::map_err};

fn sum(
    map: &PerCpuArray<MapData, Counters>,
    name: &'static str,
    index: u32,
) -> Result<Counters, DataplaneError> {
    let values = map.get(&index, 0).map_err(map_err(name))?;
    Ok(values.iter().fold(Counters::default(), |acc, c| Counters {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    }))
}

/// Every counter the status needs, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct CounterSnapshot {
    /// By vip id.
    pub vips: std::collections::BTreeMap<u32, Counters>,
    /// By backend id.
    pub backends: std::collections::BTreeMap<u32, Counters>,
    /// By XDP action value.
    pub actions: Vec<Counters>,
    /// By drop reason.
    pub drops: Vec<Counters>,
}

impl Dataplane {
    pub fn vip_counters(&self, vip_id: u32) -> Result<Counters, DataplaneError> {
        sum(&self.vip_stats, maps::VIP_STATS, vip_id)
    }

    pub fn backend_counters(&self, backend_id: u32) -> Result<Counters, DataplaneError> {
        sum(&self.backend_stats, maps::BACKEND_STATS, backend_id)
    }

    /// Counters of the given VIP and backend ids, and all action and drop counters.
    pub fn snapshot(
        &self,
        vip_ids: impl IntoIterator<Item = u32>,
        backend_ids: impl IntoIterator<Item = u32>,
    ) -> Result<CounterSnapshot, DataplaneError> {
        let mut s = CounterSnapshot::default();
        for id in vip_ids {
            s.vips.insert(id, self.vip_counters(id)?);
        }
        for id in backend_ids {
            s.backends.insert(id, self.backend_counters(id)?);
        }
        for a in 0..ACTION_COUNT {
            s.actions
                .push(sum(&self.action_stats, maps::ACTION_STATS, a)?);
        }
        for d in 0..DROP_REASON_COUNT {
            s.drops.push(sum(&self.drop_stats, maps::DROP_STATS, d)?);
        }
        Ok(s)
    }
}
