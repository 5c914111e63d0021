//! Helpers shared by the hardening suites (`corruption`, `forged`,
//! `hostile`, `full_disk`): the documented byte layout, outcome tallies by
//! error variant, and a child-process runner with a per-case watchdog.
//!
//! The layout constants are docs/FORMAT.md: if they change, so does
//! `FORMAT_VERSION`, and these suites must follow.

#![allow(dead_code)] // each suite uses the part it needs

use shmslab::Error;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// The file layout (docs/FORMAT.md).
// ---------------------------------------------------------------------------

pub const PAGE: u64 = 4096;
pub const HEADER_BYTES: usize = 512;
pub const SEGMENT_ID: usize = 40;
pub const DATA_START: usize = 48;
pub const CLASS_COUNT: usize = 56;
pub const ROOT_CAPACITY: usize = 64;
pub const PEER_CAPACITY: usize = 72;
pub const CREATED_AT: usize = 96;
pub const CURRENT_SIZE: usize = 128;
pub const GENERATION: usize = 136;
pub const GROW_LOCK: usize = 144;
pub const ROOTS_LOCK: usize = 152;
pub const JOURNAL: usize = 192;
pub const JOURNAL_WORDS: usize = 6;

pub const CLASS_TABLE: usize = 512;
pub const CLASS_ENTRY_BYTES: usize = 64 + 16 * 64;
pub const CLS_SLOT_SIZE: usize = 0;
pub const CLS_FIRST_SLOTS: usize = 8;
pub const CLS_EXTENT_COUNT: usize = 16;
pub const CLS_FREE_HEAD: usize = 24;
pub const CLS_FREE_COUNT: usize = 32;
pub const CLS_FRESH: usize = 40;
pub const CLS_LOCK: usize = 48;
pub const CLS_EXTENTS: usize = 64;

pub const ROOT_ENTRY_BYTES: usize = 128;
pub const ROOT_HANDLE: usize = 88;
pub const PEER_ROW_BYTES: usize = 64;
pub const PEER_STATE: usize = 0;
pub const PEER_PID: usize = 8;
pub const PEER_START: usize = 16;
pub const PEER_INCARNATION: usize = 24;

/// The end-of-list slot id.
pub const NIL: u64 = (1 << 30) - 1;
pub const STATE_FREE: u64 = 1;
pub const STATE_CACHED: u64 = 2;
pub const STATE_ALLOCATED: u64 = 3;

pub fn class_entry(class: usize) -> usize {
    CLASS_TABLE + CLASS_ENTRY_BYTES * class
}

pub fn extent_entry(class: usize, extent: usize) -> usize {
    class_entry(class) + CLS_EXTENTS + 16 * extent
}

/// A metadata word: `generation:32 | state:2 | payload:30`.
pub fn meta(generation: u32, state: u64, payload: u64) -> u64 {
    ((generation as u64) << 32) | ((state & 3) << 30) | (payload & NIL)
}

/// A lock token: `incarnation << 32 | (row + 1)`.
pub fn token(row: u64, incarnation: u64) -> u64 {
    (incarnation << 32) | (row + 1)
}

pub fn get(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())
}

pub fn put(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_ne_bytes());
}

/// Offsets of the tables of a segment, read from its header.
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    pub classes: usize,
    pub root_table: usize,
    pub roots: usize,
    pub peer_table: usize,
    pub peers: usize,
    pub data_start: usize,
}

impl Tables {
    pub fn read(bytes: &[u8]) -> Self {
        let classes = get(bytes, CLASS_COUNT) as usize;
        let roots = get(bytes, ROOT_CAPACITY) as usize;
        let peers = get(bytes, PEER_CAPACITY) as usize;
        let root_table = CLASS_TABLE + CLASS_ENTRY_BYTES * classes;
        let peer_table = root_table + ROOT_ENTRY_BYTES * roots;
        Tables {
            classes,
            root_table,
            roots,
            peer_table,
            peers,
            data_start: get(bytes, DATA_START) as usize,
        }
    }

    pub fn root_entry(&self, i: usize) -> usize {
        self.root_table + ROOT_ENTRY_BYTES * i
    }

    pub fn peer_row(&self, i: usize) -> usize {
        self.peer_table + PEER_ROW_BYTES * i
    }
}

/// One published extent, as laid out in the file.
#[derive(Debug, Clone, Copy)]
pub struct Extent {
    pub class: usize,
    pub index: usize,
    pub offset: usize,
    pub slots: usize,
    pub slot_size: usize,
    /// Offset of the first slot's data.
    pub data: usize,
    /// Bytes of the extent, padded to a page.
    pub bytes: usize,
}

impl Extent {
    pub fn meta_at(&self, i: usize) -> usize {
        self.offset + 8 * i
    }

    pub fn data_at(&self, i: usize) -> usize {
        self.data + self.slot_size * i
    }
}

fn align_up(x: usize, to: usize) -> usize {
    x.div_ceil(to).saturating_mul(to)
}

/// The layout of an extent of `slots` slots of `slot_size` bytes: offset of
/// the data from the extent start, and the extent's bytes (saturating, for
/// sizes read from a file that may hold garbage).
pub fn extent_layout(slot_size: usize, slots: usize) -> (usize, usize) {
    let page = PAGE as usize;
    let align = if slot_size >= page { page } else { 64 };
    let data = align_up(slots.saturating_mul(8), align);
    (
        data,
        align_up(data.saturating_add(slot_size.saturating_mul(slots)), page),
    )
}

/// Every published extent of every class of a (valid) segment's bytes.
pub fn extents(bytes: &[u8]) -> Vec<Extent> {
    let t = Tables::read(bytes);
    let mut out = Vec::new();
    for c in 0..t.classes {
        let slot_size = get(bytes, class_entry(c) + CLS_SLOT_SIZE) as usize;
        let count = get(bytes, class_entry(c) + CLS_EXTENT_COUNT) as usize;
        for e in 0..count {
            let offset = get(bytes, extent_entry(c, e)) as usize;
            let slots = get(bytes, extent_entry(c, e) + 8) as usize;
            let (data, len) = extent_layout(slot_size, slots);
            out.push(Extent {
                class: c,
                index: e,
                offset,
                slots,
                slot_size,
                data: offset + data,
                bytes: len,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Outcomes.
// ---------------------------------------------------------------------------

pub use crate::common::outcome;

/// Counts by key (`"op:outcome"`).
#[derive(Debug, Default, Clone)]
pub struct Tally(pub BTreeMap<String, u64>);

impl Tally {
    pub fn add(&mut self, key: impl Into<String>, n: u64) {
        *self.0.entry(key.into()).or_insert(0) += n;
    }

    /// Counts `op:outcome` for a result and passes the result on.
    pub fn note<T>(&mut self, op: &str, r: Result<T, Error>) -> Result<T, Error> {
        self.add(format!("{op}:{}", outcome(&r)), 1);
        r
    }

    pub fn merge(&mut self, other: &Tally) {
        for (k, v) in &other.0 {
            self.add(k.clone(), *v);
        }
    }

    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// Sum over keys starting with `prefix`.
    pub fn sum_prefix(&self, prefix: &str) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// One line, `key=value` separated by spaces (for a child's message).
    pub fn encode(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn decode(line: &str) -> Tally {
        let mut t = Tally::default();
        for part in line.split_whitespace() {
            if let Some((k, v)) = part.rsplit_once('=') {
                t.add(k, v.parse().unwrap_or(0));
            }
        }
        t
    }

    /// A table for the test's output, grouped by operation.
    pub fn render(&self, title: &str) -> String {
        let mut out = format!("{title}\n");
        let mut by_op: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
        for (k, v) in &self.0 {
            let (op, what) = k.split_once(':').unwrap_or((k.as_str(), ""));
            by_op.entry(op).or_default().push((what, *v));
        }
        for (op, outcomes) in by_op {
            let parts: Vec<String> = outcomes
                .iter()
                .map(|(w, v)| {
                    if w.is_empty() {
                        format!("{v}")
                    } else {
                        format!("{w} {v}")
                    }
                })
                .collect();
            out.push_str(&format!("  {op:<22} {}\n", parts.join(", ")));
        }
        out
    }
}

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            let v = v.trim().replace('_', "");
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            }
        })
        .unwrap_or(default)
}

/// Bugs already reported, each with a minimal `#[ignore]`d test: a panic or
/// violation whose text contains the first string is counted as that bug
/// (and printed) instead of failing the randomized suites, so they keep
/// guarding everything else. Remove an entry once its bug is fixed.
pub const KNOWN_BUGS: &[(&str, &str)] = &[];

/// The known bug a failure's text shows, if any.
pub fn known_bug(text: &str) -> Option<&'static str> {
    KNOWN_BUGS
        .iter()
        .find(|(sig, _)| text.contains(sig))
        .map(|(_, what)| *what)
}

/// A panic payload as text.
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

/// Lines `@@key payload` that a child printed, in order.
pub fn messages(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let at = line.find("@@")?;
            let body = line[at + 2..].trim();
            let (k, p) = body.split_once(' ').unwrap_or((body, ""));
            Some((k.to_string(), p.trim().to_string()))
        })
        .collect()
}

/// In a child: one message line for the parent.
pub fn say(key: &str, payload: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@@{key} {payload}");
    let _ = out.flush();
}

// ---------------------------------------------------------------------------
// Watched children.
// ---------------------------------------------------------------------------

/// How a watched child ended.
#[derive(Debug)]
pub struct Watched {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Killed by the watchdog: `progress` stopped moving for too long.
    pub hung: bool,
    pub elapsed: Duration,
}

impl Watched {
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    pub fn describe(&self) -> String {
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "status: {:?} (signal {:?}), hung: {}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            self.status.code(),
            self.signal(),
            self.hung,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

/// Waits for `child`, collecting its output; kills it (that child only) if
/// `progress()` returns the same value for longer than `stall`, or if the
/// whole run passes `limit`.
pub fn watch(
    child: Child,
    stall: Duration,
    limit: Duration,
    mut progress: impl FnMut() -> u64,
) -> Watched {
    let started = Instant::now();
    let mut last = progress();
    let mut moved = Instant::now();
    let done = crate::common::collect(child, Duration::from_millis(20), || {
        let now = progress();
        if now != last {
            last = now;
            moved = Instant::now();
        }
        moved.elapsed() > stall || started.elapsed() > limit
    });
    Watched {
        status: done.status,
        stdout: String::from_utf8_lossy(&done.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
        hung: done.killed,
        elapsed: started.elapsed(),
    }
}

/// The bytes a slot is stamped with: a stream of xorshift words from `key`,
/// cut to `len` bytes.
pub fn stamp(len: usize, key: u64) -> Vec<u8> {
    let mut rng = crate::common::live::XorShift::new(key);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_ne_bytes());
    }
    out.truncate(len);
    out
}
