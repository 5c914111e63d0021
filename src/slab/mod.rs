//! [`Slab`]: the one front door.

mod builder;
mod bytes;
mod cache;
mod local;
mod stats;

pub use builder::{DEFAULT_CLASSES, DEFAULT_PEERS, SlabBuilder};
pub use bytes::BytesHandle;
pub use stats::{ClassStats, Stats};

use crate::error::{Error, Result};
use crate::fork::Origin;
use crate::format::{SlotId, SlotRef};
use crate::lifetime::{self, Departure, FileLifetime};
use crate::peers::{self, ReclaimReport};
use crate::pool::{Owner, Pool, SlotAddr};
use crate::region::MmapRegion;
use crate::sync::{AtomicBool, Ordering};
use cache::{ThreadCache, UNKNOWN_GENERATION, cache_limit};
use local::PerThread;
use std::path::Path;

/// A process's attachment to a shared-memory segment: allocate slots, read
/// and write them, free them, find named roots.
///
/// Many processes attach to one file; each may allocate and free, and a slot
/// allocated in one may be freed in another. When a class runs dry the file
/// grows by an extent while everyone stays attached. `Slab` is `Send + Sync`:
/// share it between threads with `&Slab` or an `Arc`. Each thread keeps a
/// small cache of free slots, so the hot path takes no lock.
///
/// Dropping a `Slab` detaches: its cached slots go back to the shared lists
/// and its live allocations are handed to the segment (they stay valid for
/// other processes). A process that dies without dropping leaves its slots
/// to [`reclaim_dead`](Slab::reclaim_dead). What happens to the file is the
/// segment's [`FileLifetime`], chosen at create: by default
/// ([`FileLifetime::Keep`]) it stays, whoever created it and whoever leaves
/// last.
///
/// A `Slab` belongs to the process that made it. In a child made by `fork`
/// the inherited one (whose peer row, lock token and caches are the
/// parent's) refuses every operation with [`Error::ForkedProcess`], and
/// dropping it does nothing: the child attaches again with
/// [`Slab::attach`] (or [`attach_fd`](Slab::attach_fd)).
///
/// ```
/// use shmslab::Slab;
/// let dir = tempfile::tempdir()?;
/// let slab = Slab::builder().create(dir.path().join("seg.shm"))?;
///
/// let slot = slab.alloc_bytes(100)?;           // lands in the 128-byte class
/// slab.write_bytes(slot, 0, b"hello")?;
/// let mut buf = [0u8; 5];
/// slab.read_bytes(slot, 0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// slab.free(slot)?;
/// assert!(slab.free(slot).is_err());            // double free is an error
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Slab {
    /// Reached through [`Slab::pool`], which refuses in a forked child;
    /// only this module (and its children) can reach it directly.
    pool: Pool<MmapRegion>,
    pub(crate) row: usize,
    pub(crate) me: Owner,
    /// The process that attached. A forked child inherits the `Slab` but
    /// not its row, lock token or caches: it must neither use nor detach them.
    origin: Origin,
    /// Each thread's cache, in an allocation of its own so that its stack
    /// lengths (written on every alloc and free) never share a cache line
    /// with another thread's: two threads' borrow flags on one line once
    /// made two threads slower than one. `None` from it during thread
    /// teardown.
    caches: PerThread<ThreadCache>,
    limits: Box<[usize]>,
    /// Class for each size up to `SMALL_SIZES` in 16-byte steps.
    small_classes: Box<[u8]>,
    owns_slots: AtomicBool,
    /// What detaching does with the file: the segment's lifetime, unless
    /// [`Slab::keep_file`] or [`Slab::remove_file_on_drop`] said otherwise.
    departure: Departure,
    /// Set once the row is given back ([`Slab::detach`]), so drop does not
    /// detach again.
    detached: bool,
}

/// The error of a forked child's call (kept off the hot path).
#[cold]
fn forked() -> Error {
    Error::ForkedProcess
}

/// Sizes up to this many bytes find their class through a table.
const SMALL_SIZES: u64 = 4096;

impl std::fmt::Debug for Slab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slab")
            .field("path", &self.path())
            .field("segment_id", &self.segment_id())
            .field("row", &self.row)
            .finish_non_exhaustive()
    }
}

impl Slab {
    /// Starts building a new segment.
    pub fn builder() -> SlabBuilder {
        SlabBuilder::default()
    }

    /// The pool, or [`Error::ForkedProcess`] in a forked child: every
    /// operation that touches a lock, a cache, a row or a slot goes through
    /// here first. One relaxed load on the hot path.
    #[inline(always)]
    pub(crate) fn pool(&self) -> Result<&Pool<MmapRegion>> {
        if self.origin.is_inherited() {
            return Err(forked());
        }
        Ok(&self.pool)
    }

    /// Whether this is a forked child's copy (see [`Error::ForkedProcess`]).
    pub(crate) fn is_inherited(&self) -> bool {
        self.origin.is_inherited()
    }

    fn open(pool: Pool<MmapRegion>) -> Result<Slab> {
        let origin = Origin::here()?;
        let (row, me) = peers::register(&pool)?;
        // With the row registered, ask to be let in: a segment its last
        // process removed (after we opened it) is refused, never joined.
        if let Err(e) = lifetime::admit(&pool, me, || {
            pool.mem.unlink_if_ours();
        }) {
            let _ = peers::withdraw(&pool, row);
            return Err(e);
        }
        // A growth a dead process cut short is finished now, not left for a
        // next growth that may never come (check() notes it until then).
        // Best effort: attach does not fail for it (a full disk, say) — the
        // next reclaim_dead or growth repairs it, and reports what fails.
        let _ = pool.repair_dead_growth(me);
        let limits = (0..pool.class_count())
            .map(|c| cache_limit(pool.class(c).size))
            .collect();
        let sizes = &pool.geo.config.class_sizes;
        // Entry k: the smallest class whose slots hold 16k bytes. Sizes are
        // strictly increasing (`Config::check`), so each class fills the
        // entries up to its size that no smaller class took: one fill per
        // class, not a search per entry (5,000 instructions of an attach).
        let mut small_classes = Vec::with_capacity(SMALL_SIZES as usize / 16 + 1);
        for (c, &size) in sizes.iter().enumerate() {
            let upto = (size.min(SMALL_SIZES) / 16) as usize + 1;
            if small_classes.len() < upto {
                small_classes.resize(upto, c as u8);
            }
        }
        let departure = Departure::for_lifetime(pool.geo.config.lifetime);
        Ok(Slab {
            pool,
            row,
            me,
            origin,
            caches: PerThread::new(),
            limits,
            small_classes: small_classes.into_boxed_slice(),
            owns_slots: AtomicBool::new(false),
            departure,
            detached: false,
        })
    }

    /// The segment file's path (empty when attached by descriptor).
    pub fn path(&self) -> &Path {
        self.pool.mem.path()
    }

    /// The segment's random id, carried by every handle made in it.
    pub fn segment_id(&self) -> u32 {
        self.pool.segment_id()
    }

    /// The slot sizes of the segment's classes.
    pub fn class_sizes(&self) -> &[u64] {
        &self.pool.geo.config.class_sizes
    }

    /// How long the segment's file stays at its path (chosen at create).
    pub fn lifetime(&self) -> FileLifetime {
        self.pool.geo.config.lifetime
    }

    /// Keep the file when this `Slab` detaches, whatever the segment's
    /// [`FileLifetime`]: under `RemoveWhenLastDetaches`, if this is the last
    /// process, the file stays (for a later process's last detach to
    /// remove). Undoes [`remove_file_on_drop`](Self::remove_file_on_drop).
    /// With `Keep` (the default) this is what happens anyway.
    pub fn keep_file(&mut self) {
        self.departure = Departure::Leave;
    }

    /// Remove the file when this `Slab` detaches, whatever the segment's
    /// [`FileLifetime`] and whoever else is attached: they keep working, but
    /// no process attaches after (one that opened the file already gets
    /// [`Error::SegmentRemoved`]), and a later last detacher removes
    /// nothing. Does nothing for an `Unlinked` segment (it has no path), or
    /// in a forked child (the `Slab` is the parent's there, and so is the
    /// file).
    pub fn remove_file_on_drop(&mut self) {
        if !self.is_inherited() && self.lifetime() != FileLifetime::Unlinked {
            self.departure = Departure::Remove;
        }
    }

    /// Detaches now, as dropping does, and says whether this detach removed
    /// the file (the last process of a `RemoveWhenLastDetaches` segment, or
    /// [`remove_file_on_drop`](Self::remove_file_on_drop)).
    ///
    /// An error means the detach was not clean: a class's slots could not
    /// be handed back (the row is then left to [`reclaim_dead`](Self::reclaim_dead),
    /// as a dead process's would be, and the file stays), or the file's
    /// fate could not be decided (the file stays).
    pub fn detach(mut self) -> Result<bool> {
        self.pool()?;
        self.leave()
    }

    /// The clean detach behind [`detach`](Self::detach) and drop (once).
    fn leave(&mut self) -> Result<bool> {
        if std::mem::replace(&mut self.detached, true) {
            return Ok(false);
        }
        let pool = &self.pool;
        peers::detach(
            pool,
            self.row,
            self.me,
            self.owns_slots.load(Ordering::Relaxed),
            self.departure,
            || pool.mem.unlink_if_ours(),
        )
    }

    /// The segment's growth counter: bumped every time an extent is added.
    /// (A plain read of the header, which works in a forked child too.)
    pub fn generation(&self) -> u64 {
        self.pool.generation()
    }

    /// Picks up growth made by other processes now, instead of lazily when a
    /// handle names a new extent. Returns the generation.
    pub fn refresh(&self) -> Result<u64> {
        self.pool()?.refresh_all()?;
        Ok(self.generation())
    }

    /// The calling thread's cache. The last one used is remembered in a
    /// plain thread-local, so the hot path is a compare, not a table lookup.
    /// `None` while the thread's thread-locals are being destroyed: the
    /// caller then takes its uncached path (see `local`).
    #[inline(always)]
    fn cache(&self) -> Option<&ThreadCache> {
        match self.caches.remembered() {
            Some(cache) => Some(cache),
            None => self.cache_slow(),
        }
    }

    #[cold]
    fn cache_slow(&self) -> Option<&ThreadCache> {
        self.caches.get_or(|| {
            // A thread with a cache can hold slots: detaching must scan.
            self.owns_slots.store(true, Ordering::Relaxed);
            ThreadCache::new(&self.limits)
        })
    }

    /// The smallest class whose slots hold `size` bytes aligned to `align`.
    #[inline(always)]
    fn class_for(&self, size: u64, align: u64) -> Result<usize> {
        // Every slot is 16-aligned, so small sizes take a table lookup.
        if align <= 16 {
            if let Some(&c) = self.small_classes.get(size.div_ceil(16) as usize) {
                return Ok(c as usize);
            }
        }
        self.class_for_slow(size, align)
    }

    #[cold]
    fn class_for_slow(&self, size: u64, align: u64) -> Result<usize> {
        let n = self.pool.class_count();
        let largest = self.pool.class(n - 1).size;
        if size > largest {
            return Err(Error::TooLarge { size, largest });
        }
        (0..n)
            .find(|&c| {
                let cv = self.pool.class(c);
                cv.size >= size && cv.align >= align
            })
            .ok_or_else(|| Error::Misaligned {
                align,
                max: (0..n).map(|c| self.pool.class(c).align).max().unwrap_or(0),
            })
    }

    /// Allocates a slot for `size` bytes aligned to `align`: the one path of
    /// every allocation. Returns the pool too, so the caller fills the slot
    /// without checking for a fork again.
    #[inline(always)]
    pub(crate) fn alloc_slot(
        &self,
        size: u64,
        align: u64,
    ) -> Result<(&Pool<MmapRegion>, SlotRef, SlotAddr)> {
        // First: a forked child's request fails the same whatever its size,
        // and never reaches the cache (its copy holds the parent's slots).
        let pool = self.pool()?;
        let c = self.class_for(size, align)?;
        let (raw, addr) = self.alloc_in(pool, c, align)?;
        Ok((pool, raw, addr))
    }

    /// Allocates from class `first` or, when it is empty, the next larger
    /// class with a free slot and alignment `align`.
    ///
    /// The slow path hands back only a class and a slot id, and the handle
    /// is built after the two paths join: a handle built on both paths would
    /// meet in a stack slot, written field by field and read back whole,
    /// which stalls store forwarding (a third of W1's time, measured).
    #[inline(always)]
    fn alloc_in(
        &self,
        pool: &Pool<MmapRegion>,
        first: usize,
        align: u64,
    ) -> Result<(SlotRef, SlotAddr)> {
        let (c, (id, generation)) = match self.cache() {
            Some(cache) => match cache.stack(first).pop() {
                Some(entry) => (first, entry),
                None => self.alloc_slow(cache, first, align)?,
            },
            None => self.take_uncached(first, align)?,
        };
        pool.activate_cached(c, id, generation, self.me)
    }

    /// A slot for a thread whose thread-locals are being destroyed: a cache
    /// of its own for this one call, emptied back to the shared lists.
    #[cold]
    fn take_uncached(&self, first: usize, align: u64) -> Result<(usize, (SlotId, u32))> {
        self.owns_slots.store(true, Ordering::Relaxed);
        let cache = ThreadCache::new(&self.limits);
        let got = self.alloc_slow(&cache, first, align);
        // The slot is ours either way; a failed flush leaves the rest cached
        // by us, for detach or reclaim.
        let _ = self.flush_all(&cache);
        got
    }

    /// The refill path: the smallest fitting class is refilled from its
    /// free list or fresh slots, and grows when both are empty. Only when
    /// growth is refused (`max_size`, extent limit) does allocation fall
    /// through to larger classes that have a free slot. Returns a slot taken
    /// out of the cache (class and id), for the caller to activate.
    ///
    /// Falling through before growing was tried first and measured: small
    /// requests drain the larger classes, which then grow for their own
    /// requests, and the tour's file came out 2× (one class up) to 3×
    /// (any class) larger than with growth first.
    #[cold]
    fn alloc_slow(
        &self,
        cache: &ThreadCache,
        first: usize,
        align: u64,
    ) -> Result<(usize, (SlotId, u32))> {
        // Growth can be consumed by other processes before we get a slot of
        // it; a few rounds settle that, more would mean something is wrong.
        // (`class_for` chose `first` for `align`, and its stack is empty.)
        for _ in 0..16 {
            let (got, seen) = self.refill(cache, first)?;
            if let Some(id) = got {
                return Ok((first, id));
            }
            match self.pool.grow(first, seen, self.me) {
                Ok(()) => {}
                Err(e @ (Error::OutOfSpace { .. } | Error::ClassFull { .. })) => {
                    return self.fall_through(cache, first, align)?.ok_or(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::corrupt(
            "allocation found no slot after 16 growths; the class table is not advancing",
        ))
    }

    /// Growth of class `first` was refused: a slot of a larger class with
    /// alignment `align` that has one cached or on its shared list.
    fn fall_through(
        &self,
        cache: &ThreadCache,
        first: usize,
        align: u64,
    ) -> Result<Option<(usize, (SlotId, u32))>> {
        for c in first + 1..self.pool.class_count() {
            if self.pool.class(c).align < align {
                continue;
            }
            if let Some(id) = cache.stack(c).pop() {
                return Ok(Some((c, id)));
            }
            if self.pool.has_free(c) {
                if let (Some(id), _) = self.refill(cache, c)? {
                    return Ok(Some((c, id)));
                }
            }
        }
        Ok(None)
    }

    /// Moves a batch of class `c`'s free or fresh slots from the shared
    /// list into the cache and pops one. Also returns the extent count the
    /// take saw, which growth needs.
    fn refill(&self, cache: &ThreadCache, c: usize) -> Result<(Option<(SlotId, u32)>, u32)> {
        let stack = cache.stack(c);
        let batch = (stack.limit() / 2).max(1);
        let mut scratch = cache.take_scratch();
        let mut generations = cache.take_generations();
        // Slots taken before an error are ours (cached by us): keep them.
        let taken =
            self.pool
                .take_with_generations(c, self.me, batch, &mut scratch, &mut generations);
        // A slot whose generation the take could not tell (after an error)
        // is activated from its word as loaded.
        for (k, &id) in scratch.iter().enumerate() {
            let generation = generations.get(k).copied().unwrap_or(UNKNOWN_GENERATION);
            stack.push(id, generation);
        }
        cache.put_scratch(scratch);
        cache.put_generations(generations);
        let seen = taken?;
        Ok((stack.pop(), seen))
    }

    /// Frees the slot a handle names. Exactly one of two racing frees of one
    /// handle succeeds; the other gets [`Error::DoubleFree`]. A handle from an
    /// earlier life of the slot gets [`Error::StaleHandle`], one that names no
    /// slot [`Error::InvalidHandle`] (or [`Error::ForeignHandle`]).
    ///
    /// Any other error (`Corrupt`, or an I/O error) comes from returning this
    /// thread's surplus cached slots to the shared list afterwards: the slot
    /// itself *was* freed, and freeing it again is a double free.
    #[inline(always)]
    pub fn free(&self, handle: impl Into<SlotRef>) -> Result<()> {
        let h = handle.into();
        let pool = self.pool()?;
        // None: the slot's last life, retired rather than cached.
        let Some((c, id)) = pool.release(&h, self.me)? else {
            return Ok(());
        };
        let Some(cache) = self.cache() else {
            return pool.give(c, self.me, &[id]);
        };
        let stack = cache.stack(c);
        if stack.is_full() {
            return self.flush_and_push(cache, c, id, h.generation);
        }
        // The word is now *cached by us* in the handle's generation.
        stack.push_unfull(id, h.generation);
        Ok(())
    }

    /// A full cache stack: return its older half to the shared list, then
    /// push `id` (which is freed either way).
    #[cold]
    fn flush_and_push(
        &self,
        cache: &ThreadCache,
        c: usize,
        id: SlotId,
        generation: u32,
    ) -> Result<()> {
        let stack = cache.stack(c);
        let result = self.flush(cache, c, stack.limit() / 2);
        stack.push(id, generation);
        result
    }

    /// Returns all but `keep` of a cache stack's oldest slots to the shared list.
    #[cold]
    fn flush(&self, cache: &ThreadCache, c: usize, keep: usize) -> Result<()> {
        let stack = cache.stack(c);
        let n = stack.len().saturating_sub(keep);
        if n == 0 {
            return Ok(());
        }
        let mut ids = cache.take_scratch();
        stack.oldest(n, &mut ids);
        let result = self.pool.give(c, self.me, &ids);
        cache.put_scratch(ids);
        stack.drop_oldest(n);
        result
    }

    /// Returns the calling thread's cached free slots to the shared lists,
    /// so other processes can use them.
    pub fn trim(&self) -> Result<()> {
        self.pool()?;
        let Some(cache) = self.cache() else {
            return Ok(());
        };
        self.flush_all(cache)
    }

    /// Returns every slot of every stack of `cache` to the shared lists
    /// (all classes are tried; the last error is reported).
    fn flush_all(&self, cache: &ThreadCache) -> Result<()> {
        let mut result = Ok(());
        for c in 0..cache.stacks().len() {
            if let Err(e) = self.flush(cache, c, 0) {
                result = Err(e);
            }
        }
        result
    }

    /// The size of the live slot a handle names (at least what was asked
    /// for: the size of its class).
    #[inline]
    pub fn capacity(&self, handle: impl Into<SlotRef>) -> Result<usize> {
        self.pool()?
            .live_size(&handle.into())
            .map(|size| size as usize)
    }

    /// Whether the handle names a live allocation now: `false` for a null
    /// handle and for a slot freed since (whoever freed it). An error only
    /// for a handle that names no slot of this segment (forged, or another
    /// segment's), or in a forked child.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// use shmslab::Handle;
    /// let h = slab.alloc(1u64)?;
    /// assert!(slab.is_live(h)?);
    /// slab.free(h)?;
    /// assert!(!slab.is_live(h)?);
    /// assert!(!slab.is_live(Handle::<u64>::NULL)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_live(&self, handle: impl Into<SlotRef>) -> Result<bool> {
        self.pool()?.is_live(&handle.into())
    }

    /// Hands the live slot to the segment: it is no longer freed if this
    /// process dies (use it for data that must outlive its allocator).
    pub fn persist(&self, handle: impl Into<SlotRef>) -> Result<()> {
        self.pool()?.set_owner(&handle.into(), 0)
    }

    /// Makes this process the owner of a live slot another process allocated
    /// (for example a message it received), so the slot is freed if this
    /// process dies rather than its allocator.
    pub fn adopt(&self, handle: impl Into<SlotRef>) -> Result<()> {
        let pool = self.pool()?;
        self.owns_slots.store(true, Ordering::Relaxed);
        pool.set_owner(&handle.into(), self.me.id)
    }

    /// Frees the slots of every attached process that has died (killed,
    /// crashed, or exited without dropping its `Slab`) and clears their
    /// rows of the peer table. Slots a named root points at are kept.
    ///
    /// Safe to call at any time from any process: liveness comes from the
    /// kernel, and a late `free` of a slot being reclaimed races through the
    /// same compare-and-swap, so nothing is freed twice.
    pub fn reclaim_dead(&self) -> Result<ReclaimReport> {
        let mut report = peers::reclaim_dead(self.pool()?, (self.row, self.me))?;
        report.redelivered = self.redeliver_in_root_channels()? as u64;
        Ok(report)
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        // Dropped by a panic: do not risk a second one (an abort). Leave the
        // row as a dead peer's: its descriptor closes now, so the kernel
        // drops its liveness lock and reclaim frees its slots.
        if std::thread::panicking() {
            return;
        }
        // A forked child's copy: the row, its lock and the cached slots are
        // the parent's, who is still using them. (The fields drop too: the
        // region keeps the file and the liveness descriptor, see `fork`.)
        if self.origin.is_elsewhere() {
            return;
        }
        let _ = self.leave();
    }
}

/// The segment file's descriptor (the mapping's; it holds no lock). Hand a
/// duplicate to another process — over a Unix socket (`SCM_RIGHTS`) or by
/// inheritance — for [`Slab::attach_fd`]: the only way to join an
/// [`Unlinked`](FileLifetime::Unlinked) segment.
impl std::os::fd::AsFd for Slab {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self.pool.mem.file())
    }
}
