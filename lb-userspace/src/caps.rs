//! The capabilities the daemon needs (`privileges::DAEMON`), for tests that
//! skip without them. The startup check itself is `privileges::check`.

use caps::{CapSet, Capability};

/// The needed capabilities missing from this process's effective set.
pub fn missing() -> Vec<Capability> {
    crate::privileges::DAEMON
        .iter()
        .map(|n| n.capability)
        .filter(|c| !caps::has_cap(None, CapSet::Effective, *c).unwrap_or(false))
        .collect()
}
