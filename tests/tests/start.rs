//! A daemon's start (issue 13, items 1 and 2): one daemon per interface and
//! per state directory, every check that can fail before anything touches
//! the interface or the pins, read-only readers of the store, and a unit
//! that backs off instead of restarting every second.
//!
//! - `a_second_daemon_is_refused_before_it_touches_anything` (root,
//!   namespaces `xlbst-2*`): a second `xlb run` for the same state
//!   directory, for the same interface (another state directory and
//!   bpffs), and for the same pins (from another namespace's interface of
//!   the same name) exits 2 at once naming the running daemon's pid and socket;
//!   the program under the pinned link is the same, the first daemon's
//!   revisions are untouched and it still serves.
//! - `a_start_that_fails_late_leaves_forwarding_as_it_was` (root,
//!   namespaces `xlbst-l*`): a metrics address in use on a fresh interface
//!   leaves no program and no pins; then, over a stopped daemon's pins, a
//!   metrics address in use, an audit log that cannot be opened, a
//!   read-only state directory and a missing interface each exit 2, and
//!   the program under the link, the VIP's answers and the live revision
//!   stay as they were.
//! - `plan_against_a_revision_changes_nothing_in_the_store`: `xlb plan
//!   --revision` beside a store holding a write in progress and a torn file
//!   leaves both where they are.
//! - `the_unit_backs_off_instead_of_spinning`: the unit's restart delays,
//!   as systemd computes them, grow to minutes, and the start limit stops
//!   a fixed-delay systemd but never the backoff.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use tests::confine::{Bpffs, run_to_exit};
use tests::echo::{EchoServers, probe};
use tests::testbed::{self, TCP_PORT, Testbed, VIP4};
use tests::xlbd::{Daemon, xlb_binary};

/// The default `metrics_address` (a config without one).
const METRICS: &str = "127.0.0.1:9470";

/// The id of the program under the pinned link of eth0.
fn link_program(bpffs: &Bpffs) -> anyhow::Result<u32> {
    let link = aya::programs::links::PinnedLink::from_pin(bpffs.pins("eth0").join("link"))
        .context("opening the pinned link")?;
    let fd: aya::programs::links::FdLink = link.into();
    Ok(fd.info()?.program_id())
}

/// `xlb --socket SOCKET run --config FILE --state-dir STATE --bpffs ..
/// EXTRA..` in the LB namespace, to its exit (at most 20 s: a start that
/// goes on running is a failure).
fn run_once(
    bed: &Testbed,
    socket: &Path,
    file: &Path,
    state: &Path,
    bpffs: &Bpffs,
    extra: &[&str],
) -> anyhow::Result<Output> {
    run_in(&bed.lb.ns.name, socket, file, state, bpffs, extra)
}

/// `run_once` in namespace `ns`.
fn run_in(
    ns: &str,
    socket: &Path,
    file: &Path,
    state: &Path,
    bpffs: &Bpffs,
    extra: &[&str],
) -> anyhow::Result<Output> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(xlb_binary()?)
        .arg("--socket")
        .arg(socket)
        .args(["run", "--config"])
        .arg(file)
        .arg("--state-dir")
        .arg(state)
        .args(["--bpffs", bpffs.arg(), "--bake-window", "0s"])
        .args(extra)
        .stdin(Stdio::null());
    run_to_exit(cmd, Duration::from_secs(20))
}

/// The start exited 2 and said `needles`.
fn refused(out: &Output, needles: &[&str], what: &str) -> anyhow::Result<()> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(2),
        "{what}: exit {:?}, want 2: {stderr}",
        out.status.code()
    );
    for n in needles {
        ensure!(stderr.contains(n), "{what}: no {n:?} in: {stderr}");
    }
    eprintln!(
        "{what}: exit 2: {}",
        stderr
            .lines()
            .rfind(|l| l.starts_with("xlb: "))
            .unwrap_or("")
    );
    Ok(())
}

fn xdp_attached(bed: &Testbed) -> anyhow::Result<bool> {
    Ok(bed.lb.ns.ip(&["link", "show", "eth0"])?.contains("xdp"))
}

fn forwards(bed: &Testbed) -> bool {
    let target = SocketAddr::new(VIP4.into(), TCP_PORT);
    tests::netns::Netns::in_named(&bed.client.ns.name, move || {
        Ok(probe(target, Duration::from_secs(1)))
    })
    .is_ok_and(|r| r.is_ok())
}

/// Revision files in a state directory.
fn revisions(state: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state.join("revisions"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_second_daemon_is_refused_before_it_touches_anything() {
    tests::require_privileges!();
    tests::in_workdir("start-second", second);
}

fn second(dir: &Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xlbst-2", 2)?;
    let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
    let _servers = EchoServers::start(&bed.backends, TCP_PORT)?;
    let file = dir.join("xlb.toml");
    std::fs::write(&file, testbed::config(&[1, 1]))?;
    let first = Daemon::start_with(
        &bed.lb.ns,
        &file,
        dir,
        &["--bpffs", bpffs.arg(), "--bake-window", "0s"],
    )?;
    ensure!(forwards(&bed), "no forwarding after the first start");
    let program = link_program(&bpffs)?;
    let state = dir.join("state");
    let before = revisions(&state);
    let pid = format!("pid {}", first.pid());
    let socket = first.socket.display().to_string();
    // Another socket and metrics address: only the lock can stop it.
    let other = ["--metrics-address", "127.0.0.1:9471"];

    let out = run_once(&bed, &dir.join("b.sock"), &file, &state, &bpffs, &other)?;
    refused(
        &out,
        &[&pid, &socket, "state directory"],
        "same state directory",
    )?;
    // Another state directory and another bpffs: the same interface.
    let state2 = dir.join("state2");
    let bpffs2 = Bpffs::mount(&dir.join("bpffs2"))?;
    let out = run_once(&bed, &dir.join("c.sock"), &file, &state2, &bpffs2, &other)?;
    refused(
        &out,
        &[&pid, &socket, "eth0 in this network namespace"],
        "same interface, another bpffs",
    )?;
    // The same pins from another namespace's eth0 (the client's).
    let out = run_in(
        &bed.client.ns.name,
        &dir.join("d.sock"),
        &file,
        &state2,
        &bpffs,
        &other,
    )?;
    refused(
        &out,
        &[&pid, &socket, "its pins"],
        "same pins, another namespace",
    )?;

    ensure!(
        link_program(&bpffs)? == program,
        "a refused daemon replaced the program under the link"
    );
    ensure!(
        revisions(&state) == before,
        "a refused daemon changed the first one's store: {before:?} -> {:?}",
        revisions(&state)
    );
    ensure!(
        revisions(&state2).is_empty(),
        "a refused daemon recorded revisions: {:?}",
        revisions(&state2)
    );
    ensure!(
        first.status()?["revision"] == serde_json::json!(1),
        "the first daemon's revision moved"
    );
    ensure!(forwards(&bed), "forwarding stopped");
    Ok(())
}

#[test]
fn a_start_that_fails_late_leaves_forwarding_as_it_was() {
    tests::require_privileges!();
    tests::in_workdir("start-late", late);
}

/// Hold `address` in the LB namespace (a metrics port in use).
fn occupy(bed: &Testbed, address: &str) -> anyhow::Result<TcpListener> {
    let address: SocketAddr = address.parse()?;
    bed.lb
        .ns
        .spawn(move || Ok(TcpListener::bind(address)?))
        .join()
        .map_err(|_| anyhow::anyhow!("bind panicked"))?
}

/// A read-only bind mount of a directory, undone on drop.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn mount(dir: &Path) -> anyhow::Result<Self> {
        let d = dir.to_str().context("path")?;
        tests::netns::sh(&["mount", "--bind", d, d])?;
        let guard = ReadOnly(dir.to_path_buf());
        tests::netns::sh(&["mount", "-o", "remount,bind,ro", d])?;
        Ok(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn late(dir: &Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xlbst-l", 2)?;
    let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
    let _servers = EchoServers::start(&bed.backends, TCP_PORT)?;
    let file = dir.join("xlb.toml");
    std::fs::write(&file, testbed::config(&[1, 1]))?;
    let socket = dir.join("xlb.sock");
    let state = dir.join("state");

    // A fresh interface: the failed start attaches nothing, pins nothing.
    {
        let _port = occupy(&bed, METRICS)?;
        let out = run_once(&bed, &socket, &file, &state, &bpffs, &[])?;
        refused(&out, &["metrics address", METRICS], "fresh, metrics in use")?;
        ensure!(
            !xdp_attached(&bed)?,
            "a refused start left a program on eth0"
        );
        let pinned: Vec<_> = std::fs::read_dir(bpffs.pins("eth0"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        ensure!(pinned.is_empty(), "a refused start pinned {pinned:?}");
        ensure!(revisions(&state).is_empty(), "a refused start recorded");
    }

    // A daemon serves, then stops: its program forwards from the pins.
    let mut daemon = Daemon::start_with(
        &bed.lb.ns,
        &file,
        dir,
        &["--bpffs", bpffs.arg(), "--bake-window", "0s"],
    )?;
    let revision = daemon.status()?["revision"].clone();
    ensure!(daemon.stop()?.success(), "xlb run did not exit 0");
    let program = link_program(&bpffs)?;
    ensure!(forwards(&bed), "no forwarding after SIGTERM");
    let kept = revisions(&state);

    let unchanged = |what: &str| -> anyhow::Result<()> {
        ensure!(
            link_program(&bpffs)? == program,
            "{what}: the program under the link was replaced"
        );
        ensure!(forwards(&bed), "{what}: forwarding stopped");
        ensure!(
            revisions(&state) == kept,
            "{what}: the store changed: {:?}",
            revisions(&state)
        );
        Ok(())
    };

    {
        let _port = occupy(&bed, METRICS)?;
        let out = run_once(&bed, &socket, &file, &state, &bpffs, &[])?;
        refused(&out, &["metrics address"], "metrics in use")?;
        unchanged("metrics in use")?;
    }

    let broken = dir.join("state-audit");
    std::fs::create_dir_all(broken.join("audit.log"))?;
    let out = run_once(&bed, &socket, &file, &broken, &bpffs, &[])?;
    refused(&out, &["audit log"], "audit log a directory")?;
    unchanged("audit log a directory")?;

    let read_only = dir.join("state-ro");
    std::fs::create_dir_all(&read_only)?;
    {
        let _ro = ReadOnly::mount(&read_only)?;
        let out = run_once(&bed, &socket, &file, &read_only, &bpffs, &[])?;
        refused(
            &out,
            &["Read-only file system"],
            "read-only state directory",
        )?;
        unchanged("read-only state directory")?;
    }

    let missing = dir.join("missing.toml");
    std::fs::write(
        &missing,
        testbed::config(&[1, 1]).replace("interface = \"eth0\"", "interface = \"nope0\""),
    )?;
    let out = run_once(
        &bed,
        &socket,
        &missing,
        &dir.join("state-nope"),
        &bpffs,
        &[],
    )?;
    refused(&out, &["nope0"], "missing interface")?;
    unchanged("missing interface")?;

    // The next good start adopts the same revision.
    let daemon = Daemon::start_with(
        &bed.lb.ns,
        &file,
        dir,
        &["--bpffs", bpffs.arg(), "--bake-window", "0s"],
    )?;
    ensure!(
        daemon.status()?["revision"] == revision,
        "the revision moved across the refused starts"
    );
    Ok(())
}

#[test]
fn plan_against_a_revision_changes_nothing_in_the_store() {
    tests::in_workdir("start-plan-ro", |dir| {
        let config = testbed::config(&[1, 1]);
        let store_dir = dir.join("state/revisions");
        let mut store = xlb::store::Store::open(&store_dir, 10)?;
        store.record(&xlb_core::revision::Revision {
            schema_version: xlb_core::revision::SCHEMA_VERSION,
            number: 1,
            created_at_unix_seconds: 1_700_000_000.0,
            user: "ops".into(),
            message: None,
            config_file: "xlb.toml".into(),
            config_text: config.clone(),
            config_hash: xlb_core::revision::text_hash(&config),
            kind: xlb_core::revision::Kind::Startup,
            plan: None,
            outcome: xlb_core::revision::Outcome::Applied,
        })?;
        drop(store);
        // A running daemon's write in progress, and a torn file.
        std::fs::write(store_dir.join(".0000000002.json.tmp-4242"), "{ \"sch")?;
        std::fs::write(store_dir.join("0000000003.json"), "{ torn")?;
        let before = std::fs::read_dir(&store_dir)?
            .flatten()
            .map(|e| e.file_name())
            .collect::<std::collections::BTreeSet<_>>();
        let file = dir.join("new.toml");
        std::fs::write(&file, testbed::config(&[2, 1]))?;
        let out = Command::new(xlb_binary()?)
            .args(["plan", "--revision", "1", "--state-dir"])
            .arg(dir.join("state"))
            .arg(&file)
            .output()?;
        ensure!(
            out.status.success(),
            "xlb plan --revision 1: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after = std::fs::read_dir(&store_dir)?
            .flatten()
            .map(|e| e.file_name())
            .collect::<std::collections::BTreeSet<_>>();
        ensure!(
            before == after,
            "xlb plan --revision changed the store: {before:?} -> {after:?}"
        );
        Ok(())
    });
}

/// `KEY=VALUE` of the unit (the last one wins, as in systemd).
fn unit_value(key: &str) -> Option<String> {
    tests::confine::UNIT
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .next_back()
}

/// A systemd time span ("5s", "5min", "20min", "0", "1h") in seconds.
fn seconds(span: &str) -> anyhow::Result<f64> {
    let (number, unit) = span
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((span, ""), |i| span.split_at(i));
    let n: f64 = number
        .parse()
        .with_context(|| format!("time span {span}"))?;
    Ok(n * match unit {
        "" | "s" | "sec" => 1.0,
        "min" | "m" => 60.0,
        "h" => 3600.0,
        "ms" => 0.001,
        u => bail!("unit {u} in {span}"),
    })
}

/// The start times of `n` failed starts in a row (each taking no time, the
/// worst case): systemd's delay before restart k (from 0) is RestartSec
/// while RestartSteps is unset, else RestartSec * (max / RestartSec)^(k /
/// steps), at most max (systemd.service(5), systemd >= 254).
fn schedule(n: usize, sec: f64, steps: Option<(u32, f64)>) -> Vec<f64> {
    let mut at = vec![0.0];
    for k in 0..n - 1 {
        let delay = match steps {
            None => sec,
            Some((steps, max)) => {
                let k = (k as u32).min(steps) as f64;
                (sec * (max / sec).powf(k / steps as f64)).min(max)
            }
        };
        at.push(at.last().unwrap() + delay);
    }
    at
}

/// The most starts any window of `interval` seconds holds.
fn most_in_window(at: &[f64], interval: f64) -> usize {
    (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| **t < at[i] + interval)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn the_unit_backs_off_instead_of_spinning() {
    let value = |k: &str| unit_value(k).with_context(|| format!("no {k}= in the unit"));
    let check = || -> anyhow::Result<()> {
        ensure!(value("Restart")? == "on-failure", "Restart=");
        let sec = seconds(&value("RestartSec")?)?;
        ensure!(sec >= 2.0, "RestartSec={sec}s: restarts spin");
        let steps: u32 = value("RestartSteps")?.parse()?;
        let max = seconds(&value("RestartMaxDelaySec")?)?;
        ensure!(
            steps >= 1 && max >= 60.0,
            "no backoff to a minute or more: RestartSteps={steps}, RestartMaxDelaySec={max}s"
        );
        let interval = seconds(&value("StartLimitIntervalSec")?)?;
        let burst: usize = value("StartLimitBurst")?.parse()?;
        ensure!(interval > 0.0, "StartLimitIntervalSec=0: no start limit");
        // With the backoff (systemd >= 254) the limit never stops it: it
        // keeps trying, ever more slowly.
        let backoff = schedule(200, sec, Some((steps, max)));
        let most = most_in_window(&backoff, interval);
        ensure!(
            most < burst,
            "with the backoff, {most} starts fall in {interval}s: the start limit ({burst}) gives up"
        );
        ensure!(
            backoff[steps as usize + 1] - backoff[steps as usize] >= max * 0.99,
            "the backoff does not reach RestartMaxDelaySec"
        );
        // At a fixed RestartSec (older systemd) it stops after `burst`
        // starts instead of spinning for ever.
        let fixed = schedule(200, sec, None);
        ensure!(
            most_in_window(&fixed, interval) > burst,
            "at a fixed RestartSec the start limit never stops it"
        );
        eprintln!(
            "restarts at {:?} s (then every {max} s); at most {most} in {interval} s < {burst}",
            backoff[..steps as usize + 2]
                .iter()
                .map(|t| t.round())
                .collect::<Vec<_>>()
        );
        Ok(())
    };
    check().unwrap();
}
