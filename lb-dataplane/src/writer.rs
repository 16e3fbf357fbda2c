//! Writing a `Desired` state into the maps, in the order that keeps every
//! packet consistent:
//!
//! 1. host config (interface MAC, hash seed, tunnel settings);
//! 2. entries and zeroed counters of new backend ids (no table names them yet);
//! 3. each changed table, filled in a fresh inner map, then all of them swapped
//!    in with one batch update of the outer map (each VIP's table changes
//!    whole; the kernel waits for running programs once, not once a table);
//! 4. VIP slots (`vipslots`) whose content changes are emptied; VIP entries
//!    (a new VIP becomes visible only once its table is there), then the
//!    ICMP echo entries (they name VIP ids written in 4);
//! 5. VIP and echo entries that are gone are removed; then the VIP slots
//!    are filled (after `RETIRE_GRACE` when one held another entry before);
//! 6. after `RETIRE_GRACE`, the entries of backend ids no table names any
//!    more (changed backends, those of removed VIPs) lose `BACKEND_F_VALID`.
//!    A removed backend's entry stays valid while it is retained
//!    (`xlb_core::state::retain`); `retire_retained` ends that later.
//!
//! Step 6 is what re-steers a retired backend's flows: the connection table
//! still remembers them on its id, and the program hashes a flow again onto
//! the live table when its remembered entry is not valid. The entries stay
//! valid until then because a packet that read the old table (or the
//! connection table) just before the swap reads the backend entry next.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use aya::maps::MapData;
use lb_common::{
    BACKEND_F_VALID, Backend as KernelBackend, VipKey, VipMeta, maps, vipslot::VipSlot,
};

use crate::HostInterface;
use crate::vipslots::{Pending, owners, sole_words};
use crate::{
    Dataplane, DataplaneError,
    error::{io_err, map_err},
    mmap::MappedArray,
};
use xlb_core::config::Config;
use xlb_core::state::{Allocation, Desired, DesiredVip, KernelSlots, kernel_backend};

/// How long the entry of a backend id that no live table names any more
/// stays valid after the swap. A packet that read the old table (or the
/// connection table) just before the swap reads the backend entry next, in
/// the same run of the program; an XDP run takes microseconds and is not
/// preempted, so a few milliseconds cover every such packet with a wide
/// margin, and an apply that removes backends is only that much slower.
pub const RETIRE_GRACE: Duration = Duration::from_millis(5);

/// Every VIP's table of `desired`, as `install_tables` takes them.
fn every_table(desired: &Desired) -> Vec<(u32, KernelSlots<'_>)> {
    desired
        .vips
        .iter()
        .map(|vip| (vip.id, vip.slot_iter()))
        .collect()
}

impl Dataplane {
    pub fn write_global(
        &mut self,
        host: &HostInterface,
        config: &Config,
    ) -> Result<(), DataplaneError> {
        self.config
            .set(0, xlb_core::state::global_config(host, config), 0)
            .map_err(map_err(maps::CONFIG))
    }

    /// Build `slots` into a fresh inner array and swap it in for `vip_id`.
    pub fn install_table(&mut self, vip_id: u32, slots: &[u32]) -> Result<(), DataplaneError> {
        self.install_tables(&[(vip_id, slots)])
    }

    /// Build each `(vip_id, slots)` into a fresh inner array, then swap them
    /// all in with one BPF_MAP_UPDATE_BATCH of the outer map. Each VIP's
    /// table changes whole (one pointer); the kernel waits once for the
    /// programs running at the swap, where an update per table waits once
    /// per table (an RCU grace period, milliseconds: a thousand tables took
    /// seconds). When the batch stops part way, the tables swapped so far
    /// are kept as installed and the error is returned (the caller restores).
    pub fn install_tables(&mut self, tables: &[(u32, &[u32])]) -> Result<(), DataplaneError> {
        self.install_slots(
            tables
                .iter()
                .map(|&(vip_id, slots)| (vip_id, KernelSlots::Held(slots.iter())))
                .collect(),
        )
    }

    /// [`Dataplane::install_tables`], each table's slots read as they are
    /// written (`DesiredVip::slot_iter`: the state holds no kernel table
    /// of its own to copy).
    pub fn install_slots(
        &mut self,
        tables: Vec<(u32, KernelSlots<'_>)>,
    ) -> Result<(), DataplaneError> {
        if tables.is_empty() {
            // No call: even an empty batch waits for a grace period.
            return Ok(());
        }
        let name = maps::MAGLEV_TABLES;
        let mut fresh = Vec::with_capacity(tables.len());
        #[cfg(feature = "fault-injection")]
        let n = tables.len();
        for (vip_id, slots) in tables {
            let def = aya_obj::Map::new_from_params(
                aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
                size_of::<u32>() as u32,
                size_of::<u32>() as u32,
                slots.len() as u32,
                maps::MAGLEV_TABLE_FLAGS,
            );
            let inner = MapData::create(def, "xlb_maglev", None).map_err(map_err(name))?;
            // Fill it through memory: one copy instead of a syscall per
            // slot. No program can see this map before the swap below.
            let mem = MappedArray::<u32>::new(inner.fd(), slots.len()).map_err(io_err(name))?;
            // `for_each`: one match on the table's width, then a loop.
            slots.enumerate().for_each(|(i, id)| mem.set(i, id));
            fresh.push((vip_id, inner, mem));
        }
        let count = self.swaps_allowed(fresh.len());
        // The swap: the kernel frees each old inner map once no program can
        // still hold it (RCU) and we let go of it below.
        let (done, failed) = match self.swap(&fresh[..count]) {
            Ok(()) => (count, None),
            Err((done, e)) => (done, Some(e)),
        };
        for (vip_id, inner, mem) in fresh.into_iter().take(done) {
            self.installed
                .insert(vip_id, crate::handle::Installed::new(inner, mem)?);
        }
        if let Some(e) = failed {
            return Err(io_err(name)(e));
        }
        #[cfg(feature = "fault-injection")]
        if count < n {
            return Err(DataplaneError::Injected);
        }
        Ok(())
    }

    /// Point the outer map's entry of each VIP id of `fresh` at its new
    /// inner map, one BPF_MAP_UPDATE_BATCH, and return once every pointer
    /// is in place: the kernel updates them in order, then waits for an RCU
    /// grace period (5 to 15 ms here) so that no program run still holds an
    /// old table. Nothing of ours needs that wait (an old table is freed by
    /// the kernel when its last reader is done; a backend no table names
    /// waits `RETIRE_GRACE` after `settle`), so the call is made on a
    /// thread of its own and this returns when the last key reads the last
    /// map's id, or when the call ended (its own result, an error
    /// included). The thread is joined by `settle` before anything that
    /// needs the grace period to be over.
    fn swap(
        &mut self,
        fresh: &[(u32, MapData, MappedArray<u32>)],
    ) -> Result<(), (usize, std::io::Error)> {
        self.settle();
        let Some((last_key, last_map, _)) = fresh.last() else {
            return Ok(());
        };
        let last_id = last_map
            .info()
            .map_err(|e| (0, std::io::Error::other(e)))?
            .id();
        let keys: Vec<u32> = fresh.iter().map(|(id, _, _)| *id).collect();
        let fds: Vec<u32> = fresh
            .iter()
            .map(|(_, inner, _)| inner.fd().as_fd().as_raw_fd() as u32)
            .collect();
        let outer = self.tables_fd.try_clone().map_err(|e| (0, e))?;
        let (k, f) = (keys.clone(), fds.clone());
        let call = std::thread::Builder::new()
            .name("xlb-swap".into())
            .spawn(move || crate::sys::update_batch(outer.as_fd(), &k, &f));
        let call = match call {
            Ok(call) => call,
            // No thread to be had: the call made here, waiting with it.
            Err(_) => return crate::sys::update_batch(self.tables_fd.as_fd(), &keys, &fds),
        };
        // Bounded: the call ends, in the kernel's own time.
        loop {
            if call.is_finished() {
                return call.join().unwrap_or_else(|_| {
                    Err((0, std::io::Error::other("the table swap's thread panicked")))
                });
            }
            let in_place = crate::sys::lookup_elem(self.tables_fd.as_fd(), *last_key, 4)
                .is_ok_and(|v| v == last_id.to_ne_bytes());
            if in_place {
                self.grace = Some(call);
                return Ok(());
            }
            std::thread::yield_now();
        }
    }

    /// Wait for the last swap's grace period to be over (see `swap`).
    pub(crate) fn settle(&mut self) {
        if let Some(call) = self.grace.take() {
            // Its pointers were all in place: only the wait was left.
            let _ = call.join();
        }
    }

    /// How many of `n` table swaps may be made now: all of them, unless the
    /// tests injected a failure after some (`inject_swap_failure`).
    fn swaps_allowed(&mut self, n: usize) -> usize {
        #[cfg(feature = "fault-injection")]
        if let Some(left) = self.fail_after_swaps {
            let allowed = left.min(n);
            self.fail_after_swaps = Some(left - allowed);
            return allowed;
        }
        n
    }

    /// Whether `vip`'s table must be swapped in: new, another id, or other
    /// slots than `previous` had.
    fn table_changed(vip: &DesiredVip, previous: Option<&DesiredVip>) -> bool {
        // The same shared VIP (`state::desired_reusing`): nothing to compare.
        previous.is_none_or(|p| !std::ptr::eq(p, vip) && (p.id != vip.id || !p.same_slots(vip)))
    }

    /// Write one VIP's entry when it changed (after its table is in).
    fn write_vip_entry(
        &mut self,
        vip: &DesiredVip,
        previous: Option<&DesiredVip>,
    ) -> Result<(), DataplaneError> {
        if previous.is_none_or(|p| p.key != vip.key || p.meta != vip.meta) {
            self.vips
                .insert(vip.key, vip.meta, 0)
                .map_err(map_err(maps::VIPS))?;
        }
        Ok(())
    }

    /// Write the entry of a backend id no table names yet. First without
    /// `BACKEND_F_VALID`, then whole: a packet that reads it meanwhile (a
    /// flow the connection table still remembers on this id from before it
    /// was retired) sees an invalid entry or a complete one, never a valid
    /// entry with half of another backend's address in it.
    fn publish_backend(&self, id: u32, entry: KernelBackend) {
        let invalid = KernelBackend {
            flags: entry.flags & !BACKEND_F_VALID,
            ..entry
        };
        self.backends.set(id as usize, invalid);
        fence(Ordering::Release);
        self.backends.set(id as usize, entry);
    }

    /// After `RETIRE_GRACE`, take `BACKEND_F_VALID` from the entries of
    /// `ids`, which no live table names any more. Only the flags byte
    /// changes (the rest is rewritten with the bytes it holds), so a packet
    /// reading an entry meanwhile sees it whole, valid or not.
    fn retire_backends(&mut self, ids: &BTreeSet<u32>) {
        if ids.is_empty() {
            return;
        }
        // No program run still reads a table from before the swap.
        self.settle();
        std::thread::sleep(RETIRE_GRACE);
        self.retire_retained(ids);
    }

    /// Retire the entries of retained backends whose retention ended
    /// (`xlb_core::state::retain`): no table has named them since the apply
    /// that removed them, so no grace is needed; flows still remembered on
    /// them are hashed again on their next packet.
    pub fn retire_retained(&self, ids: &BTreeSet<u32>) {
        for &id in ids {
            let entry = self.backends.get(id as usize);
            self.backends.set(
                id as usize,
                KernelBackend {
                    flags: entry.flags & !BACKEND_F_VALID,
                    ..entry
                },
            );
        }
    }

    /// Give the kept backends of a VIP whose id changed (a new table size)
    /// the new VIP id, right after its VIP entry names that id. Only
    /// `vip_id` differs from what the entry holds (an id's address and MAC
    /// never change), so the entry stays valid throughout; a remembered flow
    /// that reads the new VIP entry just before its backend's entry is
    /// rewritten is hashed again (the kernel uses a remembered backend only
    /// for its own VIP), a window of microseconds.
    fn move_kept_backends(&self, vip: &DesiredVip, new_ids: &BTreeSet<u32>) {
        for (b, &id) in vip.config.backends.iter().zip(&vip.backend_ids) {
            if !new_ids.contains(&id) {
                self.backends.set(id as usize, kernel_backend(b, vip.id));
            }
        }
    }

    /// Empty the VIP slots whose content is not `live`'s (None: every
    /// slot): step one of a change of the slots, before the VIP entries are
    /// written or removed.
    pub(crate) fn clear_vip_slots(&self, live: Option<&Desired>) -> Pending {
        let Some(slots) = &self.vip_slots else {
            return Pending::default();
        };
        let target = Self::vip_slot_target(live);
        // Every key of the hash map: the VIPs' and the address entries'.
        // Nothing live (None): no bit set, every miss looks the map up.
        let sole = live
            .map(|d| {
                let keys = d.vips.iter().map(|v| &v.key);
                sole_words(&target, keys.chain(d.echo.iter().map(|(k, _)| k)))
            })
            .unwrap_or_default();
        slots.clear_stale(target, sole)
    }

    /// Step two, after the VIP entries: fill what `clear_vip_slots` left.
    pub(crate) fn fill_vip_slots(&mut self, pending: Pending) {
        if let Some(slots) = &mut self.vip_slots {
            slots.fill(pending, RETIRE_GRACE);
        }
    }

    fn vip_slot_target(live: Option<&Desired>) -> BTreeMap<u32, VipSlot> {
        live.map(|d| owners(d.vips.iter().map(|v| (&v.key, &v.meta))))
            .unwrap_or_default()
    }

    /// The VIP slots that do not hold what `desired` puts there (drift:
    /// `rewrite` repairs them); empty for an object without VIP slots.
    pub fn vip_slots_drift(&self, desired: &Desired) -> Vec<u32> {
        self.vip_slots
            .as_ref()
            .map(|s| s.differing(&Self::vip_slot_target(Some(desired))))
            .unwrap_or_default()
    }

    /// Whether the VIP slot of `key` no longer holds what the controller
    /// last wrote there (the daemon's drift check, a VIP at a time; a slot
    /// another VIP owns counts for both). False for an object without VIP
    /// slots.
    pub fn vip_slot_drifted(&self, key: &VipKey) -> bool {
        self.vip_slots.as_ref().is_some_and(|s| {
            s.drifted(lb_common::vipslot::slot_index(
                &lb_common::vipslot::key_words(key),
            ))
        })
    }

    /// Rewrite every VIP's table, backend entries and VIP slots from
    /// `desired`, each table swapped in whole: undoes whatever changed them
    /// behind our back.
    pub fn rewrite(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        let pending = self.clear_vip_slots(Some(desired));
        for vip in &desired.vips {
            for (b, &id) in vip.config.backends.iter().zip(&vip.backend_ids) {
                self.backends.set(id as usize, kernel_backend(b, vip.id));
            }
        }
        self.install_slots(every_table(desired))?;
        self.fill_vip_slots(pending);
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
        self.apply_with_progress(host, desired, previous, &|| {})
    }

    /// [`apply`](Self::apply), calling `progress` after each table swap: a
    /// long apply's sign of life for the daemon's watchdog.
    pub fn apply_with_progress(
        &mut self,
        host: impl Into<HostInterface>,
        desired: &Desired,
        previous: Option<&Desired>,
        progress: &dyn Fn(),
    ) -> Result<Vec<f64>, DataplaneError> {
        let host = &host.into();
        match self.apply_forward(host, desired, previous, progress) {
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
    /// path): only with the `fault-injection` feature, which the integration
    /// tests turn on and the `xlb` binary never has.
    #[cfg(feature = "fault-injection")]
    pub fn inject_swap_failure(&mut self, swaps: usize) {
        self.fail_after_swaps = Some(swaps);
    }

    fn restore(
        &mut self,
        host: &HostInterface,
        desired: &Desired,
        previous: Option<&Desired>,
    ) -> Result<(), DataplaneError> {
        #[cfg(feature = "fault-injection")]
        {
            self.fail_after_swaps = None;
        }
        let empty = Allocation::default();
        // Ids the failed apply wrote: once the tables that may name them are
        // swapped back out, flows remembered on them are hashed again.
        let written = desired.new_backend_ids(previous.map_or(&empty, |p| &p.allocation));
        let Some(previous) = previous else {
            // Nothing was serving before: serve nothing.
            let none = self.clear_vip_slots(None);
            self.fill_vip_slots(none);
            for vip in &desired.vips {
                let _ = self.vips.remove(&vip.key);
            }
            for (key, _) in &desired.echo {
                let _ = self.vips.remove(key);
            }
            self.retire_backends(&written);
            self.installed.clear();
            return Ok(());
        };
        let pending = self.clear_vip_slots(Some(previous));
        self.write_global(host, &previous.config)?;
        self.install_slots(every_table(previous))?;
        for vip in &previous.vips {
            self.vips
                .insert(vip.key, vip.meta, 0)
                .map_err(map_err(maps::VIPS))?;
            // Back to the VIP id they had, if the failed apply moved them.
            for (b, &id) in vip.config.backends.iter().zip(&vip.backend_ids) {
                self.backends.set(id as usize, kernel_backend(b, vip.id));
            }
        }
        for (key, meta) in &previous.echo {
            self.vips
                .insert(key, meta, 0)
                .map_err(map_err(maps::VIPS))?;
        }
        for vip in &desired.vips {
            if !previous.vips.iter().any(|p| p.key == vip.key) {
                let _ = self.vips.remove(&vip.key);
            }
        }
        for (key, _) in &desired.echo {
            if !previous.echo.iter().any(|(k, _)| k == key) {
                let _ = self.vips.remove(key);
            }
        }
        self.fill_vip_slots(pending);
        self.retire_backends(&written);
        self.close_unused_tables(previous);
        Ok(())
    }

    fn apply_forward(
        &mut self,
        host: &HostInterface,
        desired: &Desired,
        previous: Option<&Desired>,
        progress: &dyn Fn(),
    ) -> Result<Vec<f64>, DataplaneError> {
        let mut swaps = Vec::new();
        let empty = Allocation::default();
        let prev_alloc = previous.map_or(&empty, |p| &p.allocation);
        self.write_global(host, &desired.config)?;

        let new_backend_ids = desired.new_backend_ids(prev_alloc);
        for vip in &desired.vips {
            for (b, &id) in vip.config.backends.iter().zip(&vip.backend_ids) {
                if new_backend_ids.contains(&id) {
                    self.counting.maps().backend_stats.zero(id);
                    self.publish_backend(id, kernel_backend(b, vip.id));
                }
            }
        }
        let new_vip_ids = desired.new_vip_ids(prev_alloc);
        // VIPs are identified by name across applies.
        let previous_by_name: HashMap<&str, &DesiredVip> = previous
            .map(|p| {
                p.vips
                    .iter()
                    .map(|v| (v.config.name.as_str(), &**v))
                    .collect()
            })
            .unwrap_or_default();
        for vip in &desired.vips {
            if new_vip_ids.contains(&vip.id) {
                self.counting.maps().vip_stats.zero(vip.id);
            }
        }
        // Every changed table, swapped in together.
        let changed: Vec<(u32, KernelSlots<'_>)> = desired
            .vips
            .iter()
            .filter(|vip| {
                Self::table_changed(vip, previous_by_name.get(vip.config.name.as_str()).copied())
            })
            .map(|vip| (vip.id, vip.slot_iter()))
            .collect();
        if !changed.is_empty() {
            let started = std::time::Instant::now();
            self.install_slots(changed)?;
            swaps.push(started.elapsed().as_secs_f64());
            progress();
        }
        let pending = self.clear_vip_slots(Some(desired));
        for vip in &desired.vips {
            let prev = previous_by_name.get(vip.config.name.as_str()).copied();
            self.write_vip_entry(vip, prev)?;
            if prev.is_some_and(|p| p.id != vip.id) {
                self.move_kept_backends(vip, &new_backend_ids);
            }
        }
        let previous_echo: HashMap<&VipKey, &VipMeta> = previous
            .map(|p| p.echo.iter().map(|(k, m)| (k, m)).collect())
            .unwrap_or_default();
        for (key, meta) in &desired.echo {
            if previous_echo.get(key) != Some(&meta) {
                self.vips
                    .insert(key, meta, 0)
                    .map_err(map_err(maps::VIPS))?;
            }
        }
        if let Some(previous) = previous {
            let keys: HashSet<&VipKey> = desired.vips.iter().map(|v| &v.key).collect();
            for old in &previous.vips {
                if !keys.contains(&old.key) {
                    self.vips.remove(&old.key).map_err(map_err(maps::VIPS))?;
                }
            }
            let echo_keys: HashSet<&VipKey> = desired.echo.iter().map(|(k, _)| k).collect();
            for (key, _) in &previous.echo {
                if !echo_keys.contains(key) {
                    self.vips.remove(key).map_err(map_err(maps::VIPS))?;
                }
            }
        }
        self.fill_vip_slots(pending);
        self.retire_backends(&desired.retired_backend_ids(prev_alloc));
        self.close_unused_tables(desired);
        Ok(swaps)
    }

    /// Let go of the tables no VIP of `live` uses any more (removed VIPs,
    /// and the old ids of VIPs whose table size changed): their descriptor
    /// and mapping are closed. Called after the VIP entries that named them
    /// are gone and after `RETIRE_GRACE`, so no program run still reads
    /// them through us; the outer map's slot keeps the kernel's reference
    /// until a new VIP takes that id.
    pub(crate) fn close_unused_tables(&mut self, live: &Desired) {
        let ids: HashSet<u32> = live.vips.iter().map(|v| v.id).collect();
        self.installed.retain(|id, _| ids.contains(id));
    }

    /// The Maglev tables this process holds open (one descriptor each).
    pub fn open_tables(&self) -> usize {
        self.installed.len()
    }
}
