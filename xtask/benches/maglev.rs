//! Maglev table build time (pure userspace) and, as root, the time to write a
//! built table into a fresh inner map and swap it in. Median of many runs.

mod support;

use std::time::{Duration, Instant};

use support::median_duration as median;
use support::scale;
use xlb_core::maglev::{MaglevBackend, build};

/// The median time of `runs` builds of `backends` in `m` slots.
fn time_builds(backends: &[MaglevBackend<'_>], m: u32, runs: usize) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(build(backends, m, 1).unwrap());
                t.elapsed()
            })
            .collect(),
    )
}

/// `names` with weight 1 each.
fn equal(names: &[String]) -> Vec<MaglevBackend<'_>> {
    names
        .iter()
        .map(|n| MaglevBackend { name: n, weight: 1 })
        .collect()
}

/// The median over `runs` of the time of one call of `f`, each run timing
/// `calls` calls.
fn time_per_call<T>(runs: usize, calls: u32, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..calls {
                    std::hint::black_box(f());
                }
                t.elapsed() / calls
            })
            .collect(),
    )
}

/// The config of `vips` VIPs (each on an address of its own) of `backends`
/// equal backends in `m` slots.
fn config(vips: usize, backends: usize, m: u32) -> xlb_core::config::Config {
    let text = scale::text(
        "interface = \"lo\"\nhash_seed = 1\n",
        vips,
        backends,
        m,
        |_, _| 1,
    );
    xlb_core::config::parse(&text, "bench.toml").expect("the bench's config")
}

/// The state of `config`.
fn state(config: &xlb_core::config::Config) -> xlb_core::state::Desired {
    xlb_core::state::desired(config, &Default::default()).expect("the bench's state")
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

fn main() {
    let names: Vec<String> = (0..100).map(|i| format!("backend-{i:03}")).collect();
    for (label, weights) in [
        ("equal weights", vec![1u32; 100]),
        ("weights 1..100", (1..=100).collect()),
    ] {
        let backends: Vec<MaglevBackend<'_>> = names
            .iter()
            .zip(&weights)
            .map(|(n, &w)| MaglevBackend { name: n, weight: w })
            .collect();
        println!(
            "maglev build, M = 65537, 100 backends, {label}: median {:?} of 21 runs",
            time_builds(&backends, 65537, 21)
        );
    }

    // The size of issue 20's VIPs, 64 backends in 16,381 slots (one byte a
    // slot), and 300 backends (past 256 a slot takes two, `maglev::Slots`).
    let names300: Vec<String> = (0..300).map(|i| format!("backend-{i:03}")).collect();
    let backends300 = equal(&names300);
    let backends64 = equal(&names300[..64]);
    for backends in [&backends64, &backends300] {
        println!(
            "maglev build, M = 16381, {} backends, equal weights: median {:?} of 41 runs",
            backends.len(),
            time_builds(backends, 16381, 41)
        );
    }
    // What a plan does per changed VIP: compare the table before and after
    // (one backend gone), slot by slot.
    for (label, backends) in [("64", &backends64), ("300", &backends300)] {
        let before = build(backends, 16381, 1).unwrap();
        let after = build(&backends[1..], 16381, 1).unwrap();
        println!(
            "maglev moved_slots, M = 16381, {label} -> {} backends: median {:?} of 41 runs of 100",
            backends.len() - 1,
            time_per_call(41, 100, || before.moved_slots(&after))
        );
    }
    // What each table's shares cost (the state and a plan ask per VIP).
    let table64 = build(&backends64, 16381, 1).unwrap();
    println!(
        "maglev slot_counts, M = 16381, 64 backends: median {:?} of 41 runs of 100",
        time_per_call(41, 100, || table64.slot_counts())
    );
    // What every status and every table write does: the kernel table read
    // slot by slot from the state (`DesiredVip::slot_iter`).
    let desired = state(&config(1, 64, 16381));
    let vip = &desired.vips[0];
    println!(
        "kernel slots, M = 16381, 64 backends, slot_iter summed: median {:?} of 41 runs of 100",
        time_per_call(41, 100, || vip.slot_iter().map(u64::from).sum::<u64>())
    );
    println!(
        "kernel slots, M = 16381, 64 backends, slot_iter in a for loop: median {:?} of 41 runs of 100",
        time_per_call(41, 100, || {
            let mut out = vec![0u32; vip.slot_count()];
            for (i, id) in vip.slot_iter().enumerate() {
                out[i] = id;
            }
            out
        })
    );

    // Issue 20's scale: what the state of 1,000 VIPs of 64 backends in
    // 16,381 slots adds to the resident memory (the config made first).
    let scale = config(1000, 64, 16381);
    let before = rss();
    let desired = state(&scale);
    println!(
        "state of 1000 VIPs x 64 backends, M = 16381: resident memory grew {:.1} MB",
        (rss() - before) as f64 / 1e6
    );
    drop(desired);

    if !nix::unistd::geteuid().is_root() {
        println!("table install: skipped (needs root to create BPF maps)");
        return;
    }
    let mut dp = xlb_dataplane::Dataplane::load().expect("load the balancer");
    let table = build(&equal(&names), 65537, 1).unwrap();
    let runs: Vec<Duration> = (0..11)
        .map(|_| {
            let t = Instant::now();
            dp.install_table(0, &table.slots.iter().map(u32::from).collect::<Vec<_>>())
                .unwrap();
            t.elapsed()
        })
        .collect();
    println!(
        "table install (fresh inner map, 65537 writes, swap): median {:?} of 11 runs",
        median(runs)
    );
}
