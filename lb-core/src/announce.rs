//! Which VIP addresses a node announces to its routers (DESIGN.md, "A
//! fleet"). The daemon keeps one route per announced address in its
//! `--announce-table`; the node's BIRD exports that table over BGP
//! (deploy/bird/). This module decides; the daemon writes the routes.
//!
//! A VIP is announced while the daemon serves it and its `announce` policy
//! allows: `always`; `healthy` (the default) while at least one active
//! backend is up; `never`. Hysteresis: a `healthy` VIP withdrawn because
//! every backend went down is announced again only once a backend has been
//! up for the whole hold-down, so a flapping backend does not flap the
//! route (the health checks' own rise/fall counts come first). A withdrawal
//! is never delayed: a route to a VIP with no backend drops its traffic.
//!
//! Routes are per address: VIPs at one address (other ports or protocols)
//! share it, and the address is announced while any of them is.
//!
//! The node's state overrides every VIP: drained (`xlb node drain`) and
//! stopping (SIGTERM's grace) announce nothing, while the tables keep
//! forwarding what still arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::{Announce, Config};
use crate::health::Monitor;

/// The node as a whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Announcing by each VIP's policy.
    #[default]
    Serving,
    /// `xlb node drain`: every VIP withdrawn, forwarding goes on.
    Drained,
    /// SIGTERM: every VIP withdrawn for the grace, then the daemon exits.
    Stopping,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Serving => "serving",
            NodeState::Drained => "drained",
            NodeState::Stopping => "stopping",
        }
    }
}

/// Why a VIP is, or is not, announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `healthy`, and at least one active backend is up.
    BackendsUp,
    /// `always`.
    Always,
    /// `never`.
    Never,
    /// `healthy`, and no active backend is up.
    NoBackendUp,
    /// `healthy`, back up after a withdrawal: announced once a backend has
    /// been up for the hold-down.
    HoldDown,
    /// `xlb node drain`.
    NodeDrained,
    /// SIGTERM: withdrawn for the grace before the daemon exits.
    NodeStopping,
    /// The daemon writes no routes (no `--announce-table`).
    Off,
}

impl Reason {
    /// In words, for the status table and the log.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::BackendsUp => "a backend is up",
            Reason::Always => "announce = always",
            Reason::Never => "announce = never",
            Reason::NoBackendUp => "no active backend is up",
            Reason::HoldDown => "backends back up, waiting out the hold-down",
            Reason::NodeDrained => "node drained (xlb node undrain)",
            Reason::NodeStopping => "daemon stopping",
            Reason::Off => "no --announce-table",
        }
    }
}

/// One VIP's input: its policy and how many of its active backends are up.
#[derive(Clone, Debug, PartialEq)]
pub struct VipInput {
    pub name: String,
    pub address: IpAddr,
    pub policy: Announce,
    pub backends_up: u32,
}

/// The inputs of every VIP of `config`, with health from `monitor`.
pub fn inputs(config: &Config, monitor: &Monitor) -> Vec<VipInput> {
    config
        .vips
        .iter()
        .map(|v| VipInput {
            name: v.name.clone(),
            address: v.address,
            policy: v.announce,
            backends_up: monitor.backends_up(v),
        })
        .collect()
}

/// One VIP's announcement, in the status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipAnnounce {
    pub policy: Announce,
    pub announced: bool,
    pub reason: Reason,
    /// Active backends up (every active one when the VIP has no check).
    pub backends_up: u32,
    /// During a hold-down: how long until it is announced again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_remaining_seconds: Option<f64>,
}

/// The node's side of announcing, in the status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeAnnounce {
    pub state: NodeState,
    /// `--announce-table`; null when the daemon writes no routes.
    pub table: Option<u32>,
    /// Addresses with a route in the table, as last written.
    pub routes: Vec<IpAddr>,
    /// Since when the node is drained (Unix seconds), and by whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_since_unix_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_by: Option<String>,
    /// The last failure to write the routes (tried again every second);
    /// null once a write succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the node announces now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub vips: BTreeMap<String, VipAnnounce>,
    /// The addresses to hold a route for.
    pub addresses: BTreeSet<IpAddr>,
}

/// A `healthy` VIP's memory between decisions.
#[derive(Clone, Debug, Default, PartialEq)]
struct Memory {
    /// Withdrawn because no backend was up, not announced since.
    withdrawn: bool,
    /// Since when a backend has been up, while `withdrawn`.
    up_since: Option<f64>,
}

/// Decides, tick by tick, what a node announces.
#[derive(Clone, Debug)]
pub struct Announcer {
    /// Whether routes are written at all (`--announce-table`).
    enabled: bool,
    hold_seconds: f64,
    memory: BTreeMap<String, Memory>,
}

impl Announcer {
    /// `hold_seconds`: how long a withdrawn `healthy` VIP must have a
    /// backend up before it is announced again.
    pub fn new(enabled: bool, hold_seconds: f64) -> Self {
        Self {
            enabled,
            hold_seconds,
            memory: BTreeMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// What to announce at `now` (monotonic seconds) with `node` in its
    /// state and `vips` as they are. VIPs no longer given are forgotten.
    pub fn decide(&mut self, now: f64, node: NodeState, vips: &[VipInput]) -> Decision {
        let mut decision = Decision::default();
        let mut memory = BTreeMap::new();
        for vip in vips {
            let mut m = self.memory.remove(&vip.name).unwrap_or_default();
            let (mut announced, mut reason, mut hold) = match vip.policy {
                Announce::Always => (true, Reason::Always, None),
                Announce::Never => (false, Reason::Never, None),
                Announce::Healthy => self.healthy(now, vip.backends_up, &mut m),
            };
            memory.insert(vip.name.clone(), m);
            let overridden = match node {
                NodeState::Serving if !self.enabled => Some(Reason::Off),
                NodeState::Serving => None,
                NodeState::Drained => Some(Reason::NodeDrained),
                NodeState::Stopping => Some(Reason::NodeStopping),
            };
            if let Some(r) = overridden {
                announced = false;
                reason = r;
                hold = None;
            }
            if announced {
                decision.addresses.insert(vip.address);
            }
            decision.vips.insert(
                vip.name.clone(),
                VipAnnounce {
                    policy: vip.policy,
                    announced,
                    reason,
                    backends_up: vip.backends_up,
                    hold_remaining_seconds: hold,
                },
            );
        }
        self.memory = memory;
        decision
    }

    /// A `healthy` VIP: withdrawn at once when no backend is up; announced
    /// again once one has been up for the hold-down.
    fn healthy(&self, now: f64, up: u32, m: &mut Memory) -> (bool, Reason, Option<f64>) {
        if up == 0 {
            m.withdrawn = true;
            m.up_since = None;
            return (false, Reason::NoBackendUp, None);
        }
        if !m.withdrawn {
            return (true, Reason::BackendsUp, None);
        }
        let since = *m.up_since.get_or_insert(now);
        let waited = now - since;
        if waited >= self.hold_seconds {
            m.withdrawn = false;
            m.up_since = None;
            (true, Reason::BackendsUp, None)
        } else {
            (false, Reason::HoldDown, Some(self.hold_seconds - waited))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(name: &str, address: &str, policy: Announce, up: u32) -> VipInput {
        VipInput {
            name: name.to_string(),
            address: address.parse().unwrap(),
            policy,
            backends_up: up,
        }
    }

    fn state(d: &Decision, name: &str) -> (bool, Reason) {
        let v = &d.vips[name];
        (v.announced, v.reason)
    }

    #[test]
    fn policies_decide_when_serving() {
        let mut a = Announcer::new(true, 10.0);
        let d = a.decide(
            0.0,
            NodeState::Serving,
            &[
                vip("web", "198.18.100.1", Announce::Healthy, 2),
                vip("dns", "198.18.100.2", Announce::Healthy, 0),
                vip("pin", "198.18.100.3", Announce::Always, 0),
                vip("off", "198.18.100.4", Announce::Never, 3),
            ],
        );
        assert_eq!(state(&d, "web"), (true, Reason::BackendsUp));
        assert_eq!(state(&d, "dns"), (false, Reason::NoBackendUp));
        assert_eq!(state(&d, "pin"), (true, Reason::Always));
        assert_eq!(state(&d, "off"), (false, Reason::Never));
        let want: BTreeSet<IpAddr> = ["198.18.100.1", "198.18.100.3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(d.addresses, want);
    }

    /// One address is announced while any VIP on it is.
    #[test]
    fn an_address_is_announced_while_any_of_its_vips_is() {
        let mut a = Announcer::new(true, 10.0);
        let vips = [
            vip("web", "2001:db8::10", Announce::Healthy, 0),
            vip("dns", "2001:db8::10", Announce::Healthy, 1),
        ];
        let d = a.decide(0.0, NodeState::Serving, &vips);
        assert_eq!(d.addresses.len(), 1);
        let vips = [
            vip("web", "2001:db8::10", Announce::Healthy, 0),
            vip("dns", "2001:db8::10", Announce::Never, 1),
        ];
        assert!(
            a.decide(1.0, NodeState::Serving, &vips)
                .addresses
                .is_empty()
        );
    }

    /// A flapping backend: withdrawn at once on the way down, announced
    /// again only after a full hold-down of being up.
    #[test]
    fn a_withdrawn_vip_waits_out_the_hold_down() {
        let mut a = Announcer::new(true, 10.0);
        let at = |a: &mut Announcer, t: f64, up: u32| {
            let d = a.decide(
                t,
                NodeState::Serving,
                &[vip("web", "198.18.100.1", Announce::Healthy, up)],
            );
            (state(&d, "web"), d.vips["web"].hold_remaining_seconds)
        };
        assert_eq!(at(&mut a, 0.0, 1).0, (true, Reason::BackendsUp));
        assert_eq!(at(&mut a, 1.0, 0).0, (false, Reason::NoBackendUp));
        assert_eq!(at(&mut a, 2.0, 1), ((false, Reason::HoldDown), Some(10.0)));
        assert_eq!(at(&mut a, 8.0, 1), ((false, Reason::HoldDown), Some(4.0)));
        // Down again: the hold-down starts over.
        assert_eq!(at(&mut a, 9.0, 0).0, (false, Reason::NoBackendUp));
        assert_eq!(at(&mut a, 10.0, 1).0, (false, Reason::HoldDown));
        assert_eq!(at(&mut a, 19.9, 1).0, (false, Reason::HoldDown));
        assert_eq!(at(&mut a, 20.0, 1), ((true, Reason::BackendsUp), None));
        assert_eq!(at(&mut a, 21.0, 1).0, (true, Reason::BackendsUp));
    }

    #[test]
    fn the_node_state_overrides_every_policy() {
        let vips = [
            vip("web", "198.18.100.1", Announce::Healthy, 2),
            vip("pin", "198.18.100.3", Announce::Always, 0),
        ];
        for (node, reason) in [
            (NodeState::Drained, Reason::NodeDrained),
            (NodeState::Stopping, Reason::NodeStopping),
        ] {
            let d = Announcer::new(true, 10.0).decide(0.0, node, &vips);
            assert!(d.addresses.is_empty());
            assert!(d.vips.values().all(|v| !v.announced && v.reason == reason));
        }
        let d = Announcer::new(false, 10.0).decide(0.0, NodeState::Serving, &vips);
        assert!(d.addresses.is_empty());
        assert!(d.vips.values().all(|v| v.reason == Reason::Off));
    }

    /// Health is remembered while drained: a VIP that went down during a
    /// drain still waits out its hold-down after the undrain.
    #[test]
    fn a_drain_keeps_the_hold_down() {
        let mut a = Announcer::new(true, 5.0);
        let one = |up| [vip("web", "198.18.100.1", Announce::Healthy, up)];
        a.decide(0.0, NodeState::Serving, &one(1));
        a.decide(1.0, NodeState::Drained, &one(0));
        let d = a.decide(2.0, NodeState::Serving, &one(1));
        assert_eq!(state(&d, "web"), (false, Reason::HoldDown));
        let d = a.decide(7.0, NodeState::Serving, &one(1));
        assert_eq!(state(&d, "web"), (true, Reason::BackendsUp));
    }

    /// A VIP removed and added again starts fresh (no hold-down).
    #[test]
    fn removed_vips_are_forgotten() {
        let mut a = Announcer::new(true, 5.0);
        a.decide(
            0.0,
            NodeState::Serving,
            &[vip("web", "198.18.100.1", Announce::Healthy, 0)],
        );
        a.decide(1.0, NodeState::Serving, &[]);
        let d = a.decide(
            2.0,
            NodeState::Serving,
            &[vip("web", "198.18.100.1", Announce::Healthy, 1)],
        );
        assert_eq!(state(&d, "web"), (true, Reason::BackendsUp));
    }
}
