//! Per-packet time of the balancer from BPF_PROG_TEST_RUN, beside a bare
//! MAC-swap XDP_TX program measured the same way in the same run
//! (TESTBED.md: never compare figures taken differently or in other runs).
//!
//! Two tables:
//! - steady state, `repeat = REPEAT` (the kernel reports the mean per run):
//!   only for frames the balancer does not grow, whose output equals their
//!   input after the first run (the L2 DSR rewrite is idempotent): a SYN (the
//!   balancer hashes every SYN and rewrites its table entry), an ACK of a
//!   known flow (table hit), a UDP datagram, a frame for no VIP;
//! - per method (L2 DSR, IPIP, GUE) and family, `repeat = 1`: a tunnel grows
//!   the frame, and with repeat > 1 the program would see its own output
//!   again. Each run is its own syscall with a fresh frame; "new flow" sends
//!   the SYN of one of `NEW_FLOWS` flows in turn, deleting that flow's
//!   connection-table entry before the run (outside the timed part), so
//!   every run misses, hashes and inserts, into one of as many table
//!   elements (why several: `NEW_FLOWS`); "hit" sends an ACK of a flow the
//!   table holds. A single run carries a fixed cost (~60 ns here)
//!   that the floor carries too; the last column takes it out, estimated as
//!   the floor's single-run time minus its steady-state time.
//!
//! Before any row is timed, its frame goes through once and the output is
//! checked (frames::check): DSR must rewrite only the MACs, a tunnel must
//! build its outer headers towards the backend. A tunnel VIP the loaded
//! balancer forwards unencapsulated is reported as not implemented, not
//! timed. The bench runs in a namespace of its own whose FIB holds a route
//! and a neighbour entry for each backend, so a tunnel's next-hop lookup
//! succeeds as on a balancer host (the output says whether it did).
//!
//! The single-run table also has, per method, a UDP datagram of a known
//! flow (IPv4), and a frame for no VIP (XDP_PASS). Each single-run row is
//! printed as ns above the floor's single run beside issue 16's target for
//! it (`targets`), with whether the target is met.
//!
//! The process pins itself to CPU 0; rows are interleaved in blocks,
//! `ROUNDS` rounds, median per row.
//!
//! `XLB_BENCH_COMPARE=<path of another balancer object>` loads that object
//! too (its own maps, pinned under a bpffs directory of this process's and
//! removed at the end), gives it the same config, and times its single-run
//! rows beside this build's, interleaved row by row ("B " rows). This
//! machine's speed is bimodal per process (docs/BENCHMARKS.md), so a change
//! is judged by two objects timed in one process, not by two invocations.
//! `XLB_BENCH_B_FIRST=1` times each B row before its twin instead of after
//! (to tell an effect of the object from one of the row's place: the
//! compared object's L2 DSR IPv4 new-flow row, docs/BENCHMARKS.md).
//!
//! `XLB_BENCH_UNFILED_OK=1` (measurement only) keeps the compared object's
//! new-flow rows even when that object does not file the flows under the
//! bench's keys: for a variant built without the connection-table insert,
//! whose SYNs miss without the delete before each run (docs/BENCHMARKS.md,
//! seventeenth round). Without it such rows are left out, as a row whose
//! flow the object files elsewhere would time hits. This build's own rows
//! are always checked. Such a variant's "conn-table hit" rows are not hits
//! (nothing was filed): read only its new-flow rows. The same knob lets
//! `XLB_BENCH_KATRAN` name a Katran object built without its LRU update.
//!
//! For finding out what a row's time depends on (docs/BENCHMARKS.md, ninth
//! round): `XLB_BENCH_ONLY=<word>,...` times only the single-run rows whose
//! label contains one of the words (and the floor); `XLB_BENCH_REVERSE=1`
//! times them in the reverse order; `XLB_BENCH_NO_STEADY=1` runs no
//! steady-state row but the floor, `XLB_BENCH_STEADY_ONLY=<word>,...` only
//! those whose label contains a word (both also leave out those rows'
//! checks, which file flows); `XLB_BENCH_SHIFT=<k>` files k flows of each
//! family before the single-run rows are prepared (each row's flows then
//! land in other table elements); `XLB_BENCH_NEW_FLOWS=<n>` (1..=1024) sets
//! how many flows a new-flow row cycles through (1: the harness before the
//! ninth round).

mod support;

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use aya::maps::MapError;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb_common::{aux, hash::FlowWords};
use support::frames::{self, Family, Method, NextHop, Outcome, XDP_PASS, XDP_TX};
use support::katran::{self, Katran};
use tests::netns::Netns;
use xlb_dataplane::HostInterface;

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 9;
/// Single runs per row and round; the slowest `TRIM` of them (interrupts,
/// preemption on this shared VM) are left out of the row's mean.
const SINGLE_RUNS: usize = 2000;
const TRIM: f64 = 0.1;

const SYN: bool = true;
const ACK: bool = false;
/// The client's source port of every flow but the new-flow rows'.
const CLIENT_PORT: u16 = 40000;
/// The first source port of the new-flow rows' flows: flows no other row
/// uses.
const NEW_FLOW_PORT: u16 = 40001;
/// How many flows a new-flow row cycles through (`XLB_BENCH_NEW_FLOWS`
/// overrides it). Each run deletes its flow and sends its SYN, and the LRU
/// gives the freed element straight back, so a row of one flow times one
/// table element again and again: its cost then depends on which element
/// that is (where the order of inserts before it left the flow), and in
/// this process one element costs ~100 ns more a run than the others
/// (docs/BENCHMARKS.md, ninth round). With 64 flows every row averages
/// 64 elements, the same treatment for every row and both objects.
const NEW_FLOWS: u16 = 64;

/// `NEW_FLOWS`, or `XLB_BENCH_NEW_FLOWS` (1 is the harness before the ninth
/// round: one flow a row).
fn new_flows() -> anyhow::Result<u16> {
    let Ok(v) = std::env::var("XLB_BENCH_NEW_FLOWS") else {
        return Ok(NEW_FLOWS);
    };
    v.parse()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .with_context(|| format!("XLB_BENCH_NEW_FLOWS={v}: expected a count from 1 to 1024"))
}
const DNS_PORT: u16 = 53;
/// Issue 6: a packet may cost at most this times the bare program.
const GOAL: f64 = 1.3;

/// Issue 16's targets, ns above the floor's single run (0.8x Katran's
/// figures on the same machine kind): a tunnelled (IPIP, GUE) TCP hit, a
/// tunnelled UDP hit, any new flow (SYN), an L2 DSR hit (TCP or UDP), a
/// frame for no VIP.
mod targets {
    pub const TUNNEL_HIT: f64 = 120.0;
    pub const TUNNEL_UDP_HIT: f64 = 150.0;
    pub const NEW_FLOW: f64 = 280.0;
    pub const DSR_HIT: f64 = 90.0;
    pub const PASS: f64 = 40.0;
}

/// The VIP port of a method: one VIP per method and family, on one address
/// per family.
fn port(method: Method) -> u16 {
    match method {
        Method::L2Dsr => 80,
        Method::Ipip => 81,
        Method::Gue => 82,
    }
}

/// Each (method, family) VIP has one backend: the check knows where its
/// frames must go. Tunnel backends have no `mac`: the FIB names the next hop.
fn config() -> String {
    let mut out = format!(
        "interface = \"dp0\"\nhash_seed = 1\n\n[tunnel]\nsource_v4 = \"198.18.200.0/24\"\n\
         source_v6 = \"2001:db8:ff::/96\"\ngue_port = {}\ngateway_mac = \"{}\"\n",
        frames::GUE_PORT,
        frames::mac_text(frames::GATEWAY_MAC)
    );
    let mac = format!("mac = \"{}\"\n", frames::mac_text(frames::BACKEND_MAC));
    for method in Method::ALL {
        for family in Family::ALL {
            out.push_str(&format!(
                "\n[[vip]]\nname = \"{}{}\"\naddress = \"{}\"\nport = {}\nprotocol = \"tcp\"\n\
                 forwarding = \"{}\"\n\n[[vip.backend]]\nname = \"b1\"\naddress = \"{}\"\n{}",
                method.config_value(),
                if family == Family::V4 { 4 } else { 6 },
                family.vip(),
                port(method),
                method.config_value(),
                family.backend(),
                if method.tunnels() { "" } else { &mac },
            ));
        }
    }
    // A UDP VIP per tunnel method (IPv4), on the TCP VIP's port.
    for method in [Method::Ipip, Method::Gue] {
        out.push_str(&format!(
            "\n[[vip]]\nname = \"{}-udp\"\naddress = \"{}\"\nport = {}\nprotocol = \"udp\"\n\
             forwarding = \"{}\"\n\n[[vip.backend]]\nname = \"b1\"\naddress = \"{}\"\n",
            method.config_value(),
            frames::VIP_V4,
            port(method),
            method.config_value(),
            frames::BACKEND_V4,
        ));
    }
    out.push_str(&format!(
        "\n[[vip]]\nname = \"dns\"\naddress = \"{}\"\nport = {DNS_PORT}\nprotocol = \"udp\"\n\n\
         [[vip.backend]]\nname = \"b1\"\naddress = \"{}\"\n{mac}",
        frames::VIP_V4,
        frames::BACKEND_V4
    ));
    out
}

/// A namespace whose FIB knows the backends: an interface `dp0` with the
/// balancer's MAC, a route and a permanent neighbour entry per family,
/// forwarding on (bpf_fib_lookup refuses to forward otherwise). The calling
/// thread enters it: BPF_PROG_TEST_RUN looks `dp0` up there. Removed on drop.
struct FibHost {
    _ns: Netns,
    ifindex: u32,
}

impl FibHost {
    fn enter() -> anyhow::Result<Self> {
        let ns = Netns::new("xlbbench-dp")?;
        let lb_mac = frames::mac_text(frames::LB_MAC);
        let backend_mac = frames::mac_text(frames::BACKEND_MAC);
        ns.ip(&[
            "link", "add", "dp0", "address", &lb_mac, "type", "veth", "peer", "name", "dp1",
        ])?;
        ns.ip(&["link", "set", "dp1", "up"])?;
        ns.ip(&["link", "set", "dp0", "up"])?;
        ns.ip(&["addr", "add", "198.18.0.2/24", "dev", "dp0"])?;
        ns.ip(&["-6", "addr", "add", "2001:db8::2/64", "dev", "dp0", "nodad"])?;
        for backend in [
            frames::BACKEND_V4.to_string(),
            frames::BACKEND_V6.to_string(),
        ] {
            ns.ip(&[
                "neigh",
                "replace",
                &backend,
                "lladdr",
                &backend_mac,
                "dev",
                "dp0",
                "nud",
                "permanent",
            ])?;
        }
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        ns.enter()?;
        let ifindex = nix::net::if_::if_nametoindex("dp0").context("dp0's ifindex")?;
        Ok(Self { _ns: ns, ifindex })
    }

    /// `struct xdp_md` for BPF_PROG_TEST_RUN: the frame arrives on dp0
    /// (data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    /// egress_ifindex).
    fn ctx(&self, frame_len: usize) -> Vec<u8> {
        [0, frame_len as u32, 0, self.ifindex, 0, 0]
            .iter()
            .flat_map(|w: &u32| w.to_ne_bytes())
            .collect()
    }
}

/// One BPF_PROG_TEST_RUN call: the action, the kernel's mean time per run,
/// and the output frame.
fn test_run(
    prog: &Xdp,
    frame: &[u8],
    ctx: &[u8],
    repeat: u32,
) -> anyhow::Result<(u32, Duration, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(ctx),
            repeat,
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, r.duration, out))
}

/// A row of the steady-state table.
struct RepeatRow<'a> {
    label: String,
    prog: &'a Xdp,
    frame: Vec<u8>,
    ctx: Vec<u8>,
    action: u32,
    /// Checked as an L2 DSR frame of this family before timing.
    dsr: Option<Family>,
}

/// A row of the single-run table.
struct SingleRow<'a> {
    label: String,
    prog: &'a Xdp,
    /// Run `i` sends `frames[i % len]`, first deleting its key from the
    /// connection table if it has one (a new flow). A new-flow row has
    /// `new_flows()` frames of distinct flows, the other rows one.
    frames: Vec<(Vec<u8>, Option<Key>)>,
    ctx: Vec<u8>,
    /// The action every run must answer.
    action: u32,
    /// Issue 16's target for the row, ns above the floor.
    target: Option<f64>,
    /// Which object's connection table the keys are deleted from: 0 this
    /// build's, 1 the compared one's.
    table: usize,
}

/// A new-flow row's key, deleted before each run: from an xlb object's
/// connection table (`SingleRow::table`), or from Katran's LRU map of CPU 0
/// (the bench runs on CPU 0).
enum Key {
    Xlb(FlowWords),
    Katran([u8; katran::FLOW_KEY_LEN]),
}

/// With `var` set to comma-separated words, keep the first row (the floor:
/// every row is read against it) and the rows whose label contains one of
/// the words.
fn keep_only<T>(rows: &mut Vec<T>, label: impl Fn(&T) -> &str, var: &str) {
    let Ok(only) = std::env::var(var) else {
        return;
    };
    let words: Vec<&str> = only.split(',').filter(|w| !w.is_empty()).collect();
    let mut first = true;
    rows.retain(|r| {
        let keep = first || words.iter().any(|w| label(r).contains(w));
        first = false;
        keep
    });
}

/// What the tunnel rows found out before timing.
struct Note {
    method: Method,
    family: Family,
    outcome: Outcome,
}

/// Delete `key` from the connection table; an absent key is fine.
fn forget(conns: &mut xlb_dataplane::ConnFlows, key: &FlowWords) -> anyhow::Result<()> {
    match conns.remove(key) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        Err(e) => Err(e).context("deleting a flow from the connection table"),
    }
}

/// Run `row` `SINGLE_RUNS` times; the mean of the fastest `1 - TRIM`.
fn time_single(
    row: &SingleRow,
    conns: &mut [xlb_dataplane::ConnFlows],
    katran: Option<&Katran>,
) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(SINGLE_RUNS);
    for i in 0..SINGLE_RUNS {
        let (frame, key) = &row.frames[i % row.frames.len()];
        match key {
            Some(Key::Xlb(key)) => forget(&mut conns[row.table], key)?,
            Some(Key::Katran(key)) => katran
                .context("a Katran row without Katran")?
                .forget(0, key)?,
            None => {}
        }
        let (action, d, _) = test_run(row.prog, frame, &row.ctx, 1)?;
        ensure!(
            action == row.action,
            "{}: action {action} while timing",
            row.label
        );
        times.push(d);
    }
    times.sort();
    let kept = &times[..SINGLE_RUNS - (SINGLE_RUNS as f64 * TRIM) as usize];
    Ok(kept.iter().sum::<Duration>() / kept.len() as u32)
}

/// Send the new-flow and hit frames of a (method, family) VIP once each and
/// check the output; the rows to time, unless the balancer does not
/// implement the method.
fn prepare<'a>(
    balancer: &'a Xdp,
    fib: &FibHost,
    conns: &mut xlb_dataplane::ConnFlows,
    table: usize,
    method: Method,
    family: Family,
    flows: u16,
) -> anyhow::Result<(Note, Vec<SingleRow<'a>>)> {
    let vip = family.vip();
    let name = format!("{} {}", method.label(), family.label());
    let who = if table == 0 { "xlb" } else { "B xlb" };
    let hit = frames::tcp(family, vip, port(method), CLIENT_PORT, ACK);
    // The new flows, each sent once and checked; each key must be the one
    // the balancer files its flow under, or the deletes before each run
    // would leave its entry and time a hit.
    let mut new = Vec::new();
    let mut outcome = None;
    let mut filed = true;
    for i in 0..flows {
        let src_port = NEW_FLOW_PORT + i;
        let frame = frames::tcp(family, vip, port(method), src_port, SYN);
        let key = frames::tcp_flow_key(family, port(method), src_port);
        forget(conns, &key)?;
        let (action, _, out) = test_run(balancer, &frame, &fib.ctx(frame.len()), 1)?;
        let o = frames::check(method, family, &frame, action, &out)
            .map_err(|e| anyhow::anyhow!("{name}, new flow: {e}"))?;
        ensure!(
            outcome.is_none_or(|first| first == o),
            "{name}: new flows forwarded differently ({o:?}, {outcome:?})"
        );
        outcome = Some(o);
        filed &= conns.get(&key, 0).is_ok();
        new.push((frame, Some(Key::Xlb(key))));
    }
    let outcome = outcome.context("no new flow")?;
    // A compared object may file flows elsewhere (an experiment): its
    // new-flow row is left out, as it could not be made to miss, unless
    // `XLB_BENCH_UNFILED_OK` says the object files nothing on purpose (a
    // measurement-only variant without the insert: its SYNs miss anyway).
    let unfiled_ok = table != 0 && std::env::var_os("XLB_BENCH_UNFILED_OK").is_some();
    ensure!(
        filed || table != 0,
        "{name}: after a new flow, its key is not in the connection table; the bench's key \
         (frames::tcp_flow_key) does not match the balancer's"
    );
    let note = Note {
        method,
        family,
        outcome,
    };
    if outcome == Outcome::NotEncapsulated {
        return Ok((note, Vec::new()));
    }
    // Twice: the first may be the flow's first packet.
    for _ in 0..2 {
        let (action, _, out) = test_run(balancer, &hit, &fib.ctx(hit.len()), 1)?;
        let again = frames::check(method, family, &hit, action, &out)
            .map_err(|e| anyhow::anyhow!("{name}, known flow: {e}"))?;
        ensure!(
            again == outcome,
            "{name}: {again:?} for a known flow, {outcome:?} for a new one"
        );
    }
    let hit_target = if method.tunnels() {
        targets::TUNNEL_HIT
    } else {
        targets::DSR_HIT
    };
    let row = |what: &str, frames: Vec<(Vec<u8>, Option<Key>)>, target| SingleRow {
        label: format!("{who} {name}: {what}"),
        prog: balancer,
        ctx: fib.ctx(frames[0].0.len()),
        frames,
        action: XDP_TX,
        target: Some(target),
        table,
    };
    let mut rows = Vec::new();
    if filed || unfiled_ok {
        rows.push(row("new flow", new, targets::NEW_FLOW));
    }
    rows.push(row("conn-table hit", vec![(hit, None)], hit_target));
    if family == Family::V4 {
        // A UDP datagram of a known flow: the DSR VIP is `dns`, the tunnel
        // methods' are `<method>-udp` on the TCP VIP's port.
        let (udp_port, target) = if method.tunnels() {
            (port(method), targets::TUNNEL_UDP_HIT)
        } else {
            (DNS_PORT, targets::DSR_HIT)
        };
        let udp = frames::udp_v4(udp_port, CLIENT_PORT);
        for _ in 0..2 {
            let (action, _, out) = test_run(balancer, &udp, &fib.ctx(udp.len()), 1)?;
            frames::check(method, family, &udp, action, &out)
                .map_err(|e| anyhow::anyhow!("{name}, UDP: {e}"))?;
        }
        rows.push(row("UDP, known flow", vec![(udp, None)], target));
    }
    Ok((note, rows))
}

/// Issue 16's configuration for Katran: the IPv4 VIP's TCP and UDP ports
/// and the IPv6 VIP's TCP port, three reals each.
const KATRAN_TCP_PORT: u16 = 80;
const KATRAN_UDP_PORT: u16 = 443;

/// Katran's three reals of a family's VIPs, from the family's backend on
/// (its IPv4 VIPs' reals are IPv4: IPIP; its IPv6 VIP's IPv6:
/// IPv6-in-IPv6).
fn katran_reals(family: Family) -> Vec<std::net::IpAddr> {
    katran::reals_from(family.backend(), 3)
}

fn katran_vips() -> Vec<katran::Vip> {
    let vip = |family: Family, port, proto| katran::Vip {
        address: family.vip(),
        port,
        proto,
        reals: katran_reals(family),
    };
    vec![
        vip(Family::V4, KATRAN_TCP_PORT, lb_common::PROTO_TCP),
        vip(Family::V4, KATRAN_UDP_PORT, lb_common::PROTO_UDP),
        vip(Family::V6, KATRAN_TCP_PORT, lb_common::PROTO_TCP),
    ]
}

/// Katran's rows of a family, each frame sent once (twice for a known
/// flow) and its output checked first: a new flow (`flows` flows, each
/// deleted from the LRU map before its run), a known TCP flow and, for
/// IPv4, a known UDP flow.
fn prepare_katran<'a>(
    k: &'a Katran,
    fib: &FibHost,
    family: Family,
    flows: u16,
) -> anyhow::Result<Vec<SingleRow<'a>>> {
    let prog = k.program();
    let reals = katran_reals(family);
    let vip = family.vip();
    let name = format!("katran {}", family.label());
    let send = |frame: &[u8], what: &str| -> anyhow::Result<()> {
        let (action, _, out) = test_run(prog, frame, &fib.ctx(frame.len()), 1)?;
        katran::check(frame, action, &out, &reals, frames::GATEWAY_MAC)
            .map_err(|e| anyhow::anyhow!("{name}, {what}: {e}"))?;
        Ok(())
    };
    let mut new = Vec::new();
    for i in 0..flows {
        let src_port = NEW_FLOW_PORT + i;
        let frame = frames::tcp(family, vip, KATRAN_TCP_PORT, src_port, SYN);
        let key = katran::flow_key(
            family.client(),
            vip,
            src_port,
            KATRAN_TCP_PORT,
            lb_common::PROTO_TCP,
        );
        k.forget(0, &key)?;
        send(&frame, "new flow")?;
        // `XLB_BENCH_UNFILED_OK`: a Katran object built without its LRU
        // update (measurement only) is timed too.
        ensure!(
            k.holds(0, &key) || std::env::var_os("XLB_BENCH_UNFILED_OK").is_some(),
            "{name}: after a new flow, its key is not in Katran's LRU map of CPU 0; the bench's \
             key (katran::flow_key) does not match Katran's"
        );
        new.push((frame, Some(Key::Katran(key))));
    }
    let row = |what: &str, frames: Vec<(Vec<u8>, Option<Key>)>| SingleRow {
        label: format!("{name}: {what}"),
        prog,
        ctx: fib.ctx(frames[0].0.len()),
        frames,
        action: XDP_TX,
        target: None,
        table: 0,
    };
    let hit = frames::tcp(family, vip, KATRAN_TCP_PORT, CLIENT_PORT, ACK);
    // Twice: the first files the flow (a non-SYN miss), the second hits.
    for _ in 0..2 {
        send(&hit, "known flow")?;
    }
    let mut rows = vec![
        row("new flow", new),
        row("conn-table hit", vec![(hit, None)]),
    ];
    if family == Family::V4 {
        let udp = frames::udp_v4(KATRAN_UDP_PORT, CLIENT_PORT);
        for _ in 0..2 {
            send(&udp, "UDP")?;
        }
        rows.push(row("UDP, known flow", vec![(udp, None)]));
    }
    Ok(rows)
}

fn main() -> anyhow::Result<()> {
    if !support::root("dataplane") {
        return Ok(());
    }
    let fib = FibHost::enter()?;
    support::pin_to_cpu(0)?;

    let mut dp = xlb_dataplane::Dataplane::load()?;
    let config = xlb_core::config::parse(&config(), "dataplane.toml")?;
    let desired = xlb_core::state::desired(&config, &Default::default())?;
    let host = HostInterface {
        mac: frames::LB_MAC,
        ifindex: fib.ifindex,
        mtu: 1500,
    };
    dp.apply(host, &desired, None)?;
    let mut conns = vec![dp.conn_table().flows_map()?];
    let compared = Compared::load(host, &desired)?;
    if let Some(c) = &compared {
        conns.push(c.dp.conn_table().flows_map()?);
    }
    let katran = match std::env::var_os("XLB_BENCH_KATRAN") {
        Some(path) => {
            // As many flows per CPU as xlb's connection table holds.
            let k = Katran::load(
                std::path::Path::new(&path),
                &katran_vips(),
                frames::GATEWAY_MAC,
                lb_common::maps::CONN_TABLE_SIZE,
                support::online_cpus(),
            )
            .context("XLB_BENCH_KATRAN")?;
            println!("Katran's object: {}", path.to_string_lossy());
            Some(k)
        }
        None => None,
    };

    let mut aux = aya::Ebpf::load(xlb_dataplane::aux_object())?;
    support::load_xdp(&mut aux, aux::MAC_SWAP_PROGRAM)?;
    support::load_xdp(&mut aux, aux::FIB_LOOKUP_PROGRAM)?;
    let map = aux
        .map_mut(aux::FIB_DST_MAP)
        .context("no map XLB_FIB_DST")?;
    aya::maps::Array::<_, u32>::try_from(map)?.set(
        0,
        u32::from_ne_bytes(frames::BACKEND_V4.octets()),
        0,
    )?;
    support::load_xdp(&mut aux, aux::FIB_LOOKUP6_PROGRAM)?;
    let map = aux
        .map_mut(aux::FIB_DST6_MAP)
        .context("no map XLB_FIB_DST6")?;
    // The address as the program reads it: four words in memory order.
    let v6 = frames::BACKEND_V6.octets();
    let v6_words: [u32; 4] = std::array::from_fn(|i| {
        u32::from_ne_bytes([v6[4 * i], v6[4 * i + 1], v6[4 * i + 2], v6[4 * i + 3]])
    });
    aya::maps::Array::<_, [u32; 4]>::try_from(map)?.set(0, v6_words, 0)?;
    let floor = support::xdp(&aux, aux::MAC_SWAP_PROGRAM)?;
    let fib_lookup = support::xdp(&aux, aux::FIB_LOOKUP_PROGRAM)?;
    let fib_lookup6 = support::xdp(&aux, aux::FIB_LOOKUP6_PROGRAM)?;
    let balancer = dp.program();

    // Steady state.
    let v4 = Family::V4.vip();
    let v6 = Family::V6.vip();
    let dsr = port(Method::L2Dsr);
    let repeat_row = |label: &str, prog, frame: Vec<u8>, action, dsr| RepeatRow {
        label: label.to_string(),
        prog,
        ctx: fib.ctx(frame.len()),
        frame,
        action,
        dsr,
    };
    let mut repeat_rows = vec![
        repeat_row(
            "bare MAC swap, XDP_TX (floor)",
            floor,
            frames::tcp(Family::V4, v4, dsr, CLIENT_PORT, ACK),
            XDP_TX,
            None,
        ),
        repeat_row(
            "one bpf_fib_lookup (IPv4) + MAC swap",
            fib_lookup,
            frames::tcp(Family::V4, v4, dsr, CLIENT_PORT, ACK),
            XDP_TX,
            None,
        ),
        repeat_row(
            "one bpf_fib_lookup (IPv6) + MAC swap",
            fib_lookup6,
            frames::tcp(Family::V4, v4, dsr, CLIENT_PORT, ACK),
            XDP_TX,
            None,
        ),
        repeat_row(
            "xlb IPv4: TCP SYN, one flow again and again",
            balancer,
            frames::tcp(Family::V4, v4, dsr, CLIENT_PORT, SYN),
            XDP_TX,
            Some(Family::V4),
        ),
        repeat_row(
            "xlb IPv4: TCP ACK, conn-table hit",
            balancer,
            frames::tcp(Family::V4, v4, dsr, CLIENT_PORT, ACK),
            XDP_TX,
            Some(Family::V4),
        ),
        repeat_row(
            "xlb IPv4: UDP datagram",
            balancer,
            frames::udp_v4(DNS_PORT, CLIENT_PORT),
            XDP_TX,
            Some(Family::V4),
        ),
        repeat_row(
            "xlb IPv6: TCP SYN, one flow again and again",
            balancer,
            frames::tcp(Family::V6, v6, dsr, CLIENT_PORT, SYN),
            XDP_TX,
            Some(Family::V6),
        ),
        repeat_row(
            "xlb IPv6: TCP ACK, conn-table hit",
            balancer,
            frames::tcp(Family::V6, v6, dsr, CLIENT_PORT, ACK),
            XDP_TX,
            Some(Family::V6),
        ),
        repeat_row(
            "xlb: not for a VIP, XDP_PASS",
            balancer,
            frames::tcp(Family::V4, "198.18.0.99".parse()?, dsr, CLIENT_PORT, ACK),
            XDP_PASS,
            None,
        ),
    ];
    if std::env::var_os("XLB_BENCH_NO_STEADY").is_some() {
        repeat_rows.truncate(1);
    }
    keep_only(&mut repeat_rows, |r| &r.label, "XLB_BENCH_STEADY_ONLY");
    // The check: the DSR rows' output is the L2 DSR frame; each runs twice,
    // so that the second run of a hit row is a hit.
    for row in &repeat_rows {
        let Some(family) = row.dsr else { continue };
        for _ in 0..2 {
            let (action, _, out) = test_run(row.prog, &row.frame, &row.ctx, 1)?;
            frames::check(Method::L2Dsr, family, &row.frame, action, &out)
                .map_err(|e| anyhow::anyhow!("{}: {e}", row.label))?;
        }
    }

    let flows = new_flows()?;
    if let Ok(k) = std::env::var("XLB_BENCH_SHIFT") {
        let k: u16 = k
            .parse()
            .ok()
            .filter(|k| *k <= 10_000)
            .with_context(|| format!("XLB_BENCH_SHIFT={k}: expected a count up to 10000"))?;
        for family in Family::ALL {
            for i in 0..k {
                let f = frames::tcp(family, family.vip(), dsr, 30000 + i, SYN);
                test_run(balancer, &f, &fib.ctx(f.len()), 1)?;
            }
        }
    }
    // Single runs, per method and family.
    let mut notes = Vec::new();
    let floor_frame = frames::tcp(Family::V4, v4, dsr, CLIENT_PORT, ACK);
    let mut single_rows = vec![SingleRow {
        label: "bare MAC swap, XDP_TX (floor)".into(),
        prog: floor,
        ctx: fib.ctx(floor_frame.len()),
        frames: vec![(floor_frame, None)],
        action: XDP_TX,
        target: None,
        table: 0,
    }];
    for method in Method::ALL {
        for family in Family::ALL {
            let (note, rows) = prepare(balancer, &fib, &mut conns[0], 0, method, family, flows)?;
            notes.push(note);
            // Katran's rows of the family, right after xlb's IPIP rows.
            let katran_rows = match &katran {
                Some(k) if method == Method::Ipip => prepare_katran(k, &fib, family, flows)?,
                _ => Vec::new(),
            };
            let Some(c) = &compared else {
                single_rows.extend(rows);
                single_rows.extend(katran_rows);
                continue;
            };
            // Each row of this build beside the same row of the other.
            let (other, mut others) = prepare(
                c.dp.program(),
                &fib,
                &mut conns[1],
                1,
                method,
                family,
                flows,
            )?;
            let unencapsulated = |o: Outcome| o == Outcome::NotEncapsulated;
            ensure!(
                unencapsulated(other.outcome) == unencapsulated(notes[notes.len() - 1].outcome),
                "XLB_BENCH_COMPARE: the compared object forwards {} {} otherwise",
                method.label(),
                family.label()
            );
            let b_first = std::env::var_os("XLB_BENCH_B_FIRST").is_some();
            for a in rows {
                let twin = format!("B {}", a.label);
                let b = others
                    .iter()
                    .position(|b| b.label == twin)
                    .map(|i| others.remove(i));
                if b_first && let Some(b) = b {
                    single_rows.push(b);
                    single_rows.push(a);
                } else {
                    single_rows.push(a);
                    single_rows.extend(b);
                }
            }
            single_rows.extend(katran_rows);
        }
    }
    keep_only(&mut single_rows, |r| &r.label, "XLB_BENCH_ONLY");
    if std::env::var_os("XLB_BENCH_REVERSE").is_some() {
        single_rows[1..].reverse();
    }
    let pass_frame = frames::tcp(Family::V4, "198.18.0.99".parse()?, dsr, CLIENT_PORT, ACK);
    let pass_row = |label: &str, prog| SingleRow {
        label: label.into(),
        prog,
        ctx: fib.ctx(pass_frame.len()),
        frames: vec![(pass_frame.clone(), None)],
        action: XDP_PASS,
        target: Some(targets::PASS),
        table: 0,
    };
    single_rows.push(pass_row("xlb: not for a VIP, XDP_PASS", balancer));
    if let Some(c) = &compared {
        single_rows.push(pass_row("B xlb: not for a VIP, XDP_PASS", c.dp.program()));
    }
    if let Some(k) = &katran {
        single_rows.push(SingleRow {
            target: None,
            ..pass_row("katran: not for a VIP, XDP_PASS", k.program())
        });
    }

    let mut repeat_times: Vec<Vec<Duration>> = vec![Vec::new(); repeat_rows.len()];
    let mut single_times: Vec<Vec<Duration>> = vec![Vec::new(); single_rows.len()];
    for _ in 0..ROUNDS {
        for (row, times) in repeat_rows.iter().zip(&mut repeat_times) {
            let (action, d, _) = test_run(row.prog, &row.frame, &row.ctx, REPEAT)?;
            if action != row.action {
                bail!("{}: action {action}, expected {}", row.label, row.action);
            }
            times.push(d);
        }
        for (row, times) in single_rows.iter().zip(&mut single_times) {
            times.push(time_single(row, &mut conns, katran.as_ref())?);
        }
    }

    let repeat_medians: Vec<Duration> = repeat_times
        .into_iter()
        .map(support::median_duration)
        .collect();
    let single_medians: Vec<Duration> = single_times
        .into_iter()
        .map(support::median_duration)
        .collect();
    print_program(balancer)?;
    print_repeat(&repeat_rows, &repeat_medians);
    print_single(&single_rows, &single_medians, repeat_medians[0]);
    print_notes(&notes);
    if let Some(k) = &katran {
        println!("\n{}", k.describe()?);
        // Over MAX_CONN_RATE new flows a second, Katran stops filing them
        // (cheaper SYNs): the new-flow rows must stay under it.
        let rate = k.new_conn_rate()?;
        ensure!(
            rate <= katran::MAX_CONN_RATE,
            "Katran counted {rate} new flows in a second (over MAX_CONN_RATE): its new-flow rows \
             did not file their flows"
        );
        println!(
            "Katran's new flows in its last second: {rate} (under MAX_CONN_RATE {}: every SYN \
             filed its flow)",
            katran::MAX_CONN_RATE
        );
        print_katran(&single_rows, &single_medians);
    }
    Ok(())
}

/// Issue 16's reading: each of xlb's rows at most 0.8x Katran's on the
/// same work, both as ns above the floor's single run.
fn print_katran(rows: &[SingleRow], medians: &[Duration]) {
    let floor = ns(medians[0]);
    let above = |label: &str| {
        rows.iter()
            .position(|r| r.label == label)
            .map(|i| ns(medians[i]) - floor)
    };
    println!(
        "\nKatran beside xlb: ns above the floor's single run, and xlb's over Katran's (issue \
         16: at most 0.80)"
    );
    println!(
        "{:<30} {:>8} {:>14} {:>14} {:>14}",
        "frame", "Katran", "xlb IPIP", "xlb GUE", "xlb L2 DSR"
    );
    let pairs = [
        ("TCP, known flow, IPv4", "conn-table hit", "IPv4"),
        ("TCP, known flow, IPv6", "conn-table hit", "IPv6"),
        ("UDP, known flow (IPv4)", "UDP, known flow", "IPv4"),
        ("TCP SYN, new flow, IPv4", "new flow", "IPv4"),
        ("TCP SYN, new flow, IPv6", "new flow", "IPv6"),
    ];
    let cell = |x: Option<f64>, k: f64| match x {
        Some(x) => format!(
            "{x:>+6.0} {:>5.2}{}",
            x / k,
            if x <= 0.8 * k { " " } else { "!" }
        ),
        None => "-".into(),
    };
    let (mut met, mut total) = (0, 0);
    let mut tally = |x: Option<f64>, k: f64| {
        if let Some(x) = x {
            total += 1;
            met += usize::from(x <= 0.8 * k);
        }
    };
    for (what, row, family) in pairs {
        let Some(k) = above(&format!("katran {family}: {row}")) else {
            continue;
        };
        let xlb = |method: &str| above(&format!("xlb {method} {family}: {row}"));
        let (ipip, gue, dsr) = (xlb("IPIP"), xlb("GUE"), xlb("L2 DSR"));
        for x in [ipip, gue, dsr] {
            tally(x, k);
        }
        println!(
            "{what:<30} {k:>+8.0} {:>14} {:>14} {:>14}",
            cell(ipip, k),
            cell(gue, k),
            cell(dsr, k)
        );
    }
    if let (Some(k), Some(x)) = (
        above("katran: not for a VIP, XDP_PASS"),
        above("xlb: not for a VIP, XDP_PASS"),
    ) {
        tally(Some(x), k);
        println!(
            "{:<30} {k:>+8.0} {:>14}",
            "not for a VIP (XDP_PASS)",
            cell(Some(x), k)
        );
    }
    println!("xlb at most 0.80x Katran: {met} of {total} cells (\"!\": not met)");
}

/// The object named by `XLB_BENCH_COMPARE`, loaded beside this build's
/// with the same config; its pins are removed on drop.
struct Compared {
    dp: xlb_dataplane::Dataplane,
    pins: xlb_dataplane::pins::PinDir,
}

impl Compared {
    fn load(
        host: HostInterface,
        desired: &xlb_core::state::Desired,
    ) -> anyhow::Result<Option<Self>> {
        let Some(path) = std::env::var_os("XLB_BENCH_COMPARE") else {
            return Ok(None);
        };
        let object = std::fs::read(&path)
            .with_context(|| format!("XLB_BENCH_COMPARE: reading {}", path.to_string_lossy()))?;
        let bpffs =
            std::path::PathBuf::from(format!("/sys/fs/bpf/xlbbench-{}", std::process::id()));
        let pins = xlb_dataplane::pins::PinDir::new(&bpffs, "dp0");
        pins.create()?;
        let mut dp =
            xlb_dataplane::Dataplane::load_pinned(&object, lb_common::maps::CONN_TABLE_SIZE, &pins)
                .with_context(|| {
                    format!("XLB_BENCH_COMPARE: loading {}", path.to_string_lossy())
                })?;
        dp.apply(host, desired, None)?;
        println!("compared object (B rows): {}", path.to_string_lossy());
        print_program(dp.program())?;
        Ok(Some(Self { dp, pins }))
    }
}

impl Drop for Compared {
    fn drop(&mut self) {
        if let Err(e) = self.pins.remove() {
            eprintln!(
                "XLB_BENCH_COMPARE: removing {}: {e}",
                self.pins.path().display()
            );
        }
        if let Some(bpffs) = self.pins.path().parent().and_then(|p| p.parent()) {
            let _ = std::fs::remove_dir(bpffs);
        }
    }
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// The loaded balancer's size as the kernel reports it: instructions the
/// verifier processed, translated (xlated) and JIT-compiled bytes.
fn print_program(prog: &Xdp) -> anyhow::Result<()> {
    let info = prog.info().context("the balancer's program info")?;
    let show = |v: Option<u32>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    println!(
        "balancer program (id {}): {} instructions verified, {} B xlated, {} B jited",
        info.id(),
        show(info.verified_instruction_count()),
        show(info.size_translated()),
        info.size_jitted()
    );
    Ok(())
}

fn print_repeat(rows: &[RepeatRow], medians: &[Duration]) {
    println!(
        "per-packet time, steady state: BPF_PROG_TEST_RUN repeat {REPEAT} (kernel mean per run), \
         median of {ROUNDS} interleaved rounds, CPU 0; load average {}",
        support::load_average()
    );
    println!(
        "{:<44} {:>9} {:>9}",
        "program / packet", "ns/packet", "vs floor"
    );
    for (row, m) in rows.iter().zip(medians) {
        println!(
            "{:<44} {:>9} {:>8.2}x",
            row.label,
            m.as_nanos(),
            ns(*m) / ns(medians[0])
        );
    }
}

fn print_single(rows: &[SingleRow], medians: &[Duration], floor_steady: Duration) {
    let floor = ns(medians[0]);
    // What a single run costs beyond the program: the floor's single-run
    // time minus its steady-state time.
    let fixed = floor - ns(floor_steady);
    println!(
        "\nper method and family: single runs (repeat 1, one syscall and a fresh frame each; \
         mean of the fastest {:.0}% of {SINGLE_RUNS} runs), median of {ROUNDS} interleaved \
         rounds; fixed cost of a single run {fixed:.0} ns (floor single - floor steady); \
         load average {}",
        (1.0 - TRIM) * 100.0,
        support::load_average()
    );
    println!(
        "{:<44} {:>7} {:>11} {:>8} {:>8} {:>9} {:>15}",
        "program / packet", "ns/run", "above floor", "target", "met", "vs floor", "vs floor, net*"
    );
    let mut met = 0;
    let (mut targets_met, mut targets) = (0, 0);
    for (i, (row, m)) in rows.iter().zip(medians).enumerate() {
        let net = (ns(*m) - fixed) / ns(floor_steady);
        met += usize::from(i > 0 && net <= GOAL);
        let above = ns(*m) - floor;
        let (target, verdict) = match row.target {
            Some(t) => {
                targets += 1;
                targets_met += usize::from(above <= t);
                (format!("+{t:.0}"), if above <= t { "yes" } else { "NO" })
            }
            None => (String::new(), ""),
        };
        println!(
            "{:<44} {:>7.1} {:>11.1} {:>8} {:>8} {:>8.2}x {:>14.2}x",
            row.label,
            ns(*m),
            above,
            target,
            verdict,
            ns(*m) / floor,
            net
        );
    }
    println!(
        "issue 16 targets (ns above the floor's single run): met by {targets_met} of {targets} \
         rows"
    );
    println!(
        "* the fixed cost taken out of both; goal <= {GOAL:.2}x the floor: met by {met} of {} \
         xlb rows",
        rows.len() - 1
    );
}

fn print_notes(notes: &[Note]) {
    for n in notes {
        let what = match n.outcome {
            Outcome::Forwarded(NextHop::Backend) if n.method.tunnels() => {
                "encapsulated, next hop from the FIB (neighbour entry)"
            }
            Outcome::Forwarded(NextHop::Backend) => "MACs rewritten to the backend's",
            Outcome::Forwarded(NextHop::Gateway) => {
                "encapsulated, next hop [tunnel] gateway_mac: the FIB lookup did not answer"
            }
            Outcome::NotEncapsulated => {
                "NOT MEASURED: the loaded balancer sent the frame unencapsulated (L2 DSR); it \
                 does not implement this method yet"
            }
        };
        println!("{} {}: {what}", n.method.label(), n.family.label());
    }
}
