//! The status document's series in /metrics (docs/METRICS.md), written as
//! the OpenMetrics text prometheus-client writes (byte for byte: tested),
//! in parts that are kept deflated: each VIP's series of every family are
//! written and deflated once per change of that VIP (`vip_text`), and a
//! document's text is the node's series and the kept parts of its VIPs, in
//! family order, joined into one deflate segment (`document_text`). A
//! scrape that accepts gzip gets that segment framed as one gzip member
//! (`gzip`); any other gets it inflated as it is sent (`Inflating`).
//!
//! Why the series are written here and not by prometheus-client: its
//! encoder writes a whole registry (or a collector's families) into one
//! `fmt::Write`, each family's series together after its header. The
//! pieces kept here are one VIP's series of one family, without the
//! family's header, written once and reused by every document until that
//! VIP changes; `DescriptorEncoder` cannot write series without the header
//! (`encode_descriptor` writes it), and a registry or collector per VIP
//! would write every family's header 1,000 times and need the headers cut
//! out again. The two functions that write the bytes (`header`, `line`)
//! are tested against prometheus-client's own output byte for byte.
//!
//! Why the gzip framing is put together here and not by flate2: flate2
//! compresses one stream from start to end; the kept pieces are deflated
//! apart (each from a reset compressor, ending on a sync flush, so that
//! pieces concatenate into one valid deflate stream: the method of pigz),
//! and one member is made of them by the gzip header, the pieces, a final
//! block and the trailer, whose CRC-32 is the pieces' CRCs combined
//! (crc32fast). One member, not a member per piece: every gzip reader
//! reads it, including those that stop after the first member.

use axum::body::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use xlb_core::detect::{SIGNALS, VERDICT_LABELS};
use xlb_core::status::{Status as Document, VipStatus};

/// A series' value.
#[derive(Clone, Copy, Debug)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Info,
}

/// The metric types of the families here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Info,
}

impl Value {
    fn kind(self) -> Kind {
        match self {
            Value::Counter(_) => Kind::Counter,
            Value::Gauge(_) => Kind::Gauge,
            Value::Info => Kind::Info,
        }
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Info => "info",
        }
    }

    /// What the series' names end with.
    fn suffix(self) -> &'static str {
        match self {
            Kind::Counter => "_total",
            Kind::Gauge => "",
            Kind::Info => "_info",
        }
    }
}

/// Whose series a family holds: the node's (from the document's own
/// fields) or each VIP's (from its `VipStatus`, and whether the node
/// announces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Node,
    Vip,
}

/// `bytes` without the room its growth left (a kept encoding would hold
/// up to as much again otherwise).
pub fn exact(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.shrink_to_fit();
    bytes
}

/// Raw deflate data that ends on a byte boundary (a sync flush) and is
/// not final, made without reference to anything before it: such pieces
/// concatenate into one deflate stream. With the CRC-32 and the length of
/// what it inflates to.
#[derive(Clone, Debug, Default)]
pub struct Deflated {
    pub bytes: Bytes,
    pub crc: u32,
    pub len: u64,
}

impl Deflated {
    /// The pieces one after the other, as one piece (one buffer).
    pub fn join<'a>(pieces: impl Iterator<Item = &'a Deflated> + Clone) -> Deflated {
        let size = pieces.clone().map(|p| p.bytes.len()).sum();
        let mut bytes = Vec::with_capacity(size);
        let (mut crc, mut len) = (crc32fast::Hasher::new(), 0);
        for p in pieces {
            bytes.extend_from_slice(&p.bytes);
            crc.combine(&crc32fast::Hasher::new_with_initial_len(p.crc, p.len));
            len += p.len;
        }
        Deflated {
            bytes: Bytes::from(bytes),
            crc: crc.finalize(),
            len,
        }
    }

    /// What it inflates to, whole (tests, `Metrics::encode`).
    pub fn inflate(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len as usize);
        out.extend(Inflating::new(self.bytes.clone(), 1 << 16).flatten());
        out
    }
}

/// A compressor reused for the pieces of one document (a fresh one
/// allocates ~300 KiB).
pub struct Deflater {
    compress: Compress,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deflater")
    }
}

impl Default for Deflater {
    fn default() -> Self {
        // The fastest level: a document of 1,000 VIPs x 64 backends is
        // ~37 MB of text, deflated again for every VIP whose counters
        // moved (docs/BENCHMARKS.md has the sizes and times).
        Self {
            compress: Compress::new(Compression::fast(), false),
        }
    }
}

impl Deflater {
    /// `plain` deflated as a piece of its own.
    pub fn piece(&mut self, plain: &[u8]) -> Deflated {
        let mut bytes = Vec::new();
        let (crc, len) = self.append(plain, &mut bytes, FlushCompress::Sync);
        Deflated {
            bytes: Bytes::from(exact(bytes)),
            crc,
            len,
        }
    }

    /// `plain` deflated onto `out` from a reset compressor, ending with
    /// `flush` (Sync: a piece; Finish: the last piece of a stream); its
    /// CRC-32 and length.
    fn append(&mut self, plain: &[u8], out: &mut Vec<u8>, flush: FlushCompress) -> (u32, u64) {
        if plain.is_empty() && flush == FlushCompress::Sync {
            return (0, 0);
        }
        if plain.len() < STORED_BELOW && flush == FlushCompress::Sync {
            stored(plain, out);
        } else {
            self.deflate(plain, out, flush);
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(plain);
        (crc.finalize(), plain.len() as u64)
    }

    fn deflate(&mut self, plain: &[u8], out: &mut Vec<u8>, flush: FlushCompress) {
        self.compress.reset();
        loop {
            let done = self.compress.total_in() as usize;
            // Deflate grows incompressible input by at most ~0.1%, plus
            // the flush's few bytes.
            out.reserve((plain.len() - done) / 2 + 64);
            let status = self
                .compress
                .compress_vec(&plain[done..], out, flush)
                .expect("deflate into memory: no error but a bug");
            let consumed = self.compress.total_in() as usize == plain.len();
            // All in, and room left over: the flush is complete.
            if (consumed && out.len() < out.capacity()) || status == Status::StreamEnd {
                break;
            }
        }
    }
}

/// Pieces shorter than this are kept as they are, in a stored block:
/// deflating a piece begins with resetting the compressor, which clears
/// ~100 KiB of its tables, and most of a document's pieces are a VIP's
/// one or two lines of a family (at 1,000 VIPs x 64 backends the clears
/// were over half of a document's compression, and a start waited for
/// one: docs/BENCHMARKS.md, issue 20, "Seventh round"); a few hundred bytes
/// would shrink by about half.
const STORED_BELOW: usize = 512;

/// `plain` (shorter than 65,536 bytes) as one non-final stored block
/// (RFC 1951, 3.2.4), which starts and ends on a byte boundary: a header
/// byte of zeros (not final, no compression, padding), the length and its
/// complement, the bytes.
fn stored(plain: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(plain.len()).expect("a stored block holds at most 65,535 bytes");
    out.reserve(5 + plain.len());
    out.push(0);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(plain);
}

/// The gzip header (RFC 1952): deflate, no flags, no time, no extra
/// flags, OS unknown.
const GZIP_HEADER: &[u8] = &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// One gzip member of `pieces` (each a `Deflated` piece) and the plain
/// `last` (deflated by `deflater` as the final block): the parts to send
/// one after the other.
pub fn gzip(pieces: &[&Deflated], last: &[u8], deflater: &mut Deflater) -> Vec<Bytes> {
    let mut parts = Vec::with_capacity(pieces.len() + 3);
    parts.push(Bytes::from_static(GZIP_HEADER));
    let (mut crc, mut len) = (crc32fast::Hasher::new(), 0);
    for p in pieces {
        if !p.bytes.is_empty() {
            parts.push(p.bytes.clone());
        }
        crc.combine(&crc32fast::Hasher::new_with_initial_len(p.crc, p.len));
        len += p.len;
    }
    let mut end = Vec::new();
    let (last_crc, last_len) = deflater.append(last, &mut end, FlushCompress::Finish);
    crc.combine(&crc32fast::Hasher::new_with_initial_len(last_crc, last_len));
    len += last_len;
    // The trailer: the CRC-32 and the length (modulo 2^32) of the whole,
    // little-endian.
    end.extend_from_slice(&crc.finalize().to_le_bytes());
    end.extend_from_slice(&(len as u32).to_le_bytes());
    parts.push(Bytes::from(end));
    parts
}

/// Deflated pieces (one after the other, as `Deflated::join` makes them)
/// inflated a slice at a time: an iterator of at most `slice` bytes each,
/// for a client that did not ask for gzip (never a whole copy).
pub struct Inflating {
    input: Bytes,
    at: usize,
    decompress: Decompress,
    slice: usize,
}

impl Inflating {
    pub fn new(input: Bytes, slice: usize) -> Self {
        Self {
            input,
            at: 0,
            decompress: Decompress::new(false),
            slice,
        }
    }
}

impl Iterator for Inflating {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let mut out = Vec::with_capacity(self.slice);
        // Until the slice is full, or a call moves nothing (all inflated:
        // a call with no input left still gives out what it holds).
        while out.len() < self.slice {
            let (before, made) = (self.decompress.total_in(), out.len());
            let status = self.decompress.decompress_vec(
                &self.input[self.at..],
                &mut out,
                FlushDecompress::Sync,
            );
            let used = (self.decompress.total_in() - before) as usize;
            self.at += used;
            if let Err(e) = status {
                // Made here from pieces made here: an error is a bug, and
                // what is left is not sent (the client sees the body end
                // short of its length).
                log::error!("inflating a kept /metrics piece: {e}");
                self.at = self.input.len();
                break;
            }
            if used == 0 && out.len() == made {
                break;
            }
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

/// One VIP's series of every VIP family, one family after the other, each
/// family's a `Deflated` piece.
#[derive(Debug, Default)]
pub struct VipText {
    text: Bytes,
    /// Per VIP family, in the order they are written: where its piece ends
    /// in `text`, its type (when it has series), its CRC-32 and plain
    /// length.
    ends: Vec<(u32, Option<Kind>, u32, u32)>,
}

impl VipText {
    /// The bytes it holds.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether it holds no bytes (a VIP without series).
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The series of VIP family `index`, and their type; None if none.
    fn family(&self, index: usize) -> Option<(Deflated, Kind)> {
        let (end, kind, crc, len) = *self.ends.get(index)?;
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i].0);
        let kind = kind.filter(|_| len > 0)?;
        let piece = Deflated {
            bytes: self.text.slice(start as usize..end as usize),
            crc,
            len: len.into(),
        };
        Some((piece, kind))
    }
}

/// What a pass over the families writes.
enum Pass<'a> {
    /// One VIP's series (node families are skipped).
    Vip {
        out: &'a mut Vec<u8>,
        ends: &'a mut Vec<(u32, Option<Kind>)>,
    },
    /// A document: the node's families written and deflated, the VIP
    /// families taken from each VIP's kept text.
    Document {
        texts: &'a [&'a VipText],
        chunks: &'a mut Vec<Deflated>,
        deflater: &'a mut Deflater,
        /// The next VIP family's index.
        next: usize,
    },
}

type Labels = Vec<(&'static str, String)>;

fn header(out: &mut Vec<u8>, name: &str, help: &str, kind: Kind) {
    for part in [
        "# HELP ",
        name,
        " ",
        help,
        "\n# TYPE ",
        name,
        " ",
        kind.name(),
        "\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
}

/// One series' line: `name_total{k="v",...} 12` (label values as they
/// are: prometheus-client 0.24 escapes nothing either).
fn line(out: &mut Vec<u8>, name: &str, labels: &Labels, value: Value) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(value.kind().suffix().as_bytes());
    out.push(b'{');
    for (i, (key, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"=\"");
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"} ");
    match value {
        Value::Counter(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        Value::Gauge(x) => out.extend_from_slice(dtoa::Buffer::new().format(x).as_bytes()),
        Value::Info => out.push(b'1'),
    }
    out.push(b'\n');
}

/// One metric family: a name, its help, and its series (none: not written).
fn family(
    e: &mut Pass<'_>,
    scope: Scope,
    name: &str,
    help: &str,
    series: Vec<(Labels, Value)>,
) -> Result<(), std::fmt::Error> {
    let kind = series.first().map(|(_, v)| v.kind());
    match (e, scope) {
        (Pass::Vip { .. }, Scope::Node) => {}
        (Pass::Vip { out, ends }, Scope::Vip) => {
            for (labels, value) in &series {
                line(out, name, labels, *value);
            }
            ends.push((out.len() as u32, kind));
        }
        (
            Pass::Document {
                chunks, deflater, ..
            },
            Scope::Node,
        ) => {
            if let Some(kind) = kind {
                let mut out = Vec::new();
                header(&mut out, name, help, kind);
                for (labels, value) in &series {
                    line(&mut out, name, labels, *value);
                }
                chunks.push(deflater.piece(&out));
            }
        }
        (
            Pass::Document {
                texts,
                chunks,
                deflater,
                next,
            },
            Scope::Vip,
        ) => {
            let index = *next;
            *next += 1;
            let mut parts = texts.iter().filter_map(|t| t.family(index)).peekable();
            if let Some((_, kind)) = parts.peek() {
                let mut out = Vec::new();
                header(&mut out, name, help, *kind);
                chunks.push(deflater.piece(&out));
                chunks.extend(parts.map(|(text, _)| text));
            }
        }
    }
    Ok(())
}

fn info(
    e: &mut Pass<'_>,
    scope: Scope,
    name: &str,
    help: &str,
    series: Vec<Labels>,
) -> Result<(), std::fmt::Error> {
    family(
        e,
        scope,
        name,
        help,
        series.into_iter().map(|l| (l, Value::Info)).collect(),
    )
}

fn gauge(v: f64) -> Value {
    Value::Gauge(v)
}

fn counter(v: u64) -> Value {
    Value::Counter(v)
}

/// `vip`'s series of every VIP family, in a document `s` (whose own fields
/// say whether the node announces: a VIP's announce series depend on it),
/// each family's deflated by `deflater`.
pub fn vip_text(s: &Document, vip: &VipStatus, deflater: &mut Deflater) -> VipText {
    let (mut out, mut plain_ends) = (Vec::new(), Vec::new());
    let mut pass = Pass::Vip {
        out: &mut out,
        ends: &mut plain_ends,
    };
    encode_status(s, std::slice::from_ref(vip), &mut pass).expect("writing to memory");
    let (mut text, mut ends) = (Vec::new(), Vec::with_capacity(plain_ends.len()));
    let mut start = 0;
    for (end, kind) in plain_ends {
        let piece = deflater.piece(&out[start..end as usize]);
        start = end as usize;
        text.extend_from_slice(&piece.bytes);
        ends.push((text.len() as u32, kind, piece.crc, piece.len as u32));
    }
    VipText {
        text: Bytes::from(exact(text)),
        ends,
    }
}

/// The status families of document `s`: its node series and the VIPs'
/// kept `texts` (in `s.vips`'s order), family after family, as one
/// deflated segment.
pub fn document_text(s: &Document, texts: &[&VipText], deflater: &mut Deflater) -> Deflated {
    let mut chunks = Vec::new();
    let mut pass = Pass::Document {
        texts,
        chunks: &mut chunks,
        deflater,
        next: 0,
    };
    encode_status(s, &[], &mut pass).expect("writing to memory");
    Deflated::join(chunks.iter())
}

fn encode_status(
    s: &Document,
    vips: &[VipStatus],
    e: &mut Pass<'_>,
) -> Result<(), std::fmt::Error> {
    let vip = |name: &str| vec![("vip", name.to_string())];
    let backend = |v: &str, b: &str| vec![("vip", v.to_string()), ("backend", b.to_string())];
    let backends = || {
        vips.iter()
            .flat_map(|v| v.backends.iter().map(move |b| (v, b)))
    };

    info(
        e,
        Scope::Node,
        "xlb_build",
        "The running xlb",
        vec![vec![("version", env!("CARGO_PKG_VERSION").to_string())]],
    )?;
    info(
        e,
        Scope::Vip,
        "xlb_vip",
        "One series per VIP, with its address",
        vips.iter()
            .map(|v| {
                vec![
                    ("vip", v.name.clone()),
                    ("address", v.address.clone()),
                    ("port", v.port.to_string()),
                    ("protocol", v.protocol.clone()),
                ]
            })
            .collect(),
    )?;
    info(
        e,
        Scope::Vip,
        "xlb_vip_fingerprint",
        "What decides a VIP's new flows here (seed, hash mode, table size, backends, the live table), as a fingerprint: equal on every node of a fleet that agrees",
        vips.iter()
            .filter_map(|v| {
                v.decision.as_ref().map(|d| {
                    vec![
                        ("vip", v.name.clone()),
                        ("fingerprint", d.fingerprint.clone()),
                    ]
                })
            })
            .collect(),
    )?;
    info(
        e,
        Scope::Node,
        "xlb_node_fingerprint",
        "Of every VIP's fingerprint: equal on nodes that agree on every VIP",
        vec![vec![("fingerprint", s.fingerprint.clone())]],
    )?;
    info(
        e,
        Scope::Vip,
        "xlb_backend",
        "One series per backend, with its address, MAC and state",
        backends()
            .map(|(v, b)| {
                vec![
                    ("vip", v.name.clone()),
                    ("backend", b.name.clone()),
                    ("address", b.address.clone()),
                    ("mac", b.mac.clone()),
                    ("state", b.state.clone()),
                ]
            })
            .collect(),
    )?;

    // Counters, summed over CPUs.
    let vip_counter = |f: fn(&VipStatus) -> u64| {
        vips.iter()
            .map(|v| (vip(&v.name), counter(f(v))))
            .collect::<Vec<_>>()
    };
    family(
        e,
        Scope::Vip,
        "xlb_vip_packets",
        "Packets for the VIP, forwarded or dropped",
        vip_counter(|v| v.packets),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_vip_bytes",
        "Bytes of the VIP's packets",
        vip_counter(|v| v.bytes),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_vip_new_flows",
        "Flows of the VIP hashed onto its Maglev table (connection-table misses)",
        vip_counter(|v| v.new_flows),
    )?;
    let backend_counter = |f: fn(&xlb_core::status::BackendStatus) -> u64| {
        backends()
            .map(|(v, b)| (backend(&v.name, &b.name), counter(f(b))))
            .collect::<Vec<_>>()
    };
    family(
        e,
        Scope::Vip,
        "xlb_backend_packets",
        "Packets sent to the backend",
        backend_counter(|b| b.packets),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_bytes",
        "Bytes sent to the backend",
        backend_counter(|b| b.bytes),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_new_flows",
        "New flows sent to the backend",
        backend_counter(|b| b.new_flows),
    )?;

    // Intent and the table.
    let backend_gauge = |f: &dyn Fn(&xlb_core::status::BackendStatus) -> f64| {
        backends()
            .map(|(v, b)| (backend(&v.name, &b.name), gauge(f(b))))
            .collect::<Vec<_>>()
    };
    family(
        e,
        Scope::Vip,
        "xlb_backend_weight",
        "Configured weight",
        backend_gauge(&|b| b.weight as f64),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_active",
        "1 when the backend is in the Maglev table (state active)",
        backend_gauge(&|b| (b.state == "active") as u8 as f64),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_expected_share_ratio",
        "Weight over the sum of the active backends' weights",
        backend_gauge(&|b| b.expected_share_ratio),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_table_share_ratio",
        "Fraction of the live Maglev table's slots naming the backend",
        backend_gauge(&|b| b.table_share_ratio),
    )?;

    // The detector.
    let mut observed = Vec::new();
    for (v, b) in backends() {
        for signal in SIGNALS {
            let share = match signal {
                xlb_core::detect::Signal::NewFlows => b.window.new_flows,
                xlb_core::detect::Signal::Packets => b.window.packets,
                xlb_core::detect::Signal::Bytes => b.window.bytes,
            };
            if let Some(share) = share {
                let mut labels = backend(&v.name, &b.name);
                labels.push(("signal", signal.as_str().to_string()));
                observed.push((labels, gauge(share)));
            }
        }
    }
    family(
        e,
        Scope::Vip,
        "xlb_backend_observed_share_ratio",
        "The backend's share of the VIP's signal over the detector's window",
        observed,
    )?;
    let per_signal = |f: fn(&xlb_core::status::SignalStatus) -> Option<f64>| {
        vips.iter()
            .flat_map(|v| {
                v.signals.iter().filter_map(move |sig| {
                    f(sig).map(|x| {
                        (
                            vec![
                                ("vip", v.name.clone()),
                                ("signal", sig.signal.as_str().to_string()),
                            ],
                            gauge(x),
                        )
                    })
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        e,
        Scope::Vip,
        "xlb_vip_worst_ratio",
        "Observed over expected share of the backend furthest from 1",
        per_signal(|sig| sig.worst_ratio),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_vip_share_cv",
        "Coefficient of variation of observed/expected across active backends",
        per_signal(|sig| sig.cv),
    )?;
    let mut states = Vec::new();
    for v in vips {
        let current = v.imbalance.label();
        for st in VERDICT_LABELS {
            states.push((
                vec![("vip", v.name.clone()), ("state", st.to_string())],
                gauge((st == current) as u8 as f64),
            ));
        }
    }
    family(
        e,
        Scope::Vip,
        "xlb_vip_imbalance_state",
        "The imbalance detector's verdict: 1 for the current state",
        states,
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_vip_table_drift",
        "1 when the live table or backend entries differ from what xlb applied",
        vips.iter()
            .map(|v| (vip(&v.name), gauge(v.drift.drifted as u8 as f64)))
            .collect(),
    )?;

    // Host-wide.
    let named = |list: &[xlb_core::status::NamedCounter],
                 key: &'static str,
                 f: fn(&xlb_core::status::NamedCounter) -> u64| {
        list.iter()
            .map(|c| (vec![(key, c.name.clone())], counter(f(c))))
            .collect::<Vec<_>>()
    };
    family(
        e,
        Scope::Node,
        "xlb_xdp_packets",
        "Packets by XDP action",
        named(&s.actions, "action", |c| c.packets),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_xdp_bytes",
        "Bytes by XDP action",
        named(&s.actions, "action", |c| c.bytes),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_dropped_packets",
        "Packets for a VIP that were dropped, by reason",
        named(&s.drops, "reason", |c| c.packets),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_cpu_packets",
        "Packets the program saw on each CPU",
        s.cpus
            .iter()
            .map(|c| (vec![("cpu", c.cpu.to_string())], counter(c.packets)))
            .collect(),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_map_entries",
        "Entries in use",
        s.maps
            .iter()
            .map(|m| (vec![("map", m.name.clone())], gauge(m.entries as f64)))
            .collect(),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_map_max_entries",
        "Capacity of the map",
        s.maps
            .iter()
            .map(|m| (vec![("map", m.name.clone())], gauge(m.max_entries as f64)))
            .collect(),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_dataplane_events",
        "Data-plane events (connection table, fragments, ICMP, FIB, VLAN), by event",
        s.events
            .iter()
            .map(|(name, n)| (vec![("event", name.clone())], counter(*n)))
            .collect(),
    )?;

    // The connection table, as the last scan counted it (none before it).
    let conn = |f: fn(&xlb_core::status::ConnTableStatus) -> f64| {
        s.conn_table
            .iter()
            .map(|c| (Labels::new(), gauge(f(c))))
            .collect::<Vec<_>>()
    };
    family(
        e,
        Scope::Node,
        "xlb_conn_table_entries",
        "Flows the connection table remembers",
        conn(|c| c.entries as f64),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_conn_table_capacity",
        "The connection table's max_entries (the LRU evicts beyond)",
        conn(|c| c.capacity as f64),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_conn_table_stale_entries",
        "Connection-table entries naming a backend id not in the applied config",
        conn(|c| c.stale_entries as f64),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_conn_table_scan_seconds",
        "How long the last count of the connection table took",
        conn(|c| c.scan_seconds),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_conn_table_last_scan_timestamp_seconds",
        "Unix time of the last count of the connection table",
        conn(|c| c.scanned_at_unix_seconds),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_flows",
        "Flows the connection table remembers for the backend (what a draining backend still carries)",
        backends()
            .filter_map(|(v, b)| Some((backend(&v.name, &b.name), gauge(b.flows? as f64))))
            .collect(),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_config_revision",
        "Revision of the applied config",
        vec![(Vec::new(), gauge(s.revision as f64))],
    )?;
    family(
        e,
        Scope::Node,
        "xlb_config_last_apply_timestamp_seconds",
        "Unix time of the last apply",
        vec![(Vec::new(), gauge(s.applied_at_unix_seconds as f64))],
    )?;
    family(
        e,
        Scope::Node,
        "xlb_config_file_differs",
        "1 while the --config file differs from the live revision and the daemon keeps the live one (applying the file would revert a change made through the daemon, or a safety check refused it)",
        s.config_file
            .iter()
            .map(|c| {
                (
                    vec![("file", c.file.clone())],
                    gauge(if c.differs { 1.0 } else { 0.0 }),
                )
            })
            .collect(),
    )?;
    encode_health(vips, e)?;
    encode_announce(s, vips, e)?;
    Ok(())
}

/// Announcing (xlb_core::announce): each VIP's state and the node's.
fn encode_announce(
    s: &Document,
    vips: &[VipStatus],
    e: &mut Pass<'_>,
) -> Result<(), std::fmt::Error> {
    // Every family is written (none when the node does not announce), so
    // the VIP families come in the same order in every pass.
    let node = s.announce.as_ref();
    let vips = if node.is_some() { vips } else { &[] };
    family(
        e,
        Scope::Vip,
        "xlb_vip_announced",
        "1 while the node announces the VIP's address to its routers (a route in the \
         --announce-table), 0 while withdrawn; the reason is in xlb_vip_announce_info",
        vips.iter()
            .filter_map(|v| {
                let a = v.announce.as_ref()?;
                Some((
                    vec![("vip", v.name.clone())],
                    gauge(a.announced as u8 as f64),
                ))
            })
            .collect(),
    )?;
    info(
        e,
        Scope::Vip,
        "xlb_vip_announce",
        "Each VIP's announce policy and why it is (not) announced",
        vips.iter()
            .filter_map(|v| {
                let a = v.announce.as_ref()?;
                Some(vec![
                    ("vip", v.name.clone()),
                    ("policy", a.policy.to_string()),
                    ("reason", reason_label(a.reason)),
                ])
            })
            .collect(),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_node_drained",
        "1 while the node is drained (xlb node drain): every VIP withdrawn, forwarding goes on",
        node.iter()
            .map(|node| {
                (
                    Vec::new(),
                    gauge((node.state == xlb_core::announce::NodeState::Drained) as u8 as f64),
                )
            })
            .collect(),
    )?;
    family(
        e,
        Scope::Node,
        "xlb_announce_routes",
        "Routes xlb holds in its --announce-table (one per announced VIP address)",
        node.and_then(|node| node.table.map(|t| (node, t)))
            .map(|(node, t)| {
                (
                    vec![("table", t.to_string())],
                    gauge(node.routes.len() as f64),
                )
            })
            .into_iter()
            .collect(),
    )?;
    Ok(())
}

/// The reason as its JSON name (`backends_up`, `no_backend_up`, ...).
fn reason_label(r: xlb_core::announce::Reason) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Health checks (health/): series only for checked backends and VIPs.
fn encode_health(vips: &[VipStatus], e: &mut Pass<'_>) -> Result<(), std::fmt::Error> {
    let checked = || {
        vips.iter().flat_map(|v| {
            v.backends
                .iter()
                .filter_map(move |b| Some((v, b, b.health.as_ref()?)))
        })
    };
    let labels = |v: &VipStatus, b: &xlb_core::status::BackendStatus| {
        vec![("vip", v.name.clone()), ("backend", b.name.clone())]
    };
    family(
        e,
        Scope::Vip,
        "xlb_backend_health_up",
        "1 when the backend's health checks pass (up), 0 when they took it down",
        checked()
            .map(|(v, b, h)| {
                let up = h.machine.state == xlb_core::health::Health::Up;
                (labels(v, b), gauge(up as u8 as f64))
            })
            .collect(),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_health_in_table",
        "1 when the backend is in the VIP's live Maglev table after health checks",
        checked()
            .map(|(v, b, h)| (labels(v, b), gauge(h.in_table as u8 as f64)))
            .collect(),
    )?;
    let mut checks = Vec::new();
    for (v, b, h) in checked() {
        for (result, n) in [
            ("ok", h.machine.checks_ok_total),
            ("failed", h.machine.checks_failed_total),
        ] {
            let mut l = labels(v, b);
            l.push(("result", result.to_string()));
            checks.push((l, counter(n)));
        }
    }
    family(
        e,
        Scope::Vip,
        "xlb_backend_health_checks",
        "Health checks of the backend, by result",
        checks,
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_health_down_events",
        "Times the health checks took the backend down",
        checked()
            .map(|(v, b, h)| (labels(v, b), counter(h.machine.down_events_total)))
            .collect(),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_health_flapping",
        "1 while the backend is damped for flapping (it needs flap_hold of passed checks)",
        checked()
            .map(|(v, b, h)| (labels(v, b), gauge(h.machine.flapping as u8 as f64)))
            .collect(),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_backend_health_last_change_timestamp_seconds",
        "Unix time the backend last went up or down (or its check was set up)",
        checked()
            .map(|(v, b, h)| (labels(v, b), gauge(h.machine.since_unix_seconds)))
            .collect(),
    )?;
    family(
        e,
        Scope::Vip,
        "xlb_vip_health_all_down",
        "1 when every active backend of the VIP is down: its all_down policy applies",
        vips.iter()
            .filter_map(|v| {
                let h = v.health.as_ref()?;
                Some((
                    vec![("vip", v.name.clone())],
                    gauge(h.all_down as u8 as f64),
                ))
            })
            .collect(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::registry::Registry;

    /// Three families as prometheus-client writes them from a collector
    /// (as this module's series were written before): a counter, a gauge
    /// without labels and with, an info.
    #[derive(Debug)]
    struct Reference;

    impl Collector for Reference {
        fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let labels = vec![("vip", "web".to_string()), ("backend", "b1".to_string())];
            let c = ConstCounter::new(12_u64);
            let mut m = e.encode_descriptor("xlb_a", "A counter", None, c.metric_type())?;
            c.encode(m.encode_family(&labels)?)?;
            let g = ConstGauge::new(0.25_f64);
            let mut m = e.encode_descriptor("xlb_b", "A gauge", None, g.metric_type())?;
            g.encode(m.encode_family(&labels)?)?;
            let none: Vec<(&str, String)> = Vec::new();
            ConstGauge::new(1e-7_f64).encode(m.encode_family(&none)?)?;
            ConstGauge::new(3.0_f64).encode(m.encode_family(&none)?)?;
            let mut m = e.encode_descriptor(
                "xlb_c",
                "An info",
                None,
                prometheus_client::metrics::MetricType::Info,
            )?;
            m.encode_info(&labels)?;
            Ok(())
        }
    }

    #[test]
    fn series_are_written_as_prometheus_client_writes_them() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Reference));
        let mut expected = String::new();
        prometheus_client::encoding::text::encode_registry(&mut expected, &registry).unwrap();

        let labels: Labels = vec![("vip", "web".to_string()), ("backend", "b1".to_string())];
        let mut out = Vec::new();
        header(&mut out, "xlb_a", "A counter", Kind::Counter);
        line(&mut out, "xlb_a", &labels, counter(12));
        header(&mut out, "xlb_b", "A gauge", Kind::Gauge);
        line(&mut out, "xlb_b", &labels, gauge(0.25));
        line(&mut out, "xlb_b", &Labels::new(), gauge(1e-7));
        line(&mut out, "xlb_b", &Labels::new(), gauge(3.0));
        header(&mut out, "xlb_c", "An info", Kind::Info);
        line(&mut out, "xlb_c", &labels, Value::Info);
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    /// Pieces deflated apart, joined, framed as one gzip member: any gzip
    /// reader (one that stops after a member too) reads the plain text
    /// byte for byte, and so does the inflation a client without gzip
    /// gets, whatever its slice size.
    #[test]
    fn pieces_deflated_apart_are_one_gzip_member() {
        use std::io::Read;
        let texts: Vec<Vec<u8>> = (0..40)
            .map(|i| {
                (0..i * 7)
                    .map(|j| {
                        format!("xlb_backend_packets_total{{vip=\"v{i}\",backend=\"b{j}\"}} {j}\n")
                    })
                    .collect::<String>()
                    .into_bytes()
            })
            .collect();
        let plain: Vec<u8> = texts.concat();
        let mut deflater = Deflater::default();
        let pieces: Vec<Deflated> = texts.iter().map(|t| deflater.piece(t)).collect();
        let joined = Deflated::join(pieces[1..].iter());
        assert_eq!(joined.inflate(), texts[1..].concat());
        for slice in [1, 100, 1 << 16] {
            let inflated: Vec<u8> = Inflating::new(joined.bytes.clone(), slice)
                .flat_map(|b| {
                    assert!(b.len() <= slice);
                    b.to_vec()
                })
                .collect();
            assert_eq!(inflated, texts[1..].concat(), "slice {slice}");
        }
        assert!(
            joined.bytes.len() * 5 < plain.len(),
            "compressed {}",
            joined.bytes.len()
        );

        // A short piece is kept as it is, in a stored block; it joins and
        // inflates as the deflated ones do.
        let short = deflater.piece(b"abc\n");
        assert_eq!(
            short.bytes[..],
            [0, 4, 0, 0xfb, 0xff, b'a', b'b', b'c', b'\n']
        );
        assert!(pieces.iter().any(|p| p.bytes.first() == Some(&0)));
        assert!(
            pieces
                .iter()
                .any(|p| p.bytes.first().is_some_and(|&b| b != 0))
        );
        let mixed = Deflated::join([&pieces[1], &short, &pieces[39]].into_iter());
        assert_eq!(
            mixed.inflate(),
            [&texts[1][..], b"abc\n", &texts[39][..]].concat()
        );

        let body: Vec<u8> = gzip(&[&pieces[0], &joined], b"# EOF\n", &mut deflater).concat();
        let mut expected = plain.clone();
        expected.extend_from_slice(b"# EOF\n");
        let mut one = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut one)
            .unwrap();
        assert_eq!(one, expected);
        let mut multi = Vec::new();
        flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_end(&mut multi)
            .unwrap();
        assert_eq!(multi, expected);
        // Nothing but the end: still a valid member.
        let mut empty = Vec::new();
        flate2::read::GzDecoder::new(&gzip(&[], b"# EOF\n", &mut deflater).concat()[..])
            .read_to_end(&mut empty)
            .unwrap();
        assert_eq!(empty, b"# EOF\n");
    }
}
