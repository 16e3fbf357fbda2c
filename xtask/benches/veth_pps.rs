//! Packets per second through the balancer on a veth, beside a bare XDP_TX
//! program on the same path.
//!
//! Path: namespace `xlbbench-pps-gen` holds `gen0`, namespace
//! `xlbbench-pps-lb` its peer `lb0` (a veth pair, no bridge), both with
//! native XDP. On lb0 runs the balancer with one TCP VIP forwarded with L2
//! DSR, IPIP or GUE (the first packet of each flow fills the connection
//! table, the rest hit it), or the bare MAC swap (`xlb_mac_swap`, the
//! floor); either sends each frame back out of lb0 with XDP_TX. On gen0
//! runs the generator, `xlb_gen_bounce`: it counts each frame that comes
//! back (the delivered rate), makes it `GEN_FRAME_LEN` bytes again
//! (`bpf_xdp_adjust_head` takes off what an encapsulation put in front),
//! writes the template TCP ACK to the VIP over it with the next of 1,024
//! source ports (flows), and sends it back to lb0 with XDP_TX. The bench
//! injects `FRAMES` frames once from an AF_PACKET socket on gen0; they then
//! circulate between the two programs, entirely in the kernel, until the
//! bench sets the generator's stop flag, which makes it drop every frame;
//! the bench waits until its counts stop moving before anything else
//! happens. lb0's FIB holds a route and a neighbour entry for the backend,
//! so a tunnel's next-hop lookup succeeds.
//!
//! Every frame's round trip is: lb0's program, a veth XDP transmit to gen0,
//! `xlb_gen_bounce` (a 60-byte template copy, the port and its checksum,
//! two per-CPU map updates), a veth XDP transmit to lb0. Everything but
//! lb0's program is a fixed cost of every row, floor included, so the
//! ratios to the floor compare in kind with those of the earlier
//! generator (BPF_PROG_TEST_RUN with live frames, which this kernel
//! refuses), not in value (docs/BENCHMARKS.md, tenth round). The injection
//! is made from CPU 0, where veth NAPI then keeps running (each side's
//! transmit schedules the peer's poll on the CPU it runs on): the rate is
//! one core's; the bench prints the share of the frames counted on CPU 0.
//!
//! Checks: the loop ran and ended (the counts stopped moving), the frames
//! still in flight at the end (dropped on the stop flag) are reported; a
//! balancer saw exactly the generator's 1,024 new flows, and its own
//! XDP_TX count agrees with what the generator received (at most
//! `FRAMES` apart: frames a full veth ring dropped). A tunnel method is
//! run only if the loaded balancer implements it: one frame through
//! BPF_PROG_TEST_RUN first, its output checked (frames::check). Runs are
//! interleaved (each method, then the floor), `RUNS` of each, `RUN_TIME`
//! each after a warm-up; medians.
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
//! `XLB_PPS_FRAMES=K` injects K frames instead of `FRAMES` (1..=4096), to
//! check that the rate no longer rises with K.
//! `XLB_PPS_BPF_STATS=1` turns the kernel's BPF run-time statistics on for
//! the bench (`BPF_ENABLE_STATS`) and prints each program's ns per run
//! (lb0's and the generator's) beside the rates; they cost two clock reads
//! a program run, so the rates of such a run are not the bench's figures.
//! `XLB_PPS_KATRAN=<path of Katran's balancer object>` (built from Katran's
//! own source outside this repository: docs/BENCHMARKS.md, eleventh round)
//! also runs Katran on lb0 (`support::katran`), after the xlb runs of each
//! round: the VIP with three reals, IPIP, the gateway MAC in `ctl_array`,
//! one LRU map per CPU, loaded afresh each run (an empty LRU, as xlb's
//! table). The generator strips Katran's outer IPv4 header as it does
//! xlb's (it makes every frame 60 bytes again). Checks as for xlb: Katran
//! missed its LRU exactly once per generator flow, and the packets it
//! forwarded (its VIP's packet count) less what gen0 received lie between
//! 0 and the frames injected.

mod support;

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use etherparse::PacketBuilder;
use lb_common::aux;
use support::frames::{self, Family, Method, Outcome};
use support::katran::{self, Katran};
use tests::netns::Netns;
use xlb_dataplane::HostInterface;

const RUNS: usize = 5;
const RUN_TIME: Duration = Duration::from_secs(3);
const WARM_UP: Duration = Duration::from_millis(300);
/// Frames injected into the loop (`XLB_PPS_FRAMES`): enough that the rate
/// no longer rises with more (from 64 on: docs/BENCHMARKS.md, tenth
/// round), and half of what a veth ring holds (256), so that none is
/// dropped on the way (from ~240 on, some are).
const FRAMES: u32 = 128;
/// How long the loop may take to die out after the stop flag is set.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
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
/// generator's template (IPv4 without options, as it requires), and the
/// frame injected (its source port is the generator's first).
fn frame() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(frames::CLIENT_MAC, frames::LB_MAC)
        .ipv4(frames::CLIENT_V4.octets(), frames::VIP_V4.octets(), 64)
        .tcp(aux::GEN_FIRST_PORT, VIP_PORT, 1, 65535)
        .ack(1)
        .write(&mut out, &[0u8; 6])
        .expect("frame");
    out
}

/// Katran's config: the VIP with three reals (issue 16), IPIP.
fn katran_vips() -> Vec<katran::Vip> {
    vec![katran::Vip {
        address: frames::VIP_V4.into(),
        port: VIP_PORT,
        proto: lb_common::PROTO_TCP,
        reals: katran_reals(),
    }]
}

fn katran_reals() -> Vec<std::net::IpAddr> {
    katran::reals_from(frames::BACKEND_V4.into(), 3)
}

/// Katran loaded afresh with `katran_vips` (the calling thread must be in
/// the LB's namespace).
fn load_katran(path: &std::path::Path) -> anyhow::Result<Katran> {
    Katran::load(
        path,
        &katran_vips(),
        frames::GATEWAY_MAC,
        lb_common::maps::CONN_TABLE_SIZE,
        support::online_cpus(),
    )
    .with_context(|| format!("XLB_PPS_KATRAN: {}", path.display()))
}

/// Katran forwards the generator's frame as it should: one frame through
/// it (BPF_PROG_TEST_RUN, as if received on lb0), output checked.
fn katran_works(wire: &Wire, path: &std::path::Path, frame: &[u8]) -> anyhow::Result<()> {
    wire.lb_ns.enter()?;
    let k = load_katran(path)?;
    let (action, out) = run_once(wire, k.program(), frame).context("Katran")?;
    katran::check(frame, action, &out, &katran_reals(), frames::GATEWAY_MAC)
        .map_err(|e| anyhow::anyhow!("Katran: {e}"))?;
    println!("{}", k.describe()?);
    Ok(())
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
    lb: HostInterface,
}

impl Wire {
    /// Build the wire; the calling thread ends up in the generator's
    /// namespace.
    fn new() -> anyhow::Result<Self> {
        let gen_ns = Netns::new("xlbbench-pps-gen")?;
        let lb_ns = Netns::new("xlbbench-pps-lb")?;
        // No IPv6: neither stack sends anything (router solicitations, DAD)
        // that could join the loop.
        for ns in [&gen_ns, &lb_ns] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
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
        // A veth hands a frame from its stack to the peer's XDP program only
        // when it may aggregate it (veth_skb_is_eligible_for_gro): with TSO
        // on, the injected frames would go to lb0's stack instead.
        tests::netns::sh(&gen_ns_exec(
            &gen_ns,
            &["ethtool", "-K", "gen0", "tso", "off"],
        ))?;
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
        Ok(Self {
            gen_ns,
            lb_ns,
            lb: HostInterface {
                mac: frames::LB_MAC,
                ifindex: lb_ifindex,
                mtu: 1500,
            },
        })
    }
}

/// `ip netns exec NS ARGS...` as words.
fn gen_ns_exec<'a>(ns: &'a Netns, args: &[&'a str]) -> Vec<&'a str> {
    let mut words = ns.exec_prefix().to_vec();
    words.extend_from_slice(args);
    words
}

/// An AF_PACKET socket on gen0 that only sends (protocol 0: it receives
/// nothing), opened in the calling thread's namespace.
struct Injector {
    fd: OwnedFd,
    addr: nix::libc::sockaddr_ll,
}

impl Injector {
    fn open(interface: &str) -> anyhow::Result<Self> {
        use nix::libc;
        let ifindex = nix::net::if_::if_nametoindex(interface)
            .with_context(|| format!("no interface {interface}"))?;
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        Ok(Self { fd, addr })
    }

    /// Send `frame` `count` times.
    fn send(&self, frame: &[u8], count: u32) -> anyhow::Result<()> {
        let mut addr = self.addr;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        for i in 0..count {
            // SAFETY: `frame` and `addr` outlive the call; the length is
            // the address's own.
            let n = unsafe {
                nix::libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const nix::libc::sockaddr_ll).cast(),
                    size_of::<nix::libc::sockaddr_ll>() as u32,
                )
            };
            if n != frame.len() as isize {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("injecting frame {} of {count} on gen0", i + 1));
            }
        }
        Ok(())
    }
}

/// The generator's counts, summed over the CPUs.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    /// Frames sent back to lb0.
    bounced: u64,
    /// Of which on CPU 0.
    bounced_cpu0: u64,
    /// Frames dropped with the stop flag set.
    stopped: u64,
}

/// The generator on gen0: its injector, stop flag and counts.
struct Generator {
    injector: Injector,
    stop: Array<MapData, u32>,
    counts: PerCpuArray<MapData, u64>,
}

impl Generator {
    /// Take the generator's maps out of `aux` and open the injector (the
    /// calling thread must be in the generator's namespace).
    fn new(aux: &mut aya::Ebpf) -> anyhow::Result<Self> {
        let stop = aux
            .take_map(aux::GEN_STOP_MAP)
            .with_context(|| format!("no map {}", aux::GEN_STOP_MAP))?;
        let counts = aux
            .take_map(aux::GEN_COUNT_MAP)
            .with_context(|| format!("no map {}", aux::GEN_COUNT_MAP))?;
        let mut generator = Self {
            injector: Injector::open("gen0")?,
            stop: Array::try_from(stop)?,
            counts: PerCpuArray::try_from(counts)?,
        };
        generator.set_stop(true)?;
        Ok(generator)
    }

    fn set_stop(&mut self, stop: bool) -> anyhow::Result<()> {
        self.stop
            .set(0, u32::from(stop), 0)
            .context("writing the generator's stop flag")
    }

    fn counts(&self) -> anyhow::Result<Counts> {
        let bounced = self.counts.get(&aux::GEN_BOUNCED, 0)?;
        let stopped = self.counts.get(&aux::GEN_STOPPED, 0)?;
        Ok(Counts {
            bounced: bounced.iter().sum(),
            bounced_cpu0: bounced.iter().next().copied().unwrap_or(0),
            stopped: stopped.iter().sum(),
        })
    }

    /// Inject `frames` copies of `frame` from CPU 0 (where the calling
    /// thread runs), let the loop warm up, count what comes back for
    /// `RUN_TIME`, then stop the loop and wait until it has died out.
    fn run(&mut self, frame: &[u8], frames: u32) -> anyhow::Result<Run> {
        let start = self.counts()?;
        self.set_stop(false)?;
        let running = self.start(frame, frames);
        // Stop whatever happened: no frame may still circulate when the
        // caller detaches a program or removes the namespaces.
        let stopped = self.set_stop(true).and_then(|()| self.wait_until_still());
        let (before, after, time) = running?;
        let end = stopped?;
        ensure!(
            after.bounced > before.bounced,
            "no frame came back to gen0 during the run ({frames} injected): the loop did not run"
        );
        let delivered = after.bounced - before.bounced;
        Ok(Run {
            delivered,
            on_cpu0: (after.bounced_cpu0 - before.bounced_cpu0) as f64 / delivered as f64,
            time,
            received: end.bounced + end.stopped - start.bounced - start.stopped,
            in_flight: end.stopped - start.stopped,
            injected: frames,
            tx_gap: None,
            ns_per_run: Vec::new(),
        })
    }

    fn start(&self, frame: &[u8], frames: u32) -> anyhow::Result<(Counts, Counts, Duration)> {
        self.injector.send(frame, frames)?;
        std::thread::sleep(WARM_UP);
        let before = self.counts()?;
        let start = Instant::now();
        std::thread::sleep(RUN_TIME);
        let after = self.counts()?;
        Ok((before, after, start.elapsed()))
    }

    /// Wait until the generator's counts stop moving (the stop flag is
    /// set): the last frames dropped. Fails after `STOP_TIMEOUT`.
    fn wait_until_still(&self) -> anyhow::Result<Counts> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut last = self.counts()?;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.counts()?;
            if now.bounced == last.bounced && now.stopped == last.stopped {
                return Ok(now);
            }
            ensure!(
                Instant::now() < deadline,
                "the loop did not end {STOP_TIMEOUT:?} after the stop flag was set \
                 (counts {now:?})"
            );
            last = now;
        }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = self.set_stop(true);
    }
}

/// One measured run.
struct Run {
    /// Frames counted back on gen0 during `time`.
    delivered: u64,
    /// The share of those counted on CPU 0.
    on_cpu0: f64,
    time: Duration,
    /// Frames gen0 received from the injection to the end of the loop.
    received: u64,
    /// Frames still circulating when the stop flag was set.
    in_flight: u64,
    injected: u32,
    /// A balancer's XDP_TX count less the frames gen0 received (frames a
    /// full veth ring dropped); None for the floor, which counts nothing.
    tx_gap: Option<u64>,
    /// With `XLB_PPS_BPF_STATS`: ns a run of lb0's program and of the
    /// generator's, over `time`; empty otherwise.
    ns_per_run: Vec<f64>,
}

impl Run {
    fn pps(&self) -> f64 {
        self.delivered as f64 / self.time.as_secs_f64()
    }
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

/// The count the environment variable `name` gives (1 to `max`), or
/// `default` when it is unset.
fn count_from_env(name: &str, max: u32, default: u32) -> anyhow::Result<u32> {
    match std::env::var(name) {
        Ok(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .with_context(|| format!("{name}={v}: expected a count from 1 to {max}")),
        Err(_) => Ok(default),
    }
}

/// What to run, from `XLB_PPS_ONLY` (all when unset), `XLB_PPS_RUNS`,
/// `XLB_PPS_FRAMES` and `XLB_PPS_BPF_STATS`.
struct Selection {
    floor: bool,
    methods: Vec<Method>,
    runs: usize,
    frames: u32,
    bpf_stats: bool,
}

impl Selection {
    fn from_env() -> anyhow::Result<Self> {
        let runs = count_from_env("XLB_PPS_RUNS", 50, RUNS as u32)? as usize;
        let frames = count_from_env("XLB_PPS_FRAMES", 4096, FRAMES)?;
        let bpf_stats = match std::env::var("XLB_PPS_BPF_STATS").as_deref() {
            Ok("1") => true,
            Ok("0") | Err(_) => false,
            Ok(v) => anyhow::bail!("XLB_PPS_BPF_STATS={v}: expected 1 or 0"),
        };
        let mut sel = Self {
            floor: true,
            methods: Method::ALL.to_vec(),
            runs,
            frames,
            bpf_stats,
        };
        let Ok(only) = std::env::var("XLB_PPS_ONLY") else {
            return Ok(sel);
        };
        sel.floor = false;
        sel.methods.clear();
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
    let (action, out) = run_once(wire, dp.program(), frame).context("the balancer")?;
    let outcome = frames::check(method, Family::V4, frame, action, &out)
        .map_err(|e| anyhow::anyhow!("{}: {e}", method.label()))?;
    Ok(outcome != Outcome::NotEncapsulated)
}

/// `frame` once through `prog` (BPF_PROG_TEST_RUN, as if received on lb0;
/// the calling thread is in the LB's namespace): the action and the output
/// frame. Returns to the generator's namespace.
fn run_once(wire: &Wire, prog: &Xdp, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&xdp_md(frame.len(), wire.lb.ifindex)),
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(r.data_size_out as usize);
    wire.gen_ns.enter()?;
    Ok((r.return_value, out))
}

/// What every run shares: the generator, its program, the injected frame
/// and the options.
struct Bench<'a> {
    wire: &'a Wire,
    generator: Generator,
    frame: Vec<u8>,
    selection: &'a Selection,
}

/// The kernel's run-time statistics of `programs` (BPF_ENABLE_STATS):
/// (ns, runs) of each.
fn bpf_stats(programs: &[&Xdp]) -> anyhow::Result<Vec<(u64, u64)>> {
    programs
        .iter()
        .map(|p| {
            let info = p
                .info()
                .context("reading a program's run-time statistics")?;
            Ok((info.run_time().as_nanos() as u64, info.run_count()))
        })
        .collect()
}

impl Bench<'_> {
    /// One run with `lb_program` on lb0 (already attached): the generator's
    /// run, and with `XLB_PPS_BPF_STATS` the ns a run of lb0's program and
    /// of the generator's over the same window.
    fn run(&mut self, lb_program: &Xdp, gen_program: &Xdp) -> anyhow::Result<Run> {
        let programs = [lb_program, gen_program];
        let programs: &[&Xdp] = if self.selection.bpf_stats {
            &programs
        } else {
            &[]
        };
        let before = bpf_stats(programs)?;
        let mut run = self.generator.run(&self.frame, self.selection.frames)?;
        let after = bpf_stats(programs)?;
        run.ns_per_run = before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a.0 - b.0) as f64 / (a.1 - b.1).max(1) as f64)
            .collect();
        Ok(run)
    }

    /// A run of the balancer (this build's, or the compared object) on lb0;
    /// checks that every flow was new exactly once and that the balancer
    /// sent what the generator received.
    fn balancer(
        &mut self,
        method: Method,
        aux: &aya::Ebpf,
        compared: Option<&Compared>,
    ) -> anyhow::Result<Run> {
        let run = self.balancer_once(method, aux, compared);
        if let Some(c) = compared {
            c.clear()?;
        }
        run
    }

    fn balancer_once(
        &mut self,
        method: Method,
        aux: &aya::Ebpf,
        compared: Option<&Compared>,
    ) -> anyhow::Result<Run> {
        self.wire.lb_ns.enter()?;
        let (mut dp, desired) = balancer(self.wire, method, compared)?;
        dp.attach("lb0", xlb_dataplane::AttachMode::Native)?;
        self.wire.gen_ns.enter()?;
        let run = self.run(dp.program(), support::xdp(aux, aux::GEN_BOUNCE_PROGRAM)?)?;
        let vip = dp.vip_counters(desired.vips[0].id);
        let snapshot = dp.snapshot([], []);
        // What the balancer did, for the errors below.
        let seen = || -> String {
            match &snapshot {
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
        // Every frame gen0 received was sent by the balancer; those it sent
        // and gen0 never received were dropped by a full veth ring, which
        // the injected frames bound.
        let tx = snapshot
            .as_ref()
            .map_err(|e| anyhow::anyhow!("the balancer's counters: {e}"))?
            .actions[lb_common::stats::XDP_TX as usize]
            .packets;
        ensure!(
            (run.received..=run.received + u64::from(run.injected)).contains(&tx),
            "{}: the balancer sent {tx} frames with XDP_TX, gen0 received {} ({} injected); {}",
            method.label(),
            run.received,
            run.injected,
            seen()
        );
        Ok(Run {
            tx_gap: Some(tx - run.received),
            ..run
        })
        // Dropping `dp` detaches the balancer.
    }

    /// A run of Katran on lb0, loaded afresh; checks that it missed its LRU
    /// once per generator flow and forwarded what the generator received.
    fn katran(&mut self, path: &std::path::Path, aux: &aya::Ebpf) -> anyhow::Result<Run> {
        self.wire.lb_ns.enter()?;
        let mut k = load_katran(path)?;
        let link = k.attach("lb0")?;
        self.wire.gen_ns.enter()?;
        let run = self.run(k.program(), support::xdp(aux, aux::GEN_BOUNCE_PROGRAM)?);
        k.detach(link)?;
        let run = run?;
        let misses = k.lru_misses()?;
        ensure!(
            misses == FLOWS,
            "Katran: {misses} LRU misses, expected one per generator flow ({FLOWS})"
        );
        let tx = k.vip_packets(0)?;
        ensure!(
            (run.received..=run.received + u64::from(run.injected)).contains(&tx),
            "Katran forwarded {tx} frames, gen0 received {} ({} injected)",
            run.received,
            run.injected
        );
        Ok(Run {
            tx_gap: Some(tx - run.received),
            ..run
        })
    }

    /// A run of the bare MAC swap on lb0.
    fn floor(&mut self, aux: &mut aya::Ebpf) -> anyhow::Result<Run> {
        self.wire.lb_ns.enter()?;
        let link = support::xdp_mut(aux, aux::MAC_SWAP_PROGRAM)?.attach("lb0", XdpMode::Driver)?;
        self.wire.gen_ns.enter()?;
        let run = self.run(
            support::xdp(aux, aux::MAC_SWAP_PROGRAM)?,
            support::xdp(aux, aux::GEN_BOUNCE_PROGRAM)?,
        );
        support::xdp_mut(aux, aux::MAC_SWAP_PROGRAM)?.detach(link)?;
        run
    }
}

fn print_row(label: &str, runs: &[Run]) {
    let pps: Vec<f64> = runs.iter().map(Run::pps).collect();
    let m = support::median(pps.clone());
    let in_flight = runs.iter().map(|r| r.in_flight);
    let stats = match runs.first().map(|r| r.ns_per_run.len()) {
        Some(2) => format!(
            "; ns a run: lb0 {:.1}, gen0 {:.1}",
            support::median(runs.iter().map(|r| r.ns_per_run[0]).collect()),
            support::median(runs.iter().map(|r| r.ns_per_run[1]).collect())
        ),
        _ => String::new(),
    };
    let gaps: Vec<u64> = runs.iter().filter_map(|r| r.tx_gap).collect();
    let gaps = match (gaps.iter().min(), gaps.iter().max()) {
        (Some(lo), Some(hi)) => format!("; XDP_TX less received {lo}..{hi}"),
        _ => String::new(),
    };
    println!(
        "{label:<32} {:>8.3} Mpps  {:>6.1} ns/packet  (in flight at the end {}..{} of {}{gaps}; \
         on CPU 0 {:.1}%{stats}; runs: {})",
        m / 1e6,
        1e9 / m,
        in_flight.clone().min().unwrap_or(0),
        in_flight.max().unwrap_or(0),
        runs.first().map_or(0, |r| r.injected),
        100.0 * runs.iter().map(|r| r.on_cpu0).fold(f64::INFINITY, f64::min),
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
    let selection = Selection::from_env()?;
    let compared = Compared::from_env()?;
    let wire = Wire::new()?;
    // Everything on CPU 0: the injection, and so the NAPI polls of both
    // veths, which keep scheduling each other there.
    support::pin_to_cpu(0)?;
    let _stats = selection
        .bpf_stats
        .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime))
        .transpose()
        .context("XLB_PPS_BPF_STATS: enabling the kernel's BPF run-time statistics")?;
    let mut aux = aya::Ebpf::load(xlb_dataplane::aux_object())?;
    for name in [aux::GEN_BOUNCE_PROGRAM, aux::MAC_SWAP_PROGRAM] {
        support::load_xdp(&mut aux, name)?;
    }
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
    Array::<_, [u8; FRAME_LEN]>::try_from(map)?.set(0, template, 0)?;
    // The generator (stopped until a run starts); also what lets gen0
    // accept lb0's XDP_TX frames.
    let generator = Generator::new(&mut aux)?;
    support::xdp_mut(&mut aux, aux::GEN_BOUNCE_PROGRAM)?.attach("gen0", XdpMode::Driver)?;

    let katran_path = std::env::var_os("XLB_PPS_KATRAN").map(std::path::PathBuf::from);
    if let Some(path) = &katran_path {
        katran_works(&wire, path, &frame)?;
    }
    let mut methods = Vec::new();
    let mut missing = Vec::new();
    for method in selection.methods.iter().copied() {
        if implemented(&wire, method, &frame)? {
            methods.push(method);
        } else {
            missing.push(method);
        }
    }
    let mut bench = Bench {
        wire: &wire,
        generator,
        frame,
        selection: &selection,
    };
    let mut balancer_runs: Vec<Vec<Run>> = methods.iter().map(|_| Vec::new()).collect();
    let mut compared_runs: Vec<Vec<Run>> = methods.iter().map(|_| Vec::new()).collect();
    let mut floor = Vec::new();
    let mut katran_runs = Vec::new();
    for _ in 0..selection.runs {
        for ((method, runs), b_runs) in methods
            .iter()
            .zip(&mut balancer_runs)
            .zip(&mut compared_runs)
        {
            runs.push(bench.balancer(*method, &aux, None)?);
            if let Some(c) = &compared {
                b_runs.push(bench.balancer(*method, &aux, Some(c))?);
            }
        }
        if let Some(path) = &katran_path {
            katran_runs.push(bench.katran(path, &aux)?);
        }
        if selection.floor {
            floor.push(bench.floor(&mut aux)?);
        }
    }

    println!(
        "packets per second on a veth pair, native XDP, TCP ACKs of {FLOWS} flows, 60-byte \
         frames; generator: {} frames bounced by xlb_gen_bounce on the peer; one CPU; median \
         of {} interleaved runs of {} s; load average {}{}",
        selection.frames,
        selection.runs,
        RUN_TIME.as_secs(),
        support::load_average(),
        if selection.bpf_stats {
            "; BPF run-time statistics on (rates slowed by them)"
        } else {
            ""
        }
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
    if !katran_runs.is_empty() {
        print_row("Katran, IPIP", &katran_runs);
        let k = support::median(katran_runs.iter().map(Run::pps).collect());
        if !floor.is_empty() {
            let f = support::median(floor.iter().map(Run::pps).collect());
            println!(
                "Katran IPIP: {:.2}x the floor's rate (xlb's goals: >= 0.80 tunnelled, >= 0.90 \
                 L2 DSR); {:.1} ns/packet more",
                k / f,
                1e9 / k - 1e9 / f
            );
        }
        for (method, runs) in methods.iter().zip(&balancer_runs) {
            let a = support::median(runs.iter().map(Run::pps).collect());
            println!(
                "xlb {} beside Katran: {:.2}x Katran's rate; {:+.1} ns/packet",
                method.label(),
                a / k,
                1e9 / a - 1e9 / k
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
