//! shmslab's benchmark suite: workloads W1–W5 and attach, on shmslab,
//! `std::alloc` (malloc), rts-alloc and iceoryx2's `PoolAllocator`, in one
//! run.
//!
//! `cargo bench` first runs criterion micro-benchmarks (W1, W2, W2-4k, W4 and
//! attach, through `iter_custom`), then repeats every full workload
//! (W1–W5, attach) several times and prints a Markdown table: median and
//! min..max per allocator, and the per-repetition ratios. iceoryx2 runs W1,
//! W2-4k, W3 (pre-sized), W4 and W5. See
//! docs/BENCHMARKS.md for the workloads' definitions and the knobs:
//!
//! - `cargo bench -- <filter>`: only the workloads whose `workload/allocator`
//!   name contains the filter (e.g. `w1`, `w4/shmslab`, `iceoryx2`, `attach`).
//! - `SHMSLAB_BENCH_QUICK=1`: a tenth of the counts and 3 repetitions (the
//!   numbers are then NOT comparable with other projects').
//! - `SHMSLAB_BENCH_REPS=N`: repetitions of each full workload (default 11).
//! - `SHMSLAB_BENCH_CRITERION=0` / `SHMSLAB_BENCH_TABLE=0`: skip one part.
//! - `SHMSLAB_BENCH_RTS_SLAB=BYTES`: rts-alloc's slab size (default 64 KiB).
//!
//! Then the cooperation workloads (`coop-*`, in `coop.rs`): shared atomics,
//! locked values and notifiers beside their baselines (a `MAP_SHARED`
//! `AtomicU64`, `parking_lot` and robust pthread mutexes, a raw futex and a
//! pipe), in criterion groups and in a table of their own;
//! `cargo bench -- coop` runs only those.
//!
//! Run without `--bench` (as `cargo test --benches` does) it is a smoke
//! test: every workload once with tiny counts, no criterion, no timing claims.

mod coop;
mod heaps;
mod report;
mod runs;

use criterion::{Criterion, Throughput};
use heaps::{IcePool, MallocHeap, RtsHeap, ShmFile, ShmHeap, join_rts_existing, new_rts, new_slab};
use report::{Table, Unit};
use runs::{Alloc, ICE_BUCKET, ICE_BUCKETS, ICE_W2_BUCKET, ICE_W2_BUCKETS, SIZES, SIZES_4K};
use std::time::{Duration, Instant};

/// How much of everything to run.
#[derive(Clone, Copy)]
struct Counts {
    w1_pairs: u64,
    w2_steps: u64,
    w3_blocks: usize,
    w45_pairs: u64,
    attach_bytes: u64,
    attach_iters: u32,
    reps: usize,
}

const FULL: Counts = Counts {
    w1_pairs: 1_000_000,
    w2_steps: 1_000_000,
    w3_blocks: 4_000_000,
    w45_pairs: 1_000_000,
    attach_bytes: 1 << 30,
    attach_iters: 200,
    reps: 11,
};

const QUICK: Counts = Counts {
    w1_pairs: 100_000,
    w2_steps: 100_000,
    w3_blocks: 400_000,
    w45_pairs: 100_000,
    attach_bytes: 256 << 20,
    attach_iters: 50,
    reps: 3,
};

const SMOKE: Counts = Counts {
    w1_pairs: 10_000,
    w2_steps: 10_000,
    w3_blocks: 40_000,
    w45_pairs: 10_000,
    attach_bytes: 16 << 20,
    attach_iters: 5,
    reps: 1,
};

struct Options {
    bench: bool,
    quick: bool,
    counts: Counts,
    filter: Option<String>,
    criterion: bool,
    table: bool,
}

fn env_flag(name: &str) -> Option<bool> {
    std::env::var(name)
        .ok()
        .map(|v| !(v.is_empty() || v == "0"))
}

impl Options {
    fn get() -> Options {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let bench = args.iter().any(|a| a == "--bench");
        // criterion's options that take a value: skip the value when looking
        // for the positional filter.
        const WITH_VALUE: [&str; 14] = [
            "--color",
            "--save-baseline",
            "--baseline",
            "--baseline-lenient",
            "--load-baseline",
            "--format",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--profile-time",
        ];
        let mut filter = None;
        let mut skip = false;
        for a in &args {
            if skip {
                skip = false;
            } else if WITH_VALUE.contains(&a.as_str()) {
                skip = true;
            } else if !a.starts_with('-') && filter.is_none() {
                filter = Some(a.clone());
            }
        }
        let quick = env_flag("SHMSLAB_BENCH_QUICK").unwrap_or(false);
        let mut counts = if !bench {
            SMOKE
        } else if quick {
            QUICK
        } else {
            FULL
        };
        if let Some(r) = std::env::var("SHMSLAB_BENCH_REPS")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            counts.reps = r;
        }
        Options {
            bench,
            quick,
            counts,
            filter,
            criterion: bench && env_flag("SHMSLAB_BENCH_CRITERION").unwrap_or(true),
            table: env_flag("SHMSLAB_BENCH_TABLE").unwrap_or(true),
        }
    }

    /// Whether `workload/allocator` is selected by the filter.
    fn sel(&self, workload: &str, a: Alloc) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| format!("{workload}/{}", a.name()).contains(f.as_str()))
    }

    fn any(&self, workload: &str) -> bool {
        Alloc::ALL.iter().any(|&a| self.sel(workload, a))
    }

    /// Whether a coop `group/variant` name is selected by the filter.
    fn sel_name(&self, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| name.contains(f.as_str()))
    }

    /// Whether any of the allocator workloads (W1–W5, attach) is selected.
    fn any_alloc(&self) -> bool {
        ["w1", "w2", "w2-4k", "w3", "w4", "w5", "attach"]
            .iter()
            .any(|w| self.any(w))
    }
}

const RTS_W2: &str = "rts-alloc's largest class is 4096 B; W2 allocates 16384-byte blocks";
const RTS_GROWTH: &str = "rts-alloc's file has a fixed size: it cannot grow (no growth count)";
const RTS_PRESIZED: &str = "rts-alloc cannot grow: W3 runs on a file pre-sized for all the blocks at 256 B each (its smallest class): no growth, pre-sized";
const MALLOC_FILE: &str = "malloc has no file";
const MALLOC_ATTACH: &str = "malloc has nothing to attach to";
const ICE_W2: &str = "iceoryx2's PoolAllocator has one bucket size and runs W2-4k (4096-byte buckets) instead: W2's 16384-byte blocks are not run on it";
const ICE_GROWTH: &str =
    "iceoryx2's PoolAllocator has a fixed number of buckets: it cannot grow (no growth count)";
const ICE_PRESIZED: &str = "iceoryx2's PoolAllocator cannot grow: W3 runs on a pool pre-sized for all the blocks, one 64-byte bucket each: no growth, pre-sized";
const ICE_ATTACH: &str = "attach is not measured for iceoryx2 (its target is against rts-alloc)";

/// The footnote of iceoryx2's W1 and W4 cells.
fn ice_64() -> String {
    format!(
        "iceoryx2: one PoolAllocator of {ICE_BUCKETS} buckets of {ICE_BUCKET} B in a MAP_SHARED /dev/shm file"
    )
}

/// The footnote of iceoryx2's W5 cells.
fn ice_w5() -> String {
    format!(
        "{}; W5: the parent makes the file, then each child process maps it and allocates from the one pool in it (its index set and buckets are both in the file)",
        ice_64()
    )
}

/// The footnote of iceoryx2's W2-4k cell.
fn ice_4k() -> String {
    format!(
        "iceoryx2: one PoolAllocator of {ICE_W2_BUCKETS} buckets of {ICE_W2_BUCKET} B: every request (64 B to 4 KiB) takes a whole bucket"
    )
}

fn main() {
    if let Ok(spec) = std::env::var(runs::CHILD_ENV) {
        runs::child_main(&spec);
        return;
    }
    if let Ok(spec) = std::env::var(coop::CHILD_ENV) {
        coop::child_main(&spec);
        return;
    }
    remove_stale_segments();
    let opts = Options::get();
    let attach = (opts.any("attach") && (opts.table || opts.criterion)).then(|| {
        let t = Instant::now();
        let shm = opts
            .sel("attach", Alloc::Shm)
            .then(|| runs::build_attach_target(opts.counts.attach_bytes));
        let rts = opts
            .sel("attach", Alloc::Rts)
            .then(|| runs::build_rts_target(opts.counts.attach_bytes));
        eprintln!("attach targets built in {:.1?}", t.elapsed());
        (shm, rts)
    });
    if opts.criterion {
        let (shm, rts) = match &attach {
            Some((s, r)) => (s.as_ref(), r.as_ref()),
            None => (None, None),
        };
        criterion_part(&opts, shm, rts);
    }
    if opts.table && opts.any_alloc() {
        let (shm, rts) = match &attach {
            Some((s, r)) => (s.as_ref(), r.as_ref()),
            None => (None, None),
        };
        table_part(&opts, shm, rts);
    }
    if opts.table {
        let (counts, reps, mode) = if !opts.bench {
            (
                coop::SMOKE,
                1,
                "SMOKE TEST (run without --bench): tiny counts, one repetition; the numbers mean nothing.",
            )
        } else if opts.quick {
            (
                coop::QUICK,
                opts.counts.reps,
                "QUICK MODE (SHMSLAB_BENCH_QUICK=1): a tenth of the counts.",
            )
        } else {
            (coop::FULL, opts.counts.reps, "")
        };
        coop::table_part(counts, reps, mode, &|n| opts.sel_name(n));
    }
}

/// Removes /dev/shm/shmslab-bench-<pid>-* files left by dead runs.
fn remove_stale_segments() {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("shmslab-bench-") else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

// ---------------------------------------------------------- criterion ---

fn criterion_part(
    opts: &Options,
    shm_target: Option<&runs::AttachTarget>,
    rts_target: Option<&runs::RtsTarget>,
) {
    let (warm, measure) = if opts.quick {
        (Duration::from_millis(200), Duration::from_millis(500))
    } else {
        (Duration::from_millis(500), Duration::from_millis(1500))
    };
    let mut c = Criterion::default()
        .warm_up_time(warm)
        .measurement_time(measure)
        .sample_size(20)
        .configure_from_args();

    // W1: time per pair.
    {
        let mut g = c.benchmark_group("w1");
        g.throughput(Throughput::Elements(1));
        if opts.sel("w1", Alloc::Shm) {
            let f = ShmFile::new("crit-w1");
            let slab = new_slab(&f);
            let h = ShmHeap(&slab);
            g.bench_function("shmslab", |b| {
                b.iter_custom(|n| timed(|| runs::w1_loop(&h, n)))
            });
        }
        if opts.sel("w1", Alloc::Malloc) {
            g.bench_function("malloc", |b| {
                b.iter_custom(|n| timed(|| runs::w1_loop(&MallocHeap, n)))
            });
        }
        if opts.sel("w1", Alloc::Rts) {
            let f = ShmFile::new("crit-w1-rts");
            let h = RtsHeap(new_rts(&f, 64 << 20));
            g.bench_function("rts-alloc", |b| {
                b.iter_custom(|n| timed(|| runs::w1_loop(&h, n)))
            });
        }
        if opts.sel("w1", Alloc::Ice) {
            let f = ShmFile::new("crit-w1-ice");
            let pool = IcePool::create(&f, ICE_BUCKET, ICE_BUCKETS);
            let h = pool.heap();
            g.bench_function("iceoryx2", |b| {
                b.iter_custom(|n| timed(|| runs::w1_loop(&h, n)))
            });
        }
        g.finish();
    }

    // W2 and W2-4k: time per step, in steady state (filled once).
    for (name, four_k) in [("w2", false), ("w2-4k", true)] {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        macro_rules! w2_bench {
            ($id:expr, $h:expr) => {{
                let h = $h;
                if four_k {
                    let mut st = runs::w2_fill(&h, &SIZES_4K);
                    g.bench_function($id, |b| {
                        b.iter_custom(|n| timed(|| runs::w2_steps(&h, &mut st, &SIZES_4K, n)))
                    });
                    runs::w2_drain(&h, st);
                } else {
                    let mut st = runs::w2_fill(&h, &SIZES);
                    g.bench_function($id, |b| {
                        b.iter_custom(|n| timed(|| runs::w2_steps(&h, &mut st, &SIZES, n)))
                    });
                    runs::w2_drain(&h, st);
                }
            }};
        }
        if opts.sel(name, Alloc::Shm) {
            let f = ShmFile::new("crit-w2");
            let slab = new_slab(&f);
            w2_bench!("shmslab", ShmHeap(&slab));
        }
        if opts.sel(name, Alloc::Malloc) {
            w2_bench!("malloc", MallocHeap);
        }
        if four_k && opts.sel(name, Alloc::Rts) {
            let f = ShmFile::new("crit-w2-rts");
            w2_bench!("rts-alloc", RtsHeap(new_rts(&f, 256 << 20)));
        }
        if four_k && opts.sel(name, Alloc::Ice) {
            let f = ShmFile::new("crit-w2-ice");
            let pool = IcePool::create(&f, ICE_W2_BUCKET, ICE_W2_BUCKETS);
            w2_bench!("iceoryx2", pool.heap());
        }
        g.finish();
    }

    // W4: two threads, each doing n pairs; time = the span of both.
    {
        let mut g = c.benchmark_group("w4");
        g.throughput(Throughput::Elements(2));
        let span = |tw: runs::TwoWorkers| {
            let start = tw.spans[0].0.min(tw.spans[1].0);
            let end = tw.spans[0].1.max(tw.spans[1].1);
            Duration::from_nanos(end - start)
        };
        if opts.sel("w4", Alloc::Shm) {
            let f = ShmFile::new("crit-w4");
            let slab = new_slab(&f);
            g.bench_function("shmslab", |b| {
                b.iter_custom(|n| {
                    span(runs::two_threads(
                        [ShmHeap(&slab), ShmHeap(&slab)],
                        n,
                        "crit-w4",
                    ))
                })
            });
        }
        if opts.sel("w4", Alloc::Malloc) {
            g.bench_function("malloc", |b| {
                b.iter_custom(|n| span(runs::two_threads([MallocHeap, MallocHeap], n, "crit-w4")))
            });
        }
        if opts.sel("w4", Alloc::Rts) {
            let f = ShmFile::new("crit-w4-rts");
            let first = new_rts(&f, 64 << 20);
            g.bench_function("rts-alloc", |b| {
                b.iter_custom(|n| {
                    let heaps = [
                        RtsHeap(join_rts_existing(&first)),
                        RtsHeap(join_rts_existing(&first)),
                    ];
                    span(runs::two_threads(heaps, n, "crit-w4"))
                })
            });
        }
        if opts.sel("w4", Alloc::Ice) {
            let f = ShmFile::new("crit-w4-ice");
            let pool = IcePool::create(&f, ICE_BUCKET, ICE_BUCKETS);
            g.bench_function("iceoryx2", |b| {
                b.iter_custom(|n| span(runs::two_threads([pool.heap(), pool.heap()], n, "crit-w4")))
            });
        }
        g.finish();
    }

    // Attach: attach + drop.
    {
        let mut g = c.benchmark_group("attach");
        if let Some(t) = shm_target {
            g.bench_function("shmslab", |b| {
                b.iter_custom(|n| {
                    let o = runs::attach_shm(t, n as u32);
                    (o.attach + o.drop) * n as u32
                })
            });
        }
        if let Some(t) = rts_target {
            g.bench_function("rts-alloc", |b| {
                b.iter_custom(|n| {
                    let o = runs::attach_rts(t, n as u32);
                    (o.attach + o.drop) * n as u32
                })
            });
        }
        g.finish();
    }
    coop::criterion_part(&mut c, &|n| opts.sel_name(n));
    c.final_summary();
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

// -------------------------------------------------------------- table ---

fn table_part(
    opts: &Options,
    shm_target: Option<&runs::AttachTarget>,
    rts_target: Option<&runs::RtsTarget>,
) {
    let c = opts.counts;
    // Read now: the tree may change while the workloads run.
    let commit = commit();
    let load_start = loadavg();
    let started = Instant::now();
    let mut t = Table::default();
    let mut checks: Vec<String> = Vec::new();
    let mut overhead: Vec<f64> = Vec::new();
    let mut peak_live = 0u64;
    eprintln!(
        "table: {} repetitions of each workload{}",
        c.reps,
        if opts.quick { " (QUICK counts)" } else { "" }
    );
    for rep in 0..c.reps {
        let first = rep == 0;
        eprint!("  repetition {}/{}:", rep + 1, c.reps);
        for a in Alloc::ALL {
            if opts.sel("w1", a) {
                let d = runs::w1(a, c.w1_pairs, first);
                t.add("W1 per pair", Unit::Ns, true, a, ns(d) / c.w1_pairs as f64);
                if a == Alloc::Ice {
                    t.mark("W1 per pair", Unit::Ns, true, a, &ice_64());
                }
            }
        }
        eprint!(" w1");
        for a in Alloc::ALL {
            if !opts.sel("w2", a) {
                continue;
            }
            if a == Alloc::Rts {
                t.na("W2 per step", Unit::Ns, true, a, RTS_W2);
                t.na("W2 file bytes at end", Unit::Bytes, true, a, RTS_W2);
                t.na("W2 peak live bytes requested", Unit::Bytes, true, a, RTS_W2);
                continue;
            }
            if a == Alloc::Ice {
                t.na("W2 per step", Unit::Ns, true, a, ICE_W2);
                t.na("W2 file bytes at end", Unit::Bytes, true, a, ICE_W2);
                t.na("W2 peak live bytes requested", Unit::Bytes, true, a, ICE_W2);
                continue;
            }
            let o = runs::w2(a, &SIZES, c.w2_steps, first);
            t.add(
                "W2 per step",
                Unit::Ns,
                true,
                a,
                ns(o.time) / c.w2_steps as f64,
            );
            match o.file_bytes {
                Some(b) => t.add("W2 file bytes at end", Unit::Bytes, true, a, b as f64),
                None => t.na("W2 file bytes at end", Unit::Bytes, true, a, MALLOC_FILE),
            }
            peak_live = o.peak_live;
            t.add(
                "W2 peak live bytes requested",
                Unit::Bytes,
                true,
                a,
                o.peak_live as f64,
            );
            if let Some(f) = o.check {
                checks.push(format!("W2 shmslab check after the steps: {}", show(&f)));
            }
        }
        for a in Alloc::ALL {
            if opts.sel("w2-4k", a) {
                let o = runs::w2(a, &SIZES_4K, c.w2_steps, false);
                t.add(
                    "W2-4k per step (supplementary)",
                    Unit::Ns,
                    true,
                    a,
                    ns(o.time) / c.w2_steps as f64,
                );
                if a == Alloc::Ice {
                    t.mark(
                        "W2-4k per step (supplementary)",
                        Unit::Ns,
                        true,
                        a,
                        &ice_4k(),
                    );
                }
            }
        }
        eprint!(" w2");
        for a in Alloc::ALL {
            if !opts.sel("w3", a) {
                continue;
            }
            let o = runs::w3(a, c.w3_blocks, first);
            t.add(
                "W3 per allocation",
                Unit::Ns,
                true,
                a,
                ns(o.time) / c.w3_blocks as f64,
            );
            match o.growths {
                Some(g) => t.add("W3 growths", Unit::Count, true, a, g as f64),
                None if a == Alloc::Rts => t.na("W3 growths", Unit::Count, true, a, RTS_GROWTH),
                None if a == Alloc::Ice => t.na("W3 growths", Unit::Count, true, a, ICE_GROWTH),
                None => t.na("W3 growths", Unit::Count, true, a, MALLOC_FILE),
            }
            match o.file_bytes {
                Some(b) => t.add("W3 file bytes at end", Unit::Bytes, true, a, b as f64),
                None => t.na("W3 file bytes at end", Unit::Bytes, true, a, MALLOC_FILE),
            }
            let presized = match a {
                Alloc::Rts => Some(RTS_PRESIZED),
                Alloc::Ice => Some(ICE_PRESIZED),
                _ => None,
            };
            if let Some(note) = presized {
                for (label, unit) in [
                    ("W3 per allocation", Unit::Ns),
                    ("W3 file bytes at end", Unit::Bytes),
                ] {
                    t.mark(label, unit, true, a, note);
                }
            }
            if let Some(x) = o.overhead_per_slot {
                overhead.push(x);
            }
            if let Some(f) = o.check {
                checks.push(format!("W3 shmslab check at the end: {}", show(&f)));
            }
        }
        eprint!(" w3");
        // W4 and W5 report the same two rows: two workers, pairs per second.
        type TwoWorkerRun = fn(Alloc, u64, bool) -> runs::TwoWorkers;
        let two_worker_runs: [(&str, TwoWorkerRun); 2] = [("W4", runs::w4), ("W5", runs::w5)];
        for (name, run) in two_worker_runs {
            let key = name.to_lowercase();
            for a in Alloc::ALL {
                if opts.sel(&key, a) {
                    let o = run(a, c.w45_pairs, first);
                    t.add(
                        &format!("{name} aggregate pairs/s"),
                        Unit::MPerS,
                        false,
                        a,
                        o.aggregate_per_s(),
                    );
                    t.add(
                        &format!("{name} per pair per worker"),
                        Unit::Ns,
                        true,
                        a,
                        o.ns_per_pair_per_worker(),
                    );
                    if a == Alloc::Ice {
                        let note = if name == "W5" { ice_w5() } else { ice_64() };
                        t.mark(
                            &format!("{name} aggregate pairs/s"),
                            Unit::MPerS,
                            false,
                            a,
                            &note,
                        );
                        t.mark(
                            &format!("{name} per pair per worker"),
                            Unit::Ns,
                            true,
                            a,
                            &note,
                        );
                    }
                }
            }
            eprint!(" {key}");
        }
        if let Some(tg) = shm_target {
            let o = runs::attach_shm(tg, c.attach_iters);
            t.add("attach", Unit::Us, true, Alloc::Shm, us(o.attach));
            t.add(
                "attach + drop",
                Unit::Us,
                true,
                Alloc::Shm,
                us(o.attach + o.drop),
            );
        }
        if let Some(tg) = rts_target {
            let o = runs::attach_rts(tg, c.attach_iters);
            t.add("attach", Unit::Us, true, Alloc::Rts, us(o.attach));
            t.add(
                "attach + drop",
                Unit::Us,
                true,
                Alloc::Rts,
                us(o.attach + o.drop),
            );
        }
        if opts.sel("attach", Alloc::Malloc) {
            t.na("attach", Unit::Us, true, Alloc::Malloc, MALLOC_ATTACH);
            t.na(
                "attach + drop",
                Unit::Us,
                true,
                Alloc::Malloc,
                MALLOC_ATTACH,
            );
        }
        if opts.sel("attach", Alloc::Ice) {
            t.na("attach", Unit::Us, true, Alloc::Ice, ICE_ATTACH);
            t.na("attach + drop", Unit::Us, true, Alloc::Ice, ICE_ATTACH);
        }
        eprintln!(" attach");
    }
    let elapsed = started.elapsed();
    let run = RunInfo {
        commit,
        load_start,
        elapsed,
    };
    print_report(opts, &t, &checks, &overhead, peak_live, shm_target, run);
}

/// When and where the table was measured.
struct RunInfo {
    commit: String,
    load_start: String,
    elapsed: Duration,
}

/// "- name: value — met/NOT met", when there is a value.
fn target(out: &mut Vec<String>, name: &str, v: Option<f64>, ok: bool, shown: String) {
    if v.is_some() {
        out.push(format!(
            "- {name}: {shown} — {}",
            if ok { "met" } else { "NOT met" }
        ));
    }
}

fn x(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.2}×"))
}

fn print_report(
    opts: &Options,
    t: &Table,
    checks: &[String],
    overhead: &[f64],
    peak_live: u64,
    shm_target: Option<&runs::AttachTarget>,
    run: RunInfo,
) {
    let RunInfo {
        commit,
        load_start,
        elapsed,
    } = run;
    let c = opts.counts;
    let mut out: Vec<String> = vec![
        String::new(),
        "## shmslab benchmark summary".into(),
        String::new(),
    ];
    if !opts.bench {
        out.push("SMOKE TEST (run without --bench): tiny counts, one repetition; the numbers mean nothing.".into());
    } else if opts.quick {
        out.push("QUICK MODE (SHMSLAB_BENCH_QUICK=1): a tenth of the counts; NOT comparable with other projects.".into());
    }
    out.push(format!("- machine: {}", machine()));
    out.push(format!("- commit (when the table phase started): {commit}"));
    out.push(format!(
        "- load average before / after the table: {load_start} / {}",
        loadavg()
    ));
    out.push(format!(
        "- {} repetitions of each full workload (W1 {} pairs, W2 {} steps, W3 {} blocks, W4/W5 {} pairs per worker, attach {} × per repetition); table phase took {:.1?}",
        c.reps, c.w1_pairs, c.w2_steps, c.w3_blocks, c.w45_pairs, c.attach_iters, elapsed
    ));
    if let Some(f) = &opts.filter {
        out.push(format!("- filter: {f:?}"));
    }
    out.push(String::new());
    let (md, notes) = t.markdown();
    out.extend(md.lines().map(str::to_string));
    out.push(String::new());
    for (i, n) in notes.iter().enumerate() {
        out.push(format!("⁽{}⁾ {n}.  ", i + 1));
    }
    out.push("Cells: median [min..max] over the repetitions. Ratios: shmslab ÷ the other, computed per repetition (the allocators run back to back within a repetition, under the same conditions), median [min..max]; for pairs/s higher is better, so there a ratio > 1 favours shmslab.  ".into());
    out.push("rts-alloc serves 64-byte requests from its smallest class (256 B).  ".into());
    out.push(format!(
        "rts-alloc configuration: rts-alloc {}, slab size {} KiB, {} workers per file.  ",
        locked_version("rts-alloc"),
        heaps::rts_slab_size() >> 10,
        heaps::RTS_WORKERS
    ));
    out.push(format!(
        "iceoryx2 configuration: iceoryx2-cal {} `PoolAllocator` (the allocator of iceoryx2's shared-memory data segments), one bucket size per pool, 8-byte aligned, a fixed number of buckets (it cannot grow, so W3 runs pre-sized): {ICE_BUCKET}-B buckets for W1, W4 and W5 ({ICE_BUCKETS} buckets) and for W3 (one per block, pre-sized), {ICE_W2_BUCKET}-B buckets for W2-4k ({ICE_W2_BUCKETS} buckets); not run on W2 or attach. Its state (a lock-free index set) and its buckets are in one /dev/shm file mapped MAP_SHARED, laid out as iceoryx2 lays out a data segment: W4's two threads use one mapping, W5's two processes each map the file and allocate from the one pool in it, turning its offsets into pointers into their own mapping, as iceoryx2's processes do.",
        locked_version("iceoryx2-cal")
    ));
    out.push(String::new());

    out.push("### Against the targets (median [min..max] of the per-repetition ratios)".into());
    out.push(String::new());
    let m = |label: &str, a: Alloc| t.median(label, a);
    let ratio_text = |r: Option<(f64, f64, f64)>| {
        r.map_or("—".into(), |(m, lo, hi)| report::fmt_ratio(m, lo, hi))
    };
    // "X ahead of iceoryx2's PoolAllocator": shmslab ÷ iceoryx2 < 1.0.
    let ahead_of_ice = |out: &mut Vec<String>, w: &str, label: &str| {
        let r = t.paired(label, Alloc::Shm, label, Alloc::Ice);
        target(
            out,
            &format!("{w} ahead of iceoryx2 PoolAllocator (shmslab ÷ iceoryx2 < 1.0)"),
            r.map(|r| r.0),
            r.is_some_and(|r| r.0 < 1.0),
            ratio_text(r),
        );
    };
    for (w, label, limit) in [
        ("W1", "W1 per pair", 1.2),
        ("W2", "W2 per step", 1.0),
        ("W3", "W3 per allocation", 1.0),
    ] {
        let r = t.paired(label, Alloc::Shm, label, Alloc::Malloc);
        target(
            &mut out,
            &format!("{w} ≤ {limit:.1}× malloc"),
            r.map(|r| r.0),
            r.is_some_and(|r| r.0 <= limit),
            ratio_text(r),
        );
        match w {
            "W1" => ahead_of_ice(&mut out, "W1", "W1 per pair"),
            "W2" => ahead_of_ice(&mut out, "W2-4k", "W2-4k per step (supplementary)"),
            _ => {}
        }
    }
    for w in ["W4", "W5"] {
        for a in Alloc::ALL {
            // Per repetition: aggregate pairs/s ÷ (1e9 / W1 ns per pair).
            let r = t
                .samples(&format!("{w} aggregate pairs/s"), a)
                .zip(t.samples("W1 per pair", a))
                .filter(|(x, y)| x.len() == y.len())
                .map(|(x, y)| {
                    let v: Vec<f64> = x.iter().zip(y).map(|(agg, ns)| agg * ns / 1e9).collect();
                    report::stats(&v)
                });
            let shown = ratio_text(r);
            if a == Alloc::Shm {
                let name = format!("{w} aggregate ≥ 1.0× single-worker W1 throughput (shmslab)");
                target(
                    &mut out,
                    &name,
                    r.map(|r| r.0),
                    r.is_some_and(|r| r.0 >= 1.0),
                    shown,
                );
            } else if r.is_some() {
                out.push(format!(
                    "  - for reference, {}: {w} aggregate ÷ its own single-worker W1 = {shown}",
                    a.name()
                ));
            }
        }
        // Ahead of every shared-memory peer in this bench (Boost is not in
        // it): aggregate pairs/s, shmslab ÷ peer > 1.0.
        let label = format!("{w} aggregate pairs/s");
        let mut shown = Vec::new();
        let mut missing = Vec::new();
        let mut all_ahead = true;
        for peer in [Alloc::Rts, Alloc::Ice] {
            match t.paired(&label, Alloc::Shm, &label, peer) {
                Some(r) => {
                    all_ahead &= r.0 > 1.0;
                    shown.push(format!("{} {}", peer.name(), ratio_text(Some(r))));
                }
                None => missing.push(peer.name()),
            }
        }
        let name = format!(
            "{w} ahead of every shared peer (aggregate pairs/s, shmslab ÷ peer > 1.0; Boost is not in this bench)"
        );
        if missing.is_empty() {
            target(&mut out, &name, Some(0.0), all_ahead, shown.join("; "));
        } else if !shown.is_empty() {
            out.push(format!(
                "- {name}: {} — not judged ({} not run)",
                shown.join("; "),
                missing.join(", ")
            ));
        }
    }
    let mut faster = Vec::new();
    for row in &t.rows {
        let Some((r, _, _)) = t.paired(&row.label, Alloc::Shm, &row.label, Alloc::Rts) else {
            continue;
        };
        if row.label.contains("bytes") || row.label.contains("growths") {
            continue;
        }
        let better = if row.label.contains("pairs/s") {
            r >= 1.0
        } else {
            r <= 1.0
        };
        faster.push(format!(
            "{} {r:.2}× {}",
            row.label,
            if better { "✓" } else { "✗" }
        ));
    }
    if !faster.is_empty() {
        out.push(format!(
            "- faster than rts-alloc everywhere it runs (shmslab ÷ rts-alloc): {}",
            faster.join("; ")
        ));
    }
    let a = m("attach", Alloc::Shm);
    target(
        &mut out,
        "attach ≤ 1 ms",
        a,
        a.is_some_and(|v| v <= 1000.0),
        a.map_or("—".into(), |v| format!("{v:.1} µs")),
    );
    let r = t.paired("attach", Alloc::Shm, "attach", Alloc::Rts);
    target(
        &mut out,
        "attach ≤ rts-alloc (shmslab attach ÷ rts-alloc attach ≤ 1.0)",
        r.map(|r| r.0),
        r.is_some_and(|r| r.0 <= 1.0),
        ratio_text(r),
    );
    if let (Some(file), true) = (m("W2 file bytes at end", Alloc::Shm), peak_live > 0) {
        let r = Some(file / peak_live as f64);
        let sizes = format!(
            "file {:.1} MiB, peak live requested {:.1} MiB = {} B",
            file / (1u64 << 20) as f64,
            peak_live as f64 / (1u64 << 20) as f64,
            peak_live
        );
        for limit in [1.5, 1.3] {
            let name = format!("W2 file ≤ {limit:.1}× peak live ({sizes})");
            target(&mut out, &name, r, r.is_some_and(|v| v <= limit), x(r));
        }
    }
    if !overhead.is_empty() {
        let (med, lo, hi) = report::stats(overhead);
        target(
            &mut out,
            "metadata 8 B per slot (measured in W3: file bytes beyond the slots ÷ slots, the 8-byte word plus the extents' page padding; met when that rounds to 8 B)",
            Some(med),
            med < 8.5,
            format!("{med:.2} B [{lo:.2}..{hi:.2}]"),
        );
    }
    out.push(String::new());
    out.push("### Other facts".into());
    out.push(String::new());
    out.push("- slot metadata: 8 bytes per slot — docs/FORMAT.md: an extent is `[metadata word × n][pad][slot × n]`, one 8-byte word per slot (src/format/slot.rs).".into());
    if !overhead.is_empty() {
        let (med, lo, hi) = report::stats(overhead);
        out.push(format!(
            "- measured in W3 (from `inspect`): (current_size − data_start − slot bytes) ÷ slots = {med:.2} B per slot [{lo:.2}..{hi:.2}]: the 8-byte word plus the page padding of extents"
        ));
    }
    if let Some(tg) = shm_target {
        out.push(format!(
            "- attach segment: current_size {:.1} MiB, {} extents, {} slots allocated to build it",
            tg.bytes as f64 / (1u64 << 20) as f64,
            tg.extents,
            tg.slots
        ));
    }
    for ch in checks {
        out.push(format!("- {ch}"));
    }
    if let Ok(more) = runs::CHECKS.lock() {
        for (what, found) in more.iter() {
            out.push(format!("- {what}: {}", show(found)));
        }
    }
    for a in Alloc::ALL {
        if let Some(s) = t.samples("W3 growths", a) {
            let (med, lo, hi) = report::stats(s);
            if lo != hi {
                out.push(format!(
                    "- W3 growths for {} vary: {med} [{lo}..{hi}]",
                    a.name()
                ));
            }
        }
    }
    println!("{}", out.join("\n"));
}

/// The version of a package in the workspace's Cargo.lock ("?" if not found).
fn locked_version(name: &str) -> String {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
        .unwrap_or_default();
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l == format!("name = \"{name}\"")
            && let Some(v) = lines.next().and_then(|v| v.strip_prefix("version = "))
        {
            return v.trim_matches('"').to_string();
        }
    }
    "?".into()
}

fn show(findings: &[String]) -> String {
    if findings.is_empty() {
        "consistent (no findings)".into()
    } else {
        format!("FINDINGS: {}", findings.join("; "))
    }
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

fn us(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e3
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into());
    format!("{cpu}, {cores} cores, Linux {kernel}, {rustc}")
}

fn commit() -> String {
    // The repository root: this crate is benches/.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["log", "--oneline", "-1"]).unwrap_or_else(|| "?".into());
    let dirty = git(&["status", "--porcelain", "--", "src"]).unwrap_or_default();
    if dirty.is_empty() {
        head
    } else {
        format!("{head} (+ uncommitted changes in src/)")
    }
}
