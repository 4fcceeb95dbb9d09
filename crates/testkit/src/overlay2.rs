//! For the overlay2 driver's tests (feature `driver`): whether they can run, tree
//! descriptions with overlay's markers, mount counts, and a driver that unmounts on drop.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether overlay tests can run here (root with overlayfs); otherwise the skip is recorded
/// by testkit (counted, and a failure under `CI=true`).
pub fn can_run() -> bool {
    crate::gate::overlay().is_ok()
}

/// Permission bits of a path (not following a final symlink).
pub fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn mount_points() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect()
}

/// Whether something is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    count_mounts(path) > 0
}

/// How many mounts are stacked at `path`.
pub fn count_mounts(path: &Path) -> usize {
    mount_points()
        .iter()
        .filter(|p| p.as_path() == path)
        .count()
}

/// Deterministic bytes for a seed (testkit's xorshift).
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    crate::tree::pseudo_random(seed, len)
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    rustix::fs::lgetxattr(path, name, &mut buf[..])
        .ok()
        .map(|n| {
            buf.truncate(n);
            buf
        })
}

/// A description of every path under `root`: type, mode, owner, size, content digest,
/// symlink target, device numbers, overlay opaque marker (and mtime seconds when asked).
pub fn tree(root: &Path, with_mtime: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap();
        let m = entry.path().symlink_metadata().unwrap();
        let kind = m.mode() & 0o170000;
        let mut d = format!("mode={:o} uid={} gid={}", m.mode(), m.uid(), m.gid());
        match kind {
            0o100000 => {
                let data = std::fs::read(entry.path()).unwrap();
                d += &format!(" size={} sum={:016x}", data.len(), fnv(&data));
            }
            0o120000 => {
                d += &format!(
                    " -> {}",
                    std::fs::read_link(entry.path()).unwrap().display()
                );
            }
            0o020000 | 0o060000 => d += &format!(" rdev={}", m.rdev()),
            0o040000 => {
                if let Some(v) = xattr(entry.path(), "trusted.overlay.opaque") {
                    d += &format!(" opaque={}", String::from_utf8_lossy(&v));
                }
            }
            _ => {}
        }
        if let Some(cap) = xattr(entry.path(), "security.capability") {
            d += &format!(" cap={cap:?}");
        }
        // Whiteouts get the time they were made (Docker mknods them and sets no time), and
        // symlink times are not restored either.
        let whiteout = kind == 0o020000 && m.rdev() == 0;
        if with_mtime && kind != 0o120000 && !whiteout {
            d += &format!(" mtime={}", m.mtime());
        }
        out.insert(
            String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned(),
            d,
        );
    }
    out
}

/// FNV-1a of `data` (a short content fingerprint for tree descriptions).
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Prints the differences of two trees (for assertion messages).
pub fn tree_diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in a {
        match b.get(k) {
            None => out += &format!("only left:  {k} {v}\n"),
            Some(w) if w != v => out += &format!("differs:    {k}\n  left  {v}\n  right {w}\n"),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            out += &format!("only right: {k} {v}\n");
        }
    }
    out
}

/// A driver that unmounts whatever it left under its home when dropped, so a failing test
/// does not leak mounts (declare it after the temp dir so it drops first).
#[derive(Debug)]
pub struct Guarded(pub graphdriver::overlay2::Overlay2);

impl std::ops::Deref for Guarded {
    type Target = graphdriver::overlay2::Overlay2;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = graphdriver::ProtoDriver::cleanup(&self.0);
    }
}
