//! The config file's shape: which keys exist, which are required, and the
//! type of each value. `RawConfig::read` walks the parsed TOML document and
//! keeps every value with its byte span, so the rules can point at it.
//!
//! Problems found here (unknown key, missing field, wrong type) are recorded
//! and reading goes on, so that one run reports everything wrong in a file.
//! A field that is missing or of the wrong type is `None` in the raw model;
//! its problem has already been recorded, and the rules skip it.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::check::{Issues, Sp, field_path};

/// Keys of the top level, of a `[[vip]]`, of a `[[vip.backend]]`, of an
/// `[imbalance]` or `[vip.imbalance]` table, of a `[safety]` or
/// `[vip.safety]` table and of the `[tunnel]` table, in the order the error
/// message lists them.
pub(super) const ROOT_KEYS: &[&str] = &[
    "interface",
    "hash_seed",
    "vip",
    "metrics_address",
    "imbalance",
    "safety",
    "conn_table_size",
    "icmp_echo",
    "unhandled",
    "announce",
    "tunnel",
    "health",
];
pub(super) const VIP_KEYS: &[&str] = &[
    "name",
    "address",
    "port",
    "protocol",
    "table_size",
    "backend",
    "imbalance",
    "safety",
    "forwarding",
    "hash",
    "unhandled",
    "announce",
    "health",
];
pub(super) const BACKEND_KEYS: &[&str] = &["name", "address", "mac", "weight", "state", "capacity"];
pub(super) const IMBALANCE_KEYS: &[&str] = &[
    "max_ratio",
    "max_cv",
    "min_new_flow_rate",
    "min_packet_rate",
    "hold",
    "window",
];
pub(super) const SAFETY_KEYS: &[&str] = &[
    "max_share_growth",
    "max_capacity_ratio",
    "max_flows_moved",
    "max_capacity_removed",
];
pub(super) const TUNNEL_KEYS: &[&str] = &["source_v4", "source_v6", "gue_port", "gateway_mac"];
/// Keys of a `[health]` / `[vip.health]` table, in the order errors list them.
pub(super) const HEALTH_KEYS: &[&str] = &[
    "kind",
    "port",
    "path",
    "status",
    "interval",
    "timeout",
    "rise",
    "fall",
    "all_down",
    "flap_limit",
    "flap_window",
    "flap_hold",
];

/// Health keys that no other table has: written elsewhere, they get a hint.
const HEALTH_ONLY_KEYS: &[&str] = &[
    "kind",
    "status",
    "interval",
    "timeout",
    "rise",
    "fall",
    "all_down",
    "flap_limit",
    "flap_window",
    "flap_hold",
];

/// VIP keys that are not also top-level keys (a hint when one is written at
/// the top).
const VIP_ONLY_KEYS: &[&str] = &["forwarding", "hash"];

/// The tables a VIP may have as well as the top level.
const SECTION_KEYS: &[&str] = &["imbalance", "safety", "health"];

/// Top-level keys other than `imbalance` and `safety` (which a VIP may have
/// too).
const ROOT_ONLY_KEYS: &[&str] = &[
    "interface",
    "hash_seed",
    "vip",
    "metrics_address",
    "conn_table_size",
    "icmp_echo",
    "tunnel",
];

#[derive(Debug)]
pub(super) struct RawConfig {
    pub interface: Option<Sp<String>>,
    pub hash_seed: Option<Sp<i128>>,
    pub metrics_address: Option<Sp<String>>,
    /// `[imbalance]`: the defaults of every VIP.
    pub imbalance: Option<RawImbalance>,
    /// `[safety]`: the defaults of every VIP.
    pub safety: Option<RawSafety>,
    pub conn_table_size: Option<Sp<i128>>,
    pub icmp_echo: Option<Sp<String>>,
    pub unhandled: Option<Sp<String>>,
    pub announce: Option<Sp<String>>,
    pub tunnel: Option<RawTunnel>,
    /// `[health]`: the health-check defaults of every VIP.
    pub health: Option<RawHealth>,
    pub vips: Vec<RawVip>,
}

#[derive(Debug)]
pub(super) struct RawVip {
    /// `vip[3]`
    pub path: String,
    /// The `[[vip]]` header (or the inline table).
    pub span: Range<usize>,
    pub name: Option<Sp<String>>,
    pub address: Option<Sp<String>>,
    pub port: Option<Sp<i128>>,
    pub protocol: Option<Sp<String>>,
    pub table_size: Option<Sp<i128>>,
    pub forwarding: Option<Sp<String>>,
    pub hash: Option<Sp<String>>,
    pub unhandled: Option<Sp<String>>,
    pub announce: Option<Sp<String>>,
    /// `[vip.imbalance]`: this VIP's own thresholds, key by key.
    pub imbalance: Option<RawImbalance>,
    /// `[vip.safety]`: this VIP's own limits, key by key.
    pub safety: Option<RawSafety>,
    /// `[vip.health]`: this VIP's own health check, key by key.
    pub health: Option<RawHealth>,
    pub backends: Vec<RawBackend>,
}

#[derive(Debug)]
pub(super) struct RawBackend {
    /// `vip[3].backend[0]`
    pub path: String,
    /// The `[[vip.backend]]` header (or the inline table).
    pub span: Range<usize>,
    pub name: Option<Sp<String>>,
    pub address: Option<Sp<String>>,
    pub mac: Option<Sp<String>>,
    pub weight: Option<Sp<i128>>,
    pub state: Option<Sp<String>>,
    pub capacity: Option<Sp<f64>>,
}

/// An `[imbalance]` or `[vip.imbalance]` table. Every key is optional.
#[derive(Debug)]
pub(super) struct RawImbalance {
    /// `imbalance`, `vip[3].imbalance`
    pub path: String,
    /// The table's header (or the inline table).
    pub span: Range<usize>,
    pub max_ratio: Option<Sp<f64>>,
    pub max_cv: Option<Sp<f64>>,
    pub min_new_flow_rate: Option<Sp<f64>>,
    pub min_packet_rate: Option<Sp<f64>>,
    /// Durations, as written ("10s"); `validate` parses them.
    pub hold: Option<Sp<String>>,
    pub window: Option<Sp<String>>,
}

/// A `[safety]` or `[vip.safety]` table. Every key is optional.
#[derive(Debug)]
pub(super) struct RawSafety {
    /// `safety`, `vip[3].safety`
    pub path: String,
    /// The table's header (or the inline table).
    pub span: Range<usize>,
    pub max_share_growth: Option<Sp<f64>>,
    pub max_capacity_ratio: Option<Sp<f64>>,
    pub max_flows_moved: Option<Sp<f64>>,
    pub max_capacity_removed: Option<Sp<f64>>,
}

/// The `[tunnel]` table. Every key is optional.
#[derive(Debug)]
pub(super) struct RawTunnel {
    /// The table's header (or the inline table).
    pub span: Range<usize>,
    /// Prefixes as written (`"198.18.200.0/24"`); `forwarding` parses them.
    pub source_v4: Option<Sp<String>>,
    pub source_v6: Option<Sp<String>>,
    pub gue_port: Option<Sp<i128>>,
    pub gateway_mac: Option<Sp<String>>,
}

/// A `[health]` or `[vip.health]` table as written. Every key is optional.
#[derive(Debug)]
pub(super) struct RawHealth {
    /// `health`, `vip[3].health`
    pub path: String,
    /// The table's header (or the inline table).
    pub span: Range<usize>,
    pub kind: Option<Sp<String>>,
    pub port: Option<Sp<i128>>,
    pub http_path: Option<Sp<String>>,
    /// `"200-399"`, `"200"` or `200`.
    pub status: Option<Sp<String>>,
    pub interval: Option<Sp<String>>,
    pub timeout: Option<Sp<String>>,
    pub rise: Option<Sp<i128>>,
    pub fall: Option<Sp<i128>>,
    pub all_down: Option<Sp<String>>,
    pub flap_limit: Option<Sp<i128>>,
    pub flap_window: Option<Sp<String>>,
    pub flap_hold: Option<Sp<String>>,
}

/// Hints for a key that is not allowed here but is a key of another table:
/// (those keys, what to say), the first match wins.
pub(super) type Hints<'h> = &'h [(&'h [&'h str], &'h str)];

/// A threshold written outside its table.
const THRESHOLD_HINT_ROOT: &str =
    "is an imbalance threshold: put it in an [imbalance] section (defaults for every VIP)";
const THRESHOLD_HINT_VIP: &str =
    "is an imbalance threshold: put it in a [vip.imbalance] section (this VIP's own)";
/// A tunnel setting written outside its table.
const TUNNEL_HINT: &str =
    "is a tunnel setting: put it in a [tunnel] section, above the first [[vip]]";
/// A VIP key written at the top level.
const VIP_KEY_HINT_ROOT: &str = "is a setting of each VIP: write it under each [[vip]] header";
/// A safety limit written outside its table.
const SAFETY_HINT_ROOT: &str =
    "is a safety limit: put it in a [safety] section (defaults for every VIP)";
const SAFETY_HINT_VIP: &str =
    "is a safety limit: put it in a [vip.safety] section (this VIP's own)";

impl RawConfig {
    /// Read the parsed document into the raw model, recording shape problems.
    pub fn read(doc: &Spanned<DeTable<'_>>, issues: &mut Issues) -> RawConfig {
        let root = Table {
            table: doc.get_ref(),
            span: doc.span(),
            path: String::new(),
        };
        root.check_keys(
            ROOT_KEYS,
            &[
                (IMBALANCE_KEYS, THRESHOLD_HINT_ROOT),
                (SAFETY_KEYS, SAFETY_HINT_ROOT),
                (TUNNEL_KEYS, TUNNEL_HINT),
                (VIP_ONLY_KEYS, VIP_KEY_HINT_ROOT),
                (
                    HEALTH_ONLY_KEYS,
                    "is a health-check setting: put it in a [health] section (defaults for every VIP)",
                ),
            ],
            issues,
        );
        let interface = root.string("interface", true, issues);
        let hash_seed = root.integer("hash_seed", false, issues);
        let metrics_address =
            root.string_like("metrics_address", false, Some("\"127.0.0.1:9470\""), issues);
        let imbalance = root
            .table("imbalance", "an [imbalance] section", issues)
            .map(|t| {
                RawImbalance::read(
                    &t,
                    &[
                        (
                            ROOT_ONLY_KEYS,
                            "is a top-level key: move it above the [imbalance] header",
                        ),
                        (
                            SAFETY_KEYS,
                            "is a safety limit: put it in a [safety] section",
                        ),
                    ],
                    issues,
                )
            });
        let safety = root.table("safety", "a [safety] section", issues).map(|t| {
            RawSafety::read(
                &t,
                &[
                    (
                        ROOT_ONLY_KEYS,
                        "is a top-level key: move it above the [safety] header",
                    ),
                    (
                        IMBALANCE_KEYS,
                        "is an imbalance threshold: put it in an [imbalance] section",
                    ),
                ],
                issues,
            )
        });
        let conn_table_size = root.integer("conn_table_size", false, issues);
        let icmp_echo = root.string("icmp_echo", false, issues);
        let unhandled = root.string("unhandled", false, issues);
        let announce = root.string("announce", false, issues);
        let tunnel = root
            .table("tunnel", "a [tunnel] section", issues)
            .map(|t| RawTunnel::read(&t, issues));
        let health = root.table("health", "a [health] section", issues).map(|t| {
            RawHealth::read(
                &t,
                &[(
                    ROOT_ONLY_KEYS,
                    "is a top-level key: move it above the [health] header",
                )],
                issues,
            )
        });
        let vips = if let Some(v) = root.get("vip")
            && let DeValue::Table(t) = v.get_ref()
            && let Some(section) = t
                .iter()
                .map(|(k, _)| k.get_ref().as_ref())
                .find(|k| SECTION_KEYS.contains(k))
        {
            // `[vip.imbalance]` or `[vip.safety]` with no `[[vip]]` above it.
            issues.push(
                &v.span(),
                "vip",
                format!(
                    "a [vip.{section}] section belongs to the [[vip]] above it, and there is \
                     none; for the defaults of every VIP write [{section}]"
                ),
            );
            Vec::new()
        } else {
            root.tables("vip", "[[vip]]", issues)
                .into_iter()
                .map(|vip| RawVip::read(&vip, issues))
                .collect()
        };
        RawConfig {
            interface,
            hash_seed,
            metrics_address,
            imbalance,
            safety,
            conn_table_size,
            icmp_echo,
            unhandled,
            announce,
            tunnel,
            health,
            vips,
        }
    }
}

impl RawTunnel {
    fn read(t: &Table<'_, '_>, issues: &mut Issues) -> RawTunnel {
        t.check_keys(
            TUNNEL_KEYS,
            &[
                (
                    ROOT_ONLY_KEYS,
                    "is a top-level key: move it above the [tunnel] header",
                ),
                (VIP_KEYS, "is a VIP key: write it under a [[vip]] header"),
            ],
            issues,
        );
        RawTunnel {
            span: t.span.clone(),
            source_v4: t.string_like("source_v4", false, Some("\"198.18.200.0/24\""), issues),
            source_v6: t.string_like("source_v6", false, Some("\"2001:db8:ff::/96\""), issues),
            gue_port: t.integer("gue_port", false, issues),
            gateway_mac: t.string("gateway_mac", false, issues),
        }
    }
}

impl RawVip {
    fn read(t: &Table<'_, '_>, issues: &mut Issues) -> RawVip {
        t.check_keys(
            VIP_KEYS,
            &[
                (
                    ROOT_ONLY_KEYS,
                    "is a top-level key: move it above the first [[vip]]",
                ),
                (IMBALANCE_KEYS, THRESHOLD_HINT_VIP),
                (SAFETY_KEYS, SAFETY_HINT_VIP),
                (TUNNEL_KEYS, TUNNEL_HINT),
                (
                    HEALTH_ONLY_KEYS,
                    "is a health-check setting: put it in a [vip.health] section (this VIP's own)",
                ),
            ],
            issues,
        );
        RawVip {
            path: t.path.clone(),
            span: t.span.clone(),
            name: t.string("name", true, issues),
            address: t.string("address", true, issues),
            port: t.integer("port", true, issues),
            protocol: t.string("protocol", true, issues),
            table_size: t.integer("table_size", false, issues),
            forwarding: t.string("forwarding", false, issues),
            hash: t.string("hash", false, issues),
            unhandled: t.string("unhandled", false, issues),
            announce: t.string("announce", false, issues),
            imbalance: t
                .table("imbalance", "a [vip.imbalance] section", issues)
                .map(|i| {
                    RawImbalance::read(
                        &i,
                        &[
                            (
                                VIP_KEYS,
                                "is a VIP key: move it above the VIP's [vip.imbalance] header",
                            ),
                            (
                                ROOT_ONLY_KEYS,
                                "is a top-level key: move it above the first [[vip]]",
                            ),
                            (
                                SAFETY_KEYS,
                                "is a safety limit: put it in a [vip.safety] section",
                            ),
                        ],
                        issues,
                    )
                }),
            safety: t
                .table("safety", "a [vip.safety] section", issues)
                .map(|i| {
                    RawSafety::read(
                        &i,
                        &[
                            (
                                VIP_KEYS,
                                "is a VIP key: move it above the VIP's [vip.safety] header",
                            ),
                            (
                                ROOT_ONLY_KEYS,
                                "is a top-level key: move it above the first [[vip]]",
                            ),
                            (
                                IMBALANCE_KEYS,
                                "is an imbalance threshold: put it in a [vip.imbalance] section",
                            ),
                        ],
                        issues,
                    )
                }),
            health: t
                .table("health", "a [vip.health] section", issues)
                .map(|h| {
                    RawHealth::read(
                        &h,
                        &[
                            (
                                VIP_KEYS,
                                "is a VIP key: move it above the VIP's [vip.health] header",
                            ),
                            (
                                ROOT_ONLY_KEYS,
                                "is a top-level key: move it above the first [[vip]]",
                            ),
                        ],
                        issues,
                    )
                }),
            backends: t
                .tables("backend", "[[vip.backend]]", issues)
                .into_iter()
                .map(|b| RawBackend::read(&b, issues))
                .collect(),
        }
    }
}

impl RawBackend {
    fn read(t: &Table<'_, '_>, issues: &mut Issues) -> RawBackend {
        t.check_keys(
            BACKEND_KEYS,
            &[
                (
                    &["imbalance"],
                    "is a VIP setting, not a backend's: write the section as \
                     [vip.imbalance], before or after the backends",
                ),
                (
                    &["safety"],
                    "is a VIP setting, not a backend's: write the section as \
                     [vip.safety], before or after the backends",
                ),
                (
                    VIP_KEYS,
                    "is a VIP key: move it above the VIP's first [[vip.backend]]",
                ),
                (IMBALANCE_KEYS, THRESHOLD_HINT_VIP),
                (SAFETY_KEYS, SAFETY_HINT_VIP),
                (TUNNEL_KEYS, TUNNEL_HINT),
            ],
            issues,
        );
        RawBackend {
            path: t.path.clone(),
            span: t.span.clone(),
            name: t.string("name", true, issues),
            address: t.string("address", true, issues),
            // Required for a "dsr" VIP only: `forwarding` knows the VIP's method.
            mac: t.string("mac", false, issues),
            weight: t.integer("weight", false, issues),
            state: t.string("state", false, issues),
            capacity: t.number("capacity", issues),
        }
    }
}

impl RawImbalance {
    fn read(t: &Table<'_, '_>, hints: Hints<'_>, issues: &mut Issues) -> RawImbalance {
        t.check_keys(IMBALANCE_KEYS, hints, issues);
        RawImbalance {
            path: t.path.clone(),
            span: t.span.clone(),
            max_ratio: t.number("max_ratio", issues),
            max_cv: t.number("max_cv", issues),
            min_new_flow_rate: t.number("min_new_flow_rate", issues),
            min_packet_rate: t.number("min_packet_rate", issues),
            hold: t.duration("hold", issues),
            window: t.duration("window", issues),
        }
    }
}

impl RawSafety {
    fn read(t: &Table<'_, '_>, hints: Hints<'_>, issues: &mut Issues) -> RawSafety {
        t.check_keys(SAFETY_KEYS, hints, issues);
        RawSafety {
            path: t.path.clone(),
            span: t.span.clone(),
            max_share_growth: t.number("max_share_growth", issues),
            max_capacity_ratio: t.number("max_capacity_ratio", issues),
            max_flows_moved: t.number("max_flows_moved", issues),
            max_capacity_removed: t.number("max_capacity_removed", issues),
        }
    }
}

impl RawHealth {
    fn read(t: &Table<'_, '_>, hints: Hints<'_>, issues: &mut Issues) -> RawHealth {
        t.check_keys(HEALTH_KEYS, hints, issues);
        RawHealth {
            path: t.path.clone(),
            span: t.span.clone(),
            kind: t.string("kind", false, issues),
            port: t.integer("port", false, issues),
            http_path: t.string("path", false, issues),
            status: health_status(t, issues),
            interval: t.duration("interval", issues),
            timeout: t.duration("timeout", issues),
            rise: t.integer("rise", false, issues),
            fall: t.integer("fall", false, issues),
            all_down: t.string("all_down", false, issues),
            flap_limit: t.integer("flap_limit", false, issues),
            flap_window: t.duration("flap_window", issues),
            flap_hold: t.duration("flap_hold", issues),
        }
    }
}

/// `status`: a string range or a plain integer, kept as text.
fn health_status(t: &Table<'_, '_>, issues: &mut Issues) -> Option<Sp<String>> {
    let v = t.get("status")?;
    match v.get_ref() {
        DeValue::String(s) => Some(Sp {
            value: s.to_string(),
            span: v.span(),
        }),
        DeValue::Integer(i) if i.radix() == 10 => Some(Sp {
            value: i.as_str().to_string(),
            span: v.span(),
        }),
        _ => {
            issues.push(
                &v.span(),
                field_path(&t.path, "status"),
                "expected a status code or range like \"200-399\" or 200",
            );
            None
        }
    }
}

/// A TOML table being read, with its span and its field path.
pub(super) struct Table<'a, 'i> {
    table: &'a DeTable<'i>,
    pub(super) span: Range<usize>,
    /// `""` for the top level, `vip[0]`, `vip[0].backend[1]`.
    pub(super) path: String,
}

impl<'a, 'i> Table<'a, 'i> {
    fn field(&self, key: &str) -> String {
        field_path(&self.path, key)
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    /// Every key must be one of `allowed`; a typo gets a suggestion, and a
    /// key of another level (`hints`) a hint about where it goes, often about
    /// TOML's sections: a key written after a `[[vip]]` header belongs to
    /// that VIP.
    pub(super) fn check_keys(&self, allowed: &[&str], hints: Hints<'_>, issues: &mut Issues) {
        for (key, _) in self.table.iter() {
            let key_str: &str = key.get_ref().as_ref();
            if allowed.contains(&key_str) {
                continue;
            }
            let mut reason = format!(
                "unknown field {key_str:?}, expected one of: {}",
                allowed.join(", ")
            );
            if let Some((_, hint)) = hints.iter().find(|(keys, _)| keys.contains(&key_str)) {
                reason.push_str(&format!(" ({key_str:?} {hint})"));
            } else if let Some(close) = closest(key_str, allowed) {
                reason.push_str(&format!(" (did you mean {close:?}?)"));
            }
            issues.push(&key.span(), self.field(key_str), reason);
        }
    }

    fn missing(&self, key: &str, issues: &mut Issues) {
        issues.push(&self.span, self.field(key), "required field is missing");
    }

    pub(super) fn string(
        &self,
        key: &str,
        required: bool,
        issues: &mut Issues,
    ) -> Option<Sp<String>> {
        self.string_like(key, required, None, issues)
    }

    /// A string; a value of another type is told to look like `example`.
    fn string_like(
        &self,
        key: &str,
        required: bool,
        example: Option<&str>,
        issues: &mut Issues,
    ) -> Option<Sp<String>> {
        let Some(v) = self.get(key) else {
            if required {
                self.missing(key, issues);
            }
            return None;
        };
        match v.get_ref() {
            DeValue::String(s) => Some(Sp {
                value: s.to_string(),
                span: v.span(),
            }),
            other => {
                let mut reason = match example {
                    Some(example) => {
                        format!(
                            "expected a string like {example}, found {}",
                            describe(other)
                        )
                    }
                    None => format!("expected a string, found {}", describe(other)),
                };
                if example.is_none()
                    && matches!(
                        other,
                        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_)
                    )
                {
                    reason.push_str("; put the value in double quotes");
                }
                issues.push(&v.span(), self.field(key), reason);
                None
            }
        }
    }

    pub(super) fn integer(
        &self,
        key: &str,
        required: bool,
        issues: &mut Issues,
    ) -> Option<Sp<i128>> {
        let Some(v) = self.get(key) else {
            if required {
                self.missing(key, issues);
            }
            return None;
        };
        match v.get_ref() {
            DeValue::Integer(i) => match i128::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(Sp {
                    value: n,
                    span: v.span(),
                }),
                Err(_) => {
                    issues.push(
                        &v.span(),
                        self.field(key),
                        format!("integer {i} is out of range"),
                    );
                    None
                }
            },
            other => {
                let mut reason = format!("expected an integer, found {}", describe(other));
                if let DeValue::String(s) = other
                    && s.trim().parse::<i128>().is_ok()
                {
                    reason.push_str(&format!("; write {key} = {} without quotes", s.trim()));
                }
                issues.push(&v.span(), self.field(key), reason);
                None
            }
        }
    }

    /// A number: a TOML float or integer (`max_ratio = 2`). Optional.
    fn number(&self, key: &str, issues: &mut Issues) -> Option<Sp<f64>> {
        let v = self.get(key)?;
        let value = match v.get_ref() {
            DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            other => {
                let mut reason = format!("expected a number, found {}", describe(other));
                if let DeValue::String(s) = other
                    && s.trim().parse::<f64>().is_ok_and(f64::is_finite)
                {
                    reason.push_str(&format!("; write {key} = {} without quotes", s.trim()));
                }
                issues.push(&v.span(), self.field(key), reason);
                return None;
            }
        };
        match value {
            Some(value) => Some(Sp {
                value,
                span: v.span(),
            }),
            None => {
                issues.push(&v.span(), self.field(key), "number is out of range");
                None
            }
        }
    }

    /// A duration, as a string with a unit (`"10s"`); the rules parse it.
    /// A bare number is told to take a unit. Optional.
    pub(super) fn duration(&self, key: &str, issues: &mut Issues) -> Option<Sp<String>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(Sp {
                value: s.to_string(),
                span: v.span(),
            }),
            other => {
                let mut reason = format!(
                    "expected a duration like \"10s\" or \"500ms\", found {}",
                    describe(other)
                );
                // A plain non-negative number: suggest it with seconds.
                let plain = match other {
                    DeValue::Integer(n) if n.radix() == 10 => Some(n.as_str()),
                    DeValue::Float(f) => Some(f.as_str()),
                    _ => None,
                }
                .filter(|n| n.chars().all(|c| c.is_ascii_digit() || c == '.'));
                if let Some(n) = plain {
                    reason.push_str(&format!(
                        "; give a unit in a string: {key} = \"{n}s\" for {n} seconds"
                    ));
                }
                issues.push(&v.span(), self.field(key), reason);
                None
            }
        }
    }

    /// A single table (a `[key]` section, an inline table or dotted keys).
    /// Absent means none. `syntax` names the section: "an [imbalance] section".
    fn table(&self, key: &str, syntax: &str, issues: &mut Issues) -> Option<Table<'a, 'i>> {
        let v = self.get(key)?;
        let field = self.field(key);
        match v.get_ref() {
            DeValue::Table(table) => Some(Table {
                table,
                span: v.span(),
                path: field,
            }),
            other => {
                issues.push(
                    &v.span(),
                    field,
                    format!(
                        "expected a table (write it as {syntax}), found {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    /// An array of tables (`[[key]]` sections, or an inline array of inline
    /// tables). Absent means none.
    fn tables(&self, key: &str, syntax: &str, issues: &mut Issues) -> Vec<Table<'a, 'i>> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        let field = self.field(key);
        let DeValue::Array(items) = v.get_ref() else {
            issues.push(
                &v.span(),
                field,
                format!(
                    "expected an array of tables (write each entry as a {syntax} section), found {}",
                    describe(v.get_ref())
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{field}[{i}]");
            match item.get_ref() {
                DeValue::Table(table) => out.push(Table {
                    table,
                    span: item.span(),
                    path,
                }),
                other => issues.push(
                    &item.span(),
                    path,
                    format!("expected a table, found {}", describe(other)),
                ),
            }
        }
        out
    }
}

/// "a string (\"80\")", "an integer (8080)", "a table", ...
fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("a string ({s:?})"),
        DeValue::Integer(i) => format!("an integer ({i})"),
        DeValue::Float(f) => format!("a float ({f})"),
        DeValue::Boolean(b) => format!("a boolean ({b})"),
        DeValue::Datetime(d) => format!("a datetime ({d})"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// The allowed key closest to a misspelt one, if it is close enough to be
/// the likely intent (Damerau-Levenshtein distance at most 2, and less than
/// half its length).
fn closest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    let key = key.to_ascii_lowercase();
    allowed
        .iter()
        .map(|a| (edit_distance(&key, a), *a))
        .filter(|(d, a)| *d <= 2 && *d * 2 < a.len().max(key.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and transpositions of adjacent characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[n][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("wieght", BACKEND_KEYS), Some("weight"));
        assert_eq!(closest("Weight", BACKEND_KEYS), Some("weight"));
        assert_eq!(closest("adress", BACKEND_KEYS), Some("address"));
        assert_eq!(closest("tablesize", VIP_KEYS), Some("table_size"));
        assert_eq!(closest("backends", VIP_KEYS), Some("backend"));
        assert_eq!(closest("vips", ROOT_KEYS), Some("vip"));
        assert_eq!(closest("health_check", VIP_KEYS), None);
        assert_eq!(closest("x", BACKEND_KEYS), None);
        assert_eq!(closest("max_ration", IMBALANCE_KEYS), Some("max_ratio"));
        assert_eq!(closest("maxcv", IMBALANCE_KEYS), Some("max_cv"));
        assert_eq!(closest("windows", IMBALANCE_KEYS), Some("window"));
        assert_eq!(closest("capacty", BACKEND_KEYS), Some("capacity"));
        assert_eq!(closest("saftey", VIP_KEYS), Some("safety"));
        assert_eq!(
            closest("max_flow_moved", SAFETY_KEYS),
            Some("max_flows_moved")
        );
        assert_eq!(
            closest("metric_address", ROOT_KEYS),
            Some("metrics_address")
        );
    }

    #[test]
    fn paths() {
        assert_eq!(field_path("", "interface"), "interface");
        assert_eq!(field_path("vip[0]", "port"), "vip[0].port");
        assert_eq!(field_path("vip[0]", "a b"), "vip[0].\"a b\"");
    }
}
