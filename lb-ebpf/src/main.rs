//! xlb's balancer: an XDP program that sends each packet for a VIP to the
//! backend its Maglev table names. The entry point is a thin wrapper that
//! counts what `balance` decided, in one place: parse -> lookup -> forward.
#![no_std]
#![no_main]

mod forward;
mod lookup;
mod maps;
mod parse;

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_get_smp_processor_id, macros::xdp, programs::XdpContext,
};
use lb_common::{
    Counters,
    maps::{MAX_BACKENDS, MAX_VIPS},
};

use crate::maps::{XLB_ACTION_STATS, XLB_BACKEND_STATS, XLB_DROP_STATS, XLB_VIP_STATS};

/// What `balance` decided, with what the counters need.
enum Verdict {
    /// Not for a VIP, or not something we balance: the host's stack takes it.
    Pass,
    /// Sent to a backend; `new_flow` if it was hashed (a connection-table miss).
    Tx {
        vip_id: u32,
        backend_id: u32,
        new_flow: bool,
    },
    /// For a VIP, but nowhere to send it.
    Drop { vip_id: u32, reason: u32 },
}

#[xdp]
pub fn xlb_balancer(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let (action, vip) = match balance(&ctx) {
        Verdict::Pass => (xdp_action::XDP_PASS, None),
        Verdict::Tx {
            vip_id,
            backend_id,
            new_flow,
        } => {
            let cpu = this_cpu();
            let slot = striped(cpu, MAX_BACKENDS, backend_id);
            count_flow(&XLB_BACKEND_STATS, slot, bytes, new_flow);
            (xdp_action::XDP_TX, Some((vip_id, new_flow, cpu)))
        }
        Verdict::Drop { vip_id, reason } => {
            count(&XLB_DROP_STATS, reason, bytes);
            (xdp_action::XDP_DROP, Some((vip_id, false, this_cpu())))
        }
    };
    if let Some((vip_id, new_flow, cpu)) = vip {
        count_flow(
            &XLB_VIP_STATS,
            striped(cpu, MAX_VIPS, vip_id),
            bytes,
            new_flow,
        );
    }
    count(&XLB_ACTION_STATS, action, bytes);
    action
}

/// The CPU this program runs on: asked only for packets counted in the
/// striped arrays, not for the ones passed untouched.
#[inline(always)]
fn this_cpu() -> u32 {
    // SAFETY: a helper without arguments.
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

#[inline(always)]
fn balance(ctx: &XdpContext) -> Verdict {
    let Some(mut parsed) = parse::parse(ctx) else {
        return Verdict::Pass;
    };
    let Some(meta) = lookup::vip(&mut parsed) else {
        return Verdict::Pass;
    };
    let vip_id = meta.vip_id;
    match lookup::backend(&parsed, &meta) {
        Ok(choice) => match forward::l2_dsr(ctx, &choice) {
            Some(()) => Verdict::Tx {
                vip_id,
                backend_id: choice.backend_id,
                new_flow: choice.new_flow,
            },
            // Cannot happen (the Ethernet header was read already), but the
            // verifier wants the check, and a frame we could not rewrite is
            // one we must not send.
            None => Verdict::Drop {
                vip_id,
                reason: lb_common::stats::DROP_NO_BACKEND,
            },
        },
        Err(reason) => Verdict::Drop { vip_id, reason },
    }
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
