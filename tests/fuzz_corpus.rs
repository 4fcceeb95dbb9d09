//! Replays the committed fuzz seed corpus (`fuzz/corpus/<target>/*`) through the fuzz target
//! bodies on the stable toolchain, so CI checks every target's properties on every input
//! the fuzzer was seeded with (and every crash input we committed after fixing it) without
//! nightly or libFuzzer. `cargo xtask fuzz` runs the same bodies under libFuzzer.

#[path = "fuzz_targets/mod.rs"]
mod fuzz_targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
}

fn replay(name: &str) {
    let (_, target) = fuzz_targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("known target");
    let dir = fuzz_targets::corpus_dir(workspace(), name);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{}: empty seed corpus", dir.display());
    let mut failures = Vec::new();
    for input in &inputs {
        let data = std::fs::read(input).expect("read corpus file");
        if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
            failures.push(input.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} inputs broke a property: {failures:#?}",
        failures.len(),
        inputs.len()
    );
    eprintln!("{name}: {} inputs replayed", inputs.len());
}

#[test]
fn tar_disassemble_corpus() {
    replay("tar_disassemble");
}

#[test]
fn tarsplit_json_corpus() {
    replay("tarsplit_json");
}

#[test]
fn archive_apply_corpus() {
    replay("archive_apply");
}

#[test]
fn meta_readers_corpus() {
    replay("meta_readers");
}

#[test]
fn image_load_corpus() {
    replay("image_load");
}

#[test]
fn tar_differential_corpus() {
    replay("tar_differential");
}

/// Every target has a corpus dir and every corpus dir a target; the corpus stays small.
#[test]
fn corpus_is_complete_and_small() {
    let root = workspace().join("fuzz/corpus");
    let mut files = 0u64;
    let mut bytes = 0u64;
    for entry in std::fs::read_dir(&root).expect("fuzz/corpus") {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert!(
            fuzz_targets::TARGETS.iter().any(|(n, _)| *n == name),
            "corpus dir {name} has no target"
        );
        for f in std::fs::read_dir(entry.path()).unwrap() {
            files += 1;
            bytes += f.unwrap().metadata().unwrap().len();
        }
    }
    for (name, _) in fuzz_targets::TARGETS {
        assert!(root.join(name).is_dir(), "target {name} has no corpus dir");
    }
    assert!(files <= 200, "seed corpus has {files} files (cap 200)");
    assert!(
        bytes <= 2 << 20,
        "seed corpus has {bytes} bytes (cap 2 MiB)"
    );
}

/// Finding of `cargo xtask fuzz tarsplit_json` (a mutated gzip'd golden that timed out after
/// 60 s): a JSON object spread over many lines. `JsonUnpacker` reads one line per refill and
/// re-parses the whole buffered object each time, so an object of n lines costs O(n²): a
/// 1 MB metadata file of newlines inside one object keeps a reader busy for hours (CPU
/// denial of service for anything reading untrusted tar-split metadata, such as
/// `layerctl tar-split asm` or a Docker data-root). Fix (in tarsplit's JSON unpacker): on an
/// incomplete object, refill by at least as much as is buffered (geometric growth), so the
/// re-parses cost O(n) in total. Fixed; the bound below is hours away from the old cost.
#[test]
fn finding_json_object_over_many_lines_parses_in_linear_time() {
    use tarsplit::storage::{JsonUnpacker, Unpacker};
    let mut doc = br#"{"type":2,"#.to_vec();
    doc.resize(doc.len() + 1_000_000, b'\n');
    doc.extend_from_slice(br#""payload":"aGVsbG8=","position":0}"#);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut unpacker = JsonUnpacker::new(&doc[..]);
        let first = unpacker.next_entry().map(|e| e.map(|e| e.payload));
        let _ = tx.send(first);
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("1 MB of metadata not parsed within 20 s: quadratic re-parsing");
    assert_eq!(got.unwrap(), Some(Some(b"hello".to_vec())));
}
