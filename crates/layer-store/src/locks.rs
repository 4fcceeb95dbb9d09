//! Locks: one store per data-root, and one operation per RW-layer name.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use crate::error::{Error, Result};

/// The lock files (device, inode) this process holds a [`RootLock`] on.
static OPEN_ROOTS: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// An exclusive `flock` on `<data-root>/layerstore.lock`, held for the store's
/// life. Two processes opening one root could otherwise both commit, remove and collect
/// "orphans" that the other is still writing. The kernel drops the lock when the process dies,
/// so a crash never leaves the root locked.
///
/// `flock` belongs to an open file, so a second open of the same root in the same process
/// would wait for itself forever; that is refused at once instead ([`Error::AlreadyOpen`]),
/// whatever path names the root.
#[derive(Debug)]
pub(crate) struct RootLock {
    _file: File,
    key: (u64, u64),
}

impl RootLock {
    pub(crate) fn acquire(root: &Path, lock_path: PathBuf, wait: bool) -> Result<RootLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("open lock file {}", lock_path.display()), e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("stat lock file {}", lock_path.display()), e))?;
        let key = (meta.dev(), meta.ino());
        {
            let mut open = OPEN_ROOTS.lock().unwrap_or_else(|e| e.into_inner());
            if open.contains(&key) {
                return Err(Error::AlreadyOpen {
                    path: root.to_path_buf(),
                });
            }
            open.push(key);
        }
        let lock = RootLock { _file: file, key };
        let file = &lock._file;
        if wait {
            file.lock()
                .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e))?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Locked {
                        path: root.to_path_buf(),
                        lock: lock_path,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io(format!("lock {}", lock_path.display()), e));
                }
            }
        }
        Ok(lock)
    }
}

impl Drop for RootLock {
    fn drop(&mut self) {
        OPEN_ROOTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k| *k != self.key);
    }
}

/// Per-name mutual exclusion (moby's `locker`): create, get and release of one RW-layer name
/// never interleave, while different names proceed in parallel.
#[derive(Debug, Default)]
pub(crate) struct NameLocks {
    held: Mutex<HashSet<String>>,
    freed: Condvar,
}

impl NameLocks {
    pub(crate) fn lock(&self, name: &str) -> NameGuard<'_> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.contains(name) {
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.insert(name.to_owned());
        NameGuard {
            locks: self,
            name: name.to_owned(),
        }
    }
}

/// Releases a name lock on drop.
#[derive(Debug)]
pub(crate) struct NameGuard<'a> {
    locks: &'a NameLocks,
    name: String,
}

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.name);
        self.locks.freed.notify_all();
    }
}
