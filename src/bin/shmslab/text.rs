//! The human-readable output: aligned tables and one-line summaries.

use crate::report::{available, in_use, root_slot_size};
use shmslab::{PeerInfo, ReclaimReport, Snapshot};
use std::fmt::Write as _;
use std::path::Path;

/// How a column is aligned.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}
use Align::{Left, Right};

/// An aligned table, indented by two spaces, with a header row.
fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = columns.iter().map(|(h, _)| (*h).to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for ((cell, &(_, align)), &w) in row.iter().zip(columns).zip(&widths) {
            let _ = match align {
                Left => write!(line, "  {cell:<w$}"),
                Right => write!(line, "  {cell:>w$}"),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} {}", if n == 1 { "byte" } else { "bytes" });
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `[###.......]`: the share of `used` in `total`, ten cells. Any use shows
/// at least one `#`, and a class with room left at least one `.`.
pub fn occupancy_bar(used: u64, total: u64) -> String {
    const CELLS: u64 = 10;
    let filled = if total == 0 {
        0
    } else {
        let f = (used.min(total) as u128 * CELLS as u128 + total as u128 / 2) / total as u128;
        let mut f = f as u64;
        if used > 0 {
            f = f.max(1);
        }
        if used < total {
            f = f.min(CELLS - 1);
        }
        f
    };
    format!(
        "[{}{}]",
        "#".repeat(filled as usize),
        ".".repeat((CELLS - filled) as usize)
    )
}

fn percent(used: u64, total: u64) -> String {
    if total == 0 {
        return "-".into();
    }
    format!("{:.0}%", used as f64 * 100.0 / total as f64)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `shmslab inspect`.
pub fn inspect(snap: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "segment {}", snap.path.display());
    let header = [
        ("format version", snap.format_version.to_string()),
        ("segment id", format!("{:#010x}", snap.segment_id)),
        ("page size", snap.page_size.to_string()),
        (
            "file size",
            format!("{} ({} bytes)", human_bytes(snap.file_size), snap.file_size),
        ),
        (
            "current size",
            format!(
                "{} ({} bytes, end of the last extent)",
                human_bytes(snap.current_size),
                snap.current_size
            ),
        ),
        ("data start", format!("{} bytes", snap.data_start)),
        (
            "max size",
            if snap.max_size == 0 {
                "none".into()
            } else {
                format!("{} ({} bytes)", human_bytes(snap.max_size), snap.max_size)
            },
        ),
        ("generation", snap.generation.to_string()),
    ];
    for (k, v) in header {
        let _ = writeln!(out, "  {k:<15} {v}");
    }

    // Size classes.
    let _ = writeln!(out, "\nsize classes ({})", snap.classes.len());
    let mut rows: Vec<Vec<String>> = snap
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            vec![
                i.to_string(),
                c.slot_size.to_string(),
                c.extents.to_string(),
                c.slots.to_string(),
                c.allocated.to_string(),
                c.cached.to_string(),
                available(c).to_string(),
                format!("{}+{}", c.free, c.fresh),
                c.owned_by_dead.to_string(),
                human_bytes(c.slots.saturating_mul(c.slot_size)),
                format!(
                    "{} {}",
                    occupancy_bar(in_use(c), c.slots),
                    percent(in_use(c), c.slots)
                ),
            ]
        })
        .collect();
    let sum = |f: &dyn Fn(&shmslab::ClassCheck) -> u64| snap.classes.iter().map(f).sum::<u64>();
    let (slots, used) = (sum(&|c| c.slots), sum(&in_use));
    rows.push(vec![
        "total".into(),
        String::new(),
        sum(&|c| u64::from(c.extents)).to_string(),
        slots.to_string(),
        sum(&|c| c.allocated).to_string(),
        sum(&|c| c.cached).to_string(),
        sum(&available).to_string(),
        format!("{}+{}", sum(&|c| c.free), sum(&|c| c.fresh)),
        sum(&|c| c.owned_by_dead).to_string(),
        human_bytes(sum(&|c| c.slots.saturating_mul(c.slot_size))),
        format!("{} {}", occupancy_bar(used, slots), percent(used, slots)),
    ]);
    out.push_str(&table(
        &[
            ("class", Right),
            ("slot size", Right),
            ("extents", Right),
            ("slots", Right),
            ("allocated", Right),
            ("cached", Right),
            ("free", Right),
            ("(listed+fresh)", Left),
            ("dead", Right),
            ("bytes", Right),
            ("in use", Left),
        ],
        &rows,
    ));

    let _ = writeln!(
        out,
        "  free = on the free list + never used; dead = held by dead processes (reclaimable)"
    );
    let retired = sum(&|c| c.retired);
    if retired > 0 {
        let _ = writeln!(
            out,
            "  retired: {} out of use for good (their 2^32 - 1 generations were used)",
            plural(retired, "slot", "slots")
        );
    }

    // Roots.
    let _ = writeln!(out, "\nroots ({})", snap.roots.len());
    if snap.roots.is_empty() {
        let _ = writeln!(out, "  (none)");
    } else {
        let rows: Vec<Vec<String>> = snap
            .roots
            .iter()
            .map(|r| {
                let h = r.handle.parts();
                vec![
                    format!("{:?}", r.name),
                    format!(
                        "{}/{}/{:#018x}",
                        r.fingerprint.size, r.fingerprint.align, r.fingerprint.schema
                    ),
                    format!(
                        "class {} ext {} idx {} gen {}",
                        h.class, h.extent, h.index, h.generation
                    ),
                    root_slot_size(snap, &r.handle)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "?".into()),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                ("name", Left),
                ("type (size/align/schema)", Left),
                ("handle", Left),
                ("slot size", Right),
            ],
            &rows,
        ));
    }

    // Channels (only on a segment that has some).
    if !snap.channels.is_empty() {
        out.push_str(&channels(snap));
    }

    // Peers.
    let _ = writeln!(out, "\npeers ({})", snap.peers.len());
    if snap.peers.is_empty() {
        let _ = writeln!(out, "  (none attached)");
    } else {
        let rows: Vec<Vec<String>> = snap
            .peers
            .iter()
            .map(|p| {
                vec![
                    p.row.to_string(),
                    p.pid.to_string(),
                    if p.alive { "alive" } else { "dead" }.into(),
                    p.slots_owned.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                ("row", Right),
                ("pid", Right),
                ("state", Left),
                ("slots owned", Right),
            ],
            &rows,
        ));
    }
    let _ = writeln!(
        out,
        "  the segment itself owns {} (named roots, and data left by processes that detached)",
        plural(snap.segment_owned, "slot", "slots")
    );
    let dead: Vec<_> = snap.peers.iter().filter(|p| !p.alive).collect();
    if !dead.is_empty() {
        let held: u64 = dead.iter().map(|p| p.slots_owned).sum();
        let _ = writeln!(
            out,
            "  {} {} {}: `shmslab reclaim {}` frees them",
            plural(dead.len() as u64, "dead process", "dead processes"),
            if dead.len() == 1 { "holds" } else { "hold" },
            plural(held, "slot", "slots"),
            snap.path.display()
        );
    }

    // The check.
    let _ = writeln!(out);
    if snap.is_consistent() {
        let _ = writeln!(out, "check: consistent");
    } else {
        let in_use = if snap.peers.iter().any(|p| p.alive) {
            "; live processes are using it, so a problem may be an operation caught half-way"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "check: INCONSISTENT, {} (run `shmslab check {}` for all of them{in_use})",
            plural(snap.findings.len() as u64, "problem", "problems"),
            snap.path.display()
        );
        for f in snap.findings.iter().take(5) {
            let _ = writeln!(out, "  {f}");
        }
        if snap.findings.len() > 5 {
            let _ = writeln!(out, "  ...");
        }
    }
    // Notes (a repair made or due) are not findings: shown either way.
    for n in &snap.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    out
}

/// The channels table of `shmslab inspect`.
fn channels(snap: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nchannels ({})", snap.channels.len());
    let rows: Vec<Vec<String>> = snap
        .channels
        .iter()
        .map(|c| {
            let receivers = if c.receivers.is_empty() {
                "-".to_string()
            } else {
                c.receivers
                    .iter()
                    .map(|r| {
                        let who = match r.row {
                            Some(row) => format!("row {row}"),
                            None => format!("token {:#x}", r.token),
                        };
                        let dead = if r.alive { "" } else { " (dead)" };
                        format!("{who}{dead}: {}", r.in_flight)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                format!("{:?}", c.name),
                c.capacity.to_string(),
                c.queued.to_string(),
                c.in_flight.to_string(),
                c.sent.to_string(),
                c.acked.to_string(),
                c.redelivered.to_string(),
                if c.closed { "yes" } else { "no" }.into(),
                receivers,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            ("name", Left),
            ("capacity", Right),
            ("queued", Right),
            ("in flight", Right),
            ("sent", Right),
            ("acked", Right),
            ("redelivered", Right),
            ("closed", Left),
            ("in flight by receiver (peer row)", Left),
        ],
        &rows,
    ));
    let stranded: u64 = snap
        .channels
        .iter()
        .flat_map(|c| &c.receivers)
        .filter(|r| !r.alive)
        .map(|r| r.in_flight)
        .sum();
    if stranded > 0 {
        let _ = writeln!(
            out,
            "  {} in flight to dead receivers: the next receive that finds nothing queued, \
             or `shmslab reclaim {}`, puts {} back in the queue",
            plural(stranded, "message", "messages"),
            snap.path.display(),
            if stranded == 1 { "it" } else { "them" }
        );
    }
    out
}

/// The first line of each `--watch` frame.
pub fn watch_banner(frame: u64, count: Option<u64>, interval: f64) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let of = count.map(|n| format!("/{n}")).unwrap_or_default();
    format!(
        "shmslab inspect --watch: frame {frame}{of}, every {interval}s, {:02}:{:02}:{:02} UTC (Ctrl-C to stop)",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// The one-line verdict of `shmslab check`.
pub fn check_summary(snap: &Snapshot) -> String {
    let slots: u64 = snap.classes.iter().map(|c| c.slots).sum();
    let used: u64 = snap.classes.iter().map(in_use).sum();
    let dead = snap.peers.iter().filter(|p| !p.alive).count() as u64;
    let facts = format!(
        "{}, {} ({} in use), {}, {} ({} dead)",
        plural(snap.classes.len() as u64, "class", "classes"),
        plural(slots, "slot", "slots"),
        used,
        plural(snap.roots.len() as u64, "root", "roots"),
        plural(snap.peers.len() as u64, "peer", "peers"),
        dead
    );
    if snap.is_consistent() {
        format!("consistent: {facts}")
    } else {
        let mut places: Vec<&str> = Vec::new();
        for f in &snap.findings {
            if !places.contains(&f.location.as_str()) {
                places.push(&f.location);
            }
        }
        format!(
            "INCONSISTENT: {} in {}; {facts}",
            plural(snap.findings.len() as u64, "problem", "problems"),
            places.join(", ")
        )
    }
}

/// `shmslab check` on a segment that could be read.
pub fn check(snap: &Snapshot) -> String {
    let mut out = String::new();
    for f in &snap.findings {
        let _ = writeln!(out, "{f}");
    }
    for n in &snap.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(out, "{}: {}", snap.path.display(), check_summary(snap));
    out
}

/// `shmslab check` on a segment whose header is corrupt.
pub fn check_corrupt(path: &Path, message: &str) -> String {
    format!(
        "header: {message}\n{}: INCONSISTENT: the header is corrupt\n",
        path.display()
    )
}

/// `shmslab reclaim`.
pub fn reclaim(path: &Path, r: &ReclaimReport, dead: &[PeerInfo]) -> String {
    let mut out = String::new();
    if r.peers == 0 {
        let _ = writeln!(
            out,
            "{}: no dead processes: reclaimed 0 peers, freed 0 slots",
            path.display()
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{}: reclaimed {}: freed {}, kept {} for named roots",
        path.display(),
        plural(r.peers as u64, "dead peer", "dead peers"),
        plural(r.slots, "slot", "slots"),
        r.kept_for_roots
    );
    if r.retired > 0 {
        let _ = writeln!(
            out,
            "  retired {} whose generations were used up",
            plural(r.retired, "slot", "slots")
        );
    }
    for p in dead {
        let _ = writeln!(out, "  peer row {} (pid {}) was dead", p.row, p.pid);
    }
    out
}
