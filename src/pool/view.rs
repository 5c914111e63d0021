//! A slot read in place: check once, read the bytes as often as the caller
//! needs, check again.
//!
//! The one-shot copies (`read_at`, `write_at`) check the handle around every
//! copy. A view over a slot ([`crate::loan::SlotView`]) makes many small
//! reads; these are the same steps split apart (a loan of a new slot needs
//! no split: its writes are ordinary checked `write_at`s):
//!
//! 1. [`open_span`](Pool::open_span): the handle names a real slot of this
//!    segment, `len` bytes fit it, and its metadata word (Acquire) says the
//!    handle's allocation is live;
//! 2. [`copy_from_span`](Pool::copy_from_span), as often as needed:
//!    bounds against the slot, then the single-width copies of `sync`; no
//!    generation check, so a copy may see bytes of the slot's next life;
//! 3. [`close_span`](Pool::close_span): an Acquire fence, then the word
//!    again. If the slot was freed (or freed and reused) since step 1, this
//!    fails `StaleHandle` and the caller throws away whatever it read: the
//!    seqlock reader's rule, as `read_at` applies it to one copy.
//!
//! Between 1 and 3 nothing is assumed about the bytes but that they lie in
//! the slot, which holds whatever the slot's owner (or a hostile peer)
//! wrote: every value is a `Pod` copy, never a reference.

use super::{Pool, SlotAddr, check_live};
use crate::error::Result;
use crate::format::{Meta, SlotRef};
use crate::region::Memory;
use crate::sync::{Ordering, fence};

impl<M: Memory> Pool<M> {
    /// Step 1: where the live slot `h` names is, if it holds `len` bytes.
    #[inline]
    pub(crate) fn open_span(&self, h: &SlotRef, len: usize) -> Result<SlotAddr> {
        let (_, _, addr) = self.check_ref(h)?;
        Self::check_span(addr, 0, len)?;
        check_live(Meta(self.meta(addr).load(Ordering::Acquire)), h, false)?;
        Ok(addr)
    }

    /// Step 2, out: bytes `offset..offset + dst.len()` of an opened slot.
    #[inline]
    pub(crate) fn copy_from_span(&self, addr: SlotAddr, offset: u64, dst: &mut [u8]) -> Result<()> {
        Self::check_span(addr, offset, dst.len())?;
        // SAFETY: `addr` came from `open_span` (`locate`: a checked extent,
        // see `meta`), and the span fits the slot (checked above).
        unsafe { self.mem.copy_out(addr.data + offset, dst) };
        Ok(())
    }

    /// Step 3: whether the slot is still `h`'s live allocation, after every
    /// copy made since `open_span` (Acquire fence first: the copies' loads
    /// happen before this load of the word).
    #[inline]
    pub(crate) fn close_span(&self, h: &SlotRef, addr: SlotAddr) -> Result<()> {
        fence(Ordering::Acquire);
        check_live(Meta(self.meta(addr).load(Ordering::Relaxed)), h, false)
    }

    /// The first byte of an opened slot, for the `unsafe` escape hatches
    /// that hand out `&[u8]`/`&mut [u8]` (their callers promise that no one
    /// writes, or touches, the bytes meanwhile). Valid for the slot's `addr.size` bytes for
    /// as long as the pool lives: a mapping is never unmapped while its
    /// region lives, even after a remap.
    pub(crate) fn span_ptr(&self, addr: SlotAddr) -> *mut u8 {
        // SAFETY: `addr` came from `open_span`: its data lies in a checked
        // extent, 16-aligned, `addr.size` (a multiple of 16) bytes long.
        let words = unsafe { self.mem.words(addr.data, (addr.size / 8) as usize) };
        words.as_ptr().cast_mut().cast()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::error::Error;
    use crate::pool::testing::{alloc_one, heap_pool};

    /// Open, copy (long copies included, the bulk path outside Miri),
    /// close; a free or a reuse between open and close makes the close
    /// fail, and a span longer than the slot is refused at open.
    #[test]
    fn a_span_closes_only_over_the_life_it_opened() {
        let (p, owners) = heap_pool(&[1024], 4096, 1 << 20, 1);
        let o = owners[0];
        let h = alloc_one(&p, 0, o).unwrap();
        let (_, _, addr) = p.check_ref(&h).unwrap();
        let data: Vec<u8> = (0..1024u32).map(|i| (i * 3) as u8).collect();
        p.write_at(&h, 0, &data).unwrap();

        let at = p.open_span(&h, 1000).unwrap();
        let mut back = vec![0u8; 1000];
        p.copy_from_span(at, 0, &mut back).unwrap();
        assert!(back[..] == data[..1000]);
        let mut tail = [0u8; 24];
        p.copy_from_span(at, 1000, &mut tail).unwrap();
        assert!(tail[..] == data[1000..]);
        assert!(matches!(
            p.copy_from_span(at, 1001, &mut tail),
            Err(Error::OutOfBounds { .. })
        ));
        p.close_span(&h, at).unwrap();
        assert!(matches!(
            p.open_span(&h, 1025),
            Err(Error::OutOfBounds { .. })
        ));

        // Freed, then reused, between open and close.
        let at = p.open_span(&h, 8).unwrap();
        let (c, id) = p.release(&h, o).unwrap().expect("not a last life");
        assert!(matches!(
            p.close_span(&h, at),
            Err(Error::StaleHandle { .. })
        ));
        p.give(c, o, &[id]).unwrap();
        let again = alloc_one(&p, 0, o).unwrap();
        assert_eq!(p.check_ref(&again).unwrap().2.data, addr.data, "reused");
        assert!(matches!(
            p.close_span(&h, at),
            Err(Error::StaleHandle { .. })
        ));
        p.close_span(&again, at).unwrap();
    }
}
