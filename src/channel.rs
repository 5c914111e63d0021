//! A crash-safe channel between processes: bounded, many senders and many
//! receivers, acknowledged delivery, and redelivery of what a dead receiver
//! held.
//!
//! A [`ChannelHandle<T>`] names a channel of `T`s in the segment (found by
//! name with [`Slab::root_or_insert_channel`], or passed as a handle);
//! [`Slab::channel`] gives a [`Channel`] to use it. A message is a `T`, and
//! may carry a slot: [`Channel::send_slot`] sends a handle *and* hands its
//! slot to the channel, and receiving hands it to the receiver, so no slot
//! is leaked or freed twice whoever dies when.
//!
//! ```
//! use shmslab::Handle;
//! # let dir = tempfile::tempdir()?;
//! # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
//! let jobs = slab.root_or_insert_channel::<Handle<[u64; 4]>>("jobs", 64)?;
//! let ch = slab.channel(jobs)?;
//!
//! // A producer (any process): the job's slot goes with the message.
//! let job = slab.alloc([1u64, 2, 3, 4])?;
//! ch.send_slot(job)?;
//!
//! // A consumer (any process): process, then acknowledge.
//! let d = ch.recv()?;
//! assert_eq!(slab.read(d.value())?, [1, 2, 3, 4]);
//! assert_eq!(d.redeliveries(), 0);
//! d.ack()?;                       // frees the job's slot
//! assert!(slab.read(job).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Delivery
//!
//! [`Channel::recv`] returns a [`Delivery`]: the message is *in flight* for
//! this process until [`Delivery::ack`] (which frees the message's slot) or
//! [`Delivery::ack_keep`] (which keeps it, now owned by the receiver). If
//! the receiver dies first, the message goes back to the queue, at its
//! place, for another receiver — at-least-once delivery, with the count in
//! [`Delivery::redeliveries`]: a channel operation that finds nothing to
//! take, [`Channel::redeliver_dead`], or [`Slab::reclaim_dead`] (for
//! channels that are roots) asks the kernel whether the receivers of
//! in-flight messages live. Dropping a `Delivery` without acknowledging it
//! puts it back the same way (its count + 1): a receiver that panics
//! mid-job loses nothing. [`Channel::recv_ack`] acknowledges at once
//! (at-most-once).
//!
//! The capacity counts every message from its send to its acknowledgement
//! (queued and in flight), and a message acknowledged behind an older one
//! still in flight frees its room when the older one does (the ring keeps
//! send order).
//!
//! # Crashes
//!
//! Every step is one word under the channel's lock (the locked values'
//! lock, with its dead-holder take-over; the protocol is the pool's
//! `channel` module): a sender killed inside `send` leaves the message
//! queued exactly once or not at all (then its slot, still the sender's, is
//! reclaimed); a receiver killed inside `recv` or `ack` leaves the message
//! in flight (redelivered) or acknowledged. The next holder of the lock
//! resolves what a dead one left.
//!
//! A `Channel` is a checked view, like the atomics' (see
//! [`crate::atomics`]), but every operation checks its handle again, so one
//! kept across a free of the channel's slot gets `StaleHandle` rather than
//! acting on the slot's next life. The operations that clean up (ack, put
//! back, close, redelivery, `reclaim_dead`) wait at most 20 s for a live
//! holder of the channel's lock (a stopped process, a forged word), then
//! return `Corrupt`.

use crate::error::{Error, Result};
use crate::format::SlotRef;
use crate::notifier::Notifier;
use crate::pool::channel::{self, RawChannel, Taken};
use crate::slab::Slab;
use crate::sync::{deadline_after, nap_until};
use crate::typed::{RootType, fnv1a};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

crate::typed::typed_handle! {
    /// A handle to a channel of `T`s: 16 bytes, `Copy` and `Pod`, like every
    /// handle (null value, `to_bytes`/`from_bytes`, checked on use).
    ChannelHandle
}

/// Marks a channel root's schema ("CHANNEL" in ASCII).
const CHANNEL_TAG: u64 = 0x4348_414e_4e45_4c00;

pub(crate) fn channel_root<T>() -> RootType {
    RootType {
        fingerprint: crate::error::Fingerprint {
            size: size_of::<T>() as u64,
            align: align_of::<T>() as u64,
            schema: fnv1a(std::any::type_name::<T>().as_bytes()) ^ CHANNEL_TAG,
        },
        name: std::any::type_name::<ChannelHandle<T>>(),
    }
}

/// A channel in the mapping, checked: what [`Slab::channel`] gives.
pub struct Channel<'a, T> {
    slab: &'a Slab,
    handle: SlotRef,
    raw: RawChannel<'a>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Channel<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Channel<'_, T> {}

impl<T> std::fmt::Debug for Channel<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("type", &std::any::type_name::<T>())
            .field("capacity", &self.raw.capacity())
            .finish()
    }
}

/// How a channel's queue stands, counted (a glance without its lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelStats {
    /// Messages the channel holds at most (queued and in flight).
    pub capacity: u64,
    /// Messages waiting for a receiver.
    pub queued: u64,
    /// Messages received and not yet acknowledged.
    pub in_flight: u64,
    /// Sends completed (since creation).
    pub sent: u64,
    /// Acknowledgements (since creation).
    pub acked: u64,
    /// Messages put back after their receiver died or dropped them.
    pub redelivered: u64,
    /// Whether the channel was closed.
    pub closed: bool,
}

/// A received message, in flight until acknowledged; see [the module
/// doc](crate::channel). Dropping it without an ack puts it back.
pub struct Delivery<'a, T: Pod> {
    channel: Channel<'a, T>,
    value: T,
    taken: Option<Taken>,
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Delivery<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("value", &self.value)
            .field("redeliveries", &self.redeliveries())
            .finish()
    }
}

impl<T: Pod> Delivery<'_, T> {
    /// The message.
    pub fn value(&self) -> T {
        self.value
    }

    /// The slot the message carries (null for a plain value).
    pub fn slot(&self) -> SlotRef {
        self.taken.map_or(SlotRef::NULL, |t| t.slot)
    }

    /// How many times this message was put back before (its receivers died,
    /// or dropped it without an ack).
    pub fn redeliveries(&self) -> u32 {
        self.taken.map_or(0, |t| t.redeliveries)
    }

    /// Acknowledges the message: done for good, and its slot freed.
    pub fn ack(mut self) -> Result<()> {
        let slot = self.finish()?;
        if !slot.is_null() {
            self.channel.slab.free(slot)?;
        }
        Ok(())
    }

    /// Acknowledges the message and keeps its slot, owned by this process
    /// from now on (free it, persist it, or send it on).
    pub fn ack_keep(mut self) -> Result<SlotRef> {
        self.finish()
    }

    fn finish(&mut self) -> Result<SlotRef> {
        let Some(t) = self.taken.take() else {
            return Ok(SlotRef::NULL);
        };
        let slab = self.channel.slab;
        let pool = slab.pool()?;
        let slot = self
            .channel
            .locked(Some(hold_limit()), |raw, held| {
                raw.ack(pool, held, slab.me, &t)
            })?
            .ok_or_else(lock_held_too_long)?;
        self.channel.bell(channel::SEND_BELL).notify_one();
        Ok(slot)
    }
}

impl<T: Pod> Drop for Delivery<'_, T> {
    fn drop(&mut self) {
        let Some(t) = self.taken.take() else {
            return;
        };
        // Put back (a forked child's copy leaves it to the parent).
        let put_back = self
            .channel
            .locked(Some(hold_limit()), |raw, held| raw.nack(held, &t));
        if let Ok(Some(())) = put_back {
            self.channel.bell(channel::RECV_BELL).notify_one();
        }
    }
}

fn no_lock() -> Error {
    Error::corrupt("a wait without a deadline did not take the channel's lock")
}

/// How long the operations that clean up (ack, put back, close,
/// redelivery, reclaim) wait for a live holder of the channel's lock: a
/// holder stopped (SIGSTOP) or a word a peer forged must not hang them.
const HOLD_LIMIT: Duration = Duration::from_secs(20);

fn hold_limit() -> Instant {
    Instant::now() + HOLD_LIMIT
}

#[cold]
fn lock_held_too_long() -> Error {
    Error::corrupt(format!(
        "a channel's lock has been held by a live process for over {HOLD_LIMIT:?}"
    ))
}

/// How often a waiting receiver looks for messages of dead receivers.
const REDELIVERY_LOOK: Duration = Duration::from_millis(50);

impl<'a, T: Pod> Channel<'a, T> {
    fn bell(&self, which: usize) -> Notifier<'a> {
        Notifier::from_raw(self.raw.bell(which))
    }

    /// Runs `f` under the channel's lock.
    fn locked<R>(
        &self,
        deadline: Option<Instant>,
        f: impl FnOnce(&RawChannel<'a>, &channel::ChannelHold) -> Result<R>,
    ) -> Result<Option<R>> {
        let pool = self.slab.pool()?;
        // The channel's slot still live (a view kept across a free of it
        // must not write into the slot's next life).
        pool.live_words(&self.handle, 0)?;
        let Some(held) = self.raw.lock(pool, self.slab.me, deadline)? else {
            return Ok(None);
        };
        let r = f(&self.raw, &held);
        self.raw.unlock(held);
        r.map(Some)
    }

    fn send_until(&self, value: T, slot: SlotRef, deadline: Option<Instant>) -> Result<bool> {
        let pool = self.slab.pool()?;
        let room = self.bell(channel::SEND_BELL);
        loop {
            let ticket = room.ticket();
            let sent = self
                .locked(deadline, |raw, held| {
                    raw.send(pool, held, bytemuck::bytes_of(&value), slot)
                })?
                .unwrap_or(false);
            if sent {
                self.bell(channel::RECV_BELL).notify_one();
                return Ok(true);
            }
            // At most REDELIVERY_LOOK at a time: room made by a dead
            // receiver's cleanup (the next holder's resolve) sends no wake.
            let Some(nap) = nap_until(deadline, REDELIVERY_LOOK) else {
                return Ok(false);
            };
            room.wait_since(ticket, Some(nap));
        }
    }

    /// Sends `value`, waiting while the channel is full. `ChannelClosed` if
    /// it was closed.
    pub fn send(&self, value: T) -> Result<()> {
        self.send_until(value, SlotRef::NULL, None).map(drop)
    }

    /// Sends `value` if there is room now (`ChannelFull` if not).
    pub fn try_send(&self, value: T) -> Result<()> {
        if self.send_until(value, SlotRef::NULL, Some(Instant::now()))? {
            Ok(())
        } else {
            Err(Error::ChannelFull {
                capacity: self.raw.capacity(),
            })
        }
    }

    /// Sends `value`, waiting at most `timeout` for room; `false` if there
    /// was none.
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<bool> {
        self.send_until(value, SlotRef::NULL, deadline_after(Some(timeout)))
    }

    /// Sends a handle and hands the slot it names to the channel (waiting
    /// while full): the receiver gets the slot, and no death on either side
    /// leaks it or frees it twice. The slot must be live.
    pub fn send_slot(&self, value: T) -> Result<()>
    where
        T: Into<SlotRef>,
    {
        self.send_until(value, value.into(), None).map(drop)
    }

    /// As [`send_slot`](Self::send_slot), with the slot given apart from the
    /// value (a struct that names the slot among other fields).
    pub fn send_with_slot(&self, value: T, slot: impl Into<SlotRef>) -> Result<()> {
        self.send_until(value, slot.into(), None).map(drop)
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<Option<Delivery<'a, T>>> {
        let pool = self.slab.pool()?;
        let ready = self.bell(channel::RECV_BELL);
        loop {
            let ticket = ready.ticket();
            let mut value = T::zeroed();
            let got = self.locked(deadline, |raw, held| {
                if let Some(t) = raw.take(held, bytemuck::bytes_of_mut(&mut value))? {
                    return Ok(Some(t));
                }
                // Nothing queued: bring back what dead receivers held.
                if raw.redeliver_dead(pool, self.slab.me)? > 0 {
                    return raw.take(held, bytemuck::bytes_of_mut(&mut value));
                }
                if raw.is_closed() {
                    return Err(Error::ChannelClosed);
                }
                Ok(None)
            })?;
            if let Some(Some(t)) = got {
                return Ok(Some(Delivery {
                    channel: *self,
                    value,
                    taken: Some(t),
                }));
            }
            let Some(nap) = nap_until(deadline, REDELIVERY_LOOK) else {
                return Ok(None);
            };
            ready.wait_since(ticket, Some(nap));
        }
    }

    /// Receives the next message, waiting for one. `ChannelClosed` once the
    /// channel is closed and nothing is queued.
    pub fn recv(&self) -> Result<Delivery<'a, T>> {
        self.recv_until(None)?.ok_or_else(no_lock)
    }

    /// Receives a message if one is queued now.
    pub fn try_recv(&self) -> Result<Option<Delivery<'a, T>>> {
        self.recv_until(Some(Instant::now()))
    }

    /// Receives a message, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Delivery<'a, T>>> {
        self.recv_until(deadline_after(Some(timeout)))
    }

    /// Receives and acknowledges at once (at-most-once): the value, and the
    /// slot it carries, now owned by this process (null for none).
    pub fn recv_ack(&self) -> Result<(T, SlotRef)> {
        let d = self.recv()?;
        let value = d.value();
        Ok((value, d.ack_keep()?))
    }

    /// Closes the channel: sends fail with `ChannelClosed`; receivers drain
    /// what is queued, then get `ChannelClosed`. Wakes every waiter.
    pub fn close(&self) -> Result<()> {
        self.locked(Some(hold_limit()), |raw, held| {
            raw.close(held);
            Ok(())
        })?
        .ok_or_else(lock_held_too_long)?;
        self.bell(channel::RECV_BELL).notify_all();
        self.bell(channel::SEND_BELL).notify_all();
        Ok(())
    }

    /// Whether the channel was closed.
    pub fn is_closed(&self) -> bool {
        self.raw.is_closed()
    }

    /// Puts back every in-flight message whose receiver has died. Returns
    /// how many.
    pub fn redeliver_dead(&self) -> Result<usize> {
        let pool = self.slab.pool()?;
        let n = self
            .locked(Some(hold_limit()), |raw, _| {
                raw.redeliver_dead(pool, self.slab.me)
            })?
            .ok_or_else(lock_held_too_long)?;
        if n > 0 {
            self.bell(channel::RECV_BELL).notify_all();
        }
        Ok(n)
    }

    /// How the queue stands now (a glance, without the lock).
    pub fn stats(&self) -> Result<ChannelStats> {
        let c = self.raw.counts()?;
        Ok(ChannelStats {
            capacity: c.capacity,
            queued: c.queued,
            in_flight: c.in_flight,
            sent: c.sent,
            acked: c.acked,
            redelivered: c.redelivered,
            closed: c.closed,
        })
    }
}

impl Slab {
    /// Puts back what dead receivers held in every channel that is a named
    /// root (a root whose slot holds a channel header of its fingerprint's
    /// value size). Returns how many messages.
    pub(crate) fn redeliver_in_root_channels(&self) -> Result<usize> {
        let pool = self.pool()?;
        let mut n = 0;
        for root in self.roots()? {
            let Some(raw) = RawChannel::of_root(pool, &root.handle, root.fingerprint.size) else {
                continue;
            };
            // One bad channel (junk, a stopped holder) must not cost the
            // others their redelivery: it is skipped (check reports it).
            let Ok(Some(held)) = raw.lock(pool, self.me, Some(hold_limit())) else {
                continue;
            };
            let r = raw.redeliver_dead(pool, self.me);
            raw.unlock(held);
            let Ok(k) = r else {
                continue;
            };
            if k > 0 {
                Notifier::from_raw(raw.bell(channel::RECV_BELL)).notify_all();
            }
            n += k;
        }
        Ok(n)
    }

    /// Allocates a channel of `T`s holding at most `capacity` messages
    /// (queued and in flight). A zero capacity is `InvalidConfig`; one whose
    /// slot would pass the largest class, `TooLarge`.
    pub fn alloc_channel<T: Pod>(&self, capacity: usize) -> Result<ChannelHandle<T>> {
        Ok(ChannelHandle::from_raw(
            self.alloc_channel_raw::<T>(capacity)?,
        ))
    }

    fn alloc_channel_raw<T: Pod>(&self, capacity: usize) -> Result<SlotRef> {
        if capacity == 0 || capacity > u32::MAX as usize {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "a channel's capacity must be 1 to {}, not {capacity}",
                    u32::MAX
                ),
            });
        }
        let words = channel::words_for(capacity, size_of::<T>()).ok_or(Error::TooLarge {
            size: u64::MAX,
            largest: crate::format::MAX_SLOT_SIZE,
        })?;
        let raw = self.alloc_zeroed_bytes(8 * words as u64, 8)?;
        let slot = self.pool()?.live_words(&raw, words)?;
        RawChannel::init(slot, capacity);
        Ok(raw)
    }

    /// The channel under `name`, or a new one of `capacity`: racing
    /// processes get one.
    pub fn root_or_insert_channel<T: Pod>(
        &self,
        name: &str,
        capacity: usize,
    ) -> Result<ChannelHandle<T>> {
        let raw = self.root_or_insert_object(name, channel_root::<T>(), || {
            self.alloc_channel_raw::<T>(capacity)
        })?;
        Ok(ChannelHandle::from_raw(raw))
    }

    /// The channel under `name`, if there is one.
    pub fn root_channel<T: Pod>(&self, name: &str) -> Result<Option<ChannelHandle<T>>> {
        Ok(self
            .root_object(name, channel_root::<T>())?
            .map(ChannelHandle::from_raw))
    }

    /// The channel a handle names, checked (segment, slot, and the channel's
    /// header against the slot).
    pub fn channel<T: Pod>(&self, handle: ChannelHandle<T>) -> Result<Channel<'_, T>> {
        let pool = self.pool()?;
        let size = pool.live_size(&handle.raw)? as usize;
        let words = pool.live_words(&handle.raw, size / 8)?;
        Ok(Channel {
            slab: self,
            handle: handle.raw(),
            raw: RawChannel::open(words, size_of::<T>())?,
            _type: PhantomData,
        })
    }
}
