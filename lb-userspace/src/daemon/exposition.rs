//! The status document's series in /metrics (docs/METRICS.md), written as
//! the OpenMetrics text prometheus-client writes (byte for byte: tested),
//! in parts that are kept: each VIP's series of every family are written
//! once per change of that VIP (`vip_text`), and a document's text is the
//! node's series and the kept parts of its VIPs, in family order
//! (`document_text`), handed to the HTTP body as they are, never copied
//! into one buffer.

use axum::body::Bytes;
use xlb_core::detect::{SIGNALS, VERDICT_LABELS};
use xlb_core::status::{Status, VipStatus};

/// A series' value.
#[derive(Clone, Copy, Debug)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Info,
}

/// The metric types of the families here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Info,
}

impl Value {
    fn kind(self) -> Kind {
        match self {
            Value::Counter(_) => Kind::Counter,
            Value::Gauge(_) => Kind::Gauge,
            Value::Info => Kind::Info,
        }
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Info => "info",
        }
    }

    /// What the series' names end with.
    fn suffix(self) -> &'static str {
        match self {
            Kind::Counter => "_total",
            Kind::Gauge => "",
            Kind::Info => "_info",
        }
    }
}

/// Whose series a family holds: the node's (from the document's own
/// fields) or each VIP's (from its `VipStatus`, and whether the node
/// announces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Node,
    Vip,
}

/// `bytes` without the room its growth left (a kept encoding would hold
/// up to as much again otherwise).
pub fn exact(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.shrink_to_fit();
    bytes
}

/// One VIP's series of every VIP family, one family after the other.
#[derive(Debug, Default)]
pub struct VipText {
    text: Bytes,
    /// Per VIP family, in the order they are written: where its series end
    /// in `text`, and their type (when it has any).
    ends: Vec<(u32, Option<Kind>)>,
}

impl VipText {
    /// The bytes it holds.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether it holds no bytes (a VIP without series).
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The series of VIP family `index`, and their type; None if none.
    fn family(&self, index: usize) -> Option<(Bytes, Kind)> {
        let (end, kind) = *self.ends.get(index)?;
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i].0);
        let kind = kind.filter(|_| end > start)?;
        Some((self.text.slice(start as usize..end as usize), kind))
    }
}

/// What a pass over the families writes.
enum Pass<'a> {
    /// One VIP's series (node families are skipped).
    Vip {
        out: &'a mut Vec<u8>,
        ends: &'a mut Vec<(u32, Option<Kind>)>,
    },
    /// A document: the node's families written, the VIP families taken
    /// from each VIP's kept text.
    Document {
        texts: &'a [&'a VipText],
        chunks: &'a mut Vec<Bytes>,
        /// The next VIP family's index.
        next: usize,
    },
}

type Labels = Vec<(&'static str, String)>;

fn header(out: &mut Vec<u8>, name: &str, help: &str, kind: Kind) {
    for part in [
        "# HELP ",
        name,
        " ",
        help,
        "\n# TYPE ",
        name,
        " ",
        kind.name(),
        "\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
}

/// One series' line: `name_total{k="v",...} 12` (label values as they
/// are: prometheus-client 0.24 escapes nothing either).
fn line(out: &mut Vec<u8>, name: &str, labels: &Labels, value: Value) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(value.kind().suffix().as_bytes());
    out.push(b'{');
    for (i, (key, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"=\"");
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"} ");
    match value {
        Value::Counter(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        Value::Gauge(x) => out.extend_from_slice(dtoa::Buffer::new().format(x).as_bytes()),
        Value::Info => out.push(b'1'),
    }
    out.push(b'\n');
}

/// One metric family: a name, its help, and its series (none: not written).
fn family(
    e: &mut Pass<'_>,
    scope: Scope,
    name: &str,
    help: &str,
    series: Vec<(Labels, Value)>,
) -> Result<(), std::fmt::Error> {
    let kind = series.first().map(|(_, v)| v.kind());
    match (e, scope) {
        (Pass::Vip { .. }, Scope::Node) => {}
        (Pass::Vip { out, ends }, Scope::Vip) => {
            for (labels, value) in &series {
                line(out, name, labels, *value);
            }
            ends.push((out.len() as u32, kind));
        }
        (Pass::Document { chunks, .. }, Scope::Node) => {
            if let Some(kind) = kind {
                let mut out = Vec::new();
                header(&mut out, name, help, kind);
                for (labels, value) in &series {
                    line(&mut out, name, labels, *value);
                }
                chunks.push(Bytes::from(out));
            }
        }
        (
            Pass::Document {
                texts,
                chunks,
                next,
            },
            Scope::Vip,
        ) => {
            let index = *next;
            *next += 1;
            let mut parts = texts.iter().filter_map(|t| t.family(index)).peekable();
            if let Some((_, kind)) = parts.peek() {
                let mut out = Vec::new();
                header(&mut out, name, help, *kind);
                chunks.push(Bytes::from(out));
                chunks.extend(parts.map(|(text, _)| text));
            }
        }
    }
    Ok(())
}

fn info(
    e: &mut Pass<'_>,
    scope: Scope,
    name: &str,
    help: &str,
    series: Vec<Labels>,
) -> Result<(), std::fmt::Error> {
    family(
        e,
        scope,
        name,
        help,
        series.into_iter().map(|l| (l, Value::Info)).collect(),
    )
}

fn gauge(v: f64) -> Value {
    Value::Gauge(v)
}

fn counter(v: u64) -> Value {
    Value::Counter(v)
}

/// `vip`'s series of every VIP family, in a document `s` (whose own fields
/// say whether the node announces: a VIP's announce series depend on it).
pub fn vip_text(s: &Status, vip: &VipStatus) -> VipText {
    let (mut out, mut ends) = (Vec::new(), Vec::new());
    let mut pass = Pass::Vip {
        out: &mut out,
        ends: &mut ends,
    };
    encode_status(s, std::slice::from_ref(vip), &mut pass).expect("writing to memory");
    ends.shrink_to_fit();
    VipText {
        text: Bytes::from(exact(out)),
        ends,
    }
}

/// The status families of document `s`: its node series and the VIPs'
/// kept `texts` (in `s.vips`'s order), family after family.
pub fn document_text(s: &Status, texts: &[&VipText]) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut pass = Pass::Document {
        texts,
        chunks: &mut chunks,
        next: 0,
    };
    encode_status(s, &[], &mut pass).expect("writing to memory");
    chunks
}

fn encode_status(s: &Status, vips: &[VipStatus], e: &mut Pass<'_>) -> Result<(), std::fmt::Error> {
    let vip = |name: &str| vec![("vip", name.to_string())];
    let backend = |v: &str, b: &str| vec![("vip", v.to_string()), ("backend", b.to_string())];
    let backends = || {
        vips.iter()
            .flat_map(|v| v.backends.iter().map(move |b| (v, b)))
    };

    info(
        e,
        Scope::Node,
        "xlb_build",
        "The running xlb",
        vec![vec![("version", env!("CARGO_PKG_VERSION").to_string())]],
    )?;
    info(
        e,
        Scope::Vip,
        "xlb_vip",
        "One series per VIP, with its address",
        vips.iter()
            .map(|v| {
                vec![
                    ("vip", v.name.clone()),
                    ("address", v.address.clone()),
                    ("port", v.port.to_string()),
                    ("protocol", v.protocol.clone()),
                ]
            })
            .collect(),
    )?;
    info(
        e,
        Scope::Vip,
        "xlb_vip_fingerprint",
        "What decides a VIP's new flows here (seed, hash mode, table size, backends, the live table), as a fingerprint: equal on every node of a fleet that agrees",
        vips.iter()
            .filter_map(|v| {
                v.decision.as_ref().map(|d| {
                    vec![
                        ("vip", v.name.clone()),
                        ("fingerprint", d.fingerprint.clone()),
                    ]
                })
            })
            .collect(),
    )?;
    info(
        e,
        Scope::Node,
        "xlb_node_fingerprint",
        "Of every VIP's fingerprint: equal on nodes that agree on every VIP",
        vec![vec![("fingerprint", s.fingerprint.clone())]],
    )?;
    info(
        e,
        Scope::Vip,
        "xlb_backend",
        "One series per backend, with its address, MAC and state",
        backends()
            .map(|(v, b)| {
                vec![
                    ("vip", v.name.clone()),
                    ("backend", b.name.clone()),
                    ("address", b.address.clone()),
                    ("mac", b.mac.clone()),
                    ("state", b.state.clone()),
                ]
            })
            .collect(),
    )?;

    // Counters, summed over CPUs.
    let vip_counter = |f: fn(&VipStatus) -> u64| {
        vips.iter()
            .map(|v| (vip(&v.name), counter(f(v))))
            .collect::<Vec<_>>()
    };
    family(
        e,
        Scope::Vip,
        "xlb_vip_packets",
        "Packets for the VIP, forwarded or dropped",
        vip_counter(|v| v.packets),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_vip_bytes",
        "Bytes of the VIP's packets",
        vip_counter(|v| v.bytes),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_vip_new_flows",
        "Flows of the VIP hashed onto its Maglev table (connection-table misses)",
        vip_counter(|v| v.new_flows),
    )?;
    let backend_counter = |f: fn(&xlb_core::status::BackendStatus) -> u64| {
        backends()
            .map(|(v, b)| (backend(&v.name, &b.name), counter(f(b))))
            .collect::<Vec<_>>()
    };
    family(
        e,
        Scope::Vip,
        "xlb_backend_packets",
        "Packets sent to the backend",
        backend_counter(|b| b.packets),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_bytes",
        "Bytes sent to the backend",
        backend_counter(|b| b.bytes),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_new_flows",
        "New flows sent to the backend",
        backend_counter(|b| b.new_flows),
    )?;

    // Intent and the table.
    let backend_gauge = |f: &dyn Fn(&xlb_core::status::BackendStatus) -> f64| {
        backends()
            .map(|(v, b)| (backend(&v.name, &b.name), gauge(f(b))))
            .collect::<Vec<_>>()
    };
    family(
        e,
        Scope::Vip,
        "xlb_backend_weight",
        "Configured weight",
        backend_gauge(&|b| b.weight as f64),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_active",
        "1 when the backend is in the Maglev table (state active)",
        backend_gauge(&|b| (b.state == "active") as u8 as f64),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_expected_share_ratio",
        "Weight over the sum of the active backends' weights",
        backend_gauge(&|b| b.expected_share_ratio),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_table_share_ratio",
        "Fraction of the live Maglev table's slots naming the backend",
        backend_gauge(&|b| b.table_share_ratio),
    )?;

    // The detector.
    let mut observed = Vec::new();
    for (v, b) in backends() {
        for signal in SIGNALS {
            let share = match signal {
                xlb_core::detect::Signal::NewFlows => b.window.new_flows,
                xlb_core::detect::Signal::Packets => b.window.packets,
                xlb_core::detect::Signal::Bytes => b.window.bytes,
            };
            if let Some(share) = share {
                let mut labels = backend(&v.name, &b.name);
                labels.push(("signal", signal.as_str().to_string()));
                observed.push((labels, gauge(share)));
            }
        }
    }
    family(
        e,
        Scope::Vip,
        "xlb_backend_observed_share_ratio",
        "The backend's share of the VIP's signal over the detector's window",
        observed,
    )?;
    let per_signal = |f: fn(&xlb_core::status::SignalStatus) -> Option<f64>| {
        vips.iter()
            .flat_map(|v| {
                v.signals.iter().filter_map(move |sig| {
                    f(sig).map(|x| {
                        (
                            vec![
                                ("vip", v.name.clone()),
                                ("signal", sig.signal.as_str().to_string()),
                            ],
                            gauge(x),
                        )
                    })
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        e,
        Scope::Vip,
        "xlb_vip_worst_ratio",
        "Observed over expected share of the backend furthest from 1",
        per_signal(|sig| sig.worst_ratio),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_vip_share_cv",
        "Coefficient of variation of observed/expected across active backends",
        per_signal(|sig| sig.cv),
    )?;
    let mut states = Vec::new();
    for v in vips {
        let current = v.imbalance.label();
        for st in VERDICT_LABELS {
            states.push((
                vec![("vip", v.name.clone()), ("state", st.to_string())],
                gauge((st == current) as u8 as f64),
            ));
        }
    }
    family(
        e,
        Scope::Vip,
        "xlb_vip_imbalance_state",
        "The imbalance detector's verdict: 1 for the current state",
        states,
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_vip_table_drift",
        "1 when the live table or backend entries differ from what xlb applied",
        vips.iter()
            .map(|v| (vip(&v.name), gauge(v.drift.drifted as u8 as f64)))
            .collect(),
    )?;

    // Host-wide.
    let named = |list: &[xlb_core::status::NamedCounter],
                 key: &'static str,
                 f: fn(&xlb_core::status::NamedCounter) -> u64| {
        list.iter()
            .map(|c| (vec![(key, c.name.clone())], counter(f(c))))
            .collect::<Vec<_>>()
    };
    family(
        e,
        Scope::Node,
        "xlb_xdp_packets",
        "Packets by XDP action",
        named(&s.actions, "action", |c| c.packets),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_xdp_bytes",
        "Bytes by XDP action",
        named(&s.actions, "action", |c| c.bytes),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_dropped_packets",
        "Packets for a VIP that were dropped, by reason",
        named(&s.drops, "reason", |c| c.packets),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_cpu_packets",
        "Packets the program saw on each CPU",
        s.cpus
            .iter()
            .map(|c| (vec![("cpu", c.cpu.to_string())], counter(c.packets)))
            .collect(),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_map_entries",
        "Entries in use",
        s.maps
            .iter()
            .map(|m| (vec![("map", m.name.clone())], gauge(m.entries as f64)))
            .collect(),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_map_max_entries",
        "Capacity of the map",
        s.maps
            .iter()
            .map(|m| (vec![("map", m.name.clone())], gauge(m.max_entries as f64)))
            .collect(),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_dataplane_events",
        "Data-plane events (connection table, fragments, ICMP, FIB, VLAN), by event",
        s.events
            .iter()
            .map(|(name, n)| (vec![("event", name.clone())], counter(*n)))
            .collect(),
    )?;

    // The connection table, as the last scan counted it (none before it).
    let conn = |f: fn(&xlb_core::status::ConnTableStatus) -> f64| {
        s.conn_table
            .iter()
            .map(|c| (Labels::new(), gauge(f(c))))
            .collect::<Vec<_>>()
    };
    family(
        e,
        Scope::Node,
        "xlb_conn_table_entries",
        "Flows the connection table remembers",
        conn(|c| c.entries as f64),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_conn_table_capacity",
        "The connection table's max_entries (the LRU evicts beyond)",
        conn(|c| c.capacity as f64),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_conn_table_stale_entries",
        "Connection-table entries naming a backend id not in the applied config",
        conn(|c| c.stale_entries as f64),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_conn_table_scan_seconds",
        "How long the last count of the connection table took",
        conn(|c| c.scan_seconds),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_conn_table_last_scan_timestamp_seconds",
        "Unix time of the last count of the connection table",
        conn(|c| c.scanned_at_unix_seconds),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_flows",
        "Flows the connection table remembers for the backend (what a draining backend still carries)",
        backends()
            .filter_map(|(v, b)| Some((backend(&v.name, &b.name), gauge(b.flows? as f64))))
            .collect(),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_config_revision",
        "Revision of the applied config",
        vec![(Vec::new(), gauge(s.revision as f64))],
    )?;
    family(
        e,
        Scope::Node,
        "xlb_config_last_apply_timestamp_seconds",
        "Unix time of the last apply",
        vec![(Vec::new(), gauge(s.applied_at_unix_seconds as f64))],
    )?;
    family(
        e,
        Scope::Node,
        "xlb_config_file_differs",
        "1 while the --config file differs from the live revision and the daemon keeps the live one (applying the file would revert a change made through the daemon, or a safety check refused it)",
        s.config_file
            .iter()
            .map(|c| {
                (
                    vec![("file", c.file.clone())],
                    gauge(if c.differs { 1.0 } else { 0.0 }),
                )
            })
            .collect(),
    )?;
    encode_health(vips, e)?;
    encode_announce(s, vips, e)?;
    Ok(())
}

/// Announcing (xlb_core::announce): each VIP's state and the node's.
fn encode_announce(
    s: &Status,
    vips: &[VipStatus],
    e: &mut Pass<'_>,
) -> Result<(), std::fmt::Error> {
    // Every family is written (none when the node does not announce), so
    // the VIP families come in the same order in every pass.
    let node = s.announce.as_ref();
    let vips = if node.is_some() { vips } else { &[] };
    family(
        e,
        Scope::Vip,
        "xlb_vip_announced",
        "1 while the node announces the VIP's address to its routers (a route in the \
         --announce-table), 0 while withdrawn; the reason is in xlb_vip_announce_info",
        vips.iter()
            .filter_map(|v| {
                let a = v.announce.as_ref()?;
                Some((
                    vec![("vip", v.name.clone())],
                    gauge(a.announced as u8 as f64),
                ))
            })
            .collect(),
    )?;
    info(
        e,
        Scope::Vip,
        "xlb_vip_announce",
        "Each VIP's announce policy and why it is (not) announced",
        vips.iter()
            .filter_map(|v| {
                let a = v.announce.as_ref()?;
                Some(vec![
                    ("vip", v.name.clone()),
                    ("policy", a.policy.to_string()),
                    ("reason", reason_label(a.reason)),
                ])
            })
            .collect(),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_node_drained",
        "1 while the node is drained (xlb node drain): every VIP withdrawn, forwarding goes on",
        node.iter()
            .map(|node| {
                (
                    Vec::new(),
                    gauge((node.state == xlb_core::announce::NodeState::Drained) as u8 as f64),
                )
            })
            .collect(),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_announce_routes",
        "Routes xlb holds in its --announce-table (one per announced VIP address)",
        node.and_then(|node| node.table.map(|t| (node, t)))
            .map(|(node, t)| {
                (
                    vec![("table", t.to_string())],
                    gauge(node.routes.len() as f64),
                )
            })
            .into_iter()
            .collect(),
    )?;
    Ok(())
}

/// The reason as its JSON name (`backends_up`, `no_backend_up`, ...).
fn reason_label(r: xlb_core::announce::Reason) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Health checks (health/): series only for checked backends and VIPs.
fn encode_health(vips: &[VipStatus], e: &mut Pass<'_>) -> Result<(), std::fmt::Error> {
    let checked = || {
        vips.iter().flat_map(|v| {
            v.backends
                .iter()
                .filter_map(move |b| Some((v, b, b.health.as_ref()?)))
        })
    };
    let labels = |v: &VipStatus, b: &xlb_core::status::BackendStatus| {
        vec![("vip", v.name.clone()), ("backend", b.name.clone())]
    };
    family(
        e,
        Scope::Vip,
        "xlb_backend_health_up",
        "1 when the backend's health checks pass (up), 0 when they took it down",
        checked()
            .map(|(v, b, h)| {
                let up = h.machine.state == xlb_core::health::Health::Up;
                (labels(v, b), gauge(up as u8 as f64))
            })
            .collect(),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_health_in_table",
        "1 when the backend is in the VIP's live Maglev table after health checks",
        checked()
            .map(|(v, b, h)| (labels(v, b), gauge(h.in_table as u8 as f64)))
            .collect(),
    )?;
    let mut checks = Vec::new();
    for (v, b, h) in checked() {
        for (result, n) in [
            ("ok", h.machine.checks_ok_total),
            ("failed", h.machine.checks_failed_total),
        ] {
            let mut l = labels(v, b);
            l.push(("result", result.to_string()));
            checks.push((l, counter(n)));
        }
    }
    family(
        e,
        Scope::Vip,
        "xlb_backend_health_checks",
        "Health checks of the backend, by result",
        checks,
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_health_down_events",
        "Times the health checks took the backend down",
        checked()
            .map(|(v, b, h)| (labels(v, b), counter(h.machine.down_events_total)))
            .collect(),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_health_flapping",
        "1 while the backend is damped for flapping (it needs flap_hold of passed checks)",
        checked()
            .map(|(v, b, h)| (labels(v, b), gauge(h.machine.flapping as u8 as f64)))
            .collect(),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_health_last_change_timestamp_seconds",
        "Unix time the backend last went up or down (or its check was set up)",
        checked()
            .map(|(v, b, h)| (labels(v, b), gauge(h.machine.since_unix_seconds)))
            .collect(),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_vip_health_all_down",
        "1 when every active backend of the VIP is down: its all_down policy applies",
        vips.iter()
            .filter_map(|v| {
                let h = v.health.as_ref()?;
                Some((
                    vec![("vip", v.name.clone())],
                    gauge(h.all_down as u8 as f64),
                ))
            })
            .collect(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::registry::Registry;

    /// Three families as prometheus-client writes them from a collector
    /// (as this module's series were written before): a counter, a gauge
    /// without labels and with, an info.
    #[derive(Debug)]
    struct Reference;

    impl Collector for Reference {
        fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let labels = vec![("vip", "web".to_string()), ("backend", "b1".to_string())];
            let c = ConstCounter::new(12_u64);
            let mut m = e.encode_descriptor("xlb_a", "A counter", None, c.metric_type())?;
            c.encode(m.encode_family(&labels)?)?;
            let g = ConstGauge::new(0.25_f64);
            let mut m = e.encode_descriptor("xlb_b", "A gauge", None, g.metric_type())?;
            g.encode(m.encode_family(&labels)?)?;
            let none: Vec<(&str, String)> = Vec::new();
            ConstGauge::new(1e-7_f64).encode(m.encode_family(&none)?)?;
            ConstGauge::new(3.0_f64).encode(m.encode_family(&none)?)?;
            let mut m = e.encode_descriptor(
                "xlb_c",
                "An info",
                None,
                prometheus_client::metrics::MetricType::Info,
            )?;
            m.encode_info(&labels)?;
            Ok(())
        }
    }

    #[test]
    fn series_are_written_as_prometheus_client_writes_them() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Reference));
        let mut expected = String::new();
        prometheus_client::encoding::text::encode_registry(&mut expected, &registry).unwrap();

        let labels: Labels = vec![("vip", "web".to_string()), ("backend", "b1".to_string())];
        let mut out = Vec::new();
        header(&mut out, "xlb_a", "A counter", Kind::Counter);
        line(&mut out, "xlb_a", &labels, counter(12));
        header(&mut out, "xlb_b", "A gauge", Kind::Gauge);
        line(&mut out, "xlb_b", &labels, gauge(0.25));
        line(&mut out, "xlb_b", &Labels::new(), gauge(1e-7));
        line(&mut out, "xlb_b", &Labels::new(), gauge(3.0));
        header(&mut out, "xlb_c", "An info", Kind::Info);
        line(&mut out, "xlb_c", &labels, Value::Info);
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
