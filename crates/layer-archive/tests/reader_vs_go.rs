//! Differential test of our tar reader against Go's `archive/tar`, through the tar-split
//! goldens in `/work/shared/fixtures/tar-split` (written by Go tar-split v0.12.1, one JSON
//! line per header): for every fixture (gzip ones inflated), the entry names and sizes we read
//! must equal Go's (sparse files included: the size is the logical one), and where Go
//! fails we must fail too. The one deliberate difference, more than 8 chained extension
//! headers, is exercised by the `pax-chain` fixture, which is skipped here for its size.

use std::fs;
use std::io::Read;
use std::path::Path;

use base64::Engine;
use layer_archive::{Limits, TarError, TarReader};

/// (name, size) of every header, as Go saw them.
fn golden_entries(path: &Path) -> Vec<(Vec<u8>, u64)> {
    let raw = fs::read(path).unwrap();
    let text = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut out)
            .unwrap();
        out
    } else {
        String::from_utf8(raw).unwrap()
    };
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == 1)
        .map(|v| {
            let name = match (&v["name"], &v["name_raw"]) {
                (serde_json::Value::String(s), _) => s.as_bytes().to_vec(),
                (_, serde_json::Value::String(raw)) => base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .unwrap(),
                _ => Vec::new(),
            };
            (name, v["size"].as_u64().unwrap_or(0))
        })
        .collect()
}

fn our_entries(tar: &[u8]) -> Result<Vec<(Vec<u8>, u64)>, TarError> {
    let mut r = TarReader::new(tar, Limits::default());
    let mut out = Vec::new();
    while let Some(h) = r.next_entry()? {
        out.push((h.name, h.size as u64));
    }
    r.drain()?;
    Ok(out)
}

#[test]
fn entries_match_go_archive_tar() {
    let root = &testkit::require!(testkit::gate::fixtures()).join("tar-split");
    let expected = fs::read_to_string(root.join("expected.tsv"))
        .unwrap_or_else(|e| panic!("{}/expected.tsv: {e}", root.display()));
    let (mut same, mut both_fail) = (0, 0);
    let mut failures = Vec::new();
    for row in expected.lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (file, outcome, golden) = (cols[0], cols[5], cols.get(7).copied().unwrap_or(""));
        // Skipped: the 60 GB sparse ones, bzip2, and pax-chain (300 MB once inflated; we
        // refuse more than 8 chained extension headers where Go accepts any number).
        if outcome.starts_with("not run") || file.ends_with(".bz2") || file.contains("pax-chain") {
            continue;
        }
        let raw = fs::read(root.join(file)).unwrap();
        let tar = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            raw
        };
        let ours = our_entries(&tar);
        let go_failed =
            outcome.starts_with("error:") && !outcome.contains("duplicates of file paths");
        if go_failed {
            match ours {
                Ok(entries) => failures.push(format!(
                    "{file}: Go fails ({outcome}) but we read {} entries",
                    entries.len()
                )),
                Err(_) => both_fail += 1,
            }
            continue;
        }
        if golden.is_empty() || !root.join(golden).exists() {
            continue;
        }
        let go = golden_entries(&root.join(golden));
        match ours {
            Ok(ours) if ours == go => same += 1,
            Ok(ours) => failures.push(format!(
                "{file}: entries differ\n  go:  {:?}\n  us:  {:?}",
                go.iter()
                    .map(|(n, s)| (String::from_utf8_lossy(n), s))
                    .collect::<Vec<_>>(),
                ours.iter()
                    .map(|(n, s)| (String::from_utf8_lossy(n), s))
                    .collect::<Vec<_>>()
            )),
            Err(e) => failures.push(format!("{file}: Go reads it, we fail: {e}")),
        }
    }
    eprintln!("reader vs Go: {same} identical, {both_fail} refused by both");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(same >= 45, "too few fixtures compared: {same}");
}

/// Every fixture Go reads (sparse aside) also applies, except entries moby refuses too
/// (types it does not handle, hardlinks to names outside the archive).
#[test]
fn go_readable_fixtures_apply() {
    let root = &testkit::require!(testkit::gate::fixtures()).join("tar-split");
    let expected = fs::read_to_string(root.join("expected.tsv"))
        .unwrap_or_else(|e| panic!("{}/expected.tsv: {e}", root.display()));
    let mut applied = 0;
    let mut report = Vec::new();
    for row in expected.lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (file, outcome) = (cols[0], cols[5]);
        if !outcome.starts_with("ok") || file.ends_with(".bz2") || file.contains("pax-chain") {
            continue;
        }
        let raw = fs::read(root.join(file)).unwrap();
        let tar = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            raw
        };
        let dir = tempfile::tempdir().unwrap();
        let opts = layer_archive::ApplyOptions::for_current_user().with_layer(file);
        match layer_archive::apply_layer(dir.path(), &mut &tar[..], &opts) {
            Ok(_) => applied += 1,
            Err(e) => report.push(format!("{file}: {e}")),
        }
    }
    eprintln!(
        "applied {applied} fixtures; refused:\n{}",
        report.join("\n")
    );
    // Only refusals moby shares (or sparse files) are acceptable.
    for r in &report {
        assert!(
            r.contains("sparse")
                || r.contains("unhandled tar header type")
                || r.contains("hardlink to"),
            "unexpected refusal: {r}"
        );
    }
    assert!(applied >= 30, "too few fixtures applied: {applied}");
}
