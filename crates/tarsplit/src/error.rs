//! The crate's one error type.
//!
//! Display texts embed Go tar-split's own wording (`archive/tar: invalid tar header`,
//! `duplicates of file paths not supported`, `file integrity checksum failed for "…"`,
//! `unexpected EOF`, `archive/tar: header field too long`) so that logs and tests written
//! against the Go tool keep matching, and add where and why it happened.

use std::fmt;
use std::io;

/// A tar entry name for messages: raw bytes shown as a quoted, escaped string.
#[derive(Clone, PartialEq, Eq)]
pub struct EntryName(pub Vec<u8>);

impl fmt::Debug for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.escape_ascii().to_string())
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<&[u8]> for EntryName {
    fn from(b: &[u8]) -> Self {
        EntryName(b.to_vec())
    }
}

/// Everything that can go wrong while disassembling, packing, unpacking or reassembling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A header block failed the checksum, format or numeric-field checks (Go `ErrHeader`).
    #[error("archive/tar: invalid tar header at byte {offset}: {reason}")]
    InvalidHeader {
        /// Byte offset in the archive.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },

    /// A PAX or GNU long-name/link body is over the per-body cap (Go `ErrFieldTooLong`).
    #[error(
        "archive/tar: header field too long at byte {offset}: {size} bytes exceed the {limit}-byte limit"
    )]
    FieldTooLong {
        /// Byte offset in the archive.
        offset: u64,
        /// Its size in bytes.
        size: u64,
        /// The cap, in bytes.
        limit: u64,
    },

    /// A sparse file's stored data does not fill its map (Go's `errMissData`,
    /// `errUnrefData`).
    #[error("archive/tar: sparse file {name} at byte {offset} {reason}")]
    SparseData {
        /// Byte offset in the archive.
        offset: u64,
        /// The entry's name.
        name: EntryName,
        /// What is wrong.
        reason: &'static str,
    },

    /// A header exceeds one of the codec's limits (beyond what Go refuses).
    #[error("limit exceeded at byte {offset}: {what}")]
    Limit {
        /// Byte offset in the archive.
        offset: u64,
        /// What was being read (or which limit).
        what: String,
    },

    /// The raw bytes of one header group (padding + extension headers + header) exceed the cap.
    #[error(
        "tar header group starting at byte {offset} exceeds {limit} bytes (chained PAX/GNU extension headers?)"
    )]
    HeaderGroupTooLarge {
        /// Byte offset in the archive.
        offset: u64,
        /// The cap, in bytes.
        limit: u64,
    },

    /// The input ended in the middle of a header, extension body, file body or padding.
    #[error("unexpected EOF at byte {offset}: truncated inside {what}{}", name.as_ref().map(|n| format!(" of {n}")).unwrap_or_default())]
    UnexpectedEof {
        /// Byte offset in the archive.
        offset: u64,
        /// What was being read (or which limit).
        what: &'static str,
        /// The entry's name.
        name: Option<EntryName>,
    },

    /// Two file entries clean to the same path (Go `ErrDuplicatePath`).
    #[error("duplicates of file paths not supported: {name}")]
    DuplicatePath {
        /// The entry's name.
        name: EntryName,
    },

    /// A reassembled file's CRC-64 differs from the recorded one.
    #[error("file integrity checksum failed for {name}")]
    ChecksumMismatch {
        /// The entry's name.
        name: EntryName,
    },

    /// A reassembled file's length differs from the recorded size.
    #[error("file size mismatch for {name}: metadata says {expected} bytes, file has {actual}{}", if *more { " or more" } else { "" })]
    SizeMismatch {
        /// The entry's name.
        name: EntryName,
        /// The recorded size.
        expected: i64,
        /// The bytes found.
        actual: u64,
        /// The file has at least `actual` bytes (reading stopped there).
        more: bool,
    },

    /// The metadata stream is not valid tar-split JSON.
    #[error("tar-split metadata entry {index}: {message}")]
    Metadata {
        /// Index of the metadata entry (0-based).
        index: u64,
        /// What is wrong with it.
        message: String,
    },

    /// An entry type other than 1 (file) or 2 (segment).
    #[error("tar-split metadata entry {index}: unknown entry type {kind}")]
    UnknownEntryType {
        /// Index of the metadata entry (0-based).
        index: u64,
        /// The type found.
        kind: i64,
    },

    /// A file name that cannot be looked up safely (NUL byte, empty).
    #[error("invalid file name {name}: {reason}")]
    InvalidName {
        /// The entry's name.
        name: EntryName,
        /// What is wrong.
        reason: &'static str,
    },

    /// Fetching a file body for reassembly failed.
    #[error("getting file {name}")]
    Get {
        /// The entry's name.
        name: EntryName,
        /// The underlying error.
        source: io::Error,
    },

    /// Storing a file body during disassembly failed.
    #[error("storing file {name}")]
    Put {
        /// The entry's name.
        name: EntryName,
        /// The underlying error.
        source: io::Error,
    },

    /// Reading the input or writing the output failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }

    /// Wraps the error for an `io::Read`/`io::Write` implementation; [`Error::from_io`]
    /// recovers it.
    pub fn into_io(self) -> io::Error {
        match self {
            Error::Io { source, .. } if source.get_ref().is_none() => source,
            other => io::Error::other(other),
        }
    }

    /// Recovers an [`Error`] that travelled through an `io::Error`, or wraps a plain one.
    pub fn from_io(err: io::Error, context: &'static str) -> Error {
        if err.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            match err.into_inner().map(|b| b.downcast::<Error>()) {
                Some(Ok(inner)) => *inner,
                _ => unreachable!("checked with is::<Error>()"),
            }
        } else {
            Error::Io {
                context,
                source: err,
            }
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
