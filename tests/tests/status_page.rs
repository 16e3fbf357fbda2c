//! The live status page (lb-userspace/src/daemon/web/status.html) in headless
//! Chromium, served with fixture documents from a tiny HTTP server on
//! 127.0.0.1. Needs no root; needs `chromium` (or `XLB_CHROMIUM`).
//!
//! The history (`/api/history`): a forced bad weight change and its
//! automatic rollback in order on the time line, the affected backend's
//! observed share rising after the change and falling back after the
//! rollback in the chart, the detector's events marked.
//!
//! `XLB_WRITE_SCREENSHOT=1` makes `renders_fixture` write docs/status-page.png
//! and `history_shows_a_forced_change_and_its_rollback`
//! docs/status-page-history.png;
//! `XLB_SCREENSHOT_DIR=DIR` makes every test write DIR/<test>.png for review.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tests::browser::{self, Page};

const HTML: &str = include_str!("../../lb-userspace/src/daemon/web/status.html");
const FIXTURE: &str = include_str!("../fixtures/status.json");
const SIZE: (u32, u32) = (1200, 1200);

/// Answers `GET /api/status` given how many status requests came before it
/// since the page itself was last fetched (0 for a page load's first poll).
type StatusFn = dyn Fn(usize) -> (u16, String) + Send + Sync;

/// Serves the page at `/` and `status` at `/api/status` from a thread; returns
/// the base URL. The server lives until the test process exits.
fn serve(status: impl Fn(usize) -> (u16, String) + Send + Sync + 'static) -> String {
    serve_with_history(status, None)
}

/// `serve`, and `history` at `/api/history` (404 without one, as from a
/// daemon before the history).
fn serve_with_history(
    status: impl Fn(usize) -> (u16, String) + Send + Sync + 'static,
    history: Option<String>,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let status: Arc<StatusFn> = Arc::new(status);
    let polls = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (status, polls) = (status.clone(), polls.clone());
            // One thread per connection: Chromium preconnects sockets it may never use.
            let history = history.clone();
            std::thread::spawn(move || handle(conn, &*status, &polls, history.as_deref()));
        }
    });
    url
}

fn handle(mut conn: TcpStream, status: &StatusFn, polls: &AtomicUsize, history: Option<&str>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let req = String::from_utf8_lossy(&req);
    let path = req.split_whitespace().nth(1).unwrap_or("");
    let (code, ctype, body) = match path {
        "/" => {
            // A new page load: its first poll is number 0 again.
            polls.store(0, Ordering::SeqCst);
            (200, "text/html; charset=utf-8", HTML.to_string())
        }
        "/api/status" => {
            let (code, body) = status(polls.fetch_add(1, Ordering::SeqCst));
            (code, "application/json", body)
        }
        "/api/history" if history.is_some() => (
            200,
            "application/json",
            history.unwrap_or_default().to_string(),
        ),
        _ => (404, "text/plain", "not found\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body.as_bytes());
}

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).unwrap()
}

/// Loads the page; its DOM comes back without <script> and <style> elements,
/// whose source would otherwise match the texts the tests look for.
fn load(url: &str, wait_ms: u32, name: &str) -> Page {
    let mut page = browser::load(url, &[], wait_ms, SIZE).unwrap();
    if let Ok(dir) = std::env::var("XLB_SCREENSHOT_DIR") {
        std::fs::write(format!("{dir}/{name}.png"), &page.screenshot_png).unwrap();
    }
    for tag in ["script", "style"] {
        while let Some(start) = page.dom.find(&format!("<{tag}")) {
            let end = page.dom[start..]
                .find(&format!("</{tag}>"))
                .map_or(page.dom.len(), |i| start + i + tag.len() + 3);
            page.dom.replace_range(start..end, "");
        }
    }
    page
}

/// The markup of the element whose start tag carries `attr` (e.g.
/// `data-backend="b1"`), up to the end tag `end`.
fn element<'a>(dom: &'a str, attr: &str, end: &str) -> &'a str {
    let at = dom
        .find(attr)
        .unwrap_or_else(|| panic!("no element with {attr} in the DOM:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let stop = dom[at..]
        .find(end)
        .map_or(dom.len(), |i| at + i + end.len());
    &dom[start..stop]
}

/// The start tag of the element carrying `attr`.
fn start_tag<'a>(dom: &'a str, attr: &str) -> &'a str {
    let e = element(dom, attr, ">");
    &e[..e.find('>').unwrap() + 1]
}

fn pct(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// The observed share the page shows: window.new_flows, else observed_share_ratio.
fn observed(b: &Value) -> Option<f64> {
    b.pointer("/window/new_flows")
        .and_then(Value::as_f64)
        .or_else(|| b["observed_share_ratio"].as_f64())
}

/// Every backend of every VIP in `doc` has a row with its shares as text.
fn assert_backend_rows(dom: &str, doc: &Value) {
    for vip in doc["vips"].as_array().unwrap() {
        let name = vip["name"].as_str().unwrap();
        let card = element(dom, &format!("data-vip=\"{name}\""), "</section>");
        for b in vip["backends"].as_array().unwrap() {
            let bname = b["name"].as_str().unwrap();
            let row = element(card, &format!("data-backend=\"{bname}\""), "</tr>");
            let expected = pct(b["expected_share_ratio"].as_f64().unwrap());
            let observed = observed(b).map_or("—".to_string(), pct);
            let table = pct(b["table_share_ratio"].as_f64().unwrap());
            let state = b["state"].as_str().unwrap();
            for text in [&expected, &observed, &table, state] {
                assert!(
                    row.contains(&format!(">{text}<")),
                    "{name}/{bname}: no {text:?} in {row}"
                );
            }
        }
    }
}

#[test]
fn renders_fixture() {
    let doc = fixture();
    let url = serve(|_| (200, FIXTURE.to_string()));
    let page = load(&url, 1500, "renders_fixture");
    let dom = &page.dom;

    assert!(dom.contains(">xlb0<"), "interface missing:\n{dom}");
    assert!(start_tag(dom, "id=\"conn\"").contains("conn live"), "{dom}");
    assert!(!dom.contains("stale"), "page claims stale data:\n{dom}");

    let web = element(dom, "data-vip=\"web\"", "</section>");
    assert!(web.contains(">198.18.0.10:80/tcp<"), "{web}");
    assert!(web.contains("<span class=\"badge ok\">ok</span>"), "{web}");
    assert!(web.contains("within thresholds"), "{web}");
    assert!(!web.contains("suspect"), "{web}");
    assert!(web.contains("kernel table matches"), "{web}");
    assert_backend_rows(dom, &doc);
    // The ratio observed/expected: b1 0.2512 / 0.25.
    assert!(element(web, "data-backend=\"b1\"", "</tr>").contains(">1.00×<"));

    let dns = element(dom, "data-vip=\"dns6\"", "</section>");
    assert!(dns.contains(">[2001:db8::53]:*/udp<"), "{dns}");
    assert!(
        dns.contains("<span class=\"badge low_rate\">low rate</span>"),
        "{dns}"
    );

    browser::png_is_rendered(&page.screenshot_png).unwrap();
    if std::env::var("XLB_WRITE_SCREENSHOT").as_deref() == Ok("1") {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/status-page.png");
        std::fs::write(path, &page.screenshot_png).unwrap();
    }
}

#[test]
fn highlights_imbalanced_backend_and_escapes_text() {
    let mut doc = fixture();
    let web = &mut doc["vips"][0];
    web["imbalance"] = json!({
        "state": "imbalanced", "cause": "traffic", "backend": "b3", "ratio": 2.29,
        "since_unix_seconds": 1764000020.0,
        "reason": "new_flows share of b3 is 2.29x expected <img src=x onerror=alert(1)>",
    });
    web["drift"] = json!({ "drifted": true, "checked_at_unix_seconds": 1764000042.0,
                           "reason": "slot 17 names b9 & not b2" });
    let body = doc.to_string();
    let url = serve(move |_| (200, body.clone()));
    let page = load(&url, 1500, "highlights_imbalanced_backend");
    let dom = &page.dom;

    let card = element(dom, "data-vip=\"web\"", "</section>");
    assert!(
        card.contains("<span class=\"badge imbalanced\">imbalanced</span>"),
        "{card}"
    );
    assert!(card.contains("traffic skew"), "{card}");
    assert!(card.contains("2.29×"), "{card}");
    assert!(
        start_tag(card, "data-backend=\"b3\"").contains("suspect"),
        "{card}"
    );
    for other in ["b1", "b2", "b4", "b5"] {
        let tag = start_tag(card, &format!("data-backend=\"{other}\""));
        assert!(!tag.contains("suspect"), "{other} highlighted: {tag}");
    }
    assert!(
        card.contains("table changed outside xlb — run <code>xlb repair</code>"),
        "{card}"
    );
    // Strings from the JSON are text, never markup.
    assert!(
        card.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{card}"
    );
    assert!(!dom.contains("<img"), "{dom}");
    assert!(card.contains("slot 17 names b9 &amp; not b2"), "{card}");
    assert!(dom.contains("<title>⚠ xlb xlb0"), "{dom}");
    assert_backend_rows(dom, &doc);
    browser::png_is_rendered(&page.screenshot_png).unwrap();
}

#[test]
fn keeps_last_data_when_the_api_fails() {
    // Each page load gets one good document, then 500s.
    let url = serve(|n| match n {
        0 => (200, FIXTURE.to_string()),
        _ => (500, "{\"error\":\"boom\"}".to_string()),
    });
    // 2.5 s of virtual time: polls at 0 s (good), 1 s and 2 s (500).
    let page = load(&url, 2500, "keeps_last_data");
    let dom = &page.dom;
    assert!(
        start_tag(dom, "id=\"conn\"").contains("conn stale"),
        "{dom}"
    );
    assert!(dom.contains("stale since"), "{dom}");
    assert!(dom.contains("HTTP 500"), "{dom}");
    assert!(dom.contains("Showing the last data received at"), "{dom}");
    assert_backend_rows(dom, &fixture());
    browser::png_is_rendered(&page.screenshot_png).unwrap();
}

#[test]
fn never_blank_without_data() {
    let url = serve(|_| (500, String::new()));
    let page = load(&url, 1500, "never_blank_without_data");
    let dom = &page.dom;
    assert!(dom.contains("stale since"), "{dom}");
    assert!(dom.contains("No data received yet."), "{dom}");
    assert!(!dom.contains("data-vip="), "{dom}");
}

/// A history of VIP `web` over b1..b3 around `NOW`: revision 1 at start,
/// revision 2 a forced `weight web b1 10` 80 s ago (rolled back by 3), revision 3
/// the automatic rollback 40 s ago; b1's observed share a third, then about 0.62
/// from 10 s after the change until the rollback, then a third again; the
/// detector's imbalanced and balanced events between.
fn history_fixture() -> Value {
    const NOW: f64 = 1_764_000_000.0;
    let samples: Vec<Value> = (0..=60)
        .map(|i| {
            let t = NOW - 120.0 + 2.0 * f64::from(i);
            let hot = (NOW - 70.0..NOW - 36.0).contains(&t);
            let b1 = if hot { 0.62 } else { 0.333 };
            let rest = (1.0 - b1) / 2.0;
            json!({ "at_unix_seconds": t, "shares": [b1, rest + 0.01, rest - 0.01] })
        })
        .collect();
    let predicted = |after: f64| {
        json!([
            { "vip": "web", "backend": "b1", "before_ratio": 0.3333, "after_ratio": after },
            { "vip": "web", "backend": "b2", "before_ratio": 0.3333, "after_ratio": (1.0 - after) / 2.0 },
            { "vip": "web", "backend": "b3", "before_ratio": 0.3333, "after_ratio": (1.0 - after) / 2.0 },
        ])
    };
    json!({
        "schema_version": 1, "generated_at_unix_seconds": NOW, "sample_every_seconds": 2.0,
        "series": [ { "vip": "web", "backend": "b1" }, { "vip": "web", "backend": "b2" },
                    { "vip": "web", "backend": "b3" } ],
        "series_dropped": 0,
        "samples": samples,
        "events": [
            { "at_unix_seconds": NOW - 50.0, "kind": "imbalanced", "vip": "web", "backend": "b1",
              "detail": "new_flows: b1 gets 1.86x its expected share" },
            { "at_unix_seconds": NOW - 30.0, "kind": "balanced", "vip": "web", "backend": null,
              "detail": "within thresholds" },
        ],
        "revisions": [
            { "number": 1, "at_unix_seconds": NOW - 600.0, "user": "root", "message": null,
              "kind": "startup", "what": "start with /etc/xlb/xlb.toml", "forced": false, "reason": null,
              "outcome": "baked", "outcome_detail": null, "predicted": [] },
            { "number": 2, "at_unix_seconds": NOW - 80.0, "user": "alice", "message": "more to b1",
              "kind": "edit", "what": "weight web b1 10", "forced": true, "reason": null,
              "outcome": "rolled_back", "outcome_detail": "by 3: b1 imbalanced <b>",
              "predicted": predicted(0.8333) },
            { "number": 3, "at_unix_seconds": NOW - 40.0, "user": "xlb", "message": null,
              "kind": "automatic_rollback", "what": "automatic rollback to 1", "forced": false,
              "reason": "web: b1 imbalanced during the bake", "outcome": "applied",
              "outcome_detail": null, "predicted": predicted(0.3333) },
        ],
    })
}

/// The (x, y) points of the polyline `data-series="<series>"`.
fn points(dom: &str, series: &str) -> Vec<(f64, f64)> {
    let tag = start_tag(dom, &format!("data-series=\"{series}\""));
    let at = tag.find("points=\"").unwrap() + 8;
    tag[at..tag[at..].find('"').unwrap() + at]
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

/// The numeric attribute `name` of a start tag.
fn attr(tag: &str, name: &str) -> f64 {
    let at = tag.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
    tag[at..tag[at..].find('"').unwrap() + at].parse().unwrap()
}

#[test]
fn history_shows_a_forced_change_and_its_rollback() {
    let url = serve_with_history(
        |_| (200, FIXTURE.to_string()),
        Some(history_fixture().to_string()),
    );
    let page = load(&url, 1500, "history");
    let dom = &page.dom;
    let history = element(dom, "id=\"history\"", "</section>");

    // The time line: the start, the forced change, its automatic rollback, in order.
    let rows: Vec<usize> = ["1", "2", "3"]
        .iter()
        .map(|n| {
            history
                .find(&format!("<tr data-revision=\"{n}\""))
                .unwrap_or_else(|| panic!("no row for revision {n}:\n{history}"))
        })
        .collect();
    assert!(
        rows[0] < rows[1] && rows[1] < rows[2],
        "rows out of order: {rows:?}"
    );
    let forced = element(history, "data-revision=\"2\" data-kind", "</tr>");
    assert!(forced.contains(">forced<"), "{forced}");
    assert!(
        forced.contains("weight web b1 10") && forced.contains(">alice<"),
        "{forced}"
    );
    assert!(forced.contains("b1 33.3% → 83.3%"), "{forced}");
    assert!(forced.contains(">rolled back<"), "{forced}");
    // Text from the document stays text.
    assert!(forced.contains("by 3: b1 imbalanced &lt;b&gt;"), "{forced}");
    let rollback = element(history, "data-revision=\"3\" data-kind", "</tr>");
    assert!(
        rollback.contains("data-kind=\"automatic_rollback\""),
        "{rollback}"
    );
    assert!(
        rollback.contains("web: b1 imbalanced during the bake"),
        "{rollback}"
    );

    // The chart: b1's share (a lower y is a larger share) rises after the
    // change's line and falls back after the rollback's.
    let x2 = attr(
        start_tag(history, "class=\"rev forced\" data-revision=\"2\""),
        "x1",
    );
    let x3 = attr(
        start_tag(
            history,
            "class=\"rev automatic_rollback\" data-revision=\"3\"",
        ),
        "x1",
    );
    assert!(
        x2 < x3,
        "the change at x {x2} is not before its rollback at x {x3}"
    );
    let b1 = points(history, "web/b1");
    assert_eq!(b1.len(), 61, "{b1:?}");
    let before: Vec<f64> = b1.iter().filter(|p| p.0 < x2).map(|p| p.1).collect();
    let during: Vec<f64> = b1
        .iter()
        .filter(|p| p.0 > x2 && p.0 < x3)
        .map(|p| p.1)
        .collect();
    let after = b1.last().unwrap().1;
    let highest = during.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        highest < before[0] - 40.0,
        "b1 does not rise after the change: {before:?} then {during:?}"
    );
    assert!(
        (after - before[0]).abs() < 1.0,
        "b1 does not fall back: {after} vs {}",
        before[0]
    );
    // b2 falls while b1 rises.
    let b2 = points(history, "web/b2");
    assert!(
        b2.iter()
            .any(|p| p.0 > x2 && p.0 < x3 && p.1 > b2[0].1 + 20.0),
        "{b2:?}"
    );
    // The detector's verdicts are marked between the change and the rollback, and after.
    let imbalanced = attr(start_tag(history, "data-event=\"imbalanced\""), "cx");
    assert!(
        x2 < imbalanced && imbalanced < x3,
        "{imbalanced} not in ({x2}, {x3})"
    );
    assert!(attr(start_tag(history, "data-event=\"balanced\""), "cx") > x3);
    assert!(
        history.contains("web / b1 · imbalanced: new_flows: b1 gets 1.86x"),
        "{history}"
    );

    browser::png_is_rendered(&page.screenshot_png).unwrap();
    if std::env::var("XLB_WRITE_SCREENSHOT").as_deref() == Ok("1") {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/status-page-history.png"
        );
        std::fs::write(path, &page.screenshot_png).unwrap();
    }
}

#[test]
fn no_history_leaves_a_note_not_a_stale_page() {
    let url = serve(|_| (200, FIXTURE.to_string()));
    let page = load(&url, 1500, "no_history");
    let dom = &page.dom;
    assert!(
        dom.contains("No history from this daemon (HTTP 404)"),
        "{dom}"
    );
    assert!(start_tag(dom, "id=\"conn\"").contains("conn live"), "{dom}");
    assert_backend_rows(dom, &fixture());
}
