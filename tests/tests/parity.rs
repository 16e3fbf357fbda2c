//! Kernel pick == simulator pick: random flows go through the loaded
//! balancer with BPF_PROG_TEST_RUN; the backend it chose (read from the
//! output frame's destination MAC) must be the one `xlb_core::simulate` names for
//! the same flow. The observed split over backends must also be near each
//! backend's share of its Maglev table (a loose sanity bound). Run for the
//! default hash mode (the 5-tuple) and for the others (`hash = "source"`,
//! `"no_ports"`), whose flows the simulator hashes with `hash_input`.
//!
//! The RNG seed is printed; set XLB_PARITY_SEED to replay a run.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use lb_common::{PROTO_TCP, PROTO_UDP, stats::XDP_TX};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tests::packets::{FrameBuilder, LB_MAC, action_name, backends_by_mac, expected_backend, run};
use xlb_core::simulate::Flow;
use xlb_core::state::{Allocation, Desired};
use xlb_dataplane::Dataplane;

/// Random flows per address family.
const FLOWS: usize = 100_000;
/// Seed used unless XLB_PARITY_SEED is set.
const DEFAULT_SEED: u64 = 20_261_125;

/// Per family, a VIP on one port with six backends of unequal weights and a
/// port-0 (every port) VIP with five. Each backend has its own MAC.
const CONFIG: &str = r#"
interface = "xlbtest0"
hash_seed = 2024

[[vip]]
name = "web4"
address = "198.18.100.10"
port = 80
protocol = "tcp"
backend = [
  { name = "w1", address = "198.18.2.1", mac = "02:00:00:11:00:01", weight = 1 },
  { name = "w2", address = "198.18.2.2", mac = "02:00:00:11:00:02", weight = 2 },
  { name = "w3", address = "198.18.2.3", mac = "02:00:00:11:00:03", weight = 3 },
  { name = "w5", address = "198.18.2.4", mac = "02:00:00:11:00:04", weight = 5 },
  { name = "w8", address = "198.18.2.5", mac = "02:00:00:11:00:05", weight = 8 },
  { name = "w13", address = "198.18.2.6", mac = "02:00:00:11:00:06", weight = 13 },
]

[[vip]]
name = "any4"
address = "198.18.100.11"
port = 0
protocol = "udp"
table_size = 4093
backend = [
  { name = "u10", address = "198.18.2.1", mac = "02:00:00:12:00:01", weight = 10 },
  { name = "u20", address = "198.18.2.2", mac = "02:00:00:12:00:02", weight = 20 },
  { name = "u30", address = "198.18.2.3", mac = "02:00:00:12:00:03", weight = 30 },
  { name = "u40", address = "198.18.2.4", mac = "02:00:00:12:00:04", weight = 40 },
  { name = "u100", address = "198.18.2.5", mac = "02:00:00:12:00:05", weight = 100 },
]

[[vip]]
name = "web6"
address = "2001:db8:100::10"
port = 443
protocol = "tcp"
backend = [
  { name = "w1", address = "2001:db8:2::1", mac = "02:00:00:21:00:01", weight = 1 },
  { name = "w2", address = "2001:db8:2::2", mac = "02:00:00:21:00:02", weight = 2 },
  { name = "w3", address = "2001:db8:2::3", mac = "02:00:00:21:00:03", weight = 3 },
  { name = "w5", address = "2001:db8:2::4", mac = "02:00:00:21:00:04", weight = 5 },
  { name = "w8", address = "2001:db8:2::5", mac = "02:00:00:21:00:05", weight = 8 },
  { name = "w13", address = "2001:db8:2::6", mac = "02:00:00:21:00:06", weight = 13 },
]

[[vip]]
name = "any6"
address = "2001:db8:100::11"
port = 0
protocol = "udp"
table_size = 4093
backend = [
  { name = "u10", address = "2001:db8:2::1", mac = "02:00:00:22:00:01", weight = 10 },
  { name = "u20", address = "2001:db8:2::2", mac = "02:00:00:22:00:02", weight = 20 },
  { name = "u30", address = "2001:db8:2::3", mac = "02:00:00:22:00:03", weight = 30 },
  { name = "u40", address = "2001:db8:2::4", mac = "02:00:00:22:00:04", weight = 40 },
  { name = "u100", address = "2001:db8:2::5", mac = "02:00:00:22:00:05", weight = 100 },
]
"#;

/// The same VIPs and backends hashed otherwise: the fixed-port TCP VIPs by
/// source address only, the wildcard UDP VIPs without ports.
fn hash_modes_config() -> String {
    let mut text = String::new();
    for line in CONFIG.lines() {
        text.push_str(
            &line
                .replace("name = \"web", "name = \"src")
                .replace("name = \"any", "name = \"np"),
        );
        text.push('\n');
        if line.starts_with("protocol = \"tcp\"") {
            text.push_str("hash = \"source\"\n");
        } else if line.starts_with("protocol = \"udp\"") {
            text.push_str("hash = \"no_ports\"\n");
        }
    }
    text
}

/// The VIPs the random flows go to, per family: a fixed-port VIP and a
/// port-0 one.
struct Targets {
    v4: (&'static str, &'static str),
    v6: (&'static str, &'static str),
}

const FIVE_TUPLE: Targets = Targets {
    v4: ("web4", "any4"),
    v6: ("web6", "any6"),
};
const HASH_MODES: Targets = Targets {
    v4: ("src4", "np4"),
    v6: ("src6", "np6"),
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

fn seed() -> u64 {
    match std::env::var("XLB_PARITY_SEED") {
        Ok(s) => s.parse().expect("XLB_PARITY_SEED is a u64"),
        Err(_) => DEFAULT_SEED,
    }
}

/// A random client address: in 198.18.0.0/15 or 2001:db8::/32.
fn client(rng: &mut StdRng, family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(
            0xc612_0000 | rng.random_range(0..1u32 << 17),
        )),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8u128 << 96) | (rng.random::<u128>() >> 32),
        )),
    }
}

/// A random flow to one of the family's two VIPs: the fixed-port TCP VIP, or
/// any port of the UDP wildcard VIP.
fn random_flow(rng: &mut StdRng, family: Family, desired: &Desired, targets: &Targets) -> Flow {
    let (fixed, wildcard) = match family {
        Family::V4 => targets.v4,
        Family::V6 => targets.v6,
    };
    let name = if rng.random_bool(0.5) {
        fixed
    } else {
        wildcard
    };
    let vip = &desired
        .vips
        .iter()
        .find(|v| v.config.name == name)
        .expect("VIP in config")
        .config;
    let dst_port = if vip.port == 0 {
        rng.random_range(1..=u16::MAX)
    } else {
        vip.port
    };
    Flow {
        src: client(rng, family),
        dst: vip.address,
        src_port: rng.random_range(1..=u16::MAX),
        dst_port,
        proto: vip.protocol.number(),
    }
}

fn parity(test: &str, family: Family, config: &str, targets: &Targets) {
    tests::require_privileges!(test);
    let config = xlb_core::config::parse(config, "parity.toml").expect("parity config is valid");
    let desired = xlb_core::state::desired(&config, &Allocation::default()).expect("desired state");
    let mut dp = Dataplane::load().expect("load the balancer");
    dp.apply(LB_MAC, &desired, None)
        .expect("apply the parity config");
    let by_mac = backends_by_mac(&desired);
    let proto_name = |p: u8| match p {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "?",
    };

    let seed = seed();
    println!("{test}: seed {seed} (set XLB_PARITY_SEED={seed} to replay), {FLOWS} flows");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut frame = Vec::with_capacity(256);
    let mut out = vec![0u8; 512];
    // VIP name -> backend name -> flows the kernel sent there.
    let mut observed: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut mismatches = Vec::new();
    let mut mismatch_count = 0usize;

    let started = Instant::now();
    for _ in 0..FLOWS {
        let flow = random_flow(&mut rng, family, &desired, targets);
        let (want, _) = expected_backend(&desired, &flow).expect("the simulator picks a backend");
        let vip = &xlb_core::simulate::vip_for(&desired, &flow)
            .expect("a VIP flow")
            .config
            .name;
        FrameBuilder::new(flow).payload(16).write_into(&mut frame);

        let o = run(dp.program(), &frame, &mut out).expect("test run");
        let got = &out[..o.len];
        let dst_mac: [u8; 6] = got[0..6].try_into().expect("6 bytes");
        let kernel = by_mac[vip].get(&dst_mac);
        let ok = o.action == XDP_TX
            && got.len() == frame.len()
            && got[6..12] == LB_MAC
            && got[12..] == frame[12..]
            && kernel == Some(&want.name);
        if let Some(name) = kernel {
            *observed
                .entry(vip.clone())
                .or_default()
                .entry(name.clone())
                .or_default() += 1;
        }
        if !ok {
            mismatch_count += 1;
            if mismatches.len() < 10 {
                mismatches.push(format!(
                    "{}:{} -> {}:{}/{}: kernel {} to {:02x?} ({kernel:?}), simulator {}",
                    flow.src,
                    flow.src_port,
                    flow.dst,
                    flow.dst_port,
                    proto_name(flow.proto),
                    action_name(o.action),
                    dst_mac,
                    want.name,
                ));
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{test}: {FLOWS} flows in {:.2?} ({:.1} us/flow), {mismatch_count} mismatches",
        elapsed,
        elapsed.as_secs_f64() * 1e6 / FLOWS as f64
    );

    // The split over backends against each backend's share of the table.
    let mut skewed = Vec::new();
    for v in desired
        .vips
        .iter()
        .filter(|v| observed.contains_key(&v.config.name))
    {
        let seen = &observed[&v.config.name];
        let n: u64 = seen.values().sum();
        let total_weight: u32 = v.config.backends.iter().map(|b| b.weight).sum();
        println!(
            "  {} ({}, {} slots): {n} flows",
            v.config.name,
            v.config.endpoint(),
            v.slot_count()
        );
        for (b, id) in v.config.backends.iter().zip(&v.backend_ids) {
            let slots = v.slot_iter().filter(|s| s == id).count();
            let share = slots as f64 / v.slot_count() as f64;
            let count = seen.get(&b.name).copied().unwrap_or(0);
            let got = count as f64 / n as f64;
            // Six standard deviations of a binomial count, plus half a
            // percentage point: loose, only a sanity check.
            let bound = 6.0 * (share * (1.0 - share) / n as f64).sqrt() + 0.005;
            let flag = if (got - share).abs() > bound {
                "  <-- off"
            } else {
                ""
            };
            println!(
                "    {:5} weight {:4} ({:6.2}%)  table {:6.2}%  observed {:6.2}% ({count}){flag}",
                b.name,
                b.weight,
                100.0 * f64::from(b.weight) / f64::from(total_weight),
                100.0 * share,
                100.0 * got,
            );
            if !flag.is_empty() {
                skewed.push(format!(
                    "{}/{}: table {share:.4}, observed {got:.4}",
                    v.config.name, b.name
                ));
            }
        }
    }

    assert_eq!(
        mismatch_count,
        0,
        "{mismatch_count} of {FLOWS} flows went elsewhere than the simulator says (seed {seed}); first:\n{}",
        mismatches.join("\n")
    );
    assert!(
        skewed.is_empty(),
        "observed split far from the table shares (seed {seed}):\n{}",
        skewed.join("\n")
    );
}

#[test]
fn kernel_matches_simulator_ipv4() {
    parity(
        "kernel_matches_simulator_ipv4",
        Family::V4,
        CONFIG,
        &FIVE_TUPLE,
    );
}

#[test]
fn kernel_matches_simulator_ipv6() {
    parity(
        "kernel_matches_simulator_ipv6",
        Family::V6,
        CONFIG,
        &FIVE_TUPLE,
    );
}

#[test]
fn kernel_matches_simulator_hash_modes_ipv4() {
    parity(
        "kernel_matches_simulator_hash_modes_ipv4",
        Family::V4,
        &hash_modes_config(),
        &HASH_MODES,
    );
}

#[test]
fn kernel_matches_simulator_hash_modes_ipv6() {
    parity(
        "kernel_matches_simulator_hash_modes_ipv6",
        Family::V6,
        &hash_modes_config(),
        &HASH_MODES,
    );
}
