//! Room for the processes a service runs: hundreds of processes attached to
//! one segment at once, each allocating and verifying its own slots.
//!
//! `SHMSLAB_PROCESSES` sets how many (default: 512 in release, 96 in debug,
//! to keep `cargo test` quick; `.ci/run` runs 512 in release).

mod common;

use common::child_args;
use common::live::new_segment;
use shmslab::Slab;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::Instant;

/// Slots each process allocates and checks.
const SLOTS: u64 = 8;

fn stamp(pid: u64, i: u64) -> [u64; 4] {
    [pid, i, pid.rotate_left(17) ^ i, !pid]
}

fn processes() -> usize {
    std::env::var("SHMSLAB_PROCESSES")
        .ok()
        .map(|v| v.parse().expect("SHMSLAB_PROCESSES is a number"))
        .unwrap_or(if cfg!(debug_assertions) { 96 } else { 512 })
}

/// Child: attach, allocate and check `SLOTS` values, say so on stdout, wait
/// for the parent's `go` (sent once every process is attached), check again,
/// free, detach. Failures are printed on stdout (stderr is not kept).
fn hold_until_go(path: &str) {
    fn report(what: &str) -> ! {
        println!("@@failed {what}");
        std::process::exit(3);
    }
    let pid = std::process::id() as u64;
    let slab = match Slab::attach(path) {
        Ok(s) => s,
        Err(e) => report(&format!("attach: {e}")),
    };
    let mut held = Vec::new();
    for i in 0..SLOTS {
        match slab.alloc(stamp(pid, i)) {
            Ok(h) => held.push(h),
            Err(e) => report(&format!("alloc: {e}")),
        }
    }
    let verify = |when: &str| {
        for (i, &h) in held.iter().enumerate() {
            match slab.read(h) {
                Ok(v) if v == stamp(pid, i as u64) => {}
                other => report(&format!("{when}: slot {i} reads {other:?}")),
            }
        }
    };
    verify("before the barrier");
    println!("@@attached {pid}");
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("read go");
    if line.trim() != "go" {
        report(&format!("expected go, got {line:?}"));
    }
    verify("after the barrier");
    for &h in &held {
        if let Err(e) = slab.free(h) {
            report(&format!("free: {e}"));
        }
    }
    drop(slab);
}

#[test]
fn hundreds_of_processes_attach_to_one_segment_at_once() {
    if let Some(args) = child_args("holder") {
        hold_until_go(&args[0]);
        return;
    }
    let n = processes();
    let (_dir, path, slab) = new_segment("many.shm");
    let p = path.to_str().unwrap();
    let started = Instant::now();
    let mut children: Vec<Child> = (0..n)
        .map(|_| {
            common::child_command(
                "hundreds_of_processes_attach_to_one_segment_at_once",
                "holder",
                &[p],
            )
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a child (process or descriptor limit?)")
        })
        .collect();
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().expect("piped stdout")))
        .collect();
    // The barrier: every child reports `attached` (or a failure) first.
    for (i, r) in readers.iter_mut().enumerate() {
        let mut line = String::new();
        loop {
            line.clear();
            let got = r.read_line(&mut line).expect("read a child's stdout");
            if got == 0 {
                panic!("child {i} exited before attaching");
            }
            if let Some(at) = line.find("@@") {
                let msg = &line[at + 2..];
                assert!(msg.starts_with("attached"), "child {i}: {msg}");
                break;
            }
        }
    }
    let all_attached = started.elapsed();
    let peers = slab.peers().expect("peers");
    assert_eq!(peers.len(), n + 1, "every child and the parent hold a row");
    assert!(peers.iter().all(|p| p.alive), "a row reads as dead");
    let report = slab.check().expect("check");
    assert!(report.is_consistent(), "{:#?}", report.findings);
    assert_eq!(report.live_peers, n + 1);
    let allocated: u64 = report.classes.iter().map(|c| c.allocated).sum();
    assert_eq!(allocated, n as u64 * SLOTS);
    for c in &mut children {
        let stdin = c.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "go")
            .and_then(|_| stdin.flush())
            .expect("send go");
    }
    for (i, (mut c, mut r)) in children.into_iter().zip(readers).enumerate() {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut r, &mut rest);
        let status = c.wait().expect("reap a child");
        assert!(
            status.success() && !rest.contains("@@failed"),
            "child {i}: {}\n{rest}",
            common::status_text(&status)
        );
    }
    eprintln!(
        "{n} processes attached in {all_attached:?}, all done in {:?}",
        started.elapsed()
    );
    assert_eq!(slab.peers().expect("peers").len(), 1);
    common::assert_every_slot_free(&slab, "after every child detached");
}
