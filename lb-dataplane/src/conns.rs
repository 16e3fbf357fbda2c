//! Counting the connection table (XLB_CONNS): how many flows it remembers
//! and how many of them name each backend id.
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

use aya::maps::{HashMap, Map, MapData};
use bytemuck::Zeroable as _;
use lb_common::{
    hash::{ConnEntry, FlowWords},
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

/// The key type of the connection table and the flow words it stands for,
/// both ways: the one place that knows the key's bytes (today the key is
/// lb-common's `FlowWords` itself; a new layout changes these two
/// functions and nothing else).
pub type ConnKey = FlowWords;

/// A flow's key in the connection table.
pub fn conn_key(words: &FlowWords) -> ConnKey {
    *words
}

/// The flow words of a key read from the table (None: not a key of this
/// layout's size).
pub fn key_words(key: &[u8]) -> Option<FlowWords> {
    bytemuck::try_pod_read_unaligned(key).ok()
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

/// Walk the whole table and count the backend ids.
pub(crate) fn walk(
    source: &mut impl BatchRead,
    key_size: usize,
    batch: usize,
    max_calls: usize,
) -> std::io::Result<(u64, BTreeMap<u32, u64>)> {
    let mut tally = Tally::new();
    walk_batches(source, key_size, batch, max_calls, |_, values| {
        tally.add(values.iter().map(|e| e.backend_id));
    })?;
    Ok(tally.finish())
}

/// Walk the whole table and keep every entry's flow words and backend id.
pub(crate) fn walk_entries(
    source: &mut impl BatchRead,
    key_size: usize,
    batch: usize,
    max_calls: usize,
) -> std::io::Result<Vec<(FlowWords, u32)>> {
    let mut out = Vec::new();
    walk_batches(source, key_size, batch, max_calls, |keys, values| {
        let keys = keys.chunks_exact(key_size.max(1));
        out.extend(
            keys.zip(values)
                .filter_map(|(k, v)| Some((key_words(k)?, v.backend_id))),
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

/// A handle to the connection table, cheap to clone and to send to another
/// thread: the scan runs outside the controller's lock.
#[derive(Clone, Debug)]
pub struct ConnTable {
    map: Arc<MapData>,
    capacity: u32,
    key_size: usize,
}

impl ConnTable {
    /// Take XLB_CONNS out of the loaded object.
    pub(super) fn take(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        let name = maps::CONNS;
        match ebpf.take_map(name) {
            Some(Map::LruHashMap(map)) => Self::new(map),
            Some(_) => Err(DataplaneError::Missing {
                kind: "BPF_MAP_TYPE_LRU_HASH",
                name,
            }),
            None => Err(DataplaneError::Missing { kind: "map", name }),
        }
    }

    fn new(map: MapData) -> Result<Self, DataplaneError> {
        let info = map.info().map_err(map_err(maps::CONNS))?;
        Ok(Self {
            capacity: info.max_entries(),
            key_size: info.key_size() as usize,
            map: Arc::new(map),
        })
    }

    /// max_entries of the loaded table.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Count the entries and the backend ids they name.
    pub fn scan(&self) -> Result<ConnScan, DataplaneError> {
        self.scan_in_batches(BATCH_ENTRIES)
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

    /// `scan` with `batch` entries per syscall (tests try small batches).
    pub fn scan_in_batches(&self, batch: usize) -> Result<ConnScan, DataplaneError> {
        let started = Instant::now();
        let (entries, by_backend) =
            walk(&mut self.syscall(), self.key_size, batch, self.max_calls())
                .map_err(io_err(maps::CONNS))?;
        Ok(ConnScan {
            entries,
            capacity: self.capacity,
            by_backend,
            scanned_at_unix_seconds: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Every entry's flow words and backend id (the held-flow selection of
    /// `xlb_core::held` reads them), in one walk as `scan`'s.
    pub fn entries(&self) -> Result<Vec<(FlowWords, u32)>, DataplaneError> {
        walk_entries(
            &mut self.syscall(),
            self.key_size,
            BATCH_ENTRIES,
            self.max_calls(),
        )
        .map_err(io_err(maps::CONNS))
    }

    /// Insert entries for flows the table has none for (BPF_NOEXIST: an
    /// entry of the node's own is never replaced): (flow words, backend
    /// id, the flow's tuple hash).
    pub fn insert_absent(
        &self,
        entries: impl IntoIterator<Item = (FlowWords, u32, u32)>,
    ) -> Result<Inserted, DataplaneError> {
        /// `BPF_NOEXIST` of the map update flags.
        const NOEXIST: u64 = 1;
        let mut map = self.flows_map()?;
        let mut done = Inserted::default();
        for (words, backend_id, flow_hash) in entries {
            let entry = ConnEntry {
                backend_id,
                flow_hash,
            };
            match map.insert(conn_key(&words), entry, NOEXIST) {
                Ok(()) => done.added += 1,
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
                {
                    done.present += 1;
                }
                Err(e) => return Err(map_err(maps::CONNS)(e)),
            }
        }
        Ok(done)
    }

    /// A second, typed handle to the same map, for tests and tools that
    /// write flows into it.
    pub fn flows_map(&self) -> Result<HashMap<MapData, ConnKey, ConnEntry>, DataplaneError> {
        let fd = self
            .map
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(io_err(maps::CONNS))?;
        let map = MapData::from_fd(fd).map_err(map_err(maps::CONNS))?;
        HashMap::try_from(Map::from_map_data(map).map_err(map_err(maps::CONNS))?)
            .map_err(map_err(maps::CONNS))
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
            let got = walk_entries(&mut fake, 40, batch, 10_000).unwrap();
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
        assert_eq!(key_words(bytemuck::bytes_of(&conn_key(&w))), Some(w));
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
