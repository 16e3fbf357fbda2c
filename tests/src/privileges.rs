//! The one privilege check of the tests: which capabilities a privileged
//! test needs, and what happens without them. Outside CI such a test prints
//! `SKIPPED <test>: ...` and returns; under CI (`CI=true` or `CI=1`, as CI
//! services set it) it fails, so a CI that lost root cannot go green with
//! the privileged tests silently not run. Either way the message names the
//! capabilities that are missing.
//!
//! A test starts with [`require_privileges!`](crate::require_privileges);
//! nothing else in the tests reads capabilities or prints SKIPPED (the
//! `one_privilege_check` test below holds the sources to that).

use std::io::Write as _;

use caps::{CapSet, Capability};

/// One capability the privileged tests need, and what for.
pub struct Need {
    pub capability: Capability,
    pub why: &'static str,
}

/// What a privileged test needs in its effective set: one set for every
/// privileged test, the union of what they do (root has them all). A test
/// that needs fewer is not told apart, so that no test passes the check and
/// then fails for a capability the check did not name.
pub const NEEDED: &[Need] = &[
    Need {
        capability: Capability::CAP_BPF,
        why: "load programs and create maps",
    },
    Need {
        capability: Capability::CAP_NET_ADMIN,
        why: "load and attach XDP programs, make veths, bridges, addresses and routes",
    },
    Need {
        capability: Capability::CAP_PERFMON,
        why: "the verifier accepts the balancer's pointer arithmetic only with it; \
              the confined daemon's ambient set",
    },
    Need {
        capability: Capability::CAP_SYS_ADMIN,
        why: "make and enter network namespaces, mount bpffs, walk the kernel's BPF map ids",
    },
    Need {
        capability: Capability::CAP_NET_RAW,
        why: "put frames on a wire with AF_PACKET sockets",
    },
    Need {
        capability: Capability::CAP_CHOWN,
        why: "groupadd (it chowns /etc/gshadow), give the socket directory to the socket group",
    },
    Need {
        capability: Capability::CAP_SETPCAP,
        why: "setpriv's securebits and bounding set for the confined daemon",
    },
    Need {
        capability: Capability::CAP_SETUID,
        why: "run the CLI as another user (setpriv --reuid)",
    },
    Need {
        capability: Capability::CAP_SETGID,
        why: "run the daemon and the CLI with another group (setpriv --regid, --clear-groups)",
    },
];

/// The needed capabilities missing from this process's effective set.
pub fn missing() -> Vec<&'static Need> {
    NEEDED
        .iter()
        .filter(|n| !caps::has_cap(None, CapSet::Effective, n.capability).unwrap_or(false))
        .collect()
}

/// True when the environment says this is a CI run: `CI` is `true` (any
/// case) or `1`.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// `what needs CAP_A, CAP_B (why; why), missing from this process's
/// effective capabilities`.
pub fn describe(what: &str, missing: &[&Need]) -> String {
    let names: Vec<String> = missing.iter().map(|n| n.capability.to_string()).collect();
    let reasons: Vec<String> = missing
        .iter()
        .map(|n| format!("{}: {}", n.capability, n.why))
        .collect();
    format!(
        "{what} needs {}, missing from this process's effective capabilities ({}); run it as root",
        names.join(", "),
        reasons.join("; ")
    )
}

/// Ok when this process holds every needed capability, else an error
/// naming the missing ones (for the demo binaries and `Netns::new`).
pub fn check(what: &str) -> anyhow::Result<()> {
    let missing = missing();
    if missing.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", describe(what, &missing))
    }
}

/// True when `test` may run. When not: under CI, panics naming what is
/// missing; otherwise prints `SKIPPED test: ...` and returns false. Use
/// [`require_privileges!`](crate::require_privileges), which returns from
/// the test.
#[track_caller]
pub fn granted(test: &str) -> bool {
    match verdict(test, &missing(), under_ci()) {
        Verdict::Run => true,
        Verdict::Skip(message) => {
            // Straight to stderr, past the test harness's capture, so that a
            // skip shows in `cargo test`'s output like a failure would.
            let _ = writeln!(std::io::stderr(), "{message}");
            false
        }
        Verdict::Fail(message) => panic!("{message}"),
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Run,
    Skip(String),
    Fail(String),
}

fn verdict(test: &str, missing: &[&Need], ci: bool) -> Verdict {
    if missing.is_empty() {
        return Verdict::Run;
    }
    let message = describe(test, missing);
    if ci {
        Verdict::Fail(format!(
            "{message}. CI is set, so a privileged test without privileges fails instead of \
             being skipped"
        ))
    } else {
        Verdict::Skip(format!("SKIPPED {message} (under CI=true this fails)"))
    }
}

/// The name of the function this is expanded in, without the crate and
/// module path: `test_name!()` in `fn a_test()` is `"a_test"`.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn here() {}
        let path = ::std::any::type_name_of_val(&here);
        let path = path.strip_suffix("::here").unwrap_or(path);
        path.rsplit("::").next().unwrap_or(path)
    }};
}

/// The first line of every privileged test: returns from the test when
/// this process lacks a needed capability (printing `SKIPPED`), or fails it
/// under CI; names what is missing. `require_privileges!("name")` names the
/// test when the check sits in a helper rather than in the test itself.
#[macro_export]
macro_rules! require_privileges {
    () => {
        $crate::require_privileges!($crate::test_name!())
    };
    ($test:expr) => {
        if !$crate::privileges::granted($test) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(c: Capability) -> &'static Need {
        NEEDED.iter().find(|n| n.capability == c).unwrap()
    }

    #[test]
    fn the_test_name_is_the_function_name() {
        assert_eq!(test_name!(), "the_test_name_is_the_function_name");
    }

    #[test]
    fn nothing_missing_runs() {
        assert_eq!(verdict("t", &[], true), Verdict::Run);
        assert_eq!(verdict("t", &[], false), Verdict::Run);
    }

    #[test]
    fn outside_ci_a_missing_capability_skips_naming_it() {
        let v = verdict("some_test", &[need(Capability::CAP_BPF)], false);
        let Verdict::Skip(m) = v else { panic!("{v:?}") };
        assert!(
            m.starts_with("SKIPPED some_test needs CAP_BPF, missing from"),
            "{m}"
        );
    }

    #[test]
    fn under_ci_a_missing_capability_fails_naming_it() {
        let missing = [need(Capability::CAP_BPF), need(Capability::CAP_SYS_ADMIN)];
        let v = verdict("some_test", &missing, true);
        let Verdict::Fail(m) = v else { panic!("{v:?}") };
        assert!(
            m.starts_with("some_test needs CAP_BPF, CAP_SYS_ADMIN, missing from"),
            "{m}"
        );
        assert!(m.contains("CI is set"), "{m}");
        assert!(!m.contains("CAP_NET_ADMIN"), "{m}");
    }

    /// No test reads capabilities or prints SKIPPED on its own: every
    /// privileged test goes through `require_privileges!`, so that under CI
    /// none can return early unseen.
    #[test]
    fn one_privilege_check() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut offenders = Vec::new();
        for dir in ["src", "src/bin", "tests"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "rs")
                    || path == root.join("src/privileges.rs")
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, line) in text.lines().enumerate() {
                    let hand_made = ["has_cap(", "caps::missing", "is_root()", "\"SKIPPED"]
                        .iter()
                        .any(|p| line.contains(p));
                    if hand_made {
                        offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "privilege checks outside tests/src/privileges.rs (use require_privileges!):\n{}",
            offenders.join("\n")
        );
    }
}
