//! Byte slots: [`BytesHandle`], a slot handle that carries the length asked
//! for, and the byte API of [`Slab`] over it.
//!
//! The length lives in the handle, not in the slot, so a 64 KiB value fits
//! the 64 KiB class (a header inside the slot would push it into the next
//! one) and allocation zero-fills nothing. Like every handle it is untrusted
//! when used: a length past the slot's size reads and writes nothing (the
//! slot's own bound is checked too).

use super::Slab;
use crate::error::{Error, Result};
use crate::format::SlotRef;
use bytemuck::{Pod, Zeroable};

/// A handle to a byte slot: the slot, and the length it was allocated for.
/// 24 bytes, `Copy` and `Pod`, like [`SliceHandle`](crate::SliceHandle);
/// the byte API reads and writes within that length.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
/// use shmslab::BytesHandle;
/// let msg = slab.alloc_bytes(5)?;
/// slab.write_bytes(msg, 0, b"hello")?;
/// assert_eq!(msg.len(), 5);
/// let wire: [u8; 24] = msg.to_bytes();             // send it anywhere
/// let got = BytesHandle::from_bytes(wire);
/// assert_eq!(slab.with_bytes(got, |b| b.to_vec())?, b"hello");
/// assert!(slab.write_bytes(got, 3, b"!!!").is_err()); // past its 5 bytes
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Pod, Zeroable)]
pub struct BytesHandle {
    slot: SlotRef,
    len: u64,
}

impl BytesHandle {
    /// The null handle (all zero bytes, length 0): using it is
    /// [`Error::NullHandle`]. Also what [`Default`] gives.
    pub const NULL: BytesHandle = BytesHandle {
        slot: SlotRef::NULL,
        len: 0,
    };

    /// The length the slot was allocated for (the slot itself may be
    /// larger: [`Slab::capacity`]).
    pub fn len(self) -> usize {
        self.len as usize
    }

    /// Whether the length is zero.
    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// A byte handle over `len` bytes of the slot `slot` names, for byte
    /// access to a slot allocated another way (checked when used: the span
    /// must lie within both `len` and the slot; see also [`Slab::bytes_of`]).
    pub fn from_raw(slot: SlotRef, len: usize) -> Self {
        BytesHandle {
            slot,
            len: len as u64,
        }
    }

    /// Whether this is [`BytesHandle::NULL`].
    pub fn is_null(self) -> bool {
        self == Self::NULL
    }

    /// The untyped handle of the slot.
    pub fn raw(self) -> SlotRef {
        self.slot
    }

    /// The handle as 24 bytes.
    pub fn to_bytes(self) -> [u8; 24] {
        bytemuck::cast(self)
    }

    /// A handle from 24 bytes (checked when used).
    pub fn from_bytes(bytes: [u8; 24]) -> Self {
        bytemuck::cast(bytes)
    }

    /// Checks that `len` bytes at `offset` lie within the handle's length.
    #[inline(always)]
    fn check_span(self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end as u64 <= self.len => Ok(()),
            _ => Err(self.slot.past_len(offset as u64, len as u64, self.len)),
        }
    }
}

impl From<BytesHandle> for SlotRef {
    fn from(h: BytesHandle) -> SlotRef {
        h.slot
    }
}

impl Slab {
    /// Allocates a slot for `len` bytes (contents unspecified: a reused slot
    /// keeps its old bytes; nothing is zero-filled). The slot belongs to this
    /// process until freed; if the process dies first,
    /// [`reclaim_dead`](Slab::reclaim_dead) frees it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let slot = slab.alloc_bytes(1000)?;
    /// assert_eq!(slot.len(), 1000);
    /// assert_eq!(slab.capacity(slot)?, 1024);           // the class it landed in
    /// assert!(slab.alloc_bytes(2 << 20).is_err()); // larger than the largest class
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline(always)]
    pub fn alloc_bytes(&self, len: usize) -> Result<BytesHandle> {
        let slot = self.alloc_slot(len as u64, 1)?.1;
        Ok(BytesHandle {
            slot,
            len: len as u64,
        })
    }

    /// The whole live slot `handle` names as bytes (length: its capacity),
    /// for byte access to a slot allocated another way.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let h = slab.alloc(0x0102_0304u32)?;
    /// let bytes = slab.bytes_of(h)?;
    /// assert_eq!(bytes.len(), 64);                       // the smallest default class
    /// let mut b = [0u8; 4];
    /// slab.read_bytes(bytes, 0, &mut b)?;
    /// assert_eq!(u32::from_ne_bytes(b), 0x0102_0304);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bytes_of(&self, handle: impl Into<SlotRef>) -> Result<BytesHandle> {
        let slot = handle.into();
        let len = self.capacity(slot)? as u64;
        Ok(BytesHandle { slot, len })
    }

    /// Copies `src` into the slot at `offset`; the span must lie within the
    /// handle's length.
    #[inline(always)]
    pub fn write_bytes(&self, handle: BytesHandle, offset: usize, src: &[u8]) -> Result<()> {
        handle.check_span(offset, src.len())?;
        self.pool()?.write_at(&handle.slot, offset as u64, src)
    }

    /// Copies bytes of the slot from `offset` into `dst`; the span must lie
    /// within the handle's length. If the slot is freed or reused during the
    /// copy, the result is `StaleHandle`.
    #[inline(always)]
    pub fn read_bytes(&self, handle: BytesHandle, offset: usize, dst: &mut [u8]) -> Result<()> {
        handle.check_span(offset, dst.len())?;
        self.pool()?.read_at(&handle.slot, offset as u64, dst)
    }

    /// The handle's length, checked against its live slot before a buffer
    /// of that length is made (a forged length must not size an allocation).
    fn checked_len(&self, handle: BytesHandle) -> Result<usize> {
        if handle.len > self.capacity(handle.slot)? as u64 {
            return Err(Error::InvalidHandle {
                why: "byte length past the end of its slot",
            });
        }
        Ok(handle.len())
    }

    /// Runs `f` on a private copy of the handle's bytes: a snapshot taken
    /// while the slot was live (a copy that raced a free is
    /// [`Error::StaleHandle`], never passed to `f`). The copy lives in a
    /// buffer this thread keeps and reuses (no allocation per call once it
    /// has grown to the largest slot read this way, up to 1 MiB; beyond
    /// that it is freed after each call). To read part of a slot without
    /// copying all of it, use [`read_in_place`](Slab::read_in_place).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let h = slab.alloc_bytes(5)?;
    /// slab.write_bytes(h, 0, b"hello")?;
    /// assert_eq!(slab.with_bytes(h, |b| b.to_ascii_uppercase())?, b"HELLO");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_bytes<R>(&self, handle: BytesHandle, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let len = self.checked_len(handle)?;
        with_scratch(len, |copy| {
            self.read_bytes(handle, 0, copy)?;
            Ok(f(copy))
        })
    }

    /// Runs `f` on a private copy of the handle's bytes, then writes it
    /// back (the same thread-kept buffer as [`with_bytes`](Slab::with_bytes)).
    /// Not atomic against other writers of the slot: coordinate those (a
    /// [`Locked`](crate::Locked) value does).
    pub fn update_bytes(&self, handle: BytesHandle, f: impl FnOnce(&mut [u8])) -> Result<()> {
        let len = self.checked_len(handle)?;
        with_scratch(len, |copy| {
            self.read_bytes(handle, 0, copy)?;
            f(copy);
            self.write_bytes(handle, 0, copy)
        })
    }
}

/// The largest buffer a thread keeps between calls of `with_bytes` and
/// `update_bytes` (the default largest class).
const SCRATCH_KEPT: usize = 1 << 20;

/// Runs `f` on `len` bytes of this thread's scratch buffer (its contents
/// are left from earlier calls: callers overwrite them first). A call made
/// from inside `f` (`f` itself calling `with_bytes`), or during thread
/// teardown, finds the buffer taken and uses a new one.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buf = SCRATCH.try_with(|s| s.take()).unwrap_or_default();
    if buf.len() < len {
        // Exactly `len`, not `resize`'s doubling: a buffer grown past
        // SCRATCH_KEPT by the doubling alone would be dropped after the call
        // and made again by the next.
        buf.reserve_exact(len - buf.len());
        buf.resize(len, 0);
    }
    let answer = f(&mut buf[..len]);
    if buf.capacity() <= SCRATCH_KEPT {
        let _ = SCRATCH.try_with(|s| s.set(buf));
    }
    answer
}
