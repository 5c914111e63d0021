//! The one error type of the crate.
//!
//! Every message says what happened and what the user can do about it. Bytes
//! read from the shared file are untrusted, so anything wrong with them
//! surfaces here as a value (`Corrupt`, `Truncated`, `InvalidHandle`, ...),
//! never as a panic or a signal.

use std::io;
use std::path::PathBuf;

/// The type fingerprint stored with a named root: size, alignment and a
/// schema id (see [`Schema`](crate::Schema)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// `size_of::<T>()`.
    pub size: u64,
    /// `align_of::<T>()`.
    pub align: u64,
    /// The schema id the type provides, or a hash of its type name.
    pub schema: u64,
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "size {} align {} schema {:#018x}",
            self.size, self.align, self.schema
        )
    }
}

/// Everything that can go wrong in `shmslab`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed on the segment file.
    #[error("{op} failed on {}: {source}", path.display())]
    Io {
        /// What was being done (`"open"`, `"fallocate"`, `"mmap"`, ...).
        op: &'static str,
        /// The segment file, or an empty path for a segment attached by descriptor.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The file is empty: it was never initialised as a segment.
    #[error(
        "{} is empty: it is not a shmslab segment (create one with Slab::builder().create)",
        path.display()
    )]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },

    /// The file does not start with the shmslab magic: it is another
    /// program's file, or random bytes.
    #[error(
        "not a shmslab segment: the file starts with {found:02x?} instead of the shmslab magic; check the path"
    )]
    NotASegment {
        /// The first bytes of the file.
        found: [u8; 8],
    },

    /// The header is there but the magic was never written: the segment is
    /// still being created, or its creator died half-way.
    #[error(
        "the segment is not initialised yet: its creator is still writing it or died while creating it; retry, or remove the file and create it again"
    )]
    NotInitialized,

    /// The segment was written by another version of the file format.
    #[error(
        "unsupported segment format version {found} (this build reads version {supported}); use a matching shmslab version"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u64,
        /// The version this build reads.
        supported: u64,
    },

    /// The segment was created on a machine with another byte order or word
    /// size; its atomics and offsets cannot be shared with this process.
    #[error(
        "the segment was created for another architecture ({found}; this process is {expected}); attach from a matching machine"
    )]
    WrongArchitecture {
        /// What the file says.
        found: String,
        /// What this process is.
        expected: String,
    },

    /// The file is shorter than its header says it must be.
    #[error(
        "the segment is truncated: the header needs {expected} bytes but the file has {actual}; it was cut short or is still being grown"
    )]
    Truncated {
        /// Bytes the header requires.
        expected: u64,
        /// Bytes the file has.
        actual: u64,
    },

    /// A structure in the shared file holds a value that cannot be right.
    #[error(
        "the segment is corrupt: {what}; run `shmslab check` on it, and recreate it if the check fails"
    )]
    Corrupt {
        /// What was wrong, and where.
        what: String,
    },

    /// The configuration given to the builder cannot be used.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// Why.
        reason: String,
    },

    /// Growing the segment would pass its `max_size`.
    #[error(
        "out of space: growing the segment to {needed} bytes would pass its max_size of {max_size} bytes; free slots or create the segment with a larger max_size"
    )]
    OutOfSpace {
        /// The file size the growth needed.
        needed: u64,
        /// The cap set at create.
        max_size: u64,
    },

    /// A size class has reached its maximum number of extents.
    #[error(
        "size class {class} has reached its maximum of {max_extents} extents; free slots or use larger size classes"
    )]
    ClassFull {
        /// The class.
        class: usize,
        /// The extent limit.
        max_extents: usize,
    },

    /// The requested size is larger than the largest size class.
    #[error(
        "cannot allocate {size} bytes: the largest size class holds {largest} bytes; add a larger class at create"
    )]
    TooLarge {
        /// Bytes requested.
        size: u64,
        /// The largest slot.
        largest: u64,
    },

    /// The type needs a stricter alignment than any slot gives.
    #[error(
        "cannot place a type aligned to {align} bytes: slots are aligned to at most {max} bytes"
    )]
    Misaligned {
        /// `align_of::<T>()`.
        align: u64,
        /// The largest slot alignment.
        max: u64,
    },

    /// The handle names no slot of this segment (bad class, extent or index),
    /// or its type does not fit the slot it names.
    #[error("invalid handle: {why}; it was forged, corrupted, or made for a different type")]
    InvalidHandle {
        /// What did not check out.
        why: &'static str,
    },

    /// The handle is the null handle ([`SlotRef::NULL`](crate::SlotRef::NULL),
    /// `Handle::NULL`, a `Default` or zeroed handle): it was never made by an
    /// allocation.
    #[error("null handle: it was never made by an allocation (a NULL, default or zeroed handle)")]
    NullHandle,

    /// The handle belongs to another segment.
    #[error(
        "the handle belongs to another segment (segment id {found:#010x}, this one is {expected:#010x})"
    )]
    ForeignHandle {
        /// This segment's id.
        expected: u32,
        /// The handle's segment id.
        found: u32,
    },

    /// The slot the handle names was freed (and perhaps reused) since the
    /// handle was made. The message says which: generations equal means
    /// freed and not yet reused; a later slot generation means reused; slot
    /// generation 0 means the slot was retired after its last life.
    #[error("stale handle: {}", staleness(*handle, *slot))]
    StaleHandle {
        /// The generation in the handle.
        handle: u32,
        /// The slot's generation now (0: retired).
        slot: u32,
    },

    /// The channel is closed: no more sends, and (for a receive) nothing
    /// left queued.
    #[error("the channel is closed")]
    ChannelClosed,

    /// The channel is full (a `try_send`).
    #[error("the channel is full ({capacity} messages, queued and in flight)")]
    ChannelFull {
        /// The channel's capacity.
        capacity: usize,
    },

    /// The slot was already freed through this handle.
    #[error("double free: this handle's slot was already freed")]
    DoubleFree,

    /// A byte access reaches past the end of the slot.
    #[error("access of {len} bytes at offset {offset} reaches past the slot's {capacity} bytes")]
    OutOfBounds {
        /// Start of the access within the slot.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// The slot's size.
        capacity: u64,
    },

    /// A named root holds a value of another type.
    #[error(
        "root {name:?} holds another type: stored {stored}, asked for `{requested_type}` ({requested})"
    )]
    TypeMismatch {
        /// The root's name.
        name: String,
        /// The stored fingerprint.
        stored: Fingerprint,
        /// The requested type's fingerprint.
        requested: Fingerprint,
        /// The requested type's name (`std::any::type_name`).
        requested_type: &'static str,
    },

    /// A root name is empty or too long.
    #[error("root name of {len} bytes is invalid: names are 1 to {max} bytes")]
    BadRootName {
        /// The name's length.
        len: usize,
        /// The longest name.
        max: usize,
    },

    /// Every root entry is in use.
    #[error("the root table is full ({capacity} roots); remove roots or create with more")]
    RootTableFull {
        /// Entries in the table.
        capacity: usize,
    },

    /// Every peer row is held by a live process.
    #[error(
        "the peer table is full ({capacity} processes attached); detach some or create with more peers"
    )]
    PeerTableFull {
        /// Rows in the table.
        capacity: usize,
    },

    /// The `Slab` was made by another process and inherited through
    /// `fork`: its peer row, lock token and caches are the parent's, so it
    /// refuses every operation in the child. Attach again there
    /// ([`Slab::attach`](crate::Slab::attach)); dropping the inherited one
    /// is harmless.
    #[error("this Slab was inherited through fork; attach again in the child")]
    ForkedProcess,
    /// The file's open-file-description locks (`F_OFD_SETLK`,
    /// `F_OFD_GETLK`) do not work here, typically because the filesystem
    /// does not support them (`ENOLCK` can also mean the kernel ran out of
    /// lock records; retrying later may then work). Each process holds one on its peer row so that
    /// the kernel tells the others when it dies; without them a live process
    /// would look dead and its slots could be reclaimed under it, so
    /// shmslab does not attach (or create) at all.
    #[error(
        "OFD locks do not work on this segment file (fcntl F_OFD_SETLK/F_OFD_GETLK failed with errno {errno}): the filesystem does not support them, or (ENOLCK) the kernel ran out of lock records; shmslab needs them to detect crashed processes, so it does not attach without them; put the segment on a local filesystem such as tmpfs (/dev/shm), ext4 or XFS"
    )]
    LivenessLocksUnsupported {
        /// The errno the lock call failed with (`ENOLCK`, `EINVAL`,
        /// `EOPNOTSUPP`).
        errno: i32,
    },

    /// The segment's file was removed: its last attached process detached
    /// ([`FileLifetime::RemoveWhenLastDetaches`](crate::FileLifetime)), or a
    /// process called [`Slab::remove_file_on_drop`](crate::Slab::remove_file_on_drop),
    /// after this process opened it but before it could join. Processes that
    /// were attached keep working; no new one may attach. Create the segment
    /// anew.
    #[error(
        "the segment was removed (its last process detached, or one removed it) after this process opened the file; nothing new may attach to it: create it again"
    )]
    SegmentRemoved,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt { what: what.into() }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            reason: reason.into(),
        }
    }

    /// The underlying OS error, when this is an I/O error.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io { source, .. } => source,
            e @ Error::SegmentRemoved => io::Error::new(io::ErrorKind::NotFound, e),
            other => io::Error::other(other),
        }
    }
}

/// What [`Error::StaleHandle`] says happened to the slot.
fn staleness(handle: u32, slot: u32) -> String {
    match slot {
        s if s == handle => format!("the slot was freed (generation {handle})"),
        0 => format!(
            "the slot was freed after its last life and retired (handle generation {handle})"
        ),
        s if s > handle => format!(
            "the slot was freed and reused since (handle generation {handle}, slot now at generation {s})"
        ),
        s => format!(
            "the handle's generation {handle} is ahead of the slot's {s}: it was forged or made in another file"
        ),
    }
}
