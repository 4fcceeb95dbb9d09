//! Registering layers. [`Store::register`] is [`Store::register_chain`] of one layer: one
//! pipeline (`crate::pipeline`: hash, split and apply in one pass) and one guard.
//!
//! An image's layers arrive together (`docker load`, a pull). Registered one by one, each
//! waits for its parent to be committed, although on overlay2 extracting a layer reads nothing
//! of its parent: every layer goes into its own `diff/`. So a chain is registered in three
//! steps: the driver directories are created in chain order (overlay2's `lower` files need
//! their parent's directory, not its content), then the layers are hashed, split and applied
//! at the same time on a few workers, then the metadata is committed in chain order. Drivers
//! whose apply depends on the parent's content (vfs copies it at create) take the layers one
//! after another, still all or nothing.
//!
//! A layer that exists already is handed out, as moby's `Register` does. Its DiffID (hence its
//! chain ID) is only known once its stream has been read, so this call has made its own copy
//! by then; the layers above it must sit on the existing one:
//!
//! * one after another, each layer is created once the one below it is known: on the
//!   existing layer when there is one;
//! * in parallel, the layers above were created on this call's copies; they are registered
//!   again on the existing layer from those copies (their tar reassembled from the tar-split
//!   metadata and files just written, no input read twice), in one more round. The same
//!   round resolves a layer that a concurrent register made appear meanwhile.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use graphdriver::CreateOpts;
use layer_digest::{ChainId, chain_id};
use layer_meta::{Descriptor, Transaction};

use super::release::give_back;
use super::{Entry, Store, lock, sync_filesystem};
use crate::error::{Error, Result};
use crate::ids::random_id;
use crate::layer::{Layer, LayerInner, LayerRef};
use crate::pipeline::{self, Applied};
use crate::tarstream;

/// At most this many layers of a chain are applied at once (each uses two threads and up to
/// six 1 MiB buffers), whatever the core count.
const MAX_PARALLEL_LAYERS: usize = 4;

/// How many times a chain is rebuilt on layers that appeared while it was registered before
/// the call gives up with [`Error::ChainRaced`].
const MAX_ROUNDS: usize = 3;

/// One layer to register.
struct Input<R> {
    tar: R,
    descriptor: Option<Descriptor>,
}

impl Store {
    /// Registers a layer from its uncompressed tar stream on top of `parent`.
    ///
    /// The stream is read once: it is hashed (DiffID), split into tar-split metadata and
    /// applied by the driver in the same pass. Nothing becomes visible unless everything
    /// succeeded; on any error every directory and file made for it is removed. Registering
    /// content that already exists returns a new reference to the existing layer.
    pub fn register<R: Read + Send>(&self, tar: R, parent: Option<&ChainId>) -> Result<LayerRef> {
        self.register_with_descriptor(tar, parent, None)
    }

    /// [`Store::register`] that also stores a distribution descriptor (`descriptor.json`;
    /// moby stores only descriptors with a digest).
    pub fn register_with_descriptor<R: Read + Send>(
        &self,
        tar: R,
        parent: Option<&ChainId>,
        descriptor: Option<&Descriptor>,
    ) -> Result<LayerRef> {
        let _span =
            tracing::info_span!("register", parent = ?parent.map(|p| p.to_string())).entered();
        let input = Input {
            tar,
            descriptor: descriptor.filter(|d| d.digest.is_some()).cloned(),
        };
        match self.register_layers(parent, vec![input], 0) {
            Ok(mut refs) => Ok(refs.pop().expect("one layer in, one reference out")),
            Err(e @ (Error::LayerDoesNotExist(_) | Error::MaxDepthExceeded { .. })) => Err(e),
            Err(Error::RegisterChain { source, .. }) => Err(Error::Register {
                parent: parent.cloned(),
                source,
            }),
            Err(other) => Err(Error::Register {
                parent: parent.cloned(),
                source: Box::new(other),
            }),
        }
    }

    /// Registers `layers` as a chain on `parent` (the first on `parent`, each next one on the
    /// one before) and returns a reference to each, in order.
    ///
    /// The result is what calling [`Store::register`] once per layer would give, all or
    /// nothing: layers that exist already are handed out as they are (their streams are still
    /// read to the end), new ones are built on them; on any error no layer of the chain is
    /// left behind and every count is as before. The error says which layer failed.
    ///
    /// When the driver's apply reads nothing of the parent
    /// ([`graphdriver::DiffDriver::apply_independent_of_parent`]: overlay2 with native diff),
    /// up to four layers (one per core, at least two) are read, hashed, split and applied at
    /// the same time; their metadata is committed in chain order once all of them succeeded.
    /// Otherwise the layers are applied one after another. If some layers of the chain exist
    /// already (or appear meanwhile, from a concurrent register), the layers above them that
    /// were applied on this call's own copies are registered again on the existing ones from
    /// those copies; [`Error::ChainRaced`] only if that keeps racing.
    pub fn register_chain<R: Read + Send>(
        &self,
        parent: Option<&ChainId>,
        layers: Vec<R>,
    ) -> Result<Vec<LayerRef>> {
        let _span = tracing::info_span!(
            "register_chain",
            parent = ?parent.map(|p| p.to_string()),
            layers = layers.len()
        )
        .entered();
        if layers.is_empty() {
            return Ok(Vec::new());
        }
        let inputs = layers
            .into_iter()
            .map(|tar| Input {
                tar,
                descriptor: None,
            })
            .collect();
        self.register_layers(parent, inputs, 0)
    }

    /// The one register pipeline. `round` counts rebuilds on layers that appeared meanwhile.
    fn register_layers<R: Read + Send>(
        &self,
        parent: Option<&ChainId>,
        inputs: Vec<Input<R>>,
        round: usize,
    ) -> Result<Vec<LayerRef>> {
        let count = inputs.len();
        let mut guard = RegisterGuard::new(self);

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

        let meta = &self.inner.backend.meta;
        let driver = self.inner.backend.driver.as_ref();
        let mut txs = Vec::with_capacity(count);
        for _ in 0..count {
            txs.push(meta.start_transaction()?);
        }
        let at_layer = |index: usize| {
            move |e: Error| Error::RegisterChain {
                index,
                count,
                source: Box::new(e),
            }
        };
        let (tars, descriptors): (Vec<R>, Vec<Option<Descriptor>>) =
            inputs.into_iter().map(|i| (i.tar, i.descriptor)).unzip();

        // `adopted[i]`: layer i existed when it was applied, so the layer above it was built
        // on the existing one (one-after-another mode only).
        let mut adopted: Vec<Option<Layer>> = vec![None; count];
        let mut chains: Vec<ChainId> = Vec::with_capacity(count);
        let applied: Vec<Applied> = if count > 1 && driver.apply_independent_of_parent() {
            let parent_caches: Vec<Option<String>> =
                std::iter::once(parent_layer.as_ref().map(|p| p.cache_id().to_owned()))
                    .chain(cache_ids[..count - 1].iter().cloned().map(Some))
                    .collect();
            for (i, id) in cache_ids.iter().enumerate() {
                // Armed before the call: a failed create may leave a directory behind.
                guard.driver_dirs.push(id.clone());
                driver
                    .create(id, parent_caches[i].as_deref(), &CreateOpts::default())
                    .map_err(|e| at_layer(i)(e.into()))?;
            }
            let applied = self.apply_in_parallel(&cache_ids, &parent_caches, &mut txs, tars)?;
            for a in &applied {
                chains.push(chain_id(chains.last().or(parent), &a.diff_id));
            }
            applied
        } else {
            let mut below_cache = parent_layer.as_ref().map(|p| p.cache_id().to_owned());
            let mut applied = Vec::with_capacity(count);
            for (i, (tar, tx)) in tars.into_iter().zip(txs.iter_mut()).enumerate() {
                let _span = tracing::info_span!("register", index = i).entered();
                guard.driver_dirs.push(cache_ids[i].clone());
                driver
                    .create(
                        &cache_ids[i],
                        below_cache.as_deref(),
                        &CreateOpts::default(),
                    )
                    .map_err(|e| at_layer(i)(e.into()))?;
                let a = pipeline::apply_and_split(
                    driver,
                    tx,
                    &cache_ids[i],
                    below_cache.as_deref(),
                    tar,
                )
                .map_err(at_layer(i))?;
                let chain = chain_id(chains.last().or(parent), &a.diff_id);
                let existing = lock(&self.inner.state).layers.get_mut(&chain).map(|e| {
                    e.count += 1;
                    e.layer.clone()
                });
                match existing {
                    Some(layer) => {
                        // Held until the end: it becomes the count of the layer built on it.
                        guard.holds.push(chain.clone());
                        below_cache = Some(layer.cache_id().to_owned());
                        adopted[i] = Some(layer);
                        if driver.remove(&cache_ids[i]).is_ok() {
                            guard.driver_dirs.retain(|d| d != &cache_ids[i]);
                        }
                    }
                    None => below_cache = Some(cache_ids[i].clone()),
                }
                chains.push(chain);
                applied.push(a);
            }
            applied
        };

        // The records that name each layer (written for all; only the new ones are committed).
        for (i, (tx, a)) in txs.iter_mut().zip(&applied).enumerate() {
            let parent_chain = if i == 0 { parent } else { Some(&chains[i - 1]) };
            let fill = |tx: &mut Transaction| -> Result<()> {
                tx.set_diff_id(&a.diff_id)?;
                tx.set_size(a.size)?;
                tx.set_cache_id(&cache_ids[i])?;
                if let Some(p) = parent_chain {
                    tx.set_parent(p)?;
                }
                if let Some(d) = &descriptors[i] {
                    tx.set_descriptor(d)?;
                }
                Ok(())
            };
            fill(tx).map_err(at_layer(i))?;
        }
        if self.inner.sync_layer_data {
            // Outside the state lock: a syncfs can take a while on a busy disk.
            sync_filesystem(&self.inner.driver_home)?;
        }

        let mut state = lock(&self.inner.state);
        // A layer that exists has every ancestor in the map, so existing layers form a
        // prefix of the chain: the first `k`.
        let k = chains
            .iter()
            .take_while(|c| state.layers.contains_key(*c))
            .count();
        if k == count {
            // The whole chain was there (or another register won): hand it out; the guard
            // removes what this call made and gives back the counts it took.
            tracing::debug!(top = %chains[count - 1], "chain already exists");
            return Ok(chains
                .iter()
                .map(|c| self.new_ref(state.layers.get_mut(c).expect("checked above")))
                .collect());
        }
        if k > 0 && adopted[k - 1].is_none() {
            // Layers k.. sit on this call's copy of layer k-1, which exists already: hand out
            // the existing prefix and register the rest again on it, from our copies.
            let prefix: Vec<LayerRef> = chains[..k]
                .iter()
                .map(|c| self.new_ref(state.layers.get_mut(c).expect("checked above")))
                .collect();
            drop(state);
            guard.handed = prefix;
            if round + 1 >= MAX_ROUNDS {
                return Err(Error::ChainRaced {
                    layer: chains[k - 1].clone(),
                });
            }
            tracing::info!(existing = %chains[k - 1], rebuilt = count - k, "building on an existing layer");
            let mut again = Vec::with_capacity(count - k);
            for i in k..count {
                let tar = tarstream::reassemble(
                    self.inner.backend.driver.clone(),
                    &cache_ids[i],
                    txs[i].tar_split_reader()?,
                )
                .map_err(at_layer(i))?;
                again.push(Input {
                    tar: Box::new(tar) as Box<dyn Read + Send>,
                    descriptor: descriptors[i].clone(),
                });
            }
            let rest = self
                .register_layers(Some(&chains[k - 1]), again, round + 1)
                .map_err(|e| match e {
                    Error::RegisterChain { index, source, .. } => Error::RegisterChain {
                        index: index + k,
                        count,
                        source,
                    },
                    other => other,
                })?;
            let same = rest
                .iter()
                .zip(&applied[k..])
                .all(|(r, a)| r.diff_id() == &a.diff_id);
            if !same {
                for r in rest.into_iter().rev() {
                    let _ = self.release(r);
                }
                return Err(Error::InvalidArgument(
                    "a layer rebuilt from its own copy changed its DiffID".into(),
                ));
            }
            let mut refs = std::mem::take(&mut guard.handed);
            refs.extend(rest);
            return Ok(refs);
        }

        // Layers k.. are new; layer k sits on the existing layer k-1 (or on `parent`).
        let mut below: Option<Layer> = match k {
            0 => parent_layer,
            _ => Some(state.layers[&chains[k - 1]].layer.clone()),
        };
        let mut new_layers = Vec::with_capacity(count - k);
        for i in k..count {
            let layer = Layer(Arc::new(LayerInner {
                chain_id: chains[i].clone(),
                diff_id: applied[i].diff_id.clone(),
                cache_id: cache_ids[i].clone(),
                size: applied[i].size,
                parent: below.take(),
                descriptor: descriptors[i].clone(),
                backend: self.inner.backend.clone(),
            }));
            below = Some(layer.clone());
            new_layers.push(layer);
        }
        for (i, tx) in txs.drain(..).enumerate().skip(k) {
            tx.commit(&chains[i]).map_err(|e| at_layer(i)(e.into()))?;
            guard.committed.push(new_layers[i - k].clone());
        }

        // Everything is on disk: publish. Each new layer but the last is counted once by its
        // child; the first new one by the count taken on `parent` (k = 0) or the hold on the
        // existing layer below it. Every layer gets the reference handed out.
        let mut refs: Vec<LayerRef> = chains[..k]
            .iter()
            .map(|c| self.new_ref(state.layers.get_mut(c).expect("checked above")))
            .collect();
        for (j, layer) in new_layers.into_iter().enumerate() {
            let mut entry = Entry::new(layer);
            entry.count = usize::from(k + j + 1 < count);
            refs.push(self.new_ref(&mut entry));
            state.layers.insert(chains[k + j].clone(), entry);
        }
        if k == 0 {
            guard.parent = None;
        } else if let Some(pos) = guard.holds.iter().position(|h| h == &chains[k - 1]) {
            guard.holds.remove(pos);
        }
        guard.committed.clear();
        guard.driver_dirs.retain(|d| !cache_ids[k..].contains(d));
        drop(state);
        drop(guard);
        if count == 1 {
            tracing::info!(layer = %chains[0], new = k == 0, "registered layer");
        } else {
            tracing::info!(top = %chains[count - 1], layers = count, new = count - k, "registered chain");
        }
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
                        let result = pipeline::apply_and_split(
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

/// Undoes a register that did not finish, when dropped:
///
/// 1. committed records are removed newest first, through the same `-removing` rename a
///    release uses; if one cannot be, it and the layers below it stay, complete, and enter
///    the map unheld (as after a restart), so no record is ever left without its parent;
/// 2. every other driver directory the call made is removed;
/// 3. the in-flight marks, the count on the parent, the holds on existing layers and any
///    reference handed out meanwhile are given back, deleting nothing.
struct RegisterGuard<'a> {
    store: &'a Store,
    parent: Option<ChainId>,
    in_flight: Vec<String>,
    driver_dirs: Vec<String>,
    holds: Vec<ChainId>,
    handed: Vec<LayerRef>,
    committed: Vec<Layer>,
}

impl<'a> RegisterGuard<'a> {
    fn new(store: &'a Store) -> Self {
        RegisterGuard {
            store,
            parent: None,
            in_flight: Vec::new(),
            driver_dirs: Vec::new(),
            holds: Vec::new(),
            handed: Vec::new(),
            committed: Vec::new(),
        }
    }
}

impl Drop for RegisterGuard<'_> {
    fn drop(&mut self) {
        let meta = &self.store.inner.backend.meta;
        let driver = &self.store.inner.backend.driver;
        // Newest first; stop at the first record that cannot be removed: the ones below it
        // are its ancestors and must stay with it.
        let mut kept = Vec::new();
        while let Some(layer) = self.committed.pop() {
            match meta.remove_layer(layer.chain_id()) {
                Ok(orphan) => {
                    self.driver_dirs.retain(|d| d != layer.cache_id());
                    if let Err(e) = driver.remove(layer.cache_id()) {
                        tracing::error!(layer = %layer.chain_id(), error = %crate::error::with_causes(&e), "rollback: could not remove driver directory; gc finishes the removal");
                    } else if let Err(e) = meta.finish_removal(&orphan) {
                        tracing::error!(layer = %layer.chain_id(), error = %crate::error::with_causes(&e), "rollback: could not finish removal; gc finishes it");
                    }
                }
                Err(e) => {
                    tracing::error!(layer = %layer.chain_id(), error = %crate::error::with_causes(&e), "rollback: could not remove committed layer; it stays with the layers below it");
                    kept = std::mem::take(&mut self.committed);
                    kept.push(layer);
                }
            }
        }
        for layer in &kept {
            self.driver_dirs.retain(|d| d != layer.cache_id());
        }
        for id in self.driver_dirs.drain(..).rev() {
            if let Err(e) = driver.remove(&id) {
                tracing::error!(id, error = %crate::error::with_causes(&e), "cleanup after failure: could not remove driver directory");
            }
        }
        let mut state = lock(&self.store.inner.state);
        for id in self.in_flight.drain(..) {
            state.in_flight.remove(&id);
        }
        // Kept layers enter the map; the count this call took on the layer below the first
        // one becomes that layer's child count.
        let mut base = kept
            .first()
            .and_then(|l| l.parent())
            .map(|p| p.chain_id().clone());
        for (i, layer) in kept.iter().enumerate() {
            let mut entry = Entry::new(layer.clone());
            entry.count = usize::from(i + 1 < kept.len());
            state.layers.insert(layer.chain_id().clone(), entry);
        }
        for id in self.parent.take().into_iter().chain(self.holds.drain(..)) {
            if base.as_ref() == Some(&id) {
                base = None;
                continue;
            }
            give_back(&mut state, &id);
        }
        for r in self.handed.drain(..) {
            self.store.take_back(&mut state, r);
        }
    }
}
