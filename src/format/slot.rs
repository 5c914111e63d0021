//! The per-slot words: slot ids, the 8-byte metadata word, and handles.

use bytemuck::{Pod, Zeroable};

/// Extents per size class.
pub const MAX_EXTENTS: usize = 64;
/// Bits of a [`SlotId`] that hold the index within the extent.
const INDEX_BITS: u32 = 24;
/// Most slots one extent may hold.
pub const MAX_SLOTS_PER_EXTENT: u32 = (1 << INDEX_BITS) - 1;

/// A slot within its class: extent number and index within the extent, packed
/// in 30 bits so it fits the payload of a metadata word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SlotId(u32);

impl SlotId {
    /// The end-of-list marker in free-list links and heads.
    pub(crate) const NIL: SlotId = SlotId(PAYLOAD_MASK);

    pub(crate) fn new(extent: u32, index: u32) -> Self {
        debug_assert!(extent < MAX_EXTENTS as u32 && index < MAX_SLOTS_PER_EXTENT);
        SlotId((extent << INDEX_BITS) | index)
    }

    pub(crate) fn from_raw(raw: u32) -> Self {
        SlotId(raw & PAYLOAD_MASK)
    }

    pub(crate) fn raw(self) -> u32 {
        self.0
    }

    pub(crate) fn extent(self) -> u32 {
        self.0 >> INDEX_BITS
    }

    pub(crate) fn index(self) -> u32 {
        self.0 & MAX_SLOTS_PER_EXTENT
    }

    pub(crate) fn is_nil(self) -> bool {
        self == Self::NIL
    }
}

const PAYLOAD_BITS: u32 = 30;
const PAYLOAD_MASK: u32 = (1 << PAYLOAD_BITS) - 1;

/// What a slot is doing, from bits 31..30 of its metadata word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Never used since its extent was added. The whole word is zero.
    Fresh,
    /// Out of use for good: its generations are used up. The word is
    /// exactly [`Meta::RETIRED`] (state bits 0, like *fresh*).
    Retired,
    /// On its class's shared free list; the payload is the next slot.
    Free,
    /// In a process's private cache of free slots; the payload is the owner.
    Cached,
    /// Allocated; the payload is the owner (0: owned by the segment).
    Allocated,
}

/// A slot's 8-byte metadata word: `generation:32 | state:2 | payload:30`.
///
/// The generation is bumped by every allocation and by reclaim, so a handle
/// names one life of a slot. Free compares-and-swaps the whole word, which
/// is what makes double frees and stale handles detectable.
///
/// Generations never wrap: a slot at [`LAST_GENERATION`] that would need a
/// next life is retired instead ([`next_generation`](Meta::next_generation)
/// is `None`). So the lives of a slot have distinct generations 1, 2, …,
/// 2³² − 1, none of them 0 — the generation of a fresh, a retired and a
/// never-allocated slot, and one no well-formed handle carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta(pub(crate) u64);

/// The generation of a slot's last life.
pub(crate) const LAST_GENERATION: u32 = u32::MAX;

impl Meta {
    pub(crate) const FRESH: Meta = Meta(0);
    /// A retired slot: generation 0, state bits 0, payload all ones. Not
    /// a word any other state has (a fresh word is all zero), and of a
    /// generation no handle names.
    pub(crate) const RETIRED: Meta = Meta(PAYLOAD_MASK as u64);

    /// The word of `state` (not *fresh* or *retired*: those are the
    /// constants [`FRESH`](Meta::FRESH) and [`RETIRED`](Meta::RETIRED)).
    #[inline(always)]
    pub(crate) fn new(generation: u32, state: SlotState, payload: u32) -> Self {
        debug_assert!(!matches!(state, SlotState::Fresh | SlotState::Retired));
        let s = match state {
            SlotState::Fresh | SlotState::Retired => 0u64,
            SlotState::Free => 1,
            SlotState::Cached => 2,
            SlotState::Allocated => 3,
        };
        Meta(((generation as u64) << 32) | (s << PAYLOAD_BITS) | (payload & PAYLOAD_MASK) as u64)
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The slot's state. A word with state bits 0 that is neither
    /// [`FRESH`](Meta::FRESH) nor [`RETIRED`](Meta::RETIRED) reads as
    /// *fresh* and is not [valid](Meta::is_valid).
    pub(crate) fn state(self) -> SlotState {
        match (self.0 >> PAYLOAD_BITS) & 3 {
            0 if self == Meta::RETIRED => SlotState::Retired,
            0 => SlotState::Fresh,
            1 => SlotState::Free,
            2 => SlotState::Cached,
            _ => SlotState::Allocated,
        }
    }

    pub(crate) fn payload(self) -> u32 {
        (self.0 as u32) & PAYLOAD_MASK
    }

    /// A fresh slot's word is all zero and a retired one's is
    /// [`RETIRED`](Meta::RETIRED); any other word with state bits 0 is junk.
    pub(crate) fn is_valid(self) -> bool {
        self.state() != SlotState::Fresh || self == Meta::FRESH
    }

    /// Whether this is the word of a live allocation of `generation`: one
    /// compare of everything but the owner.
    #[inline(always)]
    pub(crate) fn is_live(self, generation: u32) -> bool {
        let state_and_generation = !(PAYLOAD_MASK as u64);
        self.0 & state_and_generation == Meta::new(generation, SlotState::Allocated, 0).0
    }

    /// Whether this is the word of a slot cached by `owner`.
    #[inline(always)]
    pub(crate) fn is_cached_by(self, owner: u32) -> bool {
        self.0 as u32 == Meta::new(0, SlotState::Cached, owner).0 as u32
    }

    /// The generation of the slot's next life, or `None` after its last
    /// ([`LAST_GENERATION`]): then the slot must be retired, never given a
    /// wrapped generation an old handle may still carry. Every place that
    /// bumps a generation (activation, reclaim) goes through here.
    #[inline(always)]
    pub(crate) fn next_generation(self) -> Option<u32> {
        match self.generation() {
            LAST_GENERATION => None,
            g => Some(g + 1),
        }
    }
}

/// An untyped handle to one life of one slot: 16 bytes, `Copy` and `Pod`, so
/// it can travel through a pipe or be stored inside another slot.
///
/// Every use validates it: the segment id, class, extent and index must name
/// a real slot of this segment, and the generation must be the slot's current
/// one. A forged or stale handle is an [`Error`](crate::Error), never an
/// out-of-bounds access.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SlotRef {
    pub(crate) segment: u32,
    pub(crate) index: u32,
    pub(crate) generation: u32,
    pub(crate) class: u8,
    pub(crate) extent: u8,
    pub(crate) reserved: u16,
}

impl SlotRef {
    pub(crate) fn new(segment: u32, class: usize, id: SlotId, generation: u32) -> Self {
        SlotRef {
            segment,
            index: id.index(),
            generation,
            class: class as u8,
            extent: id.extent() as u8,
            reserved: 0,
        }
    }

    /// The shape checks every use makes: index below 2^24 − 1,
    /// extent below 64, reserved bits zero, generation not zero.
    #[inline(always)]
    pub(crate) fn well_formed(&self) -> bool {
        const _: () = assert!(MAX_EXTENTS == 64 && MAX_SLOTS_PER_EXTENT < 1 << 24);
        (self.extent as u32 >> 6) | self.reserved as u32 == 0
            && self.index < MAX_SLOTS_PER_EXTENT
            && self.generation != 0
    }

    /// The part of [`well_formed`](Self::well_formed) the hot path tests
    /// itself: extent below 64 and reserved bits zero (one compare:
    /// `extent + 256 * reserved < 64`), generation not zero. The index bound
    /// is left to the test against the extent's slot count, which implies it.
    #[inline(always)]
    pub(crate) fn shape_ok(&self) -> bool {
        const _: () = assert!(MAX_EXTENTS == 64);
        ((self.extent as u32 | (self.reserved as u32) << 8) < MAX_EXTENTS as u32)
            & (self.generation != 0)
    }

    pub(crate) fn slot_id(&self) -> SlotId {
        SlotId::new(
            self.extent as u32 % MAX_EXTENTS as u32,
            self.index & MAX_SLOTS_PER_EXTENT,
        )
    }

    /// The null handle: all zero bytes, never made by an allocation (no
    /// segment has id 0). Using it is [`Error::NullHandle`](crate::Error::NullHandle);
    /// it is also what [`Default`] and a zeroed slot give, so it marks an
    /// empty entry in a table of handles.
    pub const NULL: SlotRef = SlotRef {
        segment: 0,
        index: 0,
        generation: 0,
        class: 0,
        extent: 0,
        reserved: 0,
    };

    /// Whether this is [`SlotRef::NULL`].
    pub fn is_null(&self) -> bool {
        *self == Self::NULL
    }

    /// What the handle says it names, field by field, for tools that show
    /// handles (`shmslab inspect`). Nothing here is checked: a forged handle
    /// has forged parts.
    pub fn parts(self) -> SlotParts {
        SlotParts {
            segment_id: self.segment,
            class: self.class as usize,
            extent: self.extent as usize,
            index: self.index,
            generation: self.generation,
        }
    }

    /// The handle as 16 bytes, for sending to another process.
    pub fn to_bytes(self) -> [u8; 16] {
        bytemuck::cast(self)
    }

    /// A handle from 16 received bytes. Any bytes make a `SlotRef`; using it
    /// validates it.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        bytemuck::cast(bytes)
    }

    /// The error for an access past the length a handle carries (a slice's
    /// or a byte slot's): out of bounds, or, for the null handle (length 0),
    /// [`Error::NullHandle`](crate::Error::NullHandle) like every other use.
    #[cold]
    pub(crate) fn past_len(self, offset: u64, len: u64, capacity: u64) -> crate::Error {
        if self.is_null() {
            return crate::Error::NullHandle;
        }
        crate::Error::OutOfBounds {
            offset,
            len,
            capacity,
        }
    }

    #[inline(always)]
    pub(crate) fn to_words(self) -> [u64; 2] {
        bytemuck::cast(self)
    }

    pub(crate) fn from_words(words: [u64; 2]) -> Self {
        bytemuck::cast(words)
    }
}

/// The fields of a [`SlotRef`], as [`SlotRef::parts`] reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotParts {
    /// The id of the segment the handle was made in.
    pub segment_id: u32,
    /// The size class of the slot.
    pub class: usize,
    /// The extent of its class that the slot is in.
    pub extent: usize,
    /// The slot's index within its extent.
    pub index: u32,
    /// The life of the slot the handle names (1 for its first allocation).
    pub generation: u32,
}

impl Default for SlotRef {
    /// [`SlotRef::NULL`].
    fn default() -> Self {
        Self::NULL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_words_round_trip() {
        for (g, s, p) in [
            (1, SlotState::Allocated, 7),
            (u32::MAX, SlotState::Free, SlotId::NIL.raw()),
            (42, SlotState::Cached, 1023),
        ] {
            let m = Meta::new(g, s, p);
            assert_eq!((m.generation(), m.state(), m.payload()), (g, s, p));
            assert!(m.is_valid());
        }
        assert_eq!(Meta::FRESH.state(), SlotState::Fresh);
        assert!(!Meta(5).is_valid());
        assert_eq!(
            Meta::new(0, SlotState::Cached, 3).next_generation(),
            Some(1)
        );
        assert_eq!(
            Meta::new(LAST_GENERATION - 1, SlotState::Cached, 3).next_generation(),
            Some(LAST_GENERATION)
        );
    }

    #[test]
    fn the_last_generation_has_no_next_and_retired_is_one_exact_word() {
        for s in [SlotState::Free, SlotState::Cached, SlotState::Allocated] {
            assert_eq!(Meta::new(LAST_GENERATION, s, 1).next_generation(), None);
        }
        assert_eq!(Meta::RETIRED.0, 0x3FFF_FFFF);
        assert_eq!(Meta::RETIRED.state(), SlotState::Retired);
        assert!(Meta::RETIRED.is_valid());
        assert_eq!(Meta::RETIRED.generation(), 0);
        // No handle names a retired slot's life: generation 0 is malformed,
        // and the state is not *allocated* for any generation.
        for g in [0, 1, LAST_GENERATION] {
            assert!(!Meta::RETIRED.is_live(g));
        }
        assert!(!Meta::RETIRED.is_cached_by(0x3FFF_FFFF));
        // Other words with state bits 0 are junk, whatever their generation.
        for junk in [
            PAYLOAD_MASK as u64 - 1,
            (1 << 32) | PAYLOAD_MASK as u64,
            (LAST_GENERATION as u64) << 32,
            !(3u64 << PAYLOAD_BITS),
        ] {
            assert_eq!(Meta(junk).state(), SlotState::Fresh, "{junk:#x}");
            assert!(!Meta(junk).is_valid(), "{junk:#x}");
        }
    }

    #[test]
    fn handle_shape_checks_match_the_fields() {
        let good = SlotRef::new(7, 3, SlotId::new(63, MAX_SLOTS_PER_EXTENT - 1), 9);
        assert!(good.well_formed());
        for bad in [
            SlotRef {
                generation: 0,
                ..good
            },
            SlotRef { extent: 64, ..good },
            SlotRef {
                reserved: 1,
                ..good
            },
            SlotRef {
                reserved: 0x8000,
                ..good
            },
            SlotRef {
                index: 1 << 24,
                ..good
            },
            SlotRef {
                index: u32::MAX,
                ..good
            },
        ] {
            assert!(!bad.well_formed(), "{bad:?}");
        }
        assert!(SlotRef { class: 255, ..good }.well_formed());
    }

    #[test]
    fn slot_ids_pack_extent_and_index() {
        let id = SlotId::new(63, MAX_SLOTS_PER_EXTENT - 1);
        assert_eq!((id.extent(), id.index()), (63, MAX_SLOTS_PER_EXTENT - 1));
        assert!(!id.is_nil());
        assert!(SlotId::NIL.is_nil());
        assert_eq!(std::mem::size_of::<SlotRef>(), 16);
    }
}
