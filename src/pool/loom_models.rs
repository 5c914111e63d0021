//! Loom models of the pool's protocols: every interleaving of two threads
//! (bounded preemptions) on a heap segment with loom's atomics.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_models`

use super::Owner;
use super::testing::{TestPool, alloc_one, heap_processes, kill, unregistered};
use crate::error::Error;
use crate::format::{LAST_GENERATION, Meta, SlotRef, SlotState};
use crate::sync::Ordering;
use loom::sync::Arc;
use loom::thread;

/// Class sizes of the models: 16-byte slots, 2 per first extent (loom builds
/// use a 32-byte first extent), 64-byte pages.
const CLASSES: &[u64] = &[16];
const PAGE: u64 = 64;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// `N` simulated processes, each with its own pool (own local mutexes and
/// extent views) over one shared heap segment.
fn processes<const N: usize>() -> [(Arc<TestPool>, Owner); N] {
    let ps: Vec<_> = heap_processes(CLASSES, PAGE, 8 << 10, N)
        .into_iter()
        .map(|(p, o)| (Arc::new(p), o))
        .collect();
    ps.try_into()
        .unwrap_or_else(|_| unreachable!("heap_processes makes N"))
}

fn alloc(p: &TestPool, o: Owner) -> Result<SlotRef, Error> {
    alloc_one(p, 0, o)
}

/// Frees the way `Slab` does (the last life of a slot retires it), then
/// flushes to the shared list.
fn free(p: &TestPool, h: SlotRef, o: Owner) -> Result<(), Error> {
    match p.release(&h, o)? {
        Some((c, id)) => p.give(c, o, &[id]),
        None => Ok(()),
    }
}

/// Every slot's state, and the free list agrees with the words.
fn assert_consistent(p: &TestPool) {
    let report = crate::check::check_pool(p, None).unwrap();
    assert!(report.is_consistent(), "{:?}", report.findings);
}

#[test]
fn loom_models_two_allocs_get_distinct_slots() {
    model(|| {
        let [(p0, o0), (p1, o1)] = processes();
        let t = thread::spawn(move || alloc(&p1, o1).unwrap());
        let a = alloc(&p0, o0).unwrap();
        let b = t.join().unwrap();
        assert_ne!(a.slot_id(), b.slot_id());
        assert_consistent(&p0);
    });
}

#[test]
fn loom_models_two_takes_from_one_free_list_get_distinct_slots() {
    model(|| {
        let [(p0, o0), (p1, o1)] = processes();
        // Two slots on the shared list.
        let a = alloc(&p0, o0).unwrap();
        let b = alloc(&p0, o0).unwrap();
        free(&p0, a, o0).unwrap();
        free(&p0, b, o0).unwrap();
        let t = thread::spawn(move || {
            let mut got = Vec::new();
            p1.take(0, o1, 1, &mut got).unwrap();
            got
        });
        let mut mine = Vec::new();
        p0.take(0, o0, 1, &mut mine).unwrap();
        let theirs = t.join().unwrap();
        assert_eq!((mine.len(), theirs.len()), (1, 1));
        assert_ne!(mine[0], theirs[0]);
        assert_consistent(&p0);
    });
}

#[test]
fn loom_models_alloc_racing_free() {
    model(|| {
        let [(p0, o0), (p1, o1)] = processes();
        let h = alloc(&p0, o0).unwrap();
        let t = thread::spawn(move || {
            let b = alloc(&p1, o1).unwrap();
            let mut buf = [0u8; 4];
            p1.read_at(&b, 0, &mut buf).unwrap();
            b
        });
        free(&p0, h, o0).unwrap();
        let b = t.join().unwrap();
        // b is the freed slot in a new life, or another slot.
        if b.slot_id() == h.slot_id() {
            assert_ne!(b.generation, h.generation);
        }
        let mut buf = [0u8; 4];
        assert!(p0.read_at(&h, 0, &mut buf).is_err());
        assert_consistent(&p0);
    });
}

/// A view (`read_in_place`'s open, copies, close) racing a free and a
/// reuse of its slot with new bytes: if the close says the view saw one
/// life, every copy it made is of that life (no answer of two lives).
#[test]
fn loom_models_a_view_racing_free_and_reuse_never_closes_over_two_lives() {
    model(|| {
        let [(p0, o0), (p1, _)] = processes();
        let h = alloc(&p0, o0).unwrap();
        p0.write_at(&h, 0, &[1; 16]).unwrap();
        let t = thread::spawn(move || {
            // Opened after the free: refused, nothing read.
            let Ok(at) = p1.open_span(&h, 16) else { return };
            let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
            p1.copy_from_span(at, 0, &mut a).unwrap();
            p1.copy_from_span(at, 8, &mut b).unwrap();
            if p1.close_span(&h, at).is_ok() {
                assert_eq!((a, b), ([1; 8], [1; 8]), "closed over two lives");
            }
        });
        free(&p0, h, o0).unwrap();
        let again = alloc(&p0, o0).unwrap();
        assert_eq!(
            again.slot_id(),
            h.slot_id(),
            "the model needs the slot reused"
        );
        p0.write_at(&again, 0, &[2; 16]).unwrap();
        t.join().unwrap();
    });
}

#[test]
fn loom_models_two_frees_of_one_handle_exactly_one_wins() {
    model(|| {
        let [(p0, o0), (p1, o1)] = processes();
        let h = alloc(&p0, o0).unwrap();
        let t = thread::spawn(move || free(&p1, h, o1));
        let mine = free(&p0, h, o0);
        let theirs = t.join().unwrap();
        assert_eq!(
            mine.is_ok() as u32 + theirs.is_ok() as u32,
            1,
            "{mine:?} {theirs:?}"
        );
        let loser = if mine.is_ok() { theirs } else { mine };
        assert!(matches!(loser, Err(Error::DoubleFree)), "{loser:?}");
        assert_consistent(&p0);
    });
}

#[test]
fn loom_models_growth_publishes_an_extent_while_another_process_allocates() {
    model(|| {
        let [(p0, o0), (p1, o1)] = processes();
        // Use up the first extent so the next allocation needs growth.
        let first = p0.geo.first_slots[0] as usize;
        let held: Vec<_> = (0..first).map(|_| alloc(&p0, o0).unwrap()).collect();
        assert_eq!(p0.counts(0).extents, 1);
        let grower = thread::spawn(move || {
            p1.refresh(0).unwrap();
            p1.grow(0, 1, o1).unwrap();
        });
        // Meanwhile: look for slots. Either none yet, or a whole usable one.
        let mut got = Vec::new();
        p0.take(0, o0, 1, &mut got).unwrap();
        if let Some(&id) = got.first() {
            assert_eq!(id.extent(), 1);
            let (h, _) = p0.activate(0, id, o0).unwrap();
            p0.write_at(&h, 0, &[9; 16]).unwrap();
            let mut back = [0u8; 16];
            p0.read_at(&h, 0, &mut back).unwrap();
            assert_eq!(back, [9; 16]);
        }
        grower.join().unwrap();
        assert_eq!(p0.counts(0).extents, 2);
        drop(held);
        assert_consistent(&p0);
    });
}

#[test]
fn loom_models_generation_and_size_are_published_before_the_extent() {
    model(|| {
        let [(p0, _), (p1, o1)] = processes();
        let before = p0.generation();
        let grower = thread::spawn(move || p1.grow(0, 0, o1).unwrap());
        // Whoever sees the extent count sees a current_size that covers it
        // (refresh checks that) — and after the join, the generation moved.
        let known = p0.refresh(0).unwrap();
        if known == 1 {
            assert!(p0.current_size() > p0.geo.data_start);
        }
        grower.join().unwrap();
        assert_eq!(p0.refresh(0).unwrap(), 1);
        assert!(p0.generation() > before);
    });
}

#[test]
fn loom_models_reclaim_racing_a_late_free() {
    model(|| {
        let [(pa, a), (pb, b), (pr, r)] = processes();
        let h = alloc(&pa, a).unwrap();
        kill(&pa, 0); // A dies holding h; B got h earlier and frees it late.
        let late = thread::spawn(move || free(&pb, h, b));
        let report = crate::peers::reclaim_dead(&pr, (2, r)).unwrap();
        let late = late.join().unwrap();
        // The slot is freed exactly once: by reclaim or by the late free.
        match late {
            Ok(()) => assert_eq!(report.slots, 0),
            Err(Error::StaleHandle { .. }) => assert_eq!(report.slots, 1),
            other => panic!("late free: {other:?}"),
        }
        assert_consistent(&pr);
        let m = Meta(
            pr.meta(pr.locate(0, h.slot_id()).unwrap())
                .load(Ordering::Acquire),
        );
        assert_eq!(m.state(), SlotState::Free);
    });
}

#[test]
fn loom_models_reclaim_racing_a_late_free_at_the_last_generation() {
    model(|| {
        let [(pa, a), (pb, b), (pr, r)] = processes();
        let first = alloc(&pa, a).unwrap();
        // The slot in its last life, as 2^32 - 2 reuses would leave it.
        let w = pa.meta(pa.locate(0, first.slot_id()).unwrap());
        let m = Meta(w.load(Ordering::Acquire));
        w.store(
            Meta::new(LAST_GENERATION, SlotState::Allocated, m.payload()).0,
            Ordering::Release,
        );
        let h = SlotRef {
            generation: LAST_GENERATION,
            ..first
        };
        kill(&pa, 0); // A dies holding h; B frees it late.
        let late = thread::spawn(move || free(&pb, h, b));
        let report = crate::peers::reclaim_dead(&pr, (2, r)).unwrap();
        let late = late.join().unwrap();
        // Exactly one acts, and either way retires the slot: reclaim (it has
        // no generation to free it with) or the late free (of its last life).
        match late {
            Ok(()) => assert_eq!((report.slots, report.retired), (0, 0)),
            Err(Error::StaleHandle { .. }) => assert_eq!((report.slots, report.retired), (0, 1)),
            other => panic!("late free: {other:?}"),
        }
        // The slot never lives again: the next allocation lands elsewhere.
        let next = alloc(&pr, r).unwrap();
        assert_ne!(next.slot_id(), h.slot_id());
        assert_eq!(Meta(w.load(Ordering::Acquire)), Meta::RETIRED);
        for old in [first, h] {
            assert!(matches!(
                pr.read_at(&old, 0, &mut [0; 4]),
                Err(Error::StaleHandle { .. })
            ));
        }
        assert_consistent(&pr);
    });
}

#[test]
fn loom_models_a_dead_lock_holder_is_taken_over_once() {
    model(|| {
        let [(pa, a), (pb, b), (pc, c)] = processes();
        let word = pa
            .table_word(pa.geo.class_entry(0) + crate::format::cls::LOCK)
            .unwrap();
        word.store(a.token, Ordering::Release);
        kill(&pa, 0);
        let t = thread::spawn(move || pb.lock_class(0, b).unwrap().recovered);
        let mine = pc.lock_class(0, c).unwrap().recovered;
        let theirs = t.join().unwrap();
        // Exactly one of the two took over from the dead holder.
        assert!(mine ^ theirs, "mine {mine} theirs {theirs}");
        assert_eq!(word.load(Ordering::Acquire), 0);
    });
}

#[test]
fn loom_models_two_root_or_insert_on_one_name_make_one_object() {
    use crate::typed::roots;
    model(|| {
        let [(p0, o0), (p1, o1)] = processes();
        let ty = crate::typed::root_type::<u64>();
        let t = thread::spawn(move || {
            roots::get_or_insert(&p1, o1, "one", ty, || alloc(&p1, o1)).unwrap()
        });
        let mine = roots::get_or_insert(&p0, o0, "one", ty, || alloc(&p0, o0)).unwrap();
        let theirs = t.join().unwrap();
        assert_eq!(mine, theirs);
        let report = crate::check::check_pool(&p0, None).unwrap();
        assert!(report.is_consistent(), "{:?}", report.findings);
        let allocated: u64 = report.classes.iter().map(|c| c.allocated).sum();
        assert_eq!(allocated, 1, "the loser allocated too");
        assert_eq!(report.roots, 1);
    });
}

/// A clean detach deciding the file's fate as `RemoveWhenLastDetaches`
/// does; whether it removed the file (`unlink` always succeeds here).
fn leave_last(p: &TestPool, row: usize, o: Owner) -> bool {
    use crate::lifetime::Departure;
    crate::peers::detach(p, row, o, false, Departure::RemoveIfLast, || true).unwrap()
}

#[test]
fn loom_models_two_last_detachers_remove_the_file_exactly_once() {
    model(|| {
        let [(p0, o0), (p1, o1)] = processes();
        let t = thread::spawn(move || leave_last(&p1, 1, o1));
        let mine = leave_last(&p0, 0, o0);
        let theirs = t.join().unwrap();
        // Neither both (a second unlink could hit a new file at the path)
        // nor neither (the file would outlive every process).
        assert!(mine ^ theirs, "mine {mine} theirs {theirs}");
    });
}

#[test]
fn loom_models_an_attach_racing_the_last_detach_joins_or_is_refused() {
    model(|| {
        let [(p0, o0)] = processes();
        let p1 = Arc::new(unregistered(&p0));
        let attacher = thread::spawn(move || {
            // Row 1, or row 0 once the detacher has emptied it.
            let (_, me) = crate::peers::register(&p1).unwrap();
            crate::lifetime::admit(&p1, me, || {})
        });
        let removed = leave_last(&p0, 0, o0);
        let admitted = attacher.join().unwrap();
        match admitted {
            // Let in: the detacher saw the attacher's row and kept the file.
            Ok(()) => assert!(!removed, "a process was let into a removed segment"),
            // Refused: only because the detacher removed the file.
            Err(Error::SegmentRemoved) => assert!(removed, "refused a segment still there"),
            Err(e) => panic!("admission: {e:?}"),
        }
    });
}

/// Two simulated processes on a segment with one class of 128-byte slots:
/// room for a locked cell of two words (6 + 2 × 2 words).
fn cell_processes() -> [(Arc<TestPool>, Owner); 2] {
    let ps: Vec<_> = heap_processes(&[128], PAGE, 8 << 10, 2)
        .into_iter()
        .map(|(p, o)| (Arc::new(p), o))
        .collect();
    ps.try_into()
        .unwrap_or_else(|_| unreachable!("heap_processes makes 2"))
}

fn cell_of<'a>(p: &'a TestPool, h: &SlotRef) -> super::cell::RawCell<'a> {
    super::cell::RawCell::new(p.live_words(h, super::cell::words_for(16)).unwrap(), 16)
}

fn lock_cell(p: &TestPool, o: Owner, h: &SlotRef, v: &mut [u64; 2]) -> super::cell::Held {
    cell_of(p, h)
        .lock(p, o, None, bytemuck::bytes_of_mut(v))
        .unwrap()
        .expect("no deadline")
}

#[test]
fn loom_models_a_holder_killed_mid_commit_is_taken_over_and_no_torn_value_is_ever_seen() {
    model(|| {
        let [(p0, o0), (p1, o1)] = cell_processes();
        let h = alloc_one(&p0, 0, o0).unwrap();
        cell_of(&p0, &h).init(bytemuck::bytes_of(&[0u64; 2]));
        // p0 takes the lock, writes one word of [1, 1] and is killed.
        let t = {
            let (p0, h) = (p0.clone(), h);
            thread::spawn(move || {
                let mut v = [0u64; 2];
                let held = lock_cell(&p0, o0, &h, &mut v);
                cell_of(&p0, &h).commit_cut_short(&held, bytemuck::bytes_of(&[1u64; 2]), 1, false);
                let _killed_holding = held; // never unlocked
                kill(&p0, Owner::row_of(o0.token).unwrap());
            })
        };
        // p1 reads without the lock, racing the dying holder, then commits
        // [5, 5] under the lock (before p0 takes it, or after its death).
        let mut seen = [9u64; 2];
        if cell_of(&p1, &h).snapshot(bytemuck::bytes_of_mut(&mut seen)) {
            assert_eq!(seen, [0, 0], "a lock-free read saw an uncommitted value");
        }
        let mut v = [9u64; 2];
        let mut held = lock_cell(&p1, o1, &h, &mut v);
        assert_eq!(v, [0, 0], "the committed value, whatever p0 wrote");
        cell_of(&p1, &h).commit(&mut held, bytemuck::bytes_of(&[5u64; 2]));
        let recovered = held.recovered();
        cell_of(&p1, &h).unlock(&held);
        t.join().unwrap();
        // p1 either came first (then p0 took the lock after it and died
        // holding it) or took the lock over from the dead p0.
        let mut after = [9u64; 2];
        assert!(cell_of(&p1, &h).snapshot(bytemuck::bytes_of_mut(&mut after)));
        assert_eq!(after, [5, 5]);
        if recovered {
            assert_eq!(v, [0, 0]);
        }
    });
}

#[test]
fn loom_models_a_notify_between_the_check_and_the_wait_is_not_lost() {
    use super::notify::{self, RawNotifier};
    model(|| {
        let [(p0, o0), (p1, _)] = processes::<2>();
        let h = alloc_one(&p0, 0, o0).unwrap();
        let flag = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let t = {
            let (p1, flag) = (p1.clone(), flag.clone());
            thread::spawn(move || {
                flag.store(true, Ordering::SeqCst);
                RawNotifier::new(p1.live_words(&h, notify::WORDS).unwrap()).notify(false);
            })
        };
        let n = RawNotifier::new(p0.live_words(&h, notify::WORDS).unwrap());
        // The waiter's pattern: ticket, check, wait on the ticket. A lost
        // wake-up parks it for ever: a deadlock loom reports (the modelled
        // futex has no timeout).
        let ticket = n.ticket();
        if !flag.load(Ordering::SeqCst) {
            assert!(n.wait(ticket, None));
        }
        t.join().unwrap();
    });
}

#[test]
fn loom_models_two_slice_roots_on_one_name_make_one_slice_with_one_length() {
    use crate::typed::roots;
    model(|| {
        let [(p0, o0), (p1, o1)] = processes();
        let ty = crate::typed::slice_root_type::<u64>();
        let t = thread::spawn(move || {
            roots::get_or_insert_entry(&p1, o1, "table", ty, 2, || alloc(&p1, o1)).unwrap()
        });
        let mine = roots::get_or_insert_entry(&p0, o0, "table", ty, 2, || alloc(&p0, o0)).unwrap();
        let theirs = t.join().unwrap();
        assert_eq!(mine, theirs);
        let report = crate::check::check_pool(&p0, None).unwrap();
        let allocated: u64 = report.classes.iter().map(|c| c.allocated).sum();
        assert_eq!(
            (allocated, report.roots),
            (1, 1),
            "the loser's table leaked"
        );
    });
}

/// Two simulated processes on a segment of 256-byte slots: room for a
/// channel of one or two `u64`s (16 header words, 5 per entry).
fn chan_processes() -> [(Arc<TestPool>, Owner); 2] {
    let ps: Vec<_> = heap_processes(&[256], PAGE, 8 << 10, 2)
        .into_iter()
        .map(|(p, o)| (Arc::new(p), o))
        .collect();
    ps.try_into()
        .unwrap_or_else(|_| unreachable!("heap_processes makes 2"))
}

/// The channel of `u64` values in slot `h`.
fn channel_of<'a>(p: &'a TestPool, h: &SlotRef) -> super::channel::RawChannel<'a> {
    super::channel::RawChannel::open(p.live_words(h, 32).unwrap(), 8).unwrap()
}

fn new_channel(p: &TestPool, o: Owner, cap: usize) -> SlotRef {
    let h = alloc_one(p, 0, o).unwrap();
    let words = p.live_words(&h, 32).unwrap();
    for w in words {
        w.store(0, Ordering::Relaxed);
    }
    assert!(super::channel::words_for(cap, 8).unwrap() <= 32);
    super::channel::RawChannel::init(words, cap);
    h
}

fn send_value(p: &TestPool, o: Owner, h: &SlotRef, v: u64) -> bool {
    let ch = channel_of(p, h);
    let held = ch.lock(p, o, None).unwrap().unwrap();
    let sent = ch.send(p, &held, &v.to_ne_bytes(), SlotRef::NULL);
    ch.unlock(held);
    sent.unwrap()
}

fn take_value(p: &TestPool, o: Owner, h: &SlotRef) -> Option<(u64, super::channel::Taken)> {
    let ch = channel_of(p, h);
    let held = ch.lock(p, o, None).unwrap().unwrap();
    let mut b = [0u8; 8];
    let t = ch.take(&held, &mut b).unwrap();
    if t.is_none() && ch.redeliver_dead(p, o).unwrap() > 0 {
        let t = ch.take(&held, &mut b).unwrap();
        ch.unlock(held);
        return t.map(|t| (u64::from_ne_bytes(b), t));
    }
    ch.unlock(held);
    t.map(|t| (u64::from_ne_bytes(b), t))
}

fn ack_value(p: &TestPool, o: Owner, h: &SlotRef, t: &super::channel::Taken) {
    let ch = channel_of(p, h);
    let held = ch.lock(p, o, None).unwrap().unwrap();
    ch.ack(p, &held, o, t).unwrap();
    ch.unlock(held);
}

#[test]
fn loom_models_two_senders_and_a_receiver_on_a_channel_of_capacity_one() {
    model(|| {
        let [(p0, o0), (p1, o1)] = chan_processes();
        let h = new_channel(&p0, o0, 1);
        let t = {
            let p1 = p1.clone();
            thread::spawn(move || send_value(&p1, o1, &h, 1))
        };
        let mine = send_value(&p0, o0, &h, 2);
        let theirs = t.join().unwrap();
        // Capacity one: exactly one of the two fits.
        assert!(mine ^ theirs, "mine {mine} theirs {theirs}");
        let (v, taken) = take_value(&p0, o0, &h).expect("the one sent");
        assert_eq!(v, if mine { 2 } else { 1 });
        ack_value(&p0, o0, &h, &taken);
        assert!(take_value(&p0, o0, &h).is_none(), "delivered twice");
        assert!(send_value(&p1, o1, &h, 3), "the ack freed the room");
    });
}

#[test]
fn loom_models_a_dead_receivers_message_is_delivered_once_to_the_survivor() {
    model(|| {
        let [(p0, o0), (p1, o1)] = chan_processes();
        let h = new_channel(&p0, o0, 1);
        assert!(send_value(&p0, o0, &h, 7));
        // p0 receives and dies before acking, racing p1's receive.
        let t = {
            let p0 = p0.clone();
            thread::spawn(move || {
                let got = take_value(&p0, o0, &h);
                kill(&p0, Owner::row_of(o0.token).unwrap());
                got.map(|(v, _)| v)
            })
        };
        let mine = take_value(&p1, o1, &h);
        let theirs = t.join().unwrap();
        match (mine, theirs) {
            // p1 came first and holds it; p0 (dead) got nothing.
            (Some((7, taken)), None) => ack_value(&p1, o1, &h, &taken),
            // p0 took it and died: p1 gets it again, once, redelivered.
            (None, Some(7)) => {
                let (v, taken) = take_value(&p1, o1, &h).expect("redelivered");
                assert_eq!((v, taken.redeliveries), (7, 1));
                ack_value(&p1, o1, &h, &taken);
            }
            // p0 took it (then died) while p1 looked; p1's receive may
            // already have brought it back.
            (Some((7, taken)), Some(7)) => {
                assert_eq!(taken.redeliveries, 1);
                ack_value(&p1, o1, &h, &taken);
            }
            other => panic!("{other:?}"),
        }
        assert!(take_value(&p1, o1, &h).is_none(), "delivered twice");
    });
}

#[test]
fn loom_models_close_racing_send_leaves_the_message_queued_or_refused() {
    model(|| {
        let [(p0, o0), (p1, o1)] = chan_processes();
        let h = new_channel(&p0, o0, 1);
        let t = {
            let p1 = p1.clone();
            thread::spawn(move || {
                let ch = channel_of(&p1, &h);
                let held = ch.lock(&p1, o1, None).unwrap().unwrap();
                let r = ch.send(&p1, &held, &5u64.to_ne_bytes(), SlotRef::NULL);
                ch.unlock(held);
                r
            })
        };
        {
            let ch = channel_of(&p0, &h);
            let held = ch.lock(&p0, o0, None).unwrap().unwrap();
            ch.close(&held);
            ch.unlock(held);
        }
        let sent = t.join().unwrap();
        let queued = take_value(&p0, o0, &h).map(|(v, _)| v);
        match sent {
            Ok(true) => assert_eq!(queued, Some(5), "sent before the close: still delivered"),
            Err(Error::ChannelClosed) => assert_eq!(queued, None),
            other => panic!("{other:?}"),
        }
    });
}
