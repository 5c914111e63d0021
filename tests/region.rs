//! Integration tests of the region layer: `MmapRegion`, `RegionOptions`,
//! `FileCleanup` and the `Region` view.
//!
//! The first group ports the seed's `MmapRegion` tests to this crate's API;
//! the rest cover what the design added (exact modes, refusing existing
//! paths and symlinks, reservations, map generations, attach_fd bounds)
//! and run real second processes (the test binary re-executed, see
//! `common/mod.rs`) for shared writes, growth, and a file-size limit.

mod common;

use shmslab::Error;
use shmslab::region::{FileCleanup, MmapRegion, RegionOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

const PAGE: usize = 4096;
/// How long a process waits for the other's next step before giving up.
const HANDSHAKE: Duration = Duration::from_secs(20);
/// How long a child may run in all.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("region.shm");
    (dir, path)
}

/// `len` bytes of `region` at `offset`, or `None` if out of bounds.
fn read_at(region: &MmapRegion, offset: usize, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    region.region().read(offset, &mut buf)?;
    Some(buf)
}

fn write_at(region: &MmapRegion, offset: usize, bytes: &[u8]) {
    region
        .region()
        .write(offset, bytes)
        .unwrap_or_else(|| panic!("write of {} bytes at {offset} out of bounds", bytes.len()));
}

/// A read-write descriptor of the file at `path`, to attach through.
fn open_rw(path: impl AsRef<Path>) -> OwnedFd {
    std::fs::File::options()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the segment file read-write")
        .into()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

/// The I/O error kind inside an `Error::Io`, or a panic naming what it was.
fn io_kind(err: &Error) -> io::ErrorKind {
    match err {
        Error::Io { source, .. } => source.kind(),
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The seed's tests, ported.
// ---------------------------------------------------------------------------

#[test]
fn create_then_attach_maps_the_same_bytes() {
    let (_dir, path) = temp();
    let owner = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap();
    assert_eq!(owner.len(), PAGE);
    assert_eq!(owner.region().len(), PAGE);
    assert_eq!(owner.path(), path);
    assert!(path.exists());
    assert_eq!(file_len(&path), PAGE as u64);

    write_at(&owner, 0, &[0x42, 0x43]);

    let guest = MmapRegion::attach(&path).unwrap();
    assert_eq!(guest.len(), PAGE);
    assert_eq!(read_at(&guest, 0, 2).unwrap(), [0x42, 0x43]);
    // A fresh file reads as zeros everywhere else.
    assert!(
        read_at(&guest, 2, PAGE - 2)
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
}

#[test]
fn writes_through_one_mapping_are_seen_through_the_other() {
    let (_dir, path) = temp();
    let a = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap();
    let b = MmapRegion::attach(&path).unwrap();

    write_at(&b, 100, &[0xAB]);
    assert_eq!(read_at(&a, 100, 1).unwrap(), [0xAB]);

    write_at(&a, PAGE - 4, b"tail");
    assert_eq!(read_at(&b, PAGE - 4, 4).unwrap(), b"tail");
}

#[test]
fn created_file_is_owner_only_by_default() {
    let (_dir, path) = temp();
    let _r = MmapRegion::create(&path, 1024, FileCleanup::Manual).unwrap();
    assert_eq!(mode_of(&path), 0o600);
}

#[test]
fn mode_0o666_is_applied_exactly() {
    let (_dir, path) = temp();
    let _r = RegionOptions::new()
        .mode(0o666)
        .create(&path, 1024, FileCleanup::Manual)
        .unwrap();
    assert_eq!(mode_of(&path), 0o666);
}

const UMASK_TEST: &str = "requested_modes_are_applied_exactly_under_a_strict_umask";
const UMASK_ROLE: &str = "umask-077";

/// The umask is per process, so the strict one is set in a child (setting
/// it here would race with the other tests' file creation).
#[test]
fn requested_modes_are_applied_exactly_under_a_strict_umask() {
    if let Some(args) = common::child_args(UMASK_ROLE) {
        let dir = Path::new(&args[0]);
        // SAFETY: umask(2) only changes this process's file-creation mask.
        unsafe { libc::umask(0o077) };
        let keep = |mut r: MmapRegion| r.release_ownership();
        keep(MmapRegion::create(&dir.join("default.shm"), PAGE, FileCleanup::Manual).unwrap());
        for (name, mode) in [("666.shm", 0o666), ("640.shm", 0o640), ("604.shm", 0o604)] {
            keep(
                RegionOptions::new()
                    .mode(mode)
                    .create(&dir.join(name), PAGE, FileCleanup::Manual)
                    .unwrap(),
            );
        }
        // A plain file asks for 0o666: the umask makes it 0o600.
        std::fs::File::create(dir.join("control")).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_child(
        UMASK_TEST,
        UMASK_ROLE,
        &[dir.path().to_str().unwrap()],
        CHILD_TIMEOUT,
    );
    common::assert_child_succeeded(&out);
    let d = dir.path();
    assert_eq!(
        mode_of(&d.join("control")),
        0o600,
        "the umask was not in force"
    );
    assert_eq!(mode_of(&d.join("default.shm")), 0o600);
    assert_eq!(mode_of(&d.join("666.shm")), 0o666);
    assert_eq!(mode_of(&d.join("640.shm")), 0o640);
    assert_eq!(mode_of(&d.join("604.shm")), 0o604);
}

#[test]
fn zero_size_create_is_rejected_and_creates_nothing() {
    let (_dir, path) = temp();
    let err = MmapRegion::create(&path, 0, FileCleanup::Manual).unwrap_err();
    assert_eq!(io_kind(&err), io::ErrorKind::InvalidInput, "{err}");
    assert!(!path.exists());
}

#[test]
fn resize_grows_the_file_and_keeps_data() {
    let (_dir, path) = temp();
    let region = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap();
    write_at(&region, 0, &[0xAB]);
    assert!(read_at(&region, 5000, 1).is_none());

    region.resize(2 * PAGE).unwrap();
    assert_eq!(region.len(), 2 * PAGE);
    assert_eq!(file_len(&path), 2 * PAGE as u64);
    assert_eq!(read_at(&region, 0, 1).unwrap(), [0xAB]);
    // The new bytes are zeros and writable.
    assert_eq!(read_at(&region, 5000, 1).unwrap(), [0]);
    write_at(&region, 5000, &[0xCD]);
    assert_eq!(read_at(&region, 5000, 1).unwrap(), [0xCD]);
    write_at(&region, 2 * PAGE - 1, &[0xEF]);
    assert!(read_at(&region, 2 * PAGE, 1).is_none());
}

#[test]
fn shrinking_is_rejected_and_changes_nothing() {
    let (_dir, path) = temp();
    let region = MmapRegion::create(&path, 2 * PAGE, FileCleanup::Manual).unwrap();
    write_at(&region, 2 * PAGE - 1, &[7]);
    let err = region.resize(PAGE).unwrap_err();
    assert_eq!(io_kind(&err), io::ErrorKind::InvalidInput, "{err}");
    assert_eq!(region.len(), 2 * PAGE);
    assert_eq!(file_len(&path), 2 * PAGE as u64);
    assert_eq!(read_at(&region, 2 * PAGE - 1, 1).unwrap(), [7]);
}

#[test]
fn resize_to_the_current_size_is_a_no_op() {
    let (_dir, path) = temp();
    let region = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap();
    let generation = region.map_generation();
    region.resize(PAGE).unwrap();
    assert_eq!(region.len(), PAGE);
    assert_eq!(region.map_generation(), generation);
    assert_eq!(file_len(&path), PAGE as u64);
}

#[test]
fn check_and_remap_sees_growth_made_through_another_mapping() {
    let (_dir, path) = temp();
    let owner = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap();
    let guest = MmapRegion::attach(&path).unwrap();
    assert_eq!(guest.len(), PAGE);
    assert!(!guest.check_and_remap().unwrap(), "nothing grew yet");

    owner.resize(2 * PAGE).unwrap();
    assert_eq!(guest.len(), PAGE, "growth is picked up only when asked");
    assert!(guest.check_and_remap().unwrap());
    assert_eq!(guest.len(), 2 * PAGE);
    assert!(!guest.check_and_remap().unwrap(), "second check: no change");
    assert_eq!(guest.len(), 2 * PAGE);
}

#[test]
fn data_written_before_a_remap_is_seen_after_it_both_ways() {
    let (_dir, path) = temp();
    let owner = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap();
    let guest = MmapRegion::attach(&path).unwrap();

    write_at(&owner, 100, &[0x42]);
    assert_eq!(read_at(&guest, 100, 1).unwrap(), [0x42]);

    owner.resize(2 * PAGE).unwrap();
    guest.check_and_remap().unwrap();
    assert_eq!(read_at(&guest, 100, 1).unwrap(), [0x42]);

    write_at(&owner, 5000, &[0x99]);
    assert_eq!(read_at(&guest, 5000, 1).unwrap(), [0x99]);
    write_at(&guest, 6000, &[0x77]);
    assert_eq!(read_at(&owner, 6000, 1).unwrap(), [0x77]);
}

#[test]
fn owner_unlinks_the_file_on_drop() {
    let (_dir, path) = temp();
    {
        let _owner = MmapRegion::create(&path, 1024, FileCleanup::Manual).unwrap();
        assert!(path.exists());
    }
    assert!(!path.exists());
}

#[test]
fn attached_region_never_unlinks_the_file() {
    let (_dir, path) = temp();
    let owner = MmapRegion::create(&path, 1024, FileCleanup::Manual).unwrap();
    {
        let _guest = MmapRegion::attach(&path).unwrap();
        assert!(path.exists());
    }
    assert!(path.exists(), "a guest's drop removed the owner's file");
    drop(owner);
    assert!(!path.exists(), "the owner's drop left the file");
}

#[test]
fn auto_cleanup_unlinks_at_once_and_the_mapping_stays_usable() {
    let (_dir, path) = temp();
    let region = MmapRegion::create(&path, PAGE, FileCleanup::Auto).unwrap();
    assert!(!path.exists(), "FileCleanup::Auto left the path behind");
    assert_eq!(region.len(), PAGE);

    write_at(&region, 10, b"still here");
    assert_eq!(read_at(&region, 10, 10).unwrap(), b"still here");
    region.resize(2 * PAGE).unwrap();
    write_at(&region, PAGE + 10, b"grown");

    // Another mapping of the unlinked file, through a descriptor, sees both.
    let fd = open_rw(format!("/proc/self/fd/{}", region.as_raw_fd()));
    let other = MmapRegion::attach_fd(fd, 2 * PAGE).unwrap();
    assert_eq!(read_at(&other, 10, 10).unwrap(), b"still here");
    assert_eq!(read_at(&other, PAGE + 10, 5).unwrap(), b"grown");

    // Not owning the path, the region leaves a later file there alone.
    std::fs::write(&path, b"someone else's").unwrap();
    drop(region);
    drop(other);
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
}

#[test]
fn take_ownership_makes_an_attached_region_unlink_on_drop() {
    let (_dir, path) = temp();
    let mut owner = MmapRegion::create(&path, 1024, FileCleanup::Manual).unwrap();
    owner.release_ownership();
    let mut guest = MmapRegion::attach(&path).unwrap();
    guest.take_ownership();
    drop(owner);
    assert!(path.exists(), "the creator released ownership but unlinked");
    drop(guest);
    assert!(
        !path.exists(),
        "the guest took ownership but did not unlink"
    );
}

#[test]
fn release_ownership_keeps_the_file_after_the_creator_drops() {
    let (_dir, path) = temp();
    let mut owner = MmapRegion::create(&path, 1024, FileCleanup::Manual).unwrap();
    write_at(&owner, 0, b"kept");
    owner.release_ownership();
    drop(owner);
    assert!(path.exists());
    let again = MmapRegion::attach(&path).unwrap();
    assert_eq!(read_at(&again, 0, 4).unwrap(), b"kept");
}

#[test]
fn owner_does_not_unlink_a_file_that_replaced_its_own() {
    let (_dir, path) = temp();
    let owner = MmapRegion::create(&path, 1024, FileCleanup::Manual).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"a newcomer").unwrap();
    drop(owner);
    assert_eq!(std::fs::read(&path).unwrap(), b"a newcomer");
}

// ---------------------------------------------------------------------------
// Bounds of the view, attach errors.
// ---------------------------------------------------------------------------

#[test]
fn region_view_refuses_every_access_past_its_end() {
    let (_dir, path) = temp();
    let region = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap();
    let view = region.region();
    let mut one = [0u8; 1];
    assert!(view.read(PAGE - 1, &mut one).is_some());
    assert!(view.read(PAGE, &mut one).is_none());
    assert!(view.write(PAGE, &[1]).is_none());
    assert!(view.read(PAGE - 1, &mut [0u8; 2]).is_none());
    assert!(view.read(usize::MAX, &mut one).is_none(), "offset overflow");
    assert!(view.write(usize::MAX - 1, &[1, 2, 3]).is_none());
    assert!(view.read(0, &mut []).is_some());
    assert!(view.read(PAGE, &mut []).is_some());
    assert!(view.read(PAGE + 1, &mut []).is_none());
}

#[test]
fn attach_fd_longer_than_the_file_is_truncated_not_sigbus() {
    let (_dir, path) = temp();
    let _owner = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap();
    let fd = open_rw(&path);
    match MmapRegion::attach_fd(fd, 4 * PAGE) {
        Err(Error::Truncated { expected, actual }) => {
            assert_eq!(expected, 4 * PAGE as u64);
            assert_eq!(actual, PAGE as u64);
        }
        other => panic!("expected Error::Truncated, got {other:?}"),
    }
    // The exact size, and less, are fine.
    for size in [PAGE, 100] {
        let fd = open_rw(&path);
        let r = MmapRegion::attach_fd(fd, size).unwrap();
        assert_eq!(r.len(), size);
        assert_eq!(r.path(), Path::new(""));
    }
}

#[test]
fn attach_fd_of_zero_bytes_is_rejected() {
    let (_dir, path) = temp();
    let _owner = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap();
    let fd = open_rw(&path);
    let err = MmapRegion::attach_fd(fd, 0).unwrap_err();
    assert_eq!(io_kind(&err), io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn attaching_an_empty_file_is_an_empty_file_error() {
    let (_dir, path) = temp();
    std::fs::File::create(&path).unwrap();
    match MmapRegion::attach(&path) {
        Err(Error::EmptyFile { path: p }) => assert_eq!(p, path),
        other => panic!("expected Error::EmptyFile, got {other:?}"),
    }
}

#[test]
fn attaching_a_missing_file_is_not_found() {
    let (_dir, path) = temp();
    let err = MmapRegion::attach(&path).unwrap_err();
    assert_eq!(io_kind(&err), io::ErrorKind::NotFound, "{err}");
}

// ---------------------------------------------------------------------------
// Reservations and map generations.
// ---------------------------------------------------------------------------

#[test]
fn growth_inside_the_reservation_does_not_remap() {
    let (_dir, path) = temp();
    let region = RegionOptions::new()
        .reserve(1 << 20)
        .create(&path, PAGE, FileCleanup::Manual)
        .unwrap();
    assert_eq!(region.len(), PAGE);
    assert!(region.mapped_len() >= 1 << 20);
    let generation = region.map_generation();
    let base = region.region().as_ptr();
    write_at(&region, 0, b"first page");

    region.resize(16 * PAGE).unwrap();
    region.resize(1 << 20).unwrap();
    assert_eq!(region.len(), 1 << 20);
    assert_eq!(region.map_generation(), generation, "growth remapped");
    assert_eq!(region.region().as_ptr(), base, "the base moved");
    assert_eq!(read_at(&region, 0, 10).unwrap(), b"first page");
    write_at(&region, (1 << 20) - 1, &[1]);
    assert!(read_at(&region, 1 << 20, 1).is_none());
}

#[test]
fn growth_past_the_reservation_remaps_and_earlier_views_stay_readable() {
    let (_dir, path) = temp();
    let region = RegionOptions::new()
        .reserve(4 * PAGE as u64)
        .create(&path, PAGE, FileCleanup::Manual)
        .unwrap();
    let pattern: Vec<u8> = (0..PAGE).map(|i| (i * 7 % 251) as u8).collect();
    write_at(&region, 0, &pattern);
    let generation = region.map_generation();

    // A view taken before the remap...
    let old = region.region();
    region.resize(3 * PAGE).unwrap();
    assert_eq!(
        region.map_generation(),
        generation,
        "inside the reservation"
    );
    region.resize(16 * PAGE).unwrap();
    assert!(
        region.map_generation() > generation,
        "growth past it did not remap"
    );
    assert_eq!(region.len(), 16 * PAGE);
    assert!(region.mapped_len() >= 16 * PAGE);
    let new = region.region();
    assert_ne!(new.as_ptr(), old.as_ptr());

    // ...still reads the old bytes, and sees writes made through the new
    // mapping (both map the same file).
    let mut buf = vec![0u8; PAGE];
    old.read(0, &mut buf).expect("old view readable");
    assert_eq!(buf, pattern);
    new.write(8, b"via new").unwrap();
    let mut seven = [0u8; 7];
    old.read(8, &mut seven).unwrap();
    assert_eq!(&seven, b"via new");
    // The old view keeps its old length: the new bytes are not reachable by it.
    assert!(old.read(PAGE, &mut [0u8; 1]).is_none());
    new.write(15 * PAGE, b"end").unwrap();
}

#[test]
fn check_and_remap_inside_the_reservation_does_not_remap() {
    let (_dir, path) = temp();
    let owner = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap();
    let guest = RegionOptions::new().reserve(1 << 20).attach(&path).unwrap();
    let generation = guest.map_generation();
    owner.resize(8 * PAGE).unwrap();
    write_at(&owner, 7 * PAGE, b"grown by owner");
    assert!(guest.check_and_remap().unwrap());
    assert_eq!(guest.len(), 8 * PAGE);
    assert_eq!(guest.map_generation(), generation);
    assert_eq!(read_at(&guest, 7 * PAGE, 14).unwrap(), b"grown by owner");

    // An attached region without a reservation must remap for the same growth.
    let plain = MmapRegion::attach(&path).unwrap();
    owner.resize(16 * PAGE).unwrap();
    let g = plain.map_generation();
    assert!(plain.check_and_remap().unwrap());
    assert!(plain.map_generation() > g);
}

// ---------------------------------------------------------------------------
// Existing paths and symlinks.
// ---------------------------------------------------------------------------

#[test]
fn create_refuses_an_existing_file_and_leaves_it_untouched() {
    let (_dir, path) = temp();
    std::fs::write(&path, b"precious").unwrap();
    let err = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap_err();
    assert_eq!(io_kind(&err), io::ErrorKind::AlreadyExists, "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    // The same through RegionOptions, explicitly not replacing.
    let err = RegionOptions::new()
        .replace(false)
        .create(&path, PAGE, FileCleanup::Auto)
        .unwrap_err();
    assert_eq!(io_kind(&err), io::ErrorKind::AlreadyExists, "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn create_with_replace_replaces_an_existing_file() {
    let (_dir, path) = temp();
    std::fs::write(&path, b"old contents").unwrap();
    let region = RegionOptions::new()
        .replace(true)
        .create(&path, PAGE, FileCleanup::Manual)
        .unwrap();
    assert_eq!(region.len(), PAGE);
    assert_eq!(file_len(&path), PAGE as u64);
    assert!(read_at(&region, 0, 12).unwrap().iter().all(|&b| b == 0));
    assert_eq!(mode_of(&path), 0o600);
    // Replacing a path that does not exist is fine too.
    let (_d2, fresh) = temp();
    RegionOptions::new()
        .replace(true)
        .create(&fresh, PAGE, FileCleanup::Manual)
        .unwrap();
}

#[test]
fn create_refuses_a_dangling_symlink_and_creates_no_target() {
    let (dir, path) = temp();
    let target = dir.path().join("target-that-does-not-exist");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let err = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap_err();
    assert_eq!(io_kind(&err), io::ErrorKind::AlreadyExists, "{err}");
    assert!(!target.exists(), "create followed the symlink");
    assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
}

#[test]
fn create_refuses_a_symlink_to_an_existing_file_and_leaves_the_target_untouched() {
    let (dir, path) = temp();
    let target = dir.path().join("target");
    std::fs::write(&target, b"target bytes").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::metadata(&target).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();

    let err = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap_err();
    assert_eq!(io_kind(&err), io::ErrorKind::AlreadyExists, "{err}");
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"target bytes");
    assert_eq!(after.len(), before.len());
    assert_eq!(after.mode(), before.mode());
    assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
}

#[test]
fn create_with_replace_replaces_the_symlink_not_its_target() {
    let (dir, path) = temp();
    let target = dir.path().join("target");
    std::fs::write(&target, b"target bytes").unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let region = RegionOptions::new()
        .replace(true)
        .create(&path, PAGE, FileCleanup::Manual)
        .unwrap();
    assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"target bytes");
    drop(region);
    assert!(!path.exists());
    assert!(
        target.exists(),
        "dropping the region removed the old target"
    );
}

// ---------------------------------------------------------------------------
// Two real processes.
// ---------------------------------------------------------------------------

const TWO_PROC_TEST: &str = "two_processes_see_each_others_writes_and_growth";
const TWO_PROC_ROLE: &str = "region-peer";

/// Handshake bytes: each process bumps its own step counter after it has
/// written what the step promises (a fence orders the two).
const CHILD_STEP: usize = 0;
const PARENT_STEP: usize = 1;
const GROWN: usize = 16 * PAGE;

fn step_of(region: &MmapRegion, at: usize) -> u8 {
    fence(Ordering::SeqCst);
    read_at(region, at, 1).expect("step byte")[0]
}

fn set_step(region: &MmapRegion, at: usize, step: u8) {
    fence(Ordering::SeqCst);
    write_at(region, at, &[step]);
    fence(Ordering::SeqCst);
}

fn two_proc_child(path: &Path) {
    let region = MmapRegion::attach(path).expect("child: attach");
    assert_eq!(region.len(), PAGE, "child: attached length");
    assert_eq!(read_at(&region, 64, 12).unwrap(), b"parent-hello");
    write_at(&region, 128, b"child-hello");
    set_step(&region, CHILD_STEP, 1);

    assert!(
        common::wait_until(HANDSHAKE, || step_of(&region, PARENT_STEP) >= 1),
        "child: parent never reached step 1"
    );
    assert_eq!(read_at(&region, 192, 13).unwrap(), b"parent-second");
    region.resize(GROWN).expect("child: resize");
    write_at(&region, GROWN - 100, b"child-in-new-area");
    set_step(&region, CHILD_STEP, 2);

    assert!(
        common::wait_until(HANDSHAKE, || step_of(&region, PARENT_STEP) >= 2),
        "child: parent never reached step 2"
    );
    assert_eq!(
        read_at(&region, GROWN - 200, 18).unwrap(),
        b"parent-in-new-area"
    );
}

#[test]
fn two_processes_see_each_others_writes_and_growth() {
    if let Some(args) = common::child_args(TWO_PROC_ROLE) {
        two_proc_child(Path::new(&args[0]));
        return;
    }
    let (_dir, path) = temp();
    let region = MmapRegion::create(&path, PAGE, FileCleanup::Manual).unwrap();
    write_at(&region, 64, b"parent-hello");
    let child = common::spawn_child(TWO_PROC_TEST, TWO_PROC_ROLE, &[path.to_str().unwrap()]);

    let fail = |child, what: &str| -> ! {
        let out = common::wait_child(child, Duration::from_secs(10));
        panic!("parent: {what}\n{}", common::describe(&out));
    };

    if !common::wait_until(HANDSHAKE, || step_of(&region, CHILD_STEP) >= 1) {
        fail(child, "the child never reached step 1");
    }
    assert_eq!(read_at(&region, 128, 11).unwrap(), b"child-hello");
    write_at(&region, 192, b"parent-second");
    set_step(&region, PARENT_STEP, 1);

    if !common::wait_until(HANDSHAKE, || step_of(&region, CHILD_STEP) >= 2) {
        fail(child, "the child never reached step 2");
    }
    // The child grew the file; we see it only after check_and_remap.
    assert_eq!(region.len(), PAGE);
    assert!(read_at(&region, GROWN - 100, 1).is_none());
    assert_eq!(file_len(&path), GROWN as u64);
    assert!(region.check_and_remap().unwrap());
    assert_eq!(region.len(), GROWN);
    assert_eq!(
        read_at(&region, GROWN - 100, 17).unwrap(),
        b"child-in-new-area"
    );
    assert_eq!(read_at(&region, 64, 12).unwrap(), b"parent-hello");
    write_at(&region, GROWN - 200, b"parent-in-new-area");
    set_step(&region, PARENT_STEP, 2);

    let out = common::wait_child(child, CHILD_TIMEOUT);
    common::assert_child_succeeded(&out);
    assert!(path.exists(), "the child's drop removed the parent's file");
}

// ---------------------------------------------------------------------------
// Growth that hits RLIMIT_FSIZE.
// ---------------------------------------------------------------------------

const FSIZE_TEST: &str = "growth_past_rlimit_fsize_is_an_error_and_region_stays_usable";
const FSIZE_ROLE: &str = "rlimit-fsize";
const FSIZE_LIMIT: usize = 16 * PAGE;
const FSIZE_START: usize = 4 * PAGE;

/// What each exit code of the file-size child means.
const FSIZE_CODES: &[(i32, &str)] = &[
    (0, "all checks passed"),
    (2, "setting up the limit or the region failed"),
    (3, "growth up to the limit failed"),
    (4, "growth past the limit succeeded"),
    (
        5,
        "growth past the limit failed with something other than Error::Io(EFBIG)",
    ),
    (
        6,
        "the region's len() or map generation changed after the failed growth",
    ),
    (
        7,
        "old bytes were lost or unreadable after the failed growth",
    ),
    (8, "writing at old offsets failed after the failed growth"),
    (9, "a read past the old end was allowed"),
    (
        10,
        "the file's length on disk changed after the failed growth",
    ),
    (
        11,
        "create past the limit succeeded, failed wrongly, or left its file",
    ),
    (101, "the child panicked (see its stderr)"),
];

fn fsize_child(path: &Path, scratch: &Path) -> Result<(), (i32, String)> {
    let setup = |what: &str, e: &dyn std::fmt::Debug| (2, format!("{what}: {e:?}"));
    limit_file_size(FSIZE_LIMIT as u64);

    // One region attached to the parent's file (no reservation: growth
    // remaps), one created here with a reservation (growth does not remap).
    let attached = MmapRegion::attach(path).map_err(|e| setup("attach", &e))?;
    let reserved = RegionOptions::new()
        .reserve(1 << 20)
        .create(scratch, FSIZE_START, FileCleanup::Manual)
        .map_err(|e| setup("create", &e))?;
    write_at(&reserved, 0, b"reserved-before");

    for (name, region, grow_to_limit) in [
        ("attached", &attached, true),
        ("reserved", &reserved, false),
    ] {
        let fail = |code: i32, msg: String| (code, format!("{name}: {msg}"));
        if grow_to_limit {
            region
                .resize(FSIZE_LIMIT)
                .map_err(|e| fail(3, format!("resize to the limit: {e:?}")))?;
            write_at(region, FSIZE_LIMIT - 32, b"child-at-limit");
        }
        let len = region.len();
        let generation = region.map_generation();
        let disk = std::fs::metadata(region.path())
            .map(|m| m.len())
            .unwrap_or(0);
        let before = read_at(region, 0, len).expect("whole region");

        match region.resize(FSIZE_LIMIT + PAGE) {
            Ok(()) => {
                return Err(fail(
                    4,
                    format!("resize to {} succeeded", FSIZE_LIMIT + PAGE),
                ));
            }
            Err(Error::Io { ref source, .. }) if source.raw_os_error() == Some(libc::EFBIG) => {}
            Err(e) => return Err(fail(5, format!("{e:?}"))),
        }
        if region.len() != len || region.map_generation() != generation {
            return Err(fail(
                6,
                format!(
                    "len {} -> {}, map generation {generation} -> {}",
                    len,
                    region.len(),
                    region.map_generation()
                ),
            ));
        }
        if read_at(region, 0, len).as_deref() != Some(&before[..]) {
            return Err(fail(7, "contents differ".into()));
        }
        if region.region().write(len - 3, b"ok!").is_none()
            || region.region().write(0, b"X").is_none()
        {
            return Err(fail(8, "write refused".into()));
        }
        if read_at(region, len - 3, 3).as_deref() != Some(&b"ok!"[..]) {
            return Err(fail(8, "write not read back".into()));
        }
        if read_at(region, len, 1).is_some() || region.region().len() != len {
            return Err(fail(9, format!("view of {} bytes", region.region().len())));
        }
        let disk_after = std::fs::metadata(region.path())
            .map(|m| m.len())
            .unwrap_or(0);
        if disk_after != disk {
            return Err(fail(10, format!("{disk} -> {disk_after}")));
        }
        // A second attempt fails the same way (nothing was left half-done).
        if region.resize(2 * FSIZE_LIMIT).is_ok() || region.len() != len {
            return Err(fail(4, "second resize past the limit".into()));
        }
    }
    // Creating a region larger than the limit fails the same way and
    // leaves no file behind.
    let big = scratch.with_extension("big");
    match MmapRegion::create(&big, FSIZE_LIMIT + PAGE, FileCleanup::Manual) {
        Err(Error::Io { ref source, .. }) if source.raw_os_error() == Some(libc::EFBIG) => {}
        other => return Err((11, format!("create past the limit: {other:?}"))),
    }
    if big.exists() {
        return Err((11, "the failed create left its file behind".into()));
    }
    Ok(())
}

#[test]
fn growth_past_rlimit_fsize_is_an_error_and_region_stays_usable() {
    if let Some(args) = common::child_args(FSIZE_ROLE) {
        let code = match fsize_child(Path::new(&args[0]), Path::new(&args[1])) {
            Ok(()) => 0,
            Err((code, msg)) => {
                eprintln!("fsize child: {msg}");
                code
            }
        };
        std::process::exit(code);
    }
    let (dir, path) = temp();
    let scratch = dir.path().join("scratch.shm");
    let region = MmapRegion::create(&path, FSIZE_START, FileCleanup::Manual).unwrap();
    write_at(&region, 0, b"parent-before");
    let out = common::run_child(
        FSIZE_TEST,
        FSIZE_ROLE,
        &[path.to_str().unwrap(), scratch.to_str().unwrap()],
        CHILD_TIMEOUT,
    );
    let code = out.status.code();
    let meaning = FSIZE_CODES
        .iter()
        .find(|(c, _)| Some(*c) == code)
        .map_or("unknown", |(_, m)| m);
    assert_eq!(code, Some(0), "{meaning}\n{}", common::describe(&out));

    // The child grew the shared file to the limit, wrote there, and its
    // failed growth past the limit left the file at the limit.
    assert_eq!(file_len(&path), FSIZE_LIMIT as u64);
    assert!(region.check_and_remap().unwrap());
    assert_eq!(region.len(), FSIZE_LIMIT);
    assert_eq!(
        read_at(&region, FSIZE_LIMIT - 32, 14).unwrap(),
        b"child-at-limit"
    );
    assert_eq!(read_at(&region, 1, 12).unwrap(), b"arent-before");
    assert_eq!(read_at(&region, FSIZE_LIMIT - 3, 3).unwrap(), b"ok!");
    // The limit was the child's alone: the parent still grows past it.
    region.resize(2 * FSIZE_LIMIT).unwrap();
}

const SLAB_FSIZE_TEST: &str = "slab_growth_past_rlimit_fsize_is_an_error_and_the_slab_stays_usable";
const SLAB_FSIZE_ROLE: &str = "slab-rlimit-fsize";

/// Ignores SIGXFSZ and lowers this process's RLIMIT_FSIZE to `limit` bytes.
fn limit_file_size(limit: u64) {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler.
    let old = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    assert_ne!(old, libc::SIG_ERR, "signal: {}", io::Error::last_os_error());
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    lim.rlim_cur = limit as libc::rlim_t;
    // SAFETY: `lim` is a valid rlimit; lowering the soft limit affects only us.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// The same limit one layer up: a `Slab` whose class must grow past it gets
/// `Error::Io` (EFBIG) from the allocation, keeps every slot it had, and
/// goes on serving allocations from freed slots. Runs in a child (the limit
/// is per process); a panic or a signal there fails this test.
#[test]
fn slab_growth_past_rlimit_fsize_is_an_error_and_the_slab_stays_usable() {
    if let Some(args) = common::child_args(SLAB_FSIZE_ROLE) {
        limit_file_size(FSIZE_LIMIT as u64);
        let mut slab = shmslab::Slab::builder()
            .classes(&[64, 256])
            .roots(4)
            .peers(4)
            .initial_size(0)
            .create(&args[0])
            .expect("create under the limit");
        let mut live = Vec::new();
        let err = loop {
            match slab.alloc_bytes(16) {
                Ok(h) => {
                    slab.write_bytes(h, 0, &(live.len() as u64).to_ne_bytes())
                        .unwrap();
                    live.push(h);
                }
                Err(e) => break e,
            }
            assert!(live.len() < 100_000, "never hit the limit");
        };
        match &err {
            Error::Io { source, .. } => {
                assert_eq!(source.raw_os_error(), Some(libc::EFBIG), "{err}")
            }
            other => panic!("expected Error::Io(EFBIG), got {other:?}"),
        }
        assert!(!live.is_empty(), "no slot fitted under the limit");
        let file = std::fs::metadata(&args[0]).unwrap().len();
        assert!(file <= FSIZE_LIMIT as u64, "file grew to {file}");
        // Every slot is intact; a second try fails the same way.
        for (i, h) in live.iter().enumerate() {
            let mut back = [0u8; 8];
            slab.read_bytes(*h, 0, &mut back).unwrap();
            assert_eq!(u64::from_ne_bytes(back), i as u64);
        }
        assert!(matches!(slab.alloc_bytes(16), Err(Error::Io { .. })));
        // Freed slots are served again without growth.
        let freed = live.split_off(live.len() / 2);
        for h in freed {
            slab.free(h).unwrap();
        }
        let again = slab.alloc_bytes(16).expect("alloc from freed slots");
        slab.free(again).unwrap();
        let report = slab.check().unwrap();
        assert!(report.is_consistent(), "{:?}", report.findings);
        slab.keep_file();
        return;
    }
    let (_dir, path) = temp();
    let out = common::run_child(
        SLAB_FSIZE_TEST,
        SLAB_FSIZE_ROLE,
        &[path.to_str().unwrap()],
        CHILD_TIMEOUT,
    );
    common::assert_child_succeeded(&out);
    // The segment the child left is whole, and no larger than the limit.
    assert!(file_len(&path) <= FSIZE_LIMIT as u64);
    let slab = shmslab::Slab::attach(&path).expect("attach what the child left");
    let report = slab.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.findings);
    assert!(slab.stats().total_extents() >= 2);
}

/// A heap region whose size rounds past `usize::MAX` is refused, not a
/// 64-byte buffer with a huge length (found by review: safe writes then
/// landed outside the allocation).
#[test]
fn a_heap_region_too_large_to_exist_panics_instead_of_wrapping() {
    for (len, cap) in [(usize::MAX - 10, 0), (4096, usize::MAX)] {
        let made =
            std::panic::catch_unwind(|| shmslab::region::HeapRegion::with_capacity(len, cap));
        assert!(made.is_err(), "len {len} capacity {cap} was accepted");
    }
}
