//! The locked cell's protocol: a value in a slot, changed only under a lock
//! that any process takes, and changed crash-atomically — a holder killed at
//! any instruction leaves the last committed value, never a torn one.
//!
//! # Layout (words of the slot)
//!
//! | word | |
//! |---|---|
//! | 0 `LOCK` | 0, or the holder's token (the file locks' format) |
//! | 1 `PROGRESS` | bumped by each new holder (the file locks' progress word) |
//! | 2 `STATE` | the commit sequence `c`: the value is in buffer `c & 1` |
//! | 3 `NEXT` | 0, or a starving waiter's token (fairness, `lock::acquire_cell`) |
//! | 4 `PARKED` | waiters parked on `LOCK` |
//! | 5 `WATCHERS` | threads parked on `STATE` (`wait_while`) |
//! | 6 … 6+w | buffer 0 (the value, padded to `w` whole words) |
//! | 6+w … 6+2w | buffer 1 |
//!
//! # Commit: a double buffer and one word
//!
//! The holder works on a private copy of the value. To commit it writes the
//! copy into the buffer that is *not* current, then (Release) stores
//! `STATE = c + 1`, which makes that buffer current. The store of one word is
//! the commit point:
//!
//! - killed before it, `STATE` still names the old buffer, which nobody
//!   wrote: the value is the last committed one; the half-written other
//!   buffer is overwritten by the next commit;
//! - killed after it, the new value is committed whole.
//!
//! The next taker of the lock finds the dead holder's token, asks the kernel
//! (the peer table's OFD locks: the same recovery as the file's own locks),
//! takes the word over and is told `recovered`. Nothing needs repair: the
//! value is always the one `STATE` names.
//!
//! Reads need no lock (a seqlock): load `STATE`, copy its buffer, load
//! `STATE` again; the copy counts only if `STATE` did not move (the next
//! write into that buffer is two commits away, and each commit moves it).
//!
//! Every word is untrusted: whatever `STATE` holds, `STATE & 1` names a
//! buffer inside the slot, and any bytes there are a valid `Pod` value.

use super::Pool;
use super::lock::{self, CellHold, CellLockWords, Owner};
use crate::error::Result;
use crate::fault::crash_point;
use crate::region::Memory;
use crate::sync::{
    AtomicU64, Ordering, fence, load_from_words, nap_until, park, store_to_words, unpark,
};
use std::time::Instant;

const LOCK: usize = 0;
const PROGRESS: usize = 1;
const STATE: usize = 2;
const NEXT: usize = 3;
const PARKED: usize = 4;
const WATCHERS: usize = 5;
const HEADER: usize = 6;

/// Words a cell for a value of `size` bytes takes.
pub(crate) const fn words_for(size: usize) -> usize {
    HEADER + 2 * size.div_ceil(8)
}

/// A locked cell over the words of its (checked, live) slot: the words it
/// uses, found once when it is made.
#[derive(Clone, Copy)]
pub(crate) struct RawCell<'a> {
    lock: CellLockWords<'a>,
    state: &'a AtomicU64,
    watchers: &'a AtomicU64,
    header: &'a [AtomicU64],
    /// The two buffers, `w` words each.
    buffers: [&'a [AtomicU64]; 2],
}

/// The cell's lock, held: the committed sequence it was taken at.
pub(crate) struct Held {
    hold: CellHold,
    seq: u64,
}

impl Held {
    /// The previous holder died holding the lock.
    pub(crate) fn recovered(&self) -> bool {
        self.hold.recovered
    }
}

impl<'a> RawCell<'a> {
    /// The cell over `words`, for a value of `size` bytes (the slice has at
    /// least [`words_for`]`(size)` words).
    #[inline]
    pub(crate) fn new(words: &'a [AtomicU64], size: usize) -> Self {
        let w = size.div_ceil(8);
        debug_assert!(words.len() >= HEADER + 2 * w);
        let (header, rest) = words.split_at(HEADER);
        let (b0, rest) = rest.split_at(w);
        RawCell {
            lock: CellLockWords {
                word: &header[LOCK],
                progress: &header[PROGRESS],
                next: &header[NEXT],
                parked: &header[PARKED],
            },
            state: &header[STATE],
            watchers: &header[WATCHERS],
            header,
            buffers: [b0, &rest[..w]],
        }
    }

    #[inline]
    fn buffer(&self, seq: u64) -> &'a [AtomicU64] {
        self.buffers[(seq & 1) as usize]
    }

    /// Initialises a new cell (a slot just allocated, not yet shared) with
    /// `value` committed at sequence 0.
    pub(crate) fn init(&self, value: &[u8]) {
        for w in self.header {
            w.store(0, Ordering::Relaxed);
        }
        store_to_words(self.buffer(0), value);
    }

    /// Takes the lock (see `lock::acquire_cell`) and copies the committed
    /// value into `value`. `Ok(None)`: `deadline` passed first.
    #[inline]
    pub(crate) fn lock<M: Memory>(
        &self,
        pool: &Pool<M>,
        owner: Owner,
        deadline: Option<Instant>,
        value: &mut [u8],
    ) -> Result<Option<Held>> {
        let Some(hold) = lock::acquire_cell(
            &pool.mem,
            &pool.geo,
            &pool.liveness,
            self.lock,
            owner,
            deadline,
        )?
        else {
            return Ok(None);
        };
        // Acquire: the buffer a commit made current is seen whole (pairs
        // with the committer's Release on STATE).
        let seq = self.state.load(Ordering::Acquire);
        load_from_words(self.buffer(seq), value);
        Ok(Some(Held { hold, seq }))
    }

    /// Commits `value` as the cell's new value (under the lock `held`).
    #[inline]
    pub(crate) fn commit(&self, held: &mut Held, value: &[u8]) {
        let next = held.seq.wrapping_add(1);
        let target = self.buffer(next);
        // The target buffer is the one a reader that loaded `STATE` two
        // commits ago may still be copying. This fence, before the first
        // store into it, makes that reader's re-check see `STATE` moved if
        // its copy saw any of our bytes: a load of ours, then its Acquire
        // fence, synchronise with this fence, and `STATE = seq` (our
        // predecessor's commit, which happens before our lock) happens
        // before its re-check (the seqlock writer's first fence).
        fence(Ordering::Release);
        crash_point("cell.before_write");
        let half = (value.len() / 16) * 8;
        store_to_words(target, &value[..half]);
        crash_point("cell.mid_write");
        store_to_words(&target[half / 8..], &value[half..]);
        crash_point("cell.written");
        // The buffer before the sequence that names it (seqlock writer).
        self.state.store(next, Ordering::Release);
        held.seq = next;
        crash_point("cell.committed");
        // Relaxed: a watcher counts itself while it holds the lock, so its
        // count happens before our lock, and so before this load; one that
        // parks after our store finds the futex value changed.
        if self.watchers.load(Ordering::Relaxed) != 0 {
            unpark(self.state, u32::MAX);
        }
    }

    /// Plays a holder killed inside [`commit`](Self::commit): the first
    /// `words` words of the new value written into the other buffer, and
    /// the commit word stored only if `published`. (Tests and loom models
    /// stop here, as `SIGKILL` would, and never unlock.)
    #[cfg(test)]
    pub(crate) fn commit_cut_short(
        &self,
        held: &Held,
        value: &[u8],
        words: usize,
        published: bool,
    ) {
        let next = held.seq.wrapping_add(1);
        let target = self.buffer(next);
        let n = (8 * words).min(value.len());
        store_to_words(target, &value[..n]);
        if published {
            fence(Ordering::Release);
            self.state.store(next, Ordering::SeqCst);
        }
    }

    /// Releases the lock.
    #[inline]
    pub(crate) fn unlock(&self, held: &Held) {
        lock::release_cell(self.lock, &held.hold);
    }

    /// Copies the committed value into `value` without the lock; retries
    /// while commits race the copy (a commit moves `STATE`). `false` after
    /// many tries: a peer is committing without pause, or writing `STATE`.
    pub(crate) fn snapshot(&self, value: &mut [u8]) -> bool {
        for _ in 0..1024 {
            let seq = self.state.load(Ordering::Acquire);
            load_from_words(self.buffer(seq), value);
            fence(Ordering::Acquire);
            if self.state.load(Ordering::Relaxed) == seq {
                return true;
            }
            crate::sync::spin_hint();
        }
        false
    }

    /// Under the lock `held`: releases it, waits until a commit after the
    /// one it was taken at (or `deadline`), and takes it again (waiting for
    /// it as long as it takes), copying the value into `value`. The
    /// condition wait of `wait_while`.
    pub(crate) fn wait_for_commit<M: Memory>(
        &self,
        pool: &Pool<M>,
        owner: Owner,
        held: Held,
        deadline: Option<Instant>,
        value: &mut [u8],
    ) -> Result<Option<Held>> {
        let seen = held.seq;
        debug_assert!(held.hold.token == owner.token);
        let state = &self.state;
        // Counted before the lock is let go: a commit after the release
        // sees the watcher and wakes it (the notifier's argument).
        self.watchers.fetch_add(1, Ordering::SeqCst);
        self.unlock(&held);
        loop {
            if state.load(Ordering::SeqCst) != seen {
                break;
            }
            let Some(nap) = nap_until(deadline, std::time::Duration::from_secs(1)) else {
                break;
            };
            park(state, seen as u32, Some(nap));
        }
        self.watchers.fetch_sub(1, Ordering::SeqCst);
        self.lock(pool, owner, None, value)
    }
}
