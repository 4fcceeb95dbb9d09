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
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::entries::{is_whiteout, sorted_names};
use super::features::read_xattr_at;
use super::lowers::{DirView, LowerStack, ViewRef};
use crate::error::{Error, Result};
use layer_archive::change::{Change, ChangeKind};
use safe_root::DirRef;

/// Changes of the layer whose upper dir is `upper` against the parent made of `parent_layers`
/// (diff dirs, uppermost first; empty: no parent, everything is added). `None` when the upper
/// dir cannot be trusted as a diff.
///
/// The walk is iterative and fd-relative: a stack of frames named by [`DirRef`], where only
/// the deepest directory (in the upper dir and in each parent layer) is held open, so any
/// depth costs neither stack, nor a descriptor per level, nor a path past `PATH_MAX`.
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
    walk.run(upper_fd, parent_root)?;
    if walk.unsafe_entry {
        return Ok(None);
    }
    let mut out = walk.out;
    out.sort();
    Ok(Some(out))
}

/// Whether no entry of the upper dir carries a `redirect` (renamed directory) or `metacopy`
/// (data still in a lower layer) xattr, i.e. the upper dir alone is the layer's diff. Costs
/// one or two xattr reads per upper-dir entry. Walked fd-relative, one directory open at a
/// time, at any depth.
pub(crate) fn upper_is_self_contained(upper: &Path, xattr_prefix: &str) -> Result<bool> {
    let redirect = format!("{xattr_prefix}redirect");
    let metacopy = format!("{xattr_prefix}metacopy");
    let root = open_dir(None, upper)?;
    let mut pending = vec![(DirRef::root(), PathBuf::new())];
    while let Some((at, rel)) = pending.pop() {
        let path = upper.join(&rel);
        let fd = at
            .open(root.as_fd())
            .map_err(|e| Error::io("open", &path, e))?;
        for name in sorted_names(&fd, &path)? {
            let Some(st) = lstat_at(&fd, &name, &path.join(&name))? else {
                continue;
            };
            let kind = FileType::from_raw_mode(st.st_mode);
            if (kind == FileType::Directory && read_xattr_at(&fd, &name, &redirect).is_some())
                || (kind == FileType::RegularFile && read_xattr_at(&fd, &name, &metacopy).is_some())
            {
                return Ok(false);
            }
            if kind == FileType::Directory {
                let child = at
                    .child(root.as_fd(), name.as_bytes())
                    .map_err(|e| Error::io("open", path.join(&name), e))?;
                pending.push((child, rel.join(&name)));
            }
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

/// One upper directory being walked.
struct Frame {
    /// Its path below the upper dir.
    rel: PathBuf,
    /// How to reopen it, and its fd while it is the deepest frame.
    at: DirRef,
    fd: Option<OwnedFd>,
    names: Vec<OsString>,
    next: usize,
    /// The same directory in the parent view, when it is a directory there (and the frame
    /// is not `added`): named per layer, open while the frame is the deepest.
    parent: Option<(ViewRef, Option<DirView>)>,
    opaque: bool,
    /// The whole directory is new.
    added: bool,
    /// Names handled here, for an opaque directory's sweep.
    present: HashSet<OsString>,
    /// For a directory the parent has: where its `C` goes, and whether its own stat changed.
    modify_at: Option<(usize, bool)>,
}

impl Frame {
    /// The upper directory's fd, reopened if a deeper frame closed it.
    fn upper_fd(&mut self, upper_root: &OwnedFd, root_path: &Path) -> Result<&OwnedFd> {
        if self.fd.is_none() {
            let fd = self
                .at
                .open(upper_root.as_fd())
                .map_err(|e| Error::io("open", root_path.join(&self.rel), e))?;
            self.fd = Some(fd);
        }
        Ok(self.fd.as_ref().expect("opened above"))
    }
}

impl Walk<'_> {
    fn push(&mut self, rel: &Path, kind: ChangeKind) {
        self.out.push(Change {
            path: Path::new("/").join(rel),
            kind,
        });
    }

    fn run(&mut self, upper_fd: OwnedFd, parent_root: DirView) -> Result<()> {
        let root_path = self.upper_root.to_path_buf();
        let upper_root = upper_fd
            .try_clone()
            .map_err(|e| Error::io("dup", &root_path, e))?;
        let lower_roots = parent_root.try_clone_fds(&root_path)?;
        let names = sorted_names(&upper_fd, &root_path)?;
        let mut frames = vec![Frame {
            rel: PathBuf::new(),
            at: DirRef::root(),
            fd: Some(upper_fd),
            names,
            next: 0,
            parent: Some((ViewRef::root(&parent_root), Some(parent_root))),
            opaque: false,
            added: false,
            present: HashSet::new(),
            modify_at: None,
        }];
        while let Some(frame) = frames.last_mut() {
            if self.unsafe_entry {
                return Ok(());
            }
            if frame.next >= frame.names.len() {
                let done = frames.pop().expect("a frame");
                self.finish(done, &lower_roots)?;
                continue;
            }
            let name = frame.names[frame.next].clone();
            frame.next += 1;
            let rel = frame.rel.clone();
            let child = rel.join(&name);
            let child_upper_path = self.upper_root.join(&child);
            let upper = frame.upper_fd(&upper_root, &root_path)?;
            let Some(st) = lstat_at(upper, &name, &child_upper_path)? else {
                continue;
            };
            let (added, opaque) = (frame.added, frame.opaque);
            let old = match (added, &mut frame.parent) {
                (false, Some((view_ref, view))) => {
                    if view.is_none() {
                        *view = Some(view_ref.open(&lower_roots, self.stack, &rel)?);
                    }
                    let view = view.as_ref().expect("opened above");
                    self.stack
                        .lookup(view, &rel, &name)?
                        .map(|found| (found, view_ref.clone()))
                }
                _ => None,
            };
            let upper = frame.fd.as_ref().expect("opened above");
            if is_whiteout(&st) {
                if old.is_some() {
                    self.push(&child, ChangeKind::Delete);
                }
                // Handled: an opaque directory's sweep below must not delete it again.
                frame.present.insert(name);
                continue;
            }
            frame.present.insert(name.clone());
            if is_dir(&st) {
                if read_xattr_at(upper, &name, &self.redirect_name).is_some() {
                    self.unsafe_entry = true;
                    return Ok(());
                }
                let child_fd = open_dir(Some((upper, &name)), &child_upper_path)?;
                let child_opaque =
                    read_xattr_at(upper, &name, &self.opaque_name).as_deref() == Some(b"y");
                let capability = read_xattr_at(upper, &name, "security.capability");
                let at = frame
                    .at
                    .child(upper_root.as_fd(), name.as_bytes())
                    .map_err(|e| Error::io("open", &child_upper_path, e))?;
                let (parent, added, modify_at) = match old {
                    None => {
                        self.push(&child, ChangeKind::Add);
                        (None, true, None)
                    }
                    Some((old, view_ref)) => match old.dir {
                        None => {
                            // A non-directory replaced by a directory.
                            self.push(&child, ChangeKind::Modify);
                            (None, true, None)
                        }
                        Some(old_dir) => {
                            let view = frame.parent.as_ref().and_then(|(_, v)| v.as_ref());
                            let changed = stat_different(&old.stat, &st)
                                || capability
                                    != view.and_then(|v| {
                                        v.xattr(old.layer, &name, "security.capability")
                                    });
                            let child_ref =
                                view_ref.child(&old_dir, &lower_roots, &name, &child)?;
                            (
                                Some((child_ref, Some(old_dir))),
                                false,
                                Some((self.out.len(), changed)),
                            )
                        }
                    },
                };
                let names = sorted_names(&child_fd, &child_upper_path)?;
                // Hold only the deepest directories open.
                frame.fd = None;
                if let Some((_, view)) = &mut frame.parent {
                    *view = None;
                }
                frames.push(Frame {
                    rel: child,
                    at,
                    fd: Some(child_fd),
                    names,
                    next: 0,
                    parent,
                    opaque: opaque || child_opaque,
                    added,
                    present: HashSet::new(),
                    modify_at,
                });
            } else {
                if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                    && read_xattr_at(upper, &name, &self.metacopy_name).is_some()
                {
                    self.unsafe_entry = true;
                    return Ok(());
                }
                if let Some((old, _)) = old {
                    let view = frame.parent.as_ref().and_then(|(_, v)| v.as_ref());
                    if stat_different(&old.stat, &st)
                        || read_xattr_at(upper, &name, "security.capability")
                            != view.and_then(|v| v.xattr(old.layer, &name, "security.capability"))
                    {
                        self.push(&child, ChangeKind::Modify);
                    }
                } else {
                    self.push(&child, ChangeKind::Add);
                }
            }
        }
        Ok(())
    }

    /// A directory is done: an opaque one's sweep of what the parent still shows, then its
    /// own `C` when it or anything below it changed.
    fn finish(&mut self, mut frame: Frame, lower_roots: &[(usize, OwnedFd)]) -> Result<()> {
        if frame.opaque
            && !frame.added
            && let Some((view_ref, view)) = &mut frame.parent
        {
            if view.is_none() {
                *view = Some(view_ref.open(lower_roots, self.stack, &frame.rel)?);
            }
            let view = view.as_ref().expect("opened above");
            for name in self.stack.names(view, &frame.rel)? {
                if !frame.present.contains(&name) {
                    self.push(&frame.rel.join(&name), ChangeKind::Delete);
                }
            }
        }
        if let Some((mark, changed)) = frame.modify_at
            && (changed || self.out.len() > mark)
        {
            self.out.insert(
                mark,
                Change {
                    path: Path::new("/").join(&frame.rel),
                    kind: ChangeKind::Modify,
                },
            );
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
        testkit::require!(testkit::gate::root("trusted.* xattrs"));
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir(upper.path().join("moved")).unwrap();
        if !set_xattr(
            &upper.path().join("moved"),
            "trusted.overlay.redirect",
            b"/orig",
        ) {
            let _ = testkit::gate::lacking("trusted xattrs", "the filesystem refuses them");
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
