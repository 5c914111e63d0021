//! Forged handles: random and mutated 16-byte handles, used as `SlotRef`,
//! as `Handle<T>` for several `T` and as `SliceHandle<T>`, with every
//! operation that takes a handle: `capacity`, `read_bytes`, `write_bytes`,
//! `with_bytes`, `update_bytes`, typed `read`/`write`/`update`, slice
//! `get`/`set`/`read_into`/`write_from`, `persist`, `adopt` and `free`.
//!
//! Each must return an error, or act on a real, live slot, with exactly the
//! handle of its current life: a registry of every live handle and the bytes
//! last written through it is kept, a forged handle that equals a registry
//! entry (on purpose, or by a lucky mutation) updates the registry, and any
//! other success is a violation. Afterwards every live slot must hold the
//! registry's bytes, the checker must find the segment consistent, and the
//! file must be byte-identical outside the slots that were really hit and
//! the class words a free moves.
//!
//! `capacity` must refuse a handle that is not live, and slice indices
//! whose byte offset would overflow are out of bounds (both were bugs, kept
//! as regression tests below).
//!
//! `SHMSLAB_FORGED_HANDLES` sets the number of handles (default 100,000 in a
//! release build, as `.ci/run` runs it; 10,000 in a debug build, so the
//! README's `cargo test` stays quick) and `SHMSLAB_FORGED_SEED` the seed. The run happens in a child process, so a
//! signal is reported rather than taking the test binary down.

mod common;
mod hardening;

use common::live::XorShift;
use hardening::*;
use shmslab::bytemuck::{self, Pod};
use shmslab::{Error, Handle, Slab, SliceHandle, SlotRef};
use std::collections::HashMap;
use std::fmt::Debug;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

const CLASSES: [u64; 4] = [64, 256, 1024, 4096];
/// Live slots per class in the registry.
const LIVE_PER_CLASS: [usize; 4] = [300, 200, 80, 24];
const DEFAULT_HANDLES: u64 = if cfg!(debug_assertions) {
    10_000
} else {
    100_000
};
const DEFAULT_SEED: u64 = 0xF0_96ED_4A4D_1E55;

const ROLE: &str = "forged-run";

/// The model: every live handle of the segment and the bytes its slot must
/// hold (its whole capacity).
struct Registry {
    live: HashMap<[u8; 16], Vec<u8>>,
    /// Live handles in a stable order, for picking.
    order: Vec<SlotRef>,
    /// Handles of earlier lives (freed), for mutating.
    stale: Vec<SlotRef>,
    /// Slots (class, extent, index) that a forged handle really reached.
    hit: std::collections::HashSet<(usize, u8, u32)>,
}

fn fields(h: &SlotRef) -> (u32, u32, u32, u8, u8, u16) {
    let b = h.to_bytes();
    let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
    (
        u32_at(0),
        u32_at(4),
        u32_at(8),
        b[12],
        b[13],
        u16::from_ne_bytes([b[14], b[15]]),
    )
}

fn make(
    segment: u32,
    index: u32,
    generation: u32,
    class: u8,
    extent: u8,
    reserved: u16,
) -> SlotRef {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&segment.to_ne_bytes());
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&generation.to_ne_bytes());
    b[12] = class;
    b[13] = extent;
    b[14..16].copy_from_slice(&reserved.to_ne_bytes());
    SlotRef::from_bytes(b)
}

fn pick<T: Copy>(rng: &mut XorShift, v: &[T]) -> T {
    v[rng.below(v.len() as u64) as usize]
}

/// Builds the segment and the registry: live slots of every class, some in
/// their second or third life, and the handles of their earlier lives.
fn populate(slab: &Slab, rng: &mut XorShift) -> Registry {
    let mut reg = Registry {
        live: HashMap::new(),
        order: Vec::new(),
        stale: Vec::new(),
        hit: Default::default(),
    };
    for (&size, &n) in CLASSES.iter().zip(&LIVE_PER_CLASS) {
        let mut hs = Vec::new();
        for _ in 0..n {
            hs.push(slab.alloc_bytes(size as usize).expect("alloc"));
        }
        // Free a third and allocate again: later lives of the same slots.
        for h in hs.iter_mut().step_by(3) {
            slab.free(*h).expect("free");
            reg.stale.push(h.raw());
            *h = slab.alloc_bytes(size as usize).expect("realloc");
        }
        for h in hs {
            let bytes = stamp(size as usize, rng.next_u64());
            slab.write_bytes(h, 0, &bytes).expect("stamp");
            reg.live.insert(h.raw().to_bytes(), bytes);
            reg.order.push(h.raw());
        }
    }
    // Typed values and slices are slots like any other.
    let typed = [
        slab.alloc(0x1122_3344_5566_7788u64).unwrap().raw(),
        slab.alloc([9u8; 48]).unwrap().raw(),
        slab.alloc([5u64; 16]).unwrap().raw(),
        slab.alloc(7u128).unwrap().raw(),
        slab.alloc_slice::<u32>(100).unwrap().raw(),
        slab.alloc_slice::<u64>(3).unwrap().raw(),
    ];
    for h in typed {
        let cap = slab.capacity(h).unwrap();
        let bytes = stamp(cap, rng.next_u64());
        slab.write_bytes(common::whole(h), 0, &bytes).unwrap();
        reg.live.insert(h.to_bytes(), bytes);
        reg.order.push(h);
    }
    // Slots of earlier lives that stay free.
    for &size in &CLASSES {
        for _ in 0..5 {
            let h = slab.alloc_bytes(size as usize).unwrap();
            slab.free(h).unwrap();
            reg.stale.push(h.raw());
        }
    }
    slab.trim().unwrap();
    reg
}

/// One forged handle.
fn forge(rng: &mut XorShift, slab: &Slab, reg: &Registry, t: &mut Tally) -> SlotRef {
    let seg = slab.segment_id();
    let stats = slab.stats();
    match rng.below(100) {
        // Random bytes.
        0..25 => {
            t.add("forged:random", 1);
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
            b[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
            SlotRef::from_bytes(b)
        }
        // Random, with this segment's id.
        25..50 => {
            t.add("forged:random-with-segment", 1);
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
            b[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
            b[..4].copy_from_slice(&seg.to_ne_bytes());
            SlotRef::from_bytes(b)
        }
        // Well-shaped: a class, extent and index that exist (or just past),
        // any generation.
        50..70 => {
            t.add("forged:well-shaped", 1);
            let c = rng.below(CLASSES.len() as u64 + 1) as usize;
            let extents = stats.classes.get(c).map(|s| s.extents).unwrap_or(1) as u64;
            let slots = stats.classes.get(c).map(|s| s.slots).unwrap_or(1);
            let generation = match rng.below(3) {
                0 => 1 + rng.below(4) as u32,
                1 => rng.next_u64() as u32,
                _ => pick(rng, &[0, u32::MAX]),
            };
            make(
                seg,
                rng.below(slots + 2) as u32,
                generation,
                c as u8,
                rng.below(extents + 1) as u8,
                0,
            )
        }
        // A real handle (live or of an earlier life) with one field changed.
        70..99 => {
            let base = if rng.below(4) == 0 {
                pick(rng, &reg.stale)
            } else {
                pick(rng, &reg.order)
            };
            let (s, i, g, c, e, r) = fields(&base);
            let d = |rng: &mut XorShift| if rng.below(2) == 0 { 1u32 } else { u32::MAX };
            match rng.below(6) {
                0 => {
                    t.add("forged:mutated-segment", 1);
                    make(s ^ (1 + rng.below(u32::MAX as u64) as u32), i, g, c, e, r)
                }
                1 => {
                    t.add("forged:mutated-index", 1);
                    let i2 = match rng.below(5) {
                        0 => i.wrapping_add(d(rng)),
                        4 => 0xff_ffff,
                        1 => rng.below(1 << 24) as u32,
                        2 => i | (1 << (24 + rng.below(8))),
                        _ => rng.next_u64() as u32,
                    };
                    make(s, i2, g, c, e, r)
                }
                2 => {
                    t.add("forged:mutated-generation", 1);
                    let g2 = match rng.below(4) {
                        0 => g.wrapping_add(d(rng)),
                        1 => 0,
                        2 => g.wrapping_add(2 + rng.below(3) as u32),
                        _ => rng.next_u64() as u32,
                    };
                    make(s, i, g2, c, e, r)
                }
                3 => {
                    t.add("forged:mutated-class", 1);
                    let c2 = match rng.below(2) {
                        0 => c.wrapping_add(d(rng) as u8),
                        _ => rng.next_u64() as u8,
                    };
                    make(s, i, g, c2, e, r)
                }
                4 => {
                    t.add("forged:mutated-extent", 1);
                    let e2 = match rng.below(3) {
                        0 => e.wrapping_add(d(rng) as u8),
                        1 => 64 + rng.below(192) as u8,
                        _ => rng.next_u64() as u8,
                    };
                    make(s, i, g, c, e2, r)
                }
                _ => {
                    t.add("forged:mutated-reserved", 1);
                    make(s, i, g, c, e, 1 + rng.below(u16::MAX as u64) as u16)
                }
            }
        }
        // An exact copy of a live handle, on purpose.
        _ => {
            t.add("forged:copy-of-live", 1);
            t.add("on-purpose:copies", 1);
            pick(rng, &reg.order)
        }
    }
}

/// The run's state: the slab, the model, the tally and the violations.
struct Run<'a> {
    slab: &'a Slab,
    reg: Registry,
    t: Tally,
    violations: Vec<String>,
}

impl Run<'_> {
    fn real(&self, h: &SlotRef) -> bool {
        self.reg.live.contains_key(&h.to_bytes())
    }

    fn mark_hit(&mut self, h: &SlotRef) {
        let (_, i, _, c, e, _) = fields(h);
        self.reg.hit.insert((c as usize, e, i));
        self.t.add("hits:real-slot-ops", 1);
    }

    /// Records `op`'s outcome; a success on a handle that is not live is a
    /// violation. Returns whether it succeeded on a real handle.
    fn judge<T>(&mut self, op: &str, h: &SlotRef, r: &Result<T, Error>) -> bool {
        self.t.add(format!("{op}:{}", outcome(r)), 1);
        match r {
            Ok(_) if self.real(h) => {
                self.mark_hit(h);
                true
            }
            Ok(_) => {
                self.violations.push(format!(
                    "{op} succeeded through {h:?}, which is no live handle"
                ));
                false
            }
            Err(_) => false,
        }
    }

    fn model(&self, h: &SlotRef) -> &[u8] {
        &self.reg.live[&h.to_bytes()]
    }

    fn expect_bytes(&mut self, op: &str, h: &SlotRef, off: usize, got: &[u8]) {
        let want = &self.model(h)[off..off + got.len()];
        if want != got {
            self.violations.push(format!(
                "{op} through {h:?} at {off}: read other bytes than were written"
            ));
        }
    }

    fn store(&mut self, h: &SlotRef, off: usize, bytes: &[u8]) {
        let m = self.reg.live.get_mut(&h.to_bytes()).expect("real");
        m[off..off + bytes.len()].copy_from_slice(bytes);
    }

    fn bytes_ops(&mut self, h: SlotRef, rng: &mut XorShift) {
        let slab = self.slab;
        let cap = slab.capacity(h);
        self.t.add(format!("capacity:{}", outcome(&cap)), 1);
        match (&cap, self.real(&h)) {
            (Ok(c), true) => {
                self.mark_hit(&h);
                if *c != self.model(&h).len() {
                    self.violations.push(format!("capacity of {h:?} is {c}"));
                }
            }
            (Ok(c), false) => self.violations.push(format!(
                "capacity answered {c} for {h:?}, which is not live"
            )),
            (Err(_), _) => {}
        }
        let size = CLASSES.iter().copied().max().unwrap() as usize;
        let off = match rng.below(4) {
            0 => 0,
            1 => rng.below(size as u64) as usize,
            2 => rng.below(64) as usize,
            _ => usize::MAX - rng.below(64) as usize,
        };
        let len = match rng.below(3) {
            0 => rng.below(16) as usize,
            1 => rng.below(size as u64 + 8) as usize,
            _ => 8,
        };
        let mut buf = vec![0u8; len];
        let r = slab.read_bytes(common::whole(h), off, &mut buf);
        if self.judge("read_bytes", &h, &r) {
            self.expect_bytes("read_bytes", &h, off, &buf);
        }
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let r = slab.write_bytes(common::whole(h), off, &data);
        if self.judge("write_bytes", &h, &r) {
            self.store(&h, off, &data);
        }
        let r = slab.with_bytes(common::whole(h), |b| b.to_vec());
        if self.judge("with_bytes", &h, &r) {
            let got = r.unwrap();
            self.expect_bytes("with_bytes", &h, 0, &got);
        }
        let flip = rng.next_u64() as u8 | 1;
        let mut after = None;
        let r = slab.update_bytes(common::whole(h), |b| {
            b[0] ^= flip;
            after = Some(b.to_vec());
        });
        if self.judge("update_bytes", &h, &r) {
            let after = after.expect("ran");
            self.store(&h, 0, &after);
        }
    }

    fn typed_ops<T: Pod + Debug + PartialEq>(
        &mut self,
        h: SlotRef,
        name: &str,
        rng: &mut XorShift,
    ) {
        let slab = self.slab;
        let th = Handle::<T>::from_raw(h);
        let r = slab.read(th);
        if self.judge(&format!("read<{name}>"), &h, &r) {
            let v = r.unwrap();
            self.expect_bytes("read", &h, 0, bytemuck::bytes_of(&v));
        }
        let mut v = T::zeroed();
        for b in bytemuck::bytes_of_mut(&mut v) {
            *b = rng.next_u64() as u8;
        }
        let r = slab.write(th, v);
        if self.judge(&format!("write<{name}>"), &h, &r) {
            self.store(&h, 0, bytemuck::bytes_of(&v));
        }
        let mut after = None;
        let r = slab.update(th, |x| {
            bytemuck::bytes_of_mut(x)[0] ^= 0x5a;
            after = Some(*x);
        });
        if self.judge(&format!("update<{name}>"), &h, &r) {
            self.store(&h, 0, bytemuck::bytes_of(&after.expect("ran")));
        }
    }

    fn slice_ops<T: Pod + Debug + PartialEq>(
        &mut self,
        h: SlotRef,
        name: &str,
        rng: &mut XorShift,
        huge_indices: bool,
    ) {
        let slab = self.slab;
        let size = size_of::<T>() as u64;
        let cap = CLASSES[CLASSES.len() - 1] / size;
        let len: u64 = match rng.below(6) {
            0 => rng.below(4),
            1 => rng.below(2 * cap + 2),
            2 => u64::MAX,
            3 => 1 << 62,
            4 => (1 << 61) + 3,
            _ => 64 / size,
        };
        let mut raw = [0u8; 24];
        raw[..16].copy_from_slice(&h.to_bytes());
        raw[16..].copy_from_slice(&len.to_ne_bytes());
        let s: SliceHandle<T> = bytemuck::cast(raw);
        let pick_index = |rng: &mut XorShift| -> usize {
            let small = rng.below(len.clamp(1, 4 * cap)) as usize;
            if !huge_indices {
                return small;
            }
            match rng.below(5) {
                0 => usize::MAX - rng.below(4) as usize,
                1 => (usize::MAX / size as usize).saturating_add(1 + rng.below(4) as usize),
                2 => len.saturating_sub(1) as usize,
                3 => len as usize,
                _ => small,
            }
        };
        let at = |i: usize| (i as u64).checked_mul(size);
        let i = pick_index(rng);
        let r = slab.get(s, i);
        if self.judge(&format!("get<{name}>"), &h, &r) {
            match at(i) {
                Some(off) if (i as u64) < len => {
                    let v = r.unwrap();
                    self.expect_bytes("get", &h, off as usize, bytemuck::bytes_of(&v));
                }
                _ => self
                    .violations
                    .push(format!("get({i}) of a {len}-element slice succeeded")),
            }
        }
        let i = pick_index(rng);
        let mut v = T::zeroed();
        for b in bytemuck::bytes_of_mut(&mut v) {
            *b = rng.next_u64() as u8;
        }
        let r = slab.set(s, i, v);
        if self.judge(&format!("set<{name}>"), &h, &r) {
            match at(i) {
                Some(off) if (i as u64) < len => {
                    self.store(&h, off as usize, bytemuck::bytes_of(&v));
                }
                _ => self
                    .violations
                    .push(format!("set({i}) of a {len}-element slice succeeded")),
            }
        }
        let n = rng.below(len.min(64) + 2) as usize;
        let mut dst = vec![T::zeroed(); n];
        let r = slab.read_into(s, &mut dst);
        if self.judge(&format!("read_into<{name}>"), &h, &r) {
            self.expect_bytes("read_into", &h, 0, bytemuck::cast_slice(&dst));
            if n as u64 > len {
                self.violations.push(format!(
                    "read_into of {n} from a {len}-element slice succeeded"
                ));
            }
        }
        let src: Vec<T> = (0..n)
            .map(|_| {
                let mut v = T::zeroed();
                for b in bytemuck::bytes_of_mut(&mut v) {
                    *b = rng.next_u64() as u8;
                }
                v
            })
            .collect();
        let r = slab.write_from(s, &src);
        if self.judge(&format!("write_from<{name}>"), &h, &r) {
            self.store(&h, 0, bytemuck::cast_slice(&src));
            if n as u64 > len {
                self.violations.push(format!(
                    "write_from of {n} into a {len}-element slice succeeded"
                ));
            }
        }
    }

    fn ownership_ops(&mut self, h: SlotRef, rng: &mut XorShift) {
        let slab = self.slab;
        let r = slab.persist(h);
        self.judge("persist", &h, &r);
        let r = slab.adopt(h);
        self.judge("adopt", &h, &r);
        // Frees of real handles empty the registry; forged copies of live
        // handles are only freed now and then, and never below 300 left.
        if !self.real(&h) || (rng.below(8) == 0 && self.reg.order.len() > 300) {
            let r = slab.free(h);
            if self.judge("free", &h, &r) {
                self.reg.live.remove(&h.to_bytes());
                self.reg.order.retain(|x| *x != h);
                self.reg.stale.push(h);
                self.t.add("on-purpose:frees-of-live-slots", 1);
            }
        }
    }

    fn all_ops(&mut self, h: SlotRef, rng: &mut XorShift, huge_indices: bool) {
        self.bytes_ops(h, rng);
        self.typed_ops::<u64>(h, "u64", rng);
        self.typed_ops::<[u8; 48]>(h, "[u8;48]", rng);
        self.typed_ops::<[u64; 16]>(h, "[u64;16]", rng);
        self.typed_ops::<u128>(h, "u128", rng);
        self.slice_ops::<u8>(h, "u8", rng, huge_indices);
        self.slice_ops::<u32>(h, "u32", rng, huge_indices);
        self.slice_ops::<u64>(h, "u64", rng, huge_indices);
        self.ownership_ops(h, rng);
    }
}

/// File offsets of a slot's metadata word and data.
fn slot_span(
    extents: &[Extent],
    class: usize,
    extent: u8,
    index: u32,
) -> Option<(usize, usize, usize)> {
    let x = extents
        .iter()
        .find(|x| x.class == class && x.index == extent as usize)?;
    ((index as usize) < x.slots).then(|| {
        (
            x.meta_at(index as usize),
            x.data_at(index as usize),
            x.slot_size,
        )
    })
}

/// Byte ranges of `before` and `after` that differ, outside `allowed`.
fn unexpected_changes(before: &[u8], after: &[u8], allowed: &[(usize, usize)]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, (a, b)) in before.iter().zip(after).enumerate() {
        if a != b && !allowed.iter().any(|&(s, l)| i >= s && i < s + l) {
            out.push(i);
        }
    }
    out
}

static LAST_PANIC: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// The whole run, in the child: build, forge, check. Returns the tally.
fn forged_run(dir: &Path, handles: u64, seed: u64, huge_indices: bool) -> (Tally, Vec<String>) {
    let path = dir.join("forged.shm");
    let slab = Slab::builder()
        .classes(&CLASSES)
        .initial_size(4 << 20)
        .create(&path)
        .expect("create");
    let mut rng = XorShift::new(seed);
    let reg = populate(&slab, &mut rng);
    let before = std::fs::read(&path).expect("snapshot");
    let mut run = Run {
        slab: &slab,
        reg,
        t: Tally::default(),
        violations: Vec::new(),
    };
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text = format!("{info}");
        if known_bug(&text).is_none() {
            eprintln!("panic: {text}");
        }
        *LAST_PANIC.lock().unwrap() = format!("at {at}");
    }));
    let started = Instant::now();
    for n in 0..handles {
        let h = forge(&mut rng, &slab, &run.reg, &mut run.t);
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run.all_ops(h, &mut rng, huge_indices);
        }));
        if let Err(p) = r {
            let msg = format!("{} ({})", panic_text(&*p), LAST_PANIC.lock().unwrap());
            if known_bug(&msg).is_some() {
                // Reported, with its own ignored test; counted here.
                run.t.add("known-bug:panics-index-2^24-1", 1);
                continue;
            }
            run.t.add("outcome:panic", 1);
            if run
                .violations
                .iter()
                .filter(|v| v.starts_with("panic"))
                .count()
                < 10
            {
                run.violations
                    .push(format!("panic with handle #{n} {h:?}: {msg}"));
            }
        }
    }
    let elapsed = started.elapsed();
    slab.trim().expect("trim");

    // Every live slot holds what the registry says.
    let mut t = run.t;
    let mut violations = run.violations;
    for (key, want) in &run.reg.live {
        let h = SlotRef::from_bytes(*key);
        let mut got = vec![0u8; want.len()];
        match slab.read_bytes(common::whole(h), 0, &mut got) {
            Ok(()) if &got == want => t.add("final:stamp-intact", 1),
            Ok(()) => violations.push(format!("live slot {h:?} lost its bytes")),
            Err(e) => violations.push(format!("live slot {h:?} unreadable: {e}")),
        }
    }
    let report = slab.check().expect("check");
    if !report.is_consistent() {
        violations.push(format!("check: {:?}", report.findings));
    }
    // Nothing outside the slots really hit changed (nor the class words a
    // free moves, nor the growth and roots locks' progress words, header
    // bytes 160..176, which every taking of those locks bumps).
    let after = std::fs::read(&path).expect("snapshot");
    let ext = extents(&after);
    let mut allowed: Vec<(usize, usize)> = (0..CLASSES.len())
        .map(|c| (class_entry(c), CLS_EXTENTS))
        .collect();
    allowed.push((160, 16));
    for &(c, e, i) in &run.reg.hit {
        if let Some((m, d, len)) = slot_span(&ext, c, e, i) {
            allowed.push((m, 8));
            allowed.push((d, len));
        }
    }
    let changed = unexpected_changes(&before, &after, &allowed);
    if before.len() != after.len() || !changed.is_empty() {
        violations.push(format!(
            "the file changed outside the slots really hit: {} bytes, first at {:?} (length {} -> {})",
            changed.len(),
            changed.first(),
            before.len(),
            after.len()
        ));
    }
    t.add("final:slots-hit", run.reg.hit.len() as u64);
    t.add("final:live-slots", run.reg.live.len() as u64);
    t.add(
        format!("time:ms-for-{handles}-handles"),
        elapsed.as_millis() as u64,
    );
    drop(slab);
    (t, violations)
}

fn run_in_child(test: &str, huge_indices: bool) {
    let handles = env_u64("SHMSLAB_FORGED_HANDLES", DEFAULT_HANDLES);
    let seed = env_u64("SHMSLAB_FORGED_SEED", DEFAULT_SEED);
    let dir = common::live::segment_dir();
    let started = Instant::now();
    let out = common::run_child(
        test,
        ROLE,
        &[
            dir.path().to_str().unwrap(),
            &handles.to_string(),
            &seed.to_string(),
            if huge_indices { "huge" } else { "normal" },
        ],
        Duration::from_secs(900),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut tally = Tally::default();
    let mut violations = Vec::new();
    for (k, p) in messages(&stdout) {
        match k.as_str() {
            "tally" => tally.merge(&Tally::decode(&p)),
            "violation" => violations.push(p),
            _ => {}
        }
    }
    println!(
        "{}",
        tally.render(&format!(
            "forged handles: {handles} handles (seed {seed:#x}), each through every operation, in {:.1?}",
            started.elapsed()
        ))
    );
    common::assert_child_succeeded(&out);
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert_eq!(tally.get("outcome:panic"), 0);
    assert!(tally.sum_prefix("forged:") >= handles);
}

fn child_part() -> bool {
    let Some(args) = common::child_args(ROLE) else {
        return false;
    };
    let (handles, seed) = (args[1].parse().unwrap(), args[2].parse().unwrap());
    let (tally, violations) = forged_run(Path::new(&args[0]), handles, seed, args[3] == "huge");
    for v in violations.iter().take(200) {
        say("violation", v.replace('\n', " "));
    }
    say("tally", tally.encode());
    true
}

#[test]
fn forged_handles_fail_or_reach_exactly_the_live_slot_they_name() {
    if child_part() {
        return;
    }
    run_in_child(
        "forged_handles_fail_or_reach_exactly_the_live_slot_they_name",
        false,
    );
}

/// The same run with slice indices near `usize::MAX / size_of::<T>()` and
/// forged lengths up to `u64::MAX`.
#[test]
fn forged_slices_with_huge_lengths_and_indices_fail_cleanly() {
    if child_part() {
        return;
    }
    run_in_child(
        "forged_slices_with_huge_lengths_and_indices_fail_cleanly",
        true,
    );
}

fn scratch_slab() -> (tempfile::TempDir, Slab) {
    let (dir, _, slab) = common::live::segment_with("s.shm", Slab::builder().classes(&CLASSES));
    (dir, slab)
}

/// A slice handle with a forged length: `index * size_of::<T>()` must not
/// wrap around to an element that is not `index`.
#[test]
fn a_slice_index_whose_offset_overflows_is_out_of_bounds() {
    let (_dir, slab) = scratch_slab();
    let real = slab.alloc_slice::<u64>(4).unwrap();
    slab.write_from(real, &[10, 11, 12, 13]).unwrap();
    let mut raw: [u8; 24] = bytemuck::cast(real);
    raw[16..].copy_from_slice(&u64::MAX.to_ne_bytes());
    let forged: SliceHandle<u64> = bytemuck::cast(raw);
    // (2^61 + 1) * 8 = 2^64 + 8, which wraps to 8: element 1.
    let index = (1usize << 61) + 1;
    let got = std::panic::catch_unwind(AssertUnwindSafe(|| slab.get(forged, index)));
    match got {
        Ok(Err(_)) => {}
        Ok(Ok(v)) => panic!("get({index}) returned {v} (element 1) instead of an error"),
        Err(p) => panic!("get({index}) panicked: {}", panic_text(&*p)),
    }
    let set = std::panic::catch_unwind(AssertUnwindSafe(|| slab.set(forged, index, 99)));
    assert!(matches!(set, Ok(Err(_))), "set({index}) must be an error");
    assert_eq!(slab.get(real, 1).unwrap(), 11, "element 1 was overwritten");
}

/// `capacity` checks that the handle names a slot, but not that it is the
/// slot's current life: a freed handle still reports a capacity.
#[test]
fn capacity_of_a_handle_that_is_not_live_is_an_error() {
    let (_dir, slab) = scratch_slab();
    let h = slab.alloc_bytes(100).unwrap();
    slab.free(h).unwrap();
    assert!(
        matches!(slab.capacity(h), Err(Error::StaleHandle { .. })),
        "capacity of a freed handle: {:?}",
        slab.capacity(h)
    );
    let (s, i, g, c, e, r) = fields(&h.raw());
    let never = make(s, i + 1, g + 7, c, e, r);
    assert!(
        slab.capacity(never).is_err(),
        "capacity of a never-allocated slot: {:?}",
        slab.capacity(never)
    );
}

/// Index 2^24 - 1 fits the handle's 24-bit index field, but names no slot
/// (no extent has that many): it must be `InvalidHandle`, not a panic.
#[test]
fn a_handle_whose_index_is_the_largest_24_bit_value_is_invalid() {
    let (_dir, slab) = scratch_slab();
    let real = slab.alloc_bytes(10).unwrap();
    let (s, _, g, c, _, r) = fields(&real.raw());
    for extent in [0u8, 63] {
        let forged = make(s, 0xff_ffff, g, c, extent, r);
        let got = std::panic::catch_unwind(AssertUnwindSafe(|| {
            slab.read_bytes(common::whole(forged), 0, &mut [0u8; 8])
        }));
        match got {
            Ok(Err(Error::InvalidHandle { .. })) => {}
            Ok(other) => panic!("extent {extent}: {other:?}"),
            Err(p) => panic!("extent {extent}: panicked: {}", panic_text(&*p)),
        }
    }
}
