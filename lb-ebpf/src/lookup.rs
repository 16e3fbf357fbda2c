//! From a parsed packet to a backend: VIP lookup (exact port, then the port-0
//! wildcard), flow hash, Maglev slot, backend entry.

use lb_common::{
    BACKEND_F_VALID, Backend, VipMeta,
    hash::flow_hash,
    stats::{DROP_NO_BACKEND, DROP_NO_CONFIG},
};

use crate::{
    maps::{XLB_BACKENDS, XLB_CONFIG, XLB_CONNS, XLB_MAGLEV_TABLES, XLB_VIPS},
    parse::Parsed,
};

/// The VIP a packet is for, if any.
#[inline(always)]
pub fn vip(p: &mut Parsed) -> Option<VipMeta> {
    // SAFETY: the controller writes VIP entries whole with one map update; we
    // copy the value out at once.
    if let Some(m) = unsafe { XLB_VIPS.get(&p.vip) } {
        return Some(*m);
    }
    p.vip.port_be = 0;
    unsafe { XLB_VIPS.get(&p.vip) }.copied()
}

/// The chosen backend, or the drop reason.
pub struct Choice {
    pub backend_id: u32,
    pub backend: Backend,
    pub iface_mac: [u8; 6],
    /// Hashed onto the Maglev table: the connection table did not know it.
    pub new_flow: bool,
}

/// The backend id and entry, if the entry may be used.
#[inline(always)]
fn usable(backend_id: u32) -> Option<(u32, Backend)> {
    let backend = *XLB_BACKENDS.get(backend_id)?;
    (backend.flags & BACKEND_F_VALID != 0).then_some((backend_id, backend))
}

/// The backend the connection table remembers for this flow. A SYN starts a
/// new connection: clients reuse source ports at once, and an old
/// connection's entry must not pin the new one.
#[inline(always)]
fn remembered(p: &Parsed) -> Option<(u32, Backend)> {
    if p.new_connection {
        return None;
    }
    // SAFETY: the value is a u32, copied out at once.
    let backend_id = *unsafe { XLB_CONNS.get(&p.flow) }?;
    usable(backend_id)
}

/// The backend the VIP's Maglev table names for this flow.
#[inline(always)]
fn from_table(p: &Parsed, meta: &VipMeta, hash_seed: u32) -> Result<(u32, Backend), u32> {
    if meta.table_size == 0 {
        return Err(DROP_NO_BACKEND);
    }
    let slot = flow_hash(&p.flow, hash_seed) % meta.table_size;
    // No inner table, a slot past its end, or a slot naming no valid backend
    // (a VIP without active backends): nowhere to send the packet.
    let backend_id = *XLB_MAGLEV_TABLES
        .get_value(meta.vip_id, &slot)
        .ok_or(DROP_NO_BACKEND)?;
    let chosen = usable(backend_id).ok_or(DROP_NO_BACKEND)?;
    // Remember the flow. A full LRU evicts its oldest entry; a failed insert
    // only means the next packet hashes again, to the same backend unless the
    // table changed in between.
    let _ = XLB_CONNS.insert(&p.flow, &backend_id, 0);
    Ok(chosen)
}

#[inline(always)]
pub fn backend(p: &Parsed, meta: &VipMeta) -> Result<Choice, u32> {
    let cfg = XLB_CONFIG.get(0).ok_or(DROP_NO_CONFIG)?;
    let ((backend_id, backend), new_flow) = match remembered(p) {
        Some(known) => (known, false),
        None => (from_table(p, meta, cfg.hash_seed)?, true),
    };
    Ok(Choice {
        backend_id,
        backend,
        iface_mac: cfg.iface_mac,
        new_flow,
    })
}
