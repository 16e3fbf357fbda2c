//! From a parsed packet to a backend: VIP lookup (exact port, then the port-0
//! wildcard), connection table, flow hash, Maglev slot, backend entry.

use lb_common::{
    BACKEND_F_VALID, Backend, FAMILY_V4, GlobalConfig, HASH_FIVE_TUPLE, VipKey, VipMeta,
    hash::{ConnEntry, FlowKey4, flow_hash, hash_input},
    stats::{EV_CONN_HIT, EV_CONN_MISS, EV_CONN_RESTEER},
    vipslot::{slot_index, sole_bit, tail_word},
};

use crate::{
    events::count_event,
    flowcache,
    maps::{
        XLB_BACKENDS, XLB_CONNS, XLB_CONNS_V4, XLB_MAGLEV_TABLES, XLB_VIP_SLOTS, XLB_VIP_SOLE,
        XLB_VIPS,
    },
    scratch::{KIND_ICMP_ERROR, Parsed},
};

/// The VIP a packet is for, if any. The port-0 (every port) entry is tried
/// only when some VIP has one (`wildcard`).
#[inline(always)]
pub fn vip(p: &mut Parsed, wildcard: bool) -> Option<VipMeta> {
    if let Some(m) = find(&p.vip) {
        return Some(m);
    }
    if !wildcard || p.vip.port_be == 0 {
        return None;
    }
    p.vip.port_be = 0;
    find(&p.vip)
}

/// `key`'s entry: from its slot when the slot holds this key, else from
/// the hash map (the truth; colliding VIPs and address entries live only
/// there), unless the slot's sole bit says no key of that slot lives only
/// there: then it is for no VIP (a frame for no VIP, most of a host's
/// traffic, pays no hash-map lookup). `key` is the per-CPU scratch's:
/// passed by reference, it is not copied to the 512-byte stack.
#[inline(always)]
fn find(key: &VipKey) -> Option<VipMeta> {
    let k = key as *const VipKey as *const u32;
    // SAFETY: the key is `Parsed::vip`, at offset 0 of the per-CPU scratch
    // (8-aligned map memory; asserted in scratch.rs), so four aligned u32
    // loads read its address (stored as u32 and u64 words, which such loads
    // forward from).
    let a = unsafe { [*k, *k.add(1), *k.add(2), *k.add(3)] };
    // The last word from its fields, each loaded as it was stored: one u32
    // load of three narrower stores would wait for them to reach the cache.
    let w = [
        a[0],
        a[1],
        a[2],
        a[3],
        tail_word(key.port_be, key.proto, key.family),
    ];
    let i = slot_index(&w);
    if let Some(m) = slot(i, &w) {
        return Some(m);
    }
    if sole(i) {
        return None;
    }
    // SAFETY: `get` is unsafe because userspace may rewrite or delete the
    // entry while the reference lives; the value is copied out at once, and
    // the controller writes VIP entries whole with one map update.
    unsafe { XLB_VIPS.get(key) }.copied()
}

/// Slot `i`'s entry, if the slot holds exactly the key of words `w`.
#[inline(always)]
fn slot(i: u32, w: &[u32; 5]) -> Option<VipMeta> {
    let s = XLB_VIP_SLOTS.get_ptr(i)?;
    // SAFETY: get_ptr checked the index; array values are never freed.
    // Volatile, in this order: the controller writes the tail word last
    // when it fills a slot and first when it clears one (x86 keeps stores
    // and loads in order), so a matching tail read first means the address
    // words and entry read after it are the ones written with it. The
    // entry lies at offset 24 of an 8-aligned map value (u64 loads are
    // aligned), and VipMeta is 16 bytes of plain integers (lb_common::Pod):
    // every bit pattern is a value.
    unsafe {
        if core::ptr::addr_of!((*s).tail).read_volatile() != w[4] {
            return None;
        }
        let a = core::ptr::addr_of!((*s).addr).read_volatile();
        if a[0] != w[0] || a[1] != w[1] || a[2] != w[2] || a[3] != w[3] {
            return None;
        }
        // The entry as two u64 loads: a volatile read of the struct loads
        // each field apart (ten loads, the padding's bytes among them).
        let m = core::ptr::addr_of!((*s).meta).cast::<u64>();
        let words = [m.read_volatile(), m.add(1).read_volatile()];
        Some(core::mem::transmute::<[u64; 2], VipMeta>(words))
    }
}

/// Whether slot `i`'s sole bit is set: read after the slot's tail word
/// (volatile, in that order), as the controller clears the bit before it
/// changes the tail and sets it after.
#[inline(always)]
fn sole(i: u32) -> bool {
    let (word, bit) = sole_bit(i);
    XLB_VIP_SOLE
        .get_ptr(word)
        // SAFETY: get_ptr checked the index; array values are never freed.
        .is_some_and(|p| unsafe { p.read_volatile() } & bit != 0)
}

/// The backend entry of `backend_id` if it may carry this VIP's packets:
/// valid, and still this VIP's (an id the connection table remembers may
/// have been retired since).
#[inline(always)]
fn usable(backend_id: u32, vip_id: u32) -> Option<*const Backend> {
    let b = XLB_BACKENDS.get_ptr(backend_id)?;
    // SAFETY: get_ptr checked the index; an array map's values are never
    // freed while a program runs, and `Backend` is a #[repr(C)] map value
    // aligned by the kernel.
    let ok = unsafe { (*b).flags & BACKEND_F_VALID != 0 && (*b).vip_id == vip_id };
    ok.then_some(b)
}

/// An IPv4 flow's connection-table key (`FlowKey4`) as two u64 words, to
/// be built on the stack: stored as 8-byte words, the kernel's `memcmp`
/// (8 bytes a load) and jhash2 (4 bytes a load) both read from single
/// stores, which the CPU forwards to the loads.
#[inline(always)]
fn key4(p: &Parsed) -> [u64; 2] {
    FlowKey4 {
        src: p.flow.src[0],
        dst: p.flow.dst[0],
        ports: p.flow.ports,
        proto: p.flow.proto,
    }
    .to_u64s()
}

/// `key4`'s words as the map's key type.
#[inline(always)]
fn as_key4(k: &[u64; 2]) -> &FlowKey4 {
    // SAFETY: FlowKey4 is four u32 (#[repr(C)], 16 bytes, align 4) and the
    // two u64 hold them in this order on a little-endian target (asserted
    // by lb_common's `FlowKey4::to_u64s` test); [u64; 2] is 8-aligned.
    unsafe { &*(k.as_ptr() as *const FlowKey4) }
}

/// The flow's connection-table entry, from its family's table (an IPv4
/// flow's by its `key4` words `k4`). The 8 bytes are copied out at once.
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys live in the per-CPU scratch; passed by value they would be copied to the 512-byte stack"
)]
#[inline(always)]
fn lru(p: &Parsed, k4: &[u64; 2]) -> Option<ConnEntry> {
    // SAFETY: `get` is unsafe because the entry may be changed or evicted
    // while the reference lives; the value is copied out at once. An
    // element an LRU reuses for another flow under us gives at worst that
    // flow's id, which `usable` checks against the VIP, and its hash,
    // which only picks outer header bits.
    unsafe {
        if p.family == FAMILY_V4 {
            XLB_CONNS_V4.get(as_key4(k4)).copied()
        } else {
            XLB_CONNS.get(&p.flow).copied()
        }
    }
}

/// The flow's entry in its family's connection table (the LRU, not this
/// CPU's flow cache): what `xlb trace` reports as the flow's entry.
#[inline(always)]
pub fn known(p: &Parsed) -> Option<ConnEntry> {
    lru(p, &key4(p))
}

/// The chosen backend: its id and entry, whether the flow was hashed (a
/// new flow for the counters), and the flow's 5-tuple hash.
pub struct Choice {
    pub backend_id: u32,
    pub backend: *const Backend,
    pub new_flow: bool,
    /// `flow_hash` of the 5-tuple: the tunnel's outer source, GUE port and
    /// flow label. A known flow's comes from its connection-table entry (no
    /// hashing on a hit); a new flow's is the Maglev hash when the VIP
    /// hashes the 5-tuple, else computed apart.
    pub tuple_hash: u32,
}

/// Where this packet goes, or None if its VIP has nowhere to send it.
///
/// A TCP SYN starts a new connection: clients reuse source ports at once,
/// and an old connection's entry must not pin the new one. An ICMP error is
/// steered where its flow goes but never creates an entry.
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys live in the per-CPU scratch; passed by value they would be copied to the 512-byte stack"
)]
#[inline(always)]
pub fn backend(p: &Parsed, meta: &VipMeta, cfg: &GlobalConfig) -> Option<Choice> {
    let mut event = EV_CONN_MISS;
    let k4 = key4(p);
    // This CPU's flow-cache slot of the flow (crate::flowcache), in front
    // of the LRU; written with what the LRU holds or is given here.
    let at = if p.family == FAMILY_V4 {
        flowcache::at4(&k4)
    } else {
        flowcache::at6(p)
    };
    let stamp = flowcache::stamp();
    if p.new_connection == 0 {
        let mut entry = flowcache::get(&at, p, &k4, stamp);
        if entry.is_none() {
            entry = lru(p, &k4);
            if let Some(e) = &entry {
                flowcache::put(&at, p, &k4, e, stamp);
            }
        }
        if let Some(entry) = entry {
            if let Some(backend) = usable(entry.backend_id, meta.vip_id) {
                count_event(EV_CONN_HIT);
                return Some(Choice {
                    backend_id: entry.backend_id,
                    backend,
                    new_flow: false,
                    tuple_hash: entry.flow_hash,
                });
            }
            event = EV_CONN_RESTEER;
        }
    }
    count_event(event);
    if meta.table_size == 0 {
        return None;
    }
    let hash = flow_hash(&hash_input(&p.flow, meta.hash), cfg.hash_seed);
    let slot = hash % meta.table_size;
    // No inner table, a slot past its end, or a slot naming no valid backend
    // (a VIP without active backends): nowhere to send the packet.
    let backend_id = *XLB_MAGLEV_TABLES.get_value(meta.vip_id, &slot)?;
    let backend = usable(backend_id, meta.vip_id)?;
    let tuple_hash = if meta.hash == HASH_FIVE_TUPLE {
        hash
    } else {
        flow_hash(&p.flow, cfg.hash_seed)
    };
    if p.kind != KIND_ICMP_ERROR {
        // A full LRU evicts its oldest entry; a failed insert only means the
        // next packet hashes again, to the same backend unless the table
        // changed in between. This CPU's slot follows the LRU at once: the
        // entry filed, or none.
        let entry = ConnEntry {
            backend_id,
            flow_hash: tuple_hash,
        };
        let filed = if p.family == FAMILY_V4 {
            XLB_CONNS_V4.insert(as_key4(&k4), &entry, 0)
        } else {
            XLB_CONNS.insert(&p.flow, &entry, 0)
        };
        if filed.is_ok() {
            flowcache::put(&at, p, &k4, &entry, stamp);
        } else {
            flowcache::clear(&at, stamp);
        }
    }
    Some(Choice {
        backend_id,
        backend,
        new_flow: true,
        tuple_hash,
    })
}
