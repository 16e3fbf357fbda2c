//! What the data plane needs to know of the interface it is attached to.

use anyhow::Context as _;

/// The interface's MAC (source of every frame we send), index (for
/// bpf_fib_lookup) and MTU (the tunnel's size check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostInterface {
    pub mac: [u8; 6],
    pub ifindex: u32,
    pub mtu: u16,
}

impl HostInterface {
    /// Read `interface`'s MAC, index and MTU from sysfs.
    pub fn read(interface: &str) -> anyhow::Result<Self> {
        let dir = format!("/sys/class/net/{interface}");
        let read = |file: &str| -> anyhow::Result<String> {
            let path = format!("{dir}/{file}");
            Ok(std::fs::read_to_string(&path)
                .with_context(|| format!("interface {interface} not found (reading {path})"))?
                .trim()
                .to_string())
        };
        let mac_text = read("address")?;
        let bytes: Vec<u8> = mac_text
            .split(':')
            .map(|h| u8::from_str_radix(h, 16))
            .collect::<Result<_, _>>()
            .with_context(|| format!("{dir}/address: not a MAC address: {mac_text}"))?;
        let mac = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{dir}/address: not a 6-byte MAC address: {mac_text}"))?;
        let ifindex = read("ifindex")?
            .parse()
            .with_context(|| format!("{dir}/ifindex"))?;
        // An MTU past 65535 cannot occur on an interface XDP attaches to
        // (XDP needs a frame in one page); clamp rather than wrap.
        let mtu: u32 = read("mtu")?.parse().with_context(|| format!("{dir}/mtu"))?;
        Ok(Self {
            mac,
            ifindex,
            mtu: mtu.min(u16::MAX as u32) as u16,
        })
    }
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
