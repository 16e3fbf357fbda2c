//! Which build this process is: the binary's version, the git commit it was
//! built from, the embedded balancer object's id and the map layout version.
//! `xlb version` prints it, and the daemon answers it on the control socket,
//! so an operator can tell what runs where (a package upgrade replaces the
//! binary on disk before the daemon restarts).

use xlb_core::api::BuildInfo;

/// The commit `cargo xtask package` builds from (it sets `XLB_GIT_COMMIT`);
/// other builds say "unknown".
const GIT_COMMIT: Option<&str> = option_env!("XLB_GIT_COMMIT");

/// The id of a balancer object: its bytes hashed (xxh64), 16 hex digits.
pub fn object_build_id(object: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh64::xxh64(object, 0))
}

/// This process's build.
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: GIT_COMMIT
            .filter(|c| !c.is_empty())
            .unwrap_or("unknown")
            .to_string(),
        object_build_id: object_build_id(xlb_dataplane::balancer_object()),
        layout_version: lb_common::LAYOUT_VERSION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_id_follows_the_bytes() {
        let a = object_build_id(b"one object");
        assert_eq!(a.len(), 16, "{a}");
        assert_eq!(a, object_build_id(b"one object"));
        assert_ne!(a, object_build_id(b"another object"));
    }

    #[test]
    fn this_build_names_its_version_and_layout() {
        let info = build_info();
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.layout_version, lb_common::LAYOUT_VERSION);
        assert!(!info.git_commit.is_empty());
        assert_eq!(info.object_build_id.len(), 16);
    }
}
