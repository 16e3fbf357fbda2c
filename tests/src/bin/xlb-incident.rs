//! `cargo xtask incident-replay`: the outage behind xlb, rebuilt in network
//! namespaces and checked (docs/INCIDENT.md).
//!
//! Ten auth servers behind the real `xlb` daemon, each serving 60 logins/s
//! with a 2 s queue (tests/src/logins.rs); 300 logins/s from the client, one
//! TCP connection each. Five seconds in, the bad change of the outage: two
//! servers' weights raised to 10. `xlb plan` refuses it; it is forced through
//! anyway; the bake sees those servers take more than their capacity share
//! and rolls the change back on its own. The replay prints the timeline as it
//! happens, then the failed logins per phase, and checks its goals (exit 1
//! when one is missed). Everything it makes is removed, also on Ctrl-C.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{SigHandler, Signal, signal};
use serde_json::Value;
use tests::logins::{
    self, BACKENDS, BAD_WEIGHT, HOT, LOGINS_PER_SECOND, Login, LoginClient, LoginServers, Model,
    names, refused_under,
};
use tests::testbed::{TCP_PORT, Testbed, VIP4};
use tests::xlbd::Daemon;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// The client gives up on a login after this (longer than the servers' queue).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_WORKERS: usize = 512;
/// When the bad change is made, and how long the logins go on after the rollback.
const CHANGE_AT: f64 = 5.0;
const AFTER_ROLLBACK: f64 = 10.0;
/// Give up waiting for a rollback this long after the change.
const ROLLBACK_DEADLINE: f64 = 30.0;
/// The goals.
const GOAL_ROLLBACK_SECONDS: f64 = 10.0;
const GOAL_FAILED_FRACTION: f64 = 0.001;
/// The real outage's length, for the "without rollback" estimate.
const OUTAGE_SECONDS: f64 = 2.0 * 3600.0 + 45.0 * 60.0;
/// A login slower than this counts as slow (it still succeeded).
const SLOW: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    // It makes network namespaces and loads XDP programs.
    tests::privileges::check("the replay")?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        signal(Signal::SIGINT, SigHandler::Handler(on_signal))?;
        signal(Signal::SIGTERM, SigHandler::Handler(on_signal))?;
    }
    let dir = std::env::temp_dir().join(format!("xlb-incident-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = replay(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nreplay: removed the namespaces and files it made");
    match result? {
        Missed(None) => Ok(()),
        Missed(Some(what)) => {
            eprintln!("replay: GOALS MISSED: {what}");
            std::process::exit(1);
        }
    }
}

/// The goals the replay missed, if any (or that it was interrupted).
struct Missed(Option<String>);

/// `--bake-hold` of the daemon: 1s (its default), or XLB_INCIDENT_BAKE_HOLD for an
/// experiment (docs/INCIDENT.md); the goals stay the same.
fn bake_hold() -> String {
    std::env::var("XLB_INCIDENT_BAKE_HOLD").unwrap_or_else(|_| "1s".into())
}

/// Seconds since the start of the replay, for the timeline.
struct Clock {
    t0: Instant,
    unix0: f64,
}

impl Clock {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
    fn of(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.t0).as_secs_f64()
    }
    fn of_unix(&self, u: f64) -> f64 {
        u - self.unix0
    }
    fn say(&self, what: impl AsRef<str>) {
        println!("[{:6.2}s] {}", self.now(), what.as_ref());
    }
}

fn show_output(command: &str, out: &std::process::Output) {
    println!("\n$ {command}");
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        println!("  {line}");
    }
    println!("  (exit {})\n", out.status.code().unwrap_or(-1));
}

/// What the timeline found; times in seconds since the start.
#[derive(Default)]
struct Timeline {
    plan_refused: Option<String>,
    change: Option<f64>,
    skew_seen: Option<f64>,
    rollback: Option<f64>,
    rollback_reason: Option<String>,
    history_ok: bool,
    end: f64,
}

fn replay(dir: &Path) -> anyhow::Result<Missed> {
    let names = names();
    let model = Model::INCIDENT;
    println!(
        "replay: the outage behind xlb, rebuilt: {BACKENDS} auth servers behind xlb, one bad weight change"
    );
    println!(
        "replay: servers serve {} logins/s each (sliding {:?} window), queue up to {:?} of logins, refuse beyond",
        model.capacity_per_second, model.window, model.max_wait
    );
    println!(
        "replay: clients make {LOGINS_PER_SECOND} logins/s (half the fleet's {}/s), one TCP connection each, {:?} timeout",
        model.capacity_per_second * BACKENDS,
        CLIENT_TIMEOUT
    );
    println!("replay: building the testbed (namespaces xlbinc-*)");
    let bed = Testbed::new("xlbinc", BACKENDS).context("building the testbed")?;
    let servers = LoginServers::start(&bed, &names, model)?;

    let good = dir.join("good.toml");
    let bad = dir.join("bad.toml");
    let (good_text, bad_text) = logins::good_and_bad();
    std::fs::write(&good, good_text)?;
    std::fs::write(&bad, bad_text)?;
    println!(
        "replay: starting `xlb run --config good.toml --bake-window 60s --bake-hold {}` (weights 1, capacity 1 each)",
        bake_hold()
    );
    let daemon = Daemon::start_with(
        &bed.lb.ns,
        &good,
        dir,
        &["--bake-window", "60s", "--bake-hold", &bake_hold()],
    )?;

    let clock = Clock {
        t0: Instant::now(),
        unix0: xlb_core::clock::unix_now(),
    };
    let target = SocketAddr::new(VIP4.into(), TCP_PORT);
    let client = LoginClient::start(
        &bed.client.ns,
        target,
        LOGINS_PER_SECOND,
        CLIENT_WORKERS,
        CLIENT_TIMEOUT,
        90,
    );
    clock.say(format!(
        "logins start: {LOGINS_PER_SECOND}/s to {target} (the VIP `login`)"
    ));
    let timeline = run_timeline(&clock, &daemon, &servers, &client, &bad);
    let dropped = client.dropped.load(Ordering::Relaxed);
    let logins = client.finish();
    let timeline = timeline?;
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Ok(Missed(Some("interrupted before the end".into())));
    }
    println!("\n$ xlb status");
    let out = daemon.xlb(&["status"])?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("  {line}");
    }
    report(&clock, &timeline, &logins, dropped, &servers, model)
}

/// The change, the detection and the rollback, printed as they happen.
fn run_timeline(
    clock: &Clock,
    daemon: &Daemon,
    servers: &LoginServers,
    client: &LoginClient,
    bad: &Path,
) -> anyhow::Result<Timeline> {
    let mut tl = Timeline::default();
    let bad_name = bad.display().to_string();
    let mut next_second = 1.0;
    let mut last_bake = String::new();
    let mut last_verdict = String::new();
    let hard_stop = CHANGE_AT + ROLLBACK_DEADLINE + AFTER_ROLLBACK + 5.0;
    // Bounded: at most one iteration per 100 ms up to the hard stop.
    for _ in 0..((hard_stop * 10.0) as usize + 10) {
        if INTERRUPTED.load(Ordering::Relaxed) {
            clock.say("interrupted; cleaning up");
            break;
        }
        let now = clock.now();
        if now >= hard_stop {
            break;
        }
        if let Some(rb) = tl.rollback
            && now >= rb + AFTER_ROLLBACK
        {
            clock.say(format!(
                "{AFTER_ROLLBACK:.0} s after the rollback: stopping the logins"
            ));
            break;
        }
        if let Some(change) = tl.change
            && tl.rollback.is_none()
            && now >= change + ROLLBACK_DEADLINE
        {
            clock.say(format!(
                "no rollback within {ROLLBACK_DEADLINE:.0} s of the change: stopping"
            ));
            break;
        }

        // Once a second: what the users saw in the last second.
        if now >= next_second {
            let recent: Vec<Login> = client
                .logins
                .lock()
                .unwrap()
                .iter()
                .filter(|l| {
                    let done = clock.of(l.due + l.latency);
                    done >= next_second - 1.0 && done < next_second
                })
                .cloned()
                .collect();
            let failed = recent.iter().filter(|l| l.result.is_err()).count();
            let slow = recent
                .iter()
                .filter(|l| l.result.is_ok() && l.latency > SLOW)
                .count();
            let queues: Vec<String> = servers
                .servers
                .iter()
                .filter(|s| HOT.contains(&s.name.as_str()))
                .map(|s| format!("{} {:.1}s", s.name, s.backlog().as_secs_f64()))
                .collect();
            clock.say(format!(
                "logins answered in the last second: {:3}, failed {:3}, slow (>1 s) {:3}; queue wait {}",
                recent.len(),
                failed,
                slow,
                queues.join(", ")
            ));
            next_second += 1.0;
        }

        if tl.change.is_none() && now >= CHANGE_AT {
            the_change(clock, daemon, &bad_name, &mut tl)?;
            continue;
        }

        if tl.change.is_some() && tl.rollback.is_none() {
            let status = daemon.status()?;
            let bake = &status["bake"];
            let bake_state = bake["state"].as_str().unwrap_or("none").to_string();
            if bake_state != last_bake {
                clock.say(format!(
                    "xlb status: bake of revision {}: {bake_state}",
                    bake["revision"]
                ));
                last_bake = bake_state.clone();
            }
            let vip = &status["vips"][0];
            let verdict = vip["imbalance"]["state"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            if verdict != last_verdict {
                clock.say(format!(
                    "xlb status: verdict against weights (not the bake's capacity view): {verdict} {}",
                    vip["imbalance"]["reason"].as_str().unwrap_or("")
                ));
                last_verdict = verdict;
            }
            if tl.skew_seen.is_none() {
                let capacity_share = 1.0 / BACKENDS as f64;
                let hot: Vec<(String, f64)> = vip["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|b| HOT.contains(&b["name"].as_str().unwrap_or("")))
                    .filter_map(|b| {
                        Some((
                            b["name"].as_str()?.to_string(),
                            b["window"]["new_flows"].as_f64()?,
                        ))
                    })
                    .collect();
                if hot.iter().any(|(_, s)| *s >= 1.5 * capacity_share) {
                    tl.skew_seen = Some(clock.now());
                    let detail: Vec<String> = hot
                        .iter()
                        .map(|(n, s)| {
                            format!(
                                "{n} {:.1}% ({:.1}x its capacity share)",
                                100.0 * s,
                                s / capacity_share
                            )
                        })
                        .collect();
                    clock.say(format!(
                        "skew visible in xlb status: new flows over the window: {}; the bake judges these shares against capacity and rolls back once they stay off for {}",
                        detail.join(", "),
                        bake_hold()
                    ));
                }
            }
            if bake_state == "rolled_back" {
                rolled_back(clock, daemon, bake, &mut tl)?;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tl.end = clock.now();
    Ok(tl)
}

/// t ≈ 5 s: plan the bad change (refused), then force it.
fn the_change(clock: &Clock, daemon: &Daemon, bad: &str, tl: &mut Timeline) -> anyhow::Result<()> {
    clock.say(format!(
        "THE BAD CHANGE: weights of {} raised from 1 to {BAD_WEIGHT} (bad.toml)",
        HOT.join(" and ")
    ));
    let out = daemon.xlb(&["plan", bad])?;
    show_output("xlb plan bad.toml", &out);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(1) && text.contains(HOT[0]) {
        let line = text
            .lines()
            .find(|l| l.contains("max_capacity_ratio") && l.contains(HOT[0]))
            .or_else(|| text.lines().find(|l| l.contains(HOT[0]) && l.contains('%')))
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        clock.say(format!("xlb plan refused it (exit 1): {line}"));
        tl.plan_refused = Some(line);
    } else {
        clock.say("xlb plan did NOT refuse the change");
    }
    clock.say("forcing it through anyway, as in the outage");
    let out = daemon.xlb(&[
        "apply",
        bad,
        "--force",
        "-m",
        "incident replay: bad weights",
    ])?;
    show_output(
        "xlb apply bad.toml --force -m \"incident replay: bad weights\"",
        &out,
    );
    if !out.status.success() {
        bail!("the forced apply failed: {out:?}");
    }
    let history = history(daemon)?;
    let rev = history
        .last()
        .context("no revision after the apply")?
        .clone();
    let at = clock.of_unix(
        rev["created_at_unix_seconds"]
            .as_f64()
            .unwrap_or(xlb_core::clock::unix_now()),
    );
    tl.change = Some(at);
    clock.say(format!(
        "revision {} is live (made at {at:.2}s): {} and {} now get {BAD_WEIGHT}/{} of new logins each",
        rev["number"],
        HOT[0],
        HOT[1],
        2 * BAD_WEIGHT as usize + BACKENDS - 2
    ));
    Ok(())
}

fn history(daemon: &Daemon) -> anyhow::Result<Vec<Value>> {
    let out = daemon.xlb(&["-o", "json", "history"])?;
    if !out.status.success() {
        bail!(
            "xlb history failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["revisions"].as_array().cloned().unwrap_or_default())
}

fn rolled_back(
    clock: &Clock,
    daemon: &Daemon,
    bake: &Value,
    tl: &mut Timeline,
) -> anyhow::Result<()> {
    let reason = bake["reason"].as_str().unwrap_or("").to_string();
    let revs = history(daemon)?;
    let bad_rev = bake["revision"].as_u64();
    let bad = revs.iter().find(|r| r["number"].as_u64() == bad_rev);
    let rb = revs
        .iter()
        .find(|r| r["number"].as_u64() == bake["rollback_revision"].as_u64());
    let (Some(bad), Some(rb)) = (bad, rb) else {
        bail!("rolled back, but the revisions are not in xlb history: {revs:?}");
    };
    tl.history_ok = bad["outcome"]["type"] == "rolled_back"
        && rb["kind"]["type"] == "automatic_rollback"
        && rb["kind"]["to"] == bake["rollback_to"];
    let at = clock.of_unix(
        rb["created_at_unix_seconds"]
            .as_f64()
            .unwrap_or(xlb_core::clock::unix_now()),
    );
    tl.rollback = Some(at);
    tl.rollback_reason = Some(reason.clone());
    let change = tl.change.unwrap_or(at);
    clock.say(format!(
        "AUTOMATIC ROLLBACK: revision {} (back to revision {}) made at {at:.2}s, {:.2} s after the forced apply",
        rb["number"],
        bake["rollback_to"],
        at - change
    ));
    clock.say(format!("reason: {reason}"));
    let out = daemon.xlb(&["history"])?;
    show_output("xlb history", &out);
    Ok(())
}

/// Logins due in [from, to): (count, failed, slow, worst latency).
fn tally(clock: &Clock, logins: &[Login], from: f64, to: f64) -> (usize, usize, usize, f64) {
    let mut n = 0;
    let mut failed = 0;
    let mut slow = 0;
    let mut worst: f64 = 0.0;
    for l in logins {
        let t = clock.of(l.due);
        if t < from || t >= to {
            continue;
        }
        n += 1;
        match l.result {
            Err(_) => failed += 1,
            Ok(_) if l.latency > SLOW => slow += 1,
            Ok(_) => {}
        }
        worst = worst.max(l.latency.as_secs_f64());
    }
    (n, failed, slow, worst)
}

/// 894623.4 -> "895,000" (three significant digits are plenty here).
fn thousands(x: f64) -> String {
    let digits = x.max(0.0).round().to_string().len() as u32;
    let unit = 10f64.powi(digits.saturating_sub(3) as i32);
    let rounded = ((x / unit).round() * unit) as u64;
    let s = rounded.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pct(a: usize, b: usize) -> f64 {
    100.0 * a as f64 / b.max(1) as f64
}

fn report(
    clock: &Clock,
    tl: &Timeline,
    logins: &[Login],
    dropped: u64,
    servers: &LoginServers,
    model: Model,
) -> anyhow::Result<Missed> {
    println!("\nper second (by when the login was due):");
    println!(
        "  {:>5}  {:>6}  {:>6}  {:>6}",
        "t", "logins", "failed", "slow"
    );
    let last = logins.last().map_or(0.0, |l| clock.of(l.due));
    for s in 0..=(last as usize) {
        let (n, failed, slow, _) = tally(clock, logins, s as f64, s as f64 + 1.0);
        let mark = match (tl.change, tl.rollback) {
            (Some(c), _) if (c as usize) == s => "  <- bad change forced",
            (_, Some(r)) if (r as usize) == s => "  <- automatic rollback",
            _ => "",
        };
        println!("  {s:>4}s  {n:>6}  {failed:>6}  {slow:>6}{mark}");
    }

    let change = tl.change.unwrap_or(f64::INFINITY);
    let rollback = tl.rollback.unwrap_or(tl.end.max(change));
    let end = f64::INFINITY;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for l in logins {
        if let Err(e) = &l.result {
            *errors.entry(e.clone()).or_default() += 1;
        }
    }
    println!("\nsummary");
    println!(
        "  {:<20} {:>12}  {:>6}  {:>6}  {:>7}  {:>9}  {:>13}",
        "phase", "due (s)", "logins", "failed", "failed%", "slow(>1s)", "worst latency"
    );
    let phases = [
        ("before the change", 0.0, change),
        ("bad revision live", change, rollback),
        ("after the rollback", rollback, end),
        ("whole run", 0.0, end),
    ];
    let mut whole = (0, 0);
    for (name, from, to) in phases {
        let (n, failed, slow, worst) = tally(clock, logins, from, to);
        let span = format!(
            "{:.2}–{}",
            if from.is_finite() { from } else { 0.0 },
            if to.is_finite() {
                format!("{to:.2}")
            } else {
                format!("{last:.2}")
            }
        );
        println!(
            "  {name:<20} {span:>12}  {n:>6}  {failed:>6}  {:>6.3}%  {slow:>9}  {worst:>12.2}s",
            pct(failed, n)
        );
        whole = (n, failed);
    }
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|(e, n)| format!("{n} × {e}")).collect();
        println!("  failures: {}", list.join("; "));
    }
    let rollback_seconds = tl.rollback.zip(tl.change).map(|(r, c)| r - c);
    match rollback_seconds {
        Some(s) => println!(
            "  rollback: {s:.2} s after the forced apply (revision timestamps); skew visible in xlb status after {:.2} s",
            tl.skew_seen.map_or(f64::NAN, |k| k - change)
        ),
        None => println!("  rollback: none"),
    }
    let failed_at: Vec<f64> = logins
        .iter()
        .filter(|l| l.result.is_err())
        .map(|l| clock.of(l.due) - change)
        .collect();
    if let (Some(first), Some(last)) = (failed_at.first(), failed_at.last()) {
        println!("  failed logins were due from {first:+.2} s to {last:+.2} s after the change");
    }
    // The client stays open loop only while a worker is free for every login.
    let mut edges: Vec<(Instant, i32)> = logins
        .iter()
        .flat_map(|l| [(l.due, 1), (l.due + l.latency, -1)])
        .collect();
    edges.sort();
    let peak = edges
        .iter()
        .scan(0i32, |n, (_, d)| {
            *n += d;
            Some(*n)
        })
        .max()
        .unwrap_or(0);
    println!(
        "  client: at most {peak} logins in flight at once ({CLIENT_WORKERS} workers); {} could not start for want of a worker",
        dropped
    );

    // What the servers saw while the bad revision was live, and what the
    // same overload would have cost for the whole real outage.
    let mut fill_seconds = None;
    if tl.change.is_some() {
        println!("\nservers while the bad revision was live ({change:.2}–{rollback:.2}s):");
        let span = (rollback - change).max(0.001);
        let mut arrival_rate = 0.0;
        let mut excess_rate = 0.0;
        for s in &servers.servers {
            let events = s.events.lock().unwrap();
            let during: Vec<_> = events
                .iter()
                .filter(|e| {
                    let t = clock.of(e.arrival);
                    t >= change && t < rollback
                })
                .collect();
            let rate = during.len() as f64 / span;
            arrival_rate += rate;
            excess_rate += (rate - model.capacity_per_second as f64).max(0.0);
            let refused_all = events.iter().filter(|e| e.waited.is_none()).count();
            let worst = events
                .iter()
                .filter_map(|e| e.waited)
                .max()
                .unwrap_or_default();
            if HOT.contains(&s.name.as_str()) || refused_all > 0 {
                println!(
                    "  {}: {rate:.0} logins/s arriving against {}/s; longest queue wait {:.2} s; refused {} in the whole run",
                    s.name,
                    model.capacity_per_second,
                    worst.as_secs_f64(),
                    refused_all
                );
            }
        }
        let fill = model.max_wait.as_secs_f64() * model.capacity_per_second as f64
            / (excess_rate / HOT.len() as f64).max(1.0);
        let fraction = excess_rate / arrival_rate.max(1.0);
        println!(
            "\nwithout the automatic rollback (the measured overload, held for the real outage's 2 h 45 min):"
        );
        println!(
            "  the overloaded servers' queues fill after ~{fill:.1} s; from then on {excess_rate:.0} of {arrival_rate:.0} logins/s are refused: {:.0}% of all logins failing",
            100.0 * fraction
        );
        println!(
            "  over 2 h 45 min: ~{} failed logins of ~{} ({:.0}%); the outage itself: 30%",
            thousands(excess_rate * (OUTAGE_SECONDS - fill)),
            thousands(arrival_rate * OUTAGE_SECONDS),
            100.0 * fraction * (OUTAGE_SECONDS - fill) / OUTAGE_SECONDS
        );
        fill_seconds = Some(fill);

        // The same recorded arrivals through other queue limits (the
        // admission rule is deterministic; the clients are open loop).
        let mut line = String::new();
        for wait in [0.0, 1.0, 2.0, 3.0, 5.0] {
            let m = Model {
                max_wait: Duration::from_secs_f64(wait),
                ..model
            };
            let refused: usize = servers
                .servers
                .iter()
                .map(|s| {
                    let arrivals: Vec<Instant> =
                        s.events.lock().unwrap().iter().map(|e| e.arrival).collect();
                    refused_under(m, &arrivals)
                })
                .sum();
            let _ = write!(
                line,
                "{}{wait:.0} s: {refused} ({:.2}%)",
                if line.is_empty() { "" } else { "; " },
                pct(refused, whole.0)
            );
        }
        println!(
            "\nthe same arrivals through other queue limits (the admission rule replayed offline; the clients are open loop):"
        );
        println!("  refused logins with a queue of {line}");
    }

    println!("\ngoals");
    let mut missed = Vec::new();
    let mut goal = |ok: bool, text: String| {
        println!("  [{}] {text}", if ok { " ok " } else { "MISS" });
        if !ok {
            missed.push(text);
        }
    };
    goal(
        tl.plan_refused.is_some(),
        format!(
            "xlb plan refuses the change (exit 1) naming {}: {}",
            HOT[0],
            tl.plan_refused.as_deref().unwrap_or("not refused")
        ),
    );
    goal(
        rollback_seconds.is_some_and(|s| s <= GOAL_ROLLBACK_SECONDS) && tl.history_ok,
        format!(
            "automatic rollback within {GOAL_ROLLBACK_SECONDS:.0} s of the change, recorded in xlb history: {}",
            rollback_seconds.map_or("none".into(), |s| format!("{s:.2} s"))
        ),
    );
    goal(
        whole.0 > 0 && (whole.1 as f64) < GOAL_FAILED_FRACTION * whole.0 as f64,
        format!(
            "fewer than {:.1}% failed logins over the run: {:.3}% ({} of {})",
            100.0 * GOAL_FAILED_FRACTION,
            pct(whole.1, whole.0),
            whole.1,
            whole.0
        ),
    );
    if let (Some(fill), Some(rb)) = (fill_seconds, rollback_seconds)
        && fill < rb
    {
        println!(
            "  (with {:?} of queue the overloaded servers start refusing ~{fill:.1} s into the overload; the rollback came {rb:.2} s after the change)",
            model.max_wait
        );
    }
    if !missed.is_empty() {
        return Ok(Missed(Some(format!(
            "{} goal(s) missed: {}",
            missed.len(),
            missed.join("; ")
        ))));
    }
    println!("  every goal met");
    Ok(Missed(None))
}
