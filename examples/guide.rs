//! Two processes, one segment: the program docs/GUIDE.md walks through.
//!
//! Process A creates a segment with a named root and sends a job's handle to
//! process B (this program again, as a child) over B's stdin. B adopts the
//! job, frees it, publishes a persisted result and an unpersisted draft, and
//! is killed with SIGKILL while it holds slots; A reclaims them.
//!
//! Run: `cargo run --example guide`

use shmslab::bytemuck::{Pod, Zeroable};
use shmslab::{Error, Handle, Schema, Slab};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

/// A unit of work: A fills in `input`, B computes `output`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Job {
    id: u64,
    input: u64,
    output: u64,
}

/// The named root: where B leaves handles for A (handles are `Pod` too).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Board {
    result: Handle<Job>, // persisted by B: outlives B
    draft: Handle<Job>,  // owned by B: freed by reclaim_dead once B is dead
}
impl Schema for Board {
    const SCHEMA_ID: Option<u64> = Some(0x626f_6172_6400_0001);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, path] = args.as_slice() {
        if role == "b" {
            return process_b(path);
        }
    }

    // Process A: create the segment and its root, allocate a job.
    let dir = tempfile::tempdir()?; // removed, segment file and all, on return
    let path = dir.path().join("guide.shm");
    let a = Slab::builder().initial_size(64 << 10).create(&path)?;
    let board = a.root_or_insert("board", Board::zeroed())?;
    let job = a.alloc(Job {
        id: 1,
        input: 21,
        output: 0,
    })?;
    println!(
        "[A] created {} with root \"board\"; allocated job 1",
        path.display()
    );

    // Start B and send it the job's handle: 16 bytes over its stdin.
    let mut b = Command::new(std::env::current_exe()?)
        .args(["b", path.to_str().ok_or("the temp path is not UTF-8")?])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to_b = b.stdin.take().expect("piped");
    to_b.write_all(&job.to_bytes())?;
    let mut ready = false;
    for line in BufReader::new(b.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if line.ends_with("waiting to be killed") {
            ready = true;
            break;
        }
    }
    if !ready {
        return Err(format!("B exited early: {}", b.wait()?).into());
    }

    // B adopted the job and freed it: A's copy of the handle is stale now.
    assert!(matches!(a.read(job), Err(Error::StaleHandle { .. })));
    println!("[A] my handle to job 1 is stale: B adopted it and freed it");

    // Kill B while it holds slots. No destructor runs in B.
    b.kill()?; // SIGKILL
    let status = b.wait()?;
    assert_eq!(status.signal(), Some(9));
    let report = a.reclaim_dead()?;
    println!(
        "[A] B was killed ({status}); reclaim_dead: {} dead process, {} slots freed (its draft and its cached free slots), {} kept for roots",
        report.peers, report.slots, report.kept_for_roots
    );
    assert_eq!(report.peers, 1);
    assert!(report.slots >= 1);

    // What B published: the persisted result outlived it, the draft did not.
    let Board { result, draft } = a.read(board)?;
    assert!(matches!(a.read(draft), Err(Error::StaleHandle { .. })));
    let done = a.read(result)?;
    assert_eq!((done.id, done.output), (1, 42));
    println!(
        "[A] B's draft is gone; its persisted result survived: job {} -> {}",
        done.id, done.output
    );
    a.free(result)?;
    assert!(a.check()?.is_consistent());
    println!("[A] freed the result; the segment is consistent; done");
    Ok(())
}

/// Process B: attach, take the job, publish results, wait to be killed.
fn process_b(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let b = Slab::attach(path)?;
    let mut wire = [0u8; 16];
    std::io::stdin().read_exact(&mut wire)?;
    let job = Handle::<Job>::from_bytes(wire);
    b.adopt(job)?; // B's now: if B dies holding it, reclaim_dead frees it
    let mut work = b.read(job)?;
    work.output = work.input * 2;
    b.free(job)?; // the job is consumed

    let result = b.alloc(work)?;
    b.persist(result)?; // the segment's now: no process's death frees it
    let draft = b.alloc(Job::zeroed())?; // B's: freed when B is reclaimed
    let board = b.root::<Board>("board")?.ok_or("A makes the root first")?;
    b.write(board, Board { result, draft })?; // B is the board's only writer
    println!(
        "[B] pid {} attached; got job {} over stdin, adopted and freed it",
        std::process::id(),
        work.id
    );
    println!("[B] published a persisted result and a draft; waiting to be killed");
    std::io::stdout().flush()?;
    // Block until killed; if A goes away first, stdin closes and B exits.
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    Ok(())
}
