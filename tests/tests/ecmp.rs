//! A fleet behind ECMP (issue 14): a router running BIRD, three nodes each
//! running `xlb run` and BIRD, backends on the nodes' segment, a client
//! behind the router (tests/src/fleet.rs). Real BGP, BFD, TCP.
//!
//! Detection: BFD on every session, 100 ms x 3 = 300 ms (deploy/bird/);
//! a lost node is cut off at its bridge port (no frame in or out, as a hung
//! host), which the router's own interface does not see, so only BFD finds
//! it. Each test asserts its
//! bound and prints what it measured (`--nocapture` shows it).
//!
//! The tests share two cores with the rest of the suite, so they run one
//! at a time (`SERIAL`); each builds its own fleet.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use tests::echo::{FaultKind, Held, LongConnections};
use tests::fleet::{BFD_DETECTION, Fleet, NodeConfig, Stream, StreamReport, connections};
use tests::testbed::{TCP_PORT, VIP4, VIP6};

static SERIAL: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const V4: SocketAddr = SocketAddr::new(IpAddr::V4(VIP4), TCP_PORT);
const V6: SocketAddr = SocketAddr::new(IpAddr::V6(VIP6), TCP_PORT);

/// How long the router may take to withdraw a lost node's routes: BFD's
/// 300 ms, BIRD's and the kernel's work, and a loaded machine's slack.
const WITHDRAWAL_BOUND: Duration = Duration::from_millis(1500);

/// Share of each entry of `counts` in their sum.
fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| c as f64 / total.max(1) as f64)
        .collect()
}

/// `n` new connections to `target`: every one answered, spread over the
/// nodes within 33% +/- 10 points. The backends' counts (b1, b2, b3).
fn spread(fleet: &Fleet, target: SocketAddr, vip: &str, n: usize) -> anyhow::Result<[u64; 3]> {
    let before = fleet.new_flows(vip)?;
    let attempts = connections(&fleet.client, target, n, 4)?;
    let failed: Vec<_> = attempts
        .iter()
        .filter_map(|a| a.result.as_ref().err())
        .collect();
    ensure!(
        failed.is_empty(),
        "{} of {n} connections failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // The daemons' counters are read once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let after = fleet.new_flows(vip)?;
    let per_node: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let node_shares = shares(&per_node);
    println!("{vip}: {n} connections over the nodes: {per_node:?} = {node_shares:.3?}");
    for (node, share) in fleet.nodes.iter().zip(&node_shares) {
        ensure!(
            (0.2333..=0.4333).contains(share),
            "node {} took {share:.3} of {vip}'s new connections, not 33% +/- 10 points: {per_node:?}",
            node.host.name
        );
    }
    let mut per_backend = [0u64; 3];
    for a in &attempts {
        let name = a.result.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        let i = ["b1", "b2", "b3"]
            .iter()
            .position(|b| b == name)
            .with_context(|| format!("an answer from {name:?}"))?;
        per_backend[i] += 1;
    }
    Ok(per_backend)
}

#[test]
fn three_next_hops_spread_by_weight_and_a_lost_node_resets_nothing() {
    tests::require_privileges!();
    let _one = one_at_a_time();
    tests::in_workdir("ecmp-loss", |dir| {
        let fleet = Fleet::new("xec", dir, Default::default())?;
        let mut nodes: Vec<IpAddr> = fleet.nodes.iter().map(|n| n.host.v4.into()).collect();
        nodes.sort();
        let mut hops = fleet.next_hops(V4.ip())?;
        hops.sort();
        ensure!(hops == nodes, "next hops {hops:?}, nodes {nodes:?}");
        ensure!(fleet.next_hops(V6.ip())?.len() == 3);

        // Weights 1:1:2: 25%, 25%, 50% +/- 3 points.
        let per_backend = spread(&fleet, V4, "web", 3000)?;
        let backend_shares = shares(&per_backend);
        println!("web over the backends: {per_backend:?} = {backend_shares:.3?}");
        for (share, expected) in backend_shares.iter().zip([0.25, 0.25, 0.5]) {
            ensure!(
                (share - expected).abs() <= 0.03,
                "backend shares {backend_shares:.3?}, weights 1:1:2"
            );
        }
        spread(&fleet, V6, "web6", 1500)?;

        let loss = lose_node(&fleet, 0)?;
        loss.print("identical tables");
        ensure!(
            loss.detection <= WITHDRAWAL_BOUND,
            "withdrawal took {:?}, bound {WITHDRAWAL_BOUND:?} (BFD {BFD_DETECTION:?})",
            loss.detection
        );
        ensure!(
            loss.reset.is_empty() && loss.faults.is_empty(),
            "identical tables: {} long-lived connections reset, other faults {:?}",
            loss.reset.len(),
            loss.faults
        );
        ensure!(
            loss.moved_backend == 0,
            "{} connections changed backend",
            loss.moved_backend
        );
        // New connections fail only around the loss: none after the
        // withdrawal plus one SYN retransmission.
        let late: Vec<_> = loss
            .stream
            .failures
            .iter()
            .filter(|(at, _)| *at > loss.detection.as_secs_f64() + 1.5 || *at < -0.5)
            .collect();
        ensure!(
            late.is_empty(),
            "connections failed outside detection: {late:?}"
        );

        // The node comes back.
        fleet.reconnect(0)?;
        let back = fleet.wait_next_hops(V4.ip(), 3, Duration::from_secs(30))?;
        println!(
            "node back: the router had 3 next hops again {back:?} after its port forwarded again"
        );
        Ok(())
    });
}

/// What happened when a node was lost under load.
struct Loss {
    /// From the link going down to the router's route losing the next hop.
    detection: Duration,
    stream: StreamReport,
    /// Long-lived connections that ended in a reset.
    reset: Vec<Held>,
    /// Other faults (stall, wrong answer...).
    faults: Vec<String>,
    /// Long-lived connections answered by more than one backend.
    moved_backend: usize,
    long_lived: usize,
}

impl Loss {
    fn print(&self, case: &str) {
        println!(
            "{case}: node lost, withdrawn after {:?}; long-lived connections: {} of {} reset, \
             {} on another backend, other faults {}; new connections: {} attempted, {} failed, \
             {} delayed by a SYN retransmission; failures at (s after the loss): {:?}",
            self.detection,
            self.reset.len(),
            self.long_lived,
            self.moved_backend,
            self.faults.len(),
            self.stream.attempts,
            self.stream.failed,
            self.stream.delayed,
            self.stream.failures
        );
    }
}

const LONG_LIVED: usize = 200;

fn long_lived(fleet: &Fleet) -> anyhow::Result<LongConnections> {
    fleet.long_lived(V4, LONG_LIVED, Duration::from_secs(90))
}

fn judge(held: Vec<Held>) -> (Vec<Held>, Vec<String>, usize) {
    let moved = held.iter().filter(|h| h.backends.len() > 1).count();
    let (reset, other): (Vec<Held>, Vec<Held>) = held
        .into_iter()
        .filter(|h| h.fault.is_some())
        .partition(|h| h.fault.as_ref().is_some_and(|f| f.kind == FaultKind::Reset));
    let faults = other
        .iter()
        .map(|h| format!("{}: {:?}", h.id, h.fault))
        .collect();
    (reset, faults, moved)
}

/// Node `i` cut off under 200 long-lived connections and a stream of 200 new
/// connections a second (40 workers, so that the SYNs lost during detection
/// are not bounded by the number of workers).
fn lose_node(fleet: &Fleet, i: usize) -> anyhow::Result<Loss> {
    let long = long_lived(fleet)?;
    let stream = Stream::start(&fleet.client, V4, 200, 40, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let event = Instant::now();
    fleet.cut(i)?;
    let detection = fleet.wait_next_hops(V4.ip(), 2, Duration::from_secs(10))?;
    fleet.wait_next_hops(V6.ip(), 2, Duration::from_secs(10))?;
    // Retransmissions of the lost node's flows reach the others.
    std::thread::sleep(Duration::from_secs(3));
    let attempts = stream.finish()?;
    let held = long.finish()?;
    let long_lived = held.len();
    let (reset, faults, moved_backend) = judge(held);
    Ok(Loss {
        detection,
        stream: StreamReport::of(&attempts, event),
        reset,
        faults,
        moved_backend,
        long_lived,
    })
}

#[test]
fn a_node_on_another_seed_is_named_and_resets_what_moves_onto_it() {
    tests::require_privileges!();
    let _one = one_at_a_time();
    tests::in_workdir("ecmp-seed", |dir| {
        let other = NodeConfig {
            hash_seed: 7,
            ..NodeConfig::default()
        };
        let fleet = Fleet::new(
            "xes",
            dir,
            [NodeConfig::default(), NodeConfig::default(), other],
        )?;
        let (code, out) = fleet.fleet_status("json")?;
        ensure!(code == 1, "fleet status exit {code}:\n{out}");
        let json_end = out.rfind('}').context("no JSON")? + 1;
        let doc: serde_json::Value = serde_json::from_str(&out[..json_end])?;
        for vip in doc["vips"].as_array().context("vips")? {
            ensure!(
                vip["differing"][0]["node"] == fleet.nodes[2].url.as_str()
                    && vip["differing"][0]["fields"][0] == "hash_seed 1 -> 7",
                "fleet status does not name {} and its seed: {vip}",
                fleet.nodes[2].url
            );
        }

        let loss = lose_node(&fleet, 0)?;
        loss.print("one node on another hash_seed");
        ensure!(
            !loss.reset.is_empty(),
            "with a node on another seed, no long-lived connection was reset: {} moved",
            loss.moved_backend
        );
        Ok(())
    });
}

#[test]
fn drain_then_stop_loses_no_connection() {
    tests::require_privileges!();
    let _one = one_at_a_time();
    tests::in_workdir("ecmp-drain", |dir| {
        let mut fleet = Fleet::new("xed", dir, Default::default())?;
        let long = long_lived(&fleet)?;
        let stream = Stream::start(&fleet.client, V4, 200, 40, Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(1));
        let event = Instant::now();
        let (code, out) = fleet.nodes[0].xlb(&["node", "drain"])?;
        ensure!(code == 0, "xlb node drain: exit {code}: {out}");
        let drain_took = event.elapsed();
        // `xlb node drain` returns once its routes are gone: the router
        // follows within milliseconds.
        fleet.wait_next_hops(V4.ip(), 2, Duration::from_secs(5))?;
        fleet.wait_next_hops(V6.ip(), 2, Duration::from_secs(5))?;
        let withdrawn = event.elapsed();
        // Flows still arriving at the drained node are forwarded; then it stops.
        std::thread::sleep(Duration::from_secs(1));
        let node = &mut fleet.nodes[0];
        let status = node.daemon.take().context("daemon")?.stop()?;
        ensure!(status.success(), "xlb run exited with {status}");
        node.bird.take().context("bird")?.kill()?;
        std::thread::sleep(Duration::from_secs(2));
        let report = StreamReport::of(&stream.finish()?, event);
        let (reset, faults, moved) = judge(long.finish()?);
        println!(
            "drain: `xlb node drain` took {drain_took:?}, the router had withdrawn the node \
             {withdrawn:?} after it began; new connections {} attempted, {} failed, \
             {} delayed; long-lived {LONG_LIVED}: {} reset, {} on another backend, faults {faults:?}",
            report.attempts,
            report.failed,
            report.delayed,
            reset.len(),
            moved
        );
        ensure!(report.failed == 0 && report.delayed == 0, "{report:?}");
        ensure!(reset.is_empty() && faults.is_empty() && moved == 0);
        Ok(())
    });
}

#[test]
fn a_vip_without_healthy_backends_is_withdrawn_and_comes_back() {
    tests::require_privileges!();
    let _one = one_at_a_time();
    tests::in_workdir("ecmp-health", |dir| {
        let fleet = Fleet::new("xeh", dir, Default::default())?;
        let limit = Duration::from_secs(15);
        for b in 0..3 {
            fleet.health.set(b, false);
        }
        let down = fleet.wait_next_hops(V4.ip(), 0, limit)?;
        fleet.wait_next_hops(V6.ip(), 0, limit)?;
        fleet.health.set(1, true);
        let up = fleet.wait_next_hops(V4.ip(), 3, limit)?;
        fleet.wait_next_hops(V6.ip(), 3, limit)?;
        println!(
            "every backend down: withdrawn after {down:?}; one back: announced again after {up:?}"
        );
        let attempts = connections(&fleet.client, V4, 50, 2)?;
        ensure!(
            attempts.iter().all(|a| a.result.as_deref() == Ok("b2")),
            "with only b2 up, every connection should reach b2: {:?}",
            attempts.iter().map(|a| &a.result).collect::<Vec<_>>()
        );
        Ok(())
    });
}
