//! `cargo xtask setup`: rust-src for nightly, bpf-linker linked against the
//! nightly toolchain's own LLVM (TESTBED.md), cargo-deb (`cargo xtask
//! package`), Debian packages for the tests.
//! Each step checks first, so a second run finishes in seconds.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::command::run;

/// Debian packages the tests, the demo and the benches use.
const PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "bpftool",
    "iputils-ping",
    "netcat-openbsd",
    "tcpdump",
    // promtool for the rules' unit tests, and a real server that scrapes the
    // daemon in the end-to-end test.
    "prometheus",
    // Headless, for the status page test.
    "chromium",
    // The baseline of the connections-per-second bench (xtask/benches/vs_haproxy.rs).
    "haproxy",
    // tests/tests/privileges.rs: `systemd-analyze verify`/`security` of the
    // unit, its syscall filter; strace checks the daemon stays inside it.
    "systemd",
    "strace",
    // The fleet testbed (tests/src/fleet.rs, `cargo xtask demo --fleet`): BIRD 2
    // speaks BGP and BFD for every node and the router (deploy/bird/).
    "bird2",
    // The fleet's store (lb-fleet, tests/tests/rollout.rs): etcd and etcdctl;
    // etcd-client's build script compiles etcd's protobufs with protoc, which
    // needs the well-known types (google/protobuf/*.proto) of libprotobuf-dev:
    // only a recommendation of protobuf-compiler, and recommendations are not
    // installed here; openssl makes the tests' CA and certificates.
    "etcd-server",
    "etcd-client",
    "protobuf-compiler",
    "libprotobuf-dev",
    "openssl",
    // tests/tests/package.rs: `man xlb` from the installed package.
    "man-db",
];

/// cargo-deb, pinned: `cargo xtask package` (package.rs) builds the .deb
/// with it.
const CARGO_DEB_VERSION: &str = "3.8.0";

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        println!("setup: rust-src for nightly: present");
        return Ok(());
    }
    println!("setup: installing rust-src for nightly");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> anyhow::Result<()> {
    // A working linker runs on its own (outside cargo); a nightly update
    // changes the LLVM soname and breaks it, and then we rebuild.
    if ok(Command::new("bpf-linker").arg("--version")) {
        println!("setup: bpf-linker: present and runs");
        return Ok(());
    }
    println!("setup: building bpf-linker against nightly's LLVM (about a minute)");
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let home = std::env::var("HOME").context("HOME")?;
    // Outlives the install: the binary's runpath points here.
    let prefix = PathBuf::from(home).join(".cache/xlb-llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let mut found = false;
    for entry in std::fs::read_dir(PathBuf::from(sysroot.trim()).join("lib"))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("libLLVM.so.") {
            found = true;
            // The soname the binary asks for at run time, and the name `-lLLVM` finds.
            for link in [lib.join(name), lib.join("libLLVM.so")] {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&path, &link)?;
            }
        }
    }
    if !found {
        bail!(
            "no libLLVM.so.* in the nightly toolchain at {}",
            sysroot.trim()
        );
    }
    run(Command::new("cargo")
        .args([
            "+stable",
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", &prefix))?;
    if !ok(Command::new("bpf-linker").arg("--version")) {
        bail!("bpf-linker was installed but does not run on its own");
    }
    Ok(())
}

fn cargo_deb() -> anyhow::Result<()> {
    let present = output(Command::new("cargo").args(["deb", "--version"]));
    if present
        .as_deref()
        .is_ok_and(|v| v.split_whitespace().any(|w| w == CARGO_DEB_VERSION))
    {
        println!("setup: cargo-deb {CARGO_DEB_VERSION}: present");
        return Ok(());
    }
    println!("setup: installing cargo-deb {CARGO_DEB_VERSION} (about two minutes)");
    run(Command::new("cargo").args([
        "+stable",
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
        "--force",
    ]))
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_ok_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        println!("setup: Debian packages: present");
        return Ok(());
    }
    println!("setup: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

pub fn setup() -> anyhow::Result<()> {
    rust_src()?;
    bpf_linker()?;
    cargo_deb()?;
    debian_packages()?;
    println!("setup: ready");
    Ok(())
}
