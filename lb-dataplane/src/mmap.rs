//! BPF arrays created with BPF_F_MMAPABLE, mapped into our memory: Maglev
//! tables are filled and checked, and counters read, without a syscall per
//! entry.

use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use bytemuck::Pod;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// A mapping of a whole BPF array of `len` values of `T`.
pub struct MappedArray<T: Pod> {
    ptr: NonNull<u8>,
    len: usize,
    bytes: NonZeroUsize,
    _values: std::marker::PhantomData<T>,
}

/// The kernel lays array elements out `round_up(value_size, 8)` bytes apart.
const fn stride<T>() -> usize {
    size_of::<T>().next_multiple_of(8)
}

// SAFETY: the mapping is plain shared memory owned by this value; every access
// goes through volatile reads and writes of Pod values.
unsafe impl<T: Pod> Send for MappedArray<T> {}
// SAFETY: as for Send: shared references only do volatile reads and writes
// of whole Pod values, which the kernel side does concurrently anyway.
unsafe impl<T: Pod> Sync for MappedArray<T> {}

impl<T: Pod> MappedArray<T> {
    /// Map `len` values of the array behind `fd`, read-write. The kernel
    /// refuses unless the map was created with BPF_F_MMAPABLE; its value size
    /// must be `size_of::<T>()`.
    pub fn new(fd: impl AsFd, len: usize) -> std::io::Result<Self> {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as usize;
        let bytes = (len * stride::<T>()).div_ceil(page).max(1) * page;
        let bytes = NonZeroUsize::new(bytes).expect("at least one page");
        // SAFETY: a fresh shared mapping of the map's memory, unmapped in Drop.
        let ptr = unsafe {
            mmap(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .map_err(std::io::Error::from)?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
            bytes,
            _values: std::marker::PhantomData,
        })
    }

    /// The value at `index`. Volatile: the kernel may be writing it.
    pub fn get(&self, index: usize) -> T {
        assert!(index < self.len, "index {index} past {}", self.len);
        // SAFETY: in bounds of the mapping, 8-byte aligned (page-aligned base,
        // stride a multiple of 8, align_of::<T>() <= 8 for our map values);
        // T is Pod, so any bytes are a valid value.
        unsafe { self.slot(index).read_volatile() }
    }

    pub fn set(&self, index: usize, value: T) {
        assert!(index < self.len, "index {index} past {}", self.len);
        // SAFETY: as in `get`.
        unsafe { self.slot(index).write_volatile(value) }
    }

    /// A pointer to the value at `index`, for writes of single fields in
    /// an order the program relies on (`vipslots`).
    pub(crate) fn slot_ptr(&self, index: usize) -> *mut T {
        assert!(index < self.len, "index {index} past {}", self.len);
        self.slot(index)
    }

    fn slot(&self, index: usize) -> *mut T {
        // SAFETY: callers check index < len; the mapping spans len strides.
        unsafe { self.ptr.as_ptr().add(index * stride::<T>()).cast() }
    }

    /// Every value, copied out.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).map(|i| self.get(i)).collect()
    }
}

impl<T: Pod> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        let _ = unsafe { munmap(self.ptr.cast(), self.bytes.get()) };
    }
}
