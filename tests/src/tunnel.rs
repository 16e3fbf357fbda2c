//! Tunnel frames as xlb's balancer sends them to a backend, built by hand
//! (IPIP: IPv4 or IPv6 in IPv4 or IPv6; GUE variant 1: outer IP + UDP to the
//! GUE port + the inner IP packet), for the decap program's tests; an
//! AF_PACKET socket to put such frames on a wire and read frames off it; and
//! `xlb decap` run in a namespace, as a backend runs it.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use etherparse::{
    IpNumber, Ipv4Header, Ipv4Options, Ipv6FlowLabel, Ipv6Header, PacketBuilder, UdpHeader,
};

use crate::netns::Netns;
use crate::testbed::Host;
use crate::xlbd::xlb_binary;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;

/// TTL / hop limit of built packets.
const TTL: u8 = 64;

/// How the inner packet is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encap {
    /// IP in IP: the outer protocol is 4 (IPv4 inside) or 41 (IPv6 inside).
    Ipip,
    /// GUE variant 1: UDP from `src_port` to `dst_port`, the inner packet as
    /// payload; the UDP checksum is computed when `checksum`, else zero.
    Gue {
        src_port: u16,
        dst_port: u16,
        checksum: bool,
    },
}

/// The link layer in front of the outer IP header.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// An 802.1Q tag with this TCI.
    pub vlan: Option<u16>,
}

impl Link {
    /// The Ethernet header (and tag) for a payload of `ether_type`.
    pub fn header(&self, ether_type: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(18);
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        if let Some(tci) = self.vlan {
            out.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
        }
        out.extend_from_slice(&ether_type.to_be_bytes());
        out
    }

    /// Bytes of the link header: 14, or 18 with a tag.
    pub fn header_len(&self) -> usize {
        if self.vlan.is_some() { 18 } else { 14 }
    }
}

/// The EtherType of an IP packet (from its version nibble).
pub fn ether_type_of(ip_packet: &[u8]) -> u16 {
    match ip_packet[0] >> 4 {
        4 => ETH_P_IPV4,
        6 => ETH_P_IPV6,
        v => panic!("IP version {v}"),
    }
}

/// A TCP SYN (seq 1000, no payload) from `src` to `dst` as an IP packet,
/// checksums computed.
pub fn tcp_syn(src: (IpAddr, u16), dst: (IpAddr, u16)) -> Vec<u8> {
    let mut out = Vec::new();
    ip_step(src.0, dst.0)
        .tcp(src.1, dst.1, 1000, 64240)
        .syn()
        .write(&mut out, &[])
        .expect("write to a Vec");
    out
}

/// A UDP datagram from `src` to `dst` carrying `payload`, as an IP packet.
pub fn udp_datagram(src: (IpAddr, u16), dst: (IpAddr, u16), payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ip_step(src.0, dst.0)
        .udp(src.1, dst.1)
        .write(&mut out, payload)
        .expect("write to a Vec");
    out
}

fn ip_step(src: IpAddr, dst: IpAddr) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), TTL),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), TTL),
        _ => panic!("{src} and {dst} are of different families"),
    }
}

/// The outer IP header (IPv4 with `ipv4_option_words` words of NOP options)
/// for `payload_len` bytes of `proto` from `src` to `dst`.
pub fn outer_ip(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    payload_len: usize,
    ipv4_option_words: u8,
) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => v4_header(
            s.octets(),
            d.octets(),
            proto,
            payload_len,
            ipv4_option_words,
        )
        .to_bytes()
        .to_vec(),
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            assert_eq!(ipv4_option_words, 0, "IPv4 options on IPv6");
            v6_header(s.octets(), d.octets(), proto, payload_len)
                .to_bytes()
                .to_vec()
        }
        _ => panic!("{src} and {dst} are of different families"),
    }
}

fn v4_header(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    payload_len: usize,
    option_words: u8,
) -> Ipv4Header {
    let mut h = Ipv4Header::new(
        payload_len.try_into().expect("fits an IPv4 packet"),
        TTL,
        IpNumber(proto),
        src,
        dst,
    )
    .expect("fits an IPv4 packet");
    if option_words > 0 {
        let n = usize::from(option_words) * 4;
        let mut options = vec![1u8; n]; // NOP
        options[n - 1] = 0; // End of Options List
        h.options = Ipv4Options::try_from(&options[..]).expect("at most 40 bytes");
        h.total_len += n as u16;
    }
    h.header_checksum = h.calc_header_checksum();
    h
}

fn v6_header(src: [u8; 16], dst: [u8; 16], proto: u8, payload_len: usize) -> Ipv6Header {
    Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: payload_len.try_into().expect("fits an IPv6 packet"),
        next_header: IpNumber(proto),
        hop_limit: TTL,
        source: src,
        destination: dst,
    }
}

/// The frame a balancer sends: `link`, an outer IP header from `outer_src`
/// to `outer_dst`, the UDP header for GUE, then `inner` (an IP packet, or
/// any bytes for broken cases) unchanged.
pub fn encapsulate(
    link: &Link,
    outer_src: IpAddr,
    outer_dst: IpAddr,
    encap: Encap,
    inner: &[u8],
) -> Vec<u8> {
    encapsulate_with(link, outer_src, outer_dst, encap, inner, 0)
}

/// As `encapsulate`, with `ipv4_option_words` words of options in an outer
/// IPv4 header (IHL 5 + words).
pub fn encapsulate_with(
    link: &Link,
    outer_src: IpAddr,
    outer_dst: IpAddr,
    encap: Encap,
    inner: &[u8],
    ipv4_option_words: u8,
) -> Vec<u8> {
    let ether_type = if outer_dst.is_ipv4() {
        ETH_P_IPV4
    } else {
        ETH_P_IPV6
    };
    let mut out = link.header(ether_type);
    match encap {
        Encap::Ipip => {
            let proto = if inner.first().is_some_and(|b| b >> 4 == 6) {
                41
            } else {
                4
            };
            out.extend(outer_ip(
                outer_src,
                outer_dst,
                proto,
                inner.len(),
                ipv4_option_words,
            ));
        }
        Encap::Gue {
            src_port,
            dst_port,
            checksum,
        } => {
            let udp_len = UdpHeader::LEN + inner.len();
            out.extend(outer_ip(
                outer_src,
                outer_dst,
                17,
                udp_len,
                ipv4_option_words,
            ));
            let udp = match (checksum, outer_src, outer_dst) {
                (false, ..) => UdpHeader::without_ipv4_checksum(src_port, dst_port, inner.len()),
                (true, IpAddr::V4(s), IpAddr::V4(d)) => UdpHeader::with_ipv4_checksum(
                    src_port,
                    dst_port,
                    &v4_header(s.octets(), d.octets(), 17, udp_len, ipv4_option_words),
                    inner,
                ),
                (true, IpAddr::V6(s), IpAddr::V6(d)) => UdpHeader::with_ipv6_checksum(
                    src_port,
                    dst_port,
                    &v6_header(s.octets(), d.octets(), 17, udp_len),
                    inner,
                ),
                _ => panic!("{outer_src} and {outer_dst} are of different families"),
            }
            .expect("fits a UDP datagram");
            out.extend(udp.to_bytes());
        }
    }
    out.extend_from_slice(inner);
    out
}

/// What the decap program should leave of a tunnel frame: the same link
/// header with the inner packet's EtherType, then the inner packet.
pub fn decapsulated(link: &Link, inner: &[u8]) -> Vec<u8> {
    let mut out = link.header(ether_type_of(inner));
    out.extend_from_slice(inner);
    out
}

/// A balancer's kernel as `bpf_fib_lookup` needs it to tunnel to
/// `backends` out of `interface`: forwarding on (else it answers
/// "forwarding disabled") and a permanent neighbour entry for each backend
/// address, both families (else "no neighbour" until something resolved
/// it).
pub fn route_to_backends(ns: &Netns, interface: &str, backends: &[Host]) -> anyhow::Result<()> {
    ns.sysctl("net.ipv4.conf.all.forwarding", "1")?;
    ns.sysctl(&format!("net.ipv4.conf.{interface}.forwarding"), "1")?;
    ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
    for b in backends {
        for (family, addr) in [("-4", b.v4.to_string()), ("-6", b.v6.to_string())] {
            ns.ip(&[
                family,
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &b.mac,
                "dev",
                interface,
                "nud",
                "permanent",
            ])?;
        }
    }
    Ok(())
}

/// An AF_PACKET socket on one interface of the namespace it was opened in:
/// sends whole Ethernet frames, receives every frame on the interface.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Open on `interface` (in the calling thread's namespace).
    pub fn open(interface: &str) -> anyhow::Result<Self> {
        use nix::libc;
        let index = nix::net::if_::if_nametoindex(interface)
            .with_context(|| format!("no interface {interface}"))?;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain syscalls on a socket we own; the address is a local,
        // fully initialized sockaddr_ll.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                proto as i32,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto;
            addr.sll_ifindex = index as i32;
            let r = libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if r != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("binding to {interface}"));
            }
            Ok(Self { fd })
        }
    }

    /// Send one Ethernet frame as it is.
    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        let n = nix::sys::socket::send(
            self.fd.as_raw_fd(),
            frame,
            nix::sys::socket::MsgFlags::empty(),
        )
        .context("sending a frame")?;
        if n != frame.len() {
            bail!("sent {n} of {} bytes", frame.len());
        }
        Ok(())
    }

    /// The first frame (sent or received on the interface) for which `want`
    /// is true, or None after `timeout`.
    pub fn recv_until(
        &self,
        timeout: Duration,
        mut want: impl FnMut(&[u8]) -> bool,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ms = PollTimeout::try_from(left.max(Duration::from_millis(1)))
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, ms).context("poll")? == 0 {
                continue;
            }
            let n = nix::sys::socket::recv(
                self.fd.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            )
            .context("receiving a frame")?;
            if want(&buf[..n]) {
                return Ok(Some(buf[..n].to_vec()));
            }
        }
    }
}

/// A running `xlb -o json decap --interface IF` in a namespace, stopped with
/// SIGTERM by `stop` (killed on drop otherwise). Its output and log go to
/// files named after the namespace in the test's work directory, so several
/// backends can share one directory.
pub struct DecapProcess {
    child: Child,
    stdout: PathBuf,
    log: PathBuf,
}

impl DecapProcess {
    /// Start on `interface` in `ns` with `extra` arguments, and wait until it
    /// says it attached.
    pub fn start(ns: &Netns, dir: &Path, interface: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let stdout = dir.join(format!("decap-{}.out", ns.name));
        let log = dir.join(format!("decap-{}.log", ns.name));
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(xlb_binary()?)
            .args(["-o", "json", "decap", "--interface", interface])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting xlb decap")?;
        let mut p = Self { child, stdout, log };
        let attached = format!("attached to {interface}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "xlb decap in {} exited with {status}: {}",
                    ns.name,
                    p.log_text()
                );
            }
            if p.log_text().contains(&attached) {
                return Ok(p);
            }
            ensure!(
                Instant::now() < deadline,
                "xlb decap in {} did not attach within 30 s: {}",
                ns.name,
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// [`DecapProcess::start`] as a backend of tunnelling balancers runs
    /// it: GUE on `gue_port`, accepting tunnel frames from the balancers'
    /// outer source prefixes `from` only.
    pub fn start_for(
        ns: &Netns,
        dir: &Path,
        interface: &str,
        gue_port: u16,
        from: &[&str],
    ) -> anyhow::Result<Self> {
        let port = gue_port.to_string();
        let mut extra = vec!["--gue-port", &port];
        for prefix in from {
            extra.extend(["--from", prefix]);
        }
        Self::start(ns, dir, interface, &extra)
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait (10 s at most); the exit status and what it printed.
    pub fn stop(mut self) -> anyhow::Result<(ExitStatus, String)> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, std::fs::read_to_string(&self.stdout)?));
            }
            ensure!(
                Instant::now() < deadline,
                "xlb decap did not exit within 10 s of SIGTERM: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `stop`, then the counters it printed (`packets` of its JSON), after
    /// checking that it exited cleanly.
    pub fn stop_with_counters(self) -> anyhow::Result<serde_json::Value> {
        let (status, out) = self.stop()?;
        ensure!(status.success(), "xlb decap exited with {status}: {out}");
        let doc: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("xlb decap printed {out:?}"))?;
        Ok(doc["packets"].clone())
    }
}

impl Drop for DecapProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
