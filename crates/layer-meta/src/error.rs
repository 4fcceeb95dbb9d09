//! Typed errors: every one names the path (or ID) involved and what is wrong with it.

use std::fmt;
use std::io;
use std::path::PathBuf;

use layer_digest::{ChainId, DigestError};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the metadata store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{op} {path}")]
    Io {
        /// What we were doing ("create directory", "rename", ...).
        op: &'static str,
        /// The path it was done to (for a rename, the source).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A metadata file exists but its content is not acceptable.
    #[error("{path}: {problem}")]
    Corrupt {
        /// The file (or directory) at fault.
        path: PathBuf,
        /// What is wrong with it.
        problem: Corruption,
    },
    /// A commit found the target layer directory already present (Go's `os.Rename` EEXIST).
    #[error("layer {chain_id} already exists at {path} (rename refused: file exists)")]
    LayerExists {
        /// The chain ID the transaction was committed to.
        chain_id: ChainId,
        /// The directory that is in the way.
        path: PathBuf,
    },
    /// There is no directory for this layer.
    #[error("layer {chain_id} does not exist ({path})")]
    LayerNotFound {
        /// The chain ID asked for.
        chain_id: ChainId,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// There is no directory for this mount.
    #[error("mount {name:?} does not exist ({path})")]
    MountNotFound {
        /// The mount name asked for.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A value given to the API is not acceptable (it would not round-trip or is unsafe as a name).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        /// Which argument ("mount name", "cache id", ...).
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Only `sha256` chain IDs have a directory in layerdb (moby's `supportedAlgorithms`).
    #[error("layer {0}: only sha256 chain IDs can be stored in layerdb")]
    UnsupportedAlgorithm(ChainId),
    /// The tar-split writer was misused (written after a failure, opened twice, ...).
    #[error("tar-split writer for {path}: {reason}")]
    TarSplit {
        /// The `tar-split.json.gz` file.
        path: PathBuf,
        /// What went wrong.
        reason: &'static str,
    },
}

impl Error {
    /// The OS error number behind this error, if there is one.
    ///
    /// [`Error::LayerExists`] reports `EEXIST`, like Go's `os.Rename`, so callers can test for it
    /// the way moby's tests do with `errors.Is(err, syscall.EEXIST)`.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::LayerExists { .. } => Some(rustix::io::Errno::EXIST.raw_os_error()),
            _ => None,
        }
    }

    /// True when the error means "this layer directory already exists".
    pub fn is_layer_exists(&self) -> bool {
        matches!(self, Error::LayerExists { .. })
    }

    /// True when the layer or mount asked for is absent.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::LayerNotFound { .. } | Error::MountNotFound { .. }
        )
    }
}

/// What is wrong with a metadata file's content.
#[derive(Debug)]
#[non_exhaustive]
pub enum Corruption {
    /// A file every committed entry must have is missing.
    Missing,
    /// The file is empty (or only whitespace).
    Empty,
    /// The file is larger than any valid value could be.
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The file is not UTF-8 text.
    NotUtf8,
    /// The digest inside does not parse.
    InvalidDigest(DigestError),
    /// `size` is not an integer as Go's `strconv.ParseInt(s, 10, 64)` reads it (Docker never
    /// trims it, so neither do we).
    InvalidSize(String),
    /// `cache-id` is not usable as a graphdriver directory name.
    InvalidCacheId(String),
    /// `mount-id`/`init-id` is not 64 lowercase hex, optionally followed by `-init`.
    InvalidMountId(String),
    /// `descriptor.json` is not a valid descriptor.
    InvalidJson(serde_json::Error),
    /// Something other than a directory sits where a directory belongs.
    NotADirectory,
    /// A directory entry whose name this store never creates.
    UnexpectedName,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::Missing => f.write_str("required file is missing"),
            Corruption::Empty => f.write_str("file is empty"),
            Corruption::TooLarge { limit } => write!(f, "file is larger than {limit} bytes"),
            Corruption::NotUtf8 => f.write_str("file is not UTF-8 text"),
            Corruption::InvalidDigest(e) => write!(f, "{e}"),
            Corruption::InvalidSize(v) => {
                write!(f, "invalid size {v:?}: want a decimal int64 without spaces")
            }
            Corruption::InvalidCacheId(v) => write!(f, "invalid cache id {v:?}"),
            Corruption::InvalidMountId(v) => {
                write!(
                    f,
                    "invalid mount id {v:?}: want 64 lowercase hex, optionally with -init"
                )
            }
            Corruption::InvalidJson(e) => write!(f, "invalid descriptor JSON: {e}"),
            Corruption::NotADirectory => f.write_str("not a directory"),
            Corruption::UnexpectedName => f.write_str("unexpected entry name"),
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
