//! Protocol tests of the raw pool on a heap segment (no files, no caches).

use super::Owner;
use super::testing::{TestPool, alloc_one, heap_pool, heap_processes_capped, kill, write_journal};
use crate::error::Error;
use crate::format::{Meta, SlotId, SlotRef, SlotState, cls, hdr, journal};
use crate::region::Memory;
use crate::sync::Ordering;

const PAGE: u64 = 4096;

fn pool(classes: &[u64], peers: usize) -> (TestPool, Vec<Owner>) {
    heap_pool(classes, PAGE, 64 << 20, peers)
}

/// Allocates one slot of class `c` the way `Slab` does: take, grow if empty.
fn alloc(p: &TestPool, c: usize, o: Owner) -> SlotRef {
    alloc_one(p, c, o).unwrap()
}

/// Frees straight back to the shared list (no cache).
fn free(p: &TestPool, h: SlotRef, o: Owner) -> Result<(), Error> {
    match p.release(&h, o)? {
        Some((c, id)) => p.give(c, o, &[id]),
        None => Ok(()),
    }
}

fn meta_of(p: &TestPool, h: &SlotRef) -> Meta {
    let (_, _, addr) = p.check_ref(h).unwrap();
    Meta(p.meta(addr).load(Ordering::Acquire))
}

#[test]
fn a_new_segment_has_no_extents_and_the_first_alloc_grows_one() {
    let (p, o) = pool(&[64, 256], 1);
    assert_eq!(p.counts(0).extents, 0);
    assert_eq!(p.generation(), 0);
    let h = alloc(&p, 0, o[0]);
    assert_eq!(p.counts(0).extents, 1);
    assert_eq!(p.counts(1).extents, 0);
    assert_eq!(p.generation(), 1);
    assert_eq!((h.class as usize), 0);
    assert_eq!(h.generation, 1);
}

#[test]
fn allocations_get_distinct_slots_across_growths() {
    let (p, o) = pool(&[64], 1);
    let mut seen = std::collections::HashSet::new();
    // Each allocation costs ~0.1 s under Miri; 520 still span three extents
    // (256 + 256 + 320 slots).
    let n = if cfg!(miri) { 520 } else { 2000 };
    for _ in 0..n {
        let h = alloc(&p, 0, o[0]);
        assert!(seen.insert(h.slot_id()), "slot handed out twice");
    }
    assert!(p.counts(0).extents >= 3, "{:?}", p.counts(0));
}

#[test]
fn a_freed_slot_is_reused_last_in_first_out_with_a_new_generation() {
    let (p, o) = pool(&[64], 1);
    let a = alloc(&p, 0, o[0]);
    let b = alloc(&p, 0, o[0]);
    free(&p, a, o[0]).unwrap();
    free(&p, b, o[0]).unwrap();
    let again = alloc(&p, 0, o[0]);
    assert_eq!(again.slot_id(), b.slot_id());
    assert_eq!(again.generation, b.generation + 1);
    let again2 = alloc(&p, 0, o[0]);
    assert_eq!(again2.slot_id(), a.slot_id());
}

#[test]
fn a_second_free_is_a_double_free_and_an_old_handle_is_stale() {
    let (p, o) = pool(&[64], 1);
    let h = alloc(&p, 0, o[0]);
    free(&p, h, o[0]).unwrap();
    assert!(matches!(free(&p, h, o[0]), Err(Error::DoubleFree)));
    let reused = alloc(&p, 0, o[0]);
    assert_eq!(reused.slot_id(), h.slot_id());
    assert!(matches!(free(&p, h, o[0]), Err(Error::StaleHandle { .. })));
    let mut buf = [0u8; 8];
    assert!(matches!(
        p.read_at(&h, 0, &mut buf),
        Err(Error::StaleHandle { .. })
    ));
    free(&p, reused, o[0]).unwrap();
}

#[test]
fn handles_that_name_no_slot_are_invalid() {
    let (p, o) = pool(&[64, 128], 1);
    let h = alloc(&p, 0, o[0]);
    type Forgery = (&'static str, fn(&mut SlotRef));
    let invalid: [Forgery; 6] = [
        ("no such class", |b| b.class = 9),
        ("no such extent", |b| b.extent = 5),
        ("index past the extent", |b| b.index = 1 << 20),
        ("generation 0", |b| b.generation = 0),
        ("reserved bits set", |b| b.reserved = 1),
        // Class 1 has no extent yet: its slot 0 does not exist.
        ("a class with no extent", |b| b.class = 1),
    ];
    for (what, forge) in invalid {
        let mut bad = h;
        forge(&mut bad);
        assert!(
            matches!(p.check_ref(&bad), Err(Error::InvalidHandle { .. })),
            "{what}"
        );
    }
    let mut bad = h;
    bad.segment ^= 1;
    assert!(matches!(
        p.check_ref(&bad),
        Err(Error::ForeignHandle { .. })
    ));
}

#[test]
fn byte_access_is_bounded_by_the_slot() {
    let (p, o) = pool(&[64], 1);
    let h = alloc(&p, 0, o[0]);
    p.write_at(&h, 56, &[7; 8]).unwrap();
    assert!(matches!(
        p.write_at(&h, 57, &[7; 8]),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        p.read_at(&h, u64::MAX, &mut [0; 2]),
        Err(Error::OutOfBounds { .. })
    ));
    let mut out = [0u8; 8];
    p.read_at(&h, 56, &mut out).unwrap();
    assert_eq!(out, [7; 8]);
}

#[test]
fn extents_grow_by_a_quarter_of_the_class_each_time() {
    let (p, o) = pool(&[1024], 1);
    let first = p.geo.first_slots[0];
    let mut sizes = Vec::new();
    let mut held = Vec::new();
    while p.counts(0).extents < 6 {
        held.push(alloc(&p, 0, o[0]));
    }
    for e in 0..6 {
        sizes.push(p.extent_slots(0, e));
    }
    let mut total = 0u32;
    for (e, &s) in sizes.iter().enumerate() {
        assert_eq!(s, (total / 4).max(first), "extent {e}");
        total += s;
    }
}

#[test]
fn a_cap_on_the_file_size_ends_growth_with_out_of_space() {
    let probe = heap_pool(&[4096], PAGE, 1 << 20, 1).0;
    // Room for the header and about three pages of extents.
    let max_size = probe.geo.data_start + 3 * PAGE * 4;
    let (p, me) = heap_processes_capped(&[4096], PAGE, 64 << 20, 1, max_size)
        .pop()
        .unwrap();
    let mut allocated = 0;
    let err = loop {
        let mut got = Vec::new();
        let seen = p.take(0, me, 1, &mut got).unwrap();
        match got.pop() {
            Some(id) => {
                p.activate(0, id, me).unwrap();
                allocated += 1;
            }
            None => {
                if let Err(e) = p.grow(0, seen, me) {
                    break e;
                }
            }
        }
        assert!(allocated < 10_000, "growth never stopped");
    };
    assert!(matches!(err, Error::OutOfSpace { .. }), "{err}");
    assert!(p.current_size() <= max_size);
    assert!(allocated >= 1);
    let report = crate::check::check_pool(&p, None).unwrap();
    assert!(report.is_consistent(), "{:?}", report.findings);
}

#[test]
fn a_lock_holder_that_died_mid_flush_is_repaired_by_the_next_holder() {
    let (p, o) = pool(&[64], 2);
    let (a, b) = (o[0], o[1]);
    let hs: Vec<_> = (0..4).map(|_| alloc(&p, 0, a)).collect();
    // Peer A frees one slot into its "cache", then dies inside the class lock
    // right after making the slot free but before linking it in.
    let (c, id) = p.release(&hs[0], a).unwrap().expect("not a last life");
    let w = p.meta(p.locate(c, id).unwrap());
    let m = Meta(w.load(Ordering::Acquire));
    w.store(
        Meta::new(m.generation(), SlotState::Free, SlotId::NIL.raw()).0,
        Ordering::Release,
    );
    let lock = p.table_word(p.geo.class_entry(0) + cls::LOCK).unwrap();
    lock.store(a.token, Ordering::Release);
    kill(&p, 0);
    // B takes the lock: it must see A is dead, take over, and rebuild.
    let mut got = Vec::new();
    p.take(0, b, 64, &mut got).unwrap();
    assert!(got.contains(&id), "the half-pushed slot was lost");
    assert_eq!(lock.load(Ordering::Acquire), 0);
}

#[test]
fn a_grower_that_died_after_storing_the_size_is_finished_by_the_next_grower() {
    let (p, o) = pool(&[64, 128], 1);
    let me = o[0];
    let _ = alloc(&p, 0, me);
    // Play a grower of class 1 that died right after storing current_size.
    let offset = p.current_size();
    let slots = p.geo.max_extent_slots(1, 0);
    let (_, bytes) = p.geo.extent_layout(1, slots).unwrap();
    write_journal(&p, 1, 0, offset, bytes, slots as u64);
    p.mem.grow_to(offset + bytes).unwrap();
    p.table_word(hdr::CURRENT_SIZE)
        .unwrap()
        .store(offset + bytes, Ordering::Release);
    let gen_before = p.generation();
    // The next growth (of any class) repairs: class 1 gets its extent.
    let mut got = Vec::new();
    let seen = p.take(0, me, 10_000, &mut got).unwrap();
    p.grow(0, seen, me).unwrap();
    assert_eq!(p.counts(1).extents, 1);
    assert_eq!(p.extent_slots(1, 0), slots);
    assert!(p.generation() >= gen_before + 2);
    let h = alloc(&p, 1, me);
    assert_eq!((h.class as usize), 1);
}

#[test]
fn a_grower_that_died_before_storing_the_size_leaves_space_that_is_reused() {
    let (p, o) = pool(&[64], 1);
    let me = o[0];
    let offset = p.current_size();
    write_journal(&p, 0, 0, offset, 8192, 3);
    let h = alloc(&p, 0, me);
    assert_eq!(p.extent_slots(0, 0), p.geo.first_slots[0]);
    let (_, _, addr) = p.check_ref(&h).unwrap();
    assert_eq!(addr.meta, offset, "the abandoned space was not reused");
}

#[test]
fn reclaim_frees_exactly_the_dead_owners_slots() {
    let (p, o) = pool(&[64, 256], 2);
    let (a, b) = (o[0], o[1]);
    let a_live: Vec<_> = (0..5).map(|_| alloc(&p, 0, a)).collect();
    let a_big = alloc(&p, 1, a);
    let b_live: Vec<_> = (0..3).map(|_| alloc(&p, 0, b)).collect();
    // One of A's slots sits in A's cache (freed, not flushed).
    p.release(&a_live[4], a).unwrap();
    kill(&p, 0);
    let report = crate::peers::reclaim_dead(&p, (1, b)).unwrap();
    assert_eq!(report.peers, 1);
    assert_eq!(
        report.slots, 6,
        "4 allocated + 1 cached in class 0, 1 in class 1"
    );
    for h in a_live.iter().take(4).chain([&a_big]) {
        assert!(matches!(
            p.read_at(h, 0, &mut [0]),
            Err(Error::StaleHandle { .. })
        ));
        // A late free of a reclaimed slot cannot free it twice.
        assert!(p.release(h, b).is_err());
    }
    for h in &b_live {
        p.read_at(h, 0, &mut [0]).unwrap();
    }
    // A second reclaim finds nothing.
    assert_eq!(crate::peers::reclaim_dead(&p, (1, b)).unwrap().slots, 0);
}

#[test]
fn owners_are_recorded_and_move_with_free() {
    let (p, o) = pool(&[64], 2);
    let (a, b) = (o[0], o[1]);
    let h = alloc(&p, 0, a);
    assert_eq!(meta_of(&p, &h).payload(), a.id);
    p.set_owner(&h, 0).unwrap();
    assert_eq!(meta_of(&p, &h).payload(), 0);
    // B frees A's slot: it lands in B's cache, owned by B.
    p.release(&h, b).unwrap();
    let m = meta_of_raw(&p, &h);
    assert_eq!((m.state(), m.payload()), (SlotState::Cached, b.id));
}

fn meta_of_raw(p: &TestPool, h: &SlotRef) -> Meta {
    let addr = p.locate(h.class as usize, h.slot_id()).unwrap();
    Meta(p.meta(addr).load(Ordering::Acquire))
}

#[test]
fn a_corrupt_free_list_is_reported_and_rebuilt() {
    let (p, o) = pool(&[64], 1);
    let me = o[0];
    let hs: Vec<_> = (0..3).map(|_| alloc(&p, 0, me)).collect();
    for h in &hs {
        free(&p, *h, me).unwrap();
    }
    // Point the head at an allocated slot.
    let live = alloc(&p, 0, me);
    let head = p.table_word(p.geo.class_entry(0) + cls::FREE_HEAD).unwrap();
    head.store(live.slot_id().raw() as u64, Ordering::Release);
    let mut got = Vec::new();
    assert!(matches!(
        p.take(0, me, 4, &mut got),
        Err(Error::Corrupt { .. })
    ));
    // Rebuilt: the two free slots come back, the live one does not.
    got.clear();
    p.take(0, me, 4, &mut got).unwrap();
    assert!(!got.contains(&live.slot_id()));
    assert!(got.len() >= 2);
}

/// `set::<u32>(slice, 1, v)` racing `read_into(slice, ..)`, as the typed
/// layer makes them (it calls these two, on a file): a 4-byte write at offset
/// 4 and a 16-byte read at 0 of one slot. Both touch the slot's first word;
/// since every byte of a slot is accessed at one width (whole aligned words),
/// Miri sees no mixed-size race here, and an element that lies inside one
/// word is never torn.
#[test]
fn an_element_write_racing_a_whole_slice_read_is_never_torn() {
    let (p, o) = pool(&[64], 1);
    let h = alloc(&p, 0, o[0]);
    let init: [u32; 4] = [0x1111_1111, 0, 0x3333_3333, 0x4444_4444];
    p.write_at(&h, 0, bytemuck::bytes_of(&init)).unwrap();
    let rounds: u32 = if cfg!(miri) { 30 } else { 100_000 };
    // Every byte of a written element is the same, so a torn one shows.
    let uniform = |v: u32| v.to_ne_bytes().iter().all(|&b| b == v.to_ne_bytes()[0]);
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 0..rounds {
                let v = 0x0101_0101 * (k % 255 + 1);
                p.write_at(&h, 4, &v.to_ne_bytes()).unwrap();
            }
        });
        s.spawn(|| {
            for _ in 0..rounds {
                let mut out = [0u32; 4];
                p.read_at(&h, 0, bytemuck::bytes_of_mut(&mut out)).unwrap();
                assert!(uniform(out[1]), "torn element: {:#010x}", out[1]);
                assert_eq!([out[0], out[2], out[3]], [init[0], init[2], init[3]]);
            }
        });
    });
}

/// A write of a few bytes into the middle of a word, racing writes of the
/// word's other bytes and whole-word reads, changes exactly its own bytes: a
/// partial word is written by compare-and-swap on the whole word, never by a
/// store that could put back a neighbour's old bytes.
#[test]
fn partial_writes_to_one_word_keep_each_others_bytes() {
    let (p, o) = pool(&[64], 1);
    let h = alloc(&p, 0, o[0]);
    let rounds: u8 = if cfg!(miri) { 20 } else { 250 };
    let repeats = if cfg!(miri) { 1 } else { 200 };
    std::thread::scope(|s| {
        // Thread t owns bytes [2t + 1, 2t + 3) of the slot's second word.
        for t in 0..3u64 {
            let (p, h) = (&p, &h);
            s.spawn(move || {
                for _ in 0..repeats {
                    for k in 1..=rounds {
                        p.write_at(h, 8 + 2 * t + 1, &[k; 2]).unwrap();
                        let mut back = [0u8; 2];
                        p.read_at(h, 8 + 2 * t + 1, &mut back).unwrap();
                        assert_eq!(back, [k; 2], "thread {t}'s bytes were overwritten");
                    }
                }
            });
        }
    });
    let mut word = [0u8; 8];
    p.read_at(&h, 8, &mut word).unwrap();
    assert_eq!(word, [0, rounds, rounds, rounds, rounds, rounds, rounds, 0]);
}

/// Attach and `reclaim_dead` repair only a *dead* grower's journal: behind a
/// live one (whose extent's `fallocate` may take long) they return at once
/// instead of waiting on the growth lock, and so can never time out there.
#[test]
fn repairing_growth_does_not_wait_behind_a_live_grower() {
    let mut procs = heap_processes_capped(&[64], PAGE, 1 << 20, 2, 0);
    let limit = std::time::Duration::from_millis(300);
    procs[1].0.hold_limit = limit;
    let (grower, g) = (&procs[0].0, procs[0].1);
    let (other, o) = (&procs[1].0, procs[1].1);
    // The grower is mid-growth: it holds the growth lock, its journal active.
    let w = |off: u64, v: u64| grower.table_word(off).unwrap().store(v, Ordering::Release);
    w(hdr::GROW_LOCK, g.token);
    w(hdr::JOURNAL + journal::STATE, journal::ACTIVE);
    let t = std::time::Instant::now();
    assert!(
        !other.repair_dead_growth(o).unwrap(),
        "a live growth is not repaired"
    );
    assert!(
        t.elapsed() < limit,
        "it waited {:?} for a live grower",
        t.elapsed()
    );
    // Its own thread's growth (the word holds its own token) likewise.
    assert!(!grower.repair_dead_growth(g).unwrap());
    // Once the grower is dead, the same call takes the lock over and repairs.
    kill(grower, 0);
    assert!(other.repair_dead_growth(o).unwrap());
    assert_eq!(
        other
            .table_word(hdr::JOURNAL + journal::STATE)
            .unwrap()
            .load(Ordering::Acquire),
        journal::IDLE
    );
}

/// An extent larger than one reservation chunk shows progress on the growth
/// lock while it is reserved, so waiters do not give up on a big growth.
#[test]
#[cfg_attr(miri, ignore = "a 128 MiB extent")]
fn a_large_extent_shows_progress_while_it_is_reserved() {
    let procs = heap_processes_capped(&[1 << 27], PAGE, 300 << 20, 1, 0);
    let (p, o) = (&procs[0].0, procs[0].1);
    let progress = || {
        p.table_word(hdr::GROW_PROGRESS)
            .unwrap()
            .load(Ordering::Acquire)
    };
    let before = progress();
    p.grow(0, 0, o).unwrap();
    assert_eq!(p.counts(0).extents, 1);
    // One beat for taking the lock, then one per 64 MiB chunk (at least 3
    // chunks: 128 MiB of slot data plus its metadata page).
    assert!(progress() - before >= 4, "{} beats", progress() - before);
}
