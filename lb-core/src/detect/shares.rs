//! Share, ratio, worst backend and cv of one signal over one window: rule 3
//! of the module docs. Plain arithmetic on counts; no thresholds here.

/// Ratios are floored here before taking the log, so a starving backend
/// (ratio 0) has a finite distance that beats any real one.
pub const RATIO_FLOOR: f64 = 1e-12;

/// Below this an expected share counts as 0: the backend is not expected to
/// get anything, so it has no ratio (and 1/e stays far from overflow).
pub const MIN_EXPECTED_SHARE: f64 = 1e-12;

/// A share as given by the caller, made safe to compute with: NaN, negative
/// or infinite become 0.
pub fn sane_share(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

/// How far a ratio is from 1, symmetric for over- and under-share
/// (2x and 0.5x are equally far).
pub fn distance(ratio: f64) -> f64 {
    ratio.max(RATIO_FLOOR).ln().abs()
}

/// A cheap stand-in for [`distance`] that grows with it: `max(r, 1/r)`, r
/// floored the same way. Used only to rule ratios out, see [`CLEARLY_CLOSER`].
fn spread(ratio: f64) -> f64 {
    let r = ratio.max(RATIO_FLOOR);
    r.max(1.0 / r)
}

/// A ratio whose [`spread`] is below the worst one's times this is strictly
/// closer to 1 than the worst by [`distance`] too, so its log (the costly
/// part, taken for every backend, signal and VIP) is not needed: the two
/// logs then differ by about 1e-9, far more than the rounding of `ln` and of
/// `1/r` (about 1e-15 here, as distances stay below 28).
const CLEARLY_CLOSER: f64 = 1.0 - 1e-9;

/// One backend's input for one signal.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub active: bool,
    /// Already passed through [`sane_share`].
    pub expected_share: f64,
    /// Events in the window.
    pub delta: u64,
}

/// The shares of one signal, index for index with the entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shares {
    /// Σ delta over active backends (u128: a sum of u64 cannot overflow it).
    pub total: u128,
    /// Share of `total`; None for inactive backends and when `total` is 0.
    pub observed: Vec<Option<f64>>,
    /// observed / expected; None also when the expected share is ~0.
    pub ratio: Vec<Option<f64>>,
    /// Index of the backend furthest from its expected share (ties: the
    /// smaller name, then the earlier index).
    pub worst: Option<usize>,
    /// sqrt(Σ e_i (r_i − 1)²) over the backends with a ratio.
    pub cv: Option<f64>,
}

#[cfg(test)]
pub fn compute(entries: &[Entry<'_>]) -> Shares {
    let mut shares = Shares::default();
    shares.recompute(entries.len(), |i| entries[i]);
    shares
}

impl Shares {
    /// The shares of entries `0..n`, `entry(i)` giving the ith. Done in
    /// place: the detector keeps one `Shares` per VIP and signal and
    /// reuses its vectors every tick rather than allocating new ones.
    pub fn recompute<'a>(&mut self, n: usize, entry: impl Fn(usize) -> Entry<'a>) {
        let total: u128 = (0..n)
            .map(&entry)
            .filter(|e| e.active)
            .map(|e| u128::from(e.delta))
            .sum();
        self.total = total;
        self.observed.clear();
        self.ratio.clear();
        // The worst index with its distance and spread, so that a ratio's
        // log is taken at most once, and only when it may beat the worst.
        let mut worst: Option<(usize, f64, f64)> = None;
        // Σ e_i (r_i − 1)², in index order as the sum was always taken.
        let mut weighted_squares = 0.0;
        for i in 0..n {
            let e = entry(i);
            let observed = (e.active && total > 0).then(|| e.delta as f64 / total as f64);
            let ratio = observed.and_then(|o| {
                (e.expected_share >= MIN_EXPECTED_SHARE).then(|| o / e.expected_share)
            });
            self.observed.push(observed);
            self.ratio.push(ratio);
            let Some(r) = ratio else { continue };
            weighted_squares += e.expected_share * (r - 1.0) * (r - 1.0);
            let spread = spread(r);
            if worst.is_some_and(|(_, _, ws)| spread < ws * CLEARLY_CLOSER) {
                continue;
            }
            let d = distance(r);
            let better = match worst {
                None => true,
                Some((w, dw, _)) => d > dw || (d == dw && e.name < entry(w).name),
            };
            if better {
                worst = Some((i, d, spread));
            }
        }
        self.worst = worst.map(|(w, _, _)| w);
        // A worst exists exactly when some backend has a ratio.
        self.cv = worst.map(|_| weighted_squares.sqrt());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries<'a>(names: &[&'a str], expected: &[f64], deltas: &[u64]) -> Vec<Entry<'a>> {
        names
            .iter()
            .zip(expected)
            .zip(deltas)
            .map(|((&name, &expected_share), &delta)| Entry {
                name,
                active: true,
                expected_share,
                delta,
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn ratios_worst_and_cv() {
        let e = entries(&["a", "b", "c", "d"], &[0.25; 4], &[400, 100, 100, 100]);
        let s = compute(&e);
        assert_eq!(s.total, 700);
        assert!(close(s.observed[0].unwrap(), 4.0 / 7.0));
        assert!(close(s.ratio[0].unwrap(), 16.0 / 7.0));
        assert_eq!(s.worst, Some(0));
        // Equal weights: the plain population CV of the ratios.
        let r = [16.0 / 7.0, 4.0 / 7.0, 4.0 / 7.0, 4.0 / 7.0];
        let mean = r.iter().sum::<f64>() / 4.0;
        let var = r.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 4.0;
        assert!(close(mean, 1.0));
        assert!(close(s.cv.unwrap(), var.sqrt() / mean));
    }

    #[test]
    fn matching_shares_have_cv_zero() {
        let e = entries(&["a", "b", "c"], &[0.5, 0.25, 0.25], &[200, 100, 100]);
        let s = compute(&e);
        assert!(s.ratio.iter().all(|r| close(r.unwrap(), 1.0)));
        assert!(close(s.cv.unwrap(), 0.0));
    }

    #[test]
    fn starving_backend_is_the_worst() {
        // b gets nothing; a gets 1.5x. 0 is further from 1 than anything.
        let e = entries(&["a", "b", "c"], &[1.0 / 3.0; 3], &[150, 0, 150]);
        let s = compute(&e);
        assert_eq!(s.worst, Some(1));
        assert_eq!(s.ratio[1], Some(0.0));
    }

    #[test]
    fn under_share_can_be_the_worst() {
        // a at 1.2x, b at 0.4x: ln distances 0.18 vs 0.92.
        let e = entries(&["a", "b", "c"], &[0.5, 0.25, 0.25], &[600, 100, 300]);
        assert_eq!(compute(&e).worst, Some(1));
    }

    #[test]
    fn ties_go_to_the_smaller_name_whatever_the_order() {
        let worst = |e: &[Entry<'_>]| e[compute(e).worst.unwrap()].name.to_owned();
        // m and b both at 0.4x (the furthest), z and a at 1.6x.
        let e = entries(&["z", "m", "a", "b"], &[0.25; 4], &[400, 100, 400, 100]);
        assert_eq!(worst(&e), "b");
        let e = entries(&["b", "a", "m", "z"], &[0.25; 4], &[100, 400, 100, 400]);
        assert_eq!(worst(&e), "b");
        // All at 1x: still a defined answer.
        let e = entries(&["z", "m"], &[0.5, 0.5], &[300, 300]);
        assert_eq!(worst(&e), "m");
    }

    #[test]
    fn no_events_no_shares_no_nan() {
        let e = entries(&["a", "b"], &[0.5, 0.5], &[0, 0]);
        let s = compute(&e);
        assert_eq!(s.total, 0);
        assert_eq!(s.observed, vec![None, None]);
        assert_eq!(s.ratio, vec![None, None]);
        assert_eq!(s.worst, None);
        assert_eq!(s.cv, None);
        assert_eq!(compute(&[]).worst, None);
    }

    #[test]
    fn inactive_and_zero_expected_are_left_out() {
        let mut e = entries(&["a", "b", "c"], &[0.5, 0.5, 0.0], &[100, 100, 100]);
        e[2].active = false;
        let s = compute(&e);
        assert_eq!(s.total, 200);
        assert_eq!(s.observed[2], None);
        assert_eq!(s.ratio[2], None);
        // Active but expected ~0: a share, no ratio.
        let e = entries(&["a", "b"], &[1.0, 1e-300], &[100, 100]);
        let s = compute(&e);
        assert_eq!(s.observed[1], Some(0.5));
        assert_eq!(s.ratio[1], None);
        assert_eq!(s.worst, Some(0));
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let e = entries(&["a", "b", "c"], &[1.0 / 3.0; 3], &[u64::MAX; 3]);
        let s = compute(&e);
        assert_eq!(s.total, 3 * u128::from(u64::MAX));
        assert!(s.cv.unwrap().is_finite());
    }

    /// The worst and the cv by the plain definition: every ratio's log,
    /// the sum in its own pass.
    fn by_definition(e: &[Entry<'_>]) -> (Option<usize>, Option<f64>) {
        let ratio = compute(e).ratio;
        let mut worst: Option<usize> = None;
        for (i, r) in ratio.iter().enumerate() {
            let Some(r) = *r else { continue };
            let better = worst.is_none_or(|w| {
                let (d, dw) = (distance(r), distance(ratio[w].unwrap()));
                d > dw || (d == dw && e[i].name < e[w].name)
            });
            if better {
                worst = Some(i);
            }
        }
        let cv = worst.map(|_| {
            e.iter()
                .zip(&ratio)
                .filter_map(|(e, r)| r.map(|r| e.expected_share * (r - 1.0) * (r - 1.0)))
                .sum::<f64>()
                .sqrt()
        });
        (worst, cv)
    }

    proptest::proptest! {
        /// Skipping the logs of clearly closer ratios changes nothing. Small
        /// counts and weights make many exact ties and reciprocal ratios
        /// (2x against 0.5x), where rounding would show.
        #[test]
        fn the_log_shortcut_finds_the_same_worst_and_cv(
            backends in proptest::collection::vec(
                (proptest::prop_oneof![0u64..8, 0u64..1_000_000], 1u32..5, proptest::bool::weighted(0.9)),
                1..24,
            ),
        ) {
            let names: Vec<String> = (0..backends.len()).map(|i| format!("b{}", i % 7)).collect();
            let weights: u32 = backends.iter().map(|b| b.1).sum();
            let e: Vec<Entry<'_>> = backends
                .iter()
                .zip(&names)
                .map(|(&(delta, weight, active), name)| Entry {
                    name,
                    active,
                    expected_share: f64::from(weight) / f64::from(weights),
                    delta,
                })
                .collect();
            let s = compute(&e);
            let (worst, cv) = by_definition(&e);
            proptest::prop_assert_eq!(s.worst, worst);
            proptest::prop_assert_eq!(s.cv.map(f64::to_bits), cv.map(f64::to_bits));
        }
    }

    #[test]
    fn sane_share_and_distance() {
        assert_eq!(sane_share(f64::NAN), 0.0);
        assert_eq!(sane_share(-0.5), 0.0);
        assert_eq!(sane_share(f64::INFINITY), 0.0);
        assert_eq!(sane_share(0.25), 0.25);
        assert!(close(distance(2.0), distance(0.5)));
        assert!(distance(0.0).is_finite());
        assert!(distance(0.0) > distance(1e-6));
    }
}
