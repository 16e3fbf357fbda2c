//! The flow cache (docs/DATAPLANE.md, "The flow cache"): each CPU's copy of
//! the connection entries it used last, in front of the LRU. What this
//! checks, for an IPv4 and an IPv6 flow, on both CPUs (BPF_PROG_TEST_RUN
//! runs the program on the calling thread's CPU):
//!
//! - the program's own writes on a CPU (a SYN re-hashed onto a new table)
//!   are that CPU's next packet's;
//! - writes nothing tells the cache of (a SYN on the other CPU, an entry
//!   deleted by another process, as an eviction deletes one) are followed
//!   within the time bound: no packet sent later than
//!   `BOUND` after the write went by the old entry;
//! - the controller's writes and deletes (`ConnFlows`), held flows from
//!   other nodes among them (`ConnTable::insert_absent`), are followed at
//!   the next packet on every CPU;
//! - a program loaded anew over the same pins follows at once (its cache
//!   starts empty).
//!
//! A balancer without the cache passes the checks of following but fails
//! the check that some packet went by a stale slot (the cache is what is
//! tested here); one whose slots never expire fails the bound.

use std::time::{Duration, Instant};

use aya::maps::{HashMap, Map, MapData};
use lb_common::{
    hash::{ConnEntry, FlowKey4, FlowWords},
    stats::{EV_CONN_MISS, XDP_TX},
};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use tests::packets::{FrameBuilder, expected_backend, flow, run};
use xlb_core::simulate::Flow;
use xlb_core::state::{Allocation, Desired};
use xlb_dataplane::{ConnFlows, Dataplane};

const LB_MAC: [u8; 6] = tests::packets::LB_MAC;

/// The program's bound (`FLOW_CACHE_JIFFIES`, 2 jiffies) at the slowest
/// clock a kernel may have (HZ 100): 20 ms.
const BOUND: Duration = Duration::from_millis(20);

/// A TCP VIP of each family with backends `b0..b{n-1}`.
fn config(n: usize) -> String {
    let mut c = String::from("interface = \"xlbfc0\"\nhash_seed = 5\n");
    for (name, address) in [("web4", "198.18.100.1"), ("web6", "2001:db8:100::1")] {
        c.push_str(&format!(
            "[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = 80\nprotocol = \"tcp\"\n\
             table_size = 1021\n"
        ));
        for i in 0..n {
            c.push_str(&format!(
                "[[vip.backend]]\nname = \"b{i}\"\naddress = \"198.18.1.{}\"\nmac = \"02:00:00:00:01:{:02x}\"\n",
                i + 1,
                i + 1
            ));
        }
    }
    c
}

fn desired(text: &str, allocation: &Allocation) -> Desired {
    let config = xlb_core::config::parse(text, "flow_cache.toml").expect("a valid config");
    xlb_core::state::desired(&config, allocation).expect("desired")
}

fn tcp(v6: bool, i: u16) -> Flow {
    if v6 {
        flow(
            6,
            &format!("[2001:db8:3::7]:{}", 20_000 + i),
            "[2001:db8:100::1]:80",
        )
    } else {
        flow(6, &format!("198.18.3.7:{}", 20_000 + i), "198.18.100.1:80")
    }
}

/// Run the calling thread on `cpu` only.
fn pin(cpu: usize) {
    let mut on = CpuSet::new();
    on.set(cpu).expect("a CPU in the set");
    sched_setaffinity(Pid::from_raw(0), &on).expect("pin the thread");
}

/// Send `frame` through the balancer; the backend MAC it went to.
fn send(dp: &Dataplane, frame: &[u8]) -> [u8; 6] {
    let mut out = vec![0u8; 4096];
    let got = run(dp.program(), frame, &mut out).expect("BPF_PROG_TEST_RUN");
    assert_eq!(got.action, XDP_TX, "the frame was not sent");
    out[..6].try_into().expect("six bytes")
}

fn misses(dp: &Dataplane) -> u64 {
    dp.snapshot([], []).expect("read the counters").events[EV_CONN_MISS as usize]
}

/// A flow of the family that the added backend `b3` takes over: the flow,
/// its backend before and after.
struct Moved {
    flow: Flow,
    old: [u8; 6],
    new: [u8; 6],
    syn: Vec<u8>,
    ack: Vec<u8>,
}

fn moved(v6: bool, before: &Desired, after: &Desired, skip: usize) -> Moved {
    let (flow, old, new) = (0..4096u16)
        .map(|i| tcp(v6, i))
        .filter_map(|f| {
            let (o, _) = expected_backend(before, &f)?;
            let (n, _) = expected_backend(after, &f)?;
            (n.name == "b3").then_some((f, o.mac.0, n.mac.0))
        })
        .nth(skip)
        .expect("a flow moved to b3");
    Moved {
        flow,
        old,
        new,
        syn: FrameBuilder::new(flow).build(),
        ack: FrameBuilder::new(flow).established().build(),
    }
}

/// ACKs from the calling thread's CPU until one goes to `m.new` (at most
/// for a second): whether any went to `m.old`, and the latest start of one
/// that did, measured from `since`.
fn follow(dp: &Dataplane, m: &Moved, since: Instant) -> (bool, Duration) {
    let mut stale = false;
    let mut last = Duration::ZERO;
    loop {
        let start = since.elapsed();
        let to = send(dp, &m.ack);
        if to == m.new {
            return (stale, last);
        }
        assert_eq!(to, m.old, "an ACK went to neither backend");
        stale = true;
        last = start;
        assert!(
            start < Duration::from_secs(1),
            "the flow never followed its entry"
        );
    }
}

/// An ACK of `m` from each CPU goes to `mac`, as `what` says.
fn on_both_cpus(dp: &Dataplane, m: &Moved, mac: [u8; 6], what: &str) {
    for cpu in [0, 1] {
        pin(cpu);
        assert_eq!(
            send(dp, &m.ack),
            mac,
            "{:?}, CPU {cpu}: the ACK did not follow {what}",
            m.flow
        );
    }
}

/// The controller's write of the flow's entry, naming `backend_id`.
fn write(conns: &mut ConnFlows, flow: &Flow, backend_id: u32) {
    let entry = ConnEntry {
        backend_id,
        flow_hash: 0,
    };
    conns
        .insert(flow.words(), entry, 0)
        .expect("write the flow's entry");
}

/// This process's handle to a map of the loaded balancer by name, as
/// another tool would open it (not through `ConnFlows`).
fn outside_table<K: aya::Pod>(dp: &Dataplane, name: &str) -> HashMap<MapData, K, ConnEntry> {
    let ids = dp
        .program()
        .info()
        .expect("program info")
        .map_ids()
        .expect("map ids")
        .expect("the program's maps");
    for id in ids {
        let map = MapData::from_id(id).expect("open a map by id");
        if map.info().expect("map info").name_as_str() == Some(name) {
            return HashMap::try_from(Map::LruHashMap(map)).expect("a hash map");
        }
    }
    panic!("no map {name} in the program");
}

/// Both tables opened as another process would open them (not through
/// `ConnFlows`): its deletes bump no generation.
struct Outside {
    v4: HashMap<MapData, FlowKey4, ConnEntry>,
    v6: HashMap<MapData, FlowWords, ConnEntry>,
}

impl Outside {
    fn open(dp: &Dataplane) -> Self {
        Self {
            v4: outside_table(dp, lb_common::maps::CONNS_V4),
            v6: outside_table(dp, lb_common::maps::CONNS),
        }
    }

    fn delete(&mut self, words: &FlowWords) {
        match FlowKey4::of(words) {
            Some(k) => self.v4.remove(&k).expect("delete the IPv4 entry"),
            None => self.v6.remove(words).expect("delete the IPv6 entry"),
        }
    }
}

#[test]
fn every_writer_of_the_connection_tables_is_followed() {
    tests::require_privileges!();
    assert!(
        std::thread::available_parallelism().map_or(0, usize::from) >= 2,
        "this test needs two CPUs"
    );
    let before = desired(&config(3), &Allocation::default());
    let after = desired(&config(4), &before.allocation);
    let mut dp = Dataplane::load().expect("load the balancer");
    let mut outside = Outside::open(&dp);
    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        for (cpu, other) in [(0, 1), (1, 0)] {
            // The program's own SYN on this CPU: its next ACK follows.
            let m = moved(v6, &before, &after, cpu);
            dp.apply(LB_MAC, &before, None).expect("apply");
            pin(cpu);
            assert_eq!(send(&dp, &m.syn), m.old, "{family}: the SYN went elsewhere");
            assert_eq!(send(&dp, &m.ack), m.old, "{family}: the ACK went elsewhere");
            dp.apply(LB_MAC, &after, Some(&before)).expect("apply b3");
            assert_eq!(send(&dp, &m.syn), m.new, "{family}: SYN not re-hashed");
            assert_eq!(
                send(&dp, &m.ack),
                m.new,
                "{family}, CPU {cpu}: the ACK after this CPU's own SYN went by a stale slot"
            );

            // The other CPU's SYN: followed within the bound.
            let m = moved(v6, &before, &after, 10 + cpu);
            dp.apply(LB_MAC, &before, Some(&after)).expect("apply");
            pin(other);
            assert_eq!(send(&dp, &m.syn), m.old, "{family}: SYN elsewhere");
            pin(cpu);
            assert_eq!(send(&dp, &m.ack), m.old, "{family}: ACK elsewhere");
            dp.apply(LB_MAC, &after, Some(&before)).expect("apply b3");
            // This CPU's slot filled afresh (the one above expired first)
            // just before the other CPU writes.
            std::thread::sleep(BOUND);
            assert_eq!(send(&dp, &m.ack), m.old, "{family}: ACK elsewhere");
            pin(other);
            let since = Instant::now();
            assert_eq!(send(&dp, &m.syn), m.new, "{family}: SYN not re-hashed");
            pin(cpu);
            let (_, last) = follow(&dp, &m, since);
            assert!(
                last < BOUND,
                "{family}, CPU {cpu}: an ACK {last:?} after the other CPU's SYN went by a stale slot (bound {BOUND:?})"
            );

            // An entry deleted by another process (or evicted): followed
            // within the bound; the ACK then misses and is filed again.
            // Tried a few times, as a thread preempted for a few ms between
            // the fill and the delete finds its slot expired already; once
            // at least, an ACK must have gone by the slot (on one CPU, no
            // migration in between).
            let mut seen_stale = false;
            for attempt in 0..10 {
                let m = moved(v6, &before, &after, 20 + 20 * cpu + attempt);
                dp.apply(LB_MAC, &before, Some(&after)).expect("apply");
                assert_eq!(send(&dp, &m.syn), m.old, "{family}: SYN elsewhere");
                dp.apply(LB_MAC, &after, Some(&before)).expect("apply b3");
                std::thread::sleep(BOUND);
                assert_eq!(send(&dp, &m.ack), m.old, "{family}: ACK elsewhere");
                let since = Instant::now();
                outside.delete(&m.flow.words());
                let (stale, last) = follow(&dp, &m, since);
                assert!(
                    last < BOUND,
                    "{family}, CPU {cpu}: an ACK {last:?} after its entry was deleted went by the slot (bound {BOUND:?})"
                );
                seen_stale |= stale;
                if seen_stale {
                    break;
                }
            }
            assert!(
                seen_stale,
                "{family}, CPU {cpu}: no ACK went by its slot: the flow cache is not in front of the LRU"
            );
        }

        // The controller's writes and deletes: the next packet on every CPU.
        let m = moved(v6, &before, &after, 70);
        let (_, old_id) = expected_backend(&before, &m.flow).expect("the old backend");
        let mut conns = dp.conn_table().flows_map().expect("the connection tables");
        for first in [0, 1] {
            // Both CPUs' slots copy an entry naming the old backend.
            write(&mut conns, &m.flow, old_id);
            for cpu in [0, 1] {
                pin(cpu);
                assert_eq!(send(&dp, &m.ack), m.old, "{family}: ACK elsewhere");
            }
            conns
                .remove(&m.flow.words())
                .expect("delete the flow's entry");
            pin(first);
            let was = misses(&dp);
            assert_eq!(send(&dp, &m.ack), m.new, "{family}: ACK after the delete");
            assert_eq!(
                misses(&dp) - was,
                1,
                "{family}, CPU {first}: the ACK after the controller's delete was not a miss"
            );
            pin(1 - first);
            assert_eq!(
                send(&dp, &m.ack),
                m.new,
                "{family}, CPU {}: the ACK after the controller's delete went by the slot",
                1 - first
            );
        }
        let name = if v6 { "web6" } else { "web4" };
        let vip = after
            .vips
            .iter()
            .find(|v| v.config.name == name)
            .expect("the family's VIP");
        write(&mut conns, &m.flow, vip.backend_ids[0]);
        on_both_cpus(
            &dp,
            &m,
            vip.config.backends[0].mac.0,
            "the controller's write",
        );
        // A held flow from another node (the fleet's way in: where the
        // table has no entry), after the entry was evicted (deleted as
        // another process would: no bump) while both slots name b0.
        outside.delete(&m.flow.words());
        let held = dp
            .conn_table()
            .insert_absent([(m.flow.words(), vip.backend_ids[1], 0)])
            .expect("insert a held flow");
        assert_eq!(held.added, 1, "{family}: the held flow was not inserted");
        on_both_cpus(
            &dp,
            &m,
            vip.config.backends[1].mac.0,
            "the held flow written",
        );
    }
}

#[test]
fn a_program_loaded_anew_starts_with_an_empty_cache() {
    tests::require_privileges!();
    let p = tests::confine::TestPins::new("xlb-flow-cache", "xlbfc1");
    let before = desired(&config(3), &Allocation::default());
    let after = desired(&config(4), &before.allocation);
    let object = xlb_dataplane::balancer_object();
    let size = lb_common::maps::CONN_TABLE_SIZE;
    let mut first = Dataplane::load_pinned(object, size, &p.pins).expect("load over pins");
    first.apply(LB_MAC, &before, None).expect("apply");
    for v6 in [false, true] {
        let m = moved(v6, &before, &after, 3);
        for cpu in [0, 1] {
            pin(cpu);
            assert_eq!(send(&first, &m.syn), m.old, "SYN elsewhere");
            assert_eq!(send(&first, &m.ack), m.old, "ACK elsewhere");
        }
    }
    first
        .apply(LB_MAC, &after, Some(&before))
        .expect("apply b3");
    // The entries deleted as another process would: the first program's
    // slots are stale now; a program loaded anew over the same pins must
    // not serve them.
    let mut outside = Outside::open(&first);
    for v6 in [false, true] {
        outside.delete(&moved(v6, &before, &after, 3).flow.words());
    }
    let second = Dataplane::load_pinned(object, size, &p.pins).expect("load anew over pins");
    for v6 in [false, true] {
        let m = moved(v6, &before, &after, 3);
        for cpu in [0, 1] {
            pin(cpu);
            assert_eq!(
                send(&second, &m.ack),
                m.new,
                "v6 {v6}, CPU {cpu}: the program loaded anew went by an old slot"
            );
        }
    }
    drop(first);
}
