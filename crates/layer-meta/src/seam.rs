//! The fault-injection seam: every step that changes the disk asks a [`FaultInjector`] first.
//!
//! Production stores have no injector. Tests install one that fails the Nth step with `ENOSPC`,
//! `EIO`, `EEXIST`... to prove that each failure is reported and leaves nothing half-visible.

use std::fmt;
use std::io;

/// One disk-changing step, with paths relative to the layerdb root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsOp<'a> {
    /// `mkdirat` (and the chmod that pins the mode).
    CreateDir {
        /// The new directory.
        path: &'a str,
    },
    /// `openat(O_CREAT|O_TRUNC)` of a file (and the chmod that pins the mode).
    CreateFile {
        /// The new file.
        path: &'a str,
    },
    /// One `write` call on a file.
    Write {
        /// The file written.
        path: &'a str,
        /// Bytes offered.
        len: usize,
    },
    /// `fsync` of a file.
    SyncFile {
        /// The file.
        path: &'a str,
    },
    /// `fsync` of a directory (makes its entries durable).
    SyncDir {
        /// The directory.
        path: &'a str,
    },
    /// `syncfs` of the filesystem holding the path.
    SyncFs {
        /// Any path on that filesystem.
        path: &'a str,
    },
    /// `renameat2(RENAME_NOREPLACE)`, or a plain rename where noted.
    Rename {
        /// Source.
        from: &'a str,
        /// Destination.
        to: &'a str,
    },
    /// `renameat2(RENAME_EXCHANGE)`.
    Exchange {
        /// One side.
        from: &'a str,
        /// The other side.
        to: &'a str,
    },
    /// `unlinkat`, of a file or an empty directory.
    Remove {
        /// What is removed.
        path: &'a str,
    },
}

/// Decides, before each disk-changing step, whether that step fails.
///
/// Return `Err` to make the step fail with that error without performing it.
pub trait FaultInjector: Send + Sync + fmt::Debug {
    /// Called before `op` is performed.
    fn before(&self, op: &FsOp<'_>) -> io::Result<()>;
}
