//! Control-socket security (issue 7, part 5): the daemon, confined as the
//! systemd unit with its socket-group drop-in confines it (Group=GROUP,
//! RuntimeDirectoryMode=0750, XLB_SOCKET_GROUP=GROUP), serves its socket
//! 0660 root:GROUP; a member of the group who is not root (`nobody` with
//! the group) may read and change; `nobody` without the group cannot even
//! connect; with the permissions loosened by hand it can read, but every
//! change is refused by the daemon with a message naming its uid and who is
//! allowed; root may change. The revisions and the audit log record the
//! verified user, and the user the client claimed when it differs. A daemon
//! that could not give its socket to the group, or whose directory the
//! group cannot enter, refuses to start.
//!
//! Needs root (namespaces, groupadd, setpriv). Namespaces: `xlbsa-*`; a
//! temporary group `xlbsa-ops`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use tests::confine::{Bpffs, Confinement, detach, run_to_exit};
use tests::netns::sh;
use tests::testbed::{self, Testbed};
use tests::xlbd::{Daemon, xlb_binary};

const GROUP: &str = "xlbsa-ops";
const NOBODY: u32 = 65534;

/// A group made for the test, deleted on drop.
struct TempGroup {
    name: String,
    gid: u32,
}

impl TempGroup {
    fn new(name: &str) -> anyhow::Result<Self> {
        // Left by a killed run: remove it first.
        let _ = Command::new("groupdel")
            .arg(name)
            .stderr(Stdio::null())
            .status();
        sh(&["groupadd", name])?;
        let line = sh(&["getent", "group", name])?;
        let gid = line
            .split(':')
            .nth(2)
            .context("getent group output")?
            .parse()?;
        Ok(Self {
            name: name.to_string(),
            gid,
        })
    }
}

impl Drop for TempGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).status();
    }
}

/// The xlb CLI as `nobody`, with the given supplementary groups, claiming
/// to be "mallory" (SUDO_USER: a client may claim any name).
fn as_nobody(socket: &Path, groups: &[u32], args: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg("--")
        .arg(xlb_binary()?)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env("SUDO_USER", "mallory")
        .stdin(Stdio::null())
        .output()
        .context("running xlb as nobody")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> anyhow::Result<(u32, u32)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.mode() & 0o7777, meta.gid()))
}

/// The recorded revisions, as `xlb history -o json` shows them to root.
fn history(daemon: &Daemon) -> anyhow::Result<Vec<serde_json::Value>> {
    let out = daemon.xlb(&["-o", "json", "history"])?;
    ensure!(out.status.success(), "history: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["revisions"].as_array().cloned().unwrap_or_default())
}

#[test]
fn only_root_and_the_socket_group_may_change_state() {
    tests::require_privileges!();
    tests::in_workdir("xlbsa-auth", |dir| {
        let started = Instant::now();
        // nobody must reach the files it is given: the work dir 0755.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        let group = TempGroup::new(GROUP)?;
        let bed = Testbed::new("xlbsa", 2)?;
        let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
        let config = dir.join("xlb.toml");
        std::fs::write(&config, testbed::config(&[1, 1]))?;
        let changed = dir.join("changed.toml");
        std::fs::write(&changed, testbed::config(&[1, 2]))?;
        for f in [&config, &changed] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644))?;
        }
        let (config, changed) = (config.to_str().unwrap(), changed.to_str().unwrap());

        // What systemd makes of RuntimeDirectory=xlb with Group= and
        // RuntimeDirectoryMode=0750.
        let run = dir.join("run");
        std::fs::create_dir(&run)?;
        std::os::unix::fs::chown(&run, Some(0), Some(group.gid))?;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750))?;
        let socket = run.join("xlb.sock");
        let socket_arg = socket.to_str().unwrap();
        let state = dir.join("state");
        let run_args = [
            "--socket",
            socket_arg,
            "run",
            "--config",
            config,
            "--state-dir",
            state.to_str().unwrap(),
            "--bpffs",
            bpffs.arg(),
        ];
        let mut confined = Confinement::unit()?;
        confined.gid = Some(group.gid);
        confined.env = vec![("XLB_SOCKET_GROUP".into(), GROUP.into())];
        let mut daemon = Daemon::spawn(
            confined.command(&bed.lb.ns.name, &run_args)?,
            &socket,
            &dir.join("xlb.log"),
        )?;

        // 1. The socket belongs to the group, 0660; the directory is as made.
        ensure!(
            mode(&socket)? == (0o660, group.gid),
            "socket {:o}/{}",
            mode(&socket)?.0,
            mode(&socket)?.1
        );
        ensure!(mode(&run)? == (0o750, group.gid), "dir {:?}", mode(&run)?);

        // 2. A member of the group (not root) reads and changes; the record
        // names the verified user and the claimed one.
        let out = as_nobody(&socket, &[group.gid], &["status"])?;
        ensure!(out.status.success(), "member status: {}", stderr(&out));
        let out = as_nobody(
            &socket,
            &[group.gid],
            &["apply", changed, "-m", "by a member"],
        )?;
        ensure!(out.status.success(), "member apply: {}", stderr(&out));
        let revisions = history(&daemon)?;
        let last = revisions.last().context("no revisions")?;
        ensure!(
            last["number"] == 2 && last["user"] == "nobody (uid 65534, client says mallory)",
            "{last}"
        );

        // 3. Not in the group: the file permissions keep it out.
        let out = as_nobody(&socket, &[], &["status"])?;
        ensure!(
            out.status.code() == Some(4) && stderr(&out).contains("Permission denied"),
            "non-member status: {} {}",
            out.status,
            stderr(&out)
        );

        // 4. Permissions loosened by hand: it reads, but every change is
        // refused by the daemon, naming the uid and who may.
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))?;
        for args in [vec!["status"], vec!["history"], vec!["plan", changed]] {
            let out = as_nobody(&socket, &[], &args)?;
            ensure!(
                out.status.success(),
                "non-member {args:?}: {}",
                stderr(&out)
            );
        }
        for (args, op) in [
            (vec!["apply", config], "apply"),
            (vec!["rollback"], "rollback"),
            (vec!["repair"], "repair"),
            (vec!["weight", "web", "b1", "5"], "edit"),
            (vec!["drain", "web", "b1"], "edit"),
        ] {
            let out = as_nobody(&socket, &[], &args)?;
            let said = stderr(&out);
            ensure!(
                out.status.code() == Some(1)
                    && said.contains(&format!("{op} refused: uid 65534 (nobody)"))
                    && said.contains(&format!("members of group {GROUP} (gid {})", group.gid))
                    && said.contains("root (uid 0)"),
                "non-member {args:?}: exit {} {said}",
                out.status
            );
        }
        ensure!(
            history(&daemon)?.len() == revisions.len(),
            "a refused change made a revision"
        );

        // 5. Root changes.
        let out = Command::new(xlb_binary()?)
            .args(["--socket", socket_arg, "apply", config])
            .env_remove("SUDO_USER")
            .output()?;
        ensure!(out.status.success(), "root apply: {}", stderr(&out));
        let last = history(&daemon)?.last().cloned().context("no revisions")?;
        ensure!(last["number"] == 3 && last["user"] == "root", "{last}");
        let audit = std::fs::read_to_string(state.join("audit.log"))?;
        ensure!(
            audit.contains("\"user\":\"nobody (uid 65534, client says mallory)\"")
                && audit.contains("\"user\":\"root\""),
            "audit log: {audit}"
        );
        let log = daemon.log_text();
        ensure!(
            log.contains("apply refused: uid 65534 (nobody)"),
            "the daemon did not log the refusal: {log}"
        );
        let exit = daemon.stop()?;
        ensure!(exit.success(), "exit {exit}: {}", daemon.log_text());
        detach(&bed.lb.ns.name, &bpffs, "eth0")?;

        // 6. Refused at startup, before anything is loaded: a daemon that
        // is not in the group (no Group=) and has no CAP_CHOWN; a
        // directory the group cannot enter; a group that does not exist.
        let attempt = |name: &str, gid: Option<u32>, dir_mode: Option<u32>, group: &str| {
            let d = dir.join(name);
            std::fs::create_dir_all(&d)?;
            if let Some(m) = dir_mode {
                std::fs::create_dir(d.join("run"))?;
                std::fs::set_permissions(d.join("run"), std::fs::Permissions::from_mode(m))?;
            }
            let socket = d.join("run/xlb.sock");
            let mut c = Confinement::unit()?;
            c.gid = gid;
            let state = d.join("state");
            let args = [
                "--socket",
                socket.to_str().unwrap(),
                "run",
                "--config",
                config,
                "--state-dir",
                state.to_str().unwrap(),
                "--bpffs",
                bpffs.arg(),
                "--socket-group",
                group,
            ];
            run_to_exit(c.command(&bed.lb.ns.name, &args)?, Duration::from_secs(20))
        };
        let out = attempt("not-member", None, None, GROUP)?;
        ensure!(
            out.status.code() == Some(2)
                && stderr(&out).contains(&format!("not in group {GROUP} and has no CAP_CHOWN")),
            "not a member: {} {}",
            out.status,
            stderr(&out)
        );
        let out = attempt("closed-dir", Some(group.gid), Some(0o700), GROUP)?;
        ensure!(
            out.status.code() == Some(2)
                && stderr(&out).contains(&format!("members of {GROUP} cannot enter")),
            "closed directory: {} {}",
            out.status,
            stderr(&out)
        );
        let out = attempt("no-group", None, None, "xlbsa-no-such-group")?;
        ensure!(
            out.status.code() == Some(2) && stderr(&out).contains("no such group"),
            "unknown group: {} {}",
            out.status,
            stderr(&out)
        );
        eprintln!(
            "socket 0660 root:{GROUP}; member reads and changes; others refused; took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    });
}
