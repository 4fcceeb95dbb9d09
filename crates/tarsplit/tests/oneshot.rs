//! The one-call helpers: `split_while_reading` and `reassemble_from_dir`.

use std::io::Read;

use tarsplit::asm::Disassembler;
use tarsplit::storage::{DiscardFilePutter, JsonPacker};

fn archive() -> Vec<u8> {
    let mut out = testkit::tar::Tar::new()
        .gnu()
        .file("a.txt", b"alpha")
        .file("dir/b.bin", &[7u8; 1500])
        .build();
    out.extend_from_slice(&[0u8; 3000]); // trailing bytes after the end marker are kept too
    out
}

#[test]
fn the_metadata_is_the_gzipped_json_of_the_full_api_and_reassembles_the_input() {
    let tar = archive();
    let dir = tempfile::tempdir().unwrap();
    let mut reader = tarsplit::split_while_reading(&tar[..], Vec::new());
    // The consumer stops at the end-of-archive marker, as an extractor does.
    tar::Archive::new(&mut reader).unpack(dir.path()).unwrap();
    assert!(reader.bytes_read() < tar.len() as u64);
    let metadata = reader.finish().unwrap();

    // Same JSON as the packer API writes by hand.
    let mut json = Vec::new();
    tarsplit::storage::gzip_reader(&metadata[..])
        .read_to_end(&mut json)
        .unwrap();
    let mut expected = Vec::new();
    let mut sink = Vec::new();
    Disassembler::new(&tar[..], JsonPacker::new(&mut expected), DiscardFilePutter)
        .read_to_end(&mut sink)
        .unwrap();
    assert_eq!(json, expected);

    let mut rebuilt = Vec::new();
    let n = tarsplit::reassemble_from_dir(&metadata[..], dir.path(), &mut rebuilt).unwrap();
    assert_eq!(n, tar.len() as u64);
    assert_eq!(rebuilt, tar);
}

#[test]
fn a_truncated_archive_fails_at_finish_and_a_changed_file_at_reassembly() {
    let tar = archive();
    let cut = &tar[..700]; // inside the second header's body
    let mut reader = tarsplit::split_while_reading(cut, Vec::new());
    let mut first = [0u8; 512];
    reader.read_exact(&mut first).unwrap();
    let err = reader.finish().unwrap_err();
    assert!(
        matches!(err, tarsplit::Error::UnexpectedEof { .. }),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut reader = tarsplit::split_while_reading(&tar[..], Vec::new());
    tar::Archive::new(&mut reader).unpack(dir.path()).unwrap();
    let metadata = reader.finish().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"ALPHA").unwrap();
    let err =
        tarsplit::reassemble_from_dir(&metadata[..], dir.path(), std::io::sink()).unwrap_err();
    assert!(
        matches!(err, tarsplit::Error::ChecksumMismatch { .. }),
        "{err}"
    );
}
