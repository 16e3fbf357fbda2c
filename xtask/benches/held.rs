//! Held-flow replication's costs (issue 21, docs/FLEET.md "Held flows"):
//! one node's publisher and another's installer against a real etcd (3.4,
//! TLS with client certificates, as the fleet testbed runs it) in a network
//! namespace, with synthetic held flows: 10,000 and 100,000 flows of a
//! drained backend, cut into records as the daemon cuts them
//! (`xlb_core::held::chunks`, 10,000 flows a record).
//!
//! Each run: the installer watches `held/` (as `daemon/held.rs` does); the
//! publisher stamps the "table read" time, cuts the records and puts them
//! (`FleetStore::publish_held`: one put a record, one range delete); the
//! installer translates each record into its own ids
//! (`xlb_core::held::to_install`) and inserts the flows into a real,
//! loaded balancer's connection table with BPF_NOEXIST
//! (`ConnTable::insert_absent`). Measured: the delay from the table read
//! to the last insertion (the daemon's `xlb_held_replication_delay_seconds`
//! for the last record), the publish alone, bytes and requests sent to
//! etcd, the CPU of this process (publisher and installer) and of etcd
//! over the run. Medians of 3 runs, each with flows no earlier run used.
//! Needs root (namespace, loading the balancer).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use xlb_core::clock::unix_now;
use xlb_core::held::{self, HeldBackend, Selection};
use xlb_core::simulate::Flow;
use xlb_core::state::{Allocation, Desired, desired};
use xlb_fleet::{FleetAddress, FleetStore};

const SIZES: [usize; 2] = [10_000, 100_000];
const RUNS: usize = 3;
/// How long the installer may take to see every record of a run.
const INSTALL_BOUND: Duration = Duration::from_secs(60);

/// The fleet's VIP over b1..b3, b3 draining: every flow on b3 is held.
fn state() -> anyhow::Result<Desired> {
    let mut text = String::from(
        "interface = \"lo\"\nhash_seed = 1\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 8080\nprotocol = \"tcp\"\n",
    );
    for (i, state) in ["active", "active", "draining"].iter().enumerate() {
        text.push_str(&format!(
            "[[vip.backend]]\nname = \"b{n}\"\naddress = \"198.18.0.{a}\"\nmac = \"02:00:00:00:00:{a}\"\nstate = \"{state}\"\n",
            n = i + 1,
            a = 11 + i
        ));
    }
    let config = xlb_core::config::parse(&text, "bench.toml")?;
    Ok(desired(&config, &Allocation::default())?)
}

/// `n` held flows on b3, none of them used by another run.
fn selection(n: usize, run: usize) -> Selection {
    let flows = (0..n)
        .map(|i| Flow {
            src: IpAddr::V4(Ipv4Addr::new(
                198,
                19,
                (run * 2 + i / 60_000) as u8,
                (i % 250) as u8 + 1,
            )),
            dst: IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1)),
            src_port: 1024 + ((i % 60_000) / 250) as u16,
            dst_port: 8080,
            proto: 6,
        })
        .collect();
    let backend = HeldBackend {
        name: "b3".into(),
        address: "198.18.0.13".parse().expect("an address"),
        removed: false,
    };
    let mut s = Selection::default();
    s.held.insert((0, backend), flows);
    s
}

/// utime + stime of `pid` (`self` for this process), in seconds.
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command's closing parenthesis: fields 3.., utime and stime
    // are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("a stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

#[derive(Debug, Default, Clone, Copy)]
struct Run {
    delay: f64,
    publish: f64,
    bytes: usize,
    requests: usize,
    cpu_self: f64,
    cpu_etcd: f64,
}

async fn one_run(
    publisher: &FleetStore,
    installer: &FleetStore,
    conns: &xlb_dataplane::ConnTable,
    desired: &Desired,
    n: usize,
    run: usize,
    etcd_pid: &str,
) -> anyhow::Result<Run> {
    let lease = publisher.held_lease().await?;
    let mut watch = installer.watch_held(0).await?;
    let (self0, etcd0) = (cpu_seconds("self")?, cpu_seconds(etcd_pid)?);
    let sel = selection(n, run);
    let scanned_at = unix_now();
    let records = held::chunks(
        "n1",
        desired,
        &sel,
        held::FLOWS_PER_CHUNK,
        scanned_at,
        unix_now(),
    );
    let started = Instant::now();
    let bytes = publisher.publish_held(&lease, "n1", &records).await?;
    let publish = started.elapsed().as_secs_f64();
    let mut installed = 0;
    let mut last = scanned_at;
    while installed < n {
        let got = tokio::time::timeout(INSTALL_BOUND, watch.next())
            .await
            .context("records not seen within the bound")??;
        for r in got.iter().filter(|r| r.node == "n1") {
            let (flows, _) = held::to_install(desired, r);
            let done =
                conns.insert_absent(flows.into_iter().map(|(f, id, h)| (f.words(), id, h)))?;
            installed += (done.added + done.present) as usize;
            last = unix_now();
        }
    }
    let (self1, etcd1) = (cpu_seconds("self")?, cpu_seconds(etcd_pid)?);
    publisher.revoke(&lease).await?;
    Ok(Run {
        delay: last - scanned_at,
        publish,
        bytes,
        requests: records.len() + 1,
        cpu_self: self1 - self0,
        cpu_etcd: etcd1 - etcd0,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("xlb-bench-held-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let certs = dir.join("certs");
    tests::etcd::certificates(&certs)?;
    let ns = tests::netns::Netns::new("xbh")?;
    ns.ip(&[
        "addr",
        "add",
        &format!("{}/32", tests::etcd::ETCD),
        "dev",
        "lo",
    ])?;
    let etcd = tests::etcd::Etcd::start(&ns, &dir, &certs)?;
    let etcd_pid = etcd.pid().to_string();
    let desired = state()?;
    let dataplane = xlb_dataplane::Dataplane::load().context("loading the balancer")?;
    let conns = dataplane.conn_table();
    // An LRU: a later run evicts an earlier run's entries, never its own.
    ensure!(
        conns.capacity() as usize >= SIZES[1],
        "a connection table of {} entries is too small for {} flows",
        conns.capacity(),
        SIZES[1]
    );
    let address = FleetAddress {
        ca: Some(certs.join("ca.pem")),
        cert: Some(certs.join("client.pem")),
        key: Some(certs.join("client.key")),
        ..FleetAddress::parse(&format!("https://{}:2379/bench", tests::etcd::ETCD))?
    };
    let rows = ns.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            // etcd takes a few seconds to answer.
            let started = Instant::now();
            let (publisher, installer) = loop {
                match (
                    FleetStore::connect(&address).await,
                    FleetStore::connect(&address).await,
                ) {
                    (Ok(p), Ok(i)) if p.held().await.is_ok() => break (p, i),
                    _ if started.elapsed() < Duration::from_secs(30) => {
                        tokio::time::sleep(Duration::from_millis(300)).await
                    }
                    (p, i) => {
                        p?;
                        i?;
                        anyhow::bail!("etcd does not answer");
                    }
                }
            };
            let mut rows = Vec::new();
            let mut run = 0;
            for n in SIZES {
                let mut runs = Vec::new();
                for _ in 0..RUNS {
                    runs.push(
                        one_run(&publisher, &installer, &conns, &desired, n, run, &etcd_pid)
                            .await?,
                    );
                    run += 1;
                }
                rows.push((n, runs));
            }
            Ok(rows)
        })
    });
    let rows = rows
        .join()
        .map_err(|_| anyhow::anyhow!("the bench thread panicked"))??;
    drop(etcd);
    println!("held flows replicated through etcd 3.4 (TLS), medians of {RUNS} runs");
    println!(
        "{:>8} {:>9} {:>10} {:>11} {:>9} {:>13} {:>13}",
        "FLOWS", "DELAY_MS", "PUBLISH_MS", "BYTES", "REQUESTS", "CPU_XLB_MS", "CPU_ETCD_MS"
    );
    for (n, runs) in rows {
        let m = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
        println!(
            "{n:>8} {:>9.0} {:>10.0} {:>11.0} {:>9.0} {:>13.0} {:>13.0}",
            m(|r| r.delay) * 1e3,
            m(|r| r.publish) * 1e3,
            m(|r| r.bytes as f64),
            m(|r| r.requests as f64),
            m(|r| r.cpu_self) * 1e3,
            m(|r| r.cpu_etcd) * 1e3,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
