//! `shmslab`: look into a shmslab segment file from the command line.
//!
//! - `shmslab inspect FILE` shows the header, the size classes, the named
//!   roots, the channels among them and the attached processes. It maps the
//!   file read-only, joins no peer table and takes no lock, so it never
//!   changes the file. `--json` prints the same as JSON; `--watch` redraws
//!   every second.
//! - `shmslab check FILE` runs the consistency checker (read-only too) and
//!   prints every problem as `location: problem`. Taking no lock, it checks
//!   a channel's shape but not the slots its messages carry
//!   (`Slab::check` does).
//! - `shmslab reclaim FILE` attaches, frees the slots of dead processes and
//!   detaches.
//!
//! Exit codes: 0 success (and, for `check`, a consistent segment); 1 an
//! inconsistent or corrupt segment, or an operation that failed; 2 a file
//! that cannot be read as a segment (missing, permission denied, empty, not
//! a segment, another format version or architecture, truncated) or a
//! usage error.

mod report;
mod text;

use clap::{Args, Parser, Subcommand};
use shmslab::{Error, Slab};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit code: success; for `check`, a consistent segment.
const EXIT_OK: u8 = 0;
/// Exit code: the segment is inconsistent or corrupt, or the operation failed.
const EXIT_INCONSISTENT: u8 = 1;
/// Exit code: the file cannot be read as a segment, or bad usage.
const EXIT_UNREADABLE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "shmslab",
    version,
    about = "Inspect, check and reclaim shmslab shared-memory segment files",
    after_help = "Exit codes: 0 ok (check: consistent), 1 inconsistent or corrupt segment \
                  or failed operation, 2 file not readable as a segment or bad usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show a segment's header, size classes, named roots, channels and peers.
    ///
    /// Read-only: maps the file with PROT_READ, takes no lock and registers no
    /// peer, so the file is never changed. On a segment other processes are
    /// changing, counts are each exact at some instant.
    Inspect(InspectArgs),
    /// Check a segment's consistency and print every problem found.
    ///
    /// Read-only, like inspect. Exit code 0: consistent; 1: inconsistent
    /// (or the header is corrupt); 2: not readable as a segment.
    Check(CheckArgs),
    /// Free the slots held by dead processes.
    ///
    /// Attaches to the segment as a peer (this needs read and write access),
    /// reclaims the rows and slots of every process that died while attached,
    /// reports what it freed, and detaches (which removes the file of a
    /// remove-when-last-detaches segment that no other process is attached to).
    Reclaim(ReclaimArgs),
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// The segment file.
    file: PathBuf,
    /// Print JSON instead of tables (with --watch: one JSON object per line).
    #[arg(long)]
    json: bool,
    /// Redraw every interval until Ctrl-C (or --count redraws).
    #[arg(long)]
    watch: bool,
    /// Stop after N redraws (implies --watch).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Seconds between redraws with --watch.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_interval)]
    interval: f64,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// The segment file.
    file: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ReclaimArgs {
    /// The segment file.
    file: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.01..=86_400.0).contains(&v) {
        return Err("the interval must be between 0.01 and 86400 seconds".into());
    }
    Ok(v)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Inspect(a) => inspect(a),
        Command::Check(a) => check(a),
        Command::Reclaim(a) => reclaim(a),
    };
    ExitCode::from(code)
}

/// Why a command could not do its work: the exit code, a short machine
/// readable kind, and one line for a person.
#[derive(Debug, Clone)]
struct Failure {
    code: u8,
    kind: &'static str,
    message: String,
}

/// What the command needs to do with the file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    ReadWrite,
}

impl Access {
    fn words(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::ReadWrite => "read and write",
        }
    }
}

fn unreadable(kind: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        code: EXIT_UNREADABLE,
        kind,
        message: message.into(),
    }
}

/// Looks at the path before the library opens it: a missing path, a
/// directory or a device/pipe gets a plain message (opening a FIFO would
/// block).
fn precheck(path: &Path, access: Access) -> Result<(), Failure> {
    match std::fs::metadata(path) {
        Err(e) => Err(io_failure("stat", &e, access)),
        Ok(m) if m.is_dir() => Err(unreadable(
            "not_a_file",
            "is a directory, not a segment file; give the path of the segment file",
        )),
        Ok(m) if !m.is_file() => Err(unreadable(
            "not_a_file",
            "is not a regular file (a device, pipe or socket); give the path of the segment file",
        )),
        Ok(_) => Ok(()),
    }
}

fn io_failure(op: &str, e: &std::io::Error, access: Access) -> Failure {
    match e.kind() {
        ErrorKind::NotFound => unreadable(
            "not_found",
            "no such file; check the path (a segment is made by the program that uses it, with Slab::builder().create)",
        ),
        ErrorKind::PermissionDenied => unreadable(
            "permission_denied",
            format!(
                "permission denied; run as a user who may {} the file (segments are created with mode 0600, for their owner only)",
                access.words()
            ),
        ),
        _ => unreadable(
            "io",
            format!("{op} failed: {e}; check the path and that the file is a segment"),
        ),
    }
}

/// Turns a library error into a [`Failure`]; the caller adds the path.
fn failure(err: &Error, access: Access) -> Failure {
    match err {
        Error::Io { op, source, .. } => io_failure(op, source, access),
        Error::EmptyFile { .. } => unreadable(
            "empty",
            "the file is empty, so it is not a shmslab segment (or its creator has not started writing it); check the path",
        ),
        Error::NotASegment { found } => unreadable(
            "not_a_segment",
            format!(
                "not a shmslab segment: it starts with {} instead of the shmslab magic; check the path",
                hex(found)
            ),
        ),
        Error::NotInitialized => unreadable(
            "not_initialized",
            "the segment is not initialised: its creator is still writing it or died while creating it; retry, or remove the file and create it again",
        ),
        Error::UnsupportedVersion { found, supported } => unreadable(
            "unsupported_version",
            format!(
                "segment format version {found}, but this shmslab reads version {supported}; use the shmslab tool of the version that wrote the segment"
            ),
        ),
        Error::WrongArchitecture { found, expected } => unreadable(
            "wrong_architecture",
            format!(
                "the segment was created for another architecture ({found}; this machine is {expected}); inspect it on a matching machine"
            ),
        ),
        Error::Truncated { expected, actual } => unreadable(
            "truncated",
            format!(
                "the segment is truncated: its header needs {expected} bytes but the file has {actual}; it was cut short, or is still being grown (retry)"
            ),
        ),
        Error::Corrupt { what } => Failure {
            code: EXIT_INCONSISTENT,
            kind: "corrupt",
            message: format!(
                "the segment is corrupt: {what}; its contents cannot be trusted: recreate it"
            ),
        },
        other => Failure {
            code: EXIT_INCONSISTENT,
            kind: "failed",
            message: format!("{other}"),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the segment at `path` read-only.
fn snapshot(path: &Path) -> Result<shmslab::Snapshot, Failure> {
    precheck(path, Access::Read)?;
    shmslab::inspect(path).map_err(|e| failure(&e, Access::Read))
}

/// One JSON document, indented for people (`--watch` prints one per line
/// instead).
fn pretty(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// Writes `s` to stdout. Returns false if stdout is gone (a closed pipe):
/// the caller stops quietly instead of panicking like `print!` would.
fn emit(s: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|_| out.flush())
        .is_ok()
}

/// Prints the failure as one line to stderr.
fn complain(path: &Path, f: &Failure) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "shmslab: error: {}: {}",
        path.display(),
        f.message
    );
}

fn inspect(a: &InspectArgs) -> u8 {
    let watch = a.watch || a.count.is_some();
    if !watch {
        return match snapshot(&a.file) {
            Ok(snap) => {
                let out = if a.json {
                    pretty(&report::inspect_json(&snap))
                } else {
                    text::inspect(&snap)
                };
                emit(&out);
                EXIT_OK
            }
            Err(f) => {
                complain(&a.file, &f);
                f.code
            }
        };
    }
    let interval = Duration::from_secs_f64(a.interval);
    let mut frame = 0u64;
    loop {
        frame += 1;
        let result = snapshot(&a.file);
        let code = match &result {
            Ok(_) => EXIT_OK,
            Err(f) => f.code,
        };
        let out = if a.json {
            match &result {
                Ok(snap) => report::inspect_json(snap).to_string() + "\n",
                Err(f) => report::failure_json(&a.file, f).to_string() + "\n",
            }
        } else {
            let body = match &result {
                Ok(snap) => text::inspect(snap),
                Err(f) => format!("shmslab: error: {}: {}\n", a.file.display(), f.message),
            };
            format!(
                "\x1b[2J\x1b[H{}\n\n{body}",
                text::watch_banner(frame, a.count, a.interval)
            )
        };
        if !emit(&out) {
            return code;
        }
        if a.count.is_some_and(|n| frame >= n) {
            return code;
        }
        std::thread::sleep(interval);
    }
}

/// How many times `check` reads a segment that live processes are using
/// before it believes an inconsistency, and the pause between reads.
const CHECK_READS: usize = 3;
const CHECK_PAUSE: Duration = Duration::from_millis(50);

/// Reads the segment for `check`. The read takes no lock, so on a segment
/// that live processes are changing it can catch an operation half-way
/// (a slot freed but not yet linked into its list, say); such a finding is
/// believed only if every one of [`CHECK_READS`] reads shows an
/// inconsistency.
fn check_snapshot(path: &Path) -> Result<shmslab::Snapshot, Failure> {
    let mut snap = snapshot(path)?;
    for _ in 1..CHECK_READS {
        if snap.is_consistent() || !snap.peers.iter().any(|p| p.alive) {
            break;
        }
        std::thread::sleep(CHECK_PAUSE);
        snap = snapshot(path)?;
    }
    Ok(snap)
}

fn check(a: &CheckArgs) -> u8 {
    let (code, out) = match check_snapshot(&a.file) {
        Ok(snap) => {
            let code = if snap.is_consistent() {
                EXIT_OK
            } else {
                EXIT_INCONSISTENT
            };
            let out = if a.json {
                pretty(&report::check_json(&a.file, &snap))
            } else {
                text::check(&snap)
            };
            (code, out)
        }
        Err(f) if f.kind == "corrupt" => {
            // A header that parses but cannot be right: an inconsistency,
            // reported like the checker's findings.
            let out = if a.json {
                pretty(&report::check_corrupt_json(&a.file, &f))
            } else {
                text::check_corrupt(&a.file, &f.message)
            };
            (f.code, out)
        }
        Err(f) => {
            complain(&a.file, &f);
            let out = if a.json {
                pretty(&report::failure_json(&a.file, &f))
            } else {
                String::new()
            };
            (f.code, out)
        }
    };
    emit(&out);
    code
}

fn reclaim(a: &ReclaimArgs) -> u8 {
    let path = &a.file;
    if let Err(f) = precheck(path, Access::ReadWrite) {
        complain(path, &f);
        return f.code;
    }
    let slab = match Slab::attach(path) {
        Ok(s) => s,
        Err(e) => {
            let f = failure(&e, Access::ReadWrite);
            complain(path, &f);
            return f.code;
        }
    };
    // Which rows are dead before reclaiming, to name them in the report.
    let dead: Vec<shmslab::PeerInfo> = slab
        .peers()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.alive && !p.is_self)
        .collect();
    let result = slab.reclaim_dead();
    // Detach cleanly before printing: attach registered this process as a
    // peer, and detaching empties its row again. For a segment whose
    // lifetime is RemoveWhenLastDetaches this may be the last detach, which
    // removes the file (its last process died attached).
    let detached = slab.detach();
    let removed = matches!(detached, Ok(true));
    match result {
        Ok(r) => {
            let out = if a.json {
                pretty(&report::reclaim_json(path, &r, &dead))
            } else {
                let mut out = text::reclaim(path, &r, &dead);
                if removed {
                    out.push_str(&format!(
                        "{}: removed the file: its lifetime is remove-when-last-detaches and no \
                         other process is attached\n",
                        path.display()
                    ));
                }
                out
            };
            emit(&out);
            // The reclaim happened; a detach that failed leaves this
            // process's row for the next reclaim, and must not read as success.
            match detached {
                Ok(_) => EXIT_OK,
                Err(e) => {
                    let f = failure(&e, Access::ReadWrite);
                    complain(path, &f);
                    f.code
                }
            }
        }
        Err(e) => {
            let f = failure(&e, Access::ReadWrite);
            complain(path, &f);
            f.code
        }
    }
}
