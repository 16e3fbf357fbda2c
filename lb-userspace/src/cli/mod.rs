//! The `xlb` command line: clap definitions, and which module runs each
//! subcommand. Exit codes (DESIGN.md): 0 ok, 1 refused by a safety check, 2
//! bad input (clap's usage errors too), 3 changes planned, 4 daemon or
//! kernel failure.
//!
//! - `output`: output formats, failures and their exit codes;
//! - `client`: the typed client of the daemon's control socket;
//! - `change`: validate, plan, apply, rollback (and following a bake);
//! - `edit`: drain, undrain, weight;
//! - `read`: status, top, history, show, repair;
//! - `run`, `detach`, `decap`, `simulate`: the commands that load programs.

pub mod change;
pub mod client;
mod decap;
mod detach;
pub mod edit;
pub mod output;
mod read;
mod run;
mod simulate;
pub mod top;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use xlb_core::api;
use xlb_dataplane::AttachMode;

pub use output::{Failure, Output};

#[derive(Parser, Debug)]
#[command(
    name = "xlb",
    version,
    about = "xlb: an XDP layer-4 load balancer with Maglev hashing"
)]
pub struct Cli {
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The daemon's control socket.
    #[arg(long, global = true, env = "XLB_SOCKET", default_value = api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// How an XDP program is attached (`run --xdp-mode`, `decap --mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) mode where the driver has it, else generic.
    Auto,
    /// Native XDP in the driver.
    Native,
    /// Generic XDP (after the stack allocated the skb; slower).
    #[value(alias = "generic")]
    Skb,
}

impl From<XdpModeArg> for AttachMode {
    fn from(m: XdpModeArg) -> Self {
        match m {
            XdpModeArg::Auto => AttachMode::Auto,
            XdpModeArg::Native => AttachMode::Native,
            XdpModeArg::Skb => AttachMode::Generic,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: attach to the config's interface, apply, serve the API.
    Run(RunArgs),
    /// Remove the balancer from an interface: unpin its XDP link (the program
    /// is detached) and every pinned map. Forwarding on it stops. Refused
    /// while a daemon serves the interface on --socket.
    Detach {
        #[arg(long)]
        interface: String,
        /// The bpffs mount the pins are under.
        #[arg(long, default_value = xlb_dataplane::DEFAULT_BPFFS)]
        bpffs: PathBuf,
    },
    /// Check a config file offline; nothing is applied.
    Validate { file: PathBuf },
    /// Apply a config file to the running daemon (all or nothing), recorded
    /// as a new revision.
    Apply {
        file: PathBuf,
        /// Why: recorded in the revision (`xlb history`).
        #[arg(short, long)]
        message: Option<String>,
        /// Wait for the bake: exit 0 when it passes, 1 when the daemon
        /// rolled the change back (a progress bar on a terminal).
        #[arg(long)]
        wait: bool,
        /// Apply even when the safety checks refuse it.
        #[arg(long)]
        force: bool,
    },
    /// What a config would do before it is applied: the diff, each backend's
    /// share today and after, the flows that move; exit 1 when a safety
    /// check refuses it.
    Plan {
        file: PathBuf,
        /// Plan offline against this config file instead of the running daemon.
        #[arg(long, conflicts_with = "revision")]
        base: Option<PathBuf>,
        /// Plan offline against this recorded revision (read from the state
        /// directory, no daemon needed).
        #[arg(long)]
        revision: Option<u64>,
        /// The daemon's state directory, for --revision (default
        /// /var/lib/xlb/<the file's interface>).
        #[arg(long, requires = "revision")]
        state_dir: Option<PathBuf>,
        /// Write the plan (with the exact config) for `xlb apply PLANFILE`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Exit 0 even when a safety check refuses it.
        #[arg(long)]
        force: bool,
        /// Exit 3 when the plan has changes (0: none).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Staging check on the real XDP program, offline: load it privately
    /// (attached to nothing), fill its maps from FILE, push synthetic flows
    /// (or a pcap) through it and compare each backend's share with its
    /// expected share; exit 1 beyond the VIP's `max_ratio`. Needs CAP_BPF.
    Simulate {
        file: PathBuf,
        /// Synthetic flows per VIP.
        #[arg(long, default_value_t = xlb_dataplane::staging::DEFAULT_FLOWS, conflicts_with = "pcap")]
        flows: usize,
        /// Replay the packets of this pcap file (Ethernet) instead.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// Seed of the synthetic flows (the same seed, the same flows).
        #[arg(long, default_value_t = xlb_dataplane::staging::DEFAULT_SEED)]
        seed: u64,
    },
    /// The kept revisions, oldest first: who applied what, when, and how it ended.
    History,
    /// Re-apply an earlier revision as a new one (default: the live revision
    /// before the current).
    Rollback {
        #[arg(long)]
        to_revision: Option<u64>,
        /// Why: recorded in the revision and the audit log.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// One revision: its record and the exact config applied.
    Show {
        revision: u64,
        /// Print only the exact config text, to take it over into a file
        /// (`xlb show 7 --config-text > xlb.toml`).
        #[arg(long)]
        config_text: bool,
    },
    /// Take a backend out of its VIP's Maglev table, keeping its established
    /// flows: `state = "draining"` in the live config, planned, checked and
    /// applied as a new revision (exit 1 when a safety check refuses it).
    Drain(edit::EditArgs),
    /// Put a draining backend back into the table (`state = "active"`), as
    /// a new revision.
    Undrain(edit::EditArgs),
    /// Change a backend's weight in the live config, as a new revision.
    Weight(edit::WeightArgs),
    /// Per VIP and backend: weights, expected, table and observed shares,
    /// counters, and the imbalance detector's verdict.
    Status,
    /// Rates and shares per backend, refreshed; one logfmt line per interval
    /// when stdout is not a terminal.
    Top {
        /// Time between refreshes ("1s", "500ms").
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Stop after this many refreshes (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Rewrite every Maglev table and backend entry from the applied config
    /// (after something else changed them: see "drift" in `xlb status`).
    Repair,
    /// On a backend behind a tunnelling xlb: strip IPIP and GUE addressed to
    /// this host in XDP and hand the inner packet to the stack (no tunnel
    /// device needed). Runs until SIGINT/SIGTERM, then detaches and prints
    /// its counters. Needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON.
    Decap {
        /// The interface tunnelled packets arrive on; all its IPv4 and IPv6
        /// addresses (read at start) are tunnel destinations.
        #[arg(long)]
        interface: String,
        /// UDP destination port of GUE packets.
        #[arg(long, default_value_t = lb_common::DEFAULT_GUE_PORT,
              value_parser = clap::value_parser!(u16).range(1..))]
        gue_port: u16,
        /// Another tunnel destination this host answers for (repeatable).
        #[arg(long = "address", value_name = "IP")]
        addresses: Vec<std::net::IpAddr>,
        /// XDP attach mode (the values of `run --xdp-mode`; "generic" is
        /// "skb").
        #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
        mode: XdpModeArg,
    },
}

/// `xlb run`'s arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,
    /// Serve /metrics, /api/status and the status page here instead of
    /// the config's `metrics_address`.
    #[arg(long)]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Where revisions are kept (default /var/lib/xlb/<interface>).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// How long an apply bakes: skew in that window rolls it back on
    /// its own ("0s" turns baking off).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub bake_window: std::time::Duration,
    /// How long a skew must last during a bake to roll back (the shorter
    /// of this and the VIP's `hold`).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub bake_hold: std::time::Duration,
    /// The collector's period while a revision bakes (1s otherwise).
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub bake_tick: std::time::Duration,
    /// How many revisions to keep (the live one is always kept).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_revisions: u64,
    /// Let this group use the control socket (0660 root:GROUP): its
    /// members may also change state; others only root (see
    /// deploy/systemd/README.md).
    #[arg(long, env = "XLB_SOCKET_GROUP", value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// The bpffs mount the maps and the XDP link are pinned under
    /// (`BPFFS/xlb/<interface>/`); mounted when it is the default and
    /// not a bpffs yet.
    #[arg(long, default_value = xlb_dataplane::DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
    /// Load the balancer from this object file instead of the one built
    /// into xlb (staging a rebuilt program; swapped in under the live
    /// link like any restart).
    #[arg(long, value_name = "FILE")]
    pub object: Option<PathBuf>,
}

/// Run one parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Run(args) => run::run(&cli.socket, args),
        Command::Detach { interface, bpffs } => {
            detach::detach(&cli.socket, cli.output, interface, bpffs)
        }
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
        Command::Status => read::status(&cli),
        Command::Top { interval, count } => read::top(&cli, *interval, *count),
        Command::History => read::history(&cli),
        Command::Show {
            revision,
            config_text,
        } => read::show(&cli, *revision, *config_text),
        Command::Repair => read::repair(&cli),
        Command::Decap {
            interface,
            gue_port,
            addresses,
            mode,
        } => decap::command(
            cli.output,
            xlb_dataplane::decap::DecapOptions {
                interface: interface.clone(),
                gue_port: *gue_port,
                extra_addresses: addresses.clone(),
                mode: (*mode).into(),
            },
        ),
    }
}

/// The binary's entry: parse, run, map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("xlb: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
