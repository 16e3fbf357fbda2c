//! Long-lived TCP connections through a VIP, for tests that change tables
//! under live flows: an echo server on each backend that puts its name in
//! front of every answer, and a client that keeps one connection exchanging
//! numbered requests and tells a reset, a stall and a wrong answer apart.
//! Bounded in time; everything stops when its owner is dropped.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::netns::Netns;
use crate::testbed::Host;

/// How often a server's blocked read looks at the stop flag.
const SERVER_TICK: Duration = Duration::from_millis(200);

/// Echo servers on some backends; stopped (and joined) on drop.
pub struct EchoServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// Wait until `fd` is readable or 100 ms passed.
fn readable(fd: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(100u16)).is_ok_and(|n| n > 0)
}

/// Answer each line `L` of one connection with `NAME L` until the client
/// closes it (or the servers stop).
fn echo(name: &str, stream: TcpStream, stop: &AtomicBool) {
    if stream.set_read_timeout(Some(SERVER_TICK)).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(&stream);
    // Kept across timeouts: read_until leaves the bytes it took in it.
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with(b"\n") => {
                let mut answer = Vec::with_capacity(name.len() + 1 + line.len());
                answer.extend_from_slice(name.as_bytes());
                answer.push(b' ');
                answer.extend_from_slice(&line);
                if (&stream).write_all(&answer).is_err() {
                    return;
                }
                line.clear();
            }
            // End of stream in the middle of a line: the client is gone.
            Ok(_) => return,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// Accept on `[::]:port` (IPv4 too) and serve each connection on its own
/// thread until `stop`.
fn serve(name: String, port: u16, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        connections.retain(|c| !c.is_finished());
        if !readable(&listener) {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let (name, stop) = (name.clone(), stop.clone());
        connections.push(std::thread::spawn(move || echo(&name, stream, &stop)));
    }
    for c in connections {
        let _ = c.join();
    }
    Ok(())
}

impl EchoServers {
    /// An echo server on `port` in each of `backends`.
    pub fn start(backends: &[Host], port: u16) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for b in backends {
            let (name, s) = (b.name.clone(), stop.clone());
            threads.push(b.ns.spawn(move || serve(name, port, s)));
        }
        // Give the threads a moment to bind.
        std::thread::sleep(Duration::from_millis(200));
        if let Some(t) = threads.iter().position(|t| t.is_finished()) {
            let t = threads.remove(t);
            return Err(t
                .join()
                .map_err(|_| anyhow::anyhow!("echo server panicked"))?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("echo server exited")));
        }
        Ok(Self { stop, threads })
    }
}

impl Drop for EchoServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How a long-lived connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Never established.
    Connect,
    /// Reset, aborted, or closed by the other side before the end.
    Reset,
    /// No answer within the stall time.
    Stall,
    /// An answer that was not the echo of the request.
    WrongAnswer,
    /// Any other socket error.
    Other,
}

#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    /// The exchange it happened on (1 = the first).
    pub exchange: u64,
    pub detail: String,
}

/// What became of one long-lived connection.
#[derive(Clone, Debug)]
pub struct Held {
    pub id: usize,
    pub target: SocketAddr,
    /// The client's end, once connected.
    pub local: Option<SocketAddr>,
    /// Exchanges answered correctly.
    pub exchanges: u64,
    /// Every backend that answered, in the order they first did: one name
    /// when the connection stayed on its backend.
    pub backends: Vec<String>,
    pub first_answer: Option<Instant>,
    pub last_answer: Option<Instant>,
    /// The first failure; the connection ends there.
    pub fault: Option<Fault>,
}

/// Pacing of the long-lived connections.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Pause between two exchanges of a connection.
    pub gap: Duration,
    /// No answer for this long is a stall.
    pub stall: Duration,
    /// No connection lives longer than this.
    pub max_life: Duration,
}

/// One request and its answer: the backend's name, or the fault.
fn exchange(
    stream: &TcpStream,
    reader: &mut BufReader<&TcpStream>,
    request: &str,
    number: u64,
) -> Result<String, Fault> {
    let fault = |kind, detail: String| Fault {
        kind,
        exchange: number,
        detail,
    };
    let io_fault = |what: &str, e: std::io::Error| {
        let kind = match e.kind() {
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                FaultKind::Reset
            }
            ErrorKind::WouldBlock | ErrorKind::TimedOut => FaultKind::Stall,
            _ => FaultKind::Other,
        };
        fault(kind, format!("{what}: {e}"))
    };
    let mut w = stream;
    w.write_all(request.as_bytes())
        .map_err(|e| io_fault("write", e))?;
    let mut answer = Vec::new();
    match reader.read_until(b'\n', &mut answer) {
        Ok(_) if answer.ends_with(b"\n") => {}
        Ok(_) => {
            return Err(fault(
                FaultKind::Reset,
                format!(
                    "closed by the peer after {:?}",
                    String::from_utf8_lossy(&answer)
                ),
            ));
        }
        Err(e) => return Err(io_fault("read", e)),
    }
    let answer = String::from_utf8_lossy(&answer);
    match answer.split_once(' ') {
        Some((name, echoed)) if echoed == request && !name.is_empty() => Ok(name.to_string()),
        _ => Err(fault(
            FaultKind::WrongAnswer,
            format!("sent {request:?}, got {answer:?}"),
        )),
    }
}

/// Open one connection to `target` and exchange `ID SEQ` lines on it every
/// `pace.gap` until `stop` (or `pace.max_life`, or the first fault). Counts
/// itself in `settled` once it is established or has failed to be. Run on a
/// thread inside the client's namespace.
pub fn hold(
    id: usize,
    target: SocketAddr,
    pace: Pace,
    settled: &AtomicUsize,
    stop: &AtomicBool,
) -> Held {
    let begun = Instant::now();
    let mut held = Held {
        id,
        target,
        local: None,
        exchanges: 0,
        backends: Vec::new(),
        first_answer: None,
        last_answer: None,
        fault: None,
    };
    let stream = match TcpStream::connect_timeout(&target, pace.stall)
        .and_then(|s| s.set_read_timeout(Some(pace.stall)).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            settled.fetch_add(1, Ordering::Relaxed);
            held.fault = Some(Fault {
                kind: FaultKind::Connect,
                exchange: 0,
                detail: format!("connect: {e}"),
            });
            return held;
        }
    };
    let _ = stream.set_nodelay(true);
    held.local = stream.local_addr().ok();
    settled.fetch_add(1, Ordering::Relaxed);
    let mut reader = BufReader::new(&stream);
    while !stop.load(Ordering::Relaxed) && begun.elapsed() < pace.max_life {
        let number = held.exchanges + 1;
        match exchange(&stream, &mut reader, &format!("{id} {number}\n"), number) {
            Ok(name) => {
                let now = Instant::now();
                held.first_answer.get_or_insert(now);
                held.last_answer = Some(now);
                held.exchanges = number;
                if !held.backends.contains(&name) {
                    held.backends.push(name);
                }
            }
            Err(fault) => {
                held.fault = Some(fault);
                return held;
            }
        }
        std::thread::sleep(pace.gap);
    }
    // A clean close: the server sees the end of the stream.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    held
}

/// Many long-lived connections from the client namespace, one thread each.
/// Dropping it stops them.
pub struct LongConnections {
    stop: Arc<AtomicBool>,
    settled: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<anyhow::Result<Held>>>,
}

impl LongConnections {
    /// One connection per target; connection `i` waits `i * stagger` before
    /// connecting, so the backends' accept queues are not flooded at once.
    pub fn open(client: &Netns, targets: &[SocketAddr], pace: Pace, stagger: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let settled = Arc::new(AtomicUsize::new(0));
        let threads = targets
            .iter()
            .enumerate()
            .map(|(id, &target)| {
                let (stop, settled) = (stop.clone(), settled.clone());
                client.spawn(move || {
                    std::thread::sleep(stagger * id as u32);
                    Ok(hold(id, target, pace, &settled, &stop))
                })
            })
            .collect();
        Self {
            stop,
            settled,
            threads,
        }
    }

    /// Wait until every connection is established or failed to be; false
    /// if `timeout` passed first.
    pub fn wait_settled(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.settled.load(Ordering::Relaxed) < self.threads.len() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Stop every connection and collect what became of each, in target order.
    pub fn finish(mut self) -> anyhow::Result<Vec<Held>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .drain(..)
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("connection thread panicked"))?
            })
            .collect()
    }
}

impl Drop for LongConnections {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One short connection to `target`: connect, one exchange, close. The
/// client's address and the backend that answered. Run inside the client's
/// namespace.
pub fn probe(target: SocketAddr, timeout: Duration) -> Result<(SocketAddr, String), String> {
    let stream =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(&stream);
    let name = exchange(&stream, &mut reader, "probe 1\n", 1)
        .map_err(|f| format!("{:?}: {}", f.kind, f.detail))?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok((local, name))
}
