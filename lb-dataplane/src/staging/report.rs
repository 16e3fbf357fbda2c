//! The simulation's report: its types, judging a simulated split against
//! the weights, and rendering it. Pure: no I/O.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SimReport {
    pub schema_version: u32,
    pub vips: Vec<SimVip>,
    /// Frames run through the program.
    pub packets: u64,
    /// Frames not for any VIP (the program passed them to the host stack).
    pub unmatched_packets: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SimVip {
    pub name: String,
    /// Packets the program counted for the VIP (forwarded or dropped).
    pub packets: u64,
    /// Of those, dropped (no backend).
    pub dropped: u64,
    /// Connection-table misses: the flows the split is measured on.
    pub new_flows: u64,
    pub backends: Vec<SimBackend>,
    /// Simulated/expected share of the backend furthest from its weight;
    /// None when not judged (no active backend, no flows).
    pub worst_ratio: Option<f64>,
    /// That backend.
    pub worst_backend: Option<String>,
    /// The VIP's `imbalance.max_ratio`.
    pub max_ratio: f64,
    /// Some backend is beyond `max_ratio` (or its inverse), and by more than
    /// 4-sigma noise.
    pub over_threshold: bool,
    /// The VIP's `safety.max_capacity_ratio`.
    #[serde(default)]
    pub max_capacity_ratio: f64,
    /// Backends whose simulated share is beyond `max_capacity_ratio` x their
    /// capacity share, by more than noise (as `xlb plan` and the bake judge
    /// a change): the weights may be what the config says and still send a
    /// backend more than it can take.
    #[serde(default)]
    pub over_capacity: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SimBackend {
    pub name: String,
    /// Its weight over the weights of the VIP's active backends (0 when not
    /// active).
    pub expected_share_ratio: f64,
    /// Its capacity over the capacities of the VIP's active backends (0
    /// when not active).
    #[serde(default)]
    pub capacity_share_ratio: f64,
    /// Its share of the VIP's new flows, from the program's counters; None
    /// when the VIP had no new flows.
    pub simulated_share_ratio: Option<f64>,
    pub new_flows: u64,
    pub packets: u64,
}

/// How many binomial standard deviations a backend's count must be from its
/// expectation before it counts as off: the daemon's detector uses the same
/// 4 sigma, so a small capture's noise does not refuse a config.
pub const SIGNIFICANCE_SIGMAS: f64 = 4.0;

/// `ratio` (observed / expected share) is outside `[1/max_ratio, max_ratio]`.
pub fn beyond(ratio: f64, max_ratio: f64) -> bool {
    ratio > max_ratio || ratio < 1.0 / max_ratio
}

/// `count` of `total` events is further than [`SIGNIFICANCE_SIGMAS`] binomial
/// standard deviations from the expected `share · total`.
pub fn significant(count: u64, share: f64, total: u64) -> bool {
    let (count, total) = (count as f64, total as f64);
    let sd = (total * share * (1.0 - share)).max(0.0).sqrt();
    (count - share * total).abs() > SIGNIFICANCE_SIGMAS * sd
}

/// How far a ratio is from 1, the same either way (2x and 0.5x are equally
/// bad); a backend that got nothing is the worst of all.
fn distance(ratio: f64) -> f64 {
    ratio.max(f64::MIN_POSITIVE).ln().abs()
}

/// The verdict on one VIP's split.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// Observed/expected of the backend furthest from its expected share.
    pub worst_ratio: Option<f64>,
    /// Index of that backend.
    pub worst: Option<usize>,
    /// Some backend's ratio is beyond `max_ratio` (or its inverse), and by
    /// more than noise.
    pub over_threshold: bool,
}

/// Judge `(expected share, new flows)` per backend. Backends expecting
/// nothing (not active) are not judged; neither is a VIP without active
/// backends or without flows.
pub fn judge(backends: &[(f64, u64)], max_ratio: f64) -> Judgement {
    let total: u64 = backends.iter().map(|&(_, n)| n).sum();
    let mut j = Judgement {
        worst_ratio: None,
        worst: None,
        over_threshold: false,
    };
    if total == 0 {
        return j;
    }
    for (i, &(expected, count)) in backends.iter().enumerate() {
        if expected <= 0.0 {
            continue;
        }
        let ratio = count as f64 / total as f64 / expected;
        if j.worst_ratio.is_none_or(|w| distance(ratio) > distance(w)) {
            j.worst_ratio = Some(ratio);
            j.worst = Some(i);
        }
        if beyond(ratio, max_ratio) && significant(count, expected, total) {
            j.over_threshold = true;
        }
    }
    j
}

/// The backends (indices) whose share of `total` new flows is beyond
/// `max_capacity_ratio` x their capacity share, by more than noise. Only
/// too much counts: less than its capacity is no risk to a backend.
pub fn over_capacity(backends: &[(f64, u64)], max_capacity_ratio: f64) -> Vec<usize> {
    let total: u64 = backends.iter().map(|&(_, n)| n).sum();
    if total == 0 {
        return Vec::new();
    }
    backends
        .iter()
        .enumerate()
        .filter(|&(_, &(capacity, count))| {
            capacity > 0.0
                && count as f64 / total as f64 > max_capacity_ratio * capacity
                && significant(count, capacity * max_capacity_ratio, total)
        })
        .map(|(i, _)| i)
        .collect()
}

fn pct(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

fn backend_row(vip: &str, b: &SimBackend) -> Vec<String> {
    let ratio = match b.simulated_share_ratio {
        Some(s) if b.expected_share_ratio > 0.0 => format!("{:.2}", s / b.expected_share_ratio),
        _ => "-".into(),
    };
    vec![
        vip.to_string(),
        b.name.clone(),
        pct(b.expected_share_ratio),
        b.simulated_share_ratio.map_or("-".into(), pct),
        ratio,
        pct(b.capacity_share_ratio),
        b.new_flows.to_string(),
        b.packets.to_string(),
    ]
}

/// One line per VIP under the table: its verdict in words.
fn verdict_line(v: &SimVip) -> String {
    let dropped = if v.dropped > 0 {
        format!(", {} packets dropped", v.dropped)
    } else {
        String::new()
    };
    let (Some(ratio), Some(worst)) = (v.worst_ratio, v.worst_backend.as_deref()) else {
        let active = v.backends.iter().any(|b| b.expected_share_ratio > 0.0);
        let why = if active {
            "no flows reached a backend"
        } else {
            "no active backends, not judged"
        };
        return format!("{}: {why}{dropped}", v.name);
    };
    let state = if v.over_threshold {
        "OVER THRESHOLD".to_string()
    } else if beyond(ratio, v.max_ratio) {
        // Say why a ratio past the limit is not a refusal.
        format!("ok, within the noise of {} new flows", v.new_flows)
    } else {
        "ok".to_string()
    };
    format!(
        "{}: {state}: worst {worst} at {ratio:.2}x its expected share (max_ratio {}){dropped}",
        v.name, v.max_ratio
    )
}

/// A line per backend over its capacity.
fn capacity_lines(v: &SimVip) -> Vec<String> {
    v.over_capacity
        .iter()
        .filter_map(|name| v.backends.iter().find(|b| &b.name == name))
        .map(|b| {
            let got = b.simulated_share_ratio.unwrap_or(0.0);
            format!(
                "{}: OVER CAPACITY: {} gets {} of new flows, {:.2}x its capacity share {} \
                 (max_capacity_ratio {})",
                v.name,
                b.name,
                pct(got),
                got / b.capacity_share_ratio,
                pct(b.capacity_share_ratio),
                v.max_capacity_ratio
            )
        })
        .collect()
}

impl SimReport {
    /// Some VIP's simulated split is beyond its imbalance threshold, or
    /// sends a backend more than its capacity allows.
    pub fn refused(&self) -> bool {
        self.vips
            .iter()
            .any(|v| v.over_threshold || !v.over_capacity.is_empty())
    }

    /// A borderless table of every VIP's backends, expected share (weights)
    /// beside the share of new flows the program gave it, then one verdict
    /// line per VIP and the totals.
    pub fn render_table(&self) -> String {
        let header = [
            "VIP",
            "BACKEND",
            "EXPECTED",
            "SIMULATED",
            "RATIO",
            "CAPACITY",
            "NEW FLOWS",
            "PACKETS",
        ];
        let mut rows = vec![header.map(String::from).to_vec()];
        for v in &self.vips {
            if v.backends.is_empty() {
                let dashes = ["-", "-", "-", "-", "-"].map(String::from);
                let mut row = vec![v.name.clone()];
                row.extend(dashes);
                row.extend([v.new_flows.to_string(), v.packets.to_string()]);
                rows.push(row);
            }
            rows.extend(v.backends.iter().map(|b| backend_row(&v.name, b)));
        }
        let mut out = xlb_core::table::render(&rows);
        out.push('\n');
        for v in &self.vips {
            out.push_str(&verdict_line(v));
            out.push('\n');
            for line in capacity_lines(v) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out.push_str(&format!(
            "\n{} packets simulated, {} not for any VIP\n",
            self.packets, self.unmatched_packets
        ));
        let over = self.vips.iter().filter(|v| v.over_threshold).count();
        if over > 0 {
            let plural = if over == 1 { "" } else { "s" };
            out.push_str(&format!(
                "refused: {over} VIP{plural} over the imbalance threshold\n"
            ));
        }
        let over = self
            .vips
            .iter()
            .filter(|v| !v.over_capacity.is_empty())
            .count();
        if over > 0 {
            let plural = if over == 1 { "" } else { "s" };
            out.push_str(&format!(
                "refused: {over} VIP{plural} sending a backend more than its capacity \
                 (max_capacity_ratio)\n"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_is_symmetric() {
        assert!(!beyond(1.0, 1.5));
        assert!(!beyond(1.5, 1.5));
        assert!(!beyond(1.0 / 1.5, 1.5));
        assert!(beyond(1.51, 1.5));
        assert!(beyond(0.66, 1.5));
        assert!(beyond(0.0, 1.5));
    }

    #[test]
    fn an_even_split_is_within() {
        // 1:1:2 with 100,000 flows and 1% noise.
        let j = judge(&[(0.25, 24_800), (0.25, 25_300), (0.5, 49_900)], 1.5);
        assert!(!j.over_threshold);
        assert_eq!(j.worst, Some(1));
        assert!((j.worst_ratio.unwrap() - 1.012).abs() < 1e-9);
    }

    #[test]
    fn a_real_skew_is_over() {
        // b1 at 2x its weight.
        let j = judge(&[(0.25, 50_000), (0.25, 12_500), (0.5, 37_500)], 1.5);
        assert!(j.over_threshold);
        assert_eq!((j.worst, j.worst_ratio), (Some(0), Some(2.0)));
        // Starved is as bad as flooded; nothing at all is the worst.
        let j = judge(&[(0.25, 0), (0.25, 50_000), (0.5, 50_000)], 1.5);
        assert!(j.over_threshold);
        assert_eq!((j.worst, j.worst_ratio), (Some(0), Some(0.0)));
        // A larger max_ratio lets the 2x pass.
        assert!(!judge(&[(0.25, 50_000), (0.25, 12_500), (0.5, 37_500)], 2.5).over_threshold);
    }

    #[test]
    fn noise_of_a_few_flows_is_not_over() {
        // 2x on 12 flows is far past the ratio but well within noise.
        let j = judge(&[(0.25, 6), (0.25, 2), (0.5, 4)], 1.5);
        assert_eq!(j.worst_ratio, Some(2.0));
        assert!(!j.over_threshold);
        assert!(significant(135, 0.25, 400) && !significant(134, 0.25, 400));
    }

    #[test]
    fn inactive_backends_and_empty_vips_are_not_judged() {
        let j = judge(&[(0.0, 0), (1.0, 100)], 1.5);
        assert_eq!(
            (j.worst, j.worst_ratio, j.over_threshold),
            (Some(1), Some(1.0), false)
        );
        let none = Judgement {
            worst_ratio: None,
            worst: None,
            over_threshold: false,
        };
        assert_eq!(judge(&[(0.0, 0), (0.0, 0)], 1.5), none);
        assert_eq!(judge(&[(0.5, 0), (0.5, 0)], 1.5), none);
        assert_eq!(judge(&[], 1.5), none);
    }

    fn backend(name: &str, expected: f64, new_flows: u64, total: u64) -> SimBackend {
        SimBackend {
            name: name.into(),
            expected_share_ratio: expected,
            capacity_share_ratio: expected,
            simulated_share_ratio: (total > 0).then(|| new_flows as f64 / total as f64),
            new_flows,
            packets: new_flows,
        }
    }

    fn vip(name: &str, backends: Vec<SimBackend>, max_ratio: f64) -> SimVip {
        let judged: Vec<(f64, u64)> = backends
            .iter()
            .map(|b| (b.expected_share_ratio, b.new_flows))
            .collect();
        let j = judge(&judged, max_ratio);
        let new_flows = backends.iter().map(|b| b.new_flows).sum();
        SimVip {
            name: name.into(),
            packets: new_flows,
            dropped: 0,
            new_flows,
            worst_backend: j.worst.map(|i| backends[i].name.clone()),
            backends,
            worst_ratio: j.worst_ratio,
            max_ratio,
            over_threshold: j.over_threshold,
            max_capacity_ratio: 1.5,
            over_capacity: Vec::new(),
        }
    }

    #[test]
    fn the_table_names_the_skewed_backend_and_refuses() {
        let skewed = vip(
            "web",
            vec![
                backend("b1", 0.25, 50_000, 100_000),
                backend("b2", 0.25, 12_500, 100_000),
                backend("b3", 0.5, 37_500, 100_000),
            ],
            1.5,
        );
        let fine = vip("dns", vec![backend("d1", 1.0, 10, 10)], 1.5);
        let mut dark = vip("dark", vec![backend("x1", 0.0, 0, 0)], 1.5);
        dark.packets = 4;
        dark.dropped = 4;
        let report = SimReport {
            schema_version: 1,
            vips: vec![skewed, fine, dark],
            packets: 100_014,
            unmatched_packets: 0,
        };
        assert!(report.refused());
        let text = report.render_table();
        assert!(
            text.starts_with(
                "VIP    BACKEND   EXPECTED   SIMULATED   RATIO   CAPACITY   NEW FLOWS   PACKETS\n\
                 web    b1        25.0%      50.0%       2.00    25.0%      50000       50000\n"
            ),
            "{text}"
        );
        for line in [
            "web: OVER THRESHOLD: worst b1 at 2.00x its expected share (max_ratio 1.5)\n",
            "dns: ok: worst d1 at 1.00x its expected share (max_ratio 1.5)\n",
            "dark   x1        0.0%       -           -       0.0%       0           0\n",
            "dark: no active backends, not judged, 4 packets dropped\n",
            "100014 packets simulated, 0 not for any VIP\n",
            "refused: 1 VIP over the imbalance threshold\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        let small = vip(
            "web",
            vec![backend("b1", 0.25, 6, 12), backend("b2", 0.75, 6, 12)],
            1.5,
        );
        let report = SimReport {
            vips: vec![small],
            ..report
        };
        assert!(!report.refused());
        assert!(
            report
                .render_table()
                .contains("web: ok, within the noise of 12 new flows: worst b1 at 2.00x")
        );
    }

    /// The postmortem's change: weights 1:1:...:10 in ten, capacities equal.
    /// The split follows the weights (ratio 1.00) and still sends b1 five
    /// times what it can take.
    #[test]
    fn a_split_true_to_the_weights_can_be_over_capacity() {
        let mut shares = vec![(0.1, 5_240u64)];
        shares.extend((0..9).map(|_| (0.1, 529u64)));
        assert_eq!(over_capacity(&shares, 1.5), vec![0]);
        // At its capacity share, or a little over by noise: fine.
        let even: Vec<(f64, u64)> = (0..10).map(|i| (0.1, 1_000 + i)).collect();
        assert!(over_capacity(&even, 1.5).is_empty());
        let mut v = vip("login", vec![backend("b1", 0.526, 5_240, 10_000)], 1.5);
        v.backends[0].capacity_share_ratio = 0.1;
        v.over_capacity = vec!["b1".into()];
        let report = SimReport {
            schema_version: 1,
            vips: vec![v],
            packets: 10_000,
            unmatched_packets: 0,
        };
        assert!(report.refused());
        let text = report.render_table();
        assert!(
            text.contains(
                "login: OVER CAPACITY: b1 gets 52.4% of new flows, 5.24x its capacity share 10.0% \
                 (max_capacity_ratio 1.5)"
            ),
            "{text}"
        );
    }
}
