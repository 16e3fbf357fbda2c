//! Small TCP and UDP servers on each backend that answer with the backend's
//! name, so a client learns which backend served it. They run on threads
//! inside the backend namespaces and stop when `Servers` is dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::testbed::{TCP_PORT, Testbed, UDP_PORT, VIP4, VIP6};

pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// Wait until `fd` is readable or 100 ms passed.
fn readable(fd: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(100u16)).is_ok_and(|n| n > 0)
}

fn tcp_server(name: String, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    // [::] takes IPv4 too (v6only is off by default on Linux).
    let listener = TcpListener::bind(SocketAddr::from((
        std::net::Ipv6Addr::UNSPECIFIED,
        TCP_PORT,
    )))?;
    while !stop.load(Ordering::Relaxed) {
        if !readable(&listener) {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut line = String::new();
        // Read the request line, answer with our name. Errors are the
        // client's to see (a reset or a timeout there).
        if BufReader::new(&stream).read_line(&mut line).is_ok() {
            let _ = (&stream).write_all(format!("{name}\n").as_bytes());
        }
    }
    Ok(())
}

fn udp_server(name: String, addr: SocketAddr, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    // Bound to the VIP itself, so replies leave from the VIP.
    let socket = UdpSocket::bind(addr)?;
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        if !readable(&socket) {
            continue;
        }
        if let Ok((_, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(format!("{name}\n").as_bytes(), peer);
        }
    }
    Ok(())
}

impl Servers {
    pub fn start(bed: &Testbed) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for b in &bed.backends {
            let (name, s) = (b.name.clone(), stop.clone());
            threads.push(b.ns.spawn(move || tcp_server(name, s)));
            for addr in [
                SocketAddr::from((VIP4, UDP_PORT)),
                SocketAddr::from((VIP6, UDP_PORT)),
            ] {
                let (name, s) = (b.name.clone(), stop.clone());
                threads.push(b.ns.spawn(move || udp_server(name, addr, s)));
            }
        }
        // Give the threads a moment to bind.
        std::thread::sleep(Duration::from_millis(200));
        if let Some(t) = threads.iter().position(|t| t.is_finished()) {
            let t = threads.remove(t);
            return Err(t
                .join()
                .map_err(|_| anyhow::anyhow!("server panicked"))?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("server exited")));
        }
        Ok(Self { stop, threads })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
