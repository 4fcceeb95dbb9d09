//! The [`Store`]: register, get, release, RW layers, restore and cleanup.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use graphdriver::{CreateOpts, Driver};
use layer_digest::{ChainId, DiffId, chain_id};
use layer_meta::{Descriptor, Durability, MetaOptions, MetaStore, MountRecord};

use crate::drivers;
use crate::error::{Error, Result};
use crate::ids::random_id;
use crate::layer::{Backend, Layer, LayerInner, LayerRef, Metadata};
use crate::locks::{NameLocks, RootLock};
use crate::register;
use crate::rwlayer::{CreateRwOptions, MountInner, RwLayer, RwLayerRef};

mod chain;

/// moby's limit: 127 lowers is the most some drivers mount, and a container needs two more
/// (init and RW).
pub const DEFAULT_MAX_DEPTH: usize = 125;

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The data-root (Docker's `--data-root`, e.g. `/var/lib/docker`). With an
    /// [`StoreOptions::id_mapping`] the store lives in `<root>/<uid>.<gid>/` of the remapped
    /// root, as dockerd `--userns-remap` puts it ([`crate::store_root`]).
    pub root: PathBuf,
    /// Container → host ID ranges for the owners of layer files (moby's
    /// `StoreOptions.IDMapping`, Docker's `--userns-remap`), handed to the driver. The
    /// identity by default.
    pub id_mapping: graphdriver::IdMapping,
    /// The driver name; `None` chooses as Docker does: the one already in use under the root,
    /// else overlay2 where it works, else vfs.
    pub driver: Option<String>,
    /// Driver options, `key=value` (e.g. `overlay2.override_kernel_check=true`).
    pub driver_options: Vec<String>,
    /// When metadata reaches stable storage (see [`layer_meta::Durability`]).
    pub durability: Durability,
    /// Deepest chain a register may build (moby: 125).
    pub max_depth: usize,
    /// Run [`Store::cleanup`]'s collection of leftovers right after opening.
    pub cleanup_on_open: bool,
    /// Wait for another process's lock on the root instead of failing at once.
    pub wait_for_lock: bool,
    /// `syncfs` the driver's filesystem before each layer's metadata commit, so that a layer
    /// that survives a power cut also has its files. Off by default, as in moby: metadata is
    /// always durable, and a layer whose data was lost to a power cut fails `check` (its tar
    /// no longer hashes to its DiffID) and is removed by repair. On costs one `syncfs` per
    /// register, which flushes every dirty page of that filesystem.
    pub sync_layer_data: bool,
    /// Test seam: consulted before every metadata step (see [`layer_meta::FaultInjector`]).
    #[doc(hidden)]
    pub fault_injector: Option<Arc<dyn layer_meta::FaultInjector>>,
}

impl StoreOptions {
    /// Defaults for a data-root: driver chosen as Docker does, durable metadata, depth 125.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StoreOptions {
            root: root.into(),
            driver: None,
            driver_options: Vec::new(),
            id_mapping: graphdriver::IdMapping::identity(),
            durability: Durability::Full,
            max_depth: DEFAULT_MAX_DEPTH,
            cleanup_on_open: false,
            wait_for_lock: true,
            sync_layer_data: false,
            fault_injector: None,
        }
    }

    /// Picks a driver by name.
    pub fn driver(mut self, name: impl Into<String>) -> Self {
        self.driver = Some(name.into());
        self
    }
}

/// One entry of the layer map: the layer and its reference count (moby's `roLayer` counters).
struct Entry {
    layer: Layer,
    /// Handed-out references + children + RW layers on top.
    count: usize,
    /// The IDs of the live [`LayerRef`]s.
    refs: HashSet<u64>,
}

#[derive(Default)]
struct State {
    layers: HashMap<ChainId, Entry>,
    /// Driver directories being created right now: cleanup must not take them for orphans.
    in_flight: HashSet<String>,
}

/// A layer directory or mount found on disk that could not be loaded at open.
#[derive(Debug)]
pub struct BrokenEntry {
    /// The chain ID or mount name.
    pub id: String,
    /// Why.
    pub reason: String,
}

pub(crate) struct Inner {
    pub(crate) backend: Arc<Backend>,
    root: PathBuf,
    driver_home: PathBuf,
    state: Mutex<State>,
    mounts: Mutex<HashMap<String, RwLayer>>,
    names: NameLocks,
    next_ref: AtomicU64,
    store_id: u64,
    max_depth: usize,
    sync_layer_data: bool,
    pub(crate) broken_layers: Mutex<Vec<BrokenEntry>>,
    pub(crate) broken_mounts: Mutex<Vec<BrokenEntry>>,
    _lock: RootLock,
}

/// A layer store over a Docker-layout data-root. `Send + Sync`; clone it to share.
///
/// ```no_run
/// use layer_store::{Store, StoreOptions};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Store::open(StoreOptions::new("/tmp/root").driver("vfs"))?;
/// let tar = std::fs::File::open("layer.tar")?;
/// let layer = store.register(tar, None)?;
/// println!("{} {}", layer.chain_id(), layer.diff_id());
/// let mut bytes = Vec::new();
/// std::io::Read::read_to_end(&mut layer.tar_stream()?, &mut bytes)?; // the exact input
/// store.release(layer)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .field("driver", &self.driver_name())
            .finish()
    }
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock cannot leave the maps half-updated in a way later calls
    // would trust less than the disk; keep going rather than poison every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Opens (creating if needed) the store under a data-root and restores every layer and RW
    /// layer recorded there.
    pub fn open(opts: StoreOptions) -> Result<Store> {
        Self::open_inner(opts, None)
    }

    /// Test seam: [`Store::open`] with a driver built by the caller (e.g. one that wraps a
    /// real driver to inject failures). `opts.driver` names its layerdb (`image/<name>`) and
    /// defaults to the driver's own name.
    #[doc(hidden)]
    pub fn open_with_driver(opts: StoreOptions, driver: Arc<dyn Driver>) -> Result<Store> {
        Self::open_inner(opts, Some(driver))
    }

    fn open_inner(opts: StoreOptions, given: Option<Arc<dyn Driver>>) -> Result<Store> {
        let _span = tracing::info_span!("store_open", root = %opts.root.display()).entered();
        let root = crate::remap::prepare(&opts.root, &opts.id_mapping)?;
        // One process per root, taken before the driver touches anything.
        let lock = RootLock::acquire(&root, root.join("layerstore.lock"), opts.wait_for_lock)?;
        let ids = &opts.id_mapping;
        let (name, driver) = match (given, &opts.driver) {
            (Some(driver), name) => (
                name.clone().unwrap_or_else(|| driver.name().to_owned()),
                driver,
            ),
            (None, Some(name)) => (
                name.clone(),
                drivers::open(name, &root, &opts.driver_options, ids)?,
            ),
            (None, None) => drivers::choose_and_open(&root, &opts.driver_options, ids)?,
        };
        let image_dir = root.join("image").join(&name);
        // 0700 for the dirs it makes, as dockerd's MkdirAll of the image root.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&image_dir)
            .map_err(|e| Error::io(format!("create {}", image_dir.display()), e))?;
        let driver_home = root.join(&name);
        let meta = MetaStore::open(
            &image_dir.join("layerdb"),
            MetaOptions {
                durability: opts.durability,
                fault_injector: opts.fault_injector.clone(),
            },
        )?;
        let store = Store {
            inner: Arc::new(Inner {
                backend: Arc::new(Backend { driver, meta }),
                root,
                driver_home,
                state: Mutex::new(State::default()),
                mounts: Mutex::new(HashMap::new()),
                names: NameLocks::default(),
                next_ref: AtomicU64::new(1),
                store_id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
                max_depth: opts.max_depth,
                sync_layer_data: opts.sync_layer_data,
                broken_layers: Mutex::new(Vec::new()),
                broken_mounts: Mutex::new(Vec::new()),
                _lock: lock,
            }),
        };
        store.restore()?;
        if opts.cleanup_on_open {
            let report = store.collect_garbage()?;
            if !report.is_empty() {
                tracing::info!(?report, "collected leftovers at open");
            }
        }
        Ok(store)
    }

    /// Reloads the layer map and mounts from disk (moby's `newStoreFromGraphDriver`), except
    /// that an unloadable layer or mount is recorded (see [`Store::broken`]) instead of only
    /// logged at debug level.
    fn restore(&self) -> Result<()> {
        let meta = &self.inner.backend.meta;
        let listing = meta.list_layers()?;
        let mut broken = Vec::new();
        for b in &listing.broken {
            tracing::warn!(layer = %b.chain_id, error = %b.error, "layer metadata does not load");
            broken.push(BrokenEntry {
                id: b.chain_id.to_string(),
                reason: b.error.to_string(),
            });
        }
        let records: HashMap<ChainId, layer_meta::LayerRecord> = listing
            .layers
            .into_iter()
            .map(|r| (r.chain_id.clone(), r))
            .collect();
        let mut state = lock(&self.inner.state);
        let mut loading = Vec::new();
        for id in records.keys() {
            self.load_layer(id, &records, &mut state, &mut broken, &mut loading);
        }
        drop(state);
        *lock(&self.inner.broken_layers) = broken;

        let mounts = meta.list_mounts()?;
        let mut broken_mounts = Vec::new();
        for b in &mounts.broken {
            tracing::warn!(mount = %b.name, error = %b.error, "mount metadata does not load");
            broken_mounts.push(BrokenEntry {
                id: b.name.clone(),
                reason: b.error.to_string(),
            });
        }
        let mut map = lock(&self.inner.mounts);
        for (name, rec) in mounts.mounts {
            let parent = match &rec.parent {
                None => None,
                Some(p) => {
                    let mut state = lock(&self.inner.state);
                    match state.layers.get_mut(p) {
                        Some(e) => {
                            e.count += 1;
                            Some(e.layer.clone())
                        }
                        None => {
                            tracing::warn!(mount = %name, parent = %p, "mount's parent layer is missing");
                            broken_mounts.push(BrokenEntry {
                                id: name.clone(),
                                reason: format!("parent layer {p} is missing or broken"),
                            });
                            continue;
                        }
                    }
                }
            };
            map.insert(
                name.clone(),
                RwLayer(Arc::new(MountInner {
                    name,
                    mount_id: rec.mount_id,
                    init_id: rec.init_id,
                    parent,
                    refs: Mutex::new(HashSet::new()),
                    backend: self.inner.backend.clone(),
                })),
            );
        }
        *lock(&self.inner.broken_mounts) = broken_mounts;
        Ok(())
    }

    fn load_layer(
        &self,
        id: &ChainId,
        records: &HashMap<ChainId, layer_meta::LayerRecord>,
        state: &mut State,
        broken: &mut Vec<BrokenEntry>,
        loading: &mut Vec<ChainId>,
    ) -> Option<Layer> {
        if let Some(e) = state.layers.get(id) {
            return Some(e.layer.clone());
        }
        if broken.iter().any(|b| b.id == id.as_str()) {
            return None;
        }
        let Some(rec) = records.get(id) else {
            broken.push(BrokenEntry {
                id: id.to_string(),
                reason: "layer is missing".into(),
            });
            return None;
        };
        if loading.contains(id) {
            broken.push(BrokenEntry {
                id: id.to_string(),
                reason: "parent chain loops".into(),
            });
            return None;
        }
        loading.push(id.clone());
        let parent = match &rec.parent {
            None => None,
            Some(p) => match self.load_layer(p, records, state, broken, loading) {
                Some(l) => Some(l),
                None => {
                    tracing::warn!(layer = %id, parent = %p, "parent layer missing or broken");
                    broken.push(BrokenEntry {
                        id: id.to_string(),
                        reason: format!("parent layer {p} is missing or broken"),
                    });
                    loading.pop();
                    return None;
                }
            },
        };
        loading.pop();
        if let Some(p) = &parent
            && let Some(e) = state.layers.get_mut(p.chain_id())
        {
            e.count += 1;
        }
        let layer = Layer(Arc::new(LayerInner {
            chain_id: rec.chain_id.clone(),
            diff_id: rec.diff_id.clone(),
            cache_id: rec.cache_id.clone(),
            // moby reads any int64; Docker writes only non-negative sizes.
            size: u64::try_from(rec.size).unwrap_or(0),
            parent,
            descriptor: rec.descriptor.clone(),
            backend: self.inner.backend.clone(),
        }));
        state.layers.insert(
            id.clone(),
            Entry {
                layer: layer.clone(),
                count: 0,
                refs: HashSet::new(),
            },
        );
        Some(layer)
    }

    /// Takes one count on `parent` for a layer or RW layer about to be built on it; the
    /// caller's guard gives it back if the build fails.
    fn count_parent(&self, parent: &ChainId) -> Result<Layer> {
        let mut state = lock(&self.inner.state);
        let entry = state
            .layers
            .get_mut(parent)
            .ok_or_else(|| Error::LayerDoesNotExist(parent.clone()))?;
        entry.count += 1;
        Ok(entry.layer.clone())
    }

    fn new_ref(&self, entry: &mut Entry) -> LayerRef {
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

    /// The driver's name (`overlay2`, `vfs`).
    pub fn driver_name(&self) -> &str {
        self.inner.backend.driver.name()
    }

    /// The driver's status rows.
    pub fn driver_status(&self) -> Vec<(String, String)> {
        self.inner.backend.driver.status()
    }

    /// The driver itself, for callers that need more than the store offers.
    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.inner.backend.driver
    }

    /// The metadata store.
    pub fn meta(&self) -> &MetaStore {
        &self.inner.backend.meta
    }

    /// The store's root: the data-root, or `<data-root>/<uid>.<gid>` with an ID mapping.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The driver's home directory (`<root>/<driver>`).
    pub fn driver_home(&self) -> &Path {
        &self.inner.driver_home
    }

    /// Layers and mounts found on disk at open that could not be loaded.
    pub fn broken(&self) -> (Vec<String>, Vec<String>) {
        let l = lock(&self.inner.broken_layers)
            .iter()
            .map(|b| format!("{}: {}", b.id, b.reason))
            .collect();
        let m = lock(&self.inner.broken_mounts)
            .iter()
            .map(|b| format!("{}: {}", b.id, b.reason))
            .collect();
        (l, m)
    }

    /// Registers a layer from its uncompressed tar stream on top of `parent`.
    ///
    /// The stream is read once: it is hashed (DiffID), split into tar-split metadata and
    /// applied by the driver in the same pass. Nothing becomes visible unless everything
    /// succeeded; on any error every directory and file made for it is removed. Registering
    /// content that already exists returns a new reference to the existing layer.
    pub fn register<R: Read + Send>(&self, tar: R, parent: Option<&ChainId>) -> Result<LayerRef> {
        self.register_with_descriptor(tar, parent, None)
    }

    /// [`Store::register`] that also stores a distribution descriptor (`descriptor.json`).
    pub fn register_with_descriptor<R: Read + Send>(
        &self,
        tar: R,
        parent: Option<&ChainId>,
        descriptor: Option<&Descriptor>,
    ) -> Result<LayerRef> {
        let _span =
            tracing::info_span!("register", parent = ?parent.map(|p| p.to_string())).entered();
        self.register_inner(tar, parent, descriptor)
            .map_err(|e| match e {
                Error::LayerDoesNotExist(_) | Error::MaxDepthExceeded { .. } => e,
                other => Error::Register {
                    parent: parent.cloned(),
                    source: Box::new(other),
                },
            })
    }

    fn register_inner<R: Read + Send>(
        &self,
        tar: R,
        parent: Option<&ChainId>,
        descriptor: Option<&Descriptor>,
    ) -> Result<LayerRef> {
        // Take a reference on the parent for the new layer; the guard gives it back on error.
        let mut guard = RegisterGuard::new(self);
        let parent_layer = match parent {
            None => None,
            Some(p) => {
                let layer = self.count_parent(p)?;
                guard.parent = Some(p.clone());
                let depth = layer.depth();
                if depth >= self.inner.max_depth {
                    return Err(Error::MaxDepthExceeded {
                        parent: p.clone(),
                        depth,
                        max: self.inner.max_depth,
                    });
                }
                Some(layer)
            }
        };
        let cache_id = random_id();
        lock(&self.inner.state).in_flight.insert(cache_id.clone());
        guard.in_flight = Some(cache_id.clone());

        let meta = &self.inner.backend.meta;
        let driver = &self.inner.backend.driver;
        let mut tx = meta.start_transaction()?;
        let parent_cache = parent_layer.as_ref().map(|p| p.cache_id().to_owned());
        // Armed before the call: a driver failing part-way may leave a directory behind, and
        // removing one that was never made is a no-op.
        guard.driver_dir = Some(cache_id.clone());
        driver.create(&cache_id, parent_cache.as_deref(), &CreateOpts::default())?;

        let applied = register::apply_and_split(
            driver.as_ref(),
            &mut tx,
            &cache_id,
            parent_cache.as_deref(),
            tar,
        )?;
        let diff_id: DiffId = applied.diff_id;
        let chain = chain_id(parent, &diff_id);

        tx.set_diff_id(&diff_id)?;
        tx.set_size(applied.size)?;
        tx.set_cache_id(&cache_id)?;
        if let Some(d) = descriptor.filter(|d| d.digest.is_some()) {
            tx.set_descriptor(d)?;
        }
        if let Some(p) = parent {
            tx.set_parent(p)?;
        }
        if self.inner.sync_layer_data {
            // Outside the state lock: a syncfs can take a while on a busy disk.
            sync_filesystem(&self.inner.driver_home)?;
        }

        let mut state = lock(&self.inner.state);
        if let Some(existing) = state.layers.get_mut(&chain) {
            // Same content registered before (or concurrently, and the other won): hand out
            // the existing layer; the guard removes what we made and drops our parent ref.
            tracing::debug!(layer = %chain, "layer already exists");
            let r = self.new_ref(existing);
            drop(state);
            drop(tx);
            return Ok(r);
        }
        tx.commit(&chain)?;
        let layer = Layer(Arc::new(LayerInner {
            chain_id: chain.clone(),
            diff_id,
            cache_id,
            size: applied.size,
            parent: parent_layer,
            descriptor: descriptor.cloned().filter(|d| d.digest.is_some()),
            backend: self.inner.backend.clone(),
        }));
        let mut entry = Entry {
            layer,
            count: 0,
            refs: HashSet::new(),
        };
        let r = self.new_ref(&mut entry);
        state.layers.insert(chain.clone(), entry);
        drop(state);
        guard.disarm();
        tracing::info!(layer = %chain, diff = %r.diff_id(), size = r.diff_size(), "registered layer");
        Ok(r)
    }

    /// A new reference to an existing layer.
    pub fn get(&self, chain_id: &ChainId) -> Result<LayerRef> {
        let mut state = lock(&self.inner.state);
        let entry = state
            .layers
            .get_mut(chain_id)
            .ok_or_else(|| Error::LayerDoesNotExist(chain_id.clone()))?;
        Ok(self.new_ref(entry))
    }

    /// Every layer, uncounted (moby's `Map`).
    pub fn map(&self) -> BTreeMap<ChainId, Layer> {
        lock(&self.inner.state)
            .layers
            .iter()
            .map(|(k, e)| (k.clone(), e.layer.clone()))
            .collect()
    }

    /// How many references, children and RW layers hold a layer (for tools and tests).
    pub fn reference_count(&self, chain_id: &ChainId) -> Option<usize> {
        lock(&self.inner.state)
            .layers
            .get(chain_id)
            .map(|e| e.count)
    }

    /// Gives back a reference. A layer whose count drops to zero is deleted, then its parent is
    /// released in turn; returns what was deleted, child first.
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
    fn release_chain(&self, state: &mut State, mut id: ChainId) -> Result<Vec<Metadata>> {
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
                        tracing::error!(parent = %p.chain_id(), error = %pe, "releasing the parent failed too");
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
    /// directory, then the metadata. A crash in between leaves an orphan that cleanup finishes.
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
        let mut guard = RegisterGuard::new(self);
        let parent_layer = parent.map(|p| self.count_parent(p)).transpose()?;
        guard.parent = parent.cloned();
        let driver = &self.inner.backend.driver;
        let mount_id = random_id();
        lock(&self.inner.state).in_flight.insert(mount_id.clone());
        guard.in_flight = Some(mount_id.clone());
        let mut cache_parent = parent_layer.as_ref().map(|p| p.cache_id().to_owned());
        let mut init_id = None;
        if let Some(init) = opts.init {
            let id = format!("{mount_id}-init");
            lock(&self.inner.state).in_flight.insert(id.clone());
            guard.in_flight_init = Some(id.clone());
            let copts = CreateOpts {
                mount_label: opts.mount_label.clone(),
                storage_opt: opts.storage_opt.clone(),
            };
            guard.init_dir = Some(id.clone());
            driver.create_read_write(&id, cache_parent.as_deref(), &copts)?;
            let path = driver.get(&id, "")?;
            let result = init(&path);
            let put = driver.put(&id);
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
        guard.driver_dir = Some(mount_id.clone());
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

    /// Gives back an RW-layer reference; the last one removes the RW layer (metadata, then
    /// driver dirs and init layer) and releases its parent, returning the layers that deleted.
    ///
    /// Deviation from moby (which removes the directories first and the record last): a
    /// failure before the record is removed leaves the RW layer in place, held by nothing, so
    /// [`Store::get_rw_layer`] + release retries; a failure after it forgets the RW layer and
    /// releases its parent, and gc collects the directories left behind.
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
        match self.remove_rw_from_disk(&name, &m) {
            Ok(()) => {}
            // Nothing changed: the RW layer stays, held by nothing (as after a restart), so
            // get_rw_layer + release_rw_layer retries. (Putting the consumed handle's ID back
            // would make it unreleasable.)
            Err(DeleteError::Unchanged(e)) => return Err(e),
            // The record is gone: so is the RW layer; gc collects its directories.
            Err(DeleteError::Marked(e)) => {
                lock(&self.inner.mounts).remove(&name);
                if let Some(p) = m.parent() {
                    let mut state = lock(&self.inner.state);
                    if let Err(pe) = self.release_chain(&mut state, p.chain_id().clone()) {
                        tracing::error!(parent = %p.chain_id(), error = %pe, "releasing the parent failed too");
                    }
                }
                return Err(e);
            }
        }
        lock(&self.inner.mounts).remove(&name);
        match m.parent() {
            None => Ok(Vec::new()),
            Some(p) => {
                let mut state = lock(&self.inner.state);
                self.release_chain(&mut state, p.chain_id().clone())
            }
        }
    }

    /// Removes an RW layer's record, then its directories. The record goes first (one atomic
    /// step), so an interruption leaves only directories that nothing names, which gc
    /// collects; never a record whose directories are gone.
    fn remove_rw_from_disk(&self, name: &str, m: &RwLayer) -> std::result::Result<(), DeleteError> {
        self.inner
            .backend
            .meta
            .remove_mount(name)
            .map_err(|e| DeleteError::Unchanged(e.into()))?;
        let driver = &self.inner.backend.driver;
        let dirs = || -> Result<()> {
            driver.remove(m.mount_id())?;
            if let Some(init) = m.init_id() {
                driver.remove(init)?;
            }
            Ok(())
        };
        dirs().map_err(DeleteError::Marked)?;
        tracing::info!(name, mount = m.mount_id(), "removed RW layer");
        Ok(())
    }

    /// Collects what interrupted work left behind (see [`crate::GcReport`]) and releases what
    /// the driver holds (moby's `Cleanup`, which runs at daemon shutdown).
    pub fn cleanup(&self) -> Result<crate::GcReport> {
        let report = self.collect_garbage()?;
        self.inner.backend.driver.cleanup()?;
        Ok(report)
    }

    /// Runs `f` with the layer map locked: no layer enters or leaves the map meanwhile, and
    /// no layer deletion is under way (deletions run under this lock).
    pub(crate) fn with_layers_locked<T>(&self, f: impl FnOnce() -> T) -> T {
        let _state = lock(&self.inner.state);
        f()
    }

    /// Every driver directory that belongs to a known layer, RW layer or work in flight.
    pub(crate) fn referenced_driver_ids(&self) -> HashSet<String> {
        let mut ids = HashSet::new();
        let state = lock(&self.inner.state);
        for e in state.layers.values() {
            ids.insert(e.layer.cache_id().to_owned());
        }
        ids.extend(state.in_flight.iter().cloned());
        drop(state);
        for m in lock(&self.inner.mounts).values() {
            ids.insert(m.mount_id().to_owned());
            if let Some(i) = m.init_id() {
                ids.insert(i.to_owned());
            }
        }
        ids
    }

    /// Removes layers from the map and disk without reference checks (repair of broken
    /// layers). Children must come before parents.
    pub(crate) fn force_remove_layer(&self, id: &ChainId) -> Result<()> {
        let mut state = lock(&self.inner.state);
        if let Some(e) = state.layers.get(id) {
            let layer = e.layer.clone();
            match self.delete_layer(&layer) {
                Ok(()) => {}
                Err(DeleteError::Unchanged(e)) => return Err(e),
                Err(DeleteError::Marked(e)) => {
                    // Gone from the layerdb's listing: forget it (gc finishes the removal).
                    state.layers.remove(id);
                    if let Some(p) = layer.parent()
                        && let Some(pe) = state.layers.get_mut(p.chain_id())
                    {
                        pe.count = pe.count.saturating_sub(1);
                    }
                    return Err(e);
                }
            }
            state.layers.remove(id);
            if let Some(p) = layer.parent()
                && let Some(pe) = state.layers.get_mut(p.chain_id())
            {
                pe.count = pe.count.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// Removes an RW layer without reference checks (repair).
    pub(crate) fn force_remove_rw(&self, name: &str) -> Result<()> {
        let _name_lock = self.inner.names.lock(name);
        let Some(m) = lock(&self.inner.mounts).get(name).cloned() else {
            return Ok(());
        };
        match self.remove_rw_from_disk(name, &m) {
            Ok(()) => {}
            Err(DeleteError::Unchanged(e)) => return Err(e),
            Err(DeleteError::Marked(e)) => {
                // The record is gone; forget the RW layer below, then report.
                lock(&self.inner.mounts).remove(name);
                if let Some(p) = m.parent() {
                    let mut state = lock(&self.inner.state);
                    if let Some(pe) = state.layers.get_mut(p.chain_id()) {
                        pe.count = pe.count.saturating_sub(1);
                    }
                }
                return Err(e);
            }
        }
        lock(&self.inner.mounts).remove(name);
        if let Some(p) = m.parent() {
            let mut state = lock(&self.inner.state);
            if let Some(pe) = state.layers.get_mut(p.chain_id()) {
                pe.count = pe.count.saturating_sub(1);
            }
        }
        Ok(())
    }
}

/// Why [`Store::delete_layer`] failed: before anything changed on disk, or after the layer's
/// metadata was marked for removal (the point of no return).
enum DeleteError {
    Unchanged(Error),
    Marked(Error),
}

/// Undoes a half-done register or RW-layer creation when dropped without [`disarm`]:
/// removes the driver directories it made, forgets in-flight IDs and gives back the parent
/// reference. (The metadata transaction cleans itself up when dropped.)
///
/// [`disarm`]: RegisterGuard::disarm
struct RegisterGuard<'a> {
    store: &'a Store,
    parent: Option<ChainId>,
    in_flight: Option<String>,
    in_flight_init: Option<String>,
    driver_dir: Option<String>,
    init_dir: Option<String>,
    armed: bool,
}

impl<'a> RegisterGuard<'a> {
    fn new(store: &'a Store) -> Self {
        RegisterGuard {
            store,
            parent: None,
            in_flight: None,
            in_flight_init: None,
            driver_dir: None,
            init_dir: None,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
        self.parent = None;
        self.driver_dir = None;
        self.init_dir = None;
    }
}

impl Drop for RegisterGuard<'_> {
    fn drop(&mut self) {
        let driver = &self.store.inner.backend.driver;
        if self.armed {
            for id in [self.driver_dir.take(), self.init_dir.take()]
                .into_iter()
                .flatten()
            {
                if let Err(e) = driver.remove(&id) {
                    tracing::error!(id, error = %e, "cleanup after failure: could not remove driver directory");
                }
            }
        }
        let mut state = lock(&self.store.inner.state);
        for id in [self.in_flight.take(), self.in_flight_init.take()]
            .into_iter()
            .flatten()
        {
            state.in_flight.remove(&id);
        }
        // Give back the count taken on the parent without deleting anything: a failed or
        // duplicate register must leave the store as it found it. (moby releases here, which
        // deletes a parent that nothing else holds, e.g. right after a restart.)
        if let Some(p) = self.parent.take()
            && let Some(e) = state.layers.get_mut(&p)
        {
            e.count = e.count.saturating_sub(1);
        }
    }
}

/// Flushes every dirty page of the filesystem holding `dir` (`syncfs(2)`).
fn sync_filesystem(dir: &Path) -> Result<()> {
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::io(format!("open {} to sync it", dir.display()), e.into()))?;
    rustix::fs::syncfs(&fd).map_err(|e| Error::io(format!("syncfs {}", dir.display()), e.into()))
}
