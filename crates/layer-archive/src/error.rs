//! Errors of applying a layer tar.
//!
//! Two kinds, never mixed: **bad input** ([`Error::BadEntry`], [`Error::BadTar`]: the tar is
//! malformed, hostile or cannot be applied as it stands) and **I/O** ([`Error::Io`],
//! [`Error::Read`]: the machine failed: no space, an I/O error, a read-only filesystem, no
//! memory or descriptors left, or the stream the tar came from broke). A full disk is never
//! reported as a hostile tar. [`Error::is_bad_input`] tells them apart.
//!
//! `Display` names the layer, the file and what was being done, and never repeats the cause:
//! an I/O variant's OS error is its [`std::error::Error::source`], for the caller to print
//! after it (`layerctl` joins the chain with `": "`).

use std::io;
use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What applying a layer can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem call failed for a reason of the machine, not of the tar (see
    /// [`crate::apply::is_machine_error`]), or the layer root could not be opened.
    #[error("{}{op} {}", layer_prefix(layer), path.display())]
    Io {
        /// The layer being applied (empty when not named).
        layer: String,
        /// What we were doing (`"write"`, `"mkdir"`, `"open layer root"`…).
        op: &'static str,
        /// The path concerned, for messages: the layer root joined with the entry's name.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading the layer tar itself failed: its stream, not its content.
    #[error("{}reading the layer tar", layer_prefix(layer))]
    Read {
        /// The layer being applied (empty when not named).
        layer: String,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// A tar entry was refused (hostile or malformed input, or it cannot be applied over what
    /// the tree holds). `entry` is the name from the tar.
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

fn layer_prefix(layer: &str) -> String {
    if layer.is_empty() {
        String::new()
    } else {
        format!("layer {layer}: ")
    }
}

impl Error {
    /// Builds an [`Error::Io`] that names no layer.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            layer: String::new(),
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether the tar is to blame ([`Error::BadEntry`], [`Error::BadTar`]), not the machine.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::BadEntry { .. } | Error::BadTar { .. })
    }
}
