//! For layer-archive's tests (feature `archive`): tars of layer-archive `Header`s (written
//! by its `TarWriter`, itself checked against the `tar` crate and Go), tree descriptions,
//! times, and `cp -a` copies.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use layer_archive::{Header, TarWriter};

/// A tar from `(header, data)` pairs.
pub fn tar_of(entries: &[(Header, &[u8])]) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    for (h, data) in entries {
        let mut d = *data;
        w.append(h, Some(&mut d)).unwrap();
    }
    w.finish().unwrap()
}

/// A file entry with content.
pub fn file(name: &str, data: &'static str) -> (Header, &'static [u8]) {
    (Header::file(name, data.len() as u64), data.as_bytes())
}

/// A directory entry.
pub fn dir(name: &str) -> (Header, &'static [u8]) {
    (Header::dir(name), b"")
}

/// An empty whiteout-style file entry.
pub fn marker(name: &str) -> (Header, &'static [u8]) {
    (Header::file(name, 0), b"")
}

/// A hard link entry.
pub fn hardlink(name: &str, target: &str) -> (Header, &'static [u8]) {
    (Header::hardlink(name, target), b"")
}

/// A symlink entry.
pub fn symlink(name: &str, target: &str) -> (Header, &'static [u8]) {
    (Header::symlink(name, target), b"")
}

/// What a tree holds, path → description (type, mode, owner, content or target; mtimes
/// of non-directories when `with_times`). The root itself is left out.
pub fn describe(root: &Path, with_times: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let m = fs::symlink_metadata(entry.path()).unwrap();
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!(
                "symlink->{}",
                fs::read_link(entry.path()).unwrap().display()
            )
        } else if ft.is_file() {
            format!(
                "file:{}",
                String::from_utf8_lossy(&fs::read(entry.path()).unwrap())
            )
        } else if ft.is_char_device() {
            format!("char:{}", m.rdev())
        } else if ft.is_block_device() {
            format!("block:{}", m.rdev())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            "other".to_string()
        };
        let mut line = format!(
            "{what} mode={:o} owner={}:{}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid()
        );
        if with_times && !ft.is_dir() {
            line += &format!(" mtime={}.{:09}", m.mtime(), m.mtime_nsec());
        }
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .display()
            .to_string();
        out.insert(rel, line);
    }
    out
}

/// The paths of a tree with just their kind and content (no modes), for stage checks.
pub fn shape(root: &Path) -> Vec<String> {
    describe(root, false)
        .into_iter()
        .map(|(p, d)| {
            let kind = d.split(" mode=").next().unwrap().to_string();
            format!("{p} {kind}")
        })
        .collect()
}

/// Sets a path's atime and mtime (not following a final symlink).
pub fn set_mtime(path: &std::path::Path, sec: i64, nsec: u32) {
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: i64::from(nsec) as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: i64::from(nsec) as _,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &t,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Copies the tree `src` into the existing directory `dst` with everything `changes_dirs`
/// compares (modes, owners, nanosecond times, xattrs, hard links), as a vfs layer is made
/// from its parent. GNU `cp -a`: the archive crate's tests cannot use graphdriver's copy.
pub fn copy_tree(src: &Path, dst: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg("--no-target-directory")
        .arg(src.join("."))
        .arg(dst)
        .status()
        .expect("run cp -a");
    assert!(
        status.success(),
        "cp -a {} {}: {status}",
        src.display(),
        dst.display()
    );
}
