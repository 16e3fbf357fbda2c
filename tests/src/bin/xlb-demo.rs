//! `cargo xtask demo`: the example config on a namespace testbed. Client,
//! xlb host and three backends (weights 1:1:2) on a bridge; the real `xlb`
//! daemon on the xlb host; a few thousand real TCP and UDP exchanges; then
//! `xlb status`. Everything it makes is removed at the end, also on Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{SigHandler, Signal, signal};
use tests::client::{Proto, Tally, Until, drive};
use tests::servers::Servers;
use tests::testbed::{TCP_PORT, Testbed, UDP_PORT};
use tests::xlbd::Daemon;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn main() -> anyhow::Result<()> {
    // It makes network namespaces and loads XDP programs.
    tests::privileges::check("the demo")?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        signal(Signal::SIGINT, SigHandler::Handler(on_signal))?;
        signal(Signal::SIGTERM, SigHandler::Handler(on_signal))?;
    }
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/xlb.toml")
        .canonicalize()?;
    let dir = std::env::temp_dir().join(format!("xlb-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = demo(&config, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    println!("\ndemo: removed the namespaces and files it made");
    result
}

fn demo(config: &Path, dir: &Path) -> anyhow::Result<()> {
    println!(
        "demo: building the testbed: client, xlb host, backends b1 b2 b3 on a bridge (namespaces xlbdemo-*)"
    );
    let bed = Testbed::new("xlbdemo", 3).context("building the testbed")?;
    let _servers = Servers::start(&bed)?;
    println!(
        "demo: starting `xlb run --config {}` on the xlb host",
        config.display()
    );
    let daemon = Daemon::start(&bed.lb.ns, config, dir)?;

    // Ctrl-C stops the traffic; dropping the testbed then removes everything.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if INTERRUPTED.load(Ordering::Relaxed) {
                    stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let runs = [
        (
            "TCP over IPv4",
            SocketAddr::new(Testbed::vip(false), TCP_PORT),
            Proto::Tcp,
            3000,
        ),
        (
            "UDP over IPv4",
            SocketAddr::new(Testbed::vip(false), UDP_PORT),
            Proto::Udp,
            2000,
        ),
        (
            "TCP over IPv6",
            SocketAddr::new(Testbed::vip(true), TCP_PORT),
            Proto::Tcp,
            2000,
        ),
    ];
    for (what, target, proto, count) in runs {
        let t0 = Instant::now();
        let exchanges = drive(
            &bed.client.ns,
            target,
            proto,
            8,
            Until::Flag(stop.clone(), count),
        );
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
            "demo: {what} to {target}: {} exchanges in {:.1}s, {} failed; answered by {}",
            exchanges.len(),
            t0.elapsed().as_secs_f64(),
            tally.failures.len(),
            split.join(", ")
        );
        if INTERRUPTED.load(Ordering::Relaxed) {
            println!("demo: interrupted; cleaning up");
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();

    println!("\n$ xlb status\n");
    let out = daemon.xlb(&["status"])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
