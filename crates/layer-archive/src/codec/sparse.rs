//! GNU sparse files: the maps (old GNU, PAX 0.0/0.1 in headers, PAX 1.0 at the start of
//! the payload) and the mapping of the stored data onto the file, with Go's checks.

use super::TarError;
use super::field::{BLOCK, Block, parse_decimal, parse_numeric};
use super::header::SparseRegion;
use super::pax::{PaxRecords, key};

/// Go `validateSparseEntries`: lengths and offsets non-negative, regions in order, not
/// overlapping and inside the file.
pub fn regions_are_valid(regions: &[SparseRegion], size: i64) -> bool {
    if size < 0 {
        return false;
    }
    let mut previous_end = 0i64;
    for r in regions {
        if r.offset < 0 || r.length < 0 {
            return false;
        }
        let Some(end) = r.offset.checked_add(r.length) else {
            return false;
        };
        if end > size || previous_end > r.offset {
            return false;
        }
        previous_end = end;
    }
    true
}

/// Appends the regions of an old GNU sparse area (24-byte offset/length pairs); a pair
/// whose offset starts with NUL ends it, as in GNU and BSD tar.
pub(crate) fn push_old_gnu_regions(
    area: &[u8],
    out: &mut Vec<SparseRegion>,
    max_regions: usize,
) -> Result<(), TarError> {
    for pair in area.chunks_exact(24) {
        if pair[0] == 0 {
            break;
        }
        let offset =
            parse_numeric(&pair[..12]).map_err(|_| TarError::header("bad sparse offset"))?;
        let length =
            parse_numeric(&pair[12..]).map_err(|_| TarError::header("bad sparse length"))?;
        if out.len() >= max_regions {
            return Err(TarError::limit(format!(
                "more than {max_regions} sparse regions"
            )));
        }
        out.push(SparseRegion { offset, length });
    }
    Ok(())
}

/// The PAX 0.0/0.1 map from the records (Go `readGNUSparseMap0x1`).
pub(crate) fn map_from_records(
    records: &PaxRecords,
    max_regions: usize,
) -> Result<Vec<SparseRegion>, TarError> {
    let bad = || TarError::header("invalid GNU sparse map");
    let count = parse_decimal(records.get_or_empty(key::SPARSE_NUMBLOCKS)).ok_or_else(bad)?;
    if count < 0 || count.checked_mul(2).is_none() {
        return Err(bad());
    }
    let map = records.get_or_empty(key::SPARSE_MAP);
    let fields = if map.is_empty() {
        0
    } else {
        map.iter().filter(|&&b| b == b',').count() + 1
    };
    if fields as i64 != count * 2 {
        return Err(bad());
    }
    if count as u64 > max_regions as u64 {
        return Err(TarError::limit(format!(
            "sparse map of {count} regions (cap {max_regions})"
        )));
    }
    let mut numbers = map.split(|&b| b == b',');
    let mut regions = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let offset = numbers.next().and_then(parse_decimal).ok_or_else(bad)?;
        let length = numbers.next().and_then(parse_decimal).ok_or_else(bad)?;
        regions.push(SparseRegion { offset, length });
    }
    Ok(regions)
}

/// The PAX 1.0 map, read block by block from the start of the payload (Go
/// `readGNUSparseMap1x0`): decimal numbers, one per line, the region count first; the data
/// starts at the block after the last needed newline.
#[derive(Debug)]
pub struct MapReader {
    text: Vec<u8>,
    count: Option<usize>,
    max_regions: usize,
    max_bytes: u64,
}

impl MapReader {
    /// A reader refusing more than `max_regions` regions or `max_bytes` of map text.
    pub fn new(max_regions: usize, max_bytes: u64) -> Self {
        MapReader {
            text: Vec::new(),
            count: None,
            max_regions,
            max_bytes,
        }
    }

    /// Feeds the next block of the payload; the map once complete.
    pub fn feed(&mut self, block: &Block) -> Result<Option<Vec<SparseRegion>>, TarError> {
        if self.text.len() as u64 + BLOCK as u64 > self.max_bytes {
            return Err(TarError::limit(format!(
                "PAX sparse map over {} bytes",
                self.max_bytes
            )));
        }
        self.text.extend_from_slice(block);
        let newlines = self.text.iter().filter(|&&b| b == b'\n').count();
        if newlines == 0 {
            return Ok(None);
        }
        let mut tokens = self.text.split(|&b| b == b'\n');
        let count = match self.count {
            Some(count) => {
                tokens.next();
                count
            }
            None => {
                let count = tokens
                    .next()
                    .and_then(parse_decimal)
                    .filter(|&n| n >= 0 && n.checked_mul(2).is_some())
                    .ok_or_else(|| TarError::header("bad PAX sparse map count"))?;
                if count as u64 > self.max_regions as u64 {
                    return Err(TarError::limit(format!(
                        "sparse map of {count} regions (cap {})",
                        self.max_regions
                    )));
                }
                self.count = Some(count as usize);
                count as usize
            }
        };
        if newlines - 1 < count * 2 {
            return Ok(None);
        }
        let mut regions = Vec::with_capacity(count);
        for _ in 0..count {
            let offset = tokens.next().and_then(parse_decimal);
            let length = tokens.next().and_then(parse_decimal);
            let (Some(offset), Some(length)) = (offset, length) else {
                return Err(TarError::header("bad PAX sparse map entry"));
            };
            regions.push(SparseRegion { offset, length });
        }
        self.text = Vec::new();
        Ok(Some(regions))
    }
}

/// Places a sparse file's stored data: each piece of data in, its offset in the file out.
/// Like Go's sparse reader, the stored data must fill the regions exactly.
#[derive(Debug, Clone)]
pub struct Expander {
    regions: Vec<SparseRegion>,
    region: usize,
    within: u64,
}

impl Expander {
    /// An expander over valid `regions` ([`regions_are_valid`]).
    pub fn new(regions: Vec<SparseRegion>) -> Self {
        Expander {
            regions,
            region: 0,
            within: 0,
        }
    }

    /// Maps `data`, the next stored bytes, calling `sink(offset, piece)` for each piece.
    pub fn feed<E>(
        &mut self,
        mut data: &[u8],
        mut sink: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), ExpandError<E>> {
        while !data.is_empty() {
            self.skip_full();
            let Some(r) = self.regions.get(self.region) else {
                return Err(ExpandError::Unreferenced);
            };
            let n = (r.length as u64 - self.within).min(data.len() as u64) as usize;
            sink(r.offset as u64 + self.within, &data[..n]).map_err(ExpandError::Sink)?;
            self.within += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Stored bytes still expected.
    pub fn remaining(&self) -> u64 {
        let mut left = 0u64;
        for (i, r) in self.regions.iter().enumerate().skip(self.region) {
            let done = if i == self.region { self.within } else { 0 };
            left += r.length as u64 - done;
        }
        left
    }

    fn skip_full(&mut self) {
        while self
            .regions
            .get(self.region)
            .is_some_and(|r| self.within == r.length as u64)
        {
            self.region += 1;
            self.within = 0;
        }
    }
}

/// Why [`Expander::feed`] stopped.
#[derive(Debug)]
pub enum ExpandError<E> {
    /// More data is stored than the map places (Go `errUnrefData`).
    Unreferenced,
    /// The sink failed.
    Sink(E),
}

/// Maps a sparse entry's whole stored payload, as it streams by, onto the file: reads a
/// PAX 1.0 map at its start (with Go's checks), then places the data ([`Expander`]).
/// For readers that see the payload in arbitrary chunks (tarsplit's disassembler and its
/// visitors); [`super::TarReader`] reads the map itself.
#[derive(Debug)]
pub struct BodyMapper {
    map: Option<MapReader>,
    /// A partial block of PAX 1.0 map text.
    block: Vec<u8>,
    expander: Option<Expander>,
    size: i64,
    header_only: bool,
    check_data: bool,
}

impl BodyMapper {
    /// A mapper for `header`'s payload, `None` when the entry is not sparse.
    pub fn new(header: &super::Header, limits: &super::Limits) -> Option<Self> {
        if !header.is_sparse() {
            return None;
        }
        Some(BodyMapper {
            map: header
                .sparse_map_in_payload
                .then(|| MapReader::new(limits.max_sparse_regions, limits.max_special_file_bytes)),
            block: Vec::new(),
            expander: header.sparse.clone().map(Expander::new),
            size: header.size,
            header_only: header.kind.is_header_only(),
            check_data: true,
        })
    }

    /// Reads and checks the map only, ignoring the data after it: what Go does with a sparse
    /// file it does not read (tar-split reads no file of logical size 0).
    pub fn map_only(mut self) -> Self {
        self.check_data = false;
        self
    }

    /// The file's logical size.
    pub fn logical_size(&self) -> u64 {
        self.size.max(0) as u64
    }

    /// The data regions, once known (for PAX 1.0, once the map has been read).
    pub fn is_mapped(&self) -> bool {
        self.expander.is_some()
    }

    /// Feeds the next stored bytes; `sink(offset, piece)` receives the data with its offset.
    pub fn feed<E>(
        &mut self,
        mut stored: &[u8],
        mut sink: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), BodyError<E>> {
        if let Some(map) = &mut self.map {
            while !stored.is_empty() {
                let take = (BLOCK - self.block.len()).min(stored.len());
                self.block.extend_from_slice(&stored[..take]);
                stored = &stored[take..];
                if self.block.len() < BLOCK {
                    break;
                }
                let block: &Block = self.block[..].try_into().expect("one block");
                let done = map.feed(block).map_err(BodyError::Tar)?;
                self.block.clear();
                if let Some(regions) = done {
                    if self.header_only || !regions_are_valid(&regions, self.size) {
                        return Err(BodyError::Tar(TarError::header("invalid sparse map")));
                    }
                    self.expander = Some(Expander::new(regions));
                    self.map = None;
                    break;
                }
            }
        }
        if stored.is_empty() || !self.check_data {
            return Ok(());
        }
        let Some(expander) = &mut self.expander else {
            return Ok(());
        };
        expander.feed(stored, &mut sink).map_err(|e| match e {
            ExpandError::Unreferenced => {
                BodyError::Tar(TarError::Sparse("contains data its map does not place"))
            }
            ExpandError::Sink(e) => BodyError::Sink(e),
        })
    }

    /// The payload has ended: checks the map was read whole and its data all there;
    /// returns the logical size (holes extend to it).
    pub fn finish(self) -> Result<u64, TarError> {
        if self.map.is_some() {
            return Err(TarError::Truncated("a PAX sparse map"));
        }
        if self.check_data && self.expander.as_ref().is_some_and(|e| e.remaining() > 0) {
            return Err(TarError::Sparse("misses data its map places"));
        }
        Ok(self.logical_size())
    }
}

/// Why [`BodyMapper::feed`] stopped.
#[derive(Debug)]
pub enum BodyError<E> {
    /// The payload is not a valid sparse body.
    Tar(TarError),
    /// The sink failed.
    Sink(E),
}
