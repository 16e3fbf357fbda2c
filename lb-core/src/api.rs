//! The control API: one JSON request per connection on a root-only Unix
//! socket, one JSON response back (a trace: a stream of JSON lines, ended
//! by `TraceEnded`). The CLI is its only client today.

use serde::{Deserialize, Serialize};

use crate::edit::Edit;
use crate::plan::Plan;
use crate::status::Status;

/// Where the daemon listens unless told otherwise (`--socket`, `XLB_SOCKET`).
pub const DEFAULT_SOCKET: &str = "/run/xlb/xlb.sock";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// The status document with one VIP (`xlb status --vip NAME`), taken
    /// out of the daemon's current document.
    StatusVip {
        vip: String,
    },
    /// Rewrite every table and backend entry from the applied config.
    Repair,
    /// Validate `text` (named `file` in errors) and apply it.
    Apply {
        file: String,
        text: String,
        /// Who asks and why (recorded in the revision).
        #[serde(default)]
        user: String,
        #[serde(default)]
        message: Option<String>,
        /// Apply even when the safety checks refuse it.
        #[serde(default)]
        force: bool,
        /// A reviewed plan's base revision: refused unless it is still live.
        #[serde(default)]
        expect_revision: Option<u64>,
    },
    /// Re-apply an earlier revision (default: the live one before the
    /// current) as a new revision.
    Rollback {
        #[serde(default)]
        to: Option<u64>,
        #[serde(default)]
        user: String,
        #[serde(default)]
        message: Option<String>,
    },
    /// Plan `text` against the applied config (nothing is applied).
    Plan {
        file: String,
        text: String,
        /// Who asks (the audit log).
        #[serde(default)]
        user: String,
    },
    /// Every kept revision, oldest first.
    History,
    /// One revision.
    Show {
        number: u64,
    },
    /// `xlb drain`/`undrain`/`weight`: edit one backend in the live
    /// revision's config and apply the result as a new revision.
    Edit(EditRequest),
    /// `xlb node drain`/`undrain`: withdraw every VIP from the routers,
    /// or announce them by their policies again.
    Node {
        action: NodeAction,
        #[serde(default)]
        user: String,
        #[serde(default)]
        message: Option<String>,
    },
    /// Which build the daemon runs (`xlb version`).
    Version,
    /// `xlb trace` / `xlb capture`: switch tracing on for the matching
    /// packets and stream them (one `Traced` line each) until the count,
    /// the duration, the daemon's timeout, or the client closing.
    Trace(TraceRequest),
}

/// What `xlb trace` and `xlb capture` ask for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// A capture: the packets' first bytes too, and only `events`.
    #[serde(default)]
    pub capture: bool,
    /// A VIP's name; None: every VIP.
    #[serde(default)]
    pub vip: Option<String>,
    /// `ADDR[/PREFIX]` of the clients.
    #[serde(default)]
    pub client: Option<String>,
    /// A port on either side of the flow.
    #[serde(default)]
    pub port: Option<u16>,
    /// Stop after this many packets.
    #[serde(default)]
    pub count: Option<u64>,
    /// Stop after this long (at most `trace::MAX_DURATION`).
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    /// `--events a,b` (a capture); None: every event.
    #[serde(default)]
    pub events: Option<String>,
    /// Who asks (the audit log).
    #[serde(default)]
    pub user: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeAction {
    Drain,
    Undrain,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request or the config in it is invalid (exit code 2).
    BadInput,
    /// The daemon or the kernel failed (exit code 4).
    Internal,
    /// A safety check refused it (exit code 1).
    Refused,
    /// The peer (SO_PEERCRED) may not make this request: a change asked
    /// by a user other than root or the socket group (exit code 1).
    Forbidden,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Status(Box<Status>),
    Applied {
        revision: u64,
        /// What the applied config's `config::warnings` say (an apply of a
        /// file: the CLI prints them; none from older daemons).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<crate::config::warnings::Warning>,
    },
    Repaired(Repaired),
    /// The kept revisions' summaries (no config texts, no plans: `Show`
    /// has them).
    History(Vec<crate::revision::Summary>),
    Plan(Box<Plan>),
    Revision(Box<crate::revision::Revision>),
    /// An edit applied: the new revision and its plan.
    Edited(Box<Edited>),
    /// A drain or undrain done: the node's announce state.
    Node(Box<crate::announce::NodeAnnounce>),
    /// The daemon's build.
    Version(BuildInfo),
    /// A trace or capture is on: traced packets follow, then `TraceEnded`.
    TraceStarted(Box<crate::trace::TraceActive>),
    Traced(Box<crate::trace::TracedPacket>),
    TraceEnded(crate::trace::TraceEnd),
    Error(ApiError),
}

/// Which build a process runs: enough for an operator to tell what runs
/// where (`xlb version`, the daemon's answer to `Request::Version`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The crate version of the `xlb` binary (the package's version).
    pub version: String,
    /// The git commit it was built from (`XLB_GIT_COMMIT` at build time;
    /// "unknown" when it was not set).
    pub git_commit: String,
    /// The embedded balancer object's id: a hash of its bytes (16 hex
    /// digits). Two builds with the same id run the same XDP program.
    pub object_build_id: String,
    /// The pinned maps' layout version this build reads and writes
    /// (`lb_common::LAYOUT_VERSION`; docs/RESTART.md).
    pub layout_version: u32,
}

/// What `repair` did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Repaired {
    /// VIPs whose tables or backend entries had drifted before the repair.
    pub drifted: Vec<String>,
    /// VIPs whose tables were rewritten (all of them).
    pub rewritten: Vec<String>,
}

/// What the CLI sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EditRequest {
    pub edit: Edit,
    /// Who asks and why (recorded in the revision and the audit log).
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub message: Option<String>,
    /// Apply even when the safety checks refuse it.
    #[serde(default)]
    pub force: bool,
}

/// What an applied edit made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edited {
    /// The new revision.
    pub revision: u64,
    /// The revision whose config was edited.
    pub base_revision: u64,
    /// `drain web b2`.
    pub command: String,
    /// The config file the edited revision came from (the operator's copy,
    /// which does not have the change yet).
    pub config_file: String,
    pub plan: Plan,
}
