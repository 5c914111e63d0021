//! Large payloads without an extra copy: fill a new slot in place before
//! anyone has its handle ([`BytesLoan`], [`Loan`]), and read a live slot in
//! place with its generation checked afterwards ([`SlotView`]).
//!
//! `write_bytes` of a 64 KiB message built in a `Vec` copies it twice (into
//! the `Vec`, into the slot), and `read_bytes` out again into another. A loan
//! is a writer over a freshly allocated slot: serialize straight into it
//! (it is an [`io::Write`]), or write fields at their
//! offsets, then [`into_handle`](BytesLoan::into_handle) and send the handle.
//! Until then nobody else has the handle; a loan dropped unpublished frees
//! its slot, and one whose process dies is freed by
//! [`reclaim_dead`](crate::Slab::reclaim_dead) like any of its slots.
//!
//! [`Slab::read_in_place`] runs a closure over a [`SlotView`]: read the
//! header you need, hash or stream the bytes out ([`SlotView::reader`] is an
//! [`io::Read`]), with no copy of the whole slot. The view is
//! only lent to the closure (it cannot outlive it); when the closure returns
//! the slot's generation is checked, and if the slot was freed or reused
//! meanwhile the result is [`Error::StaleHandle`] and the closure's answer
//! is thrown away. The closure may have seen bytes of the slot's next life,
//! so it must not act on them before that check: compute, don't commit.
//!
//! Both stay safe by copying: every access is a bounds-checked copy between
//! the slot and the caller's memory (at memory speed for long ones, see
//! `docs/DESIGN.md`, "Copies at memory speed"), because another process may
//! write the slot at any moment and a `&[u8]` into memory that changes
//! underneath is undefined behaviour. For a true `&[u8]`/`&mut [u8]` into
//! the mapping there are three `unsafe` escape hatches,
//! [`SlotView::as_slice`], [`BytesLoan::as_mut_slice`] and
//! [`Loan::as_mut`], whose caller promises that nothing in the program
//! writes (or, for a loan, touches) those bytes meanwhile, stale views of
//! the slot's earlier lives included — the convention of `memmap2`'s
//! `Mmap::map`.
//!
//! The protocol is at pool level (`pool::view`): open (check the handle
//! once), copy, close (check it again).

use crate::error::{Error, Result};
use crate::format::SlotRef;
use crate::pool::{Pool, SlotAddr};
use crate::region::MmapRegion;
use crate::slab::{BytesHandle, Slab};
use crate::typed::{Handle, SliceHandle};
use bytemuck::Pod;
use std::io;
use std::marker::PhantomData;

/// A new slot of `len` bytes, lent to this thread to fill before anyone
/// else can name it: from [`Slab::loan_bytes`].
///
/// Writes go straight into the slot ([`write_at`](Self::write_at), or
/// sequentially through [`io::Write`]); [`into_handle`](Self::into_handle)
/// ends the loan and gives the handle to pass on. Dropped without that, the
/// slot is freed. The slot starts with whatever bytes it last held (nothing
/// is zero-filled): write every byte a reader will look at.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
/// use std::io::Write;
/// let mut loan = slab.loan_bytes(64 << 10)?;
/// for i in 0..1024u32 {
///     write!(loan, "line {i:04}\n")?;   // straight into the slot
/// }
/// let message = loan.into_written_handle(); // the bytes written, 10 KiB
/// assert_eq!(message.len(), 1024 * 10);
/// let mut first = [0u8; 10];
/// slab.read_bytes(message, 0, &mut first)?;
/// assert_eq!(&first, b"line 0000\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "a loan dropped without `into_handle` frees its slot"]
pub struct BytesLoan<'s> {
    slab: &'s Slab,
    handle: BytesHandle,
    /// Where the next `io::Write` goes, and the most bytes written that way.
    cursor: usize,
    written: usize,
}

impl<'s> BytesLoan<'s> {
    /// The slot's length as lent (what [`loan_bytes`](Slab::loan_bytes)
    /// was asked for).
    pub fn len(&self) -> usize {
        self.handle.len()
    }

    /// Whether the loan has no bytes.
    pub fn is_empty(&self) -> bool {
        self.handle.len() == 0
    }

    /// Copies `src` into the slot at `offset`: [`Error::OutOfBounds`] past
    /// the loan's length. Does not move the [`io::Write`] cursor.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        self.slab.write_bytes(self.handle, offset, src)
    }

    /// Copies bytes back out of the slot (what this loan wrote there, or
    /// the slot's old bytes where it wrote nothing).
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.slab.read_bytes(self.handle, offset, dst)
    }

    /// Where the next [`io::Write`] write lands (also movable with
    /// [`set_position`](Self::set_position)).
    pub fn position(&self) -> usize {
        self.cursor
    }

    /// Moves the [`io::Write`] cursor (at most to [`len`](Self::len)); a
    /// move alone writes nothing and does not lengthen
    /// [`into_written_handle`](Self::into_written_handle).
    pub fn set_position(&mut self, at: usize) {
        self.cursor = at.min(self.len());
    }

    /// The slot's bytes as one `&mut [u8]` into the mapping, for code that
    /// must fill a slice itself (a decoder writing its output): the true
    /// zero-copy path. To fill from an [`io::Read`], the safe
    /// [`fill_from`](Self::fill_from) does as well for most sources.
    ///
    /// # Safety
    /// While the returned slice lives, nothing else in the whole program —
    /// any thread or process — may read or write these bytes. The loan's
    /// handle is not out yet, but that is not enough: an earlier life of the
    /// same slot may still be reachable in this process (an atomics view, a
    /// lock guard or a notifier kept across the free that ended it, a
    /// `write_bytes` that checked the handle just before the free and is
    /// still copying) or in another one, as may [`Region`] views of the file
    /// and any process writing the file by offset. Keeping those away is the
    /// caller's promise. Rust assumes a `&mut [u8]` is exclusive; an access
    /// by anyone else meanwhile is undefined behaviour in this process.
    ///
    /// [`Region`]: crate::region::Region
    pub unsafe fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        let pool = self.slab.pool()?;
        let addr = pool.open_span(&self.handle.raw(), self.len())?;
        let ptr = pool.span_ptr(addr);
        // SAFETY: `ptr` is the start of the live slot, valid for its
        // capacity (at least `len`) while the slab (borrowed for 's, and by
        // `&mut self` for the slice's life) lives; any bytes are a valid
        // `u8`; exclusivity is the caller's promise.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr, self.len()) })
    }

    /// Fills the loan from `source` at the cursor, through a 16 KiB buffer
    /// on the stack, until the loan is full or `source` ends; returns the
    /// bytes read. Safe, and as fast as the copies (`read_exact` into
    /// [`as_mut_slice`](Self::as_mut_slice) saves one in-cache copy).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// use std::io::Read;
    /// let mut loan = slab.loan_bytes(100_000)?;
    /// let n = loan.fill_from(std::io::repeat(7).take(60_000))?;
    /// assert_eq!(n, 60_000);
    /// let message = loan.into_written_handle();
    /// assert_eq!(message.len(), 60_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fill_from(&mut self, mut source: impl io::Read) -> io::Result<usize> {
        let mut chunk = [0u8; 16 << 10];
        let mut total = 0;
        while self.cursor < self.len() {
            let want = chunk.len().min(self.len() - self.cursor);
            let n = match source.read(&mut chunk[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            io::Write::write_all(self, &chunk[..n])?;
            total += n;
        }
        Ok(total)
    }

    /// Ends the loan: the handle of the whole slot, to pass on. The slot is
    /// this process's, as after [`alloc_bytes`](Slab::alloc_bytes).
    pub fn into_handle(self) -> BytesHandle {
        let h = self.handle;
        std::mem::forget(self);
        h
    }

    /// Ends the loan: the handle of the bytes from offset 0 to the end of
    /// the furthest [`io::Write`] write (or [`fill_from`](Self::fill_from)),
    /// for a message whose length was not known when the slot was lent.
    /// Bytes before that end that no write covered (skipped over with
    /// [`set_position`](Self::set_position)) hold what the slot held
    /// before: an earlier allocation's bytes.
    pub fn into_written_handle(self) -> BytesHandle {
        let h = BytesHandle::from_raw(self.handle.raw(), self.written);
        std::mem::forget(self);
        h
    }
}

impl io::Write for BytesLoan<'_> {
    /// Writes at the cursor, as much as fits (a full loan takes 0 bytes,
    /// which `write_all` reports as [`io::ErrorKind::WriteZero`], as a
    /// `&mut [u8]` does).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len() - self.cursor);
        self.slab
            .write_bytes(self.handle, self.cursor, &buf[..n])
            .map_err(io::Error::other)?;
        self.cursor += n;
        self.written = self.written.max(self.cursor);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BytesLoan<'_> {
    fn drop(&mut self) {
        // Unpublished: nobody else has the handle, so the slot goes back.
        // A failure (a forked child's copy, a slot a hostile peer freed)
        // leaves it to its owner or to `reclaim_dead`.
        let _ = self.slab.free(self.handle);
    }
}

/// A new slot for a `T`, lent to this thread to fill in place: from
/// [`Slab::loan`]. Writes whole values or single fields at their offsets
/// (no `T` is built on the stack, so this suits large `T`);
/// [`into_handle`](Self::into_handle) ends the loan. Dropped without that,
/// the slot is freed. Nothing is zero-filled.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Frame { id: u64, len: u64, pixels: [u8; 60_000] }
///
/// let mut loan = slab.loan::<Frame>()?;
/// loan.write_at(std::mem::offset_of!(Frame, id), &7u64)?;
/// loan.write_at(std::mem::offset_of!(Frame, len), &60_000u64)?;
/// loan.write_at(std::mem::offset_of!(Frame, pixels), &[0x80u8; 60_000])?;
/// let frame = loan.into_handle();
/// let len: u64 = slab.read_in_place(frame, |v| v.get(std::mem::offset_of!(Frame, len)))??;
/// assert_eq!(len, 60_000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "a loan dropped without `into_handle` frees its slot"]
pub struct Loan<'s, T> {
    bytes: BytesLoan<'s>,
    _type: PhantomData<fn() -> T>,
}

impl<'s, T: Pod> Loan<'s, T> {
    /// Copies the whole `value` in.
    pub fn write(&mut self, value: &T) -> Result<()> {
        self.bytes.write_at(0, bytemuck::bytes_of(value))
    }

    /// Copies `value` in at byte `offset` of the `T` (a field's
    /// [`offset_of!`](std::mem::offset_of)): [`Error::OutOfBounds`] if it
    /// does not fit inside the `T`.
    pub fn write_at<U: Pod>(&mut self, offset: usize, value: &U) -> Result<()> {
        self.bytes.write_at(offset, bytemuck::bytes_of(value))
    }

    /// The loan as bytes (its [`io::Write`], `read_at`, and the `unsafe`
    /// [`as_mut_slice`](BytesLoan::as_mut_slice)).
    pub fn bytes(&mut self) -> &mut BytesLoan<'s> {
        &mut self.bytes
    }

    /// The slot as one `&mut T` into the mapping.
    ///
    /// # Safety
    /// As for [`BytesLoan::as_mut_slice`]: nothing else in the program
    /// (stale views of the slot's earlier lives included) reads or writes
    /// the slot while the reference lives.
    pub unsafe fn as_mut(&mut self) -> Result<&mut T> {
        // SAFETY: forwarded: the caller's promise.
        let bytes = unsafe { self.bytes.as_mut_slice() }?;
        // The slot is aligned for `T` (its class was chosen for
        // `align_of::<T>()`) and exactly `size_of::<T>()` long here, so
        // this cannot fail for a loan made by `Slab::loan`.
        bytemuck::try_from_bytes_mut(bytes).map_err(|_| Error::InvalidHandle {
            why: "the loaned slot does not fit the type",
        })
    }

    /// Ends the loan: the typed handle, to pass on.
    pub fn into_handle(self) -> Handle<T> {
        Handle::from_raw(self.bytes.into_handle().raw())
    }
}

/// What [`Slab::read_in_place`] can view: a handle and how many of its
/// slot's bytes it covers. Implemented for [`BytesHandle`] (its length),
/// [`Handle<T>`] (`size_of::<T>()`) and [`SliceHandle<T>`] (its elements).
pub trait InPlace: sealed::Sealed + Copy {
    /// The slot, and the number of bytes the view covers.
    #[doc(hidden)]
    fn span(self) -> (SlotRef, usize);
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::slab::BytesHandle {}
    impl<T> Sealed for crate::typed::Handle<T> {}
    impl<T> Sealed for crate::typed::SliceHandle<T> {}
}

impl InPlace for BytesHandle {
    fn span(self) -> (SlotRef, usize) {
        (self.raw(), self.len())
    }
}

impl<T: Pod> InPlace for Handle<T> {
    fn span(self) -> (SlotRef, usize) {
        (self.raw(), size_of::<T>())
    }
}

impl<T: Pod> InPlace for SliceHandle<T> {
    fn span(self) -> (SlotRef, usize) {
        (self.raw(), self.len().saturating_mul(size_of::<T>()))
    }
}

/// A live slot's bytes, lent to the closure of [`Slab::read_in_place`].
/// Every read is a bounds-checked copy (see the [module doc](self)); the
/// generation is checked once the closure returns.
#[derive(Debug)]
pub struct SlotView<'v> {
    pool: &'v Pool<MmapRegion>,
    addr: SlotAddr,
    len: usize,
}

impl<'v> SlotView<'v> {
    /// Bytes in view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies bytes `offset..offset + dst.len()` out: [`Error::OutOfBounds`]
    /// past the view's length.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        match offset.checked_add(dst.len()) {
            Some(end) if end <= self.len => self.pool.copy_from_span(self.addr, offset as u64, dst),
            _ => Err(Error::OutOfBounds {
                offset: offset as u64,
                len: dst.len() as u64,
                capacity: self.len as u64,
            }),
        }
    }

    /// The `U` at byte `offset` (a field's
    /// [`offset_of!`](std::mem::offset_of)), copied out.
    pub fn get<U: Pod>(&self, offset: usize) -> Result<U> {
        let mut value = U::zeroed();
        self.read_at(offset, bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// A reader over the view's bytes from the start, for
    /// [`io::copy`] to a socket or file, a hasher, a parser.
    pub fn reader(&self) -> SlotReader<'_, 'v> {
        SlotReader { view: self, at: 0 }
    }

    /// The viewed bytes as one `&[u8]` into the mapping: the true zero-copy
    /// read.
    ///
    /// # Safety
    /// While the returned slice lives, nothing in the whole program writes
    /// these bytes: no other process or thread, through a handle, a view
    /// or guard kept from an earlier life of the slot, or the file. The
    /// caller knows the slot's protocol (for instance: its writer published
    /// it and never writes it again, no one frees it before this closure
    /// returns, and no stale view of it exists). Rust assumes memory behind
    /// a `&[u8]` does not change; a write meanwhile is undefined behaviour
    /// in this process, and the generation check after the closure cannot
    /// undo it.
    pub unsafe fn as_slice(&self) -> &[u8] {
        let ptr = self.pool.span_ptr(self.addr);
        // SAFETY: `ptr` is the start of the slot, valid for its capacity
        // (at least `len`, checked when the view was opened) while the pool
        // (borrowed for 'v) lives; that nothing writes it is the caller's
        // promise.
        unsafe { std::slice::from_raw_parts(ptr, self.len) }
    }
}

/// An [`io::Read`] over a [`SlotView`]: from [`SlotView::reader`].
#[derive(Debug)]
pub struct SlotReader<'a, 'v> {
    view: &'a SlotView<'v>,
    at: usize,
}

impl io::Read for SlotReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.view.len - self.at);
        self.view
            .read_at(self.at, &mut buf[..n])
            .map_err(io::Error::other)?;
        self.at += n;
        Ok(n)
    }
}

impl Slab {
    /// Lends a new slot of `len` bytes to fill in place (see [`BytesLoan`]).
    /// Errors as [`alloc_bytes`](Slab::alloc_bytes).
    pub fn loan_bytes(&self, len: usize) -> Result<BytesLoan<'_>> {
        Ok(BytesLoan {
            slab: self,
            handle: self.alloc_bytes(len)?,
            cursor: 0,
            written: 0,
        })
    }

    /// Lends a new slot for a `T` to fill in place (see [`Loan`]). Errors as
    /// [`alloc`](Slab::alloc).
    pub fn loan<T: Pod>(&self) -> Result<Loan<'_, T>> {
        let (_, raw, _) = self.alloc_slot(size_of::<T>() as u64, align_of::<T>() as u64)?;
        Ok(Loan {
            bytes: BytesLoan {
                slab: self,
                handle: BytesHandle::from_raw(raw, size_of::<T>()),
                cursor: 0,
                written: 0,
            },
            _type: PhantomData,
        })
    }

    /// Runs `f` over the live slot `handle` names, in place (see
    /// [`SlotView`]), and returns its answer if the slot was still that
    /// allocation when `f` returned; [`Error::StaleHandle`] if it was freed
    /// or reused meanwhile (the answer is dropped: `f` may have seen the
    /// next life's bytes). The outer `Result` is the handle's; `f`'s own
    /// (from [`SlotView::read_at`], say) is the inner one.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let h = slab.alloc_bytes(64 << 10)?;
    /// slab.write_bytes(h, 0, &[7u8; 64 << 10])?;
    /// // A checksum of 64 KiB, streamed out 4 KiB at a time: no copy of
    /// // the whole slot.
    /// let sum = slab.read_in_place(h, |view| {
    ///     let mut sum = 0u64;
    ///     let mut chunk = [0u8; 4096];
    ///     for at in (0..view.len()).step_by(chunk.len()) {
    ///         view.read_at(at, &mut chunk)?;
    ///         sum += chunk.iter().map(|&b| b as u64).sum::<u64>();
    ///     }
    ///     Ok::<_, shmslab::Error>(sum)
    /// })??;
    /// assert_eq!(sum, 7 * 65536);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_in_place<H: InPlace, R>(
        &self,
        handle: H,
        f: impl for<'v> FnOnce(&SlotView<'v>) -> R,
    ) -> Result<R> {
        let (slot, len) = handle.span();
        let pool = self.pool()?;
        let addr = pool.open_span(&slot, len)?;
        let answer = f(&SlotView { pool, addr, len });
        pool.close_span(&slot, addr)?;
        Ok(answer)
    }
}
