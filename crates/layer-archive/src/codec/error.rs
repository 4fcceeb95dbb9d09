//! [`TarError`]: why a tar stream could not be read.

use std::io;

/// Why a tar stream could not be read. Bad input ([`TarError::Header`],
/// [`TarError::FieldTooLong`], [`TarError::Truncated`], [`TarError::Sparse`]), our own caps
/// ([`TarError::Limit`]) and I/O ([`TarError::Io`]) are separate, so a failing disk is never
/// reported as a hostile tar.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// Reading the underlying stream failed.
    #[error("reading the tar stream")]
    Io(#[source] io::Error),
    /// The stream ended inside a header, an extension body, a sparse map or a payload.
    #[error("unexpected EOF: the archive ends inside {0}")]
    Truncated(&'static str),
    /// A header is not valid tar (Go's `ErrHeader`).
    #[error("archive/tar: invalid tar header: {0}")]
    Header(&'static str),
    /// An extension header's body is over Go's cap (`ErrFieldTooLong`).
    #[error(
        "archive/tar: header field too long: {what} of {size} bytes exceeds the {limit}-byte limit"
    )]
    FieldTooLong {
        /// Which extension (`PAX header`, `GNU long name`…).
        what: &'static str,
        /// Its size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// One of our [`super::Limits`], beyond what Go refuses.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// A sparse file's stored data does not fill its map exactly (Go's `errMissData`,
    /// `errUnrefData`).
    #[error("archive/tar: sparse file {0}")]
    Sparse(&'static str),
}

impl TarError {
    pub(crate) fn header(reason: &'static str) -> Self {
        TarError::Header(reason)
    }

    pub(crate) fn limit(what: impl Into<String>) -> Self {
        TarError::Limit(what.into())
    }

    /// Whether the input is at fault (anything but [`TarError::Io`]).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, TarError::Io(_))
    }
}

impl From<io::Error> for TarError {
    fn from(e: io::Error) -> Self {
        TarError::Io(e)
    }
}
