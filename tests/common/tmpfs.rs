//! A small tmpfs, mounted by a test that runs as root, for what only a full
//! filesystem shows (growth failing with `ENOSPC`, holes that cannot be
//! filled).
//!
//! Without root (or where `mount` is refused) such a test skips, saying so;
//! with `SHMSLAB_REQUIRE_ROOT_TESTS=1` (set by `.ci/run`, which runs as
//! root) it fails instead, so a skip cannot pass unnoticed.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Set to `1` to make a test that cannot mount fail instead of skipping.
pub const REQUIRE_VAR: &str = "SHMSLAB_REQUIRE_ROOT_TESTS";

/// A tmpfs mounted on a temporary directory, unmounted on drop (lazily if
/// something still holds it).
pub struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    /// Mounts one of `size` (e.g. `"4m"`), or says why it cannot.
    pub fn mount(size: &str) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("shmslab-small-tmpfs-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
        let opts = CString::new(format!("size={size}")).unwrap();
        // SAFETY: all pointers are valid NUL-terminated strings for the call.
        let rc = unsafe {
            libc::mount(
                c"none".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(SmallTmpfs { dir })
    }

    /// [`mount`](Self::mount), or `None` after printing `SKIPPED: <why>`;
    /// panics instead when [`REQUIRE_VAR`] is `1`.
    pub fn mount_or_skip(size: &str) -> Option<Self> {
        match Self::mount(size) {
            Ok(fs) => Some(fs),
            Err(why) => {
                assert!(
                    std::env::var(REQUIRE_VAR).as_deref() != Ok("1"),
                    "{REQUIRE_VAR}=1 but a small tmpfs cannot be mounted: {why}"
                );
                println!("SKIPPED: cannot mount a small tmpfs: {why}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.dir.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        let rc = unsafe { libc::umount2(target.as_ptr(), 0) };
        if rc != 0 {
            // SAFETY: as above; MNT_DETACH unmounts once nothing uses it.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Fills the filesystem holding `dir` with a file named `name` until a
/// write fails with `ENOSPC`; returns the bytes written.
pub fn fill(dir: &Path, name: &str) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join(name)).expect("create the filler");
    let block = vec![0xF1u8; 4096];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    // What was buffered is on tmpfs already (no page cache to flush to), so
    // the filesystem is full now.
    written
}
