//! Builds the XDP object (lb-ebpf) with the nightly toolchain and bpf-linker,
//! so a plain `cargo build` of the controller also builds the kernel side.
//! The objects land in OUT_DIR and are embedded by `objects.rs`.
//!
//! One eBPF build per target directory, not one per build of this crate:
//! cargo builds lb-dataplane several times in one run (clippy's check, the
//! dev build, the tests' build with `fault-injection`), each with its own
//! OUT_DIR, and aya-build puts its nightly `cargo build` (core included)
//! under OUT_DIR: two and a half minutes each on two cores. So aya-build
//! builds into `<target>/xlb-ebpf/` (one cargo target directory, which
//! cargo itself keeps up to date and locks), under a file lock held until
//! the objects are copied into this build's OUT_DIR.
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The objects aya-build leaves in its output folder, one per binary of
/// lb-ebpf.
const OBJECTS: [&str; 3] = ["lb-ebpf", "xlb-aux", "xlb-decap"];

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../lb-ebpf");
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("{}", ebpf_dir.display()))?;
    let root_dir = ebpf_dir.to_str().context("non-UTF-8 path to lb-ebpf")?;
    println!("cargo:rerun-if-changed=../lb-common/src");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
    let shared = shared_dir(&out_dir);
    let _lock = match &shared {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let lock = File::create(dir.join(".lock"))
                .with_context(|| format!("creating {}/.lock", dir.display()))?;
            lock.lock()
                .with_context(|| format!("locking {}/.lock", dir.display()))?;
            // SAFETY: a build script is one thread until aya-build spawns
            // its own (after reading OUT_DIR); nothing else reads the
            // environment meanwhile.
            unsafe { std::env::set_var("OUT_DIR", dir) };
            Some(lock)
        }
        None => None,
    };
    let built = aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the XDP program failed; run `cargo xtask setup` first \
         (it installs rust-src for nightly and bpf-linker)",
    );
    if shared.is_some() {
        // SAFETY: as above; the stderr thread aya-build spawned has ended.
        unsafe { std::env::set_var("OUT_DIR", &out_dir) };
    }
    built?;
    for name in OBJECTS {
        let object = out_dir.join(name);
        match &shared {
            Some(dir) if dir.join(name).exists() => {
                std::fs::copy(dir.join(name), &object).with_context(|| {
                    format!(
                        "copying {} to {}",
                        dir.join(name).display(),
                        object.display()
                    )
                })?;
            }
            // With AYA_BUILD_SKIP=1 (pure-logic work without the eBPF
            // toolchain) no object is built: leave an empty one, which the
            // loader refuses by name.
            _ if !object.exists() => {
                std::fs::write(&object, b"").context("writing an empty placeholder object")?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `<target>/xlb-ebpf` for an OUT_DIR of cargo's layout,
/// `<target>/<profile>/build/<package>-<hash>/out`; `None` for any other
/// layout (aya-build then builds under OUT_DIR, as it does by default).
fn shared_dir(out_dir: &Path) -> Option<PathBuf> {
    let build = out_dir.parent()?.parent()?;
    if out_dir.file_name()? != "out" || build.file_name()? != "build" {
        return None;
    }
    Some(build.parent()?.parent()?.join("xlb-ebpf"))
}
