//! The flow hash: one function for the XDP program and for the controller's
//! simulator, so both pick the same Maglev slot for a flow.
//!
//! Input words are the packet's bytes read as little-endian u32 (what a load
//! from packet memory gives on bpfel), so the value is the same on every host.
//! The mixing is MurmurHash3's (x86_32) body and finaliser: ten fixed rounds,
//! no loops for the verifier to bound, good avalanche.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn finish(mut h: u32, len: u32) -> u32 {
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// A flow as the hash sees it, and the key of the connection table.
/// Addresses are four words (IPv4: the address in word 0, zeros after);
/// `ports` is the first four bytes of the TCP/UDP header (source then
/// destination port, as on the wire) read as little-endian.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FlowWords {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub ports: u32,
    pub proto: u32,
}

const _: () = assert!(core::mem::size_of::<FlowWords>() == 40);

/// The key of the IPv4 connection table (`maps::CONNS_V4`): an IPv4 flow's
/// words without the six zero words `FlowWords` pads its addresses with.
/// The kernel hashes and compares 16 bytes instead of 40 (jhash2 of four
/// words, `memcmp` of two 8-byte words). The balancer writes it as two u64
/// (`src | dst << 32`, `ports | proto << 32`), which on bpfel and x86 are
/// these four fields in this order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FlowKey4 {
    pub src: u32,
    pub dst: u32,
    pub ports: u32,
    pub proto: u32,
}

const _: () = assert!(core::mem::size_of::<FlowKey4>() == 16);

impl FlowKey4 {
    /// `f`'s IPv4 key, if `f` has the shape of an IPv4 flow's words (each
    /// address's last three words zero). The words carry no family: an
    /// IPv6 flow between two addresses whose last 96 bits are zero has
    /// this shape too (see `maps::CONNS_V4`).
    #[inline(always)]
    pub fn of(f: &FlowWords) -> Option<Self> {
        let tail = f.src[1] | f.src[2] | f.src[3] | f.dst[1] | f.dst[2] | f.dst[3];
        (tail == 0).then_some(Self {
            src: f.src[0],
            dst: f.dst[0],
            ports: f.ports,
            proto: f.proto,
        })
    }

    /// The flow words this key stands for.
    #[inline(always)]
    pub fn words(&self) -> FlowWords {
        FlowWords {
            src: [self.src, 0, 0, 0],
            dst: [self.dst, 0, 0, 0],
            ports: self.ports,
            proto: self.proto,
        }
    }

    /// The key as the balancer stores it: two little-endian u64 words.
    #[inline(always)]
    pub fn to_u64s(&self) -> [u64; 2] {
        [
            self.src as u64 | (self.dst as u64) << 32,
            self.ports as u64 | (self.proto as u64) << 32,
        ]
    }
}

/// A connection-table entry (the value for a `FlowWords` key): the flow's
/// backend and its 5-tuple hash (`flow_hash` of the flow with the seed of
/// the moment it was filed). A tunnelled packet of a known flow takes its
/// outer source, GUE source port and IPv6 flow label from the stored hash
/// instead of hashing the flow again (~30 ns a packet, docs/BENCHMARKS.md).
/// Eight bytes take no more kernel memory than four: an LRU element's value
/// is rounded up to 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConnEntry {
    pub backend_id: u32,
    pub flow_hash: u32,
}

const _: () = assert!(core::mem::size_of::<ConnEntry>() == 8);

/// Key of the fragment tracker: one IP datagram (addresses, protocol and
/// the IP identification; 16 bits for IPv4, 32 for IPv6).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FragKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub id: u32,
    pub proto: u32,
}

const _: () = assert!(core::mem::size_of::<FragKey>() == 40);

/// What the Maglev hash sees of a flow under a VIP's hash mode
/// (`types::HASH_*`): the 5-tuple, the source address only, or no ports.
#[inline(always)]
pub fn hash_input(f: &FlowWords, mode: u8) -> FlowWords {
    let mut h = *f;
    if mode == crate::HASH_SOURCE {
        h.dst = [0; 4];
        h.ports = 0;
        h.proto = 0;
    } else if mode == crate::HASH_NO_PORTS {
        h.ports = 0;
    }
    h
}

/// Hash a flow with the fleet-wide seed.
#[inline(always)]
pub fn flow_hash(f: &FlowWords, seed: u32) -> u32 {
    let mut h = seed;
    h = mix(h, f.src[0]);
    h = mix(h, f.src[1]);
    h = mix(h, f.src[2]);
    h = mix(h, f.src[3]);
    h = mix(h, f.dst[0]);
    h = mix(h, f.dst[1]);
    h = mix(h, f.dst[2]);
    h = mix(h, f.dst[3]);
    h = mix(h, f.ports);
    h = mix(h, f.proto);
    finish(h, 40)
}

/// Words of an address given as bytes (4 or 16 of them).
pub fn addr_words(addr: &[u8]) -> [u32; 4] {
    let mut w = [0u32; 4];
    let mut i = 0;
    while i < 4 && i * 4 + 4 <= addr.len() {
        w[i] = u32::from_le_bytes([
            addr[i * 4],
            addr[i * 4 + 1],
            addr[i * 4 + 2],
            addr[i * 4 + 3],
        ]);
        i += 1;
    }
    w
}

/// The `ports` word for source and destination ports given in host order.
pub fn ports_word(src_port: u16, dst_port: u16) -> u32 {
    let s = src_port.to_be_bytes();
    let d = dst_port.to_be_bytes();
    u32::from_le_bytes([s[0], s[1], d[0], d[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_and_each_field_change_the_hash() {
        let f = FlowWords {
            src: addr_words(&[198, 18, 0, 1]),
            dst: addr_words(&[198, 18, 0, 100]),
            ports: ports_word(40000, 80),
            proto: 6,
        };
        let h = flow_hash(&f, 1);
        assert_ne!(h, flow_hash(&f, 2));
        assert_ne!(
            h,
            flow_hash(
                &FlowWords {
                    ports: ports_word(40001, 80),
                    ..f
                },
                1
            )
        );
        assert_ne!(h, flow_hash(&FlowWords { proto: 17, ..f }, 1));
        assert_ne!(
            h,
            flow_hash(
                &FlowWords {
                    src: addr_words(&[198, 18, 0, 2]),
                    ..f
                },
                1
            )
        );
    }

    #[test]
    fn an_ipv4_key_is_its_flow_words_both_ways_and_in_u64_words() {
        let f = FlowWords {
            src: addr_words(&[198, 18, 0, 1]),
            dst: addr_words(&[198, 18, 0, 100]),
            ports: ports_word(40000, 80),
            proto: 6,
        };
        let k = FlowKey4::of(&f).expect("an IPv4 flow's words");
        assert_eq!(k.words(), f);
        let u = k.to_u64s();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&u[0].to_le_bytes());
        bytes[8..].copy_from_slice(&u[1].to_le_bytes());
        assert_eq!(&bytes, bytemuck::bytes_of(&k));
        let v6 = FlowWords {
            src: addr_words(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            ..f
        };
        assert_eq!(FlowKey4::of(&v6), None);
    }

    #[test]
    fn ports_word_is_the_wire_bytes() {
        // 0x1234 -> 0x0050 on the wire: 12 34 00 50
        assert_eq!(
            ports_word(0x1234, 80),
            u32::from_le_bytes([0x12, 0x34, 0x00, 0x50])
        );
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type is #[repr(C)], Pod (bytemuck-checked), with no padding holes.
    unsafe impl aya::Pod for super::FlowWords {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragKey {}
}
