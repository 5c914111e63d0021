//! Without working OFD locks there is no crash detection, so there must be
//! no attachment: every peer holds an OFD lock on its row, reclaim and
//! register exclude each other through those locks, and "is this peer
//! alive?" is the kernel's answer about them. A process whose lock calls fail
//! (`F_OFD_SETLK` or `F_OFD_GETLK` returning `ENOLCK`, `EINVAL` or
//! `EOPNOTSUPP`, as on a filesystem without OFD locks) must fail to attach or
//! create with `Error::LivenessLocksUnsupported`, leaving nothing behind: no
//! row, no slot, no file. Were it let in, a peer that holds no lock would
//! look dead to everyone and `reclaim_dead` would free its slots while it
//! runs.
//!
//! The failures are injected with the `fault-injection` feature
//! (`SHMSLAB_FAIL_OFD`, see `src/fault.rs`) in a child process only:
//!
//! ```text
//! cargo test --features fault-injection --test liveness_locks
//! ```

#![cfg(feature = "fault-injection")]

mod common;

use common::live::{LiveChild, hear_exactly, new_segment, say, segment_dir};
use common::{assert_every_slot_free, variant};
use shmslab::{Error, Slab};
use std::path::Path;
use std::time::Duration;

const ROLE: &str = "attach-with-failing-ofd-locks";
const HOLDER: &str = "hold-slots-until-killed";
const RECLAIMER: &str = "reclaim-with-failing-ofd-locks";
const TIMEOUT: Duration = Duration::from_secs(60);
/// Slots the child allocates if it gets in.
const HELD: usize = 10;

/// In the child (whose OFD lock calls fail): creates or attaches; if that
/// works (the bug), allocates and holds slots until told to exit.
fn child(path: &Path, how: &str) {
    let got = match how {
        "create" => Slab::builder().create(path),
        _ => Slab::attach(path),
    };
    match got {
        Err(e) => {
            let errno = match &e {
                Error::LivenessLocksUnsupported { errno } => *errno,
                _ => 0,
            };
            say("failed", format!("{} {errno} {e}", variant(&e)));
        }
        Ok(slab) => {
            let held: Vec<_> = (0..HELD)
                .map(|i| {
                    let h = slab.alloc_bytes(64).unwrap();
                    slab.write_bytes(h, 0, &[i as u8 + 1; 64]).unwrap();
                    h
                })
                .collect();
            say("attached", "");
            hear_exactly("exit");
            let mut b = [0u8; 64];
            let intact = held
                .iter()
                .enumerate()
                .filter(|(i, h)| slab.read_bytes(**h, 0, &mut b).is_ok() && b == [*i as u8 + 1; 64])
                .count();
            say("intact", intact);
        }
    }
}

/// Runs the child with `SHMSLAB_FAIL_OFD=fault` against `path` and returns
/// the errno of its `LivenessLocksUnsupported`; panics, saying what went
/// wrong, if it got in.
fn expect_refused(test: &str, path: &Path, how: &str, fault: &str, observer: Option<&Slab>) -> i32 {
    let mut c = LiveChild::spawn(
        test,
        ROLE,
        &[path.to_str().unwrap(), how],
        &[("SHMSLAB_FAIL_OFD", fault)],
    );
    let msg = c.next_message(TIMEOUT).expect("the child's outcome");
    match msg.key.as_str() {
        "failed" => {
            c.wait_success(TIMEOUT);
            println!("{how} with {fault}: {}", msg.payload);
            let mut words = msg.payload.split(' ');
            assert_eq!(
                words.next(),
                Some("LivenessLocksUnsupported"),
                "{}",
                msg.payload
            );
            words.next().unwrap().parse().unwrap()
        }
        "attached" => {
            // Show what running without exclusion does: the live child looks
            // dead, and its slots are freed under it.
            let damage = observer.map(|slab| {
                let peers = slab.peers().unwrap();
                let judged_dead = peers.iter().filter(|p| !p.is_self && !p.alive).count();
                let reclaimed = slab.reclaim_dead().unwrap();
                format!(
                    "; while it ran, {judged_dead} live peer(s) were judged dead and \
                     reclaim_dead freed {} of its slots",
                    reclaimed.slots
                )
            });
            c.send("exit");
            let intact = c.expect("intact", TIMEOUT);
            c.wait_success(TIMEOUT);
            panic!(
                "{how} succeeded although OFD locks fail ({fault}){}; the child then found \
                 {intact} of its {HELD} slots intact",
                damage.unwrap_or_default()
            );
        }
        other => panic!("unexpected message {other}: {}", c.transcript()),
    }
}

#[test]
fn attach_fails_cleanly_when_ofd_locks_cannot_be_taken() {
    const NAME: &str = "attach_fails_cleanly_when_ofd_locks_cannot_be_taken";
    if let Some(args) = common::child_args(ROLE) {
        return child(Path::new(&args[0]), &args[1]);
    }
    let (_dir, path, slab) = new_segment("seg.shm");
    for (name, errno) in [
        ("ENOLCK", libc::ENOLCK),
        ("EINVAL", libc::EINVAL),
        ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ] {
        // Taking the lock fails; asking about locks still works (so a peer
        // without its lock would look dead to everyone).
        let got = expect_refused(NAME, &path, "attach", &format!("setlk={name}"), Some(&slab));
        assert_eq!(got, errno, "setlk={name}");
        // Nothing half-registered: only our own row, no slot taken.
        let peers = slab.peers().unwrap();
        assert_eq!(peers.len(), 1, "{peers:?}");
        assert!(peers[0].is_self);
        assert_every_slot_free(&slab, &format!("after the refused attach (setlk={name})"));
    }
}

#[test]
fn attach_fails_cleanly_when_ofd_locks_cannot_be_queried() {
    const NAME: &str = "attach_fails_cleanly_when_ofd_locks_cannot_be_queried";
    if let Some(args) = common::child_args(ROLE) {
        return child(Path::new(&args[0]), &args[1]);
    }
    let (_dir, path, slab) = new_segment("seg.shm");
    let got = expect_refused(NAME, &path, "attach", "getlk=EINVAL", Some(&slab));
    assert_eq!(got, libc::EINVAL);
    assert_eq!(slab.peers().unwrap().len(), 1);
    assert_every_slot_free(&slab, "after the refused attach (getlk=EINVAL)");
}

/// In a child: attaches, allocates [`HELD`] slots, and waits to be killed.
fn hold(path: &Path) {
    let slab = Slab::attach(path).unwrap();
    for _ in 0..HELD {
        slab.alloc_bytes(64).unwrap();
    }
    say("holding", "");
    hear_exactly("never sent");
}

/// In a child whose OFD lock calls fail from the second on: attaches (one
/// lock), then reclaims.
fn reclaim(path: &Path) {
    let slab = Slab::attach(path).expect("the first lock works");
    match slab.reclaim_dead() {
        Ok(r) => say("reclaimed", format!("{r:?}")),
        Err(e) => say("failed", format!("{} {e}", variant(&e))),
    }
}

#[test]
fn reclaim_fails_cleanly_when_a_row_lock_cannot_be_taken() {
    const NAME: &str = "reclaim_fails_cleanly_when_a_row_lock_cannot_be_taken";
    if let Some(args) = common::child_args(HOLDER) {
        return hold(Path::new(&args[0]));
    }
    if let Some(args) = common::child_args(RECLAIMER) {
        return reclaim(Path::new(&args[0]));
    }
    let (_dir, path, slab) = new_segment("seg.shm");
    let p = path.to_str().unwrap();
    // A peer that dies holding slots.
    let mut holder = LiveChild::spawn(NAME, HOLDER, &[p], &[]);
    holder.expect("holding", TIMEOUT);
    holder.kill();
    // A reclaimer whose second lock call (the first row it would reclaim)
    // fails must not reclaim without the row's lock.
    let mut r = LiveChild::spawn(
        NAME,
        RECLAIMER,
        &[p],
        &[("SHMSLAB_FAIL_OFD", "setlk=ENOLCK@2")],
    );
    let msg = r.next_message(TIMEOUT).expect("the reclaimer's outcome");
    r.wait_success(TIMEOUT);
    println!("reclaim with setlk=ENOLCK@2: {} {}", msg.key, msg.payload);
    assert_eq!(
        msg.key, "failed",
        "reclaimed without the row locks: {}",
        msg.payload
    );
    assert!(
        msg.payload.starts_with("LivenessLocksUnsupported"),
        "{}",
        msg.payload
    );
    // The dead row is still there for a process whose locks work.
    let report = slab.reclaim_dead().unwrap();
    assert_eq!(
        (report.peers, report.slots >= HELD as u64),
        (1, true),
        "{report:?}"
    );
    assert_every_slot_free(&slab, "after the working reclaim");
}

#[test]
fn create_fails_cleanly_and_leaves_no_file_when_ofd_locks_fail() {
    const NAME: &str = "create_fails_cleanly_and_leaves_no_file_when_ofd_locks_fail";
    if let Some(args) = common::child_args(ROLE) {
        return child(Path::new(&args[0]), &args[1]);
    }
    let dir = segment_dir();
    for fault in ["setlk=ENOLCK", "getlk=EOPNOTSUPP"] {
        let path = dir.path().join("new.shm");
        let got = expect_refused(NAME, &path, "create", fault, None);
        assert!(
            [libc::ENOLCK, libc::EOPNOTSUPP].contains(&got),
            "{fault}: errno {got}"
        );
        assert!(!path.exists(), "{fault}: the refused create left its file");
    }
}
