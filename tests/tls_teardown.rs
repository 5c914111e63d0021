//! A thread-local destructor of the user's that uses a `Slab` while its
//! thread is torn down, whatever else the thread did first (issue 10,
//! finding 6). Every call must work (through the thread's cache, or through
//! the uncached path once the cache is gone) or return an error; it must
//! never panic, since a panic inside a thread-local destructor aborts the
//! whole process.
//!
//! Found by review: a thread that registered such a destructor, then used a
//! `thread_local::ThreadLocal` (any, not ours), and made its first `Slab`
//! call from the destructor aborted with "thread local panicked on drop":
//! that crate's id lookup ran after its own id guard was destroyed.
//!
//! An abort kills the test binary, so each case runs in a child process
//! (this binary, re-run in a role; see `tests/common`). The child attaches,
//! runs one thread through the case's steps, joins it and reports; the
//! parent asserts the child exited 0 and that the segment is clean after it:
//! every slot the destructor took is freed, by the destructor, by the
//! child's main thread, or by `reclaim_dead` after the child died holding it.

mod common;

use shmslab::{Handle, Slab};
use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thread_local::ThreadLocal;

/// What the thread does before it exits, in order.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Registers the destructor (first use of the user's `thread_local!`).
    Late,
    /// Uses another `thread_local::ThreadLocal` (registers that crate's
    /// per-thread id and its guard).
    OtherCrate,
    /// Allocates and frees through the `Slab` (its first use here).
    UseSlab,
}

/// What the destructor does with the `Slab`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    /// Allocates, checks and frees one slot.
    AllocFree,
    /// Allocates one slot and leaves its handle to the child's main thread.
    AllocOnly,
    /// Every operation of the API, everything freed again.
    Everything,
}

/// How the child leaves after the thread is joined.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Exit {
    /// Frees what the destructor left, checks, drops the `Slab` (detach).
    Clean,
    /// Exits at once, holding what the destructor allocated: the parent's
    /// `reclaim_dead` must free it.
    Die,
}

struct Case {
    steps: &'static [Step],
    action: Action,
    exit: Exit,
}

// ---------------------------------------------------------------------------
// The child's side.
// ---------------------------------------------------------------------------

static SLAB: Mutex<Option<Arc<Slab>>> = Mutex::new(None);
static ACTION: Mutex<Option<Action>> = Mutex::new(None);
/// What the destructor did: `Ok(operations)` or the first failure.
static OUTCOME: Mutex<Option<Result<usize, String>>> = Mutex::new(None);
/// Handles an `AllocOnly` destructor left behind.
static LEFT: Mutex<Vec<Handle<u64>>> = Mutex::new(Vec::new());
static OTHER: ThreadLocal<Cell<u64>> = ThreadLocal::new();

const STAMP: u64 = 0x5eed_f00d_0bad_cafe;

struct LateUser;

impl Drop for LateUser {
    fn drop(&mut self) {
        let slab = SLAB.lock().unwrap().clone().expect("set by the child");
        let action = ACTION.lock().unwrap().expect("set by the child");
        let outcome = match action {
            Action::AllocFree => alloc_free(&slab),
            Action::AllocOnly => slab
                .alloc(STAMP)
                .map_err(|e| format!("alloc: {e}"))
                .map(|h| {
                    LEFT.lock().unwrap().push(h);
                    1
                }),
            Action::Everything => everything(&slab),
        };
        *OUTCOME.lock().unwrap() = Some(outcome);
    }
}

thread_local! {
    static LATE: LateUser = const { LateUser };
}

fn alloc_free(slab: &Slab) -> Result<usize, String> {
    let h = slab.alloc(STAMP).map_err(|e| format!("alloc: {e}"))?;
    let v = slab.read(h).map_err(|e| format!("read: {e}"))?;
    if v != STAMP {
        return Err(format!("read back {v:#x}"));
    }
    slab.free(h).map_err(|e| format!("free: {e}"))?;
    Ok(3)
}

/// Every operation of the API once; everything it allocates is freed.
fn everything(slab: &Slab) -> Result<usize, String> {
    let mut ops = 0;
    let mut op = |what: &str, r: shmslab::Result<bool>| match r {
        Ok(true) => {
            ops += 1;
            Ok(())
        }
        Ok(false) => Err(format!("{what}: wrong result")),
        Err(e) => Err(format!("{what}: {e}")),
    };
    let h = slab.alloc(7u64).map_err(|e| format!("alloc: {e}"))?;
    op("read", slab.read(h).map(|v| v == 7))?;
    op("write", slab.write(h, 8).map(|()| true))?;
    op("update", slab.update(h, |v| *v += 1).map(|()| true))?;
    op("read after update", slab.read(h).map(|v| v == 9))?;
    let z = slab
        .alloc_zeroed::<[u64; 4]>()
        .map_err(|e| format!("alloc_zeroed: {e}"))?;
    op("read zeroed", slab.read(z).map(|v| v == [0; 4]))?;
    let s = slab
        .alloc_slice::<u32>(10)
        .map_err(|e| format!("alloc_slice: {e}"))?;
    op("set", slab.set(s, 3, 5).map(|()| true))?;
    op("get", slab.get(s, 3).map(|v| v == 5))?;
    let src: Vec<u32> = (0..10).collect();
    op("write_from", slab.write_from(s, &src).map(|()| true))?;
    let mut dst = vec![0u32; 10];
    op("read_into", slab.read_into(s, &mut dst).map(|()| true))?;
    op("read_into result", Ok(dst == src))?;
    let b = slab
        .alloc_bytes(100)
        .map_err(|e| format!("alloc_bytes: {e}"))?;
    op("capacity", slab.capacity(b).map(|n| n >= 100))?;
    op(
        "write_bytes",
        slab.write_bytes(b, 0, b"late").map(|()| true),
    )?;
    let mut buf = [0u8; 4];
    op("read_bytes", slab.read_bytes(b, 0, &mut buf).map(|()| true))?;
    op("read_bytes result", Ok(&buf == b"late"))?;
    op(
        "with_bytes",
        slab.with_bytes(b, |bytes| bytes.starts_with(b"late")),
    )?;
    op(
        "update_bytes",
        slab.update_bytes(b, |bytes| bytes[0] = b'L').map(|()| true),
    )?;
    op(
        "with_bytes after update",
        slab.with_bytes(b, |x| x[0] == b'L'),
    )?;
    let r = slab
        .root_or_insert("late", 11u64)
        .map_err(|e| format!("root_or_insert: {e}"))?;
    op("root", slab.root::<u64>("late").map(|got| got == Some(r)))?;
    op("roots", slab.roots().map(|all| all.len() == 1))?;
    op("read root", slab.read(r).map(|v| v == 11))?;
    op("remove_root", slab.remove_root("late"))?;
    op("free", slab.free(h).map(|()| true))?;
    op("free zeroed", slab.free(z).map(|()| true))?;
    op("free slice", slab.free(s).map(|()| true))?;
    op("free bytes", slab.free(b).map(|()| true))?;
    op("double free refused", Ok(slab.free(h).is_err()))?;
    op("trim", slab.trim().map(|()| true))?;
    Ok(ops)
}

fn run_steps(slab: &Slab, steps: &[Step]) {
    for step in steps {
        match step {
            Step::Late => LATE.with(|_| {}),
            Step::OtherCrate => OTHER.get_or(|| Cell::new(1)).set(2),
            Step::UseSlab => {
                let h = slab.alloc(1u64).unwrap();
                slab.free(h).unwrap();
            }
        }
    }
}

/// The child: attach, run one thread through the case, report.
fn child(path: &str, case: &Case) {
    let slab = Arc::new(Slab::attach(path).expect("attach"));
    *SLAB.lock().unwrap() = Some(slab.clone());
    *ACTION.lock().unwrap() = Some(case.action);
    let steps = case.steps;
    let s = slab.clone();
    std::thread::spawn(move || run_steps(&s, steps))
        .join()
        .expect("the thread ran its steps");
    let outcome = OUTCOME.lock().unwrap().take();
    let ops = match outcome {
        Some(Ok(ops)) => ops,
        Some(Err(e)) => panic!("the destructor's calls failed: {e}"),
        None => panic!("the destructor did not run"),
    };
    let left = std::mem::take(&mut *LEFT.lock().unwrap());
    println!(
        "destructor: {ops} operations succeeded, {} left",
        left.len()
    );
    for h in &left {
        assert_eq!(slab.read(*h).expect("the left slot is live"), STAMP);
    }
    if case.exit == Exit::Die {
        assert!(!left.is_empty(), "nothing left for reclaim to free");
        println!("child: exiting holding {} slots", left.len());
        std::process::exit(0);
    }
    for h in left {
        slab.free(h).expect("free what the destructor left");
    }
    let report = slab.check().expect("check");
    assert!(report.is_consistent(), "{:?}", report.findings);
    let allocated: u64 = report.classes.iter().map(|c| c.allocated).sum();
    assert_eq!(allocated, 0, "a slot is still allocated");
    SLAB.lock().unwrap().take();
    drop(Arc::into_inner(slab).expect("the last reference"));
    println!("child: done");
}

// ---------------------------------------------------------------------------
// The parent's side.
// ---------------------------------------------------------------------------

fn run_case(test_name: &str, case: Case) {
    if let Some(args) = common::child_args("tls") {
        child(&args[0], &case);
        return;
    }
    let (_dir, path, parent) = common::live::new_segment("tls.shm");
    let out = common::run_child(
        test_name,
        "tls",
        &[path.to_str().unwrap()],
        Duration::from_secs(60),
    );
    println!(
        "case {:?} / {:?} / {:?}: child {}",
        case.steps,
        case.action,
        case.exit,
        common::status_text(&out.status)
    );
    common::assert_child_succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("operations succeeded"),
        "the child did not report\n{stdout}"
    );
    if case.exit == Exit::Die {
        let reclaimed = parent.reclaim_dead().expect("reclaim the dead child");
        assert_eq!(reclaimed.peers, 1, "{reclaimed:?}");
        assert!(reclaimed.slots >= 1, "{reclaimed:?}");
    }
    let report = parent.check().expect("check");
    assert!(report.is_consistent(), "{:?}", report.findings);
    let allocated: u64 = report.classes.iter().map(|c| c.allocated).sum();
    assert_eq!(allocated, 0, "a slot is still allocated");
    assert_eq!(report.live_peers, 1, "only the parent is attached");
    assert_eq!(report.dead_peers, 0);
    // The segment still works.
    let h = parent.alloc(1u64).unwrap();
    parent.free(h).unwrap();
}

use Step::*;

/// The order that aborted: the destructor is registered first, the other
/// crate's id guard after it (so it is destroyed before the destructor
/// runs), and the destructor makes the thread's first `Slab` call.
#[test]
fn a_destructor_after_another_thread_local_crate_allocates_and_frees() {
    run_case(
        "a_destructor_after_another_thread_local_crate_allocates_and_frees",
        Case {
            steps: &[Late, OtherCrate],
            action: Action::AllocFree,
            exit: Exit::Clean,
        },
    );
}

/// As above, the slot left to the child's main thread to free.
#[test]
fn a_destructor_after_another_thread_local_crate_allocates_for_its_parent_to_free() {
    run_case(
        "a_destructor_after_another_thread_local_crate_allocates_for_its_parent_to_free",
        Case {
            steps: &[Late, OtherCrate],
            action: Action::AllocOnly,
            exit: Exit::Clean,
        },
    );
}

/// As above, the child dies holding the slot: `reclaim_dead` frees it.
#[test]
fn a_destructor_after_another_thread_local_crate_allocates_and_dies_for_reclaim() {
    run_case(
        "a_destructor_after_another_thread_local_crate_allocates_and_dies_for_reclaim",
        Case {
            steps: &[Late, OtherCrate],
            action: Action::AllocOnly,
            exit: Exit::Die,
        },
    );
}

/// Every operation of the API from the destructor, in the order that aborted.
#[test]
fn every_operation_works_from_a_destructor_making_the_first_slab_call() {
    run_case(
        "every_operation_works_from_a_destructor_making_the_first_slab_call",
        Case {
            steps: &[Late, OtherCrate],
            action: Action::Everything,
            exit: Exit::Clean,
        },
    );
}

/// Every operation from a destructor that runs after the thread's cache is
/// gone (it was registered before the thread's first `Slab` call): the
/// uncached path.
#[test]
fn every_operation_works_from_a_destructor_after_the_cache_is_gone() {
    run_case(
        "every_operation_works_from_a_destructor_after_the_cache_is_gone",
        Case {
            steps: &[Late, OtherCrate, UseSlab],
            action: Action::Everything,
            exit: Exit::Clean,
        },
    );
}

/// The destructor registered after the other crate's use and before the
/// `Slab`'s.
#[test]
fn a_destructor_between_another_thread_local_crate_and_the_slab_allocates() {
    run_case(
        "a_destructor_between_another_thread_local_crate_and_the_slab_allocates",
        Case {
            steps: &[OtherCrate, Late, UseSlab],
            action: Action::AllocFree,
            exit: Exit::Clean,
        },
    );
}

/// The destructor registered after the `Slab`'s first use: it runs before
/// the cache is gone.
#[test]
fn a_destructor_registered_after_the_slab_allocates() {
    run_case(
        "a_destructor_registered_after_the_slab_allocates",
        Case {
            steps: &[UseSlab, Late],
            action: Action::AllocOnly,
            exit: Exit::Clean,
        },
    );
}

/// The other crate first, then the destructor: its first `Slab` call comes
/// while that crate's id is still the thread's.
#[test]
fn a_destructor_after_the_other_crate_allocates_and_frees() {
    run_case(
        "a_destructor_after_the_other_crate_allocates_and_frees",
        Case {
            steps: &[OtherCrate, Late],
            action: Action::Everything,
            exit: Exit::Clean,
        },
    );
}

/// The destructor first and the `Slab` used: reclaim after the child dies.
#[test]
fn a_destructor_after_the_slab_allocates_and_dies_for_reclaim() {
    run_case(
        "a_destructor_after_the_slab_allocates_and_dies_for_reclaim",
        Case {
            steps: &[Late, UseSlab],
            action: Action::AllocOnly,
            exit: Exit::Die,
        },
    );
}
