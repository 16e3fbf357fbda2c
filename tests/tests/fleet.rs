//! `xlb fleet status` against real daemons: three nodes on one segment, each
//! running `xlb run` on its own eth0 and serving /api/status. With the same
//! config they agree (exit 0); a node started with another `hash_seed` is
//! named, with the field and the share of flows it sends elsewhere (exit 1),
//! and the shipped alert `XlbFleetDisagrees` fires in a real Prometheus
//! scraping the three nodes. Then, separately, a node whose backend weight
//! was changed (`xlb weight`): named by `xlb fleet status`, and the alert
//! fires for that VIP alone.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use tests::confine::Bpffs;
use tests::netns::Netns;
use tests::prom::{Prometheus, fast_rules};
use tests::testbed;
use tests::xlbd::{Daemon, describe, xlb_binary};

#[test]
fn a_node_with_another_seed_is_named() {
    tests::require_privileges!();
    tests::in_workdir("fleet", run);
}

/// A node: its namespace (eth0 = 198.18.0.<last> on the switch's bridge),
/// its bpffs and its daemon serving HTTP on <address>:9470.
struct Node {
    url: String,
    /// host:port of /metrics.
    metrics: String,
    daemon: Daemon,
    _bpffs: Bpffs,
    ns: Netns,
}

fn node(switch: &Netns, dir: &Path, last: u8, seed: u32) -> anyhow::Result<Node> {
    let name = format!("n{last}");
    let ns = Netns::new(&format!("xfl-{name}"))?;
    switch.ip(&[
        "link", "add", &name, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ])?;
    switch.ip(&["link", "set", &name, "master", "br0", "up"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    let address = format!("198.18.0.{last}");
    ns.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
    let dir = dir.join(&name);
    std::fs::create_dir_all(&dir)?;
    let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
    let config =
        testbed::config(&[1, 1, 2]).replace("hash_seed = 1", &format!("hash_seed = {seed}"));
    let path = dir.join("xlb.toml");
    std::fs::write(&path, config)?;
    let metrics = format!("{address}:9470");
    let daemon = Daemon::start_with(
        &ns,
        &path,
        &dir,
        &["--bpffs", bpffs.arg(), "--metrics-address", &metrics],
    )?;
    Ok(Node {
        url: format!("http://{metrics}"),
        metrics,
        daemon,
        _bpffs: bpffs,
        ns,
    })
}

/// `xlb -o FORMAT fleet status URL...` run on `from`: (exit code, stdout).
fn fleet(from: &Netns, format: &str, urls: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = Command::new("ip")
        .args(["netns", "exec", &from.name])
        .arg(xlb_binary()?)
        .args(["-o", format, "fleet", "status"])
        .args(urls)
        .output()?;
    Ok((
        out.status.code().context("killed")?,
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

fn run(dir: &Path) -> anyhow::Result<()> {
    let switch = Netns::new("xfl-sw")?;
    switch.ip(&["link", "add", "br0", "type", "bridge"])?;
    switch.ip(&["link", "set", "br0", "up"])?;
    let a = node(&switch, dir, 21, 1)?;
    let b = node(&switch, dir, 22, 1)?;
    let c = node(&switch, dir, 23, 7)?;

    // Two nodes with the same config agree on every VIP.
    let (code, out) = fleet(&a.ns, "table", &[&a.url, &b.url])?;
    ensure!(code == 0, "exit {code}:\n{out}");
    ensure!(out.contains("web ") && out.contains("2/2"), "{out}");

    // The third, on another seed, is named for every VIP, with the field
    // and most flows elsewhere (independent tables over 3 backends: ~2/3).
    let (code, out) = fleet(&a.ns, "json", &[&a.url, &b.url, &c.url])?;
    ensure!(code == 1, "exit {code}:\n{out}");
    let json_end = out.rfind('}').context("no JSON")? + 1;
    let doc: serde_json::Value = serde_json::from_str(&out[..json_end])?;
    ensure!(doc["agree"] == false, "{doc}");
    let vips = doc["vips"].as_array().context("vips")?;
    ensure!(vips.len() == 4, "{doc}");
    for v in vips {
        let differing = v["differing"].as_array().context("differing")?;
        ensure!(differing.len() == 1, "{v}");
        ensure!(differing[0]["node"] == c.url.as_str(), "{v}");
        ensure!(differing[0]["fields"][0] == "hash_seed 1 -> 7", "{v}");
        let elsewhere = differing[0]["flows_elsewhere_ratio"]
            .as_f64()
            .context("ratio")?;
        ensure!((0.5..0.85).contains(&elsewhere), "{v}");
    }
    ensure!(
        out.contains(&format!("web on {}", c.url)),
        "the error names the VIP and the node:\n{out}"
    );

    // A node that does not answer is exit 4, named.
    let (code, out) = fleet(&a.ns, "table", &[&a.url, "http://198.18.0.99:9470"])?;
    ensure!(code == 4, "exit {code}:\n{out}");
    ensure!(out.contains("198.18.0.99"), "{out}");

    // The shipped alert, in a real Prometheus scraping the three nodes: it
    // fires for every VIP (the seed decides them all).
    let firing = disagreeing_vips(&a.ns, &[&a, &b, &c], &dir.join("prom-seed"), 4)?;
    ensure!(
        firing == ["dns", "dns6", "web", "web6"],
        "XlbFleetDisagrees fired for {firing:?}"
    );
    drop(c);

    // Separately: the two nodes on one seed, and b's weight of b3 in `web`
    // changed through its daemon (2 -> 3: inside the safety checks). Named, with the field; the alert fires
    // for `web` alone.
    let out = b.daemon.xlb(&["weight", "web", "b3", "3"])?;
    ensure!(out.status.success(), "xlb weight: {}", describe(&out));
    let (code, out) = fleet(&a.ns, "json", &[&a.url, &b.url])?;
    ensure!(code == 1, "exit {code}:\n{out}");
    let json_end = out.rfind('}').context("no JSON")? + 1;
    let doc: serde_json::Value = serde_json::from_str(&out[..json_end])?;
    let vips = doc["vips"].as_array().context("vips")?;
    let web = vips
        .iter()
        .find(|v| v["vip"] == "web")
        .with_context(|| format!("no VIP web in {doc}"))?;
    let differing = web["differing"].as_array().context("differing")?;
    ensure!(
        differing.len() == 1 && differing[0]["node"] == b.url.as_str(),
        "{web}"
    );
    ensure!(
        differing[0]["fields"][0] == "b3 weight 2 -> 3",
        "the differing fields name backend b3's weight: {web}"
    );
    let firing = disagreeing_vips(&a.ns, &[&a, &b], &dir.join("prom-weight"), 1)?;
    ensure!(firing == ["web"], "XlbFleetDisagrees fired for {firing:?}");
    Ok(())
}

/// Start a Prometheus in `ns` scraping `nodes` with the shipped rules (their
/// `for:` cut to 2 s), wait until `XlbFleetDisagrees` fires for `expect`
/// VIPs (bounded: 60 s) and a little longer, then return the VIPs it fires
/// for, sorted.
fn disagreeing_vips(
    ns: &Netns,
    nodes: &[&Node],
    dir: &Path,
    expect: usize,
) -> anyhow::Result<Vec<String>> {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/xlb-rules.yml"),
    )?;
    let targets: Vec<&str> = nodes.iter().map(|n| n.metrics.as_str()).collect();
    let prom = Prometheus::start_scraping(ns, &targets, &fast_rules(&shipped, "2s", "10s"), dir)?;
    let vips = |prom: &Prometheus| -> anyhow::Result<Vec<String>> {
        let mut vips: Vec<String> = prom
            .firing()?
            .into_iter()
            .filter(|labels| labels["alertname"] == "XlbFleetDisagrees")
            .filter_map(|labels| labels["vip"].as_str().map(str::to_string))
            .collect();
        vips.sort();
        Ok(vips)
    };
    prom.wait_for(
        "XlbFleetDisagrees firing",
        Duration::from_secs(60),
        |prom| Ok((vips(prom)?.len() >= expect).then_some(())),
    )?;
    // Two more evaluations: nothing else starts firing.
    std::thread::sleep(Duration::from_secs(2));
    vips(&prom)
}
