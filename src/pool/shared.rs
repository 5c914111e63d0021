//! The shared free lists: moving slots between a class's list (or its fresh
//! tail) and a process's cache, always under the class's shared lock.
//!
//! Invariant: a slot is in state *free* exactly when it is on its class's
//! list, except inside a critical section of this module. A holder that dies
//! inside one leaves at most a list that disagrees with the words; the next
//! holder is told (`recovered`) and rebuilds the list from the words.

use super::lock::SharedGuard;
use super::{Owner, Pool};
use crate::error::{Error, Result};
use crate::fault::crash_point;
use crate::format::{self, Meta, SlotId, SlotState, cls};
use crate::region::Memory;
use crate::sync::{AtomicU64, Ordering};

impl<M: Memory> Pool<M> {
    /// Takes class `c`'s shared lock, rebuilding its list if the previous
    /// holder died inside.
    pub(crate) fn lock_class(&self, c: usize, owner: Owner) -> Result<SharedGuard<'_>> {
        let entry = self.geo.class_entry(c);
        let local = &self.class(c).local;
        let mut guard =
            self.lock_shared(local, entry + cls::LOCK, entry + cls::LOCK_PROGRESS, owner)?;
        if guard.recovered {
            if let Err(e) = self.rebuild_list(c) {
                guard.poison();
                return Err(e);
            }
        }
        Ok(guard)
    }

    /// Whether class `c` looks like it has a free or fresh slot: a lock-free
    /// peek at two words, so allocation can skip empty classes cheaply.
    pub(crate) fn has_free(&self, c: usize) -> bool {
        let entry = self.geo.class_entry(c);
        let word = |off| {
            self.table_word(entry + off)
                .map(|w| w.load(Ordering::Acquire))
        };
        if let Ok(head) = word(cls::FREE_HEAD) {
            if !SlotId::from_raw(head as u32).is_nil() {
                return true;
            }
        }
        let Ok(cursor) = word(cls::FRESH) else {
            return false;
        };
        let (e, i) = cls::cursor_parts(cursor);
        let known = self.class(c).known.load(Ordering::Acquire);
        let shared = word(cls::EXTENT_COUNT).unwrap_or(0);
        // Fresh slots remain in the cursor's extent or in a later one.
        i < self.extent_slots(c, e) || (e as u64 + 1) < shared.max(known as u64)
    }

    /// [`take_with_generations`](Pool::take_with_generations) without the
    /// generations (the pool's tests and models refill through this).
    #[cfg(test)]
    pub(crate) fn take(
        &self,
        c: usize,
        owner: Owner,
        want: usize,
        out: &mut Vec<SlotId>,
    ) -> Result<u32> {
        self.take_into(c, owner, want, out, None)
    }

    /// Moves up to `want` slots of class `c` into `out`, each now *cached* by
    /// `owner`: first from the free list, then from the fresh tail. After an
    /// error too, `out` holds only slots made cached by `owner` (the refill
    /// keeps them), each once. Returns the class's extent count as seen
    /// under the lock: the `seen` to pass to [`grow`](Pool::grow) when
    /// nothing could be taken.
    ///
    /// Also pushes onto `generations` the generation of each slot's cached
    /// word, in the order of `out` (a thread cache remembers it, see
    /// [`activate_cached`](Pool::activate_cached)). After an error it may be
    /// shorter than `out`: the slots past it have words not known here.
    pub(crate) fn take_with_generations(
        &self,
        c: usize,
        owner: Owner,
        want: usize,
        out: &mut Vec<SlotId>,
        generations: &mut Vec<u32>,
    ) -> Result<u32> {
        self.take_into(c, owner, want, out, Some(generations))
    }

    fn take_into(
        &self,
        c: usize,
        owner: Owner,
        want: usize,
        out: &mut Vec<SlotId>,
        mut generations: Option<&mut Vec<u32>>,
    ) -> Result<u32> {
        let _g = self.lock_class(c, owner)?;
        let list = self.free_list(c)?;
        let target = out.len() + want;
        while out.len() < target {
            let id = SlotId::from_raw(list.head.load(Ordering::Acquire) as u32);
            if id.is_nil() {
                break;
            }
            let Some((w, m)) = self.listed_slot(c, id) else {
                // A cycle, a dangling link or a slot that is not free: the
                // list is corrupt. Rebuild it from the words and say so.
                self.rebuild_list(c)?;
                return Err(Error::corrupt(format!(
                    "class {c}: the free list named slot {id:?}, which is not a free slot (list rebuilt)"
                )));
            };
            // A free slot in its last generation (reclaim gave it that) can
            // never be allocated again: it is retired instead of cached, so
            // a cached slot always has a next generation.
            let last = m.next_generation().is_none();
            let popped = if last {
                Meta::RETIRED
            } else {
                Meta::new(m.generation(), SlotState::Cached, owner.id)
            };
            w.store(popped.0, Ordering::Relaxed);
            crash_point("refill.popped_meta");
            list.head.store(m.payload() as u64, Ordering::Release);
            let n = list.count.load(Ordering::Relaxed);
            list.count.store(n.saturating_sub(1), Ordering::Relaxed);
            if !last {
                out.push(id);
                if let Some(g) = generations.as_deref_mut() {
                    g.push(m.generation());
                }
            }
        }
        if out.len() < target {
            let seen = self.claim_fresh(c, owner, target - out.len(), out)?;
            // Every slot it kept has the word *cached by owner, generation 0*.
            if let Some(g) = generations {
                g.resize(out.len(), 0);
            }
            return Ok(seen);
        }
        Ok(self.class(c).known.load(Ordering::Acquire))
    }

    /// The metadata word of `id` and its value, if it is a free slot of
    /// class `c`.
    fn listed_slot(&self, c: usize, id: SlotId) -> Option<(&AtomicU64, Meta)> {
        let w = self.meta(self.locate(c, id).ok()?);
        let m = Meta(w.load(Ordering::Acquire));
        (m.state() == SlotState::Free).then_some((w, m))
    }

    /// Claims up to `want` never-used slots past class `c`'s fresh cursor.
    /// Caller holds the class lock. Returns the extent count it saw.
    ///
    /// The cursor moves first, then the claimed words are written: a holder
    /// that dies in between leaves fresh (zero) words *before* the cursor,
    /// which the next holder's rebuild puts on the free list. So every slot
    /// past the cursor is always fresh, and the fresh count is exact.
    fn claim_fresh(
        &self,
        c: usize,
        owner: Owner,
        want: usize,
        out: &mut Vec<SlotId>,
    ) -> Result<u32> {
        let known = self.refresh(c)?;
        let cursor_w = self.table_word(self.geo.class_entry(c) + cls::FRESH)?;
        let cursor = cursor_w.load(Ordering::Acquire);
        let (mut e, mut i) = cls::cursor_parts(cursor);
        if e > known {
            // Past every extent: only a scribbling peer does that. Put the
            // cursor right after the last slot ever used, and free the
            // never-used slots it skipped.
            self.repair_cursor(c)?;
            return Err(Error::corrupt(format!(
                "class {c}: the fresh cursor pointed at extent {e} of {known} (repaired)"
            )));
        }
        let first = out.len();
        while out.len() - first < want && e < known {
            if i >= self.extent_slots(c, e) {
                e += 1;
                i = 0;
                continue;
            }
            out.push(SlotId::new(e, i));
            i += 1;
        }
        cursor_w.store(cls::cursor(e, i), Ordering::Release);
        crash_point("refill.fresh_claimed");
        let mut kept = first;
        for n in first..out.len() {
            let id = out[n];
            // `locate` cannot refuse these (each is below `known` and its
            // extent's count). If it ever did: `out` keeps only the slots
            // claimed so far, as `take_with_generations` promises, and the
            // rest, fresh behind the cursor now, go on the free list the way
            // a holder killed at `refill.fresh_claimed` leaves them.
            let w = match self.locate(c, id) {
                Ok(addr) => self.meta(addr),
                Err(e) => {
                    out.truncate(kept);
                    return self.rebuild_list(c).and(Err(e));
                }
            };
            // Only a zero word is fresh; anything else was written by a peer
            // that should not have, and is left to whoever its word names.
            // A store suffices: under the class lock nobody else may write a
            // fresh word (a free's CAS expects *allocated*).
            if Meta(w.load(Ordering::Acquire)) == Meta::FRESH {
                w.store(
                    Meta::new(0, SlotState::Cached, owner.id).0,
                    Ordering::Relaxed,
                );
                out[kept] = id;
                kept += 1;
            }
        }
        out.truncate(kept);
        Ok(known)
    }

    /// Pushes slots of class `c` cached by `owner` back onto the free list.
    /// Slots whose words no longer say *cached by owner* are left alone.
    pub(crate) fn give(&self, c: usize, owner: Owner, slots: &[SlotId]) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let _g = self.lock_class(c, owner)?;
        let list = self.free_list(c)?;
        let mut lost = 0;
        for &id in slots {
            let w = self.meta(self.locate(c, id)?);
            match list.push(w, id, |m| m.is_cached_by(owner.id).then(|| m.generation())) {
                true => crash_point("flush.pushed_meta"),
                false => lost += 1,
            }
        }
        if lost > 0 {
            return Err(Error::corrupt(format!(
                "class {c}: {lost} slots in this process's cache were changed by someone else"
            )));
        }
        Ok(())
    }

    /// Class `c`'s shared free list. Caller holds the class lock.
    pub(crate) fn free_list(&self, c: usize) -> Result<FreeList<'_>> {
        let entry = self.geo.class_entry(c);
        Ok(FreeList {
            head: self.table_word(entry + cls::FREE_HEAD)?,
            count: self.table_word(entry + cls::FREE_COUNT)?,
        })
    }

    /// Puts class `c`'s fresh cursor right after the last slot whose word is
    /// not zero, then rebuilds the free list (which frees any zero word left
    /// behind the cursor). Caller holds the class lock.
    fn repair_cursor(&self, c: usize) -> Result<()> {
        let mut last_used = None;
        self.for_each_slot_locked(c, |id, w| {
            if Meta(w.load(Ordering::Acquire)) != Meta::FRESH {
                last_used = Some(id);
            }
        })?;
        let cursor = match last_used {
            Some(id) => cls::cursor(id.extent(), id.index() + 1),
            None => 0,
        };
        self.table_word(self.geo.class_entry(c) + cls::FRESH)?
            .store(cursor, Ordering::Release);
        self.rebuild_list(c)
    }

    /// Rebuilds class `c`'s free list from the metadata words: every slot in
    /// state *free*, and only those — plus fresh slots behind the fresh
    /// cursor, which a holder that died while claiming them left behind.
    /// Caller holds the class lock.
    pub(crate) fn rebuild_list(&self, c: usize) -> Result<()> {
        // for_each_slot loads extents published since we last looked. The
        // cursor only moves under the class lock, which the caller holds.
        let cursor = cls::cursor_parts(format::load(
            &self.mem,
            self.geo.class_entry(c) + cls::FRESH,
        )?);
        let mut head = SlotId::NIL;
        let mut count = 0u64;
        self.for_each_slot_locked(c, |id, w| {
            let m = Meta(w.load(Ordering::Acquire));
            let abandoned = m == Meta::FRESH && (id.extent(), id.index()) < cursor;
            if m.state() == SlotState::Free || abandoned {
                w.store(
                    Meta::new(m.generation(), SlotState::Free, head.raw()).0,
                    Ordering::Relaxed,
                );
                head = id;
                count += 1;
            }
        })?;
        let list = self.free_list(c)?;
        list.head.store(head.raw() as u64, Ordering::Release);
        list.count.store(count, Ordering::Relaxed);
        Ok(())
    }
}

/// A class's shared free list: its head and count words in the class table.
/// Only the holder of the class lock uses one.
pub(crate) struct FreeList<'a> {
    head: &'a AtomicU64,
    count: &'a AtomicU64,
}

impl FreeList<'_> {
    /// Pushes the slot whose metadata word is `w` (slot `id`) if
    /// `gen_for(word)` gives the generation its free life should have.
    /// The word changes by compare-and-swap, since a late `free` (or a
    /// reclaimer) may race for it; returns whether this push won.
    pub(crate) fn push(
        &self,
        w: &AtomicU64,
        id: SlotId,
        gen_for: impl Fn(Meta) -> Option<u32>,
    ) -> bool {
        let mut cur = w.load(Ordering::Acquire);
        loop {
            let m = Meta(cur);
            let Some(generation) = gen_for(m) else {
                return false;
            };
            let head = self.head.load(Ordering::Relaxed) as u32;
            let free = Meta::new(generation, SlotState::Free, head);
            match w.compare_exchange(cur, free.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.head.store(id.raw() as u64, Ordering::Release);
        // A hint for statistics, read from the file: never trusted to be sane.
        self.count.store(
            self.count.load(Ordering::Relaxed).saturating_add(1),
            Ordering::Relaxed,
        );
        true
    }
}
