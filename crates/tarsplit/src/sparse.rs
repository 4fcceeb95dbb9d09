//! Expanding GNU sparse files: from a sparse entry's physical body to logical file data.
//!
//! The disassembler records sparse files exactly as they are in the archive (see
//! [`crate::asm::SparseMode`]), and hands an [`crate::asm::EntryVisitor`] the header and
//! the *physical* body. An extractor needs the *logical* file: data regions at offsets,
//! holes in between. [`SparseMapper`] does that mapping in a streaming way, for all three
//! GNU formats: old GNU (`S` typeflag) and PAX 0.0/0.1 carry the map in the headers; PAX
//! 1.0 carries it in text blocks at the start of the body, which the mapper parses (capped
//! at 1 MiB, like Go since CVE-2025-58183).

use crate::asm::EntryHeader;
use crate::error::{Error, Result};
use crate::header::{BLOCK, SparseRegion, parse_decimal, valid_sparse_map};

/// Largest PAX 1.0 in-body sparse map accepted.
pub const MAX_SPARSE_MAP: usize = 1 << 20;

/// Maps the physical body of a sparse entry to `(logical offset, data)` pieces.
#[derive(Debug)]
pub struct SparseMapper {
    logical_size: i64,
    /// `None` while a PAX 1.0 map is still being read from the body.
    regions: Option<Vec<SparseRegion>>,
    map_text: Vec<u8>,
    region: usize,
    within: u64,
    offset: u64,
}

impl SparseMapper {
    /// A mapper for `header`, or `None` when the entry is not sparse.
    pub fn new(header: &EntryHeader) -> Option<Self> {
        if !header.is_sparse {
            return None;
        }
        Some(SparseMapper {
            logical_size: header.header.size,
            regions: header.sparse_map.clone(),
            map_text: Vec::new(),
            region: 0,
            within: 0,
            offset: header.offset,
        })
    }

    /// The file's logical size.
    pub fn logical_size(&self) -> u64 {
        self.logical_size.max(0) as u64
    }

    fn invalid(&self, reason: &'static str) -> Error {
        Error::InvalidHeader {
            offset: self.offset,
            reason,
        }
    }

    /// Feeds the next physical bytes; `sink` receives each data piece with its logical offset.
    pub fn feed(
        &mut self,
        mut physical: &[u8],
        mut sink: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        if self.regions.is_none() {
            let taken = self.read_map(physical)?;
            physical = &physical[taken..];
        }
        let Some(regions) = &self.regions else {
            return Ok(());
        };
        while !physical.is_empty() {
            // Skip empty regions; any data beyond the last region is a corrupt entry.
            while self.region < regions.len() && self.within == regions[self.region].length as u64 {
                self.region += 1;
                self.within = 0;
            }
            let Some(r) = regions.get(self.region) else {
                return Err(self.invalid("sparse body is longer than its map"));
            };
            let n = (r.length as u64 - self.within).min(physical.len() as u64) as usize;
            sink(r.offset as u64 + self.within, &physical[..n])?;
            self.within += n as u64;
            physical = &physical[n..];
        }
        Ok(())
    }

    /// Consumes map text blocks of a PAX 1.0 body; returns how many bytes it used.
    fn read_map(&mut self, physical: &[u8]) -> Result<usize> {
        let mut used = 0;
        while used < physical.len() {
            // The map is read in whole blocks: data starts at the next block boundary.
            let need = BLOCK - self.map_text.len() % BLOCK;
            let take = need.min(physical.len() - used);
            self.map_text
                .extend_from_slice(&physical[used..used + take]);
            used += take;
            if !self.map_text.len().is_multiple_of(BLOCK) {
                break;
            }
            if self.map_text.len() > MAX_SPARSE_MAP {
                return Err(self.invalid("archive/tar: sparse map too long"));
            }
            if let Some(regions) = self.parse_map_text()? {
                if !valid_sparse_map(&regions, self.logical_size) {
                    return Err(self.invalid("invalid sparse map"));
                }
                self.regions = Some(regions);
                self.map_text = Vec::new();
                break;
            }
        }
        Ok(used)
    }

    /// The map, once enough newline-terminated numbers have arrived.
    fn parse_map_text(&self) -> Result<Option<Vec<SparseRegion>>> {
        let mut tokens = self.map_text.split(|&b| b == b'\n');
        let newlines = self.map_text.iter().filter(|&&b| b == b'\n').count();
        if newlines == 0 {
            return Ok(None);
        }
        let count = tokens
            .next()
            .and_then(parse_decimal)
            .filter(|&n| n >= 0)
            .ok_or_else(|| self.invalid("bad sparse map count"))?;
        if (newlines as i64 - 1) < count.saturating_mul(2) {
            return Ok(None);
        }
        let mut regions = Vec::with_capacity(count.min(1 << 16) as usize);
        for _ in 0..count {
            let offset = tokens
                .next()
                .and_then(parse_decimal)
                .ok_or_else(|| self.invalid("bad sparse map entry"))?;
            let length = tokens
                .next()
                .and_then(parse_decimal)
                .ok_or_else(|| self.invalid("bad sparse map entry"))?;
            regions.push(SparseRegion { offset, length });
        }
        Ok(Some(regions))
    }

    /// Checks the whole map was filled; returns the logical size (holes extend to it).
    pub fn finish(self) -> Result<u64> {
        let Some(regions) = &self.regions else {
            return Err(self.invalid("sparse body ended inside its map"));
        };
        let missing = regions.iter().skip(self.region).enumerate().any(|(i, r)| {
            let done = if i == 0 { self.within } else { 0 };
            done < r.length as u64
        });
        if missing {
            return Err(self.invalid("sparse body is shorter than its map"));
        }
        Ok(self.logical_size())
    }
}
