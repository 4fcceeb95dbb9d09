//! Graph drivers: how container layers live on disk.
//!
//! A layer store asks a driver to create layer directories, fill them from tar diffs, mount
//! them as a union view, and turn them back into tar diffs. This crate holds:
//!
//! * [`driver`]: the [`ProtoDriver`], [`DiffDriver`] and [`Driver`] traits;
//! * [`change`]: the [`Change`] list `docker diff` prints.

pub mod archive;
pub mod change;
pub mod copy;
pub mod driver;
pub mod error;
pub mod fsutil;
pub mod graphtest;
pub mod naive;
pub mod options;
pub mod overlay2;
pub mod safe_root;
pub mod vfs;

pub use change::{Change, ChangeKind};
pub use driver::{CreateOpts, DiffDriver, Driver, ProtoDriver, Status, TarStream};
pub use error::{Error, Result};
