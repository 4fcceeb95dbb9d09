//! Owners on the way from disk into a tar, and the user namespace this process runs in.
//!
//! Files of a remapped store are owned by host IDs, and files applied in a single-ID user
//! namespace carry their owners in `user.containers.override_stat` ([`crate::override_stat`]).
//! [`ContainerOwners`] is the [`EntryConverter`] that puts the container's owners into the
//! headers a walk or an export writes, so `rw diff` and commit produce the tar an unmapped
//! store would:
//!
//! * with an [`IdMapping`], each owner is mapped host → container (moby's tar appender with
//!   an `IdentityMapping`); as in moby, an overlay whiteout (char 0/0) and a `.wh.` entry are
//!   left alone (the kernel makes whiteouts as the mounter, outside the ranges), and an owner
//!   outside the ranges is an error naming the file;
//! * with recorded owners, a file's or directory's `user.containers.override_stat` gives its
//!   owner, and the xattr itself never reaches the tar.
//!
//! ```
//! use layer_archive::owners::ContainerOwners;
//! use layer_archive::walk::{tar_directory, NoConversion, WalkOptions};
//! use layer_archive::{IdMapping, IdRange};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("f"), "x").unwrap();
//! let me = rustix::process::geteuid().as_raw();
//! let my_gid = rustix::process::getegid().as_raw();
//! // Our own IDs are container root.
//! let ids = IdMapping::new(vec![IdRange::new(0, me, 1)], vec![IdRange::new(0, my_gid, 1)]).unwrap();
//! let mut owners = ContainerOwners::new(&ids, false, NoConversion);
//! let tar = tar_directory(dir.path(), Vec::new(), &WalkOptions::default(), &mut owners).unwrap();
//! let mut archive = tar::Archive::new(&tar[..]);
//! let entry = archive.entries().unwrap().next().unwrap().unwrap();
//! assert_eq!((entry.header().uid().unwrap(), entry.header().gid().unwrap()), (0, 0));
//! ```

use std::io;

use rustix::fs::FileType;

use crate::idmap::IdMapping;
use crate::override_stat::{OVERRIDE_STAT_XATTR, OverrideStat};
use crate::walk::{Converted, EntryConverter, WalkEntry};
use crate::{Header, WHITEOUT_PREFIX};

/// An [`EntryConverter`] that writes container owners, then hands the header to `inner`.
/// See the [module documentation](self).
#[derive(Debug)]
pub struct ContainerOwners<'a, C> {
    ids: &'a IdMapping,
    recorded: bool,
    inner: C,
}

impl<'a, C: EntryConverter> ContainerOwners<'a, C> {
    /// Maps owners back through `ids`; with `recorded`, reads them from
    /// `user.containers.override_stat` where a file has it.
    pub fn new(ids: &'a IdMapping, recorded: bool, inner: C) -> Self {
        ContainerOwners {
            ids,
            recorded,
            inner,
        }
    }

    /// Whether this converter changes anything (else callers may skip it).
    pub fn is_noop(&self) -> bool {
        self.ids.is_empty() && !self.recorded
    }
}

impl<C: EntryConverter> EntryConverter for ContainerOwners<'_, C> {
    fn convert(&mut self, entry: &WalkEntry<'_>, mut header: Header) -> io::Result<Converted> {
        let meta = entry.meta;
        let kind_holds_xattr =
            matches!(meta.file_type, FileType::RegularFile | FileType::Directory);
        let mut recorded = false;
        if self.recorded && kind_holds_xattr {
            header
                .xattrs
                .retain(|(k, _)| k.as_slice() != OVERRIDE_STAT_XATTR.as_bytes());
            if let Some(value) =
                safe_root::get_xattr_at(entry.dir, entry.name, c"user.containers.override_stat")?
            {
                let st: OverrideStat = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "{}: malformed {OVERRIDE_STAT_XATTR} {:?}",
                                String::from_utf8_lossy(entry.rel),
                                String::from_utf8_lossy(&value)
                            ),
                        )
                    })?;
                header.uid = st.uid.into();
                header.gid = st.gid.into();
                recorded = true;
            }
        }
        let is_overlay_whiteout = meta.file_type == FileType::CharacterDevice && meta.rdev == 0;
        let base = entry.rel.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let is_whiteout = is_overlay_whiteout || base.starts_with(WHITEOUT_PREFIX.as_bytes());
        if !self.ids.is_empty() && !is_whiteout && !recorded {
            let (uid, gid) = self.ids.to_container(meta.uid, meta.gid).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", String::from_utf8_lossy(entry.rel)),
                )
            })?;
            header.uid = uid.into();
            header.gid = gid.into();
        }
        self.inner.convert(entry, header)
    }
}

/// Whether this process runs in a user namespace other than the initial one (its
/// `uid_map` is not the identity over every ID).
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        Err(_) => false,
    }
}

/// Whether this process runs in a user namespace whose UID map (or GID map) holds exactly one
/// ID: `chown` to any other owner fails there, so owners are recorded rather than set.
pub fn single_id_user_namespace() -> bool {
    let single = |path: &str| {
        std::fs::read_to_string(path).is_ok_and(|map| {
            let lines: Vec<Vec<&str>> = map
                .lines()
                .map(|l| l.split_whitespace().collect())
                .filter(|f: &Vec<&str>| !f.is_empty())
                .collect();
            lines.len() == 1 && lines[0].get(2) == Some(&"1")
        })
    };
    single("/proc/self/uid_map") || single("/proc/self/gid_map")
}
