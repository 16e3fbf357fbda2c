//! `xlb fleet status` over 100 nodes x 1,000 VIPs (issue 14): simulated
//! nodes on 127.0.0.1, each serving a canned `/api/status` document. The
//! documents are real: the balancer loaded (no interface attached) with
//! 1,000 VIPs of 8 backends, then of 64 (the project's declared scale,
//! support/scale.rs), `Controller::status()` serialized. 99 nodes serve the
//! same document; the last one serves the status of the same config with
//! another `hash_seed`, so every VIP has one differing node and its share of
//! flows elsewhere is computed (the expensive path).
//!
//! Measured: the whole command (the release `xlb -o json fleet status
//! URL x 100`, wall time, stdout to /dev/null; its exit code and first
//! error line when it fails), and its parts as the CLI does them
//! (lb-userspace/src/cli/fleet.rs): fetching the 100 bodies one after
//! another, parsing them, comparing (`xlb_core::fleet::agreement`).
//! Medians. Needs root (loading the balancer).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use support::scale::{self, VIPS};
use xlb_core::change::{ApplyOptions, Candidate, Origin};
use xlb_core::fleet::{Decision, agreement};
use xlb_core::revision::Kind;
use xlb_core::status::Status;

/// The daemon's allocator, as in the other control-plane benches.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: usize = 100;
const RUNS: usize = 3;

/// The status document of the scale config with `backends` backends per
/// VIP and `hash_seed`, as the daemon serves it.
fn document(backends: usize, hash_seed: u32) -> anyhow::Result<Vec<u8>> {
    let text = scale::config_of(
        &format!("interface = \"lo\"\nhash_seed = {hash_seed}\nicmp_echo = \"pass\"\n"),
        1,
        backends,
    );
    let candidate = Candidate::parse(text, "bench.toml", Origin::default())?;
    let dataplane = xlb_dataplane::Dataplane::load().context("loading the balancer")?;
    let metrics = Arc::new(xlb::daemon::metrics::Metrics::new());
    let mut controller = xlb::daemon::controller::Controller::new(
        dataplane,
        "lo".into(),
        [2, 0, 0, 0, 0, 1],
        metrics,
    );
    controller.apply(candidate, ApplyOptions::unchecked(Kind::Apply))?;
    Ok(serde_json::to_vec(&controller.status()?)?)
}

/// An HTTP/1.1 server on 127.0.0.1 (a free port) answering every request
/// with `body`, one connection at a time, until `stop`.
fn serve(body: Arc<Vec<u8>>, stop: Arc<AtomicBool>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(&stream);
            // The request line and headers, up to the blank line.
            let mut line = String::new();
            for _ in 0..100 {
                line.clear();
                if reader.read_line(&mut line).map_or(true, |n| n == 0) || line == "\r\n" {
                    break;
                }
            }
            let header = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let mut w = &stream;
            let _ = w
                .write_all(header.as_bytes())
                .and_then(|()| w.write_all(&body));
        }
    });
    Ok(addr)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    if !support::root("fleet_status") {
        return Ok(());
    }
    for backends in [8, 64] {
        fleet(backends)?;
    }
    Ok(())
}

/// One size: 100 nodes x 1,000 VIPs x `backends`.
fn fleet(backends: usize) -> anyhow::Result<()> {
    let t = Instant::now();
    let same = Arc::new(document(backends, 1)?);
    let other = Arc::new(document(backends, 2)?);
    println!(
        "\nfleet_status: {NODES} nodes x {VIPS} VIPs x {backends} backends; status document {} KiB \
         (built in {:?}); load {}",
        same.len() / 1024,
        t.elapsed(),
        support::load_average()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut urls = Vec::new();
    for n in 0..NODES {
        let body = if n + 1 == NODES { &other } else { &same };
        urls.push(format!("http://{}", serve(body.clone(), stop.clone())?));
    }

    // The whole command.
    let xlb = tests::xlbd::xlb_binary()?;
    let mut whole = Vec::new();
    let mut outcome = String::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new(&xlb)
            .args(["-o", "json", "fleet", "status"])
            .args(&urls)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        whole.push(t.elapsed());
        let stderr = String::from_utf8_lossy(&out.stderr);
        outcome = format!(
            "exit {:?}{}",
            out.status.code(),
            // The refusal names every VIP on one line: its start says enough.
            stderr
                .lines()
                .next()
                .map(|l| format!(": {}", l.chars().take(120).collect::<String>()))
                .unwrap_or_default()
        );
    }
    println!(
        "xlb fleet status, whole command: median {:?} of {RUNS} runs ({outcome}; exit 1 is \
         the expected answer: one node on another seed)",
        median(whole)
    );

    // Its parts, as the CLI does them: one node after another, each body
    // dropped once parsed (as there), the time of each step summed.
    let (mut fetch, mut parse, mut compare) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (mut fetching, mut parsing) = (Duration::ZERO, Duration::ZERO);
        let mut nodes: Vec<(String, BTreeMap<String, Decision>)> = Vec::new();
        for u in &urls {
            let t = Instant::now();
            let mut body = String::new();
            ureq::get(&format!("{u}/api/status"))
                .call()?
                .into_reader()
                .read_to_string(&mut body)?;
            fetching += t.elapsed();
            let t = Instant::now();
            let s: Status = serde_json::from_str(&body)?;
            let d = s
                .vips
                .into_iter()
                .filter_map(|v| {
                    v.decision
                        .map(|d| (v.name, std::sync::Arc::unwrap_or_clone(d)))
                })
                .collect();
            nodes.push((u.clone(), d));
            parsing += t.elapsed();
        }
        fetch.push(fetching);
        parse.push(parsing);
        let t = Instant::now();
        let vips = std::hint::black_box(agreement(&nodes));
        compare.push(t.elapsed());
        ensure!(vips.len() == VIPS && vips.iter().all(|v| v.differing.len() == 1));
    }
    stop.store(true, Ordering::Relaxed);
    println!(
        "  parts: fetch 100 bodies ({} MiB in all): {:?}; parse: {:?}; compare (1,000 VIPs, one \
         differing node each): {:?}",
        same.len() * NODES / (1 << 20),
        median(fetch),
        median(parse),
        median(compare)
    );
    Ok(())
}
