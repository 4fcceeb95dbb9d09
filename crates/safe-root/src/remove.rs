//! Removing trees without following symlinks, at any depth.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{AtFlags, Mode};

use crate::dir_ref::DirRef;
use crate::fd::{errno_of, fstat, is_root, list_dir, open_dir_at, open_path_at, proc_fd_path};

/// Removes `name` in `dir` and, if it is a directory, everything below it. Never follows
/// symlinks. A missing entry is not an error.
///
/// Iterative over [`DirRef`]s instead of recursion over open fds, so a tree of any depth
/// costs neither stack nor (beyond one per [`DirRef::MAX_REL`] bytes of depth) descriptors.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    use rustix::io::Errno;
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    struct Pending {
        parent: DirRef,
        name: CString,
        expanded: bool,
    }
    let mut stack = vec![Pending {
        parent: DirRef::root(),
        name: name.to_owned(),
        expanded: false,
    }];
    while let Some(item) = stack.pop() {
        let parent = match item.parent.open(dir) {
            Ok(fd) => fd,
            Err(e) if errno_of(&e) == Some(Errno::NOENT) => continue,
            Err(e) => return Err(e),
        };
        if item.expanded {
            match rustix::fs::unlinkat(&parent, &*item.name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let opened = match open_dir_at(parent.as_fd(), &item.name) {
            // A directory without read/search permission for its (non-root) owner, as
            // images have (0555 trees, 0000 dirs): grant it, it is going away anyway.
            Err(e) if errno_of(&e) == Some(Errno::ACCESS) => {
                let path_fd = open_path_at(parent.as_fd(), &item.name)?;
                rustix::fs::chmodat(
                    rustix::fs::CWD,
                    &*proc_fd_path(path_fd.as_fd(), None),
                    Mode::from_raw_mode(0o700),
                    AtFlags::empty(),
                )?;
                open_dir_at(parent.as_fd(), &item.name)
            }
            other => other,
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) if errno_of(&e) == Some(Errno::NOENT) => continue,
            // Replaced by a non-directory since it was listed: unlink that instead.
            Err(e) if matches!(errno_of(&e), Some(Errno::NOTDIR | Errno::LOOP)) => {
                match rustix::fs::unlinkat(&parent, &*item.name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e),
        };
        let this = item.parent.child(dir, item.name.to_bytes())?;
        stack.push(Pending {
            parent: item.parent,
            name: item.name,
            expanded: true,
        });
        let meta = fstat(fd.as_fd())?;
        if meta.perm & 0o700 != 0o700 && !is_root() {
            // Unlinking entries needs write and search permission on the directory.
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.perm | 0o700))?;
        }
        for child in list_dir(fd.as_fd())? {
            match rustix::fs::unlinkat(&fd, &*child, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(Errno::ISDIR) | Err(Errno::PERM) => {
                    stack.push(Pending {
                        parent: this.clone(),
                        name: child,
                        expanded: false,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Removes everything inside the directory `dir`.
pub fn clear_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    for child in list_dir(dir)? {
        remove_all_at(dir, &child)?;
    }
    Ok(())
}
