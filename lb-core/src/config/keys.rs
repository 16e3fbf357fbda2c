//! How a change of each config key takes effect: live (an apply swaps it
//! in) or only at a restart. One table, read by `xlb plan` (which marks
//! restart-only changes and exits as the apply would), by the daemon's
//! apply (which refuses them, exit 2) and by the docs' test (the README's
//! configuration table says "restart" exactly for these keys). Every key
//! not in `RESTART_ONLY` is live.

use serde::{Deserialize, Serialize};

use super::model::{
    BACKEND_KEYS, HEALTH_KEYS, IMBALANCE_KEYS, ROOT_KEYS, SAFETY_KEYS, TUNNEL_KEYS, VIP_KEYS,
};
use super::types::Config;

/// A key whose change needs a restart of the daemon.
pub struct RestartKey {
    pub key: &'static str,
    /// Why, and what to do instead of an apply.
    pub why: &'static str,
    /// The key's value in a config, as the plan shows it.
    pub value: fn(&Config) -> String,
}

/// The restart-only keys (all top-level).
pub const RESTART_ONLY: &[RestartKey] = &[
    RestartKey {
        key: "interface",
        why: "the daemon is attached to its interface; start a daemon for the new one \
              (and `xlb detach` the old one if it should stop forwarding)",
        value: |c| c.interface.clone(),
    },
    RestartKey {
        key: "conn_table_size",
        why: "the pinned connection table is sized when the program loads: `xlb detach` \
              (forgets every flow), then start the daemon",
        value: |c| c.conn_table_size.to_string(),
    },
    RestartKey {
        key: "metrics_address",
        why: "the daemon binds /metrics, /api/status and the status page at start: \
              restart it to serve on the new address (or use --metrics-address)",
        value: |c| c.metrics_address.to_string(),
    },
];

/// Whether a change of `key` needs a restart.
pub fn is_restart_only(key: &str) -> bool {
    RESTART_ONLY.iter().any(|k| k.key == key)
}

/// One restart-only change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartChange {
    pub key: String,
    pub before: String,
    pub after: String,
    pub why: String,
}

impl std::fmt::Display for RestartChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} -> {} needs a restart: {}",
            self.key, self.before, self.after, self.why
        )
    }
}

/// The change of `key` from `before` to `after` (None when they are
/// equal or the key is live).
pub fn restart_change(key: &str, before: String, after: String) -> Option<RestartChange> {
    let k = RESTART_ONLY.iter().find(|k| k.key == key)?;
    (before != after).then(|| RestartChange {
        key: k.key.to_string(),
        before,
        after,
        why: k.why.to_string(),
    })
}

/// Every restart-only key that differs from `base` to `candidate`.
pub fn restart_changes(base: &Config, candidate: &Config) -> Vec<RestartChange> {
    RESTART_ONLY
        .iter()
        .filter_map(|k| restart_change(k.key, (k.value)(base), (k.value)(candidate)))
        .collect()
}

/// Every key a config file may hold, by its path (`interface`,
/// `vip.backend.weight`, `health.interval`, ...): the tables as their
/// section names, and every key inside them. A VIP's `[vip.imbalance]`,
/// `[vip.safety]` and `[vip.health]` take the same keys as the top-level
/// tables.
pub fn every_key() -> Vec<String> {
    let mut out: Vec<String> = ROOT_KEYS.iter().map(|k| k.to_string()).collect();
    out.extend(VIP_KEYS.iter().map(|k| format!("vip.{k}")));
    out.extend(BACKEND_KEYS.iter().map(|k| format!("vip.backend.{k}")));
    for (table, keys) in [
        ("imbalance", IMBALANCE_KEYS),
        ("safety", SAFETY_KEYS),
        ("tunnel", TUNNEL_KEYS),
        ("health", HEALTH_KEYS),
    ] {
        out.extend(keys.iter().map(|k| format!("{table}.{k}")));
    }
    out
}
