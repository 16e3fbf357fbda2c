//! xlb's data plane: the only crate that touches BPF programs and maps
//! (aya). Everything it writes is computed by `xlb_core`; everything it
//! reads it hands back as `xlb_core` data.
//!
//! From the bottom up (a module uses only those above it in this list):
//! - `sys`: the raw `bpf()` calls aya does not wrap, behind one small trait
//!   that tests replace;
//! - `host`: the interface read from sysfs;
//! - `mmap`: BPF arrays mapped into memory;
//! - `loader`: the embedded objects, loading, the `Dataplane` handle;
//! - `pins`: maps and the XDP link pinned in bpffs, adopted by the next
//!   daemon; attaching;
//! - `reader`: counters, summed over CPUs, and the live tables;
//! - `writer`: a `state::Desired` turned into map updates, atomically per VIP;
//! - `conns`: the connection table counted (fill, flows per backend);
//! - `staging`: flows through the real program (BPF_PROG_TEST_RUN), judged;
//! - `decap`: the backend-side decapsulation program.

pub mod conns;
pub mod decap;
pub mod host;
mod loader;
mod mmap;
mod mode;
pub mod pins;
mod reader;
pub mod staging;
mod sys;
mod writer;

pub use conns::{ConnTable, SCAN_PERIOD as CONN_SCAN_PERIOD, pause_after as conn_scan_pause};
pub use host::HostInterface;
pub use loader::{Dataplane, DataplaneError, aux_object, balancer_object, decap_object};
pub(crate) use loader::{load_xdp, map_err, take};
pub use mode::AttachMode;
pub use pins::{
    Attached, DEFAULT_BPFFS, PinDir, PinError, Pinned, Removed, ensure_bpffs, is_bpffs,
};
pub use xlb_core::counters::{ConnScan, CounterSnapshot};
