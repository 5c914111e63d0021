//! Memory that processes share, below the allocator: a file mapped with
//! `MAP_SHARED` ([`MmapRegion`], the seed's region, public and usable on its
//! own), or a heap buffer that stands in for one in unit tests and loom
//! models ([`HeapRegion`]). A user of [`Slab`](crate::Slab) needs none of it.
//!
//! The allocator reaches memory only through a crate-internal `Memory`
//! trait: aligned 64-bit atomic words for metadata, and byte copies for slot
//! contents, themselves made of whole aligned word accesses (the
//! single-width rule in `sync`). Nothing hands out a `&[u8]` or `&T` into shared memory, because
//! another process may change those bytes at any moment.

mod heap;
mod mmap;

pub use heap::HeapRegion;
pub use mmap::{MmapRegion, RegionOptions};

use crate::error::Result;
use crate::sync::AtomicU64;
use std::marker::PhantomData;

/// What happens to the backing file when the region that created it goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileCleanup {
    /// Keep the file until the creating region drops (or until someone calls
    /// [`MmapRegion::release_ownership`], after which it is kept for good).
    /// Only in the creating process: a copy that a forked child inherits
    /// never deletes the file.
    #[default]
    Manual,
    /// Unlink the file right after creating it. The mapping and every
    /// descriptor stay valid; the kernel frees the storage when the last one
    /// closes, even if every process is killed. Other processes can only join
    /// through an inherited or passed descriptor.
    Auto,
}

/// A borrowed view of a region's bytes: a base pointer and a length.
///
/// [`read`](Region::read) and [`write`](Region::write) access the bytes only
/// as whole aligned 64-bit atomic words, the one width the crate uses on
/// shared memory: a write of a few bytes swaps the word that holds them.
/// Code that uses [`as_ptr`](Region::as_ptr) while the crate may touch the
/// same bytes from another thread must do the same (aligned `AtomicU64`
/// only): atomic accesses of different sizes to overlapping bytes are
/// undefined behaviour.
///
/// The view stays valid for as long as the region it came from is borrowed:
/// a region never unmaps a mapping while it lives, even after a remap.
/// Reading and writing through the raw pointer is `unsafe` because another
/// process may write the same bytes at any time; the safe
/// [`read`](Region::read)/[`write`](Region::write) copy through a bounds check.
#[derive(Debug, Clone, Copy)]
pub struct Region<'a> {
    ptr: *mut u8,
    len: usize,
    _borrow: PhantomData<&'a [u8]>,
}

impl<'a> Region<'a> {
    /// # Safety
    /// `ptr..ptr + len` must be mapped, readable and writable for `'a`.
    pub(crate) unsafe fn from_raw(ptr: *mut u8, len: usize) -> Self {
        Self {
            ptr,
            len,
            _borrow: PhantomData,
        }
    }

    /// The first byte of the view.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Bytes in the view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the region.
    /// Returns `None` when the range does not lie inside the view.
    ///
    /// ```
    /// # use shmslab::region::HeapRegion;
    /// let heap = HeapRegion::new(4096);
    /// let region = heap.region();
    /// region.write(10, b"hi").unwrap();
    /// let mut out = [0u8; 2];
    /// region.read(10, &mut out).unwrap();
    /// assert_eq!(&out, b"hi");
    /// assert!(region.read(4095, &mut out).is_none());
    /// ```
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Option<()> {
        let end = offset.checked_add(dst.len())?;
        if end > self.len {
            return None;
        }
        // SAFETY: `offset..end` lies inside the view (checked above), which
        // is valid for 'a; the view starts 8-aligned and its memory comes in
        // whole pages (a mapping) or 64-byte blocks (a heap region), so the
        // words containing those bytes are valid too; `dst` is a distinct
        // private buffer. The crate touches the view's bytes only as whole
        // aligned atomic words, as this copy does, so racing writers (other
        // threads or processes) can only make the copied bytes stale.
        unsafe { crate::sync::load_shared(self.ptr.add(offset), dst) };
        Some(())
    }

    /// Copies `src` into the region at `offset`. Returns `None` when the range
    /// does not lie inside the view.
    pub fn write(&self, offset: usize, src: &[u8]) -> Option<()> {
        let end = offset.checked_add(src.len())?;
        if end > self.len {
            return None;
        }
        // SAFETY: as in `read`; the view is writable (MAP_SHARED, PROT_WRITE,
        // or heap memory). Bytes of the first and last word outside the
        // range are kept by compare-and-swap, never rewritten with old values.
        unsafe { crate::sync::store_shared(src, self.ptr.add(offset)) };
        Some(())
    }
}

/// Shared memory as the layers above see it.
///
/// `len()` only grows. Offsets handed to the `unsafe` accessors must have been
/// checked against a `len()` observed earlier by the same thread (or published
/// to it with Release/Acquire), which is what makes them stay in bounds.
pub(crate) trait Memory: Send + Sync + 'static {
    /// Bytes that may be touched now.
    fn len(&self) -> u64;

    /// The 64-bit atomic word at `offset`.
    ///
    /// # Safety
    /// `offset` is a multiple of 8 and `offset + 8 <= len()`.
    unsafe fn word(&self, offset: u64) -> &AtomicU64;

    /// The `n` consecutive 64-bit atomic words from `offset`, as one slice
    /// (one provenance: a view over several words of a slot).
    ///
    /// # Safety
    /// `offset` is a multiple of 8 and `offset + 8 * n <= len()`.
    unsafe fn words(&self, offset: u64, n: usize) -> &[AtomicU64];

    /// Copies bytes out of `[offset, offset + dst.len())`.
    ///
    /// # Safety
    /// The range lies within `len()`.
    unsafe fn copy_out(&self, offset: u64, dst: &mut [u8]);

    /// Copies `src` into `[offset, offset + src.len())`.
    ///
    /// # Safety
    /// The range lies within `len()`.
    unsafe fn copy_in(&self, offset: u64, src: &[u8]);

    /// Makes `[0, new_len)` backed (disk space reserved) and addressable. The
    /// grower calls this before it publishes bytes past the old end.
    fn grow_to(&self, new_len: u64) -> Result<()>;

    /// Makes `[0, min_len)` addressable if the backing store really has that
    /// many bytes (another process grew it); an error otherwise, so a forged
    /// size in the header can never lead to a touch past the end of the file.
    fn observe(&self, min_len: u64) -> Result<()>;

    /// The open file description this process's liveness locks live on
    /// (its own: never shared with another process, nor with the mapping,
    /// and closed in a forked child), if any.
    fn lock_file(&self) -> Option<&std::fs::File> {
        None
    }

    /// The bounds-checked word at `offset`, or `None`.
    fn checked_word(&self, offset: u64) -> Option<&AtomicU64> {
        if offset % 8 != 0 || offset.checked_add(8)? > self.len() {
            return None;
        }
        // SAFETY: alignment and bounds checked just above.
        Some(unsafe { self.word(offset) })
    }
}

/// Tests and loom models share one heap segment between several pools (one
/// per simulated process).
#[cfg(test)]
impl<M: Memory> Memory for std::sync::Arc<M> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    unsafe fn word(&self, offset: u64) -> &AtomicU64 {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { (**self).word(offset) }
    }
    unsafe fn words(&self, offset: u64, n: usize) -> &[AtomicU64] {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { (**self).words(offset, n) }
    }
    unsafe fn copy_out(&self, offset: u64, dst: &mut [u8]) {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { (**self).copy_out(offset, dst) }
    }
    unsafe fn copy_in(&self, offset: u64, src: &[u8]) {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { (**self).copy_in(offset, src) }
    }
    fn grow_to(&self, new_len: u64) -> Result<()> {
        (**self).grow_to(new_len)
    }
    fn observe(&self, min_len: u64) -> Result<()> {
        (**self).observe(min_len)
    }
    fn lock_file(&self) -> Option<&std::fs::File> {
        (**self).lock_file()
    }
}
