//! `xlb drain`, `xlb undrain` and `xlb weight`: one key of one backend
//! changed in the live revision's config text, which then goes through the
//! same plan, safety checks, apply and revision record as a file would, so
//! the recorded config never drifts from what runs.
//!
//! This module is the pure part: the edit of the text (with `toml_edit`,
//! which keeps every comment, blank line, key order and quoting style of the
//! file; only the edited value changes, or one `key = value` line is added
//! at the end of the backend's table). `live` runs an edit in the daemon,
//! `command` is the CLI side.

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use toml_edit::{DocumentMut, Item, TableLike, Value};

use crate::config::MAX_WEIGHT;

/// What to do to the backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// `state = "draining"`: out of the Maglev table, its flows kept.
    Drain,
    /// `state = "active"`: back into the table.
    Undrain,
    /// `weight = N`.
    Weight { weight: u32 },
}

/// One edit: a backend of a VIP, both by name, and what to do to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    pub vip: String,
    pub backend: String,
    pub change: Change,
}

impl Edit {
    /// The command line that asks for it: `drain web b2`, `weight web b2 4`
    /// (the revision's kind in `xlb history`).
    pub fn command(&self) -> String {
        match &self.change {
            Change::Drain => format!("drain {} {}", self.vip, self.backend),
            Change::Undrain => format!("undrain {} {}", self.vip, self.backend),
            Change::Weight { weight } => format!("weight {} {} {weight}", self.vip, self.backend),
        }
    }
}

/// Why an edit cannot be made; all of them are the operator's to fix (exit 2).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error("no config applied yet: there is nothing to edit (`xlb apply` a config first)")]
    NoConfig,
    /// The live text does not parse as TOML (it was validated when it was
    /// applied, so this is not expected).
    #[error("the live config (revision {revision}) cannot be edited: {reason}")]
    Unreadable { revision: u64, reason: String },
    #[error("unknown VIP {vip:?}: the live config has {known}")]
    UnknownVip { vip: String, known: String },
    #[error("VIP {vip}: unknown backend {backend:?}: it has {known}")]
    UnknownBackend {
        vip: String,
        backend: String,
        known: String,
    },
    #[error(
        "weight {weight} is out of range: 1..={max} (weight 0 is not a state: `xlb drain` takes a \
         backend out and keeps its flows)"
    )]
    WeightOutOfRange { weight: u32, max: u32 },
    #[error("VIP {vip}: backend {backend} is already draining (`xlb undrain` puts it back)")]
    AlreadyDraining { vip: String, backend: String },
    #[error(
        "VIP {vip}: backend {backend} is disabled, not active: it takes no flows to drain \
         (change its state in the config file)"
    )]
    DrainDisabled { vip: String, backend: String },
    #[error("VIP {vip}: backend {backend} is not draining (its state is {state:?})")]
    NotDraining {
        vip: String,
        backend: String,
        state: String,
    },
    #[error("VIP {vip}: backend {backend} has weight {weight} already")]
    SameWeight {
        vip: String,
        backend: String,
        weight: u32,
    },
}

/// `"a", "b"` or `no VIPs`-like text for an error message.
fn list(names: &[String], none: &str) -> String {
    if names.is_empty() {
        return none.to_string();
    }
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table of an array of tables (`[[vip]]`), or an inline table of an
/// array (`vip = [{ .. }]`).
struct Entry<'a> {
    table: &'a mut dyn TableLike,
    inline: bool,
}

/// The tables of an array of tables or of an array of inline tables;
/// nothing for anything else.
fn entries(item: Option<&mut Item>) -> Vec<Entry<'_>> {
    match item {
        Some(Item::ArrayOfTables(a)) => a
            .iter_mut()
            .map(|t| Entry {
                table: t as &mut dyn TableLike,
                inline: false,
            })
            .collect(),
        Some(Item::Value(Value::Array(a))) => a
            .iter_mut()
            .filter_map(Value::as_inline_table_mut)
            .map(|t| Entry {
                table: t as &mut dyn TableLike,
                inline: true,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The entry named `name` out of `entries`, or the names there are.
fn find<'a>(entries: Vec<Entry<'a>>, name: &str) -> Result<Entry<'a>, Vec<String>> {
    let name_of = |e: &Entry<'_>| {
        e.table
            .get("name")
            .and_then(Item::as_str)
            .map(str::to_string)
    };
    let names: Vec<String> = entries.iter().filter_map(name_of).collect();
    entries
        .into_iter()
        .find(|e| name_of(e).as_deref() == Some(name))
        .ok_or(names)
}

/// Set `key` to `value`: in place when the key is there (its spacing and
/// trailing comment kept), else added as the table's last key, indented
/// like the key before it (in an inline table: before the space that
/// closed it).
fn set(entry: Entry<'_>, key: &str, value: Value) {
    let table = entry.table;
    if let Some(Item::Value(old)) = table.get_mut(key) {
        let decor = old.decor().clone();
        *old = value;
        *old.decor_mut() = decor;
        return;
    }
    // The indentation of the last key: what its prefix (comments above it
    // included) has after its last line break.
    let indent = table
        .iter()
        .last()
        .and_then(|(last, _)| table.key(last))
        .and_then(|k| k.leaf_decor().prefix())
        .and_then(|p| p.as_str())
        .map(|p| p.rsplit('\n').next().unwrap_or("").to_string());
    if entry.inline
        && let Some((_, Item::Value(last))) = table.iter_mut().last()
        && last
            .decor()
            .suffix()
            .and_then(|s| s.as_str())
            .is_some_and(|s| s.trim().is_empty())
    {
        last.decor_mut().set_suffix("");
    }
    table.insert(key, Item::Value(value));
    if let (Some(indent), Some(mut k)) = (indent, table.key_mut(key))
        && indent.chars().all(|c| c == ' ' || c == '\t')
    {
        k.leaf_decor_mut().set_prefix(indent);
    }
}

/// `text` (a validated config, the live revision's) with `edit` made, and
/// nothing else changed. Refuses an edit that changes nothing (already
/// draining, the same weight) or does not apply (an unknown name, a weight
/// out of range, undraining a backend that is not draining).
pub fn edit_config(text: &str, revision: u64, edit: &Edit) -> Result<String, EditError> {
    if let Change::Weight { weight } = edit.change
        && !(1..=MAX_WEIGHT).contains(&weight)
    {
        return Err(EditError::WeightOutOfRange {
            weight,
            max: MAX_WEIGHT,
        });
    }
    let mut doc: DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| EditError::Unreadable {
                revision,
                reason: e.to_string(),
            })?;
    let vip =
        find(entries(doc.get_mut("vip")), &edit.vip).map_err(|known| EditError::UnknownVip {
            vip: edit.vip.clone(),
            known: list(&known, "no VIPs"),
        })?;
    let backend = find(entries(vip.table.get_mut("backend")), &edit.backend).map_err(|known| {
        EditError::UnknownBackend {
            vip: edit.vip.clone(),
            backend: edit.backend.clone(),
            known: list(&known, "no backends"),
        }
    })?;
    let (vip_name, backend_name) = (edit.vip.clone(), edit.backend.clone());
    // Defaults as the config has them: active, weight 1.
    let state = backend
        .table
        .get("state")
        .and_then(Item::as_str)
        .unwrap_or("active")
        .to_string();
    match edit.change {
        Change::Drain => match state.as_str() {
            "active" => set(backend, "state", Value::from("draining")),
            "draining" => {
                return Err(EditError::AlreadyDraining {
                    vip: vip_name,
                    backend: backend_name,
                });
            }
            _ => {
                return Err(EditError::DrainDisabled {
                    vip: vip_name,
                    backend: backend_name,
                });
            }
        },
        Change::Undrain => {
            if state != "draining" {
                return Err(EditError::NotDraining {
                    vip: vip_name,
                    backend: backend_name,
                    state,
                });
            }
            set(backend, "state", Value::from("active"));
        }
        Change::Weight { weight } => {
            let now = backend
                .table
                .get("weight")
                .and_then(Item::as_integer)
                .unwrap_or(1);
            if now == i64::from(weight) {
                return Err(EditError::SameWeight {
                    vip: vip_name,
                    backend: backend_name,
                    weight,
                });
            }
            set(backend, "weight", Value::from(i64::from(weight)));
        }
    }
    Ok(doc.to_string())
}
