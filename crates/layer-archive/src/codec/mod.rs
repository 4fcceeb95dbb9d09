//! The tar header codec: reading ([`reader`]), writing ([`writer`]) and cleaning entry names
//! ([`name`]). Portable: no filesystem access, no Linux-only dependency, built with or
//! without the `fs` feature.

pub mod name;
pub mod reader;
pub mod writer;

pub use name::CleanName;
pub use reader::{EntryHeader, EntryKind, SparseRegion, TarError, TarReader, Time};
pub use writer::{TarHeader, TarWriter};

/// Caps on what a single tar header may make us allocate. The defaults are generous for real
/// layers and small enough that hostile input cannot exhaust memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of one PAX (local or global) extension header (Go uses 1 MiB).
    pub max_pax_bytes: u64,
    /// Maximum length of an entry name or link target, in bytes (Linux `PATH_MAX`).
    pub max_path_bytes: usize,
    /// Maximum number of xattrs on one entry.
    pub max_xattrs: usize,
    /// Maximum size of one xattr value (Linux `XATTR_SIZE_MAX`).
    pub max_xattr_value_bytes: usize,
    /// Maximum total size of names and values of one entry's xattrs.
    pub max_xattr_total_bytes: usize,
    /// Maximum number of data regions of one sparse file (CVE-2025-58183 shape).
    pub max_sparse_regions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pax_bytes: 1 << 20,
            max_path_bytes: 4096,
            max_xattrs: 128,
            max_xattr_value_bytes: 64 * 1024,
            max_xattr_total_bytes: 256 * 1024,
            max_sparse_regions: 1 << 16,
        }
    }
}
