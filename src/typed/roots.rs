//! Named roots: a fixed table in the header that maps a name to a handle and
//! the fingerprint of the type stored there, so a process can find a struct
//! another process made — and is told when it asks for it as another type.
//!
//! Every operation runs under the roots lock (a shared lock word), so two
//! processes racing `root_or_insert` for one name end up with one object. An
//! insert is written *reserved*, then the object is allocated, then the entry
//! is published *ready*, then the object is handed to the segment (owner 0).
//! A crash before *ready* leaves a reserved entry, which the next lock holder
//! clears (the object, still owned by the dead process, is reclaimed); a crash
//! after it leaves a ready root whose object reclaim keeps.

use super::{Handle, RootType, Schema, SliceHandle, root_type, slice_root_type};
use crate::error::{Error, Fingerprint, Result};
use crate::fault::crash_point;
use crate::format::{self, MAX_ROOT_NAME, SlotRef, hdr, root};
use crate::pool::Owner;
use crate::pool::Pool;
use crate::pool::lock::SharedGuard;
use crate::region::Memory;
use crate::slab::Slab;
use crate::sync::Ordering;

/// One named root, as listed by [`Slab::roots`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootInfo {
    /// The root's name.
    pub name: String,
    /// The fingerprint of the type stored under it.
    pub fingerprint: Fingerprint,
    /// The handle it points at.
    pub handle: SlotRef,
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_ROOT_NAME {
        return Err(Error::BadRootName {
            len: name.len(),
            max: MAX_ROOT_NAME,
        });
    }
    Ok(())
}

/// A ready root entry as read from the table.
struct Entry {
    name: Vec<u8>,
    fingerprint: Fingerprint,
    handle: SlotRef,
    /// A slice root's element count (0 for other roots).
    len: u64,
}

/// The state word of root entry `i`.
fn entry_state<M: Memory>(pool: &Pool<M>, i: usize) -> Result<u64> {
    format::load(&pool.mem, pool.geo.root_entry(i) + root::STATE)
}

/// Reads root entry `i` if it is ready. The state is read first so an empty
/// or reserved entry costs one load, not the whole row.
fn read_ready<M: Memory>(pool: &Pool<M>, i: usize) -> Result<Option<Entry>> {
    if entry_state(pool, i)? != root::READY {
        return Ok(None);
    }
    let base = pool.geo.root_entry(i);
    let r = |off| format::load(&pool.mem, base + off);
    let len = (r(root::NAME_LEN)? as usize).min(MAX_ROOT_NAME);
    let mut name = Vec::with_capacity(MAX_ROOT_NAME);
    for w in 0..MAX_ROOT_NAME as u64 / 8 {
        name.extend_from_slice(&r(root::NAME + 8 * w)?.to_ne_bytes());
    }
    name.truncate(len);
    Ok(Some(Entry {
        name,
        fingerprint: Fingerprint {
            size: r(root::FP_SIZE)?,
            align: r(root::FP_ALIGN)?,
            schema: r(root::FP_SCHEMA)?,
        },
        handle: SlotRef::from_words([r(root::HANDLE)?, r(root::HANDLE + 8)?]),
        len: r(root::LEN)?,
    }))
}

/// Every ready root, read without the roots lock (for inspection).
pub(crate) fn list_roots<M: Memory>(pool: &Pool<M>) -> Result<Vec<RootInfo>> {
    let mut out = Vec::new();
    for i in 0..pool.geo.config.root_capacity {
        if let Some(e) = read_ready(pool, i)? {
            out.push(RootInfo {
                name: String::from_utf8_lossy(&e.name).into_owned(),
                fingerprint: e.fingerprint,
                handle: e.handle,
            });
        }
    }
    Ok(out)
}

/// Takes the roots lock as `me`. Clearing reserved entries is always right
/// under the lock: only an insert in progress (not yet ours) or a dead one
/// leaves them.
fn lock_roots<M: Memory>(pool: &Pool<M>, me: Owner) -> Result<SharedGuard<'_>> {
    let guard = pool.lock_shared(&pool.roots_local, hdr::ROOTS_LOCK, hdr::ROOTS_PROGRESS, me)?;
    for i in 0..pool.geo.config.root_capacity {
        let w = pool.table_word(pool.geo.root_entry(i) + root::STATE)?;
        if w.load(Ordering::Acquire) == root::RESERVED {
            w.store(root::EMPTY, Ordering::Release);
        }
    }
    Ok(guard)
}

/// The ready entry named `name`, if any. Caller holds the roots lock.
fn find<M: Memory>(pool: &Pool<M>, name: &str) -> Result<Option<(usize, Entry)>> {
    for i in 0..pool.geo.config.root_capacity {
        // Not a let chain: those need Rust 1.88, and rust-version is 1.86.
        if let Some(e) = read_ready(pool, i)? {
            if e.name == name.as_bytes() {
                return Ok(Some((i, e)));
            }
        }
    }
    Ok(None)
}

/// The handle (and slice length) stored under `name` if it holds a `ty`.
fn matching(name: &str, e: &Entry, ty: RootType) -> Result<(SlotRef, u64)> {
    if e.fingerprint != ty.fingerprint {
        return Err(Error::TypeMismatch {
            name: name.to_string(),
            stored: e.fingerprint,
            requested: ty.fingerprint,
            requested_type: ty.name,
        });
    }
    Ok((e.handle, e.len))
}

/// Looks up `name` under the roots lock.
pub(crate) fn get<M: Memory>(
    pool: &Pool<M>,
    me: Owner,
    name: &str,
    ty: RootType,
) -> Result<Option<SlotRef>> {
    Ok(get_entry(pool, me, name, ty)?.map(|(h, _)| h))
}

/// Looks up `name` under the roots lock: its handle and slice length.
pub(crate) fn get_entry<M: Memory>(
    pool: &Pool<M>,
    me: Owner,
    name: &str,
    ty: RootType,
) -> Result<Option<(SlotRef, u64)>> {
    check_name(name)?;
    let _guard = lock_roots(pool, me)?;
    match find(pool, name)? {
        Some((_, e)) => matching(name, &e, ty).map(Some),
        None => Ok(None),
    }
}

/// The root `name`, or, if there is none, a new one holding the slot that
/// `alloc` makes: reserved, allocated, published ready, then handed to the
/// segment (owner 0). All under the roots lock, so racers get one object.
pub(crate) fn get_or_insert<M: Memory>(
    pool: &Pool<M>,
    me: Owner,
    name: &str,
    ty: RootType,
    alloc: impl FnOnce() -> Result<SlotRef>,
) -> Result<SlotRef> {
    get_or_insert_entry(pool, me, name, ty, 0, alloc).map(|(h, _)| h)
}

/// As [`get_or_insert`], recording (and returning) a slice length `len`.
/// `alloc` runs only if the root is absent, under the roots lock: a value
/// built there is built once, whoever races.
pub(crate) fn get_or_insert_entry<M: Memory>(
    pool: &Pool<M>,
    me: Owner,
    name: &str,
    ty: RootType,
    len: u64,
    alloc: impl FnOnce() -> Result<SlotRef>,
) -> Result<(SlotRef, u64)> {
    check_name(name)?;
    let _guard = lock_roots(pool, me)?;
    if let Some((_, e)) = find(pool, name)? {
        return matching(name, &e, ty);
    }
    let fp = ty.fingerprint;
    let geo = &pool.geo;
    let slot = (0..geo.config.root_capacity)
        .find(|&i| matches!(entry_state(pool, i), Ok(root::EMPTY)))
        .ok_or(Error::RootTableFull {
            capacity: geo.config.root_capacity,
        })?;
    let base = geo.root_entry(slot);
    let w = |off: u64, v: u64| -> Result<()> {
        pool.table_word(base + off)?.store(v, Ordering::Relaxed);
        Ok(())
    };
    let mut padded = [0u8; MAX_ROOT_NAME];
    padded[..name.len()].copy_from_slice(name.as_bytes());
    for (k, chunk) in padded.chunks_exact(8).enumerate() {
        w(
            root::NAME + 8 * k as u64,
            u64::from_ne_bytes(chunk.try_into().expect("8")),
        )?;
    }
    w(root::NAME_LEN, name.len() as u64)?;
    w(root::FP_SIZE, fp.size)?;
    w(root::FP_ALIGN, fp.align)?;
    w(root::FP_SCHEMA, fp.schema)?;
    w(root::LEN, len)?;
    let state = pool.table_word(base + root::STATE)?;
    state.store(root::RESERVED, Ordering::Release);
    crash_point("root.reserved");
    let handle = match alloc() {
        Ok(h) => h,
        Err(e) => {
            state.store(root::EMPTY, Ordering::Release);
            return Err(e);
        }
    };
    let [lo, hi] = handle.to_words();
    w(root::HANDLE, lo)?;
    w(root::HANDLE + 8, hi)?;
    state.store(root::READY, Ordering::Release);
    crash_point("root.published");
    pool.set_owner(&handle, 0)?;
    Ok((handle, len))
}

/// Removes the root `name` under the roots lock, calling `free` on its
/// handle first. Returns whether there was one.
pub(crate) fn remove<M: Memory>(
    pool: &Pool<M>,
    me: Owner,
    name: &str,
    free: impl FnOnce(SlotRef) -> Result<()>,
) -> Result<bool> {
    check_name(name)?;
    let _guard = lock_roots(pool, me)?;
    let Some((i, e)) = find(pool, name)? else {
        return Ok(false);
    };
    // Free first: a crash between the two leaves a root whose handle is
    // stale (reported as such), never a leaked object.
    match free(e.handle) {
        Ok(())
        | Err(Error::StaleHandle { .. })
        | Err(Error::DoubleFree)
        | Err(Error::InvalidHandle { .. })
        | Err(Error::ForeignHandle { .. }) => {}
        Err(other) => return Err(other),
    }
    pool.table_word(pool.geo.root_entry(i) + root::STATE)?
        .store(root::EMPTY, Ordering::Release);
    Ok(true)
}

impl Slab {
    /// The handle stored under `name`, if there is one. A root of another
    /// type is [`Error::TypeMismatch`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// assert_eq!(slab.root::<u64>("counter")?, None);
    /// let h = slab.root_or_insert("counter", 0u64)?;
    /// assert_eq!(slab.root::<u64>("counter")?, Some(h));
    /// assert!(matches!(slab.root::<u32>("counter"), Err(shmslab::Error::TypeMismatch { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn root<T: Schema>(&self, name: &str) -> Result<Option<Handle<T>>> {
        Ok(get(self.pool()?, self.me, name, root_type::<T>())?.map(Handle::from_raw))
    }

    /// The handle under `name`; if there is none, allocates `init`, stores it
    /// under `name` and returns it. Processes racing this for one name all
    /// get the same object. The object belongs to the segment: it outlives
    /// the process that made it until [`remove_root`](Slab::remove_root).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let a = slab.root_or_insert("config", [1u32, 2])?;
    /// let b = slab.root_or_insert("config", [9u32, 9])?; // already there
    /// assert_eq!(a, b);
    /// assert_eq!(slab.read(b)?, [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn root_or_insert<T: Schema>(&self, name: &str, init: T) -> Result<Handle<T>> {
        self.root_or_insert_with(name, || init)
    }

    /// As [`root_or_insert`](Slab::root_or_insert), building the value only
    /// if the root is absent: `init` runs at most once among all racing
    /// processes.
    ///
    /// `init` runs under the segment's roots lock: keep it short (other
    /// processes' root calls wait for it, and give up with `Corrupt` after
    /// the lock's 20 s hold limit), do not wait in it for another process,
    /// and do not use this `Slab`'s roots from inside it (a deadlock).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let mut built = 0;
    /// let a = slab.root_or_insert_with("config", || { built += 1; [7u32; 4] })?;
    /// let b = slab.root_or_insert_with("config", || { built += 1; [9u32; 4] })?;
    /// assert_eq!((a, built), (b, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn root_or_insert_with<T: Schema>(
        &self,
        name: &str,
        init: impl FnOnce() -> T,
    ) -> Result<Handle<T>> {
        let raw =
            self.root_or_insert_object(name, root_type::<T>(), || Ok(self.alloc(init())?.raw()))?;
        Ok(Handle::from_raw(raw))
    }

    /// The root `name`, or a new one holding a zeroed `T` (made without a `T`
    /// on the stack, so it suits large tables).
    pub fn root_or_insert_zeroed<T: Schema>(&self, name: &str) -> Result<Handle<T>> {
        let raw = self.root_or_insert_object(name, root_type::<T>(), || {
            Ok(self.alloc_zeroed::<T>()?.raw())
        })?;
        Ok(Handle::from_raw(raw))
    }

    /// The slice stored under `name`, if there is one (a root of another type,
    /// or a single value, is [`Error::TypeMismatch`]).
    pub fn root_slice<T: Schema>(&self, name: &str) -> Result<Option<SliceHandle<T>>> {
        let found = get_entry(self.pool()?, self.me, name, slice_root_type::<T>())?;
        Ok(found.map(|(raw, len)| SliceHandle::from_raw(raw, len as usize)))
    }

    /// The slice stored under `name`, or a new zeroed one of `len` elements.
    /// Processes racing this for one name create one slice, and no loser's
    /// slice is left behind: the table behind a root, made race-free. An
    /// existing slice is returned whatever its length (see
    /// [`SliceHandle::len`]).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let slab = shmslab::Slab::builder().create(dir.path().join("s"))?;
    /// let table = slab.root_or_insert_slice::<u64>("buckets", 512)?;
    /// slab.set(table, 7, 42)?;
    /// let again = slab.root_or_insert_slice::<u64>("buckets", 512)?;
    /// assert_eq!(slab.get(again, 7)?, 42);
    /// assert_eq!(slab.root_slice::<u64>("buckets")?, Some(table));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn root_or_insert_slice<T: Schema>(
        &self,
        name: &str,
        len: usize,
    ) -> Result<SliceHandle<T>> {
        let (raw, len) = get_or_insert_entry(
            self.pool()?,
            self.me,
            name,
            slice_root_type::<T>(),
            len as u64,
            || Ok(self.alloc_slice::<T>(len)?.raw()),
        )?;
        Ok(SliceHandle::from_raw(raw, len as usize))
    }

    /// The object of kind `ty` under `name`, if any (the locked cells' and
    /// notifiers' roots).
    pub(crate) fn root_object(&self, name: &str, ty: RootType) -> Result<Option<SlotRef>> {
        get(self.pool()?, self.me, name, ty)
    }

    /// The object of kind `ty` under `name`, or a new one that `alloc` makes
    /// (once, under the roots lock).
    pub(crate) fn root_or_insert_object(
        &self,
        name: &str,
        ty: RootType,
        alloc: impl FnOnce() -> Result<SlotRef>,
    ) -> Result<SlotRef> {
        get_or_insert(self.pool()?, self.me, name, ty, alloc)
    }

    /// Removes the root `name` and frees its object. Returns whether there
    /// was one.
    pub fn remove_root(&self, name: &str) -> Result<bool> {
        remove(self.pool()?, self.me, name, |h| self.free(h))
    }

    /// Every named root.
    pub fn roots(&self) -> Result<Vec<RootInfo>> {
        let pool = self.pool()?;
        let _guard = lock_roots(pool, self.me)?;
        list_roots(pool)
    }
}

/// The roots protocol over a heap segment shared by two simulated processes,
/// with real threads: what Miri runs (the loom model checks the same race
/// exhaustively but with loom's atomics).
#[cfg(all(test, not(loom)))]
mod tests {
    use super::{get, get_or_insert, list_roots, remove};
    use crate::error::{Error, Fingerprint};
    use crate::pool::testing::{alloc_one, heap_processes};
    use crate::typed::RootType;

    const FP: RootType = RootType {
        fingerprint: Fingerprint {
            size: 8,
            align: 8,
            schema: 7,
        },
        name: "Table",
    };

    #[test]
    fn two_processes_racing_get_or_insert_on_one_name_get_one_object() {
        let procs = heap_processes(&[64], 4096, 1 << 20, 2);
        let handles: Vec<_> = std::thread::scope(|s| {
            let racers: Vec<_> = procs
                .iter()
                .map(|(p, o)| {
                    s.spawn(move || get_or_insert(p, *o, "shared", FP, || alloc_one(p, 0, *o)))
                })
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().unwrap().unwrap())
                .collect()
        });
        assert_eq!(handles[0], handles[1]);
        let (p, o) = &procs[0];
        let report = crate::check::check_pool(p, None).unwrap();
        assert!(report.is_consistent(), "{:?}", report.findings);
        let allocated: u64 = report.classes.iter().map(|c| c.allocated).sum();
        assert_eq!((allocated, report.roots), (1, 1), "the loser allocated too");

        // The other process finds it by name, refuses it as another type,
        // and removes it.
        let (q, oq) = &procs[1];
        assert_eq!(get(q, *oq, "shared", FP).unwrap(), Some(handles[0]));
        let other = RootType {
            fingerprint: Fingerprint {
                schema: 8,
                ..FP.fingerprint
            },
            name: "OtherTable",
        };
        assert!(matches!(
            get(q, *oq, "shared", other),
            Err(Error::TypeMismatch {
                requested_type: "OtherTable",
                ..
            })
        ));
        assert_eq!(list_roots(p).unwrap()[0].name, "shared");
        assert!(remove(q, *oq, "shared", |_| Ok(())).unwrap());
        assert_eq!(get(p, *o, "shared", FP).unwrap(), None);
    }
}
