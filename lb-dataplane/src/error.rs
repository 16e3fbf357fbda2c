//! What can go wrong in the data plane: `DataplaneError` for the balancer's
//! object and maps, `PinError` for bpffs pins; helpers naming the map.

use std::io;

use aya::programs::links::LinkError;

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
    /// A failure `inject_swap_failure` asked for (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    #[error("injected failure (test)")]
    Injected,
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("map {name}: {source}")]
    Io {
        name: &'static str,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{path} is not a bpffs mount and mounting one there failed ({source}); mount it first: `mount -t bpf bpf {path}`"
    )]
    Mount {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("--bpffs {path}: not a bpffs mount; mount one there first (`mount -t bpf bpf {path}`)")]
    NotBpffs { path: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the maps pinned in {dir} have map layout version {pinned}; this xlb's program needs version {ours} and cannot use them. \
         Remove them with `xlb detach --interface {interface}` (forwarding on {interface} stops until xlb starts again), then start xlb"
    )]
    LayoutMismatch {
        dir: String,
        pinned: u32,
        ours: u32,
        interface: String,
    },
    #[error(
        "the map pinned as {path} is not what this xlb's program expects: {detail}. \
         Remove the pins with `xlb detach --interface {interface}`, then start xlb"
    )]
    MapMismatch {
        path: String,
        detail: String,
        interface: String,
    },
    #[error(
        "conn_table_size: the config asks for {wanted} entries, the connection table pinned in {dir} has {pinned}; \
         a map's size is fixed: set conn_table_size = {pinned}, or remove the pins with `xlb detach --interface {interface}` \
         (every remembered flow is forgotten) and start xlb"
    )]
    ConnTableSize {
        dir: String,
        wanted: u32,
        pinned: u32,
        interface: String,
    },
    #[error("pinned map {path}: {source}")]
    Map {
        path: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pinned link {path}: {source}")]
    Link {
        path: String,
        #[source]
        source: LinkError,
    },
    #[error(
        "attaching to {interface}: the kernel attached without a bpf_link (netlink), which cannot be pinned; xlb needs Linux 5.9 or later"
    )]
    NoLink { interface: String },
    #[error("{path}: unexpected files {files:?}; not removing the directory")]
    Unexpected { path: String, files: Vec<String> },
}

/// The map `name`'s error, as a `DataplaneError`.
pub(crate) fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// An I/O error on map `name`, as a `DataplaneError`.
pub(crate) fn io_err(name: &'static str) -> impl FnOnce(io::Error) -> DataplaneError {
    move |source| DataplaneError::Io { name, source }
}
