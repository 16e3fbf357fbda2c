//! Maglev table build time (pure userspace) and, as root, the time to write a
//! built table into a fresh inner map and swap it in. Median of many runs.

use std::time::{Duration, Instant};

use xlb_core::maglev::{MaglevBackend, build};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

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

    // The size of issue 20's VIPs: 64 backends in 16,381 slots.
    let names64: Vec<String> = (0..64).map(|i| format!("backend-{i:03}")).collect();
    let backends64: Vec<MaglevBackend<'_>> = names64
        .iter()
        .map(|n| MaglevBackend { name: n, weight: 1 })
        .collect();
    println!(
        "maglev build, M = 16381, 64 backends, equal weights: median {:?} of 41 runs",
        time_builds(&backends64, 16381, 41)
    );

    if !nix::unistd::geteuid().is_root() {
        println!("table install: skipped (needs root to create BPF maps)");
        return;
    }
    let mut dp = xlb_dataplane::Dataplane::load().expect("load the balancer");
    let backends: Vec<MaglevBackend<'_>> = names
        .iter()
        .map(|n| MaglevBackend { name: n, weight: 1 })
        .collect();
    let table = build(&backends, 65537, 1).unwrap();
    let runs: Vec<Duration> = (0..11)
        .map(|_| {
            let t = Instant::now();
            dp.install_table(
                0,
                &table
                    .slots
                    .iter()
                    .map(|&i| u32::from(i))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            t.elapsed()
        })
        .collect();
    println!(
        "table install (fresh inner map, 65537 writes, swap): median {:?} of 11 runs",
        median(runs)
    );
}
