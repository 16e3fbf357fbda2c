//! A change on its way into the daemon. A config text is parsed once, where
//! it enters the daemon, into a `Candidate` (who asked, the file, the text,
//! the parsed config); every change then takes the controller's one apply
//! path with its `ApplyOptions`, whatever started it: an operator's apply or
//! reviewed plan, `xlb drain`/`undrain`/`weight`, a rollback, an automatic
//! rollback, the daemon's start, SIGHUP.

use serde::{Deserialize, Serialize};

use crate::config::{self, Config, ConfigError, TextCut};
use crate::revision::Kind;

/// Who asked for a change and why, for the revision record and the audit
/// log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    pub user: String,
    pub message: Option<String>,
}

impl Origin {
    /// The daemon itself (its start, a reload, an automatic rollback).
    pub fn daemon(user: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            message: Some(message.into()),
        }
    }
}

/// A config text and what it parsed into.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub origin: Origin,
    /// The file the text came from (named in errors and revisions).
    pub file: String,
    pub text: String,
    pub config: Config,
    /// The text's cut, when its parse made one (`config::parse_cut`): what
    /// the next text is parsed against once this one is live.
    pub cut: Option<TextCut>,
}

impl Candidate {
    /// Parse and validate `text` (named `file` in errors).
    pub fn parse(
        text: impl Into<String>,
        file: impl Into<String>,
        origin: Origin,
    ) -> Result<Self, ConfigError> {
        Self::parse_against(text, file, origin, None)
    }

    /// [`parse`](Self::parse), taking the VIPs whose text did not change
    /// from `previous` (the live text's cut and its config), so a change of
    /// one VIP parses one VIP (`config::parse_against`); same result.
    pub fn parse_against(
        text: impl Into<String>,
        file: impl Into<String>,
        origin: Origin,
        previous: Option<(&TextCut, &Config)>,
    ) -> Result<Self, ConfigError> {
        let (text, file) = (text.into(), file.into());
        let (config, cut) = config::parse_cut(&text, &file, previous)?;
        Ok(Self {
            origin,
            file,
            text,
            config,
            cut,
        })
    }

    /// The text's cut: the parse's, or made now.
    pub fn take_cut(&mut self) -> Option<TextCut> {
        self.cut.take().or_else(|| TextCut::of(&self.text))
    }
}

/// The safety checks an apply goes through before anything is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checks {
    /// An operator's change: refused when `expect_revision` (a reviewed
    /// plan's base) is no longer live, or when the plan's safety checks
    /// refuse it and it is not forced.
    Operator {
        force: bool,
        expect_revision: Option<u64>,
    },
    /// A return to a configuration that served before (a rollback) or the
    /// daemon's own start: planned and recorded, not judged.
    Unchecked,
}

/// How a candidate is applied: what the revision records it as, and its
/// checks. Whether it bakes follows from the kind (an operator's apply or
/// edit that replaces a revision bakes; rollbacks and the start do not).
#[derive(Clone, Debug, PartialEq)]
pub struct ApplyOptions {
    pub kind: Kind,
    pub checks: Checks,
}

impl ApplyOptions {
    /// An operator's apply (`kind` Apply or Edit), checked.
    pub fn operator(kind: Kind, force: bool, expect_revision: Option<u64>) -> Self {
        Self {
            kind,
            checks: Checks::Operator {
                force,
                expect_revision,
            },
        }
    }

    /// Recorded as `kind`, not judged.
    pub fn unchecked(kind: Kind) -> Self {
        Self {
            kind,
            checks: Checks::Unchecked,
        }
    }
}

/// The revision in force: the target of `xlb drain` and of an automatic
/// rollback.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveRevision {
    pub number: u64,
    pub text: String,
    pub file: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candidate_is_parsed_once_and_names_its_file() {
        let text = "interface = \"eth0\"\n";
        let c = Candidate::parse(text, "a.toml", Origin::default()).unwrap();
        assert_eq!((c.file.as_str(), c.text.as_str()), ("a.toml", text));
        assert_eq!(c.config.interface, "eth0");
        let e = Candidate::parse("interface = 1\n", "b.toml", Origin::default()).unwrap_err();
        assert!(e.to_string().contains("b.toml"), "{e}");
    }
}
