//! `xlb fleet status URL...`: each node's `/api/status`, and per VIP whether
//! the nodes agree on what decides a new flow's backend (xlb_core::fleet).
//! Exit 1 when they do not, naming the node, the VIP, the fields that differ
//! and the share of new flows that node sends elsewhere; 4 when a node
//! cannot be read.

use std::collections::BTreeMap;
use std::time::Duration;

use xlb_core::fleet::{Decision, agreement};
use xlb_core::status::{SCHEMA_VERSION, Status};

use super::output::{Failure, Output, print_json};

/// How long one node may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `http://host:port` (or with a trailing slash): its `/api/status`.
fn read(url: &str) -> Result<Status, Failure> {
    let endpoint = format!("{}/api/status", url.trim_end_matches('/'));
    let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
    let body = agent
        .get(&endpoint)
        .call()
        .map_err(|e| Failure::internal(format!("{endpoint}: {e}")))?
        .into_string()
        .map_err(|e| Failure::internal(format!("{endpoint}: {e}")))?;
    serde_json::from_str(&body)
        .map_err(|e| Failure::internal(format!("{endpoint}: not an xlb status document: {e}")))
}

pub(super) fn status(output: Output, urls: &[String]) -> Result<(), Failure> {
    let mut nodes = Vec::new();
    let mut fingerprints = Vec::new();
    for url in urls {
        let s = read(url)?;
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
    Err(Failure::refused(format!(
        "the nodes disagree: {}",
        which.join(", ")
    )))
}
