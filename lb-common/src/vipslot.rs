//! The VIP slots: a direct-mapped array in front of the VIP hash map, so a
//! packet for a VIP finds its `VipMeta` with a multiply and one array load
//! instead of the hash map's jhash2 of the 20-byte key and bucket walk
//! (~45 ns a packet when every packet is another flow, docs/BENCHMARKS.md).
//!
//! The hash map (`XLB_VIPS`) stays the truth: a slot holds a copy of one
//! VIP's key and entry, written by the controller after the VIP's table and
//! entry, cleared before the entry goes. A packet whose key is not the one in
//! its slot (an empty slot, another VIP's, an ICMP address entry, which never
//! takes a slot) looks the hash map up as before. Where several VIPs' keys
//! fall on one slot, the smallest key (its 20 bytes compared in order) owns
//! it and the others take the hash map (docs/DATAPLANE.md).

use bytemuck::{Pod, Zeroable};

use crate::{VipKey, VipMeta};

/// Slots of `XLB_VIP_SLOTS`: a power of two, eight per declared VIP
/// (`maps::MAX_VIPS`), so 1,024 VIPs leave about 6% of them to the hash map.
pub const VIP_SLOTS: u32 = 8192;
const _: () = assert!(VIP_SLOTS.is_power_of_two());

/// One slot. `tail`'s top byte is the key's family: 0 marks an empty slot
/// (a parsed packet's family is 4 or 6), so the controller writes `tail`
/// last when it fills a slot and first when it clears one, and a program
/// that read a matching `tail` before the other words reads a whole entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct VipSlot {
    /// The key's address words (`VipKey::addr` read as four native u32).
    pub addr: [u32; 4],
    /// The key's last word (`tail_word`): port, protocol, family.
    pub tail: u32,
    pub _pad: u32,
    pub meta: VipMeta,
}
const _: () = assert!(size_of::<VipSlot>() == 40);

/// A VIP key as five words, the slot's form: the address as four native
/// u32 (the program loads the parsed key's address in place), then
/// `tail_word`.
#[inline(always)]
pub fn key_words(key: &VipKey) -> [u32; 5] {
    let a: [u32; 4] = bytemuck::cast(key.addr);
    [
        a[0],
        a[1],
        a[2],
        a[3],
        tail_word(key.port_be, key.proto, key.family),
    ]
}

/// A key's last word: port (network order) in the low half, protocol, then
/// the family in the top byte (never 0 in a key: 0 marks an empty slot).
#[inline(always)]
pub fn tail_word(port_be: u16, proto: u8, family: u8) -> u32 {
    u32::from(port_be) | u32::from(proto) << 16 | u32::from(family) << 24
}

/// The slot a key's words fall on: the address words folded (rotated, so
/// equal words in two places do not cancel) and mixed, the last word added
/// and mixed again (MurmurHash3's finaliser: the shifts carry the high bits,
/// where consecutive IPv4 addresses differ, down to the index). Both sides
/// call this one function.
#[inline(always)]
pub fn slot_index(w: &[u32; 5]) -> u32 {
    let a = w[0] ^ w[1].rotate_left(8) ^ w[2].rotate_left(16) ^ w[3].rotate_left(24);
    fmix(fmix(a) ^ w[4]) & (VIP_SLOTS - 1)
}

#[inline(always)]
fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The slot holding `key` and `meta`.
pub fn slot(key: &VipKey, meta: &VipMeta) -> VipSlot {
    let w = key_words(key);
    VipSlot {
        addr: [w[0], w[1], w[2], w[3]],
        tail: w[4],
        _pad: 0,
        meta: *meta,
    }
}

/// The tail word of an empty slot, and of a cleared one.
pub const EMPTY_TAIL: u32 = 0;

/// Words (u64) of the slots' "sole" bits (`maps::VIP_SOLE`), one bit a
/// slot. Slot `i`'s bit set says: every VIP entry whose key falls on slot
/// `i` is the one the slot holds. A packet whose key misses a slot whose
/// bit is set is then for no VIP, and the program does not look the hash
/// map up (a frame for no VIP paid that lookup: jhash2 of its 20-byte key
/// and a bucket read, docs/BENCHMARKS.md, twelfth round). The controller
/// clears a slot's bit before the slot's tail word and before any key that
/// falls on it enters the hash map without the slot, and sets it after the
/// slot is filled and such keys are gone; all bits clear is always safe.
pub const SOLE_WORDS: u32 = VIP_SLOTS / 64;

/// Slot `i`'s sole bit: its word's index and its mask in that word.
#[inline(always)]
pub fn sole_bit(i: u32) -> (u32, u64) {
    (i / 64, 1u64 << (i % 64))
}

#[cfg(feature = "user")]
// SAFETY: bytemuck::Pod is derived for it (checked #[repr(C)], no padding holes).
unsafe impl aya::Pod for VipSlot {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

    fn v4(a: [u8; 4], port: u16, proto: u8) -> VipKey {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&a);
        VipKey {
            addr,
            port_be: port.to_be(),
            proto,
            family: FAMILY_V4,
        }
    }

    fn v6(last: u16, port: u16) -> VipKey {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        addr[14..].copy_from_slice(&last.to_be_bytes());
        VipKey {
            addr,
            port_be: port.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V6,
        }
    }

    /// Keys that share a slot with an earlier key (they take the hash map).
    fn fallbacks(keys: &[VipKey]) -> usize {
        let mut taken = [false; VIP_SLOTS as usize];
        keys.iter()
            .filter(|k| {
                let i = slot_index(&key_words(k)) as usize;
                core::mem::replace(&mut taken[i], true)
            })
            .count()
    }

    // 1,024 keys thrown at 8,192 slots at random leave ~61 (6%) to the hash
    // map; the sets operators declare must do no worse than twice that.
    const BOUND: usize = 128;

    #[test]
    fn declared_shapes_of_1024_vips_mostly_get_a_slot_of_their_own() {
        let mut shapes: [(&str, [VipKey; 1024]); 4] = [
            (
                "1,024 consecutive IPv4 addresses, port 80",
                [VipKey::zeroed(); 1024],
            ),
            ("one address, 1,024 TCP ports", [VipKey::zeroed(); 1024]),
            (
                "512 addresses x TCP 80 and UDP 443",
                [VipKey::zeroed(); 1024],
            ),
            (
                "1,024 consecutive IPv6 addresses, port 80",
                [VipKey::zeroed(); 1024],
            ),
        ];
        for i in 0..1024u16 {
            let [hi, lo] = i.to_be_bytes();
            shapes[0].1[i as usize] = v4([198, 18, hi, lo], 80, PROTO_TCP);
            shapes[1].1[i as usize] = v4([198, 18, 0, 10], 1000 + i, PROTO_TCP);
            let [hi2, lo2] = (i / 2).to_be_bytes();
            shapes[2].1[i as usize] = if i % 2 == 0 {
                v4([198, 19, hi2, lo2], 80, PROTO_TCP)
            } else {
                v4([198, 19, hi2, lo2], 443, PROTO_UDP)
            };
            shapes[3].1[i as usize] = v6(i, 80);
        }
        for (what, keys) in &shapes {
            let n = fallbacks(keys);
            assert!(
                n <= BOUND,
                "{what}: {n} of 1,024 keys share a slot (bound {BOUND})"
            );
        }
    }

    #[test]
    fn a_slot_holds_the_key_words_and_the_tail_carries_the_family() {
        let key = v4([198, 18, 0, 10], 80, PROTO_TCP);
        let meta = VipMeta {
            vip_id: 7,
            table_size: 13,
            ..VipMeta::zeroed()
        };
        let s = slot(&key, &meta);
        let w = key_words(&key);
        assert_eq!(
            (s.addr, s.tail, s.meta),
            ([w[0], w[1], w[2], w[3]], w[4], meta)
        );
        assert_eq!(
            s.tail >> 24,
            FAMILY_V4 as u32,
            "family is the tail's top byte"
        );
        assert_ne!(s.tail, EMPTY_TAIL);
        assert!(slot_index(&w) < VIP_SLOTS);
    }

    #[test]
    fn every_slot_has_one_sole_bit_of_its_own() {
        let mut seen = [0u64; SOLE_WORDS as usize];
        for i in 0..VIP_SLOTS {
            let (word, bit) = sole_bit(i);
            assert!(word < SOLE_WORDS);
            assert_eq!(bit.count_ones(), 1);
            assert_eq!(seen[word as usize] & bit, 0, "slot {i} shares its bit");
            seen[word as usize] |= bit;
        }
        assert!(seen.iter().all(|w| *w == u64::MAX));
    }
}
