//! Loading the balancer object into a `Dataplane`, and attaching it.

use aya::{
    EbpfLoader,
    programs::{Xdp, xdp::XdpLinkId},
};
use lb_common::maps;

use crate::conns::ConnTable;
use crate::error::{DataplaneError, io_err};
use crate::handle::{Counting, CountingMaps, Dataplane, Striped, possible_cpus};
use crate::mmap::MappedArray;
use crate::objects::{balancer_object, load_xdp, take, take_array};

impl Dataplane {
    /// Load the object and its program into the kernel (the verifier runs
    /// here); nothing is attached yet.
    pub fn load() -> Result<Self, DataplaneError> {
        Self::load_with(maps::CONN_TABLE_SIZE)
    }

    /// `load` with a connection table of `conn_table_size` entries (the
    /// config's `conn_table_size`; a map's size is fixed once created).
    pub fn load_with(conn_table_size: u32) -> Result<Self, DataplaneError> {
        Self::load_object(balancer_object(), conn_table_size, None)
    }

    /// `load_with` from `object` (the embedded one, or a rebuilt one from a
    /// file), over the maps pinned in `pins` (each map missing there is
    /// created and pinned). Check `pins` with `PinDir::inspect` first: the
    /// kernel does not compare a pinned map with the object's definition.
    pub fn load_pinned(
        object: &[u8],
        conn_table_size: u32,
        pins: &crate::PinDir,
    ) -> Result<Self, DataplaneError> {
        Self::load_object(object, conn_table_size, Some(pins))
    }

    fn load_object(
        object: &[u8],
        conn_table_size: u32,
        pins: Option<&crate::PinDir>,
    ) -> Result<Self, DataplaneError> {
        if object.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let cpus = possible_cpus()? as u32;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(maps::VIP_STATS, maps::MAX_VIPS * cpus)
            .map_max_entries(maps::BACKEND_STATS, maps::MAX_BACKENDS * cpus)
            .map_max_entries(maps::CONNS, conn_table_size)
            .map_max_entries(maps::CONNS_V4, conn_table_size);
        if let Some(pins) = pins {
            for name in maps::ALL {
                loader.map_pin_path(name, pins.map_path(name));
            }
        }
        let mut ebpf = loader.load(object)?;
        load_xdp(&mut ebpf, maps::BALANCER_PROGRAM)?;
        let backends_map = take_array(&mut ebpf, maps::BACKENDS)?;
        let vip_slots = crate::vipslots::VipSlots::take(&mut ebpf)?;
        if let (Some(slots), Some(_)) = (&vip_slots, pins) {
            // Pinned slots may be stale (an older xlb, which does not know
            // them, ran on these pins): empty until adoption fills them,
            // before this program is attached.
            slots.clear_all();
        }
        let mut dp = Self {
            vips: take(&mut ebpf, maps::VIPS)?,
            vip_slots,
            tables_fd: crate::reader::tables_fd(&ebpf)?,
            tables: take(&mut ebpf, maps::MAGLEV_TABLES)?,
            backends: MappedArray::new(backends_map.fd(), maps::MAX_BACKENDS as usize)
                .map_err(io_err(maps::BACKENDS))?,
            _backends_map: backends_map,
            installed: Default::default(),
            grace: None,
            #[cfg(feature = "fault-injection")]
            fail_after_swaps: None,
            counting: Counting::new(CountingMaps {
                vip_stats: Striped::take(&mut ebpf, maps::VIP_STATS, maps::MAX_VIPS)?,
                backend_stats: Striped::take(&mut ebpf, maps::BACKEND_STATS, maps::MAX_BACKENDS)?,
                action_stats: take(&mut ebpf, maps::ACTION_STATS)?,
                drop_stats: take(&mut ebpf, maps::DROP_STATS)?,
                event_stats: take(&mut ebpf, maps::EVENT_STATS)?,
            }),
            config: take(&mut ebpf, maps::CONFIG)?,
            conn_table_size,
            conns: ConnTable::take(&mut ebpf)?,
            tracer: crate::trace::Tracer::take(&mut ebpf)?
                .map(|t| std::sync::Arc::new(std::sync::Mutex::new(t))),
            layout_upgrade: false,
            ebpf,
        };
        if pins.is_some() {
            dp.begin_layout_upgrade()?;
        }
        Ok(dp)
    }

    /// Attach the balancer to `interface` under the link pinned in `pins`
    /// (replacing the program there without a gap), or attach and pin a new
    /// link. Stays attached when `self` is dropped.
    pub fn attach_pinned(
        &mut self,
        interface: &str,
        mode: crate::AttachMode,
        pins: &crate::PinDir,
    ) -> Result<crate::Attached, DataplaneError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(maps::BALANCER_PROGRAM)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("checked in load");
        let attached = pins.attach(program, interface, mode)?;
        self.finish_layout_upgrade()?;
        Ok(attached)
    }

    /// Attach the balancer to `interface`; detached when `self` is dropped.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: crate::AttachMode,
    ) -> Result<XdpLinkId, DataplaneError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(maps::BALANCER_PROGRAM)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("checked in load");
        program
            .attach(interface, mode.xdp())
            .map_err(|source| DataplaneError::Attach {
                interface: interface.to_string(),
                source,
            })
    }
}
