//! `cargo xtask package`: the Debian package (cargo-deb, installed by
//! setup). The release `xlb` (or, for tests, the dev build), its man pages and shell completions generated
//! from the clap definitions (lb-userspace/examples/xlb-docs.rs), the unit
//! with the package's binary path, then cargo-deb with what
//! lb-userspace/Cargo.toml's `[package.metadata.deb]` lists.
//! deploy/debian/README.md says what the package holds and why.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::command::{cargo, git_commit, run};

/// Where the unit in deploy/ expects the binary, and where the package
/// puts it.
const UNIT_BINARY: &str = "/usr/local/bin/xlb";
const PACKAGE_BINARY: &str = "/usr/bin/xlb";

/// The workspace's root (xtask is one of its members).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The cargo target folder the build writes to.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace().join(dir)
            }
        }
        None => workspace().join("target"),
    }
}

/// The unit of deploy/systemd with the package's binary path.
pub fn package_unit(unit: &str) -> anyhow::Result<String> {
    let exec = format!("ExecStart={UNIT_BINARY} ");
    if !unit.contains(&exec) {
        bail!(
            "deploy/systemd/xlb.service has no `{exec}`: the package's unit cannot point at {PACKAGE_BINARY}"
        );
    }
    Ok(unit.replace(UNIT_BINARY, PACKAGE_BINARY))
}

/// The cargo profile the package's binary is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// What ships.
    Release,
    /// Unoptimized: the same package for tests (`cargo xtask test`), which
    /// have just built it.
    Dev,
}

impl Profile {
    /// Cargo's name of the profile.
    fn name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Dev => "dev",
        }
    }

    /// The folder of the target directory the profile builds into.
    fn folder(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Dev => "debug",
        }
    }
}

/// Options of `cargo xtask package`.
pub struct Options {
    /// The package's version instead of the crate's (`0.1.0-1`).
    pub deb_version: Option<String>,
    /// Where the .deb goes (default: cargo-deb's, `target/debian/`).
    pub output: Option<PathBuf>,
    /// Which build goes in.
    pub profile: Profile,
}

pub fn package(options: &Options) -> anyhow::Result<PathBuf> {
    let commit = git_commit().context("the commit to stamp the package's binary with")?;
    let started = std::time::Instant::now();
    run(cargo().args([
        "build",
        "--profile",
        options.profile.name(),
        "-p",
        "lb-userspace",
        "--bin",
        "xlb",
        "--example",
        "xlb-docs",
    ]))?;
    println!(
        "package: {} build of xlb {commit} took {:.0?}",
        options.profile.name(),
        started.elapsed()
    );
    let built = target_dir().join(options.profile.folder());
    let assets = built.join("deb-assets");
    std::fs::create_dir_all(&assets).with_context(|| format!("creating {}", assets.display()))?;
    run(Command::new(built.join("examples/xlb-docs")).arg(&assets))?;
    // Debian ships man pages compressed (-n: no name or time inside, so the
    // same pages give the same bytes).
    let man = assets.join("man");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .with_context(|| format!("reading {}", man.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.retain(|p| p.extension().is_some_and(|e| e == "1"));
    if !pages.iter().any(|p| p.ends_with("xlb.1")) {
        bail!("xlb-docs wrote no xlb.1 into {}", man.display());
    }
    run(Command::new("gzip").arg("-9nf").args(&pages))?;
    let unit_path = workspace().join("deploy/systemd/xlb.service");
    let unit = std::fs::read_to_string(&unit_path)
        .with_context(|| format!("reading {}", unit_path.display()))?;
    std::fs::write(assets.join("xlb.service"), package_unit(&unit)?)?;

    let mut deb = cargo();
    // cargo-deb strips the binary: the eBPF objects are embedded data,
    // which stripping leaves alone.
    // Asset paths under target/release/ name the profile's folder. cargo-deb
    // (pinned: setup.rs) warns that a dev profile is for tests only, which
    // is the only use `Profile::Dev` has.
    deb.args([
        "deb",
        "-p",
        "lb-userspace",
        "--no-build",
        "--profile",
        options.profile.name(),
    ]);
    if let Some(v) = &options.deb_version {
        deb.args(["--deb-version", v]);
    }
    if let Some(o) = &options.output {
        deb.arg("--output").arg(o);
    }
    let out = deb
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| {
            format!("running {deb:?} (is cargo-deb installed? `cargo xtask setup`)")
        })?;
    if !out.status.success() {
        bail!("{deb:?} failed: {}", out.status);
    }
    // cargo-deb prints the package's path last.
    let stdout = String::from_utf8(out.stdout)?;
    let path = stdout
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .with_context(|| format!("cargo deb printed no .deb path: {stdout}"))?;
    println!("package: {}", path.display());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_unit_runs_the_package_binary() {
        let unit = std::fs::read_to_string(workspace().join("deploy/systemd/xlb.service")).unwrap();
        let ours = package_unit(&unit).unwrap();
        assert!(ours.contains("ExecStart=/usr/bin/xlb run "), "{ours}");
        assert!(!ours.contains("/usr/local/bin/xlb"));
    }

    #[test]
    fn a_unit_without_the_binary_is_refused() {
        let e = package_unit("[Service]\nExecStart=/opt/xlb run\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ExecStart=/usr/local/bin/xlb"), "{e}");
    }
}
