//! Choosing and opening the graph driver for a data-root, as Docker does.

use std::path::Path;
use std::sync::Arc;

use graphdriver::Registry;
use graphdriver::{Driver, IdMapping};

use crate::error::{Error, Result};

/// The drivers this store knows, in Docker's order of preference.
pub const DRIVERS: &[&str] = &["overlay2", "vfs"];

/// Every graph driver Docker has registered on Linux or Windows, in moby's priority order
/// (`daemon/graphdriver/driver_linux.go`), then the Windows ones: the names whose state under
/// a data-root means that root belongs to that driver.
const DOCKER_DRIVERS: &[&str] = &[
    "btrfs",
    "zfs",
    "overlay2",
    "fuse-overlayfs",
    "aufs",
    "overlay",
    "devicemapper",
    "vfs",
    "windowsfilter",
    "lcow",
];

/// The drivers whose state is under `root`: home `<root>/<name>` a non-empty directory (moby's
/// `scanPriorDrivers`), or `image/<name>/layerdb` present.
fn with_state(root: &Path) -> Vec<&'static str> {
    DOCKER_DRIVERS
        .iter()
        .copied()
        .filter(|name| {
            let home_used = std::fs::read_dir(root.join(name))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            home_used || root.join("image").join(name).join("layerdb").is_dir()
        })
        .collect()
}

/// The driver already in use under `root` (`None` on a fresh root). A root that another
/// Docker driver uses ([`Error::ForeignDriver`]) or several drivers use is an error, as in
/// Docker.
pub fn in_use(root: &Path) -> Result<Option<String>> {
    Ok(prior(root)?.map(str::to_owned))
}

/// The driver a root without an explicit choice must use: the one in use there (`None` when
/// none is). A root used by a driver this store cannot run is refused, naming it, instead of
/// being opened empty with overlay2 beside it (after which dockerd refuses the root: "contains
/// several valid graphdrivers"); several drivers in use is an error, as in Docker.
pub(crate) fn prior(root: &Path) -> Result<Option<&'static str>> {
    match with_state(root).as_slice() {
        [] => Ok(None),
        [one] if DRIVERS.contains(one) => Ok(Some(*one)),
        [one] => Err(Error::ForeignDriver {
            path: root.to_path_buf(),
            driver: (*one).to_owned(),
            supported: DRIVERS.join(", "),
        }),
        many => Err(Error::InvalidArgument(format!(
            "{} contains several valid graphdrivers: {}; cleanup or explicitly choose storage driver",
            root.display(),
            many.join(", ")
        ))),
    }
}

/// Picks and starts the driver for a root without an explicit choice: the one already in use
/// there, else overlay2 when it starts on this kernel and filesystem, else vfs.
pub(crate) fn choose_and_open(
    root: &Path,
    options: &[String],
    id_map: &IdMapping,
) -> Result<(String, Arc<dyn Driver>)> {
    if let Some(name) = prior(root)? {
        let d = open(name, root, options, id_map)?;
        return Ok((name.to_owned(), d));
    }
    match open("overlay2", root, options, id_map) {
        Ok(d) => return Ok(("overlay2".into(), d)),
        Err(e) => {
            tracing::info!(error = %crate::error::with_causes(&e), "overlay2 unavailable, using vfs")
        }
    }
    // overlay2's probe may have left its empty home behind; it must not count as "in use".
    let _ = std::fs::remove_dir(root.join("overlay2"));
    Ok(("vfs".into(), open("vfs", root, options, id_map)?))
}

/// The name of the driver `open` would pick for `root`: the one in use there, else overlay2
/// when it starts, else vfs.
pub fn choose(root: &Path, options: &[String]) -> Result<String> {
    Ok(choose_and_open(root, options, &IdMapping::identity())?.0)
}

/// Starts driver `name` with its home at `<root>/<name>`.
pub(crate) fn open(
    name: &str,
    root: &Path,
    options: &[String],
    id_map: &IdMapping,
) -> Result<Arc<dyn Driver>> {
    Ok(Arc::from(
        Registry::with_builtin().new_driver_with_id_map(name, root, options, id_map)?,
    ))
}
