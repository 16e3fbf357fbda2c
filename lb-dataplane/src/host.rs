//! The interface the data plane is attached to, read from sysfs.

pub use xlb_core::host::HostInterface;

/// Why an interface could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("interface {interface} not found (reading {path}): {source}")]
    Read {
        interface: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not {what}: {text}")]
    Parse {
        path: String,
        what: &'static str,
        text: String,
    },
}

/// Read `interface`'s MAC, index and MTU from sysfs.
pub fn read(interface: &str) -> Result<HostInterface, HostError> {
    let dir = format!("/sys/class/net/{interface}");
    let read = |file: &str| -> Result<(String, String), HostError> {
        let path = format!("{dir}/{file}");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((text.trim().to_string(), path)),
            Err(source) => Err(HostError::Read {
                interface: interface.to_string(),
                path,
                source,
            }),
        }
    };
    let parse_err = |path: String, what: &'static str, text: &str| HostError::Parse {
        path,
        what,
        text: text.to_string(),
    };
    let (mac_text, path) = read("address")?;
    let bytes: Vec<u8> = mac_text
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| parse_err(path.clone(), "a MAC address", &mac_text))?;
    let mac = bytes
        .try_into()
        .map_err(|_| parse_err(path, "a 6-byte MAC address", &mac_text))?;
    let (text, path) = read("ifindex")?;
    let ifindex = text
        .parse()
        .map_err(|_| parse_err(path, "an interface index", &text))?;
    // An MTU past 65535 cannot occur on an interface XDP attaches to
    // (XDP needs a frame in one page); clamp rather than wrap.
    let (text, path) = read("mtu")?;
    let mtu: u32 = text.parse().map_err(|_| parse_err(path, "an MTU", &text))?;
    Ok(HostInterface {
        mac,
        ifindex,
        mtu: mtu.min(u32::from(u16::MAX)) as u16,
    })
}
