//! Fleet rollouts through a real etcd (TLS with client certificates made
//! here by openssl), three `xlb run --fleet` nodes on one segment, real TCP
//! from a client through the canary node:
//!
//! - the fleet's first revision, then a good change (weights) reach the
//!   canary, bake, then the others; every node ends on the same fleet
//!   revision with equal fingerprints, and no connection fails;
//! - a skewing change (forced past the plan) is caught by the canary's bake
//!   and rolled back there; the other nodes never apply it;
//! - the CLI killed mid-rollout: a second CLI sees it running, and it ends;
//! - a node down during a rollout converges when it returns;
//! - etcd stopped: forwarding and the local status go on; on return the
//!   nodes report again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use tests::client::{Proto, Tally, drive_paced};
use tests::netns::Netns;
use tests::servers::Servers;
use tests::testbed::{self, TCP_PORT, Testbed, VIP4};
use tests::xlbd::{Daemon, describe, xlb_binary};

const ETCD: &str = "198.18.0.5";

#[test]
fn a_fleet_rolls_out_with_a_canary_and_rolls_back_as_a_whole() {
    tests::require_privileges!();
    tests::in_workdir("rollout", run);
}

/// The testbed config with the given weights, capacities 1:1:2 and a short
/// detection window (as tests/tests/bake.rs).
fn config(weights: &[u32]) -> String {
    let mut text = testbed::config(weights);
    for (b, capacity) in [("b1", 1), ("b2", 1), ("b3", 2)] {
        text = text.replace(
            &format!("name = \"{b}\"\n"),
            &format!("name = \"{b}\"\ncapacity = {capacity}\n"),
        );
    }
    text.replacen(
        "hash_seed = 1\n",
        "hash_seed = 1\n\n[imbalance]\nwindow = \"3s\"\nmin_new_flow_rate = 5\n",
        1,
    )
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running openssl")?;
    ensure!(out.status.success(), "openssl {args:?}: {}", describe(&out));
    Ok(())
}

/// A CA, etcd's server certificate (for 198.18.0.5) and a client's.
fn certificates(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=xlb test CA",
        ],
    )?;
    for (name, ext) in [
        (
            "server",
            // etcd's own gateway dials etcd with the server's certificate.
            format!("subjectAltName=IP:{ETCD}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        ),
        ("client", "extendedKeyUsage=clientAuth\n".to_string()),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        )?;
        std::fs::write(dir.join(format!("{name}.ext")), ext)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
            ],
        )?;
    }
    Ok(())
}

/// etcd in its namespace, TLS with client certificates; killed on drop.
struct Etcd {
    child: Child,
}

impl Etcd {
    fn start(ns: &Netns, dir: &Path, certs: &Path) -> anyhow::Result<Self> {
        let url = format!("https://{ETCD}:2379");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "etcd",
                "--name",
                "t",
                "--data-dir",
            ])
            .arg(dir.join("etcd-data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &format!("http://{ETCD}:2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{ETCD}:2380"),
            ])
            .args(["--initial-cluster", &format!("t=http://{ETCD}:2380")])
            .arg("--cert-file")
            .arg(certs.join("server.pem"))
            .arg("--key-file")
            .arg(certs.join("server.key"))
            .arg("--trusted-ca-file")
            .arg(certs.join("ca.pem"))
            .arg("--client-cert-auth")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd")?;
        Ok(Self { child })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node's namespace beside the testbed's LB (eth0 at 198.18.0.<last>).
fn host(switch: &Netns, name: &str, last: u8) -> anyhow::Result<Netns> {
    let ns = Netns::new(&format!("xro-{name}"))?;
    switch.ip(&[
        "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ])?;
    switch.ip(&["link", "set", name, "master", "br0", "up"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    ns.ip(&["addr", "add", &format!("198.18.0.{last}/24"), "dev", "eth0"])?;
    Ok(ns)
}

struct Fleet {
    certs: PathBuf,
    config: PathBuf,
}

impl Fleet {
    fn tls(&self) -> Vec<String> {
        [
            ("--fleet-ca", "ca.pem"),
            ("--fleet-cert", "client.pem"),
            ("--fleet-key", "client.key"),
        ]
        .iter()
        .flat_map(|(flag, file)| {
            [
                flag.to_string(),
                self.certs.join(file).display().to_string(),
            ]
        })
        .collect()
    }

    fn start(&self, ns: &Netns, dir: &Path, node: &str) -> anyhow::Result<Daemon> {
        let dir = dir.join(node);
        std::fs::create_dir_all(&dir)?;
        let mut args: Vec<String> = [
            "--bake-window",
            "6s",
            "--bake-hold",
            "1s",
            "--fleet",
            &format!("https://{ETCD}:2379/t"),
            "--node",
            node,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.tls());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Daemon::start_with(ns, &self.config, &dir, &args)
    }

    /// `xlb -o json fleet ARGS --etcd ...` from `ns`.
    fn cli(&self, ns: &Netns, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.command(ns, args)?.stdin(Stdio::null()).output()?)
    }

    fn command(&self, ns: &Netns, args: &[&str]) -> anyhow::Result<Command> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(xlb_binary()?)
            .args(["-o", "json", "fleet"])
            .args(args)
            .args(["--etcd", &format!("https://{ETCD}:2379/t")])
            .args(self.tls());
        Ok(cmd)
    }

    /// `fleet status`: (exit code, document); asked again (five times at
    /// most) while the store does not answer (exit 4: a busy host).
    fn status(&self, ns: &Netns) -> anyhow::Result<(i32, serde_json::Value)> {
        for _ in 0..5 {
            let out = self.cli(ns, &["status"])?;
            if out.status.code() == Some(4) {
                eprintln!("fleet status: {}", describe(&out));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            let doc = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("fleet status: {}", describe(&out)))?;
            return Ok((out.status.code().unwrap_or(-1), doc));
        }
        bail!("fleet status: the store did not answer five times")
    }

    /// Poll `fleet status` until `ok` says so (bounded); a store that does
    /// not answer yet (etcd starting) is polled again.
    fn wait_for(
        &self,
        ns: &Netns,
        what: &str,
        seconds: u64,
        ok: impl Fn(i32, &serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let last = match self.status(ns) {
                Ok((code, doc)) if ok(code, &doc) => return Ok(doc),
                Ok((code, doc)) => format!("exit {code}: {doc}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("{what}: not within {seconds} s; last status: {last}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn node<'a>(doc: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    doc["nodes"].as_array()?.iter().find(|n| n["node"] == name)
}

fn run(dir: &Path) -> anyhow::Result<()> {
    let certs = dir.join("certs");
    certificates(&certs)?;
    let bed = Testbed::new("xro", 3)?;
    let _servers = Servers::start(&bed)?;
    let b_ns = host(&bed.switch, "nb", 3)?;
    let c_ns = host(&bed.switch, "nc", 4)?;
    let etcd_ns = host(&bed.switch, "etcd", 5)?;
    let mut etcd = Etcd::start(&etcd_ns, dir, &certs)?;
    let files: Vec<PathBuf> = [
        ("start", [1, 1, 2]),
        ("good", [2, 2, 3]),
        ("skew", [8, 1, 1]),
        ("later", [2, 2, 4]),
        ("last", [1, 1, 2]),
    ]
    .iter()
    .map(|(name, weights)| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config(weights)).map(|()| path)
    })
    .collect::<Result<_, _>>()?;
    let fleet = Fleet {
        certs: certs.clone(),
        config: files[0].clone(),
    };
    // Node a is the testbed's LB (the client's route to the VIPs): the
    // canary, first by name.
    let a = fleet.start(&bed.lb.ns, dir, "a")?;
    let b = fleet.start(&b_ns, dir, "b")?;
    let mut c = Some(fleet.start(&c_ns, dir, "c")?);
    let cli_ns = &bed.client.ns;
    fleet.wait_for(cli_ns, "three nodes report", 30, |_, d| {
        d["nodes"].as_array().is_some_and(|n| n.len() == 3)
    })?;

    let stop = Arc::new(AtomicBool::new(false));
    let target = SocketAddr::new(VIP4.into(), TCP_PORT);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let traffic =
            scope.spawn(|| drive_paced(&bed.client.ns, target, Proto::Tcp, 300, stop.clone(), 240));
        let checked = (|| -> anyhow::Result<()> {
            let apply = |file: &Path, extra: &[&str]| -> anyhow::Result<Output> {
                let mut args = vec!["apply", file.to_str().context("path")?, "--wait"];
                args.extend_from_slice(extra);
                fleet.cli(cli_ns, &args)
            };
            // The fleet's first revision: the config every node started on.
            let out = apply(&files[0], &["-m", "first"])?;
            ensure!(out.status.success(), "first rollout: {}", describe(&out));

            // A good change: the canary bakes it, then the others.
            let out = apply(&files[1], &["-m", "good weights"])?;
            ensure!(out.status.success(), "good rollout: {}", describe(&out));
            // Every node on it (one whose report lapsed on a busy host was
            // skipped, and converges to the fleet's revision).
            let doc = fleet.wait_for(cli_ns, "every node on revision 2", 60, |code, d| {
                code == 0 && d["desired"] == 2
            })?;
            let fps: Vec<&serde_json::Value> = ["a", "b", "c"]
                .iter()
                .map(|n| &node(&doc, n).expect("node")["fingerprint"])
                .collect();
            ensure!(fps.iter().all(|f| *f == fps[0]), "{doc}");
            for n in ["a", "b", "c"] {
                let r = node(&doc, n).context("node")?;
                ensure!(r["serving"] == 2 && r["last"]["outcome"] == "baked", "{r}");
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(stderr.contains("[a] [b c]"), "canary first: {stderr}");
            let b_live = node(&doc, "b").context("b")?["live_revision"].clone();

            // The skewing change, forced: the canary's bake rolls it back and
            // the rollout rolls back; b and c never apply it.
            let out = apply(&files[2], &["--force", "-m", "skew"])?;
            ensure!(
                out.status.code() == Some(1),
                "skew rollout: {}",
                describe(&out)
            );
            let (_, doc) = fleet.status(cli_ns)?;
            ensure!(
                doc["desired"] == 2 && doc["rollout"]["state"] == "rolled_back",
                "{doc}"
            );
            let ra = node(&doc, "a").context("a")?;
            ensure!(
                ra["last"]["revision"] == 3
                    && ra["last"]["outcome"] == "rolled_back"
                    && ra["serving"] == 2,
                "{ra}"
            );
            for n in ["b", "c"] {
                let r = node(&doc, n).context("node")?;
                ensure!(r["last"]["revision"] == 2 && r["serving"] == 2, "{r}");
            }
            ensure!(
                node(&doc, "b").context("b")?["live_revision"] == b_live,
                "{doc}"
            );
            eprintln!(
                "skew: {}",
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .last()
                    .unwrap_or("")
            );

            // The CLI killed mid-rollout: a second one sees it; it finishes.
            let mut first = fleet
                .command(
                    cli_ns,
                    &["apply", files[3].to_str().context("path")?, "--wait"],
                )?
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            std::thread::sleep(Duration::from_millis(1500));
            first.kill()?;
            first.wait()?;
            let (code, doc) = fleet.status(cli_ns)?;
            ensure!(
                code == 1 && doc["rollout"]["state"] == "running" && doc["rollout"]["to"] == 4,
                "{doc}"
            );
            fleet.wait_for(cli_ns, "the rollout of a killed CLI ends", 60, |code, d| {
                code == 0 && d["desired"] == 4
            })?;

            // A node down during a rollout: skipped (its report expires),
            // then it converges when it returns, through its own bake.
            let mut down = c.take().context("c")?;
            down.stop()?;
            fleet.wait_for(cli_ns, "c's report expires", 30, |_, d| {
                node(d, "c").is_none()
            })?;
            let out = apply(&files[4], &["-m", "while c is down"])?;
            ensure!(
                out.status.success(),
                "rollout without c: {}",
                describe(&out)
            );
            drop(down);
            let back = fleet.start(&c_ns, dir, "c")?;
            let doc = fleet.wait_for(cli_ns, "c converges", 60, |code, d| {
                code == 0 && node(d, "c").is_some_and(|r| r["serving"] == 5)
            })?;
            ensure!(
                node(&doc, "c").context("c")?["last"]["outcome"] == "baked",
                "{doc}"
            );
            c = Some(back);

            // etcd stopped: forwarding and the local status go on.
            etcd.stop();
            let before = Instant::now();
            std::thread::sleep(Duration::from_secs(6));
            let status = a.status()?;
            ensure!(status["revision"].as_u64().is_some(), "{status}");
            ensure!(
                a.log_text().contains("fleet: unreachable"),
                "a says so: {}",
                a.log_text()
            );
            etcd = Etcd::start(&etcd_ns, dir, &certs)?;
            fleet.wait_for(cli_ns, "the nodes report again", 60, |code, d| {
                code == 0
                    && d["nodes"].as_array().is_some_and(|n| n.len() == 3)
                    && d["desired"] == 5
            })?;
            eprintln!(
                "etcd back; the fleet agrees {:?} after it stopped",
                before.elapsed()
            );
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let exchanges = traffic.join().expect("traffic");
        checked?;
        let tally = Tally::of(&exchanges);
        ensure!(
            tally.failures.is_empty() && exchanges.len() > 1000,
            "{} of {} exchanges failed: {:?}",
            tally.failures.len(),
            exchanges.len(),
            tally.failures.first()
        );
        eprintln!("{} exchanges through the canary, 0 failed", exchanges.len());
        Ok(())
    })?;
    drop((a, b, c));
    Ok(())
}
