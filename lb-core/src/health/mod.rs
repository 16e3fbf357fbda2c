//! Health checks: each VIP's backends checked from this host, and the
//! Maglev table of a VIP patched while some are down.
//!
//! - `machine`: one backend's state (rise, fall, flap damping); pure.
//! - `patch`: the table without the down backends (only their slots move);
//!   pure.
//! - `monitor`: every check's schedule and state, and what each VIP's table
//!   should hold; pure (the time is passed in).
//! - `check`: a VIP's check in words (the monitor's view of it, `xlb plan`'s
//!   line); pure.
//! - `probe`: running one check (TCP connect, HTTP GET); the only I/O.
//! - `run`: the daemon's loop that runs due checks and reports them.
//!
//! Health is runtime state, not config: the applied config and its revision
//! do not change when a backend goes down. The controller keeps the config's
//! tables in `Desired` with the health patch applied to `slots` and
//! `table_shares` (so the drift check, `xlb repair` and the status all see
//! the table that is live), and rebuilds a patched table from `table`, the
//! config's Maglev table, which it never patches.

mod check;
pub mod machine;
pub mod monitor;
pub mod patch;

pub use check::{describe, plan_details};
pub use machine::{Clock, Health, Transition};
pub use monitor::{BackendHealth, Monitor, VipHealth};
pub use patch::Membership;
// The status document is above `health` (it carries the monitor's views),
// so what adds them to a status is `status::annotate`; kept at this path too.
pub use crate::status::annotate;

use crate::state::Desired;

/// Patch each VIP of a freshly built `desired` for the backends `monitor`
/// calls down (an apply writes the tables this way from the start); the
/// membership of each VIP, to record once the apply is written.
pub fn patch_desired(monitor: &Monitor, desired: &mut Desired) -> Vec<(String, Membership)> {
    let seed = desired.config.hash_seed;
    desired
        .vips
        .iter_mut()
        .map(|vip| {
            let m = monitor.wanted(&vip.config);
            if m != Membership::Full {
                let p = patch::patched(vip, &m, seed);
                let vip = std::sync::Arc::make_mut(vip);
                vip.set_slots(p.slots);
                vip.table_shares = p.shares;
                vip.health_patched = true;
            }
            (vip.config.name.clone(), m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::CounterSnapshot;
    use std::collections::BTreeMap;

    const TEXT: &str = "interface = \"eth0\"\nhash_seed = 4\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 4093\n\
        [vip.health]\ninterval = \"1s\"\ntimeout = \"500ms\"\nfall = 2\nrise = 2\n\
        [[vip.backend]]\nname = \"b1\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\n\
        [[vip.backend]]\nname = \"b2\"\naddress = \"198.18.0.12\"\nmac = \"02:00:00:00:00:12\"\n\
        [[vip.backend]]\nname = \"b3\"\naddress = \"198.18.0.13\"\nmac = \"02:00:00:00:00:13\"\nweight = 2\n";

    /// A monitor that has seen b2 fail twice.
    fn b2_down(config: &crate::config::Config) -> Monitor {
        let mut m = Monitor::new();
        let at = |t: f64| Clock {
            mono: t,
            unix: 1e9 + t,
        };
        m.sync(config, at(0.0));
        for t in [1.0, 2.0] {
            for p in m.due(t) {
                let r = if p.key.backend == "b2" {
                    Err("connect: Connection refused (os error 111)".to_string())
                } else {
                    Ok(())
                };
                m.report(&p, r, at(t));
            }
        }
        m
    }

    #[test]
    fn an_apply_builds_patched_tables_the_drift_check_accepts() {
        let config = crate::config::parse(TEXT, "t.toml").unwrap();
        let m = b2_down(&config);
        let full = crate::state::desired(&config, &Default::default()).unwrap();
        let mut d = full.clone();
        let memberships = patch_desired(&m, &mut d);
        assert_eq!(
            memberships,
            [(
                "web".to_string(),
                Membership::Without(["b2".to_string()].into())
            )]
        );
        let (before, after) = (&full.vips[0], &d.vips[0]);
        let b2 = before.backend_ids[1];
        // Only b2's slots moved; the config's Maglev table is kept whole.
        for (x, y) in before.slots().iter().zip(after.slots().iter()) {
            assert!(x == y || (*x == b2 && *y != b2));
        }
        assert!(!after.slots().contains(&b2));
        assert_eq!(after.table, before.table);
        assert_eq!(after.table_shares[1], 0.0);
        // The drift check compares the kernel with the patched table: the
        // patch is not drift.
        let live_backends: BTreeMap<u32, lb_common::Backend> = after
            .config
            .backends
            .iter()
            .zip(&after.backend_ids)
            .map(|(b, &id)| (id, crate::state::kernel_backend(b, after.id)))
            .collect();
        let finding = crate::drift::check(after, Some(&after.slots()), &live_backends);
        assert!(!finding.drifted, "{finding:?}");
    }

    #[test]
    fn the_status_shows_health_and_expects_nothing_of_a_down_backend() {
        let config = crate::config::parse(TEXT, "t.toml").unwrap();
        let mut m = b2_down(&config);
        let mut d = crate::state::desired(&config, &Default::default()).unwrap();
        for (vip, mem) in patch_desired(&m, &mut d) {
            m.set_live(&vip, mem);
        }
        let (none, drift, checked) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let ctx = crate::status::StatusContext {
            interface: "eth0",
            revision: 1,
            applied_at_unix_seconds: 0,
            observed_seconds: 1.0,
            generated_at_unix_seconds: 1e9 + 12.0,
            reports: &none,
            drift: &drift,
            drift_checked_at: &checked,
            bake: None,
            conn_scan: None,
        };
        let mut s = crate::status::build(
            &ctx,
            &d,
            &CounterSnapshot::default(),
            &crate::counters::PacketsAt::default(),
        );
        annotate(&mut s, &m);
        let b = &s.vips[0].backends;
        // Weights 1:1:2 without b2: 1/3 and 2/3.
        assert_eq!(b[1].expected_share_ratio, 0.0);
        assert!((b[0].expected_share_ratio - 1.0 / 3.0).abs() < 1e-12);
        assert!((b[2].expected_share_ratio - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(b[1].table_share_ratio, 0.0);
        let h = b[1].health.as_ref().unwrap();
        assert_eq!(h.machine.state, Health::Down);
        assert!(!h.in_table);
        assert_eq!(h.machine.since_unix_seconds, 1e9 + 2.0);
        let v = s.vips[0].health.as_ref().unwrap();
        assert_eq!(
            (v.backends_down, v.all_down, v.table.as_str()),
            (1, false, "without_down")
        );
        // The table and its lines.
        let text = crate::status::render_table(&s, false);
        assert!(
            text.lines()
                .any(|l| l.starts_with("VIP") && l.contains("   HEALTH   ")),
            "{text}"
        );
        let row = text.lines().find(|l| l.contains(" b2 ")).unwrap();
        assert!(row.contains("down 10s"), "{row}");
        assert!(
            text.contains(
                "web: backend b2 DOWN since 2001-09-09T01:46:42Z (10s): connect: Connection \
                 refused (os error 111); out of the table"
            ),
            "{text}"
        );
        // The JSON document carries it, and an older one without it reads.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["vips"][0]["backends"][1]["health"]["state"], "down");
        assert_eq!(json["vips"][0]["health"]["all_down_policy"], "fail_open");
        let back: crate::status::Status = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        // /metrics: xlb::daemon::metrics's `health_is_exported`.
    }

    #[test]
    fn plan_lines_name_a_changed_check() {
        let config = crate::config::parse(TEXT, "t.toml").unwrap();
        let a = &config.vips[0].health;
        assert!(plan_details(a, a).is_empty());
        let b = crate::config::HealthCheck {
            fall: 3,
            ..a.clone()
        };
        assert_eq!(
            plan_details(a, &b),
            [
                "health tcp :80 every 1s (timeout 0.5s, rise 2, fall 2, flap 3 in 60s: hold 30s, \
              fail_open) -> tcp :80 every 1s (timeout 0.5s, rise 2, fall 3, flap 3 in 60s: hold \
              30s, fail_open)"
            ]
        );
    }
}
