//! A fleet rollout, decided: the records the fleet store keeps (a fleet
//! revision, the rollout, each node's report), the waves a rollout goes
//! through, what each node should serve now, and the rollout's next state
//! from what the nodes report. No I/O: lb-fleet keeps these records in
//! etcd, the daemon's fleet agent and `xlb fleet` act on the answers.
//!
//! The state machine (docs/FLEET.md):
//! - `running`: the nodes of waves `0..=wave` serve `to`, the others `from`.
//!   When every reporting node of the current wave reports `baked` for `to`
//!   (the canary must report), the next wave starts; after the last one the
//!   rollout is `done` and the fleet's desired revision becomes `to`. Any
//!   `refused` or `rolled_back` for `to` turns it `rolling_back`.
//! - `rolling_back`: every node's target is `from`; `rolled_back` when no
//!   reporting node serves `to` any more and none is still baking it.
//! - `done`, `rolled_back`, `halted`: over; every node's target is the
//!   fleet's desired revision.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Bump when a record's form changes incompatibly.
pub const SCHEMA_VERSION: u32 = 1;

/// A fleet revision: one config text every node may serve. Immutable once
/// recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetRevision {
    pub number: u64,
    /// The file the text came from, named in the nodes' errors.
    pub file: String,
    pub config_text: String,
    pub user: String,
    pub message: Option<String>,
    pub created_at_unix_seconds: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    Done,
    RollingBack,
    RolledBack,
    /// Stopped by an operator (`xlb fleet rollback` of a running rollout
    /// that changed nothing yet); nodes follow the desired revision.
    Halted,
}

impl RolloutState {
    /// The rollout still moves nodes.
    pub fn active(self) -> bool {
        matches!(self, Self::Running | Self::RollingBack)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::RollingBack => "rolling_back",
            Self::RolledBack => "rolled_back",
            Self::Halted => "halted",
        }
    }
}

/// The rollout in progress, or the last one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: u64,
    /// The fleet revision the nodes served before (None: the fleet's first).
    pub from: Option<u64>,
    pub to: u64,
    /// Node names; wave 0 is the canary.
    pub waves: Vec<Vec<String>>,
    /// The wave being applied and baked now.
    pub wave: usize,
    pub state: RolloutState,
    pub reason: Option<String>,
    /// The nodes apply `to` past their plan's safety checks.
    pub force: bool,
    pub user: String,
    pub started_at_unix_seconds: f64,
}

/// What became of a fleet revision a node applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BakeOutcome {
    Baking,
    Baked,
    /// Applied without a bake (a return to an earlier fleet revision).
    Applied,
    /// The node's bake rolled it back.
    RolledBack,
    /// The node's plan or safety checks refused it, or it failed to apply.
    Refused,
}

impl BakeOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Baking => "baking",
            Self::Baked => "baked",
            Self::Applied => "applied",
            Self::RolledBack => "rolled_back",
            Self::Refused => "refused",
        }
    }

    /// The fleet revision is in force on the node for good.
    pub fn settled(self) -> bool {
        matches!(self, Self::Baked | Self::Applied)
    }

    /// The node turned the fleet revision down.
    pub fn failed(self) -> bool {
        matches!(self, Self::RolledBack | Self::Refused)
    }
}

/// The last fleet revision a node applied and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeOutcome {
    pub revision: u64,
    pub outcome: BakeOutcome,
    pub reason: Option<String>,
}

/// A node's report, kept under its lease (it expires with the node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    /// The node's own live revision number.
    pub live_revision: u64,
    /// The fleet revision it serves (None: none yet, its own config).
    pub serving: Option<u64>,
    /// What decides new flows on the node (xlb_core::fleet), all VIPs.
    pub fingerprint: String,
    pub last: Option<NodeOutcome>,
    /// Its announce state in one line ("announcing 2 VIPs", "off").
    pub announce: String,
    /// A local change made outside the fleet since its last fleet apply
    /// (`xlb apply`/`drain`/`weight` on the node): what it was.
    pub diverged: Option<String>,
    /// The node's live config text while it is diverged (`xlb fleet plan`
    /// plans against it).
    #[serde(default)]
    pub diverged_config: Option<String>,
    pub updated_at_unix_seconds: f64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error(
        "no nodes report to the fleet: a rollout needs at least one (is `xlb run --fleet` running?)"
    )]
    NoNodes,
    #[error("--canary {0}: no such node reports to the fleet (nodes: {1})")]
    UnknownCanary(String, String),
    #[error("--wave-size must be at least 1")]
    ZeroWaveSize,
}

/// The waves of a rollout over `nodes`: the canary (`canary`, or the first
/// node by name) alone, then the rest by name in waves of `wave_size`
/// (None: all at once).
pub fn waves(
    nodes: &[String],
    canary: Option<&str>,
    wave_size: Option<usize>,
) -> Result<Vec<Vec<String>>, RolloutError> {
    let names: BTreeSet<&String> = nodes.iter().collect();
    if wave_size == Some(0) {
        return Err(RolloutError::ZeroWaveSize);
    }
    let first = match canary {
        Some(c) => names
            .iter()
            .copied()
            .find(|n| n.as_str() == c)
            .ok_or_else(|| {
                let all: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                RolloutError::UnknownCanary(c.to_string(), all.join(", "))
            })?,
        None => names.iter().copied().next().ok_or(RolloutError::NoNodes)?,
    };
    let rest: Vec<String> = names
        .iter()
        .filter(|n| **n != first)
        .map(|n| n.to_string())
        .collect();
    let mut out = vec![vec![first.clone()]];
    if !rest.is_empty() {
        let size = wave_size.unwrap_or(rest.len());
        out.extend(rest.chunks(size).map(<[String]>::to_vec));
    }
    Ok(out)
}

impl Rollout {
    /// The nodes the rollout has reached (waves `0..=wave`).
    pub fn reached(&self) -> impl Iterator<Item = &String> {
        self.waves.iter().take(self.wave + 1).flatten()
    }

    fn wave_of(&self, node: &str) -> Option<usize> {
        self.waves.iter().position(|w| w.iter().any(|n| n == node))
    }
}

/// The fleet revision `node` should serve now, and whether it may pass its
/// plan's refusal: from the rollout (when one is active) or the desired
/// revision. None: no fleet revision yet (the node keeps its own config).
pub fn target(rollout: Option<&Rollout>, desired: Option<u64>, node: &str) -> Target {
    let Some(r) = rollout.filter(|r| r.state.active()) else {
        let forced = rollout.is_some_and(|r| r.force && Some(r.to) == desired);
        return Target {
            revision: desired,
            force: forced,
            bake: true,
        };
    };
    match r.state {
        RolloutState::Running if r.wave_of(node).is_some_and(|w| w <= r.wave) => Target {
            revision: Some(r.to),
            force: r.force,
            bake: true,
        },
        // Not reached yet, or rolling back: the revision served before.
        _ => Target {
            revision: r.from.or(desired),
            force: false,
            // Going back to what served before is not judged again.
            bake: r.state == RolloutState::Running,
        },
    }
}

/// What a node should serve, and how it applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub revision: Option<u64>,
    /// Apply past the plan's safety checks (the rollout was forced).
    pub force: bool,
    /// Apply through the plan and the bake (false: a rollback, unchecked).
    pub bake: bool,
}

/// A rollout's next state, from the reports of the nodes alive now.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub rollout: Rollout,
    /// The fleet's desired revision becomes this (the rollout is done).
    pub desired: Option<u64>,
}

/// What the rollout becomes given `reports` (node name to report; a node
/// without one is down and skipped, except the canary, which must report).
/// None: no change.
pub fn step(rollout: &Rollout, reports: &BTreeMap<String, NodeReport>) -> Option<Step> {
    let mut next = rollout.clone();
    match rollout.state {
        RolloutState::Running => {
            let failed = rollout.reached().find_map(|n| {
                let last = reports.get(n)?.last.as_ref()?;
                (last.revision == rollout.to && last.outcome.failed()).then(|| {
                    format!(
                        "{n}: {}{}",
                        last.outcome.name(),
                        last.reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    )
                })
            });
            if let Some(reason) = failed {
                // The fleet's first revision has nothing to return to: the
                // nodes' own bakes rolled back what they could.
                next.state = match rollout.from {
                    Some(_) => RolloutState::RollingBack,
                    None => RolloutState::Halted,
                };
                next.reason = Some(reason);
                return Some(Step {
                    rollout: next,
                    desired: None,
                });
            }
            let wave = rollout.waves.get(rollout.wave)?;
            let baked = |n: &String| {
                reports.get(n).is_some_and(|r| {
                    r.serving == Some(rollout.to)
                        && r.last
                            .as_ref()
                            .is_some_and(|l| l.revision == rollout.to && l.outcome.settled())
                })
            };
            let canary = rollout.wave == 0;
            let ready = wave
                .iter()
                .all(|n| baked(n) || (!canary && !reports.contains_key(n)))
                && wave.iter().any(|n| baked(n) || !canary);
            if !ready {
                return None;
            }
            if rollout.wave + 1 < rollout.waves.len() {
                next.wave += 1;
                Some(Step {
                    rollout: next,
                    desired: None,
                })
            } else {
                next.state = RolloutState::Done;
                Some(Step {
                    rollout: next,
                    desired: Some(rollout.to),
                })
            }
        }
        RolloutState::RollingBack => {
            let back = rollout.reached().all(|n| {
                reports.get(n).is_none_or(|r| {
                    r.serving != Some(rollout.to)
                        && !r.last.as_ref().is_some_and(|l| {
                            l.revision == rollout.to && l.outcome == BakeOutcome::Baking
                        })
                })
            });
            back.then(|| {
                next.state = RolloutState::RolledBack;
                Step {
                    rollout: next,
                    desired: None,
                }
            })
        }
        RolloutState::Done | RolloutState::RolledBack | RolloutState::Halted => None,
    }
}

/// Why a node's report says the fleet is not in agreement, if it does:
/// behind the desired revision, diverged, or last turned a revision down.
pub fn node_problem(report: &NodeReport, desired: Option<u64>) -> Option<String> {
    if let Some(d) = &report.diverged {
        return Some(format!("{}: diverged: {d}", report.node));
    }
    if desired.is_some() && report.serving != desired {
        let serving = report.serving.map_or("no fleet revision".to_string(), |s| {
            format!("fleet revision {s}")
        });
        return Some(format!(
            "{}: behind: serves {serving}, the fleet's is {}",
            report.node,
            desired.unwrap_or_default()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn rollout(waves: &[&[&str]]) -> Rollout {
        Rollout {
            id: 1,
            from: Some(1),
            to: 2,
            waves: waves.iter().map(|w| names(w)).collect(),
            wave: 0,
            state: RolloutState::Running,
            reason: None,
            force: false,
            user: "root".into(),
            started_at_unix_seconds: 0.0,
        }
    }

    fn report(node: &str, serving: u64, last: Option<(u64, BakeOutcome)>) -> NodeReport {
        NodeReport {
            node: node.into(),
            live_revision: 1,
            serving: Some(serving),
            fingerprint: "f".into(),
            last: last.map(|(revision, outcome)| NodeOutcome {
                revision,
                outcome,
                reason: None,
            }),
            announce: "off".into(),
            diverged: None,
            diverged_config: None,
            updated_at_unix_seconds: 0.0,
        }
    }

    fn reports(r: &[NodeReport]) -> BTreeMap<String, NodeReport> {
        r.iter().map(|r| (r.node.clone(), r.clone())).collect()
    }

    #[test]
    fn waves_start_with_the_canary_then_the_rest_by_name() {
        let n = names(&["c", "a", "b", "d"]);
        assert_eq!(
            waves(&n, None, None).unwrap(),
            vec![names(&["a"]), names(&["b", "c", "d"])]
        );
        assert_eq!(
            waves(&n, Some("c"), Some(2)).unwrap(),
            vec![names(&["c"]), names(&["a", "b"]), names(&["d"])]
        );
        assert_eq!(
            waves(&names(&["a"]), None, None).unwrap(),
            vec![names(&["a"])]
        );
        assert_eq!(waves(&[], None, None), Err(RolloutError::NoNodes));
        let e = waves(&n, Some("x"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--canary x: no such node reports to the fleet (nodes: a, b, c, d)"
        );
        assert_eq!(waves(&n, None, Some(0)), Err(RolloutError::ZeroWaveSize));
    }

    #[test]
    fn the_canary_goes_first_and_the_others_follow_its_bake() {
        let r = rollout(&[&["a"], &["b", "c"]]);
        assert_eq!(target(Some(&r), Some(1), "a").revision, Some(2));
        assert_eq!(target(Some(&r), Some(1), "b").revision, Some(1));
        // The canary still bakes: nothing moves.
        let baking = reports(&[
            report("a", 2, Some((2, BakeOutcome::Baking))),
            report("b", 1, None),
        ]);
        assert_eq!(step(&r, &baking), None);
        let baked = reports(&[
            report("a", 2, Some((2, BakeOutcome::Baked))),
            report("b", 1, None),
        ]);
        let s = step(&r, &baked).unwrap();
        assert_eq!((s.rollout.wave, s.desired), (1, None));
        assert_eq!(target(Some(&s.rollout), Some(1), "b").revision, Some(2));
        // c is down: skipped; b baked: done, and the fleet's revision is 2.
        let all = reports(&[
            report("a", 2, Some((2, BakeOutcome::Baked))),
            report("b", 2, Some((2, BakeOutcome::Baked))),
        ]);
        let done = step(&s.rollout, &all).unwrap();
        assert_eq!(
            (done.rollout.state, done.desired),
            (RolloutState::Done, Some(2))
        );
        // Over: c follows the desired revision when it returns.
        assert_eq!(target(Some(&done.rollout), Some(2), "c").revision, Some(2));
        assert_eq!(step(&done.rollout, &all), None);
    }

    #[test]
    fn a_silent_canary_holds_the_rollout() {
        let r = rollout(&[&["a"], &["b"]]);
        assert_eq!(step(&r, &reports(&[report("b", 1, None)])), None);
    }

    #[test]
    fn a_failed_bake_rolls_back_every_changed_node() {
        let mut r = rollout(&[&["a"], &["b"], &["c"]]);
        r.wave = 1;
        let mut b = report("b", 1, Some((2, BakeOutcome::RolledBack)));
        b.last.as_mut().unwrap().reason = Some("skew on web".into());
        let now = reports(&[
            report("a", 2, Some((2, BakeOutcome::Baked))),
            b.clone(),
            report("c", 1, None),
        ]);
        let s = step(&r, &now).unwrap();
        assert_eq!(s.rollout.state, RolloutState::RollingBack);
        assert_eq!(
            s.rollout.reason.as_deref(),
            Some("b: rolled_back: skew on web")
        );
        let t = target(Some(&s.rollout), Some(1), "a");
        assert_eq!((t.revision, t.bake), (Some(1), false));
        // a still serves 2: not yet rolled back.
        assert_eq!(step(&s.rollout, &now), None);
        let back = reports(&[
            report("a", 1, Some((1, BakeOutcome::Applied))),
            b,
            report("c", 1, None),
        ]);
        let end = step(&s.rollout, &back).unwrap();
        assert_eq!(
            (end.rollout.state, end.desired),
            (RolloutState::RolledBack, None)
        );
        assert_eq!(target(Some(&end.rollout), Some(1), "a").revision, Some(1));
    }

    #[test]
    fn problems_name_the_node() {
        let mut a = report("a", 1, None);
        assert_eq!(node_problem(&a, Some(1)), None);
        assert_eq!(
            node_problem(&a, Some(2)).unwrap(),
            "a: behind: serves fleet revision 1, the fleet's is 2"
        );
        a.diverged = Some("revision 7 (apply by root)".into());
        assert!(node_problem(&a, Some(1)).unwrap().contains("a: diverged"));
    }

    proptest! {
        /// Whatever the nodes report, a rollout never skips a wave, never
        /// leaves a node it has not reached on `to`, and is done only when
        /// the last wave was reached.
        #[test]
        fn a_rollout_moves_one_wave_at_a_time(
            n in 1usize..6,
            size in 1usize..4,
            outcomes in proptest::collection::vec((0u8..4, any::<bool>(), any::<bool>()), 6),
            wave in 0usize..6,
        ) {
            let nodes: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            let mut r = rollout(&[]);
            r.waves = waves(&nodes, None, Some(size)).unwrap();
            r.wave = wave.min(r.waves.len() - 1);
            let mut rs = BTreeMap::new();
            for (node, (o, on_to, present)) in nodes.iter().zip(&outcomes) {
                if !present { continue; }
                let outcome = [BakeOutcome::Baking, BakeOutcome::Baked, BakeOutcome::RolledBack, BakeOutcome::Refused][*o as usize];
                rs.insert(node.clone(), report(node, if *on_to { 2 } else { 1 }, Some((2, outcome))));
            }
            for node in &nodes {
                let reached = r.reached().any(|m| m == node);
                prop_assert_eq!(target(Some(&r), Some(1), node).revision == Some(2), reached);
            }
            if let Some(s) = step(&r, &rs) {
                match s.rollout.state {
                    RolloutState::Running => prop_assert_eq!(s.rollout.wave, r.wave + 1),
                    RolloutState::Done => {
                        prop_assert_eq!(r.wave + 1, r.waves.len());
                        prop_assert_eq!(s.desired, Some(2));
                    }
                    RolloutState::RollingBack => prop_assert!(r.reached().any(|m| rs.get(m).is_some_and(|x| x.last.as_ref().is_some_and(|l| l.outcome.failed())))),
                    other => prop_assert!(false, "{other:?}"),
                }
            }
        }
    }
}
