//! `xlb run --fleet URL --node NAME`: the node's agent in its fleet
//! (docs/FLEET.md). Once a second it reports the node under a lease, moves
//! the rollout when the reports say so (any agent may; a CAS decides), and
//! when the fleet revision this node should serve (`xlb_core::rollout::
//! target`) differs from the one it serves, applies it through the
//! controller's one apply path: its own plan, safety checks (forced only if
//! the rollout is) and bake; the outcome is reported when the bake ends.
//!
//! Cut off from etcd, the node keeps forwarding on its last revision (its
//! tables are never emptied), logs it, and tries again with a backoff; on
//! return it converges through its own plan and bake. A local `xlb apply`/
//! `drain`/`weight` is allowed and reported as `diverged`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xlb_core::bake::BakeState;
use xlb_core::change::{ApplyOptions, Origin};
use xlb_core::clock::unix_now;
use xlb_core::revision::Kind;
use xlb_core::rollout::{BakeOutcome, FleetRevision, NodeOutcome, NodeReport, Target, target};
use xlb_core::status::FleetNodeStatus;
use xlb_fleet::{FleetAddress, FleetError, FleetStore};

use crate::daemon::controller::Controller;

/// The agent's period: report, drive, converge.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Cut off from etcd: the first retry after this, doubling up to `MAX_BACKOFF`.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// What the agent keeps across restarts (`<state_dir>/fleet.json`).
pub const STATE_FILE: &str = "fleet.json";

/// `--fleet`, `--node` and the TLS files.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub address: FleetAddress,
    pub node: String,
    pub state_dir: PathBuf,
}

/// What this node serves of the fleet, kept across restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Kept {
    /// The fleet revision served.
    serving: Option<u64>,
    /// The local revision the last fleet apply (or its bake's rollback)
    /// made: another live revision is a local change (diverged).
    local: Option<u64>,
    last: Option<NodeOutcome>,
}

/// A fleet revision applied and baking.
#[derive(Clone, Debug)]
struct Pending {
    fleet: u64,
    local: u64,
    before: Option<u64>,
}

struct Agent {
    options: FleetOptions,
    kept: Kept,
    pending: Option<Pending>,
    /// The fleet revision the rollout wanted here when last read.
    target: Option<u64>,
    /// The divergence the last report carried.
    diverged: Option<String>,
}

/// What the agent read of the controller.
struct Local {
    live: u64,
    live_text: String,
    bake: Option<xlb_core::bake::BakeStatus>,
    fingerprint: String,
    announce: String,
}

impl Agent {
    fn new(options: FleetOptions) -> Self {
        let path = options.state_dir.join(STATE_FILE);
        let kept = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::warn!("fleet: {}: {e}; starting without it", path.display());
                Kept::default()
            }),
            Err(_) => Kept::default(),
        };
        Self {
            options,
            kept,
            pending: None,
            target: None,
            diverged: None,
        }
    }

    /// What `xlb status` says of the fleet.
    fn view(&self, link: &Link) -> FleetNodeStatus {
        let (connected, since, error) = link.get();
        let last = self.pending.as_ref().map_or_else(
            || {
                self.kept.last.as_ref().map(|l| {
                    format!(
                        "{} {}{}",
                        l.revision,
                        l.outcome.name(),
                        l.reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    )
                })
            },
            |p| Some(format!("{} baking", p.fleet)),
        );
        FleetNodeStatus {
            fleet: self.options.address.fleet.clone(),
            node: self.options.node.clone(),
            endpoints: self.options.address.endpoints.clone(),
            connected,
            since_unix_seconds: since,
            error,
            serving: self.kept.serving,
            target: self.target,
            last,
            diverged: self.diverged.clone(),
            held: None,
        }
    }

    fn save(&self) {
        let path = self.options.state_dir.join(STATE_FILE);
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&self.kept)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            log::warn!("fleet: writing {}: {e}", path.display());
        }
    }

    /// Follow a baking fleet revision to its end.
    fn observe(&mut self, local: &Local) {
        let Some(p) = self.pending.clone() else {
            return;
        };
        let bake = local.bake.as_ref().filter(|b| b.revision == p.local);
        let (outcome, reason) = match bake {
            Some(b) if b.state == BakeState::Baking => return,
            Some(b) if b.state == BakeState::RolledBack => {
                self.kept.serving = p.before;
                self.kept.local = Some(b.rollback_revision.unwrap_or(local.live));
                (BakeOutcome::RolledBack, b.reason.clone())
            }
            // Baked, or replaced by a local change during its bake (then
            // the node is diverged from it).
            _ => {
                self.kept.serving = Some(p.fleet);
                self.kept.local = Some(p.local);
                (BakeOutcome::Baked, None)
            }
        };
        log::info!(
            "fleet: revision {} {} on this node{}",
            p.fleet,
            outcome.name(),
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        self.kept.last = Some(NodeOutcome {
            revision: p.fleet,
            outcome,
            reason,
        });
        self.pending = None;
        self.save();
    }

    fn report(&self, local: &Local) -> NodeReport {
        let diverged = match (self.pending.as_ref(), self.kept.local) {
            (None, Some(l)) if l != local.live => Some(format!(
                "live revision {} was made outside the fleet (the fleet's was {l})",
                local.live
            )),
            _ => None,
        };
        let last = match &self.pending {
            Some(p) => Some(NodeOutcome {
                revision: p.fleet,
                outcome: BakeOutcome::Baking,
                reason: None,
            }),
            None => self.kept.last.clone(),
        };
        NodeReport {
            node: self.options.node.clone(),
            live_revision: local.live,
            serving: self.kept.serving,
            fingerprint: local.fingerprint.clone(),
            last,
            announce: local.announce.clone(),
            diverged_config: diverged.as_ref().map(|_| local.live_text.clone()),
            diverged,
            updated_at_unix_seconds: unix_now(),
        }
    }

    /// Whether to apply fleet revision `t` now.
    fn wants(&self, t: &Target) -> Option<u64> {
        let rev = t.revision?;
        if self.pending.is_some() || self.kept.serving == Some(rev) {
            return None;
        }
        // Turned down here already: not tried again until the target moves.
        if self
            .kept
            .last
            .as_ref()
            .is_some_and(|l| l.revision == rev && l.outcome.failed())
        {
            return None;
        }
        Some(rev)
    }

    /// Apply `revision` through the controller's one apply path.
    fn apply(&mut self, controller: &Mutex<Controller>, revision: &FleetRevision, t: Target) {
        let origin = Origin {
            user: format!("fleet:{}", revision.user),
            message: Some(format!(
                "fleet revision {}{}",
                revision.number,
                revision
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )),
        };
        let mut c = controller.lock().unwrap_or_else(|p| p.into_inner());
        let live = c.live_number().unwrap_or(0);
        let options = if t.bake {
            ApplyOptions::operator(Kind::Apply, t.force, None)
        } else {
            ApplyOptions::unchecked(Kind::Rollback {
                to: self.kept.local.unwrap_or(live),
            })
        };
        let applied = c
            .candidate(
                revision.config_text.as_str(),
                revision.file.as_str(),
                origin,
            )
            .map_err(|e| e.to_string())
            .and_then(|candidate| c.apply(candidate, options).map_err(|e| e.to_string()));
        let before = self.kept.serving;
        match applied {
            Ok(a) if c.baking() && c.bake().is_some_and(|b| b.revision == a.revision) => {
                log::info!(
                    "fleet: applied fleet revision {} as revision {}; baking",
                    revision.number,
                    a.revision
                );
                self.pending = Some(Pending {
                    fleet: revision.number,
                    local: a.revision,
                    before,
                });
            }
            Ok(a) => {
                log::info!(
                    "fleet: applied fleet revision {} as revision {}",
                    revision.number,
                    a.revision
                );
                self.kept.serving = Some(revision.number);
                self.kept.local = Some(a.revision);
                self.kept.last = Some(NodeOutcome {
                    revision: revision.number,
                    outcome: if t.bake {
                        BakeOutcome::Baked
                    } else {
                        BakeOutcome::Applied
                    },
                    reason: None,
                });
            }
            Err(e) => {
                log::warn!(
                    "fleet: fleet revision {} refused here: {e}",
                    revision.number
                );
                self.kept.last = Some(NodeOutcome {
                    revision: revision.number,
                    outcome: BakeOutcome::Refused,
                    reason: Some(e),
                });
            }
        }
        drop(c);
        self.save();
    }
}

fn read_local(controller: &Mutex<Controller>) -> Local {
    let c = controller.lock().unwrap_or_else(|p| p.into_inner());
    let (live, live_text) = match c.live_revision() {
        Ok(l) => l.map_or((0, String::new()), |l| (l.number, l.text)),
        Err(e) => {
            log::error!("fleet: reading the live revision's text: {e}");
            (c.live_number().unwrap_or(0), String::new())
        }
    };
    let bake = c.bake().cloned();
    let (fingerprint, announce) = match c.status() {
        Ok(s) => (
            s.fingerprint,
            s.announce.map_or("unknown".to_string(), |a| {
                format!("{:?}, {} routes", a.state, a.routes.len()).to_lowercase()
            }),
        ),
        Err(e) => (String::new(), format!("status: {e}")),
    };
    Local {
        live,
        live_text,
        bake,
        fingerprint,
        announce,
    }
}

/// Whether the agent reaches the fleet's store now, since when, and why
/// not: `xlb_fleet_connected` and the status's `fleet`.
#[derive(Clone)]
pub struct Link {
    state: Arc<Mutex<(bool, f64, Option<String>)>>,
    metrics: Arc<crate::daemon::metrics::Metrics>,
    node: String,
}

impl Link {
    fn new(metrics: Arc<crate::daemon::metrics::Metrics>, node: &str) -> Self {
        let link = Self {
            state: Arc::new(Mutex::new((false, unix_now(), None))),
            metrics,
            node: node.to_string(),
        };
        link.set(false, None);
        link
    }

    /// Connected, since when (Unix seconds), the last error.
    pub fn get(&self) -> (bool, f64, Option<String>) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, up: bool, error: Option<String>) {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.0 != up {
                s.1 = unix_now();
            }
            s.0 = up;
            s.2 = error;
        }
        self.metrics
            .fleet_connected
            .get_or_create(&vec![("node".to_string(), self.node.clone())])
            .set(i64::from(up));
    }
}

/// Hand the agent's view of the fleet to the controller's status.
fn publish(controller: &Mutex<Controller>, agent: &Mutex<Agent>, link: &Link) {
    let view = agent.lock().unwrap_or_else(|p| p.into_inner()).view(link);
    controller
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_fleet(view);
}

/// The agent, until the daemon stops: sessions with the store, each retried
/// with a backoff when the store is cut off.
pub async fn serve(
    controller: Arc<Mutex<Controller>>,
    options: Option<FleetOptions>,
) -> anyhow::Result<()> {
    // Without --fleet the node works alone: this branch never ends.
    let Some(options) = options else {
        return std::future::pending().await;
    };
    let metrics = controller
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .metrics()
        .clone();
    let link = Link::new(metrics, &options.node);
    let mut agent = Agent::new(options.clone());
    // What the node kept serves only if the start kept (adopted) the
    // revision the fleet made; otherwise the node serves its --config file,
    // no fleet revision, and converges to the fleet's through a plan and a
    // bake.
    let live = controller
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .live_number();
    if agent.kept.local.is_some() && agent.kept.local != live {
        log::info!(
            "fleet: the start made revision {}, not the fleet's {}: serving no fleet revision until it converges",
            live.unwrap_or_default(),
            agent.kept.local.unwrap_or_default()
        );
        agent.kept.serving = None;
        agent.kept.local = None;
        agent.save();
    }
    let agent = Arc::new(Mutex::new(agent));
    publish(&controller, &agent, &link);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let err = session(&controller, &agent, &options, &link).await;
        if link.get().0 {
            backoff = FIRST_BACKOFF;
        }
        link.set(false, Some(err.to_string()));
        publish(&controller, &agent, &link);
        let live = controller
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live_number()
            .unwrap_or(0);
        log::warn!(
            "fleet: unreachable: {err}; forwarding goes on with revision {live}; retrying in {backoff:?}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection to the store, until it fails.
async fn session(
    controller: &Arc<Mutex<Controller>>,
    agent: &Arc<Mutex<Agent>>,
    options: &FleetOptions,
    link: &Link,
) -> FleetError {
    let store = match FleetStore::connect(&options.address).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut lease = match store.lease().await {
        Ok(l) => l,
        Err(e) => return e,
    };
    log::info!(
        "fleet: connected to {} as node {} (fleet {})",
        options.address.endpoints.join(","),
        options.node,
        options.address.fleet
    );
    link.set(true, None);
    loop {
        let passed = pass(controller, agent, &store, &mut lease).await;
        publish(controller, agent, link);
        if let Err(e) = passed {
            return e;
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// Report, drive the rollout, converge.
async fn pass(
    controller: &Arc<Mutex<Controller>>,
    agent: &Arc<Mutex<Agent>>,
    store: &FleetStore,
    lease: &mut xlb_fleet::Lease,
) -> Result<(), FleetError> {
    let report = {
        let (controller, agent) = (controller.clone(), agent.clone());
        tokio::task::spawn_blocking(move || {
            let local = read_local(&controller);
            let mut a = agent.lock().unwrap_or_else(|p| p.into_inner());
            a.observe(&local);
            a.report(&local)
        })
        .await
        .map_err(|e| FleetError::Agent(e.to_string()))?
    };
    if !store.keep_alive(lease).await? {
        log::warn!("fleet: the report's lease expired; granting a new one");
        *lease = store.lease().await?;
    }
    store.report(lease, &report).await?;
    let rollout = xlb_fleet::drive(store).await?;
    let desired = store.desired().await?;
    let t = target(rollout.as_ref(), desired, &report.node);
    let want = {
        let mut a = agent.lock().unwrap_or_else(|p| p.into_inner());
        a.target = t.revision;
        a.diverged = report.diverged.clone();
        a.wants(&t)
    };
    let Some(number) = want else {
        return Ok(());
    };
    let revision = store
        .revision(number)
        .await?
        .ok_or(FleetError::NoRevision(number))?;
    let (controller, agent) = (controller.clone(), agent.clone());
    tokio::task::spawn_blocking(move || {
        agent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(&controller, &revision, t);
    })
    .await
    .map_err(|e| FleetError::Url {
        url: String::new(),
        why: format!("the agent's task failed: {e}"),
    })?;
    Ok(())
}
