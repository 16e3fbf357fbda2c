//! Backend entries through applies: a removed backend's entry loses
//! BACKEND_F_VALID (so the program hashes its remembered flows again) and
//! keeps the rest; a draining backend keeps its valid entry; a new backend
//! does not take a freed id; a VIP whose id changes (new table size) takes
//! its kept backends along; an apply that fails part way retires the ids it
//! wrote. Loads the balancer (no attach, no traffic): a privileged
//! test (`tests::require_privileges!`).

use lb_common::{BACKEND_F_VALID, Backend};
use xlb_core::state::{Allocation, Desired, DesiredVip, desired, kernel_backend};
use xlb_dataplane::Dataplane;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xee];

/// One VIP of `table_size` with `backends` (name, state).
fn state(table_size: u32, backends: &[(&str, &str)], previous: &Allocation) -> Desired {
    let mut text = format!(
        "interface = \"xlbret0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\n\
         port = 80\nprotocol = \"tcp\"\ntable_size = {table_size}\n"
    );
    for (i, (name, state)) in backends.iter().enumerate() {
        text.push_str(&format!(
            "[[vip.backend]]\nname = \"{name}\"\naddress = \"198.18.0.{}\"\n\
             mac = \"02:00:00:00:00:{:02x}\"\nstate = \"{state}\"\n",
            10 + i,
            0x10 + i
        ));
    }
    let config = xlb_core::config::parse(&text, "retired.toml").expect("valid config");
    desired(&config, previous).expect("desired state")
}

/// The id of backend `name` in `d`.
fn id(d: &Desired, name: &str) -> u32 {
    let v = &d.vips[0];
    let i = v
        .config
        .backends
        .iter()
        .position(|b| b.name == name)
        .unwrap_or_else(|| panic!("no backend {name}"));
    v.backend_ids[i]
}

/// Every configured backend of `vip` holds exactly its valid entry.
fn assert_live(dp: &Dataplane, vip: &DesiredVip, what: &str) {
    for (b, &id) in vip.config.backends.iter().zip(&vip.backend_ids) {
        assert_eq!(
            dp.live_backend(id),
            kernel_backend(b, vip.id),
            "{what}: backend {} (id {id})",
            b.name
        );
    }
}

/// `id`'s entry is `was` without BACKEND_F_VALID.
fn assert_retired(dp: &Dataplane, id: u32, was: Backend, what: &str) {
    let live = dp.live_backend(id);
    assert_eq!(
        live.flags & BACKEND_F_VALID,
        0,
        "{what}: id {id} still valid"
    );
    assert_eq!(
        live,
        Backend {
            flags: was.flags & !BACKEND_F_VALID,
            ..was
        },
        "{what}: id {id}: only the flag may change"
    );
}

#[test]
fn removed_backends_are_retired_and_their_ids_not_reused() {
    tests::require_privileges!();
    let mut dp = Dataplane::load().expect("load the balancer");

    let first = state(
        307,
        &[("a", "active"), ("b", "active"), ("c", "active")],
        &Allocation::default(),
    );
    dp.apply(MAC, &first, None).expect("first apply");
    assert_live(&dp, &first.vips[0], "first");

    // b goes, c drains: b is retained (state::retain: its entry stays
    // valid, in no table) until a connection-table count finds no entry
    // naming it, then retired; c's stays valid (a draining backend keeps
    // its flows).
    let mut second = state(
        307,
        &[("a", "active"), ("c", "draining")],
        &first.allocation,
    );
    let b = id(&first, "b");
    let b_entry = dp.live_backend(b);
    dp.apply(MAC, &second, Some(&first)).expect("second apply");
    assert_live(&dp, &second.vips[0], "second");
    assert_eq!(dp.live_backend(b), b_entry, "b retained, valid");
    let none = std::collections::BTreeMap::new();
    assert!(
        second
            .allocation
            .expire_retained(&none, 0.0, 1.0)
            .is_empty()
    );
    let ended = second.allocation.expire_retained(&none, 2.0, 3.0);
    assert_eq!(ended, std::collections::BTreeSet::from([b]));
    dp.retire_retained(&ended);
    assert_retired(&dp, b, b_entry, "b removed");

    // A new backend does not take b's id (nor any id handed out before).
    let third = state(
        307,
        &[("a", "active"), ("c", "draining"), ("d", "active")],
        &second.allocation,
    );
    let d = id(&third, "d");
    assert!(
        ![id(&first, "a"), b, id(&first, "c")].contains(&d),
        "d took a used id {d}"
    );
    dp.apply(MAC, &third, Some(&second)).expect("third apply");
    assert_live(&dp, &third.vips[0], "third");
    assert_retired(&dp, b, b_entry, "b after d came");

    // A new table size is a new VIP id: the kept backends follow it.
    let fourth = state(
        1021,
        &[("a", "active"), ("c", "draining"), ("d", "active")],
        &third.allocation,
    );
    assert_ne!(fourth.vips[0].id, third.vips[0].id);
    assert_eq!(fourth.vips[0].backend_ids, third.vips[0].backend_ids);
    dp.apply(MAC, &fourth, Some(&third)).expect("fourth apply");
    assert_live(&dp, &fourth.vips[0], "new table size");

    // A failed apply that adds e and removes a: the previous entries stay
    // as they were, e's id (written, then swapped out again) is retired.
    let fifth = state(
        1021,
        &[("c", "active"), ("d", "active"), ("e", "active")],
        &fourth.allocation,
    );
    let e = id(&fifth, "e");
    dp.inject_swap_failure(0);
    dp.apply(MAC, &fifth, Some(&fourth))
        .expect_err("injected failure");
    assert_live(&dp, &fourth.vips[0], "after the failed apply");
    assert_eq!(
        dp.live_backend(e).flags & BACKEND_F_VALID,
        0,
        "e's id stays valid after the failed apply"
    );
    dp.apply(MAC, &fifth, Some(&fourth)).expect("fifth apply");
    assert_live(&dp, &fifth.vips[0], "fifth");
    // a is retained, valid, until its retention ends.
    let a = id(&fourth, "a");
    assert_ne!(dp.live_backend(a).flags & BACKEND_F_VALID, 0, "a retained");
    let mut fifth = fifth;
    let none = std::collections::BTreeMap::new();
    assert!(fifth.allocation.expire_retained(&none, 0.0, 1.0).is_empty());
    let ended = fifth.allocation.expire_retained(&none, 2.0, 3.0);
    assert_eq!(ended, std::collections::BTreeSet::from([a]));
    dp.retire_retained(&ended);
    assert_eq!(dp.live_backend(a).flags & BACKEND_F_VALID, 0, "a removed");
}
