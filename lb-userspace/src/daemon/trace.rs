//! `xlb trace` and `xlb capture` in the daemon (docs/TRACE.md): a
//! `Trace` request switches tracing on in the balancer with its filter and
//! streams each traced packet to the client as a JSON line, with the
//! VIPs', backends' and interfaces' names, until the count, the duration,
//! the daemon's own timeout (`trace::MAX_DURATION`), or the client's
//! connection closing (Ctrl-C, a killed CLI). Tracing is switched off in
//! every case, also when this task ends early (`Session`'s drop). One
//! session at a time: a second is refused, naming the first.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use lb_common::trace::TRACE_EV_ALL;
use xlb_core::api::{ApiError, ErrorKind, Response, TraceRequest};
use xlb_core::clock::unix_now;
use xlb_core::trace::{
    ClientFilter, Filter, MAX_DURATION, Names, TraceActive, TraceEnd, TraceError, decode, matches,
    parse_events,
};
use xlb_dataplane::SharedTracer;

use crate::daemon::controller::Controller;
use crate::daemon::metrics::Metrics;

/// How often the ring is read: a line reaches the client within this.
const POLL: Duration = Duration::from_millis(50);
/// A line the client does not take within this ends the session (the
/// control socket's answers have the same limit).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Records taken from the ring per read, at most.
const BATCH: usize = 256;

/// A session being served: on drop, tracing is off and the status says
/// so, however the session ended.
struct Session {
    tracer: SharedTracer,
    metrics: Arc<Metrics>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Err(e) = lock(&self.tracer).stop() {
            log::warn!("trace: switching tracing off: {e}");
        }
        *lock(&self.metrics.trace_active) = None;
        // The status document says so at once (not a tick later).
        self.metrics.invalidate_change();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn bad_input(message: String) -> Response {
    Response::Error(ApiError {
        kind: ErrorKind::BadInput,
        message,
    })
}

/// What a session needs, checked: the kernel filter, its description,
/// the limits, the names.
struct Plan {
    filter: Filter,
    described: String,
    count: Option<u64>,
    duration: Duration,
    /// The duration was the daemon's own timeout, not asked for.
    own_timeout: bool,
    names: Names,
}

/// Check a request against the applied config (the VIP's name).
fn plan(request: &TraceRequest, controller: &Controller) -> Result<Plan, TraceError> {
    let mut names = controller.applied().map(Names::of).unwrap_or_default();
    let vip_id = match &request.vip {
        None => None,
        Some(name) => Some(
            names
                .vips
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(id, _)| *id)
                .ok_or_else(|| TraceError::UnknownVip {
                    name: name.clone(),
                    known: names.vips.values().cloned().collect::<Vec<_>>().join(", "),
                })?,
        ),
    };
    let client = request
        .client
        .as_deref()
        .map(ClientFilter::parse)
        .transpose()?;
    let events = match &request.events {
        Some(e) => parse_events(e)?,
        None => TRACE_EV_ALL,
    };
    if request.count == Some(0) {
        return Err(TraceError::ZeroCount);
    }
    let (duration, own_timeout) = match request.duration_seconds {
        None => (MAX_DURATION, true),
        Some(s) if s > 0.0 && s <= MAX_DURATION.as_secs_f64() => {
            (Duration::from_secs_f64(s), false)
        }
        Some(s) => {
            return Err(TraceError::Duration {
                value: format!("{s}s"),
                reason: format!(
                    "more than 0 and at most {}s (the daemon's limit)",
                    MAX_DURATION.as_secs()
                ),
            });
        }
    };
    if let Ok(list) = nix::net::if_::if_nameindex() {
        for i in list.iter() {
            names
                .interfaces
                .insert(i.index(), i.name().to_string_lossy().into_owned());
        }
    }
    let mut described = vec![format!("vip={}", request.vip.as_deref().unwrap_or("any"))];
    if let Some(c) = &client {
        described.push(format!("client={c}"));
    }
    if let Some(p) = request.port {
        described.push(format!("port={p}"));
    }
    if request.capture {
        described.push(format!(
            "events={}",
            xlb_core::trace::event_names(events).join(",")
        ));
    }
    Ok(Plan {
        filter: Filter {
            capture: request.capture,
            vip_id,
            client,
            port: request.port,
            events,
        },
        described: described.join(" "),
        count: request.count,
        duration,
        own_timeout,
        names,
    })
}

async fn send(write: &mut OwnedWriteHalf, response: &Response) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(response)?;
    line.push(b'\n');
    tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&line))
        .await
        .map_err(|_| anyhow::anyhow!("the client took no line for {:?}", WRITE_TIMEOUT))??;
    Ok(())
}

/// Serve one `Trace` request on its connection.
pub async fn serve(
    request: TraceRequest,
    mut read: OwnedReadHalf,
    mut write: OwnedWriteHalf,
    controller: Arc<Mutex<Controller>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let checked = {
        let c = lock(&controller);
        c.tracer().map(|t| (t, plan(&request, &c)))
    };
    let (tracer, plan) = match checked {
        None => {
            let refused = Response::Error(ApiError {
                kind: ErrorKind::Internal,
                message: "the loaded balancer has no trace maps (an object built before \
                          tracing: --object?)"
                    .to_string(),
            });
            return send(&mut write, &refused).await;
        }
        Some((_, Err(e))) => return send(&mut write, &bad_input(e.to_string())).await,
        Some((t, Ok(p))) => (t, p),
    };
    let kind = if request.capture { "capture" } else { "trace" };
    let started = unix_now();
    let active = TraceActive {
        kind: kind.to_string(),
        filter: plan.described.clone(),
        started_at_unix_seconds: started,
        until_unix_seconds: started + plan.duration.as_secs_f64(),
        packets: 0,
    };
    let running = {
        let mut slot = lock(&metrics.trace_active);
        match slot.as_ref() {
            Some(running) => Some(format!("{} ({})", running.kind, running.filter)),
            None => {
                *slot = Some(active.clone());
                None
            }
        }
    };
    if running.is_none() {
        // The status document shows this session from now on.
        metrics.invalidate_change();
    }
    if let Some(running) = running {
        let refused = Response::Error(ApiError {
            kind: ErrorKind::Refused,
            message: format!("a {running} is running already; one trace or capture at a time"),
        });
        return send(&mut write, &refused).await;
    }
    // From here on, dropping `session` switches tracing off.
    let session = Session {
        tracer: tracer.clone(),
        metrics: metrics.clone(),
    };
    let kernel = plan.filter.kernel();
    let started_kernel = lock(&tracer).start(kernel);
    let on = match started_kernel {
        Ok(on) => on,
        Err(e) => {
            drop(session);
            return send(
                &mut write,
                &Response::Error(ApiError {
                    kind: ErrorKind::Internal,
                    message: format!("switching tracing on: {e}"),
                }),
            )
            .await;
        }
    };
    let kernel = lb_common::trace::TraceConfig { on, ..kernel };
    log::info!("{kind} on: {} (user {})", plan.described, request.user);
    send(&mut write, &Response::TraceStarted(Box::new(active))).await?;
    let deadline = Instant::now() + plan.duration;
    let mut packets = 0u64;
    let mut scratch = [0u8; 64];
    let reason = loop {
        if Instant::now() >= deadline {
            break if plan.own_timeout {
                "timeout"
            } else {
                "duration"
            };
        }
        let wait = POLL.min(deadline.saturating_duration_since(Instant::now()));
        tokio::select! {
            // The client sends nothing after its request: a read that
            // ends is its connection closing (Ctrl-C, kill -9).
            r = read.read(&mut scratch) => match r {
                Ok(0) | Err(_) => break "client_closed",
                Ok(_) => continue,
            },
            () = tokio::time::sleep(wait) => {}
        }
        let records = lock(&tracer).read(BATCH);
        let at = unix_now();
        let mut closed = false;
        for r in records.iter().filter(|r| matches(&kernel, r)) {
            let packet = decode(r, &plan.names, at);
            if send(&mut write, &Response::Traced(Box::new(packet)))
                .await
                .is_err()
            {
                closed = true;
                break;
            }
            packets += 1;
            if request.capture {
                metrics.captured_packets.inc();
            } else {
                metrics.traced_packets.inc();
            }
            if plan.count.is_some_and(|n| packets >= n) {
                break;
            }
        }
        if let Some(a) = lock(&metrics.trace_active).as_mut() {
            a.packets = packets;
        }
        if closed {
            break "client_closed";
        }
        if plan.count.is_some_and(|n| packets >= n) {
            break "count";
        }
    };
    drop(session);
    log::info!("{kind} off: {reason} after {packets} packets");
    let end = TraceEnd {
        reason: reason.to_string(),
        packets,
    };
    // A client that closed does not read it; nothing to report then.
    let _ = send(&mut write, &Response::TraceEnded(end)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status line and the refusal name the session that runs.
    #[test]
    fn an_active_session_is_described() {
        let a = TraceActive {
            kind: "trace".into(),
            filter: "vip=web client=198.18.0.1/32".into(),
            started_at_unix_seconds: 100.0,
            until_unix_seconds: 700.0,
            packets: 3,
        };
        assert_eq!(
            a.line(160.0),
            "trace: vip=web client=198.18.0.1/32 (3 packets, 540s left)"
        );
    }
}
