//! The control API: one JSON request per connection on a root-only Unix
//! socket, one JSON response back (a trace: a stream of JSON lines, ended
//! by `TraceEnded`). The CLI is its only client today.
//!
//! A request that carries a config text (`apply`, `plan`) may send it raw
//! after its line instead of JSON-escaped inside it: the line then has no
//! `text` and says `"text_bytes": N`, and exactly N bytes of UTF-8 follow
//! its newline (`Request::framed`, `Request::with_raw_text`). At the
//! declared limits a config is 6 to 28 MB: escaping and unescaping it took
//! longer than applying a change of one VIP. A daemon older than this
//! framing answers such a line "missing field `text`" and applies nothing
//! (restart it with the new binary). The other way, a plan's text (5.5 MB
//! at the declared limits) comes back raw after the answer's line when the
//! request asks for it (`text_raw`: `Response::PlanTextRaw` says how many
//! bytes follow), as the compressed status does (`Response::StatusZstd`).

use serde::{Deserialize, Serialize};

use crate::edit::Edit;
use crate::plan::{Plan, PlanText};
use crate::status::Status;

/// Where the daemon listens unless told otherwise (`--socket`, `XLB_SOCKET`).
pub const DEFAULT_SOCKET: &str = "/run/xlb/xlb.sock";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// The status document as `Status` answers it, but its JSON sent
    /// zstd-compressed after a `Response::StatusZstd` line (`xlb status`:
    /// a tenth of the bytes; the daemon keeps it compressed).
    StatusZstd,
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
        /// The config text; absent from a line that sends it raw after
        /// itself (`text_bytes`).
        #[serde(default)]
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
        /// As `Apply`'s.
        #[serde(default)]
        text: String,
        /// Who asks (the audit log).
        #[serde(default)]
        user: String,
        /// Answer with the plan's text and verdict (`Response::PlanText`,
        /// for `xlb plan`'s table) instead of the whole document. A daemon
        /// older than this field ignores it and answers `Response::Plan`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        as_text: bool,
        /// With `as_text`: the text raw after the answer's line
        /// (`Response::PlanTextRaw`), not JSON-escaped in it. At 1,000 VIPs
        /// x 64 backends the text is 5.5 MB, and escaping and unescaping it
        /// took ~35 ms of a plan. A daemon older than this field ignores it
        /// and answers `Response::PlanText`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        text_raw: bool,
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

/// The request line's field that announces a raw text after it.
pub const TEXT_BYTES: &str = "text_bytes";

impl Request {
    /// The request as sent: its JSON line (with its newline) and, for an
    /// `apply` or `plan` with a text, that text to send raw after it (the
    /// line says its length in `text_bytes`).
    pub fn framed(&self) -> serde_json::Result<(Vec<u8>, Option<&str>)> {
        let stripped = match self {
            Request::Apply {
                file,
                text,
                user,
                message,
                force,
                expect_revision,
            } if !text.is_empty() => Some((
                Request::Apply {
                    file: file.clone(),
                    text: String::new(),
                    user: user.clone(),
                    message: message.clone(),
                    force: *force,
                    expect_revision: *expect_revision,
                },
                text,
            )),
            Request::Plan {
                file,
                text,
                user,
                as_text,
                text_raw,
            } if !text.is_empty() => Some((
                Request::Plan {
                    file: file.clone(),
                    text: String::new(),
                    user: user.clone(),
                    as_text: *as_text,
                    text_raw: *text_raw,
                },
                text,
            )),
            _ => None,
        };
        let Some((head, text)) = stripped else {
            let mut line = serde_json::to_vec(self)?;
            line.push(b'\n');
            return Ok((line, None));
        };
        let mut value = serde_json::to_value(&head)?;
        // No `text` at all: a daemon that does not know `text_bytes` then
        // refuses the line (a missing field) rather than apply an empty
        // config.
        if let Some(fields) = value.as_object_mut() {
            fields.remove("text");
            fields.insert(TEXT_BYTES.into(), text.len().into());
        }
        let mut line = serde_json::to_vec(&value)?;
        line.push(b'\n');
        Ok((line, Some(text.as_str())))
    }

    /// This request (read from a line that said `text_bytes`) with the raw
    /// `text` that followed it; an error names what does not fit.
    pub fn with_raw_text(mut self, raw: String) -> Result<Self, String> {
        let op = self.op();
        match &mut self {
            Request::Apply { text, .. } | Request::Plan { text, .. } => {
                if !text.is_empty() {
                    return Err(format!(
                        "bad request: `{op}` has both a `text` and a raw text (`{TEXT_BYTES}`)"
                    ));
                }
                *text = raw;
                Ok(self)
            }
            _ => Err(format!(
                "bad request: `{op}` takes no text, but `{TEXT_BYTES}` announced one"
            )),
        }
    }

    /// The request's `op`, as sent (serde's tag; tested against it).
    pub fn op(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::StatusZstd => "status_zstd",
            Request::StatusVip { .. } => "status_vip",
            Request::Repair => "repair",
            Request::Apply { .. } => "apply",
            Request::Rollback { .. } => "rollback",
            Request::Plan { .. } => "plan",
            Request::History => "history",
            Request::Show { .. } => "show",
            Request::Edit(_) => "edit",
            Request::Node { .. } => "node",
            Request::Version => "version",
            Request::Trace(_) => "trace",
        }
    }
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
    /// The answer to `StatusZstd`: `bytes` bytes follow the line, zstd
    /// frames one after the other, that decompress to the status
    /// document's JSON, `plain` bytes.
    StatusZstd {
        bytes: u64,
        plain: u64,
    },
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
    /// A plan's text and verdict (`Request::Plan` with `as_text`).
    PlanText(Box<PlanText>),
    /// A plan's verdict, its text raw after the line, `bytes` bytes of
    /// UTF-8 (`Request::Plan` with `as_text` and `text_raw`).
    PlanTextRaw {
        verdict: crate::plan::Verdict,
        bytes: u64,
    },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str) -> Request {
        Request::Apply {
            file: "lb.toml".into(),
            text: text.into(),
            user: "ops".into(),
            message: Some("why".into()),
            force: true,
            expect_revision: Some(7),
        }
    }

    /// A line and its raw text read back give the request sent.
    fn round_trip(request: &Request) -> Request {
        let (line, text) = request.framed().unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let read: Request = serde_json::from_slice(&line).unwrap();
        match text {
            Some(text) => read.with_raw_text(text.to_string()).unwrap(),
            None => read,
        }
    }

    #[test]
    fn a_text_goes_raw_after_its_line() {
        let text = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\n";
        let request = apply(text);
        let (line, raw) = request.framed().unwrap();
        assert_eq!(raw, Some(text));
        let line = String::from_utf8(line).unwrap();
        assert!(
            !line.contains("eth0") && !line.contains("\"text\":"),
            "{line}"
        );
        assert!(
            line.contains(&format!("\"{TEXT_BYTES}\":{}", text.len())),
            "{line}"
        );
        assert!(format!("{:?}", round_trip(&request)) == format!("{request:?}"));
        for as_text in [false, true] {
            let plan = Request::Plan {
                file: "lb.toml".into(),
                text: text.into(),
                user: "ops".into(),
                as_text,
                text_raw: as_text,
            };
            assert!(format!("{:?}", round_trip(&plan)) == format!("{plan:?}"));
        }
        // A daemon from before `text_bytes` (its `text` required) refuses
        // the line instead of applying an empty config.
        #[derive(Debug, Deserialize)]
        #[expect(dead_code, reason = "only whether it parses matters")]
        struct Older {
            op: String,
            text: String,
        }
        let e = serde_json::from_slice::<Older>(&request.framed().unwrap().0).unwrap_err();
        assert!(e.to_string().contains("missing field `text`"), "{e}");
        // No text: one line, as before.
        for request in [apply(""), Request::Status, Request::History] {
            let (line, raw) = request.framed().unwrap();
            assert!(raw.is_none());
            assert!(!String::from_utf8(line).unwrap().contains(TEXT_BYTES));
        }
    }

    #[test]
    fn a_plan_asked_as_text_is_a_plan_to_an_older_daemon() {
        // An older daemon's `plan` request knows no `as_text`: it reads the
        // line as a plan and answers the whole document, which the CLI
        // takes as well.
        #[derive(Debug, Deserialize)]
        #[serde(tag = "op", rename_all = "snake_case")]
        enum Older {
            Plan {
                #[expect(dead_code, reason = "only whether it parses matters")]
                file: String,
            },
        }
        let request = Request::Plan {
            file: "lb.toml".into(),
            text: "x = 1".into(),
            user: String::new(),
            as_text: true,
            text_raw: true,
        };
        let (line, _) = request.framed().unwrap();
        assert!(String::from_utf8_lossy(&line).contains("\"as_text\":true"));
        assert!(matches!(
            serde_json::from_slice::<Older>(&line),
            Ok(Older::Plan { .. })
        ));
        // An older CLI's line asks for the document.
        let old = r#"{"op":"plan","file":"lb.toml","text":"x = 1"}"#;
        assert!(matches!(
            serde_json::from_str::<Request>(old).unwrap(),
            Request::Plan {
                as_text: false,
                text_raw: false,
                ..
            }
        ));
    }

    #[test]
    fn a_raw_text_where_none_fits_is_refused() {
        let e = apply("inline").with_raw_text("raw".into()).unwrap_err();
        assert!(e.contains("both a `text` and a raw text"), "{e}");
        let e = Request::History.with_raw_text("raw".into()).unwrap_err();
        assert!(e.contains("`history` takes no text"), "{e}");
    }

    #[test]
    fn op_is_serdes_tag() {
        let requests = [
            Request::Status,
            Request::StatusZstd,
            Request::StatusVip { vip: "web".into() },
            Request::Repair,
            apply("x"),
            Request::Rollback {
                to: None,
                user: String::new(),
                message: None,
            },
            Request::Plan {
                file: String::new(),
                text: String::new(),
                user: String::new(),
                as_text: true,
                text_raw: false,
            },
            Request::History,
            Request::Show { number: 1 },
            Request::Node {
                action: NodeAction::Drain,
                user: String::new(),
                message: None,
            },
            Request::Version,
            Request::Trace(TraceRequest {
                capture: false,
                vip: None,
                client: None,
                port: None,
                count: None,
                duration_seconds: None,
                events: None,
                user: String::new(),
            }),
        ];
        for request in requests {
            let value = serde_json::to_value(&request).unwrap();
            assert_eq!(value["op"], request.op(), "{request:?}");
        }
    }
}
