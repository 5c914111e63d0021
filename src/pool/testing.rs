//! Pools on one shared [`HeapRegion`](crate::region::HeapRegion) with simulated
//! liveness, one pool per simulated process, for unit tests and loom.

use super::{Liveness, Owner, Pool};
use crate::format::{Config, Geometry};
use crate::region::HeapRegion;
use std::sync::Arc;

pub(crate) type TestPool = Pool<Arc<HeapRegion>>;

/// A fresh segment with `classes`, room to grow to `capacity` bytes, and
/// `processes` pools attached to it, each registered as a peer.
pub(crate) fn heap_processes(
    classes: &[u64],
    page: u64,
    capacity: usize,
    processes: usize,
) -> Vec<(TestPool, Owner)> {
    heap_processes_capped(classes, page, capacity, processes, 0)
}

/// As [`heap_processes`], with a `max_size` (0: none).
pub(crate) fn heap_processes_capped(
    classes: &[u64],
    page: u64,
    capacity: usize,
    processes: usize,
    max_size: u64,
) -> Vec<(TestPool, Owner)> {
    let config = Config {
        class_sizes: classes.to_vec(),
        root_capacity: 2,
        peer_capacity: processes.max(1) + 1,
        page_size: page,
        max_size,
        lifetime: crate::lifetime::FileLifetime::Keep,
    };
    let geo = Geometry::new(config, 0x5eed).expect("config");
    let mem = Arc::new(HeapRegion::with_capacity(geo.data_start as usize, capacity));
    geo.initialise(&mem).expect("initialise");
    let liveness = Liveness::simulated();
    (0..processes)
        .map(|_| {
            let live = match &liveness {
                Liveness::Simulated { dead } => Liveness::Simulated { dead: dead.clone() },
                Liveness::File => unreachable!(),
            };
            let geo = Geometry::load(&mem, mem.len() as u64).expect("load");
            let pool = Pool::new(mem.clone(), geo, live).expect("pool");
            let me = crate::peers::register(&pool).expect("register").1;
            (pool, me)
        })
        .collect()
}

/// Another process on `pool`'s segment (its own pool, the same simulated
/// liveness), not yet registered as a peer: an attacher in the making.
pub(crate) fn unregistered(pool: &TestPool) -> TestPool {
    let live = match &pool.liveness {
        Liveness::Simulated { dead } => Liveness::Simulated { dead: dead.clone() },
        Liveness::File => unreachable!("test pools simulate liveness"),
    };
    let geo = Geometry::load(&pool.mem, pool.mem.len() as u64).expect("load");
    Pool::new(pool.mem.clone(), geo, live).expect("pool")
}

/// One pool (one process) with `peers` owners registered in it, as if
/// several processes shared one process-local state. Enough for tests
/// that do not exercise cross-process locking.
#[cfg(not(loom))]
pub(crate) fn heap_pool(
    classes: &[u64],
    page: u64,
    capacity: usize,
    peers: usize,
) -> (TestPool, Vec<Owner>) {
    let mut procs = heap_processes(classes, page, capacity, 1);
    let (pool, first) = procs.pop().expect("one");
    let mut owners = vec![first];
    for _ in 1..peers {
        owners.push(crate::peers::register(&pool).expect("register").1);
    }
    (pool, owners)
}

/// Marks peer `row` dead (simulated liveness, seen by every pool).
pub(crate) fn kill(pool: &TestPool, row: usize) {
    if let Liveness::Simulated { dead } = &pool.liveness {
        dead.fetch_or(1 << row, crate::sync::Ordering::AcqRel);
    }
}

/// Allocates one slot of class `c` the way `Slab` does, without a cache:
/// take one, growing the class first if it is empty.
pub(crate) fn alloc_one(
    p: &TestPool,
    c: usize,
    o: Owner,
) -> crate::error::Result<crate::format::SlotRef> {
    let mut got = Vec::new();
    let seen = p.take(c, o, 1, &mut got)?;
    if got.is_empty() {
        p.grow(c, seen, o)?;
        p.take(c, o, 1, &mut got)?;
    }
    let id = got
        .pop()
        .ok_or(crate::error::Error::corrupt("no slot after growth"))?;
    Ok(p.activate(c, id, o)?.0)
}

/// Plays a grower that died after writing its growth journal: the journal
/// names an extent of `slots` slots (`bytes` bytes) at `offset` for class
/// `class`'s extent `extent`, and is active. Nothing else is written.
pub(crate) fn write_journal(
    pool: &TestPool,
    class: u64,
    extent: u64,
    offset: u64,
    bytes: u64,
    slots: u64,
) {
    use crate::format::{hdr, journal};
    let w = |off: u64, v: u64| {
        pool.table_word(hdr::JOURNAL + off)
            .expect("journal word")
            .store(v, crate::sync::Ordering::Release)
    };
    w(journal::CLASS, class);
    w(journal::EXTENT, extent);
    w(journal::OFFSET, offset);
    w(journal::BYTES, bytes);
    w(journal::SLOTS, slots);
    w(journal::STATE, journal::ACTIVE);
}
