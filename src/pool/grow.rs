//! Growth: appending an extent to a class while every process stays attached.
//!
//! Under the growth lock (a process-local mutex, then the shared lock word):
//!
//! 1. repair what a grower that died left behind (the journal says what it
//!    was doing);
//! 2. re-read the class: if another process grew it since the caller looked,
//!    return;
//! 3. write the journal: class, extent, offset (= `current_size`), bytes;
//! 4. reserve the bytes (`fallocate`) and map them;
//! 5. write the extent entry, store `current_size`, store the extent count,
//!    bump `generation` — each Release, in that order, so a reader that sees
//!    the count sees an entry and a size that cover it;
//! 6. clear the journal.
//!
//! Every step is idempotent, so repair is "finish the publish if the size was
//! stored, else forget it" — the space past `current_size` is simply reused.

use super::lock::SharedGuard;
use super::{Owner, Pool};
use crate::error::{Error, Result};
use crate::fault::crash_point;
use crate::format::{self, MAX_EXTENTS, cls, hdr, journal};
use crate::region::Memory;
use crate::sync::Ordering;

/// How much of a new extent is reserved between two signs of progress on
/// the growth lock (a page multiple, so every chunk ends on a page).
const RESERVE_CHUNK: u64 = 64 << 20;

impl<M: Memory> Pool<M> {
    /// Appends an extent to class `c`, unless its extent count is no longer
    /// `seen` (someone else grew it first).
    pub(crate) fn grow(&self, c: usize, seen: u32, owner: Owner) -> Result<()> {
        let guard = self.lock_growth(owner)?;
        crash_point("grow.locked");
        self.repair_growth()?;

        let entry = self.geo.class_entry(c);
        let count = format::load(&self.mem, entry + cls::EXTENT_COUNT)?;
        if count != seen as u64 {
            return Ok(());
        }
        if count >= MAX_EXTENTS as u64 {
            return Err(Error::ClassFull {
                class: c,
                max_extents: MAX_EXTENTS,
            });
        }
        let known = self.refresh(c)?;
        let before = self.class(c).slots_in(known);
        // The new extent goes after every published extent. current_size
        // says where that is; a forged smaller one must not put the extent
        // over live slots, so the checked extents have the last word.
        let end = self.published_end()?;
        let offset = format::load(&self.mem, hdr::CURRENT_SIZE)?;
        if offset % self.geo.config.page_size != 0 || offset < self.geo.data_start {
            return Err(Error::corrupt(format!("current_size {offset}")));
        }
        let offset = offset.max(end);
        let (slots, bytes) = self.extent_size(c, before, offset)?;

        let j = hdr::JOURNAL;
        self.table_word(j + journal::CLASS)?
            .store(c as u64, Ordering::Relaxed);
        self.table_word(j + journal::EXTENT)?
            .store(count, Ordering::Relaxed);
        self.table_word(j + journal::OFFSET)?
            .store(offset, Ordering::Relaxed);
        self.table_word(j + journal::BYTES)?
            .store(bytes, Ordering::Relaxed);
        self.table_word(j + journal::SLOTS)?
            .store(slots as u64, Ordering::Relaxed);
        self.table_word(j + journal::STATE)?
            .store(journal::ACTIVE, Ordering::Release);
        crash_point("grow.journaled");

        if let Err(e) = self.reserve(&guard, offset, offset + bytes) {
            self.table_word(j + journal::STATE)?
                .store(journal::IDLE, Ordering::Release);
            return Err(e);
        }
        crash_point("grow.reserved");
        self.publish_extent(c, count as usize, offset, slots, bytes)
    }

    /// Reserves and maps `[from, to)` in chunks of [`RESERVE_CHUNK`],
    /// showing progress on the growth lock between them: an extent's size
    /// grows with the segment, and its `fallocate` (or the block-by-block
    /// fallback) must not look to waiters like a wedged holder.
    fn reserve(&self, guard: &SharedGuard<'_>, from: u64, to: u64) -> Result<()> {
        let mut at = from;
        while at < to {
            at = at.saturating_add(RESERVE_CHUNK).min(to);
            self.mem.grow_to(at)?;
            guard.show_progress();
        }
        Ok(())
    }

    /// Takes the growth lock (local mutex, then the shared word).
    fn lock_growth(&self, owner: Owner) -> Result<SharedGuard<'_>> {
        self.lock_shared(&self.grow_local, hdr::GROW_LOCK, hdr::GROW_PROGRESS, owner)
    }

    /// The end of the last published extent of any class (all classes are
    /// refreshed first; each new extent is checked for overlap as it is).
    fn published_end(&self) -> Result<u64> {
        self.refresh_all()?;
        Ok(self.extents_end().max(self.geo.data_start))
    }

    /// The growth journal's state word. With `owner`, it is read under the
    /// growth lock, so an active journal is one a dead grower left.
    pub(crate) fn growth_journal_state(&self, owner: Option<Owner>) -> Result<u64> {
        let _guard = owner.map(|owner| self.lock_growth(owner)).transpose()?;
        self.journal_state()
    }

    /// Finishes or forgets a growth whose grower died, if the journal shows
    /// one; returns whether it did. Attach and `reclaim_dead` call it so a
    /// dead grower's journal does not wait for the next growth (which may
    /// never come). An idle journal costs one load and takes no lock; an
    /// active one is judged under the growth lock, where it can only be a
    /// dead grower's (a live one would still hold the lock).
    pub(crate) fn repair_dead_growth(&self, owner: Owner) -> Result<bool> {
        if self.journal_state()? == journal::IDLE {
            return Ok(false);
        }
        // A live grower (a peer, or another thread of this pool: the word
        // then holds our own token, which liveness cannot judge) finishes its
        // own growth; attach and reclaim must not wait behind its fallocate.
        let holder = format::load(&self.mem, hdr::GROW_LOCK)?;
        if holder == owner.token
            || (holder != 0
                && !self
                    .liveness
                    .token_dead(&self.mem, &self.geo, holder, true)?)
        {
            return Ok(false);
        }
        let _guard = self.lock_growth(owner)?;
        if self.journal_state()? == journal::IDLE {
            return Ok(false);
        }
        self.repair_growth()?;
        Ok(true)
    }

    fn journal_state(&self) -> Result<u64> {
        format::load(&self.mem, hdr::JOURNAL + journal::STATE)
    }

    /// How many slots the next extent of class `c` gets, and its bytes: what
    /// the growth rule allows, shrunk to fit under `max_size` if one is set.
    fn extent_size(&self, c: usize, before: u64, offset: u64) -> Result<(u32, u64)> {
        let max_size = self.geo.config.max_size;
        let fits = |slots: u32| -> Option<u64> {
            let (_, bytes) = self.geo.extent_layout(c, slots)?;
            let end = offset.checked_add(bytes)?;
            (max_size == 0 || end <= max_size).then_some(bytes)
        };
        let want = self.geo.max_extent_slots(c, before);
        if let Some(bytes) = fits(want) {
            return Ok((want, bytes));
        }
        if fits(1).is_none() {
            let needed = self
                .geo
                .extent_layout(c, 1)
                .and_then(|(_, b)| offset.checked_add(b))
                .unwrap_or(u64::MAX);
            return Err(Error::OutOfSpace { needed, max_size });
        }
        // The largest extent that still fits: binary search in [1, want).
        let (mut lo, mut hi) = (1u32, want);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid).is_some() {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok((lo, fits(lo).expect("checked")))
    }

    /// Steps 5 and 6: make the reserved extent visible to everyone.
    fn publish_extent(
        &self,
        c: usize,
        extent: usize,
        offset: u64,
        slots: u32,
        bytes: u64,
    ) -> Result<()> {
        let at = self.geo.extent_entry(c, extent);
        self.table_word(at)?.store(offset, Ordering::Relaxed);
        self.table_word(at + 8)?
            .store(slots as u64, Ordering::Relaxed);
        crash_point("grow.entry_written");
        self.table_word(hdr::CURRENT_SIZE)?
            .fetch_max(offset + bytes, Ordering::Release);
        crash_point("grow.size_stored");
        self.table_word(self.geo.class_entry(c) + cls::EXTENT_COUNT)?
            .store(extent as u64 + 1, Ordering::Release);
        crash_point("grow.published");
        self.table_word(hdr::GENERATION)?
            .fetch_add(1, Ordering::AcqRel);
        crash_point("grow.generation_bumped");
        self.table_word(hdr::JOURNAL + journal::STATE)?
            .store(journal::IDLE, Ordering::Release);
        Ok(())
    }

    /// Finishes or forgets the growth a dead grower left in the journal.
    /// Caller holds the growth lock.
    fn repair_growth(&self) -> Result<()> {
        let j = hdr::JOURNAL;
        let state_w = self.table_word(j + journal::STATE)?;
        match state_w.load(Ordering::Acquire) {
            journal::IDLE => return Ok(()),
            journal::ACTIVE => {}
            // No grower writes another state (a hostile or buggy peer did):
            // there is no growth to finish, only a word to reset.
            _ => {
                state_w.store(journal::IDLE, Ordering::Release);
                return Ok(());
            }
        }
        let r = |off| format::load(&self.mem, j + off);
        let (c, extent, offset, bytes, slots) = (
            r(journal::CLASS)?,
            r(journal::EXTENT)?,
            r(journal::OFFSET)?,
            r(journal::BYTES)?,
            r(journal::SLOTS)?,
        );
        let forget = || state_w.store(journal::IDLE, Ordering::Release);
        if c >= self.class_count() as u64 || extent >= MAX_EXTENTS as u64 || slots > u32::MAX as u64
        {
            forget();
            return Ok(());
        }
        let c = c as usize;
        let count = format::load(&self.mem, self.geo.class_entry(c) + cls::EXTENT_COUNT)?;
        let current = format::load(&self.mem, hdr::CURRENT_SIZE)?;
        let layout_ok = self.geo.extent_layout(c, slots as u32).map(|(_, b)| b) == Some(bytes);
        // A journal whose extent would overlap a published one is not the
        // growth that happened (corrupt, or already superseded): forget it.
        let after_all = offset >= self.published_end()? && offset % self.geo.config.page_size == 0;
        if count == extent && layout_ok && after_all && offset.checked_add(bytes) == Some(current) {
            // The size was stored but the extent not published: finish it.
            self.mem.grow_to(current)?;
            return self.publish_extent(c, extent as usize, offset, slots as u32, bytes);
        }
        if count > extent {
            // Published; the generation bump may be missing. Bumping again
            // only makes readers re-check.
            self.table_word(hdr::GENERATION)?
                .fetch_add(1, Ordering::AcqRel);
        }
        // Otherwise nothing was published: the bytes past current_size are
        // reused by the next growth.
        forget();
        Ok(())
    }
}
