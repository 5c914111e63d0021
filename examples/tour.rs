//! A tour of shmslab across processes.
//!
//! The parent creates a small segment and a named `Stats` root, then runs
//! this same program twice more as child processes:
//!
//! 1. a *worker* that attaches, finds the root, and allocates typed records
//!    and variable-size buffers while the parent does the same — the file
//!    grows several times under both of them, and both count what they
//!    allocate in the root's shared atomic counters as they go — then
//!    publishes its records under another root and exits cleanly;
//! 2. a *crasher* that allocates buffers and is killed with SIGKILL, so the
//!    parent can show `reclaim_dead` freeing exactly what it held.
//!
//! Run: `cargo run --release --example tour` (add `-- --keep PATH` to keep
//! the segment file for `shmslab inspect`).

use shmslab::bytemuck::{Pod, Zeroable};
use shmslab::{Handle, Schema, Slab};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// Counters shared through a named root, changed in place through its atomic
/// view (`StatsAtomics`, below), so the parent and the worker update them
/// at the same time without losing an update. (`update` would not do: it
/// copies the whole struct out and back, undoing a concurrent writer's
/// fields.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Stats {
    parent_records: u64,
    parent_buffers: u64,
    parent_bytes: u64,
    worker_records: u64,
    worker_buffers: u64,
    worker_bytes: u64,
    worker_pid: u64,
    worker_saw_generation: u64,
}
impl Schema for Stats {
    const SCHEMA_ID: Option<u64> = Some(0x7374_6174_7300_0001);
}

shmslab::atomic_fields! {
    /// `Stats` with every field an `AtomicU64`: `slab.atomic(handle)`.
    struct StatsAtomics for Stats {
        parent_records,
        parent_buffers,
        parent_bytes,
        worker_records,
        worker_buffers,
        worker_bytes,
        worker_pid,
        worker_saw_generation,
    }
}

/// A typed record, as a service might keep per client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Record {
    id: u64,
    owner_pid: u32,
    flags: u32,
    score: f64,
    name: [u8; 40],
}

/// Where the worker leaves handles to a few of its records for the parent.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Inbox {
    count: u64,
    records: [Handle<Record>; 8],
}
impl Schema for Inbox {}

/// Buffers the crasher holds when it is killed.
const CRASHER_BUFFERS: u64 = 300;

fn record(id: u64, name: &str) -> Record {
    let mut r = Record {
        id,
        owner_pid: std::process::id(),
        flags: 0,
        score: id as f64 * 1.5,
        name: [0; 40],
    };
    r.name[..name.len().min(40)].copy_from_slice(&name.as_bytes()[..name.len().min(40)]);
    r
}

/// xorshift64*: a small deterministic PRNG for buffer sizes.
fn next(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Allocates records and buffers, counting them in the shared `counters`
/// (records, buffers, bytes) as it goes; returns (records, buffers, bytes).
fn work(
    slab: &Slab,
    seed: u64,
    rounds: u64,
    tag: &str,
    counters: [&AtomicU64; 3],
) -> shmslab::Result<(Vec<Handle<Record>>, u64, u64)> {
    let mut x = seed;
    let mut records = Vec::new();
    let (mut buffers, mut bytes) = (0u64, 0u64);
    for i in 0..rounds {
        records.push(slab.alloc(record(i, &format!("{tag}-{i}")))?);
        counters[0].fetch_add(1, Relaxed);
        let len = 64 + (next(&mut x) % 8000) as usize;
        let buf = slab.alloc_bytes(len)?;
        slab.write_bytes(buf, 0, &vec![i as u8; len])?;
        buffers += 1;
        bytes += len as u64;
        counters[1].fetch_add(1, Relaxed);
        counters[2].fetch_add(len as u64, Relaxed);
        if i % 3 == 0 {
            slab.free(buf)?; // some churn: freed slots are reused
        }
    }
    Ok((records, buffers, bytes))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("worker") => return worker(&args[2]),
        Some("crasher") => return crasher(&args[2]),
        _ => {}
    }
    let started = Instant::now();
    // `--keep PATH` leaves the segment at PATH afterwards, for `shmslab inspect`.
    let keep = match args.get(1).map(String::as_str) {
        Some("--keep") => Some(std::path::PathBuf::from(
            args.get(2).ok_or("--keep needs a path")?,
        )),
        _ => None,
    };
    let dir = tempfile::tempdir()?;
    let path = keep.clone().unwrap_or_else(|| dir.path().join("tour.shm"));
    let mut slab = Slab::builder()
        .initial_size(64 << 10)
        .replace(keep.is_some())
        .create(&path)?;
    if keep.is_some() {
        slab.keep_file();
    }
    println!("shmslab tour");
    println!(
        "  segment  {} (id {:#010x})",
        path.display(),
        slab.segment_id()
    );
    println!("  classes  {:?} bytes", slab.class_sizes());
    println!(
        "  start    file {} bytes, generation {}",
        slab.stats().file_size,
        slab.generation()
    );

    let stats = slab.root_or_insert("stats", Stats::default())?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(&exe)
        .args(["worker", path.to_str().expect("utf-8 path")])
        .stdout(Stdio::piped())
        .spawn()?;
    println!(
        "\n[parent] created root \"stats\"; started worker pid {}",
        child.id()
    );

    // Work alongside the worker, counting in the same root as it does.
    let counters = slab.atomic(stats)?; // the root stays live: safe to keep
    let (mine, buffers, bytes) = work(
        &slab,
        0x9E37_79B9_7F4A_7C15,
        4000,
        "parent",
        [
            &counters.parent_records,
            &counters.parent_buffers,
            &counters.parent_bytes,
        ],
    )?;
    let status = child.wait()?;
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            out.push_str(&format!("  {}\n", line?));
        }
    }
    print!("{out}");
    println!("[parent] worker exited: {status}");

    // What both counted in the root, and the worker's records in the inbox.
    let s = slab.read(stats)?;
    assert_eq!(
        (s.parent_records, s.parent_buffers, s.parent_bytes),
        (mine.len() as u64, buffers, bytes),
        "the worker's concurrent updates of the root undid none of the parent's"
    );
    println!(
        "[parent] allocated {} records and {} buffers ({} KiB); the worker, pid {}: {} records, {} buffers ({} KiB)",
        s.parent_records,
        s.parent_buffers,
        s.parent_bytes >> 10,
        s.worker_pid,
        s.worker_records,
        s.worker_buffers,
        s.worker_bytes >> 10
    );
    if let Some(inbox) = slab.root::<Inbox>("inbox")? {
        let inbox = slab.read(inbox)?;
        let first = slab.read(inbox.records[0])?;
        println!(
            "[parent] read the worker's record through a handle it published: id {} owner pid {} name {:?}",
            first.id,
            first.owner_pid,
            String::from_utf8_lossy(&first.name).trim_end_matches('\0')
        );
    }
    println!(
        "[parent] growth: generation {} (the worker saw it reach {} while attached)",
        slab.generation(),
        s.worker_saw_generation
    );

    // A process that dies holding slots.
    let mut crasher = Command::new(&exe)
        .args(["crasher", path.to_str().expect("utf-8 path")])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(crasher.stdout.take().expect("piped")).read_line(&mut line)?;
    println!("\n[crasher] {}", line.trim());
    crasher.kill()?; // SIGKILL: no destructor runs
    crasher.wait()?;
    let before = slab.check()?;
    let report = slab.reclaim_dead()?;
    let after = slab.check()?;
    let owned = |r: &shmslab::Report| r.classes.iter().map(|c| c.owned_by_dead).sum::<u64>();
    println!(
        "[parent] killed it with SIGKILL; reclaim_dead freed {} slots of {} dead peer: its {CRASHER_BUFFERS} buffers and {} free slots waiting in its thread cache",
        report.slots,
        report.peers,
        report.slots.saturating_sub(CRASHER_BUFFERS),
    );
    println!(
        "[parent] slots owned by dead processes: {} before reclaim, {} after",
        owned(&before),
        owned(&after)
    );

    let st = slab.stats();
    println!("\nsegment after the tour");
    println!(
        "  {:>9} {:>8} {:>8} {:>8} {:>8}",
        "slot size", "extents", "slots", "in use", "free"
    );
    for c in st.classes.iter().filter(|c| c.extents > 0) {
        println!(
            "  {:>9} {:>8} {:>8} {:>8} {:>8}",
            c.slot_size, c.extents, c.slots, c.in_use, c.free
        );
    }
    println!(
        "  file {} KiB, in use {} KiB, generation {}, peers attached {}",
        st.file_size >> 10,
        st.current_size >> 10,
        st.generation,
        st.peers.len()
    );
    let check = slab.check()?;
    println!(
        "  check: {} ({} findings)",
        if check.is_consistent() {
            "consistent"
        } else {
            "INCONSISTENT"
        },
        check.findings.len()
    );
    for f in &check.findings {
        println!("    {f}");
    }
    match keep {
        Some(path) => println!(
            "\ndone in {:.2?}; the segment is kept at {} (try `shmslab inspect` on it)",
            started.elapsed(),
            path.display()
        ),
        None => println!(
            "\ndone in {:.2?}; the temporary directory is removed on exit",
            started.elapsed()
        ),
    }
    Ok(())
}

fn worker(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let slab = Slab::attach(path)?;
    let stats = slab
        .root::<Stats>("stats")?
        .ok_or("the parent should have made the stats root")?;
    println!(
        "[worker] attached to {path}; found root \"stats\"; generation {}",
        slab.generation()
    );
    let counters = slab.atomic(stats)?;
    counters
        .worker_pid
        .store(std::process::id() as u64, Relaxed);
    let (records, buffers, _) = work(
        &slab,
        0xD1B5_4A32_D192_ED03,
        4000,
        "worker",
        [
            &counters.worker_records,
            &counters.worker_buffers,
            &counters.worker_bytes,
        ],
    )?;
    let mut inbox = Inbox::zeroed();
    inbox.count = records.len().min(8) as u64;
    inbox.records[..8].copy_from_slice(&records[..8]);
    slab.root_or_insert("inbox", inbox)?;
    counters
        .worker_saw_generation
        .fetch_max(slab.generation(), Relaxed);
    println!(
        "[worker] allocated {} records and {} buffers; generation now {}; exiting cleanly (my records stay)",
        records.len(),
        buffers,
        slab.generation()
    );
    Ok(())
}

fn crasher(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let slab = Slab::attach(path)?;
    let mut held = Vec::new();
    for i in 0..CRASHER_BUFFERS {
        held.push(slab.alloc_bytes(256 + i as usize * 16)?);
    }
    println!(
        "pid {} attached and holds {} buffers; waiting to be killed",
        std::process::id(),
        held.len()
    );
    std::io::stdout().flush()?;
    std::thread::sleep(std::time::Duration::from_secs(60));
    Ok(())
}
