//! A rollback: an earlier revision re-applied as a new one (kubectl
//! rollout undo), through the one apply path, unchecked (it served before).

use xlb_core::change::{ApplyOptions, Candidate, Origin};
use xlb_core::clock::unix_now;
use xlb_core::revision::{Kind, Outcome};

use super::{ApplyError, Controller};

impl Controller {
    /// Re-apply revision `to` (default: the live revision before the current
    /// one) as a new revision. No safety checks: it goes back to a state that
    /// served before.
    pub fn rollback(&mut self, to: Option<u64>, origin: &Origin) -> Result<u64, ApplyError> {
        let Some(store) = self.revisions.as_ref() else {
            return Err(ApplyError::NoRevision(
                "this daemon keeps no revisions".into(),
            ));
        };
        let list = store.summaries();
        let current = self.revision;
        let target = match to {
            Some(n) => list.iter().find(|r| r.number == n).ok_or_else(|| {
                ApplyError::NoRevision(format!("no revision {n} is kept (see `xlb history`)"))
            })?,
            None => list
                .iter()
                .rev()
                .find(|r| r.number < current && r.outcome.is_live())
                .ok_or_else(|| {
                    ApplyError::NoRevision(format!(
                        "no earlier live revision than {current} to roll back to"
                    ))
                })?,
        };
        if target.number == current {
            return Err(ApplyError::NoRevision(format!(
                "revision {current} is the live one already"
            )));
        }
        let number = target.number;
        let target = store
            .get(number)
            .map_err(|e| ApplyError::NoRevision(e.to_string()))?
            .ok_or_else(|| ApplyError::NoRevision(format!("revision {number} is not kept")))?;
        let candidate = Candidate::parse(&target.config_text, &target.config_file, origin.clone())?;
        let (file, text) = (candidate.file.clone(), candidate.text.clone());
        let new = self
            .apply(
                candidate,
                ApplyOptions::unchecked(Kind::Rollback { to: number }),
            )?
            .revision;
        if let Some(store) = self.revisions.as_mut()
            && let Ok(Some(old)) = store.get(current)
            && !old.outcome.is_final()
        {
            let _ = store.update_outcome(
                current,
                Outcome::RolledBack {
                    at_unix_seconds: unix_now(),
                    by: new,
                    reason: origin
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("rolled back by {}", origin.user)),
                },
            );
        }
        // A manual rollback ends a bake.
        self.bake = None;
        self.audit(
            "rollback",
            &origin.user.clone(),
            Some(new),
            Some(&file),
            Some(xlb_core::revision::text_hash(&text)),
            Some(format!("to revision {number}")),
        );
        Ok(new)
    }
}
