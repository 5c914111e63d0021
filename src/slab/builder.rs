//! [`SlabBuilder`]: what a new segment is made of, and opening one.

use super::Slab;
use crate::error::{Error, Result};
use crate::format::{Config, Geometry};
use crate::lifetime::FileLifetime;
use crate::pool::{Liveness, Pool};
use crate::region::{FileCleanup, RegionOptions};
use crate::sys;
use std::os::fd::OwnedFd;
use std::path::Path;

/// Address space reserved for a segment without a `max_size`: growth inside
/// it needs no remap. Beyond it the mapping is remapped (doubling).
pub(crate) const DEFAULT_RESERVE: u64 = 4 << 30;

/// How many processes a segment holds at once unless
/// [`SlabBuilder::peers`] says otherwise: a pre-forked server's or a worker
/// pool's worth, at 64 bytes a row (64 KiB of the file). Empty rows cost
/// attach, `reclaim_dead`, `check` and `inspect` one load each; only rows in
/// use cost a kernel query.
pub const DEFAULT_PEERS: usize = 1024;

/// The default size classes: powers of two from 64 B to 1 MiB.
pub const DEFAULT_CLASSES: [u64; 15] = [
    64,
    128,
    256,
    512,
    1 << 10,
    2 << 10,
    4 << 10,
    8 << 10,
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
];

/// Builds a new segment. Start from [`Slab::builder`].
///
/// ```
/// use shmslab::Slab;
/// let dir = tempfile::tempdir()?;
/// let slab = Slab::builder()
///     .classes(&[64, 256, 4096])
///     .initial_size(64 << 10)
///     .max_size(64 << 20)
///     .create(dir.path().join("seg.shm"))?;
/// assert_eq!(slab.stats().classes.len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SlabBuilder {
    classes: Vec<u64>,
    initial_size: u64,
    max_size: u64,
    reserve: Option<u64>,
    roots: usize,
    peers: usize,
    mode: u32,
    replace: bool,
    lifetime: FileLifetime,
}

impl Default for SlabBuilder {
    fn default() -> Self {
        Self {
            classes: DEFAULT_CLASSES.to_vec(),
            initial_size: 1 << 20,
            max_size: 0,
            reserve: None,
            roots: 64,
            peers: DEFAULT_PEERS,
            mode: 0o600,
            replace: false,
            lifetime: FileLifetime::Keep,
        }
    }
}

impl SlabBuilder {
    /// The slot sizes, strictly increasing multiples of 16 bytes (at most 32
    /// classes, each at most 1 GiB). Default: [`DEFAULT_CLASSES`].
    pub fn classes(mut self, sizes: &[u64]) -> Self {
        self.classes = sizes.to_vec();
        self
    }

    /// Bytes reserved on disk at create (at least the header). Growth uses
    /// this space before it extends the file. Default 1 MiB.
    pub fn initial_size(mut self, bytes: u64) -> Self {
        self.initial_size = bytes;
        self
    }

    /// The file never grows past this many bytes; an allocation that would
    /// need it to fails with [`Error::OutOfSpace`]. Default: no cap.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// Address space each process reserves for the mapping, so growth inside
    /// it needs no remap. Default: `max_size` if set, else 4 GiB.
    pub fn reserve(mut self, bytes: u64) -> Self {
        self.reserve = Some(bytes);
        self
    }

    /// Capacity of the named-root table. Default 64.
    pub fn roots(mut self, n: usize) -> Self {
        self.roots = n;
        self
    }

    /// How many processes may be attached at once, 1 to
    /// [`MAX_PEERS`](crate::limits::MAX_PEERS) (64 bytes of the file each). Default
    /// [`DEFAULT_PEERS`] (1024).
    pub fn peers(mut self, n: usize) -> Self {
        self.peers = n;
        self
    }

    /// File mode, applied exactly. Default `0o600`; `0o666` lets other users attach.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Replace an existing file at the path instead of failing.
    pub fn replace(mut self, replace: bool) -> Self {
        self.replace = replace;
        self
    }

    /// How long the file stays at its path: until removed
    /// ([`FileLifetime::Keep`], the default), until the last process attached
    /// detaches ([`FileLifetime::RemoveWhenLastDetaches`]), or not at all
    /// ([`FileLifetime::Unlinked`]: shared by descriptor). Recorded in the
    /// file, so every process that attaches follows it.
    ///
    /// ```
    /// use shmslab::{FileLifetime, Slab};
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("job.shm");
    /// let a = Slab::builder()
    ///     .lifetime(FileLifetime::RemoveWhenLastDetaches)
    ///     .create(&path)?;
    /// let b = Slab::attach(&path)?;
    /// drop(a); // the creator leaves first: b is still attached
    /// assert!(path.exists());
    /// assert!(b.detach()?); // the last one out removes the file
    /// assert!(!path.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lifetime(mut self, lifetime: FileLifetime) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Creates the segment file at `path` and attaches to it.
    pub fn create(self, path: impl AsRef<Path>) -> Result<Slab> {
        let path = path.as_ref();
        let config = Config {
            class_sizes: self.classes.clone(),
            root_capacity: self.roots,
            peer_capacity: self.peers,
            page_size: sys::page_size(),
            max_size: self.max_size,
            lifetime: self.lifetime,
        };
        let geo = Geometry::new(config, new_segment_id())?;
        let page = geo.config.page_size;
        let size = self.initial_size.max(geo.data_start).div_ceil(page) * page;
        if self.max_size != 0 && self.max_size < size {
            return Err(Error::config(format!(
                "max_size {} is smaller than the initial size {size} (the header alone needs {})",
                self.max_size, geo.data_start
            )));
        }
        let reserve = self.reserve.unwrap_or(if self.max_size != 0 {
            self.max_size
        } else {
            DEFAULT_RESERVE
        });
        // The region removes the file if anything below fails; once the
        // segment is made, the lifetime decides instead (see `Slab::leave`).
        let cleanup = match self.lifetime {
            FileLifetime::Unlinked => FileCleanup::Auto,
            FileLifetime::Keep | FileLifetime::RemoveWhenLastDetaches => FileCleanup::Manual,
        };
        let mut region = RegionOptions::new()
            .mode(self.mode)
            .replace(self.replace)
            .reserve(reserve)
            .create(path, size as usize, cleanup)?;
        region.open_lock_file()?;
        geo.initialise(&region)?;
        let mut slab = Slab::open(Pool::new(region, geo, Liveness::File)?)?;
        slab.pool.mem.release_ownership();
        Ok(slab)
    }
}

impl Slab {
    /// Attaches to an existing segment: maps it, checks its header and every
    /// published extent, and registers this process in the peer table.
    ///
    /// ```
    /// use shmslab::Slab;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("seg.shm");
    /// let creator = Slab::builder().create(&path)?;
    /// let other = Slab::attach(&path)?;
    /// assert_eq!(other.segment_id(), creator.segment_id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attach(path: impl AsRef<Path>) -> Result<Slab> {
        let path = path.as_ref();
        let mut region = RegionOptions::new().reserve(DEFAULT_RESERVE).attach(path)?;
        region.open_lock_file()?;
        let geo = Geometry::load_live(&region)?;
        Slab::open(Pool::new(region, geo, Liveness::File)?)
    }

    /// Attaches through a descriptor (for example one received over
    /// `SCM_RIGHTS`, or inherited from a parent). The file is reopened
    /// through `/proc/self/fd`, so nothing of this process's is shared with
    /// the sender's open file description.
    pub fn attach_fd(fd: OwnedFd) -> Result<Slab> {
        // A descriptor received from another process shares that process's
        // open file description (its offset, flags and OFD locks): map a
        // description of our own instead, and let the received one go.
        let own: OwnedFd = sys::reopen(&fd)
            .map_err(|e| Error::io("reopen /proc/self/fd", "", e))?
            .into();
        drop(fd);
        let len = sys::file_len(&own).map_err(|e| Error::io("fstat", "", e))?;
        if len == 0 {
            return Err(Error::EmptyFile {
                path: Default::default(),
            });
        }
        let mut region = RegionOptions::new()
            .reserve(DEFAULT_RESERVE)
            .attach_fd(own, len as usize)?;
        region.open_lock_file()?;
        let geo = Geometry::load_live(&region)?;
        Slab::open(Pool::new(region, geo, Liveness::File)?)
    }
}

/// A random, non-zero segment id, so a handle from one segment is told apart
/// from a handle of another.
fn new_segment_id() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    let v = h.finish();
    ((v >> 32) as u32 ^ v as u32).max(1)
}
