//! The userspace simulator: which backend would the XDP program pick for a
//! flow, given the same tables? Uses lb_common's flow hash over what the
//! VIP's hash mode keeps of the flow (`hash_input`), like the kernel.

use std::net::IpAddr;

use lb_common::hash::{FlowWords, addr_words, flow_hash, hash_input, ports_word};

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
    let matches = |v: &&std::sync::Arc<DesiredVip>, port: u16| {
        v.config.address == flow.dst
            && v.config.protocol.number() == flow.proto
            && v.config.port == port
    };
    desired
        .vips
        .iter()
        .find(|v| matches(v, flow.dst_port))
        .or_else(|| desired.vips.iter().find(|v| matches(v, 0)))
        .map(|v| &**v)
}

/// The kernel backend id the program would pick, or None if it would pass
/// the packet (not for a VIP) or drop it (no backend).
pub fn pick(desired: &Desired, flow: &Flow) -> Option<u32> {
    let vip = vip_for(desired, flow)?;
    // The mode as written to the VIP's map entry: what the kernel reads.
    let hashed = hash_input(&flow.words(), vip.meta.hash);
    let slot = flow_hash(&hashed, desired.config.hash_seed) % vip.slot_count() as u32;
    let id = vip.slot_iter().nth(slot as usize)?;
    (id != crate::state::NO_BACKEND).then_some(id)
}

/// The backend's name for a picked id within the flow's VIP.
pub fn pick_name<'a>(desired: &'a Desired, flow: &Flow) -> Option<&'a str> {
    let vip = vip_for(desired, flow)?;
    let id = pick(desired, flow)?;
    let i = vip.backend_ids.iter().position(|&b| b == id)?;
    Some(&vip.config.backends[i].name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Allocation, desired};

    /// A VIP of eight backends hashed by `hash`.
    fn eight_backends(hash: &str) -> Desired {
        let mut text = format!(
            "interface = \"eth0\"\nhash_seed = 5\n[[vip]]\nname = \"v\"\n\
             address = \"198.18.100.1\"\nport = 0\nprotocol = \"udp\"\nhash = \"{hash}\"\n\
             table_size = 1021\n"
        );
        for i in 0..8 {
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"b{i}\"\naddress = \"198.18.0.{i}\"\n\
                 mac = \"02:00:00:00:00:{i:02x}\"\n"
            ));
        }
        let config = crate::config::parse(&text, "t.toml").unwrap();
        desired(&config, &Allocation::default()).unwrap()
    }

    /// Backends picked for the flows of one client from 64 source ports to
    /// `dst_ports`.
    fn picks(d: &Desired, dst_ports: &[u16]) -> std::collections::BTreeSet<u32> {
        (0..64u16)
            .flat_map(|i| {
                dst_ports.iter().map(move |&dst_port| Flow {
                    src: "198.18.7.7".parse().unwrap(),
                    dst: "198.18.100.1".parse().unwrap(),
                    src_port: 40_000 + i,
                    dst_port,
                    proto: lb_common::PROTO_UDP,
                })
            })
            .map(|f| pick(d, &f).expect("a backend"))
            .collect()
    }

    #[test]
    fn the_hash_mode_decides_what_moves_a_flow() {
        // 5-tuple: one client's flows spread over the backends.
        assert!(picks(&eight_backends("five_tuple"), &[53]).len() > 4);
        // Source: every flow of a client, any port, to one backend.
        assert_eq!(picks(&eight_backends("source"), &[53, 80, 443]).len(), 1);
        // No ports: one backend per (client, VIP address).
        assert_eq!(picks(&eight_backends("no_ports"), &[53, 80, 443]).len(), 1);
    }
}
