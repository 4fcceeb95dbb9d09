//! The parent's merged view read straight from its layer directories, without mounting.
//!
//! Overlay's lookup rules, applied in user space to a stack of diff dirs (uppermost first):
//! the uppermost layer that has a name decides: a whiteout (char 0/0) hides it, a
//! non-directory is the entry. A directory merges with the same directory in the layers
//! below until one of them is opaque (`trusted.overlay.opaque=y`) or has a non-directory or a
//! whiteout there. The merged directory's own attributes are the uppermost one's.
//!
//! Only valid for layers without redirect or metacopy xattrs, which Docker's layers (made
//! by tar apply or by a kernel without `redirect_dir`/`metacopy`) never have.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::entries::{is_whiteout, sorted_names};
use crate::error::{Error, Result};
use safe_root::DirRef;

/// One directory of the merged view: the layer directories that make it, uppermost first,
/// each with the index of its layer.
#[derive(Debug)]
pub(crate) struct DirView {
    layers: Vec<(usize, OwnedFd)>,
}

impl DirView {
    /// Copies of its descriptors (the lower roots, for [`ViewRef`]s to reopen from).
    pub(super) fn try_clone_fds(&self, what: &Path) -> Result<Vec<(usize, OwnedFd)>> {
        self.layers
            .iter()
            .map(|(i, fd)| {
                fd.try_clone()
                    .map(|fd| (*i, fd))
                    .map_err(|e| Error::io("dup", what, e))
            })
            .collect()
    }

    /// The xattr `attr` of the entry `name` of this directory in layer `layer`.
    pub(super) fn xattr(&self, layer: usize, name: &OsStr, attr: &str) -> Option<Vec<u8>> {
        let (_, fd) = self.layers.iter().find(|(i, _)| *i == layer)?;
        super::features::read_xattr_at(fd, name, attr)
    }
}

/// A [`DirView`] named instead of held: per layer, the directory below that layer's root.
/// Walks keep these for the directories above the deepest one, so depth costs no
/// descriptors.
#[derive(Debug, Clone)]
pub(crate) struct ViewRef {
    layers: Vec<(usize, DirRef)>,
}

impl ViewRef {
    /// The merged root `view`.
    pub(super) fn root(view: &DirView) -> Self {
        ViewRef {
            layers: view
                .layers
                .iter()
                .map(|(i, _)| (*i, DirRef::root()))
                .collect(),
        }
    }

    /// Opens the directories again, inside `roots` (the lower roots' fds by layer).
    pub(super) fn open(
        &self,
        roots: &[(usize, OwnedFd)],
        stack: &LowerStack,
        rel: &Path,
    ) -> Result<DirView> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, at) in &self.layers {
            let root = root_of(roots, *i, stack, rel)?;
            let fd = at
                .open(root.as_fd())
                .map_err(|e| Error::io("open", stack.path_in(*i, rel), e))?;
            layers.push((*i, fd));
        }
        Ok(DirView { layers })
    }

    /// The reference of `child` (the directory `name` below this one, at `rel`), made of the
    /// layers `child` merges.
    pub(super) fn child(
        &self,
        child: &DirView,
        roots: &[(usize, OwnedFd)],
        name: &OsStr,
        rel: &Path,
    ) -> Result<ViewRef> {
        let mut layers = Vec::with_capacity(child.layers.len());
        for (i, _) in &child.layers {
            let Some((_, at)) = self.layers.iter().find(|(j, _)| j == i) else {
                return Err(Error::Other(format!(
                    "overlay2: {}: layer {i} is not in its parent's view",
                    rel.display()
                )));
            };
            let root = roots
                .iter()
                .find(|(j, _)| j == i)
                .map(|(_, fd)| fd)
                .ok_or_else(|| Error::Other(format!("overlay2: no root for layer {i}")))?;
            let at = at
                .child(root.as_fd(), name.as_bytes())
                .map_err(|e| Error::io("open", rel, e))?;
            layers.push((*i, at));
        }
        Ok(ViewRef { layers })
    }
}

fn root_of<'r>(
    roots: &'r [(usize, OwnedFd)],
    layer: usize,
    stack: &LowerStack,
    rel: &Path,
) -> Result<&'r OwnedFd> {
    roots
        .iter()
        .find(|(j, _)| *j == layer)
        .map(|(_, fd)| fd)
        .ok_or_else(|| {
            Error::Other(format!(
                "overlay2: no root for {}",
                stack.path_in(layer, rel).display()
            ))
        })
}

/// What the merged view has at a name.
#[derive(Debug)]
pub(crate) struct Found {
    /// The stat the merged view shows (the uppermost layer's).
    pub stat: Stat,
    /// The layer it comes from (for reading its xattrs).
    pub layer: usize,
    /// For a directory, the merged directory below it.
    pub dir: Option<DirView>,
}

fn open_dir_at(dir: &OwnedFd, name: &OsStr, what: &Path) -> Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open", what, e.into()))
}

fn lstat_at(dir: &OwnedFd, name: &OsStr, what: &Path) -> Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(Error::io("lstat", what, e.into())),
    }
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

fn fd_is_opaque(fd: &OwnedFd, opaque_name: &str) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::fgetxattr(fd, opaque_name, &mut buf[..]), Ok(1) if buf[0] == b'y')
}

/// The merged view of a stack of layer roots.
#[derive(Debug)]
pub(crate) struct LowerStack {
    roots: Vec<PathBuf>,
    opaque_name: String,
}

impl LowerStack {
    pub(super) fn new(roots: Vec<PathBuf>, xattr_prefix: &str) -> Self {
        LowerStack {
            roots,
            opaque_name: format!("{xattr_prefix}opaque"),
        }
    }

    /// The path of `rel` inside layer `layer` (for error messages and xattr reads).
    pub(super) fn path_in(&self, layer: usize, rel: &Path) -> PathBuf {
        self.roots[layer].join(rel)
    }

    /// The merged root directory: every layer's root (the kernel ignores opacity there).
    pub(super) fn root(&self) -> Result<DirView> {
        let mut layers = Vec::new();
        for (i, root) in self.roots.iter().enumerate() {
            // The roots are `l/<LINK>` symlinks: follow them here, and nowhere below.
            let fd = rustix::fs::open(
                root,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("open", root, e.into()))?;
            layers.push((i, fd));
        }
        Ok(DirView { layers })
    }

    /// Looks `name` up in the merged directory `dir` (whose path is `rel`).
    pub(super) fn lookup(&self, dir: &DirView, rel: &Path, name: &OsStr) -> Result<Option<Found>> {
        let child = rel.join(name);
        let mut layers = dir.layers.iter();
        let top = loop {
            let Some((i, fd)) = layers.next() else {
                return Ok(None);
            };
            if let Some(st) = lstat_at(fd, name, &self.path_in(*i, &child))? {
                break (*i, fd, st);
            }
        };
        let (top_layer, top_fd, stat) = top;
        if is_whiteout(&stat) {
            return Ok(None);
        }
        if !is_dir(&stat) {
            return Ok(Some(Found {
                stat,
                layer: top_layer,
                dir: None,
            }));
        }
        let mut merged = Vec::new();
        let fd = open_dir_at(top_fd, name, &self.path_in(top_layer, &child))?;
        let mut opaque = fd_is_opaque(&fd, &self.opaque_name);
        merged.push((top_layer, fd));
        for (i, lower) in layers {
            if opaque {
                break;
            }
            match lstat_at(lower, name, &self.path_in(*i, &child))? {
                None => continue,
                Some(st) if is_dir(&st) => {
                    let fd = open_dir_at(lower, name, &self.path_in(*i, &child))?;
                    opaque = fd_is_opaque(&fd, &self.opaque_name);
                    merged.push((*i, fd));
                }
                // A whiteout or a non-directory ends the merge.
                Some(_) => break,
            }
        }
        Ok(Some(Found {
            stat,
            layer: top_layer,
            dir: Some(DirView { layers: merged }),
        }))
    }

    /// The names the merged directory `dir` (at `rel`) shows.
    pub(super) fn names(&self, dir: &DirView, rel: &Path) -> Result<Vec<OsString>> {
        let mut decided: HashSet<OsString> = HashSet::new();
        let mut present = Vec::new();
        for (i, fd) in &dir.layers {
            let path = self.path_in(*i, rel);
            for name in sorted_names(fd, &path)? {
                if decided.contains(&name) {
                    continue;
                }
                let st = lstat_at(fd, &name, &path.join(&name))?;
                decided.insert(name.clone());
                if st.is_some_and(|st| !is_whiteout(&st)) {
                    present.push(name);
                }
            }
        }
        present.sort();
        Ok(present)
    }
}
