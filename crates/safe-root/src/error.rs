//! The error of [`crate::SafeRoot`]'s lookups: what was done, where, and the OS error.
//!
//! The fd helpers return plain [`std::io::Error`]s, as `rustix` and `std` do: they know a
//! directory fd and one name, not a path worth printing. `SafeRoot` knows its root's path and
//! the name inside it, and says both.

use std::io;
use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed [`crate::SafeRoot`] operation. `Display` names the operation and the path (the
/// root's path joined with the name inside it, for messages only); the OS error is the
/// `source()`, not repeated in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An OS error.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done (`"open root"`, `"open directory"`, `"create directory"`…).
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The OS error behind this one (for its errno or kind).
    pub fn io_error(&self) -> &io::Error {
        match self {
            Error::Io { source, .. } => source,
        }
    }

    /// The OS error behind this one, without the operation and path.
    pub fn into_io_error(self) -> io::Error {
        match self {
            Error::Io { source, .. } => source,
        }
    }
}
