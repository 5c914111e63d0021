//! [`HeapRegion`]: zeroed, 64-byte aligned heap memory that stands in for a
//! shared file in unit tests and loom models.
//!
//! Its capacity is fixed up front (like an address-space reservation) and its
//! length grows inside it. Under `--cfg loom` it is an array of loom atomics,
//! because loom cannot check accesses made through casted raw pointers; both
//! forms copy bytes with the same whole-word copies (`sync`'s single-width
//! rule), so Miri (real atomics) and loom check the same code.

use super::Memory;
use crate::error::{Error, Result};
use crate::sync::{AtomicU64, Ordering};

/// Zeroed, 64-byte aligned memory with a fixed capacity and a growing length.
///
/// ```
/// use shmslab::region::HeapRegion;
/// let heap = HeapRegion::with_capacity(4096, 1 << 20);
/// assert_eq!(heap.len(), 4096);
/// heap.resize(8192).unwrap();
/// assert_eq!(heap.len(), 8192);
/// assert!(heap.resize(2 << 20).is_err()); // past the capacity
/// ```
#[derive(Debug)]
pub struct HeapRegion {
    #[cfg(not(loom))]
    buf: aligned::AlignedBuf,
    #[cfg(loom)]
    words: Box<[AtomicU64]>,
    capacity: u64,
    len: AtomicU64,
}

impl HeapRegion {
    /// A region of `len` zero bytes that cannot grow.
    ///
    /// # Panics
    /// If `len` rounded up to 64 bytes overflows `usize`.
    pub fn new(len: usize) -> Self {
        Self::with_capacity(len, len)
    }

    /// A region of `len` zero bytes that can grow up to `capacity`.
    ///
    /// # Panics
    /// If the capacity rounded up to 64 bytes overflows `usize` (no such
    /// region could be allocated anyway).
    pub fn with_capacity(len: usize, capacity: usize) -> Self {
        let capacity = capacity
            .max(len)
            .checked_next_multiple_of(64)
            .expect("heap region too large");
        Self {
            #[cfg(not(loom))]
            buf: aligned::AlignedBuf::zeroed(capacity),
            #[cfg(loom)]
            words: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
            capacity: capacity as u64,
            len: AtomicU64::new(len as u64),
        }
    }

    /// Bytes in the region.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire) as usize
    }

    /// Whether the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Grows the region to `new_len` bytes (grow only; at most the capacity).
    pub fn resize(&self, new_len: usize) -> Result<()> {
        if (new_len as u64) < self.len.load(Ordering::Acquire) {
            return Err(Error::config("a region cannot shrink"));
        }
        self.grow_to(new_len as u64)
    }

    /// A view of the region's bytes.
    #[cfg(not(loom))]
    pub fn region(&self) -> super::Region<'_> {
        // SAFETY: the buffer holds `capacity >= len` bytes and lives as long
        // as `self`, which the returned view borrows.
        unsafe { super::Region::from_raw(self.buf.ptr(), self.len()) }
    }
}

impl Memory for HeapRegion {
    #[inline]
    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    #[inline]
    unsafe fn word(&self, offset: u64) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.capacity);
        #[cfg(not(loom))]
        {
            // SAFETY: the caller keeps `offset + 8` within `len <= capacity`;
            // the buffer is 64-aligned so `offset % 8 == 0` makes it 8-aligned.
            unsafe { &*(self.buf.ptr().add(offset as usize) as *const AtomicU64) }
        }
        #[cfg(loom)]
        {
            &self.words[(offset / 8) as usize]
        }
    }

    unsafe fn words(&self, offset: u64, n: usize) -> &[AtomicU64] {
        debug_assert!(offset % 8 == 0 && offset + 8 * n as u64 <= self.capacity);
        #[cfg(not(loom))]
        {
            // SAFETY: as in `word`, for `n` words: the caller keeps
            // `offset + 8n` within `len <= capacity`, 8-aligned.
            unsafe {
                std::slice::from_raw_parts(
                    self.buf.ptr().add(offset as usize) as *const AtomicU64,
                    n,
                )
            }
        }
        #[cfg(loom)]
        {
            let first = (offset / 8) as usize;
            &self.words[first..first + n]
        }
    }

    unsafe fn copy_out(&self, offset: u64, dst: &mut [u8]) {
        #[cfg(not(loom))]
        // SAFETY: the caller keeps the range within `len <= capacity`, and
        // the capacity is a multiple of 64 from a 64-aligned base, so every
        // word containing a byte of the range lies in the buffer; all
        // accesses to it are whole-word atomics (`word` and these copies).
        unsafe {
            crate::sync::load_shared(self.buf.ptr().add(offset as usize), dst)
        };
        #[cfg(loom)]
        {
            let first = (offset / 8) as usize;
            crate::sync::load_via_words((offset % 8) as usize, dst, |j| &self.words[first + j]);
        }
    }

    unsafe fn copy_in(&self, offset: u64, src: &[u8]) {
        #[cfg(not(loom))]
        // SAFETY: as in `copy_out`.
        unsafe {
            crate::sync::store_shared(src, self.buf.ptr().add(offset as usize))
        };
        #[cfg(loom)]
        {
            let first = (offset / 8) as usize;
            crate::sync::store_via_words((offset % 8) as usize, src, |j| &self.words[first + j]);
        }
    }

    fn grow_to(&self, new_len: u64) -> Result<()> {
        if new_len > self.capacity {
            return Err(Error::io(
                "grow heap region",
                "",
                std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "the heap region's capacity is exhausted",
                ),
            ));
        }
        self.len.fetch_max(new_len, Ordering::AcqRel);
        Ok(())
    }

    fn observe(&self, min_len: u64) -> Result<()> {
        let len = self.len.load(Ordering::Acquire);
        if min_len <= len {
            Ok(())
        } else {
            Err(Error::Truncated {
                expected: min_len,
                actual: len,
            })
        }
    }
}

#[cfg(not(loom))]
mod aligned {
    use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};

    /// A zeroed heap buffer aligned to 64 bytes.
    #[derive(Debug)]
    pub(super) struct AlignedBuf {
        ptr: *mut u8,
        layout: Layout,
    }

    // SAFETY: the buffer is plain memory owned by this value; all shared
    // access to it goes through atomics or the `Memory` contract.
    unsafe impl Send for AlignedBuf {}
    // SAFETY: as above.
    unsafe impl Sync for AlignedBuf {}

    impl AlignedBuf {
        pub(super) fn zeroed(len: usize) -> Self {
            let layout = Layout::from_size_align(len.max(64), 64).expect("heap region too large");
            // SAFETY: the layout has a non-zero size.
            let ptr = unsafe { alloc_zeroed(layout) };
            if ptr.is_null() {
                handle_alloc_error(layout);
            }
            Self { ptr, layout }
        }

        pub(super) fn ptr(&self) -> *mut u8 {
            self.ptr
        }
    }

    impl Drop for AlignedBuf {
        fn drop(&mut self) {
            // SAFETY: allocated in `zeroed` with this layout, freed once.
            unsafe { dealloc(self.ptr, self.layout) }
        }
    }
}
