//! `cargo xtask demo`: the example config on a namespace testbed, and the
//! product's point in a few steps. Client, xlb host and three backends
//! (weights 1:1:2, b1 declares capacity 1) on a bridge; the real `xlb`
//! daemon on the xlb host; steady TCP and UDP traffic at a rate the
//! detector judges (hundreds of new flows a second, for the whole demo).
//!
//! 1. `xlb status` once the detector's window is full and the connection
//!    table has been counted: every VIP judged, a true flow count.
//! 2. A bad weight change (web: b1 1 -> 8, about 80% of new flows against
//!    a 25% capacity share): `xlb plan` refuses it (exit 1).
//! 3. Forced through with `xlb apply --force --wait`: the bake sees the
//!    skew and the daemon rolls it back on its own (exit 1, ROLLED BACK).
//! 4. `xlb history`: the start, the forced change, the automatic rollback.
//!
//! Everything it makes is removed at the end, also on Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{SigHandler, Signal, signal};
use tests::client::{Exchange, Proto, Tally, drive_paced};
use tests::servers::Servers;
use tests::testbed::{TCP_PORT, Testbed, UDP_PORT};
use tests::xlbd::Daemon;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// The detector's window in the demo's config (the example's default is
/// 10 s): judged sooner, and a bad change is seen within a few seconds.
const WINDOW: &str = "3s";
/// How long the traffic runs before the first `xlb status`: more than the
/// window and the connection table's count (every 10 s).
const WARM_UP: Duration = Duration::from_secs(12);
/// The traffic, per target: new connections (or UDP exchanges) a second.
const TCP_RATE: u32 = 150;
const UDP_RATE: u32 = 60;
/// The traffic's bound, whatever happens.
const MAX_SECONDS: u64 = 180;

fn main() -> anyhow::Result<()> {
    // It makes network namespaces and loads XDP programs.
    tests::privileges::check("the demo")?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        signal(Signal::SIGINT, SigHandler::Handler(on_signal))?;
        signal(Signal::SIGTERM, SigHandler::Handler(on_signal))?;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/xlb.toml")
        .canonicalize()?;
    let dir = std::env::temp_dir().join(format!("xlb-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = demo(&example, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    println!("\ndemo: removed the namespaces and files it made");
    result
}

/// The example with a shorter detector window, and the bad change: web's
/// b1 from weight 1 to 8.
fn configs(example: &Path, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let text = std::fs::read_to_string(example)?;
    let at = text
        .find("\n[[vip]]")
        .context("examples/xlb.toml has no [[vip]]")?;
    let text = format!(
        "{}\n[imbalance]\nwindow = \"{WINDOW}\"\n{}",
        &text[..at],
        &text[at..]
    );
    // web's first backend is b1 with `weight = 1`.
    let web = text.find("name = \"web\"").context("no VIP web")?;
    let b1 = web
        + text[web..]
            .find("weight = 1\n")
            .context("no weight for b1")?;
    let bad = format!(
        "{}weight = 8\n{}",
        &text[..b1],
        &text[b1 + "weight = 1\n".len()..]
    );
    let (good_path, bad_path) = (dir.join("xlb.toml"), dir.join("xlb-b1-heavy.toml"));
    std::fs::write(&good_path, text)?;
    std::fs::write(&bad_path, bad)?;
    Ok((good_path, bad_path))
}

/// Show an `xlb` command and its output, as in a terminal.
fn show(daemon: &Daemon, args: &[&str]) -> anyhow::Result<std::process::Output> {
    println!("\n$ xlb {}\n", args.join(" "));
    let out = daemon.xlb(args)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    print!("{}", String::from_utf8_lossy(&out.stderr));
    if let Some(code) = out.status.code().filter(|c| *c != 0) {
        println!("(exit {code})");
    }
    Ok(out)
}

/// Sleep `d` unless interrupted; false when interrupted.
fn wait(d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

fn demo(example: &Path, dir: &Path) -> anyhow::Result<()> {
    let (config, bad) = configs(example, dir)?;
    println!(
        "demo: building the testbed: client, xlb host, backends b1 b2 b3 on a bridge (namespaces xlbdemo-*)"
    );
    let bed = Testbed::new("xlbdemo", 3).context("building the testbed")?;
    let _servers = Servers::start(&bed)?;
    println!(
        "demo: starting `xlb run --config {}` on the xlb host (examples/xlb.toml, detector window {WINDOW}), baking each change for 20 s",
        example.display()
    );
    let daemon = Daemon::start_with(
        &bed.lb.ns,
        &config,
        dir,
        &["--bake-window", "20s", "--bake-hold", "2s"],
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    let runs = [
        (
            "TCP over IPv4",
            Testbed::vip(false),
            TCP_PORT,
            Proto::Tcp,
            TCP_RATE,
        ),
        (
            "UDP over IPv4",
            Testbed::vip(false),
            UDP_PORT,
            Proto::Udp,
            UDP_RATE,
        ),
        (
            "TCP over IPv6",
            Testbed::vip(true),
            TCP_PORT,
            Proto::Tcp,
            TCP_RATE,
        ),
    ];
    println!(
        "demo: traffic from the client for the whole demo: {}",
        runs.iter()
            .map(|(what, _, _, _, rate)| format!("{what} at {rate}/s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let traffic: Vec<_> = runs
        .iter()
        .map(|&(_, ip, port, proto, rate)| {
            let (client, stop) = (bed.client.ns.handle(), stop.clone());
            std::thread::spawn(move || {
                drive_paced(
                    &client,
                    SocketAddr::new(ip, port),
                    proto,
                    rate,
                    stop,
                    MAX_SECONDS,
                )
            })
        })
        .collect();

    let story = (|| -> anyhow::Result<()> {
        println!(
            "demo: waiting {WARM_UP:?}: the detector judges a full window, the connection table is counted"
        );
        if !wait(WARM_UP) {
            return Ok(());
        }
        show(&daemon, &["status"])?;

        println!("\ndemo: a bad change: web's b1 from weight 1 to 8 (its capacity share is 25%)");
        let bad = bad.display().to_string();
        let plan = show(&daemon, &["plan", &bad])?;
        if plan.status.code() != Some(1) {
            bail!(
                "`xlb plan` did not refuse the bad change (exit {:?})",
                plan.status.code()
            );
        }
        println!("\ndemo: forced through anyway; the bake watches the traffic split");
        let applied = show(
            &daemon,
            &[
                "apply",
                &bad,
                "--force",
                "--wait",
                "-m",
                "b1 is the new box",
            ],
        )?;
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Ok(());
        }
        if applied.status.code() != Some(1) {
            bail!(
                "the daemon did not roll the bad change back (exit {:?})",
                applied.status.code()
            );
        }
        show(&daemon, &["history"])?;
        Ok(())
    })();

    stop.store(true, Ordering::Relaxed);
    println!();
    for ((what, ip, port, _, _), handle) in runs.iter().zip(traffic) {
        let exchanges: Vec<Exchange> = handle.join().expect("traffic thread");
        let tally = Tally::of(&exchanges);
        let split: Vec<String> = tally
            .per_backend
            .iter()
            .map(|(b, n)| {
                format!(
                    "{b} {:.1}%",
                    100.0 * *n as f64 / tally.total_ok().max(1) as f64
                )
            })
            .collect();
        println!(
            "demo: {what} to {}: {} exchanges, {} failed; answered by {}",
            SocketAddr::new(*ip, *port),
            exchanges.len(),
            tally.failures.len(),
            split.join(", ")
        );
    }
    if INTERRUPTED.load(Ordering::Relaxed) {
        println!("demo: interrupted; cleaning up");
    }
    story
}
