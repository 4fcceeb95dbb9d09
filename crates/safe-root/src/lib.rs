//! Resolve paths *inside* a directory, never outside it, and act on file descriptors.
//!
//! Extracting an untrusted layer tar means creating thousands of paths that the tar itself
//! can redirect: an entry `a -> /etc` followed by `a/passwd` must write `<root>/etc/passwd`,
//! never the host's. This crate is the one place that resolves such paths:
//!
//! * [`SafeRoot`]: a directory all lookups are confined to, with a cache of resolved
//!   directory fds and [`SafeRoot::ensure_dir`] (create what is missing, inside the root);
//! * [`open_beneath`]: one confined lookup, `openat2(RESOLVE_IN_ROOT |
//!   RESOLVE_NO_MAGICLINKS)`, or [`walk_beneath`], a component-by-component `openat` walk
//!   with the same rules where `openat2` is unavailable. Which errno means "unavailable"
//!   (and what `EAGAIN` means) is decided here once, for every user: see [`resolve`];
//! * fd helpers that take a directory fd plus *one* name component ([`lstat_at`],
//!   [`open_dir_at`], [`list_dir`], [`read_link_at`], xattrs…), never a path the kernel would
//!   resolve on its own;
//! * [`DirRef`], a directory below a walk root named by its path from an anchor fd, so deep
//!   trees cost neither stack nor descriptors, and [`remove_all_at`] built on it.
//!
//! ```
//! use std::os::fd::AsFd;
//! use rustix::fs::OFlags;
//! use safe_root::{SafeRoot, fstat};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let root = dir.path().join("root");
//! std::fs::create_dir_all(root.join("run")).unwrap();
//! // An absolute link, as valid layers have (`var/run -> /run`), and one that tries to leave.
//! std::os::unix::fs::symlink("/run", root.join("abs")).unwrap();
//! std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
//!
//! let mut r = SafeRoot::open(&root).unwrap();
//! // `/run` means `<root>/run`: the root is `/` for the whole lookup.
//! let fd = r.open_in_root(b"abs", OFlags::PATH | OFlags::DIRECTORY).unwrap();
//! let run = std::fs::metadata(root.join("run")).unwrap();
//! assert_eq!(fstat(fd.as_fd()).unwrap().ino, std::os::unix::fs::MetadataExt::ino(&run));
//! // `..` stops at the root: `up` is the root itself.
//! let up = r.open_dir(b"up").unwrap();
//! assert_eq!(fstat(up.as_fd()).unwrap().ino, fstat(r.root_fd()).unwrap().ino);
//! // Missing directories are created inside the root, through the link.
//! r.ensure_dir(b"abs/new", &mut |_, _| Ok(())).unwrap();
//! assert!(root.join("run/new").is_dir());
//! ```
//!
//! [`SafeRoot`]'s lookups fail with an [`Error`] that names the operation and the path (the
//! OS error is its `source()`); the fd helpers return plain `std::io::Error`s, as `rustix`
//! does.
//!
//! What it deliberately refuses:
//!
//! * magic links (`/proc/self/fd/*` and the like) during resolution (`RESOLVE_NO_MAGICLINKS`);
//! * a root that is itself a symlink ([`SafeRoot::open`] uses `O_NOFOLLOW`);
//! * names with NUL bytes, and more than 40 symlink hops in one lookup (`ELOOP`, as Linux).
//!
//! Linux only: `openat2`, `O_PATH` and `/proc/self/fd` have no portable equivalent.

#![warn(missing_docs, unreachable_pub)]

mod dir_ref;
mod error;
mod fd;
mod remove;
pub mod resolve;
mod root;

pub use dir_ref::DirRef;
pub use error::{Error, Result};
pub use fd::{
    Meta, component, errno_of, fstat, get_xattr_at, is_root, list_dir, list_xattrs_at, lstat_at,
    open_dir_at, open_path_at, proc_fd_path, read_link_at,
};
pub use remove::{clear_dir, remove_all_at};
pub use resolve::{EAGAIN_RETRIES, open_beneath, openat2_in_use, walk_beneath};
pub use root::SafeRoot;
