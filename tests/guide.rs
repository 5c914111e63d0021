//! docs/GUIDE.md shows `examples/guide.rs` whole, so the guide cannot show a
//! program that is not the one `cargo run --example guide` runs: its one
//! `rust` block is the example, byte for byte. And the example, which
//! asserts its own outcomes, is run here as a user would run it, and what it
//! prints is what the guide says it prints.
//!
//! The example's binary is the one `cargo test` builds into
//! `target/<profile>/examples/`. `cargo test --test guide` alone builds no
//! examples: run `cargo build --example guide` (with the same profile)
//! first, or the test fails and says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on the example's run (it takes milliseconds).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The bodies of the fenced blocks whose info string is `rust` or
/// `rust,no_run` (the guide is also the rustdoc page `shmslab::guide`, where
/// the block is compiled as a doctest but not run: the example runs here).
fn rust_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if matches!(line.trim_end(), "```rust" | "```rust,no_run") => {
                current = Some(String::new())
            }
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(
        current.is_none(),
        "docs/GUIDE.md: a ```rust block is not closed"
    );
    blocks
}

#[test]
fn the_guide_shows_the_guide_example_verbatim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/GUIDE.md")).unwrap();
    let blocks = rust_blocks(&guide);
    assert_eq!(
        blocks.len(),
        1,
        "docs/GUIDE.md should have exactly one ```rust block (examples/guide.rs)"
    );
    let example = root.join("examples/guide.rs");
    let source = std::fs::read_to_string(&example).unwrap();
    assert!(
        source == blocks[0],
        "{} differs from the guide's ```rust block; copy the example into the \
         guide verbatim (its first differing line: {:?})",
        example.display(),
        source
            .lines()
            .zip(blocks[0].lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("file {a:?} vs guide {b:?}"))
            .unwrap_or_else(|| "one is a prefix of the other".into())
    );
}

/// `target/<profile>/examples/guide`, next to this test's own
/// `target/<profile>/deps/guide-<hash>`.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps/");
    let bin = profile_dir.join("examples/guide");
    assert!(
        bin.is_file(),
        "{} does not exist: `cargo test --test guide` builds no examples; run \
         `cargo build --example guide` (same profile) first, or plain `cargo test`",
        bin.display()
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/guide.rs");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).unwrap();
    assert!(
        modified(&bin) >= modified(&source),
        "{} is older than examples/guide.rs: run `cargo build --example guide` again",
        bin.display()
    );
    bin
}

#[test]
fn the_guide_example_runs_and_prints_what_the_guide_says() {
    let mut child = Command::new(example_binary())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the example");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the example did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("piped"), &mut out)
        .expect("read the example's output");
    assert!(status.success(), "the example failed ({status}):\n{out}");

    // Each line: how it starts, what it contains, how it ends (the pid, the
    // temporary path and the count of cached slots vary).
    let expected: &[(&str, &str, &str)] = &[
        (
            "[A] created /",
            "/guide.shm",
            " with root \"board\"; allocated job 1",
        ),
        (
            "[B] pid ",
            "",
            " attached; got job 1 over stdin, adopted and freed it",
        ),
        (
            "[B] published a persisted result and a draft; waiting to be killed",
            "",
            "",
        ),
        (
            "[A] my handle to job 1 is stale: B adopted it and freed it",
            "",
            "",
        ),
        (
            "[A] B was killed (signal: 9",
            "reclaim_dead: 1 dead process, ",
            " slots freed (its draft and its cached free slots), 0 kept for roots",
        ),
        (
            "[A] B's draft is gone; its persisted result survived: job 1 -> 42",
            "",
            "",
        ),
        (
            "[A] freed the result; the segment is consistent; done",
            "",
            "",
        ),
    ];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "the example printed {} lines, the guide shows {}:\n{out}",
        lines.len(),
        expected.len()
    );
    for (line, &(start, middle, end)) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(start) && line.contains(middle) && line.ends_with(end),
            "line {line:?} is not {start:?} .. {middle:?} .. {end:?}\n{out}"
        );
    }

    // The segment lived in a temporary directory, gone with the example.
    let path = lines[0]
        .strip_prefix("[A] created ")
        .and_then(|rest| rest.split(" with root").next())
        .expect("the path");
    assert!(
        !Path::new(path).exists(),
        "the example left its segment at {path}"
    );
    assert!(
        !Path::new(path).parent().expect("a directory").exists(),
        "the example left its temporary directory behind"
    );
}
