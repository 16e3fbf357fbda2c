//! `xlb trace` and `xlb capture`: the arguments checked (exit 2 naming
//! what is wrong), one `Trace` request, then the daemon's stream read line
//! by line until it ends the session (count, duration, its timeout). A
//! CLI that exits (Ctrl-C, kill) closes the connection, and the daemon
//! switches tracing off (docs/TRACE.md).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use xlb_core::api::{Request, Response, TraceRequest};
use xlb_core::trace::{ClientFilter, PcapOut, TraceEnd, TracedPacket, parse_events, render};

use super::args::{CaptureArgs, Cli, TraceArgs};
use super::client::ClientError;
use super::output::{Failure, Output};
use crate::user::current_user;

/// The request for `args`, its client prefix checked here so a bad one
/// fails before the daemon is asked.
fn request(args: &TraceArgs, capture: bool, events: Option<String>) -> Result<Request, Failure> {
    if let Some(c) = &args.client {
        ClientFilter::parse(c).map_err(Failure::bad_input)?;
    }
    if let Some(e) = &events {
        parse_events(e).map_err(Failure::bad_input)?;
    }
    Ok(Request::Trace(TraceRequest {
        capture,
        vip: args.vip.clone(),
        client: args.client.clone(),
        port: args.port,
        count: args.count,
        duration_seconds: args.duration.map(|d| d.as_secs_f64()),
        events,
        user: current_user(),
    }))
}

/// Send `request` and hand each streamed packet to `each` until the
/// daemon ends the session.
fn stream(
    socket: &Path,
    request: &Request,
    mut each: impl FnMut(TracedPacket) -> Result<(), Failure>,
) -> Result<TraceEnd, Failure> {
    let name = socket.display().to_string();
    let io = |source| ClientError::Io {
        socket: name.clone(),
        source,
    };
    let mut conn = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        socket: name.clone(),
        source,
    })?;
    let mut line = serde_json::to_vec(request).expect("requests serialize");
    line.push(b'\n');
    conn.write_all(&line).map_err(io)?;
    let reader = BufReader::new(&conn);
    for line in reader.lines() {
        let line = line.map_err(io)?;
        let response: Response =
            serde_json::from_str(&line).map_err(|source| ClientError::Decode {
                socket: name.clone(),
                source,
            })?;
        match response {
            Response::TraceStarted(active) => {
                eprintln!(
                    "xlb: {} on: {} (Ctrl-C stops it)",
                    active.kind, active.filter
                );
            }
            Response::Traced(packet) => each(*packet)?,
            Response::TraceEnded(end) => return Ok(end),
            Response::Error(e) => return Err(e.into()),
            other => {
                return Err(Failure::internal(format!("unexpected response: {other:?}")));
            }
        }
    }
    Err(ClientError::Closed { socket: name }.into())
}

fn ended(end: &TraceEnd, what: &str) {
    let why = match end.reason.as_str() {
        "count" => "the count was reached",
        "duration" => "the duration is over",
        "timeout" => "the daemon's limit was reached",
        other => other,
    };
    eprintln!("xlb: {} {what}; {why}", end.packets);
}

/// `xlb trace`.
pub fn trace(cli: &Cli, args: &TraceArgs) -> Result<(), Failure> {
    let request = request(args, false, None)?;
    let stdout = std::io::stdout();
    let end = stream(&cli.socket, &request, |p| {
        let line = match cli.output {
            Output::Json => serde_json::to_string(&p).expect("serializable"),
            Output::Table | Output::Wide => render(&p),
        };
        let mut out = stdout.lock();
        // A closed stdout (`| head`) ends the trace like Ctrl-C.
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| Failure::internal(format!("writing the trace: {e}")))
    })?;
    ended(&end, "packets traced");
    Ok(())
}

/// `xlb capture`.
pub fn capture(cli: &Cli, args: &CaptureArgs) -> Result<(), Failure> {
    let request = request(&args.filter, true, Some(args.events.clone()))?;
    let path = args.out.display().to_string();
    let file = std::fs::File::create(&args.out)
        .map_err(|e| Failure::bad_input(format!("--out {path}: {e}")))?;
    let failed = |e: xlb_core::trace::PcapError| Failure::internal(format!("writing {path}: {e}"));
    let mut pcap = PcapOut::new(std::io::BufWriter::new(file)).map_err(failed)?;
    let end = stream(&cli.socket, &request, |p| {
        pcap.write(&p).map_err(failed)?;
        pcap.flush()
            .map_err(|e| Failure::internal(format!("writing {path}: {e}")))?;
        if cli.output == Output::Table || cli.output == Output::Wide {
            println!("{}", render(&p));
        }
        Ok(())
    })?;
    pcap.into_inner()
        .flush()
        .map_err(|e| Failure::internal(format!("writing {path}: {e}")))?;
    ended(&end, &format!("packets captured to {path}"));
    Ok(())
}
