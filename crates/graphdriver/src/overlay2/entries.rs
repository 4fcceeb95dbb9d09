//! Entries of a layer directory as overlayfs stores them: a sorted listing, and the whiteout
//! test (a char 0/0 device). Shared by the native changes, the lower-layer view and export.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{FileType, Stat};

use crate::error::{Error, Result};

/// Entry names of a directory, sorted, without `.` and `..`.
pub(crate) fn sorted_names(fd: &OwnedFd, path: &Path) -> Result<Vec<OsString>> {
    let mut dir =
        rustix::fs::Dir::read_from(fd).map_err(|e| Error::io("readdir", path, e.into()))?;
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(|e| Error::io("readdir", path, e.into()))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether `st` is an overlay whiteout: a character device 0/0.
pub(crate) fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}
