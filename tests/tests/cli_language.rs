//! The CLI speaks one language (issue 19): warnings for configs that work
//! but are likely mistakes (exit 0, on stderr, in `-o json`). No privileges
//! needed: `xlb validate` works offline.

use std::process::Command;

use tests::xlbd::{describe, xlb_binary};

fn fixture(name: &str) -> String {
    format!(
        "{}/../lb-core/tests/warn_configs/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn validate_warns_on_stderr_and_in_json_and_exits_0() {
    let file = fixture("same_mac.toml");
    let out = Command::new(xlb_binary().unwrap())
        .args(["validate", &file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "xlb: warning: {file}: vip[web].backend[b2].mac: 02:00:00:00:00:11 is also b1's"
        )),
        "{stderr}"
    );
    let out = Command::new(xlb_binary().unwrap())
        .args(["-o", "json", "validate", &file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["warnings"][0]["field"], "vip[web].backend[b2].mac",
        "{doc}"
    );
    // An offline plan carries them too.
    let out = Command::new(xlb_binary().unwrap())
        .args([
            "-o",
            "json",
            "plan",
            &file,
            "--base",
            &fixture("no_backends.toml"),
        ])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["warnings"][0]["field"], "vip[web].backend[b2].mac",
        "{plan}"
    );
}

/// `-o json` errors are a JSON document on stdout too, with the exit code.
#[test]
fn json_errors_are_json_on_stdout() {
    let out = Command::new(xlb_binary().unwrap())
        .args(["-o", "json", "validate", "/nonexistent/xlb.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["exit_code"], 2, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("/nonexistent/xlb.toml: "),
        "{doc}"
    );
}

/// `xlb detach --bpffs DIR` checks that DIR is a bpffs (exit 2, before
/// anything is touched).
#[test]
fn detach_refuses_a_bpffs_that_is_not_one() {
    let dir = std::env::temp_dir();
    let out = Command::new(xlb_binary().unwrap())
        .args([
            "--socket",
            "/nonexistent/xlb.sock",
            "detach",
            "--interface",
            "xlbnone0",
        ])
        .arg("--bpffs")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a bpffs mount"),
        "{}",
        describe(&out)
    );
}
