//! Fuzzing the balancer through BPF_PROG_TEST_RUN: 1,000,000 frames, random
//! bytes and mutations of valid VIP and non-VIP frames, reproducible from a
//! seed (XLB_FUZZ_SEED; XLB_FUZZ_FRAMES for the count). For every frame:
//! the kernel accepts the run; a frame the program passes or drops leaves
//! byte for byte as it came; a frame it sends (XDP_TX) differs only in its
//! MACs (destination a backend's, source the balancer's), parses as IPv4 or
//! IPv6 with TCP or UDP, and is addressed to a VIP.

use std::collections::BTreeSet;
use std::net::IpAddr;

use lb_common::{
    PROTO_TCP, PROTO_UDP,
    stats::{XDP_DROP, XDP_PASS, XDP_TX},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tests::packets::{LB_MAC, action_name, flow, frame, run};
use xlb::dataplane::Dataplane;
use xlb::state::Allocation;

const CONFIG: &str = r#"
interface = "xlbfuzz0"
hash_seed = 11

[[vip]]
name = "web4"
address = "198.18.100.1"
port = 80
protocol = "tcp"
table_size = 1021
  [[vip.backend]]
  name = "a"
  address = "198.18.1.1"
  mac = "02:00:00:01:00:01"
  [[vip.backend]]
  name = "b"
  address = "198.18.1.2"
  mac = "02:00:00:01:00:02"

[[vip]]
name = "dns6"
address = "2001:db8:100::1"
port = 0
protocol = "udp"
table_size = 1021
  [[vip.backend]]
  name = "a"
  address = "2001:db8:1::1"
  mac = "02:00:00:02:00:01"
"#;

fn seeds() -> Vec<Vec<u8>> {
    vec![
        frame(flow(PROTO_TCP, "198.18.0.5:40000", "198.18.100.1:80")),
        frame(flow(
            PROTO_UDP,
            "[2001:db8::5]:5353",
            "[2001:db8:100::1]:53",
        )),
        // Not for a VIP: other address, other port, other protocol.
        frame(flow(PROTO_TCP, "198.18.0.5:40000", "198.18.100.9:80")),
        frame(flow(PROTO_TCP, "198.18.0.5:40000", "198.18.100.1:81")),
        frame(flow(PROTO_UDP, "198.18.0.5:40000", "198.18.100.1:80")),
    ]
}

/// One fuzz input: random bytes, or a seed frame with a few bytes changed,
/// cut short or grown.
fn input(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.random_range(0..10) {
        0 => {
            let n = rng.random_range(14..=128);
            (0..n).map(|_| rng.random()).collect()
        }
        _ => {
            let mut f = seeds[rng.random_range(0..seeds.len())].clone();
            for _ in 0..rng.random_range(1..=4) {
                let i = rng.random_range(0..f.len());
                f[i] = rng.random();
            }
            match rng.random_range(0..8) {
                0 => f.truncate(rng.random_range(14..=f.len())),
                1 => f.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
                _ => {}
            }
            f
        }
    }
}

/// A sent frame must parse as IPv4/IPv6 with TCP or UDP (or be a fragment
/// of such a datagram), to a VIP address.
fn well_formed(out: &[u8], vips: &BTreeSet<IpAddr>) -> Result<(), String> {
    let p = etherparse::SlicedPacket::from_ethernet(out).map_err(|e| format!("{e}"))?;
    let (dst, fragment): (IpAddr, bool) = match &p.net {
        Some(etherparse::NetSlice::Ipv4(v4)) => (
            v4.header().destination_addr().into(),
            v4.is_payload_fragmented(),
        ),
        Some(etherparse::NetSlice::Ipv6(v6)) => (
            v6.header().destination_addr().into(),
            v6.is_payload_fragmented(),
        ),
        other => return Err(format!("no IP header: {other:?}")),
    };
    if !vips.contains(&dst) {
        return Err(format!("sent to {dst}, not a VIP"));
    }
    match &p.transport {
        Some(etherparse::TransportSlice::Tcp(_)) | Some(etherparse::TransportSlice::Udp(_)) => {
            Ok(())
        }
        // A later fragment carries no L4 header: its ports came from the
        // first fragment of its datagram (the fragment tracker).
        None if fragment => Ok(()),
        other => Err(format!("no TCP/UDP header: {other:?}")),
    }
}

#[test]
fn a_million_random_and_mutated_frames() {
    if !tests::privileged("a_million_random_and_mutated_frames") {
        return;
    }
    let seed: u64 = std::env::var("XLB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x786c_6266_757a_7a00);
    let count: usize = std::env::var("XLB_FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let config = xlb::config::parse(CONFIG, "fuzz.toml").expect("fuzz config");
    let desired = xlb::state::desired(&config, &Allocation::default()).expect("desired");
    let mut dp = Dataplane::load().expect("load the balancer");
    dp.apply(LB_MAC, &desired, None).expect("apply");
    let backend_macs: BTreeSet<[u8; 6]> = config
        .vips
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| b.mac.0))
        .collect();
    let vips: BTreeSet<IpAddr> = config.vips.iter().map(|v| v.address).collect();

    let seeds = seeds();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![0u8; 4096];
    let (mut sent, mut passed, mut dropped, mut refused) = (0u64, 0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    for n in 0..count {
        let f = input(&mut rng, &seeds);
        let outcome = match run(dp.program(), &f, &mut out) {
            Ok(o) => o,
            Err(_) => {
                // The kernel refuses frames shorter than an Ethernet header;
                // inputs are never that short, so any refusal is a finding.
                refused += 1;
                failures.push(format!("frame {n}: the kernel refused the run: {f:02x?}"));
                continue;
            }
        };
        let got = &out[..outcome.len];
        let problem = match outcome.action {
            XDP_PASS | XDP_DROP => {
                if outcome.action == XDP_PASS {
                    passed += 1;
                } else {
                    dropped += 1;
                }
                (got != f.as_slice()).then(|| "changed a frame it did not send".to_string())
            }
            XDP_TX => {
                sent += 1;
                if got.len() != f.len() || got[12..] != f[12..] {
                    Some("changed more than the MACs".to_string())
                } else if got[6..12] != LB_MAC {
                    Some("source MAC is not the balancer's".to_string())
                } else if !backend_macs.contains(&<[u8; 6]>::try_from(&got[..6]).unwrap()) {
                    Some("destination MAC is no backend's".to_string())
                } else {
                    well_formed(got, &vips).err()
                }
            }
            other => Some(format!("action {}", action_name(other))),
        };
        if let Some(p) = problem {
            failures.push(format!(
                "frame {n} ({}): {p}: {f:02x?}",
                action_name(outcome.action)
            ));
        }
        if failures.len() > 20 {
            break;
        }
    }
    eprintln!(
        "fuzz seed {seed:#x}: {count} frames: {sent} sent, {passed} passed, {dropped} dropped, {refused} refused"
    );
    assert!(
        failures.is_empty(),
        "seed {seed:#x}: {} findings, first:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The mix must exercise every path, or the run proves little.
    assert!(
        sent > 10_000 && passed > 10_000,
        "sent {sent}, passed {passed}"
    );
}
