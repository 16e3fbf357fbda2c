//! The raw `bpf()` calls aya 0.14 does not wrap: an element lookup by map fd
//! whatever the value's type (adoption reads maps of older layouts),
//! BPF_MAP_LOOKUP_BATCH (the connection-table scan) and BPF_MAP_UPDATE_BATCH
//! (the Maglev tables swapped in one call: see `update_batch`). The batch read sits
//! behind `BatchRead`, so the walk over it is tested with a fake, without a
//! kernel. Nothing else in xlb calls `bpf()` itself.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use lb_common::hash::ConnEntry;

/// BPF_MAP_LOOKUP_ELEM of a u32 key into a value of `value_size` bytes,
/// whatever the value's type (aya's typed maps insist on ours).
pub(crate) fn lookup_elem(fd: BorrowedFd<'_>, key: u32, value_size: usize) -> io::Result<Vec<u8>> {
    // The map-element part of union bpf_attr.
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    let mut value = vec![0u8; value_size];
    let attr = Attr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: `attr` points at a live key and a buffer of the map's value
    // size, both outliving the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            &attr as *const Attr,
            size_of::<Attr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// What one batch read returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Batch {
    /// `count` entries; more follow from cursor `next`.
    More { count: usize, next: u64 },
    /// The last `count` entries (ENOENT: the walk is done).
    Last { count: usize },
    /// One bucket holds more entries than the buffers (ENOSPC with none
    /// returned): read the same cursor again with larger buffers.
    TooSmall,
}

/// The syscall behind the connection-table walk, so the walk is tested
/// without a kernel.
pub(crate) trait BatchRead {
    /// Read from `cursor` (None: the first bucket) at most `values.len()`
    /// entries; keys go to `keys` (`values.len()` keys of the map's key size).
    /// The values are the connection table's (`ConnEntry`, 8 bytes each).
    fn read(
        &mut self,
        cursor: Option<u64>,
        keys: &mut [u8],
        values: &mut [ConnEntry],
    ) -> io::Result<Batch>;
}

/// `union bpf_attr`'s member for the BPF_MAP_*_BATCH commands.
#[repr(C)]
#[derive(Debug, Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}
const _: () = assert!(size_of::<BatchAttr>() == 56);

/// The `bpf()` call of a batch command.
///
/// # Safety
///
/// Every pointer in `attr` must be valid for what `cmd` reads and writes
/// through it (`count` keys and values of the map's sizes, the cursors).
unsafe fn batch_call(cmd: libc::c_long, attr: &mut BatchAttr) -> libc::c_long {
    // SAFETY: the caller's contract; `attr` is the batch member of
    // bpf_attr and its size is passed along.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>(),
        )
    }
}

/// `enum bpf_cmd`: BPF_MAP_LOOKUP_BATCH (Linux 5.6).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `enum bpf_cmd`: BPF_MAP_UPDATE_BATCH (Linux 5.6; array-of-maps since 5.19).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// BPF_MAP_UPDATE_BATCH of u32 keys and u32 values (for a map of maps, the
/// inner maps' fds) into the map `fd`. The kernel updates them in order and
/// waits for running programs once at the end: an update of a map of maps
/// one element at a time waits for an RCU grace period per element (the
/// kernel's `maybe_wait_bpf_programs`), milliseconds each. Returns how many
/// were updated with the error when not all were.
pub(crate) fn update_batch(
    fd: BorrowedFd<'_>,
    keys: &[u32],
    values: &[u32],
) -> Result<(), (usize, io::Error)> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: `attr` is the batch member of bpf_attr, its size passed along;
    // the kernel reads `count` keys and values of 4 bytes each (the map's
    // key and value size, checked by the kernel) from slices that outlive
    // the call, and writes only `attr.count`.
    let ret = unsafe { batch_call(BPF_MAP_UPDATE_BATCH, &mut attr) };
    if ret == 0 {
        return Ok(());
    }
    Err((attr.count as usize, io::Error::last_os_error()))
}

/// BPF_MAP_LOOKUP_BATCH on a hash map's fd.
pub(crate) struct BatchSyscall<'a> {
    pub(crate) fd: BorrowedFd<'a>,
    /// The cursor the kernel writes (a hash map's is a u32 bucket index;
    /// 8 bytes leave room).
    pub(crate) out: u64,
    pub(crate) cursor: u64,
}

impl BatchRead for BatchSyscall<'_> {
    fn read(
        &mut self,
        cursor: Option<u64>,
        keys: &mut [u8],
        values: &mut [ConnEntry],
    ) -> io::Result<Batch> {
        if let Some(c) = cursor {
            self.cursor = c;
        }
        self.out = 0;
        let mut attr = BatchAttr {
            in_batch: match cursor {
                Some(_) => &raw const self.cursor as u64,
                None => 0,
            },
            out_batch: &raw mut self.out as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: values.len() as u32,
            map_fd: self.fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `attr` is the batch member of bpf_attr, its size passed
        // along; the kernel writes at most `count` keys (sized by the
        // caller for this map's key size) and values, the cursor (8 bytes
        // available) and `attr.count`, all of which outlive the call.
        let ret = unsafe { batch_call(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let count = attr.count as usize;
        if ret == 0 {
            return Ok(Batch::More {
                count,
                next: self.out,
            });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(Batch::Last { count }),
            Some(libc::ENOSPC) if count == 0 => Ok(Batch::TooSmall),
            _ => Err(e),
        }
    }
}
