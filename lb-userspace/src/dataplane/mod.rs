//! The only module that touches BPF maps and programs.
//!
//! - `loader`: the embedded objects, loading and attaching;
//! - `writer`: turning a `state::Desired` into map updates, atomically per VIP;
//! - `reader`: counters, summed over CPUs, and the live tables;
//! - `conns`: the connection table counted (fill, flows per backend);
//! - `mmap`: BPF arrays mapped into memory;
//! - `pins`: maps and the XDP link pinned in bpffs, adopted by the next daemon.

mod conns;
mod host;
mod loader;
mod mmap;
mod pins;
mod reader;
mod writer;

pub use conns::{
    ConnScan, ConnTable, SCAN_PERIOD as CONN_SCAN_PERIOD, pause_after as conn_scan_pause,
};
pub use host::HostInterface;
pub use loader::{Dataplane, DataplaneError, aux_object, balancer_object, decap_object};
pub(crate) use loader::{load_xdp, map_err, take};
pub use pins::{
    Attached, DEFAULT_BPFFS, PinDir, PinError, Pinned, Removed, ensure_bpffs, is_bpffs,
};
pub use reader::CounterSnapshot;
