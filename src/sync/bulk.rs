//! The bulk of a large copy to or from shared memory, at memory speed.
//!
//! The single-width rule (see the parent module) lets this process touch a
//! shared byte only as part of its aligned 8-byte word, atomically. Rust
//! has no wider atomic load a compiler may vectorise, so a copy written
//! with `AtomicU64` moves one word per instruction: for 4 KiB in cache
//! that is well under half of `memcpy`, which moves 32 or 64 bytes at a
//! time.
//!
//! On x86-64 the middle of a copy of at least [`MIN_BYTES`] is made of
//! 16-byte `MOVDQA` loads (copy out) or stores (copy in) of the shared
//! side, written in inline assembly, four to a 64-byte step. Why this is
//! still the single-width rule:
//!
//! - Intel (SDM vol. 3A §9.1.1) and AMD (APM vol. 2 §7.3.2) guarantee that
//!   on their processors that enumerate AVX, an aligned 16-byte `MOVDQA` is
//!   carried out as one atomic access. The path is taken only on such a
//!   processor (vendor by CPUID, and `is_x86_feature_detected!("avx")`,
//!   asked once); otherwise the word loop runs.
//! - A 16-byte atomic access of two aligned words returns (or leaves) a
//!   value that two relaxed 8-byte atomic accesses of those words could
//!   also have returned (or left). So the assembly block behaves as a
//!   sequence of relaxed `AtomicU64` accesses, which is what the Rust
//!   reference asks of inline assembly ("the behaviour must be that of
//!   some Rust code"): for the memory model it is the word loop, at one
//!   width, racing every other access of the crate — atomics views
//!   (`fetch_add`), locked values' buffers, channel rows — exactly as the
//!   word loop does. The compiler cannot split, merge or elide the
//!   accesses, since it cannot see them.
//! - The private side (the caller's buffer) is read or written with
//!   unaligned `MOVDQU`: plain memory the caller borrows exclusively (copy
//!   out) or shares read-only (copy in), as `copy_from_slice` would.
//!
//! Weighed and not taken (docs/DESIGN.md, "Copies at memory speed"):
//! `atomic-memcpy` (word-sized atomics, the same speed as the word loop);
//! volatile or plain `memcpy` of the shared side as `vm-memory` does for
//! guest memory (a data race with this process's own atomics under Rust's
//! model, however benign on the hardware); 32-byte `VMOVDQA` (no
//! documented atomicity at that width, and no faster here: measured 73
//! against 109 GB/s for 4 KiB in L1). Miri cannot run inline assembly and
//! loom cannot model it, so both run the word loop (cfg), which is the
//! specification the assembly is tested against (`sync::tests`).
//! Architectures other than x86-64 run the word loop too.

/// Copies shorter than this stay in the inlined word loop: below it the
/// call and alignment steps cost more than the wider moves save.
pub(super) const MIN_BYTES: usize = 256;

/// Whether this CPU's maker documents aligned 16-byte `MOVDQA` as atomic:
/// an Intel, AMD or Hygon (an AMD design) processor that enumerates AVX.
/// Asked once (CPUID), then one relaxed load of the cached answer.
#[inline(always)]
pub(super) fn available() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
    // 0: not asked yet; 1: yes; 2: no.
    static ANSWER: AtomicU8 = AtomicU8::new(0);
    match ANSWER.load(Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let yes = documented_atomic();
            ANSWER.store(if yes { 1 } else { 2 }, Relaxed);
            yes
        }
    }
}

#[cold]
fn documented_atomic() -> bool {
    // `__cpuid` became a safe function in later Rust; the block is needed on
    // the crate's minimum version.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 processor; leaf 0 (the vendor)
    // is always defined.
    let leaf0 = unsafe { std::arch::x86_64::__cpuid(0) };
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    vendor[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    let documented = matches!(&vendor, b"GenuineIntel" | b"AuthenticAMD" | b"HygonGenuine");
    documented && std::arch::is_x86_feature_detected!("avx")
}

/// Copies `dst.len()` bytes (a multiple of 8) out of the shared words
/// starting at `first`.
///
/// # Safety
/// `first` is 8-aligned; the `dst.len() / 8` words from it are valid for
/// reads for the whole call and in this process are accessed only as
/// aligned atomics of 8 bytes (or, here, 16); [`available`] returned true.
#[inline(never)]
pub(super) unsafe fn load(first: *const u64, dst: &mut [u8]) {
    debug_assert!(first.addr() % 8 == 0 && dst.len() % 8 == 0);
    let mut src = first;
    let mut out = dst.as_mut_ptr();
    let mut words = dst.len() / 8;
    if src.addr() % 16 != 0 && words > 0 {
        // SAFETY: the first word of the copy, per the contract.
        let w =
            unsafe { super::std_word(src.cast_mut()) }.load(std::sync::atomic::Ordering::Relaxed);
        // SAFETY: `out` has at least 8 bytes left (`words > 0`).
        unsafe { out.cast::<[u8; 8]>().write_unaligned(w.to_ne_bytes()) };
        // SAFETY: one word on, still inside (or one past) both ranges.
        (src, out, words) = unsafe { (src.add(1), out.add(8), words - 1) };
    }
    let blocks = words / 2;
    if blocks > 0 {
        // SAFETY: `src` is 16-aligned and the `2 * blocks` words from it
        // are part of the copy; `out` has `16 * blocks` bytes left;
        // `available()` holds per the contract.
        unsafe { load_blocks(src.cast(), out, blocks) };
        // SAFETY: as above: `blocks` 16-byte blocks on, inside both ranges.
        (src, out) = unsafe { (src.add(2 * blocks), out.add(16 * blocks)) };
    }
    if words % 2 == 1 {
        // SAFETY: the last word of the copy, per the contract; `out` has 8
        // bytes left.
        unsafe {
            let w = super::std_word(src.cast_mut()).load(std::sync::atomic::Ordering::Relaxed);
            out.cast::<[u8; 8]>().write_unaligned(w.to_ne_bytes());
        }
    }
}

/// Copies `src` (a multiple of 8 bytes) into the shared words starting at
/// `first`.
///
/// # Safety
/// As for [`load`], and the words are also valid for writes.
#[inline(never)]
pub(super) unsafe fn store(src: &[u8], first: *mut u64) {
    debug_assert!(first.addr() % 8 == 0 && src.len() % 8 == 0);
    let mut dst = first;
    let mut from = src.as_ptr();
    let mut words = src.len() / 8;
    if dst.addr() % 16 != 0 && words > 0 {
        // SAFETY: the first word of the copy and 8 bytes of `src`.
        unsafe {
            let w = u64::from_ne_bytes(from.cast::<[u8; 8]>().read_unaligned());
            super::std_word(dst).store(w, std::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: one word on, inside (or one past) both ranges.
        (dst, from, words) = unsafe { (dst.add(1), from.add(8), words - 1) };
    }
    let blocks = words / 2;
    if blocks > 0 {
        // SAFETY: as in `load`, the other way round.
        unsafe { store_blocks(from, dst.cast(), blocks) };
        // SAFETY: `blocks` 16-byte blocks on, inside both ranges.
        (dst, from) = unsafe { (dst.add(2 * blocks), from.add(16 * blocks)) };
    }
    if words % 2 == 1 {
        // SAFETY: the last word of the copy and the last 8 bytes of `src`.
        unsafe {
            let w = u64::from_ne_bytes(from.cast::<[u8; 8]>().read_unaligned());
            super::std_word(dst).store(w, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The loop both directions share, `blocks` 16-byte blocks from `src` to
/// `dst` four to a step, then one at a time: `$load` and `$store` name the
/// instructions, `movdqa` (aligned, atomic) on the shared side and `movdqu`
/// on the private one. Expands to an `asm!` the caller wraps in `unsafe`.
macro_rules! copy_blocks {
    ($load:literal, $store:literal, $src:expr, $dst:expr, $blocks:expr) => {
        std::arch::asm!(
            "test {steps}, {steps}",
            "jz 3f",
            "2:",
            concat!($load, " {a}, xmmword ptr [{src}]"),
            concat!($load, " {b}, xmmword ptr [{src} + 16]"),
            concat!($load, " {c}, xmmword ptr [{src} + 32]"),
            concat!($load, " {d}, xmmword ptr [{src} + 48]"),
            concat!($store, " xmmword ptr [{dst}], {a}"),
            concat!($store, " xmmword ptr [{dst} + 16], {b}"),
            concat!($store, " xmmword ptr [{dst} + 32], {c}"),
            concat!($store, " xmmword ptr [{dst} + 48], {d}"),
            "add {src}, 64",
            "add {dst}, 64",
            "dec {steps}",
            "jnz 2b",
            "3:",
            "test {rest}, {rest}",
            "jz 5f",
            "4:",
            concat!($load, " {a}, xmmword ptr [{src}]"),
            concat!($store, " xmmword ptr [{dst}], {a}"),
            "add {src}, 16",
            "add {dst}, 16",
            "dec {rest}",
            "jnz 4b",
            "5:",
            src = inout(reg) $src => _,
            dst = inout(reg) $dst => _,
            steps = inout(reg) $blocks / 4 => _,
            rest = inout(reg) $blocks % 4 => _,
            a = out(xmm_reg) _,
            b = out(xmm_reg) _,
            c = out(xmm_reg) _,
            d = out(xmm_reg) _,
            options(nostack),
        )
    };
}

/// `blocks` (> 0) aligned 16-byte atomic loads from shared `src` into
/// private `dst`, four to a step.
///
/// # Safety
/// `src` is 16-aligned and valid for `16 * blocks` bytes of reads, touched
/// in this process only atomically; `dst` is valid for `16 * blocks` bytes
/// of writes and not shared; the CPU enumerates AVX.
#[inline(always)]
unsafe fn load_blocks(src: *const u8, dst: *mut u8, blocks: usize) {
    // SAFETY: per the contract. The block reads `src` only with MOVDQA
    // (atomic, see the module doc) and writes `dst` only; it touches no
    // stack and leaves the flags, which `asm!` assumes clobbered by default.
    unsafe { copy_blocks!("movdqa", "movdqu", src, dst, blocks) }
}

/// `blocks` (> 0) aligned 16-byte atomic stores of private `src` into
/// shared `dst`, four to a step.
///
/// # Safety
/// `dst` is 16-aligned and valid for `16 * blocks` bytes of writes, touched
/// in this process only atomically; `src` is valid for `16 * blocks` bytes
/// of reads; the CPU enumerates AVX.
#[inline(always)]
unsafe fn store_blocks(src: *const u8, dst: *mut u8, blocks: usize) {
    // SAFETY: as in `load_blocks`, the shared side written only with MOVDQA.
    unsafe { copy_blocks!("movdqu", "movdqa", src, dst, blocks) }
}
