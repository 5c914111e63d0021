//! The few operating-system calls the crate makes beyond what memmap2 and
//! std give: disk reservation, open-file-description locks, and process
//! identity (recorded in the peer table for display). Linux only: OFD locks (`F_OFD_SETLK`) are what lets the kernel
//! tell us that a peer died, and they have no portable equivalent.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Makes `[offset, offset + len)` of `file` backed by real disk (or tmpfs)
/// blocks and the file at least `offset + len` long, so a later store into a
/// mapping of that range cannot fault with `SIGBUS` for want of space.
///
/// A full disk, a quota, or `RLIMIT_FSIZE` surface here as an error.
pub(crate) fn reserve_space(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => {
            reserve_by_writing(file, offset, len)
        }
        Err(e) => Err(e.into()),
    }
}

/// Fallback for filesystems without `fallocate`: write one zero byte into each
/// block of the range that lies past the current end of the file (what glibc's
/// `posix_fallocate` emulation does), so the blocks are allocated now.
fn reserve_by_writing(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let end = offset
        .checked_add(len)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let old_len = file.metadata()?.len();
    if end <= old_len {
        return Ok(());
    }
    let block = 4096u64;
    let mut at = old_len.max(offset);
    while at < end {
        file.write_all_at(&[0], at)?;
        at = (at / block + 1) * block;
    }
    file.write_all_at(&[0], end - 1)
}

/// Makes every byte of `[offset, offset + len)` — bytes the file already
/// has — backed by a block, without changing the file's length. A hole (a
/// sparse copy, a grower that did not reserve) only gets its block at the
/// first store through a mapping, and where the disk is full that store
/// raises `SIGBUS`; here it is an `ENOSPC` error instead.
///
/// Where the blocks exist this only walks the file's block map (on tmpfs it
/// also zeroes pages reserved but never touched, which their first touch
/// would do anyway). It never changes data: `fallocate` leaves allocated
/// bytes alone, so a peer storing into the range meanwhile loses nothing.
pub(crate) fn fill_holes(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, offset, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => {
            // Without fallocate a hole can only be filled by writing zeros
            // into it, which would overwrite a peer's store made meanwhile:
            // refuse a file that has one.
            match first_hole(file, offset, len)? {
                None => Ok(()),
                Some(at) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "the file has a hole at byte {at} (a sparse copy?) and this filesystem \
                         cannot allocate it (no fallocate); copy the file without holes"
                    ),
                )),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `[offset, offset + len)` of `file` may hold a hole (a sparse
/// copy, or a grower that did not reserve), so that filling must be tried.
///
/// Fewer 512-byte blocks than the length means a hole somewhere. Where
/// there are enough, tmpfs has none: it counts only the file's pages in
/// `st_blocks`. Other filesystems count metadata too (ext4 extent-tree and
/// xattr blocks), which can make up for a small hole, so there the range is
/// asked with `lseek(SEEK_HOLE)` (which reports ext4's unwritten, reserved
/// extents as holes too: those are filled for nothing, harmlessly).
///
/// `space` is the file's [`FileSpace`] from an fstat the caller has made
/// anyway (attach, observing growth), so the question costs no second one.
pub(crate) fn may_have_holes(
    file: &File,
    space: FileSpace,
    offset: u64,
    len: u64,
) -> io::Result<bool> {
    if space.allocated < space.len {
        return Ok(true);
    }
    if is_tmpfs(file)? {
        return Ok(false);
    }
    Ok(first_hole(file, offset, len)?.is_some())
}

fn is_tmpfs(file: &File) -> io::Result<bool> {
    let fs = rustix::fs::fstatfs(file)?;
    // `f_type` and the constant have different integer types on some targets.
    #[allow(clippy::unnecessary_cast)]
    Ok(fs.f_type as i64 == libc::TMPFS_MAGIC as i64)
}

/// The first hole in `[offset, offset + len)` by `lseek(SEEK_HOLE)`, or
/// `None` (also where the filesystem cannot tell). Moves the file offset,
/// which the crate does not use, and puts it back.
fn first_hole(file: &File, offset: u64, len: u64) -> io::Result<Option<u64>> {
    use rustix::fs::{SeekFrom, seek};
    let was = seek(file, SeekFrom::Current(0))?;
    let found = seek(file, SeekFrom::Hole(offset));
    seek(file, SeekFrom::Start(was))?;
    match found {
        Ok(at) if at < offset.saturating_add(len) => Ok(Some(at)),
        Ok(_) | Err(rustix::io::Errno::NXIO) | Err(rustix::io::Errno::INVAL) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Bytes of `file` that reading through a mapping would have to allocate:
/// on tmpfs a read of a hole allocates a page, and faults with `SIGBUS` when
/// the tmpfs is full; on other filesystems a hole reads as zeros without a
/// block, so this is 0 there. tmpfs counts every page it holds for the file
/// in `st_blocks` (pages reserved but never touched included), so fewer
/// blocks than the length means holes.
pub(crate) fn unbacked_on_read(file: &File) -> io::Result<u64> {
    if !is_tmpfs(file)? {
        return Ok(0);
    }
    let st = rustix::fs::fstat(file)?;
    let len = (st.st_size as u64).div_ceil(page_size()) * page_size();
    Ok(len.saturating_sub(st.st_blocks as u64 * 512))
}

/// A file's length and the bytes its blocks hold (`st_blocks` × 512), from
/// one `fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileSpace {
    pub len: u64,
    pub allocated: u64,
}

impl FileSpace {
    /// From metadata already read (`File::metadata`).
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileSpace {
        use std::os::unix::fs::MetadataExt;
        FileSpace {
            len: meta.len(),
            allocated: meta.blocks().saturating_mul(512),
        }
    }
}

/// The file's [`FileSpace`], from `fstat`.
pub(crate) fn file_space(file: &impl AsFd) -> io::Result<FileSpace> {
    let st = rustix::fs::fstat(file)?;
    Ok(FileSpace {
        len: st.st_size as u64,
        allocated: (st.st_blocks as u64).saturating_mul(512),
    })
}

/// The file's current length, from `fstat`.
pub(crate) fn file_len(file: &impl AsFd) -> io::Result<u64> {
    Ok(rustix::fs::fstat(file)?.st_size as u64)
}

/// The system page size.
pub(crate) fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// The result of trying to take an OFD lock without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TryLock {
    /// We hold it now.
    Acquired,
    /// Another open file description holds it.
    Busy,
}

fn ofd_flock(kind: libc::c_short, byte: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid
    // value; the fields that matter are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    fl.l_pid = 0; // required to be 0 for OFD locks
    fl
}

fn fcntl_lock(file: &File, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<()> {
    loop {
        // SAFETY: `file` is an open descriptor for the duration of the call and
        // `fl` points to a valid, initialised `flock` that the kernel may write.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, fl as *mut libc::flock) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Tries to take the exclusive OFD lock on one byte without waiting.
pub(crate) fn ofd_try_lock(file: &File, byte: u64) -> io::Result<TryLock> {
    if let Some(errno) = crate::fault::ofd_fault(crate::fault::OfdCall::Lock) {
        return Err(io::Error::from_raw_os_error(errno));
    }
    let mut fl = ofd_flock(libc::F_WRLCK as libc::c_short, byte);
    match fcntl_lock(file, libc::F_OFD_SETLK, &mut fl) {
        Ok(()) => Ok(TryLock::Acquired),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
            Ok(TryLock::Busy)
        }
        Err(e) => Err(e),
    }
}

/// Releases an OFD lock taken with [`ofd_try_lock`].
pub(crate) fn ofd_unlock(file: &File, byte: u64) -> io::Result<()> {
    let mut fl = ofd_flock(libc::F_UNLCK as libc::c_short, byte);
    fcntl_lock(file, libc::F_OFD_SETLK, &mut fl)
}

/// Releases every OFD lock `file`'s open file description holds.
pub(crate) fn ofd_unlock_all(file: &File) -> io::Result<()> {
    let mut fl = ofd_flock(libc::F_UNLCK as libc::c_short, 0);
    fl.l_len = 0; // to the end of the lock space
    fcntl_lock(file, libc::F_OFD_SETLK, &mut fl)
}

/// Whether another open file description holds a lock on `byte`.
pub(crate) fn ofd_is_locked(file: &File, byte: u64) -> io::Result<bool> {
    if let Some(errno) = crate::fault::ofd_fault(crate::fault::OfdCall::Query) {
        return Err(io::Error::from_raw_os_error(errno));
    }
    let mut fl = ofd_flock(libc::F_WRLCK as libc::c_short, byte);
    fcntl_lock(file, libc::F_OFD_GETLK, &mut fl)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// This process's id.
pub(crate) fn current_pid() -> u32 {
    std::process::id()
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`): with the pid, it names one process even after the pid
/// is recycled. `None` when the process does not exist.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain
    // spaces and parentheses: the fields we want follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts with field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The start time of this process, whose pid is `pid` (the caller has it),
/// read once per process (a forked child has another pid and reads its own).
pub(crate) fn own_start_time(pid: u32) -> Option<u64> {
    use std::sync::Mutex;
    static CACHED: Mutex<Option<(u32, Option<u64>)>> = Mutex::new(None);
    let mut cached = CACHED.lock().unwrap_or_else(|e| e.into_inner());
    match *cached {
        Some((p, t)) if p == pid => t,
        _ => {
            let t = process_start_time(pid);
            *cached = Some((pid, t));
            t
        }
    }
}

/// Opens a new open file description of the file behind `fd` (through
/// `/proc/self/fd`), so that OFD locks taken on it are ours alone even when
/// `fd` was received from another process with `SCM_RIGHTS`.
pub(crate) fn reopen(fd: &impl AsRawFd) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

// Syscalls Miri does not model (OFD `fcntl`, `fallocate`, `/proc`): these
// run natively only.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_known_and_stable() {
        let pid = current_pid();
        let t = process_start_time(pid).expect("own /proc/self/stat");
        assert_eq!(process_start_time(pid), Some(t));
        assert_eq!(own_start_time(pid), Some(t));
    }

    #[test]
    fn ofd_locks_conflict_between_descriptions_not_within_one() {
        let f = tempfile::tempfile().unwrap();
        let g = reopen(&f).unwrap();
        assert_eq!(ofd_try_lock(&f, 1 << 40).unwrap(), TryLock::Acquired);
        // Same description: re-taking is not a conflict.
        assert_eq!(ofd_try_lock(&f, 1 << 40).unwrap(), TryLock::Acquired);
        assert_eq!(ofd_try_lock(&g, 1 << 40).unwrap(), TryLock::Busy);
        assert!(ofd_is_locked(&g, 1 << 40).unwrap());
        ofd_unlock(&f, 1 << 40).unwrap();
        assert!(!ofd_is_locked(&g, 1 << 40).unwrap());
        assert_eq!(ofd_try_lock(&g, 1 << 40).unwrap(), TryLock::Acquired);
    }

    #[test]
    fn fill_holes_backs_a_sparse_range_and_keeps_the_length() {
        use std::os::unix::fs::MetadataExt;
        let f = tempfile::tempfile().unwrap();
        f.set_len(1 << 20).unwrap();
        let backed = |f: &File| f.metadata().unwrap().blocks() * 512;
        assert!(backed(&f) < 1 << 20, "set_len made no hole");
        fill_holes(&f, 4096, 64 << 10).unwrap();
        assert!(backed(&f) >= 64 << 10);
        fill_holes(&f, 0, 1 << 20).unwrap();
        assert!(backed(&f) >= 1 << 20);
        assert_eq!(file_len(&f).unwrap(), 1 << 20);
    }

    #[test]
    fn first_hole_finds_the_hole_after_written_bytes() {
        use std::os::unix::fs::FileExt;
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(&[1; 8192], 0).unwrap();
        f.set_len(1 << 20).unwrap();
        assert_eq!(first_hole(&f, 0, 4096).unwrap(), None);
        assert_eq!(first_hole(&f, 0, 1 << 20).unwrap(), Some(8192));
    }

    /// A hole that the file's metadata blocks make up for in `st_blocks`:
    /// reserved blocks alternating with written ones make ext4 keep an
    /// extent tree (a block of its own), and one block is left a hole.
    #[test]
    fn a_hole_hidden_by_metadata_blocks_is_still_seen() {
        use std::os::unix::fs::FileExt;
        const B: u64 = 4096;
        let f = tempfile::tempfile().unwrap();
        let n = 256;
        f.set_len(n * B).unwrap();
        reserve_space(&f, 0, 100 * B).unwrap();
        reserve_space(&f, 101 * B, (n - 101) * B).unwrap();
        for i in (0..n).step_by(2).filter(|&i| i != 100) {
            f.write_all_at(&[1; B as usize], i * B).unwrap();
        }
        f.sync_all().unwrap();
        let st = rustix::fs::fstat(&f).unwrap();
        eprintln!(
            "blocks {} of {} bytes",
            st.st_blocks as u64 * 512,
            st.st_size
        );
        assert!(may_have_holes(&f, file_space(&f).unwrap(), 0, n * B).unwrap());
        // Once filled, the range has no real hole (on tmpfs: none at all).
        fill_holes(&f, 0, n * B).unwrap();
        if is_tmpfs(&f).unwrap() {
            assert!(!may_have_holes(&f, file_space(&f).unwrap(), 0, n * B).unwrap());
        }
    }

    #[test]
    fn reserve_space_extends_the_file() {
        let f = tempfile::tempfile().unwrap();
        reserve_space(&f, 0, 10_000).unwrap();
        assert_eq!(file_len(&f).unwrap(), 10_000);
        reserve_space(&f, 4096, 100).unwrap();
        assert_eq!(file_len(&f).unwrap(), 10_000);
    }
}
