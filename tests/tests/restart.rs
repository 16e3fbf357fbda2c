//! Hitless restart and upgrade from pinned maps (issue 7), end to end in
//! namespaces. Needs root.
//!
//! - Under a steady stream of new TCP connections (IPv4 and IPv6) and 50
//!   long-lived ones exchanging data, the daemon is killed with SIGKILL and
//!   started again 20 times, then upgraded (stopped with SIGTERM, started
//!   with `--object`, a balancer object loaded from a file): every new
//!   connection succeeds, no long-lived one is reset, stalls or changes
//!   backend, each start puts a new program under the pinned link, adopts
//!   the live revision (no new revision, the same VIP and backend ids) and
//!   the counters never go backwards.
//! - A layout version the program does not know in the pinned config map
//!   is refused, naming both versions and `xlb detach`; forwarding goes on.
//!   `xlb detach` (refused while a daemon serves the interface) removes the
//!   link and every pin: no XDP program is left on the interface. SIGHUP
//!   re-reads the config through plan: a change is applied, a plan the
//!   safety checks refuse and a broken file change nothing.
//!
//! The pins live on a bpffs the test mounts in its own work directory
//! (`--bpffs`): `ip netns exec` gives each daemon a private /sys, where
//! pins would end with the daemon. Unmounting it on drop removes them all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use tests::client::{self, Exchange, Proto};
use tests::confine::Bpffs;
use tests::echo::{EchoServers, FaultKind, Held, LongConnections, Pace, probe};
use tests::loss::retransmitted;
use tests::servers::Servers;
use tests::testbed::{TCP_PORT, Testbed, VIP4, VIP6};
use tests::xlbd::{Daemon, xlb_binary};

/// The long-lived connections' VIP port (the echo servers').
const ECHO_PORT: u16 = 8070;
const LONG_LIVED: usize = 50;
const RESTARTS: usize = 20;
/// New connections a second, per family.
const NEW_PER_SECOND: u32 = 50;
/// How long each restart leaves the host without a daemon.
const NO_DAEMON: Duration = Duration::from_millis(400);
/// No answer for this long is a stall.
const STALL: Duration = Duration::from_secs(2);

/// The pins of the testbed's LB interface.
fn pins(bpffs: &Bpffs) -> PathBuf {
    bpffs.pins("eth0")
}

/// The id of the program the pinned link runs.
fn link_program(bpffs: &Bpffs) -> anyhow::Result<u32> {
    let link = aya::programs::links::PinnedLink::from_pin(pins(bpffs).join("link"))
        .context("opening the pinned link")?;
    let fd: aya::programs::links::FdLink = link.into();
    Ok(fd.info()?.program_id())
}

/// `web` (the one-shot servers, new connections) and `echo` (the
/// long-lived connections) over b1..b3, in both families.
fn config(weights: [u32; 3], hash_seed: u32) -> String {
    let mut out = format!("interface = \"eth0\"\nhash_seed = {hash_seed}\n");
    for (name, port, v6) in [
        ("web", TCP_PORT, false),
        ("web6", TCP_PORT, true),
        ("echo", ECHO_PORT, false),
        ("echo6", ECHO_PORT, true),
    ] {
        let address = if v6 {
            VIP6.to_string()
        } else {
            VIP4.to_string()
        };
        out.push_str(&format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = {port}\nprotocol = \"tcp\"\n"
        ));
        for (i, w) in weights.iter().enumerate() {
            let last = 11 + i;
            let backend = if v6 {
                format!("2001:db8::{last}")
            } else {
                format!("198.18.0.{last}")
            };
            out.push_str(&format!(
                "[[vip.backend]]\nname = \"b{}\"\naddress = \"{backend}\"\nmac = \"02:00:00:00:00:{last:02}\"\nweight = {w}\n",
                i + 1
            ));
        }
    }
    out
}

/// `text` with a VIP `spare` (port 9000 over b1..b3) before the others.
fn with_spare(text: &str) -> String {
    let (head, vips) = text.split_once("\n[[vip]]").expect("a VIP");
    let mut out = format!(
        "{head}\n[[vip]]\nname = \"spare\"\naddress = \"{VIP4}\"\nport = 9000\nprotocol = \"tcp\"\n"
    );
    for b in 1..=3 {
        out.push_str(&format!(
            "[[vip.backend]]\nname = \"b{b}\"\naddress = \"198.18.0.{}\"\nmac = \"02:00:00:00:00:{}\"\n",
            10 + b,
            10 + b
        ));
    }
    out.push_str("\n[[vip]]");
    out.push_str(vips);
    out
}

fn daemon_args(bpffs: &Bpffs) -> Vec<String> {
    vec![
        "--bake-window".into(),
        "0s".into(),
        "--bpffs".into(),
        bpffs.path.display().to_string(),
    ]
}

fn start(bed: &Testbed, file: &Path, dir: &Path, args: &[String]) -> anyhow::Result<Daemon> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_with(&bed.lb.ns, file, dir, &args)
}

/// What must stay put across a restart: the revision and every id; and
/// the counters, which may only grow.
#[derive(Debug, PartialEq)]
struct Seen {
    revision: u64,
    /// (vip, backend or "") -> id
    ids: Vec<(String, String, u64)>,
    /// (vip, backend or "") -> packets
    packets: Vec<(String, String, u64)>,
}

fn seen(daemon: &Daemon) -> anyhow::Result<Seen> {
    let s = daemon.status()?;
    let mut ids = Vec::new();
    let mut packets = Vec::new();
    for v in s["vips"].as_array().context("vips")? {
        let vip = v["name"].as_str().unwrap_or_default().to_string();
        ids.push((vip.clone(), String::new(), v["id"].as_u64().context("id")?));
        packets.push((
            vip.clone(),
            String::new(),
            v["packets"].as_u64().context("packets")?,
        ));
        for b in v["backends"].as_array().context("backends")? {
            let name = b["name"].as_str().unwrap_or_default().to_string();
            ids.push((vip.clone(), name.clone(), b["id"].as_u64().context("id")?));
            packets.push((vip.clone(), name, b["packets"].as_u64().context("packets")?));
        }
    }
    Ok(Seen {
        revision: s["revision"].as_u64().context("revision")?,
        ids,
        packets,
    })
}

/// `after`'s counters are each at least `before`'s.
fn never_backwards(before: &Seen, after: &Seen, when: &str) -> anyhow::Result<()> {
    for ((vip, backend, a), (_, _, b)) in before.packets.iter().zip(&after.packets) {
        ensure!(
            b >= a,
            "{when}: the packets of {vip}/{backend} went back from {a} to {b}"
        );
    }
    Ok(())
}

/// New connections, paced, in both families, until `stop`.
fn new_connections(
    bed: &Testbed,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Exchange>>> {
    [VIP4.into(), VIP6.into()]
        .into_iter()
        .map(|ip: std::net::IpAddr| {
            let (client, stop) = (bed.client.ns.handle(), stop.clone());
            std::thread::spawn(move || {
                client::drive_paced(
                    &client,
                    SocketAddr::new(ip, TCP_PORT),
                    Proto::Tcp,
                    NEW_PER_SECOND,
                    stop,
                    240,
                )
            })
        })
        .collect()
}

#[test]
fn sigkill_restarts_and_an_upgrade_under_load_lose_nothing() {
    tests::require_privileges!();
    tests::in_workdir("restart", restarts);
}

fn restarts(dir: &Path) -> anyhow::Result<()> {
    let began = Instant::now();
    let bed = Testbed::new("xlbrs-k", 3)?;
    let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
    let _servers = Servers::start(&bed)?;
    let _echo = EchoServers::start(&bed.backends, ECHO_PORT)?;
    // A history, so the ids are not what a fresh start would hand out: a
    // VIP that takes the first ids, then leaves.
    let file = dir.join("xlb.toml");
    std::fs::write(&file, with_spare(&config([1, 1, 1], 1)))?;
    let args = daemon_args(&bpffs);
    let mut daemon = start(&bed, &file, dir, &args)?;
    std::fs::write(&file, config([1, 1, 1], 1))?;
    let out = daemon.xlb(&["apply", file.to_str().unwrap()])?;
    ensure!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = seen(&daemon)?;
    let fresh = xlb_core::state::desired(
        &xlb_core::config::parse(&config([1, 1, 1], 1), "fresh.toml")
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        &xlb_core::state::Allocation::default(),
    )?;
    ensure!(
        first.ids[0].2 != u64::from(fresh.vips[0].id),
        "the ids are those of a fresh start: {:?}",
        first.ids
    );

    let targets: Vec<SocketAddr> = (0..LONG_LIVED)
        .map(|i| SocketAddr::new(Testbed::vip(i % 2 == 1), ECHO_PORT))
        .collect();
    let pace = Pace {
        gap: Duration::from_millis(50),
        stall: STALL,
        max_life: Duration::from_secs(240),
    };
    let long = LongConnections::open(&bed.client.ns, &targets, pace, Duration::from_millis(5));
    ensure!(
        long.wait_settled(Duration::from_secs(20)),
        "the long-lived connections were not all established within 20 s"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = new_connections(&bed, &stop);
    std::thread::sleep(Duration::from_millis(500));
    let load_began = Instant::now();
    let retrans_before = retransmitted(&bed)?;

    let result = (|| -> anyhow::Result<(Vec<Duration>, Seen)> {
        let mut last = seen(&daemon)?;
        let mut program = link_program(&bpffs)?;
        let mut starts = Vec::new();
        for i in 1..=RESTARTS {
            daemon.kill()?;
            // Forwarding with no daemon at all for a while.
            std::thread::sleep(NO_DAEMON);
            let t = Instant::now();
            daemon = start(&bed, &file, dir, &args).with_context(|| format!("restart {i}"))?;
            starts.push(t.elapsed());
            let now = seen(&daemon)?;
            let log = daemon.log_text();
            ensure!(
                log.contains(&format!("adopted revision {}", first.revision))
                    && log.contains("they hold exactly it"),
                "restart {i} did not adopt revision {} cleanly:\n{log}",
                first.revision
            );
            ensure!(
                now.revision == first.revision && now.ids == first.ids,
                "restart {i}: revision or ids changed: {:?} -> {:?}",
                (first.revision, &first.ids),
                (now.revision, &now.ids)
            );
            never_backwards(&last, &now, &format!("restart {i}"))?;
            let p = link_program(&bpffs)?;
            ensure!(p != program, "restart {i}: the link still runs program {p}");
            program = p;
            last = now;
        }

        // The upgrade: a balancer object from a file, after a SIGTERM
        // (which leaves forwarding running too).
        let object = dir.join("xlb-balancer.o");
        std::fs::write(&object, xlb_dataplane::balancer_object())?;
        let status = daemon.stop()?;
        ensure!(status.success(), "xlb run exited with {status} on SIGTERM");
        ensure!(
            link_program(&bpffs)? == program,
            "SIGTERM changed or removed the link's program"
        );
        std::thread::sleep(Duration::from_millis(200));
        let mut upgrade = args.clone();
        upgrade.extend(["--object".into(), object.display().to_string()]);
        daemon = start(&bed, &file, dir, &upgrade).context("the upgrade")?;
        let log = daemon.log_text();
        ensure!(
            log.contains("balancer object from") && log.contains("under the pinned link"),
            "the upgrade did not load the object file under the live link:\n{log}"
        );
        let p = link_program(&bpffs)?;
        ensure!(p != program, "the upgrade left program {p} under the link");
        let now = seen(&daemon)?;
        ensure!(now.revision == first.revision && now.ids == first.ids);
        never_backwards(&last, &now, "the upgrade")?;
        // Traffic on the upgraded program.
        std::thread::sleep(Duration::from_secs(1));
        Ok((starts, seen(&daemon)?))
    })();

    stop.store(true, Ordering::Relaxed);
    let exchanges: Vec<Exchange> = load
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect();
    let held = long.finish()?;
    let load_seconds = load_began.elapsed().as_secs_f64();
    let retrans = retransmitted(&bed)? - retrans_before;
    // What the traffic saw first, also when a restart failed.
    let new = check_new(&exchanges, load_seconds);
    let long = check_long(&held);
    eprintln!("TCP segments retransmitted by the client and the backends: {retrans}");
    let (starts, end) = result?;
    new?;
    long?;
    ensure!(
        retrans == 0,
        "{retrans} TCP segments were retransmitted: packets were lost"
    );

    let mut sorted = starts.clone();
    sorted.sort();
    eprintln!(
        "{RESTARTS} SIGKILL restarts and an upgrade in {load_seconds:.1} s of load: start to serving median {:?}, slowest {:?}",
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    never_backwards(&first, &end, "the whole run")?;
    let grew = first
        .packets
        .iter()
        .zip(&end.packets)
        .filter(|((_, b, _), _)| b.is_empty())
        .all(|((_, _, a), (_, _, b))| b > a);
    ensure!(
        grew,
        "a VIP's packets did not grow: {:?} -> {:?}",
        first.packets,
        end.packets
    );
    eprintln!("whole test {:?}", began.elapsed());
    Ok(())
}

fn check_new(exchanges: &[Exchange], seconds: f64) -> anyhow::Result<()> {
    let tally = client::Tally::of(exchanges);
    eprintln!(
        "new connections: {} answered {:?}, {} failed",
        tally.total_ok(),
        tally.per_backend,
        tally.failures.len()
    );
    ensure!(
        tally.failures.is_empty(),
        "{} of {} new connections failed, the first: {:?}",
        tally.failures.len(),
        exchanges.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    // Both paced loops kept their pace (a stalled one would not).
    let expected = 2.0 * f64::from(NEW_PER_SECOND) * seconds;
    ensure!(
        tally.total_ok() as f64 > 0.8 * expected,
        "too few new connections: {} in {seconds:.1} s, expected about {expected:.0}",
        tally.total_ok()
    );
    Ok(())
}

fn check_long(held: &[Held]) -> anyhow::Result<()> {
    let count = |kind| {
        held.iter()
            .filter(|h| h.fault.as_ref().is_some_and(|f| f.kind == kind))
            .count()
    };
    let exchanges: u64 = held.iter().map(|h| h.exchanges).sum();
    let fewest = held.iter().map(|h| h.exchanges).min().unwrap_or(0);
    eprintln!(
        "{} long-lived connections: {exchanges} exchanges (fewest {fewest}); resets {}, stalls {}, wrong answers {}, connect failures {}, other {}",
        held.len(),
        count(FaultKind::Reset),
        count(FaultKind::Stall),
        count(FaultKind::WrongAnswer),
        count(FaultKind::Connect),
        count(FaultKind::Other),
    );
    let faults: Vec<String> = held
        .iter()
        .filter_map(|h| {
            let f = h.fault.as_ref()?;
            Some(format!(
                "#{} {} on {:?} at exchange {}: {:?} {}",
                h.id, h.target, h.backends, f.exchange, f.kind, f.detail
            ))
        })
        .collect();
    ensure!(
        faults.is_empty(),
        "{} long-lived connections failed:\n{}",
        faults.len(),
        faults[..faults.len().min(10)].join("\n")
    );
    let moved: Vec<_> = held.iter().filter(|h| h.backends.len() != 1).collect();
    ensure!(
        moved.is_empty(),
        "{} connections were not answered by exactly one backend: {:?}",
        moved.len(),
        moved
            .iter()
            .map(|h| (h.id, &h.backends))
            .collect::<Vec<_>>()
    );
    // At 20 exchanges a second, through every restart.
    ensure!(fewest > 100, "a connection answered only {fewest} times");
    Ok(())
}

#[test]
fn layout_mismatch_detach_and_sighup() {
    tests::require_privileges!();
    tests::in_workdir("restart-detach", detach);
}

/// `xlb ARGS` inside the LB namespace (where the daemon runs).
fn xlb_in(bed: &Testbed, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new("ip")
        .args(["netns", "exec", &bed.lb.ns.name])
        .arg(xlb_binary()?)
        .args(args)
        .output()?)
}

/// A new connection through the VIP answers.
fn forwards(bed: &Testbed) -> bool {
    let target = SocketAddr::new(VIP4.into(), ECHO_PORT);
    tests::netns::Netns::in_named(&bed.client.ns.name, move || {
        Ok(probe(target, Duration::from_secs(1)))
    })
    .is_ok_and(|r| r.is_ok())
}

/// The LB's eth0 has an XDP program.
fn xdp_attached(bed: &Testbed) -> anyhow::Result<bool> {
    Ok(bed.lb.ns.ip(&["link", "show", "eth0"])?.contains("xdp"))
}

/// Wait up to 5 s for the daemon's log to contain `needle`.
fn wait_log(daemon: &Daemon, needle: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if daemon.log_text().contains(needle) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("no {needle:?} in the log:\n{}", daemon.log_text())
}

fn detach(dir: &Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xlbrs-d", 3)?;
    let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
    let _echo = EchoServers::start(&bed.backends, ECHO_PORT)?;
    let file = dir.join("xlb.toml");
    std::fs::write(&file, config([1, 1, 1], 1))?;
    let args = daemon_args(&bpffs);
    let bpffs_arg = bpffs.path.display().to_string();
    let mut daemon = start(&bed, &file, dir, &args)?;
    ensure!(forwards(&bed), "no forwarding after the start");

    // SIGHUP: a change goes in through plan as the next revision.
    let first = seen(&daemon)?.revision;
    std::fs::write(&file, config([2, 1, 1], 1))?;
    daemon.hangup()?;
    wait_log(&daemon, "SIGHUP: applied")?;
    ensure!(seen(&daemon)?.revision == first + 1, "SIGHUP did not apply");
    // A plan the safety checks refuse (a new hash seed moves every flow),
    // and a broken file: logged, nothing changes.
    std::fs::write(&file, config([2, 1, 1], 99))?;
    daemon.hangup()?;
    wait_log(&daemon, "SIGHUP: reload refused")?;
    std::fs::write(&file, "interface = \"eth0\"\n[[vip]]\nname = 3\n")?;
    daemon.hangup()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while daemon.log_text().matches("SIGHUP: reload refused").count() < 2 {
        ensure!(
            Instant::now() < deadline,
            "the broken file was not refused:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = seen(&daemon)?;
    ensure!(
        after.revision == first + 1,
        "a refused reload changed the revision"
    );
    std::fs::write(&file, config([2, 1, 1], 1))?;
    eprintln!(
        "SIGHUP: {}",
        daemon
            .log_text()
            .lines()
            .filter(|l| l.contains("SIGHUP"))
            .collect::<Vec<_>>()
            .join("\n        ")
    );

    // Detach is refused while the daemon serves the interface.
    let socket = daemon.socket.display().to_string();
    let out = xlb_in(
        &bed,
        &[
            "--socket",
            &socket,
            "detach",
            "--interface",
            "eth0",
            "--bpffs",
            &bpffs_arg,
        ],
    )?;
    ensure!(
        out.status.code() == Some(1),
        "detach under a running daemon: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM leaves forwarding running.
    let status = daemon.stop()?;
    ensure!(status.success(), "xlb run exited with {status}");
    ensure!(
        xdp_attached(&bed)? && forwards(&bed),
        "SIGTERM stopped forwarding"
    );

    // Another layout version in the pinned config map: refused at start.
    {
        let map = aya::maps::MapData::from_pin(pins(&bpffs).join(lb_common::maps::CONFIG))?;
        let mut config: aya::maps::Array<_, lb_common::GlobalConfig> =
            aya::maps::Array::try_from(aya::maps::Map::Array(map))?;
        let mut g = config.get(&0, 0)?;
        ensure!(g.layout_version == lb_common::LAYOUT_VERSION);
        g.layout_version = 99;
        config.set(0, g, 0)?;
    }
    let refused = match start(&bed, &file, dir, &args) {
        Ok(d) => {
            drop(d);
            bail!("a daemon started over pins of layout version 99");
        }
        Err(e) => format!("{e:#}"),
    };
    let ours = format!("version {}", lb_common::LAYOUT_VERSION);
    ensure!(
        refused.contains("version 99")
            && refused.contains(&ours)
            && refused.contains("xlb detach --interface eth0"),
        "the refusal does not name both versions and the way out: {refused}"
    );
    eprintln!(
        "refused: {}",
        refused
            .lines()
            .find(|l| l.contains("version 99"))
            .unwrap_or("")
    );
    ensure!(forwards(&bed), "the refused start stopped forwarding");

    // The way out: detach removes the link and every pin.
    let out = xlb_in(
        &bed,
        &["detach", "--interface", "eth0", "--bpffs", &bpffs_arg],
    )?;
    ensure!(
        out.status.success(),
        "xlb detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    ensure!(
        !pins(&bpffs).exists(),
        "{} is still there",
        pins(&bpffs).display()
    );
    let left: Vec<_> = std::fs::read_dir(&bpffs.path)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The kernel's own (preloaded iterators of every bpffs).
        .filter(|n| !n.ends_with(".debug"))
        .collect();
    ensure!(left.is_empty(), "left on the bpffs: {left:?}");
    // The kernel releases the link as its last reference goes.
    let deadline = Instant::now() + Duration::from_secs(3);
    while xdp_attached(&bed)? {
        ensure!(
            Instant::now() < deadline,
            "an XDP program is still on eth0 after detach"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(!forwards(&bed), "the VIP still answers after detach");

    // And a fresh start attaches again.
    daemon = start(&bed, &file, dir, &args)?;
    ensure!(forwards(&bed), "no forwarding after a fresh start");
    ensure!(xdp_attached(&bed)?);
    drop(daemon);
    Ok(())
}
