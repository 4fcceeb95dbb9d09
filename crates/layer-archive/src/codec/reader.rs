//! [`TarReader`]: a streaming, pull-style reader over the [`Decoder`], with Go's
//! `archive/tar` semantics and hard caps.
//!
//! Why not the `tar` crate's `Entries`: it reads GNU long names and PAX headers into memory
//! without a size cap (a 100 MB PAX header is 100 MB of RAM, CVE-2022-2879's shape), reads
//! several fields differently from Go (Docker's reader), and hides the end-of-archive
//! position. This reader never buffers a payload.
//!
//! Use: call [`TarReader::next_entry`], then read the entry's payload with
//! [`std::io::Read`] (the file's bytes as Go gives them: a sparse file's holes read as
//! zeros) or with [`TarReader::read_data`] (data pieces with their offsets, for writers that
//! keep holes). The next call skips whatever was not read.

use std::io::{self, Read};

use super::Limits;
use super::decode::{Decoder, Step, check_sparse};
use super::error::TarError;
use super::field::{BLOCK, Block, padding};
use super::header::{Header, SparseRegion};
use super::sparse::MapReader;

/// The streaming reader. See the module doc.
#[derive(Debug)]
pub struct TarReader<R> {
    inner: R,
    decoder: Decoder,
    /// Stored payload bytes of the current entry not yet consumed.
    remaining: u64,
    /// Padding after the current payload.
    padding: u64,
    /// Where the current entry's data goes.
    layout: Layout,
    /// Bytes of a plain entry's data read so far.
    plain_read: u64,
    /// Set once the archive has ended (marker, clean EOF, or EOF inside padding).
    finished: bool,
    /// Bytes consumed from `inner`.
    position: u64,
    /// Skips payloads by seeking ([`TarReader::seeking`]).
    seek: Option<fn(&mut R, u64) -> io::Result<()>>,
}

/// How the current entry's stored data maps onto the file.
#[derive(Debug, Default)]
enum Layout {
    /// Contiguous: the stored data is the file.
    #[default]
    Plain,
    /// Sparse: data regions, holes elsewhere up to `size`.
    Sparse {
        regions: Vec<SparseRegion>,
        region: usize,
        within: u64,
        /// Logical position of the next byte [`Read`] returns.
        pos: u64,
        size: u64,
    },
}

impl<R: Read> TarReader<R> {
    /// A reader over `inner` with the given caps.
    pub fn new(inner: R, limits: Limits) -> Self {
        TarReader {
            inner,
            decoder: Decoder::new(limits),
            remaining: 0,
            padding: 0,
            layout: Layout::Plain,
            plain_read: 0,
            finished: false,
            position: 0,
            seek: None,
        }
    }

    /// A reader that skips unread payloads by seeking instead of reading them (indexing a
    /// large archive on disk). A seek cannot see the end of the input: the caller checks
    /// that the payloads it uses lie within it.
    pub fn seeking(inner: R, limits: Limits) -> Self
    where
        R: io::Seek,
    {
        fn forward<R: io::Seek>(r: &mut R, n: u64) -> io::Result<()> {
            let n = i64::try_from(n).map_err(|_| io::Error::other("skip too large"))?;
            r.seek(io::SeekFrom::Current(n)).map(drop)
        }
        TarReader {
            seek: Some(forward::<R>),
            ..TarReader::new(inner, limits)
        }
    }

    /// Bytes consumed from the input so far (the offset of the current payload right after
    /// [`TarReader::next_entry`]).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Reads the next entry header, skipping the unread rest of the previous entry.
    /// `Ok(None)` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<Header>, TarError> {
        if self.finished {
            return Ok(None);
        }
        self.skip_rest()?;
        if self.finished {
            return Ok(None);
        }
        let mut block = [0u8; BLOCK];
        let mut step = Step::NeedBlock;
        loop {
            match step {
                Step::NeedBlock => {
                    if !self.read_block_or_eof(&mut block)? {
                        if self.decoder.at_entry_boundary() {
                            self.decoder.eof()?;
                            self.finished = true;
                            return Ok(None);
                        }
                        return Err(self
                            .decoder
                            .eof()
                            .err()
                            .unwrap_or(TarError::Truncated("a header")));
                    }
                    step = self.decoder.block(&block)?;
                }
                Step::NeedExtensionBody(size) => {
                    // Capped by the decoder before it asked.
                    let mut body = vec![0u8; size as usize];
                    self.read_exact(&mut body, "an extension header's body")?;
                    step = self.decoder.extension_body(&body)?;
                    if let Step::Entry(global) = step {
                        // A global header is an entry of its own; Go skips its padding at
                        // the next call (so the end of the input there still lists it).
                        self.remaining = 0;
                        self.padding = padding(size);
                        self.layout = Layout::Plain;
                        return Ok(Some(*global));
                    }
                    if !self.skip(padding(size))? {
                        // Go: the archive ends inside padding, cleanly.
                        self.finished = true;
                        return Ok(None);
                    }
                }
                Step::End => {
                    self.finished = true;
                    return Ok(None);
                }
                Step::Entry(header) => return self.start_entry(*header).map(Some),
            }
        }
    }

    fn start_entry(&mut self, mut header: Header) -> Result<Header, TarError> {
        self.remaining = header.stored_size;
        self.padding = padding(header.stored_size);
        self.plain_read = 0;
        if header.sparse_map_in_payload {
            let limits = *self.decoder.limits();
            let mut map = MapReader::new(limits.max_sparse_regions, limits.max_special_file_bytes);
            let mut block: Block = [0; BLOCK];
            let regions = loop {
                if self.remaining < BLOCK as u64 {
                    return Err(TarError::Truncated("a PAX sparse map"));
                }
                self.read_exact(&mut block, "a PAX sparse map")?;
                self.remaining -= BLOCK as u64;
                if let Some(regions) = map.feed(&block)? {
                    break regions;
                }
            };
            check_sparse(&header, &regions)?;
            header.sparse = Some(regions);
        }
        self.layout = match &header.sparse {
            Some(regions) => Layout::Sparse {
                regions: regions.clone(),
                region: 0,
                within: 0,
                pos: 0,
                size: header.size as u64,
            },
            None => Layout::Plain,
        };
        Ok(header)
    }

    /// Reads the next piece of the current entry's data into `buf`: `(offset in the file,
    /// length)`, or `None` once all data was read. For a sparse file the pieces skip the
    /// holes; the stored data must fill the map exactly (else [`TarError::Sparse`]).
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<Option<(u64, usize)>, TarError> {
        if buf.is_empty() {
            return Ok(Some((0, 0)));
        }
        match self.layout {
            Layout::Plain => {
                let n = self.read_stored(buf)?;
                if n == 0 {
                    return Ok(None);
                }
                let offset = self.plain_read;
                self.plain_read += n as u64;
                Ok(Some((offset, n)))
            }
            Layout::Sparse { .. } => self.read_sparse_data(buf),
        }
    }

    fn read_sparse_data(&mut self, buf: &mut [u8]) -> Result<Option<(u64, usize)>, TarError> {
        let Layout::Sparse {
            regions,
            region,
            within,
            ..
        } = &mut self.layout
        else {
            unreachable!("called for sparse layouts")
        };
        while regions
            .get(*region)
            .is_some_and(|r| *within == r.length as u64)
        {
            *region += 1;
            *within = 0;
        }
        let Some(r) = regions.get(*region).copied() else {
            if self.remaining > 0 {
                return Err(TarError::Sparse("has more data than its map places"));
            }
            return Ok(None);
        };
        let offset = r.offset as u64 + *within;
        let want = (r.length as u64 - *within).min(buf.len() as u64) as usize;
        if self.remaining == 0 {
            return Err(TarError::Sparse("misses data its map places"));
        }
        let n = self.read_stored(&mut buf[..want])?;
        if let Layout::Sparse { within, .. } = &mut self.layout {
            *within += n as u64;
        }
        Ok(Some((offset, n)))
    }

    /// Reads stored payload bytes (at most what is left of the entry).
    fn read_stored(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let n = read_some(&mut self.inner, &mut buf[..want])?;
        if n == 0 {
            return Err(TarError::Truncated("an entry's payload"));
        }
        self.remaining -= n as u64;
        self.position += n as u64;
        Ok(n)
    }

    /// Reads and discards the rest of the input after the end-of-archive marker, so that a
    /// digest computed by a tee over the input covers every byte (the DiffID does).
    pub fn drain(&mut self) -> Result<u64, TarError> {
        self.skip_rest()?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            match self.inner.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    total += n as u64;
                    self.position += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn skip_rest(&mut self) -> Result<(), TarError> {
        let (payload, padding) = (self.remaining, self.padding);
        self.remaining = 0;
        self.padding = 0;
        self.layout = Layout::Plain;
        if !self.skip(payload)? {
            return Err(TarError::Truncated("an entry's payload"));
        }
        // Go takes an archive that stops inside the padding after a payload as ended.
        if !self.skip(padding)? {
            self.finished = true;
        }
        Ok(())
    }

    /// Discards `n` bytes; `false` if the input ended first.
    fn skip(&mut self, n: u64) -> Result<bool, TarError> {
        if let Some(seek) = self.seek
            && n > 0
        {
            seek(&mut self.inner, n)?;
            self.position += n;
            return Ok(true);
        }
        let mut left = n;
        let mut buf = [0u8; 8192];
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let got = read_some(&mut self.inner, &mut buf[..want])?;
            if got == 0 {
                return Ok(false);
            }
            self.position += got as u64;
            left -= got as u64;
        }
        Ok(true)
    }

    /// Reads one block; `false` on a clean EOF before its first byte.
    fn read_block_or_eof(&mut self, block: &mut Block) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < BLOCK {
            let n = read_some(&mut self.inner, &mut block[filled..])?;
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(TarError::Truncated("a header block"));
            }
            filled += n;
        }
        self.position += BLOCK as u64;
        Ok(true)
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), TarError> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = read_some(&mut self.inner, &mut buf[filled..])?;
            if n == 0 {
                return Err(TarError::Truncated(what));
            }
            filled += n;
        }
        self.position += buf.len() as u64;
        Ok(())
    }
}

impl<R: Read> Read for TarReader<R> {
    /// Reads the current entry's file content (a sparse file's holes as zeros); EOF at its
    /// end.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let to_io = |e: TarError| match e {
            TarError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        };
        let Layout::Sparse {
            regions,
            region,
            within,
            pos,
            size,
        } = &mut self.layout
        else {
            return self.read_stored(buf).map_err(to_io);
        };
        while regions
            .get(*region)
            .is_some_and(|r| *within == r.length as u64)
        {
            *region += 1;
            *within = 0;
        }
        if *pos >= *size {
            if self.remaining > 0 {
                return Err(to_io(TarError::Sparse("has more data than its map places")));
            }
            return Ok(0);
        }
        let next_data = regions.get(*region).map(|r| r.offset as u64);
        match next_data {
            Some(start) if *pos >= start => {
                let r = regions[*region];
                let want = (r.length as u64 - *within).min(buf.len() as u64) as usize;
                if self.remaining == 0 {
                    return Err(to_io(TarError::Sparse("misses data its map places")));
                }
                let n = self.read_stored(&mut buf[..want]).map_err(to_io)?;
                if let Layout::Sparse { within, pos, .. } = &mut self.layout {
                    *within += n as u64;
                    *pos += n as u64;
                }
                Ok(n)
            }
            _ => {
                // A hole, up to the next region or the end of the file.
                let hole_end = next_data.unwrap_or(*size);
                let n = (hole_end - *pos).min(buf.len() as u64) as usize;
                buf[..n].fill(0);
                *pos += n as u64;
                Ok(n)
            }
        }
    }
}

fn read_some<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
