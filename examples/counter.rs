//! Many processes, one counter: every increment counted, none lost.
//!
//! The parent creates a segment with three named roots — a `Control` struct
//! of `u64`s used through its atomic view, a `Locked<Tally>`, and a notifier
//! — then runs this same program as `PROCESSES` children, twice:
//!
//! 1. **atomic**: each child adds 1 to `Control::hits` `INCREMENTS` times
//!    with `fetch_add` on the shared `AtomicU64`;
//! 2. **locked**: each child runs `INCREMENTS / 10` transactions on the
//!    `Tally`, each adding 1 to `count` and the child's number (1, 2, ...)
//!    to `sum`: two fields changed together, all-or-nothing.
//!
//! The children of a round start together: each says it is ready (an
//! atomic count, then a notify) and waits for the parent's `go` on the
//! notifier, parked in the kernel. The parent prints the totals and asserts
//! that they are exact. (The same loop with `update`, a copy out and back,
//! can lose increments whenever two processes run it at once.)
//!
//! Run: `cargo run --release --example counter [-- PROCESSES [INCREMENTS]]`
//! (defaults: 4 processes, 1,000,000 increments each).

use shmslab::bytemuck::{Pod, Zeroable};
use shmslab::notifier::Notifier;
use shmslab::{Schema, Slab};
use std::process::{Child, Command};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::{Duration, Instant};

/// How the parent and its children meet, and the atomic counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Control {
    /// The counter of the atomic round.
    hits: u64,
    /// Children of this round attached and waiting for `go`.
    ready: u64,
    /// The round (1, 2) the parent has started; 0 before.
    go: u64,
}
impl Schema for Control {
    const SCHEMA_ID: Option<u64> = Some(0x636f_756e_7400_0001);
}

shmslab::atomic_fields! {
    /// `Control` with every field an `AtomicU64`, in the segment.
    struct ControlAtomics for Control { hits, ready, go }
}

/// The locked round's value: two fields that change together.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Tally {
    count: u64,
    sum: u64,
}
impl Schema for Tally {
    const SCHEMA_ID: Option<u64> = Some(0x636f_756e_7400_0002);
}

/// How long anyone waits for the others before giving up.
const PATIENCE: Duration = Duration::from_secs(60);

/// Waits for `done` with the notifier, at most [`PATIENCE`].
fn wait_until(bell: &Notifier<'_>, what: &str, done: impl FnMut() -> bool) -> Result<(), String> {
    if bell.wait_until(Some(PATIENCE), done) {
        Ok(())
    } else {
        Err(format!("gave up after {PATIENCE:?} waiting for {what}"))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, round, path, number, increments] = args.as_slice() {
        if role == "child" {
            return child(round.parse()?, path, number.parse()?, increments.parse()?);
        }
    }
    let number = |i: usize, default: u64| match args.get(i) {
        None => default,
        Some(s) => match s.replace([',', '_'], "").parse() {
            Ok(n) if n > 0 => n,
            _ => usage(&format!("{s:?} is not a positive number")),
        },
    };
    if args.len() > 3 {
        usage("too many arguments");
    }
    let processes = number(1, 4);
    let increments = number(2, 1_000_000);
    let locked_increments = (increments / 10).max(1);

    let dir = tempfile::tempdir()?; // removed, segment and all, on return
    let path = dir.path().join("counter.shm");
    let slab = Slab::builder().initial_size(64 << 10).create(&path)?;
    let control = slab.root_or_insert("control", Control::default())?;
    let tally = slab.root_or_insert_locked("tally", Tally::default())?;
    let bell = slab.notifier(slab.root_or_insert_notifier("bell")?)?;
    let shared = slab.atomic(control)?; // a root: live while the segment is
    println!(
        "shmslab counter: {processes} {}, one segment at {}",
        if processes == 1 {
            "process"
        } else {
            "processes"
        },
        path.display()
    );

    // Round 1: the atomic counter.
    let took = round(&slab, shared, &bell, 1, processes, increments)?;
    let hits = shared.hits.load(Relaxed);
    assert_eq!(hits, processes * increments, "atomic increments were lost");
    assert_eq!(slab.read(control)?.hits, hits); // a copy sees the same
    println!(
        "  atomic: fetch_add on a shared AtomicU64, {processes} x {} = {} (exact) in {took:.1?}, {:.0} ns per increment",
        thousands(increments),
        thousands(hits),
        took.as_nanos() as f64 / hits as f64
    );

    // Round 2: the locked value, two fields per transaction.
    let took = round(&slab, shared, &bell, 2, processes, locked_increments)?;
    let t = slab.read_locked(tally)?;
    let expected = Tally {
        count: processes * locked_increments,
        sum: locked_increments * processes * (processes + 1) / 2,
    };
    assert_eq!(t, expected, "locked transactions were lost or torn");
    println!(
        "  locked: transact on a Locked<Tally>, {processes} x {} = {}, sum {} (exact) in {took:.1?}, {:.0} ns per transaction",
        thousands(locked_increments),
        thousands(t.count),
        thousands(t.sum),
        took.as_nanos() as f64 / t.count as f64
    );
    assert!(slab.check()?.is_consistent());
    println!("the segment is consistent; done");
    Ok(())
}

/// Prints what was wrong with the arguments, and how to call, and exits.
fn usage(problem: &str) -> ! {
    eprintln!("counter: {problem}");
    eprintln!("usage: counter [PROCESSES [INCREMENTS]]  (defaults: 4, 1000000)");
    std::process::exit(2)
}

/// Runs `processes` children for round `round`, starts them together and
/// waits for them all; returns the time from the start to the last exit.
fn round(
    slab: &Slab,
    shared: &ControlAtomics,
    bell: &Notifier<'_>,
    round: u64,
    processes: u64,
    increments: u64,
) -> Result<Duration, Box<dyn std::error::Error>> {
    shared.ready.store(0, SeqCst);
    let exe = std::env::current_exe()?;
    let path = slab.path();
    let mut children: Vec<Child> = (1..=processes)
        .map(|number| {
            Command::new(&exe)
                .arg("child")
                .arg(round.to_string())
                .arg(path)
                .arg(number.to_string())
                .arg(increments.to_string())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    wait_until(bell, "the children to attach", || {
        shared.ready.load(SeqCst) == processes
            || children
                .iter_mut()
                .any(|c| matches!(c.try_wait(), Ok(Some(_))))
    })?;
    let started = Instant::now();
    shared.go.store(round, SeqCst);
    bell.notify_all();
    for mut c in children {
        let status = c.wait()?;
        if !status.success() {
            return Err(format!("a child of round {round} failed: {status}").into());
        }
    }
    Ok(started.elapsed())
}

/// A child: attach, say it is ready, wait for `go`, count.
fn child(
    round: u64,
    path: &str,
    number: u64,
    increments: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let slab = Slab::attach(path)?;
    let shared = slab.atomic(slab.root::<Control>("control")?.ok_or("no control root")?)?;
    let bell = slab.notifier(slab.root_notifier("bell")?.ok_or("no bell root")?)?;
    shared.ready.fetch_add(1, SeqCst);
    bell.notify_all();
    wait_until(&bell, "the parent's go", || shared.go.load(SeqCst) >= round)?;
    match round {
        1 => {
            for _ in 0..increments {
                shared.hits.fetch_add(1, Relaxed);
            }
        }
        _ => {
            let tally = slab.root_locked::<Tally>("tally")?.ok_or("no tally root")?;
            for _ in 0..increments {
                slab.transact(tally, |t| {
                    t.count += 1;
                    t.sum += number;
                })?;
            }
        }
    }
    Ok(())
}

/// `n` with thousands separated by commas.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}
