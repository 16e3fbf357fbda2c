//! `xlb run --fleet`: held flows replicated through the fleet's store, so a
//! connection survives a change of the ECMP set even while its backend is
//! draining or a weight change moved its slot (second chance, issue 21;
//! docs/FLEET.md).
//!
//! - Publish: on every connection-table scan period and at once after the
//!   live revision changes, the table is walked (keys and values) and its
//!   held flows (`xlb_core::held::select`: the entries whose backend is not
//!   the live table's pick) are put under `/xlb/<fleet>/held/<node>/` in
//!   records of `FLOWS_PER_CHUNK` flows, under a lease of
//!   `xlb_fleet::HELD_TTL_SECONDS` kept alive while the node lives; an
//!   unchanged set is not written again.
//! - Install: the other nodes' records, read at the start of a session and
//!   then watched, are translated into this node's backend ids and inserted
//!   with BPF_NOEXIST (never over an entry of this node's own); they are
//!   kept in memory and installed again whenever the live revision changes
//!   (a flow this node's table sent to its backend before its own drain
//!   needs the entry after it).
//!
//! Cut off from the store, nothing is lost locally: the node forwards with
//! what it has installed and tries again with the fleet agent's backoff.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xlb_core::clock::unix_now;
use xlb_core::held::{self, HeldChunk, HeldStatus};
use xlb_fleet::{FleetError, FleetStore, Lease};

use crate::daemon::controller::Controller;
use crate::daemon::fleet::{FIRST_BACKOFF, FleetOptions, MAX_BACKOFF};

/// How often the live revision is looked at (a change publishes at once).
pub const CHECK_PERIOD: Duration = Duration::from_millis(200);

/// The replication until the daemon stops (never without `--fleet`).
pub async fn serve(
    controller: Arc<Mutex<Controller>>,
    options: Option<FleetOptions>,
) -> anyhow::Result<()> {
    let Some(options) = options else {
        return std::future::pending().await;
    };
    let mut state = State::default();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let err = session(&controller, &options, &mut state).await;
        if started.elapsed() > MAX_BACKOFF {
            backoff = FIRST_BACKOFF;
        }
        log::warn!("held flows: {err}; installed entries stay; retrying in {backoff:?}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// What the replication keeps across sessions.
#[derive(Default)]
struct State {
    status: HeldStatus,
    /// Other nodes' records, by (node, chunk): installed again after each
    /// local apply.
    others: BTreeMap<(String, u32), HeldChunk>,
    /// The groups last published (an unchanged set is not written again).
    published: Option<Vec<held::HeldGroup>>,
}

fn lock(c: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FleetError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FleetError::Agent(e.to_string()))
}

/// One connection to the store, until it fails.
async fn session(
    controller: &Arc<Mutex<Controller>>,
    options: &FleetOptions,
    state: &mut State,
) -> FleetError {
    match run(controller, options, state).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn run(
    controller: &Arc<Mutex<Controller>>,
    options: &FleetOptions,
    state: &mut State,
) -> Result<std::convert::Infallible, FleetError> {
    let store = FleetStore::connect(&options.address).await?;
    let mut lease = store.held_lease().await?;
    // Watch first, then read what is there: a record put in between is
    // seen twice, which inserting with BPF_NOEXIST makes harmless.
    let mut watch = store.watch_held(0).await?;
    let existing = store.held().await?;
    install(controller, options, state, existing, true).await?;
    state.published = None;
    let mut seen_revision = None;
    let mut last_scan: Option<Instant> = None;
    let mut tick = tokio::time::interval(CHECK_PERIOD);
    loop {
        tokio::select! {
            got = watch.next() => {
                let records = got?;
                install(controller, options, state, records, true).await?;
            }
            _ = tick.tick() => {
                let live = lock(controller).live_number();
                let changed = live != seen_revision;
                let due = last_scan.is_none_or(|t| t.elapsed() >= xlb_dataplane::CONN_SCAN_PERIOD);
                if !(changed || due) {
                    continue;
                }
                if due && renew(&store, &mut lease).await? {
                    state.published = None;
                }
                seen_revision = live;
                last_scan = Some(Instant::now());
                publish(controller, options, state, &store, &lease).await?;
                if changed {
                    let all: Vec<HeldChunk> = state.others.values().cloned().collect();
                    install(controller, options, state, all, false).await?;
                }
            }
        }
    }
}

/// Keep the records' lease alive; true when it had expired and a new one
/// was granted (the records went with it: write them again).
async fn renew(store: &FleetStore, lease: &mut Lease) -> Result<bool, FleetError> {
    if store.keep_alive(lease).await? {
        return Ok(false);
    }
    log::warn!("held flows: the records' lease expired; granting a new one");
    *lease = store.held_lease().await?;
    Ok(true)
}

/// Walk the table, select the held flows, put them if they changed.
async fn publish(
    controller: &Arc<Mutex<Controller>>,
    options: &FleetOptions,
    state: &mut State,
    store: &FleetStore,
    lease: &Lease,
) -> Result<(), FleetError> {
    let (c, node) = (controller.clone(), options.node.clone());
    let selected = blocking(move || {
        let (conns, desired) = {
            let c = lock(&c);
            (c.conn_table(), c.applied().cloned())
        };
        let desired = desired?;
        let scanned_at = unix_now();
        let entries = match conns.entries() {
            Ok(e) => e,
            Err(e) => {
                log::warn!("held flows: reading the connection table: {e}");
                return None;
            }
        };
        let selection = held::select(&desired, entries);
        let records = held::chunks(
            &node,
            &desired,
            &selection,
            held::FLOWS_PER_CHUNK,
            scanned_at,
            unix_now(),
        );
        Some((selection.per_backend(&desired), records))
    })
    .await?;
    let Some((per_backend, records)) = selected else {
        return Ok(());
    };
    let groups: Vec<held::HeldGroup> = records.iter().flat_map(|r| r.groups.clone()).collect();
    if state.published.as_ref() == Some(&groups) {
        return Ok(());
    }
    let bytes = store.publish_held(lease, &options.node, &records).await?;
    let flows: u64 = per_backend.iter().map(|c| c.flows).sum();
    if state.published.as_ref().is_none_or(|g| !g.is_empty()) || flows > 0 {
        log::info!(
            "held flows: published {flows} in {} records ({bytes} bytes)",
            records.len()
        );
    }
    state.published = Some(groups);
    state.status.published = flows;
    state.status.published_at_unix_seconds = unix_now();
    state.status.per_backend = per_backend;
    let c = lock(controller);
    let m = &c.metrics().held;
    m.published.set(flows as i64);
    m.published_bytes.inc_by(bytes as u64);
    m.flows.clear();
    for count in &state.status.per_backend {
        m.flows
            .get_or_create(&vec![
                ("vip".to_string(), count.vip.clone()),
                ("backend".to_string(), count.backend.clone()),
            ])
            .set(count.flows as i64);
    }
    drop(c);
    set_status(controller, state);
    Ok(())
}

/// Insert other nodes' records into this node's table; `fresh`: they just
/// arrived (their delay is measured), not installed again after an apply.
async fn install(
    controller: &Arc<Mutex<Controller>>,
    options: &FleetOptions,
    state: &mut State,
    records: Vec<HeldChunk>,
    fresh: bool,
) -> Result<(), FleetError> {
    let records: Vec<HeldChunk> = records
        .into_iter()
        .filter(|r| r.node != options.node)
        .collect();
    if records.is_empty() {
        return Ok(());
    }
    for r in &records {
        state.others.insert((r.node.clone(), r.chunk), r.clone());
    }
    let c = controller.clone();
    let done = blocking(move || {
        let (conns, desired) = {
            let c = lock(&c);
            (c.conn_table(), c.applied().cloned())
        };
        let desired = desired?;
        let mut total = xlb_dataplane::Inserted::default();
        let mut delay = None;
        for r in &records {
            let (flows, _skipped) = held::to_install(&desired, r);
            let entries = flows.into_iter().map(|(f, id, hash)| (f.words(), id, hash));
            match conns.insert_absent(entries) {
                Ok(n) => {
                    total.added += n.added;
                    total.present += n.present;
                }
                Err(e) => log::warn!("held flows: inserting node {}'s: {e}", r.node),
            }
            if fresh {
                delay = Some(unix_now() - r.scanned_at_unix_seconds);
            }
        }
        Some((total, delay))
    })
    .await?;
    let Some((total, delay)) = done else {
        return Ok(());
    };
    if total.added > 0 {
        log::info!(
            "held flows: {} entries of other nodes inserted ({} present already)",
            total.added,
            total.present
        );
    }
    state.status.installed += total.added;
    state.status.present += total.present;
    if delay.is_some() {
        state.status.delay_seconds = delay;
    }
    {
        let c = lock(controller);
        let m = &c.metrics().held;
        m.installed.inc_by(total.added);
        m.present.inc_by(total.present);
        if let Some(d) = delay {
            m.delay.set(d);
        }
    }
    set_status(controller, state);
    Ok(())
}

fn set_status(controller: &Mutex<Controller>, state: &State) {
    let mut c = lock(controller);
    c.set_held(state.status.clone());
    c.metrics().invalidate();
}
