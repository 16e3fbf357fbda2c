//! Flows whose backend is removed live on, retained, like a draining
//! backend's (issue 21; docs/DATAPLANE.md "Removed backends are retained"),
//! and a new backend never takes the retained id, end to end in namespaces:
//! long-lived TCP connections through both VIPs to the echo servers of
//! b1..b4; an apply removes b4; a second apply adds b5. Needs root.
//!
//! The connection table remembers each flow's backend id. After the first
//! apply, b4's id stays valid in no table: its remembered flows keep
//! reaching b4 (its `Tcp: InSegs` go on), no live backend answers one of
//! them with a reset (their `Tcp: OutRsts` stand still), no new connection
//! reaches b4, and after the second apply b4's flows still reach b4 (b5 did
//! not take its id). Every connection keeps answering from its own backend.
//! The re-steering of a retired id (retention over) is tested in
//! `retired_backends.rs` (the entry loses its flag) and by the kernel
//! fixtures (`conn_resteer`).
//!
//! The daemon runs with `--bake-window 0s`: a rollback would undo the very
//! removal under test.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use tests::echo::{EchoServers, Held, LongConnections, Pace, probe};
use tests::netns::Netns;
use tests::testbed::{Host, Testbed};
use tests::xlbd::Daemon;

/// The echo service's port on both VIPs (not the testbed's 8080, nor the
/// survive test's 8070).
const PORT: u16 = 8071;
const CONNECTIONS_PER_FAMILY: usize = 24;
/// The backend the first apply removes (index into the testbed's backends).
const REMOVED: usize = 3;
/// The backend the second apply adds.
const ADDED: usize = 4;
/// Pause between two exchanges of a connection: every connection sends
/// many packets in each phase.
const GAP: Duration = Duration::from_millis(50);
/// No answer for this long is a stall.
const STALL: Duration = Duration::from_secs(2);
/// How long each phase runs after its apply.
const PHASE: Duration = Duration::from_secs(3);
/// Packets that crossed the balancer before an apply returned are on the
/// wire for well under this; b4's segment count is read this long after.
const SETTLE: Duration = Duration::from_millis(200);
/// New connections after the second apply.
const PROBES: usize = 16;

/// One TCP VIP per family over `members` (indices into `backends`).
fn config(backends: &[Host], members: &[usize]) -> String {
    let mut out = String::from("interface = \"eth0\"\nhash_seed = 1\n");
    for (name, v6) in [("echo", false), ("echo6", true)] {
        let vip = Testbed::vip(v6);
        write!(
            out,
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{vip}\"\nport = {PORT}\nprotocol = \"tcp\"\n"
        )
        .unwrap();
        for &i in members {
            let b = &backends[i];
            let address: IpAddr = if v6 { b.v6.into() } else { b.v4.into() };
            write!(
                out,
                "\n[[vip.backend]]\nname = \"{}\"\naddress = \"{address}\"\nmac = \"{}\"\n",
                b.name, b.mac
            )
            .unwrap();
        }
    }
    out
}

/// Apply `text` (forced: removing a quarter of the capacity trips the
/// safety check).
fn apply(daemon: &Daemon, dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    let out = daemon.xlb(&["apply", path.to_str().unwrap(), "--force", "-m", name])?;
    ensure!(
        out.status.success(),
        "apply {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The TCP counters of a namespace (`Tcp:` of /proc/net/snmp, which counts
/// IPv4 and IPv6 alike).
#[derive(Clone, Copy, Debug)]
struct Tcp {
    in_segs: u64,
    out_rsts: u64,
}

fn tcp(ns: &Netns) -> anyhow::Result<Tcp> {
    let snmp = ns.exec(&["cat", "/proc/net/snmp"])?;
    let mut rows = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        bail!("{}: no Tcp rows in /proc/net/snmp", ns.name);
    };
    let field = |wanted: &str| -> anyhow::Result<u64> {
        let i = names
            .split_whitespace()
            .position(|n| n == wanted)
            .with_context(|| format!("{}: no Tcp {wanted} in /proc/net/snmp", ns.name))?;
        values
            .split_whitespace()
            .nth(i)
            .with_context(|| format!("{}: Tcp {wanted} has no value", ns.name))?
            .parse()
            .with_context(|| format!("{}: Tcp {wanted}", ns.name))
    };
    Ok(Tcp {
        in_segs: field("InSegs")?,
        out_rsts: field("OutRsts")?,
    })
}

/// Resets sent by every backend but the removed one.
fn resets_of_others(backends: &[Host]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for (i, b) in backends.iter().enumerate() {
        if i != REMOVED {
            sum += tcp(&b.ns)?.out_rsts;
        }
    }
    Ok(sum)
}

#[test]
fn a_removed_backends_flows_are_retained() {
    tests::require_privileges!();
    tests::in_workdir("resteer", run);
}

/// When each apply returned.
struct Applied {
    removal: Instant,
    addition: Instant,
}

fn run(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let bed = Testbed::new("xlbrst", 5)?;
    let _servers = EchoServers::start(&bed.backends, PORT)?;
    let removed = &bed.backends[REMOVED];

    let start_file = dir.join("start.toml");
    std::fs::write(&start_file, config(&bed.backends, &[0, 1, 2, REMOVED]))?;
    let daemon = Daemon::start_with(&bed.lb.ns, &start_file, dir, &["--bake-window", "0s"])?;

    let targets: Vec<SocketAddr> = (0..2 * CONNECTIONS_PER_FAMILY)
        .map(|i| SocketAddr::new(Testbed::vip(i % 2 == 1), PORT))
        .collect();
    let pace = Pace {
        gap: GAP,
        stall: STALL,
        max_life: Duration::from_secs(60),
    };
    let connections =
        LongConnections::open(&bed.client.ns, &targets, pace, Duration::from_millis(5));
    ensure!(
        connections.wait_settled(Duration::from_secs(20)),
        "the {} connections were not all established within 20 s",
        targets.len()
    );
    // Every connection answers a few times on the start table.
    std::thread::sleep(Duration::from_millis(500));

    let resets_before = resets_of_others(&bed.backends)?;
    apply(
        &daemon,
        dir,
        "remove-b4",
        &config(&bed.backends, &[0, 1, 2]),
    )?;
    let removal = Instant::now();
    std::thread::sleep(SETTLE);
    let removed_after_removal = tcp(&removed.ns)?.in_segs;
    std::thread::sleep(PHASE - SETTLE);
    let removed_before_addition = tcp(&removed.ns)?.in_segs;
    let resets_after_removal = resets_of_others(&bed.backends)?;

    apply(
        &daemon,
        dir,
        "add-b5",
        &config(&bed.backends, &[0, 1, 2, ADDED]),
    )?;
    let addition = Instant::now();
    let probes = std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<Vec<String>> {
                bed.client.ns.enter()?;
                (0..PROBES)
                    .map(|i| {
                        let target = SocketAddr::new(Testbed::vip(i % 2 == 1), PORT);
                        probe(target, STALL)
                            .map(|(_, got)| got)
                            .map_err(|e| anyhow::anyhow!("new connection {i} to {target}: {e}"))
                    })
                    .collect()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
    })?;
    std::thread::sleep(PHASE);
    let removed_at_end = tcp(&removed.ns)?.in_segs;
    let held = connections.finish()?;
    let applied = Applied { removal, addition };

    eprintln!(
        "TCP segments reaching {}: {removed_after_removal} {SETTLE:?} after the removal, \
         {removed_before_addition} before the addition, {removed_at_end} at the end; resets \
         sent by the others: {resets_before} before, {resets_after_removal} after the removal",
        removed.name
    );
    let on_removed = check_connections(&held, &removed.name, &applied)?;
    ensure!(
        removed_before_addition > removed_after_removal,
        "{} received no TCP segment after it was removed: its {on_removed} retained flows \
         did not reach it",
        removed.name
    );
    ensure!(
        removed_at_end > removed_before_addition,
        "{} received no TCP segment after {} was added (its flows moved: a reused id?)",
        removed.name,
        bed.backends[ADDED].name
    );
    let resets = resets_after_removal - resets_before;
    ensure!(
        resets == 0,
        "the live backends sent {resets} resets after the removal: the removed {}'s flows \
         reached them",
        removed.name
    );
    ensure!(
        probes.iter().all(|p| *p != removed.name),
        "a new connection reached the removed {}: {probes:?}",
        removed.name
    );
    check_no_drift(&daemon)?;
    eprintln!(
        "probes answered by {probes:?}; whole test {:?}",
        started.elapsed()
    );
    Ok(())
}

/// The removed backend's connections were reset by a live backend after
/// the removal; every other connection kept answering from its backend to
/// the end. Returns how many connections the removed backend had.
fn check_connections(held: &[Held], removed: &str, applied: &Applied) -> anyhow::Result<usize> {
    let (on_removed, others): (Vec<&Held>, Vec<&Held>) = held
        .iter()
        .partition(|h| h.backends.first().is_some_and(|b| b == removed));
    let mut per_backend = std::collections::BTreeMap::<&str, usize>::new();
    for h in held {
        if let Some(b) = h.backends.first() {
            *per_backend.entry(b.as_str()).or_default() += 1;
        }
    }
    eprintln!(
        "{} connections by first backend: {per_backend:?}",
        held.len()
    );
    ensure!(
        !on_removed.is_empty(),
        "no connection went to {removed} before its removal: {per_backend:?}"
    );

    let mut broken = Vec::new();
    for h in on_removed.iter().chain(&others) {
        let kept = h.fault.is_none()
            && h.backends.len() == 1
            && h.first_answer.is_some_and(|t| t < applied.removal)
            && h.last_answer.is_some_and(|t| t > applied.addition);
        if !kept {
            broken.push(format!(
                "#{} from {:?}: answered by {:?}, {} exchanges, fault {:?}",
                h.id, h.local, h.backends, h.exchanges, h.fault
            ));
        }
    }
    if !broken.is_empty() {
        bail!(
            "{} of the {} connections did not keep working on their backend across \
             both applies (the removed {removed}'s retained among them):\n{}",
            broken.len(),
            held.len(),
            broken.join("\n")
        );
    }
    Ok(on_removed.len())
}

/// The drift check has run since the last apply (it runs about once a
/// second; waited for up to 5 s) and calls no VIP drifted: the removed
/// backend's retired entry is not drift.
fn check_no_drift(daemon: &Daemon) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let vips = loop {
        let status = daemon.status()?;
        let vips = status["vips"]
            .as_array()
            .context("no vips in xlb status")?
            .clone();
        if vips
            .iter()
            .all(|v| v["drift"]["checked_at_unix_seconds"].is_number())
        {
            break vips;
        }
        ensure!(
            Instant::now() < deadline,
            "no drift check within 5 s of the last apply: {vips:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for v in &vips {
        ensure!(
            v["drift"]["drifted"] == false,
            "VIP {}: drift: {}",
            v["name"],
            v["drift"]
        );
    }
    Ok(())
}
