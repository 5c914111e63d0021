//! The `shmslab` command-line tool (`src/bin/shmslab`), run as a separate
//! process on real segment files: `inspect` (text, `--json`, `--watch`),
//! `check` and `reclaim`, their exit codes (0 ok, 1 inconsistent, 2 not a
//! readable segment) and messages, and that `inspect`/`check` never change
//! the file.
//!
//! Segments with allocations and roots are made by a child process (this
//! test binary re-run, see `tests/common`); a dead peer is a child killed
//! with SIGKILL while it holds slots.
#![cfg(feature = "cli")]

mod common;

use common::child_args;
use common::live::{LiveChild, XorShift, hear, say, segment_dir};
use serde_json::Value;
use shmslab::bytemuck::{Pod, Zeroable};
use shmslab::{Schema, Slab, SlotRef};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on any one run of the tool or wait for a child.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Exit codes of the tool.
const OK: i32 = 0;
const INCONSISTENT: i32 = 1;
const UNREADABLE: i32 = 2;

// ---------------------------------------------------------------------------
// Running the tool

/// What one run of the tool did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    args: Vec<String>,
}

impl Run {
    fn show(&self) -> String {
        format!(
            "shmslab {}\nexit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// Asserts the exit code, showing everything on failure.
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.show());
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document: {e}\n{}", self.show()))
    }
}

/// Runs the `shmslab` binary with `args`; panics if it is killed by a signal
/// (a crash), panics or outlives [`TIMEOUT`].
fn shmslab<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shmslab"));
    cmd.args(args);
    run(cmd, args)
}

/// Runs `cmd` (the tool, perhaps under `setpriv`), `args` being the
/// tool's arguments; see [`shmslab`].
fn run<S: AsRef<std::ffi::OsStr>>(mut cmd: Command, args: &[S]) -> Run {
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the shmslab binary");
    let deadline = Instant::now() + TIMEOUT;
    let done = common::collect(child, Duration::from_millis(2), || {
        Instant::now() > deadline
    });
    if done.killed {
        panic!("shmslab {shown:?} did not finish within {TIMEOUT:?}");
    }
    let status = done.status;
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&done.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
        args: shown,
    };
    assert!(
        status.signal().is_none(),
        "shmslab was killed by signal {:?}\n{}",
        status.signal(),
        run.show()
    );
    assert!(
        !run.stderr.contains("panicked"),
        "shmslab panicked\n{}",
        run.show()
    );
    run
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 test path")
}

// ---------------------------------------------------------------------------
// Segments

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
struct Counters {
    requests: u64,
    errors: u64,
    pid: u32,
    flags: u32,
}
impl Schema for Counters {
    const SCHEMA_ID: Option<u64> = Some(0x636c_6900_0000_0001);
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Blob {
    bytes: [u8; 900],
}
impl Schema for Blob {}

/// Creates a small segment at `path`; the returned `Slab` keeps the file
/// when dropped.
fn create(path: &Path) -> Slab {
    let mut slab = Slab::builder()
        .initial_size(64 << 10)
        .create(path)
        .expect("create a segment");
    slab.keep_file();
    slab
}

/// A segment with allocations in several classes and two roots, made by a
/// child process that then exits cleanly (its allocations stay, owned by the
/// segment). The creator has detached too: no peers.
fn populated_segment(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    drop(create(&path));
    let out = common::run_child("populate_role", "populate", &[p(&path)], TIMEOUT);
    common::assert_child_succeeded(&out);
    path
}

/// What the `populate` child allocates: (request size, count, how many of
/// them it frees again).
const POPULATE: &[(usize, usize, usize)] = &[
    (48, 40, 10),
    (200, 25, 5),
    (1000, 12, 0),
    (5000, 6, 2),
    (70_000, 2, 0),
];

/// Not a test of its own: the child side of [`populated_segment`].
#[test]
#[ignore = "a child role, run by the tests that need it"]
fn populate_role() {
    let Some(args) = child_args("populate") else {
        return;
    };
    let slab = Slab::attach(&args[0]).expect("attach");
    for &(len, n, freed) in POPULATE {
        let hs: Vec<SlotRef> = (0..n)
            .map(|i| {
                let h = slab.alloc_bytes(len).expect("alloc").raw();
                slab.write_bytes(common::whole(h), 0, &[i as u8; 16])
                    .expect("write");
                h
            })
            .collect();
        for h in hs.into_iter().take(freed) {
            slab.free(h).expect("free");
        }
    }
    let c = slab
        .root_or_insert("counters", Counters::default())
        .expect("root");
    slab.update(c, |c| {
        c.requests = 7;
        c.pid = std::process::id();
    })
    .expect("update");
    slab.root_or_insert("blob", Blob { bytes: [3; 900] })
        .expect("root");
}

/// Every (file offset, value) tweak below writes a native-endian word.
fn read_word(bytes: &[u8], off: u64) -> u64 {
    let off = off as usize;
    u64::from_ne_bytes(bytes[off..off + 8].try_into().expect("8 bytes"))
}

fn write_word(bytes: &mut [u8], off: u64, value: u64) {
    let off = off as usize;
    bytes[off..off + 8].copy_from_slice(&value.to_ne_bytes());
}

/// Offsets from docs/FORMAT.md.
const CLASS_TABLE: u64 = 512;
const CLASS_BYTES: u64 = 1088;
const ROOT_BYTES: u64 = 128;

fn class_entry(c: u64) -> u64 {
    CLASS_TABLE + CLASS_BYTES * c
}

fn root_table(bytes: &[u8]) -> u64 {
    CLASS_TABLE + CLASS_BYTES * read_word(bytes, 56)
}

fn peer_table(bytes: &[u8]) -> u64 {
    root_table(bytes) + ROOT_BYTES * read_word(bytes, 64)
}

/// A copy of the segment at `from` with `tweak` applied, at `dir/name`.
fn corrupted(from: &Path, dir: &Path, name: &str, tweak: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(from).expect("read the segment");
    tweak(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("write the corrupted copy");
    path
}

fn sum(v: &Value, key: &str) -> u64 {
    v["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| c[key].as_u64().expect("a count"))
        .sum()
}

// ---------------------------------------------------------------------------
// inspect

#[test]
fn inspect_fresh_segment() {
    let dir = segment_dir();
    let path = dir.path().join("fresh.shm");
    let slab = create(&path);

    // While the creator is attached it shows as a live peer.
    let live = shmslab(&["inspect", "--json", p(&path)])
        .expect_code(OK)
        .json();
    let peers = live["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 1, "{live:#}");
    assert_eq!(peers[0]["pid"], std::process::id());
    assert_eq!(peers[0]["alive"], true);
    assert_eq!(live["segment_id"], slab.segment_id());
    drop(slab);

    let before = std::fs::read(&path).expect("read");
    let run = shmslab(&["inspect", p(&path)]);
    run.expect_code(OK);
    let text = &run.stdout;
    for want in [
        format!("segment {}", path.display()),
        format!("format version  {}", shmslab::limits::FORMAT_VERSION),
        "size classes (15)".to_string(),
        "roots (0)".to_string(),
        "peers (0)".to_string(),
        "check: consistent".to_string(),
        "[..........]".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?}\n{}", run.show());
    }
    assert!(run.stderr.is_empty(), "{}", run.show());

    let v = shmslab(&["inspect", "--json", p(&path)])
        .expect_code(OK)
        .json();
    assert_eq!(v["format_version"], shmslab::limits::FORMAT_VERSION);
    assert_eq!(v["classes"].as_array().unwrap().len(), 15);
    assert_eq!(sum(&v, "extents"), 0);
    assert_eq!(sum(&v, "slots"), 0);
    assert_eq!(v["peers"].as_array().unwrap().len(), 0);
    assert_eq!(v["roots"].as_array().unwrap().len(), 0);
    assert_eq!(v["consistent"], true);
    assert!(v["page_size"].as_u64().unwrap().is_power_of_two());
    assert!(v["data_start"].as_u64().unwrap() <= v["current_size"].as_u64().unwrap());
    assert!(v["current_size"].as_u64().unwrap() <= v["file_size"].as_u64().unwrap());
    assert_eq!(
        before,
        std::fs::read(&path).unwrap(),
        "inspect changed the file"
    );

    shmslab(&["check", p(&path)])
        .expect_code(OK)
        .stdout
        .contains("consistent");
}

/// `inspect --json` of a segment made by another process agrees with what
/// `Slab::stats()` and `Slab::roots()` say about the same segment, and
/// neither `inspect` nor `check` changes a byte of it.
#[test]
fn inspect_json_agrees_with_stats_and_roots() {
    let dir = segment_dir();
    let path = populated_segment(dir.path(), "populated.shm");

    let before = std::fs::read(&path).expect("read");
    let text = shmslab(&["inspect", p(&path)]);
    text.expect_code(OK);
    let json = shmslab(&["inspect", "--json", p(&path)])
        .expect_code(OK)
        .json();
    let check = shmslab(&["check", p(&path)]);
    check.expect_code(OK);
    assert_eq!(
        before,
        std::fs::read(&path).unwrap(),
        "inspect or check changed the file"
    );
    assert!(
        check.stdout.contains("consistent: 15 classes"),
        "{}",
        check.show()
    );
    for want in ["\"counters\"", "\"blob\"", "check: consistent", "#"] {
        assert!(
            text.stdout.contains(want),
            "missing {want:?}\n{}",
            text.show()
        );
    }

    // The same segment through the library (attaching adds this process as
    // a peer; it allocates nothing, so the class counts do not move).
    let slab = Slab::attach(&path).expect("attach");
    let stats = slab.stats();
    assert_eq!(json["segment_id"], stats.segment_id);
    assert_eq!(json["generation"], stats.generation);
    assert_eq!(json["current_size"], stats.current_size);
    assert_eq!(json["file_size"], stats.file_size);
    let classes = json["classes"].as_array().expect("classes");
    assert_eq!(classes.len(), stats.classes.len());
    for (c, (j, s)) in classes.iter().zip(&stats.classes).enumerate() {
        let what = format!("class {c}: json {j} vs stats {s:?}");
        assert_eq!(j["class"], c, "{what}");
        assert_eq!(j["slot_size"], s.slot_size, "{what}");
        assert_eq!(j["extents"], s.extents, "{what}");
        assert_eq!(j["slots"], s.slots, "{what}");
        assert_eq!(j["free"], s.free, "{what}");
        assert_eq!(j["in_use"], s.in_use, "{what}");
        assert_eq!(
            j["free_listed"].as_u64().unwrap() + j["fresh"].as_u64().unwrap(),
            s.free,
            "{what}"
        );
        assert_eq!(
            j["allocated"].as_u64().unwrap() + j["cached"].as_u64().unwrap(),
            s.in_use,
            "{what}"
        );
        assert_eq!(j["bytes"], s.slots * s.slot_size, "{what}");
        assert_eq!(j["cached"], 0, "{what}: every process detached");
    }
    // Everything the child kept, plus the two roots, is allocated and owned
    // by the segment now.
    let kept: usize = POPULATE.iter().map(|&(_, n, f)| n - f).sum();
    assert_eq!(sum(&json, "allocated"), kept as u64 + 2, "{json:#}");
    assert_eq!(json["segment_owned"], kept as u64 + 2);
    assert_eq!(json["totals"]["slots"], stats.total_slots());
    assert_eq!(json["totals"]["free"], stats.total_free());
    assert_eq!(json["totals"]["extents"], stats.total_extents());
    assert!(stats.generation > 0);

    // Roots: name, fingerprint, handle and slot size.
    let roots = slab.roots().expect("roots");
    let jroots = json["roots"].as_array().expect("roots");
    assert_eq!(jroots.len(), 2);
    assert_eq!(jroots.len(), roots.len());
    for r in &roots {
        let j = jroots
            .iter()
            .find(|j| j["name"] == r.name.as_str())
            .unwrap_or_else(|| panic!("root {:?} missing from {json:#}", r.name));
        assert_eq!(j["fingerprint"]["size"], r.fingerprint.size);
        assert_eq!(j["fingerprint"]["align"], r.fingerprint.align);
        assert_eq!(
            j["fingerprint"]["schema"],
            format!("{:#018x}", r.fingerprint.schema)
        );
        let hex: String = r
            .handle
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(j["handle"]["hex"], hex);
        assert_eq!(j["handle"]["class"], r.handle.parts().class);
        assert_eq!(j["handle"]["generation"], r.handle.parts().generation);
        assert_eq!(j["handle"]["segment_id"], r.handle.parts().segment_id);
        assert_eq!(j["slot_size"], slab.class_sizes()[r.handle.parts().class]);
    }
    let counters = slab
        .root::<Counters>("counters")
        .expect("root")
        .expect("made by the child");
    let j = jroots.iter().find(|j| j["name"] == "counters").unwrap();
    assert_eq!(j["fingerprint"]["size"], size_of::<Counters>());
    assert_eq!(j["fingerprint"]["schema"], "0x636c690000000001");
    assert_eq!(
        j["handle"]["hex"],
        common::live::to_hex(&SlotRef::from(counters).to_bytes())
    );
    assert_eq!(slab.read(counters).expect("read").requests, 7);

    // Peers: this process only.
    let json = shmslab(&["inspect", "--json", p(&path)])
        .expect_code(OK)
        .json();
    let jpeers = json["peers"].as_array().expect("peers");
    let peers = slab.peers().expect("peers");
    assert_eq!(jpeers.len(), peers.len());
    for (j, s) in jpeers.iter().zip(&peers) {
        assert_eq!(j["row"], s.row);
        assert_eq!(j["pid"], s.pid);
        assert_eq!(j["alive"], s.alive);
    }
    assert_eq!(jpeers[0]["pid"], std::process::id());
}

// ---------------------------------------------------------------------------
// A dead peer, then reclaim

/// Child: attaches, allocates and keeps some slots (its cache holds more),
/// reports, then waits to be killed.
#[test]
#[ignore = "a child role, run by the tests that need it"]
fn holder_role() {
    let Some(args) = child_args("holder") else {
        return;
    };
    let slab = Slab::attach(&args[0]).expect("attach");
    let mut held = Vec::new();
    for i in 0..60 {
        held.push(
            slab.alloc_bytes(if i % 3 == 0 { 1000 } else { 64 })
                .expect("alloc"),
        );
    }
    say("HOLDING", held.len());
    let _ = hear(); // never answered: the parent kills us
}

#[test]
fn dead_peer_is_shown_then_reclaimed() {
    let dir = segment_dir();
    let path = dir.path().join("dead.shm");
    drop(create(&path));

    let mut child = LiveChild::spawn("holder_role", "holder", &[p(&path)], &[]);
    let pid = child.pid();
    let held: u64 = child.expect("HOLDING", TIMEOUT).parse().expect("count");
    child.kill();

    let before = std::fs::read(&path).expect("read");
    let json = shmslab(&["inspect", "--json", p(&path)])
        .expect_code(OK)
        .json();
    let text = shmslab(&["inspect", p(&path)]);
    text.expect_code(OK);
    assert_eq!(
        before,
        std::fs::read(&path).unwrap(),
        "inspect changed the file"
    );
    let peers = json["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 1, "{json:#}");
    assert_eq!(peers[0]["pid"], pid);
    assert_eq!(peers[0]["alive"], false);
    let owned = peers[0]["slots_owned"].as_u64().expect("slots owned");
    assert!(
        owned >= held,
        "the dead peer owns {owned} slots, it held {held}"
    );
    assert_eq!(sum(&json, "owned_by_dead"), owned);
    assert!(
        text.stdout.contains(&format!("{pid}  dead")),
        "{}",
        text.show()
    );
    assert!(text.stdout.contains("shmslab reclaim"), "{}", text.show());

    // Slots held by a dead process are not an inconsistency.
    shmslab(&["check", p(&path)]).expect_code(OK);

    let r = shmslab(&["reclaim", "--json", p(&path)])
        .expect_code(OK)
        .json();
    assert_eq!(r["peers"], 1, "{r:#}");
    assert_eq!(r["slots"], owned, "{r:#}");
    assert_eq!(r["kept_for_roots"], 0, "{r:#}");
    assert_eq!(r["dead_before"][0]["pid"], pid);

    let again = shmslab(&["reclaim", p(&path)]);
    again.expect_code(OK);
    assert!(
        again.stdout.contains("reclaimed 0 peers, freed 0 slots"),
        "{}",
        again.show()
    );
    let r = shmslab(&["reclaim", "--json", p(&path)])
        .expect_code(OK)
        .json();
    assert_eq!(
        (r["peers"].as_u64(), r["slots"].as_u64()),
        (Some(0), Some(0))
    );

    // Reclaim attached and detached again: no peer is left behind, and
    // nothing is owned by the dead.
    let after = shmslab(&["inspect", "--json", p(&path)])
        .expect_code(OK)
        .json();
    assert_eq!(after["peers"].as_array().unwrap().len(), 0, "{after:#}");
    assert_eq!(sum(&after, "owned_by_dead"), 0);
    assert_eq!(sum(&after, "allocated") + sum(&after, "cached"), 0);
    assert_eq!(after["consistent"], true);
}

#[test]
fn reclaim_text_names_the_dead() {
    let dir = segment_dir();
    let path = dir.path().join("dead2.shm");
    drop(create(&path));
    let mut child = LiveChild::spawn("holder_role", "holder", &[p(&path)], &[]);
    let pid = child.pid();
    child.expect("HOLDING", TIMEOUT);
    child.kill();
    let run = shmslab(&["reclaim", p(&path)]);
    run.expect_code(OK);
    assert!(
        run.stdout.contains("reclaimed 1 dead peer: freed ")
            && run.stdout.contains(&format!("(pid {pid}) was dead")),
        "{}",
        run.show()
    );
}

// ---------------------------------------------------------------------------
// check: inconsistent segments (exit 1)

#[test]
fn check_reports_corruption_with_exit_1() {
    let dir = segment_dir();
    let good = populated_segment(dir.path(), "good.shm");
    let bytes = std::fs::read(&good).unwrap();
    assert!(
        read_word(&bytes, class_entry(0) + 16) >= 1,
        "class 0 has an extent"
    );
    let extent0 = read_word(&bytes, class_entry(0) + 64);

    // (corrupted file, location, words the finding must contain)
    let cases: Vec<(PathBuf, &str, &str)> = vec![
        (
            corrupted(&good, dir.path(), "bad-meta.shm", |b| {
                // Slot 0's metadata word: state "fresh" with a payload.
                write_word(b, extent0, 0x5);
            }),
            "class 0: slot",
            "not a valid state",
        ),
        (
            corrupted(&good, dir.path(), "bad-head.shm", |b| {
                // The free list starts at extent 5, which does not exist.
                write_word(b, class_entry(0) + 24, 5 << 24);
            }),
            "class 0",
            "free list",
        ),
        (
            corrupted(&good, dir.path(), "bad-count.shm", |b| {
                let at = class_entry(1) + 32;
                let n = read_word(b, at);
                write_word(b, at, n + 7);
            }),
            "class 1",
            "free count says",
        ),
        (
            corrupted(&good, dir.path(), "bad-root.shm", |b| {
                let at = root_table(b);
                write_word(b, at, 9);
            }),
            "root 0",
            "unknown state 9",
        ),
        (
            corrupted(&good, dir.path(), "bad-peer.shm", |b| {
                let at = peer_table(b);
                write_word(b, at, 7);
            }),
            "peer 0",
            "unknown state 7",
        ),
    ];
    for (path, location, problem) in &cases {
        let before = std::fs::read(path).unwrap();
        let run = shmslab(&["check", p(path)]);
        run.expect_code(INCONSISTENT);
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with(location) && l.contains(problem)),
            "no line `{location}: ...{problem}...`\n{}",
            run.show()
        );
        let last = run.stdout.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("{}: INCONSISTENT: ", path.display())),
            "summary line: {last:?}\n{}",
            run.show()
        );

        let j = shmslab(&["check", "--json", p(path)])
            .expect_code(INCONSISTENT)
            .json();
        assert_eq!(j["status"], "inconsistent");
        assert!(
            j["findings"].as_array().unwrap().iter().any(|f| {
                f["location"]
                    .as_str()
                    .unwrap()
                    .starts_with(location.trim_end_matches(": slot"))
                    && f["problem"].as_str().unwrap().contains(problem)
            }),
            "{j:#}"
        );

        // inspect still shows the segment, and says it is inconsistent.
        let i = shmslab(&["inspect", p(path)]);
        i.expect_code(OK);
        assert!(i.stdout.contains("check: INCONSISTENT"), "{}", i.show());
        let ij = shmslab(&["inspect", "--json", p(path)])
            .expect_code(OK)
            .json();
        assert_eq!(ij["consistent"], false);
        assert_eq!(
            before,
            std::fs::read(path).unwrap(),
            "check changed the file"
        );
    }
}

/// On a segment live processes are using, `check` re-reads before it
/// believes a problem (a read without locks can catch an operation
/// half-way), but a problem that stays is still exit 1.
#[test]
fn check_on_a_live_segment_reports_a_lasting_problem() {
    use std::os::unix::fs::FileExt;
    let dir = segment_dir();
    let path = dir.path().join("live.shm");
    let slab = create(&path);
    let hs: Vec<SlotRef> = (0..50)
        .map(|_| slab.alloc_bytes(100).unwrap().raw())
        .collect();
    for h in &hs[..25] {
        slab.free(*h).unwrap();
    }
    shmslab(&["check", p(&path)]).expect_code(OK);

    // Damage the live segment through the file: class 1's free count.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let at = class_entry(1) + 32;
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, at).unwrap();
    let count = u64::from_ne_bytes(word);
    file.write_all_at(&(count + 3).to_ne_bytes(), at).unwrap();

    let run = shmslab(&["check", p(&path)]);
    run.expect_code(INCONSISTENT);
    assert!(
        run.stdout.contains("class 1: free count says"),
        "{}",
        run.show()
    );
    let i = shmslab(&["inspect", p(&path)]);
    assert!(
        i.stdout.contains("live processes are using it"),
        "{}",
        i.show()
    );

    file.write_all_at(&count.to_ne_bytes(), at).unwrap();
    shmslab(&["check", p(&path)]).expect_code(OK);
    assert!(slab.check().unwrap().is_consistent());
}

/// A growth its grower died in (the journal still active, as a SIGKILL
/// between `grow.journaled` and `grow.generation_bumped` leaves it) is work
/// the next attach finishes, not an inconsistency: `check` exits 0 and
/// notes it; `reclaim` (which attaches) finishes it, and the note is gone.
#[test]
fn check_notes_a_growth_cut_short_and_reclaim_finishes_it() {
    let dir = segment_dir();
    let good = populated_segment(dir.path(), "good.shm");
    let cut = corrupted(&good, dir.path(), "cut.shm", |b| {
        // A grower of class 0 that journaled its extent and died before
        // reserving it: nothing was published.
        let current = read_word(b, 128);
        let extents = read_word(b, class_entry(0) + 16);
        write_word(b, 200, 0);
        write_word(b, 208, extents);
        write_word(b, 216, current);
        write_word(b, 224, 4096);
        write_word(b, 232, 1);
        write_word(b, 192, 1);
    });
    let run = shmslab(&["check", p(&cut)]);
    run.expect_code(OK);
    assert!(
        run.stdout
            .contains("note: growth journal: a growth is in progress, or its grower died"),
        "{}",
        run.show()
    );
    let json = shmslab(&["check", "--json", p(&cut)])
        .expect_code(OK)
        .json();
    assert_eq!(json["consistent"], true);
    assert_eq!(json["notes"][0]["location"], "growth journal");

    shmslab(&["reclaim", p(&cut)]).expect_code(OK);
    let after = shmslab(&["check", "--json", p(&cut)])
        .expect_code(OK)
        .json();
    assert_eq!(after["notes"], serde_json::json!([]), "{after}");
    assert_eq!(
        read_word(&std::fs::read(&cut).unwrap(), 192),
        0,
        "journal idle"
    );
}

/// A header that parses but holds impossible values is "inconsistent"
/// (exit 1) for `check`, with a readable message.
#[test]
fn corrupt_header_is_exit_1() {
    let dir = segment_dir();
    let good = populated_segment(dir.path(), "good.shm");
    let cases = [
        corrupted(&good, dir.path(), "extent-count.shm", |b| {
            write_word(b, class_entry(0) + 16, 65); // more than 64 extents
        }),
        corrupted(&good, dir.path(), "extent-offset.shm", |b| {
            write_word(b, class_entry(0) + 64, 4096 + 7); // not page aligned
        }),
        corrupted(&good, dir.path(), "page-size.shm", |b| {
            write_word(b, 32, 3); // not a power of two
        }),
    ];
    for path in &cases {
        let run = shmslab(&["check", p(path)]);
        run.expect_code(INCONSISTENT);
        assert!(
            run.stdout.contains("corrupt") && run.stdout.contains("INCONSISTENT"),
            "{}",
            run.show()
        );
        let j = shmslab(&["check", "--json", p(path)])
            .expect_code(INCONSISTENT)
            .json();
        assert_eq!(j["consistent"], false, "{j:#}");
        // inspect cannot show it: one line on stderr, exit 1.
        let i = shmslab(&["inspect", p(path)]);
        i.expect_code(INCONSISTENT);
        assert!(i.stdout.is_empty(), "{}", i.show());
        assert_one_line_error(&i, path, "corrupt");
    }
}

// ---------------------------------------------------------------------------
// Channels

/// The row of the peer table this process holds in `slab`.
fn own_row(slab: &Slab) -> usize {
    slab.peers()
        .expect("peers")
        .into_iter()
        .find(|p| p.is_self)
        .expect("own row")
        .row
}

/// The line of `text` whose first whitespace-separated words are `words`.
fn line_starting<'t>(text: &'t str, words: &[&str]) -> Option<&'t str> {
    text.lines().find(|l| {
        let got: Vec<&str> = l.split_whitespace().take(words.len()).collect();
        got == words
    })
}

/// Not a test of its own: attaches, receives one message of the channel
/// root `jobs`, reports its value and its own peer row, then waits to be
/// killed with the message in flight.
#[test]
#[ignore = "a child role, run by the tests that need it"]
fn receiver_role() {
    let Some(args) = child_args("receiver") else {
        return;
    };
    let slab = Slab::attach(&args[0]).expect("attach");
    let jobs = slab
        .root_channel::<u64>("jobs")
        .expect("root")
        .expect("made by the parent");
    let d = slab.channel(jobs).expect("channel").recv().expect("recv");
    say("RECEIVED", format!("{} {}", d.value(), own_row(&slab)));
    let _ = hear(); // never answered: the parent kills us
    drop(d);
}

/// `inspect` shows the channel roots: capacity, queued, in flight by
/// receiver (peer row, and whether it lives), the totals and whether the
/// channel is closed, in the text table and the JSON; `check` finds a
/// channel with a message in flight to a dead receiver consistent, and once
/// `reclaim` puts that message back, `inspect` shows it queued.
#[test]
fn inspect_shows_channels_with_queued_and_in_flight_messages() {
    let dir = segment_dir();
    let path = dir.path().join("channels.shm");
    let slab = create(&path);
    let me = own_row(&slab);

    // "jobs": five messages, the even ones carrying a slot.
    let jobs = slab.root_or_insert_channel::<u64>("jobs", 8).expect("root");
    let ch = slab.channel(jobs).expect("channel");
    for v in 1..=5u64 {
        if v % 2 == 0 {
            let h = slab.alloc_bytes(100).expect("alloc").raw();
            ch.send_with_slot(v, h).expect("send");
        } else {
            ch.send(v).expect("send");
        }
    }
    // This process holds 1, and 2 (put back once by a dropped delivery).
    let d1 = ch.recv().expect("recv");
    drop(ch.recv().expect("recv"));
    let d2 = ch.recv().expect("recv");
    assert_eq!((d1.value(), d2.value(), d2.redeliveries()), (1, 2, 1));
    // A child takes 3 and dies holding it.
    let mut child = LiveChild::spawn("receiver_role", "receiver", &[p(&path)], &[]);
    let got = child.expect("RECEIVED", TIMEOUT);
    let (value, dead) = got.split_once(' ').expect("value and row");
    assert_eq!(value, "3", "{got}");
    let dead: usize = dead.parse().expect("row");
    child.kill();
    // "done": closed, empty, of 24-byte values.
    let done = slab
        .root_or_insert_channel::<[u8; 24]>("done", 4)
        .expect("root");
    slab.channel(done).expect("channel").close().expect("close");

    let before = std::fs::read(&path).expect("read");
    let text = shmslab(&["inspect", p(&path)]);
    text.expect_code(OK);
    let json = shmslab(&["inspect", "--json", p(&path)])
        .expect_code(OK)
        .json();
    assert_eq!(
        before,
        std::fs::read(&path).unwrap(),
        "inspect changed the file"
    );

    // Text: a "channels" section between the roots and the peers.
    let t = &text.stdout;
    let at = |s: &str| {
        t.find(s)
            .unwrap_or_else(|| panic!("missing {s:?}\n{}", text.show()))
    };
    assert!(
        at("\nroots (2)") < at("\nchannels (2)") && at("\nchannels (2)") < at("\npeers ("),
        "{}",
        text.show()
    );
    assert!(
        t.contains("name    capacity  queued  in flight  sent  acked  redelivered  closed  in flight by receiver (peer row)"),
        "{}",
        text.show()
    );
    let mut receivers = [
        (me, format!("row {me}: 2")),
        (dead, format!("row {dead} (dead): 1")),
    ];
    receivers.sort();
    let receivers = receivers.map(|r| r.1).join(", ");
    let line = line_starting(t, &["\"jobs\"", "8", "2", "3", "5", "0", "1", "no"])
        .unwrap_or_else(|| panic!("no jobs row\n{}", text.show()));
    assert!(
        line.ends_with(&format!("  {receivers}")),
        "{line:?}\n{}",
        text.show()
    );
    assert!(
        line_starting(t, &["\"done\"", "4", "0", "0", "0", "0", "0", "yes", "-"]).is_some(),
        "no done row\n{}",
        text.show()
    );
    assert!(
        t.contains(&format!(
            "  1 message in flight to dead receivers: the next receive that finds nothing \
             queued, or `shmslab reclaim {}`, puts it back in the queue",
            path.display()
        )),
        "{}",
        text.show()
    );
    assert!(t.contains("check: consistent"), "{}", text.show());

    // JSON: a "channels" array, in the roots' order.
    let chans = json["channels"].as_array().expect("channels");
    assert_eq!(chans.len(), 2, "{json:#}");
    let j = &chans[0];
    assert_eq!(j["name"], "jobs");
    assert_eq!(j["handle"], common::live::to_hex(&jobs.to_bytes()));
    for (key, want) in [
        ("value_size", 8),
        ("capacity", 8),
        ("queued", 2),
        ("in_flight", 3),
        ("sent", 5),
        ("acked", 0),
        ("redelivered", 1),
    ] {
        assert_eq!(j[key], want, "{key}: {j:#}");
    }
    assert_eq!(j["closed"], false);
    let mut want = vec![(me, true, 2), (dead, false, 1)];
    want.sort();
    let rs = j["receivers"].as_array().expect("receivers");
    assert_eq!(rs.len(), 2, "{j:#}");
    for (r, (row, alive, n)) in rs.iter().zip(want) {
        assert_eq!(r["row"], row, "{j:#}");
        assert_eq!(r["alive"], alive, "{j:#}");
        assert_eq!(r["in_flight"], n, "{j:#}");
        let token = r["token"].as_str().expect("token");
        let token = u64::from_str_radix(token.trim_start_matches("0x"), 16).expect("hex");
        assert_eq!(
            token as u32 as usize,
            row + 1,
            "the token's low half is row + 1"
        );
    }
    let j = &chans[1];
    assert_eq!(j["name"], "done");
    assert_eq!(
        (j["value_size"].as_u64(), j["capacity"].as_u64()),
        (Some(24), Some(4))
    );
    assert_eq!(
        (j["queued"].as_u64(), j["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(j["closed"], true);
    assert_eq!(j["receivers"], serde_json::json!([]));

    // A message in flight to a dead receiver is no inconsistency.
    shmslab(&["check", p(&path)]).expect_code(OK);
    let r = slab.check().expect("check");
    assert!(r.is_consistent() && r.notes.is_empty(), "{r:?}");

    // Reclaim puts it back: queued again, in flight to this process only.
    assert_eq!(slab.reclaim_dead().expect("reclaim").redelivered, 1);
    let after = shmslab(&["inspect", p(&path)]);
    after.expect_code(OK);
    let line = line_starting(
        &after.stdout,
        &["\"jobs\"", "8", "3", "2", "5", "0", "2", "no"],
    )
    .unwrap_or_else(|| panic!("no jobs row\n{}", after.show()));
    assert!(
        line.ends_with(&format!("  row {me}: 2")),
        "{}",
        after.show()
    );
    assert!(!after.stdout.contains("dead receivers"), "{}", after.show());
    d1.ack().expect("ack");
    d2.ack().expect("ack");
    let json = shmslab(&["inspect", "--json", p(&path)])
        .expect_code(OK)
        .json();
    let j = &json["channels"][0];
    assert_eq!(
        (
            j["queued"].as_u64(),
            j["in_flight"].as_u64(),
            j["acked"].as_u64()
        ),
        (Some(3), Some(0), Some(2)),
        "{j:#}"
    );
    assert!(slab.check().expect("check").is_consistent());
}

/// A segment without channels shows no channels section, and an empty
/// "channels" array.
#[test]
fn inspect_without_channels_has_no_channels_section() {
    let dir = segment_dir();
    let path = populated_segment(dir.path(), "plain.shm");
    let text = shmslab(&["inspect", p(&path)]);
    text.expect_code(OK);
    assert!(!text.stdout.contains("channels"), "{}", text.show());
    let json = shmslab(&["inspect", "--json", p(&path)])
        .expect_code(OK)
        .json();
    assert_eq!(json["channels"], serde_json::json!([]), "{json:#}");
}

/// `Slab::check` (under the channel's lock) finds a message whose slot was
/// freed, or adopted by a process, behind the channel's back; the
/// read-only `shmslab check` checks a channel's shape only (it can take no
/// lock), so it passes those, but finds an entry state the protocol never
/// writes, as `Slab::check` does.
#[test]
fn check_finds_a_forged_channel() {
    let dir = segment_dir();
    let path = dir.path().join("forged.shm");
    let slab = create(&path);
    let me = own_row(&slab);
    let jobs = slab.root_or_insert_channel::<u64>("jobs", 4).expect("root");
    let ch = slab.channel(jobs).expect("channel");
    let freed = slab.alloc_bytes(100).expect("alloc").raw();
    let adopted = slab.alloc_bytes(100).expect("alloc").raw();
    ch.send_with_slot(7, freed).expect("send");
    ch.send(8).expect("send");
    ch.send_with_slot(9, adopted).expect("send");
    let r = slab.check().expect("check");
    assert!(r.is_consistent(), "{r:?}");

    // Behind the channel's back: the raw free of a queued message's slot,
    // and a process adopting another's.
    slab.free(freed).expect("raw free");
    slab.adopt(adopted).expect("raw adopt");
    let r = slab.check().expect("check");
    let at_jobs: Vec<&shmslab::Finding> = r
        .findings
        .iter()
        .filter(|f| f.location == "channel \"jobs\"")
        .collect();
    assert_eq!(at_jobs.len(), 2, "{r:?}");
    assert!(
        at_jobs[0]
            .problem
            .starts_with("a queued message carries slot ")
            && at_jobs[0].problem.contains("which is not live"),
        "{r:?}"
    );
    assert!(
        at_jobs[1]
            .problem
            .ends_with(&format!("which is owned by peer row {me}, not the segment")),
        "{r:?}"
    );
    assert_eq!(r.findings.len(), 2, "nothing else is wrong: {r:?}");
    assert!(
        at_jobs[0]
            .to_string()
            .starts_with("channel \"jobs\": a queued message"),
        "{}",
        at_jobs[0]
    );
    // The read-only check cannot see it.
    shmslab(&["check", p(&path)]).expect_code(OK);

    // A state word no step writes (entry 1, the plain message: words
    // 16 + 5, after the 16-word header and one entry of 4 + 1 words).
    let bytes = slab.bytes_of(jobs.raw()).expect("bytes");
    slab.write_bytes(bytes, 8 * (16 + 5), &0x77u64.to_ne_bytes())
        .expect("forge");
    let run = shmslab(&["check", p(&path)]);
    run.expect_code(INCONSISTENT);
    assert!(
        run.stdout
            .lines()
            .any(|l| l == "channel \"jobs\": channel entry 1 has state word 0x77"),
        "{}",
        run.show()
    );
    let j = shmslab(&["check", "--json", p(&path)])
        .expect_code(INCONSISTENT)
        .json();
    assert!(
        j["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["location"] == "channel \"jobs\""),
        "{j:#}"
    );
    let r = slab.check().expect("check");
    assert!(
        r.findings
            .iter()
            .any(|f| f.location == "channel \"jobs\"" && f.problem.contains("state word 0x77")),
        "{r:?}"
    );
    // inspect leaves a channel it cannot read out of the table, and says
    // the segment is inconsistent.
    let i = shmslab(&["inspect", p(&path)]);
    i.expect_code(OK);
    assert!(!i.stdout.contains("\nchannels ("), "{}", i.show());
    assert!(i.stdout.contains("check: INCONSISTENT"), "{}", i.show());
    let ij = shmslab(&["inspect", "--json", p(&path)])
        .expect_code(OK)
        .json();
    assert_eq!(ij["channels"], serde_json::json!([]), "{ij:#}");
}

// ---------------------------------------------------------------------------
// Files that are not readable segments (exit 2)

/// The run printed exactly one line on stderr, naming `path` and containing
/// `words`.
fn assert_one_line_error(run: &Run, path: &Path, words: &str) {
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr\n{}",
        run.show()
    );
    assert!(
        lines[0].starts_with("shmslab: error: ")
            && lines[0].contains(&path.display().to_string())
            && lines[0].contains(words),
        "expected an error naming the path and {words:?}\n{}",
        run.show()
    );
}

#[test]
fn unreadable_files_are_exit_2() {
    let dir = segment_dir();
    let good = dir.path().join("good.shm");
    let slab = create(&good);
    for _ in 0..40 {
        slab.alloc_bytes(5000).expect("alloc"); // grow past the initial size
    }
    drop(slab);
    let current = read_word(&std::fs::read(&good).unwrap(), 128);

    let missing = dir.path().join("missing.shm");
    let empty = dir.path().join("empty.shm");
    std::fs::write(&empty, b"").unwrap();
    let random = dir.path().join("random.bin");
    let mut rng = XorShift::new(42);
    let noise: Vec<u8> = (0..8192).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(&random, &noise).unwrap();
    let zeros = dir.path().join("zeros.bin");
    std::fs::write(&zeros, vec![0u8; 8192]).unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello, this is not a segment\n").unwrap();
    let version = corrupted(&good, dir.path(), "version.shm", |b| {
        write_word(b, 8, shmslab::limits::FORMAT_VERSION + 1)
    });
    let arch = corrupted(&good, dir.path(), "arch.shm", |b| {
        write_word(b, 16, 0x0102_0304_0506_0708u64.swap_bytes())
    });
    let short = corrupted(&good, dir.path(), "short.shm", |b| b.truncate(300));
    // Shorter than the extents the header publishes.
    let cut = corrupted(&good, dir.path(), "cut.shm", |b| {
        b.truncate(current as usize - 4096)
    });
    let a_dir = dir.path().join("a-directory");
    std::fs::create_dir(&a_dir).unwrap();
    let fifo = dir.path().join("a-fifo");
    let c = std::ffi::CString::new(p(&fifo)).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path; mkfifo has no other
    // preconditions.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);

    let cases: [(&Path, &str); 11] = [
        (&missing, "no such file"),
        (&empty, "empty"),
        (&random, "not a shmslab segment"),
        (&zeros, "not initialised"),
        (&text, "not a shmslab segment"),
        (&version, "version 2"),
        (&arch, "architecture"),
        (&short, "truncated"),
        (&cut, "truncated"),
        (&a_dir, "directory"),
        (&fifo, "not a regular file"),
    ];
    for (path, words) in cases {
        for cmd in ["inspect", "check", "reclaim"] {
            let run = shmslab(&[cmd, p(path)]);
            run.expect_code(UNREADABLE);
            assert_one_line_error(&run, path, words);
            assert!(run.stdout.is_empty(), "{}", run.show());
        }
        let j = shmslab(&["check", "--json", p(path)])
            .expect_code(UNREADABLE)
            .json();
        assert_eq!(j["status"], "unreadable", "{j:#}");
        assert!(j["error"]["message"].as_str().unwrap().contains(words));
        let j = shmslab(&["inspect", "--json", p(path)]);
        j.expect_code(UNREADABLE);
    }
    // None of this touched the files.
    assert_eq!(std::fs::read(&random).unwrap(), noise);
    assert!(!missing.exists());
}

/// A way to run the tool as a user who does not own the test's files: this
/// user when it is not root (root may read anything), else `nobody` through
/// `setpriv`, if that works here.
fn unprivileged() -> Option<Vec<String>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some(Vec::new());
    }
    let setpriv: Vec<String> = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]
    .map(String::from)
    .into();
    let works = Command::new(&setpriv[0])
        .args(&setpriv[1..])
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    works.then_some(setpriv)
}

#[test]
fn permission_denied_is_exit_2() {
    use std::os::unix::fs::PermissionsExt;
    let Some(prefix) = unprivileged() else {
        eprintln!("skipped: running as root without a working setpriv");
        return;
    };
    let as_user = |args: &[&str]| {
        let mut cmd = match prefix.split_first() {
            Some((exe, rest)) => {
                let mut c = Command::new(exe);
                c.args(rest).arg(env!("CARGO_BIN_EXE_shmslab"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_shmslab")),
        };
        cmd.args(args);
        run(cmd, args)
    };
    let dir = segment_dir();
    let mode = |path: &Path, m: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(dir.path(), 0o755);
    let path = dir.path().join("locked.shm");
    drop(create(&path));
    let locked = if prefix.is_empty() { 0o000 } else { 0o600 };
    mode(&path, locked);
    for cmd in ["inspect", "check", "reclaim"] {
        let run = as_user(&[cmd, p(&path)]);
        run.expect_code(UNREADABLE);
        assert_one_line_error(&run, &path, "permission denied");
    }
    // Reading is enough to inspect and check, not to reclaim.
    mode(&path, if prefix.is_empty() { 0o400 } else { 0o644 });
    let before = std::fs::read(&path).unwrap();
    as_user(&["inspect", p(&path)]).expect_code(OK);
    as_user(&["check", p(&path)]).expect_code(OK);
    let run = as_user(&["reclaim", p(&path)]);
    run.expect_code(UNREADABLE);
    assert_one_line_error(&run, &path, "read and write");
    assert_eq!(before, std::fs::read(&path).unwrap());
}

#[test]
fn usage_errors_are_exit_2() {
    shmslab::<&str>(&[]).expect_code(UNREADABLE);
    shmslab(&["inspect"]).expect_code(UNREADABLE);
    shmslab(&["frobnicate", "x"]).expect_code(UNREADABLE);
    shmslab(&["inspect", "--count", "0", "x"]).expect_code(UNREADABLE);
    let help = shmslab(&["--help"]);
    help.expect_code(OK);
    for cmd in ["inspect", "check", "reclaim"] {
        assert!(help.stdout.contains(cmd), "{}", help.show());
    }
}

/// The offsets of the words of a segment that mean something: the header,
/// the used part of each class entry, the roots and peer rows in use, and
/// the first metadata words of every extent.
fn live_words(b: &[u8]) -> Vec<u64> {
    let mut offs: Vec<u64> = (0..30).map(|w| w * 8).collect();
    for c in 0..read_word(b, 56) {
        let e = class_entry(c);
        offs.extend((0..8).map(|w| e + w * 8));
        let extents = read_word(b, e + 16).min(64);
        for x in 0..extents {
            offs.extend([e + 64 + 16 * x, e + 72 + 16 * x]);
            let (at, slots) = (read_word(b, e + 64 + 16 * x), read_word(b, e + 72 + 16 * x));
            offs.extend((0..slots.min(32)).map(|i| at + 8 * i));
        }
    }
    let roots = root_table(b);
    offs.extend((0..2 * ROOT_BYTES / 8).map(|w| roots + w * 8));
    let peers = peer_table(b);
    offs.extend((0..2 * 64 / 8).map(|w| peers + w * 8));
    offs
}

/// Random damage to a populated segment's live words never makes the tool
/// crash, hang or print garbage: every run ends with exit 0, 1 or 2, errors
/// are one line, and `--json` output always parses.
#[test]
fn never_crashes_on_random_corruption() {
    let dir = segment_dir();
    let good = populated_segment(dir.path(), "good.shm");
    let bytes = std::fs::read(&good).unwrap();
    let offsets = live_words(&bytes);
    let mut rng = XorShift::new(0x5eed);
    let mut codes = [0usize; 3];
    const ROUNDS: usize = 150;
    for round in 0..ROUNDS {
        let path = corrupted(&good, dir.path(), &format!("fuzz-{round}.shm"), |b| {
            for _ in 0..1 + rng.below(3) {
                let off = offsets[rng.below(offsets.len() as u64) as usize];
                let old = read_word(b, off);
                let value = match rng.below(6) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => old ^ (1 << rng.below(64)),
                    3 => old.wrapping_add(1 + rng.below(4096)),
                    4 => rng.below(64),
                    _ => rng.next_u64(),
                };
                write_word(b, off, value);
            }
        });
        let before = std::fs::read(&path).unwrap();
        let check = shmslab(&["check", "--json", p(&path)]);
        assert!(
            (0..=2).contains(&check.code),
            "round {round}\n{}",
            check.show()
        );
        let j = check.json();
        assert!(j["status"].is_string(), "{j:#}");
        codes[check.code as usize] += 1;
        let inspect = shmslab(&["inspect", p(&path)]);
        assert!(
            (0..=2).contains(&inspect.code),
            "round {round}\n{}",
            inspect.show()
        );
        if inspect.code != OK {
            assert_eq!(inspect.stderr.lines().count(), 1, "{}", inspect.show());
        }
        assert_eq!(before, std::fs::read(&path).unwrap(), "round {round}");
    }
    eprintln!("check exit codes (0, 1, 2) over {ROUNDS} damaged files: {codes:?}");
    assert!(
        codes[1] > 0 && codes[2] > 0,
        "the damage should find both inconsistent and unreadable files: {codes:?}"
    );
}

// ---------------------------------------------------------------------------
// --watch

/// Child: attaches and keeps allocating (the file grows) until told to stop.
#[test]
#[ignore = "a child role, run by the tests that need it"]
fn churn_role() {
    let Some(args) = child_args("churn") else {
        return;
    };
    let slab = Slab::attach(&args[0]).expect("attach");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let _ = hear();
        s.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    say("STARTED", "");
    // Grows the file up to 60 000 held slots (about 20 MiB), then churns in
    // place; stops when told, or after 10 s.
    let started = Instant::now();
    let mut held = Vec::new();
    let mut i = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < TIMEOUT / 3 {
        held.push(slab.alloc_bytes(64 + (i % 4) * 200).expect("alloc"));
        if i % 4 == 0 || held.len() > 60_000 {
            let h = held.swap_remove(i % held.len());
            slab.free(h).expect("free");
        }
        i += 1;
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    say("DONE", held.len());
}

#[test]
fn watch_redraws_while_another_process_works() {
    let dir = segment_dir();
    let path = dir.path().join("watched.shm");
    drop(create(&path));
    let mut child = LiveChild::spawn("churn_role", "churn", &[p(&path)], &[]);
    child.expect("STARTED", TIMEOUT);

    // JSON: one document a line, every one a snapshot (a segment growing
    // under inspect is never "truncated"); the growth counter never goes
    // back.
    const FRAMES: usize = 25;
    let run = shmslab(&[
        "inspect",
        "--json",
        "--count",
        &FRAMES.to_string(),
        "--interval",
        "0.01",
        p(&path),
    ]);
    run.expect_code(OK);
    let frames: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(frames.len(), FRAMES, "{}", run.show());
    for f in &frames {
        assert!(
            f["error"].is_null(),
            "a frame is an error, not a snapshot: {f:#}"
        );
        assert!(
            f["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|peer| peer["pid"] == child.pid() && peer["alive"] == true),
            "{f:#}"
        );
    }
    let gens: Vec<u64> = frames
        .iter()
        .map(|f| f["generation"].as_u64().unwrap())
        .collect();
    assert!(gens.windows(2).all(|w| w[0] <= w[1]), "{gens:?}");
    assert!(
        gens[0] < gens[FRAMES - 1],
        "the file should grow while watched: {gens:?}"
    );

    let run = shmslab(&[
        "inspect",
        "--watch",
        "--count",
        "4",
        "--interval",
        "0.05",
        p(&path),
    ]);
    run.expect_code(OK);
    assert_eq!(
        run.stdout.matches("\x1b[2J\x1b[H").count(),
        4,
        "{}",
        run.show()
    );
    assert!(run.stdout.contains("frame 4/4"), "{}", run.show());
    assert_eq!(
        run.stdout.matches("size classes (15)").count(),
        4,
        "every frame shows the segment\n{}",
        run.show()
    );

    child.send("STOP");
    child.expect("DONE", TIMEOUT);
    child.wait_success(TIMEOUT);
    shmslab(&["check", p(&path)]).expect_code(OK);
}

#[test]
fn watch_keeps_the_file_unchanged_and_reports_a_vanished_file() {
    let dir = segment_dir();
    let path = populated_segment(dir.path(), "still.shm");
    let before = std::fs::read(&path).unwrap();
    shmslab(&["inspect", "--count", "3", "--interval", "0.02", p(&path)]).expect_code(OK);
    assert_eq!(
        before,
        std::fs::read(&path).unwrap(),
        "watch changed the file"
    );

    let gone = dir.path().join("gone.shm");
    let run = shmslab(&["inspect", "--count", "2", "--interval", "0.02", p(&gone)]);
    run.expect_code(UNREADABLE);
    assert_eq!(
        run.stdout.matches("no such file").count(),
        2,
        "{}",
        run.show()
    );
}

// ---------------------------------------------------------------------------
// Library bugs found while writing the tool

/// `shmslab::inspect` opens the path `O_RDONLY` without `O_NONBLOCK`, so on
/// a FIFO it blocks until a writer opens it — forever, for a tool pointed
/// at the wrong path. (The binary stats the path first and refuses anything
/// but a regular file, so `shmslab inspect FIFO` is fine.) Expected: an
/// error, at once.
#[test]
fn library_inspect_of_a_fifo_returns() {
    let dir = segment_dir();
    let fifo = dir.path().join("a-fifo");
    let c = std::ffi::CString::new(p(&fifo)).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path; mkfifo has no other
    // preconditions.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let result = common::live::run_with_timeout("inspect of a FIFO", Duration::from_secs(3), {
        let fifo = fifo.clone();
        move || {
            shmslab::inspect(&fifo)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    });
    assert!(result.is_err(), "a FIFO is not a segment");
    // And the tool itself refuses it without blocking.
    let run = shmslab(&["inspect", p(&fifo)]);
    run.expect_code(UNREADABLE);
    assert_one_line_error(&run, &fifo, "not a regular file");
}
