//! Native changes: read the upper dir, look up in the parent only what the upper dir names.
//!
//! The result is what the naive comparison of the mounted layer with its parent would give
//! (moby's `ChangesDirs`), but the walk touches the upper dir and, for each entry found there,
//! one lookup in the parent's layers ([`super::lowers`], no mount) — so a container that
//! changed two files costs two lookups whatever the image size. The rules, per upper entry:
//!
//! * a whiteout (char 0/0) is `D` when the parent has the path;
//! * an entry the parent lacks is `A`, and so is everything under it;
//! * an entry the parent has is `C` when its stat differs as the naive walk judges it (mode,
//!   owner, rdev; plus mtime and size for non-directories) or its `security.capability`;
//! * in an opaque directory (the kernel marks a directory opaque when it is re-created after a
//!   delete, containers/storage#141, so opacity alone is not a deletion) every parent entry
//!   the upper dir does not have is `D`; opacity covers the whole subtree;
//! * a directory with any change below it is `C` itself (so permissions travel with it).
//!
//! Entries carrying overlay `redirect` or `metacopy` xattrs mean the upper dir does not say
//! everything; the walk then gives up (`None`) and the caller uses the naive comparison.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::entries::{is_whiteout, sorted_names};
use super::features::read_xattr;
use super::lowers::{DirView, LowerStack};
use crate::error::{Error, Result};
use layer_archive::change::{Change, ChangeKind};

/// Changes of the layer whose upper dir is `upper` against the parent made of `parent_layers`
/// (diff dirs, uppermost first; empty: no parent, everything is added). `None` when the upper
/// dir cannot be trusted as a diff.
pub(crate) fn upper_changes(
    id: &str,
    upper: &Path,
    parent_layers: Vec<PathBuf>,
    xattr_prefix: &str,
) -> Result<Option<Vec<Change>>> {
    let _span = tracing::debug_span!("overlay2_native_changes", id).entered();
    let stack = LowerStack::new(parent_layers, xattr_prefix);
    let mut walk = Walk {
        upper_root: upper,
        stack: &stack,
        opaque_name: format!("{xattr_prefix}opaque"),
        redirect_name: format!("{xattr_prefix}redirect"),
        metacopy_name: format!("{xattr_prefix}metacopy"),
        out: Vec::new(),
        unsafe_entry: false,
    };
    let upper_fd = open_dir(None, upper)?;
    let parent_root = stack.root()?;
    // The kernel ignores opacity on the root: the lower roots always show through.
    walk.dir(&upper_fd, Some(&parent_root), PathBuf::new(), false, false)?;
    if walk.unsafe_entry {
        return Ok(None);
    }
    let mut out = walk.out;
    out.sort();
    Ok(Some(out))
}

/// Whether no entry of the upper dir carries a `redirect` (renamed directory) or `metacopy`
/// (data still in a lower layer) xattr, i.e. the upper dir alone is the layer's diff. Costs
/// one or two xattr reads per upper-dir entry.
pub(crate) fn upper_is_self_contained(upper: &Path, xattr_prefix: &str) -> Result<bool> {
    let redirect = format!("{xattr_prefix}redirect");
    let metacopy = format!("{xattr_prefix}metacopy");
    for entry in walkdir::WalkDir::new(upper)
        .follow_links(false)
        .min_depth(1)
    {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(upper).to_path_buf();
            Error::io("walk", path, e.into())
        })?;
        let kind = entry.file_type();
        if (kind.is_dir() && read_xattr(entry.path(), &redirect).is_some())
            || (kind.is_file() && read_xattr(entry.path(), &metacopy).is_some())
        {
            return Ok(false);
        }
    }
    Ok(true)
}

struct Walk<'a> {
    upper_root: &'a Path,
    stack: &'a LowerStack,
    opaque_name: String,
    redirect_name: String,
    metacopy_name: String,
    out: Vec<Change>,
    unsafe_entry: bool,
}

fn open_dir(at: Option<(&OwnedFd, &OsStr)>, path: &Path) -> Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let opened = match at {
        Some((dir, name)) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        None => rustix::fs::open(path, flags, Mode::empty()),
    };
    opened.map_err(|e| Error::io("open", path, e.into()))
}

fn lstat_at(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(Error::io("lstat", path, e.into())),
    }
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// moby's `statDifferent`: directories compare mode, owner and rdev; other entries also
/// mtime (nanoseconds ignored when either side has none) and size.
fn stat_different(old: &Stat, new: &Stat) -> bool {
    #[allow(clippy::unnecessary_cast)]
    let same_time = old.st_mtime == new.st_mtime
        && (old.st_mtime_nsec == new.st_mtime_nsec
            || old.st_mtime_nsec == 0
            || new.st_mtime_nsec == 0);
    old.st_mode != new.st_mode
        || old.st_uid != new.st_uid
        || old.st_gid != new.st_gid
        || old.st_rdev != new.st_rdev
        || (!is_dir(old) && (!same_time || old.st_size != new.st_size))
}

impl Walk<'_> {
    fn is_opaque(&self, rel: &Path) -> bool {
        read_xattr(&self.upper_root.join(rel), &self.opaque_name).as_deref() == Some(b"y")
    }

    fn capability_differs(&self, rel: &Path, old_layer: usize) -> bool {
        read_xattr(&self.upper_root.join(rel), "security.capability")
            != read_xattr(&self.stack.path_in(old_layer, rel), "security.capability")
    }

    fn push(&mut self, rel: &Path, kind: ChangeKind) {
        self.out.push(Change {
            path: Path::new("/").join(rel),
            kind,
        });
    }

    /// Walks one upper directory. `parent` is the same directory in the parent view, when it
    /// exists there as a directory; `added` means the whole directory is new.
    fn dir(
        &mut self,
        upper: &OwnedFd,
        parent: Option<&DirView>,
        rel: PathBuf,
        opaque: bool,
        added: bool,
    ) -> Result<()> {
        let upper_path = self.upper_root.join(&rel);
        let mut present: HashSet<OsString> = HashSet::new();
        for name in sorted_names(upper, &upper_path)? {
            if self.unsafe_entry {
                return Ok(());
            }
            let child = rel.join(&name);
            let child_upper_path = self.upper_root.join(&child);
            let Some(st) = lstat_at(upper, &name, &child_upper_path)? else {
                continue;
            };
            let old = match (added, parent) {
                (false, Some(p)) => self.stack.lookup(p, &rel, &name)?,
                _ => None,
            };
            if is_whiteout(&st) {
                if old.is_some() {
                    self.push(&child, ChangeKind::Delete);
                }
                // Handled: an opaque directory's sweep below must not delete it again.
                present.insert(name);
                continue;
            }
            present.insert(name.clone());
            if is_dir(&st) {
                if read_xattr(&child_upper_path, &self.redirect_name).is_some() {
                    self.unsafe_entry = true;
                    return Ok(());
                }
                let child_fd = open_dir(Some((upper, &name)), &child_upper_path)?;
                match old {
                    None => {
                        self.push(&child, ChangeKind::Add);
                        self.dir(&child_fd, None, child, false, true)?;
                    }
                    Some(old) => match old.dir {
                        None => {
                            // A non-directory replaced by a directory.
                            self.push(&child, ChangeKind::Modify);
                            self.dir(&child_fd, None, child, false, true)?;
                        }
                        Some(old_dir) => {
                            let mark = self.out.len();
                            let changed = stat_different(&old.stat, &st)
                                || self.capability_differs(&child, old.layer);
                            let child_opaque = opaque || self.is_opaque(&child);
                            self.dir(
                                &child_fd,
                                Some(&old_dir),
                                child.clone(),
                                child_opaque,
                                false,
                            )?;
                            if changed || self.out.len() > mark {
                                self.out.insert(
                                    mark,
                                    Change {
                                        path: Path::new("/").join(&child),
                                        kind: ChangeKind::Modify,
                                    },
                                );
                            }
                        }
                    },
                }
            } else {
                if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                    && read_xattr(&child_upper_path, &self.metacopy_name).is_some()
                {
                    self.unsafe_entry = true;
                    return Ok(());
                }
                match old {
                    None => self.push(&child, ChangeKind::Add),
                    Some(old) => {
                        if stat_different(&old.stat, &st)
                            || self.capability_differs(&child, old.layer)
                        {
                            self.push(&child, ChangeKind::Modify);
                        }
                    }
                }
            }
        }
        if opaque
            && !added
            && let Some(p) = parent
        {
            for name in self.stack.names(p, &rel)? {
                if !present.contains(&name) {
                    self.push(&rel.join(&name), ChangeKind::Delete);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
        rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).is_ok()
    }

    #[test]
    fn without_parent_everything_is_added_and_whiteouts_are_ignored() {
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(upper.path().join("d/e")).unwrap();
        std::fs::write(upper.path().join("d/e/f"), "x").unwrap();
        std::fs::write(upper.path().join("g"), "y").unwrap();
        let got = upper_changes("t", upper.path(), Vec::new(), "trusted.overlay.")
            .unwrap()
            .unwrap();
        let shown: Vec<String> = got.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, ["A /d", "A /d/e", "A /d/e/f", "A /g"]);
    }

    #[test]
    fn redirect_or_metacopy_entries_make_the_walk_give_up() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: trusted.* xattrs need root");
            return;
        }
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir(upper.path().join("moved")).unwrap();
        if !set_xattr(
            &upper.path().join("moved"),
            "trusted.overlay.redirect",
            b"/orig",
        ) {
            eprintln!("skipping: filesystem refuses trusted xattrs");
            return;
        }
        assert!(
            upper_changes("t", upper.path(), Vec::new(), "trusted.overlay.")
                .unwrap()
                .is_none()
        );

        assert!(!upper_is_self_contained(upper.path(), "trusted.overlay.").unwrap());

        let upper = tempfile::tempdir().unwrap();
        std::fs::write(upper.path().join("f"), "").unwrap();
        assert!(upper_is_self_contained(upper.path(), "trusted.overlay.").unwrap());
        assert!(set_xattr(
            &upper.path().join("f"),
            "trusted.overlay.metacopy",
            b""
        ));
        assert!(
            upper_changes("t", upper.path(), Vec::new(), "trusted.overlay.")
                .unwrap()
                .is_none()
        );
    }
}
