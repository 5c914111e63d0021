//! The workloads, exactly as defined for cross-project comparison, and one
//! full run of each on each allocator.
//!
//! PRNG: xorshift64* seeded with 0x9E3779B97F4A7C15. "Write" is a u64
//! store at the start of the block, "check" reads it back and compares.

use crate::heaps::{
    Heap, IcePool, MallocHeap, RtsHeap, ShmFile, ShmHeap, join_rts, join_rts_existing, new_rts,
    new_slab, open_rw,
};
use shmslab::{Slab, SlotRef};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// The PRNG every project uses.
pub struct Rng(u64);

impl Rng {
    /// Seeded with 0x9E3779B97F4A7C15.
    pub fn new() -> Rng {
        Rng(0x9E37_79B9_7F4A_7C15)
    }
    /// xorshift64*.
    #[inline(always)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// W2's sizes.
pub const SIZES: [usize; 5] = [64, 256, 1024, 4096, 16384];
/// The supplementary W2-4k sizes (rts-alloc's classes stop at 4096).
pub const SIZES_4K: [usize; 4] = [64, 256, 1024, 4096];
/// rts-alloc's smallest size class (its `size_classes` module is private).
pub const RTS_MIN_CLASS: usize = 256;
/// W2's live blocks.
pub const W2_LIVE: usize = 4096;
/// iceoryx2's bucket size for W1, W3, W4 and W5 (their requests are 64 B).
pub const ICE_BUCKET: usize = 64;
/// iceoryx2's buckets for W1, W4 and W5 (at most two are live at once).
pub const ICE_BUCKETS: usize = 1 << 16;
/// iceoryx2's bucket size for W2-4k: its largest request.
pub const ICE_W2_BUCKET: usize = 4096;
/// iceoryx2's buckets for W2-4k: twice its live blocks.
pub const ICE_W2_BUCKETS: usize = 2 * W2_LIVE;

/// Which allocator.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Alloc {
    /// shmslab
    Shm,
    /// std::alloc
    Malloc,
    /// rts-alloc
    Rts,
    /// iceoryx2's PoolAllocator (iceoryx2-cal)
    Ice,
}

impl Alloc {
    /// All four, in table order.
    pub const ALL: [Alloc; 4] = [Alloc::Shm, Alloc::Malloc, Alloc::Rts, Alloc::Ice];
    /// The name used in the table and in filters.
    pub fn name(self) -> &'static str {
        match self {
            Alloc::Shm => "shmslab",
            Alloc::Malloc => "malloc",
            Alloc::Rts => "rts-alloc",
            Alloc::Ice => "iceoryx2",
        }
    }
    fn parse(s: &str) -> Alloc {
        match s {
            "shmslab" => Alloc::Shm,
            "malloc" => Alloc::Malloc,
            "rts-alloc" => Alloc::Rts,
            "iceoryx2" => Alloc::Ice,
            _ => panic!("unknown allocator {s:?}"),
        }
    }
}

#[cold]
#[inline(never)]
fn mismatch(workload: &str, at: u64, want: u64, got: u64) -> ! {
    panic!("{workload}: CORRECTNESS: step {at}: read back {got:#x}, wrote {want:#x}")
}

// ---------------------------------------------------------------- W1 ----

/// W1's loop: `pairs` × (allocate 64 B, write i, read it back, free).
#[inline(never)] // a symbol of its own, for profiles; one call per run
pub fn w1_loop<H: Heap>(h: &H, pairs: u64) {
    for i in 0..pairs {
        let b = h.alloc(64);
        h.write(b, i);
        let v = h.read(b);
        if v != i {
            mismatch("W1", i, i, v);
        }
        h.free(b, 64);
    }
}

/// One W1 run: the loop's time (the segment or file is made untimed).
pub fn w1(a: Alloc, pairs: u64, check: bool) -> Duration {
    let time = |h: &dyn Fn()| {
        let r0 = mono_ns();
        let t = Instant::now();
        h();
        let d = t.elapsed();
        region(&format!("w1/{}", a.name()), r0, mono_ns());
        d
    };
    match a {
        Alloc::Shm => {
            let f = ShmFile::new("w1");
            let slab = new_slab(&f);
            let d = time(&|| w1_loop(&ShmHeap(&slab), pairs));
            if check {
                note_check("W1 shmslab check after the loop", findings(&slab));
            }
            d
        }
        Alloc::Malloc => time(&|| w1_loop(&MallocHeap, pairs)),
        Alloc::Rts => {
            let f = ShmFile::new("w1-rts");
            let h = RtsHeap(new_rts(&f, 64 << 20));
            time(&|| w1_loop(&h, pairs))
        }
        Alloc::Ice => {
            let f = ShmFile::new("w1-ice");
            let pool = IcePool::create(&f, ICE_BUCKET, ICE_BUCKETS);
            let h = pool.heap();
            time(&|| w1_loop(&h, pairs))
        }
    }
}

// ---------------------------------------------------------------- W2 ----

/// W2's state: the live blocks (block, size, value written) and the PRNG.
pub struct W2State<B> {
    blocks: Vec<(B, usize, u64)>,
    rng: Rng,
    live: u64,
    /// Most bytes requested and live at once.
    pub peak: u64,
    steps: u64,
}

/// Fills W2's live blocks (untimed): for each, `size = sizes[next() % N]`,
/// allocate, `v = next()`, write v.
pub fn w2_fill<H: Heap, const N: usize>(h: &H, sizes: &[usize; N]) -> W2State<H::Block> {
    let mut rng = Rng::new();
    let mut blocks = Vec::with_capacity(W2_LIVE);
    let mut live = 0;
    for _ in 0..W2_LIVE {
        let size = sizes[(rng.next() % N as u64) as usize];
        let b = h.alloc(size);
        let v = rng.next();
        h.write(b, v);
        blocks.push((b, size, v));
        live += size as u64;
    }
    W2State {
        blocks,
        rng,
        live,
        peak: live,
        steps: 0,
    }
}

/// W2's steps: `k = next() % 4096`, check block k, free it, allocate
/// `sizes[next() % N]`, write `next()`.
#[inline(never)] // a symbol of its own, for profiles; one call per run
pub fn w2_steps<H: Heap, const N: usize>(
    h: &H,
    st: &mut W2State<H::Block>,
    sizes: &[usize; N],
    steps: u64,
) {
    for _ in 0..steps {
        let k = (st.rng.next() % W2_LIVE as u64) as usize;
        let (b, old, want) = st.blocks[k];
        let got = h.read(b);
        if got != want {
            mismatch("W2", st.steps, want, got);
        }
        h.free(b, old);
        let size = sizes[(st.rng.next() % N as u64) as usize];
        let b = h.alloc(size);
        let v = st.rng.next();
        h.write(b, v);
        st.blocks[k] = (b, size, v);
        st.live = st.live - old as u64 + size as u64;
        st.peak = st.peak.max(st.live);
        st.steps += 1;
    }
}

/// Checks and frees every live block (untimed).
pub fn w2_drain<H: Heap>(h: &H, st: W2State<H::Block>) {
    for (i, &(b, size, want)) in st.blocks.iter().enumerate() {
        let got = h.read(b);
        if got != want {
            mismatch("W2 (final check)", i as u64, want, got);
        }
        h.free(b, size);
    }
}

/// One W2 (or W2-4k) run's figures.
pub struct W2Out {
    /// The steps' time.
    pub time: Duration,
    /// shmslab: `stats().file_size` after the steps.
    pub file_bytes: Option<u64>,
    /// Peak live bytes requested.
    pub peak_live: u64,
    /// Findings of `Slab::check` after the steps, when asked.
    pub check: Option<Vec<String>>,
}

/// One W2 run on `a` with `sizes`.
pub fn w2<const N: usize>(a: Alloc, sizes: &[usize; N], steps: u64, check: bool) -> W2Out {
    let label = format!(
        "{}/{}",
        if N == SIZES.len() { "w2" } else { "w2-4k" },
        a.name()
    );
    fn run<H: Heap, const N: usize>(
        h: &H,
        sizes: &[usize; N],
        steps: u64,
        label: &str,
    ) -> (Duration, W2State<H::Block>) {
        let mut st = w2_fill(h, sizes);
        let r0 = mono_ns();
        let t = Instant::now();
        w2_steps(h, &mut st, sizes, steps);
        let d = t.elapsed();
        region(label, r0, mono_ns());
        (d, st)
    }
    /// A run on a heap with no file to measure and no checker.
    fn without_file<H: Heap, const N: usize>(
        h: &H,
        sizes: &[usize; N],
        steps: u64,
        label: &str,
    ) -> W2Out {
        let (time, st) = run(h, sizes, steps, label);
        let peak_live = st.peak;
        w2_drain(h, st);
        W2Out {
            time,
            file_bytes: None,
            peak_live,
            check: None,
        }
    }
    match a {
        Alloc::Shm => {
            let f = ShmFile::new("w2");
            let slab = new_slab(&f);
            let h = ShmHeap(&slab);
            let (time, st) = run(&h, sizes, steps, &label);
            let file_bytes = Some(slab.stats().file_size);
            let check = check.then(|| findings(&slab));
            let peak_live = st.peak;
            w2_drain(&h, st);
            W2Out {
                time,
                file_bytes,
                peak_live,
                check,
            }
        }
        Alloc::Malloc => without_file(&MallocHeap, sizes, steps, &label),
        Alloc::Rts => {
            assert!(sizes.iter().all(|&s| s <= rts_alloc::MAX_ALLOC_SIZE));
            let f = ShmFile::new("w2-rts");
            without_file(&RtsHeap(new_rts(&f, 256 << 20)), sizes, steps, &label)
        }
        Alloc::Ice => {
            // One bucket size: W2-4k's largest request (W2's 16 KiB is not
            // run on it).
            assert!(sizes.iter().all(|&s| s <= ICE_W2_BUCKET));
            let f = ShmFile::new("w2-ice");
            let pool = IcePool::create(&f, ICE_W2_BUCKET, ICE_W2_BUCKETS);
            without_file(&pool.heap(), sizes, steps, &label)
        }
    }
}

/// Results of the correctness checks made on the first repetition.
pub static CHECKS: std::sync::Mutex<Vec<(String, Vec<String>)>> = std::sync::Mutex::new(Vec::new());

/// Records a check's findings for the report.
pub fn note_check(what: &str, found: Vec<String>) {
    if let Ok(mut c) = CHECKS.lock() {
        c.push((what.to_string(), found));
    }
}

/// `Slab::check`'s findings (or its error), as text.
pub fn findings(slab: &Slab) -> Vec<String> {
    match slab.check() {
        Ok(r) => r.findings.iter().map(|f| format!("{f:?}")).collect(),
        Err(e) => vec![format!("check failed: {e}")],
    }
}

// ---------------------------------------------------------------- W3 ----

/// W3's loop: allocate 64 B blocks, write i in each, never free.
#[inline(never)] // a symbol of its own, for profiles; one call per run
pub fn w3_loop<H: Heap>(h: &H, out: &mut [H::Block]) {
    for (i, slot) in out.iter_mut().enumerate() {
        let b = h.alloc(64);
        h.write(b, i as u64);
        *slot = b;
    }
}

/// Checks every W3 block (untimed).
fn w3_verify<H: Heap>(h: &H, blocks: &[H::Block]) {
    for (i, &b) in blocks.iter().enumerate() {
        let got = h.read(b);
        if got != i as u64 {
            mismatch("W3 (final check)", i as u64, i as u64, got);
        }
    }
}

/// One W3 run's figures.
pub struct W3Out {
    /// The loop's time (growth included).
    pub time: Duration,
    /// shmslab: `generation()` at the end.
    pub growths: Option<u64>,
    /// shmslab: `stats().file_size`; rts-alloc: its pre-sized file.
    pub file_bytes: Option<u64>,
    /// shmslab: file bytes beyond the slots' own bytes, per slot of capacity
    /// (metadata word, header, page padding), from `inspect`.
    pub overhead_per_slot: Option<f64>,
    /// Findings of `Slab::check`, when asked.
    pub check: Option<Vec<String>>,
}

/// One W3 run on `a` of `n` blocks. The vector of blocks is allocated and
/// pre-faulted before the timing, so only the allocator's work is timed.
pub fn w3(a: Alloc, n: usize, check: bool) -> W3Out {
    fn run<H: Heap>(h: &H, n: usize, label: &str) -> (Duration, Vec<H::Block>) {
        let mut blocks = vec![H::dummy(); n];
        let r0 = mono_ns();
        let t = Instant::now();
        w3_loop(h, &mut blocks);
        let time = t.elapsed();
        region(label, r0, mono_ns());
        w3_verify(h, &blocks);
        (time, blocks)
    }
    match a {
        Alloc::Shm => {
            let f = ShmFile::new("w3");
            let slab = new_slab(&f);
            let (time, _blocks) = run(&ShmHeap(&slab), n, "w3/shmslab");
            let st = slab.stats();
            let overhead_per_slot = shmslab::inspect(f.path()).ok().map(|s| {
                let slots: u64 = st.classes.iter().map(|c| c.slots).sum();
                let slot_bytes: u64 = st.classes.iter().map(|c| c.slots * c.slot_size).sum();
                (s.current_size - s.data_start - slot_bytes) as f64 / slots.max(1) as f64
            });
            W3Out {
                time,
                growths: Some(slab.generation()),
                file_bytes: Some(st.file_size),
                overhead_per_slot,
                check: check.then(|| findings(&slab)),
            }
        }
        Alloc::Malloc => {
            let (time, blocks) = run(&MallocHeap, n, "w3/malloc");
            for b in blocks {
                MallocHeap.free(b, 64);
            }
            W3Out {
                time,
                growths: None,
                file_bytes: None,
                overhead_per_slot: None,
                check: None,
            }
        }
        Alloc::Rts => {
            // No growth: the file is pre-sized for n blocks of its smallest
            // class (256 B), plus room for its metadata.
            let f = ShmFile::new("w3-rts");
            let bytes = n * RTS_MIN_CLASS + (64 << 20);
            let h = RtsHeap(new_rts(&f, bytes));
            let (time, _blocks) = run(&h, n, "w3/rts-alloc");
            let file_bytes = std::fs::metadata(f.path()).map(|m| m.len()).ok();
            W3Out {
                time,
                growths: None,
                file_bytes,
                overhead_per_slot: None,
                check: None,
            }
        }
        Alloc::Ice => {
            // No growth: one bucket of 64 B per block, pre-sized.
            let f = ShmFile::new("w3-ice");
            let pool = IcePool::create(&f, ICE_BUCKET, n);
            let (time, _blocks) = run(&pool.heap(), n, "w3/iceoryx2");
            W3Out {
                time,
                growths: None,
                file_bytes: Some(pool.file_bytes()),
                overhead_per_slot: None,
                check: None,
            }
        }
    }
}

// ------------------------------------------------------------- W4, W5 ---

/// Two workers' times: each one's (start, end) in nanoseconds of one clock.
pub struct TwoWorkers {
    /// (start, end) per worker.
    pub spans: [(u64, u64); 2],
    /// Pairs per worker.
    pub pairs: u64,
}

impl TwoWorkers {
    /// Pairs per second of both together: 2·pairs over the union of spans.
    pub fn aggregate_per_s(&self) -> f64 {
        let start = self.spans[0].0.min(self.spans[1].0);
        let end = self.spans[0].1.max(self.spans[1].1);
        2.0 * self.pairs as f64 / ((end - start) as f64 / 1e9)
    }
    /// Each worker's ns per pair, averaged over the two.
    pub fn ns_per_pair_per_worker(&self) -> f64 {
        let sum: u64 = self.spans.iter().map(|(s, e)| e - s).sum();
        sum as f64 / 2.0 / self.pairs as f64
    }
}

/// With `SHMSLAB_BENCH_REGIONS=<file>`, appends `label start end pid` (on
/// CLOCK_MONOTONIC, the clock `perf record -k CLOCK_MONOTONIC` stamps
/// samples with) to the file, so a profile can keep only the samples taken
/// inside timed regions (benches/profile.sh). Called outside the timing.
pub fn region(label: &str, t0: u64, t1: u64) {
    if let Some(p) = std::env::var_os("SHMSLAB_BENCH_REGIONS") {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p);
        if let Ok(mut f) = f {
            // One write per line: two processes append to the same file.
            let line = format!("{label} {t0} {t1} {}\n", std::process::id());
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for all processes.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs W1's loop on two threads, one heap each, released by a barrier.
pub fn two_threads<H: Heap + Send>(heaps: [H; 2], pairs: u64, label: &str) -> TwoWorkers {
    let barrier = Barrier::new(2);
    let spans = std::thread::scope(|s| {
        let workers = heaps.map(|h| {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                let t0 = mono_ns();
                w1_loop(&h, pairs);
                let t1 = mono_ns();
                region(label, t0, t1);
                (t0, t1)
            })
        });
        workers.map(|w| w.join().expect("W4 worker panicked"))
    });
    TwoWorkers { spans, pairs }
}

/// One W4 run: two threads each run W1, sharing one `Slab` by reference
/// (rts-alloc: one worker `Allocator` per thread on one mapping; iceoryx2:
/// one pool on one mapping; malloc: the process heap).
pub fn w4(a: Alloc, pairs: u64, check: bool) -> TwoWorkers {
    match a {
        Alloc::Shm => {
            let f = ShmFile::new("w4");
            let slab = new_slab(&f);
            let tw = two_threads([ShmHeap(&slab), ShmHeap(&slab)], pairs, "w4/shmslab");
            if check {
                note_check("W4 shmslab check after both threads", findings(&slab));
            }
            tw
        }
        Alloc::Malloc => two_threads([MallocHeap, MallocHeap], pairs, "w4/malloc"),
        Alloc::Rts => {
            let f = ShmFile::new("w4-rts");
            let first = new_rts(&f, 64 << 20);
            let heaps = [
                RtsHeap(join_rts_existing(&first)),
                RtsHeap(join_rts_existing(&first)),
            ];
            two_threads(heaps, pairs, "w4/rts-alloc")
        }
        Alloc::Ice => {
            let f = ShmFile::new("w4-ice");
            let pool = IcePool::create(&f, ICE_BUCKET, ICE_BUCKETS);
            two_threads([pool.heap(), pool.heap()], pairs, "w4/iceoryx2")
        }
    }
}

/// The environment variable that makes the bench binary a W5 child.
pub const CHILD_ENV: &str = "SHMSLAB_BENCH_W5_CHILD";

/// One W5 run: two processes (this binary, run again) each run W1 on one
/// file (malloc: each on its own heap), released together through their
/// stdin; each reports its start and end on CLOCK_MONOTONIC.
pub fn w5(a: Alloc, pairs: u64, check: bool) -> TwoWorkers {
    let f = ShmFile::new("w5");
    match a {
        Alloc::Shm => {
            let mut slab = new_slab(&f);
            slab.keep_file();
            drop(slab); // the children are the only peers
        }
        Alloc::Malloc => {}
        Alloc::Rts => drop(new_rts(&f, 64 << 20)),
        // The pool (allocator state and buckets) is in the file: each child
        // maps it and allocates from the one pool.
        Alloc::Ice => drop(IcePool::create(&f, ICE_BUCKET, ICE_BUCKETS)),
    }
    let exe = std::env::current_exe().expect("current_exe");
    let spec = format!("{} {} {}", a.name(), pairs, f.path().display());
    let mut children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .env(CHILD_ENV, &spec)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn W5 child")
        })
        .collect();
    let mut outs: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().expect("child stdout")))
        .collect();
    for o in &mut outs {
        let mut line = String::new();
        o.read_line(&mut line).expect("read child");
        assert_eq!(line.trim(), "ready", "W5 child did not get ready");
    }
    // Release both: one byte each, back to back.
    let mut stdins: Vec<_> = children
        .iter_mut()
        .map(|c| c.stdin.take().expect("child stdin"))
        .collect();
    for s in &mut stdins {
        s.write_all(b"g").expect("release child");
    }
    let mut spans = [(0, 0); 2];
    for (o, span) in outs.iter_mut().zip(spans.iter_mut()) {
        let mut line = String::new();
        o.read_line(&mut line).expect("read child");
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().expect("child time"))
            .collect();
        assert!(
            line.starts_with("done") && v.len() == 2,
            "W5 child said {line:?}"
        );
        *span = (v[0], v[1]);
    }
    drop(stdins);
    for mut c in children {
        let st = c.wait().expect("wait child");
        assert!(st.success(), "W5 child failed: {st}");
    }
    if check && a == Alloc::Shm {
        // Both peers detached: every slot must be free again.
        let slab = Slab::attach(f.path()).expect("attach after W5");
        let mut found = findings(&slab);
        let in_use: u64 = slab.stats().classes.iter().map(|c| c.in_use).sum();
        if in_use != 0 {
            found.push(format!(
                "{in_use} slots still in use after both processes detached"
            ));
        }
        note_check("W5 shmslab check after both processes detached", found);
    }
    if check && a == Alloc::Ice {
        note_check(
            "W5 iceoryx2 check after both processes exited (every bucket free again)",
            IcePool::open(f.path()).check_all_free(),
        );
    }
    TwoWorkers { spans, pairs }
}

/// A W5 child: attach, say "ready", wait for one byte on stdin, run W1,
/// print "done <start> <end>", then detach.
pub fn child_main(spec: &str) {
    let mut it = spec.splitn(3, ' ');
    let a = Alloc::parse(it.next().expect("spec"));
    let pairs: u64 = it.next().and_then(|s| s.parse().ok()).expect("spec pairs");
    let path = std::path::PathBuf::from(it.next().expect("spec path"));
    let go = || {
        println!("ready");
        std::io::stdout().flush().expect("flush");
        let mut b = [0u8; 1];
        std::io::stdin()
            .read_exact(&mut b)
            .expect("wait for release");
    };
    let (t0, t1) = match a {
        Alloc::Shm => {
            let slab = Slab::attach(&path).expect("W5 child: attach");
            go();
            let t0 = mono_ns();
            w1_loop(&ShmHeap(&slab), pairs);
            (t0, mono_ns())
        }
        Alloc::Malloc => {
            go();
            let t0 = mono_ns();
            w1_loop(&MallocHeap, pairs);
            (t0, mono_ns())
        }
        Alloc::Rts => {
            let h = RtsHeap(join_rts(&path));
            go();
            let t0 = mono_ns();
            w1_loop(&h, pairs);
            (t0, mono_ns())
        }
        Alloc::Ice => {
            let pool = IcePool::open(&path);
            let h = pool.heap();
            go();
            let t0 = mono_ns();
            w1_loop(&h, pairs);
            (t0, mono_ns())
        }
    };
    region(&format!("w5/{}", a.name()), t0, t1);
    println!("done {t0} {t1}");
    std::io::stdout().flush().expect("flush");
}

// ------------------------------------------------------------ attach ----

/// A built segment to attach to, removed when dropped.
pub struct AttachTarget {
    file: ShmFile,
    /// Extents in all classes.
    pub extents: u64,
    /// `current_size`.
    pub bytes: u64,
    /// Slots allocated to build it.
    pub slots: u64,
}

/// Builds a shmslab segment of at least `bytes` (`current_size`) with a mix
/// of classes (W2's sizes drawn from the PRNG), then detaches.
pub fn build_attach_target(bytes: u64) -> AttachTarget {
    let file = ShmFile::new("attach");
    let mut slab = new_slab(&file);
    let mut rng = Rng::new();
    let mut generation = slab.generation();
    let mut slots = 0u64;
    let mut current = slab.stats().current_size;
    let mut keep: Vec<SlotRef> = Vec::new();
    while current < bytes {
        let size = SIZES[(rng.next() % SIZES.len() as u64) as usize];
        keep.push(slab.alloc_bytes(size).expect("attach build: alloc").raw());
        slots += 1;
        if slab.generation() != generation {
            generation = slab.generation();
            current = slab.stats().current_size;
        }
    }
    let st = slab.stats();
    slab.keep_file();
    drop(slab);
    AttachTarget {
        file,
        extents: st.total_extents(),
        bytes: st.current_size,
        slots,
    }
}

/// Attach timings: mean attach and mean drop over `iters`.
pub struct AttachOut {
    /// Mean `Slab::attach` (rts-alloc: open + `Allocator::join`).
    pub attach: Duration,
    /// Mean drop of that attachment.
    pub drop: Duration,
}

/// `iters` × (attach, drop) on shmslab, timed separately.
#[inline(never)] // a symbol of its own, for profiles
pub fn attach_shm(t: &AttachTarget, iters: u32) -> AttachOut {
    time_attach("attach/shmslab", iters, || {
        Slab::attach(t.file.path()).expect("attach")
    })
}

/// `iters` × (`attach()`, drop of what it returned), each timed on its own.
#[inline(always)]
fn time_attach<T>(label: &str, iters: u32, mut attach: impl FnMut() -> T) -> AttachOut {
    let r0 = mono_ns();
    let (mut at, mut dr) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..iters {
        let t0 = Instant::now();
        let attached = attach();
        let t1 = Instant::now();
        drop(attached);
        let t2 = Instant::now();
        at += t1 - t0;
        dr += t2 - t1;
    }
    region(label, r0, mono_ns());
    AttachOut {
        attach: at / iters,
        drop: dr / iters,
    }
}

/// An rts-alloc file of `bytes` to join.
pub struct RtsTarget {
    file: ShmFile,
}

/// Makes an rts-alloc file of `bytes` (it has no growth, hence no extents).
pub fn build_rts_target(bytes: u64) -> RtsTarget {
    let file = ShmFile::new("attach-rts");
    drop(new_rts(&file, bytes as usize));
    RtsTarget { file }
}

/// `iters` × (open + join, drop) on rts-alloc.
#[inline(never)] // a symbol of its own, for profiles
pub fn attach_rts(t: &RtsTarget, iters: u32) -> AttachOut {
    time_attach("attach/rts-alloc", iters, || {
        let f = open_rw(t.file.path(), false);
        let a = rts_alloc::Allocator::join(&f).expect("rts join");
        (a, f) // dropped in this order: the allocator, then the file
    })
}
