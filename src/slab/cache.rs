//! Per-thread caches of free slots: the reason allocation and free take no
//! lock. Each stack holds slots in state *cached* by this process; the shared
//! free list is only touched to refill an empty stack or flush a full one.
//!
//! The stacks are fixed arrays inside the cache (no `Vec`), so the hot path
//! reaches a slot id in two dependent loads from the thread's cache pointer.

use crate::format::{MAX_CLASSES, SlotId};
use std::cell::RefCell;

/// Most slots one stack holds (the largest per-class limit).
pub(crate) const STACK_MAX: usize = 256;

/// Slots a thread may keep cached for a class of `slot_size`: about 256 KiB
/// worth, between 2 and [`STACK_MAX`].
pub(crate) fn cache_limit(slot_size: u64) -> usize {
    ((256 << 10) / slot_size).clamp(2, STACK_MAX as u64) as usize
}

/// A bounded LIFO stack of slot ids, with its class's limit beside its
/// length (one cache line holds both).
#[derive(Debug)]
pub(crate) struct Stack {
    len: usize,
    limit: usize,
    ids: [SlotId; STACK_MAX],
}

impl Stack {
    const EMPTY: Stack = Stack {
        len: 0,
        limit: STACK_MAX,
        ids: [SlotId::NIL; STACK_MAX],
    };

    /// Whether the stack holds its class's limit (free must flush first).
    #[inline(always)]
    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.limit
    }

    /// The class's limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<SlotId> {
        let n = self.len.checked_sub(1)?;
        self.len = n;
        self.ids.get(n).copied()
    }

    /// Pushes `id`; the caller keeps `len() < STACK_MAX` (the per-class
    /// limit is at most that). A push past it is dropped, never written.
    #[inline(always)]
    pub(crate) fn push(&mut self, id: SlotId) {
        if let Some(slot) = self.ids.get_mut(self.len) {
            *slot = id;
            self.len += 1;
        }
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The oldest `n` ids (the bottom of the stack).
    pub(crate) fn oldest(&self, n: usize) -> &[SlotId] {
        &self.ids[..n.min(self.len)]
    }

    /// Removes the oldest `n` ids, keeping the rest in order.
    pub(crate) fn drop_oldest(&mut self, n: usize) {
        let n = n.min(self.len);
        self.ids.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

/// One thread's stacks, one per class, and a scratch vector for refills.
#[derive(Debug)]
pub(crate) struct ThreadCache {
    pub(crate) stacks: [Stack; MAX_CLASSES],
    pub(crate) scratch: Vec<SlotId>,
}

impl ThreadCache {
    /// A cache whose stack `c` holds at most `limits[c]` slots, in an
    /// allocation of its own.
    pub(crate) fn new(limits: &[usize]) -> Box<RefCell<Self>> {
        let mut cache = ThreadCache {
            stacks: [const { Stack::EMPTY }; MAX_CLASSES],
            scratch: Vec::with_capacity(STACK_MAX),
        };
        for (stack, &limit) in cache.stacks.iter_mut().zip(limits) {
            stack.limit = limit.min(STACK_MAX);
        }
        Box::new(RefCell::new(cache))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_is_lifo_and_drops_its_oldest_in_order() {
        let mut s = Stack::EMPTY;
        for i in 0..10 {
            s.push(SlotId::new(0, i));
        }
        assert_eq!(s.pop(), Some(SlotId::new(0, 9)));
        assert_eq!(
            s.oldest(3),
            &[SlotId::new(0, 0), SlotId::new(0, 1), SlotId::new(0, 2)]
        );
        s.drop_oldest(3);
        assert_eq!(s.len(), 6);
        assert_eq!(s.oldest(1), &[SlotId::new(0, 3)]);
        assert_eq!(s.pop(), Some(SlotId::new(0, 8)));
    }

    #[test]
    fn a_full_stack_refuses_more() {
        let mut s = Stack::EMPTY;
        for i in 0..STACK_MAX as u32 + 5 {
            s.push(SlotId::new(0, i));
        }
        assert_eq!(s.len(), STACK_MAX);
        assert_eq!(cache_limit(64), STACK_MAX);
        assert_eq!(cache_limit(1 << 20), 2);
    }
}
