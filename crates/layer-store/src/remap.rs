//! Where a remapped store lives: `<data-root>/<uid>.<gid>/`, as dockerd `--userns-remap`
//! lays it out (moby's `setupDaemonRoot`).
//!
//! With an ID mapping, the data-root is mode 0710 owned by `(our uid, remapped root gid)`,
//! and the store itself is the subdirectory named after the remapped root pair, 0710 with the
//! same owner, so a Docker daemon started with the same `--userns-remap` on the same
//! `--data-root` finds the same layers. As dockerd, opening refuses a path one of whose
//! ancestors the remapped root cannot traverse (a container could not reach its mounted
//! rootfs there).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use graphdriver::IdMapping;

use crate::error::{Error, Result};

/// The directory the store for `id_map` uses under `data_root`: `data_root` itself for the
/// identity, else `<data_root>/<uid>.<gid>` of the remapped root.
pub fn store_root(data_root: &Path, id_map: &IdMapping) -> PathBuf {
    if id_map.is_empty() {
        return data_root.to_path_buf();
    }
    let (uid, gid) = id_map.root_pair();
    data_root.join(format!("{uid}.{gid}"))
}

/// Creates (or fixes the permissions of) the data-root and, with a mapping, the remapped
/// store root; returns the store root.
pub(crate) fn prepare(data_root: &Path, id_map: &IdMapping) -> Result<PathBuf> {
    std::fs::create_dir_all(data_root)
        .map_err(|e| Error::io(format!("create data-root {}", data_root.display()), e))?;
    if id_map.is_empty() {
        return Ok(data_root.to_path_buf());
    }
    let (root_uid, root_gid) = id_map.root_pair();
    let owner = (rustix::process::geteuid().as_raw(), root_gid);
    set_permissions(data_root, 0o710, owner)?;
    let root = store_root(data_root, id_map);
    match std::fs::create_dir(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("create {}", root.display()), e)),
    }
    set_permissions(&root, 0o710, owner)?;
    let absolute = std::path::absolute(&root)
        .map_err(|e| Error::io(format!("resolve {}", root.display()), e))?;
    let mut dir = absolute.parent();
    while let Some(d) = dir {
        if d == Path::new("/") {
            break;
        }
        if !can_traverse(d, (root_uid, root_gid)) {
            return Err(Error::InvalidArgument(format!(
                "a subdirectory in your graphroot path ({}) restricts access to the remapped root uid/gid; please fix by allowing 'o+x' permissions on existing directories",
                absolute.display()
            )));
        }
        dir = d.parent();
    }
    Ok(root)
}

/// moby's `setPermissions`: chmod and chown only what differs.
fn set_permissions(path: &Path, mode: u32, (uid, gid): (u32, u32)) -> Result<()> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    if meta.mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
    }
    if (meta.uid(), meta.gid()) != (uid, gid) {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| Error::io(format!("chown {}", path.display()), e))?;
    }
    Ok(())
}

/// moby's `CanAccess`: the owner, group or other execute bit that applies to `(uid, gid)`.
fn can_traverse(dir: &Path, (uid, gid): (u32, u32)) -> bool {
    let Ok(meta) = std::fs::metadata(dir) else {
        return false;
    };
    let perm = meta.mode();
    (meta.uid() == uid && perm & 0o100 != 0)
        || (meta.gid() == gid && perm & 0o010 != 0)
        || perm & 0o001 != 0
}
