//! Processes that cooperate, for real: shared atomics, locked values,
//! notifiers and race-free roots used by several processes at once, and by
//! processes killed with SIGKILL at awkward moments.
//!
//! Every test re-runs this test binary as child processes (see
//! `tests/common`); a child plays the role named in its environment and
//! talks to the parent over its stdin and stdout, while the real traffic
//! goes through the segment.
//!
//! Sizes (debug / release, and the variable that overrides them):
//!
//! - `SHMSLAB_COOP_OPS`: `fetch_add`s per process, 100,000 / 1,000,000;
//! - `SHMSLAB_COOP_LOCKED_OPS`: `transact`s per process, 10,000 / 100,000;
//! - `SHMSLAB_COOP_FAIR_MS`: the fairness run, 500 / 2,000 ms;
//! - `SHMSLAB_COOP_CHAIN_ROUNDS`: rounds of the dying-holders chain, 200.
//!
//! Section 8 holds the regression tests of two library bugs this suite
//! found (both fixed in `lock::acquire_cell`).
//!
//! The tests of this file run one at a time (a lock in the parent): the
//! latency, CPU-use and fairness figures mean nothing with another test's
//! four busy processes on the same two cores.
//!
//! Some tests look at a locked value's words directly, through an atomic
//! view over the slot (word 0 `LOCK`: the holder's token or 0; word 2
//! `STATE`: the commit sequence; the layout documented in `pool::cell` and
//! docs/FORMAT.md), to know whether a killed child died holding the lock
//! and how many commits were made.

mod common;

use common::child_args;
use common::live::{LiveChild, SpinBarrier, XorShift, from_hex, hear, new_segment, say, to_hex};
use shmslab::bytemuck::{Pod, Zeroable};
use shmslab::{Handle, Locked, NotifierHandle, Schema, Slab, SlotRef};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bound on any single wait for a child's message or exit.
const MSG_TIMEOUT: Duration = Duration::from_secs(60);

/// One test of this file at a time (see the module doc).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `var` if set, else `release` in a release build and `debug` in a debug one.
fn sized(var: &str, release: u64, debug: u64) -> u64 {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a number")),
        Err(_) if cfg!(debug_assertions) => debug,
        Err(_) => release,
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the
/// machine, so one process can time-stamp and another compare.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Parses `key=value` pairs of a message payload.
fn fields(payload: &str) -> BTreeMap<String, u64> {
    payload
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a number")))
        .collect()
}

fn hex(raw: SlotRef) -> String {
    to_hex(&raw.to_bytes())
}

fn unhex(s: &str) -> SlotRef {
    SlotRef::from_bytes(from_hex::<16>(s))
}

/// Sorted copy's `q`-quantile (0.0 ..= 1.0).
fn quantile(sorted: &[u64], q: f64) -> u64 {
    assert!(!sorted.is_empty());
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

// ---------------------------------------------------------------------------
// Shared types.
// ---------------------------------------------------------------------------

/// The shared counter of the `fetch_add` test.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Counter {
    hits: u64,
    /// Processes that finished their share.
    finished: u64,
}
impl Schema for Counter {}

shmslab::atomic_fields! {
    /// `Counter`, field by field atomic.
    struct CounterAtomics for Counter { hits, finished }
}

/// Words the processes of one test coordinate with (each test uses the
/// fields it needs), kept in the segment as a root and used through its
/// atomic view.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Board {
    /// Set by the parent: go.
    start: u64,
    /// Set by the parent: stop.
    stop: u64,
    /// A child's progress: the round it is ready for.
    ready: u64,
    /// CLOCK_MONOTONIC of a notify, in nanoseconds.
    stamp: u64,
    /// Whose turn it is (ping-pong): the number of moves so far.
    turn: u64,
}
impl Schema for Board {}

shmslab::atomic_fields! {
    /// `Board`, field by field atomic.
    struct BoardAtomics for Board { start, stop, ready, stamp, turn }
}

/// The 64-byte value of the locked tests: eight `u64`s.
type Eight = [u64; 8];

/// The header words of a locked value's slot (see the module doc).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
#[allow(dead_code)] // only the atomic view is used
struct CellHeader {
    lock: u64,
    progress: u64,
    state: u64,
    next: u64,
    parked: u64,
    watchers: u64,
}

shmslab::atomic_fields! {
    /// `CellHeader`, atomic.
    #[allow(dead_code)] // the test reads `lock` and `state`
    struct CellHeaderAtomics for CellHeader { lock, progress, state, next, parked, watchers }
}

/// The header words of the locked value `h`'s slot.
fn cell_header<T>(slab: &Slab, h: Locked<T>) -> &CellHeaderAtomics {
    slab.atomic(Handle::<CellHeader>::from_raw(h.raw()))
        .expect("an atomic view of the locked value's header")
}

fn board(slab: &Slab) -> &BoardAtomics {
    let h = slab
        .root_or_insert("board", Board::default())
        .expect("board root");
    slab.atomic(h).expect("board view")
}

/// Polls `cond` (sleeping `nap` between looks) for at most `timeout`.
fn poll(timeout: Duration, nap: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(nap);
    }
}

/// A child's process state letter and utime + stime (clock ticks), from
/// `/proc/<pid>/stat` (fields 3, 14 and 15).
fn proc_cpu(pid: u32) -> (char, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("a comm field") + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `f[0]` is field 3 (state), so field n is `f[n - 3]`.
    let state = f[0].chars().next().expect("a state letter");
    let utime: u64 = f[14 - 3].parse().expect("utime");
    let stime: u64 = f[15 - 3].parse().expect("stime");
    (state, utime + stime)
}

// ---------------------------------------------------------------------------
// 1. Shared atomics: 4 processes × N fetch_add on one counter.
// ---------------------------------------------------------------------------

fn adder_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let barrier = SpinBarrier::open(Path::new(&args[1]), 4);
    let n: u64 = args[2].parse().unwrap();
    let h = slab
        .root_or_insert("counter", Counter::default())
        .expect("root");
    let view = slab.atomic(h).expect("view");
    say("READY", std::process::id());
    barrier.wait();
    let started = Instant::now();
    for _ in 0..n {
        view.hits.fetch_add(1, Relaxed);
    }
    view.finished.fetch_add(1, SeqCst);
    say("DONE", format!("ms={}", started.elapsed().as_millis()));
}

/// The first acceptance test: no `fetch_add` through an atomic view
/// is lost when four processes hammer one counter at once.
#[test]
fn four_processes_fetch_add_on_one_shared_counter_lose_no_update() {
    if let Some(args) = child_args("adder") {
        return adder_child(&args);
    }
    let _serial = serial();
    let n = sized("SHMSLAB_COOP_OPS", 1_000_000, 100_000);
    let (dir, path, slab) = new_segment("counter");
    let barrier = dir.path().join("barrier");
    SpinBarrier::create(&barrier);
    let h = slab
        .root_or_insert("counter", Counter::default())
        .expect("root");
    let view = slab.atomic(h).expect("view");
    let started = Instant::now();
    let mut children: Vec<LiveChild> = (0..4)
        .map(|_| {
            LiveChild::spawn(
                "four_processes_fetch_add_on_one_shared_counter_lose_no_update",
                "adder",
                &[
                    path.to_str().unwrap(),
                    barrier.to_str().unwrap(),
                    &n.to_string(),
                ],
                &[],
            )
        })
        .collect();
    for c in &mut children {
        c.expect("READY", MSG_TIMEOUT);
    }
    // While they add: copies of the value (the copy path racing the atomic
    // one) never go backwards and never pass the total.
    let (mut last, mut reads) = (0u64, 0u64);
    while view.finished.load(SeqCst) < 4 && started.elapsed() < MSG_TIMEOUT {
        let now = slab.read(h).expect("read").hits;
        assert!(
            now >= last && now <= 4 * n,
            "read {now} after {last} (total {})",
            4 * n
        );
        last = now;
        reads += 1;
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut ms = Vec::new();
    for c in &mut children {
        ms.push(fields(&c.expect("DONE", MSG_TIMEOUT))["ms"]);
        c.wait_success(MSG_TIMEOUT);
    }
    let total = slab.read(h).expect("read").hits;
    println!(
        "4 x {n} fetch_add: total {total}, children took {ms:?} ms, {reads} racing reads, {:?} in all",
        started.elapsed()
    );
    assert_eq!(total, 4 * n, "updates were lost (or doubled)");
    assert_eq!(view.hits.load(SeqCst), 4 * n);
    assert_eq!(view.finished.load(SeqCst), 4);
}

// ---------------------------------------------------------------------------
// 2. Locked values: 4 processes × M transacts of a 64-byte struct.
// ---------------------------------------------------------------------------

fn locker_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let barrier = SpinBarrier::open(Path::new(&args[1]), 4);
    let m: u64 = args[2].parse().unwrap();
    let h = slab
        .root_or_insert_locked::<Eight>("eight", [0; 8])
        .expect("root");
    say("READY", std::process::id());
    barrier.wait();
    let started = Instant::now();
    let mut torn = 0u64;
    for _ in 0..m {
        slab.transact(h, |v| {
            if v.iter().any(|&f| f != v[0]) {
                torn += 1;
            }
            for f in v.iter_mut() {
                *f += 1;
            }
        })
        .expect("transact");
    }
    say(
        "DONE",
        format!("ms={} torn={torn}", started.elapsed().as_millis()),
    );
}

/// The second acceptance test: every field of a 64-byte struct
/// changed under the lock by four processes at once ends exact, and no
/// holder or lock-free reader ever sees the fields disagree.
#[test]
fn four_processes_transact_on_one_locked_struct_and_every_field_is_exact() {
    if let Some(args) = child_args("locker") {
        return locker_child(&args);
    }
    let _serial = serial();
    let m = sized("SHMSLAB_COOP_LOCKED_OPS", 100_000, 10_000);
    let (dir, path, slab) = new_segment("locked");
    let barrier = dir.path().join("barrier");
    SpinBarrier::create(&barrier);
    let h = slab
        .root_or_insert_locked::<Eight>("eight", [0; 8])
        .expect("root");
    let started = Instant::now();
    let mut children: Vec<LiveChild> = (0..4)
        .map(|_| {
            LiveChild::spawn(
                "four_processes_transact_on_one_locked_struct_and_every_field_is_exact",
                "locker",
                &[
                    path.to_str().unwrap(),
                    barrier.to_str().unwrap(),
                    &m.to_string(),
                ],
                &[],
            )
        })
        .collect();
    for c in &mut children {
        c.expect("READY", MSG_TIMEOUT);
    }
    // Lock-free reads while they commit: never torn, never backwards.
    let (mut last, mut reads) = (0u64, 0u64);
    while last < 4 * m && started.elapsed() < MSG_TIMEOUT {
        let v = slab.read_locked(h).expect("read_locked");
        assert!(
            v.iter().all(|&f| f == v[0]),
            "read_locked returned a torn value {v:?}"
        );
        assert!(v[0] >= last, "read_locked went back from {last} to {v:?}");
        last = v[0];
        reads += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut ms = Vec::new();
    for c in &mut children {
        let done = fields(&c.expect("DONE", MSG_TIMEOUT));
        assert_eq!(done["torn"], 0, "a holder saw a torn value");
        ms.push(done["ms"]);
        c.wait_success(MSG_TIMEOUT);
    }
    let v = slab.read_locked(h).expect("read_locked");
    println!(
        "4 x {m} transacts: {v:?}, children took {ms:?} ms, {reads} racing reads, {:?} in all",
        started.elapsed()
    );
    assert_eq!(v, [4 * m; 8], "updates under the lock were lost");
    let g = slab.lock(h).expect("lock");
    assert_eq!(*g, [4 * m; 8]);
    assert!(!g.previous_holder_died(), "every child let go cleanly");
    drop(g);
    assert_eq!(
        cell_header(&slab, h).state.load(SeqCst),
        4 * m,
        "one commit per transact"
    );
}

// ---------------------------------------------------------------------------
// 3. Notifiers across processes.
// ---------------------------------------------------------------------------

/// (a) A child parks in `wait`; the parent notifies when told.
fn parker_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let bell = slab.root_or_insert_notifier("bell").expect("bell");
    let n = slab.notifier(bell).expect("notifier");
    let ticket = n.ticket();
    say("PARKING", std::process::id());
    let woke = n.wait_since(ticket, Some(Duration::from_secs(30)));
    say("WOKE", format!("notified={}", woke as u64));
}

/// (a) A waiter parked in `wait` uses no CPU: its utime + stime stay flat
/// over a second of waiting; and it wakes when notified.
#[test]
fn a_process_parked_on_a_notifier_uses_no_cpu() {
    if let Some(args) = child_args("parker") {
        return parker_child(&args);
    }
    let _serial = serial();
    let (_dir, path, slab) = new_segment("park");
    let bell = slab.root_or_insert_notifier("bell").expect("bell");
    let mut child = LiveChild::spawn(
        "a_process_parked_on_a_notifier_uses_no_cpu",
        "parker",
        &[path.to_str().unwrap()],
        &[],
    );
    child.expect("PARKING", MSG_TIMEOUT);
    let pid = child.pid();
    // Let it reach the kernel (and the harness's start-up work settle).
    until_asleep(&child);
    std::thread::sleep(Duration::from_millis(100));
    let (state0, cpu0) = proc_cpu(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1100));
    let (state1, cpu1) = proc_cpu(pid);
    let waited = t0.elapsed();
    assert!(all_asleep(pid), "a thread of the waiter is awake");
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    println!(
        "parked child {pid}: utime+stime {cpu0} -> {cpu1} ticks ({hz} Hz) over {waited:?}, \
         state {state0} -> {state1}"
    );
    assert_eq!((state0, state1), ('S', 'S'), "the waiter is not asleep");
    assert!(
        cpu1 - cpu0 <= 2,
        "a parked waiter used {} ticks of CPU in {waited:?}",
        cpu1 - cpu0
    );
    slab.notifier(bell).expect("notifier").notify_all();
    let woke = fields(&child.expect("WOKE", Duration::from_secs(5)));
    assert_eq!(woke["notified"], 1, "the wait timed out instead");
    child.wait_success(MSG_TIMEOUT);
}

/// (b) The child of the latency test: `rounds` waits, each announced in
/// `board.ready` after its ticket is taken; the wake-up latency of each is
/// now minus the parent's stamp.
fn latency_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let rounds: u64 = args[1].parse().unwrap();
    let bell = slab.root_or_insert_notifier("bell").expect("bell");
    let n = slab.notifier(bell).expect("notifier");
    let b = board(&slab);
    say("READY", std::process::id());
    let mut lat = Vec::new();
    let mut timeouts = 0;
    for r in 1..=rounds {
        let ticket = n.ticket();
        b.ready.store(r, SeqCst);
        if !n.wait_since(ticket, Some(Duration::from_secs(5))) {
            timeouts += 1;
        }
        let now = mono_ns();
        lat.push(now.saturating_sub(b.stamp.load(SeqCst)));
    }
    let lat: Vec<String> = lat.iter().map(u64::to_string).collect();
    say("LAT", lat.join(","));
    say("DONE", format!("timeouts={timeouts}"));
}

/// (b) A waiter in another process wakes within a millisecond of the
/// notify: the median of 100 wake-ups is under 1 ms (the median, so a
/// loaded machine's occasional slow wake-up does not fail it).
#[test]
fn a_parked_process_wakes_within_a_millisecond_of_a_notify() {
    if let Some(args) = child_args("latency") {
        return latency_child(&args);
    }
    let _serial = serial();
    let rounds = 100u64;
    let (_dir, path, slab) = new_segment("latency");
    let bell = slab.root_or_insert_notifier("bell").expect("bell");
    let n = slab.notifier(bell).expect("notifier");
    let b = board(&slab);
    let mut child = LiveChild::spawn(
        "a_parked_process_wakes_within_a_millisecond_of_a_notify",
        "latency",
        &[path.to_str().unwrap(), &rounds.to_string()],
        &[],
    );
    child.expect("READY", MSG_TIMEOUT);
    for r in 1..=rounds {
        assert!(
            poll(Duration::from_secs(10), Duration::from_micros(50), || b
                .ready
                .load(SeqCst)
                >= r),
            "the child never got ready for round {r}\n{}",
            child.transcript()
        );
        // Time to get into the kernel: the wake-up measured is a parked one.
        std::thread::sleep(Duration::from_millis(2));
        b.stamp.store(mono_ns(), SeqCst);
        n.notify_one();
    }
    let mut lat: Vec<u64> = child
        .expect("LAT", MSG_TIMEOUT)
        .split(',')
        .map(|s| s.parse().expect("a latency"))
        .collect();
    let done = fields(&child.expect("DONE", MSG_TIMEOUT));
    child.wait_success(MSG_TIMEOUT);
    lat.sort_unstable();
    let (p50, p99, max) = (
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        lat[lat.len() - 1],
    );
    println!(
        "wake latency over {rounds} rounds: p50 {} us, p99 {} us, max {} us",
        p50 / 1000,
        p99 / 1000,
        max / 1000
    );
    assert_eq!(done["timeouts"], 0, "a notified waiter timed out");
    assert_eq!(lat.len() as u64, rounds);
    assert!(
        p50 < 1_000_000,
        "median wake-up latency {p50} ns is over 1 ms"
    );
}

/// (c) One side of the ping-pong: moves when `turn` has its parity, then
/// notifies the other side; waits on its own notifier with a ticket taken
/// before it looks at `turn`. Returns (timeouts, slowest wait, waits).
fn ping_pong_side(
    slab: &Slab,
    mine: NotifierHandle,
    theirs: NotifierHandle,
    first: u64,
    moves: u64,
) -> (u64, Duration, u64) {
    let me = slab.notifier(mine).expect("my notifier");
    let other = slab.notifier(theirs).expect("their notifier");
    let turn = &board(slab).turn;
    let (mut timeouts, mut slowest, mut waits) = (0u64, Duration::ZERO, 0u64);
    let mut next = first;
    while next < moves {
        let ticket = me.ticket();
        let now = turn.load(SeqCst);
        if now == next {
            turn.store(now + 1, SeqCst);
            other.notify_one();
            next += 2;
            continue;
        }
        assert!(now < next, "turn {now} passed this side's move {next}");
        let t = Instant::now();
        let notified = me.wait_since(ticket, Some(Duration::from_secs(5)));
        slowest = slowest.max(t.elapsed());
        waits += 1;
        if !notified {
            timeouts += 1;
            if timeouts >= 3 {
                break; // lost wake-ups: no need to wait out every one
            }
        }
    }
    (timeouts, slowest, waits)
}

/// (c) The same side written with `Notifier::wait_until` (the
/// ticket-before-check loop inside the library).
fn ping_pong_until_side(
    slab: &Slab,
    mine: NotifierHandle,
    theirs: NotifierHandle,
    first: u64,
    moves: u64,
) -> (u64, Duration, u64) {
    let me = slab.notifier(mine).expect("my notifier");
    let other = slab.notifier(theirs).expect("their notifier");
    let turn = &board(slab).turn;
    let (mut timeouts, mut slowest, mut waits) = (0u64, Duration::ZERO, 0u64);
    let mut next = first;
    while next < moves {
        let t = Instant::now();
        let mine_now = me.wait_until(Some(Duration::from_secs(5)), || turn.load(SeqCst) == next);
        slowest = slowest.max(t.elapsed());
        waits += 1;
        if !mine_now {
            timeouts += 1;
            if timeouts >= 3 {
                break;
            }
            continue;
        }
        turn.store(next + 1, SeqCst);
        other.notify_one();
        next += 2;
    }
    (timeouts, slowest, waits)
}

fn pong_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let moves: u64 = args[1].parse().unwrap();
    let ping = slab.root_or_insert_notifier("ping").expect("ping");
    let pong = slab.root_or_insert_notifier("pong").expect("pong");
    say("READY", std::process::id());
    let (timeouts, slowest, waits) = ping_pong_until_side(&slab, pong, ping, 1, moves);
    say(
        "DONE",
        format!(
            "timeouts={timeouts} slowest_us={} waits={waits}",
            slowest.as_micros()
        ),
    );
}

/// (c) 10,000 round trips of notify and wait between two processes lose no
/// wake-up: no wait times out, none takes as long as the notifier's
/// one-second re-check (which would hide a lost futex wake), and the count
/// of moves is exact.
#[test]
fn ten_thousand_ping_pongs_between_two_processes_lose_no_wake_up() {
    if let Some(args) = child_args("pong") {
        return pong_child(&args);
    }
    let _serial = serial();
    let rounds = 10_000u64;
    let moves = 2 * rounds;
    let (_dir, path, slab) = new_segment("pingpong");
    let ping = slab.root_or_insert_notifier("ping").expect("ping");
    let pong = slab.root_or_insert_notifier("pong").expect("pong");
    let turn = &board(&slab).turn;
    let mut child = LiveChild::spawn(
        "ten_thousand_ping_pongs_between_two_processes_lose_no_wake_up",
        "pong",
        &[path.to_str().unwrap(), &moves.to_string()],
        &[],
    );
    child.expect("READY", MSG_TIMEOUT);
    let started = Instant::now();
    let (timeouts, slowest, waits) = ping_pong_side(&slab, ping, pong, 0, moves);
    let theirs = fields(&child.expect("DONE", MSG_TIMEOUT));
    child.wait_success(MSG_TIMEOUT);
    let took = started.elapsed();
    println!(
        "{rounds} ping-pongs in {took:?} ({:.1} us per round trip): parent waited {waits} times \
         (slowest {slowest:?}), child {} times (slowest {} us)",
        took.as_secs_f64() * 1e6 / rounds as f64,
        theirs["waits"],
        theirs["slowest_us"]
    );
    assert_eq!(
        (timeouts, theirs["timeouts"]),
        (0, 0),
        "waits timed out (parent, child)"
    );
    assert_eq!(turn.load(SeqCst), moves, "moves were lost");
    let limit = Duration::from_millis(900);
    assert!(
        slowest < limit && theirs["slowest_us"] < limit.as_micros() as u64,
        "a wait took about the notifier's 1 s re-check: a lost futex wake"
    );
}

/// (d) A waiter that reports each park and wake; `rounds` waits, then exits.
fn waiter_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let rounds: u64 = args[1].parse().unwrap();
    let bell = slab.root_or_insert_notifier("bell").expect("bell");
    let n = slab.notifier(bell).expect("notifier");
    for r in 0..rounds {
        let ticket = n.ticket();
        say("PARKED", r);
        let woke = n.wait_since(ticket, Some(Duration::from_secs(10)));
        say("WOKE", format!("round={r} notified={}", woke as u64));
    }
}

/// Whether every thread of process `pid` is in interruptible sleep ('S':
/// parked on a futex, for a child that waits on a notifier).
fn all_asleep(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            stat[stat.rfind(')').map_or(0, |i| i + 1)..]
                .split_whitespace()
                .next()
                == Some("S")
        })
    })
}

/// Waits until every thread of the child is asleep (in the kernel).
fn until_asleep(child: &LiveChild) {
    let pid = child.pid();
    assert!(
        poll(Duration::from_secs(5), Duration::from_millis(1), || {
            all_asleep(pid)
        }),
        "child {pid} never went to sleep\n{}",
        child.transcript()
    );
}

/// (d) A waiter killed with SIGKILL while parked disturbs nobody: of two
/// parked waiters one is killed, `notify_all` wakes the other at once, and
/// later `notify_one`s (with the dead waiter still counted as parked) still
/// wake it every time, as they do a waiter that arrives afterwards.
#[test]
fn a_waiter_killed_while_parked_does_not_disturb_the_others() {
    if let Some(args) = child_args("waiter") {
        return waiter_child(&args);
    }
    let _serial = serial();
    const LATER: u64 = 20;
    let name = "a_waiter_killed_while_parked_does_not_disturb_the_others";
    let (_dir, path, slab) = new_segment("killed-waiter");
    let bell = slab.root_or_insert_notifier("bell").expect("bell");
    let n = slab.notifier(bell).expect("notifier");
    let p = path.to_str().unwrap();
    let mut victim = LiveChild::spawn(name, "waiter", &[p, "1000"], &[]);
    let mut survivor = LiveChild::spawn(name, "waiter", &[p, &(1 + LATER).to_string()], &[]);
    victim.expect("PARKED", MSG_TIMEOUT);
    survivor.expect("PARKED", MSG_TIMEOUT);
    until_asleep(&victim);
    until_asleep(&survivor);
    std::thread::sleep(Duration::from_millis(20));
    let status = victim.kill();
    println!("victim: {}", common::status_text(&status));

    let t = Instant::now();
    n.notify_all();
    let woke = fields(&survivor.expect("WOKE", Duration::from_secs(5)));
    let first = t.elapsed();
    assert_eq!(
        (woke["round"], woke["notified"]),
        (0, 1),
        "the survivor's first wait"
    );

    // The last round: a newcomer parked beside the survivor, for one
    // notify_all.
    let mut newcomer = None;
    let mut slowest = Duration::ZERO;
    for r in 1..=LATER {
        assert_eq!(survivor.expect("PARKED", MSG_TIMEOUT), r.to_string());
        until_asleep(&survivor);
        if r == LATER {
            let mut c = LiveChild::spawn(name, "waiter", &[p, "1"], &[]);
            c.expect("PARKED", MSG_TIMEOUT);
            until_asleep(&c);
            newcomer = Some(c);
        }
        std::thread::sleep(Duration::from_millis(2));
        let t = Instant::now();
        if let Some(c) = newcomer.as_mut() {
            n.notify_all();
            let w = fields(&c.expect("WOKE", Duration::from_secs(5)));
            assert_eq!(w["notified"], 1, "the newcomer timed out");
        } else {
            n.notify_one();
        }
        let w = fields(&survivor.expect("WOKE", Duration::from_secs(5)));
        slowest = slowest.max(t.elapsed());
        assert_eq!((w["round"], w["notified"]), (r, 1), "round {r}");
    }
    survivor.wait_success(MSG_TIMEOUT);
    newcomer.expect("the last round").wait_success(MSG_TIMEOUT);
    println!(
        "after the kill: first wake-up {first:?}, {LATER} later ones at most {slowest:?} \
         (message round trip included)"
    );
    // Each wake-up came from its notify, not from the 1 s re-check.
    assert!(
        first < Duration::from_millis(500),
        "first wake-up {first:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "slowest later wake-up {slowest:?}"
    );
}

// ---------------------------------------------------------------------------
// 4. Fairness of a locked value's lock.
// ---------------------------------------------------------------------------

fn hammer_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let me: usize = args[1].parse().unwrap();
    let h = slab
        .root_or_insert_locked::<Eight>("eight", [0; 8])
        .expect("root");
    let b = board(&slab);
    say("READY", std::process::id());
    assert!(
        poll(MSG_TIMEOUT, Duration::from_micros(100), || b
            .start
            .load(SeqCst)
            != 0),
        "no start"
    );
    let mut done = 0u64;
    while b.stop.load(Relaxed) == 0 {
        slab.transact(h, |v| v[me] += 1).expect("transact");
        done += 1;
    }
    say("DONE", format!("ops={done}"));
}

/// Three processes hammering one lock for 2 s (0.5 s in debug) each get a
/// share within 3× of the others': the lock lets a starving waiter go
/// next.
#[test]
fn three_processes_hammering_one_lock_each_get_a_fair_share() {
    if let Some(args) = child_args("hammer") {
        return hammer_child(&args);
    }
    let _serial = serial();
    let ms = sized("SHMSLAB_COOP_FAIR_MS", 2000, 500);
    let (_dir, path, slab) = new_segment("fair");
    let h = slab
        .root_or_insert_locked::<Eight>("eight", [0; 8])
        .expect("root");
    let b = board(&slab);
    let mut children: Vec<LiveChild> = (0..3)
        .map(|i| {
            LiveChild::spawn(
                "three_processes_hammering_one_lock_each_get_a_fair_share",
                "hammer",
                &[path.to_str().unwrap(), &i.to_string()],
                &[],
            )
        })
        .collect();
    for c in &mut children {
        c.expect("READY", MSG_TIMEOUT);
    }
    b.start.store(1, SeqCst);
    std::thread::sleep(Duration::from_millis(ms));
    b.stop.store(1, SeqCst);
    let mut shares = Vec::new();
    for c in &mut children {
        shares.push(fields(&c.expect("DONE", MSG_TIMEOUT))["ops"]);
        c.wait_success(MSG_TIMEOUT);
    }
    let v = slab.read_locked(h).expect("read_locked");
    let (min, max) = (*shares.iter().min().unwrap(), *shares.iter().max().unwrap());
    println!(
        "3 processes x {ms} ms on one lock: shares {shares:?} (max/min {:.2})",
        max as f64 / min.max(1) as f64
    );
    assert_eq!(
        &v[..3],
        &shares[..],
        "the counters disagree with the children"
    );
    assert_eq!(&v[3..], &[0; 5]);
    assert!(min > 0, "a process never got the lock: {shares:?}");
    assert!(min * 3 >= max, "unfair shares {shares:?}");
}

// ---------------------------------------------------------------------------
// 5. Holders killed with SIGKILL.
// ---------------------------------------------------------------------------

/// Takes the lock, optionally commits all-twos, writes 99 into half the
/// fields without committing, reports, and waits holding the guard.
fn half_writer_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let commit_first = args[1] == "commit";
    let h = slab
        .root_locked::<Eight>("eight")
        .expect("root")
        .expect("the parent made it");
    let mut g = slab.lock(h).expect("lock");
    if commit_first {
        *g = [2; 8];
        g.commit();
    }
    for f in &mut g[..4] {
        *f = 99;
    }
    say("HOLDING", format!("{:?}", *g));
    let _ = hear(); // until killed
    drop(g);
}

/// A child killed holding a guard it half wrote leaves the last committed
/// value, and the next taker is told the previous holder died; a commit the
/// child made before (keeping the lock) is kept.
#[test]
fn a_holder_killed_mid_write_leaves_the_last_committed_value() {
    if let Some(args) = child_args("half-writer") {
        return half_writer_child(&args);
    }
    let _serial = serial();
    let (_dir, path, slab) = new_segment("half");
    let h = slab
        .root_or_insert_locked::<Eight>("eight", [1; 8])
        .expect("root");
    for (mode, want) in [("nocommit", [1u64; 8]), ("commit", [2; 8])] {
        let mut child = LiveChild::spawn(
            "a_holder_killed_mid_write_leaves_the_last_committed_value",
            "half-writer",
            &[path.to_str().unwrap(), mode],
            &[],
        );
        child.expect("HOLDING", MSG_TIMEOUT);
        // Held by a live process: not to be had, but readable.
        assert!(slab.try_lock(h).expect("try_lock").is_none(), "{mode}");
        assert!(
            slab.lock_timeout(h, Duration::from_millis(50))
                .expect("lock_timeout")
                .is_none(),
            "{mode}: took a live holder's lock"
        );
        assert_eq!(slab.read_locked(h).expect("read_locked"), want, "{mode}");
        child.kill();
        let t = Instant::now();
        let g = slab
            .lock_timeout(h, Duration::from_secs(10))
            .expect("lock after the kill")
            .unwrap_or_else(|| panic!("{mode}: the dead holder's lock was not taken over"));
        let took = t.elapsed();
        assert!(g.previous_holder_died(), "{mode}: not told of the death");
        assert_eq!(*g, want, "{mode}: not the last committed value");
        drop(g);
        println!("{mode}: the dead holder's lock taken over in {took:?}");
        let g = slab.lock(h).expect("lock");
        assert!(!g.previous_holder_died(), "{mode}: told twice");
        assert_eq!(*g, want);
    }
    slab.reclaim_dead().expect("reclaim");
    let report = slab.check().expect("check");
    assert!(report.is_consistent(), "{:?}", report.findings);
}

fn transactor_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let h = slab
        .root_locked::<Eight>("eight")
        .expect("root")
        .expect("the parent made it");
    say("LOOPING", std::process::id());
    loop {
        slab.transact(h, |v| {
            assert!(v.iter().all(|&f| f == v[0]), "torn value {v:?}");
            for f in v.iter_mut() {
                *f += 1;
            }
        })
        .expect("transact");
    }
}

/// A child in a tight `transact` loop killed at a random moment, 20 times:
/// the value is always a committed one (eight equal fields, one commit per
/// increment), and the next lock says the previous holder died exactly
/// when the child died holding the lock. Every other death is reclaimed
/// before the lock (the row gone) and the rest after (the kernel asked).
#[test]
fn a_holder_killed_at_random_in_a_transact_loop_never_leaves_a_torn_value() {
    if let Some(args) = child_args("transactor") {
        return transactor_child(&args);
    }
    let _serial = serial();
    let (_dir, path, slab) = new_segment("random-kill");
    let h = slab
        .root_or_insert_locked::<Eight>("eight", [0; 8])
        .expect("root");
    let header = cell_header(&slab, h);
    let seed = mono_ns();
    let mut rng = XorShift::new(seed);
    let (mut last, mut held_deaths) = (0u64, 0u32);
    let mut took = Duration::ZERO;
    for i in 0..20 {
        let mut child = LiveChild::spawn(
            "a_holder_killed_at_random_in_a_transact_loop_never_leaves_a_torn_value",
            "transactor",
            &[path.to_str().unwrap()],
            &[],
        );
        child.expect("LOOPING", MSG_TIMEOUT);
        std::thread::sleep(Duration::from_micros(500 + rng.below(20_000)));
        child.kill();
        let held = header.lock.load(SeqCst) != 0;
        let commits = header.state.load(SeqCst);
        if i % 2 == 1 {
            // This child's row, and the last round's (left for the kernel).
            let r = slab.reclaim_dead().expect("reclaim");
            assert_eq!(r.peers, 2, "round {i}: {r:?}");
        }
        let v = slab.read_locked(h).expect("read_locked");
        let t = Instant::now();
        let g = slab
            .lock_timeout(h, Duration::from_secs(10))
            .expect("lock")
            .unwrap_or_else(|| panic!("round {i} (seed {seed}): the lock was not taken over"));
        took = took.max(t.elapsed());
        assert!(
            g.iter().all(|&f| f == g[0]),
            "round {i} (seed {seed}): torn value {:?}",
            *g
        );
        assert_eq!(*g, v, "round {i}: read_locked and lock disagree");
        assert_eq!(
            g[0], commits,
            "round {i}: the value is not the last commit's"
        );
        assert!(g[0] > last, "round {i}: the child made no commit");
        assert_eq!(
            g.previous_holder_died(),
            held,
            "round {i} (seed {seed}): died holding the lock: {held}"
        );
        last = g[0];
        held_deaths += held as u32;
    }
    println!(
        "20 kills (seed {seed}): {held_deaths} while holding the lock, value {last}, \
         slowest take-over {took:?}"
    );
    slab.reclaim_dead().expect("reclaim");
    let report = slab.check().expect("check");
    assert!(report.is_consistent(), "{:?}", report.findings);
}

// ---------------------------------------------------------------------------
// 6. Roots inserted by racing processes.
// ---------------------------------------------------------------------------

const ROOT_ROUNDS: u64 = 8;
/// Objects each round makes: with, slice, zeroed, locked, notifier.
const ROOT_KINDS: u64 = 5;

/// What `root_or_insert_with` stores: the inserting process's number + 1.
type Table = [u64; 64];

fn rooter_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let barrier = SpinBarrier::open(Path::new(&args[1]), 4);
    let me: u64 = args[2].parse().unwrap();
    for r in 0..ROOT_ROUNDS {
        barrier.wait();
        let mut ran = 0;
        let with = slab
            .root_or_insert_with::<Table>(&format!("with-{r}"), || {
                ran += 1;
                [me + 1; 64]
            })
            .expect("root_or_insert_with");
        let slice = slab
            .root_or_insert_slice::<u64>(&format!("slice-{r}"), 1000 + me as usize)
            .expect("root_or_insert_slice");
        let zeroed = slab
            .root_or_insert_zeroed::<[u64; 32]>(&format!("zeroed-{r}"))
            .expect("root_or_insert_zeroed");
        let locked = slab
            .root_or_insert_locked::<[u64; 4]>(&format!("locked-{r}"), [me + 1; 4])
            .expect("root_or_insert_locked");
        let bell = slab
            .root_or_insert_notifier(&format!("bell-{r}"))
            .expect("root_or_insert_notifier");
        let winner = slab.read(with).expect("read")[0];
        say(
            "ROUND",
            format!(
                "{r} {} {} {} {} {} ran={ran} winner={winner} len={}",
                hex(with.raw()),
                hex(slice.raw()),
                hex(zeroed.raw()),
                hex(locked.raw()),
                hex(bell.raw()),
                slice.len()
            ),
        );
    }
}

/// Four processes racing `root_or_insert_with`, `_slice`, `_zeroed`,
/// `_locked` and `_notifier` on one name get one object among them: one
/// handle, one `init` run, and exactly one allocated slot per name
/// afterwards (no loser's object leaked).
#[test]
fn roots_inserted_by_four_racing_processes_are_made_once() {
    if let Some(args) = child_args("rooter") {
        return rooter_child(&args);
    }
    let _serial = serial();
    let (dir, path, slab) = new_segment("roots");
    let barrier = dir.path().join("barrier");
    SpinBarrier::create(&barrier);
    let before = slab.check().expect("check");
    let allocated = |r: &shmslab::Report| r.classes.iter().map(|c| c.allocated).sum::<u64>();
    let in_use_before = slab.stats().classes.iter().map(|c| c.in_use).sum::<u64>();
    let mut children: Vec<LiveChild> = (0..4)
        .map(|i| {
            LiveChild::spawn(
                "roots_inserted_by_four_racing_processes_are_made_once",
                "rooter",
                &[
                    path.to_str().unwrap(),
                    barrier.to_str().unwrap(),
                    &i.to_string(),
                ],
                &[],
            )
        })
        .collect();
    // rounds[r][child] = the child's report for round r.
    let mut rounds: Vec<Vec<Vec<String>>> = vec![Vec::new(); ROOT_ROUNDS as usize];
    for c in &mut children {
        for r in 0..ROOT_ROUNDS {
            let line = c.expect("ROUND", MSG_TIMEOUT);
            let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            assert_eq!(words[0], r.to_string());
            rounds[r as usize].push(words);
        }
    }
    for c in &mut children {
        c.wait_success(MSG_TIMEOUT);
    }
    for (r, reports) in rounds.iter().enumerate() {
        let first = &reports[0];
        for rep in reports {
            assert_eq!(rep[1..6], first[1..6], "round {r}: handles differ");
            assert_eq!(rep[7..], first[7..], "round {r}: winner or length differ");
        }
        let ran: u64 = reports.iter().map(|rep| fields(&rep[6])["ran"]).sum();
        assert_eq!(ran, 1, "round {r}: init ran {ran} times");
        let winner = fields(&first[7])["winner"];
        let ran_in = reports
            .iter()
            .position(|rep| rep[6] == "ran=1")
            .expect("one ran") as u64;
        assert_eq!(winner, ran_in + 1, "round {r}: the value is not its init's");
        let len = fields(&first[8])["len"];
        assert!((1000..1004).contains(&len), "round {r}: length {len}");
        // The parent finds the same objects.
        let with = slab
            .root::<Table>(&format!("with-{r}"))
            .expect("root")
            .expect("present");
        assert_eq!(hex(with.raw()), first[1]);
        assert_eq!(slab.read(with).expect("read"), [winner; 64]);
        let slice = slab
            .root_slice::<u64>(&format!("slice-{r}"))
            .expect("root_slice")
            .expect("present");
        assert_eq!(
            (hex(slice.raw()), slice.len() as u64),
            (first[2].clone(), len)
        );
        let locked = slab
            .root_locked::<[u64; 4]>(&format!("locked-{r}"))
            .expect("root_locked")
            .expect("present");
        assert_eq!(hex(locked.raw()), first[4]);
        let bell = slab
            .root_notifier(&format!("bell-{r}"))
            .expect("root_notifier")
            .expect("present");
        assert_eq!(bell.raw(), unhex(&first[5]));
    }
    let after = slab.check().expect("check");
    assert!(after.is_consistent(), "{:?}", after.findings);
    let made = ROOT_ROUNDS * ROOT_KINDS;
    let in_use_after = slab.stats().classes.iter().map(|c| c.in_use).sum::<u64>();
    println!(
        "{ROOT_ROUNDS} rounds x {ROOT_KINDS} kinds of roots raced by 4 processes: \
         allocated {} -> {}, in use {in_use_before} -> {in_use_after}, roots {}",
        allocated(&before),
        allocated(&after),
        after.roots
    );
    assert_eq!(
        allocated(&after) - allocated(&before),
        made,
        "a loser's object leaked"
    );
    assert_eq!(in_use_after - in_use_before, made, "stats disagree");
    assert_eq!(after.roots as u64, made);
    assert_eq!(
        after
            .owners
            .iter()
            .filter(|(_, n)| **n > 0)
            .collect::<Vec<_>>(),
        vec![(&0u32, &made)],
        "every object belongs to the segment"
    );
}

// ---------------------------------------------------------------------------
// 7. wait_while across processes.
// ---------------------------------------------------------------------------

/// The value a condition waiter waits on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Flag {
    ready: u64,
    payload: u64,
    noise: u64,
}
impl Schema for Flag {}

fn cond_waiter_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let h = slab
        .root_locked::<Flag>("flag")
        .expect("root")
        .expect("the parent made it");
    let g = slab.lock(h).expect("lock");
    say("LOCKED", format!("ready={}", g.ready));
    let mut looked = 0u64;
    let g = g
        .wait_while(|v| {
            looked += 1;
            v.ready == 0
        })
        .expect("wait_while");
    say(
        "WOKE",
        format!(
            "ready={} payload={} noise={} looked={looked} died={}",
            g.ready,
            g.payload,
            g.noise,
            g.previous_holder_died() as u64
        ),
    );
}

/// `wait_while` across processes: a child waits on a locked value until
/// the parent commits `ready = 1` (a commit that leaves it 0 does not end
/// the wait), then returns holding the lock with the committed value and
/// exits.
#[test]
fn wait_while_in_one_process_returns_when_another_commits_the_condition() {
    if let Some(args) = child_args("cond-waiter") {
        return cond_waiter_child(&args);
    }
    let _serial = serial();
    let (_dir, path, slab) = new_segment("wait-while");
    let h = slab
        .root_or_insert_locked("flag", Flag::default())
        .expect("root");
    let mut child = LiveChild::spawn(
        "wait_while_in_one_process_returns_when_another_commits_the_condition",
        "cond-waiter",
        &[path.to_str().unwrap()],
        &[],
    );
    assert_eq!(child.expect("LOCKED", MSG_TIMEOUT), "ready=0");
    // A commit that keeps the condition true: the child looks and waits on.
    slab.transact(h, |v| v.noise += 1).expect("transact");
    if let Some(m) = child.next_message(Duration::from_millis(300)) {
        panic!("the child stopped waiting on ready == 0: {m:?}");
    }
    let t = Instant::now();
    slab.transact(h, |v| {
        v.ready = 1;
        v.payload = 42;
    })
    .expect("transact");
    let woke = fields(&child.expect("WOKE", Duration::from_secs(5)));
    let took = t.elapsed();
    child.wait_success(Duration::from_secs(5));
    println!("wait_while returned {took:?} after the commit: {woke:?}");
    assert_eq!(
        (woke["ready"], woke["payload"], woke["noise"], woke["died"]),
        (1, 42, 1, 0)
    );
    assert!(
        woke["looked"] >= 3,
        "the condition was not re-checked after the first commit: {woke:?}"
    );
    assert!(
        took < Duration::from_millis(500),
        "woke {took:?} after the commit"
    );
    let g = slab.lock(h).expect("lock");
    assert!(!g.previous_holder_died(), "the child let go cleanly");
    assert_eq!(
        *g,
        Flag {
            ready: 1,
            payload: 42,
            noise: 1
        }
    );
}

// ---------------------------------------------------------------------------
// 8. Library bugs these tests found (ignored until fixed; run them with
//    `cargo test --test cooperate -- --ignored`).
// ---------------------------------------------------------------------------

/// One link of a chain: starts with the others, takes the lock (waiting at
/// most 2 s), reports, and dies of SIGKILL holding it.
fn chain_child(args: &[String]) {
    let slab = Slab::attach(&args[0]).expect("attach");
    let parties: u64 = args[2].parse().unwrap();
    let barrier = SpinBarrier::open(Path::new(&args[1]), parties);
    let h = slab
        .root_locked::<Eight>("eight")
        .expect("root")
        .expect("the parent made it");
    say("READY", std::process::id());
    barrier.wait();
    let t = Instant::now();
    match slab.lock_timeout(h, Duration::from_secs(2)).expect("lock") {
        Some(g) => {
            say(
                "GOT",
                format!(
                    "died={} us={}",
                    g.previous_holder_died() as u64,
                    t.elapsed().as_micros()
                ),
            );
            // SAFETY: kill(2) of this very process; nothing after it runs.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            unreachable!("SIGKILL returned");
        }
        None => say("TIMEOUT", format!("us={}", t.elapsed().as_micros())),
    }
}

/// Six processes wait for one lock, and each holder dies (SIGKILL)
/// holding it: every waiter must still get the lock, from the dead holder
/// before it, within milliseconds.
///
/// Regression: this failed, usually within 30 of the 200 rounds on a 2-core
/// machine, before the fix: a waiter that lost the compare-and-swap for the
/// word once it was parking (two waiters taking over the same dead holder at
/// once) never asked the kernel again whether a holder lived, so it waited
/// out its whole timeout behind the next holder that died (with `lock`, for
/// ever), while a fresh waiter took the same lock over in a millisecond (the
/// failed CAS cleared `Backoff::seen`, and only `Backoff::wait` set it
/// again, which `park_cell` no longer called past 80 rounds; now the parked
/// branch observes the holder too).
#[test]
fn every_waiter_gets_a_lock_whose_holders_keep_dying_holding_it() {
    if let Some(args) = child_args("chain") {
        return chain_child(&args);
    }
    let _serial = serial();
    const PARTIES: u64 = 6;
    let rounds = sized("SHMSLAB_COOP_CHAIN_ROUNDS", 200, 200);
    let (dir, path, slab) = new_segment("chain");
    let h = slab
        .root_or_insert_locked::<Eight>("eight", [0; 8])
        .expect("root");
    let header = cell_header(&slab, h);
    let name = "every_waiter_gets_a_lock_whose_holders_keep_dying_holding_it";
    let p = path.to_str().unwrap();
    let started = Instant::now();
    for r in 0..rounds {
        let barrier = dir.path().join(format!("barrier-{r}"));
        SpinBarrier::create(&barrier);
        let mut links: Vec<LiveChild> = (0..PARTIES)
            .map(|_| {
                LiveChild::spawn(
                    name,
                    "chain",
                    &[p, barrier.to_str().unwrap(), &PARTIES.to_string()],
                    &[],
                )
            })
            .collect();
        for c in &mut links {
            c.expect("READY", MSG_TIMEOUT);
        }
        let mut got = Vec::new();
        for c in &mut links {
            let m = c
                .next_message(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("round {r}: no word from a link\n{}", c.transcript()));
            got.push(format!("{} {}", m.key, m.payload));
            c.wait(MSG_TIMEOUT);
        }
        if got.iter().any(|g| g.starts_with("TIMEOUT")) {
            let word = header.lock.load(SeqCst);
            let dead = slab
                .peers()
                .expect("peers")
                .iter()
                .any(|peer| peer.row as u64 + 1 == word & 0xffff_ffff && !peer.alive);
            // A fresh waiter takes the same lock over at once.
            let t = Instant::now();
            let fresh = slab
                .lock_timeout(h, Duration::from_secs(2))
                .expect("lock")
                .map(|g| g.previous_holder_died());
            panic!(
                "round {r}: a waiter timed out after 2 s behind a holder that had died: {got:?}; \
                 lock word {word:#x} (its process dead: {dead}); a fresh lock_timeout then got \
                 it in {:?} (previous holder died: {fresh:?})",
                t.elapsed()
            );
        }
        slab.reclaim_dead().expect("reclaim");
        drop(slab.lock(h).expect("lock")); // the last link's lock
    }
    println!(
        "{rounds} rounds of {PARTIES} holders dying holding one lock: every waiter got it ({:?})",
        started.elapsed()
    );
}

/// `try_lock` on a lock whose holder was killed: its doc says it "takes the
/// value's lock if it is free (or its holder is dead) now".
///
/// Regression: this failed every time before the fix (about 915 `try_lock`s
/// over 1 s all returned `None`): with the dead holder's row not yet
/// reclaimed, `try_lock` looked only at the shared words (the row still says
/// LIVE) and never asked the kernel. Now a wait whose deadline has passed
/// asks once before giving up.
#[test]
fn try_lock_takes_over_the_lock_of_a_dead_holder() {
    if let Some(args) = child_args("half-writer") {
        return half_writer_child(&args);
    }
    let _serial = serial();
    let (_dir, path, slab) = new_segment("try-lock");
    let h = slab
        .root_or_insert_locked::<Eight>("eight", [1; 8])
        .expect("root");
    let mut child = LiveChild::spawn(
        "try_lock_takes_over_the_lock_of_a_dead_holder",
        "half-writer",
        &[path.to_str().unwrap(), "nocommit"],
        &[],
    );
    child.expect("HOLDING", MSG_TIMEOUT);
    child.kill();
    let t = Instant::now();
    let mut tries = 0u64;
    let mut got = None;
    while got.is_none() && t.elapsed() < Duration::from_secs(1) {
        tries += 1;
        got = slab
            .try_lock(h)
            .expect("try_lock")
            .map(|g| (g.previous_holder_died(), *g));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        got,
        Some((true, [1; 8])),
        "{tries} try_locks over {:?} did not take over the dead holder's lock",
        t.elapsed()
    );
}
