//! The few operating-system calls the crate makes beyond what memmap2 and
//! std give: disk reservation, open-file-description locks, and process
//! identity. Linux only: OFD locks (`F_OFD_SETLK`) are what lets the kernel
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

/// Whether another open file description holds a lock on `byte`.
pub(crate) fn ofd_is_locked(file: &File, byte: u64) -> io::Result<bool> {
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

/// Whether process `pid` that started at `start_time` still exists.
pub(crate) fn process_alive(pid: u32, start_time: u64) -> bool {
    process_start_time(pid) == Some(start_time)
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
        assert!(process_alive(pid, t));
        assert!(!process_alive(pid, t + 1));
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
    fn reserve_space_extends_the_file() {
        let f = tempfile::tempfile().unwrap();
        reserve_space(&f, 0, 10_000).unwrap();
        assert_eq!(file_len(&f).unwrap(), 10_000);
        reserve_space(&f, 4096, 100).unwrap();
        assert_eq!(file_len(&f).unwrap(), 10_000);
    }
}
