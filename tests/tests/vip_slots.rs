//! The VIP slots (XLB_VIP_SLOTS, `lb_common::vipslot`) through applies:
//! every VIP is forwarded whether it owns its slot or, colliding, is found
//! in the hash map; the program reads the slot first (a slot written behind
//! the controller's back steers the VIP's packets, the drift check names the
//! slot, a repair rewrites it); a removed VIP's slot is emptied. Loads the
//! balancer over pins in a directory of its own under /sys/fs/bpf (no
//! attach, no traffic): a privileged test (`tests::require_privileges!`).

use aya::maps::{Array, MapData};
use lb_common::vipslot::{VipSlot, key_words, slot, slot_index};
use lb_common::{PROTO_TCP, VipKey, maps};
use tests::confine::TestPins;
use tests::packets::{LB_MAC, flow, frame, run};
use xlb_core::state::{Allocation, Desired, desired};
use xlb_dataplane::Dataplane;

fn key(addr: [u8; 4], port: u16) -> VipKey {
    let mut a = [0; 16];
    a[..4].copy_from_slice(&addr);
    VipKey {
        addr: a,
        port_be: port.to_be(),
        proto: PROTO_TCP,
        family: lb_common::FAMILY_V4,
    }
}

/// A key's 20 bytes in map order: the order that picks a slot's owner.
fn bytes(k: &VipKey) -> Vec<u8> {
    let mut b = k.addr.to_vec();
    b.extend(k.port_be.to_ne_bytes());
    b.extend([k.proto, k.family]);
    b
}

fn index(k: &VipKey) -> u32 {
    slot_index(&key_words(k))
}

/// A TCP port of 198.18.50.10 whose key falls on port 80's slot.
fn colliding_port() -> u16 {
    let at = index(&key([198, 18, 50, 10], 80));
    (81..=u16::MAX)
        .find(|&p| index(&key([198, 18, 50, 10], p)) == at)
        .expect("65,000 ports on 8,192 slots: one shares port 80's")
}

/// VIPs named `names` of: a (198.18.50.10:80), b (198.18.50.10:`port_b`,
/// a's slot), c (198.18.50.20:80); one backend each, with its own MAC.
fn state(names: &[&str], port_b: u16, previous: &Allocation) -> Desired {
    let mut text = "interface = \"slots0\"\n".to_string();
    for (i, name) in names.iter().enumerate() {
        let (address, port, mac) = match *name {
            "a" => ("198.18.50.10", 80, 0xa),
            "b" => ("198.18.50.10", port_b, 0xb),
            _ => ("198.18.50.20", 80, 0xc),
        };
        text.push_str(&format!(
            "[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = {port}\n\
             protocol = \"tcp\"\ntable_size = 211\n\
             [[vip.backend]]\nname = \"k{i}\"\naddress = \"198.18.60.{}\"\n\
             mac = \"02:00:00:00:00:{mac:02x}\"\n",
            i + 1
        ));
    }
    let config = xlb_core::config::parse(&text, "slots.toml").expect("valid config");
    desired(&config, previous).expect("desired state")
}

/// The action and destination MAC of a SYN to `dst` (no connection-table
/// entry is read for a SYN: the VIP lookup decides).
fn send(dp: &Dataplane, dst: &str, src_port: u16) -> (u32, [u8; 6]) {
    let f = frame(flow(PROTO_TCP, &format!("198.18.70.1:{src_port}"), dst));
    let mut out = vec![0u8; f.len() + 256];
    let o = run(dp.program(), &f, &mut out).expect("test run");
    (o.action, out[..6].try_into().expect("6 bytes"))
}

const TX: u32 = 3;
const PASS: u32 = 2;

fn mac(last: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, last]
}

#[test]
fn vip_slots_follow_applies_and_drift_is_found_and_repaired() {
    tests::require_privileges!();
    let p = TestPins::new("xlbslots", "slots0");
    let mut dp = Dataplane::load_pinned(
        xlb_dataplane::balancer_object(),
        maps::CONN_TABLE_SIZE,
        &p.pins,
    )
    .expect("load the balancer over fresh pins");
    let port_b = colliding_port();
    let dst_b = format!("198.18.50.10:{port_b}");

    let first = state(&["a", "b", "c"], port_b, &Allocation::default());
    dp.apply(LB_MAC, &first, None).expect("first apply");
    assert_eq!(dp.vip_slots_drift(&first), Vec::<u32>::new());
    // a and b share a slot: the smaller key owns it, the other is found in
    // the hash map; each is forwarded to its own backend.
    assert_eq!(send(&dp, "198.18.50.10:80", 1000), (TX, mac(0xa)));
    assert_eq!(send(&dp, &dst_b, 1001), (TX, mac(0xb)));
    assert_eq!(send(&dp, "198.18.50.20:80", 1002), (TX, mac(0xc)));

    let slots: Array<MapData, VipSlot> = Array::try_from(aya::maps::Map::Array(
        MapData::from_pin(p.pins.map_path(maps::VIP_SLOTS)).expect("the pinned VIP slots"),
    ))
    .expect("an array of VipSlot");
    let (ka, kb, kc) = (first.vips[0].key, first.vips[1].key, first.vips[2].key);
    let shared = slots.get(&index(&ka), 0).expect("read a's slot");
    let owner = if bytes(&ka) < bytes(&kb) {
        (ka, first.vips[0].meta)
    } else {
        (kb, first.vips[1].meta)
    };
    assert_eq!(
        shared,
        slot(&owner.0, &owner.1),
        "the smaller key owns the shared slot"
    );

    // The program reads the slot first: c's slot naming a's entry sends c's
    // packets to a's backend; the drift check names the slot; a repair
    // puts c's entry back.
    let mut slots = slots;
    slots
        .set(index(&kc), slot(&kc, &first.vips[0].meta), 0)
        .expect("write c's slot behind the controller's back");
    assert_eq!(send(&dp, "198.18.50.20:80", 1003), (TX, mac(0xa)));
    assert_eq!(dp.vip_slots_drift(&first), vec![index(&kc)]);
    assert!(
        dp.vip_slot_drifted(&kc),
        "the daemon's per-VIP check sees it"
    );
    assert!(!dp.vip_slot_drifted(&ka));
    dp.rewrite(&first).expect("repair");
    assert_eq!(dp.vip_slots_drift(&first), Vec::<u32>::new());
    assert!(!dp.vip_slot_drifted(&kc));
    assert_eq!(send(&dp, "198.18.50.20:80", 1004), (TX, mac(0xc)));

    // c and a go: c's slot is emptied (its packets pass), b now owns the
    // shared slot alone.
    let second = state(&["b"], port_b, &first.allocation);
    dp.apply(LB_MAC, &second, Some(&first))
        .expect("second apply");
    assert_eq!(dp.vip_slots_drift(&second), Vec::<u32>::new());
    assert_eq!(slots.get(&index(&kc), 0).expect("read c's slot").tail, 0);
    assert_eq!(
        slots.get(&index(&kb), 0).expect("read b's slot"),
        slot(&kb, &second.vips[0].meta)
    );
    assert_eq!(send(&dp, "198.18.50.20:80", 1005).0, PASS);
    assert_eq!(send(&dp, "198.18.50.10:80", 1006).0, PASS);
    assert_eq!(send(&dp, &dst_b, 1007), (TX, mac(0xb)));

    // A failed apply that would add a back leaves the slots as they were.
    let third = state(&["b", "a"], port_b, &second.allocation);
    dp.inject_swap_failure(0);
    dp.apply(LB_MAC, &third, Some(&second))
        .expect_err("injected failure");
    assert_eq!(dp.vip_slots_drift(&second), Vec::<u32>::new());
    assert_eq!(send(&dp, "198.18.50.10:80", 1008).0, PASS);
}
