//! Helpers shared by the `tarsplit_*` integration tests: fixture discovery and loading.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

/// `../shared/fixtures/tar-split` next to the repository (CI lays a copy of shared/ there).
pub fn fixtures_dir() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent");
    let dir = repo.join("../shared/fixtures/tar-split");
    assert!(
        dir.is_dir(),
        "tar-split fixtures not found at {}",
        dir.display()
    );
    dir
}

/// One row of `expected.tsv`.
#[derive(Debug, Clone)]
pub struct Row {
    pub file: String,
    pub tar_bytes: u64,
    pub tar_sha256: String,
    pub disasm: String,
    pub roundtrip: String,
    pub golden: Option<String>,
}

impl Row {
    pub fn not_run(&self) -> bool {
        self.disasm.starts_with("not run")
    }
    pub fn go_error(&self) -> Option<&str> {
        self.disasm.strip_prefix("error: ")
    }
    pub fn is_sparse(&self) -> bool {
        self.file.contains("sparse") || self.file.contains("gnu-incremental")
    }
}

pub fn expected_rows() -> Vec<Row> {
    let text = std::fs::read_to_string(fixtures_dir().join("expected.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                file: f[0].to_string(),
                tar_bytes: f[3].parse().unwrap(),
                tar_sha256: f[4].to_string(),
                disasm: f[5].to_string(),
                roundtrip: f[6].to_string(),
                golden: Some(f[7])
                    .filter(|g| g.starts_with("golden/"))
                    .map(str::to_string),
            }
        })
        .collect()
}

/// Opens a fixture as a stream of tar bytes (gzip and bzip2 are undone).
pub fn open_tar(rel: &str) -> Box<dyn Read + Send> {
    let path = fixtures_dir().join(rel);
    let mut file = std::fs::File::open(&path).unwrap();
    let mut magic = [0u8; 3];
    let n = file.read(&mut magic).unwrap();
    drop(file);
    let file = std::fs::File::open(&path).unwrap();
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(MultiGzDecoder::new(std::io::BufReader::new(file)))
    } else if n == 3 && &magic == b"BZh" {
        let out = std::process::Command::new("bzcat")
            .arg(&path)
            .output()
            .expect("bzcat is installed");
        assert!(out.status.success());
        Box::new(std::io::Cursor::new(out.stdout))
    } else {
        Box::new(file)
    }
}

/// The whole tar of a fixture in memory.
pub fn read_tar(rel: &str) -> Vec<u8> {
    let mut v = Vec::new();
    open_tar(rel).read_to_end(&mut v).unwrap();
    v
}

/// A golden file's JSON lines (gunzipped when needed).
pub fn read_golden(rel: &str) -> Vec<u8> {
    let path = fixtures_dir().join(rel);
    let raw = std::fs::read(&path).unwrap();
    if rel.ends_with(".gz") {
        let mut v = Vec::new();
        MultiGzDecoder::new(&raw[..]).read_to_end(&mut v).unwrap();
        v
    } else {
        raw
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    layer_digest::Digester::sha256_of(data).hex().to_string()
}
