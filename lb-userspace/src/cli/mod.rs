//! The `xlb` command line: clap definitions, and which module runs each
//! subcommand. Exit codes (DESIGN.md): 0 ok, 1 refused by a safety check, 2
//! bad input (clap's usage errors too), 3 changes planned, 4 daemon or
//! kernel failure.
//!
//! - `args`: the grammar (clap): subcommands and their arguments;
//! - `help`: the grouped `--help` and the `Command` the parser uses;
//! - `output`: output formats, failures and their exit codes;
//! - `client`: the typed client of the daemon's control socket;
//! - `change`: validate, plan, apply, rollback (and following a bake);
//! - `edit`: drain, undrain, weight;
//! - `read`: status, top, history, show, diff, repair;
//! - `fleet`: the nodes of a fleet compared;
//! - `node`: this node's drain from the routers, and its announce state;
//! - `trace`: `xlb trace` and `xlb capture`, streamed from the daemon;
//! - `run`, `detach`, `decap`, `simulate`: the commands that load programs;
//! - `version`: this build and the daemon's.

pub mod args;
pub mod change;
pub mod client;
mod decap;
mod detach;
pub mod edit;
pub mod fleet;
pub mod help;
mod node;
pub mod output;
mod read;
mod run;
mod simulate;
pub mod top;
mod trace;
pub mod version;

use std::process::ExitCode;

pub use args::{Cli, Command, FleetCommand, RunArgs, XdpModeArg};
pub use output::{Failure, Output};

/// A command whose output goes to a reader that stopped reading
/// (`xlb status | head`) ends there, as other Unix tools do (killed by
/// SIGPIPE, status 141 in a shell), instead of panicking in `println!`
/// with a backtrace: the Rust runtime ignores SIGPIPE, so a write to a
/// closed pipe fails and `println!` panics on the failure. Not for `xlb
/// run`: a daemon must not die of a client that went away (its sockets'
/// writes fail with EPIPE and are handled).
fn stop_at_a_closed_pipe() {
    // SAFETY: sets this process's SIGPIPE disposition back to the default;
    // no handler is installed and no other state is touched.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Run one parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Run(args) => {
            // Before the config is read (memory.rs).
            crate::memory::no_huge_pages();
            run::run(&cli.socket, args)
        }
        Command::Detach {
            interface,
            bpffs,
            announce_table,
        } => detach::detach(
            &cli.socket,
            cli.output,
            interface,
            bpffs.as_deref(),
            *announce_table,
        ),
        Command::Validate { file } => change::validate(cli.output, file),
        Command::Plan {
            file,
            base,
            revision,
            state_dir,
            out,
            force,
            detailed_exitcode,
        } => {
            let base = match (base, revision) {
                (Some(path), _) => Some(change::Base::File(path.clone())),
                (None, Some(n)) => Some(change::Base::Revision(*n, state_dir.clone())),
                (None, None) => None,
            };
            change::plan(&cli, file, base, out.as_deref(), *force, *detailed_exitcode)
        }
        Command::Apply {
            file,
            message,
            wait,
            force,
        } => change::apply(&cli, file, message.clone(), *force, *wait),
        Command::Rollback {
            to_revision,
            message,
        } => change::rollback(&cli, *to_revision, message.clone()),
        Command::Simulate {
            file,
            flows,
            pcap,
            seed,
        } => simulate::simulate(cli.output, file, *flows, pcap.clone(), *seed),
        Command::Drain(a) => edit::run(&cli, a.edit(xlb_core::edit::Change::Drain), &a.options),
        Command::Undrain(a) => edit::run(&cli, a.edit(xlb_core::edit::Change::Undrain), &a.options),
        Command::Weight(a) => edit::run(&cli, a.edit(), &a.options),
        Command::Status { vip } => read::status(&cli, vip.as_deref()),
        Command::Trace(args) => trace::trace(&cli, args),
        Command::Capture(args) => trace::capture(&cli, args),
        Command::Top { interval, count } => read::top(&cli, *interval, *count),
        Command::History { store } => read::history(&cli, store.state_dir.as_deref()),
        Command::Show {
            revision,
            config_text,
            store,
        } => read::show(&cli, *revision, *config_text, store.state_dir.as_deref()),
        Command::Diff { from, to, store } => {
            read::diff(&cli, *from, *to, store.state_dir.as_deref())
        }
        Command::Repair => read::repair(&cli),
        Command::Fleet(command) => fleet::run(cli.output, command),
        Command::Node(command) => node::run(&cli, command),
        Command::Version => version::version(&cli.socket, cli.output),
        Command::Decap {
            interface,
            gue_port,
            addresses,
            from,
            mode,
        } => decap::command(
            cli.output,
            xlb_dataplane::decap::DecapOptions {
                interface: interface.clone(),
                gue_port: *gue_port,
                extra_addresses: addresses.clone(),
                from: from.clone(),
                mode: (*mode).into(),
            },
        ),
    }
}

/// The binary's entry: parse, run, map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = help::command()
        .try_get_matches()
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m))
        .unwrap_or_else(|e| e.exit());
    let output = cli.output;
    if !matches!(cli.command, Command::Run(_)) {
        stop_at_a_closed_pipe();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("xlb: {}", f.message);
            // `-o json`: the error is a document on stdout as well, for
            // scripts that read only stdout (the exit code is the same),
            // unless the command printed its own (a refused plan's).
            if output == Output::Json && !output::json_printed() {
                output::print_json(&serde_json::json!({
                    "schema_version": xlb_core::status::SCHEMA_VERSION,
                    "error": { "exit_code": f.code, "message": f.message },
                }));
            }
            ExitCode::from(f.code)
        }
    }
}
