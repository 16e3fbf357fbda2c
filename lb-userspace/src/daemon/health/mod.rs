//! The daemon's health-check loop: every `TICK`, take the checks that are
//! due, run each on its own task (at most `MAX_IN_FLIGHT` at once), report
//! the results, and when a backend changes state call `on_change` (the
//! daemon brings the tables in line under the controller's lock).
//!
//! The monitor has its own lock, held only to hand out and take back
//! checks, so checks go on while an apply holds the controller.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use xlb_core::clock::Clock;
use xlb_core::health::Monitor;

pub mod probe;

/// How often due checks are looked for (their timing is this exact).
const TICK: Duration = Duration::from_millis(50);
/// Checks running at once, at most.
pub const MAX_IN_FLIGHT: usize = 1024;

pub async fn run(
    monitor: Arc<Mutex<Monitor>>,
    on_change: Arc<dyn Fn() + Send + Sync>,
) -> anyhow::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let due = monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .due(Clock::now().mono);
        for probe in due {
            let permit = permits.clone().acquire_owned().await?;
            let (monitor, on_change) = (monitor.clone(), on_change.clone());
            tokio::spawn(async move {
                let result = probe::check(&probe.spec).await;
                drop(permit);
                let changed = monitor
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .report(&probe, result, Clock::now())
                    .is_some();
                if changed {
                    on_change();
                }
            });
        }
        tokio::time::sleep(TICK).await;
    }
}

/// The daemon's health checks: `run` over the controller's monitor; a
/// change of state brings the tables in line under the controller's lock
/// (on the blocking pool: map writes are syscalls).
pub async fn serve(
    controller: Arc<Mutex<crate::daemon::controller::Controller>>,
) -> anyhow::Result<()> {
    let monitor = controller
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .health_monitor();
    let on_change: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let controller = controller.clone();
        tokio::task::spawn_blocking(move || {
            controller
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .health_sync();
        });
    });
    run(monitor, on_change).await
}
