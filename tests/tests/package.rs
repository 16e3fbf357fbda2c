//! The Debian package (issue 17), installed on this machine. Needs root.
//!
//! Uses the package `cargo xtask package` built (`cargo xtask test` builds
//! it before the tests; `XLB_DEB` names another), and makes "the previous
//! package" from it with dpkg-deb: the same files under a lower version.
//!
//! - The previous package installs with `dpkg -i`: `xlb --version` and
//!   `xlb version -o json` answer, `man xlb` and `man xlb-run` render, the
//!   installed unit passes `systemd-analyze verify`, the bash completion
//!   loads and completes a subcommand, the conffile validates, the `xlb`
//!   group exists, and the service is neither enabled nor started.
//! - Under a steady stream of new TCP connections, a daemon runs from
//!   /usr/bin/xlb with its pins; the package is upgraded with `dpkg -i`
//!   while it runs, and the daemon is restarted on the new binary (what the
//!   postinst's `try-restart` does under systemd): every connection
//!   succeeds, no TCP segment is retransmitted, the new daemon adopts the
//!   revision and answers `version`.
//! - `dpkg --purge` removes every file and the revision store; the pins are
//!   untouched by every maintainer script.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use tests::client::{self, Proto};
use tests::confine::Bpffs;
use tests::loss::retransmitted;
use tests::servers::Servers;
use tests::testbed::{TCP_PORT, Testbed, VIP4};
use tests::xlbd::{Daemon, describe};

/// New connections a second during the upgrade.
const NEW_PER_SECOND: u32 = 50;

/// The package `cargo xtask package` built: `XLB_DEB`, else the newest
/// .deb in `<target>/debian/`.
fn built_package() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("XLB_DEB") {
        return Ok(PathBuf::from(p));
    }
    // target/<profile>/deps/package-<hash>
    let exe = std::env::current_exe()?;
    let target = exe.ancestors().nth(3).context("the target folder")?;
    let dir = target.join("debian");
    let newest = std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max();
    match newest {
        Some((_, p)) => Ok(p),
        None => bail!(
            "no .deb in {}: run `cargo xtask package` first (`cargo xtask test` does), or set XLB_DEB",
            dir.display()
        ),
    }
}

fn cmd(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))
}

/// Run; fail naming the command and its output unless it succeeds.
fn ok(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = cmd(program, args)?;
    ensure!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        describe(&out)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The installed version of package xlb, if any.
fn installed_version() -> Option<String> {
    let out = cmd("dpkg-query", &["-W", "-f=${Status} ${Version}", "xlb"]).ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.strip_prefix("install ok installed ")
        .map(|v| v.trim().to_string())
}

/// `deb` with its version lowered to `<version>~previous`: the package an
/// upgrade starts from.
fn previous_package(deb: &Path, dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let tree = dir.join("previous");
    ok(
        "dpkg-deb",
        &[
            "-R",
            deb.to_str().context("path")?,
            tree.to_str().context("path")?,
        ],
    )?;
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control)?;
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .context("no Version: in the package's control file")?
        .to_string();
    let previous = format!("{version}~previous");
    std::fs::write(
        &control,
        text.replace(
            &format!("Version: {version}"),
            &format!("Version: {previous}"),
        ),
    )?;
    let out = dir.join("xlb-previous.deb");
    ok(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "-b",
            tree.to_str().context("path")?,
            out.to_str().context("path")?,
        ],
    )?;
    Ok((out, previous))
}

/// Leaves the machine as it was: purges the package, removes the group it
/// made (system groups outlive a purge, and this one did not exist before).
struct Installed {
    group_existed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = cmd("dpkg", &["--purge", "xlb"]);
        if !self.group_existed {
            let _ = cmd("delgroup", &["--system", "--quiet", "xlb"]);
        }
    }
}

fn group_exists(name: &str) -> bool {
    cmd("getent", &["group", name]).is_ok_and(|o| o.status.success())
}

#[test]
fn the_package_installs_upgrades_under_traffic_and_purges() {
    tests::require_privileges!();
    tests::in_workdir("package", package);
}

fn package(dir: &Path) -> anyhow::Result<()> {
    let deb = built_package()?;
    let info = ok(
        "dpkg-deb",
        &["-f", deb.to_str().context("path")?, "Version"],
    )?;
    let version = info.trim().to_string();
    if let Some(v) = installed_version() {
        // Ours, left by a run that was killed: purge it. Anything else is
        // an operator's install, which a test must not touch.
        ensure!(
            v.ends_with("~previous") || v == version,
            "package xlb {v} is installed on this machine; this test installs and purges xlb, remove it first"
        );
        ok("dpkg", &["--purge", "xlb"])?;
    }
    let (previous, previous_version) = previous_package(&deb, dir)?;
    let _installed = Installed {
        group_existed: group_exists("xlb"),
    };

    // The previous package, fresh.
    ok("dpkg", &["-i", previous.to_str().context("path")?])?;
    ensure!(installed_version().as_deref() == Some(previous_version.as_str()));
    installed_files_work()?;

    upgrade_under_traffic(dir, &deb, &version)?;

    ok("dpkg", &["--purge", "xlb"])?;
    ensure!(
        installed_version().is_none(),
        "xlb is still installed after the purge"
    );
    for gone in [
        "/usr/bin/xlb",
        "/lib/systemd/system/xlb.service",
        "/etc/xlb/xlb.toml",
        "/usr/share/xlb",
        "/usr/share/man/man1/xlb.1.gz",
        "/usr/share/bash-completion/completions/xlb",
        "/var/lib/xlb",
    ] {
        ensure!(!Path::new(gone).exists(), "{gone} is left after the purge");
    }
    Ok(())
}

/// What a fresh install must give an operator.
fn installed_files_work() -> anyhow::Result<()> {
    let v = ok("/usr/bin/xlb", &["--version"])?;
    ensure!(v.starts_with("xlb "), "xlb --version: {v}");
    let json: serde_json::Value = serde_json::from_str(&ok(
        "/usr/bin/xlb",
        &["version", "-o", "json", "--socket", "/nonexistent.sock"],
    )?)?;
    ensure!(
        json["client"]["layout_version"] == lb_common::LAYOUT_VERSION
            && json["client"]["object_build_id"]
                .as_str()
                .is_some_and(|s| s.len() == 16)
            && json["client"]["git_commit"]
                .as_str()
                .is_some_and(|c| c != "unknown")
            && json["daemon"].is_null(),
        "xlb version -o json: {json}"
    );

    // man: the page of the binary and of a subcommand, rendered.
    for (page, needle) in [("xlb", "load balancer"), ("xlb-run", "--config")] {
        let out = Command::new("man")
            .args(["-P", "cat", page])
            .env("MANWIDTH", "100")
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && text.contains(needle),
            "man {page}: {}",
            describe(&out)
        );
    }

    let unit = "/lib/systemd/system/xlb.service";
    let unit_text = std::fs::read_to_string(unit)?;
    ensure!(
        unit_text.contains("ExecStart=/usr/bin/xlb run "),
        "the installed unit does not run /usr/bin/xlb:\n{unit_text}"
    );
    ok("systemd-analyze", &["verify", unit])?;
    // Installed, not enabled: the operator names the interface first.
    ensure!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/xlb.service").exists(),
        "the package enabled xlb.service"
    );

    // The completion loads in bash and completes a subcommand.
    let completed = ok(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/xlb && \
             COMP_WORDS=(xlb vers) COMP_CWORD=1 COMP_LINE='xlb vers' COMP_POINT=8 && \
             _xlb xlb vers xlb && printf '%s\\n' \"${COMPREPLY[@]}\"",
        ],
    )?;
    ensure!(
        completed.lines().any(|l| l.trim() == "version"),
        "bash completion of `xlb vers`: {completed:?}"
    );
    for file in [
        "/usr/share/zsh/vendor-completions/_xlb",
        "/usr/share/fish/vendor_completions.d/xlb.fish",
        "/usr/share/xlb/bird/node.conf",
        "/usr/share/xlb/prometheus/xlb-rules.yml",
        "/usr/share/xlb/grafana/xlb-dashboard.json",
    ] {
        ensure!(Path::new(file).is_file(), "{file} is not installed");
    }

    // The conffile: listed as one, valid as it is, attaching to nothing.
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "xlb"])?;
    ensure!(
        conffiles.contains("/etc/xlb/xlb.toml"),
        "/etc/xlb/xlb.toml is not a conffile: {conffiles}"
    );
    ok("/usr/bin/xlb", &["validate", "/etc/xlb/xlb.toml"])?;
    // Its commented VIP, uncommented, is valid too.
    let text = std::fs::read_to_string("/etc/xlb/xlb.toml")?;
    let example: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if text.contains("# [[vip]]") && is_toml_line(rest) => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let example_file =
        std::env::temp_dir().join(format!("xlb-package-example-{}.toml", std::process::id()));
    std::fs::write(&example_file, &example)?;
    let validated = cmd(
        "/usr/bin/xlb",
        &["validate", example_file.to_str().context("path")?],
    );
    let _ = std::fs::remove_file(&example_file);
    let validated = validated?;
    ensure!(
        validated.status.success(),
        "the conffile's example VIP, uncommented, is not valid: {}\n{example}",
        describe(&validated)
    );
    ensure!(group_exists("xlb"), "the postinst made no `xlb` group");
    Ok(())
}

/// A commented line of the conffile's example: a section or a key.
fn is_toml_line(line: &str) -> bool {
    line.starts_with("[[vip")
        || line
            .split_once(" = ")
            .is_some_and(|(k, _)| !k.contains(' '))
}

fn upgrade_under_traffic(dir: &Path, deb: &Path, version: &str) -> anyhow::Result<()> {
    let bed = Testbed::new("xlbpkg", 3)?;
    let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
    let _servers = Servers::start(&bed)?;
    let file = dir.join("xlb.toml");
    std::fs::write(&file, tests::testbed::config(&[1, 1, 1]))?;
    let start = || -> anyhow::Result<Daemon> {
        let mut run = Command::new("ip");
        run.args(["netns", "exec", &bed.lb.ns.name, "/usr/bin/xlb", "--socket"])
            .arg(dir.join("xlb.sock"))
            .args([
                "run",
                "--bake-window",
                "0s",
                "--bpffs",
                bpffs.arg(),
                "--config",
            ])
            .arg(&file)
            .arg("--state-dir")
            .arg(dir.join("state"));
        Daemon::spawn(run, &dir.join("xlb.sock"), &dir.join("xlb.log"))
    };
    let mut daemon = start()?;
    let revision = daemon.status()?["revision"].as_u64().context("revision")?;

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, stop) = (bed.client.ns.handle(), stop.clone());
        std::thread::spawn(move || {
            client::drive_paced(
                &client,
                SocketAddr::new(VIP4.into(), TCP_PORT),
                Proto::Tcp,
                NEW_PER_SECOND,
                stop,
                120,
            )
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let retrans_before = retransmitted(&bed)?;

    let upgraded = (|| -> anyhow::Result<Daemon> {
        ok("dpkg", &["-i", deb.to_str().context("path")?])?;
        ensure!(
            installed_version().as_deref() == Some(version),
            "after the upgrade: {:?}, not {version}",
            installed_version()
        );
        // The old daemon served through the upgrade; now the restart that
        // `systemctl try-restart` makes: SIGTERM (the pins stay), the new
        // binary starts and adopts them.
        std::thread::sleep(Duration::from_secs(1));
        let status = daemon.stop()?;
        ensure!(status.success(), "xlb run exited with {status} on SIGTERM");
        let new = start()?;
        let log = new.log_text();
        ensure!(
            log.contains(&format!("adopted revision {revision}")),
            "the upgraded daemon did not adopt revision {revision}:\n{log}"
        );
        std::thread::sleep(Duration::from_secs(2));
        Ok(new)
    })();
    stop.store(true, Ordering::Relaxed);
    let exchanges = load.join().expect("client thread");
    let retrans = retransmitted(&bed)? - retrans_before;
    let mut new = upgraded?;

    let tally = client::Tally::of(&exchanges);
    eprintln!(
        "upgrade under traffic: {} connections answered {:?}, {} failed, {retrans} segments retransmitted",
        tally.total_ok(),
        tally.per_backend,
        tally.failures.len()
    );
    ensure!(
        tally.failures.is_empty(),
        "{} of {} connections failed during the upgrade, the first: {:?}",
        tally.failures.len(),
        exchanges.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    ensure!(
        tally.total_ok() > 100,
        "too few connections: {}",
        tally.total_ok()
    );
    ensure!(
        retrans == 0,
        "{retrans} TCP segments were retransmitted: packets were lost"
    );

    // The new daemon says which build it runs.
    let out = Command::new("/usr/bin/xlb")
        .arg("--socket")
        .arg(&new.socket)
        .args(["version", "-o", "json"])
        .output()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("xlb version -o json: {}", describe(&out)))?;
    ensure!(
        json["daemon"]["object_build_id"] == json["client"]["object_build_id"]
            && json["daemon"]["version"] == json["client"]["version"],
        "the daemon's build is not the installed one: {json}"
    );
    new.stop()?;
    tests::confine::detach(&bed.lb.ns.name, &bpffs, "eth0")?;
    Ok(())
}
