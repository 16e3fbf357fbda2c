//! Bake and automatic rollback, in the namespace testbed under real traffic.
//! Backends declare capacities 1:1:2. A change to weights 8:1:1 (b1 gets
//! ~80% of new flows against a 25% capacity share) is rolled back by the
//! daemon on its own within 10 s (forced past the plan's safety checks, which
//! refuse it), and `xlb apply --wait` exits 1; a benign
//! change bakes and stays (exit 0); the same config again is recorded
//! without a bake. No TCP connection fails throughout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use tests::client::{Proto, Tally, drive_paced};
use tests::servers::Servers;
use tests::testbed::{self, TCP_PORT, Testbed, VIP4};
use tests::xlbd::Daemon;

/// The testbed config with the given weights and capacities 1:1:2.
fn config(weights: &[u32]) -> String {
    testbed::with_capacities_and_short_window(testbed::config(weights))
}

#[test]
fn a_skewing_change_is_rolled_back_and_a_benign_one_bakes() {
    tests::require_privileges!();
    tests::in_workdir("bake", run);
}

fn run(dir: &std::path::Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xb", 3)?;
    let _servers = Servers::start(&bed)?;
    let files: Vec<String> = [
        ("start", [1, 1, 2]),
        ("bad", [8, 1, 1]),
        ("benign", [2, 2, 3]),
    ]
    .iter()
    .map(|(name, weights)| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config(weights)).unwrap();
        path.display().to_string()
    })
    .collect();
    let daemon = Daemon::start_with(
        &bed.lb.ns,
        std::path::Path::new(&files[0]),
        dir,
        &["--bake-window", "12s", "--bake-hold", "2s"],
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let target = SocketAddr::new(VIP4.into(), TCP_PORT);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let traffic =
            scope.spawn(|| drive_paced(&bed.client.ns, target, Proto::Tcp, 300, stop.clone(), 180));
        let checked = (|| -> anyhow::Result<()> {
            std::thread::sleep(Duration::from_secs(4));
            // The bad change, forced through: the daemon rolls it back.
            let started = Instant::now();
            let out =
                daemon.xlb(&["apply", &files[1], "--force", "-m", "bad weights", "--wait"])?;
            let took = started.elapsed();
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            ensure!(
                out.status.code() == Some(1) && stderr.contains("ROLLED BACK"),
                "apply --wait of the bad change: {out:?}"
            );
            eprintln!("rolled back after {took:?}: {}", stderr.trim());
            let history: serde_json::Value =
                serde_json::from_slice(&daemon.xlb(&["history", "-o", "json"])?.stdout)?;
            let revs = history["revisions"].as_array().unwrap();
            let bad = &revs[1];
            let rollback = &revs[2];
            ensure!(
                bad["outcome"]["type"] == "rolled_back"
                    && bad["outcome"]["by"] == 3
                    && rollback["kind"]["type"] == "automatic_rollback"
                    && rollback["kind"]["to"] == 1,
                "{history}"
            );
            let seconds = rollback["created_at_unix_seconds"].as_f64().unwrap()
                - bad["created_at_unix_seconds"].as_f64().unwrap();
            ensure!(
                seconds <= 10.0,
                "rolled back {seconds:.1} s after the change"
            );
            eprintln!("rollback revision made {seconds:.1} s after the bad one");
            let status = daemon.status()?;
            ensure!(status["revision"] == 3, "{status}");

            // A benign change bakes and stays.
            std::thread::sleep(Duration::from_secs(3));
            let out = daemon.xlb(&["apply", &files[2], "-m", "benign", "--wait"])?;
            ensure!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains("baked"),
                "apply --wait of the benign change: {out:?}"
            );
            let status = daemon.status()?;
            ensure!(status["revision"] == 4, "{status}");

            // The same settings again (a comment more): recorded, not baked,
            // since nothing changed for a bake to watch.
            let again = dir.join("benign-again.toml");
            std::fs::write(
                &again,
                format!("# the benign change again\n{}", config(&[2, 2, 3])),
            )?;
            let out = daemon.xlb(&["apply", &again.display().to_string(), "--wait"])?;
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            ensure!(
                out.status.success() && stderr.contains("not baking"),
                "apply --wait of the live config: {out:?}"
            );
            let status = daemon.status()?;
            ensure!(status["revision"] == 5, "{status}");
            let history: serde_json::Value =
                serde_json::from_slice(&daemon.xlb(&["history", "-o", "json"])?.stdout)?;
            let last = &history["revisions"][4];
            ensure!(
                last["number"] == 5 && last["outcome"]["type"] == "applied",
                "{history}"
            );
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let exchanges = traffic.join().expect("traffic");
        checked?;
        let tally = Tally::of(&exchanges);
        ensure!(
            tally.failures.is_empty() && exchanges.len() > 1000,
            "{} of {} exchanges failed: {:?}",
            tally.failures.len(),
            exchanges.len(),
            tally.failures.first()
        );
        Ok(())
    })
}
