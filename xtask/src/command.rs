//! Running commands: cargo (the one running xtask) and any other, failing
//! with the command line when one fails. Below every subcommand's module.

use std::process::Command;

use anyhow::{Context as _, bail};

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
