//! Copies into and out of a slot (`write_bytes`, `read_bytes`) beside
//! `copy_from_slice` between two private buffers of the same sizes, in one
//! run: criterion prints GB/s for 64 B, 1 KiB, 4 KiB, 64 KiB and 1 MiB, in
//! cache (the same slot and buffer every time) and, for 4 KiB, 64 KiB and
//! 1 MiB, out of cache (each copy on the next slot and buffer of a working
//! set larger than the last-level cache). A table at the end gives the
//! ratios and the target of issue 13: copies at ≥ 0.5× `copy_from_slice`
//! for 4 KiB and 64 KiB, in and out of cache.
//!
//! Then one 64 KiB message sent and consumed staged (`Vec`, `write_bytes`,
//! `read_bytes`) and in place (a loan, `read_in_place`): criterion's
//! `message` group.
//!
//! `cargo bench -- copy` runs only the copies, `-- message` the messages. `SHMSLAB_BENCH_COLD_MIB` sets the
//! out-of-cache working set (default 1024 MiB: half slots, half private
//! buffers); `SHMSLAB_BENCH_QUICK=1` shortens every measurement.

use criterion::{BenchmarkId, Criterion, Throughput};
use shmslab::{BytesHandle, Slab};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZES: [usize; 5] = [64, 1 << 10, 4 << 10, 64 << 10, 1 << 20];
const COLD_SIZES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];

/// Which way a copy goes.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    In,
    Out,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::In => "copy-in",
            Way::Out => "copy-out",
        }
    }
}

/// A set of slots and private buffers of one size to copy between: one of
/// each in cache, enough of each out of cache that every copy misses.
struct Set {
    slots: Vec<BytesHandle>,
    private: Vec<Vec<u8>>,
    others: Vec<Vec<u8>>,
}

impl Set {
    fn new(slab: &Slab, size: usize, count: usize) -> Set {
        let mut slots = Vec::with_capacity(count);
        let mut private = Vec::with_capacity(count);
        let mut others = Vec::with_capacity(count);
        let fill: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        for _ in 0..count {
            let s = slab.alloc_bytes(size).expect("alloc_bytes");
            slab.write_bytes(s, 0, &fill).expect("write_bytes");
            slots.push(s);
            private.push(fill.clone());
            others.push(fill.clone());
        }
        Set {
            slots,
            private,
            others,
        }
    }

    /// `n` copies of the set's size, one after another over the set
    /// (starting where the last call stopped), timed.
    fn run(&mut self, slab: &Slab, way: Way, peer: bool, n: u64, next: &mut usize) -> Duration {
        let count = self.slots.len();
        let start = Instant::now();
        for _ in 0..n {
            let i = *next;
            *next = if i + 1 == count { 0 } else { i + 1 };
            match (way, peer) {
                (Way::In, false) => slab
                    .write_bytes(self.slots[i], 0, black_box(&self.private[i]))
                    .expect("write_bytes"),
                (Way::Out, false) => slab
                    .read_bytes(self.slots[i], 0, black_box(&mut self.private[i]))
                    .expect("read_bytes"),
                (Way::In, true) => self.others[i].copy_from_slice(black_box(&self.private[i])),
                (Way::Out, true) => self.private[i].copy_from_slice(black_box(&self.others[i])),
            }
            black_box(&self.private[i]);
        }
        start.elapsed()
    }
}

fn quick() -> bool {
    std::env::var("SHMSLAB_BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// The criterion filter (the first argument that is not a flag), if any.
fn filter() -> Option<String> {
    std::env::args().skip(1).find(|a| !a.starts_with('-'))
}

fn selected(name: &str) -> bool {
    filter().is_none_or(|f| name.contains(&f))
}

fn main() {
    if !selected("copy-in/") && !selected("copy-out/") && !selected("copy") && !selected("message/")
    {
        return;
    }
    let cold_bytes = std::env::var("SHMSLAB_BENCH_COLD_MIB")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1024)
        << 20;
    let path = std::env::temp_dir().join(format!("shmslab-bench-copies-{}", std::process::id()));
    let dir = std::path::Path::new("/dev/shm");
    let path = if dir.is_dir() {
        dir.join(path.file_name().expect("a file name"))
    } else {
        path
    };
    let slab = Slab::builder()
        .initial_size(64 << 20)
        .lifetime(shmslab::FileLifetime::Unlinked)
        .replace(true)
        .create(&path)
        .expect("create the segment");

    let (warm, measure) = if quick() {
        (Duration::from_millis(100), Duration::from_millis(300))
    } else {
        (Duration::from_millis(300), Duration::from_millis(1000))
    };
    let mut c = Criterion::default()
        .warm_up_time(warm)
        .measurement_time(measure)
        .sample_size(20)
        .configure_from_args();

    let mut rows = Vec::new();
    for (cold, sizes) in [(false, &SIZES[..]), (true, &COLD_SIZES[..])] {
        for &size in sizes {
            let count = if cold {
                (cold_bytes / 2 / size).max(2)
            } else {
                1
            };
            let mut set = Set::new(&slab, size, count);
            for way in [Way::In, Way::Out] {
                let group = format!("{}{}", way.name(), if cold { "-cold" } else { "" });
                let mut g = c.benchmark_group(&group);
                g.throughput(Throughput::Bytes(size as u64));
                for (peer, name) in [(false, "shmslab"), (true, "copy_from_slice")] {
                    let mut next = 0;
                    g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                        b.iter_custom(|n| set.run(&slab, way, peer, n, &mut next))
                    });
                }
                g.finish();
                if selected(&format!("{group}/")) {
                    rows.push(measure_row(&slab, &mut set, way, cold, size));
                }
            }
            for s in set.slots {
                slab.free(s).expect("free");
            }
        }
    }
    if selected("message/") {
        message_bench(&mut c, &slab);
    }
    print_table(&rows);
}

/// A 64 KiB message made of 16 chunks of 4 KiB (a serializer's output),
/// sent and consumed (a wrapping sum of every chunk's words) through the segment:
/// staged (a `Vec` built, `write_bytes`, then `read_bytes` into another
/// `Vec`) or in place (a loan written chunk by chunk, then `read_in_place`
/// streaming 4 KiB at a time). Each includes the slot's alloc and free.
fn message_bench(c: &mut Criterion, slab: &Slab) {
    const CHUNK: usize = 4 << 10;
    const LEN: usize = 64 << 10;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 13) as u8).collect();
    // The consumer's work: a wrapping sum of the words (cheap, vectorised,
    // so the copies are what differ).
    let sum = |b: &[u8]| {
        b.chunks_exact(8)
            .map(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")))
            .fold(0u64, u64::wrapping_add)
    };
    let want: u64 = sum(&chunk).wrapping_mul(16);
    let mut g = c.benchmark_group("message");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("64KiB/staged", |b| {
        let mut staged = Vec::with_capacity(LEN);
        let mut received = vec![0u8; LEN];
        b.iter(|| {
            staged.clear();
            for _ in 0..LEN / CHUNK {
                staged.extend_from_slice(black_box(&chunk));
            }
            let h = slab.alloc_bytes(LEN).expect("alloc_bytes");
            slab.write_bytes(h, 0, &staged).expect("write_bytes");
            slab.read_bytes(h, 0, &mut received).expect("read_bytes");
            let total = received.chunks(CHUNK).map(sum).fold(0, u64::wrapping_add);
            slab.free(h).expect("free");
            assert_eq!(total, want);
        })
    });
    g.bench_function("64KiB/loan+view", |b| {
        let mut out = vec![0u8; CHUNK];
        b.iter(|| {
            let mut loan = slab.loan_bytes(LEN).expect("loan_bytes");
            for _ in 0..LEN / CHUNK {
                std::io::Write::write_all(&mut loan, black_box(&chunk)).expect("write");
            }
            let h = loan.into_handle();
            let total = slab
                .read_in_place(h, |v| {
                    let mut total = 0;
                    for at in (0..v.len()).step_by(CHUNK) {
                        v.read_at(at, &mut out).expect("read_at");
                        total = u64::wrapping_add(total, sum(&out));
                    }
                    total
                })
                .expect("read_in_place");
            slab.free(h).expect("free");
            assert_eq!(total, want);
        })
    });
    g.finish();
}

/// One line of the table: GB/s of both, median over repetitions that run
/// the two back to back.
struct Row {
    way: Way,
    cold: bool,
    size: usize,
    shm: f64,
    peer: f64,
    ratio: f64,
}

fn measure_row(slab: &Slab, set: &mut Set, way: Way, cold: bool, size: usize) -> Row {
    let reps = if quick() { 5 } else { 11 };
    // About 64 MiB of copies per repetition and side (at least the whole
    // working set once out of cache, so every copy misses).
    let n = ((64 << 20) / size).max(set.slots.len()) as u64;
    let (mut shm, mut peer, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = 0;
    for _ in 0..reps {
        let a = gbps(size, n, set.run(slab, way, false, n, &mut next));
        let b = gbps(size, n, set.run(slab, way, true, n, &mut next));
        shm.push(a);
        peer.push(b);
        ratio.push(a / b);
    }
    Row {
        way,
        cold,
        size,
        shm: median(shm),
        peer: median(peer),
        ratio: median(ratio),
    }
}

fn gbps(size: usize, n: u64, d: Duration) -> f64 {
    (size as f64 * n as f64) / d.as_secs_f64() / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn print_table(rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!("## Copies: shmslab write_bytes/read_bytes beside copy_from_slice (GB/s, median)");
    println!();
    println!(
        "| copy | size | cache | shmslab GB/s | copy_from_slice GB/s | shmslab ÷ copy_from_slice | target ≥ 0.5× |"
    );
    println!("|---|--:|---|--:|--:|--:|---|");
    for r in rows {
        let targeted = r.size == 4 << 10 || r.size == 64 << 10;
        let verdict = match (targeted, r.ratio >= 0.5) {
            (false, _) => "—",
            (true, true) => "met",
            (true, false) => "NOT met",
        };
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2}× | {} |",
            if r.way == Way::In { "in" } else { "out" },
            size_name(r.size),
            if r.cold { "out of cache" } else { "in cache" },
            r.shm,
            r.peer,
            r.ratio,
            verdict
        );
    }
    println!();
}

fn size_name(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}
