//! The command line's grammar: every subcommand and argument (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use xlb_core::api;
use xlb_core::config::MAX_WEIGHT;
use xlb_core::edit::{Change, Edit, EditError};
use xlb_dataplane::AttachMode;

use super::output::Output;

#[derive(Parser, Debug)]
#[command(
    name = "xlb",
    version,
    about = "xlb: an XDP layer-4 load balancer with Maglev hashing",
    max_term_width = 100
)]
pub struct Cli {
    /// Output format: a table, a wider table, or JSON (errors too: a JSON
    /// error document on stdout, with the same exit code).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The daemon's control socket (the commands that ask the daemon).
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
        /// The interface the balancer is attached to.
        #[arg(long)]
        interface: String,
        /// The bpffs mount the pins are under (default /sys/fs/bpf; given,
        /// it must be a bpffs).
        #[arg(long)]
        bpffs: Option<PathBuf>,
        /// Also remove xlb's announce routes from this table (the daemon's
        /// --announce-table): a daemon killed with SIGKILL leaves them.
        #[arg(long, value_name = "TABLE", value_parser = announce_table, env = "XLB_ANNOUNCE_TABLE")]
        announce_table: Option<u32>,
    },
    /// Check a config file offline; nothing is applied.
    Validate {
        /// The config file (TOML).
        file: PathBuf,
    },
    /// Apply a config file to the running daemon (all or nothing), recorded
    /// as a new revision.
    Apply {
        /// A config file, or a plan written by `xlb plan --out` (then
        /// exactly the config reviewed, onto the revision it was made
        /// against).
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
        /// The config file to plan.
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
        /// Only a plan made against the daemon can be applied, so not with
        /// --base or --revision.
        #[arg(long, conflicts_with_all = ["base", "revision"])]
        out: Option<PathBuf>,
        /// Exit 0 even when a safety check refuses it (the plan printed is
        /// the same; `xlb apply` still refuses it without its own --force).
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
        /// The config file whose tables are simulated.
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
    History {
        #[command(flatten)]
        store: StateDirArg,
    },
    /// Re-apply an earlier revision as a new one (default: the live revision
    /// before the current).
    Rollback {
        /// The revision to re-apply (`xlb history`).
        #[arg(long, value_name = "N")]
        to_revision: Option<u64>,
        /// Why: recorded in the revision and the audit log.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// One revision: its record and the exact config applied.
    Show {
        /// The revision's number (`xlb history`).
        revision: u64,
        /// Print only the exact config text, to take it over into a file
        /// (`xlb show 7 --config-text > xlb.toml`).
        #[arg(long)]
        config_text: bool,
        #[command(flatten)]
        store: StateDirArg,
    },
    /// Two revisions compared: the unified diff of their config texts and
    /// each VIP's predicted shares under both (the plan from the first to
    /// the second, as `xlb plan` makes it).
    Diff {
        /// The revision compared from (`xlb history`).
        from: u64,
        /// The revision compared to.
        to: u64,
        #[command(flatten)]
        store: StateDirArg,
    },
    /// Take a backend out of its VIP's Maglev table, keeping its established
    /// flows: `state = "draining"` in the live config, planned, checked and
    /// applied as a new revision (exit 1 when a safety check refuses it).
    Drain(EditArgs),
    /// Put a draining backend back into the table (`state = "active"`), as
    /// a new revision.
    Undrain(EditArgs),
    /// Change a backend's weight in the live config, as a new revision.
    Weight(WeightArgs),
    /// Per VIP and backend: weights, expected, table and observed shares,
    /// counters, and the imbalance detector's verdict.
    Status {
        /// Only this VIP (exit 2 when the daemon serves none of that name).
        #[arg(long, value_name = "NAME")]
        vip: Option<String>,
    },
    /// What the balancer decides for each matching packet, one line each
    /// as it happens (interface, CPU, 5-tuple, parse, VIP, connection
    /// table hit or miss and why, Maglev slot, backend, method, action or
    /// drop reason). Tracing is on only while this runs; Ctrl-C ends it.
    /// `-o json`: one JSON object per line.
    Trace(TraceArgs),
    /// The first bytes of the packets that hit EVENTS, to a pcapng file
    /// (tcpdump -r and Wireshark read it; each packet's events and the
    /// balancer's decision in its comment). Runs like `xlb trace`.
    Capture(CaptureArgs),
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
    /// The fleet behind ECMP: its nodes compared, and its revisions in
    /// etcd planned, rolled out, rolled back and listed.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// This node in its fleet: withdraw every VIP from the routers
    /// (drain) or announce them again (undrain).
    #[command(subcommand)]
    Node(NodeCommand),
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
        /// Required: an outer source prefix tunnel packets are accepted from,
        /// the balancers' (repeatable; IPv4 or IPv6, e.g. 198.18.0.0/24, or
        /// one address). A tunnel packet for this host from any other
        /// source is dropped and counted (source_refused). `--from
        /// 0.0.0.0/0 --from ::/0` accepts every source, which lets anyone
        /// who reaches this host inject packets with a forged inner source.
        #[arg(long = "from", value_name = "PREFIX")]
        from: Vec<xlb_dataplane::decap::SourcePrefix>,
        /// XDP attach mode (the values of `run --xdp-mode`; "generic" is
        /// "skb").
        #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
        mode: XdpModeArg,
    },
    /// This binary's version, git commit, balancer object id and map layout
    /// version, and the running daemon's (when one answers on --socket).
    Version,
}

/// `--state-dir DIR` of the commands that read revisions.
#[derive(clap::Args, Clone, Debug)]
pub struct StateDirArg {
    /// When no daemon answers on --socket, read the revisions from this
    /// state directory's store (the daemon's --state-dir, e.g.
    /// /var/lib/xlb/eth0), read-only.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `xlb fleet ...`.
#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// With --etcd: every node's report from the fleet's store (fleet
    /// revision, fingerprint, bake outcome, announce state) and the
    /// rollout; exit 1 on disagreement, a node behind or diverged.
    /// With URLs: read each node's /api/status and say, per VIP, whether
    /// the nodes pick the same backend for every new flow (seed, hash
    /// mode, table size, backends, the live table); exit 1 naming each
    /// node that differs.
    Status {
        #[command(flatten)]
        store: FleetStoreArgs,
        /// Each node's metrics/status address, e.g. http://198.18.0.1:9470.
        #[arg(
            value_name = "URL",
            required_unless_present = "etcd",
            conflicts_with = "etcd"
        )]
        urls: Vec<String>,
    },
    /// Plan FILE against the fleet's revision and each diverged node's
    /// live config: exit 3 with changes, 1 when a plan is refused (naming
    /// the node), 0 without changes.
    Plan {
        #[command(flatten)]
        store: FleetStoreArgs,
        /// The config file to plan.
        file: PathBuf,
    },
    /// Record FILE as a fleet revision and roll it out: the canary, its
    /// bake, then the other nodes in waves, each through its own plan,
    /// safety checks and bake; a failure anywhere rolls every changed node
    /// back.
    Apply {
        #[command(flatten)]
        store: FleetStoreArgs,
        /// The config file to record and roll out.
        file: PathBuf,
        /// The canary node (default: the first by name).
        #[arg(long, value_name = "NAME")]
        canary: Option<String>,
        /// Nodes per wave after the canary (default: all the rest at once).
        #[arg(long, value_name = "N")]
        wave_size: Option<usize>,
        /// The nodes apply it past their plans' safety checks.
        #[arg(long)]
        force: bool,
        /// Why: recorded in the fleet revision.
        #[arg(short, long)]
        message: Option<String>,
        /// Follow the rollout: exit 0 done, 1 rolled back.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (exit 4; the rollout goes on).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Roll the running rollout back; or, with none running, roll the
    /// fleet out to revision --to (default: the one before the desired).
    Rollback {
        #[command(flatten)]
        store: FleetStoreArgs,
        /// The fleet revision to roll out (`xlb fleet history`).
        #[arg(long, value_name = "N")]
        to: Option<u64>,
    },
    /// The fleet's revisions, and the rollout.
    History {
        #[command(flatten)]
        store: FleetStoreArgs,
    },
}

/// Where the fleet's store is, for `xlb fleet` commands.
#[derive(clap::Args, Clone, Debug)]
pub struct FleetStoreArgs {
    /// The fleet's etcd (`http[s]://HOST:PORT[,...][/FLEET]`).
    #[arg(long, value_name = "URL", env = "XLB_FLEET")]
    pub etcd: Option<String>,
    #[command(flatten)]
    pub tls: FleetTls,
}

/// `xlb node ...`.
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Withdraw every VIP from the routers and keep forwarding what still
    /// arrives (kept across restarts until `undrain`); waits until the
    /// routes are gone, then shows the flows still arriving.
    Drain {
        /// Why: recorded in the audit log.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Announce the VIPs by their `announce` policies again.
    Undrain {
        /// Why: recorded in the audit log.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// The node's announce state: drained or not, the routes, each VIP's
    /// announcement and why, the flows still arriving.
    Status,
}

/// `xlb run`'s arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// The config file applied at start and on SIGHUP (unless the live
    /// revision was changed through the daemon since: see `xlb status`).
    #[arg(long)]
    pub config: PathBuf,
    /// How the balancer is attached (the values of `decap --mode`).
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
    /// Announce VIPs through this kernel routing table: one blackhole
    /// route (protocol 248) per announced VIP address, which the node's
    /// BIRD exports over BGP (deploy/bird/). Without it nothing is
    /// announced.
    #[arg(long, value_name = "TABLE", value_parser = announce_table, env = "XLB_ANNOUNCE_TABLE")]
    pub announce_table: Option<u32>,
    /// How long a VIP withdrawn because every backend was down must have
    /// a backend up before it is announced again.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub announce_hold: std::time::Duration,
    /// On SIGTERM with --announce-table: withdraw every VIP, keep
    /// forwarding what still arrives for this long, then exit.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub withdraw_grace: std::time::Duration,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// `--fleet URL --node NAME`: join a fleet whose store is etcd
/// (docs/FLEET.md); without it the node works alone.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FleetArgs {
    /// The fleet's etcd: `http[s]://HOST:PORT[,...]`, the path naming the
    /// fleet (`http://198.18.0.1:2379/edge`; none: `default`).
    #[arg(long, value_name = "URL", env = "XLB_FLEET", requires = "node")]
    pub fleet: Option<String>,
    /// This node's name in the fleet.
    #[arg(long, value_name = "NAME", env = "XLB_NODE", requires = "fleet")]
    pub node: Option<String>,
    #[command(flatten)]
    pub tls: FleetTls,
}

/// TLS to the fleet's etcd (`https://` endpoints): a CA, and a client
/// certificate and key when etcd asks for them.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FleetTls {
    /// The CA that signed etcd's certificate (PEM).
    #[arg(long, value_name = "FILE", env = "XLB_FLEET_CA")]
    pub fleet_ca: Option<PathBuf>,
    /// This client's certificate (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "XLB_FLEET_CERT",
        requires = "fleet_key"
    )]
    pub fleet_cert: Option<PathBuf>,
    /// This client's key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "XLB_FLEET_KEY",
        requires = "fleet_cert"
    )]
    pub fleet_key: Option<PathBuf>,
}

impl FleetTls {
    /// `url` with these TLS files.
    pub fn address(&self, url: &str) -> Result<xlb_fleet::FleetAddress, xlb_fleet::FleetError> {
        Ok(xlb_fleet::FleetAddress::parse(url)?.with_tls(
            self.fleet_ca.clone(),
            self.fleet_cert.clone(),
            self.fleet_key.clone(),
        ))
    }
}

/// `--announce-table`: a table of its own, not the kernel's main, local
/// or default one.
fn announce_table(s: &str) -> Result<u32, String> {
    let table: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a routing table id (1..=4294967295)"))?;
    xlb_routes::check_table(table)
}

/// A backend of a VIP, by name.
#[derive(clap::Args, Debug)]
pub struct EditArgs {
    /// The VIP's name (as in `xlb status`).
    pub vip: String,
    /// The backend's name in that VIP.
    pub backend: String,
    #[command(flatten)]
    pub options: EditOptions,
}

/// `xlb weight VIP BACKEND N`.
#[derive(clap::Args, Debug)]
pub struct WeightArgs {
    /// The VIP's name (as in `xlb status`).
    pub vip: String,
    /// The backend's name in that VIP.
    pub backend: String,
    /// The new weight (1..=10000); checked here, before any daemon is asked.
    #[arg(value_parser = weight)]
    pub weight: u32,
    #[command(flatten)]
    pub options: EditOptions,
}

/// What every edit takes, as `xlb apply` does.
#[derive(clap::Args, Debug)]
pub struct EditOptions {
    /// Why: recorded in the revision (`xlb history`) and the audit log.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Apply even when the safety checks refuse it.
    #[arg(long)]
    pub force: bool,
    /// Wait for the bake: exit 0 when it passes, 1 when the daemon rolled
    /// the change back.
    #[arg(long)]
    pub wait: bool,
}

impl EditArgs {
    pub fn edit(&self, change: Change) -> Edit {
        Edit {
            vip: self.vip.clone(),
            backend: self.backend.clone(),
            change,
        }
    }
}

impl WeightArgs {
    pub fn edit(&self) -> Edit {
        Edit {
            vip: self.vip.clone(),
            backend: self.backend.clone(),
            change: Change::Weight {
                weight: self.weight,
            },
        }
    }
}

/// A backend weight as the config takes it (1..=MAX_WEIGHT), with the
/// daemon's words for one out of range.
fn weight(text: &str) -> Result<u32, String> {
    let weight: u32 = text
        .parse()
        .map_err(|_| format!("weight {text:?} is not a whole number"))?;
    if (1..=MAX_WEIGHT).contains(&weight) {
        Ok(weight)
    } else {
        Err(EditError::WeightOutOfRange {
            weight,
            max: MAX_WEIGHT,
        }
        .to_string())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn a_weight_out_of_range_is_refused_before_any_daemon_is_asked() {
        let parse = |w: &str| Cli::try_parse_from(["xlb", "weight", "web", "b1", w]);
        let e = parse("0").expect_err("weight 0");
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("weight 0 is out of range"), "{e}");
        assert!(parse("10001").is_err());
        assert!(parse("x").is_err());
        assert!(parse("1").is_ok() && parse("10000").is_ok());
    }

    /// An offline plan cannot be applied (`xlb apply` needs the live
    /// revision it was made against), so it is not written as a plan file.
    #[test]
    fn an_offline_plan_is_not_written_for_apply() {
        for offline in [["--base", "old.toml"], ["--revision", "3"]] {
            let e = Cli::try_parse_from(
                ["xlb", "plan", "new.toml", "--out", "p.json"]
                    .into_iter()
                    .chain(offline),
            )
            .expect_err("--out with an offline base");
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("--out"), "{e}");
        }
        assert!(Cli::try_parse_from(["xlb", "plan", "new.toml", "--out", "p.json"]).is_ok());
    }
}

/// Which packets `xlb trace` and `xlb capture` take, and for how long.
#[derive(clap::Args, Debug, Clone)]
pub struct TraceArgs {
    /// Only this VIP's packets (its name); default every VIP's.
    pub vip: Option<String>,
    /// Only packets from these clients: an address or a prefix
    /// (198.18.0.1, 198.18.0.0/24, 2001:db8::/64).
    #[arg(long, value_name = "ADDR[/PREFIX]")]
    pub client: Option<String>,
    /// Only packets with this source or destination port.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Stop after this many packets.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after this long ("30s", "5m"; the daemon stops any session
    /// after 10 minutes).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
}

/// `xlb capture`.
#[derive(clap::Args, Debug, Clone)]
pub struct CaptureArgs {
    /// The events whose packets are kept, comma-separated: syn, miss,
    /// non_syn_miss (a TCP packet of a flow the connection table does not
    /// know: a moved flow), resteer, hit, drop, too_big, pass, reply.
    #[arg(long, value_name = "EVENTS")]
    pub events: String,
    /// The pcapng file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub filter: TraceArgs,
}
