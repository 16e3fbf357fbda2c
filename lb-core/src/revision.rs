//! A revision: one configuration the daemon applied (or tried to), numbered
//! and immutable once recorded but for its outcome, and how it is shown
//! (`xlb history`, `xlb show`). The daemon's store on disk keeps them.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use crate::plan::RecordedPlan;

/// The `schema_version` of revisions this code writes.
pub const SCHEMA_VERSION: u32 = 1;

/// One applied (or attempted) configuration. Immutable once recorded, except
/// for its [`Outcome`] (see [`Store::update_outcome`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Revision {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    pub number: u64,
    pub created_at_unix_seconds: f64,
    /// Who asked (the CLI sends it; the daemon may verify via SO_PEERCRED).
    pub user: String,
    /// `-m`.
    pub message: Option<String>,
    /// The config file as named by the client.
    pub config_file: String,
    /// The exact TOML applied.
    pub config_text: String,
    /// [`text_hash`] of `config_text` (the hash of the text's bytes; a
    /// plan's `config_hash` is of the parsed config: `plan::config_hash`).
    pub config_hash: String,
    pub kind: Kind,
    /// The plan document as recorded (`Plan::recorded`); opaque here.
    pub plan: Option<RecordedPlan>,
    pub outcome: Outcome,
}

/// A revision without its config text and plan: what `xlb history` shows,
/// and all the store reads for it (its index), whatever the size of the
/// configs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Summary {
    pub schema_version: u32,
    pub number: u64,
    pub created_at_unix_seconds: f64,
    pub user: String,
    pub message: Option<String>,
    pub config_file: String,
    pub config_hash: String,
    pub kind: Kind,
    /// Whether a plan is recorded with it.
    #[serde(default)]
    pub planned: bool,
    pub outcome: Outcome,
}

impl Revision {
    /// Its summary (what `xlb history` lists).
    pub fn summary(&self) -> Summary {
        Summary {
            schema_version: self.schema_version,
            number: self.number,
            created_at_unix_seconds: self.created_at_unix_seconds,
            user: self.user.clone(),
            message: self.message.clone(),
            config_file: self.config_file.clone(),
            config_hash: self.config_hash.clone(),
            kind: self.kind.clone(),
            planned: self.plan.is_some(),
            outcome: self.outcome.clone(),
        }
    }

    /// The revision of `summary`, with its text and plan.
    pub fn from_summary(
        summary: Summary,
        config_text: String,
        plan: Option<RecordedPlan>,
    ) -> Revision {
        Revision {
            schema_version: summary.schema_version,
            number: summary.number,
            created_at_unix_seconds: summary.created_at_unix_seconds,
            user: summary.user,
            message: summary.message,
            config_file: summary.config_file,
            config_text,
            config_hash: summary.config_hash,
            kind: summary.kind,
            plan,
            outcome: summary.outcome,
        }
    }
}

/// Why a revision exists.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    /// An operator applied a config.
    Apply,
    /// An operator re-applied revision `to`.
    Rollback { to: u64 },
    /// The daemon re-applied revision `to` on its own (e.g. a failed bake).
    AutomaticRollback { to: u64, reason: String },
    /// The daemon applied its config at startup.
    Startup,
    /// An operator edited the live config: `drain web b2`, `weight web b2 4`.
    Edit { command: String },
}

/// What became of a revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    Failed {
        error: String,
    },
    RolledBack {
        at_unix_seconds: f64,
        /// The revision that replaced it.
        by: u64,
        reason: String,
    },
    Baking,
    Baked,
}

impl Outcome {
    /// Whether the revision is (or was, until replaced) in force: applied,
    /// baking or baked.
    pub fn is_live(&self) -> bool {
        matches!(self, Outcome::Applied | Outcome::Baking | Outcome::Baked)
    }

    /// Failed and rolled-back revisions never change outcome again.
    pub fn is_final(&self) -> bool {
        matches!(self, Outcome::Failed { .. } | Outcome::RolledBack { .. })
    }

    /// The serde tag: `applied`, `failed`, `rolled_back`, `baking`, `baked`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Failed { .. } => "failed",
            Outcome::RolledBack { .. } => "rolled_back",
            Outcome::Baking => "baking",
            Outcome::Baked => "baked",
        }
    }
}

/// A revision's `config_hash`: hex xxh64 (seed 0) of the config text's bytes, 16
/// lowercase digits.
pub fn text_hash(config_text: &str) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh64::xxh64(config_text.as_bytes(), 0)
    )
}

/// RFC 3339 (seconds, UTC) for a unix time; `-` if not representable.
fn format_when(unix_seconds: f64) -> String {
    const YEAR_10000: f64 = 253_402_300_800.0;
    if !(0.0..YEAR_10000).contains(&unix_seconds) {
        return "-".to_string();
    }
    let t = UNIX_EPOCH + Duration::from_secs_f64(unix_seconds);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Control characters (terminal escapes, tabs, newlines) as spaces.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// First line only, marked with `...` if there were more.
fn one_line(s: &str) -> String {
    let mut lines = s.lines();
    let first = sanitize(lines.next().unwrap_or(""));
    if lines.next().is_some() {
        format!("{first} ...")
    } else {
        first
    }
}

/// How `xlb history` names a kind: `apply`, `rollback to 3`, `drain web b2`.
pub fn kind_label(kind: &Kind) -> String {
    match kind {
        Kind::Apply => "apply".to_string(),
        Kind::Rollback { to } => format!("rollback to {to}"),
        Kind::AutomaticRollback { to, .. } => format!("automatic_rollback to {to}"),
        Kind::Startup => "startup".to_string(),
        Kind::Edit { command } => command.clone(),
    }
}

fn outcome_label(outcome: &Outcome) -> String {
    match outcome {
        Outcome::RolledBack { by, .. } => format!("rolled_back by {by}"),
        other => other.name().to_string(),
    }
}

/// `xlb history`: one row per revision, in the given order.
pub fn render_history(revs: &[Summary]) -> String {
    let mut rows = vec![
        [
            "REVISION",
            "WHEN",
            "USER",
            "KIND",
            "OUTCOME",
            "CONFIG HASH",
            "MESSAGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for rev in revs {
        rows.push(vec![
            rev.number.to_string(),
            format_when(rev.created_at_unix_seconds),
            sanitize(&rev.user),
            kind_label(&rev.kind),
            outcome_label(&rev.outcome),
            rev.config_hash.chars().take(12).collect(),
            rev.message
                .as_deref()
                .map_or_else(|| "<none>".to_string(), one_line),
        ]);
    }
    crate::table::render(&rows)
}

/// `xlb history <N>`: the revision's headers, a blank line, then the exact
/// config text.
pub fn render_revision(rev: &Revision) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    // Multi-line values continue on rows with an empty label.
    let mut field = |label: &str, value: &str| {
        let mut lines = value.lines();
        rows.push(vec![
            format!("{label}:"),
            sanitize(lines.next().unwrap_or("")),
        ]);
        rows.extend(lines.map(|l| vec![String::new(), sanitize(l)]));
    };
    field("Revision", &rev.number.to_string());
    field("Created", &format_when(rev.created_at_unix_seconds));
    field("User", &rev.user);
    field("Kind", &kind_label(&rev.kind));
    if let Kind::AutomaticRollback { reason, .. } = &rev.kind {
        field("Rollback reason", reason);
    }
    match &rev.outcome {
        Outcome::Failed { error } => {
            field("Outcome", "failed");
            field("Error", error);
        }
        Outcome::RolledBack {
            at_unix_seconds,
            by,
            reason,
        } => {
            field(
                "Outcome",
                &format!("rolled_back by {by} at {}", format_when(*at_unix_seconds)),
            );
            field("Reason", reason);
        }
        other => field("Outcome", other.name()),
    }
    field("Message", rev.message.as_deref().unwrap_or("<none>"));
    field("Config file", &rev.config_file);
    field("Config hash", &rev.config_hash);
    field(
        "Plan",
        if rev.plan.is_some() {
            "recorded (see -o json)"
        } else {
            "none"
        },
    );
    let mut out = crate::table::render(&rows);
    out.push('\n');
    out.push_str(&rev.config_text);
    if !rev.config_text.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `xlb diff A B`: two revisions compared, the way `xlb plan` would compare
/// them: the unified diff of their config texts, and the plan from the
/// first to the second (each VIP's predicted shares under both, through
/// the same `plan::plan`, so it never disagrees with `xlb plan`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RevisionDiff {
    /// [`DIFF_SCHEMA_VERSION`].
    pub schema_version: u32,
    pub from: DiffSide,
    pub to: DiffSide,
    /// The unified diff (3 lines of context) of the config texts; empty
    /// when they are the same text.
    pub config_diff: String,
    /// The plan from `from` to `to` (`base_revision` is `from`'s number).
    pub plan: crate::plan::Plan,
}

/// The version of the `RevisionDiff` document.
pub const DIFF_SCHEMA_VERSION: u32 = 1;

/// One side of a [`RevisionDiff`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DiffSide {
    pub revision: u64,
    pub config_file: String,
    pub config_hash: String,
}

/// Why two revisions cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A revision's text no longer validates (recorded by an older xlb).
    #[error("revision {revision}: its config does not validate today: {source}")]
    Config {
        revision: u64,
        #[source]
        source: crate::config::ConfigError,
    },
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
}

/// `from` and `to` compared: their texts and their plan. The configs are
/// parsed as `revision N` (errors name `revision N:line:col:`).
pub fn diff(from: &Revision, to: &Revision) -> Result<RevisionDiff, DiffError> {
    let parse = |rev: &Revision| {
        crate::config::parse(&rev.config_text, &format!("revision {}", rev.number)).map_err(
            |source| DiffError::Config {
                revision: rev.number,
                source,
            },
        )
    };
    let (base, candidate) = (parse(from)?, parse(to)?);
    let mut plan = crate::plan::plan(&base, &candidate)?;
    plan.base_revision = Some(from.number);
    let label =
        |rev: &Revision| format!("revision {} ({})", rev.number, sanitize(&rev.config_file));
    let config_diff = if from.config_text == to.config_text {
        String::new()
    } else {
        similar::TextDiff::from_lines(&from.config_text, &to.config_text)
            .unified_diff()
            .context_radius(3)
            .header(&label(from), &label(to))
            .to_string()
    };
    let side = |rev: &Revision| DiffSide {
        revision: rev.number,
        config_file: rev.config_file.clone(),
        config_hash: rev.config_hash.clone(),
    };
    Ok(RevisionDiff {
        schema_version: DIFF_SCHEMA_VERSION,
        from: side(from),
        to: side(to),
        config_diff,
        plan,
    })
}

/// `xlb diff`'s text: the config diff (or that the texts are the same),
/// a blank line, then the plan from the first revision to the second.
pub fn render_diff(d: &RevisionDiff) -> String {
    let mut out = String::new();
    if d.config_diff.is_empty() {
        out.push_str(&format!(
            "revisions {} and {}: the same config text\n",
            d.from.revision, d.to.revision
        ));
    } else {
        for line in d.config_diff.lines() {
            out.push_str(&sanitize(line));
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "\nfrom revision {} to revision {} (shares: {} -> {}):\n",
        d.from.revision, d.to.revision, d.from.revision, d.to.revision
    ));
    out.push_str(&d.plan.render_table());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(number: u64, config_text: &str) -> Revision {
        Revision {
            schema_version: SCHEMA_VERSION,
            number,
            created_at_unix_seconds: 1_700_000_000.0 + number as f64,
            user: "alice".to_string(),
            message: Some(format!("change {number}")),
            config_file: "/etc/xlb/xlb.toml".to_string(),
            config_text: config_text.to_string(),
            config_hash: text_hash(config_text),
            kind: Kind::Apply,
            plan: Some(serde_json::json!({ "schema_version": 1, "changes": [] }).into()),
            outcome: Outcome::Applied,
        }
    }

    fn sample_history() -> Vec<Revision> {
        let mut r1 = rev(1, "a = 1\n");
        r1.created_at_unix_seconds = 1_700_000_000.25;
        r1.kind = Kind::Startup;
        r1.message = None;
        r1.outcome = Outcome::RolledBack {
            at_unix_seconds: 1_700_000_600.0,
            by: 3,
            reason: "operator".to_string(),
        };
        let mut r2 = rev(2, "a = 2\n");
        r2.user = "bob\x1b[31m".to_string();
        r2.message = Some("drain web-3\nsecond line".to_string());
        r2.outcome = Outcome::Failed {
            error: "kernel said no".to_string(),
        };
        let mut r3 = rev(3, "a = 1\n");
        r3.kind = Kind::Rollback { to: 1 };
        r3.outcome = Outcome::Baking;
        vec![r1, r2, r3]
    }

    #[test]
    fn history_table() {
        let h1 = &text_hash("a = 1\n")[..12];
        let h2 = &text_hash("a = 2\n")[..12];
        let expected = format!(
            "\
REVISION   WHEN                   USER       KIND            OUTCOME          CONFIG HASH    MESSAGE
1          2023-11-14T22:13:20Z   alice      startup         rolled_back by 3   {h1}   <none>
2          2023-11-14T22:13:22Z   bob [31m   apply           failed           {h2}   drain web-3 ...
3          2023-11-14T22:13:23Z   alice      rollback to 1   baking           {h1}   change 3
"
        );
        let summaries: Vec<Summary> = sample_history().iter().map(Revision::summary).collect();
        let got = render_history(&summaries);
        // Column widths come from table::render; compare cell by cell.
        let cells = |s: &str| -> Vec<Vec<String>> {
            s.lines()
                .map(|l| {
                    l.split("   ")
                        .map(|c| c.trim().to_string())
                        .filter(|c| !c.is_empty())
                        .collect()
                })
                .collect()
        };
        assert_eq!(cells(&got), cells(&expected), "{got}");
        assert!(!got.contains('\x1b'));
        assert!(got.lines().all(|l| !l.ends_with(' ')));
        assert_eq!(
            render_history(&[]),
            "REVISION   WHEN   USER   KIND   OUTCOME   CONFIG HASH   MESSAGE\n"
        );
    }

    #[test]
    fn revision_detail() {
        let mut revs = sample_history();
        let r1 = revs.remove(0);
        let got = render_revision(&r1);
        let expected = format!(
            "\
Revision:      1
Created:       2023-11-14T22:13:20Z
User:          alice
Kind:          startup
Outcome:       rolled_back by 3 at 2023-11-14T22:23:20Z
Reason:        operator
Message:       <none>
Config file:   /etc/xlb/xlb.toml
Config hash:   {}
Plan:          recorded (see -o json)

a = 1
",
            text_hash("a = 1\n")
        );
        assert_eq!(got, expected);

        let mut r = revs.remove(0);
        r.kind = Kind::AutomaticRollback {
            to: 1,
            reason: "skew 0.4".to_string(),
        };
        r.config_text = "no newline".to_string();
        r.plan = None;
        let got = render_revision(&r);
        assert!(
            got.contains("Kind:              automatic_rollback to 1\n"),
            "{got}"
        );
        assert!(got.contains("Rollback reason:   skew 0.4\n"), "{got}");
        assert!(
            got.contains("Outcome:           failed\nError:             kernel said no\n"),
            "{got}"
        );
        assert!(
            got.contains("Message:           drain web-3\n                   second line\n"),
            "{got}"
        );
        assert!(got.contains("Plan:              none\n"), "{got}");
        assert!(got.ends_with("\n\nno newline\n"), "{got}");
        assert!(!got.contains('\x1b'));
    }

    #[test]
    fn when_out_of_range() {
        assert_eq!(format_when(f64::NAN), "-");
        assert_eq!(format_when(-1.0), "-");
        assert_eq!(format_when(1e12), "-");
        assert_eq!(format_when(0.0), "1970-01-01T00:00:00Z");
    }

    /// `xlb diff`: the texts' unified diff, and the plan from the first
    /// revision to the second, the very plan `plan::plan` makes.
    #[test]
    fn diff_of_two_revisions_is_the_text_diff_and_the_plan() {
        let text = include_str!("../../examples/xlb.toml");
        let changed = text.replacen("weight = 2", "weight = 3", 1);
        let (a, b) = (rev(3, text), rev(5, &changed));
        let d = diff(&a, &b).unwrap();
        assert_eq!((d.from.revision, d.to.revision), (3, 5));
        assert!(
            d.config_diff.starts_with(
                "--- revision 3 (/etc/xlb/xlb.toml)\n+++ revision 5 (/etc/xlb/xlb.toml)\n@@ "
            ),
            "{}",
            d.config_diff
        );
        assert!(d.config_diff.contains("\n-  weight = 2\n+  weight = 3\n"));
        let parse = |t: &str| crate::config::parse(t, "x").unwrap();
        let mut want = crate::plan::plan(&parse(text), &parse(&changed)).unwrap();
        want.base_revision = Some(3);
        assert_eq!(d.plan, want);
        let shown = render_diff(&d);
        assert!(shown.starts_with("--- revision 3"), "{shown}");
        assert!(
            shown
                .contains("\nfrom revision 3 to revision 5 (shares: 3 -> 5):\nplan: 1 VIP changed"),
            "{shown}"
        );
        // The same text: said so, and a plan without changes.
        let same = diff(&a, &rev(4, text)).unwrap();
        assert!(same.config_diff.is_empty() && !same.plan.changed);
        assert!(render_diff(&same).starts_with("revisions 3 and 4: the same config text\n"));
        // A text that does not validate names its revision and position.
        let e = diff(&a, &rev(6, "interface = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("revision 6: its config does not validate today: revision 6:1:"),
            "{e}"
        );
    }
}
