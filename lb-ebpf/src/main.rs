//! xlb's balancer: an XDP program that sends each packet for a VIP to the
//! backend its Maglev table names. The entry point is a thin wrapper that
//! counts what `balance` decided, in one place: parse -> lookup -> forward.
#![no_std]
#![no_main]

mod csum;
mod events;
mod flowcache;
mod forward;
mod headers;
mod icmp;
mod lookup;
mod maps;
mod parse;
mod scratch;
mod trace;
mod tunnel;

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_get_smp_processor_id, macros::xdp, programs::XdpContext,
};
use lb_common::{
    Counters, FAMILY_V4, GLOBAL_F_PORT_WILDCARD, METHOD_L2_DSR, PROTO_ICMP, PROTO_ICMPV6,
    VIP_F_ADDRESS, VIP_F_ECHO_REPLY, VIP_F_UNHANDLED_PASS, VipMeta,
    maps::{MAX_BACKENDS, MAX_VIPS},
    stats::{
        DROP_NO_BACKEND, DROP_NO_CONFIG, DROP_UNHANDLED_EXT_HEADER, EV_FRAG_FIRST, EV_FRAG_FOLLOW,
        EV_ICMP_ECHO_REPLY, EV_ICMP_ERROR_STEERED, EV_ICMP_TOO_BIG_SENT,
        EV_UNHANDLED_EXT_HEADER_PASSED, EV_VLAN,
    },
};

use crate::{
    events::count_event,
    forward::Sent,
    maps::{
        XLB_ACTION_STATS, XLB_BACKEND_STATS, XLB_CONFIG, XLB_DROP_STATS, XLB_FRAGS, XLB_VIP_STATS,
    },
    scratch::{
        FRAG_FIRST, FRAG_LATER, KIND_ECHO, KIND_ICMP_ERROR, KIND_UNHANDLED_EXT_HEADER, Parsed,
    },
};

/// What `balance` decided, with what the counters need. A struct whose
/// every field is set on every path, not an enum: the fields a variant
/// lacks are undefined values, which LLVM may spill from an unset register,
/// and the verifier refuses that (it did after small changes elsewhere).
#[derive(Clone, Copy)]
struct Verdict {
    /// The XDP action: XDP_PASS (not for a VIP, or not something we
    /// balance: the host's stack takes it), XDP_TX or XDP_REDIRECT (sent to
    /// a backend, or XDP_TX answered by the balancer itself with ICMP), or
    /// XDP_DROP (for a VIP, but nowhere to send it).
    action: u32,
    /// The VIP of a packet not passed.
    vip_id: u32,
    /// The backend it was sent to; `NONE` unless sent.
    backend_id: u32,
    /// The drop reason; `NONE` unless dropped.
    reason: u32,
    /// Hashed (not a connection-table hit): a new flow for the counters.
    new_flow: bool,
}

/// No backend, no drop reason.
const NONE: u32 = lb_common::trace::TRACE_NONE;

impl Verdict {
    const PASS: Verdict = Verdict {
        action: xdp_action::XDP_PASS,
        vip_id: NONE,
        backend_id: NONE,
        reason: NONE,
        new_flow: false,
    };

    #[inline(always)]
    fn sent(vip_id: u32, backend_id: u32, new_flow: bool, action: u32) -> Verdict {
        Verdict {
            action,
            vip_id,
            backend_id,
            reason: NONE,
            new_flow,
        }
    }

    #[inline(always)]
    fn replied(vip_id: u32) -> Verdict {
        Verdict {
            action: xdp_action::XDP_TX,
            vip_id,
            ..Verdict::PASS
        }
    }

    #[inline(always)]
    fn drop(vip_id: u32, reason: u32) -> Verdict {
        Verdict {
            action: xdp_action::XDP_DROP,
            vip_id,
            reason,
            ..Verdict::PASS
        }
    }
}

#[xdp]
pub fn xlb_balancer(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    // Asked only once the packet is known to be for a VIP: a packet passed
    // before that has no trace record to complete.
    let mut tracing = false;
    let v = balance(&ctx, &mut tracing);
    if v.action != xdp_action::XDP_PASS {
        let cpu = this_cpu();
        if v.backend_id != NONE {
            let slot = striped(cpu, MAX_BACKENDS, v.backend_id);
            count_flow(&XLB_BACKEND_STATS, slot, bytes, v.new_flow);
        }
        if v.action == xdp_action::XDP_DROP {
            count(&XLB_DROP_STATS, v.reason, bytes);
        }
        count_flow(
            &XLB_VIP_STATS,
            striped(cpu, MAX_VIPS, v.vip_id),
            bytes,
            v.new_flow,
        );
    }
    count(&XLB_ACTION_STATS, v.action, bytes);
    if tracing {
        trace::emit(v.action, v.backend_id, v.new_flow, v.reason);
    }
    v.action
}

/// The CPU this program runs on: asked only for packets counted in the
/// striped arrays, not for the ones passed untouched.
#[inline(always)]
fn this_cpu() -> u32 {
    // SAFETY: a BPF helper without arguments; it only reads the CPU id.
    unsafe { bpf_get_smp_processor_id() }
}

/// The slot of `id` in this CPU's stripe. An id past the stripe (never written
/// by the controller) would land in the next CPU's stripe, so it maps to an
/// index past the end instead, which the lookup refuses.
#[inline(always)]
fn striped(cpu: u32, stripe: u32, id: u32) -> u32 {
    if id >= stripe {
        return u32::MAX;
    }
    cpu.wrapping_mul(stripe).wrapping_add(id)
}

/// parse -> VIP -> (echo | backend -> forward).
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys live in the per-CPU scratch; passed by value they would be copied to the 512-byte stack"
)]
#[inline(always)]
fn balance(ctx: &XdpContext, tracing: &mut bool) -> Verdict {
    let Some(s) = scratch::scratch() else {
        return Verdict::PASS;
    };
    if !parse::parse(ctx, &mut s.p) {
        return unhandled(ctx, &mut s.p, tracing);
    }
    let cfg = XLB_CONFIG.get(0);
    let wildcard = cfg.is_none_or(|c| c.flags & GLOBAL_F_PORT_WILDCARD != 0);
    let Some(meta) = lookup::vip(&mut s.p, wildcard) else {
        return Verdict::PASS;
    };
    *tracing = trace::on();
    if *tracing {
        trace::begin(ctx, &s.p, &meta);
    }
    // Every VIP address has an address entry; without the echo flag a
    // request to it goes to the host, as before there was such an entry.
    if s.p.kind == KIND_ECHO && meta.flags & VIP_F_ECHO_REPLY == 0 {
        return Verdict::PASS;
    }
    let vip_id = meta.vip_id;
    let Some(cfg) = cfg else {
        return Verdict::drop(vip_id, DROP_NO_CONFIG);
    };
    if s.p.vlan != 0 {
        count_event(EV_VLAN);
    }
    if s.p.kind == KIND_ECHO {
        if meta.flags & VIP_F_ECHO_REPLY == 0 || !icmp::echo_reply(ctx, &s.p, &cfg.iface_mac) {
            return Verdict::PASS;
        }
        count_event(EV_ICMP_ECHO_REPLY);
        return Verdict::replied(vip_id);
    }
    if s.p.frag == FRAG_FIRST {
        // Later fragments of this datagram will look its ports up.
        let _ = XLB_FRAGS.insert(&s.p.frag_key, &s.p.flow.ports, 0);
        count_event(EV_FRAG_FIRST);
    } else if s.p.frag == FRAG_LATER {
        count_event(EV_FRAG_FOLLOW);
    }
    let Some(choice) = lookup::backend(&s.p, &meta, cfg) else {
        return Verdict::drop(vip_id, DROP_NO_BACKEND);
    };
    if s.p.kind == KIND_ICMP_ERROR {
        count_event(EV_ICMP_ERROR_STEERED);
    }
    // SAFETY: `usable` took it from XLB_BACKENDS with a checked index; array
    // map values are never freed while a program runs.
    let backend = unsafe { &*choice.backend };
    let sent = if meta.method == METHOD_L2_DSR {
        match forward::l2_dsr(ctx, backend.mac, cfg.iface_mac) {
            Some(()) => Sent::TX,
            None => Sent::drop(DROP_NO_BACKEND),
        }
    } else {
        s.backend_id = choice.backend_id;
        s.flow_hash = choice.tuple_hash;
        tunnel::send(ctx, s, backend, cfg, meta.method)
    };
    if let Some(reason) = sent.dropped() {
        return Verdict::drop(vip_id, reason);
    }
    if sent.replied() {
        count_event(EV_ICMP_TOO_BIG_SENT);
        return Verdict::replied(vip_id);
    }
    Verdict::sent(vip_id, choice.backend_id, choice.new_flow, sent.0)
}

/// A packet the parser does not handle: if its destination is a VIP
/// address (it has an address entry), that address's `unhandled` setting
/// drops it (counted by reason) or passes it (counted as an event);
/// otherwise, or if the parser could not read its address, it is passed.
#[inline(always)]
fn unhandled(ctx: &XdpContext, p: &mut Parsed, tracing: &mut bool) -> Verdict {
    if p.kind < KIND_UNHANDLED_EXT_HEADER {
        return Verdict::PASS;
    }
    // The reasons and events are numbered in the order of the kinds.
    let index = (p.kind - KIND_UNHANDLED_EXT_HEADER) as u32;
    p.vip.family = p.family;
    p.vip.port_be = 0;
    p.vip.proto = if p.family == FAMILY_V4 {
        PROTO_ICMP
    } else {
        PROTO_ICMPV6
    };
    // The address entry (port 0): no wildcard to try after it.
    let Some(meta) = lookup::vip(p, false) else {
        return Verdict::PASS;
    };
    let VipMeta { flags, vip_id, .. } = meta;
    if flags & VIP_F_ADDRESS == 0 {
        return Verdict::PASS;
    }
    *tracing = trace::on();
    if *tracing {
        trace::begin(ctx, p, &meta);
    }
    if flags & VIP_F_UNHANDLED_PASS != 0 {
        count_event(EV_UNHANDLED_EXT_HEADER_PASSED + index);
        return Verdict::PASS;
    }
    Verdict::drop(vip_id, DROP_UNHANDLED_EXT_HEADER + index)
}

/// Add one packet (and maybe one new flow) to slot `slot` of a CPU-striped
/// counter array.
#[inline(always)]
fn count_flow<const N: usize, const F: usize>(
    map: &aya_ebpf::btf_maps::Array<Counters, N, F>,
    slot: u32,
    bytes: u64,
    new_flow: bool,
) {
    if let Some(c) = map.get_ptr_mut(slot) {
        // SAFETY: the slot lies in this CPU's stripe: no other CPU writes it,
        // and XDP is not preempted by XDP on the same CPU, so plain adds are
        // race-free, as in a per-CPU array.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += new_flow as u64;
        }
    }
}

/// Add one packet of `bytes` to this CPU's slot `index` of a counter map.
#[inline(always)]
fn count<const N: usize>(
    map: &aya_ebpf::btf_maps::PerCpuArray<Counters, N>,
    index: u32,
    bytes: u64,
) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot: no other CPU writes it, and XDP runs with
        // preemption disabled, so plain adds are race-free.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
