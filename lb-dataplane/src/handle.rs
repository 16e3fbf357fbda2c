//! `Dataplane`, the handle on a loaded balancer: its program and typed
//! handles to every map. It is loaded by `loader`; `reader`, `writer`,
//! `pins` and `conns` add what each does with it.

use aya::{
    Ebpf,
    maps::{Array, ArrayOfMaps, HashMap, MapData, PerCpuArray},
    programs::Xdp,
};
use lb_common::{Backend, Counters, GlobalConfig, VipKey, VipMeta, maps};

use crate::conns::ConnTable;
use crate::error::{DataplaneError, io_err, map_err};
use crate::mmap::MappedArray;
use crate::objects::take_array;

/// Possible CPUs: the number of stripes of the striped counter arrays.
pub(crate) fn possible_cpus() -> Result<usize, DataplaneError> {
    aya::util::nr_cpus().map_err(|(path, source)| DataplaneError::Io { name: path, source })
}

/// A Maglev table we created and swapped in.
pub(crate) struct Installed {
    pub(crate) map_id: u32,
    pub(crate) mem: MappedArray<u32>,
    _map: MapData,
}

impl Installed {
    pub(crate) fn new(map: MapData, mem: MappedArray<u32>) -> Result<Self, DataplaneError> {
        let map_id = map.info().map_err(map_err(maps::MAGLEV_TABLES))?.id();
        Ok(Self {
            map_id,
            mem,
            _map: map,
        })
    }
}

/// A CPU-striped counter array (slot `cpu * stripe + id`), mapped into memory.
pub(crate) struct Striped {
    pub(crate) mem: MappedArray<Counters>,
    pub(crate) stripe: u32,
    pub(crate) cpus: usize,
    /// Keeps the map's fd open as long as the mapping (the mapping alone
    /// would keep the map alive, but the fd is what pinning will need).
    _map: MapData,
}

impl Striped {
    pub(crate) fn take(
        ebpf: &mut Ebpf,
        name: &'static str,
        stripe: u32,
    ) -> Result<Self, DataplaneError> {
        let map = take_array(ebpf, name)?;
        let cpus = possible_cpus()?;
        let mem = MappedArray::new(map.fd(), cpus * stripe as usize).map_err(io_err(name))?;
        Ok(Self {
            mem,
            stripe,
            cpus,
            _map: map,
        })
    }

    /// `id`'s counters summed over CPUs.
    pub(crate) fn sum(&self, id: u32) -> Counters {
        (0..self.cpus).fold(Counters::default(), |acc, cpu| {
            let c = self.mem.get(cpu * self.stripe as usize + id as usize);
            Counters {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
                new_flows: acc.new_flows + c.new_flows,
            }
        })
    }

    /// Zero `id` on every CPU: a new id starts from nothing.
    pub(crate) fn zero(&self, id: u32) {
        for cpu in 0..self.cpus {
            self.mem.set(
                cpu * self.stripe as usize + id as usize,
                Counters::default(),
            );
        }
    }
}

/// The counter arrays of a loaded balancer, shared (an `Arc`): a clone
/// reads the same maps without the `Dataplane` (the daemon's status check
/// reads them without waiting for the controller). Read in `reader`.
#[derive(Clone)]
pub struct Counting(std::sync::Arc<CountingMaps>);

pub(crate) struct CountingMaps {
    pub(crate) vip_stats: Striped,
    pub(crate) backend_stats: Striped,
    pub(crate) action_stats: PerCpuArray<MapData, Counters>,
    pub(crate) drop_stats: PerCpuArray<MapData, Counters>,
    /// Per-CPU u64 per data-plane event (`stats::EV_*`).
    pub(crate) event_stats: PerCpuArray<MapData, u64>,
}

impl Counting {
    pub(crate) fn new(maps: CountingMaps) -> Self {
        Self(std::sync::Arc::new(maps))
    }

    pub(crate) fn maps(&self) -> &CountingMaps {
        &self.0
    }
}

/// The loaded balancer: its program and typed handles to every map.
pub struct Dataplane {
    pub(crate) ebpf: Ebpf,
    pub(crate) vips: HashMap<MapData, VipKey, VipMeta>,
    /// XLB_VIP_SLOTS, the copy of the VIP entries the program tries first;
    /// None for an object built before it.
    pub(crate) vip_slots: Option<crate::vipslots::VipSlots>,
    pub(crate) tables: ArrayOfMaps<MapData, MapData>,
    /// XLB_MAGLEV_TABLES again, for reading which map an entry names
    /// without opening it (see `reader::tables_fd`).
    pub(crate) tables_fd: std::os::fd::OwnedFd,
    pub(crate) backends: MappedArray<Backend>,
    pub(crate) _backends_map: MapData,
    /// The inner table each VIP id got from us, kept mapped: the drift check
    /// reads it without a syscall when the outer map still points at it.
    pub(crate) installed: std::collections::HashMap<u32, Installed>,
    /// The last table swap's call, still waiting for its RCU grace period
    /// with every pointer in place (`writer::swap`; `settle` joins it).
    pub(crate) grace: Option<std::thread::JoinHandle<Result<(), (usize, std::io::Error)>>>,
    /// See `inject_swap_failure`.
    #[cfg(feature = "fault-injection")]
    pub(crate) fail_after_swaps: Option<usize>,
    /// The counter arrays, shared with whoever reads counters without
    /// holding this handle (`Dataplane::counting`).
    pub(crate) counting: Counting,
    pub(crate) config: Array<MapData, GlobalConfig>,
    /// The connection tables, for counting (see `conns`).
    pub(crate) conns: ConnTable,
    /// Each family's table's max_entries, fixed at load (`conn_table_size`).
    pub(crate) conn_table_size: u32,
    /// Loaded over pins of layout `LAYOUT_UPGRADES_FROM`: their IPv4 flows
    /// were copied into XLB_CONNS_V4, and once this program is attached
    /// `finish_layout_upgrade` moves the rest and writes this layout's
    /// version (pins.rs).
    pub(crate) layout_upgrade: bool,
    /// The trace switch and ring; None for an object without them.
    pub(crate) tracer: Option<crate::trace::SharedTracer>,
}

impl Dataplane {
    /// The trace switch and ring (`xlb trace`), shared; None for an
    /// object built before tracing.
    pub fn tracer(&self) -> Option<crate::trace::SharedTracer> {
        self.tracer.clone()
    }

    /// Entries of the connection table the program was loaded with.
    pub fn conn_table_size(&self) -> u32 {
        self.conn_table_size
    }

    /// The loaded balancer program (for BPF_PROG_TEST_RUN, or to attach).
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(maps::BALANCER_PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("checked in load")
    }

    /// A handle to the connection table, to count it (`ConnTable::scan`)
    /// without borrowing the dataplane.
    pub fn conn_table(&self) -> ConnTable {
        self.conns.clone()
    }
}
