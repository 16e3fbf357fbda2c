//! The config edits of `xlb drain`/`undrain`/`weight`: exact output text
//! (comments, order and spacing kept), every refusal, and on the example
//! config that an edit changes exactly one thing of the validated config.

use super::*;
use crate::config::{self, BackendState, Config};

/// Two VIPs, comments everywhere, indented backends, an inline-table VIP.
const TEXT: &str = r#"# the edge
interface = "eth0"
hash_seed = 7

[[vip]]
name = "web"   # the site
address = "198.18.100.1"
port = 80
protocol = "tcp"

  # first
  [[vip.backend]]
  name = "b1"
  address = "198.18.0.11"
  mac = "02:00:00:00:00:11"
  weight = 2     # twice b2

  [[vip.backend]]
  name = "b2"
  address = "198.18.0.12"
  mac = "02:00:00:00:00:12"
  state = "draining"   # rack swap

# second VIP
[[vip]]
name = "dns"
address = "198.18.100.1"
port = 53
protocol = "udp"
backend = [
  { name = "d1", address = "198.18.0.21", mac = "02:00:00:00:00:21" },
  { name = "d2", address = "198.18.0.22", mac = "02:00:00:00:00:22", weight = 3 },
]
"#;

fn edit(vip: &str, backend: &str, change: Change) -> Edit {
    Edit {
        vip: vip.into(),
        backend: backend.into(),
        change,
    }
}

fn run(vip: &str, backend: &str, change: Change) -> Result<String, EditError> {
    edit_config(TEXT, 4, &edit(vip, backend, change))
}

/// `TEXT` with `from` (once) replaced by `to`.
fn with(from: &str, to: &str) -> String {
    assert_eq!(TEXT.matches(from).count(), 1, "{from:?}");
    TEXT.replacen(from, to, 1)
}

#[test]
fn the_fixture_is_a_valid_config() {
    config::parse(TEXT, "t.toml").expect("valid");
}

#[test]
fn drain_adds_the_state_as_the_backends_last_key_indented_like_it() {
    assert_eq!(
        run("web", "b1", Change::Drain).unwrap(),
        with(
            "  weight = 2     # twice b2\n",
            "  weight = 2     # twice b2\n  state = \"draining\"\n"
        )
    );
}

#[test]
fn undrain_rewrites_the_value_in_place_keeping_its_comment() {
    assert_eq!(
        run("web", "b2", Change::Undrain).unwrap(),
        with(
            "state = \"draining\"   # rack swap",
            "state = \"active\"   # rack swap"
        )
    );
}

#[test]
fn weight_rewrites_the_value_in_place_or_adds_it() {
    assert_eq!(
        run("web", "b1", Change::Weight { weight: 5 }).unwrap(),
        with("weight = 2     # twice b2", "weight = 5     # twice b2")
    );
    assert_eq!(
        run("web", "b2", Change::Weight { weight: 4 }).unwrap(),
        with(
            "  state = \"draining\"   # rack swap\n",
            "  state = \"draining\"   # rack swap\n  weight = 4\n"
        )
    );
}

#[test]
fn inline_table_backends_are_edited_in_their_line() {
    assert_eq!(
        run("dns", "d1", Change::Drain).unwrap(),
        with(
            "mac = \"02:00:00:00:00:21\" }",
            "mac = \"02:00:00:00:00:21\", state = \"draining\" }"
        )
    );
    assert_eq!(
        run("dns", "d2", Change::Weight { weight: 1 }).unwrap(),
        with("weight = 3 }", "weight = 1 }")
    );
}

#[test]
fn unknown_names_are_refused_naming_what_there_is() {
    let e = run("wbe", "b1", Change::Drain).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown VIP \"wbe\": the live config has \"web\", \"dns\""
    );
    let e = run("web", "b9", Change::Drain).unwrap_err();
    assert_eq!(
        e.to_string(),
        "VIP web: unknown backend \"b9\": it has \"b1\", \"b2\""
    );
    // A backend of another VIP is not this VIP's.
    assert!(matches!(
        run("web", "d1", Change::Drain),
        Err(EditError::UnknownBackend { .. })
    ));
    let empty = "interface = \"eth0\"\n";
    let e = edit_config(empty, 1, &edit("web", "b1", Change::Drain)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown VIP \"web\": the live config has no VIPs"
    );
    let no_backends = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n";
    config::parse(no_backends, "t.toml").expect("valid");
    let e = edit_config(no_backends, 1, &edit("web", "b1", Change::Drain)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "VIP web: unknown backend \"b1\": it has no backends"
    );
}

#[test]
fn edits_that_change_nothing_or_do_not_apply_are_refused() {
    assert_eq!(
        run("web", "b2", Change::Drain),
        Err(EditError::AlreadyDraining {
            vip: "web".into(),
            backend: "b2".into()
        })
    );
    // b1 has no state key: active by default.
    let e = run("web", "b1", Change::Undrain).unwrap_err();
    assert_eq!(
        e.to_string(),
        "VIP web: backend b1 is not draining (its state is \"active\")"
    );
    assert_eq!(
        run("web", "b1", Change::Weight { weight: 2 }),
        Err(EditError::SameWeight {
            vip: "web".into(),
            backend: "b1".into(),
            weight: 2
        })
    );
    // d1 has no weight key: 1 by default.
    assert!(matches!(
        run("dns", "d1", Change::Weight { weight: 1 }),
        Err(EditError::SameWeight { weight: 1, .. })
    ));
    let disabled = with("state = \"draining\"", "state = \"disabled\"");
    let e = edit_config(&disabled, 1, &edit("web", "b2", Change::Drain)).unwrap_err();
    assert!(matches!(e, EditError::DrainDisabled { .. }), "{e}");
    let e = edit_config(&disabled, 1, &edit("web", "b2", Change::Undrain)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "VIP web: backend b2 is not draining (its state is \"disabled\")"
    );
}

#[test]
fn weights_out_of_range_are_refused_before_anything_else() {
    for weight in [0, MAX_WEIGHT + 1, u32::MAX] {
        let e = run("nope", "b1", Change::Weight { weight }).unwrap_err();
        assert_eq!(
            e,
            EditError::WeightOutOfRange {
                weight,
                max: MAX_WEIGHT
            }
        );
        assert!(e.to_string().contains("1..=10000"), "{e}");
    }
    for weight in [1, MAX_WEIGHT] {
        let text = run("web", "b1", Change::Weight { weight }).unwrap();
        config::parse(&text, "t.toml").expect("a weight in range validates");
    }
}

#[test]
fn text_that_is_not_toml_is_named_with_its_revision() {
    let e = edit_config("[[vip]\n", 9, &edit("web", "b1", Change::Drain)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("the live config (revision 9) cannot be edited: "),
        "{e}"
    );
}

#[test]
fn commands_read_like_the_cli() {
    assert_eq!(edit("web", "b2", Change::Drain).command(), "drain web b2");
    assert_eq!(
        edit("web", "b2", Change::Undrain).command(),
        "undrain web b2"
    );
    assert_eq!(
        edit("web", "b2", Change::Weight { weight: 4 }).command(),
        "weight web b2 4"
    );
}

/// `config` with backend `backend` of VIP `vip` changed by `f`.
fn expect(config: &Config, vip: &str, backend: &str, f: impl Fn(&mut config::Backend)) -> Config {
    let mut c = config.clone();
    let v = c.vips_mut().find(|v| v.name == vip).unwrap();
    f(v.backends.iter_mut().find(|b| b.name == backend).unwrap());
    c
}

/// Lines of `after` that are not in `before` at the same place, and the
/// other way round (a line-based diff of texts that differ in one spot).
fn changed_lines(before: &str, after: &str) -> (Vec<String>, Vec<String>) {
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let strip = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    (
        strip(&a[head..a.len() - tail]),
        strip(&b[head..b.len() - tail]),
    )
}

/// Every backend of the example config drained, undrained and reweighted:
/// each time the validated config differs in that one field of that one
/// backend (the capacity follows a weight when it was not given), and the
/// text in one line.
#[test]
fn every_edit_of_the_example_config_changes_exactly_one_thing() {
    let text = include_str!("../../../examples/xlb.toml");
    let before = config::parse(text, "xlb.toml").expect("the example validates");
    let raw: toml::Table = text.parse().expect("TOML");
    let mut edits = 0;
    for vip in &before.vips {
        for b in &vip.backends {
            let mut changes = vec![Change::Weight {
                weight: b.weight % 7 + 1,
            }];
            match b.state {
                BackendState::Active => changes.push(Change::Drain),
                BackendState::Draining => changes.push(Change::Undrain),
                BackendState::Disabled => {}
            }
            for change in changes {
                let e = edit(&vip.name, &b.name, change.clone());
                let edited = edit_config(text, 1, &e).unwrap_or_else(|err| panic!("{e:?}: {err}"));
                let after = config::parse(&edited, "xlb.toml")
                    .unwrap_or_else(|err| panic!("{e:?} gives an invalid config: {err}"));
                let capacity_given = raw["vip"]
                    .as_array()
                    .and_then(|v| v.iter().find(|v| v["name"].as_str() == Some(&vip.name)))
                    .and_then(|v| v["backend"].as_array())
                    .and_then(|bs| bs.iter().find(|x| x["name"].as_str() == Some(&b.name)))
                    .is_some_and(|x| x.get("capacity").is_some());
                let wanted = expect(&before, &vip.name, &b.name, |x| match &change {
                    Change::Drain => x.state = BackendState::Draining,
                    Change::Undrain => x.state = BackendState::Active,
                    Change::Weight { weight } => {
                        x.weight = *weight;
                        if !capacity_given {
                            x.capacity = f64::from(*weight);
                        }
                    }
                });
                assert_eq!(after, wanted, "{e:?}");
                let (removed, added) = changed_lines(text, &edited);
                assert!(
                    removed.len() <= 1 && added.len() == 1,
                    "{e:?}: -{removed:?} +{added:?}"
                );
                let key = match change {
                    Change::Weight { weight } => format!("weight = {weight}"),
                    Change::Drain => "state = \"draining\"".into(),
                    Change::Undrain => "state = \"active\"".into(),
                };
                assert!(added[0].contains(&key), "{e:?}: {added:?}");
                edits += 1;
            }
        }
    }
    assert!(
        edits >= 10,
        "only {edits} edits: is the example config smaller?"
    );
}
