//! Fleet rollouts on the fleet testbed (tests/src/fleet.rs): a router with
//! BIRD spreading the VIPs by ECMP over three `xlb run --fleet` nodes, a
//! real etcd with TLS and client certificates made by the test, and a
//! steady stream of new TCP connections from a client behind the router,
//! so every node forwards some of them:
//!
//! - the fleet's first revision, then a good change (weights) reach the
//!   canary, bake, then the others; every node ends on the same fleet
//!   revision with equal fingerprints;
//! - a skewing change (forced past the plan) is caught by the canary's bake
//!   and rolled back there; the other nodes never apply it;
//! - the CLI killed mid-rollout: a second CLI on another machine sees it
//!   running and rolls it back;
//! - a node down during a rollout converges when it returns;
//! - a node cut off from etcd keeps forwarding, says so in its status and
//!   metrics, is skipped by a rollout, and converges when it returns;
//! - etcd stopped: forwarding, health checks and the local status go on;
//!   on its return nothing is lost and the fleet agrees again;
//! - a local drain on a node is reported as a divergence;
//!
//! and through all of it not one connection fails.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use tests::etcd::{Etcd, Store, node};
use tests::fleet::{self, Fleet, NodeConfig, Spec, StreamReport};
use tests::netns::Netns;
use tests::testbed::{self, TCP_PORT, VIP4, VIP6};
use tests::xlbd::describe;

#[test]
fn a_fleet_rolls_out_with_a_canary_and_rolls_back_as_a_whole() {
    tests::require_privileges!();
    tests::in_workdir("rollout", run);
}

/// The fleet's config with the given weights, capacities 1:1:2 and a short
/// detection window (as tests/tests/bake.rs), so a bake judges in seconds.
fn config(weights: [u32; 3]) -> String {
    testbed::with_capacities_and_short_window(fleet::config(&NodeConfig {
        hash_seed: 1,
        weights,
    }))
}

/// `GET url` from inside `ns`.
fn http_get(ns: &Netns, url: String) -> anyhow::Result<String> {
    Netns::in_named(&ns.name, move || {
        Ok(ureq::get(&url)
            .timeout(Duration::from_secs(5))
            .call()?
            .into_string()?)
    })
}

fn run(dir: &Path) -> anyhow::Result<()> {
    let files: Vec<PathBuf> = [
        // Weights in proportion to the capacities (1:1:2), so that with a
        // third of the traffic on each node, a bake never mistakes noise for
        // skew; the skewing change is far from them.
        ("start", [1, 1, 2]),
        ("good", [2, 2, 4]),
        ("skew", [8, 1, 1]),
        ("killed", [3, 3, 6]),
        ("down", [4, 4, 8]),
        ("cut", [5, 5, 10]),
    ]
    .iter()
    .map(|(name, weights)| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config(*weights)).map(|()| path)
    })
    .collect::<Result<_, _>>()?;
    let start = std::fs::read_to_string(&files[0])?;
    let mut fleet = Fleet::build(
        "xro",
        dir,
        Spec {
            backends: 3,
            echo: true,
            configs: [start.clone(), start.clone(), start],
            // A 3 s hold: with a third of the traffic on each node, a
            // second of packet-share noise must not roll a good change back
            // (the persistent skew of the bad change holds far longer).
            node_args: ["--bake-window", "10s", "--bake-hold", "3s"]
                .map(String::from)
                .to_vec(),
            store: Some("t".into()),
            announced: vec![IpAddr::V4(VIP4), IpAddr::V6(VIP6)],
        },
    )?;
    let store = fleet.store()?.clone();
    store.wait_for(&fleet.router, "three nodes report", 30, |_, d| {
        d["nodes"].as_array().is_some_and(|n| n.len() == 3)
    })?;

    let target = SocketAddr::new(VIP4.into(), TCP_PORT);
    let begun = Instant::now();
    let stream = fleet::Stream::start(&fleet.client, target, 150, 16, Duration::from_secs(300));
    let checked = scenario(&mut fleet, &store, dir, &files);
    let attempts = stream.finish()?;
    if let Err(e) = checked {
        return Err(e.context(fleet.describe()));
    }
    let report = StreamReport::of(&attempts, begun);
    ensure!(
        report.failed == 0 && report.attempts > 1000,
        "{} of {} connections failed: {:?}",
        report.failed,
        report.attempts,
        report.failures.first()
    );
    eprintln!(
        "{} connections through the router's ECMP to the three nodes, 0 failed, {} delayed by a SYN retransmission",
        report.attempts, report.delayed
    );
    Ok(())
}

/// `xlb fleet apply FILE --wait EXTRA...` from `ns`.
fn apply(store: &Store, ns: &Netns, file: &Path, extra: &[&str]) -> anyhow::Result<Output> {
    let mut args = vec!["apply", file.to_str().context("path")?, "--wait"];
    args.extend_from_slice(extra);
    store.cli(ns, &args)
}

/// Everything but the traffic. The operator's CLI runs on the router's
/// host; a second one on the client's.
fn scenario(fleet: &mut Fleet, store: &Store, dir: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    {
        // The fleet's first revision: the config every node started on.
        let out = apply(store, &fleet.router, &files[0], &["-m", "first"])?;
        ensure!(out.status.success(), "first rollout: {}", describe(&out));

        // A good change: the canary bakes it, then the others.
        let out = apply(store, &fleet.router, &files[1], &["-m", "good weights"])?;
        ensure!(out.status.success(), "good rollout: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(stderr.contains("[n21] [n22 n23]"), "canary first: {stderr}");
        // Every node on it (one whose report lapsed on a busy host was
        // skipped, and converges to the fleet's revision).
        let doc = store.wait_for(&fleet.router, "every node on revision 2", 60, |code, d| {
            code == 0 && d["desired"] == 2
        })?;
        let fps: Vec<&serde_json::Value> = ["n21", "n22", "n23"]
            .iter()
            .map(|n| node(&doc, n).map_or(&serde_json::Value::Null, |r| &r["fingerprint"]))
            .collect();
        ensure!(fps.iter().all(|f| *f == fps[0] && f.is_string()), "{doc}");
        for n in ["n21", "n22", "n23"] {
            let r = node(&doc, n).context("node")?;
            ensure!(r["serving"] == 2 && r["last"]["outcome"] == "baked", "{r}");
        }
        let n22_live = node(&doc, "n22").context("n22")?["live_revision"].clone();

        // The skewing change, forced: the canary's bake rolls it back and
        // the rollout rolls back; n22 and n23 never apply it.
        let out = apply(store, &fleet.router, &files[2], &["--force", "-m", "skew"])?;
        ensure!(
            out.status.code() == Some(1),
            "skew rollout: {}",
            describe(&out)
        );
        let (_, doc) = store.status(&fleet.router)?;
        ensure!(
            doc["desired"] == 2 && doc["rollout"]["state"] == "rolled_back",
            "{doc}"
        );
        let canary = node(&doc, "n21").context("n21")?;
        ensure!(
            canary["last"]["revision"] == 3
                && canary["last"]["outcome"] == "rolled_back"
                && canary["serving"] == 2,
            "{canary}"
        );
        for n in ["n22", "n23"] {
            let r = node(&doc, n).context("node")?;
            ensure!(r["last"]["revision"] == 2 && r["serving"] == 2, "{r}");
        }
        ensure!(
            node(&doc, "n22").context("n22")?["live_revision"] == n22_live,
            "n22 applied nothing: {doc}"
        );

        // The CLI killed mid-rollout: a second CLI, on another host, sees
        // it running and rolls it back.
        let mut first = store
            .command(
                &fleet.router,
                &["apply", files[3].to_str().context("path")?, "--wait"],
            )?
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(1500));
        first.kill()?;
        first.wait()?;
        let (code, doc) = store.status(&fleet.client)?;
        ensure!(
            code == 1 && doc["rollout"]["state"] == "running" && doc["rollout"]["to"] == 4,
            "{doc}"
        );
        let out = store.cli(&fleet.client, &["rollback"])?;
        ensure!(out.status.success(), "rollback: {}", describe(&out));
        store.wait_for(
            &fleet.client,
            "the killed CLI's rollout rolls back",
            60,
            |code, d| code == 0 && d["rollout"]["state"] == "rolled_back" && d["desired"] == 2,
        )?;

        // A node down during a rollout: skipped (its report expires), then
        // it converges when it returns, through its own bake.
        let mut n23 = fleet.nodes[2].daemon.take().context("n23")?;
        n23.stop()?;
        drop(n23);
        store.wait_for(&fleet.router, "n23's report expires", 30, |_, d| {
            node(d, "n23").is_none()
        })?;
        let out = apply(
            store,
            &fleet.router,
            &files[4],
            &["-m", "while n23 is down"],
        )?;
        ensure!(
            out.status.success(),
            "rollout without n23: {}",
            describe(&out)
        );
        fleet.nodes[2].start_daemon()?;
        let doc = store.wait_for(&fleet.router, "n23 converges", 60, |code, d| {
            code == 0 && node(d, "n23").is_some_and(|r| r["serving"] == 5)
        })?;
        ensure!(
            node(&doc, "n23").context("n23")?["last"]["outcome"] == "baked",
            "{doc}"
        );

        // A node cut off from etcd: it keeps forwarding on its revision,
        // says so, is skipped by a rollout, and converges on its return.
        fleet.cut_from_store(1)?;
        let n22 = &fleet.nodes[1];
        tests::wait_until(
            Duration::from_secs(30),
            Duration::from_millis(500),
            "n22 says it is cut off",
            || Ok(n22.daemon()?.status()?["fleet"]["connected"] == false),
        )?;
        let metrics = http_get(&n22.host.ns, format!("{}/metrics", n22.url))?;
        ensure!(
            metrics.contains("xlb_fleet_connected{node=\"n22\"} 0"),
            "n22's /metrics: {}",
            metrics
                .lines()
                .filter(|l| l.contains("fleet"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let (code, text) = n22.xlb(&["status"])?;
        ensure!(
            code == 0 && text.contains("CUT OFF from the store"),
            "n22's status: {text}"
        );
        store.wait_for(&fleet.router, "n22's report expires", 30, |_, d| {
            node(d, "n22").is_none()
        })?;
        let flows_before = n22.new_flows("web")?;
        let out = apply(
            store,
            &fleet.router,
            &files[5],
            &["-m", "while n22 is cut off"],
        )?;
        ensure!(
            out.status.success(),
            "rollout without n22: {}",
            describe(&out)
        );
        let flows_after = n22.new_flows("web")?;
        ensure!(
            flows_after > flows_before,
            "n22 forwarded no new flow while cut off ({flows_before} -> {flows_after})"
        );
        fleet.reconnect_to_store(1)?;
        let doc = store.wait_for(&fleet.router, "n22 converges", 60, |code, d| {
            code == 0 && node(d, "n22").is_some_and(|r| r["serving"] == 6)
        })?;
        ensure!(
            node(&doc, "n22").context("n22")?["last"]["outcome"] == "baked",
            "{doc}"
        );
        ensure!(
            fleet.nodes[1].daemon()?.status()?["fleet"]["connected"] == true,
            "n22 says it is connected again"
        );

        // etcd stopped: forwarding, health checks and the local status go
        // on; on its return nothing is lost.
        fleet.etcd.as_mut().context("etcd")?.stop();
        let stopped = Instant::now();
        let n21 = &fleet.nodes[0];
        tests::wait_until(
            Duration::from_secs(30),
            Duration::from_millis(500),
            "n21 says the store is cut off",
            || Ok(n21.daemon()?.status()?["fleet"]["connected"] == false),
        )?;
        // A backend's health check fails and passes again meanwhile.
        let b1_health = |up: bool| -> anyhow::Result<bool> {
            let s = n21.daemon()?.status()?;
            let b1 = s["vips"][0]["backends"]
                .as_array()
                .and_then(|b| b.iter().find(|b| b["name"] == "b1"))
                .cloned()
                .unwrap_or_default();
            Ok((b1["health"]["state"] == "up") == up && b1["health"].is_object())
        };
        fleet.health.set(0, false);
        tests::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(200),
            "b1 checked down while etcd is stopped",
            || b1_health(false),
        )?;
        fleet.health.set(0, true);
        tests::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(200),
            "b1 checked up again while etcd is stopped",
            || b1_health(true),
        )?;
        ensure!(
            n21.daemon()?.log_text().contains("fleet: unreachable"),
            "n21 logs it: {}",
            n21.daemon()?.log_text()
        );
        let host = fleet.etcd_host.as_ref().context("etcd host")?;
        let etcd = Etcd::start(&host.ns, dir, &store.certs)?;
        fleet.etcd = Some(etcd);
        store.wait_for(&fleet.router, "the nodes report again", 60, |code, d| {
            code == 0 && d["nodes"].as_array().is_some_and(|n| n.len() == 3) && d["desired"] == 6
        })?;
        eprintln!(
            "etcd stopped and started again: the fleet agrees {:?} after the stop",
            stopped.elapsed()
        );

        // A local change on a fleet node is allowed, and reported as a
        // divergence: `fleet status` exits 1 naming it.
        let (code, out) = fleet.nodes[2].xlb(&["drain", "web", "b1"])?;
        ensure!(code == 0, "a local drain on n23: {out}");
        let doc = store.wait_for(&fleet.router, "n23 reported diverged", 30, |code, d| {
            code == 1 && node(d, "n23").is_some_and(|r| r["diverged"].is_string())
        })?;
        ensure!(
            node(&doc, "n22").is_some_and(|r| r["diverged"].is_null()),
            "{doc}"
        );
        Ok(())
    }
}
