//! A `Slab` (or a bare `MmapRegion`) inherited through `fork(2)`.
//!
//! A forked child gets a copy of the parent's memory and descriptors: the
//! `Slab`'s owner id and lock token, its thread caches, its peer row and the
//! descriptor that holds the row's liveness lock. None of that is the
//! child's. These tests fork the test process itself (`libc::fork`) and check
//! that the child can neither harm the parent by dropping what it inherited
//! nor by using it, and that it does not keep the parent's liveness lock
//! alive after the parent dies.
//!
//! The forked children below do little (the parent is multi-threaded: the
//! test harness runs other tests beside this one) and never return into the
//! harness: they report through an exit code or a pipe and `_exit`. Every
//! wait for a child is bounded, so a child stuck on a lock another thread of
//! the parent held at the fork fails the test instead of hanging it.

mod common;

use common::child_args;
use common::live::{LiveChild, hear, new_segment, say, segment_dir};
use shmslab::region::{FileCleanup, MmapRegion};
use shmslab::{Error, FileLifetime, Slab};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Bound on any wait for a child.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The exit code of a forked child whose closure panicked.
const PANICKED: i32 = 101;

/// Forks. The child runs `child` and `_exit`s with its result (or
/// [`PANICKED`]); the parent waits for it (at most [`TIMEOUT`], then kills
/// it and panics) and returns its exit code. Panics if the child was killed
/// by a signal.
fn fork_and_wait(child: impl FnOnce() -> i32) -> i32 {
    let pid = fork_child(child);
    wait_forked(pid)
}

/// Forks; the child runs `child` and `_exit`s with its result. Returns the
/// child's pid (to the parent).
fn fork_child(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork has no memory-safety preconditions. The child only runs
    // `child` (which the tests keep to allocation, the crate's calls and
    // raw syscalls) and then `_exit`s without unwinding into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(PANICKED);
        // SAFETY: _exit ends the child at once, running no destructors or
        // atexit handlers that belong to the parent's state.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for the forked child `pid` (see [`fork_and_wait`]).
fn wait_forked(pid: libc::pid_t) -> i32 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut status = 0;
        // SAFETY: plain syscall on our own child with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if r == pid {
            assert!(
                libc::WIFEXITED(status),
                "the forked child died of signal {}",
                libc::WTERMSIG(status)
            );
            return libc::WEXITSTATUS(status);
        }
        if Instant::now() >= deadline {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the forked child did not exit within {TIMEOUT:?} (a lock held at the fork?)");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A pipe: (read end, write end), both close-on-exec.
fn pipe() -> (std::fs::File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 just returned these two descriptors, owned by no one else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

/// Writes all of `bytes` to the raw descriptor (in a forked child, where
/// std's buffered handles may be locked by a thread that is gone).
fn write_fd(fd: &OwnedFd, bytes: &[u8]) {
    use std::os::fd::AsRawFd;
    let mut done = 0;
    while done < bytes.len() {
        // SAFETY: the pointer and length describe the live `bytes` slice.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                bytes[done..].as_ptr().cast(),
                bytes.len() - done,
            )
        };
        if n <= 0 {
            return;
        }
        done += n as usize;
    }
}

#[test]
fn a_child_dropping_an_inherited_creator_slab_keeps_the_file() {
    let (_dir, path, slab) = new_segment("creator.shm");
    let id = slab.segment_id();
    let h = slab.alloc(7u64).expect("alloc");
    let mut inherited = Some(slab);
    let code = fork_and_wait(|| {
        drop(inherited.take());
        0
    });
    assert_eq!(code, 0);
    let slab = inherited.expect("the parent's Slab");
    assert!(
        path.exists(),
        "the child's drop of the inherited creator Slab removed the parent's segment file"
    );
    let other = Slab::attach(&path).expect("a new attach by path");
    assert_eq!(other.segment_id(), id);
    assert_eq!(other.read(h).expect("read through the new attach"), 7);
    // The child closed its copy of the parent's liveness descriptor and
    // exited: the parent's row still reads as alive to everyone else.
    let peers = other.peers().expect("peers");
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert!(peers.iter().all(|p| p.alive), "{peers:?}");
    // The parent's row, lock and cache are untouched: it goes on working.
    slab.free(h).expect("free");
    drop(other);
    common::assert_every_slot_free(&slab, "after the child's drop");
    assert_eq!(slab.peers().expect("peers").len(), 1);
}

#[test]
fn a_child_dropping_an_inherited_region_keeps_the_file() {
    let dir = segment_dir();
    let path = dir.path().join("region.shm");
    let region = MmapRegion::create(&path, 4096, FileCleanup::Manual).expect("create");
    region.region().write(0, b"parent").expect("write");
    let mut inherited = Some(region);
    let code = fork_and_wait(|| {
        drop(inherited.take());
        0
    });
    assert_eq!(code, 0);
    assert!(
        path.exists(),
        "the child's drop of the inherited region removed the parent's file"
    );
    let other = MmapRegion::attach(&path).expect("attach by path");
    let mut got = [0u8; 6];
    other.region().read(0, &mut got).expect("read");
    assert_eq!(&got, b"parent");
    // The parent still owns the file: its own drop removes it.
    drop(inherited);
    assert!(
        !path.exists(),
        "the creating process's drop removes the file"
    );
}

/// Every public operation of `slab` that can fail, by name, with its
/// outcome (`Ok` or the error's variant).
fn every_operation(
    slab: &Slab,
    h: shmslab::Handle<u64>,
    slice: shmslab::SliceHandle<u64>,
) -> Vec<(&'static str, String)> {
    use common::outcome;
    let raw = h.raw();
    let mut buf = [0u8; 8];
    let mut out = [0u64; 1];
    vec![
        ("alloc", outcome(&slab.alloc(1u64))),
        ("alloc_zeroed", outcome(&slab.alloc_zeroed::<u64>())),
        ("alloc_bytes", outcome(&slab.alloc_bytes(10))),
        ("alloc_bytes(huge)", outcome(&slab.alloc_bytes(1 << 40))),
        ("alloc_slice", outcome(&slab.alloc_slice::<u32>(4))),
        ("read", outcome(&slab.read(h))),
        ("write", outcome(&slab.write(h, 5))),
        ("update", outcome(&slab.update(h, |v| *v += 1))),
        ("capacity", outcome(&slab.capacity(raw))),
        (
            "read_bytes",
            outcome(&slab.read_bytes(common::whole(raw), 0, &mut buf)),
        ),
        (
            "write_bytes",
            outcome(&slab.write_bytes(common::whole(raw), 0, &buf)),
        ),
        (
            "with_bytes",
            outcome(&slab.with_bytes(common::whole(raw), |b| b.len())),
        ),
        (
            "update_bytes",
            outcome(&slab.update_bytes(common::whole(raw), |b| b[0] = 1)),
        ),
        ("get", outcome(&slab.get(slice, 0))),
        ("set", outcome(&slab.set(slice, 0, 1))),
        ("read_into", outcome(&slab.read_into(slice, &mut out))),
        ("write_from", outcome(&slab.write_from(slice, &out))),
        ("persist", outcome(&slab.persist(raw))),
        ("adopt", outcome(&slab.adopt(raw))),
        ("trim", outcome(&slab.trim())),
        ("refresh", outcome(&slab.refresh())),
        ("reclaim_dead", outcome(&slab.reclaim_dead())),
        ("check", outcome(&slab.check())),
        ("peers", outcome(&slab.peers())),
        ("root", outcome(&slab.root::<u64>("r"))),
        ("root_or_insert", outcome(&slab.root_or_insert("new", 1u64))),
        ("roots", outcome(&slab.roots())),
        ("remove_root", outcome(&slab.remove_root("r"))),
        ("free", outcome(&slab.free(h))),
    ]
}

#[test]
fn every_operation_of_an_inherited_slab_fails_with_forked_process() {
    let (_dir, _path, slab) = new_segment("ops.shm");
    let h = slab.alloc(41u64).expect("alloc");
    let slice = slab.alloc_slice::<u64>(1).expect("alloc_slice");
    slab.root_or_insert("r", 9u64).expect("root");
    // Cached slots in this thread's cache: a child that used them would
    // hand out slots the parent hands out too.
    let spare: Vec<_> = (0..8).map(|_| slab.alloc(0u64).expect("alloc")).collect();
    for s in spare {
        slab.free(s).expect("free");
    }
    let before = slab.check().expect("check");

    let (mut from_child, to_parent) = pipe();
    let pid = fork_child(|| {
        let mut report = String::new();
        for (name, got) in every_operation(&slab, h, slice) {
            report.push_str(&format!("{name}={got}\n"));
        }
        let stats = slab.stats();
        report.push_str(&format!(
            "stats.peers.is_self={}\n",
            stats.peers.iter().any(|p| p.is_self)
        ));
        write_fd(&to_parent, report.as_bytes());
        0
    });
    drop(to_parent);
    let mut report = String::new();
    from_child
        .read_to_string(&mut report)
        .expect("read the report");
    assert_eq!(wait_forked(pid), 0, "the child's report:\n{report}");

    let wrong: Vec<&str> = report
        .lines()
        .filter(|l| !l.ends_with("=ForkedProcess") && !l.starts_with("stats."))
        .collect();
    assert!(
        !report.is_empty() && wrong.is_empty(),
        "in a forked child every operation of the inherited Slab must fail with \
         ForkedProcess; these did not:\n{}",
        wrong.join("\n")
    );
    assert!(
        report.contains("stats.peers.is_self=false"),
        "the child is not a peer: its stats name no row as its own\n{report}"
    );

    // Nothing of the parent's changed.
    assert_eq!(slab.read(h).expect("read"), 41);
    let after = slab.check().expect("check");
    assert!(after.is_consistent(), "{:#?}", after.findings);
    assert_eq!(
        format!("{:?}", after.classes),
        format!("{:?}", before.classes)
    );
    slab.free(h).expect("free");
    slab.free(slice).expect("free");
    assert!(slab.remove_root("r").expect("remove_root"));
    common::assert_every_slot_free(&slab, "at the end");
}

/// Allocates and frees batches larger than a thread cache for `for_how_long`,
/// so the class lock is taken over and over; returns the errors seen.
fn churn(slab: &Slab, for_how_long: Duration) -> Vec<String> {
    let mut errors = Vec::new();
    let end = Instant::now() + for_how_long;
    let mut held = Vec::with_capacity(1000);
    while Instant::now() < end && errors.len() < 10 {
        for i in 0..1000u64 {
            match slab.alloc(i) {
                Ok(h) => held.push(h),
                Err(e) => errors.push(format!("alloc: {e}")),
            }
        }
        for h in held.drain(..) {
            if let Err(e) = slab.free(h) {
                errors.push(format!("free: {e}"));
            }
        }
    }
    if let Err(e) = slab.trim() {
        errors.push(format!("trim: {e}"));
    }
    errors
}

#[test]
fn a_child_churning_an_inherited_slab_leaves_the_parents_lists_intact() {
    let (_dir, _path, slab) = new_segment("churn.shm");
    let slab = std::sync::Arc::new(slab);
    // This thread's cache holds slots when it forks.
    let mine: Vec<_> = (0..100)
        .map(|i| slab.alloc(i as u64).expect("alloc"))
        .collect();
    for h in mine {
        slab.free(h).expect("free");
    }
    let worker = {
        let slab = std::sync::Arc::clone(&slab);
        std::thread::spawn(move || churn(&slab, Duration::from_millis(1500)))
    };
    std::thread::sleep(Duration::from_millis(50));
    let (mut from_child, to_parent) = pipe();
    let pid = fork_child(|| {
        let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
        let end = Instant::now() + Duration::from_millis(1000);
        let mut held = Vec::new();
        while Instant::now() < end {
            for i in 0..1000u64 {
                let r = slab.alloc(i);
                *outcomes.entry(common::outcome(&r)).or_default() += 1;
                held.extend(r.ok());
            }
            for h in held.drain(..) {
                *outcomes.entry(common::outcome(&slab.free(h))).or_default() += 1;
            }
        }
        write_fd(&to_parent, format!("{outcomes:?}").as_bytes());
        0
    });
    drop(to_parent);
    let mut child_outcomes = String::new();
    from_child
        .read_to_string(&mut child_outcomes)
        .expect("read the child's outcomes");
    let code = wait_forked(pid);
    let parent_errors = worker.join().expect("the parent's churn");
    let report = slab.check().expect("check");
    let only_forked =
        child_outcomes.starts_with("{\"ForkedProcess\": ") && !child_outcomes.contains(", ");
    assert!(
        code == 0 && only_forked && parent_errors.is_empty() && report.is_consistent(),
        "a child using the inherited Slab must get only ForkedProcess and leave the \
         parent alone.\nchild exit {code}, outcomes {child_outcomes}\nparent's errors: \
         {parent_errors:#?}\nparent's check: {:#?}",
        report.findings
    );
    common::assert_every_slot_free(&slab, "after the churn");
}

#[test]
fn a_forked_child_can_attach_again_and_work() {
    let (_dir, path, slab) = new_segment("again.shm");
    let h = slab.alloc(5u64).expect("alloc");
    let code = fork_and_wait(|| {
        let Ok(own) = Slab::attach(&path) else {
            return 1;
        };
        if own.read(h).ok() != Some(5) {
            return 2;
        }
        let mut held = Vec::new();
        for i in 0..600u64 {
            match own.alloc(i) {
                Ok(x) => held.push(x),
                Err(_) => return 3,
            }
        }
        for x in held {
            if own.free(x).is_err() {
                return 4;
            }
        }
        match own.check() {
            Ok(r) if r.is_consistent() && r.live_peers == 2 => {}
            _ => return 5,
        }
        drop(own);
        0
    });
    assert_eq!(code, 0, "the child's own attach failed at step {code}");
    slab.free(h).expect("free");
    let report = common::assert_every_slot_free(&slab, "after the child detached");
    assert_eq!((report.live_peers, report.dead_peers), (1, 0));
}

#[test]
fn a_slab_on_a_file_unlinked_at_create_opens_its_own_liveness_description() {
    // The liveness description is the file opened again through
    // /proc/self/fd, which must work for a file that has no path any more.
    let dir = segment_dir();
    let path = dir.path().join("unlinked.shm");
    let slab = Slab::builder()
        .lifetime(FileLifetime::Unlinked)
        .create(&path)
        .expect("create, unlinked at once");
    assert!(!path.exists());
    let h = slab.alloc(3u64).expect("alloc");
    let report = slab.check().expect("check");
    assert!(report.is_consistent(), "{:#?}", report.findings);
    assert_eq!(report.live_peers, 1);
    slab.free(h).expect("free");
    common::assert_every_slot_free(&slab, "at the end");
}

/// Attaches, allocates `HELD` slots, forks a child that closes its standard
/// streams and sleeps, reports both, then waits to be killed.
const HELD: u64 = 40;

fn forking_holder(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let held: Vec<_> = (0..HELD).map(|i| slab.alloc(i).expect("alloc")).collect();
    say("HOLDING", held.len());
    let pid = fork_child(|| {
        // The parent's stdout is the test's pipe: let it close when the
        // parent dies. Nothing else is closed here.
        // SAFETY: closing our own copies of the standard streams.
        unsafe {
            libc::close(0);
            libc::close(1);
            libc::close(2);
            libc::sleep(60);
        }
        0
    });
    say("FORKED", pid);
    loop {
        let _ = hear();
    }
}

/// Kills a process (not our child) when dropped.
struct KillOnDrop(i32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: a plain signal to a process we started (through a child).
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

#[test]
fn a_killed_parents_slots_are_reclaimable_while_its_forked_child_sleeps() {
    const TEST: &str = "a_killed_parents_slots_are_reclaimable_while_its_forked_child_sleeps";
    if let Some(args) = child_args("forking-holder") {
        return forking_holder(&args);
    }
    let (_dir, path, slab) = new_segment("orphan.shm");
    let mut holder = LiveChild::spawn(TEST, "forking-holder", &[path.to_str().unwrap()], &[]);
    assert_eq!(holder.expect("HOLDING", TIMEOUT), HELD.to_string());
    let grandchild: i32 = holder.expect("FORKED", TIMEOUT).parse().expect("a pid");
    let _reaper = KillOnDrop(grandchild);
    assert_eq!(slab.check().expect("check").live_peers, 2);

    holder.kill();
    // At once: no waiting for the sleeping grandchild.
    let reclaimed = slab.reclaim_dead().expect("reclaim_dead");
    // SAFETY: signal 0 only asks whether the process exists.
    let grandchild_alive = unsafe { libc::kill(grandchild, 0) } == 0;
    assert!(
        grandchild_alive,
        "the forked child should still be sleeping"
    );
    assert_eq!(
        reclaimed.peers, 1,
        "the killed parent's row must read as dead while its forked child lives \
         (the child must not keep the parent's liveness lock): {reclaimed:?}"
    );
    assert!(
        reclaimed.slots >= HELD,
        "its {HELD} allocations are freed: {reclaimed:?}"
    );
    let report = common::assert_every_slot_free(&slab, "after the reclaim");
    assert_eq!((report.live_peers, report.dead_peers), (1, 0));
}

/// A guard of a locked value held across a `fork`: the child's copy of the
/// guard holds the *parent's* lock (same token), so the child dropping it
/// must neither commit its changes nor release the lock; `transact` and
/// `lock` in the child are `ForkedProcess`. The parent still holds the lock
/// afterwards (another process cannot take it) and commits its own value.
#[test]
fn a_forked_child_neither_commits_nor_releases_a_lock_its_parent_holds() {
    let (_dir, path, slab) = new_segment("locked-fork.shm");
    let cell = slab.alloc_locked([1u64; 4]).unwrap();
    let other = Slab::attach(&path).unwrap();
    let mut guard = slab.lock(cell).unwrap();
    *guard = [2; 4];
    let (guard_ref, slab_ref) = (&guard, &slab);
    let code = fork_and_wait(move || {
        let slab = slab_ref;
        // SAFETY: in the child, `guard` is the child's own copy of the
        // parent's memory, never dropped there (the child `_exit`s): taking
        // it by value is what the child's code returning out of the guard's
        // scope would do.
        let mut copy = unsafe { std::ptr::read(guard_ref) };
        *copy = [9; 4]; // dirty: a drop would commit and release, if allowed
        drop(copy);
        let transact = slab.transact(cell, |v| v[0] = 7);
        let lock = slab.try_lock(cell).map(|g| g.is_some());
        match (transact, lock) {
            (Err(Error::ForkedProcess), Err(Error::ForkedProcess)) => 0,
            _ => 1,
        }
    });
    assert_eq!(code, 0, "the child's lock calls were not ForkedProcess");
    // The parent's guard (the same memory, not dropped here) still holds:
    assert!(
        other.try_lock(cell).unwrap().is_none(),
        "the child's drop released the parent's lock"
    );
    assert_eq!(
        other.read_locked(cell).unwrap(),
        [1; 4],
        "the child committed its copy"
    );
    drop(guard);
    assert_eq!(other.read_locked(cell).unwrap(), [2; 4]);
}

/// A loan held across a `fork`: the child's copy of it names the parent's
/// unpublished slot. Writing through it, reading in place and dropping it
/// (which frees an unpublished loan) must all leave that slot alone in the
/// child — `ForkedProcess` — so the parent's loan still publishes the bytes
/// it wrote, and no other allocation was handed the slot meanwhile.
#[test]
fn a_forked_child_neither_writes_nor_frees_a_loan_its_parent_holds() {
    let (_dir, path, slab) = new_segment("loan-fork.shm");
    let other = Slab::attach(&path).unwrap();
    let mut loan = slab.loan_bytes(4096).unwrap();
    loan.write_at(0, &[1u8; 4096]).unwrap();
    let published = slab.alloc_bytes(64).unwrap();
    let (loan_ref, slab_ref) = (&loan, &slab);
    let code = fork_and_wait(move || {
        // SAFETY: in the child, `loan` is the child's own copy of the
        // parent's memory, never dropped there (the child `_exit`s): taking
        // it by value is what the child's code returning out of the loan's
        // scope would do.
        let mut copy = unsafe { std::ptr::read(loan_ref) };
        let write = copy.write_at(0, &[9u8; 16]);
        let in_place = slab_ref.read_in_place(published, |v| v.len());
        drop(copy); // unpublished: a drop would free the slot, if allowed
        match (write, in_place) {
            (Err(Error::ForkedProcess), Err(Error::ForkedProcess)) => 0,
            _ => 1,
        }
    });
    assert_eq!(code, 0, "the child's loan calls were not ForkedProcess");
    // Had the child freed the slot, its word would say *cached* (into the
    // child's copy of the thread cache), not *allocated*: the parent's
    // handle below would be stale. `other` allocating the class
    // meanwhile must not be handed the loan's slot either.
    let others: Vec<_> = (0..64).map(|_| other.alloc_bytes(4096).unwrap()).collect();
    let h = loan.into_handle();
    let mut back = [0u8; 4096];
    other.read_bytes(h, 0, &mut back).unwrap();
    assert_eq!(back, [1u8; 4096], "the child wrote through its copy");
    let place = |r: shmslab::SlotRef| {
        let p = r.parts();
        (p.class, p.extent, p.index)
    };
    for o in others {
        assert_ne!(
            place(o.raw()),
            place(h.raw()),
            "the loan's slot was lent again"
        );
        other.free(o).unwrap();
    }
    slab.free(h).unwrap();
    slab.free(published).unwrap();
    other.trim().unwrap();
    common::assert_every_slot_free(&slab, "after the parent freed its loan");
}
