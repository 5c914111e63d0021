//! The four allocators behind one small trait, so every workload is written
//! once and monomorphised per allocator (no dynamic dispatch in the loops).
//!
//! - [`ShmHeap`]: shmslab through its safe API: `alloc_bytes`, then
//!   `write`/`read` of a `Handle<u64>` over the slot, then `free`.
//! - [`MallocHeap`]: `std::alloc` (the system allocator, glibc malloc here),
//!   with `ptr::write_volatile`/`read_volatile`: the in-process ceiling.
//! - [`RtsHeap`]: rts-alloc 5.x, one `Allocator` (one worker) per thread or
//!   process, with volatile accesses like malloc.
//! - [`IceHeap`]: iceoryx2's `PoolAllocator` (iceoryx2-cal), in a
//!   [`IcePool`] file mapped `MAP_SHARED`, with volatile accesses like malloc.

use iceoryx2_bb_memory::bump_allocator::BumpAllocator;
use iceoryx2_bb_memory::pool_allocator::{Allocate, Deallocate};
use iceoryx2_cal::shm_allocator::pool_allocator::{self, InitializedPoolAllocator, PoolAllocator};
use iceoryx2_cal::shm_allocator::{PointerOffset, ShmAllocator};
// The logger iceoryx2's log macros call (an `extern "Rust"` symbol).
use iceoryx2_bb_loggers as _;
use memmap2::MmapMut;
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

// ---------------------------------------------------------- iceoryx2 ---

/// The file layout of an [`IcePool`], as iceoryx2's own shared-memory data
/// segment lays it out (`shared_memory::posix::Memory<PoolAllocator>`: its
/// `AllocatorDetails`, then the allocator's index set, then the payload):
/// this header with the allocator in it at offset 0, the index set (placed
/// by a `BumpAllocator`, as iceoryx2 does), then the buckets, page-aligned.
#[repr(C)]
struct IceHeader {
    magic: u64,
    payload_offset: usize,
    payload_size: usize,
    pool: PoolAllocator,
}

const ICE_MAGIC: u64 = u64::from_le_bytes(*b"sbiceox2");
const PAGE: usize = 4096;

/// iceoryx2's `PoolAllocator` (iceoryx2-cal, the allocator iceoryx2 puts in
/// its shared-memory data segments): one bucket size, a fixed number of
/// buckets, no growth. The allocator's state (a lock-free index set) and the
/// buckets live in one `/dev/shm` file mapped `MAP_SHARED`, so threads and
/// processes that map the file share one pool. As in iceoryx2, allocation
/// returns an offset from the start of the buckets, which each process turns
/// into a pointer into its own mapping.
pub struct IcePool {
    map: MmapMut,
    /// The mapping's start (from `as_mut_ptr`: blocks are written through it).
    base: NonNull<u8>,
}

/// Bucket alignment: 8, as `MallocHeap` asks for.
const ICE_ALIGN: usize = 8;

impl IcePool {
    /// A new pool file of `buckets` buckets of `bucket_size` bytes.
    pub fn create(file: &ShmFile, bucket_size: usize, buckets: usize) -> IcePool {
        let bucket_layout = match Layout::from_size_align(bucket_size, ICE_ALIGN) {
            Ok(l) => l,
            Err(e) => fail("(iceoryx2) Layout", e),
        };
        let config = pool_allocator::Config { bucket_layout };
        let payload_size = bucket_size * buckets;
        let mgmt_offset = size_of::<IceHeader>().next_multiple_of(64);
        let mgmt_size = PoolAllocator::management_size(payload_size, &config);
        let payload_offset = (mgmt_offset + mgmt_size).next_multiple_of(PAGE);
        let f = open_rw(file.path(), true);
        if let Err(e) = f.set_len((payload_offset + payload_size) as u64) {
            fail("(iceoryx2) set_len", e)
        }
        let mut map = map_shared(&f);
        let base = map.as_mut_ptr();
        let hdr = base.cast::<IceHeader>();
        // SAFETY: the mapping is page-aligned and longer than the header,
        // the index set's area and the payload (the file was sized so), and
        // this process is the only one that has it yet. The allocator is
        // written in place before `init` is called on it there, once: its
        // index set keeps a pointer relative to its own address, as in
        // iceoryx2, which does the same in its shared memory.
        unsafe {
            let payload = NonNull::slice_from_raw_parts(
                NonNull::new_unchecked(base.add(payload_offset)),
                payload_size,
            );
            (&raw mut (*hdr).pool).write(PoolAllocator::new_uninit(PAGE, payload, &config));
            let bump = BumpAllocator::new(
                NonNull::new_unchecked(base.add(mgmt_offset)),
                payload_offset - mgmt_offset,
            );
            if let Err(e) = (*hdr).pool.init(&bump) {
                fail("(iceoryx2) PoolAllocator::init", e)
            }
            (&raw mut (*hdr).payload_offset).write(payload_offset);
            (&raw mut (*hdr).payload_size).write(payload_size);
            (&raw mut (*hdr).magic).write(ICE_MAGIC);
        }
        let pool = IcePool::from_map(map);
        assert_eq!(pool.header().pool.bucket_size(), bucket_size);
        assert_eq!(pool.header().pool.number_of_buckets() as usize, buckets);
        pool
    }

    /// Maps an existing pool file (another process's, in W5).
    pub fn open(path: &Path) -> IcePool {
        let f = open_rw(path, false);
        let map = map_shared(&f);
        assert!(
            map.len() >= size_of::<IceHeader>(),
            "iceoryx2 pool file too short"
        );
        let pool = IcePool::from_map(map);
        let h = pool.header();
        assert_eq!(h.magic, ICE_MAGIC, "not an iceoryx2 pool file");
        assert!(h.payload_offset + h.payload_size <= pool.map.len());
        pool
    }

    fn from_map(mut map: MmapMut) -> IcePool {
        let base = match NonNull::new(map.as_mut_ptr()) {
            Some(p) => p,
            None => fail("(iceoryx2) mmap", "null mapping"),
        };
        IcePool { map, base }
    }

    fn header(&self) -> &IceHeader {
        // SAFETY: `create` initialised the header at the start of the file
        // before any other mapping of it existed, and `open` checked its
        // magic; the mapping is page-aligned and at least a header long. The
        // allocator is only used through `&` (its shared state is atomics).
        unsafe { self.base.cast::<IceHeader>().as_ref() }
    }

    /// The pool's bucket size.
    pub fn bucket_size(&self) -> usize {
        self.header().pool.bucket_size()
    }

    /// The pool's number of buckets.
    pub fn buckets(&self) -> usize {
        self.header().pool.number_of_buckets() as usize
    }

    /// The file's size.
    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// Findings, if any: whether every bucket can be allocated (none was
    /// left allocated, the index set is whole). Frees them all again.
    pub fn check_all_free(&self) -> Vec<String> {
        let h = self.heap();
        let (size, n) = (self.bucket_size(), self.buckets());
        let mut got = Vec::with_capacity(n);
        for _ in 0..n {
            match h.pool.allocate(layout(size)) {
                Ok(off) => got.push(off),
                Err(_) => break,
            }
        }
        let mut found = Vec::new();
        if got.len() != n {
            found.push(format!(
                "only {} of {n} buckets could be allocated",
                got.len()
            ));
        }
        for off in got {
            // SAFETY: allocated just above, freed once.
            unsafe { h.pool.deallocate(off, layout(size)) }
        }
        found
    }

    /// A heap on this pool (as many as wanted, one per thread).
    pub fn heap(&self) -> IceHeap<'_> {
        let h = self.header();
        // SAFETY: `payload_offset` is inside the mapping (checked in `open`,
        // true by construction in `create`).
        let base = unsafe { self.base.add(h.payload_offset) };
        IceHeap {
            // SAFETY: `init` was called on the pool when the file was made.
            pool: unsafe { h.pool.assume_init() },
            base,
        }
    }
}

/// Maps a whole file read-write, `MAP_SHARED`.
fn map_shared(f: &File) -> MmapMut {
    // SAFETY: the file is this benchmark's own, in /dev/shm; nothing
    // truncates it while it is mapped.
    match unsafe { MmapMut::map_mut(f) } {
        Ok(m) => m,
        Err(e) => fail("(iceoryx2) mmap", e),
    }
}

/// iceoryx2's `PoolAllocator` on an [`IcePool`]'s mapping: `allocate` gives
/// an offset into the buckets, turned into this mapping's pointer;
/// `deallocate` takes the offset back.
pub struct IceHeap<'a> {
    pool: InitializedPoolAllocator<'a>,
    base: NonNull<u8>,
}

// SAFETY: `base` points into the pool's mapping, which outlives 'a and is
// shared by every thread; the allocator is lock-free and `Sync`.
unsafe impl Send for IceHeap<'_> {}

impl Heap for IceHeap<'_> {
    type Block = NonNull<u8>;
    fn dummy() -> NonNull<u8> {
        NonNull::dangling()
    }
    #[inline(always)]
    fn alloc(&self, size: usize) -> NonNull<u8> {
        match self.pool.allocate(layout(size)) {
            // SAFETY: the offset is that of a bucket, inside the payload,
            // which the mapping covers.
            Ok(off) => unsafe { self.base.add(off.offset()) },
            Err(e) => fail("(iceoryx2) allocate", e),
        }
    }
    #[inline(always)]
    fn write(&self, b: NonNull<u8>, v: u64) {
        // SAFETY: `b` is a live bucket of at least 64 bytes, 8-aligned.
        unsafe { b.cast::<u64>().as_ptr().write_volatile(v) }
    }
    #[inline(always)]
    fn read(&self, b: NonNull<u8>) -> u64 {
        // SAFETY: as in `write`.
        unsafe { b.cast::<u64>().as_ptr().read_volatile() }
    }
    #[inline(always)]
    fn free(&self, b: NonNull<u8>, size: usize) {
        let off = PointerOffset::new(b.as_ptr().addr() - self.base.as_ptr().addr());
        // SAFETY: the offset is that of a bucket `allocate` gave, freed once.
        unsafe { self.pool.deallocate(off, layout(size)) }
    }
}
