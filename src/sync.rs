//! The atomics and thread facade.
//!
//! Every other module takes its atomics from here, never from `core::sync`
//! directly, so that the same protocol code runs on real atomics in normal
//! builds and on [loom]'s model-checked atomics under `RUSTFLAGS="--cfg loom"`
//! (the approach crossbeam takes with `crossbeam_loom`).
//!
//! It is also the one place where shared bytes are copied, under the
//! crate's **single-width rule**: in this process, every byte of shared
//! memory (slot contents, metadata, the header) is only ever accessed as part
//! of its aligned 8-byte word, through an `AtomicU64` (or loom's). Two atomic
//! accesses of different sizes that partly overlap, at least one a write,
//! race under Rust's memory model (undefined behaviour, which Miri reports),
//! so a byte copy may not use `AtomicU8` for an unaligned head and
//! `AtomicU64` for the middle, as it once did: a 4-byte write at offset 4
//! racing a 16-byte read at 0 would touch one word at two widths.
//!
//! So [`load_shared`] and [`store_shared`] split a copy into
//! - a partial **head** word (the copy starts inside a word): loaded whole
//!   and the wanted bytes extracted; written by a compare-and-swap loop on
//!   the whole word, which replaces exactly the copy's bytes and keeps the
//!   others, even if another thread or process changes them meanwhile;
//! - the **whole-word middle**: relaxed word loads and stores for short
//!   copies, and for long ones on x86-64 the 16-byte atomic moves of
//!   [`bulk`], which for the memory model are the same word accesses (its
//!   module doc argues why);
//! - a partial **tail** word, as the head.
//!
//! A copy of whole aligned words only (a typed value whose size is a
//! multiple of 8, at the start of its slot) skips the split, inline; the
//! partial-word path is out of line, so the hot paths stay as small as a
//! plain word copy.
//!
//! A partial word never leaves the memory a caller may touch: slots are
//! 16-aligned multiples of 16 bytes, so the word of any slot byte lies in the
//! slot; [`Region`](crate::region::Region) views start on a page (a mapping) or a
//! 64-byte boundary (a heap region) and their memory is allocated in whole
//! pages or 64-byte blocks, so the word of any byte in the view is mapped.
//!
//! Metadata follows the rule by construction: `format`, `pool` and `peers`
//! reach the file only through `Memory::word` (an aligned `AtomicU64`), and
//! never with another width; the `AtomicU32`s in `pool` (a process's checked
//! extent views) are process-local memory, not the file. The safe
//! [`Region::read`](crate::region::Region::read)/[`write`](crate::region::Region::write) reach
//! every byte of a segment, header and metadata words included, but through
//! these same word copies, so even a user overwriting a lock word is (for
//! the memory model) an ordinary atomic write at the same width.
//!
//! [loom]: https://docs.rs/loom

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};

#[cfg(all(target_arch = "x86_64", not(miri)))]
mod bulk;

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

/// Parks the calling thread while the low 32 bits of `word` are `seen`, for
/// at most `timeout` (forever if `None`): a futex wait on the shared
/// mapping, so any process's [`unpark`] on the same word wakes it. Returns
/// on a wake, a change of the value, a signal or the timeout, and may return
/// spuriously: callers re-check their condition in a loop.
///
/// The futex is the word's low half, which only the kernel reads as 32 bits
/// (this process touches the word only as an `AtomicU64`). Under loom it
/// yields; under Miri, which models no cross-process futex, it sleeps a
/// little.
pub(crate) fn park(word: &AtomicU64, seen: u32, timeout: Option<std::time::Duration>) {
    #[cfg(all(not(loom), not(miri)))]
    {
        let ts;
        let ts_ptr = match timeout {
            Some(d) => {
                ts = libc::timespec {
                    tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
                    tv_nsec: d.subsec_nanos() as libc::c_long,
                };
                &ts as *const libc::timespec
            }
            None => std::ptr::null(),
        };
        // SAFETY: `futex_half` points into a live, aligned word of shared
        // memory (the reference keeps it mapped for the call); FUTEX_WAIT
        // only reads those 4 bytes, atomically, and compares them to
        // `seen`. The timespec outlives the call. A non-private futex:
        // waiters and wakers are different processes.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                futex_half(word),
                libc::FUTEX_WAIT,
                seen,
                ts_ptr,
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }
    #[cfg(all(not(loom), miri))]
    {
        let _ = (word, seen);
        std::thread::sleep(
            timeout
                .unwrap_or(std::time::Duration::from_micros(50))
                .min(std::time::Duration::from_micros(50)),
        );
    }
    #[cfg(loom)]
    {
        // The futex, modelled: the value check and the sleep are one step
        // with respect to a wake (both under the "kernel" mutex), and the
        // sleep has no timeout, so a lost wake-up is a deadlock loom reports.
        let _ = timeout;
        let (lock, cv) = &*loom_futex::KERNEL;
        let guard = lock.lock().expect("loom kernel mutex");
        if word.load(Ordering::SeqCst) as u32 == seen {
            drop(cv.wait(guard).expect("loom kernel condvar"));
        }
    }
}

#[cfg(loom)]
mod loom_futex {
    loom::lazy_static! {
        pub(super) static ref KERNEL: (loom::sync::Mutex<()>, loom::sync::Condvar) =
            (loom::sync::Mutex::new(()), loom::sync::Condvar::new());
    }
}

/// Wakes up to `n` threads (of any process) parked on `word` by [`park`].
pub(crate) fn unpark(word: &AtomicU64, n: u32) {
    #[cfg(all(not(loom), not(miri)))]
    // SAFETY: as in `park`; FUTEX_WAKE reads nothing.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_half(word),
            libc::FUTEX_WAKE,
            n.min(i32::MAX as u32),
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
    #[cfg(miri)]
    let _ = (word, n);
    #[cfg(loom)]
    {
        let _ = (word, n);
        let (lock, cv) = &*loom_futex::KERNEL;
        let _guard = lock.lock().expect("loom kernel mutex");
        cv.notify_all();
    }
}

/// The deadline `timeout` from now: `None` (no limit) for no timeout, or
/// one past what an `Instant` can hold.
pub(crate) fn deadline_after(timeout: Option<std::time::Duration>) -> Option<std::time::Instant> {
    timeout.and_then(|t| std::time::Instant::now().checked_add(t))
}

/// How long the next park of a wait until `deadline` may last: what is
/// left of it, at most `cap` (`cap` with no deadline); `None` once it has
/// passed. Every bounded wait of the crate parks in such naps, so a missed
/// wake-up or a holder's death is looked at again.
pub(crate) fn nap_until(
    deadline: Option<std::time::Instant>,
    cap: std::time::Duration,
) -> Option<std::time::Duration> {
    match deadline {
        None => Some(cap),
        Some(d) => d
            .checked_duration_since(std::time::Instant::now())
            .filter(|left| !left.is_zero())
            .map(|left| left.min(cap)),
    }
}

/// The address of the 32-bit half of `word` that holds its low bits.
#[cfg(all(not(loom), not(miri)))]
fn futex_half(word: &AtomicU64) -> *const u32 {
    let at = word as *const AtomicU64 as *const u32;
    if cfg!(target_endian = "little") {
        at
    } else {
        at.wrapping_add(1)
    }
}

/// A process-wide id, unique for the life of the process and never 0. Plain
/// std atomics: it only names `Slab` instances and is never model-checked.
pub(crate) fn next_instance_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One aligned 64-bit word of shared memory: the only width at which shared
/// bytes are touched (see the module doc). Implemented by std's `AtomicU64`
/// (mappings and heap buffers reached through pointers) and, in loom
/// builds, by loom's (a model's heap segment), so both run the same copies.
pub(crate) trait SharedWord {
    /// A relaxed load of the whole word.
    fn load_word(&self) -> u64;
    /// A relaxed store of the whole word.
    fn store_word(&self, value: u64);
    /// A relaxed weak compare-and-swap of the whole word; `Err` has the
    /// value found.
    fn swap_word_if(&self, current: u64, new: u64) -> Result<u64, u64>;

    /// Relaxed loads of every word of `words` into `dst` (`8 * words.len()`
    /// bytes): the word loop, which std's words replace with the bulk copy
    /// when it is long.
    #[inline(always)]
    fn load_run(words: &[Self], dst: &mut [u8])
    where
        Self: Sized,
    {
        for (chunk, w) in dst.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.load_word().to_ne_bytes());
        }
    }

    /// Relaxed stores of `src` (`8 * words.len()` bytes) into `words`.
    #[inline(always)]
    fn store_run(words: &[Self], src: &[u8])
    where
        Self: Sized,
    {
        for (chunk, w) in src.chunks_exact(8).zip(words) {
            w.store_word(u64::from_ne_bytes(chunk.try_into().expect("8 bytes")));
        }
    }
}

impl SharedWord for std::sync::atomic::AtomicU64 {
    #[inline(always)]
    fn load_word(&self) -> u64 {
        self.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[inline(always)]
    fn store_word(&self, value: u64) {
        self.store(value, std::sync::atomic::Ordering::Relaxed)
    }
    #[inline(always)]
    fn swap_word_if(&self, current: u64, new: u64) -> Result<u64, u64> {
        use std::sync::atomic::Ordering::Relaxed;
        self.compare_exchange_weak(current, new, Relaxed, Relaxed)
    }
    #[inline(always)]
    fn load_run(words: &[Self], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), 8 * words.len());
        // Never past `words`, whatever the caller passes.
        let n = words.len().min(dst.len() / 8);
        // SAFETY: the first `n` of `words`: live, aligned atomics for the
        // whole call, only ever accessed atomically; `8 * n` bytes of `dst`.
        unsafe { load_words(words.as_ptr().cast(), &mut dst[..8 * n]) }
    }
    #[inline(always)]
    fn store_run(words: &[Self], src: &[u8]) {
        debug_assert_eq!(src.len(), 8 * words.len());
        let n = words.len().min(src.len() / 8);
        // SAFETY: as in `load_run`; an atomic may be written through `&`.
        unsafe { store_words(&src[..8 * n], words.as_ptr().cast_mut().cast()) }
    }
}

#[cfg(loom)]
impl SharedWord for loom::sync::atomic::AtomicU64 {
    fn load_word(&self) -> u64 {
        self.load(Ordering::Relaxed)
    }
    fn store_word(&self, value: u64) {
        self.store(value, Ordering::Relaxed)
    }
    fn swap_word_if(&self, current: u64, new: u64) -> Result<u64, u64> {
        self.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed)
    }
}

/// How `len` bytes that start `skip` bytes into word 0 fall on words: a
/// partial head word of `head` bytes (word 0, when `skip > 0`), `whole`
/// whole words, and the rest (fewer than 8 bytes) in a partial tail word.
#[derive(Debug, Clone, Copy)]
struct WordSpan {
    skip: usize,
    head: usize,
    whole: usize,
}

impl WordSpan {
    #[inline(always)]
    fn new(skip: usize, len: usize) -> Self {
        debug_assert!(skip < 8);
        let head = if skip == 0 { 0 } else { len.min(8 - skip) };
        Self {
            skip,
            head,
            whole: (len - head) / 8,
        }
    }

    /// The index of the first whole word (the tail's is `first + whole`).
    #[inline(always)]
    fn first_whole(&self) -> usize {
        usize::from(self.skip != 0)
    }
}

/// Copies bytes out of words: `dst.len()` bytes starting `skip` (< 8) bytes
/// into word 0, with `word(j)` the `j`-th word from there. Only calls `word`
/// for the words the bytes lie in.
#[cfg(loom)]
#[inline(always)]
pub(crate) fn load_via_words<'w, W: SharedWord + 'w>(
    skip: usize,
    dst: &mut [u8],
    word: impl Fn(usize) -> &'w W,
) {
    if skip == 0 && dst.len() % 8 == 0 {
        // Whole words only (every typed value of 8-byte multiples at the
        // start of its slot): no partial word to consider.
        return load_whole_words(dst, word);
    }
    let span = WordSpan::new(skip, dst.len());
    if span.head > 0 {
        load_part(word(0), skip, &mut dst[..span.head]);
    }
    let first = span.first_whole();
    let end = span.head + 8 * span.whole;
    load_whole_words(&mut dst[span.head..end], |k| word(first + k));
    if end < dst.len() {
        load_part(word(first + span.whole), 0, &mut dst[end..]);
    }
}

/// Copies `src` into words, laid out as in `load_via_words`. Bytes of a
/// partial word outside the copy keep their value, whoever changes them
/// meanwhile.
#[cfg(loom)]
#[inline(always)]
pub(crate) fn store_via_words<'w, W: SharedWord + 'w>(
    skip: usize,
    src: &[u8],
    word: impl Fn(usize) -> &'w W,
) {
    if skip == 0 && src.len() % 8 == 0 {
        return store_whole_words(src, word);
    }
    let span = WordSpan::new(skip, src.len());
    if span.head > 0 {
        store_part(word(0), skip, &src[..span.head]);
    }
    let first = span.first_whole();
    let end = span.head + 8 * span.whole;
    store_whole_words(&src[span.head..end], |k| word(first + k));
    if end < src.len() {
        store_part(word(first + span.whole), 0, &src[end..]);
    }
}

/// The whole-word middle of a copy out (`dst.len()` a multiple of 8): one
/// relaxed load per word. This is the bulk of a large copy, kept apart from
/// the partial words so it can be made fast on its own.
#[inline(always)]
fn load_whole_words<'w, W: SharedWord + 'w>(dst: &mut [u8], word: impl Fn(usize) -> &'w W) {
    let mut i = 0;
    while i + 8 <= dst.len() {
        dst[i..i + 8].copy_from_slice(&word(i / 8).load_word().to_ne_bytes());
        i += 8;
    }
}

/// The whole-word middle of a copy in: one relaxed store per word.
#[inline(always)]
fn store_whole_words<'w, W: SharedWord + 'w>(src: &[u8], word: impl Fn(usize) -> &'w W) {
    let mut i = 0;
    while i + 8 <= src.len() {
        let value = u64::from_ne_bytes(src[i..i + 8].try_into().expect("8 bytes"));
        word(i / 8).store_word(value);
        i += 8;
    }
}

/// Copies the first `dst.len()` bytes of `words` (which hold at least that
/// many) into `dst`: whole-word loads, the last one cut. For memory whose
/// words all belong to one buffer (a locked value's, a channel row's).
/// Short copies (a locked value of a few words: `transact`'s hot path) are
/// the zipped word loop inline; long ones go through [`SharedWord::load_run`]
/// (the bulk copy for std's words), out of line.
#[inline(always)]
pub(crate) fn load_from_words<W: SharedWord>(words: &[W], dst: &mut [u8]) {
    if dst.len() >= LONG_RUN {
        return load_from_words_long(words, dst);
    }
    let mut chunks = dst.chunks_exact_mut(8);
    let mut words = words.iter();
    for (chunk, w) in (&mut chunks).zip(&mut words) {
        chunk.copy_from_slice(&w.load_word().to_ne_bytes());
    }
    load_tail(words.next(), chunks.into_remainder());
}

/// Stores `src` into the first words of `words`, whole words, the last one
/// padded with zeros: for a buffer whose words are all the writer's (a
/// locked value's, under its lock), so no byte outside `src` needs keeping.
#[inline(always)]
pub(crate) fn store_to_words<W: SharedWord>(words: &[W], src: &[u8]) {
    if src.len() >= LONG_RUN {
        return store_to_words_long(words, src);
    }
    let mut chunks = src.chunks_exact(8);
    let mut words = words.iter();
    for (chunk, w) in (&mut chunks).zip(&mut words) {
        w.store_word(u64::from_ne_bytes(chunk.try_into().expect("8 bytes")));
    }
    store_tail(words.next(), chunks.remainder());
}

/// Runs of words at least this long go through `load_run`/`store_run`.
const LONG_RUN: usize = 256;

#[inline(never)]
fn load_from_words_long<W: SharedWord>(words: &[W], dst: &mut [u8]) {
    let whole = (dst.len() / 8).min(words.len());
    let (run, tail) = dst.split_at_mut(8 * whole);
    W::load_run(&words[..whole], run);
    load_tail(words.get(whole), tail);
}

#[inline(never)]
fn store_to_words_long<W: SharedWord>(words: &[W], src: &[u8]) {
    let whole = (src.len() / 8).min(words.len());
    let (run, tail) = src.split_at(8 * whole);
    W::store_run(&words[..whole], run);
    store_tail(words.get(whole), tail);
}

/// The cut last word of a copy out of a run (`tail` shorter than 8 bytes).
#[inline(always)]
fn load_tail<W: SharedWord>(word: Option<&W>, tail: &mut [u8]) {
    if let (false, Some(w)) = (tail.is_empty(), word) {
        let n = tail.len();
        tail.copy_from_slice(&w.load_word().to_ne_bytes()[..n]);
    }
}

/// The last word of a copy into a run, padded with zeros.
#[inline(always)]
fn store_tail<W: SharedWord>(word: Option<&W>, tail: &[u8]) {
    if let (false, Some(w)) = (tail.is_empty(), word) {
        let mut b = [0u8; 8];
        b[..tail.len()].copy_from_slice(tail);
        w.store_word(u64::from_ne_bytes(b));
    }
}

/// Bytes `at .. at + dst.len()` of one word (a partial head or tail).
#[inline(always)]
fn load_part<W: SharedWord>(word: &W, at: usize, dst: &mut [u8]) {
    dst.copy_from_slice(&word.load_word().to_ne_bytes()[at..at + dst.len()]);
}

/// Replaces bytes `at .. at + src.len()` of one word, keeping the others: a
/// compare-and-swap of the whole word, retried when the word changed in
/// between (or a weak CAS failed spuriously). Lock-free (a real conflict
/// means another write landed), not wait-free: like any CAS of the protocol,
/// a peer that rewrites the same word without pause can delay it.
#[inline(always)]
fn store_part<W: SharedWord>(word: &W, at: usize, src: &[u8]) {
    let mut current = word.load_word();
    loop {
        let mut bytes = current.to_ne_bytes();
        bytes[at..at + src.len()].copy_from_slice(src);
        match word.swap_word_if(current, u64::from_ne_bytes(bytes)) {
            Ok(_) => return,
            Err(found) => current = found,
        }
    }
}

/// Copies `dst.len()` bytes out of shared memory at `src`, by whole aligned
/// words (the single-width rule, see the module doc). Another process or
/// another thread of this one may be writing the same bytes: with atomic
/// accesses of one width on both sides that makes the copy stale (which
/// callers detect with the slot's generation), never undefined behaviour.
///
/// A copy of whole aligned words (most typed values) is inlined; one with a
/// partial word goes out of line, so the hot paths stay small.
///
/// Plain std atomics: process-local memory in loom models goes through
/// `HeapRegion`'s own words and `load_via_words` instead.
///
/// # Safety
/// The aligned 8-byte words that contain `src .. src + dst.len()` are valid
/// for reads for the whole call, and in this process they are only accessed
/// as whole aligned 64-bit atomics (this function, [`store_shared`],
/// `Memory::word`).
#[inline(always)]
pub(crate) unsafe fn load_shared(src: *const u8, dst: &mut [u8]) {
    if src.addr() % 8 == 0 && dst.len() % 8 == 0 {
        // SAFETY: the words of the copy, valid and accessed only as aligned
        // 64-bit atomics per the caller; `src` is 8-aligned (checked).
        unsafe { load_words(src.cast(), dst) }
    } else {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { load_shared_parts(src, dst) }
    }
}

/// [`load_shared`] for a copy that starts or ends inside a word: the
/// partial head and tail words as `load_via_words` does them, the middle
/// by [`load_words`].
///
/// # Safety
/// As for [`load_shared`].
#[inline(never)]
unsafe fn load_shared_parts(src: *const u8, dst: &mut [u8]) {
    let skip = src.addr() % 8;
    let first = src.wrapping_sub(skip).cast::<u64>();
    let span = WordSpan::new(skip, dst.len());
    let middle = span.first_whole();
    let end = span.head + 8 * span.whole;
    if span.head > 0 {
        // SAFETY: word 0 holds the copy's first bytes: valid and accessed
        // only as an aligned 64-bit atomic, per the caller; `first` is
        // 8-aligned by construction.
        let head = unsafe { std_word(first.cast_mut()) };
        load_part(head, skip, &mut dst[..span.head]);
    }
    // SAFETY: the whole words of the copy, as for the head.
    unsafe { load_words(first.add(middle), &mut dst[span.head..end]) };
    if end < dst.len() {
        // SAFETY: the word after them holds the copy's last bytes.
        let tail = unsafe { std_word(first.add(middle + span.whole).cast_mut()) };
        load_part(tail, 0, &mut dst[end..]);
    }
}

/// Copies `src` into shared memory at `dst`, by whole aligned words: the
/// counterpart of [`load_shared`]. Bytes of the first and last word outside
/// `dst .. dst + src.len()` keep their value.
///
/// # Safety
/// The aligned 8-byte words that contain `dst .. dst + src.len()` are valid
/// for reads and writes for the whole call, and in this process they are
/// only accessed as whole aligned 64-bit atomics.
#[inline(always)]
pub(crate) unsafe fn store_shared(src: &[u8], dst: *mut u8) {
    if dst.addr() % 8 == 0 && src.len() % 8 == 0 {
        // SAFETY: as in `load_shared`; the words are also valid for writes.
        unsafe { store_words(src, dst.cast()) }
    } else {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { store_shared_parts(src, dst) }
    }
}

/// [`store_shared`] for a copy that starts or ends inside a word.
///
/// # Safety
/// As for [`store_shared`].
#[inline(never)]
unsafe fn store_shared_parts(src: &[u8], dst: *mut u8) {
    let skip = dst.addr() % 8;
    let first = dst.wrapping_sub(skip).cast::<u64>();
    let span = WordSpan::new(skip, src.len());
    let middle = span.first_whole();
    let end = span.head + 8 * span.whole;
    if span.head > 0 {
        // SAFETY: as in `load_shared_parts`; the caller guarantees the
        // words are also valid for writes.
        store_part(unsafe { std_word(first) }, skip, &src[..span.head]);
    }
    // SAFETY: the whole words of the copy, as for the head.
    unsafe { store_words(&src[span.head..end], first.add(middle)) };
    if end < src.len() {
        // SAFETY: the word after them holds the copy's last bytes.
        store_part(
            unsafe { std_word(first.add(middle + span.whole)) },
            0,
            &src[end..],
        );
    }
}

/// Copies `dst.len()` (a multiple of 8) bytes out of the shared words from
/// `first`: the word loop, inlined, for short copies; [`bulk::load`] for
/// long ones where the CPU allows it.
///
/// # Safety
/// `first` is 8-aligned; the `dst.len() / 8` words from it are valid for
/// reads for the whole call and in this process only accessed as aligned
/// atomics.
#[inline(always)]
unsafe fn load_words(first: *const u64, dst: &mut [u8]) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if dst.len() >= bulk::MIN_BYTES && bulk::available() {
        // SAFETY: per the caller; `available()` checked.
        return unsafe { bulk::load(first, dst) };
    }
    // SAFETY: the words of the copy, per the caller.
    load_whole_words(dst, |k| unsafe { std_word(first.add(k).cast_mut()) });
}

/// Copies `src` (a multiple of 8 bytes) into the shared words from
/// `first`, as [`load_words`] the other way.
///
/// # Safety
/// As for [`load_words`], and the words are valid for writes.
#[inline(always)]
unsafe fn store_words(src: &[u8], first: *mut u64) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if src.len() >= bulk::MIN_BYTES && bulk::available() {
        // SAFETY: per the caller; `available()` checked.
        return unsafe { bulk::store(src, first) };
    }
    // SAFETY: the words of the copy, per the caller.
    store_whole_words(src, |k| unsafe { std_word(first.add(k)) });
}

/// The std atomic at `ptr`, for as long as the caller needs it.
///
/// # Safety
/// `ptr` is 8-aligned and valid for the atomic accesses made through the
/// result while it is used, and is only accessed atomically meanwhile.
#[inline(always)]
unsafe fn std_word<'a>(ptr: *mut u64) -> &'a std::sync::atomic::AtomicU64 {
    // SAFETY: per this function's contract.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(ptr) }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{load_shared, store_shared};
    use std::sync::atomic::AtomicU64;

    /// Four words of known bytes, and their bytes as a plain array.
    fn words() -> ([AtomicU64; 4], [u8; 32]) {
        let bytes: [u8; 32] = std::array::from_fn(|i| 0xA0 ^ i as u8);
        let w = std::array::from_fn(|k| {
            AtomicU64::new(u64::from_ne_bytes(
                bytes[8 * k..8 * k + 8].try_into().unwrap(),
            ))
        });
        (w, bytes)
    }

    fn bytes_of(w: &[AtomicU64; 4]) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (k, word) in w.iter().enumerate() {
            out[8 * k..8 * k + 8].copy_from_slice(
                &word
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_ne_bytes(),
            );
        }
        out
    }

    #[test]
    fn copies_of_every_offset_and_length_touch_exactly_their_bytes() {
        // Offsets 0..=8 cover every start inside a word and the next word.
        for at in 0..=8 {
            for len in 0..=16 {
                let (w, before) = words();
                let base = w.as_ptr().cast::<u8>().cast_mut();
                let src: Vec<u8> = (0..len).map(|i| 0x10 + i as u8).collect();
                // SAFETY: `at + len <= 24`, so every word the copy touches is
                // one of the four, which only this thread accesses, atomically.
                unsafe { store_shared(&src, base.add(at)) };
                let mut want = before;
                want[at..at + len].copy_from_slice(&src);
                assert_eq!(bytes_of(&w), want, "store of {len} at {at}");
                let mut back = vec![0u8; len];
                // SAFETY: as above.
                unsafe { load_shared(base.add(at), &mut back) };
                assert_eq!(back, src, "load of {len} at {at}");
            }
        }
    }

    /// `n` words of known bytes (word k, byte i: `k * 8 + i` mixed), and
    /// their bytes.
    fn many_words(n: usize) -> (Vec<AtomicU64>, Vec<u8>) {
        let bytes: Vec<u8> = (0..8 * n).map(|i| (i * 7 + 3) as u8).collect();
        let w = bytes
            .chunks_exact(8)
            .map(|c| AtomicU64::new(u64::from_ne_bytes(c.try_into().unwrap())))
            .collect();
        (w, bytes)
    }

    fn bytes_of_many(w: &[AtomicU64]) -> Vec<u8> {
        w.iter()
            .flat_map(|x| x.load(std::sync::atomic::Ordering::Relaxed).to_ne_bytes())
            .collect()
    }

    /// The long copies (the bulk path on x86-64 with AVX, the word loop
    /// elsewhere and under Miri) at every start in a 16-byte block, every
    /// length class around the bulk threshold and its 64-byte steps, from
    /// and into private buffers at every alignment.
    #[test]
    fn long_copies_of_every_alignment_touch_exactly_their_bytes() {
        let lens: &[usize] = if cfg!(miri) {
            &[0, 255, 256, 264, 333]
        } else {
            &[
                0, 8, 200, 248, 255, 256, 257, 264, 272, 312, 320, 328, 1000, 4096, 4104, 65536,
            ]
        };
        let words = lens.iter().max().unwrap() / 8 + 8;
        for &len in lens {
            for at in (0..16).step_by(if cfg!(miri) { 5 } else { 1 }) {
                for private in [0usize, 1, 8] {
                    let (w, before) = many_words(words);
                    let base = w.as_ptr().cast::<u8>().cast_mut();
                    let mut src_buf = vec![0u8; len + private];
                    for (i, b) in src_buf.iter_mut().enumerate() {
                        *b = (i * 13 + len) as u8 ^ 0x5A;
                    }
                    let src = &src_buf[private..];
                    // SAFETY: `at + len < 8 * words`, so every word the copy
                    // touches is one of `w`, which only this thread
                    // accesses, atomically.
                    unsafe { store_shared(src, base.add(at)) };
                    let mut want = before.clone();
                    want[at..at + len].copy_from_slice(src);
                    assert!(
                        bytes_of_many(&w) == want,
                        "store of {len} at {at}+{private}"
                    );
                    let mut back_buf = vec![0u8; len + private];
                    let back = &mut back_buf[private..];
                    // SAFETY: as above.
                    unsafe { load_shared(base.add(at), back) };
                    assert!(back == src, "load of {len} at {at}+{private}");
                }
            }
        }
    }

    /// The locked values' and channel rows' copies, whole words of one
    /// buffer, long and short, with a cut last word.
    #[test]
    fn runs_of_words_copy_exactly() {
        use super::{load_from_words, store_to_words};
        for len in [0usize, 5, 8, 100, 256, 260, 1000, 4096] {
            let (w, _) = many_words(len.div_ceil(8) + 1);
            let src: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            store_to_words(&w, &src);
            let mut back = vec![0u8; len];
            load_from_words(&w, &mut back);
            assert!(back == src, "{len} bytes");
            let stored = bytes_of_many(&w);
            assert!(
                stored[..len] == src[..]
                    && stored[len..len.div_ceil(8) * 8].iter().all(|&b| b == 0)
            );
        }
    }

    /// Long copies racing each other and `fetch_add`, on the hardware:
    /// a copy out racing a copy in of the same words never sees a word
    /// made of two writes (every word the copy in stores has eight equal
    /// bytes), and a copy out of words that another thread increments sees
    /// each word only move forward. The single-width rule, kept by the
    /// bulk path's 16-byte moves.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "a timing race; Miri runs the word loop in the other tests"
    )]
    fn long_copies_racing_writers_see_whole_words() {
        // From a 16-aligned word, and from one 8 bytes past (the bulk path's
        // peeled first and last words race too).
        for skip in [0, 1] {
            race_long_copies(skip);
        }
    }

    fn race_long_copies(skip: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        const N: usize = 512;
        // 16-aligned blocks of words, used from word `skip` on.
        #[repr(C, align(16))]
        #[derive(Default)]
        struct Block([AtomicU64; 2]);
        let filled_all: Vec<Block> = (0..N / 2 + 1).map(|_| Block::default()).collect();
        let counted_all: Vec<Block> = (0..N / 2 + 1).map(|_| Block::default()).collect();
        let flat = |v: &[Block]| -> *const AtomicU64 { v.as_ptr().cast() };
        // SAFETY: a `Block` is two `AtomicU64`s and no padding (16 bytes,
        // align 16); `skip + N` words lie in the `N + 2` of each vector.
        let filled = unsafe { std::slice::from_raw_parts(flat(&filled_all).add(skip), N) };
        // SAFETY: as above.
        let counted = unsafe { std::slice::from_raw_parts(flat(&counted_all).add(skip), N) };
        assert_eq!(filled.as_ptr().addr() % 16, 8 * skip);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let filled_at = filled.as_ptr().cast::<u8>().cast_mut() as usize;
        let counted_at = counted.as_ptr().cast::<u8>().cast_mut() as usize;
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut src = vec![0u8; 8 * N];
                let mut r = 1u8;
                while !stop.load(Relaxed) {
                    // Every word one byte repeated; the byte changes along
                    // the buffer and from round to round.
                    for (k, c) in src.chunks_exact_mut(8).enumerate() {
                        c.fill(r.wrapping_add(k as u8));
                    }
                    // SAFETY: the copy covers exactly `filled`'s words,
                    // accessed only atomically by every thread.
                    unsafe { store_shared(&src, filled_at as *mut u8) };
                    r = r.wrapping_add(1);
                }
            });
            let adds = s.spawn(|| {
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    for x in counted {
                        x.fetch_add(1, Relaxed);
                    }
                    n += 1;
                }
                n
            });
            let mut out = vec![0u8; 8 * N];
            let mut last = vec![0u64; N];
            let (mut torn, mut backwards, mut copies) = (0, 0, 0u64);
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
            while std::time::Instant::now() < deadline {
                // SAFETY: as above, for `filled`'s words.
                unsafe { load_shared(filled_at as *const u8, &mut out) };
                torn += out
                    .chunks_exact(8)
                    .filter(|c| c.iter().any(|&b| b != c[0]))
                    .count();
                // SAFETY: as above, for `counted`'s words.
                unsafe { load_shared(counted_at as *const u8, &mut out) };
                for (c, seen) in out.chunks_exact(8).zip(&mut last) {
                    let v = u64::from_ne_bytes(c.try_into().unwrap());
                    backwards += usize::from(v < *seen);
                    *seen = v;
                }
                copies += 1;
            }
            stop.store(true, Relaxed);
            let rounds = adds.join().unwrap();
            assert!(
                copies > 100 && rounds > 100,
                "the race ran ({copies} copies, {rounds} rounds)"
            );
            assert_eq!(torn, 0, "words made of two writes seen");
            assert_eq!(backwards, 0, "a word seen going back");
            assert!(counted.iter().all(|x| x.load(Relaxed) == rounds));
        });
    }
}
