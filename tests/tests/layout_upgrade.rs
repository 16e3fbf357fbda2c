//! An upgrade over pins of layout 5 (`lb_common::LAYOUT_UPGRADES_FROM`),
//! whose one connection table (XLB_CONNS, 40-byte keys) held both families:
//! the start is accepted, the IPv4 flows are copied into XLB_CONNS_V4 before
//! the new program could see a packet (so a held flow keeps its backend from
//! the first packet), moved out of XLB_CONNS once it is attached (flows the
//! old program filed in between included), IPv6 flows stay, and layout 6 is
//! written; layout 4 is still refused.
//!
//! The layout-5 pins are made with this build's object: its maps are layout
//! 5's but for the added XLB_CONNS_V4, whose pin is removed, with layout 5
//! written into XLB_CONFIG and IPv4 flows written into XLB_CONNS as a
//! layout-5 program filed them. Loads the balancer over pins in a directory
//! of its own under /sys/fs/bpf (no attach: `finish_layout_upgrade` is what
//! `attach_pinned` runs after the link update): a privileged test
//! (`tests::require_privileges!`).

use aya::maps::{Array, HashMap, Map, MapData};
use lb_common::hash::{ConnEntry, FlowKey4, FlowWords};
use lb_common::{GlobalConfig, LAYOUT_UPGRADES_FROM, LAYOUT_VERSION, PROTO_TCP, maps};
use tests::confine::TestPins;
use tests::packets::{FrameBuilder, LB_MAC, expected_backend, flow, run};
use xlb_core::simulate::Flow;
use xlb_core::state::{Allocation, Desired, desired};
use xlb_dataplane::Dataplane;

/// Each family's table: small, the test writes a few flows.
const SIZE: u32 = 4096;
const TX: u32 = 3;

/// The test's pins, and typed handles to what it reads and writes there.
struct Pins(TestPins);

impl std::ops::Deref for Pins {
    type Target = TestPins;
    fn deref(&self) -> &TestPins {
        &self.0
    }
}

impl Pins {
    fn new() -> Self {
        Self(TestPins::new("xlbupg", "upg0"))
    }

    fn conns(&self) -> HashMap<MapData, FlowWords, ConnEntry> {
        let md = MapData::from_pin(self.pins.map_path(maps::CONNS)).expect("pinned XLB_CONNS");
        HashMap::try_from(Map::LruHashMap(md)).expect("XLB_CONNS: FlowWords keys")
    }

    fn conns_v4(&self) -> HashMap<MapData, FlowKey4, ConnEntry> {
        let md =
            MapData::from_pin(self.pins.map_path(maps::CONNS_V4)).expect("pinned XLB_CONNS_V4");
        HashMap::try_from(Map::LruHashMap(md)).expect("XLB_CONNS_V4: FlowKey4 keys")
    }

    fn set_layout(&self, version: u32) {
        let md = MapData::from_pin(self.pins.map_path(maps::CONFIG)).expect("pinned XLB_CONFIG");
        let mut config: Array<MapData, GlobalConfig> =
            Array::try_from(Map::Array(md)).expect("XLB_CONFIG");
        let mut g = config.get(&0, 0).expect("the host entry");
        g.layout_version = version;
        config.set(0, g, 0).expect("write the host entry");
    }
}

fn state() -> Desired {
    let text = "interface = \"upg0\"\n\
        [[vip]]\nname = \"web\"\naddress = \"198.18.80.10\"\nport = 80\nprotocol = \"tcp\"\n\
        table_size = 211\n\
        [[vip.backend]]\nname = \"a\"\naddress = \"198.18.81.1\"\nmac = \"02:00:00:00:00:0a\"\n\
        [[vip.backend]]\nname = \"b\"\naddress = \"198.18.81.2\"\nmac = \"02:00:00:00:00:0b\"\n";
    let config = xlb_core::config::parse(text, "upgrade.toml").expect("valid config");
    desired(&config, &Allocation::default()).expect("desired state")
}

fn client(i: u16) -> Flow {
    flow(
        PROTO_TCP,
        &format!("198.18.82.1:{}", 20_000 + i),
        "198.18.80.10:80",
    )
}

/// The backend (id, MAC) the table does not pick for `f`: a held flow's.
fn held_backend(d: &Desired, f: &Flow) -> (u32, [u8; 6]) {
    let (_, picked) = expected_backend(d, f).expect("a VIP flow");
    let vip = &d.vips[0];
    let i = vip
        .backend_ids
        .iter()
        .position(|&id| id != picked)
        .expect("two backends");
    (vip.backend_ids[i], vip.config.backends[i].mac.0)
}

/// The destination MAC the program sends an established segment of `f` to.
fn sent_to(dp: &Dataplane, f: &Flow) -> [u8; 6] {
    let frame = FrameBuilder::new(*f).established().build();
    let mut out = vec![0u8; frame.len() + 256];
    let o = run(dp.program(), &frame, &mut out).expect("test run");
    assert_eq!(o.action, TX, "{f:?}");
    out[..6].try_into().expect("6 bytes")
}

#[test]
fn ipv4_flows_pinned_by_layout_5_survive_the_upgrade() {
    tests::require_privileges!();
    let p = Pins::new();
    let object = xlb_dataplane::balancer_object();
    let d = state();
    let flows: Vec<Flow> = (0..32).map(client).collect();
    let late = client(1000);
    let v6 = FlowWords {
        src: [0xb80d_0120, 0, 0, 0x0100_0000],
        dst: [0xb80d_0120, 0, 0, 0x1000_0000],
        ports: 0x5000_204e,
        proto: 6,
    };

    // Pins as a layout-5 xlb leaves them.
    {
        let mut dp = Dataplane::load_pinned(object, SIZE, &p.pins).expect("load over fresh pins");
        dp.apply(LB_MAC, &d, None).expect("apply");
        let mut conns = p.conns();
        for f in &flows {
            let (id, _) = held_backend(&d, f);
            let entry = ConnEntry {
                backend_id: id,
                flow_hash: 7,
            };
            conns
                .insert(f.words(), entry, 0)
                .expect("file an IPv4 flow");
        }
        let entry = ConnEntry {
            backend_id: 99,
            flow_hash: 9,
        };
        conns.insert(v6, entry, 0).expect("file an IPv6 flow");
        p.set_layout(LAYOUT_UPGRADES_FROM);
    }
    std::fs::remove_file(p.pins.map_path(maps::CONNS_V4)).expect("unpin XLB_CONNS_V4");

    // Layout 4 is refused; 5 is taken over.
    p.set_layout(4);
    let e = p
        .pins
        .inspect(object, SIZE)
        .expect_err("layout 4")
        .to_string();
    assert!(e.contains("version 4") && e.contains("xlb detach"), "{e}");
    p.set_layout(LAYOUT_UPGRADES_FROM);
    let pinned = p.pins.inspect(object, SIZE).expect("layout 5 is upgraded");
    assert_eq!(pinned.layout_version, Some(LAYOUT_UPGRADES_FROM));
    assert!(pinned.holds_state() && !pinned.maps.contains(&maps::CONNS_V4));

    // Loaded: copied before any packet, the old table left as it was (the
    // old program still runs until the link update).
    let mut dp = Dataplane::load_pinned(object, SIZE, &p.pins).expect("load over layout 5");
    let v4 = p.conns_v4();
    for f in &flows {
        let k = FlowKey4::of(&f.words()).expect("IPv4 words");
        assert_eq!(
            v4.get(&k, 0).expect("copied").backend_id,
            held_backend(&d, f).0
        );
        assert_eq!(sent_to(&dp, f), held_backend(&d, f).1, "{f:?} held");
    }
    assert_eq!(p.conns().iter().count(), flows.len() + 1);
    // A flow the old program files before the link update.
    let (late_id, late_mac) = held_backend(&d, &late);
    let entry = ConnEntry {
        backend_id: late_id,
        flow_hash: 8,
    };
    p.conns()
        .insert(late.words(), entry, 0)
        .expect("file a late flow");

    // Attached: the IPv4 flows moved, the IPv6 flow stays, layout 6.
    dp.finish_layout_upgrade().expect("finish the upgrade");
    let left: Vec<FlowWords> = p.conns().keys().map(|k| k.expect("a key")).collect();
    assert_eq!(left, vec![v6], "only the IPv6 flow stays in XLB_CONNS");
    assert_eq!(p.conns_v4().iter().count(), flows.len() + 1);
    assert_eq!(sent_to(&dp, &late), late_mac, "the late flow held");
    for f in &flows {
        assert_eq!(sent_to(&dp, f), held_backend(&d, f).1, "{f:?} held");
    }
    let pinned = p.pins.inspect(object, SIZE).expect("layout 6");
    assert_eq!(pinned.layout_version, Some(LAYOUT_VERSION));
    assert!(pinned.maps.contains(&maps::CONNS_V4));
    assert_eq!(
        dp.conn_table().scan().expect("scan").entries,
        flows.len() as u64 + 2
    );
}
