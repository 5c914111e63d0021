use shmslab::bytemuck::{Pod, Zeroable};
use shmslab::{Schema, Slab};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")] // the derive's path to bytemuck
struct Stats { requests: u64, errors: u64 }
impl Schema for Stats {
    const SCHEMA_ID: Option<u64> = Some(1); // change it when the layout changes
}

fn main() -> Result<(), shmslab::Error> {
    let path = std::env::temp_dir().join("readme-example.shm");
    let _ = std::fs::remove_file(&path);

    // Process A: create the segment and a named root.
    let a = Slab::builder().initial_size(64 << 10).create(&path)?;
    let stats = a.root_or_insert("stats", Stats::default())?;
    a.update(stats, |s| s.requests += 1)?;

    // Process B (here: a second attachment): find it by name and type.
    let b = Slab::attach(&path)?;
    let seen = b.root::<Stats>("stats")?.expect("made by A");
    assert_eq!(b.read(seen)?.requests, 1);

    // Handles are 16 bytes, Copy and Pod: send them anywhere.
    let msg = b.alloc([7u8; 48])?;
    let wire: [u8; 16] = msg.to_bytes();
    let received = shmslab::Handle::<[u8; 48]>::from_bytes(wire);
    assert_eq!(a.read(received)?, [7; 48]);
    a.free(received)?;
    assert!(b.read(msg).is_err()); // stale now, never a dangling read
    Ok(())
}
