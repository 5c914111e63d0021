//! What the byte paths allocate on the heap, counted by a global allocator
//! that wraps the system's: `with_bytes` and `update_bytes` of a 64 KiB
//! slot reuse one buffer per thread instead of a `Vec` of the whole slot
//! per call, and a loan is filled and read back in place with no buffer of
//! the payload's size at all.
//!
//! One test in this binary, so no other test thread allocates meanwhile.

use shmslab::Slab;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static BYTES: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to `System`, which upholds `GlobalAlloc`'s
// contract; the counters are plain atomics and allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Heap bytes and calls made by `f`.
fn counted(f: impl FnOnce()) -> (u64, u64) {
    let (b, c) = (BYTES.load(Ordering::Relaxed), CALLS.load(Ordering::Relaxed));
    f();
    (
        BYTES.load(Ordering::Relaxed) - b,
        CALLS.load(Ordering::Relaxed) - c,
    )
}

#[test]
fn byte_paths_do_not_allocate_the_payload_per_call() {
    const SIZE: usize = 64 << 10;
    const CALLS_MADE: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let slab = Slab::builder().create(dir.path().join("s")).unwrap();
    let h = slab.alloc_bytes(SIZE).unwrap();
    slab.write_bytes(h, 0, &[3; SIZE]).unwrap();
    // The first call may make this thread's buffer.
    slab.with_bytes(h, |b| assert_eq!(b.len(), SIZE)).unwrap();

    // Each round the slot holds new bytes (written by `update_bytes`, and
    // once by `write_bytes` behind the buffer's back), and each call must
    // see exactly them, not the buffer's leftovers.
    let (bytes, _) = counted(|| {
        for round in 0..CALLS_MADE {
            let r = round as u8;
            if round % 10 == 0 {
                slab.write_bytes(h, 0, &[r ^ 0x55; SIZE]).unwrap();
                slab.with_bytes(h, |b| assert!(b.iter().all(|&x| x == r ^ 0x55)))
                    .unwrap();
            }
            slab.update_bytes(h, |b| {
                b.fill(r);
                b[round as usize % SIZE] = !r;
            })
            .unwrap();
            slab.with_bytes(h, |b| {
                assert_eq!(b.len(), SIZE);
                let odd = round as usize % SIZE;
                assert!(b[odd] == !r && b.iter().enumerate().all(|(i, &x)| i == odd || x == r));
            })
            .unwrap();
        }
    });
    assert!(
        bytes < SIZE as u64,
        "{CALLS_MADE} with_bytes + update_bytes of {SIZE} bytes allocated {bytes} bytes"
    );

    // Slots of two sizes near the largest kept buffer, alternately: the
    // buffer grows once, exactly, and is kept (a doubling past the cap
    // would drop it and make it again every other call).
    let big = slab.alloc_bytes(1_000_000).unwrap();
    let mid = slab.alloc_bytes(600_000).unwrap();
    let (bytes, _) = counted(|| {
        for _ in 0..100 {
            slab.with_bytes(mid, |b| assert_eq!(b.len(), 600_000))
                .unwrap();
            slab.with_bytes(big, |b| assert_eq!(b.len(), 1_000_000))
                .unwrap();
        }
    });
    assert!(
        bytes <= 2_000_000,
        "200 with_bytes of 600,000 and 1,000,000 bytes allocated {bytes} bytes"
    );

    // A 64 KiB message written through a loan from a 4 KiB chunk, then
    // streamed out of a view 4 KiB at a time: no 64 KiB buffer anywhere.
    let chunk = [9u8; 4096];
    let mut out = [0u8; 4096];
    let (bytes, _) = counted(|| {
        let mut loan = slab.loan_bytes(SIZE).unwrap();
        for _ in 0..SIZE / chunk.len() {
            loan.write_all(&chunk).unwrap();
        }
        let m = loan.into_written_handle();
        let total = slab
            .read_in_place(m, |v| {
                let mut r = v.reader();
                let mut total = 0u64;
                loop {
                    let n = r.read(&mut out).unwrap();
                    if n == 0 {
                        break total;
                    }
                    total += out[..n].iter().map(|&x| x as u64).sum::<u64>();
                }
            })
            .unwrap();
        assert_eq!(total, 9 * SIZE as u64);
        slab.free(m).unwrap();
    });
    assert!(
        bytes < 4096,
        "a loan and a view of {SIZE} bytes allocated {bytes} bytes"
    );
}
