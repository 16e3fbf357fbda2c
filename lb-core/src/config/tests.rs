//! Tests of `metrics_address`, of the `[imbalance]` / `[vip.imbalance]` and
//! `[safety]` / `[vip.safety]` tables and of a backend's `capacity`:
//! defaults, inheritance key by key, TOML section order, and one located
//! problem per bad value.

use super::{Config, DEFAULT_METRICS_ADDRESS, Safety, Thresholds, parse};

const HEAD: &str = "interface = \"eth0\"\n";

/// A VIP section (`name`, port 80 + `n`) with two backends.
fn vip(name: &str, n: u16) -> String {
    format!(
        "[[vip]]\nname = \"{name}\"\naddress = \"10.0.0.1\"\nport = {}\nprotocol = \"tcp\"\n\
         [[vip.backend]]\nname = \"a\"\naddress = \"10.1.0.1\"\nmac = \"02:00:00:00:00:01\"\n\
         [[vip.backend]]\nname = \"b\"\naddress = \"10.1.0.2\"\nmac = \"02:00:00:00:00:02\"\n",
        80 + n
    )
}

fn ok(text: &str) -> Config {
    parse(text, "f.toml").unwrap_or_else(|e| panic!("{e}\n--- in:\n{text}"))
}

fn problems(text: &str) -> Vec<String> {
    match parse(text, "f.toml") {
        Ok(c) => panic!("accepted: {c:?}\n--- in:\n{text}"),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn defaults_when_absent() {
    let config = ok(&format!("{HEAD}{}{}", vip("web", 0), vip("dns", 1)));
    assert_eq!(config.metrics_address, DEFAULT_METRICS_ADDRESS);
    assert_eq!(config.metrics_address.to_string(), "127.0.0.1:9470");
    for v in &config.vips {
        assert_eq!(v.imbalance, Thresholds::default(), "{}", v.name);
    }
    // An empty table is the defaults too.
    let config = ok(&format!(
        "{HEAD}[imbalance]\n{}[vip.imbalance]\n",
        vip("web", 0)
    ));
    assert_eq!(config.vips[0].imbalance, Thresholds::default());
}

#[test]
fn metrics_address_forms() {
    for (text, want) in [
        ("127.0.0.1:9470", "127.0.0.1:9470"),
        ("[::1]:9470", "[::1]:9470"),
        ("0.0.0.0:9100", "0.0.0.0:9100"),
        ("[2001:db8::1]:65535", "[2001:db8::1]:65535"),
        (" 127.0.0.1:1 ", "127.0.0.1:1"),
    ] {
        let config = ok(&format!("metrics_address = \"{text}\"\n{HEAD}"));
        assert_eq!(config.metrics_address.to_string(), want, "{text}");
    }
}

#[test]
fn top_level_defaults_are_inherited() {
    let text = format!(
        "{HEAD}[imbalance]\nmax_ratio = 2\nmax_cv = 0.5\nmin_new_flow_rate = 1.5\n\
         min_packet_rate = 0\nhold = \"0s\"\nwindow = \"1m\"\n{}{}",
        vip("web", 0),
        vip("dns", 1)
    );
    let want = Thresholds {
        max_ratio: 2.0,
        max_cv: 0.5,
        min_new_flow_rate: 1.5,
        min_packet_rate: 0.0,
        hold_seconds: 0.0,
        window_seconds: 60.0,
    };
    let config = ok(&text);
    assert_eq!(config.vips[0].imbalance, want);
    assert_eq!(config.vips[1].imbalance, want);
}

#[test]
fn per_vip_keys_override_one_by_one() {
    // A VIP's value: its own key, else the top-level key, else the built-in.
    let text = format!(
        "{HEAD}[imbalance]\nmax_ratio = 3\nhold = \"30s\"\n\
         {}[vip.imbalance]\nhold = \"500ms\"\nmax_cv = 1\n\
         {}[vip.imbalance]\nwindow = \"1.5m\"\nmin_packet_rate = 1000\n\
         {}",
        vip("web", 0),
        vip("dns", 1),
        vip("plain", 2)
    );
    let config = ok(&text);
    let builtin = Thresholds::default();
    assert_eq!(
        config.vips[0].imbalance,
        Thresholds {
            max_ratio: 3.0,
            max_cv: 1.0,
            hold_seconds: 0.5,
            ..builtin.clone()
        }
    );
    assert_eq!(
        config.vips[1].imbalance,
        Thresholds {
            max_ratio: 3.0,
            hold_seconds: 30.0,
            window_seconds: 90.0,
            min_packet_rate: 1000.0,
            ..builtin.clone()
        }
    );
    assert_eq!(
        config.vips[2].imbalance,
        Thresholds {
            max_ratio: 3.0,
            hold_seconds: 30.0,
            ..builtin
        }
    );

    // Without a top-level table, a VIP's keys override the built-in values.
    let config = ok(&format!(
        "{HEAD}{}[vip.imbalance]\nmin_new_flow_rate = 0\n",
        vip("web", 0)
    ));
    assert_eq!(
        config.vips[0].imbalance,
        Thresholds {
            min_new_flow_rate: 0.0,
            ..Thresholds::default()
        }
    );
}

#[test]
fn vip_imbalance_before_or_after_the_backends() {
    let want = Thresholds {
        max_ratio: 2.0,
        hold_seconds: 5.0,
        ..Thresholds::default()
    };
    let vip_keys =
        "[[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n";
    let table = "[vip.imbalance]\nmax_ratio = 2\nhold = \"5s\"\n";
    let backends = "[[vip.backend]]\nname = \"a\"\naddress = \"10.1.0.1\"\nmac = \"02:00:00:00:00:01\"\n\
                    [[vip.backend]]\nname = \"b\"\naddress = \"10.1.0.2\"\nmac = \"02:00:00:00:00:02\"\n";
    let next = vip("dns", 1);
    for (order, text) in [
        ("before", format!("{HEAD}{vip_keys}{table}{backends}{next}")),
        ("after", format!("{HEAD}{vip_keys}{backends}{table}{next}")),
        (
            "inline",
            format!(
                "{HEAD}{vip_keys}imbalance = {{ max_ratio = 2, hold = \"5s\" }}\n{backends}{next}"
            ),
        ),
        (
            "dotted",
            format!(
                "{HEAD}{vip_keys}imbalance.max_ratio = 2\nimbalance.hold = \"5s\"\n{backends}{next}"
            ),
        ),
    ] {
        let config = ok(&text);
        assert_eq!(config.vips.len(), 2, "{order}");
        assert_eq!(config.vips[0].backends.len(), 2, "{order}");
        assert_eq!(config.vips[0].imbalance, want, "{order}");
        // The table belongs to the VIP above it, not to the next one.
        assert_eq!(config.vips[1].imbalance, Thresholds::default(), "{order}");
    }
}

#[test]
fn accepted_values() {
    for (key, value, get, want) in [
        ("max_ratio", "2", ratio as fn(&Thresholds) -> f64, 2.0),
        ("max_ratio", "1.01", ratio, 1.01),
        ("max_ratio", "100", ratio, 100.0),
        ("max_cv", "10", cv, 10.0),
        ("max_cv", "0.01", cv, 0.01),
        ("min_new_flow_rate", "0", flows, 0.0),
        ("min_packet_rate", "1e6", packets, 1e6),
        ("hold", "\"0s\"", hold, 0.0),
        ("hold", "\"500ms\"", hold, 0.5),
        ("hold", "\"1.5s\"", hold, 1.5),
        ("hold", "\"2m\"", hold, 120.0),
        ("hold", "\"1h\"", hold, 3600.0),
        ("window", "\"2s\"", window, 2.0),
        ("window", "\"2000ms\"", window, 2.0),
        ("window", "\"10m\"", window, 600.0),
    ] {
        let config = ok(&format!(
            "{HEAD}[imbalance]\n{key} = {value}\n{}",
            vip("v", 0)
        ));
        assert_eq!(get(&config.vips[0].imbalance), want, "{key} = {value}");
    }
}

fn ratio(t: &Thresholds) -> f64 {
    t.max_ratio
}
fn cv(t: &Thresholds) -> f64 {
    t.max_cv
}
fn flows(t: &Thresholds) -> f64 {
    t.min_new_flow_rate
}
fn packets(t: &Thresholds) -> f64 {
    t.min_packet_rate
}
fn hold(t: &Thresholds) -> f64 {
    t.hold_seconds
}
fn window(t: &Thresholds) -> f64 {
    t.window_seconds
}

/// Each bad value, alone in a file: exactly one problem, at the value (or
/// the key), naming the field and the reason.
#[test]
fn every_bad_value_is_one_located_problem() {
    // (line to add, where: "top" = [imbalance] table, "vip" = [vip.imbalance]
    // table of the second VIP, "root" = a top-level key; expected problem)
    let cases: &[(&str, &str, &str)] = &[
        (
            "max_ratio = 1",
            "top",
            "f.toml:4:13: imbalance.max_ratio: must be a number greater than 1 and at most 100 \
             (default 1.5), got 1",
        ),
        (
            "max_ratio = 101",
            "vip",
            "f.toml:32:13: vip[1].imbalance.max_ratio: must be a number greater than 1 and at \
             most 100 (default 1.5), got 101",
        ),
        (
            "max_ratio = \"x\"",
            "top",
            "f.toml:4:13: imbalance.max_ratio: expected a number, found a string (\"x\")",
        ),
        (
            "max_ratio = \"2\"",
            "vip",
            "f.toml:32:13: vip[1].imbalance.max_ratio: expected a number, found a string \
             (\"2\"); write max_ratio = 2 without quotes",
        ),
        (
            "max_ratio = nan",
            "top",
            "f.toml:4:13: imbalance.max_ratio: must be a number greater than 1 and at most 100 \
             (default 1.5), got NaN",
        ),
        (
            "max_cv = 0",
            "top",
            "f.toml:4:10: imbalance.max_cv: must be a number greater than 0 and at most 10 \
             (default 0.25), got 0",
        ),
        (
            "max_cv = 10.5",
            "vip",
            "f.toml:32:10: vip[1].imbalance.max_cv: must be a number greater than 0 and at most \
             10 (default 0.25), got 10.5",
        ),
        (
            "min_packet_rate = -1",
            "top",
            "f.toml:4:19: imbalance.min_packet_rate: must be a finite number of packets per \
             second, at least 0 (default 100), got -1",
        ),
        (
            "min_new_flow_rate = inf",
            "vip",
            "f.toml:32:21: vip[1].imbalance.min_new_flow_rate: must be a finite number of new \
             flows per second, at least 0 (default 10), got inf",
        ),
        (
            "min_new_flow_rate = true",
            "top",
            "f.toml:4:21: imbalance.min_new_flow_rate: expected a number, found a boolean (true)",
        ),
        (
            "hold = \"10\"",
            "top",
            "f.toml:4:8: imbalance.hold: \"10\" has no unit: write e.g. \"10s\" for seconds \
             (units: ms, s, m or h)",
        ),
        (
            "hold = -1",
            "top",
            "f.toml:4:8: imbalance.hold: expected a duration like \"10s\" or \"500ms\", found \
             an integer (-1)",
        ),
        (
            "window = 1.5",
            "top",
            "f.toml:4:10: imbalance.window: expected a duration like \"10s\" or \"500ms\", \
             found a float (1.5); give a unit in a string: window = \"1.5s\" for 1.5 seconds",
        ),
        (
            "hold = 10",
            "vip",
            "f.toml:32:8: vip[1].imbalance.hold: expected a duration like \"10s\" or \"500ms\", \
             found an integer (10); give a unit in a string: hold = \"10s\" for 10 seconds",
        ),
        (
            "hold = \"10 parsecs\"",
            "top",
            "f.toml:4:8: imbalance.hold: \"10 parsecs\" has an unknown unit \"parsecs\": use ms, \
             s, m or h, like \"10s\" or \"500ms\"",
        ),
        (
            "hold = \"2h\"",
            "vip",
            "f.toml:32:8: vip[1].imbalance.hold: must be between 0s and 1h (default 10s), got \
             \"2h\"",
        ),
        (
            "hold = \"-1s\"",
            "top",
            "f.toml:4:8: imbalance.hold: \"-1s\" is not a duration: write a number and a unit \
             (ms, s, m or h), like \"10s\", \"500ms\" or \"1.5m\"",
        ),
        (
            "window = \"1s\"",
            "top",
            "f.toml:4:10: imbalance.window: must be between 2s and 10m (default 10s), got \"1s\"",
        ),
        (
            "window = \"11m\"",
            "vip",
            "f.toml:32:10: vip[1].imbalance.window: must be between 2s and 10m (default 10s), \
             got \"11m\"",
        ),
        (
            "window = \"\"",
            "top",
            "f.toml:4:10: imbalance.window: must not be empty: write a duration like \"10s\" \
             (ms, s, m or h)",
        ),
        (
            "max_ration = 2",
            "top",
            "f.toml:4:1: imbalance.max_ration: unknown field \"max_ration\", expected one of: \
             max_ratio, max_cv, min_new_flow_rate, min_packet_rate, hold, window (did you mean \
             \"max_ratio\"?)",
        ),
        (
            "windows = \"10s\"",
            "vip",
            "f.toml:32:1: vip[1].imbalance.windows: unknown field \"windows\", expected one of: \
             max_ratio, max_cv, min_new_flow_rate, min_packet_rate, hold, window (did you mean \
             \"window\"?)",
        ),
        (
            "metrics_address = \"localhost:9470\"",
            "root",
            "f.toml:2:19: metrics_address: \"localhost:9470\" is not an IP address and port: \
             expected an IPv4 address or a bracketed IPv6 address, then ':' and a port, for \
             example \"127.0.0.1:9470\" or \"[::1]:9470\" (host names are not resolved)",
        ),
        (
            "metrics_address = \"127.0.0.1\"",
            "root",
            "f.toml:2:19: metrics_address: \"127.0.0.1\" has no port; write \"127.0.0.1:9470\"",
        ),
        (
            "metrics_address = \"::1\"",
            "root",
            "f.toml:2:19: metrics_address: \"::1\" has no port; an IPv6 address takes brackets \
             before the port: write \"[::1]:9470\"",
        ),
        (
            "metrics_address = \"[::1]\"",
            "root",
            "f.toml:2:19: metrics_address: \"[::1]\" has no port; an IPv6 address takes brackets \
             before the port: write \"[::1]:9470\"",
        ),
        (
            "metrics_address = \"127.0.0.1:0\"",
            "root",
            "f.toml:2:19: metrics_address: \"127.0.0.1:0\": the port must be between 1 and \
             65535, got 0; give a fixed port, for example \"127.0.0.1:9470\" or \"[::1]:9470\"",
        ),
        (
            "metrics_address = \"127.0.0.1:65536\"",
            "root",
            "f.toml:2:19: metrics_address: \"127.0.0.1:65536\": the port must be between 1 and \
             65535, got 65536; for example \"127.0.0.1:9470\" or \"[::1]:9470\"",
        ),
        (
            "metrics_address = 9470",
            "root",
            "f.toml:2:19: metrics_address: expected a string like \"127.0.0.1:9470\", found an \
             integer (9470)",
        ),
        (
            "metrics_address = \"224.0.0.1:9470\"",
            "root",
            "f.toml:2:19: metrics_address: \"224.0.0.1:9470\": cannot listen on a multicast or \
             broadcast address; give a local address, for example \"127.0.0.1:9470\" or \"[::1]:9470\"",
        ),
    ];
    for (line, place, want) in cases {
        // Line 1: interface; line 2: the root key or blank; line 3:
        // [imbalance], line 4 its key; VIP 0 is lines 5-17, VIP 1 18-30,
        // then its [vip.imbalance] header (31) and key (32).
        let (root, top, own) = match *place {
            "root" => (*line, "", ""),
            "top" => ("", *line, ""),
            "vip" => ("", "", *line),
            _ => unreachable!(),
        };
        let text = format!(
            "{HEAD}{root}\n[imbalance]\n{top}\n{}{}[vip.imbalance]\n{own}\n",
            vip("web", 0),
            vip("dns", 1)
        );
        let got = problems(&text);
        assert_eq!(got, [*want], "{line}");
    }
}

#[test]
fn misplaced_settings_get_a_hint() {
    let web = vip("web", 0);
    let cases = [
        (
            // A backend has no thresholds: [vip.backend.imbalance].
            format!("{HEAD}{web}[vip.backend.imbalance]\nmax_ratio = 2\n"),
            "f.toml:15:14: vip[0].backend[1].imbalance: unknown field \"imbalance\", expected one \
             of: name, address, mac, weight, state, capacity (\"imbalance\" is a VIP setting, not \
             a backend's: write the section as [vip.imbalance], before or after the backends)",
        ),
        (
            // A threshold written straight under [[vip]].
            format!(
                "{HEAD}[[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\nport = 80\n\
                 protocol = \"tcp\"\nhold = \"5s\"\n"
            ),
            "f.toml:7:1: vip[0].hold: unknown field \"hold\", expected one of: name, address, \
             port, protocol, table_size, backend, imbalance, safety, forwarding, hash, unhandled, announce, health (\"hold\" \
             is an imbalance \
             threshold: put it in a [vip.imbalance] section (this VIP's own))",
        ),
        (
            // ... or at the top level.
            format!("{HEAD}max_cv = 1\n"),
            "f.toml:2:1: max_cv: unknown field \"max_cv\", expected one of: interface, \
             hash_seed, vip, metrics_address, imbalance, safety, conn_table_size, icmp_echo, \
             unhandled, announce, tunnel, health (\"max_cv\" is an imbalance threshold: put it in an [imbalance] section \
             (defaults for every VIP))",
        ),
        (
            // A top-level key after the [imbalance] header belongs to it.
            format!("[imbalance]\nmax_cv = 1\n{HEAD}metrics_address = \"127.0.0.1:1\"\n"),
            "f.toml:3:1: imbalance.interface: unknown field \"interface\", expected one of: \
             max_ratio, max_cv, min_new_flow_rate, min_packet_rate, hold, window (\"interface\" \
             is a top-level key: move it above the [imbalance] header)",
        ),
        (
            // A VIP key after the [vip.imbalance] header belongs to it.
            format!(
                "{HEAD}[[vip]]\nname = \"web\"\n[vip.imbalance]\nhold = \"1s\"\n\
                 address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n"
            ),
            "f.toml:6:1: vip[0].imbalance.address: unknown field \"address\", expected one of: \
             max_ratio, max_cv, min_new_flow_rate, min_packet_rate, hold, window (\"address\" \
             is a VIP key: move it above the VIP's [vip.imbalance] header)",
        ),
        (
            // [imbalance] under a VIP would silently set every VIP's defaults.
            format!("{HEAD}{web}[imbalance]\nmax_ratio = 2\n"),
            "f.toml:15:1: imbalance: the [imbalance] section sets the defaults of every VIP, but \
             it is written below the first [[vip]] (line 2): move it above the first [[vip]], \
             or, for one VIP's own thresholds, write [vip.imbalance] under that VIP",
        ),
        (
            // [vip.imbalance] before any [[vip]].
            format!("{HEAD}[vip.imbalance]\nmax_ratio = 2\n"),
            "f.toml:2:2: vip: a [vip.imbalance] section belongs to the [[vip]] above it, and \
             there is none; for the defaults of every VIP write [imbalance]",
        ),
        (
            format!("{HEAD}imbalance = 2\n"),
            "f.toml:2:13: imbalance: expected a table (write it as an [imbalance] section), found \
             an integer (2)",
        ),
    ];
    for (text, want) in cases {
        let got = problems(&text);
        assert!(got.iter().any(|p| p == want), "{got:#?}\n--- in:\n{text}");
    }
}

#[test]
fn all_problems_of_a_file_are_reported_together() {
    let text = format!(
        "{HEAD}metrics_address = \"127.0.0.1\"\n[imbalance]\nmax_ratio = 1\nhold = \"10\"\n\
         {}[vip.imbalance]\nwindow = \"1s\"\nmax_ration = 2\n{}[vip.imbalance]\nmax_cv = 0\n",
        vip("web", 0),
        vip("dns", 1)
    );
    let fields: Vec<String> = match parse(&text, "f.toml") {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.problems().iter().map(|p| p.field.clone()).collect(),
    };
    assert_eq!(
        fields,
        [
            "metrics_address",
            "imbalance.max_ratio",
            "imbalance.hold",
            "vip[0].imbalance.window",
            "vip[0].imbalance.max_ration",
            "vip[1].imbalance.max_cv",
        ]
    );
}

/// The commented-out `[imbalance]` block of the shipped example shows the
/// built-in defaults: uncommented, it changes nothing.
#[test]
fn example_imbalance_block_shows_the_defaults() {
    let example = include_str!("../../../examples/xlb.toml");
    let start = example
        .find("# [imbalance]\n")
        .expect("example has an [imbalance] block");
    let end = start
        + example[start..]
            .find("\n\n")
            .expect("the block ends with a blank line");
    let block: String = example[start..end]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    for key in [
        "max_ratio",
        "max_cv",
        "min_new_flow_rate",
        "min_packet_rate",
        "hold",
        "window",
    ] {
        assert!(
            block.lines().any(|l| l.starts_with(&format!("{key} = "))),
            "{key} missing in:\n{block}"
        );
    }
    let text = format!("{}{block}{}", &example[..start], &example[end..]);
    let config = ok(&text);
    assert_eq!(config.vips.len(), 3);
    for v in &config.vips {
        assert_eq!(v.imbalance, Thresholds::default(), "{}", v.name);
    }
    assert_eq!(ok(example).metrics_address, DEFAULT_METRICS_ADDRESS);
}

// ---- [safety], [vip.safety] and a backend's capacity ----

#[test]
fn safety_and_capacity_defaults() {
    let config = ok(&format!("{HEAD}{}{}", vip("web", 0), vip("dns", 1)));
    for v in &config.vips {
        assert_eq!(v.safety, Safety::default(), "{}", v.name);
        for b in &v.backends {
            assert_eq!(b.capacity, f64::from(b.weight), "{}/{}", v.name, b.name);
        }
    }
    let builtin = Safety::default();
    assert_eq!(
        (
            builtin.max_share_growth,
            builtin.max_capacity_ratio,
            builtin.max_flows_moved,
            builtin.max_capacity_removed
        ),
        (1.5, 1.5, 0.3, 0.5)
    );
    // An empty table is the defaults too.
    let config = ok(&format!("{HEAD}[safety]\n{}[vip.safety]\n", vip("web", 0)));
    assert_eq!(config.vips[0].safety, Safety::default());
}

#[test]
fn capacity_defaults_to_the_weight_and_may_differ_from_it() {
    let text = format!(
        "{HEAD}[[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n\
         [[vip.backend]]\nname = \"a\"\naddress = \"10.1.0.1\"\nmac = \"02:00:00:00:00:01\"\n\
         weight = 7\n\
         [[vip.backend]]\nname = \"b\"\naddress = \"10.1.0.2\"\nmac = \"02:00:00:00:00:02\"\n\
         weight = 3\ncapacity = 0.25\n\
         [[vip.backend]]\nname = \"c\"\naddress = \"10.1.0.3\"\nmac = \"02:00:00:00:00:03\"\n\
         capacity = 1e6\n"
    );
    let config = ok(&text);
    let got: Vec<(u32, f64)> = config.vips[0]
        .backends
        .iter()
        .map(|b| (b.weight, b.capacity))
        .collect();
    assert_eq!(got, [(7, 7.0), (3, 0.25), (1, 1e6)]);
    // It is in the JSON form too.
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["vips"][0]["backends"][1]["capacity"], 0.25);
    assert_eq!(json["vips"][0]["safety"]["max_flows_moved"], 0.3);
}

#[test]
fn safety_defaults_are_inherited_and_overridden_key_by_key() {
    let text = format!(
        "{HEAD}[safety]\nmax_share_growth = 2\nmax_flows_moved = 0.5\n\
         {}[vip.safety]\nmax_flows_moved = 1\nmax_capacity_ratio = 3\n\
         {}[vip.safety]\nmax_capacity_removed = 0.25\n\
         {}",
        vip("web", 0),
        vip("dns", 1),
        vip("plain", 2)
    );
    let config = ok(&text);
    let builtin = Safety::default();
    assert_eq!(
        config.vips[0].safety,
        Safety {
            max_share_growth: 2.0,
            max_flows_moved: 1.0,
            max_capacity_ratio: 3.0,
            ..builtin.clone()
        }
    );
    assert_eq!(
        config.vips[1].safety,
        Safety {
            max_share_growth: 2.0,
            max_flows_moved: 0.5,
            max_capacity_removed: 0.25,
            ..builtin.clone()
        }
    );
    assert_eq!(
        config.vips[2].safety,
        Safety {
            max_share_growth: 2.0,
            max_flows_moved: 0.5,
            ..builtin.clone()
        }
    );
    // Imbalance thresholds are untouched by [safety], and the other way round.
    assert!(
        config
            .vips
            .iter()
            .all(|v| v.imbalance == Thresholds::default())
    );

    // Without a top-level table, a VIP's keys override the built-in values.
    let config = ok(&format!(
        "{HEAD}[imbalance]\nmax_ratio = 2\n{}[vip.safety]\nmax_share_growth = 1.01\n",
        vip("web", 0)
    ));
    assert_eq!(
        config.vips[0].safety,
        Safety {
            max_share_growth: 1.01,
            ..builtin
        }
    );
    assert_eq!(config.vips[0].imbalance.max_ratio, 2.0);
}

#[test]
fn vip_safety_before_or_after_the_backends() {
    let want = Safety {
        max_flows_moved: 0.9,
        max_capacity_removed: 1.0,
        ..Safety::default()
    };
    let vip_keys =
        "[[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n";
    let table = "[vip.safety]\nmax_flows_moved = 0.9\nmax_capacity_removed = 1\n";
    let backends = "[[vip.backend]]\nname = \"a\"\naddress = \"10.1.0.1\"\nmac = \"02:00:00:00:00:01\"\n\
                    [[vip.backend]]\nname = \"b\"\naddress = \"10.1.0.2\"\nmac = \"02:00:00:00:00:02\"\n";
    let next = vip("dns", 1);
    for (order, text) in [
        ("before", format!("{HEAD}{vip_keys}{table}{backends}{next}")),
        ("after", format!("{HEAD}{vip_keys}{backends}{table}{next}")),
        (
            "inline",
            format!(
                "{HEAD}{vip_keys}safety = {{ max_flows_moved = 0.9, max_capacity_removed = 1 }}\n\
                 {backends}{next}"
            ),
        ),
        (
            "dotted",
            format!(
                "{HEAD}{vip_keys}safety.max_flows_moved = 0.9\nsafety.max_capacity_removed = 1\n\
                 {backends}{next}"
            ),
        ),
    ] {
        let config = ok(&text);
        assert_eq!(config.vips.len(), 2, "{order}");
        assert_eq!(config.vips[0].backends.len(), 2, "{order}");
        assert_eq!(config.vips[0].safety, want, "{order}");
        assert_eq!(config.vips[1].safety, Safety::default(), "{order}");
    }
}

#[test]
fn accepted_safety_values() {
    for (key, value, get, want) in [
        (
            "max_share_growth",
            "1.01",
            growth as fn(&Safety) -> f64,
            1.01,
        ),
        ("max_share_growth", "1000", growth, 1000.0),
        ("max_capacity_ratio", "2", capacity_ratio, 2.0),
        ("max_flows_moved", "1", moved, 1.0),
        ("max_flows_moved", "0.001", moved, 0.001),
        ("max_capacity_removed", "1", removed, 1.0),
        ("max_capacity_removed", "0.1", removed, 0.1),
    ] {
        let config = ok(&format!("{HEAD}[safety]\n{key} = {value}\n{}", vip("v", 0)));
        assert_eq!(get(&config.vips[0].safety), want, "{key} = {value}");
    }
}

fn growth(s: &Safety) -> f64 {
    s.max_share_growth
}
fn capacity_ratio(s: &Safety) -> f64 {
    s.max_capacity_ratio
}
fn moved(s: &Safety) -> f64 {
    s.max_flows_moved
}
fn removed(s: &Safety) -> f64 {
    s.max_capacity_removed
}

/// Each bad safety value, alone in a file: exactly one problem, located.
#[test]
fn every_bad_safety_value_is_one_located_problem() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "max_share_growth = 1",
            "top",
            "f.toml:4:20: safety.max_share_growth: must be a finite number greater than 1 \
             (default 1.5), got 1",
        ),
        (
            "max_share_growth = inf",
            "vip",
            "f.toml:32:20: vip[1].safety.max_share_growth: must be a finite number greater than \
             1 (default 1.5), got inf",
        ),
        (
            "max_capacity_ratio = 0.5",
            "vip",
            "f.toml:32:22: vip[1].safety.max_capacity_ratio: must be a finite number greater \
             than 1 (default 1.5), got 0.5",
        ),
        (
            "max_capacity_ratio = nan",
            "top",
            "f.toml:4:22: safety.max_capacity_ratio: must be a finite number greater than 1 \
             (default 1.5), got NaN",
        ),
        (
            "max_flows_moved = 0",
            "top",
            "f.toml:4:19: safety.max_flows_moved: must be a fraction greater than 0 and at most \
             1 (default 0.3), got 0",
        ),
        (
            "max_flows_moved = 30",
            "vip",
            "f.toml:32:19: vip[1].safety.max_flows_moved: must be a fraction greater than 0 and \
             at most 1 (default 0.3), got 30",
        ),
        (
            "max_capacity_removed = -0.5",
            "top",
            "f.toml:4:24: safety.max_capacity_removed: must be a fraction greater than 0 and at \
             most 1 (default 0.5), got -0.5",
        ),
        (
            "max_capacity_removed = \"50%\"",
            "vip",
            "f.toml:32:24: vip[1].safety.max_capacity_removed: expected a number, found a string \
             (\"50%\")",
        ),
        (
            "max_flows_moved = \"0.3\"",
            "top",
            "f.toml:4:19: safety.max_flows_moved: expected a number, found a string (\"0.3\"); \
             write max_flows_moved = 0.3 without quotes",
        ),
        (
            "max_flow_moved = 0.3",
            "top",
            "f.toml:4:1: safety.max_flow_moved: unknown field \"max_flow_moved\", expected one \
             of: max_share_growth, max_capacity_ratio, max_flows_moved, max_capacity_removed \
             (did you mean \"max_flows_moved\"?)",
        ),
        (
            "max_ratio = 2",
            "vip",
            "f.toml:32:1: vip[1].safety.max_ratio: unknown field \"max_ratio\", expected one of: \
             max_share_growth, max_capacity_ratio, max_flows_moved, max_capacity_removed \
             (\"max_ratio\" is an imbalance threshold: put it in a [vip.imbalance] section)",
        ),
        (
            "hold = \"5s\"",
            "top",
            "f.toml:4:1: safety.hold: unknown field \"hold\", expected one of: max_share_growth, \
             max_capacity_ratio, max_flows_moved, max_capacity_removed (\"hold\" is an imbalance \
             threshold: put it in an [imbalance] section)",
        ),
        (
            "max_flows_moved = 0.5",
            "root",
            "f.toml:2:1: max_flows_moved: unknown field \"max_flows_moved\", expected one of: \
             interface, hash_seed, vip, metrics_address, imbalance, safety, conn_table_size, \
             icmp_echo, unhandled, announce, tunnel, health (\"max_flows_moved\" \
             is a safety limit: put it in a [safety] section (defaults for every VIP))",
        ),
    ];
    for (line, place, want) in cases {
        // As in `every_bad_value_is_one_located_problem`: line 3 is
        // [safety], line 4 its key, line 31 the second VIP's [vip.safety]
        // and line 32 its key.
        let (root, top, own) = match *place {
            "root" => (*line, "", ""),
            "top" => ("", *line, ""),
            "vip" => ("", "", *line),
            _ => unreachable!(),
        };
        let text = format!(
            "{HEAD}{root}\n[safety]\n{top}\n{}{}[vip.safety]\n{own}\n",
            vip("web", 0),
            vip("dns", 1)
        );
        let got = problems(&text);
        assert_eq!(got, [*want], "{line}");
    }
}

/// A bad capacity, on the second backend of the only VIP (line 15).
#[test]
fn every_bad_capacity_is_one_located_problem() {
    for (value, want) in [
        (
            "0",
            "f.toml:15:12: vip[0].backend[1].capacity: must be a number greater than 0 and at \
             most 1000000 (default: the backend's weight), got 0",
        ),
        (
            "-2",
            "f.toml:15:12: vip[0].backend[1].capacity: must be a number greater than 0 and at \
             most 1000000 (default: the backend's weight), got -2",
        ),
        (
            "1e7",
            "f.toml:15:12: vip[0].backend[1].capacity: must be a number greater than 0 and at \
             most 1000000 (default: the backend's weight), got 10000000",
        ),
        (
            "nan",
            "f.toml:15:12: vip[0].backend[1].capacity: must be a number greater than 0 and at \
             most 1000000 (default: the backend's weight), got NaN",
        ),
        (
            "\"10\"",
            "f.toml:15:12: vip[0].backend[1].capacity: expected a number, found a string \
             (\"10\"); write capacity = 10 without quotes",
        ),
    ] {
        let text = format!("{HEAD}{}capacity = {value}\n", vip("web", 0));
        assert_eq!(problems(&text), [want], "capacity = {value}");
    }
    // A typo of the key gets a suggestion.
    let text = format!("{HEAD}{}capacty = 2\n", vip("web", 0));
    assert_eq!(
        problems(&text),
        [
            "f.toml:15:1: vip[0].backend[1].capacty: unknown field \"capacty\", expected one of: \
          name, address, mac, weight, state, capacity (did you mean \"capacity\"?)"
        ]
    );
    // A bad weight and a bad capacity of one backend are both reported.
    let text = format!("{HEAD}{}weight = 0\ncapacity = 0\n", vip("web", 0));
    let got = problems(&text);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].starts_with("f.toml:15:10: vip[0].backend[1].weight: "));
    assert!(got[1].starts_with("f.toml:16:12: vip[0].backend[1].capacity: "));
}

#[test]
fn misplaced_safety_settings_get_a_hint() {
    let web = vip("web", 0);
    let cases = [
        (
            format!("{HEAD}{web}[vip.backend.safety]\nmax_flows_moved = 0.5\n"),
            "f.toml:15:14: vip[0].backend[1].safety: unknown field \"safety\", expected one of: \
             name, address, mac, weight, state, capacity (\"safety\" is a VIP setting, not a \
             backend's: write the section as [vip.safety], before or after the backends)",
        ),
        (
            format!("{HEAD}{web}max_share_growth = 2\n"),
            "f.toml:15:1: vip[0].backend[1].max_share_growth: unknown field \
             \"max_share_growth\", expected one of: name, address, mac, weight, state, capacity \
             (\"max_share_growth\" is a safety limit: put it in a [vip.safety] section (this \
             VIP's own))",
        ),
        (
            format!(
                "{HEAD}[[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\nport = 80\n\
                 protocol = \"tcp\"\nmax_flows_moved = 1\n"
            ),
            "f.toml:7:1: vip[0].max_flows_moved: unknown field \"max_flows_moved\", expected one \
             of: name, address, port, protocol, table_size, backend, imbalance, safety, \
             forwarding, hash, unhandled, announce, health (\"max_flows_moved\" is a safety limit: put it in a [vip.safety] section (this \
             VIP's own))",
        ),
        (
            format!("[safety]\nmax_flows_moved = 1\n{HEAD}"),
            "f.toml:3:1: safety.interface: unknown field \"interface\", expected one of: \
             max_share_growth, max_capacity_ratio, max_flows_moved, max_capacity_removed \
             (\"interface\" is a top-level key: move it above the [safety] header)",
        ),
        (
            format!(
                "{HEAD}[[vip]]\nname = \"web\"\n[vip.safety]\nmax_flows_moved = 1\n\
                 address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n"
            ),
            "f.toml:6:1: vip[0].safety.address: unknown field \"address\", expected one of: \
             max_share_growth, max_capacity_ratio, max_flows_moved, max_capacity_removed \
             (\"address\" is a VIP key: move it above the VIP's [vip.safety] header)",
        ),
        (
            format!("{HEAD}[imbalance]\nmax_flows_moved = 1\n"),
            "f.toml:3:1: imbalance.max_flows_moved: unknown field \"max_flows_moved\", expected \
             one of: max_ratio, max_cv, min_new_flow_rate, min_packet_rate, hold, window \
             (\"max_flows_moved\" is a safety limit: put it in a [safety] section)",
        ),
        (
            format!("{HEAD}{web}[safety]\nmax_flows_moved = 1\n"),
            "f.toml:15:1: safety: the [safety] section sets the defaults of every VIP, but it is \
             written below the first [[vip]] (line 2): move it above the first [[vip]], or, for \
             one VIP's own limits, write [vip.safety] under that VIP",
        ),
        (
            format!("{HEAD}[vip.safety]\nmax_flows_moved = 1\n"),
            "f.toml:2:2: vip: a [vip.safety] section belongs to the [[vip]] above it, and there \
             is none; for the defaults of every VIP write [safety]",
        ),
        (
            format!("{HEAD}safety = 0.5\n"),
            "f.toml:2:10: safety: expected a table (write it as a [safety] section), found a \
             float (0.5)",
        ),
    ];
    for (text, want) in cases {
        let got = problems(&text);
        assert!(got.iter().any(|p| p == want), "{got:#?}\n--- in:\n{text}");
    }
}

/// The commented-out `[safety]` block of the shipped example shows the
/// built-in defaults: uncommented, it changes nothing.
#[test]
fn example_safety_block_shows_the_defaults() {
    let example = include_str!("../../../examples/xlb.toml");
    let start = example
        .find("# [safety]\n")
        .expect("example has a [safety] block");
    let end = start
        + example[start..]
            .find("\n\n")
            .expect("the block ends with a blank line");
    let block: String = example[start..end]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    for key in [
        "max_share_growth",
        "max_capacity_ratio",
        "max_flows_moved",
        "max_capacity_removed",
    ] {
        assert!(
            block.lines().any(|l| l.starts_with(&format!("{key} = "))),
            "{key} missing in:\n{block}"
        );
    }
    let text = format!("{}{block}{}", &example[..start], &example[end..]);
    let config = ok(&text);
    assert_eq!(config, ok(example));
    for v in &config.vips {
        assert_eq!(v.safety, Safety::default(), "{}", v.name);
    }
    // The example shows `capacity` on one backend, equal to its weight.
    assert!(example.contains("\n  capacity = 1\n"));
    for v in &config.vips {
        for b in &v.backends {
            assert_eq!(b.capacity, f64::from(b.weight), "{}/{}", v.name, b.name);
        }
    }
}
