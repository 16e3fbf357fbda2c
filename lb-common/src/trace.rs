//! Tracing and capture (`xlb trace`, `xlb capture`, docs/TRACE.md): the
//! switch the controller writes (`XLB_TRACE`, one `TraceConfig`) and the
//! record the balancer emits for each matching packet into a ring buffer
//! (`XLB_TRACE_RING`, one `TraceRecord` each).

use core::mem::size_of;

use bytemuck::{Pod, Zeroable};

use crate::hash::FlowWords;

/// `TraceConfig::vip_id` that takes every VIP.
pub const TRACE_ANY_VIP: u32 = u32::MAX;
/// `TraceRecord::backend_id` / `table_backend` / `slot` when there is none.
pub const TRACE_NONE: u32 = u32::MAX;
/// `TraceRecord::drop_reason` when the packet was not dropped.
pub const TRACE_NO_DROP: u8 = u8::MAX;
/// Bytes of the packet a capture keeps (the headers: Ethernet, a VLAN tag,
/// IPv6 and TCP with options fit).
pub const CAPTURE_BYTES: usize = 128;
/// A power of two: the balancer bounds the copy's length with a mask.
const _: () = assert!(CAPTURE_BYTES.is_power_of_two() && CAPTURE_BYTES <= 255);
/// Bytes of the ring buffer (a power of two, a multiple of the page size):
/// about 1,200 records, a second of tracing at 1,200 matching packets/s
/// if the reader stalls; the reader drains it every 50 ms.
pub const TRACE_RING_BYTES: u32 = 1 << 18;

/// `TraceConfig::mode`: one record per matching packet, no packet bytes.
pub const TRACE_MODE_TRACE: u32 = 0;
/// `TraceConfig::mode`: the first `CAPTURE_BYTES` of each matching packet
/// too, for a pcap.
pub const TRACE_MODE_CAPTURE: u32 = 1;

/// The switch. `on == 0`: nothing is traced, and the balancer's cost is one
/// load and one branch a packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TraceConfig {
    /// 0: off; otherwise the session's number, copied into each record so a
    /// reader skips the records of an earlier session still in the ring.
    pub on: u32,
    /// `TRACE_MODE_*`.
    pub mode: u32,
    /// Only this VIP's packets; `TRACE_ANY_VIP`: every VIP's.
    pub vip_id: u32,
    /// `TRACE_EV_*` bits: a packet is emitted when one of its events is
    /// here (a trace sets every bit).
    pub events: u32,
    /// A port the packet's source or destination port must be, as the
    /// connection table's `ports` word holds it (the wire's two bytes read
    /// little-endian); 0: any port.
    pub port_word: u32,
    /// `FAMILY_V4` / `FAMILY_V6`: the client (the flow's source) must be
    /// of this family and `src & client_mask == client`; 0: any client.
    pub client_family: u32,
    pub client: [u32; 4],
    pub client_mask: [u32; 4],
}
const _: () = assert!(size_of::<TraceConfig>() == 56);

/// What the connection table said (`TraceRecord::conn`).
/// Not consulted (an echo request, a drop before the lookup) or unknown.
pub const CONN_NONE: u8 = 0;
/// The flow's entry named its backend.
pub const CONN_HIT: u8 = 1;
/// A TCP SYN: a new connection always takes the current table.
pub const CONN_MISS_SYN: u8 = 2;
/// No entry: a new flow (UDP, or TCP whose SYN was not seen here: the
/// entry was evicted, or the flow moved from another node).
pub const CONN_MISS_ABSENT: u8 = 3;
/// An entry whose backend is gone (or another VIP's): hashed again.
pub const CONN_RESTEER: u8 = 4;
pub const CONN_NAMES: [&str; 5] = ["none", "hit", "miss_syn", "miss_absent", "resteer"];

/// Events of a packet (`TraceRecord::events`, `TraceConfig::events`).
/// A TCP SYN hashed onto the table.
pub const TRACE_EV_SYN: u32 = 1 << 0;
/// Any packet hashed onto the table (a connection-table miss).
pub const TRACE_EV_MISS: u32 = 1 << 1;
/// A TCP packet other than a SYN with no connection-table entry: the sign
/// of a moved flow (another node's restart, an evicted entry).
pub const TRACE_EV_NON_SYN_MISS: u32 = 1 << 2;
/// An entry whose backend is gone: re-steered.
pub const TRACE_EV_RESTEER: u32 = 1 << 3;
/// A connection-table hit.
pub const TRACE_EV_HIT: u32 = 1 << 4;
/// Dropped (any reason).
pub const TRACE_EV_DROP: u32 = 1 << 5;
/// Too big for the tunnel: answered with ICMP, or dropped as `too_big`.
pub const TRACE_EV_TOO_BIG: u32 = 1 << 6;
/// Passed to the host's stack.
pub const TRACE_EV_PASS: u32 = 1 << 7;
/// Answered by the balancer (an ICMP echo reply or a "too big").
pub const TRACE_EV_REPLY: u32 = 1 << 8;
pub const TRACE_EVENT_COUNT: usize = 9;
/// The event names, bit `i` is `TRACE_EVENT_NAMES[i]`.
pub const TRACE_EVENT_NAMES: [&str; TRACE_EVENT_COUNT] = [
    "syn",
    "miss",
    "non_syn_miss",
    "resteer",
    "hit",
    "drop",
    "too_big",
    "pass",
    "reply",
];
pub const TRACE_EV_ALL: u32 = (1 << TRACE_EVENT_COUNT) - 1;

/// One traced packet, as the balancer emits it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct TraceRecord {
    /// The flow as the connection table keys it (an ICMP error's: the
    /// quoted flow, client to VIP).
    pub flow: FlowWords,
    /// `TraceConfig::on` of the session that emitted it.
    pub session: u32,
    pub vip_id: u32,
    /// The backend the packet was sent to; `TRACE_NONE` if not sent.
    pub backend_id: u32,
    /// The flow's Maglev slot and the backend the live table names there
    /// (for a hit: where a new flow would go); `TRACE_NONE` without a table.
    pub slot: u32,
    pub table_backend: u32,
    /// The backend the connection-table entry named before this packet;
    /// `TRACE_NONE`: no entry (or not looked up: a SYN).
    pub entry_backend: u32,
    pub ifindex: u32,
    pub cpu: u32,
    /// The frame's length on the wire.
    pub pkt_len: u32,
    /// `TRACE_EV_*` bits.
    pub events: u32,
    /// The XDP action (`stats::XDP_*`).
    pub action: u8,
    /// `stats::DROP_*`, or `TRACE_NO_DROP`.
    pub drop_reason: u8,
    /// `CONN_*`.
    pub conn: u8,
    /// What the parser made of it (the balancer's `KIND_*`: 0 flow, 1 echo
    /// request, 2 ICMP error, 3.. unhandled).
    pub kind: u8,
    pub family: u8,
    /// `METHOD_*` of the VIP.
    pub method: u8,
    /// A TCP SYN (without ACK).
    pub syn: u8,
    /// Bytes of `data` that hold the packet (capture only).
    pub cap_len: u8,
    /// The first `CAPTURE_BYTES` of the frame as it arrived (capture only).
    pub data: [u8; CAPTURE_BYTES],
}
const _: () = assert!(size_of::<TraceRecord>() == 40 + 40 + 8 + CAPTURE_BYTES);

impl TraceRecord {
    /// Whether the packet had any of the events in `mask`.
    pub const fn has(&self, mask: u32) -> bool {
        self.events & mask != 0
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: bytemuck::Pod is derived for it (checked #[repr(C)], no padding holes).
    unsafe impl aya::Pod for super::TraceConfig {}
}
