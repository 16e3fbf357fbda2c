//! `cargo xtask demo --fleet`: the fleet testbed (tests/src/fleet.rs). A
//! router running BIRD with ECMP to three nodes, each running `xlb run` and
//! BIRD (deploy/bird/); backends b1 b2 b3 (weights 1:1:2) on the nodes'
//! segment; a client behind the router. It sends real TCP connections,
//! prints the router's route, the split over nodes and backends and
//! `xlb fleet status`, drains one node (withdrawn, traffic on the other two)
//! and brings it back. Everything it made is removed at the end, also on
//! Ctrl-C (checked between steps).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{SigHandler, Signal, signal};
use tests::fleet::{Fleet, connections};
use tests::testbed::{TCP_PORT, VIP4};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn main() -> anyhow::Result<()> {
    // It makes network namespaces, runs BIRD and loads XDP programs.
    tests::privileges::check("the fleet demo")?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        signal(Signal::SIGINT, SigHandler::Handler(on_signal))?;
        signal(Signal::SIGTERM, SigHandler::Handler(on_signal))?;
    }
    let dir = std::env::temp_dir().join(format!("xlb-fleet-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = demo(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nfleet demo: removed the namespaces, daemons and files it made");
    result
}

fn step(what: &str) -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted before: {what}");
    }
    println!("\nfleet demo: {what}");
    Ok(())
}

fn show(what: &str, text: &str) {
    println!("$ {what}\n{}", text.trim_end());
}

/// 1,500 new connections: how they spread over the nodes and the backends.
fn traffic(fleet: &Fleet, target: SocketAddr) -> anyhow::Result<()> {
    let before = fleet.new_flows("web")?;
    let t0 = Instant::now();
    let attempts = connections(&fleet.client, target, 1500, 4)?;
    let failed = attempts.iter().filter(|a| a.result.is_err()).count();
    let mut per_backend = std::collections::BTreeMap::<String, u64>::new();
    for a in &attempts {
        if let Ok(b) = &a.result {
            *per_backend.entry(b.clone()).or_default() += 1;
        }
    }
    // The daemons read their counters once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let after = fleet.new_flows("web")?;
    let total = attempts.len() - failed;
    let percent = |n: u64| 100.0 * n as f64 / total.max(1) as f64;
    println!(
        "{} connections to {target} in {:.1}s, {failed} failed",
        attempts.len(),
        t0.elapsed().as_secs_f64()
    );
    let nodes: Vec<String> = fleet
        .nodes
        .iter()
        .zip(after.iter().zip(&before))
        .map(|(n, (a, b))| format!("{} {:.1}%", n.port, percent(a - b)))
        .collect();
    println!("  over the nodes:    {}", nodes.join(", "));
    let backends: Vec<String> = per_backend
        .iter()
        .map(|(b, n)| format!("{b} {:.1}%", percent(*n)))
        .collect();
    println!(
        "  over the backends: {} (weights 1:1:2)",
        backends.join(", ")
    );
    Ok(())
}

fn demo(dir: &std::path::Path) -> anyhow::Result<()> {
    step(
        "building the fleet: router + BIRD, three nodes with xlb + BIRD, backends b1 b2 b3, a client (namespaces xfd-*)",
    )?;
    let fleet = Fleet::new("xfd", dir, Default::default()).context("building the fleet")?;
    let vip = IpAddr::V4(VIP4);
    let target = SocketAddr::new(vip, TCP_PORT);
    show(
        &format!("ip route show {vip}   (in the router)"),
        &fleet.router.ip(&["route", "show", &vip.to_string()])?,
    );
    show(
        "birdc show protocols   (the router)",
        &fleet.router_bird.birdc(&["show", "protocols"])?,
    );

    step("traffic through the router")?;
    traffic(&fleet, target)?;

    step("every node's tables compared")?;
    let (code, out) = fleet.fleet_status("table")?;
    show(
        &format!("xlb fleet status {}", fleet.urls().join(" ")),
        &out,
    );
    println!("(exit {code})");

    step("draining node n21: its routes are withdrawn, it keeps forwarding what still arrives")?;
    let t = Instant::now();
    let (code, out) = fleet.nodes[0].xlb(&["node", "drain"])?;
    show("xlb node drain   (on n21)", &out);
    if code != 0 {
        bail!("xlb node drain: exit {code}");
    }
    fleet.wait_next_hops(vip, 2, Duration::from_secs(10))?;
    println!(
        "the router no longer lists n21: {:?} after the drain began",
        t.elapsed()
    );
    show(
        &format!("ip route show {vip}   (in the router)"),
        &fleet.router.ip(&["route", "show", &vip.to_string()])?,
    );
    traffic(&fleet, target)?;

    step("undraining n21: announced again")?;
    let t = Instant::now();
    let (code, out) = fleet.nodes[0].xlb(&["node", "undrain"])?;
    show("xlb node undrain   (on n21)", &out);
    if code != 0 {
        bail!("xlb node undrain: exit {code}");
    }
    fleet.wait_next_hops(vip, 3, Duration::from_secs(10))?;
    println!(
        "the router has three next hops again: {:?} after the undrain began",
        t.elapsed()
    );
    traffic(&fleet, target)?;
    Ok(())
}
