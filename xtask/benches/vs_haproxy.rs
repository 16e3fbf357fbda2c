//! New TCP connections per second through xlb beside HAProxy (TCP mode) on
//! the namespace testbed of the end-to-end tests (tests/src/testbed.rs):
//! client, LB and three backends on a bridge.
//!
//! Each connection: connect to the VIP, write a line, read the backend's
//! answer to EOF (the backend closes), close. The client is closed-loop:
//! `WORKERS` threads in the client namespace, each doing one connection after
//! another for `RUN_TIME`; completions and errors counted. The same client
//! and backends serve both runs:
//! - xlb: the balancer attached natively to the LB's eth0, L2 direct server
//!   return (backends answer the client themselves);
//! - HAProxy: `mode tcp`, `balance roundrobin`, listening on the VIP (held on
//!   the LB's lo), the backends by their own addresses; both halves of every
//!   connection go through its process.
//!
//! Runs interleaved (xlb, HAProxy, xlb, ...), `RUNS` of each, medians. The
//! machine has 2 cores shared by the client, the backends and the balancer,
//! so the rate is mostly the client's and the backends' limit. Beside it, the
//! balancer's own CPU time per connection, which says how many connections
//! a core given to the balancer would carry: for xlb the run time of its XDP
//! program (the kernel's BPF run-time statistics, on during xlb's runs only);
//! for HAProxy its process's user + system time (its sockets' softirq work
//! is not in it: a lower bound). Softirq time of the whole machine is shown
//! too.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use tests::client::{Proto, Tally, Until, drive};
use tests::servers::Servers;
use tests::testbed::{self, LB_MAC, TCP_PORT, Testbed, VIP4};
use tests::{cpu_time, haproxy::Haproxy};

const RUNS: usize = 5;
const RUN_TIME: Duration = Duration::from_secs(4);
const WORKERS: usize = 16;
const BACKENDS: usize = 3;
/// Bounds a run in count as well as time.
const MAX_CONNECTIONS_PER_RUN: usize = 1_000_000;
/// Issue 6: xlb must carry at least this times HAProxy's connections per second.
const GOAL: f64 = 5.0;

/// One measured run.
struct Run {
    completed: u64,
    errors: usize,
    first_error: Option<String>,
    time: Duration,
    /// Softirq CPU time over the run, all CPUs.
    softirq: Duration,
    /// The balancer's own CPU time over the run: xlb's XDP program run
    /// time, or HAProxy's process time.
    lb_cpu: Duration,
    /// Runs of xlb's XDP program over the run (xlb runs only).
    xdp_runs: u64,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.completed as f64 / self.time.as_secs_f64()
    }

    /// The balancer's CPU time per completed connection.
    fn lb_cpu_per_connection(&self) -> Duration {
        self.lb_cpu / self.completed.max(1) as u32
    }
}

/// Drive connections to the VIP for `RUN_TIME`.
fn drive_connections(bed: &Testbed) -> anyhow::Result<Run> {
    let target = SocketAddr::from((VIP4, TCP_PORT));
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(RUN_TIME);
            stop.store(true, Ordering::Relaxed);
        })
    };
    let softirq_before = cpu_time::softirq()?;
    let start = Instant::now();
    let exchanges = drive(
        &bed.client.ns,
        target,
        Proto::Tcp,
        WORKERS,
        Until::Flag(stop, MAX_CONNECTIONS_PER_RUN),
    );
    let time = start.elapsed();
    let softirq = cpu_time::softirq()? - softirq_before;
    timer.join().expect("timer thread");
    let tally = Tally::of(&exchanges);
    Ok(Run {
        completed: tally.total_ok(),
        errors: tally.failures.len(),
        first_error: tally.failures.first().cloned(),
        time,
        softirq,
        lb_cpu: Duration::ZERO,
        xdp_runs: 0,
    })
}

fn run_xlb(bed: &Testbed) -> anyhow::Result<Run> {
    let mac: [u8; 6] = parse_mac(LB_MAC)?;
    let config = xlb_core::config::parse(&testbed::config(&[1; BACKENDS]), "vs_haproxy.toml")?;
    let desired = xlb_core::state::desired(&config, &Default::default())?;
    // Load and attach from a thread in the LB's namespace (the interface is
    // found by name there); the attachment outlives the thread.
    let (dp, desired) = bed
        .lb
        .ns
        .spawn(move || {
            let mut dp = xlb_dataplane::Dataplane::load()?;
            dp.apply(mac, &desired, None)?;
            dp.attach("eth0", xlb_dataplane::AttachMode::Native)?;
            Ok((dp, desired))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("attaching xlb panicked"))??;
    // The kernel counts the program's run time while this is held.
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time statistics")?;
    let xdp_stats = || -> anyhow::Result<(Duration, u64)> {
        let info = dp.program().info()?;
        Ok((info.run_time(), info.run_count()))
    };
    let (time_before, runs_before) = xdp_stats()?;
    let mut run = drive_connections(bed)?;
    let (time_after, runs_after) = xdp_stats()?;
    drop(stats);
    run.lb_cpu = time_after - time_before;
    run.xdp_runs = runs_after - runs_before;
    let web = desired
        .vips
        .iter()
        .find(|v| v.config.name == "web")
        .context("no VIP web in the testbed's config")?;
    let counted = dp.vip_counters(web.id);
    // Every completed connection began with a SYN the balancer hashed.
    ensure!(
        counted.new_flows >= run.completed,
        "xlb counted {} new flows for {} completed connections: traffic went around it",
        counted.new_flows,
        run.completed
    );
    // Detaches the balancer: the next run is HAProxy's.
    drop(dp);
    Ok(run)
}

fn run_haproxy(bed: &Testbed, dir: &std::path::Path) -> anyhow::Result<Run> {
    let backends: Vec<SocketAddr> = bed
        .backends
        .iter()
        .map(|b| SocketAddr::from((b.v4, TCP_PORT)))
        .collect();
    let h = Haproxy::start(
        &bed.lb.ns,
        dir,
        SocketAddr::from((VIP4, TCP_PORT)),
        &backends,
    )?;
    let cpu_before = h.cpu_time()?;
    let mut run = drive_connections(bed)?;
    run.lb_cpu = h.cpu_time()? - cpu_before;
    Ok(run)
}

fn parse_mac(text: &str) -> anyhow::Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC {text}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC {text}: not 6 bytes"))
}

fn print_row(label: &str, runs: &[Run]) {
    let rates: Vec<f64> = runs.iter().map(Run::per_second).collect();
    let errors: usize = runs.iter().map(|r| r.errors).sum();
    let share = |d: Duration, r: &Run| d.as_secs_f64() / r.time.as_secs_f64() * 100.0;
    let softirq = support::median(runs.iter().map(|r| share(r.softirq, r)).collect());
    let lb_cpu = support::median_duration(runs.iter().map(Run::lb_cpu_per_connection).collect());
    println!(
        "{label:<8} {:>8.0} conn/s  errors {errors:>3}  balancer CPU {:>8.2} us/conn  \
         softirq {softirq:>5.1}% of a core  (runs: {})",
        support::median(rates.clone()),
        lb_cpu.as_secs_f64() * 1e6,
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let xdp_runs: u64 = runs.iter().map(|r| r.xdp_runs).sum();
    if xdp_runs > 0 {
        let completed: u64 = runs.iter().map(|r| r.completed).sum();
        let time: Duration = runs.iter().map(|r| r.lb_cpu).sum();
        println!(
            "         XDP program: {:.1} runs per connection, {:.0} ns per run (all runs)",
            xdp_runs as f64 / completed.max(1) as f64,
            time.as_nanos() as f64 / xdp_runs as f64
        );
    }
    if let Some(e) = runs.iter().find_map(|r| r.first_error.as_ref()) {
        println!("         first error: {e}");
    }
}

/// Build the testbed and run both balancers, interleaved: (xlb, HAProxy).
fn measure(dir: &std::path::Path) -> anyhow::Result<(Vec<Run>, Vec<Run>)> {
    let bed = Testbed::new("xlbbench-cps", BACKENDS)?;
    let _servers = Servers::start(&bed)?;
    // HAProxy listens on the VIP: the LB holds it. With xlb attached, VIP
    // frames are sent on by XDP before the stack sees them.
    bed.lb
        .ns
        .ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"])?;

    let mut xlb_runs = Vec::new();
    let mut haproxy_runs = Vec::new();
    for _ in 0..RUNS {
        xlb_runs.push(run_xlb(&bed)?);
        haproxy_runs.push(run_haproxy(&bed, dir)?);
    }
    Ok((xlb_runs, haproxy_runs))
}

fn main() -> anyhow::Result<()> {
    if !support::root("vs_haproxy") {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("xlbbench-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // HAProxy's config and log stay for a look when something failed.
    let (xlb_runs, haproxy_runs) =
        measure(&dir).with_context(|| format!("(files kept in {})", dir.display()))?;
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "new TCP connections per second, {WORKERS} closed-loop client workers, {BACKENDS} \
         backends, median of {RUNS} interleaved runs of {} s; {} CPUs shared by client, \
         backends and balancer; load average {}",
        RUN_TIME.as_secs(),
        support::online_cpus(),
        support::load_average()
    );
    print_row("xlb", &xlb_runs);
    print_row("HAProxy", &haproxy_runs);
    let x = support::median(xlb_runs.iter().map(Run::per_second).collect());
    let h = support::median(haproxy_runs.iter().map(Run::per_second).collect());
    let cpu = |runs: &[Run]| {
        support::median_duration(runs.iter().map(Run::lb_cpu_per_connection).collect())
            .as_secs_f64()
    };
    println!(
        "xlb/HAProxy: {:.2}x the connections per second on this testbed (goal >= {GOAL}); \
         {:.0}x the connections per second of balancer CPU",
        x / h,
        cpu(&haproxy_runs) / cpu(&xlb_runs)
    );
    Ok(())
}
