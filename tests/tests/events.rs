//! The connection-table events of XLB_EVENT_STATS, moved by frames sent
//! through the loaded balancer with BPF_PROG_TEST_RUN: a new flow is a
//! `conn_miss`, its next packets are `conn_hit`s, and a remembered flow whose
//! backend is gone or belongs to another VIP is a `conn_resteer` that lands
//! on its own VIP's backend, the one the simulator picks.
//!
//! Every other event must stay still. A balancer that counts no events
//! fails here (every delta is 0), as does one that follows a remembered
//! backend of another VIP.

use std::collections::BTreeMap;

use lb_common::stats::{
    EV_CONN_HIT, EV_CONN_MISS, EV_CONN_RESTEER, EVENT_COUNT, EVENT_NAMES, XDP_TX,
};
use tests::packets::{FrameBuilder, action_name, expected_backend, flow, run};
use xlb_core::simulate::Flow;
use xlb_core::state::{Allocation, Desired};
use xlb_dataplane::Dataplane;

const LB_MAC: [u8; 6] = tests::packets::LB_MAC;

const CONFIG: &str = "interface = \"xlbev0\"\nhash_seed = 11\n\
    [[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n\
    [[vip.backend]]\nname = \"b0\"\naddress = \"198.18.1.1\"\nmac = \"02:00:00:00:01:01\"\n\
    [[vip.backend]]\nname = \"b1\"\naddress = \"198.18.1.2\"\nmac = \"02:00:00:00:01:02\"\n\
    [[vip.backend]]\nname = \"b2\"\naddress = \"198.18.1.3\"\nmac = \"02:00:00:00:01:03\"\n\
    [[vip]]\nname = \"dns\"\naddress = \"198.18.100.2\"\nport = 53\nprotocol = \"udp\"\ntable_size = 1021\n\
    [[vip.backend]]\nname = \"d0\"\naddress = \"198.18.2.1\"\nmac = \"02:00:00:00:02:01\"\n";

/// The `i`th TCP flow to web and UDP flow to dns.
fn tcp(i: u16) -> Flow {
    flow(
        6,
        &format!("198.18.3.{}:{}", i % 250, 20_000 + i),
        "198.18.100.1:80",
    )
}
fn udp(i: u16) -> Flow {
    flow(
        17,
        &format!("198.18.4.{}:{}", i % 250, 30_000 + i),
        "198.18.100.2:53",
    )
}

struct Bench {
    dp: Dataplane,
    desired: Desired,
    out: Vec<u8>,
}

impl Bench {
    fn new() -> Self {
        let config = xlb_core::config::parse(CONFIG, "events.toml").expect("a valid config");
        let desired = xlb_core::state::desired(&config, &Allocation::default()).expect("desired");
        let mut dp = Dataplane::load().expect("load the balancer");
        dp.apply(LB_MAC, &desired, None).expect("apply");
        Self {
            dp,
            desired,
            out: vec![0; 4096],
        }
    }

    /// Every event counter, summed over CPUs.
    fn events(&self) -> Vec<u64> {
        let s = self.dp.snapshot([], []).expect("read the counters");
        assert_eq!(s.events.len(), EVENT_COUNT as usize);
        s.events
    }

    /// Send `frame` of `flow`; it must go to the backend the simulator picks.
    fn send(&mut self, flow: &Flow, frame: &[u8]) {
        let got = run(self.dp.program(), frame, &mut self.out).expect("BPF_PROG_TEST_RUN");
        assert_eq!(
            got.action,
            XDP_TX,
            "{flow:?}: {} instead of tx",
            action_name(got.action)
        );
        let (backend, _) = expected_backend(&self.desired, flow).expect("a VIP flow");
        assert_eq!(
            self.out[..6],
            backend.mac.0,
            "{flow:?} went to the wrong MAC, not {}'s",
            backend.name
        );
    }

    /// Run `step` and check the events it moved: `want` (event -> delta),
    /// every other event unchanged except those in `free`.
    fn expect(
        &mut self,
        what: &str,
        want: &[(u32, u64)],
        free: &[u32],
        step: impl FnOnce(&mut Self),
    ) {
        let before = self.events();
        step(self);
        let after = self.events();
        let mut wrong = Vec::new();
        for ev in 0..EVENT_COUNT {
            if free.contains(&ev) {
                continue;
            }
            let delta = after[ev as usize].wrapping_sub(before[ev as usize]);
            let wanted = want.iter().find(|(e, _)| *e == ev).map_or(0, |(_, n)| *n);
            if delta != wanted {
                wrong.push(format!(
                    "{}: moved by {delta}, want {wanted}",
                    EVENT_NAMES[ev as usize]
                ));
            }
        }
        assert!(wrong.is_empty(), "{what}:\n  {}", wrong.join("\n  "));
    }
}

#[test]
fn connection_table_hits_misses_and_resteers() {
    tests::require_privileges!();
    let mut bench = Bench::new();
    let n = 64u16;

    bench.expect("SYNs of new flows", &[(EV_CONN_MISS, n.into())], &[], |b| {
        for i in 0..n {
            b.send(&tcp(i), &FrameBuilder::new(tcp(i)).build());
        }
    });
    bench.expect(
        "ACKs of the same flows",
        &[(EV_CONN_HIT, n.into())],
        &[],
        |b| {
            for i in 0..n {
                b.send(&tcp(i), &FrameBuilder::new(tcp(i)).established().build());
            }
        },
    );
    bench.expect("first UDP datagrams", &[(EV_CONN_MISS, 16)], &[], |b| {
        for i in 0..16 {
            b.send(&udp(i), &FrameBuilder::new(udp(i)).build());
        }
    });
    bench.expect("second UDP datagrams", &[(EV_CONN_HIT, 16)], &[], |b| {
        for i in 0..16 {
            b.send(&udp(i), &FrameBuilder::new(udp(i)).build());
        }
    });

    // Point 8 web flows at dns's backend (an id of another VIP) and 8 at an
    // id no backend holds (its entry is all zero): both must be re-steered
    // onto web's table, not followed, and count as re-steers, not misses.
    let d0 = bench.desired.vips[1].backend_ids[0];
    let used: Vec<u32> = bench
        .desired
        .vips
        .iter()
        .flat_map(|v| v.backend_ids.iter().copied())
        .collect();
    let unused = (0..).find(|id| !used.contains(id)).expect("a free id");
    let mut conns = bench.dp.conn_table().flows_map().expect("XLB_CONNS");
    for i in 0..16 {
        let id = if i < 8 { d0 } else { unused };
        let entry = lb_common::hash::ConnEntry {
            backend_id: id,
            flow_hash: 0,
        };
        conns
            .insert(tcp(i).words(), entry, 0)
            .expect("plant a flow");
    }
    bench.expect(
        "ACKs of flows remembered with a wrong backend",
        &[(EV_CONN_RESTEER, 16)],
        &[],
        |b| {
            for i in 0..16 {
                b.send(&tcp(i), &FrameBuilder::new(tcp(i)).established().build());
            }
        },
    );

    // Re-steered flows are remembered with their new backend: the table
    // counts exactly what the simulator picks for every flow sent.
    let mut want: BTreeMap<u32, u64> = BTreeMap::new();
    for f in (0..n).map(tcp).chain((0..16).map(udp)) {
        let (_, id) = expected_backend(&bench.desired, &f).expect("a VIP flow");
        *want.entry(id).or_default() += 1;
    }
    let scan = bench.dp.conn_table().scan().expect("scan");
    assert_eq!(scan.entries, u64::from(n) + 16);
    assert_eq!(scan.by_backend, want);
}
