//! The package's generated documents, from the clap definitions of `xlb`
//! (`cargo xtask package` runs it): a man page for `xlb` and for every
//! subcommand (`xlb-run.1`, `xlb-fleet-status.1`, ...) in OUT/man/, and the
//! bash, zsh and fish completions in OUT/completions/.
//!
//! Usage: `xlb-docs OUT`

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: xlb-docs OUT (the folder to write man/ and completions/ into)");
    };
    let out = PathBuf::from(out);
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        // Pages of subcommands that were renamed or removed must not linger.
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // The grammar as the parser uses it: grouped help, per-subcommand globals.
    let command = xlb::cli::help::command();
    clap_mangen::generate_to(command.clone(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut command.clone(), "xlb", &completions)
            .with_context(|| {
                format!("writing {shell} completions into {}", completions.display())
            })?;
        println!("{}", path.display());
    }
    let pages = std::fs::read_dir(&man)?.count();
    println!("{pages} man pages in {}", man.display());
    Ok(())
}
