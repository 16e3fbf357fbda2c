//! The commands that read the daemon: `status`, `top`, `history`, `show`,
//! and `repair` (which rewrites what drifted back to what was applied).

use xlb_core::revision::{render_history, render_revision};
use xlb_core::status::{self, SCHEMA_VERSION};

use super::args::Cli;
use super::client::Client;
use super::output::{Failure, Output, print_json};

pub(super) fn status(cli: &Cli, vip: Option<&str>) -> Result<(), Failure> {
    let mut s = Client::new(&cli.socket).status()?;
    if let Some(name) = vip {
        if !s.vips.iter().any(|v| v.name == name) {
            let served: Vec<&str> = s.vips.iter().map(|v| v.name.as_str()).collect();
            return Err(Failure::bad_input(format!(
                "--vip {name}: the daemon serves no VIP of that name (it serves: {})",
                served.join(", ")
            )));
        }
        s.vips.retain(|v| v.name == name);
    }
    match cli.output {
        Output::Json => print_json(&s),
        Output::Table => print!("{}", status::render_table(&s, false)),
        Output::Wide => print!("{}", status::render_table(&s, true)),
    }
    Ok(())
}

pub(super) fn history(cli: &Cli) -> Result<(), Failure> {
    let list = Client::new(&cli.socket).history()?;
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

pub(super) fn show(cli: &Cli, number: u64, config_text: bool) -> Result<(), Failure> {
    let rev = Client::new(&cli.socket).show(number)?;
    if config_text {
        print!("{}", rev.config_text);
    } else if cli.output == Output::Json {
        print_json(&rev);
    } else {
        print!("{}", render_revision(&rev));
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
    use std::io::{IsTerminal, Write};
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
