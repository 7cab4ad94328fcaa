//! Replays a fuzz target's corpus on the stable toolchain, in `cargo test`.
//!
//! Included by each fuzzed service crate's `tests/fuzz_replay.rs` (`#[path]`),
//! which calls [`replay`] with the same `fuzzing` function its fuzz target
//! calls: every file of `fuzz/corpus/<target>/` and, where there is one,
//! `fuzz/regressions/<target>/` goes through it, and the test fails naming
//! each input that panics.

use std::{
    fs,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
};

/// The inputs of `target`: its corpus (which must exist and hold some) and
/// its regressions, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut found = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz.join(kind).join(target);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(_) if kind == "regressions" => continue,
            Err(e) => panic!("the corpus of {target} cannot be read at {}: {e}", dir.display()),
        };
        for entry in entries {
            let path = entry.expect("list a corpus directory").path();
            if path.is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Runs every input of `target` through `run`; fails naming those that panic.
pub fn replay(target: &str, run: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "the corpus of {target} is empty");
    let failed: Vec<String> = inputs
        .iter()
        .filter_map(|path| {
            let data = fs::read(path).expect("read a corpus file");
            panic::catch_unwind(AssertUnwindSafe(|| run(&data)))
                .err()
                .map(|_| path.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs of {target} fail:\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
}
