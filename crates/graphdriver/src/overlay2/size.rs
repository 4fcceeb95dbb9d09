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
