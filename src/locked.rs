//! Locked, crash-atomic updates: a [`Locked<T>`] handle names a value in the
//! segment that any process changes under a lock, and whose changes are
//! all-or-nothing even when the holder is killed with `SIGKILL` mid-write.
//!
//! ```
//! use shmslab::bytemuck::{Pod, Zeroable};
//!
//! #[repr(C)]
//! #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
//! #[bytemuck(crate = "shmslab::bytemuck")]
//! struct Account { balance: i64, moves: u64 }
//! impl shmslab::Schema for Account {}
//!
//! # let dir = tempfile::tempdir()?;
//! # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
//! let acct = slab.root_or_insert_locked("account", Account::default())?;
//!
//! // A closure under the lock, committed when it returns...
//! slab.transact(acct, |a| { a.balance += 10; a.moves += 1 })?;
//!
//! // ...or a guard: changes commit when it drops (not if a panic drops it).
//! {
//!     let mut a = slab.lock(acct)?;
//!     if a.previous_holder_died() {
//!         // The last committed value is intact; decide what the dead
//!         // holder's unfinished work means for you.
//!     }
//!     a.balance -= 3;
//!     a.moves += 1;
//! }
//! assert_eq!(slab.read_locked(acct)?, Account { balance: 7, moves: 2 });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What a crash leaves
//!
//! The value is double-buffered in its slot and a commit is one word (the
//! protocol is in the pool's `cell` module): a holder killed before that
//! word leaves the previous value, killed after it the new one, never a mix.
//! The next process to lock finds the dead holder's token, learns from the
//! kernel that it died (the same mechanism as the file's own locks), takes
//! the lock over and is told: [`LockedGuard::previous_holder_died`]. Unlike
//! a poisoned `std::sync::Mutex` or a robust pthread mutex there is nothing
//! to repair: the value is always a committed one.
//!
//! # Waiting
//!
//! A waiter spins briefly, then parks on the lock word's futex. A live
//! holder may hold the lock as long as it likes ([`Slab::lock`] waits for
//! it); [`Slab::try_lock`] and [`Slab::lock_timeout`] bound the wait. A
//! waiter that has waited long is let go next (the others leave the lock to
//! it), so no process starves behind a stream of others.
//!
//! A guard (or a handle) kept across a free of the slot acts on the slot's
//! next life, like the atomics' views (see [`crate::atomics`]): a logic
//! error, never undefined behaviour.

use crate::error::Result;
use crate::format::SlotRef;
use crate::pool::cell::{self, Held, RawCell};
use crate::slab::Slab;
use crate::sync::deadline_after;
use crate::typed::{RootType, Schema, root_type, tagged};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

crate::typed::typed_handle! {
    /// A handle to a locked value of type `T` in a segment: 16 bytes, `Copy`
    /// and `Pod`, like every handle (null value, `to_bytes`/`from_bytes`,
    /// checked on use).
    Locked
}

/// The lock of a [`Locked<T>`], held, with a private copy of the value:
/// `Deref`/`DerefMut` to it. Changes are committed (crash-atomically) when
/// the guard drops, or at [`commit`](Self::commit); a guard dropped by a
/// panic commits nothing; [`discard`](Self::discard) drops the changes.
pub struct LockedGuard<'a, T: Pod> {
    slab: &'a Slab,
    cell: RawCell<'a>,
    held: Option<Held>,
    value: T,
    dirty: bool,
    recovered: bool,
}

impl<T: Pod> LockedGuard<'_, T> {
    /// Whether the holder before this one died holding the lock (killed,
    /// crashed): the value is the last one committed, and whatever that
    /// holder was in the middle of did not happen.
    pub fn previous_holder_died(&self) -> bool {
        self.recovered
    }

    /// Commits the value now, keeping the lock. (In a forked child, whose
    /// copy of the guard holds the parent's lock, nothing: the lock and the
    /// value are the parent's to change.)
    pub fn commit(&mut self) {
        if self.slab.is_inherited() {
            self.dirty = false;
            return;
        }
        if let Some(held) = self.held.as_mut() {
            self.cell.commit(held, bytemuck::bytes_of(&self.value));
        }
        self.dirty = false;
    }

    /// Releases the lock without committing the changes made since the last
    /// commit.
    pub fn discard(mut self) {
        self.dirty = false;
    }

    /// Waits, with the lock released, until another holder commits a value
    /// for which `condition` is false; returns with the lock held again
    /// (the condition wait of a `Condvar`, across processes). Changes made
    /// so far are committed first.
    pub fn wait_while(self, condition: impl FnMut(&T) -> bool) -> Result<Self> {
        Ok(self.wait_while_timeout(condition, None)?.0)
    }

    /// As [`wait_while`](Self::wait_while), waiting for commits at most
    /// `timeout`; the `bool` says whether it timed out with `condition` still
    /// true. (Taking the lock back after a wake-up waits for its holder
    /// however long that takes, as [`Slab::lock`] does.)
    pub fn wait_while_timeout(
        mut self,
        mut condition: impl FnMut(&T) -> bool,
        timeout: Option<Duration>,
    ) -> Result<(Self, bool)> {
        let deadline = deadline_after(timeout);
        loop {
            if !condition(&self.value) {
                return Ok((self, false));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok((self, true));
            }
            if self.dirty {
                self.commit();
            }
            let pool = self.slab.pool()?;
            let held = self.held.take().expect("a guard holds its lock");
            let again = self.cell.wait_for_commit(
                pool,
                self.slab.me,
                held,
                deadline,
                bytemuck::bytes_of_mut(&mut self.value),
            )?;
            let again = again.expect("waits without a deadline take the lock");
            self.recovered |= again.recovered();
            self.held = Some(again);
        }
    }
}

impl<T: Pod> std::ops::Deref for LockedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Pod> std::ops::DerefMut for LockedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.dirty = true;
        &mut self.value
    }
}

impl<T: Pod> Drop for LockedGuard<'_, T> {
    fn drop(&mut self) {
        if self.dirty && !std::thread::panicking() {
            self.commit();
        }
        // A forked child's copy must not release the parent's lock (the
        // child has the parent's token, so the release would succeed).
        if let Some(held) = self.held.take() {
            if !self.slab.is_inherited() {
                self.cell.unlock(&held);
            }
        }
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for LockedGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedGuard")
            .field("value", &self.value)
            .field("previous_holder_died", &self.recovered)
            .finish()
    }
}

/// Marks a locked value's root schema ("LOCKED" in ASCII).
const LOCKED_TAG: u64 = 0x4c4f_434b_4544_0000;

fn locked_root<T: Schema>() -> RootType {
    tagged(
        root_type::<T>(),
        LOCKED_TAG,
        std::any::type_name::<Locked<T>>(),
    )
}

impl Slab {
    /// Allocates a locked value holding `value` (owned by this process, like
    /// any slot).
    pub fn alloc_locked<T: Pod>(&self, value: T) -> Result<Locked<T>> {
        let raw = self.alloc_cell(value)?;
        Ok(Locked::from_raw(raw))
    }

    fn alloc_cell<T: Pod>(&self, value: T) -> Result<SlotRef> {
        let n = cell::words_for(size_of::<T>());
        let raw = self.alloc_bytes(8 * n).map(crate::slab::BytesHandle::raw)?;
        let words = self.pool()?.live_words(&raw, n)?;
        RawCell::new(words, size_of::<T>()).init(bytemuck::bytes_of(&value));
        Ok(raw)
    }

    /// The locked value under `name`, or a new one holding `init` (made once
    /// among racing processes).
    pub fn root_or_insert_locked<T: Schema>(&self, name: &str, init: T) -> Result<Locked<T>> {
        let raw = self.root_or_insert_object(name, locked_root::<T>(), || self.alloc_cell(init))?;
        Ok(Locked::from_raw(raw))
    }

    /// The locked value under `name`, if there is one.
    pub fn root_locked<T: Schema>(&self, name: &str) -> Result<Option<Locked<T>>> {
        Ok(self
            .root_object(name, locked_root::<T>())?
            .map(Locked::from_raw))
    }

    /// The locked value a handle names, checked once: a view to lock,
    /// update and read it without checking the handle again (as the
    /// atomics' views; see [the module doc](crate::locked) for what one held
    /// across a free does). [`Slab::lock`], [`Slab::transact`] and the rest
    /// make one per call.
    #[inline]
    pub fn locked<T: Pod>(&self, handle: Locked<T>) -> Result<LockedRef<'_, T>> {
        let words = self
            .pool()?
            .live_words(&handle.raw, cell::words_for(size_of::<T>()))?;
        Ok(LockedRef {
            slab: self,
            cell: RawCell::new(words, size_of::<T>()),
            _type: PhantomData,
        })
    }

    /// Takes the value's lock, waiting for as long as a live holder keeps
    /// it (a dead holder's is taken over).
    pub fn lock<T: Pod>(&self, handle: Locked<T>) -> Result<LockedGuard<'_, T>> {
        self.locked(handle)?.lock()
    }

    /// Takes the value's lock if it is free (or its holder is dead) now.
    pub fn try_lock<T: Pod>(&self, handle: Locked<T>) -> Result<Option<LockedGuard<'_, T>>> {
        self.locked(handle)?.try_lock()
    }

    /// Takes the value's lock, waiting at most `timeout`; `None` if it
    /// could not.
    pub fn lock_timeout<T: Pod>(
        &self,
        handle: Locked<T>,
        timeout: Duration,
    ) -> Result<Option<LockedGuard<'_, T>>> {
        self.locked(handle)?.lock_timeout(timeout)
    }

    /// Runs `f` on the value under its lock and commits what it leaves
    /// (nothing, if `f` panics). The returned value is `f`'s. (To learn
    /// whether the previous holder died, use [`lock`](Slab::lock) and
    /// [`LockedGuard::previous_holder_died`].)
    #[inline]
    pub fn transact<T: Pod, R>(&self, handle: Locked<T>, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        self.locked(handle)?.transact(f)
    }

    /// The last committed value, read without the lock (a consistent copy,
    /// never torn, even while others commit).
    pub fn read_locked<T: Pod>(&self, handle: Locked<T>) -> Result<T> {
        self.locked(handle)?.read()
    }
}

/// A locked value in the mapping, its handle checked: what
/// [`Slab::locked`] gives. Every operation still refuses to run in a
/// forked child ([`Error::ForkedProcess`](crate::Error::ForkedProcess)).
pub struct LockedRef<'a, T> {
    slab: &'a Slab,
    cell: RawCell<'a>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for LockedRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for LockedRef<'_, T> {}

impl<T> std::fmt::Debug for LockedRef<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockedRef<{}>", std::any::type_name::<T>())
    }
}

impl<'a, T: Pod> LockedRef<'a, T> {
    #[inline]
    fn lock_until(self, deadline: Option<Instant>) -> Result<Option<LockedGuard<'a, T>>> {
        let pool = self.slab.pool()?;
        let mut value = T::zeroed();
        let held = self.cell.lock(
            pool,
            self.slab.me,
            deadline,
            bytemuck::bytes_of_mut(&mut value),
        )?;
        Ok(held.map(|held| LockedGuard {
            slab: self.slab,
            cell: self.cell,
            recovered: held.recovered(),
            held: Some(held),
            value,
            dirty: false,
        }))
    }

    /// As [`Slab::lock`].
    pub fn lock(self) -> Result<LockedGuard<'a, T>> {
        match self.lock_until(None)? {
            Some(guard) => Ok(guard),
            None => unreachable!("a wait without a deadline takes the lock"),
        }
    }

    /// As [`Slab::try_lock`].
    pub fn try_lock(self) -> Result<Option<LockedGuard<'a, T>>> {
        self.lock_until(Some(Instant::now()))
    }

    /// As [`Slab::lock_timeout`].
    pub fn lock_timeout(self, timeout: Duration) -> Result<Option<LockedGuard<'a, T>>> {
        // A timeout past what an `Instant` can hold is no limit.
        self.lock_until(deadline_after(Some(timeout)))
    }

    /// As [`Slab::transact`]: the lock, `f` on a copy, the commit, the
    /// release, without a guard's layers (the hot path of a shared counter
    /// or table update).
    #[inline]
    pub fn transact<R>(self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let pool = self.slab.pool()?;
        let mut value = T::zeroed();
        let Some(held) =
            self.cell
                .lock(pool, self.slab.me, None, bytemuck::bytes_of_mut(&mut value))?
        else {
            unreachable!("a wait without a deadline takes the lock")
        };
        // Unlocks (without committing) if `f` panics.
        struct Unlock<'c, 'a> {
            cell: &'c RawCell<'a>,
            held: Held,
        }
        impl Drop for Unlock<'_, '_> {
            fn drop(&mut self) {
                self.cell.unlock(&self.held);
            }
        }
        let mut hold = Unlock {
            cell: &self.cell,
            held,
        };
        let r = f(&mut value);
        if self.slab.is_inherited() {
            // `f` forked, and this is the child: the lock is the parent's.
            std::mem::forget(hold);
            return Err(crate::error::Error::ForkedProcess);
        }
        self.cell.commit(&mut hold.held, bytemuck::bytes_of(&value));
        drop(hold);
        Ok(r)
    }

    /// As [`Slab::read_locked`].
    pub fn read(self) -> Result<T> {
        self.slab.pool()?;
        let mut value = T::zeroed();
        if self.cell.snapshot(bytemuck::bytes_of_mut(&mut value)) {
            return Ok(value);
        }
        // Commits without pause (or a peer writing the sequence): take the
        // lock for one consistent copy.
        Ok(*self.lock()?)
    }
}
