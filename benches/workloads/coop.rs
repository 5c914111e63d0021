//! The cooperation workloads ("coop"): shmslab's shared atomics, locked
//! values and notifiers, each measured beside what a program would use
//! without shmslab, in the same run.
//!
//! | group | what | shmslab | baselines |
//! |---|---|---|---|
//! | `coop-add-1p` | `fetch_add(1, Relaxed)` on one counter, one process | `shmslab-view`: `slab.atomic(h)?` once, then `view.n.fetch_add`; `shmslab-remade`: `slab.atomic(h)?.n.fetch_add` per operation | `mmap-atomic`: `AtomicU64::fetch_add` on a `MAP_SHARED` memmap2 mapping of a file |
//! | `coop-add-2p` | the same, two processes on the one counter | as above | as above |
//! | `coop-lock-1p` | lock, add 1 to each of 8 `u64` (64 B), unlock; one process | `shmslab-transact`: `transact` on a `Locked<[u64; 8]>` through a view checked once (`Slab::locked`) | `parking_lot`: `parking_lot::Mutex<[u64; 8]>`; `pthread-robust`: a `PTHREAD_PROCESS_SHARED` + `PTHREAD_MUTEX_ROBUST` mutex in a `MAP_SHARED` mapping, the `[u64; 8]` beside it |
//! | `coop-lock-2p` | the same, contended | `shmslab-transact`: two processes; `shmslab-transact-2threads` (supplementary) | `parking_lot-2threads`; `pthread-robust`: two processes |
//! | `coop-wake-2cpu`, `coop-wake-1cpu` | notify → wake latency, ping-pong between two processes pinned to two CPUs, or both to one | `shmslab-notifier`: two notifiers and a ball (an atomic view) | `futex`: raw `FUTEX_WAIT`/`FUTEX_WAKE` on a `MAP_SHARED` word; `pipe`: a byte through two FIFOs |
//!
//! Two-process runs use a *peer*: this binary run again with
//! [`CHILD_ENV`] (as W5 does), which attaches to the fixture's files, says
//! `ready`, then runs one batch per `go <n> <epoch> <arg>` line on its stdin
//! and answers `done <start> <end> <ops>` (`CLOCK_MONOTONIC`). Both sides
//! start a batch together through a spin barrier in the baselines' mapping.
//!
//! Two-worker runs (processes, or threads for the in-process locks) are
//! timed two ways. In criterion an iteration is one operation in each
//! worker (`n` each; time = the union of both spans). In the table both
//! workers run for a fixed *window* (`window_ms`): the parent stops at its
//! deadline and sets a stop word the other polls, both in chunks of
//! [`CHUNK`] operations, and the figure is aggregate ns per operation (the
//! union of the spans ÷ all operations). A window rather than a count
//! because on a shared 2-vCPU machine a count that takes milliseconds is
//! often run by one worker alone while the other is descheduled; the table
//! shows how much of the union both spans covered (`overlap`) and the
//! smaller worker's share of the operations (50%: fair).
//!
//! Wake latency: each side reads `CLOCK_MONOTONIC` just before it notifies
//! and just after its wait returns; the pong side publishes its two stamps
//! in the mapping before it notifies back, so the ping side records both
//! one-way latencies of every round trip.
//!
//! Every run checks what it did: the counter and all 8 fields advanced by
//! exactly the operations made, the ball reached its last value.

use crate::heaps::{ShmFile, new_slab, open_rw};
use crate::report;
use crate::runs::{mono_ns, region};
use criterion::{Criterion, Throughput};
use memmap2::MmapMut;
use shmslab::bytemuck::{Pod, Zeroable};
use shmslab::locked::Locked;
use shmslab::notifier::{Notifier, NotifierHandle};
use shmslab::{Handle, Slab};
use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

/// The environment variable that makes the bench binary a coop peer.
pub const CHILD_ENV: &str = "SHMSLAB_BENCH_COOP_CHILD";

/// How much of each coop workload one repetition of the table runs.
#[derive(Clone, Copy)]
pub struct CoopCounts {
    /// `coop-add-1p` operations.
    pub add1: u64,
    /// `coop-lock-1p` operations.
    pub lock1: u64,
    /// `coop-add-2p` and `coop-lock-2p`: how long both workers run (ms).
    pub window_ms: u64,
    /// `coop-wake-*` round trips recorded per placement (two latencies each)...
    pub trips: u64,
    /// ...after this many unrecorded ones.
    pub warm: u64,
}

/// `cargo bench`.
pub const FULL: CoopCounts = CoopCounts {
    add1: 5_000_000,
    lock1: 1_000_000,
    window_ms: 100,
    trips: 5_000,
    warm: 200,
};

/// `SHMSLAB_BENCH_QUICK=1`.
pub const QUICK: CoopCounts = CoopCounts {
    add1: 500_000,
    lock1: 100_000,
    window_ms: 20,
    trips: 1_000,
    warm: 50,
};

/// Without `--bench` (smoke test).
pub const SMOKE: CoopCounts = CoopCounts {
    add1: 10_000,
    lock1: 10_000,
    window_ms: 5,
    trips: 100,
    warm: 10,
};

#[cold]
#[inline(never)]
fn fail(what: &str, e: impl std::fmt::Debug) -> ! {
    panic!("coop: {what} failed: {e:?}")
}

// ----------------------------------------------------------- the values ---

/// The shared counter, and the ping-pong's ball: one `u64`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
pub struct Counter {
    n: u64,
}
impl shmslab::Schema for Counter {}

shmslab::atomic_fields! {
    /// [`Counter`] as an atomic.
    pub struct CounterAtomics for Counter { pub n }
}

/// The locked value: 64 bytes, every field incremented per operation.
type Value = [u64; 8];

#[inline(always)]
fn bump(v: &mut Value) {
    for x in v.iter_mut() {
        *x = x.wrapping_add(1);
    }
}

// ------------------------------------------------------- the raw mapping ---

/// The baselines' file: 4 KiB mapped `MAP_SHARED` (memmap2). Layout, one
/// cache line per user: the raw counter, the raw futex word, the peers'
/// barrier, the pong side's stamps, the window's stop word, and the
/// pthread cell.
const RAW_BYTES: usize = 4096;
const RAW_COUNTER: usize = 0;
const RAW_FUTEX: usize = 64;
const CTL_READY: usize = 128;
const CTL_START: usize = 192;
const CTL_WAKE: usize = 256;
const CTL_SENT: usize = 264;
const CTL_STOP: usize = 320;
const RAW_PTHREAD: usize = 512;

/// The pthread baseline: a process-shared robust mutex and the value it
/// guards, as a C program would lay them out.
#[repr(C)]
struct PthreadCell {
    mutex: libc::pthread_mutex_t,
    value: Value,
}

const _: () = assert!(RAW_PTHREAD + size_of::<PthreadCell>() <= RAW_BYTES);
const _: () = assert!(RAW_PTHREAD.is_multiple_of(align_of::<PthreadCell>()));

struct RawMap {
    _map: MmapMut,
    base: *mut u8,
}

// SAFETY: the mapping is shared memory that other processes change anyway:
// this process reaches it only through atomics, and the pthread cell's
// value only under its (process-shared) mutex.
unsafe impl Sync for RawMap {}
// SAFETY: as above; the pointer stays valid wherever the owner moves.
unsafe impl Send for RawMap {}

impl RawMap {
    fn create(path: &Path) -> RawMap {
        let f = open_rw(path, true);
        if let Err(e) = f.set_len(RAW_BYTES as u64) {
            fail("set_len", e)
        }
        Self::map(&f)
    }

    fn open(path: &Path) -> RawMap {
        Self::map(&open_rw(path, false))
    }

    fn map(f: &File) -> RawMap {
        // SAFETY: the file is this suite's own, RAW_BYTES long, and only
        // ever truncated by its guard after every process unmapped it.
        let mut map = unsafe { MmapMut::map_mut(f) }.unwrap_or_else(|e| fail("mmap", e));
        assert!(map.len() >= RAW_BYTES);
        let base = map.as_mut_ptr();
        RawMap { _map: map, base }
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        assert!(at.is_multiple_of(8) && at + 8 <= RAW_BYTES);
        // SAFETY: in bounds and 8-aligned (the mapping starts on a page),
        // mapped while `self` lives; an atomic may alias memory that other
        // processes change.
        unsafe { &*(self.base.add(at) as *const AtomicU64) }
    }

    fn futex(&self) -> &AtomicU32 {
        // SAFETY: as in `word`: 4 bytes at a 64-aligned offset.
        unsafe { &*(self.base.add(RAW_FUTEX) as *const AtomicU32) }
    }

    fn pthread(&self) -> *mut PthreadCell {
        // In bounds and aligned (the asserts on RAW_PTHREAD).
        self.base.wrapping_add(RAW_PTHREAD) as *mut PthreadCell
    }
}

fn check_rc(what: &str, rc: libc::c_int) {
    if rc != 0 {
        fail(what, std::io::Error::from_raw_os_error(rc))
    }
}

/// Makes the pthread cell's mutex process-shared and robust (once, by the
/// process that created the file, before any peer maps it).
fn init_pthread(cell: *mut PthreadCell) {
    // SAFETY: `cell` points into the live mapping (RawMap::pthread), which
    // no other process uses yet; the attribute object is initialised before
    // use and destroyed after.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        check_rc("mutexattr_init", libc::pthread_mutexattr_init(&mut attr));
        check_rc(
            "mutexattr_setpshared",
            libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED),
        );
        check_rc(
            "mutexattr_setrobust",
            libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST),
        );
        check_rc(
            "mutex_init",
            libc::pthread_mutex_init(&raw mut (*cell).mutex, &attr),
        );
        libc::pthread_mutexattr_destroy(&mut attr);
    }
}

/// Runs `f` on the pthread cell's value under its mutex (a dead holder's
/// mutex is made consistent: the value is only ever incremented whole).
#[inline(always)]
fn with_pthread<R>(cell: *mut PthreadCell, f: impl FnOnce(&mut Value) -> R) -> R {
    // SAFETY: `cell` is the mapping's initialised pthread cell; the value
    // is touched only while this process holds the mutex, so the `&mut` is
    // exclusive in every process.
    unsafe {
        let m = &raw mut (*cell).mutex;
        let rc = libc::pthread_mutex_lock(m);
        if rc == libc::EOWNERDEAD {
            libc::pthread_mutex_consistent(m);
        } else {
            check_rc("pthread_mutex_lock", rc);
        }
        let r = f(&mut (*cell).value);
        libc::pthread_mutex_unlock(m);
        r
    }
}

fn futex_wait(word: &AtomicU32, seen: u32) {
    // SAFETY: `word` is a live, aligned 4-byte word of the shared mapping;
    // FUTEX_WAIT reads it atomically and compares. Not FUTEX_PRIVATE: the
    // waker is another process.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            seen,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn futex_wake(word: &AtomicU32, n: u32) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE reads nothing.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("fifo path");
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        fail("mkfifo", std::io::Error::last_os_error())
    }
}

// ------------------------------------------------------------ the ops ---

/// One operation of a workload; the loops are monomorphised per op.
trait Op: Sync {
    fn op(&self);
}

/// `coop-add-*`'s loop: `n` × `op`. A symbol of its own for profiles
/// (benches/profile.sh counts instructions inside it).
#[inline(never)]
fn coop_add_loop<O: Op>(o: &O, n: u64) {
    for _ in 0..n {
        o.op();
    }
}

/// `coop-lock-*`'s loop, as `coop_add_loop`.
#[inline(never)]
fn coop_lock_loop<O: Op>(o: &O, n: u64) {
    for _ in 0..n {
        o.op();
    }
}

struct ViewAdd<'a>(&'a CounterAtomics);
impl Op for ViewAdd<'_> {
    #[inline(always)]
    fn op(&self) {
        self.0.n.fetch_add(1, Relaxed);
    }
}

struct RemadeAdd<'a>(&'a Slab, Handle<Counter>);
impl Op for RemadeAdd<'_> {
    #[inline(always)]
    fn op(&self) {
        match self.0.atomic(self.1) {
            Ok(v) => {
                v.n.fetch_add(1, Relaxed);
            }
            Err(e) => fail("atomic", e),
        }
    }
}

struct RawAdd<'a>(&'a AtomicU64);
impl Op for RawAdd<'_> {
    #[inline(always)]
    fn op(&self) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// `transact` through a view checked once (`Slab::locked`), as the
/// fetch_add row uses a view made once: the per-operation cost is the lock
/// and the crash-atomic commit, not the handle check.
struct TransactLock<'a>(shmslab::locked::LockedRef<'a, Value>);
impl Op for TransactLock<'_> {
    #[inline(always)]
    fn op(&self) {
        if let Err(e) = self.0.transact(bump) {
            fail("transact", e)
        }
    }
}

struct ParkingLotLock<'a>(&'a parking_lot::Mutex<Value>);
impl Op for ParkingLotLock<'_> {
    #[inline(always)]
    fn op(&self) {
        bump(&mut self.0.lock());
    }
}

struct PthreadLock(*mut PthreadCell);
// SAFETY: the cell is process-shared memory guarded by its own mutex.
unsafe impl Sync for PthreadLock {}
impl Op for PthreadLock {
    #[inline(always)]
    fn op(&self) {
        with_pthread(self.0, bump);
    }
}

/// One side of a ping-pong: send a value, wait for one.
trait Bell {
    fn send(&self, v: u64);
    fn wait_for(&self, v: u64);
}

/// shmslab: the ball is a counter in the segment (an atomic view), each
/// direction has its notifier; the waiter takes a ticket before it looks.
struct NotifierBell<'a> {
    ball: &'a CounterAtomics,
    tx: Notifier<'a>,
    rx: Notifier<'a>,
}

impl Bell for NotifierBell<'_> {
    #[inline(always)]
    fn send(&self, v: u64) {
        self.ball.n.store(v, Release);
        self.tx.notify_one();
    }
    #[inline(always)]
    fn wait_for(&self, v: u64) {
        loop {
            let t = self.rx.ticket();
            if self.ball.n.load(Acquire) == v {
                return;
            }
            self.rx.wait_since(t, None);
        }
    }
}

/// The raw futex: the ball is the futex word itself (its low 32 bits).
struct FutexBell<'a>(&'a AtomicU32);

impl Bell for FutexBell<'_> {
    #[inline(always)]
    fn send(&self, v: u64) {
        self.0.store(v as u32, SeqCst);
        futex_wake(self.0, 1);
    }
    #[inline(always)]
    fn wait_for(&self, v: u64) {
        loop {
            let cur = self.0.load(SeqCst);
            if cur == v as u32 {
                return;
            }
            futex_wait(self.0, cur);
        }
    }
}

/// A pipe: one byte each way through two FIFOs (opened read-write, so
/// opening never blocks).
struct PipeBell {
    tx: File,
    rx: File,
}

impl PipeBell {
    fn open(tx: &Path, rx: &Path) -> PipeBell {
        let rw = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .unwrap_or_else(|e| fail("open fifo", e))
        };
        PipeBell {
            tx: rw(tx),
            rx: rw(rx),
        }
    }
}

impl Bell for PipeBell {
    #[inline(always)]
    fn send(&self, v: u64) {
        if let Err(e) = (&self.tx).write_all(&[v as u8]) {
            fail("pipe write", e)
        }
    }
    #[inline(always)]
    fn wait_for(&self, v: u64) {
        let mut b = [0u8];
        if let Err(e) = (&self.rx).read_exact(&mut b) {
            fail("pipe read", e)
        }
        assert_eq!(b[0], v as u8, "coop-wake/pipe: CORRECTNESS: wrong byte");
    }
}

/// The ping side: `warm + trips` round trips; for each recorded one, the
/// two one-way latencies (ns) go to `out`.
#[inline(never)]
fn coop_ping_loop<B: Bell>(
    b: &B,
    raw: &RawMap,
    base: u64,
    warm: u64,
    trips: u64,
    mut out: Option<&mut Vec<u64>>,
) {
    let (wake, sent) = (raw.word(CTL_WAKE), raw.word(CTL_SENT));
    for i in 0..warm + trips {
        let s0 = mono_ns();
        b.send(base + 2 * i + 1);
        b.wait_for(base + 2 * i + 2);
        let r = mono_ns();
        if let (true, Some(out)) = (i >= warm, out.as_deref_mut()) {
            out.push(wake.load(SeqCst).saturating_sub(s0));
            out.push(r.saturating_sub(sent.load(SeqCst)));
        }
    }
}

/// The pong side: waits for each ping, stamps its wake and its send.
#[inline(never)]
fn coop_pong_loop<B: Bell>(b: &B, raw: &RawMap, base: u64, n: u64) {
    let (wake, sent) = (raw.word(CTL_WAKE), raw.word(CTL_SENT));
    for i in 0..n {
        b.wait_for(base + 2 * i + 1);
        wake.store(mono_ns(), SeqCst);
        sent.store(mono_ns(), SeqCst);
        b.send(base + 2 * i + 2);
    }
}

// ------------------------------------------------------------ variants ---

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Add {
    View,
    Remade,
    Raw,
}

impl Add {
    const ALL: [Add; 3] = [Add::View, Add::Remade, Add::Raw];
    fn name(self) -> &'static str {
        match self {
            Add::View => "shmslab-view",
            Add::Remade => "shmslab-remade",
            Add::Raw => "mmap-atomic",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lock1 {
    Transact,
    ParkingLot,
    Pthread,
}

impl Lock1 {
    const ALL: [Lock1; 3] = [Lock1::Transact, Lock1::ParkingLot, Lock1::Pthread];
    fn name(self) -> &'static str {
        match self {
            Lock1::Transact => "shmslab-transact",
            Lock1::ParkingLot => "parking_lot",
            Lock1::Pthread => "pthread-robust",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lock2 {
    TransactProcs,
    TransactThreads,
    ParkingLotThreads,
    PthreadProcs,
}

impl Lock2 {
    const ALL: [Lock2; 4] = [
        Lock2::TransactProcs,
        Lock2::TransactThreads,
        Lock2::ParkingLotThreads,
        Lock2::PthreadProcs,
    ];
    fn name(self) -> &'static str {
        match self {
            Lock2::TransactProcs => "shmslab-transact",
            Lock2::TransactThreads => "shmslab-transact-2threads",
            Lock2::ParkingLotThreads => "parking_lot-2threads",
            Lock2::PthreadProcs => "pthread-robust",
        }
    }
    fn processes(self) -> bool {
        matches!(self, Lock2::TransactProcs | Lock2::PthreadProcs)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wake {
    Notifier,
    Futex,
    Pipe,
}

impl Wake {
    const ALL: [Wake; 3] = [Wake::Notifier, Wake::Futex, Wake::Pipe];
    fn name(self) -> &'static str {
        match self {
            Wake::Notifier => "shmslab-notifier",
            Wake::Futex => "futex",
            Wake::Pipe => "pipe",
        }
    }
}

/// Where the two ping-pong processes run: pinned to one CPU (a wake-up is
/// a context switch) or to two (a wake-up reaches the other CPU, which on
/// this KVM guest has usually halted: the host must wake the vCPU). Left
/// to the scheduler, the placement changes from run to run and makes the
/// latency bimodal, so each is measured on purpose.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    OneCpu,
    TwoCpus,
}

impl Place {
    const ALL: [Place; 2] = [Place::OneCpu, Place::TwoCpus];
    fn group(self) -> &'static str {
        match self {
            Place::OneCpu => "coop-wake-1cpu",
            Place::TwoCpus => "coop-wake-2cpu",
        }
    }
    /// (the ping side's CPU, the pong side's), from the CPUs this process
    /// may use; `None` if there are too few.
    fn cpus(self) -> Option<(usize, usize)> {
        let cpus = allowed_cpus();
        match self {
            Place::OneCpu => cpus.first().map(|&c| (c, c)),
            Place::TwoCpus => (cpus.len() >= 2).then(|| (cpus[0], cpus[1])),
        }
    }
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set, which the call fills.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE, the set's size.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// The calling thread pinned to one CPU; its mask is restored on drop.
struct Pinned(Option<libc::cpu_set_t>);

fn pin(cpu: usize) -> Pinned {
    // SAFETY: zeroed sets are valid and empty; `cpu` is below CPU_SETSIZE
    // (it came from `allowed_cpus` or a peer spec made from it); the calls
    // get and set the calling thread's mask with the sets' own size.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        let size = size_of::<libc::cpu_set_t>();
        let saved = (libc::sched_getaffinity(0, size, &mut old) == 0).then_some(old);
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        if libc::sched_setaffinity(0, size, &one) != 0 {
            fail("sched_setaffinity", std::io::Error::last_os_error())
        }
        Pinned(saved)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            // SAFETY: restores a mask the kernel gave us, with its size.
            unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), old) };
        }
    }
}

fn full(group: &str, variant: &str) -> String {
    format!("{group}/{variant}")
}

/// Every coop `group/variant` name (what filters match).
fn all_names() -> Vec<String> {
    let mut v = Vec::new();
    v.extend(Add::ALL.map(|k| full("coop-add-1p", k.name())));
    v.extend(Add::ALL.map(|k| full("coop-add-2p", k.name())));
    v.extend(Lock1::ALL.map(|k| full("coop-lock-1p", k.name())));
    v.extend(Lock2::ALL.map(|k| full("coop-lock-2p", k.name())));
    for p in Place::ALL {
        v.extend(Wake::ALL.map(|k| full(p.group(), k.name())));
    }
    v
}

/// A two-worker run by time rather than by count: the worker with the
/// deadline stores `epoch` in `stop` once it passes; the other stops when it
/// sees that. Both run in chunks and look between them.
#[derive(Clone, Copy)]
struct Window<'a> {
    stop: &'a AtomicU64,
    epoch: u64,
    /// CLOCK_MONOTONIC ns; `None`: watch `stop`.
    deadline: Option<u64>,
}

/// Operations between two looks at the clock or the stop word: enough that
/// a look (≈25 ns for the clock) is noise even for a 4 ns fetch_add.
const CHUNK: u64 = 1024;

/// Runs `lp(o, n)`, or, in a window, chunks of it until the window closes;
/// returns the operations made.
fn drive<O: Op>(o: &O, lp: fn(&O, u64), n: u64, win: Option<Window>) -> u64 {
    let Some(w) = win else {
        lp(o, n);
        return n;
    };
    let mut ops = 0;
    loop {
        lp(o, CHUNK);
        ops += CHUNK;
        let done = match w.deadline {
            Some(d) => mono_ns() >= d,
            None => w.stop.load(Relaxed) == w.epoch,
        };
        if done {
            if w.deadline.is_some() {
                w.stop.store(w.epoch, SeqCst);
            }
            return ops;
        }
    }
}

// ------------------------------------------------------------- sides ---

/// What one process holds: the segment (with the counter, the locked
/// value, the ball and the two notifiers as roots) and the raw mapping.
struct Side {
    slab: Slab,
    counter: Handle<Counter>,
    locked: Locked<Value>,
    ball: Handle<Counter>,
    ping: NotifierHandle,
    pong: NotifierHandle,
    raw: RawMap,
}

impl Side {
    fn create(slab_path: &ShmFile, raw_path: &Path) -> Side {
        let slab = new_slab(slab_path);
        let counter = slab
            .root_or_insert("coop-counter", Counter::default())
            .unwrap_or_else(|e| fail("root counter", e));
        let locked = slab
            .root_or_insert_locked("coop-lock", Value::default())
            .unwrap_or_else(|e| fail("root lock", e));
        let ball = slab
            .root_or_insert("coop-ball", Counter::default())
            .unwrap_or_else(|e| fail("root ball", e));
        let ping = slab
            .root_or_insert_notifier("coop-ping")
            .unwrap_or_else(|e| fail("root ping", e));
        let pong = slab
            .root_or_insert_notifier("coop-pong")
            .unwrap_or_else(|e| fail("root pong", e));
        let raw = RawMap::create(raw_path);
        init_pthread(raw.pthread());
        Side {
            slab,
            counter,
            locked,
            ball,
            ping,
            pong,
            raw,
        }
    }

    fn attach(slab_path: &Path, raw_path: &Path) -> Side {
        let slab = Slab::attach(slab_path).unwrap_or_else(|e| fail("attach", e));
        fn some<H>(what: &str, r: shmslab::Result<Option<H>>) -> H {
            match r {
                Ok(Some(h)) => h,
                Ok(None) => fail(what, "no such root"),
                Err(e) => fail(what, e),
            }
        }
        let counter = some("root counter", slab.root::<Counter>("coop-counter"));
        let ball = some("root ball", slab.root::<Counter>("coop-ball"));
        let locked = some("root lock", slab.root_locked::<Value>("coop-lock"));
        let ping = some("root ping", slab.root_notifier("coop-ping"));
        let pong = some("root pong", slab.root_notifier("coop-pong"));
        Side {
            slab,
            counter,
            locked,
            ball,
            ping,
            pong,
            raw: RawMap::open(raw_path),
        }
    }

    fn view(&self, h: Handle<Counter>) -> &CounterAtomics {
        self.slab.atomic(h).unwrap_or_else(|e| fail("atomic", e))
    }

    /// `n` fetch_adds (or a window of them); returns how many were made.
    fn add(&self, k: Add, n: u64, win: Option<Window>) -> u64 {
        match k {
            Add::View => drive(&ViewAdd(self.view(self.counter)), coop_add_loop, n, win),
            Add::Remade => drive(&RemadeAdd(&self.slab, self.counter), coop_add_loop, n, win),
            Add::Raw => drive(&RawAdd(self.raw.word(RAW_COUNTER)), coop_add_loop, n, win),
        }
    }

    fn add_value(&self, k: Add) -> u64 {
        match k {
            Add::View | Add::Remade => self.view(self.counter).n.load(SeqCst),
            Add::Raw => self.raw.word(RAW_COUNTER).load(SeqCst),
        }
    }

    fn transact(&self, n: u64, win: Option<Window>) -> u64 {
        let view = self
            .slab
            .locked(self.locked)
            .unwrap_or_else(|e| fail("locked", e));
        drive(&TransactLock(view), coop_lock_loop, n, win)
    }

    fn pthread(&self, n: u64, win: Option<Window>) -> u64 {
        drive(&PthreadLock(self.raw.pthread()), coop_lock_loop, n, win)
    }

    fn transact_value(&self) -> Value {
        self.slab
            .read_locked(self.locked)
            .unwrap_or_else(|e| fail("read_locked", e))
    }

    fn pthread_value(&self) -> Value {
        with_pthread(self.raw.pthread(), |v| *v)
    }

    /// The notifier ping-pong, as the ping side (`ping`) or the pong side.
    fn notifier_bell(&self, ping: bool) -> NotifierBell<'_> {
        let n = |h| {
            self.slab
                .notifier(h)
                .unwrap_or_else(|e| fail("notifier", e))
        };
        let (tx, rx) = if ping {
            (n(self.ping), n(self.pong))
        } else {
            (n(self.pong), n(self.ping))
        };
        NotifierBell {
            ball: self.view(self.ball),
            tx,
            rx,
        }
    }
}

/// Waits until `f` holds: spins, then yields (the other side may be
/// descheduled on this 2-vCPU machine); panics after a minute.
fn spin_until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    let mut i = 0u32;
    while !f() {
        i = i.wrapping_add(1);
        if i < 2000 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
            if start.elapsed() > Duration::from_secs(60) {
                panic!("coop: {what}: the other side never came");
            }
        }
    }
}

/// The peer's half of the start barrier.
fn arrive(raw: &RawMap, epoch: u64) {
    raw.word(CTL_READY).store(epoch, SeqCst);
    spin_until("peer waiting for the start", || {
        raw.word(CTL_START).load(SeqCst) == epoch
    });
}

/// The parent's half: once the peer arrived, start both.
fn release(raw: &RawMap, epoch: u64) {
    spin_until("waiting for the peer", || {
        raw.word(CTL_READY).load(SeqCst) == epoch
    });
    raw.word(CTL_START).store(epoch, SeqCst);
}

// ------------------------------------------------------------- peers ---

/// A second process running one coop variant (see the module doc).
struct Peer {
    child: Child,
    tx: Option<ChildStdin>,
    rx: BufReader<ChildStdout>,
    role: String,
}

impl Peer {
    fn spawn(fx: &Fixture, role: &str) -> Peer {
        Self::spawn_on(fx, role, None)
    }

    /// A peer that pins itself to `cpu` first.
    fn spawn_on(fx: &Fixture, role: &str, cpu: Option<usize>) -> Peer {
        let exe = std::env::current_exe().expect("current_exe");
        let spec = format!(
            "{role} {} {} {} {} {}",
            fx.slab_file.path().display(),
            fx.raw_file.path().display(),
            fx.fifos[0].path().display(),
            fx.fifos[1].path().display(),
            cpu.map_or("-".to_string(), |c| c.to_string())
        );
        let mut child = Command::new(exe)
            .env(CHILD_ENV, spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| fail("spawn peer", e));
        let tx = child.stdin.take().expect("peer stdin");
        let mut rx = BufReader::new(child.stdout.take().expect("peer stdout"));
        let mut line = String::new();
        rx.read_line(&mut line).expect("read peer");
        assert_eq!(line.trim(), "ready", "coop peer {role} did not get ready");
        Peer {
            child,
            tx: Some(tx),
            rx,
            role: role.to_string(),
        }
    }

    /// Runs `n` operations in the peer (with `arg`; `n == 0`: until this
    /// side's window closes) and `mine` here, started together. `mine` gets
    /// the window (with its deadline) when `window_ns` is given, and
    /// returns the operations it made. Returns both spans and both counts.
    fn run(
        &mut self,
        fx: &Fixture,
        n: u64,
        arg: u64,
        window_ns: Option<u64>,
        mine: impl FnOnce(Option<Window>) -> u64,
    ) -> Run {
        let epoch = fx.epoch.get() + 1;
        fx.epoch.set(epoch);
        let n = if window_ns.is_some() { 0 } else { n };
        let tx = self.tx.as_mut().expect("peer stdin");
        writeln!(tx, "go {n} {epoch} {arg}").expect("command peer");
        tx.flush().expect("command peer");
        release(&fx.side.raw, epoch);
        let t0 = mono_ns();
        let win = window_ns.map(|w| Window {
            stop: fx.side.raw.word(CTL_STOP),
            epoch,
            deadline: Some(t0 + w),
        });
        let ops = mine(win);
        let t1 = mono_ns();
        let mut line = String::new();
        self.rx.read_line(&mut line).expect("read peer");
        let v: Vec<u64> = line
            .strip_prefix("done ")
            .unwrap_or_else(|| panic!("coop peer {} said {line:?}", self.role))
            .split_whitespace()
            .map(|x| x.parse().expect("peer time"))
            .collect();
        assert_eq!(v.len(), 3, "coop peer {} said {line:?}", self.role);
        Run {
            spans: Spans([(t0, t1), (v[0], v[1])]),
            ops: [ops, v[2]],
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.tx.take()); // EOF: the peer detaches and exits
        let st = self.child.wait();
        if !std::thread::panicking() {
            match st {
                Ok(s) if s.success() => {}
                other => panic!("coop peer {} failed: {other:?}", self.role),
            }
        }
    }
}

/// A peer: attach, say "ready", run a batch per "go" line until EOF.
pub fn child_main(spec: &str) {
    let w: Vec<&str> = spec.split(' ').collect();
    let [role, slab, raw, fifo_a, fifo_b, cpu] = w[..] else {
        panic!("coop peer: bad spec {spec:?}")
    };
    let _pinned = cpu.parse::<usize>().ok().map(pin);
    let side = Side::attach(Path::new(slab), Path::new(raw));
    // The pong side sends on b and listens on a.
    let pipe = role
        .ends_with("/pipe")
        .then(|| PipeBell::open(Path::new(fifo_b), Path::new(fifo_a)));
    let bell = side.notifier_bell(false);
    let futex = FutexBell(side.raw.futex());
    println!("ready");
    std::io::stdout().flush().expect("flush");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("coop peer: read");
        let v: Vec<u64> = line
            .strip_prefix("go ")
            .unwrap_or_else(|| panic!("coop peer: command {line:?}"))
            .split_whitespace()
            .map(|x| x.parse().expect("coop peer: number"))
            .collect();
        let [n, epoch, arg] = v[..] else {
            panic!("coop peer: command {line:?}")
        };
        arrive(&side.raw, epoch);
        // n == 0: until the parent's window closes.
        let win = (n == 0).then(|| Window {
            stop: side.raw.word(CTL_STOP),
            epoch,
            deadline: None,
        });
        let t0 = mono_ns();
        // The wake roles are the same in both placements.
        let what = match role.split_once('/') {
            Some((g, v)) if g.starts_with("coop-wake") => v,
            _ => role,
        };
        let ops = match what {
            "coop-add-2p/shmslab-view" => side.add(Add::View, n, win),
            "coop-add-2p/shmslab-remade" => side.add(Add::Remade, n, win),
            "coop-add-2p/mmap-atomic" => side.add(Add::Raw, n, win),
            "coop-lock-2p/shmslab-transact" => side.transact(n, win),
            "coop-lock-2p/pthread-robust" => side.pthread(n, win),
            "shmslab-notifier" => {
                coop_pong_loop(&bell, &side.raw, arg, n);
                n
            }
            "futex" => {
                coop_pong_loop(&futex, &side.raw, arg, n);
                n
            }
            "pipe" => {
                coop_pong_loop(pipe.as_ref().expect("pipe"), &side.raw, arg, n);
                n
            }
            _ => panic!("coop peer: unknown role {role:?}"),
        };
        let t1 = mono_ns();
        region(role, t0, t1);
        println!("done {t0} {t1} {ops}");
        std::io::stdout().flush().expect("flush");
    }
}

// ----------------------------------------------------------- fixture ---

/// Two workers' spans, (start, end) in ns of CLOCK_MONOTONIC.
#[derive(Clone, Copy)]
struct Spans([(u64, u64); 2]);

/// A two-worker run: the spans and each worker's operations.
#[derive(Clone, Copy)]
struct Run {
    spans: Spans,
    ops: [u64; 2],
}

impl Run {
    fn total(&self) -> u64 {
        self.ops[0] + self.ops[1]
    }
    /// Aggregate ns per operation: the union of the spans ÷ all operations.
    fn ns_per_op(&self) -> f64 {
        self.spans.union() as f64 / self.total().max(1) as f64
    }
    /// The smaller worker's share of the operations (50%: fair).
    fn share(&self) -> f64 {
        self.ops[0].min(self.ops[1]) as f64 / self.total().max(1) as f64
    }
}

impl Spans {
    fn union(&self) -> u64 {
        let [(s0, e0), (s1, e1)] = self.0;
        e0.max(e1) - s0.min(s1)
    }
    /// The share of the union both spans cover.
    fn overlap(&self) -> f64 {
        let [(s0, e0), (s1, e1)] = self.0;
        let both = e0.min(e1).saturating_sub(s0.max(s1));
        both as f64 / self.union().max(1) as f64
    }
}

/// The files and both sides' objects one run of the coop workloads uses.
/// Fields drop in order: the attachment, then the files.
pub struct Fixture {
    side: Side,
    plock: parking_lot::Mutex<Value>,
    /// The ping side's FIFOs: sends on a, listens on b.
    pipe: PipeBell,
    epoch: Cell<u64>,
    slab_file: ShmFile,
    raw_file: ShmFile,
    fifos: [ShmFile; 2],
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let slab_file = ShmFile::new(&format!("coop-{tag}"));
        let raw_file = ShmFile::new(&format!("coop-{tag}-raw"));
        let fifos = ["a", "b"].map(|x| {
            let f = ShmFile::new(&format!("coop-{tag}-fifo-{x}"));
            mkfifo(f.path());
            f
        });
        let side = Side::create(&slab_file, raw_file.path());
        let pipe = PipeBell::open(fifos[0].path(), fifos[1].path());
        Fixture {
            side,
            plock: parking_lot::Mutex::new(Value::default()),
            pipe,
            epoch: Cell::new(0),
            slab_file,
            raw_file,
            fifos,
        }
    }

    fn add_1p(&self, k: Add, n: u64) -> Duration {
        let before = self.side.add_value(k);
        let t = Instant::now();
        self.side.add(k, n, None);
        let d = t.elapsed();
        let name = full("coop-add-1p", k.name());
        check_count(&name, before, self.side.add_value(k), n);
        d
    }

    /// Both processes on the counter: `n` operations each, or (with
    /// `window_ns`) as many as fit.
    fn add_2p(&self, k: Add, peer: &mut Peer, n: u64, window_ns: Option<u64>) -> Run {
        let before = self.side.add_value(k);
        let r = peer.run(self, n, 0, window_ns, |w| self.side.add(k, n, w));
        let name = full("coop-add-2p", k.name());
        check_count(&name, before, self.side.add_value(k), r.total());
        r
    }

    fn lock_1p(&self, k: Lock1, n: u64) -> Duration {
        let before = self.lock_value(k);
        let t = Instant::now();
        match k {
            Lock1::Transact => self.side.transact(n, None),
            Lock1::ParkingLot => drive(&ParkingLotLock(&self.plock), coop_lock_loop, n, None),
            Lock1::Pthread => self.side.pthread(n, None),
        };
        let d = t.elapsed();
        let name = full("coop-lock-1p", k.name());
        check_value(&name, before, self.lock_value(k), n);
        d
    }

    fn lock_value(&self, k: Lock1) -> Value {
        match k {
            Lock1::Transact => self.side.transact_value(),
            Lock1::ParkingLot => *self.plock.lock(),
            Lock1::Pthread => self.side.pthread_value(),
        }
    }

    /// Two workers on one lock, as `add_2p`.
    fn lock_2p(&self, k: Lock2, peer: Option<&mut Peer>, n: u64, window_ns: Option<u64>) -> Run {
        let one = match k {
            Lock2::TransactProcs | Lock2::TransactThreads => Lock1::Transact,
            Lock2::ParkingLotThreads => Lock1::ParkingLot,
            Lock2::PthreadProcs => Lock1::Pthread,
        };
        let before = self.lock_value(one);
        let r = match k {
            Lock2::TransactProcs => {
                let peer = peer.expect("a peer");
                peer.run(self, n, 0, window_ns, |w| self.side.transact(n, w))
            }
            Lock2::PthreadProcs => {
                let peer = peer.expect("a peer");
                peer.run(self, n, 0, window_ns, |w| self.side.pthread(n, w))
            }
            Lock2::TransactThreads => {
                let op = TransactLock(
                    self.side
                        .slab
                        .locked(self.side.locked)
                        .unwrap_or_else(|e| fail("locked", e)),
                );
                two_threads(window_ns, |w| drive(&op, coop_lock_loop, n, w))
            }
            Lock2::ParkingLotThreads => {
                let op = ParkingLotLock(&self.plock);
                two_threads(window_ns, |w| drive(&op, coop_lock_loop, n, w))
            }
        };
        let name = full("coop-lock-2p", k.name());
        check_value(&name, before, self.lock_value(one), r.total());
        r
    }

    /// One ping-pong batch with the peer (the ping side's span is the
    /// round trips' time).
    fn wake(
        &self,
        k: Wake,
        peer: &mut Peer,
        warm: u64,
        trips: u64,
        out: Option<&mut Vec<u64>>,
    ) -> Run {
        let raw = &self.side.raw;
        let n = warm + trips;
        match k {
            Wake::Notifier => {
                let bell = self.side.notifier_bell(true);
                let base = bell.ball.n.load(SeqCst);
                let r = peer.run(self, n, base, None, |_| {
                    coop_ping(&bell, raw, base, warm, trips, out)
                });
                let end = bell.ball.n.load(SeqCst);
                check_count("coop-wake/shmslab-notifier", base, end, 2 * n);
                r
            }
            Wake::Futex => {
                let bell = FutexBell(raw.futex());
                let base = u64::from(bell.0.load(SeqCst));
                let r = peer.run(self, n, base, None, |_| {
                    coop_ping(&bell, raw, base, warm, trips, out)
                });
                let end = u64::from(bell.0.load(SeqCst));
                if end != (base + 2 * n) & u64::from(u32::MAX) {
                    wrong("coop-wake/futex", format!("word {base} → {end}, {n} trips"))
                }
                r
            }
            Wake::Pipe => peer.run(self, n, 0, None, |_| {
                coop_ping(&self.pipe, raw, 0, warm, trips, out)
            }),
        }
    }
}

/// `coop_ping_loop`, returning the round trips made.
fn coop_ping<B: Bell>(
    b: &B,
    raw: &RawMap,
    base: u64,
    warm: u64,
    trips: u64,
    out: Option<&mut Vec<u64>>,
) -> u64 {
    coop_ping_loop(b, raw, base, warm, trips, out);
    warm + trips
}

/// Two threads running `f` (a count each, or a window: the first thread
/// has the deadline), started together by a spin barrier.
fn two_threads(window_ns: Option<u64>, f: impl Fn(Option<Window>) -> u64 + Sync) -> Run {
    let arrived = AtomicU32::new(0);
    let stop = AtomicU64::new(0);
    let out = std::thread::scope(|s| {
        let hs = [true, false].map(|first| {
            let (arrived, stop, f) = (&arrived, &stop, &f);
            s.spawn(move || {
                arrived.fetch_add(1, SeqCst);
                spin_until("the other thread", || arrived.load(SeqCst) == 2);
                let t0 = mono_ns();
                let win = window_ns.map(|w| Window {
                    stop,
                    epoch: 1,
                    deadline: first.then_some(t0 + w),
                });
                let ops = f(win);
                ((t0, mono_ns()), ops)
            })
        });
        hs.map(|h| h.join().expect("coop worker panicked"))
    });
    Run {
        spans: Spans([out[0].0, out[1].0]),
        ops: [out[0].1, out[1].1],
    }
}

#[cold]
#[inline(never)]
fn wrong(what: &str, detail: String) -> ! {
    panic!("{what}: CORRECTNESS: {detail}")
}

fn check_count(what: &str, before: u64, after: u64, ops: u64) {
    if after.wrapping_sub(before) != ops {
        wrong(
            what,
            format!("counter {before} → {after}, {ops} operations"),
        )
    }
}

fn check_value(what: &str, before: Value, after: Value, ops: u64) {
    if (0..8).any(|i| after[i].wrapping_sub(before[i]) != ops) {
        wrong(
            what,
            format!("value {before:?} → {after:?}, {ops} operations"),
        )
    }
}

// --------------------------------------------------------- criterion ---

/// The coop groups of the criterion part (those the filter selects).
pub fn criterion_part(c: &mut Criterion, sel: &dyn Fn(&str) -> bool) {
    if !all_names().iter().any(|n| sel(n)) {
        return;
    }
    let fx = Fixture::new("crit");
    let nanos = |r: Run| Duration::from_nanos(r.spans.union());

    let mut g = c.benchmark_group("coop-add-1p");
    g.throughput(Throughput::Elements(1));
    for k in Add::ALL {
        if sel(&full("coop-add-1p", k.name())) {
            g.bench_function(k.name(), |b| b.iter_custom(|n| fx.add_1p(k, n)));
        }
    }
    g.finish();

    let mut g = c.benchmark_group("coop-add-2p");
    g.throughput(Throughput::Elements(2));
    for k in Add::ALL {
        let name = full("coop-add-2p", k.name());
        if sel(&name) {
            let mut peer = Peer::spawn(&fx, &name);
            g.bench_function(k.name(), |b| {
                b.iter_custom(|n| nanos(fx.add_2p(k, &mut peer, n, None)))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("coop-lock-1p");
    g.throughput(Throughput::Elements(1));
    for k in Lock1::ALL {
        if sel(&full("coop-lock-1p", k.name())) {
            g.bench_function(k.name(), |b| b.iter_custom(|n| fx.lock_1p(k, n)));
        }
    }
    g.finish();

    let mut g = c.benchmark_group("coop-lock-2p");
    g.throughput(Throughput::Elements(2));
    for k in Lock2::ALL {
        let name = full("coop-lock-2p", k.name());
        if sel(&name) {
            let mut peer = k.processes().then(|| Peer::spawn(&fx, &name));
            g.bench_function(k.name(), |b| {
                b.iter_custom(|n| nanos(fx.lock_2p(k, peer.as_mut(), n, None)))
            });
        }
    }
    g.finish();

    // Time per round trip (two notify → wake latencies), per placement.
    for place in Place::ALL {
        let Some((mine, theirs)) = place.cpus() else {
            continue;
        };
        let mut g = c.benchmark_group(place.group());
        for k in Wake::ALL {
            let name = full(place.group(), k.name());
            if sel(&name) {
                let mut peer = Peer::spawn_on(&fx, &name, Some(theirs));
                let _pinned = pin(mine);
                g.bench_function(k.name(), |b| {
                    b.iter_custom(|n| {
                        let (t0, t1) = fx.wake(k, &mut peer, 0, n, None).spans.0[0];
                        Duration::from_nanos(t1 - t0)
                    })
                });
            }
        }
        g.finish();
    }
}

// ------------------------------------------------------------- table ---

/// Samples per figure, in the order first seen.
#[derive(Default)]
struct Figures(Vec<(String, &'static str, Vec<f64>)>);

impl Figures {
    fn add(&mut self, key: &str, unit: &'static str, v: f64) {
        match self.0.iter_mut().find(|(k, _, _)| k == key) {
            Some((_, _, s)) => s.push(v),
            None => self.0.push((key.to_string(), unit, vec![v])),
        }
    }
    fn get(&self, key: &str) -> Option<&[f64]> {
        self.0
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, s)| s.as_slice())
    }
}

/// What a comparison is held to.
#[derive(Clone, Copy)]
enum Target {
    /// Shown for reference.
    None,
    /// shmslab ÷ baseline ≤ this.
    AtMost(f64),
    /// shmslab ÷ baseline < 1 (faster).
    Faster,
}

/// One row of the comparison table: a shmslab figure beside a baseline's.
struct Cmp {
    figure: &'static str,
    shm: &'static str,
    base: &'static str,
    target: Target,
}

const CMPS: [Cmp; 19] = [
    Cmp {
        figure: "fetch_add, 1 process (ns/op)",
        shm: "coop-add-1p/shmslab-view",
        base: "coop-add-1p/mmap-atomic",
        target: Target::AtMost(1.2),
    },
    Cmp {
        figure: "fetch_add, 1 process, view re-made per op (ns/op)",
        shm: "coop-add-1p/shmslab-remade",
        base: "coop-add-1p/mmap-atomic",
        target: Target::None,
    },
    Cmp {
        figure: "fetch_add, 2 processes, one counter (aggregate ns/op)",
        shm: "coop-add-2p/shmslab-view",
        base: "coop-add-2p/mmap-atomic",
        target: Target::AtMost(1.2),
    },
    Cmp {
        figure: "fetch_add, 2 processes, view re-made per op (aggregate ns/op)",
        shm: "coop-add-2p/shmslab-remade",
        base: "coop-add-2p/mmap-atomic",
        target: Target::None,
    },
    Cmp {
        figure: "lock+update+unlock 64 B, uncontended (ns/op)",
        shm: "coop-lock-1p/shmslab-transact",
        base: "coop-lock-1p/parking_lot",
        target: Target::AtMost(2.0),
    },
    Cmp {
        figure: "lock+update+unlock 64 B, uncontended (ns/op)",
        shm: "coop-lock-1p/shmslab-transact",
        base: "coop-lock-1p/pthread-robust",
        target: Target::Faster,
    },
    Cmp {
        figure: "lock+update+unlock 64 B, 2 processes contended (aggregate ns/op)",
        shm: "coop-lock-2p/shmslab-transact",
        base: "coop-lock-2p/pthread-robust",
        target: Target::Faster,
    },
    Cmp {
        figure: "lock+update+unlock 64 B, contended: 2 processes vs 2 threads (aggregate ns/op)",
        shm: "coop-lock-2p/shmslab-transact",
        base: "coop-lock-2p/parking_lot-2threads",
        target: Target::None,
    },
    Cmp {
        figure: "lock+update+unlock 64 B, 2 threads contended (aggregate ns/op)",
        shm: "coop-lock-2p/shmslab-transact-2threads",
        base: "coop-lock-2p/parking_lot-2threads",
        target: Target::None,
    },
    Cmp {
        figure: "notify → wake, 2 processes on 2 CPUs, p50 (µs)",
        shm: "coop-wake-2cpu/shmslab-notifier p50",
        base: "coop-wake-2cpu/futex p50",
        target: Target::AtMost(1.2),
    },
    Cmp {
        figure: "notify → wake, 2 processes on 2 CPUs, p50 (µs)",
        shm: "coop-wake-2cpu/shmslab-notifier p50",
        base: "coop-wake-2cpu/pipe p50",
        target: Target::None,
    },
    Cmp {
        figure: "notify → wake, 2 processes on 2 CPUs, p99 (µs)",
        shm: "coop-wake-2cpu/shmslab-notifier p99",
        base: "coop-wake-2cpu/futex p99",
        target: Target::None,
    },
    Cmp {
        figure: "notify → wake, 2 processes on 2 CPUs, p99 (µs)",
        shm: "coop-wake-2cpu/shmslab-notifier p99",
        base: "coop-wake-2cpu/pipe p99",
        target: Target::None,
    },
    Cmp {
        figure: "notify → wake, 2 processes on 2 CPUs, mean round trip (µs)",
        shm: "coop-wake-2cpu/shmslab-notifier round trip",
        base: "coop-wake-2cpu/futex round trip",
        target: Target::None,
    },
    Cmp {
        figure: "notify → wake, 2 processes on 1 CPU, p50 (µs)",
        shm: "coop-wake-1cpu/shmslab-notifier p50",
        base: "coop-wake-1cpu/futex p50",
        target: Target::AtMost(1.2),
    },
    Cmp {
        figure: "notify → wake, 2 processes on 1 CPU, p50 (µs)",
        shm: "coop-wake-1cpu/shmslab-notifier p50",
        base: "coop-wake-1cpu/pipe p50",
        target: Target::None,
    },
    Cmp {
        figure: "notify → wake, 2 processes on 1 CPU, p99 (µs)",
        shm: "coop-wake-1cpu/shmslab-notifier p99",
        base: "coop-wake-1cpu/futex p99",
        target: Target::None,
    },
    Cmp {
        figure: "notify → wake, 2 processes on 1 CPU, p99 (µs)",
        shm: "coop-wake-1cpu/shmslab-notifier p99",
        base: "coop-wake-1cpu/pipe p99",
        target: Target::None,
    },
    Cmp {
        figure: "notify → wake, 2 processes on 1 CPU, mean round trip (µs)",
        shm: "coop-wake-1cpu/shmslab-notifier round trip",
        base: "coop-wake-1cpu/futex round trip",
        target: Target::None,
    },
];

/// Slices each ping-pong of a repetition is cut into (see `table_part`).
const WAKE_SLICES: u64 = 10;

fn pct(sorted: &[u64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)] as f64 / 1e3
}

/// `items` in order on even repetitions, reversed on odd ones, so that no
/// variant always runs first (or last) after the machine changed.
fn order<T: Copy, const N: usize>(items: [T; N], rep: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if rep % 2 == 1 {
        v.reverse();
    }
    v
}

/// The coop table: `reps` repetitions of every selected variant (back to
/// back within a repetition), then the figures and the comparisons.
pub fn table_part(counts: CoopCounts, reps: usize, mode: &str, sel: &dyn Fn(&str) -> bool) {
    if !all_names().iter().any(|n| sel(n)) {
        return;
    }
    let load_start = crate::loadavg();
    let commit = crate::commit();
    let started = Instant::now();
    let fx = Fixture::new("table");
    let c = counts;
    let window = c.window_ms * 1_000_000;
    let mut f = Figures::default();
    eprintln!("coop table: {reps} repetitions");
    for rep in 0..reps {
        eprint!("  repetition {}/{reps}:", rep + 1);
        for k in order(Add::ALL, rep) {
            let name = full("coop-add-1p", k.name());
            if sel(&name) {
                let r0 = mono_ns();
                let d = fx.add_1p(k, c.add1);
                region(&name, r0, mono_ns());
                f.add(&name, "ns", d.as_nanos() as f64 / c.add1 as f64);
            }
        }
        for k in order(Add::ALL, rep) {
            let name = full("coop-add-2p", k.name());
            if sel(&name) {
                let mut peer = Peer::spawn(&fx, &name);
                let r = fx.add_2p(k, &mut peer, 0, Some(window));
                two_worker_figures(&mut f, &name, r);
            }
        }
        eprint!(" add");
        for k in order(Lock1::ALL, rep) {
            let name = full("coop-lock-1p", k.name());
            if sel(&name) {
                let r0 = mono_ns();
                let d = fx.lock_1p(k, c.lock1);
                region(&name, r0, mono_ns());
                f.add(&name, "ns", d.as_nanos() as f64 / c.lock1 as f64);
            }
        }
        for k in order(Lock2::ALL, rep) {
            let name = full("coop-lock-2p", k.name());
            if sel(&name) {
                let mut peer = k.processes().then(|| Peer::spawn(&fx, &name));
                let r = fx.lock_2p(k, peer.as_mut(), 0, Some(window));
                two_worker_figures(&mut f, &name, r);
            }
        }
        eprint!(" lock");
        // Per placement, the three ping-pongs interleaved in WAKE_SLICES
        // slices each (the order alternating), so that they share whatever
        // else the machine is doing.
        for place in Place::ALL {
            let Some((mine, theirs)) = place.cpus() else {
                continue;
            };
            let mut wakes: Vec<(Wake, String, Peer, Vec<u64>, u64, u64)> = Wake::ALL
                .iter()
                .map(|&k| (k, full(place.group(), k.name())))
                .filter(|(_, name)| sel(name))
                .map(|(k, name)| {
                    let peer = Peer::spawn_on(&fx, &name, Some(theirs));
                    let lat = Vec::with_capacity(2 * c.trips as usize);
                    (k, name, peer, lat, 0, 0)
                })
                .collect();
            let pinned = pin(mine);
            for slice in 0..WAKE_SLICES {
                let n = wakes.len();
                for i in 0..n {
                    let i = if (rep + slice as usize) % 2 == 1 {
                        n - 1 - i
                    } else {
                        i
                    };
                    let (k, name, peer, lat, ns, trips) = &mut wakes[i];
                    let (warm, t) = (c.warm / WAKE_SLICES, c.trips / WAKE_SLICES);
                    let (t0, t1) = fx.wake(*k, peer, warm, t, Some(lat)).spans.0[0];
                    region(name, t0, t1);
                    *ns += t1 - t0;
                    *trips += warm + t;
                }
            }
            drop(pinned);
            for (_, name, _, mut lat, ns, trips) in wakes {
                lat.sort_unstable();
                f.add(&format!("{name} p50"), "µs", pct(&lat, 50));
                f.add(&format!("{name} p99"), "µs", pct(&lat, 99));
                // Mean round trip over all slices (their warm-ups included).
                let rt = ns as f64 / trips.max(1) as f64 / 1e3;
                f.add(&format!("{name} round trip"), "µs", rt);
            }
        }
        eprintln!(" wake");
    }
    drop(fx);
    let mut out = vec![
        String::new(),
        "## shmslab coop benchmark summary (atomics, locked values, notifiers)".to_string(),
        String::new(),
    ];
    if !mode.is_empty() {
        out.push(mode.to_string());
    }
    out.push(format!("- machine: {}", crate::machine()));
    out.push(format!("- commit (when the coop table started): {commit}"));
    out.push(format!(
        "- load average before / after: {load_start} / {}",
        crate::loadavg()
    ));
    out.push(format!(
        "- {reps} repetitions (fetch_add {} ops; lock {} ops; two workers: a {} ms window; wake {} round trips after {} warm-up); took {:.1?}",
        c.add1,
        c.lock1,
        c.window_ms,
        c.trips,
        c.warm,
        started.elapsed()
    ));
    out.push(String::new());
    out.push("| comparison | shmslab | baseline | shmslab ÷ baseline | target |".into());
    out.push("|---|--:|--:|--:|---|".into());
    for cmp in &CMPS {
        let (Some(a), Some(b)) = (f.get(cmp.shm), f.get(cmp.base)) else {
            continue;
        };
        let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
        let (r, lo, hi) = report::stats(&ratios);
        let verdict = match cmp.target {
            Target::None => "(reference)".to_string(),
            Target::AtMost(l) => {
                format!("≤ {l:.1}×: {}", if r <= l { "met" } else { "NOT met" })
            }
            Target::Faster => {
                format!("< 1.0×: {}", if r < 1.0 { "met" } else { "NOT met" })
            }
        };
        out.push(format!(
            "| {} | `{}` {} | `{}` {} | {} | {verdict} |",
            cmp.figure,
            variant(cmp.shm),
            cell(a),
            variant(cmp.base),
            cell(b),
            report::fmt_ratio(r, lo, hi),
        ));
    }
    out.push(String::new());
    out.push("Cells: median [min..max] over the repetitions; ratios computed per repetition (the variants run back to back, alternating order), median [min..max]. Two-worker figures (coop-add-2p, coop-lock-2p): both workers run for the window, aggregate ns per operation = the union of their spans ÷ all operations; overlap and smaller share in the figures table. Wake latencies: one way, CLOCK_MONOTONIC just before the notify to just after the wait returns, both directions of every round trip, the processes pinned (1 CPU: both on one; 2 CPUs: one each), the three mechanisms interleaved in slices.".into());
    out.push(String::new());
    out.push("| workload/variant | figure | median [min..max] |".into());
    out.push("|---|---|--:|".into());
    for (key, unit, s) in &f.0 {
        out.push(format!("| {key} | {unit} | {} |", cell(s)));
    }
    println!("{}", out.join("\n"));
}

/// A two-worker run's figures: aggregate ns per operation, how much of
/// the union both workers ran (overlap), the smaller one's share of the
/// operations (fairness).
fn two_worker_figures(f: &mut Figures, name: &str, r: Run) {
    let (t0, t1) = r.spans.0[0];
    region(name, t0, t1);
    f.add(name, "ns", r.ns_per_op());
    f.add(&format!("{name} overlap"), "%", 100.0 * r.spans.overlap());
    f.add(&format!("{name} smaller share"), "%", 100.0 * r.share());
}

/// "shmslab-view" from "coop-add-1p/shmslab-view", figure suffix dropped.
fn variant(key: &str) -> &str {
    let v = key.rsplit('/').next().unwrap_or(key);
    v.split(' ').next().unwrap_or(v)
}

fn cell(s: &[f64]) -> String {
    let (m, lo, hi) = report::stats(s);
    let f = |v: f64| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else if v >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
    };
    if s.len() == 1 {
        f(m)
    } else {
        format!("{} [{}..{}]", f(m), f(lo), f(hi))
    }
}
