//! The "no leftovers" scan of a data-root, on disk, as every crash harness runs it after
//! recovery: what no store should leave behind once `gc` (or cleanup on open) has run.
//!
//! It reads directories only (no store API), so it judges the store from outside: the
//! CLI crash campaign (`cargo xtask crash`), layer-store's crash test and layer-meta's.

use std::collections::BTreeSet;
use std::path::Path;

/// What the store says it holds; anything else on disk is a leftover.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Layers (chain IDs, `sha256:<hex>` or bare hex).
    pub layers: BTreeSet<String>,
    /// RW layer names (the `mounts/` entries of the layerdb).
    pub rw_layers: BTreeSet<String>,
    /// Driver directories the layers and RW layers name (cache, mount and init IDs).
    pub driver_dirs: BTreeSet<String>,
    /// Driver directories that may be mounted now (RW layers' mount IDs); `None`: any named.
    pub mountable: Option<BTreeSet<String>>,
}

fn hex(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

fn entries(dir: &Path) -> Vec<String> {
    crate::tree::names(dir)
}

/// Leftovers in a layerdb (`<root>/image/<driver>/layerdb`): write-sets in `tmp/`,
/// `-removing` directories, layer directories or mounts the store does not list.
pub fn in_layerdb(layerdb: &Path, expected: &Expected) -> Vec<String> {
    let mut found = Vec::new();
    for e in entries(&layerdb.join("tmp")) {
        found.push(format!("write-set tmp/{e}"));
    }
    let layers: BTreeSet<&str> = expected.layers.iter().map(|l| hex(l)).collect();
    for name in entries(&layerdb.join("sha256")) {
        if name.contains("-removing") {
            found.push(format!("removing dir sha256/{name}"));
        } else if !layers.contains(name.as_str()) {
            found.push(format!(
                "layer dir sha256/{name} that the store does not list"
            ));
        }
    }
    for name in entries(&layerdb.join("mounts")) {
        if !expected.rw_layers.contains(&name) {
            found.push(format!(
                "mount record mounts/{name} that the store does not list"
            ));
        }
    }
    found
}

/// Leftovers of a driver under a data-root: directories nothing names, dangling overlay2
/// links, and mounts under the driver's home that no RW layer explains.
pub fn in_driver(root: &Path, driver: &str, expected: &Expected) -> Vec<String> {
    let mut found = Vec::new();
    let home = match driver {
        "vfs" => root.join("vfs").join("dir"),
        other => root.join(other),
    };
    for name in entries(&home) {
        if driver == "overlay2" && name == "l" {
            continue;
        }
        if !expected.driver_dirs.contains(&name) {
            found.push(format!("{driver} dir {name} that nothing names"));
        }
    }
    if driver == "overlay2" {
        for link in entries(&home.join("l")) {
            if std::fs::metadata(home.join("l").join(&link)).is_err() {
                found.push(format!("dangling overlay2 link l/{link}"));
            }
        }
    }
    for point in crate::tree::mounts_under(&home) {
        let id = point
            .strip_prefix(&home)
            .ok()
            .and_then(|r| r.iter().next())
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        let explained = match &expected.mountable {
            Some(m) => m.contains(&id),
            None => expected.driver_dirs.contains(&id),
        };
        if !explained {
            found.push(format!("mount {} that no layer explains", point.display()));
        }
    }
    found
}

/// [`in_layerdb`] and [`in_driver`] for a data-root and driver.
pub fn in_root(root: &Path, driver: &str, expected: &Expected) -> Vec<String> {
    let mut found = in_layerdb(&root.join("image").join(driver).join("layerdb"), expected);
    found.extend(in_driver(root, driver, expected));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_nothing_names() {
        let dir = std::env::temp_dir().join(format!("testkit-leftovers-{}", std::process::id()));
        let db = dir.join("image/vfs/layerdb");
        for d in [
            "tmp/write-set-1",
            "sha256/aa",
            "sha256/bb-removing",
            "mounts/c1",
        ] {
            std::fs::create_dir_all(db.join(d)).unwrap();
        }
        for d in ["vfs/dir/cache-a", "vfs/dir/stray"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let expected = Expected {
            layers: ["sha256:aa".to_owned()].into(),
            rw_layers: BTreeSet::new(),
            driver_dirs: ["cache-a".to_owned()].into(),
            mountable: None,
        };
        let found = in_root(&dir, "vfs", &expected);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found,
            [
                "write-set tmp/write-set-1",
                "removing dir sha256/bb-removing",
                "mount record mounts/c1 that the store does not list",
                "vfs dir stray that nothing names",
            ]
        );
    }
}
