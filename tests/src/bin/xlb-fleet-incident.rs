//! `cargo xtask incident-replay --fleet`: the outage behind xlb on a fleet
//! (docs/INCIDENT.md, "On a fleet"). The fleet testbed (a router with BIRD
//! spreading the VIP by ECMP over three `xlb run --fleet` nodes, etcd with
//! TLS) serves the incident's login service: ten auth servers of 60
//! logins/s each with a 2 s queue, 300 logins/s from a client behind the
//! router. The postmortem's change (auth-1 and auth-2 at weight 10) is made
//! twice, forced past the plan each time:
//!
//! 1. **as a fleet rollout** (`xlb fleet apply --force --wait`): the canary
//!    applies it, its bake catches the skew and rolls it back, the rollout
//!    rolls back, and the other two nodes never apply it;
//! 2. **on all three nodes at once** (`xlb apply --force` on each, no
//!    rollout): every node's own bake has to catch it.
//!
//! The replay prints what the users saw in each: failed and slow logins,
//! the hot servers' load and queue, what a change that stayed would cost;
//! and checks its goals (exit 1 when one is missed). Everything it makes
//! is removed, also on Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{SigHandler, Signal, signal};
use tests::etcd::node;
use tests::fleet::{Fleet, Spec};
use tests::logins::{self, HOT, LOGINS_PER_SECOND, Login, LoginClient, LoginServers, Model};
use tests::testbed::{TCP_PORT, VIP4};
use tests::xlbd::describe;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_WORKERS: usize = 512;
/// When the change is made in each phase, and how long logins go on after
/// the last rollback.
const CHANGE_AT: Duration = Duration::from_secs(5);
const AFTER_ROLLBACK: Duration = Duration::from_secs(8);
/// Give up waiting for the rollbacks this long after the change.
const ROLLBACK_DEADLINE: Duration = Duration::from_secs(30);
const GOAL_FAILED_FRACTION: f64 = 0.001;
/// A login slower than this counts as slow (it still succeeded).
const SLOW: Duration = Duration::from_secs(1);
const NODES: [&str; 3] = ["n21", "n22", "n23"];

fn main() -> anyhow::Result<()> {
    tests::privileges::check("the fleet replay")?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        signal(Signal::SIGINT, SigHandler::Handler(on_signal))?;
        signal(Signal::SIGTERM, SigHandler::Handler(on_signal))?;
    }
    let dir = std::env::temp_dir().join(format!("xlb-fleet-incident-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = replay(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nreplay: removed the namespaces and files it made");
    let missed = result?;
    if missed.is_empty() {
        println!("replay: every goal met");
        Ok(())
    } else {
        eprintln!("replay: GOALS MISSED: {}", missed.join("; "));
        std::process::exit(1);
    }
}

/// What one phase's users saw, from the change to the end of the phase.
struct Phase {
    name: &'static str,
    nodes_applied: usize,
    /// From the change to the last node's rollback.
    rolled_back_after: Option<Duration>,
    logins: usize,
    failed: usize,
    slow: usize,
    /// Each hot server's logins a second while the bad revision was live
    /// somewhere, and its longest queue wait.
    hot: Vec<(String, f64, Duration)>,
}

impl Phase {
    fn failed_fraction(&self) -> f64 {
        self.failed as f64 / self.logins.max(1) as f64
    }

    /// Logins refused a second if the change had stayed (the outage), from
    /// the plan's shares: ECMP gives each node a third of the logins; a
    /// node with the change sends each hot server 10/28 of its third, a
    /// node without it 1/10. What a hot server gets above its capacity is
    /// refused once its queue is full.
    fn refused_if_it_stayed(&self, model: Model) -> f64 {
        let with = self.nodes_applied.min(3) as f64 / 3.0;
        let bad_share = f64::from(logins::BAD_WEIGHT)
            / f64::from(2 * logins::BAD_WEIGHT + logins::BACKENDS as u32 - 2);
        let good_share = 1.0 / logins::BACKENDS as f64;
        let per_hot = f64::from(LOGINS_PER_SECOND) * (with * bad_share + (1.0 - with) * good_share);
        HOT.len() as f64 * (per_hot - model.capacity_per_second as f64).max(0.0)
    }
}

fn replay(dir: &Path) -> anyhow::Result<Vec<String>> {
    let model = Model::INCIDENT;
    println!(
        "replay: the outage behind xlb on a fleet: a router spreading the VIP by ECMP over three xlb nodes, \
         {} auth servers of {} logins/s with a {:?} queue, {LOGINS_PER_SECOND} logins/s",
        logins::BACKENDS,
        model.capacity_per_second,
        model.max_wait
    );
    let (good, bad) = logins::good_and_bad();
    let good_file = dir.join("good.toml");
    let bad_file = dir.join("bad.toml");
    std::fs::write(&good_file, &good)?;
    std::fs::write(&bad_file, &bad)?;
    println!("replay: building the fleet testbed (namespaces xfi-*) with etcd");
    let fleet = Fleet::build(
        "xfi",
        dir,
        Spec {
            backends: logins::BACKENDS,
            echo: false,
            configs: [good.clone(), good.clone(), good],
            node_args: ["--bake-window", "60s", "--bake-hold", "1s"]
                .map(String::from)
                .to_vec(),
            store: Some("edge".into()),
            announced: vec![IpAddr::V4(VIP4)],
        },
    )
    .context("building the fleet")?;
    let servers = LoginServers::start_on(&fleet.backends, &logins::names(), model)?;
    let store = fleet.store()?;
    store.wait_for(&fleet.router, "three nodes report", 30, |_, d| {
        d["nodes"].as_array().is_some_and(|n| n.len() == 3)
    })?;
    let out = store.cli(
        &fleet.router,
        &[
            "apply",
            path(&good_file)?,
            "--wait",
            "-m",
            "the good config",
        ],
    )?;
    if !out.status.success() {
        bail!("the fleet's first revision: {}", describe(&out));
    }
    println!("replay: fleet revision 1 (weights 1) on every node");
    let mut missed = Vec::new();

    // The plan, against every node's live state.
    let out = store.cli(&fleet.router, &["plan", path(&bad_file)?])?;
    let text = describe(&out);
    if out.status.code() == Some(1) && text.contains(HOT[0]) {
        println!(
            "replay: `xlb fleet plan bad.toml` refuses the change (exit 1), naming {}",
            HOT[0]
        );
    } else {
        println!("{text}");
        missed.push("`xlb fleet plan` did not refuse the change naming auth-1".to_string());
    }

    let rollout = phase(&fleet, &servers, "rollout (canary n21)", |fleet| {
        let out = store.cli(
            &fleet.router,
            &[
                "apply",
                path(&bad_file)?,
                "--force",
                "--wait",
                "-m",
                "bad weights",
            ],
        )?;
        println!(
            "  $ xlb fleet apply bad.toml --force --wait   (exit {})",
            out.status.code().unwrap_or(-1)
        );
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            println!("    {line}");
        }
        if out.status.code() != Some(1) {
            missed.push(format!(
                "the rollout was not rolled back: {}",
                describe(&out)
            ));
        }
        let (_, doc) = store.status(&fleet.router)?;
        let applied = NODES
            .iter()
            .filter(|n| node(&doc, n).is_some_and(|r| r["last"]["revision"] == 2))
            .count();
        for n in &NODES[1..] {
            if node(&doc, n).is_none_or(|r| r["last"]["revision"] != 1 || r["serving"] != 1) {
                missed.push(format!("{n} applied the bad revision: {doc}"));
            }
        }
        Ok(applied)
    })?;

    let at_once = phase(&fleet, &servers, "all three at once", |fleet| {
        let outs: Vec<anyhow::Result<std::process::Output>> = std::thread::scope(|s| {
            let handles: Vec<_> = fleet
                .nodes
                .iter()
                .map(|n| {
                    let bad = &bad_file;
                    s.spawn(move || {
                        n.daemon()?.xlb(&[
                            "apply",
                            path(bad)?,
                            "--force",
                            "-m",
                            "bad weights, everywhere",
                        ])
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("apply thread panicked")))
                .collect()
        });
        let mut applied = 0;
        for (n, out) in NODES.iter().zip(outs) {
            let out = out?;
            println!(
                "  $ xlb apply bad.toml --force   on {n} (exit {})",
                out.status.code().unwrap_or(-1)
            );
            applied += usize::from(out.status.success());
        }
        Ok(applied)
    })?;

    print_report(&[&rollout, &at_once], model);
    if rollout.failed_fraction() >= GOAL_FAILED_FRACTION {
        missed.push(format!(
            "{} of {} logins failed during the rollout (goal < {:.1}%)",
            rollout.failed,
            rollout.logins,
            100.0 * GOAL_FAILED_FRACTION
        ));
    }
    if rollout.nodes_applied != 1 {
        missed.push(format!(
            "{} nodes applied the bad revision in the rollout, not 1",
            rollout.nodes_applied
        ));
    }
    for p in [&rollout, &at_once] {
        if p.rolled_back_after.is_none() {
            missed.push(format!(
                "{}: no rollback within {ROLLBACK_DEADLINE:?}",
                p.name
            ));
        }
    }
    if INTERRUPTED.load(Ordering::Relaxed) {
        missed.push("interrupted".into());
    }
    drop(servers);
    Ok(missed)
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("a UTF-8 path")
}

/// One phase: logins for `CHANGE_AT`, the change (`change` makes it and
/// says on how many nodes it was applied), logins until every node serves
/// the good weights again (its bake rolled back) and `AFTER_ROLLBACK` more.
fn phase(
    fleet: &Fleet,
    servers: &LoginServers,
    name: &'static str,
    change: impl FnOnce(&Fleet) -> anyhow::Result<usize>,
) -> anyhow::Result<Phase> {
    println!("\nreplay: phase \"{name}\"");
    let target = SocketAddr::new(VIP4.into(), TCP_PORT);
    let client = LoginClient::start(
        &fleet.client,
        target,
        LOGINS_PER_SECOND,
        CLIENT_WORKERS,
        CLIENT_TIMEOUT,
        90,
    );
    sleep_unless_interrupted(CHANGE_AT);
    println!(
        "  the bad change: weights of {} raised from 1 to {}",
        HOT.join(" and "),
        logins::BAD_WEIGHT
    );
    let changed = Instant::now();
    let nodes_applied = change(fleet)?;
    // Every node back on weights 1: its live table serves auth-1 its
    // capacity share again.
    let mut rolled_back_after = None;
    while changed.elapsed() < ROLLBACK_DEADLINE && !INTERRUPTED.load(Ordering::Relaxed) {
        let baking = fleet
            .nodes
            .iter()
            .map(|n| Ok(n.daemon()?.status()?["bake"]["state"].as_str() == Some("baking")))
            .collect::<anyhow::Result<Vec<bool>>>()?;
        let weights_back = fleet
            .nodes
            .iter()
            .map(|n| {
                let s = n.daemon()?.status()?;
                Ok(s["vips"][0]["backends"]
                    .as_array()
                    .is_some_and(|b| b.iter().all(|b| b["weight"] == 1)))
            })
            .collect::<anyhow::Result<Vec<bool>>>()?;
        if weights_back.iter().all(|b| *b) && !baking.iter().any(|b| *b) {
            rolled_back_after = Some(changed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    match rolled_back_after {
        Some(t) => println!(
            "  every node serves weights 1 again {:.2} s after the change",
            t.as_secs_f64()
        ),
        None => println!("  NOT rolled back within {ROLLBACK_DEADLINE:?}"),
    }
    sleep_unless_interrupted(AFTER_ROLLBACK);
    let logins = client.finish();
    let ended = Instant::now();
    let window_end = changed + rolled_back_after.unwrap_or(ROLLBACK_DEADLINE);
    let after: Vec<&Login> = logins.iter().filter(|l| l.due >= changed).collect();
    let bad_live = window_end
        .saturating_duration_since(changed)
        .as_secs_f64()
        .max(0.1);
    let hot = servers
        .servers
        .iter()
        .filter(|s| HOT.contains(&s.name.as_str()))
        .map(|s| {
            let events = s.events.lock().unwrap_or_else(|p| p.into_inner());
            let arrivals = events
                .iter()
                .filter(|e| e.arrival >= changed && e.arrival < window_end)
                .count();
            let longest = events
                .iter()
                .filter(|e| e.arrival >= changed && e.arrival < ended)
                .filter_map(|e| e.waited)
                .max()
                .unwrap_or_default();
            (s.name.clone(), arrivals as f64 / bad_live, longest)
        })
        .collect();
    Ok(Phase {
        name,
        nodes_applied,
        rolled_back_after,
        logins: after.len(),
        failed: after.iter().filter(|l| l.result.is_err()).count(),
        slow: after
            .iter()
            .filter(|l| l.result.is_ok() && l.latency > SLOW)
            .count(),
        hot,
    })
}

fn sleep_unless_interrupted(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !INTERRUPTED.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_report(phases: &[&Phase], model: Model) {
    println!("\nreplay: what the users saw, from the change to the end of each phase");
    let row = |what: &str, f: &dyn Fn(&Phase) -> String| {
        let cells: Vec<String> = phases.iter().map(|p| format!("{:>28}", f(p))).collect();
        println!("  {what:<40}{}", cells.join(""));
    };
    row("", &|p| p.name.to_string());
    row("nodes that applied the change", &|p| {
        format!("{} of 3", p.nodes_applied)
    });
    row("every node back on the good weights", &|p| {
        p.rolled_back_after.map_or("never".into(), |t| {
            format!("after {:.2} s", t.as_secs_f64())
        })
    });
    row("failed logins", &|p| {
        format!(
            "{} of {} ({:.2}%)",
            p.failed,
            p.logins,
            100.0 * p.failed_fraction()
        )
    });
    row("slow logins (> 1 s)", &|p| p.slow.to_string());
    for (i, hot) in HOT.iter().enumerate() {
        row(
            &format!("{hot}: logins/s while the change was live"),
            &|p| {
                p.hot.get(i).map_or("-".into(), |(_, rate, _)| {
                    format!("{rate:.0} (capacity {})", model.capacity_per_second)
                })
            },
        );
        row(&format!("{hot}: longest queue wait"), &|p| {
            p.hot
                .get(i)
                .map_or("-".into(), |(_, _, w)| format!("{:.2} s", w.as_secs_f64()))
        });
    }
    row("had it stayed (no bake): refused/s", &|p| {
        let refused = p.refused_if_it_stayed(model);
        format!(
            "{refused:.0} of {LOGINS_PER_SECOND} ({:.0}%)",
            100.0 * refused / f64::from(LOGINS_PER_SECOND)
        )
    });
}
