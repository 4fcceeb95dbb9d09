//! Layer tars: the tar header codec, safe apply with whiteouts, walks, changes and export.
//!
//! A layer tar describes a filesystem diff. Deletions are *whiteouts*: an empty entry
//! `dir/.wh.<name>` deletes `dir/<name>`, and `dir/.wh..wh..opq` makes `dir` *opaque* (hides
//! everything the lower layers had in it). This crate:
//!
//! * reads and writes tar headers ([`codec`]: one [`Header`] type, [`TarReader`],
//!   [`TarWriter`], entry-name cleaning) exactly as Go's `archive/tar` reads them, with hard
//!   caps on what one header may make us allocate ([`Limits`]);
//! * applies a layer tar under a root directory ([`apply_layer`]) in one of two flavours
//!   ([`WhiteoutFormat`]): **plain** (whiteouts delete, as moby's `UnpackLayer`, for vfs and
//!   naive drivers) or **overlay** (whiteouts become char 0/0 devices and opaque dirs get the
//!   `trusted.overlay.opaque=y` xattr, as overlayfs expects in an upper dir);
//! * walks a directory into a tar ([`walk::tar_directory`]) with a hook to convert entries
//!   (overlay2 uses it to turn its upper dir back into `.wh.` form);
//! * computes the [`Change`]s between two trees ([`changes::changes_dirs`]) and exports them
//!   as a tar with whiteouts ([`export::export_changes`]);
//! * maps owners between a container and the host ([`IdMapping`], Docker's `--userns-remap`):
//!   [`ApplyOptions::id_map`] on the way in, [`owners::ContainerOwners`] on the way out; or,
//!   where no owner can be set (a single-ID user namespace), records them in
//!   `user.containers.override_stat` ([`override_stat`]).
//!
//! Every path of an entry is resolved inside the root with `openat2(RESOLVE_IN_ROOT)` (the
//! [`safe_root`] crate), and every metadata call is made on a file descriptor or on a parent
//! dirfd with `AT_SYMLINK_NOFOLLOW`, so nothing in the tar can make us touch a file outside
//! the root, whatever links it plants.
//!
//! ```
//! use layer_archive::{apply_layer, ApplyOptions, Header, TarWriter};
//!
//! // Build a tiny layer: one file, then a whiteout of a file the lower layer had.
//! let mut tar = TarWriter::new(Vec::new());
//! tar.append(&Header::file("etc/motd", 6), Some(&mut &b"hello\n"[..])).unwrap();
//! tar.append(&Header::file("etc/.wh.issue", 0), None).unwrap();
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
//!
//! # Features
//!
//! * `fs` (default): [`apply`], [`walk`], [`changes`], [`export`] and [`ApplyOptions`], which
//!   act on a real filesystem through [`safe_root`] and `rustix` (Linux). Without it the
//!   crate is the portable part only: [`codec`], [`Change`], the whiteout names and
//!   [`Error`], for users that only parse or write tar headers (`default-features = false`).
//!
//! # Errors
//!
//! [`Error`] keeps bad input ([`Error::BadEntry`], [`Error::BadTar`]) apart from I/O
//! ([`Error::Io`]: no space, EIO, a read-only filesystem…, with the operation and path;
//! [`Error::Read`]: the input stream broke), so a full disk is never reported as a hostile
//! tar ([`Error::is_bad_input`]). Messages name the layer and the file; an OS error is the
//! `source()`, never repeated in the message.
//!
//! # What it refuses
//!
//! What Go's `archive/tar` refuses (the codec reads as Go reads) and what Docker's
//! extraction refuses, and deliberately beyond them (details and reasons in [`codec`] and
//! [`apply`]):
//!
//! * more than 8 chained extension headers (`x`/`g`/`L`/`K`) before one entry, and names,
//!   xattrs or sparse maps over the caps in [`Limits`] (bounded memory);
//! * entry names that climb above the root (`../x`; `/../x` is `x`, as in moby), a
//!   non-directory entry naming the root, owners outside 0..2^32-1, and the whiteout names
//!   `.wh.`, `.wh..` and `.wh...`;
//! * a layer root that is itself a symlink (CVE-2018-15664's shape).

#![warn(missing_docs, unreachable_pub)]
// Without `fs` the crate doc still names the modules it leaves out.
#![cfg_attr(not(feature = "fs"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "fs")]
pub mod apply;
pub mod change;
#[cfg(feature = "fs")]
pub mod changes;
pub mod codec;
mod error;
#[cfg(feature = "fs")]
pub mod export;
pub mod idmap;
pub mod override_stat;
#[cfg(feature = "fs")]
pub mod owners;
#[cfg(feature = "fs")]
pub mod walk;

#[cfg(feature = "fs")]
pub use apply::{Applied, apply_layer, apply_layer_report, apply_layer_with_usage};
pub use change::{Change, ChangeKind};
pub use codec::name::CleanName;
pub use codec::{
    EntryDigest, EntryKind, EntrySequence, Header, HeaderStyle, Limits, SparseRegion, TarError,
    TarReader, TarWriter, Time,
};
pub use error::{Error, Result};
pub use idmap::{IdMapping, IdRange};

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

/// Options for [`apply_layer`].
#[cfg(feature = "fs")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// How whiteouts are materialised.
    pub whiteouts: WhiteoutFormat,
    /// Do not chown entries (unprivileged runs). Ownership then stays with the caller.
    pub no_lchown: bool,
    /// Force every entry (and implied directory) to this `(uid, gid)` instead of the tar's.
    pub chown: Option<(u32, u32)>,
    /// Container → host ID mapping of the owners (moby's `IDMap`, Docker's
    /// `--userns-remap`): an owner outside its ranges is an error; implied directories are
    /// owned by its root pair. The identity by default.
    pub id_map: IdMapping,
    /// Do not chown: record each file's and directory's owner in
    /// `user.containers.override_stat` instead (see [`override_stat`]). For a user namespace
    /// that maps a single ID, where no other owner can be set;
    /// [`ApplyOptions::for_current_user`] turns it on there.
    pub record_owners: bool,
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

#[cfg(feature = "fs")]
impl Default for ApplyOptions {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        ApplyOptions {
            whiteouts: WhiteoutFormat::Plain,
            no_lchown: false,
            chown: None,
            id_map: IdMapping::identity(),
            record_owners: false,
            best_effort_xattrs: false,
            user_overlay_xattrs: false,
            skip_devices_without_privilege: !root,
            layer: String::new(),
            limits: Limits::default(),
        }
    }
}

#[cfg(feature = "fs")]
impl ApplyOptions {
    /// Options suited to the current user: as root, everything is restored; otherwise chown
    /// is skipped and device nodes are skipped (what moby does in a user namespace). As root
    /// of a user namespace that maps a single ID, owners are recorded instead of set
    /// ([`ApplyOptions::record_owners`]).
    pub fn for_current_user() -> Self {
        let root = rustix::process::geteuid().is_root();
        ApplyOptions {
            no_lchown: !root,
            record_owners: root && owners::single_id_user_namespace(),
            // moby skips devices whenever it runs in a user namespace (mknod is refused there).
            skip_devices_without_privilege: !root || owners::in_user_namespace(),
            ..ApplyOptions::default()
        }
    }

    /// The same options, naming `layer` in errors.
    pub fn with_layer(mut self, layer: impl Into<String>) -> Self {
        self.layer = layer.into();
        self
    }
}
