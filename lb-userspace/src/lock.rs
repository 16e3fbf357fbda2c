//! One daemon per state directory, per interface and per pin directory:
//! `xlb run` takes three exclusive `flock(2)` locks before it loads,
//! attaches or swaps anything, and holds them until it exits (the kernel drops them with the
//! process, also on SIGKILL: a lock is never stale).
//!
//! - `<state dir>/lock`: the revision store and the audit log have one
//!   writer.
//! - `/run/xlb/if-<interface>-<dev>-<ino>.lock`: the interface has one
//!   daemon, whatever bpffs each would pin to (named after the interface
//!   and its network namespace, `/proc/self/ns/net`'s device and inode).
//! - `/run/xlb/pins-<interface>-<dev>-<ino>.lock`: the pins in
//!   `<bpffs>/xlb/<interface>/` have one owner. A lock file cannot live on
//!   bpffs, so it is named after the interface and the bpffs mount (the
//!   device and inode numbers of the bpffs directory: two bpffs mounts,
//!   such as the private ones of `ip netns exec`, never share a lock; a
//!   bind mount of the same bpffs does).
//!
//! The holder writes who it is (`pid`, `socket`,
//! `interface`, `state_dir`, `pins`, one `key value` a line) into each, so a second
//! daemon names the running one. The holder removes them as it exits,
//! still holding the lock; a process that locked a file it opened before
//! that removal sees that the path no longer names its file, and opens
//! and locks again (so two processes never hold two files of one path).
//! A killed daemon leaves its files; the next one locks and rewrites them.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Where the pins' locks live (the unit's `RuntimeDirectory=xlb`).
pub const RUN_DIR: &str = "/run/xlb";
/// The state directory's lock file.
pub const STATE_LOCK: &str = "lock";

/// Who holds a lock, as it wrote itself into the lock file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub socket: Option<String>,
    pub interface: Option<String>,
    pub state_dir: Option<String>,
    pub pins: Option<String>,
}

impl Holder {
    fn render(&self) -> String {
        let mut out = String::new();
        for (key, value) in [
            ("pid", self.pid.map(|p| p.to_string())),
            ("socket", self.socket.clone()),
            ("interface", self.interface.clone()),
            ("state_dir", self.state_dir.clone()),
            ("pins", self.pins.clone()),
        ] {
            if let Some(v) = value {
                out.push_str(&format!("{key} {v}\n"));
            }
        }
        out
    }

    fn parse(text: &str) -> Self {
        let mut h = Holder::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(' ') else {
                continue;
            };
            let value = Some(value.to_string());
            match key {
                "pid" => h.pid = value.and_then(|v| v.trim().parse().ok()),
                "socket" => h.socket = value,
                "interface" => h.interface = value,
                "state_dir" => h.state_dir = value,
                "pins" => h.pins = value,
                _ => {}
            }
        }
        h
    }

    /// "pid 1234, control socket /run/xlb/xlb.sock".
    fn describe(&self) -> String {
        let pid = self
            .pid
            .map_or("pid unknown".to_string(), |p| format!("pid {p}"));
        match &self.socket {
            Some(s) => format!("{pid}, control socket {s}"),
            None => pid,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "another xlb run ({}) holds {what} (lock {}); stop it first{hint}",
        .holder.describe(),
        .path.display()
    )]
    Busy {
        what: String,
        path: PathBuf,
        holder: Box<Holder>,
        hint: String,
    },
    #[error("{op} {}: {error}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

/// The locks a daemon holds until it exits (removed, then released, on
/// drop).
#[derive(Debug)]
pub struct Locks {
    held: Vec<(PathBuf, Flock<File>)>,
}

impl Drop for Locks {
    fn drop(&mut self) {
        for (path, _) in &self.held {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Locks {
    /// The lock files held.
    pub fn paths(&self) -> Vec<&Path> {
        self.held.iter().map(|(p, _)| p.as_path()).collect()
    }
}

/// The lock file of the pins of `interface` on the bpffs at `bpffs`, in
/// `run_dir` (`RUN_DIR`).
pub fn pins_lock_path(run_dir: &Path, bpffs: &Path, interface: &str) -> io::Result<PathBuf> {
    let meta = std::fs::metadata(bpffs)?;
    Ok(run_dir.join(format!(
        "pins-{interface}-{}-{}.lock",
        meta.dev(),
        meta.ino()
    )))
}

/// Lock `path` (created 0600 if missing) without waiting, and write
/// `holder` into it; `what` names what it guards in the refusal.
fn lock_file(
    path: &Path,
    what: &str,
    hint: &str,
    holder: &Holder,
) -> Result<Flock<File>, LockError> {
    let io = |op| {
        move |error| LockError::Io {
            op,
            path: path.to_path_buf(),
            error,
        }
    };
    let mut attempts = 0;
    let mut locked = loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io("opening"))?;
        let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                // The holder may be between its truncate and its write: read
                // again a few times before naming nobody.
                let mut text = String::new();
                for _ in 0..20 {
                    text.clear();
                    let _ = file.rewind();
                    let _ = file.read_to_string(&mut text);
                    if text.contains("pid ") {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                return Err(LockError::Busy {
                    what: what.to_string(),
                    path: path.to_path_buf(),
                    holder: Box::new(Holder::parse(&text)),
                    hint: hint.to_string(),
                });
            }
            Err((_, errno)) => return Err(io("locking")(io::Error::from(errno))),
        };
        // The file the path names now, or one its last holder removed
        // between our open and our lock: then lock the new one.
        let ours = locked.metadata().map_err(io("locking"))?;
        match std::fs::metadata(path) {
            Ok(now) if (now.dev(), now.ino()) == (ours.dev(), ours.ino()) => break locked,
            _ if attempts < 10 => attempts += 1,
            _ => {
                return Err(io("locking")(io::Error::other(
                    "the lock file keeps being replaced",
                )));
            }
        }
    };
    locked.set_len(0).map_err(io("writing"))?;
    locked.rewind().map_err(io("writing"))?;
    locked
        .write_all(holder.render().as_bytes())
        .map_err(io("writing"))?;
    Ok(locked)
}

/// The lock file of `interface` in this process's network namespace, in
/// `run_dir`.
pub fn interface_lock_path(run_dir: &Path, interface: &str) -> io::Result<PathBuf> {
    let meta = std::fs::metadata("/proc/self/ns/net")?;
    Ok(run_dir.join(format!("if-{interface}-{}-{}.lock", meta.dev(), meta.ino())))
}

/// Lock the state directory `state_dir` (which must exist), `interface`
/// and its pins under `bpffs` (lock files in `run_dir`, created 0700 if
/// missing) for a daemon answering on `socket`.
pub fn lock_daemon(
    state_dir: &Path,
    run_dir: &Path,
    bpffs: &Path,
    interface: &str,
    socket: &Path,
) -> Result<Locks, LockError> {
    let pins_dir = bpffs.join("xlb").join(interface);
    let holder = Holder {
        pid: Some(std::process::id()),
        socket: Some(socket.display().to_string()),
        interface: Some(interface.to_string()),
        state_dir: Some(state_dir.display().to_string()),
        pins: Some(pins_dir.display().to_string()),
    };
    let state_lock = state_dir.join(STATE_LOCK);
    let state = lock_file(
        &state_lock,
        &format!("the state directory {}", state_dir.display()),
        ", or give this one another --state-dir",
        &holder,
    )?;
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(run_dir)
            .map_err(|error| LockError::Io {
                op: "creating",
                path: run_dir.to_path_buf(),
                error,
            })?;
    }
    let if_lock = interface_lock_path(run_dir, interface).map_err(|error| LockError::Io {
        op: "reading",
        path: PathBuf::from("/proc/self/ns/net"),
        error,
    })?;
    let nic = lock_file(
        &if_lock,
        &format!("{interface} in this network namespace"),
        " (`xlb status` asks it what it serves)",
        &holder,
    )?;
    let pins_lock = pins_lock_path(run_dir, bpffs, interface).map_err(|error| LockError::Io {
        op: "reading",
        path: bpffs.to_path_buf(),
        error,
    })?;
    let pins = lock_file(
        &pins_lock,
        &format!("{interface} and its pins in {}", pins_dir.display()),
        " (`xlb status` asks it what it serves)",
        &holder,
    )?;
    Ok(Locks {
        held: vec![(state_lock, state), (if_lock, nic), (pins_lock, pins)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xlb-lock-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_second_holder_is_refused_naming_the_first() {
        let dir = tmp("second");
        let (state, run, bpffs) = (dir.join("state"), dir.join("run"), dir.join("bpffs"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&bpffs).unwrap();
        let first = lock_daemon(&state, &run, &bpffs, "eth0", Path::new("/run/a.sock")).unwrap();
        // flock locks belong to the open file description: a second open in
        // this process conflicts like another process would.
        let e = lock_daemon(&state, &run, &bpffs, "eth0", Path::new("/run/b.sock")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id()))
                && text.contains("/run/a.sock")
                && text.contains("state directory"),
            "{text}"
        );
        // Another state directory, the same interface: refused on it.
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        let e = lock_daemon(&other, &run, &bpffs, "eth0", Path::new("/run/b.sock")).unwrap_err();
        assert!(
            e.to_string().contains("eth0 in this network namespace"),
            "{e}"
        );
        // Another interface on its own state directory: fine.
        let third = lock_daemon(&other, &run, &bpffs, "eth1", Path::new("/run/c.sock")).unwrap();
        assert_eq!(third.paths().len(), 3);
        drop(first);
        // Released with the holder: the next one takes it.
        lock_daemon(&state, &run, &bpffs, "eth0", Path::new("/run/b.sock")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn holders_round_trip() {
        let h = Holder {
            pid: Some(7),
            socket: Some("/run/xlb/xlb sock".into()),
            interface: Some("eth0".into()),
            state_dir: Some("/var/lib/xlb/eth0".into()),
            pins: Some("/sys/fs/bpf/xlb/eth0".into()),
        };
        assert_eq!(Holder::parse(&h.render()), h);
        assert_eq!(Holder::parse("").describe(), "pid unknown");
    }
}
