//! The daemon's cost of watching the split at scale: 1,000 VIPs x 64
//! backends. Per collector tick (once a second): reading every counter,
//! the imbalance detector, the drift check; and one /metrics scrape.
//! Medians of repeated runs; "% of a core" is the per-second cost of a
//! once-a-second tick.

mod support;

use std::sync::Arc;

/// The daemon's allocator (lb-userspace/src/main.rs), so the bench measures
/// what the daemon does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use support::scale::{self, BACKENDS, TABLE_SIZE, VIPS};
use xlb_core::change::{ApplyOptions, Candidate, Origin};
use xlb_core::detect::{BackendSample, Cumulative, Detector, Thresholds, VipSample};
use xlb_core::revision::Kind;

fn report(what: &str, runs: Vec<Duration>) {
    let n = runs.len();
    let m = support::median_duration(runs);
    println!(
        "{what}: median {m:?} of {n} runs = {:.2}% of one core at one tick a second",
        m.as_secs_f64() * 100.0
    );
}

fn detector_only() {
    let names: Vec<String> = (0..BACKENDS).map(|b| format!("b{b}")).collect();
    let vip_names: Vec<String> = (0..VIPS).map(|v| format!("vip{v}")).collect();
    let thresholds = Thresholds::default();
    let mut detector = Detector::new();
    let mut runs = Vec::new();
    for tick in 0..30u64 {
        let samples: Vec<VipSample<'_>> = vip_names
            .iter()
            .map(|v| VipSample {
                vip: v,
                thresholds: &thresholds,
                backends: names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| BackendSample {
                        name: n,
                        active: true,
                        expected_share: 1.0 / BACKENDS as f64,
                        table_share: 1.0 / BACKENDS as f64,
                        counters: Cumulative {
                            new_flows: tick * (100 + i as u64),
                            packets: tick * (1000 + i as u64),
                            bytes: tick * (100_000 + i as u64),
                        },
                    })
                    .collect(),
            })
            .collect();
        let t = Instant::now();
        std::hint::black_box(detector.observe(tick as f64, &samples));
        runs.push(t.elapsed());
    }
    report(
        &format!("detector alone, {VIPS} VIPs x {BACKENDS} backends"),
        runs[10..].to_vec(),
    );
}

fn config() -> String {
    scale::config("interface = \"lo\"\nhash_seed = 1\n", 1)
}

fn main() {
    detector_only();
    if !nix::unistd::geteuid().is_root() {
        println!("collector and scrape: skipped (needs root to load the balancer)");
        return;
    }
    let candidate =
        Candidate::parse(config(), "bench.toml", Origin::default()).expect("bench config");
    let dataplane = xlb_dataplane::Dataplane::load().expect("load the balancer");
    let metrics = Arc::new(xlb::daemon::metrics::Metrics::new());
    let mut controller = xlb::daemon::controller::Controller::new(
        dataplane,
        "lo".into(),
        [2, 0, 0, 0, 0, 1],
        metrics.clone(),
    );
    let t = Instant::now();
    controller
        .apply(candidate, ApplyOptions::unchecked(Kind::Apply))
        .expect("apply");
    println!(
        "apply of {VIPS} VIPs x {BACKENDS} backends (M = {TABLE_SIZE}): {:?}",
        t.elapsed()
    );
    let mut runs = Vec::new();
    for tick in 0..30 {
        let t = Instant::now();
        controller.tick(tick as f64).expect("tick");
        runs.push(t.elapsed());
    }
    report(
        "collector tick (counters + detector + drift check)",
        runs[5..].to_vec(),
    );
    let mut runs = Vec::new();
    let mut size = 0;
    for _ in 0..15 {
        let t = Instant::now();
        let text = metrics.encode(controller.status().expect("status"));
        runs.push(t.elapsed());
        size = text.len();
    }
    println!(
        "/metrics scrape (status + encode), {} KiB: median {:?} of 15 runs",
        size / 1024,
        support::median_duration(runs)
    );
}
