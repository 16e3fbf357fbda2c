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
}

#[inline(always)]
pub fn backend(p: &Parsed, meta: &VipMeta) -> Result<Choice, u32> {
    let cfg = XLB_CONFIG.get(0).ok_or(DROP_NO_CONFIG)?;
    // A known flow stays on its backend while that backend's entry is valid.
    // A SYN starts a new connection: clients reuse source ports at once, and
    // the old connection's entry must not pin the new one.
    // SAFETY: the value is a u32 copied out at once.
    if let Some(&backend_id) = if p.new_connection {
        None
    } else {
        unsafe { XLB_CONNS.get(&p.flow) }
    } {
        if let Some(backend) = XLB_BACKENDS.get(backend_id) {
            if backend.flags & BACKEND_F_VALID != 0 {
                return Ok(Choice {
                    backend_id,
                    backend: *backend,
                    iface_mac: cfg.iface_mac,
                });
            }
        }
    }
    if meta.table_size == 0 {
        return Err(DROP_NO_BACKEND);
    }
    let slot = flow_hash(&p.flow, cfg.hash_seed) % meta.table_size;
    // No inner table (a VIP without active backends) or a slot past its end:
    // nowhere to send the packet.
    let backend_id = *XLB_MAGLEV_TABLES
        .get_value(meta.vip_id, &slot)
        .ok_or(DROP_NO_BACKEND)?;
    let backend = *XLB_BACKENDS.get(backend_id).ok_or(DROP_NO_BACKEND)?;
    if backend.flags & BACKEND_F_VALID == 0 {
        return Err(DROP_NO_BACKEND);
    }
    // Remember the flow. A full LRU evicts its oldest entry; a failed insert
    // only means the next packet hashes again, to the same backend unless the
    // table changed in between.
    let _ = XLB_CONNS.insert(&p.flow, &backend_id, 0);
    Ok(Choice {
        backend_id,
        backend,
        iface_mac: cfg.iface_mac,
    })
}
