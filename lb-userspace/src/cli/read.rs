//! The commands that read the daemon: `status`, `top`, `history`, `show`,
//! `diff` (the last three also from a state directory's store when no
//! daemon answers), and `repair` (which rewrites what drifted back to what was applied).

use std::io::IsTerminal as _;
use std::path::Path;

use xlb_core::revision::{self, Revision, Summary, render_history, render_revision};
use xlb_core::status::{self, SCHEMA_VERSION};

use super::args::Cli;
use super::client::Client;
use super::output::{Failure, Output, print_json, print_json_bytes};
use crate::store::Store;

pub(super) fn status(cli: &Cli, vip: Option<&str>) -> Result<(), Failure> {
    // One VIP is taken out of the document by the daemon.
    let client = Client::new(&cli.socket);
    if cli.output == Output::Json && !std::io::stdout().is_terminal() {
        // For a program: the daemon's JSON as it came (one line), neither
        // decoded nor encoded again: at 1,000 VIPs x 64 backends that was
        // most of the command's time (docs/METRICS.md).
        let json = client.status_json(vip)?;
        return print_json_bytes(&json)
            .map_err(|e| Failure::internal(format!("writing the status to stdout: {e}")));
    }
    let s = match vip {
        Some(name) => client.status_vip(name)?,
        None => client.status()?,
    };
    match cli.output {
        // At a terminal, indented for reading.
        Output::Json => print_json(&s),
        Output::Table => print!("{}", status::render_table(&s, false)),
        Output::Wide => print!("{}", status::render_table(&s, true)),
    }
    Ok(())
}

/// Where the revisions are read: the daemon at `--socket`, or with
/// `--state-dir DIR` the store in `DIR/revisions` when no daemon answers
/// there (opened read-only: a daemon may be starting beside it).
pub(super) struct Revisions<'a> {
    socket: &'a Path,
    state_dir: Option<&'a Path>,
    /// Said once on stderr, when the store answered.
    said: std::cell::Cell<bool>,
}

impl<'a> Revisions<'a> {
    pub(super) fn new(socket: &'a Path, state_dir: Option<&'a Path>) -> Self {
        Self {
            socket,
            state_dir,
            said: std::cell::Cell::new(false),
        }
    }

    /// From the daemon if it answers, else from the store (with
    /// `--state-dir`; without it, the daemon's absence is the failure).
    fn read<T>(
        &self,
        daemon: impl FnOnce(&Client) -> Result<Option<T>, Failure>,
        store: impl FnOnce(&Store, &Path) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        if let Some(answer) = daemon(&Client::new(self.socket))? {
            return Ok(answer);
        }
        let Some(dir) = self.state_dir else {
            return Err(Failure::internal(format!(
                "cannot reach the xlb daemon at {} (is `xlb run` running? is --socket right?); \
                 --state-dir DIR reads the kept revisions without it",
                self.socket.display()
            )));
        };
        let opened = open_store(dir)?;
        if !self.said.replace(true) {
            eprintln!(
                "xlb: no daemon answers at {}; read from the revision store in {}",
                self.socket.display(),
                dir.display()
            );
        }
        store(&opened, dir)
    }

    /// The kept revisions' summaries, oldest first.
    pub(super) fn list(&self) -> Result<Vec<Summary>, Failure> {
        self.read(|c| c.history_if_running(), |store, _| Ok(store.summaries()))
    }

    /// Revision `number` (exit 2 when it is not kept, as the daemon says).
    pub(super) fn get(&self, number: u64) -> Result<Revision, Failure> {
        self.read(
            |c| c.show_if_running(number),
            |store, dir| {
                store
                    .get(number)
                    .map_err(Failure::internal)?
                    .ok_or_else(|| {
                        Failure::bad_input(format!(
                            "no revision {number} in {} (see `xlb history --state-dir {}`)",
                            dir.display(),
                            dir.display()
                        ))
                    })
            },
        )
    }
}

/// The revision store of a state directory, opened read-only (a daemon
/// may be writing it): bad input when the directory holds none.
pub(super) fn open_store(state_dir: &Path) -> Result<Store, Failure> {
    let store_dir = state_dir.join("revisions");
    if !store_dir.is_dir() {
        return Err(Failure::bad_input(format!(
            "no revisions in {} (is --state-dir right?)",
            state_dir.display()
        )));
    }
    Store::open_read_only(&store_dir).map_err(Failure::bad_input)
}

pub(super) fn history(cli: &Cli, state_dir: Option<&Path>) -> Result<(), Failure> {
    let list = Revisions::new(&cli.socket, state_dir).list()?;
    if cli.output == Output::Json {
        print_json(&serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "revisions": list,
        }));
    } else {
        print!("{}", render_history(&list));
    }
    Ok(())
}

pub(super) fn show(
    cli: &Cli,
    number: u64,
    config_text: bool,
    state_dir: Option<&Path>,
) -> Result<(), Failure> {
    let rev = Revisions::new(&cli.socket, state_dir).get(number)?;
    if config_text {
        print!("{}", rev.config_text);
    } else if cli.output == Output::Json {
        print_json(&rev);
    } else {
        print!("{}", render_revision(&rev));
    }
    Ok(())
}

/// `xlb diff A B`: the config texts' diff and the plan from A to B.
pub(super) fn diff(cli: &Cli, from: u64, to: u64, state_dir: Option<&Path>) -> Result<(), Failure> {
    let revisions = Revisions::new(&cli.socket, state_dir);
    let (a, b) = (revisions.get(from)?, revisions.get(to)?);
    let d = revision::diff(&a, &b).map_err(Failure::bad_input)?;
    if cli.output == Output::Json {
        print_json(&d);
    } else {
        print!("{}", revision::render_diff(&d));
    }
    Ok(())
}

pub(super) fn repair(cli: &Cli) -> Result<(), Failure> {
    let r = Client::new(&cli.socket).repair()?;
    if cli.output == Output::Json {
        print_json(&serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "drifted": r.drifted,
            "rewritten": r.rewritten,
        }));
    } else if r.drifted.is_empty() {
        println!(
            "no drift found; rewrote the tables of {} VIPs anyway",
            r.rewritten.len()
        );
    } else {
        println!(
            "repaired {} (drifted); rewrote the tables of {} VIPs",
            r.drifted.join(", "),
            r.rewritten.len()
        );
    }
    Ok(())
}

pub(super) fn top(
    cli: &Cli,
    interval: std::time::Duration,
    count: Option<u64>,
) -> Result<(), Failure> {
    use std::io::Write;
    let tty = std::io::stdout().is_terminal();
    let mut shown = 0u64;
    let client = Client::new(&cli.socket);
    loop {
        let s = client.status()?;
        let mut out = std::io::stdout().lock();
        let written = if tty {
            // Home, clear, draw: the whole screen each time.
            write!(out, "\x1b[H\x1b[2J{}", super::top::render_screen(&s))
        } else {
            writeln!(out, "{}", super::top::render_line(&s))
        };
        // A closed pipe (`xlb top | head`) ends top quietly.
        if written.and_then(|_| out.flush()).is_err() {
            return Ok(());
        }
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}
