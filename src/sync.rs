//! The atomics and thread facade.
//!
//! Every other module takes its atomics from here, never from `core::sync`
//! directly, so that the same protocol code runs on real atomics in normal
//! builds and on [loom]'s model-checked atomics under `RUSTFLAGS="--cfg loom"`
//! (the approach crossbeam takes with `crossbeam_loom`).
//!
//! [loom]: https://docs.rs/loom

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};

/// A mutex for process-local state. Under loom it is loom's model-checked
/// mutex; otherwise `parking_lot`'s, which is small and never poisons.
#[cfg(not(loom))]
pub(crate) type Mutex<T> = parking_lot::Mutex<T>;
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

#[cfg(loom)]
pub(crate) use loom_mutex::{Mutex, MutexGuard};

#[cfg(loom)]
mod loom_mutex {
    /// loom's mutex with `parking_lot`'s signature (`lock` does not return a
    /// `Result`), so callers are written once.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);
    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().expect("loom mutex poisoned")
        }
    }
}

/// Tells the scheduler (or loom) that this thread is waiting on another.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// A process-wide id, unique for the life of the process and never 0. Plain
/// std atomics: it only names `Slab` instances and is never model-checked.
pub(crate) fn next_instance_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Copies `dst.len()` bytes out of shared memory at `src` with relaxed
/// atomic loads, eight bytes at a time where aligned. Another process or
/// another thread of this one may be writing the same bytes: with atomic
/// accesses on both sides that makes the copy stale (which callers detect
/// with the slot's generation), never undefined behaviour.
///
/// Plain std atomics: process-local memory in loom models goes through
/// `HeapRegion`'s own word accessors instead.
///
/// # Safety
/// `src .. src + dst.len()` is valid for reads for the whole call, and every
/// other access to those bytes in this process is atomic too (they are only
/// reached through this function and [`store_shared`]).
#[inline(always)]
pub(crate) unsafe fn load_shared(src: *const u8, dst: &mut [u8]) {
    use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
    let len = dst.len();
    let mut i = 0;
    while i < len && (src as usize + i) % 8 != 0 {
        // SAFETY: in bounds and valid per the caller; one byte is aligned.
        dst[i] = unsafe { AtomicU8::from_ptr(src.add(i) as *mut u8) }.load(Relaxed);
        i += 1;
    }
    while i + 8 <= len {
        // SAFETY: in bounds per the caller, and 8-aligned (the loop above).
        let w = unsafe { AtomicU64::from_ptr(src.add(i) as *mut u64) }.load(Relaxed);
        dst[i..i + 8].copy_from_slice(&w.to_ne_bytes());
        i += 8;
    }
    while i < len {
        // SAFETY: as in the first loop.
        dst[i] = unsafe { AtomicU8::from_ptr(src.add(i) as *mut u8) }.load(Relaxed);
        i += 1;
    }
}

/// Copies `src` into shared memory at `dst` with relaxed atomic stores: the
/// counterpart of [`load_shared`].
///
/// # Safety
/// `dst .. dst + src.len()` is valid for writes for the whole call, and every
/// other access to those bytes in this process is atomic too.
#[inline(always)]
pub(crate) unsafe fn store_shared(src: &[u8], dst: *mut u8) {
    use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
    let len = src.len();
    let mut i = 0;
    while i < len && (dst as usize + i) % 8 != 0 {
        // SAFETY: in bounds and valid per the caller; one byte is aligned.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(src[i], Relaxed);
        i += 1;
    }
    while i + 8 <= len {
        let w = u64::from_ne_bytes(src[i..i + 8].try_into().expect("8 bytes"));
        // SAFETY: in bounds per the caller, and 8-aligned (the loop above).
        unsafe { AtomicU64::from_ptr(dst.add(i) as *mut u64) }.store(w, Relaxed);
        i += 8;
    }
    while i < len {
        // SAFETY: as in the first loop.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(src[i], Relaxed);
        i += 1;
    }
}
