//! xlb's controller as a library: the `xlb` binary is a thin CLI over it, and
//! the integration tests drive the same code.

pub mod config;
pub mod dataplane;
pub mod maglev;
pub mod simulate;
pub mod state;
