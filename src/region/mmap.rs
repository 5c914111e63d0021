//! [`MmapRegion`]: a file mapped `MAP_SHARED` with memmap2, that grows in
//! place while other processes keep it mapped.
//!
//! Three rules keep a store into the mapping from ever raising `SIGBUS`:
//! - the file's blocks are reserved with `fallocate` *before* the region's
//!   length covers them, so a full disk is an error at grow time — and not
//!   only bytes this process adds: attach and every growth it observes fill
//!   the holes of the range they make touchable (a sparse copy, a grower
//!   that did not reserve), so a full disk is an error there too. A
//!   read-only region cannot reserve; it refuses a file whose holes a read
//!   would have to allocate (on tmpfs);
//! - a mapping may be longer than the file (the address-space reservation),
//!   but nothing touches a byte past [`len`](MmapRegion::len), which only
//!   grows once the bytes exist;
//! - a remap never unmaps the old mapping while the region lives, so a
//!   pointer computed from it stays valid.

use super::{FileCleanup, Memory, Region};
use crate::error::{Error, Result};
use crate::fork::{ForkLocalFile, Origin};
use crate::sync::{AtomicPtr, AtomicU64, Mutex, Ordering};
use crate::sys;
use memmap2::{MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How to create or attach an [`MmapRegion`], in the style of memmap2's
/// `MmapOptions`.
///
/// ```
/// use shmslab::region::{FileCleanup, RegionOptions};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("opts.shm");
/// let region = RegionOptions::new()
///     .mode(0o640)
///     .reserve(1 << 30) // grow to 1 GiB without a remap
///     .create(&path, 4096, FileCleanup::Manual)?;
/// assert_eq!(region.len(), 4096);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RegionOptions {
    mode: u32,
    replace: bool,
    reserve: u64,
    read_only: bool,
}

impl Default for RegionOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl RegionOptions {
    /// Defaults: mode `0o600`, refuse an existing path, no reservation.
    pub fn new() -> Self {
        Self {
            mode: 0o600,
            replace: false,
            reserve: 0,
            read_only: false,
        }
    }

    /// The permission bits of a created file, applied exactly (the umask does
    /// not narrow them). `0o600` by default; `0o666` lets other users attach.
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode & 0o7777;
        self
    }

    /// Whether `create` may replace an existing file (or symlink) at the path.
    /// Off by default: `create` then fails with `AlreadyExists`.
    pub fn replace(&mut self, replace: bool) -> &mut Self {
        self.replace = replace;
        self
    }

    /// Reserve this many bytes of address space for the mapping, so that the
    /// region can grow up to it without a remap. Pages past the end of the
    /// file are never touched.
    pub fn reserve(&mut self, bytes: u64) -> &mut Self {
        self.reserve = bytes;
        self
    }

    /// Attach read-only (`O_RDONLY`, `PROT_READ`), for inspection tools. Kept
    /// inside the crate: a store into such a mapping would fault, and only
    /// the inspector, which never stores, uses it.
    pub(crate) fn read_only(&mut self, read_only: bool) -> &mut Self {
        self.read_only = read_only;
        self
    }

    /// Creates the file at `path` with `size` bytes reserved on disk and maps it.
    ///
    /// Refuses an existing path unless [`replace`](Self::replace) is set, and
    /// never follows a symlink at `path`.
    pub fn create(&self, path: &Path, size: usize, cleanup: FileCleanup) -> Result<MmapRegion> {
        if size == 0 {
            return Err(invalid(path, "create", "size must be greater than zero"));
        }
        // Who owns the file (FileCleanup::Manual): this process, not a
        // forked child of it.
        let origin = Origin::here()?;
        if self.replace {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove existing file", path, e)),
            }
        }
        // create_new is O_CREAT|O_EXCL, which fails on any existing path,
        // symlinks included; O_NOFOLLOW says the same thing twice.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(self.mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io("create", path, e))?;
        let made = (|| {
            // The umask narrowed the mode given to open(2); set it exactly.
            file.set_permissions(std::fs::Permissions::from_mode(self.mode))
                .map_err(|e| Error::io("chmod", path, e))?;
            sys::reserve_space(&file, 0, size as u64)
                .map_err(|e| Error::io("fallocate", path, e))?;
            let meta = file.metadata().map_err(|e| Error::io("fstat", path, e))?;
            MmapRegion::map(
                file,
                path.to_path_buf(),
                &meta,
                size as u64,
                self.reserve,
                false,
            )
        })();
        let mut region = match made {
            Ok(region) => region,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        match cleanup {
            FileCleanup::Manual => region.owner = Some(origin),
            FileCleanup::Auto => {
                std::fs::remove_file(path).map_err(|e| Error::io("unlink", path, e))?;
            }
        }
        Ok(region)
    }

    /// Opens and maps an existing file; its current length is the region's.
    /// Holes in the file (a sparse copy) get their blocks first, so a full
    /// disk is an error here rather than a `SIGBUS` at the first store.
    pub fn attach(&self, path: &Path) -> Result<MmapRegion> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer; for a
        // regular file it changes nothing we use.
        let file = OpenOptions::new()
            .read(true)
            .write(!self.read_only)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        // One fstat answers all three questions: a regular file, how long,
        // and which (for cleanup).
        let meta = file.metadata().map_err(|e| Error::io("fstat", path, e))?;
        if !meta.is_file() {
            return Err(invalid(path, "attach", "not a regular file"));
        }
        if meta.len() == 0 {
            return Err(Error::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        // The same fstat answers the hole question (no second one).
        let space = sys::FileSpace::of(&meta);
        back_range(&file, path, self.read_only, space, 0, meta.len())?;
        MmapRegion::map(
            file,
            path.to_path_buf(),
            &meta,
            meta.len(),
            self.reserve,
            self.read_only,
        )
    }

    /// Maps `size` bytes of the file behind `fd`, for example one received
    /// over `SCM_RIGHTS`. Fails if the file is shorter than `size`. Holes in
    /// those bytes get their blocks first, as in [`attach`](Self::attach).
    pub fn attach_fd(&self, fd: OwnedFd, size: usize) -> Result<MmapRegion> {
        let file = File::from(fd);
        if size == 0 {
            return Err(invalid(
                Path::new(""),
                "attach_fd",
                "size must be greater than zero",
            ));
        }
        let meta = file
            .metadata()
            .map_err(|e| Error::io("fstat", PathBuf::new(), e))?;
        if meta.len() < size as u64 {
            return Err(Error::Truncated {
                expected: size as u64,
                actual: meta.len(),
            });
        }
        let space = sys::FileSpace::of(&meta);
        back_range(&file, Path::new(""), self.read_only, space, 0, size as u64)?;
        MmapRegion::map(
            file,
            PathBuf::new(),
            &meta,
            size as u64,
            self.reserve,
            self.read_only,
        )
    }
}

/// Makes `[from, to)` of the file, bytes it already has, safe to touch
/// through a mapping: every hole gets its block now (a full disk is
/// `Io { op: "fallocate", ENOSPC }`, the error growth gives), or, for a
/// read-only mapping, which cannot reserve, a file with holes that a read
/// would have to allocate is refused.
///
/// `space` is the file's length and allocated bytes from the caller's own
/// fstat of it.
fn back_range(
    file: &File,
    path: &Path,
    read_only: bool,
    space: sys::FileSpace,
    from: u64,
    to: u64,
) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    if read_only {
        let unbacked = sys::unbacked_on_read(file).map_err(|e| Error::io("fstatfs", path, e))?;
        if unbacked > 0 {
            return Err(Error::io(
                "map read-only",
                path,
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "{unbacked} bytes of the file are holes (a sparse copy?) on tmpfs, where \
                         reading a hole allocates a page, and a read-only mapping cannot reserve \
                         them; attach it read-write once (attach fills holes) or copy it without \
                         holes"
                    ),
                ),
            ));
        }
        return Ok(());
    }
    // A range with no hole has nothing to fill: skip the fallocate, which on
    // tmpfs, racing another process's extending fallocate, made that
    // growth's new length invisible for a moment (an attach then read the
    // file as truncated).
    if !sys::may_have_holes(file, space, from, to - from)
        .map_err(|e| Error::io("fstat", path, e))?
    {
        return Ok(());
    }
    sys::fill_holes(file, from, to - from).map_err(|e| Error::io("fallocate", path, e))
}

fn invalid(path: &Path, op: &'static str, msg: &'static str) -> Error {
    Error::io(op, path, io::Error::new(io::ErrorKind::InvalidInput, msg))
}

/// A file-backed region mapped `MAP_SHARED`, shared by every process that maps
/// the same file.
///
/// It keeps the seed's surface: [`create`](Self::create),
/// [`attach`](Self::attach), [`attach_fd`](Self::attach_fd),
/// [`resize`](Self::resize) (grow only) and
/// [`check_and_remap`](Self::check_and_remap), ownership-based cleanup. Both
/// growth calls take `&self`: a replaced mapping stays mapped until the region
/// drops, so a [`Region`] view borrowed earlier never dangles.
///
/// A forked child's copy keeps working (the mapping and the descriptor are
/// the child's copies), but it does not own the file: dropping it there
/// never deletes it.
///
/// ```
/// use shmslab::region::{FileCleanup, MmapRegion};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("seg.shm");
/// let owner = MmapRegion::create(&path, 4096, FileCleanup::Manual)?;
/// let guest = MmapRegion::attach(&path)?;
/// owner.region().write(100, &[0x42]).unwrap();
/// let mut byte = [0u8];
/// guest.region().read(100, &mut byte).unwrap();
/// assert_eq!(byte[0], 0x42);
///
/// owner.resize(8192)?;
/// assert!(guest.check_and_remap()?);
/// assert_eq!(guest.len(), 8192);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct MmapRegion {
    file: File,
    path: PathBuf,
    identity: (u64, u64),
    /// Set while the region deletes the file on drop: the process that
    /// asked for it. A forked child inherits the region, not the file.
    owner: Option<Origin>,
    read_only: bool,
    /// The open file description of this process's liveness locks, when a
    /// `Slab` uses the region ([`MmapRegion::open_lock_file`]).
    lock: Option<ForkLocalFile>,
    /// Start of the newest mapping. Published before `len` grows past the
    /// previous mapping's end, so whoever sees the new `len` sees this too.
    base: AtomicPtr<u8>,
    /// Length of the newest mapping.
    map_len: AtomicU64,
    /// Bytes that exist in the file and are mapped: the touchable prefix.
    len: AtomicU64,
    map_generation: AtomicU64,
    /// Every mapping made, newest last; also serialises growth.
    mappings: Mutex<Vec<MmapRaw>>,
}

impl MmapRegion {
    /// Creates the file with mode `0o600`, reserves `size` bytes on disk and
    /// maps it. See [`RegionOptions`] for the mode, replacing and reserving.
    pub fn create(path: &Path, size: usize, cleanup: FileCleanup) -> Result<Self> {
        RegionOptions::new().create(path, size, cleanup)
    }

    /// Maps an existing file.
    pub fn attach(path: &Path) -> Result<Self> {
        RegionOptions::new().attach(path)
    }

    /// Maps `size` bytes of the file behind a descriptor.
    pub fn attach_fd(fd: OwnedFd, size: usize) -> Result<Self> {
        RegionOptions::new().attach_fd(fd, size)
    }

    fn map(
        file: File,
        path: PathBuf,
        meta: &std::fs::Metadata,
        len: u64,
        reserve: u64,
        read_only: bool,
    ) -> Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let identity = (meta.dev(), meta.ino());
        let map_len = len.max(reserve);
        let map = map_raw(&file, map_len, read_only).map_err(|e| Error::io("mmap", &path, e))?;
        let base = map.as_mut_ptr();
        Ok(Self {
            file,
            path,
            identity,
            owner: None,
            read_only,
            lock: None,
            base: AtomicPtr::new(base),
            map_len: AtomicU64::new(map_len),
            len: AtomicU64::new(len),
            map_generation: AtomicU64::new(0),
            mappings: Mutex::new(vec![map]),
        })
    }

    /// The backing file's descriptor.
    pub fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// A view of the touchable bytes, valid while `self` is borrowed.
    pub fn region(&self) -> Region<'_> {
        let len = self.len.load(Ordering::Acquire);
        let base = self.base.load(Ordering::Acquire);
        // SAFETY: `base` starts a live mapping of at least `map_len >= len`
        // bytes (base is published before len grows, and we loaded len first),
        // and mappings are only unmapped when `self` drops.
        unsafe { Region::from_raw(base, len as usize) }
    }

    /// Touchable bytes: the part of the file this region has mapped.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire) as usize
    }

    /// Whether the region has no bytes (never true for a created region).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's path (empty for a region attached by descriptor).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of address space mapped (at least `len()`).
    pub fn mapped_len(&self) -> usize {
        self.map_len.load(Ordering::Acquire) as usize
    }

    /// Bumped by every remap. Growth inside the reservation does not remap.
    pub fn map_generation(&self) -> u64 {
        self.map_generation.load(Ordering::Acquire)
    }

    /// Delete the file when this region drops — in this process: a copy
    /// of the region a forked child inherits keeps the file when it drops
    /// (unless the child calls this itself).
    pub fn take_ownership(&mut self) {
        // Without the fork handlers a child could not be told apart: own
        // nothing rather than risk unlinking from a child.
        self.owner = Origin::here().ok();
    }

    /// Keep the file when this region drops.
    pub fn release_ownership(&mut self) {
        self.owner = None;
    }

    /// Unlinks the path if it still names this region's file (someone may
    /// have replaced it, and their file is not ours to delete). Whether the
    /// path is gone now because of this call.
    pub(crate) fn unlink_if_ours(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        if self.path.as_os_str().is_empty() {
            return false;
        }
        let same = std::fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.identity)
            .unwrap_or(false);
        same && std::fs::remove_file(&self.path).is_ok()
    }

    /// Opens the file again, as an open file description of this process's
    /// own for its liveness locks, which a forked child closes (see
    /// `crate::fork`). The mapping's descriptor holds no lock, so a child
    /// keeps it and the region stays usable there.
    pub(crate) fn open_lock_file(&mut self) -> Result<()> {
        let lock = ForkLocalFile::open(|| self.open_again())?;
        self.lock = Some(lock);
        Ok(())
    }

    /// A new open file description of the mapped file: through
    /// `/proc/self/fd` (which works for an unlinked file too), or where
    /// `/proc` is missing by the path, if it still names the same file.
    fn open_again(&self) -> io::Result<File> {
        use std::os::unix::fs::MetadataExt;
        let proc_err = match sys::reopen(&self.file) {
            Ok(file) => return Ok(file),
            Err(e) => e,
        };
        if self.path.as_os_str().is_empty() {
            return Err(proc_err);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!self.read_only)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)?;
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != self.identity {
            return Err(io::Error::other(
                "the path names another file now, and /proc/self/fd is unavailable",
            ));
        }
        Ok(file)
    }

    /// Grows the file to `new_size` bytes (disk reserved first) and maps them.
    /// Shrinking is refused; the same size is a no-op. On any failure the
    /// region keeps its old length and stays usable.
    pub fn resize(&self, new_size: usize) -> Result<()> {
        let len = self.len.load(Ordering::Acquire);
        if (new_size as u64) < len {
            return Err(invalid(&self.path, "resize", "shrinking is not supported"));
        }
        self.grow_to(new_size as u64)
    }

    /// Picks up growth made by another process: if the file is now longer
    /// than the region, makes sure the new bytes have their blocks (holes
    /// are filled; a full disk is an error and the length stays) and maps
    /// them (a remap only when they fall outside the mapping). Returns
    /// whether the length changed.
    pub fn check_and_remap(&self) -> Result<bool> {
        let space = sys::file_space(&self.file).map_err(|e| Error::io("fstat", &self.path, e))?;
        let file_len = space.len;
        let mut maps = self.mappings.lock();
        let len = self.len.load(Ordering::Acquire);
        if file_len <= len {
            return Ok(false);
        }
        back_range(&self.file, &self.path, self.read_only, space, len, file_len)?;
        self.map_through(&mut maps, file_len)?;
        Ok(true)
    }

    /// Makes `[0, new_len)` mapped and publishes `len = new_len`. Caller holds
    /// the mappings lock and has made sure the file has `new_len` bytes.
    fn map_through(&self, maps: &mut Vec<MmapRaw>, new_len: u64) -> Result<()> {
        let map_len = self.map_len.load(Ordering::Acquire);
        if new_len > map_len {
            // At least double: every old mapping stays until drop, so
            // growing by exact steps would cost address space quadratically.
            let want = new_len.max(map_len.saturating_mul(2));
            // The new mapping exists before anything moves to it; the old one
            // stays mapped (pointers into it stay valid) until `self` drops.
            let map = map_raw(&self.file, want, self.read_only)
                .map_err(|e| Error::io("mmap", &self.path, e))?;
            self.base.store(map.as_mut_ptr(), Ordering::Release);
            self.map_len.store(want, Ordering::Release);
            self.map_generation.fetch_add(1, Ordering::AcqRel);
            maps.push(map);
        }
        self.len.store(new_len, Ordering::Release);
        Ok(())
    }
}

fn map_raw(file: &File, len: u64, read_only: bool) -> io::Result<MmapRaw> {
    let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if read_only {
        MmapOptions::new().len(len).map_raw_read_only(file)
    } else {
        MmapOptions::new().len(len).map_raw(file)
    }
}

impl Memory for MmapRegion {
    /// The liveness description when there is one. Otherwise (the
    /// read-only inspector; a forked child, whose copy was closed) the
    /// mapping's descriptor, which holds no lock: asking the kernel about
    /// others' locks through it is an outsider's view.
    fn lock_file(&self) -> Option<&File> {
        Some(
            self.lock
                .as_ref()
                .and_then(ForkLocalFile::get)
                .unwrap_or(&self.file),
        )
    }

    #[inline]
    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    #[inline]
    unsafe fn word(&self, offset: u64) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= Memory::len(self));
        let base = self.base.load(Ordering::Acquire);
        // SAFETY: the caller checked `offset + 8 <= len` against a length it
        // observed; `base` was published no later than that length, so it maps
        // at least that many bytes and lives as long as `self`. Mappings are
        // page aligned, so `base + offset` is 8-aligned; AtomicU64 has the size
        // and alignment of u64 and may alias memory other processes change.
        unsafe { &*(base.add(offset as usize) as *const AtomicU64) }
    }

    #[inline]
    unsafe fn words(&self, offset: u64, n: usize) -> &[AtomicU64] {
        debug_assert!(offset % 8 == 0 && offset + 8 * n as u64 <= Memory::len(self));
        let base = self.base.load(Ordering::Acquire);
        // SAFETY: as in `word`, for the `n` words the caller checked against
        // an observed length.
        unsafe { std::slice::from_raw_parts(base.add(offset as usize) as *const AtomicU64, n) }
    }

    #[inline]
    unsafe fn copy_out(&self, offset: u64, dst: &mut [u8]) {
        let base = self.base.load(Ordering::Acquire);
        // SAFETY: the caller guarantees the range is within `len`, mapped as
        // argued in `word`; the mapping is whole pages from a page-aligned
        // base, so every word containing a byte of the range is mapped, and
        // it is reached only as a whole-word atomic (`word`, these copies).
        // Concurrent writers can only make the copy stale, which callers
        // detect with the slot generation; `T: Pod` makes any bytes valid.
        unsafe { crate::sync::load_shared(base.add(offset as usize), dst) }
    }

    #[inline]
    unsafe fn copy_in(&self, offset: u64, src: &[u8]) {
        let base = self.base.load(Ordering::Acquire);
        // SAFETY: as in `copy_out`; the mapping is writable.
        unsafe { crate::sync::store_shared(src, base.add(offset as usize)) }
    }

    fn grow_to(&self, new_len: u64) -> Result<()> {
        if self.read_only {
            return Err(invalid(&self.path, "grow", "the region is read-only"));
        }
        let mut maps = self.mappings.lock();
        let len = self.len.load(Ordering::Acquire);
        if new_len <= len {
            return Ok(());
        }
        sys::reserve_space(&self.file, len, new_len - len)
            .map_err(|e| Error::io("fallocate", &self.path, e))?;
        self.map_through(&mut maps, new_len)
    }

    fn observe(&self, min_len: u64) -> Result<()> {
        if min_len <= self.len.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut maps = self.mappings.lock();
        if min_len <= self.len.load(Ordering::Acquire) {
            return Ok(());
        }
        let space = sys::file_space(&self.file).map_err(|e| Error::io("fstat", &self.path, e))?;
        let file_len = space.len;
        if file_len < min_len {
            return Err(Error::Truncated {
                expected: min_len,
                actual: file_len,
            });
        }
        let len = self.len.load(Ordering::Acquire);
        back_range(&self.file, &self.path, self.read_only, space, len, min_len)?;
        self.map_through(&mut maps, min_len)
    }
}

impl Drop for MmapRegion {
    fn drop(&mut self) {
        // The mappings unmap themselves when the vector drops. A forked
        // child's copy leaves the file to the process that owns it.
        if self.owner.is_some_and(|o| !o.is_elsewhere()) {
            self.unlink_if_ours();
        }
    }
}
