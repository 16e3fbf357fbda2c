//! The shipped Prometheus rules, their promtool unit tests, the example
//! Prometheus config and the Grafana dashboard (all under deploy/). No
//! privileges needed; needs `promtool` (Debian's `prometheus` package, which
//! `cargo xtask setup` installs). A missing promtool fails the tests: it is
//! never a silent skip.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const RULES: &str = "deploy/prometheus/xlb-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/xlb-rules.test.yml";
const CONFIG: &str = "deploy/prometheus/prometheus.yml";
const DASHBOARD: &str = "deploy/grafana/xlb-dashboard.json";
const METRICS_DOC: &str = "docs/METRICS.md";
const CONFIG_ANNOTATION: &str = "changes(xlb_config_revision[1m]) > 0";

fn workspace() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .canonicalize()
        .expect("the workspace root")
}

fn read(rel: &str) -> String {
    let path = workspace().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Run `promtool args...` from the workspace root and assert it succeeds.
fn promtool(args: &[&str]) -> Output {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(workspace())
        .output()
        .unwrap_or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                panic!(
                    "promtool not found on PATH: run `cargo xtask setup` \
                     (it installs Debian's `prometheus` package, which has promtool)"
                )
            }
            panic!("running promtool: {e}")
        });
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    out
}

#[test]
fn rules_pass_promtool_check() {
    promtool(&["check", "rules", RULES]);
}

#[test]
fn rules_pass_their_unit_tests() {
    promtool(&["test", "rules", RULE_TESTS]);
}

#[test]
fn example_config_passes_promtool_check() {
    // Also checks the rule file it loads, found relative to the config.
    let out = promtool(&["check", "config", CONFIG]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 rule files found"),
        "the example config should load xlb-rules.yml:\n{stdout}"
    );
    let config = read(CONFIG);
    assert!(
        config.contains("job_name: xlb"),
        "the scrape job must be named xlb"
    );
    assert!(
        config.contains("127.0.0.1:9470"),
        "the default metrics address"
    );
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// (panel title, expr) of every panel target, as Grafana stores them.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .map(move |e| (title.clone(), e.to_string()))
        })
        .collect()
}

/// What Grafana would send for the dashboard's variables.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("${vip}", ".*")
        .replace("$vip", ".*")
}

#[test]
fn dashboard_is_complete() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(d["uid"].as_str().is_some_and(|s| !s.is_empty()), "a uid");

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let ds = var("DS_PROMETHEUS");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let vip = var("vip");
    assert_eq!(vip["type"], "query");
    assert!(
        vip.to_string().contains("label_values(xlb_vip_info, vip)"),
        "vip comes from label_values(xlb_vip_info, vip): {vip}"
    );

    let all = panels(&d);
    assert!(all.len() >= 7, "only {} panels", all.len());
    let mut ids = BTreeSet::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(
            targets
                .iter()
                .any(|t| t["expr"].as_str().is_some_and(|e| !e.trim().is_empty())),
            "panel {title:?} has no target with an expr"
        );
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], "${DS_PROMETHEUS}",
                "panel {title:?} target {} uses the data source variable",
                t["refId"]
            );
        }
    }

    // What the panels must show (the brief, in metrics).
    let exprs: Vec<String> = dashboard_exprs(&d).into_iter().map(|(_, e)| e).collect();
    for needle in [
        "xlb:backend_new_flow_share:ratio1m",
        "xlb:backend_expected_share:ratio",
        "xlb:backend_new_flow_skew:ratio1m",
        "xlb_backend_new_flows_total",
        "xlb_backend_packets_total",
        "xlb_cpu_packets_total",
        "xlb_dropped_packets_total",
        "xlb_vip_imbalance_state",
        "xlb_vip_worst_ratio",
        "xlb_vip_share_cv",
        "xlb_vip_table_drift",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needle)),
            "no panel queries {needle}"
        );
    }
    // VIP-labelled series follow the VIP selector.
    for e in &exprs {
        for name in ["xlb:backend_", "xlb_backend_", "xlb_vip_"] {
            if e.contains(name) {
                assert!(e.contains(r#"vip=~"$vip""#), "not filtered by $vip: {e}");
            }
        }
    }
    // Once Grafana has substituted, nothing else is left to substitute.
    for e in &exprs {
        assert!(!substitute(e).contains('$'), "an unknown variable in {e}");
    }

    let annotations = d["annotations"]["list"]
        .as_array()
        .expect("annotations.list");
    let config = annotations
        .iter()
        .find(|a| {
            a["expr"]
                .as_str()
                .is_some_and(|e| e.trim() == CONFIG_ANNOTATION)
        })
        .unwrap_or_else(|| panic!("no annotation with expr {CONFIG_ANNOTATION}"));
    assert_eq!(config["enable"], true, "the config-change annotation is on");
    assert_eq!(config["datasource"]["uid"], "${DS_PROMETHEUS}");
}

/// Every panel query (and the annotation) parses as PromQL once Grafana's
/// variables are substituted: each becomes a recording rule in a scratch
/// rule file (JSON is YAML) that `promtool check rules` parses.
#[test]
fn dashboard_exprs_are_valid_promql() {
    let d = dashboard();
    let mut exprs = dashboard_exprs(&d);
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            exprs.push((format!("annotation {}", a["name"]), e.to_string()));
        }
    }
    assert!(!exprs.is_empty());
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, e))| serde_json::json!({"record": format!("dashboard_expr_{i}"), "expr": substitute(e)}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = std::env::temp_dir().join(format!("xlb-dashboard-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard.rules.json");
    std::fs::write(&path, file.to_string()).unwrap();
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = match check {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool not found on PATH: run `cargo xtask setup` \
             (it installs Debian's `prometheus` package, which has promtool)"
        ),
        Err(e) => panic!("running promtool: {e}"),
    };
    let listing: String = exprs
        .iter()
        .enumerate()
        .map(|(i, (title, e))| format!("  dashboard_expr_{i} ({title}): {}\n", substitute(e)))
        .collect();
    assert!(
        out.status.success(),
        "a dashboard query does not parse:\n{}{}\nqueries:\n{listing}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// Identifiers in `text` that start with `prefix` (metric-name characters).
fn names(text: &str, prefix: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let len = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        if !before.is_some_and(is_name) && len > prefix.len() {
            out.insert(tail[..len].to_string());
        }
        rest = &tail[len.max(prefix.len())..];
    }
    out
}

/// The series names of docs/METRICS.md's table (histograms with their
/// `_bucket`, `_sum` and `_count` series).
fn contract() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in read(METRICS_DOC).lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let Some(name) = cells[1].strip_prefix('`').and_then(|s| s.strip_suffix('`')) else {
            continue;
        };
        if !name.starts_with("xlb_") {
            continue;
        }
        if cells[2] == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{name}{suffix}"));
            }
        }
        out.insert(name.to_string());
    }
    assert!(
        out.len() > 20,
        "could not read the series table of {METRICS_DOC}"
    );
    out
}

/// The rules and the dashboard use only series of the metrics contract and
/// recording rules that xlb-rules.yml defines.
#[test]
fn rules_and_dashboard_use_only_contract_names() {
    let contract = contract();
    let rules = read(RULES);
    let recorded: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|n| n.trim().to_string())
        .collect();
    assert!(recorded.contains("xlb:backend_new_flow_skew:ratio1m"));

    let exprs: String = dashboard_exprs(&dashboard())
        .into_iter()
        .map(|(_, e)| e + "\n")
        .collect();
    for (what, text) in [(RULES, rules.as_str()), (DASHBOARD, exprs.as_str())] {
        let unknown: Vec<String> = names(text, "xlb_")
            .into_iter()
            .filter(|n| !contract.contains(n))
            .collect();
        assert!(
            unknown.is_empty(),
            "{what} uses series not in {METRICS_DOC}: {unknown:?}"
        );
        let unrecorded: Vec<String> = names(text, "xlb:")
            .into_iter()
            .filter(|n| !recorded.contains(n))
            .collect();
        assert!(
            unrecorded.is_empty(),
            "{what} uses rules {RULES} does not record: {unrecorded:?}"
        );
    }
}
