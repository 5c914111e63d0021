//! Locks that live in the shared file and survive the death of their holder.
//!
//! A lock is one word: 0 when free, else the holder's *token* (peer row and
//! the row's incarnation). Taking it is one compare-and-swap, so the cold
//! paths that use it (refilling a cache from a shared free list, growth, root
//! insertion) cost tens of nanoseconds, not the microsecond a file-lock
//! syscall costs. Threads of one process first take a process-local mutex, so
//! the shared word only ever arbitrates between processes.
//!
//! If the holder dies, the word keeps its token. A waiter that has spun for a
//! while asks [`Liveness`] whether the token's process is alive — the kernel
//! answers, through the OFD lock each peer holds on its own row — and, if it
//! is dead, takes the word over with a CAS and is told so (`recovered`), so it
//! can repair whatever the dead holder left half done.
//!
//! # The hold limit: no progress, not a long wait
//!
//! A *live* holder that never lets go (a wedged process, a forged token)
//! must not hang its waiters forever, so a waiter gives up with `Corrupt`
//! after [`HOLD_LIMIT`] — counted from the last sign of progress it saw, not
//! from the start of its wait. Beside each lock word is a *progress word*
//! that only the holder writes: it is bumped when a holder takes the lock
//! (so a peer that takes it again right after releasing it, with the same
//! token, is visibly a new holding) and every [`BEAT_SLOTS`] slots of a
//! scan done under the lock ([`show_progress`]), so rebuilds and reclaim
//! scans of any size keep their waiters. The waiter restarts the limit
//! whenever the pair (lock word, progress word) differs from what it saw
//! last, and when it sees the word free. A holder of an older build, which
//! never writes the progress word, is still seen changing when another
//! token or a free word shows. What is not covered: one step that shows no
//! progress for the whole limit (a single `fallocate` of an extent, or a
//! holder descheduled that long).

use crate::error::{Error, Result};
use crate::format::{self, Geometry, peer};
use crate::region::Memory;
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering, spin_hint};
use crate::sys;
use std::time::Duration;
#[cfg(not(loom))]
use std::time::Instant;

/// Where a peer's liveness lock lives in the file's lock space (far past any
/// real byte; OFD locks may cover bytes that do not exist).
pub(crate) const PEER_LOCK_BASE: u64 = 1 << 60;

/// A waiter gives up (as `Corrupt`) on a lock whose live holder has shown no
/// progress for this long: no honest holder goes more than milliseconds
/// without. (A pool's `hold_limit`; tests shorten it.)
pub(crate) const HOLD_LIMIT: Duration = Duration::from_secs(20);

/// A scan under a lock shows progress once per this many slots (tens of
/// microseconds of work: the store is lost in it).
pub(crate) const BEAT_SLOTS: u32 = 1 << 14;

/// Bumps a lock's progress word: done only by the lock's holder, so a load
/// and a store suffice. Waiters only compare it (never trust its value), and
/// loom models have no timer, so under loom it is skipped.
#[inline]
pub(crate) fn show_progress(progress: &AtomicU64) {
    #[cfg(not(loom))]
    progress.store(
        progress.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
    #[cfg(loom)]
    let _ = progress;
}

/// A shared lock's two words in the file.
#[derive(Clone, Copy)]
pub(crate) struct LockWords<'a> {
    /// 0, or the holder's token.
    pub word: &'a AtomicU64,
    /// Bumped by the holder to show progress (see the module doc).
    pub progress: &'a AtomicU64,
}

/// Who does an operation: the owner id stamped into slot metadata and the
/// token written into lock words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    /// Peer row + 1 (0 means "owned by the segment").
    pub id: u32,
    /// `incarnation << 32 | id`.
    pub token: u64,
}

impl Owner {
    pub(crate) fn new(row: usize, incarnation: u32) -> Self {
        let id = row as u32 + 1;
        Owner {
            id,
            token: ((incarnation as u64) << 32) | id as u64,
        }
    }

    /// The row a token names, if any.
    pub(crate) fn row_of(token: u64) -> Option<usize> {
        (token as u32).checked_sub(1).map(|r| r as usize)
    }
}

/// Tells live peers from dead ones.
#[derive(Debug)]
pub(crate) enum Liveness {
    /// A real file: a peer is alive while another open file description holds
    /// the OFD lock on its row byte. There is no other mechanism: where OFD
    /// locks do not work, asking is [`Error::LivenessLocksUnsupported`] and
    /// attach fails (pid and start time in the row are for display only).
    ///
    /// Our own row reads as dead here (our lock does not conflict with
    /// itself); callers skip it. A `Slab` takes its locks on an open file
    /// description of its own, apart from the mapping's, which a forked
    /// child closes (`Memory::lock_file`); without one (the read-only
    /// inspector, which takes no lock) questions go through the mapping's.
    File,
    /// A heap segment in tests and loom models: rows in `dead` (a bit mask)
    /// are dead, all others alive.
    #[cfg_attr(not(test), allow(dead_code))]
    Simulated {
        /// Shared by every pool of one simulated machine.
        dead: std::sync::Arc<AtomicU64>,
    },
}

/// The error for a failed OFD lock call: the errnos that mean "no OFD locks
/// here" (`ENOLCK`, `EINVAL`, `EOPNOTSUPP`) are
/// [`Error::LivenessLocksUnsupported`], anything else an I/O error.
pub(crate) fn liveness_lock_error(op: &'static str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(errno @ (libc::ENOLCK | libc::EINVAL | libc::EOPNOTSUPP)) => {
            Error::LivenessLocksUnsupported { errno }
        }
        _ => Error::io(op, "", e),
    }
}

impl Liveness {
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn simulated() -> Self {
        Liveness::Simulated {
            dead: std::sync::Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether the process behind `row` is alive (for a LIVE row): the
    /// kernel's answer, or an error if it cannot give one.
    pub(crate) fn row_alive(&self, mem: &impl Memory, row: usize) -> Result<bool> {
        match self {
            Liveness::Simulated { dead } => {
                Ok(row >= 64 || dead.load(Ordering::Acquire) & (1 << row) == 0)
            }
            Liveness::File => match mem.lock_file() {
                None => Ok(true),
                Some(file) => sys::ofd_is_locked(file, PEER_LOCK_BASE + row as u64)
                    .map_err(|e| liveness_lock_error("query peer row lock", e)),
            },
        }
    }

    /// Whether the holder named by a lock token is certainly gone: its row is
    /// out of range, no longer LIVE, re-used (another incarnation), or the
    /// kernel says its process died.
    ///
    /// Without `ask_kernel` only the shared words are consulted (no syscall).
    pub(crate) fn token_dead(
        &self,
        mem: &impl Memory,
        geo: &Geometry,
        token: u64,
        ask_kernel: bool,
    ) -> Result<bool> {
        let Some(row) = Owner::row_of(token) else {
            return Ok(true);
        };
        if row >= geo.config.peer_capacity {
            return Ok(true);
        }
        let base = geo.peer_row(row);
        let state = format::load(mem, base + peer::STATE).unwrap_or(peer::EMPTY);
        let inc = format::load(mem, base + peer::INCARNATION).unwrap_or(0);
        if state != peer::LIVE || inc != token >> 32 {
            return Ok(true);
        }
        // Simulated liveness costs nothing to ask.
        let cheap = matches!(self, Liveness::Simulated { .. });
        Ok((ask_kernel || cheap) && !self.row_alive(mem, row)?)
    }
}

/// A held shared lock. Dropping it releases the word, then the local mutex.
pub(crate) struct SharedGuard<'a> {
    word: &'a AtomicU64,
    progress: &'a AtomicU64,
    token: u64,
    /// The previous holder died holding the lock: repair before use.
    pub recovered: bool,
    /// Release the word as if its holder had died, so the next holder is
    /// told to repair (a repair that failed must not be forgotten).
    poisoned: bool,
    _local: MutexGuard<'a, ()>,
}

/// A token no live peer has (it names no row): the next waiter sees its
/// holder as dead, takes the word over and repairs.
const POISONED: u64 = 1 << 32;

impl SharedGuard<'_> {
    /// Leave the lock to be repaired by its next holder.
    pub(crate) fn poison(&mut self) {
        self.poisoned = true;
    }

    /// Tells waiters the holder is still working (long work under the lock
    /// calls this now and then, e.g. every [`BEAT_SLOTS`] slots).
    pub(crate) fn show_progress(&self) {
        show_progress(self.progress);
    }
}

impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        // If the word no longer holds our token, someone judged us dead (or
        // scribbled on it); either way it is not ours to clear.
        let free = if self.poisoned { POISONED } else { 0 };
        let _ = self
            .word
            .compare_exchange(self.token, free, Ordering::Release, Ordering::Relaxed);
    }
}

/// Takes the shared lock `lock` for `owner`, first taking `local`.
pub(crate) fn acquire<'a, M: Memory>(
    mem: &'a M,
    geo: &Geometry,
    liveness: &Liveness,
    local: &'a Mutex<()>,
    lock: LockWords<'a>,
    owner: Owner,
    hold_limit: Duration,
) -> Result<SharedGuard<'a>> {
    let LockWords { word, progress } = lock;
    let local = local.lock();
    let mut spins: u32 = 0;
    let mut backoff = Backoff::new(hold_limit);
    loop {
        // Acquire, pairing with the taker's Release below: a waiter that
        // sees a token also sees its holder's peer row as the holder left it
        // before taking the lock (live, this incarnation). A relaxed load
        // could see the token with the row still empty from before the
        // holder registered — "dead" — and take a live holder's lock (the
        // loom model of an attach racing the last detach found this).
        let cur = word.load(Ordering::Acquire);
        // A free word is taken; a held one only from a holder known dead,
        // and the taker is told to repair.
        let recovered = cur != 0;
        if recovered {
            spins = spins.wrapping_add(1);
            // On first sight, check the shared words for a token that cannot
            // be live (ours — we hold the local mutex — or a stale row); once
            // the wait is long enough to matter, ask the kernel now and then.
            let dead = if spins == 1 {
                cur == owner.token || liveness.token_dead(mem, geo, cur, false)?
            } else {
                backoff.time_to_ask() && liveness.token_dead(mem, geo, cur, true)?
            };
            if !dead {
                backoff.wait(cur, progress)?;
                continue;
            }
        }
        if word
            .compare_exchange(cur, owner.token, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let guard = SharedGuard {
                word,
                progress,
                token: owner.token,
                recovered,
                poisoned: false,
                _local: local,
            };
            // A new holding, visible even to a waiter that never saw the
            // word free (this peer may have held it just before).
            guard.show_progress();
            return Ok(guard);
        }
        // Lost the race for a free (or dead) word: whoever holds it now is
        // a new holder.
        backoff.holder_changed();
    }
}

/// A value lock's words in its slot (see `pool::cell`): the lock word and
/// its progress word, as for the file's own locks, and two words of its own.
#[derive(Clone, Copy)]
pub(crate) struct CellLockWords<'a> {
    /// 0, or the holder's token (its low half is the futex waiters park on).
    pub word: &'a AtomicU64,
    /// Bumped by each new holder.
    pub progress: &'a AtomicU64,
    /// 0, or the token of a waiter that has waited long: the others defer to
    /// it (fairness).
    pub next: &'a AtomicU64,
    /// Waiters parked on `word`, so a release with none makes no syscall.
    pub parked: &'a AtomicU64,
}

/// A value lock, taken. Released by [`release_cell`].
pub(crate) struct CellHold {
    pub token: u64,
    /// The previous holder died holding the lock.
    pub recovered: bool,
}

/// A waiter that has waited this long asks the others to let it go next.
#[cfg(not(loom))]
const STARVING: Duration = Duration::from_micros(200);
/// How long waiters defer to a starving one that does not take the lock
/// (it may be descheduled, or dead) before they look again.
#[cfg(not(loom))]
const DEFER: Duration = Duration::from_millis(2);

/// Takes a value lock for `owner`, waiting at most until `deadline` (for
/// ever if `None`: a live holder may hold a value lock as long as it likes,
/// so there is no hold limit). `Ok(None)`: the deadline passed.
///
/// The dead-holder recovery is the file locks' (a token whose peer the
/// kernel says is gone is taken over by CAS, and the taker is told). What
/// differs: no process-local mutex (a lock per slot has no place for one),
/// so a word holding our own token is held by another thread of ours, which
/// we wait for; waiters park on the word's futex rather than sleep; and a
/// waiter that has waited [`STARVING`] long names itself in `next`, and the
/// others leave a free lock to it for up to [`DEFER`] (then check that it
/// lives), so no process starves behind a stream of others.
#[inline]
pub(crate) fn acquire_cell<M: Memory>(
    mem: &M,
    geo: &Geometry,
    liveness: &Liveness,
    lock: CellLockWords<'_>,
    owner: Owner,
    deadline: Option<std::time::Instant>,
) -> Result<Option<CellHold>> {
    // The uncontended case, inline: free, nobody named as starving, no
    // clock read.
    if lock.next.load(Ordering::Relaxed) == 0
        && lock
            .word
            .compare_exchange(0, owner.token, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        show_progress(lock.progress);
        return Ok(Some(CellHold {
            token: owner.token,
            recovered: false,
        }));
    }
    acquire_cell_slow(mem, geo, liveness, lock, owner, deadline)
}

/// [`acquire_cell`] once the lock was not free at first sight.
#[inline(never)]
fn acquire_cell_slow<M: Memory>(
    mem: &M,
    geo: &Geometry,
    liveness: &Liveness,
    lock: CellLockWords<'_>,
    owner: Owner,
    deadline: Option<std::time::Instant>,
) -> Result<Option<CellHold>> {
    let mut backoff = Backoff::new(Duration::MAX);
    #[cfg(not(loom))]
    {
        backoff.growing = true;
    }
    let mut spins: u32 = 0;
    #[cfg(not(loom))]
    let started = Instant::now();
    #[cfg(not(loom))]
    let mut deferring: Option<(u64, Instant)> = None;
    // Named in `next` while waiting: cleared however the wait ends (an
    // error included), or the others would keep deferring to us.
    #[cfg_attr(loom, allow(unused_mut))]
    let mut named = Named {
        next: lock.next,
        token: owner.token,
        set: false,
    };
    let result = loop {
        let cur = lock.word.load(Ordering::Acquire);
        let next = lock.next.load(Ordering::Acquire);
        // Defer a free lock to a starving waiter of another process, for at
        // most DEFER per name: then clear the name, live or dead (a
        // stopped process — SIGSTOP, a debugger — would otherwise hold a
        // free lock for ever; a live one names itself again).
        #[cfg(not(loom))]
        let defer = next != 0 && next != owner.token && {
            let now = Instant::now();
            match deferring {
                Some((n, since)) if n == next => {
                    if now.duration_since(since) < DEFER {
                        true
                    } else {
                        let _ = lock.next.compare_exchange(
                            next,
                            0,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        );
                        false
                    }
                }
                _ => {
                    deferring = Some((next, now));
                    true
                }
            }
        };
        // Our name was cleared by a waiter that would no longer defer to
        // it: we may name ourselves again.
        #[cfg(not(loom))]
        if named.set && next != owner.token {
            named.set = false;
        }
        #[cfg(loom)]
        let defer = false;
        let _ = next;
        // A wait that is over asks the kernel once more before it gives up
        // (so `try_lock` takes over a dead holder's lock).
        let expired = matches!(deadline, Some(d) if std::time::Instant::now() >= d);
        let mut recovered = false;
        if cur != 0 {
            spins = spins.wrapping_add(1);
            // Our own token: another thread of this process holds it. Else
            // the shared words are looked at every round (a few loads), and
            // the kernel asked when the wait is long enough to matter.
            let ask = expired || (spins > 1 && backoff.time_to_ask());
            let dead = cur != owner.token && liveness.token_dead(mem, geo, cur, ask)?;
            recovered = dead;
        }
        // A wait that is over takes a free lock whoever is named (so a
        // `try_lock` is never refused a free lock for good).
        if (cur == 0 && (!defer || expired)) || recovered {
            if lock
                .word
                .compare_exchange(cur, owner.token, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                show_progress(lock.progress);
                break Some(CellHold {
                    token: owner.token,
                    recovered,
                });
            }
            backoff.holder_changed();
            continue;
        }
        if expired {
            break None;
        }
        // (The clock is read every 16 rounds: a read per spin was a fifth
        // of a contended hand-over.)
        #[cfg(not(loom))]
        if !named.set && spins % 16 == 15 && started.elapsed() >= STARVING {
            named.set = lock
                .next
                .compare_exchange(0, owner.token, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        }
        park_cell(lock, cur, &mut backoff, deadline)?;
    };
    drop(named);
    Ok(result)
}

/// A waiter's name in a value lock's `next` word, taken back when dropped.
struct Named<'a> {
    next: &'a AtomicU64,
    token: u64,
    set: bool,
}

impl Drop for Named<'_> {
    fn drop(&mut self) {
        if self.set {
            let _ = self
                .next
                .compare_exchange(self.token, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// One round of waiting for a value lock seen as `cur`: spin and yield a
/// little, then park on the word's futex (at most a millisecond, so the
/// holder's death and the deadline are looked at again).
fn park_cell(
    lock: CellLockWords<'_>,
    cur: u64,
    backoff: &mut Backoff,
    deadline: Option<std::time::Instant>,
) -> Result<()> {
    #[cfg(not(loom))]
    if backoff.rounds >= PARK_AFTER {
        // Parked waits still time the holder's silence, which decides when
        // to ask the kernel about it (a waiter that lost a take-over race
        // must not stop asking).
        // A millisecond at first (it bounds how late a wake-up lost to a
        // race is noticed), longer the longer the wait, up to 20 ms, so a
        // crowd parked behind a long holder does not wake a thousand times
        // a second each.
        let (_, waited, _) = backoff.observe(cur, lock.progress);
        let mut nap = (Duration::from_millis(1) + waited / 16).min(Duration::from_millis(20));
        if let Some(d) = deadline {
            nap = nap.min(d.saturating_duration_since(std::time::Instant::now()));
        }
        lock.parked.fetch_add(1, Ordering::SeqCst);
        if lock.word.load(Ordering::SeqCst) == cur {
            crate::sync::park(lock.word, cur as u32, Some(nap));
        }
        // Up (woken, or the nap over): a release may wake another again.
        lock.parked.fetch_and(!WAKING, Ordering::Relaxed);
        lock.parked.fetch_sub(1, Ordering::SeqCst);
        backoff.rounds = backoff.rounds.saturating_add(1);
        return Ok(());
    }
    let _ = deadline;
    if cur == 0 {
        // Free, but left to a starving waiter: it takes it within a moment
        // (counted, so a long hand-off parks rather than spins).
        backoff.rounds = backoff.rounds.saturating_add(1);
        #[cfg(not(loom))]
        std::thread::yield_now();
        #[cfg(loom)]
        spin_hint();
        return Ok(());
    }
    backoff.wait(cur, lock.progress)
}

/// Releases a value lock taken by [`acquire_cell`], waking parked waiters:
/// one, or all when a starving waiter is named (it must be among them).
#[inline]
pub(crate) fn release_cell(lock: CellLockWords<'_>, hold: &CellHold) {
    // SeqCst, with the waiter's SeqCst increment of `parked` and reload of
    // the word: a waiter that parks after this saw the word free.
    let _ = lock
        .word
        .compare_exchange(hold.token, 0, Ordering::SeqCst, Ordering::Relaxed);
    let parked = lock.parked.load(Ordering::SeqCst);
    if parked & !WAKING == 0 {
        return;
    }
    let all = lock.next.load(Ordering::Relaxed) != 0;
    // One wake in flight: while a woken waiter has not run yet, further
    // releases (a holder re-taking the lock in a loop) make no syscall. A
    // waiter that parks meanwhile waits at most its nap (a millisecond).
    if all || lock.parked.fetch_or(WAKING, Ordering::AcqRel) & WAKING == 0 {
        crate::sync::unpark(lock.word, if all { u32::MAX } else { 1 });
    }
}

/// Rounds a value-lock waiter spins (and then yields) before it parks.
#[cfg(not(loom))]
const PARK_AFTER: u32 = 8;

/// Releases a value lock as its holder's death would leave it (a token no
/// live peer has), so the next holder is told to repair: for a repair that
/// failed.
pub(crate) fn release_cell_poisoned(lock: CellLockWords<'_>, hold: &CellHold) {
    let _ = lock
        .word
        .compare_exchange(hold.token, POISONED, Ordering::SeqCst, Ordering::Relaxed);
    if lock.parked.load(Ordering::SeqCst) & !WAKING != 0 {
        crate::sync::unpark(lock.word, u32::MAX);
    }
}

/// In a value lock's `parked` word: a wake-up sent and not yet taken up.
/// The low bits count the parked waiters.
const WAKING: u64 = 1 << 63;

/// How a waiter waits: spins, then yields, then sleeps; gives up (as
/// `Corrupt`) on a live holder that has shown no progress for its hold limit
/// ([`HOLD_LIMIT`] unless a test says otherwise). Under loom it only yields.
struct Backoff {
    rounds: u32,
    #[cfg_attr(loom, allow(dead_code))]
    hold_limit: Duration,
    #[cfg(not(loom))]
    started: Option<Instant>,
    #[cfg(not(loom))]
    asked: Option<Instant>,
    /// The (lock word, progress word) last seen, and when it was first seen.
    #[cfg(not(loom))]
    seen: Option<((u64, u64), Instant)>,
    /// Time between kernel questions about one silent holder: 2 ms, or,
    /// for a value lock (held as long as its user likes), doubling up to
    /// [`MAX_ASK_GAP`], so many waiters behind one long holder do not flood
    /// the kernel's lock list.
    #[cfg(not(loom))]
    ask_gap: Duration,
    #[cfg(not(loom))]
    growing: bool,
}

/// The longest gap between a value-lock waiter's kernel questions.
#[cfg(not(loom))]
const MAX_ASK_GAP: Duration = Duration::from_millis(100);

impl Backoff {
    fn new(hold_limit: Duration) -> Self {
        Backoff {
            rounds: 0,
            hold_limit,
            #[cfg(not(loom))]
            started: None,
            #[cfg(not(loom))]
            asked: None,
            #[cfg(not(loom))]
            ask_gap: Duration::from_millis(2),
            #[cfg(not(loom))]
            growing: false,
            #[cfg(not(loom))]
            seen: None,
        }
    }

    /// The word was seen free or taken by someone else: restart the limit.
    fn holder_changed(&mut self) {
        #[cfg(not(loom))]
        {
            self.seen = None;
        }
    }

    /// Whether to ask the kernel if the holder lives (a syscall): once the
    /// holder has shown no change for a millisecond, then every two. By
    /// time, not by rounds: on a busy machine a yield can take a
    /// millisecond, and a dead holder's lock should not cost hundreds of
    /// them. Not while the holder changes: a lock word or progress word
    /// that moved was moved by someone alive. With hundreds of processes
    /// queued on one lock, asking after a millisecond of *waiting* had every
    /// waiter query every 2 ms, each query walking the kernel's list of all
    /// the file's OFD locks — work that grew as the square of the processes
    /// and starved the holders (1000 processes took 6 minutes to detach).
    fn time_to_ask(&mut self) -> bool {
        #[cfg(not(loom))]
        {
            let Some((_, since)) = self.seen else {
                return false;
            };
            let now = Instant::now();
            if now.duration_since(since) < Duration::from_millis(1) {
                return false;
            }
            let due = match self.asked {
                Some(last) if last >= since => now.duration_since(last) >= self.ask_gap,
                _ => {
                    // A new holder (or a first question): start again.
                    self.ask_gap = Duration::from_millis(2);
                    true
                }
            };
            if due {
                self.asked = Some(now);
                if self.growing {
                    self.ask_gap = (self.ask_gap * 2).min(MAX_ASK_GAP);
                }
            }
            due
        }
        #[cfg(loom)]
        {
            self.rounds % 512 == 511
        }
    }

    /// One round of waiting on `holder`, whose progress word is `progress`.
    /// Notes the (lock word, progress word) pair seen now; returns how long
    /// the wait has lasted and since when the pair has not changed.
    #[cfg(not(loom))]
    fn observe(&mut self, holder: u64, progress: &AtomicU64) -> (Instant, Duration, Instant) {
        let now = Instant::now();
        let waited = now.duration_since(*self.started.get_or_insert(now));
        let seen = (holder, progress.load(Ordering::Relaxed));
        let since = match self.seen {
            Some((last, since)) if last == seen => since,
            _ => {
                self.seen = Some((seen, now));
                now
            }
        };
        (now, waited, since)
    }

    fn wait(&mut self, holder: u64, progress: &AtomicU64) -> Result<()> {
        self.rounds = self.rounds.saturating_add(1);
        #[cfg(not(loom))]
        if self.rounds >= 64 {
            let (now, waited, since) = self.observe(holder, progress);
            if now.duration_since(since) > self.hold_limit {
                return Err(Error::corrupt(format!(
                    "a shared lock has been held by live peer token {holder:#x} \
                     with no sign of progress for over {:?}",
                    self.hold_limit
                )));
            }
            // Yield while the wait is short (a holder is mid-refill); past a
            // millisecond the holder is busy for long (a reclaim scan, or it
            // is descheduled): sleep, up to 1 ms at a time, not burn a core.
            if waited < Duration::from_millis(1) {
                std::thread::yield_now();
            } else {
                std::thread::sleep((waited / 8).min(Duration::from_millis(1)));
            }
            return Ok(());
        }
        let _ = (holder, progress);
        spin_hint();
        Ok(())
    }
}
