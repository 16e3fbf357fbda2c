//! One VIP's state (its window and hold timers) and the report of one tick:
//! the glue between [`super::window`], [`super::shares`] and
//! [`super::verdict`].
//!
//! This runs for every VIP every second, so it works in buffers kept from
//! tick to tick ([`Scratch`], [`NameOrder`]) and allocates only what goes
//! into the report; and a tick that changes nothing the report says (an
//! idle VIP: the same counts, shares and thresholds, no signal off) hands
//! back the last report itself.

use std::sync::Arc;

use super::shares::{Entry, Shares, sane_share};
use super::types::{
    BackendSample, BackendShare, Cumulative, SIGNALS, Signal, SignalReport, State, Thresholds,
    Verdict, VipReport, VipSample,
};
use super::verdict::{self, Hold, Off};
use super::window::Window;

#[derive(Debug, Default)]
pub struct VipState {
    window: Window,
    /// One per signal, in [`SIGNALS`] order.
    holds: [Hold; SIGNALS.len()],
    order: NameOrder,
    /// The last report and what it was made with.
    last: Option<Last>,
    /// Set by every tick that reports the VIP; the detector forgets the VIPs
    /// whose mark is not set and clears the others' for the next tick.
    pub(super) seen: bool,
}

/// The sample's backends in name order (stable for duplicate names), kept
/// from tick to tick: the daemon lists the same backends in the same order
/// every tick, so checking that the last order still holds (n − 1
/// comparisons) replaces the sort.
#[derive(Debug, Default)]
struct NameOrder {
    /// Sample indices in name order.
    order: Vec<usize>,
    /// The inverse: `rank[i]` is the name-order position of the sample's
    /// `i`th backend.
    rank: Vec<usize>,
}

impl NameOrder {
    /// Returns true when the order changed.
    fn update(&mut self, backends: &[BackendSample<'_>]) -> bool {
        // `order` is a permutation of 0..len; if it lists the names in
        // strictly increasing (name, index) order it is exactly what the
        // stable sort would produce.
        let key = |i: usize| (backends[i].name, i);
        let still_sorted = self.order.len() == backends.len()
            && self.order.windows(2).all(|w| key(w[0]) < key(w[1]));
        if still_sorted {
            return false;
        }
        self.order.clear();
        self.order.extend(0..backends.len());
        self.order
            .sort_by(|&a, &b| backends[a].name.cmp(backends[b].name));
        self.rank.clear();
        self.rank.resize(backends.len(), 0);
        for (p, &i) in self.order.iter().enumerate() {
            self.rank[i] = p;
        }
        true
    }
}

/// The last report, with the thresholds and the backends' flags and shares
/// (name order, as given: not rounded to the window's epsilon) it was made
/// with: a report reused must be the one these would make.
#[derive(Debug)]
struct Last {
    report: Arc<VipReport>,
    thresholds: Thresholds,
    active: Vec<bool>,
    /// Expected and table share.
    shares: Vec<[f64; 2]>,
}

impl Last {
    fn made_with(&self, th: &Thresholds, rows: &[Row]) -> bool {
        self.thresholds == *th
            && self.active.len() == rows.len()
            && rows
                .iter()
                .zip(&self.active)
                .zip(&self.shares)
                .all(|((r, &a), s)| {
                    r.active == a
                        && r.expected.to_bits() == s[0].to_bits()
                        && r.table.to_bits() == s[1].to_bits()
                })
    }

    fn record(last: &mut Option<Last>, report: Arc<VipReport>, th: &Thresholds, rows: &[Row]) {
        let last = last.get_or_insert_with(|| Last {
            report: report.clone(),
            thresholds: th.clone(),
            active: Vec::with_capacity(rows.len()),
            shares: Vec::with_capacity(rows.len()),
        });
        last.report = report;
        last.thresholds.clone_from(th);
        last.active.clear();
        last.active.extend(rows.iter().map(|r| r.active));
        last.shares.clear();
        last.shares
            .extend(rows.iter().map(|r| [r.expected, r.table]));
    }
}

/// Working memory for one VIP's tick, owned by the detector and lent to
/// each VIP in turn: one set of buffers for all VIPs allocates nothing and
/// stays in cache, where per-VIP buffers would be cold every tick. Every
/// field is rewritten before it is read.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Per backend, in name order.
    rows: Vec<Row>,
    /// One per signal, in [`SIGNALS`] order; index for index with `rows`.
    shares: [Shares; SIGNALS.len()],
}

/// One backend's numbers for this tick, inputs made sane.
#[derive(Clone, Copy, Debug)]
struct Row {
    active: bool,
    expected: f64,
    table: f64,
    /// Growth over the window (0 before there is a window).
    delta: Cumulative,
}

/// What a tick's numbers say about one signal, before the hold timer.
enum Assessment {
    /// Not off: Ok or LowRate, with its verdict.
    NotOff(Verdict),
    /// Off; the index of the worst backend (in name order).
    Off(usize),
}

/// The tick's numbers shared by the three signals.
struct Tick<'s> {
    /// Per backend in name order.
    rows: &'s [Row],
    /// Whether there is a window yet.
    warmed_up: bool,
    any_active: bool,
    new_flow_rate: f64,
    packet_rate: f64,
    /// New flows to active backends in the window: the independent draws
    /// behind the packet and byte shares.
    flows: u128,
    /// Packet shares, for the significance of the byte signal.
    packets: &'s Shares,
}

impl VipState {
    /// The next tick makes its report anew.
    #[cfg(test)]
    pub fn forget_report(&mut self) {
        self.last = None;
    }

    pub fn observe(
        &mut self,
        now: f64,
        sample: &VipSample<'_>,
        scratch: &mut Scratch,
        per_backend: bool,
    ) -> Arc<VipReport> {
        let th = sample.thresholds;
        let backends = &sample.backends[..];
        // Work in name order (stable for duplicate names): the history is
        // matched by name, and the float sums, and so the verdict, do not
        // depend on the order of the sample.
        let reordered = self.order.update(backends);
        let order = &self.order.order[..];
        let sorted = order.iter().map(|&i| &backends[i]);

        if self.window.push(now, sorted.clone(), th.window_seconds) {
            // A new regime: an old off streak says nothing about it.
            self.holds = Default::default();
        }
        let delta = self.window.delta();
        let span = delta.as_ref().map_or(0.0, |d| d.span);
        let per_second = |n: f64| if span > 0.0 { n / span } else { 0.0 };

        scratch.rows.clear();
        scratch.rows.extend(sorted.enumerate().map(|(p, b)| {
            Row {
                active: b.active,
                expected: sane_share(b.expected_share),
                table: sane_share(b.table_share),
                delta: delta
                    .as_ref()
                    .map_or_else(Cumulative::default, |d| d.get(p)),
            }
        }));
        let rows = &scratch.rows[..];
        let unchanged = !reordered && !self.window.moved() && self.holds.iter().all(Hold::is_clear);
        if unchanged && let Some(report) = reuse(&mut self.last, th, rows, span) {
            return report;
        }
        let name = |p: usize| backends[order[p]].name;
        for (&signal, shares) in SIGNALS.iter().zip(&mut scratch.shares) {
            shares.recompute(rows.len(), |p| Entry {
                name: name(p),
                active: rows[p].active,
                expected_share: rows[p].expected,
                delta: rows[p].delta.get(signal),
            });
        }
        let shares = &scratch.shares;
        let any_active = rows.iter().any(|r| r.active);
        let tick = Tick {
            rows,
            warmed_up: delta.is_some(),
            any_active,
            new_flow_rate: per_second(shares[0].total as f64),
            packet_rate: per_second(shares[1].total as f64),
            flows: shares[0].total,
            packets: &shares[1],
        };

        let signals: Vec<SignalReport> = SIGNALS
            .iter()
            .zip(shares)
            .zip(&mut self.holds)
            .map(|((&signal, s), hold)| {
                let verdict = match assess(signal, s, &tick, th) {
                    Assessment::NotOff(v) => {
                        hold.clear();
                        v
                    }
                    Assessment::Off(w) => {
                        let (state, since) = hold.off(now, th.hold_seconds);
                        let off = Off {
                            signal,
                            state,
                            backend: name(w),
                            ratio: s.ratio[w].unwrap_or(1.0),
                            observed: s.observed[w].unwrap_or(0.0),
                            expected: rows[w].expected,
                            table: rows[w].table,
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
                    worst_backend: s.worst.map(|w| name(w).to_owned()),
                    worst_ratio: s.worst.and_then(|w| s.ratio[w]),
                    cv: s.cv,
                    verdict,
                    backends: if per_backend {
                        backend_shares(signal, s, &name, &self.order.rank, rows, span)
                    } else {
                        Vec::new()
                    },
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
        let report = Arc::new(VipReport {
            vip: sample.vip.to_owned(),
            verdict,
            signals,
        });
        Last::record(&mut self.last, report.clone(), th, rows);
        report
    }
}

impl VipState {
    /// The last report, as the last tick handed it back.
    pub fn last_report(&self) -> Option<&Arc<VipReport>> {
        self.last.as_ref().map(|l| &l.report)
    }

    /// The last report with each signal's per-backend shares, made from
    /// what the VIP keeps between ticks (the window's counts, and the flags
    /// and shares the last report was made with, which a reused report was
    /// checked against): the report a detector that keeps the shares in its
    /// reports made at that tick, field for field. None before a first tick.
    pub fn report_with_shares(&self, scratch: &mut Scratch) -> Option<VipReport> {
        let last = self.last.as_ref()?;
        Some(self.shares_into(last, scratch))
    }

    /// Whether no backend grew in the window (or there is none yet): then
    /// every per-backend share is None and every rate 0.
    pub fn idle(&self) -> bool {
        self.window
            .delta()
            .is_none_or(|d| (0..self.order.rank.len()).all(|p| d.get(p) == Cumulative::default()))
    }

    fn shares_into(&self, last: &Last, scratch: &mut Scratch) -> VipReport {
        let delta = self.window.delta();
        let span = delta.as_ref().map_or(0.0, |d| d.span);
        scratch.rows.clear();
        scratch
            .rows
            .extend(last.active.iter().zip(&last.shares).enumerate().map(
                |(p, (&active, &[expected, table]))| {
                    Row {
                        active,
                        expected,
                        table,
                        delta: delta
                            .as_ref()
                            .map_or_else(Cumulative::default, |d| d.get(p)),
                    }
                },
            ));
        let rows = &scratch.rows[..];
        let name = |p: usize| self.window.name(p);
        let mut report = VipReport::clone(&last.report);
        for (signal, shares) in report.signals.iter_mut().zip(&mut scratch.shares) {
            shares.recompute(rows.len(), |p| Entry {
                name: name(p),
                active: rows[p].active,
                expected_share: rows[p].expected,
                delta: rows[p].delta.get(signal.signal),
            });
            signal.backends =
                backend_shares(signal.signal, shares, &name, &self.order.rank, rows, span);
        }
        report
    }
}

/// The last report, when this tick's would say the same: the caller saw
/// that the window's counts did not move and no signal is off (an off
/// signal's verdict tells how long it has been off); here the shares, flags
/// and thresholds are checked against the ones it was made with. A new
/// span only changes the rates when there are events, and then the report
/// is made again; without events only `window_seconds` changes, set in
/// place (the last report is copied first if someone still holds it).
fn reuse(
    last: &mut Option<Last>,
    th: &Thresholds,
    rows: &[Row],
    span: f64,
) -> Option<Arc<VipReport>> {
    let last = last.as_mut().filter(|l| l.made_with(th, rows))?;
    let report = &mut last.report;
    if report.signals.iter().any(|s| s.window_seconds != span) {
        if rows.iter().any(|r| r.delta != Cumulative::default()) {
            return None;
        }
        for s in &mut Arc::make_mut(report).signals {
            s.window_seconds = span;
        }
    }
    Some(report.clone())
}

/// Rules 1, 4 and 5 for one signal.
fn assess(signal: Signal, s: &Shares, tick: &Tick<'_>, th: &Thresholds) -> Assessment {
    let low = |reason: String| Assessment::NotOff(verdict::plain(State::LowRate, reason));
    if !tick.warmed_up {
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
    let expected = tick.rows[w].expected;
    // The binomial test needs independent events. New flows are: the hash
    // places each on its own. Packets and bytes are not: every packet of a
    // flow goes where its flow went, so a window of 150 flows of 8 packets
    // is 150 draws, not 1,200, and judged as 1,200 its noise looks like a
    // 2.8x (√8) smaller deviation than it is. So judge packet and byte
    // shares at the window's new flows (or its packets, if fewer). Packets
    // of flows older than the window only make that count smaller and the
    // test more careful: a few long-lived flows that happen to share a
    // backend are luck, not skew.
    let events = match signal {
        Signal::NewFlows => s.total as f64,
        Signal::Packets | Signal::Bytes => tick.flows.min(tick.packets.total) as f64,
    };
    let (count, total) = (observed * events, events);
    if !verdict::significant(count, expected, total) {
        return Assessment::NotOff(verdict::ok());
    }
    Assessment::Off(w)
}

/// Per-backend numbers of one signal, in the sample's order (`rank` maps a
/// sample index to its name-order position in `rows` and `s`, and `name`
/// gives the name at a name-order position).
fn backend_shares<'n>(
    signal: Signal,
    s: &Shares,
    name: &impl Fn(usize) -> &'n str,
    rank: &[usize],
    rows: &[Row],
    span: f64,
) -> Vec<BackendShare> {
    rank.iter()
        .map(|&p| {
            let row = &rows[p];
            BackendShare {
                backend: name(p).to_owned(),
                active: row.active,
                expected_share_ratio: row.expected,
                table_share_ratio: row.table,
                observed_share_ratio: s.observed[p],
                ratio: s.ratio[p],
                rate_per_second: if span > 0.0 {
                    row.delta.get(signal) as f64 / span
                } else {
                    0.0
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends<'a>(names: &[&'a str]) -> Vec<BackendSample<'a>> {
        names
            .iter()
            .map(|&name| BackendSample {
                name,
                active: true,
                expected_share: 0.0,
                table_share: 0.0,
                counters: Cumulative::default(),
            })
            .collect()
    }

    fn check(o: &NameOrder, want: &[usize]) {
        assert_eq!(o.order, want);
        assert_eq!(o.rank.len(), want.len());
        for (i, &p) in o.rank.iter().enumerate() {
            assert_eq!(o.order[p], i, "rank is the inverse of order");
        }
    }

    #[test]
    fn name_order_is_kept_while_it_holds_and_redone_when_not() {
        let mut o = NameOrder::default();
        // Duplicates keep their sample order.
        let b = backends(&["b2", "b10", "b1", "b2"]);
        o.update(&b);
        check(&o, &[2, 1, 0, 3]);
        o.update(&b);
        check(&o, &[2, 1, 0, 3]);
        // Same length, other names: sorted again.
        o.update(&backends(&["b2", "b0", "b1", "b2"]));
        check(&o, &[1, 2, 0, 3]);
        // Same names, another order.
        o.update(&backends(&["b0", "b2", "b2", "b1"]));
        check(&o, &[0, 3, 1, 2]);
        o.update(&backends(&["b9"]));
        check(&o, &[0]);
        o.update(&[]);
        check(&o, &[]);
    }
}
