//! Counting the connection tables: flows written into XLB_CONNS_V4 and
//! XLB_CONNS from userspace (the program is loaded, not attached, so
//! nothing else writes) are counted exactly, both families together, in
//! total and per backend; entries naming ids the
//! applied config does not hold are stale; flows the program itself
//! remembered are counted under the backends the simulator picks; a table
//! loaded with a smaller `conn_table_size` holds no more than that; a full
//! default-size table (262,144 entries) counts the same as a walk key by
//! key, and the scan's cost there is printed (docs/METRICS.md quotes it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use lb_common::hash::{ConnEntry, FlowWords, addr_words, ports_word};
use lb_common::maps::CONN_TABLE_SIZE;
use lb_common::stats::XDP_TX;
use tests::packets::{self, LB_MAC};
use xlb::daemon::controller::Controller;
use xlb_core::change::{ApplyOptions, Candidate, Origin};
use xlb_core::revision::Kind;
use xlb_core::state::Allocation;
use xlb_dataplane::{ConnFlows, ConnTable, Dataplane};

const CONFIG: &str = "interface = \"xlbcn0\"\nhash_seed = 7\n\
    [[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n\
    [[vip.backend]]\nname = \"b0\"\naddress = \"198.18.1.1\"\nmac = \"02:00:00:00:01:01\"\n\
    [[vip.backend]]\nname = \"b1\"\naddress = \"198.18.1.2\"\nmac = \"02:00:00:00:01:02\"\n\
    [[vip.backend]]\nname = \"b2\"\naddress = \"198.18.1.3\"\nmac = \"02:00:00:00:01:03\"\nstate = \"draining\"\n\
    [[vip]]\nname = \"dns\"\naddress = \"198.18.100.2\"\nport = 53\nprotocol = \"udp\"\ntable_size = 1021\n\
    [[vip.backend]]\nname = \"d0\"\naddress = \"198.18.2.1\"\nmac = \"02:00:00:00:02:01\"\n";

/// The `i`th test flow: distinct for every i < 2^24.
fn flow(i: u32) -> FlowWords {
    FlowWords {
        src: addr_words(&[198, 18, (i >> 8) as u8, i as u8]),
        dst: addr_words(&[198, 18, 100, 1]),
        ports: ports_word(10_000 + (i >> 16) as u16, 80),
        proto: 6,
    }
}

/// The `i`th flow of both families: IPv4's `flow(i)` for even i, an IPv6
/// flow for odd i (each family's table then holds half of them).
fn mixed(i: u32) -> FlowWords {
    if i.is_multiple_of(2) {
        return flow(i);
    }
    let b = i.to_be_bytes();
    FlowWords {
        src: addr_words(&[
            0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, b[0], b[1], b[2], b[3],
        ]),
        dst: addr_words(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
        ports: ports_word(10_000, 80),
        proto: 6,
    }
}

/// A table entry naming backend `id` (the hash is not read by the scan).
fn entry(id: u32) -> ConnEntry {
    ConnEntry {
        backend_id: id,
        flow_hash: id.rotate_left(16),
    }
}

/// Write flow `mixed(i)` -> pick(i) for every i < n; the counts written
/// per id.
fn fill(map: &mut ConnFlows, n: u32, pick: impl Fn(u32) -> u32) -> BTreeMap<u32, u64> {
    let mut written = BTreeMap::new();
    for i in 0..n {
        let id = pick(i);
        map.insert(mixed(i), entry(id), 0).expect("insert a flow");
        *written.entry(id).or_insert(0) += 1;
    }
    written
}

/// `fill` for a table the program may have made with per-CPU LRU lists
/// (BPF_F_NO_COMMON_LRU): each CPU then takes free entries only from its
/// own share, so a table filled from one CPU would stay partly empty. Each
/// CPU this process may run on writes an equal slice of the n flows.
fn fill_from_every_cpu(table: &ConnTable, n: u32, pick: impl Fn(u32) -> u32 + Sync) {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let allowed = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    let slices = cpus.len() as u32;
    std::thread::scope(|scope| {
        for (k, &cpu) in cpus.iter().enumerate() {
            let pick = &pick;
            let mut map = table.flows_map().expect("a handle per thread");
            scope.spawn(move || {
                let mut on = CpuSet::new();
                on.set(cpu).expect("a CPU number");
                // Pid 0: the calling thread.
                sched_setaffinity(Pid::from_raw(0), &on).expect("pin the thread");
                let k = k as u32;
                for i in k * n / slices..(k + 1) * n / slices {
                    map.insert(flow(i), entry(pick(i)), 0)
                        .expect("insert a flow");
                }
            });
        }
    });
}

/// The table counted the slow way, key by key (sound here: nothing else
/// writes while it runs).
fn walk_keys(map: &ConnFlows) -> (u64, BTreeMap<u32, u64>) {
    let mut by_backend = BTreeMap::new();
    let mut entries = 0;
    for item in map.iter() {
        let (_, e) = item.expect("read an entry");
        *by_backend.entry(e.backend_id).or_insert(0) += 1;
        entries += 1;
    }
    (entries, by_backend)
}

#[test]
fn fifty_thousand_flows_counted_per_backend_and_stale() {
    tests::require_privileges!();
    let metrics = Arc::new(xlb::daemon::metrics::Metrics::new());
    let dp = Dataplane::load().expect("load the balancer");
    let mut controller = Controller::new(dp, "xlbcn0".into(), LB_MAC, metrics.clone());
    let candidate = Candidate::parse(CONFIG, "conns.toml", Origin::default()).expect("valid");
    controller
        .apply(candidate, ApplyOptions::unchecked(Kind::Apply))
        .expect("apply");
    let status = controller.status().expect("status");
    let ids: BTreeMap<String, u32> = status
        .vips
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| (b.name.clone(), b.id)))
        .collect();
    let used: Vec<u32> = ids.values().copied().collect();
    let stale_id = (0..).find(|id| !used.contains(id)).unwrap();

    let table: ConnTable = controller.conn_table();
    assert_eq!(table.capacity(), CONN_TABLE_SIZE);
    let empty = table.scan().expect("scan the empty table");
    assert_eq!((empty.entries, empty.by_backend.len()), (0, 0));

    // Uneven on purpose: 4:3:2 over web's backends, 1 in 20 to dns's d0,
    // 1 in 20 to an id no backend holds.
    let mut map = table.flows_map().expect("a second handle");
    let pick = |i: u32| match i % 20 {
        0..=7 => ids["b0"],
        8..=13 => ids["b1"],
        14..=17 => ids["b2"],
        18 => ids["d0"],
        _ => stale_id,
    };
    let n = 50_000;
    let written = fill(&mut map, n, pick);

    for batch in [1, 7, 4096, 100_000] {
        let scan = table.scan_in_batches(batch).expect("scan");
        assert_eq!(scan.entries, n as u64, "batch {batch}");
        assert_eq!(scan.by_backend, written, "batch {batch}");
        assert_eq!(scan.capacity, CONN_TABLE_SIZE);
    }

    // Through the controller: per-backend flows, stale entries, /metrics.
    let scan = table.scan().expect("scan");
    eprintln!("50,000 entries counted in {:.1} ms", scan.seconds * 1e3);
    controller.record_conn_scan(scan);
    let status = controller.status().expect("status");
    let flows: BTreeMap<&str, Option<u64>> = status
        .vips
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| (b.name.as_str(), b.flows)))
        .collect();
    assert_eq!(
        flows,
        BTreeMap::from([
            ("b0", Some(20_000)),
            ("b1", Some(15_000)),
            ("b2", Some(10_000)),
            ("d0", Some(2_500)),
        ])
    );
    let c = status.conn_table.as_ref().expect("the recorded scan");
    assert_eq!(
        (c.entries, c.capacity, c.stale_entries),
        (50_000, CONN_TABLE_SIZE as u64, 2_500)
    );
    let text = xlb_core::status::render_table(&status, false);
    let b2 = text
        .lines()
        .find(|l| l.contains(" b2 "))
        .unwrap_or_else(|| panic!("no b2 row:\n{text}"));
    assert!(
        b2.contains("draining") && b2.trim_end().ends_with("10000"),
        "the draining backend's row shows its flows: {b2}"
    );
    assert!(
        text.contains("connection table: 50000 of 262144 flows"),
        "{text}"
    );

    let exposition = metrics.encode(status);
    for line in [
        "xlb_conn_table_entries{} 50000.0".to_string(),
        format!("xlb_conn_table_capacity{{}} {CONN_TABLE_SIZE}.0"),
        "xlb_conn_table_stale_entries{} 2500.0".to_string(),
        "xlb_backend_flows{vip=\"web\",backend=\"b2\"} 10000.0".to_string(),
        "xlb_backend_flows{vip=\"dns\",backend=\"d0\"} 2500.0".to_string(),
        // Nothing was sent through the program: every event is 0.
        "xlb_dataplane_events_total{event=\"conn_hit\"} 0".to_string(),
    ] {
        assert!(
            exposition.lines().any(|l| l == line),
            "no {line:?} in /metrics:\n{exposition}"
        );
    }
    assert!(exposition.contains("xlb_conn_table_scan_seconds{} "));
}

#[test]
fn flows_the_program_remembered_are_counted_per_backend() {
    tests::require_privileges!();
    let config = xlb_core::config::parse(CONFIG, "conns.toml").expect("a valid config");
    let desired = xlb_core::state::desired(&config, &Allocation::default()).expect("desired");
    let mut dp = Dataplane::load().expect("load the balancer");
    dp.apply(LB_MAC, &desired, None).expect("apply");

    // 3,000 TCP SYNs to web and 1,000 UDP datagrams to dns, each a new flow.
    let mut want: BTreeMap<u32, u64> = BTreeMap::new();
    let mut out = vec![0u8; 4096];
    let flows = (0..3000u16)
        .map(|i| {
            packets::flow(
                6,
                &format!("198.18.5.{}:{}", i % 250, 20_000 + i),
                "198.18.100.1:80",
            )
        })
        .chain((0..1000u16).map(|i| {
            packets::flow(
                17,
                &format!("198.18.6.{}:{}", i % 250, 30_000 + i),
                "198.18.100.2:53",
            )
        }));
    for f in flows {
        let got = packets::run(dp.program(), &packets::frame(f), &mut out).expect("test run");
        assert_eq!(
            got.action,
            XDP_TX,
            "{f:?}: {}",
            packets::action_name(got.action)
        );
        let (_, id) = packets::expected_backend(&desired, &f).expect("a VIP flow");
        *want.entry(id).or_default() += 1;
    }
    let scan = dp.conn_table().scan().expect("scan");
    assert_eq!(scan.entries, 4000);
    assert_eq!(scan.by_backend, want);
    // Every active backend got some, the draining one none: the test would
    // notice flows counted under one id only.
    let names: Vec<&str> = desired
        .vips
        .iter()
        .flat_map(|v| v.config.backends.iter().zip(&v.backend_ids))
        .filter(|(_, id)| want.contains_key(id))
        .map(|(b, _)| b.name.as_str())
        .collect();
    assert_eq!(names, ["b0", "b1", "d0"], "{want:?}");
}

#[test]
fn a_smaller_table_holds_no_more_than_its_size() {
    tests::require_privileges!();
    let size = 4096;
    let dp = Dataplane::load_with(size).expect("load the balancer");
    assert_eq!(dp.conn_table_size(), size);
    let table = dp.conn_table();
    assert_eq!(table.capacity(), size);
    // Twice the size: the LRU evicts as it fills.
    fill_from_every_cpu(&table, 2 * size, |i| i % 3);
    let scan = table.scan().expect("scan");
    let (entries, by_backend) = walk_keys(&table.flows_map().expect("a second handle"));
    assert!(
        scan.entries <= u64::from(size) && scan.entries >= u64::from(size) / 2,
        "{} entries in a table of {size}",
        scan.entries
    );
    assert_eq!((scan.entries, scan.by_backend), (entries, by_backend));
    assert_eq!(scan.capacity, size);
}

#[test]
fn a_full_default_table_counts_like_a_key_walk() {
    tests::require_privileges!();
    let dp = Dataplane::load().expect("load the balancer");
    let table = dp.conn_table();
    let capacity = table.capacity();
    assert_eq!(capacity, CONN_TABLE_SIZE);
    let started = Instant::now();
    // Ids over the whole dense range and beyond it.
    fill_from_every_cpu(&table, capacity, |i| (i * 7919) % 70_000);
    eprintln!(
        "wrote {capacity} entries in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let map = table.flows_map().expect("a second handle");
    let (entries, by_backend) = walk_keys(&map);
    // The LRU may have evicted a few of its own as it filled (each CPU
    // keeps free nodes aside); the table is still full for our purpose.
    assert!(
        entries as f64 >= 0.98 * capacity as f64,
        "only {entries} of {capacity} entries stayed"
    );

    // Wall time is what the scan's figure reports; the thread's CPU time
    // (user, and system: the kernel's walk and copies) is what it costs,
    // and holds still when the shared machine is busy.
    let mut wall = Vec::new();
    let mut user = Vec::new();
    let mut system = Vec::new();
    for _ in 0..7 {
        let before = thread_cpu_seconds();
        let scan = table.scan().expect("scan the full table");
        let after = thread_cpu_seconds();
        user.push(after.0 - before.0);
        system.push(after.1 - before.1);
        assert_eq!(scan.entries, entries);
        assert_eq!(scan.by_backend, by_backend);
        wall.push(scan.seconds);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!(
            "{:.1} ms (min {:.1}, max {:.1})",
            v[3] * 1e3,
            v[0] * 1e3,
            v[6] * 1e3
        )
    };
    eprintln!(
        "full table ({entries} entries), 7 scans: wall {}; CPU user {}, system {}",
        median(wall),
        median(user),
        median(system)
    );
}

/// CPU time of the calling thread: (user, system) seconds.
fn thread_cpu_seconds() -> (f64, f64) {
    use nix::libc;
    // SAFETY: getrusage fills one rusage, which `usage` is; zeroed is a
    // valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD)");
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}
