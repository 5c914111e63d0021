//! Several processes on one segment at once: concurrent allocation with
//! growth, handles crossing processes, and racing frees.
//!
//! Every test re-runs this test binary as child processes (see
//! `tests/common`); a child plays the role named in its environment and
//! talks to the parent over its stdin and stdout.
//!
//! The stress test runs 4 × 100,000 operations; set `SHMSLAB_STRESS_OPS` to
//! change the per-child count (for example a larger one in release CI).

mod common;

use common::live::{
    LiveChild, SharedWords, SpinBarrier, XorShift, from_hex, hear, new_segment, say, segment_dir,
    small_segment, to_hex,
};
use common::{child_args, outcome};
use shmslab::{Error, Slab, SlotRef};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bound on any single wait for a child's message.
const MSG_TIMEOUT: Duration = Duration::from_secs(60);

fn handle_hex(h: SlotRef) -> String {
    to_hex(&h.to_bytes())
}

fn handle_from_hex(s: &str) -> SlotRef {
    SlotRef::from_bytes(from_hex::<16>(s))
}

/// Parses `key=value` pairs of a message payload.
fn fields(payload: &str) -> BTreeMap<String, u64> {
    payload
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a number")))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Stress: four processes allocating, verifying and freeing concurrently.
// ---------------------------------------------------------------------------

/// Most slots a stress child holds at once.
const MAX_HELD: usize = 64;

/// The checksum-ish tail stamped in the last 8 bytes of an allocation.
fn tail_stamp(pid: u64, counter: u64, len: usize) -> u64 {
    let mut x = pid ^ counter.rotate_left(21) ^ (len as u64).rotate_left(42);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// A random request size from 64 B to 256 KiB, spread evenly over the
/// powers of two in between (so every class from 64 B to 256 KiB is used).
fn stress_size(rng: &mut XorShift) -> usize {
    let shift = 6 + rng.below(12) as u32; // 2^6 ..= 2^17
    let base = 1usize << shift;
    (base + rng.below(base as u64 + 1) as usize).min(256 << 10)
}

struct Held {
    h: SlotRef,
    len: usize,
    counter: u64,
}

fn stamp(slab: &Slab, held: &Held, pid: u64) {
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&pid.to_le_bytes());
    head[8..].copy_from_slice(&held.counter.to_le_bytes());
    slab.write_bytes(common::whole(held.h), 0, &head)
        .unwrap_or_else(|e| panic!("write stamp into {:?}: {e}", held.h));
    let tail = tail_stamp(pid, held.counter, held.len).to_le_bytes();
    slab.write_bytes(common::whole(held.h), held.len - 8, &tail)
        .unwrap_or_else(|e| panic!("write tail into {:?}: {e}", held.h));
}

/// Checks a held slot still carries this process's stamp; panics with a
/// clear message if anyone else wrote it (the slot was handed out twice).
fn verify(slab: &Slab, held: &Held, pid: u64) {
    let mut head = [0u8; 16];
    let mut tail = [0u8; 8];
    let read = slab
        .read_bytes(common::whole(held.h), 0, &mut head)
        .and_then(|()| slab.read_bytes(common::whole(held.h), held.len - 8, &mut tail));
    if let Err(e) = read {
        panic!(
            "DUPLICATE/CORRUPTION: reading held slot {:?} (alloc #{} of {} bytes) failed: {e}; \
             someone freed or reused a slot this process holds",
            held.h, held.counter, held.len
        );
    }
    let got_pid = u64::from_le_bytes(head[..8].try_into().unwrap());
    let got_counter = u64::from_le_bytes(head[8..].try_into().unwrap());
    let got_tail = u64::from_le_bytes(tail);
    let want_tail = tail_stamp(pid, held.counter, held.len);
    assert!(
        got_pid == pid && got_counter == held.counter && got_tail == want_tail,
        "DUPLICATE/CORRUPTION: slot {:?} (alloc #{} of {} bytes by pid {pid}) now holds \
         stamp (pid {got_pid}, alloc #{got_counter}) and tail {got_tail:#x} (want {want_tail:#x}): \
         the slot was handed out twice or overwritten",
        held.h,
        held.counter,
        held.len
    );
}

fn stress_child(args: &[String]) {
    let path = &args[0];
    let ops: u64 = args[1].parse().unwrap();
    let seed: u64 = args[2].parse().unwrap();
    let barrier = SpinBarrier::open(Path::new(&args[3]), args[4].parse().unwrap());
    let slab = Slab::attach(path).expect("attach");
    say("READY", std::process::id());
    barrier.wait();

    let pid = std::process::id() as u64;
    let mut rng = XorShift::new(seed);
    let mut held: Vec<Held> = Vec::with_capacity(MAX_HELD);
    let gen_start = slab.generation();
    let (mut last_gen, mut gen_changes) = (gen_start, 0u64);
    let (mut allocs, mut frees, mut counter) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    for op in 0..ops {
        let g = slab.generation();
        if g != last_gen {
            gen_changes += 1;
            last_gen = g;
        }
        let alloc = held.is_empty() || (held.len() < MAX_HELD && rng.below(2) == 0);
        if alloc {
            let len = stress_size(&mut rng);
            let h = slab
                .alloc_bytes(len)
                .unwrap_or_else(|e| panic!("op {op}: alloc_bytes({len}) failed: {e}"));
            let cap = slab.capacity(h).expect("capacity of a new slot");
            assert!(cap >= len, "alloc_bytes({len}) gave a {cap}-byte slot");
            counter += 1;
            let item = Held {
                h: h.raw(),
                len,
                counter,
            };
            stamp(&slab, &item, pid);
            held.push(item);
            allocs += 1;
        } else {
            let item = held.swap_remove(rng.below(held.len() as u64) as usize);
            verify(&slab, &item, pid);
            slab.free(item.h)
                .unwrap_or_else(|e| panic!("op {op}: free({:?}) failed: {e}", item.h));
            frees += 1;
        }
        // Now and then re-check everything held, so an overwrite is caught
        // soon after it happens, not only when that slot is freed.
        if op % 1024 == 1023 {
            for item in &held {
                verify(&slab, item, pid);
            }
        }
    }
    for item in held.drain(..) {
        verify(&slab, &item, pid);
        slab.free(item.h).expect("final free");
        frees += 1;
    }
    let gen_end = slab.generation();
    drop(slab);
    say(
        "DONE",
        format!(
            "ops={ops} allocs={allocs} frees={frees} gen_start={gen_start} gen_end={gen_end} \
             gen_changes={gen_changes} ms={}",
            started.elapsed().as_millis()
        ),
    );
}

/// Operations per stress process: `SHMSLAB_STRESS_OPS`, else 100,000.
fn stress_ops() -> u64 {
    std::env::var("SHMSLAB_STRESS_OPS")
        .ok()
        .map(|v| v.parse().expect("SHMSLAB_STRESS_OPS is a number"))
        .unwrap_or(100_000)
}

/// The acceptance test: 4 processes × 100,000 random operations,
/// all attached while the segment grows from 64 KiB; no slot is ever
/// handed out twice, and at the end every slot is free.
#[test]
fn four_processes_allocating_concurrently_never_get_the_same_slot_and_end_with_every_slot_free() {
    if let Some(args) = child_args("stress") {
        return stress_child(&args);
    }
    const CHILDREN: usize = 4;
    let ops = stress_ops();
    let (dir, path, slab) = small_segment("stress.shm");
    let barrier_path = dir.path().join("barrier");
    SpinBarrier::create(&barrier_path);
    let parties = (CHILDREN + 1).to_string();
    let (path_s, barrier_s) = (path.to_str().unwrap(), barrier_path.to_str().unwrap());
    let ops_s = ops.to_string();
    let mut children: Vec<LiveChild> = (0..CHILDREN)
        .map(|i| {
            let seed = (0x5eed_0000 + i as u64).to_string();
            LiveChild::spawn(
                "four_processes_allocating_concurrently_never_get_the_same_slot_and_end_with_every_slot_free",
                "stress",
                &[path_s, &ops_s, &seed, barrier_s, &parties],
                &[],
            )
        })
        .collect();
    let barrier = SpinBarrier::open(&barrier_path, CHILDREN as u64 + 1);
    for c in &mut children {
        c.expect("READY", MSG_TIMEOUT);
    }
    let attached = slab.stats().peers.len();
    assert_eq!(
        attached,
        CHILDREN + 1,
        "all children and the parent attached"
    );
    let gen_all_attached = slab.generation();
    let started = Instant::now();
    barrier.wait(); // all five start together
    // Generous: debug builds are slow and the two cores are shared.
    let run_timeout = Duration::from_secs(60 + ops / 100);
    let mut figures = Vec::new();
    for c in &mut children {
        let done = c.expect("DONE", run_timeout);
        figures.push(fields(&done));
    }
    for c in &mut children {
        c.wait_success(MSG_TIMEOUT);
    }
    let elapsed = started.elapsed();
    let growths = slab.generation() - gen_all_attached;

    slab.trim().expect("trim");
    let report = slab.check().expect("check");
    assert!(
        report.is_consistent(),
        "check found problems: {:#?}",
        report.findings
    );
    assert_eq!(report.live_peers, 1, "only the parent is attached now");
    assert_eq!(report.dead_peers, 0, "every child detached cleanly");
    for (c, k) in report.classes.iter().enumerate() {
        assert_eq!(k.cached, 0, "class {c}: slots left in some cache: {k:?}");
        assert_eq!(k.allocated, 0, "class {c}: slots still allocated: {k:?}");
        assert_eq!(k.owned_by_dead, 0, "class {c}: {k:?}");
        assert_eq!(k.fresh + k.free, k.slots, "class {c}: {k:?}");
    }
    let stats = slab.stats();
    for (c, k) in stats.classes.iter().enumerate() {
        assert_eq!(
            k.slots,
            k.free + k.in_use,
            "class {c}: stats do not add up: {k:?}"
        );
        assert_eq!(k.in_use, 0, "class {c}: stats say slots are in use: {k:?}");
    }
    let reclaimed = slab.reclaim_dead().expect("reclaim_dead");
    assert_eq!(reclaimed.slots, 0, "nothing to reclaim after clean exits");

    let total_ops: u64 = figures.iter().map(|f| f["ops"]).sum();
    let total_allocs: u64 = figures.iter().map(|f| f["allocs"]).sum();
    let total_frees: u64 = figures.iter().map(|f| f["frees"]).sum();
    assert_eq!(total_ops, ops * CHILDREN as u64);
    assert_eq!(total_allocs, total_frees, "every allocation was freed");
    println!(
        "stress: {CHILDREN} processes x {ops} ops = {total_ops} ops ({total_allocs} allocations, \
         {total_frees} frees) in {elapsed:.2?}; {growths} growths while all were attached \
         (generation {} -> {}); {} extents, file {} bytes; duplicates found: 0",
        gen_all_attached,
        slab.generation(),
        stats.total_extents(),
        stats.file_size,
    );
    for (i, f) in figures.iter().enumerate() {
        println!(
            "  child {i}: {} ops in {} ms, saw the generation change {} times ({} -> {})",
            f["ops"], f["ms"], f["gen_changes"], f["gen_start"], f["gen_end"]
        );
    }
    assert!(
        growths >= 10,
        "the segment grew only {growths} times while all four were attached"
    );
    for (i, f) in figures.iter().enumerate() {
        assert!(
            f["gen_changes"] >= 1 && f["gen_end"] > f["gen_start"],
            "child {i} never saw the segment grow during its run: {f:?}"
        );
    }
}

/// Kills one of four busy processes at an arbitrary moment (so it may die
/// holding a class lock, the growth lock, or in the middle of any
/// operation) and reclaims it while the other three keep working.
#[test]
fn killing_one_of_four_busy_processes_and_reclaiming_it_at_once_disturbs_no_other_process() {
    const TEST: &str =
        "killing_one_of_four_busy_processes_and_reclaiming_it_at_once_disturbs_no_other_process";
    if let Some(args) = child_args("stress") {
        return stress_child(&args);
    }
    const WORKERS: usize = 3;
    let (dir, path, slab) = small_segment("kill-under-load.shm");
    let p = path.to_str().unwrap();
    let mut reclaimed_total = 0;
    for (round, delay_ms) in [1u64, 5, 15, 30, 60].into_iter().enumerate() {
        let barrier_path = dir.path().join(format!("barrier-{round}"));
        SpinBarrier::create(&barrier_path);
        let b = barrier_path.to_str().unwrap();
        let parties = (WORKERS + 2).to_string();
        let forever = u64::MAX.to_string();
        let spawn = |ops: &str, seed: usize| {
            let seed = (round * 10 + seed).to_string();
            LiveChild::spawn(TEST, "stress", &[p, ops, &seed, b, &parties], &[])
        };
        let mut victim = spawn(&forever, 9);
        let mut workers: Vec<LiveChild> = (0..WORKERS).map(|i| spawn("100000", i)).collect();
        victim.expect("READY", MSG_TIMEOUT);
        for w in &mut workers {
            w.expect("READY", MSG_TIMEOUT);
        }
        let barrier = SpinBarrier::open(&barrier_path, WORKERS as u64 + 2);
        barrier.wait();
        std::thread::sleep(Duration::from_millis(delay_ms));
        victim.kill();
        let t_kill = Instant::now();
        let reclaimed = slab.reclaim_dead().expect("reclaim_dead while others work");
        let t_reclaim = t_kill.elapsed();
        assert_eq!(reclaimed.peers, 1, "round {round}: the victim's row");
        reclaimed_total += reclaimed.slots;
        let mut worker_ms = Vec::new();
        for w in &mut workers {
            worker_ms.push(fields(&w.expect("DONE", Duration::from_secs(120)))["ms"]);
            w.wait_success(MSG_TIMEOUT);
        }
        let t_workers = t_kill.elapsed();
        // Growth goes on, and repairs a growth the victim may have cut short.
        let start = slab.generation();
        let mut held = Vec::new();
        while slab.generation() == start {
            assert!(held.len() < 100_000, "the segment does not grow");
            held.push(
                slab.alloc_bytes(stress_size(&mut XorShift::new(held.len() as u64)))
                    .expect("alloc"),
            );
        }
        for h in held {
            slab.free(h).expect("free");
        }
        slab.trim().expect("trim");
        let report = slab.check().expect("check");
        assert!(
            report.is_consistent(),
            "round {round} (killed after {delay_ms} ms): {:#?}",
            report.findings
        );
        assert_eq!((report.live_peers, report.dead_peers), (1, 0));
        for (c, k) in report.classes.iter().enumerate() {
            assert_eq!(
                (k.allocated, k.cached, k.owned_by_dead),
                (0, 0, 0),
                "round {round} (killed after {delay_ms} ms), class {c}: {k:?}"
            );
        }
        println!(
            "round {round}: victim killed after {delay_ms} ms, {} slots reclaimed in {t_reclaim:.2?} \
             while 3 processes worked; workers done {t_workers:.2?} after the kill, ran {worker_ms:?} ms",
            reclaimed.slots
        );
    }
    assert!(reclaimed_total > 0, "the victims held slots when killed");
}

// ---------------------------------------------------------------------------
// 1b. Stress with handles crossing processes: every process frees slots
//     that another one allocated.
// ---------------------------------------------------------------------------

/// Entries per ring.
const RING_CAP: u64 = 256;
/// Words per ring entry: handle (2), pid, counter, len, spare.
const ENTRY_WORDS: usize = 6;
/// Words per ring: head, tail, done, spare, then the entries.
const RING_WORDS: usize = 8 + RING_CAP as usize * ENTRY_WORDS;

/// A single-producer single-consumer ring of slot handles (with their
/// expected stamps) in a shared test file.
struct Ring<'a> {
    words: &'a SharedWords,
    base: usize,
}

struct Sent {
    h: SlotRef,
    pid: u64,
    counter: u64,
    len: usize,
}

impl Ring<'_> {
    fn w(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        self.words.word(self.base + i)
    }

    fn push(&self, item: &Sent) -> bool {
        use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
        let t = self.w(1).load(Relaxed);
        if t - self.w(0).load(Acquire) == RING_CAP {
            return false;
        }
        let e = 8 + (t % RING_CAP) as usize * ENTRY_WORDS;
        let hw: [u64; 2] = bytemuck::cast(item.h.to_bytes());
        for (k, v) in [hw[0], hw[1], item.pid, item.counter, item.len as u64]
            .into_iter()
            .enumerate()
        {
            self.w(e + k).store(v, Relaxed);
        }
        self.w(1).store(t + 1, Release);
        true
    }

    fn pop(&self) -> Option<Sent> {
        use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
        let h = self.w(0).load(Relaxed);
        if h == self.w(1).load(Acquire) {
            return None;
        }
        let e = 8 + (h % RING_CAP) as usize * ENTRY_WORDS;
        let v: Vec<u64> = (0..5).map(|k| self.w(e + k).load(Relaxed)).collect();
        self.w(0).store(h + 1, Release);
        Some(Sent {
            h: SlotRef::from_bytes(bytemuck::cast([v[0], v[1]])),
            pid: v[2],
            counter: v[3],
            len: v[4] as usize,
        })
    }

    fn set_done(&self) {
        self.w(2).store(1, std::sync::atomic::Ordering::Release);
    }

    fn is_done(&self) -> bool {
        self.w(2).load(std::sync::atomic::Ordering::Acquire) == 1
    }
}

fn passing_child(args: &[String]) {
    let path = &args[0];
    let ops: u64 = args[1].parse().unwrap();
    let me: usize = args[2].parse().unwrap();
    let n: usize = args[3].parse().unwrap();
    let words = SharedWords::open(Path::new(&args[4]));
    let barrier = SpinBarrier::open(Path::new(&args[5]), n as u64 + 1);
    let outbox = Ring {
        words: &words,
        base: me * RING_WORDS,
    };
    let inbox = Ring {
        words: &words,
        base: ((me + n - 1) % n) * RING_WORDS,
    };
    let slab = Slab::attach(path).expect("attach");
    say("READY", "");
    barrier.wait();

    let pid = std::process::id() as u64;
    let mut rng = XorShift::new(0xface_0000 + me as u64);
    let mut held: Vec<Held> = Vec::new();
    let (mut sent, mut received, mut counter) = (0u64, 0u64, 0u64);
    let check_received = |slab: &Slab, m: &Sent| {
        verify(
            slab,
            &Held {
                h: m.h,
                len: m.len,
                counter: m.counter,
            },
            m.pid,
        );
        slab.free(m.h).unwrap_or_else(|e| {
            panic!(
                "freeing a received handle {:?} (alloc #{} of pid {}) failed: {e}",
                m.h, m.counter, m.pid
            )
        });
    };
    for _ in 0..ops {
        match rng.below(4) {
            0 | 1 => {
                let len = stress_size(&mut rng);
                let h = slab.alloc_bytes(len).expect("alloc");
                counter += 1;
                let item = Held {
                    h: h.raw(),
                    len,
                    counter,
                };
                stamp(&slab, &item, pid);
                let msg = Sent {
                    h: h.raw(),
                    pid,
                    counter,
                    len,
                };
                if outbox.push(&msg) {
                    sent += 1;
                } else if held.len() < MAX_HELD {
                    held.push(item);
                } else {
                    verify(&slab, &item, pid);
                    slab.free(h).expect("free own");
                }
            }
            2 => {
                if let Some(m) = inbox.pop() {
                    check_received(&slab, &m);
                    received += 1;
                }
            }
            _ => {
                if !held.is_empty() {
                    let item = held.swap_remove(rng.below(held.len() as u64) as usize);
                    verify(&slab, &item, pid);
                    slab.free(item.h).expect("free own");
                }
            }
        }
    }
    outbox.set_done();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = inbox.is_done();
        match inbox.pop() {
            Some(m) => {
                check_received(&slab, &m);
                received += 1;
            }
            None if done => break,
            None => {
                assert!(Instant::now() < deadline, "the sender never finished");
                std::thread::yield_now();
            }
        }
    }
    for item in held.drain(..) {
        verify(&slab, &item, pid);
        slab.free(item.h).expect("free own");
    }
    drop(slab);
    say("DONE", format!("sent={sent} received={received}"));
}

#[test]
fn handles_passed_between_four_busy_processes_are_freed_exactly_once_by_their_receivers() {
    const TEST: &str =
        "handles_passed_between_four_busy_processes_are_freed_exactly_once_by_their_receivers";
    if let Some(args) = child_args("passing") {
        return passing_child(&args);
    }
    const CHILDREN: usize = 4;
    let ops = stress_ops();
    let (dir, path, slab) = small_segment("passing.shm");
    let words_path = dir.path().join("rings");
    SharedWords::create(&words_path, CHILDREN * RING_WORDS);
    let barrier_path = dir.path().join("barrier");
    SpinBarrier::create(&barrier_path);
    let barrier = SpinBarrier::open(&barrier_path, CHILDREN as u64 + 1);
    let (p, w, b) = (
        path.to_str().unwrap(),
        words_path.to_str().unwrap(),
        barrier_path.to_str().unwrap(),
    );
    let (ops_s, n_s) = (ops.to_string(), CHILDREN.to_string());
    let mut children: Vec<LiveChild> = (0..CHILDREN)
        .map(|i| {
            let i_s = i.to_string();
            LiveChild::spawn(TEST, "passing", &[p, &ops_s, &i_s, &n_s, w, b], &[])
        })
        .collect();
    for c in &mut children {
        c.expect("READY", MSG_TIMEOUT);
    }
    let started = Instant::now();
    barrier.wait();
    let run_timeout = Duration::from_secs(60 + ops / 100);
    let figures: Vec<_> = children
        .iter_mut()
        .map(|c| fields(&c.expect("DONE", run_timeout)))
        .collect();
    for c in &mut children {
        c.wait_success(MSG_TIMEOUT);
    }
    let sent: u64 = figures.iter().map(|f| f["sent"]).sum();
    let received: u64 = figures.iter().map(|f| f["received"]).sum();
    println!(
        "handle passing: {CHILDREN} processes x {ops} ops in {:.2?}; {sent} handles sent, \
         {received} verified and freed by their receivers; generation {}",
        started.elapsed(),
        slab.generation()
    );
    assert_eq!(sent, received, "every handle sent was received and freed");
    assert!(sent > ops / 10, "few handles crossed processes");

    common::assert_every_slot_free(&slab, "at the end");
    let stats = slab.stats();
    for (c, k) in stats.classes.iter().enumerate() {
        assert_eq!((k.slots, k.in_use), (k.free, 0), "class {c}: {k:?}");
    }
}

// ---------------------------------------------------------------------------
// A generic child that executes the parent's commands one by one.
// ---------------------------------------------------------------------------

/// Commands, one per line:
/// - `ALLOC <len> <byte>`: allocate, fill `len` bytes with `byte`; replies
///   `HANDLE <hex>`;
/// - `FREE <hex>`: replies `RESULT <outcome>`;
/// - `READ <hex> <len>`: replies `READ Ok <first byte> <uniform?>` or
///   `READ <outcome>`;
/// - `EXIT`: drops the `Slab` (a clean detach) and replies `BYE`.
fn server_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    say("READY", std::process::id());
    loop {
        let line = hear();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ALLOC", len, byte] => {
                let len: usize = len.parse().unwrap();
                let byte: u8 = byte.parse().unwrap();
                let h = slab.alloc_bytes(len).expect("alloc");
                slab.write_bytes(h, 0, &vec![byte; len]).expect("write");
                say("HANDLE", handle_hex(h.raw()));
            }
            ["FREE", hex] => {
                let r = slab.free(handle_from_hex(hex));
                say("RESULT", outcome(&r));
            }
            ["READ", hex, len] => {
                let mut buf = vec![0u8; len.parse().unwrap()];
                match slab.read_bytes(common::whole(handle_from_hex(hex)), 0, &mut buf) {
                    Ok(()) => {
                        let uniform = buf.iter().all(|&b| b == buf[0]);
                        say("READ", format!("Ok {} {uniform}", buf[0]));
                    }
                    Err(e) => say("READ", common::variant(&e)),
                }
            }
            ["EXIT"] => {
                drop(slab);
                say("BYE", "");
                return;
            }
            other => panic!("unknown command {other:?}"),
        }
    }
}

fn server(test: &str, path: &Path) -> LiveChild {
    let mut c = LiveChild::spawn(test, "server", &[path.to_str().unwrap()], &[]);
    c.expect("READY", MSG_TIMEOUT);
    c
}

fn ask(child: &mut LiveChild, command: &str, reply: &str) -> String {
    child.send(command);
    child.expect(reply, MSG_TIMEOUT)
}

fn exit_server(mut child: LiveChild) {
    ask(&mut child, "EXIT", "BYE");
    child.wait_success(MSG_TIMEOUT);
}

// ---------------------------------------------------------------------------
// 2. Cross-process free.
// ---------------------------------------------------------------------------

#[test]
fn a_slot_allocated_in_one_process_is_freed_by_another_exactly_once_and_old_handles_go_stale() {
    const TEST: &str =
        "a_slot_allocated_in_one_process_is_freed_by_another_exactly_once_and_old_handles_go_stale";
    if let Some(args) = child_args("server") {
        return server_child(&args);
    }
    let (_dir, path, slab) = new_segment("cross.shm");
    let mut a = server(TEST, &path);
    let mut b = server(TEST, &path);

    // Child A allocates; its handle reaches the parent as 16 bytes.
    let h = handle_from_hex(&ask(&mut a, "ALLOC 300 7", "HANDLE"));
    let mut buf = [0u8; 300];
    slab.read_bytes(common::whole(h), 0, &mut buf)
        .expect("parent reads A's slot");
    assert!(buf.iter().all(|&b| b == 7), "the parent sees A's bytes");

    // The parent frees it: once Ok, then DoubleFree everywhere.
    assert_eq!(
        outcome(&slab.free(h)),
        "Ok",
        "the first free, in another process"
    );
    assert_eq!(
        outcome(&slab.free(h)),
        "DoubleFree",
        "the parent frees again"
    );
    assert_eq!(
        ask(&mut a, &format!("FREE {}", handle_hex(h)), "RESULT"),
        "DoubleFree"
    );
    assert_eq!(
        ask(&mut b, &format!("FREE {}", handle_hex(h)), "RESULT"),
        "DoubleFree"
    );
    assert_eq!(
        ask(&mut b, &format!("READ {} 16", handle_hex(h)), "READ"),
        "StaleHandle",
        "a freed slot cannot be read through its handle"
    );

    // The freed slot sits on top of the parent's cache, so the parent's next
    // allocation of that class reuses it with a new generation.
    let h2 = slab.alloc_bytes(300).expect("realloc");
    assert_eq!(h2.raw().parts().class, h.parts().class);
    assert_ne!(h2.raw().parts().generation, h.parts().generation);
    assert_eq!(
        outcome(&slab.free(h)),
        "StaleHandle",
        "a handle from before the reuse is stale (this proves h2 reused h's slot)"
    );
    assert_eq!(
        ask(&mut a, &format!("FREE {}", handle_hex(h)), "RESULT"),
        "StaleHandle"
    );
    assert_eq!(
        ask(&mut b, &format!("READ {} 16", handle_hex(h)), "READ"),
        "StaleHandle"
    );

    // The new life of the slot is freed by B, once.
    slab.write_bytes(h2, 0, &[9u8; 300]).expect("write h2");
    assert_eq!(
        ask(
            &mut b,
            &format!("READ {} 300", handle_hex(h2.raw())),
            "READ"
        ),
        "Ok 9 true"
    );
    assert_eq!(
        ask(&mut b, &format!("FREE {}", handle_hex(h2.raw())), "RESULT"),
        "Ok"
    );
    assert_eq!(
        ask(&mut a, &format!("FREE {}", handle_hex(h2.raw())), "RESULT"),
        "DoubleFree"
    );
    assert_eq!(outcome(&slab.free(h2)), "DoubleFree");
    assert_eq!(outcome(&slab.free(h)), "StaleHandle");

    // A handle with a made-up index names no slot.
    let mut forged = h2.raw().to_bytes();
    forged[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        ask(&mut a, &format!("FREE {}", to_hex(&forged)), "RESULT"),
        "InvalidHandle"
    );
    // B, which never allocated, holds the freed slot in its cache; its
    // clean exit returns it (the final check counts no cached slot).
    exit_server(a);
    exit_server(b);
    common::assert_every_slot_free(&slab, "at the end");
}

/// A process that frees a slot someone else allocated, and never allocates
/// itself, holds that slot in its cache; a clean detach must give it back.
/// (Regression test: this leaked before e731e76.)
#[test]
fn a_process_that_only_frees_returns_the_freed_slots_when_it_detaches() {
    const TEST: &str = "a_process_that_only_frees_returns_the_freed_slots_when_it_detaches";
    if let Some(args) = child_args("server") {
        return server_child(&args);
    }
    let (_dir, path, slab) = new_segment("free-only.shm");
    let handles: Vec<SlotRef> = (0..3)
        .map(|_| slab.alloc_bytes(100).expect("alloc").raw())
        .collect();
    slab.trim().expect("trim");
    let mut a = server(TEST, &path);
    for h in &handles {
        assert_eq!(
            ask(&mut a, &format!("FREE {}", handle_hex(*h)), "RESULT"),
            "Ok"
        );
    }
    exit_server(a);
    let report = slab.check().expect("check");
    assert!(
        report.is_consistent(),
        "after a free-only process detached: {:#?}\n{:#?}",
        report.findings,
        report.classes[1]
    );
    let k = &report.classes[1];
    assert_eq!(
        (k.allocated, k.cached),
        (0, 0),
        "the 3 slots the child freed must be back on the free list: {k:?}"
    );
    assert_eq!(slab.reclaim_dead().expect("reclaim").slots, 0);
}

// ---------------------------------------------------------------------------
// 3. Two processes racing to free the same handles.
// ---------------------------------------------------------------------------

/// Handles freed between two barrier rounds in the race.
const ROUND: usize = 8;

fn race_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let bytes = std::fs::read(&args[1]).expect("read the handle file");
    let handles: Vec<SlotRef> = bytes
        .chunks_exact(16)
        .map(|c| SlotRef::from_bytes(c.try_into().unwrap()))
        .collect();
    let mut rng = XorShift::new(args[2].parse().unwrap());
    let barrier = SpinBarrier::open(Path::new(&args[3]), 2);
    say("READY", handles.len());
    let mut codes = String::with_capacity(handles.len());
    let mut kept = Vec::new();
    for (i, h) in handles.iter().enumerate() {
        // Both processes start every round of a few handles together, so
        // they really free the same handle at the same moment.
        if i % ROUND == 0 {
            barrier.wait();
        }
        let r = slab.free(*h);
        codes.push(match &r {
            Ok(()) => 'O',
            Err(Error::DoubleFree) => 'D',
            Err(Error::StaleHandle { .. }) => 'S',
            Err(Error::InvalidHandle { .. }) => 'I',
            Err(_) => 'E',
        });
        // After a win, now and then allocate from the same class: it pops the
        // slot just freed from this process's cache and gives it a new
        // generation, so the other process's late free of the old handle
        // becomes stale rather than a double free.
        if r.is_ok() && rng.below(2) == 0 {
            let size = slab.class_sizes()[h.parts().class] as usize;
            kept.push(slab.alloc_bytes(size).expect("alloc"));
        }
    }
    say("RESULTS", &codes);
    for h in kept {
        slab.free(h).expect("free own allocation");
    }
    drop(slab);
    say("DONE", "");
}

#[test]
fn two_processes_racing_to_free_the_same_handles_free_each_exactly_once() {
    const TEST: &str = "two_processes_racing_to_free_the_same_handles_free_each_exactly_once";
    if let Some(args) = child_args("race") {
        return race_child(&args);
    }
    const N: usize = 10_000;
    let dir = segment_dir();
    let barrier_path = dir.path().join("barrier");
    SpinBarrier::create(&barrier_path);
    let b = barrier_path.to_str().unwrap();
    let path = dir.path().join("race.shm");
    let slab = Slab::builder().create(&path).expect("create");
    let sizes = [64usize, 100, 500, 2000, 9000];
    let handles: Vec<SlotRef> = (0..N)
        .map(|i| {
            slab.alloc_bytes(sizes[i % sizes.len()])
                .expect("alloc")
                .raw()
        })
        .collect();
    let file = dir.path().join("handles.bin");
    let bytes: Vec<u8> = handles.iter().flat_map(|h| h.to_bytes()).collect();
    std::fs::write(&file, bytes).expect("write handles");
    let (p, f) = (path.to_str().unwrap(), file.to_str().unwrap());
    let mut children = [
        LiveChild::spawn(TEST, "race", &[p, f, "1", b], &[]),
        LiveChild::spawn(TEST, "race", &[p, f, "2", b], &[]),
    ];
    for c in &mut children {
        c.expect("READY", MSG_TIMEOUT);
    }
    let results: Vec<Vec<u8>> = children
        .iter_mut()
        .map(|c| c.expect("RESULTS", MSG_TIMEOUT).into_bytes())
        .collect();
    for c in &mut children {
        c.expect("DONE", MSG_TIMEOUT);
        c.wait_success(MSG_TIMEOUT);
    }
    assert!(results.iter().all(|r| r.len() == N));

    // For every handle exactly one process wins; the loser sees DoubleFree if
    // the slot is still in the life the handle names (freed, in the winner's
    // cache or on the free list), or StaleHandle if the winner already
    // reused it (a new allocation bumps the slot's generation).
    let mut tally: BTreeMap<(char, char), usize> = BTreeMap::new();
    let mut wins = [0usize; 2];
    let mut bad = Vec::new();
    for i in 0..N {
        let (x, y) = (results[0][i] as char, results[1][i] as char);
        *tally.entry((x, y)).or_default() += 1;
        match (x, y) {
            ('O', 'D' | 'S') => wins[0] += 1,
            ('D' | 'S', 'O') => wins[1] += 1,
            _ => bad.push((i, handles[i], x, y)),
        }
    }
    let losers_double = tally
        .iter()
        .filter(|((x, y), _)| *x == 'D' || *y == 'D')
        .map(|(_, n)| n)
        .sum::<usize>();
    let losers_stale = tally
        .iter()
        .filter(|((x, y), _)| *x == 'S' || *y == 'S')
        .map(|(_, n)| n)
        .sum::<usize>();
    println!(
        "racing frees of {N} handles: child 1 won {}, child 2 won {}; losers saw DoubleFree {losers_double} times, StaleHandle {losers_stale} times; pairs {tally:?}",
        wins[0], wins[1]
    );
    assert!(
        bad.is_empty(),
        "{} handles were not freed exactly once (O = Ok, D = DoubleFree, S = StaleHandle): first {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    assert_eq!(wins[0] + wins[1], N);

    common::assert_every_slot_free(&slab, "at the end");
    for h in &handles {
        assert!(
            matches!(
                slab.free(*h),
                Err(Error::DoubleFree | Error::StaleHandle { .. })
            ),
            "a raced handle freed again in the parent"
        );
    }
}

// ---------------------------------------------------------------------------
// Attaching while another process grows the file.
// ---------------------------------------------------------------------------

fn grower_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let growths: u64 = args[1].parse().unwrap();
    let sizes = shmslab::limits::DEFAULT_CLASSES;
    say("READY", "");
    common::live::hear_exactly("GO");
    let start = slab.generation();
    let mut held = Vec::new();
    let mut i = 0usize;
    // Round-robin over the classes up to 64 KiB, holding everything, so
    // each class keeps running dry and the file keeps growing.
    while slab.generation() - start < growths {
        let size = sizes[i % 11] as usize;
        held.push(slab.alloc_bytes(size).expect("alloc"));
        i += 1;
    }
    for h in held {
        slab.free(h).expect("free");
    }
    drop(slab);
    say("DONE", i);
}

/// A new segment named `file` in a fresh directory, and a grower child
/// (a role of `test`) told to go and grow it 120 times.
fn segment_with_grower(test: &str, file: &str) -> (tempfile::TempDir, Slab, LiveChild) {
    let (dir, path, slab) = small_segment(file);
    let mut grower = LiveChild::spawn(test, "grower", &[path.to_str().unwrap(), "120"], &[]);
    grower.expect("READY", MSG_TIMEOUT);
    grower.send("GO");
    (dir, slab, grower)
}

/// Calls `each` over and over until the grower says DONE (within two
/// minutes), then waits for it to exit cleanly.
fn repeat_while_growing(grower: &mut LiveChild, mut each: impl FnMut()) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        each();
        if let Some(m) = grower.next_message(Duration::ZERO) {
            assert_eq!(m.key, "DONE", "{}", grower.transcript());
            break;
        }
        assert!(Instant::now() < deadline, "the grower did not finish");
    }
    grower.wait_success(MSG_TIMEOUT);
}

#[test]
fn attaching_while_another_process_grows_the_file_succeeds() {
    const TEST: &str = "attaching_while_another_process_grows_the_file_succeeds";
    if let Some(args) = child_args("grower") {
        return grower_child(&args);
    }
    let (dir, slab, mut grower) = segment_with_grower(TEST, "attach-during-growth.shm");
    let path = dir.path().join("attach-during-growth.shm");
    let (mut attaches, mut failures) = (0usize, Vec::new());
    repeat_while_growing(&mut grower, || {
        match Slab::attach(&path) {
            Ok(s) => drop(s),
            Err(e) => failures.push(format!("generation {}: {e}", slab.generation())),
        }
        attaches += 1;
    });
    println!(
        "{attaches} attaches during {} growths, {} failed",
        slab.generation(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {attaches} attaches made while another process grew the file failed; first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let report = slab.check().expect("check");
    assert!(report.is_consistent(), "{:#?}", report.findings);
}

#[test]
fn check_while_another_process_grows_reports_no_false_problems() {
    const TEST: &str = "check_while_another_process_grows_reports_no_false_problems";
    if let Some(args) = child_args("grower") {
        return grower_child(&args);
    }
    let (_dir, slab, mut grower) = segment_with_grower(TEST, "check-during-growth.shm");
    let (mut checks, mut in_progress, mut problems) = (0usize, 0usize, Vec::new());
    repeat_while_growing(&mut grower, || {
        let report = slab.check().expect("check");
        checks += 1;
        for f in report.findings {
            // An honest growth in progress is reported as such; that is
            // expected while another process grows.
            if f.location == "growth journal" {
                in_progress += 1;
            } else {
                problems.push(format!("generation {}: {f}", slab.generation()));
            }
        }
    });
    println!(
        "{checks} checks during {} growths: {in_progress} saw a growth in progress, {} reported other problems",
        slab.generation(),
        problems.len()
    );
    assert!(
        problems.is_empty(),
        "{} of {checks} checks made while another process grew the file reported problems; first: {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
}
