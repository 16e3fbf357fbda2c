//! Running the real `xlb` binary: the daemon inside the LB namespace, the CLI
//! from the test's own namespace (the control socket is a file path).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::netns::Netns;

/// The `xlb` binary next to the running test or demo executable
/// (target/debug/xlb); `cargo xtask test` builds it first. XLB_BIN overrides.
pub fn xlb_binary() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("XLB_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("xlb");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no xlb binary near {}; run `cargo build -p lb-userspace --bin xlb` (cargo xtask test does)",
        exe.display()
    )
}

/// A running `xlb run`, stopped with SIGTERM on drop.
pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(lb: &Netns, config: &Path, dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(lb, config, dir, &[])
    }

    /// Start with extra `xlb run` arguments (e.g. `--bake-window 10s`).
    pub fn start_with(
        lb: &Netns,
        config: &Path,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let socket = dir.join("xlb.sock");
        let log = dir.join("xlb.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lb.name])
            .arg(xlb_binary()?)
            .arg("--socket")
            .arg(&socket)
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra);
        Self::spawn(cmd, &socket, &log)
    }

    /// Start `cmd` (an `xlb --socket SOCKET run ...`, however wrapped:
    /// `ip netns exec`, setpriv, strace), its output to `log`, and wait
    /// until `xlb status` answers.
    pub fn spawn(mut cmd: Command, socket: &Path, log: &Path) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log)?;
        let child = cmd
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting xlb run")?;
        let mut d = Self {
            child,
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = d.child.try_wait()? {
                bail!("xlb run exited with {status}: {}", d.log_text());
            }
            if d.xlb(&["status"]).is_ok_and(|o| o.status.success()) {
                return Ok(d);
            }
            if Instant::now() > deadline {
                bail!("xlb run did not answer within 30 s: {}", d.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The exit status, if the daemon has exited.
    pub fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// The daemon's process id (for signals: `kill -HUP`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGHUP: re-read the config file.
    pub fn hangup(&self) -> anyhow::Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )?;
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run the xlb CLI against this daemon.
    pub fn xlb(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(xlb_binary()?)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running xlb")
    }

    /// `xlb status -o json`, parsed.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let out = self.xlb(&["-o", "json", "status"])?;
        if !out.status.success() {
            bail!(
                "xlb status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// SIGTERM and wait; the exit status.
    /// SIGKILL: no cleanup, as in a crash.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("xlb run did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.stop();
        }
    }
}

/// A command's exit code, stdout and stderr, for an assertion's message.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
