//! A locked value's and a notifier's words overwritten by a buggy or hostile
//! peer (here: raw byte writes into their slots, which any process may
//! make): every bounded operation returns, in time, without a panic; the
//! segment stays consistent; and once the words are honest again, the
//! objects work.
//!
//! What junk can do, by design: make `lock()` wait (a word naming a live
//! process looks like a holder that never lets go — `lock_timeout` bounds
//! it), cause spurious wake-ups, and give any bytes as the value (`T: Pod`).

mod common;

use common::live::{XorShift, new_segment, run_with_timeout};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Words a locked value's header has (docs/FORMAT.md, "Objects in slots").
const CELL_HEADER_WORDS: usize = 6;

fn rounds() -> u64 {
    if cfg!(debug_assertions) { 200 } else { 2000 }
}

/// A junk word: zero, small, our own token's shape, or anything.
fn junk(rng: &mut XorShift) -> u64 {
    match rng.below(5) {
        0 => 0,
        1 => rng.below(8),
        2 => (rng.below(4) << 32) | rng.below(4),
        3 => u64::MAX - rng.below(4),
        _ => rng.next_u64(),
    }
}

#[test]
fn junk_in_a_locked_values_words_never_panics_hangs_or_harms_the_segment() {
    let (_dir, _path, slab) = new_segment("junk-cell.shm");
    let slab = Arc::new(slab);
    let mut rng = XorShift::new(0x5eed_1234);
    for round in 0..rounds() {
        let cell = slab.alloc_locked([round; 5]).unwrap();
        let bytes = slab.bytes_of(cell).unwrap();
        let scribble = rng.below(1 << CELL_HEADER_WORDS);
        for w in 0..CELL_HEADER_WORDS {
            if scribble & (1 << w) != 0 {
                slab.write_bytes(bytes, 8 * w, &junk(&mut rng).to_ne_bytes())
                    .unwrap();
            }
        }
        let s = slab.clone();
        let started = Instant::now();
        run_with_timeout(
            &format!("round {round}"),
            Duration::from_secs(10),
            move || {
                // Each bounded call returns; what it returns is not fixed.
                if let Ok(Some(mut g)) = s.try_lock(cell) {
                    g[0] = 1;
                }
                if let Ok(Some(mut g)) = s.lock_timeout(cell, Duration::from_millis(5)) {
                    g[1] = 2;
                    if let Ok((g, _)) =
                        g.wait_while_timeout(|_| true, Some(Duration::from_millis(2)))
                    {
                        drop(g);
                    }
                }
                let _ = s.read_locked(cell);
            },
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "round {round}: {:?}",
            started.elapsed()
        );
        // Honest words again (all zero: free, sequence 0): it works.
        slab.write_bytes(bytes, 0, &[0; 8 * CELL_HEADER_WORDS])
            .unwrap();
        slab.transact(cell, |v| v[4] = 77).unwrap();
        assert_eq!(slab.read_locked(cell).unwrap()[4], 77, "round {round}");
        slab.free(cell).unwrap();
    }
    let report = slab.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.findings);
}

#[test]
fn junk_in_a_notifiers_word_never_panics_or_hangs() {
    let (_dir, _path, slab) = new_segment("junk-bell.shm");
    let slab = Arc::new(slab);
    let mut rng = XorShift::new(0xbe11);
    for round in 0..rounds() / 4 {
        let bell = slab.alloc_notifier().unwrap();
        let bytes = slab.bytes_of(bell).unwrap();
        slab.write_bytes(bytes, 0, &junk(&mut rng).to_ne_bytes())
            .unwrap();
        let s = slab.clone();
        run_with_timeout(
            &format!("round {round}"),
            Duration::from_secs(10),
            move || {
                let n = s.notifier(bell).unwrap();
                let t = n.ticket();
                n.notify_one();
                n.notify_all();
                // A notify after the ticket: seen, whatever the word held.
                assert!(
                    n.wait_since(t, Some(Duration::from_millis(1))),
                    "round {round}"
                );
                let started = Instant::now();
                let _ = n.wait(Some(Duration::from_millis(3)));
                assert!(started.elapsed() < Duration::from_millis(1500));
            },
        );
        slab.free(bell).unwrap();
    }
    let report = slab.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.findings);
}
