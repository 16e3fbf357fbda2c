//! The control plane at its declared limits (issue 20): the real `xlb run`
//! (release) at 1,000 VIPs x 64 backends, table size 16,381, each VIP on an
//! address of its own and ICMP echo answered (the default), attached to a
//! veth in a namespace of its own; no traffic. Prints each figure of the
//! issue beside its goal:
//!
//! - start until the control socket answers (tables written by then);
//! - `xlb apply --force` of a change to every VIP, and of a file in which
//!   one VIP changed; `xlb plan` of either; one pool of backends serves
//!   every VIP (so their tables are alike), as in the issue;
//! - last, a daemon of its own started where each VIP has a pool of
//!   backends of its own (1,000 distinct tables to build), and the plan
//!   and the apply of a change to every VIP there;
//! - the daemon's RSS after `APPLIES` applies, and the kernel's memory for the
//!   maps it holds open (fdinfo `memlock`), apart;
//! - `xlb status`, `xlb status --vip NAME`, a `/metrics` scrape (gzip, as
//!   Prometheus asks, the body counted; and one uncompressed), idle and
//!   while 16 clients scrape `/metrics` with gzip in a loop, and under that
//!   load an apply of every VIP (the median of three, as without it);
//! - `xlb history` with the revisions those applies recorded.
//!
//! With `XLB_BENCH_CONTROL_RSS_ONLY=1` the run stops after the RSS and
//! map-memory rows (start, plans, applies, memory: about a minute), for
//! A/B runs of the daemon's memory.
//!
//! Wall times of the CLI (or of one HTTP GET), medians. Needs root;
//! `cargo xtask bench control` builds the release `xlb` first. Addresses
//! in 198.18.0.0/15; namespace `xlbctl-*`.
//!
//! `XLB_BENCH_CONTROL=status` measures the status and scrape rows only
//! (start, then `xlb status`, `--vip`, scrapes, idle and loaded; no plans,
//! applies or history), for profiling those: about a minute instead of
//! several.

mod support;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use support::median_duration;
use support::scale::{self, BACKENDS, Pools, VIPS};
use tests::netns::Netns;
use tests::xlbd::xlb_binary;

/// The table size: a prime with 256 slots per backend.
const TABLE_SIZE: u32 = 16381;
const METRICS: &str = "127.0.0.1:9470";
const SCRAPERS: usize = 16;
/// Applies made in all before the RSS is read (the 100: the one-VIP
/// applies that make up most of them take a fraction of a second now).
const APPLIES: usize = 100;
/// Calls per median.
const CALLS: usize = 5;
/// Applies of a change to every VIP (each one is the slowest call here).
const FULL_APPLIES: usize = 3;
/// How long the daemon may take to answer after its start.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The config: every VIP's first backend at `weight`, VIP 0's at `first`;
/// one pool of backends for all VIPs.
fn config(weight: u32, first: u32) -> String {
    config_of(weight, first, Pools::Shared)
}

/// [`config`] with the VIPs' backends named as `pools` says.
fn config_of(weight: u32, first: u32, pools: Pools) -> String {
    scale::text_of(
        "interface = \"eth0\"\nhash_seed = 1\n",
        VIPS,
        BACKENDS,
        TABLE_SIZE,
        |v, b| match (v, b) {
            (0, 0) => first,
            (_, 0) => weight,
            _ => 1,
        },
        pools,
    )
}

/// `n` applies of `changed` and `base` by turns (each counted in
/// `applies`); the median of their times.
fn by_turns(
    daemon: &Daemon,
    changed: &str,
    base: &str,
    n: usize,
    applies: &mut usize,
) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let file = if i % 2 == 0 { changed } else { base };
        times.push(daemon.timed(&["apply", "--force", file])?);
        *applies += 1;
    }
    Ok(median_duration(times))
}

/// `xlb run`, killed on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// `xlb --socket SOCKET ARGS`, its input and errors discarded.
    fn command(&self, args: &[&str]) -> anyhow::Result<Command> {
        let mut command = Command::new(xlb_binary()?);
        command
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        Ok(command)
    }

    fn xlb(&self, args: &[&str]) -> anyhow::Result<std::process::ExitStatus> {
        Ok(self.command(args)?.stdout(Stdio::null()).status()?)
    }

    fn timed(&self, args: &[&str]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let status = self.xlb(args)?;
        ensure!(status.success(), "xlb {args:?}: {status}");
        Ok(started.elapsed())
    }

    fn median(&self, args: &[&str], calls: usize) -> anyhow::Result<Duration> {
        let times = (0..calls)
            .map(|_| self.timed(args))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(median_duration(times))
    }

    /// The bytes `xlb ARGS` writes to its standard output.
    fn output_len(&self, args: &[&str]) -> anyhow::Result<u64> {
        let out = self.command(args)?.output()?;
        ensure!(out.status.success(), "xlb {args:?}: {}", out.status);
        Ok(out.stdout.len() as u64)
    }

    /// Resident memory of the daemon, in bytes: `field` of
    /// /proc/PID/status (`VmRSS`, or `RssAnon`: its own heap, without the
    /// BPF arrays it maps, which are the kernel's memory).
    fn rss_of(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {field} in /proc/PID/status"))?;
        Ok(kb * 1024)
    }

    fn rss(&self) -> anyhow::Result<String> {
        Ok(format!(
            "{} ({} anonymous)",
            mb(self.rss_of("VmRSS")?),
            mb(self.rss_of("RssAnon")?)
        ))
    }

    /// The kernel memory of the BPF maps the daemon holds open (each map
    /// once), in bytes: the `memlock` of their fdinfo.
    fn map_memory(&self) -> anyhow::Result<u64> {
        let pid = self.child.id();
        let mut seen = std::collections::BTreeSet::new();
        let mut total = 0;
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
            let entry = entry?;
            let Ok(link) = std::fs::read_link(entry.path()) else {
                continue;
            };
            if link.to_string_lossy() != "anon_inode:bpf-map" {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:"))
                && seen.insert(id)
            {
                total += memlock;
            }
        }
        Ok(total)
    }
}

fn start(ns: &Netns, config: &Path, dir: &Path) -> anyhow::Result<(Daemon, Duration)> {
    let socket = dir.join("xlb.sock");
    let log = std::fs::File::create(dir.join("xlb.log"))?;
    let started = Instant::now();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(xlb_binary()?)
        .arg("--socket")
        .arg(&socket)
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting xlb run")?;
    let mut daemon = Daemon { child, socket };
    loop {
        if let Some(status) = daemon.child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("xlb.log")).unwrap_or_default();
            bail!("xlb run exited with {status}: {log}");
        }
        if daemon
            .xlb(&["status", "--vip", "vip0"])
            .is_ok_and(|s| s.success())
        {
            return Ok((daemon, started.elapsed()));
        }
        if started.elapsed() > START_TIMEOUT {
            bail!("xlb run did not answer within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Tries of one scrape: under scrape load the daemon may refuse a
/// connection past its cap or time out a request it had no time to read
/// (408); a client then tries again.
const SCRAPE_TRIES: usize = 20;

/// How a client asks for /metrics: with `Accept-Encoding: gzip` (as
/// Prometheus does) or without.
#[derive(Clone, Copy)]
enum Scrape {
    Gzip,
    Plain,
}

/// One GET of /metrics: the body's length as sent and, when `inflate`,
/// as read (the body inflated; else the length sent again). The timed
/// scrapes and the load count the body as sent, as the scrapes before
/// gzip read it: inflating it is the scraper's CPU, not the daemon's, and
/// 16 scrapers inflating on the daemon's two cores would measure them.
fn get_metrics(how: Scrape, inflate: bool) -> anyhow::Result<(u64, u64)> {
    let request = ureq::get(&format!("http://{METRICS}/metrics")).timeout(Duration::from_secs(60));
    let request = match how {
        Scrape::Gzip => request.set("Accept-Encoding", "gzip"),
        Scrape::Plain => request,
    };
    let response = request.call()?;
    let gzipped = response.header("Content-Encoding") == Some("gzip");
    let mut body = Vec::new();
    response.into_reader().read_to_end(&mut body)?;
    ensure!(
        gzipped == matches!(how, Scrape::Gzip),
        "asked {} and got Content-Encoding gzip: {gzipped}",
        match how {
            Scrape::Gzip => "gzip",
            Scrape::Plain => "no encoding",
        }
    );
    if !gzipped || !inflate {
        return Ok((body.len() as u64, body.len() as u64));
    }
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut text)?;
    ensure!(text.ends_with(b"# EOF\n"), "a scrape without its end");
    Ok((body.len() as u64, text.len() as u64))
}

/// One GET of /metrics from inside `ns`: its wall time, tries included.
fn scrape(ns: &Netns, how: Scrape) -> anyhow::Result<Duration> {
    ns.spawn(move || {
        let started = Instant::now();
        let mut last = None;
        for _ in 0..SCRAPE_TRIES {
            match get_metrics(how, false) {
                Ok((sent, _)) if sent > 0 => return Ok(started.elapsed()),
                Ok(_) => last = Some(anyhow::anyhow!("an empty scrape")),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("no try"))
            .context(format!("{SCRAPE_TRIES} tries of /metrics")))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("scrape panicked"))?
}

/// The length of one /metrics body, as sent and as read.
fn scrape_len(ns: &Netns, how: Scrape) -> anyhow::Result<(u64, u64)> {
    ns.spawn(move || get_metrics(how, true))
        .join()
        .map_err(|_| anyhow::anyhow!("scrape panicked"))?
}

fn scrapes(ns: &Netns, calls: usize, how: Scrape) -> anyhow::Result<Duration> {
    let times = (0..calls)
        .map(|_| scrape(ns, how))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(median_duration(times))
}

fn row(what: &str, goal: &str, got: String) {
    println!("| {what} | {goal} | {got} |");
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// A namespace `label-*` with a veth `eth0` for a daemon to attach to.
fn veth_namespace(label: &str) -> anyhow::Result<Netns> {
    let ns = Netns::new(label)?;
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    ns.ip(&["link", "set", "peer0", "up"])?;
    Ok(ns)
}

/// A daemon of its own started on `own[0]`, where each VIP has a pool of
/// backends of its own, so that each VIP has a table of its own (an apply
/// from the shared pool to these would need 128,000 backend ids at once:
/// more than the 65,536 there are); then the plan and the apply of a
/// change to every VIP (`own[1]`).
fn own_pools(dir: &Path, own: [&str; 2]) -> anyhow::Result<()> {
    let ns = veth_namespace("xlbctl-own")?;
    let dir = dir.join("own");
    std::fs::create_dir_all(&dir)?;
    let (daemon, start_time) = start(&ns, Path::new(own[0]), &dir)?;
    row(
        "start until the socket answers, each VIP a pool of its own",
        "< 2 s",
        format!("{start_time:.2?}"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let plan_every = daemon.median(&["plan", "--force", own[1]], CALLS)?;
    row(
        "`xlb plan` of a change to every VIP, each VIP a pool of its own",
        "< 0.5 s",
        format!("{plan_every:.2?}"),
    );
    let apply_every = by_turns(&daemon, own[1], own[0], FULL_APPLIES * 2, &mut 0)?;
    row(
        "`xlb apply` of a change to every VIP, each VIP a pool of its own",
        "< 1 s",
        format!("{apply_every:.2?}"),
    );
    Ok(())
}

/// The plans and applies of the issue, then the RSS after `APPLIES`
/// applies: the applies made.
fn plans_and_applies(daemon: &Daemon, a: &str, every: &str, one: &str) -> anyhow::Result<usize> {
    let plan_every = daemon.median(&["plan", "--force", every], CALLS)?;
    row(
        "`xlb plan` of a change to every VIP",
        "< 0.5 s",
        format!("{plan_every:.2?}"),
    );
    let plan_one = daemon.median(&["plan", "--force", one], CALLS)?;
    row(
        "`xlb plan` of a file where one VIP changed",
        "< 0.5 s",
        format!("{plan_one:.2?}"),
    );
    let mut applies = 0;
    let apply_every = by_turns(daemon, every, a, FULL_APPLIES * 2, &mut applies)?;
    row(
        "`xlb apply` of a change to every VIP",
        "< 1 s",
        format!("{apply_every:.2?}"),
    );
    let apply_one = by_turns(daemon, one, a, CALLS * 2, &mut applies)?;
    row(
        "`xlb apply` of a file where one VIP changed",
        "< 50 ms",
        format!("{apply_one:.2?}"),
    );
    while applies < APPLIES {
        daemon.timed(&["apply", "--force", if applies % 2 == 0 { one } else { a }])?;
        applies += 1;
    }
    // The RSS with the status document's encodings in it: they are made
    // when a document is published, which a status asks for.
    daemon.output_len(&["-o", "json", "status"])?;
    row(
        &format!("daemon RSS after {applies} applies"),
        "< 100 MB",
        daemon.rss()?,
    );
    row(
        "kernel memory of the maps it holds (memlock)",
        "apart",
        mb(daemon.map_memory()?),
    );

    Ok(applies)
}

fn main() -> anyhow::Result<()> {
    if !support::root("control") {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("xlb-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ns = veth_namespace("xlbctl")?;

    // a: the start; every: every VIP's first weight changed; one: only
    // vip0's.
    // own-a, own-every: a and every with a pool of backends per VIP.
    let files = [
        ("a", config(1, 1)),
        ("every", config(2, 2)),
        ("one", config(1, 3)),
        ("own-a", config_of(1, 1, Pools::Own)),
        ("own-every", config_of(2, 2, Pools::Own)),
    ]
    .map(|(name, text)| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).map(|()| path)
    });
    let [a, every, one, own_a, own_every] = files;
    let (a, every, one, own_a, own_every) = (a?, every?, one?, own_a?, own_every?);
    let (a, every, one, own) = (
        a.to_str().unwrap(),
        every.to_str().unwrap(),
        one.to_str().unwrap(),
        [own_a.to_str().unwrap(), own_every.to_str().unwrap()],
    );
    println!(
        "control: {VIPS} VIPs x {BACKENDS} backends, table size {TABLE_SIZE}, config {} bytes; load average {}",
        std::fs::metadata(a)?.len(),
        support::load_average()
    );

    // Each figure is printed as soon as it is measured, so a run cut
    // short still says what it got.
    println!("| what | goal | measured |");
    println!("|---|---:|---:|");
    let (daemon, start_time) = start(&ns, Path::new(a), &dir)?;
    row(
        "start until the socket answers",
        "< 2 s",
        format!("{start_time:.2?}"),
    );
    row("daemon RSS after start", "", daemon.rss()?);
    // Let the first ticks and the connection scan pass.
    std::thread::sleep(Duration::from_secs(2));
    let status_only = std::env::var("XLB_BENCH_CONTROL").is_ok_and(|v| v == "status");
    let applies = if status_only {
        0
    } else {
        plans_and_applies(&daemon, a, every, one)?
    };
    if std::env::var_os("XLB_BENCH_CONTROL_RSS_ONLY").is_some_and(|v| v == "1") {
        drop(daemon);
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }

    let status = daemon.median(&["-o", "json", "status"], CALLS)?;
    row("`xlb status -o json`", "< 100 ms", format!("{status:.2?}"));
    let status_vip = daemon.median(&["-o", "json", "status", "--vip", "vip500"], CALLS)?;
    row(
        "`xlb status --vip vip500`",
        "< 10 ms",
        format!("{status_vip:.2?}"),
    );
    let scrape_idle = scrapes(&ns, CALLS, Scrape::Gzip)?;
    let scrape_plain = scrapes(&ns, CALLS, Scrape::Plain)?;
    let (gzip_sent, text) = scrape_len(&ns, Scrape::Gzip)?;
    row(
        "sizes: `xlb status -o json` output / `/metrics` body, gzip (plain)",
        "",
        format!(
            "{} / {} ({})",
            mb(daemon.output_len(&["-o", "json", "status"])?),
            mb(gzip_sent),
            mb(text)
        ),
    );
    row(
        "`/metrics` scrape (gzip, as Prometheus)",
        "< 100 ms",
        format!("{scrape_idle:.2?}"),
    );
    row(
        "`/metrics` scrape, uncompressed",
        "",
        format!("{scrape_plain:.2?}"),
    );
    if !status_only {
        let history = daemon.median(&["history"], CALLS)?;
        row(
            &format!("`xlb history` ({applies} revisions)"),
            "< 100 ms",
            format!("{history:.2?}"),
        );
    }

    // The load: scrapers in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let scrapers: Vec<_> = (0..SCRAPERS)
        .map(|_| {
            let (stop, served) = (stop.clone(), served.clone());
            ns.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if get_metrics(Scrape::Gzip, false).is_ok() {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let load_started = Instant::now();
    let status_loaded = daemon.median(&["-o", "json", "status"], CALLS);
    let scrape_loaded = scrapes(&ns, CALLS, Scrape::Gzip);
    let plain_loaded = scrapes(&ns, CALLS, Scrape::Plain);
    // The median of `FULL_APPLIES`, each a change to every VIP (the
    // changed file and the start by turns), as without the load.
    let apply_loaded = if status_only {
        Ok(Duration::ZERO)
    } else {
        by_turns(&daemon, every, a, FULL_APPLIES, &mut 0)
    };
    let load_seconds = load_started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for s in scrapers {
        let _ = s.join();
    }
    let (status_loaded, scrape_loaded, plain_loaded, apply_loaded) =
        (status_loaded?, scrape_loaded?, plain_loaded?, apply_loaded?);
    drop(daemon);
    let n = served.load(Ordering::Relaxed);
    row(
        &format!(
            "`xlb status -o json` while {SCRAPERS} clients scrape `/metrics` with gzip ({n} scrapes in {load_seconds:.0} s)"
        ),
        "< 100 ms",
        format!("{status_loaded:.2?}"),
    );
    row(
        "`/metrics` scrape under that load (gzip)",
        "< 100 ms",
        format!("{scrape_loaded:.2?}"),
    );
    row(
        "`/metrics` scrape under that load, uncompressed",
        "",
        format!("{plain_loaded:.2?}"),
    );
    if !status_only {
        row(
            "`xlb apply` of every VIP under that load",
            "< 1 s",
            format!("{apply_loaded:.2?}"),
        );
        own_pools(&dir, own)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
