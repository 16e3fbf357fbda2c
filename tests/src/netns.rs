//! Network namespaces as test hosts: an RAII guard that removes the namespace
//! on drop (also when a test panics), `ip` helpers, and running code on a
//! thread that has entered a namespace.

use std::fs::File;
use std::process::Command;

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

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        // A namespace left by a killed run of the same test: remove it first.
        let _ = sh(&["ip", "netns", "del", name]);
        sh(&["ip", "netns", "add", name])?;
        let ns = Self {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// `ip netns exec NAME ARGS...`
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
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
        let name = self.name.clone();
        std::thread::spawn(move || {
            Netns { name: name.clone() }.enter_and_forget()?;
            f()
        })
    }

    /// Run `f` on a new thread inside the namespace called `name`, and wait.
    pub fn in_named<T: Send + 'static>(
        name: &str,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let ns = Netns {
            name: name.to_string(),
        };
        let handle = ns.spawn(f);
        std::mem::forget(ns); // not ours to delete
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace {name} panicked"))?
    }

    fn enter_and_forget(self) -> anyhow::Result<()> {
        let r = self.enter();
        std::mem::forget(self); // not ours to delete
        r
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}
