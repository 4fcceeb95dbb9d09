//! Garbage collection: what interrupted work leaves behind, and nothing else.
//!
//! The rule for every removal: only what is provably unreferenced goes. Garbage is exactly
//!
//! * stale write-sets (`layerdb/tmp/write-set-*` no live transaction owns),
//! * interrupted layer removals (`sha256/<hex>-<random>-removing`), and
//! * driver directories with this store's ID format (64 hex, optionally `-init`) that
//!   nothing names.
//!
//! A directory is named by a layer record (loadable or not), a `-removing` record, a mount
//! record (loadable or not: `mount-id` and `init-id`) or work in flight in this process. A
//! record whose name file cannot be read may name any directory, so while one exists no
//! unnamed directory is removed. An interrupted removal is finished only if no record names
//! its layer as a parent, and its driver directory only goes if nothing else names it.
//! Unloadable records, unknown entries and driver directories with other names (BuildKit's)
//! are reported and kept. A failure to remove one item is reported and the rest goes on.

use std::collections::HashSet;

use layer_digest::ChainId;
use layer_meta::Reference;

use crate::error::Result;
use crate::store::Store;

/// What [`Store::collect_garbage`] (or `gc`) removed, kept and failed to remove.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Layers whose deletion had started (`-removing` directories), now finished.
    pub finished_removals: Vec<String>,
    /// Stale write-sets removed, as paths relative to the layerdb.
    pub leftovers: Vec<String>,
    /// Driver directories that nothing named, removed.
    pub driver_dirs: Vec<String>,
    /// What looks like garbage or damage but was kept, each with the reason.
    pub kept: Vec<String>,
    /// What could not be removed, each with the error (the rest was still collected).
    pub failures: Vec<String>,
}

impl GcReport {
    /// True when nothing was removed and nothing failed.
    pub fn is_empty(&self) -> bool {
        self.finished_removals.is_empty()
            && self.leftovers.is_empty()
            && self.driver_dirs.is_empty()
            && self.failures.is_empty()
    }
}

/// IDs this store (and dockerd) creates: 64 lowercase hex, optionally `-init`. Driver
/// directories with other names (BuildKit's) are never collected.
fn is_store_id(id: &str) -> bool {
    layer_meta::is_valid_mount_id(id)
}

fn exists(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Everything the records on disk name.
#[derive(Debug, Default)]
pub(crate) struct Names {
    /// Driver directories named by layer and mount records (`-removing` ones not included).
    pub(crate) dirs: HashSet<String>,
    /// Layers named as a parent by any layer or mount record.
    pub(crate) parents: HashSet<ChainId>,
    /// Layers with a `sha256/<hex>` directory (loadable or not).
    pub(crate) layers: HashSet<ChainId>,
    /// Records whose name files cannot be read: they may name any directory.
    pub(crate) unreadable: Vec<String>,
}

impl Store {
    /// What every layer and mount record on disk names, loadable or not.
    pub(crate) fn names_on_disk(&self) -> Result<Names> {
        let meta = self.meta();
        let mut names = Names::default();
        let listing = meta.list_layers()?;
        for r in &listing.layers {
            names.dirs.insert(r.cache_id.clone());
            names.layers.insert(r.chain_id.clone());
            names.parents.extend(r.parent.clone());
        }
        for b in &listing.broken {
            names.layers.insert(b.chain_id.clone());
            match &b.cache_id {
                Reference::Named(c) => {
                    names.dirs.insert(c.clone());
                }
                Reference::Absent => {}
                Reference::Unreadable => names
                    .unreadable
                    .push(format!("layer {}: its cache-id does not read", b.chain_id)),
            }
            match &b.parent {
                Reference::Named(p) => {
                    names.parents.insert(p.clone());
                }
                Reference::Absent => {}
                Reference::Unreadable => {
                    tracing::warn!(layer = %b.chain_id, "unreadable parent file: the layer it sat on cannot be protected by name");
                }
            }
        }
        let mounts = meta.list_mounts()?;
        for (_, m) in &mounts.mounts {
            names.dirs.insert(m.mount_id.clone());
            names.dirs.extend(m.init_id.clone());
            names.parents.extend(m.parent.clone());
        }
        for b in &mounts.broken {
            for (what, r) in [("mount-id", &b.mount_id), ("init-id", &b.init_id)] {
                match r {
                    Reference::Named(id) => {
                        names.dirs.insert(id.clone());
                    }
                    Reference::Absent => {}
                    Reference::Unreadable => names
                        .unreadable
                        .push(format!("RW layer {}: its {what} does not read", b.name)),
                }
            }
            if let Reference::Named(p) = &b.parent {
                names.parents.insert(p.clone());
            }
        }
        Ok(names)
    }

    /// Collects what interrupted work left behind (see the module docs): stale write-sets,
    /// interrupted removals and driver directories nothing names. Every removal is logged at
    /// info level; a failure is reported in [`GcReport::failures`] and the rest goes on.
    pub fn collect_garbage(&self) -> Result<GcReport> {
        let _span = tracing::info_span!("gc").entered();
        let meta = self.meta();
        let driver = self.driver();
        let mut report = GcReport::default();

        // With the layer map locked: a release deletes under that lock, so a `-removing`
        // directory seen here is an interrupted removal, never one being finished right now.
        self.with_layers_locked(|| -> Result<()> {
            let names = self.names_on_disk()?;
            for orphan in meta.orphans()? {
                let layer = &orphan.chain_id;
                if names.parents.contains(layer) && !names.layers.contains(layer) {
                    report.kept.push(format!(
                        "interrupted removal {}: a record names layer {layer} as its parent",
                        orphan.name
                    ));
                    continue;
                }
                let dir = orphan.cache_id.as_deref().filter(|c| !names.dirs.contains(*c));
                if dir.is_some() && !names.unreadable.is_empty() {
                    report.kept.push(format!(
                        "interrupted removal {}: {} (it may name driver directory {})",
                        orphan.name,
                        names.unreadable.join("; "),
                        dir.unwrap_or_default()
                    ));
                    continue;
                }
                let finish = || -> Result<()> {
                    if let Some(cache) = dir {
                        driver.remove(cache)?;
                    }
                    meta.finish_removal(&orphan)?;
                    Ok(())
                };
                match finish() {
                    Ok(()) => {
                        tracing::info!(layer = %layer, cache = ?orphan.cache_id, "finished interrupted layer removal");
                        report.finished_removals.push(layer.to_string());
                    }
                    Err(e) => report
                        .failures
                        .push(format!("interrupted removal {}: {e}", orphan.name)),
                }
            }
            Ok(())
        })?;

        let leftovers = meta.leftovers()?;
        for l in &leftovers.stale_write_sets {
            // A write-set whose operation finished since the listing is gone: not a leftover.
            if !exists(&l.path) {
                continue;
            }
            match meta.remove_leftover(l) {
                Ok(()) => {
                    tracing::info!(path = %l.rel_path, reason = %l.reason, "removed stale write-set");
                    report.leftovers.push(l.rel_path.clone());
                }
                Err(_) if !exists(&l.path) => {}
                Err(e) => report.failures.push(format!("{}: {e}", l.rel_path)),
            }
        }
        for l in leftovers
            .half_mounts
            .iter()
            .chain(&leftovers.blocking_layers)
            .chain(&leftovers.strays)
        {
            report.kept.push(format!(
                "{} ({}): not garbage that gc may remove",
                l.rel_path, l.reason
            ));
        }

        let unnamed = self.unnamed_driver_dirs()?;
        if !unnamed.ids.is_empty() && !unnamed.unreadable.is_empty() {
            report.kept.push(format!(
                "{} driver director{} that no record names ({}): {} (it may name them)",
                unnamed.ids.len(),
                if unnamed.ids.len() == 1 { "y" } else { "ies" },
                unnamed.ids.join(", "),
                unnamed.unreadable.join("; ")
            ));
        } else {
            for id in unnamed.ids {
                match driver.remove(&id) {
                    Ok(()) => {
                        tracing::info!(id, "removed driver directory that no record names");
                        report.driver_dirs.push(id);
                    }
                    Err(e) => report.failures.push(format!("driver directory {id}: {e}")),
                }
            }
        }
        Ok(report)
    }

    /// Driver directories with this store's ID format that nothing names: no layer or RW
    /// layer (in memory or in the layerdb, loadable or not), no interrupted removal, no work
    /// in flight; and the records whose names could not be read.
    pub(crate) fn unnamed_driver_dirs(&self) -> Result<Unnamed> {
        let meta = self.meta();
        let driver = self.driver();
        // List the driver first, then gather what is named: a directory created after the
        // listing is not in it, and one created before it was marked in flight before it was
        // created, so it is in the named set.
        let on_disk = driver.list()?;
        let mut named: HashSet<String> = self.referenced_driver_ids();
        let names = self.names_on_disk()?;
        named.extend(names.dirs);
        named.extend(meta.orphans()?.into_iter().filter_map(|o| o.cache_id));
        let mut ids: Vec<String> = on_disk
            .into_iter()
            // Gone since the listing: deleted by a release that finished meanwhile.
            .filter(|id| !named.contains(id) && is_store_id(id) && driver.exists(id))
            .collect();
        ids.sort();
        Ok(Unnamed {
            ids,
            unreadable: names.unreadable,
        })
    }
}

/// Driver directories nothing names, and the records that might name them anyway.
pub(crate) struct Unnamed {
    pub(crate) ids: Vec<String>,
    pub(crate) unreadable: Vec<String>,
}

impl Store {
    /// Collects what interrupted work left behind (see [`Store::collect_garbage`]) and
    /// releases what the driver holds (moby's `Cleanup`, which runs at daemon shutdown).
    pub fn cleanup(&self) -> Result<GcReport> {
        let report = self.collect_garbage()?;
        self.driver().cleanup()?;
        Ok(report)
    }
}
