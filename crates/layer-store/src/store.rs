//! The [`Store`]: its options, state and accessors. The operations live in one submodule each:
//! `open` (open and restore from disk), `register` (register and register_chain), `release`
//! (references, release and deletion) and `rw` (RW layers). `gc` and `check` are beside this
//! module.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use graphdriver::Driver;
use layer_digest::ChainId;
use layer_meta::{Durability, MetaStore, Reference};

use crate::error::{Error, Result};
use crate::layer::{Backend, Layer};
use crate::locks::{NameLocks, RootLock};
use crate::rwlayer::RwLayer;

mod open;
mod register;
mod release;
mod rw;

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
    /// else overlay2 where it works, else vfs. A root that another Docker driver (btrfs,
    /// zfs, devicemapper...) uses is refused rather than opened empty beside it.
    pub driver: Option<String>,
    /// Driver options, `key=value` (e.g. `overlay2.override_kernel_check=true`).
    pub driver_options: Vec<String>,
    /// When metadata reaches stable storage (see [`layer_meta::Durability`]).
    pub durability: Durability,
    /// Deepest chain a register may build (moby: 125).
    pub max_depth: usize,
    /// Run [`Store::cleanup`]'s collection of leftovers right after opening.
    pub cleanup_on_open: bool,
    /// Wait for another process's lock on the root instead of failing at once (on by
    /// default; [`Store::try_open`] never waits).
    pub wait_for_lock: bool,
    /// `syncfs` the driver's filesystem before each layer's metadata commit, so that a layer
    /// that survives a power cut also has its files. Off by default, as in moby: metadata is
    /// always durable, and a layer whose data was lost to a power cut fails `check` (its tar
    /// no longer hashes to its DiffID). On costs one `syncfs` per register, which flushes
    /// every dirty page of that filesystem.
    pub sync_layer_data: bool,
    /// Consulted before every metadata step, to inject failures (see
    /// [`layer_meta::FaultInjector`]): how this workspace's crash and fault tests drive
    /// recovery, and how a caller can test its own error handling. `None` in production.
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
    /// Handed-out references + children + RW layers on top + unloadable records that name it
    /// as their parent.
    count: usize,
    /// The IDs of the live [`crate::LayerRef`]s.
    refs: HashSet<u64>,
    /// The unloadable records counted in `count` (they never go away while the store is open).
    held_by_records: Vec<String>,
}

impl Entry {
    fn new(layer: Layer) -> Entry {
        Entry {
            layer,
            count: 0,
            refs: HashSet::new(),
            held_by_records: Vec::new(),
        }
    }
}

#[derive(Default)]
struct State {
    layers: HashMap<ChainId, Entry>,
    /// Driver directories being created right now: cleanup must not take them for orphans.
    in_flight: HashSet<String>,
}

/// A layer directory or mount record found on disk at open that could not be loaded, and what
/// it still names. It is reported and kept; what it names is kept with it.
#[derive(Debug, Clone)]
pub(crate) struct BrokenRecord {
    /// The chain ID or mount name.
    pub(crate) id: String,
    /// Why.
    pub(crate) reason: String,
    /// The layer it sits on.
    pub(crate) parent: Reference<ChainId>,
}

/// Who holds a layer: why a release, `rm` or repair would not delete it
/// ([`Store::users`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerUsers {
    /// Live [`crate::LayerRef`]s handed out by register and get (an image store on top
    /// holds one per image).
    pub references: usize,
    /// Layers built on it.
    pub children: Vec<ChainId>,
    /// RW layers built on it.
    pub rw_layers: Vec<String>,
    /// Unloadable layer or mount records that name it as their parent.
    pub unloadable_records: Vec<String>,
}

impl LayerUsers {
    /// True when nothing holds the layer.
    pub fn is_empty(&self) -> bool {
        self.references == 0
            && self.children.is_empty()
            && self.rw_layers.is_empty()
            && self.unloadable_records.is_empty()
    }
}

impl fmt::Display for LayerUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.references > 0 {
            parts.push(format!("{} reference(s)", self.references));
        }
        if !self.children.is_empty() {
            let ids: Vec<String> = self.children.iter().map(ToString::to_string).collect();
            parts.push(format!("child layer(s) {}", ids.join(", ")));
        }
        if !self.rw_layers.is_empty() {
            parts.push(format!("RW layer(s) {}", self.rw_layers.join(", ")));
        }
        if !self.unloadable_records.is_empty() {
            parts.push(format!(
                "unloadable record(s) {}",
                self.unloadable_records.join(", ")
            ));
        }
        if parts.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
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
    pub(crate) broken_layers: Mutex<Vec<BrokenRecord>>,
    pub(crate) broken_mounts: Mutex<Vec<BrokenRecord>>,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock cannot leave the maps half-updated in a way later calls
    // would trust less than the disk; keep going rather than poison every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
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

    /// Layers and mounts found on disk at open that could not be loaded (`"<id>: <why>"`).
    /// They are kept, and so is everything they name.
    pub fn broken(&self) -> (Vec<String>, Vec<String>) {
        let show = |list: &Mutex<Vec<BrokenRecord>>| {
            lock(list)
                .iter()
                .map(|b| format!("{}: {}", b.id, b.reason))
                .collect()
        };
        (
            show(&self.inner.broken_layers),
            show(&self.inner.broken_mounts),
        )
    }

    /// Every layer, uncounted (moby's `Map`).
    pub fn map(&self) -> BTreeMap<ChainId, Layer> {
        lock(&self.inner.state)
            .layers
            .iter()
            .map(|(k, e)| (k.clone(), e.layer.clone()))
            .collect()
    }

    /// How many references, children, RW layers and unloadable records hold a layer.
    pub fn reference_count(&self, chain_id: &ChainId) -> Option<usize> {
        lock(&self.inner.state)
            .layers
            .get(chain_id)
            .map(|e| e.count)
    }

    /// Who holds a layer (`None` if there is no such layer). A layer is deleted by a release
    /// only when this is empty, and never by gc or repair while it is not.
    pub fn users(&self, chain_id: &ChainId) -> Option<LayerUsers> {
        let state = lock(&self.inner.state);
        let entry = state.layers.get(chain_id)?;
        let mut children: Vec<ChainId> = state
            .layers
            .values()
            .filter(|e| e.layer.parent().is_some_and(|p| p.chain_id() == chain_id))
            .map(|e| e.layer.chain_id().clone())
            .collect();
        children.sort();
        let users = LayerUsers {
            references: entry.refs.len(),
            children,
            rw_layers: Vec::new(),
            unloadable_records: entry.held_by_records.clone(),
        };
        drop(state);
        let mut rw_layers: Vec<String> = lock(&self.inner.mounts)
            .values()
            .filter(|m| m.parent().is_some_and(|p| p.chain_id() == chain_id))
            .map(|m| m.name().to_owned())
            .collect();
        rw_layers.sort();
        Some(LayerUsers { rw_layers, ..users })
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
