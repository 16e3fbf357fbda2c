//! The incident replay (`cargo xtask incident-replay`, docs/INCIDENT.md) as a
//! test: the outage rebuilt in namespaces must meet its goals — `xlb plan`
//! refuses the bad change, the forced change is rolled back automatically
//! within 10 s, and fewer than 0.1% of logins fail over the run. The replay
//! checks its goals itself and exits non-zero when one is missed.
//!
//! The fleet replay (`cargo xtask incident-replay --fleet`) too: the change
//! as a rollout is caught at the canary and the other nodes never apply
//! it, with fewer than 0.1% failed logins; the same change on all three
//! nodes at once is reported beside it.
//!
//! One after the other in one test: each replay's timing is its result, so
//! they do not share the machine.

#[test]
fn incident_replays_meet_their_goals() {
    tests::require_privileges!();
    replay(env!("CARGO_BIN_EXE_xlb-incident"));
    replay(env!("CARGO_BIN_EXE_xlb-fleet-incident"));
}

fn replay(binary: &str) {
    let out = std::process::Command::new(binary)
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
