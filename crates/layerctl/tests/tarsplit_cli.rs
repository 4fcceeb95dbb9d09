//! `layerctl tar-split` as a drop-in for Go's `tar-split` CLI: same flags, same outputs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn layerctl() -> Command {
    testkit::layerctl::bin()
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/tar-split")
        .join(rel)
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut v)
        .unwrap();
    v
}

#[test]
fn disasm_passes_through_writes_golden_and_asm_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let tar = fixture("generated/sample-pax.tar");
    let meta = dir.path().join("meta.json.gz");
    let out = layerctl()
        .args(["tar-split", "disasm", "--output"])
        .arg(&meta)
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let original = std::fs::read(&tar).unwrap();
    assert!(out.stdout == original, "stdout is the tar, unchanged");
    assert!(String::from_utf8_lossy(&out.stderr).contains("(read 10240 bytes)"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&meta).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let golden = std::fs::read(fixture("golden/generated/sample-pax.tar.v0.12.1.jsonl")).unwrap();
    assert!(gunzip(&meta) == golden, "metadata equals Go v0.12.1's");

    // Extract with GNU tar and rebuild to stdout and to a file.
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    assert!(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&tree)
            .status()
            .unwrap()
            .success()
    );
    let out = layerctl()
        .args(["tar-split", "asm", "--input"])
        .arg(&meta)
        .arg("--path")
        .arg(&tree)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == original);
    let rebuilt = dir.path().join("re.tar");
    let out = layerctl()
        .args(["tar-split", "a", "--input"])
        .arg(&meta)
        .arg("--path")
        .arg(&tree)
        .arg("--output")
        .arg(&rebuilt)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(std::fs::read(&rebuilt).unwrap() == original);
    // One thread or helper threads (`auto` picks by the machine's load): the same bytes,
    // both ways.
    for threads in ["one", "many"] {
        let meta2 = dir.path().join(format!("meta-{threads}.json.gz"));
        let out = layerctl()
            .args(["tar-split", "disasm", "--threads", threads, "--output"])
            .arg(&meta2)
            .arg(&tar)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == original,
            "--threads {threads}: stdout is the tar"
        );
        assert!(
            gunzip(&meta2) == golden,
            "--threads {threads}: Go's metadata"
        );
        let out = layerctl()
            .args(["tar-split", "asm", "--threads", threads, "--input"])
            .arg(&meta2)
            .arg("--path")
            .arg(&tree)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == original,
            "--threads {threads}: asm rebuilds the tar"
        );
    }
    // The opt-in decoding thread gives the same bytes.
    let out = layerctl()
        .args(["tar-split", "asm", "--parallel-decode", "--input"])
        .arg(&meta)
        .arg("--path")
        .arg(&tree)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == original);
    // --compress gzips the output.
    let out = layerctl()
        .args(["tar-split", "asm", "--compress", "--input"])
        .arg(&meta)
        .arg("--path")
        .arg(&tree)
        .output()
        .unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&out.stdout[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert!(plain == original);
}

#[test]
fn stdin_no_stdout_and_errors_like_go() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("m.json.gz");
    let mut child = layerctl()
        .args(["tar-split", "d", "--no-stdout", "--output"])
        .arg(&meta)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        &std::fs::read(fixture("generated/exact512.tar")).unwrap(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        gunzip(&meta)
            == std::fs::read(fixture("golden/generated/exact512.tar.v0.12.1.jsonl")).unwrap()
    );

    let out = layerctl().args(["tar-split", "disasm"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("please specify tar to be disabled"));

    let out = layerctl()
        .args(["tar-split", "asm", "--input"])
        .arg(&meta)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--path must be set"));

    let out = layerctl()
        .args(["tar-split", "disasm", "--no-stdout", "--output"])
        .arg(&meta)
        .arg(fixture("generated/dup.tar"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("duplicates of file paths not supported")
    );

    // A hostile name cannot read outside --path: the lookup resolves inside the root.
    let json = br#"{"type":1,"name":"../../../../etc/hostname","size":5,"payload":"AAAAAAAAAAA=","position":0}"#;
    let hostile = dir.path().join("hostile.json.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&hostile).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::Write::write_all(&mut gz, json).unwrap();
    gz.finish().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = layerctl()
        .args(["tar-split", "asm", "--input"])
        .arg(&hostile)
        .arg("--path")
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "nothing of the host file was written"
    );
}

#[test]
fn checksize_reports_counts() {
    let out = layerctl()
        .args(["tar-split", "checksize"])
        .arg(fixture("generated/sample-gnu.tar"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(size 10k)"), "{text}");
    assert!(text.contains(" -- number of files: 8"), "{text}");
    // The true JSON size (14687 bytes); Go prints 11k, measuring before its buffers flush.
    assert!(
        text.contains(" -- size of metadata uncompressed: 14k"),
        "{text}"
    );
}
