//! Loans (a new slot filled in place) and views (a live slot read in place):
//! what they write and read, that an unpublished loan frees its slot (also
//! when its process is killed), and that a view never returns an answer
//! computed over a slot freed or reused under it.

mod common;

use common::live::{LiveChild, new_segment, say};
use shmslab::{BytesHandle, Error, Handle, Slab};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Slots allocated (not cached, not free) in the whole segment.
fn allocated(slab: &Slab) -> u64 {
    slab.check()
        .unwrap()
        .classes
        .iter()
        .map(|c| c.allocated)
        .sum()
}

fn variant(e: &Error) -> String {
    format!("{e:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_bytes_loan_writes_in_place_and_hands_over_what_was_written() {
    let (_dir, _path, slab) = new_segment("loan-bytes.shm");
    let mut loan = slab.loan_bytes(4096).unwrap();
    assert_eq!(loan.len(), 4096);
    loan.write_all(b"header:").unwrap();
    loan.write_all(&[0xAB; 1000]).unwrap();
    assert_eq!(loan.position(), 1007);
    loan.write_at(4000, b"far").unwrap();
    let e = loan.write_at(4094, b"abc").unwrap_err();
    assert!(
        matches!(
            e,
            Error::OutOfBounds {
                offset: 4094,
                len: 3,
                capacity: 4096
            }
        ),
        "{e:?}"
    );
    let mut back = [0u8; 7];
    loan.read_at(0, &mut back).unwrap();
    assert_eq!(&back, b"header:");
    // The cursor's high-water mark, not where `write_at` went.
    let h = loan.into_written_handle();
    assert_eq!(h.len(), 1007);
    let bytes = slab.with_bytes(h, |b| b.to_vec()).unwrap();
    assert_eq!(&bytes[..7], b"header:");
    assert!(bytes[7..].iter().all(|&b| b == 0xAB));
    // The whole-slot handle of another loan.
    let mut loan = slab.loan_bytes(100).unwrap();
    loan.write_all(&[1; 100]).unwrap();
    let e = loan.write_all(b"x").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WriteZero);
    let h = loan.into_handle();
    assert_eq!(h.len(), 100);
    assert!(slab.is_live(h).unwrap());
    slab.free(h).unwrap();
}

#[test]
fn a_typed_loan_fills_fields_and_becomes_a_handle() {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Debug, PartialEq)]
    #[repr(C)]
    struct Frame {
        id: u64,
        len: u32,
        flags: u32,
        body: [u8; 4080],
    }
    let (_dir, _path, slab) = new_segment("loan-typed.shm");
    let mut loan = slab.loan::<Frame>().unwrap();
    loan.write_at(std::mem::offset_of!(Frame, id), &9u64)
        .unwrap();
    loan.write_at(std::mem::offset_of!(Frame, len), &4080u32)
        .unwrap();
    loan.write_at(std::mem::offset_of!(Frame, flags), &3u32)
        .unwrap();
    loan.write_at(std::mem::offset_of!(Frame, body), &[5u8; 4080])
        .unwrap();
    // A field past the end of the type is refused, though the slot is longer.
    assert!(matches!(
        loan.write_at(4096, &1u8).unwrap_err(),
        Error::OutOfBounds { .. }
    ));
    let h: Handle<Frame> = loan.into_handle();
    let f = slab.read(h).unwrap();
    assert_eq!((f.id, f.len, f.flags), (9, 4080, 3));
    assert!(f.body.iter().all(|&b| b == 5));
    let flags: u32 = slab
        .read_in_place(h, |v| v.get(std::mem::offset_of!(Frame, flags)))
        .unwrap()
        .unwrap();
    assert_eq!(flags, 3);
    // A whole value, then the escape hatch.
    let mut loan = slab.loan::<Frame>().unwrap();
    loan.write(&f).unwrap();
    // SAFETY: nobody else can name the slot (its handle is still the
    // loan's) and this test does not touch it otherwise meanwhile.
    unsafe { loan.as_mut() }.unwrap().id = 10;
    let g = slab.read(loan.into_handle()).unwrap();
    assert_eq!((g.id, g.body), (10, f.body));
}

#[test]
fn a_loan_dropped_unpublished_frees_its_slot() {
    let (_dir, _path, slab) = new_segment("loan-drop.shm");
    let before = allocated(&slab);
    {
        let mut a = slab.loan_bytes(64 << 10).unwrap();
        a.write_all(&[1; 100]).unwrap();
        let _b = slab.loan::<[u64; 100]>().unwrap();
        assert_eq!(allocated(&slab), before + 2);
    }
    assert_eq!(allocated(&slab), before, "dropped loans kept their slots");
    // A loan taken and published stays.
    let h = slab.loan_bytes(10).unwrap().into_handle();
    assert_eq!(allocated(&slab), before + 1);
    slab.free(h).unwrap();
    assert_eq!(slab.check().unwrap().findings.len(), 0);
}

#[test]
fn the_escape_hatches_give_the_slot_itself() {
    let (_dir, _path, slab) = new_segment("loan-unsafe.shm");
    let payload: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
    let mut loan = slab.loan_bytes(payload.len()).unwrap();
    // SAFETY: the loan's slot is named by no handle but the loan's, and
    // nothing else in this test touches it while the slice lives.
    let slot = unsafe { loan.as_mut_slice() }.unwrap();
    std::io::Cursor::new(&payload).read_exact(slot).unwrap();
    let h = loan.into_handle();
    let mut back = vec![0u8; payload.len()];
    slab.read_bytes(h, 0, &mut back).unwrap();
    assert!(back == payload);
    let same = slab
        .read_in_place(h, |v| {
            // SAFETY: no thread or process writes the slot in this test.
            let s = unsafe { v.as_slice() };
            s == &payload[..]
        })
        .unwrap();
    assert!(same);
}

#[test]
fn a_view_reads_parts_and_streams_and_checks_its_bounds() {
    let (_dir, _path, slab) = new_segment("view.shm");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let h = slab.alloc_bytes(data.len()).unwrap();
    slab.write_bytes(h, 0, &data).unwrap();
    let (len, part, streamed, past) = slab
        .read_in_place(h, |v| {
            let mut part = [0u8; 5];
            v.read_at(9_995, &mut part).unwrap();
            let mut streamed = Vec::new();
            v.reader().read_to_end(&mut streamed).unwrap();
            (
                v.len(),
                part,
                streamed,
                v.read_at(9_996, &mut [0u8; 5]).unwrap_err(),
            )
        })
        .unwrap();
    assert_eq!(len, 10_000);
    assert_eq!(&part[..], &data[9_995..]);
    assert!(streamed == data);
    assert!(
        matches!(
            past,
            Error::OutOfBounds {
                offset: 9_996,
                len: 5,
                capacity: 10_000
            }
        ),
        "{past:?}"
    );
    // A slice handle views its elements; a forged length is refused before
    // any byte is read.
    let s = slab.alloc_slice::<u32>(3).unwrap();
    slab.write_from(s, &[1, 2, 3]).unwrap();
    let third: u32 = slab.read_in_place(s, |v| v.get(8)).unwrap().unwrap();
    assert_eq!(third, 3);
    let forged = BytesHandle::from_raw(h.raw(), 1 << 20);
    let e = slab
        .read_in_place(forged, |_| unreachable!("viewed a forged length"))
        .unwrap_err();
    assert!(matches!(e, Error::OutOfBounds { .. }), "{e:?}");
    assert_eq!(
        variant(&slab.read_in_place(BytesHandle::NULL, |_| ()).unwrap_err()),
        "NullHandle"
    );
}

#[test]
fn a_view_of_a_slot_freed_or_reused_inside_it_is_stale() {
    let (_dir, _path, slab) = new_segment("view-stale.shm");
    let h = slab.alloc_bytes(64).unwrap();
    let e = slab
        .read_in_place(h, |_| slab.free(h).unwrap())
        .unwrap_err();
    assert_eq!(variant(&e), "StaleHandle", "{e:?}");
    // Freed and reused (the same slot, a new generation) inside the view.
    let h = slab.alloc_bytes(64).unwrap();
    let e = slab
        .read_in_place(h, |_| {
            slab.free(h).unwrap();
            let again = slab.alloc_bytes(64).unwrap();
            assert_eq!(
                again.raw().parts().index,
                h.raw().parts().index,
                "not reused"
            );
        })
        .unwrap_err();
    assert_eq!(variant(&e), "StaleHandle", "{e:?}");
    // Freed before: refused without running the closure.
    let e = slab.read_in_place(h, |_| unreachable!()).unwrap_err();
    assert_eq!(variant(&e), "StaleHandle");
}

/// Threads free and reallocate one class's slots and fill each new life
/// with one byte value; a reader views slots it was handed and sums them.
/// An answer the view returns as `Ok` must be of one life (all bytes the
/// same); a mixed one may only ever come back `StaleHandle`.
#[test]
fn a_view_racing_frees_and_reuse_never_returns_a_mixed_answer() {
    let (_dir, _path, slab) = new_segment("view-race.shm");
    const SIZE: usize = 4096;
    const SLOTS: usize = 8;
    let handles = std::sync::Mutex::new(
        (0..SLOTS)
            .map(|_| {
                let h = slab.alloc_bytes(SIZE).unwrap();
                slab.write_bytes(h, 0, &[0; SIZE]).unwrap();
                h
            })
            .collect::<Vec<_>>(),
    );
    let stop = AtomicBool::new(false);
    let (mut ok, mut stale, mut mixed) = (0u64, 0u64, 0u64);
    let reused = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut life = 1u8;
            let mut i = 0;
            let mut reused = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let old = handles.lock().unwrap()[i];
                slab.free(old).unwrap();
                let new = slab.alloc_bytes(SIZE).unwrap();
                // Freed slots come back (the cache is LIFO), so the views
                // really race new lives of the slots they opened.
                let (a, b) = (old.raw().parts(), new.raw().parts());
                reused += u64::from((a.extent, a.index) == (b.extent, b.index));
                slab.write_bytes(new, 0, &[life; SIZE]).unwrap();
                handles.lock().unwrap()[i] = new;
                life = life.wrapping_add(1);
                i = (i + 1) % SLOTS;
            }
            reused
        });
        let deadline = std::time::Instant::now()
            + Duration::from_millis(if cfg!(debug_assertions) { 1500 } else { 500 });
        let mut i = 0;
        while std::time::Instant::now() < deadline {
            let h = handles.lock().unwrap()[i];
            i = (i + 1) % SLOTS;
            let answer = slab.read_in_place(h, |v| {
                let mut chunk = [0u8; 512];
                let mut first = None;
                let mut same = true;
                for at in (0..SIZE).step_by(chunk.len()) {
                    v.read_at(at, &mut chunk).unwrap();
                    let f = *first.get_or_insert(chunk[0]);
                    same &= chunk.iter().all(|&b| b == f);
                }
                same
            });
            match answer {
                Ok(true) => ok += 1,
                Ok(false) => mixed += 1,
                Err(e) => {
                    assert_eq!(variant(&e), "StaleHandle", "{e:?}");
                    stale += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap()
    });
    assert!(reused > 100, "slots were hardly reused ({reused})");
    assert_eq!(
        mixed, 0,
        "a view returned bytes of two lives as one answer ({ok} ok, {stale} stale)"
    );
    assert!(ok > 100, "the reader hardly ran ({ok} ok, {stale} stale)");
}

/// A process killed while it holds loans (never published) leaves no slot
/// behind: `reclaim_dead` frees exactly the loaned slots.
#[test]
fn loans_of_a_killed_process_are_reclaimed() {
    const TEST: &str = "loans_of_a_killed_process_are_reclaimed";
    if let Some(args) = common::child_args("loaner") {
        let slab = Slab::attach(&args[0]).unwrap();
        let mut a = slab.loan_bytes(64 << 10).unwrap();
        a.write_all(&[7; 30_000]).unwrap();
        let _b = slab.loan::<[u64; 64]>().unwrap();
        let _c = slab.loan_bytes(100).unwrap();
        say("LOANED", 3);
        std::thread::sleep(Duration::from_secs(120));
        unreachable!("the parent kills this process");
    }
    let (_dir, path, slab) = new_segment("loan-kill.shm");
    let before = allocated(&slab);
    let mut child = LiveChild::spawn(TEST, "loaner", &[path.to_str().unwrap()], &[]);
    assert_eq!(child.expect("LOANED", Duration::from_secs(60)), "3");
    assert_eq!(allocated(&slab), before + 3);
    child.kill();
    let report = slab.reclaim_dead().unwrap();
    // The three loaned slots, and the child's cached ones with them.
    assert_eq!(report.peers, 1, "{report:?}");
    assert!(report.slots >= 3, "{report:?}");
    assert_eq!(allocated(&slab), before);
    let check = slab.check().unwrap();
    assert_eq!(
        check.classes.iter().map(|c| c.owned_by_dead).sum::<u64>(),
        0
    );
    assert_eq!(slab.check().unwrap().findings.len(), 0);
}

#[test]
fn a_loan_fills_from_a_reader_and_its_written_length_ignores_a_bare_seek() {
    let (_dir, _path, slab) = new_segment("loan-fill.shm");
    let mut loan = slab.loan_bytes(50_000).unwrap();
    // More than the loan holds: it takes what fits.
    let n = loan.fill_from(std::io::repeat(4).take(80_000)).unwrap();
    assert_eq!((n, loan.position()), (50_000, 50_000));
    let h = loan.into_written_handle();
    assert_eq!(h.len(), 50_000);
    slab.with_bytes(h, |b| assert!(b.iter().all(|&x| x == 4)))
        .unwrap();
    // A seek forward writes nothing and does not lengthen the message; a
    // write after it does, to its end.
    let mut loan = slab.loan_bytes(1000).unwrap();
    loan.write_all(b"abc").unwrap();
    loan.set_position(900);
    assert_eq!(loan.position(), 900);
    loan.set_position(5000);
    assert_eq!(loan.position(), 1000, "clamped to the loan");
    assert_eq!(loan.into_written_handle().len(), 3);
    let mut loan = slab.loan_bytes(1000).unwrap();
    loan.write_all(b"abc").unwrap();
    loan.set_position(500);
    loan.write_all(b"xyz").unwrap();
    assert_eq!(loan.into_written_handle().len(), 503);
}

#[test]
fn with_bytes_inside_with_bytes_and_after_a_panic_sees_its_own_bytes() {
    let (_dir, _path, slab) = new_segment("scratch.shm");
    let a = slab.alloc_bytes(3000).unwrap();
    let b = slab.alloc_bytes(2000).unwrap();
    slab.write_bytes(a, 0, &[1; 3000]).unwrap();
    slab.write_bytes(b, 0, &[2; 2000]).unwrap();
    // Re-entered: the inner call gets a buffer of its own.
    slab.with_bytes(a, |outer| {
        slab.with_bytes(b, |inner| {
            assert!(inner.len() == 2000 && inner.iter().all(|&x| x == 2))
        })
        .unwrap();
        assert!(outer.len() == 3000 && outer.iter().all(|&x| x == 1));
    })
    .unwrap();
    // A panic inside `update_bytes` writes nothing back and leaves the
    // next call a sound buffer.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        slab.update_bytes(a, |bytes| {
            bytes.fill(9);
            panic!("the closure failed");
        })
    }));
    assert!(caught.is_err());
    slab.with_bytes(a, |bytes| assert!(bytes.iter().all(|&x| x == 1)))
        .unwrap();
    slab.with_bytes(b, |bytes| {
        assert!(bytes.len() == 2000 && bytes.iter().all(|&x| x == 2))
    })
    .unwrap();
}
