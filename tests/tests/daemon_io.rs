//! The daemon's bounded endpoints and its file descriptors (issue 13,
//! items 5-7), with the real `xlb run` in the namespace testbed:
//!
//! - HTTP: connections beyond the cap are closed at once; an idle
//!   connection is closed after the header timeout; 64 scrapers in a loop
//!   build the status document at most once per collector tick (a scrape
//!   never holds the controller's lock to encode), and `xlb status` stays
//!   quick meanwhile; a scrape with gzip and `/api/status` with zstd are
//!   served compressed, and decode to what a plain client gets.
//! - Control socket: a request that is not UTF-8, not JSON, too big or too
//!   slow gets a `bad_input` answer; a slow client delays nobody; the CLI
//!   prints the error and exits 2 for a config over the request limit.
//! - Descriptors: under a low RLIMIT_NOFILE (prlimit on the daemon),
//!   failed accepts and local health-check failures neither end the daemon
//!   nor take a backend down, forwarding holds, and the control socket
//!   answers again once descriptors are free; tables of removed VIPs are
//!   closed.
//!
//! Needs root. Namespaces `xlbio-*`, `xlbfd-*`, `xlbtb-*`; addresses in
//! 198.18.0.0/15; the daemon's HTTP side on 127.0.0.1:9470 inside the LB's
//! namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use tests::echo::{EchoServers, probe};
use tests::netns::Netns;
use tests::testbed::{self, Host, Testbed, VIP4};
use tests::xlbd::Daemon;

const METRICS: &str = "127.0.0.1:9470";
/// The daemon's limits (lb-userspace daemon/http.rs and daemon/mod.rs).
const HTTP_MAX_CONNECTIONS: usize = 256;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REQUEST_BYTES: usize = 65_536 * 384 + 1_024 * 4_096 + 65_536;

/// GET `path` on the daemon's HTTP side, from inside `ns`: the body.
fn http_get(ns: &Netns, path: &str) -> anyhow::Result<String> {
    let url = format!("http://{METRICS}{path}");
    ns.spawn(move || {
        let body = ureq::get(&url)
            .timeout(Duration::from_secs(20))
            .call()?
            .into_string()?;
        Ok(body)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("GET panicked"))?
}

/// GET `path` with `Accept-Encoding: accept`, from inside `ns`: the body
/// as sent, and its Content-Encoding.
fn http_get_bytes(
    ns: &Netns,
    path: &str,
    accept: &'static str,
) -> anyhow::Result<(Vec<u8>, Option<String>)> {
    let url = format!("http://{METRICS}{path}");
    ns.spawn(move || {
        let response = ureq::get(&url)
            .set("Accept-Encoding", accept)
            .timeout(Duration::from_secs(20))
            .call()?;
        let coding = response.header("Content-Encoding").map(str::to_string);
        let mut body = Vec::new();
        response.into_reader().read_to_end(&mut body)?;
        Ok((body, coding))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("GET panicked"))?
}

/// The value of one series in an exposition (0 when absent).
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Is `stream` closed by the peer (EOF or reset) within `wait`?
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 64];
    match stream.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Send `bytes` on a new control connection, then read one answer line
/// (None: closed without one) within `wait`.
fn raw_request(socket: &Path, bytes: &[u8], wait: Duration) -> anyhow::Result<Option<String>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(wait))?;
    // A refused request may be closed before all of it was written.
    let _ = s.write_all(bytes);
    let mut answer = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&b[..n]);
                if answer.ends_with(b"\n") {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("no answer within {wait:?}")
            }
            Err(_) => break,
        }
    }
    if answer.is_empty() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8(answer)?))
}

/// The answer is a bad_input error whose message contains `what`.
fn is_bad_input(answer: Option<String>, what: &str) -> anyhow::Result<()> {
    let answer = answer.context("the connection was closed without an answer")?;
    let v: serde_json::Value = serde_json::from_str(&answer)
        .with_context(|| format!("the answer is not JSON: {answer:?}"))?;
    let e = &v["error"];
    ensure!(e["kind"] == "bad_input", "not a bad_input error: {answer}");
    ensure!(
        e["message"].as_str().is_some_and(|m| m.contains(what)),
        "message without {what:?}: {answer}"
    );
    Ok(())
}

/// How long one `xlb status` takes.
fn timed_status(daemon: &Daemon) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = daemon.xlb(&["status"])?;
    ensure!(
        out.status.success(),
        "xlb status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(started.elapsed())
}

#[test]
fn the_control_socket_answers_every_bad_request_and_serves_clients_concurrently() {
    tests::require_privileges!();
    tests::in_workdir("xlbio-control", |dir| {
        let bed = Testbed::new("xlbio", 1)?;
        let config = dir.join("xlb.toml");
        std::fs::write(&config, testbed::config(&[1]))?;
        let daemon = Daemon::start(&bed.lb.ns, &config, dir)?;
        let socket = daemon.socket.clone();

        // A slow client: half a request, then nothing.
        let slow = {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let answer = raw_request(&socket, b"{\"op\":\"sta", CONTROL_TIMEOUT * 2);
                (answer, started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        // Nobody waits for it.
        let took = timed_status(&daemon)?;
        ensure!(
            took < Duration::from_secs(3),
            "xlb status took {took:?} beside a slow client"
        );

        // Not UTF-8, not JSON: an answer each.
        is_bad_input(
            raw_request(&socket, b"\xff\xfe{}\n", Duration::from_secs(5))?,
            "UTF-8",
        )?;
        is_bad_input(
            raw_request(&socket, b"hello\n", Duration::from_secs(5))?,
            "bad request",
        )?;
        // Too big: one byte over the limit, no newline.
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        is_bad_input(
            raw_request(&socket, &big, Duration::from_secs(20))?,
            "larger than",
        )?;

        // The CLI: a valid config over the limit (a long comment) is
        // refused with the daemon's message and exit 2.
        let huge = dir.join("huge.toml");
        let mut text = testbed::config(&[1]);
        text.push_str(&format!("# {}\n", "x".repeat(MAX_REQUEST_BYTES)));
        std::fs::write(&huge, text)?;
        let out = daemon.xlb(&["apply", huge.to_str().unwrap()])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(2) && stderr.contains("larger than"),
            "xlb apply of a config over the limit: {:?} {stderr}",
            out.status
        );

        // The slow client is answered once its time is up.
        let (answer, waited) = slow
            .join()
            .map_err(|_| anyhow::anyhow!("slow client panicked"))?;
        is_bad_input(answer?, "no complete request")?;
        ensure!(
            waited >= CONTROL_TIMEOUT - Duration::from_millis(500)
                && waited < CONTROL_TIMEOUT + Duration::from_secs(3),
            "the slow client was answered after {waited:?}"
        );
        let metrics = http_get(&bed.lb.ns, "/metrics")?;
        for reason in ["not_utf8", "too_big", "timed_out"] {
            let n = series(
                &metrics,
                &format!("xlb_control_bad_requests_total{{reason=\"{reason}\"}}"),
            );
            ensure!(n >= 1.0, "no {reason} counted: {n}");
        }
        Ok(())
    });
}

#[test]
fn http_connections_are_capped_idle_ones_time_out_and_scrapes_share_one_document() {
    tests::require_privileges!();
    tests::in_workdir("xlbio-http", |dir| {
        let bed = Testbed::new("xlbhp", 1)?;
        let config = dir.join("xlb.toml");
        std::fs::write(&config, testbed::config(&[1]))?;
        let daemon = Daemon::start(&bed.lb.ns, &config, dir)?;

        // 300 idle connections: the cap's worth stay, the rest are closed
        // at once; those that stay are closed after the header timeout.
        let extra = 44;
        let held = bed
            .lb
            .ns
            .spawn(move || {
                let mut conns = Vec::new();
                for _ in 0..HTTP_MAX_CONNECTIONS + extra {
                    conns.push(TcpStream::connect(METRICS)?);
                }
                std::thread::sleep(Duration::from_millis(500));
                let opened = Instant::now();
                let mut open = Vec::new();
                let mut refused = 0;
                for mut c in conns {
                    if closed_within(&mut c, Duration::from_millis(10)) {
                        refused += 1;
                    } else {
                        open.push(c);
                    }
                }
                // Give each of the rest until the header timeout, and 2 s.
                let deadline = opened + HEADER_READ_TIMEOUT + Duration::from_secs(2);
                let mut still_open = 0;
                for mut c in open {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !closed_within(&mut c, left.max(Duration::from_millis(10))) {
                        still_open += 1;
                    }
                }
                Ok((refused, still_open))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("connections panicked"))??;
        let (refused, still_open) = held;
        ensure!(
            refused >= extra && refused <= extra + 8,
            "{refused} of {} idle connections were closed at once (cap {HTTP_MAX_CONNECTIONS})",
            HTTP_MAX_CONNECTIONS + extra
        );
        ensure!(
            still_open == 0,
            "{still_open} idle connections still open after the header timeout"
        );

        // 64 scrapers for 4 s: the status document is built at most once
        // per collector tick (plus one), not once per scrape.
        let before = http_get(&bed.lb.ns, "/metrics")?;
        let builds_before = series(&before, "xlb_http_status_builds_total");
        let refused_before = series(&before, "xlb_http_connections_refused_total");
        ensure!(
            refused_before >= extra as f64,
            "refused connections not counted: {refused_before}"
        );
        let started = Instant::now();
        let scrapers: Vec<_> = (0..64)
            .map(|i| {
                bed.lb.ns.spawn(move || {
                    let mut n = 0u32;
                    let end = Instant::now() + Duration::from_secs(4);
                    while Instant::now() < end && n < 200 {
                        let path = if i % 2 == 0 {
                            "/metrics"
                        } else {
                            "/api/status"
                        };
                        let body = ureq::get(&format!("http://{METRICS}{path}"))
                            .timeout(Duration::from_secs(10))
                            .call()?
                            .into_string()?;
                        ensure!(!body.is_empty(), "empty {path}");
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        let mut status_took = Vec::new();
        for _ in 0..5 {
            status_took.push(timed_status(&daemon)?);
            std::thread::sleep(Duration::from_millis(500));
        }
        let mut scrapes = 0;
        for s in scrapers {
            scrapes += s
                .join()
                .map_err(|_| anyhow::anyhow!("scraper panicked"))??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let after = http_get(&bed.lb.ns, "/metrics")?;
        let builds = series(&after, "xlb_http_status_builds_total") - builds_before;
        ensure!(scrapes >= 64, "only {scrapes} scrapes");
        // At most one per collector tick, plus one per `xlb status` (its
        // counters are those of when it asked; the scrapes share it).
        let asked = status_took.len() as f64;
        ensure!(
            builds <= seconds.ceil() + asked + 3.0,
            "{builds} status documents built for {scrapes} scrapes and {asked} xlb status in {seconds:.1} s"
        );
        status_took.sort();
        ensure!(
            status_took[2] < Duration::from_secs(2),
            "xlb status under scrapes: {status_took:?}"
        );
        // /api/status is the status document.
        let doc: serde_json::Value = serde_json::from_str(&http_get(&bed.lb.ns, "/api/status")?)?;
        ensure!(
            doc["vips"].as_array().is_some_and(|v| v.len() == 4),
            "{doc}"
        );
        // Compressed as asked: /metrics with gzip (one member: a reader that
        // stops after the first reads it whole) is the plain text's series,
        // /api/status with zstd the same document.
        let (gzip, coding) = http_get_bytes(&bed.lb.ns, "/metrics", "gzip")?;
        ensure!(coding.as_deref() == Some("gzip"), "{coding:?}");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gzip[..]).read_to_string(&mut text)?;
        let plain = http_get(&bed.lb.ns, "/metrics")?;
        let names = |t: &str| -> Vec<String> {
            t.lines()
                .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
                .collect()
        };
        ensure!(
            names(&text) == names(&plain) && text.ends_with("# EOF\n"),
            "gzip:\n{text}\nplain:\n{plain}"
        );
        ensure!(
            text.contains("xlb_backend_packets_total{vip=\"web\",backend=\"b1\"}"),
            "{text}"
        );
        let (zstd, coding) = http_get_bytes(&bed.lb.ns, "/api/status", "gzip, zstd")?;
        ensure!(coding.as_deref() == Some("zstd"), "{coding:?}");
        let zdoc: serde_json::Value =
            serde_json::from_slice(&zstd::stream::decode_all(&zstd[..])?)?;
        ensure!(zdoc["vips"].as_array().map(Vec::len) == Some(4), "{zdoc}");
        drop(daemon);
        Ok(())
    });
}

/// The daemon's descriptors: (all, BPF maps).
fn descriptors(pid: u32) -> anyhow::Result<(usize, usize)> {
    let mut all = 0;
    let mut maps = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        all += 1;
        if std::fs::read_link(e?.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-map")
        {
            maps += 1;
        }
    }
    Ok((all, maps))
}

#[test]
fn tables_of_removed_vips_are_closed() {
    tests::require_privileges!();
    tests::in_workdir("xlbtb", |dir| {
        let bed = Testbed::new("xlbtb", 1)?;
        let config = dir.join("xlb.toml");
        std::fs::write(&config, testbed::config(&[1]))?;
        let daemon = Daemon::start(&bed.lb.ns, &config, dir)?;
        let (_, four) = descriptors(daemon.pid())?;
        // One VIP of the four.
        let text = testbed::config(&[1]);
        let one: String = text
            .split("\n[[vip]]")
            .take(2)
            .collect::<Vec<_>>()
            .join("\n[[vip]]");
        let smaller = dir.join("one.toml");
        std::fs::write(&smaller, &one)?;
        for _ in 0..3 {
            let out = daemon.xlb(&["apply", "--force", smaller.to_str().unwrap()])?;
            ensure!(
                out.status.success(),
                "apply: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let out = daemon.xlb(&["apply", "--force", config.to_str().unwrap()])?;
            ensure!(out.status.success(), "apply back");
        }
        let out = daemon.xlb(&["apply", "--force", smaller.to_str().unwrap()])?;
        ensure!(out.status.success(), "apply one");
        let (_, left) = descriptors(daemon.pid())?;
        ensure!(
            left + 3 == four,
            "BPF map descriptors: {four} with 4 VIPs, {left} after removing 3 (and 3 round trips)"
        );
        Ok(())
    });
}

/// A VIP on `port` over `backends`, TCP-checked every 200 ms.
fn checked_config(port: u16, backends: &[Host]) -> String {
    let mut out = format!(
        "interface = \"eth0\"\nhash_seed = 1\n\n[[vip]]\nname = \"web\"\naddress = \"{VIP4}\"\n\
         port = {port}\nprotocol = \"tcp\"\n\n[vip.health]\ninterval = \"200ms\"\n\
         timeout = \"200ms\"\nfall = 2\nrise = 2\n"
    );
    for b in backends {
        out.push_str(&format!(
            "\n[[vip.backend]]\nname = \"{}\"\naddress = \"{}\"\nmac = \"{}\"\n",
            b.name, b.v4, b.mac
        ));
    }
    out
}

/// Every backend of `web` is up, never went down, and was checked.
fn all_up(daemon: &Daemon) -> anyhow::Result<bool> {
    let s = daemon.status()?;
    let vip = s["vips"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "web"))
        .context("no VIP web")?;
    let backends = vip["backends"].as_array().context("no backends")?;
    for b in backends {
        let h = &b["health"];
        ensure!(
            h["down_events_total"] == 0,
            "backend {} went down: {h}",
            b["name"]
        );
        if h["state"] != "up" {
            return Ok(false);
        }
    }
    Ok(true)
}

#[test]
fn out_of_descriptors_the_daemon_forwards_checks_and_answers() {
    tests::require_privileges!();
    tests::in_workdir("xlbfd", |dir| {
        const PORT: u16 = 8074;
        let bed = Testbed::new("xlbfd", 2)?;
        let _servers = EchoServers::start(&bed.backends, PORT)?;
        let config = dir.join("xlb.toml");
        std::fs::write(&config, checked_config(PORT, &bed.backends))?;
        let daemon = Daemon::start(&bed.lb.ns, &config, dir)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_up(&daemon)? {
            ensure!(Instant::now() < deadline, "backends not up within 10 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        // A limit a few descriptors above what the daemon holds now.
        let pid = daemon.pid();
        let (open, _) = descriptors(pid)?;
        let limit = open + 6;
        let out = Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={limit}:{limit}"))
            .output()?;
        ensure!(out.status.success(), "prlimit: {out:?}");

        // Use the rest up: 64 idle HTTP connections, held 3 s (the daemon
        // accepts a few, then every accept fails with EMFILE).
        let hold = Duration::from_secs(3);
        let holder = bed.lb.ns.spawn(move || {
            let mut conns = Vec::new();
            for _ in 0..64 {
                conns.push(TcpStream::connect(METRICS)?);
            }
            std::thread::sleep(hold);
            Ok(conns.len())
        });
        std::thread::sleep(Duration::from_millis(300));
        // A control request now waits (its accept fails) but is answered
        // once descriptors are free.
        let socket = daemon.socket.clone();
        let waiting = std::thread::spawn(move || {
            let started = Instant::now();
            let out = Command::new(tests::xlbd::xlb_binary()?)
                .arg("--socket")
                .arg(&socket)
                .arg("status")
                .output()?;
            ensure!(
                out.status.success(),
                "xlb status: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(started.elapsed())
        });
        // Forwarding goes on meanwhile.
        let target = SocketAddr::from((VIP4, PORT));
        let forwarded = bed
            .client
            .ns
            .spawn(move || {
                let mut ok = 0;
                for _ in 0..20 {
                    if probe(target, Duration::from_secs(1)).is_ok() {
                        ok += 1;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(ok)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("probes panicked"))??;
        let held = holder
            .join()
            .map_err(|_| anyhow::anyhow!("holder panicked"))??;
        ensure!(held == 64, "held {held}");
        ensure!(
            forwarded == 20,
            "{forwarded} of 20 connections through the VIP"
        );
        let waited = waiting
            .join()
            .map_err(|_| anyhow::anyhow!("status panicked"))??;
        ensure!(
            waited < Duration::from_secs(10),
            "xlb status answered after {waited:?}"
        );
        let mut d = daemon;
        ensure!(d.exited()?.is_none(), "the daemon exited: {}", d.log_text());
        ensure!(all_up(&d)?, "a backend is not up: {}", d.status()?);
        let metrics = http_get(&bed.lb.ns, "/metrics")?;
        let local = series(
            &metrics,
            "xlb_health_probe_local_errors_total{reason=\"EMFILE\"}",
        );
        let accepts = series(&metrics, "xlb_control_accept_errors_total");
        ensure!(local >= 1.0, "no local probe error counted");
        ensure!(accepts >= 1.0, "no failed accept counted");
        println!(
            "limit {limit}: {local} checks not run (EMFILE), {accepts} failed control accepts, \
             status answered after {waited:?}, 20/20 forwarded"
        );
        Ok(())
    });
}
