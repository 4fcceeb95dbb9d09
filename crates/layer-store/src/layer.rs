//! Read-only layers: the shared [`Layer`] data and the counted [`LayerRef`] handles.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::ops::Deref;
use std::sync::Arc;

use graphdriver::Driver;
use layer_digest::{ChainId, DiffId};
use layer_meta::{Descriptor, MetaStore};

use crate::error::{Error, Result};
use crate::live::MountLedger;
use crate::tarstream;

/// What a store needs to read a layer back: shared by the store and every layer.
pub(crate) struct Backend {
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) meta: MetaStore,
    /// The driver directories this store has mounted (see [`crate::live`]).
    pub(crate) ledger: MountLedger,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("driver", &self.driver.name())
            .finish()
    }
}

pub(crate) struct LayerInner {
    pub(crate) chain_id: ChainId,
    pub(crate) diff_id: DiffId,
    pub(crate) cache_id: String,
    pub(crate) size: u64,
    pub(crate) parent: Option<Layer>,
    pub(crate) descriptor: Option<Descriptor>,
    pub(crate) backend: Arc<Backend>,
}

/// A read-only layer of the store: cheap to clone, not counted.
///
/// Values of this type come from [`crate::Store::map`] and [`Layer::parent`]; they let a caller
/// look and read but do not keep the layer alive (moby's raw `*roLayer`). A [`LayerRef`] is
/// the counted handle that [`crate::Store::release`] takes back.
#[derive(Clone)]
pub struct Layer(pub(crate) Arc<LayerInner>);

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer")
            .field("chain_id", &self.0.chain_id)
            .field("diff_id", &self.0.diff_id)
            .field("cache_id", &self.0.cache_id)
            .field("parent", &self.0.parent.as_ref().map(|p| p.chain_id()))
            .finish()
    }
}

impl PartialEq for Layer {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Layer {
    /// The chain ID: this layer together with its parents.
    pub fn chain_id(&self) -> &ChainId {
        &self.0.chain_id
    }

    /// The DiffID: the digest of this layer's own tar stream.
    pub fn diff_id(&self) -> &DiffId {
        &self.0.diff_id
    }

    /// The graph driver directory of this layer (moby's `CacheID`).
    pub fn cache_id(&self) -> &str {
        &self.0.cache_id
    }

    /// The parent layer, `None` for a base layer.
    pub fn parent(&self) -> Option<&Layer> {
        self.0.parent.as_ref()
    }

    /// The size of this layer's own content (as the driver reported it when applied).
    pub fn diff_size(&self) -> u64 {
        self.0.size
    }

    /// The size of the whole chain: this layer and all its parents.
    pub fn size(&self) -> u64 {
        let mut total = 0;
        let mut cur = Some(self);
        while let Some(l) = cur {
            total += l.0.size;
            cur = l.parent();
        }
        total
    }

    /// How many layers deep the chain is, this one included (a base layer is 1).
    pub fn depth(&self) -> usize {
        let mut depth = 0;
        let mut cur = Some(self);
        while let Some(l) = cur {
            depth += 1;
            cur = l.parent();
        }
        depth
    }

    /// The stored distribution descriptor, if one was registered with the layer.
    pub fn descriptor(&self) -> Option<&Descriptor> {
        self.0.descriptor.as_ref()
    }

    /// Driver-specific metadata (overlay2: `LowerDir`, `UpperDir`, `WorkDir`, `MergedDir`).
    pub fn metadata(&self) -> Result<BTreeMap<String, String>> {
        Ok(self.0.backend.driver.metadata(&self.0.cache_id)?)
    }

    /// The layer's exact original tar bytes, rebuilt from its tar-split metadata and files.
    ///
    /// The stream is hashed as it is read; at the end a digest other than the DiffID turns EOF
    /// into an [`Error::VerificationFailed`] (as an `io::Error` wrapping it).
    pub fn tar_stream(&self) -> Result<Box<dyn Read + Send>> {
        tarstream::verified_stream(self)
    }

    /// The changes of this layer against the ancestor `ancestor` (or against nothing), made by
    /// the driver's diff. Not byte-exact and not verified; used to squash layers.
    pub fn tar_stream_from(&self, ancestor: Option<&ChainId>) -> Result<Box<dyn Read + Send>> {
        let parent_cache = match ancestor {
            None => None,
            Some(want) => {
                let mut cur = self.parent();
                loop {
                    match cur {
                        Some(l) if l.chain_id() == want => break Some(l.cache_id().to_owned()),
                        Some(l) => cur = l.parent(),
                        None => return Err(Error::NotAParent(want.clone())),
                    }
                }
            }
        };
        Ok(self
            .0
            .backend
            .driver
            .diff(&self.0.cache_id, parent_cache.as_deref())?)
    }

    /// The record [`crate::Store::release`] returns for a deleted layer.
    pub fn metadata_record(&self) -> Metadata {
        Metadata {
            chain_id: self.chain_id().clone(),
            diff_id: self.diff_id().clone(),
            size: self.size(),
            diff_size: self.diff_size(),
        }
    }
}

/// A counted reference to a layer, handed out by [`crate::Store::register`] and
/// [`crate::Store::get`]; give it back with [`crate::Store::release`].
///
/// # Dropping it
///
/// Dropping a `LayerRef` does **not** release it: the reference stays counted, so the layer
/// (and every parent) stays on disk and in the store until the store is closed. That is
/// the safe side: a forgotten reference can keep a layer too long, never delete one in use.
/// After a reopen the count starts again from what is on disk (children, RW layers), so a
/// [`crate::Store::get`] and its [`crate::Store::release`] can then delete a layer nothing
/// else holds. A debug log records each reference dropped unreleased. Moby behaves the
/// same way.
///
/// Release it explicitly with [`crate::Store::release`], which also says which layers that
/// deleted.
#[must_use = "a LayerRef keeps its layer counted until released with Store::release"]
pub struct LayerRef {
    pub(crate) layer: Layer,
    pub(crate) ref_id: u64,
    pub(crate) store_id: u64,
    pub(crate) released: bool,
}

impl fmt::Debug for LayerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerRef")
            .field("chain_id", self.layer.chain_id())
            .field("ref", &self.ref_id)
            .finish()
    }
}

impl Deref for LayerRef {
    type Target = Layer;
    fn deref(&self) -> &Layer {
        &self.layer
    }
}

impl LayerRef {
    /// The uncounted layer behind this reference.
    pub fn layer(&self) -> &Layer {
        &self.layer
    }
}

impl Drop for LayerRef {
    fn drop(&mut self) {
        if !self.released {
            tracing::debug!(layer = %self.layer.chain_id(), "layer reference dropped without release");
        }
    }
}

/// What is reported for each layer a release deleted (moby's `layer.Metadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The deleted layer's chain ID.
    pub chain_id: ChainId,
    /// Its DiffID.
    pub diff_id: DiffId,
    /// Size of the whole chain it topped.
    pub size: u64,
    /// Its own size.
    pub diff_size: u64,
}

/// The empty layer (moby's `EmptyLayer`): a base layer whose tar is 1024 zero bytes. It is
/// never stored; image code uses it for empty ("throwaway") layers.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyLayer;

impl EmptyLayer {
    /// Both its chain ID and DiffID: sha256 of 1024 zero bytes.
    pub fn diff_id(&self) -> DiffId {
        layer_digest::EMPTY_LAYER_DIFF_ID.clone()
    }

    /// Same as [`EmptyLayer::diff_id`].
    pub fn chain_id(&self) -> ChainId {
        ChainId::new(self.diff_id().into_digest())
    }

    /// Always 0.
    pub fn size(&self) -> u64 {
        0
    }

    /// Always 0.
    pub fn diff_size(&self) -> u64 {
        0
    }

    /// An empty map.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// 1024 zero bytes: an empty tar archive.
    pub fn tar_stream(&self) -> impl Read + Send {
        std::io::repeat(0).take(1024)
    }

    /// The tar stream against nothing; any ancestor is an error, as the empty layer has none.
    pub fn tar_stream_from(&self, ancestor: Option<&ChainId>) -> Result<impl Read + Send> {
        match ancestor {
            None => Ok(self.tar_stream()),
            Some(_) => Err(Error::InvalidArgument(
                "can't get parent tar stream of an empty layer".into(),
            )),
        }
    }
}
