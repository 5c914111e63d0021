//! The consistency checker: [`Slab::check`].
//!
//! It reads the file as untrusted input: every walk is bounded by a table
//! size or a slot count, every link is range-checked before it is followed.
//! Each class is checked under its lock (when the checker has an identity),
//! so its free list cannot change mid-walk; slot states that change without
//! the lock (alloc, free) cannot break the invariants checked.
//!
//! Invariants: every slot is fresh (past the cursor), free (on exactly one
//! list, once), cached or allocated (by an existing owner row, or the
//! segment), or retired (before the cursor; counted, not a finding); list
//! counts match; extents lie inside `current_size` without
//! overlap; roots point at live slots big enough for their type; peer rows
//! hold known states.
//!
//! Channels that are named roots (a root whose slot holds a channel header
//! for values of the root type's size, as `Slab::reclaim_dead` finds them):
//! the ring's shape reads (head and length within the capacity, every
//! occupied entry in one of its five states, the entries adding up to at
//! most the capacity), and — with an identity, under the channel's lock, so
//! no operation is caught half-way — every queued or in-flight message that
//! carries a slot names a live slot of the segment, owned by the segment
//! (owner 0), and no slot is carried by two messages. The read-only checker
//! (no identity: `shmslab check`, [`inspect`](crate::inspect)) can take no
//! lock, so it checks the shape only: a message's slot is adopted by its
//! receiver, or handed to the segment by its sender, one step apart from
//! the entry's state, and a read between the two would be a false finding.

use crate::error::{Error, Result};
use crate::format::{self, Geometry, Meta, SlotId, SlotRef, SlotState, cls, journal, peer, root};
use crate::pool::channel::RawChannel;
use crate::pool::{Owner, Pool};
use crate::region::Memory;
use crate::slab::Slab;
use crate::sync::{AtomicU64, Ordering};
use crate::typed::list_roots;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where: `"header"`, `"class 3"`, `"root 7"`, `"peer 2"`,
    /// `channel "jobs"`, ...
    pub location: String,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.problem)
    }
}

/// Exact counts for one class, from a full scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassCheck {
    /// Bytes per slot.
    pub slot_size: u64,
    /// Extents.
    pub extents: u32,
    /// Slots in them.
    pub slots: u64,
    /// Never used.
    pub fresh: u64,
    /// On the shared free list.
    pub free: u64,
    /// In some process's cache.
    pub cached: u64,
    /// Allocated.
    pub allocated: u64,
    /// Cached or allocated by processes that are dead (reclaimable).
    pub owned_by_dead: u64,
    /// Retired: their last generation was used, so they are out of use for
    /// good (one per 2³² − 1 lives of a slot). Not a finding.
    pub retired: u64,
}

/// What [`Slab::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Problems; empty when the segment is consistent.
    pub findings: Vec<Finding>,
    /// States that are not inconsistencies but work a dead process left
    /// half done, which the next operation finishes by design (a growth cut
    /// short: the next attach, [`Slab::reclaim_dead`] or growth repairs it),
    /// and parts of the check that could not run (a channel whose lock a
    /// live process held throughout the wait for it). They do not make the
    /// report inconsistent.
    pub notes: Vec<Finding>,
    /// Per-class counts (empty if the header itself failed).
    pub classes: Vec<ClassCheck>,
    /// Named roots.
    pub roots: usize,
    /// Live attached processes.
    pub live_peers: usize,
    /// Rows of dead processes not yet reclaimed.
    pub dead_peers: usize,
    /// Slots allocated or cached, by owner (peer row + 1; 0 is the segment).
    pub owners: std::collections::BTreeMap<u32, u64>,
}

impl Report {
    /// Whether nothing was found wrong.
    pub fn is_consistent(&self) -> bool {
        self.findings.is_empty()
    }

    fn add(&mut self, location: impl Into<String>, problem: impl Into<String>) {
        self.findings.push(Finding {
            location: location.into(),
            problem: problem.into(),
        });
    }

    fn note(&mut self, location: impl Into<String>, what: impl Into<String>) {
        self.notes.push(Finding {
            location: location.into(),
            problem: what.into(),
        });
    }
}

impl Slab {
    /// Checks the whole segment and reports every inconsistency it finds, with
    /// exact per-class counts. Takes each class's lock in turn, so it can run
    /// while other processes work. Returns `Err` only for an I/O failure.
    ///
    /// Channels that are named roots are checked under their lock, one at a
    /// time: the ring's shape (head and length within the capacity, every
    /// entry in a known state, no more entries than the capacity), and that
    /// every queued or in-flight message that carries a slot names a live
    /// slot owned by the segment, carried by no other message of the
    /// channel. A problem is a [`Finding`] at `channel "<name>"`. A channel
    /// whose lock a live process keeps past a bounded wait is checked for
    /// its shape only, with a note. The read-only check of
    /// [`inspect`](crate::inspect) and `shmslab check` can take no lock, so
    /// it checks the shape only, never the messages' slots.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let h = slab.alloc(1u64)?;
    /// let report = slab.check()?;
    /// assert!(report.is_consistent(), "{:?}", report.findings);
    /// assert_eq!(report.classes[0].allocated, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check(&self) -> Result<Report> {
        check_pool(self.pool()?, Some((self.row, self.me)))
    }
}

/// Checks a segment. With `me`, each class is checked under its lock.
pub(crate) fn check_pool<M: Memory>(pool: &Pool<M>, me: Option<(usize, Owner)>) -> Result<Report> {
    let mut report = Report::default();
    // The header and every published extent, checked the way attach does
    // (catching up with growth by other processes first).
    if let Err(e) = Geometry::load_live(&pool.mem) {
        report.add("header", e.to_string());
        return Ok(report);
    }
    let geo = &pool.geo;
    let live_rows = check_peers(pool, me.map(|m| m.0), &mut report)?;
    // Under the growth lock (when we have an identity), an active journal
    // is a growth whose grower died, not one in progress. Either way it is
    // a state the next attach, reclaim or growth repairs: a note, not a
    // finding. A state no grower writes is a finding.
    match pool.growth_journal_state(me.map(|m| m.1))? {
        journal::IDLE => {}
        journal::ACTIVE => report.note(
            "growth journal",
            match me {
                Some(_) => {
                    "a growth was cut short by its grower's death; the next attach, reclaim_dead or growth finishes it"
                }
                None => {
                    "a growth is in progress, or its grower died; the next attach, reclaim_dead or growth finishes it"
                }
            },
        ),
        other => report.add(
            "growth journal",
            format!("unknown state {other} (attach, reclaim_dead and the next growth reset it)"),
        ),
    }
    for c in 0..geo.class_count() {
        let guard = match me {
            Some((_, owner)) => Some(pool.lock_class(c, owner)?),
            None => None,
        };
        let counts = check_class(pool, c, guard.is_some(), &live_rows, &mut report);
        drop(guard);
        report.classes.push(counts);
    }
    check_roots(pool, &mut report);
    check_channels(pool, me.map(|m| m.1), &mut report)?;
    Ok(report)
}

/// Peer rows: known states. Returns which owner ids (row + 1) are alive, and
/// which rows exist at all.
fn check_peers<M: Memory>(
    pool: &Pool<M>,
    own: Option<usize>,
    report: &mut Report,
) -> Result<OwnerRows> {
    let geo = &pool.geo;
    let mut rows = OwnerRows::default();
    for row in 0..geo.config.peer_capacity {
        let base = geo.peer_row(row);
        let state = format::load(&pool.mem, base + peer::STATE).unwrap_or(u64::MAX);
        match state {
            peer::EMPTY => continue,
            peer::LIVE | peer::CLAIMING => {}
            other => {
                report.add(format!("peer {row}"), format!("unknown state {other}"));
                continue;
            }
        }
        let alive = own == Some(row) || pool.liveness.row_alive(&pool.mem, row)?;
        rows.present.insert(row as u32 + 1);
        if alive {
            rows.alive.insert(row as u32 + 1);
            report.live_peers += 1;
        } else {
            report.dead_peers += 1;
        }
    }
    Ok(rows)
}

#[derive(Default)]
struct OwnerRows {
    present: HashSet<u32>,
    alive: HashSet<u32>,
}

fn check_class<M: Memory>(
    pool: &Pool<M>,
    c: usize,
    locked: bool,
    rows: &OwnerRows,
    report: &mut Report,
) -> ClassCheck {
    let here = format!("class {c}");
    let mut out = ClassCheck {
        slot_size: pool.class(c).size,
        ..Default::default()
    };
    let known = match pool.refresh(c) {
        Ok(k) => k,
        Err(e) => {
            report.add(&here, format!("extent table: {e}"));
            return out;
        }
    };
    out.extents = known;
    let entry = pool.geo.class_entry(c);
    let word = |off| format::load(&pool.mem, entry + off).unwrap_or(u64::MAX);

    // Walk the free list, bounded by the slot count.
    let total = pool.class(c).slots_in(known);
    out.slots = total;
    let mut on_list = HashSet::new();
    let mut id = SlotId::from_raw(word(cls::FREE_HEAD) as u32);
    while !id.is_nil() {
        if on_list.len() as u64 > total {
            report.add(&here, "the free list is longer than the class (a cycle)");
            break;
        }
        let Ok(addr) = pool.locate(c, id) else {
            report.add(
                &here,
                format!("the free list links to {id:?}, which is not a slot"),
            );
            break;
        };
        if !on_list.insert(id) {
            report.add(&here, format!("the free list has a cycle through {id:?}"));
            break;
        }
        let m = Meta(pool.meta(addr).load(Ordering::Acquire));
        if m.state() != SlotState::Free {
            report.add(
                &here,
                format!("slot {id:?} is on the free list but {:?}", m.state()),
            );
            break;
        }
        id = SlotId::from_raw(m.payload());
    }
    let counted = word(cls::FREE_COUNT);
    if counted != on_list.len() as u64 {
        report.add(
            &here,
            format!(
                "free count says {counted}, the list holds {}",
                on_list.len()
            ),
        );
    }

    // Every slot's word.
    let (fe, fi) = cls::cursor_parts(word(cls::FRESH));
    if fe > known {
        report.add(
            &here,
            format!("fresh cursor points at extent {fe} of {known}"),
        );
    }
    let mut problems = 0usize;
    let mut owners = std::collections::BTreeMap::new();
    let visit = |id: SlotId, w: &AtomicU64| {
        let m = Meta(w.load(Ordering::Acquire));
        let past_cursor = (id.extent(), id.index()) >= (fe, fi);
        let mut bad = |what: String| {
            problems += 1;
            if problems <= 20 {
                report.add(&here, format!("slot {id:?}: {what}"));
            }
        };
        if !m.is_valid() {
            bad(format!("metadata word {:#x} is not a valid state", m.0));
            return;
        }
        match m.state() {
            SlotState::Fresh if past_cursor => out.fresh += 1,
            SlotState::Fresh => bad("never claimed, but before the fresh cursor".into()),
            // Only a slot that was used retires, and used slots lie before
            // the cursor.
            SlotState::Retired if past_cursor => bad("retired, but past the fresh cursor".into()),
            SlotState::Retired => out.retired += 1,
            SlotState::Free => {
                out.free += 1;
                if !on_list.contains(&id) {
                    bad("free but not on the free list".into());
                }
            }
            SlotState::Cached | SlotState::Allocated => {
                if m.state() == SlotState::Cached {
                    out.cached += 1;
                } else {
                    out.allocated += 1;
                }
                let owner = m.payload();
                *owners.entry(owner).or_insert(0) += 1;
                if owner != 0 {
                    let row = owner as usize - 1;
                    // A peer that attached after the row snapshot: look again.
                    let present = rows.present.contains(&owner)
                        || (row < pool.geo.config.peer_capacity
                            && format::load(&pool.mem, pool.geo.peer_row(row) + peer::STATE)
                                .is_ok_and(|state| state != peer::EMPTY));
                    if !present {
                        bad(format!("owned by peer row {row} which is empty"));
                    } else if !rows.alive.contains(&owner) && rows.present.contains(&owner) {
                        out.owned_by_dead += 1;
                    }
                }
                if m.state() == SlotState::Cached && owner == 0 {
                    bad("cached by nobody".into());
                }
            }
        }
    };
    // Under the class lock (with an identity) the scan shows progress, so
    // the lock's waiters do not give up on a large class.
    let scanned = if locked {
        pool.for_each_slot_locked(c, visit)
    } else {
        pool.for_each_slot(c, visit)
    };
    if let Err(e) = scanned {
        report.add(&here, format!("extent table: {e}"));
    }
    for (owner, n) in owners {
        *report.owners.entry(owner).or_insert(0) += n;
    }
    if problems > 20 {
        report.add(
            &here,
            format!("... and {} more slot problems", problems - 20),
        );
    }
    out
}

fn check_roots<M: Memory>(pool: &Pool<M>, report: &mut Report) {
    let geo = &pool.geo;
    for i in 0..geo.config.root_capacity {
        let base = geo.root_entry(i);
        let r = |off| format::load(&pool.mem, base + off).unwrap_or(u64::MAX);
        let here = format!("root {i}");
        match r(root::STATE) {
            root::EMPTY => continue,
            root::READY => {}
            // An insert in progress, or one whose process died: harmless by
            // the protocol (the next holder of the roots lock clears it, and
            // reclaim frees the object). Not a finding.
            root::RESERVED => continue,
            other => {
                report.add(&here, format!("unknown state {other}"));
                continue;
            }
        }
        report.roots += 1;
        let len = r(root::NAME_LEN);
        if len == 0 || len > format::MAX_ROOT_NAME as u64 {
            report.add(&here, format!("name length {len}"));
        }
        let h = SlotRef::from_words([r(root::HANDLE), r(root::HANDLE + 8)]);
        match pool.check_ref(&h) {
            Err(e) => report.add(&here, format!("handle: {e}")),
            Ok((c, _, addr)) => {
                let m = Meta(pool.meta(addr).load(Ordering::Acquire));
                if !m.is_live(h.generation) {
                    report.add(&here, "points at a slot that is not its live allocation");
                }
                if pool.class(c).size < r(root::FP_SIZE) {
                    report.add(&here, "its type is larger than the slot");
                }
            }
        }
    }
}

/// An error as a finding's problem: a `Corrupt` error's own words (without
/// the advice to run the checker).
fn problem_of(e: &Error) -> String {
    match e {
        Error::Corrupt { what } => what.clone(),
        other => other.to_string(),
    }
}

/// `slot class 0 ext 0 idx 7 gen 2`.
fn slot_name(h: &SlotRef) -> String {
    let p = h.parts();
    format!(
        "slot class {} ext {} idx {} gen {}",
        p.class, p.extent, p.index, p.generation
    )
}

/// How long the checker waits for a channel's lock. Operations hold it for
/// microseconds; a holder that died is taken over at once. One that keeps it
/// longer (stopped, or a hostile peer writing its token) must not hang the
/// check: the channel is then checked without the lock (shape only), and a
/// note says so.
const CHANNEL_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Channel roots: their shape, and with an identity (under each channel's
/// lock) the slots their messages carry. Only an I/O failure is an `Err`.
fn check_channels<M: Memory>(pool: &Pool<M>, me: Option<Owner>, report: &mut Report) -> Result<()> {
    // A root table that does not read is `check_roots`' finding.
    let Ok(roots) = list_roots(pool) else {
        return Ok(());
    };
    for root in &roots {
        let Some(raw) = RawChannel::of_root(pool, &root.handle, root.fingerprint.size) else {
            continue;
        };
        let here = format!("channel {:?}", root.name);
        let Some(owner) = me else {
            check_channel_shape(&raw, &here, report);
            continue;
        };
        // Taking the lock resolves what a holder that died left half done
        // (a `Corrupt` error here is a channel whose words do not read).
        match raw.lock(pool, owner, Instant::now().checked_add(CHANNEL_LOCK_WAIT)) {
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => report.add(&here, format!("taking its lock: {}", problem_of(&e))),
            Ok(None) => {
                report.note(
                    &here,
                    format!(
                        "its lock was held by a live process for all of {CHANNEL_LOCK_WAIT:?}; \
                         checked its shape only, not the slots its messages carry"
                    ),
                );
                check_channel_shape(&raw, &here, report);
            }
            Ok(Some(hold)) => {
                let r = check_channel_locked(pool, &raw, &here, report);
                raw.unlock(hold);
                r?;
            }
        }
    }
    Ok(())
}

/// The ring's shape: head and length within the capacity, every occupied
/// entry in a known state (`counts` says `Corrupt` otherwise), and the
/// entries adding up to at most the capacity. Needs no lock: every step of
/// the protocol leaves a valid shape.
fn check_channel_shape(raw: &RawChannel<'_>, here: &str, report: &mut Report) -> bool {
    let c = match raw.counts() {
        Ok(c) => c,
        Err(e) => {
            report.add(here, problem_of(&e));
            return false;
        }
    };
    let occupied = c.queued + c.in_flight + c.sending + c.done;
    if occupied > c.capacity {
        report.add(
            here,
            format!(
                "{occupied} entries occupied ({} queued, {} in flight, {} sending, {} done) \
                 in a capacity of {}",
                c.queued, c.in_flight, c.sending, c.done, c.capacity
            ),
        );
        return false;
    }
    true
}

/// Under the channel's lock: the shape, then every message's slot is live
/// and the segment's, carried by one message only.
fn check_channel_locked<M: Memory>(
    pool: &Pool<M>,
    raw: &RawChannel<'_>,
    here: &str,
    report: &mut Report,
) -> Result<()> {
    if !check_channel_shape(raw, here, report) {
        return Ok(());
    }
    let held = match raw.held_slots() {
        Ok(h) => h,
        Err(e) => {
            report.add(here, problem_of(&e));
            return Ok(());
        }
    };
    let mut seen = HashSet::new();
    let mut problems = 0usize;
    for (slot, receiver) in held {
        if slot.is_null() {
            continue;
        }
        let name = slot_name(&slot);
        let what = match receiver {
            None => "a queued message".to_string(),
            Some(token) => match Owner::row_of(token) {
                Some(row) => format!("a message in flight to peer row {row}"),
                None => format!("a message in flight to token {token:#x}"),
            },
        };
        let problem = match pool.slot_owner(&slot) {
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => Some(format!(
                "{what} carries {name}, which is no slot: {}",
                problem_of(&e)
            )),
            Ok(None) => Some(format!(
                "{what} carries {name}, which is not live (freed behind the channel's back?)"
            )),
            Ok(Some(0)) => None,
            Ok(Some(owner)) => Some(format!(
                "{what} carries {name}, which is owned by peer row {}, not the segment",
                owner - 1
            )),
        };
        let problem = problem.or_else(|| {
            (!seen.insert(slot))
                .then(|| format!("{what} carries {name}, which another message carries too"))
        });
        if let Some(p) = problem {
            problems += 1;
            if problems <= 20 {
                report.add(here, p);
            }
        }
    }
    if problems > 20 {
        report.add(
            here,
            format!("... and {} more message problems", problems - 20),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_pool;
    use crate::format::{hdr, journal};
    use crate::pool::testing::{heap_processes, kill, write_journal};
    use crate::sync::Ordering;

    /// A grower of class 0 that died after writing its journal, before
    /// reserving anything: the state every `grow.journaled` kill leaves.
    #[test]
    fn a_dead_growers_journal_is_a_note_and_reclaim_finishes_it() {
        let procs = heap_processes(&[64], 4096, 1 << 20, 2);
        let (survivor, me) = &procs[1];
        let (dead, dead_me) = &procs[0];
        write_journal(dead, 0, 0, dead.current_size(), 4096, 1);
        dead.table_word(hdr::GROW_LOCK)
            .unwrap()
            .store(dead_me.token, Ordering::Release);
        kill(dead, 0);

        let r = check_pool(survivor, Some((1, *me))).unwrap();
        assert!(
            r.is_consistent(),
            "a repairable state is no finding: {:?}",
            r.findings
        );
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        assert_eq!(r.notes[0].location, "growth journal");

        let reclaimed = crate::peers::reclaim_dead(survivor, (1, *me)).unwrap();
        assert!(reclaimed.growth_repaired);
        let r = check_pool(survivor, Some((1, *me))).unwrap();
        assert!(r.is_consistent() && r.notes.is_empty(), "{r:?}");
        // Idempotent: nothing left to repair.
        assert!(
            !crate::peers::reclaim_dead(survivor, (1, *me))
                .unwrap()
                .growth_repaired
        );
    }

    /// A channel root whose lock a live process keeps: the check waits a
    /// bounded time, checks the shape only and says so in a note (no hang,
    /// no finding); once the holder is dead the check takes the lock over.
    #[test]
    fn a_channel_lock_kept_by_a_live_process_is_a_note_not_a_hang() {
        use crate::error::Fingerprint;
        use crate::pool::channel::{RawChannel, words_for};
        use crate::pool::testing::alloc_one;
        use crate::typed::RootType;
        let procs = heap_processes(&[512], 4096, 1 << 20, 2);
        let (p, me) = &procs[0];
        let (q, holder) = &procs[1];
        let ty = RootType {
            fingerprint: Fingerprint {
                size: 8,
                align: 8,
                schema: 1,
            },
            name: "u64 channel",
        };
        let words = words_for(4, 8).unwrap();
        let h = crate::typed::roots::get_or_insert(p, *me, "ch", ty, || {
            let h = alloc_one(p, 0, *me)?;
            RawChannel::init(p.live_words(&h, words)?, 4);
            Ok(h)
        })
        .unwrap();
        let r = check_pool(p, Some((0, *me))).unwrap();
        assert!(r.is_consistent() && r.notes.is_empty(), "{r:?}");

        let raw = RawChannel::open(q.live_words(&h, words).unwrap(), 8).unwrap();
        let _kept = raw.lock(q, *holder, None).unwrap().unwrap();
        let started = std::time::Instant::now();
        let r = check_pool(p, Some((0, *me))).unwrap();
        assert!(started.elapsed() >= super::CHANNEL_LOCK_WAIT);
        assert!(r.is_consistent(), "{r:?}");
        assert_eq!(r.notes.len(), 1, "{r:?}");
        assert_eq!(r.notes[0].location, "channel \"ch\"");

        kill(q, 1);
        let r = check_pool(p, Some((0, *me))).unwrap();
        assert!(r.is_consistent() && r.notes.is_empty(), "{r:?}");
    }

    /// A journal state no grower writes is corruption, not a note.
    #[test]
    fn a_forged_journal_state_is_a_finding() {
        let procs = heap_processes(&[64], 4096, 1 << 20, 1);
        let (p, me) = &procs[0];
        p.table_word(hdr::JOURNAL + journal::STATE)
            .unwrap()
            .store(7, Ordering::Release);
        let r = check_pool(p, Some((0, *me))).unwrap();
        assert!(
            r.findings.iter().any(|f| f.location == "growth journal"),
            "{r:?}"
        );
        // The next repair resets it.
        assert!(p.repair_dead_growth(*me).unwrap());
        assert!(check_pool(p, Some((0, *me))).unwrap().is_consistent());
    }
}
