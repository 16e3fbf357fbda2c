//! Sending the frame on. L2 direct server return rewrites the Ethernet
//! addresses only; tunnels (tunnel.rs) find the next hop with `route`.
//!
//! A send path answers one u32 (`Sent`): the XDP action, or a drop reason,
//! or "answered with ICMP". A plain integer because enums with payloads,
//! returned across branches, produce code the verifier refuses.

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action},
    btf_maps::Array,
    helpers::{bpf_fib_lookup as fib_lookup, bpf_jiffies64},
    macros::btf_map,
    programs::XdpContext,
};
use lb_common::{FAMILY_V6, GlobalConfig, maps::MAX_BACKENDS, stats::EV_FIB_FALLBACK};

use lb_ebpf::packet::{copy, ptr_at};

use crate::{events::count_event, scratch::Scratch};

/// Outcome of a send path.
#[derive(Clone, Copy)]
pub struct Sent(pub u32);

const DROPPED: u32 = 0x100;
const REPLIED: u32 = 0x200;

impl Sent {
    pub const TX: Sent = Sent(xdp_action::XDP_TX);
    /// The packet was answered in place (ICMP) and goes back out: XDP_TX.
    pub const REPLIED: Sent = Sent(REPLIED);

    #[inline(always)]
    pub fn drop(reason: u32) -> Sent {
        Sent(DROPPED | reason)
    }

    /// The drop reason, if dropped.
    #[inline(always)]
    pub fn dropped(self) -> Option<u32> {
        (self.0 & DROPPED != 0).then_some(self.0 & 0xff)
    }

    #[inline(always)]
    pub fn replied(self) -> bool {
        self.0 == REPLIED
    }
}

/// L2 DSR: the backend holds the VIP itself, so only the Ethernet addresses
/// change and the frame goes back out of the interface it came in on.
#[inline(always)]
pub fn l2_dsr(ctx: &XdpContext, mac: [u8; 6], iface_mac: [u8; 6]) -> Option<()> {
    let eth: *mut [u8; 12] = ptr_at(ctx, 0)?;
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&mac);
    macs[6..].copy_from_slice(&iface_mac);
    // SAFETY: ptr_at checked the 12 bytes lie inside the frame; bytes
    // (alignment 1); the frame is ours until we return.
    unsafe { *eth = macs };
    Some(())
}

/// bpf_fib_lookup's answer in the way `route` reports it.
pub const ROUTE_TX: u32 = 0;
pub const ROUTE_NONE: u32 = u32::MAX;

/// A backend's next hop, as `route` last found it.
#[repr(C)]
pub struct NextHop {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// `route`'s answer: ROUTE_TX or the ifindex to redirect to.
    pub route: u32,
    /// bpf_jiffies64() when found; 0: never (jiffies start far above 0).
    pub found_jiffies: u64,
}

/// How long a next hop is reused before it is looked up again, in jiffies:
/// a neighbour whose MAC changes (failover) is followed within this time.
/// Jiffies, not nanoseconds: the verifier inlines bpf_jiffies64 (a load of
/// `jiffies_64`), while bpf_ktime_get_coarse_ns is a helper call, ~8 ns of
/// every tunnelled packet here (docs/BENCHMARKS.md). The program does not
/// know the kernel's HZ (CONFIG_HZ: 100, 250, 300 or 1000), so 100 jiffies
/// is between 0.1 s (HZ 1000: ten lookups a second per backend, still
/// nothing per packet) and 1 s (HZ 100): never longer than the one second
/// docs/DATAPLANE.md promises.
const NEXT_HOP_TTL_JIFFIES: u64 = 100;

/// backend id -> its next hop. bpf_fib_lookup costs 160 ns (IPv4) to 310 ns
/// (IPv6) a packet here (docs/BENCHMARKS.md), more than the rest of the
/// balancer; the outer destination of a backend id never changes (a changed
/// address is a new id), so its next hop is looked up once every
/// `NEXT_HOP_TTL_JIFFIES` (0.1-1 s).
/// Kernel-private: the controller never reads or writes it. Two CPUs
/// refreshing an entry at once write the same values.
#[btf_map]
static XLB_NEXT_HOPS: Array<NextHop, { MAX_BACKENDS as usize }> = Array::new();

/// The next hop of the outer packet (`s.outer_src` -> `s.outer_dst`) for
/// backend `s.backend_id`: its MAC and ours land in `s.fib.dmac` /
/// `s.fib.smac`. Answers ROUTE_TX to send back out of the ingress
/// interface, an ifindex to redirect to, or ROUTE_NONE. When the kernel has
/// no answer (no route, no neighbour entry yet, forwarding off), the
/// configured gateway MAC is the next hop.
#[inline(always)]
pub fn route(ctx: &XdpContext, s: &mut Scratch, cfg: &GlobalConfig, family: u8) -> u32 {
    // SAFETY: a BPF helper without arguments; it only reads `jiffies_64`
    // (the verifier inlines it as that load).
    let now = unsafe { bpf_jiffies64() };
    let cached = XLB_NEXT_HOPS.get_ptr_mut(s.backend_id);
    if let Some(nh) = cached {
        // SAFETY: get_ptr_mut checked the index; array map values are never
        // freed while a program runs; NextHop is a #[repr(C)] map value.
        let nh = unsafe { &*nh };
        if nh.found_jiffies != 0 && now.wrapping_sub(nh.found_jiffies) < NEXT_HOP_TTL_JIFFIES {
            copy(&mut s.fib.dmac, &nh.dmac);
            copy(&mut s.fib.smac, &nh.smac);
            return nh.route;
        }
    }
    let route = lookup(ctx, s, cfg, family);
    if route != ROUTE_NONE
        && let Some(nh) = cached
    {
        // SAFETY: as above. Another CPU may write the same entry at once; both
        // write the same values, and a torn read only costs one extra lookup.
        unsafe {
            *nh = NextHop {
                dmac: s.fib.dmac,
                smac: s.fib.smac,
                route,
                found_jiffies: now,
            };
        }
    }
    route
}

/// bpf_fib_lookup for the outer packet, or the gateway MAC.
#[inline(always)]
fn lookup(ctx: &XdpContext, s: &mut Scratch, cfg: &GlobalConfig, family: u8) -> u32 {
    // SAFETY: plain old data; all-zero is its "no options" value.
    s.fib = unsafe { core::mem::zeroed() };
    let f = &mut s.fib;
    f.ifindex = cfg.ifindex;
    if family == FAMILY_V6 {
        f.family = 10; // AF_INET6
        let (a, b) = (&s.outer_src, &s.outer_dst);
        f.__bindgen_anon_3.ipv6_src = [
            u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
            u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
            u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
            u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
        ];
        f.__bindgen_anon_4.ipv6_dst = [
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
        ];
    } else {
        f.family = 2; // AF_INET
        let (a, b) = (&s.outer_src, &s.outer_dst);
        f.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
        f.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    }
    // tot_len stays 0: the MTU check against the interface's MTU is ours
    // (tunnel.rs), done before the lookup.
    // SAFETY: `f` is a whole bpf_fib_lookup (in the per-CPU scratch) and the
    // size passed is its size; ctx is this run's context.
    let ret = unsafe {
        fib_lookup(
            ctx.ctx.cast(),
            f as *mut bpf_fib_lookup,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if ret == 0 {
        let egress = f.ifindex;
        // SAFETY: ctx.ctx is the kernel's xdp_md, valid for the whole run.
        let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
        return if egress == ingress { ROUTE_TX } else { egress };
    }
    if cfg.gateway_mac == [0; 6] {
        return ROUTE_NONE;
    }
    count_event(EV_FIB_FALLBACK);
    f.dmac = cfg.gateway_mac;
    f.smac = cfg.iface_mac;
    ROUTE_TX
}
