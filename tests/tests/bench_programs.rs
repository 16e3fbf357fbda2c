//! The benchmarks' own XDP programs (lb-ebpf's aux object) do what the
//! benches take for granted: a smoke test of each, one BPF_PROG_TEST_RUN at
//! a time, no namespace (the benches themselves run with
//! `cargo xtask bench`, never in CI).

use aya::maps::PerCpuArray;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use lb_common::aux;

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
/// The generator's source ports.
const GEN_PORTS: std::ops::Range<u16> = aux::GEN_FIRST_PORT..aux::GEN_FIRST_PORT + aux::GEN_FLOWS;

fn ack() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([198, 18, 0, 1], [198, 18, 100, 1], 64)
        .tcp(12345, 8080, 1, 65535)
        .ack(1)
        .write(&mut out, &[0u8; 6])
        .unwrap();
    out
}

/// Keep this test's thread on CPU 0: the generator's sequence and the
/// "known flow" of the LRU programs are per CPU.
fn pin() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin to CPU 0");
}

fn aux() -> aya::Ebpf {
    aya::Ebpf::load(xlb_dataplane::aux_object()).expect("load the aux object")
}

fn load<'a>(ebpf: &'a mut aya::Ebpf, name: &str) -> &'a Xdp {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("no program {name}"))
        .try_into()
        .unwrap();
    prog.load()
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    ebpf.program(name).unwrap().try_into().unwrap()
}

/// One run: the action and the output frame.
fn run(prog: &Xdp, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 64];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

#[test]
fn mac_swap_sends_the_frame_back_with_the_addresses_swapped() {
    tests::require_privileges!();
    let mut ebpf = aux();
    let frame = ack();
    let (action, out) = run(load(&mut ebpf, aux::MAC_SWAP_PROGRAM), &frame);
    assert_eq!(action, XDP_TX);
    assert_eq!(out[..6], frame[6..12]);
    assert_eq!(out[6..12], frame[..6]);
    assert_eq!(out[12..], frame[12..]);
}

/// The generator's counts summed over the CPUs: (sent back, dropped on
/// the stop flag).
fn gen_counts(ebpf: &aya::Ebpf) -> (u64, u64) {
    let counts = PerCpuArray::<_, u64>::try_from(ebpf.map(aux::GEN_COUNT_MAP).unwrap()).unwrap();
    let sum = |i: u32| counts.get(&i, 0).unwrap().iter().sum::<u64>();
    (sum(aux::GEN_BOUNCED), sum(aux::GEN_STOPPED))
}

/// Set the generator's stop flag.
fn set_stop(ebpf: &mut aya::Ebpf, stop: u32) {
    aya::maps::Array::<_, u32>::try_from(ebpf.map_mut(aux::GEN_STOP_MAP).unwrap())
        .unwrap()
        .set(0, stop, 0)
        .unwrap();
}

fn bounce(ebpf: &aya::Ebpf) -> &Xdp {
    ebpf.program(aux::GEN_BOUNCE_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap()
}

/// The source port of a generator frame, after checking that the frame
/// is the template but for the source port and the TCP checksum, and that
/// the checksum is valid.
fn gen_port(template: &[u8], out: &[u8]) -> u16 {
    assert_eq!(
        out.len(),
        aux::GEN_FRAME_LEN,
        "the generator's frame length"
    );
    let packet = SlicedPacket::from_ethernet(out).expect("a frame");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
        panic!("not IPv4");
    };
    let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
        panic!("not TCP");
    };
    let expected = tcp
        .to_header()
        .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
        .unwrap();
    assert_eq!(
        tcp.checksum(),
        expected,
        "TCP checksum after the port change"
    );
    assert!(
        GEN_PORTS.contains(&tcp.source_port()),
        "{}",
        tcp.source_port()
    );
    assert_eq!(out[..34], template[..34], "only the TCP header may change");
    assert_eq!(
        out[36..50],
        template[36..50],
        "TCP: only the source port and checksum"
    );
    assert_eq!(
        out[52..],
        template[52..],
        "TCP: only the source port and checksum"
    );
    tcp.source_port()
}

#[test]
fn generator_bounces_what_comes_back_as_the_next_flow_and_stops_on_its_flag() {
    tests::require_privileges!();
    pin();
    let mut ebpf = aux();
    let frame = ack();
    let template: [u8; aux::GEN_FRAME_LEN] = frame.as_slice().try_into().expect("a 60-byte frame");
    aya::maps::Array::<_, [u8; aux::GEN_FRAME_LEN]>::try_from(
        ebpf.map_mut(aux::GEN_TEMPLATE_MAP).unwrap(),
    )
    .unwrap()
    .set(0, template, 0)
    .unwrap();
    load(&mut ebpf, aux::GEN_BOUNCE_PROGRAM);
    // What the program under test sends back: the frame with its MACs
    // swapped (the floor, L2 DSR), or with 20 (IPIP) or 28 (GUE) bytes of
    // headers in front; and, never seen but handled, a frame of zeros and a
    // shorter one. Whatever it is, the template goes out again,
    // GEN_FRAME_LEN bytes long.
    let mut swapped = frame.clone();
    swapped[..12].rotate_left(6);
    let mut ports = Vec::new();
    for input in [
        swapped,
        [vec![0xee; 20], frame.clone()].concat(),
        [vec![0xee; 28], frame.clone()].concat(),
        vec![0u8; aux::GEN_FRAME_LEN],
        frame[..54].to_vec(),
    ] {
        let (action, out) = run(bounce(&ebpf), &input);
        assert_eq!(action, XDP_TX, "a {}-byte frame", input.len());
        ports.push(gen_port(&frame, &out));
    }
    // A fresh object's sequence starts at 0: the first frame took port
    // 20001, the next ones the next ports.
    assert_eq!(ports, [20001, 20002, 20003, 20004, 20005]);
    assert_eq!(gen_counts(&ebpf), (5, 0));

    // The stop flag: every frame dropped and counted as such, the flow
    // sequence left where it was.
    set_stop(&mut ebpf, 1);
    for _ in 0..2 {
        assert_eq!(run(bounce(&ebpf), &frame).0, XDP_DROP);
    }
    assert_eq!(gen_counts(&ebpf), (5, 2));
    set_stop(&mut ebpf, 0);
    let (action, out) = run(bounce(&ebpf), &frame);
    assert_eq!(action, XDP_TX);
    assert_eq!(gen_port(&frame, &out), 20006);
    assert_eq!(gen_counts(&ebpf), (6, 2));
}

#[test]
fn generator_without_a_template_aborts() {
    tests::require_privileges!();
    let mut ebpf = aux();
    let (action, _) = run(load(&mut ebpf, aux::GEN_BOUNCE_PROGRAM), &ack());
    assert_eq!(action, XDP_ABORTED);
}

#[test]
fn lru_programs_insert_new_flows_and_find_the_known_one() {
    tests::require_privileges!();
    pin();
    // One object per candidate: its tables start empty.
    for candidate in aux::LRU_CANDIDATES {
        let map = candidate.map;
        let mut ebpf = aux();
        let frame = ack();
        let (action, out) = run(load(&mut ebpf, candidate.new_program), &frame);
        assert_eq!(action, XDP_TX, "{map}: new flow");
        assert_eq!(out[..6], frame[6..12], "{map}: new flow, MACs swapped");
        let hit = load(&mut ebpf, candidate.hit_program);
        // The first lookup misses and inserts the known flow; the next
        // ones find it.
        let actions: Vec<u32> = (0..3).map(|_| run(hit, &frame).0).collect();
        assert_eq!(actions, [XDP_PASS, XDP_TX, XDP_TX], "{map}");
    }
}

#[test]
fn fib_lookup_answers_as_the_namespace_fib_does() {
    tests::require_privileges!();
    // A namespace of its own: a veth with a route and a neighbour entry for
    // one address, forwarding on (bpf_fib_lookup requires it).
    let ns = tests::netns::Netns::new("xlbbench-smoke-fib").unwrap();
    ns.ip(&["link", "add", "f0", "type", "veth", "peer", "name", "f1"])
        .unwrap();
    ns.ip(&["link", "set", "f1", "up"]).unwrap();
    ns.ip(&["link", "set", "f0", "up"]).unwrap();
    ns.ip(&["addr", "add", "198.18.0.2/24", "dev", "f0"])
        .unwrap();
    ns.ip(&[
        "neigh",
        "replace",
        "198.18.0.11",
        "lladdr",
        "02:00:00:00:00:11",
        "dev",
        "f0",
        "nud",
        "permanent",
    ])
    .unwrap();
    ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let actions = ns
        .spawn(|| {
            let mut ebpf = aux();
            load(&mut ebpf, aux::FIB_LOOKUP_PROGRAM);
            let ifindex = nix::net::if_::if_nametoindex("f0")?;
            let frame = ack();
            let ctx: Vec<u8> = [0, frame.len() as u32, 0, ifindex, 0, 0]
                .iter()
                .flat_map(|w: &u32| w.to_ne_bytes())
                .collect();
            let mut actions = Vec::new();
            for dst in [[198, 18, 0, 11], [198, 18, 255, 254]] {
                aya::maps::Array::<_, u32>::try_from(ebpf.map_mut(aux::FIB_DST_MAP).unwrap())?
                    .set(0, u32::from_ne_bytes(dst), 0)?;
                let prog: &Xdp = ebpf.program(aux::FIB_LOOKUP_PROGRAM).unwrap().try_into()?;
                let r = prog.test_run(TestRunOptions {
                    data_in: Some(&frame),
                    ctx_in: Some(&ctx),
                    ..TestRunOptions::new()
                })?;
                actions.push(r.return_value);
            }
            Ok(actions)
        })
        .join()
        .unwrap()
        .unwrap();
    // The neighbour's address: a next hop (XDP_TX); one off every route:
    // none (XDP_DROP).
    assert_eq!(actions, [XDP_TX, XDP_DROP]);
}
