//! What a plan says: the JSON contract of `xlb plan -o json` (a
//! `schema_version`, raw numbers, `_ratio` suffixes for fractions in 0..=1).

use serde::{Deserialize, Serialize};

use crate::maglev::MaglevError;

/// The version of the `Plan` document; bumped on an incompatible change.
/// 2: a finding's `kind` is its `[safety]` key (`max_share_growth`, was
/// `share_growth`), with its `limit` and `value`; a top-level `refused`;
/// `restart_only`, `warnings`, each VIP's `notes` and each backend's
/// `established`.
pub const SCHEMA_VERSION: u32 = 2;

/// What a change of config would do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// `SCHEMA_VERSION`.
    pub schema_version: u32,
    /// The daemon's live revision the plan was made against; set by the
    /// caller (an offline plan has none), never computed here.
    pub base_revision: Option<u64>,
    /// `config_hash` of the config applied today.
    pub base_config_hash: String,
    /// `config_hash` of the candidate config.
    pub config_hash: String,
    /// The candidate's VIPs in file order, then the VIPs it removes (in the
    /// base's file order).
    pub vips: Vec<VipPlan>,
    /// Changes outside any one VIP: `interface eth0 -> eth1`,
    /// `hash_seed 1 -> 2`, `metrics_address ...`.
    pub details: Vec<String>,
    /// Every safety check the change fails; empty when it may be applied.
    pub lints: Vec<Lint>,
    /// A safety check refuses it (`lints` is not empty): what `xlb apply`
    /// without `--force` would answer with exit 1.
    #[serde(default)]
    pub refused: bool,
    /// Changes of keys that only a restart takes (`config::keys`): an apply
    /// refuses them (exit 2), and so does the plan.
    #[serde(default)]
    pub restart_only: Vec<crate::config::keys::RestartChange>,
    /// What in the candidate works but is likely a mistake
    /// (`config::warnings`); never a refusal.
    #[serde(default)]
    pub warnings: Vec<crate::config::warnings::Warning>,
    /// Whether anything differs at all. The order of VIPs or backends in the
    /// file is not a difference (tables do not depend on it), even though
    /// it changes `config_hash`.
    pub changed: bool,
    /// The live flows the change leaves held by the connection table
    /// (`held`): only from a daemon, which reads its table; none offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<super::PlanHeld>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipPlan {
    pub name: String,
    pub change: Change,
    /// One line per difference: `table_size 65537 -> 131071`,
    /// `backend b2: weight 1 -> 4`, `backend b9 added (weight 1, active)`.
    pub details: Vec<String>,
    /// Fraction of the VIP's flows that would hash to another backend
    /// (see `flows`); 1.0 for an added or removed VIP.
    pub flows_moved_ratio: f64,
    /// Today's and the candidate's backends together, by name; none for a
    /// VIP whose config did not change at all (`VipPlan::identical`).
    pub backends: Vec<BackendPlan>,
    /// How the safety checks read this change, where it is not obvious
    /// (backends leaving: which checks judge the share the others take).
    #[serde(default)]
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendPlan {
    pub name: String,
    pub change: Change,
    /// None when the backend is not in that config.
    pub weight_before: Option<u32>,
    pub weight_after: Option<u32>,
    /// `active`, `draining`, `disabled`; None when not in that config.
    pub state_before: Option<String>,
    pub state_after: Option<String>,
    /// Share of today's table (0 when absent or not active).
    pub share_before_ratio: f64,
    /// Share of the candidate's table: the predicted share of new flows.
    pub share_after_ratio: f64,
    /// capacity / the sum of the capacities of the candidate VIP's active
    /// backends (0 when absent or not active in the candidate).
    pub capacity_share_ratio: f64,
    /// What the change does to the backend's established connections.
    #[serde(default)]
    pub established: Established,
}

/// A backend's established connections after a change. Draining or
/// disabling a backend keeps them (its connection-table entries stay
/// valid); removing it, or changing its address, cuts them: their packets
/// are re-steered onto the new table (`conn_resteer`) and the backend that
/// gets them resets them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Established {
    /// They go on to the same backend.
    #[default]
    Kept,
    /// Removed (or its VIP removed): they are reset.
    CutRemoved,
    /// Its address changed: they go to the new address and are reset.
    CutAddressChanged,
    /// An added backend has none.
    None,
}

impl Established {
    /// Cut: the backend's established connections are reset.
    pub fn cut(self) -> bool {
        matches!(
            self,
            Established::CutRemoved | Established::CutAddressChanged
        )
    }

    /// In the plan's table.
    pub fn describe(self) -> &'static str {
        match self {
            Established::Kept => "kept",
            Established::CutRemoved => "cut (removed)",
            Established::CutAddressChanged => "cut (new address)",
            Established::None => "-",
        }
    }
}

/// One failed safety check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lint {
    pub vip: String,
    /// The backend the check is about; None for a check of the whole VIP.
    pub backend: Option<String>,
    pub kind: LintKind,
    /// Names the backend (or what leaves) and the predicted load against
    /// the limit: `auth-3: predicted share 41.2% is 4.12x today's 10.0%
    /// (limit 1.5x)`.
    pub message: String,
    /// The check's limit (the `[safety]` key's value) and what the change
    /// would reach, in the same unit (a ratio, or a fraction of 1).
    #[serde(default)]
    pub limit: f64,
    #[serde(default)]
    pub value: f64,
}

/// The checks, one per key of `[safety]`, and named by it everywhere: the
/// config, the plan's table, its JSON (`kind`) and the docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LintKind {
    #[serde(rename = "max_share_growth")]
    ShareGrowth,
    #[serde(rename = "max_capacity_ratio")]
    OverCapacity,
    #[serde(rename = "max_flows_moved")]
    FlowsMoved,
    #[serde(rename = "max_capacity_removed")]
    CapacityRemoved,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// A table cannot be built. A validated config always builds; this is
    /// for configs assembled in code.
    #[error("{which} config: vip {vip:?}: Maglev table: {source}")]
    Maglev {
        /// `base` or `candidate`.
        which: &'static str,
        vip: String,
        #[source]
        source: MaglevError,
    },
}

/// A fraction as the plan holds it: rounded to 12 decimals, so that it
/// survives a trip through JSON exactly (serde_json parses numbers of up to
/// 15 significant digits exactly, longer ones to within an ulp) and a plan
/// read back from a file equals the plan made.
pub(super) fn ratio(x: f64) -> f64 {
    (x * 1e12).round() / 1e12
}

impl VipPlan {
    /// A VIP whose config is the same on both sides, under the same seed:
    /// unchanged, and not diffed (its backends are not listed: their
    /// shares are today's, in `xlb status`).
    pub fn identical(name: &str) -> VipPlan {
        VipPlan {
            name: name.to_string(),
            change: Change::Unchanged,
            details: Vec::new(),
            flows_moved_ratio: 0.0,
            backends: Vec::new(),
            notes: Vec::new(),
        }
    }
}

impl Plan {
    /// Whether a safety check refuses the change.
    pub fn refused(&self) -> bool {
        !self.lints.is_empty()
    }

    /// Whether the change needs a restart (an apply refuses it as bad
    /// input, whatever `--force` says).
    pub fn needs_restart(&self) -> bool {
        !self.restart_only.is_empty()
    }

    /// The candidate is the config applied today, setting for setting
    /// (`config_hash`: comments, blank lines and spacing are not in it).
    /// An apply of it changes nothing for a bake to watch.
    pub fn same_config(&self) -> bool {
        self.config_hash == self.base_config_hash
    }

    /// What `xlb plan`'s exit status and warnings depend on.
    pub fn verdict(&self) -> Verdict {
        Verdict {
            changed: self.changed,
            refused: self.refused(),
            restart_only: self.restart_only.clone(),
            warnings: self.warnings.clone(),
        }
    }

    /// The plan as a person reads it ([`Plan::render_table`]) and its
    /// verdict.
    pub fn to_text(&self) -> PlanText {
        PlanText {
            text: self.render_table(),
            verdict: self.verdict(),
        }
    }
}

/// What `xlb plan` decides by, apart from the plan itself: whether it
/// changes anything, whether a safety check refuses it, what only a
/// restart takes, and the candidate's warnings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub changed: bool,
    pub refused: bool,
    #[serde(default)]
    pub restart_only: Vec<crate::config::keys::RestartChange>,
    #[serde(default)]
    pub warnings: Vec<crate::config::warnings::Warning>,
}

impl Verdict {
    /// As [`Plan::needs_restart`].
    pub fn needs_restart(&self) -> bool {
        !self.restart_only.is_empty()
    }
}

/// A plan as text, with its verdict: what the daemon answers `xlb plan`
/// for the human output, instead of the whole document. At 1,000 VIPs x
/// 64 backends the document is 25 MB of JSON that the CLI parsed and then
/// rendered into 5 MB of text; the text is rendered where the plan is
/// made, on every core (docs/BENCHMARKS.md, issue 20, "Tenth round").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanText {
    /// [`Plan::render_table`]'s text.
    pub text: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl LintKind {
    /// The `[safety]` key of the check.
    pub fn key(self) -> &'static str {
        match self {
            LintKind::ShareGrowth => "max_share_growth",
            LintKind::OverCapacity => "max_capacity_ratio",
            LintKind::FlowsMoved => "max_flows_moved",
            LintKind::CapacityRemoved => "max_capacity_removed",
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
        })
    }
}
