//! The flow cache (`XLB_FLOW_CACHE`, docs/DATAPLANE.md): each CPU's copy of
//! the IPv4 connection entries it used last, in front of the LRU. A CPU's
//! slot can go stale when another CPU re-hashes the flow (a SYN reusing the
//! 5-tuple after a table change); it must then serve at most
//! `flowcache::RECHECK` packets before the flow follows the LRU. And an
//! entry userspace deletes must not live on in a slot. Frames go through
//! the loaded balancer with BPF_PROG_TEST_RUN, the thread pinned to one CPU
//! and then the other (BPF_PROG_TEST_RUN runs on the caller's CPU).
//!
//! A balancer whose slots never go back to the LRU fails the first check
//! (every ACK keeps the old backend); one without a cache fails the count
//! of packets the old backend got (0: the cache is what is tested here).

use lb_common::{
    flowcache::RECHECK,
    hash::ConnEntry,
    stats::{EV_CONN_MISS, XDP_TX},
};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use tests::packets::{FrameBuilder, expected_backend, flow, run};
use xlb_core::simulate::Flow;
use xlb_core::state::{Allocation, Desired};
use xlb_dataplane::Dataplane;

const LB_MAC: [u8; 6] = tests::packets::LB_MAC;

/// One TCP VIP with backends `b0..b{n-1}`.
fn config(n: usize) -> String {
    let mut c = String::from(
        "interface = \"xlbfc0\"\nhash_seed = 5\n\
         [[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n\
         table_size = 1021\n",
    );
    for i in 0..n {
        c.push_str(&format!(
            "[[vip.backend]]\nname = \"b{i}\"\naddress = \"198.18.1.{}\"\nmac = \"02:00:00:00:01:{:02x}\"\n",
            i + 1,
            i + 1
        ));
    }
    c
}

fn desired(text: &str, allocation: &Allocation) -> Desired {
    let config = xlb_core::config::parse(text, "flow_cache.toml").expect("a valid config");
    xlb_core::state::desired(&config, allocation).expect("desired")
}

fn tcp(i: u16) -> Flow {
    flow(6, &format!("198.18.3.7:{}", 20_000 + i), "198.18.100.1:80")
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

#[test]
fn a_stale_slot_serves_a_bounded_number_of_packets() {
    tests::require_privileges!();
    assert!(
        std::thread::available_parallelism().map_or(0, usize::from) >= 2,
        "this test needs two CPUs"
    );
    let before = desired(&config(3), &Allocation::default());
    let after = desired(&config(4), &before.allocation);
    // A flow the added backend takes over.
    let (f, old, new) = (0..4096u16)
        .map(tcp)
        .find_map(|f| {
            let (o, _) = expected_backend(&before, &f)?;
            let (n, _) = expected_backend(&after, &f)?;
            (n.name == "b3").then_some((f, o.mac.0, n.mac.0))
        })
        .expect("a flow moved to b3");
    let syn = FrameBuilder::new(f).build();
    let ack = FrameBuilder::new(f).established().build();

    let mut dp = Dataplane::load().expect("load the balancer");
    dp.apply(LB_MAC, &before, None).expect("apply");
    pin(0);
    assert_eq!(send(&dp, &syn), old, "the SYN went elsewhere");
    assert_eq!(send(&dp, &ack), old, "the first ACK went elsewhere");

    // CPU 1 sees the 5-tuple open again on the new table: the LRU now
    // names b3; CPU 0's slot still names the old backend.
    dp.apply(LB_MAC, &after, None)
        .expect("apply the added backend");
    pin(1);
    assert_eq!(
        send(&dp, &syn),
        new,
        "the SYN on CPU 1 was not hashed onto the new table"
    );
    pin(0);
    let went: Vec<bool> = (0..2 * RECHECK).map(|_| send(&dp, &ack) == old).collect();
    let stale = went.iter().take_while(|o| **o).count();
    assert!(
        stale >= 1,
        "CPU 0 sent no ACK by its slot: the flow cache is not in front of the LRU"
    );
    assert!(
        stale <= RECHECK as usize,
        "CPU 0 sent {stale} ACKs to the old backend; at most {RECHECK} may go by a stale slot"
    );
    assert!(
        went[stale..].iter().all(|o| !*o),
        "after following the LRU, CPU 0 went back to the old backend: {went:?}"
    );

    // An entry deleted through ConnFlows is gone from every CPU's slot: the
    // next ACK is a flow without an entry (a miss), on either CPU.
    let mut conns = dp.conn_table().flows_map().expect("the connection tables");
    for cpu in [0, 1] {
        pin(cpu);
        conns.remove(&f.words()).expect("delete the flow's entry");
        let m = misses(&dp);
        assert_eq!(
            send(&dp, &ack),
            new,
            "the ACK after the delete went elsewhere"
        );
        assert_eq!(
            misses(&dp) - m,
            1,
            "CPU {cpu}: an ACK after its entry was deleted was not a miss: a slot outlived it"
        );
    }

    // An entry written through ConnFlows is followed at the next packet.
    let b0 = after.vips[0].backend_ids[0];
    conns
        .insert(
            f.words(),
            ConnEntry {
                backend_id: b0,
                flow_hash: 0,
            },
            0,
        )
        .expect("plant the flow on b0");
    assert_eq!(
        send(&dp, &ack),
        after.vips[0].config.backends[0].mac.0,
        "the ACK did not follow the entry written"
    );
}
