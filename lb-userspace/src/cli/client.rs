//! The control socket's client: one JSON request per connection (a config
//! text raw after it), one JSON response back (the types are `xlb_core::api`'s). `Client` has one typed
//! method per request; an error answer or an answer of the wrong kind is
//! turned into a `Failure` in one place (`ask`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use xlb_core::announce::NodeAnnounce;
use xlb_core::api::{EditRequest, Edited, Repaired, Request, Response};
use xlb_core::config::warnings::Warning;
use xlb_core::plan::{Plan, PlanText};
use xlb_core::revision::{Revision, Summary};
use xlb_core::status::Status;

use super::output::Failure;

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
    let reply = call_raw(socket, request)?;
    decode(socket, &reply)
}

/// The response line as the daemon wrote it, its newline included (for an
/// answer printed as it came: `xlb status -o json`).
pub fn call_raw(socket: &Path, request: &Request) -> Result<Vec<u8>, ClientError> {
    exchange(socket, request).map(|(reply, _)| reply)
}

/// The reply buffer's first capacity: address space, not memory, until
/// the answer is written into it.
const REPLY_ROOM: usize = 64 << 20;

/// Send `request`; the response line, and the connection to read what
/// follows it (the compressed status).
fn exchange(
    socket: &Path,
    request: &Request,
) -> Result<(Vec<u8>, BufReader<UnixStream>), ClientError> {
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
    // A config text goes raw after the line (api.rs), not JSON-escaped in it.
    let (line, text) = request.framed().expect("requests serialize");
    // A daemon that refuses the request before reading all of it (too big)
    // answers and closes: the write fails, and its answer is read all the
    // same.
    let written = stream
        .write_all(&line)
        .and_then(|()| stream.write_all(text.unwrap_or_default().as_bytes()));
    // Room for the largest answers from the start (a plan of 1,000 VIPs x
    // 64 backends is ~15 MB of JSON): only what is written of it is ever
    // faulted in, where growing by doubling copied and faulted in four
    // times the answer's size (a third of `xlb plan`'s CPU at that size).
    let mut reply = Vec::with_capacity(REPLY_ROOM);
    // A large buffer: a status at 1,000 VIPs x 64 backends is tens of MB.
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let read = reader.read_until(b'\n', &mut reply);
    if reply.is_empty() {
        written.map_err(io)?;
        read.map_err(io)?;
        return Err(ClientError::Closed { socket: name });
    }
    Ok((reply, reader))
}

/// Where the document is in a `status` answer line: `{"status":`, the
/// document, `}` and the newline (serde's encoding of
/// `Response::Status`); None for any other answer.
fn status_document(reply: &[u8]) -> Option<std::ops::Range<usize>> {
    const HEAD: &[u8] = b"{\"status\":";
    const TAIL: &[u8] = b"}\n";
    (reply.starts_with(HEAD) && reply.ends_with(TAIL) && reply.len() >= HEAD.len() + TAIL.len())
        .then(|| HEAD.len()..reply.len() - TAIL.len())
}

/// A response line decoded.
pub fn decode(socket: &Path, reply: &[u8]) -> Result<Response, ClientError> {
    serde_json::from_slice(reply).map_err(|source| ClientError::Decode {
        socket: socket.display().to_string(),
        source,
    })
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::internal(e)
    }
}

/// What the daemon answers a plan with.
#[derive(Debug)]
pub enum PlanAnswer {
    /// The whole document (`-o json`, `--out`; or a daemon older than
    /// plans as text).
    Document(Box<Plan>),
    /// Its text and verdict.
    Text(Box<PlanText>),
}

/// The daemon at a control socket, one method per request.
pub struct Client<'a> {
    socket: &'a Path,
}

impl<'a> Client<'a> {
    pub fn new(socket: &'a Path) -> Self {
        Self { socket }
    }

    /// Send `request`; `pick` takes the answer it expects and hands back any
    /// other. The daemon's error answers keep their exit codes.
    fn ask<T>(
        &self,
        request: &Request,
        pick: impl FnOnce(Response) -> Result<T, Response>,
    ) -> Result<T, Failure> {
        self.answer(request, pick)?
    }

    /// As `ask`, but when no daemon can be reached `offline` runs before
    /// that is said: what the caller can check without one (a bad config
    /// file is bad input whether or not a daemon runs).
    fn ask_or_check<T>(
        &self,
        request: &Request,
        pick: impl FnOnce(Response) -> Result<T, Response>,
        offline: impl FnOnce() -> Result<(), Failure>,
    ) -> Result<T, Failure> {
        match self.answer(request, pick) {
            Err(e @ ClientError::Connect { .. }) => {
                offline()?;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
            Ok(answer) => answer,
        }
    }

    /// As `ask`, but a daemon that cannot be reached (nothing listens on
    /// the socket) is `None`, for a caller that can read elsewhere.
    fn ask_if_running<T>(
        &self,
        request: &Request,
        pick: impl FnOnce(Response) -> Result<T, Response>,
    ) -> Result<Option<T>, Failure> {
        match self.answer(request, pick) {
            Err(ClientError::Connect { .. }) => Ok(None),
            Err(e) => Err(e.into()),
            Ok(answer) => answer.map(Some),
        }
    }

    /// The daemon's answer to `request`: the outer error is the socket's,
    /// the inner one the daemon's (or an answer of the wrong kind).
    fn answer<T>(
        &self,
        request: &Request,
        pick: impl FnOnce(Response) -> Result<T, Response>,
    ) -> Result<Result<T, Failure>, ClientError> {
        Ok(match call(self.socket, request)? {
            Response::Error(e) => Err(e.into()),
            other => pick(other)
                .map_err(|other| Failure::internal(format!("unexpected response: {other:?}"))),
        })
    }

    pub fn status(&self) -> Result<Status, Failure> {
        let json = self.status_document()?;
        serde_json::from_slice(&json).map_err(|source| {
            ClientError::Decode {
                socket: self.socket.display().to_string(),
                source,
            }
            .into()
        })
    }

    /// The status document's JSON: asked as `status_zstd` (the daemon
    /// keeps it compressed and sends it so, a tenth of the bytes), and
    /// decompressed here.
    fn status_document(&self) -> Result<Vec<u8>, Failure> {
        let name = self.socket.display().to_string();
        let (reply, mut rest) = exchange(self.socket, &Request::StatusZstd)?;
        let (bytes, plain) = match decode(self.socket, &reply)? {
            Response::StatusZstd { bytes, plain } => (bytes, plain),
            // A daemon older than this CLI (not restarted since an upgrade)
            // knows no `status_zstd`: it refuses it, naming it, and is asked
            // the plain way.
            Response::Error(e) if e.message.contains("status_zstd") => {
                return self.plain_status(&Request::Status);
            }
            Response::Error(e) => return Err(e.into()),
            other => return Err(Failure::internal(format!("unexpected response: {other:?}"))),
        };
        let frames = self.after_line(&mut rest, bytes, "status")?;
        let json = zstd::bulk::Decompressor::new()
            .and_then(|mut d| d.decompress(&frames, plain as usize))
            .map_err(|e| {
                Failure::internal(format!(
                    "decompressing the status from the xlb daemon at {name}: {e}"
                ))
            })?;
        if json.len() as u64 != plain {
            return Err(Failure::internal(format!(
                "the status from the xlb daemon at {name} decompressed to {} bytes, not {plain}",
                json.len()
            )));
        }
        Ok(json)
    }

    /// The status document's JSON as the daemon sent it (of VIP `vip`
    /// only, if given), not decoded: `xlb status -o json` prints it as it
    /// is. An error answer is decoded as any other.
    pub fn status_json(&self, vip: Option<&str>) -> Result<Vec<u8>, Failure> {
        let Some(vip) = vip else {
            return self.status_document();
        };
        self.plain_status(&Request::StatusVip {
            vip: vip.to_string(),
        })
    }

    /// The document of a `status` or `status_vip` answer, not decoded.
    fn plain_status(&self, request: &Request) -> Result<Vec<u8>, Failure> {
        let mut reply = call_raw(self.socket, request)?;
        if let Some(document) = status_document(&reply) {
            let range = document.start..document.end;
            reply.truncate(range.end);
            reply.drain(..range.start);
            return Ok(reply);
        }
        match decode(self.socket, &reply)? {
            Response::Error(e) => Err(e.into()),
            other => Err(Failure::internal(format!("unexpected response: {other:?}"))),
        }
    }

    /// The status with VIP `vip` only (bad input when it serves none of
    /// that name).
    pub fn status_vip(&self, vip: &str) -> Result<Status, Failure> {
        let request = Request::StatusVip {
            vip: vip.to_string(),
        };
        self.ask(&request, |r| match r {
            Response::Status(s) => Ok(*s),
            other => Err(other),
        })
    }

    /// An apply or a rollback: the new revision's number.
    pub fn applied(&self, request: &Request) -> Result<u64, Failure> {
        self.ask(request, |r| match r {
            Response::Applied { revision, .. } => Ok(revision),
            other => Err(other),
        })
    }

    /// An apply of a file, validated by the daemon (`offline` checks it
    /// when no daemon answers): the new revision's number and the config's
    /// warnings.
    pub fn applied_file(
        &self,
        request: &Request,
        offline: impl FnOnce() -> Result<(), Failure>,
    ) -> Result<(u64, Vec<Warning>), Failure> {
        let pick = |r| match r {
            Response::Applied { revision, warnings } => Ok((revision, warnings)),
            other => Err(other),
        };
        self.ask_or_check(request, pick, offline)
    }

    /// The daemon's plan of a file (`offline` checks it when no daemon
    /// answers).
    /// The daemon's plan of `text`: the whole document, or its text and
    /// verdict when `as_text` asks for them (a daemon older than that
    /// answers the document all the same).
    pub fn plan(
        &self,
        file: String,
        text: String,
        user: String,
        as_text: bool,
        offline: impl FnOnce() -> Result<(), Failure>,
    ) -> Result<PlanAnswer, Failure> {
        let request = Request::Plan {
            file,
            text,
            user,
            as_text,
            text_raw: as_text,
        };
        let (reply, mut rest) = match exchange(self.socket, &request) {
            Err(e @ ClientError::Connect { .. }) => {
                offline()?;
                return Err(e.into());
            }
            other => other?,
        };
        match decode(self.socket, &reply)? {
            Response::Plan(p) => Ok(PlanAnswer::Document(p)),
            // A daemon older than `text_raw`.
            Response::PlanText(t) => Ok(PlanAnswer::Text(t)),
            Response::PlanTextRaw { verdict, bytes } => {
                let text = self.raw_text(&mut rest, bytes, "plan")?;
                Ok(PlanAnswer::Text(Box::new(PlanText { text, verdict })))
            }
            Response::Error(e) => Err(e.into()),
            other => Err(Failure::internal(format!("unexpected response: {other:?}"))),
        }
    }

    /// The `bytes` bytes that follow an answer's line, all of them (the
    /// `what` they are, for errors).
    fn after_line(
        &self,
        rest: &mut BufReader<UnixStream>,
        bytes: u64,
        what: &str,
    ) -> Result<Vec<u8>, Failure> {
        let name = self.socket.display().to_string();
        let mut read = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0).min(REPLY_ROOM));
        rest.take(bytes)
            .read_to_end(&mut read)
            .map_err(|source| ClientError::Io {
                socket: name.clone(),
                source,
            })?;
        if read.len() as u64 != bytes {
            return Err(Failure::internal(format!(
                "the xlb daemon at {name} sent {} of the {what}'s {bytes} bytes",
                read.len()
            )));
        }
        Ok(read)
    }

    /// [`Client::after_line`], UTF-8 text.
    fn raw_text(
        &self,
        rest: &mut BufReader<UnixStream>,
        bytes: u64,
        what: &str,
    ) -> Result<String, Failure> {
        String::from_utf8(self.after_line(rest, bytes, what)?).map_err(|_| {
            Failure::internal(format!(
                "the xlb daemon at {} sent a {what} that is not UTF-8",
                self.socket.display()
            ))
        })
    }

    /// The kept revisions; `None` when no daemon listens on the socket.
    pub fn history_if_running(&self) -> Result<Option<Vec<Summary>>, Failure> {
        self.ask_if_running(&Request::History, |r| match r {
            Response::History(list) => Ok(list),
            other => Err(other),
        })
    }

    /// Revision `number`; `None` when no daemon listens on the socket.
    pub fn show_if_running(&self, number: u64) -> Result<Option<Revision>, Failure> {
        self.ask_if_running(&Request::Show { number }, |r| match r {
            Response::Revision(rev) => Ok(*rev),
            other => Err(other),
        })
    }

    pub fn repair(&self) -> Result<Repaired, Failure> {
        self.ask(&Request::Repair, |r| match r {
            Response::Repaired(r) => Ok(r),
            other => Err(other),
        })
    }

    pub fn edit(&self, request: EditRequest) -> Result<Edited, Failure> {
        self.ask(&Request::Edit(request), |r| match r {
            Response::Edited(e) => Ok(*e),
            other => Err(other),
        })
    }

    /// A drain or undrain: the node's announce state after it.
    pub fn node(&self, request: &Request) -> Result<NodeAnnounce, Failure> {
        self.ask(request, |r| match r {
            Response::Node(n) => Ok(*n),
            other => Err(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};
    use std::os::unix::net::UnixListener;

    /// A daemon older than `status_zstd`: it refuses the op by name, and
    /// the CLI asks again the plain way and gets the document.
    #[test]
    fn an_older_daemon_is_asked_for_the_plain_status() {
        let dir = std::env::temp_dir().join(format!("xlb-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("old.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let old = std::thread::spawn(move || {
            let mut ops = Vec::new();
            for answer in [
                r#"{"error":{"kind":"bad_input","message":"bad request: unknown variant `status_zstd`"}}"#,
                r#"{"status":{"revision":7}}"#,
            ] {
                let (stream, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                ops.push(serde_json::from_str::<serde_json::Value>(&line).unwrap()["op"].clone());
                writeln!(&stream, "{answer}").unwrap();
            }
            ops
        });
        let Ok(json) = Client::new(&socket).status_json(None) else {
            panic!("the status from an older daemon was not read");
        };
        assert_eq!(json, br#"{"revision":7}"#);
        assert_eq!(old.join().unwrap(), ["status_zstd", "status"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A plan's text raw after the answer's line is read whole; one cut
    /// short or not UTF-8 is an error naming what is wrong, not a plan.
    #[test]
    fn a_plan_text_raw_after_its_line_is_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("xlb-client-raw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("d.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let head = |bytes: usize| {
            format!(
                r#"{{"plan_text_raw":{{"verdict":{{"changed":true,"refused":false}},"bytes":{bytes}}}}}"#
            )
        };
        let answers: Vec<(String, Vec<u8>)> = vec![
            (head(12), b"plan: vip a\n".to_vec()),
            (head(20), b"cut short".to_vec()),
            (head(2), vec![0xff, 0xfe]),
        ];
        let daemon = std::thread::spawn(move || {
            let mut asked = Vec::new();
            for (line, raw) in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut request = String::new();
                BufReader::new(&stream).read_line(&mut request).unwrap();
                asked.push(serde_json::from_str::<serde_json::Value>(&request).unwrap());
                let mut stream = stream;
                writeln!(stream, "{line}").unwrap();
                stream.write_all(&raw).unwrap();
            }
            asked
        });
        let client = Client::new(&socket);
        let plan = || {
            client.plan("lb.toml".into(), String::new(), "ops".into(), true, || {
                Ok(())
            })
        };
        let Ok(PlanAnswer::Text(t)) = plan() else {
            panic!("the raw plan text was not read");
        };
        assert_eq!(t.text, "plan: vip a\n");
        assert!(t.verdict.changed && !t.verdict.refused);
        let message = |r: Result<PlanAnswer, Failure>| r.err().map(|e| e.message);
        let cut = message(plan()).unwrap();
        assert!(cut.contains("sent 9 of the plan's 20 bytes"), "{cut}");
        let bad = message(plan()).unwrap();
        assert!(bad.contains("not UTF-8"), "{bad}");
        for request in daemon.join().unwrap() {
            assert_eq!(request["as_text"], true);
            assert_eq!(request["text_raw"], true);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
