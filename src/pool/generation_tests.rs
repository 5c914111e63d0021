//! Retirement of slots whose generations are used up (issue 10, finding 2):
//! no path gives a slot a wrapped generation (free of a last life, take of
//! a free slot in its last generation, reclaim, a forged cached word), and
//! every path that moves slots leaves a retired one alone.

use super::Owner;
use super::testing::{TestPool, alloc_one, heap_pool, kill};
use crate::check::{Report, check_pool};
use crate::error::Error;
use crate::format::{LAST_GENERATION, Meta, SlotId, SlotRef, SlotState};
use crate::peers::reclaim_dead;
use crate::sync::{AtomicU64, Ordering};

fn pool(peers: usize) -> (TestPool, Vec<Owner>) {
    heap_pool(&[64], 4096, 16 << 20, peers)
}

/// Allocates the way `Slab` does: take (grow if empty) and activate.
fn alloc(p: &TestPool, o: Owner) -> SlotRef {
    alloc_one(p, 0, o).unwrap()
}

/// Frees the way `Slab` does, into `o`'s "cache" (not flushed): the last
/// life of a slot is retired instead.
fn free(p: &TestPool, h: &SlotRef, o: Owner) -> Result<(), Error> {
    p.release(h, o).map(drop)
}

fn word(p: &TestPool, id: SlotId) -> &AtomicU64 {
    p.meta(p.locate(0, id).unwrap())
}

fn load(p: &TestPool, id: SlotId) -> Meta {
    Meta(word(p, id).load(Ordering::Acquire))
}

/// Rewrites the generation of `id`'s word, keeping its state and payload.
fn forge_generation(p: &TestPool, id: SlotId, generation: u32) {
    let m = load(p, id);
    word(p, id).store(
        Meta::new(generation, m.state(), m.payload()).0,
        Ordering::Release,
    );
}

fn clean(p: &TestPool) -> Report {
    let report = check_pool(p, None).unwrap();
    assert!(report.is_consistent(), "{:?}", report.findings);
    report
}

fn assert_stale(p: &TestPool, h: &SlotRef, o: Owner) {
    let read = p.read_at(h, 0, &mut [0; 8]);
    assert!(matches!(read, Err(Error::StaleHandle { .. })), "{read:?}");
    let freed = free(p, h, o);
    assert!(matches!(freed, Err(Error::StaleHandle { .. })), "{freed:?}");
}

#[test]
fn freeing_a_slots_last_life_retires_it() {
    let (p, o) = pool(1);
    let me = o[0];
    let first = alloc(&p, me);
    let id = first.slot_id();
    p.release(&first, me).unwrap();
    // In this process's cache, its last life next.
    forge_generation(&p, id, LAST_GENERATION - 1);
    let last = p.activate(0, id, me).unwrap().0;
    assert_eq!(last.generation, LAST_GENERATION);
    free(&p, &last, me).unwrap();
    assert_eq!(load(&p, id), Meta::RETIRED);
    // Exactly one free of the last life acts.
    assert!(matches!(
        free(&p, &last, me),
        Err(Error::StaleHandle { .. })
    ));
    // Not even its old owner's cache can activate it again.
    assert!(matches!(p.activate(0, id, me), Err(Error::Corrupt { .. })));
    assert_stale(&p, &first, me);
    assert_stale(&p, &last, me);
    assert_eq!(clean(&p).classes[0].retired, 1);
}

#[test]
fn a_cached_word_forged_into_the_last_generation_is_retired_not_wrapped() {
    let (p, o) = pool(1);
    let me = o[0];
    let first = alloc(&p, me);
    let id = first.slot_id();
    p.release(&first, me).unwrap();
    // No honest peer caches a slot in its last generation; a forger can.
    forge_generation(&p, id, LAST_GENERATION);
    assert!(matches!(p.activate(0, id, me), Err(Error::Corrupt { .. })));
    assert_eq!(load(&p, id), Meta::RETIRED);
    assert_stale(&p, &first, me);
    assert_eq!(clean(&p).classes[0].retired, 1);
}

#[test]
fn reclaim_retires_a_dead_owners_slots_at_their_last_generation() {
    let (p, o) = pool(2);
    let (a, b) = (o[0], o[1]);
    // A holds one allocation and has one slot cached, both in their last
    // generation; a third slot is one generation short of it.
    let held = alloc(&p, a);
    let cached = alloc(&p, a);
    let short = alloc(&p, a);
    p.release(&cached, a).unwrap();
    for h in [held, cached] {
        forge_generation(&p, h.slot_id(), LAST_GENERATION);
    }
    forge_generation(&p, short.slot_id(), LAST_GENERATION - 1);
    let held_last = SlotRef {
        generation: LAST_GENERATION,
        ..held
    };
    kill(&p, 0);
    let report = reclaim_dead(&p, (1, b)).unwrap();
    assert_eq!((report.peers, report.slots, report.retired), (1, 1, 2));
    assert_eq!(load(&p, held.slot_id()), Meta::RETIRED);
    assert_eq!(load(&p, cached.slot_id()), Meta::RETIRED);
    // The third is free in its last generation.
    let m = load(&p, short.slot_id());
    assert_eq!(
        (m.state(), m.generation()),
        (SlotState::Free, LAST_GENERATION)
    );
    // A late free (or read) through the dead owner's handles never acts.
    assert_stale(&p, &held_last, b);
    assert_stale(&p, &held, b);
    assert_eq!(clean(&p).classes[0].retired, 2);
    // A free slot in its last generation has no life left to allocate: a
    // take retires it instead of caching it.
    let mut got = Vec::new();
    p.take(0, b, 10_000, &mut got).unwrap();
    assert_eq!(load(&p, short.slot_id()), Meta::RETIRED);
    for id in [held.slot_id(), cached.slot_id(), short.slot_id()] {
        assert!(!got.contains(&id), "retired slot {id:?} was taken");
    }
    let report = clean(&p);
    assert_eq!((report.classes[0].retired, report.classes[0].free), (3, 0));
}

#[test]
fn rebuilding_a_free_list_never_relinks_a_retired_slot() {
    let (p, o) = pool(1);
    let me = o[0];
    let hs: Vec<_> = (0..4).map(|_| alloc(&p, me)).collect();
    let retired = hs[1].slot_id();
    for h in &hs {
        let (c, id) = p.release(h, me).unwrap().expect("not a last life");
        p.give(c, me, &[id]).unwrap();
    }
    // Retire one of the free slots behind the list's back (as a peer could:
    // the word is untrusted), then rebuild the list from the words.
    word(&p, retired).store(Meta::RETIRED.0, Ordering::Release);
    {
        let _g = p.lock_class(0, me).unwrap();
        p.rebuild_list(0).unwrap();
    }
    let report = clean(&p);
    assert_eq!((report.classes[0].retired, report.classes[0].free), (1, 3));
    let mut got = Vec::new();
    p.take(0, me, 10_000, &mut got).unwrap();
    assert!(!got.contains(&retired));
    assert_eq!(load(&p, retired), Meta::RETIRED);
}

#[test]
fn a_retired_word_is_checked_like_any_other_untrusted_word() {
    let (p, o) = pool(1);
    let me = o[0];
    let h = alloc(&p, me);
    // Past the fresh cursor a slot was never used, so it cannot be retired.
    let past = SlotId::new(0, p.extent_slots(0, 0) - 1);
    assert_eq!(load(&p, past), Meta::FRESH);
    word(&p, past).store(Meta::RETIRED.0, Ordering::Release);
    let report = check_pool(&p, None).unwrap();
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.problem.contains("retired, but past the fresh cursor")),
        "{:?}",
        report.findings
    );
    // Claiming fresh slots skips it (only a zero word is fresh).
    let mut got = Vec::new();
    p.take(0, me, 10_000, &mut got).unwrap();
    assert!(!got.contains(&past));
    // A state-0 word that is neither fresh nor retired is junk, and a live
    // handle of that slot is refused.
    word(&p, h.slot_id()).store(Meta::RETIRED.0 | (1 << 32), Ordering::Release);
    let report = check_pool(&p, None).unwrap();
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.problem.contains("is not a valid state")),
        "{:?}",
        report.findings
    );
    assert!(p.read_at(&h, 0, &mut [0; 8]).is_err());
    assert!(free(&p, &h, me).is_err());
}

/// The thread cache's activation (`activate_cached`) with the generation a
/// free left: the word it stores is the one `activate` would, and a word
/// that is not the remembered one (forged by a peer) gets `activate`'s own
/// checks, so a last generation is retired, never wrapped.
#[test]
fn activation_from_a_remembered_generation_checks_the_word_it_replaces() {
    let (p, o) = pool(1);
    let me = o[0];
    let first = alloc(&p, me);
    let id = first.slot_id();
    p.release(&first, me).unwrap();
    // As remembered: the next generation, the same word `activate` stores.
    let (second, _) = p.activate_cached(0, id, first.generation, me).unwrap();
    assert_eq!(second.generation, first.generation + 1);
    assert_eq!(
        load(&p, id),
        Meta::new(second.generation, SlotState::Allocated, me.id)
    );
    p.release(&second, me).unwrap();
    // Not as remembered (a peer rewrote the generation): the word's own.
    forge_generation(&p, id, 1000);
    let (third, _) = p.activate_cached(0, id, second.generation, me).unwrap();
    assert_eq!(third.generation, 1001);
    p.release(&third, me).unwrap();
    // Unknown (a refill cut short): the word's own, too.
    let (fourth, _) = p.activate_cached(0, id, LAST_GENERATION, me).unwrap();
    assert_eq!(fourth.generation, 1002);
    p.release(&fourth, me).unwrap();
    // Forged into the last generation behind the cache's back: retired.
    forge_generation(&p, id, LAST_GENERATION);
    assert!(matches!(
        p.activate_cached(0, id, fourth.generation, me),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(load(&p, id), Meta::RETIRED);
    assert_stale(&p, &fourth, me);
    assert_eq!(clean(&p).classes[0].retired, 1);
}
