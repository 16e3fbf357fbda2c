//! The one clock: Unix seconds for what is shown and recorded, monotonic
//! seconds for intervals and windows. Pure code takes a `Clock` value as an
//! argument; only the daemon's edges call `Clock::now`.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A point in time: monotonic seconds (for intervals and windows) and Unix
/// seconds (for what the status shows).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clock {
    pub mono: f64,
    pub unix: f64,
}

impl Clock {
    /// Now: monotonic seconds since this process first asked, and Unix seconds.
    pub fn now() -> Self {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        Self {
            mono: EPOCH.get_or_init(Instant::now).elapsed().as_secs_f64(),
            unix: unix_now(),
        }
    }
}

/// Unix time now, in seconds (0 on a clock set before 1970).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
