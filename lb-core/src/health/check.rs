//! A VIP's health check in words: the `check` of its health in the status,
//! and `xlb plan`'s line for a changed check. Uses only the config.

use crate::config::{CheckKind, HealthCheck};

/// A VIP's check in a few words: `none`, `tcp :8080 every 2s (timeout 1s,
/// rise 2, fall 3, flap 3 in 60s: hold 30s, fail_open)`.
pub fn describe(h: &HealthCheck) -> String {
    let what = match &h.kind {
        CheckKind::None => return "none".to_string(),
        CheckKind::Tcp => format!("tcp :{}", h.port),
        CheckKind::Http {
            path,
            status_min,
            status_max,
        } => format!("http GET :{}{path} ({status_min}-{status_max})", h.port),
    };
    format!(
        "{what} every {}s (timeout {}s, rise {}, fall {}, flap {} in {}s: hold {}s, {})",
        h.interval_seconds,
        h.timeout_seconds,
        h.rise,
        h.fall,
        h.flap_limit,
        h.flap_window_seconds,
        h.flap_hold_seconds,
        h.all_down
    )
}

/// `xlb plan`'s line for a changed health check (none when unchanged).
pub fn plan_details(b: &HealthCheck, a: &HealthCheck) -> Vec<String> {
    if b == a {
        return Vec::new();
    }
    vec![format!("health {} -> {}", describe(b), describe(a))]
}
