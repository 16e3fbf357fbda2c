//! `xlb fleet status` against real daemons: three nodes on one segment, each
//! running `xlb run` on its own eth0 and serving /api/status. With the same
//! config they agree (exit 0); a node started with another `hash_seed` is
//! named, with the field and the share of flows it sends elsewhere (exit 1).

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, ensure};
use tests::confine::Bpffs;
use tests::netns::Netns;
use tests::testbed;
use tests::xlbd::{Daemon, xlb_binary};

#[test]
fn a_node_with_another_seed_is_named() {
    tests::require_privileges!();
    tests::in_workdir("fleet", run);
}

/// A node: its namespace (eth0 = 198.18.0.<last> on the switch's bridge),
/// its bpffs and its daemon serving HTTP on <address>:9470.
struct Node {
    url: String,
    _daemon: Daemon,
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
        _daemon: daemon,
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
    Ok(())
}
