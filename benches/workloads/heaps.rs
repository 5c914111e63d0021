//! The three allocators behind one small trait, so every workload is written
//! once and monomorphised per allocator (no dynamic dispatch in the loops).
//!
//! - [`ShmHeap`]: shmslab through its safe API: `alloc_bytes`, then
//!   `write`/`read` of a `Handle<u64>` over the slot, then `free`.
//! - [`MallocHeap`]: `std::alloc` (the system allocator, glibc malloc here),
//!   with `ptr::write_volatile`/`read_volatile`: the in-process ceiling.
//! - [`RtsHeap`]: rts-alloc 5.x, one `Allocator` (one worker) per thread or
//!   process, with volatile accesses like malloc.

use shmslab::{Handle, Slab, SlotRef};
use std::alloc::Layout;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// What a workload needs from an allocator.
pub trait Heap {
    /// What an allocation returns (a handle, or a pointer).
    type Block: Copy;
    /// A placeholder value, used to pre-fault vectors of blocks.
    fn dummy() -> Self::Block;
    /// Allocates `size` bytes; panics if the allocator fails.
    fn alloc(&self, size: usize) -> Self::Block;
    /// Stores `v` as a u64 at the start of the block.
    fn write(&self, b: Self::Block, v: u64);
    /// Loads the u64 at the start of the block.
    fn read(&self, b: Self::Block) -> u64;
    /// Frees a block of `size` bytes.
    fn free(&self, b: Self::Block, size: usize);
}

#[cold]
#[inline(never)]
fn fail(what: &str, e: impl std::fmt::Debug) -> ! {
    panic!("shmslab {what} failed: {e:?}")
}

/// shmslab through its public, safe API.
#[derive(Clone, Copy)]
pub struct ShmHeap<'a>(pub &'a Slab);

impl Heap for ShmHeap<'_> {
    type Block = SlotRef;
    fn dummy() -> SlotRef {
        SlotRef::from_bytes([0xA5; 16])
    }
    #[inline(always)]
    fn alloc(&self, size: usize) -> SlotRef {
        match self.0.alloc_bytes(size) {
            Ok(r) => r.raw(),
            Err(e) => fail("alloc_bytes", e),
        }
    }
    #[inline(always)]
    fn write(&self, b: SlotRef, v: u64) {
        if let Err(e) = self.0.write(Handle::<u64>::from_raw(b), v) {
            fail("write", e)
        }
    }
    #[inline(always)]
    fn read(&self, b: SlotRef) -> u64 {
        match self.0.read(Handle::<u64>::from_raw(b)) {
            Ok(v) => v,
            Err(e) => fail("read", e),
        }
    }
    #[inline(always)]
    fn free(&self, b: SlotRef, _size: usize) {
        if let Err(e) = self.0.free(b) {
            fail("free", e)
        }
    }
}

/// `std::alloc` (no global allocator is set, so this is the system malloc).
#[derive(Clone, Copy)]
pub struct MallocHeap;

#[inline(always)]
fn layout(size: usize) -> Layout {
    match Layout::from_size_align(size, 8) {
        Ok(l) => l,
        Err(e) => fail("Layout", e),
    }
}

impl Heap for MallocHeap {
    type Block = NonNull<u8>;
    fn dummy() -> NonNull<u8> {
        NonNull::dangling()
    }
    #[inline(always)]
    fn alloc(&self, size: usize) -> NonNull<u8> {
        let l = layout(size);
        // SAFETY: every size the workloads use is non-zero.
        let p = unsafe { std::alloc::alloc(l) };
        NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(l))
    }
    #[inline(always)]
    fn write(&self, b: NonNull<u8>, v: u64) {
        // SAFETY: `b` is a live block of at least 64 bytes, 8-aligned.
        unsafe { b.cast::<u64>().as_ptr().write_volatile(v) }
    }
    #[inline(always)]
    fn read(&self, b: NonNull<u8>) -> u64 {
        // SAFETY: as in `write`; the workloads write before they read.
        unsafe { b.cast::<u64>().as_ptr().read_volatile() }
    }
    #[inline(always)]
    fn free(&self, b: NonNull<u8>, size: usize) {
        // SAFETY: `b` came from `alloc` with this layout and is freed once.
        unsafe { std::alloc::dealloc(b.as_ptr(), layout(size)) }
    }
}

/// rts-alloc: one worker. `Allocator` is `Send` but not `Sync`, so each
/// thread owns its own (joined to the same mapping).
pub struct RtsHeap(pub rts_alloc::Allocator);

impl Heap for RtsHeap {
    type Block = NonNull<u8>;
    fn dummy() -> NonNull<u8> {
        NonNull::dangling()
    }
    #[inline(always)]
    fn alloc(&self, size: usize) -> NonNull<u8> {
        match self.0.allocate(size as u32) {
            Some(p) => p,
            None => fail("(rts-alloc) allocate", "out of slabs"),
        }
    }
    #[inline(always)]
    fn write(&self, b: NonNull<u8>, v: u64) {
        // SAFETY: `b` is a live block of at least 256 bytes (rts-alloc's
        // smallest class), aligned to its size class.
        unsafe { b.cast::<u64>().as_ptr().write_volatile(v) }
    }
    #[inline(always)]
    fn read(&self, b: NonNull<u8>) -> u64 {
        // SAFETY: as in `write`.
        unsafe { b.cast::<u64>().as_ptr().read_volatile() }
    }
    #[inline(always)]
    fn free(&self, b: NonNull<u8>, _size: usize) {
        // SAFETY: `b` came from `allocate` on this allocator's mapping and
        // is freed exactly once.
        unsafe { self.0.free(b) }
    }
}

/// rts-alloc's slab size for every run. Its slabs are per-worker and a slab
/// that becomes empty goes back to the global list, where the next taker
/// resets its free stack (O(slots per slab)); 64 KiB is the size that did
/// best over W1/W2-4k/W4 in a sweep of 16 KiB..2 MiB on this machine (see
/// docs/BENCHMARKS.md). `SHMSLAB_BENCH_RTS_SLAB` overrides it.
pub fn rts_slab_size() -> u32 {
    std::env::var("SHMSLAB_BENCH_RTS_SLAB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64 << 10)
}

/// rts-alloc's workers per file: enough for the parent plus two workers.
pub const RTS_WORKERS: u32 = 4;

/// A file in /dev/shm that is removed when this guard drops (also on panic).
pub struct ShmFile(pub PathBuf);

impl ShmFile {
    /// `/dev/shm/shmslab-bench-<pid>-<tag>`, removed first if it exists.
    pub fn new(tag: &str) -> ShmFile {
        let p = PathBuf::from(format!(
            "/dev/shm/shmslab-bench-{}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        ShmFile(p)
    }
    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A new shmslab segment as the workloads specify: in /dev/shm, starting at
/// 64 KiB, default classes. The caller's [`ShmFile`] removes the file.
pub fn new_slab(file: &ShmFile) -> Slab {
    match Slab::builder()
        .initial_size(64 << 10)
        .replace(true)
        .create(file.path())
    {
        Ok(s) => s,
        Err(e) => fail("create", e),
    }
}

/// A new rts-alloc file of `bytes` bytes; returns the creating worker.
pub fn new_rts(file: &ShmFile, bytes: usize) -> rts_alloc::Allocator {
    let f = open_rw(file.path(), true);
    let slab = rts_slab_size() as usize;
    let bytes = bytes.div_ceil(slab) * slab;
    // SAFETY: the file was just created empty, and `create` is called once.
    match unsafe { rts_alloc::Allocator::create(&f, bytes, RTS_WORKERS, rts_slab_size()) } {
        Ok(a) => a,
        Err(e) => fail("(rts-alloc) create", e),
    }
}

/// Joins an existing rts-alloc file as a new worker (own mapping).
pub fn join_rts(path: &Path) -> rts_alloc::Allocator {
    let f = open_rw(path, false);
    match rts_alloc::Allocator::join(&f) {
        Ok(a) => a,
        Err(e) => fail("(rts-alloc) join", e),
    }
}

/// Another worker on the same in-process mapping.
pub fn join_rts_existing(a: &rts_alloc::Allocator) -> rts_alloc::Allocator {
    match rts_alloc::Allocator::join_from_existing(a) {
        Ok(a) => a,
        Err(e) => fail("(rts-alloc) join_from_existing", e),
    }
}

/// Opens a file read-write (creating it empty when `create`).
pub fn open_rw(path: &Path, create: bool) -> File {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if create {
        o.create(true).truncate(true);
    }
    match o.open(path) {
        Ok(f) => f,
        Err(e) => fail("open", e),
    }
}
