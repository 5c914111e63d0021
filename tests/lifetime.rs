//! How long a segment file lives: `FileLifetime::Keep` (the default),
//! `RemoveWhenLastDetaches` and `Unlinked`, with real processes.
//!
//! Every test re-runs this test binary as child processes (see
//! `tests/common`). The two race tests run `SHMSLAB_LIFETIME_ROUNDS` rounds
//! (default 40 in debug, 400 in release; `.ci/run` runs them in release).

mod common;

use common::child_args;
use common::live::{
    LiveChild, SpinBarrier, hear, hear_exactly, new_segment, say, segment_dir, segment_with,
};
use shmslab::{Error, FileLifetime, Slab};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bound on any single wait for a child's message.
const MSG_TIMEOUT: Duration = Duration::from_secs(60);

fn rounds() -> usize {
    std::env::var("SHMSLAB_LIFETIME_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("SHMSLAB_LIFETIME_ROUNDS is a number"))
        .unwrap_or(if cfg!(debug_assertions) { 40 } else { 400 })
}

fn remove_when_last() -> shmslab::SlabBuilder {
    Slab::builder()
        .initial_size(64 << 10)
        .lifetime(FileLifetime::RemoveWhenLastDetaches)
}

/// Whether `e` says the file is not there (it was unlinked before the open).
fn not_found(e: &Error) -> bool {
    e.io_error()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
}

// ---------------------------------------------------------------------------
// Keep (the default)
// ---------------------------------------------------------------------------

#[test]
fn a_kept_file_outlives_the_process_that_created_it() {
    if let Some(args) = child_args("creator") {
        // Made with the defaults, by a process that then exits cleanly.
        let slab = Slab::builder().create(&args[0]).expect("create");
        assert_eq!(slab.lifetime(), FileLifetime::Keep);
        slab.root_or_insert("answer", 42u64).expect("root");
        drop(slab);
        return;
    }
    if let Some(args) = child_args("later") {
        let slab = Slab::attach(&args[0]).expect("a later process attaches");
        let h = slab
            .root::<u64>("answer")
            .expect("root")
            .expect("made by the creator");
        assert_eq!(slab.read(h).expect("read"), 42);
        return;
    }
    let dir = segment_dir();
    let path = dir.path().join("kept.shm");
    let p = path.to_str().unwrap();
    let out = common::run_child(
        "a_kept_file_outlives_the_process_that_created_it",
        "creator",
        &[p],
        MSG_TIMEOUT,
    );
    common::assert_child_succeeded(&out);
    assert!(path.exists(), "the creator's exit removed the segment file");
    // Two later processes, one after the other: each attaches and leaves.
    for _ in 0..2 {
        let out = common::run_child(
            "a_kept_file_outlives_the_process_that_created_it",
            "later",
            &[p],
            MSG_TIMEOUT,
        );
        common::assert_child_succeeded(&out);
        assert!(path.exists(), "a later process's exit removed the file");
    }
    let slab = Slab::attach(&path).expect("attach");
    let h = slab.root::<u64>("answer").expect("root").expect("kept");
    assert_eq!(slab.read(h).expect("read"), 42);
    let report = slab.check().expect("check");
    assert!(report.is_consistent(), "{:#?}", report.findings);
    assert_eq!((report.live_peers, report.dead_peers), (1, 0));
}

#[test]
fn remove_file_on_drop_removes_a_kept_file_and_later_attachers_are_refused() {
    let (_dir, path, mut a) = new_segment("removed.shm");
    let b = Slab::attach(&path).expect("attach");
    // Opened before the removal, joined after it: refused.
    let early = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    a.remove_file_on_drop();
    assert!(a.detach().expect("detach"), "remove_file_on_drop removes");
    assert!(!path.exists());
    let err = Slab::attach_fd(early.into()).unwrap_err();
    assert!(matches!(err, Error::SegmentRemoved), "{err}");
    // b stays attached and working; its own detach removes nothing.
    let h = b.alloc(5u64).expect("alloc");
    assert_eq!(b.read(h).expect("read"), 5);
    b.free(h).expect("free");
    assert!(!b.detach().expect("detach"));
}

// ---------------------------------------------------------------------------
// RemoveWhenLastDetaches
// ---------------------------------------------------------------------------

/// Child: attach `args[0]`, allocate, say `attached`; on `leave`, check the
/// file is still there (this process is attached), detach and say whether
/// that removed the file.
fn hold_then_leave(args: &[String]) {
    let path = Path::new(&args[0]);
    let slab = Slab::attach(path).expect("attach");
    let h = slab.alloc([1u64; 4]).expect("alloc");
    say("attached", slab.peers().expect("peers").len());
    hear_exactly("leave");
    assert!(
        path.exists(),
        "the file was removed while this process was attached"
    );
    assert_eq!(slab.read(h).expect("read"), [1; 4]);
    slab.free(h).expect("free");
    say("left", slab.detach().expect("detach"));
    hear_exactly("exit");
}

#[test]
fn the_last_of_several_processes_to_detach_removes_the_file() {
    const TEST: &str = "the_last_of_several_processes_to_detach_removes_the_file";
    if let Some(args) = child_args("holder") {
        return hold_then_leave(&args);
    }
    let (_dir, path, creator) = segment_with("job.shm", remove_when_last());
    let p = path.to_str().unwrap();
    let mut children: Vec<LiveChild> = (0..3)
        .map(|_| LiveChild::spawn(TEST, "holder", &[p], &[]))
        .collect();
    for c in &mut children {
        c.expect("attached", MSG_TIMEOUT);
    }
    // The creator leaves first: three are still attached.
    assert!(
        !creator.detach().expect("detach"),
        "the creator was not last"
    );
    assert!(path.exists(), "the creator's detach removed a file in use");
    let last = children.len() - 1;
    for (i, c) in children.iter_mut().enumerate() {
        c.send("leave");
        let removed = c.expect("left", MSG_TIMEOUT);
        assert_eq!(removed, (i == last).to_string(), "child {i} of {last}");
        assert_eq!(path.exists(), i != last, "after child {i} left");
        c.send("exit");
        c.wait_success(MSG_TIMEOUT);
    }
}

#[test]
fn a_killed_last_process_leaves_the_file_until_a_later_one_detaches() {
    const TEST: &str = "a_killed_last_process_leaves_the_file_until_a_later_one_detaches";
    if let Some(args) = child_args("holder") {
        return hold_then_leave(&args);
    }
    let (_dir, path, creator) = segment_with("killed.shm", remove_when_last());
    let mut child = LiveChild::spawn(TEST, "holder", &[path.to_str().unwrap()], &[]);
    child.expect("attached", MSG_TIMEOUT);
    assert!(!creator.detach().expect("detach"));
    // The last process dies attached: that is no clean detach.
    child.kill();
    assert!(path.exists(), "a SIGKILLed process removed the file");
    // A later process attaches (the dead row does not count as attached),
    // reclaims the dead one's slot, and is then the last to leave.
    let later = Slab::attach(&path).expect("attach after the kill");
    let report = later.reclaim_dead().expect("reclaim");
    assert_eq!(report.peers, 1);
    assert!(report.slots >= 1, "the dead process's slot was not freed");
    assert!(
        later.detach().expect("detach"),
        "the later process was last"
    );
    assert!(!path.exists());
}

#[test]
fn keep_file_keeps_a_file_its_last_process_would_remove() {
    let (_dir, path, mut slab) = segment_with("kept-last.shm", remove_when_last());
    slab.keep_file();
    assert!(!slab.detach().expect("detach"));
    assert!(path.exists());
    // The next last detacher removes it.
    assert!(
        Slab::attach(&path)
            .expect("attach")
            .detach()
            .expect("detach")
    );
    assert!(!path.exists());
}

#[test]
fn an_attacher_that_opened_the_file_before_the_last_detach_is_refused() {
    let (_dir, path, creator) = segment_with("opened-early.shm", remove_when_last());
    let early = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    assert!(creator.detach().expect("detach"));
    assert!(!path.exists());
    let err = Slab::attach_fd(early.into()).unwrap_err();
    assert!(matches!(err, Error::SegmentRemoved), "{err}");
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::NotFound
    );
    let err = Slab::attach(&path).unwrap_err();
    assert!(not_found(&err), "{err}");
}

#[test]
fn a_removal_cut_short_before_the_unlink_is_finished_by_the_next_attacher() {
    use std::os::unix::fs::FileExt;
    let (_dir, path, mut slab) = segment_with("cut-short.shm", remove_when_last());
    slab.keep_file();
    slab.detach().expect("detach");
    // What a last detacher that died between its mark and its unlink
    // leaves: the header's `removed` word (offset 112) set, the path there.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.write_all_at(&1u64.to_ne_bytes(), 112).expect("mark");
    drop(file);
    let err = Slab::attach(&path).unwrap_err();
    assert!(matches!(err, Error::SegmentRemoved), "{err}");
    assert!(
        !path.exists(),
        "the refused attacher did not finish the removal"
    );
}

/// A child of the race tests: for each round, attach when told (`attach`
/// role) or wait (`join` role), meet the other child at a spin barrier, and
/// detach (or attach) at once.
fn racer(role: &str, barrier: &Path) {
    let barrier = SpinBarrier::open(barrier, 2);
    loop {
        let line = hear();
        let Some(path) = line.strip_prefix("round ") else {
            assert_eq!(line, "exit");
            return;
        };
        let path = PathBuf::from(path);
        match role {
            // Attached before the round; detaches right after the barrier.
            "detacher" => {
                let slab = Slab::attach(&path).expect("attach");
                say("attached", "");
                hear_exactly("go");
                barrier.wait();
                let there = path.exists();
                let removed = slab.detach().expect("detach");
                say("left", format!("{removed} {there}"));
            }
            // Attaches right after the barrier, racing the other's detach.
            "joiner" => {
                say("attached", "");
                hear_exactly("go");
                barrier.wait();
                match Slab::attach(&path) {
                    Ok(slab) => {
                        // Joined: the file must stay while we are attached.
                        std::thread::sleep(Duration::from_micros(200));
                        let there = path.exists();
                        let removed = slab.detach().expect("detach");
                        say("joined", format!("{removed} {there}"));
                    }
                    Err(Error::SegmentRemoved) => say("refused", "removed"),
                    Err(e) if not_found(&e) => say("refused", "not-found"),
                    Err(e) => say("refused", format!("unexpected {e:?}")),
                }
            }
            other => panic!("role {other}"),
        }
    }
}

/// Starts two racers with `roles`; returns them and the barrier's directory.
fn racers(test: &str, roles: [&str; 2], dir: &Path) -> Vec<LiveChild> {
    let barrier = dir.join("barrier");
    SpinBarrier::create(&barrier);
    let b = barrier.to_str().unwrap();
    roles
        .iter()
        .map(|role| LiveChild::spawn(test, "racer", &[role, b], &[]))
        .collect()
}

#[test]
fn two_last_detachers_racing_remove_the_file_exactly_once() {
    const TEST: &str = "two_last_detachers_racing_remove_the_file_exactly_once";
    if let Some(args) = child_args("racer") {
        return racer(&args[0], Path::new(&args[1]));
    }
    let dir = segment_dir();
    let mut children = racers(TEST, ["detacher", "detacher"], dir.path());
    let mut tally = [0usize; 2];
    for round in 0..rounds() {
        let path = dir.path().join(format!("race-{round}.shm"));
        let creator = remove_when_last().create(&path).expect("create");
        for c in &mut children {
            c.send(&format!("round {}", path.display()));
            c.expect("attached", MSG_TIMEOUT);
        }
        assert!(!creator.detach().expect("detach"), "round {round}");
        for c in &mut children {
            c.send("go");
        }
        let mut removed = 0;
        for (i, c) in children.iter_mut().enumerate() {
            let left = c.expect("left", MSG_TIMEOUT);
            let (r, there) = left.split_once(' ').expect("two words");
            assert_eq!(
                there, "true",
                "round {round}: the file went while child {i} was attached"
            );
            if r == "true" {
                removed += 1;
                tally[i] += 1;
            }
        }
        assert_eq!(
            removed, 1,
            "round {round}: {removed} detachers removed the file"
        );
        assert!(!path.exists(), "round {round}: the file stayed");
    }
    eprintln!(
        "removed by the first child {} times, by the second {}",
        tally[0], tally[1]
    );
    for c in &mut children {
        c.send("exit");
        c.wait_success(MSG_TIMEOUT);
    }
}

#[test]
fn an_attach_racing_the_last_detach_joins_a_file_that_stays_or_is_refused() {
    const TEST: &str = "an_attach_racing_the_last_detach_joins_a_file_that_stays_or_is_refused";
    if let Some(args) = child_args("racer") {
        return racer(&args[0], Path::new(&args[1]));
    }
    let dir = segment_dir();
    let mut children = racers(TEST, ["detacher", "joiner"], dir.path());
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..rounds() {
        let path = dir.path().join(format!("join-{round}.shm"));
        let creator = remove_when_last().create(&path).expect("create");
        for c in &mut children {
            c.send(&format!("round {}", path.display()));
            c.expect("attached", MSG_TIMEOUT);
        }
        assert!(!creator.detach().expect("detach"));
        for c in &mut children {
            c.send("go");
        }
        let left = children[0].expect("left", MSG_TIMEOUT);
        let (detacher_removed, there) = left.split_once(' ').expect("two words");
        assert_eq!(there, "true", "round {round}");
        let m = children[1]
            .next_message(MSG_TIMEOUT)
            .unwrap_or_else(|| panic!("round {round}: no word from the joiner"));
        match (m.key.as_str(), detacher_removed) {
            // Joined: the file was there all the while the joiner was
            // attached, and exactly one of the two removed it: whichever
            // left last.
            ("joined", d) => {
                let (j, j_there) = m.payload.split_once(' ').expect("two words");
                assert_eq!(
                    j_there, "true",
                    "round {round}: the file went under the joiner"
                );
                assert_ne!(j, d, "round {round}: joiner removed {j}, detacher {d}");
            }
            // Too late: the detacher removed the file; the joiner got a
            // clear error, whether it opened the path before the unlink
            // (SegmentRemoved) or after (NotFound).
            ("refused", "true") => assert!(
                m.payload == "removed" || m.payload == "not-found",
                "round {round}: {}",
                m.payload
            ),
            other => panic!("round {round}: joiner {m:?}, detacher removed {other:?}"),
        }
        let outcome = match m.key.as_str() {
            "joined" => format!(
                "joined, {} last",
                if detacher_removed == "true" {
                    "detacher"
                } else {
                    "joiner"
                }
            ),
            _ => format!("refused ({})", m.payload),
        };
        *outcomes.entry(outcome).or_default() += 1;
        assert!(!path.exists(), "round {round}: the file stayed");
    }
    eprintln!("joiner outcomes: {outcomes:?}");
    for c in &mut children {
        c.send("exit");
        c.wait_success(MSG_TIMEOUT);
    }
}

// ---------------------------------------------------------------------------
// Unlinked
// ---------------------------------------------------------------------------

#[test]
fn an_unlinked_segment_has_no_path_and_is_joined_by_descriptor() {
    const TEST: &str = "an_unlinked_segment_has_no_path_and_is_joined_by_descriptor";
    if let Some(args) = child_args("joiner") {
        // The parent's descriptor, reached through /proc (as one received
        // over a socket would be).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&args[0])
            .expect("open the parent's descriptor");
        let slab = Slab::attach_fd(file.into()).expect("attach_fd");
        assert_eq!(slab.lifetime(), FileLifetime::Unlinked);
        let h = slab
            .root::<u64>("n")
            .expect("root")
            .expect("made by the parent");
        slab.update(h, |n| *n += 1).expect("update");
        return;
    }
    let dir = segment_dir();
    let path = dir.path().join("unlinked.shm");
    let mut slab = Slab::builder()
        .lifetime(FileLifetime::Unlinked)
        .create(&path)
        .expect("create");
    assert!(!path.exists(), "an Unlinked segment kept its path");
    assert!(Slab::attach(&path).is_err());
    let h = slab.root_or_insert("n", 40u64).expect("root");
    let fd = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        slab.as_fd().as_raw_fd()
    );
    for _ in 0..2 {
        let out = common::run_child(TEST, "joiner", &[&fd], MSG_TIMEOUT);
        common::assert_child_succeeded(&out);
    }
    assert_eq!(slab.read(h).expect("read"), 42);
    // Nothing to keep or remove: the path was never there after create.
    slab.remove_file_on_drop();
    assert!(!slab.detach().expect("detach"));
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}
