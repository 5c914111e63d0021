//! Wake-ups across processes: a [`NotifierHandle`] names a notifier in the
//! segment; [`Slab::notifier`] gives a [`Notifier`] to wait on it (parked in
//! the kernel, using no CPU) and to notify it from any process.
//!
//! The protocol (a sequence word whose low half is a futex, and a count of
//! parked waiters) and why no wake-up is lost are in the pool's `notify`
//! module. A waiter takes a [`Ticket`] *before* it checks what it waits for,
//! then waits on that ticket, so a notify that comes between the check and
//! the wait still wakes it:
//!
//! ```
//! use std::time::Duration;
//! # let dir = tempfile::tempdir()?;
//! # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
//! let jobs = slab.root_or_insert("jobs", 0u64)?;
//! let bell = slab.root_or_insert_notifier("jobs-bell")?;
//!
//! std::thread::scope(|s| -> Result<(), shmslab::Error> {
//!     // The consumer: check, and wait only on a ticket taken before.
//!     let consumer = s.spawn(|| -> Result<u64, shmslab::Error> {
//!         let bell = slab.notifier(bell)?;
//!         loop {
//!             let ticket = bell.ticket();
//!             let n = slab.read(jobs)?;
//!             if n > 0 {
//!                 return Ok(n);
//!             }
//!             bell.wait_since(ticket, Some(Duration::from_secs(10)));
//!         }
//!     });
//!     // The producer (any process): publish, then notify.
//!     slab.write(jobs, 3)?;
//!     slab.notifier(bell)?.notify_all();
//!     assert_eq!(consumer.join().unwrap()?, 3);
//!     Ok(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A `Notifier` is a view like the atomics' (see [`crate::atomics`]): checked
//! when made, then plain operations on the slot's words; kept across a free
//! of the slot it acts on the slot's next life (never undefined behaviour,
//! never outside the slot). A waiter killed while parked leaves nothing
//! that harms the others (one needless wake syscall per later notify).

use crate::error::Result;
use crate::format::SlotRef;
use crate::pool::notify::{self, RawNotifier};
use crate::slab::Slab;
use crate::sync::{deadline_after, nap_until};
use crate::typed::{RootType, fnv1a};
use bytemuck::{Pod, Zeroable};
use std::time::Duration;

/// A handle to a notifier in a segment: 16 bytes, `Copy` and `Pod`, like
/// every handle (null value, `to_bytes`/`from_bytes`, checked on use).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Pod, Zeroable)]
pub struct NotifierHandle(SlotRef);

impl NotifierHandle {
    /// The null handle: using it is [`Error::NullHandle`](crate::Error::NullHandle).
    pub const NULL: NotifierHandle = NotifierHandle(SlotRef::NULL);

    /// Whether this is [`NotifierHandle::NULL`].
    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    /// A notifier handle over a raw one (checked when used).
    pub fn from_raw(raw: SlotRef) -> Self {
        NotifierHandle(raw)
    }

    /// The untyped handle of the notifier's slot.
    pub fn raw(self) -> SlotRef {
        self.0
    }

    /// The handle as 16 bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// A handle from 16 bytes (checked when used).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        NotifierHandle(SlotRef::from_bytes(bytes))
    }
}

impl From<NotifierHandle> for SlotRef {
    fn from(h: NotifierHandle) -> SlotRef {
        h.0
    }
}

/// The notifier's sequence as a waiter saw it: what
/// [`Notifier::wait_since`] waits to see move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u32);

/// A notifier in the mapping, checked; see [the module doc](crate::notifier).
#[derive(Clone, Copy)]
pub struct Notifier<'a> {
    raw: RawNotifier<'a>,
}

impl std::fmt::Debug for Notifier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("ticket", &self.raw.ticket())
            .finish()
    }
}

impl<'a> Notifier<'a> {
    /// A notifier over a raw one (another object's bell word).
    pub(crate) fn from_raw(raw: RawNotifier<'a>) -> Self {
        Notifier { raw }
    }
}

impl Notifier<'_> {
    /// The notifier's state now: take it before checking the condition you
    /// will wait for.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.raw.ticket())
    }

    /// Parks the calling thread (no CPU use) until a notify after `ticket`
    /// was made, or `timeout` passes (`None`: no limit). Returns whether a
    /// notify came; wake-ups without one are absorbed.
    pub fn wait_since(&self, ticket: Ticket, timeout: Option<Duration>) -> bool {
        self.raw.wait(ticket.0, deadline_after(timeout))
    }

    /// Parks until the next notify (one made after this call starts), or
    /// `timeout`. Returns whether a notify came. To wait for a condition,
    /// use [`ticket`](Self::ticket) and [`wait_since`](Self::wait_since), or
    /// a notify between the check and this call is missed.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        self.wait_since(self.ticket(), timeout)
    }

    /// Waits until `condition` holds, checking it after every notify (and
    /// once at the start): the ticket-before-check pattern, written once.
    /// Returns whether it held before `timeout` passed (`None`: no limit).
    pub fn wait_until(
        &self,
        timeout: Option<Duration>,
        mut condition: impl FnMut() -> bool,
    ) -> bool {
        let deadline = deadline_after(timeout);
        loop {
            let ticket = self.raw.ticket();
            if condition() {
                return true;
            }
            if nap_until(deadline, Duration::MAX).is_none() {
                return false;
            }
            self.raw.wait(ticket, deadline);
        }
    }

    /// Bumps the sequence, so every waiter whose ticket is older sees a
    /// notify when it next looks, and wakes one parked waiter now (the
    /// others look at the latest within a second, their longest park).
    /// Writes this thread made before the notify are visible to a waiter
    /// that sees it (Release, and the waiter's Acquire).
    pub fn notify_one(&self) {
        self.raw.notify(false)
    }

    /// Bumps the sequence and wakes every parked waiter (ordering as for
    /// [`notify_one`](Self::notify_one)).
    pub fn notify_all(&self) {
        self.raw.notify(true)
    }
}

/// What a notifier root records.
fn notifier_root() -> RootType {
    RootType {
        fingerprint: crate::error::Fingerprint {
            size: 8 * notify::WORDS as u64,
            align: 8,
            schema: fnv1a(b"shmslab::Notifier"),
        },
        name: "shmslab::Notifier",
    }
}

impl Slab {
    /// Allocates a notifier (owned by this process, like any slot: free it
    /// with [`free`](Slab::free), or make it a root).
    pub fn alloc_notifier(&self) -> Result<NotifierHandle> {
        Ok(NotifierHandle(
            self.alloc_zeroed::<[u64; notify::WORDS]>()?.raw(),
        ))
    }

    /// The notifier a handle names, checked once (see [`Notifier`]).
    pub fn notifier(&self, handle: NotifierHandle) -> Result<Notifier<'_>> {
        let words = self.pool()?.live_words(&handle.0, notify::WORDS)?;
        Ok(Notifier {
            raw: RawNotifier::new(words),
        })
    }

    /// The notifier under `name`, or a new one: racing processes get one.
    pub fn root_or_insert_notifier(&self, name: &str) -> Result<NotifierHandle> {
        let raw = self.root_or_insert_object(name, notifier_root(), || {
            Ok(self.alloc_zeroed::<[u64; notify::WORDS]>()?.raw())
        })?;
        Ok(NotifierHandle(raw))
    }

    /// The notifier under `name`, if there is one.
    pub fn root_notifier(&self, name: &str) -> Result<Option<NotifierHandle>> {
        Ok(self.root_object(name, notifier_root())?.map(NotifierHandle))
    }
}
