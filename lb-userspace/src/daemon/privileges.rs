//! Least privilege: the capabilities `xlb run` needs, checked at startup so
//! that a missing one is named before anything is loaded, instead of
//! surfacing as EPERM deep inside a bpf() syscall or as a verifier log.
//!
//! The set is the one deploy/systemd/xlb.service grants
//! (`CapabilityBoundingSet=`, `AmbientCapabilities=`); a unit test below
//! keeps the two equal, and tests/tests/privileges.rs runs the daemon with
//! exactly that set, and with each capability taken away.
//!
//! Pure logic (what is missing from a given set, parsing a unit's capability
//! lines) is separate from reading this process's effective set.

use std::collections::HashSet;

use caps::{CapSet, Capability};

/// One capability the daemon needs, and what for (printed when missing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub capability: Capability,
    pub why: &'static str,
}

/// What `xlb run` needs, found by running it under `setpriv` with each
/// candidate set and reading the failure (deploy/systemd/README.md):
///
/// - without CAP_BPF, BPF_MAP_CREATE and BPF_PROG_LOAD fail with EPERM;
/// - without CAP_NET_ADMIN, BPF_PROG_LOAD of the XDP program fails with
///   EPERM (networking program types need it), and so would the attach;
/// - without CAP_PERFMON, the verifier rejects the balancer at its first
///   instruction that subtracts two packet pointers ("R3 pointer -= pointer
///   prohibited"): bounds arithmetic on packet pointers is allowed only to
///   `perfmon_capable()` loaders.
///
/// Not needed (the daemon works without them): CAP_SYS_ADMIN,
/// CAP_SYS_RESOURCE (BPF memory is charged to the memory cgroup since Linux
/// 5.11; on older kernels the unit raises RLIMIT_MEMLOCK itself with
/// `LimitMEMLOCK=infinity`), CAP_NET_RAW, CAP_DAC_OVERRIDE, CAP_CHOWN (a
/// `--socket-group` needs the daemon to be in that group instead).
pub const DAEMON: &[Need] = &[
    Need {
        capability: Capability::CAP_BPF,
        why: "to load the XDP program and create its maps",
    },
    Need {
        capability: Capability::CAP_NET_ADMIN,
        why: "to load a networking (XDP) program and attach it to the interface",
    },
    Need {
        capability: Capability::CAP_PERFMON,
        why: "the verifier accepts the balancer's packet-pointer arithmetic only with it",
    },
];

/// Set (to anything) to skip the startup check, so that a test can show
/// what the kernel itself says without a capability. It grants nothing:
/// the kernel still refuses what the process may not do.
pub const SKIP_CHECK_ENV: &str = "XLB_SKIP_CAPABILITY_CHECK";

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "{command} needs {names}, missing from this process's effective capabilities \
         ({reasons}); it has {have}. As root, run it with these capabilities \
         (systemd: CapabilityBoundingSet= and AmbientCapabilities=, as in \
         deploy/systemd/xlb.service)"
    )]
    Missing {
        command: &'static str,
        names: String,
        reasons: String,
        have: String,
    },
    #[error("reading this process's capabilities: {0}")]
    Read(#[from] caps::errors::CapsError),
}

/// The needs that `effective` lacks, in the order of `needs`.
pub fn missing<'a>(needs: &'a [Need], effective: &HashSet<Capability>) -> Vec<&'a Need> {
    needs
        .iter()
        .filter(|n| !effective.contains(&n.capability))
        .collect()
}

/// Ok when `effective` holds every need; else the error naming each
/// missing capability, why it is needed, and what the process has.
pub fn judge(
    command: &'static str,
    needs: &[Need],
    effective: &HashSet<Capability>,
) -> Result<(), PrivilegeError> {
    let lacking = missing(needs, effective);
    if lacking.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = lacking.iter().map(|n| n.capability.to_string()).collect();
    let reasons: Vec<String> = lacking
        .iter()
        .map(|n| format!("{}: {}", n.capability, n.why))
        .collect();
    let mut have: Vec<&Capability> = effective.iter().collect();
    have.sort_by_key(|c| c.index());
    let have: Vec<String> = have.iter().map(|c| c.to_string()).collect();
    Err(PrivilegeError::Missing {
        command,
        names: names.join(" and "),
        reasons: reasons.join("; "),
        have: if have.is_empty() {
            "none".into()
        } else {
            have.join(", ")
        },
    })
}

/// This process's effective capabilities.
pub fn effective() -> Result<HashSet<Capability>, PrivilegeError> {
    Ok(caps::read(None, CapSet::Effective)?.into_iter().collect())
}

/// Check this process against `needs` (unless `SKIP_CHECK_ENV` is set).
pub fn check(command: &'static str, needs: &[Need]) -> Result<(), PrivilegeError> {
    if std::env::var_os(SKIP_CHECK_ENV).is_some() {
        log::warn!("{SKIP_CHECK_ENV} is set: not checking capabilities");
        return Ok(());
    }
    judge(command, needs, &effective()?)
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("line {line}: {key}: {value:?} is not a capability name")]
    Unknown {
        line: usize,
        key: String,
        value: String,
    },
    #[error("line {line}: {key}: inverted lists (~) are not supported here")]
    Inverted { line: usize, key: String },
    #[error("{key} is not set in the unit")]
    Unset { key: String },
}

/// The capabilities a systemd unit's `key` (`CapabilityBoundingSet` or
/// `AmbientCapabilities`) grants, as systemd reads it: assignments in the
/// [Service] section accumulate, an empty assignment resets the list.
pub fn unit_capabilities(text: &str, key: &str) -> Result<HashSet<Capability>, UnitError> {
    let mut set: Option<HashSet<Capability>> = None;
    let mut section = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section != "[Service]" {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        if v.starts_with('~') {
            return Err(UnitError::Inverted {
                line: i + 1,
                key: key.into(),
            });
        }
        let current = set.get_or_insert_with(HashSet::new);
        if v.is_empty() {
            current.clear();
            continue;
        }
        for word in v.split_whitespace() {
            let cap = word
                .to_ascii_uppercase()
                .parse::<Capability>()
                .map_err(|_| UnitError::Unknown {
                    line: i + 1,
                    key: key.into(),
                    value: word.into(),
                })?;
            current.insert(cap);
        }
    }
    set.ok_or_else(|| UnitError::Unset { key: key.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = include_str!("../../../deploy/systemd/xlb.service");

    fn set(caps: &[Capability]) -> HashSet<Capability> {
        caps.iter().copied().collect()
    }

    #[test]
    fn the_unit_grants_exactly_what_the_daemon_checks() {
        let needed: HashSet<Capability> = DAEMON.iter().map(|n| n.capability).collect();
        assert_eq!(
            unit_capabilities(UNIT, "CapabilityBoundingSet").unwrap(),
            needed
        );
        assert_eq!(
            unit_capabilities(UNIT, "AmbientCapabilities").unwrap(),
            needed
        );
    }

    #[test]
    fn a_missing_capability_is_named_with_its_reason() {
        let have = set(&[Capability::CAP_BPF, Capability::CAP_PERFMON]);
        let e = judge("xlb run", DAEMON, &have).unwrap_err().to_string();
        assert!(e.starts_with("xlb run needs CAP_NET_ADMIN,"), "{e}");
        assert!(e.contains("attach it to the interface"), "{e}");
        assert!(e.contains("it has CAP_PERFMON, CAP_BPF"), "{e}");
        assert!(!e.contains("CAP_BPF:"), "{e}");
    }

    #[test]
    fn every_missing_capability_is_named() {
        let e = judge("xlb run", DAEMON, &HashSet::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("xlb run needs CAP_BPF and CAP_NET_ADMIN and CAP_PERFMON,"),
            "{e}"
        );
        assert!(e.contains("it has none"), "{e}");
    }

    #[test]
    fn the_full_set_passes_and_more_is_fine() {
        let mut have: HashSet<Capability> = DAEMON.iter().map(|n| n.capability).collect();
        assert!(judge("xlb run", DAEMON, &have).is_ok());
        have.insert(Capability::CAP_SYS_ADMIN);
        assert!(judge("xlb run", DAEMON, &have).is_ok());
    }

    #[test]
    fn unit_lines_accumulate_reset_and_are_checked() {
        let text = "[Unit]\nCapabilityBoundingSet=CAP_SYS_ADMIN\n[Service]\n\
                    CapabilityBoundingSet=CAP_BPF\n# CapabilityBoundingSet=CAP_CHOWN\n\
                    CapabilityBoundingSet=cap_net_admin CAP_PERFMON\n";
        assert_eq!(
            unit_capabilities(text, "CapabilityBoundingSet").unwrap(),
            set(&[
                Capability::CAP_BPF,
                Capability::CAP_NET_ADMIN,
                Capability::CAP_PERFMON
            ])
        );
        let reset = "[Service]\nAmbientCapabilities=CAP_BPF\nAmbientCapabilities=\n";
        assert_eq!(
            unit_capabilities(reset, "AmbientCapabilities").unwrap(),
            HashSet::new()
        );
        assert_eq!(
            unit_capabilities(
                "[Service]\nAmbientCapabilities=CAP_BFP\n",
                "AmbientCapabilities"
            ),
            Err(UnitError::Unknown {
                line: 2,
                key: "AmbientCapabilities".into(),
                value: "CAP_BFP".into()
            })
        );
        assert!(matches!(
            unit_capabilities(
                "[Service]\nCapabilityBoundingSet=~CAP_BPF\n",
                "CapabilityBoundingSet"
            ),
            Err(UnitError::Inverted { line: 2, .. })
        ));
        assert!(matches!(
            unit_capabilities("[Service]\n", "CapabilityBoundingSet"),
            Err(UnitError::Unset { .. })
        ));
    }
}
