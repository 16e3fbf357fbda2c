//! The userspace simulator: which backend would the XDP program pick for a
//! flow, given the same tables? Uses lb_common's flow hash, like the kernel.

use std::net::IpAddr;

use lb_common::hash::{FlowWords, addr_words, flow_hash, ports_word};

use crate::state::{Desired, DesiredVip, addr_bytes};

/// A flow as a client sends it to a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

impl Flow {
    pub fn words(&self) -> FlowWords {
        FlowWords {
            src: addr_words(&addr_bytes(self.src).0),
            dst: addr_words(&addr_bytes(self.dst).0),
            ports: ports_word(self.src_port, self.dst_port),
            proto: self.proto as u32,
        }
    }
}

/// The VIP a flow is for: exact port first, then the port-0 wildcard.
pub fn vip_for<'a>(desired: &'a Desired, flow: &Flow) -> Option<&'a DesiredVip> {
    let matches = |v: &&DesiredVip, port: u16| {
        v.config.address == flow.dst
            && v.config.protocol.number() == flow.proto
            && v.config.port == port
    };
    desired
        .vips
        .iter()
        .find(|v| matches(v, flow.dst_port))
        .or_else(|| desired.vips.iter().find(|v| matches(v, 0)))
}

/// The kernel backend id the program would pick, or None if it would pass
/// the packet (not for a VIP) or drop it (no backend).
pub fn pick(desired: &Desired, flow: &Flow) -> Option<u32> {
    let vip = vip_for(desired, flow)?;
    let slot = flow_hash(&flow.words(), desired.config.hash_seed) % vip.slots.len() as u32;
    let id = vip.slots[slot as usize];
    (id != crate::state::NO_BACKEND).then_some(id)
}

/// The backend's name for a picked id within the flow's VIP.
pub fn pick_name<'a>(desired: &'a Desired, flow: &Flow) -> Option<&'a str> {
    let vip = vip_for(desired, flow)?;
    let id = pick(desired, flow)?;
    let i = vip.backend_ids.iter().position(|&b| b == id)?;
    Some(&vip.config.backends[i].name)
}
