//! Every backend's check and state, the schedule of the checks, and what
//! each VIP's table should hold. Pure: the daemon's runner asks for the
//! checks that are due, runs them, and reports each result with the time.
//!
//! A backend's state survives an apply when its check is the same (address,
//! port, kind, timeout); a backend whose check changed starts over, up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::describe;
use super::machine::{Clock, Health, Machine, MachineView, Params, Transition};
use super::patch::Membership;
use crate::config::{AllDown, Backend, BackendState, CheckKind, Config, HealthCheck, Vip};

/// A check that did not come back within its timeout plus this is taken as
/// lost (its task died) and scheduled again.
const LOST_AFTER_SECONDS: f64 = 5.0;

/// A backend of a VIP.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub vip: String,
    pub backend: String,
}

/// What one check does: connect to `addr` (no name, no proxy) and, for
/// HTTP, ask for a status, all within `timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub addr: SocketAddr,
    pub kind: CheckKind,
    pub timeout: Duration,
}

impl Spec {
    pub fn of(check: &HealthCheck, address: IpAddr) -> Spec {
        Spec {
            addr: SocketAddr::new(address, check.port),
            kind: check.kind.clone(),
            timeout: Duration::from_secs_f64(check.timeout_seconds),
        }
    }
}

/// A check to run now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub key: Key,
    /// Results of a target that was replaced meanwhile are ignored.
    pub generation: u64,
    pub spec: Spec,
}

#[derive(Clone, Debug)]
struct Target {
    spec: Spec,
    params: Params,
    interval: f64,
    machine: Machine,
    generation: u64,
    next_due: f64,
    /// When the check now running started.
    in_flight: Option<f64>,
}

/// What the monitor knows of a checked VIP.
#[derive(Clone, Debug)]
struct VipCheck {
    check: HealthCheck,
    /// Its backends in the table (state active), by name.
    table_backends: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Monitor {
    targets: BTreeMap<Key, Target>,
    vips: BTreeMap<String, VipCheck>,
    /// What each VIP's live table holds, as last written.
    live: BTreeMap<String, Membership>,
    next_generation: u64,
    /// A state changed (or a table write failed) since the tables were
    /// last brought in line.
    dirty: bool,
}

/// Where in its first interval a new target's first check goes: spread by
/// a hash of its name, so a thousand checks do not start in one instant.
fn spread(key: &Key) -> f64 {
    let h = xxhash_rust::xxh64::xxh64(format!("{}/{}", key.vip, key.backend).as_bytes(), 0);
    (h % 1000) as f64 / 1000.0
}

/// Backends a VIP checks: those that may carry traffic (active or
/// draining). Disabled ones are in maintenance: not checked.
fn checked(b: &Backend) -> bool {
    b.state != BackendState::Disabled
}

impl Monitor {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state `b` of `vip` has under `vip`'s check: its target's, if the
    /// check is the same; else up (a new check starts up).
    fn state_under(&self, vip: &Vip, b: &Backend) -> Health {
        let key = Key {
            vip: vip.name.clone(),
            backend: b.name.clone(),
        };
        match self.targets.get(&key) {
            Some(t) if t.spec == Spec::of(&vip.health, b.address) => t.machine.state(),
            _ => Health::Up,
        }
    }

    /// How many of `vip`'s active backends are up (every active one when
    /// the VIP is not checked): what `announce = "healthy"` goes by.
    pub fn backends_up(&self, vip: &Vip) -> u32 {
        vip.table_backends()
            .filter(|b| !vip.health.enabled() || self.state_under(vip, b) == Health::Up)
            .count() as u32
    }

    /// What `vip`'s table should hold now, by its backends' states and its
    /// all-down policy. Works for a VIP of a config not synced yet (an
    /// apply computes its tables before it writes them).
    pub fn wanted(&self, vip: &Vip) -> Membership {
        if !vip.health.enabled() {
            return Membership::Full;
        }
        let mut total = 0;
        let mut down = BTreeSet::new();
        for b in vip.table_backends() {
            total += 1;
            if self.state_under(vip, b) == Health::Down {
                down.insert(b.name.clone());
            }
        }
        if down.is_empty() {
            Membership::Full
        } else if down.len() < total {
            Membership::Without(down)
        } else {
            match vip.health.all_down {
                AllDown::FailOpen => Membership::Full,
                AllDown::FailClosed => Membership::Closed,
            }
        }
    }

    /// Follow `config`: checks for new backends (up, first check within one
    /// interval), states kept where the check is unchanged, checks of
    /// removed backends and VIPs dropped.
    pub fn sync(&mut self, config: &Config, now: Clock) {
        let mut targets = BTreeMap::new();
        let mut vips = BTreeMap::new();
        for vip in config.vips.iter().filter(|v| v.health.enabled()) {
            vips.insert(
                vip.name.clone(),
                VipCheck {
                    check: vip.health.clone(),
                    table_backends: vip.table_backends().map(|b| b.name.clone()).collect(),
                },
            );
            for b in vip.backends.iter().filter(|b| checked(b)) {
                let key = Key {
                    vip: vip.name.clone(),
                    backend: b.name.clone(),
                };
                let spec = Spec::of(&vip.health, b.address);
                let params = Params::from(&vip.health);
                let interval = vip.health.interval_seconds;
                let target = match self.targets.remove(&key) {
                    Some(old) if old.spec == spec => Target {
                        params,
                        // A shorter interval takes effect at once.
                        next_due: old.next_due.min(now.mono + interval),
                        interval,
                        ..old
                    },
                    _ => {
                        self.next_generation += 1;
                        Target {
                            next_due: now.mono + spread(&key) * interval,
                            spec,
                            params,
                            interval,
                            machine: Machine::new(now),
                            generation: self.next_generation,
                            in_flight: None,
                        }
                    }
                };
                targets.insert(key, target);
            }
        }
        self.targets = targets;
        self.vips = vips;
        self.live
            .retain(|name, _| config.vips.iter().any(|v| &v.name == name));
    }

    /// The checks due at `now` (monotonic seconds), marked as running.
    pub fn due(&mut self, now: f64) -> Vec<Probe> {
        let mut out = Vec::new();
        for (key, t) in &mut self.targets {
            if let Some(started) = t.in_flight {
                if now - started < t.spec.timeout.as_secs_f64() + LOST_AFTER_SECONDS {
                    continue;
                }
                log::warn!(
                    "health check of {}/{} never finished; checking again",
                    key.vip,
                    key.backend
                );
            }
            if t.next_due > now {
                continue;
            }
            t.in_flight = Some(now);
            // The cadence follows the schedule, not the check's duration;
            // a daemon that fell behind does not catch up in a burst.
            t.next_due = (t.next_due + t.interval).max(now);
            out.push(Probe {
                key: key.clone(),
                generation: t.generation,
                spec: t.spec.clone(),
            });
        }
        out
    }

    /// The earliest time a check is due (monotonic seconds).
    pub fn next_due(&self) -> Option<f64> {
        self.targets
            .values()
            .filter(|t| t.in_flight.is_none())
            .map(|t| t.next_due)
            .reduce(f64::min)
    }

    /// A check that could not be run (a local failure: no descriptor, no
    /// buffer): it is no longer running, and its result is not counted, so
    /// no backend's health changes. It runs again at its next due time.
    pub fn release(&mut self, probe: &Probe) {
        if let Some(t) = self.targets.get_mut(&probe.key)
            && t.generation == probe.generation
        {
            t.in_flight = None;
        }
    }

    /// Take a check's result. A transition marks the tables for an update
    /// (see `take_dirty`) and is logged.
    pub fn report(
        &mut self,
        probe: &Probe,
        result: Result<(), String>,
        now: Clock,
    ) -> Option<Transition> {
        let t = self.targets.get_mut(&probe.key)?;
        if t.generation != probe.generation {
            return None;
        }
        t.in_flight = None;
        let error = result.as_ref().err().cloned();
        let transition = t.machine.observe(&t.params, now, result)?;
        let (vip, backend) = (&probe.key.vip, &probe.key.backend);
        match transition {
            Transition::WentDown => log::warn!(
                "VIP {vip}: backend {backend} is DOWN after {} failed checks ({} {}): {}",
                t.params.fall,
                t.spec.kind.name(),
                t.spec.addr,
                error.unwrap_or_default()
            ),
            Transition::CameUp => log::info!(
                "VIP {vip}: backend {backend} is UP after {} passed checks{}",
                t.params.rise,
                if t.machine.flapping(&t.params) {
                    " (flapping: held its checks for flap_hold)"
                } else {
                    ""
                }
            ),
        }
        self.dirty = true;
        Some(transition)
    }

    /// True (once) when some state changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Try again at the next sync (a table write failed).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// The live table of `vip` now holds `m`.
    pub fn set_live(&mut self, vip: &str, m: Membership) {
        if m == Membership::Full {
            self.live.remove(vip);
        } else {
            self.live.insert(vip.to_string(), m);
        }
    }

    /// A restarted daemon found `m` in `vip`'s live table (an earlier
    /// daemon's health patch): record it as live and start the backends it
    /// leaves out down, so the table is kept until they pass `rise` checks.
    /// Call after `sync` with the adopted config.
    pub fn adopt_live(&mut self, vip: &str, m: Membership, now: Clock) {
        let out: Vec<String> = self
            .vips
            .get(vip)
            .map(|v| {
                v.table_backends
                    .iter()
                    .filter(|n| !m.serves(n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for backend in out {
            let key = Key {
                vip: vip.to_string(),
                backend,
            };
            if let Some(t) = self.targets.get_mut(&key) {
                t.machine.start_down(now);
            }
        }
        self.set_live(vip, m);
    }

    /// What the live table of `vip` holds (Full unless health changed it).
    pub fn live(&self, vip: &str) -> &Membership {
        static FULL: Membership = Membership::Full;
        self.live.get(vip).unwrap_or(&FULL)
    }

    /// A backend's health for the status; None when it is not checked.
    pub fn backend_view(&self, vip: &str, backend: &str) -> Option<BackendHealth> {
        let t = self.targets.get(&Key {
            vip: vip.to_string(),
            backend: backend.to_string(),
        })?;
        Some(BackendHealth {
            machine: t.machine.view(&t.params),
            in_table: self.live(vip).serves(backend)
                && self
                    .vips
                    .get(vip)
                    .is_some_and(|v| v.table_backends.iter().any(|n| n == backend)),
            check: format!("{} {}", t.spec.kind.name(), t.spec.addr),
        })
    }

    /// A VIP's health summary for the status; None when it is not checked.
    pub fn vip_view(&self, vip: &str) -> Option<VipHealth> {
        let v = self.vips.get(vip)?;
        let state = |name: &String| {
            self.targets
                .get(&Key {
                    vip: vip.to_string(),
                    backend: name.clone(),
                })
                .map(|t| t.machine.state())
        };
        let down = v
            .table_backends
            .iter()
            .filter(|n| state(n) == Some(Health::Down))
            .count();
        let c = &v.check;
        Some(VipHealth {
            check: describe(c),
            all_down_policy: c.all_down,
            backends_down: down as u32,
            all_down: down > 0 && down == v.table_backends.len(),
            table: match self.live(vip) {
                Membership::Full => "full".to_string(),
                Membership::Without(_) => "without_down".to_string(),
                Membership::Closed => "closed".to_string(),
            },
        })
    }
}

/// A checked backend's health in `xlb status -o json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendHealth {
    #[serde(flatten)]
    pub machine: MachineView,
    /// In the VIP's live table (false when down, unless the VIP fails open
    /// with every backend down; false for a backend not active).
    pub in_table: bool,
    /// `tcp 198.18.0.12:8080`.
    pub check: String,
}

/// A checked VIP's health in `xlb status -o json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipHealth {
    /// The check, in words.
    pub check: String,
    pub all_down_policy: AllDown,
    /// Active backends the checks call down.
    pub backends_down: u32,
    /// Every active backend is down: `all_down_policy` applies.
    pub all_down: bool,
    /// What the live table holds: `full` (as the config builds it),
    /// `without_down` (down backends' slots given to the others) or
    /// `closed` (no backend: new flows dropped).
    pub table: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n\
             [vip.health]\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 2\nfall = 2\n{extra}\
             [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\n\
             [[vip.backend]]\nname = \"b\"\naddress = \"198.18.0.12\"\nmac = \"02:00:00:00:00:12\"\n\
             [[vip.backend]]\nname = \"c\"\naddress = \"198.18.0.13\"\nmac = \"02:00:00:00:00:13\"\nstate = \"disabled\"\n\
             [[vip]]\nname = \"plain\"\naddress = \"198.18.100.2\"\nport = 80\nprotocol = \"tcp\"\n\
             [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\n"
        );
        crate::config::parse(&text, "t.toml").unwrap()
    }

    fn at(t: f64) -> Clock {
        Clock {
            mono: t,
            unix: 1e9 + t,
        }
    }

    /// Run every check due at t with the given result per backend name.
    fn step(m: &mut Monitor, t: f64, ok: &dyn Fn(&str) -> bool) -> Vec<(String, Transition)> {
        let mut out = Vec::new();
        for p in m.due(t) {
            let r = if ok(&p.key.backend) {
                Ok(())
            } else {
                Err("refused".to_string())
            };
            if let Some(tr) = m.report(&p, r, at(t)) {
                out.push((p.key.backend.clone(), tr));
            }
        }
        out
    }

    #[test]
    fn checks_active_and_draining_backends_of_checked_vips_on_schedule() {
        let c = config("");
        let mut m = Monitor::new();
        m.sync(&c, at(0.0));
        // Within the first interval, each checked backend once: a and b of
        // web (c is disabled, "plain" has no check).
        let mut seen = Vec::new();
        for i in 0..10 {
            seen.extend(m.due(i as f64 * 0.1).into_iter().map(|p| {
                assert_eq!(p.spec.addr.port(), 80);
                p.key.backend
            }));
        }
        seen.sort();
        assert_eq!(seen, ["a", "b"]);
        // Running checks are not handed out twice.
        assert!(m.due(5.0).is_empty());
    }

    #[test]
    fn fall_rise_and_the_tables() {
        let c = config("");
        let mut m = Monitor::new();
        m.sync(&c, at(0.0));
        let web = &c.vips[0];
        let mut t = 0.0;
        let mut transitions = Vec::new();
        // b fails from the start.
        while t < 3.0 {
            transitions.extend(step(&mut m, t, &|b| b != "b"));
            t += 0.1;
        }
        assert_eq!(transitions, [("b".to_string(), Transition::WentDown)]);
        assert!(m.take_dirty());
        assert!(!m.take_dirty());
        assert_eq!(m.wanted(web), Membership::Without(["b".to_string()].into()));
        assert_eq!(m.wanted(&c.vips[1]), Membership::Full);
        m.set_live("web", m.wanted(web));
        let view = m.backend_view("web", "b").unwrap();
        assert_eq!(view.machine.state, Health::Down);
        assert!(!view.in_table);
        assert_eq!(view.check, "tcp 198.18.0.12:80");
        assert_eq!(view.machine.last_error.as_deref(), Some("refused"));
        assert!(m.backend_view("web", "a").unwrap().in_table);
        assert!(m.backend_view("web", "c").is_none());
        assert!(m.backend_view("plain", "a").is_none());
        let v = m.vip_view("web").unwrap();
        assert_eq!(
            (v.backends_down, v.all_down, v.table.as_str()),
            (1, false, "without_down")
        );
        // It recovers: up after 2 passed checks, the table full again.
        transitions.clear();
        while t < 6.0 {
            transitions.extend(step(&mut m, t, &|_| true));
            t += 0.1;
        }
        assert_eq!(transitions, [("b".to_string(), Transition::CameUp)]);
        assert_eq!(m.wanted(web), Membership::Full);
    }

    #[test]
    fn all_down_fails_open_or_closed() {
        for (extra, want) in [
            ("", Membership::Full),
            ("all_down = \"fail_closed\"\n", Membership::Closed),
        ] {
            let c = config(extra);
            let mut m = Monitor::new();
            m.sync(&c, at(0.0));
            let mut t = 0.0;
            while t < 3.0 {
                step(&mut m, t, &|_| false);
                t += 0.1;
            }
            assert_eq!(m.wanted(&c.vips[0]), want, "{extra}");
            let v = m.vip_view("web").unwrap();
            assert!(v.all_down && v.backends_down == 2, "{v:?}");
        }
    }

    #[test]
    fn state_survives_an_apply_unless_the_check_changed() {
        let c = config("");
        let mut m = Monitor::new();
        m.sync(&c, at(0.0));
        let mut t = 0.0;
        while t < 3.0 {
            step(&mut m, t, &|b| b != "b");
            t += 0.1;
        }
        let down = Membership::Without(["b".to_string()].into());
        // Same check, a new weight: b stays down, in the candidate's plan too.
        let mut c2 = c.clone();
        c2.vip_mut(0).backends[0].weight = 5;
        assert_eq!(m.wanted(&c2.vips[0]), down);
        m.sync(&c2, at(t));
        assert_eq!(m.wanted(&c2.vips[0]), down);
        // A new check port: b starts over, up.
        let mut c3 = c2.clone();
        c3.vip_mut(0).health.port = 81;
        assert_eq!(m.wanted(&c3.vips[0]), Membership::Full);
        m.sync(&c3, at(t));
        assert_eq!(
            m.backend_view("web", "b").unwrap().machine.state,
            Health::Up
        );
        // A stale result (of the replaced check) is ignored.
        let stale = Probe {
            key: Key {
                vip: "web".into(),
                backend: "b".into(),
            },
            generation: 1,
            spec: Spec::of(&c.vips[0].health, c.vips[0].backends[1].address),
        };
        assert_eq!(m.report(&stale, Err("x".into()), at(t)), None);
        // The VIP leaves the config: its live table entry goes too.
        m.set_live("web", down);
        let mut c4 = c3.clone();
        c4.vips.remove(0);
        m.sync(&c4, at(t));
        assert_eq!(m.live("web"), &Membership::Full);
        assert!(m.vip_view("web").is_none());
    }

    #[test]
    fn an_adopted_patch_starts_its_backends_down_until_rise() {
        let c = config("");
        let mut m = Monitor::new();
        m.sync(&c, at(0.0));
        let without_b = Membership::Without(["b".to_string()].into());
        m.adopt_live("web", without_b.clone(), at(0.0));
        // b is down and out: the table is what it should be, nothing to do.
        assert_eq!(m.wanted(&c.vips[0]), without_b);
        assert_eq!(m.live("web"), &without_b);
        assert!(!m.take_dirty());
        let view = m.backend_view("web", "b").unwrap();
        assert_eq!(view.machine.state, Health::Down);
        assert!(!view.in_table);
        assert_eq!(
            m.backend_view("web", "a").unwrap().machine.state,
            Health::Up
        );
        // It comes back after `rise` (2) passed checks, not before.
        let mut transitions = Vec::new();
        let mut t = 0.0;
        while t < 1.0 {
            transitions.extend(step(&mut m, t, &|_| true));
            t += 0.1;
        }
        assert!(transitions.is_empty(), "{transitions:?}");
        while t < 2.0 {
            transitions.extend(step(&mut m, t, &|_| true));
            t += 0.1;
        }
        assert_eq!(transitions, [("b".to_string(), Transition::CameUp)]);
        assert_eq!(m.wanted(&c.vips[0]), Membership::Full);
        // Closed: every table backend starts down.
        let mut m = Monitor::new();
        m.sync(&config("all_down = \"fail_closed\"\n"), at(0.0));
        m.adopt_live("web", Membership::Closed, at(0.0));
        let v = m.vip_view("web").unwrap();
        assert_eq!(
            (v.backends_down, v.all_down, v.table.as_str()),
            (2, true, "closed")
        );
    }

    #[test]
    fn a_lost_check_is_scheduled_again() {
        let c = config("");
        let mut m = Monitor::new();
        m.sync(&c, at(0.0));
        let first = m.due(1.0);
        assert_eq!(first.len(), 2);
        // Never reported: not before timeout + 5 s, then again.
        assert!(m.due(5.0).is_empty());
        assert_eq!(m.due(7.0).len(), 2);
    }
}
