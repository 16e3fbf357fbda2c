//! Katran's balancer beside xlb's (issue 16, docs/BENCHMARKS.md eleventh
//! round): an object built from Katran's own source outside this repository
//! (`XLB_BENCH_KATRAN` / `XLB_PPS_KATRAN` name it), loaded with aya and
//! configured as Katran's userspace would configure it, by the layouts of
//! its `balancer_structs.h` and `balancer_maps.h`:
//! - `vip_map` (hash): `struct vip_definition` {16-byte address (IPv4 in the
//!   first word), port (network order), proto, pad} -> `struct vip_meta`
//!   {flags, vip_num};
//! - `reals` (array, ids from 1): `struct real_definition` {16-byte address,
//!   flags (`F_IPV6` = 1), pad};
//! - `ch_rings` (array): `RING_SIZE` (65,537) slots per VIP from
//!   `vip_num * RING_SIZE`, each a real's id (the ring's order does not
//!   change what a lookup costs: slots are filled round robin);
//! - `ctl_array[0]`: the gateway MAC every encapsulated frame is sent to;
//! - `lru_mapping[cpu]`: one LRU hash map per CPU (`struct flow_key` ->
//!   `struct real_pos_lru`), created here, as Katran's userspace does before
//!   it attaches the program (without them the program falls back to its
//!   1,000-entry `fallback_cache` and counts a fallback per packet).
//!
//! The other maps (statistics, QUIC, server ids) start zeroed, as Katran's
//! userspace leaves them. The default build encapsulates in IPIP (an IPv4
//! real) or IPv6-in-IPv6 (an IPv6 real), from a source address made of
//! the client's under a prefix fixed at build time (Katran's own are
//! 172.16/16 and 100::/64; the benches take only an object built with
//! `-DIPIP_V4_PREFIX=4806 -DIPIP_V6_PREFIX1=0xb80d0120`, 198.18/16 and
//! 2001:db8::/64, so tunnel sources stay in the test ranges: `check`
//! refuses any other), to the real, with the gateway MAC as destination
//! and the frame's own destination MAC as source.

use std::cell::RefCell;
use std::net::IpAddr;

use anyhow::{Context as _, ensure};
use aya::maps::{Array, ArrayOfMaps, HashMap, Map, MapData, MapError};
use aya::programs::Xdp;

/// Katran's program (`SEC("xdp") balancer_ingress`).
pub const PROGRAM: &str = "balancer_ingress";
/// `RING_SIZE` of `balancer_consts.h`.
pub const RING_SIZE: u32 = 65_537;
/// `F_IPV6` of `real_definition.flags`.
const F_IPV6: u8 = 1;
/// Size of `struct flow_key` (37 bytes of fields, padded to 40).
pub const FLOW_KEY_LEN: usize = 40;
/// Size of `struct real_pos_lru` {u32 pos; u64 atime}.
const REAL_POS_LRU_LEN: usize = 16;
/// `MAX_VIPS + NEW_CONN_RATE_CNTR`: the `stats` slot whose v1 counts the
/// new connections of the current second (over `MAX_CONN_RATE`, 125,000,
/// Katran stops filing new flows: a bench must stay under it).
pub const NEW_CONN_RATE_SLOT: u32 = 512 + 2;
/// `MAX_VIPS + LRU_CNTRS`: v1 the VIP packets, v2 the LRU misses.
const LRU_CNTRS_SLOT: u32 = 512;
/// `MAX_CONN_RATE` of `balancer_consts.h`.
pub const MAX_CONN_RATE: u64 = 125_000;

/// A VIP of Katran's config: address, port, IP protocol, and its reals.
pub struct Vip {
    pub address: IpAddr,
    pub port: u16,
    pub proto: u8,
    pub reals: Vec<IpAddr>,
}

/// Katran loaded and configured; its per-CPU LRU maps kept for deletes.
pub struct Katran {
    ebpf: aya::Ebpf,
    /// In a RefCell: the rows that time the program borrow it while a
    /// new-flow row deletes its flows between runs.
    lrus: RefCell<Vec<Lru>>,
}

type Lru = HashMap<MapData, [u8; FLOW_KEY_LEN], [u8; REAL_POS_LRU_LEN]>;

/// `n` reals: `first` and the addresses after it (the last byte counted
/// up), as the benches configure Katran's three reals of a VIP.
pub fn reals_from(first: IpAddr, n: u8) -> Vec<IpAddr> {
    (0..n)
        .map(|i| match first {
            IpAddr::V4(a) => std::net::Ipv4Addr::from(u32::from(a) + u32::from(i)).into(),
            IpAddr::V6(a) => std::net::Ipv6Addr::from(u128::from(a) + u128::from(i)).into(),
        })
        .collect()
}

/// 16 bytes of address as Katran stores it: IPv4 in the first word.
fn addr16(a: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// `struct vip_definition` {address, port (network order), proto, pad}.
fn vip_key(address: IpAddr, port: u16, proto: u8) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&addr16(address));
    k[16..18].copy_from_slice(&port.to_be_bytes());
    k[18] = proto;
    k
}

/// `struct flow_key` of a flow as Katran files it: source, destination,
/// ports (each in network order), protocol, zero padding.
pub fn flow_key(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, proto: u8) -> [u8; 40] {
    let mut k = [0u8; FLOW_KEY_LEN];
    k[..16].copy_from_slice(&addr16(src));
    k[16..32].copy_from_slice(&addr16(dst));
    k[32..34].copy_from_slice(&src_port.to_be_bytes());
    k[34..36].copy_from_slice(&dst_port.to_be_bytes());
    k[36] = proto;
    k
}

/// An LRU hash map flow_key -> real_pos_lru of `entries`, made with aya
/// as Katran's userspace makes one per CPU (flags 0, as the outer map's
/// inner template).
fn create_lru(entries: u32, cpu: usize) -> anyhow::Result<MapData> {
    let def = aya_obj::Map::new_from_params(
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32,
        FLOW_KEY_LEN as u32,
        REAL_POS_LRU_LEN as u32,
        entries,
        0,
    );
    MapData::create(def, &format!("katran_lru{cpu}"), None)
        .with_context(|| format!("creating Katran's LRU map for CPU {cpu}"))
}

impl Katran {
    /// Load the object at `path`, configure `vips` (vip_num in order, reals
    /// numbered from 1 in order of appearance), `gateway_mac`, and one LRU
    /// map of `lru_entries` per CPU of `cpus`. A verifier refusal is
    /// returned with the verifier's log.
    pub fn load(
        path: &std::path::Path,
        vips: &[Vip],
        gateway_mac: [u8; 6],
        lru_entries: u32,
        cpus: usize,
    ) -> anyhow::Result<Self> {
        let object = std::fs::read(path)
            .with_context(|| format!("reading Katran's object {}", path.display()))?;
        let mut ebpf = aya::Ebpf::load(&object)
            .with_context(|| format!("loading Katran's object {}", path.display()))?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("no program {PROGRAM} in {}", path.display()))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("verifying Katran's {PROGRAM}"))?;

        let mut reals: Vec<IpAddr> = Vec::new();
        {
            let mut vip_map: HashMap<_, [u8; 20], [u32; 2]> =
                HashMap::try_from(ebpf.map_mut("vip_map").context("no map vip_map")?)?;
            for (num, vip) in vips.iter().enumerate() {
                ensure!(!vip.reals.is_empty(), "a Katran VIP without reals");
                // vip_meta: flags 0 (hash on the 5-tuple, LRU on), vip_num.
                vip_map.insert(
                    vip_key(vip.address, vip.port, vip.proto),
                    [0, num as u32],
                    0,
                )?;
                for r in &vip.reals {
                    if !reals.contains(r) {
                        reals.push(*r);
                    }
                }
            }
        }
        {
            let mut map: Array<_, [u8; 20]> =
                Array::try_from(ebpf.map_mut("reals").context("no map reals")?)?;
            for (i, r) in reals.iter().enumerate() {
                let mut v = [0u8; 20];
                v[..16].copy_from_slice(&addr16(*r));
                v[16] = if r.is_ipv6() { F_IPV6 } else { 0 };
                map.set(i as u32 + 1, v, 0)?;
            }
        }
        {
            let mut ring: Array<_, u32> =
                Array::try_from(ebpf.map_mut("ch_rings").context("no map ch_rings")?)?;
            for (num, vip) in vips.iter().enumerate() {
                let ids: Vec<u32> = vip
                    .reals
                    .iter()
                    .map(|r| reals.iter().position(|x| x == r).expect("listed") as u32 + 1)
                    .collect();
                for slot in 0..RING_SIZE {
                    ring.set(
                        num as u32 * RING_SIZE + slot,
                        ids[slot as usize % ids.len()],
                        0,
                    )?;
                }
            }
        }
        {
            let mut ctl: Array<_, [u8; 8]> =
                Array::try_from(ebpf.map_mut("ctl_array").context("no map ctl_array")?)?;
            let mut v = [0u8; 8];
            v[..6].copy_from_slice(&gateway_mac);
            ctl.set(0, v, 0)?;
        }
        let mut lrus = Vec::with_capacity(cpus);
        {
            let mut outer: ArrayOfMaps<_, HashMap<MapData, [u8; 40], [u8; 16]>> =
                ArrayOfMaps::try_from(ebpf.map_mut("lru_mapping").context("no map lru_mapping")?)?;
            for cpu in 0..cpus {
                let lru = HashMap::try_from(Map::LruHashMap(create_lru(lru_entries, cpu)?))?;
                outer
                    .set(cpu as u32, &lru, 0)
                    .with_context(|| format!("lru_mapping[{cpu}]"))?;
                lrus.push(lru);
            }
        }
        Ok(Self {
            ebpf,
            lrus: RefCell::new(lrus),
        })
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM)
            .expect("loaded above")
            .try_into()
            .expect("an XDP program")
    }

    /// Attach the program to `interface` in native (driver) mode.
    pub fn attach(&mut self, interface: &str) -> anyhow::Result<aya::programs::xdp::XdpLinkId> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .expect("loaded above")
            .try_into()?;
        prog.attach(interface, aya::programs::XdpMode::Driver)
            .with_context(|| format!("attaching Katran to {interface}"))
    }

    pub fn detach(&mut self, link: aya::programs::xdp::XdpLinkId) -> anyhow::Result<()> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .expect("loaded above")
            .try_into()?;
        prog.detach(link).context("detaching Katran")
    }

    /// `stats[slot]` {v1, v2}, summed over the CPUs.
    fn stats(&self, slot: u32) -> anyhow::Result<[u64; 2]> {
        let stats: aya::maps::PerCpuArray<_, [u64; 2]> =
            aya::maps::PerCpuArray::try_from(self.ebpf.map("stats").context("no map stats")?)?;
        Ok(stats
            .get(&slot, 0)?
            .iter()
            .fold([0, 0], |a, v| [a[0] + v[0], a[1] + v[1]]))
    }

    /// Packets Katran forwarded for VIP `vip_num` (`stats[vip_num].v1`,
    /// counted just before the encapsulation and XDP_TX).
    pub fn vip_packets(&self, vip_num: u32) -> anyhow::Result<u64> {
        Ok(self.stats(vip_num)?[0])
    }

    /// Connection-table misses: packets routed by the hash ring, each
    /// filing its flow (`stats[MAX_VIPS + LRU_CNTRS].v2`).
    pub fn lru_misses(&self) -> anyhow::Result<u64> {
        Ok(self.stats(LRU_CNTRS_SLOT)?[1])
    }

    /// Delete a flow from CPU `cpu`'s LRU map; an absent flow is fine.
    pub fn forget(&self, cpu: usize, key: &[u8; FLOW_KEY_LEN]) -> anyhow::Result<()> {
        match self.lrus.borrow_mut()[cpu].remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
                Ok(())
            }
            Err(e) => Err(e).context("deleting a flow from Katran's LRU map"),
        }
    }

    /// Whether CPU `cpu`'s LRU map holds the flow.
    pub fn holds(&self, cpu: usize, key: &[u8; FLOW_KEY_LEN]) -> bool {
        self.lrus.borrow()[cpu].get(key, 0).is_ok()
    }

    /// The flows CPU `cpu`'s LRU map holds.
    pub fn flows(&self, cpu: usize) -> usize {
        self.lrus.borrow()[cpu].keys().count()
    }

    /// The largest per-CPU count of new connections in the current second
    /// (`stats[NEW_CONN_RATE_SLOT].v1`): above `MAX_CONN_RATE` Katran stops
    /// filing new flows.
    pub fn new_conn_rate(&self) -> anyhow::Result<u64> {
        let stats: aya::maps::PerCpuArray<_, [u64; 2]> =
            aya::maps::PerCpuArray::try_from(self.ebpf.map("stats").context("no map stats")?)?;
        let values = stats.get(&NEW_CONN_RATE_SLOT, 0)?;
        Ok(values.iter().map(|v| v[0]).max().unwrap_or(0))
    }

    /// The program's size as the kernel reports it: instructions verified,
    /// xlated and jited bytes.
    pub fn describe(&self) -> anyhow::Result<String> {
        let info = self.program().info().context("Katran's program info")?;
        let show = |v: Option<u32>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
        Ok(format!(
            "Katran program (id {}): {} instructions verified, {} B xlated, {} B jited",
            info.id(),
            show(info.verified_instruction_count()),
            show(info.size_translated()),
            info.size_jitted()
        ))
    }
}

/// Check Katran's answer to `input` (a frame to a VIP whose reals are
/// `reals`): XDP_TX, the gateway MAC as destination and the frame's own
/// destination MAC as source, one outer header of the real's family (IPIP
/// or IPv6-in-IPv6; an IPv6 client in IPv6, protocol 41) to one of the
/// reals, and the client's packet whole behind it. An error names what is
/// wrong.
pub fn check(
    input: &[u8],
    action: u32,
    output: &[u8],
    reals: &[IpAddr],
    gateway_mac: [u8; 6],
) -> Result<IpAddr, String> {
    if action != super::frames::XDP_TX {
        return Err(format!("action {action}, expected XDP_TX"));
    }
    if output.len() < 14 || output[..6] != gateway_mac || output[6..12] != input[..6] {
        return Err(format!(
            "Ethernet header {:02x?}: expected the gateway's MAC from the frame's destination",
            &output[..output.len().min(12)]
        ));
    }
    let inner_v6 = input[12..14] == [0x86, 0xdd];
    let inner_proto = if inner_v6 { 41 } else { 4 };
    let ip = &output[14..];
    let (overhead, proto, src, dst): (usize, u8, IpAddr, IpAddr) = match output[12..14] {
        [0x08, 0x00] if ip.len() >= 20 => (
            20,
            ip[9],
            IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).expect("4 bytes")),
            IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).expect("4 bytes")),
        ),
        [0x86, 0xdd] if ip.len() >= 40 => (
            40,
            ip[6],
            IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).expect("16 bytes")),
            IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).expect("16 bytes")),
        ),
        _ => return Err(format!("EtherType {:02x?}", &output[12..14])),
    };
    // Test traffic keeps to the test ranges, tunnel sources included: an
    // object built with Katran's own prefixes (172.16/16, 100::/64) is
    // refused here (docs/BENCHMARKS.md gives the build's -D flags).
    if !test_range(src) {
        return Err(format!(
            "outer source {src}: outside 198.18.0.0/15 and 2001:db8::/32 (build Katran \
             with -DIPIP_V4_PREFIX=4806 -DIPIP_V6_PREFIX1=0xb80d0120)"
        ));
    }
    if output.len() != input.len() + overhead {
        return Err(format!(
            "{} bytes out for {} in: expected {overhead} more",
            output.len(),
            input.len()
        ));
    }
    if proto != inner_proto {
        return Err(format!("outer protocol {proto}, expected {inner_proto}"));
    }
    if !reals.contains(&dst) {
        return Err(format!(
            "outer destination {dst}: not one of the VIP's reals"
        ));
    }
    if output[14 + overhead..] != input[14..] {
        return Err("the client's packet behind the outer header is not the one sent".into());
    }
    Ok(dst)
}

/// Whether `a` lies in the addresses test traffic may use: 198.18.0.0/15
/// or 2001:db8::/32.
fn test_range(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.octets()[0] == 198 && v4.octets()[1] & 0xfe == 18,
        IpAddr::V6(v6) => v6.segments()[..2] == [0x2001, 0x0db8],
    }
}
