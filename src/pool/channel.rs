//! The channel's protocol: a bounded ring of messages in one slot, changed
//! only under the slot's lock (the locked cell's lock: dead-holder take-over
//! through the kernel), with every step a single-word state change, so a
//! process killed at any instruction leaves a state the next lock holder
//! resolves.
//!
//! # Layout (words of the slot)
//!
//! | word | |
//! |---|---|
//! | 0–3 | the lock: `LOCK`, `PROGRESS`, `NEXT`, `PARKED` (as a locked cell's) |
//! | 4 `MAGIC` | `CHANNEL_MAGIC` |
//! | 5 `CAP` | capacity (entries) |
//! | 6 `HEAD_LEN` | head index (low 32 bits), occupied entries (high 32) |
//! | 7 `FLAGS` | bit 0: closed |
//! | 8 `RECV_BELL` | notifier word: messages to take (or closed) |
//! | 9 `SEND_BELL` | notifier word: room to send |
//! | 10–12 | totals: sent, acked, redelivered |
//! | 16 … | `CAP` entries of `4 + w` words |
//!
//! An entry: `STATE` (kind in the low byte, redeliveries in the high 32
//! bits), `OWNER` (the token of the sender, or of the receiver holding it),
//! `SLOT` (two words: the message's slot, or null), then the value.
//!
//! The occupied entries are `HEAD .. HEAD + LEN` (mod `CAP`), in send order;
//! each is *sending*, *queued*, *in flight*, *acking* or *done*. A receive
//! takes the first queued one; done ones are dropped from the head. A
//! message's slot belongs to the segment (owner 0) while the channel holds
//! it, so no process's death frees it.
//!
//! # Steps, and what a crash in between leaves
//!
//! - **send**: entry written *sending* (owner: sender) → `LEN + 1` → slot
//!   handed to the segment → *queued*. A sender killed before the end leaves
//!   a *sending* entry: the next holder finds the slot the segment's (the
//!   hand-over happened: the message is queued, once) or not (it is dropped:
//!   *done*, and its slot, still the dead sender's, is reclaimed).
//! - **receive**: `OWNER` = receiver, then *in flight* (one store).
//! - **ack**: *acking* → slot adopted by the receiver → *done* → slot freed
//!   (or kept, for `ack_keep`). A receiver killed while *acking* leaves an
//!   entry the next holder rolls forward (slot adopted, or already freed by
//!   reclaim: *done*) or back (slot still the segment's: *in flight*).
//! - **redelivery**: an *in flight* entry whose receiver is dead (the
//!   kernel says so) goes back to *queued*, its count + 1 (one store). It
//!   keeps its place, so it comes before everything sent after it.
//!
//! Every word is untrusted: a state outside the five, a head or length past
//! the capacity, a capacity the slot cannot hold are `Corrupt` errors (the
//! channel's handle check has verified the slot's size), never an access
//! outside the slot.

use super::Pool;
use super::lock::{self, CellHold, CellLockWords, Owner};
use super::notify::RawNotifier;
use crate::error::{Error, Result};
use crate::fault::crash_point;
use crate::format::SlotRef;
use crate::region::Memory;
use crate::sync::{AtomicU64, Ordering, load_from_words, store_to_words};
use std::time::Instant;

const LOCK: usize = 0;
const PROGRESS: usize = 1;
const NEXT: usize = 2;
const PARKED: usize = 3;
const MAGIC: usize = 4;
const CAP: usize = 5;
const HEAD_LEN: usize = 6;
const FLAGS: usize = 7;
pub(crate) const RECV_BELL: usize = 8;
pub(crate) const SEND_BELL: usize = 9;
const SENT: usize = 10;
const ACKED: usize = 11;
const REDELIVERED: usize = 12;
/// Words before the entries.
pub(crate) const HEADER: usize = 16;

/// "CHANNEL1" in ASCII: a channel's slot starts its header with it.
pub(crate) const CHANNEL_MAGIC: u64 = 0x4348_414e_4e45_4c31;

// An entry's words.
const E_STATE: usize = 0;
const E_OWNER: usize = 1;
const E_SLOT: usize = 2;
const E_VALUE: usize = 4;

/// What an entry holds (the low byte of its state word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryState {
    Sending,
    Queued,
    InFlight,
    Acking,
    Done,
}

impl EntryState {
    fn code(self) -> u64 {
        match self {
            EntryState::Sending => 1,
            EntryState::Queued => 2,
            EntryState::InFlight => 3,
            EntryState::Acking => 4,
            EntryState::Done => 5,
        }
    }

    fn parse(word: u64) -> Option<(EntryState, u32)> {
        let state = match word & 0xff {
            1 => EntryState::Sending,
            2 => EntryState::Queued,
            3 => EntryState::InFlight,
            4 => EntryState::Acking,
            5 => EntryState::Done,
            _ => return None,
        };
        Some((state, (word >> 32) as u32))
    }

    fn word(self, redeliveries: u32) -> u64 {
        ((redeliveries as u64) << 32) | self.code()
    }
}

/// Words a channel of `capacity` values of `size` bytes takes.
pub(crate) fn words_for(capacity: usize, size: usize) -> Option<usize> {
    capacity
        .checked_mul(E_VALUE + size.div_ceil(8))?
        .checked_add(HEADER)
}

/// A message taken by a receiver: where it is, and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    /// The entry's index.
    pub index: u32,
    /// The message's slot, or null.
    pub slot: SlotRef,
    /// How many times it was redelivered before.
    pub redeliveries: u32,
}

/// What a channel holds, counted (inspect, check).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub capacity: u64,
    pub queued: u64,
    pub in_flight: u64,
    pub sending: u64,
    pub done: u64,
    pub closed: bool,
    pub sent: u64,
    pub acked: u64,
    pub redelivered: u64,
}

/// A channel over the words of its (checked, live) slot.
#[derive(Clone, Copy)]
pub(crate) struct RawChannel<'a> {
    words: &'a [AtomicU64],
    cap: usize,
    /// Words of a value.
    w: usize,
}

/// The channel's lock, held.
pub(crate) struct ChannelHold(CellHold);

/// The owner id (peer row + 1) of the holder of `held`.
fn me_id(held: &ChannelHold) -> u32 {
    held.0.token as u32
}

impl<'a> RawChannel<'a> {
    /// The channel over `words` (the whole slot) for values of `size`
    /// bytes, checking its header against the slot: `Corrupt` if it is not
    /// a channel of that shape.
    pub(crate) fn open(words: &'a [AtomicU64], size: usize) -> Result<Self> {
        if words.len() < HEADER || words[MAGIC].load(Ordering::Acquire) != CHANNEL_MAGIC {
            return Err(Error::corrupt("the slot holds no channel (bad magic)"));
        }
        let cap = words[CAP].load(Ordering::Relaxed);
        let w = size.div_ceil(8);
        match usize::try_from(cap).ok().and_then(|c| words_for(c, size)) {
            Some(n) if cap > 0 && cap <= u32::MAX as u64 && n <= words.len() => Ok(RawChannel {
                words,
                cap: cap as usize,
                w,
            }),
            _ => Err(Error::corrupt(format!(
                "a channel's capacity {cap} does not fit its slot of {} words",
                words.len()
            ))),
        }
    }

    /// The channel a named root holds, if it is one: its slot is live and
    /// holds a channel header for values of the root type's size (how
    /// `check`, `inspect` and `reclaim_dead` find channels). `None` for any
    /// other root.
    /// (`value_size`: the root fingerprint's size.)
    pub(crate) fn of_root<M: Memory>(
        pool: &'a Pool<M>,
        handle: &SlotRef,
        value_size: u64,
    ) -> Option<Self> {
        let size = pool.live_size(handle).ok()?;
        let words = pool.live_words(handle, size as usize / 8).ok()?;
        Self::open(words, usize::try_from(value_size).ok()?).ok()
    }

    /// One of the channel's two notifier words ([`RECV_BELL`],
    /// [`SEND_BELL`]).
    pub(crate) fn bell(&self, which: usize) -> RawNotifier<'a> {
        RawNotifier::new(std::slice::from_ref(&self.words[which]))
    }

    /// Writes a new, empty channel of `capacity` into `words` (a slot just
    /// allocated, not yet shared).
    pub(crate) fn init(words: &'a [AtomicU64], capacity: usize) {
        for w in words.iter().take(HEADER) {
            w.store(0, Ordering::Relaxed);
        }
        words[CAP].store(capacity as u64, Ordering::Relaxed);
        words[MAGIC].store(CHANNEL_MAGIC, Ordering::Release);
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    fn lock_words(&self) -> CellLockWords<'a> {
        CellLockWords {
            word: &self.words[LOCK],
            progress: &self.words[PROGRESS],
            next: &self.words[NEXT],
            parked: &self.words[PARKED],
        }
    }

    fn entry(&self, i: usize) -> &'a [AtomicU64] {
        let size = E_VALUE + self.w;
        let start = HEADER + i * size;
        &self.words[start..start + size]
    }

    fn head_len(&self) -> Result<(usize, usize)> {
        let v = self.words[HEAD_LEN].load(Ordering::Relaxed);
        let (head, len) = ((v as u32) as usize, (v >> 32) as usize);
        if head >= self.cap || len > self.cap {
            return Err(Error::corrupt(format!(
                "a channel's head {head} or length {len} is past its capacity {}",
                self.cap
            )));
        }
        Ok((head, len))
    }

    fn set_head_len(&self, head: usize, len: usize) {
        self.words[HEAD_LEN].store(((len as u64) << 32) | head as u64, Ordering::Relaxed);
    }

    fn state(&self, i: usize) -> Result<(EntryState, u32)> {
        let word = self.entry(i)[E_STATE].load(Ordering::Relaxed);
        EntryState::parse(word)
            .ok_or_else(|| Error::corrupt(format!("channel entry {i} has state word {word:#x}")))
    }

    fn set_state(&self, i: usize, s: EntryState, redeliveries: u32) {
        self.entry(i)[E_STATE].store(s.word(redeliveries), Ordering::Relaxed);
    }

    fn slot_of(&self, i: usize) -> SlotRef {
        let e = self.entry(i);
        SlotRef::from_words([
            e[E_SLOT].load(Ordering::Relaxed),
            e[E_SLOT + 1].load(Ordering::Relaxed),
        ])
    }

    fn bump(&self, counter: usize) {
        let w = &self.words[counter];
        w.store(w.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Takes the channel's lock; after a holder that died, first resolves
    /// what it left half done.
    pub(crate) fn lock<M: Memory>(
        &self,
        pool: &Pool<M>,
        me: Owner,
        deadline: Option<Instant>,
    ) -> Result<Option<ChannelHold>> {
        let Some(hold) = lock::acquire_cell(
            &pool.mem,
            &pool.geo,
            &pool.liveness,
            self.lock_words(),
            me,
            deadline,
        )?
        else {
            return Ok(None);
        };
        let hold = ChannelHold(hold);
        if hold.0.recovered {
            if let Err(e) = self.resolve(pool) {
                // Released as a dead holder's, so the next holder resolves
                // again rather than never.
                lock::release_cell_poisoned(self.lock_words(), &hold.0);
                return Err(e);
            }
        }
        Ok(Some(hold))
    }

    pub(crate) fn unlock(&self, hold: ChannelHold) {
        lock::release_cell(self.lock_words(), &hold.0);
    }

    /// After a holder died: every *sending* or *acking* entry is resolved
    /// (see the module doc). Under the lock.
    fn resolve<M: Memory>(&self, pool: &Pool<M>) -> Result<()> {
        let (head, len) = self.head_len()?;
        for k in 0..len {
            let i = (head + k) % self.cap;
            let (state, redeliveries) = self.state(i)?;
            let slot = self.slot_of(i);
            match state {
                EntryState::Sending => {
                    // Queued if the hand-over to the segment happened (or
                    // there is no slot and the entry was whole).
                    let handed = slot.is_null() || pool.slot_owner(&slot)? == Some(0);
                    let to = if handed {
                        EntryState::Queued
                    } else {
                        EntryState::Done
                    };
                    self.set_state(i, to, redeliveries);
                    if handed {
                        self.bump(SENT);
                    }
                }
                EntryState::Acking => {
                    // Done if the receiver adopted the slot (or reclaim has
                    // freed it since); else back in flight.
                    let adopted = slot.is_null() || pool.slot_owner(&slot)? != Some(0);
                    let to = if adopted {
                        EntryState::Done
                    } else {
                        EntryState::InFlight
                    };
                    self.set_state(i, to, redeliveries);
                    if adopted {
                        self.bump(ACKED);
                    }
                }
                _ => {}
            }
        }
        self.drop_done()
    }

    /// Drops *done* entries from the head.
    fn drop_done(&self) -> Result<()> {
        let (mut head, mut len) = self.head_len()?;
        while len > 0 && self.state(head)?.0 == EntryState::Done {
            head = (head + 1) % self.cap;
            len -= 1;
        }
        self.set_head_len(head, len);
        Ok(())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.words[FLAGS].load(Ordering::Acquire) & 1 != 0
    }

    /// Closes the channel (under the lock).
    pub(crate) fn close(&self, _held: &ChannelHold) {
        self.words[FLAGS].fetch_or(1, Ordering::AcqRel);
    }

    /// Sends `value` (with `slot`, null for none) under the lock: `Ok(false)`
    /// if the channel is full. The slot is handed to the segment.
    pub(crate) fn send<M: Memory>(
        &self,
        pool: &Pool<M>,
        held: &ChannelHold,
        value: &[u8],
        slot: SlotRef,
    ) -> Result<bool> {
        if self.is_closed() {
            return Err(Error::ChannelClosed);
        }
        let (head, len) = self.head_len()?;
        if len == self.cap {
            return Ok(false);
        }
        if !slot.is_null() {
            // A live slot of the sender's, or the message would carry a
            // dangling or a stolen handle.
            if pool.slot_owner(&slot)? != Some(me_id(held)) {
                return Err(Error::InvalidHandle {
                    why: "a message's slot must be a live slot of the sender's",
                });
            }
        }
        let i = (head + len) % self.cap;
        let e = self.entry(i);
        e[E_OWNER].store(held.0.token, Ordering::Relaxed);
        let [lo, hi] = slot.to_words();
        e[E_SLOT].store(lo, Ordering::Relaxed);
        e[E_SLOT + 1].store(hi, Ordering::Relaxed);
        store_to_words(&e[E_VALUE..], value);
        self.set_state(i, EntryState::Sending, 0);
        self.set_head_len(head, len + 1);
        crash_point("chan.send.entry_written");
        if !slot.is_null() {
            // Only the sender's own slot: one already handed to a channel
            // (this or another), persisted or another process's would end
            // up carried twice.
            if let Err(e) = pool.hand_over(&slot, me_id(held), 0) {
                // Not sent: the entry is taken back.
                self.set_head_len(head, len);
                return Err(e);
            }
        }
        crash_point("chan.send.handed_over");
        self.set_state(i, EntryState::Queued, 0);
        self.bump(SENT);
        Ok(true)
    }

    /// Takes the first queued message for `me` (under the lock), copying its
    /// value into `value`; `None` if none is queued.
    pub(crate) fn take(&self, held: &ChannelHold, value: &mut [u8]) -> Result<Option<Taken>> {
        let (head, len) = self.head_len()?;
        for k in 0..len {
            let i = (head + k) % self.cap;
            let (state, redeliveries) = self.state(i)?;
            if state != EntryState::Queued {
                continue;
            }
            let e = self.entry(i);
            load_from_words(&e[E_VALUE..], value);
            e[E_OWNER].store(held.0.token, Ordering::Relaxed);
            self.set_state(i, EntryState::InFlight, redeliveries);
            crash_point("chan.recv.taken");
            return Ok(Some(Taken {
                index: i as u32,
                slot: self.slot_of(i),
                redeliveries,
            }));
        }
        Ok(None)
    }

    /// The entry a delivery names, still in flight for `held`'s process
    /// (else the delivery was redelivered elsewhere or forged: `Corrupt`).
    fn check_delivery(&self, held: &ChannelHold, t: &Taken) -> Result<usize> {
        let i = t.index as usize;
        if i >= self.cap {
            return Err(Error::corrupt("a delivery names no entry of its channel"));
        }
        let e = self.entry(i);
        let (state, _) = self.state(i)?;
        if state != EntryState::InFlight
            || e[E_OWNER].load(Ordering::Relaxed) != held.0.token
            || self.slot_of(i) != t.slot
        {
            return Err(Error::corrupt(
                "a delivery's entry is no longer in flight for this process (redelivered after it was judged dead?)",
            ));
        }
        Ok(i)
    }

    /// Acknowledges a delivery (under the lock): the slot is adopted by the
    /// receiver, the entry done. Returns the slot (the caller frees it or
    /// keeps it).
    pub(crate) fn ack<M: Memory>(
        &self,
        pool: &Pool<M>,
        held: &ChannelHold,
        me: Owner,
        t: &Taken,
    ) -> Result<SlotRef> {
        let i = self.check_delivery(held, t)?;
        let (_, redeliveries) = self.state(i)?;
        self.set_state(i, EntryState::Acking, redeliveries);
        crash_point("chan.ack.acking");
        if !t.slot.is_null() {
            if let Err(e) = pool.hand_over(&t.slot, 0, me.id) {
                if pool.slot_owner(&t.slot).ok().flatten().is_none() {
                    // The slot was freed behind the channel's back: the
                    // message is done all the same (else the entry would
                    // hold its room for ever).
                    self.set_state(i, EntryState::Done, redeliveries);
                    self.bump(ACKED);
                    self.drop_done()?;
                } else {
                    // Its owner word churning (a peer writing it): back in
                    // flight, for a later ack or a redelivery.
                    self.set_state(i, EntryState::InFlight, redeliveries);
                }
                return Err(e);
            }
        }
        crash_point("chan.ack.adopted");
        self.set_state(i, EntryState::Done, redeliveries);
        self.bump(ACKED);
        self.drop_done()?;
        Ok(t.slot)
    }

    /// Puts a delivery back (a receiver that will not process it): queued
    /// again at its place, its count + 1.
    pub(crate) fn nack(&self, held: &ChannelHold, t: &Taken) -> Result<()> {
        let i = self.check_delivery(held, t)?;
        let (_, redeliveries) = self.state(i)?;
        self.requeue(i, redeliveries);
        Ok(())
    }

    /// Puts in-flight entry `i` back in the queue, at its place, its count
    /// + 1 (one store): the step of every redelivery.
    fn requeue(&self, i: usize, redeliveries: u32) {
        self.set_state(i, EntryState::Queued, redeliveries.saturating_add(1));
        crash_point("chan.redeliver.requeued");
        self.bump(REDELIVERED);
    }

    /// Puts every in-flight message whose receiver is dead back in the
    /// queue (under the lock). Returns how many.
    pub(crate) fn redeliver_dead<M: Memory>(&self, pool: &Pool<M>, me: Owner) -> Result<usize> {
        let (head, len) = self.head_len()?;
        let mut n = 0;
        let mut judged: std::collections::HashMap<u64, bool> = std::collections::HashMap::new();
        for k in 0..len {
            let i = (head + k) % self.cap;
            let (state, redeliveries) = self.state(i)?;
            if state != EntryState::InFlight {
                continue;
            }
            let token = self.entry(i)[E_OWNER].load(Ordering::Relaxed);
            if token == me.token {
                continue;
            }
            let dead = match judged.get(&token) {
                Some(&d) => d,
                None => {
                    let d = pool
                        .liveness
                        .token_dead(&pool.mem, &pool.geo, token, true)?;
                    judged.insert(token, d);
                    d
                }
            };
            if dead {
                self.requeue(i, redeliveries);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Counts what the channel holds (without the lock: a glance).
    pub(crate) fn counts(&self) -> Result<Counts> {
        let (head, len) = self.head_len()?;
        let mut c = Counts {
            capacity: self.cap as u64,
            closed: self.is_closed(),
            sent: self.words[SENT].load(Ordering::Relaxed),
            acked: self.words[ACKED].load(Ordering::Relaxed),
            redelivered: self.words[REDELIVERED].load(Ordering::Relaxed),
            ..Counts::default()
        };
        for k in 0..len {
            match self.state((head + k) % self.cap)?.0 {
                EntryState::Queued => c.queued += 1,
                EntryState::InFlight | EntryState::Acking => c.in_flight += 1,
                EntryState::Sending => c.sending += 1,
                EntryState::Done => c.done += 1,
            }
        }
        Ok(c)
    }

    /// The slots of every message the channel holds (queued or in flight),
    /// and the in-flight ones' receiver tokens: what `check` verifies.
    pub(crate) fn held_slots(&self) -> Result<Vec<(SlotRef, Option<u64>)>> {
        let (head, len) = self.head_len()?;
        let mut out = Vec::new();
        for k in 0..len {
            let i = (head + k) % self.cap;
            let (state, _) = self.state(i)?;
            let owner = self.entry(i)[E_OWNER].load(Ordering::Relaxed);
            match state {
                EntryState::Queued => out.push((self.slot_of(i), None)),
                EntryState::InFlight | EntryState::Acking => {
                    out.push((self.slot_of(i), Some(owner)))
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
