//! [`Header`]: one tar entry as Go's `archive/tar` reports it, and what our writers take.

use super::pax::PaxRecords;

/// What an entry is: the type flag as Go reports it (after the legacy NUL flag became
/// [`EntryKind::Regular`] or, with a trailing slash, [`EntryKind::Directory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file (`0`, or the legacy NUL flag).
    Regular,
    /// A hard link to the header's link name (`1`).
    HardLink,
    /// A symbolic link (`2`).
    Symlink,
    /// A character device (`3`).
    CharDevice,
    /// A block device (`4`).
    BlockDevice,
    /// A directory (`5`, or the legacy NUL flag on a name ending in `/`).
    Directory,
    /// A FIFO (`6`).
    Fifo,
    /// A contiguous file (`7`): Go reports it as such; Docker's extraction refuses it.
    Contiguous,
    /// A PAX global header (`g`): an entry of its own for Go; extraction ignores it.
    GlobalExtension,
    /// An old GNU sparse file (`S`): Go keeps the flag; Docker's extraction refuses it.
    GnuSparse,
    /// Any other type flag (GNU `D`, `M`, `V`, vendor letters…), with its payload.
    Other(u8),
}

impl EntryKind {
    /// The kind Go reports for type flag `flag` on an entry named `name`.
    pub fn from_type_flag(flag: u8, name: &[u8]) -> Self {
        match flag {
            b'0' => EntryKind::Regular,
            // Legacy archives mark directories only with a trailing slash.
            0 if name.ends_with(b"/") => EntryKind::Directory,
            0 => EntryKind::Regular,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            b'7' => EntryKind::Contiguous,
            b'g' => EntryKind::GlobalExtension,
            b'S' => EntryKind::GnuSparse,
            other => EntryKind::Other(other),
        }
    }

    /// The type flag written for this kind.
    pub fn type_flag(self) -> u8 {
        match self {
            EntryKind::Regular => b'0',
            EntryKind::HardLink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::CharDevice => b'3',
            EntryKind::BlockDevice => b'4',
            EntryKind::Directory => b'5',
            EntryKind::Fifo => b'6',
            EntryKind::Contiguous => b'7',
            EntryKind::GlobalExtension => b'g',
            EntryKind::GnuSparse => b'S',
            EntryKind::Other(b) => b,
        }
    }

    /// Whether the header alone is the entry: links, devices, directories and FIFOs never
    /// carry a payload, whatever their size field says (Go `isHeaderOnlyType`).
    pub fn is_header_only(self) -> bool {
        matches!(
            self,
            EntryKind::HardLink
                | EntryKind::Symlink
                | EntryKind::CharDevice
                | EntryKind::BlockDevice
                | EntryKind::Directory
                | EntryKind::Fifo
        )
    }

    /// Whether a payload of the header's size follows.
    pub fn has_payload(self) -> bool {
        !self.is_header_only()
    }
}

/// A time as seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Time {
    /// Whole seconds (negative before 1970).
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: u32,
}

impl Time {
    /// Normalises `sec` + `nsec` as Go's `time.Unix` does (`nsec` may be out of range or
    /// negative; arithmetic wraps as Go's does).
    pub fn from_unix(sec: i64, nsec: i64) -> Time {
        let (mut sec, mut nsec) = (sec, nsec);
        if !(0..1_000_000_000).contains(&nsec) {
            let n = nsec / 1_000_000_000;
            sec = sec.wrapping_add(n);
            nsec -= n * 1_000_000_000;
            if nsec < 0 {
                nsec += 1_000_000_000;
                sec = sec.wrapping_sub(1);
            }
        }
        Time {
            sec,
            nsec: nsec as u32,
        }
    }

    /// Whole seconds only.
    pub fn from_secs(sec: i64) -> Time {
        Time { sec, nsec: 0 }
    }
}

/// One data region of a sparse file: `length` bytes of the payload go at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SparseRegion {
    /// Offset in the file.
    pub offset: i64,
    /// Number of payload bytes stored for it.
    pub length: i64,
}

/// Extended attributes: `(name, value)` pairs, each name once.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// One tar entry, as Go's `archive/tar` reads it (GNU long names and links, PAX records
/// and sparse headers applied), and what [`super::TarWriter`] writes.
///
/// Numbers are Go's: signed 64-bit, as a header can hold them (base-256 fields can be
/// negative). Consumers decide what they accept (the applier refuses negative ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name, raw bytes, not cleaned.
    pub name: Vec<u8>,
    /// The link target of hard links and symlinks, raw bytes.
    pub link_name: Vec<u8>,
    /// What the entry is.
    pub kind: EntryKind,
    /// The mode field: permission bits, setuid/setgid/sticky (`0o7777`) and whatever else
    /// the writer put there (Go writes the file-type bits too).
    pub mode: i64,
    /// Owner id.
    pub uid: i64,
    /// Group id.
    pub gid: i64,
    /// Owner name.
    pub uname: Vec<u8>,
    /// Group name.
    pub gname: Vec<u8>,
    /// The size Go reports: the logical size (for a sparse file the file's length, for a
    /// header-only kind whatever the field says).
    pub size: i64,
    /// Modification time.
    pub mtime: Time,
    /// Access time, when the header has one (GNU or star fields, PAX `atime`).
    pub atime: Option<Time>,
    /// Change time, when the header has one.
    pub ctime: Option<Time>,
    /// Device major number (0 in a V7 header).
    pub dev_major: i64,
    /// Device minor number.
    pub dev_minor: i64,
    /// Extended attributes from `SCHILY.xattr.<name>` PAX records, each name once, empty
    /// values left out (Go skips them).
    pub xattrs: Xattrs,
    /// The PAX records that applied to the entry (its local `x` header, or a global
    /// header's own), Go's `PAXRecords`. Ignored by the writer.
    pub pax: PaxRecords,
    /// Bytes stored in the archive after the header: the payload (for a sparse file, its
    /// data regions back to back, preceded by the map in PAX sparse 1.0). 0 for header-only
    /// kinds. Ignored by the writer.
    pub stored_size: u64,
    /// For a sparse file: its data regions, in order. `None` for a PAX 1.0 sparse file
    /// until its map, at the start of the payload, has been read
    /// ([`Header::sparse_map_in_payload`]). Ignored by the writer.
    pub sparse: Option<Vec<SparseRegion>>,
    /// A PAX 1.0 sparse file: the map is the start of the stored payload.
    pub sparse_map_in_payload: bool,
}

impl Header {
    /// A header of `kind` named `name` with everything else zero (mode 0644 for files,
    /// 0755 for directories).
    pub fn new(name: impl Into<Vec<u8>>, kind: EntryKind) -> Self {
        let mode = if kind == EntryKind::Directory {
            0o755
        } else {
            0o644
        };
        Header {
            name: name.into(),
            link_name: Vec::new(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            uname: Vec::new(),
            gname: Vec::new(),
            size: 0,
            mtime: Time::default(),
            atime: None,
            ctime: None,
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
            pax: PaxRecords::default(),
            stored_size: 0,
            sparse: None,
            sparse_map_in_payload: false,
        }
    }

    /// A regular file of `size` bytes.
    pub fn file(name: impl Into<Vec<u8>>, size: u64) -> Self {
        Header {
            size: size as i64,
            stored_size: size,
            ..Header::new(name, EntryKind::Regular)
        }
    }

    /// A directory.
    pub fn dir(name: impl Into<Vec<u8>>) -> Self {
        Header::new(name, EntryKind::Directory)
    }

    /// A symlink to `target`.
    pub fn symlink(name: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Self {
        Header {
            link_name: target.into(),
            mode: 0o777,
            ..Header::new(name, EntryKind::Symlink)
        }
    }

    /// A hard link to `target`.
    pub fn hardlink(name: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Self {
        Header {
            link_name: target.into(),
            ..Header::new(name, EntryKind::HardLink)
        }
    }

    /// The permission and special bits (`mode & 0o7777`), what extraction applies.
    pub fn permissions(&self) -> u32 {
        (self.mode & 0o7777) as u32
    }

    /// Whether the entry is a sparse file (any GNU format).
    pub fn is_sparse(&self) -> bool {
        self.sparse.is_some() || self.sparse_map_in_payload
    }
}
