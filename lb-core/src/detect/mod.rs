//! Imbalance detection: pure, no I/O. Every second the daemon hands the
//! detector each VIP's cumulative counters per backend; the detector turns
//! them into shares over a sliding window and a verdict per VIP and signal.
//!
//! The types in this file are the contract with the daemon, the status
//! document and the metrics. The work is split by job:
//! `window` keeps the history and computes deltas, `shares` does the
//! share/ratio/cv arithmetic, `verdict` holds the rules (gate, off
//! condition, cause, hold) and `vip` ties them together for one VIP.
//! `tests` drives whole ticks through [`Detector`].
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
//!    binomial test that keeps low-volume noise silent. New flows and
//!    packets use their own counts. Bytes are not independent events, so
//!    their count is taken in packet equivalents: `N` is the window's packet
//!    count over active backends and `d = o_i(bytes) · N`.
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

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

mod shares;
mod verdict;
mod vip;
mod window;

#[cfg(test)]
mod tests;

/// Slack when comparing durations (window age, hold time): unix timestamps
/// as f64 carry about 0.2 µs of rounding, and 1 ms is far below a tick.
pub const TIME_SLACK_SECONDS: f64 = 1e-3;

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    NewFlows,
    Packets,
    Bytes,
}

pub const SIGNALS: [Signal; 3] = [Signal::NewFlows, Signal::Packets, Signal::Bytes];

impl Signal {
    /// The `signal` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::NewFlows => "new_flows",
            Signal::Packets => "packets",
            Signal::Bytes => "bytes",
        }
    }
}

/// Per-VIP thresholds (`[vip.imbalance]` in the config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// A backend is off when observed/expected share is above this or below
    /// its inverse.
    pub max_ratio: f64,
    /// The VIP is off when the coefficient of variation of observed/expected
    /// across active backends is above this.
    pub max_cv: f64,
    /// Below this many new flows per second (over the window) the new-flow
    /// signal is not judged.
    pub min_new_flow_rate: f64,
    /// Below this many packets per second the packet and byte signals are not
    /// judged.
    pub min_packet_rate: f64,
    /// How long a signal must stay off before the VIP is declared imbalanced.
    pub hold_seconds: f64,
    /// Shares are measured over this much history.
    pub window_seconds: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_ratio: 1.5,
            max_cv: 0.25,
            min_new_flow_rate: 10.0,
            min_packet_rate: 100.0,
            hold_seconds: 10.0,
            window_seconds: 10.0,
        }
    }
}

/// Cumulative counters of one backend (never reset while the backend exists).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cumulative {
    pub new_flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl Cumulative {
    /// The counter behind `signal`.
    pub fn get(&self, signal: Signal) -> u64 {
        match signal {
            Signal::NewFlows => self.new_flows,
            Signal::Packets => self.packets,
            Signal::Bytes => self.bytes,
        }
    }
}

/// One backend of a VIP as the daemon sees it at one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendSample<'a> {
    /// Stable, unique within the VIP; history is matched by name.
    pub name: &'a str,
    /// true if in the Maglev table (state active). Only active backends take part in shares.
    pub active: bool,
    /// weight / sum of active weights (0 for inactive).
    pub expected_share: f64,
    /// fraction of the live Maglev table's slots that name it.
    pub table_share: f64,
    pub counters: Cumulative,
}

/// One VIP at one tick. VIP names are unique within a call.
#[derive(Clone, Debug, PartialEq)]
pub struct VipSample<'a> {
    pub vip: &'a str,
    pub thresholds: &'a Thresholds,
    pub backends: Vec<BackendSample<'a>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Judged and within thresholds (or the deviation is not significant).
    Ok,
    /// Not judged: too little traffic, warming up, or no active backend.
    LowRate,
    /// Off, for less than `hold_seconds` so far.
    Pending,
    /// Off for at least `hold_seconds`.
    Imbalanced,
}

impl State {
    /// Rank for "most severe": Imbalanced > Pending > Ok > LowRate.
    pub fn severity(self) -> u8 {
        match self {
            State::LowRate => 0,
            State::Ok => 1,
            State::Pending => 2,
            State::Imbalanced => 3,
        }
    }
}

/// Why the worst backend is off (see the module docs, rule 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The Maglev table gives it a share unlike its weight.
    Table,
    /// The table matches, but the flows or their sizes do not spread evenly.
    Traffic,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub state: State,
    /// Set for Pending and Imbalanced.
    pub cause: Option<Cause>,
    /// The worst backend (furthest from its expected share), for Pending/Imbalanced.
    pub backend: Option<String>,
    /// That backend's observed/expected ratio.
    pub ratio: Option<f64>,
    /// Unix seconds when the signal first went off (Pending/Imbalanced).
    pub since_unix_seconds: Option<f64>,
    /// One human sentence, e.g. "new_flows: b1 gets 2.29x its expected
    /// share (57.1% vs 25.0%) since 12s; table share 25.0% matches weights:
    /// traffic skew". For Ok: "within thresholds"; LowRate: "3.2 new
    /// flows/s is below the minimum 10".
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendShare {
    pub backend: String,
    pub active: bool,
    pub expected_share_ratio: f64,
    pub table_share_ratio: f64,
    /// Share of the window's signal among active backends; None when the
    /// window has no events (and for inactive backends).
    pub observed_share_ratio: Option<f64>,
    /// observed/expected; None if inactive or no events.
    pub ratio: Option<f64>,
    /// events per second over the window (new flows/s, packets/s, bytes/s).
    pub rate_per_second: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalReport {
    pub signal: Signal,
    /// VIP total over the window (active backends).
    pub rate_per_second: f64,
    /// Actual span of the window used (0 before two samples).
    pub window_seconds: f64,
    pub worst_backend: Option<String>,
    pub worst_ratio: Option<f64>,
    pub cv: Option<f64>,
    pub verdict: Verdict,
    /// In the order given in the sample.
    pub backends: Vec<BackendShare>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipReport {
    pub vip: String,
    pub verdict: Verdict,
    pub signals: Vec<SignalReport>,
}

/// The stateful detector: one window and one set of hold timers per VIP.
#[derive(Debug, Default)]
pub struct Detector {
    vips: HashMap<String, vip::VipState>,
    scratch: vip::Scratch,
}

impl Detector {
    pub fn new() -> Self {
        Self::default()
    }

    /// One tick. `now_unix_seconds` increases between calls (normally by ~1).
    /// Returns one report per sample, in order. VIPs absent from `samples` are forgotten.
    pub fn observe(&mut self, now_unix_seconds: f64, samples: &[VipSample<'_>]) -> Vec<VipReport> {
        let reports = samples
            .iter()
            .map(|sample| {
                // get_mut first: the common case allocates no key.
                let state = match self.vips.get_mut(sample.vip) {
                    Some(state) => state,
                    None => self.vips.entry(sample.vip.to_owned()).or_default(),
                };
                state.seen = true;
                state.observe(now_unix_seconds, sample, &mut self.scratch)
            })
            .collect();
        // A mark per VIP rather than a set of this tick's names: no hashing,
        // and taking it leaves every kept VIP unmarked for the next tick.
        self.vips.retain(|_, state| std::mem::take(&mut state.seen));
        reports
    }
}

impl Verdict {
    /// The verdict as one word, cause included: `ok`, `low_rate`, `pending`,
    /// `table_skew`, `traffic_skew` (the `state` label of
    /// `xlb_vip_imbalance_state`, and `xlb top`'s `<vip>.state`).
    pub fn label(&self) -> &'static str {
        match (self.state, self.cause) {
            (State::Ok, _) => "ok",
            (State::LowRate, _) => "low_rate",
            (State::Pending, _) => "pending",
            (State::Imbalanced, Some(Cause::Table)) => "table_skew",
            (State::Imbalanced, _) => "traffic_skew",
        }
    }
}

/// Every value of `Verdict::label`.
pub const VERDICT_LABELS: [&str; 5] = ["ok", "low_rate", "pending", "table_skew", "traffic_skew"];
