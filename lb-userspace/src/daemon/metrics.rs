//! Prometheus metrics (docs/METRICS.md): a prometheus-client registry with
//! the daemon's histograms and counters, written at each scrape, followed
//! by the status document's series, written when the document was
//! published (exposition.rs, snapshot.rs). Series come from the document,
//! so a VIP or backend that left the config leaves /metrics too.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

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
            snapshots,
        }
    }

    /// The text exposition of every series, from `status` (tests).
    pub fn encode(&self, status: Status) -> String {
        let published = crate::daemon::snapshot::Published::new(status, None)
            .expect("a status document encodes");
        let mut text = self.registry_text().to_vec();
        text.extend(published.text().inflate());
        text.extend_from_slice(b"# EOF\n");
        String::from_utf8(text).expect("the exposition is UTF-8")
    }

    /// The registry's series (written now, at each scrape), without the
    /// end: the status document's series follow them (http.rs).
    pub fn registry_text(&self) -> Bytes {
        let mut registry = String::new();
        prometheus_client::encoding::text::encode_registry(&mut registry, &self.registry)
            .expect("writing to a String cannot fail");
        Bytes::from(registry)
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
        xlb_core::status::build(&ctx, desired, &now, &Default::default())
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
