//! `cargo xtask`: the project's own commands.
//!
//! - `setup`: make a fresh machine of this kind ready (idempotent);
//! - `build`: build everything, the XDP object included;
//! - `test`: modcheck, setup, then every test (the command CI runs);
//! - `demo`: setup, build, and run the namespace demo (`--fleet`: the fleet
//!   behind an ECMP router, tests/src/bin/xlb-fleet-demo.rs);
//! - `package`: setup, then the Debian package (package.rs);
//! - `incident-replay [--fleet]`: setup, build, and replay the outage on one node
//!   or on a fleet (docs/INCIDENT.md);
//! - `bench [NAME...]`: setup, then the benchmarks in xtask/benches (all, or
//!   the named ones; `dataplane` names the data-plane group);
//! - `modcheck`: check that no module of any workspace crate imports in a
//!   cycle (modcheck.rs says what counts).

mod command;
mod modcheck;
mod package;
mod setup;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use command::{cargo, run};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what builds and tests need: rust-src (nightly), bpf-linker, Debian packages.
    Setup,
    /// Build the workspace (and the XDP object, through lb-userspace's build.rs).
    Build,
    /// Run modcheck and setup, then every test.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run setup, build, then the demo in network namespaces.
    Demo {
        /// The fleet instead: a router running BIRD with ECMP to three xlb
        /// nodes, `xlb fleet status`, one node drained and back.
        #[arg(long)]
        fleet: bool,
    },
    /// Run setup, build, then the replay of the outage behind xlb in network
    /// namespaces (docs/INCIDENT.md); exit 1 when it misses a goal.
    IncidentReplay {
        /// On a fleet instead: three nodes behind an ECMP router with etcd,
        /// the change as a rollout with a canary and on all three at once.
        #[arg(long)]
        fleet: bool,
    },
    /// Run the benchmarks (xtask/benches); results go to docs/BENCHMARKS.md by hand.
    Bench {
        /// Benches to run (file names in xtask/benches, or `dataplane` for the
        /// data-plane group); none runs them all.
        names: Vec<String>,
    },
    /// Run setup, then build the Debian package (release `xlb`, unit, man
    /// pages, completions, deploy/ files) with cargo-deb; prints its path.
    Package {
        /// The package's version (default: the crate's, `0.1.0-1`).
        #[arg(long)]
        deb_version: Option<String>,
        /// Where to write the .deb (default: target/debian/).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// Package the dev build (unoptimized) instead of the release build:
        /// the same files and scripts, for tests (`cargo xtask test` uses it
        /// so the run stays within its time); never to ship.
        #[arg(long)]
        dev: bool,
    },
    /// Check that no module of any workspace crate imports in a cycle; exit 1
    /// naming the files and the names that make each cycle.
    Modcheck,
}

/// Every bench in xtask/benches, in the order `cargo xtask bench` runs them.
const BENCHES: &[&str] = &[
    "maglev",
    "dataplane",
    "lru_choice",
    "veth_pps",
    "vs_haproxy",
    "observe",
    "scrape_load",
    "fleet_status",
    "control",
    "held",
];

/// Names that stand for several benches. `dataplane` is the issue's
/// `cargo xtask bench dataplane`: the per-packet times, the connection-table
/// LRU choice, packets per second on a veth, connections per second against
/// HAProxy. (So the per-packet bench alone is `cargo bench -p xtask --bench
/// dataplane`.)
const GROUPS: &[(&str, &[&str])] = &[(
    "dataplane",
    &["dataplane", "lru_choice", "veth_pps", "vs_haproxy"],
)];

/// The benches `names` stand for, in `BENCHES` order, each once.
fn benches_named(names: &[String]) -> anyhow::Result<Vec<&'static str>> {
    if names.is_empty() {
        return Ok(BENCHES.to_vec());
    }
    let mut wanted = Vec::new();
    for name in names {
        if let Some((_, members)) = GROUPS.iter().find(|(group, _)| group == name) {
            wanted.extend_from_slice(members);
        } else if let Some(bench) = BENCHES.iter().find(|b| *b == name) {
            wanted.push(*bench);
        } else {
            bail!(
                "no bench named {name:?}; benches: {}; groups: {}",
                BENCHES.join(", "),
                GROUPS
                    .iter()
                    .map(|(g, _)| *g)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(BENCHES
        .iter()
        .copied()
        .filter(|b| wanted.contains(b))
        .collect())
}

/// Clippy on the eBPF crate, the way aya-build builds it: the nightly
/// toolchain, its own target, `core` built from source.
fn ebpf_clippy() -> std::process::Command {
    let mut cmd = std::process::Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "-p",
        "lb-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--bins",
        "--release",
        "--",
        "-D",
        "warnings",
    ]);
    // Set by the stable cargo running xtask; they would pin its rustc.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::setup(),
        Cmd::Build => {
            setup::setup()?;
            run(cargo().args([
                "build",
                "--workspace",
                "--exclude",
                "lb-ebpf",
                "--all-targets",
            ]))
        }
        Cmd::Test { args } => {
            // No module imports in a cycle (modcheck.rs); it reads the
            // source only, so it goes before anything is built.
            if modcheck::run()? > 0 {
                bail!("module cycles (above): a module uses what is below it, never what uses it");
            }
            run(cargo().args(["fmt", "--all", "--check"]))
                .context("formatting: run `cargo fmt --all`")?;
            setup::setup()?;
            // Clippy with the workspace lints, every warning an error: the
            // host crates, then the eBPF crate on its own target.
            run(cargo().args([
                "clippy",
                "--workspace",
                "--exclude",
                "lb-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            run(&mut ebpf_clippy())?;
            // Build the `xlb` binary first: the end-to-end tests run it.
            run(cargo().args(["build", "-p", "lb-userspace", "--bin", "xlb"]))?;
            // The package, once, of the dev build just made (a release build
            // of every dependency would take longer than the rest of the run;
            // the files and maintainer scripts are the same): tests/tests/
            // package.rs repackages it (other versions) without building again.
            package::package(&package::Options {
                deb_version: None,
                output: None,
                profile: package::Profile::Dev,
            })?;
            // Every test binary runs even when one fails, so a run reports
            // every failure at once.
            run(cargo()
                .args([
                    "test",
                    "--workspace",
                    "--exclude",
                    "lb-ebpf",
                    "--no-fail-fast",
                ])
                .args(&args))
        }
        Cmd::Bench { names } => {
            let benches = benches_named(&names)?;
            setup::setup()?;
            if ["scrape_load", "fleet_status", "control"]
                .iter()
                .any(|b| benches.contains(b))
            {
                // They run `xlb` (the daemon, the CLI): the release binary
                // beside the bench (tests::xlbd::xlb_binary looks there).
                run(cargo().args(["build", "--release", "-p", "lb-userspace", "--bin", "xlb"]))?;
            }
            let mut cmd = cargo();
            cmd.args(["bench", "-p", "xtask"]);
            for bench in benches {
                cmd.args(["--bench", bench]);
            }
            run(&mut cmd)
        }
        Cmd::Package {
            deb_version,
            output,
            dev,
        } => {
            setup::setup()?;
            package::package(&package::Options {
                deb_version,
                output,
                profile: if dev {
                    package::Profile::Dev
                } else {
                    package::Profile::Release
                },
            })
            .map(drop)
        }
        Cmd::Modcheck => {
            if modcheck::run()? > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Demo { fleet } => {
            setup::setup()?;
            run(cargo().args(["build", "-p", "lb-userspace", "--bin", "xlb"]))?;
            let demo = if fleet { "xlb-fleet-demo" } else { "xlb-demo" };
            run(cargo().args(["run", "-p", "tests", "--bin", demo]))
        }
        Cmd::IncidentReplay { fleet } => {
            setup::setup()?;
            run(cargo().args(["build", "-p", "lb-userspace", "--bin", "xlb"]))?;
            let replay = if fleet {
                "xlb-fleet-incident"
            } else {
                "xlb-incident"
            };
            run(cargo().args(["run", "-p", "tests", "--bin", replay]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_name_runs_every_bench() {
        assert_eq!(benches_named(&[]).unwrap(), BENCHES);
    }

    #[test]
    fn dataplane_names_the_group_and_others_add_to_it_once() {
        assert_eq!(
            benches_named(&names(&["observe", "dataplane", "veth_pps"])).unwrap(),
            [
                "dataplane",
                "lru_choice",
                "veth_pps",
                "vs_haproxy",
                "observe"
            ]
        );
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones() {
        let e = benches_named(&names(&["pps"])).unwrap_err().to_string();
        assert!(e.contains("\"pps\""), "{e}");
        assert!(e.contains("veth_pps"), "{e}");
    }

    #[test]
    fn every_bench_file_is_known() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let stem = path.file_stem().unwrap().to_str().unwrap();
                assert!(BENCHES.contains(&stem), "{stem}.rs is not in BENCHES");
            }
        }
    }
}
