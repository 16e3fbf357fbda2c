//! Capability check at startup: name what is missing instead of failing deep
//! inside a syscall.

use caps::{CapSet, Capability};

/// What the daemon needs: loading programs and maps, and attaching XDP.
pub const REQUIRED: [Capability; 2] = [Capability::CAP_BPF, Capability::CAP_NET_ADMIN];

/// The required capabilities missing from this process's effective set.
pub fn missing() -> Vec<Capability> {
    REQUIRED
        .into_iter()
        .filter(|c| !caps::has_cap(None, CapSet::Effective, *c).unwrap_or(false))
        .collect()
}
