//! Flows survive table changes (issue 6), end to end in namespaces: 200
//! long-lived TCP connections through the VIPs (100 over IPv4, 100 over IPv6)
//! exchange numbered requests with the echo servers of b1..b3 while 100
//! applies change the tables: new weights for b1..b3, b4 and b5 joining and
//! leaving. Every connection must answer every request, from one backend,
//! with no reset and no stall. After each apply a new connection must land
//! where the new table says (the userspace simulator's pick), so the swaps are
//! real. Needs root.
//!
//! The daemon runs with `--bake-window 0s`: the pinned flows make the packet
//! split drift from the changing weights, which is what the bake's detector
//! rolls back; a rollback would undo the very changes under test.
//!
//! The schedule's RNG seed is printed; set XLB_SURVIVE_SEED to replay it.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use lb_common::PROTO_TCP;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tests::echo::{EchoServers, FaultKind, Held, LongConnections, Pace, probe};
use tests::testbed::{Host, Testbed};
use tests::xlbd::Daemon;
use xlb_core::simulate::{Flow, pick_name};
use xlb_core::state::{Allocation, Desired};

/// The echo service's port on both VIPs (not the testbed's 8080, so the
/// one-shot servers could run beside it).
const PORT: u16 = 8070;
const CONNECTIONS_PER_FAMILY: usize = 100;
const APPLIES: usize = 100;
/// One apply starts this long after the previous one started (or at once
/// when an apply took longer).
const APPLY_EVERY: Duration = Duration::from_millis(150);
/// The applies must be done within this (they take about 15 s).
const APPLY_PHASE_LIMIT: Duration = Duration::from_secs(60);
/// No answer for this long is a stall.
const STALL: Duration = Duration::from_secs(2);
/// Every weight is drawn from 1..=MAX_WEIGHT.
const MAX_WEIGHT: u32 = 10;
/// Seed used unless XLB_SURVIVE_SEED is set.
const DEFAULT_SEED: u64 = 20_261_126;

/// One table: the weights of b1..b3 (always in) and of b4 and b5 when in.
#[derive(Clone, Debug, PartialEq)]
struct Step {
    weights: [u32; 3],
    b4: Option<u32>,
    b5: Option<u32>,
}

/// The config of a step: one TCP VIP per family over the step's backends.
fn config(backends: &[Host], step: &Step) -> String {
    let members: Vec<(&Host, u32)> = step
        .weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (&backends[i], w))
        .chain(step.b4.map(|w| (&backends[3], w)))
        .chain(step.b5.map(|w| (&backends[4], w)))
        .collect();
    let mut out = String::from("interface = \"eth0\"\nhash_seed = 1\n");
    for (name, v6) in [("echo", false), ("echo6", true)] {
        let vip = Testbed::vip(v6);
        write!(
            out,
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{vip}\"\nport = {PORT}\nprotocol = \"tcp\"\n"
        )
        .unwrap();
        for (b, weight) in &members {
            let address: IpAddr = if v6 { b.v6.into() } else { b.v4.into() };
            write!(
                out,
                "\n[[vip.backend]]\nname = \"{}\"\naddress = \"{address}\"\nmac = \"{}\"\nweight = {weight}\n",
                b.name, b.mac
            )
            .unwrap();
        }
    }
    out
}

/// What the kernel maps hold for `text` (names and slots, as the
/// simulator sees them).
fn desired(text: &str) -> anyhow::Result<Desired> {
    let config =
        xlb_core::config::parse(text, "survive.toml").map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(xlb_core::state::desired(&config, &Allocation::default())?)
}

/// True when both VIPs' Maglev tables differ between the two configs.
fn tables_differ(a: &Desired, b: &Desired) -> bool {
    a.vips.iter().zip(&b.vips).all(|(x, y)| x.table != y.table)
}

/// The start and 100 changes. b1..b3 get new weights every time; b4 is in
/// for three applies and out for three, b5 in for five and out for five, so
/// each joins and leaves many times; b1..b3 never leave (they hold the
/// long-lived connections). Every step changes both tables.
fn schedule(backends: &[Host], seed: u64) -> anyhow::Result<Vec<(Step, String, Desired)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Step {
        weights: [1, 1, 1],
        b4: None,
        b5: None,
    };
    let text = config(backends, &start);
    let mut steps = vec![(start, text.clone(), desired(&text)?)];
    for i in 1..=APPLIES {
        let mut weight = || rng.random_range(1..=MAX_WEIGHT);
        let mut tries = 0;
        let step = loop {
            let step = Step {
                weights: [weight(), weight(), weight()],
                b4: ((i / 3) % 2 == 1).then(&mut weight),
                b5: ((i / 5) % 2 == 1).then(&mut weight),
            };
            let text = config(backends, &step);
            let d = desired(&text)?;
            if tables_differ(&steps.last().unwrap().2, &d) {
                break (step, text, d);
            }
            tries += 1;
            ensure!(tries < 100, "no table change found for apply {i}");
        };
        steps.push(step);
    }
    Ok(steps)
}

/// Times b4 or b5 joined and left over the schedule.
fn joins_and_leaves(steps: &[(Step, String, Desired)]) -> (usize, usize) {
    let member = |s: &Step| [s.b4.is_some(), s.b5.is_some()];
    steps.windows(2).fold((0, 0), |(joins, leaves), w| {
        let (before, after) = (member(&w[0].0), member(&w[1].0));
        let j = (0..2).filter(|&k| !before[k] && after[k]).count();
        let l = (0..2).filter(|&k| before[k] && !after[k]).count();
        (joins + j, leaves + l)
    })
}

/// The backend the simulator picks for a new connection from `local`.
fn expected_backend(d: &Desired, local: SocketAddr, target: SocketAddr) -> Option<String> {
    let flow = Flow {
        src: local.ip(),
        dst: target.ip(),
        src_port: local.port(),
        dst_port: target.port(),
        proto: PROTO_TCP,
    };
    pick_name(d, &flow).map(str::to_string)
}

/// Apply `text` as the next revision; the revision number the daemon gave it.
fn apply(daemon: &Daemon, dir: &Path, n: usize, text: &str) -> anyhow::Result<u64> {
    let path = dir.join(format!("apply-{n:03}.toml"));
    std::fs::write(&path, text)?;
    // Forced: removing b4/b5 and big weight swings trip the safety checks.
    let out = daemon.xlb(&[
        "-o",
        "json",
        "apply",
        path.to_str().unwrap(),
        "--force",
        "-m",
        &format!("survive {n}"),
    ])?;
    ensure!(
        out.status.success(),
        "apply {n} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("apply {n}: {}", String::from_utf8_lossy(&out.stdout)))?;
    answer["revision"]
        .as_u64()
        .with_context(|| format!("apply {n}: no revision in {answer}"))
}

/// A new connection after an apply, and where it went.
struct Probe {
    apply: usize,
    local: SocketAddr,
    expected: Option<String>,
    got: String,
}

/// What the apply loop saw.
struct Swaps {
    began: Instant,
    ended: Instant,
    took: Vec<Duration>,
    probes: Vec<Probe>,
}

/// The 100 applies, paced, each checked by its revision number and by a new
/// connection that must land where the new table says. Runs in the client's
/// namespace (for the probes; the CLI reaches the daemon by a file path).
fn swap_tables(
    daemon: &Daemon,
    dir: &Path,
    steps: &[(Step, String, Desired)],
    first_revision: u64,
) -> anyhow::Result<Swaps> {
    let began = Instant::now();
    let mut took = Vec::new();
    let mut probes = Vec::new();
    for (n, (_, text, d)) in steps.iter().enumerate().skip(1) {
        if let Some(wait) =
            (began + APPLY_EVERY * (n as u32 - 1)).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
        ensure!(
            began.elapsed() < APPLY_PHASE_LIMIT,
            "only {} of {APPLIES} applies done in {APPLY_PHASE_LIMIT:?}",
            n - 1
        );
        let t = Instant::now();
        let revision = apply(daemon, dir, n, text)?;
        took.push(t.elapsed());
        ensure!(
            revision == first_revision + n as u64,
            "apply {n} became revision {revision}, expected {}",
            first_revision + n as u64
        );
        let target = SocketAddr::new(Testbed::vip(n % 2 == 1), PORT);
        let (local, got) = probe(target, STALL)
            .map_err(|e| anyhow::anyhow!("new connection after apply {n}: {e}"))?;
        probes.push(Probe {
            apply: n,
            local,
            expected: expected_backend(d, local, target),
            got,
        });
    }
    Ok(Swaps {
        began,
        ended: Instant::now(),
        took,
        probes,
    })
}

#[test]
fn long_lived_flows_survive_100_table_swaps() {
    tests::require_privileges!();
    tests::in_workdir("survive", run);
}

fn run(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let seed = match std::env::var("XLB_SURVIVE_SEED") {
        Ok(s) => s.parse().context("XLB_SURVIVE_SEED must be a number")?,
        Err(_) => DEFAULT_SEED,
    };
    eprintln!("schedule seed {seed} (XLB_SURVIVE_SEED replays it)");

    let bed = Testbed::new("xsv", 5)?;
    let _servers = EchoServers::start(&bed.backends, PORT)?;
    let steps = schedule(&bed.backends, seed)?;
    let (joins, leaves) = joins_and_leaves(&steps);
    eprintln!("schedule: {APPLIES} applies, b4/b5 join {joins} times and leave {leaves} times");

    let start_file = dir.join("start.toml");
    std::fs::write(&start_file, &steps[0].1)?;
    let daemon = Daemon::start_with(&bed.lb.ns, &start_file, dir, &["--bake-window", "0s"])?;
    let first_revision = daemon.status()?["revision"]
        .as_u64()
        .context("no revision in xlb status")?;

    // The long-lived connections, all established before the first swap.
    let targets: Vec<SocketAddr> = (0..2 * CONNECTIONS_PER_FAMILY)
        .map(|i| SocketAddr::new(Testbed::vip(i % 2 == 1), PORT))
        .collect();
    let pace = Pace {
        gap: Duration::from_millis(40),
        stall: STALL,
        max_life: Duration::from_secs(90),
    };
    let connections =
        LongConnections::open(&bed.client.ns, &targets, pace, Duration::from_millis(5));
    ensure!(
        connections.wait_settled(Duration::from_secs(20)),
        "the {} connections were not all established within 20 s",
        targets.len()
    );
    // Let every connection answer a few times on the start table.
    std::thread::sleep(Duration::from_millis(500));

    let swaps = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                bed.client.ns.enter()?;
                swap_tables(&daemon, dir, &steps, first_revision)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the apply thread panicked"))?
    });
    // A little traffic on the last table, then the end.
    std::thread::sleep(Duration::from_secs(1));
    let held = connections.finish()?;
    let swaps = swaps?;

    let mut took = swaps.took.clone();
    took.sort();
    eprintln!(
        "{APPLIES} applies in {:?}: median {:?}, slowest {:?}",
        swaps.ended - swaps.began,
        took[took.len() / 2],
        took[took.len() - 1]
    );
    check_connections(&held, &swaps)?;
    check_probes(&swaps.probes)?;

    let status = daemon.status()?;
    ensure!(
        status["revision"].as_u64() == Some(first_revision + APPLIES as u64),
        "the daemon is at revision {}, expected {} (a rollback?)",
        status["revision"],
        first_revision + APPLIES as u64
    );
    eprintln!("whole test {:?}", started.elapsed());
    Ok(())
}

/// Every connection answered every request from one backend, from before the
/// first swap to after the last.
fn check_connections(held: &[Held], swaps: &Swaps) -> anyhow::Result<()> {
    let exchanges: u64 = held.iter().map(|h| h.exchanges).sum();
    let fewest = held.iter().map(|h| h.exchanges).min().unwrap_or(0);
    let mut per_backend = std::collections::BTreeMap::<&str, usize>::new();
    for h in held {
        if let Some(b) = h.backends.first() {
            *per_backend.entry(b.as_str()).or_default() += 1;
        }
    }
    let count = |kind| {
        held.iter()
            .filter(|h| h.fault.as_ref().is_some_and(|f| f.kind == kind))
            .count()
    };
    let moved: Vec<&Held> = held.iter().filter(|h| h.backends.len() > 1).collect();
    let spanned = |h: &&Held| {
        h.first_answer.is_some_and(|t| t < swaps.began)
            && h.last_answer.is_some_and(|t| t > swaps.ended)
    };
    let short: Vec<&Held> = held
        .iter()
        .filter(|h| h.fault.is_none() && !spanned(h))
        .collect();
    eprintln!(
        "{} connections {per_backend:?}: {exchanges} exchanges (fewest on one connection {fewest}); \
         resets {}, stalls {}, wrong answers {}, connect failures {}, other {}, changed backend {}",
        held.len(),
        count(FaultKind::Reset),
        count(FaultKind::Stall),
        count(FaultKind::WrongAnswer),
        count(FaultKind::Connect),
        count(FaultKind::Other),
        moved.len()
    );
    let faults: Vec<String> = held
        .iter()
        .filter_map(|h| {
            let f = h.fault.as_ref()?;
            Some(format!(
                "#{} {} from {:?} on {:?} at exchange {}: {:?} {}",
                h.id, h.target, h.local, h.backends, f.exchange, f.kind, f.detail
            ))
        })
        .collect();
    if !faults.is_empty() {
        bail!(
            "{} of {} connections failed; the first ones:\n{}",
            faults.len(),
            held.len(),
            faults[..faults.len().min(10)].join("\n")
        );
    }
    ensure!(
        moved.is_empty(),
        "{} connections were answered by more than one backend: {:?}",
        moved.len(),
        moved
            .iter()
            .take(10)
            .map(|h| (h.id, &h.backends))
            .collect::<Vec<_>>()
    );
    ensure!(
        short.is_empty(),
        "{} connections did not keep answering from before the first apply to after the last",
        short.len()
    );
    ensure!(
        ["b1", "b2", "b3"]
            .iter()
            .all(|b| per_backend.get(b).is_some_and(|&n| n > 0)),
        "the connections did not reach all of b1..b3: {per_backend:?}"
    );
    Ok(())
}

/// Each new connection went where its apply's table says, and some went to
/// b4 or b5 (they really joined).
fn check_probes(probes: &[Probe]) -> anyhow::Result<()> {
    let wrong: Vec<String> = probes
        .iter()
        .filter(|p| p.expected.as_deref() != Some(p.got.as_str()))
        .map(|p| {
            format!(
                "after apply {} from {}: answered by {}, the table names {:?}",
                p.apply, p.local, p.got, p.expected
            )
        })
        .collect();
    ensure!(
        wrong.is_empty(),
        "{} of {} new connections did not go where the table says:\n{}",
        wrong.len(),
        probes.len(),
        wrong.join("\n")
    );
    let on_new = probes
        .iter()
        .filter(|p| p.got == "b4" || p.got == "b5")
        .count();
    eprintln!(
        "{} new connections went where the table said, {on_new} of them to b4 or b5",
        probes.len()
    );
    ensure!(on_new > 0, "no new connection reached b4 or b5");
    Ok(())
}
