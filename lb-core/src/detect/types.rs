//! The detector's contract with the daemon, the status document and the
//! metrics: what is counted, the thresholds, the samples handed in each
//! tick and the reports handed back (re-exported by `detect`, whose module
//! docs give the semantics). Plain data: every other file of `detect` uses
//! these, and this file uses none of them.

use serde::{Deserialize, Serialize};

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

/// Why the worst backend is off (see `detect`'s module docs, rule 6).
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
