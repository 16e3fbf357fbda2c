//! Loading the balancer object and holding typed handles to its maps.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, ArrayOfMaps, HashMap, Map, MapData, PerCpuArray},
    programs::{Xdp, xdp::XdpLinkId},
};
use lb_common::{Backend, Counters, GlobalConfig, VipKey, VipMeta, maps};

use crate::mmap::MappedArray;

/// The balancer object, built by build.rs (aya-build) and embedded.
pub fn balancer_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"))
}

/// Helper programs for tests and benchmarks (`xlb_pass`, `xlb_mac_swap`).
pub fn aux_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-aux"))
}

/// The backends' decap program (`xlb_decap`, run by `xlb decap`).
pub fn decap_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-decap"))
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "this xlb was built without its XDP object (AYA_BUILD_SKIP was set); rebuild without it"
    )]
    NoObject,
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("attaching to interface {interface}: {source}")]
    Attach {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("injected failure (test)")]
    Injected,
    #[error(transparent)]
    Pin(#[from] crate::pins::PinError),
    #[error("map {name}: {source}")]
    Io {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub(super) fn io_err(name: &'static str) -> impl FnOnce(std::io::Error) -> DataplaneError {
    move |source| DataplaneError::Io { name, source }
}

/// Possible CPUs: the number of stripes of the striped counter arrays.
pub(super) fn possible_cpus() -> Result<usize, DataplaneError> {
    aya::util::nr_cpus().map_err(|(path, source)| DataplaneError::Io { name: path, source })
}

/// A Maglev table we created and swapped in.
pub(super) struct Installed {
    pub(super) map_id: u32,
    pub(super) mem: MappedArray<u32>,
    _map: MapData,
}

impl Installed {
    pub(super) fn new(map: MapData, mem: MappedArray<u32>) -> Result<Self, DataplaneError> {
        let map_id = map.info().map_err(map_err(maps::MAGLEV_TABLES))?.id();
        Ok(Self {
            map_id,
            mem,
            _map: map,
        })
    }
}

/// An array map of the object as MapData.
fn take_array(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, DataplaneError> {
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::Missing { kind: "map", name })?;
    match map {
        Map::Array(map) => Ok(map),
        _ => Err(DataplaneError::Missing {
            kind: "BPF_MAP_TYPE_ARRAY",
            name,
        }),
    }
}

/// A CPU-striped counter array (slot `cpu * stripe + id`), mapped into memory.
pub(super) struct Striped {
    pub(super) mem: MappedArray<Counters>,
    pub(super) stripe: u32,
    pub(super) cpus: usize,
    /// Keeps the map's fd open as long as the mapping (the mapping alone
    /// would keep the map alive, but the fd is what pinning will need).
    _map: MapData,
}

impl Striped {
    fn take(ebpf: &mut Ebpf, name: &'static str, stripe: u32) -> Result<Self, DataplaneError> {
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
    pub(super) fn sum(&self, id: u32) -> Counters {
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
    pub(super) fn zero(&self, id: u32) {
        for cpu in 0..self.cpus {
            self.mem.set(
                cpu * self.stripe as usize + id as usize,
                Counters::default(),
            );
        }
    }
}

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// The loaded balancer: its program and typed handles to every map.
pub struct Dataplane {
    pub(super) ebpf: Ebpf,
    pub(super) vips: HashMap<MapData, VipKey, VipMeta>,
    pub(super) tables: ArrayOfMaps<MapData, MapData>,
    /// XLB_MAGLEV_TABLES again, for reading which map an entry names
    /// without opening it (see `reader::tables_fd`).
    pub(super) tables_fd: std::os::fd::OwnedFd,
    pub(super) backends: MappedArray<Backend>,
    _backends_map: MapData,
    /// The inner table each VIP id got from us, kept mapped: the drift check
    /// reads it without a syscall when the outer map still points at it.
    pub(super) installed: std::collections::HashMap<u32, Installed>,
    /// See `inject_swap_failure`.
    pub(super) fail_after_swaps: Option<usize>,
    pub(super) vip_stats: Striped,
    pub(super) backend_stats: Striped,
    pub(super) action_stats: PerCpuArray<MapData, Counters>,
    pub(super) drop_stats: PerCpuArray<MapData, Counters>,
    pub(super) config: Array<MapData, GlobalConfig>,
    /// Per-CPU u64 per data-plane event (`stats::EV_*`).
    pub(super) event_stats: PerCpuArray<MapData, u64>,
    /// The connection table, for counting (see `conns`).
    pub(super) conns: crate::ConnTable,
    /// XLB_CONNS's max_entries, fixed at load (`conn_table_size`).
    conn_table_size: u32,
}

/// Take map `name` out of a loaded object as a typed handle.
pub(crate) fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, DataplaneError> {
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::Missing { kind: "map", name })?;
    T::try_from(map).map_err(map_err(name))
}

/// Load XDP program `name` of an object into the kernel (the verifier runs
/// here).
pub(crate) fn load_xdp(ebpf: &mut Ebpf, name: &'static str) -> Result<(), DataplaneError> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(DataplaneError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| DataplaneError::Program { name, source })?;
    program
        .load()
        .map_err(|source| DataplaneError::Program { name, source })
}

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
            .map_max_entries(maps::CONNS, conn_table_size);
        if let Some(pins) = pins {
            for name in maps::ALL {
                loader.map_pin_path(name, pins.map_path(name));
            }
        }
        let mut ebpf = loader.load(object)?;
        load_xdp(&mut ebpf, maps::BALANCER_PROGRAM)?;
        let backends_map = take_array(&mut ebpf, maps::BACKENDS)?;
        Ok(Self {
            vips: take(&mut ebpf, maps::VIPS)?,
            tables_fd: crate::reader::tables_fd(&ebpf)?,
            tables: take(&mut ebpf, maps::MAGLEV_TABLES)?,
            backends: MappedArray::new(backends_map.fd(), maps::MAX_BACKENDS as usize)
                .map_err(io_err(maps::BACKENDS))?,
            _backends_map: backends_map,
            installed: Default::default(),
            fail_after_swaps: None,
            vip_stats: Striped::take(&mut ebpf, maps::VIP_STATS, maps::MAX_VIPS)?,
            backend_stats: Striped::take(&mut ebpf, maps::BACKEND_STATS, maps::MAX_BACKENDS)?,
            action_stats: take(&mut ebpf, maps::ACTION_STATS)?,
            drop_stats: take(&mut ebpf, maps::DROP_STATS)?,
            config: take(&mut ebpf, maps::CONFIG)?,
            conn_table_size,
            event_stats: take(&mut ebpf, maps::EVENT_STATS)?,
            conns: crate::ConnTable::take(&mut ebpf)?,
            ebpf,
        })
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
        pins.attach(program, interface, mode)
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
