//! Tracing and capture (`xlb trace`, `xlb capture`; docs/TRACE.md). The
//! controller switches it on in `XLB_TRACE`; with it off, a packet for a VIP
//! pays one load and one branch (`on`), one for no VIP nothing (it is asked
//! only after the VIP lookup: no record to complete). With it on, `begin` (after the VIP lookup)
//! judges the filter and notes what the packet was before the balancer
//! touched it (its flow, its connection-table entry, its Maglev slot, for a
//! capture its first bytes) in a per-CPU record, and `emit` (at the end,
//! with the verdict) completes it and writes it to `XLB_TRACE_RING` when
//! one of its events is asked for. Both are BPF-to-BPF calls, so the
//! untraced path carries none of their code.

use aya_ebpf::{
    btf_maps::{Array, PerCpuArray, RingBuf},
    helpers::{bpf_get_smp_processor_id, bpf_xdp_load_bytes},
    macros::btf_map,
    programs::XdpContext,
};
use lb_common::{
    PROTO_TCP, VipMeta,
    hash::{flow_hash, hash_input},
    stats::{DROP_TOO_BIG, XDP_DROP, XDP_PASS},
    trace::{
        CAPTURE_BYTES, CONN_HIT, CONN_MISS_ABSENT, CONN_MISS_SYN, CONN_NONE, CONN_RESTEER,
        TRACE_ANY_VIP, TRACE_EV_DROP, TRACE_EV_HIT, TRACE_EV_MISS, TRACE_EV_NON_SYN_MISS,
        TRACE_EV_PASS, TRACE_EV_REPLY, TRACE_EV_RESTEER, TRACE_EV_SYN, TRACE_EV_TOO_BIG,
        TRACE_MODE_CAPTURE, TRACE_NO_DROP, TRACE_NONE, TRACE_RING_BYTES, TraceConfig, TraceRecord,
    },
};

use crate::{
    lookup::known,
    maps::{XLB_CONFIG, XLB_MAGLEV_TABLES},
    scratch::{KIND_ECHO, KIND_FLOW, KIND_UNHANDLED_EXT_HEADER, Parsed},
};

/// The switch and the filter, written by the controller (one entry).
#[btf_map]
pub static XLB_TRACE: Array<TraceConfig, 1> = Array::new();

/// The traced packets, read by the controller.
#[btf_map]
pub static XLB_TRACE_RING: RingBuf<TraceRecord, { TRACE_RING_BYTES as usize }> = RingBuf::new();

/// The record of the packet being traced on this CPU (`session == 0`:
/// none). A map value, not the stack: it is 216 bytes.
#[btf_map]
static XLB_TRACE_REC: PerCpuArray<TraceRecord, 1> = PerCpuArray::new();

/// Whether a trace or capture is on: the whole cost when none is.
#[inline(always)]
pub fn on() -> bool {
    XLB_TRACE.get(0).is_some_and(|c| c.on != 0)
}

/// Whether the packet passes the filter.
#[inline(always)]
fn wanted(c: &TraceConfig, p: &Parsed, vip_id: u32) -> bool {
    if c.vip_id != TRACE_ANY_VIP && c.vip_id != vip_id {
        return false;
    }
    if c.port_word != 0 && p.flow.ports & 0xffff != c.port_word && p.flow.ports >> 16 != c.port_word
    {
        return false;
    }
    if c.client_family == 0 {
        return true;
    }
    c.client_family == p.family as u32
        && p.flow.src[0] & c.client_mask[0] == c.client[0]
        && p.flow.src[1] & c.client_mask[1] == c.client[1]
        && p.flow.src[2] & c.client_mask[2] == c.client[2]
        && p.flow.src[3] & c.client_mask[3] == c.client[3]
}

/// After the VIP lookup, before anything decides: the filter, and what the
/// packet was on arrival.
#[inline(never)]
pub fn begin(ctx: &XdpContext, p: &Parsed, meta: &VipMeta) {
    let Some(rec) = XLB_TRACE_REC.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU map; XDP runs to completion on
    // its CPU, so nothing else holds it.
    let rec = unsafe { &mut *rec };
    rec.session = 0;
    let Some(c) = XLB_TRACE.get(0) else {
        return;
    };
    if c.on == 0 || !wanted(c, p, meta.vip_id) {
        return;
    }
    rec.session = c.on;
    rec.flow = p.flow;
    rec.vip_id = meta.vip_id;
    rec.kind = p.kind;
    rec.family = p.family;
    rec.method = meta.method;
    rec.syn = p.new_connection;
    let len = (ctx.data_end() - ctx.data()) as u32;
    rec.pkt_len = len;
    rec.ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: a BPF helper without arguments; it only reads the CPU id.
    rec.cpu = unsafe { bpf_get_smp_processor_id() };
    rec.entry_backend = TRACE_NONE;
    if p.kind < KIND_UNHANDLED_EXT_HEADER
        && p.kind != KIND_ECHO
        && p.new_connection == 0
        && let Some(e) = known(p)
    {
        rec.entry_backend = e.backend_id;
    }
    rec.slot = TRACE_NONE;
    rec.table_backend = TRACE_NONE;
    if meta.table_size != 0
        && let Some(cfg) = XLB_CONFIG.get(0)
    {
        let slot = flow_hash(&hash_input(&p.flow, meta.hash), cfg.hash_seed) % meta.table_size;
        rec.slot = slot;
        if let Some(b) = XLB_MAGLEV_TABLES.get_value(meta.vip_id, &slot) {
            rec.table_backend = *b;
        }
    }
    rec.cap_len = 0;
    if c.mode == TRACE_MODE_CAPTURE && len > 0 {
        let n = if len > CAPTURE_BYTES as u32 {
            CAPTURE_BYTES as u32
        } else {
            len
        };
        // The verifier needs the length's bounds on the register itself
        // (LLVM turns `n > 0` into a test of the packet pointers, which it
        // does not relate to `n`): ((n - 1) & 127) + 1 is n for n in
        // 1..=128, and provably so.
        let n = (n.wrapping_sub(1) & (CAPTURE_BYTES as u32 - 1)) + 1;
        // SAFETY: copies `n` (1..=CAPTURE_BYTES) bytes of the packet into
        // the record's `data`, which holds CAPTURE_BYTES.
        let r = unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, rec.data.as_mut_ptr().cast(), n) };
        if r == 0 {
            rec.cap_len = n as u8;
        }
    }
}

/// At the end, with the verdict: `backend_id` (`TRACE_NONE` unless sent),
/// whether it was hashed (`new_flow`) and the drop reason (`TRACE_NONE`
/// unless dropped). Emits the record if one of its events is asked for.
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the record is a 216-byte map value; passed by value it would be copied to the 512-byte stack"
)]
#[inline(never)]
pub fn emit(action: u32, backend_id: u32, new_flow: bool, reason: u32) {
    let Some(rec) = XLB_TRACE_REC.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `begin`: this CPU's slot, nothing else holds it.
    let rec = unsafe { &mut *rec };
    if rec.session == 0 {
        return;
    }
    let session = rec.session;
    rec.session = 0;
    let Some(c) = XLB_TRACE.get(0) else {
        return;
    };
    if c.on != session {
        return;
    }
    let mut events = 0;
    let mut conn = CONN_NONE;
    if backend_id != TRACE_NONE {
        conn = if !new_flow {
            events |= TRACE_EV_HIT;
            CONN_HIT
        } else if rec.syn != 0 {
            events |= TRACE_EV_SYN | TRACE_EV_MISS;
            CONN_MISS_SYN
        } else if rec.entry_backend != TRACE_NONE {
            events |= TRACE_EV_RESTEER | TRACE_EV_MISS;
            CONN_RESTEER
        } else {
            events |= TRACE_EV_MISS;
            if rec.kind == KIND_FLOW && rec.flow.proto == PROTO_TCP as u32 {
                events |= TRACE_EV_NON_SYN_MISS;
            }
            CONN_MISS_ABSENT
        };
    }
    if action == XDP_DROP {
        events |= TRACE_EV_DROP;
        if reason == DROP_TOO_BIG {
            events |= TRACE_EV_TOO_BIG;
        }
    } else if action == XDP_PASS {
        events |= TRACE_EV_PASS;
    } else if backend_id == TRACE_NONE {
        // Answered here: an echo reply, or "too big" for the tunnel.
        events |= TRACE_EV_REPLY;
        if rec.kind != KIND_ECHO {
            events |= TRACE_EV_TOO_BIG;
        }
    }
    if events & c.events == 0 {
        return;
    }
    rec.session = session;
    rec.events = events;
    rec.conn = conn;
    rec.action = action as u8;
    rec.backend_id = backend_id;
    rec.drop_reason = if reason == TRACE_NONE {
        TRACE_NO_DROP
    } else {
        reason as u8
    };
    // A full ring loses the record: tracing never holds a packet up.
    let _ = XLB_TRACE_RING.output(&*rec, 0);
    rec.session = 0;
}
