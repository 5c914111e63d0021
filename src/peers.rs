//! Who is attached, and reclaiming what dead processes held.
//!
//! Each attached process (each `Slab`) takes a row of the peer table and an
//! OFD lock on the row's byte in the file's lock space, taken on an open file
//! description it opened itself. The kernel drops that lock when the process
//! dies, however it dies, so "is row r alive?" is answered by the kernel, not
//! by a timeout. There is no fallback: where OFD locks do not work (taking or
//! asking about one fails), attach fails with
//! [`Error::LivenessLocksUnsupported`], since without them a live peer would
//! look dead and reclaim and register would not exclude each other. Pid and
//! start time are recorded for display only.
//!
//! Slots carry their owner (row + 1) in their metadata word. Reclaiming a
//! dead row frees every slot it owned — allocated or sitting in its caches —
//! under the class locks, each with the same compare-and-swap a late `free`
//! would use, so the two can race and a slot is still freed once. Slots that
//! a named root points at are handed to the segment instead of freed.

use crate::error::{Error, Result};
use crate::fault::crash_point;
use crate::format::{self, Meta, SlotState, peer};
use crate::lifetime::{self, Departure};
use crate::pool::{Liveness, Owner, PEER_LOCK_BASE, Pool, liveness_lock_error, retire_if};
use crate::region::Memory;
use crate::sync::Ordering;
use crate::sys;
use crate::typed::list_roots;
use std::collections::HashSet;

/// One row of the peer table, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The row.
    pub row: usize,
    /// The process id it recorded.
    pub pid: u32,
    /// Whether the kernel says the process still holds its row.
    pub alive: bool,
    /// Whether this row is the calling `Slab`'s own.
    pub is_self: bool,
}

/// What [`Slab::reclaim_dead`](crate::Slab::reclaim_dead) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    /// Rows of dead processes that were cleared.
    pub peers: usize,
    /// Slots freed.
    pub slots: u64,
    /// Slots handed to the segment because a named root points at them.
    pub kept_for_roots: u64,
    /// Whether a growth that a dead process cut short was finished (or
    /// forgotten, if it had published nothing).
    pub growth_repaired: bool,
    /// Slots retired instead of freed: their last generation was used, so
    /// they are out of use for good (docs/DESIGN.md, *Generations*).
    pub retired: u64,
    /// Messages that dead receivers held, put back in their channels (the
    /// channels that are named roots).
    pub redelivered: u64,
}

/// Claims a row for a new peer and returns it with the peer's identity: an
/// empty row if there is one, else the row of a dead process, whose slots
/// are reclaimed (acting as the row's new incarnation) before it is used.
pub(crate) fn register<M: Memory>(pool: &Pool<M>) -> Result<(usize, Owner)> {
    for take_dead in [false, true] {
        for row in 0..pool.geo.config.peer_capacity {
            if let Some(me) = try_take_row(pool, row, take_dead)? {
                return Ok((row, me));
            }
        }
    }
    Err(Error::PeerTableFull {
        capacity: pool.geo.config.peer_capacity,
    })
}

fn try_take_row<M: Memory>(pool: &Pool<M>, row: usize, take_dead: bool) -> Result<Option<Owner>> {
    let base = pool.geo.peer_row(row);
    let state = pool.table_word(base + peer::STATE)?;
    let was = state.load(Ordering::Acquire);
    if was != peer::EMPTY && !take_dead {
        return Ok(None);
    }
    // Holding the row's lock means no live process has the row (the lock is
    // per open file description, so this holds across and within processes).
    if !lock_row(pool, row)? {
        return Ok(None);
    }
    // Asked even for an empty row: the others will judge us by this call,
    // so it must work before the row is ours.
    let dead = match dead_row(pool, row) {
        Ok(dead) => dead,
        Err(e) => {
            unlock_row(pool, row);
            return Err(e);
        }
    };
    if (was != peer::EMPTY && !dead)
        || state
            .compare_exchange(was, peer::CLAIMING, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    {
        unlock_row(pool, row);
        return Ok(None);
    }
    crash_point("register.claiming");
    let inc_w = pool.table_word(base + peer::INCARNATION)?;
    let incarnation = (inc_w.load(Ordering::Relaxed) as u32)
        .wrapping_add(1)
        .max(1);
    inc_w.store(incarnation as u64, Ordering::Relaxed);
    let pid = sys::current_pid();
    pool.table_word(base + peer::PID)?
        .store(pid as u64, Ordering::Relaxed);
    pool.table_word(base + peer::START_TIME)?
        .store(sys::own_start_time(pid).unwrap_or(0), Ordering::Relaxed);
    state.store(peer::LIVE, Ordering::Release);
    let me = Owner::new(row, incarnation);
    if was != peer::EMPTY {
        // A dead process's row (live, or left half claimed): its slots carry
        // the same owner id as ours will, so free them before we own anything.
        reclaim_row(pool, me, me.id)?;
    }
    Ok(Some(me))
}

/// Whether a row whose lock we could take belongs to a dead process.
fn dead_row<M: Memory>(pool: &Pool<M>, row: usize) -> Result<bool> {
    // With the row's lock in our hands, the kernel's answer is "not locked
    // by anyone else" (dead).
    Ok(!pool.liveness.row_alive(&pool.mem, row)?)
}

/// Takes the OFD lock on `row` (file-backed pools); `false` if a live
/// process holds it. A lock that cannot be taken at all is an error
/// ([`Error::LivenessLocksUnsupported`] where OFD locks do not work), never
/// "acquired": running on without it would leave the row unguarded.
fn lock_row<M: Memory>(pool: &Pool<M>, row: usize) -> Result<bool> {
    let (Liveness::File, Some(file)) = (&pool.liveness, pool.mem.lock_file()) else {
        return Ok(true);
    };
    match sys::ofd_try_lock(file, PEER_LOCK_BASE + row as u64) {
        Ok(sys::TryLock::Acquired) => Ok(true),
        Ok(sys::TryLock::Busy) => Ok(false),
        Err(e) => Err(liveness_lock_error("lock peer row", e)),
    }
}

fn unlock_row<M: Memory>(pool: &Pool<M>, row: usize) {
    if let (Liveness::File, Some(file)) = (&pool.liveness, pool.mem.lock_file()) {
        let _ = sys::ofd_unlock(file, PEER_LOCK_BASE + row as u64);
    }
}

/// Clean detach: slots this peer still has cached go back to the free
/// lists; slots it allocated and did not free are handed to the segment
/// (owner 0), since other processes may hold their handles. Then the row is
/// cleared, after the file's fate is decided as `how` says (see
/// `crate::lifetime`; `unlink` removes the path). `scan` is false when the
/// peer never allocated anything. Returns whether the file was removed.
pub(crate) fn detach<M: Memory>(
    pool: &Pool<M>,
    row: usize,
    me: Owner,
    scan: bool,
    how: Departure,
    unlink: impl FnOnce() -> bool,
) -> Result<bool> {
    if scan {
        for c in 0..pool.class_count() {
            // A class that cannot be handed over leaves the row live: once
            // this process's descriptor closes, the row reads as dead and
            // reclaim frees what it still owns. Emptying it would leave
            // those slots to whoever takes the row next. (The file stays,
            // as a dead process's would.)
            release_owned(pool, c, me, me.id, &HashSet::new(), Disposal::Detach)?;
        }
    }
    let state = pool.table_word(pool.geo.peer_row(row) + peer::STATE)?;
    let removed = lifetime::depart(pool, row, me, how, unlink, || {
        state.store(peer::EMPTY, Ordering::Release);
        Ok(())
    });
    unlock_row(pool, row);
    removed
}

/// Gives back the row of a peer that registered but is not let in (see
/// `crate::lifetime::admit`): it owns nothing yet.
pub(crate) fn withdraw<M: Memory>(pool: &Pool<M>, row: usize) -> Result<()> {
    let state = pool.table_word(pool.geo.peer_row(row) + peer::STATE)?;
    state.store(peer::EMPTY, Ordering::Release);
    unlock_row(pool, row);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Disposal {
    /// The owner died: free everything (roots' slots go to the segment).
    Reclaim,
    /// The owner is leaving cleanly: free cached slots, keep allocations.
    Detach,
}

/// What [`release_owned`] did to a class's slots.
#[derive(Default)]
struct Released {
    freed: u64,
    kept: u64,
    retired: u64,
}

/// Frees (or hands over, or retires) the slots of class `c` owned by
/// `dead_id`, under the class lock taken as `me`.
fn release_owned<M: Memory>(
    pool: &Pool<M>,
    c: usize,
    me: Owner,
    dead_id: u32,
    rooted: &HashSet<(usize, u32, u32)>,
    how: Disposal,
) -> Result<Released> {
    let _guard = pool.lock_class(c, me)?;
    let list = pool.free_list(c)?;
    let owned_by_dead = |m: Meta| {
        matches!(m.state(), SlotState::Cached | SlotState::Allocated) && m.payload() == dead_id
    };
    let mut out = Released::default();
    pool.for_each_slot_locked(c, |id, w| {
        let m = Meta(w.load(Ordering::Acquire));
        if !owned_by_dead(m) {
            return;
        }
        let keep = m.state() == SlotState::Allocated
            && (how == Disposal::Detach || rooted.contains(&(c, id.raw(), m.generation())));
        if keep {
            let to_segment = Meta::new(m.generation(), SlotState::Allocated, 0);
            if w.compare_exchange(m.0, to_segment.0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                out.kept += 1;
            }
            return;
        }
        // Same CAS a late free would race with: whoever wins, the slot is
        // freed once. Reclaim bumps the generation so a late free of a dead
        // owner's handle reports it stale; a slot whose last generation was
        // used is retired instead, never given a wrapped one.
        if how == Disposal::Reclaim && m.next_generation().is_none() {
            if retire_if(w, |now| {
                owned_by_dead(now) && now.next_generation().is_none()
            }) {
                out.retired += 1;
            }
            return;
        }
        let pushed = list.push(w, id, |now| {
            if !owned_by_dead(now) {
                return None;
            }
            match how {
                Disposal::Reclaim => now.next_generation(),
                Disposal::Detach => Some(now.generation()),
            }
        });
        if pushed {
            out.freed += 1;
            crash_point("reclaim.slot_freed");
        }
    })?;
    Ok(out)
}

/// The (class, slot id, generation) of every slot a ready root points at.
fn rooted_slots<M: Memory>(pool: &Pool<M>) -> Result<HashSet<(usize, u32, u32)>> {
    Ok(list_roots(pool)?
        .into_iter()
        // A root's handle is read from the file: skip one that names no slot.
        .filter(|r| r.handle.well_formed())
        .map(|r| {
            (
                r.handle.class as usize,
                r.handle.slot_id().raw(),
                r.handle.generation,
            )
        })
        .collect())
}

/// Frees (or, for rooted objects, hands to the segment; or retires) every
/// slot owned by `owner_id`, acting as `me`.
fn reclaim_row<M: Memory>(pool: &Pool<M>, me: Owner, owner_id: u32) -> Result<Released> {
    let rooted = rooted_slots(pool)?;
    let mut total = Released::default();
    for c in 0..pool.class_count() {
        let r = release_owned(pool, c, me, owner_id, &rooted, Disposal::Reclaim)?;
        total.freed += r.freed;
        total.kept += r.kept;
        total.retired += r.retired;
    }
    Ok(total)
}

/// Frees the slots of every dead peer and clears their rows, acting as `me`
/// (the caller's own row is skipped).
pub(crate) fn reclaim_dead<M: Memory>(pool: &Pool<M>, me: (usize, Owner)) -> Result<ReclaimReport> {
    let _local = pool.reclaim_local.lock();
    let mut report = ReclaimReport::default();
    for row in 0..pool.geo.config.peer_capacity {
        if row == me.0 {
            continue;
        }
        let state_w = pool.table_word(pool.geo.peer_row(row) + peer::STATE)?;
        if state_w.load(Ordering::Acquire) == peer::EMPTY {
            continue;
        }
        // Holding the row's lock proves its process is gone and keeps a new
        // process from taking the row while we empty it.
        if !lock_row(pool, row)? {
            continue;
        }
        // Whatever happens next, the row's lock is released (an error must
        // not leave a dead row looking alive to everyone else).
        let done = (|| -> Result<bool> {
            // Re-read under the row lock: another reclaimer may have emptied
            // it. Live or left half claimed, its slots are owned by row + 1.
            if !dead_row(pool, row)? || state_w.load(Ordering::Acquire) == peer::EMPTY {
                return Ok(false);
            }
            let r = reclaim_row(pool, me.1, row as u32 + 1)?;
            report.slots += r.freed;
            report.kept_for_roots += r.kept;
            report.retired += r.retired;
            state_w.store(peer::EMPTY, Ordering::Release);
            Ok(true)
        })();
        unlock_row(pool, row);
        if done? {
            report.peers += 1;
        }
    }
    report.growth_repaired = pool.repair_dead_growth(me.1)?;
    Ok(report)
}

/// Every non-empty row of the peer table.
pub(crate) fn list<M: Memory>(pool: &Pool<M>, own_row: Option<usize>) -> Result<Vec<PeerInfo>> {
    let mut out = Vec::new();
    for row in 0..pool.geo.config.peer_capacity {
        let base = pool.geo.peer_row(row);
        if format::load(&pool.mem, base + peer::STATE)? == peer::EMPTY {
            continue;
        }
        let pid = format::load(&pool.mem, base + peer::PID)? as u32;
        out.push(PeerInfo {
            row,
            pid,
            alive: own_row == Some(row) || pool.liveness.row_alive(&pool.mem, row)?,
            is_self: own_row == Some(row),
        });
    }
    Ok(out)
}
