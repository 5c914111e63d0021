//! The locked cell's and the notifier's protocols over a heap segment shared
//! by simulated processes, with real threads: what Miri runs (the loom models
//! check the same races exhaustively).

use super::Owner;
use super::cell::{RawCell, words_for};
use super::notify::{self, RawNotifier};
use super::testing::{TestPool, alloc_one, heap_processes, kill};
use crate::sync::Ordering;
use std::time::{Duration, Instant};

/// A value of four equal words: a torn one has unequal words.
type Quad = [u64; 4];

fn quad(v: u64) -> Quad {
    [v; 4]
}

fn bytes(q: &Quad) -> &[u8] {
    bytemuck::bytes_of(q)
}

/// Two simulated processes and a cell of a `Quad` allocated by the first,
/// holding `quad(0)`.
fn cell_setup() -> (Vec<(TestPool, Owner)>, crate::format::SlotRef) {
    let procs = heap_processes(&[128], 4096, 1 << 20, 2);
    let (p, o) = &procs[0];
    assert!(8 * words_for(32) <= 128);
    let h = alloc_one(p, 0, *o).unwrap();
    let words = p.live_words(&h, words_for(32)).unwrap();
    RawCell::new(words, 32).init(bytes(&quad(0)));
    (procs, h)
}

fn cell<'a>(p: &'a TestPool, h: &crate::format::SlotRef) -> RawCell<'a> {
    RawCell::new(p.live_words(h, words_for(32)).unwrap(), 32)
}

fn lock(p: &TestPool, o: Owner, c: &RawCell<'_>, v: &mut Quad) -> super::cell::Held {
    c.lock(p, o, None, bytemuck::bytes_of_mut(v))
        .unwrap()
        .expect("no deadline")
}

#[test]
fn commits_are_seen_whole_by_the_next_holder_and_by_lock_free_readers() {
    let (procs, h) = cell_setup();
    std::thread::scope(|s| {
        for (p, o) in &procs {
            let h = &h;
            s.spawn(move || {
                let c = cell(p, h);
                for _ in 0..200 {
                    let mut v = quad(0);
                    let mut held = lock(p, *o, &c, &mut v);
                    assert!(v.iter().all(|&x| x == v[0]), "torn under the lock: {v:?}");
                    v = quad(v[0] + 1);
                    c.commit(&mut held, bytes(&v));
                    c.unlock(&held);
                }
            });
        }
        // A reader without the lock, racing both.
        let (p, _) = &procs[1];
        let c = cell(p, &h);
        s.spawn(move || {
            for _ in 0..200 {
                let mut v = quad(0);
                if c.snapshot(bytemuck::bytes_of_mut(&mut v)) {
                    assert!(v.iter().all(|&x| x == v[0]), "a torn snapshot: {v:?}");
                }
            }
        });
    });
    let (p, _) = &procs[0];
    let mut v = quad(0);
    assert!(cell(p, &h).snapshot(bytemuck::bytes_of_mut(&mut v)));
    assert_eq!(v, quad(400));
}

#[test]
fn a_holder_killed_anywhere_in_a_commit_leaves_a_committed_value_and_the_next_holder_is_told() {
    // (words of the new value written, commit word stored) at the kill:
    // before, half-way and after the buffer write, and after the commit.
    for (words, published, expect) in [(0, false, 0), (2, false, 0), (4, false, 0), (4, true, 7)] {
        let (procs, h) = cell_setup();
        let [(p0, o0), (p1, o1)] = &procs[..] else {
            unreachable!()
        };
        let c0 = cell(p0, &h);
        let mut v = quad(0);
        let held = lock(p0, *o0, &c0, &mut v);
        c0.commit_cut_short(&held, bytes(&quad(7)), words, published);
        let _killed_holding = held; // never unlocked: only unlock releases
        kill(p0, Owner::row_of(o0.token).unwrap());

        let c1 = cell(p1, &h);
        let mut seen = quad(99);
        let held = lock(p1, *o1, &c1, &mut seen);
        assert!(
            held.recovered(),
            "the next holder is told the last one died"
        );
        assert_eq!(
            seen,
            quad(expect),
            "cut at {words} words, published {published}"
        );
        let mut held = held;
        c1.commit(&mut held, bytes(&quad(expect + 1)));
        c1.unlock(&held);
        let mut v = quad(0);
        assert!(c1.snapshot(bytemuck::bytes_of_mut(&mut v)));
        assert_eq!(v, quad(expect + 1));
    }
}

#[test]
fn a_lock_held_by_a_live_peer_times_out_and_one_held_by_another_thread_of_ours_waits() {
    let (procs, h) = cell_setup();
    let [(p0, o0), (p1, o1)] = &procs[..] else {
        unreachable!()
    };
    let c0 = cell(p0, &h);
    let mut v = quad(0);
    let held = lock(p0, *o0, &c0, &mut v);
    let c1 = cell(p1, &h);
    let t = Instant::now();
    let got = c1
        .lock(
            p1,
            *o1,
            Some(t + Duration::from_millis(20)),
            bytemuck::bytes_of_mut(&mut v),
        )
        .unwrap();
    assert!(got.is_none(), "a live holder's lock is not taken");
    assert!(t.elapsed() >= Duration::from_millis(20));
    // Our own token, held by "another thread" of p0: waited for, not
    // taken over as a dead holder's.
    let again = c0
        .lock(
            p0,
            *o0,
            Some(Instant::now() + Duration::from_millis(5)),
            bytemuck::bytes_of_mut(&mut v),
        )
        .unwrap();
    assert!(again.is_none());
    c0.unlock(&held);
}

#[test]
fn shared_atomics_racing_copies_of_the_same_slot_use_one_width() {
    // What Miri checks: fetch_add through a view's words and byte copies of
    // the same slot (reads and a partial-word write) race as same-width
    // atomics, never as a mixed-size race.
    let procs = heap_processes(&[64], 4096, 1 << 20, 2);
    let (p, o) = &procs[0];
    let h = alloc_one(p, 0, *o).unwrap();
    std::thread::scope(|s| {
        let h = &h;
        s.spawn(move || {
            let words = p.live_words(h, 2).unwrap();
            for _ in 0..100 {
                words[0].fetch_add(1, Ordering::Relaxed);
                words[1].fetch_add(3, Ordering::Relaxed);
            }
        });
        let (q, _) = &procs[1];
        s.spawn(move || {
            for _ in 0..100 {
                let mut b = [0u8; 16];
                q.read_at(h, 0, &mut b).unwrap();
                q.write_at(h, 12, &[0]).unwrap();
            }
        });
    });
}

#[test]
fn a_notify_after_the_ticket_is_never_lost_and_waits_time_out() {
    let procs = heap_processes(&[64], 4096, 1 << 20, 2);
    let (p, o) = &procs[0];
    let h = alloc_one(p, 0, *o).unwrap();
    for w in p.live_words(&h, notify::WORDS).unwrap() {
        w.store(0, Ordering::Relaxed);
    }
    let n = RawNotifier::new(p.live_words(&h, notify::WORDS).unwrap());
    let t = n.ticket();
    let started = Instant::now();
    assert!(!n.wait(t, Some(started + Duration::from_millis(10))));
    assert!(started.elapsed() >= Duration::from_millis(10));
    let (q, _) = &procs[1];
    let m = RawNotifier::new(q.live_words(&h, notify::WORDS).unwrap());
    for _ in 0..20 {
        let t = n.ticket();
        std::thread::scope(|s| {
            s.spawn(|| m.notify(false));
            assert!(n.wait(t, Some(Instant::now() + Duration::from_secs(10))));
        });
    }
    // A notify before the wait still counts: the ticket predates it.
    let t = n.ticket();
    m.notify(true);
    assert!(n.wait(t, Some(Instant::now())));
}

/// Word 3 of a cell: the starving waiter the others leave a free lock to.
const NEXT_WORD: usize = 3;

#[test]
fn a_free_lock_named_for_a_live_process_that_never_takes_it_is_taken_after_a_while() {
    // The named waiter is alive but not running (stopped, in a debugger):
    // before, the others deferred to it for ever.
    let (procs, h) = cell_setup();
    let [(p0, o0), (p1, o1)] = &procs[..] else {
        unreachable!()
    };
    p0.live_words(&h, words_for(32)).unwrap()[NEXT_WORD].store(o1.token, Ordering::Relaxed);
    let c0 = cell(p0, &h);
    let mut v = quad(0);
    // A try: a wait that is over takes a free lock whoever is named.
    let got = c0
        .lock(
            p0,
            *o0,
            Some(Instant::now()),
            bytemuck::bytes_of_mut(&mut v),
        )
        .unwrap();
    let held = got.expect("try_lock refused a free lock named for another process");
    c0.unlock(&held);
    // A blocking lock: within the deference limit, not for ever.
    let started = Instant::now();
    let held = c0
        .lock(
            p0,
            *o0,
            Some(started + Duration::from_secs(5)),
            bytemuck::bytes_of_mut(&mut v),
        )
        .unwrap()
        .expect("a free lock deferred for ever to a live process that never takes it");
    assert!(started.elapsed() < Duration::from_secs(1));
    c0.unlock(&held);
    let _ = p1;
}
