//! End to end in network namespaces: the real `xlb` daemon attached to a veth,
//! real TCP and UDP from a client namespace through the XDP program to three
//! backends (weights 1:1:2), then bad configs refused with the last good
//! tables kept, then a live re-weighting to 1:1:1 under traffic. Needs root.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tests::client::{Exchange, Proto, Tally, Until, drive};
use tests::servers::Servers;
use tests::testbed::{self, TCP_PORT, Testbed, UDP_PORT};
use tests::xlbd::Daemon;

const FLOWS: usize = 4000;
const WORKERS: usize = 8;
/// Allowed distance of an observed share from the expected one.
const TOLERANCE: f64 = 0.03;

fn assert_split(what: &str, tally: &Tally, expected: &[(&str, f64)]) {
    assert!(
        tally.failures.is_empty(),
        "{what}: {} failures, first: {:?}",
        tally.failures.len(),
        tally.failures.first()
    );
    for (name, share) in expected {
        let got = tally.share(name);
        assert!(
            (got - share).abs() <= TOLERANCE,
            "{what}: backend {name} got {:.1}% of {} exchanges, expected {:.1}% ± 3 points ({:?})",
            got * 100.0,
            tally.total_ok(),
            share * 100.0,
            tally.per_backend
        );
    }
}

/// The status document's observed share of each backend of `vip`.
fn status_shares(daemon: &Daemon, vip: &str) -> Vec<(String, f64)> {
    let status = daemon.status().expect("xlb status");
    let v = status["vips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == vip)
        .expect("vip in status");
    v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["observed_share_ratio"].as_f64().unwrap_or(0.0),
            )
        })
        .collect()
}

fn assert_status_split(daemon: &Daemon, vip: &str, expected: &[(&str, f64)]) {
    let shares = status_shares(daemon, vip);
    for (name, share) in expected {
        let got = shares
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
            .unwrap();
        assert!(
            (got - share).abs() <= TOLERANCE,
            "xlb status {vip}: {name} observed {got:.3}, expected {share:.3}: {shares:?}"
        );
    }
}

fn apply(daemon: &Daemon, dir: &std::path::Path, name: &str, text: &str) -> std::process::Output {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    daemon.xlb(&["apply", path.to_str().unwrap()]).unwrap()
}

#[test]
fn balances_real_tcp_and_udp_and_reweights_live() {
    tests::require_privileges!();
    let dir = std::env::temp_dir().join(format!("xlb-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bed = Testbed::new("xlbe2e", 3).expect("testbed");
    let _servers = Servers::start(&bed).expect("backend servers");
    let config = dir.join("xlb.toml");
    std::fs::write(&config, testbed::config(&[1, 1, 2])).unwrap();
    let mut daemon = Daemon::start(&bed.lb.ns, &config, &dir).expect("xlb run");

    let weighted = [("b1", 0.25), ("b2", 0.25), ("b3", 0.5)];
    let v4 = |port| SocketAddr::new(Testbed::vip(false), port);
    let v6 = |port| SocketAddr::new(Testbed::vip(true), port);

    // TCP over IPv4: 4,000 real connections.
    let t0 = Instant::now();
    let tcp = drive(
        &bed.client.ns,
        v4(TCP_PORT),
        Proto::Tcp,
        WORKERS,
        Until::Count(FLOWS),
    );
    eprintln!("TCP/IPv4: {} exchanges in {:?}", tcp.len(), t0.elapsed());
    assert_eq!(tcp.len(), FLOWS);
    assert_split("TCP/IPv4", &Tally::of(&tcp), &weighted);
    assert_status_split(&daemon, "web", &weighted);

    // UDP over IPv4.
    let udp = drive(
        &bed.client.ns,
        v4(UDP_PORT),
        Proto::Udp,
        WORKERS,
        Until::Count(FLOWS),
    );
    assert_split("UDP/IPv4", &Tally::of(&udp), &weighted);
    assert_status_split(&daemon, "dns", &weighted);

    // TCP and UDP over IPv6.
    let tcp6 = drive(
        &bed.client.ns,
        v6(TCP_PORT),
        Proto::Tcp,
        WORKERS,
        Until::Count(FLOWS),
    );
    assert_split("TCP/IPv6", &Tally::of(&tcp6), &weighted);
    assert_status_split(&daemon, "web6", &weighted);
    let udp6 = drive(
        &bed.client.ns,
        v6(UDP_PORT),
        Proto::Udp,
        WORKERS,
        Until::Count(FLOWS),
    );
    assert_split("UDP/IPv6", &Tally::of(&udp6), &weighted);

    // Bad configs are refused with exit code 2 and change nothing.
    let revision = daemon.status().unwrap()["revision"].as_u64().unwrap();
    let bad_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb-core/tests/bad_configs");
    let mut bad: Vec<_> = std::fs::read_dir(&bad_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    bad.sort();
    assert!(
        bad.len() >= 20,
        "expected the bad config fixtures in {}",
        bad_dir.display()
    );
    // And a valid config for another interface: needs a restart, refused.
    let other_interface =
        testbed::config(&[1, 1, 1]).replace("interface = \"eth0\"", "interface = \"eth1\"");
    let other = dir.join("other-interface.toml");
    std::fs::write(&other, other_interface).unwrap();
    bad.push(other);
    for path in &bad {
        let out = daemon.xlb(&["apply", path.to_str().unwrap()]).unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.stderr.is_empty(),
            "{}: no error message",
            path.display()
        );
    }
    assert_eq!(
        daemon.status().unwrap()["revision"].as_u64().unwrap(),
        revision,
        "a refused apply changed the revision"
    );
    let still = drive(
        &bed.client.ns,
        v4(TCP_PORT),
        Proto::Tcp,
        WORKERS,
        Until::Count(400),
    );
    assert!(Tally::of(&still).failures.is_empty());

    // Re-weight to 1:1:1 while connections keep being made.
    let equal = [("b1", 1.0 / 3.0), ("b2", 1.0 / 3.0), ("b3", 1.0 / 3.0)];
    let new_config = testbed::config(&[1, 1, 1]);
    let stop = Arc::new(AtomicBool::new(false));
    let (client_ns, flag) = (bed.client.ns.handle(), stop.clone());
    let traffic = std::thread::spawn(move || {
        drive(
            &client_ns,
            v4(TCP_PORT),
            Proto::Tcp,
            WORKERS,
            // Bounded, far above what the ~5 s below make even on a fast
            // machine: a cap reached before the apply ends would leave too
            // few exchanges after it (seen with 20,000 under load).
            Until::Flag(flag, 200_000),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let out = apply(&daemon, &dir, "equal.toml", &new_config);
    let applied_at = Instant::now();
    assert!(
        out.status.success(),
        "apply 1:1:1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Enough exchanges after the apply for a ±3-point check (about 6,000).
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let live: Vec<Exchange> = traffic.join().unwrap();
    let all = Tally::of(&live);
    assert!(
        all.failures.is_empty(),
        "{} of {} exchanges failed across the apply: {:?}",
        all.failures.len(),
        live.len(),
        all.failures.first()
    );
    let after = Tally::of(live.iter().filter(|e| e.started > applied_at));
    eprintln!(
        "live re-weighting: {} exchanges, {} after the apply: {:?}",
        live.len(),
        after.total_ok(),
        after.per_backend
    );
    assert!(
        after.total_ok() >= 2000,
        "too few exchanges after the apply to judge the split: {}",
        after.total_ok()
    );
    assert_split("TCP/IPv4 after 1:1:1", &after, &equal);
    assert_status_split(&daemon, "web", &equal);

    // SIGTERM exits cleanly. The daemon pinned its link on the bpffs it
    // mounted in its own mount namespace (`ip netns exec` gives it a private
    // /sys), which ends with it: the kernel then releases the link. (On a
    // host's bpffs the program stays attached: restart.rs.)
    let status = daemon.stop().unwrap();
    assert!(
        status.success(),
        "xlb run exited with {status}: {}",
        daemon.log_text()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut link = bed.lb.ns.ip(&["link", "show", "eth0"]).unwrap();
    while link.contains("xdp") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        link = bed.lb.ns.ip(&["link", "show", "eth0"]).unwrap();
    }
    assert!(
        !link.contains("xdp"),
        "XDP program still attached after SIGTERM: {link}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
