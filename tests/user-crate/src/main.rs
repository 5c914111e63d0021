use shmslab::bytemuck::{Pod, Zeroable};
use shmslab::{Schema, Slab};
use std::sync::atomic::Ordering::Relaxed;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")] // the derive's path to bytemuck
struct Stats { requests: u64, errors: u64 }
impl Schema for Stats {
    const SCHEMA_ID: Option<u64> = Some(1); // change it when the layout changes
}
// `Stats` with every field an `AtomicU64`, to count in place from any process.
shmslab::atomic_fields! { struct StatsAtomics for Stats { requests, errors } }

fn main() -> Result<(), shmslab::Error> {
    let path = std::env::temp_dir().join("readme-example.shm");
    let _ = std::fs::remove_file(&path);

    // Process A: create the segment and a named root.
    let a = Slab::builder().initial_size(64 << 10).create(&path)?;
    let stats = a.root_or_insert("stats", Stats::default())?;
    a.atomic(stats)?.requests.fetch_add(1, Relaxed);

    // Process B (here: a second attachment): find it by name and type.
    let b = Slab::attach(&path)?;
    let seen = b.root::<Stats>("stats")?.expect("made by A");
    // Any number of processes can count at once and no increment is lost
    // (`update` copies the value out and back, so two at once can lose one).
    let counters = b.atomic(seen)?; // the handle is checked here, once
    counters.requests.fetch_add(1, Relaxed);
    counters.errors.fetch_add(1, Relaxed);
    assert_eq!(b.read(seen)?, Stats { requests: 2, errors: 1 }); // a copy

    // Handles are 16 bytes, Copy and Pod: send them anywhere.
    let msg = b.alloc([7u8; 48])?;
    let wire: [u8; 16] = msg.to_bytes();
    let received = shmslab::Handle::<[u8; 48]>::from_bytes(wire);
    assert_eq!(a.read(received)?, [7; 48]);
    a.free(received)?;
    assert!(b.read(msg).is_err()); // stale now, never a dangling read
    Ok(())
}
