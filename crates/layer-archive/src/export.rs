//! Exporting a change list as a layer tar (moby `ExportChanges`).
//!
//! Changes are written in byte order of their paths, so the output is deterministic:
//! a Delete becomes a whiteout entry `dir/.wh.name`, an Add or Modify the entry itself (not
//! its children: those have their own changes). The hardlink table is shared by the whole
//! export, so a second name of an inode becomes a hard link to the first one written.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::changes::split_change_path;
use super::walk::{EntryConverter, NoConversion, TarBuilder, WalkOptions, whiteout_header};
use crate::change::{Change, ChangeKind};
use safe_root::SafeRoot;

/// Writes `changes` of the tree at `dir` as a tar to `out` and returns `out`.
pub fn export_changes<W: Write>(
    dir: &Path,
    changes: &[Change],
    out: W,
    options: &WalkOptions,
) -> io::Result<W> {
    export_changes_with(dir, changes, out, options, &mut NoConversion)
}

/// [`export_changes`] with an entry converter.
pub fn export_changes_with<W: Write>(
    dir: &Path,
    changes: &[Change],
    out: W,
    options: &WalkOptions,
    converter: &mut dyn EntryConverter,
) -> io::Result<W> {
    let mut sorted: Vec<&Change> = changes.iter().collect();
    sorted.sort_by(|a, b| {
        a.path
            .as_os_str()
            .as_bytes()
            .cmp(b.path.as_os_str().as_bytes())
    });
    let mut root = SafeRoot::open(dir).map_err(safe_root::Error::into_io_error)?;
    let mut builder = TarBuilder::new(out, *options);
    for change in sorted {
        let Some((parent, base)) = split_change_path(&change.path) else {
            continue;
        };
        let rel = change.path.as_os_str().as_bytes();
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        if change.kind == ChangeKind::Delete {
            builder.writer().append(&whiteout_header(rel)?, None)?;
            continue;
        }
        let parent_fd = root
            .open_dir(parent)
            .map_err(|e| with_path(e.into_io_error(), rel))?;
        let base = safe_root::component(base)?;
        builder
            .append_entry(parent_fd.as_fd(), &base, rel, converter)
            .map_err(|e| with_path(e, rel))?;
    }
    builder.finish()
}

fn with_path(e: io::Error, rel: &[u8]) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("exporting {}: {e}", String::from_utf8_lossy(rel)),
    )
}
