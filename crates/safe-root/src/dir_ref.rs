//! [`DirRef`]: a directory below a walk root, named rather than held open.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::OFlags;

use crate::fd::{component, open_dir_at};

/// A directory below a walk root, reopened on demand. Walks keep these instead of open
/// fds so that depth costs no descriptors; to keep every reopen under `PATH_MAX`, a
/// directory whose path from its anchor would grow past [`DirRef::MAX_REL`] bytes becomes
/// an anchor itself (its fd is held, shared by its descendants).
#[derive(Debug, Clone, Default)]
pub struct DirRef {
    anchor: Option<std::sync::Arc<OwnedFd>>,
    rel: Vec<u8>,
}

impl DirRef {
    /// Longest path reopened in one lookup.
    pub const MAX_REL: usize = 2048;

    /// The walk root itself.
    pub fn root() -> Self {
        DirRef::default()
    }

    /// The child directory `name` of this one.
    pub fn child(&self, root: BorrowedFd<'_>, name: &[u8]) -> io::Result<DirRef> {
        if self.rel.len() + 1 + name.len() > Self::MAX_REL {
            let parent = self.open(root)?;
            let fd = open_dir_at(parent.as_fd(), &component(name)?)?;
            return Ok(DirRef {
                anchor: Some(std::sync::Arc::new(fd)),
                rel: Vec::new(),
            });
        }
        let mut rel = self.rel.clone();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name);
        Ok(DirRef {
            anchor: self.anchor.clone(),
            rel,
        })
    }

    /// Opens the directory (readable, never through a final symlink), resolving inside its
    /// anchor (or `root`).
    pub fn open(&self, root: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        let base = self.anchor.as_deref().map(|f| f.as_fd()).unwrap_or(root);
        crate::resolve::open_beneath(
            base,
            &self.rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        )
    }
}
