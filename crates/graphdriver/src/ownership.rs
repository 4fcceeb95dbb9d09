//! Who owns what a driver writes, under an ID mapping (moby's `uidMaps`/`gidMaps` given to a
//! driver's `Init`).
//!
//! With a mapping (Docker's `--userns-remap`), as moby 20.10 does:
//!
//! * directories of the driver itself that container root must traverse (the home, a layer's
//!   directory) are `(our uid, remapped root gid)`, mode 0710: moby's `dirID`;
//! * a layer's own root (vfs's layer dir, overlay2's `diff/`, `work/` and `merged/`) belongs
//!   to the remapped root pair;
//! * tars applied map owners container → host, tars produced map them back.
//!
//! Without one nothing is chowned here (what is created belongs to the process already).

use std::os::fd::AsFd;
use std::path::Path;

use layer_archive::owners::ContainerOwners;
use layer_archive::walk::EntryConverter;
use layer_archive::{ApplyOptions, IdMapping};

use crate::error::{Error, Result};

/// A driver's ID mapping and whether owners are recorded in xattrs rather than set (a
/// single-ID user namespace, decided once when the driver starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    id_map: IdMapping,
    recorded: bool,
}

impl Default for Ownership {
    /// The identity, owners recorded where this process must (a single-ID user namespace).
    fn default() -> Self {
        Ownership::new(IdMapping::identity())
    }
}

impl Ownership {
    /// The ownership rules for `id_map` in the current process.
    pub fn new(id_map: IdMapping) -> Self {
        Ownership {
            id_map,
            recorded: ApplyOptions::for_current_user().record_owners,
        }
    }

    /// The mapping.
    pub fn id_map(&self) -> &IdMapping {
        &self.id_map
    }

    /// Whether owners are kept in `user.containers.override_stat` instead of being set.
    pub fn records_owners(&self) -> bool {
        self.recorded
    }

    /// Whether the mapping is the identity (nothing to chown or map).
    pub fn is_identity(&self) -> bool {
        self.id_map.is_empty()
    }

    /// The remapped root's host `(uid, gid)`.
    pub fn root_pair(&self) -> (u32, u32) {
        self.id_map.root_pair()
    }

    /// moby's `dirID`: our UID, the remapped root's GID.
    pub fn dir_id(&self) -> (u32, u32) {
        (rustix::process::geteuid().as_raw(), self.root_pair().1)
    }

    /// `base` with this mapping applied to the owners.
    pub fn apply_options(&self, base: ApplyOptions) -> ApplyOptions {
        ApplyOptions {
            id_map: self.id_map.clone(),
            ..base
        }
    }

    /// A converter writing container owners into produced tars, then `inner`'s changes.
    pub fn converter<C: EntryConverter>(&self, inner: C) -> ContainerOwners<'_, C> {
        ContainerOwners::new(&self.id_map, self.recorded, inner)
    }

    /// Gives the directory at `path` to `owner` when there is a mapping and it is not theirs
    /// already (moby's `setPermissions` chowns only what differs).
    pub fn chown_dir(&self, path: &Path, owner: (u32, u32)) -> Result<()> {
        if self.is_identity() {
            return Ok(());
        }
        let fd = rustix::fs::open(
            path,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::io("open", path, e.into()))?;
        chown_fd_if_needed(fd.as_fd(), owner).map_err(|e| Error::io("chown", path, e.into()))
    }
}

/// `fchown` unless the file already has `owner`.
pub(crate) fn chown_fd_if_needed(
    fd: std::os::fd::BorrowedFd<'_>,
    (uid, gid): (u32, u32),
) -> rustix::io::Result<()> {
    let st = rustix::fs::fstat(fd)?;
    if (st.st_uid, st.st_gid) == (uid, gid) {
        return Ok(());
    }
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
}
