//! The client side: real TCP connections and UDP exchanges to a VIP from the
//! client namespace, each one asking which backend answered. Bounded in count
//! and time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::netns::Netns;

const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One exchange: when it started and which backend answered (or the error).
#[derive(Clone, Debug)]
pub struct Exchange {
    pub started: Instant,
    pub result: Result<String, String>,
}

fn tcp_once(target: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&target, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(b"hello\n").map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    let name = reply.trim().to_string();
    if name.is_empty() {
        Err("empty reply".into())
    } else {
        Ok(name)
    }
}

fn udp_once(target: SocketAddr) -> Result<String, String> {
    let bind: SocketAddr = if target.is_ipv6() {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    s.connect(target).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.send(b"hello\n").map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 256];
    let n = s.recv(&mut buf).map_err(|e| format!("recv: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// When to stop.
#[derive(Clone)]
pub enum Until {
    /// After this many exchanges in total.
    Count(usize),
    /// When the flag is set (or after `max` exchanges, as a bound).
    Flag(Arc<AtomicBool>, usize),
}

/// Run exchanges against `target` from `workers` threads in the client
/// namespace; returns every exchange.
pub fn drive(
    client: &Netns,
    target: SocketAddr,
    proto: Proto,
    workers: usize,
    until: Until,
) -> Vec<Exchange> {
    let issued = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(300);
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (issued, until) = (issued.clone(), until.clone());
            client.spawn(move || {
                let mut out = Vec::new();
                loop {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    let done = match &until {
                        Until::Count(max) => n >= *max,
                        Until::Flag(flag, max) => flag.load(Ordering::Relaxed) || n >= *max,
                    };
                    if done || Instant::now() > deadline {
                        return Ok(out);
                    }
                    let started = Instant::now();
                    let result = match proto {
                        Proto::Tcp => tcp_once(target),
                        Proto::Udp => udp_once(target),
                    };
                    out.push(Exchange { started, result });
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread").expect("client namespace"))
        .collect()
}

/// One worker making about `per_second` exchanges a second until `stop` is
/// set (bounded by `max_seconds`): steady traffic while a test watches.
pub fn drive_paced(
    client: &Netns,
    target: SocketAddr,
    proto: Proto,
    per_second: u32,
    stop: Arc<AtomicBool>,
    max_seconds: u64,
) -> Vec<Exchange> {
    let gap = Duration::from_secs(1) / per_second.max(1);
    let handle = client.spawn(move || {
        let begun = Instant::now();
        let deadline = begun + Duration::from_secs(max_seconds);
        let mut out = Vec::new();
        let mut next = begun;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let started = Instant::now();
            let result = match proto {
                Proto::Tcp => tcp_once(target),
                Proto::Udp => udp_once(target),
            };
            out.push(Exchange { started, result });
            next += gap;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        Ok(out)
    });
    handle
        .join()
        .expect("client thread")
        .expect("client namespace")
}

/// Per-backend counts and the failures of a set of exchanges.
#[derive(Debug, Default)]
pub struct Tally {
    pub per_backend: BTreeMap<String, u64>,
    pub failures: Vec<String>,
}

impl Tally {
    pub fn of<'a>(exchanges: impl IntoIterator<Item = &'a Exchange>) -> Self {
        let mut t = Tally::default();
        for e in exchanges {
            match &e.result {
                Ok(name) => *t.per_backend.entry(name.clone()).or_default() += 1,
                Err(err) => t.failures.push(err.clone()),
            }
        }
        t
    }

    pub fn total_ok(&self) -> u64 {
        self.per_backend.values().sum()
    }

    /// Share of `backend` among successful exchanges.
    pub fn share(&self, backend: &str) -> f64 {
        let total = self.total_ok();
        if total == 0 {
            0.0
        } else {
            *self.per_backend.get(backend).unwrap_or(&0) as f64 / total as f64
        }
    }
}
