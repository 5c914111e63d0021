//! Collecting repeated runs and printing the summary table (Markdown, so it
//! can be pasted into docs/BENCHMARKS.md as is).

use crate::runs::Alloc;
use std::fmt::Write as _;

/// How a figure is printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// nanoseconds
    Ns,
    /// microseconds
    Us,
    /// bytes, printed in MiB
    Bytes,
    /// a plain count
    Count,
    /// millions per second
    MPerS,
}

/// One allocator's cell of a row.
#[derive(Clone)]
pub enum Cell {
    /// One value per repetition.
    Samples(Vec<f64>),
    /// Not run, and why.
    Na(String),
}

/// A row of the table: one figure of one workload.
pub struct Row {
    /// "W1 ns/pair" etc.
    pub label: String,
    unit: Unit,
    lower_better: bool,
    cells: [Cell; ALLOCS],
    marks: [Option<String>; ALLOCS],
}

/// Columns: one per allocator.
const ALLOCS: usize = Alloc::ALL.len();

/// Median, min and max of samples.
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (med, s[0], s[n - 1])
}

fn fmt_val(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Ns | Unit::Us => {
            if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        }
        Unit::Bytes => format!("{:.1}", v / (1u64 << 20) as f64),
        Unit::Count => format!("{v:.0}"),
        Unit::MPerS => format!("{:.1}", v / 1e6),
    }
}

fn unit_name(unit: Unit) -> &'static str {
    match unit {
        Unit::Ns => "ns",
        Unit::Us => "µs",
        Unit::Bytes => "MiB",
        Unit::Count => "",
        Unit::MPerS => "M/s",
    }
}

/// "m× [lo..hi]", or "m×" when the range is empty.
pub fn fmt_ratio(m: f64, lo: f64, hi: f64) -> String {
    if (hi - lo).abs() < 0.005 {
        format!("{m:.2}×")
    } else {
        format!("{m:.2}× [{lo:.2}..{hi:.2}]")
    }
}

/// All rows, in the order first seen.
#[derive(Default)]
pub struct Table {
    /// The rows.
    pub rows: Vec<Row>,
}

impl Table {
    fn row(&mut self, label: &str, unit: Unit, lower_better: bool) -> &mut Row {
        if let Some(i) = self.rows.iter().position(|r| r.label == label) {
            return &mut self.rows[i];
        }
        self.rows.push(Row {
            label: label.to_string(),
            unit,
            lower_better,
            cells: std::array::from_fn(|_| Cell::Samples(Vec::new())),
            marks: std::array::from_fn(|_| None),
        });
        self.rows.last_mut().expect("just pushed")
    }

    /// Adds one repetition's value.
    pub fn add(&mut self, label: &str, unit: Unit, lower_better: bool, a: Alloc, v: f64) {
        let r = self.row(label, unit, lower_better);
        if let Cell::Samples(s) = &mut r.cells[a as usize] {
            s.push(v);
        }
    }

    /// Marks a cell as not applicable.
    pub fn na(&mut self, label: &str, unit: Unit, lower_better: bool, a: Alloc, why: &str) {
        let r = self.row(label, unit, lower_better);
        r.cells[a as usize] = Cell::Na(why.to_string());
    }

    /// Attaches a footnote to a cell that has samples.
    pub fn mark(&mut self, label: &str, unit: Unit, lower_better: bool, a: Alloc, note: &str) {
        let r = self.row(label, unit, lower_better);
        r.marks[a as usize] = Some(note.to_string());
    }

    /// The median of a cell, if it has samples.
    pub fn median(&self, label: &str, a: Alloc) -> Option<f64> {
        let r = self.rows.iter().find(|r| r.label == label)?;
        match &r.cells[a as usize] {
            Cell::Samples(s) if !s.is_empty() => Some(stats(s).0),
            _ => None,
        }
    }

    /// The ratio a ÷ b per repetition (the two ran moments apart, under the
    /// same conditions): median, min, max. Needs as many samples in both.
    pub fn paired(
        &self,
        label_a: &str,
        a: Alloc,
        label_b: &str,
        b: Alloc,
    ) -> Option<(f64, f64, f64)> {
        let (x, y) = (self.samples(label_a, a)?, self.samples(label_b, b)?);
        if x.len() != y.len() {
            return None;
        }
        let r: Vec<f64> = x.iter().zip(y).map(|(x, y)| x / y).collect();
        Some(stats(&r))
    }

    /// The samples of a cell.
    pub fn samples(&self, label: &str, a: Alloc) -> Option<&[f64]> {
        let r = self.rows.iter().find(|r| r.label == label)?;
        match &r.cells[a as usize] {
            Cell::Samples(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// The Markdown table: median [min..max] per allocator, and the
    /// per-repetition ratios shmslab ÷ each other allocator.
    pub fn markdown(&self) -> (String, Vec<String>) {
        let mut out = String::new();
        let mut notes: Vec<String> = Vec::new();
        // `Alloc::ALL` starts with shmslab; the others get a column and a
        // ratio column each.
        let others = &Alloc::ALL[1..];
        let mut head = String::from("| figure | better | shmslab median [min..max] |");
        let mut rule = String::from("|---|:-:|--:|");
        for a in others {
            let _ = write!(head, " {} |", a.name());
            rule.push_str("--:|");
        }
        for a in others {
            let _ = write!(head, " shmslab÷{} |", a.name());
            rule.push_str("--:|");
        }
        let _ = writeln!(out, "{head}");
        let _ = writeln!(out, "{rule}");
        for r in &self.rows {
            let unit = unit_name(r.unit);
            let label = if unit.is_empty() {
                r.label.clone()
            } else {
                format!("{} ({unit})", r.label)
            };
            let mut cols = Vec::new();
            let mut note_no = |why: &String| match notes.iter().position(|x| x == why) {
                Some(i) => i + 1,
                None => {
                    notes.push(why.clone());
                    notes.len()
                }
            };
            for (c, mark) in r.cells.iter().zip(&r.marks) {
                let mark = mark
                    .as_ref()
                    .map_or(String::new(), |m| format!("⁽{}⁾", note_no(m)));
                cols.push(
                    match c {
                        Cell::Samples(s) if s.is_empty() => "—".to_string(),
                        Cell::Samples(s) => {
                            let (m, lo, hi) = stats(s);
                            if s.len() == 1 || (lo == hi) {
                                fmt_val(r.unit, m)
                            } else {
                                format!(
                                    "{} [{}..{}]",
                                    fmt_val(r.unit, m),
                                    fmt_val(r.unit, lo),
                                    fmt_val(r.unit, hi)
                                )
                            }
                        }
                        Cell::Na(why) => format!("n/a⁽{}⁾", note_no(why)),
                    } + &mark,
                );
            }
            // The same number for every allocator: no ratio to speak of.
            let same = r.label.contains("requested");
            let ratio = |other: Alloc| match self.paired(&r.label, Alloc::Shm, &r.label, other) {
                Some((m, lo, hi)) if !same => fmt_ratio(m, lo, hi),
                _ => "—".to_string(),
            };
            let better = if r.lower_better { "lower" } else { "higher" };
            let mut line = format!("| {label} | {better} |");
            for c in &cols {
                let _ = write!(line, " {c} |");
            }
            for &a in others {
                let _ = write!(line, " {} |", ratio(a));
            }
            let _ = writeln!(out, "{line}");
        }
        (out, notes)
    }
}
