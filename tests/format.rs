//! Integration tests of the file format as `Slab::attach` sees it: every
//! kind of bad file gets its own `Error` variant, never a panic or a signal;
//! forged free lists, counts, cursors and locks (which attach cannot vouch
//! for) fail cleanly when used; and two seeded campaigns throw mutated
//! headers and mutated slot metadata at `attach` and the allocator.
//!
//! Bad files are made from a real segment: create it, allocate so that
//! extents exist, keep the file, then edit its bytes with `std::fs`.

mod common;

use common::live::XorShift;
use shmslab::limits::{FORMAT_VERSION, MAX_EXTENTS};
use shmslab::{Error, Slab};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

// The documented file layout (src/format/mod.rs, modules `hdr` and `cls`;
// docs/FORMAT.md). Every field is a native-endian u64 word. These numbers
// are the file format: if they change, so does FORMAT_VERSION.
const MAGIC: usize = 0;
const VERSION: usize = 8;
const ARCH: usize = 16;
const WORD_BITS: usize = 24;
const PAGE_SIZE: usize = 32;
const SEGMENT_ID: usize = 40;
const DATA_START: usize = 48;
const CLASS_COUNT: usize = 56;
const ROOT_CAPACITY: usize = 64;
const PEER_CAPACITY: usize = 72;
const MAX_SIZE: usize = 80;
const MAX_EXTENTS_FIELD: usize = 88;
const CURRENT_SIZE: usize = 128;
const GENERATION: usize = 136;
/// The class table starts after the 512-byte header.
const CLASS_TABLE: usize = 512;
/// One class entry: 64 bytes of fields, then `[offset, slots]` per extent.
const CLASS_ENTRY_BYTES: usize = 64 + 16 * 64;
const CLS_SLOT_SIZE: usize = 0;
const CLS_FIRST_SLOTS: usize = 8;
const CLS_EXTENT_COUNT: usize = 16;
const CLS_FREE_HEAD: usize = 24;
const CLS_FREE_COUNT: usize = 32;
const CLS_FRESH: usize = 40;
const CLS_LOCK: usize = 48;
const CLS_EXTENTS: usize = 64;

const MAGIC_WORD: u64 = u64::from_ne_bytes(*b"SHMSLAB\0");
const ARCH_TAG: u64 = 0x0102_0304_0506_0708;
const PAGE: u64 = 4096;

/// The small segment every test edits: two classes, four roots, four peers,
/// no spare space (so the file is exactly `current_size` long).
const CLASSES: [u64; 2] = [64, 256];

fn class_entry(class: usize) -> usize {
    CLASS_TABLE + CLASS_ENTRY_BYTES * class
}

fn extent_entry(class: usize, extent: usize) -> usize {
    class_entry(class) + CLS_EXTENTS + 16 * extent
}

fn get(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn put(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_ne_bytes());
}

/// A valid segment file's bytes, in a temp dir where variants are written.
struct Segment {
    dir: tempfile::TempDir,
    bytes: Vec<u8>,
}

impl Segment {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("valid.shm");
        let mut slab = Slab::builder()
            .classes(&CLASSES)
            .roots(4)
            .peers(4)
            .initial_size(0)
            .create(&path)
            .expect("create the fixture segment");
        let a = slab.alloc_bytes(10).unwrap();
        let _b = slab.alloc_bytes(200).unwrap();
        let _c = slab.alloc_bytes(20).unwrap();
        slab.free(a).unwrap();
        slab.root_or_insert("answer", 42u64).unwrap();
        slab.keep_file();
        drop(slab);
        let bytes = std::fs::read(&path).expect("read the fixture");
        std::fs::remove_file(&path).unwrap();
        Segment { dir, bytes }
    }

    fn data_start(&self) -> usize {
        get(&self.bytes, DATA_START) as usize
    }

    fn current_size(&self) -> usize {
        get(&self.bytes, CURRENT_SIZE) as usize
    }

    /// Writes `bytes` to a new file `name` in the segment's dir.
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write variant");
        path
    }

    /// The segment with `edit` applied, written to file `name`.
    fn variant(&self, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
        let mut bytes = self.bytes.clone();
        edit(&mut bytes);
        self.write(name, &bytes)
    }
}

fn attach_err(path: &Path) -> Error {
    match Slab::attach(path) {
        Ok(slab) => panic!("{} attached: {slab:?}", path.display()),
        Err(e) => e,
    }
}

/// Asserts that the segment with `edit` applied is rejected as corrupt.
fn assert_corrupt(seg: &Segment, case: &str, edit: impl FnOnce(&mut Vec<u8>)) {
    let path = seg.variant(case, edit);
    match attach_err(&path) {
        Error::Corrupt { what } => assert!(!what.is_empty(), "{case}: empty description"),
        other => panic!("{case}: expected Error::Corrupt, got {other:?}"),
    }
}

/// A deterministic pseudo-random byte stream (xorshift64*).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_ne_bytes());
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------
// The fixture itself: what every edit below starts from.
// ---------------------------------------------------------------------------

#[test]
fn the_unedited_fixture_attaches_and_checks_clean() {
    let seg = Segment::new();
    let b = &seg.bytes;
    // What the edits below assume about the fixture.
    assert_eq!(get(b, MAGIC), MAGIC_WORD);
    assert_eq!(get(b, VERSION), FORMAT_VERSION);
    assert_eq!(get(b, ARCH), ARCH_TAG);
    assert_eq!(get(b, WORD_BITS), usize::BITS as u64);
    assert_eq!(get(b, PAGE_SIZE), PAGE);
    assert_ne!(get(b, SEGMENT_ID), 0);
    assert_eq!(get(b, CLASS_COUNT), 2);
    assert_eq!(get(b, ROOT_CAPACITY), 4);
    assert_eq!(get(b, PEER_CAPACITY), 4);
    assert_eq!(get(b, MAX_SIZE), 0);
    assert_eq!(get(b, MAX_EXTENTS_FIELD), MAX_EXTENTS as u64);
    assert_eq!(seg.data_start(), PAGE as usize);
    assert_eq!(seg.current_size(), b.len(), "file is exactly current_size");
    assert!(get(b, GENERATION) >= 2, "both classes grew");
    for (c, &size) in CLASSES.iter().enumerate() {
        let e = class_entry(c);
        assert_eq!(get(b, e + CLS_SLOT_SIZE), size);
        assert_eq!(get(b, e + CLS_FIRST_SLOTS), 16384 / size);
        assert_eq!(get(b, e + CLS_EXTENT_COUNT), 1);
        assert_eq!(get(b, e + CLS_LOCK), 0);
        let offset = get(b, extent_entry(c, 0));
        assert!(offset >= PAGE && offset % PAGE == 0 && (offset as usize) < b.len());
        assert_eq!(get(b, extent_entry(c, 0) + 8), 16384 / size);
    }

    let path = seg.write("copy.shm", &seg.bytes);
    let slab = Slab::attach(&path).expect("the fixture attaches");
    assert_eq!(slab.class_sizes(), CLASSES);
    assert_eq!(
        slab.root::<u64>("answer")
            .unwrap()
            .map(|h| slab.read(h).unwrap()),
        Some(42)
    );
    let report = slab.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.findings);
}

// ---------------------------------------------------------------------------
// Files that are not segments.
// ---------------------------------------------------------------------------

#[test]
fn an_empty_file_is_empty_file() {
    let seg = Segment::new();
    let path = seg.write("empty", b"");
    match attach_err(&path) {
        Error::EmptyFile { path: p } => assert_eq!(p, path),
        other => panic!("expected Error::EmptyFile, got {other:?}"),
    }
}

#[test]
fn random_bytes_are_not_a_segment() {
    let seg = Segment::new();
    for (i, len) in [9usize, 100, 4096, 65536].into_iter().enumerate() {
        let bytes = noise(len, 0x9E37_79B9_7F4A_7C15 + i as u64);
        let path = seg.write(&format!("noise-{len}"), &bytes);
        match attach_err(&path) {
            Error::NotASegment { found } => assert_eq!(found[..], bytes[..8]),
            other => panic!("{len} random bytes: expected Error::NotASegment, got {other:?}"),
        }
    }
}

#[test]
fn a_file_shorter_than_the_magic_is_not_a_segment() {
    let seg = Segment::new();
    for len in 1..8 {
        let path = seg.variant(&format!("short-{len}"), |b| b.truncate(len));
        match attach_err(&path) {
            Error::NotASegment { .. } => {}
            other => panic!("{len} bytes: expected Error::NotASegment, got {other:?}"),
        }
    }
}

#[test]
fn another_programs_file_is_not_a_segment() {
    let seg = Segment::new();
    // An ELF executable: this test binary, and /bin/ls where there is one.
    let mut elves = vec![std::env::current_exe().unwrap()];
    if Path::new("/bin/ls").exists() {
        elves.push(PathBuf::from("/bin/ls"));
    }
    for (i, exe) in elves.iter().enumerate() {
        let copy = seg.dir.path().join(format!("elf-{i}"));
        std::fs::copy(exe, &copy).unwrap();
        match attach_err(&copy) {
            Error::NotASegment { found } => assert_eq!(&found[..4], b"\x7fELF"),
            other => panic!(
                "{}: expected Error::NotASegment, got {other:?}",
                exe.display()
            ),
        }
    }
    // A PNG: signature, then an IHDR chunk.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0".to_vec();
    png.resize(4096, 0);
    let path = seg.write("image.png", &png);
    match attach_err(&path) {
        Error::NotASegment { found } => assert_eq!(&found, b"\x89PNG\r\n\x1a\n"),
        other => panic!("PNG: expected Error::NotASegment, got {other:?}"),
    }
    // Text.
    let path = seg.write("notes.txt", b"shmslab segment? no, just some notes\n");
    assert!(matches!(attach_err(&path), Error::NotASegment { .. }));
}

#[test]
fn a_zeroed_magic_is_not_initialized() {
    let seg = Segment::new();
    let path = seg.variant("no-magic", |b| put(b, MAGIC, 0));
    assert!(matches!(attach_err(&path), Error::NotInitialized));
    // A creator that died before writing anything leaves zeros.
    let path = seg.write("zeros", &vec![0u8; 1 << 20]);
    assert!(matches!(attach_err(&path), Error::NotInitialized));
}

// ---------------------------------------------------------------------------
// Segments of other versions and machines.
// ---------------------------------------------------------------------------

#[test]
fn another_format_version_is_unsupported() {
    let seg = Segment::new();
    for found in [0, FORMAT_VERSION + 1, 0x0100_0000_0000_0000, u64::MAX] {
        let path = seg.variant(&format!("v{found}"), |b| put(b, VERSION, found));
        match attach_err(&path) {
            Error::UnsupportedVersion {
                found: f,
                supported,
            } => {
                assert_eq!(f, found);
                assert_eq!(supported, FORMAT_VERSION);
            }
            other => panic!("version {found}: expected UnsupportedVersion, got {other:?}"),
        }
    }
}

#[test]
fn another_byte_order_is_wrong_architecture() {
    let seg = Segment::new();
    // The arch tag alone swapped, or garbage.
    for (name, tag) in [("swapped", ARCH_TAG.swap_bytes()), ("garbage", 0xDEAD_BEEF)] {
        let path = seg.variant(name, |b| put(b, ARCH, tag));
        assert!(
            matches!(attach_err(&path), Error::WrongArchitecture { .. }),
            "arch tag {tag:#x}"
        );
    }
    // A whole header written by a machine of the other byte order: the
    // magic reads byte-swapped first.
    let path = seg.variant("other-endian", |b| {
        for at in (0..512).step_by(8) {
            let w = get(b, at);
            put(b, at, w.swap_bytes());
        }
    });
    match attach_err(&path) {
        Error::WrongArchitecture { found, expected } => {
            assert_ne!(found, expected);
            assert!(!expected.is_empty());
        }
        other => panic!("expected WrongArchitecture, got {other:?}"),
    }
}

#[test]
fn another_word_size_is_wrong_architecture() {
    let seg = Segment::new();
    for bits in [32u64, 16, 128, 0] {
        let path = seg.variant(&format!("bits-{bits}"), |b| put(b, WORD_BITS, bits));
        match attach_err(&path) {
            Error::WrongArchitecture { found, .. } => {
                assert!(found.contains(&bits.to_string()), "{found}")
            }
            other => panic!("{bits}-bit words: expected WrongArchitecture, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Segments cut short.
// ---------------------------------------------------------------------------

#[test]
fn a_segment_cut_short_is_truncated_at_every_level() {
    let seg = Segment::new();
    let data_start = seg.data_start();
    let current = seg.current_size();
    let class_table_end = CLASS_TABLE + 2 * CLASS_ENTRY_BYTES;
    // (cut to, what the error must say was needed)
    let cuts = [
        (8, 512),
        (100, 512),
        (511, 512),
        (600, class_table_end),
        (class_table_end - 8, class_table_end),
        (class_table_end, data_start),
        (data_start - 1, data_start),
        (data_start, current),
        (data_start + 100, current),
        (current - PAGE as usize, current),
        (current - 1, current),
    ];
    for (cut, needed) in cuts {
        let path = seg.variant(&format!("cut-{cut}"), |b| b.truncate(cut));
        match attach_err(&path) {
            Error::Truncated { expected, actual } => {
                assert_eq!(actual, cut as u64, "cut to {cut}");
                assert_eq!(expected, needed as u64, "cut to {cut}");
            }
            other => panic!("cut to {cut}: expected Error::Truncated, got {other:?}"),
        }
    }
}

#[test]
fn a_current_size_beyond_the_end_of_the_file_is_truncated() {
    let seg = Segment::new();
    let len = seg.bytes.len() as u64;
    for claimed in [len + PAGE, len + (1 << 30), !(PAGE - 1)] {
        let path = seg.variant(&format!("claims-{claimed}"), |b| {
            put(b, CURRENT_SIZE, claimed)
        });
        match attach_err(&path) {
            Error::Truncated { expected, actual } => {
                assert_eq!(expected, claimed);
                assert_eq!(actual, len);
            }
            other => panic!("current_size {claimed}: expected Truncated, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Nonsense in the header and class table.
// ---------------------------------------------------------------------------

#[test]
fn a_class_count_out_of_range_is_corrupt() {
    let seg = Segment::new();
    for count in [0u64, 33, 1000, u64::MAX] {
        assert_corrupt(&seg, &format!("classes-{count}"), |b| {
            put(b, CLASS_COUNT, count)
        });
    }
}

#[test]
fn a_data_start_that_disagrees_with_the_tables_is_corrupt() {
    let seg = Segment::new();
    let ds = seg.data_start() as u64;
    for wrong in [0, 8, ds - 8, ds + 8, ds + PAGE, u64::MAX] {
        assert_corrupt(&seg, &format!("data-start-{wrong}"), |b| {
            put(b, DATA_START, wrong)
        });
    }
}

#[test]
fn a_current_size_that_is_misaligned_or_inside_the_header_is_corrupt() {
    let seg = Segment::new();
    let cur = seg.current_size() as u64;
    let ds = seg.data_start() as u64;
    for wrong in [cur - 8, cur - 1, ds + 1, ds - PAGE, 0] {
        assert_corrupt(&seg, &format!("current-{wrong}"), |b| {
            put(b, CURRENT_SIZE, wrong)
        });
    }
    // Page aligned and inside the file, but short of the published extents.
    assert_corrupt(&seg, "current-at-data-start", |b| put(b, CURRENT_SIZE, ds));
}

#[test]
fn an_extent_out_of_range_is_corrupt() {
    let seg = Segment::new();
    let cur = seg.current_size() as u64;
    let e0 = extent_entry(0, 0);
    let cases: [(&str, u64); 5] = [
        ("at-current-size", cur),
        ("past-the-file", cur + 16 * PAGE),
        ("wrapping", !(PAGE - 1)),
        ("misaligned", get(&seg.bytes, e0) + 8),
        ("in-the-header", 0),
    ];
    for (name, offset) in cases {
        assert_corrupt(&seg, &format!("extent-{name}"), |b| put(b, e0, offset));
    }
    // Its slot count: zero, or more than the growth rule allows.
    for slots in [0u64, 257, 1 << 24, u64::MAX] {
        assert_corrupt(&seg, &format!("extent-slots-{slots}"), |b| {
            put(b, e0 + 8, slots)
        });
    }
    // Two classes' extents over the same bytes.
    assert_corrupt(&seg, "extents-overlap", |b| {
        let off = get(b, extent_entry(0, 0));
        put(b, extent_entry(1, 0), off);
    });
    // More extents than the table holds, or one more than was published.
    for count in [MAX_EXTENTS as u64 + 1, 2, u64::MAX] {
        assert_corrupt(&seg, &format!("extent-count-{count}"), |b| {
            put(b, class_entry(0) + CLS_EXTENT_COUNT, count)
        });
    }
}

#[test]
fn other_nonsense_header_fields_are_corrupt() {
    let seg = Segment::new();
    let cases: Vec<(&str, usize, u64)> = vec![
        ("page-size-0", PAGE_SIZE, 0),
        ("page-size-3", PAGE_SIZE, 3),
        ("page-size-1M", PAGE_SIZE, 1 << 20),
        ("page-size-8K", PAGE_SIZE, 8192),
        ("segment-id-0", SEGMENT_ID, 0),
        ("segment-id-wide", SEGMENT_ID, 1 << 32),
        ("roots-too-many", ROOT_CAPACITY, 5000),
        ("roots-huge", ROOT_CAPACITY, u64::MAX),
        ("peers-0", PEER_CAPACITY, 0),
        ("peers-too-many", PEER_CAPACITY, 5000),
        ("max-size-below-header", MAX_SIZE, 100),
        ("max-extents", MAX_EXTENTS_FIELD, MAX_EXTENTS as u64 - 1),
        ("slot-size-0", class_entry(0) + CLS_SLOT_SIZE, 0),
        ("slot-size-odd", class_entry(0) + CLS_SLOT_SIZE, 65),
        ("slot-size-huge", class_entry(1) + CLS_SLOT_SIZE, 1 << 31),
        (
            "slot-sizes-not-increasing",
            class_entry(1) + CLS_SLOT_SIZE,
            64,
        ),
        ("first-slots", class_entry(0) + CLS_FIRST_SLOTS, 255),
        ("first-slots-0", class_entry(1) + CLS_FIRST_SLOTS, 0),
    ];
    for (name, at, value) in cases {
        assert_corrupt(&seg, name, |b| put(b, at, value));
    }
}

/// Attaches the fixture with the class-table word at `at` set to `value`,
/// allocates until that fails (or 300 slots), checks each slot keeps what is
/// written to it, frees everything, runs the checker and the stats.
///
/// Free-list heads, counts, cursors and locks change all the time, so attach
/// does not vouch for them; using them must still give errors or valid
/// slots, never a panic.
fn forged_class_word_fails_cleanly(name: &str, at: usize, value: u64) {
    let seg = Segment::new();
    let path = seg.variant(name, |b| put(b, at, value));
    let slab = Slab::attach(&path).unwrap_or_else(|e| panic!("{name}: attach: {e:?}"));
    let mut handles = Vec::new();
    for _ in 0..300 {
        match slab.alloc_bytes(16) {
            Ok(h) => handles.push(h),
            Err(_) => break,
        }
    }
    for (i, h) in handles.iter().enumerate() {
        let tag = (i as u64).to_ne_bytes();
        if slab.write_bytes(*h, 0, &tag).is_ok() {
            let mut back = [0u8; 8];
            slab.read_bytes(*h, 0, &mut back)
                .unwrap_or_else(|e| panic!("{name}: read after write: {e:?}"));
            assert_eq!(back, tag, "{name}: slot {i} lost its bytes");
        }
    }
    for h in handles {
        let _ = slab.free(h);
    }
    let _ = slab.trim();
    let _ = slab.check();
    let _ = slab.stats();
    drop(slab);
}

const FORGED_ROLE: &str = "forged-class-word";

/// Runs [`forged_class_word_fails_cleanly`] in a child process (the test
/// binary re-run for `test_name`): a panic inside `Slab::drop` while
/// unwinding aborts the whole process, and must fail this test only.
/// `test_name` must call [`forged_child`] first.
fn forged_in_child(test_name: &str, case: &str, at: usize, value: u64) {
    let out = common::run_child(
        test_name,
        FORGED_ROLE,
        &[case, &at.to_string(), &value.to_string()],
        Duration::from_secs(120),
    );
    common::assert_child_succeeded(&out);
}

/// In the child started by [`forged_in_child`]: runs the case; `true` if
/// this process is such a child.
fn forged_child() -> bool {
    let Some(args) = common::child_args(FORGED_ROLE) else {
        return false;
    };
    let (at, value) = (args[1].parse().unwrap(), args[2].parse().unwrap());
    forged_class_word_fails_cleanly(&args[0], at, value);
    true
}

macro_rules! forged_word_test {
    ($(#[$attr:meta])* $test:ident, $at:expr, $value:expr) => {
        $(#[$attr])*
        #[test]
        fn $test() {
            if forged_child() {
                return;
            }
            forged_in_child(stringify!($test), stringify!($test), $at, $value);
        }
    };
}

forged_word_test!(
    a_free_list_head_past_the_extent_fails_cleanly,
    class_entry(0) + CLS_FREE_HEAD,
    10_000
);
forged_word_test!(
    a_free_list_head_in_an_unpublished_extent_fails_cleanly,
    class_entry(0) + CLS_FREE_HEAD,
    5 << 24
);
forged_word_test!(
    /// Slot 0 of class 1 is allocated in the fixture.
    a_free_list_head_naming_an_allocated_slot_fails_cleanly,
    class_entry(1) + CLS_FREE_HEAD,
    0
);
forged_word_test!(
    a_fresh_cursor_past_the_extents_fails_cleanly,
    class_entry(0) + CLS_FRESH,
    (3 << 32) | 7
);
forged_word_test!(
    a_fresh_cursor_index_past_the_extent_fails_cleanly,
    class_entry(0) + CLS_FRESH,
    100_000
);
forged_word_test!(
    a_fresh_cursor_behind_used_slots_fails_cleanly,
    class_entry(0) + CLS_FRESH,
    0
);
forged_word_test!(
    a_class_lock_held_by_a_dead_peer_is_taken_over,
    class_entry(0) + CLS_LOCK,
    (7 << 32) | 3
);
forged_word_test!(
    a_large_free_count_fails_cleanly,
    class_entry(0) + CLS_FREE_COUNT,
    1 << 40
);
forged_word_test!(
    a_maximal_free_count_does_not_panic_when_slots_are_freed,
    class_entry(0) + CLS_FREE_COUNT,
    u64::MAX
);

#[test]
fn a_maximal_free_count_does_not_panic_in_stats() {
    let seg = Segment::new();
    let path = seg.variant("count-max-stats", |b| {
        put(b, class_entry(0) + CLS_FREE_COUNT, u64::MAX)
    });
    let slab = Slab::attach(&path).unwrap();
    let stats = slab.stats();
    assert_eq!(stats.classes.len(), 2);
    let _ = stats.total_free();
}

#[test]
fn slab_create_refuses_an_existing_file_unless_told_to_replace() {
    let seg = Segment::new();
    let path = seg.write("taken", b"not yours");
    let err = Slab::builder().create(&path).unwrap_err();
    match &err {
        Error::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
        }
        other => panic!("expected Error::Io(AlreadyExists), got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"not yours");
    let slab = Slab::builder().replace(true).create(&path).unwrap();
    assert!(Slab::attach(&path).is_ok());
    drop(slab);
}

#[test]
fn attaching_a_missing_path_or_a_directory_is_an_io_error() {
    let seg = Segment::new();
    let missing = seg.dir.path().join("missing");
    match attach_err(&missing) {
        Error::Io { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected Error::Io(NotFound), got {other:?}"),
    }
    assert!(matches!(attach_err(seg.dir.path()), Error::Io { .. }));
}

// ---------------------------------------------------------------------------
// Mutated headers and slot metadata, at random: two seeded campaigns.
//
// Case `n` of a campaign is generated from (seed, n) alone, so a failure is
// replayed with `SHMSLAB_FORMAT_SEED=<seed> SHMSLAB_FORMAT_FIRST=<n>
// SHMSLAB_FORMAT_CASES=1 cargo test --test format <test name>`.
// `SHMSLAB_FORMAT_CASES` sets the number of cases of each campaign; by
// default a release build runs the full size (10,000 header cases, 3,000
// metadata cases; `.ci/run`) and a debug build (the README's `cargo test`)
// a tenth of it.
// ---------------------------------------------------------------------------

const HEADER_CASES: u64 = 10_000;
const META_CASES: u64 = 3_000;
const DEFAULT_SEED: u64 = 0x5EED_F0A7_0000_0001;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                None => v.replace('_', "").parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        }
        Err(_) => default,
    }
}

/// Runs cases `first..first + cases` of a campaign (`full` cases at full
/// size): each case gets its own generator, `run` returns `Err` for a
/// failed case (a panic counts as one too). Panics at the end, naming the
/// failed cases and how to replay them.
fn campaign(test: &str, full: u64, mut run: impl FnMut(&mut XorShift, u64) -> Result<(), String>) {
    let default = if cfg!(debug_assertions) {
        full / 10
    } else {
        full
    };
    let cases = env_u64("SHMSLAB_FORMAT_CASES", default);
    let seed = env_u64("SHMSLAB_FORMAT_SEED", DEFAULT_SEED);
    let first = env_u64("SHMSLAB_FORMAT_FIRST", 0);
    let mut failures = Vec::new();
    for case in first..first + cases {
        let mut rng = XorShift::new(seed ^ case.wrapping_mul(0xA076_1D64_78BD_642F));
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut rng, case)))
                .unwrap_or_else(|_| Err("panicked (message above)".to_string()));
        if let Err(what) = outcome {
            failures.push(format!(
                "case {case}: {what}\n  replay: SHMSLAB_FORMAT_SEED={seed:#x} SHMSLAB_FORMAT_FIRST={case} \
                 SHMSLAB_FORMAT_CASES=1 cargo test --test format {test}"
            ));
        }
    }
    println!(
        "{test}: {cases} cases (seed {seed:#x}, first {first}), {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// An index into `weights`, picked with probability proportional to its
/// weight.
fn pick(rng: &mut XorShift, weights: &[u64]) -> usize {
    let mut r = rng.below(weights.iter().sum());
    for (i, &w) in weights.iter().enumerate() {
        if r < w {
            return i;
        }
        r -= w;
    }
    unreachable!("r < the sum of the weights")
}

/// A value in `lo..hi` (`lo < hi`).
fn range(rng: &mut XorShift, lo: u64, hi: u64) -> u64 {
    lo + rng.below(hi - lo)
}

/// One edit of the header region (the first `data_start` bytes).
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    Overwrite {
        at: usize,
        bytes: Vec<u8>,
    },
    /// A whole word set to a value chosen to be near a boundary.
    SetWord {
        at: usize,
        value: u64,
    },
    /// Cut the file (anywhere, data area included).
    Truncate {
        len: usize,
    },
}

fn fixture() -> &'static Segment {
    static FIXTURE: OnceLock<Segment> = OnceLock::new();
    FIXTURE.get_or_init(Segment::new)
}

/// Offsets of interest, weighted toward the words that mean something.
fn offset(rng: &mut XorShift, header_len: usize) -> usize {
    match pick(rng, &[3, 3, 2]) {
        0 => range(rng, 0, 160) as usize,
        1 => class_entry(rng.below(2) as usize) + rng.below(CLS_EXTENTS as u64 + 32) as usize,
        _ => rng.below(header_len as u64) as usize,
    }
}

fn word_offset(rng: &mut XorShift, header_len: usize) -> usize {
    (offset(rng, header_len) & !7).min(header_len - 8)
}

fn interesting_value(rng: &mut XorShift, seg: &Segment) -> u64 {
    let cur = seg.current_size() as u64;
    let ds = seg.data_start() as u64;
    let len = seg.bytes.len() as u64;
    match rng.below(13) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => u64::MAX / 2 + 1,
        4 => u32::MAX as u64,
        5 => 1 << 32,
        6 => ds,
        7 => cur,
        8 => len,
        9 => rng.below(64) * PAGE,
        10 => cur.wrapping_add(rng.below(64)).wrapping_sub(32),
        11 => rng.below(300),
        _ => rng.next_u64(),
    }
}

fn mutation(rng: &mut XorShift, seg: &Segment) -> Mutation {
    let header_len = seg.data_start();
    let file_len = seg.bytes.len();
    match pick(rng, &[4, 2, 3, 1]) {
        0 => Mutation::FlipBit {
            at: offset(rng, header_len),
            bit: rng.below(8) as u8,
        },
        1 => {
            let at = offset(rng, header_len);
            let mut bytes: Vec<u8> = (0..range(rng, 1, 24))
                .map(|_| rng.next_u64() as u8)
                .collect();
            bytes.truncate(header_len - at);
            Mutation::Overwrite { at, bytes }
        }
        2 => Mutation::SetWord {
            at: word_offset(rng, header_len),
            value: interesting_value(rng, seg),
        },
        _ => Mutation::Truncate {
            len: rng.below(file_len as u64 + 1) as usize,
        },
    }
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match *m {
        Mutation::FlipBit { at, bit } => {
            if let Some(b) = bytes.get_mut(at) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Overwrite { at, bytes: ref run } => {
            let end = (at + run.len()).min(bytes.len());
            if at < end {
                bytes[at..end].copy_from_slice(&run[..end - at]);
            }
        }
        Mutation::SetWord { at, value } => {
            if at + 8 <= bytes.len() {
                put(bytes, at, value);
            }
        }
        Mutation::Truncate { len } => bytes.truncate(len),
    }
}

/// A successful attach of a mutated file: use it. Allocating 300 small
/// slots outgrows the first extent, so growth runs on the mutated header
/// too. Errors are fine; panics, and live slots that share bytes, are not.
fn exercise(slab: &Slab) -> Result<(), String> {
    let mut live = Vec::new();
    for i in 0..300u64 {
        match slab.alloc_bytes(if i % 8 == 0 { 200 } else { 16 }) {
            Ok(h) => live.push((h, i)),
            Err(_) => break,
        }
    }
    live.retain(|(h, i)| slab.write_bytes(*h, 0, &i.to_ne_bytes()).is_ok());
    for (h, i) in &live {
        let mut back = [0u8; 8];
        if slab.read_bytes(*h, 0, &mut back).is_ok() && u64::from_ne_bytes(back) != *i {
            return Err(format!("slot {h:?} holds another live slot's bytes"));
        }
    }
    for (h, _) in live {
        let _ = slab.free(h);
    }
    let _ = slab.trim();
    let _ = slab.check();
    let _ = slab.stats();
    let _ = slab.root::<u64>("answer");
    let _ = slab.reclaim_dead();
    Ok(())
}

/// Whatever the header says, attach returns a typed result and never
/// panics; an attach that succeeds leaves a usable segment. 1 to 4
/// mutations per case.
#[test]
fn mutated_headers_never_panic_and_give_typed_errors() {
    let seg = fixture();
    campaign(
        "mutated_headers_never_panic_and_give_typed_errors",
        HEADER_CASES,
        |rng, case| {
            let muts: Vec<Mutation> = (0..range(rng, 1, 5)).map(|_| mutation(rng, seg)).collect();
            let mut bytes = seg.bytes.clone();
            for m in &muts {
                apply(&mut bytes, m);
            }
            let path = seg.write(&format!("case-{case}"), &bytes);
            let outcome = Slab::attach(&path);
            let result = match &outcome {
                Ok(slab) => exercise(slab),
                Err(
                    Error::EmptyFile { .. }
                    | Error::NotASegment { .. }
                    | Error::NotInitialized
                    | Error::UnsupportedVersion { .. }
                    | Error::WrongArchitecture { .. }
                    | Error::Truncated { .. }
                    | Error::Corrupt { .. }
                    | Error::PeerTableFull { .. }
                    // The header's `removed` word set.
                    | Error::SegmentRemoved,
                ) => Ok(()),
                Err(other) => Err(format!("attach failed with an unexpected error: {other:?}")),
            };
            drop(outcome);
            let _ = std::fs::remove_file(&path);
            result.map_err(|what| format!("{what}; mutations {muts:?}"))
        },
    );
}

/// One slot metadata word (`generation:32 | state:2 | payload:30`, see
/// src/format/slot.rs) of the fixture's first extents, set to `value`.
#[derive(Debug, Clone)]
struct MetaEdit {
    at: usize,
    value: u64,
}

fn meta_edit(rng: &mut XorShift, seg: &Segment) -> MetaEdit {
    let class = rng.below(2) as usize;
    let base = get(&seg.bytes, extent_entry(class, 0)) as usize;
    let slots = get(&seg.bytes, extent_entry(class, 0) + 8);
    let at = base + 8 * rng.below(slots) as usize;
    let value = match pick(rng, &[4, 1]) {
        0 => {
            let generation = match rng.below(4) {
                0 => 0,
                1 => 1,
                2 => u32::MAX as u64,
                _ => rng.next_u64() as u32 as u64,
            };
            let state = rng.below(4);
            let payload = match rng.below(5) {
                0 => rng.below(8),
                1 => (1 << 30) - 1,
                2 => rng.below(300),
                3 => rng.below(64) << 24 | rng.below(300),
                _ => rng.below(1 << 30),
            };
            generation << 32 | state << 30 | payload
        }
        _ => rng.next_u64(),
    };
    MetaEdit { at, value }
}

/// Slot metadata is written by every peer all the time: whatever it holds,
/// allocation, free, the checker and reclaim give typed results and never
/// panic or hand out one slot twice. 1 to 5 edits per case.
#[test]
fn mutated_slot_metadata_never_panics_or_aliases_slots() {
    let seg = fixture();
    campaign(
        "mutated_slot_metadata_never_panics_or_aliases_slots",
        META_CASES,
        |rng, case| {
            let edits: Vec<MetaEdit> = (0..range(rng, 1, 6)).map(|_| meta_edit(rng, seg)).collect();
            let mut bytes = seg.bytes.clone();
            for e in &edits {
                put(&mut bytes, e.at, e.value);
            }
            let path = seg.write(&format!("meta-{case}"), &bytes);
            let slab = Slab::attach(&path);
            let result = match &slab {
                Ok(slab) => exercise(slab),
                Err(e) => Err(format!(
                    "slot metadata is not checked at attach, yet attach failed: {e:?}"
                )),
            };
            drop(slab);
            let _ = std::fs::remove_file(&path);
            result.map_err(|what| format!("{what}; edits {edits:?}"))
        },
    );
}
