//! Sending the frame on. L2 direct server return: the backend holds the VIP
//! itself, so only the Ethernet addresses change and the frame goes back out
//! of the interface it came in on (XDP_TX); replies go straight to the client.

use aya_ebpf::programs::XdpContext;
use network_types::eth::EthHdr;

use crate::{lookup::Choice, parse::ptr_at};

#[inline(always)]
pub fn l2_dsr(ctx: &XdpContext, c: &Choice) -> Option<()> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at; the frame is ours until we return.
    unsafe {
        (*eth).dst_addr = c.backend.mac;
        (*eth).src_addr = c.iface_mac;
    }
    Some(())
}
