//! Segment files with holes on a full filesystem: a sparse copy
//! (`cp --sparse=always`) attached there, and a range another process grew
//! without reserving its blocks, seen later. A store into a hole needs a
//! block; on a full filesystem the kernel has none to give and raises
//! `SIGBUS`. Attach and observing growth must reserve the blocks first, so a
//! full disk is a clean `Error::Io` (`fallocate`, `ENOSPC`) — the error
//! growth gives (tests/full_disk.rs) — and with room again the same file
//! attaches and every byte can be written.
//!
//! Each scenario runs in a child process (the test binary re-run), so a
//! signal is caught and named. The tests mount a small tmpfs and so need
//! root: without it they print `SKIPPED`, or fail under
//! `SHMSLAB_REQUIRE_ROOT_TESTS=1` (as `.ci/run` sets).

mod common;
mod hardening;

use common::tmpfs::{SmallTmpfs, fill};
use hardening::{extents, messages, say, stamp};
use shmslab::region::{FileCleanup, MmapRegion};
use shmslab::{Error, Slab, SlotRef};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ROLE: &str = "sparse-scenario";
const CLASSES: [u64; 3] = [64, 1024, 16384];
const FILLER: &str = "filler";

/// The error growth gives on a full disk: `fallocate` failing with `ENOSPC`.
fn is_no_space(e: &Error) -> bool {
    matches!(e, Error::Io { op: "fallocate", source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
}

/// Bytes of `path` that have no block behind them.
fn unbacked_bytes(path: &Path) -> u64 {
    let m = std::fs::metadata(path).unwrap();
    m.len().saturating_sub(m.blocks() * 512)
}

/// Runs `scenario` in a child and returns its messages; panics, naming the
/// signal (`SIGBUS`), unless the child exited cleanly.
fn in_child(test: &str, scenario: &str, args: &[&str]) -> Vec<(String, String)> {
    let mut all = vec![scenario];
    all.extend_from_slice(args);
    let out = common::run_child(test, ROLE, &all, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{scenario} {args:?}: the child did not exit cleanly\n{}",
        common::describe(&out)
    );
    let msgs = messages(&String::from_utf8_lossy(&out.stdout));
    for (k, p) in &msgs {
        println!("{scenario}: {k} {p}");
    }
    msgs
}

fn said(msgs: &[(String, String)], key: &str) -> bool {
    msgs.iter().any(|(k, _)| k == key)
}

fn child_part() -> bool {
    let Some(args) = common::child_args(ROLE) else {
        return false;
    };
    let arg = |i: usize| PathBuf::from(&args[i]);
    match args[0].as_str() {
        "slab-attach" => slab_attach(&arg(1), args[2] == "full"),
        "inspect" => inspect(&arg(1), args[2] == "full"),
        "region-attach" => region_attach(&arg(1), args[2] == "full"),
        "region-observe" => region_observe(&arg(1)),
        "slab-observe" => slab_observe(&arg(1)),
        other => panic!("unknown scenario {other}"),
    }
    true
}

/// Allocates every slot the segment's extents still have free (no growth)
/// and writes each whole slot; returns how many.
fn write_every_free_slot(slab: &Slab) -> usize {
    let mut n = 0;
    for (c, k) in slab.stats().classes.iter().enumerate() {
        let size = k.slot_size as usize;
        let mut mine: Vec<(SlotRef, u64)> = Vec::new();
        for i in 0..k.free {
            let h = slab
                .alloc_bytes(size)
                .unwrap_or_else(|e| panic!("class {c}: slot {i} of {} free: {e}", k.free));
            let key = (c as u64) << 32 | i;
            slab.write_bytes(h, 0, &stamp(size, key)).unwrap();
            mine.push((h.raw(), key));
        }
        let mut buf = vec![0u8; size];
        for (h, key) in &mine {
            slab.read_bytes(common::whole(*h), 0, &mut buf).unwrap();
            assert!(buf == stamp(size, *key), "class {c}: a slot lost its data");
        }
        n += mine.len();
        for (h, _) in mine {
            slab.free(h).unwrap();
        }
    }
    n
}

/// In the child: attaches to the sparse copy; on a full filesystem that must
/// fail cleanly, with room it must work everywhere.
fn slab_attach(path: &Path, full: bool) {
    match Slab::attach(path) {
        Err(e) => {
            say("attach-failed", format!("{e:?}"));
            assert!(full, "attach with room failed: {e}");
            assert!(is_no_space(&e), "not the growth path's ENOSPC: {e:?}");
        }
        Ok(slab) => {
            say("attached", "");
            // Today: the first store into a hole raises SIGBUS here.
            let n = write_every_free_slot(&slab);
            say("wrote", format!("{n} slots"));
            assert!(!full, "attached a file with holes on a full filesystem");
            assert_eq!(
                slab.root::<[u64; 4]>("stats")
                    .unwrap()
                    .map(|r| slab.read(r).unwrap()),
                Some([7; 4])
            );
            let report = slab.check().unwrap();
            assert!(report.is_consistent(), "{:?}", report.findings);
            say("consistent", "");
        }
    }
}

/// In the child: the read-only inspector, which cannot reserve blocks; on
/// tmpfs even a read of a hole needs a page.
fn inspect(path: &Path, full: bool) {
    match shmslab::inspect(path) {
        Err(e) => {
            say("inspect-failed", format!("{e:?}"));
            assert!(full, "inspect with no holes failed: {e}");
        }
        Ok(snap) => {
            say("inspected", format!("{} classes", snap.classes.len()));
            assert!(!full, "inspected a file with holes on a full tmpfs");
            assert!(snap.is_consistent(), "{:?}", snap.findings);
        }
    }
}

/// In the child: maps a file that is all hole, by path and by descriptor.
fn region_attach(path: &Path, full: bool) {
    let len = std::fs::metadata(path).unwrap().len() as usize;
    let attach = |how: &str| match how {
        "attach" => MmapRegion::attach(path),
        _ => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            MmapRegion::attach_fd(f.into(), len)
        }
    };
    for how in ["attach", "attach_fd"] {
        match attach(how) {
            Err(e) => {
                say("attach-failed", format!("{how}: {e:?}"));
                assert!(full, "{how} with room failed: {e}");
                assert!(
                    is_no_space(&e),
                    "{how}: not the growth path's ENOSPC: {e:?}"
                );
            }
            Ok(region) => {
                say("attached", how);
                for at in (0..region.len()).step_by(4096) {
                    region.region().write(at, &[0xA5; 8]).unwrap();
                }
                say("wrote", how);
                assert!(
                    !full,
                    "{how}: mapped a file with holes on a full filesystem"
                );
            }
        }
    }
}

/// In the child: a region sees growth that another grower made without
/// reserving blocks (the file extended with `ftruncate`), on a full tmpfs.
fn region_observe(dir: &Path) {
    let path = dir.join("region.shm");
    let owner = MmapRegion::create(&path, 64 << 10, FileCleanup::Manual).unwrap();
    let other = MmapRegion::attach(&path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(256 << 10)
        .unwrap();
    fill(dir, FILLER);
    match other.check_and_remap() {
        Err(e) => {
            say("remap-failed", format!("{e:?}"));
            assert!(is_no_space(&e), "not the growth path's ENOSPC: {e:?}");
            assert_eq!(other.len(), 64 << 10, "a failed remap changed the length");
            other.region().write(0, &[1; 8]).unwrap();
        }
        Ok(grew) => {
            say("remapped", grew);
            // Today: SIGBUS at the first page past the old end.
            for at in ((64 << 10)..other.len()).step_by(4096) {
                other.region().write(at, &[0xA5; 8]).unwrap();
            }
            panic!("mapped a hole on a full filesystem and wrote it");
        }
    }
    // With room, the same growth is picked up and every page is writable.
    std::fs::remove_file(dir.join(FILLER)).unwrap();
    assert!(other.check_and_remap().unwrap());
    assert_eq!(other.len(), 256 << 10);
    for at in ((64 << 10)..other.len()).step_by(4096) {
        other.region().write(at, &[0xA5; 8]).unwrap();
    }
    assert!(owner.check_and_remap().unwrap());
    let mut b = [0u8; 8];
    owner.region().read(128 << 10, &mut b).unwrap();
    assert_eq!(b, [0xA5; 8]);
    say("remapped-with-room", "");
}

/// In the child: one `Slab` grows a class; a hole is punched in the new
/// extent's unused tail (a grower that did not reserve it); the filesystem
/// fills; another `Slab`, attached before the growth, then looks.
fn slab_observe(dir: &Path) {
    let path = dir.join("seg.shm");
    let grower = Slab::builder()
        .classes(&CLASSES)
        .initial_size(4096) // the header only: every extent extends the file
        .create(&path)
        .unwrap();
    let late = Slab::attach(&path).unwrap();
    let c = 0;
    let size = CLASSES[c] as usize;
    let mut held = Vec::new();
    while grower.stats().classes[c].extents < 2 {
        let h = grower.alloc_bytes(size).unwrap();
        grower.write_bytes(h, 0, &[0x3C; 64]).unwrap();
        held.push(h);
    }
    let bytes = std::fs::read(&path).unwrap();
    let all = extents(&bytes);
    let first = all.iter().find(|e| e.class == c && e.index == 0).unwrap();
    let e = all.iter().find(|e| e.class == c && e.index == 1).unwrap();
    // The slots of the new extent the grower has taken (allocated or in its
    // cache) come first; punch whole pages past their data.
    let taken = grower.stats().classes[c].in_use as usize - first.slots;
    let from = e.data_at(taken).next_multiple_of(4096);
    let to = e.offset + e.bytes;
    assert!(from < to, "no unused page in {e:?}");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // SAFETY: fallocate on a valid descriptor; punching zeroes bytes that
    // no slot has used yet.
    let rc = unsafe {
        use std::os::fd::AsRawFd;
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            from as i64,
            (to - from) as i64,
        )
    };
    assert_eq!(rc, 0, "punch a hole: {}", std::io::Error::last_os_error());
    assert!(unbacked_bytes(&path) >= (to - from) as u64);
    fill(dir, FILLER);
    match late.refresh() {
        Err(e) => {
            say("refresh-failed", format!("{e:?}"));
            assert!(is_no_space(&e), "not the growth path's ENOSPC: {e:?}");
            // An allocation that needs the new extent fails the same way.
            let e = late
                .alloc_bytes(64)
                .expect_err("the extent is not usable yet");
            assert!(is_no_space(&e), "alloc: {e:?}");
        }
        Ok(_) => {
            say("refreshed", "");
            // Today: SIGBUS once a slot lands in the hole.
            write_every_free_slot(&late);
            panic!("observed a hole on a full filesystem and wrote it");
        }
    }
    std::fs::remove_file(dir.join(FILLER)).unwrap();
    late.refresh().unwrap();
    let n = write_every_free_slot(&late);
    for h in held {
        let mut b = [0u8; 64];
        late.read_bytes(h, 0, &mut b).unwrap();
        assert_eq!(b, [0x3C; 64]);
        grower.free(h).unwrap();
    }
    let report = late.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.findings);
    say("refreshed-with-room", format!("{n} slots written"));
}

/// A segment with a root and some data, made where there is room.
fn make_segment(path: &Path) {
    let mut slab = Slab::builder()
        .classes(&CLASSES)
        .initial_size(512 << 10)
        .create(path)
        .unwrap();
    slab.keep_file();
    slab.root_or_insert("stats", [7u64; 4]).unwrap();
    for i in 0..20 {
        let h = slab.alloc_bytes(64).unwrap();
        slab.write_bytes(h, 0, &stamp(64, i)).unwrap();
        slab.persist(h).unwrap();
    }
}

#[test]
fn a_sparse_copy_on_a_full_filesystem_fails_to_attach_cleanly_and_attaches_with_room() {
    const NAME: &str =
        "a_sparse_copy_on_a_full_filesystem_fails_to_attach_cleanly_and_attaches_with_room";
    if child_part() {
        return;
    }
    let Some(fs) = SmallTmpfs::mount_or_skip("1m") else {
        return;
    };
    let src_dir = common::live::segment_dir();
    let src = src_dir.path().join("seg.shm");
    make_segment(&src);
    let copy = fs.path().join("seg.shm");
    let cp = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(&src)
        .arg(&copy)
        .status()
        .expect("run cp");
    assert!(cp.success(), "cp --sparse=always: {cp}");
    let holes = unbacked_bytes(&copy);
    println!(
        "sparse copy: {holes} of {} bytes are holes",
        std::fs::metadata(&copy).unwrap().len()
    );
    assert!(holes > 0, "cp made no holes: the test would prove nothing");
    fill(fs.path(), FILLER);

    let msgs = in_child(NAME, "inspect", &[copy.to_str().unwrap(), "full"]);
    assert!(said(&msgs, "inspect-failed"), "{msgs:?}");
    let msgs = in_child(NAME, "slab-attach", &[copy.to_str().unwrap(), "full"]);
    assert!(said(&msgs, "attach-failed"), "{msgs:?}");
    assert_eq!(
        unbacked_bytes(&copy),
        holes,
        "a failed attach changed the file"
    );

    std::fs::remove_file(fs.path().join(FILLER)).unwrap();
    let msgs = in_child(NAME, "slab-attach", &[copy.to_str().unwrap(), "room"]);
    assert!(said(&msgs, "consistent"), "{msgs:?}");
    assert_eq!(unbacked_bytes(&copy), 0, "attach left holes behind");
    let msgs = in_child(NAME, "inspect", &[copy.to_str().unwrap(), "room"]);
    assert!(said(&msgs, "inspected"), "{msgs:?}");
    drop(fs);
}

#[test]
fn a_file_with_holes_on_a_full_filesystem_fails_to_map_cleanly_and_maps_with_room() {
    const NAME: &str =
        "a_file_with_holes_on_a_full_filesystem_fails_to_map_cleanly_and_maps_with_room";
    if child_part() {
        return;
    }
    let Some(fs) = SmallTmpfs::mount_or_skip("1m") else {
        return;
    };
    let path = fs.path().join("holes.bin");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(256 << 10)
        .unwrap();
    fill(fs.path(), FILLER);
    let msgs = in_child(NAME, "region-attach", &[path.to_str().unwrap(), "full"]);
    assert_eq!(
        msgs.iter().filter(|(k, _)| k == "attach-failed").count(),
        2,
        "{msgs:?}"
    );
    std::fs::remove_file(fs.path().join(FILLER)).unwrap();
    let msgs = in_child(NAME, "region-attach", &[path.to_str().unwrap(), "room"]);
    assert_eq!(
        msgs.iter().filter(|(k, _)| k == "wrote").count(),
        2,
        "{msgs:?}"
    );
    assert_eq!(unbacked_bytes(&path), 0);
    drop(fs);
}

#[test]
fn growth_with_holes_seen_by_a_region_on_a_full_filesystem_fails_cleanly() {
    const NAME: &str = "growth_with_holes_seen_by_a_region_on_a_full_filesystem_fails_cleanly";
    if child_part() {
        return;
    }
    let Some(fs) = SmallTmpfs::mount_or_skip("1m") else {
        return;
    };
    let msgs = in_child(NAME, "region-observe", &[fs.path().to_str().unwrap()]);
    assert!(said(&msgs, "remap-failed"), "{msgs:?}");
    assert!(said(&msgs, "remapped-with-room"), "{msgs:?}");
    drop(fs);
}

#[test]
fn growth_with_holes_seen_by_a_slab_on_a_full_filesystem_fails_cleanly() {
    const NAME: &str = "growth_with_holes_seen_by_a_slab_on_a_full_filesystem_fails_cleanly";
    if child_part() {
        return;
    }
    let Some(fs) = SmallTmpfs::mount_or_skip("2m") else {
        return;
    };
    let msgs = in_child(NAME, "slab-observe", &[fs.path().to_str().unwrap()]);
    assert!(said(&msgs, "refresh-failed"), "{msgs:?}");
    assert!(said(&msgs, "refreshed-with-room"), "{msgs:?}");
    drop(fs);
}
