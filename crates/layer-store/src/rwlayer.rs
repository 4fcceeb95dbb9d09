//! Read-write layers: a container's writable layer (and its init layer) on an image layer.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Read;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use graphdriver::Change;

use crate::error::{Error, Result};
use crate::layer::{Backend, Layer};

/// A function that prepares an RW layer before first use (moby's `MountInit`): it runs on the
/// mounted init layer, so what it writes (`/etc/hosts`, `/dev/console`…) is not part of the
/// RW layer's own diff.
pub type InitFn = dyn Fn(&std::path::Path) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>
    + Send
    + Sync;

/// Options for [`crate::Store::create_rw_layer`].
#[derive(Default)]
pub struct CreateRwOptions<'a> {
    /// SELinux label used when mounting the init layer.
    pub mount_label: String,
    /// When set, an init layer `<mount-id>-init` is created, mounted and handed to it.
    pub init: Option<&'a InitFn>,
    /// Driver storage options (`size=…`).
    pub storage_opt: BTreeMap<String, String>,
}

impl fmt::Debug for CreateRwOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateRwOptions")
            .field("mount_label", &self.mount_label)
            .field("init", &self.init.is_some())
            .field("storage_opt", &self.storage_opt)
            .finish()
    }
}

pub(crate) struct MountInner {
    pub(crate) name: String,
    pub(crate) mount_id: String,
    pub(crate) init_id: Option<String>,
    pub(crate) parent: Option<Layer>,
    /// Live references handed out by create/get (guarded here, as moby's per-mount mutex).
    pub(crate) refs: Mutex<HashSet<u64>>,
    pub(crate) backend: Arc<Backend>,
}

/// A read-write layer: cheap to clone, not counted. [`RwLayerRef`] is the counted handle.
#[derive(Clone)]
pub struct RwLayer(pub(crate) Arc<MountInner>);

impl fmt::Debug for RwLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLayer")
            .field("name", &self.0.name)
            .field("mount_id", &self.0.mount_id)
            .field("init_id", &self.0.init_id)
            .field("parent", &self.0.parent.as_ref().map(|p| p.chain_id()))
            .finish()
    }
}

impl RwLayer {
    /// The name it was created with (a container ID, usually).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The driver directory of the writable layer.
    pub fn mount_id(&self) -> &str {
        &self.0.mount_id
    }

    /// The driver directory of the init layer, if there is one.
    pub fn init_id(&self) -> Option<&str> {
        self.0.init_id.as_deref()
    }

    /// The image layer below, if any.
    pub fn parent(&self) -> Option<&Layer> {
        self.0.parent.as_ref()
    }

    /// What the RW layer's diff is computed against: the init layer, else the parent.
    fn cache_parent(&self) -> Option<&str> {
        self.0
            .init_id
            .as_deref()
            .or_else(|| self.0.parent.as_ref().map(|p| p.cache_id()))
    }

    /// Mounts the layer and returns the path of its root. Each call needs one
    /// [`RwLayer::unmount`].
    pub fn mount(&self, mount_label: &str) -> Result<PathBuf> {
        let _span =
            tracing::info_span!("mount", name = %self.0.name, id = %self.0.mount_id).entered();
        let backend = &self.0.backend;
        backend
            .ledger
            .add(&self.0.mount_id)
            .map_err(|e| Error::io(format!("record the mount of RW layer {}", self.0.name), e))?;
        backend
            .driver
            .get(&self.0.mount_id, mount_label)
            .map_err(Error::from)
    }

    /// Whether the layer is mounted through this store: by [`RwLayer::mount`] in this
    /// process or in an earlier one (the root's mount ledger records each mount until its
    /// unmount), on any driver.
    pub fn is_mounted(&self) -> bool {
        self.0.backend.ledger.contains(&self.0.mount_id)
    }

    /// Releases one mount.
    pub fn unmount(&self) -> Result<()> {
        self.0.backend.driver.put(&self.0.mount_id)?;
        self.0.backend.ledger.remove(&self.0.mount_id);
        Ok(())
    }

    /// The size of what was written into the layer (the init layer's files excluded).
    pub fn size(&self) -> Result<u64> {
        Ok(self
            .0
            .backend
            .driver
            .diff_size(&self.0.mount_id, self.cache_parent())?)
    }

    /// The changes against the image (the init layer's excluded), sorted by path.
    pub fn changes(&self) -> Result<Vec<Change>> {
        Ok(self
            .0
            .backend
            .driver
            .changes(&self.0.mount_id, self.cache_parent())?)
    }

    /// The layer's changes as a tar with whiteouts (not byte-stable, not verified).
    pub fn tar_stream(&self) -> Result<Box<dyn Read + Send>> {
        Ok(self
            .0
            .backend
            .driver
            .diff(&self.0.mount_id, self.cache_parent())?)
    }

    /// Applies a layer tar onto the RW layer; returns the applied size.
    pub fn apply_diff(&self, diff: &mut dyn Read) -> Result<u64> {
        let _span =
            tracing::info_span!("apply", name = %self.0.name, id = %self.0.mount_id).entered();
        Ok(self
            .0
            .backend
            .driver
            .apply_diff(&self.0.mount_id, self.cache_parent(), diff)?)
    }

    /// Driver metadata, with `ID` set to the name when the driver gives none (as moby).
    pub fn metadata(&self) -> Result<BTreeMap<String, String>> {
        let mut m = self.0.backend.driver.metadata(&self.0.mount_id)?;
        m.entry("ID".into()).or_insert_with(|| self.0.name.clone());
        Ok(m)
    }
}

/// A counted reference to an RW layer; give it back with [`crate::Store::release_rw_layer`].
pub struct RwLayerRef {
    pub(crate) layer: RwLayer,
    pub(crate) ref_id: u64,
    pub(crate) store_id: u64,
}

impl fmt::Debug for RwLayerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLayerRef")
            .field("name", &self.layer.name())
            .field("ref", &self.ref_id)
            .finish()
    }
}

impl Deref for RwLayerRef {
    type Target = RwLayer;
    fn deref(&self) -> &RwLayer {
        &self.layer
    }
}
