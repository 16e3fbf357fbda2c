//! Configuration: TOML in, a validated `Config` out, or an error naming the
//! file, line, column, field and reason. Pure: no I/O beyond reading the file.

mod error;
mod forwarding;
#[cfg(test)]
mod forwarding_tests;
mod health;
mod model;
#[cfg(test)]
mod tests;
mod types;
mod validate;

pub use error::ConfigError;
pub use health::{AllDown, CheckKind, HealthCheck};
pub use types::*;
pub use validate::MAX_WEIGHT;

use std::path::Path;

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Validate config text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    validate::parse_and_validate(text, file)
}
