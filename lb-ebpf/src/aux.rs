//! Helper XDP programs for the testbed and the benchmarks; not part of the
//! balancer.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// Lets a veth accept frames its peer sends with XDP_TX (see TESTBED.md).
#[xdp]
pub fn xlb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The floor: swap the Ethernet addresses and send the frame back.
#[xdp]
pub fn xlb_mac_swap(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let eth = start as *mut [u8; 12];
    // SAFETY: the 12 bytes are inside the packet (checked above).
    unsafe {
        let old = *eth;
        let mut swapped = [0u8; 12];
        swapped[..6].copy_from_slice(&old[6..]);
        swapped[6..].copy_from_slice(&old[..6]);
        *eth = swapped;
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
