//! Tests of the forwarding settings: `conn_table_size`, `icmp_echo`,
//! `[tunnel]`, each VIP's `forwarding` and `hash`, and what a tunnelling VIP
//! asks of its backends: defaults, every accepted form, and one located
//! problem per bad value.

use std::net::Ipv4Addr;

use super::{
    Config, Forwarding, HashMode, IcmpEcho, Ipv4Prefix, Ipv6Prefix, MacAddr, Tunnel, parse,
};

const HEAD: &str = "interface = \"eth0\"\n";

fn ok(text: &str) -> Config {
    parse(text, "f.toml").unwrap_or_else(|e| panic!("{e}\n--- in:\n{text}"))
}

fn problems(text: &str) -> Vec<String> {
    match parse(text, "f.toml") {
        Ok(c) => panic!("accepted: {c:?}\n--- in:\n{text}"),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

/// A VIP at `address` with its own `keys` (lines), and one backend per
/// address, each with a MAC only if `macs`.
fn vip(address: &str, keys: &str, backends: &[&str], macs: bool) -> String {
    let mut text = format!(
        "[[vip]]\nname = \"v{}\"\naddress = \"{address}\"\nport = 80\nprotocol = \"tcp\"\n{keys}",
        address.len()
    );
    for (i, b) in backends.iter().enumerate() {
        text.push_str(&format!(
            "[[vip.backend]]\nname = \"b{i}\"\naddress = \"{b}\"\n"
        ));
        if macs {
            text.push_str(&format!("mac = \"02:00:00:00:00:{:02x}\"\n", i + 1));
        }
    }
    text
}

const TUNNEL: &str =
    "[tunnel]\nsource_v4 = \"198.18.200.0/24\"\nsource_v6 = \"2001:db8:ff::/96\"\n";

#[test]
fn defaults_when_absent() {
    let config = ok(&format!(
        "{HEAD}{}",
        vip("198.18.100.1", "", &["198.18.0.1"], true)
    ));
    assert_eq!(config.conn_table_size, lb_common::maps::CONN_TABLE_SIZE);
    assert_eq!(config.icmp_echo, IcmpEcho::Reply);
    assert_eq!(
        config.tunnel,
        Tunnel {
            source_v4: None,
            source_v6: None,
            gue_port: 6080,
            gateway_mac: None,
        }
    );
    assert_eq!(config.vips[0].forwarding, Forwarding::Dsr);
    assert_eq!(config.vips[0].hash, HashMode::FiveTuple);
    // An empty [tunnel] is the defaults too.
    let config = ok(&format!("{HEAD}[tunnel]\n"));
    assert_eq!(config.tunnel, Tunnel::default());
}

#[test]
fn every_key_set() {
    let text = format!(
        "{HEAD}conn_table_size = 1048576\nicmp_echo = \"pass\"\n\
         [tunnel]\nsource_v4 = \"198.18.200.0/24\"\nsource_v6 = \"2001:db8:ff::/96\"\n\
         gue_port = 9999\ngateway_mac = \"02:00:00:00:00:fe\"\n{}{}{}",
        vip(
            "198.18.100.1",
            "forwarding = \"ipip\"\nhash = \"source\"\n",
            &["198.18.0.1", "2001:db8::1"],
            false
        ),
        vip(
            "2001:db8:100::1",
            "forwarding = \"gue\"\nhash = \"no_ports\"\n",
            &["2001:db8::1"],
            true
        ),
        vip(
            "198.18.100.22",
            "forwarding = \"dsr\"\nhash = \"five_tuple\"\n",
            &["198.18.0.1"],
            true
        ),
    );
    let config = ok(&text);
    assert_eq!(config.conn_table_size, 1 << 20);
    assert_eq!(config.icmp_echo, IcmpEcho::Pass);
    assert_eq!(
        config.tunnel,
        Tunnel {
            source_v4: Some(Ipv4Prefix {
                addr: Ipv4Addr::new(198, 18, 200, 0),
                len: 24
            }),
            source_v6: Some(Ipv6Prefix {
                addr: "2001:db8:ff::".parse().unwrap(),
                len: 96
            }),
            gue_port: 9999,
            gateway_mac: Some(MacAddr([2, 0, 0, 0, 0, 0xfe])),
        }
    );
    let methods: Vec<(Forwarding, HashMode)> =
        config.vips.iter().map(|v| (v.forwarding, v.hash)).collect();
    assert_eq!(
        methods,
        [
            (Forwarding::Ipip, HashMode::Source),
            (Forwarding::Gue, HashMode::NoPorts),
            (Forwarding::Dsr, HashMode::FiveTuple),
        ]
    );
    // A tunnelling VIP's backend without a MAC gets the zero MAC: the FIB
    // names the next hop.
    assert_eq!(config.vips[0].backends[0].mac, MacAddr([0; 6]));
    // With one, it is kept.
    assert_eq!(config.vips[1].backends[0].mac, MacAddr([2, 0, 0, 0, 0, 1]));

    // The JSON form (plans, status) spells values as the config does.
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["icmp_echo"], "pass");
    assert_eq!(json["conn_table_size"], 1 << 20);
    assert_eq!(json["tunnel"]["source_v4"], "198.18.200.0/24");
    assert_eq!(json["tunnel"]["source_v6"], "2001:db8:ff::/96");
    assert_eq!(json["tunnel"]["gateway_mac"], "02:00:00:00:00:fe");
    assert_eq!(json["vips"][0]["forwarding"], "ipip");
    assert_eq!(json["vips"][1]["hash"], "no_ports");
    assert_eq!(json["vips"][2]["hash"], "five_tuple");
}

#[test]
fn display_is_the_config_spelling() {
    for f in Forwarding::ALL {
        let text = format!(
            "{HEAD}{TUNNEL}{}",
            vip(
                "198.18.100.1",
                &format!("forwarding = \"{f}\"\n"),
                &["198.18.0.1"],
                true
            )
        );
        assert_eq!(ok(&text).vips[0].forwarding, f);
    }
    for h in HashMode::ALL {
        let text = format!(
            "{HEAD}{}",
            vip(
                "198.18.100.1",
                &format!("hash = \"{h}\"\n"),
                &["198.18.0.1"],
                true
            )
        );
        assert_eq!(ok(&text).vips[0].hash, h);
    }
    for e in IcmpEcho::ALL {
        assert_eq!(ok(&format!("{HEAD}icmp_echo = \"{e}\"\n")).icmp_echo, e);
    }
}

#[test]
fn conn_table_size_bounds() {
    for n in [1024, 262144, 16777216] {
        assert_eq!(
            ok(&format!("{HEAD}conn_table_size = {n}\n")).conn_table_size,
            n
        );
    }
    for n in ["1023", "16777217", "-1"] {
        let got = problems(&format!("{HEAD}conn_table_size = {n}\n"));
        assert_eq!(
            got,
            [format!(
                "f.toml:2:19: conn_table_size: must be between 1024 and 16777216, got {n} \
                 (default 262144; each entry takes about 100 bytes of kernel memory)"
            )]
        );
    }
}

#[test]
fn tunnel_source_forms() {
    for (v4, len, mask) in [
        ("198.18.200.0/24", 24, [0, 0, 0, 255]),
        ("198.18.200.7/32", 32, [0, 0, 0, 0]),
        ("198.18.0.0/15", 15, [0, 1, 255, 255]),
        ("10.0.0.0/8", 8, [0, 255, 255, 255]),
        (" 198.18.200.0/24 ", 24, [0, 0, 0, 255]),
    ] {
        let config = ok(&format!("{HEAD}[tunnel]\nsource_v4 = \"{v4}\"\n"));
        let prefix = config.tunnel.source_v4.unwrap();
        assert_eq!(prefix.len, len, "{v4}");
        assert_eq!(prefix.hostmask(), mask, "{v4}");
        assert_eq!(prefix.to_string(), v4.trim());
    }
    for (v6, mask) in [
        ("2001:db8:ff::/96", [255; 4]),
        ("2001:db8:ff::100/120", [0, 0, 0, 255]),
        ("2001:db8:ff::1/128", [0; 4]),
    ] {
        let config = ok(&format!("{HEAD}[tunnel]\nsource_v6 = \"{v6}\"\n"));
        assert_eq!(config.tunnel.source_v6.unwrap().hostmask(), mask, "{v6}");
    }
}

/// Each bad value in `[tunnel]` (line 3, after its header): one problem.
#[test]
fn every_bad_tunnel_value_is_one_located_problem() {
    let cases: &[(&str, &str)] = &[
        (
            "source_v4 = \"198.18.200.1/24\"",
            "f.toml:3:13: tunnel.source_v4: \"198.18.200.1/24\" has host bits set; write the \
             prefix as \"198.18.200.0/24\" (the flow hash fills the host bits)",
        ),
        (
            "source_v4 = \"198.18.200.0/33\"",
            "f.toml:3:13: tunnel.source_v4: \"198.18.200.0/33\": the prefix length must be \
             between 8 and 32, like \"198.18.200.0/24\"",
        ),
        (
            "source_v4 = \"0.0.0.0/0\"",
            "f.toml:3:13: tunnel.source_v4: \"0.0.0.0/0\": the prefix length must be between 8 \
             and 32, like \"198.18.200.0/24\"",
        ),
        (
            "source_v4 = \"198.18.200.1\"",
            "f.toml:3:13: tunnel.source_v4: \"198.18.200.1\" has no prefix length: write a \
             prefix like \"198.18.200.0/24\" (a /32 is one fixed source address)",
        ),
        (
            "source_v4 = \"198.18.200.0/x\"",
            "f.toml:3:13: tunnel.source_v4: \"198.18.200.0/x\": the prefix length \"x\" is not a \
             number; write a prefix like \"198.18.200.0/24\"",
        ),
        (
            "source_v4 = \"gateway/24\"",
            "f.toml:3:13: tunnel.source_v4: \"gateway\" is not an IP address: expected a prefix \
             like \"198.18.200.0/24\"",
        ),
        (
            "source_v4 = \"lan\"",
            "f.toml:3:13: tunnel.source_v4: \"lan\" is not a prefix: expected an address, '/' \
             and a length, like \"198.18.200.0/24\"",
        ),
        (
            "source_v4 = \"2001:db8:ff::/96\"",
            "f.toml:3:13: tunnel.source_v4: \"2001:db8:ff::/96\" is an IPv6 prefix: put it in \
             source_v6",
        ),
        (
            "source_v4 = \"224.0.0.0/24\"",
            "f.toml:3:13: tunnel.source_v4: \"224.0.0.0/24\" is a multicast prefix; tunnelled \
             frames need a routable unicast source",
        ),
        (
            "source_v4 = \"255.255.255.255/32\"",
            "f.toml:3:13: tunnel.source_v4: \"255.255.255.255/32\" is in 240.0.0.0/4 (reserved, \
             and the broadcast address); tunnelled frames need a routable unicast source",
        ),
        (
            "source_v4 = \"127.0.0.0/8\"",
            "f.toml:3:13: tunnel.source_v4: \"127.0.0.0/8\" is a loopback prefix; tunnelled \
             frames need a routable unicast source",
        ),
        (
            "source_v4 = \"0.0.0.0/8\"",
            "f.toml:3:13: tunnel.source_v4: \"0.0.0.0/8\" is in 0.0.0.0/8 (\"this network\"); \
             tunnelled frames need a routable unicast source",
        ),
        (
            "source_v4 = 24",
            "f.toml:3:13: tunnel.source_v4: expected a string like \"198.18.200.0/24\", found an \
             integer (24)",
        ),
        (
            "source_v6 = \"2001:db8:ff::/64\"",
            "f.toml:3:13: tunnel.source_v6: prefix length /64 is too short: the flow hash fills \
             at most the last 32 bits of the source address, so the length must be between 96 \
             and 128, like \"2001:db8:ff::/96\"",
        ),
        (
            "source_v6 = \"2001:db8:ff::/129\"",
            "f.toml:3:13: tunnel.source_v6: \"2001:db8:ff::/129\": the prefix length must be \
             between 96 and 128, like \"2001:db8:ff::/96\"",
        ),
        (
            "source_v6 = \"2001:db8:ff::1/96\"",
            "f.toml:3:13: tunnel.source_v6: \"2001:db8:ff::1/96\" has host bits set; write the \
             prefix as \"2001:db8:ff::/96\" (the flow hash fills the host bits)",
        ),
        (
            "source_v6 = \"198.18.200.0/24\"",
            "f.toml:3:13: tunnel.source_v6: \"198.18.200.0/24\" is an IPv4 prefix: put it in \
             source_v4",
        ),
        (
            "source_v6 = \"ff02::/96\"",
            "f.toml:3:13: tunnel.source_v6: \"ff02::/96\" is a multicast prefix; tunnelled frames \
             need a routable unicast source",
        ),
        (
            "source_v6 = \"::/96\"",
            "f.toml:3:13: tunnel.source_v6: \"::/96\" is in ::/96 (unspecified, loopback and \
             IPv4-compatible addresses); tunnelled frames need a routable unicast source",
        ),
        (
            "source_v6 = \"::ffff:0:0/96\"",
            "f.toml:3:13: tunnel.source_v6: \"::ffff:0:0/96\" is in ::ffff:0:0/96 (IPv4-mapped \
             addresses; give an IPv4 source in source_v4); tunnelled frames need a routable \
             unicast source",
        ),
        (
            "gue_port = 0",
            "f.toml:3:12: tunnel.gue_port: must be between 1 and 65535, got 0 (default 6080)",
        ),
        (
            "gue_port = \"6080\"",
            "f.toml:3:12: tunnel.gue_port: expected an integer, found a string (\"6080\"); write \
             gue_port = 6080 without quotes",
        ),
        (
            "gateway_mac = \"01:00:5e:00:00:01\"",
            "f.toml:3:15: tunnel.gateway_mac: 01:00:5e:00:00:01 is a multicast address (bit 0 of \
             the first octet is set); give the gateway's unicast MAC address",
        ),
        (
            "gateway_mac = \"00:00:00:00:00:00\"",
            "f.toml:3:15: tunnel.gateway_mac: 00:00:00:00:00:00 is all zeros; give the gateway's \
             unicast MAC address",
        ),
        (
            "gue_prot = 6080",
            "f.toml:3:1: tunnel.gue_prot: unknown field \"gue_prot\", expected one of: source_v4, \
             source_v6, gue_port, gateway_mac (did you mean \"gue_port\"?)",
        ),
        (
            "hash_seed = 1",
            "f.toml:3:1: tunnel.hash_seed: unknown field \"hash_seed\", expected one of: \
             source_v4, source_v6, gue_port, gateway_mac (\"hash_seed\" is a top-level key: move \
             it above the [tunnel] header)",
        ),
    ];
    for (line, want) in cases {
        let got = problems(&format!("{HEAD}[tunnel]\n{line}\n"));
        assert_eq!(got, [*want], "{line}");
    }
}

#[test]
fn bad_choices_list_the_allowed_values() {
    let got = problems(&format!("{HEAD}icmp_echo = \"drop\"\n"));
    assert_eq!(
        got,
        [
            "f.toml:2:13: icmp_echo: unknown icmp_echo value \"drop\": must be one of \"reply\", \
          \"pass\""
        ]
    );
    let text = format!(
        "{HEAD}{}",
        vip(
            "198.18.100.1",
            "forwarding = \"GUE\"\nhash = \"src\"\n",
            &["198.18.0.1"],
            true
        )
    );
    assert_eq!(
        problems(&text),
        [
            "f.toml:7:14: vip[0].forwarding: unknown forwarding method \"GUE\": must be one of \
             \"dsr\", \"ipip\", \"gue\" (lowercase)",
            "f.toml:8:8: vip[0].hash: unknown hash mode \"src\": must be one of \"five_tuple\", \
             \"source\", \"no_ports\"",
        ]
    );
}

#[test]
fn a_dsr_backend_needs_a_mac_a_tunnelled_one_does_not() {
    let dsr = format!("{HEAD}{}", vip("198.18.100.1", "", &["198.18.0.1"], false));
    assert_eq!(
        problems(&dsr),
        [
            "f.toml:7:1: vip[0].backend[0].mac: required field is missing (an L2 DSR VIP sends \
          frames to the backend's MAC; only \"ipip\" and \"gue\" VIPs may leave it out)"
        ]
    );
    for method in ["ipip", "gue"] {
        let text = format!(
            "{HEAD}{TUNNEL}{}",
            vip(
                "198.18.100.1",
                &format!("forwarding = \"{method}\"\n"),
                &["198.18.0.1"],
                false
            )
        );
        assert_eq!(ok(&text).vips[0].backends[0].mac, MacAddr([0; 6]));
    }
    // A bad forwarding value is the one problem: whether a MAC is needed is
    // unknown then.
    let text = format!(
        "{HEAD}{}",
        vip(
            "198.18.100.1",
            "forwarding = \"vxlan\"\n",
            &["198.18.0.1"],
            false
        )
    );
    let got = problems(&text);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].contains("vip[0].forwarding"), "{got:#?}");
}

#[test]
fn tunnelled_address_families() {
    // IPv4 in IPv4, IPv4 in IPv6, IPv6 in IPv6: accepted.
    let text = format!(
        "{HEAD}{TUNNEL}{}{}",
        vip(
            "198.18.100.1",
            "forwarding = \"ipip\"\n",
            &["198.18.0.1", "2001:db8::1"],
            false
        ),
        vip(
            "2001:db8:100::1",
            "forwarding = \"gue\"\n",
            &["2001:db8::1"],
            false
        ),
    );
    ok(&text);
    // IPv6 in IPv4: refused, naming the backend.
    let text = format!(
        "{HEAD}{TUNNEL}{}",
        vip(
            "2001:db8:100::1",
            "forwarding = \"ipip\"\n",
            &["2001:db8::1", "198.18.0.2"],
            false
        ),
    );
    assert_eq!(
        problems(&text),
        [
            "f.toml:16:11: vip[0].backend[1].address: VIP \"v15\" is IPv6 and forwards with \
          \"ipip\", but backend \"b1\" has the IPv4 address 198.18.0.2: IPv6 in IPv4 is not \
          supported; give the backend's IPv6 address"
        ]
    );
    // With L2 DSR the backend's address family does not matter.
    let text = format!(
        "{HEAD}{}",
        vip("2001:db8:100::1", "", &["198.18.0.2"], true)
    );
    ok(&text);
}

#[test]
fn a_tunnel_source_of_each_backend_family_is_needed() {
    // Two VIPs, each with two IPv4 backends and one IPv6 backend, and no
    // [tunnel]: one problem per VIP and missing family, at the first backend
    // that needs it.
    let backends = ["198.18.0.1", "198.18.0.2", "2001:db8::1"];
    let text = format!(
        "{HEAD}{}{}",
        vip("198.18.100.1", "forwarding = \"ipip\"\n", &backends, false),
        vip("198.18.100.22", "forwarding = \"gue\"\n", &backends, false),
    );
    assert_eq!(
        problems(&text),
        [
            "f.toml:10:11: tunnel.source_v4: required by VIP \"v12\" (forwarding = \"ipip\"): its \
             backend \"b0\" (198.18.0.1) is reached over IPv4; set source_v4 in a [tunnel] \
             section above the first [[vip]], the IPv4 prefix tunnelled frames come from, like \
             \"198.18.200.0/24\"",
            "f.toml:16:11: tunnel.source_v6: required by VIP \"v12\" (forwarding = \"ipip\"): its \
             backend \"b2\" (2001:db8::1) is reached over IPv6; set source_v6 in a [tunnel] \
             section above the first [[vip]], the IPv6 prefix tunnelled frames come from, like \
             \"2001:db8:ff::/96\"",
            "f.toml:25:11: tunnel.source_v4: required by VIP \"v13\" (forwarding = \"gue\"): its \
             backend \"b0\" (198.18.0.1) is reached over IPv4; set source_v4 in a [tunnel] \
             section above the first [[vip]], the IPv4 prefix tunnelled frames come from, like \
             \"198.18.200.0/24\"",
            "f.toml:31:11: tunnel.source_v6: required by VIP \"v13\" (forwarding = \"gue\"): its \
             backend \"b2\" (2001:db8::1) is reached over IPv6; set source_v6 in a [tunnel] \
             section above the first [[vip]], the IPv6 prefix tunnelled frames come from, like \
             \"2001:db8:ff::/96\"",
        ]
    );
    // Only the family in use is needed.
    let text = format!(
        "{HEAD}[tunnel]\nsource_v4 = \"198.18.200.0/24\"\n{}",
        vip(
            "198.18.100.1",
            "forwarding = \"gue\"\n",
            &["198.18.0.1"],
            false
        ),
    );
    ok(&text);
    // A bad [tunnel] is reported once, not again for every VIP.
    let text = format!(
        "{HEAD}[tunnel]\nsource_v4 = \"198.18.200.1/24\"\n{}",
        vip(
            "198.18.100.1",
            "forwarding = \"gue\"\n",
            &["198.18.0.1"],
            false
        ),
    );
    let got = problems(&text);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("f.toml:3:13: tunnel.source_v4: "),
        "{got:#?}"
    );
}

#[test]
fn misplaced_forwarding_settings_get_a_hint() {
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{HEAD}forwarding = \"gue\"\n"),
            "f.toml:2:1: forwarding: unknown field \"forwarding\", expected one of: interface, \
             hash_seed, vip, metrics_address, imbalance, safety, conn_table_size, icmp_echo, \
             unhandled, announce, tunnel, health (\"forwarding\" is a setting of each VIP: write it under each [[vip]] header)",
        ),
        (
            format!("{HEAD}gue_port = 6080\n"),
            "f.toml:2:1: gue_port: unknown field \"gue_port\", expected one of: interface, \
             hash_seed, vip, metrics_address, imbalance, safety, conn_table_size, icmp_echo, \
             unhandled, announce, tunnel, health (\"gue_port\" is a tunnel setting: put it in a [tunnel] section, above the \
             first [[vip]])",
        ),
        (
            format!(
                "{HEAD}{}",
                vip(
                    "198.18.100.1",
                    "source_v4 = \"198.18.200.0/24\"\n",
                    &[],
                    true
                )
            ),
            "f.toml:7:1: vip[0].source_v4: unknown field \"source_v4\", expected one of: name, \
             address, port, protocol, table_size, backend, imbalance, safety, forwarding, hash, unhandled, announce, health \
             (\"source_v4\" is a tunnel setting: put it in a [tunnel] section, above the first \
             [[vip]])",
        ),
        (
            format!(
                "{HEAD}{}",
                vip("198.18.100.1", "icmp_echo = \"pass\"\n", &[], true)
            ),
            "f.toml:7:1: vip[0].icmp_echo: unknown field \"icmp_echo\", expected one of: name, \
             address, port, protocol, table_size, backend, imbalance, safety, forwarding, hash, unhandled, announce, health \
             (\"icmp_echo\" is a top-level key: move it above the first [[vip]])",
        ),
        (
            format!(
                "{HEAD}{}forwarding = \"gue\"\n",
                vip("198.18.100.1", "", &["198.18.0.1"], true)
            ),
            "f.toml:11:1: vip[0].backend[0].forwarding: unknown field \"forwarding\", expected \
             one of: name, address, mac, weight, state, capacity (\"forwarding\" is a VIP key: \
             move it above the VIP's first [[vip.backend]])",
        ),
        (
            // [tunnel] is host-wide: it goes above the VIPs.
            format!(
                "{HEAD}{}{TUNNEL}",
                vip("198.18.100.1", "", &["198.18.0.1"], true)
            ),
            "f.toml:11:1: tunnel: the [tunnel] section holds host-wide settings, but it is \
             written below the first [[vip]] (line 2): move it above the first [[vip]], with the \
             other top-level settings",
        ),
        (
            format!("{HEAD}tunnel = \"ipip\"\n"),
            "f.toml:2:10: tunnel: expected a table (write it as a [tunnel] section), found a \
             string (\"ipip\")",
        ),
    ];
    for (text, want) in cases {
        let got = problems(&text);
        assert_eq!(got, [want], "--- in:\n{text}");
    }
}

/// The commented-out `[tunnel]` block of the shipped example is valid, and
/// uncommented it sets only the tunnel (its GUE port is the default).
#[test]
fn example_tunnel_block_is_valid() {
    let example = include_str!("../../../examples/xlb.toml");
    let start = example
        .find("# [tunnel]\n")
        .expect("example has a [tunnel] block");
    let end = start
        + example[start..]
            .find("\n\n")
            .expect("the block ends with a blank line");
    let block: String = example[start..end]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    let config = ok(&format!("{}{block}{}", &example[..start], &example[end..]));
    assert_eq!(
        config.tunnel,
        Tunnel {
            source_v4: Some(Ipv4Prefix {
                addr: Ipv4Addr::new(198, 18, 200, 0),
                len: 24
            }),
            source_v6: Some(Ipv6Prefix {
                addr: "2001:db8:ff::".parse().unwrap(),
                len: 96
            }),
            gue_port: lb_common::DEFAULT_GUE_PORT,
            gateway_mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
        }
    );
    assert_eq!(
        Config {
            tunnel: Tunnel::default(),
            ..config
        },
        ok(example)
    );
    // Every VIP of the example may then tunnel: swap its method in.
    let text = format!("{}{block}{}", &example[..start], &example[end..])
        .replace("forwarding = \"dsr\"", "forwarding = \"gue\"");
    assert_eq!(ok(&text).vips[0].forwarding, Forwarding::Gue);
}

/// `unhandled`: drop by default, a top-level default every VIP inherits, a
/// VIP's own; unknown values and VIPs at one address that disagree are
/// rejected with their place.
#[test]
fn unhandled_defaults_inherits_and_is_checked() {
    use super::Unhandled;
    let two = |top: &str, a: &str, b: &str| {
        format!(
            "{HEAD}{top}[[vip]]\nname = \"a\"\naddress = \"198.18.100.1\"\nport = 80\n\
             protocol = \"tcp\"\n{a}[[vip.backend]]\nname = \"b\"\naddress = \"198.18.0.1\"\n\
             mac = \"02:00:00:00:00:01\"\n[[vip]]\nname = \"c\"\naddress = \"198.18.100.1\"\n\
             port = 53\nprotocol = \"udp\"\n{b}[[vip.backend]]\nname = \"b\"\n\
             address = \"198.18.0.1\"\nmac = \"02:00:00:00:00:01\"\n"
        )
    };
    let c = ok(&two("", "", ""));
    assert_eq!(c.unhandled, Unhandled::Drop);
    assert!(c.vips.iter().all(|v| v.unhandled == Unhandled::Drop));
    let c = ok(&two("unhandled = \"pass\"\n", "", ""));
    assert!(c.vips.iter().all(|v| v.unhandled == Unhandled::Pass));
    let c = ok(&two(
        "unhandled = \"pass\"\n",
        "unhandled = \"drop\"\n",
        "unhandled = \"drop\"\n",
    ));
    assert_eq!(c.unhandled, Unhandled::Pass);
    assert!(c.vips.iter().all(|v| v.unhandled == Unhandled::Drop));
    assert_eq!(
        problems(&format!("{HEAD}unhandled = \"reject\"\n")),
        [
            "f.toml:2:13: unhandled: unknown unhandled value \"reject\": must be one of \"drop\", \"pass\""
        ]
    );
    assert_eq!(
        problems(&two("", "unhandled = \"pass\"\n", "")),
        [
            "f.toml:12:1: vip[1].unhandled: unhandled = \"drop\" but VIP \"a\" (line 7) at the same \
             address 198.18.100.1 has \"pass\"; VIPs sharing an address must agree"
        ]
    );
}

/// `announce`: healthy by default, a top-level default every VIP inherits,
/// a VIP's own; VIPs at one address may differ (the address is announced
/// while any of them is); unknown values are rejected with their place.
#[test]
fn announce_defaults_inherits_and_is_checked() {
    use super::Announce;
    let vip = |name: &str, port: u16, own: &str| {
        format!(
            "[[vip]]\nname = \"{name}\"\naddress = \"198.18.100.1\"\nport = {port}\n\
             protocol = \"tcp\"\n{own}[[vip.backend]]\nname = \"b\"\naddress = \"198.18.0.1\"\n\
             mac = \"02:00:00:00:00:01\"\n"
        )
    };
    let c = ok(&format!("{HEAD}{}", vip("a", 80, "")));
    assert_eq!(c.announce, Announce::Healthy);
    assert_eq!(c.vips[0].announce, Announce::Healthy);
    let c = ok(&format!(
        "{HEAD}announce = \"always\"\n{}{}",
        vip("a", 80, ""),
        vip("c", 81, "announce = \"never\"\n")
    ));
    assert_eq!(c.vips[0].announce, Announce::Always);
    assert_eq!(c.vips[1].announce, Announce::Never);
    assert_eq!(
        problems(&format!(
            "{HEAD}{}",
            vip("a", 80, "announce = \"sometimes\"\n")
        )),
        [
            "f.toml:7:12: vip[0].announce: unknown announce value \"sometimes\": must be one of \
             \"healthy\", \"always\", \"never\""
        ]
    );
}
