//! The eBPF objects built by build.rs (aya-build) and embedded, and taking
//! programs and maps out of a loaded object.

use aya::{
    Ebpf,
    maps::{Map, MapData},
    programs::Xdp,
};

use crate::error::{DataplaneError, map_err};

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

/// An array map of the object as MapData.
pub(crate) fn take_array(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, DataplaneError> {
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

/// Take map `name` out of a loaded object as a typed handle.
pub(crate) fn take<T: TryFrom<Map, Error = aya::maps::MapError>>(
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
