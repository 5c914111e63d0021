//! Full disk: growth on a 4 MiB tmpfs mounted by the test (when running as
//! root), and under `RLIMIT_FSIZE` (with `SIGXFSZ` ignored). Every class is
//! allocated until its growth fails; the failure must be a clean error
//! (`Error::Io` with `ENOSPC`/`EFBIG`, or `OutOfSpace`), never a `SIGBUS`;
//! afterwards the segment stays usable — frees and re-allocations of slots
//! that already exist work, existing data reads back intact, `check()`
//! passes — and another process that attaches afterwards works too. Creating
//! a new segment where there is no room fails the same clean way and leaves
//! no file.
//!
//! The filling runs in a child process (the test binary re-run), so a
//! signal is caught and reported; the tmpfs is unmounted afterwards even if
//! the test fails.

mod common;
mod hardening;

use common::live::XorShift;
use common::tmpfs::SmallTmpfs;
use hardening::*;
use shmslab::{Error, Slab, SlotRef};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CLASSES: [u64; 3] = [64, 1024, 16384];
const FILL_ROLE: &str = "fill-until-growth-fails";
const REATTACH_ROLE: &str = "attach-after-growth-failed";

/// A growth failure that is acceptable: no space, file too large, or the
/// segment's own cap.
fn clean_growth_error(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => {
            matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EFBIG)
            )
        }
        Error::OutOfSpace { .. } => true,
        _ => false,
    }
}

/// Live slots, saved for the process that attaches afterwards.
fn save(path: &Path, live: &[(SlotRef, u64, usize)]) {
    let mut out = Vec::new();
    for (h, key, len) in live {
        out.extend_from_slice(&h.to_bytes());
        out.extend_from_slice(&key.to_ne_bytes());
        out.extend_from_slice(&(*len as u64).to_ne_bytes());
    }
    std::fs::write(path, out).expect("save the handles");
}

fn load(path: &Path) -> Vec<(SlotRef, u64, usize)> {
    let b = std::fs::read(path).expect("the handles");
    b.chunks_exact(32)
        .map(|c| {
            (
                SlotRef::from_bytes(c[..16].try_into().unwrap()),
                get(c, 16),
                get(c, 24) as usize,
            )
        })
        .collect()
}

fn verify(slab: &Slab, live: &[(SlotRef, u64, usize)]) -> usize {
    let mut buf = vec![0u8; 16384];
    for (h, key, len) in live {
        slab.read_bytes(common::whole(*h), 0, &mut buf[..*len])
            .unwrap_or_else(|e| panic!("existing slot {h:?} unreadable: {e}"));
        assert!(
            buf[..*len] == stamp(*len, *key)[..],
            "existing slot {h:?} lost its data"
        );
    }
    live.len()
}

/// In the child: creates the segment, fills every class until its growth
/// fails, then checks that the segment still works.
fn fill_until_growth_fails(path: &Path, handles: &Path) {
    let mut slab = Slab::builder()
        .classes(&CLASSES)
        .initial_size(1 << 20)
        .create(path)
        .expect("create the segment");
    slab.keep_file();
    let root = slab.root_or_insert("stats", [1u64; 4]).expect("root");
    let mut live: Vec<(SlotRef, u64, usize)> = Vec::new();
    let mut key = 1u64;
    // The largest class first (it takes the space in big steps), then the
    // others until their growth fails too.
    for &size in CLASSES.iter().rev() {
        let size = size as usize;
        let mut n = 0u64;
        let err = loop {
            match slab.alloc_bytes(size) {
                Ok(h) => {
                    key += 1;
                    slab.write_bytes(h, 0, &stamp(size, key)).expect("write");
                    live.push((h.raw(), key, size));
                    n += 1;
                    assert!(n < 10_000_000, "growth never failed");
                }
                Err(e) => break e,
            }
        };
        let file_len = std::fs::metadata(path).unwrap().len();
        say(
            "growth-failed",
            format!("class {size}: {n} slots, then {err:?} (file {file_len} bytes)"),
        );
        assert!(
            clean_growth_error(&err),
            "class {size}: growth failed with {err:?}"
        );
        // The same request fails the same clean way again.
        let again = slab.alloc_bytes(size).expect_err("still full");
        assert!(clean_growth_error(&again), "{again:?}");
    }
    say("allocated", live.len());
    assert_eq!(verify(&slab, &live), live.len());
    // Frees and re-allocations of slots that exist work.
    let mut rng = XorShift::new(9);
    let mut reused = 0;
    for round in 0..3 {
        let mut freed_sizes = Vec::new();
        for _ in 0..30 {
            let i = rng.below(live.len() as u64) as usize;
            let (h, _, len) = live.swap_remove(i);
            slab.free(h).expect("free");
            freed_sizes.push(len);
        }
        for len in freed_sizes {
            let h = slab
                .alloc_bytes(len)
                .unwrap_or_else(|e| panic!("round {round}: re-allocating a freed {len}: {e}"));
            key += 1;
            slab.write_bytes(h, 0, &stamp(len, key)).unwrap();
            live.push((h.raw(), key, len));
            reused += 1;
        }
    }
    say("reused", reused);
    assert_eq!(verify(&slab, &live), live.len());
    assert_eq!(slab.read(root).unwrap(), [1u64; 4]);
    slab.update(root, |v| v[0] = 2).unwrap();
    let report = slab.check().expect("check");
    assert!(report.is_consistent(), "{:?}", report.findings);
    say("check", "consistent");
    save(handles, &live);
    // Creating another segment where there is no room fails cleanly too,
    // and leaves no file behind.
    let other = path.with_extension("other");
    match Slab::builder().initial_size(8 << 20).create(&other) {
        Ok(_) => panic!("an 8 MiB segment was created with no room for it"),
        Err(e) => {
            assert!(clean_growth_error(&e), "create: {e:?}");
            say("create-failed", format!("{e}"));
        }
    }
    assert!(!other.exists(), "a failed create left its file");
}

/// In the child: attaches to the filled segment and uses it.
fn attach_afterwards(path: &Path, handles: &Path) {
    let slab = Slab::attach(path).expect("attach after growth failed");
    let mut live = load(handles);
    assert_eq!(verify(&slab, &live), live.len());
    let root = slab.root::<[u64; 4]>("stats").unwrap().expect("the root");
    assert_eq!(slab.read(root).unwrap()[0], 2);
    let mut reused = 0;
    for _ in 0..50 {
        let (h, _, len) = live.pop().expect("slots");
        slab.free(h).expect("free another process's slot");
        let h2 = slab.alloc_bytes(len).expect("re-allocate");
        slab.write_bytes(h2, 0, &stamp(len, 77)).unwrap();
        live.push((h2.raw(), 77, len));
        reused += 1;
    }
    assert_eq!(verify(&slab, &live), live.len());
    let report = slab.check().expect("check");
    assert!(report.is_consistent(), "{:?}", report.findings);
    say(
        "reattached",
        format!("{} slots intact, {reused} re-used", live.len()),
    );
}

/// Runs `role` for `test` in a child and returns its messages; panics (with
/// the child's output) unless it exited cleanly, naming a signal if one
/// killed it.
fn child(test: &str, role: &str, args: &[&str]) -> Vec<(String, String)> {
    let out = common::run_child(test, role, args, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    common::assert_child_succeeded(&out);
    messages(&stdout)
}

fn child_part() -> bool {
    if let Some(args) = common::child_args(FILL_ROLE) {
        if args.get(2).map(String::as_str) == Some("rlimit") {
            limit_file_size(args[3].parse().unwrap());
        }
        fill_until_growth_fails(Path::new(&args[0]), Path::new(&args[1]));
        return true;
    }
    if let Some(args) = common::child_args(REATTACH_ROLE) {
        attach_afterwards(Path::new(&args[0]), Path::new(&args[1]));
        return true;
    }
    false
}

fn print(what: &str, msgs: &[(String, String)]) {
    for (k, p) in msgs {
        println!("{what}: {k} {p}");
    }
}

/// Both halves: fill in one child, attach in another.
fn fill_then_reattach(test: &str, seg: &Path, handles: &Path, mode: &[&str]) {
    let mut args = vec![seg.to_str().unwrap(), handles.to_str().unwrap()];
    args.extend_from_slice(mode);
    let msgs = child(test, FILL_ROLE, &args);
    print("fill", &msgs);
    assert!(msgs.iter().any(|(k, _)| k == "check"), "the fill completed");
    let msgs = child(
        test,
        REATTACH_ROLE,
        &[seg.to_str().unwrap(), handles.to_str().unwrap()],
    );
    print("attach afterwards", &msgs);
    assert!(msgs.iter().any(|(k, _)| k == "reattached"));
}

#[test]
fn growth_on_a_full_tmpfs_fails_cleanly_and_the_segment_stays_usable() {
    if child_part() {
        return;
    }
    let Some(fs) = SmallTmpfs::mount_or_skip("4m") else {
        return;
    };
    let handles_dir = tempfile::tempdir().unwrap();
    let seg: PathBuf = fs.path().join("seg.shm");
    fill_then_reattach(
        "growth_on_a_full_tmpfs_fails_cleanly_and_the_segment_stays_usable",
        &seg,
        &handles_dir.path().join("handles"),
        &[],
    );
    let len = std::fs::metadata(&seg).unwrap().len();
    println!("full tmpfs: segment file is {len} bytes on a 4 MiB tmpfs");
    assert!(len <= 4 << 20);
    drop(fs);
}

// ---------------------------------------------------------------------------
// RLIMIT_FSIZE.
// ---------------------------------------------------------------------------

/// In a child: caps the size of files this process may write, and ignores
/// `SIGXFSZ` so exceeding it is an `EFBIG` error rather than death.
fn limit_file_size(bytes: u64) {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    let old = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    assert_ne!(old, libc::SIG_ERR, "ignore SIGXFSZ");
    let lim = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: `lim` is a valid rlimit for the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn growth_past_rlimit_fsize_fails_cleanly_and_the_segment_stays_usable() {
    if child_part() {
        return;
    }
    let dir = common::live::segment_dir();
    let seg = dir.path().join("seg.shm");
    let limit = 3u64 << 20;
    fill_then_reattach(
        "growth_past_rlimit_fsize_fails_cleanly_and_the_segment_stays_usable",
        &seg,
        &dir.path().join("handles"),
        &["rlimit", &limit.to_string()],
    );
    let len = std::fs::metadata(&seg).unwrap().len();
    println!("RLIMIT_FSIZE {limit}: segment file is {len} bytes");
    assert!(len <= limit);
}
