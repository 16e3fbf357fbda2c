//! Running commands: cargo (the one running xtask) and any other, failing
//! with the command line when one fails. Below every subcommand's module.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context as _, bail};

/// Cargo, with every binary it builds stamped with the commit
/// (`XLB_GIT_COMMIT`, read by lb-userspace's build_info: `xlb version`).
/// The same value for every build of one xtask run, so no crate is built
/// twice for a changed stamp.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    if let Ok(commit) = git_commit() {
        cmd.env("XLB_GIT_COMMIT", commit);
    }
    cmd
}

/// The commit of the work tree, `git rev-parse --short=12 HEAD`, with
/// "-dirty" when the tree has changes not committed (the binary then is not
/// that commit). Asked once per xtask run.
pub fn git_commit() -> anyhow::Result<String> {
    static COMMIT: OnceLock<Result<String, String>> = OnceLock::new();
    COMMIT
        .get_or_init(|| ask_git().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn ask_git() -> anyhow::Result<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace");
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(workspace)
        .output()
        .context("running git rev-parse")?;
    if !out.status.success() {
        bail!(
            "git rev-parse HEAD failed in {}: {}",
            workspace.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let commit = String::from_utf8(out.stdout)?.trim().to_string();
    let dirty = !Command::new("git")
        .args(["diff", "--quiet", "HEAD", "--"])
        .current_dir(workspace)
        .status()
        .context("running git diff")?
        .success();
    Ok(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
