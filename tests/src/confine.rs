//! Running `xlb` the way deploy/systemd/xlb.service runs it, without
//! systemd: root with exactly the unit's capabilities (bounding,
//! inheritable and ambient sets, and the `noroot` securebits so that only
//! the ambient set survives exec, as with `SecureBits=noroot
//! noroot-locked`), `no_new_privs` (`NoNewPrivileges=yes`), umask 077
//! (`UMask=0077`), no supplementary groups, and a gid when the socket-group
//! drop-in's `Group=` is emulated. The network namespace is entered first
//! with `ip netns exec`, which keeps its full capabilities until setpriv
//! drops them, then each step execs the next, so the child's pid is the
//! daemon's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use caps::Capability;

/// The shipped unit.
pub const UNIT: &str = include_str!("../../deploy/systemd/xlb.service");

/// The unit's `CapabilityBoundingSet=`, checked equal to its
/// `AmbientCapabilities=`, in kernel order.
pub fn unit_capabilities() -> anyhow::Result<Vec<Capability>> {
    let bounding = xlb::daemon::privileges::unit_capabilities(UNIT, "CapabilityBoundingSet")?;
    let ambient = xlb::daemon::privileges::unit_capabilities(UNIT, "AmbientCapabilities")?;
    anyhow::ensure!(
        bounding == ambient,
        "the unit's CapabilityBoundingSet {bounding:?} and AmbientCapabilities {ambient:?} differ"
    );
    let mut caps: Vec<Capability> = bounding.into_iter().collect();
    caps.sort_by_key(|c| c.index());
    Ok(caps)
}

/// setpriv's spelling of a capability list: `-all,+bpf,+net_admin`.
fn setpriv_list(caps: &[Capability]) -> String {
    let mut s = String::from("-all");
    for c in caps {
        let name = c.to_string().to_ascii_lowercase();
        s.push_str(",+");
        s.push_str(name.trim_start_matches("cap_"));
    }
    s
}

/// How to confine one run.
#[derive(Clone, Debug, Default)]
pub struct Confinement {
    pub caps: Vec<Capability>,
    /// The gid to run with (`Group=`); root's 0 otherwise.
    pub gid: Option<u32>,
    /// Extra environment (NOTIFY_SOCKET, XLB_SKIP_CAPABILITY_CHECK...).
    pub env: Vec<(String, String)>,
    /// Run under `strace -f -o PATH` (outside the confinement, so the
    /// trace shows the confined process's own system calls).
    pub strace: Option<PathBuf>,
}

impl Confinement {
    pub fn unit() -> anyhow::Result<Self> {
        Ok(Self {
            caps: unit_capabilities()?,
            ..Self::default()
        })
    }

    /// The command running `xlb ARGS` in namespace `ns`, confined.
    pub fn command(&self, ns: &str, args: &[&str]) -> anyhow::Result<Command> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        if let Some(trace) = &self.strace {
            cmd.arg("strace")
                .args(["-f", "-qq", "-s", "256", "-o"])
                .arg(trace);
        }
        let list = setpriv_list(&self.caps);
        cmd.arg("setpriv")
            .arg("--no-new-privs")
            .arg("--securebits=+noroot,+noroot_locked")
            .arg(format!("--bounding-set={list}"))
            .arg(format!("--inh-caps={list}"))
            .arg(format!("--ambient-caps={list}"));
        if let Some(gid) = self.gid {
            cmd.arg(format!("--regid={gid}"));
        }
        cmd.arg("--clear-groups")
            .args(["--", "sh", "-c", "umask 077 && exec \"$0\" \"$@\""])
            .arg(crate::xlbd::xlb_binary()?)
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Ok(cmd)
    }
}

/// Run a confined `xlb` that should exit on its own (a refusal): its
/// output, or an error if it still runs after `timeout` (then it is killed).
pub fn run_to_exit(mut cmd: Command, timeout: Duration) -> anyhow::Result<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting xlb")?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "still running after {timeout:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A bpffs mounted for one test (the daemon's `--bpffs`): `ip netns exec`
/// mounts a fresh /sys, without the host's /sys/fs/bpf, and mounting one
/// needs CAP_SYS_ADMIN, which the unit does not grant (under systemd the
/// host's is there, mounted at boot). Unmounted on drop, and its directory
/// removed (when empty).
pub struct Bpffs {
    pub path: PathBuf,
}

impl Bpffs {
    pub fn mount(path: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)?;
        crate::netns::sh(&["mount", "-t", "bpf", "bpf", path.to_str().context("path")?])?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    /// Where a daemon pins its link and maps for `interface`.
    pub fn pins(&self, interface: &str) -> PathBuf {
        self.path.join("xlb").join(interface)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// `xlb detach` in namespace `ns`: remove the pinned link and maps a
/// daemon left (forwarding outlives it).
pub fn detach(ns: &str, bpffs: &Bpffs, interface: &str) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(crate::xlbd::xlb_binary()?)
        .args(["detach", "--interface", interface, "--bpffs", bpffs.arg()])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("xlb detach: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The capabilities in a process's `CapEff` line of /proc/PID/status.
pub fn effective_of(pid: u32) -> anyhow::Result<Vec<Capability>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff line")?
        .trim();
    let mask = u64::from_str_radix(hex, 16)?;
    let mut caps: Vec<Capability> = caps::all()
        .into_iter()
        .filter(|c| mask & c.bitmask() != 0)
        .collect();
    caps.sort_by_key(|c| c.index());
    Ok(caps)
}

/// A pin directory of a test's own, `xlb/<interface>` in a bpffs of its
/// own mounted at `<temp dir>/<prefix>-<pid>` (a machine without systemd
/// has no bpffs at /sys/fs/bpf), for a balancer loaded over pins without a
/// daemon; its maps are unpinned, the bpffs unmounted and its directory
/// removed on drop, even when the test fails.
pub struct TestPins {
    pub pins: xlb_dataplane::PinDir,
    /// Dropped after `drop` unpinned the maps: unmounted, its directory
    /// removed.
    _bpffs: Bpffs,
}

impl TestPins {
    pub fn new(prefix: &str, interface: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let bpffs = Bpffs::mount(&dir).expect("mount a bpffs for the test's pins");
        let pins = xlb_dataplane::PinDir::new(&bpffs.path, interface);
        pins.create().expect("create the pin directory");
        Self {
            pins,
            _bpffs: bpffs,
        }
    }
}

impl Drop for TestPins {
    fn drop(&mut self) {
        let _ = self.pins.remove();
    }
}
