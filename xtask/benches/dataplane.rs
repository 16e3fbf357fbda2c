//! Per-packet time of the balancer from BPF_PROG_TEST_RUN, beside a bare
//! MAC-swap XDP_TX program measured in the same run (TESTBED.md: compare only
//! programs measured the same way, in the same run).
//!
//! Method: the process pins itself to one CPU; each row runs the program
//! `REPEAT` times on one frame in the kernel (BPF_PROG_TEST_RUN reports the
//! mean per run); rows are interleaved in blocks, `ROUNDS` times, and the
//! median per row is reported. The balancer's output equals its input after
//! the first run (the MAC rewrite is idempotent), so repeat > 1 is sound.
//! Rows: a TCP SYN (new connection: hash, Maglev lookup, connection-table
//! update), a TCP ACK of a known flow (connection-table hit), a UDP datagram
//! (table hit after the first run), and a non-VIP packet (parse, miss, pass).

use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use etherparse::PacketBuilder;

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 9;

const CONFIG: &str = r#"
interface = "bench0"
hash_seed = 1
[[vip]]
name = "web"
address = "198.18.100.1"
port = 80
protocol = "tcp"
[[vip.backend]]
name = "b1"
address = "198.18.0.11"
mac = "02:00:00:00:00:11"
[[vip.backend]]
name = "b2"
address = "198.18.0.12"
mac = "02:00:00:00:00:12"
[[vip.backend]]
name = "b3"
address = "198.18.0.13"
mac = "02:00:00:00:00:13"
weight = 2
[[vip]]
name = "dns"
address = "198.18.100.1"
port = 53
protocol = "udp"
[[vip.backend]]
name = "b1"
address = "198.18.0.11"
mac = "02:00:00:00:00:11"
"#;

fn tcp(dst: [u8; 4], syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(
        [198, 18, 0, 1],
        dst,
        64,
    );
    let b = if syn {
        b.tcp(40000, 80, 1, 65535).syn()
    } else {
        b.tcp(40000, 80, 1, 65535).ack(1)
    };
    let payload = [0u8; 20];
    let mut out = Vec::new();
    b.write(&mut out, &payload).unwrap();
    out
}

fn udp() -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([198, 18, 0, 1], [198, 18, 100, 1], 64)
        .udp(40000, 53);
    let mut out = Vec::new();
    b.write(&mut out, &[0u8; 32]).unwrap();
    out
}

fn run(prog: &Xdp, frame: &[u8]) -> (u32, Duration) {
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: REPEAT,
            ..TestRunOptions::new()
        })
        .expect("BPF_PROG_TEST_RUN");
    (r.return_value, r.duration)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        println!("dataplane bench: skipped (needs root for BPF_PROG_TEST_RUN)");
        return Ok(());
    }
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(0)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)?;

    let mut dp = xlb::dataplane::Dataplane::load()?;
    let config = xlb::config::parse(CONFIG, "bench.toml")?;
    let desired = xlb::state::desired(&config, &Default::default())?;
    dp.apply([2, 0, 0, 0, 0, 2], &desired, None)?;

    let mut aux = aya::Ebpf::load(xlb::dataplane::aux_object())?;
    let swap: &mut Xdp = aux.program_mut("xlb_mac_swap").unwrap().try_into()?;
    swap.load()?;
    let swap: &Xdp = aux.program("xlb_mac_swap").unwrap().try_into()?;
    let balancer = dp.program();

    let rows: Vec<(&str, &Xdp, Vec<u8>, u32)> = vec![
        (
            "bare MAC swap, XDP_TX (floor)",
            swap,
            tcp([198, 18, 100, 1], false),
            3,
        ),
        (
            "xlb: TCP SYN, new connection",
            balancer,
            tcp([198, 18, 100, 1], true),
            3,
        ),
        (
            "xlb: TCP ACK, connection-table hit",
            balancer,
            tcp([198, 18, 100, 1], false),
            3,
        ),
        ("xlb: UDP datagram", balancer, udp(), 3),
        (
            "xlb: not for a VIP, XDP_PASS",
            balancer,
            tcp([198, 18, 0, 99], false),
            2,
        ),
    ];
    let mut results: Vec<Vec<Duration>> = vec![Vec::new(); rows.len()];
    for _ in 0..ROUNDS {
        for (i, (name, prog, frame, action)) in rows.iter().enumerate() {
            let (ret, d) = run(prog, frame);
            assert_eq!(ret, *action, "{name}: unexpected action");
            results[i].push(d);
        }
    }
    let floor = median(results[0].clone());
    println!(
        "BPF_PROG_TEST_RUN, repeat {REPEAT}, median of {ROUNDS} interleaved rounds, pinned to CPU 0"
    );
    println!(
        "{:<40} {:>10} {:>10}",
        "program / packet", "ns/packet", "vs floor"
    );
    for ((name, ..), r) in rows.iter().zip(results) {
        let m = median(r);
        println!(
            "{name:<40} {:>10} {:>9.2}x",
            m.as_nanos(),
            m.as_secs_f64() / floor.as_secs_f64()
        );
    }
    Ok(())
}
