//! Read-only inspection of a segment, for tools like `shmslab inspect`.
//!
//! [`inspect`] maps the file read-only (`O_RDONLY`, `PROT_READ`), joins no
//! peer table and takes no lock: it never changes the segment, and it works on
//! a file the caller may only read. The price is that on a segment other
//! processes are changing, a count can be caught between two steps of an
//! operation; [`Slab::check`](crate::Slab::check) takes the class locks and is
//! exact. The same holds for the channels' counts (read without their locks),
//! and the read-only check verifies their shape but not the slots their
//! messages carry (see [`Slab::check`](crate::Slab::check)).

use crate::check::{self, ClassCheck, Finding};
use crate::error::Result;
use crate::format::{FORMAT_VERSION, Geometry, SlotRef};
use crate::peers;
use crate::pool::channel::RawChannel;
use crate::pool::{Liveness, Owner, Pool};
use crate::region::Memory;
use crate::region::RegionOptions;
use crate::sys;
use crate::typed::{RootInfo, list_roots};
use std::path::{Path, PathBuf};

/// One row of the peer table, with the slots its process owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// The row.
    pub row: usize,
    /// The process id it recorded.
    pub pid: u32,
    /// Whether the kernel says the process still holds its row.
    pub alive: bool,
    /// Slots it has allocated or cached.
    pub slots_owned: u64,
}

/// A named root that is a channel (see [`crate::channel`]), as [`inspect`]
/// read it: without the channel's lock, so on a channel other processes are
/// using the figures are each exact at some instant (queued, in flight and
/// the receivers come from one pass over the ring, so they agree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSnapshot {
    /// The root's name.
    pub name: String,
    /// The channel's handle (the root's).
    pub handle: SlotRef,
    /// Bytes of a message's value (the size of the root's type).
    pub value_size: u64,
    /// Messages the channel holds at most (queued and in flight).
    pub capacity: u64,
    /// Messages waiting for a receiver.
    pub queued: u64,
    /// Messages received and not yet acknowledged (the sum over
    /// [`receivers`](Self::receivers)).
    pub in_flight: u64,
    /// Who holds the in-flight messages: one entry per receiver, by peer
    /// row.
    pub receivers: Vec<ReceiverSnapshot>,
    /// Sends completed since the channel was made.
    pub sent: u64,
    /// Acknowledgements since the channel was made.
    pub acked: u64,
    /// Messages put back since the channel was made (their receiver died, or
    /// dropped them without an ack).
    pub redelivered: u64,
    /// Whether the channel was closed.
    pub closed: bool,
}

/// The messages one receiver holds in flight on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverSnapshot {
    /// The receiver's token: its peer row + 1 in the low 32 bits, the row's
    /// incarnation (which attach of the row) in the high 32.
    pub token: u64,
    /// The peer row the token names (`None` for a token that names none).
    pub row: Option<usize>,
    /// Whether the receiver still lives: the row is attached, by the
    /// token's incarnation, and the kernel says its process holds it. A
    /// dead receiver's messages go back to the queue at the next receive
    /// that finds nothing queued, [`Channel::redeliver_dead`] or
    /// [`Slab::reclaim_dead`] (`shmslab reclaim`).
    ///
    /// [`Channel::redeliver_dead`]: crate::Channel::redeliver_dead
    /// [`Slab::reclaim_dead`]: crate::Slab::reclaim_dead
    pub alive: bool,
    /// Messages in flight to it.
    pub in_flight: u64,
}

/// Everything [`inspect`] read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The file.
    pub path: PathBuf,
    /// Format version of the file.
    pub format_version: u64,
    /// The segment's id.
    pub segment_id: u32,
    /// Page size extents are aligned to.
    pub page_size: u64,
    /// Where the extents begin.
    pub data_start: u64,
    /// End of the last extent.
    pub current_size: u64,
    /// The file's length.
    pub file_size: u64,
    /// The cap on the file size (0: none).
    pub max_size: u64,
    /// The growth counter.
    pub generation: u64,
    /// Per class: slot size and exact counts by state.
    pub classes: Vec<ClassCheck>,
    /// Named roots.
    pub roots: Vec<RootInfo>,
    /// The named roots that are channels, in the order of [`roots`](Self::roots).
    /// A channel whose words do not read is left out (the check reports it).
    pub channels: Vec<ChannelSnapshot>,
    /// Rows of the peer table in use.
    pub peers: Vec<PeerSnapshot>,
    /// Slots owned by the segment itself (roots, detached processes' data).
    pub segment_owned: u64,
    /// What the consistency check found; empty when consistent.
    pub findings: Vec<Finding>,
    /// Work a dead process left half done that the next operation finishes
    /// ([`Report::notes`](crate::Report::notes)): not inconsistencies.
    pub notes: Vec<Finding>,
}

impl Snapshot {
    /// Whether the check found nothing wrong.
    pub fn is_consistent(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Reads a segment without changing it: header, classes, roots, channels,
/// peers, and a full consistency check.
///
/// A file that is not a readable segment (missing, empty, foreign, another
/// version or architecture, truncated, with a corrupt header) is an `Err`,
/// and so is one with holes (a sparse copy) on tmpfs, where reading a hole
/// allocates a page that a read-only mapping cannot reserve (attach it with
/// [`Slab::attach`](crate::Slab::attach) once, which fills the holes).
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("seg.shm");
/// let slab = shmslab::Slab::builder().create(&path)?;
/// slab.root_or_insert("answer", 42u64)?;
/// let snap = shmslab::inspect(&path)?;
/// assert!(snap.is_consistent());
/// assert_eq!(snap.roots[0].name, "answer");
/// assert_eq!(snap.peers.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inspect(path: impl AsRef<Path>) -> Result<Snapshot> {
    let path = path.as_ref();
    let region = RegionOptions::new().read_only(true).attach(path)?;
    let file_size = region.len() as u64;
    let geo = Geometry::load_live(&region)?;
    let pool = Pool::new(region, geo, Liveness::File)?;
    let report = check::check_pool(&pool, None)?;
    let peers = peers::list(&pool, None)?
        .into_iter()
        .map(|p| PeerSnapshot {
            slots_owned: report.owners.get(&(p.row as u32 + 1)).copied().unwrap_or(0),
            row: p.row,
            pid: p.pid,
            alive: p.alive,
        })
        .collect();
    let roots = list_roots(&pool)?;
    let channels = channels(&pool, &roots)?;
    Ok(Snapshot {
        path: path.to_path_buf(),
        format_version: FORMAT_VERSION,
        segment_id: pool.segment_id(),
        page_size: pool.geo.config.page_size,
        data_start: pool.geo.data_start,
        current_size: pool.current_size(),
        file_size: sys::file_len(pool.mem.file()).unwrap_or(file_size),
        max_size: pool.geo.config.max_size,
        generation: pool.generation(),
        roots,
        channels,
        segment_owned: report.owners.get(&0).copied().unwrap_or(0),
        classes: report.classes,
        peers,
        findings: report.findings,
        notes: report.notes,
    })
}

/// The channel roots among `roots`, counted in one pass over each ring.
fn channels<M: Memory>(pool: &Pool<M>, roots: &[RootInfo]) -> Result<Vec<ChannelSnapshot>> {
    let mut out = Vec::new();
    for root in roots {
        let Some(raw) = RawChannel::of_root(pool, &root.handle, root.fingerprint.size) else {
            continue;
        };
        let (Ok(counts), Ok(held)) = (raw.counts(), raw.held_slots()) else {
            continue;
        };
        let mut queued = 0;
        let mut receivers: Vec<ReceiverSnapshot> = Vec::new();
        for (_, receiver) in held {
            let Some(token) = receiver else {
                queued += 1;
                continue;
            };
            match receivers.iter_mut().find(|r| r.token == token) {
                Some(r) => r.in_flight += 1,
                None => receivers.push(ReceiverSnapshot {
                    token,
                    row: Owner::row_of(token),
                    alive: !pool
                        .liveness
                        .token_dead(&pool.mem, &pool.geo, token, true)?,
                    in_flight: 1,
                }),
            }
        }
        receivers.sort_by_key(|r| (r.row.is_none(), r.row, r.token));
        out.push(ChannelSnapshot {
            name: root.name.clone(),
            handle: root.handle,
            value_size: root.fingerprint.size,
            capacity: counts.capacity,
            queued,
            in_flight: receivers.iter().map(|r| r.in_flight).sum(),
            receivers,
            sent: counts.sent,
            acked: counts.acked,
            redelivered: counts.redelivered,
            closed: counts.closed,
        });
    }
    Ok(out)
}
