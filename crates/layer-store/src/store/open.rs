//! Opening a store: lock the root, pick the driver, restore the layers and RW layers on disk.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use graphdriver::Driver;
use layer_digest::ChainId;
use layer_meta::{LayerRecord, MetaOptions, MetaStore, Reference};

use super::{BrokenRecord, Entry, Inner, State, Store, StoreOptions, lock};
use crate::drivers;
use crate::error::{Error, Result};
use crate::layer::{Backend, Layer, LayerInner};
use crate::live::MountLedger;
use crate::locks::{NameLocks, RootLock};
use crate::rwlayer::{MountInner, RwLayer};

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

/// Docker's mode for `image/` and `image/<driver>/` (moby's `MkdirAll(layerdb, 0700)` makes
/// every missing parent 0700 too).
const IMAGE_DIR_MODE: u32 = 0o700;

impl Store {
    /// Opens (creating if needed) the store under a data-root and restores every layer and RW
    /// layer recorded there.
    ///
    /// Fails with [`Error::AlreadyOpen`] if this process has the root open already (the
    /// root's lock would otherwise wait for itself), and, when no driver is named, with
    /// [`Error::ForeignDriver`] on a root another Docker storage driver uses.
    pub fn open(opts: StoreOptions) -> Result<Store> {
        Self::open_inner(opts, None)
    }

    /// [`Store::open`] without blocking: when another process has the root open, fails at
    /// once with [`Error::Locked`] instead of waiting for it to close (whatever
    /// [`StoreOptions::wait_for_lock`] says). Everything else is as [`Store::open`].
    ///
    /// ```no_run
    /// use layer_store::{Error, Store, StoreOptions};
    /// match Store::try_open(StoreOptions::new("/var/lib/mystore")) {
    ///     Ok(store) => println!("opened, driver {}", store.driver_name()),
    ///     Err(Error::Locked { path, .. }) => eprintln!("{} is busy, try later", path.display()),
    ///     Err(e) => eprintln!("error: {e}"),
    /// }
    /// ```
    pub fn try_open(opts: StoreOptions) -> Result<Store> {
        Self::open_inner(
            StoreOptions {
                wait_for_lock: false,
                ..opts
            },
            None,
        )
    }

    /// [`Store::open`] over a driver of your own: any [`Driver`] (implement
    /// [`graphdriver::ProtoDriver`] and [`graphdriver::DiffDriver`], or wrap a
    /// `ProtoDriver` in [`graphdriver::naive::NaiveDiffDriver`]; check it with graphdriver's
    /// `graphtest` conformance suite). The store keeps its metadata under
    /// `<root>/image/<name>/layerdb`, where `<name>` is `opts.driver` or, by default, the
    /// driver's own [`name`](graphdriver::ProtoDriver::name); the driver's home is the
    /// driver's own business (by convention `<root>/<name>`, which [`Store::driver_home`]
    /// reports). A driver that wraps a built-in one (to count calls, inject failures, add
    /// logging) is a driver of your own too.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use layer_store::{Store, StoreOptions};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let root = tempfile::tempdir()?;
    /// // Any `graphdriver::Driver`; here the vfs driver, built by the caller.
    /// let driver = graphdriver::vfs::init(root.path(), &[])?;
    /// let store = Store::open_with_driver(StoreOptions::new(root.path()), Arc::new(driver))?;
    /// assert_eq!(store.driver_name(), "vfs");
    /// assert!(root.path().join("image/vfs/layerdb").is_dir());
    /// # Ok(()) }
    /// ```
    pub fn open_with_driver(opts: StoreOptions, driver: Arc<dyn Driver>) -> Result<Store> {
        Self::open_inner(opts, Some(driver))
    }

    fn open_inner(opts: StoreOptions, given: Option<Arc<dyn Driver>>) -> Result<Store> {
        let _span = tracing::info_span!("store_open", root = %opts.root.display()).entered();
        if given.is_none() && opts.driver.is_none() {
            // A root another driver owns is refused before anything is written to it.
            drivers::prior(&crate::store_root(&opts.root, &opts.id_mapping))?;
        }
        let root = crate::remap::prepare(&opts.root, &opts.id_mapping)?;
        // One store per root, taken before the driver touches anything.
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
        let image_dir = root.join("image");
        create_private_dir(&image_dir)?;
        let driver_image_dir = image_dir.join(&name);
        create_private_dir(&driver_image_dir)?;
        let driver_home = root.join(&name);
        let meta = MetaStore::open(
            &driver_image_dir.join("layerdb"),
            MetaOptions {
                durability: opts.durability,
                fault_injector: opts.fault_injector.clone(),
            },
        )?;
        let store = Store {
            inner: Arc::new(Inner {
                backend: Arc::new(Backend {
                    driver,
                    meta,
                    ledger: MountLedger::new(&root),
                }),
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
    /// logged at debug level, and holds a count on the layer it names as its parent, so that
    /// nothing deletes a layer an unloadable record still sits on.
    fn restore(&self) -> Result<()> {
        let meta = &self.inner.backend.meta;
        let listing = meta.list_layers()?;
        let mut broken = Vec::new();
        for b in &listing.broken {
            tracing::warn!(layer = %b.chain_id, error = %crate::error::with_causes(&b.error), "layer metadata does not load");
            broken.push(BrokenRecord {
                id: b.chain_id.to_string(),
                reason: crate::error::with_causes(&b.error),
                parent: b.parent.clone(),
            });
        }
        let records: HashMap<ChainId, LayerRecord> = listing
            .layers
            .into_iter()
            .map(|r| (r.chain_id.clone(), r))
            .collect();
        let mut state = lock(&self.inner.state);
        let mut loading = Vec::new();
        for id in records.keys() {
            self.load_layer(id, &records, &mut state, &mut broken, &mut loading);
        }
        for b in &broken {
            if let Reference::Named(p) = &b.parent
                && let Some(e) = state.layers.get_mut(p)
            {
                e.count += 1;
                e.held_by_records.push(format!("layer {}", b.id));
            }
        }
        drop(state);
        *lock(&self.inner.broken_layers) = broken;

        let mounts = meta.list_mounts()?;
        let mut broken_mounts = Vec::new();
        for b in &mounts.broken {
            tracing::warn!(mount = %b.name, error = %crate::error::with_causes(&b.error), "mount metadata does not load");
            broken_mounts.push(BrokenRecord {
                id: b.name.clone(),
                reason: crate::error::with_causes(&b.error),
                parent: b.parent.clone(),
            });
        }
        let mut map = lock(&self.inner.mounts);
        let mut state = lock(&self.inner.state);
        for b in &broken_mounts {
            if let Reference::Named(p) = &b.parent
                && let Some(e) = state.layers.get_mut(p)
            {
                e.count += 1;
                e.held_by_records.push(format!("RW layer {}", b.id));
            }
        }
        for (name, rec) in mounts.mounts {
            let parent = match &rec.parent {
                None => None,
                Some(p) => match state.layers.get_mut(p) {
                    Some(e) => {
                        e.count += 1;
                        Some(e.layer.clone())
                    }
                    None => {
                        tracing::warn!(mount = %name, parent = %p, "mount's parent layer is missing");
                        broken_mounts.push(BrokenRecord {
                            id: name.clone(),
                            reason: format!("parent layer {p} is missing or broken"),
                            parent: Reference::Named(p.clone()),
                        });
                        continue;
                    }
                },
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
        drop(state);
        drop(map);
        *lock(&self.inner.broken_mounts) = broken_mounts;
        Ok(())
    }

    fn load_layer(
        &self,
        id: &ChainId,
        records: &HashMap<ChainId, LayerRecord>,
        state: &mut State,
        broken: &mut Vec<BrokenRecord>,
        loading: &mut Vec<ChainId>,
    ) -> Option<Layer> {
        if let Some(e) = state.layers.get(id) {
            return Some(e.layer.clone());
        }
        if broken.iter().any(|b| b.id == id.as_str()) {
            return None;
        }
        let Some(rec) = records.get(id) else {
            broken.push(BrokenRecord {
                id: id.to_string(),
                reason: "layer is missing".into(),
                parent: Reference::Absent,
            });
            return None;
        };
        if loading.contains(id) {
            broken.push(BrokenRecord {
                id: id.to_string(),
                reason: "parent chain loops".into(),
                parent: Reference::Absent,
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
                    broken.push(BrokenRecord {
                        id: id.to_string(),
                        reason: format!("parent layer {p} is missing or broken"),
                        parent: Reference::Named(p.clone()),
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
        // moby's sizes are int64; Docker only writes non-negative ones. A negative size a
        // hand-edited record may hold still loads, as in moby, and counts as 0 here.
        let size = u64::try_from(rec.size).unwrap_or_else(|_| {
            tracing::warn!(layer = %id, size = rec.size, "negative layer size, taken as 0");
            0
        });
        let layer = Layer(Arc::new(LayerInner {
            chain_id: rec.chain_id.clone(),
            diff_id: rec.diff_id.clone(),
            cache_id: rec.cache_id.clone(),
            size,
            parent,
            descriptor: rec.descriptor.clone(),
            backend: self.inner.backend.clone(),
        }));
        state.layers.insert(id.clone(), Entry::new(layer.clone()));
        Some(layer)
    }
}

/// Creates `dir` with Docker's 0700 if it is missing (whatever the umask); an existing one is
/// left as it is.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(IMAGE_DIR_MODE).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(IMAGE_DIR_MODE))
            .map_err(|e| Error::io(format!("chmod {}", dir.display()), e)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io(format!("create {}", dir.display()), e)),
    }
}
