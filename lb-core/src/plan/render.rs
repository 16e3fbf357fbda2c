//! The human form of a plan: borderless, kubectl-like text.
//!
//! ```text
//! vip web: changed, 52.3% of flows move to another backend
//!   backend b3: weight 1 -> 10
//!   backend b4 added (weight 1, active)
//!   BACKEND   CHANGE      WEIGHT    STATE         SHARE            CAPACITY SHARE
//!   b0        unchanged   1         active        33.3% -> 7.7%    7.7%
//!   b1        unchanged   1         active        33.3% -> 7.7%    7.7%
//!   b3        changed     1 -> 10   active        33.3% -> 76.9%   76.9%
//!   b4        added       - -> 1    - -> active   0.0% -> 7.7%     7.7%
//! vip dns: unchanged
//! vip old: removed
//!   VIP removed: 198.18.100.2:53/udp, 1 backend (1 active)
//!   BACKEND   CHANGE    WEIGHT   STATE         SHARE            CAPACITY SHARE
//!   b0        removed   1 -> -   active -> -   100.0% -> 0.0%   0.0%
//!
//! refused: 2 safety checks failed
//!   VIP   CHECK              FINDING
//!   web   max_flows_moved    52.3% of the flows would move to another backend (limit 30%)
//!   web   max_share_growth   b3: predicted share 76.9% is 2.31x today's 33.3% (limit 1.5x)
//! ```
//!
//! Config-wide changes (`hash_seed 1 -> 2`) come first, then a blank line.
//! Without any change the text is `no changes`, a blank line, and that every
//! safety check passes.

use std::fmt::Display;

use super::lints::percent;
use super::types::{BackendPlan, Change, Plan, VipPlan};

/// What a plan says when no safety check refuses it.
pub const PASSED: &str = "every safety check passes (max_share_growth, max_capacity_ratio, \
                          max_flows_moved, max_capacity_removed)";

impl Plan {
    /// The plan as text: the config-wide changes, each VIP with its change,
    /// the flows that move and its backends' shares before and after, then
    /// the failed safety checks (`refused:`) or that every check passes.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        if self.changed {
            for line in &self.details {
                out.push_str(line);
                if let Some(key) = line.split(' ').next()
                    && self.restart_only.iter().any(|r| r.key == key)
                {
                    out.push_str("   (restart-only)");
                }
                out.push('\n');
            }
            if !self.details.is_empty() {
                out.push('\n');
            }
            for vip in &self.vips {
                render_vip(&mut out, vip);
            }
        } else {
            out.push_str("no changes\n");
        }
        out.push('\n');
        if !self.restart_only.is_empty() {
            out.push_str(&format!(
                "needs a restart: an apply refuses {} (exit 2)\n",
                if self.restart_only.len() == 1 {
                    "this change"
                } else {
                    "these changes"
                }
            ));
            for r in &self.restart_only {
                out.push_str(&format!("  {r}\n"));
            }
        }
        if self.lints.is_empty() {
            out.push_str(PASSED);
            out.push('\n');
        } else {
            let n = self.lints.len();
            let plural = if n == 1 { "" } else { "s" };
            out.push_str(&format!("refused: {n} safety check{plural} failed\n"));
            let mut rows = vec![["VIP", "CHECK", "FINDING"].map(String::from).to_vec()];
            rows.extend(
                self.lints
                    .iter()
                    .map(|l| vec![l.vip.clone(), l.kind.key().to_string(), l.message.clone()]),
            );
            indent(&mut out, &crate::table::render(&rows));
        }
        out
    }
}

fn render_vip(out: &mut String, vip: &VipPlan) {
    match vip.change {
        Change::Unchanged => {
            out.push_str(&format!("vip {}: unchanged\n", vip.name));
            return;
        }
        Change::Changed => out.push_str(&format!(
            "vip {}: changed, {} of flows move to another backend\n",
            vip.name,
            percent(vip.flows_moved_ratio)
        )),
        Change::Added | Change::Removed => {
            out.push_str(&format!("vip {}: {}\n", vip.name, vip.change))
        }
    }
    for line in &vip.details {
        out.push_str(&format!("  {line}\n"));
    }
    for note in &vip.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    let cut: Vec<&str> = vip
        .backends
        .iter()
        .filter(|b| b.established.cut())
        .map(|b| b.name.as_str())
        .collect();
    if !cut.is_empty() {
        out.push_str(&format!(
            "  established connections of {} are cut (reset); draining a backend keeps them\n",
            cut.join(", ")
        ));
    }
    if vip.backends.is_empty() {
        return;
    }
    let mut rows = vec![
        [
            "BACKEND",
            "CHANGE",
            "WEIGHT",
            "STATE",
            "SHARE",
            "CAPACITY SHARE",
            "ESTABLISHED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    rows.extend(vip.backends.iter().map(backend_row));
    indent(out, &crate::table::render(&rows));
}

/// Appends `text`, each line indented by two spaces.
fn indent(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str(&format!("  {line}\n"));
    }
}

fn backend_row(b: &BackendPlan) -> Vec<String> {
    vec![
        b.name.clone(),
        b.change.to_string(),
        before_after(b.weight_before, b.weight_after),
        before_after(b.state_before.as_deref(), b.state_after.as_deref()),
        format!(
            "{} -> {}",
            percent(b.share_before_ratio),
            percent(b.share_after_ratio)
        ),
        percent(b.capacity_share_ratio),
        b.established.describe().to_string(),
    ]
}

/// `1` when the same, `1 -> 4` when not, `-` for absent.
fn before_after<T: Display + PartialEq>(before: Option<T>, after: Option<T>) -> String {
    let show = |v: &Option<T>| v.as_ref().map_or("-".to_string(), ToString::to_string);
    if before == after {
        show(&before)
    } else {
        format!("{} -> {}", show(&before), show(&after))
    }
}
