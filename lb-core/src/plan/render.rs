//! The human form of a plan: borderless, kubectl-like text.
//!
//! ```text
//! plan: 2 VIPs changed, 1 removed, 1 unchanged; refused by max_flows_moved, max_share_growth
//!   web: 1 backend added, 1 changed; refused by max_flows_moved, max_share_growth
//!   old: removed (1 backend)
//!
//! ~ vip web: changed, 52.3% of flows move to another backend
//!   backend b3: weight 1 -> 10
//!   backend b4 added (weight 1, active)
//!   BACKEND   CHANGE      WEIGHT    STATE         SHARE            CAPACITY SHARE   ESTABLISHED
//!     b0      unchanged   1         active        33.3% -> 7.7%    7.7%             kept
//!     b1      unchanged   1         active        33.3% -> 7.7%    7.7%             kept
//!   ~ b3      changed     1 -> 10   active        33.3% -> 76.9%   76.9%            kept
//!   + b4      added       - -> 1    - -> active   0.0% -> 7.7%     7.7%             -
//!   vip dns: unchanged
//! - vip old: removed
//!   VIP removed: 198.18.100.2:53/udp, 1 backend (1 active)
//!   ...
//!
//! refused: 2 safety checks failed
//!   VIP   CHECK              FINDING
//!   web   max_flows_moved    52.3% of the flows would move to another backend (limit 30%)
//!   web   max_share_growth   b3: predicted share 76.9% is 2.31x today's 33.3% (limit 1.5x)
//! ```
//!
//! The summary comes first: the whole plan on one line, then one line per
//! VIP that changes. `+ ~ -` mark what is added, changed and removed (VIPs
//! and backends). Config-wide changes (`hash_seed 1 -> 2`) come next, then
//! a blank line. Without any change the text is the summary, `no changes`,
//! a blank line, and that every safety check passes.
//!
//! Config-wide changes (`hash_seed 1 -> 2`) come first, then a blank line.
//! Without any change the text is `no changes`, a blank line, and that every
//! safety check passes.

use std::collections::HashMap;
use std::fmt::Display;

use rayon::prelude::*;

use crate::table::Rows;

use super::lints::{Percent, percent};
use super::types::{BackendPlan, Change, Lint, Plan, VipPlan};

/// What a plan says when no safety check refuses it.
pub const PASSED: &str = "every safety check passes (max_share_growth, max_capacity_ratio, \
                          max_flows_moved, max_capacity_removed)";

impl Plan {
    /// The plan as text: the config-wide changes, each VIP with its change,
    /// the flows that move and its backends' shares before and after, then
    /// the failed safety checks (`refused:`) or that every check passes.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let mut summary = self.summary().into_iter();
        out.push_str(&summary.next().unwrap_or_default());
        out.push('\n');
        for line in summary {
            out.push_str(&format!("  {line}\n"));
        }
        out.push('\n');
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
            render_vips(&mut out, &self.vips);
            if let Some(held) = &self.held {
                out.push_str(&held.line());
                out.push('\n');
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
            out.push_str(&format!("refused: {n} safety check{} failed\n", plural(n)));
            let mut rows = vec![["VIP", "CHECK", "FINDING"].map(String::from).to_vec()];
            rows.extend(
                self.lints
                    .iter()
                    .map(|l| vec![l.vip.clone(), l.kind.key().to_string(), l.message.clone()]),
            );
            crate::table::render_into(&mut out, &rows, "  ");
        }
        out
    }

    /// The plan in a few lines: the first for the whole plan
    /// (`plan: 1 VIP changed, 2 unchanged; refused by max_share_growth`),
    /// then one per VIP that changes (`web: 1 backend changed, 1 removed;
    /// refused by max_share_growth`).
    pub fn summary(&self) -> Vec<String> {
        let verdict = |lints: &mut dyn Iterator<Item = &Lint>| {
            let mut keys: Vec<&str> = lints.map(|l| l.kind.key()).collect();
            keys.sort_unstable();
            keys.dedup();
            if keys.is_empty() {
                None
            } else {
                Some(format!("refused by {}", keys.join(", ")))
            }
        };
        let mut whole = Vec::new();
        if self.changed {
            let vips = counts(self.vips.iter().map(|v| v.change), "VIP", true);
            whole.push(if vips.is_empty() {
                "no VIP changes".to_string()
            } else {
                vips
            });
            let n = self.details.len();
            if n > 0 {
                whole.push(format!("{n} config-wide change{}", plural(n)));
            }
        } else {
            whole.push("no changes".to_string());
        }
        if !self.restart_only.is_empty() {
            whole.push("needs a restart (an apply refuses it)".to_string());
        }
        whole.push(
            verdict(&mut self.lints.iter())
                .unwrap_or_else(|| "every safety check passes".to_string()),
        );
        let mut lines = vec![format!("plan: {}", whole.join("; "))];
        // Each VIP's findings, gathered once (a change of every VIP at the
        // declared limits can have a finding for each of 1,000 VIPs).
        let mut by_vip: HashMap<&str, Vec<&Lint>> = HashMap::new();
        for l in &self.lints {
            by_vip.entry(l.vip.as_str()).or_default().push(l);
        }
        for vip in self.vips.iter().filter(|v| v.change != Change::Unchanged) {
            let mut parts = Vec::new();
            match vip.change {
                Change::Added | Change::Removed => {
                    let n = vip.backends.len();
                    parts.push(format!("{} ({n} backend{})", vip.change, plural(n)));
                }
                _ => {
                    let backends = counts(vip.backends.iter().map(|b| b.change), "backend", false);
                    if !backends.is_empty() {
                        parts.push(backends);
                    }
                    let n = vip
                        .details
                        .iter()
                        .filter(|d| !d.starts_with("backend "))
                        .count();
                    if n > 0 {
                        parts.push(format!("{n} setting{} changed", plural(n)));
                    }
                }
            }
            let mut line = format!("{}: {}", vip.name, parts.join(", "));
            let found = by_vip.get(vip.name.as_str()).map_or(&[][..], Vec::as_slice);
            if let Some(v) = verdict(&mut found.iter().copied()) {
                line.push_str(&format!("; {v}"));
            }
            lines.push(line);
        }
        lines
    }
}

/// `s` after a count other than one.
fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `2 VIPs changed, 1 removed, 3 unchanged`: how many of each change, the
/// noun once, after the first count; empty when there are none. Unchanged
/// ones are counted only when `unchanged` says so.
fn counts(changes: impl Iterator<Item = Change>, noun: &str, unchanged: bool) -> String {
    let changes: Vec<Change> = changes.collect();
    let mut out: Vec<String> = Vec::new();
    for kind in [
        Change::Added,
        Change::Changed,
        Change::Removed,
        Change::Unchanged,
    ] {
        let n = changes.iter().filter(|c| **c == kind).count();
        if n == 0 || (kind == Change::Unchanged && !unchanged) {
            continue;
        }
        out.push(if out.is_empty() {
            format!("{n} {noun}{} {kind}", plural(n))
        } else {
            format!("{n} {kind}")
        });
    }
    out.join(", ")
}

/// `+ ~ -` for added, changed, removed; a blank for unchanged.
fn marker(change: Change) -> char {
    match change {
        Change::Added => '+',
        Change::Changed => '~',
        Change::Removed => '-',
        Change::Unchanged => ' ',
    }
}

/// From this many VIPs on, [`render_vips`] renders them on every core.
const PARALLEL_VIPS: usize = 64;

/// Each VIP's part, in order. A change of every VIP at the declared limits
/// (1,000 VIPs x 64 backends) is 5 MB of text: the VIPs are then rendered
/// on every core, each into a text of its own, and joined.
fn render_vips(out: &mut String, vips: &[VipPlan]) {
    if vips.len() < PARALLEL_VIPS {
        for vip in vips {
            render_vip(out, vip);
        }
        return;
    }
    let parts: Vec<String> = vips
        .par_iter()
        .map(|vip| {
            let mut part = String::new();
            render_vip(&mut part, vip);
            part
        })
        .collect();
    out.reserve(parts.iter().map(String::len).sum());
    for part in parts {
        out.push_str(&part);
    }
}

fn render_vip(out: &mut String, vip: &VipPlan) {
    let mark = marker(vip.change);
    match vip.change {
        Change::Unchanged => {
            out.push_str(&format!("  vip {}: unchanged\n", vip.name));
            return;
        }
        Change::Changed => out.push_str(&format!(
            "{mark} vip {}: changed, {} of flows move to another backend\n",
            vip.name,
            percent(vip.flows_moved_ratio)
        )),
        Change::Added | Change::Removed => {
            out.push_str(&format!("{mark} vip {}: {}\n", vip.name, vip.change))
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
    let mut rows = Rows::with_header(&[
        "BACKEND",
        "CHANGE",
        "WEIGHT",
        "STATE",
        "SHARE",
        "CAPACITY SHARE",
        "ESTABLISHED",
    ]);
    rows.reserve(vip.backends.len(), 7, 10);
    for b in &vip.backends {
        backend_row(&mut rows, b);
    }
    rows.render_into(out, "  ");
}

fn backend_row(rows: &mut Rows, b: &BackendPlan) {
    rows.cell_fmt(format_args!("{} {}", marker(b.change), b.name))
        .cell_fmt(format_args!("{}", b.change));
    before_after(rows, b.weight_before, b.weight_after);
    before_after(rows, b.state_before.as_deref(), b.state_after.as_deref());
    rows.cell_fmt(format_args!(
        "{} -> {}",
        Percent(b.share_before_ratio),
        Percent(b.share_after_ratio)
    ))
    .cell_fmt(format_args!("{}", Percent(b.capacity_share_ratio)))
    .cell(b.established.describe())
    .end_row();
}

/// A cell of `1` when the same, `1 -> 4` when not, `-` for absent.
fn before_after<T: Display + PartialEq>(rows: &mut Rows, before: Option<T>, after: Option<T>) {
    if before == after {
        rows.cell_fmt(format_args!("{}", Shown(&before)));
    } else {
        rows.cell_fmt(format_args!("{} -> {}", Shown(&before), Shown(&after)));
    }
}

/// A value, or `-` for none.
struct Shown<'a, T>(&'a Option<T>);

impl<T: Display> Display for Shown<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On every core or not, the VIPs' parts come in their order.
    #[test]
    fn many_vips_render_in_order() {
        for n in [3, PARALLEL_VIPS, 3 * PARALLEL_VIPS + 1] {
            let vips: Vec<VipPlan> = (0..n)
                .map(|i| VipPlan {
                    name: format!("vip{i}"),
                    change: if i % 3 == 0 {
                        Change::Unchanged
                    } else {
                        Change::Changed
                    },
                    details: vec![format!("table_size {i} -> {}", i + 1)],
                    flows_moved_ratio: i as f64 / n as f64,
                    backends: Vec::new(),
                    notes: Vec::new(),
                })
                .collect();
            let mut one_by_one = String::new();
            for vip in &vips {
                render_vip(&mut one_by_one, vip);
            }
            let mut rendered = String::new();
            render_vips(&mut rendered, &vips);
            assert_eq!(rendered, one_by_one, "{n} VIPs");
        }
    }
}
