//! Metadata entries, their JSON encoding, and where file bodies come from and go to.
//!
//! * [`Entry`]: a segment of raw archive bytes or a file placeholder (name, size, CRC-64).
//! * [`Packer`] / [`Unpacker`]: write / read a stream of entries; [`JsonPacker`] and
//!   [`JsonUnpacker`] speak Go tar-split's NDJSON.
//! * [`FilePutter`] / [`FileGetter`]: store file bodies during disassembly / fetch them for
//!   reassembly: [`PathFileGetter`] (a directory tree, confined to it; Linux only),
//!   [`BufferFileGetPutter`] (memory), [`DiscardFilePutter`] (nothing).
//! * [`gzip_writer`] / [`gzip_reader`]: the metadata is stored gzip-compressed in practice.
//! * [`BackgroundUnpacker`] / [`BackgroundWriter`]: decode or write (compress) the
//!   metadata on a second thread.

mod b64;
mod background;
mod entry;
mod files;
mod json;

use std::io;
#[cfg(feature = "gzip")]
use std::io::{BufRead, BufReader, Read, Write};

pub use background::{BackgroundUnpacker, BackgroundWriter};
pub use entry::{Entry, EntryKind};
pub use files::{BufferFileGetPutter, DiscardFilePutter, FileGetter, FilePutter, SharedBody};
#[cfg(target_os = "linux")]
pub use files::{FileBody, PathFileGetter};
pub use json::{JsonPacker, JsonUnpacker, MAX_JSON_OBJECT, decode_go_base64, encode_entry};

use crate::error::Result;

/// Receives entries in archive order and assigns positions (Go `storage.Packer`).
pub trait Packer {
    /// Records one entry and returns its position. File entries whose cleaned name was
    /// already recorded fail with [`crate::Error::DuplicatePath`].
    fn add_entry(&mut self, entry: &Entry) -> Result<i64>;

    /// Pushes buffered output down; called once the archive is fully disassembled.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl<P: Packer + ?Sized> Packer for &mut P {
    fn add_entry(&mut self, entry: &Entry) -> Result<i64> {
        (**self).add_entry(entry)
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
}

/// Yields entries in stream order (Go `storage.Unpacker`).
pub trait Unpacker {
    /// The next entry, or `None` at the end of the metadata.
    fn next_entry(&mut self) -> Result<Option<Entry>>;
}

impl<U: Unpacker + ?Sized> Unpacker for &mut U {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        (**self).next_entry()
    }
}

/// A `Vec` of entries is an unpacker too (handy in tests and for in-memory metadata).
impl Unpacker for std::vec::IntoIter<Entry> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        Ok(self.next())
    }
}

/// Collects entries in memory, assigning positions like the JSON packer (duplicates included).
#[derive(Debug, Default)]
pub struct VecPacker {
    /// The entries recorded so far.
    pub entries: Vec<Entry>,
    seen: crate::seen::SeenPaths,
}

impl Packer for VecPacker {
    fn add_entry(&mut self, entry: &Entry) -> Result<i64> {
        if entry.kind == EntryKind::File {
            self.seen.insert(&entry.name)?;
        }
        let mut e = entry.clone();
        e.position = self.entries.len() as i64;
        self.entries.push(e);
        Ok(self.entries.len() as i64 - 1)
    }
}

/// Gzip compression level used for metadata: fast; only the gunzipped JSON must match Go.
#[cfg(feature = "gzip")]
pub const METADATA_GZIP_LEVEL: u32 = 1;

/// Wraps `w` in a gzip encoder suited to tar-split metadata.
#[cfg(feature = "gzip")]
pub fn gzip_writer<W: Write>(w: W) -> flate2::write::GzEncoder<W> {
    flate2::write::GzEncoder::new(w, flate2::Compression::new(METADATA_GZIP_LEVEL))
}

/// Wraps `r` in a buffered gzip decoder (accepts multi-member streams, like Go).
#[cfg(feature = "gzip")]
pub fn gzip_reader<R: Read>(r: R) -> BufReader<flate2::read::MultiGzDecoder<BufReader<R>>> {
    BufReader::with_capacity(
        1 << 16,
        flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, r)),
    )
}

/// A JSON unpacker over gzip-compressed metadata.
#[cfg(feature = "gzip")]
pub fn gzip_unpacker<R: Read>(r: R) -> JsonUnpacker<impl BufRead + use<R>> {
    JsonUnpacker::new(gzip_reader(r))
}

pub(crate) fn io_other(msg: &str) -> io::Error {
    io::Error::other(msg.to_string())
}
