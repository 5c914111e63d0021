//! [`Stats`]: a cheap snapshot of a segment, read without locks.

use super::Slab;
use crate::error::{Error, Result};
use crate::peers::{self, PeerInfo};
use crate::sys;

/// Counts for one size class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassStats {
    /// Bytes per slot.
    pub slot_size: u64,
    /// Extents the class has.
    pub extents: u32,
    /// Slots in those extents.
    pub slots: u64,
    /// Slots anyone can allocate: on the shared free list or never used.
    pub free: u64,
    /// `slots - free`: allocated, waiting in some process's cache, or
    /// retired (out of use for good; [`Slab::check`] counts those).
    pub in_use: u64,
}

/// A snapshot of a segment. Read while other processes work, so the numbers
/// are each exact at some instant but not all at the same one; [`Slab::check`]
/// gives an exact, cross-checked picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The segment's id.
    pub segment_id: u32,
    /// One entry per size class, smallest first.
    pub classes: Vec<ClassStats>,
    /// Bytes in use by the header and extents.
    pub current_size: u64,
    /// Bytes the file has (at least `current_size`).
    pub file_size: u64,
    /// The growth counter.
    pub generation: u64,
    /// Attached (or dead but not yet reclaimed) processes.
    pub peers: Vec<PeerInfo>,
}

impl Stats {
    /// Slots in all classes.
    pub fn total_slots(&self) -> u64 {
        self.classes
            .iter()
            .fold(0, |a, c| a.saturating_add(c.slots))
    }

    /// Free slots in all classes.
    pub fn total_free(&self) -> u64 {
        self.classes.iter().fold(0, |a, c| a.saturating_add(c.free))
    }

    /// Extents in all classes.
    pub fn total_extents(&self) -> u64 {
        self.classes
            .iter()
            .fold(0, |a, c| a.saturating_add(c.extents as u64))
    }
}

impl Slab {
    /// A snapshot of the segment's classes, size, generation and peers.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let before = slab.stats();
    /// let slot = slab.alloc_bytes(64)?;
    /// let after = slab.stats();
    /// assert_eq!(after.classes[0].extents, 1); // the first allocation grew class 0
    /// assert!(after.generation > before.generation);
    /// assert_eq!(after.peers.len(), 1);
    /// # slab.free(slot)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// In a forked child (where every other operation of an inherited
    /// `Slab` fails with [`Error::ForkedProcess`](crate::Error::ForkedProcess))
    /// this still answers, touching no lock, cache or row: the counts cover
    /// the extents the parent had checked, and the peers are listed as an
    /// outsider sees them (none is the child's own).
    pub fn stats(&self) -> Stats {
        let pool = &self.pool;
        let inherited = self.is_inherited();
        let classes = (0..pool.class_count())
            .map(|c| {
                let n = if inherited {
                    pool.counts_checked(c)
                } else {
                    pool.counts(c)
                };
                let free = n.free_listed.saturating_add(n.fresh);
                ClassStats {
                    slot_size: pool.class(c).size,
                    extents: n.extents,
                    slots: n.slots,
                    free,
                    in_use: n.slots.saturating_sub(free),
                }
            })
            .collect();
        Stats {
            segment_id: pool.segment_id(),
            classes,
            current_size: pool.current_size(),
            file_size: sys::file_len(pool.mem.file()).unwrap_or(0),
            generation: pool.generation(),
            peers: match self.peers() {
                Err(Error::ForkedProcess) => peers::list(pool, None),
                listed => listed,
            }
            .unwrap_or_default(),
        }
    }

    /// The rows of the peer table in use.
    pub fn peers(&self) -> Result<Vec<PeerInfo>> {
        peers::list(self.pool()?, Some(self.row))
    }
}
