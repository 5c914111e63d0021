//! The README's example is what a new user copies into their own crate, so
//! it must compile and run in a crate that depends on shmslab alone (not on
//! bytemuck: the derive has to find it through `shmslab::bytemuck`).
//! `tests/user-crate/` is such a crate; `.ci/run` builds and runs it outside
//! this workspace. This test pins the link: the crate's `src/main.rs` is the
//! README's `rust` block, byte for byte. (The README's blocks also run here
//! as doctests, but a doctest sees shmslab's own dependencies, so it cannot
//! catch a missing one.)

use std::path::Path;

/// The bodies of the README's fenced blocks whose info string is `rust`.
fn rust_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match current.as_mut() {
            None if line.trim_end() == "```rust" => current = Some(String::new()),
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
        "README.md: a ```rust block is not closed"
    );
    blocks
}

#[test]
fn the_user_crate_is_the_readme_example_verbatim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = rust_blocks(&readme);
    assert_eq!(
        blocks.len(),
        1,
        "README.md should have exactly one ```rust example (the one tests/user-crate/ holds)"
    );
    let main_rs = root.join("tests/user-crate/src/main.rs");
    let source = std::fs::read_to_string(&main_rs).unwrap();
    assert!(
        source == blocks[0],
        "{} differs from the README's example; copy the README's ```rust block \
         into it verbatim (its first differing line: {:?})",
        main_rs.display(),
        source
            .lines()
            .zip(blocks[0].lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("file {a:?} vs README {b:?}"))
            .unwrap_or_else(|| "one is a prefix of the other".into())
    );
}

#[test]
fn the_user_crate_depends_on_shmslab_alone() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("tests/user-crate/Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest
        .lines()
        .skip_while(|l| l.trim() != "[dependencies]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(deps, ["shmslab = { path = \"../..\" }"]);
    let tables: Vec<&str> = manifest
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .collect();
    assert_eq!(
        tables,
        ["[package]", "[dependencies]", "[workspace]"],
        "the user crate must see shmslab and nothing else, in a workspace of its own"
    );
}
