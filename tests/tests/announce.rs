//! Announcing (issue 14, item 1) on one node, through the kernel: the
//! daemon with `--announce-table` keeps one blackhole route (protocol 248)
//! per announced VIP address, which the node's BIRD would export (the
//! fleet's BGP side is tests/tests/ecmp.rs). Checked here, by reading the
//! routing table in the LB's namespace:
//!
//! - policies: `healthy` (default) routes while a backend is up, `always`
//!   routes with every backend down, `never` does not; an address shared
//!   by a `healthy` and a `never` VIP is routed;
//! - every backend of a VIP down: withdrawn; back after the hold-down;
//! - `xlb node drain` withdraws everything before it returns, kept across a
//!   restart; `xlb node undrain` brings the routes back;
//! - SIGTERM: routes withdrawn at once, the daemon forwards for the grace,
//!   then exits with the program attached;
//! - SIGKILL leaves the routes; `xlb detach --announce-table` removes them;
//! - `--announce-table 254` (the main table) is refused as bad input.
//!
//! Namespaces `xlban-*`; addresses in 198.18.0.0/15. Needs root.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use tests::echo::EchoServers;
use tests::netns::Netns;
use tests::testbed::{self, Testbed};
use tests::xlbd::{Daemon, describe, xlb_binary};

const PORT: u16 = 8074;
/// Nothing listens here: a check of it fails.
const DEAD_PORT: u16 = 8075;
const TABLE: &str = "100";
const WEB: &str = "198.18.100.1";
const PINNED: &str = "198.18.100.2";
const QUIET: &str = "198.18.100.3";
const CHECK: &str = "interval = \"500ms\"\ntimeout = \"300ms\"\nfall = 2\nrise = 2\n";

/// A VIP over the testbed's first `backends` backends (b1, b2, ...).
fn vip(
    name: &str,
    address: &str,
    port: u16,
    announce: &str,
    check_port: u16,
    backends: usize,
) -> String {
    format!(
        "\n[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = {port}\nprotocol = \"tcp\"\n\
         announce = \"{announce}\"\n\n[vip.health]\n{CHECK}port = {check_port}\n{}",
        testbed::backend_sections(&vec![1; backends], false)
    )
}

/// xlb's routes in the table: destination addresses, each checked to be a
/// blackhole host route of protocol 248.
fn routes(lb: &Netns) -> anyhow::Result<BTreeSet<String>> {
    let out = lb.ip(&["-j", "route", "show", "table", TABLE, "proto", "248"])?;
    let list: serde_json::Value =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })?;
    let mut found = BTreeSet::new();
    for r in list.as_array().context("a route list")? {
        ensure!(r["type"] == "blackhole", "not a blackhole route: {r}");
        found.insert(r["dst"].as_str().context("dst")?.to_string());
    }
    Ok(found)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Poll `f` every 50 ms until it is true or `limit` passed.
fn wait(
    limit: Duration,
    what: &str,
    f: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    tests::wait_until(limit, Duration::from_millis(50), what, f)
}

fn reason(status: &serde_json::Value, vip: &str) -> String {
    status["vips"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == vip))
        .map(|v| v["announce"]["reason"].as_str().unwrap_or("?").to_string())
        .unwrap_or_default()
}

const ARGS: &[&str] = &[
    "--bake-window",
    "0s",
    "--announce-table",
    TABLE,
    "--announce-hold",
    "2s",
    "--withdraw-grace",
    "2s",
];

#[test]
fn routes_follow_policy_health_drain_and_stop() {
    tests::require_privileges!();
    tests::in_workdir("announce", run);
}

fn run(dir: &Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xlban", 2)?;
    let lb = &bed.lb.ns;
    let b = &bed.backends;
    let servers = EchoServers::start(b, PORT)?;
    let text = format!(
        "interface = \"eth0\"\nhash_seed = 7\n{}{}{}{}",
        vip("web", WEB, PORT, "healthy", PORT, 2),
        vip("web-alt", WEB, PORT + 1, "never", PORT, 2),
        vip("pinned", PINNED, PORT, "always", DEAD_PORT, 1),
        vip("quiet", QUIET, PORT, "never", PORT, 2),
    );
    let config = dir.join("xlb.toml");
    std::fs::write(&config, &text)?;
    let mut daemon = Daemon::start_with(lb, &config, dir, ARGS)?;

    // Policies: web's address (shared with a `never` VIP) and the pinned
    // one, whose only backend fails its checks.
    wait(Duration::from_secs(5), "web and pinned routed", || {
        Ok(routes(lb)? == set(&[WEB, PINNED]))
    })?;
    wait(Duration::from_secs(5), "pinned's backend down", || {
        Ok(daemon.status()?["vips"][2]["health"]["all_down"] == true)
    })?;
    ensure!(
        routes(lb)? == set(&[WEB, PINNED]),
        "always: still routed with its backend down"
    );
    let s = daemon.status()?;
    for (v, want) in [
        ("web", "backends_up"),
        ("web-alt", "never"),
        ("pinned", "always"),
        ("quiet", "never"),
    ] {
        ensure!(
            reason(&s, v) == want,
            "{v}: reason {} not {want}",
            reason(&s, v)
        );
    }
    ensure!(
        s["announce"]["table"] == 100 && s["announce"]["state"] == "serving",
        "{}",
        s["announce"]
    );

    // Every backend of web down: withdrawn (checks every 500 ms, fall 2).
    drop(servers);
    let took = wait(Duration::from_secs(5), "web withdrawn", || {
        Ok(routes(lb)? == set(&[PINNED]))
    })?;
    eprintln!("web withdrawn {took:?} after its servers stopped");
    ensure!(reason(&daemon.status()?, "web") == "no_backend_up");
    // Back: rise 2 at 500 ms, then the 2 s hold-down, seen in the status.
    let servers = EchoServers::start(b, PORT)?;
    let mut held = false;
    let took = wait(Duration::from_secs(8), "web routed again", || {
        held |= reason(&daemon.status()?, "web") == "hold_down";
        Ok(routes(lb)?.contains(WEB))
    })?;
    ensure!(held, "web was routed again without a hold-down");
    ensure!(
        took >= Duration::from_secs(2),
        "routed again after {took:?}, inside the 2 s hold-down"
    );

    // Drain: withdrawn when the command returns; kept across a restart.
    let out = daemon.xlb(&["node", "drain", "-m", "test"])?;
    ensure!(out.status.success(), "xlb node drain: {}", describe(&out));
    ensure!(
        routes(lb)?.is_empty(),
        "routes left after `xlb node drain` returned"
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    ensure!(
        shown.contains("node drained") && shown.contains("arriving:"),
        "{shown}"
    );
    daemon.stop()?;
    let mut daemon = Daemon::start_with(lb, &config, dir, ARGS)?;
    std::thread::sleep(Duration::from_millis(1500));
    ensure!(routes(lb)?.is_empty(), "a restarted drained node announces");
    ensure!(daemon.status()?["announce"]["state"] == "drained");
    let out = daemon.xlb(&["node", "undrain"])?;
    ensure!(out.status.success(), "xlb node undrain: {}", describe(&out));
    ensure!(
        routes(lb)? == set(&[WEB, PINNED]),
        "routes after `xlb node undrain` returned"
    );

    // SIGTERM: withdrawn at once, forwarding for the 2 s grace, then exit.
    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    let signalled = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let took = wait(
        Duration::from_secs(2),
        "routes withdrawn on SIGTERM",
        || Ok(routes(lb)?.is_empty()),
    )?;
    ensure!(
        daemon.exited()?.is_none(),
        "the daemon exited before its grace"
    );
    eprintln!("withdrawn {took:?} after SIGTERM");
    wait(Duration::from_secs(6), "exit after the grace", || {
        Ok(daemon.exited()?.is_some())
    })?;
    ensure!(
        signalled.elapsed() >= Duration::from_secs(2),
        "exited {:?} after SIGTERM, inside the 2 s grace",
        signalled.elapsed()
    );

    // SIGKILL leaves the routes; detach removes them.
    let mut daemon = Daemon::start_with(lb, &config, dir, ARGS)?;
    wait(Duration::from_secs(5), "routed after a start", || {
        Ok(routes(lb)? == set(&[WEB, PINNED]))
    })?;
    daemon.kill()?;
    ensure!(
        routes(lb)? == set(&[WEB, PINNED]),
        "SIGKILL took the routes"
    );
    let xlb = xlb_binary()?;
    let xlb = xlb.to_str().context("path")?;
    let nowhere = dir.join("none.sock");
    lb.exec(&[
        xlb,
        "--socket",
        nowhere.to_str().context("path")?,
        "detach",
        "--interface",
        "eth0",
        "--announce-table",
        TABLE,
    ])?;
    ensure!(routes(lb)?.is_empty(), "detach left routes");
    drop(servers);

    // The main table is refused before anything starts.
    let out = std::process::Command::new(xlb_binary()?)
        .args(["run", "--config"])
        .arg(&config)
        .args(["--announce-table", "254"])
        .output()?;
    ensure!(
        out.status.code() == Some(2) && String::from_utf8_lossy(&out.stderr).contains("main table"),
        "--announce-table 254: {}",
        describe(&out)
    );
    Ok(())
}
