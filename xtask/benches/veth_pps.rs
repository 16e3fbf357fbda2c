//! Packets per second through the balancer on a veth, beside a bare XDP_TX
//! program on the same path.
//!
//! Path: namespace `xlbbench-pps-gen` holds `gen0`, namespace
//! `xlbbench-pps-lb` its peer `lb0` (a veth pair, no bridge). The generator
//! runs `xlb_gen_tcp_acks` with BPF_PROG_TEST_RUN and
//! BPF_F_TEST_XDP_LIVE_FRAMES as if received on gen0, so its XDP_TX transmits
//! each frame out of gen0: TCP ACKs to the VIP from 1,024 source ports
//! (flows). On lb0, natively attached, runs the balancer with one TCP VIP
//! forwarded with L2 DSR, IPIP or GUE (the first packet of each flow fills the
//! connection table, the rest hit it), or the bare MAC swap (`xlb_mac_swap`).
//! Both send the frame back out of lb0 (XDP_TX); on gen0 `xlb_count_drop`
//! counts and drops it: the delivered rate. lb0's FIB holds a route and a
//! neighbour entry for the backend, so a tunnel's next-hop lookup succeeds.
//!
//! A tunnel method is run only if the loaded balancer implements it: one
//! frame through BPF_PROG_TEST_RUN first, its output checked
//! (frames::check). Runs are interleaved (each method, then the floor),
//! `RUNS` of each, `RUN_TIME` each after a warm-up; medians. Everything
//! (generator, lb0's and gen0's NAPI) runs on CPU 0, so the rate is one
//! core's, and the generator and the counter are a fixed cost in every run
//! (see docs/BENCHMARKS.md).
//!
//! For profiling and A/B comparisons (docs/BENCHMARKS.md, issue 16):
//! `XLB_PPS_ONLY=floor,dsr,ipip,gue` (any subset) runs only those;
//! `XLB_PPS_RUNS=N` runs each N times instead of `RUNS` (1..=50);
//! `XLB_PPS_COMPARE=<path of another balancer object>` also runs each method
//! with that object ("B" rows), right after this build's run of it, and
//! prints B's rate against A's: only runs interleaved in one process give
//! differences this shared machine does not swamp.
//! `XLB_PPS_COMPARE_CONNS=<entries>` gives the compared object's connection
//! table that size instead of the balancer's default (the same object as A
//! and B then measures what the table's size costs).

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use aya::maps::PerCpuArray;
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, XdpMode};
use etherparse::PacketBuilder;
use lb_common::aux;
use support::frames::{self, Family, Method, Outcome};
use tests::netns::Netns;
use xlb_dataplane::HostInterface;

const RUNS: usize = 5;
const RUN_TIME: Duration = Duration::from_secs(3);
const WARM_UP: Duration = Duration::from_millis(300);
/// Frames per BPF_PROG_TEST_RUN call (about 0.1 s at the rates seen here).
const CHUNK: u32 = 1 << 18;
/// Frames the kernel runs through the generator before each flush.
const BATCH: u32 = 64;
/// The generator's flows.
const FLOWS: u64 = aux::GEN_FLOWS as u64;
/// The generator's frame length.
const FRAME_LEN: usize = aux::GEN_FRAME_LEN;
/// The VIP's port; the generator's frames go to it.
const VIP_PORT: u16 = 8080;
/// Issue 16: the balancer must deliver at least this share of the floor's
/// rate: 0.9 with L2 DSR, 0.8 through a tunnel (issue 6 asked 0.8 of all).
fn goal(method: Method) -> f64 {
    if method.tunnels() { 0.8 } else { 0.9 }
}

/// One TCP VIP forwarded with `method` to one backend, which lb0's FIB
/// reaches (the frames come back to gen0 whatever their destination MAC).
fn config(method: Method) -> String {
    format!(
        "interface = \"lb0\"\nhash_seed = 1\n\n[tunnel]\nsource_v4 = \"198.18.200.0/24\"\n\
         gue_port = {}\n\n[[vip]]\nname = \"web\"\naddress = \"{}\"\nport = {VIP_PORT}\n\
         protocol = \"tcp\"\nforwarding = \"{}\"\n\n[[vip.backend]]\nname = \"b1\"\n\
         address = \"{}\"\n{}",
        frames::GUE_PORT,
        frames::VIP_V4,
        method.config_value(),
        frames::BACKEND_V4,
        if method.tunnels() {
            String::new()
        } else {
            format!("mac = \"{}\"\n", frames::mac_text(frames::BACKEND_MAC))
        }
    )
}

/// A TCP ACK from the client to the VIP, 60 bytes (64 on a wire): the
/// generator's template (IPv4 without options, as it requires).
fn frame() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(frames::CLIENT_MAC, frames::LB_MAC)
        .ipv4(frames::CLIENT_V4.octets(), frames::VIP_V4.octets(), 64)
        .tcp(20000, VIP_PORT, 1, 65535)
        .ack(1)
        .write(&mut out, &[0u8; 6])
        .expect("frame");
    out
}

/// `struct xdp_md` for BPF_PROG_TEST_RUN: the frame arrives on `ifindex`
/// (data, data_end, data_meta, ingress_ifindex, rx_queue_index,
/// egress_ifindex).
fn xdp_md(frame_len: usize, ifindex: u32) -> Vec<u8> {
    [0, frame_len as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|w: &u32| w.to_ne_bytes())
        .collect()
}

/// The two namespaces and the veth between them; removed on drop.
struct Wire {
    gen_ns: Netns,
    lb_ns: Netns,
    /// Indexes of gen0 (in gen_ns) and lb0 (in lb_ns).
    gen_ifindex: u32,
    lb: HostInterface,
}

impl Wire {
    /// Build the wire; the calling thread ends up in the generator's
    /// namespace.
    fn new() -> anyhow::Result<Self> {
        let gen_ns = Netns::new("xlbbench-pps-gen")?;
        let lb_ns = Netns::new("xlbbench-pps-lb")?;
        gen_ns.ip(&[
            "link",
            "add",
            "gen0",
            "type",
            "veth",
            "peer",
            "name",
            "lb0",
            "netns",
            &lb_ns.name,
        ])?;
        gen_ns.ip(&[
            "link",
            "set",
            "gen0",
            "address",
            &frames::mac_text(frames::CLIENT_MAC),
            "up",
        ])?;
        lb_ns.ip(&[
            "link",
            "set",
            "lb0",
            "address",
            &frames::mac_text(frames::LB_MAC),
            "up",
        ])?;
        // The balancer host's FIB: a route and a neighbour entry for the
        // backend, forwarding on (bpf_fib_lookup requires it).
        lb_ns.ip(&["addr", "add", "198.18.0.2/24", "dev", "lb0"])?;
        lb_ns.ip(&[
            "neigh",
            "replace",
            &frames::BACKEND_V4.to_string(),
            "lladdr",
            &frames::mac_text(frames::BACKEND_MAC),
            "dev",
            "lb0",
            "nud",
            "permanent",
        ])?;
        lb_ns.sysctl("net.ipv4.ip_forward", "1")?;
        lb_ns.enter()?;
        let lb_ifindex = nix::net::if_::if_nametoindex("lb0").context("lb0's ifindex")?;
        gen_ns.enter()?;
        let gen_ifindex = nix::net::if_::if_nametoindex("gen0").context("gen0's ifindex")?;
        Ok(Self {
            gen_ns,
            lb_ns,
            gen_ifindex,
            lb: HostInterface {
                mac: frames::LB_MAC,
                ifindex: lb_ifindex,
                mtu: 1500,
            },
        })
    }
}

/// Frames `xlb_count_drop` counted, over all CPUs.
fn delivered(aux: &aya::Ebpf) -> anyhow::Result<u64> {
    let map = aux.map(aux::RX_COUNT_MAP).context("no map XLB_RX_COUNT")?;
    let counts = PerCpuArray::<_, u64>::try_from(map)?;
    Ok(counts.get(&0, 0)?.iter().sum())
}

/// One measured run: frames sent and delivered, and the time.
struct Run {
    sent: u64,
    delivered: u64,
    time: Duration,
}

impl Run {
    fn pps(&self) -> f64 {
        self.delivered as f64 / self.time.as_secs_f64()
    }
}

/// Run the generator for the warm-up, then for `RUN_TIME`, counting what
/// came back. The calling thread must be in the generator's namespace (the
/// kernel finds gen0 by ifindex there).
fn generate(aux: &aya::Ebpf, frame: &[u8], gen_ifindex: u32) -> anyhow::Result<Run> {
    let generator = support::xdp(aux, aux::GEN_TCP_ACKS_PROGRAM)?;
    let ctx = xdp_md(frame.len(), gen_ifindex);
    let send = |frames: u32| -> anyhow::Result<()> {
        generator
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: frames,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN (live frames) of the generator")?;
        Ok(())
    };
    let warm = Instant::now();
    while warm.elapsed() < WARM_UP {
        send(CHUNK / 4)?;
    }
    std::thread::sleep(Duration::from_millis(20));
    let before = delivered(aux)?;
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < RUN_TIME {
        send(CHUNK)?;
        sent += CHUNK as u64;
    }
    let time = start.elapsed();
    // Frames still on their way land within microseconds.
    std::thread::sleep(Duration::from_millis(20));
    Ok(Run {
        sent,
        delivered: delivered(aux)? - before,
        time,
    })
}

/// The balancer object `XLB_PPS_COMPARE` names, and the bpffs directory
/// its maps are pinned under for one run (removed after each run, so each
/// run starts from an empty connection table, as this build's does).
struct Compared {
    object: Vec<u8>,
    path: String,
    pins: xlb_dataplane::pins::PinDir,
    /// The connection table's entries.
    conns: u32,
}

impl Compared {
    fn from_env() -> anyhow::Result<Option<Self>> {
        let Some(path) = std::env::var_os("XLB_PPS_COMPARE") else {
            return Ok(None);
        };
        let path = path.to_string_lossy().into_owned();
        let object =
            std::fs::read(&path).with_context(|| format!("XLB_PPS_COMPARE: reading {path}"))?;
        let bpffs = std::path::PathBuf::from(format!("/sys/fs/bpf/xlbpps-{}", std::process::id()));
        let pins = xlb_dataplane::pins::PinDir::new(&bpffs, "lb0");
        let conns = match std::env::var("XLB_PPS_COMPARE_CONNS") {
            Ok(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (aux::GEN_FLOWS as u32..=1 << 24).contains(n))
                .with_context(|| {
                    format!(
                        "XLB_PPS_COMPARE_CONNS={v}: expected entries from {} to {}",
                        aux::GEN_FLOWS,
                        1 << 24
                    )
                })?,
            Err(_) => lb_common::maps::CONN_TABLE_SIZE,
        };
        Ok(Some(Self {
            object,
            path,
            pins,
            conns,
        }))
    }

    /// Remove this run's pins (and the directories above them).
    fn clear(&self) -> anyhow::Result<()> {
        self.pins
            .remove()
            .with_context(|| format!("XLB_PPS_COMPARE: removing {}", self.pins.path().display()))?;
        if let Some(bpffs) = self.pins.path().parent().and_then(|p| p.parent()) {
            let _ = std::fs::remove_dir(bpffs);
        }
        Ok(())
    }
}

/// What to run, from `XLB_PPS_ONLY` (all when unset) and `XLB_PPS_RUNS`.
struct Selection {
    floor: bool,
    methods: Vec<Method>,
    runs: usize,
}

impl Selection {
    fn from_env() -> anyhow::Result<Self> {
        let runs = match std::env::var("XLB_PPS_RUNS") {
            Ok(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=50).contains(n))
                .with_context(|| format!("XLB_PPS_RUNS={v}: expected a count from 1 to 50"))?,
            Err(_) => RUNS,
        };
        let Ok(only) = std::env::var("XLB_PPS_ONLY") else {
            return Ok(Self {
                floor: true,
                methods: Method::ALL.to_vec(),
                runs,
            });
        };
        let mut sel = Self {
            floor: false,
            methods: Vec::new(),
            runs,
        };
        for word in only.split(',').map(str::trim) {
            match Method::ALL.iter().find(|m| m.config_value() == word) {
                Some(m) => sel.methods.push(*m),
                None if word == "floor" => sel.floor = true,
                None => {
                    anyhow::bail!("XLB_PPS_ONLY={only}: {word:?} is none of floor, dsr, ipip, gue")
                }
            }
        }
        Ok(sel)
    }
}

/// The balancer loaded with `method`'s config (the calling thread must be
/// in the LB's namespace): this build's object, or the compared one.
fn balancer(
    wire: &Wire,
    method: Method,
    compared: Option<&Compared>,
) -> anyhow::Result<(xlb_dataplane::Dataplane, xlb_core::state::Desired)> {
    let mut dp = match compared {
        None => xlb_dataplane::Dataplane::load()?,
        Some(c) => {
            c.pins.create()?;
            xlb_dataplane::Dataplane::load_pinned(&c.object, c.conns, &c.pins)
                .with_context(|| format!("XLB_PPS_COMPARE: loading {}", c.path))?
        }
    };
    let config = xlb_core::config::parse(&config(method), "veth_pps.toml")?;
    let desired = xlb_core::state::desired(&config, &Default::default())?;
    dp.apply(wire.lb, &desired, None)?;
    Ok((dp, desired))
}

/// Whether the loaded balancer implements `method`: one generator frame
/// through it (BPF_PROG_TEST_RUN, as if received on lb0), output checked.
fn implemented(wire: &Wire, method: Method, frame: &[u8]) -> anyhow::Result<bool> {
    wire.lb_ns.enter()?;
    let (dp, _) = balancer(wire, method, None)?;
    let mut out = vec![0u8; frame.len() + 256];
    let r = dp
        .program()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&xdp_md(frame.len(), wire.lb.ifindex)),
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN of the balancer")?;
    out.truncate(r.data_size_out as usize);
    wire.gen_ns.enter()?;
    let outcome = frames::check(method, Family::V4, frame, r.return_value, &out)
        .map_err(|e| anyhow::anyhow!("{}: {e}", method.label()))?;
    Ok(outcome != Outcome::NotEncapsulated)
}

/// A run of the balancer (this build's, or the compared object) on lb0;
/// checks that every flow was new exactly once.
fn run_balancer(
    wire: &Wire,
    method: Method,
    aux: &aya::Ebpf,
    frame: &[u8],
    compared: Option<&Compared>,
) -> anyhow::Result<Run> {
    let run = run_balancer_once(wire, method, aux, frame, compared);
    if let Some(c) = compared {
        c.clear()?;
    }
    run
}

fn run_balancer_once(
    wire: &Wire,
    method: Method,
    aux: &aya::Ebpf,
    frame: &[u8],
    compared: Option<&Compared>,
) -> anyhow::Result<Run> {
    wire.lb_ns.enter()?;
    let (mut dp, desired) = balancer(wire, method, compared)?;
    dp.attach("lb0", xlb_dataplane::AttachMode::Native)?;
    wire.gen_ns.enter()?;
    let run = generate(aux, frame, wire.gen_ifindex)?;
    let vip = dp.vip_counters(desired.vips[0].id);
    // What the balancer did, for the errors below.
    let seen = || -> String {
        match dp.snapshot([], []) {
            Ok(s) => format!(
                "actions (aborted, drop, pass, tx, redirect) {:?}, drops by reason {:?}, \
                 events {:?}",
                s.actions.iter().map(|c| c.packets).collect::<Vec<_>>(),
                s.drops.iter().map(|c| c.packets).collect::<Vec<_>>(),
                s.events
            ),
            Err(e) => format!("(counters unreadable: {e})"),
        }
    };
    ensure!(
        vip.new_flows == FLOWS,
        "{}: the balancer saw {} new flows, expected the generator's {FLOWS}; {}",
        method.label(),
        vip.new_flows,
        seen()
    );
    ensure!(
        vip.packets >= run.delivered,
        "{}: the balancer counted {} packets but {} came back; {}",
        method.label(),
        vip.packets,
        run.delivered,
        seen()
    );
    Ok(run)
    // Dropping `dp` detaches the balancer.
}

/// A run of the bare MAC swap on lb0.
fn run_floor(wire: &Wire, aux: &mut aya::Ebpf, frame: &[u8]) -> anyhow::Result<Run> {
    wire.lb_ns.enter()?;
    let link = support::xdp_mut(aux, aux::MAC_SWAP_PROGRAM)?.attach("lb0", XdpMode::Driver)?;
    wire.gen_ns.enter()?;
    let run = generate(aux, frame, wire.gen_ifindex);
    support::xdp_mut(aux, aux::MAC_SWAP_PROGRAM)?.detach(link)?;
    run
}

fn print_row(label: &str, runs: &[Run]) {
    let pps: Vec<f64> = runs.iter().map(Run::pps).collect();
    let sent: Vec<f64> = runs
        .iter()
        .map(|r| r.sent as f64 / r.time.as_secs_f64())
        .collect();
    let m = support::median(pps.clone());
    println!(
        "{label:<32} {:>8.3} Mpps  {:>6.1} ns/packet  (offered {:.3} Mpps; runs: {})",
        m / 1e6,
        1e9 / m,
        support::median(sent) / 1e6,
        pps.iter()
            .map(|p| format!("{:.3}", p / 1e6))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn main() -> anyhow::Result<()> {
    if !support::root("veth_pps") {
        return Ok(());
    }
    let wire = Wire::new()?;
    // Everything on CPU 0: the generator, and the NAPI polls it triggers.
    support::pin_to_cpu(0)?;
    let mut aux = aya::Ebpf::load(xlb_dataplane::aux_object())?;
    for name in [
        aux::GEN_TCP_ACKS_PROGRAM,
        aux::COUNT_DROP_PROGRAM,
        aux::MAC_SWAP_PROGRAM,
    ] {
        support::load_xdp(&mut aux, name)?;
    }
    // The receiver; also what lets gen0 accept lb0's XDP_TX frames.
    support::xdp_mut(&mut aux, aux::COUNT_DROP_PROGRAM)?.attach("gen0", XdpMode::Driver)?;

    let frame = frame();
    // The generator writes this over every frame it sends.
    let template: [u8; FRAME_LEN] = frame.as_slice().try_into().with_context(|| {
        format!(
            "the template is {} bytes, the generator sends {FRAME_LEN}",
            frame.len()
        )
    })?;
    let map = aux
        .map_mut(aux::GEN_TEMPLATE_MAP)
        .context("no map XLB_GEN_TEMPLATE")?;
    aya::maps::Array::<_, [u8; FRAME_LEN]>::try_from(map)?.set(0, template, 0)?;
    let selection = Selection::from_env()?;
    let compared = Compared::from_env()?;
    let mut methods = Vec::new();
    let mut missing = Vec::new();
    for method in selection.methods.iter().copied() {
        if implemented(&wire, method, &frame)? {
            methods.push(method);
        } else {
            missing.push(method);
        }
    }
    let mut balancer_runs: Vec<Vec<Run>> = methods.iter().map(|_| Vec::new()).collect();
    let mut compared_runs: Vec<Vec<Run>> = methods.iter().map(|_| Vec::new()).collect();
    let mut floor = Vec::new();
    for _ in 0..selection.runs {
        for ((method, runs), b_runs) in methods
            .iter()
            .zip(&mut balancer_runs)
            .zip(&mut compared_runs)
        {
            runs.push(run_balancer(&wire, *method, &aux, &frame, None)?);
            if let Some(c) = &compared {
                b_runs.push(run_balancer(&wire, *method, &aux, &frame, Some(c))?);
            }
        }
        if selection.floor {
            floor.push(run_floor(&wire, &mut aux, &frame)?);
        }
    }

    println!(
        "packets per second on a veth pair, native XDP, TCP ACKs of {FLOWS} flows, 60-byte \
         frames; generator: BPF_PROG_TEST_RUN live frames; one CPU; median of {} \
         interleaved runs of {} s; load average {}",
        selection.runs,
        RUN_TIME.as_secs(),
        support::load_average()
    );
    if let Some(c) = &compared {
        println!(
            "compared object (B rows): {}, connection table of {} entries",
            c.path, c.conns
        );
    }
    if !floor.is_empty() {
        print_row("bare MAC swap, XDP_TX (floor)", &floor);
    }
    for ((method, runs), b_runs) in methods.iter().zip(&balancer_runs).zip(&compared_runs) {
        print_row(&format!("xlb, {}", method.label()), runs);
        if !b_runs.is_empty() {
            print_row(&format!("B xlb, {}", method.label()), b_runs);
        }
    }
    for ((method, runs), b_runs) in methods.iter().zip(&balancer_runs).zip(&compared_runs) {
        let a = support::median(runs.iter().map(Run::pps).collect());
        if !floor.is_empty() {
            let b = support::median(floor.iter().map(Run::pps).collect());
            let goal = goal(*method);
            println!(
                "xlb {}: {:.2}x the floor's rate (goal >= {goal:.2}: {}); {:.1} ns/packet more",
                method.label(),
                a / b,
                if a / b >= goal { "met" } else { "NOT met" },
                1e9 / a - 1e9 / b
            );
        }
        if !b_runs.is_empty() {
            // Per pair of neighbouring runs (A then B): the ratio of B's rate
            // to A's, median over pairs.
            let pairs: Vec<f64> = runs
                .iter()
                .zip(b_runs)
                .map(|(a, b)| b.pps() / a.pps())
                .collect();
            let ns: Vec<f64> = runs
                .iter()
                .zip(b_runs)
                .map(|(a, b)| 1e9 / b.pps() - 1e9 / a.pps())
                .collect();
            println!(
                "B xlb {}: {:.3}x A's rate, {:+.1} ns/packet (medians over {} A/B pairs; pairs: {})",
                method.label(),
                support::median(pairs.clone()),
                support::median(ns),
                pairs.len(),
                pairs
                    .iter()
                    .map(|p| format!("{p:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    for method in missing {
        println!(
            "xlb {}: NOT MEASURED: the loaded balancer sends its frames unencapsulated; it does \
             not implement this method yet",
            method.label()
        );
    }
    Ok(())
}
