//! `cargo xtask`: the project's own commands.
//!
//! - `setup`: make a fresh machine of this kind ready (idempotent);
//! - `build`: build everything, the XDP object included;
//! - `test`: setup, then every test (the command CI runs);
//! - `demo`: setup, build, and run the namespace demo;
//! - `incident-replay`: setup, build, and replay the outage (docs/INCIDENT.md);
//! - `bench`: setup, then the benchmarks in xtask/benches.

mod setup;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

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
    /// Run setup, then every test.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run setup, build, then the demo in network namespaces.
    Demo,
    /// Run setup, build, then the replay of the outage behind xlb in network
    /// namespaces (docs/INCIDENT.md); exit 1 when it misses a goal.
    IncidentReplay,
    /// Run the benchmarks (xtask/benches); results go to docs/BENCHMARKS.md by hand.
    Bench,
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
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
            setup::setup()?;
            // Build the `xlb` binary first: the end-to-end tests run it.
            run(cargo().args(["build", "-p", "lb-userspace", "--bin", "xlb"]))?;
            run(cargo()
                .args(["test", "--workspace", "--exclude", "lb-ebpf"])
                .args(&args))
        }
        Cmd::Bench => {
            setup::setup()?;
            run(cargo().args([
                "bench",
                "-p",
                "xtask",
                "--bench",
                "maglev",
                "--bench",
                "dataplane",
                "--bench",
                "observe",
            ]))
        }
        Cmd::Demo => {
            setup::setup()?;
            run(cargo().args(["build", "-p", "lb-userspace", "--bin", "xlb"]))?;
            run(cargo().args(["run", "-p", "tests", "--bin", "xlb-demo"]))
        }
        Cmd::IncidentReplay => {
            setup::setup()?;
            run(cargo().args(["build", "-p", "lb-userspace", "--bin", "xlb"]))?;
            run(cargo().args(["run", "-p", "tests", "--bin", "xlb-incident"]))
        }
    }
}
