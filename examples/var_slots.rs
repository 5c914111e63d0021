//! Variable-size allocation: buffers of many sizes land in their size
//! classes, the file grows by extents as classes run dry, freed slots are
//! reused, and `stats()` shows it all.
//!
//! Run: `cargo run --release --example var_slots`

use shmslab::Slab;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let slab = Slab::builder()
        .classes(&[64, 256, 1024, 4096, 16384])
        .initial_size(64 << 10)
        .create(dir.path().join("var.shm"))?;

    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut live = Vec::new();
    let mut requested = 0u64;
    for round in 0..5 {
        for _ in 0..2000 {
            let len = 1 + (next() % 16384) as usize;
            let h = slab.alloc_bytes(len)?;
            slab.write_bytes(h, 0, &(len as u64).to_ne_bytes())?;
            requested += len as u64;
            live.push((h, len));
        }
        // Free every other buffer, checking its contents first.
        let mut kept = Vec::new();
        for (i, (h, len)) in live.drain(..).enumerate() {
            if i % 2 == 0 {
                let mut b = [0u8; 8];
                slab.read_bytes(h, 0, &mut b)?;
                assert_eq!(u64::from_ne_bytes(b), len as u64);
                slab.free(h)?;
                requested -= len as u64;
            } else {
                kept.push((h, len));
            }
        }
        live = kept;
        let st = slab.stats();
        println!(
            "round {round}: {} live buffers ({} KiB requested), file {} KiB, {} extents, generation {}",
            live.len(),
            requested >> 10,
            st.file_size >> 10,
            st.total_extents(),
            st.generation
        );
    }
    println!(
        "\n{:>9} {:>8} {:>8} {:>8} {:>8}",
        "slot size", "extents", "slots", "in use", "free"
    );
    for c in slab.stats().classes {
        println!(
            "{:>9} {:>8} {:>8} {:>8} {:>8}",
            c.slot_size, c.extents, c.slots, c.in_use, c.free
        );
    }
    let report = slab.check()?;
    println!(
        "\ncheck: {}",
        if report.is_consistent() {
            "consistent"
        } else {
            "inconsistent"
        }
    );
    Ok(())
}
