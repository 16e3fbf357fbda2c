//! Health checks in the config: `[health]` (the defaults of every VIP, above
//! the first `[[vip]]`) and `[vip.health]` (one VIP's own, key by key over
//! the defaults), the way `[imbalance]` and `[safety]` work.
//!
//! A VIP is checked when either table exists and the resolved `kind` is not
//! `"none"`: a table without `kind` checks with a TCP connect. The checked
//! port is the VIP's unless `port` says otherwise; a VIP with port 0 (every
//! port) must name one.
//!
//! This file holds the rules: functions that take the `Checker` and a raw
//! table (`model::RawHealth`) and give the resolved `HealthCheck` (`types`).

use std::ops::Range;
use std::time::Duration;

use super::check::{Checker, DurationRule, Sp, field_at, field_path, format_duration};
use super::model::RawHealth;
use super::types::{AllDown, CheckKind, HealthCheck};

/// The HTTP status range when none is given.
pub const DEFAULT_STATUS: (u16, u16) = (200, 399);
/// The HTTP path when none is given.
pub const DEFAULT_PATH: &str = "/";

/// The defaults a VIP inherits: the top-level `[health]`, resolved, with
/// its port (if it names one) kept apart from the VIP's.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct HealthBase {
    pub check: HealthCheck,
    pub port: Option<u16>,
    /// A `[health]` table exists (a VIP then inherits its kind).
    pub present: bool,
}

/// Bounds of the duration keys.
const INTERVAL: DurationRule = DurationRule {
    key: "interval",
    min: Duration::from_millis(100),
    max: Duration::from_secs(600),
};
const TIMEOUT: DurationRule = DurationRule {
    key: "timeout",
    min: Duration::from_millis(10),
    max: Duration::from_secs(60),
};
const FLAP_WINDOW: DurationRule = DurationRule {
    key: "flap_window",
    min: Duration::from_secs(1),
    max: Duration::from_secs(3600),
};
const FLAP_HOLD: DurationRule = DurationRule {
    key: "flap_hold",
    min: Duration::ZERO,
    max: Duration::from_secs(3600),
};
const MAX_RISE_FALL: i128 = 100;
const MAX_FLAP_LIMIT: i128 = 1000;
/// Longest HTTP path.
const MAX_PATH_LEN: usize = 1024;

/// A `[health]` or `[vip.health]` table over `base`: each key given
/// replaces the base's value. None when something is wrong (reported).
pub(super) fn health_table(
    ck: &mut Checker<'_, '_>,
    raw: &RawHealth,
    base: &HealthBase,
) -> Option<HealthBase> {
    let path = &raw.path;
    let b = &base.check;
    let builtin = HealthCheck::default();
    let kind_name = match &raw.kind {
        None if base.present => Some(b.kind.name()),
        // A health table without `kind` checks with a TCP connect.
        None => Some("tcp"),
        Some(v) => match v.value.as_str() {
            k @ ("tcp" | "http" | "none") => Some(k),
            other => {
                let hint = if matches!(other.to_ascii_lowercase().as_str(), "tcp" | "http") {
                    " (lowercase)"
                } else {
                    ""
                };
                ck.problem(
                    &v.span,
                    field_path(path, "kind"),
                    format!(
                        "unknown check kind {other:?}: must be one of \"tcp\", \"http\", \
                         \"none\"{hint}"
                    ),
                );
                None
            }
        },
    };
    let port = match &raw.port {
        None => Some(base.port),
        Some(p) => ck
            .in_range(
                p,
                field_at(path, "port"),
                1,
                65535,
                " (default: the VIP's port)",
            )
            .map(|p| Some(p as u16)),
    };
    let (base_path, base_status) = match &b.kind {
        CheckKind::Http {
            path,
            status_min,
            status_max,
        } => (path.clone(), (*status_min, *status_max)),
        _ => (DEFAULT_PATH.to_string(), DEFAULT_STATUS),
    };
    let http_path = match &raw.http_path {
        None => Some(base_path),
        Some(v) => http_path(ck, v, path),
    };
    let status = match &raw.status {
        None => Some(base_status),
        Some(v) => status_range(ck, v, path),
    };
    // `path` and `status` belong to HTTP checks.
    if let Some(k) = kind_name
        && k != "http"
    {
        for (key, v) in [("path", &raw.http_path), ("status", &raw.status)] {
            if let Some(v) = v {
                ck.problem(
                    &v.span,
                    field_path(path, key),
                    format!(
                        "only an HTTP check has a {key}, and this check's kind is {k:?}: \
                         set kind = \"http\", or remove {key}"
                    ),
                );
            }
        }
    }
    let interval = ck.period(
        raw.interval.as_ref(),
        path,
        &INTERVAL,
        b.interval_seconds,
        builtin.interval_seconds,
    );
    let timeout = ck.period(
        raw.timeout.as_ref(),
        path,
        &TIMEOUT,
        b.timeout_seconds,
        builtin.timeout_seconds,
    );
    if let (Some(i), Some(t)) = (interval, timeout)
        && t > i
        && let Some((key, span)) = raw
            .timeout
            .as_ref()
            .map(|v| ("timeout", &v.span))
            .or(raw.interval.as_ref().map(|v| ("interval", &v.span)))
    {
        ck.problem(
            span,
            field_path(path, key),
            format!(
                "the timeout ({}) must not be longer than the interval ({}): a check ends \
                 before the next one starts",
                seconds(t),
                seconds(i)
            ),
        );
    }
    let count =
        |ck: &mut Checker<'_, '_>, v: &Option<Sp<i128>>, key: &str, min, max, base: u32| match v {
            None => Some(base),
            Some(v) => ck
                .in_range(v, field_at(path, key), min, max, "")
                .map(|n| n as u32),
        };
    let rise = count(ck, &raw.rise, "rise", 1, MAX_RISE_FALL, b.rise);
    let fall = count(ck, &raw.fall, "fall", 1, MAX_RISE_FALL, b.fall);
    let flap_limit = count(
        ck,
        &raw.flap_limit,
        "flap_limit",
        0,
        MAX_FLAP_LIMIT,
        b.flap_limit,
    );
    let flap_window = ck.period(
        raw.flap_window.as_ref(),
        path,
        &FLAP_WINDOW,
        b.flap_window_seconds,
        builtin.flap_window_seconds,
    );
    let flap_hold = ck.period(
        raw.flap_hold.as_ref(),
        path,
        &FLAP_HOLD,
        b.flap_hold_seconds,
        builtin.flap_hold_seconds,
    );
    let all_down = match &raw.all_down {
        None => Some(b.all_down),
        Some(v) => {
            let found = AllDown::ALL.iter().find(|a| a.to_string() == v.value);
            if found.is_none() {
                ck.problem(
                    &v.span,
                    field_path(path, "all_down"),
                    format!(
                        "unknown all_down {:?}: must be \"fail_open\" (keep the whole table \
                         when every backend is down) or \"fail_closed\" (drop)",
                        v.value
                    ),
                );
            }
            found.copied()
        }
    };
    let (http_path, (status_min, status_max)) = (http_path?, status?);
    let kind = match kind_name? {
        "tcp" => CheckKind::Tcp,
        "http" => CheckKind::Http {
            path: http_path,
            status_min,
            status_max,
        },
        _ => CheckKind::None,
    };
    Some(HealthBase {
        check: HealthCheck {
            kind,
            port: 0,
            interval_seconds: interval?,
            timeout_seconds: timeout?,
            rise: rise?,
            fall: fall?,
            flap_limit: flap_limit?,
            flap_window_seconds: flap_window?,
            flap_hold_seconds: flap_hold?,
            all_down: all_down?,
        },
        port: port?,
        present: true,
    })
}

/// One VIP's check: its `[vip.health]` over the defaults, with the port
/// resolved. `vip_port` is None when the VIP's port is invalid
/// (reported); `vip_span`/`vip_path` locate a missing port.
pub(super) fn vip_health(
    ck: &mut Checker<'_, '_>,
    raw: Option<&RawHealth>,
    base: Option<&HealthBase>,
    vip_port: Option<u16>,
    vip_span: &Range<usize>,
    vip_path: &str,
) -> Option<HealthCheck> {
    let fallback = HealthBase::default();
    let merged = match raw {
        None => base.unwrap_or(&fallback).clone(),
        Some(raw) => health_table(ck, raw, base.unwrap_or(&fallback))?,
    };
    // Wrong defaults were reported at the [health] table.
    base?;
    if !merged.check.enabled() {
        return Some(HealthCheck {
            port: 0,
            ..merged.check
        });
    }
    let port = match (merged.port, vip_port?) {
        (Some(p), _) => p,
        (None, 0) => {
            let (span, field) = match raw {
                Some(r) => (&r.span, field_path(&r.path, "port")),
                None => (
                    vip_span,
                    field_path(&field_path(vip_path, "health"), "port"),
                ),
            };
            ck.problem(
                span,
                field,
                "required: this VIP takes every port (port = 0), so its health check needs a \
                 port to connect to: set port in [vip.health] (or kind = \"none\")",
            );
            return None;
        }
        (None, p) => p,
    };
    Some(HealthCheck {
        port,
        ..merged.check
    })
}

/// An absolute path of printable ASCII, no spaces: it goes into the
/// request line as written.
fn http_path(ck: &mut Checker<'_, '_>, v: &Sp<String>, path: &str) -> Option<String> {
    let p = &v.value;
    let reason = if !p.starts_with('/') {
        format!("{p:?} must start with '/', like \"/healthz\"")
    } else if p.len() > MAX_PATH_LEN {
        format!(
            "is {} bytes long; at most {MAX_PATH_LEN} are allowed",
            p.len()
        )
    } else if let Some(c) = p.chars().find(|c| !c.is_ascii_graphic()) {
        format!(
            "{p:?} contains {c:?}: a request path is printable ASCII without spaces \
             (percent-encode the rest)"
        )
    } else {
        return Some(p.clone());
    };
    ck.problem(&v.span, field_path(path, "path"), reason);
    None
}

/// `"200-399"`, `"200"`, `200`: codes 100 to 599, low to high.
fn status_range(ck: &mut Checker<'_, '_>, v: &Sp<String>, path: &str) -> Option<(u16, u16)> {
    let text = v.value.trim();
    let parse = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    let range = match text.split_once('-') {
        Some((lo, hi)) => parse(lo).zip(parse(hi)),
        None => parse(text).map(|c| (c, c)),
    };
    match range {
        Some((lo, hi)) if lo <= hi => Some((lo, hi)),
        Some((lo, hi)) => {
            ck.problem(
                &v.span,
                field_path(path, "status"),
                format!("{text:?}: the range runs from low to high: write \"{hi}-{lo}\""),
            );
            None
        }
        None => {
            ck.problem(
                &v.span,
                field_path(path, "status"),
                format!(
                    "{text:?} is not a status code or range: write a code from 100 to 599 \
                     or a range like \"200-399\""
                ),
            );
            None
        }
    }
}

/// `500ms`, `2s`, `1m`: the bounds in messages.
fn seconds(s: f64) -> String {
    format_duration(Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const HEAD: &str = "interface = \"eth0\"\n";

    fn vip(name: &str, port: u16, extra: &str) -> String {
        format!(
            "[[vip]]\nname = \"{name}\"\naddress = \"198.18.100.1\"\nport = {port}\nprotocol = \"tcp\"\n\
             {extra}\
             [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:11\"\n"
        )
    }

    fn ok(text: &str) -> super::super::Config {
        parse(text, "f.toml").unwrap_or_else(|e| panic!("{e}\n--- in:\n{text}"))
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "f.toml") {
            Ok(c) => panic!("accepted: {c:?}\n--- in:\n{text}"),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn no_table_no_checks() {
        let c = ok(&format!("{HEAD}{}", vip("web", 80, "")));
        assert_eq!(c.vips[0].health, HealthCheck::default());
        assert!(!c.vips[0].health.enabled());
    }

    #[test]
    fn a_vip_table_checks_tcp_on_the_vip_port_with_the_defaults() {
        let c = ok(&format!("{HEAD}{}", vip("web", 80, "[vip.health]\n")));
        assert_eq!(
            c.vips[0].health,
            HealthCheck {
                kind: CheckKind::Tcp,
                port: 80,
                ..HealthCheck::default()
            }
        );
    }

    #[test]
    fn defaults_then_overrides_key_by_key() {
        let text = format!(
            "{HEAD}[health]\nkind = \"http\"\npath = \"/healthz\"\ninterval = \"1s\"\n\
             timeout = \"300ms\"\nfall = 2\n\
             {}{}{}",
            vip(
                "web",
                80,
                "[vip.health]\nrise = 5\nstatus = \"200\"\nall_down = \"fail_closed\"\n"
            ),
            vip("api", 81, "health = { kind = \"tcp\", port = 9000 }\n"),
            vip("off", 82, "[vip.health]\nkind = \"none\"\n"),
        );
        let c = ok(&text);
        assert_eq!(
            c.vips[0].health,
            HealthCheck {
                kind: CheckKind::Http {
                    path: "/healthz".into(),
                    status_min: 200,
                    status_max: 200
                },
                port: 80,
                interval_seconds: 1.0,
                timeout_seconds: 0.3,
                rise: 5,
                fall: 2,
                all_down: AllDown::FailClosed,
                ..HealthCheck::default()
            }
        );
        assert_eq!(
            (
                &c.vips[1].health.kind,
                c.vips[1].health.port,
                c.vips[1].health.fall
            ),
            (&CheckKind::Tcp, 9000, 2)
        );
        assert!(!c.vips[2].health.enabled());
        // A VIP without its own table inherits the defaults whole.
        let c = ok(&format!(
            "{HEAD}[health]\nport = 81\nflap_limit = 0\n{}",
            vip("web", 80, "")
        ));
        assert_eq!(
            c.vips[0].health,
            HealthCheck {
                kind: CheckKind::Tcp,
                port: 81,
                flap_limit: 0,
                ..HealthCheck::default()
            }
        );
    }

    #[test]
    fn a_port_0_vip_needs_a_check_port() {
        let p = problems(&format!("{HEAD}{}", vip("any", 0, "[vip.health]\n")));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("f.toml:7:1: vip[0].health.port: required: this VIP takes every port"),
            "{p:?}"
        );
        // Inherited from [health]: located at the VIP.
        let p = problems(&format!("{HEAD}[health]\n{}", vip("any", 0, "")));
        assert!(
            p[0].starts_with("f.toml:3:1: vip[0].health.port: required"),
            "{p:?}"
        );
        let c = ok(&format!(
            "{HEAD}{}",
            vip("any", 0, "[vip.health]\nport = 443\n")
        ));
        assert_eq!(c.vips[0].health.port, 443);
        ok(&format!(
            "{HEAD}{}",
            vip("any", 0, "[vip.health]\nkind = \"none\"\n")
        ));
    }

    #[test]
    fn bad_values_are_located_and_named() {
        let cases: &[(&str, &str)] = &[
            (
                "kind = \"icmp\"",
                "vip[0].health.kind: unknown check kind \"icmp\"",
            ),
            ("kind = \"TCP\"", "(lowercase)"),
            (
                "port = 0",
                "vip[0].health.port: must be between 1 and 65535, got 0",
            ),
            (
                "interval = \"50ms\"",
                "vip[0].health.interval: must be between 100ms and 10m",
            ),
            (
                "interval = \"2\"",
                "vip[0].health.interval: \"2\" has no unit",
            ),
            (
                "timeout = \"3s\"",
                "vip[0].health.timeout: the timeout (3s) must not be longer than the interval (2s)",
            ),
            (
                "rise = 0",
                "vip[0].health.rise: must be between 1 and 100, got 0",
            ),
            (
                "fall = 101",
                "vip[0].health.fall: must be between 1 and 100, got 101",
            ),
            (
                "all_down = \"open\"",
                "vip[0].health.all_down: unknown all_down \"open\"",
            ),
            (
                "flap_limit = -1",
                "vip[0].health.flap_limit: must be between 0 and 1000",
            ),
            (
                "flap_window = \"0s\"",
                "vip[0].health.flap_window: must be between 1s and 1h",
            ),
            (
                "kind = \"http\"\npath = \"healthz\"",
                "vip[0].health.path: \"healthz\" must start with '/'",
            ),
            ("kind = \"http\"\npath = \"/a b\"", "contains ' '"),
            ("kind = \"http\"\npath = \"/a\\r\\nX: y\"", "contains '\\r'"),
            ("kind = \"http\"\nstatus = \"399-200\"", "write \"200-399\""),
            (
                "kind = \"http\"\nstatus = 700",
                "\"700\" is not a status code or range",
            ),
            (
                "kind = \"http\"\nstatus = true",
                "vip[0].health.status: expected a status code or range",
            ),
            (
                "path = \"/x\"",
                "vip[0].health.path: only an HTTP check has a path, and this check's kind is \"tcp\"",
            ),
            ("intervall = \"1s\"", "unknown field \"intervall\""),
        ];
        for (table, want) in cases {
            let p = problems(&format!(
                "{HEAD}{}",
                vip("web", 80, &format!("[vip.health]\n{table}\n"))
            ));
            assert!(
                p.len() == 1 && p[0].contains(want),
                "{table}: want {want:?}, got {p:?}"
            );
        }
    }

    #[test]
    fn placement_and_hints() {
        // [health] below the first VIP is refused, like [imbalance].
        let p = problems(&format!("{HEAD}{}[health]\n", vip("web", 80, "")));
        assert!(
            p[0].contains("the [health] section sets the defaults of every VIP"),
            "{p:?}"
        );
        // A health key written in the VIP itself gets a hint.
        let p = problems(&format!("{HEAD}{}", vip("web", 80, "rise = 2\n")));
        assert!(p[0].contains("put it in a [vip.health] section"), "{p:?}");
        let p = problems(&format!("{HEAD}fall = 2\n{}", vip("web", 80, "")));
        assert!(p[0].contains("put it in a [health] section"), "{p:?}");
        // [vip.health] with no VIP above.
        let p = problems(&format!("{HEAD}[vip.health]\nrise = 2\n"));
        assert!(
            p[0].contains("a [vip.health] section belongs to the [[vip]] above it"),
            "{p:?}"
        );
        // Wrong defaults are reported once, at [health].
        let p = problems(&format!("{HEAD}[health]\nrise = 0\n{}", vip("web", 80, "")));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains(":3:8: health.rise"), "{p:?}");
    }

    #[test]
    fn timeout_against_an_inherited_interval() {
        let p = problems(&format!(
            "{HEAD}[health]\ninterval = \"1s\"\n{}",
            vip("web", 80, "[vip.health]\ntimeout = \"1500ms\"\n")
        ));
        assert!(p[0].contains("vip[0].health.timeout: the timeout (1500ms) must not be longer than the interval (1s)"), "{p:?}");
        let p = problems(&format!(
            "{HEAD}[health]\ntimeout = \"2s\"\n{}",
            vip("web", 80, "[vip.health]\ninterval = \"1s\"\n")
        ));
        assert!(
            p[0].contains("vip[0].health.interval: the timeout (2s)"),
            "{p:?}"
        );
    }
}
