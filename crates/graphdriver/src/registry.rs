//! Choosing a driver by name: a [`Registry`] maps driver names to constructors.
//! [`Registry::with_builtin`] knows `overlay2` and `vfs`; other drivers register themselves
//! with [`Registry::register`]. With no name given, [`Registry::new_driver`] picks as moby
//! does: the driver with prior state, else the first of [`PRIORITY`] that starts here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::driver::Driver;
use crate::error::{Error, Result};
use layer_archive::IdMapping;

/// Builds a driver whose home is `<root>/<name>` from its options and the owners' ID mapping
/// (moby's `InitFunc(root, options, uidMaps, gidMaps)`).
pub type InitFn =
    fn(root: &Path, options: &[String], id_map: &IdMapping) -> Result<Box<dyn Driver>>;

/// Drivers moby removed; asking for them explains that instead of "not supported".
const REMOVED_DRIVERS: [&str; 3] = ["aufs", "devicemapper", "overlay"];

/// The order tried when no driver is named and no prior state exists (moby's list).
pub const PRIORITY: [&str; 5] = ["overlay2", "fuse-overlayfs", "btrfs", "zfs", "vfs"];

/// Driver constructors by name.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    drivers: BTreeMap<String, InitFn>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// A registry with this crate's drivers: `overlay2` (home `<root>/overlay2`) and `vfs`
    /// (home `<root>/vfs`).
    pub fn with_builtin() -> Self {
        let mut r = Registry::new();
        r.drivers.insert("vfs".into(), |root, options, id_map| {
            Ok(Box::new(crate::vfs::init_with_id_map(
                root, options, id_map,
            )?))
        });
        r.drivers
            .insert("overlay2".into(), |root, options, id_map| {
                let opts = crate::overlay2::Overlay2Options {
                    id_map: id_map.clone(),
                    ..crate::overlay2::Overlay2Options::parse(options)?
                };
                Ok(Box::new(crate::overlay2::Overlay2::new(
                    root.join("overlay2"),
                    opts,
                )?))
            });
        r
    }

    /// Adds a driver; a name already present is an error, as in moby.
    pub fn register(&mut self, name: &str, init: InitFn) -> Result<()> {
        if self.drivers.contains_key(name) {
            return Err(Error::InvalidOption(format!(
                "name already registered {name}"
            )));
        }
        self.drivers.insert(name.to_string(), init);
        Ok(())
    }

    /// Whether `name` is registered.
    pub fn is_registered(&self, name: &str) -> bool {
        self.drivers.contains_key(name)
    }

    /// Starts driver `name` (home `<root>/<name>`). With an empty name: the driver that
    /// already has state under `root` (vfs is never picked that way, as in moby), else the
    /// first of [`PRIORITY`] that starts, else any registered driver.
    pub fn new_driver(
        &self,
        name: &str,
        root: &Path,
        options: &[String],
    ) -> Result<Box<dyn Driver>> {
        self.new_driver_with_id_map(name, root, options, &IdMapping::identity())
    }

    /// [`Registry::new_driver`] for a store whose owners are mapped through `id_map`.
    pub fn new_driver_with_id_map(
        &self,
        name: &str,
        root: &Path,
        options: &[String],
        id_map: &IdMapping,
    ) -> Result<Box<dyn Driver>> {
        if !name.is_empty() {
            if REMOVED_DRIVERS.contains(&name) {
                return Err(Error::NotSupported(format!(
                    "[graphdriver] ERROR: the {name} storage-driver has been deprecated and removed; \
                     visit https://docs.docker.com/go/storage-driver/ for more information"
                )));
            }
            let init = self
                .drivers
                .get(name)
                .ok_or_else(|| Error::NotSupported(format!("driver {name} not supported")))?;
            return init(root, options, id_map);
        }
        let prior: Vec<&String> = self
            .drivers
            .keys()
            .filter(|n| *n != "vfs" && has_state(&root.join(n)))
            .collect();
        match prior.len() {
            0 => {}
            1 => return self.drivers[prior[0]](root, options, id_map),
            _ => {
                let names: Vec<&str> = prior.iter().map(|s| s.as_str()).collect();
                return Err(Error::Other(format!(
                    "{} contains several valid graphdrivers: {}; cleanup or explicitly choose storage driver (-s <DRIVER>)",
                    root.display(),
                    names.join(", ")
                )));
            }
        }
        let ordered = PRIORITY.iter().map(|s| s.to_string()).chain(
            self.drivers
                .keys()
                .filter(|k| !PRIORITY.contains(&k.as_str()))
                .cloned(),
        );
        for candidate in ordered {
            let Some(init) = self.drivers.get(&candidate) else {
                continue;
            };
            match init(root, options, id_map) {
                Ok(d) => return Ok(d),
                Err(Error::NotSupported(reason)) => {
                    tracing::debug!(driver = %candidate, %reason, "driver not supported here");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::NotSupported(
            "no supported storage driver found".into(),
        ))
    }
}

/// moby `HasPriorDriver` for one driver: its home is a non-empty directory.
fn has_state(home: &PathBuf) -> bool {
    std::fs::read_dir(home)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_name_and_priority() {
        let root = tempfile::tempdir().unwrap();
        let reg = Registry::with_builtin();
        assert!(reg.is_registered("vfs"));
        assert!(
            matches!(reg.new_driver("aufs", root.path(), &[]), Err(Error::NotSupported(m)) if m.contains("deprecated and removed"))
        );
        assert!(matches!(
            reg.new_driver("nope", root.path(), &[]),
            Err(Error::NotSupported(_))
        ));
        // Nothing on disk yet: the first of the priority list that starts here.
        let d = reg.new_driver("", root.path(), &[]).unwrap();
        let overlay = crate::overlay2::overlay_in_proc_filesystems() && safe_root::is_root();
        if overlay {
            assert_eq!(d.name(), "overlay2");
        } else {
            assert_eq!(d.name(), "vfs");
        }
        drop(d);
        // vfs state alone never counts as prior state: vfs is picked only as a fallback.
        let root2 = tempfile::tempdir().unwrap();
        let v = reg.new_driver("vfs", root2.path(), &[]).unwrap();
        v.create("x", None, &crate::CreateOpts::default()).unwrap();
        assert!(!has_state(&root2.path().join("overlay2")));
        let picked = reg.new_driver("", root2.path(), &[]).unwrap();
        assert_eq!(picked.name(), if overlay { "overlay2" } else { "vfs" });
        let mut reg2 = Registry::with_builtin();
        assert!(
            reg2.register("vfs", |_, _, _| Err(Error::Other("x".into())))
                .is_err()
        );
    }
}
