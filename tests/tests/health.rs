//! Health checks end to end in the namespace testbed (issue 7): the daemon
//! checks each backend from the LB's namespace, takes a backend whose server
//! died out of the Maglev table (only its slots move: the live table is read
//! from the kernel before and after), puts it back after `rise` passed
//! checks, and applies the all-down policy (fail-open or fail-closed) when
//! every backend of a VIP is down. Needs root.
//!
//! Namespaces `xlbhc-*`; addresses in 198.18.0.0/15.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use aya::maps::{Array, ArrayOfMaps, Map, MapData};
use tests::confine::Bpffs;
use tests::echo::{EchoServers, LongConnections, Pace, probe};
use tests::netns::Netns;
use tests::testbed::{Host, Testbed, VIP4};
use tests::xlbd::Daemon;

/// The echo service the VIPs of the first test balance.
const PORT: u16 = 8072;
/// Slots per table: small enough to read every 100 ms.
const TABLE_SIZE: u32 = 16381;
/// What a slot of a closed table names (`state::NO_BACKEND`).
const NO_BACKEND: u32 = u32::MAX;
/// The brief's bound: out of the table within 3 s (interval 1 s, fall 2).
const DOWN_WITHIN: Duration = Duration::from_secs(3);

/// A VIP over `backends` (name, weight), with a health check.
fn vip(name: &str, port: u16, backends: &[(&Host, u32)], health: &str) -> String {
    let mut out = format!(
        "\n[[vip]]\nname = \"{name}\"\naddress = \"{VIP4}\"\nport = {port}\nprotocol = \"tcp\"\n\
         table_size = {TABLE_SIZE}\n\n[vip.health]\n{health}"
    );
    for (b, weight) in backends {
        out.push_str(&format!(
            "\n[[vip.backend]]\nname = \"{}\"\naddress = \"{}\"\nmac = \"{}\"\nweight = {weight}\n",
            b.name, b.v4, b.mac
        ));
    }
    out
}

const CHECK: &str = "interval = \"1s\"\ntimeout = \"500ms\"\nfall = 2\nrise = 2\n";

/// This daemon's Maglev table of VIP `vip_id`, slot by slot (backend ids):
/// the map of the program attached to the LB's eth0, not another test's.
fn live_table(lb: &Netns, vip_id: u32) -> anyhow::Result<Vec<u32>> {
    let net: serde_json::Value =
        serde_json::from_str(&lb.exec(&["bpftool", "-j", "net", "show", "dev", "eth0"])?)?;
    let prog_id = net[0]["xdp"][0]["id"]
        .as_u64()
        .with_context(|| format!("no XDP program on the LB's eth0: {net}"))?
        as u32;
    let program = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .context("the attached program is not loaded")?;
    // The kernel keeps 15 characters of a map name.
    let outer = program
        .map_ids()?
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| aya::maps::MapInfo::from_id(id).ok())
        .find(|m| m.name_as_str() == Some("XLB_MAGLEV_TABL"))
        .context("the program has no XLB_MAGLEV_TABLES map")?;
    let outer: ArrayOfMaps<MapData, MapData> =
        ArrayOfMaps::try_from(Map::ArrayOfMaps(MapData::from_id(outer.id())?))?;
    let table: Array<MapData, u32> = Array::try_from(Map::Array(outer.get(&vip_id, 0)?))?;
    (0..table.len())
        .map(|i| Ok(table.get(&i, 0)?))
        .collect::<anyhow::Result<_>>()
}

/// A VIP of `xlb status -o json`.
fn vip_status<'a>(
    status: &'a serde_json::Value,
    name: &str,
) -> anyhow::Result<&'a serde_json::Value> {
    status["vips"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == name))
        .with_context(|| format!("no VIP {name} in {status}"))
}

/// A VIP's id and its backends' ids by name.
fn ids(status: &serde_json::Value, name: &str) -> anyhow::Result<(u32, BTreeMap<String, u32>)> {
    let v = vip_status(status, name)?;
    let backends = v["backends"]
        .as_array()
        .context("backends")?
        .iter()
        .map(|b| {
            Ok((
                b["name"].as_str().context("name")?.to_string(),
                b["id"].as_u64().context("id")? as u32,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((v["id"].as_u64().context("VIP id")? as u32, backends))
}

/// The table as the config alone builds it, in kernel ids.
fn config_table(text: &str, vip: &str, ids: &BTreeMap<String, u32>) -> anyhow::Result<Vec<u32>> {
    let config =
        xlb_core::config::parse(text, "health.toml").map_err(|e| anyhow::anyhow!("{e}"))?;
    let d = xlb_core::state::desired(&config, &Default::default())?;
    let v = d
        .vips
        .iter()
        .find(|v| v.config.name == vip)
        .context("VIP in the config")?;
    Ok(v.table
        .slots
        .iter()
        .map(|i| ids[&v.table.names[usize::from(i)]])
        .collect())
}

/// A backend's health in the status (`up`/`down`), None before its first
/// check.
fn health(status: &serde_json::Value, vip: &str, backend: &str) -> Option<String> {
    let v = vip_status(status, vip).ok()?;
    let b = v["backends"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == backend)?;
    b["health"]["last_check_unix_seconds"].as_f64()?;
    b["health"]["state"].as_str().map(str::to_string)
}

/// Poll `f` every 100 ms until it is true or `limit` passed.
fn wait(
    limit: Duration,
    what: &str,
    f: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    tests::wait_until(limit, Duration::from_millis(100), what, f)
}

#[test]
fn a_dead_backend_leaves_the_table_alone_and_comes_back() {
    tests::require_privileges!();
    tests::in_workdir("health-fall-rise", fall_and_rise);
}

fn fall_and_rise(dir: &Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xlbhc-a", 3)?;
    let b = &bed.backends;
    // One echo server per backend, so b2's alone can die.
    let mut servers: Vec<Option<EchoServers>> = b
        .iter()
        .map(|h| EchoServers::start(std::slice::from_ref(h), PORT).map(Some))
        .collect::<anyhow::Result<_>>()?;
    let text = format!(
        "interface = \"eth0\"\nhash_seed = 1\n{}",
        vip("web", PORT, &[(&b[0], 1), (&b[1], 1), (&b[2], 2)], CHECK)
    );
    let config_path = dir.join("xlb.toml");
    std::fs::write(&config_path, &text)?;
    // No bake: this test is about health; outcomes are `applied` (the
    // bake has tests/tests/bake.rs).
    let daemon = Daemon::start_with(&bed.lb.ns, &config_path, dir, &["--bake-window", "0s"])?;
    wait(
        Duration::from_secs(5),
        "every backend checked and up",
        || {
            let s = daemon.status()?;
            Ok(["b1", "b2", "b3"]
                .iter()
                .all(|n| health(&s, "web", n).as_deref() == Some("up")))
        },
    )?;
    let status = daemon.status()?;
    let revision = status["revision"].clone();
    let (vip_id, id) = ids(&status, "web")?;
    let b2 = id["b2"];
    let before = live_table(&bed.lb.ns, vip_id)?;
    let built = config_table(&text, "web", &id)?;
    ensure!(
        before == built,
        "the live table is not the config's at the start"
    );

    // Long-lived connections, spread over the three backends.
    let target = SocketAddr::from((VIP4, PORT));
    let pace = Pace {
        gap: Duration::from_millis(100),
        stall: Duration::from_secs(2),
        max_life: Duration::from_secs(45),
    };
    let long = LongConnections::open(
        &bed.client.ns,
        &vec![target; 30],
        pace,
        Duration::from_millis(10),
    );
    ensure!(
        long.wait_settled(Duration::from_secs(10)),
        "connections did not settle"
    );
    std::thread::sleep(Duration::from_millis(500));

    // b2's server dies: out of the table within 3 s, and only its slots moved.
    let killed = Instant::now();
    servers[1] = None;
    wait(DOWN_WITHIN, "b2 out of the live table", || {
        Ok(!live_table(&bed.lb.ns, vip_id)?.contains(&b2))
    })?;
    let down_after = killed.elapsed();
    ensure!(
        down_after <= DOWN_WITHIN,
        "b2 left the table {down_after:?} after its server was stopped"
    );
    let after = live_table(&bed.lb.ns, vip_id)?;
    let freed: Vec<usize> = (0..before.len()).filter(|&s| before[s] == b2).collect();
    let changed: Vec<usize> = (0..before.len())
        .filter(|&s| before[s] != after[s])
        .collect();
    ensure!(
        changed == freed,
        "{} slots changed, b2 held {}: only its slots may move",
        changed.len(),
        freed.len()
    );
    // Its slots went to b1 and b3 by weight, 1:2 (binomial, 4 sigma).
    let to_b3 = freed.iter().filter(|&&s| after[s] == id["b3"]).count() as f64;
    let n = freed.len() as f64;
    let sigma = (n * 2.0 / 9.0).sqrt();
    ensure!(
        (to_b3 - n * 2.0 / 3.0).abs() < 4.0 * sigma,
        "b3 got {to_b3} of b2's {n} slots, expected about {:.0}",
        n * 2.0 / 3.0
    );
    let status = daemon.status()?;
    let web = vip_status(&status, "web")?;
    let h2 = &web["backends"][1]["health"];
    ensure!(
        h2["state"] == "down" && h2["in_table"] == false,
        "b2's health: {h2}"
    );
    ensure!(
        h2["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "b2's last error: {h2}"
    );
    ensure!(web["backends"][1]["expected_share_ratio"] == 0.0, "{web}");
    ensure!(
        web["drift"]["drifted"] == false,
        "the patched table is not drift: {web}"
    );
    ensure!(status["revision"] == revision, "health made a revision");

    // New connections meanwhile: all answered, none by b2.
    let answers = Netns::in_named(&bed.client.ns.name, move || {
        Ok((0..40)
            .map(|_| probe(target, Duration::from_secs(2)).map(|(_, name)| name))
            .collect::<Vec<_>>())
    })?;
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    ensure!(failed.is_empty(), "new connections failed: {failed:?}");
    ensure!(
        answers.iter().all(|a| a.as_ref().is_ok_and(|n| n != "b2")),
        "a new connection went to b2"
    );

    // An apply meanwhile (the same config, a new revision) keeps b2 out:
    // its tables are built patched, not the config's for a moment.
    let out = daemon.xlb(&[
        "apply",
        config_path.to_str().context("path")?,
        "-m",
        "while b2 is down",
    ])?;
    ensure!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        live_table(&bed.lb.ns, vip_id)? == after,
        "the apply changed the patched table"
    );
    let revision = daemon.status()?["revision"].clone();

    // b2 comes back: after rise (2) passed checks, the table is the
    // config's again.
    let restarted = Instant::now();
    servers[1] = Some(EchoServers::start(&b[1..2], PORT)?);
    wait(Duration::from_secs(5), "the config's table back", || {
        Ok(live_table(&bed.lb.ns, vip_id)? == built)
    })?;
    let up_after = restarted.elapsed();
    // Two checks a second apart: not before about one interval.
    ensure!(
        up_after >= Duration::from_millis(800),
        "b2 came back {up_after:?} after its restart: sooner than rise = 2 allows"
    );
    let status = daemon.status()?;
    let h2 = &vip_status(&status, "web")?["backends"][1]["health"];
    ensure!(
        h2["state"] == "up" && h2["in_table"] == true,
        "b2's health: {h2}"
    );
    ensure!(status["revision"] == revision, "health made a revision");

    // The connections to b1 and b3 kept working throughout, each on its
    // backend.
    let held = long.finish()?;
    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    let mut broken = Vec::new();
    for h in &held {
        let first = h.backends.first().cloned().unwrap_or_default();
        *per_backend.entry(first.clone()).or_default() += 1;
        if first != "b2" && (h.fault.is_some() || h.backends.len() != 1 || h.exchanges < 20) {
            broken.push(format!("{h:?}"));
        }
    }
    ensure!(
        broken.is_empty(),
        "connections to b1/b3 broke:\n{}",
        broken.join("\n")
    );
    ensure!(
        per_backend.get("b1").is_some_and(|&n| n > 0)
            && per_backend.get("b3").is_some_and(|&n| n > 0),
        "connections per backend: {per_backend:?}"
    );
    let log = daemon.log_text();
    ensure!(
        log.contains("backend b2 is DOWN") && log.contains("backend b2 is UP"),
        "the daemon's log:\n{log}"
    );
    eprintln!(
        "b2 out of the table {down_after:?} after its server died ({} of {TABLE_SIZE} slots moved, \
         {to_b3} to b3), back {up_after:?} after it restarted; connections per backend \
         {per_backend:?}, 40 new connections all on b1/b3",
        freed.len()
    );
    Ok(())
}

#[test]
fn every_backend_down_fails_open_or_closed() {
    tests::require_privileges!();
    tests::in_workdir("health-all-down", all_down);
}

fn all_down(dir: &Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xlbhc-b", 2)?;
    let b = &bed.backends;
    // Both VIPs check the echo service on 8075; clients connect to the
    // VIPs' own ports, where nothing listens: a SYN that reaches a backend
    // is refused, one the balancer drops times out.
    const CHECKED: u16 = 8075;
    let mut servers: Vec<Option<EchoServers>> = b
        .iter()
        .map(|h| EchoServers::start(std::slice::from_ref(h), CHECKED).map(Some))
        .collect::<anyhow::Result<_>>()?;
    let members = [(&b[0], 1), (&b[1], 1)];
    let check = format!("{CHECK}port = {CHECKED}\n");
    let text = format!(
        "interface = \"eth0\"\nhash_seed = 1\n{}{}",
        vip("open", 8073, &members, &check),
        vip(
            "closed",
            8074,
            &members,
            &format!("{check}all_down = \"fail_closed\"\n")
        )
    );
    let config_path = dir.join("xlb.toml");
    std::fs::write(&config_path, &text)?;
    let daemon = Daemon::start(&bed.lb.ns, &config_path, dir)?;
    let all = |state: &str| {
        let s = daemon.status()?;
        Ok(["open", "closed"].iter().all(|v| {
            ["b1", "b2"]
                .iter()
                .all(|n| health(&s, v, n).as_deref() == Some(state))
        }))
    };
    wait(Duration::from_secs(5), "every backend up", || all("up"))?;
    let status = daemon.status()?;
    let (open_id, ids_open) = ids(&status, "open")?;
    let (closed_id, ids_closed) = ids(&status, "closed")?;
    let open_built = config_table(&text, "open", &ids_open)?;
    let closed_built = config_table(&text, "closed", &ids_closed)?;

    // Every server dies.
    servers.iter_mut().for_each(|s| *s = None);
    let took = wait(
        DOWN_WITHIN + Duration::from_secs(1),
        "every backend down",
        || all("down"),
    )?;
    wait(Duration::from_secs(1), "the closed table", || {
        Ok(live_table(&bed.lb.ns, closed_id)?
            .iter()
            .all(|&s| s == NO_BACKEND))
    })?;
    // Fail-open keeps the whole table; fail-closed names no backend.
    ensure!(
        live_table(&bed.lb.ns, open_id)? == open_built,
        "the fail-open VIP's table is not the config's"
    );
    let status = daemon.status()?;
    let open = &vip_status(&status, "open")?["health"];
    let closed = &vip_status(&status, "closed")?["health"];
    ensure!(
        open["all_down"] == true
            && open["table"] == "full"
            && open["all_down_policy"] == "fail_open",
        "open: {open}"
    );
    ensure!(
        closed["all_down"] == true && closed["table"] == "closed",
        "closed: {closed}"
    );
    let drops_before = no_backend_drops(&status);
    // The data plane does what the tables say: a SYN to the fail-open VIP
    // reaches a backend (refused: nothing listens there), one to the
    // fail-closed VIP is dropped (a timeout) and counted.
    let (open_try, closed_try) = Netns::in_named(&bed.client.ns.name, || {
        let connect = |port: u16| {
            std::net::TcpStream::connect_timeout(
                &SocketAddr::from((VIP4, port)),
                Duration::from_millis(1500),
            )
            .map(drop)
            .map_err(|e| e.kind())
        };
        Ok((connect(8073), connect(8074)))
    })?;
    ensure!(
        open_try == Err(std::io::ErrorKind::ConnectionRefused),
        "fail-open VIP: {open_try:?}"
    );
    ensure!(
        closed_try == Err(std::io::ErrorKind::TimedOut),
        "fail-closed VIP: {closed_try:?}"
    );
    let drops_after = no_backend_drops(&daemon.status()?);
    ensure!(
        drops_after > drops_before,
        "no no_backend drop counted ({drops_before} -> {drops_after})"
    );

    // b1 comes back: both VIPs serve it alone.
    servers[0] = Some(EchoServers::start(&b[0..1], CHECKED)?);
    let b1s = (ids_open["b1"], ids_closed["b1"]);
    wait(Duration::from_secs(5), "b1 alone in both tables", || {
        Ok(live_table(&bed.lb.ns, open_id)?.iter().all(|&s| s == b1s.0)
            && live_table(&bed.lb.ns, closed_id)?
                .iter()
                .all(|&s| s == b1s.1))
    })?;
    // b2 too: the config's tables again.
    servers[1] = Some(EchoServers::start(&b[1..2], CHECKED)?);
    wait(Duration::from_secs(5), "the config's tables back", || {
        Ok(live_table(&bed.lb.ns, open_id)? == open_built
            && live_table(&bed.lb.ns, closed_id)? == closed_built)
    })?;
    let status = daemon.status()?;
    for v in ["open", "closed"] {
        let h = &vip_status(&status, v)?["health"];
        ensure!(h["all_down"] == false && h["table"] == "full", "{v}: {h}");
        ensure!(
            vip_status(&status, v)?["drift"]["drifted"] == false,
            "{v} drifted"
        );
    }
    eprintln!("every backend down within {took:?}: fail-open kept its table, fail-closed dropped");
    Ok(())
}

/// Packets dropped for want of a backend, from the status.
fn no_backend_drops(status: &serde_json::Value) -> u64 {
    status["drops"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "no_backend"))
        .and_then(|d| d["packets"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_restarted_daemon_keeps_a_dead_backend_out() {
    tests::require_privileges!();
    tests::in_workdir("health-restart", keep_down_across_restart);
}

fn keep_down_across_restart(dir: &Path) -> anyhow::Result<()> {
    const RESTART_PORT: u16 = 8076;
    let bed = Testbed::new("xlbhc-r", 3)?;
    let b = &bed.backends;
    let mut servers: Vec<Option<EchoServers>> = b
        .iter()
        .map(|h| EchoServers::start(std::slice::from_ref(h), RESTART_PORT).map(Some))
        .collect::<anyhow::Result<_>>()?;
    let text = format!(
        "interface = \"eth0\"\nhash_seed = 1\n{}",
        vip(
            "web",
            RESTART_PORT,
            &[(&b[0], 1), (&b[1], 1), (&b[2], 2)],
            CHECK
        )
    );
    let config_path = dir.join("xlb.toml");
    std::fs::write(&config_path, &text)?;
    let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
    let args = ["--bake-window", "0s", "--bpffs", bpffs.arg()];
    let mut daemon = Daemon::start_with(&bed.lb.ns, &config_path, dir, &args)?;
    wait(Duration::from_secs(5), "every backend up", || {
        let s = daemon.status()?;
        Ok(["b1", "b2", "b3"]
            .iter()
            .all(|n| health(&s, "web", n).as_deref() == Some("up")))
    })?;
    let status = daemon.status()?;
    let revision = status["revision"].clone();
    let (vip_id, id) = ids(&status, "web")?;
    let b2 = id["b2"];
    let built = config_table(&text, "web", &id)?;
    ensure!(
        live_table(&bed.lb.ns, vip_id)? == built,
        "the live table is not the config's at the start"
    );

    // b2's server dies; once it is out of the table, the daemon is killed.
    servers[1] = None;
    wait(DOWN_WITHIN, "b2 out of the live table", || {
        Ok(!live_table(&bed.lb.ns, vip_id)?.contains(&b2))
    })?;
    let patched = live_table(&bed.lb.ns, vip_id)?;
    daemon.kill()?;
    drop(daemon);
    let started = Instant::now();
    let daemon = Daemon::start_with(&bed.lb.ns, &config_path, dir, &args)?;
    let ready = started.elapsed();

    // For 3 s (longer than fall × interval), the live table stays the
    // patched one: b2 is never put back.
    let watch = Instant::now();
    let mut polls = 0;
    while watch.elapsed() < Duration::from_secs(3) {
        let live = live_table(&bed.lb.ns, vip_id)?;
        ensure!(
            !live.contains(&b2),
            "b2 is back in the table {:?} after the restarted daemon answered ({} of its \
             slots)",
            watch.elapsed(),
            live.iter().filter(|&&s| s == b2).count()
        );
        ensure!(live == patched, "the restart changed the patched table");
        polls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = daemon.status()?;
    let web = vip_status(&status, "web")?;
    let h2 = &web["backends"][1]["health"];
    ensure!(
        h2["state"] == "down" && h2["in_table"] == false,
        "b2's health after the restart: {h2}"
    );
    ensure!(
        web["health"]["table"] == "without_down" && web["drift"]["drifted"] == false,
        "web after the restart: {web}"
    );
    ensure!(
        status["revision"] == revision,
        "the restart made a revision"
    );
    let log = daemon.log_text();
    ensure!(
        !log.contains("the pinned maps differ") && log.contains("the pinned table is without b2"),
        "the restarted daemon's log:\n{log}"
    );

    // b2's server comes back: after rise (2) passed checks, the config's
    // table again.
    let restarted = Instant::now();
    servers[1] = Some(EchoServers::start(&b[1..2], RESTART_PORT)?);
    wait(Duration::from_secs(5), "the config's table back", || {
        Ok(live_table(&bed.lb.ns, vip_id)? == built)
    })?;
    let up_after = restarted.elapsed();
    ensure!(
        up_after >= Duration::from_millis(800),
        "b2 came back {up_after:?} after its restart: sooner than rise = 2 allows"
    );
    let status = daemon.status()?;
    let h2 = &vip_status(&status, "web")?["backends"][1]["health"];
    ensure!(h2["state"] == "up" && h2["in_table"] == true, "b2: {h2}");
    eprintln!(
        "restart over the pins answered in {ready:?}; b2 stayed out for {polls} polls over 3 s; \
         back {up_after:?} after its server restarted"
    );
    drop(daemon);
    drop(bpffs);
    Ok(())
}
