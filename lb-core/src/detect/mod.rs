//! Imbalance detection: pure, no I/O. Every second the daemon hands the
//! detector each VIP's cumulative counters per backend; the detector turns
//! them into shares over a sliding window and a verdict per VIP and signal.
//!
//! The types in `types` (re-exported here) are the contract with the
//! daemon, the status document and the metrics. The work is split by job,
//! each file using only those before it: `types` is plain data, `window`
//! keeps the history and computes deltas, `shares` does the share/ratio/cv
//! arithmetic, `verdict` holds the rules (gate, off condition, cause,
//! hold), `vip` ties them together for one VIP, and this file keeps the
//! [`Detector`] (one `vip` state per VIP). `tests` drives whole ticks
//! through [`Detector`].
//!
//! # Semantics
//!
//! Three signals are judged independently: new flows, packets and bytes
//! ([`SIGNALS`]). For each VIP and tick:
//!
//! 1. **Window.** The detector keeps the VIP's history of
//!    `(time, cumulative counters per backend)`. A tick's deltas are the
//!    newest snapshot minus a *base* snapshot: the newest earlier snapshot
//!    that is at least `window_seconds` old, or the oldest one while the
//!    history is shorter than that. Older snapshots are dropped. So once
//!    warmed up the span is `window_seconds` (plus at most one tick of
//!    jitter), never less; with 1 s ticks and a 10 s window it is exactly
//!    10 s. Ages are compared with 1 ms of slack ([`TIME_SLACK_SECONDS`]) so
//!    float rounding of unix timestamps cannot shift the window by a tick.
//!    Rates are delta / span. With fewer than two snapshots every signal is
//!    `LowRate` with reason "warming up". A window of 0, negative or NaN
//!    compares consecutive ticks; at most 4096 snapshots are kept whatever
//!    the window.
//! 2. **Reset.** The history and the hold timers of a VIP are dropped (it
//!    starts over, "warming up") when the set of backend names, an `active`
//!    flag, an expected share or a table share changes (shares compared with
//!    1e-9 of slack), when any cumulative counter goes backwards, or when the
//!    clock does not move forward (or is not finite). Backends are matched
//!    by name, so a sample that only lists them in another order is no
//!    change.
//! 3. **Shares.** Per signal, over active backends only: observed share
//!    `o_i = delta_i / N` with `N = Σ delta` over active backends; ratio
//!    `r_i = o_i / e_i` (no ratio when `e_i` is below 1e-12); the worst
//!    backend is the one with the largest `|ln max(r_i, 1e-12)|` (so a
//!    starving backend, `r = 0`, is the worst), ties broken by name; the
//!    coefficient of variation is `cv = sqrt(Σ e_i (r_i − 1)²)`, weighted by
//!    expected share so its mean is exactly 1 and for equal weights it is
//!    the plain population CV. When `N = 0` there are no shares (None, never
//!    NaN). Inactive backends get a rate but no share or ratio.
//! 4. **Gate.** The new-flow signal is judged only if the VIP's new-flow
//!    rate is at least `min_new_flow_rate`; packets and bytes only if the
//!    packet rate is at least `min_packet_rate`. Otherwise, or with no
//!    events at all in the window, the signal is `LowRate`.
//! 5. **Off.** A judged signal is off when (worst `r > max_ratio` or worst
//!    `r < 1/max_ratio` or `cv > max_cv`) *and* the worst backend's
//!    deviation is significant: `|d − e·N| > 4·sqrt(N·e·(1−e))`, a 4-sigma
//!    binomial test that keeps low-volume noise silent. It needs
//!    independent events, and only new flows are: the hash places each
//!    flow, and all of a flow's packets and bytes go where it went. So new
//!    flows use their own count, and packets and bytes are taken in flow
//!    equivalents: `N` is the window's new flows over active backends (or
//!    its packets, if fewer) and `d = o_i · N` with `o_i` the packet or byte
//!    share. Flows older than the window only make `N` smaller and the test
//!    more careful: a few long-lived flows sharing a backend are luck.
//! 6. **Cause.** The worst ratio factors as
//!    `r = (t_i / e_i) · (o_i / t_i)` with `t_i` the backend's share of the
//!    live Maglev table: what the table gives it against its weight, and
//!    what traffic does against the table. The cause is [`Cause::Table`] if
//!    `|ln(t_i/e_i)| ≥ |ln(max(o_i, 1e-12)/t_i)|` or `t_i = 0`, else
//!    [`Cause::Traffic`].
//! 7. **Hold.** Per VIP and signal the detector remembers the first tick of
//!    the current off streak. Off for less than `hold_seconds` (1 ms slack)
//!    is `Pending`, then `Imbalanced`; `since_unix_seconds` is that first
//!    tick's time. Any tick where the signal is not off (`Ok` or `LowRate`)
//!    clears it.
//! 8. **VIP verdict.** The most severe signal verdict, severity
//!    `Imbalanced > Pending > Ok > LowRate`, ties to the first of new flows,
//!    packets, bytes. With no active backend: `LowRate`, "no active
//!    backends".
//!
//! Inputs are never trusted to be sane: NaN or negative shares count as 0,
//! sums are taken in u128, and every number in a report is finite, so a
//! report always serializes to JSON and back.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

mod shares;
mod types;
mod verdict;
mod vip;
mod window;

#[cfg(test)]
mod tests;

pub use types::{
    BackendSample, BackendShare, Cause, Cumulative, SIGNALS, Signal, SignalReport, State,
    TIME_SLACK_SECONDS, Thresholds, VERDICT_LABELS, Verdict, VipReport, VipSample,
};

/// The stateful detector: one window and one set of hold timers per VIP.
#[derive(Debug, Default)]
pub struct Detector {
    vips: HashMap<String, vip::VipState>,
    scratch: vip::Scratch,
    /// Where the per-backend shares go.
    shares: PerBackend,
    /// Make every report anew (tests compare the reused ones with these).
    #[cfg(test)]
    always_fresh: bool,
}

/// Whether a detector's reports carry each signal's per-backend shares
/// (`SignalReport::backends`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum PerBackend {
    /// In every report [`Detector::observe`] hands back.
    #[default]
    InReports,
    /// Only in [`Detector::report`]'s, made when asked.
    OnDemand,
    /// Never.
    Never,
}

impl Detector {
    pub fn new() -> Self {
        Self::default()
    }

    /// A detector whose reports carry the verdicts and each signal's
    /// figures, but no per-backend shares: for a caller that only judges
    /// (the bake's capacity view), at a fraction of the memory.
    pub fn verdicts_only() -> Self {
        Self {
            shares: PerBackend::Never,
            ..Self::default()
        }
    }

    /// A detector whose [`Detector::observe`] reports carry no per-backend
    /// shares (as [`Detector::verdicts_only`]'s), and whose
    /// [`Detector::report`] makes a VIP's whole report when asked, from
    /// what the VIP keeps anyway: the same report [`Detector::new`]'s
    /// `observe` handed back at the last tick. For a caller that judges
    /// every tick and shows the shares now and then (the daemon: its status
    /// document); at 1,000 VIPs x 64 backends the kept shares were ~20 MB.
    pub fn shares_on_demand() -> Self {
        Self {
            shares: PerBackend::OnDemand,
            ..Self::default()
        }
    }

    /// The last report of `vip` (None if the last tick did not have it),
    /// with the per-backend shares unless the detector is
    /// [`Detector::verdicts_only`]. Made here for a
    /// [`Detector::shares_on_demand`] detector, else the kept report.
    pub fn report(&self, vip: &str) -> Option<Cow<'_, VipReport>> {
        let state = self.vips.get(vip)?;
        match self.shares {
            PerBackend::OnDemand => state
                .report_with_shares(&mut vip::Scratch::default())
                .map(Cow::Owned),
            PerBackend::InReports | PerBackend::Never => {
                state.last_report().map(|r| Cow::Borrowed(&**r))
            }
        }
    }

    /// [`Detector::report`], but without the per-backend shares (the
    /// kept report, not copied) when no backend of the VIP grew in the
    /// window: each share would be None and each rate 0. For a reader to
    /// whom a missing share is None and a missing rate 0 (the status
    /// document: an idle VIP costs it no copy).
    pub fn report_unless_idle(&self, vip: &str) -> Option<Cow<'_, VipReport>> {
        let state = self.vips.get(vip)?;
        if self.shares == PerBackend::OnDemand && state.idle() {
            return state.last_report().map(|r| Cow::Borrowed(&**r));
        }
        self.report(vip)
    }

    /// One tick. `now_unix_seconds` increases between calls (normally by ~1).
    /// Returns one report per sample, in order. VIPs absent from `samples` are forgotten.
    ///
    /// A VIP whose report would not change (an idle one, typically) gets
    /// its last report again, the same `Arc`: a caller that keeps reports
    /// holds one copy, and a tick costs what changed.
    pub fn observe(
        &mut self,
        now_unix_seconds: f64,
        samples: &[VipSample<'_>],
    ) -> Vec<Arc<VipReport>> {
        let reports = samples
            .iter()
            .map(|sample| {
                // get_mut first: the common case allocates no key.
                let state = match self.vips.get_mut(sample.vip) {
                    Some(state) => state,
                    None => self.vips.entry(sample.vip.to_owned()).or_default(),
                };
                state.seen = true;
                #[cfg(test)]
                if self.always_fresh {
                    state.forget_report();
                }
                state.observe(
                    now_unix_seconds,
                    sample,
                    &mut self.scratch,
                    self.shares == PerBackend::InReports,
                )
            })
            .collect();
        // A mark per VIP rather than a set of this tick's names: no hashing,
        // and taking it leaves every kept VIP unmarked for the next tick.
        self.vips.retain(|_, state| std::mem::take(&mut state.seen));
        reports
    }
}
