//! Counting the connection tables (XLB_CONNS_V4 and XLB_CONNS, one per
//! address family): how many flows they remember and how many of them name
//! each backend id; their entries for the held-flow selection; entries
//! inserted where none is; the IPv4 flows of a layout-5 table moved into
//! the IPv4 table at an upgrade. Every write and delete made here is
//! followed by a bump of the flow cache's generation (`Generation`), so no
//! CPU's cached copy of an entry outlives it.
//!
//! aya 0.14 has no batch API, and walking an LRU hash with
//! BPF_MAP_GET_NEXT_KEY is wrong while packets evict entries (a key deleted
//! under the cursor restarts the walk from the first bucket: entries are
//! counted twice and the walk may not end). BPF_MAP_LOOKUP_BATCH walks the
//! hash bucket by bucket instead, each bucket copied under its own lock, and
//! its cursor is a bucket index, so it always moves on: every bucket is read
//! once, and a flow inserted or evicted during the scan is either counted or
//! not, never twice. The figure is a snapshot that is as old as the scan is
//! long (docs/METRICS.md: about 0.1 s of CPU, most of it in the kernel, for a
//! full 262,144-entry table).
//!
//! The scan holds nothing the packet path needs beyond one bucket lock at a
//! time, and nothing of the controller's: the daemon runs it on the blocking
//! thread pool every `SCAN_PERIOD` (longer after a slow scan: `pause_after`)
//! and only then takes the controller's lock to record the result.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use aya::maps::{HashMap, Map, MapData, MapError};
use bytemuck::Zeroable as _;
use lb_common::{
    hash::{ConnEntry, FlowKey4, FlowWords},
    maps,
};

use crate::sys::{Batch, BatchRead, BatchSyscall};

pub use xlb_core::counters::{ConnScan, SCAN_PERIOD, pause_after};

use crate::{
    DataplaneError,
    error::{io_err, map_err},
};

/// Entries asked for per BPF_MAP_LOOKUP_BATCH call: 4,096 x 48 bytes of keys
/// and values (`FlowWords`, `ConnEntry`) is 192 KiB of buffers, and a full
/// default table (262,144) is 64 calls.
pub const BATCH_ENTRIES: usize = 4096;

/// `BPF_NOEXIST` of the map update flags.
const NOEXIST: u64 = 1;

/// Entries per backend id, dense for the ids the controller hands out
/// (< MAX_BACKENDS: one add per entry, no hashing) and sparse beyond (a
/// value the controller never wrote, counted all the same).
#[derive(Debug)]
pub(crate) struct Tally {
    dense: Vec<u64>,
    sparse: BTreeMap<u32, u64>,
    entries: u64,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            dense: vec![0; maps::MAX_BACKENDS as usize],
            sparse: BTreeMap::new(),
            entries: 0,
        }
    }

    pub(crate) fn add(&mut self, backend_ids: impl IntoIterator<Item = u32>) {
        for id in backend_ids {
            match self.dense.get_mut(id as usize) {
                Some(n) => *n += 1,
                None => *self.sparse.entry(id).or_default() += 1,
            }
            self.entries += 1;
        }
    }

    /// (entries, backend id -> entries) for the ids that have any.
    pub(crate) fn finish(self) -> (u64, BTreeMap<u32, u64>) {
        // Dense ids, then sparse ones (all larger): already in order, so
        // the map is built in one pass, not searched per id.
        let by_backend = self
            .dense
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(id, n)| (id as u32, *n))
            .chain(self.sparse)
            .collect();
        (self.entries, by_backend)
    }
}

/// A flow's key in its family's connection table: the one place, with
/// `key_words`, that knows the keys' bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKey {
    /// XLB_CONNS_V4's.
    V4(FlowKey4),
    /// XLB_CONNS's.
    V6(FlowWords),
}

/// A flow's key: the IPv4 table's when the words have an IPv4 flow's shape
/// (`FlowKey4::of`), else the IPv6 table's.
pub fn conn_key(words: &FlowWords) -> ConnKey {
    match FlowKey4::of(words) {
        Some(k) => ConnKey::V4(k),
        None => ConnKey::V6(*words),
    }
}

/// The flow words of a key read from either table: 16 bytes from
/// XLB_CONNS_V4, 40 from XLB_CONNS (None: neither size).
pub fn key_words(key: &[u8]) -> Option<FlowWords> {
    match key.len() {
        16 => bytemuck::try_pod_read_unaligned::<FlowKey4>(key)
            .ok()
            .map(|k| k.words()),
        40 => bytemuck::try_pod_read_unaligned(key).ok(),
        _ => None,
    }
}

/// Walk the whole table in batches of `batch` entries, handing each batch's
/// keys (`key_size` bytes each) and values to `each`. `max_calls` bounds
/// the walk (the kernel's cursor always advances, so the bound is only a
/// guard against a kernel that does not).
pub(crate) fn walk_batches(
    source: &mut impl BatchRead,
    key_size: usize,
    batch: usize,
    max_calls: usize,
    mut each: impl FnMut(&[u8], &[ConnEntry]),
) -> std::io::Result<()> {
    let mut len = batch.max(1);
    let mut keys = vec![0u8; len * key_size];
    let mut values = vec![ConnEntry::zeroed(); len];
    let mut cursor = None;
    for _ in 0..max_calls {
        match source.read(cursor, &mut keys, &mut values)? {
            Batch::More { count, next } => {
                let n = count.min(len);
                each(&keys[..n * key_size], &values[..n]);
                cursor = Some(next);
            }
            Batch::Last { count } => {
                let n = count.min(len);
                each(&keys[..n * key_size], &values[..n]);
                return Ok(());
            }
            Batch::TooSmall => {
                len *= 2;
                keys.resize(len * key_size, 0);
                values.resize(len, ConnEntry::zeroed());
            }
        }
    }
    Err(std::io::Error::other(format!(
        "BPF_MAP_LOOKUP_BATCH did not reach the end of the table in {max_calls} calls"
    )))
}

/// Walk the whole table and count the backend ids into `tally`.
pub(crate) fn walk_into(
    source: &mut impl BatchRead,
    key_size: usize,
    batch: usize,
    max_calls: usize,
    tally: &mut Tally,
) -> std::io::Result<()> {
    walk_batches(source, key_size, batch, max_calls, |_, values| {
        tally.add(values.iter().map(|e| e.backend_id));
    })
}

/// Walk the whole table and count the backend ids.
#[cfg(test)]
pub(crate) fn walk(
    source: &mut impl BatchRead,
    key_size: usize,
    batch: usize,
    max_calls: usize,
) -> std::io::Result<(u64, BTreeMap<u32, u64>)> {
    let mut tally = Tally::new();
    walk_into(source, key_size, batch, max_calls, &mut tally)?;
    Ok(tally.finish())
}

/// Walk the whole table and keep every entry's flow words and value.
pub(crate) fn walk_entries(
    source: &mut impl BatchRead,
    key_size: usize,
    batch: usize,
    max_calls: usize,
) -> std::io::Result<Vec<(FlowWords, ConnEntry)>> {
    let mut out = Vec::new();
    walk_batches(source, key_size, batch, max_calls, |keys, values| {
        let keys = keys.chunks_exact(key_size.max(1));
        out.extend(
            keys.zip(values)
                .filter_map(|(k, v)| Some((key_words(k)?, *v))),
        );
    })?;
    Ok(out)
}

/// What inserting other nodes' entries did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inserted {
    /// New entries.
    pub added: u64,
    /// Flows the table already had an entry for (its own, left alone).
    pub present: u64,
}

/// What moving a layout-5 XLB_CONNS's IPv4 flows into XLB_CONNS_V4 did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// IPv4 flows found in XLB_CONNS.
    pub found: u64,
    /// Copied into XLB_CONNS_V4 (which had no entry for them).
    pub copied: u64,
    /// Deleted from XLB_CONNS (`move_v4_flows` with `remove`).
    pub removed: u64,
}

/// The program's flow-cache generation (`maps::FLOW_CACHE_GEN`,
/// docs/DATAPLANE.md): each CPU's cached copy of a connection entry serves
/// only under the generation it was filled in, so adding 1 after a write
/// to the tables makes every CPU look its flows up in the LRU again at
/// their next packet.
struct Generation {
    _map: MapData,
    value: crate::mmap::MappedArray<u64>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("value", &self.value.get(0))
            .finish()
    }
}

impl Generation {
    /// The map out of the loaded object; None for an object without a
    /// flow cache.
    fn take(ebpf: &mut aya::Ebpf) -> Result<Option<Arc<Self>>, DataplaneError> {
        let name = maps::FLOW_CACHE_GEN;
        if ebpf.map(name).is_none() {
            return Ok(None);
        }
        let map = crate::objects::take_array(ebpf, name)?;
        let value = crate::mmap::MappedArray::new(map.fd().as_fd(), 1).map_err(io_err(name))?;
        Ok(Some(Arc::new(Self { _map: map, value })))
    }

    /// Add 1, after a write to the tables: one atomic add on the map's
    /// memory (a locked instruction on x86, ordered after the write's
    /// syscall), which every CPU's next packet reads.
    fn bump(&self) {
        // SAFETY: the slot is in bounds of the live mapping, 8-aligned
        // (page-aligned base), and only ever accessed atomically or by
        // single aligned loads (the program's).
        let word = unsafe { std::sync::atomic::AtomicU64::from_ptr(self.value.slot_ptr(0)) };
        word.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One family's table.
#[derive(Clone, Debug)]
struct Table {
    map: Arc<MapData>,
    name: &'static str,
    capacity: u32,
    key_size: usize,
}

impl Table {
    /// `name` out of the loaded object; None when the object has no such
    /// map (an object built before it).
    fn take(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<Option<Self>, DataplaneError> {
        let map = match ebpf.take_map(name) {
            Some(Map::LruHashMap(map)) => map,
            Some(_) => {
                return Err(DataplaneError::Missing {
                    kind: "BPF_MAP_TYPE_LRU_HASH",
                    name,
                });
            }
            None => return Ok(None),
        };
        let info = map.info().map_err(map_err(name))?;
        Ok(Some(Self {
            capacity: info.max_entries(),
            key_size: info.key_size() as usize,
            name,
            map: Arc::new(map),
        }))
    }

    fn syscall(&self) -> BatchSyscall<'_> {
        BatchSyscall {
            fd: self.map.fd().as_fd(),
            out: 0,
            cursor: 0,
        }
    }

    /// The walk's bound: the kernel has at most
    /// next_power_of_two(max_entries) buckets and moves past at least one
    /// per call.
    fn max_calls(&self) -> usize {
        self.capacity.max(1).next_power_of_two() as usize + 2
    }

    fn entries(&self) -> Result<Vec<(FlowWords, ConnEntry)>, DataplaneError> {
        walk_entries(
            &mut self.syscall(),
            self.key_size,
            BATCH_ENTRIES,
            self.max_calls(),
        )
        .map_err(io_err(self.name))
    }

    /// A second, typed handle to the same map.
    fn typed<K: aya::Pod>(&self) -> Result<HashMap<MapData, K, ConnEntry>, DataplaneError> {
        let name = self.name;
        let fd = self
            .map
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(io_err(name))?;
        let map = MapData::from_fd(fd).map_err(map_err(name))?;
        HashMap::try_from(Map::from_map_data(map).map_err(map_err(name))?).map_err(map_err(name))
    }
}

/// Typed handles to both tables, for tests and tools that write, read or
/// delete flows by their words: each flow goes to its family's table
/// (`conn_key`).
pub struct ConnFlows {
    v6: HashMap<MapData, FlowWords, ConnEntry>,
    /// None for an object without XLB_CONNS_V4 (its XLB_CONNS holds both
    /// families).
    v4: Option<HashMap<MapData, FlowKey4, ConnEntry>>,
    /// Bumped after every write and delete (None: an object without a
    /// flow cache).
    generation: Option<Arc<Generation>>,
}

impl ConnFlows {
    /// The name of the table `words` go to.
    pub fn table_of(&self, words: &FlowWords) -> &'static str {
        match (&self.v4, conn_key(words)) {
            (Some(_), ConnKey::V4(_)) => maps::CONNS_V4,
            _ => maps::CONNS,
        }
    }

    /// Write the flow's entry; the flow cache follows at the next packet.
    pub fn insert(
        &mut self,
        words: FlowWords,
        entry: ConnEntry,
        flags: u64,
    ) -> Result<(), MapError> {
        let done = match (&mut self.v4, conn_key(&words)) {
            (Some(v4), ConnKey::V4(k)) => v4.insert(k, entry, flags),
            _ => self.v6.insert(words, entry, flags),
        };
        self.bump();
        done
    }

    pub fn get(&self, words: &FlowWords, flags: u64) -> Result<ConnEntry, MapError> {
        match (&self.v4, conn_key(words)) {
            (Some(v4), ConnKey::V4(k)) => v4.get(&k, flags),
            _ => self.v6.get(words, flags),
        }
    }

    /// Delete the flow's entry; the flow cache follows at the next packet.
    pub fn remove(&mut self, words: &FlowWords) -> Result<(), MapError> {
        let done = match (&mut self.v4, conn_key(words)) {
            (Some(v4), ConnKey::V4(k)) => v4.remove(&k),
            _ => self.v6.remove(words),
        };
        self.bump();
        done
    }

    /// The flow cache's generation moved on, after a write (a failed
    /// one too: it may have changed something).
    fn bump(&self) {
        if let Some(g) = &self.generation {
            g.bump();
        }
    }

    /// Every entry of both tables, IPv4's first, key by key
    /// (BPF_MAP_GET_NEXT_KEY: sound only while nothing else writes them).
    pub fn iter(&self) -> impl Iterator<Item = Result<(FlowWords, ConnEntry), MapError>> + '_ {
        let v4 = self
            .v4
            .iter()
            .flat_map(|m| m.iter().map(|r| r.map(|(k, v)| (k.words(), v))));
        v4.chain(self.v6.iter())
    }
}

/// A handle to the connection tables, cheap to clone and to send to another
/// thread: the scan runs outside the controller's lock.
#[derive(Clone, Debug)]
pub struct ConnTable {
    /// XLB_CONNS: IPv6 flows (and IPv4 flows, for an object built before
    /// XLB_CONNS_V4).
    v6: Table,
    /// XLB_CONNS_V4; None for an object built before it.
    v4: Option<Table>,
    /// The flow cache's generation; None for an object without one.
    generation: Option<Arc<Generation>>,
}

impl ConnTable {
    /// Take XLB_CONNS and XLB_CONNS_V4 out of the loaded object.
    pub(super) fn take(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        let v6 = Table::take(ebpf, maps::CONNS)?.ok_or(DataplaneError::Missing {
            kind: "map",
            name: maps::CONNS,
        })?;
        let v4 = Table::take(ebpf, maps::CONNS_V4)?;
        let generation = Generation::take(ebpf)?;
        Ok(Self { v6, v4, generation })
    }

    /// max_entries of each family's table (`conn_table_size`).
    pub fn capacity(&self) -> u32 {
        self.v6.capacity
    }

    /// Whether IPv4 flows have a table of their own (false: an object
    /// built before XLB_CONNS_V4).
    pub fn has_v4_table(&self) -> bool {
        self.v4.is_some()
    }

    fn tables(&self) -> impl Iterator<Item = &Table> {
        self.v4.iter().chain(std::iter::once(&self.v6))
    }

    /// Count the entries and the backend ids they name, both families.
    pub fn scan(&self) -> Result<ConnScan, DataplaneError> {
        self.scan_in_batches(BATCH_ENTRIES)
    }

    /// `scan` with `batch` entries per syscall (tests try small batches).
    /// `capacity` is one family's table's size: `entries` over it reads as
    /// it did with one table when one family carries the traffic
    /// (docs/METRICS.md).
    pub fn scan_in_batches(&self, batch: usize) -> Result<ConnScan, DataplaneError> {
        let started = Instant::now();
        let mut tally = Tally::new();
        for t in self.tables() {
            walk_into(
                &mut t.syscall(),
                t.key_size,
                batch,
                t.max_calls(),
                &mut tally,
            )
            .map_err(io_err(t.name))?;
        }
        let (entries, by_backend) = tally.finish();
        Ok(ConnScan {
            entries,
            capacity: self.capacity(),
            by_backend,
            scanned_at_unix_seconds: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Every entry's flow words and backend id, both families (the
    /// held-flow selection of `xlb_core::held` reads them), walked as
    /// `scan` walks.
    pub fn entries(&self) -> Result<Vec<(FlowWords, u32)>, DataplaneError> {
        let mut out = Vec::new();
        for t in self.tables() {
            out.extend(t.entries()?.into_iter().map(|(w, e)| (w, e.backend_id)));
        }
        Ok(out)
    }

    /// Insert entries for flows the tables have none for (BPF_NOEXIST: an
    /// entry of the node's own is never replaced): (flow words, backend
    /// id, the flow's tuple hash), each into its family's table.
    pub fn insert_absent(
        &self,
        entries: impl IntoIterator<Item = (FlowWords, u32, u32)>,
    ) -> Result<Inserted, DataplaneError> {
        let mut flows = self.flows_map()?;
        let mut done = Inserted::default();
        for (words, backend_id, flow_hash) in entries {
            let entry = ConnEntry {
                backend_id,
                flow_hash,
            };
            match flows.insert(words, entry, NOEXIST) {
                Ok(()) => done.added += 1,
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
                {
                    done.present += 1;
                }
                Err(e) => return Err(map_err(flows.table_of(&words))(e)),
            }
        }
        Ok(done)
    }

    /// The IPv4 flows of XLB_CONNS (pinned by a layout-5 xlb, whose one
    /// table held both families) copied into XLB_CONNS_V4 where it has no
    /// entry for them (BPF_NOEXIST: an entry this program made is newer),
    /// and with `remove`, deleted from XLB_CONNS. Nothing to do without
    /// XLB_CONNS_V4.
    pub fn move_v4_flows(&self, remove: bool) -> Result<Moved, DataplaneError> {
        let mut moved = Moved::default();
        if self.v4.is_none() {
            return Ok(moved);
        }
        let found: Vec<(FlowWords, ConnEntry)> = self
            .v6
            .entries()?
            .into_iter()
            .filter(|(w, _)| FlowKey4::of(w).is_some())
            .collect();
        moved.found = found.len() as u64;
        let mut flows = self.flows_map()?;
        for (words, entry) in found {
            match flows.insert(words, entry, NOEXIST) {
                Ok(()) => moved.copied += 1,
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(map_err(maps::CONNS_V4)(e)),
            }
            if remove {
                let removed = flows.v6.remove(&words);
                flows.bump();
                match removed {
                    Ok(()) => moved.removed += 1,
                    // Evicted meanwhile.
                    Err(MapError::KeyNotFound) => {}
                    Err(MapError::SyscallError(e))
                        if e.io_error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(map_err(maps::CONNS)(e)),
                }
            }
        }
        Ok(moved)
    }

    /// Typed handles to both tables, for tests and tools that write flows
    /// into them.
    pub fn flows_map(&self) -> Result<ConnFlows, DataplaneError> {
        Ok(ConnFlows {
            v6: self.v6.typed()?,
            v4: self.v4.as_ref().map(Table::typed).transpose()?,
            generation: self.generation.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table in memory, walked like the kernel walks a hash: bucket by
    /// bucket, a bucket whole or not at all, ENOSPC when the first bucket
    /// does not fit.
    struct Fake {
        buckets: Vec<Vec<u32>>,
        calls: usize,
    }

    impl BatchRead for Fake {
        fn read(
            &mut self,
            cursor: Option<u64>,
            keys: &mut [u8],
            values: &mut [ConnEntry],
        ) -> std::io::Result<Batch> {
            self.calls += 1;
            assert_eq!(keys.len(), values.len() * 40, "a key buffer per value");
            let mut bucket = cursor.unwrap_or(0) as usize;
            let mut total = 0;
            while bucket < self.buckets.len() {
                let b = &self.buckets[bucket];
                if b.len() > values.len() - total {
                    if total == 0 {
                        return Ok(Batch::TooSmall);
                    }
                    return Ok(Batch::More {
                        count: total,
                        next: bucket as u64,
                    });
                }
                for (i, &id) in b.iter().enumerate() {
                    values[total + i] = ConnEntry {
                        backend_id: id,
                        flow_hash: id.wrapping_mul(0x9e37_79b9),
                    };
                    let key = FlowWords {
                        src: [bucket as u32, 0, 0, 0],
                        dst: [0; 4],
                        ports: i as u32,
                        proto: 6,
                    };
                    keys[(total + i) * 40..(total + i + 1) * 40]
                        .copy_from_slice(bytemuck::bytes_of(&key));
                }
                total += b.len();
                bucket += 1;
            }
            Ok(Batch::Last { count: total })
        }
    }

    #[test]
    fn walk_counts_every_bucket_once_per_backend() {
        // 1,000 buckets of 0..3 entries naming ids 0..7.
        let buckets: Vec<Vec<u32>> = (0..1000u32)
            .map(|b| (0..b % 4).map(|i| (b + i) % 7).collect())
            .collect();
        let mut want = BTreeMap::new();
        for id in buckets.iter().flatten() {
            *want.entry(*id).or_insert(0u64) += 1;
        }
        let total: u64 = want.values().sum();
        for batch in [3, 5, 64, 4096] {
            let mut fake = Fake {
                buckets: buckets.clone(),
                calls: 0,
            };
            let (entries, by_backend) = walk(&mut fake, 40, batch, 10_000).unwrap();
            assert_eq!((entries, &by_backend), (total, &want), "batch {batch}");
        }
    }

    #[test]
    fn the_entries_walk_keeps_each_key_with_its_backend() {
        let buckets: Vec<Vec<u32>> = (0..300u32)
            .map(|b| (0..b % 3).map(|i| b + i).collect())
            .collect();
        for batch in [1, 4, 4096] {
            let mut fake = Fake {
                buckets: buckets.clone(),
                calls: 0,
            };
            let got: Vec<(FlowWords, u32)> = walk_entries(&mut fake, 40, batch, 10_000)
                .unwrap()
                .into_iter()
                .map(|(w, e)| (w, e.backend_id))
                .collect();
            let want: Vec<(FlowWords, u32)> = buckets
                .iter()
                .enumerate()
                .flat_map(|(b, ids)| {
                    ids.iter().enumerate().map(move |(i, &id)| {
                        let key = FlowWords {
                            src: [b as u32, 0, 0, 0],
                            dst: [0; 4],
                            ports: i as u32,
                            proto: 6,
                        };
                        (key, id)
                    })
                })
                .collect();
            assert_eq!(got, want, "batch {batch}");
        }
        assert_eq!(key_words(&[0u8; 39]), None);
        let w = FlowWords {
            src: [1, 2, 3, 4],
            dst: [5, 6, 7, 8],
            ports: 9,
            proto: 17,
        };
        assert_eq!(conn_key(&w), ConnKey::V6(w));
        assert_eq!(key_words(bytemuck::bytes_of(&w)), Some(w));
        // An IPv4 flow's words: the 16-byte key, read back whole.
        let w4 = FlowWords {
            src: [1, 0, 0, 0],
            dst: [5, 0, 0, 0],
            ..w
        };
        let ConnKey::V4(k) = conn_key(&w4) else {
            panic!("IPv4 words take the IPv4 table: {:?}", conn_key(&w4));
        };
        assert_eq!(key_words(bytemuck::bytes_of(&k)), Some(w4));
    }

    #[test]
    fn a_bucket_larger_than_the_batch_grows_the_buffers() {
        let mut fake = Fake {
            buckets: vec![vec![1], vec![2; 9], vec![3, 3]],
            calls: 0,
        };
        let (entries, by_backend) = walk(&mut fake, 40, 2, 100).unwrap();
        assert_eq!(entries, 12);
        assert_eq!(by_backend, BTreeMap::from([(1, 1), (2, 9), (3, 2)]));
    }

    #[test]
    fn an_empty_table_is_one_call() {
        let mut fake = Fake {
            buckets: vec![vec![]; 16],
            calls: 0,
        };
        let (entries, by_backend) = walk(&mut fake, 40, 8, 100).unwrap();
        assert_eq!((entries, by_backend.len(), fake.calls), (0, 0, 1));
    }

    #[test]
    fn a_cursor_that_never_ends_is_an_error_not_a_hang() {
        struct Forever;
        impl BatchRead for Forever {
            fn read(
                &mut self,
                _: Option<u64>,
                _: &mut [u8],
                v: &mut [ConnEntry],
            ) -> std::io::Result<Batch> {
                v[0].backend_id = 1;
                Ok(Batch::More { count: 1, next: 0 })
            }
        }
        let err = walk(&mut Forever, 40, 8, 50).unwrap_err();
        assert!(err.to_string().contains("50 calls"), "{err}");
    }

    #[test]
    fn ids_beyond_the_dense_range_are_counted_too() {
        let mut t = Tally::new();
        t.add([
            0,
            5,
            5,
            maps::MAX_BACKENDS - 1,
            maps::MAX_BACKENDS,
            u32::MAX,
        ]);
        let (entries, by_backend) = t.finish();
        assert_eq!(entries, 6);
        assert_eq!(
            by_backend,
            BTreeMap::from([
                (0, 1),
                (5, 2),
                (maps::MAX_BACKENDS - 1, 1),
                (maps::MAX_BACKENDS, 1),
                (u32::MAX, 1)
            ])
        );
    }

    #[test]
    fn stale_entries_name_unknown_ids() {
        let scan = ConnScan {
            entries: 10,
            by_backend: BTreeMap::from([(1, 4), (2, 3), (9, 2), (u32::MAX, 1)]),
            ..Default::default()
        };
        assert_eq!(scan.stale_entries(|id| id == 1 || id == 2), 3);
        assert_eq!(scan.stale_entries(|_| true), 0);
    }
}
