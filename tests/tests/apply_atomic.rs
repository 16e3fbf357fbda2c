//! An apply is all or nothing across VIPs: a failure injected between two
//! VIPs' table swaps leaves every VIP on the previous state (tables, VIP
//! entries), and a VIP the failed config added is not served. An apply
//! returns with its tables in place.

use xlb_core::state::{Allocation, Desired};
use xlb_dataplane::Dataplane;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn config(weights: [u32; 2], extra_vip: bool) -> String {
    let mut text = String::from("interface = \"xlbtest0\"\nhash_seed = 3\n");
    let mut vips = vec![("a", "198.18.100.1"), ("b", "198.18.100.2")];
    if extra_vip {
        vips.push(("c", "198.18.100.3"));
    }
    for (name, address) in vips {
        text.push_str(&format!(
            "[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 1021\n"
        ));
        for (i, w) in weights.iter().enumerate() {
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"b{i}\"\naddress = \"198.18.1.{}\"\nmac = \"02:00:00:00:01:0{i}\"\nweight = {w}\n",
                i + 1
            ));
        }
    }
    text
}

fn desired(text: &str, previous: &Allocation) -> Desired {
    let config = xlb_core::config::parse(text, "t.toml").expect("valid config");
    xlb_core::state::desired(&config, previous).expect("desired")
}

/// Every VIP of `d` is served with exactly its table.
fn assert_serving(dp: &Dataplane, d: &Desired, what: &str) {
    for vip in &d.vips {
        let meta = dp.live_vip(&vip.key).expect("read VIP");
        assert_eq!(
            meta,
            Some(vip.meta),
            "{what}: VIP {} entry",
            vip.config.name
        );
        let table = dp
            .live_table(vip.id)
            .expect("read table")
            .unwrap_or_default();
        let differ = table
            .iter()
            .zip(vip.slot_iter())
            .filter(|&(&a, b)| a != b)
            .count();
        assert!(
            table.len() == vip.slot_count() && differ == 0,
            "{what}: VIP {}'s live table ({} slots) differs from the expected ({} slots) in {differ} slots",
            vip.config.name,
            table.len(),
            vip.slot_count()
        );
    }
}

#[test]
fn a_failure_between_swaps_restores_every_vip() {
    tests::require_privileges!();
    let mut dp = Dataplane::load().expect("load");
    let old = desired(&config([1, 1], false), &Allocation::default());
    dp.apply(MAC, &old, None).expect("first apply");
    assert_serving(&dp, &old, "after the first apply");

    // The new config changes both VIPs' tables and adds VIP c; fail after
    // the first swap, with VIP a already on its new table.
    let new = desired(&config([1, 3], true), &old.allocation);
    assert_ne!(new.vips[0].slots(), old.vips[0].slots());
    dp.inject_swap_failure(1);
    let err = dp
        .apply(MAC, &new, Some(&old))
        .expect_err("injected failure");
    assert!(err.to_string().contains("injected"), "{err}");
    assert_serving(&dp, &old, "after the failed apply");
    let c = new.vips.iter().find(|v| v.config.name == "c").unwrap();
    assert_eq!(
        dp.live_vip(&c.key).unwrap(),
        None,
        "VIP c must not be served"
    );

    // And the same change without a fault goes through whole.
    dp.apply(MAC, &new, Some(&old)).expect("second try");
    assert_serving(&dp, &new, "after the good apply");
}

/// An apply returns once every changed table is in place (the kernel's
/// wait for the programs that ran on the old ones goes on beside it,
/// `Dataplane::settle`): read right after each of many applies, the
/// outer map names the new tables, never the old.
#[test]
fn an_apply_returns_with_its_tables_in_place() {
    tests::require_privileges!();
    let mut dp = Dataplane::load().expect("load");
    let mut live = desired(&config([1, 1], true), &Allocation::default());
    dp.apply(MAC, &live, None).expect("first apply");
    for round in 0..20u32 {
        let next = desired(&config([1, 2 + round % 5], true), &live.allocation);
        dp.apply(MAC, &next, Some(&live)).expect("apply");
        assert_serving(&dp, &next, &format!("right after apply {round}"));
        live = next;
    }
}
