//! Revisions, end to end: the daemon records its startup config and every
//! apply (who, why, the exact text, the outcome); `xlb history` and `xlb show`
//! read them back; they survive a daemon restart, and numbers go on from
//! where they were.

use anyhow::ensure;
use tests::testbed::{self, Testbed};
use tests::xlbd::Daemon;

#[test]
fn revisions_are_recorded_listed_and_survive_a_restart() {
    tests::require_privileges!();
    let dir = std::env::temp_dir().join(format!("xlb-revisions-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let result = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
}

fn json(out: std::process::Output) -> anyhow::Result<serde_json::Value> {
    ensure!(out.status.success(), "{out:?}");
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn run(dir: &std::path::Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xr", 3)?;
    let first = dir.join("xlb.toml");
    std::fs::write(&first, testbed::config(&[1, 1, 2]))?;
    let second = dir.join("second.toml");
    std::fs::write(&second, testbed::config(&[1, 1, 1]))?;

    // No bake here (tests/tests/bake.rs has it): outcomes are `applied`.
    let no_bake = ["--bake-window", "0s"];
    let mut daemon = Daemon::start_with(&bed.lb.ns, &first, dir, &no_bake)?;
    let out = daemon.xlb(&["apply", second.to_str().unwrap(), "-m", "even out b3"])?;
    ensure!(out.status.success(), "apply: {out:?}");
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("as revision 2"),
        "{out:?}"
    );
    // A refused config is no revision.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "interface = \"eth0\"\nwieght = 1\n")?;
    let out = daemon.xlb(&["apply", bad.to_str().unwrap()])?;
    ensure!(out.status.code() == Some(2), "bad apply: {out:?}");

    let history = json(daemon.xlb(&["history", "-o", "json"])?)?;
    let revs = history["revisions"].as_array().unwrap();
    ensure!(revs.len() == 2, "{history}");
    ensure!(
        revs[0]["kind"]["type"] == "startup" && revs[0]["number"] == 1,
        "{history}"
    );
    ensure!(
        revs[1]["kind"]["type"] == "apply"
            && revs[1]["message"] == "even out b3"
            && revs[1]["outcome"]["type"] == "applied"
            && revs[1]["config_hash"]
                == xlb_core::revision::text_hash(&testbed::config(&[1, 1, 1])).as_str(),
        "{history}"
    );
    // The history lists summaries; `xlb show` has the exact text.
    let shown = json(daemon.xlb(&["show", "2", "-o", "json"])?)?;
    ensure!(
        shown["config_text"] == testbed::config(&[1, 1, 1]).as_str(),
        "{shown}"
    );
    let table = daemon.xlb(&["history"])?;
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    ensure!(
        table.contains("even out b3") && table.contains("REVISION"),
        "{table}"
    );
    let show = daemon.xlb(&["show", "2"])?;
    ensure!(
        String::from_utf8_lossy(&show.stdout).contains("weight = 1"),
        "{show:?}"
    );
    let missing = daemon.xlb(&["show", "99"])?;
    ensure!(missing.status.code() == Some(2), "{missing:?}");

    // A plan is audited too (nothing applied).
    let out = daemon.xlb(&["plan", second.to_str().unwrap()])?;
    ensure!(out.status.success(), "plan: {out:?}");

    // Roll back to the startup config: a new revision 3, and 2 is marked.
    let out = daemon.xlb(&["rollback", "-m", "undo the even-out"])?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("revision 3"),
        "rollback: {out:?}"
    );
    let history = json(daemon.xlb(&["history", "-o", "json"])?)?;
    let revs = history["revisions"].as_array().unwrap();
    ensure!(
        revs[2]["kind"]["type"] == "rollback"
            && revs[2]["kind"]["to"] == 1
            && revs[2]["config_hash"] == revs[0]["config_hash"]
            && revs[1]["outcome"]["type"] == "rolled_back"
            && revs[1]["outcome"]["by"] == 3,
        "{history}"
    );
    let out = daemon.xlb(&["rollback", "--to-revision", "3"])?;
    ensure!(
        out.status.code() == Some(2),
        "rollback to the live revision: {out:?}"
    );

    // The audit log has one JSON line per apply and rollback.
    let audit = std::fs::read_to_string(dir.join("state/audit.log"))?;
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    ensure!(kinds == ["apply", "plan", "rollback"], "audit log: {audit}");
    ensure!(
        events[0]["detail"] == "even out b3"
            && events[1]["detail"] == "no changes"
            && events[2]["revision"] == 3,
        "{audit}"
    );

    // Restart: the history is still there, and the new startup is revision 4.
    daemon.stop()?;
    drop(daemon);
    let daemon = Daemon::start_with(&bed.lb.ns, &first, dir, &no_bake)?;
    let history = json(daemon.xlb(&["history", "-o", "json"])?)?;
    let numbers: Vec<u64> = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["number"].as_u64().unwrap())
        .collect();
    ensure!(numbers == [1, 2, 3, 4], "{history}");
    let status = daemon.status()?;
    ensure!(status["revision"] == 4, "{status}");
    Ok(())
}
