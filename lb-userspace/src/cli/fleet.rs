//! `xlb fleet status URL...`: each node's `/api/status`, and per VIP whether
//! the nodes agree on what decides a new flow's backend (xlb_core::fleet).
//! Exit 1 when they do not, naming the node, the VIP, the fields that differ
//! and the share of new flows that node sends elsewhere; 4 when a node
//! cannot be read.

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

pub(super) fn status(output: Output, urls: &[String]) -> Result<(), Failure> {
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
