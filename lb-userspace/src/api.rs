//! The control API: one JSON request per connection on a root-only Unix
//! socket, one JSON response back. The CLI is its only client today.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::status::Status;

/// Where the daemon listens unless told otherwise (`--socket`, `XLB_SOCKET`).
pub const DEFAULT_SOCKET: &str = "/run/xlb/xlb.sock";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
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
    Edit(crate::edit::live::EditRequest),
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
    },
    Repaired(crate::controller::Repaired),
    History(Vec<crate::revisions::Revision>),
    Plan(Box<crate::plan::Plan>),
    Revision(Box<crate::revisions::Revision>),
    /// An edit applied: the new revision and its plan.
    Edited(Box<crate::edit::live::Edited>),
    Error(ApiError),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the xlb daemon at {socket}: {source} (is `xlb run` running? is --socket right?)"
    )]
    Connect {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the xlb daemon at {socket}: {source}")]
    Io {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the xlb daemon at {socket} closed the connection without answering (did it exit? see its log)"
    )]
    Closed { socket: String },
    #[error("the xlb daemon at {socket} sent a response this xlb does not understand: {source}")]
    Decode {
        socket: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Send one request, wait for its response (applies can take a while: they
/// build and write whole tables).
pub fn call(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let name = socket.display().to_string();
    let io = |source| ClientError::Io {
        socket: name.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        socket: name.clone(),
        source,
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(request).expect("requests serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(io)?;
    if reply.is_empty() {
        return Err(ClientError::Closed { socket: name });
    }
    serde_json::from_str(&reply).map_err(|source| ClientError::Decode {
        socket: name.clone(),
        source,
    })
}
