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
//! * `render`: the human table.

mod diff;
mod flows;
mod lints;
mod render;
#[cfg(test)]
mod tests;
mod types;

pub use types::*;

use xxhash_rust::xxh64::xxh64;

use crate::config::Config;

use diff::Side;
use flows::Built;

/// Plan the change from `base` (applied today) to `candidate`.
/// `base_revision` is left unset for the caller to fill in.
pub fn plan(base: &Config, candidate: &Config) -> Result<Plan, PlanError> {
    let built = |which: &'static str, config: &Config| {
        config
            .vips
            .iter()
            .map(|v| {
                flows::build(v, config.hash_seed).map_err(|source| PlanError::Maglev {
                    which,
                    vip: v.name.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<Built>, _>>()
    };
    let base_built = built("base", base)?;
    let candidate_built = built("candidate", candidate)?;
    let base_side = |name: &str| {
        base.vips
            .iter()
            .zip(&base_built)
            .find(|(v, _)| v.name == name)
            .map(|(vip, built)| Side { vip, built })
    };

    let mut vips = Vec::new();
    let mut lints = Vec::new();
    for (vip, built) in candidate.vips.iter().zip(&candidate_built) {
        let after = Side { vip, built };
        let before = base_side(&vip.name);
        let mut vip_plan = diff::vip_plan(before, Some(after));
        if let Some(before) = before {
            lints.extend(lints::check(before, after, &vip_plan));
            vip_plan.notes.extend(lints::leaving_note(before, after));
        }
        vips.push(vip_plan);
    }
    for (vip, built) in base.vips.iter().zip(&base_built) {
        if !candidate.vips.iter().any(|c| c.name == vip.name) {
            vips.push(diff::vip_plan(Some(Side { vip, built }), None));
        }
    }

    let details = diff::config_details(base, candidate);
    let changed = !details.is_empty() || vips.iter().any(|v| v.change != Change::Unchanged);
    Ok(Plan {
        schema_version: SCHEMA_VERSION,
        base_revision: None,
        base_config_hash: config_hash(base),
        config_hash: config_hash(candidate),
        vips,
        details,
        refused: !lints.is_empty(),
        lints,
        restart_only: crate::config::keys::restart_changes(base, candidate),
        warnings: crate::config::warnings::warnings(candidate),
        changed,
    })
}

/// xxh64 (seed 0) of the config's JSON form (serde_json of `Config`), as 16
/// hex digits: what identifies a config in a plan.
pub fn config_hash(config: &Config) -> String {
    let json = serde_json::to_vec(config).expect("a Config always serializes");
    format!("{:016x}", xxh64(&json, 0))
}
