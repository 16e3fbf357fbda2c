//! Judging a new revision while it bakes: the bake ends baked, or the
//! previous revision is put back automatically (through the one apply
//! path) and the reason recorded.

use std::sync::Arc;

use xlb_core::bake::{BakeState, BakeStatus};
use xlb_core::change::{ApplyOptions, Candidate, Origin};
use xlb_core::clock::unix_now;
use xlb_core::detect::{BackendSample, Detector, VipReport, VipSample};
use xlb_core::revision::{Kind, Outcome, Revision};
use xlb_core::state::Desired;

use super::rollback::Kept;
use super::{ApplyError, BakePolicy, Controller};

impl Controller {
    /// `rev`, adopted as the live revision, was baking when the last daemon
    /// stopped: its bake goes on for what is left of its window (counted
    /// from the revision's record, under this daemon's window), or, when
    /// the window has passed, it is judged at the first collector pass; the
    /// outcome is recorded as for any bake. A rollback goes to the newest
    /// earlier revision of `history` that was in force; with none, the
    /// revision is recorded baked at once.
    pub fn resume_bake(&mut self, rev: &Revision, history: &[Revision]) {
        if rev.outcome != Outcome::Baking {
            return;
        }
        let target = history
            .iter()
            .filter(|r| r.number < rev.number && r.outcome.is_live())
            .max_by_key(|r| r.number);
        let started = rev.created_at_unix_seconds;
        let until = started + self.bake_policy.window_seconds.max(0.0);
        let now = unix_now();
        self.bake = Some(BakeStatus {
            revision: rev.number,
            state: BakeState::Baking,
            started_at_unix_seconds: started,
            until_unix_seconds: until,
            rollback_to: target.map_or(0, |t| t.number),
            reason: None,
            rollback_revision: None,
        });
        let Some(target) = target else {
            log::warn!(
                "revision {} was baking when the last daemon stopped; no earlier revision to roll back to: baked",
                rev.number
            );
            self.finish_bake();
            return;
        };
        self.rollback_target = Some(Kept::recorded(
            self.revisions.as_ref(),
            target.number,
            target.config_file.clone(),
            || target.config_text.clone(),
        ));
        self.capacity_detector = Detector::verdicts_only();
        if now >= until {
            log::info!(
                "revision {} was baking when the last daemon stopped and its window has passed: judged at the first collector pass",
                rev.number
            );
        } else {
            log::info!(
                "revision {} was baking when the last daemon stopped: its bake resumes for {:.0} s (rollback to revision {})",
                rev.number,
                until - now,
                target.number
            );
        }
    }

    pub(super) fn finish_bake(&mut self) {
        let Some(bake) = self.bake.as_mut() else {
            return;
        };
        bake.state = BakeState::Baked;
        log::info!("revision {} baked", bake.revision);
        // Judged only while a revision bakes: its windows and reports
        // (about as large as the imbalance detector's) go until the next,
        // and so does the text a rollback would have put back (a whole
        // config: 5.8 MB at 1,000 VIPs x 64 backends).
        self.capacity_detector = Detector::verdicts_only();
        self.rollback_target = None;
        let number = bake.revision;
        if let Some(store) = self.revisions.as_mut()
            && let Err(e) = store.update_outcome(number, Outcome::Baked)
        {
            log::error!("recording that revision {number} baked: {e}");
        }
    }

    /// Put the previous revision back, as a new revision, and record why.
    pub(super) fn roll_back(&mut self, reason: &str) {
        let (Some(bake), Some(target)) = (self.bake.clone(), self.rollback_target.clone()) else {
            return;
        };
        let to = target.number;
        log::warn!(
            "revision {}: automatic rollback to revision {to}: {reason}",
            bake.revision
        );
        let origin = Origin::daemon(
            "xlb",
            format!("automatic rollback of revision {}", bake.revision),
        );
        let kind = Kind::AutomaticRollback {
            to,
            reason: reason.to_string(),
        };
        let text = match target.text.text() {
            Ok(text) => text,
            Err(e) => {
                log::error!(
                    "automatic rollback of revision {}: revision {to}'s text: {e}; still on it",
                    bake.revision
                );
                return;
            }
        };
        let applied = Candidate::parse(text.as_ref(), &target.file, origin)
            .map_err(ApplyError::from)
            .and_then(|c| self.apply(c, ApplyOptions::unchecked(kind)));
        match applied.map(|a| a.revision) {
            Ok(new) => {
                self.metrics.automatic_rollbacks.inc();
                self.audit(
                    "automatic_rollback",
                    "xlb",
                    Some(new),
                    Some(&target.file),
                    Some(xlb_core::revision::text_hash(&text)),
                    Some(format!("revision {} -> {to}: {reason}", bake.revision)),
                );
                if let Some(store) = self.revisions.as_mut()
                    && let Err(e) = store.update_outcome(
                        bake.revision,
                        Outcome::RolledBack {
                            at_unix_seconds: unix_now(),
                            by: new,
                            reason: reason.to_string(),
                        },
                    )
                {
                    log::error!("recording the rollback of revision {}: {e}", bake.revision);
                }
                self.bake = Some(BakeStatus {
                    state: BakeState::RolledBack,
                    reason: Some(reason.to_string()),
                    rollback_revision: Some(new),
                    ..bake
                });
                self.rollback_target = None;
                self.capacity_detector = Detector::verdicts_only();
            }
            Err(e) => log::error!(
                "automatic rollback of revision {} failed: {e}; still on it",
                bake.revision
            ),
        }
    }
}

/// The capacity detector's reports: the same samples, with each active
/// backend's expected share its capacity share, and the shorter hold.
pub(super) fn capacity_view(
    detector: &mut Detector,
    desired: &Desired,
    policy: BakePolicy,
    now: f64,
    samples: &[VipSample<'_>],
) -> Vec<Arc<VipReport>> {
    let thresholds: Vec<xlb_core::detect::Thresholds> = desired
        .vips
        .iter()
        .map(|v| xlb_core::detect::Thresholds {
            hold_seconds: v.config.imbalance.hold_seconds.min(policy.hold_seconds),
            ..v.config.imbalance.clone()
        })
        .collect();
    let samples: Vec<VipSample<'_>> = samples
        .iter()
        .zip(&desired.vips)
        .zip(&thresholds)
        .map(|((sample, v), t)| {
            // Over the backends in the live table (health may have taken
            // some out).
            let total: f64 = sample
                .backends
                .iter()
                .zip(&v.config.backends)
                .filter(|(s, _)| s.active)
                .map(|(_, b)| b.capacity)
                .sum();
            VipSample {
                vip: sample.vip,
                thresholds: t,
                backends: sample
                    .backends
                    .iter()
                    .zip(&v.config.backends)
                    .map(|(s, b)| BackendSample {
                        expected_share: if s.active && total > 0.0 {
                            b.capacity / total
                        } else {
                            0.0
                        },
                        ..s.clone()
                    })
                    .collect(),
            }
        })
        .collect();
    detector.observe(now, &samples)
}
