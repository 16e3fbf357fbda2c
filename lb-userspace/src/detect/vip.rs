//! One VIP's state (its window and hold timers) and the report of one tick:
//! the glue between [`super::window`], [`super::shares`] and
//! [`super::verdict`].

use super::shares::{self, Entry, Shares, sane_share};
use super::verdict::{self, Hold, Off};
use super::window::{Delta, Window};
use super::{
    BackendSample, BackendShare, SIGNALS, Signal, SignalReport, State, Thresholds, Verdict,
    VipReport, VipSample,
};

#[derive(Debug, Default)]
pub struct VipState {
    window: Window,
    /// One per signal, in [`SIGNALS`] order.
    holds: [Hold; SIGNALS.len()],
}

/// What a tick's numbers say about one signal, before the hold timer.
enum Assessment {
    /// Not off: Ok or LowRate, with its verdict.
    NotOff(Verdict),
    /// Off; the index of the worst backend (in name order).
    Off(usize),
}

/// The tick's numbers shared by the three signals.
struct Tick<'s, 'a> {
    /// The sample's backends sorted by name.
    sorted: &'s [&'s BackendSample<'a>],
    delta: Option<&'s Delta>,
    any_active: bool,
    new_flow_rate: f64,
    packet_rate: f64,
    /// Packet shares, for the significance of the byte signal.
    packets: &'s Shares,
}

impl VipState {
    pub fn observe(&mut self, now: f64, sample: &VipSample<'_>) -> VipReport {
        let th = sample.thresholds;
        // Work in name order (stable for duplicate names): the history is
        // matched by name, and the float sums, and so the verdict, do not
        // depend on the order of the sample.
        let mut order: Vec<usize> = (0..sample.backends.len()).collect();
        order.sort_by(|&a, &b| sample.backends[a].name.cmp(sample.backends[b].name));
        let sorted: Vec<&BackendSample<'_>> = order.iter().map(|&i| &sample.backends[i]).collect();

        if self.window.push(now, &sorted, th.window_seconds) {
            // A new regime: an old off streak says nothing about it.
            self.holds = Default::default();
        }
        let delta = self.window.delta();
        let span = delta.as_ref().map_or(0.0, |d| d.span);
        let per_second = |n: f64| if span > 0.0 { n / span } else { 0.0 };

        let shares: [Shares; SIGNALS.len()] =
            SIGNALS.map(|signal| shares::compute(&entries(&sorted, delta.as_ref(), signal)));
        let any_active = sorted.iter().any(|b| b.active);
        let tick = Tick {
            sorted: &sorted,
            delta: delta.as_ref(),
            any_active,
            new_flow_rate: per_second(shares[0].total as f64),
            packet_rate: per_second(shares[1].total as f64),
            packets: &shares[1],
        };

        let signals: Vec<SignalReport> = SIGNALS
            .iter()
            .zip(&shares)
            .zip(&mut self.holds)
            .map(|((&signal, s), hold)| {
                let verdict = match assess(signal, s, &tick, th) {
                    Assessment::NotOff(v) => {
                        hold.clear();
                        v
                    }
                    Assessment::Off(w) => {
                        let (state, since) = hold.off(now, th.hold_seconds);
                        let b = sorted[w];
                        let off = Off {
                            signal,
                            state,
                            backend: b.name,
                            ratio: s.ratio[w].unwrap_or(1.0),
                            observed: s.observed[w].unwrap_or(0.0),
                            expected: sane_share(b.expected_share),
                            table: sane_share(b.table_share),
                            cv: s.cv,
                            since,
                            now,
                        };
                        verdict::off_verdict(&off, th)
                    }
                };
                SignalReport {
                    signal,
                    rate_per_second: per_second(s.total as f64),
                    window_seconds: span,
                    worst_backend: s.worst.map(|w| sorted[w].name.to_owned()),
                    worst_ratio: s.worst.and_then(|w| s.ratio[w]),
                    cv: s.cv,
                    verdict,
                    backends: backend_shares(signal, s, &tick, &order, span),
                }
            })
            .collect();

        let verdict = if any_active {
            verdict::most_severe(signals.iter().map(|s| &s.verdict))
                .cloned()
                .unwrap_or_else(verdict::ok)
        } else {
            verdict::plain(State::LowRate, "no active backends")
        };
        VipReport {
            vip: sample.vip.to_owned(),
            verdict,
            signals,
        }
    }
}

/// The share inputs of one signal, in name order.
fn entries<'a>(
    sorted: &[&BackendSample<'a>],
    delta: Option<&Delta>,
    signal: Signal,
) -> Vec<Entry<'a>> {
    sorted
        .iter()
        .enumerate()
        .map(|(i, b)| Entry {
            name: b.name,
            active: b.active,
            expected_share: sane_share(b.expected_share),
            delta: delta
                .and_then(|d| d.counters.get(i))
                .map_or(0, |c| c.get(signal)),
        })
        .collect()
}

/// Rules 1, 4 and 5 for one signal.
fn assess(signal: Signal, s: &Shares, tick: &Tick<'_, '_>, th: &Thresholds) -> Assessment {
    let low = |reason: String| Assessment::NotOff(verdict::plain(State::LowRate, reason));
    if tick.delta.is_none() {
        return low("warming up".to_owned());
    }
    if !tick.any_active {
        return low("no active backends".to_owned());
    }
    if let Some(reason) = verdict::gate(signal, tick.new_flow_rate, tick.packet_rate, th) {
        return low(reason);
    }
    // Only reachable with a minimum rate of 0.
    if s.total == 0 {
        return low(format!("no {} in the window", signal.as_str()));
    }
    let (Some(w), Some(cv)) = (s.worst, s.cv) else {
        // No active backend is expected to get anything: nothing to compare.
        return Assessment::NotOff(verdict::ok());
    };
    let (Some(ratio), Some(observed)) = (s.ratio[w], s.observed[w]) else {
        return Assessment::NotOff(verdict::ok());
    };
    if !verdict::out_of_band(ratio, Some(cv), th) {
        return Assessment::NotOff(verdict::ok());
    }
    let expected = sane_share(tick.sorted[w].expected_share);
    // Bytes are not independent events; the packets that carried them are
    // (as far as this test goes), so judge the byte share at the packet count.
    let (count, total) = match signal {
        Signal::Bytes => {
            let packets = tick.packets.total as f64;
            (observed * packets, packets)
        }
        Signal::NewFlows | Signal::Packets => (observed * s.total as f64, s.total as f64),
    };
    if !verdict::significant(count, expected, total) {
        return Assessment::NotOff(verdict::ok());
    }
    Assessment::Off(w)
}

/// Per-backend numbers of one signal, back in the sample's order.
fn backend_shares(
    signal: Signal,
    s: &Shares,
    tick: &Tick<'_, '_>,
    order: &[usize],
    span: f64,
) -> Vec<BackendShare> {
    let mut out: Vec<Option<BackendShare>> = vec![None; order.len()];
    for (p, (&i, b)) in order.iter().zip(tick.sorted).enumerate() {
        let delta = tick
            .delta
            .and_then(|d| d.counters.get(p))
            .map_or(0, |c| c.get(signal));
        out[i] = Some(BackendShare {
            backend: b.name.to_owned(),
            active: b.active,
            expected_share_ratio: sane_share(b.expected_share),
            table_share_ratio: sane_share(b.table_share),
            observed_share_ratio: s.observed[p],
            ratio: s.ratio[p],
            rate_per_second: if span > 0.0 { delta as f64 / span } else { 0.0 },
        });
    }
    // `order` is a permutation, so every slot is filled.
    out.into_iter().flatten().collect()
}
