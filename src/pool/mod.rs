//! The slot pool: size classes, extents, slot metadata, shared free lists and
//! growth — the raw layer under [`Slab`](crate::Slab), in the way
//! `lock_api`'s raw mutex sits under its typed one.
//!
//! # The protocol
//!
//! A slot's truth is its 8-byte [metadata word](crate::format): generation,
//! state (fresh, free, cached, allocated) and owner or free-list link.
//!
//! - **Hot path, lock-free.** `Slab` keeps per-thread caches of slots in state
//!   *cached* (owned by this process). Allocation pops one and stores
//!   *allocated* with the next generation ([`Pool::activate_cached`]); free is one
//!   compare-and-swap from *allocated, generation g* to *cached, owner me*
//!   ([`Pool::release`]), so of two racing frees exactly one wins, and a
//!   handle of another generation is stale. Generations never wrap: the
//!   free of a slot's last life retires it instead ([`Pool::retire`]).
//! - **Cold path, under the class's shared lock.** Refilling a cache pops the
//!   class's free list or claims never-used (*fresh*) slots past the class's
//!   fresh cursor ([`Pool::take_with_generations`]); flushing pushes slots back
//!   ([`Pool::give`]). Only holders of the lock move slots into or out of
//!   *free*, so if a holder dies mid-way, the next one rebuilds the list from
//!   the metadata words and no slot is lost. A lock-free Treiber pop cannot
//!   give that guarantee: between unlinking a slot and recording its new
//!   owner there is a window no single-word CAS closes.
//! - **Growth** ([`grow`]) appends an extent under the growth lock through a
//!   journal, publishing `current_size`, then the extent count, then the
//!   generation, each with Release; readers that see the count (Acquire) see
//!   the bytes. New slots are fresh: growth writes no per-slot metadata, so it
//!   costs the same for 16 slots or 16 million.
//!
//! Extents are reached through a process-local table of *checked* extents
//! (`ClassView`): an id past it makes the process reload the shared table,
//! check the new extents against `current_size` and the file length
//! (`Memory::observe`, which remaps when the reservation is too small), and
//! only then use them. A peer that later scribbles on the shared table cannot
//! move an extent this process already checked.

pub(crate) mod cell;
pub(crate) mod channel;
mod grow;
pub(crate) mod lock;
pub(crate) mod notify;
mod shared;
mod view;

pub(crate) use lock::{Liveness, Owner, PEER_LOCK_BASE, liveness_lock_error};

use crate::error::{Error, Result};
use crate::fault::crash_point;
use crate::format::{
    self, ExtentInfo, Geometry, LAST_GENERATION, MAX_EXTENTS, MAX_SLOT_ALIGN, Meta, SlotId,
    SlotRef, SlotState, cls, hdr,
};
use crate::region::Memory;
use crate::sync::{AtomicU32, AtomicU64, Mutex, Ordering, fence};

/// The byte ranges of checked extents, sorted and disjoint.
#[derive(Debug, Default)]
pub(crate) struct Spans {
    ranges: Vec<(u64, u64)>,
}

impl Spans {
    /// Adds `[start, end)` unless it overlaps a range already there.
    fn insert(&mut self, start: u64, end: u64) -> bool {
        // Disjoint and sorted by start, so also sorted by end: only the last
        // range starting before `end` can reach past `start`.
        let i = self.ranges.partition_point(|&(s, _)| s < end);
        if i > 0 && self.ranges[i - 1].1 > start {
            return false;
        }
        self.ranges.insert(i, (start, end));
        true
    }

    fn end(&self) -> u64 {
        self.ranges.last().map_or(0, |&(_, e)| e)
    }
}

/// Where one slot's metadata word and data live, and its size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotAddr {
    pub meta: u64,
    pub data: u64,
    pub size: u64,
}

/// A checked extent, written once by the refreshing thread and never
/// changed after. `slots` is written last (Release) and is 0 until then, so
/// a nonzero count read with Acquire (a plain load on x86-64) proves the
/// extent checked and its offsets written: the hot path's one test of an
/// extent, an index below its count, needs no separate look at `known`.
#[derive(Debug)]
struct ExtentView {
    meta: AtomicU64,
    data: AtomicU64,
    slots: AtomicU32,
}

impl ExtentView {
    /// A table of unpublished extents. (A `const` block where the atomics'
    /// constructors are `const`: one fill of zeros, where building 64
    /// views one by one cost attach ~9,000 instructions for 15 classes.)
    #[cfg(not(loom))]
    fn none() -> [ExtentView; MAX_EXTENTS] {
        [const {
            ExtentView {
                meta: AtomicU64::new(0),
                data: AtomicU64::new(0),
                slots: AtomicU32::new(0),
            }
        }; MAX_EXTENTS]
    }

    /// A table of unpublished extents (loom's atomics are built at run time).
    #[cfg(loom)]
    fn none() -> [ExtentView; MAX_EXTENTS] {
        std::array::from_fn(|_| ExtentView {
            meta: AtomicU64::new(0),
            data: AtomicU64::new(0),
            slots: AtomicU32::new(0),
        })
    }
}

/// What this process knows about one size class.
#[derive(Debug)]
pub(crate) struct ClassView {
    /// Slot size (and stride) in bytes.
    pub size: u64,
    /// Alignment every slot of the class has.
    pub align: u64,
    local: Mutex<()>,
    known: AtomicU32,
    extents: [ExtentView; MAX_EXTENTS],
}

impl ClassView {
    /// Makes checked extent `e` usable: its view is written once, the slot
    /// count last, before `known` passes it. (A checked extent has at least
    /// one slot, so a published count is never 0.)
    fn publish(&self, e: usize, info: &ExtentInfo) {
        let view = &self.extents[e];
        view.meta.store(info.offset, Ordering::Relaxed);
        view.data.store(info.data_offset, Ordering::Relaxed);
        view.slots.store(info.slots, Ordering::Release);
        self.known.store(e as u32 + 1, Ordering::Release);
    }

    /// Where slot `i` of extent `e` lives. The caller has checked that `i`
    /// is below the extent's slot count, loaded with Acquire (`locate_at`),
    /// or below its count after loading `e < known` with Acquire
    /// (`for_each_slot`): either way the view was checked and written, which
    /// makes the address one [`Pool::meta`] may use.
    #[inline(always)]
    fn slot_addr(&self, e: usize, i: u32) -> SlotAddr {
        // `% MAX_EXTENTS` is a no-op for a checked `e`; it spares the hot
        // path a bounds check.
        let view = &self.extents[e % MAX_EXTENTS];
        let i = i as u64;
        SlotAddr {
            meta: view.meta.load(Ordering::Relaxed) + 8 * i,
            data: view.data.load(Ordering::Relaxed) + self.size * i,
            size: self.size,
        }
    }

    /// Slots in the first `n` checked extents (`n` at most `known`).
    pub(crate) fn slots_in(&self, n: u32) -> u64 {
        self.extents
            .iter()
            .take(n as usize)
            .map(|v| v.slots.load(Ordering::Relaxed) as u64)
            .sum()
    }
}

/// Counts for one class, read without locks (a snapshot, not a proof).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ClassCounts {
    pub extents: u32,
    pub slots: u64,
    pub free_listed: u64,
    pub fresh: u64,
}

/// The raw slot pool over some shared memory.
pub(crate) struct Pool<M: Memory> {
    pub(crate) mem: M,
    pub(crate) geo: Geometry,
    pub(crate) liveness: Liveness,
    classes: Box<[ClassView]>,
    /// Serialises refreshes, and holds every extent this process has
    /// checked (all classes), to refuse one that overlaps another.
    refresh_local: Mutex<Spans>,
    grow_local: Mutex<()>,
    pub(crate) roots_local: Mutex<()>,
    pub(crate) reclaim_local: Mutex<()>,
    /// The process-local half of the lifetime lock (`crate::lifetime`).
    pub(crate) lifetime_local: Mutex<()>,
    /// How long a waiter lets a live holder keep a shared lock
    /// ([`lock::HOLD_LIMIT`]; unit tests shorten it).
    pub(crate) hold_limit: std::time::Duration,
}

impl<M: Memory> std::fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("geo", &self.geo)
            .finish_non_exhaustive()
    }
}

impl<M: Memory> Pool<M> {
    /// A pool over a segment whose header `geo` was created or checked.
    pub(crate) fn new(mem: M, mut geo: Geometry, liveness: Liveness) -> Result<Self> {
        let checked = std::mem::take(&mut geo.extents);
        let spans = Spans {
            ranges: std::mem::take(&mut geo.spans),
        };
        let classes = geo
            .config
            .class_sizes
            .iter()
            .map(|&size| ClassView {
                size,
                align: (1u64 << size.trailing_zeros()).min(MAX_SLOT_ALIGN),
                local: Mutex::new(()),
                known: AtomicU32::new(0),
                extents: ExtentView::none(),
            })
            .collect();
        let pool = Pool {
            mem,
            geo,
            liveness,
            classes,
            refresh_local: Mutex::new(spans),
            grow_local: Mutex::new(()),
            roots_local: Mutex::new(()),
            reclaim_local: Mutex::new(()),
            lifetime_local: Mutex::new(()),
            hold_limit: lock::HOLD_LIMIT,
        };
        // Start from the extents (and their sorted, disjoint ranges) that
        // `Geometry::load` checked, then load anything published since.
        for (cv, infos) in pool.classes.iter().zip(&checked) {
            for (e, info) in infos.iter().enumerate().take(MAX_EXTENTS) {
                cv.publish(e, info);
            }
        }
        pool.refresh_all()?;
        Ok(pool)
    }

    pub(crate) fn class_count(&self) -> usize {
        self.classes.len()
    }

    pub(crate) fn class(&self, c: usize) -> &ClassView {
        &self.classes[c]
    }

    pub(crate) fn segment_id(&self) -> u32 {
        self.geo.segment_id
    }

    /// Takes the shared lock whose word is at table offset `word` (and its
    /// progress word at `progress`) for `owner`, after the process-local
    /// mutex `local` that guards it.
    pub(crate) fn lock_shared<'a>(
        &'a self,
        local: &'a Mutex<()>,
        word: u64,
        progress: u64,
        owner: Owner,
    ) -> Result<lock::SharedGuard<'a>> {
        let words = lock::LockWords {
            word: self.table_word(word)?,
            progress: self.table_word(progress)?,
        };
        lock::acquire(
            &self.mem,
            &self.geo,
            &self.liveness,
            local,
            words,
            owner,
            self.hold_limit,
        )
    }

    /// The shared word at a table offset (header, class table, roots, peers),
    /// all of which `Geometry` proved to lie inside the file.
    pub(crate) fn table_word(&self, off: u64) -> Result<&AtomicU64> {
        format::word(&self.mem, off)
    }

    /// The growth counter (0 if the header cannot be read).
    pub(crate) fn generation(&self) -> u64 {
        format::load(&self.mem, hdr::GENERATION).unwrap_or(0)
    }

    /// The end of the last published extent (0 if the header cannot be read).
    pub(crate) fn current_size(&self) -> u64 {
        format::load(&self.mem, hdr::CURRENT_SIZE).unwrap_or(0)
    }

    /// Loads extents of class `c` that were published since we last looked,
    /// checking each before it becomes usable. Returns how many are usable.
    pub(crate) fn refresh(&self, c: usize) -> Result<u32> {
        let cv = &self.classes[c];
        let count = format::load(&self.mem, self.geo.class_entry(c) + cls::EXTENT_COUNT)?;
        let known = cv.known.load(Ordering::Acquire);
        if count <= known as u64 {
            return Ok(known);
        }
        if count > MAX_EXTENTS as u64 {
            return Err(Error::corrupt(format!("class {c} claims {count} extents")));
        }
        let mut spans = self.refresh_local.lock();
        let known = cv.known.load(Ordering::Acquire);
        let current = format::load(&self.mem, hdr::CURRENT_SIZE)?;
        // The file must really hold `current` bytes before we map or touch
        // them; a forged size fails here instead of faulting later.
        self.mem.observe(current)?;
        let mut before = cv.slots_in(known);
        for e in known as usize..count as usize {
            let info = self.geo.check_extent(&self.mem, c, e, before, current)?;
            // Another process could publish an extent over one we use; a
            // slot would then be two slots. Refuse it.
            if !spans.insert(info.offset, info.offset + info.bytes) {
                return Err(Error::corrupt(format!(
                    "class {c} extent {e} at {} overlaps another extent",
                    info.offset
                )));
            }
            cv.publish(e, &info);
            before += info.slots as u64;
        }
        Ok(count as u32)
    }

    /// [`refresh`](Self::refresh) for every class.
    pub(crate) fn refresh_all(&self) -> Result<()> {
        for c in 0..self.classes.len() {
            self.refresh(c)?;
        }
        Ok(())
    }

    /// The end of the last extent of any class this process has checked.
    /// Callers that need every published extent refresh all classes first.
    pub(crate) fn extents_end(&self) -> u64 {
        self.refresh_local.lock().end()
    }

    /// Slots in extent `e` of class `c` (0 if this process has not checked it).
    pub(crate) fn extent_slots(&self, c: usize, e: u32) -> u32 {
        let cv = &self.classes[c];
        if e < cv.known.load(Ordering::Acquire) {
            cv.extents[e as usize].slots.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Where slot `id` of class `c` lives, if it exists.
    #[inline(always)]
    pub(crate) fn locate(&self, c: usize, id: SlotId) -> Result<SlotAddr> {
        // A `SlotId`'s extent is below 2^6 = MAX_EXTENTS (30 bits in all).
        self.locate_at(c, id.extent() as usize, id.index())
    }

    /// Where slot `i` of extent `e` of class `c` lives, if it exists; `e` is
    /// below [`MAX_EXTENTS`] (the caller checked), `i` anything.
    ///
    /// One test per level: the class exists, and `i` is below the extent's
    /// published slot count (0 for an extent this process has not checked,
    /// see [`ExtentView`]). Only when that fails does the cold path look for
    /// new extents and tell the errors apart.
    #[inline(always)]
    fn locate_at(&self, c: usize, e: usize, i: u32) -> Result<SlotAddr> {
        let Some(cv) = self.classes.get(c) else {
            return Err(invalid("no such size class"));
        };
        // `% MAX_EXTENTS` is a no-op for the `e` callers pass; it spares a
        // bounds check.
        if i >= cv.extents[e % MAX_EXTENTS].slots.load(Ordering::Acquire) {
            return self.locate_slow(c, e, i);
        }
        Ok(cv.slot_addr(e, i))
    }

    /// `i` is not below the slot count this process has for extent `e`:
    /// the extent may be one published since we last looked.
    #[cold]
    fn locate_slow(&self, c: usize, e: usize, i: u32) -> Result<SlotAddr> {
        let cv = &self.classes[c];
        if e >= cv.known.load(Ordering::Acquire) as usize && e >= self.refresh(c)? as usize {
            return Err(invalid("no such extent"));
        }
        if i >= cv.extents[e % MAX_EXTENTS].slots.load(Ordering::Acquire) {
            return Err(invalid("slot index past its extent"));
        }
        Ok(cv.slot_addr(e, i))
    }

    /// The metadata word of a located slot.
    #[inline(always)]
    pub(crate) fn meta(&self, addr: SlotAddr) -> &AtomicU64 {
        // SAFETY: `addr` came from `locate` or, for a slot `locate` would
        // accept, from `slot_addr` (see its conditions: a count published
        // with Release and seen with Acquire). Either way its extent view was
        // checked (`check_extent`) to lie inside `current_size`, which
        // `observe` made addressable before the view was published; the meta
        // array starts page aligned, so `addr.meta` is 8-aligned.
        unsafe { self.mem.word(addr.meta) }
    }

    /// Checks that `h` names a real slot of this segment.
    ///
    /// The checks of [`SlotRef::well_formed`], split so the hot path makes
    /// two tests instead of five: extent and reserved bits (one compare) and
    /// the generation here; the index bound in `locate_at`, whose test
    /// against the extent's slot count implies it (a count is below
    /// `MAX_SLOTS_PER_EXTENT`). A failure there asks `well_formed` first,
    /// so a malformed handle gets the error it always got.
    #[inline(always)]
    pub(crate) fn check_ref(&self, h: &SlotRef) -> Result<(usize, SlotId, SlotAddr)> {
        if h.segment != self.geo.segment_id {
            return Err(not_ours(self.geo.segment_id, h));
        }
        if !h.shape_ok() {
            return Err(invalid("malformed handle"));
        }
        let c = h.class as usize;
        let e = h.extent as usize;
        let addr = match self.locate_at(c, e, h.index) {
            Ok(addr) => addr,
            Err(e) => return Err(malformed_or(h, e)),
        };
        // `index` is below its extent's slot count, so below 2^24 − 1: the
        // id is exact.
        Ok((c, SlotId::new(e as u32, h.index), addr))
    }

    /// Turns a slot from this owner's cache into an allocation: the next
    /// generation, state *allocated*. Returns its handle and address.
    ///
    /// A cached slot always has a generation left: a slot in its last
    /// generation is retired instead of entering a cache ([`retire`],
    /// [`take`], reclaim). So a cached word in the last generation was
    /// forged; it is retired too, never wrapped, and reported.
    ///
    /// [`retire`]: Pool::retire
    /// [`take`]: Pool::take_with_generations
    ///
    /// (`Slab` uses [`activate_cached`](Pool::activate_cached); the pool's
    /// tests and models allocate through this.)
    #[cfg(test)]
    pub(crate) fn activate(
        &self,
        c: usize,
        id: SlotId,
        owner: Owner,
    ) -> Result<(SlotRef, SlotAddr)> {
        let addr = self.locate(c, id)?;
        let w = self.meta(addr);
        let g = activate_word(w, Meta(w.load(Ordering::Relaxed)), c, id, owner)?;
        // Orders the store above before the caller's data writes: a reader
        // that sees new data then sees the new generation (seqlock rule).
        fence(Ordering::Release);
        crash_point("alloc.meta_stored");
        Ok((SlotRef::new(self.geo.segment_id, c, id, g), addr))
    }

    /// `activate` of a slot whose cached word the caller
    /// remembers: generation `generation` ([`LAST_GENERATION`] when it does
    /// not know it; no cached slot has that generation). The word is still
    /// loaded and must be exactly *cached by owner, generation
    /// `generation`*; but the word stored next is computed from the
    /// remembered generation, so it does not wait for that load (W1 measured
    /// 1.7 ns a pair of waiting). Any other word, or an unknown generation,
    /// gets `activate`'s own checks, on the word loaded (out of line).
    ///
    /// Both ways join before the handle is built: a handle built on each
    /// path would meet in a stack slot written field by field and read back
    /// whole, which stalls store forwarding (see `Slab::alloc_in`).
    #[inline(always)]
    pub(crate) fn activate_cached(
        &self,
        c: usize,
        id: SlotId,
        generation: u32,
        owner: Owner,
    ) -> Result<(SlotRef, SlotAddr)> {
        let addr = self.locate(c, id)?;
        let w = self.meta(addr);
        let m = Meta(w.load(Ordering::Relaxed));
        let g = if m == Meta::new(generation, SlotState::Cached, owner.id)
            && generation != LAST_GENERATION
        {
            let g = generation + 1;
            // As in `activate_word`: only this process touches a slot in
            // its cache.
            w.store(
                Meta::new(g, SlotState::Allocated, owner.id).0,
                Ordering::Relaxed,
            );
            g
        } else {
            activate_word_cold(w, m, c, id, owner)?
        };
        fence(Ordering::Release);
        crash_point("alloc.meta_stored");
        Ok((SlotRef::new(self.geo.segment_id, c, id, g), addr))
    }

    /// Frees the slot `h` names into `owner`'s cache: one CAS from
    /// *allocated, generation g* to *cached by owner*. Returns the class and
    /// id to cache, or `None` when `h` named the slot's last life
    /// ([`LAST_GENERATION`]): such a slot must never enter a cache, so the
    /// same CAS retires it instead ([`retire`](Pool::retire)).
    ///
    /// [`LAST_GENERATION`]: crate::format::LAST_GENERATION
    #[inline(always)]
    pub(crate) fn release(&self, h: &SlotRef, owner: Owner) -> Result<Option<(usize, SlotId)>> {
        if h.generation == LAST_GENERATION {
            return self.retire(h).map(|()| None);
        }
        let (c, id, addr) = self.check_ref(h)?;
        self.swap_live(addr, h, true, |m| {
            Meta::new(m.generation(), SlotState::Cached, owner.id)
        })?;
        crash_point("free.cas_done");
        Ok(Some((c, id)))
    }

    /// Frees the slot a handle of its last life names by retiring it, for
    /// good, so its generation never wraps to one an old handle has: the
    /// free's CAS, to *retired* (two racing frees still have one winner).
    #[cold]
    fn retire(&self, h: &SlotRef) -> Result<()> {
        let (_, _, addr) = self.check_ref(h)?;
        self.swap_live(addr, h, true, |_| Meta::RETIRED)?;
        crash_point("free.cas_done");
        Ok(())
    }

    /// Changes the owner of the live slot `h` names (persist, adopt).
    pub(crate) fn set_owner(&self, h: &SlotRef, owner_id: u32) -> Result<()> {
        let (_, _, addr) = self.check_ref(h)?;
        self.swap_live(addr, h, false, |m| {
            Meta::new(m.generation(), SlotState::Allocated, owner_id)
        })
    }

    /// Hands the live slot `h` names from owner `from` to owner `to`, only
    /// if `from` owns it now: `InvalidHandle` if someone else does (a slot
    /// already handed to a channel, persisted, or another process's).
    pub(crate) fn hand_over(&self, h: &SlotRef, from: u32, to: u32) -> Result<()> {
        let (_, _, addr) = self.check_ref(h)?;
        let w = self.meta(addr);
        let cur = w.load(Ordering::Acquire);
        check_live(Meta(cur), h, false)?;
        if Meta(cur).payload() != from {
            return Err(invalid("the slot is not the sender's to hand over"));
        }
        let next = Meta::new(h.generation, SlotState::Allocated, to).0;
        match w.compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(()),
            Err(now) => {
                check_live(Meta(now), h, false)?;
                Err(invalid("the slot's owner changed while it was handed over"))
            }
        }
    }

    /// Compare-and-swaps the word of the live slot `h` names (at `addr`) to
    /// `to(word)`, retrying while only its owner field changes under us: of
    /// two racers, the second sees the slot no longer live and fails.
    #[inline(always)]
    fn swap_live(
        &self,
        addr: SlotAddr,
        h: &SlotRef,
        freeing: bool,
        to: impl Fn(Meta) -> Meta,
    ) -> Result<()> {
        let w = self.meta(addr);
        let mut cur = w.load(Ordering::Acquire);
        for _ in 0..1024 {
            let m = Meta(cur);
            check_live(m, h, freeing)?;
            match w.compare_exchange_weak(cur, to(m).0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
        Err(keeps_changing(h))
    }

    /// Whether `h` names a live allocation: `false` for the null handle and
    /// for a slot freed (or reused, or retired) since; an error only for a
    /// handle that names no slot of this segment.
    pub(crate) fn is_live(&self, h: &SlotRef) -> Result<bool> {
        if h.is_null() {
            return Ok(false);
        }
        let (_, _, addr) = self.check_ref(h)?;
        Ok(Meta(self.meta(addr).load(Ordering::Acquire)).is_live(h.generation))
    }

    /// The first `n` words of the live slot `h` names, as one slice: the
    /// memory a view of shared atomics (or a lock, or a notifier) works on.
    /// Checked once, here: the words stay mapped for as long as the pool,
    /// but a caller keeping them across a free of the slot acts on its next
    /// life (never outside the slot).
    #[inline]
    pub(crate) fn live_words(&self, h: &SlotRef, n: usize) -> Result<&[AtomicU64]> {
        let (_, _, addr) = self.check_ref(h)?;
        if (n as u64).saturating_mul(8) > addr.size {
            return Err(invalid("the type does not fit the slot it names"));
        }
        check_live(Meta(self.meta(addr).load(Ordering::Acquire)), h, false)?;
        // SAFETY: the slot's data lies inside a checked extent (see `meta`),
        // starts 16-aligned, and `8n` bytes of it fit the slot (just above).
        Ok(unsafe { self.mem.words(addr.data, n) })
    }

    /// The owner of the live slot `h` names (0: the segment), or `None` if
    /// `h` no longer names a live allocation (freed, reused, retired).
    pub(crate) fn slot_owner(&self, h: &SlotRef) -> Result<Option<u32>> {
        let (_, _, addr) = self.check_ref(h)?;
        let m = Meta(self.meta(addr).load(Ordering::Acquire));
        Ok(m.is_live(h.generation).then(|| m.payload()))
    }

    /// The size of the live slot `h` names.
    pub(crate) fn live_size(&self, h: &SlotRef) -> Result<u64> {
        let (_, _, addr) = self.check_ref(h)?;
        check_live(Meta(self.meta(addr).load(Ordering::Acquire)), h, false)?;
        Ok(addr.size)
    }

    /// Checks that `len` bytes at `offset` fit the slot at `addr`.
    #[inline(always)]
    fn check_span(addr: SlotAddr, offset: u64, len: usize) -> Result<()> {
        let capacity = addr.size;
        match offset.checked_add(len as u64) {
            Some(end) if end <= capacity => Ok(()),
            _ => Err(out_of_bounds(offset, len, capacity)),
        }
    }

    /// Copies bytes out of the live slot `h` names. The generation is checked
    /// before and after the copy (the seqlock reader's rule), so a slot freed
    /// and reused under the reader is reported stale, never returned.
    #[inline(always)]
    pub(crate) fn read_at(&self, h: &SlotRef, offset: u64, dst: &mut [u8]) -> Result<()> {
        let (_, _, addr) = self.check_ref(h)?;
        Self::check_span(addr, offset, dst.len())?;
        let w = self.meta(addr);
        check_live(Meta(w.load(Ordering::Acquire)), h, false)?;
        // SAFETY: the span lies inside the slot (check_span), and the slot
        // inside a checked extent (see `meta`).
        unsafe { self.mem.copy_out(addr.data + offset, dst) };
        fence(Ordering::Acquire);
        check_live(Meta(w.load(Ordering::Relaxed)), h, false)
    }

    /// Copies `src` into the live slot `h` names.
    #[inline(always)]
    pub(crate) fn write_at(&self, h: &SlotRef, offset: u64, src: &[u8]) -> Result<()> {
        let (_, _, addr) = self.check_ref(h)?;
        Self::check_span(addr, offset, src.len())?;
        check_live(Meta(self.meta(addr).load(Ordering::Acquire)), h, false)?;
        // SAFETY: as in `read_at`.
        unsafe { self.mem.copy_in(addr.data + offset, src) };
        Ok(())
    }

    /// Writes `src` at `offset` in a slot just activated by this thread:
    /// nobody else can free it before its handle is returned, so the
    /// handle need not be checked again.
    #[inline(always)]
    pub(crate) fn fill_new(&self, addr: SlotAddr, offset: u64, src: &[u8]) -> Result<()> {
        Self::check_span(addr, offset, src.len())?;
        // SAFETY: `addr` came from `activate` (a checked extent, see `meta`)
        // and the span fits the slot.
        unsafe { self.mem.copy_in(addr.data + offset, src) };
        Ok(())
    }

    /// Counts for class `c`, from the shared words (no lock), over every
    /// extent published.
    pub(crate) fn counts(&self, c: usize) -> ClassCounts {
        let _ = self.refresh(c);
        self.counts_checked(c)
    }

    /// [`counts`](Self::counts) over the extents this process has already
    /// checked: no lock at all, not even a process-local one (a forked child
    /// must not wait for a mutex some thread of its parent held).
    pub(crate) fn counts_checked(&self, c: usize) -> ClassCounts {
        let cv = &self.classes[c];
        let known = cv.known.load(Ordering::Acquire);
        let slots_of = |e: usize| cv.extents[e].slots.load(Ordering::Relaxed) as u64;
        let slots = cv.slots_in(known);
        let entry = self.geo.class_entry(c);
        let word = |off| format::load(&self.mem, entry + off).unwrap_or(0);
        let (fe, fi) = cls::cursor_parts(word(cls::FRESH));
        let (fe, fi) = (fe as usize, fi as u64);
        let fresh = (fe..known as usize)
            .map(|e| slots_of(e).saturating_sub(if e == fe { fi } else { 0 }))
            .sum();
        ClassCounts {
            extents: known,
            slots,
            free_listed: word(cls::FREE_COUNT),
            fresh,
        }
    }

    /// Calls `f` with every slot of class `c` and its metadata word.
    /// Extents published by other processes are loaded first: a scan that
    /// missed them would miss their slots.
    pub(crate) fn for_each_slot(
        &self,
        c: usize,
        mut f: impl FnMut(SlotId, &AtomicU64),
    ) -> Result<()> {
        let known = self.refresh(c)? as usize;
        let cv = &self.classes[c];
        for e in 0..known {
            let slots = cv.extents[e].slots.load(Ordering::Relaxed);
            for i in 0..slots {
                // e < known and i < slots: the address `locate` would give.
                f(SlotId::new(e as u32, i), self.meta(cv.slot_addr(e, i)));
            }
        }
        Ok(())
    }

    /// As [`for_each_slot`](Pool::for_each_slot), for the holder of class
    /// `c`'s lock: shows progress on the lock every
    /// [`BEAT_SLOTS`](lock::BEAT_SLOTS) slots, so a scan of any size keeps
    /// its waiters (see `lock`'s hold limit).
    pub(crate) fn for_each_slot_locked(
        &self,
        c: usize,
        mut f: impl FnMut(SlotId, &AtomicU64),
    ) -> Result<()> {
        let progress = self.table_word(self.geo.class_entry(c) + cls::LOCK_PROGRESS)?;
        let mut n = 0u32;
        self.for_each_slot(c, |id, w| {
            n = n.wrapping_add(1);
            if n % lock::BEAT_SLOTS == 0 {
                lock::show_progress(progress);
            }
            f(id, w)
        })
    }
}

#[cold]
fn out_of_bounds(offset: u64, len: usize, capacity: u64) -> Error {
    Error::OutOfBounds {
        offset,
        len: len as u64,
        capacity,
    }
}

#[cold]
fn invalid(why: &'static str) -> Error {
    Error::InvalidHandle { why }
}

/// The error for a handle that `locate` refused: "malformed" if it is (an
/// index past any extent's bound), as the full shape check made it before
/// the bound was left to `locate`; otherwise `locate`'s own.
#[cold]
fn malformed_or(h: &SlotRef, e: Error) -> Error {
    if h.well_formed() {
        e
    } else {
        invalid("malformed handle")
    }
}

/// A handle whose segment id is not this segment's: the null handle, a
/// handle with the null segment id (which no segment has), or another
/// segment's.
#[cold]
fn not_ours(expected: u32, h: &SlotRef) -> Error {
    match h.segment {
        _ if h.is_null() => Error::NullHandle,
        0 => invalid("segment id 0, which no segment has"),
        found => Error::ForeignHandle { expected, found },
    }
}

#[cold]
fn keeps_changing(h: &SlotRef) -> Error {
    Error::corrupt(format!(
        "the metadata word of {h:?} keeps changing; a peer is writing it"
    ))
}

/// A word cached by this process in the last generation, which no honest
/// peer writes (see [`Pool::activate_cached`]): retired rather than wrapped, and
/// reported.
#[cold]
fn retire_forged_cached(w: &AtomicU64, c: usize, id: SlotId) -> Error {
    w.store(Meta::RETIRED.0, Ordering::Release);
    Error::corrupt(format!(
        "class {c} slot {id:?} was cached in its last generation, which only a peer writing its word does (retired)"
    ))
}

/// Retires the slot whose word is `w` if `still(word)` holds, by
/// compare-and-swap: for a word others may race for (reclaim against a late
/// free: of the two CASes exactly one wins). Returns whether it retired it.
pub(crate) fn retire_if(w: &AtomicU64, still: impl Fn(Meta) -> bool) -> bool {
    let mut cur = w.load(Ordering::Acquire);
    // Bounded, as a hostile peer could keep the word changing.
    for _ in 0..1024 {
        if !still(Meta(cur)) {
            return false;
        }
        match w.compare_exchange(cur, Meta::RETIRED.0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
    false
}

/// Activates the slot whose cached word `w` holds `m`: checks that it is
/// cached by `owner` and has a next generation, then stores *allocated*
/// with that generation, which it returns.
#[inline(always)]
fn activate_word(w: &AtomicU64, m: Meta, c: usize, id: SlotId, owner: Owner) -> Result<u32> {
    if !m.is_cached_by(owner.id) {
        return Err(cache_stolen(c, id));
    }
    let Some(g) = m.next_generation() else {
        return Err(retire_forged_cached(w, c, id));
    };
    // Only this process touches a slot in its cache, so a store suffices.
    w.store(
        Meta::new(g, SlotState::Allocated, owner.id).0,
        Ordering::Relaxed,
    );
    Ok(g)
}

/// [`activate_word`] out of line: a cached word other than the one the
/// thread cache remembered (only a peer writing words makes one), or one it
/// did not know (a refill cut short by an error).
#[cold]
#[inline(never)]
fn activate_word_cold(w: &AtomicU64, m: Meta, c: usize, id: SlotId, owner: Owner) -> Result<u32> {
    activate_word(w, m, c, id, owner)
}

#[cold]
fn cache_stolen(c: usize, id: SlotId) -> Error {
    Error::corrupt(format!(
        "class {c} slot {id:?} was taken from this process's cache by someone else"
    ))
}

/// Checks that meta word `m` is the live allocation `h` names. A slot of the
/// handle's generation that is no longer allocated is a double free when
/// `freeing`, and stale otherwise.
#[inline(always)]
fn check_live(m: Meta, h: &SlotRef, freeing: bool) -> Result<()> {
    if m.is_live(h.generation) {
        return Ok(());
    }
    not_live(m, h, freeing)
}

#[cold]
fn not_live(m: Meta, h: &SlotRef, freeing: bool) -> Result<()> {
    if m.generation() != h.generation {
        return Err(Error::StaleHandle {
            handle: h.generation,
            slot: m.generation(),
        });
    }
    match m.state() {
        SlotState::Allocated => Ok(()),
        SlotState::Free | SlotState::Cached if freeing => Err(Error::DoubleFree),
        SlotState::Free | SlotState::Cached => Err(Error::StaleHandle {
            handle: h.generation,
            slot: m.generation(),
        }),
        SlotState::Fresh => Err(Error::InvalidHandle {
            why: "slot was never allocated",
        }),
        // Generation 0: no well-formed handle gets this far.
        SlotState::Retired => Err(Error::StaleHandle {
            handle: h.generation,
            slot: m.generation(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, not(loom)))]
mod generation_tests;

#[cfg(all(test, not(loom)))]
mod lock_tests;

#[cfg(all(test, not(loom)))]
mod cell_tests;

#[cfg(all(test, loom))]
mod loom_models;
