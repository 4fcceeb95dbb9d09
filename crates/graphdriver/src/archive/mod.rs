//! Layer tars: safe apply with whiteouts, and export of changes as tars.
//!
//! A layer tar describes a filesystem diff. Deletions are *whiteouts*: an empty entry
//! `dir/.wh.<name>` deletes `dir/<name>`, and `dir/.wh..wh..opq` makes `dir` *opaque* (hides
//! everything the lower layers had in it). This module:
//!
//! * applies a layer tar under a root directory ([`apply_layer`]) in one of two flavours
//!   ([`WhiteoutFormat`]): **plain** (whiteouts delete, as moby's `UnpackLayer`, for vfs and
//!   naive drivers) or **overlay** (whiteouts become char 0/0 devices and opaque dirs get the
//!   `trusted.overlay.opaque=y` xattr, as overlayfs expects in an upper dir);
//! * walks a directory into a tar ([`walk::tar_directory`]) with a hook to convert entries
//!   (overlay2 uses it to turn its upper dir back into `.wh.` form);
//! * computes the changes between two trees ([`changes::changes_dirs`]) and exports them as a
//!   tar with whiteouts ([`export::export_changes`]).
//!
//! Every path of an entry is resolved inside the root with `openat2(RESOLVE_IN_ROOT)` (see
//! [`safe_root`]), and every metadata call is made on a file descriptor or on a parent
//! dirfd with `AT_SYMLINK_NOFOLLOW`, so nothing in the tar can make us touch a file outside
//! the root, whatever links it plants.
//!
//! ```
//! use graphdriver::archive::{apply_layer, ApplyOptions, writer::{TarWriter, TarHeader}};
//!
//! // Build a tiny layer: one file, then a whiteout of a file the lower layer had.
//! let mut tar = TarWriter::new(Vec::new());
//! tar.append(&TarHeader::file("etc/motd", 6), Some(&mut &b"hello\n"[..])).unwrap();
//! tar.append(&TarHeader::file("etc/.wh.issue", 0), None).unwrap();
//! let tar = tar.finish().unwrap();
//!
//! let root = tempfile::tempdir().unwrap();
//! std::fs::create_dir(root.path().join("etc")).unwrap();
//! std::fs::write(root.path().join("etc/issue"), "old").unwrap();
//! let opts = ApplyOptions { no_lchown: true, ..ApplyOptions::default() };
//! let size = apply_layer(root.path(), &mut &tar[..], &opts).unwrap();
//! assert_eq!(size, 6); // the sum of the header sizes
//! assert_eq!(std::fs::read(root.path().join("etc/motd")).unwrap(), b"hello\n");
//! assert!(!root.path().join("etc/issue").exists());
//! ```

pub mod apply;
pub mod changes;
pub mod export;
pub mod name;
pub mod reader;
pub mod walk;
pub mod writer;

pub use apply::{apply_layer, apply_layer_with_usage};
pub use reader::{EntryHeader, EntryKind, SparseRegion, TarError, TarReader, Time};

/// Prefix of a whiteout entry's base name: `.wh.<name>` deletes `<name>`.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Prefix of AUFS metadata entries at the layer root (`.wh..wh.plnk`, …); never extracted.
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// Base name that marks its directory opaque.
pub const WHITEOUT_OPAQUE_DIR: &str = ".wh..wh..opq";
/// AUFS hardlink directory (not supported by this implementation; see [`apply`]).
pub const WHITEOUT_LINK_DIR: &str = ".wh..wh.plnk";
/// Mode of directories created because an entry needed them but the tar did not list them.
pub const IMPLIED_DIRECTORY_MODE: u32 = 0o755;
/// The overlayfs opaque-directory xattr (root) and its user-namespace form.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The opaque xattr used by overlayfs mounted with `userxattr`.
pub const OVERLAY_OPAQUE_USER_XATTR: &str = "user.overlay.opaque";

/// How whiteouts in a tar become files on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutFormat {
    /// `.wh.x` deletes `x`; `.wh..wh..opq` deletes what lower layers had in the dir. The
    /// result is a plain merged tree (moby `UnpackLayer`).
    #[default]
    Plain,
    /// `.wh.x` becomes a char 0/0 device `x`; `.wh..wh..opq` sets the opaque xattr on the
    /// dir. The result is an overlayfs upper dir (moby `Unpack` with the overlay converter).
    Overlay,
}

/// Caps on what a single tar header may make us allocate. The defaults are generous for real
/// layers and small enough that hostile input cannot exhaust memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of one PAX (local or global) extension header (Go uses 1 MiB).
    pub max_pax_bytes: u64,
    /// Maximum length of an entry name or link target, in bytes (Linux `PATH_MAX`).
    pub max_path_bytes: usize,
    /// Maximum number of xattrs on one entry.
    pub max_xattrs: usize,
    /// Maximum size of one xattr value (Linux `XATTR_SIZE_MAX`).
    pub max_xattr_value_bytes: usize,
    /// Maximum total size of names and values of one entry's xattrs.
    pub max_xattr_total_bytes: usize,
    /// Maximum number of data regions of one sparse file (CVE-2025-58183 shape).
    pub max_sparse_regions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pax_bytes: 1 << 20,
            max_path_bytes: 4096,
            max_xattrs: 128,
            max_xattr_value_bytes: 64 * 1024,
            max_xattr_total_bytes: 256 * 1024,
            max_sparse_regions: 1 << 16,
        }
    }
}

/// Options for [`apply_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// How whiteouts are materialised.
    pub whiteouts: WhiteoutFormat,
    /// Do not chown entries (unprivileged runs). Ownership then stays with the caller.
    pub no_lchown: bool,
    /// Force every entry (and implied directory) to this `(uid, gid)` instead of the tar's.
    pub chown: Option<(u32, u32)>,
    /// Ignore `EOPNOTSUPP` when setting xattrs (moby `BestEffortXattrs`,
    /// `vfs.xattrs=i_want_broken_containers`).
    pub best_effort_xattrs: bool,
    /// Use `user.overlay.opaque` instead of `trusted.overlay.opaque` (overlay `userxattr`).
    pub user_overlay_xattrs: bool,
    /// Skip device nodes that cannot be created (EPERM), as moby does in a user namespace.
    /// Defaults to true when not running as root.
    pub skip_devices_without_privilege: bool,
    /// Layer name used in error messages.
    pub layer: String,
    /// Header caps.
    pub limits: Limits,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        ApplyOptions {
            whiteouts: WhiteoutFormat::Plain,
            no_lchown: false,
            chown: None,
            best_effort_xattrs: false,
            user_overlay_xattrs: false,
            skip_devices_without_privilege: !root,
            layer: String::new(),
            limits: Limits::default(),
        }
    }
}

impl ApplyOptions {
    /// Options suited to the current user: as root, everything is restored; otherwise chown
    /// is skipped and device nodes are skipped (what moby does in a user namespace).
    pub fn for_current_user() -> Self {
        let root = rustix::process::geteuid().is_root();
        ApplyOptions {
            no_lchown: !root,
            ..ApplyOptions::default()
        }
    }

    /// The same options, naming `layer` in errors.
    pub fn with_layer(mut self, layer: impl Into<String>) -> Self {
        self.layer = layer.into();
        self
    }
}
