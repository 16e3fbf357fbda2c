//! Configuration: TOML in, a validated `Config` out, or an error naming the
//! file, line, column, field and reason. Pure: no I/O beyond reading the file.
//!
//! The files, each using only those below it (`cargo xtask modcheck`); this
//! one (`load`, `parse`) is above them all:
//! - `validate`: text to `Config`: parses the TOML, reads it into the raw
//!   model and runs the rules: its own (top level, VIPs, backends,
//!   `[imbalance]`, `[safety]`) and those of `forwarding` and `health`.
//! - `forwarding`, `health`: the rules of the forwarding settings and of
//!   the health checks, functions of a `Checker` from raw values to typed.
//! - `model`: the file's shape, every value with its span (`RawConfig`).
//! - `check`: what the model and every rule use: `Sp`, `Issues`, field paths, durations,
//!   lines and the `Checker`.
//! - `incremental`: a text parsed against the one applied before it, only
//!   its changed VIPs parsed and validated (`parse_against`; uses `validate`).
//! - `keys`: which keys change live and which need a restart (one table).
//! - `warnings`: what works but is likely a mistake (uses `types` only).
//! - `types`: the validated `Config`, health checks included; `error`:
//!   `ConfigError`. Neither uses another file of `config`.

mod check;
mod error;
mod forwarding;
#[cfg(test)]
mod forwarding_tests;
mod health;
mod incremental;
pub mod keys;
mod model;
#[cfg(test)]
mod tests;
mod types;
mod validate;
pub mod warnings;

pub use error::ConfigError;
pub use incremental::{TextCut, parse_against, parse_cut};
pub use types::*;
pub use validate::MAX_WEIGHT;

/// xxh64 (seed 0) of one VIP's JSON form: a plan's `config_hash` is made
/// of these, VIP by VIP (`plan::config_hash`).
pub fn vip_hash(vip: &Vip) -> u64 {
    let json = serde_json::to_vec(vip).expect("a Vip always serializes");
    xxhash_rust::xxh64::xxh64(&json, 0)
}

use std::path::Path;

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Validate config text; `file` names it in errors. A text of many VIPs
/// is parsed in parts on every core where its structure allows
/// (`incremental`); the result, or the error, is the whole parse's.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    parse_against(text, file, None)
}
