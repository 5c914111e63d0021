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
