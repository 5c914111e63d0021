//! The JSON documents the commands print with `--json`, and the facts both
//! the JSON and the text output share (per-class sums).
//!
//! Field names are part of the tool's interface: scripts read them.

use crate::Failure;
use serde_json::{Value, json};
use shmslab::{ClassCheck, PeerInfo, ReclaimReport, SlotRef, Snapshot};
use std::path::Path;

/// Slots that are allocated or sitting in some process's cache.
pub fn in_use(c: &ClassCheck) -> u64 {
    c.allocated + c.cached
}

/// Slots anyone can allocate: on the free list, or never used.
pub fn available(c: &ClassCheck) -> u64 {
    c.free + c.fresh
}

/// The slot size of the class a root's handle names (None if the class does
/// not exist: the checker reports that root).
pub fn root_slot_size(snap: &Snapshot, h: &SlotRef) -> Option<u64> {
    snap.classes.get(h.parts().class).map(|c| c.slot_size)
}

fn findings_json(snap: &Snapshot) -> Value {
    snap.findings
        .iter()
        .map(|f| json!({ "location": f.location, "problem": f.problem }))
        .collect()
}

fn notes_json(snap: &Snapshot) -> Value {
    snap.notes
        .iter()
        .map(|n| json!({ "location": n.location, "note": n.problem }))
        .collect()
}

/// `shmslab inspect --json`.
pub fn inspect_json(snap: &Snapshot) -> Value {
    let classes: Vec<Value> = snap
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "class": i,
                "slot_size": c.slot_size,
                "extents": c.extents,
                "slots": c.slots,
                "allocated": c.allocated,
                "cached": c.cached,
                "in_use": in_use(c),
                "free": available(c),
                "free_listed": c.free,
                "fresh": c.fresh,
                "owned_by_dead": c.owned_by_dead,
                "retired": c.retired,
                "bytes": c.slots.saturating_mul(c.slot_size),
            })
        })
        .collect();
    let roots: Vec<Value> = snap
        .roots
        .iter()
        .map(|r| {
            let h = &r.handle;
            json!({
                "name": r.name,
                "fingerprint": {
                    "size": r.fingerprint.size,
                    "align": r.fingerprint.align,
                    "schema": format!("{:#018x}", r.fingerprint.schema),
                },
                "handle": {
                    "hex": crate::hex(&h.to_bytes()),
                    "segment_id": h.parts().segment_id,
                    "class": h.parts().class,
                    "extent": h.parts().extent,
                    "index": h.parts().index,
                    "generation": h.parts().generation,
                },
                "slot_size": root_slot_size(snap, &r.handle),
            })
        })
        .collect();
    let channels: Vec<Value> = snap
        .channels
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "handle": crate::hex(&c.handle.to_bytes()),
                "value_size": c.value_size,
                "capacity": c.capacity,
                "queued": c.queued,
                "in_flight": c.in_flight,
                "receivers": c.receivers.iter().map(|r| json!({
                    "row": r.row,
                    "token": format!("{:#018x}", r.token),
                    "alive": r.alive,
                    "in_flight": r.in_flight,
                })).collect::<Vec<_>>(),
                "sent": c.sent,
                "acked": c.acked,
                "redelivered": c.redelivered,
                "closed": c.closed,
            })
        })
        .collect();
    let peers: Vec<Value> = snap
        .peers
        .iter()
        .map(|p| {
            json!({
                "row": p.row,
                "pid": p.pid,
                "alive": p.alive,
                "slots_owned": p.slots_owned,
            })
        })
        .collect();
    json!({
        "path": snap.path.display().to_string(),
        "format_version": snap.format_version,
        "segment_id": snap.segment_id,
        "segment_id_hex": format!("{:#010x}", snap.segment_id),
        "page_size": snap.page_size,
        "file_size": snap.file_size,
        "current_size": snap.current_size,
        "data_start": snap.data_start,
        "max_size": snap.max_size,
        "generation": snap.generation,
        "classes": classes,
        "totals": {
            "extents": snap.classes.iter().map(|c| u64::from(c.extents)).sum::<u64>(),
            "slots": snap.classes.iter().map(|c| c.slots).sum::<u64>(),
            "allocated": snap.classes.iter().map(|c| c.allocated).sum::<u64>(),
            "cached": snap.classes.iter().map(|c| c.cached).sum::<u64>(),
            "free": snap.classes.iter().map(available).sum::<u64>(),
            "owned_by_dead": snap.classes.iter().map(|c| c.owned_by_dead).sum::<u64>(),
            "retired": snap.classes.iter().map(|c| c.retired).sum::<u64>(),
        },
        "roots": roots,
        "channels": channels,
        "peers": peers,
        "segment_owned": snap.segment_owned,
        "consistent": snap.is_consistent(),
        "findings": findings_json(snap),
        "notes": notes_json(snap),
    })
}

/// `shmslab check --json` on a segment that could be read.
pub fn check_json(path: &Path, snap: &Snapshot) -> Value {
    json!({
        "path": path.display().to_string(),
        "status": if snap.is_consistent() { "consistent" } else { "inconsistent" },
        "consistent": snap.is_consistent(),
        "findings": findings_json(snap),
        "notes": notes_json(snap),
        "summary": crate::text::check_summary(snap),
    })
}

/// `shmslab check --json` on a segment whose header is corrupt.
pub fn check_corrupt_json(path: &Path, f: &Failure) -> Value {
    json!({
        "path": path.display().to_string(),
        "status": "inconsistent",
        "consistent": false,
        "findings": [{ "location": "header", "problem": f.message }],
        "summary": "INCONSISTENT: the header is corrupt",
    })
}

/// A command's JSON when the file could not be read as a segment.
pub fn failure_json(path: &Path, f: &Failure) -> Value {
    json!({
        "path": path.display().to_string(),
        "status": "unreadable",
        "error": { "kind": f.kind, "message": f.message, "exit_code": f.code },
    })
}

/// `shmslab reclaim --json`.
pub fn reclaim_json(path: &Path, r: &ReclaimReport, dead: &[PeerInfo]) -> Value {
    json!({
        "path": path.display().to_string(),
        "peers": r.peers,
        "slots": r.slots,
        "kept_for_roots": r.kept_for_roots,
        "growth_repaired": r.growth_repaired,
        "retired": r.retired,
        "dead_before": dead
            .iter()
            .map(|p| json!({ "row": p.row, "pid": p.pid }))
            .collect::<Vec<_>>(),
    })
}
