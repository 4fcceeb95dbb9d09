//! Graph drivers: how container layers live on disk.
//!
//! A layer store asks a driver to create layer directories, fill them from tar diffs, mount
//! them as a union view, and turn them back into tar diffs. This crate holds:
//!
//! * the [`ProtoDriver`], [`DiffDriver`] and [`Driver`] traits;
//! * [`vfs`]: layers as full copies ([`copy`] clones with reflink where it can);
//! * [`naive`]: diff, changes and apply for any [`ProtoDriver`] by comparing trees;
//! * [`overlay2`]: Docker's overlay2 layout on kernel overlayfs, with native diffs;
//! * [`options`]: parsing `key=value` driver options;
//! * [`ownership`]: who owns what a driver writes under an ID mapping (`--userns-remap`);
//! * [`Registry`]: choosing a driver by name;
//! * `graphtest` (feature `graphtest`): moby's conformance suite, for any driver, this
//!   crate's and yours.
//!
//! Your own driver: implement [`ProtoDriver`] + [`DiffDriver`] (or [`ProtoDriver`] alone and
//! wrap it in [`naive::NaiveDiffDriver`]), check it with the `graphtest` suite, and either
//! [`Registry::register`] it under a name or hand it to `layer_store::Store::open_with_driver`.
//!
//! Tar apply, walk, changes and export are the [`layer_archive`] crate's (drivers call it;
//! [`Change`] is re-exported from it); path confinement and the fd helpers are [`safe_root`]'s.
//!
//! ```
//! use graphdriver::{CreateOpts, DiffDriver, ProtoDriver};
//! use graphdriver::Registry;
//!
//! let root = tempfile::tempdir().unwrap();
//! let driver = Registry::with_builtin().new_driver("vfs", root.path(), &[]).unwrap();
//! driver.create("base", None, &CreateOpts::default()).unwrap();
//! let mut tar = layer_archive::TarWriter::new(Vec::new());
//! tar.append(&layer_archive::Header::file("hello", 3), Some(&mut &b"hi\n"[..]))
//!     .unwrap();
//! let tar = tar.finish().unwrap();
//! driver.apply_diff("base", None, &mut &tar[..]).unwrap();
//! let changes = driver.changes("base", None).unwrap();
//! assert_eq!(changes[0].to_string(), "A /hello");
//! ```

#![warn(missing_docs, unreachable_pub)]

pub mod copy;
mod driver;
mod error;
#[cfg(feature = "graphtest")]
pub mod graphtest;
pub mod naive;
pub mod options;
pub mod overlay2;
pub mod ownership;
mod registry;
pub mod vfs;

pub use driver::{CreateOpts, DiffDriver, Driver, ProtoDriver, Status, TarStream};
pub use error::{Error, Result};
pub use layer_archive::{Change, ChangeKind, IdMapping, IdRange};
pub use registry::{InitFn, PRIORITY, Registry};
