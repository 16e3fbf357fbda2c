//! Headless Chromium for page tests: load a URL, let its scripts and fetches
//! run under virtual time, and return the rendered DOM and a screenshot.
//!
//! The binary is `chromium` from PATH unless `XLB_CHROMIUM` names another.
//! `prefix` runs it under another command, e.g. `Netns::exec_prefix`, so an
//! end-to-end test can load the page from a daemon inside a namespace.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// Wall-clock bound for one Chromium run; it is killed when it takes longer.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What Chromium rendered.
pub struct Page {
    /// The DOM after the scripts ran (`--dump-dom`).
    pub dom: String,
    /// PNG of the viewport (`--screenshot`).
    pub screenshot_png: Vec<u8>,
}

/// Load `url` in headless Chromium, wait `wait_ms` of virtual time for
/// scripts/fetches, return the rendered DOM (--dump-dom) and a PNG screenshot
/// (--screenshot). `prefix` is a command prefix to run chromium under, e.g.
/// `ns.exec_prefix()` (`ip netns exec <ns.name>`) or empty.
///
/// Virtual time advances only while the page is idle: a pending fetch holds
/// it, so a page that polls every second gets `wait_ms / 1000` complete polls
/// however slow the server is (within the wall-clock timeout). The DOM and the
/// screenshot come from two separate runs, each with its own fresh profile.
pub fn load(url: &str, prefix: &[&str], wait_ms: u32, size: (u32, u32)) -> Result<Page> {
    let dir = TempDir::new()?;
    // Chromium exits 0 even when the page failed to load ("Page load failed:
    // net::ERR_CONNECTION_REFUSED" on stderr) and then prints no DOM and writes
    // no screenshot, so both outputs are checked, with stderr in the error.
    let (dom, stderr) = run(prefix, &dir.0, url, wait_ms, size, &["--dump-dom"])?;
    let dom = String::from_utf8(dom).context("--dump-dom output is not UTF-8")?;
    ensure!(
        dom.contains("<html"),
        "chromium --dump-dom {url} printed no document; stderr tail:\n{}",
        tail(&stderr, 2000)
    );
    let png_path = dir.0.join("screenshot.png");
    let shot = format!("--screenshot={}", png_path.display());
    let (_, stderr) = run(prefix, &dir.0, url, wait_ms, size, &[&shot])?;
    let screenshot_png = std::fs::read(&png_path).with_context(|| {
        format!(
            "chromium --screenshot {url} wrote no {}; stderr tail:\n{}",
            png_path.display(),
            tail(&stderr, 2000)
        )
    })?;
    Ok(Page {
        dom,
        screenshot_png,
    })
}

/// One Chromium run with a fresh profile under `dir`; returns its stdout and
/// stderr, or an error when it failed or timed out.
fn run(
    prefix: &[&str],
    dir: &Path,
    url: &str,
    wait_ms: u32,
    (w, h): (u32, u32),
    extra: &[&str],
) -> Result<(Vec<u8>, String)> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let profile = dir.join(format!("profile-{}", RUNS.fetch_add(1, Ordering::Relaxed)));
    let chromium = std::env::var("XLB_CHROMIUM").unwrap_or_else(|_| "chromium".to_string());
    let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    argv.push(chromium);
    argv.extend(
        [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ]
        .map(String::from),
    );
    argv.push(format!("--user-data-dir={}", profile.display()));
    argv.push(format!("--virtual-time-budget={wait_ms}"));
    argv.push(format!("--window-size={w},{h}"));
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv.push(url.to_string());

    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {:?} (set XLB_CHROMIUM to the binary)", argv[0]))?;
    // Drain both pipes in threads so a chatty Chromium never blocks on them.
    let out = Drain::start(child.stdout.take());
    let err = Drain::start(child.stderr.take());
    let status = wait_timeout(&mut child, RUN_TIMEOUT)?;
    let stdout = out.finish();
    let stderr = String::from_utf8_lossy(&err.finish()).into_owned();
    match status {
        None => bail!(
            "{} timed out after {:?} and was killed; stderr tail:\n{}",
            argv.join(" "),
            RUN_TIMEOUT,
            tail(&stderr, 2000)
        ),
        Some(s) if !s.success() => bail!(
            "{} failed ({s}); stderr tail:\n{}",
            argv.join(" "),
            tail(&stderr, 2000)
        ),
        Some(_) => Ok((stdout, stderr)),
    }
}

/// Reads a pipe to its end in a thread, into a buffer that can be taken even
/// if the pipe never closes (a leftover helper process may still hold it).
struct Drain(Arc<Mutex<Vec<u8>>>, JoinHandle<()>);

impl Drain {
    fn start<R: Read + Send + 'static>(pipe: Option<R>) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let thread = std::thread::spawn(move || {
            let Some(mut p) = pipe else { return };
            let mut chunk = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = p.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Self(buf, thread)
    }

    /// What was read, after waiting up to 5 s for the end of the pipe.
    fn finish(self) -> Vec<u8> {
        let start = Instant::now();
        while !self.1.is_finished() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Waits for `child` at most `limit`; on timeout kills it and returns None.
fn wait_timeout(child: &mut Child, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `n` bytes of `s` (on a char boundary).
fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "xlb-chromium-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// PNG compresses flat colour to almost nothing, so a page that did not
/// render is a small file. Measured on this machine (Chromium 156, Debian
/// fonts), bytes at 800x600 / 1200x1200 / 1920x1080:
///
/// | page                                                  | 800x600 | 1200x1200 | 1920x1080 |
/// |-------------------------------------------------------|--------:|----------:|----------:|
/// | about:blank, or an empty `<body>`                      |   2 727 |     6 713 |     8 512 |
/// | an HTTP error page (Python http.server's 404 HTML)     |  16 308 |    21 003 |    23 039 |
/// | the status page with no data (api/status failing)      |  27 352 |    31 810 |    33 648 |
/// | the status page, smallest real data (1 VIP, 1 backend) |  61 716 |    66 340 |    69 955 |
/// | the status page, tests/fixtures/status.json            |  92 946 |   162 936 |   162 309 |
///
/// (Chromium's own network-error page is never screenshotted: on a failed
/// load headless Chromium writes no file at all.) The threshold sits above
/// every page without data and below the smallest page with data; it assumes
/// a viewport of at least 800x600.
pub const MIN_RENDERED_PNG_BYTES: usize = 45_000;

/// Checks that `png` is a PNG with sane dimensions and is not a blank page.
///
/// Without an image decoder the pixels are not inspected; instead the file
/// size must exceed [`MIN_RENDERED_PNG_BYTES`], which blank and error pages
/// never reach (PNG compresses flat colour to almost nothing).
pub fn png_is_rendered(png: &[u8]) -> Result<()> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    ensure!(
        png.len() >= 33 && png[..8] == SIGNATURE,
        "not a PNG ({} bytes)",
        png.len()
    );
    // The first chunk is IHDR: length (13), type, width, height, ...
    ensure!(&png[12..16] == b"IHDR", "PNG does not start with IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    ensure!(
        width >= 100 && height >= 100,
        "PNG is {width}x{height}, expected a page-sized screenshot"
    );
    ensure!(
        png.len() > MIN_RENDERED_PNG_BYTES,
        "PNG ({width}x{height}) is only {} bytes, at most {MIN_RENDERED_PNG_BYTES} is what a blank or \
         error page compresses to: the page did not render",
        png.len()
    );
    Ok(())
}
