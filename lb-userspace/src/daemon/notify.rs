//! systemd's notification protocol (`Type=notify`, `WatchdogSec=`), through
//! the `sd-notify` crate. Outside systemd (no NOTIFY_SOCKET) every call does
//! nothing.
//!
//! - READY=1 once the first apply is done and the control socket listens,
//!   so `systemctl start xlb && xlb status` works;
//! - WATCHDOG=1 every half `WatchdogSec` while the daemon makes progress
//!   (`Progress`): a daemon that made none for `PROGRESS_STALE` is no longer
//!   pinged, and systemd restarts it `WatchdogSec` later (forwarding goes
//!   on from the kernel meanwhile);
//! - STOPPING=1 when the daemon exits on a signal.
//!
//! The rule (docs/RELIABILITY.md): the pinger is a thread of its own that
//! takes no lock and waits on no reactor, so neither an apply that holds
//! the controller's lock for seconds nor a reactor busy writing scrapes
//! delays a ping. What it reads is the last beat of `Progress`: the
//! collector beats after every tick (once a second; it needs the reactor
//! and the controller's lock), and an operation holding the lock beats at
//! each of its steps (an apply: planned, tables built, tables written,
//! recorded) and inside the long ones (after each Maglev table built and
//! each table swapped). A wedged controller (a deadlock, a step that never ends)
//! or reactor stops both, and the pings stop `PROGRESS_STALE` later.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("sd_notify: {e}");
    }
}

/// The daemon is up: the first apply made revision `revision`.
pub fn ready(revision: u64) {
    let status = format!("serving revision {revision}");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to ping: half the watchdog timeout systemd set, if any.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|t| t / 2)
}

/// No progress for this long and the watchdog is no longer pinged. Longer
/// than the longest step between two beats at xlb's maxima: the tables of
/// a whole 1,024 VIPs x 64 backends config built, or written, in one go
/// (a whole apply of 1,000 x 64 takes 10–18 s on a shared 2-core machine,
/// docs/BENCHMARKS.md, in four steps). With the unit's `WatchdogSec=30` a
/// wedged daemon is restarted at most 20 + 30 s after its last progress.
pub const PROGRESS_STALE: Duration = Duration::from_secs(20);

/// The daemon's last progress, beaten by whoever makes it, read by the
/// watchdog's pinger without any lock.
#[derive(Debug)]
pub struct Progress {
    origin: Instant,
    /// Milliseconds from `origin` to the last beat.
    last_ms: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Progress made now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Some progress was made now.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    fn beat_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.origin).as_millis();
        self.last_ms
            .fetch_max(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// How long ago the last beat was, at `now`.
    pub fn idle(&self, now: Instant) -> Duration {
        let last = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    /// Whether the watchdog is pinged at `now`: while the last beat is
    /// less than `stale` old.
    pub fn verdict(&self, now: Instant, stale: Duration) -> Verdict {
        let idle = self.idle(now);
        if idle < stale {
            Verdict::Ping
        } else {
            Verdict::Withhold { idle }
        }
    }
}

/// What the pinger does at one wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ping,
    /// No progress for `idle`: no ping.
    Withhold {
        idle: Duration,
    },
}

/// The pinger: at each instant `wake` gives (None: stop), ping through
/// `ping` while `progress` is fresh; say once when it stops, and when it
/// starts again. It takes no lock: it cannot wait on the controller.
fn pinger(
    progress: &Progress,
    stale: Duration,
    mut wake: impl FnMut() -> Option<Instant>,
    mut ping: impl FnMut(),
) {
    let mut withholding = false;
    while let Some(now) = wake() {
        match progress.verdict(now, stale) {
            Verdict::Ping => {
                if withholding {
                    log::warn!("systemd watchdog: the daemon makes progress again; pinging");
                    withholding = false;
                }
                ping();
            }
            Verdict::Withhold { idle } => {
                if !withholding {
                    log::error!(
                        "systemd watchdog: no progress for {idle:?} (the collector has not \
                         ticked, no apply step ended): not pinging, so systemd restarts the \
                         daemon once WatchdogSec has passed"
                    );
                    withholding = true;
                }
            }
        }
    }
}

/// The watchdog's pinger thread; stopped and joined on drop.
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Ping every `watchdog_period` while `progress` is fresh, from a
    /// thread of its own; None when systemd set no watchdog.
    pub fn spawn(progress: Arc<Progress>) -> std::io::Result<Option<Self>> {
        let Some(period) = watchdog_period() else {
            return Ok(None);
        };
        log::info!(
            "systemd watchdog: a ping every {period:?} while the daemon makes progress \
             (none for {PROGRESS_STALE:?}: no ping)"
        );
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("xlb-watchdog".into())
            .spawn(move || {
                // Each wait is the period (the first too: READY=1 goes out
                // before the first ping), cut short by a stop.
                let wake = || match stopped.recv_timeout(period) {
                    Err(mpsc::RecvTimeoutError::Timeout) => Some(Instant::now()),
                    _ => None,
                };
                pinger(&progress, PROGRESS_STALE, wake, || {
                    send(&[NotifyState::Watchdog])
                });
            })?;
        Ok(Some(Self {
            stop: Some(stop),
            thread: Some(thread),
        }))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Mutex;

    const STALE: Duration = Duration::from_secs(20);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// The pinger woken at seconds 1..=`last` after `progress` began, a
    /// beat made at each second `beats` names (before that second's
    /// verdict); the seconds it pinged at.
    fn pinged_seconds(progress: &Progress, last: u64, beats: impl Fn(u64) -> bool) -> Vec<u64> {
        let t0 = progress.origin;
        let second = Cell::new(0u64);
        let mut pinged_at = Vec::new();
        pinger(
            progress,
            STALE,
            || {
                let s = second.get() + 1;
                second.set(s);
                if beats(s) {
                    progress.beat_at(t0 + secs(s));
                }
                (s <= last).then(|| t0 + secs(s))
            },
            || pinged_at.push(second.get()),
        );
        pinged_at
    }

    #[test]
    fn fresh_progress_pings_and_stale_progress_does_not() {
        let p = Progress::new();
        let t0 = p.origin;
        assert_eq!(p.verdict(t0, STALE), Verdict::Ping);
        assert_eq!(p.verdict(t0 + secs(19), STALE), Verdict::Ping);
        assert_eq!(
            p.verdict(t0 + secs(20), STALE),
            Verdict::Withhold { idle: secs(20) }
        );
        p.beat_at(t0 + secs(25));
        assert_eq!(p.verdict(t0 + secs(30), STALE), Verdict::Ping);
        // A late beat never moves the last one back.
        p.beat_at(t0 + secs(3));
        assert_eq!(p.idle(t0 + secs(30)), secs(5));
    }

    /// An apply holds the controller's lock for 60 s and beats every 5 s
    /// (its steps); the pinger, woken every second, pings every time. Then
    /// the holder wedges: no beat after 60 s, and the pings stop at 80 s.
    /// The pinger gets no lock to take: it runs to its end here while
    /// another thread holds the lock throughout.
    #[test]
    fn the_pinger_pings_through_a_long_apply_and_stops_when_it_wedges() {
        let controller = Arc::new(Mutex::new(()));
        let progress = Arc::new(Progress::new());
        let (held, holding) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let holder = {
            let controller = controller.clone();
            std::thread::spawn(move || {
                let _guard = controller.lock().unwrap();
                held.send(()).unwrap();
                released.recv().unwrap();
            })
        };
        holding.recv().unwrap();
        assert!(controller.try_lock().is_err(), "the lock is held");

        // The apply's steps beat every 5 s until 60 s.
        let pinged_at = pinged_seconds(&progress, 120, |s| s <= 60 && s.is_multiple_of(5));
        assert!(controller.try_lock().is_err(), "still held throughout");
        release.send(()).unwrap();
        holder.join().unwrap();

        let want: Vec<u64> = (1..80).collect();
        assert_eq!(
            pinged_at, want,
            "a ping each second until 20 s after the last beat"
        );
    }

    #[test]
    fn pings_resume_with_progress() {
        let progress = Progress::new();
        let pinged_at = pinged_seconds(&progress, 60, |s| s == 50);
        let want: Vec<u64> = (1..20).chain(50..=60).collect();
        assert_eq!(pinged_at, want);
    }
}
