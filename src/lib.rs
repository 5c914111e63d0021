//! # shmslab
//!
//! A safe, typed shared-memory allocator. Processes on one machine map one
//! file, allocate slots in it, place [`bytemuck::Pod`] values there, pass the
//! small `Copy` handles to each other, and free them. When a size class runs
//! dry the file grows by an *extent* while every other process stays
//! attached.
//!
//! ```
//! use shmslab::Slab;
//! use shmslab::bytemuck::{Pod, Zeroable};
//!
//! #[repr(C)]
//! #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
//! #[bytemuck(crate = "shmslab::bytemuck")] // see `shmslab::bytemuck`
//! struct Point { x: f64, y: f64 }
//! impl shmslab::Schema for Point {}
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("points.shm");
//! let slab = Slab::builder().create(&path)?;
//!
//! // Allocate a value; the handle is 16 bytes, Copy, and means the same
//! // slot in every process attached to the file.
//! let h = slab.alloc(Point { x: 1.0, y: 2.0 })?;
//! slab.update(h, |p| p.x += 10.0)?;
//! assert_eq!(slab.read(h)?, Point { x: 11.0, y: 2.0 });
//!
//! // Another process (here: another attachment) finds it by name.
//! let origin = slab.root_or_insert("origin", Point { x: 0.0, y: 0.0 })?;
//! let other = Slab::attach(&path)?;
//! assert_eq!(other.root::<Point>("origin")?, Some(origin));
//!
//! slab.free(h)?;
//! assert!(slab.read(h).is_err()); // stale: never a dangling read
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Layers
//!
//! | module | job |
//! |---|---|
//! | `sync` | atomics facade: std, or loom under `--cfg loom` |
//! | `fork` | telling a forked child from its parent (what it inherited is not its own) |
//! | [`region`] | the mapped file ([`MmapRegion`](region::MmapRegion)) and a heap stand-in ([`HeapRegion`](region::HeapRegion)) |
//! | `format` | the bytes of the file and their validation |
//! | `pool` | size classes, extents, slot metadata, free lists, growth |
//! | `peers` | attached processes, liveness, reclaiming dead ones' slots |
//! | `typed` | [`Handle<T>`], [`SliceHandle<T>`], named roots |
//! | [`atomics`], [`locked`], [`notifier`] | shared atomics on slot data, crash-atomic locked values, wake-ups across processes |
//! | `slab` | [`Slab`], the front door |
//! | `check`, `inspect` | [`Slab::check`] and the read-only [`inspect`] |
//!
//! Using it across real processes — passing handles, who owns a slot and what
//! `reclaim_dead` frees, concurrent writers, `fork` — is the [`guide`]. The
//! design and the byte format as built are in `docs/DESIGN.md` and
//! `docs/FORMAT.md`.
//!
//! ## Platform
//!
//! Linux: liveness of peer processes rests on open-file-description locks
//! (`F_OFD_SETLK`), which the kernel releases when a process dies. On a
//! filesystem where they do not work, attach and create fail with
//! [`Error::LivenessLocksUnsupported`] rather than run without crash
//! detection.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("shmslab supports Linux only (it relies on OFD locks and fallocate)");

pub mod atomics;
pub mod channel;
mod check;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
mod fault;
mod fork;
mod format;
mod inspect;
mod lifetime;
pub mod loan;
pub mod locked;
pub mod notifier;
mod peers;
mod pool;
pub mod region;
mod slab;
mod sync;
mod sys;
mod typed;

pub use channel::{Channel, ChannelHandle, Delivery};
pub use check::{ClassCheck, Finding, Report};
pub use error::{Error, Fingerprint, Result};
pub use format::{SlotParts, SlotRef};
pub use inspect::{ChannelSnapshot, PeerSnapshot, ReceiverSnapshot, Snapshot, inspect};
pub use lifetime::FileLifetime;
pub use loan::{BytesLoan, Loan, SlotView};
pub use locked::{Locked, LockedGuard};
pub use notifier::{Notifier, NotifierHandle};
pub use peers::{PeerInfo, ReclaimReport};
pub use slab::{BytesHandle, ClassStats, Slab, SlabBuilder, Stats};
pub use typed::{Handle, RootInfo, Schema, SliceHandle};

/// The segment format's fixed limits and the builder's defaults.
pub mod limits {
    pub use crate::format::{
        FORMAT_VERSION, MAX_CLASSES, MAX_EXTENTS, MAX_PEERS, MAX_ROOT_NAME, MAX_ROOTS,
        MAX_SLOT_SIZE,
    };
    pub use crate::slab::{DEFAULT_CLASSES, DEFAULT_PEERS};
}

/// The `bytemuck` that shmslab's `Pod` bounds refer to, so a crate can
/// store its own structs with shmslab as its only dependency.
///
/// The derive macros expand to paths starting at `::bytemuck`, which a crate
/// without its own `bytemuck` dependency does not have; tell them where it
/// is with `#[bytemuck(crate = "shmslab::bytemuck")]`:
///
/// ```
/// use shmslab::bytemuck::{Pod, Zeroable};
///
/// #[repr(C)]
/// #[derive(Clone, Copy, Pod, Zeroable)]
/// #[bytemuck(crate = "shmslab::bytemuck")]
/// struct Sample { at_ns: u64, value: f64 }
/// ```
///
/// A crate that depends on `bytemuck` 1.x itself can `use bytemuck::{Pod,
/// Zeroable}` and leave the attribute out: it is the same crate (Cargo
/// unifies the two `1.x` requirements). `tests/user-crate/` in the
/// repository, a crate with shmslab as its only dependency, checks that the
/// README's example builds and runs this way.
pub use bytemuck;

/// The guide to using shmslab across real processes (`docs/GUIDE.md`): a
/// two-process program, who owns a slot, concurrent writers, `fork`, and
/// how long the file lives.
#[doc = include_str!("../docs/GUIDE.md")]
pub mod guide {}

/// The README's examples, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
