//! `xlb plan` and reviewed applies against a running daemon: a benign change
//! plans clean (exit 0, or 3 with --detailed-exitcode) and its predicted
//! shares are the shares of the tables the apply then builds; a skewing
//! change is refused (exit 1) by plan and by apply, naming the backend and
//! its predicted share, unless forced; a plan file applies once and is
//! refused as stale after that; `xlb diff` of two revisions carries the
//! plan between them, from the daemon and from its store once it is gone.

use anyhow::{Context as _, ensure};
use tests::testbed::{self, Testbed};
use tests::xlbd::Daemon;

#[test]
fn plan_lints_reviewed_apply_and_stale_plans() {
    tests::require_privileges!();
    let dir = std::env::temp_dir().join(format!("xlb-plan-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let result = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn run(dir: &std::path::Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xp", 3)?;
    let write = |name: &str, weights: &[u32]| {
        let path = dir.join(name);
        std::fs::write(&path, testbed::config(weights)).unwrap();
        path.display().to_string()
    };
    let start = write("start.toml", &[1, 1, 2]);
    let benign = write("benign.toml", &[1, 1, 1]);
    let bad = write("bad.toml", &[8, 1, 1]);
    let daemon = Daemon::start_with(
        &bed.lb.ns,
        std::path::Path::new(&start),
        dir,
        &["--bake-window", "0s"],
    )?;

    // Benign: exit 0, or 3 with --detailed-exitcode; nothing applied.
    let out = daemon.xlb(&["plan", &benign])?;
    ensure!(code(&out) == 0, "plan benign: {out:?}");
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("every safety check passes"),
        "{out:?}"
    );
    let out = daemon.xlb(&["plan", &benign, "--detailed-exitcode"])?;
    ensure!(code(&out) == 3, "plan --detailed-exitcode: {out:?}");
    // Read by a reader that stops at once (`xlb plan | head -0`): the CLI
    // ends quietly by SIGPIPE, as Unix tools do, without a panic.
    let mut child = std::process::Command::new(tests::xlbd::xlb_binary()?)
        .args([
            "--socket",
            &daemon.socket.display().to_string(),
            "plan",
            &benign,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    drop(child.stdout.take());
    let out = child.wait_with_output()?;
    use std::os::unix::process::ExitStatusExt as _;
    ensure!(
        out.status.signal() == Some(nix::libc::SIGPIPE) && out.stderr.is_empty(),
        "plan into a closed pipe: {out:?}"
    );
    let out = daemon.xlb(&["plan", &start, "--detailed-exitcode"])?;
    ensure!(code(&out) == 0, "plan of the live config: {out:?}");

    // Bad: refused by plan and by apply, naming b1 and its predicted share.
    let out = daemon.xlb(&["plan", &bad])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        code(&out) == 1 && text.contains("b1: predicted share"),
        "plan bad: {out:?}"
    );
    // The same offline, against the recorded revision 1.
    let state = dir.join("state").display().to_string();
    let out = daemon.xlb(&["plan", &bad, "--revision", "1", "--state-dir", &state])?;
    ensure!(
        code(&out) == 1 && String::from_utf8_lossy(&out.stdout).contains("b1: predicted share"),
        "offline plan against revision 1: {out:?}"
    );
    let out = daemon.xlb(&["apply", &bad])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        code(&out) == 1
            && stderr.contains("b1: predicted share")
            && stderr.contains("(the same command with --force applies it anyway)"),
        "apply bad: {out:?}"
    );
    ensure!(
        daemon.status()?["revision"] == 1,
        "a refused apply changed the revision"
    );

    // A reviewed plan applies exactly once.
    let planfile = dir.join("benign.plan.json").display().to_string();
    let out = daemon.xlb(&["plan", &benign, "--out", &planfile, "-o", "json"])?;
    ensure!(code(&out) == 0, "plan --out: {out:?}");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(plan["base_revision"] == 1, "{plan}");
    let out = daemon.xlb(&["apply", &planfile, "-m", "reviewed"])?;
    ensure!(code(&out) == 0, "apply plan: {out:?}");
    let again = daemon.xlb(&["apply", &planfile])?;
    ensure!(
        code(&again) == 1 && String::from_utf8_lossy(&again.stderr).contains("stale plan"),
        "second apply of the same plan: {again:?}"
    );

    // Predicted shares are the applied tables' shares, backend by backend.
    let status = daemon.status()?;
    for vip in plan["vips"].as_array().context("vips")? {
        let live = status["vips"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == vip["name"])
            .context("VIP in status")?;
        for b in vip["backends"].as_array().unwrap() {
            let got = live["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == b["name"])
                .context("backend in status")?["table_share_ratio"]
                .as_f64()
                .unwrap();
            let want = b["share_after_ratio"].as_f64().unwrap();
            ensure!(
                (got - want).abs() < 1e-9,
                "{}/{}: predicted {want}, applied table {got}",
                vip["name"],
                b["name"]
            );
        }
    }

    // Forced through, the bad change applies (no bake in this daemon).
    let out = daemon.xlb(&["apply", &bad, "--force", "-m", "forced"])?;
    ensure!(code(&out) == 0, "apply --force: {out:?}");
    let show: serde_json::Value =
        serde_json::from_slice(&daemon.xlb(&["show", "3", "-o", "json"])?.stdout)?;
    ensure!(
        show["plan"]["lints"]
            .as_array()
            .is_some_and(|l| !l.is_empty()),
        "the forced revision records its plan and lints: {show}"
    );

    // `xlb diff` from the daemon: revision 2 is the reviewed plan applied,
    // and the diff's plan from 1 to 2 is that very plan, but for the live
    // flows the reviewed plan counted (`held`: the connection table at the
    // time of `xlb plan`, not a property of the two revisions).
    let out = daemon.xlb(&["-o", "json", "diff", "1", "2"])?;
    ensure!(code(&out) == 0, "diff 1 2: {out:?}");
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut reviewed = plan.clone();
    ensure!(
        reviewed
            .as_object_mut()
            .and_then(|p| p.remove("held"))
            .is_some(),
        "the daemon's plan counts the live flows it leaves held: {plan}"
    );
    ensure!(
        diff["plan"] == reviewed,
        "diff's plan {diff} is not the reviewed plan {reviewed}"
    );
    // The daemon validates what it is sent (the CLI no longer parses it
    // first): a bad file is bad input named at its line and column, and a
    // file's warnings reach the operator's terminal, from plan and apply.
    let invalid = dir.join("invalid.toml");
    std::fs::write(
        &invalid,
        testbed::config(&[1, 1, 1]).replacen("weight = 1", "weight = -1", 1),
    )?;
    let invalid = invalid.display().to_string();
    for verb in ["plan", "apply"] {
        let out = daemon.xlb(&[verb, &invalid])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            code(&out) == 2 && stderr.starts_with(&format!("xlb: {invalid}:")),
            "{verb} of an invalid file: {out:?}"
        );
    }
    let empty = dir.join("empty.toml");
    std::fs::write(
        &empty,
        format!(
            "{}\n[[vip]]\nname = \"empty\"\naddress = \"{}\"\nport = 8181\nprotocol = \"tcp\"\n",
            testbed::config(&[1, 1, 2]),
            testbed::VIP4
        ),
    )?;
    let empty = empty.display().to_string();
    for args in [
        vec!["plan", &empty, "--force"],
        vec!["apply", &empty, "--force"],
    ] {
        let out = daemon.xlb(&args)?;
        ensure!(
            code(&out) == 0
                && String::from_utf8_lossy(&out.stderr).contains(&format!(
                    "xlb: warning: {empty}: vip[empty]: has no backends"
                )),
            "{args:?} of a file with a warning: {out:?}"
        );
    }
    // The daemon gone, the same from its state directory's store.
    let socket = daemon.socket.clone();
    drop(daemon);
    let out = std::process::Command::new(tests::xlbd::xlb_binary()?)
        .arg("--socket")
        .arg(&socket)
        .args(["-o", "json", "diff", "1", "2", "--state-dir", &state])
        .output()?;
    ensure!(
        code(&out) == 0,
        "diff 1 2 --state-dir without the daemon: {out:?}"
    );
    let offline: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        offline == diff,
        "offline diff {offline} differs from the daemon's {diff}"
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("read from the revision store in"),
        "{out:?}"
    );
    Ok(())
}
