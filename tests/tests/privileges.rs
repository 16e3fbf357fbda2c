//! Least privilege and systemd (issue 7, part 4), tested without systemd as
//! PID 1 (it is not here):
//!
//! - the unit and its socket-group drop-in pass `systemd-analyze verify`,
//!   and the offline security review of the unit stays at exposure <= 2.5;
//! - the daemon, confined as the unit confines it (tests/src/confine.rs:
//!   root with exactly the unit's capabilities, no_new_privs, umask 077),
//!   attaches, applies, answers status and forwards a connection; it has
//!   exactly those capabilities in effect; it says READY=1 and pings the
//!   watchdog over NOTIFY_SOCKET, STOPPING=1 at the end; it listens on
//!   loopback only;
//! - with any one capability fewer it refuses at startup, naming it; with
//!   the startup check skipped it fails anyway, inside the kernel: each
//!   capability in the unit is needed;
//! - under strace, all it does stays inside the unit's SystemCallFilter,
//!   RestrictAddressFamilies and MemoryDenyWriteExecute, and it writes only
//!   where the unit lets it (state and runtime directories, /sys/fs/bpf).
//!
//! Needs root (namespaces, setpriv, strace). Namespaces: `xlbsd-*`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use tests::confine::{Bpffs, Confinement, UNIT, detach, effective_of, run_to_exit};
use tests::echo::{EchoServers, probe};
use tests::testbed::{self, Testbed};
use tests::xlbd::{Daemon, xlb_binary};

const DROP_IN: &str = include_str!("../../deploy/systemd/socket-group.conf");

/// Run a command; its output, or an error with its stderr.
fn output(cmd: &mut Command) -> anyhow::Result<std::process::Output> {
    cmd.output().with_context(|| format!("running {cmd:?}"))
}

#[test]
fn the_unit_passes_systemd_analyze() {
    tests::in_workdir("xlbsd-verify", |dir| {
        // verify checks that ExecStart's binary exists: point it at the one
        // just built, nothing else changes.
        let binary = xlb_binary()?;
        let unit = UNIT.replace(
            "ExecStart=/usr/local/bin/xlb ",
            &format!("ExecStart={} ", binary.display()),
        );
        ensure!(unit != UNIT, "no ExecStart=/usr/local/bin/xlb in the unit");
        let path = dir.join("xlb.service");
        std::fs::write(&path, &unit)?;
        std::fs::create_dir_all(dir.join("xlb.service.d"))?;
        std::fs::write(dir.join("xlb.service.d/socket-group.conf"), DROP_IN)?;
        let out = output(Command::new("systemd-analyze").arg("verify").arg(&path))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // verify exits 0 on unknown keys too (it warns): any line about our
        // files is a failure, but for the restart backoff's keys on a
        // systemd older than 254, which ignores them (the unit says what
        // happens then; tests/tests/start.rs checks both schedules).
        let old = systemd_version()? < 254;
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("xlb.service"))
            .filter(|l| {
                !(old
                    && l.contains("Unknown key")
                    && ["RestartSteps", "RestartMaxDelaySec"]
                        .iter()
                        .any(|k| l.contains(k)))
            })
            .collect();
        ensure!(
            out.status.success() && ours.is_empty(),
            "systemd-analyze verify: {}\n{stderr}",
            out.status
        );
        let out = output(
            Command::new("systemd-analyze")
                .args(["security", "--offline=true", "--threshold=25"])
                .arg(&path),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let level = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .context("no exposure level in systemd-analyze security")?;
        eprintln!("systemd-analyze security: {}", level.trim());
        ensure!(out.status.success(), "exposure above 2.5: {level}\n{text}");
        Ok(())
    });
}

/// systemd's version number (`systemd-analyze --version`: "systemd 252 (..)").
fn systemd_version() -> anyhow::Result<u32> {
    let out = output(Command::new("systemd-analyze").arg("--version"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no version in {text:?}"))
}

/// The notification datagrams received so far (each may hold several
/// `KEY=VALUE` lines), waiting up to `wait` for the first.
fn notifications(sock: &UnixDatagram, wait: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = sock.set_read_timeout(Some(wait));
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    }
    got
}

/// Local addresses of listening TCP sockets and bound UDP sockets in the
/// namespace, from /proc/net (hex, as the kernel prints them).
fn listening(ns: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for (file, listen_state) in [
        ("/proc/net/tcp", Some("0A")),
        ("/proc/net/tcp6", Some("0A")),
        ("/proc/net/udp", None),
        ("/proc/net/udp6", None),
    ] {
        let text = tests::netns::sh(&["ip", "netns", "exec", ns, "cat", file])?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 {
                continue;
            }
            if listen_state.is_none_or(|s| fields[3] == s) {
                found.push((file.to_string(), fields[1].to_string()));
            }
        }
    }
    Ok(found)
}

/// Is a /proc/net local address (`0100007F:24FE`, IPv6 in four
/// host-order words) a loopback one?
fn is_loopback(hex: &str) -> bool {
    let addr = hex.split(':').next().unwrap_or_default();
    match addr.len() {
        8 => addr.ends_with("7F"),
        32 => addr == "00000000000000000000000001000000",
        _ => false,
    }
}

#[test]
fn the_units_capabilities_suffice_and_each_one_is_needed() {
    tests::require_privileges!();
    tests::in_workdir("xlbsd-caps", |dir| {
        let started = Instant::now();
        let unit = Confinement::unit()?;
        ensure!(!unit.caps.is_empty(), "the unit grants no capability");
        let bed = Testbed::new("xlbsd-c", 2)?;
        let _servers = EchoServers::start(&bed.backends, testbed::TCP_PORT)?;
        let config = dir.join("xlb.toml");
        std::fs::write(&config, testbed::config(&[1, 1]))?;
        let config = config.to_str().context("path")?.to_string();
        let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
        let run_args = |name: &str| -> Vec<String> {
            let d = dir.join(name);
            vec![
                "--socket".into(),
                d.join("run/xlb.sock").display().to_string(),
                "run".into(),
                "--config".into(),
                config.clone(),
                "--state-dir".into(),
                d.join("state").display().to_string(),
                "--bpffs".into(),
                bpffs.arg().into(),
            ]
        };

        // 1. Exactly the unit's set: it works.
        let notify_path = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path)?;
        let mut full = unit.clone();
        full.env = vec![
            ("NOTIFY_SOCKET".into(), notify_path.display().to_string()),
            // 600 ms: a ping every 300 ms.
            ("WATCHDOG_USEC".into(), "600000".into()),
        ];
        let args = run_args("full");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut daemon = Daemon::spawn(
            full.command(&bed.lb.ns.name, &args)?,
            Path::new(args[1]),
            &dir.join("full.log"),
        )?;
        let first = notifications(&notify, Duration::from_secs(5));
        let text = first.join("\n");
        ensure!(
            first.first().is_some_and(|m| m.contains("READY=1")),
            "the first notification is not READY=1: {first:?}"
        );
        ensure!(
            text.contains("STATUS=serving revision 1"),
            "no STATUS: {first:?}"
        );
        let effective = effective_of(daemon.pid())?;
        ensure!(
            effective == unit.caps,
            "the daemon runs with {effective:?}, the unit grants {:?}",
            unit.caps
        );
        let proc_status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))?;
        ensure!(
            proc_status.contains("\nUid:\t0\t0\t0\t0") && proc_status.contains("NoNewPrivs:\t1"),
            "not root with no_new_privs: {proc_status}"
        );

        let status: serde_json::Value =
            serde_json::from_slice(&daemon.xlb(&["-o", "json", "status"])?.stdout)?;
        ensure!(status["revision"] == 1, "{status}");
        ensure!(status["interface"] == "eth0", "{status}");
        let target = SocketAddr::new(IpAddr::V4(testbed::VIP4), testbed::TCP_PORT);
        let (_, backend) = bed
            .client
            .ns
            .spawn(move || probe(target, Duration::from_secs(3)).map_err(anyhow::Error::msg))
            .join()
            .map_err(|_| anyhow::anyhow!("probe panicked"))??;
        ensure!(backend == "b1" || backend == "b2", "answered by {backend}");
        let changed = dir.join("changed.toml");
        std::fs::write(&changed, testbed::config(&[1, 3]))?;
        let out = daemon.xlb(&["apply", changed.to_str().unwrap(), "--force"])?;
        ensure!(
            out.status.success(),
            "apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: serde_json::Value =
            serde_json::from_slice(&daemon.xlb(&["-o", "json", "status"])?.stdout)?;
        ensure!(status["revision"] == 2, "{status}");

        // The watchdog: a ping every 300 ms.
        std::thread::sleep(Duration::from_millis(1500));
        let pings = notifications(&notify, Duration::from_millis(100))
            .iter()
            .filter(|m| m.contains("WATCHDOG=1"))
            .count();
        ensure!(
            pings >= 3,
            "{pings} watchdog pings in 1.5 s (one every 300 ms expected)"
        );

        // Nothing listens beyond loopback (metrics_address's default).
        let sockets = listening(&bed.lb.ns.name)?;
        ensure!(!sockets.is_empty(), "the daemon listens on nothing");
        let open: Vec<_> = sockets.iter().filter(|(_, a)| !is_loopback(a)).collect();
        ensure!(open.is_empty(), "listening beyond loopback: {open:?}");

        let exit = daemon.stop()?;
        ensure!(exit.success(), "exit {exit}: {}", daemon.log_text());
        let last = notifications(&notify, Duration::from_secs(2)).join("\n");
        ensure!(last.contains("STOPPING=1"), "no STOPPING=1: {last:?}");
        // A restart adopts the pinned maps and link with the same set (no
        // CAP_SYS_ADMIN to open maps by id), and forwards.
        let args = run_args("full");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut again = Daemon::spawn(
            unit.command(&bed.lb.ns.name, &args)?,
            Path::new(args[1]),
            &dir.join("again.log"),
        )?;
        ensure!(
            again.log_text().contains("adopting"),
            "the restart did not adopt the pins: {}",
            again.log_text()
        );
        let (_, after) = bed
            .client
            .ns
            .spawn(move || probe(target, Duration::from_secs(3)).map_err(anyhow::Error::msg))
            .join()
            .map_err(|_| anyhow::anyhow!("probe panicked"))??;
        let exit = again.stop()?;
        ensure!(exit.success(), "exit {exit}: {}", again.log_text());
        // Forwarding outlives the daemon; the next runs start from nothing
        // (an existing link would be adopted, not attached).
        detach(&bed.lb.ns.name, &bpffs, "eth0")?;
        eprintln!(
            "with {:?}: attached, applied, forwarded (to {backend}), {pings} watchdog pings; \
             restarted over the pins, forwarded (to {after})",
            unit.caps
        );

        // 2. One capability fewer: refused at startup, by name; and without
        // the check, the kernel refuses too.
        for (i, cap) in unit.caps.iter().enumerate() {
            let mut fewer = unit.clone();
            fewer.caps.retain(|c| c != cap);
            let args = run_args(&format!("without-{i}"));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run_to_exit(
                fewer.command(&bed.lb.ns.name, &args)?,
                Duration::from_secs(20),
            )?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(
                out.status.code() == Some(4) && stderr.contains(&format!("needs {cap},")),
                "without {cap}: exit {} and {stderr}",
                out.status
            );
            ensure!(
                !stderr.contains("attached") && !stderr.contains("Verifier"),
                "without {cap} it went past the check: {stderr}"
            );

            fewer.env = vec![(xlb::daemon::privileges::SKIP_CHECK_ENV.into(), "1".into())];
            let args = run_args(&format!("unchecked-{i}"));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run_to_exit(
                fewer.command(&bed.lb.ns.name, &args)?,
                Duration::from_secs(30),
            )
            .with_context(|| format!("without {cap} and without the check"))?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            let said = stderr
                .lines()
                .rfind(|l| l.starts_with("xlb: "))
                .unwrap_or_default();
            ensure!(
                !out.status.success() && !stderr.contains("serving revision"),
                "without {cap} and without the check it ran: {stderr}"
            );
            eprintln!(
                "without {cap}: refused at startup; unchecked, the kernel said: {:.160}",
                said
            );
        }
        eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
        Ok(())
    });
}

/// The system calls a `SystemCallFilter=` item stands for: a group
/// (`@name`, expanded by systemd-analyze, recursively) or a call.
fn expand(item: &str, seen: &mut BTreeSet<String>) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    if !item.starts_with('@') {
        out.insert(item.to_string());
        return Ok(out);
    }
    if !seen.insert(item.to_string()) {
        return Ok(out);
    }
    let text = tests::netns::sh(&["systemd-analyze", "syscall-filter", item])?;
    for line in text.lines().skip(1) {
        let word = line.trim();
        if word.is_empty() || word.starts_with('#') {
            continue;
        }
        out.extend(expand(word, seen)?);
    }
    Ok(out)
}

/// The calls the unit's `SystemCallFilter=` lines allow: the first
/// (positive) line's list, minus every `~` line's.
fn allowed_syscalls() -> anyhow::Result<BTreeSet<String>> {
    let mut allowed: Option<BTreeSet<String>> = None;
    for line in UNIT.lines() {
        let Some(v) = line.trim().strip_prefix("SystemCallFilter=") else {
            continue;
        };
        let (deny, list) = match v.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, v),
        };
        let mut calls = BTreeSet::new();
        for item in list.split_whitespace() {
            calls.extend(expand(item, &mut BTreeSet::new())?);
        }
        match (deny, allowed.as_mut()) {
            (false, None) => allowed = Some(calls),
            (false, Some(a)) => a.extend(calls),
            (true, Some(a)) => a.retain(|c| !calls.contains(c)),
            (true, None) => bail!("a ~ SystemCallFilter line before an allow list"),
        }
    }
    allowed.context("no SystemCallFilter= in the unit")
}

/// `RestrictAddressFamilies=`'s list.
fn allowed_families() -> anyhow::Result<BTreeSet<String>> {
    let line = UNIT
        .lines()
        .find_map(|l| l.trim().strip_prefix("RestrictAddressFamilies="))
        .context("no RestrictAddressFamilies= in the unit")?;
    Ok(line.split_whitespace().map(str::to_string).collect())
}

/// The first quoted string of a strace line's arguments.
fn first_path(args: &str) -> Option<&str> {
    let start = args.find('"')? + 1;
    let end = start + args[start..].find('"')?;
    Some(&args[start..end])
}

/// Each traced call of a `strace -f` log as (pid, `name(args) = result`):
/// a call another thread interrupted ("PID name(args <unfinished ...>",
/// later "PID <... name resumed>rest") is joined back into one; exits and
/// signals are left out.
fn calls(text: &str) -> Vec<(String, String)> {
    let mut pending: std::collections::HashMap<String, String> = Default::default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid.to_string(), head.to_string());
        } else if rest.starts_with("<... ") {
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            if let Some(head) = pending.remove(pid) {
                out.push((pid.to_string(), format!("{head}{tail}")));
            }
        } else if !rest.starts_with("+++") && !rest.starts_with("---") {
            out.push((pid.to_string(), rest.to_string()));
        }
    }
    // Calls still blocked when the trace ended (the last poll or futex).
    out.extend(pending);
    out
}

/// The pid of the process strace (pid `tracer`) runs: its only child.
fn traced_pid(tracer: u32) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children"))?;
        if let Some(pid) = children.split_whitespace().next() {
            return Ok(pid.parse()?);
        }
        ensure!(Instant::now() < deadline, "strace has no child");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `config` with TCP health checks every 200 ms on the TCP VIPs' port (so
/// the sandbox sees the checker's calls too).
fn with_health_checks(config: &str) -> String {
    config.replacen(
        "hash_seed = 1\n",
        &format!(
            "hash_seed = 1\n\n[health]\nkind = \"tcp\"\nport = {}\ninterval = \"200ms\"\ntimeout = \"100ms\"\n",
            testbed::TCP_PORT
        ),
        1,
    )
}

/// SIGKILL to a pid on drop (a test that failed half way).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Only if that pid is still an xlb (not reused).
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("xlb") {
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn the_daemon_stays_inside_the_units_sandbox() {
    tests::require_privileges!();
    tests::in_workdir("xlbsd-sandbox", |dir| {
        let bed = Testbed::new("xlbsd-s", 2)?;
        let _servers = EchoServers::start(&bed.backends, testbed::TCP_PORT)?;
        let config = dir.join("xlb.toml");
        std::fs::write(&config, with_health_checks(&testbed::config(&[1, 1])))?;
        let trace = dir.join("trace");
        let mut confined = Confinement::unit()?;
        confined.strace = Some(trace.clone());
        // Stand-ins for StateDirectory=, RuntimeDirectory= and /sys/fs/bpf.
        let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
        let state = dir.join("state");
        let run = dir.join("run");
        let socket = run.join("xlb.sock");
        let args = [
            "--socket",
            socket.to_str().unwrap(),
            "run",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--bpffs",
            bpffs.arg(),
        ];
        let mut daemon = Daemon::spawn(
            confined.command(&bed.lb.ns.name, &args)?,
            &socket,
            &dir.join("xlb.log"),
        )?;
        let xlb_pid = traced_pid(daemon.pid())?;
        // SIGTERM to strace would detach it and leave xlb running.
        let _guard = KillOnDrop(xlb_pid);
        // Exercise it: every kind of request, a metrics scrape, ticks.
        let changed = dir.join("changed.toml");
        std::fs::write(&changed, with_health_checks(&testbed::config(&[1, 2])))?;
        let changed = changed.to_str().unwrap();
        for args in [
            vec!["status"],
            vec!["plan", changed],
            vec!["apply", changed],
            vec!["history"],
            vec!["show", "1"],
            vec!["repair"],
            vec!["rollback"],
            vec!["weight", "web", "b1", "3"],
        ] {
            let out = daemon.xlb(&args)?;
            ensure!(
                out.status.success(),
                "xlb {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let body = bed
            .lb
            .ns
            .spawn(|| {
                Ok(ureq::get("http://127.0.0.1:9470/metrics")
                    .call()?
                    .into_string()?)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("scrape panicked"))??;
        ensure!(body.contains("xlb_"), "no metrics: {body:.200}");
        std::thread::sleep(Duration::from_millis(2500));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(xlb_pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while daemon.exited()?.is_none() {
            ensure!(Instant::now() < deadline, "strace did not end");
            std::thread::sleep(Duration::from_millis(50));
        }

        detach(&bed.lb.ns.name, &bpffs, "eth0")?;
        let text = std::fs::read_to_string(&trace)?;
        let binary = xlb_binary()?.display().to_string();
        let start = text
            .find(&format!("execve(\"{binary}\""))
            .context("no execve of xlb in the trace")?;
        let allowed = allowed_syscalls()?;
        let families = allowed_families()?;
        let writable = [
            state.display().to_string(),
            run.display().to_string(),
            // The pins' lock (lb-userspace/src/lock.rs), in the unit's
            // RuntimeDirectory= like the socket.
            xlb::lock::RUN_DIR.to_string(),
            bpffs.arg().to_string(),
        ];
        let mut used = BTreeSet::new();
        let mut problems = BTreeSet::new();
        let mut lines = 0;
        for (pid, rest) in calls(&text[start..]) {
            let line = format!("{pid} {rest}");
            let line = line.as_str();
            let Some((name, args)) = rest.split_once('(') else {
                continue;
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            lines += 1;
            used.insert(name.to_string());
            if !allowed.contains(name) {
                problems.insert(format!("system call {name} is not in SystemCallFilter"));
            }
            if name == "socket" || name == "socketpair" {
                let family = args.split(',').next().unwrap_or_default().trim();
                if !families.contains(family) {
                    problems.insert(format!(
                        "{name}({family}) is not in RestrictAddressFamilies"
                    ));
                }
            }
            let exec = args.contains("PROT_EXEC");
            if (name == "mmap" && exec && args.contains("PROT_WRITE"))
                || ((name == "mprotect" || name == "pkey_mprotect") && exec)
            {
                problems.insert(format!("W^X: {line}"));
            }
            let writes = match name {
                "open" | "openat" | "openat2" | "creat" => ["O_WRONLY", "O_RDWR", "O_CREAT"]
                    .iter()
                    .any(|f| args.contains(f)),
                "mkdir" | "mkdirat" | "unlink" | "unlinkat" | "rename" | "renameat"
                | "renameat2" | "rmdir" | "chmod" | "fchmodat" | "chown" | "fchownat"
                | "lchown" | "symlink" | "symlinkat" | "link" | "linkat" | "truncate" => true,
                // A Unix socket's path is a file; an IP address is not.
                "bind" => args.contains("sun_path="),
                _ => false,
            };
            if writes
                && let Some(path) = first_path(args)
                // A failed attempt writes nothing; the sandbox refuses it
                // the same way.
                && !line.contains("= -1 ")
                && !writable.iter().any(|w| path.starts_with(w.as_str()))
                && path != "/dev/null"
            {
                problems.insert(format!("writes outside the unit's paths: {line}"));
            }
        }
        ensure!(
            lines > 1000,
            "only {lines} traced calls: is the trace complete?"
        );
        eprintln!(
            "{lines} traced calls, {} distinct, all within the unit's filters: {used:?}",
            used.len()
        );
        ensure!(
            problems.is_empty(),
            "outside the unit's sandbox:\n{problems:#?}"
        );
        Ok(())
    });
}
