//! Bounds-checked access to the frame, and the Ethernet constants, shared by
//! the balancer's parser and the decap program. (IP protocol numbers and
//! address families are in lb_common, where userspace needs them too.)

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;

/// Ethernet header: two MACs and the EtherType.
pub const ETH_LEN: usize = 14;
/// An 802.1Q tag: TCI and the inner EtherType.
pub const VLAN_LEN: usize = 4;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// IPv4 "more fragments" flag and fragment offset bits.
pub const IPV4_FRAG_MASK: u16 = 0x3fff;

/// The packet's start and end. Read with volatile loads so that the
/// compiler re-reads them after bpf_xdp_adjust_head/tail instead of reusing
/// stale values, and never does arithmetic the verifier refuses on them.
#[inline(always)]
pub fn bounds(ctx: &XdpContext) -> (usize, usize) {
    // SAFETY: `ctx.ctx` is the kernel's `xdp_md` for this run, valid and
    // aligned for the whole program; reading its two fields has no effect.
    unsafe {
        (
            core::ptr::read_volatile(&(*ctx.ctx).data) as usize,
            core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize,
        )
    }
}

/// A pointer to a `T` at `offset`, if the whole `T` lies inside the packet.
/// Dereferencing it is sound for the rest of the run as long as the frame's
/// head and tail are not moved (`bpf_xdp_adjust_*` invalidate it), and for
/// types without alignment needs (byte arrays and the network-types headers,
/// all alignment 1 or read as such by the BPF target).
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let (start, end) = bounds(ctx);
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}
