//! Named crash points for the fault-injection suite.
//!
//! With the `fault-injection` feature, a process whose environment has
//! `SHMSLAB_CRASH_AT=<name>` (or `<name>@<n>`, the n-th time it is reached)
//! sends itself `SIGKILL` at that point, exactly as a crash there would leave
//! the file. Without the feature every point compiles to nothing.

/// Every crash point, in protocol order.
pub const CRASH_POINTS: &[&str] = &[
    // growth
    "grow.locked",
    "grow.journaled",
    "grow.reserved",
    "grow.entry_written",
    "grow.size_stored",
    "grow.published",
    "grow.generation_bumped",
    // shared free lists (under the class lock)
    "refill.popped_meta",
    "refill.fresh_claimed",
    "flush.pushed_meta",
    // alloc and free on the hot path
    "alloc.meta_stored",
    "free.cas_done",
    // roots
    "root.reserved",
    "root.published",
    // peers
    "register.claiming",
    "reclaim.slot_freed",
];

#[cfg(feature = "fault-injection")]
mod imp {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);

    fn target() -> &'static Option<(String, u64)> {
        TARGET.get_or_init(|| {
            let spec = std::env::var("SHMSLAB_CRASH_AT").ok()?;
            match spec.split_once('@') {
                Some((name, n)) => Some((name.to_string(), n.parse().unwrap_or(1))),
                None => Some((spec, 1)),
            }
        })
    }

    #[inline]
    pub(crate) fn crash_point(name: &'static str) {
        if let Some((want, nth)) = target() {
            if want == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 >= *nth {
                // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
        }
    }
}

#[cfg(feature = "fault-injection")]
pub(crate) use imp::crash_point;

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn crash_point(_name: &'static str) {}
