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

/// Counts a check that failed for a local reason (its errno's name).
pub type LocalError = Arc<dyn Fn(&'static str) + Send + Sync>;

pub async fn run(
    monitor: Arc<Mutex<Monitor>>,
    on_change: Arc<dyn Fn() + Send + Sync>,
    local_error: LocalError,
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
            let local_error = local_error.clone();
            tokio::spawn(async move {
                let result = match probe::probe(&probe.spec).await {
                    Ok(()) => Ok(()),
                    Err(probe::Failure::Backend(why)) => Err(why),
                    Err(probe::Failure::Local { reason, message }) => {
                        // This host's fault, not the backend's: counted,
                        // and the backend keeps its health.
                        drop(permit);
                        log::debug!(
                            "health check of {}/{} not run: {message}",
                            probe.key.vip,
                            probe.key.backend
                        );
                        local_error(reason);
                        monitor
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .release(&probe);
                        return;
                    }
                };
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
    let (monitor, metrics) = {
        let c = controller.lock().unwrap_or_else(|p| p.into_inner());
        (c.health_monitor(), c.metrics().clone())
    };
    let counted = metrics.clone();
    let local_error: LocalError = Arc::new(move |reason| counted.probe_local_error(reason));
    let on_change: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let controller = controller.clone();
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || {
            controller
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .health_sync();
            metrics.invalidate_change();
        });
    });
    run(monitor, on_change, local_error).await
}
