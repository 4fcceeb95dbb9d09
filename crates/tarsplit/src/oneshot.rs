//! One call each for the common case: Docker's. While a layer tar is extracted, record its
//! tar-split metadata (gzip-compressed JSON, Docker's `tar-split.json.gz`) with
//! [`split_while_reading`]; later, rebuild the exact tar from that metadata and the
//! extracted directory with [`reassemble_from_dir`].

use std::io::{self, Read, Write};
#[cfg(target_os = "linux")]
use std::path::Path;

use flate2::write::GzEncoder;

use crate::asm::Disassembler;
use crate::error::{Error, Result};
use crate::storage::{DiscardFilePutter, JsonPacker, Packer, gzip_writer};

/// A reader that yields a tar archive's bytes unchanged while recording its tar-split
/// metadata; made by [`split_while_reading`]. Call [`SplittingReader::finish`] at the end.
#[derive(Debug)]
pub struct SplittingReader<R, W: Write> {
    inner: Disassembler<R, JsonPacker<GzEncoder<W>>, DiscardFilePutter>,
}

/// Wraps `tar` in a reader that passes its bytes through unchanged and writes its
/// tar-split metadata, gzip-compressed as Docker stores it, to `metadata`. File bodies are
/// not kept: whoever reads the archive through it (an extractor) keeps them, and
/// [`reassemble_from_dir`] reads them back from there.
///
/// A malformed archive, or one Go's tar-split would refuse (a duplicate file name), fails
/// the read that reaches it, with an `io::Error` wrapping [`Error`].
///
/// ```
/// use std::io::Read;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut builder = tar::Builder::new(Vec::new());
/// # let mut header = tar::Header::new_gnu();
/// # header.set_size(5);
/// # header.set_cksum();
/// # builder.append_data(&mut header, "hello.txt", &b"hello"[..])?;
/// # let archive = builder.into_inner()?;
/// let dir = tempfile::tempdir()?;
/// // The caller consumes the archive (here: extracts it with the `tar` crate) through the
/// // splitting reader, which records the metadata as the bytes pass.
/// let mut reader = tarsplit::split_while_reading(&archive[..], Vec::new());
/// tar::Archive::new(&mut reader).unpack(dir.path())?;
/// let metadata: Vec<u8> = reader.finish()?; // reads what the extractor left, e.g. padding
///
/// let mut rebuilt = Vec::new();
/// # #[cfg(target_os = "linux")]
/// tarsplit::reassemble_from_dir(&metadata[..], dir.path(), &mut rebuilt)?;
/// # #[cfg(target_os = "linux")]
/// assert_eq!(rebuilt, archive);
/// # Ok(()) }
/// ```
pub fn split_while_reading<R: Read, W: Write>(tar: R, metadata: W) -> SplittingReader<R, W> {
    SplittingReader {
        inner: Disassembler::new(
            tar,
            JsonPacker::new(gzip_writer(metadata)),
            DiscardFilePutter,
        ),
    }
}

impl<R: Read, W: Write> Read for SplittingReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Read, W: Write> SplittingReader<R, W> {
    /// Bytes passed through so far.
    pub fn bytes_read(&self) -> u64 {
        self.inner.bytes_read()
    }

    /// Reads whatever the consumer left of the archive (an extractor stops at the
    /// end-of-archive blocks; Docker drains the rest the same way), completes the metadata
    /// and returns its writer. The metadata covers every byte of the input, so it
    /// reassembles to exactly that input.
    pub fn finish(mut self) -> Result<W> {
        io::copy(&mut self.inner, &mut io::sink())
            .map_err(|e| Error::from_io(e, "reading the tar stream"))?;
        let (_, mut packer, _, _) = self.inner.into_parts();
        packer.flush()?;
        packer
            .into_inner()
            .finish()
            .map_err(Error::io("writing the metadata"))
    }
}

/// Rebuilds the original tar from its tar-split metadata (gzip-compressed, as
/// [`split_while_reading`] and Docker write it) and the directory it was extracted to,
/// writing it to `out`; returns the number of bytes written. Each file is looked up inside
/// `dir` only (symlinks cannot lead out of it) and checked against the size and CRC-64 the
/// metadata records.
#[cfg(target_os = "linux")]
pub fn reassemble_from_dir<R: Read, W: Write>(metadata: R, dir: &Path, out: W) -> Result<u64> {
    let getter = crate::storage::PathFileGetter::new(dir)
        .map_err(Error::io("opening the directory to reassemble from"))?;
    crate::asm::assemble(crate::storage::gzip_unpacker(metadata), getter, out)
}
