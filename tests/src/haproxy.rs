//! HAProxy in TCP mode inside a namespace, as the baseline the benchmarks
//! compare xlb with: one frontend on an address the namespace holds, the
//! backends by their own addresses, round robin. Started from a config file
//! written to a work directory, stopped (SIGTERM) on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::netns::Netns;

/// A running `haproxy -db` (foreground, no daemon).
pub struct Haproxy {
    child: Child,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// The config: `mode tcp`, `balance roundrobin`, no health checks (the
/// backends are up; checks would add connections of their own). `maxconn`
/// far above the benches' concurrent connections, but within the file
/// descriptors a process gets here (HAProxy asks for two per connection and
/// refuses to start when the hard limit, 20,000 here, is lower).
pub fn config(listen: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut out = format!(
        "global\n    maxconn 4096\n\n\
         defaults\n    mode tcp\n    timeout connect 3s\n    timeout client 10s\n    timeout server 10s\n\n\
         frontend vip\n    bind {listen}\n    default_backend backends\n\n\
         backend backends\n    balance roundrobin\n"
    );
    for (i, b) in backends.iter().enumerate() {
        out.push_str(&format!("    server b{} {b}\n", i + 1));
    }
    out
}

impl Haproxy {
    /// Write the config to `dir` and start HAProxy in `ns`; returns once the
    /// process runs and listens (or fails with its output).
    pub fn start(
        ns: &Netns,
        dir: &Path,
        listen: SocketAddr,
        backends: &[SocketAddr],
    ) -> anyhow::Result<Self> {
        let config = dir.join("haproxy.cfg");
        std::fs::write(&config, self::config(listen, backends))?;
        let log = dir.join("haproxy.log");
        let log_file = std::fs::File::create(&log)?;
        // `ip netns exec` execs haproxy: the child's pid is haproxy's.
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "haproxy", "-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting haproxy (Debian package haproxy; cargo xtask setup installs it)")?;
        let mut h = Self { child, config, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = format!(":{:04X}", listen.port());
        loop {
            if let Some(status) = h.child.try_wait()? {
                bail!("haproxy exited with {status}: {}", h.log_text());
            }
            // Listening: a socket on the port in state 0A (LISTEN) in the
            // namespace's table (sl, local_address, rem_address, st, ...).
            let tcp = ns.exec(&["cat", "/proc/net/tcp", "/proc/net/tcp6"])?;
            if tcp.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&port) && f[3] == "0A"
            }) {
                return Ok(h);
            }
            if Instant::now() > deadline {
                bail!("haproxy did not listen within 10 s: {}", h.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the process has used so far (user + system, all threads).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        crate::cpu_time::process(self.pid())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_every_backend_in_tcp_mode() {
        let c = config(
            "198.18.100.1:8080".parse().unwrap(),
            &[
                "198.18.0.11:8080".parse().unwrap(),
                "198.18.0.12:8080".parse().unwrap(),
            ],
        );
        assert!(c.contains("mode tcp"));
        assert!(c.contains("balance roundrobin"));
        assert!(c.contains("bind 198.18.100.1:8080"));
        assert!(c.contains("server b1 198.18.0.11:8080\n"));
        assert!(c.contains("server b2 198.18.0.12:8080\n"));
    }
}
