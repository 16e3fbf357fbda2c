//! Prometheus metrics (docs/METRICS.md): a prometheus-client registry with
//! the daemon's histograms and one collector that turns the latest status
//! document into every other series at scrape time. Series come from the
//! document, so a VIP or backend that left the config leaves /metrics too.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use xlb_core::detect::{SIGNALS, VERDICT_LABELS};
use xlb_core::status::Status;

/// The content type of prometheus-client's text encoding (OpenMetrics).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The daemon's metrics: durations it observes, and the latest status.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub table_swap: Histogram,
    pub maglev_build: Histogram,
    pub collector: Histogram,
    pub automatic_rollbacks: Counter,
    /// Health checks that failed for a reason of this host's own (no
    /// descriptor, no buffer, no local port), by `reason`: they change no
    /// backend's health.
    pub health_probe_local_errors: Family<Vec<(String, String)>, Counter>,
    /// Failed `accept` calls on the control socket (the loop backs off).
    pub control_accept_errors: Counter,
    /// Control requests answered with an error before they were parsed
    /// (not UTF-8, not JSON, too big, too slow), by `reason`.
    pub control_bad_requests: Family<Vec<(String, String)>, Counter>,
    /// HTTP connections closed at once because `HTTP_MAX_CONNECTIONS` were
    /// open.
    pub http_connections_refused: Counter,
    /// Status documents the HTTP side built (under the controller's lock,
    /// at most one per collector tick or change, however many scrapes).
    pub http_status_builds: Counter,
    /// Failed writes of the announce routes (tried again every second).
    pub announce_errors: Counter,
    /// The daemon's last progress, which the watchdog's pinger reads
    /// (notify.rs): the collector beats after each tick, an apply at each
    /// step.
    pub progress: Arc<crate::daemon::notify::Progress>,
    /// With `--fleet`: 1 while the node reaches its fleet's store, by
    /// `node` (no sample without `--fleet`).
    pub fleet_connected: Family<Vec<(String, String)>, Gauge>,
    /// With `--fleet`: the held-flow replication (daemon/held.rs).
    pub held: HeldMetrics,
    /// Packets `xlb trace` and `xlb capture` sent to their clients
    /// (daemon/trace.rs).
    pub traced_packets: Counter,
    pub captured_packets: Counter,
    /// The trace or capture running now (one at a time), for the status.
    pub trace_active: Mutex<Option<xlb_core::trace::TraceActive>>,
    latest: Arc<Mutex<Option<Arc<Status>>>>,
    /// Held across one encode, so two scrapes never mix their documents.
    encoding: Mutex<()>,
    /// What `xlb status`, `/api/status` and `/metrics` serve: the status
    /// document and its encodings, built at most once per collector tick
    /// or change (snapshot.rs).
    pub snapshots: Arc<crate::daemon::snapshot::Snapshots>,
}

/// The held-flow replication's series (docs/METRICS.md).
#[derive(Debug, Default)]
pub struct HeldMetrics {
    /// This node's held flows as last published, in all and by `vip` and
    /// `backend`.
    pub published: Gauge,
    pub flows: Family<Vec<(String, String)>, Gauge>,
    /// Bytes of records this node wrote to the store.
    pub published_bytes: Counter,
    /// Other nodes' entries inserted into this node's connection table,
    /// and those it already had an entry of its own for.
    pub installed: Counter,
    pub present: Counter,
    /// From another node's scan to the insertion here (last record).
    pub delay: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl HeldMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "xlb_held_flows_published",
            "With --fleet: this node's held flows (on a backend that is not the table's pick) as last published to the store",
            m.published.clone(),
        );
        registry.register(
            "xlb_held_flows",
            "With --fleet: this node's held flows by VIP and backend: the flows that rely on the replication if the ECMP set changes",
            m.flows.clone(),
        );
        registry.register(
            "xlb_held_published_bytes",
            "With --fleet: bytes of held-flow records written to the store",
            m.published_bytes.clone(),
        );
        registry.register(
            "xlb_held_entries_installed",
            "With --fleet: other nodes' held flows inserted into this node's connection table",
            m.installed.clone(),
        );
        registry.register(
            "xlb_held_entries_present",
            "With --fleet: other nodes' held flows this node already had an entry of its own for (left alone)",
            m.present.clone(),
        );
        registry.register_with_unit(
            "xlb_held_replication_delay",
            "With --fleet: from another node's connection-table scan to the insertion of its held flows here, for the last record",
            Unit::Seconds,
            m.delay.clone(),
        );
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // 10 us .. ~5 s: a table swap is well under a millisecond through
        // mmap; a big apply's Maglev builds take tens of milliseconds.
        let table_swap = Histogram::new(exponential_buckets(1e-5, 4.0, 10));
        let maglev_build = Histogram::new(exponential_buckets(1e-5, 4.0, 10));
        let collector = Histogram::new(exponential_buckets(1e-5, 4.0, 10));
        registry.register_with_unit(
            "xlb_table_swap_duration",
            "Time to fill one VIP's new Maglev table and swap it in",
            Unit::Seconds,
            table_swap.clone(),
        );
        registry.register_with_unit(
            "xlb_maglev_build_duration",
            "Time to build the Maglev tables of one apply",
            Unit::Seconds,
            maglev_build.clone(),
        );
        registry.register_with_unit(
            "xlb_collector_duration",
            "One collector pass: read counters, run the detector, check drift",
            Unit::Seconds,
            collector.clone(),
        );
        let automatic_rollbacks = Counter::default();
        registry.register(
            "xlb_automatic_rollbacks",
            "Revisions the daemon rolled back on its own after a failed bake",
            automatic_rollbacks.clone(),
        );
        let health_probe_local_errors = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "xlb_health_probe_local_errors",
            "Health checks that failed for a local reason (EMFILE, ENFILE, ENOBUFS, ENOMEM, \
             EADDRNOTAVAIL); they change no backend's health",
            health_probe_local_errors.clone(),
        );
        let control_accept_errors = Counter::default();
        registry.register(
            "xlb_control_accept_errors",
            "Failed accept calls on the control socket (logged, backed off)",
            control_accept_errors.clone(),
        );
        let announce_errors = Counter::default();
        registry.register(
            "xlb_announce_route_errors",
            "Failed writes of the announce routes to the --announce-table (retried every second)",
            announce_errors.clone(),
        );
        let control_bad_requests = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "xlb_control_bad_requests",
            "Control requests answered with bad_input before parsing, by reason",
            control_bad_requests.clone(),
        );
        let http_connections_refused = Counter::default();
        registry.register(
            "xlb_http_connections_refused",
            "HTTP connections closed at once: the connection cap was reached",
            http_connections_refused.clone(),
        );
        let http_status_builds = Counter::default();
        registry.register(
            "xlb_http_status_builds",
            "Status documents built for xlb status, /metrics and /api/status (at most one per \
             collector tick or change, shared by every request)",
            http_status_builds.clone(),
        );
        let snapshots = Arc::new(crate::daemon::snapshot::Snapshots::new(
            http_status_builds.clone(),
        ));
        let fleet_connected = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "xlb_fleet_connected",
            "With --fleet: 1 while the node reaches its fleet's store (etcd), 0 while cut off",
            fleet_connected.clone(),
        );
        let held = HeldMetrics::register(&mut registry);
        let traced_packets = Counter::default();
        registry.register(
            "xlb_traced_packets",
            "Packets `xlb trace` sessions received from the balancer (docs/TRACE.md)",
            traced_packets.clone(),
        );
        let captured_packets = Counter::default();
        registry.register(
            "xlb_captured_packets",
            "Packets `xlb capture` sessions received from the balancer, with their first bytes",
            captured_packets.clone(),
        );
        let latest = Arc::new(Mutex::new(None));
        registry.register_collector(Box::new(StatusCollector {
            latest: latest.clone(),
        }));
        Self {
            registry,
            table_swap,
            maglev_build,
            collector,
            automatic_rollbacks,
            health_probe_local_errors,
            control_accept_errors,
            control_bad_requests,
            http_connections_refused,
            http_status_builds,
            fleet_connected,
            held,
            traced_packets,
            captured_packets,
            trace_active: Mutex::new(None),
            announce_errors,
            progress: Arc::default(),
            latest,
            encoding: Mutex::new(()),
            snapshots,
        }
    }

    /// The text exposition of every series, from `status`.
    pub fn encode(&self, status: Status) -> String {
        self.encode_shared(Arc::new(status))
    }

    /// The text exposition of every series, from a shared `status`.
    pub fn encode_shared(&self, status: Arc<Status>) -> String {
        let _one_at_a_time = self.encoding.lock().unwrap_or_else(|p| p.into_inner());
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The /metrics text of `published` (made once per document).
    pub fn text(&self, published: &crate::daemon::snapshot::Published) -> axum::body::Bytes {
        published
            .text
            .get_or_init(|| axum::body::Bytes::from(self.encode_shared(published.status.clone())))
            .clone()
    }

    /// Counters moved (a collector tick, the held flows published): the
    /// status document is rebuilt at the next request, which is answered
    /// with the current one meanwhile (snapshot.rs).
    pub fn invalidate(&self) {
        self.snapshots.invalidate();
    }

    /// What the daemon serves changed (an apply, an edit, a health change):
    /// no request is answered with a document made before.
    pub fn invalidate_change(&self) {
        self.snapshots.invalidate_change();
    }

    /// Count one local health-check failure.
    pub fn probe_local_error(&self, reason: &str) {
        self.health_probe_local_errors
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    /// Count one control request refused before parsing.
    pub fn control_bad_request(&self, reason: &str) {
        self.control_bad_requests
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }
}

#[derive(Debug)]
struct StatusCollector {
    latest: Arc<Mutex<Option<Arc<Status>>>>,
}

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        match latest.as_ref() {
            Some(status) => encode_status(status, &mut encoder),
            None => Ok(()),
        }
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: a name, its help, and its series (none: not written).
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: Vec<(Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let Some(metric_type) = series.first().map(|(_, m)| m.metric_type()) else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, m) in series {
        m.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn info(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: Vec<Labels>,
) -> Result<(), std::fmt::Error> {
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Info)?;
    for labels in series {
        metric.encode_info(&labels)?;
    }
    Ok(())
}

fn gauge(v: f64) -> ConstGauge<f64> {
    ConstGauge::new(v)
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn encode_status(s: &Status, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let vip = |name: &str| vec![("vip", name.to_string())];
    let backend = |v: &str, b: &str| vec![("vip", v.to_string()), ("backend", b.to_string())];
    let backends = || {
        s.vips
            .iter()
            .flat_map(|v| v.backends.iter().map(move |b| (v, b)))
    };

    info(
        e,
        "xlb_build",
        "The running xlb",
        vec![vec![("version", env!("CARGO_PKG_VERSION").to_string())]],
    )?;
    info(
        e,
        "xlb_vip",
        "One series per VIP, with its address",
        s.vips
            .iter()
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
        "xlb_vip_fingerprint",
        "What decides a VIP's new flows here (seed, hash mode, table size, backends, the live table), as a fingerprint: equal on every node of a fleet that agrees",
        s.vips
            .iter()
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
        "xlb_node_fingerprint",
        "Of every VIP's fingerprint: equal on nodes that agree on every VIP",
        vec![vec![("fingerprint", s.fingerprint.clone())]],
    )?;
    info(
        e,
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
    let vip_counter = |f: fn(&xlb_core::status::VipStatus) -> u64| {
        s.vips
            .iter()
            .map(|v| (vip(&v.name), counter(f(v))))
            .collect::<Vec<_>>()
    };
    family(
        e,
        "xlb_vip_packets",
        "Packets for the VIP, forwarded or dropped",
        vip_counter(|v| v.packets),
    )?;
    family(
        e,
        "xlb_vip_bytes",
        "Bytes of the VIP's packets",
        vip_counter(|v| v.bytes),
    )?;
    family(
        e,
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
        "xlb_backend_packets",
        "Packets sent to the backend",
        backend_counter(|b| b.packets),
    )?;
    family(
        e,
        "xlb_backend_bytes",
        "Bytes sent to the backend",
        backend_counter(|b| b.bytes),
    )?;
    family(
        e,
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
        "xlb_backend_weight",
        "Configured weight",
        backend_gauge(&|b| b.weight as f64),
    )?;
    family(
        e,
        "xlb_backend_active",
        "1 when the backend is in the Maglev table (state active)",
        backend_gauge(&|b| (b.state == "active") as u8 as f64),
    )?;
    family(
        e,
        "xlb_backend_expected_share_ratio",
        "Weight over the sum of the active backends' weights",
        backend_gauge(&|b| b.expected_share_ratio),
    )?;
    family(
        e,
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
        "xlb_backend_observed_share_ratio",
        "The backend's share of the VIP's signal over the detector's window",
        observed,
    )?;
    let per_signal = |f: fn(&xlb_core::status::SignalStatus) -> Option<f64>| {
        s.vips
            .iter()
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
        "xlb_vip_worst_ratio",
        "Observed over expected share of the backend furthest from 1",
        per_signal(|sig| sig.worst_ratio),
    )?;
    family(
        e,
        "xlb_vip_share_cv",
        "Coefficient of variation of observed/expected across active backends",
        per_signal(|sig| sig.cv),
    )?;
    let mut states = Vec::new();
    for v in &s.vips {
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
        "xlb_vip_imbalance_state",
        "The imbalance detector's verdict: 1 for the current state",
        states,
    )?;
    family(
        e,
        "xlb_vip_table_drift",
        "1 when the live table or backend entries differ from what xlb applied",
        s.vips
            .iter()
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
        "xlb_xdp_packets",
        "Packets by XDP action",
        named(&s.actions, "action", |c| c.packets),
    )?;
    family(
        e,
        "xlb_xdp_bytes",
        "Bytes by XDP action",
        named(&s.actions, "action", |c| c.bytes),
    )?;
    family(
        e,
        "xlb_dropped_packets",
        "Packets for a VIP that were dropped, by reason",
        named(&s.drops, "reason", |c| c.packets),
    )?;
    family(
        e,
        "xlb_cpu_packets",
        "Packets the program saw on each CPU",
        s.cpus
            .iter()
            .map(|c| (vec![("cpu", c.cpu.to_string())], counter(c.packets)))
            .collect(),
    )?;
    family(
        e,
        "xlb_map_entries",
        "Entries in use",
        s.maps
            .iter()
            .map(|m| (vec![("map", m.name.clone())], gauge(m.entries as f64)))
            .collect(),
    )?;
    family(
        e,
        "xlb_map_max_entries",
        "Capacity of the map",
        s.maps
            .iter()
            .map(|m| (vec![("map", m.name.clone())], gauge(m.max_entries as f64)))
            .collect(),
    )?;
    family(
        e,
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
        "xlb_conn_table_entries",
        "Flows the connection table remembers",
        conn(|c| c.entries as f64),
    )?;
    family(
        e,
        "xlb_conn_table_capacity",
        "The connection table's max_entries (the LRU evicts beyond)",
        conn(|c| c.capacity as f64),
    )?;
    family(
        e,
        "xlb_conn_table_stale_entries",
        "Connection-table entries naming a backend id not in the applied config",
        conn(|c| c.stale_entries as f64),
    )?;
    family(
        e,
        "xlb_conn_table_scan_seconds",
        "How long the last count of the connection table took",
        conn(|c| c.scan_seconds),
    )?;
    family(
        e,
        "xlb_conn_table_last_scan_timestamp_seconds",
        "Unix time of the last count of the connection table",
        conn(|c| c.scanned_at_unix_seconds),
    )?;
    family(
        e,
        "xlb_backend_flows",
        "Flows the connection table remembers for the backend (what a draining backend still carries)",
        backends()
            .filter_map(|(v, b)| Some((backend(&v.name, &b.name), gauge(b.flows? as f64))))
            .collect(),
    )?;
    family(
        e,
        "xlb_config_revision",
        "Revision of the applied config",
        vec![(Vec::new(), gauge(s.revision as f64))],
    )?;
    family(
        e,
        "xlb_config_last_apply_timestamp_seconds",
        "Unix time of the last apply",
        vec![(Vec::new(), gauge(s.applied_at_unix_seconds as f64))],
    )?;
    family(
        e,
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
    encode_health(s, e)?;
    encode_announce(s, e)?;
    Ok(())
}

/// Announcing (xlb_core::announce): each VIP's state and the node's.
fn encode_announce(s: &Status, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Some(node) = &s.announce else {
        return Ok(());
    };
    family(
        e,
        "xlb_vip_announced",
        "1 while the node announces the VIP's address to its routers (a route in the \
         --announce-table), 0 while withdrawn; the reason is in xlb_vip_announce_info",
        s.vips
            .iter()
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
        "xlb_vip_announce",
        "Each VIP's announce policy and why it is (not) announced",
        s.vips
            .iter()
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
        "xlb_node_drained",
        "1 while the node is drained (xlb node drain): every VIP withdrawn, forwarding goes on",
        vec![(
            Vec::new(),
            gauge((node.state == xlb_core::announce::NodeState::Drained) as u8 as f64),
        )],
    )?;
    family(
        e,
        "xlb_announce_routes",
        "Routes xlb holds in its --announce-table (one per announced VIP address)",
        node.table
            .map(|t| {
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
fn encode_health(s: &Status, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let checked = || {
        s.vips.iter().flat_map(|v| {
            v.backends
                .iter()
                .filter_map(move |b| Some((v, b, b.health.as_ref()?)))
        })
    };
    let labels = |v: &xlb_core::status::VipStatus, b: &xlb_core::status::BackendStatus| {
        vec![("vip", v.name.clone()), ("backend", b.name.clone())]
    };
    family(
        e,
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
        "xlb_backend_health_checks",
        "Health checks of the backend, by result",
        checks,
    )?;
    family(
        e,
        "xlb_backend_health_down_events",
        "Times the health checks took the backend down",
        checked()
            .map(|(v, b, h)| (labels(v, b), counter(h.machine.down_events_total)))
            .collect(),
    )?;
    family(
        e,
        "xlb_backend_health_flapping",
        "1 while the backend is damped for flapping (it needs flap_hold of passed checks)",
        checked()
            .map(|(v, b, h)| (labels(v, b), gauge(h.machine.flapping as u8 as f64)))
            .collect(),
    )?;
    family(
        e,
        "xlb_backend_health_last_change_timestamp_seconds",
        "Unix time the backend last went up or down (or its check was set up)",
        checked()
            .map(|(v, b, h)| (labels(v, b), gauge(h.machine.since_unix_seconds)))
            .collect(),
    )?;
    family(
        e,
        "xlb_vip_health_all_down",
        "1 when every active backend of the VIP is down: its all_down policy applies",
        s.vips
            .iter()
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
    use std::collections::BTreeMap;
    use xlb_dataplane::{ConnScan, CounterSnapshot};

    fn status(scan: Option<&ConnScan>) -> Status {
        let config = xlb_core::config::parse(
            "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n\
             [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\n\
             [[vip.backend]]\nname = \"b\"\naddress = \"198.18.0.12\"\nmac = \"02:00:00:00:00:12\"\nstate = \"draining\"\n",
            "t.toml",
        )
        .unwrap();
        let desired = xlb_core::state::desired(&config, &Default::default()).unwrap();
        status_of(&desired, scan)
    }

    fn status_of(desired: &xlb_core::state::Desired, scan: Option<&ConnScan>) -> Status {
        let mut now = CounterSnapshot {
            events: vec![0; lb_common::stats::EVENT_COUNT as usize],
            ..Default::default()
        };
        now.events[lb_common::stats::EV_CONN_HIT as usize] = 41;
        now.events[lb_common::stats::EV_CONN_RESTEER as usize] = 2;
        let none = BTreeMap::new();
        let none_drift = BTreeMap::new();
        let none_checked = BTreeMap::new();
        let ctx = xlb_core::status::StatusContext {
            interface: "eth0",
            revision: 1,
            applied_at_unix_seconds: 0,
            observed_seconds: 1.0,
            generated_at_unix_seconds: 1.0,
            reports: &none,
            drift: &none_drift,
            drift_checked_at: &none_checked,
            bake: None,
            conn_scan: scan,
        };
        xlb_core::status::build(&ctx, desired, &now, &CounterSnapshot::default())
    }

    /// A backend's health checks in /metrics (what the status shows of them
    /// is tested in `xlb_core::health`).
    #[test]
    fn health_is_exported() {
        let config = xlb_core::config::parse(
            "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n\
             [vip.health]\ninterval = \"1s\"\ntimeout = \"500ms\"\nfall = 2\nrise = 2\n\
             [[vip.backend]]\nname = \"b1\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\n\
             [[vip.backend]]\nname = \"b2\"\naddress = \"198.18.0.12\"\nmac = \"02:00:00:00:00:12\"\n",
            "t.toml",
        )
        .unwrap();
        let mut monitor = xlb_core::health::Monitor::new();
        let at = |t: f64| xlb_core::clock::Clock {
            mono: t,
            unix: 1e9 + t,
        };
        monitor.sync(&config, at(0.0));
        for t in [1.0, 2.0] {
            for probe in monitor.due(t) {
                let result = if probe.key.backend == "b2" {
                    Err("connect: Connection refused (os error 111)".to_string())
                } else {
                    Ok(())
                };
                monitor.report(&probe, result, at(t));
            }
        }
        let mut desired = xlb_core::state::desired(&config, &Default::default()).unwrap();
        for (vip, membership) in xlb_core::health::patch_desired(&monitor, &mut desired) {
            monitor.set_live(&vip, membership);
        }
        let mut s = status_of(&desired, None);
        xlb_core::health::annotate(&mut s, &monitor);
        let metrics = Metrics::new().encode(s);
        for line in [
            "xlb_backend_health_up{vip=\"web\",backend=\"b2\"} 0.0",
            "xlb_backend_health_up{vip=\"web\",backend=\"b1\"} 1.0",
            "xlb_backend_health_in_table{vip=\"web\",backend=\"b2\"} 0.0",
            "xlb_backend_health_checks_total{vip=\"web\",backend=\"b2\",result=\"failed\"} 2",
            "xlb_backend_health_down_events_total{vip=\"web\",backend=\"b2\"} 1",
            "xlb_vip_health_all_down{vip=\"web\"} 0.0",
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "no {line:?} in:\n{metrics}"
            );
        }
    }

    /// Each VIP's announce state and reason, and the node's, from the
    /// status; none of it from a status without announcing.
    #[test]
    fn announcing_is_exported() {
        use xlb_core::announce::{NodeAnnounce, NodeState, Reason, VipAnnounce};
        let mut s = status(None);
        let quiet = Metrics::new().encode(s.clone());
        assert!(!quiet.contains("xlb_vip_announced"), "{quiet}");
        s.vips[0].announce = Some(VipAnnounce {
            policy: xlb_core::config::Announce::Healthy,
            announced: false,
            reason: Reason::NoBackendUp,
            backends_up: 0,
            hold_remaining_seconds: None,
        });
        s.announce = Some(NodeAnnounce {
            state: NodeState::Drained,
            table: Some(100),
            routes: vec!["198.18.100.1".parse().unwrap()],
            ..Default::default()
        });
        let text = Metrics::new().encode(s);
        for line in [
            "xlb_vip_announced{vip=\"web\"} 0.0",
            "xlb_vip_announce_info{vip=\"web\",policy=\"healthy\",reason=\"no_backend_up\"} 1",
            "xlb_node_drained{} 1.0",
            "xlb_announce_routes{table=\"100\"} 1.0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }

    #[test]
    fn fingerprints_are_exported() {
        let s = status(None);
        let fp = s.vips[0]
            .decision
            .as_ref()
            .expect("a decision")
            .fingerprint
            .clone();
        let text = Metrics::new().encode(s.clone());
        assert!(
            text.lines()
                .any(|l| l
                    == format!("xlb_vip_fingerprint_info{{vip=\"web\",fingerprint=\"{fp}\"}} 1")),
            "{text}"
        );
        assert!(text.contains(&format!(
            "xlb_node_fingerprint_info{{fingerprint=\"{}\"}} 1",
            s.fingerprint
        )));
    }

    #[test]
    fn events_and_the_connection_table_are_exported() {
        let s = status(None);
        let ids: Vec<u32> = s.vips[0].backends.iter().map(|b| b.id).collect();
        let scan = ConnScan {
            entries: 1500,
            capacity: 262_144,
            by_backend: BTreeMap::from([(ids[0], 1000), (ids[1], 480), (60_000, 20)]),
            scanned_at_unix_seconds: 1_700_000_000.0,
            seconds: 0.03,
        };
        let text = Metrics::new().encode(status(Some(&scan)));
        for line in [
            "xlb_dataplane_events_total{event=\"conn_hit\"} 41",
            "xlb_dataplane_events_total{event=\"conn_resteer\"} 2",
            "xlb_dataplane_events_total{event=\"vlan\"} 0",
            "xlb_conn_table_entries{} 1500.0",
            "xlb_conn_table_capacity{} 262144.0",
            "xlb_conn_table_stale_entries{} 20.0",
            "xlb_conn_table_scan_seconds{} 0.03",
            "xlb_conn_table_last_scan_timestamp_seconds{} 1700000000.0",
            "xlb_backend_flows{vip=\"web\",backend=\"a\"} 1000.0",
            "xlb_backend_flows{vip=\"web\",backend=\"b\"} 480.0",
            "# TYPE xlb_dataplane_events counter",
            "# TYPE xlb_conn_table_entries gauge",
            "# TYPE xlb_backend_flows gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
        assert_eq!(
            text.matches("xlb_dataplane_events_total{").count(),
            lb_common::stats::EVENT_COUNT as usize
        );
    }

    #[test]
    fn no_connection_table_series_before_the_first_scan() {
        let text = Metrics::new().encode(status(None));
        assert!(!text.contains("xlb_conn_table_"), "{text}");
        assert!(!text.contains("xlb_backend_flows"), "{text}");
        assert!(text.contains("xlb_dataplane_events_total{event=\"conn_hit\"} 41"));
    }
}
