//! The node's announcing state: the decider (`xlb_core::announce`), the
//! node's drain (kept in the state directory, so a restarted daemon stays
//! drained), and what the route writer (daemon/announce.rs) last did. No
//! I/O here but the drain file. The controller feeds it (announce.rs).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xlb_core::announce::{Announcer, Decision, NodeAnnounce, NodeState, VipInput};
use xlb_core::clock::unix_now;
use xlb_core::status::Status;

/// The drain file in the state directory: present while the node is
/// drained (`since <unix seconds>` and `by <user>` lines).
pub const DRAIN_FILE: &str = "drained";

/// The controller's announcing state.
#[derive(Debug)]
pub struct Announcing {
    announcer: Announcer,
    table: Option<u32>,
    node: NodeState,
    drained_since: Option<f64>,
    drained_by: Option<String>,
    /// `<state dir>/drained`; None in tests and benchmarks without a state
    /// directory (a drain then lasts as long as the daemon).
    drain_file: Option<PathBuf>,
    decision: Decision,
    /// The addresses routed in the table, as last written.
    routes: BTreeSet<IpAddr>,
    error: Option<String>,
    /// Wakes the route writer at once after a drain or undrain.
    wake: Arc<tokio::sync::Notify>,
}

impl Default for Announcing {
    fn default() -> Self {
        Self::new(None, 0.0)
    }
}

impl Announcing {
    /// `table`: `--announce-table` (None: no routes are written);
    /// `hold_seconds`: the hold-down after a withdrawal.
    pub fn new(table: Option<u32>, hold_seconds: f64) -> Self {
        Self {
            announcer: Announcer::new(table.is_some(), hold_seconds),
            table,
            node: NodeState::Serving,
            drained_since: None,
            drained_by: None,
            drain_file: None,
            decision: Decision::default(),
            routes: BTreeSet::new(),
            error: None,
            wake: Arc::default(),
        }
    }

    /// Keep the drain in `<state_dir>/drained`, and take it up from there:
    /// a node drained before a restart is still drained after it.
    pub fn with_drain_file(mut self, state_dir: &Path) -> std::io::Result<Self> {
        let file = state_dir.join(DRAIN_FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                self.node = NodeState::Drained;
                for line in text.lines() {
                    match line.split_once(' ') {
                        Some(("since", v)) => self.drained_since = v.trim().parse().ok(),
                        Some(("by", v)) => self.drained_by = Some(v.trim().to_string()),
                        _ => {}
                    }
                }
                log::warn!(
                    "node drained since {} ({}): no VIP is announced until `xlb node undrain`",
                    self.drained_since
                        .map_or("?".to_string(), |s| format!("{s:.0}")),
                    file.display()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.drain_file = Some(file);
        Ok(self)
    }

    pub fn table(&self) -> Option<u32> {
        self.table
    }

    /// Notified when the node's state changes: the route writer wakes.
    pub fn wake(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    pub fn node(&self) -> NodeState {
        self.node
    }

    /// What is announced now, VIP by VIP, and the node's side: what the
    /// status shows of announcing (compared to tell a change).
    pub fn shown(&self) -> (Decision, NodeAnnounce) {
        (self.decision.clone(), self.view())
    }

    pub fn view(&self) -> NodeAnnounce {
        NodeAnnounce {
            state: self.node,
            table: self.table,
            routes: self.routes.iter().copied().collect(),
            drained_since_unix_seconds: self.drained_since,
            drained_by: self.drained_by.clone(),
            error: self.error.clone(),
        }
    }

    /// Decide what is announced at `now` (monotonic seconds); the
    /// addresses to route. Changes are logged.
    pub fn decide(&mut self, now: f64, vips: &[VipInput]) -> BTreeSet<IpAddr> {
        let decision = self.announcer.decide(now, self.node, vips);
        for (name, v) in &decision.vips {
            let before = self.decision.vips.get(name);
            if before.is_none_or(|b| b.announced != v.announced) && self.table.is_some() {
                log::info!(
                    "VIP {name}: {} ({})",
                    if v.announced {
                        "announced"
                    } else {
                        "withdrawn"
                    },
                    v.reason.describe()
                );
            }
        }
        self.decision = decision;
        self.decision.addresses.clone()
    }

    /// What the route writer did: the routes now in the table, or why it
    /// failed (false).
    pub fn written(&mut self, result: Result<BTreeSet<IpAddr>, String>) -> bool {
        match result {
            Ok(routes) => {
                self.routes = routes;
                self.error = None;
                true
            }
            Err(e) => {
                log::warn!("announce: {e}");
                self.error = Some(e);
                false
            }
        }
    }

    /// SIGTERM: withdraw everything (the tables keep forwarding).
    pub fn stop(&mut self) {
        self.node = NodeState::Stopping;
        log::info!("stopping: every VIP is withdrawn, forwarding goes on");
    }

    /// `xlb node drain`: withdraw every VIP, recorded in the state
    /// directory first (a drain that cannot be recorded is not made).
    pub fn drain(&mut self, user: &str) -> Result<NodeAnnounce, DrainError> {
        if self.node != NodeState::Drained {
            let since = unix_now();
            if let Some(file) = &self.drain_file {
                let text = format!("since {since:.3}\nby {user}\n");
                crate::store::write_file_durably(file, text.as_bytes())
                    .map_err(|e| DrainError(e.to_string()))?;
            }
            self.node = NodeState::Drained;
            self.drained_since = Some(since);
            self.drained_by = Some(user.to_string());
            log::warn!("node drained by {user}: every VIP is withdrawn, forwarding goes on");
            self.wake.notify_one();
        }
        Ok(self.view())
    }

    /// `xlb node undrain`: announce by the VIPs' policies again.
    pub fn undrain(&mut self, user: &str) -> Result<NodeAnnounce, DrainError> {
        if self.node == NodeState::Drained {
            if let Some(file) = &self.drain_file {
                match std::fs::remove_file(file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(DrainError(format!("removing {}: {e}", file.display())));
                    }
                }
            }
            self.node = NodeState::Serving;
            self.drained_since = None;
            self.drained_by = None;
            log::info!("node undrained by {user}: VIPs are announced by their policies");
            self.wake.notify_one();
        }
        Ok(self.view())
    }

    /// Each VIP's announcement and the node's, into `status`.
    pub fn annotate(&self, status: &mut Status) {
        for v in &mut status.vips {
            v.announce = self.decision.vips.get(&v.name).cloned();
        }
        status.announce = Some(self.view());
    }
}

/// Why a drain or undrain was not done (nothing changed).
#[derive(Debug, thiserror::Error)]
#[error("the node's drain state is unchanged: {0}")]
pub struct DrainError(String);
