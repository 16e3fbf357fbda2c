//! The `xlb` binary as a library (the integration tests drive the same
//! code): the command line and the daemon, over `xlb_core` (pure logic) and
//! `xlb_dataplane` (the BPF programs and maps).
//!
//! - `user`: who runs this process;
//! - `build_info`: which build this is (`xlb version`, and the daemon's answer);
//! - `lock`: one daemon per state directory and per pin directory;
//! - `memory`: freed memory given back to the system when large work ends;
//! - `store`: the revision store on disk (used by the daemon, and read-only
//!   by `xlb plan --revision`);
//! - `daemon`: `xlb run`: the controller, the control socket, HTTP and
//!   metrics, health probes, restarts and reloads;
//! - `cli`: every subcommand; the client of the control socket.
//!
//! `cli` may use `daemon` (`xlb run` starts it); `daemon` never uses `cli`.

pub mod build_info;
pub mod cli;
pub mod daemon;
pub mod lock;
pub mod memory;
pub mod store;
pub mod user;
