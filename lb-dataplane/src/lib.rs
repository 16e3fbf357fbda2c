//! xlb's data plane: the only crate that touches BPF programs and maps
//! (aya). Everything it writes is computed by `xlb_core`; everything it
//! reads it hands back as `xlb_core` data.
//!
//! From the bottom up (a module uses only those above it in this list):
//! - `sys`: the raw `bpf()` calls aya does not wrap, behind one small trait
//!   that tests replace;
//! - `error`: `DataplaneError`, `PinError`;
//! - `host`: the interface read from sysfs;
//! - `mode`: how a program is attached;
//! - `mmap`: BPF arrays mapped into memory;
//! - `objects`: the embedded objects; programs and maps taken out of them;
//! - `vipslots`: the VIP slots' owners, and their writes in order;
//! - `conns`: the connection tables (one per family) counted (fill, flows
//!   per backend), walked, written; a layout-5 table's IPv4 flows moved;
//! - `handle`: `Dataplane`, the handle on a loaded balancer's maps;
//! - `reader`: counters, summed over CPUs, and the live tables;
//! - `writer`: a `state::Desired` turned into map updates, atomically per VIP;
//! - `pins`: maps and the XDP link pinned in bpffs, adopted by the next
//!   daemon; attaching under a pinned link;
//! - `loader`: loading the balancer into a `Dataplane`, attaching it;
//! - `trace`: the trace switch written, traced packets read;
//! - `staging`: flows through the real program (BPF_PROG_TEST_RUN), judged;
//! - `decap`: the backend-side decapsulation program.

pub mod conns;
pub mod decap;
mod error;
mod handle;
pub mod host;
mod loader;
mod mmap;
mod mode;
mod objects;
pub mod pins;
mod reader;
pub mod staging;
mod sys;
pub mod trace;
pub mod vipslots;
mod writer;

pub use conns::{
    ConnFlows, ConnKey, ConnTable, Inserted, Moved, SCAN_PERIOD as CONN_SCAN_PERIOD, conn_key,
    key_words, pause_after as conn_scan_pause,
};
pub(crate) use error::map_err;
pub use error::{DataplaneError, PinError};
pub use handle::{Counting, Dataplane};
pub use host::HostInterface;
pub use mode::AttachMode;
pub use objects::{aux_object, balancer_object, decap_object};
pub(crate) use objects::{load_xdp, take};
pub use pins::{Attached, DEFAULT_BPFFS, PinDir, Pinned, Removed, ensure_bpffs, is_bpffs};
pub use trace::{SharedTracer, Tracer};
pub use xlb_core::counters::{ConnScan, CounterSnapshot};
