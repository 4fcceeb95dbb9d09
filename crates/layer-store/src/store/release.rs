//! References: taking them ([`Store::get`]), giving them back ([`Store::release`]) and
//! deleting the layers nothing holds any more.

use std::sync::atomic::Ordering;

use layer_digest::ChainId;

use super::{Entry, State, Store, lock};
use crate::error::{Error, Result};
use crate::layer::{Layer, LayerRef, Metadata};

/// Why [`Store::delete_layer`] failed: before anything changed on disk, or after the layer's
/// metadata was marked for removal (the point of no return).
enum DeleteError {
    Unchanged(Error),
    Marked(Error),
}

impl Store {
    /// A new reference to an existing layer.
    pub fn get(&self, chain_id: &ChainId) -> Result<LayerRef> {
        let mut state = lock(&self.inner.state);
        let entry = state
            .layers
            .get_mut(chain_id)
            .ok_or_else(|| Error::LayerDoesNotExist(chain_id.clone()))?;
        Ok(self.new_ref(entry))
    }

    /// Gives back a reference. A layer whose count drops to zero is deleted, then its parent is
    /// released in turn; returns what was deleted, child first. A layer something else holds
    /// (see [`Store::users`]: references, children, RW layers, unloadable records naming it)
    /// is never deleted.
    ///
    /// Deviation from moby: a failure before the layer's metadata is marked for removal leaves
    /// the layer in the map, held by nothing, and its parent counted, so memory still matches
    /// the disk and a later get + release deletes it; moby drops both. A failure after the mark
    /// forgets the layer and releases its parent (gc finishes the removal on disk).
    pub fn release(&self, mut layer: LayerRef) -> Result<Vec<Metadata>> {
        let _span = tracing::info_span!("release", layer = %layer.chain_id()).entered();
        layer.released = true;
        if layer.store_id != self.inner.store_id {
            return Err(Error::LayerNotRetained(layer.chain_id().to_string()));
        }
        let mut state = lock(&self.inner.state);
        let Some(entry) = state.layers.get_mut(layer.chain_id()) else {
            return Ok(Vec::new());
        };
        if !entry.refs.remove(&layer.ref_id) {
            return Err(Error::LayerNotRetained(layer.chain_id().to_string()));
        }
        self.release_chain(&mut state, layer.chain_id().clone())
    }

    /// Drops one count from `id` and deletes what reaches zero, walking up the chain.
    pub(super) fn release_chain(
        &self,
        state: &mut State,
        mut id: ChainId,
    ) -> Result<Vec<Metadata>> {
        let mut removed = Vec::new();
        loop {
            let entry = state
                .layers
                .get_mut(&id)
                .expect("released layer is in the map");
            assert!(entry.count > 0, "layer {id} not retained");
            entry.count -= 1;
            if entry.count > 0 {
                return Ok(removed);
            }
            let layer = entry.layer.clone();
            let md = layer.metadata_record();
            match self.delete_layer(&layer) {
                Ok(()) => {}
                // Nothing changed on disk: the layer stays, held by nothing (as a layer
                // restored after a restart), so a later get + release deletes it; its parent
                // still counts it as a child.
                Err(DeleteError::Unchanged(e)) => return Err(e),
                // The metadata is already marked for removal: the layer is gone (gc or the
                // next open finishes the removal). Forget it and release its parent, so that
                // the map and the counts keep matching what the layerdb lists.
                Err(DeleteError::Marked(e)) => {
                    state.layers.remove(&id);
                    if let Some(p) = layer.parent()
                        && let Err(pe) = self.release_chain(state, p.chain_id().clone())
                    {
                        // The first error is the one returned; this one would be lost.
                        tracing::error!(parent = %p.chain_id(), error = %crate::error::with_causes(&pe), "releasing the parent failed too");
                    }
                    return Err(e);
                }
            }
            state.layers.remove(&id);
            removed.push(md);
            match layer.parent() {
                None => return Ok(removed),
                Some(p) => id = p.chain_id().clone(),
            }
        }
    }

    /// Removes a layer from disk: metadata renamed to `-removing` first, then the driver
    /// directory, then the metadata (moby's order). A crash in between leaves an orphan that
    /// gc finishes.
    fn delete_layer(&self, layer: &Layer) -> std::result::Result<(), DeleteError> {
        let meta = &self.inner.backend.meta;
        let orphan = meta
            .remove_layer(layer.chain_id())
            .map_err(|e| DeleteError::Unchanged(e.into()))?;
        let finish = || -> Result<()> {
            self.inner.backend.driver.remove(layer.cache_id())?;
            meta.finish_removal(&orphan)?;
            Ok(())
        };
        finish().map_err(DeleteError::Marked)?;
        tracing::info!(layer = %layer.chain_id(), cache = layer.cache_id(), "deleted layer");
        Ok(())
    }

    /// Deletes a layer that nothing holds (count zero, checked under the lock), without
    /// releasing its parent in turn: the parent only loses this child's count and stays, even
    /// at zero (repair of a broken layer must not cascade into healthy ones).
    pub(crate) fn delete_unheld(&self, id: &ChainId) -> Result<()> {
        let mut state = lock(&self.inner.state);
        let Some(entry) = state.layers.get(id) else {
            return Ok(());
        };
        if entry.count > 0 {
            drop(state);
            let users = self.users(id).unwrap_or_default();
            return Err(Error::InUse {
                layer: id.clone(),
                why: users.to_string(),
            });
        }
        let layer = entry.layer.clone();
        let result = self.delete_layer(&layer);
        if let Err(DeleteError::Unchanged(e)) = result {
            return Err(e);
        }
        state.layers.remove(id);
        if let Some(p) = layer.parent() {
            give_back(&mut state, p.chain_id());
        }
        match result {
            Err(DeleteError::Marked(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Takes one count on `parent` for a layer or RW layer about to be built on it; the
    /// caller's guard gives it back if the build fails.
    pub(super) fn count_parent(&self, parent: &ChainId) -> Result<Layer> {
        let mut state = lock(&self.inner.state);
        let entry = state
            .layers
            .get_mut(parent)
            .ok_or_else(|| Error::LayerDoesNotExist(parent.clone()))?;
        entry.count += 1;
        Ok(entry.layer.clone())
    }

    pub(super) fn new_ref(&self, entry: &mut Entry) -> LayerRef {
        let ref_id = self.inner.next_ref.fetch_add(1, Ordering::Relaxed);
        entry.count += 1;
        entry.refs.insert(ref_id);
        LayerRef {
            layer: entry.layer.clone(),
            ref_id,
            store_id: self.inner.store_id,
            released: false,
        }
    }

    /// Takes back a reference handed out by a call that then failed, without deleting
    /// anything: the call must leave the store as it found it.
    pub(super) fn take_back(&self, state: &mut State, r: LayerRef) {
        let mut r = r;
        r.released = true;
        if let Some(e) = state.layers.get_mut(r.chain_id()) {
            e.refs.remove(&r.ref_id);
            e.count = e.count.saturating_sub(1);
        }
    }
}

/// Gives back one count without deleting anything, even at zero: a failed or duplicate
/// register, a failed RW create and a repair must leave the store as they found it. (moby
/// releases here, which deletes a parent nothing else holds, e.g. right after a restart.)
pub(super) fn give_back(state: &mut State, id: &ChainId) {
    if let Some(e) = state.layers.get_mut(id) {
        e.count = e.count.saturating_sub(1);
    }
}
