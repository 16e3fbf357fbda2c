//! The config file against the live revision, at the daemon's start and on
//! SIGHUP. The live revision is the source of truth: the `--config` file
//! goes in only when that cannot undo a change made through the daemon.
//!
//! The rule. Let F be the newest revision *applied from this file*: kind
//! `apply` or `startup`, `config_file` equal to the file's name as the daemon
//! was given it, and in force at some time (any outcome but `failed`).
//!
//! - The file's text is the live revision's: in sync, nothing to do.
//! - F exists and its text is the live revision's text: nothing changed the
//!   live config since the file was last applied (or what did, an undrain
//!   after a drain, a rollback to it, gave the same text back), so the file
//!   is an operator's new edit: it is planned against the live revision and
//!   applied through the safety checks, like `xlb apply`.
//! - Otherwise (no F, or the live text is not F's): the live config was
//!   changed since through the daemon (`xlb drain`/`undrain`/`weight`, a
//!   rollback, an automatic rollback, an apply of another file), or its
//!   origin is unknown (F pruned); applying the file would revert that. The
//!   daemon keeps the live revision and says the file differs (status, log,
//!   `xlb_config_file_differs`) until an operator applies a file.
//!
//! Texts are compared byte for byte, never by what they parse to.

use serde::{Deserialize, Serialize};

use crate::change::LiveRevision;
use crate::revision::{Kind, Outcome, Revision, kind_label, text_hash};

/// What to do with the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The file's text is the live revision's.
    InSync,
    /// Plan the file against the live revision and apply it through the
    /// safety checks: the live revision is `last_applied`'s text.
    Apply { last_applied: u64 },
    /// Keep the live revision: applying the file would revert a change
    /// made through the daemon since the file was last applied.
    Keep {
        last_applied: Option<u64>,
        reason: String,
    },
}

/// The newest revision of `history` (oldest first) applied from `file` (see
/// the module docs).
pub fn last_applied_from<'a>(file: &str, history: &'a [Revision]) -> Option<&'a Revision> {
    history.iter().rev().find(|r| {
        r.config_file == file
            && matches!(r.kind, Kind::Apply | Kind::Startup)
            && !matches!(r.outcome, Outcome::Failed { .. })
    })
}

/// Judge `file` (its current `text`) against the `live` revision, given the
/// recorded `history`, oldest first (as `Store::list` gives it).
pub fn judge(file: &str, text: &str, live: &LiveRevision, history: &[Revision]) -> Verdict {
    if text == live.text {
        return Verdict::InSync;
    }
    let mut sorted: Vec<Revision> = history.to_vec();
    sorted.sort_by_key(|r| r.number);
    let last = last_applied_from(file, &sorted);
    match last {
        Some(f) if f.config_text == live.text => Verdict::Apply {
            last_applied: f.number,
        },
        Some(f) => {
            let changed_by = sorted
                .iter()
                .find(|r| r.number == live.number)
                .map(|r| format!(" ({})", kind_label(&r.kind)))
                .unwrap_or_default();
            Verdict::Keep {
                last_applied: Some(f.number),
                reason: format!(
                    "{file} was last applied as revision {}; the live revision {}{changed_by} \
                     was changed through the daemon since, and applying {file} would revert it",
                    f.number, live.number
                ),
            }
        }
        None => Verdict::Keep {
            last_applied: None,
            reason: format!(
                "no recorded revision was applied from {file}; the live revision {} came \
                 from elsewhere, and applying {file} could revert it",
                live.number
            ),
        },
    }
}

/// The config file as the status document shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigFileStatus {
    /// The `--config` file, as the daemon was given it.
    pub file: String,
    /// `text_hash` of the file's text when it was last read.
    pub file_hash: String,
    /// The file's text is not the live revision's.
    pub differs: bool,
    /// The live revision it was compared with (kept up to date as later
    /// changes are applied).
    pub live_revision: u64,
    /// The newest revision applied from this file (null: none recorded).
    pub last_applied_revision: Option<u64>,
    /// Why the file was not applied (a revert refused, a safety check).
    pub reason: Option<String>,
    pub checked_at_unix_seconds: f64,
}

impl ConfigFileStatus {
    /// The file read (`text`) and found to be the live revision `live`.
    pub fn in_sync(file: &str, text: &str, live: u64, now: f64) -> Self {
        Self {
            file: file.to_string(),
            file_hash: text_hash(text),
            differs: false,
            live_revision: live,
            last_applied_revision: Some(live),
            reason: None,
            checked_at_unix_seconds: now,
        }
    }

    /// The file read and kept out: the daemon serves `live`.
    pub fn kept(
        file: &str,
        text: &str,
        live: u64,
        last_applied: Option<u64>,
        reason: String,
        now: f64,
    ) -> Self {
        Self {
            file: file.to_string(),
            file_hash: text_hash(text),
            differs: true,
            live_revision: live,
            last_applied_revision: last_applied,
            reason: Some(reason),
            checked_at_unix_seconds: now,
        }
    }

    /// A change applied as revision `number` (kind `kind`, from `file`,
    /// its text's [`text_hash`] `config_hash`): an operator's apply of this
    /// file (or of its text), or any change that makes the live text the
    /// file's, clears the difference; otherwise the file still differs,
    /// from `number` now.
    pub fn after_apply(&mut self, number: u64, kind: &Kind, file: &str, config_hash: &str) {
        let same_text = config_hash == self.file_hash;
        if same_text || (matches!(kind, Kind::Apply) && file == self.file) {
            self.differs = false;
            self.reason = None;
            self.last_applied_revision = Some(number);
        }
        self.live_revision = number;
    }

    /// The one-line summary of `xlb status` (None when in sync).
    pub fn line(&self) -> Option<String> {
        self.differs.then(|| {
            format!(
                "config file: {} differs from live revision {}, kept: {}; `xlb apply {}` applies it",
                self.file,
                self.live_revision,
                self.reason.as_deref().unwrap_or("not applied"),
                self.file
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(number: u64, kind: Kind, file: &str, text: &str, outcome: Outcome) -> Revision {
        Revision {
            schema_version: crate::revision::SCHEMA_VERSION,
            number,
            created_at_unix_seconds: number as f64,
            user: "root".into(),
            message: None,
            config_file: file.into(),
            config_text: text.into(),
            config_hash: text_hash(text),
            kind,
            plan: None,
            outcome,
        }
    }

    fn live(number: u64, text: &str) -> LiveRevision {
        LiveRevision {
            number,
            text: text.into(),
            file: "/etc/xlb.toml".into(),
        }
    }

    const F: &str = "/etc/xlb.toml";

    fn drain() -> Kind {
        Kind::Edit {
            command: "drain web b2".into(),
        }
    }

    #[test]
    fn the_same_text_is_in_sync() {
        let h = [rev(1, Kind::Startup, F, "a", Outcome::Applied)];
        assert_eq!(judge(F, "a", &live(1, "a"), &h), Verdict::InSync);
    }

    #[test]
    fn an_edited_file_over_its_own_revision_is_applied() {
        let h = [
            rev(1, Kind::Startup, F, "a", Outcome::Applied),
            rev(2, Kind::Apply, F, "b", Outcome::Baked),
        ];
        assert_eq!(
            judge(F, "c", &live(2, "b"), &h),
            Verdict::Apply { last_applied: 2 }
        );
    }

    #[test]
    fn a_drain_since_the_file_is_kept_whether_or_not_the_file_changed() {
        let h = [
            rev(1, Kind::Startup, F, "a", Outcome::Applied),
            rev(2, drain(), F, "a-drained", Outcome::Baked),
        ];
        for text in ["a", "a-edited"] {
            match judge(F, text, &live(2, "a-drained"), &h) {
                Verdict::Keep {
                    last_applied: Some(1),
                    reason,
                } => assert!(
                    reason.contains("revision 2 (drain web b2)") && reason.contains("revert"),
                    "{reason}"
                ),
                v => panic!("{text}: {v:?}"),
            }
        }
    }

    #[test]
    fn rollbacks_and_other_files_are_kept() {
        // A rollback to an older text.
        let h = [
            rev(1, Kind::Startup, F, "a", Outcome::Applied),
            rev(2, Kind::Apply, F, "b", Outcome::Baked),
            rev(3, Kind::Rollback { to: 1 }, F, "a", Outcome::Applied),
        ];
        assert!(matches!(
            judge(F, "b", &live(3, "a"), &h),
            Verdict::Keep {
                last_applied: Some(2),
                ..
            }
        ));
        // The file's own apply, rolled back automatically: not again.
        let h = [
            rev(1, Kind::Startup, F, "a", Outcome::Applied),
            rev(
                2,
                Kind::Apply,
                F,
                "b",
                Outcome::RolledBack {
                    at_unix_seconds: 3.0,
                    by: 3,
                    reason: "skew".into(),
                },
            ),
            rev(
                3,
                Kind::AutomaticRollback {
                    to: 1,
                    reason: "skew".into(),
                },
                F,
                "a",
                Outcome::Applied,
            ),
        ];
        assert!(matches!(
            judge(F, "b", &live(3, "a"), &h),
            Verdict::Keep { .. }
        ));
        // Another file applied since.
        let h = [
            rev(1, Kind::Startup, F, "a", Outcome::Applied),
            rev(2, Kind::Apply, "/tmp/other.toml", "o", Outcome::Baked),
        ];
        assert!(matches!(
            judge(F, "a", &live(2, "o"), &h),
            Verdict::Keep {
                last_applied: Some(1),
                ..
            }
        ));
        // Nothing from this file at all (pruned, or another path).
        match judge(F, "a", &live(7, "x"), &[]) {
            Verdict::Keep {
                last_applied: None,
                reason,
            } => assert!(reason.contains("no recorded revision"), "{reason}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn an_undrain_back_to_the_files_text_or_a_failed_apply_does_not_block() {
        let h = [
            rev(1, Kind::Startup, F, "a", Outcome::Applied),
            rev(2, drain(), F, "a-drained", Outcome::Baked),
            rev(
                3,
                Kind::Edit {
                    command: "undrain web b2".into(),
                },
                F,
                "a",
                Outcome::Baked,
            ),
            rev(
                4,
                Kind::Apply,
                F,
                "z",
                Outcome::Failed { error: "e".into() },
            ),
        ];
        assert_eq!(
            judge(F, "c", &live(3, "a"), &h),
            Verdict::Apply { last_applied: 1 }
        );
    }

    #[test]
    fn an_apply_of_the_file_clears_the_difference() {
        let mut s = ConfigFileStatus::kept(F, "a", 2, Some(1), "r".into(), 0.0);
        assert!(s.line().unwrap().contains("differs from live revision 2"));
        // A further edit: still differs, from the new revision.
        s.after_apply(3, &drain(), F, &text_hash("a-drained-more"));
        assert!(s.differs && s.live_revision == 3);
        // A rollback onto the file's text: in sync.
        let mut t = s.clone();
        t.after_apply(4, &Kind::Rollback { to: 1 }, F, &text_hash("a"));
        assert!(!t.differs && t.line().is_none());
        // `xlb apply FILE`, whatever it holds by now.
        s.after_apply(4, &Kind::Apply, F, &text_hash("a-edited"));
        assert!(!s.differs && s.last_applied_revision == Some(4));
    }
}
