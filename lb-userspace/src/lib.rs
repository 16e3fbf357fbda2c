//! xlb's controller as a library: the `xlb` binary is a thin CLI over it, and
//! the integration tests drive the same code.
//!
//! Pure logic (config, maglev, state, simulate, status) has no I/O; only
//! `dataplane` touches BPF maps, and `daemon`/`api` do the socket I/O.

pub mod api;
pub mod audit;
pub mod bake;
pub mod caps;
pub mod cli;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod decap;
pub mod detect;
pub mod drift;
pub mod edit;
pub mod health;
pub mod http;
pub mod maglev;
pub mod metrics;
pub mod notify;
pub mod peer;
pub mod plan;
pub mod privileges;
pub mod restart;
pub mod revisions;
pub mod simulate;
pub mod staging;
pub mod state;
pub mod status;
pub mod table;
pub mod top;
