//! Errors of applying a layer tar.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What applying a layer can fail with. Bad input ([`Error::BadEntry`], [`Error::BadTar`])
/// and I/O ([`Error::Io`]) are separate variants, so that a full disk is never reported as
/// a hostile tar.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing (`"mkdir"`, `"open"`, `"write"`…).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A tar entry was refused (hostile or malformed input). `entry` is the name from the tar.
    #[error("layer {layer}: tar entry {entry:?}: {reason}")]
    BadEntry {
        /// The layer being applied.
        layer: String,
        /// The entry name as in the archive (lossy UTF-8).
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// The tar stream itself is malformed or truncated.
    #[error("layer {layer}: malformed tar: {reason}")]
    BadTar {
        /// The layer being applied.
        layer: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
