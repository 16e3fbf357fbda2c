//! The live revision is the source of truth (issue 13, items 3 and 4):
//!
//! - `a_restart_and_a_sighup_keep_live_edits`: `xlb weight`, then a
//!   SIGKILL restart and a SIGHUP with the unchanged `--config` file: the
//!   weight stays (then a drain, and a SIGHUP with an edited file: the drain
//!   stays), and `xlb status` (table and JSON), the log and
//!   `xlb_config_file_differs` say the file differs, until `xlb apply FILE`.
//!   An edited file over its own revision still goes in on SIGHUP.
//! - `an_interrupted_bake_resumes_and_is_recorded`: a daemon killed while
//!   its apply bakes; the next one finishes the bake and records `baked`.
//! - `an_apply_that_cannot_be_recorded_is_undone`: the state directory is a
//!   small tmpfs, filled up: `xlb apply` exits 4 naming "No space left on
//!   device", nothing says applied, the tables are the previous revision's
//!   (a restart adopts them: "they hold exactly it").
//!
//! Root and namespaces (`xlv-*`); each daemon pins on a bpffs in the test's
//! own directory (`--bpffs`), so the pins outlive it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use tests::confine::Bpffs;
use tests::testbed::{self, Testbed};
use tests::xlbd::Daemon;

fn start(
    bed: &Testbed,
    file: &Path,
    dir: &Path,
    bpffs: &Bpffs,
    extra: &[&str],
) -> anyhow::Result<Daemon> {
    let mut args = vec!["--bpffs", bpffs.arg()];
    args.extend_from_slice(extra);
    Daemon::start_with(&bed.lb.ns, file, dir, &args)
}

fn ok(daemon: &Daemon, args: &[&str]) -> anyhow::Result<String> {
    let out = daemon.xlb(args)?;
    ensure!(
        out.status.success(),
        "xlb {args:?}: {}",
        tests::xlbd::describe(&out)
    );
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Backend `b` of VIP web in `xlb status -o json`.
fn backend(status: &serde_json::Value, b: &str) -> anyhow::Result<serde_json::Value> {
    let vip = status["vips"]
        .as_array()
        .context("vips")?
        .iter()
        .find(|v| v["name"] == "web")
        .context("web")?;
    let be = vip["backends"]
        .as_array()
        .context("backends")?
        .iter()
        .find(|x| x["name"] == b)
        .context("backend")?;
    Ok(be.clone())
}

fn weight(status: &serde_json::Value, b: &str) -> anyhow::Result<u64> {
    backend(status, b)?["weight"].as_u64().context("weight")
}

fn wait_log(daemon: &Daemon, needle: &str, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if daemon.log_text().matches(needle).count() >= count {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "no {needle:?} (x{count}) in the log:\n{}",
        daemon.log_text()
    )
}

/// `/metrics` of the daemon in `bed`'s LB namespace.
fn metrics(bed: &Testbed) -> anyhow::Result<String> {
    bed.lb.ns.exec(&[
        "curl",
        "-sf",
        "--max-time",
        "5",
        "http://127.0.0.1:9470/metrics",
    ])
}

fn history(daemon: &Daemon) -> anyhow::Result<Vec<serde_json::Value>> {
    let v: serde_json::Value = serde_json::from_str(&ok(daemon, &["-o", "json", "history"])?)?;
    Ok(v["revisions"].as_array().context("revisions")?.clone())
}

#[test]
fn a_restart_and_a_sighup_keep_live_edits() {
    tests::require_privileges!();
    tests::in_workdir("lv-drain", drain);
}

fn drain(dir: &Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xlv-d", 3)?;
    let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
    let file = dir.join("xlb.toml");
    std::fs::write(&file, testbed::config(&[1, 1, 1]))?;
    let name = file.display().to_string();
    let no_bake = ["--bake-window", "0s"];
    let mut daemon = start(&bed, &file, dir, &bpffs, &no_bake)?;
    ok(&daemon, &["weight", "web", "b2", "2", "--force"])?;
    let edited = daemon.status()?;
    ensure!(weight(&edited, "b2")? == 2, "{edited}");
    let live = edited["revision"].as_u64().context("revision")?;

    // A crash and a start with the same file: the weight stays.
    daemon.kill()?;
    let daemon = start(&bed, &file, dir, &bpffs, &no_bake)?;
    let status = daemon.status()?;
    ensure!(
        status["revision"] == live && weight(&status, "b2")? == 2,
        "the restart reverted `xlb weight` (revision {live}): {status}"
    );
    let cf = &status["config_file"];
    ensure!(
        cf["file"] == name.as_str() && cf["differs"] == true && cf["live_revision"] == live,
        "status must say the file differs: {cf}"
    );
    let table = ok(&daemon, &["status"])?;
    ensure!(
        table.contains(&format!(
            "config file: {name} differs from live revision {live}"
        )),
        "{table}"
    );
    ensure!(
        daemon.log_text().contains("differs from live revision"),
        "{}",
        daemon.log_text()
    );
    let m = metrics(&bed)?;
    let series = format!("xlb_config_file_differs{{file=\"{name}\"}} 1");
    ensure!(m.contains(&series), "no {series} in /metrics");

    // SIGHUP with the same file: kept.
    daemon.hangup()?;
    wait_log(&daemon, "keeping revision", 1)?;
    let status = daemon.status()?;
    ensure!(
        status["revision"] == live && weight(&status, "b2")? == 2,
        "SIGHUP reverted `xlb weight`: {status}"
    );

    // A drain on top, and an edited file: kept as well.
    ok(&daemon, &["drain", "web", "b3", "--force"])?;
    let live = daemon.status()?["revision"].as_u64().context("revision")?;
    // An edited file, still over a drain: kept as well.
    std::fs::write(&file, testbed::config(&[2, 1, 1]))?;
    daemon.hangup()?;
    wait_log(&daemon, "keeping revision", 2)?;
    ensure!(
        daemon.status()?["revision"] == live,
        "an edit over a drain went in"
    );

    // `xlb apply FILE` takes the file, and clears it.
    ok(&daemon, &["apply", "--force", &name])?;
    let status = daemon.status()?;
    ensure!(
        weight(&status, "b2")? == 1
            && backend(&status, "b3")?["state"] == "active"
            && status["config_file"]["differs"] == false,
        "{status}"
    );
    let m = metrics(&bed)?;
    let series = format!("xlb_config_file_differs{{file=\"{name}\"}} 0");
    ensure!(m.contains(&series), "no {series} in /metrics");

    // Now the file is the live revision: an edit goes in on SIGHUP.
    let before = status["revision"].as_u64().context("revision")?;
    std::fs::write(&file, testbed::config(&[3, 2, 2]))?;
    daemon.hangup()?;
    wait_log(&daemon, "SIGHUP: applied", 1)?;
    ensure!(
        daemon.status()?["revision"] == before + 1,
        "the edit did not go in"
    );
    Ok(())
}

#[test]
fn an_interrupted_bake_resumes_and_is_recorded() {
    tests::require_privileges!();
    tests::in_workdir("lv-bake", bake);
}

fn bake(dir: &Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xlv-b", 3)?;
    let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
    let file = dir.join("xlb.toml");
    std::fs::write(&file, testbed::config(&[1, 1, 1]))?;
    let window = ["--bake-window", "4s"];
    let mut daemon = start(&bed, &file, dir, &bpffs, &window)?;
    let other = dir.join("other.toml");
    std::fs::write(&other, testbed::config(&[1, 1, 2]))?;
    ok(
        &daemon,
        &["apply", "--force", other.to_str().context("path")?],
    )?;
    let revs = history(&daemon)?;
    let baking = revs.last().context("no revision")?.clone();
    ensure!(baking["outcome"]["type"] == "baking", "{baking}");
    let number = baking["number"].as_u64().context("number")?;
    daemon.kill()?;

    let daemon = start(&bed, &file, dir, &bpffs, &window)?;
    ensure!(
        daemon.status()?["revision"] == number,
        "the restart did not keep revision {number}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let revs = history(&daemon)?;
        let rev = revs
            .iter()
            .find(|r| r["number"] == number)
            .context("the baking revision is gone")?;
        if rev["outcome"]["type"] == "baked" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "revision {number} was never judged after the restart: {rev}\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let bake = &daemon.status()?["bake"];
    ensure!(
        bake["revision"] == number && bake["state"] == "baked",
        "{bake}"
    );
    // The other file's apply is kept: the start's file would revert it.
    ensure!(daemon.status()?["config_file"]["differs"] == true);
    Ok(())
}

#[test]
fn an_apply_that_cannot_be_recorded_is_undone() {
    tests::require_privileges!();
    tests::in_workdir("lv-full", full);
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)?;
        tests::netns::sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            path.to_str().context("path")?,
        ])?;
        Ok(Self(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Write zeros into `path` until the filesystem is full, to the last
/// byte: blocks of 64 KiB, then 4 KiB, then single bytes (bounded).
fn fill(path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path)?;
    for size in [64 * 1024, 4096, 1] {
        let block = vec![0u8; size];
        let mut full = false;
        for _ in 0..4096 {
            match f.write(&block) {
                Ok(n) if n == size => {}
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => {
                    full = true;
                    break;
                }
                Err(e) => bail!("filling {}: {e}", path.display()),
            }
        }
        ensure!(full, "{} did not fill up", path.display());
    }
    f.sync_all().ok();
    Ok(())
}

fn full(dir: &Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xlv-r", 3)?;
    let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
    // The daemon's state directory is `dir/state`: a 1 MiB tmpfs.
    let tmpfs = Tmpfs::mount(&dir.join("state"), "1m")?;
    let file = dir.join("xlb.toml");
    std::fs::write(&file, testbed::config(&[1, 1, 1]))?;
    let no_bake = ["--bake-window", "0s"];
    let mut daemon = start(&bed, &file, dir, &bpffs, &no_bake)?;
    let live = daemon.status()?["revision"].as_u64().context("revision")?;
    fill(&dir.join("state").join("filler"))?;

    let changed = dir.join("changed.toml");
    std::fs::write(&changed, testbed::config(&[1, 1, 3]))?;
    let out = daemon.xlb(&["apply", "--force", changed.to_str().context("path")?])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(4)
            && stderr.contains("could not be recorded")
            && stderr.contains("No space left on device")
            && !String::from_utf8_lossy(&out.stdout).contains("applied"),
        "an unrecorded apply must fail with exit 4 naming the cause: {}",
        tests::xlbd::describe(&out)
    );
    let status = daemon.status()?;
    ensure!(status["revision"] == live, "{status}");
    let weight = status["vips"][0]["backends"][2]["weight"].clone();
    ensure!(weight == 1, "b3's weight must be back at 1: {status}");

    // Space again: the kernel holds exactly the recorded revision.
    std::fs::remove_file(dir.join("state").join("filler"))?;
    daemon.kill()?;
    let daemon = start(&bed, &file, dir, &bpffs, &no_bake)?;
    ensure!(
        daemon.log_text().contains(&format!(
            "adopted revision {live} from the pinned maps (they hold exactly it)"
        )),
        "the maps were not left at revision {live}: {}",
        daemon.log_text()
    );
    drop(daemon);
    drop(tmpfs);
    Ok(())
}
