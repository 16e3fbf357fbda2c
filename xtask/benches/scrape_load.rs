//! The daemon under scrape load (issue 13, item 5): the real `xlb run`
//! at 1,000 VIPs x 64 backends, in a namespace of its own (interface `lo`),
//! measured idle and then with 1,000 idle HTTP connections plus 64
//! scrapers in a loop (`/metrics` and `/api/status`):
//!
//! - `xlb status` (the CLI, `-o json`, to /dev/null): wall time per call;
//! - `xlb apply --force` of a one-weight change: wall time per call;
//! - the collector tick: `xlb_collector_duration_seconds` (sum / count over
//!   the phase);
//! - the watchdog: the gaps between its WATCHDOG=1 messages (the bench is
//!   its NOTIFY_SOCKET, WATCHDOG_USEC=2 s, so a ping every second).
//!
//! Medians per phase. Needs root; `cargo xtask bench scrape_load` builds
//! the release `xlb` first. Addresses in 198.18.0.0/15; namespace
//! `xlbsl-*`.

mod support;

use std::io::Read as _;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use support::scale::{self, BACKENDS, VIPS};
use tests::netns::Netns;
use tests::xlbd::{Daemon, xlb_binary};

const METRICS: &str = "127.0.0.1:9470";
const IDLE_CONNECTIONS: usize = 1000;
const SCRAPERS: usize = 64;
/// Calls per phase.
const STATUS_CALLS: usize = 5;
const APPLY_CALLS: usize = 3;

/// The config; `weight` for the first backend of the first VIP. No ICMP
/// echo answered: the bench is about the control plane.
fn config(weight: u32) -> String {
    scale::config(
        "interface = \"lo\"\nhash_seed = 1\nicmp_echo = \"pass\"\n",
        weight,
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(daemon: &Daemon, args: &[&str]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = Command::new(xlb_binary()?)
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    ensure!(status.success(), "xlb {args:?}: {status}");
    Ok(started.elapsed())
}

/// Tries of the bench's own scrape: under load the daemon holds 256
/// connections (most of them the idle ones) and closes each one more at
/// once, so a scrape may be refused a few times before a slot frees.
const SCRAPE_TRIES: usize = 100;

/// (sum, count) of the collector histogram.
fn collector(ns: &Netns) -> anyhow::Result<(f64, f64)> {
    let text = ns
        .spawn(|| {
            let mut last = None;
            for _ in 0..SCRAPE_TRIES {
                // 33 MiB: more than ureq's into_string takes.
                let mut text = String::new();
                let got = ureq::get(&format!("http://{METRICS}/metrics"))
                    .timeout(Duration::from_secs(60))
                    .call()
                    .map_err(anyhow::Error::from)
                    .and_then(|r| Ok(r.into_reader().read_to_string(&mut text)?));
                match got {
                    Ok(_) => return Ok(text),
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(last
                .unwrap_or_else(|| anyhow::anyhow!("no try"))
                .context(format!("{SCRAPE_TRIES} scrapes of /metrics refused")))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("scrape panicked"))??;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        value("xlb_collector_duration_seconds_sum"),
        value("xlb_collector_duration_seconds_count"),
    ))
}

struct Figures {
    status: Duration,
    apply: Duration,
    tick: Duration,
    watchdog_max_gap: Duration,
}

fn phase(
    daemon: &Daemon,
    ns: &Netns,
    files: &[&Path; 2],
    pings: &Arc<std::sync::Mutex<Vec<Instant>>>,
) -> anyhow::Result<Figures> {
    let (sum0, count0) = collector(ns)?;
    pings.lock().unwrap().clear();
    let mut status = Vec::new();
    let mut apply = Vec::new();
    for i in 0..STATUS_CALLS.max(APPLY_CALLS) {
        if i < STATUS_CALLS {
            status.push(timed(daemon, &["-o", "json", "status"])?);
        }
        if i < APPLY_CALLS {
            let file = files[i % 2].to_str().unwrap();
            apply.push(timed(daemon, &["apply", "--force", file])?);
        }
    }
    let (sum1, count1) = collector(ns)?;
    let gaps: Vec<Duration> = pings
        .lock()
        .unwrap()
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    Ok(Figures {
        status: median(status),
        apply: median(apply),
        tick: Duration::from_secs_f64((sum1 - sum0) / (count1 - count0).max(1.0)),
        watchdog_max_gap: gaps.into_iter().max().unwrap_or_default(),
    })
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        println!("scrape_load: skipped (needs root: namespaces, XDP)");
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("xlb-scrape-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ns = Netns::new("xlbsl")?;
    ns.ip(&["link", "set", "lo", "up"])?;
    let files = [dir.join("a.toml"), dir.join("b.toml")];
    std::fs::write(&files[0], config(1))?;
    std::fs::write(&files[1], config(2))?;

    // The watchdog's pings come here.
    let notify = dir.join("notify.sock");
    let listener = UnixDatagram::bind(&notify)?;
    listener.set_read_timeout(Some(Duration::from_millis(200)))?;
    let pings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (pings, stop) = (pings.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = listener.recv(&mut buf)
                    && String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1")
                {
                    pings.lock().unwrap().push(Instant::now());
                }
            }
        })
    };

    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(xlb_binary()?)
        .arg("--socket")
        .arg(dir.join("xlb.sock"))
        .arg("run")
        .arg("--config")
        .arg(&files[0])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "2000000")
        .env("RUST_LOG", "warn");
    let started = Instant::now();
    let daemon = Daemon::spawn(cmd, &dir.join("xlb.sock"), &dir.join("xlb.log"))
        .context("starting the daemon at 1,000 VIPs x 64 backends")?;
    println!(
        "daemon up at {VIPS} VIPs x {BACKENDS} backends in {:?}",
        started.elapsed()
    );
    let files = [files[0].as_path(), files[1].as_path()];
    // Let the first ticks and the connection scan pass.
    std::thread::sleep(Duration::from_secs(3));

    let idle = phase(&daemon, &ns, &files, &pings)?;

    // The load: idle connections, then scrapers in a loop.
    let load_stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicUsize::new(0));
    let idle_conns = {
        let stop = load_stop.clone();
        ns.spawn(move || {
            let mut conns = Vec::new();
            for _ in 0..IDLE_CONNECTIONS {
                if let Ok(c) = TcpStream::connect(METRICS) {
                    conns.push(c);
                }
            }
            // Reconnect those the daemon closed (refused past the cap,
            // or timed out), so the load stays on.
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                for c in conns.iter_mut() {
                    c.set_nonblocking(true)?;
                    let mut b = [0u8; 1];
                    if matches!(c.read(&mut b), Ok(0))
                        && let Ok(n) = TcpStream::connect(METRICS)
                    {
                        *c = n;
                    }
                }
            }
            Ok(conns.len())
        })
    };
    let scrapers: Vec<_> = (0..SCRAPERS)
        .map(|i| {
            let (stop, scrapes) = (load_stop.clone(), scrapes.clone());
            ns.spawn(move || {
                let path = if i % 2 == 0 {
                    "/metrics"
                } else {
                    "/api/status"
                };
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = ureq::get(&format!("http://{METRICS}{path}"))
                        .timeout(Duration::from_secs(30))
                        .call()
                    {
                        let _ = std::io::copy(&mut r.into_reader(), &mut std::io::sink());
                        scrapes.fetch_add(1, Ordering::Relaxed);
                    } else {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let load_started = Instant::now();
    let loaded = phase(&daemon, &ns, &files, &pings)?;
    let served = scrapes.load(Ordering::Relaxed);
    let load_seconds = load_started.elapsed().as_secs_f64();
    load_stop.store(true, Ordering::Relaxed);
    for s in scrapers {
        let _ = s.join();
    }
    let _ = idle_conns.join();
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    drop(daemon);

    println!(
        "| | idle | {IDLE_CONNECTIONS} idle connections + {SCRAPERS} scrapers ({served} scrapes in {load_seconds:.0} s) | ratio |"
    );
    println!("|---|---|---|---|");
    for (what, a, b) in [
        (
            "`xlb status -o json` (median of 5)",
            idle.status,
            loaded.status,
        ),
        (
            "`xlb apply --force` (median of 3)",
            idle.apply,
            loaded.apply,
        ),
        ("collector tick (mean)", idle.tick, loaded.tick),
        (
            "watchdog: longest gap (period 1 s)",
            idle.watchdog_max_gap,
            loaded.watchdog_max_gap,
        ),
    ] {
        println!(
            "| {what} | {a:.1?} | {b:.1?} | {:.2} |",
            b.as_secs_f64() / a.as_secs_f64().max(1e-9)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
