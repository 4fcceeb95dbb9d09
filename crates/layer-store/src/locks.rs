//! Locks: one process per data-root, and one operation per RW-layer name.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use crate::error::{Error, Result};

/// An exclusive `flock` on `<data-root>/layerstore.lock`, held for the store's
/// life. Two processes opening one root could otherwise both commit, remove and collect
/// "orphans" that the other is still writing. The kernel drops the lock when the process dies,
/// so a crash never leaves the root locked.
#[derive(Debug)]
pub(crate) struct RootLock {
    _file: File,
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
        Ok(RootLock { _file: file })
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
