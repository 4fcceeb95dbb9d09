//! The crate's errors: I/O failures are kept apart from bad input (a config, a reference or a
//! file that says something impossible), so callers can tell "try again" from "refuse".

use std::io;
use std::path::PathBuf;

use crate::reference::ReferenceError;

/// What went wrong. `Display` never repeats the source; walk [`std::error::Error::source`]
/// for the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed on `path`.
    #[error("{op} {}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An image config that docker would refuse (not JSON, no `rootfs`, bad `diff_ids`...).
    #[error("invalid image config {what}: {reason}")]
    BadConfig {
        /// Which config.
        what: String,
        /// Why.
        reason: String,
    },
    /// A stored config whose bytes do not hash to its name.
    #[error("image {id}: content does not match its ID (hashes to {actual})")]
    ContentMismatch {
        /// The image ID.
        id: String,
        /// The digest the content hashes to.
        actual: String,
    },
    /// A metadata file (`repositories.json`, a `parent`, a v2metadata file) that does not
    /// parse.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A reference that breaks docker's grammar.
    #[error("invalid reference {reference:?}")]
    BadReference {
        /// The reference as given.
        reference: String,
        /// The underlying error.
        #[source]
        source: ReferenceError,
    },
    /// A digest reference given as a tag, or a tag named like a digest algorithm.
    #[error("invalid tag {reference:?}: {reason}")]
    BadTag {
        /// The reference as given.
        reference: String,
        /// Why.
        reason: &'static str,
    },
    /// A reference that already points at another image, and may not be moved.
    #[error("conflict: {reference} is already set to image {existing}")]
    Conflict {
        /// The reference as given.
        reference: String,
        /// The image it points at now.
        existing: String,
    },
    /// No image by that ID.
    #[error("no such image: {0}")]
    NoSuchImage(String),
    /// The parent named is not in the store.
    #[error("unknown parent image {0}")]
    UnknownParent(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether this is an I/O failure (as opposed to bad input).
    pub fn is_io(&self) -> bool {
        matches!(self, Error::Io { .. })
    }

    /// Whether this is an I/O failure because something did not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
