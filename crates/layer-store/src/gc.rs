//! Garbage collection: what interrupted work leaves behind.

use std::collections::HashSet;

use crate::error::Result;
use crate::store::Store;

/// What [`Store::cleanup`] (or `gc`) removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Layers whose deletion had started (`-removing` directories), now finished.
    pub finished_removals: Vec<String>,
    /// Metadata leftovers (stale write-sets, half-written mounts, unloadable layer directories
    /// that would block a commit, stray names), as paths relative to the layerdb.
    pub leftovers: Vec<String>,
    /// Driver directories that no layer, RW layer or work in progress names.
    pub driver_dirs: Vec<String>,
}

impl GcReport {
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.finished_removals.is_empty()
            && self.leftovers.is_empty()
            && self.driver_dirs.is_empty()
    }
}

/// IDs this store creates: 64 lowercase hex, optionally `-init`. Driver directories with
/// other names (BuildKit's, say) are never collected.
fn is_store_id(id: &str) -> bool {
    layer_meta::is_valid_mount_id(id)
}

fn exists(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

impl Store {
    /// Collects leftovers: finishes interrupted removals, removes stale metadata, then removes
    /// driver directories nothing names. Every removal is logged at info level.
    pub fn collect_garbage(&self) -> Result<GcReport> {
        let _span = tracing::info_span!("gc").entered();
        let meta = self.meta();
        let driver = self.driver();
        let mut report = GcReport::default();

        // With the layer map locked: a release deletes under that lock, so a `-removing`
        // directory seen here is an interrupted removal, never one being finished right now.
        self.with_layers_locked(|| -> Result<()> {
            for orphan in meta.orphans()? {
                if let Some(cache) = &orphan.cache_id {
                    driver.remove(cache)?;
                }
                meta.finish_removal(&orphan)?;
                tracing::info!(layer = %orphan.chain_id, cache = ?orphan.cache_id, "finished interrupted layer removal");
                report.finished_removals.push(orphan.chain_id.to_string());
            }
            Ok(())
        })?;

        let leftovers = meta.leftovers()?;
        for l in leftovers.all() {
            // A write-set whose operation finished since the listing is gone: not a leftover.
            if !exists(&l.path) {
                continue;
            }
            if let Err(e) = meta.remove_leftover(l) {
                if !exists(&l.path) {
                    continue;
                }
                return Err(e.into());
            }
            tracing::info!(path = %l.rel_path, reason = %l.reason, "removed metadata leftover");
            report.leftovers.push(l.rel_path.clone());
        }

        for id in self.unnamed_driver_dirs()? {
            driver.remove(&id)?;
            tracing::info!(id, "removed driver directory that no layer names");
            report.driver_dirs.push(id);
        }
        Ok(report)
    }

    /// Driver directories with this store's ID format that nothing names: no layer or RW
    /// layer (in memory or in the layerdb), no interrupted removal, no work in flight.
    pub(crate) fn unnamed_driver_dirs(&self) -> Result<Vec<String>> {
        let meta = self.meta();
        let driver = self.driver();
        // List the driver first, then gather what is named: a directory created after the
        // listing is not in it, and one created before it was marked in flight before it was
        // created, so it is in the named set.
        let on_disk = driver.list()?;
        let mut named: HashSet<String> = self.referenced_driver_ids();
        let listing = meta.list_layers()?;
        named.extend(listing.layers.iter().map(|r| r.cache_id.clone()));
        for (_, m) in meta.list_mounts()?.mounts {
            named.insert(m.mount_id.clone());
            if let Some(i) = m.init_id {
                named.insert(i);
            }
        }
        named.extend(meta.orphans()?.into_iter().filter_map(|o| o.cache_id));
        Ok(on_disk
            .into_iter()
            // Gone since the listing: deleted by a release that finished meanwhile.
            .filter(|id| !named.contains(id) && is_store_id(id) && driver.exists(id))
            .collect())
    }
}
