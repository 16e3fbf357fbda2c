//! The incident replay (`cargo xtask incident-replay`, docs/INCIDENT.md) as a
//! test: the outage rebuilt in namespaces must meet its goals — `xlb plan`
//! refuses the bad change, the forced change is rolled back automatically
//! within 10 s, and fewer than 0.1% of logins fail over the run. The replay
//! checks its goals itself and exits non-zero when one is missed.

#[test]
fn incident_replay_meets_its_goals() {
    tests::require_privileges!();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xlb-incident"))
        .output()
        .expect("run the incident replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The timeline and the summary, in the test log either way.
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "the incident replay missed a goal ({}); its output is above",
        out.status
    );
}
