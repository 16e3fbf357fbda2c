//! The route writer: once a second (and at once after a drain or
//! undrain), what the controller decides is announced
//! (controller/announce.rs) is written to the `--announce-table` as one
//! route per address (lb-routes), which the node's BIRD exports. And the
//! stop: on SIGTERM or SIGINT, withdraw every VIP first, keep forwarding
//! what still arrives for the grace, then return (the daemon exits; the
//! program stays attached).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use xlb_core::clock::Clock;
use xlb_routes::Routes;

use crate::daemon::controller::Controller;

/// How often the decision is made and the routes written.
pub const PERIOD: Duration = Duration::from_secs(1);

fn lock(c: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Decide, then make the table hold exactly what is announced.
async fn write_once(
    controller: &Arc<Mutex<Controller>>,
    routes: Option<&Routes>,
) -> anyhow::Result<()> {
    // The controller's lock may be held by an apply for a while: take it
    // on the blocking pool, not on the reactor.
    let c = controller.clone();
    let want = tokio::task::spawn_blocking(move || lock(&c).announce(Clock::now())).await?;
    let Some(routes) = routes else {
        return Ok(());
    };
    let result = match routes.sync(&want).await {
        Ok(synced) => {
            for a in &synced.added {
                log::info!("announce: route to {a} added to table {}", routes.table());
            }
            for a in &synced.removed {
                log::info!(
                    "announce: route to {a} removed from table {}",
                    routes.table()
                );
            }
            Ok(want)
        }
        Err(e) => Err(e.to_string()),
    };
    let c = controller.clone();
    tokio::task::spawn_blocking(move || lock(&c).routes_written(result)).await?;
    Ok(())
}

/// The route writer's loop (runs until the daemon stops).
pub async fn serve(
    controller: Arc<Mutex<Controller>>,
    routes: Option<Routes>,
    wake: Arc<Notify>,
) -> anyhow::Result<()> {
    loop {
        write_once(&controller, routes.as_ref()).await?;
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = wake.notified() => {}
        }
    }
}

/// Wait for SIGTERM or SIGINT; then, when announcing, withdraw every VIP
/// and keep serving for `grace` before returning.
pub async fn stop(
    controller: Arc<Mutex<Controller>>,
    routes: Option<Routes>,
    grace: Duration,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM"),
        _ = int.recv() => log::info!("SIGINT"),
    }
    let Some(routes) = routes else {
        return Ok(());
    };
    let c = controller.clone();
    tokio::task::spawn_blocking(move || lock(&c).stop_announcing()).await?;
    write_once(&controller, Some(&routes)).await?;
    log::info!(
        "every VIP withdrawn from table {}; forwarding what still arrives for {grace:?} before exiting",
        routes.table()
    );
    tokio::time::sleep(grace).await;
    Ok(())
}
