//! The only module that touches BPF maps and programs.
//!
//! - `loader`: the embedded objects, loading and attaching;
//! - `writer`: turning a `state::Desired` into map updates, atomically per VIP;
//! - `reader`: counters, summed over CPUs, and the live tables;
//! - `mmap`: BPF arrays mapped into memory.

mod host;
mod loader;
mod mmap;
mod reader;
mod writer;

pub use host::HostInterface;
pub use loader::{Dataplane, DataplaneError, aux_object, balancer_object};
pub use reader::CounterSnapshot;
