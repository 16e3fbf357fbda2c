//! Tracing and capture (`xlb trace`, `xlb capture`; docs/TRACE.md): the
//! switch `XLB_TRACE` written, the records of `XLB_TRACE_RING` read. One
//! session at a time: a session number in the switch is copied into each
//! record, so records an earlier session left in the ring are skipped.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{Array, MapData, RingBuf};
use lb_common::{
    maps,
    trace::{TraceConfig, TraceRecord},
};

use crate::error::{DataplaneError, map_err};
use crate::objects::take;

/// The trace maps of a loaded balancer.
pub struct Tracer {
    switch: Array<MapData, TraceConfig>,
    ring: RingBuf<MapData>,
    session: u32,
}

/// A `Tracer` shared by the daemon's tasks (the session holds it only
/// for each short read or write).
pub type SharedTracer = Arc<Mutex<Tracer>>;

impl Tracer {
    /// The trace maps out of a loaded object; None for an object without
    /// them (an older build, as `XLB_BENCH_COMPARE` loads).
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> Result<Option<Self>, DataplaneError> {
        if ebpf.map(maps::TRACE).is_none() || ebpf.map(maps::TRACE_RING).is_none() {
            return Ok(None);
        }
        // Session numbers start somewhere new each load, so a restarted
        // daemon does not take its predecessor's records for its own.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        Ok(Some(Self {
            switch: take(ebpf, maps::TRACE)?,
            ring: take(ebpf, maps::TRACE_RING)?,
            session: start,
        }))
    }

    /// Switch tracing on with `config`'s filter (its `on` is set here);
    /// what an earlier session left in the ring is dropped first.
    pub fn start(&mut self, mut config: TraceConfig) -> Result<u32, DataplaneError> {
        self.stop()?;
        while self.ring.next().is_some() {}
        self.session = self.session.wrapping_add(1).max(1);
        config.on = self.session;
        self.switch
            .set(0, config, 0)
            .map_err(map_err(maps::TRACE))?;
        Ok(self.session)
    }

    /// Switch tracing off: the balancer is back to one load and a branch.
    pub fn stop(&mut self) -> Result<(), DataplaneError> {
        self.switch
            .set(0, TraceConfig::default(), 0)
            .map_err(map_err(maps::TRACE))
    }

    /// Whether the switch is on (a daemon killed while tracing leaves it
    /// on in the pinned map; the next one turns it off at start).
    pub fn is_on(&self) -> Result<bool, DataplaneError> {
        Ok(self.switch.get(&0, 0).map_err(map_err(maps::TRACE))?.on != 0)
    }

    /// Up to `max` records of the current session, oldest first (none
    /// waiting: empty at once).
    pub fn read(&mut self, max: usize) -> Vec<TraceRecord> {
        let size = size_of::<TraceRecord>();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(item) = self.ring.next() else {
                break;
            };
            if item.len() < size {
                continue;
            }
            let record: TraceRecord = bytemuck::pod_read_unaligned(&item[..size]);
            if record.session == self.session {
                out.push(record);
            }
        }
        out
    }

    /// Wait up to `timeout` for a record (poll(2) on the ring): true when
    /// one may be there.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut fd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one pollfd that lives across the call; the ring's fd is
        // open while `self` lives.
        unsafe { libc::poll(&mut fd, 1, ms) > 0 }
    }
}
