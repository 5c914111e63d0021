//! The typed layer: `Handle<T>`, slices, named roots, in one process and
//! across processes.

mod common;

use shmslab::bytemuck::{self, Pod, Zeroable};
use shmslab::{Error, Handle, Schema, Slab, SliceHandle, SlotRef};
use std::time::Duration;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
struct Inner {
    a: u32,
    b: u16,
    c: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
struct Outer {
    id: u64,
    inner: [Inner; 3],
    score: f64,
    flags: u32,
    pad: u32,
}
impl Schema for Outer {
    const SCHEMA_ID: Option<u64> = Some(0x0u64.wrapping_add(0x4f55_5445_5201));
}

#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
struct Line {
    bytes: [u8; 64],
}

#[repr(C, align(128))]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
struct TooAligned {
    bytes: [u8; 128],
}

fn segment() -> (tempfile::TempDir, Slab) {
    let (dir, _, slab) = common::live::small_segment("typed.shm");
    (dir, slab)
}

fn outer(id: u64) -> Outer {
    Outer {
        id,
        inner: [Inner {
            a: id as u32,
            b: 7,
            c: [1, 2],
        }; 3],
        score: id as f64 / 3.0,
        flags: 0xF00D,
        pad: 0,
    }
}

fn round_trip<T: Pod + PartialEq + std::fmt::Debug>(slab: &Slab, a: T, b: T) {
    let h = slab.alloc(a).unwrap();
    assert_eq!(slab.read(h).unwrap(), a);
    slab.write(h, b).unwrap();
    assert_eq!(slab.read(h).unwrap(), b);
    slab.update(h, |v| *v = a).unwrap();
    assert_eq!(slab.read(h).unwrap(), a);
    let z = slab.alloc_zeroed::<T>().unwrap();
    assert_eq!(slab.read(z).unwrap(), T::zeroed());
    slab.free(h).unwrap();
    slab.free(z).unwrap();
    assert!(matches!(slab.read(h), Err(Error::StaleHandle { .. })));
}

#[test]
fn pod_values_of_many_shapes_round_trip() {
    let (_d, slab) = segment();
    round_trip(&slab, 7u8, 200u8);
    round_trip(&slab, u64::MAX, 42u64);
    round_trip(&slab, -1.5f64, f64::MAX);
    round_trip(&slab, [1u32, 2, 3, 4, 5, 6, 7], [9u32; 7]);
    round_trip(&slab, outer(1), outer(2));
    round_trip(&slab, Line { bytes: [3; 64] }, Line { bytes: [4; 64] });
    // The largest class holds exactly the largest value (1 MiB: give the
    // thread room for a few copies of it on the stack).
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || round_trip(&slab, [5u64; (1 << 20) / 8], [6u64; (1 << 20) / 8]))
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_64_byte_aligned_type_gets_a_64_byte_aligned_slot() {
    let (_d, slab) = segment();
    let h = slab.alloc(Line { bytes: [1; 64] }).unwrap();
    assert!(slab.capacity(h.raw()).unwrap() >= 64);
    assert_eq!(slab.read(h).unwrap().bytes, [1; 64]);
}

#[test]
fn oversized_and_over_aligned_types_are_errors_at_alloc() {
    let (_d, slab) = segment();
    let err = slab.alloc_zeroed::<[u8; (1 << 20) + 16]>().unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let err = slab.alloc_zeroed::<TooAligned>().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Misaligned {
                align: 128,
                max: 64
            }
        ),
        "{err}"
    );
    let err = slab.alloc_slice::<u64>(usize::MAX / 4).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}

#[test]
fn a_read_after_the_slot_was_freed_and_reused_is_stale() {
    let (_d, slab) = segment();
    let old = slab.alloc(11u64).unwrap();
    slab.free(old).unwrap();
    let new = slab.alloc(22u64).unwrap();
    assert_eq!(new.raw().parts().class, old.raw().parts().class);
    assert!(matches!(slab.read(old), Err(Error::StaleHandle { .. })));
    assert!(matches!(slab.write(old, 5), Err(Error::StaleHandle { .. })));
    assert_eq!(slab.read(new).unwrap(), 22);
}

#[test]
fn a_reader_racing_free_and_reuse_sees_the_old_value_or_stale_never_the_new() {
    let (_d, slab) = segment();
    let old_value = [0x11u64; 8];
    let new_value = [0x22u64; 8];
    for _ in 0..200 {
        let h = slab.alloc(old_value).unwrap();
        let (mut seen_old, mut seen_stale) = (0u32, 0u32);
        std::thread::scope(|s| {
            let slab = &slab;
            let reader = s.spawn(move || {
                let mut out = (0u32, 0u32);
                for _ in 0..2000 {
                    match slab.read(h) {
                        Ok(v) => {
                            assert_eq!(v, old_value, "read returned another life's bytes");
                            out.0 += 1;
                        }
                        Err(Error::StaleHandle { .. }) => {
                            out.1 += 1;
                            break;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                out
            });
            std::thread::yield_now();
            slab.free(h).unwrap();
            let reused = slab.alloc(new_value).unwrap();
            (seen_old, seen_stale) = reader.join().unwrap();
            slab.free(reused).unwrap();
        });
        assert!(seen_old + seen_stale > 0);
    }
}

#[test]
fn handles_are_small_copy_pod_and_travel_as_bytes() {
    let (_d, slab) = segment();
    assert_eq!(size_of::<Handle<Outer>>(), 16);
    assert_eq!(size_of::<SliceHandle<u32>>(), 24);
    let h = slab.alloc(outer(5)).unwrap();
    let wire = h.to_bytes();
    assert_eq!(
        slab.read(Handle::<Outer>::from_bytes(wire)).unwrap(),
        outer(5)
    );
    // A handle stored inside another slot.
    let boxed: Handle<Handle<Outer>> = slab.alloc(h).unwrap();
    let back = slab.read(boxed).unwrap();
    assert_eq!(back, h);
    assert_eq!(slab.read(back).unwrap().id, 5);
    // And inside a struct, through bytemuck.
    let bytes: [u8; 16] = bytemuck::cast(h);
    assert_eq!(bytemuck::cast::<_, Handle<Outer>>(bytes), h);
}

#[test]
fn forged_handles_and_handles_of_another_segment_are_errors() {
    let (_d1, one) = segment();
    let (_d2, two) = segment();
    let h = one.alloc(1u64).unwrap();
    let _ = two.alloc(1u64).unwrap();
    assert!(matches!(two.read(h), Err(Error::ForeignHandle { .. })));
    assert!(matches!(two.free(h), Err(Error::ForeignHandle { .. })));
    // A handle to a 64-byte slot used as a bigger type names no such value.
    let big = Handle::<[u64; 64]>::from_raw(h.raw());
    assert!(matches!(one.read(big), Err(Error::InvalidHandle { .. })));
    // Random bytes with this segment's id.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..20_000 {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&r.to_ne_bytes());
        bytes[8..].copy_from_slice(&r.rotate_left(17).to_ne_bytes());
        bytes[..4].copy_from_slice(&one.segment_id().to_ne_bytes());
        let forged = Handle::<u64>::from_bytes(bytes);
        match one.read(forged) {
            Ok(_) => assert_eq!(forged, h, "a forged handle read a slot"),
            Err(
                Error::InvalidHandle { .. }
                | Error::StaleHandle { .. }
                | Error::ForeignHandle { .. },
            ) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(one.read(h).unwrap(), 1);
}

#[test]
fn typed_slices_get_set_and_copy_in_bulk() {
    let (_d, slab) = segment();
    let s = slab.alloc_slice::<u32>(1000).unwrap();
    assert_eq!(s.len(), 1000);
    assert_eq!(slab.get(s, 999).unwrap(), 0);
    slab.set(s, 10, 77).unwrap();
    assert_eq!(slab.get(s, 10).unwrap(), 77);
    assert!(matches!(slab.get(s, 1000), Err(Error::OutOfBounds { .. })));
    let src: Vec<u32> = (0..1000).collect();
    slab.write_from(s, &src).unwrap();
    let mut dst = vec![0u32; 1000];
    slab.read_into(s, &mut dst).unwrap();
    assert_eq!(dst, src);
    assert!(matches!(
        slab.read_into(s, &mut vec![0; 1001]),
        Err(Error::OutOfBounds { .. })
    ));
    // A forged length that does not fit the slot is refused.
    let mut forged: [u8; 24] = bytemuck::cast(s);
    forged[16..24].copy_from_slice(&(1u64 << 40).to_ne_bytes());
    let forged: SliceHandle<u32> = bytemuck::cast(forged);
    assert!(matches!(
        slab.get(forged, 1 << 30),
        Err(Error::InvalidHandle { .. })
    ));
    slab.free(s).unwrap();
    assert!(matches!(slab.get(s, 0), Err(Error::StaleHandle { .. })));
    let empty = slab.alloc_slice::<u64>(0).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn roots_are_found_by_name_and_type() {
    let (_d, slab) = segment();
    assert_eq!(slab.root::<Outer>("cfg").unwrap(), None);
    let h = slab.root_or_insert("cfg", outer(3)).unwrap();
    assert_eq!(slab.root::<Outer>("cfg").unwrap(), Some(h));
    assert_eq!(slab.root_or_insert("cfg", outer(9)).unwrap(), h);
    assert_eq!(slab.read(h).unwrap(), outer(3));
    let roots = slab.roots().unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].name, "cfg");
    assert_eq!(roots[0].fingerprint.size, size_of::<Outer>() as u64);
    assert!(slab.remove_root("cfg").unwrap());
    assert!(!slab.remove_root("cfg").unwrap());
    assert!(matches!(slab.read(h), Err(Error::StaleHandle { .. })));
    assert_eq!(slab.root::<Outer>("cfg").unwrap(), None);
    let again = slab.root_or_insert("cfg", outer(4)).unwrap();
    assert_eq!(slab.read(again).unwrap().id, 4);
}

#[test]
fn a_root_asked_for_as_another_type_is_a_type_mismatch() {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct SameSize {
        x: [u8; size_of::<Outer>()],
    }
    impl Schema for SameSize {}
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct NewLayout {
        x: [u64; size_of::<Outer>() / 8],
    }
    impl Schema for NewLayout {
        const SCHEMA_ID: Option<u64> = Some(0x0u64.wrapping_add(0x4f55_5445_5202));
    }
    let (_d, slab) = segment();
    slab.root_or_insert("thing", outer(1)).unwrap();
    for err in [
        slab.root::<SameSize>("thing").unwrap_err(),
        slab.root::<NewLayout>("thing").unwrap_err(),
        slab.root::<u64>("thing").unwrap_err(),
        slab.root_or_insert("thing", 0u32).unwrap_err(),
    ] {
        match err {
            Error::TypeMismatch {
                name,
                stored,
                requested,
                requested_type,
            } => {
                assert!(!requested_type.is_empty());
                assert_eq!(name, "thing");
                assert_ne!(stored, requested);
            }
            other => panic!("{other}"),
        }
    }
}

#[test]
fn root_names_are_checked_and_the_table_can_fill() {
    let dir = tempfile::tempdir().unwrap();
    let slab = Slab::builder()
        .roots(2)
        .create(dir.path().join("r.shm"))
        .unwrap();
    let long = "x".repeat(shmslab::limits::MAX_ROOT_NAME + 1);
    assert!(matches!(
        slab.root::<u8>(&long),
        Err(Error::BadRootName { .. })
    ));
    assert!(matches!(
        slab.root_or_insert("", 1u8),
        Err(Error::BadRootName { .. })
    ));
    let max = "y".repeat(shmslab::limits::MAX_ROOT_NAME);
    slab.root_or_insert(&max, 1u8).unwrap();
    slab.root_or_insert("two", 2u8).unwrap();
    assert!(matches!(
        slab.root_or_insert("three", 3u8),
        Err(Error::RootTableFull { capacity: 2 })
    ));
    assert_eq!(
        slab.read(slab.root::<u8>(&max).unwrap().unwrap()).unwrap(),
        1
    );
}

/// The parent writes a struct under a root; a child reads it, checks it,
/// and writes its answer into another root; the parent reads that back.
#[test]
fn a_child_process_reads_the_parents_struct_and_writes_one_back() {
    if let Some(args) = common::child_args("reader") {
        let slab = Slab::attach(&args[0]).unwrap();
        let question = slab
            .root::<Outer>("question")
            .unwrap()
            .expect("made by the parent");
        let q = slab.read(question).unwrap();
        assert_eq!(q, outer(41));
        let answer = slab.root_or_insert("answer", outer(q.id + 1)).unwrap();
        slab.update(answer, |a| a.score = 99.5).unwrap();
        slab.update(question, |q| q.flags = 0xBEEF).unwrap();
        return;
    }
    let (d, slab) = segment();
    let path = d.path().join("typed.shm");
    let question = slab.root_or_insert("question", outer(41)).unwrap();
    let out = common::run_child(
        "a_child_process_reads_the_parents_struct_and_writes_one_back",
        "reader",
        &[path.to_str().unwrap()],
        Duration::from_secs(60),
    );
    common::assert_child_succeeded(&out);
    let answer = slab
        .root::<Outer>("answer")
        .unwrap()
        .expect("made by the child");
    let a = slab.read(answer).unwrap();
    assert_eq!((a.id, a.score), (42, 99.5));
    assert_eq!(slab.read(question).unwrap().flags, 0xBEEF);
}

/// Two processes race `root_or_insert` on one fresh name, many times: both
/// must come back with the same handle, and only one object is allocated.
#[test]
fn root_or_insert_racing_from_two_processes_yields_one_object() {
    if let Some(args) = common::child_args("racer") {
        let slab = Slab::attach(&args[0]).unwrap();
        let rounds: u32 = args[1].parse().unwrap();
        let mut out = String::new();
        for r in 0..rounds {
            let name = format!("race-{r}");
            let h = slab.root_or_insert(&name, outer(r as u64)).unwrap();
            out.push_str(&format!("{}\n", hex(&h.to_bytes())));
        }
        std::fs::write(&args[2], out).unwrap();
        return;
    }
    let (d, slab) = segment();
    let path = d.path().join("typed.shm");
    let rounds = 40;
    let (a_out, b_out) = (d.path().join("a.txt"), d.path().join("b.txt"));
    let spawn = |out: &std::path::Path| {
        common::spawn_child(
            "root_or_insert_racing_from_two_processes_yields_one_object",
            "racer",
            &[
                path.to_str().unwrap(),
                &rounds.to_string(),
                out.to_str().unwrap(),
            ],
        )
    };
    let (a, b) = (spawn(&a_out), spawn(&b_out));
    common::assert_child_succeeded(&common::wait_child(a, Duration::from_secs(60)));
    common::assert_child_succeeded(&common::wait_child(b, Duration::from_secs(60)));
    let a = std::fs::read_to_string(&a_out).unwrap();
    let b = std::fs::read_to_string(&b_out).unwrap();
    assert_eq!(a.lines().count(), rounds);
    assert_eq!(a, b, "the two processes got different objects for one name");
    // One object per name: the roots are the only allocations left.
    let report = slab.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.findings);
    assert_eq!(report.roots, rounds);
    let allocated: u64 = report.classes.iter().map(|c| c.allocated).sum();
    assert_eq!(allocated, rounds as u64);
    let h: Handle<Outer> = slab.root("race-7").unwrap().unwrap();
    assert_eq!(slab.read(h).unwrap().id, 7);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_root_survives_the_process_that_made_it() {
    if let Some(args) = common::child_args("maker") {
        let slab = Slab::attach(&args[0]).unwrap();
        slab.root_or_insert("kept", 1234u64).unwrap();
        // Exit without dropping: as good as a crash for ownership.
        std::process::exit(0);
    }
    let (d, slab) = segment();
    let path = d.path().join("typed.shm");
    let out = common::run_child(
        "a_root_survives_the_process_that_made_it",
        "maker",
        &[path.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    slab.reclaim_dead().unwrap();
    let h = slab.root::<u64>("kept").unwrap().expect("root");
    assert_eq!(slab.read(h).unwrap(), 1234);
    let _ = SlotRef::from_bytes([0; 16]);
}
