//! Helpers shared by the integration tests.
//!
//! # Running part of a test in another process
//!
//! Shared memory is only really tested with two processes. A test re-runs
//! its own test binary (`std::env::current_exe()`) as a child, restricted
//! to itself with `--exact <test name> --nocapture --test-threads=1` (and
//! `--include-ignored` from [`spawn_child`], so an `#[ignore]`d test's
//! child runs too), and tells the child which part to play through two
//! environment variables: [`ROLE_VAR`] (a role name) and [`ARGS_VAR`] (its
//! arguments, e.g. a path). The same `#[test]` function then acts as parent
//! or child:
//!
//! ```ignore
//! mod common;
//! use std::time::Duration;
//!
//! #[test]
//! fn two_processes_agree() {
//!     if let Some(args) = common::child_args("agree") {
//!         // Child: do the work, panic (exit code 101) or
//!         // `std::process::exit(n)` to report.
//!         return;
//!     }
//!     let child = common::spawn_child("two_processes_agree", "agree", &["/some/path"]);
//!     let out = common::wait_child(child, Duration::from_secs(30));
//!     common::assert_child_succeeded(&out);
//! }
//! ```
//!
//! The test name is the libtest name: the function's path inside the test
//! crate (`name` at the top level, `module::name` inside `mod module`).
//! [`wait_child`] checks that the child really ran exactly one test, so a
//! misspelt name fails loudly instead of "passing" with zero tests.
//!
//! The child inherits the parent's environment (plus the two variables) and
//! its working directory; stdout and stderr are captured and returned in the
//! [`Output`], and [`assert_child_succeeded`] prints them on failure.

#![allow(dead_code)] // each test crate uses the part it needs

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Names the role a re-executed test binary plays (unset in a parent).
pub const ROLE_VAR: &str = "SHMSLAB_TEST_CHILD_ROLE";
/// The child's arguments, joined with [`ARGS_SEP`].
pub const ARGS_VAR: &str = "SHMSLAB_TEST_CHILD_ARGS";
/// Separator of the arguments in [`ARGS_VAR`] (ASCII unit separator), so
/// arguments may hold spaces, colons and the like, but not this byte.
pub const ARGS_SEP: char = '\u{1f}';

/// In a child started by [`spawn_child`] for `role`, its arguments;
/// `None` in the parent (or a child started for another role).
pub fn child_args(role: &str) -> Option<Vec<String>> {
    let r = std::env::var(ROLE_VAR).ok()?;
    if r != role {
        return None;
    }
    let args = std::env::var(ARGS_VAR).unwrap_or_default();
    if args.is_empty() {
        return Some(Vec::new());
    }
    Some(args.split(ARGS_SEP).map(str::to_owned).collect())
}

/// The command that re-runs the current test binary for the single test
/// `test_name`, in role `role` with arguments `args`. Use it directly to
/// add environment variables or change stdio; [`spawn_child`] is the
/// common case. It does not pass `--include-ignored` (libtest refuses the
/// flag twice): add it when `test_name` may be an `#[ignore]`d test.
pub fn child_command(test_name: &str, role: &str, args: &[&str]) -> Command {
    for a in args {
        assert!(
            !a.contains(ARGS_SEP),
            "child argument {a:?} contains the separator"
        );
    }
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(ARGS_VAR, args.join(&ARGS_SEP.to_string()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts the current test binary as a child running only `test_name`, with
/// [`ROLE_VAR`] = `role` and [`ARGS_VAR`] = `args`. Stdout and stderr are
/// piped; collect them (and the status) with [`wait_child`].
///
/// Adds `--include-ignored`, so the child runs even when `test_name` is an
/// `#[ignore]`d test (libtest would otherwise skip it and exit 0).
pub fn spawn_child(test_name: &str, role: &str, args: &[&str]) -> Child {
    child_command(test_name, role, args)
        .arg("--include-ignored")
        .spawn()
        .expect("spawn the test binary as a child")
}

/// How a child collected by [`collect`] ended, and what it printed.
pub struct Collected {
    pub status: ExitStatus,
    /// `give_up` said so and the child was killed.
    pub killed: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Waits for `child` to exit, reading its stdout and stderr on two threads
/// meanwhile (so a full pipe cannot block it). Every `poll` it asks
/// `give_up`; on `true` it kills the child (that child only) and reaps it.
pub fn collect(mut child: Child, poll: Duration, mut give_up: impl FnMut() -> bool) -> Collected {
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let out_reader = read(child.stdout.take().map(|p| Box::new(p) as _));
    let err_reader = read(child.stderr.take().map(|p| Box::new(p) as _));
    let (status, killed) = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break (status, false);
        }
        if give_up() {
            let _ = child.kill();
            break (child.wait().expect("reap the killed child"), true);
        }
        std::thread::sleep(poll);
    };
    Collected {
        status,
        killed,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Waits for `child` to exit, reading its stdout and stderr meanwhile. If it
/// has not exited after `timeout`, kills it (that child only) and panics
/// with what it printed. Also panics if the child did not run exactly one
/// test (a wrong test name runs none and would exit 0).
pub fn wait_child(child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    let done = collect(child, Duration::from_millis(5), || {
        Instant::now() >= deadline
    });
    let output = Output {
        status: done.status,
        stdout: done.stdout,
        stderr: done.stderr,
    };
    if done.killed {
        panic!(
            "child did not exit within {timeout:?} and was killed\n{}",
            describe(&output)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("running 1 test"),
        "the child did not run exactly one test (wrong test name?)\n{}",
        describe(&output)
    );
    output
}

/// [`spawn_child`] then [`wait_child`].
pub fn run_child(test_name: &str, role: &str, args: &[&str], timeout: Duration) -> Output {
    wait_child(spawn_child(test_name, role, args), timeout)
}

/// Panics, showing the child's output, unless it exited with status 0.
pub fn assert_child_succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "child failed\n{}",
        describe(output)
    );
}

/// How a process ended, in words: `exit code 3` or `signal 7 (SIGBUS)`.
pub fn status_text(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
        _ => format!("{status:?}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGXFSZ => " (SIGXFSZ)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGKILL => " (SIGKILL)",
        _ => "",
    }
}

/// The child's status, stdout and stderr, for a failure message.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- child stdout ---\n{}\n--- child stderr ---\n{}",
        status_text(&output.status),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Polls `cond` every millisecond until it holds or `timeout` passes;
/// returns whether it held. For handshakes through shared memory.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub mod live;
pub mod tmpfs;

/// Trims `slab`'s thread cache, checks the segment, and asserts the check is
/// consistent and that no slot of any class is still allocated or cached —
/// the state every multi-process test must end in. `when` names the moment
/// in a failure; the report is returned for further assertions.
pub fn assert_every_slot_free(slab: &shmslab::Slab, when: &str) -> shmslab::Report {
    slab.trim().expect("trim");
    let report = slab.check().expect("check");
    assert!(
        report.is_consistent(),
        "{when}: check found problems: {:#?}",
        report.findings
    );
    for (c, k) in report.classes.iter().enumerate() {
        assert_eq!((k.allocated, k.cached), (0, 0), "{when}: class {c}: {k:?}");
    }
    report
}

/// The name of an error's variant (`"StaleHandle"`), read off its `Debug`
/// form so that a new variant needs no list to be kept up to date.
pub fn variant(e: &shmslab::Error) -> String {
    let debug = format!("{e:?}");
    let end = debug
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(debug.len());
    debug[..end].to_string()
}

/// `"Ok"` or the error's variant, for messages and tallies.
pub fn outcome<T>(r: &Result<T, shmslab::Error>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(e) => variant(e),
    }
}

/// A byte view of the whole slot a raw handle names, bounded by the slot
/// alone: for tests that keep handles as `SlotRef`s (forged and stale ones
/// included) and read or write their bytes.
#[allow(dead_code)]
pub fn whole(h: shmslab::SlotRef) -> shmslab::BytesHandle {
    shmslab::BytesHandle::from_raw(h, shmslab::limits::MAX_SLOT_SIZE as usize)
}
