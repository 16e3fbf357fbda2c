//! The rules that turn shares into verdicts: the rate gate (rule 4), the off
//! condition and its significance test (5), the cause (6), the hold timer
//! (7) and the VIP's most severe signal (8), with the sentences that explain
//! them.

use super::shares::RATIO_FLOOR;
use super::types::{Cause, Signal, State, TIME_SLACK_SECONDS, Thresholds, Verdict};

/// How many standard deviations a worst backend's count must be from its
/// expectation before it may raise an alarm. At 4 sigma a window of honest
/// traffic almost never trips it, yet a 1.5x skew is significant from about
/// a hundred events on the smallest backend.
pub const SIGNIFICANCE_SIGMAS: f64 = 4.0;

/// Below this table/weight distance the table "matches weights" in the
/// explanation; wording only, the cause does not depend on it.
const TABLE_MATCH_RATIO: f64 = 1.05;

/// A verdict with only a state and a reason (Ok and LowRate).
pub fn plain(state: State, reason: impl Into<String>) -> Verdict {
    Verdict {
        state,
        cause: None,
        backend: None,
        ratio: None,
        since_unix_seconds: None,
        reason: reason.into(),
    }
}

pub fn ok() -> Verdict {
    plain(State::Ok, "within thresholds")
}

/// Rule 4: `Some(reason)` when the signal is not judged at these rates.
/// Packets and bytes share the packet gate: bytes/s have no natural floor.
pub fn gate(
    signal: Signal,
    new_flow_rate: f64,
    packet_rate: f64,
    th: &Thresholds,
) -> Option<String> {
    let (rate, min, unit) = match signal {
        Signal::NewFlows => (new_flow_rate, th.min_new_flow_rate, "new flows/s"),
        Signal::Packets | Signal::Bytes => (packet_rate, th.min_packet_rate, "packets/s"),
    };
    // Written so that a NaN minimum gates (never judges) rather than passes.
    if rate >= min {
        None
    } else {
        Some(format!("{rate:.1} {unit} is below the minimum {min}"))
    }
}

/// Rule 5, first half: the worst ratio or the cv is outside the thresholds.
pub fn out_of_band(worst_ratio: f64, cv: Option<f64>, th: &Thresholds) -> bool {
    worst_ratio > th.max_ratio
        || worst_ratio < 1.0 / th.max_ratio
        || cv.is_some_and(|cv| cv > th.max_cv)
}

/// Rule 5, second half: `count` of `total` events is further from the
/// expected `share · total` than [`SIGNIFICANCE_SIGMAS`] binomial standard
/// deviations.
pub fn significant(count: f64, share: f64, total: f64) -> bool {
    let sd = (total * share * (1.0 - share)).max(0.0).sqrt();
    (count - share * total).abs() > SIGNIFICANCE_SIGMAS * sd
}

/// Rule 6: which factor of `observed / expected = (table / expected) ·
/// (observed / table)` is further from 1.
pub fn cause(expected: f64, table: f64, observed: f64) -> Cause {
    // No slots at all: whatever traffic does, the table is why.
    if table.is_nan() || table <= 0.0 {
        return Cause::Table;
    }
    let table_part = (table / expected).ln().abs();
    let traffic_part = (observed.max(RATIO_FLOOR) / table).ln().abs();
    if table_part >= traffic_part {
        Cause::Table
    } else {
        Cause::Traffic
    }
}

/// Rule 7: since when one signal of one VIP has been off.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Hold {
    since: Option<f64>,
}

impl Hold {
    /// Whether the signal was not off at the last tick.
    pub fn is_clear(&self) -> bool {
        self.since.is_none()
    }

    /// The signal is not off this tick.
    pub fn clear(&mut self) {
        self.since = None;
    }

    /// The signal is off at `now`: Pending until it has been off for
    /// `hold_seconds`, then Imbalanced. Returns the state and the time of
    /// the first off tick.
    pub fn off(&mut self, now: f64, hold_seconds: f64) -> (State, f64) {
        let since = *self.since.get_or_insert(now);
        let state = if now - since >= hold_seconds - TIME_SLACK_SECONDS {
            State::Imbalanced
        } else {
            State::Pending
        };
        (state, since)
    }
}

/// Everything the sentence and the verdict of an off signal need.
#[derive(Clone, Debug)]
pub struct Off<'a> {
    pub signal: Signal,
    pub state: State,
    pub backend: &'a str,
    pub ratio: f64,
    pub observed: f64,
    pub expected: f64,
    pub table: f64,
    pub cv: Option<f64>,
    pub since: f64,
    pub now: f64,
}

/// The Pending/Imbalanced verdict, e.g. "new_flows: b1 gets 2.29x its
/// expected share (57.1% vs 25.0%) since 12s; table share 25.0% matches
/// weights: traffic skew".
pub fn off_verdict(off: &Off<'_>, th: &Thresholds) -> Verdict {
    let cause = cause(off.expected, off.table, off.observed);
    let mut reason = format!(
        "{}: {} gets {:.2}x its expected share ({:.1}% vs {:.1}%)",
        off.signal.as_str(),
        off.backend,
        off.ratio,
        100.0 * off.observed,
        100.0 * off.expected,
    );
    // When only the spread is off, say so: the worst ratio alone would look
    // harmless.
    if let Some(cv) = off.cv.filter(|_| !out_of_band(off.ratio, None, th)) {
        reason.push_str(&format!(", cv {cv:.2} is above {}", th.max_cv));
    }
    reason.push_str(&format!(" since {:.0}s; ", off.now - off.since));
    let table_pct = 100.0 * off.table;
    let table_vs_weight = off.table / off.expected;
    reason.push_str(&match cause {
        Cause::Table if off.table > 0.0 => {
            format!("table share {table_pct:.1}% is {table_vs_weight:.2}x its weight: table skew")
        }
        Cause::Table => "it has no slots in the table: table skew".to_owned(),
        Cause::Traffic
            if (1.0 / TABLE_MATCH_RATIO..=TABLE_MATCH_RATIO).contains(&table_vs_weight) =>
        {
            format!("table share {table_pct:.1}% matches weights: traffic skew")
        }
        Cause::Traffic => {
            format!("table share {table_pct:.1}% explains less of it: traffic skew")
        }
    });
    Verdict {
        state: off.state,
        cause: Some(cause),
        backend: Some(off.backend.to_owned()),
        ratio: Some(off.ratio),
        since_unix_seconds: Some(off.since),
        reason,
    }
}

/// Rule 8: the most severe verdict; the earliest wins a tie (callers pass
/// signals in [`super::SIGNALS`] order).
pub fn most_severe<'a>(verdicts: impl IntoIterator<Item = &'a Verdict>) -> Option<&'a Verdict> {
    let mut best: Option<&Verdict> = None;
    for v in verdicts {
        if best.is_none_or(|b| v.state.severity() > b.state.severity()) {
            best = Some(v);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_uses_the_packet_rate_for_bytes() {
        let th = Thresholds::default();
        assert_eq!(
            gate(Signal::NewFlows, 3.21, 1e6, &th).as_deref(),
            Some("3.2 new flows/s is below the minimum 10")
        );
        assert_eq!(gate(Signal::NewFlows, 10.0, 0.0, &th), None);
        assert_eq!(
            gate(Signal::Bytes, 1e6, 45.0, &th).as_deref(),
            Some("45.0 packets/s is below the minimum 100")
        );
        assert_eq!(gate(Signal::Packets, 0.0, 100.0, &th), None);
        let nan = Thresholds {
            min_packet_rate: f64::NAN,
            ..Thresholds::default()
        };
        assert!(gate(Signal::Packets, 1e9, 1e9, &nan).is_some());
    }

    #[test]
    fn band_is_symmetric_and_cv_counts() {
        let th = Thresholds::default();
        assert!(!out_of_band(1.5, Some(0.25), &th));
        assert!(out_of_band(1.51, None, &th));
        assert!(out_of_band(0.66, None, &th));
        assert!(!out_of_band(0.67, None, &th));
        assert!(out_of_band(1.0, Some(0.26), &th));
    }

    #[test]
    fn significance_is_four_binomial_sigmas() {
        // N = 400, e = 0.25: mean 100, sd sqrt(75) = 8.66, 4 sd = 34.6.
        assert!(!significant(134.0, 0.25, 400.0));
        assert!(significant(135.0, 0.25, 400.0));
        assert!(significant(65.0, 0.25, 400.0));
        assert!(!significant(66.0, 0.25, 400.0));
        // A lone backend (e = 1) is never significantly off.
        assert!(!significant(400.0, 1.0, 400.0));
        assert!(!significant(0.0, 0.5, 0.0));
    }

    #[test]
    fn cause_is_the_larger_factor() {
        // Table gives 4/7 against 1/4, traffic follows the table.
        assert_eq!(cause(0.25, 4.0 / 7.0, 4.0 / 7.0), Cause::Table);
        // Table matches, traffic does not.
        assert_eq!(cause(0.25, 0.25, 4.0 / 7.0), Cause::Traffic);
        // Both contribute; the table a bit more.
        assert_eq!(cause(0.25, 0.4, 0.5), Cause::Table);
        assert_eq!(cause(0.25, 0.3, 0.5), Cause::Traffic);
        // No slots: the table.
        assert_eq!(cause(0.25, 0.0, 0.0), Cause::Table);
        assert_eq!(cause(0.25, f64::NAN, 0.3), Cause::Table);
        // Starving despite its slots: traffic.
        assert_eq!(cause(0.25, 0.25, 0.0), Cause::Traffic);
    }

    #[test]
    fn hold_goes_pending_then_imbalanced_and_clears() {
        let mut h = Hold::default();
        assert_eq!(h.off(100.0, 3.0), (State::Pending, 100.0));
        assert_eq!(h.off(101.0, 3.0), (State::Pending, 100.0));
        assert_eq!(h.off(102.0, 3.0), (State::Pending, 100.0));
        assert_eq!(h.off(103.0, 3.0), (State::Imbalanced, 100.0));
        h.clear();
        assert_eq!(h.off(104.0, 3.0), (State::Pending, 104.0));
        // Hold 0: imbalanced at once.
        assert_eq!(Hold::default().off(1.0, 0.0).0, State::Imbalanced);
    }

    #[test]
    fn off_sentence() {
        let th = Thresholds::default();
        let off = Off {
            signal: Signal::NewFlows,
            state: State::Imbalanced,
            backend: "b1",
            ratio: 16.0 / 7.0,
            observed: 4.0 / 7.0,
            expected: 0.25,
            table: 0.25,
            cv: Some(0.74),
            since: 100.0,
            now: 112.0,
        };
        let v = off_verdict(&off, &th);
        assert_eq!(
            v.reason,
            "new_flows: b1 gets 2.29x its expected share (57.1% vs 25.0%) since 12s; \
             table share 25.0% matches weights: traffic skew"
        );
        assert_eq!(v.cause, Some(Cause::Traffic));
        assert_eq!(v.backend.as_deref(), Some("b1"));
        assert_eq!(v.since_unix_seconds, Some(100.0));

        let table = off_verdict(
            &Off {
                table: 4.0 / 7.0,
                ..off.clone()
            },
            &th,
        );
        assert_eq!(table.cause, Some(Cause::Table));
        assert!(
            table
                .reason
                .ends_with("table share 57.1% is 2.29x its weight: table skew")
        );

        let cv_only = off_verdict(
            &Off {
                ratio: 1.4,
                observed: 0.35,
                cv: Some(0.3),
                ..off.clone()
            },
            &th,
        );
        assert!(
            cv_only.reason.contains(", cv 0.30 is above 0.25 since 12s"),
            "{}",
            cv_only.reason
        );
    }

    #[test]
    fn most_severe_prefers_the_first_on_ties() {
        let mut a = plain(State::Pending, "a");
        let b = plain(State::Pending, "b");
        let c = plain(State::Ok, "c");
        assert_eq!(most_severe([&c, &a, &b]).unwrap().reason, "a");
        a.state = State::LowRate;
        assert_eq!(most_severe([&a, &c]).unwrap().reason, "c");
        assert_eq!(most_severe([]), None);
    }
}
