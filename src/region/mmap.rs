//! [`MmapRegion`]: a file mapped `MAP_SHARED` with memmap2, that grows in
//! place while other processes keep it mapped.
//!
//! Three rules keep a store into the mapping from ever raising `SIGBUS`:
//! - the file's blocks are reserved with `fallocate` *before* the region's
//!   length covers them, so a full disk is an error at grow time;
//! - a mapping may be longer than the file (the address-space reservation),
//!   but nothing touches a byte past [`len`](MmapRegion::len), which only
//!   grows once the bytes exist;
//! - a remap never unmaps the old mapping while the region lives, so a
//!   pointer computed from it stays valid.

use super::{FileCleanup, Memory, Region};
use crate::error::{Error, Result};
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
/// use shmslab::{FileCleanup, RegionOptions};
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
            FileCleanup::Manual => region.owns_file = true,
            FileCleanup::Auto => {
                std::fs::remove_file(path).map_err(|e| Error::io("unlink", path, e))?;
            }
        }
        Ok(region)
    }

    /// Opens and maps an existing file; its current length is the region's.
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
    /// over `SCM_RIGHTS`. Fails if the file is shorter than `size`.
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
/// ```
/// use shmslab::{FileCleanup, MmapRegion};
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
    owns_file: bool,
    read_only: bool,
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
            owns_file: false,
            read_only,
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

    /// Delete the file when this region drops.
    pub fn take_ownership(&mut self) {
        self.owns_file = true;
    }

    /// Keep the file when this region drops.
    pub fn release_ownership(&mut self) {
        self.owns_file = false;
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
    /// than the region, maps the new bytes (a remap only when they fall
    /// outside the mapping). Returns whether the length changed.
    pub fn check_and_remap(&self) -> Result<bool> {
        let file_len = sys::file_len(&self.file).map_err(|e| Error::io("fstat", &self.path, e))?;
        let mut maps = self.mappings.lock();
        if file_len <= self.len.load(Ordering::Acquire) {
            return Ok(false);
        }
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
    fn lock_file(&self) -> Option<&File> {
        Some(&self.file)
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
        let file_len = sys::file_len(&self.file).map_err(|e| Error::io("fstat", &self.path, e))?;
        if file_len < min_len {
            return Err(Error::Truncated {
                expected: min_len,
                actual: file_len,
            });
        }
        self.map_through(&mut maps, min_len)
    }
}

impl Drop for MmapRegion {
    fn drop(&mut self) {
        // The mappings unmap themselves when the vector drops.
        if self.owns_file {
            // Unlink only if the path still names our file: someone may have
            // replaced it, and their file is not ours to delete.
            let same = std::fs::symlink_metadata(&self.path)
                .map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    (m.dev(), m.ino()) == self.identity
                })
                .unwrap_or(false);
            if same {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}
