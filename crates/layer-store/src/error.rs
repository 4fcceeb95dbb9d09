//! Errors of the layer store.

use layer_digest::{ChainId, DiffId};

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the store can fail with. Messages match moby's where moby has one, so logs read
/// the same; each names the layer or mount concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No layer with that chain ID (moby's `ErrLayerDoesNotExist`).
    #[error("layer does not exist: {0}")]
    LayerDoesNotExist(ChainId),
    /// The reference was not handed out by this store, or was already released
    /// (moby's `ErrLayerNotRetained`).
    #[error("layer not retained: {0}")]
    LayerNotRetained(String),
    /// No RW layer with that name (moby's `ErrMountDoesNotExist`).
    #[error("mount does not exist: {0}")]
    MountDoesNotExist(String),
    /// An RW layer with that name exists (moby's `ErrMountNameConflict`).
    #[error("mount already exists with name: {0}")]
    MountNameConflict(String),
    /// The chain would be deeper than the store allows (moby's `ErrMaxDepthExceeded`).
    #[error("max depth exceeded: parent {parent} is already {depth} layers deep (max {max})")]
    MaxDepthExceeded {
        /// The parent the new layer was to sit on.
        parent: ChainId,
        /// The parent's depth.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// A layer is still used and cannot be removed.
    #[error("layer {layer} is in use: {why}")]
    InUse {
        /// The layer.
        layer: ChainId,
        /// What uses it.
        why: String,
    },
    /// A layer's reassembled tar did not hash to its DiffID (moby's text, plus the digests).
    #[error(
        "could not verify layer data for: {chain_id}. This may be because internal files in the layer store were modified. Re-pulling or rebuilding this image may resolve the issue (expected {expected}, got {actual})"
    )]
    VerificationFailed {
        /// The layer.
        chain_id: ChainId,
        /// Its DiffID.
        expected: DiffId,
        /// What the stream hashed to.
        actual: DiffId,
    },
    /// `tar_stream_from` was given a layer that is not an ancestor.
    #[error(
        "layer ID '{0}' is not a parent of the specified layer: cannot provide diff to non-parent"
    )]
    NotAParent(ChainId),
    /// Registering failed while reading, splitting or applying the tar.
    #[error("failed to register layer{}", parent_suffix(.parent))]
    Register {
        /// The parent it was to sit on.
        parent: Option<ChainId>,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// A layer of a [`crate::Store::register_chain`] failed; nothing of the chain was kept.
    #[error("failed to register layer {index} of a chain of {count}")]
    RegisterChain {
        /// The failing layer's position in the chain (0 is the one on the given parent).
        index: usize,
        /// The chain's length.
        count: usize,
        /// Why.
        source: Box<Error>,
    },
    /// While [`crate::Store::register_chain`] ran, other registers kept making layers of the
    /// same chain appear, and rebuilding on them did not settle after a few rounds; nothing of
    /// the call was kept.
    #[error(
        "layer {layer} kept being registered concurrently while its chain was being registered; nothing was kept, retry"
    )]
    ChainRaced {
        /// The layer that appeared last.
        layer: ChainId,
    },
    /// The data-root is locked by another process.
    #[error("data-root {path} is in use by another process (lock file {lock})")]
    Locked {
        /// The data-root.
        path: std::path::PathBuf,
        /// The lock file.
        lock: std::path::PathBuf,
    },
    /// This process already has a store open on the data-root (a second one would wait for
    /// the first one's lock forever).
    #[error("data-root {path} is already open in this process")]
    AlreadyOpen {
        /// The data-root.
        path: std::path::PathBuf,
    },
    /// The data-root holds the layers of a Docker storage driver this store does not run.
    #[error(
        "data-root {path} is used by Docker's {driver} storage driver, which this store cannot \
         run (it runs {supported}); its layers would be invisible here, so nothing was created: \
         use another data-root"
    )]
    ForeignDriver {
        /// The data-root.
        path: std::path::PathBuf,
        /// The driver whose state is there.
        driver: String,
        /// The drivers this store runs.
        supported: String,
    },
    /// The stored metadata.
    #[error(transparent)]
    Meta(#[from] layer_meta::Error),
    /// The graph driver.
    #[error(transparent)]
    Driver(#[from] graphdriver::Error),
    /// The driver's applier and the tar-split disassembler read different entry sequences
    /// from one layer tar (defence in depth: one codec should make this impossible).
    #[error(
        "layer {layer}: the applier and tar-split read different entries ({applier} vs {tarsplit}); refused"
    )]
    EntryMismatch {
        /// The layer (the cache ID while registering).
        layer: String,
        /// What the driver's applier read.
        applier: layer_archive::EntrySequence,
        /// What the disassembler read.
        tarsplit: layer_archive::EntrySequence,
    },
    /// tar-split disassembly or reassembly.
    #[error("layer {layer}: tar-split")]
    TarSplit {
        /// The layer (chain ID, or the cache ID while registering).
        layer: String,
        /// The cause.
        #[source]
        source: tarsplit::Error,
    },
    /// An I/O error with context.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Invalid options or arguments.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The init function of an RW layer failed.
    #[error("init function for mount {name} failed")]
    InitFunc {
        /// The RW layer's name.
        name: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn parent_suffix(parent: &Option<ChainId>) -> String {
    match parent {
        Some(p) => format!(" on parent {p}"),
        None => String::new(),
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether this is (or wraps) [`Error::LayerDoesNotExist`].
    pub fn is_layer_does_not_exist(&self) -> bool {
        match self {
            Error::LayerDoesNotExist(_) => true,
            Error::Register { source, .. } | Error::RegisterChain { source, .. } => {
                source.is_layer_does_not_exist()
            }
            _ => false,
        }
    }
}

/// `e` and its causes on one line, joined with `": "`, for reports that keep an error as
/// text. (`Display` of our errors leaves the cause to `source()`.)
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
