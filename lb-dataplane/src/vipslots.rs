//! XLB_VIP_SLOTS (`lb_common::vipslot`): which VIP owns each slot, and the
//! slots written in the order the program relies on. The VIP hash map stays
//! the truth; a slot is a copy the program tries first.
//!
//! A change of the slots is two steps around the VIP entries' writes:
//! `clear_stale` (before them) empties every slot whose content is not the
//! target's, tail word first, so packets of those keys take the hash map
//! while it changes; `fill` (after them, and after removed entries are gone)
//! writes the target's slots, tail word last. A slot that held something
//! before is refilled only after `RETIRE_GRACE`: a program run that matched
//! its old tail before the clear may still be reading its old entry.
//!
//! The slots' sole bits (XLB_VIP_SOLE, `vipslot::SOLE_WORDS`) follow the
//! same two steps: `clear_stale` clears every bit the target does not set
//! and the bit of every slot it empties, before the slot's tail and before
//! the VIP entries change; `fill` sets the target's bits after the slots
//! are written and the removed entries are gone. A set bit so never hides
//! a VIP entry: the program reads it after the slot's tail, and only when
//! the key missed the slot.

use std::collections::BTreeMap;
use std::sync::atomic::{Ordering, fence};

use aya::{Ebpf, maps::MapData};
use lb_common::{
    VipKey, VipMeta, maps,
    vipslot::{EMPTY_TAIL, SOLE_WORDS, VIP_SLOTS, VipSlot, key_words, slot, slot_index, sole_bit},
};

use crate::error::{DataplaneError, io_err};
use crate::mmap::MappedArray;

/// Which slot each VIP entry takes: where keys fall on one slot, the
/// smallest key (its 20 bytes in order) owns it; the others are found in
/// the hash map only.
pub fn owners<'a>(
    entries: impl IntoIterator<Item = (&'a VipKey, &'a VipMeta)>,
) -> BTreeMap<u32, VipSlot> {
    let mut owner: BTreeMap<u32, (&VipKey, &VipMeta)> = BTreeMap::new();
    for (key, meta) in entries {
        let i = slot_index(&key_words(key));
        let smaller = owner
            .get(&i)
            .is_none_or(|(k, _)| bytemuck::bytes_of(key) < bytemuck::bytes_of(*k));
        if smaller {
            owner.insert(i, (key, meta));
        }
    }
    owner
        .into_iter()
        .map(|(i, (k, m))| (i, slot(k, m)))
        .collect()
}

/// The sole bits of a set of VIP entries whose slots are `target`
/// (`owners` of them): slot i's bit is set when every key of `keys` that
/// falls on slot i is the key `target` puts there (or none falls there),
/// so a key that misses slot i is in no entry.
pub fn sole_words<'a>(
    target: &BTreeMap<u32, VipSlot>,
    keys: impl IntoIterator<Item = &'a VipKey>,
) -> Vec<u64> {
    let mut words = vec![u64::MAX; SOLE_WORDS as usize];
    for key in keys {
        let w = key_words(key);
        let i = slot_index(&w);
        let held = target
            .get(&i)
            .is_some_and(|s| s.addr == [w[0], w[1], w[2], w[3]] && s.tail == w[4]);
        if !held {
            let (word, bit) = sole_bit(i);
            words[word as usize] &= !bit;
        }
    }
    words
}

/// The VIP slots of a loaded balancer, mapped into memory.
pub(crate) struct VipSlots {
    mem: MappedArray<VipSlot>,
    _map: MapData,
    /// The sole bits, if the object has them.
    sole: Option<(MappedArray<u64>, MapData)>,
    /// What the last `fill` made the slots hold (empty before any): what
    /// the drift check compares each VIP's slot with.
    written: BTreeMap<u32, VipSlot>,
}

/// The slots `clear_stale` left for `fill`.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    target: BTreeMap<u32, VipSlot>,
    /// The sole bits to set once the slots are filled (`sole_words`);
    /// empty: none.
    sole: Vec<u64>,
    fill: Vec<u32>,
    /// A slot to fill held something before this change.
    grace: bool,
}

impl VipSlots {
    /// The object's XLB_VIP_SLOTS; None for an object built before it (a
    /// compared or rolled-back object: its program reads only the hash map).
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<Option<Self>, DataplaneError> {
        if ebpf.map(maps::VIP_SLOTS).is_none() {
            return Ok(None);
        }
        let map = crate::objects::take_array(ebpf, maps::VIP_SLOTS)?;
        let mem =
            MappedArray::new(map.fd(), VIP_SLOTS as usize).map_err(io_err(maps::VIP_SLOTS))?;
        let sole = match ebpf.map(maps::VIP_SOLE) {
            None => None,
            Some(_) => {
                let bits = crate::objects::take_array(ebpf, maps::VIP_SOLE)?;
                let mem = MappedArray::new(bits.fd(), SOLE_WORDS as usize)
                    .map_err(io_err(maps::VIP_SOLE))?;
                Some((mem, bits))
            }
        };
        Ok(Some(Self {
            mem,
            _map: map,
            sole,
            written: BTreeMap::new(),
        }))
    }

    /// Whether slot `i` holds `want` (None: empty).
    fn holds(&self, i: u32, want: Option<&VipSlot>) -> bool {
        let now = self.mem.get(i as usize);
        match want {
            None => now.tail == EMPTY_TAIL,
            Some(w) => now == *w,
        }
    }

    /// Empty every slot (a start over pins: the slots may be stale, left
    /// by an xlb that ran on these pins without them). Always safe: an
    /// empty slot sends its key to the hash map.
    pub(crate) fn clear_all(&self) {
        if let Some((bits, _)) = &self.sole {
            for w in 0..SOLE_WORDS as usize {
                bits.set(w, 0);
            }
            fence(Ordering::SeqCst);
        }
        for i in 0..VIP_SLOTS as usize {
            let p = self.mem.slot_ptr(i);
            // SAFETY: `slot_ptr` checked the index; a volatile store of the
            // tail word alone, which the program reads first.
            unsafe { core::ptr::addr_of_mut!((*p).tail).write_volatile(EMPTY_TAIL) };
        }
        fence(Ordering::SeqCst);
    }

    /// Whether slot `i` no longer holds what the last `fill` wrote there.
    pub(crate) fn drifted(&self, i: u32) -> bool {
        !self.holds(i, self.written.get(&i))
    }

    /// The slots that do not hold what `target` says (drift).
    pub(crate) fn differing(&self, target: &BTreeMap<u32, VipSlot>) -> Vec<u32> {
        (0..VIP_SLOTS)
            .filter(|i| !self.holds(*i, target.get(i)))
            .collect()
    }

    /// Empty every slot that does not hold what `target` says, and clear
    /// every sole bit `sole` (the target's, `sole_words`; empty: none) does
    /// not set and that of every slot emptied, first; what is left to
    /// write goes to `fill`.
    pub(crate) fn clear_stale(&self, target: BTreeMap<u32, VipSlot>, sole: Vec<u64>) -> Pending {
        let mut pending = Pending::default();
        let differing = self.differing(&target);
        if let Some((bits, _)) = &self.sole {
            let mut keep = sole.clone();
            keep.resize(SOLE_WORDS as usize, 0);
            for &i in &differing {
                let (word, bit) = sole_bit(i);
                keep[word as usize] &= !bit;
            }
            for (w, keep) in keep.iter().enumerate() {
                let now = bits.get(w);
                if now & keep != now {
                    bits.set(w, now & keep);
                }
            }
            fence(Ordering::SeqCst);
        }
        for i in differing {
            let p = self.mem.slot_ptr(i as usize);
            // SAFETY: `slot_ptr` checked the index; the mapping is shared
            // memory the program reads concurrently, written volatile.
            let held = unsafe { core::ptr::addr_of!((*p).tail).read_volatile() } != EMPTY_TAIL;
            if held {
                // SAFETY: as above.
                unsafe { core::ptr::addr_of_mut!((*p).tail).write_volatile(EMPTY_TAIL) };
            }
            if target.contains_key(&i) {
                pending.fill.push(i);
                pending.grace |= held;
            }
        }
        fence(Ordering::SeqCst);
        pending.target = target;
        pending.sole = sole;
        pending
    }

    /// Write what `clear_stale` left: after `grace` (the writer's
    /// `RETIRE_GRACE`) when a slot held something before, each slot's tail
    /// word last.
    pub(crate) fn fill(&mut self, pending: Pending, grace: std::time::Duration) {
        if pending.grace {
            std::thread::sleep(grace);
        }
        for i in pending.fill {
            let want = pending.target[&i];
            let p = self.mem.slot_ptr(i as usize);
            // SAFETY: `slot_ptr` checked the index; the slot's tail is empty
            // (cleared or never written), so no program run matches it while
            // the other words change; the tail goes last, after a fence.
            unsafe {
                core::ptr::addr_of_mut!((*p).addr).write_volatile(want.addr);
                core::ptr::addr_of_mut!((*p)._pad).write_volatile(0);
                core::ptr::addr_of_mut!((*p).meta).write_volatile(want.meta);
                fence(Ordering::Release);
                core::ptr::addr_of_mut!((*p).tail).write_volatile(want.tail);
            }
        }
        if let Some((bits, _)) = &self.sole
            && !pending.sole.is_empty()
        {
            // After every tail above, and after the removed entries went
            // (the caller's order).
            fence(Ordering::SeqCst);
            for (w, &want) in pending.sole.iter().enumerate() {
                if bits.get(w) != want {
                    bits.set(w, want);
                }
            }
        }
        self.written = pending.target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{FAMILY_V4, PROTO_TCP};

    fn key(last: u8, port: u16) -> VipKey {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&[198, 18, 0, last]);
        VipKey {
            addr,
            port_be: port.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
        }
    }

    fn meta(id: u32) -> VipMeta {
        VipMeta {
            vip_id: id,
            table_size: 13,
            method: 0,
            hash: 0,
            flags: 0,
            _pad: [0; 5],
        }
    }

    /// Two keys on one slot, found by search (the index is fixed).
    fn colliding() -> (VipKey, VipKey) {
        let mut seen = BTreeMap::new();
        for port in 1..=u16::MAX {
            let k = key(10, port);
            if let Some(other) = seen.insert(slot_index(&key_words(&k)), k) {
                return (other, k);
            }
        }
        unreachable!("65,535 keys on 8,192 slots collide");
    }

    #[test]
    fn of_colliding_keys_the_smallest_owns_the_slot_whatever_the_order() {
        let (a, b) = colliding();
        let (small, large) = if bytemuck::bytes_of(&a) < bytemuck::bytes_of(&b) {
            (a, b)
        } else {
            (b, a)
        };
        let (ms, ml) = (meta(1), meta(2));
        let i = slot_index(&key_words(&small));
        for order in [
            [(&small, &ms), (&large, &ml)],
            [(&large, &ml), (&small, &ms)],
        ] {
            let o = owners(order);
            assert_eq!(o.len(), 1, "one slot for two colliding keys");
            assert_eq!(o[&i], slot(&small, &ms));
        }
    }

    #[test]
    fn a_sole_bit_is_set_only_where_every_key_is_its_slots() {
        let (a, b) = colliding();
        let alone = key(30, 80);
        let mut echo = key(30, 0);
        echo.proto = lb_common::PROTO_ICMP;
        let (ma, mb, mc) = (meta(1), meta(2), meta(3));
        let target = owners([(&a, &ma), (&b, &mb), (&alone, &mc)]);
        let bits = sole_words(&target, [&a, &b, &alone, &echo]);
        let set = |k: &VipKey| {
            let (word, bit) = sole_bit(slot_index(&key_words(k)));
            bits[word as usize] & bit != 0
        };
        assert!(
            !set(&a) && !set(&b),
            "a colliding key lives in the hash map"
        );
        assert!(!set(&echo), "an address entry never takes a slot");
        assert!(set(&alone), "a key alone on its slot");
        let used = [&a, &alone, &echo].map(|k| slot_index(&key_words(k)));
        let empty = (0..VIP_SLOTS)
            .find(|i| !used.contains(i))
            .expect("a free slot");
        let (word, bit) = sole_bit(empty);
        assert_ne!(
            bits[word as usize] & bit,
            0,
            "no key falls on an empty slot"
        );
        assert_eq!(bits.len(), SOLE_WORDS as usize);
    }

    #[test]
    fn each_key_of_its_own_slot_owns_it_with_its_entry() {
        let keys: Vec<VipKey> = (1..=20).map(|p| key(20, p * 1000)).collect();
        let metas: Vec<VipMeta> = (0..20).map(meta).collect();
        let o = owners(keys.iter().zip(&metas));
        for (k, m) in keys.iter().zip(&metas) {
            let i = slot_index(&key_words(k));
            if o[&i] == slot(k, m) {
                continue;
            }
            // Only a collision may take a key's slot.
            assert!(
                keys.iter()
                    .any(|x| x != k && slot_index(&key_words(x)) == i)
            );
        }
        assert!(owners(std::iter::empty()).is_empty());
    }
}
