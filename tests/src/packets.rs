//! Frames for the packet tests: well-formed ones built with etherparse from an
//! `xlb_core::simulate::Flow` (the same value the simulator answers for), byte
//! patches that break one header field at a time, the output a frame should
//! have after the balancer, and one run of the balancer on a frame with
//! BPF_PROG_TEST_RUN.
//!
//! Checksums are those etherparse computes for the well-formed frame; the
//! patches do not fix them up (the balancer reads no checksum).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpHeaders, IpNumber, Ipv4Header,
    Ipv4Options, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader, PacketBuilder,
};
use xlb_core::config::Backend;
use xlb_core::simulate::Flow;
use xlb_core::state::Desired;

/// Source MAC of frames coming in: the router in front of the balancer.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// The balancer's interface MAC: the destination of frames coming in, and
/// the source of the frames it sends on (passed to `Dataplane::apply`).
pub const LB_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

/// Ethernet header length (no VLAN tag).
pub const ETH_LEN: usize = 14;
/// IPv4 header length without options.
pub const IPV4_LEN: usize = 20;
/// IPv6 fixed header length.
pub const IPV6_LEN: usize = 40;
/// TCP header length without options.
pub const TCP_LEN: usize = 20;
/// UDP header length.
pub const UDP_LEN: usize = 8;

/// TTL / hop limit of built frames.
const TTL: u8 = 64;

/// A well-formed Ethernet frame carrying `flow`, with knobs for the
/// variations the fixtures need. `build` and `write_into` make the bytes.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    flow: Flow,
    payload_len: usize,
    syn: bool,
    ipv4_option_words: u8,
    more_fragments: bool,
    fragment_offset: u16,
    ipv6_hop_by_hop: bool,
}

impl FrameBuilder {
    /// A frame from `ROUTER_MAC` to `LB_MAC` carrying `flow`: IPv4 or IPv6
    /// after `flow.dst` (`flow.src` must be of the same family), TCP (a SYN)
    /// or UDP after `flow.proto`, no payload.
    pub fn new(flow: Flow) -> Self {
        Self {
            flow,
            payload_len: 0,
            syn: true,
            ipv4_option_words: 0,
            more_fragments: false,
            fragment_offset: 0,
            ipv6_hop_by_hop: false,
        }
    }

    /// `n` bytes of payload after the L4 header (0x00, 0x01, ... wrapping).
    pub fn payload(mut self, n: usize) -> Self {
        self.payload_len = n;
        self
    }

    /// A TCP segment of an established connection: ACK (and PSH) instead of SYN.
    pub fn established(mut self) -> Self {
        self.syn = false;
        self
    }

    /// IPv4 options of `words` 32-bit words (NOPs ending in End of Options
    /// List): the IHL becomes `5 + words`, at most 15.
    pub fn ipv4_options(mut self, words: u8) -> Self {
        assert!(words <= 10, "IHL is at most 15");
        self.ipv4_option_words = words;
        self
    }

    /// IPv4 fragment fields: the More Fragments flag and the fragment offset
    /// (in 8-byte units).
    pub fn ipv4_fragment(mut self, more_fragments: bool, offset: u16) -> Self {
        self.more_fragments = more_fragments;
        self.fragment_offset = offset;
        self
    }

    /// An empty IPv6 Hop-by-Hop Options header (PadN) between the IPv6
    /// header and the L4 header.
    pub fn ipv6_hop_by_hop(mut self) -> Self {
        self.ipv6_hop_by_hop = true;
        self
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut frame = Vec::new();
        self.write_into(&mut frame);
        frame
    }

    /// Replace `buf`'s contents with the frame (reuses its allocation).
    pub fn write_into(&self, buf: &mut Vec<u8>) {
        buf.clear();
        let f = &self.flow;
        let eth = PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC);
        let ip = match (f.src, f.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                assert!(!self.ipv6_hop_by_hop, "hop-by-hop is an IPv6 header");
                // Length and protocol are filled in by the builder.
                let mut h = Ipv4Header::new(0, TTL, IpNumber::TCP, src.octets(), dst.octets())
                    .expect("empty payload");
                let words = usize::from(self.ipv4_option_words);
                if words > 0 {
                    let mut options = vec![1u8; words * 4]; // NOP
                    options[words * 4 - 1] = 0; // End of Options List
                    h.options =
                        Ipv4Options::try_from(&options[..]).expect("a multiple of 4, at most 40");
                }
                h.more_fragments = self.more_fragments;
                h.fragment_offset = self
                    .fragment_offset
                    .try_into()
                    .expect("13-bit fragment offset");
                IpHeaders::Ipv4(h, Default::default())
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                assert!(
                    self.ipv4_option_words == 0
                        && !self.more_fragments
                        && self.fragment_offset == 0,
                    "IPv4 fields on an IPv6 frame"
                );
                let h = Ipv6Header {
                    hop_limit: TTL,
                    source: src.octets(),
                    destination: dst.octets(),
                    ..Default::default()
                };
                let mut ext = Ipv6Extensions::default();
                if self.ipv6_hop_by_hop {
                    // PadN option of 4 bytes: 6 bytes of option space in all.
                    let options = [1, 4, 0, 0, 0, 0];
                    let header =
                        Ipv6RawExtHeader::new_raw(IpNumber::TCP, &options).expect("8-byte header");
                    ext.hop_by_hop_options = Some(header);
                }
                IpHeaders::Ipv6(h, ext)
            }
            _ => panic!("flow {f:?} mixes address families"),
        };
        let payload: Vec<u8> = (0..self.payload_len).map(|i| i as u8).collect();
        let step = eth.ip(ip);
        let written = match f.proto {
            lb_common::PROTO_TCP => {
                let tcp = step.tcp(f.src_port, f.dst_port, 0x1000_0000, 64240);
                if self.syn {
                    tcp.syn()
                } else {
                    tcp.ack(0x2000_0000).psh()
                }
                .write(buf, &payload)
            }
            lb_common::PROTO_UDP => step.udp(f.src_port, f.dst_port).write(buf, &payload),
            other => panic!("no frames for IP protocol {other}"),
        };
        written.expect("write to a Vec");
    }
}

/// A flow of IP protocol `proto` between two socket addresses written as
/// text (`"198.18.0.1:40000"`, `"[2001:db8::1]:40000"`).
pub fn flow(proto: u8, src: &str, dst: &str) -> Flow {
    let src: SocketAddr = src.parse().expect("source socket address");
    let dst: SocketAddr = dst.parse().expect("destination socket address");
    Flow {
        src: src.ip(),
        dst: dst.ip(),
        src_port: src.port(),
        dst_port: dst.port(),
        proto,
    }
}

/// The frame for `flow`, as `FrameBuilder::new(flow).build()`.
pub fn frame(flow: Flow) -> Vec<u8> {
    FrameBuilder::new(flow).build()
}

/// An ARP request from `ROUTER_MAC` (as `sender`) asking for `target`.
pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &ROUTER_MAC,
        &sender,
        &[0; 6],
        &target,
    )
    .expect("Ethernet/IPv4 ARP");
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, [0xff; 6])
        .arp(arp)
        .write(&mut frame)
        .expect("write to a Vec");
    frame
}

/// An ICMP echo request from `src` to `dst` (IPv4), 8 bytes of payload.
pub fn icmpv4_echo(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
        .ipv4(src, dst, TTL)
        .icmpv4_echo_request(1, 1)
        .write(&mut frame, &[0; 8])
        .expect("write to a Vec");
    frame
}

/// Offset of the L4 header in a frame `FrameBuilder` made (reads the
/// ethertype and the IPv4 IHL; IPv6 extension headers are not followed).
pub fn l4_offset(frame: &[u8]) -> usize {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => ETH_LEN + usize::from(frame[ETH_LEN] & 0x0f) * 4,
        0x86dd => ETH_LEN + IPV6_LEN,
        other => panic!("ethertype {other:#06x} is not IP"),
    }
}

/// Set the IP version nibble (the first byte after Ethernet), keeping the IHL
/// or traffic-class bits.
pub fn set_ip_version(frame: &mut [u8], version: u8) {
    frame[ETH_LEN] = (version << 4) | (frame[ETH_LEN] & 0x0f);
}

/// Set the IPv4 IHL nibble, keeping the version. The frame's bytes stay
/// where they are: a larger IHL makes the header claim bytes of what follows.
pub fn set_ipv4_ihl(frame: &mut [u8], ihl: u8) {
    frame[ETH_LEN] = (frame[ETH_LEN] & 0xf0) | (ihl & 0x0f);
}

/// Set the TCP data offset nibble (header length in 32-bit words).
pub fn set_tcp_data_offset(frame: &mut [u8], words: u8) {
    let at = l4_offset(frame) + 12;
    frame[at] = (words << 4) | (frame[at] & 0x0f);
}

/// `frame` with its destination and source MACs replaced: what the
/// balancer sends on with XDP_TX.
pub fn with_macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out
}

/// The backend the simulator picks for `flow` (by `pick_name`, looked up by
/// name in the flow's VIP), with its kernel id (`pick`); None when the
/// program would pass or drop the frame.
pub fn expected_backend<'a>(desired: &'a Desired, flow: &Flow) -> Option<(&'a Backend, u32)> {
    let vip = xlb_core::simulate::vip_for(desired, flow)?;
    let name = xlb_core::simulate::pick_name(desired, flow)?;
    let i = vip.config.backends.iter().position(|b| b.name == name)?;
    let id = xlb_core::simulate::pick(desired, flow)?;
    assert_eq!(
        id, vip.backend_ids[i],
        "pick and pick_name disagree for {flow:?}"
    );
    Some((&vip.config.backends[i], id))
}

/// For each VIP (by name), its backends by MAC: how a test tells from an
/// output frame which backend the program chose.
pub fn backends_by_mac(desired: &Desired) -> BTreeMap<String, BTreeMap<[u8; 6], String>> {
    desired
        .vips
        .iter()
        .map(|v| {
            let by_mac: BTreeMap<[u8; 6], String> = v
                .config
                .backends
                .iter()
                .map(|b| (b.mac.0, b.name.clone()))
                .collect();
            assert_eq!(
                by_mac.len(),
                v.config.backends.len(),
                "vip {}: backends share a MAC",
                v.config.name
            );
            (v.config.name.clone(), by_mac)
        })
        .collect()
}

/// What one run of the program did to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The XDP action (`lb_common::stats::XDP_*`).
    pub action: u32,
    /// Length of the frame after the program (the output is `out[..len]`).
    pub len: usize,
}

/// Run `prog` once on `frame` with BPF_PROG_TEST_RUN; the frame as the
/// program left it is written to the start of `out`, which must be large
/// enough (the kernel refuses a short buffer with ENOSPC).
pub fn run(prog: &Xdp, frame: &[u8], out: &mut [u8]) -> Result<Outcome, ProgramError> {
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(out),
        repeat: 1,
        ..TestRunOptions::new()
    })?;
    Ok(Outcome {
        action: r.return_value,
        len: r.data_size_out as usize,
    })
}

/// Name of an XDP action value, for messages.
pub fn action_name(action: u32) -> &'static str {
    lb_common::stats::ACTION_NAMES
        .get(action as usize)
        .copied()
        .unwrap_or("unknown")
}
