//! Disk usage of a layer's own files, as Docker's `directory.Size`.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Sum of the sizes of every non-directory under `dir` (symlinks count their target length),
/// counting hard-linked inodes once. Only inodes with several links are remembered, so memory
/// follows the number of hard links, not of files.
pub(crate) fn directory_size(dir: &Path) -> Result<u64> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = 0u64;
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            Error::io("walk", path, e.into())
        })?;
        let meta = entry
            .metadata()
            .map_err(|e| Error::io("lstat", entry.path(), e.into()))?;
        if meta.is_dir() || meta.len() == 0 {
            continue;
        }
        if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.len();
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
