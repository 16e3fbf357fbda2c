//! Running one check: the only I/O of health checking.
//!
//! A check opens a new TCP connection to the backend's socket address (an
//! address, never a name, so nothing is resolved; tokio's `TcpStream`
//! follows no proxy variable), and for HTTP writes one `GET` request by hand
//! and reads the status line. It reuses no connection: each ends with a
//! reset (`SO_LINGER` 0), so thousands of checks leave no TIME_WAIT sockets
//! on the balancer, as HAProxy's checks do. The whole check, connect
//! included, must finish within the timeout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use xlb_core::config::CheckKind;
use xlb_core::health::monitor::Spec;

/// The most of a response read looking for the status line.
const MAX_STATUS_LINE: usize = 4096;

/// Why a check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The backend's answer (or its silence): counts against it.
    Backend(String),
    /// This host could not run the check (`reason`: the errno's name):
    /// says nothing about the backend, so it changes no health.
    Local {
        reason: &'static str,
        message: String,
    },
}

/// The errors that are this host's, not the backend's: out of descriptors
/// (process or system), of socket buffers or memory, of local ports.
pub fn local_reason(e: &std::io::Error) -> Option<&'static str> {
    match e.raw_os_error()? {
        libc::EMFILE => Some("EMFILE"),
        libc::ENFILE => Some("ENFILE"),
        libc::ENOBUFS => Some("ENOBUFS"),
        libc::ENOMEM => Some("ENOMEM"),
        libc::EADDRNOTAVAIL => Some("EADDRNOTAVAIL"),
        _ => None,
    }
}

fn io_failure(what: &str, e: std::io::Error) -> Failure {
    match local_reason(&e) {
        Some(reason) => Failure::Local {
            reason,
            message: format!("{what}: {e}"),
        },
        None => Failure::Backend(format!("{what}: {e}")),
    }
}

/// Run the check `spec`: Ok, or why it failed in a few words.
pub async fn check(spec: &Spec) -> Result<(), String> {
    probe(spec).await.map_err(|f| match f {
        Failure::Backend(m) | Failure::Local { message: m, .. } => m,
    })
}

/// Run the check `spec`: Ok, or whose failure it was and why.
pub async fn probe(spec: &Spec) -> Result<(), Failure> {
    match tokio::time::timeout(spec.timeout, run(spec)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Backend(format!(
            "timed out after {}",
            millis(spec.timeout)
        ))),
    }
}

fn millis(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

async fn run(spec: &Spec) -> Result<(), Failure> {
    let stream = TcpStream::connect(spec.addr)
        .await
        .map_err(|e| io_failure("connect", e))?;
    // Close with a reset: no TIME_WAIT here.
    let _ = stream.set_zero_linger();
    match &spec.kind {
        CheckKind::None | CheckKind::Tcp => Ok(()),
        CheckKind::Http {
            path,
            status_min,
            status_max,
        } => http(stream, spec, path, *status_min, *status_max).await,
    }
}

/// The request: HTTP/1.1, `Host` the backend's address (and port unless
/// 80), no keep-alive.
pub fn request(spec: &Spec, path: &str) -> String {
    let host = match (spec.addr.ip(), spec.addr.port()) {
        (std::net::IpAddr::V4(a), 80) => a.to_string(),
        (std::net::IpAddr::V6(a), 80) => format!("[{a}]"),
        _ => spec.addr.to_string(),
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xlb-health-check/{}\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

async fn http(
    mut stream: TcpStream,
    spec: &Spec,
    path: &str,
    min: u16,
    max: u16,
) -> Result<(), Failure> {
    stream
        .write_all(request(spec, path).as_bytes())
        .await
        .map_err(|e| io_failure("sending the request", e))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let line = loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            break String::from_utf8_lossy(&buf[..end]).trim_end().to_string();
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err(Failure::Backend(format!(
                "no HTTP status line in the first {MAX_STATUS_LINE} bytes"
            )));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| io_failure("reading the response", e))?;
        if n == 0 {
            return Err(Failure::Backend(if buf.is_empty() {
                "the connection closed without a response".to_string()
            } else {
                format!(
                    "the connection closed in the status line: {:?}",
                    String::from_utf8_lossy(&buf)
                )
            }));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let code = status_code(&line).map_err(Failure::Backend)?;
    if (min..=max).contains(&code) {
        Ok(())
    } else {
        Err(Failure::Backend(format!(
            "HTTP status {code} (expected {min}-{max})"
        )))
    }
}

/// The code of a status line: `HTTP/1.1 200 OK` -> 200.
pub fn status_code(line: &str) -> Result<u16, String> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") {
        return Err(format!("not an HTTP response: {:?}", truncate(line)));
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..=999).contains(c) && code.len() == 3)
        .ok_or_else(|| format!("bad HTTP status line: {:?}", truncate(line)))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::TcpListener;

    fn spec(addr: SocketAddr, kind: CheckKind, timeout_ms: u64) -> Spec {
        Spec {
            addr,
            kind,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn http_kind(path: &str) -> CheckKind {
        CheckKind::Http {
            path: path.into(),
            status_min: 200,
            status_max: 399,
        }
    }

    /// A server on loopback that answers each connection with `reply`
    /// (None: accepts and says nothing) and hands back each request head.
    async fn server(
        reply: Option<&'static str>,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut r = tokio::io::BufReader::new(r);
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let _ = tx.send(head);
                    match reply {
                        Some(reply) => {
                            let _ = w.write_all(reply.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(5)).await,
                    }
                });
            }
        });
        (addr, rx)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn tcp_connect_passes_and_a_closed_port_fails() {
        rt().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            assert_eq!(check(&spec(addr, CheckKind::Tcp, 500)).await, Ok(()));
            drop(listener);
            let e = check(&spec(addr, CheckKind::Tcp, 500)).await.unwrap_err();
            assert!(e.starts_with("connect: "), "{e}");
            assert!(e.to_lowercase().contains("refused"), "{e}");
        });
    }

    #[test]
    fn http_sends_one_plain_request_and_judges_the_status() {
        rt().block_on(async {
            let (addr, mut heads) = server(Some("HTTP/1.1 204 No Content\r\n\r\n")).await;
            assert_eq!(
                check(&spec(addr, http_kind("/healthz?x=1"), 1000)).await,
                Ok(())
            );
            let head = heads.recv().await.unwrap();
            let lines: Vec<&str> = head.lines().collect();
            assert_eq!(lines[0], "GET /healthz?x=1 HTTP/1.1");
            assert!(lines.contains(&format!("Host: {addr}").as_str()), "{head}");
            assert!(lines.contains(&"Connection: close"), "{head}");

            let (addr, _h) = server(Some("HTTP/1.0 503 Service Unavailable\r\n\r\n")).await;
            assert_eq!(
                check(&spec(addr, http_kind("/"), 1000)).await,
                Err("HTTP status 503 (expected 200-399)".to_string())
            );
            let (addr, _h) = server(Some("SSH-2.0-OpenSSH_9.6\r\n")).await;
            let e = check(&spec(addr, http_kind("/"), 1000)).await.unwrap_err();
            assert!(e.starts_with("not an HTTP response"), "{e}");
            let (addr, _h) = server(Some("")).await;
            assert_eq!(
                check(&spec(addr, http_kind("/"), 1000)).await,
                Err("the connection closed without a response".to_string())
            );
        });
    }

    #[test]
    fn a_silent_server_times_out() {
        rt().block_on(async {
            let (addr, _h) = server(None).await;
            let started = std::time::Instant::now();
            assert_eq!(
                check(&spec(addr, http_kind("/"), 200)).await,
                Err("timed out after 200ms".to_string())
            );
            assert!(started.elapsed() < Duration::from_secs(2));
        });
    }

    #[test]
    fn local_errors_are_told_apart() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(local_reason(&e(libc::EMFILE)), Some("EMFILE"));
        assert_eq!(local_reason(&e(libc::ENOBUFS)), Some("ENOBUFS"));
        assert_eq!(local_reason(&e(libc::EADDRNOTAVAIL)), Some("EADDRNOTAVAIL"));
        assert_eq!(local_reason(&e(libc::ECONNREFUSED)), None);
        assert_eq!(local_reason(&e(libc::EHOSTUNREACH)), None);
        assert!(matches!(
            io_failure("connect", e(libc::EMFILE)),
            Failure::Local {
                reason: "EMFILE",
                ..
            }
        ));
        assert!(matches!(
            io_failure("connect", e(libc::ECONNREFUSED)),
            Failure::Backend(_)
        ));
    }

    #[test]
    fn host_header_and_status_lines() {
        let s = |a: &str| spec(a.parse().unwrap(), CheckKind::Tcp, 1);
        assert!(request(&s("198.18.0.12:80"), "/").contains("\r\nHost: 198.18.0.12\r\n"));
        assert!(request(&s("198.18.0.12:8080"), "/").contains("\r\nHost: 198.18.0.12:8080\r\n"));
        assert!(request(&s("[2001:db8::12]:80"), "/").contains("\r\nHost: [2001:db8::12]\r\n"));
        assert!(request(&s("[2001:db8::12]:81"), "/").contains("\r\nHost: [2001:db8::12]:81\r\n"));
        assert_eq!(status_code("HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(status_code("HTTP/1.0 404"), Ok(404));
        assert!(status_code("HTTP/1.1 2000 OK").is_err());
        assert!(status_code("HTTP/1.1 abc").is_err());
        assert!(status_code("hello").is_err());
    }
}
