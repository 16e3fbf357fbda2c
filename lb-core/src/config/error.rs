//! What can go wrong with a config file: it cannot be read, or it is not a
//! valid xlb config. An invalid file reports every problem found in it, each
//! as `file:line:column: field: reason`, so one edit-validate round fixes them
//! all.

use std::fmt;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, permissions, not UTF-8).
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid config: TOML syntax, an unknown
    /// key, a wrong type or a value that breaks a rule. Never empty.
    #[error("{}", render(.file, .problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

/// One thing wrong in a config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// 1-based line of the offending value (or of the key or table, for
    /// missing fields and unknown keys).
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// Path of the field: `interface`, `vip[1].port`, `vip[0].backend[2].weight`
    /// (0-based indices in file order); `toml` for a syntax error.
    pub field: String,
    /// What is wrong and, where it helps, how to fix it.
    pub reason: String,
}

impl ConfigError {
    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            ConfigError::Read { file, .. } | ConfigError::Invalid { file, .. } => file,
        }
    }

    /// The problems of an invalid file; empty for a read error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

impl fmt::Display for Problem {
    /// `line:column: field: reason` (the file name is added by `ConfigError`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.line, self.column, self.field, self.reason
        )
    }
}

fn render(file: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{file}:{p}"))
        .collect::<Vec<_>>()
        .join("\n")
}
