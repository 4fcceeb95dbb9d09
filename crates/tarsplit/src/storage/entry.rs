//! The unit of tar-split metadata: raw archive bytes or a placeholder for a file body.

/// What an [`Entry`] stands for (Go `storage.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// `type: 1`: a file body, recorded by name, size and CRC-64 only.
    File,
    /// `type: 2`: raw archive bytes (headers, padding, end blocks, trailing data).
    Segment,
    /// Any other `type` value; the unpacker reports it, the assembler refuses it.
    Other(i64),
}

impl EntryKind {
    /// The JSON `type` number.
    pub fn code(self) -> i64 {
        match self {
            EntryKind::File => 1,
            EntryKind::Segment => 2,
            EntryKind::Other(n) => n,
        }
    }

    /// The kind for a JSON `type` number.
    pub fn from_code(code: i64) -> Self {
        match code {
            1 => EntryKind::File,
            2 => EntryKind::Segment,
            n => EntryKind::Other(n),
        }
    }
}

/// One tar-split metadata entry (Go `storage.Entry`).
///
/// `name` holds the raw name bytes: on the wire it travels as `name` when it is valid
/// UTF-8 and as base64 `name_raw` otherwise (Go's `SetName`/`GetName` rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File or segment.
    pub kind: EntryKind,
    /// File name bytes (empty for segments).
    pub name: Vec<u8>,
    /// File size as the tar reader reports it (0 for segments).
    pub size: i64,
    /// Segment bytes, or the file's 8-byte CRC-64; `None` is JSON `null`.
    pub payload: Option<Vec<u8>>,
    /// Sequence number given by the packer; readers use stream order instead.
    pub position: i64,
}

impl Entry {
    /// A segment of raw archive bytes.
    pub fn segment(payload: Vec<u8>) -> Self {
        Entry {
            kind: EntryKind::Segment,
            name: Vec::new(),
            size: 0,
            payload: Some(payload),
            position: 0,
        }
    }

    /// A file placeholder; `crc` is `None` when the body was not read (size ≤ 0).
    pub fn file(name: impl Into<Vec<u8>>, size: i64, crc: Option<[u8; 8]>) -> Self {
        Entry {
            kind: EntryKind::File,
            name: name.into(),
            size,
            payload: crc.map(|c| c.to_vec()),
            position: 0,
        }
    }
}
