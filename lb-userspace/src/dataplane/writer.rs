//! Writing a `Desired` state into the maps, in the order that keeps every
//! packet consistent:
//!
//! 1. host config (interface MAC, hash seed);
//! 2. entries and zeroed counters of new backend ids (no table names them yet);
//! 3. each changed table, filled in a fresh inner map, then swapped in with one
//!    update of the outer map;
//! 4. VIP entries (a new VIP becomes visible only once its table is there);
//! 5. VIP entries that are gone are removed.
//!
//! Old backend entries are left as they are: a packet that read the old table
//! just before the swap may still be reading them.

use aya::maps::MapData;
use lb_common::{GlobalConfig, LAYOUT_VERSION, maps};

use super::{
    Dataplane, DataplaneError,
    loader::{io_err, map_err},
    mmap::MappedArray,
};
use super::HostInterface;
use crate::config::Config;
use crate::state::{Allocation, Desired, DesiredVip, kernel_backend};

impl Dataplane {
    pub fn write_global(
        &mut self,
        host: &HostInterface,
        config: &Config,
    ) -> Result<(), DataplaneError> {
        let cfg = GlobalConfig {
            iface_mac: host.mac,
            gateway_mac: [0; 6],
            hash_seed: config.hash_seed,
            layout_version: LAYOUT_VERSION,
            ifindex: host.ifindex,
            mtu: host.mtu,
            gue_port_be: lb_common::DEFAULT_GUE_PORT.to_be(),
            flags: 0,
            tunnel_src_v4: [0; 4],
            tunnel_src_v4_hostmask: [0; 4],
            tunnel_src_v6: [0; 16],
            tunnel_src_v6_hostmask: [0; 4],
            _pad: 0,
        };
        self.config.set(0, cfg, 0).map_err(map_err(maps::CONFIG))
    }

    /// Build `slots` into a fresh inner array and swap it in for `vip_id`.
    pub fn install_table(&mut self, vip_id: u32, slots: &[u32]) -> Result<(), DataplaneError> {
        let name = maps::MAGLEV_TABLES;
        let def = aya_obj::Map::new_from_params(
            aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
            size_of::<u32>() as u32,
            size_of::<u32>() as u32,
            slots.len() as u32,
            maps::MAGLEV_TABLE_FLAGS,
        );
        let inner = MapData::create(def, "xlb_maglev", None).map_err(map_err(name))?;
        // Fill it through memory: one copy instead of a syscall per slot. No
        // program can see this map before the swap below.
        let mem = MappedArray::<u32>::new(inner.fd(), slots.len()).map_err(io_err(name))?;
        mem.fill_from(slots);
        // The swap: one update of the outer map. The kernel frees the old
        // inner map once no program can still hold it (RCU) and we let go.
        self.tables.set(vip_id, &inner, 0).map_err(map_err(name))?;
        self.installed
            .insert(vip_id, super::loader::Installed::new(inner, mem)?);
        Ok(())
    }

    /// Write one VIP; returns how long its table swap took, if it had one.
    fn write_vip(
        &mut self,
        vip: &DesiredVip,
        previous: Option<&DesiredVip>,
    ) -> Result<Option<f64>, DataplaneError> {
        let table_changed = previous.is_none_or(|p| p.id != vip.id || p.slots != vip.slots);
        let mut swap_seconds = None;
        if table_changed {
            if let Some(n) = self.fail_after_swaps {
                if n == 0 {
                    return Err(DataplaneError::Injected);
                }
                self.fail_after_swaps = Some(n - 1);
            }
            let started = std::time::Instant::now();
            self.install_table(vip.id, &vip.slots)?;
            swap_seconds = Some(started.elapsed().as_secs_f64());
        }
        if previous.is_none_or(|p| p.key != vip.key || p.meta != vip.meta) {
            self.vips
                .insert(vip.key, vip.meta, 0)
                .map_err(map_err(maps::VIPS))?;
        }
        Ok(swap_seconds)
    }

    /// Rewrite every VIP's table and backend entries from `desired`, each
    /// table swapped in whole: undoes whatever changed them behind our back.
    pub fn rewrite(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        for vip in &desired.vips {
            for (b, &id) in vip.config.backends.iter().zip(&vip.backend_ids) {
                self.backends.set(id as usize, kernel_backend(b, vip.id));
            }
            self.install_table(vip.id, &vip.slots)?;
        }
        Ok(())
    }

    /// Make the maps hold `desired`, all or nothing: if any write fails part
    /// way, every VIP is put back on `previous` (its tables swapped back in
    /// whole, its VIP entries restored, VIPs new in `desired` removed) before
    /// the error is returned. Returns the duration of each table swap.
    pub fn apply(
        &mut self,
        host: impl Into<HostInterface>,
        desired: &Desired,
        previous: Option<&Desired>,
    ) -> Result<Vec<f64>, DataplaneError> {
        let host = &host.into();
        match self.apply_forward(host, desired, previous) {
            Ok(swaps) => Ok(swaps),
            Err(e) => {
                log::warn!("apply failed part way ({e}); restoring the previous state");
                if let Err(restore) = self.restore(host, desired, previous) {
                    log::error!("restoring the previous state failed too: {restore}");
                }
                Err(e)
            }
        }
    }

    /// Fail the apply after `swaps` more table swaps (tests of the rollback
    /// path; never set in production).
    #[doc(hidden)]
    pub fn inject_swap_failure(&mut self, swaps: usize) {
        self.fail_after_swaps = Some(swaps);
    }

    fn restore(
        &mut self,
        host: &HostInterface,
        desired: &Desired,
        previous: Option<&Desired>,
    ) -> Result<(), DataplaneError> {
        self.fail_after_swaps = None;
        let Some(previous) = previous else {
            // Nothing was serving before: serve nothing.
            for vip in &desired.vips {
                let _ = self.vips.remove(&vip.key);
            }
            return Ok(());
        };
        self.write_global(host, &previous.config)?;
        for vip in &previous.vips {
            self.install_table(vip.id, &vip.slots)?;
            self.vips
                .insert(vip.key, vip.meta, 0)
                .map_err(map_err(maps::VIPS))?;
        }
        for vip in &desired.vips {
            if !previous.vips.iter().any(|p| p.key == vip.key) {
                let _ = self.vips.remove(&vip.key);
            }
        }
        Ok(())
    }

    fn apply_forward(
        &mut self,
        host: &HostInterface,
        desired: &Desired,
        previous: Option<&Desired>,
    ) -> Result<Vec<f64>, DataplaneError> {
        let mut swaps = Vec::new();
        let empty = Allocation::default();
        let prev_alloc = previous.map_or(&empty, |p| &p.allocation);
        self.write_global(host, &desired.config)?;

        let new_backend_ids = desired.new_backend_ids(prev_alloc);
        for vip in &desired.vips {
            for (b, &id) in vip.config.backends.iter().zip(&vip.backend_ids) {
                if new_backend_ids.contains(&id) {
                    self.backend_stats.zero(id);
                    self.backends.set(id as usize, kernel_backend(b, vip.id));
                }
            }
        }
        let new_vip_ids = desired.new_vip_ids(prev_alloc);
        for vip in &desired.vips {
            if new_vip_ids.contains(&vip.id) {
                self.vip_stats.zero(vip.id);
            }
            // VIPs are identified by name across applies.
            let prev =
                previous.and_then(|p| p.vips.iter().find(|v| v.config.name == vip.config.name));
            swaps.extend(self.write_vip(vip, prev)?);
        }
        if let Some(previous) = previous {
            for old in &previous.vips {
                if !desired.vips.iter().any(|v| v.key == old.key) {
                    self.vips.remove(&old.key).map_err(map_err(maps::VIPS))?;
                }
            }
        }
        Ok(swaps)
    }
}
