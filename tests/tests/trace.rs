//! `xlb trace` and `xlb capture` end to end (issue 18), in namespaces
//! (prefix `xlbtr-`), one testbed and one daemon for every check:
//!
//! - a trace for another client (198.18.0.9) sees nothing of 198.18.0.1's
//!   connections; `xlb trace web --client 198.18.0.1 --count 20` prints a
//!   real TCP connection's SYN (a miss: slot, backend) and then hits on
//!   that backend, and `xlb status` showed the trace while it ran;
//! - a held connection on a backend then drained is traced as a hit that
//!   keeps it there while the table's slot names another backend;
//! - a trace whose CLI is killed (SIGKILL) is ended by the daemon: the
//!   status shows none within 3 s;
//! - after the connection table is cleared, a capture of `non_syn_miss`
//!   holds the held connection's next packets, and `tcpdump -r` reads the
//!   file;
//! - bad arguments exit 2 naming what is wrong.
//!
//! Needs root. The daemon runs with `--bake-window 0s` (the drain is not
//! under test) and pins on a bpffs in the work directory, so the test can
//! open the connection table.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use aya::maps::{HashMap, Map, MapData};
use lb_common::hash::{ConnEntry, FlowKey4};
use tests::confine::Bpffs;
use tests::echo::EchoServers;
use tests::testbed::{self, TCP_PORT, Testbed, VIP4};
use tests::xlbd::{Daemon, xlb_binary};

#[test]
fn trace_and_capture_show_the_balancers_decisions() {
    tests::require_privileges!();
    tests::in_workdir("trace", run);
}

/// `xlb ARGS` against the daemon, started (stdout piped).
fn start_cli(daemon: &Daemon, args: &[&str]) -> anyhow::Result<Child> {
    Command::new(xlb_binary()?)
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting xlb")
}

/// `xlb` with the words of `args` started, once the status shows its
/// session on; the status's `trace`.
fn session(daemon: &Daemon, args: &str) -> anyhow::Result<(Child, serde_json::Value)> {
    let words: Vec<&str> = args.split_whitespace().collect();
    let child = start_cli(daemon, &words)?;
    let active = wait_trace(daemon, Duration::from_secs(5), |t| !t.is_null())?;
    Ok((child, active))
}

/// Wait (at most `limit`) for a CLI to exit; its stdout lines.
fn finish(mut child: Child, limit: Duration) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "xlb did not end within {limit:?}; stdout {:?} stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "xlb failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// The status's `trace` field, within `limit`, until `want` says yes.
fn wait_trace(
    daemon: &Daemon,
    limit: Duration,
    want: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let t = daemon.status()?["trace"].clone();
        if want(&t) {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("status trace {t} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A connection from the client to the VIP, made in the client's
/// namespace (the socket stays there).
struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    local: SocketAddr,
}

impl Conn {
    fn open(tb: &Testbed) -> anyhow::Result<Self> {
        let target = SocketAddr::from((VIP4, TCP_PORT));
        let stream = tb
            .client
            .ns
            .spawn(move || Ok(TcpStream::connect_timeout(&target, Duration::from_secs(3))?))
            .join()
            .map_err(|_| anyhow::anyhow!("connect panicked"))??;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let local = stream.local_addr()?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            stream,
            local,
        })
    }

    /// One line echoed: the name of the backend that answered.
    fn exchange(&mut self, n: u32) -> anyhow::Result<String> {
        let request = format!("trace {n}\n");
        self.stream.write_all(request.as_bytes())?;
        let mut answer = String::new();
        self.reader.read_line(&mut answer)?;
        match answer.split_once(' ') {
            Some((name, echoed)) if echoed == request => Ok(name.to_string()),
            _ => bail!("sent {request:?}, got {answer:?}"),
        }
    }
}

fn json_lines(lines: &[String]) -> anyhow::Result<Vec<serde_json::Value>> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("trace line {l:?}")))
        .collect()
}

fn run(dir: &Path) -> anyhow::Result<()> {
    let tb = Testbed::new("xlbtr", 3)?;
    let _echo = EchoServers::start(&tb.backends, TCP_PORT)?;
    let config = dir.join("xlb.toml");
    std::fs::write(&config, testbed::config(&[1, 1, 1]))?;
    let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
    let daemon = Daemon::start_with(
        &tb.lb.ns,
        &config,
        dir,
        &["--bake-window", "0s", "--bpffs", bpffs.arg()],
    )?;
    let t0 = Instant::now();

    // Bad arguments: exit 2, naming what is wrong.
    for (args, says) in [
        (
            &["trace", "web", "--client", "198.18.0.1/24"][..],
            "host bits set past /24",
        ),
        (&["trace", "nope"], "unknown VIP `nope`"),
        (
            &["capture", "--events", "drop,bogus", "--out", "/dev/null"],
            "unknown event `bogus`",
        ),
        (&["trace", "--client", "198.18.0.1/40"], "from 0 to 32"),
    ] {
        let out = daemon.xlb(args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(2) && err.contains(says),
            "xlb {args:?}: {} {err}",
            out.status
        );
    }

    // Another client's trace sees none of 198.18.0.1's packets.
    let (other, _) = session(
        &daemon,
        "-o json trace web --client 198.18.0.9 --duration 1s",
    )?;
    let mut c = Conn::open(&tb)?;
    c.exchange(0)?;
    drop(c);
    let lines = finish(other, Duration::from_secs(5))?;
    ensure!(lines.is_empty(), "another client's trace printed {lines:?}");

    // A real connection: its SYN misses (slot, backend), then hits there.
    let (trace, active) = session(&daemon, "-o json trace web --client 198.18.0.1 --count 20")?;
    ensure!(
        active["kind"] == "trace" && active["filter"] == "vip=web client=198.18.0.1/32",
        "status trace {active}"
    );
    let mut conns = Vec::new();
    let mut served = Vec::new();
    for i in 0..6 {
        let mut c = Conn::open(&tb)?;
        for n in 0..3 {
            served.push((c.local.port(), c.exchange(i * 10 + n)?));
        }
        conns.push(c);
    }
    let packets = json_lines(&finish(trace, Duration::from_secs(5))?)?;
    ensure!(packets.len() == 20, "{} lines: {packets:?}", packets.len());
    let first = &packets[0];
    let port = first["client_port"].as_u64().context("client_port")? as u16;
    let backend = first["backend"].as_str().context("a SYN's backend")?;
    ensure!(
        first["conn"] == "miss_syn"
            && first["syn"] == true
            && first["slot"].is_u64()
            && first["table_backend"] == backend
            && first["action"] == "tx",
        "the first packet is not the SYN's miss: {first}"
    );
    ensure!(
        served.iter().any(|(p, b)| *p == port && b == backend),
        "the traced SYN's backend {backend} is not the one that answered {served:?}"
    );
    let same: Vec<_> = packets[1..]
        .iter()
        .filter(|p| p["client_port"] == port)
        .collect();
    ensure!(
        same.len() >= 3,
        "few packets of the traced connection: {same:?}"
    );
    for p in &same {
        ensure!(
            p["conn"] == "hit" && p["backend"] == backend && p["client"] == "198.18.0.1",
            "not a hit on {backend}: {p}"
        );
    }
    wait_trace(&daemon, Duration::from_secs(3), |t| t.is_null())?;

    // A drained backend's held flow: traced as the hit that keeps it.
    let mut held = conns.pop().context("a held connection")?;
    let on = held.exchange(100)?;
    let out = daemon.xlb(&["drain", "web", &on, "--force"])?;
    ensure!(
        out.status.success(),
        "drain: {}",
        tests::xlbd::describe(&out)
    );
    let port = held.local.port().to_string();
    let (trace, _) = session(
        &daemon,
        &format!("-o json trace web --port {port} --count 1"),
    )?;
    ensure!(held.exchange(101)? == on, "the held flow left {on}");
    let packets = json_lines(&finish(trace, Duration::from_secs(5))?)?;
    let p = packets.first().context("no packet of the held flow")?;
    ensure!(
        p["conn"] == "hit" && p["backend"] == on.as_str() && p["table_backend"] != on.as_str(),
        "the drained backend's flow: {p}"
    );

    // A killed CLI: the daemon switches tracing off.
    let (mut killed, _) = session(&daemon, "trace")?;
    killed.kill()?;
    killed.wait()?;
    wait_trace(&daemon, Duration::from_secs(3), |t| t.is_null())?;

    // The connection table cleared: the held flow's next packets are
    // non-SYN misses, captured.
    let md = MapData::from_pin(bpffs.pins("eth0").join(lb_common::maps::CONNS_V4))?;
    let mut table: HashMap<MapData, FlowKey4, ConnEntry> = HashMap::try_from(Map::LruHashMap(md))?;
    let keys: Vec<FlowKey4> = table.keys().collect::<Result<_, _>>()?;
    for k in &keys {
        table.remove(k)?;
    }
    // A flow on a backend still in the table: hashed again, it lands
    // where it was.
    let index = conns
        .iter()
        .position(|c| served.iter().any(|(p, b)| *p == c.local.port() && *b != on))
        .context("no connection off the drained backend")?;
    let mut moved = conns.remove(index);
    let port = moved.local.port();
    let pcap = dir.join("moved.pcap");
    let pcap_arg = pcap.to_str().context("path")?;
    let (capture, _) = session(
        &daemon,
        &format!("-o json capture web --events non_syn_miss --out {pcap_arg} --count 1"),
    )?;
    moved.exchange(102)?;
    finish(capture, Duration::from_secs(5))?;
    let read = tests::netns::sh(&["tcpdump", "-nr", pcap_arg])?;
    let want = format!("198.18.0.1.{port} > {VIP4}.{TCP_PORT}");
    ensure!(
        read.lines().count() == 1 && read.contains(&want),
        "tcpdump -r: {read:?} (wanted one packet {want})"
    );
    let metrics = daemon.status()?;
    ensure!(metrics["trace"].is_null(), "{}", metrics["trace"]);
    eprintln!("trace checks took {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}
