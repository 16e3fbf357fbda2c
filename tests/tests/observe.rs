//! Seeing the split, end to end, under real traffic in the namespace testbed:
//! a real Prometheus server scrapes the daemon with a copy of the shipped
//! rules (short `for:` and windows); its recorded shares match what the
//! client saw; every dashboard expression returns data; the status page
//! renders in headless Chromium; `xlb top` prints parseable lines. Then a
//! Maglev table is skewed behind the daemon's back (written straight into
//! the kernel map): the daemon's verdict, its status and the Prometheus
//! alerts report it, and `xlb repair` brings the split back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use aya::maps::{Array, ArrayOfMaps, Map, MapData};
use tests::client::{Proto, Tally, drive_paced};
use tests::prom::{Prometheus, fast_rules};
use tests::servers::Servers;
use tests::testbed::{self, TCP_PORT, Testbed, VIP4};
use tests::xlbd::Daemon;

const METRICS: &str = "127.0.0.1:9470";
/// Rate windows of the test copy of the rules (the shipped ones use 1m/5m).
const WINDOW: &str = "10s";
const WINDOW_SECONDS: u64 = 10;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Weights 1:1:2, and a detector that decides within seconds.
fn config() -> String {
    testbed::config(&[1, 1, 2]).replacen(
        "hash_seed = 1\n",
        "hash_seed = 1\n\n[imbalance]\nhold = \"2s\"\nwindow = \"4s\"\nmin_new_flow_rate = 5\n",
        1,
    )
}

#[test]
fn prometheus_dashboard_status_page_top_and_drift() {
    tests::require_privileges!();
    tests::in_workdir("observe", run);
}

fn run(dir: &std::path::Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xo", 3)?;
    let _servers = Servers::start(&bed)?;
    let config_path = dir.join("xlb.toml");
    std::fs::write(&config_path, config())?;
    let daemon = Daemon::start(&bed.lb.ns, &config_path, dir)?;
    let shipped = std::fs::read_to_string(root().join("deploy/prometheus/xlb-rules.yml"))?;
    let prom = Prometheus::start(
        &bed.lb.ns,
        METRICS,
        &fast_rules(&shipped, "3s", WINDOW),
        &dir.join("prometheus"),
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    let target = SocketAddr::new(VIP4.into(), TCP_PORT);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let traffic =
            scope.spawn(|| drive_paced(&bed.client.ns, target, Proto::Tcp, 400, stop.clone(), 240));
        let watched = watch(&bed, &daemon, &prom);
        stop.store(true, Ordering::Relaxed);
        let exchanges = traffic.join().expect("traffic thread");
        let tally = Tally::of(&exchanges);
        // Skewing the table moves flows between backends, which is fine:
        // connections are short. None may fail.
        ensure!(
            tally.failures.is_empty(),
            "{} of {} exchanges failed, first: {:?}",
            tally.failures.len(),
            exchanges.len(),
            tally.failures.first()
        );
        let recorded = watched?;
        // The recorded share over the window before the check, against what
        // the client saw in that window.
        let window: Vec<_> = exchanges
            .iter()
            .filter(|e| {
                e.started >= recorded.at - Duration::from_secs(WINDOW_SECONDS)
                    && e.started < recorded.at
            })
            .collect();
        let seen = Tally::of(window.iter().copied());
        ensure!(seen.total_ok() > 500, "too little traffic: {seen:?}");
        for (backend, share) in &recorded.shares {
            let sent = seen.share(backend);
            eprintln!("{backend}: Prometheus {share:.3}, client {sent:.3}");
            ensure!(
                (share - sent).abs() <= 0.03,
                "{backend}: recorded share {share:.3} vs {sent:.3} sent (more than 3 points)"
            );
        }
        Ok(())
    })?;
    drop(prom);
    drop(daemon);
    Ok(())
}

/// What Prometheus recorded, and when it was asked.
struct Recorded {
    at: Instant,
    shares: BTreeMap<String, f64>,
}

fn watch(bed: &Testbed, daemon: &Daemon, prom: &Prometheus) -> anyhow::Result<Recorded> {
    // 1. The recorded new-flow share per backend, once the window is full.
    let recorded = prom.wait_for("recorded shares of web", Duration::from_secs(60), |p| {
        let rows = p.query("xlb:backend_new_flow_share:ratio1m{vip=\"web\"}")?;
        let up = p.query("xlb_backend_new_flows_total{vip=\"web\"}")?;
        if rows.len() != 3 || up.is_empty() {
            return Ok(None);
        }
        // Wait until the rate window holds traffic only.
        let oldest = p.query(&format!(
            "min(count_over_time(xlb_backend_new_flows_total{{vip=\"web\"}}[{WINDOW}]))"
        ))?;
        if oldest
            .first()
            .is_none_or(|(_, n)| *n < WINDOW_SECONDS as f64 - 1.0)
        {
            return Ok(None);
        }
        let shares = rows
            .into_iter()
            .map(|(labels, v)| (labels["backend"].as_str().unwrap_or("?").to_string(), v))
            .collect();
        Ok(Some(Recorded {
            at: Instant::now(),
            shares,
        }))
    })?;
    // Expected share as Prometheus recomputes it from weights.
    let expected = prom.query("xlb:backend_expected_share:ratio{vip=\"web\"}")?;
    ensure!(expected.len() == 3, "expected shares: {expected:?}");

    // 2. The daemon's own verdict: balanced.
    let status = daemon.status()?;
    let web = vip(&status, "web")?;
    ensure!(
        web["imbalance"]["state"] == "ok",
        "web's verdict with 1:1:2 traffic at 1:1:2 weights: {}",
        web["imbalance"]
    );

    // 3. A config change (the same file again), so the dashboard's
    // annotation has something to show; then every dashboard expression.
    let out = daemon.xlb(&["apply", daemon_config(daemon)?.as_str()])?;
    ensure!(out.status.success(), "re-apply: {out:?}");
    std::thread::sleep(Duration::from_secs(3));
    dashboard_returns_data(prom)?;

    // 4. The status page, in headless Chromium, from inside the LB's
    // namespace where the daemon's loopback address is.
    status_page(bed)?;

    // 5. `xlb top` off a terminal: one logfmt line per interval.
    top_lines(daemon)?;

    // 6. Skew web's table behind the daemon's back.
    skew_table(bed, daemon)?;
    let status = wait_status(daemon, "drift and table skew reported", |s| {
        let web = vip(s, "web")?;
        Ok(web["drift"]["drifted"] == true
            && web["imbalance"]["state"] == "imbalanced"
            && web["imbalance"]["cause"] == "table"
            && web["imbalance"]["backend"] == "b1")
    })?;
    let text = daemon.xlb(&["status"])?;
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    ensure!(
        text.contains("web: IMBALANCED (table skew)") && text.contains("TABLE DRIFT"),
        "xlb status:\n{text}"
    );
    eprintln!("verdict: {}", vip(&status, "web")?["imbalance"]);
    for alert in ["XlbTableDrift", "XlbBackendSkewed", "XlbImbalanceDetected"] {
        prom.wait_for(&format!("{alert} firing"), Duration::from_secs(60), |p| {
            Ok(p.firing()?.into_iter().find(|a| {
                a["alertname"] == alert
                    && a["vip"] == "web"
                    && (alert != "XlbBackendSkewed" || a["backend"] == "b1")
            }))
        })?;
    }

    // 7. Repair: the applied tables come back, and so does the split.
    let out = daemon.xlb(&["repair"])?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("repaired web"),
        "xlb repair: {out:?}"
    );
    wait_status(daemon, "drift cleared and web balanced again", |s| {
        let web = vip(s, "web")?;
        let b1 = &web["backends"][0];
        let share = b1["window"]["new_flows"].as_f64().unwrap_or(1.0);
        Ok(web["drift"]["drifted"] == false
            && web["imbalance"]["state"] == "ok"
            && (share - 0.25).abs() < 0.05)
    })?;
    prom.wait_for("XlbTableDrift resolved", Duration::from_secs(60), |p| {
        let firing = p.firing()?;
        Ok((!firing.iter().any(|a| a["alertname"] == "XlbTableDrift")).then_some(()))
    })?;
    Ok(recorded)
}

fn vip<'a>(status: &'a serde_json::Value, name: &str) -> anyhow::Result<&'a serde_json::Value> {
    status["vips"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == name))
        .with_context(|| format!("no VIP {name} in status"))
}

fn daemon_config(daemon: &Daemon) -> anyhow::Result<String> {
    let dir = daemon.socket.parent().context("socket dir")?;
    Ok(dir.join("xlb.toml").display().to_string())
}

fn wait_status(
    daemon: &Daemon,
    what: &str,
    mut ok: impl FnMut(&serde_json::Value) -> anyhow::Result<bool>,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let s = daemon.status()?;
        if ok(&s)? {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within 40 s; last status: {s}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every panel target and annotation of the shipped dashboard, with the
/// dashboard's variables filled in, returns at least one series.
fn dashboard_returns_data(prom: &Prometheus) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(root().join("deploy/grafana/xlb-dashboard.json"))?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)?;
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    ensure!(exprs.len() >= 8, "only {} expressions found", exprs.len());
    let mut empty = Vec::new();
    for expr in &exprs {
        let filled = expr
            .replace("$__rate_interval", WINDOW)
            .replace("$__interval", "5s")
            .replace("$__range", "1m")
            .replace("${vip:regex}", "web")
            .replace("${vip}", "web")
            .replace("$vip", "web");
        let rows = prom
            .query(&filled)
            .with_context(|| format!("dashboard expression {expr}"))?;
        if rows.is_empty() {
            empty.push(filled);
        }
    }
    ensure!(
        empty.is_empty(),
        "dashboard expressions without data: {empty:#?}"
    );
    eprintln!("all {} dashboard expressions return data", exprs.len());
    Ok(())
}

/// `expr` fields of panel targets and annotations, anywhere in the JSON
/// (rows nest panels), but not the template variables' queries.
fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                if k == "templating" {
                    continue;
                }
                if k == "expr"
                    && let Some(s) = child.as_str()
                    && !s.is_empty()
                {
                    out.push(s.to_string());
                }
                collect_exprs(child, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

fn status_page(bed: &Testbed) -> anyhow::Result<()> {
    let prefix = bed.lb.ns.exec_prefix();
    let page = tests::browser::load(&format!("http://{METRICS}/"), &prefix, 4000, (1280, 900))?;
    for b in ["b1", "b2", "b3"] {
        ensure!(
            page.dom.contains(&format!("data-backend=\"{b}\"")),
            "backend {b} missing from the status page: {}",
            page.dom
        );
    }
    ensure!(page.dom.contains("data-vip=\"web\""), "no web card");
    tests::browser::png_is_rendered(&page.screenshot_png)?;
    if std::env::var_os("XLB_WRITE_SCREENSHOT").is_some() {
        std::fs::write(
            root().join("docs/status-page-live.png"),
            &page.screenshot_png,
        )?;
    }
    Ok(())
}

fn top_lines(daemon: &Daemon) -> anyhow::Result<()> {
    let out = daemon.xlb(&["top", "--count", "2", "--interval", "300ms"])?;
    ensure!(out.status.success(), "xlb top: {out:?}");
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    ensure!(lines.len() == 2, "want 2 lines, got:\n{text}");
    for line in lines {
        let fields: BTreeMap<&str, &str> = line
            .split(' ')
            .map(|kv| kv.split_once('=').context("key=value"))
            .collect::<anyhow::Result<_>>()?;
        for b in ["b1", "b2", "b3"] {
            let observed: f64 = fields
                .get(format!("web.{b}.observed").as_str())
                .with_context(|| format!("web.{b}.observed in {line}"))?
                .parse()?;
            let expected: f64 = fields[format!("web.{b}.expected").as_str()].parse()?;
            ensure!(
                (observed - expected).abs() < 0.1,
                "{b}: observed {observed} vs expected {expected} in {line}"
            );
        }
        ensure!(fields.get("web.state") == Some(&"ok"), "{line}");
    }
    Ok(())
}

/// Write web's Maglev table straight into the kernel map: about 60% of the
/// slots of other backends now name b1 (25% -> ~70% of the table).
fn skew_table(bed: &Testbed, daemon: &Daemon) -> anyhow::Result<()> {
    let status = daemon.status()?;
    let web = vip(&status, "web")?;
    let vip_id = web["id"].as_u64().context("web id")? as u32;
    let b1 = web["backends"][0]["id"].as_u64().context("b1 id")? as u32;
    // This daemon's maps, not another test's: the program attached to the
    // LB's eth0, and its map named XLB_MAGLEV_TABL (the kernel keeps 15
    // characters of a map name).
    let net: serde_json::Value = serde_json::from_str(
        &bed.lb
            .ns
            .exec(&["bpftool", "-j", "net", "show", "dev", "eth0"])?,
    )?;
    let prog_id = net[0]["xdp"][0]["id"]
        .as_u64()
        .with_context(|| format!("no XDP program on the LB's eth0: {net}"))?
        as u32;
    let program = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .context("the attached program is not loaded")?;
    let outer = program
        .map_ids()?
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| aya::maps::MapInfo::from_id(id).ok())
        .find(|m| m.name_as_str() == Some("XLB_MAGLEV_TABL"))
        .context("the program has no XLB_MAGLEV_TABLES map")?;
    let outer = MapData::from_id(outer.id())?;
    let outer: ArrayOfMaps<MapData, MapData> = ArrayOfMaps::try_from(Map::ArrayOfMaps(outer))?;
    let inner = outer.get(&vip_id, 0)?;
    let mut table: Array<MapData, u32> = Array::try_from(Map::Array(inner))?;
    let mut moved = 0;
    for i in 0..table.len() {
        if table.get(&i, 0)? != b1 && i % 10 < 6 {
            table.set(i, b1, 0)?;
            moved += 1;
        }
    }
    eprintln!(
        "skewed web's table: {moved} of {} slots now name b1",
        table.len()
    );
    Ok(())
}
