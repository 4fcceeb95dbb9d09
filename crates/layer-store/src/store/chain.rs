//! Registering a chain of layers in one call: [`Store::register_chain`].
//!
//! An image's layers arrive together (`docker load`, a pull). Registered one by one, each
//! waits for its parent to be committed, although on overlay2 extracting a layer reads nothing
//! of its parent: every layer goes into its own `diff/`. So the chain is registered in three
//! steps: the driver directories are created in chain order (overlay2's `lower` files need
//! their parent's directory, not its content), then the layers are hashed, split and applied
//! at the same time on a few workers, then the metadata is committed in chain order. Drivers
//! whose apply depends on the parent's content (vfs copies it at create) take the layers one
//! after another, still all or nothing.

use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use graphdriver::CreateOpts;
use layer_digest::{ChainId, chain_id};
use layer_meta::Transaction;

use super::{Entry, Store, lock, sync_filesystem};
use crate::error::{Error, Result};
use crate::ids::random_id;
use crate::layer::{Layer, LayerInner, LayerRef};
use crate::register::{self, Applied};

/// At most this many layers of a chain are applied at once (each uses two threads and up to
/// six 1 MiB buffers), whatever the core count.
const MAX_PARALLEL_LAYERS: usize = 4;

impl Store {
    /// Registers `layers` as a chain on `parent` (the first on `parent`, each next one on the
    /// one before) and returns a reference to each, in order.
    ///
    /// The result is what calling [`Store::register`] once per layer would give, all or
    /// nothing: on any error no layer of the chain is left behind and the parent's count is
    /// as before. The error says which layer failed.
    ///
    /// When the driver's apply reads nothing of the parent
    /// ([`graphdriver::DiffDriver::apply_independent_of_parent`]: overlay2 with native diff),
    /// up to four layers (one per core, at least two) are read, hashed, split and applied at
    /// the same time; their metadata is committed in chain order once all of them succeeded.
    /// Otherwise the layers are applied one after another. Layers that already exist are
    /// handed out as they are, as [`Store::register`] does; the streams are still read to
    /// their end.
    ///
    /// A concurrent register of the same content can make a layer in the middle of the chain
    /// appear while this call runs; the later layers, made on top of this call's copy of it,
    /// then cannot be kept, and the call fails with [`Error::ChainRaced`] having changed
    /// nothing. Registering the chain again then finds that layer and builds on it.
    pub fn register_chain<R: Read + Send>(
        &self,
        parent: Option<&ChainId>,
        layers: Vec<R>,
    ) -> Result<Vec<LayerRef>> {
        let count = layers.len();
        let _span = tracing::info_span!(
            "register_chain",
            parent = ?parent.map(|p| p.to_string()),
            layers = count
        )
        .entered();
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut guard = ChainGuard {
            store: self,
            parent: None,
            in_flight: Vec::new(),
            driver_dirs: Vec::new(),
            committed: Vec::new(),
        };

        // The parent's count for the first layer, and the depth the chain will reach.
        let parent_layer = parent.map(|p| self.count_parent(p)).transpose()?;
        guard.parent = parent.cloned();
        let base_depth = parent_layer.as_ref().map_or(0, Layer::depth);
        // The last layer's parent is `base_depth + count - 1` deep; register refuses a parent
        // at the maximum depth.
        if count > 1 || parent.is_some() {
            let deepest_parent = base_depth + count - 1;
            if deepest_parent >= self.inner.max_depth {
                return Err(match parent {
                    Some(p) => Error::MaxDepthExceeded {
                        parent: p.clone(),
                        depth: deepest_parent,
                        max: self.inner.max_depth,
                    },
                    None => Error::InvalidArgument(format!(
                        "a chain of {count} layers is deeper than the store's maximum of {}",
                        self.inner.max_depth
                    )),
                });
            }
        }

        let cache_ids: Vec<String> = (0..count).map(|_| random_id()).collect();
        {
            let mut state = lock(&self.inner.state);
            for id in &cache_ids {
                state.in_flight.insert(id.clone());
            }
        }
        guard.in_flight = cache_ids.clone();
        let parent_caches: Vec<Option<String>> =
            std::iter::once(parent_layer.as_ref().map(|p| p.cache_id().to_owned()))
                .chain(cache_ids[..count - 1].iter().cloned().map(Some))
                .collect();

        let meta = &self.inner.backend.meta;
        let driver = self.inner.backend.driver.as_ref();
        let mut txs = Vec::with_capacity(count);
        for _ in 0..count {
            txs.push(meta.start_transaction()?);
        }
        let in_parallel = count > 1 && driver.apply_independent_of_parent();
        let at_layer = |index: usize| {
            move |e: Error| Error::RegisterChain {
                index,
                count,
                source: Box::new(e),
            }
        };

        let applied: Vec<Applied> = if in_parallel {
            for (i, id) in cache_ids.iter().enumerate() {
                // Armed before the call: a failed create may leave a directory behind.
                guard.driver_dirs.push(id.clone());
                driver
                    .create(id, parent_caches[i].as_deref(), &CreateOpts::default())
                    .map_err(|e| at_layer(i)(e.into()))?;
            }
            self.apply_in_parallel(&cache_ids, &parent_caches, &mut txs, layers)?
        } else {
            let mut applied = Vec::with_capacity(count);
            for (i, (tar, tx)) in layers.into_iter().zip(txs.iter_mut()).enumerate() {
                let _span = tracing::info_span!("register", index = i).entered();
                guard.driver_dirs.push(cache_ids[i].clone());
                driver
                    .create(
                        &cache_ids[i],
                        parent_caches[i].as_deref(),
                        &CreateOpts::default(),
                    )
                    .map_err(|e| at_layer(i)(e.into()))?;
                applied.push(
                    register::apply_and_split(
                        driver,
                        tx,
                        &cache_ids[i],
                        parent_caches[i].as_deref(),
                        tar,
                    )
                    .map_err(at_layer(i))?,
                );
            }
            applied
        };

        // Chain IDs in order, and the records that name them.
        let mut chains: Vec<ChainId> = Vec::with_capacity(count);
        for (i, (tx, a)) in txs.iter_mut().zip(&applied).enumerate() {
            let parent_chain = if i == 0 {
                parent.cloned()
            } else {
                Some(chains[i - 1].clone())
            };
            let chain = chain_id(parent_chain.as_ref(), &a.diff_id);
            let fill = |tx: &mut Transaction| -> Result<()> {
                tx.set_diff_id(&a.diff_id)?;
                tx.set_size(a.size)?;
                tx.set_cache_id(&cache_ids[i])?;
                if let Some(p) = &parent_chain {
                    tx.set_parent(p)?;
                }
                Ok(())
            };
            fill(tx).map_err(at_layer(i))?;
            chains.push(chain);
        }
        if self.inner.sync_layer_data {
            sync_filesystem(&self.inner.driver_home)?;
        }

        let mut state = lock(&self.inner.state);
        // A layer that exists has every ancestor in the map, so existing layers form a prefix:
        // all of the chain, or a part whose layers above it were built on our own copies.
        let first_existing = chains.iter().position(|c| state.layers.contains_key(c));
        if chains.iter().all(|c| state.layers.contains_key(c)) {
            // The whole chain was there (or another register won): hand it out; the guard
            // removes what this call made and gives back the parent's count.
            tracing::debug!(top = %chains[count - 1], "chain already exists");
            let refs = chains
                .iter()
                .map(|c| {
                    let entry = state.layers.get_mut(c).expect("checked above");
                    self.new_ref(entry)
                })
                .collect();
            return Ok(refs);
        }
        if let Some(i) = first_existing {
            return Err(Error::ChainRaced {
                layer: chains[i].clone(),
            });
        }
        for (i, (tx, chain)) in txs.into_iter().zip(&chains).enumerate() {
            tx.commit(chain).map_err(|e| at_layer(i)(e.into()))?;
            guard.committed.push((chain.clone(), cache_ids[i].clone()));
        }

        // Everything is on disk: publish the layers. Each but the last is counted once by its
        // child; every one gets the reference handed out.
        let mut parent_of_next = parent_layer;
        let mut refs = Vec::with_capacity(count);
        for (i, (chain, a)) in chains.iter().zip(applied).enumerate() {
            let layer = Layer(std::sync::Arc::new(LayerInner {
                chain_id: chain.clone(),
                diff_id: a.diff_id,
                cache_id: cache_ids[i].clone(),
                size: a.size,
                parent: parent_of_next.take(),
                descriptor: None,
                backend: self.inner.backend.clone(),
            }));
            let mut entry = Entry {
                layer: layer.clone(),
                count: usize::from(i + 1 < count),
                refs: Default::default(),
            };
            refs.push(self.new_ref(&mut entry));
            state.layers.insert(chain.clone(), entry);
            parent_of_next = Some(layer);
        }
        drop(state);
        guard.disarm();
        tracing::info!(top = %chains[count - 1], layers = count, "registered chain");
        Ok(refs)
    }

    /// Reads, hashes, splits and applies every layer of the chain on up to
    /// [`MAX_PARALLEL_LAYERS`] workers, taking layers in chain order. After a failure no new
    /// layer is started; the first failure in chain order is returned.
    fn apply_in_parallel<R: Read + Send>(
        &self,
        cache_ids: &[String],
        parent_caches: &[Option<String>],
        txs: &mut [Transaction],
        layers: Vec<R>,
    ) -> Result<Vec<Applied>> {
        let count = layers.len();
        let driver = self.inner.backend.driver.as_ref();
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, MAX_PARALLEL_LAYERS)
            .min(count);
        let work: Vec<Mutex<Option<(R, &mut Transaction)>>> = layers
            .into_iter()
            .zip(txs.iter_mut())
            .map(|pair| Mutex::new(Some(pair)))
            .collect();
        let results: Vec<Mutex<Option<Result<Applied>>>> =
            (0..count).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let span = tracing::Span::current();
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    let _enter = span.enter();
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return;
                        }
                        let (tar, tx) = lock(&work[i]).take().expect("each layer taken once");
                        let _span = tracing::info_span!("register", index = i).entered();
                        let result = register::apply_and_split(
                            driver,
                            tx,
                            &cache_ids[i],
                            parent_caches[i].as_deref(),
                            tar,
                        );
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        *lock(&results[i]) = Some(result);
                    }
                });
            }
        });
        let mut applied = Vec::with_capacity(count);
        let mut not_run = None;
        for (i, slot) in results.into_iter().enumerate() {
            match slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
                Some(Ok(a)) => applied.push(a),
                Some(Err(e)) => {
                    return Err(Error::RegisterChain {
                        index: i,
                        count,
                        source: Box::new(e),
                    });
                }
                None => not_run = not_run.or(Some(i)),
            }
        }
        // A layer that did not run is preceded by the failure that stopped the workers (a
        // worker's panic propagates out of the scope instead), so this is a safety net.
        match not_run {
            None => Ok(applied),
            Some(i) => Err(Error::RegisterChain {
                index: i,
                count,
                source: Box::new(Error::InvalidArgument(
                    "the layer was not applied (a worker stopped)".into(),
                )),
            }),
        }
    }
}

/// Undoes a [`Store::register_chain`] that did not finish: committed records are removed
/// (newest first, through the same `-removing` rename a release uses), then every driver
/// directory the call made, then the in-flight marks and the parent's count.
struct ChainGuard<'a> {
    store: &'a Store,
    parent: Option<ChainId>,
    in_flight: Vec<String>,
    driver_dirs: Vec<String>,
    committed: Vec<(ChainId, String)>,
}

impl ChainGuard<'_> {
    fn disarm(&mut self) {
        self.parent = None;
        self.driver_dirs.clear();
        self.committed.clear();
    }
}

impl Drop for ChainGuard<'_> {
    fn drop(&mut self) {
        let meta = &self.store.inner.backend.meta;
        let driver = &self.store.inner.backend.driver;
        // Records first, so that no record ever names a removed directory. One that cannot be
        // removed is left for gc (it is a complete layer nobody references).
        for (chain, cache) in self.committed.drain(..).rev() {
            match meta.remove_layer(&chain) {
                Ok(orphan) => {
                    if let Err(e) = driver.remove(&cache) {
                        tracing::error!(layer = %chain, error = %e, "rollback: could not remove driver directory");
                    } else if let Err(e) = meta.finish_removal(&orphan) {
                        tracing::error!(layer = %chain, error = %e, "rollback: could not finish removal");
                    }
                }
                Err(e) => {
                    tracing::error!(layer = %chain, error = %e, "rollback: could not remove committed layer");
                    self.driver_dirs.retain(|d| d != &cache);
                }
            }
        }
        for id in self.driver_dirs.drain(..).rev() {
            if let Err(e) = driver.remove(&id) {
                tracing::error!(id, error = %e, "cleanup after failure: could not remove driver directory");
            }
        }
        let mut state = lock(&self.store.inner.state);
        for id in self.in_flight.drain(..) {
            state.in_flight.remove(&id);
        }
        if let Some(p) = self.parent.take()
            && let Some(e) = state.layers.get_mut(&p)
        {
            e.count = e.count.saturating_sub(1);
        }
    }
}
