//! Read-write (container) layers: create, get, release.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use graphdriver::CreateOpts;
use layer_digest::ChainId;
use layer_meta::MountRecord;

use super::release::give_back;
use super::{Store, lock};
use crate::error::{Error, Result};
use crate::ids::random_id;
use crate::layer::Metadata;
use crate::rwlayer::{CreateRwOptions, MountInner, RwLayer, RwLayerRef};

impl Store {
    /// Creates a read-write layer `name` on `parent` (with an init layer when
    /// `opts.init` is set) and returns a reference to it.
    ///
    /// Deviation from moby: on any failure, the init layer, the RW directory and any mount
    /// metadata are all removed (moby leaks the init layer and partial mount files).
    pub fn create_rw_layer(
        &self,
        name: &str,
        parent: Option<&ChainId>,
        opts: &CreateRwOptions<'_>,
    ) -> Result<RwLayerRef> {
        let _span = tracing::info_span!("create_rw_layer", name).entered();
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::InvalidArgument(format!(
                "invalid RW layer name {name:?}"
            )));
        }
        let _name_lock = self.inner.names.lock(name);
        if lock(&self.inner.mounts).contains_key(name) {
            return Err(Error::MountNameConflict(name.to_owned()));
        }
        let mut guard = CreateGuard {
            store: self,
            parent: None,
            in_flight: Vec::new(),
            dirs: Vec::new(),
            armed: true,
        };
        let parent_layer = parent.map(|p| self.count_parent(p)).transpose()?;
        guard.parent = parent.cloned();
        let driver = &self.inner.backend.driver;
        let mount_id = random_id();
        lock(&self.inner.state).in_flight.insert(mount_id.clone());
        guard.in_flight.push(mount_id.clone());
        let mut cache_parent = parent_layer.as_ref().map(|p| p.cache_id().to_owned());
        let mut init_id = None;
        if let Some(init) = opts.init {
            let id = format!("{mount_id}-init");
            lock(&self.inner.state).in_flight.insert(id.clone());
            guard.in_flight.push(id.clone());
            let copts = CreateOpts {
                mount_label: opts.mount_label.clone(),
                storage_opt: opts.storage_opt.clone(),
            };
            // Armed before the call: a driver failing part-way may leave a directory behind.
            guard.dirs.push(id.clone());
            driver.create_read_write(&id, cache_parent.as_deref(), &copts)?;
            let ledger = &self.inner.backend.ledger;
            ledger
                .add(&id)
                .map_err(|e| Error::io(format!("record the mount of {id}"), e))?;
            let path = driver.get(&id, "")?;
            let result = init(&path);
            let put = driver.put(&id);
            if put.is_ok() {
                ledger.remove(&id);
            }
            result.map_err(|source| Error::InitFunc {
                name: name.to_owned(),
                source,
            })?;
            put?;
            cache_parent = Some(id.clone());
            init_id = Some(id);
        }
        let copts = CreateOpts {
            mount_label: String::new(),
            storage_opt: opts.storage_opt.clone(),
        };
        guard.dirs.push(mount_id.clone());
        driver.create_read_write(&mount_id, cache_parent.as_deref(), &copts)?;
        let record = MountRecord {
            mount_id: mount_id.clone(),
            init_id: init_id.clone(),
            parent: parent.cloned(),
        };
        self.inner.backend.meta.set_mount(name, &record)?;
        let layer = RwLayer(Arc::new(MountInner {
            name: name.to_owned(),
            mount_id,
            init_id,
            parent: parent_layer,
            refs: Mutex::new(HashSet::new()),
            backend: self.inner.backend.clone(),
        }));
        lock(&self.inner.mounts).insert(name.to_owned(), layer.clone());
        guard.disarm();
        tracing::info!(name, mount = layer.mount_id(), "created RW layer");
        Ok(self.new_rw_ref(&layer))
    }

    fn new_rw_ref(&self, layer: &RwLayer) -> RwLayerRef {
        let ref_id = self.inner.next_ref.fetch_add(1, Ordering::Relaxed);
        lock(&layer.0.refs).insert(ref_id);
        RwLayerRef {
            layer: layer.clone(),
            ref_id,
            store_id: self.inner.store_id,
        }
    }

    /// A new reference to an existing RW layer.
    pub fn get_rw_layer(&self, name: &str) -> Result<RwLayerRef> {
        let _name_lock = self.inner.names.lock(name);
        let layer = lock(&self.inner.mounts)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MountDoesNotExist(name.to_owned()))?;
        Ok(self.new_rw_ref(&layer))
    }

    /// The mount ID (driver directory) of an RW layer.
    pub fn get_mount_id(&self, name: &str) -> Result<String> {
        lock(&self.inner.mounts)
            .get(name)
            .map(|l| l.mount_id().to_owned())
            .ok_or_else(|| Error::MountDoesNotExist(name.to_owned()))
    }

    /// Every RW layer, uncounted.
    pub fn rw_layers(&self) -> BTreeMap<String, RwLayer> {
        lock(&self.inner.mounts)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Gives back an RW-layer reference; the last one removes the RW layer and releases its
    /// parent, returning the layers that deleted.
    ///
    /// In moby's order: the RW directory, then the init layer's, then the record. On any
    /// error the record stays, so the RW layer stays (in the map and on disk, still counted
    /// on its parent) and nothing it names is collected; it is then held by nothing, as after
    /// a restart, and [`Store::get_rw_layer`] + release retries (moby keeps the caller's
    /// reference instead; this API has consumed it).
    pub fn release_rw_layer(&self, layer: RwLayerRef) -> Result<Vec<Metadata>> {
        let _span = tracing::info_span!("release_rw_layer", name = layer.name()).entered();
        if layer.store_id != self.inner.store_id {
            return Err(Error::LayerNotRetained(layer.name().to_owned()));
        }
        let name = layer.name().to_owned();
        let _name_lock = self.inner.names.lock(&name);
        let Some(m) = lock(&self.inner.mounts).get(&name).cloned() else {
            return Ok(Vec::new());
        };
        {
            let mut refs = lock(&m.0.refs);
            if !refs.remove(&layer.ref_id) {
                return Err(Error::LayerNotRetained(name));
            }
            if !refs.is_empty() {
                return Ok(Vec::new());
            }
        }
        let driver = &self.inner.backend.driver;
        driver.remove(m.mount_id())?;
        if let Some(init) = m.init_id() {
            driver.remove(init)?;
        }
        self.inner.backend.meta.remove_mount(&name)?;
        for id in std::iter::once(m.mount_id()).chain(m.init_id()) {
            self.inner.backend.ledger.remove(id);
        }
        lock(&self.inner.mounts).remove(&name);
        tracing::info!(name, mount = m.mount_id(), "removed RW layer");
        match m.parent() {
            None => Ok(Vec::new()),
            Some(p) => {
                let mut state = lock(&self.inner.state);
                self.release_chain(&mut state, p.chain_id().clone())
            }
        }
    }
}

/// Undoes a half-done RW-layer creation when dropped armed: removes the driver directories
/// it made (newest first), forgets in-flight IDs and gives back the parent's count.
struct CreateGuard<'a> {
    store: &'a Store,
    parent: Option<ChainId>,
    in_flight: Vec<String>,
    dirs: Vec<String>,
    armed: bool,
}

impl CreateGuard<'_> {
    fn disarm(&mut self) {
        self.armed = false;
        self.parent = None;
        self.dirs.clear();
    }
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        let driver = &self.store.inner.backend.driver;
        if self.armed {
            for id in self.dirs.drain(..).rev() {
                if let Err(e) = driver.remove(&id) {
                    tracing::error!(id, error = %crate::error::with_causes(&e), "cleanup after failure: could not remove driver directory");
                }
            }
        }
        let mut state = lock(&self.store.inner.state);
        for id in self.in_flight.drain(..) {
            state.in_flight.remove(&id);
        }
        if let Some(p) = self.parent.take() {
            give_back(&mut state, &p);
        }
    }
}
