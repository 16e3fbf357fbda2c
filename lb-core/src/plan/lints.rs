//! The safety checks of a VIP in both configs, against the candidate VIP's
//! `[safety]` limits. Adding or removing a whole VIP is an explicit act of
//! the operator and is not checked.
//!
//! * `capacity_removed`: the capacity of backends active today and not
//!   active (or gone) in the candidate, over today's active capacity, is
//!   above `max_capacity_removed`.
//! * `flows_moved`: `flows_moved_ratio` is above `max_flows_moved`. Not when
//!   the VIP has no active backend today: its packets are dropped, there is
//!   no flow to move. The flows of backends the candidate drains are not
//!   counted: draining means moving them on purpose, and the connection
//!   table keeps their established connections where they are.
//! * `share_growth`: a backend active on both sides, with a share today,
//!   would get more than `max_share_growth` x that share, beyond the growth
//!   that backends leaving give every backend that stays. A drain of one of
//!   three equal backends gives the other two 1.5x their share: that is
//!   capacity leaving, judged by `capacity_removed` (and the others'
//!   headroom by `over_capacity`), not a share that a change of weights
//!   pushes up; judging it here made the verdict flip with the table's
//!   rounding (50.0% is 1.4999x or 1.5001x of 33.3%). A new backend's growth
//!   from 0 is not growth; the capacity check covers it.
//! * `over_capacity`: a backend's predicted share is above
//!   `max_capacity_ratio` x its capacity share, and above its share today.
//!   A backend already over its capacity whose share does not grow is left
//!   alone: the change does not make it worse, and refusing it would block
//!   the change that relieves it.

use std::collections::HashSet;

use crate::config::BackendState;

use super::diff::Side;
use super::types::{Lint, LintKind, VipPlan};

pub(super) fn check(before: Side<'_>, after: Side<'_>, plan: &VipPlan) -> Vec<Lint> {
    let safety = &after.vip.safety;
    let vip = &plan.name;
    let mut lints = Vec::new();
    let lint = |backend: Option<&str>, kind, message, limit, value| Lint {
        vip: vip.clone(),
        backend: backend.map(str::to_string),
        kind,
        message,
        limit,
        value,
    };

    // Capacity that leaves.
    let leaving = Leaving::of(before, after);
    if leaving.capacity_ratio > safety.max_capacity_removed {
        let (ratio, limit) = (leaving.capacity_ratio, safety.max_capacity_removed);
        lints.push(lint(
            None,
            LintKind::CapacityRemoved,
            format!(
                "{} of the active capacity would leave at once: {} (limit {})",
                percent_above(ratio, limit),
                leaving.names.join(", "),
                limit_percent(limit)
            ),
            limit,
            ratio,
        ));
    }

    // Flows that move, but for those of backends being drained.
    let served_today = !before.built.table.slots.is_empty();
    // (Names looked up among the few draining ones, not among every
    // backend for each: that was 4,096 string compares a VIP of 64.)
    let draining: HashSet<&str> = after
        .vip
        .backends
        .iter()
        .filter(|a| a.state == BackendState::Draining)
        .map(|a| a.name.as_str())
        .collect();
    let drained: f64 = before
        .vip
        .backends
        .iter()
        .filter(|b| b.state == BackendState::Active && draining.contains(b.name.as_str()))
        .map(|b| before.built.share(&b.name))
        .sum();
    let moved = (plan.flows_moved_ratio - drained).max(0.0);
    if served_today && moved > safety.max_flows_moved {
        let cause = if before.vip.table_size != after.vip.table_size {
            format!(
                "; table_size {} -> {} gives every flow a new slot",
                before.vip.table_size, after.vip.table_size
            )
        } else if before.built.seed != after.built.seed {
            format!(
                "; hash_seed {} -> {} gives every flow a new hash",
                before.built.seed, after.built.seed
            )
        } else if before.built.hash != after.built.hash {
            format!(
                "; hash {} -> {} gives every flow a new hash",
                before.built.hash, after.built.hash
            )
        } else {
            String::new()
        };
        lints.push(lint(
            None,
            LintKind::FlowsMoved,
            format!(
                "{} of the flows would move to another backend (limit {}){cause}{}",
                percent_above(moved, safety.max_flows_moved),
                limit_percent(safety.max_flows_moved),
                if drained > 0.0 {
                    format!(
                        " (not counting the {:.1}% on backends being drained)",
                        drained * 100.0
                    )
                } else {
                    String::new()
                }
            ),
            safety.max_flows_moved,
            moved,
        ));
    }

    // Each backend's predicted load.
    let active = |state: &Option<String>| state.as_deref() == Some("active");
    let leave = leaving.growth;
    for b in &plan.backends {
        let (now, next) = (b.share_before_ratio, b.share_after_ratio);
        if active(&b.state_before)
            && active(&b.state_after)
            && now > 0.0
            && next > safety.max_share_growth * now * leave
        {
            let beyond = if leave > 1.0 {
                format!(
                    "; {}x of it comes from the backends leaving, the rest from this change",
                    number(leave)
                )
            } else {
                String::new()
            };
            lints.push(lint(
                Some(&b.name),
                LintKind::ShareGrowth,
                format!(
                    "{}: predicted share {} is {}x today's {} (limit {}x{beyond})",
                    b.name,
                    percent(next),
                    number_above(next / now / leave, safety.max_share_growth),
                    percent(now),
                    number(safety.max_share_growth)
                ),
                safety.max_share_growth,
                next / now / leave,
            ));
        }
        let capacity = b.capacity_share_ratio;
        if next > safety.max_capacity_ratio * capacity && next > now {
            let times = if capacity > 0.0 {
                format!(
                    "{}x",
                    number_above(next / capacity, safety.max_capacity_ratio)
                )
            } else {
                "infinitely".to_string()
            };
            lints.push(lint(
                Some(&b.name),
                LintKind::OverCapacity,
                format!(
                    "{}: predicted share {} is {times} its capacity share {} (limit {}x)",
                    b.name,
                    percent(next),
                    percent(capacity),
                    number(safety.max_capacity_ratio)
                ),
                safety.max_capacity_ratio,
                if capacity > 0.0 {
                    next / capacity
                } else {
                    f64::MAX
                },
            ));
        }
    }
    lints
}

/// Backends active today and not active (or gone) in the candidate.
pub(super) struct Leaving {
    /// Their names, sorted.
    names: Vec<String>,
    /// Their capacity over today's active capacity (0 with none active).
    capacity_ratio: f64,
    /// How much every staying backend's share grows because they leave,
    /// weights unchanged: today's active weight over the weight of today's
    /// active backends that stay. 1 when none leaves.
    growth: f64,
}

impl Leaving {
    pub(super) fn of(before: Side<'_>, after: Side<'_>) -> Leaving {
        // A set, not a scan of the candidate's backends for each: that was
        // 4,096 string compares a VIP of 64.
        let active_after: HashSet<&str> = after
            .vip
            .table_backends()
            .map(|a| a.name.as_str())
            .collect();
        let stays = |name: &str| active_after.contains(name);
        let (mut capacity, mut removed, mut weight, mut staying) = (0.0, 0.0, 0.0, 0.0);
        let mut names = Vec::new();
        for b in before.vip.table_backends() {
            capacity += b.capacity;
            weight += b.weight as f64;
            if stays(&b.name) {
                staying += b.weight as f64;
            } else {
                removed += b.capacity;
                names.push(b.name.clone());
            }
        }
        names.sort_unstable();
        Leaving {
            names,
            capacity_ratio: if capacity > 0.0 {
                removed / capacity
            } else {
                0.0
            },
            growth: if staying > 0.0 { weight / staying } else { 1.0 },
        }
    }
}

/// What the plan says of backends leaving, when they leave (not a
/// refusal): who takes their share, and which checks judge it.
pub(super) fn leaving_note(before: Side<'_>, after: Side<'_>) -> Option<String> {
    let leaving = Leaving::of(before, after);
    if leaving.growth <= 1.0 {
        return None;
    }
    let safety = &after.vip.safety;
    Some(format!(
        "{} {}: every staying backend's share grows {}x; judged by max_capacity_removed \
         ({} of the capacity leaves, limit {}) and max_capacity_ratio (limit {}x), not \
         max_share_growth",
        leaving.names.join(", "),
        if leaving.names.len() == 1 {
            "leaves"
        } else {
            "leave"
        },
        number(leaving.growth),
        percent(leaving.capacity_ratio),
        limit_percent(safety.max_capacity_removed),
        number(safety.max_capacity_ratio)
    ))
}

/// `41.2%`: a share or a fraction, one decimal.
pub(super) fn percent(ratio: f64) -> String {
    Percent(ratio).to_string()
}

/// A ratio as [`percent`] writes it, written where it goes.
pub(super) struct Percent(pub f64);

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1}%", self.0 * 100.0)
    }
}

/// `30%`, `0.1%`: a limit as written, without float noise.
fn limit_percent(limit: f64) -> String {
    number(limit * 100.0) + "%"
}

/// `ratio` as a percentage with as many decimals as it takes to show it
/// above `limit` (30.04% against a 30% limit is not "30.0%").
fn percent_above(ratio: f64, limit: f64) -> String {
    let d = decimals_above(ratio * 100.0, limit * 100.0);
    format!("{:.*}%", d, ratio * 100.0)
}

/// `1.5`, `1000`: a limit as written, without float noise.
fn number(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `x` with as many decimals as it takes to show it above `limit`, at least
/// two: `4.12`, `1.501`.
fn number_above(x: f64, limit: f64) -> String {
    format!("{:.*}", decimals_above(x, limit).max(2), x)
}

/// The fewest decimals (1 to 4) at which `x` rounds above `limit`.
fn decimals_above(x: f64, limit: f64) -> usize {
    (1..=4)
        .find(|&d| {
            let scale = 10f64.powi(d as i32);
            (x * scale).round() > (limit * scale).round()
        })
        .unwrap_or(4)
}
