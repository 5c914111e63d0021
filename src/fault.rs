//! Named crash points and failing OFD locks for the fault-injection suite.
//!
//! With the `fault-injection` feature, a process whose environment has
//! `SHMSLAB_CRASH_AT=<name>` (or `<name>@<n>`, the n-th time it is reached)
//! sends itself `SIGKILL` at that point, exactly as a crash there would leave
//! the file. `SHMSLAB_FAIL_OFD=setlk=ENOLCK` (or `getlk=EINVAL`; both,
//! comma-separated; `ENOLCK`, `EINVAL`, `EOPNOTSUPP` or a number; `@<n>`
//! after it: from the n-th call on) makes taking an OFD lock (`F_OFD_SETLK`
//! with `F_WRLCK`) or asking about one (`F_OFD_GETLK`) fail with that errno,
//! as on a filesystem without OFD locks. Without the feature all of it
//! compiles to nothing.

/// Every crash point, in protocol order.
#[cfg(feature = "fault-injection")]
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
    // a locked value's commit (under its lock)
    "cell.before_write",
    "cell.mid_write",
    "cell.written",
    "cell.committed",
    // a channel's steps (under its lock)
    "chan.send.entry_written",
    "chan.send.handed_over",
    "chan.recv.taken",
    "chan.ack.acking",
    "chan.ack.adopted",
    "chan.redeliver.requeued",
];

/// An OFD lock call that [`ofd_fault`] can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OfdCall {
    /// `F_OFD_SETLK` taking a write lock.
    Lock,
    /// `F_OFD_GETLK`.
    Query,
}

#[cfg(feature = "fault-injection")]
mod imp {
    use super::OfdCall;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// For each call: the errno `SHMSLAB_FAIL_OFD` sets and from which call
    /// on (1: all), read once.
    type OfdFaults = [Option<(i32, u64)>; 2];
    static OFD_FAULTS: OnceLock<OfdFaults> = OnceLock::new();
    static OFD_CALLS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

    fn errno(name: &str) -> Option<i32> {
        match name {
            "ENOLCK" => Some(libc::ENOLCK),
            "EINVAL" => Some(libc::EINVAL),
            "EOPNOTSUPP" => Some(libc::EOPNOTSUPP),
            n => n.parse().ok(),
        }
    }

    pub(crate) fn ofd_fault(call: OfdCall) -> Option<i32> {
        let faults = OFD_FAULTS.get_or_init(|| {
            let mut faults: OfdFaults = [None, None];
            let spec = std::env::var("SHMSLAB_FAIL_OFD").unwrap_or_default();
            for part in spec.split(',').filter(|p| !p.is_empty()) {
                let Some((which, what)) = part.split_once('=') else {
                    continue;
                };
                let (name, from) = match what.split_once('@') {
                    Some((name, n)) => (name, n.parse().unwrap_or(1)),
                    None => (what, 1),
                };
                let slot = match which {
                    "setlk" => OfdCall::Lock,
                    "getlk" => OfdCall::Query,
                    _ => continue,
                };
                faults[slot as usize] = errno(name).map(|e| (e, from));
            }
            faults
        });
        let (errno, from) = faults[call as usize]?;
        let nth = OFD_CALLS[call as usize].fetch_add(1, Ordering::Relaxed) + 1;
        (nth >= from).then_some(errno)
    }

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
pub(crate) use imp::{crash_point, ofd_fault};

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn crash_point(_name: &'static str) {}

/// The errno an OFD lock call must fail with, if the fault-injection
/// environment says so (never, without the feature).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn ofd_fault(_call: OfdCall) -> Option<i32> {
    None
}
