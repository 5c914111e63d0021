//! The notifier's protocol: wake-ups across processes on one word of a
//! slot, whose low 32 bits are a sequence (bumped by every notify, and the
//! futex a waiter parks on) and whose high 32 bits count the threads that
//! are (about to be) parked, so a notify with nobody parked makes no
//! syscall.
//!
//! A waiter takes a *ticket* (the sequence now) before it checks whatever
//! condition it waits for, then waits for the sequence to move past the
//! ticket: a notify between the check and the park is not lost, because the
//! park is a futex wait on the value seen, which the kernel refuses to begin
//! once the value has changed.
//!
//! ```text
//! waiter:  old = word.fetch_add(1 << 32)            // count me
//!          if old.seq == ticket { futex_wait(word.low, ticket) }
//!          word.fetch_sub(1 << 32)
//! notify:  old = word.bump_seq()                    // CAS: low half + 1, high kept
//!          if old.waiters != 0 { futex_wake(word.low) }
//! ```
//!
//! Both are read-modify-writes of the one word, so one comes first in its
//! modification order: if the notify's, the waiter's `fetch_add` returns the
//! bumped sequence and it does not park; if the waiter's, the notify sees it
//! counted and wakes it (a waiter not yet in the kernel then finds the value
//! changed and returns at once). No cross-word ordering (no Dekker pattern)
//! is needed — which is also what lets the loom model check it. Wake-ups
//! without a notify (signals, the timeout, a `notify_one` meant for another)
//! are absorbed: the waiter re-checks the sequence and parks again.
//!
//! A waiter that dies parked leaves the count one too high: every later
//! notify then makes one needless `futex_wake`, and nothing else changes
//! (the kernel forgets a dead thread's wait). The word is untrusted: a peer
//! that writes junk into it can cause spurious wake-ups, or delay one by at
//! most a park's length (a second), but no error, panic, hang or access
//! outside the slot (the count wraps harmlessly; the sequence half is never
//! carried into).

use crate::sync::{AtomicU64, Ordering, nap_until, park, unpark};
use std::time::{Duration, Instant};

/// Words of a notifier's slot.
pub(crate) const WORDS: usize = 1;
const WAITER: u64 = 1 << 32;

/// A notifier over the word of its (checked, live) slot.
#[derive(Clone, Copy)]
pub(crate) struct RawNotifier<'a> {
    word: &'a AtomicU64,
}

impl<'a> RawNotifier<'a> {
    /// The notifier over `words` (at least [`WORDS`] of them).
    pub(crate) fn new(words: &'a [AtomicU64]) -> Self {
        RawNotifier { word: &words[0] }
    }

    /// The sequence now: take it before checking a condition, then
    /// [`wait`](Self::wait) on it.
    pub(crate) fn ticket(&self) -> u32 {
        self.word.load(Ordering::Acquire) as u32
    }

    /// Waits until a notify after `ticket`, or until `deadline`. Returns
    /// whether a notify happened (it may have happened before the call).
    pub(crate) fn wait(&self, ticket: u32, deadline: Option<Instant>) -> bool {
        loop {
            if self.ticket() != ticket {
                return true;
            }
            let Some(nap) = nap_until(deadline, MAX_PARK) else {
                return false;
            };
            let old = self.word.fetch_add(WAITER, Ordering::AcqRel);
            if old as u32 == ticket {
                park(self.word, ticket, Some(nap));
            }
            self.word.fetch_sub(WAITER, Ordering::AcqRel);
        }
    }

    /// Wakes one parked waiter (all waiters see the notify when they next
    /// look), or every parked waiter.
    pub(crate) fn notify(&self, all: bool) {
        let mut cur = self.word.load(Ordering::Relaxed);
        // Bounded: a peer rewriting the word without pause only costs this
        // notify its wake-up (its waiters re-check within a park's length).
        for _ in 0..1024 {
            let bumped = (cur & !(u32::MAX as u64)) | (cur as u32).wrapping_add(1) as u64;
            match self
                .word
                .compare_exchange_weak(cur, bumped, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if cur >> 32 != 0 {
            unpark(self.word, if all { u32::MAX } else { 1 });
        }
    }
}

/// The longest single park: a waiter re-checks the sequence (and its
/// deadline) at least this often, so a wake-up lost to a peer's junk in
/// `WAITERS` costs it at most this long, never its whole wait.
const MAX_PARK: Duration = Duration::from_secs(1);
