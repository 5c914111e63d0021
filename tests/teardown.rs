//! A thread whose thread-local destructors use a `Slab` after the crate's
//! per-thread bookkeeping is gone, while a new thread (which may be given the
//! dying thread's id) allocates too. Each must still get slots of its own.
//! (Found by review: the dying thread kept using its cache after its id, and
//! with it the cache, was handed to the new thread.)

use shmslab::Slab;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};

static SLAB: OnceLock<Slab> = OnceLock::new();
static GO: Barrier = Barrier::new(2);
static ERRORS: AtomicU64 = AtomicU64::new(0);
static LIVE: Mutex<Vec<(usize, u32, u32)>> = Mutex::new(Vec::new());

const ROUNDS: usize = 20_000;

fn allocate_many(tag: u64) {
    let slab = SLAB.get().expect("made by the test");
    let mut mine = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| slab.alloc(tag))) {
            Ok(Ok(h)) => mine.push(h),
            _ => {
                ERRORS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for h in &mine {
        assert_eq!(slab.read(*h).expect("a live slot reads back"), tag);
    }
    let mut live = LIVE.lock().unwrap();
    live.extend(mine.iter().map(|h| {
        (
            h.raw().parts().extent,
            h.raw().parts().index,
            h.raw().parts().generation,
        )
    }));
}

struct LateUser;
impl Drop for LateUser {
    fn drop(&mut self) {
        GO.wait();
        allocate_many(1);
    }
}

thread_local! {
    static LATE: LateUser = const { LateUser };
}

#[test]
fn a_thread_local_destructor_and_a_new_thread_never_share_a_cache() {
    let dir = tempfile::tempdir().unwrap();
    SLAB.set(
        Slab::builder()
            .create(dir.path().join("teardown.shm"))
            .unwrap(),
    )
    .unwrap_or_else(|_| unreachable!());
    let dying = std::thread::spawn(|| {
        // Registered before the first Slab call, so destroyed after the
        // crate's thread-local state.
        LATE.with(|_| {});
        let slab = SLAB.get().unwrap();
        let h = slab.alloc(0u64).unwrap();
        slab.free(h).unwrap();
    });
    GO.wait();
    let newcomer = std::thread::spawn(|| allocate_many(2));
    newcomer.join().unwrap();
    dying.join().unwrap();
    assert_eq!(
        ERRORS.load(Ordering::Relaxed),
        0,
        "allocations failed or panicked"
    );
    let live = LIVE.lock().unwrap();
    assert_eq!(live.len(), 2 * ROUNDS);
    let mut slots: Vec<_> = live.iter().map(|&(e, i, _)| (e, i)).collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), live.len(), "a slot was handed to both threads");
    let report = SLAB.get().unwrap().check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.findings);
}
