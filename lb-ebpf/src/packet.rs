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

/// Copy `src` to `dst` a word at a time. `dst = *src` on byte arrays that
/// LLVM cannot prove apart (packet and map memory both come from raw
/// pointers) becomes a call to a byte-at-a-time `memmove` loop on BPF
/// (about 8 instructions a byte), and zeroing one a `memset` loop; these
/// loads and stores of u64/u32/u16 are one instruction each (the objects
/// are built with `allows-misaligned-mem-access`, see build.rs).
#[inline(always)]
pub fn copy<const N: usize>(dst: &mut [u8; N], src: &[u8; N]) {
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    let mut i = 0;
    while i + 8 <= N {
        // SAFETY: bytes i..i+8 lie inside both arrays (i + 8 <= N); the
        // accesses are unaligned ones; `dst` and `src` do not overlap (a
        // `&mut` and a `&`).
        unsafe {
            d.add(i)
                .cast::<u64>()
                .write_unaligned(s.add(i).cast::<u64>().read_unaligned())
        };
        i += 8;
    }
    if i + 4 <= N {
        // SAFETY: as above, 4 bytes.
        unsafe {
            d.add(i)
                .cast::<u32>()
                .write_unaligned(s.add(i).cast::<u32>().read_unaligned())
        };
        i += 4;
    }
    if i + 2 <= N {
        // SAFETY: as above, 2 bytes.
        unsafe {
            d.add(i)
                .cast::<u16>()
                .write_unaligned(s.add(i).cast::<u16>().read_unaligned())
        };
        i += 2;
    }
    if i < N {
        dst[i] = src[i];
    }
}

/// `dst` = an IPv4 address in its first four bytes, zeros after (the
/// 16-byte address fields of map keys), in three stores.
#[inline(always)]
pub fn put_v4(dst: &mut [u8; 16], v4: &[u8; 4]) {
    let d = dst.as_mut_ptr();
    // SAFETY: bytes 0..4, 4..8 and 8..16 lie inside the 16-byte `dst`; the
    // stores are unaligned ones; `v4` is read whole first.
    unsafe {
        d.cast::<u32>().write_unaligned(u32::from_ne_bytes(*v4));
        d.add(4).cast::<u32>().write_unaligned(0);
        d.add(8).cast::<u64>().write_unaligned(0);
    }
}
