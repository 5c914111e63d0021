//! Issue 10, finding 2: a slot's 32-bit generation must never wrap. A slot
//! whose generations are used up is *retired* (docs/FORMAT.md): it stays out
//! of use for good, so a handle of any earlier life never acts again, with
//! no time limit.
//!
//! The fast test forges one slot's generation to just below the wrap
//! through the file and allocates across it. The release-only test drives
//! one slot through all 2³² − 1 lives with a real alloc/free loop
//! (`cargo test --release --test generation_wrap`, in `.ci/run`).

mod common;
mod hardening;

use common::live::SharedWords;
use hardening::*;
use shmslab::{Error, Slab, SlotRef};
use std::path::Path;
use std::sync::atomic::Ordering;

/// The metadata word of a retired slot (docs/FORMAT.md): generation 0,
/// state 0, payload all ones.
const RETIRED: u64 = NIL;

/// The metadata word of the slot `h` names, through a mapping of the file:
/// what another process (or a test) sees.
struct SlotWord {
    words: SharedWords,
    i: usize,
}

impl SlotWord {
    fn of(path: &Path, h: &SlotRef) -> Self {
        let bytes = std::fs::read(path).unwrap();
        let x = extents(&bytes)
            .into_iter()
            .find(|x| x.class == h.parts().class && x.index == h.parts().extent)
            .expect("the handle's extent");
        let at = x.meta_at(h.parts().index as usize);
        assert_eq!(at % 8, 0);
        SlotWord {
            words: SharedWords::open(path),
            i: at / 8,
        }
    }

    fn load(&self) -> u64 {
        self.words.word(self.i).load(Ordering::SeqCst)
    }

    fn store(&self, v: u64) {
        self.words.word(self.i).store(v, Ordering::SeqCst)
    }
}

fn same_slot(a: &SlotRef, b: &SlotRef) -> bool {
    let (a, b) = (a.parts(), b.parts());
    (a.class, a.extent, a.index) == (b.class, b.extent, b.index)
}

fn read_u64(slab: &Slab, h: &SlotRef) -> Result<u64, Error> {
    let mut b = [0u8; 8];
    slab.read_bytes(common::whole(*h), 0, &mut b)?;
    Ok(u64::from_ne_bytes(b))
}

/// The handle `old` of an earlier life of a retired slot: every use is
/// `StaleHandle`, and `live` (another slot's allocation) is untouched.
fn assert_never_acts(slab: &Slab, old: SlotRef, live: SlotRef, live_value: u64) {
    let read = read_u64(slab, &old);
    assert!(
        matches!(read, Err(Error::StaleHandle { .. })),
        "read of a handle from before the wrap: {read:?} (expected StaleHandle)"
    );
    let write = slab.write_bytes(common::whole(old), 0, &[0xEE; 8]);
    assert!(
        matches!(write, Err(Error::StaleHandle { .. })),
        "write of a handle from before the wrap: {write:?}"
    );
    let free = slab.free(old);
    assert!(
        matches!(free, Err(Error::StaleHandle { .. })),
        "free of a handle from before the wrap: {free:?} (expected StaleHandle)"
    );
    assert_eq!(read_u64(slab, &live).unwrap(), live_value);
}

/// The slot of `retired` is never handed out again: allocate every slot of
/// its class (and more) from the shared lists.
fn assert_not_reused(slab: &Slab, retired: &SlotRef) {
    slab.trim().unwrap();
    let slots = slab.stats().classes[retired.parts().class].slots as usize;
    let size = slab.class_sizes()[retired.parts().class] as usize;
    let held: Vec<_> = (0..slots + 4)
        .map(|_| slab.alloc_bytes(size).unwrap().raw())
        .collect();
    for h in &held {
        assert!(!same_slot(h, retired), "the retired slot was reused: {h:?}");
    }
    for h in held {
        slab.free(h).unwrap();
    }
}

fn assert_clean_with_one_retired(slab: &Slab, class: usize) {
    let report = slab.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.findings);
    assert_eq!(report.classes[class].retired, 1, "{:?}", report.classes);
}

#[test]
fn a_handle_from_before_the_wrap_never_acts_and_the_slot_retires() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrap.shm");
    let mut slab = Slab::builder().classes(&[64, 256]).create(&path).unwrap();
    slab.keep_file();

    // The slot's first life: generation 1. Its free leaves it on top of
    // this thread's cache.
    let first = slab.alloc_bytes(64).unwrap().raw();
    assert_eq!(first.parts().generation, 1);
    slab.free(first).unwrap();

    // Forge the slot's generation to two below the wrap, as 2³² − 3 more
    // alloc/free pairs would have left it (still cached by this process).
    let word = SlotWord::of(&path, &first);
    let cached = word.load();
    assert_eq!(cached >> 30 & 3, STATE_CACHED, "{cached:#x}");
    assert_eq!(cached >> 32, 1, "{cached:#x}");
    word.store(((u32::MAX as u64 - 1) << 32) | (cached & 0xFFFF_FFFF));

    // Its last two lives (the cache is LIFO: the same slot).
    let before_last = slab.alloc_bytes(64).unwrap().raw();
    assert!(same_slot(&before_last, &first));
    assert_eq!(before_last.parts().generation, u32::MAX);
    slab.write_bytes(common::whole(before_last), 0, &7u64.to_ne_bytes())
        .unwrap();
    assert_eq!(read_u64(&slab, &before_last).unwrap(), 7);
    slab.free(before_last).unwrap();

    // Across the wrap: the slot has no generation left.
    let next = slab.alloc_bytes(64).unwrap().raw();
    slab.write_bytes(common::whole(next), 0, &42u64.to_ne_bytes())
        .unwrap();
    assert_never_acts(&slab, first, next, 42);
    assert_never_acts(&slab, before_last, next, 42);
    assert!(
        !same_slot(&next, &first),
        "the slot was reused after its last generation: {next:?}"
    );
    assert_eq!(word.load(), RETIRED, "{:#x}", word.load());
    assert_clean_with_one_retired(&slab, 0);

    assert_not_reused(&slab, &first);
    assert_never_acts(&slab, first, next, 42);
    slab.free(next).unwrap();
    assert_clean_with_one_retired(&slab, 0);

    // Detach and attach again: the retirement is in the file, for good.
    drop(slab);
    let mut again = Slab::attach(&path).unwrap();
    again.remove_file_on_drop();
    assert_eq!(word.load(), RETIRED);
    assert_clean_with_one_retired(&again, 0);
    assert_not_reused(&again, &first);
    let stats = shmslab::inspect(&path).unwrap();
    assert!(stats.is_consistent(), "{:?}", stats.findings);
    assert_eq!(stats.classes[0].retired, 1);
}

/// One slot through every one of its 2³² − 1 lives, by alloc and free (the
/// thread cache hands the freed slot straight back). Release only: about a
/// minute at 10–15 ns per pair.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "2^32 alloc/free pairs: run in release (cargo test --release --test generation_wrap)"
)]
fn one_slot_through_all_its_generations_retires_and_no_old_handle_acts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrap-all.shm");
    let slab = Slab::builder().classes(&[64]).create(&path).unwrap();
    let started = std::time::Instant::now();

    let first = slab.alloc_bytes(64).unwrap().raw();
    slab.free(first).unwrap();
    let first_reuse = slab.alloc_bytes(64).unwrap().raw();
    assert!(same_slot(&first_reuse, &first));
    assert_eq!(first_reuse.parts().generation, 2);
    let mut h = first_reuse;
    for _ in 2..u32::MAX {
        slab.free(h).unwrap();
        h = slab.alloc_bytes(64).unwrap().raw();
        // Cheap enough per pair: the loop reuses one slot, nothing else.
        if !same_slot(&h, &first) {
            panic!(
                "left the slot at generation {}: {h:?}",
                h.parts().generation
            );
        }
    }
    assert_eq!(h.parts().generation, u32::MAX);
    slab.free(h).unwrap();
    eprintln!(
        "{} alloc/free pairs on one slot in {:.1?}",
        u32::MAX,
        started.elapsed()
    );

    // Past the wrap point: new allocations land elsewhere, and neither the
    // first life's handle nor the first reuse's (whose generations a
    // wrapped counter would give next) ever acts.
    for round in 0..4u64 {
        let next = slab.alloc_bytes(64).unwrap().raw();
        assert!(
            !same_slot(&next, &first),
            "reused in round {round}: {next:?}"
        );
        slab.write_bytes(common::whole(next), 0, &round.to_ne_bytes())
            .unwrap();
        assert_never_acts(&slab, first, next, round);
        assert_never_acts(&slab, first_reuse, next, round);
        assert_never_acts(&slab, h, next, round);
        slab.free(next).unwrap();
    }
    assert_eq!(SlotWord::of(&path, &first).load(), RETIRED);
    assert_clean_with_one_retired(&slab, 0);
    assert_not_reused(&slab, &first);
}
