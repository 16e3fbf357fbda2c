//! What the node announces, fed from the controller: the applied config
//! and the health monitor in, the decision and the route writer's result
//! kept in `Announcing` (announcing.rs) for the status.

use std::collections::BTreeSet;
use std::net::IpAddr;

use xlb_core::announce::{NodeAnnounce, inputs};
use xlb_core::clock::Clock;
use xlb_core::status::Status;

use super::announcing::{Announcing, DrainError};
use super::{Controller, health};

impl Controller {
    /// Announce (and route) through `announcing`.
    pub fn with_announcing(mut self, announcing: Announcing) -> Self {
        self.announcing = announcing;
        self
    }

    pub fn announcing(&self) -> &Announcing {
        &self.announcing
    }

    /// Decide what is announced now; the addresses to route.
    pub fn announce(&mut self, now: Clock) -> BTreeSet<IpAddr> {
        let vips = match &self.applied {
            Some(desired) => inputs(&desired.config, &health::lock(&self.health)),
            None => Vec::new(),
        };
        let before = self.announcing.shown();
        let addresses = self.announcing.decide(now.mono, &vips);
        self.announce_shown_since(before);
        addresses
    }

    /// A status document made before an announcing change is no longer
    /// true (`xlb status` would otherwise keep one whose counters did not
    /// move: snapshot.rs).
    fn announce_shown_since(&self, before: (xlb_core::announce::Decision, NodeAnnounce)) {
        if self.announcing.shown() != before {
            self.metrics.invalidate_change();
        }
    }

    /// What the route writer did: the routes now in the table, or why it
    /// failed.
    pub fn routes_written(&mut self, result: Result<BTreeSet<IpAddr>, String>) {
        let before = self.announcing.shown();
        if !self.announcing.written(result) {
            self.metrics.announce_errors.inc();
        }
        self.announce_shown_since(before);
    }

    /// SIGTERM: withdraw everything (the tables keep forwarding).
    pub fn stop_announcing(&mut self) {
        self.announcing.stop();
    }

    /// `xlb node drain`, recorded in the audit log.
    pub fn drain_node(
        &mut self,
        user: &str,
        message: Option<String>,
    ) -> Result<NodeAnnounce, DrainError> {
        let node = self.announcing.drain(user)?;
        self.audit("node_drain", user, None, None, None, message);
        Ok(node)
    }

    /// `xlb node undrain`, recorded in the audit log.
    pub fn undrain_node(
        &mut self,
        user: &str,
        message: Option<String>,
    ) -> Result<NodeAnnounce, DrainError> {
        let node = self.announcing.undrain(user)?;
        self.audit("node_undrain", user, None, None, None, message);
        Ok(node)
    }

    /// Each VIP's announcement and the node's, into `status`.
    pub(super) fn annotate_announce(&self, status: &mut Status) {
        self.announcing.annotate(status);
    }
}
