//! xlb's pure logic: what a configuration means and what a change does,
//! computed without I/O. Cargo keeps it pure: this crate depends on no aya,
//! tokio or libc (`cargo tree -e normal -p lb-core`), so everything here is
//! tested without privileges.
//!
//! From the bottom up (a module uses only those above it in this list):
//! - `clock`, `table`, `prng`: the time now, borderless tables, SplitMix64;
//! - `config`: TOML parsed and validated into typed `Config`;
//! - `maglev`: weighted Maglev tables;
//! - `host`, `counters`: plain data read from the host and the kernel;
//! - `state`: the desired data-plane state built from a config (ids, tables);
//! - `detect`, `bake`: observed shares judged against expected ones;
//! - `health`: one backend's check state machine, the monitor, table patches;
//! - `drift`: the kernel's maps compared with the desired state;
//! - `adopt`: a running data plane's maps (read back) recognised as a
//!   config's state, health patches included;
//! - `announce`: which VIP addresses the node announces to its routers;
//! - `plan`: a change's diff, predicted shares, flows moved, safety checks;
//! - `simulate`: the flow hash's pick, as the kernel makes it;
//! - `held`: the flows only one node's connection table keeps on their
//!   backend, selected, cut into records, translated into local ids;
//! - `trace`: `xlb trace` / `xlb capture`: the filter, the kernel's
//!   switch, a traced packet decoded and rendered, the capture's pcapng;
//! - `fleet`: what decides a new flow's backend, fingerprinted and compared
//!   across nodes;
//! - `status`: the status document (the health monitor's views added) and
//!   its rendering;
//! - `revision`: a recorded revision and its rendering;
//! - `edit`: drain/undrain/weight as edits of a config text;
//! - `change`: a candidate change (origin, text, parsed config);
//! - `api`: the control socket's request and response types.

pub mod adopt;
pub mod announce;
pub mod api;
pub mod bake;
pub mod change;
pub mod clock;
pub mod config;
pub mod counters;
pub mod detect;
pub mod drift;
pub mod edit;
pub mod fleet;
pub mod health;
pub mod held;
pub mod host;
pub mod maglev;
pub mod plan;
pub mod prng;
pub mod reload;
pub mod revision;
pub mod rollout;
pub mod simulate;
pub mod state;
pub mod status;
pub mod table;
pub mod trace;
