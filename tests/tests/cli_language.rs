//! The CLI speaks one language (issue 19): warnings for configs that work
//! but are likely mistakes (exit 0, on stderr, in `-o json`); config errors
//! that start with `file:line:col:` on every path; the plan's summary and
//! markers; history, show and diff read from a state directory without a
//! daemon; the grouped `--help`. No privileges needed: all of it works
//! offline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tests::xlbd::{describe, xlb_binary};
use xlb_core::revision::{Kind, Outcome, Revision};

/// `xlb ARGS`, its socket where no daemon listens.
fn xlb(args: &[&str]) -> Output {
    xlb_at("/nonexistent/xlb.sock", args)
}

/// `xlb --socket SOCKET ARGS`.
fn xlb_at(socket: &str, args: &[&str]) -> Output {
    Command::new(xlb_binary().unwrap())
        .args(["--socket", socket])
        .args(args)
        .output()
        .unwrap()
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xlb-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn example() -> String {
    format!("{}/../examples/xlb.toml", env!("CARGO_MANIFEST_DIR"))
}

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

/// Every config error, on every path a config enters by (validate, plan of
/// it, plan against it, apply, run --config), is bad input (exit 2) whose
/// lines each start with `file:line:col:`, so editors jump to them.
#[test]
fn config_errors_start_with_file_line_col_on_every_path() {
    let dir = TempDir::new("errors");
    let socket = dir.path("xlb.sock");
    let bad_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb-core/tests/bad_configs");
    let mut files: Vec<String> = std::fs::read_dir(&bad_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() > 50, "bad configs in {}", bad_dir.display());
    let good = example();
    let position = |line: &str, file: &str| {
        line.strip_prefix(file)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|rest| {
                let mut parts = rest.splitn(3, ':');
                let (l, c) = (parts.next()?, parts.next()?);
                let ok = l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok();
                (ok && parts.next()?.starts_with(' ')).then_some(())
            })
            .is_some()
    };
    for file in &files {
        let paths: [Vec<&str>; 5] = [
            vec!["validate", file],
            vec!["plan", file, "--base", &good],
            vec!["plan", &good, "--base", file],
            vec!["apply", file],
            vec!["run", "--config", file],
        ];
        for args in paths {
            // `run` checks its socket's directory before the config.
            let out = xlb_at(&socket, &args);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with("xlb: warning: "))
                .collect();
            assert!(!lines.is_empty(), "{args:?}: nothing said");
            for (i, line) in lines.iter().enumerate() {
                let line = if i == 0 {
                    line.strip_prefix("xlb: ")
                        .unwrap_or_else(|| panic!("{args:?}: {line}"))
                } else {
                    line
                };
                assert!(position(line, file), "{args:?}: not file:line:col: {line}");
            }
        }
    }
    // The JSON error document carries the same message.
    let out = xlb(&["-o", "json", "validate", &files[0]]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        position(doc["error"]["message"].as_str().unwrap(), &files[0]),
        "{doc}"
    );
}

/// The plan's summary line (whole plan, then each changed VIP), the `+ ~ -`
/// markers, and what `--force` does for `plan` said as it is.
#[test]
fn plan_summary_markers_and_what_force_does() {
    let dir = TempDir::new("plan");
    let base = example();
    let text = std::fs::read_to_string(&base).unwrap();
    // web's b3: weight 2 -> 20 (refused), and dns loses b3.
    let mut candidate = text.replacen("weight = 2", "weight = 20", 1);
    let dns = candidate.find("name = \"dns\"").unwrap();
    let b3 = dns
        + candidate[dns..]
            .find("[[vip.backend]]\n  name = \"b3\"")
            .unwrap();
    let end = b3
        + candidate[b3 + 1..]
            .find("[[vip")
            .map_or(candidate.len() - b3, |e| e + 1);
    candidate.replace_range(b3..end, "");
    let new = dir.path("new.toml");
    std::fs::write(&new, &candidate).unwrap();

    let out = xlb(&["plan", &new, "--base", &base]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("plan: 2 VIPs changed, 1 unchanged; refused by max_"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("  web: 1 backend changed; refused by max_"),
        "{stdout}"
    );
    assert!(lines[2].starts_with("  dns: 1 backend removed"), "{stdout}");
    assert_eq!(lines[3], "", "{stdout}");
    for marked in [
        "\n~ vip web: changed, ",
        "\n  ~ b3 ",
        "\n    b1 ",
        "\n  - b3 ",
        "\n  vip web6: unchanged\n",
    ] {
        assert!(stdout.contains(marked), "{marked:?} in {stdout}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "refused by the safety checks above (`xlb apply` refuses it too; `xlb apply --force` \
             applies it anyway, `xlb plan --force` only exits 0)"
        ),
        "{stderr}"
    );
    // --force: the same plan, exit 0.
    let forced = xlb(&["plan", &new, "--base", &base, "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", describe(&forced));
    assert_eq!(forced.stdout, out.stdout);
    // Without changes.
    let same = xlb(&["plan", &base, "--base", &base]);
    assert_eq!(same.status.code(), Some(0), "{}", describe(&same));
    assert!(
        String::from_utf8_lossy(&same.stdout)
            .starts_with("plan: no changes; every safety check passes\n"),
        "{}",
        describe(&same)
    );
}

/// A revision as the daemon records it.
fn revision(number: u64, config_text: &str) -> Revision {
    Revision {
        schema_version: xlb_core::revision::SCHEMA_VERSION,
        number,
        created_at_unix_seconds: 1_800_000_000.0 + number as f64,
        user: "alice".into(),
        message: Some(format!("change {number}")),
        config_file: "/etc/xlb/xlb.toml".into(),
        config_text: config_text.into(),
        config_hash: xlb_core::revision::text_hash(config_text),
        kind: Kind::Apply,
        plan: None,
        outcome: Outcome::Applied,
    }
}

/// `history`, `show` and `diff` with `--state-dir` read the store when no
/// daemon answers, and say so; without it, the daemon's absence is exit 4
/// naming --state-dir. `diff`'s plan is `xlb plan`'s, to the byte.
#[test]
fn history_show_and_diff_from_a_state_dir_without_a_daemon() {
    let dir = TempDir::new("store");
    let text = std::fs::read_to_string(example()).unwrap();
    let changed = text.replacen("weight = 2", "weight = 3", 1);
    {
        let mut store = xlb::store::Store::open(&dir.0.join("revisions"), 10).unwrap();
        store.record(&revision(1, &text)).unwrap();
        store.record(&revision(2, &changed)).unwrap();
    }
    let state = dir.0.display().to_string();

    let out = xlb(&["history", "--state-dir", &state]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().nth(1).unwrap().starts_with("1 "), "{stdout}");
    assert!(stdout.lines().nth(2).unwrap().starts_with("2 "), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "no daemon answers at /nonexistent/xlb.sock; read from the revision store in {state}"
        )),
        "{}",
        describe(&out)
    );
    let out = xlb(&["-o", "json", "history", "--state-dir", &state]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["revisions"][1]["number"], 2, "{doc}");

    let out = xlb(&["show", "2", "--config-text", "--state-dir", &state]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), changed);
    let out = xlb(&["show", "9", "--state-dir", &state]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no revision 9 in "));

    // Without --state-dir: the daemon is needed (exit 4), and the way
    // around it is named.
    for args in [vec!["history"], vec!["show", "1"], vec!["diff", "1", "2"]] {
        let out = xlb(&args);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--state-dir DIR reads"));
    }
    // A directory without a store is bad input.
    let out = xlb(&["history", "--state-dir", &dir.path("none")]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));

    // diff: the unified text diff, then the plan from 1 to 2.
    let out = xlb(&["diff", "1", "2", "--state-dir", &state]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(
            "--- revision 1 (/etc/xlb/xlb.toml)\n+++ revision 2 (/etc/xlb/xlb.toml)\n@@ "
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n-  weight = 2\n+  weight = 3\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nfrom revision 1 to revision 2 (shares: 1 -> 2):\nplan: 1 VIP changed"),
        "{stdout}"
    );
    // The same plan `xlb plan` makes of the same two texts.
    let (old, new) = (dir.path("old.toml"), dir.path("new.toml"));
    std::fs::write(&old, &text).unwrap();
    std::fs::write(&new, &changed).unwrap();
    let diff = xlb(&["-o", "json", "diff", "1", "2", "--state-dir", &state]);
    let diff: serde_json::Value = serde_json::from_slice(&diff.stdout).unwrap();
    let plan = xlb(&["-o", "json", "plan", &new, "--base", &old, "--force"]);
    let mut plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    plan["base_revision"] = 1.into();
    assert_eq!(diff["plan"], plan);
    assert_eq!(
        (
            diff["from"]["revision"].clone(),
            diff["to"]["revision"].clone()
        ),
        (1.into(), 2.into())
    );
    assert!(
        diff["config_diff"]
            .as_str()
            .unwrap()
            .contains("+  weight = 3\n"),
        "{diff}"
    );
    // An unknown revision is bad input.
    let out = xlb(&["diff", "1", "7", "--state-dir", &state]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

/// `xlb --help`: the subcommands in their groups, the exit codes; a
/// subcommand's help lists `--socket` only where it acts.
#[test]
fn help_groups_subcommands_and_lists_exit_codes() {
    let out = xlb(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for (title, names) in xlb::cli::help::GROUPS {
        let at = help
            .find(&format!("\n{title}:\n"))
            .unwrap_or_else(|| panic!("{title}: {help}"));
        for name in *names {
            assert!(
                help[at..].contains(&format!("\n  {name} ")),
                "{name} under {title}: {help}"
            );
        }
    }
    assert!(help.contains("\nExit codes:\n  0  "), "{help}");
    let validate = String::from_utf8_lossy(&xlb(&["validate", "--help"]).stdout).to_string();
    assert!(!validate.contains("--socket"), "{validate}");
    let status = String::from_utf8_lossy(&xlb(&["status", "--help"]).stdout).to_string();
    assert!(status.contains("--socket"), "{status}");
}
