//! Per-thread caches of free slots: the reason allocation and free take no
//! lock. Each stack holds slots in state *cached* by this process; the shared
//! free list is only touched to refill an empty stack or flush a full one.
//!
//! The stacks are fixed arrays inside the cache (no `Vec`), so the hot path
//! reaches a slot id in two dependent loads from the thread's cache pointer.
//! Their lengths and entries are `Cell`s: the cache is only ever reached by
//! its own thread (`local::PerThread`), and with no `&mut` to hand out there
//! is no borrow flag to set and clear on every alloc and free (a `RefCell`
//! did that, and cost W1 ~10 instructions a pair). A call that re-entered
//! the cache would see a consistent stack, never an aliased one.

use crate::format::{LAST_GENERATION, MAX_CLASSES, SlotId};
use std::cell::Cell;

/// Most slots one stack holds (the largest per-class limit).
pub(crate) const STACK_MAX: usize = 256;

// The hot path indexes with `% STACK_MAX` and `% MAX_CLASSES`, which must be
// masks (no division) and no-ops for the values they see.
const _: () = assert!(STACK_MAX.is_power_of_two() && MAX_CLASSES.is_power_of_two());

/// Slots a thread may keep cached for a class of `slot_size`: about 256 KiB
/// worth, between 2 and [`STACK_MAX`].
pub(crate) fn cache_limit(slot_size: u64) -> usize {
    ((256 << 10) / slot_size).clamp(2, STACK_MAX as u64) as usize
}

/// The generation a stack entry carries when the slot's cached word was
/// not seen (a refill): the last generation, which no cached slot has.
pub(crate) const UNKNOWN_GENERATION: u32 = LAST_GENERATION;

/// A bounded LIFO stack of slot ids, with its class's limit beside its
/// length (one cache line holds both). Invariant: `len <= limit <=
/// STACK_MAX`.
///
/// Each entry is a slot id and the generation its cached word has (as this
/// process last wrote it: a free knows it), so that activation computes the
/// next word without waiting for the load that checks the word
/// ([`Pool::activate_cached`](crate::pool::Pool::activate_cached)).
#[derive(Debug)]
pub(crate) struct Stack {
    len: Cell<usize>,
    limit: usize,
    /// `generation << 32 | id`.
    entries: [Cell<u64>; STACK_MAX],
}

fn entry(id: SlotId, generation: u32) -> u64 {
    (generation as u64) << 32 | id.raw() as u64
}

fn id_of(entry: u64) -> SlotId {
    SlotId::from_raw(entry as u32)
}

impl Stack {
    const fn empty() -> Stack {
        Stack {
            len: Cell::new(0),
            limit: STACK_MAX,
            entries: [const { Cell::new(0) }; STACK_MAX],
        }
    }

    /// Whether the stack holds its class's limit (free must flush first).
    #[inline(always)]
    pub(crate) fn is_full(&self) -> bool {
        self.len.get() >= self.limit
    }

    /// The class's limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The newest id and its cached generation.
    #[inline(always)]
    pub(crate) fn pop(&self) -> Option<(SlotId, u32)> {
        let n = self.len.get().checked_sub(1)?;
        self.len.set(n);
        // `n < len <= STACK_MAX`: the mask changes nothing and spares a
        // bounds check.
        let e = self.entries[n % STACK_MAX].get();
        Some((id_of(e), (e >> 32) as u32))
    }

    /// Pushes `id` onto a stack that is not [full](Self::is_full) (the
    /// caller just checked): then `len < limit <= STACK_MAX`, so the mask
    /// changes nothing and there is no second bounds check.
    #[inline(always)]
    pub(crate) fn push_unfull(&self, id: SlotId, generation: u32) {
        let n = self.len.get();
        debug_assert!(n < self.limit);
        self.entries[n % STACK_MAX].set(entry(id, generation));
        self.len.set(n + 1);
    }

    /// Pushes `id` unless the stack holds [`STACK_MAX`] ids already (the
    /// per-class limit is at most that; callers stay below it): a push past
    /// it is dropped, never written.
    pub(crate) fn push(&self, id: SlotId, generation: u32) {
        let n = self.len.get();
        if let Some(slot) = self.entries.get(n) {
            slot.set(entry(id, generation));
            self.len.set(n + 1);
        }
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len.get()
    }

    /// Copies the oldest `n` ids (the bottom of the stack) into `out`.
    pub(crate) fn oldest(&self, n: usize, out: &mut Vec<SlotId>) {
        out.clear();
        out.extend(
            self.entries[..n.min(self.len.get())]
                .iter()
                .map(|e| id_of(e.get())),
        );
    }

    /// Removes the oldest `n` ids, keeping the rest in order.
    pub(crate) fn drop_oldest(&self, n: usize) {
        let len = self.len.get();
        let n = n.min(len);
        for i in n..len {
            self.entries[i - n].set(self.entries[i].get());
        }
        self.len.set(len - n);
    }
}

/// One thread's stacks, one per class, and a scratch vector for refills and
/// flushes (taken out while in use, so a nested use finds it empty and
/// makes its own).
pub(crate) struct ThreadCache {
    stacks: [Stack; MAX_CLASSES],
    scratch: Cell<Vec<SlotId>>,
    /// The generations of a refill's slots (beside `scratch`).
    generations: Cell<Vec<u32>>,
}

impl std::fmt::Debug for ThreadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadCache")
            .field("stacks", &self.stacks)
            .finish_non_exhaustive()
    }
}

impl ThreadCache {
    /// A cache whose stack `c` holds at most `limits[c]` slots, in an
    /// allocation of its own.
    pub(crate) fn new(limits: &[usize]) -> Box<Self> {
        let mut cache = ThreadCache {
            stacks: [const { Stack::empty() }; MAX_CLASSES],
            scratch: Cell::new(Vec::with_capacity(STACK_MAX)),
            generations: Cell::new(Vec::with_capacity(STACK_MAX)),
        };
        for (stack, &limit) in cache.stacks.iter_mut().zip(limits) {
            stack.limit = limit.min(STACK_MAX);
        }
        Box::new(cache)
    }

    /// The stack of class `c`. Classes are below [`MAX_CLASSES`] (the
    /// format's limit), so the mask changes nothing and spares a bounds check.
    #[inline(always)]
    pub(crate) fn stack(&self, c: usize) -> &Stack {
        &self.stacks[c % MAX_CLASSES]
    }

    /// All stacks, by class.
    pub(crate) fn stacks(&self) -> &[Stack] {
        &self.stacks
    }

    /// The scratch vector, emptied (a fresh one if it is in use).
    pub(crate) fn take_scratch(&self) -> Vec<SlotId> {
        let mut v = self.scratch.take();
        v.clear();
        v
    }

    /// Gives the scratch vector back for the next refill or flush.
    pub(crate) fn put_scratch(&self, v: Vec<SlotId>) {
        self.scratch.set(v);
    }

    /// The generations vector, emptied (a fresh one if it is in use).
    pub(crate) fn take_generations(&self) -> Vec<u32> {
        let mut v = self.generations.take();
        v.clear();
        v
    }

    /// Gives the generations vector back.
    pub(crate) fn put_generations(&self, v: Vec<u32>) {
        self.generations.set(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_is_lifo_and_drops_its_oldest_in_order() {
        let s = Stack::empty();
        for i in 0..10 {
            s.push(SlotId::new(0, i), i + 100);
        }
        assert_eq!(s.pop(), Some((SlotId::new(0, 9), 109)));
        let mut out = Vec::new();
        s.oldest(3, &mut out);
        assert_eq!(
            out,
            &[SlotId::new(0, 0), SlotId::new(0, 1), SlotId::new(0, 2)]
        );
        s.drop_oldest(3);
        assert_eq!(s.len(), 6);
        s.oldest(1, &mut out);
        assert_eq!(out, &[SlotId::new(0, 3)]);
        assert_eq!(s.pop(), Some((SlotId::new(0, 8), 108)));
    }

    #[test]
    fn a_full_stack_refuses_more() {
        let s = Stack::empty();
        for i in 0..STACK_MAX as u32 + 5 {
            s.push(SlotId::new(0, i), UNKNOWN_GENERATION);
        }
        assert_eq!(s.len(), STACK_MAX);
        assert_eq!(cache_limit(64), STACK_MAX);
        assert_eq!(cache_limit(1 << 20), 2);
    }
}
