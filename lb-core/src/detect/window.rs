//! One VIP's counter history: what it is matched against (the backends'
//! names, flags and shares), when it starts over, and the deltas over the
//! window. Rules 1 and 2 of the module docs.

use std::collections::VecDeque;

use super::types::{BackendSample, Cumulative, TIME_SLACK_SECONDS};

/// Upper bound on kept snapshots, whatever `window_seconds` says: at one tick
/// a second that is over an hour of history, and it bounds memory even when a
/// config sets an absurd window.
pub const MAX_SNAPSHOTS: usize = 4096;

/// At most this many snapshot buffers are made ahead of need when the
/// history starts (see [`Window::start_over`]); longer windows allocate the
/// rest as they fill.
const PREALLOCATED_SNAPSHOTS: usize = 32;

/// Shares closer than this are the same share (they are computed from
/// integers, so real changes are far larger).
const SHARE_EPSILON: f64 = 1e-9;

/// What the history was recorded against; a change means new weights, a new
/// table or a new backend set, so old deltas would mix two regimes.
#[derive(Clone, Debug, PartialEq)]
struct Key {
    name: String,
    active: bool,
    expected_share: f64,
    table_share: f64,
}

impl Key {
    fn matches(&self, b: &BackendSample<'_>) -> bool {
        self.name == b.name
            && self.active == b.active
            && same_share(self.expected_share, b.expected_share)
            && same_share(self.table_share, b.table_share)
    }
}

fn same_share(a: f64, b: f64) -> bool {
    // `a == b` covers infinities; NaN == NaN so garbage input does not reset
    // every tick.
    a == b || (a - b).abs() <= SHARE_EPSILON || (a.is_nan() && b.is_nan())
}

#[derive(Clone, Debug)]
struct Snapshot {
    at: f64,
    /// In the order of `Window::keys`.
    counters: Vec<Cumulative>,
}

/// Counter growth between the window's base snapshot and the newest one,
/// read straight from the two snapshots: the detector asks for every
/// backend of every VIP each tick, so nothing is copied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Delta<'w> {
    /// Seconds between the two snapshots, > 0.
    pub span: f64,
    base: &'w [Cumulative],
    last: &'w [Cumulative],
}

impl Delta<'_> {
    /// Growth of the `i`th backend in the order they were pushed (0 past
    /// the end, which a consistent history never reaches).
    pub fn get(&self, i: usize) -> Cumulative {
        match (self.last.get(i), self.base.get(i)) {
            (Some(new), Some(old)) => Cumulative {
                new_flows: new.new_flows.saturating_sub(old.new_flows),
                packets: new.packets.saturating_sub(old.packets),
                bytes: new.bytes.saturating_sub(old.bytes),
            },
            _ => Cumulative::default(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Window {
    keys: Vec<Key>,
    history: VecDeque<Snapshot>,
    /// Counter buffers not in use: pruned snapshots' buffers, reused by the
    /// next pushes.
    spares: Vec<Vec<Cumulative>>,
}

impl Window {
    /// Records one tick. `backends` must come in a canonical order (sorted by
    /// name) so that a reordered sample is not a change. Returns true when
    /// the history started over (also on the very first push), so the
    /// caller drops whatever it derived from the old history.
    pub fn push<'s, 'a: 's, I>(&mut self, now: f64, backends: I, window_seconds: f64) -> bool
    where
        I: IntoIterator<Item = &'s BackendSample<'a>>,
        I::IntoIter: ExactSizeIterator + Clone,
    {
        let backends = backends.into_iter();
        let reset = !self.continues(now, backends.clone());
        if reset {
            self.start_over(backends.clone(), window_seconds);
        }
        // A non-finite time cannot be measured against; keep nothing, so the
        // VIP reports "warming up" until the clock is sane again.
        if now.is_finite() {
            let mut counters = self.spares.pop().unwrap_or_default();
            counters.clear();
            counters.extend(backends.map(|b| b.counters));
            self.history.push_back(Snapshot { at: now, counters });
        }
        self.prune(now, window_seconds);
        reset
    }

    /// Drops the history and records what the new one is matched against.
    ///
    /// It also makes, here and now, the snapshot buffers that a window of
    /// `window_seconds` at the daemon's one tick a second will hold (plus
    /// the one being pushed), so that later ticks allocate nothing. The
    /// history lives long; buffers allocated one per tick while it fills
    /// end up scattered among the short-lived reports, and that slows
    /// malloc and free for every later report (by about a third of the
    /// detector's time at 1,000 VIPs x 64 backends).
    fn start_over<'s, 'a: 's>(
        &mut self,
        backends: impl ExactSizeIterator<Item = &'s BackendSample<'a>>,
        window_seconds: f64,
    ) {
        let n = backends.len();
        self.spares
            .extend(self.history.drain(..).map(|snapshot| snapshot.counters));
        self.keys.clear();
        self.keys.extend(backends.map(|b| Key {
            name: b.name.to_owned(),
            active: b.active,
            expected_share: b.expected_share,
            table_share: b.table_share,
        }));
        // base + newest + one of jitter, + the one pushed before pruning;
        // the float-to-int cast saturates (NaN and negatives give 0).
        let wanted =
            ((window_seconds.ceil() as usize).saturating_add(3)).min(PREALLOCATED_SNAPSHOTS);
        self.history.reserve(wanted);
        self.spares.truncate(wanted);
        for buffer in &mut self.spares {
            buffer.clear();
            buffer.reserve(n);
        }
        while self.spares.len() < wanted {
            self.spares.push(Vec::with_capacity(n));
        }
    }

    /// True when `now` and `backends` extend the current history.
    fn continues<'s, 'a: 's>(
        &self,
        now: f64,
        backends: impl ExactSizeIterator<Item = &'s BackendSample<'a>>,
    ) -> bool {
        let Some(last) = self.history.back() else {
            return false;
        };
        now.is_finite()
            && now > last.at
            && self.keys.len() == backends.len()
            && last.counters.len() == backends.len()
            && self
                .keys
                .iter()
                .zip(&last.counters)
                .zip(backends)
                .all(|((k, old), b)| {
                    let new = b.counters;
                    k.matches(b)
                        && new.new_flows >= old.new_flows
                        && new.packets >= old.packets
                        && new.bytes >= old.bytes
                })
    }

    /// Drops snapshots older than the base: the base is the newest earlier
    /// snapshot at least `window_seconds` old, so the span never falls
    /// short of the window once enough history exists.
    fn prune(&mut self, now: f64, window_seconds: f64) {
        // NaN or negative: compare consecutive ticks. Infinite: keep all
        // (up to MAX_SNAPSHOTS).
        let window = if window_seconds > 0.0 {
            window_seconds
        } else {
            0.0
        };
        // history[1] is not the newest while len > 2; if it is old enough
        // to be the base, history[0] is not needed.
        while self.history.len() > 2 && now - self.history[1].at >= window - TIME_SLACK_SECONDS {
            self.recycle_front();
        }
        while self.history.len() > MAX_SNAPSHOTS {
            self.recycle_front();
        }
    }

    fn recycle_front(&mut self) {
        if let Some(old) = self.history.pop_front() {
            self.spares.push(old.counters);
        }
    }

    /// The deltas over the window; None with fewer than two snapshots.
    pub fn delta(&self) -> Option<Delta<'_>> {
        let (first, last) = (self.history.front()?, self.history.back()?);
        if self.history.len() < 2 {
            return None;
        }
        let span = last.at - first.at;
        // Guaranteed by `continues`, but a zero or infinite span must never
        // reach a division.
        if !(span.is_finite() && span > 0.0) {
            return None;
        }
        Some(Delta {
            span,
            base: &first.counters,
            last: &last.counters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str, n: u64) -> BackendSample<'_> {
        BackendSample {
            name,
            active: true,
            expected_share: 0.5,
            table_share: 0.5,
            counters: Cumulative {
                new_flows: n,
                packets: 10 * n,
                bytes: 1000 * n,
            },
        }
    }

    fn push(w: &mut Window, now: f64, n: u64, window: f64) -> bool {
        w.push(now, &[backend("a", n), backend("b", 2 * n)], window)
    }

    #[test]
    fn span_reaches_the_window_and_stays_there() {
        let mut w = Window::default();
        assert!(push(&mut w, 100.0, 0, 10.0));
        assert_eq!(w.delta(), None, "one snapshot is not a window");
        for t in 1..=30u64 {
            assert!(!push(&mut w, 100.0 + t as f64, 7 * t, 10.0));
            let d = w.delta().unwrap();
            let want = (t as f64).min(10.0);
            assert_eq!(d.span, want, "tick {t}");
            let base = t.saturating_sub(10);
            assert_eq!(d.get(0).new_flows, 7 * (t - base));
            assert_eq!(d.get(1).bytes, 2000 * 7 * (t - base));
        }
        assert_eq!(w.history.len(), 11);
    }

    #[test]
    fn steady_state_reuses_its_buffers() {
        let mut w = Window::default();
        for t in 0..40u64 {
            push(&mut w, t as f64, t, 10.0);
            // 13 buffers made at the start (10 s window + 3), none since.
            assert_eq!(w.history.len() + w.spares.len(), 13, "tick {t}");
        }
        // Starting over keeps the buffers it has, up to what it wants.
        push(&mut w, 50.0, 0, 3.0);
        assert_eq!(w.history.len() + w.spares.len(), 6);
    }

    #[test]
    fn jittered_ticks_keep_the_span_at_least_the_window() {
        let mut w = Window::default();
        let mut t = 1.7e9;
        for i in 0..50u64 {
            t += if i % 2 == 0 { 0.9 } else { 1.2 };
            push(&mut w, t, i, 10.0);
            if i >= 12 {
                let span = w.delta().unwrap().span;
                assert!((10.0 - TIME_SLACK_SECONDS..11.3).contains(&span), "{span}");
            }
        }
    }

    #[test]
    fn zero_or_nonsense_window_compares_consecutive_ticks() {
        for window in [0.0, -5.0, f64::NAN] {
            let mut w = Window::default();
            for t in 0..5u64 {
                push(&mut w, t as f64, t * t, window);
            }
            let d = w.delta().unwrap();
            assert_eq!(d.span, 1.0, "window {window}");
            assert_eq!(d.get(0).new_flows, 16 - 9);
        }
        // An infinite window keeps everything (up to the cap).
        let mut w = Window::default();
        for t in 0..5u64 {
            push(&mut w, t as f64, t * t, f64::INFINITY);
        }
        assert_eq!(w.delta().unwrap().span, 4.0);
    }

    #[test]
    fn history_is_bounded() {
        let mut w = Window::default();
        for t in 0..(MAX_SNAPSHOTS as u64 + 50) {
            push(&mut w, t as f64, t, 1e12);
        }
        assert_eq!(w.history.len(), MAX_SNAPSHOTS);
    }

    #[test]
    fn starts_over_on_changes() {
        let mut w = Window::default();
        assert!(push(&mut w, 0.0, 0, 10.0));
        assert!(!push(&mut w, 1.0, 5, 10.0));
        // counter backwards
        assert!(push(&mut w, 2.0, 4, 10.0));
        assert_eq!(w.delta(), None);
        assert!(!push(&mut w, 3.0, 6, 10.0));
        // clock standing still or going back
        assert!(push(&mut w, 3.0, 7, 10.0));
        assert!(push(&mut w, 2.0, 8, 10.0));
        // non-finite clock: nothing kept
        assert!(push(&mut w, f64::NAN, 9, 10.0));
        assert_eq!(w.delta(), None);
        assert!(push(&mut w, 10.0, 9, 10.0));
        assert!(!push(&mut w, 11.0, 9, 10.0));

        let (a, b) = (backend("a", 100), backend("b", 200));
        // same backends, reordered: canonical order is the caller's job,
        // so a reordered push is a change here.
        assert!(w.push(12.0, [&b, &a], 10.0));
        assert!(!w.push(13.0, [&b, &a], 10.0));
        // a share moving by less than the epsilon is no change
        let mut a2 = a.clone();
        a2.table_share += 1e-12;
        assert!(!w.push(14.0, [&b, &a2], 10.0));
        let mut t = 20.0;
        for change in 0..4 {
            let mut c = a.clone();
            match change {
                0 => c.active = false,
                1 => c.expected_share = 0.6,
                2 => c.table_share = 0.4,
                _ => c.name = "c",
            }
            // back to the original set, settled
            w.push(t, [&b, &a], 10.0);
            assert!(!w.push(t + 1.0, [&b, &a], 10.0));
            assert!(w.push(t + 2.0, [&b, &c], 10.0), "change {change}");
            t += 3.0;
        }
        // a backend added
        let c = backend("c", 0);
        assert!(w.push(t, [&b, &a, &c], 10.0));
    }

    #[test]
    fn nan_shares_do_not_reset_every_tick() {
        let mut w = Window::default();
        let mut a = backend("a", 1);
        a.expected_share = f64::NAN;
        assert!(w.push(0.0, [&a], 10.0));
        assert!(!w.push(1.0, [&a], 10.0));
    }
}
