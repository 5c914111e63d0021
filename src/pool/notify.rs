//! The notifier's protocol: wake-ups across processes on two words of a
//! slot.
//!
//! - `SEQ`: a sequence, bumped by every notify; its low 32 bits are the
//!   futex a waiter parks on.
//! - `WAITERS`: how many threads are (about to be) parked, so a notify with
//!   nobody parked makes no syscall.
//!
//! A waiter takes a *ticket* (the sequence now) before it checks whatever
//! condition it waits for, then waits for the sequence to move past the
//! ticket: a notify between the check and the park is not lost, because the
//! park is a futex wait on the value seen, which the kernel refuses to begin
//! once the value has changed. In order (all `SeqCst`, one total order):
//!
//! ```text
//! waiter:  WAITERS += 1;  s = SEQ;  if s == ticket { futex_wait(SEQ, ticket) };  WAITERS -= 1
//! notify:  SEQ += 1;      if WAITERS != 0 { futex_wake(SEQ) }
//! ```
//!
//! If the notifier read `WAITERS == 0`, the waiter's increment comes after
//! that read in the total order, so its load of `SEQ` comes after the bump
//! and it does not park. Otherwise the wake is sent; a waiter not yet in the
//! kernel finds the value changed and returns at once. Wake-ups without a
//! notify (signals, the timeout, a `notify_one` meant for another) are
//! absorbed: the waiter re-checks the sequence and parks again.
//!
//! A waiter that dies parked leaves `WAITERS` one too high: every later
//! notify then makes one needless `futex_wake`, and nothing else changes (the
//! kernel forgets a dead thread's wait). Both words are untrusted: a peer
//! that writes junk into them can cause spurious wake-ups, or delay one by
//! at most a park's length (a second), but no error, panic, hang or access
//! outside the slot.

use crate::sync::{AtomicU64, Ordering, park, unpark};
use std::time::{Duration, Instant};

/// Words of a notifier's slot.
pub(crate) const WORDS: usize = 2;
const SEQ: usize = 0;
const WAITERS: usize = 1;

/// A notifier over the words of its (checked, live) slot.
#[derive(Clone, Copy)]
pub(crate) struct RawNotifier<'a> {
    seq: &'a AtomicU64,
    waiters: &'a AtomicU64,
}

impl<'a> RawNotifier<'a> {
    /// The notifier over `words` (at least [`WORDS`] of them).
    pub(crate) fn new(words: &'a [AtomicU64]) -> Self {
        RawNotifier {
            seq: &words[SEQ],
            waiters: &words[WAITERS],
        }
    }

    /// The sequence now: take it before checking a condition, then
    /// [`wait`](Self::wait) on it.
    pub(crate) fn ticket(&self) -> u32 {
        self.seq.load(Ordering::SeqCst) as u32
    }

    /// Waits until a notify after `ticket`, or until `deadline`. Returns
    /// whether a notify happened (it may have happened before the call).
    pub(crate) fn wait(&self, ticket: u32, deadline: Option<Instant>) -> bool {
        loop {
            if self.ticket() != ticket {
                return true;
            }
            let timeout = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return false,
                },
            };
            self.waiters.fetch_add(1, Ordering::SeqCst);
            if self.ticket() == ticket {
                park(
                    self.seq,
                    ticket,
                    Some(timeout.map_or(MAX_PARK, |t| t.min(MAX_PARK))),
                );
            }
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Wakes one parked waiter (all waiters see the notify when they next
    /// look), or every parked waiter.
    pub(crate) fn notify(&self, all: bool) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            unpark(self.seq, if all { u32::MAX } else { 1 });
        }
    }
}

/// The longest single park: a waiter re-checks the sequence (and its
/// deadline) at least this often, so a wake-up lost to a peer's junk in
/// `WAITERS` costs it at most this long, never its whole wait.
const MAX_PARK: Duration = Duration::from_secs(1);
