//! The fleet's store for the tests: a real etcd with TLS and client
//! certificates made here by openssl (a CA, etcd's server certificate for
//! [`ETCD`], a client's), and the `xlb fleet` CLI against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use crate::netns::Netns;
use crate::xlbd::{describe, xlb_binary};

/// etcd's address on the fleet's segment.
pub const ETCD: &str = "198.18.0.5";

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
pub fn certificates(dir: &Path) -> anyhow::Result<()> {
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
pub struct Etcd {
    child: Child,
}

impl Etcd {
    pub fn start(ns: &Netns, dir: &Path, certs: &Path) -> anyhow::Result<Self> {
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

    /// etcd's process id (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The CLI's way to the store: its TLS files and the fleet's URL.
#[derive(Clone, Debug)]
pub struct Store {
    pub certs: PathBuf,
    /// The fleet's name (the URL's path).
    pub fleet: String,
}

impl Store {
    /// `https://198.18.0.5:2379/<fleet>`.
    pub fn url(&self) -> String {
        format!("https://{ETCD}:2379/{}", self.fleet)
    }

    /// `--fleet-ca`, `--fleet-cert`, `--fleet-key` with the client's files.
    pub fn tls(&self) -> Vec<String> {
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

    /// `xlb -o json fleet ARGS --etcd ...` from `ns`.
    pub fn cli(&self, ns: &Netns, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.command(ns, args)?.stdin(Stdio::null()).output()?)
    }

    pub fn command(&self, ns: &Netns, args: &[&str]) -> anyhow::Result<Command> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(xlb_binary()?)
            .args(["-o", "json", "fleet"])
            .args(args)
            .args(["--etcd", &self.url()])
            .args(self.tls());
        Ok(cmd)
    }

    /// `fleet status`: (exit code, document); asked again (five times at
    /// most) while the store does not answer (exit 4: a busy host).
    pub fn status(&self, ns: &Netns) -> anyhow::Result<(i32, serde_json::Value)> {
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
    pub fn wait_for(
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

/// Node `name`'s report in a `fleet status` document.
pub fn node<'a>(doc: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    doc["nodes"].as_array()?.iter().find(|n| n["node"] == name)
}
