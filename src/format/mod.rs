//! The bytes of a segment file, and the checks that make them safe to use.
//!
//! Every field is a native-endian 64-bit word (shared ones are atomics), so the
//! same offsets work on a mapped file and on loom's word-array heap. The
//! layout, bottom up (see `docs/FORMAT.md` for the full table):
//!
//! ```text
//! 0            header: magic (written last), version, arch tag, page size,
//!              segment id, table layout, file lifetime, current_size,
//!              generation, lock words, growth journal
//! 512          class table: per class {slot size, first extent slots,
//!              extent count, free head, free count, fresh cursor, lock,
//!              extents[64] of {offset, slots}}
//! ...          root table: per root {state, name, fingerprint, handle}
//! ...          peer table: per peer {state, pid, start time, incarnation}
//! data_start   extents, page aligned: [meta word × n][slot data × n]
//! ```
//!
//! [`Geometry::load`] reads the header as untrusted input and checks every
//! field, offset and published extent against the file length; attach runs it
//! before anything else touches the file.

mod slot;

pub(crate) use slot::LAST_GENERATION;
pub use slot::{MAX_EXTENTS, MAX_SLOTS_PER_EXTENT, SlotParts, SlotRef};
pub(crate) use slot::{Meta, SlotId, SlotState};

use crate::error::{Error, Result};
use crate::lifetime::FileLifetime;
use crate::region::Memory;
use crate::sync::{AtomicU64, Ordering};

/// `b"SHMSLAB\0"` read as a native-endian word.
pub(crate) const MAGIC: u64 = u64::from_ne_bytes(*b"SHMSLAB\0");
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u64 = 2;
/// Written natively: reads back byte-swapped on a machine of the other endianness.
const ARCH_TAG: u64 = 0x0102_0304_0506_0708;

/// Size classes a segment may have.
pub const MAX_CLASSES: usize = 32;
/// Largest slot size.
pub const MAX_SLOT_SIZE: u64 = 1 << 30;
/// Smallest slot size; every slot size is a multiple of it.
pub const SLOT_GRANULE: u64 = 16;
/// Slots are aligned to at most this many bytes.
pub const MAX_SLOT_ALIGN: u64 = 64;
/// Most named roots a segment may have.
pub const MAX_ROOTS: usize = 4096;
/// Longest root name, in bytes.
pub const MAX_ROOT_NAME: usize = 48;
/// Most processes that may be attached at once.
pub const MAX_PEERS: usize = 4096;
/// Data bytes a class's first extent aims for; later extents grow by a
/// quarter of the class's total each time. (Tiny under loom, to keep models
/// small.)
#[cfg(not(loom))]
pub(crate) const FIRST_EXTENT_BYTES: u64 = 16 << 10;
#[cfg(loom)]
pub(crate) const FIRST_EXTENT_BYTES: u64 = 32;

/// Word offsets (in bytes) of the header fields.
pub(crate) mod hdr {
    pub const MAGIC: u64 = 0;
    pub const VERSION: u64 = 8;
    pub const ARCH: u64 = 16;
    pub const WORD_BITS: u64 = 24;
    pub const PAGE_SIZE: u64 = 32;
    pub const SEGMENT_ID: u64 = 40;
    pub const DATA_START: u64 = 48;
    pub const CLASS_COUNT: u64 = 56;
    pub const ROOT_CAPACITY: u64 = 64;
    pub const PEER_CAPACITY: u64 = 72;
    pub const MAX_SIZE: u64 = 80;
    pub const MAX_EXTENTS: u64 = 88;
    pub const CREATED_AT: u64 = 96;
    /// The file's lifetime (`FileLifetime`): 0 keep, 1 remove when the last
    /// process detaches, 2 unlinked at create. Written at create.
    pub const LIFETIME: u64 = 104;
    /// Non-zero once a process has removed the file (atomic, changed only
    /// under the lifetime lock): attach refuses such a segment.
    pub const REMOVED: u64 = 112;
    /// End of the last published extent (atomic).
    pub const CURRENT_SIZE: u64 = 128;
    /// Bumped by every growth (atomic).
    pub const GENERATION: u64 = 136;
    /// The growth lock word.
    pub const GROW_LOCK: u64 = 144;
    /// The root-table lock word.
    pub const ROOTS_LOCK: u64 = 152;
    /// The growth lock's progress word (see `pool::lock`).
    pub const GROW_PROGRESS: u64 = 160;
    /// The root-table lock's progress word.
    pub const ROOTS_PROGRESS: u64 = 168;
    /// The lifetime lock word: attach's admission and the last detacher's
    /// decision run under it (see `lifetime`).
    pub const LIFETIME_LOCK: u64 = 176;
    /// The lifetime lock's progress word.
    pub const LIFETIME_PROGRESS: u64 = 184;
    /// Growth journal: state, class, extent, offset, bytes, slots.
    pub const JOURNAL: u64 = 192;
    pub const END: u64 = 512;
}

/// Word offsets within a class-table entry.
pub(crate) mod cls {
    pub const SLOT_SIZE: u64 = 0;
    pub const FIRST_SLOTS: u64 = 8;
    pub const EXTENT_COUNT: u64 = 16;
    pub const FREE_HEAD: u64 = 24;
    pub const FREE_COUNT: u64 = 32;
    /// `extent << 32 | index` of the first never-used slot (see
    /// [`cursor`] and [`cursor_parts`]).
    pub const FRESH: u64 = 40;
    pub const LOCK: u64 = 48;
    /// The class lock's progress word (see `pool::lock`).
    pub const LOCK_PROGRESS: u64 = 56;
    /// `[offset, slots]` per extent.
    pub const EXTENTS: u64 = 64;
    pub const ENTRY_BYTES: u64 = EXTENTS + 16 * super::MAX_EXTENTS as u64;

    /// The fresh-cursor word for slot `index` of extent `extent`.
    pub fn cursor(extent: u32, index: u32) -> u64 {
        ((extent as u64) << 32) | index as u64
    }

    /// A fresh-cursor word's (extent, index), ordered as slots are claimed.
    pub fn cursor_parts(word: u64) -> (u32, u32) {
        ((word >> 32) as u32, word as u32)
    }
}

/// Word offsets within a root entry.
pub(crate) mod root {
    pub const STATE: u64 = 0;
    pub const NAME: u64 = 8;
    pub const NAME_LEN: u64 = 56;
    pub const FP_SIZE: u64 = 64;
    pub const FP_ALIGN: u64 = 72;
    pub const FP_SCHEMA: u64 = 80;
    pub const HANDLE: u64 = 88;
    /// A slice root's element count (0 for other roots; was reserved zero).
    pub const LEN: u64 = 104;
    pub const ENTRY_BYTES: u64 = 128;

    pub const EMPTY: u64 = 0;
    pub const RESERVED: u64 = 1;
    pub const READY: u64 = 2;
}

/// Word offsets within a peer row.
pub(crate) mod peer {
    pub const STATE: u64 = 0;
    pub const PID: u64 = 8;
    pub const START_TIME: u64 = 16;
    pub const INCARNATION: u64 = 24;
    pub const ROW_BYTES: u64 = 64;

    pub const EMPTY: u64 = 0;
    pub const LIVE: u64 = 1;
    /// Being claimed by a new peer (between EMPTY and LIVE).
    pub const CLAIMING: u64 = 2;
}

/// Growth journal states.
pub(crate) mod journal {
    pub const IDLE: u64 = 0;
    pub const ACTIVE: u64 = 1;
    pub const STATE: u64 = 0;
    pub const CLASS: u64 = 8;
    pub const EXTENT: u64 = 16;
    pub const OFFSET: u64 = 24;
    pub const BYTES: u64 = 32;
    pub const SLOTS: u64 = 40;
}

pub(crate) fn align_up(x: u64, to: u64) -> Option<u64> {
    debug_assert!(to.is_power_of_two());
    Some(x.checked_add(to - 1)? & !(to - 1))
}

/// What a segment is made of: chosen at create, read back at attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub class_sizes: Vec<u64>,
    pub root_capacity: usize,
    pub peer_capacity: usize,
    pub page_size: u64,
    pub max_size: u64,
    pub lifetime: FileLifetime,
}

impl Config {
    pub(crate) fn check(&self) -> Result<()> {
        let sizes = &self.class_sizes;
        if sizes.is_empty() {
            return Err(Error::config("at least one size class is needed"));
        }
        if sizes.len() > MAX_CLASSES {
            return Err(Error::config(format!(
                "{} size classes given; at most {MAX_CLASSES} are allowed",
                sizes.len()
            )));
        }
        for (i, &s) in sizes.iter().enumerate() {
            if s == 0 {
                return Err(Error::config("a size class of 0 bytes"));
            }
            if s % SLOT_GRANULE != 0 {
                return Err(Error::config(format!(
                    "size class {s} is not a multiple of {SLOT_GRANULE} bytes"
                )));
            }
            if s > MAX_SLOT_SIZE {
                return Err(Error::config(format!(
                    "size class {s} is larger than the {MAX_SLOT_SIZE}-byte cap"
                )));
            }
            if i > 0 && s <= sizes[i - 1] {
                return Err(Error::config(format!(
                    "size classes must be strictly increasing ({} then {s})",
                    sizes[i - 1]
                )));
            }
        }
        if self.root_capacity > MAX_ROOTS {
            return Err(Error::config(format!("at most {MAX_ROOTS} roots")));
        }
        if self.peer_capacity == 0 || self.peer_capacity > MAX_PEERS {
            return Err(Error::config(format!("1 to {MAX_PEERS} peers")));
        }
        if !self.page_size.is_power_of_two() || !(64..=1 << 16).contains(&self.page_size) {
            return Err(Error::config(
                "the page size must be a power of two from 64 to 65536",
            ));
        }
        Ok(())
    }
}

/// The checked, immutable facts of a segment, computed from its [`Config`]
/// (at create) or read from its header (at attach). Shared words are reached
/// through the offsets here; nothing past this point re-reads an immutable
/// header field, so a peer that scribbles on them later changes nothing.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub config: Config,
    pub segment_id: u32,
    pub class_table: u64,
    pub root_table: u64,
    pub peer_table: u64,
    pub data_start: u64,
    pub first_slots: Vec<u32>,
    /// The published extents of each class as `load` checked them (empty
    /// for a new segment), so a pool can start from them without checking
    /// them twice.
    pub extents: Vec<Vec<ExtentInfo>>,
    /// Their byte ranges, sorted and disjoint.
    pub spans: Vec<(u64, u64)>,
}

impl Geometry {
    pub(crate) fn new(config: Config, segment_id: u32) -> Result<Self> {
        config.check()?;
        let class_table = hdr::END;
        let root_table = class_table + cls::ENTRY_BYTES * config.class_sizes.len() as u64;
        let peer_table = root_table + root::ENTRY_BYTES * config.root_capacity as u64;
        let tables_end = peer_table + peer::ROW_BYTES * config.peer_capacity as u64;
        let data_start = align_up(tables_end, config.page_size).expect("small");
        let first_slots = config
            .class_sizes
            .iter()
            .map(|&s| (FIRST_EXTENT_BYTES / s).clamp(1, MAX_SLOTS_PER_EXTENT as u64) as u32)
            .collect();
        Ok(Self {
            config,
            segment_id,
            class_table,
            root_table,
            peer_table,
            data_start,
            first_slots,
            extents: Vec::new(),
            spans: Vec::new(),
        })
    }

    pub(crate) fn class_count(&self) -> usize {
        self.config.class_sizes.len()
    }

    pub(crate) fn class_entry(&self, class: usize) -> u64 {
        self.class_table + cls::ENTRY_BYTES * class as u64
    }

    pub(crate) fn extent_entry(&self, class: usize, extent: usize) -> u64 {
        self.class_entry(class) + cls::EXTENTS + 16 * extent as u64
    }

    pub(crate) fn root_entry(&self, i: usize) -> u64 {
        self.root_table + root::ENTRY_BYTES * i as u64
    }

    pub(crate) fn peer_row(&self, i: usize) -> u64 {
        self.peer_table + peer::ROW_BYTES * i as u64
    }

    /// The largest extent `extent` may be, given the slots of the extents
    /// before it: the first extent's size, then a quarter of the class's
    /// total so far (so capacity grows by ×1.25 and never overshoots need by
    /// more than that: every reserved byte is zeroed and mapped, used or not).
    pub(crate) fn max_extent_slots(&self, class: usize, slots_before: u64) -> u32 {
        let first = self.first_slots[class] as u64;
        (slots_before / 4)
            .max(first)
            .min(MAX_SLOTS_PER_EXTENT as u64) as u32
    }

    /// Byte layout of an extent of `slots` slots of class `class`: offset of
    /// the slot data from the extent start, and the extent's total bytes.
    pub(crate) fn extent_layout(&self, class: usize, slots: u32) -> Option<(u64, u64)> {
        let stride = self.config.class_sizes[class];
        let page = self.config.page_size;
        let data_align = if stride >= page { page } else { MAX_SLOT_ALIGN };
        let data = align_up(8 * slots as u64, data_align)?;
        let bytes = align_up(data.checked_add(stride.checked_mul(slots as u64)?)?, page)?;
        Some((data, bytes))
    }

    /// Writes a new header and tables into `mem` (which holds zeros), magic
    /// last, so a process that attaches early sees `NotInitialized`.
    pub(crate) fn initialise(&self, mem: &impl Memory) -> Result<()> {
        let c = &self.config;
        let w = |off: u64, v: u64| -> Result<()> {
            mem.checked_word(off)
                .ok_or_else(|| Error::corrupt("segment too small for its header"))?
                .store(v, Ordering::Relaxed);
            Ok(())
        };
        w(hdr::VERSION, FORMAT_VERSION)?;
        w(hdr::ARCH, ARCH_TAG)?;
        w(hdr::WORD_BITS, usize::BITS as u64)?;
        w(hdr::PAGE_SIZE, c.page_size)?;
        w(hdr::SEGMENT_ID, self.segment_id as u64)?;
        w(hdr::DATA_START, self.data_start)?;
        w(hdr::CLASS_COUNT, c.class_sizes.len() as u64)?;
        w(hdr::ROOT_CAPACITY, c.root_capacity as u64)?;
        w(hdr::PEER_CAPACITY, c.peer_capacity as u64)?;
        w(hdr::MAX_SIZE, c.max_size)?;
        w(hdr::MAX_EXTENTS, MAX_EXTENTS as u64)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        w(hdr::CREATED_AT, now)?;
        w(hdr::LIFETIME, c.lifetime.to_word())?;
        w(hdr::CURRENT_SIZE, self.data_start)?;
        for (i, &size) in c.class_sizes.iter().enumerate() {
            let e = self.class_entry(i);
            w(e + cls::SLOT_SIZE, size)?;
            w(e + cls::FIRST_SLOTS, self.first_slots[i] as u64)?;
            w(e + cls::FREE_HEAD, SlotId::NIL.raw() as u64)?;
        }
        mem.checked_word(hdr::MAGIC)
            .ok_or_else(|| Error::corrupt("segment too small for its header"))?
            .store(MAGIC, Ordering::Release);
        Ok(())
    }

    /// Reads and checks the header of the segment in `mem`, whose backing file
    /// has `file_len` bytes. Every field, table offset and published extent is
    /// checked; the result is only built from values that passed.
    pub(crate) fn load(mem: &impl Memory, file_len: u64) -> Result<Self> {
        if file_len < 8 || mem.len() < 8 {
            return Err(Error::NotASegment { found: [0; 8] });
        }
        let r = |off: u64| -> Result<u64> {
            mem.checked_word(off)
                .map(|w| w.load(Ordering::Acquire))
                .ok_or(Error::Truncated {
                    expected: hdr::END,
                    actual: file_len,
                })
        };
        let magic = r(hdr::MAGIC)?;
        if magic == MAGIC.swap_bytes() {
            return Err(Error::WrongArchitecture {
                found: "the other byte order".into(),
                expected: arch_name(),
            });
        }
        if magic == 0 {
            return Err(Error::NotInitialized);
        }
        if magic != MAGIC {
            return Err(Error::NotASegment {
                found: magic.to_ne_bytes(),
            });
        }
        if file_len < hdr::END || mem.len() < hdr::END {
            return Err(Error::Truncated {
                expected: hdr::END,
                actual: file_len,
            });
        }
        let version = r(hdr::VERSION)?;
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let arch = r(hdr::ARCH)?;
        let bits = r(hdr::WORD_BITS)?;
        if arch != ARCH_TAG || bits != usize::BITS as u64 {
            let order = if arch == ARCH_TAG.swap_bytes() {
                "the other byte order"
            } else if arch == ARCH_TAG {
                "this byte order"
            } else {
                "an unknown byte order"
            };
            return Err(Error::WrongArchitecture {
                found: format!("{order}, {bits}-bit words"),
                expected: arch_name(),
            });
        }
        let class_count = r(hdr::CLASS_COUNT)?;
        let root_capacity = r(hdr::ROOT_CAPACITY)?;
        let peer_capacity = r(hdr::PEER_CAPACITY)?;
        if class_count == 0 || class_count > MAX_CLASSES as u64 {
            return Err(Error::corrupt(format!("class count {class_count}")));
        }
        if root_capacity > MAX_ROOTS as u64 || peer_capacity > MAX_PEERS as u64 {
            return Err(Error::corrupt("root or peer table capacity"));
        }
        if r(hdr::MAX_EXTENTS)? != MAX_EXTENTS as u64 {
            return Err(Error::corrupt("extent table size"));
        }
        let page_size = r(hdr::PAGE_SIZE)?;
        let data_start = r(hdr::DATA_START)?;
        let max_size = r(hdr::MAX_SIZE)?;
        // The class table must be readable before the class sizes are.
        let class_table_end = hdr::END + cls::ENTRY_BYTES * class_count;
        if file_len < class_table_end || mem.len() < class_table_end {
            return Err(Error::Truncated {
                expected: class_table_end,
                actual: file_len,
            });
        }
        let mut class_sizes = Vec::with_capacity(class_count as usize);
        for i in 0..class_count {
            class_sizes.push(r(hdr::END + cls::ENTRY_BYTES * i + cls::SLOT_SIZE)?);
        }
        let lifetime = r(hdr::LIFETIME)?;
        let lifetime = FileLifetime::from_word(lifetime)
            .ok_or_else(|| Error::corrupt(format!("file lifetime {lifetime}")))?;
        let config = Config {
            class_sizes,
            root_capacity: root_capacity as usize,
            peer_capacity: peer_capacity as usize,
            page_size,
            max_size,
            lifetime,
        };
        config.check().map_err(|e| match e {
            Error::InvalidConfig { reason } => Error::corrupt(format!("header: {reason}")),
            e => e,
        })?;
        let segment_id = r(hdr::SEGMENT_ID)?;
        if segment_id == 0 || segment_id > u32::MAX as u64 {
            return Err(Error::corrupt(format!("segment id {segment_id:#x}")));
        }
        let geo = Geometry::new(config, segment_id as u32)?;
        if data_start != geo.data_start {
            return Err(Error::corrupt(format!(
                "data starts at {data_start}, the tables end at {}",
                geo.data_start
            )));
        }
        if file_len < geo.data_start || mem.len() < geo.data_start {
            return Err(Error::Truncated {
                expected: geo.data_start,
                actual: file_len,
            });
        }
        if max_size != 0 && max_size < geo.data_start {
            return Err(Error::corrupt(format!(
                "max_size {max_size} is below the header"
            )));
        }
        for i in 0..geo.class_count() {
            let first = r(geo.class_entry(i) + cls::FIRST_SLOTS)?;
            if first != geo.first_slots[i] as u64 {
                return Err(Error::corrupt(format!(
                    "class {i}: first extent of {first} slots"
                )));
            }
        }
        // Extent counts first, then current_size: growth stores the size
        // before the count (both Release), so a size read after a count (both
        // Acquire) covers every extent that count publishes.
        let mut counts = Vec::with_capacity(geo.class_count());
        for c in 0..geo.class_count() {
            let count = r(geo.class_entry(c) + cls::EXTENT_COUNT)?;
            if count > MAX_EXTENTS as u64 {
                return Err(Error::corrupt(format!("class {c}: {count} extents")));
            }
            counts.push(count as usize);
        }
        let current = r(hdr::CURRENT_SIZE)?;
        if current < geo.data_start || current % page_size != 0 {
            return Err(Error::corrupt(format!("current_size {current}")));
        }
        if current > file_len {
            return Err(Error::Truncated {
                expected: current,
                actual: file_len,
            });
        }
        // Published extents: inside [data_start, current_size), sized by the
        // growth rule, and not overlapping each other.
        let total: usize = counts.iter().sum();
        // Each extent as one sort key: its offset, shifted past the 11 bits
        // that name it (class < 2^5, extent < 2^6). Sorting plain u64s costs
        // a fraction of sorting (start, end, class) tuples by a key (20,000
        // instructions of a 173-extent attach). An offset that would not
        // survive the shift lies past any file that can be mapped.
        const NAME_BITS: u32 = 11;
        const _: () = assert!(MAX_CLASSES <= 1 << 5 && MAX_EXTENTS <= 1 << 6);
        let mut keys = Vec::with_capacity(total);
        let mut extents = Vec::with_capacity(counts.len());
        for (c, &count) in counts.iter().enumerate() {
            let mut before = 0u64;
            let mut checked = Vec::with_capacity(count);
            for e in 0..count {
                let info = geo.check_extent(mem, c, e, before, current)?;
                if info.offset >> (u64::BITS - NAME_BITS) != 0 {
                    return Err(Error::corrupt(format!(
                        "class {c} extent {e} at offset {}, past any mappable file",
                        info.offset
                    )));
                }
                before += info.slots as u64;
                keys.push(info.offset << NAME_BITS | (c as u64) << 6 | e as u64);
                checked.push(info);
            }
            extents.push(checked);
        }
        keys.sort_unstable();
        let mut spans: Vec<(u64, u64)> = Vec::with_capacity(total);
        let mut last_class = 0;
        for key in keys {
            let (c, e) = ((key >> 6) as usize & 31, key as usize & 63);
            let info = &extents[c][e];
            let (start, end) = (info.offset, info.offset + info.bytes);
            if let Some(&(_, prev_end)) = spans.last() {
                if prev_end > start {
                    return Err(Error::corrupt(format!(
                        "extents of classes {last_class} and {c} overlap at offset {start}"
                    )));
                }
            }
            spans.push((start, end));
            last_class = c;
        }
        let mut geo = geo;
        geo.extents = extents;
        geo.spans = spans;
        Ok(geo)
    }

    /// [`load`](Self::load) for a live segment: if the header says more
    /// bytes than this process has mapped (another process grew the file
    /// since), look at the file again and retry, so a growth racing an
    /// attach is not mistaken for truncation.
    pub(crate) fn load_live(mem: &impl Memory) -> Result<Self> {
        for _ in 0..16 {
            match Geometry::load(mem, mem.len()) {
                Err(Error::Truncated { expected, actual }) if expected > mem.len() => {
                    match mem.observe(expected) {
                        Ok(()) => {}
                        Err(Error::Truncated { .. }) => {
                            return Err(Error::Truncated { expected, actual });
                        }
                        // Mapping the rest failed for another reason (its
                        // holes could not be filled on a full disk, say):
                        // that reason, not a misleading "truncated".
                        Err(e) => return Err(e),
                    }
                }
                other => return other,
            }
        }
        Geometry::load(mem, mem.len())
    }

    /// Reads extent `extent` of `class` and checks it: page aligned, inside
    /// the data area and `current_size`, and no larger than the growth rule
    /// allows after `slots_before` slots.
    pub(crate) fn check_extent(
        &self,
        mem: &impl Memory,
        class: usize,
        extent: usize,
        slots_before: u64,
        current_size: u64,
    ) -> Result<ExtentInfo> {
        let at = self.extent_entry(class, extent);
        let offset = load(mem, at)?;
        let slots = load(mem, at + 8)?;
        let bad = |why: &str| {
            Error::corrupt(format!(
                "class {class} extent {extent} ({slots} slots at {offset}): {why}"
            ))
        };
        let max = self.max_extent_slots(class, slots_before) as u64;
        if slots == 0 || slots > max {
            return Err(bad("slot count breaks the growth rule"));
        }
        // The page size is a power of two (`Config::check`): a mask, not a
        // division, on every extent of an attach.
        if offset & (self.config.page_size - 1) != 0 || offset < self.data_start {
            return Err(bad("offset is misaligned or inside the header"));
        }
        let (data, bytes) = self
            .extent_layout(class, slots as u32)
            .ok_or_else(|| bad("size overflows"))?;
        match offset.checked_add(bytes) {
            Some(end) if end <= current_size => {}
            _ => return Err(bad("reaches past current_size")),
        }
        Ok(ExtentInfo {
            offset,
            slots: slots as u32,
            data_offset: offset + data,
            bytes,
        })
    }
}

/// One checked extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExtentInfo {
    pub offset: u64,
    pub slots: u32,
    pub data_offset: u64,
    pub bytes: u64,
}

/// Loads a word of the header or tables, which `Geometry::load` has already
/// proven to lie inside the file.
pub(crate) fn load(mem: &impl Memory, off: u64) -> Result<u64> {
    Ok(word(mem, off)?.load(Ordering::Acquire))
}

/// The word at a table offset, bounds-checked.
pub(crate) fn word(mem: &impl Memory, off: u64) -> Result<&AtomicU64> {
    mem.checked_word(off)
        .ok_or_else(|| Error::corrupt(format!("table offset {off} outside the segment")))
}

fn arch_name() -> String {
    let order = if cfg!(target_endian = "little") {
        "little-endian"
    } else {
        "big-endian"
    };
    format!("{order}, {}-bit words", usize::BITS)
}
