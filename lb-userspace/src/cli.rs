//! The `xlb` command line: clap definitions and what each subcommand does.
//! Exit codes (DESIGN.md): 0 ok, 1 refused by a safety check, 2 bad input
//! (clap's usage errors too), 4 daemon or kernel failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::{self, ErrorKind, Request, Response};
use crate::{config, daemon, status};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Native (driver) mode where the driver has it, else generic.
    Auto,
    /// Native XDP in the driver.
    Native,
    /// Generic XDP (after the stack allocated the skb; slower).
    Skb,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: attach to the config's interface, apply, serve the API.
    Run {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        xdp_mode: Mode,
        /// Serve /metrics, /api/status and the status page here instead of
        /// the config's `metrics_address`.
        #[arg(long)]
        metrics_address: Option<std::net::SocketAddr>,
        /// Where revisions are kept (default /var/lib/xlb/<interface>).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// How long an apply bakes: skew in that window rolls it back on
        /// its own ("0s" turns baking off).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        bake_window: std::time::Duration,
        /// How long a skew must last during a bake to roll back (the shorter
        /// of this and the VIP's `hold`).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        bake_hold: std::time::Duration,
        /// The collector's period while a revision bakes (1s otherwise).
        #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
        bake_tick: std::time::Duration,
        /// How many revisions to keep (the live one is always kept).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        keep_revisions: u64,
        /// Let this group use the control socket (0660 root:GROUP): its
        /// members may also change state; others only root (see
        /// deploy/systemd/README.md).
        #[arg(long, env = "XLB_SOCKET_GROUP", value_name = "GROUP")]
        socket_group: Option<String>,
        /// The bpffs mount the maps and the XDP link are pinned under
        /// (`BPFFS/xlb/<interface>/`); mounted when it is the default and
        /// not a bpffs yet.
        #[arg(long, default_value = crate::dataplane::DEFAULT_BPFFS)]
        bpffs: PathBuf,
        /// Load the balancer from this object file instead of the one built
        /// into xlb (staging a rebuilt program; swapped in under the live
        /// link like any restart).
        #[arg(long, value_name = "FILE")]
        object: Option<PathBuf>,
    },
    /// Remove the balancer from an interface: unpin its XDP link (the program
    /// is detached) and every pinned map. Forwarding on it stops. Refused
    /// while a daemon serves the interface on --socket.
    Detach {
        #[arg(long)]
        interface: String,
        /// The bpffs mount the pins are under.
        #[arg(long, default_value = crate::dataplane::DEFAULT_BPFFS)]
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
        #[arg(long, default_value_t = crate::staging::DEFAULT_FLOWS, conflicts_with = "pcap")]
        flows: usize,
        /// Replay the packets of this pcap file (Ethernet) instead.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// Seed of the synthetic flows (the same seed, the same flows).
        #[arg(long, default_value_t = crate::staging::DEFAULT_SEED)]
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
    Drain(crate::edit::command::EditArgs),
    /// Put a draining backend back into the table (`state = "active"`), as
    /// a new revision.
    Undrain(crate::edit::command::EditArgs),
    /// Change a backend's weight in the live config, as a new revision.
    Weight(crate::edit::command::WeightArgs),
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
        /// XDP attach mode ("skb" is accepted for generic, as in `run`).
        #[arg(long, value_enum, default_value_t = crate::decap::DecapMode::Auto)]
        mode: crate::decap::DecapMode,
    },
}

/// A failure with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub(crate) fn bad_input(message: impl ToString) -> Self {
        Self {
            code: 2,
            message: message.to_string(),
        }
    }
    pub(crate) fn internal(message: impl ToString) -> Self {
        Self {
            code: 4,
            message: message.to_string(),
        }
    }
}

impl From<api::ClientError> for Failure {
    fn from(e: api::ClientError) -> Self {
        Failure::internal(e)
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}

pub(crate) fn from_api_error(e: api::ApiError) -> Failure {
    match e.kind {
        ErrorKind::BadInput => Failure::bad_input(e.message),
        ErrorKind::Internal => Failure::internal(e.message),
        ErrorKind::Refused | ErrorKind::Forbidden => Failure {
            code: 1,
            message: e.message,
        },
    }
}

/// What `xlb plan --out` writes and `xlb apply PLANFILE` reads: the plan
/// and exactly the config text it was made for.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PlanFile {
    pub schema_version: u32,
    pub plan: crate::plan::Plan,
    pub config_file: String,
    pub config_text: String,
}

fn read_text(file: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(file)
        .map_err(|e| Failure::bad_input(format!("{}: cannot read: {e}", file.display())))
}

/// What an offline plan compares with.
enum Base {
    File(PathBuf),
    /// A recorded revision, from this state directory (or the default).
    Revision(u64, Option<PathBuf>),
}

fn plan_command(
    cli: &Cli,
    file: &std::path::Path,
    base: Option<Base>,
    out: Option<&std::path::Path>,
    force: bool,
    detailed_exitcode: bool,
) -> Result<(), Failure> {
    let text = read_text(file)?;
    let name = file.display().to_string();
    let candidate = config::parse(&text, &name).map_err(Failure::bad_input)?;
    let plan = match base {
        // Offline, against a file or a recorded revision.
        Some(base) => {
            let (base_text, base_name) = match base {
                Base::File(path) => (read_text(&path)?, path.display().to_string()),
                Base::Revision(n, dir) => {
                    let dir = dir.unwrap_or_else(|| {
                        PathBuf::from("/var/lib/xlb").join(&candidate.interface)
                    });
                    let store_dir = dir.join("revisions");
                    if !store_dir.is_dir() {
                        return Err(Failure::bad_input(format!(
                            "no revisions in {} (is --state-dir right?)",
                            dir.display()
                        )));
                    }
                    let store = crate::revisions::Store::open(&store_dir, usize::MAX)
                        .map_err(Failure::bad_input)?;
                    let rev = store.get(n).map_err(Failure::bad_input)?.ok_or_else(|| {
                        Failure::bad_input(format!("no revision {n} in {}", dir.display()))
                    })?;
                    (rev.config_text, format!("revision {n}"))
                }
            };
            let base = config::parse(&base_text, &base_name).map_err(Failure::bad_input)?;
            crate::plan::plan(&base, &candidate).map_err(Failure::bad_input)?
        }
        None => match api::call(
            &cli.socket,
            &Request::Plan {
                file: name.clone(),
                text: text.clone(),
                user: current_user(),
            },
        )? {
            Response::Plan(p) => *p,
            Response::Error(e) => return Err(from_api_error(e)),
            other => return Err(Failure::internal(format!("unexpected response: {other:?}"))),
        },
    };
    match cli.output {
        Output::Json => print_json(&plan),
        _ => print!("{}", plan.render_table()),
    }
    if let Some(out) = out {
        let doc = PlanFile {
            schema_version: crate::plan::SCHEMA_VERSION,
            plan: plan.clone(),
            config_file: name,
            config_text: text,
        };
        let json = serde_json::to_string_pretty(&doc).expect("plans serialize");
        std::fs::write(out, json + "\n")
            .map_err(|e| Failure::internal(format!("{}: cannot write: {e}", out.display())))?;
        eprintln!("plan written to {}", out.display());
    }
    if plan.refused() && !force {
        return Err(Failure {
            code: 1,
            message: "refused by the safety checks above (--force to plan it anyway)".into(),
        });
    }
    if detailed_exitcode && plan.changed {
        return Err(Failure {
            code: 3,
            message: "changes planned".into(),
        });
    }
    Ok(())
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run {
            config: file,
            xdp_mode,
            metrics_address,
            state_dir,
            keep_revisions,
            bake_window,
            bake_hold,
            bake_tick,
            socket_group,
            bpffs,
            object,
        } => {
            crate::privileges::check("xlb run", crate::privileges::DAEMON)
                .map_err(Failure::internal)?;
            let socket_group = socket_group
                .map(|g| crate::peer::SocketGroup::resolve(&g))
                .transpose()
                .map_err(Failure::bad_input)?;
            crate::peer::preflight(&cli.socket, socket_group.as_ref())
                .map_err(Failure::bad_input)?;
            let config_text = std::fs::read_to_string(&file)
                .map_err(|e| Failure::bad_input(format!("{}: cannot read: {e}", file.display())))?;
            let config = config::parse(&config_text, &file.display().to_string())
                .map_err(Failure::bad_input)?;
            let state_dir =
                state_dir.unwrap_or_else(|| PathBuf::from("/var/lib/xlb").join(&config.interface));
            let mode = match xdp_mode {
                Mode::Auto => aya::programs::XdpMode::Default,
                Mode::Native => aya::programs::XdpMode::Driver,
                Mode::Skb => aya::programs::XdpMode::Skb,
            };
            daemon::run(daemon::RunOptions {
                config,
                config_file: file.display().to_string(),
                socket: cli.socket,
                mode,
                metrics_address,
                state_dir,
                keep_revisions: keep_revisions as usize,
                config_text,
                bake: crate::controller::BakePolicy {
                    window_seconds: bake_window.as_secs_f64(),
                    hold_seconds: bake_hold.as_secs_f64(),
                },
                bake_tick,
                socket_group,
                bpffs,
                object,
            })
            .map_err(|e| Failure::internal(format!("{e:#}")))
        }
        Command::Detach {
            ref interface,
            ref bpffs,
        } => crate::restart::detach(&cli.socket, cli.output, interface, bpffs),
        Command::Validate { file } => {
            let config = config::load(&file).map_err(Failure::bad_input)?;
            let backends: usize = config.vips.iter().map(|v| v.backends.len()).sum();
            if cli.output == Output::Json {
                print_json(&serde_json::json!({
                    "schema_version": status::SCHEMA_VERSION,
                    "file": file.display().to_string(),
                    "valid": true,
                    "vips": config.vips.len(),
                    "backends": backends,
                }));
            } else {
                println!(
                    "{}: valid ({} VIPs, {} backends)",
                    file.display(),
                    config.vips.len(),
                    backends
                );
            }
            Ok(())
        }
        Command::Simulate {
            file,
            flows,
            pcap,
            seed,
        } => {
            let text = read_text(&file)?;
            let config =
                config::parse(&text, &file.display().to_string()).map_err(Failure::bad_input)?;
            let opts = crate::staging::SimulateOptions { flows, seed, pcap };
            let report = crate::staging::simulate(&config, &opts).map_err(|e| {
                if e.is_bad_input() {
                    Failure::bad_input(e)
                } else {
                    Failure::internal(e)
                }
            })?;
            match cli.output {
                Output::Json => print_json(&report),
                _ => print!("{}", report.render_table()),
            }
            if report.refused() {
                return Err(Failure {
                    code: 1,
                    message: "the simulated split is beyond the thresholds above".into(),
                });
            }
            Ok(())
        }
        Command::Rollback {
            to_revision,
            message,
        } => match api::call(
            &cli.socket,
            &Request::Rollback {
                to: to_revision,
                user: current_user(),
                message,
            },
        )? {
            Response::Applied { revision } => {
                if cli.output == Output::Json {
                    print_json(&serde_json::json!({
                        "schema_version": status::SCHEMA_VERSION, "revision": revision,
                    }));
                } else {
                    println!("rolled back as revision {revision}");
                }
                Ok(())
            }
            Response::Error(e) => Err(from_api_error(e)),
            other => Err(Failure::internal(format!("unexpected response: {other:?}"))),
        },
        Command::History => match api::call(&cli.socket, &Request::History)? {
            Response::History(list) => {
                if cli.output == Output::Json {
                    print_json(&serde_json::json!({
                        "schema_version": status::SCHEMA_VERSION,
                        "revisions": list,
                    }));
                } else {
                    print!("{}", crate::revisions::render_history(&list));
                }
                Ok(())
            }
            Response::Error(e) => Err(from_api_error(e)),
            other => Err(Failure::internal(format!("unexpected response: {other:?}"))),
        },
        Command::Drain(ref a) => {
            crate::edit::command::run(&cli, a.edit(crate::edit::Change::Drain), &a.options)
        }
        Command::Undrain(ref a) => {
            crate::edit::command::run(&cli, a.edit(crate::edit::Change::Undrain), &a.options)
        }
        Command::Weight(ref a) => crate::edit::command::run(&cli, a.edit(), &a.options),
        Command::Show {
            revision,
            config_text,
        } => match api::call(&cli.socket, &Request::Show { number: revision })? {
            Response::Revision(rev) => {
                if config_text {
                    print!("{}", rev.config_text);
                } else if cli.output == Output::Json {
                    print_json(&rev);
                } else {
                    print!("{}", crate::revisions::render_revision(&rev));
                }
                Ok(())
            }
            Response::Error(e) => Err(from_api_error(e)),
            other => Err(Failure::internal(format!("unexpected response: {other:?}"))),
        },
        Command::Plan {
            ref file,
            ref base,
            revision,
            ref state_dir,
            ref out,
            force,
            detailed_exitcode,
        } => {
            let base = match (base, revision) {
                (Some(path), _) => Some(Base::File(path.clone())),
                (None, Some(n)) => Some(Base::Revision(n, state_dir.clone())),
                (None, None) => None,
            };
            plan_command(&cli, file, base, out.as_deref(), force, detailed_exitcode)
        }
        Command::Apply {
            file,
            message,
            wait,
            force,
        } => {
            let raw = read_text(&file)?;
            // A plan file applies exactly the config it was reviewed with,
            // and only onto the revision it was made against.
            let (name, text, expect_revision) = match serde_json::from_str::<PlanFile>(&raw) {
                Ok(p) => {
                    let Some(base) = p.plan.base_revision else {
                        return Err(Failure::bad_input(format!(
                            "{}: an offline plan (--base) cannot be applied; plan against the daemon",
                            file.display()
                        )));
                    };
                    (p.config_file, p.config_text, Some(base))
                }
                Err(_) => (file.display().to_string(), raw, None),
            };
            // Validate here first: a bad file is refused without a daemon.
            config::parse(&text, &name).map_err(Failure::bad_input)?;
            match api::call(
                &cli.socket,
                &Request::Apply {
                    file: name.clone(),
                    text,
                    user: current_user(),
                    message,
                    force,
                    expect_revision,
                },
            )? {
                Response::Applied { revision } => {
                    if cli.output == Output::Json {
                        print_json(&serde_json::json!({
                            "schema_version": status::SCHEMA_VERSION, "file": name, "revision": revision,
                        }));
                    } else {
                        println!("applied {name} as revision {revision}");
                    }
                    if wait {
                        wait_for_bake(&cli.socket, revision)
                    } else {
                        Ok(())
                    }
                }
                Response::Error(e) => Err(from_api_error(e)),
                other => Err(Failure::internal(format!("unexpected response: {other:?}"))),
            }
        }
        Command::Top { interval, count } => top(&cli, interval, count),
        Command::Decap {
            interface,
            gue_port,
            addresses,
            mode,
        } => decap_command(
            cli.output,
            crate::decap::DecapOptions {
                interface,
                gue_port,
                extra_addresses: addresses,
                mode,
            },
        ),
        Command::Repair => match api::call(&cli.socket, &Request::Repair)? {
            Response::Repaired(r) => {
                if cli.output == Output::Json {
                    print_json(&serde_json::json!({
                        "schema_version": status::SCHEMA_VERSION,
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
            Response::Error(e) => Err(from_api_error(e)),
            other => Err(Failure::internal(format!("unexpected response: {other:?}"))),
        },
        Command::Status => match api::call(&cli.socket, &Request::Status)? {
            Response::Status(s) => {
                match cli.output {
                    Output::Json => print_json(&s),
                    Output::Table => print!("{}", status::render_table(&s, false)),
                    Output::Wide => print!("{}", status::render_table(&s, true)),
                }
                Ok(())
            }
            Response::Error(e) => Err(from_api_error(e)),
            other => Err(Failure::internal(format!("unexpected response: {other:?}"))),
        },
    }
}

/// `xlb decap`: run until a signal, then print the counters.
fn decap_command(output: Output, opts: crate::decap::DecapOptions) -> Result<(), Failure> {
    // The same three as `xlb run`: it loads and attaches an XDP program too.
    crate::privileges::check("xlb decap", crate::privileges::DAEMON).map_err(Failure::internal)?;
    let counters = crate::decap::run(&opts).map_err(|e| {
        let message = format!("decap on {}: {e}", opts.interface);
        if e.is_bad_input() {
            Failure::bad_input(message)
        } else {
            Failure::internal(message)
        }
    })?;
    match output {
        Output::Json => print_json(&serde_json::json!({
            "schema_version": status::SCHEMA_VERSION,
            "interface": opts.interface,
            "packets": counters,
        })),
        _ => print!("{}", counters.render_table()),
    }
    Ok(())
}

/// Follow the bake of `revision` until it ends: 0 baked, 1 rolled back.
pub(crate) fn wait_for_bake(socket: &std::path::Path, revision: u64) -> Result<(), Failure> {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    // Bounded: a bake window is minutes at most; give up after an hour.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        let s = match api::call(socket, &Request::Status)? {
            Response::Status(s) => s,
            Response::Error(e) => return Err(from_api_error(e)),
            other => return Err(Failure::internal(format!("unexpected response: {other:?}"))),
        };
        let Some(bake) = s.bake.as_ref().filter(|b| b.revision == revision) else {
            eprintln!("revision {revision}: not baking (the daemon runs with --bake-window 0s)");
            return Ok(());
        };
        let line = status::bake_line(bake, s.generated_at_unix_seconds);
        match bake.state {
            crate::bake::BakeState::Baking => {
                if tty {
                    let total = (bake.until_unix_seconds - bake.started_at_unix_seconds).max(1.0);
                    let done = ((s.generated_at_unix_seconds - bake.started_at_unix_seconds)
                        / total)
                        .clamp(0.0, 1.0);
                    let filled = (done * 30.0) as usize;
                    eprint!(
                        "\r[{}{}] {line}   ",
                        "#".repeat(filled),
                        " ".repeat(30 - filled)
                    );
                    let _ = std::io::stderr().flush();
                }
            }
            crate::bake::BakeState::Baked => {
                if tty {
                    eprintln!();
                }
                println!("{line}");
                return Ok(());
            }
            crate::bake::BakeState::RolledBack => {
                if tty {
                    eprintln!();
                }
                return Err(Failure {
                    code: 1,
                    message: line,
                });
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(Failure::internal(
                "gave up waiting for the bake after an hour",
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Who runs this command: the user behind sudo, else the login name, else
/// the uid.
pub fn current_user() -> String {
    if let Ok(u) = std::env::var("SUDO_USER")
        && !u.is_empty()
    {
        return u;
    }
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name)
}

fn top(cli: &Cli, interval: std::time::Duration, count: Option<u64>) -> Result<(), Failure> {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stdout().is_terminal();
    let mut shown = 0u64;
    loop {
        let s = match api::call(&cli.socket, &Request::Status)? {
            Response::Status(s) => s,
            Response::Error(e) => return Err(from_api_error(e)),
            other => return Err(Failure::internal(format!("unexpected response: {other:?}"))),
        };
        let mut out = std::io::stdout().lock();
        let written = if tty {
            // Home, clear, draw: the whole screen each time.
            write!(out, "\x1b[H\x1b[2J{}", crate::top::render_screen(&s))
        } else {
            writeln!(out, "{}", crate::top::render_line(&s))
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
