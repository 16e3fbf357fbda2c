//! Config files on disk: the shipped example loads, and every file under
//! `tests/bad_configs/` is rejected with exactly the problems its
//! `# expect: ` comments list (one problem each, `:line:column: field: reason`
//! or a leading part of it), in that order, and the file named in each line.

use std::path::{Path, PathBuf};

use xlb_core::config::{
    BackendState, ConfigError, Forwarding, HashMode, IcmpEcho, Protocol, Tunnel, load, parse,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bad_configs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn example_config_loads() {
    let path = repo_root().join("examples/xlb.toml");
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.interface, "eth0");
    assert_eq!(config.hash_seed, 1);
    assert_eq!(config.conn_table_size, lb_common::maps::CONN_TABLE_SIZE);
    assert_eq!(config.icmp_echo, IcmpEcho::Reply);
    // [tunnel] is shown commented out: the demo forwards with L2 DSR.
    assert_eq!(config.tunnel, Tunnel::default());
    let summary: Vec<(String, String, usize)> = config
        .vips
        .iter()
        .map(|v| (v.name.clone(), v.endpoint(), v.backends.len()))
        .collect();
    assert_eq!(
        summary,
        [
            ("web".into(), "198.18.100.1:8080/tcp".into(), 3),
            ("dns".into(), "198.18.100.1:8053/udp".into(), 3),
            ("web6".into(), "[2001:db8:100::1]:8080/tcp".into(), 3),
        ]
    );
    for vip in &config.vips {
        assert_eq!(vip.table_size, lb_common::maps::DEFAULT_TABLE_SIZE);
        assert_eq!(
            (vip.forwarding, vip.hash),
            (Forwarding::Dsr, HashMode::FiveTuple)
        );
        let backends: Vec<(&str, String, String, u32, BackendState)> = vip
            .backends
            .iter()
            .map(|b| {
                (
                    b.name.as_str(),
                    b.address.to_string(),
                    b.mac.to_string(),
                    b.weight,
                    b.state,
                )
            })
            .collect();
        let v6 = vip.address.is_ipv6();
        let addr = |n: u8| {
            if v6 {
                format!("2001:db8::{n}")
            } else {
                format!("198.18.0.{n}")
            }
        };
        assert_eq!(
            backends,
            [
                (
                    "b1",
                    addr(11),
                    "02:00:00:00:00:11".into(),
                    1,
                    BackendState::Active
                ),
                (
                    "b2",
                    addr(12),
                    "02:00:00:00:00:12".into(),
                    1,
                    BackendState::Active
                ),
                (
                    "b3",
                    addr(13),
                    "02:00:00:00:00:13".into(),
                    2,
                    BackendState::Active
                ),
            ],
            "{}",
            vip.name
        );
    }
    assert_eq!(config.vips[1].protocol, Protocol::Udp);
}

#[test]
fn bad_configs_are_rejected_with_the_expected_problems() {
    let files = bad_configs();
    assert!(files.len() >= 64, "only {} bad configs", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(!expected.is_empty(), "{file}: no `# expect: ` line");
        let err = match load(path) {
            Ok(config) => {
                failures.push(format!("{file}: accepted: {config:?}"));
                continue;
            }
            Err(e) => e,
        };
        let ConfigError::Invalid {
            file: named,
            problems,
        } = &err
        else {
            failures.push(format!("{file}: not an Invalid error: {err}"));
            continue;
        };
        assert_eq!(named, &file);
        let rendered = err.to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        let ok = lines.len() == expected.len()
            && problems.len() == expected.len()
            && lines
                .iter()
                .zip(&expected)
                .all(|(line, want)| line.starts_with(&format!("{file}{want}")));
        if !ok {
            failures.push(format!(
                "{file}:\n  expected:\n    {}\n  got:\n    {}",
                expected.join("\n    "),
                lines.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn error_names_the_file_field_and_position() {
    let text = "interface = \"eth0\"\n\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 65536\n";
    let err = parse(text, "/etc/xlb/xlb.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/xlb/xlb.toml:8:14: vip[0].table_size: must be a prime number (65536 is not; 65537 is)"
    );
    assert_eq!(err.file(), "/etc/xlb/xlb.toml");
    let p = &err.problems()[0];
    assert_eq!(
        (p.line, p.column, p.field.as_str()),
        (8, 14, "vip[0].table_size")
    );
}

#[test]
fn unreadable_file_is_a_read_error() {
    let err = load(Path::new("/nonexistent/xlb.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("/nonexistent/xlb.toml: cannot read: "),
        "{message}"
    );
    assert!(err.problems().is_empty());
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = "interface = \"a/b\"\nhash_seed = 4294967296\n";
    let err = parse(text, "x.toml").unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["interface", "hash_seed"]);
}

#[test]
fn validated_config_round_trips_through_json() {
    // The JSON form is what `xlb validate -o json` and the API show.
    let config = load(&repo_root().join("examples/xlb.toml")).unwrap();
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["vips"][0]["backends"][2]["mac"], "02:00:00:00:00:13");
    assert_eq!(json["vips"][1]["protocol"], "udp");
    assert_eq!(json["vips"][0]["backends"][0]["state"], "active");
}

/// Every file under `tests/warn_configs/` loads, with exactly the warnings
/// its `# warn: ` comments list; the shipped example has none.
#[test]
fn warn_configs_load_with_the_expected_warnings() {
    use xlb_core::config::warnings::warnings;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/warn_configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "the warning fixtures in {}",
        dir.display()
    );
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let want: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# warn: "))
            .collect();
        let config = load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got: Vec<String> = warnings(&config).iter().map(ToString::to_string).collect();
        assert_eq!(got, want, "{}", path.display());
    }
    let example = load(&repo_root().join("examples/xlb.toml")).unwrap();
    assert_eq!(warnings(&example), []);
}
