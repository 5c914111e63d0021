//! Processes that die while attached: killed from outside, killed at every
//! named crash point of the pool's protocols, or leaving cleanly.
//!
//! The tests at crash points need the crate's `fault-injection` feature:
//!
//! ```text
//! cargo test --features fault-injection --test crash
//! ```
//!
//! With it, a child whose environment has `SHMSLAB_CRASH_AT=<point>[@n]`
//! sends itself SIGKILL the n-th time it reaches `<point>`. Without the
//! feature only the tests that kill from outside (and the clean exit) run.

mod common;

use common::child_args;
use common::live::{
    LiveChild, SharedWords, SpinBarrier, from_hex, hear, new_segment, say, segment_dir,
    small_segment, to_hex,
};
use shmslab::{ClassCheck, Error, Report, Slab, SlotRef};
use std::path::PathBuf;
use std::time::Duration;

/// Bound on any single wait for a child.
const MSG_TIMEOUT: Duration = Duration::from_secs(60);

/// What a holder child allocates: (request size, count), several classes.
const HOLDINGS: &[(usize, usize)] = &[(64, 20), (1000, 10), (5000, 5), (100_000, 3)];

fn holdings_total() -> usize {
    HOLDINGS.iter().map(|&(_, n)| n).sum()
}

/// The byte a holder fills its `i`-th slot with.
fn fill_byte(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

/// Attaches, allocates [`HOLDINGS`], fills them, frees a few more so its
/// cache holds slots too, reports `HANDLES <hex>:<len> ...`, then obeys:
/// `EXIT` drops the `Slab` and replies `BYE`; anything else waits (for the
/// parent's SIGKILL).
fn holder_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let mut report = Vec::new();
    let mut i = 0;
    for &(len, n) in HOLDINGS {
        for _ in 0..n {
            let h = slab.alloc_bytes(len).expect("alloc");
            slab.write_bytes(h, 0, &vec![fill_byte(i); len])
                .expect("write");
            report.push(format!("{}:{len}", to_hex(&h.raw().to_bytes())));
            i += 1;
        }
    }
    // Allocate and free some more: they end in this process's cache.
    let extra: Vec<SlotRef> = (0..7)
        .map(|_| slab.alloc_bytes(3000).expect("alloc").raw())
        .collect();
    for h in extra {
        slab.free(h).expect("free");
    }
    say("HANDLES", report.join(" "));
    loop {
        if hear() == "EXIT" {
            drop(slab);
            say("BYE", "");
            return;
        }
    }
}

fn parse_handles(payload: &str) -> Vec<(SlotRef, usize)> {
    payload
        .split_whitespace()
        .map(|item| {
            let (hex, len) = item.split_once(':').expect("hex:len");
            (
                SlotRef::from_bytes(from_hex::<16>(hex)),
                len.parse().expect("length"),
            )
        })
        .collect()
}

/// The sum of one count over all classes of a report.
fn total(report: &Report, count: impl Fn(&ClassCheck) -> u64) -> u64 {
    report.classes.iter().map(count).sum()
}

fn assert_consistent(report: &Report, when: &str) {
    assert!(
        report.is_consistent(),
        "{when}: check found problems: {:#?}",
        report.findings
    );
    // Nor may anything a dead process left half done still wait for a later
    // operation: reclaim and attach finish it.
    assert!(
        report.notes.is_empty(),
        "{when}: check still notes unfinished work: {:#?}",
        report.notes
    );
}

/// A new segment `file` (64 KiB to start) in which the parent holds
/// `small` 64-byte and `large` 3000-byte slots, and its check, found
/// consistent (`when` names the moment in a failure).
fn segment_with_own_slots(
    file: &str,
    small: usize,
    large: usize,
    when: &str,
) -> (tempfile::TempDir, PathBuf, Slab, Vec<SlotRef>, Report) {
    let (dir, path, slab) = small_segment(file);
    let own: Vec<SlotRef> = (0..small)
        .map(|_| slab.alloc_bytes(64).expect("alloc").raw())
        .chain((0..large).map(|_| slab.alloc_bytes(3000).expect("alloc").raw()))
        .collect();
    let before = slab.check().expect("check");
    assert_consistent(&before, when);
    (dir, path, slab, own, before)
}

/// `stats()` agrees with an exact `check()` taken while nothing changes:
/// for every class, slots = free + in_use, and free = fresh + free-listed.
fn assert_stats_add_up(slab: &Slab, when: &str) {
    let stats = slab.stats();
    let report = slab.check().expect("check");
    for (c, (s, k)) in stats.classes.iter().zip(&report.classes).enumerate() {
        assert_eq!(s.slots, s.free + s.in_use, "{when}: class {c}: {s:?}");
        assert_eq!(s.slots, k.slots, "{when}: class {c}: {s:?} vs {k:?}");
        assert_eq!(
            s.free,
            k.fresh + k.free,
            "{when}: class {c}: stats say {} free, check counts {} fresh + {} free: {s:?} vs {k:?}",
            s.free,
            k.fresh,
            k.free
        );
    }
}

/// Allocates mixed sizes until the segment has grown `growths` more times,
/// writing and checking every slot, then frees them all and trims.
fn allocate_through_growth(slab: &Slab, growths: u64) -> u64 {
    let start = slab.generation();
    let sizes = [64usize, 128, 500, 2000, 9000, 40_000, 150_000];
    let mut held = Vec::new();
    let mut i = 0usize;
    while slab.generation() < start + growths {
        assert!(
            i < 200_000,
            "200,000 allocations did not grow the segment {growths} times (generation {start} -> {})",
            slab.generation()
        );
        let len = sizes[i % sizes.len()];
        let h = slab
            .alloc_bytes(len)
            .unwrap_or_else(|e| panic!("allocation {i} ({len} bytes) failed: {e}"));
        slab.write_bytes(h, 0, &(i as u64).to_le_bytes())
            .expect("write");
        held.push((h, i as u64));
        i += 1;
    }
    for (h, v) in held {
        let mut b = [0u8; 8];
        slab.read_bytes(h, 0, &mut b).expect("read back");
        assert_eq!(u64::from_le_bytes(b), v, "slot {h:?} was overwritten");
        slab.free(h).expect("free");
    }
    slab.trim().expect("trim");
    slab.generation() - start
}

// ---------------------------------------------------------------------------
// Killed from outside (always runs).
// ---------------------------------------------------------------------------

#[test]
fn reclaim_dead_frees_exactly_the_slots_of_a_killed_process_and_only_once() {
    const TEST: &str = "reclaim_dead_frees_exactly_the_slots_of_a_killed_process_and_only_once";
    if let Some(args) = child_args("holder") {
        return holder_child(&args);
    }
    // The parent's own slots must survive everything below.
    let (_dir, path, slab, own, before) =
        segment_with_own_slots("killed.shm", 5, 2, "before the child");

    let mut child = LiveChild::spawn(TEST, "holder", &[path.to_str().unwrap()], &[]);
    let handles = parse_handles(&child.expect("HANDLES", MSG_TIMEOUT));
    assert_eq!(handles.len(), holdings_total());
    let with_child = slab.check().expect("check");
    assert_consistent(&with_child, "with the child attached");
    assert_eq!(with_child.live_peers, 2);
    // The child's share of each class: what it allocated plus its cache.
    let share: Vec<u64> = with_child
        .classes
        .iter()
        .zip(&before.classes)
        .map(|(w, b)| (w.allocated + w.cached) - (b.allocated + b.cached))
        .collect();
    let child_allocated = total(&with_child, |k| k.allocated) - total(&before, |k| k.allocated);
    assert_eq!(child_allocated, holdings_total() as u64);
    let child_total: u64 = share.iter().sum();
    assert!(
        child_total > child_allocated,
        "the child should also have cached slots"
    );

    let status = child.kill();
    assert!(!status.success(), "the child was killed");

    let dead = slab.check().expect("check");
    assert_consistent(&dead, "after the kill");
    assert_eq!((dead.live_peers, dead.dead_peers), (1, 1));
    for (c, (k, s)) in dead.classes.iter().zip(&share).enumerate() {
        assert_eq!(k.owned_by_dead, *s, "class {c}: owned by the dead child");
    }

    let reclaimed = slab.reclaim_dead().expect("reclaim_dead");
    println!(
        "killed child held {child_allocated} allocated + {} cached slots; reclaim_dead: {reclaimed:?}",
        child_total - child_allocated
    );
    assert_eq!(reclaimed.peers, 1);
    assert_eq!(
        reclaimed.slots, child_total,
        "reclaim frees the child's allocated and cached slots, no more, no less"
    );
    assert_eq!(reclaimed.kept_for_roots, 0);

    let after = slab.check().expect("check");
    assert_consistent(&after, "after reclaim");
    assert_eq!((after.live_peers, after.dead_peers), (1, 0));
    for (c, (a, b)) in after.classes.iter().zip(&before.classes).enumerate() {
        assert_eq!(
            (a.allocated, a.cached, a.owned_by_dead),
            (b.allocated, b.cached, 0),
            "class {c}: back to the parent's own slots"
        );
    }
    assert_stats_add_up(&slab, "after reclaim");

    let again = slab.reclaim_dead().expect("reclaim_dead");
    assert_eq!(
        (again.peers, again.slots),
        (0, 0),
        "a second reclaim finds nothing"
    );

    // The dead child's handles are stale now: reclaim bumped the generation.
    for (h, _) in &handles {
        let mut b = [0u8; 1];
        assert!(matches!(
            slab.read_bytes(common::whole(*h), 0, &mut b),
            Err(Error::StaleHandle { .. })
        ));
        assert!(matches!(slab.free(*h), Err(Error::StaleHandle { .. })));
    }

    // Life goes on: allocation and growth, and the parent's slots are intact.
    let grown = allocate_through_growth(&slab, 5);
    assert!(grown >= 5);
    for h in own {
        slab.free(h).expect("free the parent's own slot");
    }
    common::assert_every_slot_free(&slab, "at the end");
    assert_stats_add_up(&slab, "at the end");
}

#[test]
fn a_process_that_exits_cleanly_leaves_its_allocations_valid_and_returns_its_cache() {
    const TEST: &str =
        "a_process_that_exits_cleanly_leaves_its_allocations_valid_and_returns_its_cache";
    if let Some(args) = child_args("holder") {
        return holder_child(&args);
    }
    let (_dir, path, slab) = new_segment("clean-exit.shm");
    let own = slab.alloc_bytes(64).expect("alloc");
    let before = slab.check().expect("check");

    let mut child = LiveChild::spawn(TEST, "holder", &[path.to_str().unwrap()], &[]);
    let handles = parse_handles(&child.expect("HANDLES", MSG_TIMEOUT));
    let with_child = slab.check().expect("check");
    let child_cached = total(&with_child, |k| k.cached) - total(&before, |k| k.cached);
    assert!(child_cached > 0, "the child has a cache to return");
    child.send("EXIT");
    child.expect("BYE", MSG_TIMEOUT);
    child.wait_success(MSG_TIMEOUT);

    let after = slab.check().expect("check");
    assert_consistent(&after, "after the clean exit");
    assert_eq!((after.live_peers, after.dead_peers), (1, 0));
    for (c, ((a, w), b)) in after
        .classes
        .iter()
        .zip(&with_child.classes)
        .zip(&before.classes)
        .enumerate()
    {
        assert_eq!(
            a.allocated, w.allocated,
            "class {c}: the child's allocations stay allocated (handed to the segment)"
        );
        assert_eq!(
            a.cached, b.cached,
            "class {c}: the child's cache was returned"
        );
        assert_eq!(
            a.free,
            w.free + (w.cached - b.cached),
            "class {c}: returned to the list"
        );
        assert_eq!(a.owned_by_dead, 0);
    }
    let reclaimed = slab.reclaim_dead().expect("reclaim_dead");
    assert_eq!(
        (reclaimed.peers, reclaimed.slots),
        (0, 0),
        "nothing to reclaim after a clean exit"
    );
    assert_stats_add_up(&slab, "after the clean exit");

    // The allocations are still there, readable, and freeable once.
    for (i, (h, len)) in handles.iter().enumerate() {
        let mut buf = vec![0u8; *len];
        slab.read_bytes(common::whole(*h), 0, &mut buf)
            .unwrap_or_else(|e| panic!("read {h:?} after its allocator left: {e}"));
        assert!(
            buf.iter().all(|&b| b == fill_byte(i)),
            "slot {i} lost its contents"
        );
        slab.free(*h).expect("free a departed process's slot");
        assert!(matches!(slab.free(*h), Err(Error::DoubleFree)));
    }
    slab.free(own).expect("free own");
    common::assert_every_slot_free(&slab, "at the end");
}

/// Kills a fresh holder child in the segment at `path` and returns its
/// handles and its share (allocated + cached slots) of the segment.
fn kill_a_holder(slab: &Slab, test: &str, path: &std::path::Path) -> (Vec<(SlotRef, usize)>, u64) {
    let before = slab.check().expect("check");
    let mut child = LiveChild::spawn(test, "holder", &[path.to_str().unwrap()], &[]);
    let handles = parse_handles(&child.expect("HANDLES", MSG_TIMEOUT));
    let with_child = slab.check().expect("check");
    let share = (total(&with_child, |k| k.allocated) + total(&with_child, |k| k.cached))
        - (total(&before, |k| k.allocated) + total(&before, |k| k.cached));
    child.kill();
    (handles, share)
}

/// Attaches, reports `READY`, waits at the barrier, reclaims, reports
/// `RECLAIMED peers=<n> slots=<n>`, and detaches.
fn reclaimer_child(args: &[String]) {
    let barrier = SpinBarrier::open(std::path::Path::new(&args[1]), 2);
    let slab = Slab::attach(&args[0]).expect("attach");
    say("READY", "");
    barrier.wait();
    let r = slab.reclaim_dead().expect("reclaim_dead");
    drop(slab);
    say("RECLAIMED", format!("peers={} slots={}", r.peers, r.slots));
}

fn parse_reclaimed(payload: &str) -> (u64, u64) {
    let mut peers = None;
    let mut slots = None;
    for kv in payload.split_whitespace() {
        match kv.split_once('=') {
            Some(("peers", v)) => peers = v.parse().ok(),
            Some(("slots", v)) => slots = v.parse().ok(),
            _ => {}
        }
    }
    (peers.expect("peers"), slots.expect("slots"))
}

#[test]
fn a_dead_process_slot_freed_by_another_process_before_reclaim_is_not_reclaimed_again() {
    const TEST: &str =
        "a_dead_process_slot_freed_by_another_process_before_reclaim_is_not_reclaimed_again";
    if let Some(args) = child_args("holder") {
        return holder_child(&args);
    }
    let (_dir, path, slab) = new_segment("late-free.shm");
    let (handles, share) = kill_a_holder(&slab, TEST, &path);
    // A late free of a dead process's slot, before anyone reclaims it.
    for (h, _) in &handles[..3] {
        slab.free(*h).expect("free a dead process's live slot");
    }
    let reclaimed = slab.reclaim_dead().expect("reclaim_dead");
    assert_eq!(
        (reclaimed.peers, reclaimed.slots),
        (1, share - 3),
        "the 3 slots freed late are not freed again"
    );
    for (h, _) in &handles[..3] {
        assert!(matches!(slab.free(*h), Err(Error::DoubleFree)));
    }
    for (h, _) in &handles[3..] {
        assert!(matches!(slab.free(*h), Err(Error::StaleHandle { .. })));
    }
    common::assert_every_slot_free(&slab, "at the end");
}

#[test]
fn a_late_free_racing_reclaim_in_another_process_frees_each_slot_once() {
    const TEST: &str = "a_late_free_racing_reclaim_in_another_process_frees_each_slot_once";
    if let Some(args) = child_args("holder") {
        return holder_child(&args);
    }
    if let Some(args) = child_args("reclaimer") {
        return reclaimer_child(&args);
    }
    let (dir, path, slab) = new_segment("late-free-race.shm");
    let (mut late_ok, mut late_stale, mut by_reclaim) = (0u64, 0u64, 0u64);
    for round in 0..10 {
        let (handles, share) = kill_a_holder(&slab, TEST, &path);
        let barrier_path = dir.path().join(format!("barrier-{round}"));
        SpinBarrier::create(&barrier_path);
        let barrier = SpinBarrier::open(&barrier_path, 2);
        let mut reclaimer = LiveChild::spawn(
            TEST,
            "reclaimer",
            &[path.to_str().unwrap(), barrier_path.to_str().unwrap()],
            &[],
        );
        reclaimer.expect("READY", MSG_TIMEOUT);
        barrier.wait();
        // Free the dead child's slots while the other process reclaims them.
        let mut ok = 0;
        for (h, _) in &handles {
            match slab.free(*h) {
                Ok(()) => ok += 1,
                Err(Error::StaleHandle { .. }) => late_stale += 1,
                Err(e) => panic!("a late free racing reclaim failed with {e}"),
            }
        }
        let (peers, slots) = parse_reclaimed(&reclaimer.expect("RECLAIMED", MSG_TIMEOUT));
        reclaimer.wait_success(MSG_TIMEOUT);
        assert_eq!(peers, 1);
        assert_eq!(
            ok + slots,
            share,
            "round {round}: every slot of the dead process freed exactly once \
             ({ok} by late frees, {slots} by reclaim, the process held {share})"
        );
        late_ok += ok;
        by_reclaim += slots;
        common::assert_every_slot_free(&slab, &format!("round {round}, after the race"));
    }
    println!(
        "late frees won {late_ok} slots, reclaim freed {by_reclaim}, {late_stale} late frees were stale"
    );
}

#[test]
fn two_processes_reclaiming_the_same_dead_process_at_once_free_its_slots_once() {
    const TEST: &str = "two_processes_reclaiming_the_same_dead_process_at_once_free_its_slots_once";
    if let Some(args) = child_args("holder") {
        return holder_child(&args);
    }
    if let Some(args) = child_args("reclaimer") {
        return reclaimer_child(&args);
    }
    let (dir, path, slab) = new_segment("double-reclaim.shm");
    let mut double_counted_rows = 0;
    for round in 0..20 {
        let (_, share) = kill_a_holder(&slab, TEST, &path);
        let barrier_path = dir.path().join(format!("barrier-{round}"));
        SpinBarrier::create(&barrier_path);
        let args = [path.to_str().unwrap(), barrier_path.to_str().unwrap()];
        let mut reclaimers = [
            LiveChild::spawn(TEST, "reclaimer", &args, &[]),
            LiveChild::spawn(TEST, "reclaimer", &args, &[]),
        ];
        let (mut peers, mut slots) = (0, 0);
        for r in &mut reclaimers {
            r.expect("READY", MSG_TIMEOUT);
        }
        for r in &mut reclaimers {
            let (p, s) = parse_reclaimed(&r.expect("RECLAIMED", MSG_TIMEOUT));
            peers += p;
            slots += s;
            r.wait_success(MSG_TIMEOUT);
        }
        assert_eq!(
            slots, share,
            "round {round}: the dead process's slots freed once"
        );
        if peers != 1 {
            double_counted_rows += 1;
        }
        let report = slab.check().expect("check");
        assert_consistent(&report, "after two reclaims");
        assert_eq!(report.dead_peers, 0);
    }
    assert_eq!(
        double_counted_rows, 0,
        "in {double_counted_rows} of 20 rounds both reclaimers reported clearing the dead row"
    );
}

#[test]
fn a_process_attaching_to_a_full_peer_table_takes_a_dead_row_and_reclaims_its_slots() {
    const TEST: &str =
        "a_process_attaching_to_a_full_peer_table_takes_a_dead_row_and_reclaims_its_slots";
    if let Some(args) = child_args("holder") {
        return holder_child(&args);
    }
    let dir = segment_dir();
    let path = dir.path().join("full-table.shm");
    let slab = Slab::builder().peers(2).create(&path).expect("create");
    let own = slab.alloc_bytes(64).expect("alloc");
    let before = slab.check().expect("check");
    let (handles, _share) = kill_a_holder(&slab, TEST, &path);
    // Both rows are taken (one by a dead process); a new attach takes the
    // dead one and frees what it held before using it.
    let newcomer = Slab::attach(&path).expect("attach takes the dead row");
    let after = slab.check().expect("check");
    assert_consistent(&after, "after the newcomer attached");
    assert_eq!((after.live_peers, after.dead_peers), (2, 0));
    for (c, (a, b)) in after.classes.iter().zip(&before.classes).enumerate() {
        assert_eq!(
            (a.allocated, a.cached, a.owned_by_dead),
            (b.allocated, b.cached, 0),
            "class {c}: the dead row's slots were reclaimed by the newcomer"
        );
    }
    for (h, _) in &handles {
        assert!(matches!(newcomer.free(*h), Err(Error::StaleHandle { .. })));
    }
    assert!(
        matches!(Slab::attach(&path), Err(Error::PeerTableFull { .. })),
        "a third process finds the table full"
    );
    assert_eq!(slab.reclaim_dead().expect("reclaim").slots, 0);
    let h = newcomer.alloc_bytes(100).expect("the newcomer allocates");
    slab.free(h).expect("and the parent frees it");
    drop(newcomer);
    slab.free(own).expect("free own");
    common::assert_every_slot_free(&slab, "at the end");
}

/// Kills a holder child, then rewrites its peer row's state from "live" to
/// "being claimed" (2, docs/FORMAT.md): exactly what the file holds when a
/// process that was taking over the dead row (`Slab::attach` on a full
/// table) dies between marking the row claimed and marking it live. The
/// dead holder's slots are still owned by that row.
fn kill_a_holder_and_leave_its_row_half_claimed(
    slab: &Slab,
    test: &str,
    path: &std::path::Path,
) -> u64 {
    let before = slab.check().expect("check");
    let mut child = LiveChild::spawn(test, "holder", &[path.to_str().unwrap()], &[]);
    child.expect("HANDLES", MSG_TIMEOUT);
    let pid = child.pid();
    let with_child = slab.check().expect("check");
    let share = (total(&with_child, |k| k.allocated) + total(&with_child, |k| k.cached))
        - (total(&before, |k| k.allocated) + total(&before, |k| k.cached));
    let row = slab
        .peers()
        .expect("peers")
        .into_iter()
        .find(|p| p.pid == pid)
        .expect("the holder's row")
        .row;
    child.kill();
    let words = SharedWords::open(path);
    let word = |off: usize| {
        words
            .word(off / 8)
            .load(std::sync::atomic::Ordering::Acquire)
    };
    let (classes, roots) = (word(56) as usize, word(64) as usize);
    let state_at = 512 + 1088 * classes + 128 * roots + 64 * row;
    assert_eq!(word(state_at), 1, "the dead holder's row says live");
    words
        .word(state_at / 8)
        .store(2, std::sync::atomic::Ordering::Release);
    share
}

#[test]
fn reclaim_frees_the_slots_of_a_row_left_half_claimed_by_a_dying_process() {
    const TEST: &str = "reclaim_frees_the_slots_of_a_row_left_half_claimed_by_a_dying_process";
    if let Some(args) = child_args("holder") {
        return holder_child(&args);
    }
    let (_dir, path, slab) = new_segment("half-claimed.shm");
    let share = kill_a_holder_and_leave_its_row_half_claimed(&slab, TEST, &path);
    let reclaimed = slab.reclaim_dead().expect("reclaim_dead");
    let report = slab.check().expect("check");
    assert!(
        report.is_consistent() && reclaimed.slots == share,
        "reclaim freed {} of the {share} slots the half-claimed row owned; check: {:#?}",
        reclaimed.slots,
        report.findings
    );
}

#[test]
fn an_attach_taking_a_half_claimed_row_reclaims_its_slots_first() {
    const TEST: &str = "an_attach_taking_a_half_claimed_row_reclaims_its_slots_first";
    if let Some(args) = child_args("holder") {
        return holder_child(&args);
    }
    let dir = segment_dir();
    let path = dir.path().join("half-claimed-attach.shm");
    let slab = Slab::builder().peers(2).create(&path).expect("create");
    let before = slab.check().expect("check");
    kill_a_holder_and_leave_its_row_half_claimed(&slab, TEST, &path);
    let newcomer = Slab::attach(&path).expect("attach takes the half-claimed row");
    let after = slab.check().expect("check");
    for (c, (a, b)) in after.classes.iter().zip(&before.classes).enumerate() {
        assert_eq!(
            (a.allocated, a.cached),
            (b.allocated, b.cached),
            "class {c}: the dead holder's slots must be freed before the row is reused, \
             not inherited by the newcomer"
        );
    }
    drop(newcomer);
}

// ---------------------------------------------------------------------------
// Killed at named crash points (feature `fault-injection`).
// ---------------------------------------------------------------------------

#[cfg(feature = "fault-injection")]
mod fault_injection {
    use super::*;
    use common::live::run_with_timeout;
    use shmslab::fault::CRASH_POINTS;
    use std::collections::HashSet;

    /// Every crash point these tests cover, with the hit to die at: late
    /// enough that the child owns slots of several classes by then.
    const COVERED: &[(&str, u32)] = &[
        ("grow.locked", 5),
        ("grow.journaled", 5),
        ("grow.reserved", 5),
        ("grow.entry_written", 5),
        ("grow.size_stored", 5),
        ("grow.published", 5),
        ("grow.generation_bumped", 5),
        ("refill.popped_meta", 3),
        ("refill.fresh_claimed", 3),
        ("flush.pushed_meta", 10),
        ("alloc.meta_stored", 100),
        ("free.cas_done", 50),
    ];

    /// Allocates and frees in rounds (reporting `A <hex>` after every
    /// allocation and `F <hex>` after every free) until it reaches the crash
    /// point named in its environment; reports `NOCRASH` if it never does.
    ///
    /// Each round allocates 300 slots of 64 B and 40 of larger classes, then
    /// frees all but 10 of the small ones (overflowing the cache, so it
    /// flushes to the shared list, which the next round pops) and half the
    /// others. Classes keep running dry, so the file keeps growing.
    pub(super) fn crasher_child(args: &[String]) {
        let slab = Slab::attach(&args[0]).expect("attach");
        say("READY", "");
        let sizes = [200usize, 1000, 5000, 40_000, 200_000];
        let mut small = Vec::new();
        let mut large = Vec::new();
        for round in 0..40 {
            for _ in 0..300 {
                let h = slab.alloc_bytes(64).expect("alloc");
                say("A", to_hex(&h.raw().to_bytes()));
                small.push(h);
            }
            for i in 0..40 {
                let h = slab.alloc_bytes(sizes[i % sizes.len()]).expect("alloc");
                say("A", to_hex(&h.raw().to_bytes()));
                large.push(h);
            }
            while small.len() > 10 {
                let h = small.pop().unwrap();
                slab.free(h).expect("free");
                say("F", to_hex(&h.raw().to_bytes()));
            }
            for _ in 0..large.len() / 2 {
                let h = large.swap_remove(round % large.len());
                slab.free(h).expect("free");
                say("F", to_hex(&h.raw().to_bytes()));
            }
        }
        say("NOCRASH", "");
    }

    /// A second, fresh process after the crash: attaches, allocates through
    /// several growths and frees everything.
    pub(super) fn fresh_child(args: &[String]) {
        let slab = Slab::attach(&args[0]).expect("attach after the crash");
        say("ATTACHED", "");
        common::live::hear_exactly("GO");
        let grown = allocate_through_growth(&slab, 3);
        // No `check()` here: the parent is growing the segment at the same
        // time, and a check racing a growth reports false problems (see
        // `check_while_another_process_grows_reports_no_false_problems` in
        // tests/multiprocess.rs). The parent checks once this process is done.
        drop(slab);
        say("DONE", grown);
    }

    /// Runs one crash scenario: the parent holds a few slots, a child dies at
    /// `point` (its `nth` hit); then, within a time limit, the parent checks
    /// the dead child's slots, reclaims exactly them, grows the segment, a
    /// fresh process works in it, and everything adds up.
    pub(super) fn crash_and_recover(test: &str, point: &'static str, nth: u32) {
        let (_dir, path, slab, own, before) =
            super::segment_with_own_slots("crash.shm", 10, 3, "before the crash");

        let spec = format!("{point}@{nth}");
        let path_s = path.to_str().unwrap().to_string();
        let mut child = LiveChild::spawn(
            test,
            "crasher",
            &[&path_s],
            &[("SHMSLAB_CRASH_AT", spec.as_str())],
        );
        child.expect("READY", MSG_TIMEOUT);
        // Replay the child's reports to know what it held when it died.
        let mut live: HashSet<[u8; 16]> = HashSet::new();
        let (mut allocs, mut frees) = (0u64, 0u64);
        for m in child.messages_until_exit(MSG_TIMEOUT) {
            match m.key.as_str() {
                "A" => {
                    allocs += 1;
                    assert!(live.insert(from_hex(&m.payload)));
                }
                "F" => {
                    frees += 1;
                    assert!(live.remove(&from_hex::<16>(&m.payload)));
                }
                other => panic!("unexpected message {other:?}\n{}", child.transcript()),
            }
        }
        child.wait_killed(MSG_TIMEOUT);
        let reported_live = live.len() as u64;
        // The operation the child died in had done its shared part but not
        // been reported: an allocation is one more, a free one fewer.
        // (A flush runs inside the `free` whose slot overflowed the cache,
        // after that free's compare-and-swap.)
        let expected_allocated = match point {
            "alloc.meta_stored" => reported_live + 1,
            "free.cas_done" | "flush.pushed_meta" => reported_live - 1,
            _ => reported_live,
        };

        // A second, fresh process attaches to the segment as the crash left
        // it, before anyone repairs anything; it works later (on `GO`).
        let mut fresh = LiveChild::spawn(test, "fresh", &[&path_s], &[]);
        fresh.expect("ATTACHED", MSG_TIMEOUT);

        let child_transcript = child.transcript();
        let summary = run_with_timeout(
            &format!("recovery after a crash at {point}"),
            Duration::from_secs(30),
            move || {
                let crashed = slab.check().expect("check after the crash");
                // A growth cut short is a note (reclaim finishes it), never
                // a finding; nothing may be wrong.
                assert!(
                    crashed.findings.is_empty(),
                    "after a crash at {point}, check found: {:#?}\n{child_transcript}",
                    crashed.findings
                );
                assert_eq!((crashed.live_peers, crashed.dead_peers), (2, 1));
                let dead_allocated =
                    total(&crashed, |k| k.allocated) - total(&before, |k| k.allocated);
                let dead_owned = total(&crashed, |k| k.owned_by_dead);
                assert_eq!(
                    dead_allocated, expected_allocated,
                    "crash at {point}: the dead child's allocations ({reported_live} reported live)"
                );
                for (c, (k, b)) in crashed.classes.iter().zip(&before.classes).enumerate() {
                    assert_eq!(
                        k.owned_by_dead,
                        (k.allocated + k.cached) - (b.allocated + b.cached),
                        "class {c}: every slot beyond the parent's is the dead child's"
                    );
                }

                let reclaimed = slab.reclaim_dead().expect("reclaim_dead");
                assert_eq!(reclaimed.peers, 1);
                assert_eq!(
                    reclaimed.slots, dead_owned,
                    "crash at {point}: reclaim frees exactly the dead child's slots"
                );
                let after = slab.check().expect("check after reclaim");
                assert_consistent(&after, &format!("after reclaiming a crash at {point}"));
                assert_eq!((after.live_peers, after.dead_peers), (2, 0));
                for (c, (a, b)) in after.classes.iter().zip(&before.classes).enumerate() {
                    assert_eq!(
                        (a.allocated, a.cached, a.owned_by_dead),
                        (b.allocated, b.cached, 0),
                        "class {c}: only the parent's slots are left"
                    );
                }
                assert_stats_add_up(&slab, &format!("after reclaiming a crash at {point}"));
                let again = slab.reclaim_dead().expect("reclaim_dead");
                assert_eq!((again.peers, again.slots), (0, 0));

                // Growth goes on (and repairs a growth the child cut short),
                // in this process and the fresh one at the same time.
                fresh.send("GO");
                let grown = allocate_through_growth(&slab, 5);
                let fresh_grown: u64 = fresh.expect("DONE", MSG_TIMEOUT).parse().unwrap();
                fresh.wait_success(MSG_TIMEOUT);
                let repaired = slab.check().expect("check after growth");
                assert_consistent(&repaired, &format!("after growing past a crash at {point}"));
                (
                    slab,
                    dead_allocated,
                    dead_owned,
                    reclaimed.slots,
                    grown,
                    fresh_grown,
                )
            },
        );
        let (slab, dead_allocated, dead_owned, reclaimed, grown, fresh_grown) = summary;

        for h in own {
            slab.free(h).expect("the parent's own slots survived");
        }
        common::assert_every_slot_free(&slab, &format!("at the end ({point})"));
        assert_stats_add_up(&slab, &format!("at the end ({point})"));
        println!(
            "crash at {point}@{nth}: child made {allocs} allocations and {frees} frees; \
             it died with {dead_allocated} allocated, {} cached; reclaimed {reclaimed}; \
             then the parent saw {grown} growths and the fresh process {fresh_grown}",
            dead_owned - dead_allocated
        );
    }

    macro_rules! crash_tests {
        ($($name:ident => $point:literal,)*) => {$(
            #[test]
            fn $name() {
                if let Some(args) = child_args("crasher") {
                    return crasher_child(&args);
                }
                if let Some(args) = child_args("fresh") {
                    return fresh_child(&args);
                }
                let nth = COVERED
                    .iter()
                    .find(|(p, _)| *p == $point)
                    .map(|&(_, n)| n)
                    .expect("listed in COVERED");
                crash_and_recover(
                    concat!("fault_injection::", stringify!($name)),
                    $point,
                    nth,
                );
            }
        )*};
    }

    crash_tests! {
        killed_at_grow_locked_others_grow_and_reclaim_exactly_its_slots => "grow.locked",
        killed_at_grow_journaled_others_grow_and_reclaim_exactly_its_slots => "grow.journaled",
        killed_at_grow_reserved_others_grow_and_reclaim_exactly_its_slots => "grow.reserved",
        killed_at_grow_entry_written_others_grow_and_reclaim_exactly_its_slots =>
            "grow.entry_written",
        killed_at_grow_size_stored_others_grow_and_reclaim_exactly_its_slots =>
            "grow.size_stored",
        killed_at_grow_published_others_grow_and_reclaim_exactly_its_slots => "grow.published",
        killed_at_grow_generation_bumped_others_grow_and_reclaim_exactly_its_slots =>
            "grow.generation_bumped",
        killed_at_refill_popped_meta_others_reclaim_exactly_its_slots => "refill.popped_meta",
        // Also the regression test for stats double-counting the slots a
        // dead holder claimed past the fresh cursor (fixed in e731e76).
        killed_at_refill_fresh_claimed_others_reclaim_exactly_its_slots =>
            "refill.fresh_claimed",
        killed_at_flush_pushed_meta_others_reclaim_exactly_its_slots => "flush.pushed_meta",
        killed_at_alloc_meta_stored_others_reclaim_exactly_its_slots => "alloc.meta_stored",
        killed_at_free_cas_done_others_reclaim_exactly_its_slots => "free.cas_done",
    }

    #[test]
    fn a_reclaim_cut_short_by_a_crash_is_finished_by_the_next_reclaim() {
        const TEST: &str =
            "fault_injection::a_reclaim_cut_short_by_a_crash_is_finished_by_the_next_reclaim";
        if let Some(args) = child_args("holder") {
            return holder_child(&args);
        }
        if let Some(args) = child_args("reclaimer") {
            return reclaimer_child(&args);
        }
        const FREED_BEFORE_CRASH: u64 = 5;
        let (dir, path, slab) = new_segment("reclaim-crash.shm");
        let own = slab.alloc_bytes(64).expect("alloc");
        let before = slab.check().expect("check");
        let (handles, share) = kill_a_holder(&slab, TEST, &path);
        let barrier_path = dir.path().join("barrier");
        SpinBarrier::create(&barrier_path);
        let barrier = SpinBarrier::open(&barrier_path, 2);
        let crash = format!("reclaim.slot_freed@{FREED_BEFORE_CRASH}");
        let mut reclaimer = LiveChild::spawn(
            TEST,
            "reclaimer",
            &[path.to_str().unwrap(), barrier_path.to_str().unwrap()],
            &[("SHMSLAB_CRASH_AT", crash.as_str())],
        );
        reclaimer.expect("READY", MSG_TIMEOUT);
        barrier.wait();
        reclaimer.wait_killed(MSG_TIMEOUT);

        let slab = run_with_timeout(
            "recovery after a crash in reclaim",
            Duration::from_secs(30),
            move || {
                let crashed = slab.check().expect("check");
                assert_consistent(&crashed, "after the reclaimer died");
                assert_eq!(crashed.dead_peers, 2, "the holder and the reclaimer");
                assert_eq!(
                    total(&crashed, |k| k.owned_by_dead),
                    share - FREED_BEFORE_CRASH
                );
                let r = slab.reclaim_dead().expect("reclaim_dead");
                assert_eq!(
                    (r.peers, r.slots),
                    (2, share - FREED_BEFORE_CRASH),
                    "the second reclaim frees what the first did not get to"
                );
                let after = slab.check().expect("check");
                assert_consistent(&after, "after the second reclaim");
                for (c, (a, b)) in after.classes.iter().zip(&before.classes).enumerate() {
                    assert_eq!(
                        (a.allocated, a.cached, a.owned_by_dead),
                        (b.allocated, b.cached, 0),
                        "class {c}"
                    );
                }
                for (h, _) in &handles {
                    assert!(matches!(slab.free(*h), Err(Error::StaleHandle { .. })));
                }
                allocate_through_growth(&slab, 3);
                slab
            },
        );
        slab.free(own).expect("free own");
        common::assert_every_slot_free(&slab, "at the end");
    }

    #[test]
    fn every_growth_crash_point_has_a_crash_test() {
        for point in CRASH_POINTS.iter().filter(|p| p.starts_with("grow.")) {
            assert!(
                COVERED.iter().any(|(p, _)| p == point),
                "crash point {point} has no crash test in tests/crash.rs"
            );
        }
        for (p, _) in COVERED {
            assert!(
                CRASH_POINTS.contains(p),
                "{p} is not a crash point any more"
            );
        }
    }
}
