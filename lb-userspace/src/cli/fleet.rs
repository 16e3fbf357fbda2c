//! `xlb fleet status URL...`: each node's `/api/status`, and per VIP whether
//! the nodes agree on what decides a new flow's backend (xlb_core::fleet).
//! Exit 1 when they do not, naming the node, the VIP, the fields that differ
//! and the share of new flows that node sends elsewhere; 4 when a node
//! cannot be read.
//!
//! With `--etcd URL`, the fleet's store (lb-fleet, docs/FLEET.md): `status`
//! (every node's report and the rollout), `plan`, `apply` (a fleet revision
//! and its rollout, `--wait` to follow it), `rollback`, `history`. The
//! rollout lives in etcd: this command may be killed at any point and
//! another one, anywhere, sees and moves it.

use std::collections::BTreeMap;
use std::time::Duration;

use xlb_core::fleet::{Decision, agreement};
use xlb_core::status::SCHEMA_VERSION;

use super::output::{Failure, Output, print_json};

/// How long one node may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What `fleet status` reads of a node's `/api/status`: its fingerprint
/// and each VIP's decision (the rest of the document, 34 MiB at 1,000 VIPs
/// x 64 backends, is skipped by the parser, not built).
#[derive(serde::Deserialize)]
struct NodeDoc {
    #[serde(default)]
    fingerprint: String,
    vips: Vec<NodeVip>,
}

#[derive(serde::Deserialize)]
struct NodeVip {
    name: String,
    #[serde(default)]
    decision: Option<Decision>,
}

/// `http://host:port` (or with a trailing slash): its `/api/status`, read
/// as a stream (no size limit: a node at the declared maxima answers tens
/// of MiB).
fn read(url: &str) -> Result<NodeDoc, Failure> {
    let endpoint = format!("{}/api/status", url.trim_end_matches('/'));
    let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
    let body = agent
        .get(&endpoint)
        .call()
        .map_err(|e| Failure::internal(format!("{endpoint}: {e}")))?
        .into_reader();
    serde_json::from_reader(std::io::BufReader::new(body))
        .map_err(|e| Failure::internal(format!("{endpoint}: not an xlb status document: {e}")))
}

/// Nodes read at once.
const PARALLEL_READS: usize = 16;

/// Every node's document, in `urls` order, read `PARALLEL_READS` at a time.
fn read_all(urls: &[String]) -> Result<Vec<NodeDoc>, Failure> {
    let mut docs = Vec::with_capacity(urls.len());
    for chunk in urls.chunks(PARALLEL_READS) {
        let read: Vec<Result<NodeDoc, Failure>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|url| scope.spawn(move || read(url)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Failure::internal("a node's reader panicked")))
                })
                .collect()
        });
        for doc in read {
            docs.push(doc?);
        }
    }
    Ok(docs)
}

fn status(output: Output, urls: &[String]) -> Result<(), Failure> {
    let mut nodes = Vec::new();
    let mut fingerprints = Vec::new();
    for (url, s) in urls.iter().zip(read_all(urls)?) {
        let decisions: BTreeMap<String, Decision> = s
            .vips
            .into_iter()
            .filter_map(|v| v.decision.map(|d| (v.name, d)))
            .collect();
        fingerprints.push((url.clone(), s.fingerprint));
        nodes.push((url.clone(), decisions));
    }
    let vips = agreement(&nodes);
    let agree = vips.iter().all(|v| v.differing.is_empty());
    if output == Output::Json {
        print_json(&serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "agree": agree,
            "nodes": fingerprints
                .iter()
                .map(|(url, fp)| serde_json::json!({"node": url, "fingerprint": fp}))
                .collect::<Vec<_>>(),
            "vips": vips,
        }));
    } else {
        println!(
            "{:<24} {:<18} {:>5}  DIFFERING",
            "VIP", "FINGERPRINT", "AGREE"
        );
        for v in &vips {
            println!(
                "{:<24} {:<18} {:>5}  {}",
                v.vip,
                v.fingerprint,
                format!("{}/{}", nodes.len() - v.differing.len(), nodes.len()),
                if v.differing.is_empty() { "-" } else { "" }
            );
            for d in &v.differing {
                println!(
                    "  {}: {}; {:.1}% of new flows go to another backend there",
                    d.node,
                    d.fields.join(", "),
                    d.flows_elsewhere_ratio * 100.0
                );
            }
        }
    }
    if agree {
        return Ok(());
    }
    let which: Vec<String> = vips
        .iter()
        .flat_map(|v| {
            v.differing
                .iter()
                .map(move |d| format!("{} on {}", v.vip, d.node))
        })
        .collect();
    // One line, also for a fleet where hundreds of VIPs differ on many
    // nodes: the first few, then how many more (the table has them all).
    const NAMED: usize = 10;
    let more = match which.len().saturating_sub(NAMED) {
        0 => String::new(),
        n => format!(" and {n} more (see the table)"),
    };
    Err(Failure::refused(format!(
        "the nodes disagree: {}{more}",
        which[..which.len().min(NAMED)].join(", ")
    )))
}

use xlb_core::change::{Candidate, Origin};
use xlb_core::rollout::{
    FleetRevision, NodeReport, Rollout, RolloutState, Step, node_problem, waves,
};
use xlb_fleet::{FleetError, FleetStore, Versioned};

use super::args::{FleetCommand, FleetStoreArgs};
use super::change::read_text;
use crate::user::current_user;

/// How often `--wait` reads the rollout.
const FOLLOW_PERIOD: Duration = Duration::from_millis(500);

fn store_failure(e: FleetError) -> Failure {
    match e {
        FleetError::Url { .. } | FleetError::File { .. } | FleetError::NoRevision(_) => {
            Failure::bad_input(e)
        }
        FleetError::Busy { .. } | FleetError::Conflict => Failure::refused(e),
        _ => Failure::internal(e),
    }
}

/// Run one store command on a runtime of its own.
fn with_store<T>(
    args: &FleetStoreArgs,
    f: impl AsyncFnOnce(&FleetStore) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let url = args
        .etcd
        .as_deref()
        .ok_or_else(|| Failure::bad_input("--etcd URL (or XLB_FLEET) is needed"))?;
    let address = args.tls.address(url).map_err(store_failure)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::internal(format!("starting the runtime: {e}")))?;
    runtime.block_on(async {
        let store = FleetStore::connect(&address).await.map_err(store_failure)?;
        f(&store).await
    })
}

pub(super) fn run(output: Output, command: &FleetCommand) -> Result<(), Failure> {
    match command {
        FleetCommand::Status { store, urls } if store.etcd.is_none() => status(output, urls),
        FleetCommand::Status { store, .. } => {
            with_store(store, async |s| store_status(output, s).await)
        }
        FleetCommand::Plan { store, file } => {
            let candidate = parse(file)?;
            with_store(store, async |s| plan(output, s, &candidate).await)
        }
        FleetCommand::Apply {
            store,
            file,
            canary,
            wave_size,
            force,
            message,
            wait,
            timeout,
        } => {
            let candidate = parse(file)?;
            with_store(store, async |s| {
                let rollout = start(
                    s,
                    candidate,
                    message.clone(),
                    canary.as_deref(),
                    *wave_size,
                    *force,
                )
                .await?;
                if *wait {
                    follow(output, s, rollout.id, *timeout).await
                } else {
                    Ok(())
                }
            })
        }
        FleetCommand::Rollback { store, to } => with_store(store, async |s| rollback(s, *to).await),
        FleetCommand::History { store } => with_store(store, async |s| history(output, s).await),
    }
}

/// Validated here: a bad file never reaches the store.
fn parse(file: &std::path::Path) -> Result<Candidate, Failure> {
    let text = read_text(file)?;
    Candidate::parse(text, file.display().to_string(), Origin::default())
        .map_err(Failure::bad_input)
}

fn outcome_cell(r: &NodeReport) -> String {
    match &r.last {
        Some(l) => format!("{} {}", l.revision, l.outcome.name()),
        None => "-".into(),
    }
}

fn rollout_line(r: &Rollout) -> String {
    let waves: Vec<String> = r
        .waves
        .iter()
        .map(|w| format!("[{}]", w.join(" ")))
        .collect();
    format!(
        "rollout {}: fleet revision {} -> {}, {} at wave {}/{} {}{}{}",
        r.id,
        r.from.map_or("-".to_string(), |f| f.to_string()),
        r.to,
        r.state.name(),
        r.wave + 1,
        r.waves.len(),
        waves.join(" "),
        if r.force { ", forced" } else { "" },
        r.reason
            .as_deref()
            .map(|x| format!(": {x}"))
            .unwrap_or_default()
    )
}

/// The fleet's desired revision and its rollout.
async fn desired_and_rollout(
    store: &FleetStore,
) -> Result<(Option<u64>, Option<Rollout>), Failure> {
    let desired = store.desired().await.map_err(store_failure)?;
    let rollout = store.rollout().await.map_err(store_failure)?;
    Ok((desired, rollout.map(|v| v.value)))
}

async fn store_status(output: Output, store: &FleetStore) -> Result<(), Failure> {
    let (desired, rollout) = desired_and_rollout(store).await?;
    let nodes = store.nodes().await.map_err(store_failure)?;
    let mut problems: Vec<String> = nodes
        .values()
        .filter_map(|r| node_problem(r, desired))
        .collect();
    let fingerprints: std::collections::BTreeSet<&str> =
        nodes.values().map(|r| r.fingerprint.as_str()).collect();
    if fingerprints.len() > 1 {
        problems.push(format!(
            "the nodes' fingerprints differ: {}",
            nodes
                .values()
                .map(|r| format!("{} {}", r.node, r.fingerprint))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if nodes.is_empty() {
        problems.push("no node reports to the fleet".into());
    }
    if let Some(r) = rollout.as_ref().filter(|r| r.state.active()) {
        problems.push(format!("rollout {} is {}", r.id, r.state.name()));
    }
    if output == Output::Json {
        print_json(&serde_json::json!({
            "schema_version": xlb_core::rollout::SCHEMA_VERSION,
            "desired": desired,
            "rollout": rollout,
            "nodes": nodes.values().collect::<Vec<_>>(),
            "agree": problems.is_empty(),
            "problems": problems,
        }));
    } else {
        println!(
            "fleet revision: {}",
            desired.map_or("none yet".to_string(), |d| d.to_string())
        );
        if let Some(r) = &rollout {
            println!("{}", rollout_line(r));
        }
        println!(
            "{:<16} {:>7} {:>5} {:<18} {:<16} {:<24} DIVERGED",
            "NODE", "SERVING", "LIVE", "FINGERPRINT", "LAST", "ANNOUNCE"
        );
        for r in nodes.values() {
            println!(
                "{:<16} {:>7} {:>5} {:<18} {:<16} {:<24} {}",
                r.node,
                r.serving.map_or("-".to_string(), |s| s.to_string()),
                r.live_revision,
                r.fingerprint,
                outcome_cell(r),
                r.announce,
                r.diverged.as_deref().unwrap_or("-")
            );
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::refused(problems.join("; ")))
    }
}

/// Plan the change against the fleet's revision, and against each diverged
/// node's live config: refused when any plan is, naming the node.
async fn plan(output: Output, store: &FleetStore, candidate: &Candidate) -> Result<(), Failure> {
    let desired = store.desired().await.map_err(store_failure)?;
    let base_text = match desired {
        Some(d) => Some(
            store
                .revision(d)
                .await
                .map_err(store_failure)?
                .ok_or_else(|| store_failure(FleetError::NoRevision(d)))?,
        ),
        None => None,
    };
    let mut bases: Vec<(String, xlb_core::config::Config)> = Vec::new();
    let empty = || xlb_core::config::Config {
        vips: vec![],
        ..candidate.config.clone()
    };
    match &base_text {
        Some(rev) => bases.push((
            format!("fleet revision {}", rev.number),
            xlb_core::config::parse(&rev.config_text, &rev.file).map_err(Failure::bad_input)?,
        )),
        None => bases.push(("an empty fleet".into(), empty())),
    }
    for r in store.nodes().await.map_err(store_failure)?.values() {
        if let Some(text) = &r.diverged_config {
            let name = format!("node {} (diverged)", r.node);
            bases.push((
                name.clone(),
                xlb_core::config::parse(text, &name).map_err(Failure::bad_input)?,
            ));
        }
    }
    let mut refused = Vec::new();
    let mut plans = Vec::new();
    for (name, base) in &bases {
        let plan = xlb_core::plan::plan(base, &candidate.config).map_err(Failure::bad_input)?;
        if plan.refused() {
            refused.push(name.clone());
        }
        if output != Output::Json {
            println!("against {name}:");
            print!("{}", plan.render_table());
        }
        plans.push(serde_json::json!({"against": name, "plan": plan}));
    }
    if output == Output::Json {
        print_json(&serde_json::json!({
            "schema_version": xlb_core::rollout::SCHEMA_VERSION,
            "plans": plans,
        }));
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Failure::refused(format!(
            "refused by the safety checks against {} (`xlb fleet apply --force` to roll it out anyway)",
            refused.join(", ")
        )))
    }
}

fn busy(r: &Rollout) -> Failure {
    store_failure(FleetError::Busy {
        id: r.id,
        from: r.from.map_or("-".to_string(), |f| f.to_string()),
        to: r.to,
        state: r.state.name(),
    })
}

/// The rollout now, refused when one is active.
async fn idle(store: &FleetStore) -> Result<Option<Versioned<Rollout>>, Failure> {
    let current = store.rollout().await.map_err(store_failure)?;
    match &current {
        Some(r) if r.value.state.active() => Err(busy(&r.value)),
        _ => Ok(current),
    }
}

async fn new_rollout(
    store: &FleetStore,
    current: &Option<Versioned<Rollout>>,
    to: u64,
    canary: Option<&str>,
    wave_size: Option<usize>,
    force: bool,
) -> Result<Rollout, Failure> {
    let nodes: Vec<String> = store
        .nodes()
        .await
        .map_err(store_failure)?
        .into_keys()
        .collect();
    let waves = waves(&nodes, canary, wave_size).map_err(Failure::bad_input)?;
    Ok(Rollout {
        id: current.as_ref().map_or(1, |c| c.value.id + 1),
        from: store.desired().await.map_err(store_failure)?,
        to,
        waves,
        wave: 0,
        state: RolloutState::Running,
        reason: None,
        force,
        user: current_user(),
        started_at_unix_seconds: xlb_core::clock::unix_now(),
    })
}

/// Record the fleet revision and its rollout in one transaction.
async fn start(
    store: &FleetStore,
    candidate: Candidate,
    message: Option<String>,
    canary: Option<&str>,
    wave_size: Option<usize>,
    force: bool,
) -> Result<Rollout, Failure> {
    let current = idle(store).await?;
    let rollout = new_rollout(store, &current, 0, canary, wave_size, force).await?;
    let revision = FleetRevision {
        number: 0,
        file: candidate.file,
        config_text: candidate.text,
        user: current_user(),
        message,
        created_at_unix_seconds: xlb_core::clock::unix_now(),
    };
    let seen = current.as_ref().map_or(0, |c| c.mod_revision);
    let (revision, rollout) = store
        .start(seen, revision, rollout)
        .await
        .map_err(store_failure)?;
    eprintln!(
        "fleet revision {} recorded; {}",
        revision.number,
        rollout_line(&rollout)
    );
    Ok(rollout)
}

/// Follow rollout `id` until it ends: exit 0 done, 1 rolled back or
/// halted, 4 after `timeout` (the rollout goes on without this command).
async fn follow(
    output: Output,
    store: &FleetStore,
    id: u64,
    timeout: Duration,
) -> Result<(), Failure> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        // This command moves the rollout too when it can (a CAS decides).
        // A store that does not answer for a moment is asked again until
        // the deadline: the rollout does not depend on this command.
        let read = async {
            let rollout = xlb_fleet::drive(store).await?;
            Ok::<_, FleetError>((rollout, store.nodes().await?))
        };
        let (rollout, nodes) = match read.await {
            Ok(r) => r,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("xlb: {e}; asking again");
                tokio::time::sleep(FOLLOW_PERIOD).await;
                continue;
            }
            Err(e) => return Err(store_failure(e)),
        };
        let rollout = rollout
            .filter(|r| r.id == id)
            .ok_or_else(|| Failure::internal(format!("rollout {id} was replaced")))?;
        let mut line = rollout_line(&rollout);
        for n in rollout.waves.iter().flatten() {
            let cell = nodes.get(n).map_or("down".to_string(), outcome_cell);
            line.push_str(&format!("\n  {n}: {cell}"));
        }
        if line != last && output != Output::Json {
            println!("{line}");
            last = line;
        }
        match rollout.state {
            RolloutState::Done => {
                if output == Output::Json {
                    print_json(&rollout);
                }
                return Ok(());
            }
            RolloutState::RolledBack | RolloutState::Halted => {
                if output == Output::Json {
                    print_json(&rollout);
                }
                return Err(Failure::refused(format!(
                    "rollout {id} {}: {}",
                    rollout.state.name(),
                    rollout.reason.as_deref().unwrap_or("no reason given")
                )));
            }
            RolloutState::Running | RolloutState::RollingBack => {}
        }
        if std::time::Instant::now() >= deadline {
            return Err(Failure::internal(format!(
                "rollout {id} still {} after {timeout:?}; it goes on (`xlb fleet status`)",
                rollout.state.name()
            )));
        }
        tokio::time::sleep(FOLLOW_PERIOD).await;
    }
}

/// Roll the running rollout back, or roll the fleet out to `to`.
async fn rollback(store: &FleetStore, to: Option<u64>) -> Result<(), Failure> {
    let current = store.rollout().await.map_err(store_failure)?;
    if let Some(c) = current
        .as_ref()
        .filter(|c| c.value.state == RolloutState::Running)
    {
        let mut r = c.value.clone();
        r.state = match r.from {
            Some(_) => RolloutState::RollingBack,
            None => RolloutState::Halted,
        };
        r.reason = Some(format!("rolled back by {}", current_user()));
        let step = Step {
            rollout: r.clone(),
            desired: None,
        };
        if !store
            .advance(c.mod_revision, &step)
            .await
            .map_err(store_failure)?
        {
            return Err(store_failure(FleetError::Conflict));
        }
        eprintln!("{}", rollout_line(&r));
        return Ok(());
    }
    let current = idle(store).await?;
    let desired = store.desired().await.map_err(store_failure)?;
    let to = match to {
        Some(n) => n,
        None => store
            .revisions()
            .await
            .map_err(store_failure)?
            .iter()
            .map(|r| r.number)
            .filter(|n| desired.is_some_and(|d| *n < d))
            .max()
            .ok_or_else(|| {
                Failure::bad_input("no fleet revision before the desired one: --to N")
            })?,
    };
    if store.revision(to).await.map_err(store_failure)?.is_none() {
        return Err(store_failure(FleetError::NoRevision(to)));
    }
    let rollout = new_rollout(store, &current, to, None, None, false).await?;
    let step = Step {
        rollout: rollout.clone(),
        desired: None,
    };
    let seen = current.as_ref().map_or(0, |c| c.mod_revision);
    if !store.advance(seen, &step).await.map_err(store_failure)? {
        return Err(store_failure(FleetError::Conflict));
    }
    eprintln!("{}", rollout_line(&rollout));
    Ok(())
}

async fn history(output: Output, store: &FleetStore) -> Result<(), Failure> {
    let revisions = store.revisions().await.map_err(store_failure)?;
    let (desired, rollout) = desired_and_rollout(store).await?;
    if output == Output::Json {
        print_json(&serde_json::json!({
            "schema_version": xlb_core::rollout::SCHEMA_VERSION,
            "desired": desired,
            "rollout": rollout,
            "revisions": revisions.iter().map(|r| serde_json::json!({
                "number": r.number,
                "file": r.file,
                "user": r.user,
                "message": r.message,
                "created_at_unix_seconds": r.created_at_unix_seconds,
                "config_hash": xlb_core::revision::text_hash(&r.config_text),
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!(
        "{:<4} {:<8} {:<20} {:<12} {:<24} MESSAGE",
        "REV", "", "CREATED", "USER", "FILE"
    );
    for r in &revisions {
        println!(
            "{:<4} {:<8} {:<20} {:<12} {:<24} {}",
            r.number,
            if Some(r.number) == desired {
                "desired"
            } else {
                ""
            },
            xlb_core::status::rfc3339(r.created_at_unix_seconds),
            r.user,
            r.file,
            r.message.as_deref().unwrap_or("")
        );
    }
    if let Some(r) = &rollout {
        println!("{}", rollout_line(r));
    }
    Ok(())
}
