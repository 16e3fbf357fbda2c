//! The plan tells the truth (issue 19, item 1): for every key a config file
//! may hold (`xlb_core::config::keys::every_key`), a change of it is
//! planned with the exit code the apply then gives: offline (`xlb plan NEW
//! --base OLD`), against the daemon (`xlb plan NEW`), and `xlb apply NEW`
//! agree. Restart-only keys (`keys::RESTART_ONLY`) exit 2 in all three;
//! no other key does. Needs root (a daemon in the namespace testbed).
//!
//! Namespaces `xlbpt-*`; addresses in 198.18.0.0/15.

use std::path::Path;

use anyhow::{Context as _, ensure};
use tests::testbed::{self, Testbed};
use tests::xlbd::{Daemon, describe};
use xlb_core::config::keys;

/// `text` with `line` inserted after the first occurrence of `after`.
fn insert_after(text: &str, after: &str, line: &str) -> String {
    let at = text.find(after).expect("anchor in the config") + after.len();
    format!("{}{line}{}", &text[..at], &text[at..])
}

/// `text` with `line` inserted after every occurrence of `after`.
fn insert_after_all(text: &str, after: &str, line: &str) -> String {
    text.replace(after, &format!("{after}{line}"))
}

/// The first VIP's first backend starts here.
const FIRST_BACKEND: &str = "\n[[vip.backend]]\n";
const TOP: &str = "hash_seed = 1\n";
const WEB: &str = "protocol = \"tcp\"\n";
const SOURCE: &str =
    "[tunnel]\nsource_v4 = \"198.18.200.0/24\"\nsource_v6 = \"2001:db8:200::/96\"\n";

/// A valid config that changes `key` (a path of `every_key`) in `base`.
fn changed(base: &str, key: &str) -> String {
    let top = |line: &str| insert_after(base, TOP, line);
    let web = |line: &str| insert_after(base, WEB, line);
    let web_table = |line: &str| {
        let at = base.find(FIRST_BACKEND).expect("a backend");
        format!("{}\n{line}{}", &base[..at], &base[at..])
    };
    match key {
        "interface" => base.replace("interface = \"eth0\"", "interface = \"eth9\""),
        "hash_seed" => base.replace(TOP, "hash_seed = 77\n"),
        "vip" => format!(
            "{base}\n[[vip]]\nname = \"extra\"\naddress = \"198.18.100.9\"\nport = 80\n\
             protocol = \"tcp\"\n[[vip.backend]]\nname = \"x1\"\naddress = \"198.18.0.11\"\n\
             mac = \"02:00:00:00:00:11\"\n"
        ),
        "metrics_address" => top("metrics_address = \"127.0.0.1:9479\"\n"),
        "conn_table_size" => top("conn_table_size = 8192\n"),
        "icmp_echo" => top("icmp_echo = \"pass\"\n"),
        "unhandled" => top("unhandled = \"pass\"\n"),
        "announce" => top("announce = \"never\"\n"),
        "imbalance" => top("[imbalance]\nmax_ratio = 2.0\n"),
        "safety" => top("[safety]\nmax_flows_moved = 0.9\n"),
        "tunnel" => top(SOURCE),
        "health" => top("[health]\ninterval = \"2s\"\n"),
        "vip.name" => base.replacen("name = \"web\"", "name = \"web2\"", 1),
        "vip.address" => base.replacen(
            &format!(
                "address = \"{}\"\nport = {}",
                testbed::VIP4,
                testbed::TCP_PORT
            ),
            &format!("address = \"198.18.100.9\"\nport = {}", testbed::TCP_PORT),
            1,
        ),
        "vip.port" => base.replacen(&format!("port = {}", testbed::TCP_PORT), "port = 8081", 1),
        "vip.protocol" => base.replacen(WEB, "protocol = \"udp\"\n", 1),
        "vip.table_size" => web("table_size = 1021\n"),
        "vip.backend" => insert_after(
            base,
            "weight = 1\n",
            "\n[[vip.backend]]\nname = \"b4\"\naddress = \"198.18.0.14\"\n\
             mac = \"02:00:00:00:00:14\"\n",
        ),
        "vip.imbalance" => web_table("[vip.imbalance]\nmax_ratio = 2.0\n"),
        "vip.safety" => web_table("[vip.safety]\nmax_flows_moved = 0.9\n"),
        "vip.forwarding" => insert_after(
            &insert_after(base, TOP, SOURCE),
            WEB,
            "forwarding = \"ipip\"\n",
        ),
        "vip.hash" => web("hash = \"source\"\n"),
        // VIPs at one address agree on it: every VIP's.
        "vip.unhandled" => insert_after_all(
            &insert_after_all(base, WEB, "unhandled = \"pass\"\n"),
            "protocol = \"udp\"\n",
            "unhandled = \"pass\"\n",
        ),
        "vip.announce" => web("announce = \"always\"\n"),
        "vip.health" => web_table("[vip.health]\ninterval = \"2s\"\n"),
        "vip.backend.name" => base.replacen("name = \"b1\"", "name = \"b9\"", 1),
        "vip.backend.address" => base.replacen("198.18.0.11\"", "198.18.0.19\"", 1),
        "vip.backend.mac" => base.replacen("00:00:11\"", "00:00:19\"", 1),
        "vip.backend.weight" => base.replacen("weight = 1\n", "weight = 2\n", 1),
        "vip.backend.state" => insert_after(base, "weight = 1\n", "state = \"draining\"\n"),
        "vip.backend.capacity" => insert_after(base, "weight = 1\n", "capacity = 3\n"),
        other => {
            let (table, k) = other.split_once('.').expect("a table key");
            let value = match (table, k) {
                ("imbalance", "max_ratio") => "2.0",
                ("imbalance", "max_cv") => "0.5",
                ("imbalance", "min_new_flow_rate") => "50",
                ("imbalance", "min_packet_rate") => "500",
                ("imbalance", "hold") => "\"20s\"",
                ("imbalance", "window") => "\"20s\"",
                ("safety", "max_share_growth") => "2.0",
                ("safety", "max_capacity_ratio") => "2.0",
                ("safety", "max_flows_moved") => "0.5",
                ("safety", "max_capacity_removed") => "0.9",
                ("tunnel", "source_v4") => "\"198.18.200.0/24\"",
                ("tunnel", "source_v6") => "\"2001:db8:200::/96\"",
                ("tunnel", "gue_port") => "7000",
                ("tunnel", "gateway_mac") => "\"02:00:00:00:00:99\"",
                ("health", "kind") => "\"tcp\"",
                ("health", "port") => "9999",
                ("health", "path") => "\"/ready\"",
                ("health", "status") => "204",
                ("health", "interval") => "\"2s\"",
                ("health", "timeout") => "\"500ms\"",
                ("health", "rise") => "3",
                ("health", "fall") => "3",
                ("health", "all_down") => "\"fail_closed\"",
                ("health", "flap_limit") => "5",
                ("health", "flap_window") => "\"2m\"",
                ("health", "flap_hold") => "\"2m\"",
                _ => panic!("no change written for config key {other}: add one here"),
            };
            // An HTTP check for the HTTP-only keys.
            let kind = if matches!(k, "path" | "status") {
                "kind = \"http\"\n"
            } else {
                ""
            };
            top(&format!("[{table}]\n{kind}{k} = {value}\n"))
        }
    }
}

#[test]
fn every_key_is_planned_as_it_is_applied() {
    tests::require_privileges!();
    tests::in_workdir("plan-truth", run);
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn run(dir: &Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xlbpt", 3)?;
    let base = testbed::config(&[1, 1, 1]);
    let base_file = dir.join("base.toml");
    std::fs::write(&base_file, &base)?;
    let daemon = Daemon::start_with(&bed.lb.ns, &base_file, dir, &["--bake-window", "0s"])?;
    let base_arg = base_file.to_str().context("path")?;
    // `xlb status --vip NAME` (issue 19): that VIP alone; an unknown one is
    // bad input naming those served.
    let one: serde_json::Value = serde_json::from_slice(
        &daemon
            .xlb(&["-o", "json", "status", "--vip", "dns"])?
            .stdout,
    )?;
    let names: Vec<&str> = one["vips"]
        .as_array()
        .context("vips")?
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    ensure!(names == ["dns"], "status --vip dns: {names:?}");
    let none = daemon.xlb(&["status", "--vip", "nope"])?;
    ensure!(
        code(&none) == 2 && String::from_utf8_lossy(&none.stderr).contains("it serves: web, dns"),
        "status --vip nope: {}",
        describe(&none)
    );
    let mut report = Vec::new();
    for key in keys::every_key() {
        let text = changed(&base, &key);
        ensure!(text != base, "{key}: the change changes nothing");
        let file = dir.join(format!("{}.toml", key.replace('.', "-")));
        std::fs::write(&file, &text)?;
        let file = file.to_str().context("path")?;
        let offline = daemon.xlb(&["plan", file, "--base", base_arg])?;
        let online = daemon.xlb(&["plan", file])?;
        let applied = daemon.xlb(&["apply", file])?;
        let (o, p, a) = (code(&offline), code(&online), code(&applied));
        report.push(format!("{key}: plan {o}, plan (daemon) {p}, apply {a}"));
        ensure!(
            o == a && p == a,
            "{key}: planned offline {o}, against the daemon {p}, applied {a}\n\
             offline plan: {}\ndaemon plan: {}\napply: {}",
            describe(&offline),
            describe(&online),
            describe(&applied)
        );
        let restart = keys::is_restart_only(&key);
        ensure!(
            (a == 2) == restart,
            "{key}: exit {a}, but it is {}restart-only: {}",
            if restart { "" } else { "not " },
            describe(&applied)
        );
        if restart {
            let said = String::from_utf8_lossy(&offline.stdout);
            ensure!(
                said.contains("(restart-only)"),
                "{key}: the plan does not mark it: {said}"
            );
        }
        // Back to the base for the next key (forced: the way back may move
        // as many flows as the way there).
        let back = daemon.xlb(&["apply", "--force", base_arg])?;
        ensure!(
            back.status.success(),
            "{key}: back to the base: {}",
            describe(&back)
        );
    }
    eprintln!("{}", report.join("\n"));
    Ok(())
}

/// The README's configuration table calls exactly the restart-only keys
/// restart-only.
#[test]
fn the_readme_names_the_restart_only_keys() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find("## Configuration")
        .expect("a configuration section");
    let mut marked: Vec<&str> = readme[start..]
        .lines()
        .filter(|l| l.starts_with("| `") && l.contains("restart-only"))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    marked.sort();
    let mut want: Vec<&str> = keys::RESTART_ONLY.iter().map(|k| k.key).collect();
    want.sort();
    assert_eq!(marked, want);
}
