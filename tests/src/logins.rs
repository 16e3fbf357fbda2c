//! The incident replay's login service (`cargo xtask incident-replay`,
//! docs/INCIDENT.md): a capacity-limited login server on every backend and an
//! open-loop login client, both real TCP through the testbed's balancer.
//!
//! The server model (an auth server with a bounded work queue):
//!
//! - it starts at most [`Model::capacity_per_second`] logins in any sliding
//!   1 s window;
//! - a login over capacity waits, first come first served, for the next free
//!   slot: it is served late (slow), not failed;
//! - a login that would wait longer than [`Model::max_wait`] is refused at
//!   once with `FAIL overloaded` (load shedding): a failed login.
//!
//! So a short overload is absorbed by the queue and a long one (the real
//! outage: 2 h 45 min) fails everything above capacity.
//!
//! The client is open loop, like users: it starts logins at a fixed rate
//! whatever the answers take, one TCP connection per login, from a bounded
//! pool of threads; a login's latency counts from when it was due.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::netns::Netns;
use crate::testbed::{Host, TCP_PORT, Testbed, VIP4};

/// The incident's service: ten auth servers of equal capacity.
pub const BACKENDS: usize = 10;
/// The two servers the bad change overloads, and their weight in it.
pub const HOT: [&str; 2] = ["auth-1", "auth-2"];
pub const BAD_WEIGHT: u32 = 10;
/// The users' logins a second: half the servers' capacity.
pub const LOGINS_PER_SECOND: u32 = 300;

/// The servers' names, auth-1..auth-10.
pub fn names() -> Vec<String> {
    (1..=BACKENDS).map(|i| format!("auth-{i}")).collect()
}

/// The incident's config: one VIP, `login`, on the testbed's IPv4 VIP and
/// TCP port; backends auth-1..auth-10 on the backend hosts b1..b10 with
/// these weights, capacity 1 each; a 3 s detection window.
pub fn config(weights: &[u32]) -> String {
    let mut out = String::from(
        "# incident replay (cargo xtask incident-replay): ten auth servers of equal capacity\n\
         interface = \"eth0\"\nhash_seed = 1\n\n\
         [imbalance]\nwindow = \"3s\"\nmin_new_flow_rate = 5\n\n",
    );
    out.push_str(&format!(
        "[[vip]]\nname = \"login\"\naddress = \"{VIP4}\"\nport = {TCP_PORT}\nprotocol = \"tcp\"\n"
    ));
    for (i, w) in weights.iter().enumerate() {
        let last = 11 + i;
        out.push_str(&format!(
            "\n[[vip.backend]]\nname = \"auth-{}\"\naddress = \"198.18.0.{last}\"\n\
             mac = \"02:00:00:00:00:{last:02}\"\nweight = {w}\ncapacity = 1\n",
            i + 1
        ));
    }
    out
}

/// The good config (weights 1) and the bad one (the hot servers at
/// [`BAD_WEIGHT`]).
pub fn good_and_bad() -> (String, String) {
    let mut bad = [1; BACKENDS];
    bad[0] = BAD_WEIGHT;
    bad[1] = BAD_WEIGHT;
    (config(&[1; BACKENDS]), config(&bad))
}

/// The login server's parameters (the same on every backend).
#[derive(Clone, Copy, Debug)]
pub struct Model {
    /// Logins started in any sliding window of `window`.
    pub capacity_per_second: usize,
    pub window: Duration,
    /// The longest a login may wait for a slot; longer is refused.
    pub max_wait: Duration,
}

impl Model {
    /// What the incident replay runs: 60 logins/s per server, up to 2 s of
    /// queue.
    pub const INCIDENT: Model = Model {
        capacity_per_second: 60,
        window: Duration::from_secs(1),
        max_wait: Duration::from_secs(2),
    };
}

/// The admission rule of one server: when each arriving login may start,
/// or `None` when it would wait longer than `max_wait`. Pure, so the model
/// can also be replayed on recorded arrivals with other parameters.
#[derive(Debug)]
pub struct Admission {
    model: Model,
    /// The last `capacity` start times, in order.
    starts: VecDeque<Instant>,
}

impl Admission {
    pub fn new(model: Model) -> Self {
        Self {
            model,
            starts: VecDeque::with_capacity(model.capacity_per_second + 1),
        }
    }

    /// Admit a login arriving at `arrival` (arrivals in order): its start
    /// time, or `None` (refused, no slot taken).
    pub fn admit(&mut self, arrival: Instant) -> Option<Instant> {
        let cap = self.model.capacity_per_second.max(1);
        let mut start = arrival;
        // First come, first served: never before an earlier login.
        if let Some(&last) = self.starts.back() {
            start = start.max(last);
        }
        // At most `cap` starts in any window: the `cap`-th last start must
        // have left the window.
        if self.starts.len() >= cap {
            start = start.max(self.starts[self.starts.len() - cap] + self.model.window);
        }
        if start.duration_since(arrival) > self.model.max_wait {
            return None;
        }
        self.starts.push_back(start);
        while self.starts.len() > cap {
            self.starts.pop_front();
        }
        Some(start)
    }

    /// How long a login arriving at `now` would wait (0 when a slot is free).
    pub fn backlog(&self, now: Instant) -> Duration {
        let cap = self.model.capacity_per_second.max(1);
        let mut start = now;
        if let Some(&last) = self.starts.back() {
            start = start.max(last);
        }
        if self.starts.len() >= cap {
            start = start.max(self.starts[self.starts.len() - cap] + self.model.window);
        }
        start.duration_since(now)
    }
}

/// What a server did with one login.
#[derive(Clone, Copy, Debug)]
pub struct ServerEvent {
    pub arrival: Instant,
    /// How long it waited for a slot; `None`: refused (over the queue limit).
    pub waited: Option<Duration>,
}

/// One backend's login server: its record and its queue.
pub struct ServerState {
    pub name: String,
    admission: Mutex<Admission>,
    queue: Mutex<VecDeque<(Instant, TcpStream)>>,
    wake: Condvar,
    pub events: Mutex<Vec<ServerEvent>>,
}

impl ServerState {
    /// How long a login arriving now would wait.
    pub fn backlog(&self) -> Duration {
        self.admission.lock().unwrap().backlog(Instant::now())
    }
}

/// The login servers on every backend; stopped when dropped.
pub struct LoginServers {
    stop: Arc<AtomicBool>,
    pub servers: Vec<Arc<ServerState>>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// Wait until `fd` is readable or 100 ms passed.
fn readable(fd: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(100u16)).is_ok_and(|n| n > 0)
}

/// Accept logins, admit or refuse them; admitted ones go to the queue.
fn accept_loop(state: Arc<ServerState>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    // [::] takes IPv4 too; the backend holds the VIP on lo (servers.rs).
    let listener = TcpListener::bind(SocketAddr::from((
        std::net::Ipv6Addr::UNSPECIFIED,
        TCP_PORT,
    )))
    .with_context(|| format!("{}: binding port {TCP_PORT}", state.name))?;
    while !stop.load(Ordering::Relaxed) {
        if !readable(&listener) {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let arrival = Instant::now();
        // The request line ("LOGIN user"), so that the answer is not
        // followed by a reset for unread data. The client sends it at once.
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let admitted = state.admission.lock().unwrap().admit(arrival);
        match admitted {
            None => {
                let _ = (&stream).write_all(b"FAIL overloaded\n");
                state.events.lock().unwrap().push(ServerEvent {
                    arrival,
                    waited: None,
                });
            }
            Some(start) => {
                state.events.lock().unwrap().push(ServerEvent {
                    arrival,
                    waited: Some(start.duration_since(arrival)),
                });
                state.queue.lock().unwrap().push_back((start, stream));
                state.wake.notify_one();
            }
        }
    }
    Ok(())
}

/// Answer queued logins when their slot comes.
fn serve_loop(state: Arc<ServerState>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let answer = format!("OK {}\n", state.name);
    let mut queue = state.queue.lock().unwrap();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        match queue.front() {
            Some((start, _)) if *start <= now => {
                let (_, stream) = queue.pop_front().expect("front");
                drop(queue);
                let _ = (&stream).write_all(answer.as_bytes());
                drop(stream);
                queue = state.queue.lock().unwrap();
            }
            front => {
                let wait = front
                    .map_or(Duration::from_millis(100), |(start, _)| {
                        start.duration_since(now)
                    })
                    .min(Duration::from_millis(100));
                queue = state.wake.wait_timeout(queue, wait).unwrap().0;
            }
        }
    }
    Ok(())
}

impl LoginServers {
    /// A login server on each backend of `bed`, answering as `names[i]`.
    pub fn start(bed: &Testbed, names: &[String], model: Model) -> anyhow::Result<Self> {
        Self::start_on(&bed.backends, names, model)
    }

    /// A login server on each of `backends`, answering as `names[i]`.
    pub fn start_on(backends: &[Host], names: &[String], model: Model) -> anyhow::Result<Self> {
        anyhow::ensure!(names.len() == backends.len(), "one name per backend");
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut servers = Vec::new();
        for (b, name) in backends.iter().zip(names) {
            let state = Arc::new(ServerState {
                name: name.clone(),
                admission: Mutex::new(Admission::new(model)),
                queue: Mutex::new(VecDeque::new()),
                wake: Condvar::new(),
                events: Mutex::new(Vec::new()),
            });
            let (s, st) = (state.clone(), stop.clone());
            threads.push(b.ns.spawn(move || accept_loop(s, st)));
            let (s, st) = (state.clone(), stop.clone());
            threads.push(std::thread::spawn(move || serve_loop(s, st)));
            servers.push(state);
        }
        std::thread::sleep(Duration::from_millis(200));
        if let Some(t) = threads.iter().position(|t| t.is_finished()) {
            let t = threads.remove(t);
            stop.store(true, Ordering::Relaxed);
            return Err(t
                .join()
                .map_err(|_| anyhow::anyhow!("login server panicked"))?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("login server exited")));
        }
        Ok(Self {
            stop,
            servers,
            threads,
        })
    }
}

impl Drop for LoginServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.servers {
            s.wake.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One login as the client saw it.
#[derive(Clone, Debug)]
pub struct Login {
    /// When it was due (the open-loop schedule).
    pub due: Instant,
    /// From due to the answer (or the failure).
    pub latency: Duration,
    /// The backend that logged the user in, or why the login failed.
    pub result: Result<String, String>,
}

fn login_once(target: SocketAddr, user: u64, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut s =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
    s.write_all(format!("LOGIN user-{user}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or("timed out")?;
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 128];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let reply = reply.trim();
    match reply.strip_prefix("OK ") {
        Some(backend) => Ok(backend.to_string()),
        None if reply.starts_with("FAIL") => Err(format!("server: {reply}")),
        None => Err(format!("bad reply {reply:?}")),
    }
}

/// Open-loop logins at a fixed rate until stopped.
pub struct LoginClient {
    stop: Arc<AtomicBool>,
    pacer: Option<JoinHandle<anyhow::Result<()>>>,
    workers: Vec<JoinHandle<anyhow::Result<()>>>,
    /// Every finished login so far.
    pub logins: Arc<Mutex<Vec<Login>>>,
    /// Logins the pacer could not hand to a worker (all busy, channel full).
    pub dropped: Arc<AtomicU64>,
}

impl LoginClient {
    /// Start `per_second` logins a second against `target` from `client`,
    /// on `workers` threads, each giving up after `timeout`; the pacer stops
    /// by itself after `max_seconds`.
    pub fn start(
        client: &Netns,
        target: SocketAddr,
        per_second: u32,
        workers: usize,
        timeout: Duration,
        max_seconds: u64,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let logins = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(AtomicU64::new(0));
        // Room for two seconds of logins waiting for a worker.
        let (tx, rx) = sync_channel::<(u64, Instant)>(2 * per_second as usize);
        let rx: Arc<Mutex<Receiver<(u64, Instant)>>> = Arc::new(Mutex::new(rx));
        let workers = (0..workers)
            .map(|_| {
                let (rx, logins) = (rx.clone(), logins.clone());
                client.spawn(move || {
                    loop {
                        let ticket = rx.lock().unwrap().recv();
                        let Ok((user, due)) = ticket else {
                            return Ok(());
                        };
                        let result = login_once(target, user, timeout);
                        let login = Login {
                            due,
                            latency: due.elapsed(),
                            result,
                        };
                        logins.lock().unwrap().push(login);
                    }
                })
            })
            .collect();
        let pacer = {
            let (stop, dropped, logins) = (stop.clone(), dropped.clone(), logins.clone());
            let gap = Duration::from_secs(1) / per_second.max(1);
            std::thread::spawn(move || {
                let begun = Instant::now();
                let end = begun + Duration::from_secs(max_seconds);
                let mut due = begun;
                let mut user = 0u64;
                while !stop.load(Ordering::Relaxed) && due < end {
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    user += 1;
                    match tx.try_send((user, due)) {
                        Ok(()) => {}
                        // Every worker busy for two seconds: the login
                        // fails, as a user's would.
                        Err(TrySendError::Full(_)) => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            logins.lock().unwrap().push(Login {
                                due,
                                latency: Duration::ZERO,
                                result: Err("client: no free worker".into()),
                            });
                        }
                        Err(TrySendError::Disconnected(_)) => break,
                    }
                    due += gap;
                }
                Ok(())
            })
        };
        Self {
            stop,
            pacer: Some(pacer),
            workers,
            logins,
            dropped,
        }
    }

    /// Stop starting logins, wait for those in flight (each bounded by its
    /// timeout); every login, by due time.
    pub fn finish(mut self) -> Vec<Login> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.pacer.take() {
            let _ = p.join();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let mut all = std::mem::take(&mut *self.logins.lock().unwrap());
        all.sort_by_key(|l| l.due);
        all
    }
}

impl Drop for LoginClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.pacer.take() {
            let _ = p.join();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Replay the admission rule over recorded arrivals (in order) with another
/// model: how many would have been refused.
pub fn refused_under(model: Model, arrivals: &[Instant]) -> usize {
    let mut a = Admission::new(model);
    arrivals.iter().filter(|&&t| a.admit(t).is_none()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_capacity_nothing_waits() {
        let mut a = Admission::new(Model::INCIDENT);
        let t0 = Instant::now();
        for i in 0..600 {
            // 30 a second.
            let t = t0 + Duration::from_millis(i * 1000 / 30);
            assert_eq!(a.admit(t), Some(t));
        }
    }

    #[test]
    fn a_burst_queues_then_is_refused() {
        let mut a = Admission::new(Model::INCIDENT);
        let t0 = Instant::now();
        let starts: Vec<_> = (0..200).map(|_| a.admit(t0)).collect();
        let w = |i: usize| starts[i].map(|s| s.duration_since(t0));
        assert_eq!(w(0), Some(Duration::ZERO));
        assert_eq!(w(59), Some(Duration::ZERO));
        assert_eq!(w(60), Some(Duration::from_secs(1)));
        assert_eq!(w(179), Some(Duration::from_secs(2)));
        assert!(starts[180..].iter().all(Option::is_none));
        // A refused login took no slot.
        assert_eq!(a.backlog(t0), Duration::from_secs(3));
    }

    #[test]
    fn sustained_overload_sheds_the_excess() {
        let t0 = Instant::now();
        // 107 a second for 60 s against 60 a second.
        let arrivals: Vec<_> = (0..107 * 60)
            .map(|i| t0 + Duration::from_micros(i * 1_000_000 / 107))
            .collect();
        let refused = refused_under(Model::INCIDENT, &arrivals);
        // About 47/s once two seconds of queue are full.
        let expected = 47.0 * (60.0 - 2.0 * 60.0 / 47.0);
        assert!(
            (refused as f64 - expected).abs() < 0.05 * expected,
            "{refused} vs {expected}"
        );
    }
}
