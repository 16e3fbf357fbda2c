//! Network namespaces as test hosts: an RAII guard that removes the namespace
//! on drop (also when a test panics), named uniquely per process
//! (`<label>-<pid>-<n>`, as aya's NetNsGuard does), `ip` helpers, and
//! running code on a thread that has entered a namespace.

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, bail};

/// Run a command; fail with its stderr.
pub fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop (also when the test panics) if this
/// value made it; a [`handle`](Netns::handle) names one without owning it.
pub struct Netns {
    pub name: String,
    owned: bool,
}

/// Namespaces made by this process so far, for unique names.
static MADE: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// Make a namespace named `<label>-<pid>-<n>` (`n` counts the
    /// namespaces this process made), so that no two tests, test processes
    /// or runs share a name, whatever labels they pick. Interface names
    /// (15 bytes at most) are never derived from it.
    pub fn new(label: &str) -> anyhow::Result<Self> {
        crate::privileges::check(&format!("making network namespace {label}-*"))?;
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let name = format!("{label}-{}-{n}", std::process::id());
        // One left by a killed process that had the same pid: remove it.
        let _ = sh(&["ip", "netns", "del", &name]);
        sh(&["ip", "netns", "add", &name])?;
        let ns = Self { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace called `name`, not deleted on drop.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            owned: false,
        }
    }

    /// This namespace, not deleted when the handle drops (for a thread
    /// that needs one of its own).
    pub fn handle(&self) -> Self {
        Self::named(&self.name)
    }

    /// `ip netns exec NAME`: the words that run a command in this
    /// namespace.
    pub fn exec_prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// `ip netns exec NAME ARGS...`
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = self.exec_prefix().to_vec();
        full.extend_from_slice(args);
        sh(&full)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Move the calling thread into this namespace (for sockets and
    /// netlink). Use on a thread of its own: it does not come back.
    pub fn enter(&self) -> anyhow::Result<()> {
        let file = File::open(format!("/var/run/netns/{}", self.name))
            .with_context(|| format!("opening namespace {}", self.name))?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering namespace {}", self.name))
    }

    /// Run `f` on a new thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> std::thread::JoinHandle<anyhow::Result<T>> {
        let ns = self.handle();
        std::thread::spawn(move || {
            ns.enter()?;
            f()
        })
    }

    /// Run `f` on a new thread inside the namespace called `name`, and wait.
    pub fn in_named<T: Send + 'static>(
        name: &str,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        Self::named(name)
            .spawn(f)
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace {name} panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            let _ = sh(&["ip", "netns", "del", &self.name]);
        }
    }
}
