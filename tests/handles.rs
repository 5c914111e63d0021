//! One handle vocabulary: every handle type is `Copy` and passed by value,
//! has a null value whose use is `NullHandle`, goes to and from bytes, and
//! can be asked `is_live`; byte slots remember their length; errors say what
//! happened to the slot.

mod common;

use common::live::new_segment;
use shmslab::bytemuck::{self, Pod, Zeroable};
use shmslab::{BytesHandle, Error, Handle, Schema, SliceHandle, SlotRef};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Bucket {
    key: u64,
    value: Handle<u64>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Config {
    version: u64,
}
impl Schema for Config {}

#[test]
fn null_handles_are_default_zeroed_and_a_clear_error_everywhere() {
    let (_d, _p, slab) = new_segment("null.shm");
    assert!(SlotRef::NULL.is_null() && SlotRef::default().is_null());
    assert!(Handle::<u64>::NULL.is_null() && Handle::<u64>::default().is_null());
    assert!(SliceHandle::<u32>::NULL.is_null() && SliceHandle::<u32>::default().is_null());
    assert!(BytesHandle::NULL.is_null() && BytesHandle::default().is_null());
    // A zeroed struct holding a handle holds the null handle: the empty
    // bucket of a table needs no sentinel of its own.
    let empty: Bucket = bytemuck::Zeroable::zeroed();
    assert_eq!(empty.value, Handle::NULL);
    let real = slab.alloc(5u64).unwrap();
    assert!(!real.is_null() && !real.raw().is_null());

    let null = Handle::<u64>::NULL;
    let all: Vec<(&str, Result<(), Error>)> = vec![
        ("read", slab.read(null).map(drop)),
        ("write", slab.write(null, 1)),
        ("update", slab.update(null, |v| *v += 1)),
        ("free", slab.free(null)),
        ("persist", slab.persist(null)),
        ("adopt", slab.adopt(null)),
        ("capacity", slab.capacity(null).map(drop)),
        ("bytes_of", slab.bytes_of(null).map(drop)),
        ("get", slab.get(SliceHandle::<u32>::NULL, 0).map(drop)),
        ("read_bytes", slab.read_bytes(BytesHandle::NULL, 0, &mut [])),
        ("write_bytes", slab.write_bytes(BytesHandle::NULL, 0, &[])),
        (
            "with_bytes",
            slab.with_bytes(BytesHandle::NULL, |_| ()).map(drop),
        ),
    ];
    for (what, r) in all {
        assert!(matches!(r, Err(Error::NullHandle)), "{what}: {r:?}");
    }
    assert_eq!(
        Error::NullHandle.to_string(),
        "null handle: it was never made by an allocation (a NULL, default or zeroed handle)"
    );
    // A handle with the null segment id but other bits set is no null
    // handle: it was forged.
    let mut b = [0u8; 16];
    b[8] = 1; // generation 1
    assert!(matches!(
        slab.read(Handle::<u64>::from_bytes(b)),
        Err(Error::InvalidHandle { .. })
    ));
    // The real one was not disturbed by any of it.
    assert_eq!(slab.read(real).unwrap(), 5);
}

#[test]
fn is_live_answers_for_live_freed_reused_and_null_handles() {
    let (_d, path, slab) = new_segment("live.shm");
    let other = shmslab::Slab::attach(&path).unwrap();
    let h = slab.alloc([1u8; 40]).unwrap();
    assert!(slab.is_live(h).unwrap());
    assert!(other.is_live(h).unwrap(), "live for every process");
    other.free(h).unwrap();
    assert!(!slab.is_live(h).unwrap(), "freed by another process");
    let reused = other.alloc([2u8; 40]).unwrap();
    assert!(!slab.is_live(h).unwrap(), "reused since");
    assert!(slab.is_live(reused).unwrap());
    assert!(!slab.is_live(SlotRef::NULL).unwrap());
    let bytes = slab.alloc_bytes(10).unwrap();
    let slice = slab.alloc_slice::<u16>(3).unwrap();
    assert!(slab.is_live(bytes).unwrap() && slab.is_live(slice).unwrap());
    // A forged handle is an error, not a "no".
    let mut b = h.to_bytes();
    b[4..8].copy_from_slice(&9_999_999u32.to_ne_bytes());
    assert!(matches!(
        slab.is_live(Handle::<u64>::from_bytes(b)),
        Err(Error::InvalidHandle { .. })
    ));
}

#[test]
fn every_handle_goes_to_bytes_and_back_and_is_passed_by_value() {
    let (_d, _p, slab) = new_segment("bytes.shm");
    let h = slab.alloc(9u32).unwrap();
    let s = slab.alloc_slice::<u64>(4).unwrap();
    let b = slab.alloc_bytes(33).unwrap();
    assert_eq!(Handle::<u32>::from_bytes(h.to_bytes()), h);
    assert_eq!(SliceHandle::<u64>::from_bytes(s.to_bytes()), s);
    assert_eq!(BytesHandle::from_bytes(b.to_bytes()), b);
    assert_eq!(SlotRef::from_bytes(h.raw().to_bytes()), h.raw());
    // The same wire bytes whichever way the slice handle is cast.
    assert_eq!(s.to_bytes(), bytemuck::cast::<_, [u8; 24]>(s));
    let received = SliceHandle::<u64>::from_bytes(s.to_bytes());
    slab.set(received, 3, 77).unwrap();
    assert_eq!(slab.get(s, 3).unwrap(), 77);
    // By value, every handle type, for every operation on any slot.
    for raw in [h.raw(), s.raw(), b.raw()] {
        assert!(slab.capacity(raw).unwrap() >= 16);
    }
    slab.persist(h).unwrap();
    slab.adopt(s).unwrap();
    slab.persist(b).unwrap();
    slab.free(h).unwrap();
    slab.free(s).unwrap();
    slab.free(b).unwrap();
}

#[test]
fn a_byte_slot_remembers_its_length_without_a_header_or_zero_fill() {
    let (_d, _p, slab) = new_segment("len.shm");
    // A 64 KiB value fits the 64 KiB class: no header pushes it up a class.
    let big = slab.alloc_bytes(64 << 10).unwrap();
    assert_eq!(big.len(), 64 << 10);
    assert_eq!(slab.capacity(big).unwrap(), 64 << 10);
    // No zero fill: a reused slot keeps its old bytes.
    let first = slab.alloc_bytes(100).unwrap();
    slab.write_bytes(first, 0, &[0xAB; 100]).unwrap();
    slab.free(first).unwrap();
    let again = slab.alloc_bytes(65).unwrap(); // the same 128-byte class
    let (was, is) = (first.raw().parts(), again.raw().parts());
    assert_eq!(
        (is.class, is.extent, is.index, is.generation),
        (was.class, was.extent, was.index, was.generation + 1),
        "the freed slot came back"
    );
    let seen = slab.with_bytes(again, |b| b.to_vec()).unwrap();
    assert_eq!(seen, vec![0xAB; 65], "with_bytes gives the handle's length");
    // The length bounds every access, though the slot (128 bytes) is larger.
    assert!(matches!(
        slab.write_bytes(again, 60, &[1; 6]),
        Err(Error::OutOfBounds { capacity: 65, .. })
    ));
    assert!(slab.read_bytes(again, 65, &mut []).is_ok());
    // A length forged past the slot reads and writes nothing and sizes no
    // buffer.
    let mut forged = again.to_bytes();
    forged[16..].copy_from_slice(&(1u64 << 62).to_ne_bytes());
    let forged = BytesHandle::from_bytes(forged);
    assert!(matches!(
        slab.with_bytes(forged, |b| b.len()),
        Err(Error::InvalidHandle { .. })
    ));
    assert!(matches!(
        slab.update_bytes(forged, |b| b.fill(0)),
        Err(Error::InvalidHandle { .. })
    ));
    assert!(matches!(
        slab.write_bytes(forged, 100, &[0; 100]),
        Err(Error::OutOfBounds { capacity: 128, .. })
    ));
    assert_eq!(slab.with_bytes(again, |b| b[0]).unwrap(), 0xAB);
    // Bytes of a slot made another way: the whole slot.
    let typed = slab.alloc([7u8; 20]).unwrap();
    let view = slab.bytes_of(typed).unwrap();
    assert_eq!(view.len(), 64);
    assert_eq!(
        slab.with_bytes(view, |b| b[..20].to_vec()).unwrap(),
        [7; 20]
    );
}

#[test]
fn stale_handle_messages_say_what_happened_to_the_slot() {
    let (_d, _p, slab) = new_segment("msg.shm");
    let h = slab.alloc(1u64).unwrap();
    slab.free(h).unwrap();
    let freed = slab.read(h).unwrap_err();
    assert!(matches!(freed, Error::StaleHandle { .. }));
    assert_eq!(
        freed.to_string(),
        "stale handle: the slot was freed (generation 1)"
    );
    let _reused = slab.alloc(2u64).unwrap();
    assert_eq!(
        slab.read(h).unwrap_err().to_string(),
        "stale handle: the slot was freed and reused since (handle generation 1, slot now at generation 2)"
    );
    assert_eq!(
        Error::StaleHandle { handle: 9, slot: 0 }.to_string(),
        "stale handle: the slot was freed after its last life and retired (handle generation 9)"
    );
    assert!(
        Error::StaleHandle { handle: 9, slot: 3 }
            .to_string()
            .contains("forged")
    );
}

#[test]
fn a_type_mismatch_names_the_type_asked_for() {
    let (_d, _p, slab) = new_segment("types.shm");
    slab.root_or_insert("config", Config { version: 1 })
        .unwrap();
    let err = slab.root::<[u32; 2]>("config").unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::TypeMismatch { requested_type, .. } if requested_type == "[u32; 2]"),
        "{text}"
    );
    assert!(
        text.starts_with("root \"config\" holds another type: stored size 8 align 8 schema 0x")
            && text.contains("asked for `[u32; 2]` (size 8 align 4 schema 0x"),
        "{text}"
    );
}
