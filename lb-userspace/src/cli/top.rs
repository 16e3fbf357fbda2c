//! `xlb top`: rates and shares per backend, refreshed. On a terminal, a
//! redrawn table; otherwise one logfmt line per interval, for scripts and
//! logs. Rendering is pure; the CLI does the polling.

use xlb_core::status::{self, Status};

fn share(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

/// The screen: a header, one row per backend, the verdict per VIP.
pub fn render_screen(s: &Status) -> String {
    let mut out = format!(
        "xlb top  {}  interface {}  revision {}\n\n",
        status::rfc3339(s.generated_at_unix_seconds),
        s.interface,
        s.revision
    );
    let mut rows: Vec<Vec<String>> = vec![
        [
            "VIP",
            "BACKEND",
            "STATE",
            "WEIGHT",
            "EXPECTED",
            "TABLE",
            "NEW-FLOWS",
            "PACKETS",
            "RATIO",
            "FLOWS/S",
            "PKTS/S",
            "BYTES/S",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect(),
    ];
    for v in &s.vips {
        for b in &v.backends {
            let ratio = match b.window.new_flows {
                Some(o) if b.expected_share_ratio > 0.0 => {
                    format!("{:.2}", o / b.expected_share_ratio)
                }
                _ => "-".to_string(),
            };
            rows.push(vec![
                v.name.clone(),
                b.name.clone(),
                b.state.clone(),
                b.weight.to_string(),
                share(Some(b.expected_share_ratio)),
                share(Some(b.table_share_ratio)),
                share(b.window.new_flows),
                share(b.window.packets),
                ratio,
                format!("{:.1}", b.rates.new_flows_per_second),
                format!("{:.1}", b.rates.packets_per_second),
                format!("{:.0}", b.rates.bytes_per_second),
            ]);
        }
    }
    out.push_str(&xlb_core::table::render(&rows));
    out.push('\n');
    for v in &s.vips {
        out.push_str(&status::verdict_line(v, s.generated_at_unix_seconds));
        out.push('\n');
        if v.drift.drifted {
            out.push_str(&format!("{}: TABLE DRIFT; run `xlb repair`\n", v.name));
        }
    }
    out
}

/// Values in logfmt must not contain spaces, quotes or `=`; names in xlb
/// cannot (config validation), but be safe.
fn value(x: &str) -> String {
    if x.chars().any(|c| c.is_whitespace() || c == '"' || c == '=') {
        format!("{x:?}")
    } else {
        x.to_string()
    }
}

fn num(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.4}"))
}

/// One logfmt line: `ts=… revision=… web.state=ok web.new_flows_per_second=…
/// web.b1.expected=0.2500 web.b1.observed=0.2480 web.b1.new_flows_per_second=…`.
/// `observed` is the new-flow share over the detector's window.
pub fn render_line(s: &Status) -> String {
    let mut fields = vec![
        format!("ts={}", status::rfc3339(s.generated_at_unix_seconds)),
        format!("revision={}", s.revision),
    ];
    for v in &s.vips {
        let p = value(&v.name);
        let state = v.imbalance.label();
        fields.push(format!("{p}.state={state}"));
        fields.push(format!(
            "{p}.new_flows_per_second={:.1}",
            v.rates.new_flows_per_second
        ));
        fields.push(format!(
            "{p}.packets_per_second={:.1}",
            v.rates.packets_per_second
        ));
        fields.push(format!("{p}.drift={}", v.drift.drifted as u8));
        for b in &v.backends {
            let q = format!("{p}.{}", value(&b.name));
            fields.push(format!("{q}.expected={:.4}", b.expected_share_ratio));
            fields.push(format!("{q}.observed={}", num(b.window.new_flows)));
            fields.push(format!(
                "{q}.new_flows_per_second={:.1}",
                b.rates.new_flows_per_second
            ));
            fields.push(format!(
                "{q}.packets_per_second={:.1}",
                b.rates.packets_per_second
            ));
        }
    }
    fields.join(" ")
}
