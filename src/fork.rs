//! Telling a forked child from its parent, and the descriptors a child must
//! not keep.
//!
//! `fork(2)` copies the whole process into the child: a `Slab`'s owner id and
//! lock token, its thread caches and peer row, and every descriptor. None of
//! them is the child's. Used there, the token makes a lock the parent holds
//! look like the child's own lock left by a dead holder, and the child takes
//! it over; dropped there, the parent's file would be unlinked and its row
//! detached. And as long as a child that does not `exec` lives, its copy of
//! the descriptor on which the parent holds its liveness lock keeps that
//! open file description, and with it the lock, alive: a dead parent would
//! look alive (`O_CLOEXEC` only helps across `exec`).
//!
//! Two process-local mechanisms answer that; nothing of them is in the file:
//!
//! - **The fork epoch.** A `pthread_atfork` child handler bumps a
//!   process-wide counter in every child. What belongs to one process
//!   records the epoch it was made in ([`Origin`]); "was this inherited?" is
//!   then one relaxed load and a compare, cheap enough for every allocation
//!   (`getpid` is a system call on glibc, which no longer caches it). Relaxed
//!   suffices: the handler runs in the child's only thread before anything
//!   else there does.
//! - **The liveness descriptors** ([`ForkLocalFile`]). Every descriptor that
//!   carries liveness locks is recorded in a lock-free registry, and the
//!   child handler closes each one and clears its entry: only `close(2)` and
//!   atomic operations, no allocation and no lock, so it is safe in a child
//!   of a multi-threaded process. The descriptor is its own open file
//!   description (the file opened again), never the one the mapping uses, so
//!   closing it in the child neither touches the parent's locks (an OFD lock
//!   goes away only when the *last* descriptor of its description closes) nor
//!   leaves a bare [`MmapRegion`](crate::region::MmapRegion) in the child without its
//!   descriptor.
//!
//! Recording a new descriptor races a `fork` in another thread: a child
//! forked after the `open` and before the registry entry would keep a copy
//! nobody closes. Two counters, bumped by the prepare handler (before every
//! fork) and by the parent handler (after it), close that window: the opener
//! reads both before opening (equal: no fork in flight) and the first again
//! after recording (unchanged: no fork began in between, and any later one
//! sees the entry); otherwise it closes the descriptor, which holds no lock
//! yet, and opens another.
//!
//! A child made without the `fork` handlers (a raw `clone` system call) is
//! not detected by the epoch; drops also compare the pid, so at least
//! dropping there does nothing, but using a `Slab` there is not guarded.
//!
//! Everything here uses std's atomics directly rather than the loom facade:
//! it is process-local state that loom cannot model (there is no `fork` in
//! a model) and must live in statics.

use crate::error::{Error, Result};
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering};

/// Bumped in every forked child, by [`in_child`].
static EPOCH: AtomicU64 = AtomicU64::new(0);
/// Forks begun in this process (bumped before each one) ...
static FORKS_BEGUN: AtomicU64 = AtomicU64::new(0);
/// ... and forks finished (bumped in the parent after each one).
static FORKS_DONE: AtomicU64 = AtomicU64::new(0);
/// Whether this process has registered the handlers.
static HANDLERS: AtomicBool = AtomicBool::new(false);
/// The descriptors a forked child closes.
static LIVENESS_FDS: Registry = Registry::new();

extern "C" fn before_fork() {
    FORKS_BEGUN.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn in_parent() {
    FORKS_DONE.fetch_add(1, Ordering::SeqCst);
}

/// The child handler: async-signal-safe (atomics and `close(2)` only).
extern "C" fn in_child() {
    LIVENESS_FDS.close_all();
    // The child's only thread has no fork in flight.
    FORKS_DONE.store(FORKS_BEGUN.load(Ordering::SeqCst), Ordering::SeqCst);
    EPOCH.fetch_add(1, Ordering::SeqCst);
}

/// Registers the fork handlers once per process. Two threads racing here
/// may both register: the handlers tolerate running twice per fork (the
/// counters stay paired, the epoch still moves, a cleared entry is skipped).
fn install_handlers() -> Result<()> {
    if HANDLERS.load(Ordering::Acquire) {
        return Ok(());
    }
    // SAFETY: the three handlers are `extern "C"` functions with no
    // arguments that live for the whole program; the child one is
    // async-signal-safe as documented on it.
    let rc = unsafe { libc::pthread_atfork(Some(before_fork), Some(in_parent), Some(in_child)) };
    if rc != 0 {
        return Err(Error::io(
            "pthread_atfork",
            "",
            io::Error::from_raw_os_error(rc),
        ));
    }
    HANDLERS.store(true, Ordering::Release);
    Ok(())
}

/// The process a value was made in: something that a forked child inherits
/// but must not act on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    epoch: u64,
    pid: u32,
}

impl Origin {
    /// This process (registering the fork handlers if need be).
    pub(crate) fn here() -> Result<Origin> {
        install_handlers()?;
        Ok(Origin {
            epoch: EPOCH.load(Ordering::Relaxed),
            pid: crate::sys::current_pid(),
        })
    }

    /// Whether we are in a forked child of the process this was made in.
    /// One relaxed load: the check on every operation.
    #[inline(always)]
    pub(crate) fn is_inherited(&self) -> bool {
        EPOCH.load(Ordering::Relaxed) != self.epoch
    }

    /// [`is_inherited`](Self::is_inherited), or another process for any
    /// other reason (a child cloned without the fork handlers): the check
    /// before a drop gives anything back.
    pub(crate) fn is_elsewhere(&self) -> bool {
        self.is_inherited() || crate::sys::current_pid() != self.pid
    }
}

/// How long [`ForkLocalFile::open`] waits for a fork in flight in another
/// thread to finish before it opens anyway.
const FORK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// A file whose open file description carries this process's liveness
/// locks: closed in every forked child (see the module doc), and never
/// closed or unlocked by a drop in one.
#[derive(Debug)]
pub(crate) struct ForkLocalFile {
    file: ManuallyDrop<File>,
    entry: &'static AtomicI32,
    origin: Origin,
}

impl ForkLocalFile {
    /// Opens a file with `open` (a new open file description, which holds
    /// no lock yet) and records it for the child handler, retrying if a
    /// fork may have copied it before it was recorded.
    pub(crate) fn open(mut open: impl FnMut() -> io::Result<File>) -> Result<Self> {
        let origin = Origin::here()?;
        let patience = std::time::Instant::now() + FORK_PATIENCE;
        loop {
            let begun = FORKS_BEGUN.load(Ordering::SeqCst);
            if FORKS_DONE.load(Ordering::SeqCst) != begun && std::time::Instant::now() < patience {
                // A fork is in flight in another thread: it takes moments.
                // Not forever: another library's prepare handler may wait on
                // a lock our caller holds. Past the patience the open goes
                // ahead, and that one child may keep an unrecorded copy.
                std::thread::yield_now();
                continue;
            }
            let file = open().map_err(|e| Error::io("reopen for the liveness lock", "", e))?;
            let entry = LIVENESS_FDS.insert(file.as_raw_fd());
            if FORKS_BEGUN.load(Ordering::SeqCst) == begun {
                return Ok(ForkLocalFile {
                    file: ManuallyDrop::new(file),
                    entry,
                    origin,
                });
            }
            // A fork began meanwhile; its child may hold an unrecorded copy
            // (of a description without locks, which nothing there reaches).
            entry.store(-1, Ordering::SeqCst);
        }
    }

    /// The file, or `None` in a forked child (where the descriptor was
    /// closed and its number may name another file now).
    #[inline]
    pub(crate) fn get(&self) -> Option<&File> {
        (!self.origin.is_inherited()).then_some(&*self.file)
    }
}

impl Drop for ForkLocalFile {
    fn drop(&mut self) {
        if self.origin.is_elsewhere() {
            // The child handler closed it (the number may be another file's
            // now), or a clone shares the parent's description: leave it.
            return;
        }
        // Release every lock before the entry goes: a fork between the two
        // steps below leaves the child a copy that holds nothing.
        let _ = crate::sys::ofd_unlock_all(&self.file);
        self.entry.store(-1, Ordering::SeqCst);
        // SAFETY: dropped once, here; `get` cannot be called any more.
        unsafe { ManuallyDrop::drop(&mut self.file) };
    }
}

/// Entries per block of the registry.
const BLOCK: usize = 32;

/// A block of descriptor entries (`-1` when free), and the next block.
struct Block {
    fds: [AtomicI32; BLOCK],
    next: AtomicPtr<Block>,
}

impl Block {
    const fn new() -> Self {
        Block {
            fds: [const { AtomicI32::new(-1) }; BLOCK],
            next: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

/// A lock-free set of descriptors: a linked list of blocks that only grows
/// (blocks are never freed, so a reader never meets a dangling one); an
/// entry is taken by a compare-and-swap from `-1`. Its size is bounded by
/// the most descriptors the process ever had recorded at once.
pub(crate) struct Registry {
    first: Block,
}

impl Registry {
    pub(crate) const fn new() -> Self {
        Registry {
            first: Block::new(),
        }
    }

    /// Records `fd` in a free entry, adding a block if all are taken.
    pub(crate) fn insert(&'static self, fd: RawFd) -> &'static AtomicI32 {
        let mut block: &'static Block = &self.first;
        loop {
            for entry in &block.fds {
                if entry
                    .compare_exchange(-1, fd, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    return entry;
                }
            }
            let next = block.next.load(Ordering::Acquire);
            if !next.is_null() {
                // SAFETY: blocks are leaked boxes, never freed: valid for
                // the rest of the program.
                block = unsafe { &*next };
                continue;
            }
            let new = Box::into_raw(Box::new(Block::new()));
            match block.next.compare_exchange(
                std::ptr::null_mut(),
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                // SAFETY: just published; never freed from now on.
                Ok(_) => block = unsafe { &*new },
                Err(theirs) => {
                    // SAFETY: `new` was never published: we still own it.
                    drop(unsafe { Box::from_raw(new) });
                    // SAFETY: as for `next` above.
                    block = unsafe { &*theirs };
                }
            }
        }
    }

    /// Closes every recorded descriptor and clears its entry.
    /// Async-signal-safe: atomic loads and swaps, and `close(2)`.
    pub(crate) fn close_all(&self) {
        let mut block: *const Block = &self.first;
        while !block.is_null() {
            // SAFETY: the first block is `self`'s; later ones are leaked
            // boxes, never freed.
            let b = unsafe { &*block };
            for entry in &b.fds {
                let fd = entry.swap(-1, Ordering::SeqCst);
                if fd >= 0 {
                    // SAFETY: close(2) on a descriptor this process
                    // recorded as its own; no Rust object will close it
                    // again (`ForkLocalFile` leaves it in a child).
                    unsafe { libc::close(fd) };
                }
            }
            block = b.next.load(Ordering::Acquire);
        }
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};

    /// A pipe: (read end, non-blocking; write end as a raw fd).
    fn pipe() -> (File, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert_eq!(rc, 0);
        // SAFETY: pipe2 just returned it, owned by nobody else.
        (File::from(unsafe { OwnedFd::from_raw_fd(fds[0]) }), fds[1])
    }

    /// Whether every write end of `read`'s pipe is closed (EOF, not EAGAIN).
    /// Robust against the number of a closed write end being reused.
    fn writer_closed(read: &File) -> bool {
        use std::io::Read;
        let mut b = [0u8; 1];
        matches!((&*read).read(&mut b), Ok(0))
    }

    #[test]
    fn the_registry_grows_past_a_block_and_closes_all_it_holds() {
        let registry: &'static Registry = Box::leak(Box::new(Registry::new()));
        let pipes: Vec<(File, RawFd)> = (0..BLOCK * 2 + 3).map(|_| pipe()).collect();
        let entries: Vec<_> = pipes.iter().map(|&(_, w)| registry.insert(w)).collect();
        // A cleared entry is reused, and what it held is not closed.
        entries[5].store(-1, Ordering::SeqCst);
        let again = pipe();
        assert!(std::ptr::eq(registry.insert(again.1), entries[5]));
        registry.close_all();
        for (i, (read, _)) in pipes.iter().enumerate().chain([(99, &again)]) {
            assert_eq!(writer_closed(read), i != 5, "pipe {i}");
        }
        // SAFETY: pipe 5's write end is ours and still open (checked above).
        unsafe { libc::close(pipes[5].1) };
        // Every entry is cleared: a second pass closes nothing.
        let later = pipe();
        registry.close_all();
        assert!(!writer_closed(&later.0));
        // SAFETY: ours, open.
        unsafe { libc::close(later.1) };
    }

    #[test]
    fn an_origin_made_here_is_not_inherited() {
        let o = Origin::here().unwrap();
        assert!(!o.is_inherited());
        assert!(!o.is_elsewhere());
        let f = ForkLocalFile::open(tempfile::tempfile).unwrap();
        assert!(f.get().is_some());
    }
}
