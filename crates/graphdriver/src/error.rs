//! Errors of the graph drivers.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a driver or the archive code can fail with. Each variant names the layer, path
/// and cause it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a path.
    #[error("{op} {path}")]
    Io {
        /// What we were doing (`"mkdir"`, `"open"`, `"mount"`…).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The layer does not exist in this driver.
    #[error("layer {0} does not exist in the driver")]
    NotFound(String),
    /// The driver cannot run here (missing kernel feature, wrong backing filesystem).
    #[error("driver not supported: {0}")]
    NotSupported(String),
    /// An option could not be parsed or is not known to the driver.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A chain is deeper than the driver allows.
    #[error("max depth exceeded: {0}")]
    MaxDepthExceeded(String),
    /// Applying a layer tar failed: bad input or I/O, as [`layer_archive::Error`] tells.
    #[error(transparent)]
    Archive(#[from] layer_archive::Error),
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
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

/// `e` and its causes on one line, joined with `": "`, for messages and logs that keep an
/// error as text. (`Display` of our errors leaves the cause to `source()`.)
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
