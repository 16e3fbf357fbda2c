//! One backend's health: a state machine over check results, with rise,
//! fall and flap damping. Pure: the caller passes each result and the time.
//!
//! The rules:
//!
//! - A backend starts **up** (a restarted daemon keeps serving what the
//!   config says until the checks say otherwise), unless a restarted daemon
//!   finds it out of its pinned table (`start_down`).
//! - Up, it goes **down** after `fall` failed checks in a row.
//! - Down, it comes back **up** after `rise` successful checks in a row,
//!   unless it is *flapping*.
//! - **Flapping**: it went down `flap_limit` times or more within the last
//!   `flap_window` (counting the current time it is down). Then it must also
//!   pass every check for `flap_hold` (from the first success of the current
//!   run to the latest) before it comes back. `flap_limit = 0` turns damping
//!   off. Downs older than the window are forgotten, so a backend that stays
//!   healthy stops being flapping by itself.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::HealthCheck;

pub use crate::clock::Clock;

/// The counts and durations of the rules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    pub rise: u32,
    pub fall: u32,
    pub flap_limit: u32,
    pub flap_window_seconds: f64,
    pub flap_hold_seconds: f64,
}

impl From<&HealthCheck> for Params {
    fn from(h: &HealthCheck) -> Self {
        Self {
            rise: h.rise,
            fall: h.fall,
            flap_limit: h.flap_limit,
            flap_window_seconds: h.flap_window_seconds,
            flap_hold_seconds: h.flap_hold_seconds,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// A change of state, returned by the check that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    WentDown,
    CameUp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    state: Health,
    /// When the state last changed (or the machine was made).
    since: Clock,
    ok_streak: u32,
    fail_streak: u32,
    /// Monotonic time of the first success of the current run of successes.
    ok_since: Option<f64>,
    /// Monotonic times it went down, within the flap window.
    downs: VecDeque<f64>,
    last_check_unix: Option<f64>,
    last_error: Option<(f64, String)>,
    checks_ok: u64,
    checks_failed: u64,
    down_events: u64,
}

impl Machine {
    /// Up, unchecked.
    pub fn new(now: Clock) -> Self {
        Self {
            state: Health::Up,
            since: now,
            ok_streak: 0,
            fail_streak: 0,
            ok_since: None,
            downs: VecDeque::new(),
            last_check_unix: None,
            last_error: None,
            checks_ok: 0,
            checks_failed: 0,
            down_events: 0,
        }
    }

    /// Down since `now`, with no history: a backend an earlier daemon's
    /// checks had taken out (its patched table found in the pinned maps).
    /// It comes back after `rise` passed checks, as any down backend.
    pub fn start_down(&mut self, now: Clock) {
        self.state = Health::Down;
        self.since = now;
        self.ok_streak = 0;
        self.ok_since = None;
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Take one check's result.
    pub fn observe(
        &mut self,
        p: &Params,
        now: Clock,
        result: Result<(), String>,
    ) -> Option<Transition> {
        self.last_check_unix = Some(now.unix);
        self.forget_old_downs(p, now.mono);
        match result {
            Ok(()) => {
                self.checks_ok += 1;
                self.fail_streak = 0;
                if self.ok_streak == 0 {
                    self.ok_since = Some(now.mono);
                }
                self.ok_streak = self.ok_streak.saturating_add(1);
                let held = now.mono - self.ok_since.unwrap_or(now.mono);
                if self.state == Health::Down
                    && self.ok_streak >= p.rise
                    && (!self.flapping(p) || held >= p.flap_hold_seconds - 1e-9)
                {
                    self.state = Health::Up;
                    self.since = now;
                    return Some(Transition::CameUp);
                }
                None
            }
            Err(error) => {
                self.checks_failed += 1;
                self.ok_streak = 0;
                self.ok_since = None;
                self.fail_streak = self.fail_streak.saturating_add(1);
                self.last_error = Some((now.unix, error));
                if self.state == Health::Up && self.fail_streak >= p.fall {
                    self.state = Health::Down;
                    self.since = now;
                    self.down_events += 1;
                    self.downs.push_back(now.mono);
                    return Some(Transition::WentDown);
                }
                None
            }
        }
    }

    fn forget_old_downs(&mut self, p: &Params, now: f64) {
        while self
            .downs
            .front()
            .is_some_and(|&t| now - t > p.flap_window_seconds)
        {
            self.downs.pop_front();
        }
        // Bounded whatever the window: only the count up to the limit matters.
        while self.downs.len() > p.flap_limit.max(1) as usize {
            self.downs.pop_front();
        }
    }

    /// It went down `flap_limit` times or more within the window (as of its
    /// last check).
    pub fn flapping(&self, p: &Params) -> bool {
        p.flap_limit > 0 && self.downs.len() >= p.flap_limit as usize
    }

    /// What `xlb status` shows.
    pub fn view(&self, p: &Params) -> MachineView {
        MachineView {
            state: self.state,
            since_unix_seconds: self.since.unix,
            last_check_unix_seconds: self.last_check_unix,
            last_error: self.last_error.as_ref().map(|(_, e)| e.clone()),
            last_error_unix_seconds: self.last_error.as_ref().map(|(t, _)| *t),
            consecutive_ok: self.ok_streak,
            consecutive_failed: self.fail_streak,
            checks_ok_total: self.checks_ok,
            checks_failed_total: self.checks_failed,
            down_events_total: self.down_events,
            flapping: self.flapping(p),
        }
    }
}

/// A machine's state for the status document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineView {
    pub state: Health,
    /// When it went up or down (or the check was set up).
    pub since_unix_seconds: f64,
    /// None before the first check finished.
    pub last_check_unix_seconds: Option<f64>,
    /// The last failed check's reason (kept after the backend came back).
    pub last_error: Option<String>,
    pub last_error_unix_seconds: Option<f64>,
    pub consecutive_ok: u32,
    pub consecutive_failed: u32,
    pub checks_ok_total: u64,
    pub checks_failed_total: u64,
    /// Times it was taken out.
    pub down_events_total: u64,
    /// Damped: it needs `flap_hold` of passing checks to come back.
    pub flapping: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params {
        rise: 2,
        fall: 3,
        flap_limit: 3,
        flap_window_seconds: 60.0,
        flap_hold_seconds: 30.0,
    };

    fn at(t: f64) -> Clock {
        Clock {
            mono: t,
            unix: 1_700_000_000.0 + t,
        }
    }

    fn fail() -> Result<(), String> {
        Err("connect: connection refused".into())
    }

    /// Feed results one a second from `t`; the transitions with their times.
    fn run(m: &mut Machine, t: &mut f64, results: &str) -> Vec<(f64, Transition)> {
        let mut out = Vec::new();
        for c in results.chars() {
            let r = if c == '+' { Ok(()) } else { fail() };
            if let Some(tr) = m.observe(&P, at(*t), r) {
                out.push((*t, tr));
            }
            *t += 1.0;
        }
        out
    }

    #[test]
    fn starts_up_and_falls_after_fall_failures_in_a_row() {
        let mut m = Machine::new(at(0.0));
        assert_eq!(m.state(), Health::Up);
        let mut t = 0.0;
        // Two failures, a success: the streak starts over.
        assert!(run(&mut m, &mut t, "--+--").is_empty());
        assert_eq!(m.state(), Health::Up);
        assert_eq!(run(&mut m, &mut t, "-"), vec![(5.0, Transition::WentDown)]);
        let v = m.view(&P);
        assert_eq!(v.state, Health::Down);
        assert_eq!(v.since_unix_seconds, at(5.0).unix);
        assert_eq!(v.last_error.as_deref(), Some("connect: connection refused"));
        assert_eq!((v.checks_ok_total, v.checks_failed_total), (1, 5));
        assert_eq!(v.down_events_total, 1);
        // More failures: still down, no new transition.
        assert!(run(&mut m, &mut t, "---").is_empty());
    }

    #[test]
    fn rises_after_rise_successes_in_a_row() {
        let mut m = Machine::new(at(0.0));
        let mut t = 0.0;
        run(&mut m, &mut t, "---");
        assert_eq!(m.state(), Health::Down);
        // One success, a failure: back to zero.
        assert!(run(&mut m, &mut t, "+-+").is_empty());
        assert_eq!(run(&mut m, &mut t, "+"), vec![(6.0, Transition::CameUp)]);
        let v = m.view(&P);
        assert_eq!((v.state, v.consecutive_ok), (Health::Up, 2));
        // The last error stays visible.
        assert!(v.last_error.is_some());
    }

    #[test]
    fn a_flapping_backend_must_hold_its_successes_longer() {
        let mut m = Machine::new(at(0.0));
        let mut t = 0.0;
        // Down and up twice: normal rises.
        assert_eq!(
            run(&mut m, &mut t, "---++---++"),
            vec![
                (2.0, Transition::WentDown),
                (4.0, Transition::CameUp),
                (7.0, Transition::WentDown),
                (9.0, Transition::CameUp)
            ]
        );
        // The third down within 60 s: flapping. Two successes no longer do.
        assert_eq!(
            run(&mut m, &mut t, "---"),
            vec![(12.0, Transition::WentDown)]
        );
        assert!(m.view(&P).flapping);
        let start = t;
        let ups = run(&mut m, &mut t, &"+".repeat(40));
        // Back once the run of successes spans flap_hold (30 s).
        assert_eq!(ups, vec![(start + 30.0, Transition::CameUp)]);
    }

    #[test]
    fn a_failure_during_the_hold_starts_it_over() {
        // A long window, so the downs stay counted throughout.
        let p = Params {
            flap_window_seconds: 600.0,
            ..P
        };
        let mut m = Machine::new(at(0.0));
        let mut out = Vec::new();
        let pattern = format!("---++---++---{}-{}", "+".repeat(20), "+".repeat(40));
        for (i, c) in pattern.chars().enumerate() {
            let r = if c == '+' { Ok(()) } else { fail() };
            if let Some(tr) = m.observe(&p, at(i as f64), r) {
                out.push((i as f64, tr));
            }
        }
        // Down at 12; successes from 13, a failure at 33, successes from 34:
        // up once those span 30 s, at 64.
        assert_eq!(out[4], (12.0, Transition::WentDown));
        assert_eq!(out[5..], [(64.0, Transition::CameUp)]);
    }

    #[test]
    fn old_downs_are_forgotten() {
        let mut m = Machine::new(at(0.0));
        let mut t = 0.0;
        run(&mut m, &mut t, "---++---++");
        // 100 s of health later, the two downs left the window: the next
        // down is the first again, and two successes bring it back.
        t += 100.0;
        run(&mut m, &mut t, "+");
        let tr = run(&mut m, &mut t, "---++");
        assert_eq!(
            tr,
            vec![
                (t - 3.0, Transition::WentDown),
                (t - 1.0, Transition::CameUp)
            ]
        );
        assert!(!m.view(&P).flapping);
    }

    #[test]
    fn no_damping_with_flap_limit_0() {
        let p = Params { flap_limit: 0, ..P };
        let mut m = Machine::new(at(0.0));
        let mut n = 0;
        for i in 0..50 {
            let t = i as f64;
            let r = if i % 6 < 3 { fail() } else { Ok(()) };
            if m.observe(&p, at(t), r).is_some() {
                n += 1;
            }
        }
        // 50 checks in cycles of 6 (3 down, 3 up): every cycle goes down and up.
        assert!(n >= 16, "{n} transitions");
        assert!(!m.view(&p).flapping);
    }

    #[test]
    fn rise_and_fall_of_one() {
        let p = Params {
            rise: 1,
            fall: 1,
            flap_limit: 0,
            ..P
        };
        let mut m = Machine::new(at(0.0));
        assert_eq!(m.observe(&p, at(0.0), fail()), Some(Transition::WentDown));
        assert_eq!(m.observe(&p, at(1.0), Ok(())), Some(Transition::CameUp));
    }
}
