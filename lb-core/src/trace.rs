//! Tracing and capture, the pure half (`xlb trace`, `xlb capture`;
//! docs/TRACE.md): the command line's filter and event names parsed, the
//! kernel's switch (`TraceConfig`) built from them, the filter matched in
//! userspace as the balancer matches it, a `TraceRecord` decoded into a
//! `TracedPacket` with names (and rendered as one line), and the pcapng file
//! of a capture built (each packet's events in its comment).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use lb_common::{
    FAMILY_V4, FAMILY_V6,
    hash::addr_words,
    stats::{ACTION_NAMES, DROP_REASON_NAMES},
    trace::{
        CAPTURE_BYTES, CONN_NAMES, TRACE_ANY_VIP, TRACE_EVENT_NAMES, TRACE_MODE_CAPTURE,
        TRACE_MODE_TRACE, TRACE_NO_DROP, TRACE_NONE, TraceConfig, TraceRecord,
    },
};
use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use serde::{Deserialize, Serialize};

use crate::held::{address, ports};

/// The longest a trace or capture runs when not told (`--duration`): the
/// daemon's own timeout, so a forgotten session ends.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// What is wrong with a trace's arguments (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("--client {value}: {reason}")]
    Client { value: String, reason: String },
    #[error("--events {value}: unknown event `{name}` (events: {known})")]
    UnknownEvent {
        value: String,
        name: String,
        known: String,
    },
    #[error("--events: none given (events: {known})")]
    NoEvents { known: String },
    #[error("unknown VIP `{name}` (VIPs: {known})")]
    UnknownVip { name: String, known: String },
    #[error("--duration {value}: {reason}")]
    Duration { value: String, reason: String },
    #[error("--count 0: at least one packet")]
    ZeroCount,
}

/// `--client ADDR[/PREFIX]`: the flow's source (the client) must be in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFilter {
    pub address: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for ClientFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl ClientFilter {
    /// Parse `ADDR` or `ADDR/PREFIX`; a prefix past the family's length, or
    /// one with host bits set, is refused naming the prefix meant.
    pub fn parse(value: &str) -> Result<Self, TraceError> {
        let bad = |reason: String| TraceError::Client {
            value: value.to_string(),
            reason,
        };
        let (addr, prefix) = match value.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (value, None),
        };
        let address: IpAddr = addr
            .parse()
            .map_err(|_| bad(format!("`{addr}` is not an IPv4 or IPv6 address")))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= bits)
                .ok_or_else(|| bad(format!("prefix `{p}` is not a number from 0 to {bits}")))?,
        };
        let filter = Self { address, prefix };
        let masked = filter.network();
        if masked != address {
            return Err(bad(format!(
                "host bits set past /{prefix} (the prefix is {masked}/{prefix})"
            )));
        }
        Ok(filter)
    }

    /// The address with the bits past the prefix cleared.
    pub fn network(&self) -> IpAddr {
        let (bytes, len) = bytes_of(self.address);
        let mask = mask_bytes(self.prefix);
        let mut out = [0u8; 16];
        for i in 0..len {
            out[i] = bytes[i] & mask[i];
        }
        ip_of(&out, len == 16)
    }
}

fn bytes_of(a: IpAddr) -> ([u8; 16], usize) {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v4) => {
            b[..4].copy_from_slice(&v4.octets());
            (b, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 16),
    }
}

fn ip_of(bytes: &[u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::from(*bytes)
    } else {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

fn mask_bytes(prefix: u8) -> [u8; 16] {
    let mut m = [0u8; 16];
    for (i, byte) in m.iter_mut().enumerate() {
        let bits = (prefix as usize).saturating_sub(i * 8).min(8);
        *byte = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    m
}

/// `--events a,b,c` as `TRACE_EV_*` bits.
pub fn parse_events(value: &str) -> Result<u32, TraceError> {
    let known = TRACE_EVENT_NAMES.join(", ");
    let mut mask = 0;
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let bit = TRACE_EVENT_NAMES
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| TraceError::UnknownEvent {
                value: value.to_string(),
                name: name.to_string(),
                known: known.clone(),
            })?;
        mask |= 1 << bit;
    }
    if mask == 0 {
        return Err(TraceError::NoEvents { known });
    }
    Ok(mask)
}

/// The names of the events in `mask`, in bit order.
pub fn event_names(mask: u32) -> Vec<String> {
    TRACE_EVENT_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// A port as the connection table's `ports` word holds each half.
pub fn port_word(port: u16) -> u32 {
    u16::from_le_bytes(port.to_be_bytes()) as u32
}

/// What a session asks the balancer for (without its session number,
/// which the data plane sets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub capture: bool,
    /// The VIP's kernel id; None: every VIP.
    pub vip_id: Option<u32>,
    pub client: Option<ClientFilter>,
    pub port: Option<u16>,
    /// `TRACE_EV_*` bits (a trace: all).
    pub events: u32,
}

impl Filter {
    /// The kernel's switch for this filter (`on` left 0).
    pub fn kernel(&self) -> TraceConfig {
        let mut c = TraceConfig {
            mode: if self.capture {
                TRACE_MODE_CAPTURE
            } else {
                TRACE_MODE_TRACE
            },
            vip_id: self.vip_id.unwrap_or(TRACE_ANY_VIP),
            events: self.events,
            port_word: self.port.map_or(0, port_word),
            ..TraceConfig::default()
        };
        if let Some(client) = &self.client {
            let (bytes, len) = bytes_of(client.network());
            c.client_family = if len == 4 { FAMILY_V4 } else { FAMILY_V6 } as u32;
            c.client = addr_words(&bytes);
            let mut mask = mask_bytes(client.prefix);
            mask[len..].fill(0);
            c.client_mask = addr_words(&mask);
        }
        c
    }
}

/// The balancer's filter, in userspace: whether `c` takes the packet of
/// record `r` (the daemon checks each record with it as well).
pub fn matches(c: &TraceConfig, r: &TraceRecord) -> bool {
    if c.vip_id != TRACE_ANY_VIP && c.vip_id != r.vip_id {
        return false;
    }
    if c.port_word != 0 && r.flow.ports & 0xffff != c.port_word && r.flow.ports >> 16 != c.port_word
    {
        return false;
    }
    if r.events & c.events == 0 {
        return false;
    }
    c.client_family == 0
        || (c.client_family == r.family as u32
            && (0..4).all(|i| r.flow.src[i] & c.client_mask[i] == c.client[i]))
}

/// Names for the ids a record carries: the applied config's VIPs and
/// backends, and the host's interfaces.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub vips: BTreeMap<u32, String>,
    pub backends: BTreeMap<u32, String>,
    pub interfaces: BTreeMap<u32, String>,
}

impl Names {
    /// The VIPs and backends of an applied state.
    pub fn of(desired: &crate::state::Desired) -> Self {
        let mut n = Self::default();
        for v in &desired.vips {
            n.vips.insert(v.id, v.config.name.clone());
            for (b, id) in v.config.backends.iter().zip(&v.backend_ids) {
                n.backends.insert(*id, b.name.clone());
            }
        }
        n
    }

    fn backend(&self, id: u32) -> Option<String> {
        (id != TRACE_NONE).then(|| {
            self.backends
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("#{id}"))
        })
    }
}

/// A trace or capture running in the daemon (`xlb status`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceActive {
    /// `trace` or `capture`.
    pub kind: String,
    /// The filter as asked: `vip=web client=198.18.0.1/32 events=...`.
    pub filter: String,
    pub started_at_unix_seconds: f64,
    /// When the daemon ends it at the latest (`--duration`, or its own
    /// timeout).
    pub until_unix_seconds: f64,
    /// Packets sent to the client so far.
    pub packets: u64,
}

impl TraceActive {
    /// The status table's line.
    pub fn line(&self, now: f64) -> String {
        format!(
            "{}: {} ({} packets, {:.0}s left)",
            self.kind,
            self.filter,
            self.packets,
            (self.until_unix_seconds - now).max(0.0)
        )
    }
}

/// How a session ended (the stream's last line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceEnd {
    /// `count`, `duration`, `timeout` (the daemon's own), `client_closed`,
    /// `error`.
    pub reason: String,
    pub packets: u64,
}

/// One traced packet, with names: a line of `xlb trace`, a JSON object of
/// `xlb trace -o json`, a packet of `xlb capture`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TracedPacket {
    pub at_unix_seconds: f64,
    pub interface: String,
    pub cpu: u32,
    /// `tcp`, `udp` or the protocol number.
    pub protocol: String,
    pub client: String,
    pub client_port: u16,
    pub vip_address: String,
    pub vip_port: u16,
    /// What the parser made of it: `flow`, `echo`, `icmp_error`,
    /// `unhandled_ext_header`, ...
    pub parse: String,
    pub syn: bool,
    pub vip: String,
    /// The connection table: `hit`, `miss_syn` (a new connection),
    /// `miss_absent` (no entry: new, evicted, or moved from another node),
    /// `resteer` (its backend is gone), `none` (not consulted).
    pub conn: String,
    /// The backend the entry named before this packet (resteer, hit).
    pub entry_backend: Option<String>,
    /// The flow's Maglev slot and the backend the live table has there.
    pub slot: Option<u32>,
    pub table_backend: Option<String>,
    /// The backend it was sent to.
    pub backend: Option<String>,
    /// `dsr`, `ipip`, `gue`.
    pub method: String,
    /// `tx`, `redirect`, `pass`, `drop`.
    pub action: String,
    pub drop_reason: Option<String>,
    pub events: Vec<String>,
    pub length_bytes: u32,
    /// The first bytes of the frame (capture), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_hex: Option<String>,
}

const PARSE_NAMES: [&str; 7] = [
    "flow",
    "echo",
    "icmp_error",
    "unhandled_ext_header",
    "unhandled_vlan",
    "unhandled_fragment",
    "unhandled_icmp",
];
const METHOD_NAMES: [&str; 3] = ["dsr", "ipip", "gue"];

fn name_of(names: &[&str], i: usize) -> String {
    names
        .get(i)
        .map_or_else(|| i.to_string(), |n| n.to_string())
}

/// A record decoded, with names; `at` its arrival (Unix seconds).
pub fn decode(r: &TraceRecord, names: &Names, at: f64) -> TracedPacket {
    let v6 = r.family == FAMILY_V6;
    let (client_port, vip_port) = ports(&r.flow);
    let protocol = match r.flow.proto {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        p => p.to_string(),
    };
    let captured = &r.data[..(r.cap_len as usize).min(CAPTURE_BYTES)];
    TracedPacket {
        at_unix_seconds: at,
        interface: names
            .interfaces
            .get(&r.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{}", r.ifindex)),
        cpu: r.cpu,
        protocol,
        client: address(&r.flow.src, v6).to_string(),
        client_port,
        vip_address: address(&r.flow.dst, v6).to_string(),
        vip_port,
        parse: name_of(&PARSE_NAMES, r.kind as usize),
        syn: r.syn != 0,
        vip: names
            .vips
            .get(&r.vip_id)
            .cloned()
            .unwrap_or_else(|| format!("#{}", r.vip_id)),
        conn: name_of(&CONN_NAMES, r.conn as usize),
        entry_backend: names.backend(r.entry_backend),
        slot: (r.slot != TRACE_NONE).then_some(r.slot),
        table_backend: names.backend(r.table_backend),
        backend: names.backend(r.backend_id),
        method: name_of(&METHOD_NAMES, r.method as usize),
        action: name_of(&ACTION_NAMES, r.action as usize),
        drop_reason: (r.drop_reason != TRACE_NO_DROP)
            .then(|| name_of(&DROP_REASON_NAMES, r.drop_reason as usize)),
        events: event_names(r.events),
        length_bytes: r.pkt_len,
        captured_hex: (!captured.is_empty()).then(|| hex(captured)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn endpoint(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// One line: where and when, the 5-tuple, and what the balancer decided.
pub fn render(p: &TracedPacket) -> String {
    let mut out = format!(
        "{} {} cpu{} {} {} -> {} {} vip={}",
        clock(p.at_unix_seconds),
        p.interface,
        p.cpu,
        p.protocol,
        endpoint(&p.client, p.client_port),
        endpoint(&p.vip_address, p.vip_port),
        p.parse,
        p.vip,
    );
    let conn = match p.conn.as_str() {
        "miss_syn" => "miss (new SYN)".to_string(),
        "miss_absent" => "miss (no entry: new, evicted or moved)".to_string(),
        "resteer" => format!(
            "resteer (entry named {}, gone)",
            p.entry_backend.as_deref().unwrap_or("?")
        ),
        "none" => String::new(),
        other => other.to_string(),
    };
    if !conn.is_empty() {
        out.push_str(&format!(" conn={conn}"));
    }
    if let Some(slot) = p.slot {
        out.push_str(&format!(
            " slot={slot}({})",
            p.table_backend.as_deref().unwrap_or("-")
        ));
    }
    if let Some(b) = &p.backend {
        out.push_str(&format!(" backend={b} {}", p.method));
    }
    out.push_str(&format!(" {}", p.action));
    if let Some(r) = &p.drop_reason {
        out.push_str(&format!(" reason={r}"));
    }
    out
}

/// HH:MM:SS.mmm (UTC) of a Unix time.
fn clock(at: f64) -> String {
    let ms = (at * 1000.0) as u64;
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

/// A pcapng file of captured packets: one interface (Ethernet, snap
/// length `CAPTURE_BYTES`, nanosecond timestamps), one Enhanced Packet
/// Block per packet whose comment names its events and the decision.
pub struct PcapOut<W: std::io::Write> {
    writer: PcapNgWriter<W>,
    pub packets: u64,
}

/// pcap-file's error, as text (exit code 4 for the CLI).
pub type PcapError = pcap_file::PcapError;

impl<W: std::io::Write> PcapOut<W> {
    pub fn new(out: W) -> Result<Self, PcapError> {
        let mut writer = PcapNgWriter::new(out)?;
        writer.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: CAPTURE_BYTES as u32,
            options: vec![
                // 10^-9 s: the blocks' timestamps are nanoseconds.
                InterfaceDescriptionOption::IfTsResol(9),
                InterfaceDescriptionOption::IfName(Cow::Borrowed("xlb")),
            ],
        })?;
        Ok(Self { writer, packets: 0 })
    }

    /// One packet (nothing for a packet without captured bytes).
    pub fn write(&mut self, p: &TracedPacket) -> Result<(), PcapError> {
        let Some(data) = p.captured_hex.as_deref().and_then(unhex) else {
            return Ok(());
        };
        let comment = format!("xlb: {} | {}", p.events.join(","), render(p));
        self.writer.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_secs_f64(p.at_unix_seconds.max(0.0)),
            original_len: p.length_bytes,
            data: Cow::Owned(data),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(comment))],
        })?;
        self.packets += 1;
        Ok(())
    }

    /// Everything written so far to the file (a capture ended by Ctrl-C
    /// keeps it).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.writer.get_mut().flush()
    }

    pub fn into_inner(self) -> W {
        self.writer.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::hash::FlowWords;
    use lb_common::trace::{
        CONN_MISS_SYN, TRACE_EV_ALL, TRACE_EV_DROP, TRACE_EV_MISS, TRACE_EV_NON_SYN_MISS,
        TRACE_EV_SYN,
    };

    fn record(src: [u8; 4], sport: u16, vip_id: u32) -> TraceRecord {
        let mut r: TraceRecord = bytemuck::Zeroable::zeroed();
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&src);
        let mut d = [0u8; 16];
        d[..4].copy_from_slice(&[198, 18, 1, 10]);
        r.flow = FlowWords {
            src: addr_words(&s),
            dst: addr_words(&d),
            ports: lb_common::hash::ports_word(sport, 80),
            proto: 6,
        };
        r.family = FAMILY_V4;
        r.vip_id = vip_id;
        r.events = TRACE_EV_SYN | TRACE_EV_MISS;
        r.conn = CONN_MISS_SYN;
        r.slot = 7;
        r.table_backend = 3;
        r.backend_id = 3;
        r.entry_backend = TRACE_NONE;
        r.action = 3;
        r.drop_reason = TRACE_NO_DROP;
        r.syn = 1;
        r.pkt_len = 74;
        r
    }

    #[test]
    fn client_prefixes_are_parsed_and_bad_ones_named() {
        let f = ClientFilter::parse("198.18.0.1").unwrap();
        assert_eq!((f.address.to_string(), f.prefix), ("198.18.0.1".into(), 32));
        assert_eq!(ClientFilter::parse("2001:db8::/32").unwrap().prefix, 32);
        let e = ClientFilter::parse("198.18.0.1/24")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--client 198.18.0.1/24") && e.contains("198.18.0.0/24"),
            "{e}"
        );
        let e = ClientFilter::parse("198.18.0.0/33")
            .unwrap_err()
            .to_string();
        assert!(e.contains("from 0 to 32"), "{e}");
        let e = ClientFilter::parse("web").unwrap_err().to_string();
        assert!(e.contains("not an IPv4 or IPv6 address"), "{e}");
    }

    #[test]
    fn events_are_parsed_and_unknown_ones_named() {
        assert_eq!(
            parse_events("non_syn_miss,drop").unwrap(),
            TRACE_EV_NON_SYN_MISS | TRACE_EV_DROP
        );
        let e = parse_events("drop,bogus").unwrap_err().to_string();
        assert!(
            e.contains("unknown event `bogus`") && e.contains("non_syn_miss"),
            "{e}"
        );
        assert!(matches!(
            parse_events(" , "),
            Err(TraceError::NoEvents { .. })
        ));
        assert_eq!(event_names(TRACE_EV_SYN | TRACE_EV_DROP), ["syn", "drop"]);
    }

    /// The userspace filter takes what the kernel's would: the VIP, the
    /// client prefix, a port on either side, the events.
    #[test]
    fn the_filter_takes_the_client_vip_port_and_events_asked_for() {
        let filter = |client: &str, vip: Option<u32>, port: Option<u16>, events| Filter {
            capture: false,
            vip_id: vip,
            client: Some(ClientFilter::parse(client).unwrap()),
            port,
            events,
        };
        let r = record([198, 18, 0, 1], 40000, 2);
        assert!(matches(
            &filter("198.18.0.1", None, None, TRACE_EV_ALL).kernel(),
            &r
        ));
        assert!(matches(
            &filter("198.18.0.0/24", Some(2), None, TRACE_EV_ALL).kernel(),
            &r
        ));
        assert!(!matches(
            &filter("198.18.0.2", None, None, TRACE_EV_ALL).kernel(),
            &r
        ));
        assert!(!matches(
            &filter("198.18.0.1", Some(1), None, TRACE_EV_ALL).kernel(),
            &r
        ));
        assert!(matches(
            &filter("198.18.0.1", None, Some(80), TRACE_EV_ALL).kernel(),
            &r
        ));
        assert!(matches(
            &filter("198.18.0.1", None, Some(40000), TRACE_EV_ALL).kernel(),
            &r
        ));
        assert!(!matches(
            &filter("198.18.0.1", None, Some(81), TRACE_EV_ALL).kernel(),
            &r
        ));
        assert!(!matches(
            &filter("198.18.0.1", None, None, TRACE_EV_DROP).kernel(),
            &r
        ));
        assert!(!matches(
            &filter("2001:db8::/32", None, None, TRACE_EV_ALL).kernel(),
            &r
        ));
        let any = Filter {
            capture: false,
            vip_id: None,
            client: None,
            port: None,
            events: TRACE_EV_ALL,
        };
        assert!(matches(&any.kernel(), &record([198, 18, 9, 9], 1, 5)));
    }

    #[test]
    fn a_record_decodes_with_names_and_renders_one_line() {
        let mut names = Names::default();
        names.vips.insert(2, "web".into());
        names.backends.insert(3, "b1".into());
        names.interfaces.insert(0, "eth0".into());
        let p = decode(&record([198, 18, 0, 1], 40000, 2), &names, 3661.5);
        assert_eq!(
            (p.client.as_str(), p.client_port, p.vip_port, p.vip.as_str()),
            ("198.18.0.1", 40000, 80, "web")
        );
        assert_eq!(
            (p.conn.as_str(), p.backend.as_deref()),
            ("miss_syn", Some("b1"))
        );
        assert_eq!(
            render(&p),
            "01:01:01.500 eth0 cpu0 tcp 198.18.0.1:40000 -> 198.18.1.10:80 flow vip=web \
             conn=miss (new SYN) slot=7(b1) backend=b1 dsr tx"
        );
        let json = serde_json::to_string(&p).unwrap();
        let back: TracedPacket = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }

    /// The pcapng file holds the interface and one block per captured
    /// packet, with its bytes and the events in the comment.
    #[test]
    fn captured_packets_make_a_pcapng_with_comments() {
        let mut r = record([198, 18, 0, 1], 40000, 2);
        r.data[..4].copy_from_slice(&[1, 2, 3, 4]);
        r.cap_len = 60;
        let p = decode(&r, &Names::default(), 1.0);
        let mut out = PcapOut::new(Vec::new()).unwrap();
        out.write(&p).unwrap();
        let mut none = p.clone();
        none.captured_hex = None;
        out.write(&none).unwrap();
        assert_eq!(out.packets, 1);
        let bytes = out.into_inner();
        let mut reader = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
        let mut seen = Vec::new();
        while let Some(block) = reader.next_block() {
            if let pcap_file::pcapng::Block::EnhancedPacket(epb) = block.unwrap() {
                let comment = match &epb.options[0] {
                    EnhancedPacketOption::Comment(c) => c.to_string(),
                    other => panic!("{other:?}"),
                };
                seen.push((
                    epb.data.len(),
                    epb.original_len,
                    epb.data[..4].to_vec(),
                    comment,
                ));
            }
        }
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].0, seen[0].1), (60, 74));
        assert_eq!(seen[0].2, [1, 2, 3, 4]);
        assert!(seen[0].3.starts_with("xlb: syn,miss | "), "{}", seen[0].3);
    }
}
