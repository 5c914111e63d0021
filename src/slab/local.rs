//! Per-thread values of one `Slab` (its threads' caches), found through a
//! thread id of this module's own, and a one-entry memo of the last one a
//! thread used.
//!
//! # Why not the `thread_local` crate
//!
//! Its lookup takes the thread's id from its own `thread_local!` and, on a
//! thread's first lookup, registers a guard there that gives the id back at
//! thread exit. A thread whose first lookup comes from a thread-local
//! destructor that runs *after* that guard was destroyed (the thread used
//! some other `ThreadLocal` earlier) makes the crate touch a destroyed
//! thread-local: a panic inside a destructor, so the process aborts.
//!
//! # The scheme
//!
//! A thread's id lives in [`THREAD`], whose destructor gives the id back,
//! and every lookup reaches it through `LocalKey::try_with`. So, for each
//! thread, exactly one of these holds:
//!
//! - `THREAD` is alive: the thread has an id (taken now if it had none,
//!   which may be during teardown: the destructor is then registered late
//!   and runs after the running ones) and no other live thread has it;
//! - `THREAD` is being or has been destroyed: `try_with` fails, the lookup
//!   says `None` and the caller takes its uncached path. Never a panic.
//!
//! `THREAD`'s destructor clears the memo ([`LAST`]) *before* it gives the id
//! back, so a thread never reaches a value through the memo once its id can
//! belong to another thread. A new thread that gets a freed id inherits the
//! value the old thread left at that index (slots *cached* by this process:
//! its to use); the id bitmap's Release/Acquire orders the two threads'
//! accesses.
//!
//! Ids are the lowest free ones, so a table stays as small as the largest
//! number of threads alive at once. These are process-local, plain std
//! atomics: nothing here is shared with other processes or model-checked.

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Words of the id bitmap: ids `0 .. 64 * ID_WORDS`. A thread beyond that
/// many alive at once gets no id and takes the uncached path.
const ID_WORDS: usize = 1024;

/// One bit per id, set while a thread has it. Lock-free, not a mutex: a
/// `fork` while another thread of the parent held a mutex here would leave
/// it locked for good in the child, and the child's first lookup from any
/// new thread would hang (the child's own `Slab`s use these tables too).
static IDS: [AtomicU64; ID_WORDS] = [const { AtomicU64::new(0) }; ID_WORDS];

/// Takes the lowest free id. Acquire pairs with [`give_back`]'s Release, so
/// a thread given a freed id sees everything the last thread with it did
/// to the value at that index.
fn take_id() -> Option<usize> {
    for (w, word) in IDS.iter().enumerate() {
        let mut cur = word.load(Ordering::Relaxed);
        while cur != u64::MAX {
            let bit = (!cur).trailing_zeros() as usize;
            match word.compare_exchange_weak(
                cur,
                cur | 1 << bit,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(w * 64 + bit),
                Err(now) => cur = now,
            }
        }
    }
    None
}

fn give_back(id: usize) {
    IDS[id / 64].fetch_and(!(1u64 << (id % 64)), Ordering::Release);
}

/// "No id yet".
const NO_ID: usize = usize::MAX;

/// The thread's id; gives it back when the thread's thread-locals die.
struct ThreadId(Cell<usize>);

impl Drop for ThreadId {
    fn drop(&mut self) {
        // First: the memo must not outlive the id it was found through.
        LAST.set((TORN_DOWN, ptr::null()));
        let id = self.0.replace(NO_ID);
        if id != NO_ID {
            give_back(id);
        }
    }
}

thread_local! {
    static THREAD: ThreadId = const { ThreadId(Cell::new(NO_ID)) };
    /// The uid of the table this thread used last, and its value there.
    /// (No destructor: always reachable, even during teardown.)
    static LAST: Cell<(u64, *const ())> = const { Cell::new((0, ptr::null())) };
}

/// [`LAST`]'s uid once the thread's id is gone (never a real uid).
const TORN_DOWN: u64 = u64::MAX;

/// The calling thread's id, or `None` while (or after) its thread-locals
/// are destroyed, or when every id is taken.
fn current() -> Option<usize> {
    THREAD
        .try_with(|t| {
            if t.0.get() == NO_ID {
                t.0.set(take_id()?);
            }
            Some(t.0.get())
        })
        .ok()
        .flatten()
}

/// Buckets of a table: bucket `b` holds ids `2^b - 1 .. 2^(b+1) - 1`.
const BUCKETS: usize = usize::BITS as usize;

fn bucket_of(id: usize) -> (usize, usize) {
    // id < usize::MAX (NO_ID is never handed out), so id + 1 does not wrap.
    let b = (usize::BITS - 1 - (id + 1).leading_zeros()) as usize;
    (b, id + 1 - (1 << b))
}

/// One value of `T` per thread, each in an allocation of its own, kept
/// until the table drops (a thread that exits leaves its value to the next
/// thread given its id).
pub(crate) struct PerThread<T> {
    /// Unique among all tables of the process (never 0): the memo's key.
    uid: u64,
    /// Bucket `b`: null, or an array of `2^b` entries, each null or a
    /// `Box<T>` made by the thread that held the entry's id.
    buckets: [AtomicPtr<AtomicPtr<T>>; BUCKETS],
}

// SAFETY: the table hands out `&T` only to the thread holding the entry's
// id, one thread at a time (ids pass between threads through the `IDS`
// bitmap, Release on give-back, Acquire on take), and values made on one thread may be used and dropped on another:
// so `T: Send` suffices, as for a `Mutex<T>`.
unsafe impl<T: Send> Sync for PerThread<T> {}
// SAFETY: as above; the table owns its values.
unsafe impl<T: Send> Send for PerThread<T> {}

impl<T> PerThread<T> {
    pub(crate) fn new() -> Self {
        PerThread {
            uid: crate::sync::next_instance_id(),
            buckets: [const { AtomicPtr::new(ptr::null_mut()) }; BUCKETS],
        }
    }

    /// The calling thread's value, made by `create` if it has none, and
    /// remembered in the memo; `None` while the thread's thread-locals are
    /// being destroyed (then nothing is remembered).
    pub(crate) fn get_or(&self, create: impl FnOnce() -> Box<T>) -> Option<&T> {
        let id = current()?;
        let (b, i) = bucket_of(id);
        let mut bucket = self.buckets[b].load(Ordering::Acquire);
        if bucket.is_null() {
            bucket = self.new_bucket(b);
        }
        // SAFETY: bucket `b` is an array of `2^b` entries that lives until
        // the table drops, and `i < 2^b` (`bucket_of`).
        let entry = unsafe { &*bucket.add(i) };
        let mut value = entry.load(Ordering::Acquire);
        if value.is_null() {
            // Only the holder of `id` writes this entry: no race.
            value = Box::into_raw(create());
            entry.store(value, Ordering::Release);
        }
        LAST.set((self.uid, value as *const ()));
        // SAFETY: `value` came from `Box::into_raw` and is freed only when
        // the table drops, which `&self` outlives; only this thread (the
        // holder of `id`) uses it until `THREAD` gives the id back.
        Some(unsafe { &*value })
    }

    /// The calling thread's value, if the memo holds this table's: the hot
    /// path, a compare instead of a table lookup.
    #[inline(always)]
    pub(crate) fn remembered(&self) -> Option<&T> {
        let (uid, value) = LAST.get();
        if uid != self.uid {
            return None;
        }
        // SAFETY: this thread stored (uid, value) in `get_or` of the table
        // with this uid, which is `self` (uids are never reused, so no
        // table of another `T` has it), alive for
        // `&self`; its values live until it drops; and the value is this
        // thread's until its id is given back, which `ThreadId::drop`
        // precedes by clearing the memo.
        Some(unsafe { &*(value as *const T) })
    }

    /// Installs bucket `b` (or finds the one another thread installed).
    #[cold]
    fn new_bucket(&self, b: usize) -> *mut AtomicPtr<T> {
        let fresh: Box<[AtomicPtr<T>]> = (0..1usize << b)
            .map(|_| AtomicPtr::new(ptr::null_mut()))
            .collect();
        let fresh = Box::into_raw(fresh) as *mut AtomicPtr<T>;
        match self.buckets[b].compare_exchange(
            ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => fresh,
            Err(theirs) => {
                // SAFETY: `fresh` is the boxed slice of `2^b` entries made
                // above, never shared.
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(fresh, 1 << b)) });
                theirs
            }
        }
    }
}

impl<T> Drop for PerThread<T> {
    fn drop(&mut self) {
        for (b, bucket) in self.buckets.iter_mut().enumerate() {
            let bucket = *bucket.get_mut();
            if bucket.is_null() {
                continue;
            }
            // SAFETY: a non-null bucket `b` is the boxed slice of `2^b`
            // entries `new_bucket` installed; `&mut self` means no thread
            // uses it or its values any more.
            let entries = unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(bucket, 1 << b)) };
            for entry in entries.iter() {
                let value = entry.load(Ordering::Acquire);
                if !value.is_null() {
                    // SAFETY: made by `Box::into_raw` in `get_or`, freed once.
                    drop(unsafe { Box::from_raw(value) });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn ids_fill_buckets_of_doubling_size() {
        assert_eq!(bucket_of(0), (0, 0));
        assert_eq!(bucket_of(1), (1, 0));
        assert_eq!(bucket_of(2), (1, 1));
        assert_eq!(bucket_of(3), (2, 0));
        assert_eq!(bucket_of(6), (2, 3));
        assert_eq!(bucket_of(7), (3, 0));
        assert_eq!(
            bucket_of(usize::MAX - 1),
            (BUCKETS - 1, (1 << (BUCKETS - 1)) - 1)
        );
    }

    #[test]
    fn threads_alive_at_once_get_values_of_their_own_and_the_memo_finds_them() {
        let table = Arc::new(PerThread::new());
        let other = PerThread::<u32>::new();
        let all = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8u64)
            .map(|k| {
                let (table, all) = (table.clone(), all.clone());
                std::thread::spawn(move || {
                    // A value of its own: nobody else changes it while all
                    // eight threads are alive.
                    let v = table.get_or(|| Box::new(Cell::new(0))).unwrap();
                    v.set(k + 100);
                    assert!(ptr::eq(table.remembered().unwrap(), v));
                    all.wait();
                    assert_eq!(
                        table.get_or(|| Box::new(Cell::new(0))).unwrap().get(),
                        k + 100
                    );
                    all.wait();
                    v as *const Cell<u64> as usize
                })
            })
            .collect();
        let mut values: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), 8, "two live threads shared a value");
        // The memo names the table this thread used last, and only it.
        table.get_or(|| Box::new(Cell::new(7))).unwrap();
        assert!(other.remembered().is_none());
        other.get_or(|| Box::new(1)).unwrap();
        assert!(table.remembered().is_none());
        assert_eq!(other.remembered(), Some(&1));
    }
}
