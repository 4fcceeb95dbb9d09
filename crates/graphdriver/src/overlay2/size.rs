//! Disk usage of a layer's own files, as Docker's `directory.Size`.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use safe_root::DirRef;

use crate::error::{Error, Result};

/// Sum of the sizes of every non-directory under `dir` (symlinks count their target length),
/// counting hard-linked inodes once. Only inodes with several links are remembered, so memory
/// follows the number of hard links, not of files. Walked fd-relative, one directory open at
/// a time, so any depth works.
pub(crate) fn directory_size(dir: &Path) -> Result<u64> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = 0u64;
    let root = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open", dir, e.into()))?;
    let mut pending = vec![(DirRef::root(), PathBuf::new())];
    while let Some((at, rel)) = pending.pop() {
        let path = dir.join(&rel);
        let fd = at
            .open(root.as_fd())
            .map_err(|e| Error::io("open", &path, e))?;
        for name in safe_root::list_dir(fd.as_fd()).map_err(|e| Error::io("readdir", &path, e))? {
            let meta = match safe_root::lstat_at(fd.as_fd(), &name) {
                Ok(m) => m,
                // Gone since the listing (a running container).
                Err(e) if safe_root::errno_of(&e) == Some(rustix::io::Errno::NOENT) => continue,
                Err(e) => {
                    return Err(Error::io(
                        "lstat",
                        path.join(OsStr::from_bytes(name.to_bytes())),
                        e,
                    ));
                }
            };
            if meta.is_dir() {
                let child = at
                    .child(root.as_fd(), name.to_bytes())
                    .map_err(|e| Error::io("open", &path, e))?;
                pending.push((child, rel.join(OsStr::from_bytes(name.to_bytes()))));
                continue;
            }
            if meta.size == 0 {
                continue;
            }
            if meta.nlink > 1 && !seen.insert((meta.dev, meta.ino)) {
                continue;
            }
            total += meta.size;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::directory_size;
    use layer_archive::{ApplyOptions, WhiteoutFormat, apply_layer_with_usage};
    use layer_archive::{Header, TarWriter};

    fn tar(entries: &[(Header, &[u8])]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        for (h, body) in entries {
            let mut body = *body;
            let data: Option<&mut dyn std::io::Read> = if body.is_empty() {
                None
            } else {
                Some(&mut body)
            };
            w.append(h, data).unwrap();
        }
        w.finish().unwrap()
    }

    fn apply(entries: &[(Header, &[u8])]) -> (Option<u64>, u64) {
        let root = tempfile::tempdir().unwrap();
        let opts = ApplyOptions {
            whiteouts: WhiteoutFormat::Overlay,
            no_lchown: !rustix::process::geteuid().is_root(),
            skip_devices_without_privilege: true,
            ..ApplyOptions::default()
        };
        let bytes = tar(entries);
        let (_, usage) = apply_layer_with_usage(root.path(), &mut &bytes[..], &opts).unwrap();
        (usage, directory_size(root.path()).unwrap())
    }

    /// The usage counted during apply is exactly what the walk measures afterwards, or
    /// unknown when the layer replaced or removed its own entries.
    #[test]
    fn counted_usage_equals_the_walk() {
        // Overlay whiteouts: mknod of 0:0 devices and trusted.overlay.opaque.
        testkit::require!(testkit::gate::root(
            "overlay whiteouts (mknod, trusted.* xattrs)"
        ));
        let plain = [
            (Header::dir("d"), &b""[..]),
            (Header::file("d/a", 5), &b"hello"[..]),
            (Header::file("d/empty", 0), &b""[..]),
            (Header::symlink("d/link", "a-rather-long-target"), &b""[..]),
            (Header::hardlink("d/a2", "d/a"), &b""[..]),
            (Header::hardlink("d/link2", "d/link"), &b""[..]),
            (Header::file("implied/deep/f", 3), &b"abc"[..]),
            (Header::file("d/.wh.gone", 0), &b""[..]),
            (Header::file("d/.wh..wh..opq", 0), &b""[..]),
        ];
        let (usage, walked) = apply(&plain);
        assert_eq!(usage, Some(walked));
        assert_eq!(walked, 5 + 20 + 3);

        let replaced = [
            (Header::file("f", 3), &b"abc"[..]),
            (Header::file("f", 1), &b"x"[..]),
        ];
        let (usage, walked) = apply(&replaced);
        assert_eq!(usage, None);
        assert_eq!(walked, 1);

        let whited_out = [
            (Header::file("f", 3), &b"abc"[..]),
            (Header::file(".wh.f", 0), &b""[..]),
        ];
        assert_eq!(apply(&whited_out).0, None);
    }

    /// A root that already holds files gives no count.
    #[test]
    fn non_empty_root_is_not_counted() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("old"), b"old").unwrap();
        let bytes = tar(&[(Header::file("new", 1), &b"n"[..])]);
        let opts = ApplyOptions {
            no_lchown: true,
            ..ApplyOptions::default()
        };
        let (_, usage) = apply_layer_with_usage(root.path(), &mut &bytes[..], &opts).unwrap();
        assert_eq!(usage, None);
    }
}
