//! Loading the balancer object and holding typed handles to its maps.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, ArrayOfMaps, HashMap, MapData, PerCpuArray},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use lb_common::{Backend, Counters, GlobalConfig, VipKey, VipMeta, maps};

/// The balancer object, built by build.rs (aya-build) and embedded.
pub fn balancer_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"))
}

/// Helper programs for tests and benchmarks (`xlb_pass`, `xlb_mac_swap`).
pub fn aux_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-aux"))
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
}

pub(super) fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// The loaded balancer: its program and typed handles to every map.
pub struct Dataplane {
    pub(super) ebpf: Ebpf,
    pub(super) vips: HashMap<MapData, VipKey, VipMeta>,
    pub(super) tables: ArrayOfMaps<MapData, Array<MapData, u32>>,
    pub(super) backends: Array<MapData, Backend>,
    pub(super) vip_stats: PerCpuArray<MapData, Counters>,
    pub(super) backend_stats: PerCpuArray<MapData, Counters>,
    pub(super) action_stats: PerCpuArray<MapData, Counters>,
    pub(super) drop_stats: PerCpuArray<MapData, Counters>,
    pub(super) config: Array<MapData, GlobalConfig>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, DataplaneError> {
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::Missing { kind: "map", name })?;
    T::try_from(map).map_err(map_err(name))
}

impl Dataplane {
    /// Load the object and its program into the kernel (the verifier runs
    /// here); nothing is attached yet.
    pub fn load() -> Result<Self, DataplaneError> {
        let object = balancer_object();
        if object.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let mut ebpf = EbpfLoader::new().load(object)?;
        let name = maps::BALANCER_PROGRAM;
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
            .map_err(|source| DataplaneError::Program { name, source })?;
        Ok(Self {
            vips: take(&mut ebpf, maps::VIPS)?,
            tables: take(&mut ebpf, maps::MAGLEV_TABLES)?,
            backends: take(&mut ebpf, maps::BACKENDS)?,
            vip_stats: take(&mut ebpf, maps::VIP_STATS)?,
            backend_stats: take(&mut ebpf, maps::BACKEND_STATS)?,
            action_stats: take(&mut ebpf, maps::ACTION_STATS)?,
            drop_stats: take(&mut ebpf, maps::DROP_STATS)?,
            config: take(&mut ebpf, maps::CONFIG)?,
            ebpf,
        })
    }

    /// The loaded balancer program (for BPF_PROG_TEST_RUN, or to attach).
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(maps::BALANCER_PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("checked in load")
    }

    /// Attach the balancer to `interface`; detached when `self` is dropped.
    pub fn attach(&mut self, interface: &str, mode: XdpMode) -> Result<XdpLinkId, DataplaneError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(maps::BALANCER_PROGRAM)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("checked in load");
        program
            .attach(interface, mode)
            .map_err(|source| DataplaneError::Attach {
                interface: interface.to_string(),
                source,
            })
    }
}
