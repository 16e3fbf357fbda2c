//! `xlb simulate`'s engine (`xlb_dataplane::staging`) against the program itself:
//!
//! - its shares (read from the program's counters) are what a second,
//!   independently loaded program does with the same flows, told apart by
//!   the destination MAC of each output frame;
//! - a pcap capture is replayed frame by frame: VIP packets, drops, new flows
//!   and frames for no VIP are counted as they should be.
//!
//! The threshold rule itself is unit-tested in lb-userspace (staging::report).

use std::collections::BTreeMap;
use std::time::Instant;

use lb_common::stats::XDP_TX;
use tests::packets::{LB_MAC, action_name, arp_request, backends_by_mac, flow, frame, run};
use xlb_core::config::Config;
use xlb_core::state::{Allocation, desired};
use xlb_dataplane::Dataplane;
use xlb_dataplane::staging::{SimReport, SimVip, SimulateOptions, simulate, synthetic_frames};

/// Flows per VIP: enough for shares within about a point of the weights,
/// few enough to keep the test (two runs of each flow) short in debug.
const FLOWS: usize = 20_000;

/// 1:1:2 over 65537 slots, once for IPv4/TCP and once for an IPv6/UDP
/// every-port VIP. Every backend has its own MAC.
const CONFIG: &str = r#"
interface = "xlbtest0"
hash_seed = 11

[[vip]]
name = "web"
address = "198.18.100.1"
port = 80
protocol = "tcp"
table_size = 65537
backend = [
  { name = "b1", address = "198.18.1.1", mac = "02:00:00:21:00:01", weight = 1 },
  { name = "b2", address = "198.18.1.2", mac = "02:00:00:21:00:02", weight = 1 },
  { name = "b3", address = "198.18.1.3", mac = "02:00:00:21:00:03", weight = 2 },
]

[[vip]]
name = "any6"
address = "2001:db8:100::1"
port = 0
protocol = "udp"
table_size = 65537
backend = [
  { name = "b1", address = "2001:db8:1::1", mac = "02:00:00:22:00:01", weight = 1 },
  { name = "b2", address = "2001:db8:1::2", mac = "02:00:00:22:00:02", weight = 1 },
  { name = "b3", address = "2001:db8:1::3", mac = "02:00:00:22:00:03", weight = 2 },
]
"#;

fn config(text: &str) -> Config {
    xlb_core::config::parse(text, "simulate.toml").expect("valid config")
}

fn vip<'a>(report: &'a SimReport, name: &str) -> &'a SimVip {
    report
        .vips
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vip {name} in {report:?}"))
}

/// New flows per backend when `frames` go through a freshly loaded program,
/// per VIP: which backend each frame went to is read from its destination
/// MAC after the program, not from any counter.
fn attached_counts(
    config: &Config,
    frames: &[(String, Vec<Vec<u8>>)],
) -> BTreeMap<String, BTreeMap<String, u64>> {
    let d = desired(config, &Allocation::default()).expect("desired state");
    let mut dp = Dataplane::load().expect("load the balancer");
    dp.apply(LB_MAC, &d, None).expect("apply");
    let by_mac = backends_by_mac(&d);
    let mut out = [0u8; 256];
    let mut counts = BTreeMap::new();
    for (vip, frames) in frames {
        let per_backend: &mut BTreeMap<String, u64> = counts.entry(vip.clone()).or_default();
        for f in frames {
            let o = run(dp.program(), f, &mut out).expect("BPF_PROG_TEST_RUN");
            assert_eq!(o.action, XDP_TX, "vip {vip}: {}", action_name(o.action));
            let mac: [u8; 6] = out[..6].try_into().unwrap();
            let name = by_mac[vip]
                .get(&mac)
                .unwrap_or_else(|| panic!("vip {vip}: frame sent to unknown MAC {mac:02x?}"));
            *per_backend.entry(name.clone()).or_default() += 1;
        }
    }
    counts
}

#[test]
fn shares_match_what_the_attached_program_does_with_the_same_flows() {
    tests::require_privileges!();
    let config = config(CONFIG);
    let opts = SimulateOptions {
        flows: FLOWS,
        seed: 42,
        pcap: None,
    };
    let started = Instant::now();
    let report = simulate(&config, &opts).expect("simulate");
    eprintln!(
        "simulate: {} flows in {:.2?}",
        report.packets,
        started.elapsed()
    );
    print!("{}", report.render_table());
    assert_eq!(report.packets, 2 * FLOWS as u64);
    assert_eq!(report.unmatched_packets, 0);
    assert!(!report.refused());

    // The same flows, regenerated from the same seed, through another program.
    let frames = synthetic_frames(&config, &opts);
    let counts = attached_counts(&config, &frames);
    for v in &report.vips {
        assert_eq!(
            (v.packets, v.new_flows, v.dropped),
            (FLOWS as u64, FLOWS as u64, 0),
            "{v:?}"
        );
        for b in &v.backends {
            let attached = counts[&v.name].get(&b.name).copied().unwrap_or(0);
            let attached_share = attached as f64 / FLOWS as f64;
            let simulated = b.simulated_share_ratio.expect("flows were counted");
            assert!(
                (simulated - attached_share).abs() <= 0.01,
                "vip {} backend {}: simulated {simulated:.4}, attached {attached_share:.4}",
                v.name,
                b.name
            );
            // Same flows, same tables, distinct flows only: the very same
            // choice for every flow.
            assert_eq!(b.new_flows, attached, "vip {} backend {}", v.name, b.name);
            // And the weights, within noise (20,000 flows: sd ~0.3 points).
            assert!(
                (simulated - b.expected_share_ratio).abs() < 0.02,
                "vip {} backend {}: simulated {simulated:.4}, expected {:.4}",
                v.name,
                b.name,
                b.expected_share_ratio
            );
        }
    }
}

/// A classic little-endian, microsecond pcap of `frames`, written by hand
/// (independently of the reader under test).
fn pcap_bytes(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for word in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, 1] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    // The version is two u16s: 2, 4.
    out[4..8].copy_from_slice(&[2, 0, 4, 0]);
    for (i, f) in frames.iter().enumerate() {
        let len = f.len() as u32;
        for word in [1_700_000_000 + i as u32, 0, len, len] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    out
}

const PCAP_CONFIG: &str = r#"
interface = "xlbtest0"

[[vip]]
name = "web"
address = "198.18.100.1"
port = 80
protocol = "tcp"
table_size = 1021
backend = [
  { name = "b1", address = "198.18.1.1", mac = "02:00:00:31:00:01", weight = 1 },
  { name = "b2", address = "198.18.1.2", mac = "02:00:00:31:00:02", weight = 1 },
  { name = "b3", address = "198.18.1.3", mac = "02:00:00:31:00:03", weight = 2 },
]

[[vip]]
name = "dns"
address = "198.18.100.1"
port = 53
protocol = "udp"
table_size = 1021
backend = [
  { name = "d1", address = "198.18.1.1", mac = "02:00:00:32:00:01" },
]

[[vip]]
name = "dark"
address = "198.18.100.2"
port = 80
protocol = "tcp"
table_size = 1021
backend = [
  { name = "x1", address = "198.18.1.1", mac = "02:00:00:33:00:01", state = "disabled" },
]
"#;

#[test]
fn a_pcap_is_replayed_frame_by_frame() {
    tests::require_privileges!();
    use lb_common::{PROTO_TCP, PROTO_UDP};
    let config = config(PCAP_CONFIG);
    let mut frames = Vec::new();
    // web: 5 connections opened.
    for port in 40_001..=40_005 {
        frames.push(frame(flow(
            PROTO_TCP,
            &format!("198.18.0.7:{port}"),
            "198.18.100.1:80",
        )));
    }
    // dns: one flow of 3 packets: 1 new flow.
    for _ in 0..3 {
        frames.push(frame(flow(PROTO_UDP, "198.18.0.8:5353", "198.18.100.1:53")));
    }
    // dark: no active backend, dropped.
    frames.push(frame(flow(
        PROTO_TCP,
        "198.18.0.9:40000",
        "198.18.100.2:80",
    )));
    frames.push(frame(flow(
        PROTO_TCP,
        "198.18.0.9:40001",
        "198.18.100.2:80",
    )));
    // For no VIP: ARP, another port, another address, a runt, and a frame
    // larger than BPF_PROG_TEST_RUN takes (cut to size, then passed).
    frames.push(arp_request([198, 18, 0, 7], [198, 18, 100, 1]));
    frames.push(frame(flow(
        PROTO_TCP,
        "198.18.0.7:40000",
        "198.18.100.1:81",
    )));
    frames.push(frame(flow(
        PROTO_UDP,
        "198.18.0.7:40000",
        "198.18.100.3:53",
    )));
    frames.push(vec![0xff; 10]);
    let mut jumbo = frame(flow(PROTO_UDP, "198.18.0.7:40000", "198.18.100.9:53"));
    jumbo.resize(9000, 0);
    frames.push(jumbo);

    let dir = std::env::temp_dir().join(format!("xlb-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("capture.pcap");
    std::fs::write(&path, pcap_bytes(&frames)).unwrap();
    let opts = SimulateOptions {
        pcap: Some(path.clone()),
        ..SimulateOptions::default()
    };
    let result = simulate(&config, &opts);
    // A truncated copy must fail naming the file and the record's offset.
    let truncated = dir.join("truncated.pcap");
    let bytes = pcap_bytes(&frames[..2]);
    std::fs::write(&truncated, &bytes[..bytes.len() - 3]).unwrap();
    let bad = simulate(
        &config,
        &SimulateOptions {
            pcap: Some(truncated.clone()),
            ..SimulateOptions::default()
        },
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let report = result.expect("simulate the pcap");
    print!("{}", report.render_table());
    assert_eq!(report.packets, frames.len() as u64);
    assert_eq!(report.unmatched_packets, 5);
    let web = vip(&report, "web");
    assert_eq!((web.packets, web.new_flows, web.dropped), (5, 5, 0));
    assert_eq!(web.backends.iter().map(|b| b.packets).sum::<u64>(), 5);
    let dns = vip(&report, "dns");
    assert_eq!((dns.packets, dns.new_flows, dns.dropped), (3, 1, 0));
    assert_eq!(dns.backends[0].simulated_share_ratio, Some(1.0));
    assert_eq!(dns.worst_ratio, Some(1.0));
    let dark = vip(&report, "dark");
    assert_eq!((dark.packets, dark.new_flows, dark.dropped), (2, 0, 2));
    assert_eq!((dark.worst_ratio, dark.over_threshold), (None, false));
    // Five connections cannot show a skew beyond noise.
    assert!(!report.refused());
    // The JSON document round-trips.
    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(serde_json::from_str::<SimReport>(&json).unwrap(), report);

    let err = bad.expect_err("a truncated pcap").to_string();
    let second_record = 24 + 16 + frames[0].len();
    assert_eq!(
        err,
        format!(
            "{}: byte {second_record}: truncated record: {} bytes announced",
            truncated.display(),
            frames[1].len()
        )
    );
}

/// Needs no privilege: a capture that cannot be read is refused before
/// anything is loaded into the kernel.
#[test]
fn an_unreadable_capture_is_bad_input_before_any_loading() {
    let config = config(PCAP_CONFIG);
    let dir = std::env::temp_dir().join(format!("xlb-simulate-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.pcap");
    let pcapng = dir.join("capture.pcapng");
    std::fs::write(&pcapng, [0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0].repeat(4)).unwrap();
    let run = |path: &std::path::Path| {
        simulate(
            &config,
            &SimulateOptions {
                pcap: Some(path.to_path_buf()),
                ..SimulateOptions::default()
            },
        )
        .expect_err("an unreadable capture")
    };
    let (missing_err, pcapng_err) = (run(&missing), run(&pcapng));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(missing_err.is_bad_input() && pcapng_err.is_bad_input());
    let text = missing_err.to_string();
    assert!(
        text.starts_with(&format!("{}: ", missing.display())),
        "{text}"
    );
    let text = pcapng_err.to_string();
    assert!(
        text.starts_with(&format!("{}: byte 0: a pcapng file", pcapng.display())),
        "{text}"
    );
}

/// The postmortem's change (issue 19, item 5): one of ten equal-capacity
/// login backends at weight 10. The program follows the weights (b1 gets
/// ~52.6%, ratio ~1.00), which is what the config says, and five times what
/// b1 can take: `xlb simulate` exits 1 naming it, as plan and the bake do.
#[test]
fn the_postmortems_change_is_over_capacity() {
    tests::require_privileges!();
    let mut text = String::from(
        "interface = \"xlbtest0\"\nhash_seed = 3\n[[vip]]\nname = \"login\"\n\
         address = \"198.18.100.1\"\nport = 443\nprotocol = \"tcp\"\ntable_size = 65537\n",
    );
    for i in 1..=10 {
        let weight = if i == 1 { 10 } else { 1 };
        text.push_str(&format!(
            "[[vip.backend]]\nname = \"b{i}\"\naddress = \"198.18.1.{i}\"\n\
             mac = \"02:00:00:23:00:{i:02}\"\nweight = {weight}\ncapacity = 1\n"
        ));
    }
    let dir = std::env::temp_dir().join(format!("xlb-simulate-capacity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("login.toml");
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new(tests::xlbd::xlb_binary().unwrap())
        .arg("simulate")
        .arg(&file)
        .args(["--flows", "20000"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        tests::xlbd::describe(&out)
    );
    assert!(
        stdout.contains("login: OVER CAPACITY: b1 gets 5")
            && stdout.contains("its capacity share 10.0%"),
        "{stdout}"
    );
    // The weights alone are met: no imbalance verdict.
    assert!(stdout.contains("login: ok: worst"), "{stdout}");
}
