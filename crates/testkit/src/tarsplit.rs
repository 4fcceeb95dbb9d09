//! The tar-split fixtures (`../shared/fixtures/tar-split`, with Go's goldens and
//! `expected.tsv`) and a proptest strategy for generated archives (feature `tarsplit`).

use std::io::Read;
use std::path::PathBuf;

use flate2::read::MultiGzDecoder;

/// `../shared/fixtures/tar-split` next to the repository (CI lays a copy of shared/ there).
pub fn fixtures_dir() -> PathBuf {
    let dir = crate::gate::workspace_root().join("../shared/fixtures/tar-split");
    assert!(
        dir.is_dir(),
        "tar-split fixtures not found at {}",
        dir.display()
    );
    dir
}

/// One row of `expected.tsv`.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct Row {
    pub file: String,
    pub tar_bytes: u64,
    pub tar_sha256: String,
    pub disasm: String,
    pub roundtrip: String,
    pub golden: Option<String>,
}

impl Row {
    /// Go's tar-split did not run on it.
    pub fn not_run(&self) -> bool {
        self.disasm.starts_with("not run")
    }
    /// The error Go reported, if it failed.
    pub fn go_error(&self) -> Option<&str> {
        self.disasm.strip_prefix("error: ")
    }
    /// A sparse (or GNU incremental) fixture.
    pub fn is_sparse(&self) -> bool {
        self.file.contains("sparse") || self.file.contains("gnu-incremental")
    }
}

/// The rows of the fixtures' `expected.tsv`: what Go's tar-split did with each.
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

pub use crate::digest::sha256_hex;

/// One entry of a generated archive.
#[derive(Debug, Clone)]
pub enum GenKind {
    /// A regular file with this content.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symlink to this target.
    Symlink(String),
    /// Hard link to an earlier entry; `size` is what the header claims (no body follows).
    Hardlink(u64),
}

/// Header flavour of a generated entry.
#[derive(Debug, Clone, Copy)]
pub enum GenFormat {
    /// POSIX ustar.
    Ustar,
    /// GNU.
    Gnu,
    /// Pre-POSIX (V7).
    Old,
}

/// One generated entry.
#[derive(Debug, Clone)]
pub struct GenEntry {
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: GenKind,
    /// Its header flavour.
    pub format: GenFormat,
    /// PAX records (e.g. SCHILY.xattr.*) written in an `x` header before the entry.
    pub pax: Vec<(String, Vec<u8>)>,
    /// Modification time (seconds).
    pub mtime: u64,
}

/// A generated archive.
#[derive(Debug, Clone)]
pub struct GenArchive {
    /// Its entries, in order.
    pub entries: Vec<GenEntry>,
    /// Bytes appended after the end-of-archive marker (and record padding).
    pub trailing: Vec<u8>,
    /// Drop the end-of-archive marker entirely (Go accepts a clean EOF at a header).
    pub no_end_marker: bool,
}

/// Builds the tar bytes of a generated archive with the `tar` crate.
pub fn build_archive(spec: &GenArchive) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut first_file: Option<String> = None;
    for (i, e) in spec.entries.iter().enumerate() {
        // A unique prefix keeps cleaned names distinct (Go refuses duplicates).
        let name = format!("e{i}/{}", e.name);
        if !e.pax.is_empty() {
            b.append_pax_extensions(e.pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        let mut h = match e.format {
            GenFormat::Ustar => tar::Header::new_ustar(),
            GenFormat::Gnu => tar::Header::new_gnu(),
            GenFormat::Old => tar::Header::new_old(),
        };
        h.set_mtime(e.mtime);
        h.set_uid(1000);
        h.set_gid(1000);
        match &e.kind {
            GenKind::File(body) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(body.len() as u64);
                b.append_data(&mut h, &name, &body[..]).unwrap();
                first_file.get_or_insert(name);
            }
            GenKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, format!("{name}/"), std::io::empty())
                    .unwrap();
            }
            GenKind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, &name, target).unwrap();
            }
            GenKind::Hardlink(size) => {
                let Some(target) = first_file.clone() else {
                    continue;
                };
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(*size);
                b.append_link(&mut h, &name, &target).unwrap();
            }
        }
    }
    let mut out = if spec.no_end_marker {
        b.into_inner().unwrap()
    } else {
        b.finish().map(|_| ()).and_then(|_| b.into_inner()).unwrap()
    };
    out.extend_from_slice(&spec.trailing);
    out
}

/// A proptest strategy for generated archives.
pub fn archive_strategy() -> impl proptest::strategy::Strategy<Value = GenArchive> {
    use proptest::prelude::*;
    let name = prop_oneof![
        "[a-z]{1,12}",
        "[a-zA-Z0-9_.-]{90,200}",
        "[a-z]{1,8}/[a-z]{1,8}/[a-z]{50,120}",
        "[a-zé<>&ü ]{1,20}",
    ];
    let body = prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 1..600),
        (0usize..4, any::<u8>()).prop_map(|(blocks, b)| vec![b; 512 * blocks + 512]),
        proptest::collection::vec(any::<u8>(), 1000..5000),
    ];
    let kind = prop_oneof![
        4 => body.prop_map(GenKind::File),
        1 => Just(GenKind::Dir),
        1 => "[a-z/.]{1,150}".prop_map(GenKind::Symlink),
        1 => prop_oneof![Just(0u64), 1u64..2000].prop_map(GenKind::Hardlink),
    ];
    let format = prop_oneof![
        Just(GenFormat::Ustar),
        Just(GenFormat::Gnu),
        Just(GenFormat::Old)
    ];
    let pax = proptest::collection::vec(
        (
            "(SCHILY\\.xattr\\.user\\.[a-z]{1,10}|comment|LIBARCHIVE\\.[a-z]{1,5})",
            proptest::collection::vec(1u8..=255, 1..300),
        ),
        0..3,
    );
    let entry = (name, kind, format, pax, 0u64..0o77777777777).prop_map(
        |(name, kind, format, pax, mtime)| GenEntry {
            name,
            kind,
            format,
            pax,
            mtime,
        },
    );
    let trailing = prop_oneof![
        3 => Just(Vec::new()),
        1 => proptest::collection::vec(any::<u8>(), 1..3000),
        1 => (1usize..5000).prop_map(|n| vec![0u8; n]),
    ];
    (
        proptest::collection::vec(entry, 0..12),
        trailing,
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(entries, trailing, no_end_marker)| GenArchive {
            entries,
            trailing,
            no_end_marker,
        })
}
