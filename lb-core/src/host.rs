//! What the data plane needs to know of the interface it is attached to
//! (read from sysfs by `xlb_dataplane::host::read`).

/// The interface's MAC (source of every frame we send), index (for
/// bpf_fib_lookup) and MTU (the tunnel's size check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostInterface {
    pub mac: [u8; 6],
    pub ifindex: u32,
    pub mtu: u16,
}

/// An interface known only by its MAC (tests and simulation, where no frame
/// leaves): index 0 and the Ethernet MTU.
impl From<[u8; 6]> for HostInterface {
    fn from(mac: [u8; 6]) -> Self {
        Self {
            mac,
            ifindex: 0,
            mtu: 1500,
        }
    }
}

impl From<&HostInterface> for HostInterface {
    fn from(h: &HostInterface) -> Self {
        *h
    }
}
