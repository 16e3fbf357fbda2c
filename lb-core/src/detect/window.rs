//! One VIP's counter history: what it is matched against (the backends'
//! names, flags and shares), when it starts over, and the deltas over the
//! window. Rules 1 and 2 of the module docs.
//!
//! The history is kept small, as the detector holds one per VIP (and a
//! second one per VIP while a revision bakes): the newest cumulative
//! counters, their growth since the window's base, and each kept tick's
//! growth per backend and signal in the narrowest of 2, 4 or 8 bytes that
//! holds every value kept ([`Steps`]), none for a tick in which the signal
//! did not grow. At 64 backends and a 10 s window that is about 8 KB a VIP
//! with traffic at one tick a second (three times that at the bake's four),
//! and about 5 KB idle, where 13 snapshots of three `u64` per backend took
//! 20 KB. The deltas are the same integers either way.

use std::collections::VecDeque;

use super::types::{BackendSample, Cumulative, SIGNALS, Signal, TIME_SLACK_SECONDS};

/// Upper bound on kept snapshots, whatever `window_seconds` says: at one tick
/// a second that is over an hour of history, and it bounds memory even when a
/// config sets an absurd window.
pub const MAX_SNAPSHOTS: usize = 4096;

/// At most this many ticks' room is made ahead of need when the history
/// starts (see [`Window::start_over`]); longer windows grow as they fill.
const PREALLOCATED_SNAPSHOTS: usize = 32;

/// Shares closer than this are the same share (they are computed from
/// integers, so real changes are far larger).
const SHARE_EPSILON: f64 = 1e-9;

fn same_share(a: f64, b: f64) -> bool {
    // `a == b` covers infinities; NaN == NaN so garbage input does not reset
    // every tick.
    a == b || (a - b).abs() <= SHARE_EPSILON || (a.is_nan() && b.is_nan())
}

/// What the history was recorded against; a change means new weights, a new
/// table or a new backend set, so old deltas would mix two regimes. One
/// string for all names and one vector per field: no allocation per backend.
#[derive(Clone, Debug, Default)]
struct Keys {
    /// Every name, one after the other.
    names: String,
    /// Where each name ends in `names`.
    ends: Vec<usize>,
    active: Vec<bool>,
    expected_share: Vec<f64>,
    table_share: Vec<f64>,
}

impl Keys {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn name(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.names[start..self.ends[i]]
    }

    fn matches(&self, i: usize, b: &BackendSample<'_>) -> bool {
        self.name(i) == b.name
            && self.active[i] == b.active
            && same_share(self.expected_share[i], b.expected_share)
            && same_share(self.table_share[i], b.table_share)
    }

    fn set<'s, 'a: 's>(&mut self, backends: impl Iterator<Item = &'s BackendSample<'a>>) {
        self.names.clear();
        self.ends.clear();
        self.active.clear();
        self.expected_share.clear();
        self.table_share.clear();
        for b in backends {
            self.names.push_str(b.name);
            self.ends.push(self.names.len());
            self.active.push(b.active);
            self.expected_share.push(b.expected_share);
            self.table_share.push(b.table_share);
        }
    }
}

/// The cells of a [`Steps`] ring, all in one width.
#[derive(Clone, Debug)]
enum Cells {
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

impl Default for Cells {
    fn default() -> Self {
        Cells::U16(Vec::new())
    }
}

impl Cells {
    fn get(&self, i: usize) -> u64 {
        match self {
            Cells::U16(c) => u64::from(c[i]),
            Cells::U32(c) => u64::from(c[i]),
            Cells::U64(c) => c[i],
        }
    }

    /// Stores `v` at `i`, widening every cell first when `v` does not fit.
    fn set(&mut self, i: usize, v: u64) {
        match self {
            Cells::U16(c) => match u16::try_from(v) {
                Ok(v) => c[i] = v,
                Err(_) => {
                    *self = match u32::try_from(v) {
                        Ok(_) => Cells::U32(c.iter().map(|&x| u32::from(x)).collect()),
                        Err(_) => Cells::U64(c.iter().map(|&x| u64::from(x)).collect()),
                    };
                    self.set(i, v);
                }
            },
            Cells::U32(c) => match u32::try_from(v) {
                Ok(v) => c[i] = v,
                Err(_) => {
                    *self = Cells::U64(c.iter().map(|&x| u64::from(x)).collect());
                    self.set(i, v);
                }
            },
            Cells::U64(c) => c[i] = v,
        }
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        match self {
            Cells::U16(c) => c.capacity(),
            Cells::U32(c) => c.capacity(),
            Cells::U64(c) => c.capacity(),
        }
    }

    /// Makes room for `more` cells (at least), zeroed, after moving the
    /// cell at `first` to the front (the ring's head becomes 0).
    fn grow(&mut self, first: usize, more: usize) {
        fn grow<T: Copy + Default>(c: &mut Vec<T>, first: usize, more: usize) {
            c.rotate_left(first);
            c.reserve_exact(more);
            c.resize(c.len() + more, T::default());
        }
        match self {
            Cells::U16(c) => grow(c, first, more),
            Cells::U32(c) => grow(c, first, more),
            Cells::U64(c) => grow(c, first, more),
        }
    }

    /// Keeps `keep` cells, from the cell at `first` on (wrapping), at the
    /// front, and frees the rest.
    fn shrink(&mut self, first: usize, keep: usize) {
        fn shrink<T>(c: &mut Vec<T>, first: usize, keep: usize) {
            c.rotate_left(first);
            c.truncate(keep);
            c.shrink_to_fit();
        }
        match self {
            Cells::U16(c) => shrink(c, first, keep),
            Cells::U32(c) => shrink(c, first, keep),
            Cells::U64(c) => shrink(c, first, keep),
        }
    }

    /// Empty, narrowest width, keeping the allocation when it is already
    /// the narrowest, with room for `cells`.
    fn reset(&mut self, cells: usize) {
        match self {
            Cells::U16(c) => c.clear(),
            _ => *self = Cells::default(),
        }
        if let Cells::U16(c) = self {
            c.shrink_to(cells);
            c.reserve_exact(cells);
        }
    }
}

/// One signal's growth per tick and backend, for the ticks after the
/// window's base: a ring of ticks, each `n` cells (one per backend). A
/// tick in which no backend grew keeps no cells, only its mark in
/// `grew`: an idle VIP's window holds none (at 1,000 VIPs x 64 backends
/// and the bake's four ticks a second, 41 ticks of cells were 16 MB a
/// detector).
#[derive(Clone, Debug, Default)]
struct Steps {
    cells: Cells,
    /// Ticks the cells have room for (`cells.len()` is `slots` times the
    /// backends; counted apart so that a VIP without backends has ticks too).
    slots: usize,
    /// The ring's oldest tick.
    head: usize,
    /// Ticks held in the ring (those with cells).
    len: usize,
    /// Every tick after the base, oldest first: whether it has cells in
    /// the ring (false: every backend's growth was 0).
    grew: VecDeque<bool>,
    /// Ticks' room made at once when the first tick with cells comes.
    room: usize,
}

impl Steps {
    fn clear(&mut self, room: usize) {
        self.cells.reset(0);
        self.slots = 0;
        self.head = 0;
        self.len = 0;
        self.grew.clear();
        self.grew.reserve(room);
        self.room = room;
    }

    /// Ticks held, with cells or without.
    #[cfg(test)]
    fn ticks(&self) -> usize {
        self.grew.len()
    }

    /// Appends one tick; when some backend `grew`, returns where its
    /// cells start: the caller sets all `n` of them (what is there is an
    /// older tick's).
    fn open(&mut self, n: usize, grew: bool) -> Option<usize> {
        self.grew.push_back(grew);
        if !grew {
            return None;
        }
        let slots = self.slots;
        if self.len == slots {
            // Full (or no room yet): the room the window is expected to
            // need the first time (made at once: a ring allocated bit by
            // bit ends up scattered among the short-lived reports, which
            // slowed malloc and free for every later report), else room
            // for exactly one more tick. Not doubled: the ticks that come
            // in a burst after a stalled collector (an apply) would leave
            // twice the room for good.
            let more = if slots == 0 { self.room.max(1) } else { 1 };
            self.cells.grow(self.head * n, more * n);
            self.slots += more;
            self.head = 0;
        }
        let at = (self.head + self.len) % self.slots * n;
        self.len += 1;
        Some(at)
    }

    /// Drops the oldest tick, handing each backend's value to `take` (not
    /// called for a tick in which nothing grew).
    fn pop_front(&mut self, n: usize, mut take: impl FnMut(usize, u64)) {
        if !self.grew.pop_front().unwrap_or(false) || self.len == 0 {
            return;
        }
        let at = self.head * n;
        for j in 0..n {
            take(j, self.cells.get(at + j));
        }
        self.head = (self.head + 1) % self.slots;
        self.len -= 1;
        // After a burst of ticks (a stalled collector catching up) the
        // window holds its usual few again: give the room back once it is
        // more than twice what is held, keeping one tick of room; all of
        // it once no tick has cells (the traffic stopped).
        if self.len == 0 {
            self.cells.reset(0);
            self.slots = 0;
            self.head = 0;
        } else if self.slots > 2 * (self.len + 1) {
            self.cells.shrink(self.head * n, (self.len + 1) * n);
            self.slots = self.len + 1;
            self.head = 0;
        }
    }
}

/// Counter growth between the window's base snapshot and the newest one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Delta<'w> {
    /// Seconds between the two snapshots, > 0.
    pub span: f64,
    growth: &'w [Cumulative],
}

impl Delta<'_> {
    /// Growth of the `i`th backend in the order they were pushed (0 past
    /// the end, which a consistent history never reaches).
    pub fn get(&self, i: usize) -> Cumulative {
        self.growth.get(i).copied().unwrap_or_default()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Window {
    keys: Keys,
    /// The time of each kept snapshot, oldest (the base) first.
    times: VecDeque<f64>,
    /// The newest snapshot's counters, in the order of `keys`.
    last: Vec<Cumulative>,
    /// The newest snapshot's counters minus the base's.
    growth: Vec<Cumulative>,
    /// Per signal ([`SIGNALS`] order), each tick's growth after the base.
    steps: [Steps; SIGNALS.len()],
    /// Whether the last push changed `growth` (or started over).
    moved: bool,
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
        let had_delta = self.delta().is_some();
        let reset = !self.continues(now, backends.clone());
        self.moved = reset;
        if reset {
            self.start_over(backends.clone(), window_seconds);
        }
        // A non-finite time cannot be measured against; keep nothing, so the
        // VIP reports "warming up" until the clock is sane again.
        if now.is_finite() {
            if self.times.is_empty() {
                self.last.clear();
                self.last.extend(backends.map(|b| b.counters));
                self.growth.clear();
                self.growth.resize(self.last.len(), Cumulative::default());
            } else {
                // `continues` checked that no counter went backwards.
                let n = self.last.len();
                let mut grew = [false; SIGNALS.len()];
                for (old, b) in self.last.iter().zip(backends.clone()) {
                    for (grew, signal) in grew.iter_mut().zip(SIGNALS) {
                        *grew |= b.counters.get(signal) != old.get(signal);
                    }
                }
                let at: [Option<usize>; SIGNALS.len()] =
                    std::array::from_fn(|i| self.steps[i].open(n, grew[i]));
                // No counter moved (an idle VIP, most of them): every step
                // is 0 and every counter the last one, so the rows stay
                // as they are.
                let rows = self.last.iter_mut().zip(&mut self.growth);
                if grew.contains(&true) {
                    for (j, ((old, growth), b)) in rows.zip(backends).enumerate() {
                        let new = b.counters;
                        let step = Cumulative {
                            new_flows: new.new_flows - old.new_flows,
                            packets: new.packets - old.packets,
                            bytes: new.bytes - old.bytes,
                        };
                        for ((steps, at), signal) in self.steps.iter_mut().zip(at).zip(SIGNALS) {
                            if let Some(at) = at {
                                steps.cells.set(at + j, step.get(signal));
                            }
                        }
                        self.moved |= step != Cumulative::default();
                        growth.new_flows += step.new_flows;
                        growth.packets += step.packets;
                        growth.bytes += step.bytes;
                        *old = new;
                    }
                }
            }
            self.times.push_back(now);
        }
        self.prune(now, window_seconds);
        self.moved |= had_delta != self.delta().is_some();
        reset
    }

    /// The name of the `i`th backend in the order they were pushed.
    pub fn name(&self, i: usize) -> &str {
        self.keys.name(i)
    }

    /// Whether the last push changed the deltas, started over, or made or
    /// lost the window: when not, [`Window::delta`] gives the previous
    /// tick's counts (its span may differ by the ticks' jitter).
    pub fn moved(&self) -> bool {
        self.moved
    }

    /// Drops the history and records what the new one is matched against.
    ///
    /// It also makes room, here and now (and for the cells of the ticks,
    /// when the first one with growth comes), for the ticks that a window
    /// of `window_seconds` at the daemon's one tick a second will hold, so
    /// that later ticks allocate nothing: a history allocated bit by bit
    /// while it fills ends up scattered among the short-lived reports,
    /// which slowed malloc and free for every later report (by about a
    /// third of the detector's time at 1,000 VIPs x 64 backends).
    fn start_over<'s, 'a: 's>(
        &mut self,
        backends: impl ExactSizeIterator<Item = &'s BackendSample<'a>>,
        window_seconds: f64,
    ) {
        self.keys.set(backends);
        self.times.clear();
        self.last.clear();
        self.growth.clear();
        // base + newest + one of jitter, + the one pushed before pruning;
        // the float-to-int cast saturates (NaN and negatives give 0).
        let wanted =
            ((window_seconds.ceil() as usize).saturating_add(3)).min(PREALLOCATED_SNAPSHOTS);
        self.times.reserve(wanted);
        for steps in &mut self.steps {
            steps.clear(wanted - 1);
        }
    }

    /// True when `now` and `backends` extend the current history.
    fn continues<'s, 'a: 's>(
        &self,
        now: f64,
        backends: impl ExactSizeIterator<Item = &'s BackendSample<'a>>,
    ) -> bool {
        let Some(&at) = self.times.back() else {
            return false;
        };
        now.is_finite()
            && now > at
            && self.keys.len() == backends.len()
            && self.last.len() == backends.len()
            && self
                .last
                .iter()
                .zip(backends)
                .enumerate()
                .all(|(i, (old, b))| {
                    let new = b.counters;
                    self.keys.matches(i, b)
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
        // times[1] is not the newest while len > 2; if it is old enough
        // to be the base, times[0] is not needed.
        while self.times.len() > 2 && now - self.times[1] >= window - TIME_SLACK_SECONDS {
            self.drop_base();
        }
        while self.times.len() > MAX_SNAPSHOTS {
            self.drop_base();
        }
    }

    /// The base snapshot dropped: the tick after it becomes the base, and
    /// its growth leaves the window's.
    fn drop_base(&mut self) {
        self.times.pop_front();
        let n = self.growth.len();
        let growth = &mut self.growth;
        let mut moved = false;
        for (steps, signal) in self.steps.iter_mut().zip(SIGNALS) {
            steps.pop_front(n, |j, v| {
                moved |= v != 0;
                let g = &mut growth[j];
                match signal {
                    Signal::NewFlows => g.new_flows -= v,
                    Signal::Packets => g.packets -= v,
                    Signal::Bytes => g.bytes -= v,
                }
            });
        }
        self.moved |= moved;
    }

    /// The deltas over the window; None with fewer than two snapshots.
    pub fn delta(&self) -> Option<Delta<'_>> {
        let (first, last) = (self.times.front()?, self.times.back()?);
        if self.times.len() < 2 {
            return None;
        }
        let span = last - first;
        // Guaranteed by `continues`, but a zero or infinite span must never
        // reach a division.
        if !(span.is_finite() && span > 0.0) {
            return None;
        }
        Some(Delta {
            span,
            growth: &self.growth,
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

    fn cells_capacity(w: &Window) -> usize {
        w.steps.iter().map(|s| s.cells.capacity()).sum()
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
        assert_eq!(w.times.len(), 11);
    }

    #[test]
    fn steady_state_allocates_nothing() {
        let mut w = Window::default();
        push(&mut w, 0.0, 0, 10.0);
        assert_eq!(cells_capacity(&w), 0, "no tick with growth yet");
        push(&mut w, 1.0, 1, 10.0);
        let room = cells_capacity(&w);
        // 12 ticks of 2 backends, 3 signals, 2 bytes each (10 s window + 2).
        assert_eq!(room, 3 * 12 * 2);
        for t in 2..40u64 {
            push(&mut w, t as f64, t, 10.0);
            assert_eq!(cells_capacity(&w), room, "tick {t}");
        }
        // Idle: all cells in the narrowest width.
        assert!(
            w.steps
                .iter()
                .all(|s| matches!(s.cells, Cells::U16(_)) || s.len == 0)
        );
    }

    #[test]
    fn ticks_without_growth_keep_no_cells() {
        let mut w = Window::default();
        push(&mut w, 0.0, 0, 10.0);
        // Idle: ticks, but no cells.
        for t in 1..20u64 {
            assert!(!push(&mut w, t as f64, 0, 10.0));
            assert_eq!(cells_capacity(&w), 0, "tick {t}");
        }
        assert_eq!(w.times.len(), 11);
        assert!(w.steps.iter().all(|s| s.ticks() == 10 && s.len == 0));
        // Two ticks of traffic among idle ones: only they have cells.
        push(&mut w, 20.0, 3, 10.0);
        push(&mut w, 21.0, 3, 10.0);
        push(&mut w, 22.0, 5, 10.0);
        assert!(w.steps.iter().all(|s| s.ticks() == 10 && s.len == 2));
        assert_eq!(w.delta().unwrap().get(0).new_flows, 5);
        assert_eq!(w.delta().unwrap().get(1).bytes, 2000 * 5);
        // One signal growing alone: only its ring has cells.
        let mut a = backend("a", 5);
        let b = backend("b", 10);
        a.counters.bytes += 1;
        w.push(23.0, [&a, &b], 10.0);
        let held: Vec<usize> = w.steps.iter().map(|s| s.len).collect();
        assert_eq!(held, [2, 2, 3]);
        // Once the traffic has left the window, the room goes too.
        for t in 24..40u64 {
            w.push(t as f64, [&a, &b], 10.0);
        }
        assert_eq!(cells_capacity(&w), 0);
        assert_eq!(w.delta().unwrap().get(0), Cumulative::default());
    }

    #[test]
    fn room_left_by_a_burst_is_given_back() {
        let mut w = Window::default();
        push(&mut w, 0.0, 0, 10.0);
        for t in 1..20u64 {
            push(&mut w, t as f64, t, 10.0);
        }
        let steady = cells_capacity(&w);
        // 30 ticks within one second, then one a second again.
        for i in 1..=30u64 {
            push(&mut w, 19.0 + i as f64 / 31.0, 19 + i, 10.0);
        }
        assert!(cells_capacity(&w) > 2 * steady);
        for t in 20..45u64 {
            push(&mut w, t as f64, 100 + t, 10.0);
        }
        // At most twice the steady room (the hysteresis that keeps a ring
        // from shrinking and growing every other tick).
        let after = cells_capacity(&w);
        assert!(after <= 2 * steady, "{after} > 2 x {steady}");
        assert_eq!(w.delta().unwrap().get(0).new_flows, 10);
    }

    #[test]
    fn large_steps_widen_the_cells_and_keep_exact_counts() {
        let mut w = Window::default();
        let at = |n: u64| [backend("a", n)];
        assert!(w.push(0.0, &at(0), 3.0));
        // new flows 70,000 (past u16), packets 700,000, bytes 70e6; then
        // bytes past u32.
        assert!(!w.push(1.0, &at(70_000), 3.0));
        assert!(matches!(w.steps[0].cells, Cells::U32(_)));
        assert!(!w.push(2.0, &at(70_000 + 5_000_000), 3.0));
        assert!(matches!(w.steps[2].cells, Cells::U64(_)));
        assert!(!w.push(3.0, &at(70_000 + 5_000_000 + 1), 3.0));
        assert!(!w.push(4.0, &at(70_000 + 5_000_000 + 1), 3.0));
        // Window from 1.0 to 4.0.
        let d = w.delta().unwrap();
        assert_eq!(d.span, 3.0);
        assert_eq!(d.get(0).new_flows, 5_000_001);
        assert_eq!(d.get(0).bytes, 5_000_001_000);
        // Starting over goes back to the narrowest width.
        assert!(w.push(5.0, &at(0), 3.0));
        assert!(w.steps.iter().all(|s| matches!(s.cells, Cells::U16(_))));
    }

    #[test]
    fn moved_says_when_the_counts_changed() {
        let mut w = Window::default();
        assert!(push(&mut w, 0.0, 5, 2.0));
        assert!(w.moved(), "a start is a change");
        assert!(!push(&mut w, 1.0, 5, 2.0));
        assert!(w.moved(), "the first window");
        assert!(!push(&mut w, 2.0, 5, 2.0));
        assert!(!w.moved());
        assert!(!push(&mut w, 3.0, 6, 2.0));
        assert!(w.moved(), "growth came in");
        assert!(!push(&mut w, 4.0, 6, 2.0));
        assert!(!w.moved(), "window 2..4 holds the same growth as 1..3");
        assert!(!push(&mut w, 5.0, 6, 2.0));
        assert!(w.moved(), "the growth left the window");
        assert_eq!(w.delta().unwrap().get(0), Cumulative::default());
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
        assert_eq!(w.times.len(), MAX_SNAPSHOTS);
        assert_eq!(w.steps[0].len, MAX_SNAPSHOTS - 1);
        let d = w.delta().unwrap();
        assert_eq!(d.get(0).new_flows, MAX_SNAPSHOTS as u64 - 1);
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
        for change in 0..5 {
            let mut c = a.clone();
            match change {
                0 => c.active = false,
                1 => c.expected_share = 0.6,
                2 => c.table_share = 0.4,
                3 => c.name = "c",
                // the names' boundary moved, not their text
                _ => c.name = "ab",
            }
            let mut b = b.clone();
            if change == 4 {
                b.name = "";
            }
            // back to the original set, settled
            w.push(t, [&backend("b", 200), &a], 10.0);
            assert!(!w.push(t + 1.0, [&backend("b", 200), &a], 10.0));
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

    /// The window as it was before it was made compact: every snapshot
    /// kept whole, deltas as newest minus base.
    #[derive(Default)]
    struct Whole {
        keys: Vec<(String, bool, f64, f64)>,
        history: VecDeque<(f64, Vec<Cumulative>)>,
    }

    impl Whole {
        fn push(&mut self, now: f64, backends: &[BackendSample<'_>], window: f64) -> bool {
            let continues = self.history.back().is_some_and(|(at, last)| {
                now.is_finite()
                    && now > *at
                    && self.keys.len() == backends.len()
                    && self
                        .keys
                        .iter()
                        .zip(last)
                        .zip(backends)
                        .all(|((k, old), b)| {
                            let new = b.counters;
                            k.0 == b.name
                                && k.1 == b.active
                                && same_share(k.2, b.expected_share)
                                && same_share(k.3, b.table_share)
                                && new.new_flows >= old.new_flows
                                && new.packets >= old.packets
                                && new.bytes >= old.bytes
                        })
            });
            if !continues {
                self.history.clear();
                self.keys = backends
                    .iter()
                    .map(|b| (b.name.to_owned(), b.active, b.expected_share, b.table_share))
                    .collect();
            }
            if now.is_finite() {
                let counters = backends.iter().map(|b| b.counters).collect();
                self.history.push_back((now, counters));
            }
            let window = if window > 0.0 { window } else { 0.0 };
            while self.history.len() > 2 && now - self.history[1].0 >= window - TIME_SLACK_SECONDS {
                self.history.pop_front();
            }
            while self.history.len() > MAX_SNAPSHOTS {
                self.history.pop_front();
            }
            !continues
        }

        fn delta(&self) -> Option<(f64, Vec<Cumulative>)> {
            let ((t0, first), (t1, last)) = (self.history.front()?, self.history.back()?);
            let span = t1 - t0;
            (self.history.len() >= 2 && span.is_finite() && span > 0.0).then(|| {
                let d = first
                    .iter()
                    .zip(last)
                    .map(|(a, b)| Cumulative {
                        new_flows: b.new_flows - a.new_flows,
                        packets: b.packets - a.packets,
                        bytes: b.bytes - a.bytes,
                    })
                    .collect();
                (span, d)
            })
        }
    }

    fn compact_delta(w: &Window, n: usize) -> Option<(f64, Vec<Cumulative>)> {
        w.delta()
            .map(|d| (d.span, (0..n).map(|i| d.get(i)).collect()))
    }

    proptest::proptest! {
        /// The compact window gives the whole one's deltas, spans and
        /// resets over any run of ticks: growth of every size (the widths
        /// widened), counters going back (a reset) or wrapping past
        /// u64::MAX, the clock standing still, a backend's flag changing, ticks
        /// in which nothing grew (they keep no cells).
        #[test]
        fn the_compact_window_gives_the_same_deltas(
            window in proptest::prop_oneof![
                proptest::strategy::Just(0.0),
                proptest::strategy::Just(3.0),
                proptest::strategy::Just(10.0),
                proptest::strategy::Just(f64::INFINITY),
            ],
            ticks in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        8 => proptest::strategy::Just(1.0),
                        2 => proptest::strategy::Just(0.9),
                        2 => proptest::strategy::Just(1.2),
                        1 => proptest::strategy::Just(0.0),
                        1 => proptest::strategy::Just(f64::NAN),
                    ],
                    proptest::collection::vec(
                        proptest::prop_oneof![
                            6 => proptest::strategy::Just(0u64),
                            4 => 0u64..100,
                            2 => 60_000u64..70_000,
                            2 => 4_000_000_000u64..5_000_000_000,
                            1 => proptest::strategy::Just(u64::MAX / 2),
                        ],
                        9,
                    ),
                    proptest::bool::weighted(0.05),
                    proptest::bool::weighted(0.05),
                    proptest::bool::weighted(0.3),
                ),
                1..60,
            ),
        ) {
            let names = ["a", "b", "c"];
            let mut counters = [Cumulative::default(); 3];
            let mut active = [true; 3];
            let (mut compact, mut whole) = (Window::default(), Whole::default());
            let mut now = 1.7e9;
            let mut before: Option<(f64, Vec<Cumulative>)> = None;
            for (dt, mut growth, back, flip, idle) in ticks {
                now += dt;
                if idle {
                    growth.fill(0);
                }
                for (i, c) in counters.iter_mut().enumerate() {
                    // wrapping: past u64::MAX a counter starts again low
                    c.new_flows = c.new_flows.wrapping_add(growth[3 * i]);
                    c.packets = c.packets.wrapping_add(growth[3 * i + 1]);
                    c.bytes = c.bytes.wrapping_add(growth[3 * i + 2]);
                }
                if back {
                    counters[1].packets /= 2;
                }
                if flip {
                    active[2] = !active[2];
                }
                let sample: Vec<BackendSample<'_>> = names
                    .iter()
                    .zip(counters)
                    .zip(active)
                    .map(|((&name, counters), active)| BackendSample {
                        name,
                        active,
                        expected_share: 1.0 / 3.0,
                        table_share: 1.0 / 3.0,
                        counters,
                    })
                    .collect();
                let reset = compact.push(now, &sample, window);
                proptest::prop_assert_eq!(reset, whole.push(now, &sample, window));
                let got = compact_delta(&compact, 3);
                let want = whole.delta();
                proptest::prop_assert_eq!(got.as_ref().map(|d| d.0.to_bits()), want.as_ref().map(|d| d.0.to_bits()));
                proptest::prop_assert_eq!(got.as_ref().map(|d| &d.1), want.as_ref().map(|d| &d.1));
                // `moved` is at least every change of the counts.
                let counts = |d: &Option<(f64, Vec<Cumulative>)>| d.as_ref().map(|d| d.1.clone());
                if counts(&got) != counts(&before) {
                    proptest::prop_assert!(compact.moved() || reset);
                }
                before = got;
            }
        }
    }
}
