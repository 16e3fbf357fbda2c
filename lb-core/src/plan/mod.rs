//! `xlb plan`: what a change of config would do to the traffic split, before
//! it is applied, and whether a safety check refuses it. Pure: two validated
//! configs in, a `Plan` out.
//!
//! The predicted split is the split of the Maglev tables the candidate would
//! build, exactly as the daemon builds them (each config's own `hash_seed`
//! and `table_size`, the active backends), compared with the tables of the
//! config applied today:
//!
//! * `types`: the `Plan` document (JSON: `xlb plan -o json`);
//! * `flows`: the tables, and the fraction of flows that change backend;
//! * `diff`: per VIP, the backends side by side and the diff lines;
//! * `lints`: the `[safety]` checks;
//! * `render`: the human table;
//! * `held`: the live flows the change leaves held by the connection table
//!   (second chance), filled in by the daemon, which reads the table.

mod diff;
mod flows;
mod held;
mod lints;
mod render;
#[cfg(test)]
mod tests;
mod types;

pub use held::{PlanHeld, held_after};
pub use types::*;

use rayon::prelude::*;
use xxhash_rust::xxh64::xxh64;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub use crate::config::vip_hash;
use crate::config::{Config, Vip, same_vip};
use crate::maglev::MaglevTable;
use crate::state::{self, Desired, DesiredVip, Prebuilt, same_table_inputs};

use diff::Side;
use flows::Built;

/// One side's tables, VIP by VIP: `taken` where Some, else built where
/// `to_build` is Some (each distinct table once: `state::vip_tables`),
/// else None.
fn built_sides(
    vips: &[Arc<Vip>],
    taken: impl Iterator<Item = Option<MaglevTable>>,
    to_build: &[Option<&Vip>],
    seed: u32,
    which: &'static str,
) -> Result<Vec<Option<Built>>, PlanError> {
    let fresh = state::vip_tables(to_build, seed);
    let tables: Vec<Option<MaglevTable>> = taken
        .zip(fresh)
        .zip(vips)
        .map(|((taken, fresh), v)| match (taken, fresh) {
            (Some(t), _) => Ok(Some(t)),
            (None, Some(built)) => built.map(Some).map_err(|source| PlanError::Maglev {
                which,
                vip: v.name.clone(),
                source,
            }),
            (None, None) => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    Ok(tables
        .into_par_iter()
        .zip(vips)
        .map(|(table, v)| table.map(|t| Built::from_table(t, seed, v.hash)))
        .collect())
}

/// Plan the change from `base` (applied today) to `candidate`.
/// `base_revision` is left unset for the caller to fill in.
pub fn plan(base: &Config, candidate: &Config) -> Result<Plan, PlanError> {
    plan_over(base, None, candidate)
}

/// [`plan`], with the tables of `base` taken from `applied` (the state the
/// daemon built for it) where their inputs are the same, instead of built
/// again. A candidate VIP whose table inputs and hash mode are those of its
/// base VIP shares the base's table: only the tables of changed VIPs are
/// built. When `base` is `applied`'s own config, the hashes of its VIPs
/// are `applied`'s (`DesiredVip::config_hash`), not computed again.
pub fn plan_over(
    base: &Config,
    applied: Option<&Desired>,
    candidate: &Config,
) -> Result<Plan, PlanError> {
    plan_keeping_tables(base, applied, candidate).map(|(plan, _)| plan)
}

/// [`plan_over`], and the candidate tables it built, for the apply of this
/// very candidate (`state::desired_reusing` takes them instead of building
/// them again: a change of every VIP builds each table once).
pub fn plan_keeping_tables(
    base: &Config,
    applied: Option<&Desired>,
    candidate: &Config,
) -> Result<(Plan, Prebuilt), PlanError> {
    let applied_by_name: HashMap<&str, &DesiredVip> = applied
        .map(|d| {
            d.vips
                .iter()
                .map(|v| (v.config.name.as_str(), &**v))
                .collect()
        })
        .unwrap_or_default();
    let applied_seed = applied.map_or(0, |d| d.config.hash_seed);
    // The applied state of `base` itself: its VIPs' hashes are known.
    let applied_base = applied.filter(|d| std::ptr::eq(&d.config, base));
    let base_index: HashMap<&str, usize> = base
        .vips
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    // A candidate VIP identical to its base VIP, under the same seed: no
    // change, and nothing to build or diff (no safety check can fire on
    // it: its shares and flows stay as they are).
    let same_seed = base.hash_seed == candidate.hash_seed;
    let identical = |v: &Arc<Vip>| {
        same_seed
            && base_index
                .get(v.name.as_str())
                .is_some_and(|&i| same_vip(&base.vips[i], v))
    };
    let candidate_identical: Vec<bool> = candidate.vips.iter().map(identical).collect();
    let base_needed: HashSet<&str> = candidate
        .vips
        .iter()
        .zip(&candidate_identical)
        .filter(|(_, same)| !**same)
        .map(|(v, _)| v.name.as_str())
        .collect();
    let candidate_names: HashSet<&str> = candidate.vips.iter().map(|v| v.name.as_str()).collect();
    // The base's tables of the VIPs that change or leave: the applied ones
    // where they are the same, the others built (on every core).
    let needed: Vec<bool> = base
        .vips
        .iter()
        .map(|v| {
            base_needed.contains(v.name.as_str()) || !candidate_names.contains(v.name.as_str())
        })
        .collect();
    let applied_tables: Vec<Option<&DesiredVip>> = base
        .vips
        .iter()
        .zip(&needed)
        .map(|(v, &needed)| {
            applied_by_name
                .get(v.name.as_str())
                .filter(|a| needed && same_table_inputs(&a.config, applied_seed, v, base.hash_seed))
                .copied()
        })
        .collect();
    let to_build: Vec<Option<&Vip>> = base
        .vips
        .iter()
        .zip(&needed)
        .zip(&applied_tables)
        .map(|((v, &needed), applied)| (needed && applied.is_none()).then_some(&**v))
        .collect();
    let base_built = built_sides(
        &base.vips,
        applied_tables.iter().map(|a| a.map(|a| a.table.clone())),
        &to_build,
        base.hash_seed,
        "base",
    )?;
    let base_side = |name: &str| {
        base_index.get(name).and_then(|&i| {
            base_built[i].as_ref().map(|built| Side {
                vip: &base.vips[i],
                built,
            })
        })
    };
    // None: the same table as the base VIP of that name (or an identical
    // VIP, which needs none).
    let to_build: Vec<Option<&Vip>> = candidate
        .vips
        .iter()
        .zip(&candidate_identical)
        .map(|(v, &same)| {
            let shared = same
                || base_side(&v.name).is_some_and(|b| {
                    b.vip.hash == v.hash
                        && same_table_inputs(b.vip, base.hash_seed, v, candidate.hash_seed)
                });
            (!shared).then_some(&**v)
        })
        .collect();
    let candidate_built = built_sides(
        &candidate.vips,
        std::iter::repeat_n(None, candidate.vips.len()),
        &to_build,
        candidate.hash_seed,
        "candidate",
    )?;

    // Each VIP's part of the plan and its checks, on every core (a change
    // of every VIP diffs 64,000 backends and compares 1,000 tables); in
    // the candidate's order.
    let parts: Vec<(VipPlan, Vec<Lint>)> = candidate
        .vips
        .par_iter()
        .zip(&candidate_built)
        .zip(&candidate_identical)
        .map(|((vip, built), &same)| {
            if same {
                return (VipPlan::identical(&vip.name), Vec::new());
            }
            let before = base_side(&vip.name);
            let built = match (built, before) {
                (Some(b), _) => b,
                (None, Some(before)) => before.built,
                (None, None) => unreachable!("a shared table has a base VIP"),
            };
            let after = Side { vip, built };
            let mut vip_plan = diff::vip_plan(before, Some(after));
            let mut found = Vec::new();
            if let Some(before) = before {
                found = lints::check(before, after, &vip_plan);
                vip_plan.notes.extend(lints::leaving_note(before, after));
            }
            (vip_plan, found)
        })
        .collect();
    let mut vips = Vec::with_capacity(parts.len());
    let mut lints = Vec::new();
    for (vip_plan, found) in parts {
        vips.push(vip_plan);
        lints.extend(found);
    }
    for (vip, built) in base.vips.iter().zip(&base_built) {
        if let Some(built) = built
            && !candidate_names.contains(vip.name.as_str())
        {
            vips.push(diff::vip_plan(Some(Side { vip, built }), None));
        }
    }

    let details = diff::config_details(base, candidate);
    let changed = !details.is_empty() || vips.iter().any(|v| v.change != Change::Unchanged);
    let plan = Plan {
        schema_version: SCHEMA_VERSION,
        base_revision: None,
        // The applied state lists the base's VIPs in order.
        base_config_hash: config_hash_with(base, |i| applied_base.map(|d| d.vips[i].config_hash)),
        // A VIP identical to the base's has the applied VIP's hash.
        config_hash: config_hash_with(candidate, |i| {
            let name = candidate.vips[i].name.as_str();
            (applied_base.is_some() && candidate_identical[i])
                .then(|| applied_by_name.get(name).map(|a| a.config_hash))
                .flatten()
        }),
        vips,
        details,
        refused: !lints.is_empty(),
        lints,
        restart_only: crate::config::keys::restart_changes(base, candidate),
        warnings: crate::config::warnings::warnings(candidate),
        changed,
        held: None,
    };
    let tables = candidate
        .vips
        .iter()
        .zip(candidate_built)
        .filter_map(|(v, built)| built.map(|b| (v.name.clone(), (v.clone(), b.table))))
        .collect();
    let prebuilt = Prebuilt {
        seed: candidate.hash_seed,
        tables,
    };
    Ok((plan, prebuilt))
}

/// What identifies a config in a plan, as 16 hex digits: xxh64 (seed 0) of
/// the JSON form (serde_json) of the config without its VIPs, followed by
/// each VIP's `vip_hash` (8 bytes, little-endian) in order. VIP by VIP, so
/// a daemon hashes again only the VIPs a change touched
/// (`DesiredVip::config_hash`).
pub fn config_hash(config: &Config) -> String {
    config_hash_with(config, |_| None)
}

/// [`config_hash`], taking the hash of VIP `i` from `known(i)` where it
/// gives one (the others are computed, on every core).
fn config_hash_with(config: &Config, known: impl Fn(usize) -> Option<u64> + Sync) -> String {
    let head = Config {
        interface: config.interface.clone(),
        hash_seed: config.hash_seed,
        metrics_address: config.metrics_address,
        conn_table_size: config.conn_table_size,
        icmp_echo: config.icmp_echo,
        unhandled: config.unhandled,
        announce: config.announce,
        tunnel: config.tunnel.clone(),
        vips: Vec::new(),
    };
    let mut bytes = serde_json::to_vec(&head).expect("a Config always serializes");
    let vips: Vec<u64> = config
        .vips
        .par_iter()
        .enumerate()
        .map(|(i, v)| known(i).unwrap_or_else(|| vip_hash(v)))
        .collect();
    for h in vips {
        bytes.extend_from_slice(&h.to_le_bytes());
    }
    format!("{:016x}", xxh64(&bytes, 0))
}

impl Plan {
    /// The plan as a revision records it: the whole document but for the
    /// VIPs it leaves unchanged, which are only counted
    /// (`unchanged_vips`). At 1,000 VIPs x 64 backends a change of one VIP
    /// records one VIP's backends, not 64,000 (docs/RESTART.md).
    pub fn recorded(&self) -> RecordedPlan {
        let changed: Vec<&VipPlan> = self
            .vips
            .iter()
            .filter(|v| v.change != Change::Unchanged)
            .collect();
        let unchanged = self.vips.len() - changed.len();
        let mut head =
            serde_json::to_value(self.clone_without_vips()).expect("a Plan always serializes");
        if let Some(fields) = head.as_object_mut() {
            fields.remove("vips");
        }
        /// The plan's other fields, then the changed VIPs written straight
        /// to JSON (no `Value` of 64,000 backends in between).
        #[derive(serde::Serialize)]
        struct Recorded<'a> {
            #[serde(flatten)]
            head: serde_json::Value,
            vips: Vec<&'a VipPlan>,
            unchanged_vips: usize,
        }
        RecordedPlan::of(&Recorded {
            head,
            vips: changed,
            unchanged_vips: unchanged,
        })
        .expect("a Plan always serializes")
    }

    /// The plan without its VIPs (cheap to clone at any size).
    fn clone_without_vips(&self) -> Plan {
        Plan {
            schema_version: self.schema_version,
            base_revision: self.base_revision,
            base_config_hash: self.base_config_hash.clone(),
            config_hash: self.config_hash.clone(),
            vips: Vec::new(),
            details: self.details.clone(),
            lints: self.lints.clone(),
            refused: self.refused,
            restart_only: self.restart_only.clone(),
            warnings: self.warnings.clone(),
            changed: self.changed,
            held: self.held.clone(),
        }
    }
}

/// A plan document as recorded with a revision: its JSON text, kept as it
/// was written (serde_json's `RawValue`). At 1,000 VIPs x 64 backends a
/// change of every VIP records 64,000 backends: made into a
/// `serde_json::Value` tree and then written, it cost a fifth of the
/// apply; as text it is written once and passed through (`xlb show`,
/// the store) without being parsed. Equal when its JSON texts are.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
#[serde(transparent)]
pub struct RecordedPlan(Box<serde_json::value::RawValue>);

impl RecordedPlan {
    /// `document` as JSON.
    pub fn of(document: &impl serde::Serialize) -> serde_json::Result<RecordedPlan> {
        serde_json::value::to_raw_value(document).map(RecordedPlan)
    }

    /// Its JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// Parsed, for a reader of its fields (Null if it does not parse).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.json()).unwrap_or_default()
    }
}

impl From<serde_json::Value> for RecordedPlan {
    fn from(value: serde_json::Value) -> Self {
        RecordedPlan::of(&value).expect("a Value always serializes")
    }
}

impl PartialEq for RecordedPlan {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}
