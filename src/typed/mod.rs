//! The typed layer: [`Handle<T>`] and [`SliceHandle<T>`] over `T: Pod`, and
//! named roots (in `roots`).
//!
//! Safety comes from `bytemuck`: `T: Pod` means every byte pattern is a valid
//! `T`, so copying out bytes another process wrote can never produce an
//! invalid value. Values are always copied in and out; no `&T` into shared
//! memory is ever handed out, because another process could change it
//! underneath (memmap2 #117).

pub(crate) mod roots;

pub use roots::RootInfo;
pub(crate) use roots::list_roots;

use crate::error::{Error, Fingerprint, Result};
use crate::format::SlotRef;
use crate::slab::Slab;
use bytemuck::{Pod, Zeroable};
use std::marker::PhantomData;

/// A type that can be stored under a named root: `Pod`, plus a schema id
/// that identifies its layout across builds.
///
/// The default id is a hash of the type's name, which is good within one
/// build; give a constant when processes built by different compilers or
/// crate versions share a segment, and change it whenever the layout changes.
///
/// ```
/// use shmslab::{Schema, bytemuck::{Pod, Zeroable}};
/// #[repr(C)]
/// #[derive(Clone, Copy, Pod, Zeroable)]
/// #[bytemuck(crate = "shmslab::bytemuck")]
/// struct Stats { hits: u64, misses: u64 }
/// impl Schema for Stats {
///     const SCHEMA_ID: Option<u64> = Some(0x5354_4154_5300_0001);
/// }
/// ```
pub trait Schema: Pod {
    /// A stable id for the type's layout; `None` hashes the type name.
    const SCHEMA_ID: Option<u64> = None;
}

macro_rules! schema_for {
    ($($t:ty),*) => { $(impl Schema for $t {})* };
}
schema_for!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64
);
impl<T: Schema, const N: usize> Schema for [T; N] where [T; N]: Pod {}

/// The type a root is asked for: the fingerprint the root table records,
/// and the name an error shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RootType {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) name: &'static str,
}

/// What a root of type `T` records and is checked against.
pub(crate) fn root_type<T: Schema>() -> RootType {
    let name = std::any::type_name::<T>();
    RootType {
        fingerprint: Fingerprint {
            size: size_of::<T>() as u64,
            align: align_of::<T>() as u64,
            schema: T::SCHEMA_ID.unwrap_or_else(|| fnv1a(name.as_bytes())),
        },
        name,
    }
}

/// What a slice root of `T`s records: `T`'s fingerprint with its schema
/// marked as a slice's, so a single `T` and a slice of them never match.
pub(crate) fn slice_root_type<T: Schema>() -> RootType {
    tagged(root_type::<T>(), SLICE_TAG, std::any::type_name::<[T]>())
}

/// A root kind of its own over `T`'s fingerprint: the schema mixed with
/// `tag` (each kind its own), and `name` for errors.
pub(crate) fn tagged(ty: RootType, tag: u64, name: &'static str) -> RootType {
    RootType {
        fingerprint: Fingerprint {
            schema: ty.fingerprint.schema ^ tag,
            ..ty.fingerprint
        },
        name,
    }
}

/// Marks a slice root's schema ("SLICE" in ASCII).
const SLICE_TAG: u64 = 0x534c_4943_4500_0000;

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The common part of every typed 16-byte handle (`Handle<T>`,
/// `Locked<T>`, `ChannelHandle<T>`): a `repr(transparent)` `SlotRef` with a
/// type marker, `NULL`/`is_null`/`Default`, `from_raw`/`raw`,
/// `to_bytes`/`from_bytes`, the value traits, `Into<SlotRef>` and `Pod`.
/// One definition, so the handle vocabulary cannot drift between them.
macro_rules! typed_handle {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[repr(transparent)]
        pub struct $name<T> {
            raw: $crate::format::SlotRef,
            _type: ::std::marker::PhantomData<fn() -> T>,
        }

        impl<T> $name<T> {
            /// The null handle: never made by an allocation, so using it is
            /// [`Error::NullHandle`](crate::Error::NullHandle). Also what
            /// [`Default`] and zeroed bytes give, which makes it the natural
            /// "empty" entry of a table of handles.
            pub const NULL: $name<T> = $name {
                raw: $crate::format::SlotRef::NULL,
                _type: ::std::marker::PhantomData,
            };

            /// Whether this is the null handle.
            pub fn is_null(self) -> bool {
                self.raw.is_null()
            }

            /// A typed handle over a raw one (checked when used).
            pub fn from_raw(raw: $crate::format::SlotRef) -> Self {
                $name {
                    raw,
                    _type: ::std::marker::PhantomData,
                }
            }

            /// The untyped handle of the slot.
            pub fn raw(self) -> $crate::format::SlotRef {
                self.raw
            }

            /// The handle as 16 bytes.
            pub fn to_bytes(self) -> [u8; 16] {
                self.raw.to_bytes()
            }

            /// A handle from 16 bytes (checked when used).
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self::from_raw($crate::format::SlotRef::from_bytes(bytes))
            }
        }

        impl<T> Default for $name<T> {
            /// The null handle.
            fn default() -> Self {
                Self::NULL
            }
        }
        impl<T> Clone for $name<T> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<T> Copy for $name<T> {}
        impl<T> PartialEq for $name<T> {
            fn eq(&self, other: &Self) -> bool {
                self.raw == other.raw
            }
        }
        impl<T> Eq for $name<T> {}
        impl<T> ::std::hash::Hash for $name<T> {
            fn hash<H: ::std::hash::Hasher>(&self, state: &mut H) {
                self.raw.hash(state)
            }
        }
        impl<T> ::std::fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(
                    f,
                    "{}<{}>({:?})",
                    stringify!($name),
                    ::std::any::type_name::<T>(),
                    self.raw
                )
            }
        }
        impl<T> From<$name<T>> for $crate::format::SlotRef {
            fn from(h: $name<T>) -> $crate::format::SlotRef {
                h.raw
            }
        }
        // SAFETY: `repr(transparent)` over `SlotRef` (Pod) plus a zero-sized
        // marker; all-zero bytes are a valid (if invalid-to-use) handle.
        unsafe impl<T: 'static> ::bytemuck::Zeroable for $name<T> {}
        // SAFETY: as above: no padding, no pointers, any bytes are a valid
        // value.
        unsafe impl<T: 'static> ::bytemuck::Pod for $name<T> {}
    };
}
pub(crate) use typed_handle;

typed_handle! {
    /// A handle to one `T` in a segment: 16 bytes, `Copy`, and itself `Pod`, so
    /// it can be sent through a pipe or stored inside another slot. It means the
    /// same slot in every process attached to the segment, and every use checks
    /// it (segment, slot, generation), so a forged or stale handle is an error.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// use shmslab::Handle;
    /// let h: Handle<u64> = slab.alloc(7u64)?;
    /// let wire: [u8; 16] = h.to_bytes();            // send it anywhere
    /// let back = Handle::<u64>::from_bytes(wire);
    /// assert_eq!(slab.read(back)?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    Handle
}

/// A handle to `len` consecutive `T`s in one slot: 24 bytes, `Copy`, `Pod`.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
/// let v = slab.alloc_slice::<u32>(100)?;
/// assert_eq!(v.len(), 100);
/// slab.set(v, 3, 42)?;
/// assert_eq!(slab.get(v, 3)?, 42);
/// slab.write_from(v, &[1, 2, 3])?;
/// let mut out = [0u32; 4];
/// slab.read_into(v, &mut out)?;
/// assert_eq!(out, [1, 2, 3, 42]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[repr(C)]
pub struct SliceHandle<T> {
    raw: SlotRef,
    len: u64,
    _type: PhantomData<fn() -> T>,
}

impl<T> SliceHandle<T> {
    /// The null handle (all zero bytes, length 0): using it is
    /// [`Error::NullHandle`]. Also what [`Default`] gives.
    pub const NULL: SliceHandle<T> = SliceHandle {
        raw: SlotRef::NULL,
        len: 0,
        _type: PhantomData,
    };

    /// Whether this is [`SliceHandle::NULL`].
    pub fn is_null(self) -> bool {
        self.raw.is_null() && self.len == 0
    }

    /// A slice handle over a raw one and a length (checked when used).
    pub fn from_raw(raw: SlotRef, len: usize) -> Self {
        SliceHandle {
            raw,
            len: len as u64,
            _type: PhantomData,
        }
    }

    /// Elements in the slice.
    pub fn len(self) -> usize {
        self.len as usize
    }

    /// Whether the slice has no elements.
    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// The untyped handle of the slot holding the slice.
    pub fn raw(self) -> SlotRef {
        self.raw
    }

    /// The handle as 24 bytes: the slot's 16, then the length.
    pub fn to_bytes(self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..16].copy_from_slice(&self.raw.to_bytes());
        out[16..].copy_from_slice(&self.len.to_ne_bytes());
        out
    }

    /// A handle from 24 bytes (checked when used, the length included).
    pub fn from_bytes(bytes: [u8; 24]) -> Self {
        let (slot, len) = bytes.split_at(16);
        SliceHandle {
            raw: SlotRef::from_bytes(slot.try_into().expect("16 bytes")),
            len: u64::from_ne_bytes(len.try_into().expect("8 bytes")),
            _type: PhantomData,
        }
    }
}

impl<T> Default for SliceHandle<T> {
    /// [`SliceHandle::NULL`].
    fn default() -> Self {
        Self::NULL
    }
}

impl<T> Clone for SliceHandle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SliceHandle<T> {}
impl<T> PartialEq for SliceHandle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw && self.len == other.len
    }
}
impl<T> Eq for SliceHandle<T> {}
impl<T> std::fmt::Debug for SliceHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SliceHandle<{}>({:?}, len {})",
            std::any::type_name::<T>(),
            self.raw,
            self.len
        )
    }
}
impl<T> From<SliceHandle<T>> for SlotRef {
    fn from(h: SliceHandle<T>) -> SlotRef {
        h.raw
    }
}
// SAFETY: `repr(C)` of SlotRef (16 bytes, Pod) and u64 (8-aligned at offset
// 16): no padding; the marker is zero-sized.
unsafe impl<T: 'static> Zeroable for SliceHandle<T> {}
// SAFETY: as above.
unsafe impl<T: 'static> Pod for SliceHandle<T> {}

/// Turns "the access does not fit the slot" into "this handle is not for
/// this type": with a checked handle, only a forged type or length can cause it.
fn not_for_type(e: Error) -> Error {
    match e {
        Error::OutOfBounds { .. } => Error::InvalidHandle {
            why: "the type or length does not fit the slot it names",
        },
        e => e,
    }
}

impl Slab {
    /// Allocates a slot for a `T` and moves `value` into it.
    ///
    /// A `T` larger than the largest class is [`Error::TooLarge`]; one aligned
    /// beyond what any class gives (at most 64 bytes) is [`Error::Misaligned`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let h = slab.alloc([1u64, 2, 3])?;
    /// assert_eq!(slab.read(h)?, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline(always)]
    pub fn alloc<T: Pod>(&self, value: T) -> Result<Handle<T>> {
        let (pool, raw, addr) = self.alloc_slot(size_of::<T>() as u64, align_of::<T>() as u64)?;
        pool.fill_new(addr, 0, bytemuck::bytes_of(&value))?;
        Ok(Handle::from_raw(raw))
    }

    /// Allocates a slot for a `T` holding zeroes (no `T` is built on the
    /// stack, so this works for large `T`).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let h = slab.alloc_zeroed::<[u32; 8]>()?;
    /// assert_eq!(slab.read(h)?, [0; 8]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn alloc_zeroed<T: Pod>(&self) -> Result<Handle<T>> {
        let raw = self.alloc_zeroed_bytes(size_of::<T>() as u64, align_of::<T>() as u64)?;
        Ok(Handle::from_raw(raw))
    }

    /// A slot of at least `bytes` bytes aligned to `align`, its first
    /// `bytes` bytes zeroed.
    pub(crate) fn alloc_zeroed_bytes(&self, bytes: u64, align: u64) -> Result<SlotRef> {
        let (pool, raw, addr) = self.alloc_slot(bytes, align)?;
        let zeros = [0u8; 4096];
        let mut at = 0u64;
        while at < bytes {
            let n = (bytes - at).min(zeros.len() as u64) as usize;
            pool.fill_new(addr, at, &zeros[..n])?;
            at += n as u64;
        }
        Ok(raw)
    }

    /// Copies the `T` out of its slot. If the slot is freed or reused while
    /// it is being read, the result is [`Error::StaleHandle`], never the bytes.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let h = slab.alloc(3.5f64)?;
    /// assert_eq!(slab.read(h)?, 3.5);
    /// slab.free(h)?;
    /// assert!(matches!(slab.read(h), Err(shmslab::Error::StaleHandle { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline(always)]
    pub fn read<T: Pod>(&self, handle: Handle<T>) -> Result<T> {
        let mut value = T::zeroed();
        self.pool()?
            .read_at(&handle.raw, 0, bytemuck::bytes_of_mut(&mut value))
            .map_err(not_for_type)?;
        Ok(value)
    }

    /// Copies `value` into the slot.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let h = slab.alloc(1u32)?;
    /// slab.write(h, 2)?;
    /// assert_eq!(slab.read(h)?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline(always)]
    pub fn write<T: Pod>(&self, handle: Handle<T>, value: T) -> Result<()> {
        self.pool()?
            .write_at(&handle.raw, 0, bytemuck::bytes_of(&value))
            .map_err(not_for_type)
    }

    /// Reads the `T`, lets `f` change a private copy, and writes it back.
    /// Not atomic against other writers of the same slot: coordinate those
    /// yourself (or keep atomics inside `T`'s protocol).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let h = slab.alloc([0u64; 2])?;
    /// slab.update(h, |v| v[1] += 5)?;
    /// assert_eq!(slab.read(h)?, [0, 5]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn update<T: Pod, R>(&self, handle: Handle<T>, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let mut value = self.read(handle)?;
        let r = f(&mut value);
        self.write(handle, value)?;
        Ok(r)
    }

    /// Allocates a slot for `len` `T`s, zeroed.
    pub fn alloc_slice<T: Pod>(&self, len: usize) -> Result<SliceHandle<T>> {
        self.pool()?;
        let bytes = (size_of::<T>() as u64)
            .checked_mul(len as u64)
            .ok_or_else(|| Error::TooLarge {
                size: u64::MAX,
                largest: *self.class_sizes().last().unwrap_or(&0),
            })?;
        let raw = self.alloc_zeroed_bytes(bytes, align_of::<T>() as u64)?;
        Ok(SliceHandle {
            raw,
            len: len as u64,
            _type: PhantomData,
        })
    }

    fn element_offset<T>(&self, slice: &SliceHandle<T>, index: usize) -> Result<u64> {
        let out_of_bounds = || slice.raw.past_len(index as u64, 1, slice.len);
        if index as u64 >= slice.len {
            return Err(out_of_bounds());
        }
        // The length comes from the handle, which may be forged: a product
        // that overflows is out of bounds, not a wrapped offset.
        (index as u64)
            .checked_mul(size_of::<T>() as u64)
            .ok_or_else(out_of_bounds)
    }

    /// Copies element `index` out of the slice.
    #[inline]
    pub fn get<T: Pod>(&self, slice: SliceHandle<T>, index: usize) -> Result<T> {
        let pool = self.pool()?;
        let at = self.element_offset(&slice, index)?;
        let mut value = T::zeroed();
        pool.read_at(&slice.raw, at, bytemuck::bytes_of_mut(&mut value))
            .map_err(not_for_type)?;
        Ok(value)
    }

    /// Copies `value` into element `index` of the slice.
    #[inline]
    pub fn set<T: Pod>(&self, slice: SliceHandle<T>, index: usize, value: T) -> Result<()> {
        let pool = self.pool()?;
        let at = self.element_offset(&slice, index)?;
        pool.write_at(&slice.raw, at, bytemuck::bytes_of(&value))
            .map_err(not_for_type)
    }

    /// Copies the first `dst.len()` elements of the slice into `dst`.
    pub fn read_into<T: Pod>(&self, slice: SliceHandle<T>, dst: &mut [T]) -> Result<()> {
        let pool = self.pool()?;
        self.check_bulk(&slice, dst.len())?;
        pool.read_at(&slice.raw, 0, bytemuck::cast_slice_mut(dst))
            .map_err(not_for_type)
    }

    /// Copies `src` into the first `src.len()` elements of the slice.
    pub fn write_from<T: Pod>(&self, slice: SliceHandle<T>, src: &[T]) -> Result<()> {
        let pool = self.pool()?;
        self.check_bulk(&slice, src.len())?;
        pool.write_at(&slice.raw, 0, bytemuck::cast_slice(src))
            .map_err(not_for_type)
    }

    fn check_bulk<T>(&self, slice: &SliceHandle<T>, n: usize) -> Result<()> {
        if n as u64 > slice.len {
            return Err(slice.raw.past_len(0, n as u64, slice.len));
        }
        Ok(())
    }
}
