//! Shared atomics on slot data: `load`, `store`, `fetch_add`,
//! `compare_exchange`, ... on the 64-bit fields of a value that lives in the
//! segment, from any process, in place.
//!
//! A value type `T` (a `Pod` struct whose fields are all `u64`) gets a *view
//! type* of the same layout whose fields are [`AtomicU64`]s; the
//! [`atomic_fields!`](crate::atomic_fields) macro writes the view and proves
//! the layouts match at compile time. [`Slab::atomic`] checks a
//! [`Handle<T>`] once and returns `&T::View` into the mapping, so
//!
//! ```
//! use shmslab::bytemuck::{Pod, Zeroable};
//! use std::sync::atomic::Ordering::Relaxed;
//!
//! #[repr(C)]
//! #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
//! #[bytemuck(crate = "shmslab::bytemuck")]
//! struct Stats { requests: u64, errors: u64 }
//! impl shmslab::Schema for Stats {}
//!
//! shmslab::atomic_fields! {
//!     /// `Stats`, field by field atomic.
//!     pub struct StatsAtomics for Stats { pub requests, pub errors }
//! }
//!
//! # let dir = tempfile::tempdir()?;
//! # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
//! let stats = slab.root_or_insert("stats", Stats::default())?;
//! let view = slab.atomic(stats)?;          // checked here, once
//! view.requests.fetch_add(1, Relaxed);     // any process, no lost update
//! view.errors.fetch_max(3, Relaxed);
//! assert_eq!(slab.read(stats)?.requests, 1); // a copy, as ever
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Views are of `u64` fields only (the width of the copy path's words):
//! keep a flag or a small counter in a `u64`, and cast a signed one.
//!
//! # One width
//!
//! The copy path touches every byte of a slot as part of its aligned 8-byte
//! word, through an `AtomicU64` (the single-width rule of `sync`), and so do
//! these views: a `read` or `write` of the value racing a `fetch_add` on one
//! of its fields is two atomic accesses of the same width, never a mixed-size
//! race (Miri checks this on heap segments). A `read` racing atomic updates
//! sees each field whole, but the fields need not be from one instant.
//!
//! # A view held across a free
//!
//! The view is checked when made (segment, slot, generation, size); the
//! operations through it are plain atomics on the slot's memory, with no
//! check, so they cost what a `MAP_SHARED` `AtomicU64` costs. The memory stays
//! mapped while the `Slab` lives, so a view is never a dangling reference,
//! and never reaches outside its slot. But if the slot is freed while a view
//! is held, operations through the view act on whatever the slot holds next
//! (another allocation's words): a logic error like using an index after
//! removing its element, not undefined behaviour — unless the next life's
//! owner holds a `&mut` into the slot through an `unsafe` escape hatch
//! ([`BytesLoan::as_mut_slice`](crate::BytesLoan::as_mut_slice)), whose
//! promise such a stale view breaks. Keep a view only while the
//! slot is known to be live (a root, or a slot this code frees itself), or
//! make a new one per use, which checks the handle again.

use crate::error::Result;
use crate::slab::Slab;
use crate::typed::Handle;
use bytemuck::Pod;
#[cfg(doc)]
use std::sync::atomic::AtomicU64;

/// A `Pod` value type whose every field is a `u64`, with a view type of the
/// same layout made of [`AtomicU64`]s. Implement it with
/// [`atomic_fields!`](crate::atomic_fields), which checks the layouts.
///
/// # Safety
///
/// `View` is `#[repr(C)]` and consists of exactly `size_of::<Self>() / 8`
/// fields, all of type [`AtomicU64`] (no other fields, no padding), and
/// `size_of::<Self>()` is a multiple of 8: a `&View` made from the slot's
/// words is then a valid reference to memory of the right size and
/// alignment.
pub unsafe trait AtomicFields: Pod {
    /// The view: `Self`'s fields as atomics.
    type View: Sync;
}

/// Writes the atomic view of a `Pod` struct of `u64` fields and implements
/// [`AtomicFields`] for the struct, proving at compile time that the two
/// layouts match (same size, every named field a `u64` at the same offset as
/// its atomic twin, every byte covered).
///
/// ```
/// use shmslab::bytemuck::{Pod, Zeroable};
///
/// #[repr(C)]
/// #[derive(Clone, Copy, Pod, Zeroable)]
/// #[bytemuck(crate = "shmslab::bytemuck")]
/// struct Counters { hits: u64, misses: u64, bytes: u64 }
///
/// shmslab::atomic_fields! {
///     pub struct CountersAtomics for Counters { pub hits, pub misses, pub bytes }
/// }
/// ```
///
/// A field left out, or one that is not a `u64`, does not compile:
///
/// ```compile_fail
/// use shmslab::bytemuck::{Pod, Zeroable};
/// #[repr(C)]
/// #[derive(Clone, Copy, Pod, Zeroable)]
/// #[bytemuck(crate = "shmslab::bytemuck")]
/// struct Counters { hits: u64, misses: u64 }
/// shmslab::atomic_fields! { struct CountersAtomics for Counters { hits } }
/// ```
#[macro_export]
macro_rules! atomic_fields {
    (
        $(#[$meta:meta])*
        $vis:vis struct $view:ident for $value:ty { $($fvis:vis $field:ident),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        $vis struct $view {
            $( $fvis $field: ::std::sync::atomic::AtomicU64, )+
        }

        // Every named field of the value is a `u64`...
        const _: fn(&$value) = |v| { $( let _: &::core::primitive::u64 = &v.$field; )+ };
        // ...at its twin's offset, and together they are the whole value.
        const _: () = {
            $( ::core::assert!(
                ::core::mem::offset_of!($value, $field) == ::core::mem::offset_of!($view, $field),
                "a field of the value is not at the offset of its atomic twin"
            ); )+
            ::core::assert!(
                ::core::mem::size_of::<$value>() == ::core::mem::size_of::<$view>(),
                "the value has bytes that are not among the listed u64 fields"
            );
        };

        // SAFETY: `$view` is `repr(C)` of `AtomicU64`s only, and the asserts
        // above prove it has the value's size (so the value's size is a
        // multiple of 8, and the view has no padding).
        unsafe impl $crate::atomics::AtomicFields for $value {
            type View = $view;
        }
    };
}

impl Slab {
    /// The atomic view of the live `T` a handle names: its `u64` fields as
    /// [`AtomicU64`]s in the shared mapping (see [the module
    /// doc](crate::atomics) for the example and the rules). The handle is
    /// checked once, here; a view kept across a free of the slot acts on the
    /// slot's next life.
    #[inline]
    pub fn atomic<T: AtomicFields>(&self, handle: Handle<T>) -> Result<&T::View> {
        let n = size_of::<T>() / 8;
        let words = self.pool()?.live_words(&handle.raw(), n)?;
        debug_assert_eq!(words.len(), n);
        // SAFETY: `words` is `n` AtomicU64s of the slot (checked live and
        // large enough), 8-aligned, mapped while `self` lives (the borrow);
        // `T::View` is `repr(C)` of exactly `n` AtomicU64s (the
        // `AtomicFields` contract), so it has the slice's layout. Atomics may
        // alias memory other threads and processes change.
        Ok(unsafe { &*(words.as_ptr() as *const T::View) })
    }
}
