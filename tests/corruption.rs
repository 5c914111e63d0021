//! Corrupted files: a seeded fuzz loop flips, overwrites and truncates bytes
//! in every part of a *populated* segment (header, growth journal, class
//! table, extent entries, free-list heads, free-list links, every other slot
//! metadata word, slot data, roots, peers; each region picked by weight,
//! then an offset inside it), then uses the mutated copy: `inspect()` (the
//! read-only path) first, then `attach` (or `attach_fd` for a quarter of the
//! cases) and, if that succeeds, reads, writes and frees of handles kept
//! from building the segment, allocations of every class (the largest until
//! it grows, which also repairs a forged growth journal), frees and reads of
//! the new slots, typed values and slices, root lookups, insertion and
//! removal, `check()`, `stats()`, `reclaim_dead()`, `trim()` and the drop.
//!
//! Every outcome must be `Ok` or a typed `Err`: no panic, no signal, no hang.
//! Beyond that, no case may show
//! - two live new slots over the same bytes,
//! - a known live slot whose bytes changed though no edit of the case
//!   touched them (checked when no edit moved slots: header layout, extent
//!   entries, a new file length),
//! - extents that overlap once this process has grown the segment (attach
//!   proved there were none).
//!
//! The cases run in batches in child processes (the test binary re-run), so
//! a `SIGSEGV`, `SIGBUS` or abort is caught and reported with its case
//! number and seed, and a watchdog kills a child whose current case stops
//! making progress. Failures that match a bug already reported (see
//! `hardening::KNOWN_BUGS`, each with its own `#[ignore]`d test) are printed
//! and counted, not failed, so the suite keeps guarding everything else.
//!
//! `SHMSLAB_FUZZ_CASES` sets the number of cases (default below),
//! `SHMSLAB_FUZZ_SEED` the base seed and `SHMSLAB_FUZZ_FIRST` the first case
//! number, so a reported case is replayed with
//! `SHMSLAB_FUZZ_FIRST=<case> SHMSLAB_FUZZ_CASES=1 cargo test --test corruption`
//! (`SHMSLAB_FUZZ_VERBOSE=1` prints each case's edits and the checker's
//! findings).
//! The fixture is deterministic (its segment id, times and pids are
//! normalised; `the_fixture_is_the_same_on_every_build` checks it), so a case
//! number and seed name the same bytes on every run.

mod common;
mod hardening;

use common::live::{SharedWords, XorShift};
use hardening::*;
use shmslab::{Slab, SlotRef};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The fixture's classes: several extents each once populated.
const CLASSES: [u64; 4] = [64, 256, 2048, 16384];
/// Allocations the first process makes per class: enough for three extents.
const FIRST_ALLOCS: [usize; 4] = [700, 150, 20, 3];
const ROOTS: usize = 4;
const PEERS: usize = 4;
/// Written over the random segment id so the fixture is the same every run.
const FIXED_SEGMENT_ID: u32 = 0x5EED_C0DE;

/// Cases per fuzz test: 1,500 in a debug build (the README's quick
/// `cargo test`: a few seconds), 100,000 in a release build (about 35 s;
/// `.ci/run` runs it, with overflow checks on). Set `SHMSLAB_FUZZ_CASES`
/// for another size.
const DEFAULT_CASES: u64 = if cfg!(debug_assertions) {
    1_500
} else {
    100_000
};
const DEFAULT_SEED: u64 = 0xC0FF_EE00_D15E_A5E5;
/// A case that makes no progress this long is a hang.
const STALL: Duration = Duration::from_secs(30);
/// Child processes run side by side.
const WORKERS: u64 = 2;

const ROLE: &str = "corruption-batch";
const TEST: &str = "corrupted_segments_give_typed_results_without_panics_signals_or_hangs";

// ---------------------------------------------------------------------------
// The populated fixture.
// ---------------------------------------------------------------------------

fn handle_key(h: &SlotRef) -> u64 {
    let b = h.to_bytes();
    u64::from_ne_bytes(b[4..12].try_into().unwrap()) ^ ((h.parts().class as u64) << 56)
}

fn with_segment(h: SlotRef, segment: u32) -> SlotRef {
    let mut b = h.to_bytes();
    b[..4].copy_from_slice(&segment.to_ne_bytes());
    SlotRef::from_bytes(b)
}

/// A live handle of the fixture and where its slot's bytes are.
#[derive(Clone, Copy)]
struct Known {
    handle: SlotRef,
    data: usize,
    len: usize,
}

/// The slot a handle names: (class, extent, index).
fn slot_of(h: &SlotRef) -> (usize, u8, u32) {
    let b = h.to_bytes();
    (
        b[12] as usize,
        b[13],
        u32::from_ne_bytes(b[4..8].try_into().unwrap()),
    )
}

/// A populated segment's bytes and the handles made while building it.
struct Fixture {
    bytes: Vec<u8>,
    known: Vec<Known>,
    live: Vec<SlotRef>,
    stale: Vec<SlotRef>,
    tables: Tables,
    extents: Vec<Extent>,
    regions: Regions,
    /// Also forge growth journals whose extent lies over existing ones
    /// (a known bug: see `fuzz_with_overlapping_growth_journals`).
    overlapping_journals: bool,
}

/// Builds the fixture: two processes' worth of activity in one segment. The
/// copy is taken while both `Slab`s are attached, so in the copy both rows
/// read LIVE while nobody holds their liveness locks: two dead peers, one
/// owning allocated and cached slots of every class.
fn build_fixture(dir: &Path) -> (Vec<u8>, Vec<SlotRef>, Vec<SlotRef>) {
    let path = dir.join("fixture-build.shm");
    let a = Slab::builder()
        .classes(&CLASSES)
        .roots(ROOTS)
        .peers(PEERS)
        .initial_size(0)
        .create(&path)
        .expect("create the fixture");
    let b = Slab::attach(&path).expect("second attachment");
    let mut live = Vec::new();
    let mut stale = Vec::new();
    let alloc = |s: &Slab, size: u64, live: &mut Vec<SlotRef>| {
        let h = s.alloc_bytes(size as usize).expect("fixture alloc");
        s.write_bytes(h, 0, &stamp(size as usize, handle_key(&h.raw())))
            .expect("stamp");
        live.push(h.raw());
    };
    // Roots first (their objects belong to the segment), then the second
    // process allocates and frees a few: slots cached by it.
    let answer = a.root_or_insert("answer", 42u64).expect("root");
    let table = a.root_or_insert("table", [7u64; 32]).expect("root");
    let big = b.root_or_insert("big", [3u8; 2000]).expect("root");
    live.extend([answer.raw(), table.raw(), big.raw()]);
    for &size in &CLASSES {
        for k in 0..6 {
            let h = b.alloc_bytes(size as usize).expect("b alloc");
            b.write_bytes(h, 0, &stamp(size as usize, handle_key(&h.raw())))
                .unwrap();
            if k % 3 == 0 {
                b.free(h).unwrap();
                stale.push(h.raw());
            } else {
                live.push(h.raw());
            }
        }
    }
    // The first process fills several extents per class, frees every third
    // slot and flushes its caches: long shared free lists.
    let mut mine = Vec::new();
    for (&size, &n) in CLASSES.iter().zip(&FIRST_ALLOCS) {
        for _ in 0..n {
            alloc(&a, size, &mut mine);
        }
    }
    for (i, h) in mine.into_iter().enumerate() {
        if i % 3 == 1 {
            a.free(h).expect("fixture free");
            stale.push(h);
        } else {
            live.push(h);
        }
    }
    a.trim().expect("trim");
    let report = a.check().expect("check");
    assert!(report.is_consistent(), "{:?}", report.findings);
    let mut bytes = std::fs::read(&path).expect("read the fixture");
    drop(b);
    drop(a);
    let _ = std::fs::remove_file(&path);

    // Normalise what differs between runs.
    let seg = get(&bytes, SEGMENT_ID) as u32;
    put(&mut bytes, SEGMENT_ID, FIXED_SEGMENT_ID as u64);
    put(&mut bytes, CREATED_AT, 0);
    let t = Tables::read(&bytes);
    for i in 0..t.roots {
        let at = t.root_entry(i) + ROOT_HANDLE;
        if bytes[at..at + 4] == seg.to_ne_bytes() {
            bytes[at..at + 4].copy_from_slice(&FIXED_SEGMENT_ID.to_ne_bytes());
        }
    }
    for row in 0..t.peers {
        let base = t.peer_row(row);
        if get(&bytes, base + PEER_STATE) != 0 {
            put(&mut bytes, base + PEER_PID, 0x7fff_0000 + row as u64);
            put(&mut bytes, base + PEER_START, 12345);
        }
    }
    let fix = |v: &mut Vec<SlotRef>| {
        for h in v.iter_mut() {
            *h = with_segment(*h, FIXED_SEGMENT_ID);
        }
    };
    fix(&mut live);
    fix(&mut stale);
    (bytes, live, stale)
}

/// Where to aim: word offsets (or byte ranges) of each part of the file.
struct Regions {
    header: Vec<usize>,
    journal: Vec<usize>,
    class_words: Vec<usize>,
    free_heads: Vec<usize>,
    extent_words: Vec<usize>,
    list_links: Vec<usize>,
    other_meta: Vec<usize>,
    data: Vec<(usize, usize)>,
    root_words: Vec<usize>,
    peer_words: Vec<usize>,
    /// Lock words (grow, roots, classes).
    locks: Vec<usize>,
}

impl Regions {
    fn of(bytes: &[u8], t: &Tables, extents: &[Extent]) -> Self {
        let words = |from: usize, to: usize| (from..to).step_by(8).collect::<Vec<_>>();
        let mut class_words = Vec::new();
        let mut extent_words = Vec::new();
        let mut free_heads = Vec::new();
        let mut locks = vec![GROW_LOCK, ROOTS_LOCK];
        let mut list_links = Vec::new();
        for c in 0..t.classes {
            let e = class_entry(c);
            class_words.extend(words(e, e + CLS_EXTENTS));
            free_heads.push(e + CLS_FREE_HEAD);
            locks.push(e + CLS_LOCK);
            let count = get(bytes, e + CLS_EXTENT_COUNT) as usize;
            extent_words.extend(words(extent_entry(c, 0), extent_entry(c, count + 2)));
            // Walk the free list: the links are these slots' words.
            let mut id = get(bytes, e + CLS_FREE_HEAD) & NIL;
            let mut steps = 0;
            while id != NIL && steps < 100_000 {
                let (ext, idx) = ((id >> 24) as usize, (id & 0xff_ffff) as usize);
                let Some(x) = extents.iter().find(|x| x.class == c && x.index == ext) else {
                    break;
                };
                let at = x.meta_at(idx);
                list_links.push(at);
                id = get(bytes, at) & NIL;
                steps += 1;
            }
        }
        let other_meta = extents
            .iter()
            .flat_map(|x| (0..x.slots).map(|i| x.meta_at(i)))
            .filter(|at| !list_links.contains(at))
            .collect();
        let data = extents
            .iter()
            .flat_map(|x| (0..x.slots).map(|i| (x.data_at(i), x.slot_size)))
            .collect();
        Regions {
            header: words(0, HEADER_BYTES),
            journal: words(JOURNAL, JOURNAL + 8 * JOURNAL_WORDS),
            class_words,
            free_heads,
            extent_words,
            list_links,
            other_meta,
            data,
            root_words: words(t.root_table, t.peer_table),
            peer_words: words(t.peer_table, t.peer_table + PEER_ROW_BYTES * t.peers),
            locks,
        }
    }
}

impl Fixture {
    fn new(bytes: Vec<u8>, live: Vec<SlotRef>, stale: Vec<SlotRef>) -> Self {
        let tables = Tables::read(&bytes);
        let extents = extents(&bytes);
        let regions = Regions::of(&bytes, &tables, &extents);
        let known = live
            .iter()
            .map(|h| {
                let (c, e, i) = slot_of(h);
                let x = extents
                    .iter()
                    .find(|x| x.class == c && x.index == e as usize)
                    .expect("a live handle's extent");
                Known {
                    handle: *h,
                    data: x.data_at(i as usize),
                    len: x.slot_size,
                }
            })
            .collect();
        Fixture {
            bytes,
            known,
            live,
            stale,
            tables,
            extents,
            regions,
            overlapping_journals: false,
        }
    }

    fn save(&self, dir: &Path) {
        std::fs::write(dir.join("fixture.bin"), &self.bytes).unwrap();
        let mut h = Vec::new();
        for list in [&self.live, &self.stale] {
            h.extend_from_slice(&(list.len() as u64).to_ne_bytes());
            for r in list {
                h.extend_from_slice(&r.to_bytes());
            }
        }
        std::fs::write(dir.join("handles.bin"), h).unwrap();
    }

    fn load(dir: &Path) -> Self {
        let bytes = std::fs::read(dir.join("fixture.bin")).expect("fixture bytes");
        let h = std::fs::read(dir.join("handles.bin")).expect("fixture handles");
        let mut at = 0;
        let mut lists = Vec::new();
        for _ in 0..2 {
            let n = get(&h, at) as usize;
            at += 8;
            let list: Vec<SlotRef> = (0..n)
                .map(|i| SlotRef::from_bytes(h[at + 16 * i..at + 16 * i + 16].try_into().unwrap()))
                .collect();
            at += 16 * n;
            lists.push(list);
        }
        let stale = lists.pop().unwrap();
        let live = lists.pop().unwrap();
        Fixture::new(bytes, live, stale)
    }

    fn current_size(&self) -> usize {
        get(&self.bytes, CURRENT_SIZE) as usize
    }
}

// ---------------------------------------------------------------------------
// Mutations.
// ---------------------------------------------------------------------------

/// What kind of word is being forged, to pick plausible values.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Header,
    Journal,
    Class,
    Head,
    Extent,
    Meta,
    Root,
    Peer,
    Lock,
}

fn pick<T: Copy>(rng: &mut XorShift, v: &[T]) -> T {
    v[rng.below(v.len() as u64) as usize]
}

/// A slot id, usually of a real slot of the fixture, sometimes just past
/// an extent or in an extent that does not exist.
fn slot_id(rng: &mut XorShift, fx: &Fixture) -> u64 {
    let x = pick(rng, &fx.extents);
    let (e, i) = match rng.below(8) {
        0 => (x.index as u64, x.slots as u64 + rng.below(3)),
        1 => (x.index as u64 + 1 + rng.below(3), rng.below(8)),
        2 => (rng.below(64), rng.below(1 << 24)),
        _ => (x.index as u64, rng.below(x.slots as u64)),
    };
    (e << 24) | i
}

/// A value for a word of `kind` whose value was `orig`.
fn value(rng: &mut XorShift, kind: Kind, orig: u64, fx: &Fixture) -> u64 {
    let cur = fx.current_size() as u64;
    let len = fx.bytes.len() as u64;
    let ds = fx.tables.data_start as u64;
    // Generic values, for any kind.
    match rng.below(10) {
        0 => {
            return pick(
                rng,
                &[0, 1, u64::MAX, u32::MAX as u64, 1 << 32, 1 << 63, NIL, orig],
            );
        }
        1 => return orig ^ (1 << rng.below(64)),
        2 => return orig.wrapping_add(rng.below(33)).wrapping_sub(16),
        3 => return rng.next_u64(),
        _ => {}
    }
    match kind {
        Kind::Header | Kind::Extent => match rng.below(6) {
            0 => pick(rng, &[ds, cur, len, cur + PAGE, len + PAGE, 0]),
            1 => rng.below(len / PAGE + 4) * PAGE,
            2 => pick(rng, &fx.extents).offset as u64,
            3 => orig.wrapping_add(PAGE),
            4 => orig.wrapping_sub(PAGE),
            _ => rng.below(1 << 24),
        },
        Kind::Journal => {
            let x = pick(rng, &fx.extents);
            let (_, bytes) = extent_layout(x.slot_size, x.slots);
            match rng.below(7) {
                0 => rng.below(3),
                1 => x.class as u64,
                2 => x.index as u64 + rng.below(2),
                3 => cur.saturating_sub(bytes as u64),
                4 => x.offset as u64,
                5 => bytes as u64,
                _ => x.slots as u64,
            }
        }
        Kind::Class => match rng.below(5) {
            0 => rng.below(66),
            1 => (rng.below(5) << 32) | rng.below(300),
            2 => token(rng.below(6), rng.below(3)),
            3 => slot_id(rng, fx),
            _ => pick(rng, &CLASSES),
        },
        Kind::Head => match rng.below(3) {
            0 => NIL,
            _ => slot_id(rng, fx),
        },
        Kind::Meta => {
            let generation = match rng.below(4) {
                0 => (orig >> 32) as u32,
                1 => ((orig >> 32) as u32).wrapping_add(1),
                2 => pick(rng, &[0, 1, u32::MAX]),
                _ => rng.next_u64() as u32,
            };
            let payload = match rng.below(4) {
                0 => NIL,
                1 => rng.below(6),
                2 => slot_id(rng, fx),
                _ => rng.below(1 << 30),
            };
            meta(generation, rng.below(4), payload)
        }
        Kind::Root => match rng.below(4) {
            0 => rng.below(4),
            1 => rng.below(64),
            2 => {
                let h = pick(rng, &fx.live).to_bytes();
                u64::from_ne_bytes(h[..8].try_into().unwrap())
            }
            _ => {
                let h = pick(rng, &fx.live).to_bytes();
                u64::from_ne_bytes(h[8..].try_into().unwrap())
            }
        },
        Kind::Peer => match rng.below(4) {
            0 => rng.below(4),
            1 => std::process::id() as u64,
            2 => rng.below(4),
            _ => 1,
        },
        Kind::Lock => match rng.below(3) {
            0 => 0,
            // Tokens of rows 0..5 (the case's own process takes row 2,
            // incarnation 1) and of other incarnations.
            _ => token(rng.below(6), rng.below(3)),
        },
    }
}

/// One edit: what was done, the bytes it touched, and whether it
/// may have moved slots (header layout, extent entries, anywhere, a new
/// length), in which case the known slots' bytes are not compared.
struct Edit {
    text: String,
    /// Bytes written (offset, length), wherever they are.
    data: Option<(usize, usize)>,
    layout: bool,
}

impl Edit {
    fn new(text: String, layout: bool) -> Self {
        Edit {
            text,
            data: None,
            layout,
        }
    }
}

/// Class-entry words that do not describe where slots are.
fn class_word_moves_slots(at: usize) -> bool {
    let field = (at - CLASS_TABLE) % CLASS_ENTRY_BYTES;
    !matches!(field, CLS_FREE_HEAD | CLS_FREE_COUNT | CLS_FRESH | CLS_LOCK)
}

/// A growth journal left *active* whose words agree with each other, as a
/// grower that died after storing `current_size` leaves it: either the
/// honest one (the file and `current_size` extended by the new extent), or
/// one whose offset lies over existing extents.
fn consistent_journal(rng: &mut XorShift, fx: &Fixture, bytes: &mut Vec<u8>) -> Edit {
    let c = rng.below(CLASSES.len() as u64) as usize;
    let size = CLASSES[c] as usize;
    let count = get(bytes, class_entry(c) + CLS_EXTENT_COUNT);
    let before: usize = fx
        .extents
        .iter()
        .filter(|x| x.class == c)
        .map(|x| x.slots)
        .sum();
    let first = get(&fx.bytes, class_entry(c) + CLS_FIRST_SLOTS) as usize;
    // The growth rule (src/format/mod.rs, max_extent_slots): a quarter of
    // the class so far, at least the first extent.
    let max = (before / 4).max(first).max(1);
    let slots = if rng.below(2) == 0 {
        max
    } else {
        1 + rng.below(max as u64) as usize
    };
    let (_, len) = extent_layout(size, slots);
    // An earlier edit of this case may have made current_size nonsense.
    let cur = match get(bytes, CURRENT_SIZE) as usize {
        c if c <= bytes.len() && c % PAGE as usize == 0 && c >= len => c,
        _ => fx.current_size(),
    };
    let variant = if fx.overlapping_journals {
        rng.below(3)
    } else {
        0
    };
    let (offset, how) = match variant {
        0 => {
            let new_cur = cur.saturating_add(len);
            if bytes.len() < new_cur {
                bytes.resize(new_cur, 0);
            }
            put(bytes, CURRENT_SIZE, new_cur as u64);
            (cur, "honest")
        }
        1 => (cur.saturating_sub(len), "over the last extents"),
        _ => (pick(rng, &fx.extents).offset, "over an extent"),
    };
    let j = [1, c as u64, count, offset as u64, len as u64, slots as u64];
    for (k, v) in j.into_iter().enumerate() {
        put(bytes, JOURNAL + 8 * k, v);
    }
    Edit::new(
        format!(
            "consistent-journal: {how}: class {c} extent {count} at {offset}, {slots} slots, {len} bytes"
        ),
        false,
    )
}

/// One edit, described for a failure report.
fn mutate(rng: &mut XorShift, fx: &Fixture, bytes: &mut Vec<u8>) -> Edit {
    let r = &fx.regions;
    // (weight, region)
    const WEIGHTS: [(u64, u8); 14] = [
        (10, 0), // header words
        (4, 1),  // journal
        (10, 2), // class fields
        (6, 3),  // free-list heads
        (10, 4), // extent entries
        (10, 5), // free-list links
        (10, 6), // other metadata words
        (6, 7),  // slot data
        (6, 8),  // roots
        (6, 9),  // peers
        (5, 10), // lock words
        (4, 11), // anywhere
        (4, 12), // truncate / extend
        (2, 13), // a whole, self-consistent growth journal
    ];
    let total: u64 = WEIGHTS.iter().map(|w| w.0).sum();
    let mut roll = rng.below(total);
    let mut region = 0;
    for (w, reg) in WEIGHTS {
        if roll < w {
            region = reg;
            break;
        }
        roll -= w;
    }
    let (at, kind, name) = match region {
        0 => (pick(rng, &r.header), Kind::Header, "header"),
        1 => (pick(rng, &r.journal), Kind::Journal, "journal"),
        2 => (pick(rng, &r.class_words), Kind::Class, "class"),
        3 => (pick(rng, &r.free_heads), Kind::Head, "free-head"),
        4 => (pick(rng, &r.extent_words), Kind::Extent, "extent"),
        5 if !r.list_links.is_empty() => (pick(rng, &r.list_links), Kind::Meta, "list-link"),
        5 | 6 => (pick(rng, &r.other_meta), Kind::Meta, "meta"),
        7 => {
            let (start, len) = pick(rng, &r.data);
            (start + rng.below(len as u64) as usize, Kind::Meta, "data")
        }
        8 => (pick(rng, &r.root_words), Kind::Root, "root"),
        9 => (pick(rng, &r.peer_words), Kind::Peer, "peer"),
        10 => (pick(rng, &r.locks), Kind::Lock, "lock"),
        11 => (
            rng.below(bytes.len() as u64) as usize,
            Kind::Header,
            "anywhere",
        ),
        12 => {
            let len = bytes.len();
            let cur = fx.current_size();
            let new_len = match rng.below(6) {
                0 => rng.below(len as u64 + 1) as usize,
                1 => fx.tables.data_start + rng.below(64) as usize - 32,
                2 => cur.saturating_sub(rng.below(PAGE) as usize + 1),
                3 => pick(rng, &fx.extents).offset + rng.below(PAGE) as usize,
                // Longer than current_size: junk or zeros past the end.
                4 => len + rng.below(3 * PAGE) as usize,
                _ => len + PAGE as usize,
            };
            bytes.resize(new_len, 0);
            return Edit::new(format!("resize to {new_len}"), true);
        }
        _ => return consistent_journal(rng, fx, bytes),
    };
    let layout = match name {
        "header" | "extent" | "anywhere" => true,
        "class" => class_word_moves_slots(at),
        _ => false,
    };
    let word_at = (at & !7).min(bytes.len().saturating_sub(8));
    match rng.below(5) {
        0 => {
            let bit = rng.below(8);
            if let Some(b) = bytes.get_mut(at) {
                *b ^= 1 << bit;
            }
            let mut e = Edit::new(format!("{name}: flip bit {bit} of byte {at}"), layout);
            e.data = Some((at, 1));
            e
        }
        1 => {
            let n = 1 + rng.below(24) as usize;
            let end = (at + n).min(bytes.len());
            for b in &mut bytes[at.min(end)..end] {
                *b = rng.next_u64() as u8;
            }
            let mut e = Edit::new(format!("{name}: {n} random bytes at {at}"), layout);
            e.data = Some((at, n));
            e
        }
        2 if name != "data" => {
            // Copy another word of the same region over this one.
            let from = match kind {
                Kind::Extent => pick(rng, &r.extent_words),
                Kind::Meta => pick(rng, &r.other_meta),
                Kind::Root => pick(rng, &r.root_words),
                Kind::Peer => pick(rng, &r.peer_words),
                _ => pick(rng, &r.header),
            };
            if word_at + 8 <= bytes.len() && from + 8 <= bytes.len() {
                let v = get(bytes, from);
                put(bytes, word_at, v);
            }
            let mut e = Edit::new(format!("{name}: word {word_at} = word {from}"), layout);
            e.data = Some((word_at, 8));
            e
        }
        _ => {
            if word_at + 8 > bytes.len() {
                return Edit::new(format!("{name}: nothing at {word_at}"), layout);
            }
            let v = value(rng, kind, get(bytes, word_at), fx);
            put(bytes, word_at, v);
            let mut e = Edit::new(format!("{name}: word {word_at} = {v:#x}"), layout);
            e.data = Some((word_at, 8));
            e
        }
    }
}

/// The mutated bytes of case `case`, and what was done.
fn mutated(fx: &Fixture, seed: u64, case: u64) -> (Vec<u8>, Vec<Edit>, XorShift) {
    let mut rng = XorShift::new(seed ^ case.wrapping_mul(0xA076_1D64_78BD_642F));
    let mut bytes = fx.bytes.clone();
    let n = 1 + rng.below(4);
    let edits = (0..n).map(|_| mutate(&mut rng, fx, &mut bytes)).collect();
    (bytes, edits, rng)
}

// ---------------------------------------------------------------------------
// One case.
// ---------------------------------------------------------------------------

/// Uses an attached mutated segment. Errors are fine; what must not happen
/// is a panic (caught by the caller), two live new slots that share bytes,
/// a known live slot whose bytes change though no edit touched them, or
/// extents that overlap (attach proved there were none; only this process
/// added extents since).
fn exercise(
    slab: &Slab,
    fx: &Fixture,
    edits: &[Edit],
    rng: &mut XorShift,
    t: &mut Tally,
) -> Result<(), String> {
    let mut written = Vec::new();
    let mut freed = Vec::new();
    let mut new_slots = std::collections::HashSet::new();
    // Handles kept from building the segment: reads, writes, frees.
    let mut buf = vec![0u8; 16384];
    for _ in 0..6 {
        let h = if rng.below(4) == 0 {
            pick(rng, &fx.stale)
        } else {
            pick(rng, &fx.live)
        };
        let cap = t.note("capacity", slab.capacity(h));
        let len = cap.unwrap_or(8).min(buf.len());
        let _ = t.note(
            "read-known",
            slab.read_bytes(common::whole(h), 0, &mut buf[..len]),
        );
    }
    for _ in 0..2 {
        let h = pick(rng, &fx.live);
        if t.note(
            "write-known",
            slab.write_bytes(common::whole(h), 0, b"scribble"),
        )
        .is_ok()
        {
            written.push(h);
        }
    }
    for _ in 0..4 {
        let h = if rng.below(3) == 0 {
            pick(rng, &fx.stale)
        } else {
            pick(rng, &fx.live)
        };
        if t.note("free-known", slab.free(h)).is_ok() {
            freed.push(h);
        }
    }
    // New allocations of every class, stamped.
    let mut fresh: Vec<(SlotRef, u64, usize)> = Vec::new();
    for (k, &size) in CLASSES.iter().enumerate() {
        for j in 0..3 {
            let len = if j == 0 {
                size as usize
            } else {
                1 + rng.below(size) as usize
            };
            if let Ok(h) = t.note("alloc", slab.alloc_bytes(len)) {
                new_slots.insert(slot_of(&h.raw()));
                let key = rng.next_u64() ^ (k as u64);
                if t.note("write-new", slab.write_bytes(h, 0, &stamp(len, key)))
                    .is_ok()
                {
                    fresh.push((h.raw(), key, len));
                }
            }
        }
    }
    // Enough of the largest class that it has to grow (growth also repairs
    // a journal a dead grower left).
    let largest = CLASSES[CLASSES.len() - 1] as usize;
    let spare = slab.stats().classes.last().map_or(0, |c| c.free).min(24);
    for _ in 0..=spare {
        if let Ok(h) = t.note("alloc-to-grow", slab.alloc_bytes(largest)) {
            new_slots.insert(slot_of(&h.raw()));
            let key = rng.next_u64();
            if t.note("write-new", slab.write_bytes(h, 0, &stamp(64, key)))
                .is_ok()
            {
                fresh.push((h.raw(), key, 64));
            }
        }
    }
    if let Ok(h) = t.note("alloc-typed", slab.alloc([0xABu8; 40])) {
        new_slots.insert(slot_of(&h.raw()));
        let _ = t.note("update-typed", slab.update(h, |v| v[0] = 1));
        let _ = t.note("free-new", slab.free(h));
    }
    // Free about half of them; the others must still hold their stamps.
    let mut kept = Vec::new();
    for (h, key, len) in fresh {
        if rng.below(2) == 0 {
            let _ = t.note("free-new", slab.free(h));
        } else {
            kept.push((h, key, len));
        }
    }
    for (h, key, len) in &kept {
        if t.note(
            "read-new",
            slab.read_bytes(common::whole(*h), 0, &mut buf[..*len]),
        )
        .is_ok()
            && buf[..*len] != stamp(*len, *key)[..]
        {
            return Err(format!(
                "new slot {h:?} does not hold what was written to it: another live slot shares its bytes"
            ));
        }
    }
    // Known live slots hold the fixture's bytes, except where an edit or a
    // write of this case changed them.
    if !edits.iter().any(|e| e.layout) {
        for k in &fx.known {
            if freed.contains(&k.handle) || new_slots.contains(&slot_of(&k.handle)) {
                continue;
            }
            let got = &mut buf[..k.len];
            if slab.read_bytes(common::whole(k.handle), 0, got).is_err() {
                continue;
            }
            let mut want = fx.bytes[k.data..k.data + k.len].to_vec();
            if written.contains(&k.handle) {
                want[..8].copy_from_slice(b"scribble");
            }
            for e in edits {
                if let Some((at, n)) = e.data {
                    for i in at.max(k.data)..(at + n).min(k.data + k.len) {
                        want[i - k.data] = got[i - k.data];
                    }
                }
            }
            if *got != want[..] {
                let first = (0..k.len).find(|&i| got[i] != want[i]).unwrap_or(0);
                let last = (0..k.len).rev().find(|&i| got[i] != want[i]).unwrap_or(0);
                return Err(format!(
                    "known live slot {:?} (data at {}) changed though no edit touched it: bytes {first}..={last} differ, now {:02x?}",
                    k.handle,
                    k.data,
                    &got[first..(first + 16).min(k.len)]
                ));
            }
        }
        t.add("known-slots-verified:cases", 1);
    }
    // Roots, the checker, statistics, reclaim.
    if let Ok(Some(h)) = t.note("root", slab.root::<u64>("answer")) {
        let _ = t.note("read-root", slab.read(h));
    }
    let _ = t.note("root", slab.root::<[u64; 32]>("table"));
    let _ = t.note("roots", slab.roots());
    if let Ok(h) = t.note("root-insert", slab.root_or_insert("fuzz", [1u64; 4])) {
        let _ = t.note("update-root", slab.update(h, |v| v[3] += 1));
    }
    let _ = t.note("remove-root", slab.remove_root("table"));
    if let Ok(v) = t.note("alloc-slice", slab.alloc_slice::<u32>(100)) {
        let _ = t.note("slice-set", slab.set(v, 99, 7));
        if let Ok(x) = t.note("slice-get", slab.get(v, 99)) {
            if x != 7 {
                return Err(format!("slice element reads {x}, 7 was written"));
            }
        }
        let _ = t.note("free-new", slab.free(v));
    }
    match t.note("check", slab.check()) {
        Ok(r) if r.is_consistent() => t.add("check-report:consistent", 1),
        Ok(r) => {
            t.add("check-report:findings", 1);
            if std::env::var_os("SHMSLAB_FUZZ_VERBOSE").is_some() {
                say("verbose", format!("findings: {:?}", r.findings));
            }
            if let Some(f) = r.findings.iter().find(|f| f.problem.contains("overlap")) {
                return Err(format!(
                    "extents overlap after this process grew the segment: {f}"
                ));
            }
        }
        Err(_) => {}
    }
    let stats = slab.stats();
    std::hint::black_box((
        stats.total_slots(),
        stats.total_free(),
        stats.total_extents(),
    ));
    t.add("stats:Ok", 1);
    let _ = t.note("reclaim", slab.reclaim_dead());
    for (h, _, _) in kept.iter().take(2) {
        let _ = t.note("free-new", slab.free(*h));
    }
    let _ = t.note("trim", slab.trim());
    Ok(())
}

/// Runs case `case`: mutate, write, attach, exercise, drop.
fn run_case(fx: &Fixture, seed: u64, case: u64, path: &Path, t: &mut Tally) -> Result<(), String> {
    let (bytes, edits, mut rng) = mutated(fx, seed, case);
    if std::env::var_os("SHMSLAB_FUZZ_VERBOSE").is_some() {
        let e: Vec<&str> = edits.iter().map(|e| e.text.as_str()).collect();
        say("verbose", format!("case {case}: {}", e.join("; ")));
    }
    for e in &edits {
        let region = e.text.split([':', ' ']).next().unwrap_or("");
        t.add(format!("edits:{region}"), 1);
    }
    let _ = std::fs::remove_file(path);
    std::fs::write(path, &bytes).expect("write the case file");
    // The read-only inspector first: it maps the file PROT_READ, so a store
    // anywhere on its path would fault.
    match t.note("inspect", shmslab::inspect(path)) {
        Ok(snap) if snap.is_consistent() => t.add("inspect-report:consistent", 1),
        Ok(_) => t.add("inspect-report:findings", 1),
        Err(_) => {}
    }
    // A quarter of the cases attach through a descriptor.
    let attached = if rng.below(4) == 0 {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(f) => Slab::attach_fd(f.into()),
            Err(e) => panic!("open the case file: {e}"),
        }
    } else {
        Slab::attach(path)
    };
    let result = match t.note("attach", attached) {
        Ok(slab) => {
            let r = exercise(&slab, fx, &edits, &mut rng, t);
            drop(slab);
            r
        }
        Err(_) => Ok(()),
    };
    let _ = std::fs::remove_file(path);
    result
}

// ---------------------------------------------------------------------------
// Batches in child processes.
// ---------------------------------------------------------------------------

static CURRENT_CASE: AtomicU64 = AtomicU64::new(u64::MAX);
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

/// In a child: runs cases `first..first + count`, publishing the case it is
/// in through the shared progress words (word `2w`: case + 1; `2w + 1`:
/// cases done), so the parent can name the case of a signal or a hang.
fn batch_child(args: &[String]) {
    let dir = PathBuf::from(&args[0]);
    let worker: usize = args[1].parse().unwrap();
    let first: u64 = args[2].parse().unwrap();
    let count: u64 = args[3].parse().unwrap();
    let seed: u64 = args[4].parse().unwrap();
    let mut fx = Fixture::load(&dir);
    fx.overlapping_journals = args[5] == "overlapping-journals";
    let progress = SharedWords::open(&dir.join("progress"));
    let path = dir.join(format!("case-{worker}.shm"));
    std::panic::set_hook(Box::new(|info| {
        let frames = crate_frames();
        eprintln!(
            "PANIC in case {}: {info}\n{frames}",
            CURRENT_CASE.load(Ordering::Relaxed),
        );
        *LAST_PANIC.lock().unwrap() = format!("{info} [{frames}]").replace('\n', " ");
    }));
    let mut tally = Tally::default();
    for case in first..first + count {
        CURRENT_CASE.store(case, Ordering::Relaxed);
        progress.word(2 * worker).store(case + 1, Ordering::SeqCst);
        let mut t = Tally::default();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_case(&fx, seed, case, &path, &mut t)
        }));
        tally.merge(&t);
        match r {
            Ok(Ok(())) => {}
            Ok(Err(violation)) => say("violation", format!("{case} {violation}")),
            Err(p) => say(
                "panic",
                format!(
                    "{case} {} at {}",
                    panic_text(&*p),
                    LAST_PANIC.lock().unwrap()
                ),
            ),
        }
        progress.word(2 * worker + 1).fetch_add(1, Ordering::SeqCst);
    }
    say("tally", tally.encode());
}

/// The frames of a backtrace that are in the crate's own source, one line.
fn crate_frames() -> String {
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    bt.lines()
        .filter(|l| l.contains("./src/"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" <- ")
}

/// A case that went wrong.
#[derive(Debug)]
struct Failure {
    case: u64,
    what: String,
}

fn describe_case(fx: &Fixture, seed: u64, case: u64) -> String {
    let (_, edits, _) = mutated(fx, seed, case);
    let edits: Vec<&str> = edits.iter().map(|e| e.text.as_str()).collect();
    format!(
        "case {case} (seed {seed:#x}; replay with SHMSLAB_FUZZ_SEED={seed:#x} SHMSLAB_FUZZ_FIRST={case} SHMSLAB_FUZZ_CASES=1): {}",
        edits.join("; ")
    )
}

/// Runs `first..end` in children for worker slot `worker`, restarting after
/// a case that killed its child. Returns the tally and the failures.
#[allow(clippy::too_many_arguments)]
fn drive(
    test: &str,
    fx: &Fixture,
    dir: &Path,
    worker: usize,
    first: u64,
    end: u64,
    seed: u64,
    progress: &SharedWords,
) -> (Tally, Vec<Failure>, u64) {
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut next = first;
    let mut children = 0;
    while next < end {
        children += 1;
        progress.word(2 * worker).store(0, Ordering::SeqCst);
        let dir_s = dir.to_str().unwrap().to_string();
        let args = [
            dir_s.as_str(),
            &worker.to_string(),
            &next.to_string(),
            &(end - next).to_string(),
            &seed.to_string(),
            if fx.overlapping_journals {
                "overlapping-journals"
            } else {
                "honest-journals"
            },
        ];
        let child = common::child_command(test, ROLE, &args)
            .arg("--include-ignored")
            .spawn()
            .expect("spawn a batch child");
        let limit = Duration::from_secs(600) + Duration::from_millis(50) * (end - next) as u32;
        let w = watch(child, STALL, limit, || {
            progress.word(2 * worker + 1).load(Ordering::SeqCst)
                + (progress.word(2 * worker).load(Ordering::SeqCst) << 32)
        });
        for (key, payload) in messages(&w.stdout) {
            let (case, what) = payload.split_once(' ').unwrap_or((&payload, ""));
            match key.as_str() {
                "tally" => tally.merge(&Tally::decode(&payload)),
                "verbose" => println!("{payload}"),
                "panic" | "violation" => failures.push(Failure {
                    case: case.parse().unwrap_or(u64::MAX),
                    what: format!("{key}: {what}"),
                }),
                _ => {}
            }
        }
        if w.status.success() && !w.hung {
            break;
        }
        // The child died (signal, abort, exit) or hung in some case.
        let at = progress.word(2 * worker).load(Ordering::SeqCst);
        let case = at.checked_sub(1).unwrap_or(next);
        let what = if w.hung {
            tally.add("outcome:hang", 1);
            format!("hang: no progress for {STALL:?}")
        } else if let Some(sig) = w.signal() {
            tally.add("outcome:signal", 1);
            format!("killed by signal {sig}")
        } else {
            tally.add("outcome:died", 1);
            format!("exited with {:?}", w.status.code())
        };
        let stderr_tail: String = w
            .stderr
            .lines()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .join(" | ");
        failures.push(Failure {
            case,
            what: format!("{what}; stderr: {stderr_tail}"),
        });
        next = case + 1;
    }
    (tally, failures, children)
}

#[test]
fn the_fixture_is_the_same_on_every_build() {
    let dir = common::live::segment_dir();
    let (a, live_a, stale_a) = build_fixture(dir.path());
    let (b, live_b, stale_b) = build_fixture(dir.path());
    assert!(a == b, "the fixture's bytes differ between two builds");
    assert!(live_a == live_b && stale_a == stale_b, "the handles differ");
    let fx = Fixture::new(a, live_b, stale_b);
    assert!(fx.extents.iter().filter(|x| x.class == 0).count() >= 3);
    assert!(fx.regions.list_links.len() > 100, "long free lists");
}

#[test]
fn corrupted_segments_give_typed_results_without_panics_signals_or_hangs() {
    if let Some(args) = common::child_args(ROLE) {
        batch_child(&args);
        return;
    }
    fuzz(TEST, false);
}

/// The same fuzz, with growth journals forged over existing extents too.
#[test]
fn fuzz_with_overlapping_growth_journals() {
    if let Some(args) = common::child_args(ROLE) {
        batch_child(&args);
        return;
    }
    fuzz("fuzz_with_overlapping_growth_journals", true);
}

/// Runs the cases in batches of child processes of test `test` and
/// reports; panics on any failed case.
fn fuzz(test: &str, overlapping_journals: bool) {
    let started = Instant::now();
    let cases = env_u64("SHMSLAB_FUZZ_CASES", DEFAULT_CASES);
    let seed = env_u64("SHMSLAB_FUZZ_SEED", DEFAULT_SEED);
    let first = env_u64("SHMSLAB_FUZZ_FIRST", 0);
    let dir = common::live::segment_dir();
    let (bytes, live, stale) = build_fixture(dir.path());
    let mut fx = Fixture::new(bytes, live, stale);
    fx.overlapping_journals = overlapping_journals;
    fx.save(dir.path());
    SharedWords::create(&dir.path().join("progress"), 2 * WORKERS as usize);
    let progress = SharedWords::open(&dir.path().join("progress"));
    println!(
        "fixture: {} bytes, {} extents, {} live and {} stale handles, {} free-list links",
        fx.bytes.len(),
        fx.extents.len(),
        fx.live.len(),
        fx.stale.len(),
        fx.regions.list_links.len()
    );

    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let per = cases.div_ceil(WORKERS);
        for w in 0..WORKERS {
            let (lo, hi) = (first + w * per, (first + (w + 1) * per).min(first + cases));
            if lo >= hi {
                continue;
            }
            let (results, dir, progress, fx) = (&results, dir.path(), &progress, &fx);
            s.spawn(move || {
                let r = drive(test, fx, dir, w as usize, lo, hi, seed, progress);
                results.lock().unwrap().push(r);
            });
        }
    });
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut children = 0;
    for (t, f, c) in results.into_inner().unwrap() {
        tally.merge(&t);
        failures.extend(f);
        children += c;
    }
    failures.sort_by_key(|f| f.case);
    let (known, failures): (Vec<Failure>, Vec<Failure>) = failures
        .into_iter()
        .partition(|f| known_bug(&f.what).is_some());
    for f in &known {
        tally.add(format!("known-bug:case-{}", f.case), 1);
        println!(
            "KNOWN BUG in {}: {}",
            describe_case(&fx, seed, f.case),
            known_bug(&f.what).unwrap()
        );
    }
    let attached = tally.get("attach:Ok");
    let ran = tally.sum_prefix("attach:");
    let count = |v: &[Failure], kind: &str| v.iter().filter(|f| f.what.starts_with(kind)).count();
    let (panics, known_panics) = (count(&failures, "panic"), count(&known, "panic"));
    let (violations, known_violations) =
        (count(&failures, "violation"), count(&known, "violation"));
    println!(
        "{}",
        tally.render(&format!(
            "corrupted segments: {ran} of {cases} cases run in {} child processes in {:.1?} \
             (seed {seed:#x}); {attached} attached and were used; \
             panics {} ({known_panics} of them a known bug), signals {}, hangs {}, \
             violations (aliasing, changed slots, overlapping extents) {} ({known_violations} of them a known bug)",
            children,
            started.elapsed(),
            panics + known_panics,
            tally.get("outcome:signal"),
            tally.get("outcome:hang"),
            violations + known_violations,
        ))
    );
    if !failures.is_empty() {
        let list: Vec<String> = failures
            .iter()
            .take(40)
            .map(|f| format!("{}\n    -> {}", describe_case(&fx, seed, f.case), f.what))
            .collect();
        panic!(
            "{} of {cases} corrupted segments failed:\n{}",
            failures.len(),
            list.join("\n")
        );
    }
    assert_eq!(ran, cases, "every case ran");
    assert!(attached > 0, "some mutated segments attach and are used");
}

// ---------------------------------------------------------------------------
// Crafted cases that random edits are too unlikely to hit.
// ---------------------------------------------------------------------------

/// A growth journal left *active* (as by a grower that died) whose fields
/// all agree with each other — class, extent number, slot count, byte
/// length, and `offset + bytes == current_size` — but whose offset lies over
/// another class's extent. Repair must not publish it: the next growth
/// would hand out slots over bytes the other class's live slots hold.
#[test]
fn a_forged_growth_journal_does_not_publish_an_extent_over_another_class() {
    let dir = common::live::segment_dir();
    let path = dir.path().join("journal.shm");
    let mut slab = Slab::builder()
        .classes(&[64, 256])
        .peers(4)
        .initial_size(0)
        .create(&path)
        .unwrap();
    // Class 0's first extent, then class 1's: class 1's is last in the file.
    let small: Vec<SlotRef> = (0..10)
        .map(|_| slab.alloc_bytes(64).unwrap().raw())
        .collect();
    let big: Vec<SlotRef> = (0..10)
        .map(|_| slab.alloc_bytes(256).unwrap().raw())
        .collect();
    for h in small.iter().chain(&big) {
        let len = slab.capacity(*h).unwrap();
        slab.write_bytes(common::whole(*h), 0, &stamp(len, handle_key(h)))
            .unwrap();
    }
    slab.keep_file();
    drop(slab);
    let mut bytes = std::fs::read(&path).unwrap();
    let x = extents(&bytes);
    let last = x.iter().max_by_key(|e| e.offset).unwrap();
    assert_eq!(last.class, 1, "class 1's extent is the last one");
    let current = get(&bytes, CURRENT_SIZE) as usize;
    let (_, len) = extent_layout(64, 256);
    put(&mut bytes, JOURNAL + 8, 0); // class
    put(&mut bytes, JOURNAL + 16, 1); // extent: the next one of class 0
    put(&mut bytes, JOURNAL + 24, (current - len) as u64); // offset
    put(&mut bytes, JOURNAL + 32, len as u64); // bytes
    put(&mut bytes, JOURNAL + 40, 256); // slots
    put(&mut bytes, JOURNAL, 1); // active
    assert!(current - len < last.offset + last.bytes, "over class 1");
    let forged = dir.path().join("forged.shm");
    std::fs::write(&forged, &bytes).unwrap();

    let slab = Slab::attach(&forged).expect("the journal is not checked at attach");
    // Use up class 0's first extent, so it grows (and repairs first).
    let mut mine = Vec::new();
    for i in 0..400u64 {
        match slab.alloc_bytes(64) {
            Ok(h) => {
                slab.write_bytes(h, 0, &[0xEE; 64]).unwrap();
                mine.push(h);
            }
            Err(e) => {
                println!("allocation {i} failed: {e}");
                break;
            }
        }
    }
    for h in &big {
        let mut got = vec![0u8; 256];
        slab.read_bytes(common::whole(*h), 0, &mut got).unwrap();
        assert_eq!(
            got,
            stamp(256, handle_key(h)),
            "class 1 slot {h:?} was overwritten through class 0 slots"
        );
    }
    let report = slab.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.findings);
}

/// A root entry whose handle words are all ones: index 2^24 - 1 passes the
/// handle's shape check, and reclaim turns it into a slot id.
#[test]
fn a_root_handle_with_the_largest_index_does_not_panic_reclaim() {
    let dir = common::live::segment_dir();
    let path = dir.path().join("root.shm");
    let a = Slab::builder()
        .classes(&[64])
        .roots(2)
        .peers(4)
        .create(&path)
        .unwrap();
    a.root_or_insert("answer", 42u64).unwrap();
    let _owned = a.alloc_bytes(8).unwrap();
    // Taken while attached: in the copy the row is a dead peer's.
    let mut bytes = std::fs::read(&path).unwrap();
    drop(a);
    let t = Tables::read(&bytes);
    put(&mut bytes, t.root_entry(0) + ROOT_HANDLE, u64::MAX);
    put(&mut bytes, t.root_entry(0) + ROOT_HANDLE + 8, u64::MAX);
    let copy = dir.path().join("copy.shm");
    std::fs::write(&copy, &bytes).unwrap();
    let slab = Slab::attach(&copy).unwrap();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| slab.reclaim_dead()));
    match r {
        Ok(r) => println!("reclaim: {r:?}"),
        Err(p) => panic!("reclaim_dead panicked: {}", panic_text(&*p)),
    }
}
