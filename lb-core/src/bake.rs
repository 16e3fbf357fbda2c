//! The bake: after an apply, the daemon watches the new revision for a while
//! and rolls it back on its own if a VIP's split goes bad. Pure: the
//! controller feeds it the detectors' reports and carries out its decision.
//!
//! Two detectors judge a baking revision. The daemon's own compares each
//! backend's observed share with its weight share: it catches a table or
//! traffic fault. The bake detector compares it with the backend's capacity
//! share (`capacity`, else its weight): it catches the change that is itself
//! the fault, a weight change that sends a backend more than it can take,
//! which the weight-based view calls balanced (the outage behind xlb).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::detect::{State, VipReport};

/// Where a baking revision stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BakeState {
    Baking,
    Baked,
    RolledBack,
}

/// The bake of one revision (status document and `xlb apply --wait`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BakeStatus {
    pub revision: u64,
    pub state: BakeState,
    pub started_at_unix_seconds: f64,
    pub until_unix_seconds: f64,
    /// The revision a rollback goes back to.
    pub rollback_to: u64,
    /// Why it was rolled back.
    pub reason: Option<String>,
    /// The revision the rollback made.
    pub rollback_revision: Option<u64>,
}

/// What the controller must do after a tick.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Keep watching (or nothing is baking).
    Wait,
    /// The window passed cleanly.
    Baked,
    /// Roll back, for this reason.
    RollBack(String),
}

/// Judge a baking revision at `now` from both detectors' reports.
pub fn decide(
    bake: &BakeStatus,
    now: f64,
    weight_view: &[Arc<VipReport>],
    capacity_view: &[Arc<VipReport>],
) -> Decision {
    if bake.state != BakeState::Baking {
        return Decision::Wait;
    }
    let bad = |reports: &[Arc<VipReport>], view: &str| {
        reports
            .iter()
            .find(|r| r.verdict.state == State::Imbalanced)
            .map(|r| {
                format!(
                    "VIP {} is imbalanced against {view}: {}",
                    r.vip, r.verdict.reason
                )
            })
    };
    if let Some(reason) = bad(capacity_view, "capacity").or_else(|| bad(weight_view, "weights")) {
        return Decision::RollBack(reason);
    }
    if now >= bake.until_unix_seconds {
        return Decision::Baked;
    }
    Decision::Wait
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Verdict;

    fn report(vip: &str, state: State) -> Arc<VipReport> {
        Arc::new(VipReport {
            vip: vip.into(),
            verdict: Verdict {
                state,
                cause: None,
                backend: Some("b1".into()),
                ratio: Some(4.0),
                since_unix_seconds: Some(1.0),
                reason: "b1 gets 4.00x".into(),
            },
            signals: vec![],
        })
    }

    fn baking() -> BakeStatus {
        BakeStatus {
            revision: 2,
            state: BakeState::Baking,
            started_at_unix_seconds: 0.0,
            until_unix_seconds: 60.0,
            rollback_to: 1,
            reason: None,
            rollback_revision: None,
        }
    }

    #[test]
    fn waits_while_balanced_then_bakes() {
        let ok = [report("web", State::Ok)];
        assert_eq!(decide(&baking(), 10.0, &ok, &ok), Decision::Wait);
        assert_eq!(decide(&baking(), 60.0, &ok, &ok), Decision::Baked);
    }

    #[test]
    fn pending_is_not_enough_imbalanced_rolls_back() {
        let pending = [report("web", State::Pending)];
        let ok = [report("web", State::Ok)];
        assert_eq!(decide(&baking(), 10.0, &ok, &pending), Decision::Wait);
        let bad = [report("web", State::Imbalanced)];
        match decide(&baking(), 10.0, &ok, &bad) {
            Decision::RollBack(r) => {
                assert!(r.contains("VIP web is imbalanced against capacity"), "{r}")
            }
            d => panic!("{d:?}"),
        }
        match decide(&baking(), 10.0, &bad, &ok) {
            Decision::RollBack(r) => assert!(r.contains("against weights"), "{r}"),
            d => panic!("{d:?}"),
        }
        // Skew at the very end of the window still rolls back.
        assert!(matches!(
            decide(&baking(), 61.0, &ok, &bad),
            Decision::RollBack(_)
        ));
    }

    #[test]
    fn a_finished_bake_decides_nothing() {
        let bad = [report("web", State::Imbalanced)];
        let mut done = baking();
        done.state = BakeState::Baked;
        assert_eq!(decide(&done, 10.0, &bad, &bad), Decision::Wait);
    }
}
