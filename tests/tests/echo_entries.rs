//! The ICMP echo entries of the VIP map through applies: written with the
//! VIPs, removed when their address goes or `icmp_echo = "pass"`, and left
//! as they were by an apply that fails part way. Loads the balancer (no
//! attach, no traffic): a privileged test (`tests::require_privileges!`).

use lb_common::{VIP_F_ADDRESS, VIP_F_ECHO_REPLY, VipKey};
use xlb_core::state::{Allocation, Desired, desired};
use xlb_dataplane::Dataplane;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xee];

/// One TCP VIP per address, each with one backend of `weight`.
fn state(icmp_echo: &str, addresses: &[&str], weight: u32, previous: &Allocation) -> Desired {
    let mut text = format!("interface = \"xlbecho0\"\nicmp_echo = \"{icmp_echo}\"\n");
    for (i, a) in addresses.iter().enumerate() {
        text.push_str(&format!(
            "[[vip]]\nname = \"v{i}\"\naddress = \"{a}\"\nport = 80\nprotocol = \"tcp\"\n\
             table_size = 211\n\
             [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.1\"\n\
             mac = \"02:00:00:00:00:01\"\nweight = {weight}\n\
             [[vip.backend]]\nname = \"b\"\naddress = \"198.18.0.2\"\n\
             mac = \"02:00:00:00:00:02\"\n"
        ));
    }
    let config = xlb_core::config::parse(&text, "echo.toml").expect("valid config");
    desired(&config, previous).expect("desired state")
}

/// The echo keys of `d` that the kernel holds, and whether each holds what
/// `d` says.
fn live_echo(dp: &Dataplane, d: &Desired) -> Vec<bool> {
    d.echo
        .iter()
        .map(|(key, meta)| dp.live_vip(key).expect("read the VIP map") == Some(*meta))
        .collect()
}

fn echo_key(d: &Desired, i: usize) -> VipKey {
    d.echo[i].0
}

#[test]
fn echo_entries_follow_the_applied_config() {
    tests::require_privileges!();
    let mut dp = Dataplane::load().expect("load the balancer");

    let first = state(
        "reply",
        &["198.18.100.1", "2001:db8:100::1"],
        1,
        &Allocation::default(),
    );
    assert_eq!(first.echo.len(), 2);
    assert!(
        first
            .echo
            .iter()
            .all(|(_, m)| m.flags == VIP_F_ADDRESS | VIP_F_ECHO_REPLY)
    );
    dp.apply(MAC, &first, None).expect("first apply");
    assert_eq!(live_echo(&dp, &first), [true, true]);

    // The IPv6 VIP goes: its echo entry goes with it.
    let second = state("reply", &["198.18.100.1"], 1, &first.allocation);
    dp.apply(MAC, &second, Some(&first)).expect("second apply");
    assert_eq!(live_echo(&dp, &second), [true]);
    assert_eq!(dp.live_vip(&echo_key(&first, 1)).unwrap(), None);

    // A failed apply that would add an address leaves the echo entries as
    // they were: no entry for the new address.
    let third = state(
        "reply",
        &["198.18.100.1", "198.18.100.2"],
        3,
        &second.allocation,
    );
    assert_eq!(third.echo.len(), 2);
    dp.inject_swap_failure(1);
    dp.apply(MAC, &third, Some(&second))
        .expect_err("injected failure");
    assert_eq!(live_echo(&dp, &second), [true]);
    assert_eq!(dp.live_vip(&echo_key(&third, 1)).unwrap(), None);
    dp.apply(MAC, &third, Some(&second)).expect("third apply");
    assert_eq!(live_echo(&dp, &third), [true, true]);

    // "pass": the address entries stay (`unhandled` reads them) without the
    // echo flag; the VIPs stay.
    let fourth = state(
        "pass",
        &["198.18.100.1", "198.18.100.2"],
        3,
        &third.allocation,
    );
    assert_eq!(fourth.echo.len(), 2);
    assert!(fourth.echo.iter().all(|(_, m)| m.flags == VIP_F_ADDRESS));
    dp.apply(MAC, &fourth, Some(&third)).expect("fourth apply");
    assert_eq!(live_echo(&dp, &fourth), [true, true]);
    for v in &fourth.vips {
        assert_eq!(dp.live_vip(&v.key).unwrap(), Some(v.meta));
    }
}

/// The declared limit: 1,024 VIPs, each on an address of its own, have 1,024
/// VIP entries and 1,024 address entries, and the VIP map holds them all.
#[test]
fn the_most_vips_on_distinct_addresses_fit() {
    tests::require_privileges!();
    let mut dp = Dataplane::load().expect("load the balancer");
    let addresses: Vec<String> = (0..lb_common::maps::MAX_VIPS)
        .map(|i| format!("198.18.{}.{}", 100 + i / 250, i % 250 + 1))
        .collect();
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let d = state("reply", &refs, 1, &Allocation::default());
    assert_eq!(d.echo.len(), addresses.len());
    dp.apply(MAC, &d, None)
        .expect("1,024 VIPs and their address entries");
    assert!(live_echo(&dp, &d).iter().all(|&ok| ok));
}
