//! Issue 10, finding 1: two threads of one process that touch overlapping
//! shared bytes at different offsets and lengths must not make atomic
//! accesses of different sizes to them (undefined behaviour, which Miri
//! reports). Every shared byte is accessed as part of its aligned 8-byte
//! word, so these races only ever make a copy stale or mixed word by word,
//! and a value inside one word is never torn.
//!
//! The `HeapRegion` tests run under Miri (`cargo +nightly miri test --test
//! single_width`); the `Slab` test maps a file, which Miri cannot.

use shmslab::Slab;
use shmslab::region::HeapRegion;

/// Rounds for a racing loop: few under Miri, where each costs a lot.
fn rounds(native: u32) -> u32 {
    if cfg!(miri) { 30 } else { native }
}

/// The example: `write(4, &[b; 8])` racing `read(0, &mut [0; 16])`
/// on a `HeapRegion`. The write covers half of each of two words; the read
/// covers both words whole.
#[test]
fn a_region_write_racing_an_overlapping_read_of_another_span() {
    let heap = HeapRegion::new(4096);
    heap.region().write(0, &[0x5A; 16]).unwrap();
    let n = rounds(100_000);
    std::thread::scope(|s| {
        s.spawn(|| {
            let region = heap.region();
            for k in 0..n {
                let b = if k % 2 == 0 { 0xAB } else { 0xCD };
                region.write(4, &[b; 8]).unwrap();
            }
        });
        s.spawn(|| {
            let region = heap.region();
            for _ in 0..n {
                let mut out = [0u8; 16];
                region.read(0, &mut out).unwrap();
                assert_eq!(out[..4], [0x5A; 4], "bytes before the write changed");
                assert_eq!(out[12..], [0x5A; 4], "bytes after the write changed");
                // Each half of the write lies in one word: it is old or new
                // as a whole.
                for half in [&out[4..8], &out[8..12]] {
                    assert!(half.iter().all(|&b| b == half[0]), "torn: {out:x?}");
                    assert!([0x5A, 0xAB, 0xCD].contains(&half[0]), "{out:x?}");
                }
            }
        });
    });
}

/// Unaligned reads and writes of many offsets and lengths racing each other
/// over one stretch of a `HeapRegion`, including reads that cover a written
/// span only in part. Each writer owns its bytes, so after its own write a
/// read of them gives exactly what it wrote: no other writer's partial-word
/// update put back old bytes.
#[test]
fn racing_unaligned_writers_and_readers_of_one_stretch_keep_their_bytes() {
    let heap = HeapRegion::new(4096);
    // (offset, length) of each writer's bytes: 3..10 and 11..20 cross word
    // boundaries and share word 1; 26..30 lies inside word 3.
    let spans: [(usize, usize); 3] = [(3, 7), (11, 9), (26, 4)];
    let n = rounds(20_000);
    std::thread::scope(|s| {
        for (t, &(at, len)) in spans.iter().enumerate() {
            let heap = &heap;
            s.spawn(move || {
                let region = heap.region();
                for k in 0..n {
                    let b = (k % 250) as u8 + 1 + t as u8;
                    let mine = vec![b; len];
                    region.write(at, &mine).unwrap();
                    let mut back = vec![0; len];
                    region.read(at, &mut back).unwrap();
                    assert_eq!(back, mine, "writer {t}'s bytes were overwritten");
                }
            });
        }
        s.spawn(|| {
            let region = heap.region();
            for k in 0..n as usize {
                let (at, len) = (k % 7, 1 + k % 33);
                let mut out = vec![0; len];
                region.read(at, &mut out).unwrap();
            }
        });
    });
    let mut all = [0u8; 32];
    heap.region().read(0, &mut all).unwrap();
    for (at, len) in spans {
        assert!(all[at..at + len].iter().all(|&b| b == all[at]), "{all:x?}");
    }
    assert_eq!([all[0], all[1], all[2], all[10], all[20], all[31]], [0; 6]);
}

/// The other example, through the typed API on a mapped file:
/// `set::<u32>(slice, 1, v)` racing `read_into(slice, ..)`. An element lies
/// inside one word of its 16-aligned slot, so the reader sees it old or new,
/// never torn. (Miri cannot map files; the same race at pool level over a
/// heap segment is `pool::tests::an_element_write_racing_a_whole_slice_read_is_never_torn`.)
#[test]
#[cfg_attr(miri, ignore = "maps a file")]
fn a_typed_element_write_racing_a_slice_read_is_never_torn() {
    let dir = tempfile::tempdir().unwrap();
    let slab = Slab::builder()
        .initial_size(64 << 10)
        .create(dir.path().join("single_width.shm"))
        .unwrap();
    let slice = slab.alloc_slice::<u32>(4).unwrap();
    let init = [0x1111_1111, 0, 0x3333_3333, 0x4444_4444];
    slab.write_from(slice, &init).unwrap();
    let n = rounds(200_000);
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 0..n {
                slab.set(slice, 1, 0x0101_0101 * (k % 255 + 1)).unwrap();
            }
        });
        s.spawn(|| {
            for _ in 0..n {
                let mut out = [0u32; 4];
                slab.read_into(slice, &mut out).unwrap();
                let bytes = out[1].to_ne_bytes();
                assert!(bytes.iter().all(|&b| b == bytes[0]), "torn: {:#x}", out[1]);
                assert_eq!([out[0], out[2], out[3]], [init[0], init[2], init[3]]);
            }
        });
    });
}
