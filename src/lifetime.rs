//! How long a segment file stays at its path: [`FileLifetime`], and the
//! protocol by which the last process to detach removes it.
//!
//! The lifetime is chosen at create and stored in the header, so every
//! process that attaches follows the same rule, whichever of them leaves
//! last.
//!
//! # The last detacher
//!
//! Two things run under the segment's *lifetime lock* (a shared lock word,
//! `pool::lock`, so a holder that dies is taken over):
//!
//! - **Admission** ([`admit`]): an attacher, after its peer row is
//!   registered (live, with its OFD lock held), takes the lock and looks at
//!   the header's *removed* mark. Set: the segment was removed, and attach
//!   fails with [`Error::SegmentRemoved`] (the row is given back).
//! - **Departure** ([`depart`]): a detacher, with its row still live, takes
//!   the lock and asks whether any *other* row is attached (not empty, and
//!   the kernel says its OFD lock is held; a `SIGKILL`ed process's row does
//!   not count). If none is, it sets the mark, then unlinks the path. Either
//!   way it empties its own row before it releases the lock.
//!
//! Why that is enough: departures are serialised and each empties its row
//! inside, so of two last detachers the first still sees the second's row
//! and only the second finds nobody: exactly one removes. An attacher either
//! registered its row before the decider's scan, which then sees it and
//! keeps the file, or it did not, and then its admission comes after the
//! decision (the lock orders them) and sees the mark — so no `Slab` is ever
//! made on a file its last detacher removed, even by a process that opened
//! the path just before the unlink. The mark is set before the unlink: a
//! remover that dies between the two leaves a marked file at the path,
//! which the next attacher (that opened it by the path) unlinks for it
//! before it fails; the other order would leave an orphan that an attacher
//! waiting on the lock could join. An unlink that fails (a directory the
//! process may not write) clears the mark again: the file stays, as if the
//! last process had died, and a later last detacher tries again.

use crate::error::{Error, Result};
use crate::format::{hdr, peer};
use crate::pool::{Owner, Pool};
use crate::region::Memory;
use crate::sync::Ordering;

/// How long a segment's file stays at its path. Chosen at create
/// ([`SlabBuilder::lifetime`](crate::SlabBuilder::lifetime)), recorded in the
/// file, and followed by every process that attaches.
///
/// Whatever the lifetime, a process that is attached keeps its mapping: a
/// removed path only stops new processes from attaching by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum FileLifetime {
    /// The file stays until someone removes it (`rm`, `std::fs::remove_file`,
    /// [`Slab::remove_file_on_drop`](crate::Slab::remove_file_on_drop)), like
    /// an LMDB environment or a Boost `managed_mapped_file`. The default: in
    /// a service, processes start and exit in any order — the creator first,
    /// every worker between two restarts — and the segment, with the named
    /// roots and persisted slots in it, must outlive each of them.
    #[default]
    Keep,
    /// The last process attached to detach *cleanly* (dropping its `Slab`)
    /// removes the file; no process removes it while another is attached.
    /// Decided under a lock in the file, so two last detachers cannot both
    /// remove it or both keep it, and an attach racing the last detach
    /// either joins a file that stays or fails with
    /// [`Error::SegmentRemoved`] (or `NotFound`), never joins a removed one.
    /// A process that dies attached (`SIGKILL`) removes nothing: the file
    /// stays until a later process attaches and detaches (`shmslab reclaim`
    /// does both). For a job whose processes' lifetime is the data's.
    RemoveWhenLastDetaches,
    /// Unlinked right after create (the seed's `Auto`): no path, so nothing
    /// is left behind however the processes end, and the kernel frees the
    /// storage when the last mapping and descriptor close. Others join
    /// through the descriptor ([`Slab`](crate::Slab) implements `AsFd`),
    /// passed over a Unix socket or inherited, with
    /// [`Slab::attach_fd`](crate::Slab::attach_fd).
    Unlinked,
}

impl FileLifetime {
    /// The header word (docs/FORMAT.md).
    pub(crate) fn to_word(self) -> u64 {
        match self {
            FileLifetime::Keep => 0,
            FileLifetime::RemoveWhenLastDetaches => 1,
            FileLifetime::Unlinked => 2,
        }
    }

    /// The lifetime a header word names, if any.
    pub(crate) fn from_word(word: u64) -> Option<Self> {
        match word {
            0 => Some(FileLifetime::Keep),
            1 => Some(FileLifetime::RemoveWhenLastDetaches),
            2 => Some(FileLifetime::Unlinked),
            _ => None,
        }
    }
}

/// What a clean detach does with the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Departure {
    /// Leave it (`Keep`, `Unlinked`, or [`Slab::keep_file`](crate::Slab::keep_file)).
    Leave,
    /// Remove it if no other process is attached (`RemoveWhenLastDetaches`).
    RemoveIfLast,
    /// Remove it whoever else is attached
    /// ([`Slab::remove_file_on_drop`](crate::Slab::remove_file_on_drop)).
    Remove,
}

impl Departure {
    /// A clean detach's default for a segment of `lifetime`.
    pub(crate) fn for_lifetime(lifetime: FileLifetime) -> Self {
        match lifetime {
            FileLifetime::RemoveWhenLastDetaches => Departure::RemoveIfLast,
            FileLifetime::Keep | FileLifetime::Unlinked => Departure::Leave,
        }
    }
}

fn lock_lifetime<M: Memory>(
    pool: &Pool<M>,
    me: Owner,
) -> Result<crate::pool::lock::SharedGuard<'_>> {
    pool.lock_shared(
        &pool.lifetime_local,
        hdr::LIFETIME_LOCK,
        hdr::LIFETIME_PROGRESS,
        me,
    )
}

/// Admission, for a process whose row `me` was just registered: fails with
/// [`Error::SegmentRemoved`] if the segment was removed. Then `finish` is
/// called first (under the lock): it unlinks the path if it still names this
/// file, which only a remover that died between its mark and its unlink
/// leaves behind.
pub(crate) fn admit<M: Memory>(pool: &Pool<M>, me: Owner, finish: impl FnOnce()) -> Result<()> {
    let _guard = lock_lifetime(pool, me)?;
    if pool.table_word(hdr::REMOVED)?.load(Ordering::Acquire) != 0 {
        finish();
        return Err(Error::SegmentRemoved);
    }
    Ok(())
}

/// Departure of the process on `row` (its slots already handed back), as
/// `how` says. `unlink` removes the path (if it still names this file) and
/// says whether that worked; `empty_row` gives the row back. Returns whether
/// this departure removed the file. The row is emptied whatever happens.
pub(crate) fn depart<M: Memory>(
    pool: &Pool<M>,
    row: usize,
    me: Owner,
    how: Departure,
    unlink: impl FnOnce() -> bool,
    empty_row: impl FnOnce() -> Result<()>,
) -> Result<bool> {
    if how == Departure::Leave {
        empty_row()?;
        return Ok(false);
    }
    let guard = lock_lifetime(pool, me);
    // Without the lock nothing may be decided; the row is given back anyway
    // (the file stays, as if this process had died).
    let guard = match guard {
        Ok(g) => g,
        Err(e) => {
            empty_row()?;
            return Err(e);
        }
    };
    let decided = (|| -> Result<bool> {
        let removed = pool.table_word(hdr::REMOVED)?;
        // Removed once, never again: the path may name a new file by now.
        if removed.load(Ordering::Acquire) != 0 {
            return Ok(false);
        }
        if how == Departure::RemoveIfLast && others_attached(pool, row)? {
            return Ok(false);
        }
        removed.store(1, Ordering::Release);
        if unlink() {
            Ok(true)
        } else {
            // The file stays: let a later last detacher try again.
            removed.store(0, Ordering::Release);
            Ok(false)
        }
    })();
    // Emptying our row while still holding the lock is what makes the
    // decision and the departure one step for the next detacher; but from
    // here a waiter sees our token's row empty, judges us dead and may take
    // the lock over (our release then fails quietly). So nothing may be done
    // between the two lines below that needs the lock.
    let emptied = empty_row();
    drop(guard);
    let decided = decided?;
    emptied?;
    Ok(decided)
}

/// Whether a row other than `own` belongs to a live process: one that is
/// not empty (live, or being claimed) and whose liveness lock is held. One
/// load per empty row; a kernel query per other row, stopping at the first
/// live one.
fn others_attached<M: Memory>(pool: &Pool<M>, own: usize) -> Result<bool> {
    for row in 0..pool.geo.config.peer_capacity {
        if row == own {
            continue;
        }
        let state = pool.table_word(pool.geo.peer_row(row) + peer::STATE)?;
        if state.load(Ordering::Acquire) == peer::EMPTY {
            continue;
        }
        if pool.liveness.row_alive(&pool.mem, row)? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::pool::testing::{heap_processes, kill, unregistered};

    const CLASSES: &[u64] = &[64];

    fn leave<M: Memory>(pool: &Pool<M>, row: usize, me: Owner, how: Departure) -> bool {
        let unlinked = std::cell::Cell::new(0);
        let removed = crate::peers::detach(pool, row, me, true, how, || {
            unlinked.set(unlinked.get() + 1);
            true
        })
        .expect("detach");
        assert_eq!(unlinked.get(), removed as u32, "unlink called iff removed");
        removed
    }

    #[test]
    fn only_the_last_of_three_detachers_removes() {
        let ps = heap_processes(CLASSES, 4096, 1 << 20, 3);
        let removed: Vec<bool> = ps
            .iter()
            .enumerate()
            .map(|(row, (p, o))| leave(p, row, *o, Departure::RemoveIfLast))
            .collect();
        assert_eq!(removed, [false, false, true]);
    }

    #[test]
    fn a_dead_peer_does_not_keep_the_file() {
        let ps = heap_processes(CLASSES, 4096, 1 << 20, 2);
        kill(&ps[1].0, 1);
        assert!(leave(&ps[0].0, 0, ps[0].1, Departure::RemoveIfLast));
    }

    #[test]
    fn after_a_removal_attach_is_refused_and_nothing_is_removed_again() {
        let mut ps = heap_processes(CLASSES, 4096, 1 << 20, 3);
        let (late, late_me) = ps.pop().expect("three");
        // Removed while two are attached (remove_file_on_drop).
        assert!(leave(&ps[0].0, 0, ps[0].1, Departure::Remove));
        // The late process registered already: its admission is refused.
        let mut finished = false;
        let err = admit(&late, late_me, || finished = true).unwrap_err();
        assert!(matches!(err, Error::SegmentRemoved), "{err}");
        assert!(finished, "admission finishes a removal it finds marked");
        crate::peers::withdraw(&late, 2).expect("withdraw");
        // One that registers only now is refused too.
        let later = unregistered(&ps[1].0);
        let (_, later_me) = crate::peers::register(&later).expect("register");
        let err = admit(&later, later_me, || {}).unwrap_err();
        assert!(matches!(err, Error::SegmentRemoved), "{err}");
        // The last one leaves: the path may be a new file now, not removed.
        assert!(!leave(&ps[1].0, 1, ps[1].1, Departure::RemoveIfLast));
    }

    #[test]
    fn a_failed_unlink_clears_the_mark() {
        let ps = heap_processes(CLASSES, 4096, 1 << 20, 2);
        let (p, o) = &ps[0];
        let removed =
            crate::peers::detach(p, 0, *o, false, Departure::Remove, || false).expect("detach");
        assert!(!removed);
        admit(&ps[1].0, ps[1].1, || panic!("nothing to finish")).expect("admitted");
    }

    #[test]
    fn lifetime_words_round_trip_and_unknown_ones_are_refused() {
        for l in [
            FileLifetime::Keep,
            FileLifetime::RemoveWhenLastDetaches,
            FileLifetime::Unlinked,
        ] {
            assert_eq!(FileLifetime::from_word(l.to_word()), Some(l));
        }
        assert_eq!(FileLifetime::from_word(3), None);
        assert_eq!(FileLifetime::default(), FileLifetime::Keep);
    }
}
