//! A parent and a child process share a `#[derive(Pod, Zeroable)]` struct
//! through a named root.
//!
//! Run: `cargo run --example typed_struct`

use shmslab::bytemuck::{Pod, Zeroable};
use shmslab::{Schema, Slab};
use std::process::Command;

/// The shared record. `repr(C)` and `Pod`: any bytes are a valid value, so
/// reading what another process wrote is always safe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Sensor {
    readings: u64,
    last_value: f64,
    max_value: f64,
    child_pid: u32,
    _pad: u32,
}

// A stable schema id: processes built separately agree on the layout, and a
// lookup with any other type is an error instead of garbage.
impl Schema for Sensor {
    const SCHEMA_ID: Option<u64> = Some(0x5345_4E53_4F52_0001);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(path) = std::env::args().nth(1) {
        // Child: attach, find the struct by name and type, update it.
        let slab = Slab::attach(&path)?;
        let sensor = slab.root::<Sensor>("sensor")?.ok_or("no sensor root")?;
        for v in [3.5, 9.25, 7.0] {
            slab.update(sensor, |s| {
                s.readings += 1;
                s.last_value = v;
                s.max_value = s.max_value.max(v);
                s.child_pid = std::process::id();
            })?;
        }
        println!("child: recorded 3 readings into the parent's struct");
        return Ok(());
    }

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sensor.shm");
    let slab = Slab::builder().create(&path)?;
    let sensor = slab.root_or_insert("sensor", Sensor::default())?;
    println!("parent: created root \"sensor\" = {:?}", slab.read(sensor)?);

    let status = Command::new(std::env::current_exe()?).arg(&path).status()?;
    assert!(status.success());

    let s = slab.read(sensor)?;
    println!("parent: after the child ran, sensor = {s:?}");
    assert_eq!(s.readings, 3);
    assert_eq!(s.max_value, 9.25);
    // Asking for the root as another type is refused.
    match slab.root::<u64>("sensor") {
        Err(e) => println!("parent: root::<u64>(\"sensor\") -> {e}"),
        Ok(_) => unreachable!("the fingerprint check should refuse this"),
    }
    Ok(())
}
