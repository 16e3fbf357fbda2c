//! systemd's notification protocol (`Type=notify`, `WatchdogSec=`), through
//! the `sd-notify` crate. Outside systemd (no NOTIFY_SOCKET) every call does
//! nothing.
//!
//! - READY=1 once the first apply is done and the control socket listens,
//!   so `systemctl start xlb && xlb status` works;
//! - WATCHDOG=1 every half `WatchdogSec` while the controller answers (its
//!   lock can be taken): a controller stuck for longer is restarted by
//!   systemd (forwarding goes on from the kernel meanwhile);
//! - STOPPING=1 when the daemon exits on a signal.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("sd_notify: {e}");
    }
}

/// The daemon is up: the first apply made revision `revision`.
pub fn ready(revision: u64) {
    let status = format!("serving revision {revision}");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to ping: half the watchdog timeout systemd set, if any.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|t| t / 2)
}

/// Ping the watchdog every `watchdog_period` while `controller`'s lock can
/// be taken; never returns (pends forever when there is no watchdog).
pub async fn watchdog<T: Send + 'static>(controller: Arc<Mutex<T>>) -> anyhow::Result<()> {
    let Some(period) = watchdog_period() else {
        return std::future::pending().await;
    };
    log::info!("systemd watchdog: a ping every {period:?}");
    loop {
        // First wait: READY=1 goes out before the first ping.
        tokio::time::sleep(period).await;
        let controller = controller.clone();
        // Taking the lock proves the controller is not stuck; on the
        // blocking pool so a long apply does not stall the reactor.
        tokio::task::spawn_blocking(move || {
            drop(controller.lock().unwrap_or_else(|p| p.into_inner()));
        })
        .await?;
        send(&[NotifyState::Watchdog]);
    }
}
