//! The tar header codec: the one place in the workspace that reads and writes tar headers.
//!
//! Reading follows Go's `archive/tar` (Go 1.19, what Docker 20.10 extracts with, and what
//! tar-split is a fork of) rule for rule, so that every reader of a layer sees the entries
//! Docker sees:
//!
//! * numeric fields: spaces and NULs trimmed at both ends, then cut at the first NUL, then
//!   octal; base-256 when the high bit is set; an invalid digit is an invalid header
//!   ([`field`]);
//! * the checksum, signed or unsigned, parsed the same way; the format guessed from the
//!   magic and version (`ustar ` + `00` is V7: no owner names, no devices, no prefix);
//! * the USTAR prefix joined for USTAR/PAX (and star) only; in GNU headers the atime/ctime
//!   area, unless it does not parse and reads as ASCII (a pre-Go-1.8 writer's prefix);
//! * PAX records ([`pax`]): the last duplicate wins, an empty value keeps the header's
//!   field; `path`, `linkpath`, `size`, `uid`, `gid`, `uname`, `gname`, `mtime`, `atime`,
//!   `ctime` and `SCHILY.xattr.*` override, then GNU long names and links (`L`, `K`) win over
//!   PAX `path`/`linkpath`; a later extension header of one kind replaces an earlier one;
//! * the legacy NUL type flag is a directory when the final name ends in `/`;
//! * GNU sparse files: old GNU (`S`, with extension blocks), PAX 0.0, 0.1 (`GNU.sparse.size`
//!   wins over `realsize`) and 1.0 (the map at the start of the payload); `GNU.sparse.name`
//!   only on a sparse entry ([`sparse`]);
//! * the end: two zero blocks, or the end of the input between entries, after one zero
//!   block, or inside the padding after a payload.
//!
//! The parser is [`Decoder`], push-style and without I/O: [`TarReader`] (pull, for the
//! applier) and tarsplit's disassembler (push, byte-exact) both drive it, so they cannot
//! disagree. [`TarWriter`] writes [`Header`]s ([`HeaderStyle::Minimal`] for our own
//! archives, [`HeaderStyle::Docker`] for overlay2's Docker-identical diffs). [`name`]
//! cleans entry names as moby does. [`EntryDigest`] folds an entry sequence into one
//! value, for two readers of one stream to compare.
//!
//! # Deliberate refusals beyond Go's
//!
//! All of them are [`Limits`], so memory stays bounded whatever the input:
//!
//! * more than [`Limits::max_extension_headers`] (8) chained `x`/`L`/`K`/`g` headers before
//!   one entry: Go takes any number, buffering them all (20 000 long names in a row are
//!   90 MB);
//! * names and link targets over [`Limits::max_path_bytes`] (4096, Linux `PATH_MAX`):
//!   nothing longer can be created anyway;
//! * more than [`Limits::max_xattrs`] xattrs on one entry, a value over
//!   [`Limits::max_xattr_value_bytes`] (Linux `XATTR_SIZE_MAX`) or more than
//!   [`Limits::max_xattr_total_bytes`] in all;
//! * more than [`Limits::max_sparse_regions`] sparse regions, or a PAX 1.0 map over
//!   [`Limits::max_special_file_bytes`] (Go 1.19 has neither cap: CVE-2025-58183).
//!
//! Go's own cap, 1 MiB for a PAX header or a GNU long name or link, is
//! [`Limits::max_special_file_bytes`].
//!
//! A PAX global header whose records do not parse as numbers (a bad `uid`, say) is named
//! by its `path` record here; Go's result depends on map iteration order.

pub mod decode;
mod digest;
mod error;
pub mod field;
pub mod header;
pub mod name;
pub mod pax;
pub mod reader;
pub mod sparse;
pub mod writer;

pub use decode::{Decoder, Step};
pub use digest::{EntryDigest, EntrySequence};
pub use error::TarError;
pub use header::{EntryKind, Header, SparseRegion, Time};
pub use name::CleanName;
pub use pax::PaxRecords;
pub use reader::TarReader;
pub use writer::{HeaderStyle, TarWriter};

/// Caps on what one header may make a reader allocate, and the deliberate refusals they
/// imply (listed in the module doc). The defaults are generous for real layers and small
/// enough that hostile input cannot exhaust memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest PAX header (local or global) or GNU long name/link body; also the largest
    /// PAX 1.0 sparse map. Go's cap: 1 MiB.
    pub max_special_file_bytes: u64,
    /// Most extension headers (`x`, `g`, `L`, `K`) before one entry.
    pub max_extension_headers: usize,
    /// Longest entry name or link target, in bytes (Linux `PATH_MAX`).
    pub max_path_bytes: usize,
    /// Most xattrs on one entry.
    pub max_xattrs: usize,
    /// Largest xattr value (Linux `XATTR_SIZE_MAX`).
    pub max_xattr_value_bytes: usize,
    /// Largest total of one entry's xattr names and values.
    pub max_xattr_total_bytes: usize,
    /// Most data regions of one sparse file (CVE-2025-58183's shape).
    pub max_sparse_regions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_special_file_bytes: 1 << 20,
            max_extension_headers: 8,
            max_path_bytes: 4096,
            max_xattrs: 128,
            max_xattr_value_bytes: 64 * 1024,
            max_xattr_total_bytes: 256 * 1024,
            max_sparse_regions: 1 << 16,
        }
    }
}
