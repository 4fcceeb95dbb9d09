//! Disassembly: tar bytes in, the same bytes out, metadata entries and file bodies aside.
//!
//! [`DisasmEngine`] is a push-style (sans-IO) state machine: it is fed the archive in
//! chunks of any size and never looks back, so memory stays bounded by the caps in
//! [`DisasmOptions`] whatever the input. [`Disassembler`] wraps a `Read` and is itself a
//! `Read` yielding exactly the input bytes, feeding the engine as the caller reads, so a
//! caller can hash or extract the same bytes in one pass. [`disassemble`] and
//! [`disassemble_to`] drive it to EOF.
//!
//! Segmentation follows Go tar-split (`asm.NewInputTarStream` over its raw-accounting
//! reader): one segment holds the previous entry's padding plus every header block and
//! extension body of the next entry; then comes the file entry; the end blocks form one
//! segment; trailing bytes follow in segments of at most 1 MiB.

use std::io::{self, Read, Write};

use crate::crc::Crc64;
use crate::error::{EntryName, Error, Result};
use crate::header::{
    self, BLOCK, PaxRecords, RawHeader, SparseRegion, block_padding, is_header_only, is_zero_block,
    pax, typeflag,
};
use crate::sparse::SparseMapper;
use crate::storage::{Entry, EntryKind, FilePutter, Packer};

/// Trailing bytes after the end-of-archive marker are recorded in chunks of this size.
pub const TRAILING_CHUNK: usize = 1 << 20;

/// How GNU sparse files are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SparseMode {
    /// Record the physical body (and a PAX 1.0 in-body map) verbatim as segments after a
    /// `size: 0` file entry, so reassembly — by Go's assembler too — is byte-exact and
    /// needs no file on disk. Go instead records the expanded content, which cannot be
    /// reassembled (upstream issue #21).
    #[default]
    Exact,
    /// Refuse archives containing sparse files.
    Reject,
    /// What Go does: record the *expanded* file (logical size, CRC of the content with
    /// holes as zeros) and drop a PAX 1.0 in-body map. The metadata then equals Go's byte
    /// for byte, but no assembler can reproduce the archive from it, and the work grows
    /// with the logical size (a 5 KiB archive can claim 60 GB). For compatibility only.
    ExpandLikeGo,
}

/// Limits and choices for the disassembler.
#[derive(Debug, Clone)]
pub struct DisasmOptions {
    /// Largest PAX or GNU long-name/link body (Go: 1 MiB, CVE-2022-2879).
    pub max_extension_body: u64,
    /// Largest raw header group: padding + all extension headers, bodies and old-GNU sparse
    /// blocks before one real header. Go has no such cap and buffers chains without limit.
    pub max_header_group: usize,
    /// An archive ending inside the padding after the last file is an error by default (Go
    /// silently drops those bytes); when set, the partial padding is kept as a final segment.
    pub keep_partial_padding: bool,
    /// Sparse file handling.
    pub sparse: SparseMode,
}

impl Default for DisasmOptions {
    fn default() -> Self {
        DisasmOptions {
            max_extension_body: 1 << 20,
            max_header_group: 8 << 20,
            keep_partial_padding: false,
            sparse: SparseMode::Exact,
        }
    }
}

/// A fully decoded entry header, as handed to an [`EntryVisitor`].
#[derive(Debug, Clone, Default)]
pub struct EntryHeader {
    /// The decoded fields after PAX, GNU long name/link and sparse overrides. `size` is
    /// the logical size Go reports (what the JSON records for non-sparse entries).
    pub header: RawHeader,
    /// The PAX records that applied (local `x` header, or the `g` header's own).
    pub pax: PaxRecords,
    /// For sparse files: the data regions, when the map is in the headers (old GNU, PAX
    /// 0.0/0.1). For PAX 1.0 the map is at the start of the physical body and is `None`.
    pub sparse_map: Option<Vec<SparseRegion>>,
    /// Whether this is a GNU sparse file (any format).
    pub is_sparse: bool,
    /// Bytes of body that follow in the archive.
    pub physical_size: u64,
    /// Offset of the entry's first header block (extension headers included).
    pub offset: u64,
}

/// Sees every entry header and body during disassembly, e.g. to extract in the same pass.
///
/// ```
/// use std::io::Read;
/// use tarsplit::asm::{DisasmOptions, Disassembler, EntryHeader, EntryVisitor};
/// use tarsplit::storage::{DiscardFilePutter, VecPacker};
///
/// /// Lists names and body sizes, as an extractor would create files.
/// #[derive(Default)]
/// struct List(Vec<(String, usize)>);
///
/// impl EntryVisitor for List {
///     fn header(&mut self, h: &EntryHeader) -> tarsplit::Result<()> {
///         self.0.push((String::from_utf8_lossy(&h.header.name).into_owned(), 0));
///         Ok(())
///     }
///     fn body(&mut self, data: &[u8]) -> tarsplit::Result<()> {
///         self.0.last_mut().unwrap().1 += data.len();
///         Ok(())
///     }
/// }
///
/// let mut b = tar::Builder::new(Vec::new());
/// let mut h = tar::Header::new_ustar();
/// h.set_size(3);
/// h.set_cksum();
/// b.append_data(&mut h, "a.txt", &b"abc"[..]).unwrap();
/// let archive = b.into_inner().unwrap();
///
/// let mut list = List::default();
/// let mut d = Disassembler::with_visitor(&archive[..], VecPacker::default(), DiscardFilePutter, &mut list, DisasmOptions::default());
/// d.read_to_end(&mut Vec::new()).unwrap();
/// assert_eq!(list.0, vec![("a.txt".to_string(), 3)]);
/// ```
pub trait EntryVisitor {
    /// A header (any type, PAX global headers included) was decoded.
    fn header(&mut self, _header: &EntryHeader) -> Result<()> {
        Ok(())
    }
    /// The next chunk of the current entry's physical body.
    fn body(&mut self, _data: &[u8]) -> Result<()> {
        Ok(())
    }
    /// The current entry's body is complete.
    fn end_body(&mut self) -> Result<()> {
        Ok(())
    }
}

/// An [`EntryVisitor`] that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoVisitor;

impl EntryVisitor for NoVisitor {}

impl<V: EntryVisitor + ?Sized> EntryVisitor for &mut V {
    fn header(&mut self, header: &EntryHeader) -> Result<()> {
        (**self).header(header)
    }
    fn body(&mut self, data: &[u8]) -> Result<()> {
        (**self).body(data)
    }
    fn end_body(&mut self) -> Result<()> {
        (**self).end_body()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Filling a header block.
    Header,
    /// Filling the block after a zero block.
    SecondZero,
    /// Collecting a PAX (`x`/`g`) or GNU (`L`/`K`) body.
    ExtBody { flag: u8, remaining: u64, pad: u64 },
    /// Filling an old-GNU sparse extension block.
    SparseExt,
    /// A file body going to the putter.
    Body { remaining: u64, pad: u64 },
    /// A sparse file's physical body, expanded into the putter ([`SparseMode::ExpandLikeGo`]).
    ExpandBody { remaining: u64, pad: u64 },
    /// A sparse file's physical body, recorded verbatim in segments.
    RawBody {
        remaining: u64,
        pad: u64,
        file_emitted: bool,
    },
    /// Padding before the next header.
    Padding { remaining: u64, total: u64 },
    /// Bytes after the end-of-archive marker.
    Trailing,
    /// `finish` ran, or an error stopped the engine.
    Done,
}

/// The push-style disassembler. Feed it the archive with [`DisasmEngine::feed`] and call
/// [`DisasmEngine::finish`] at EOF.
#[derive(Debug)]
pub struct DisasmEngine<P, F, V = NoVisitor> {
    packer: P,
    putter: F,
    visitor: V,
    opts: DisasmOptions,
    state: State,
    block: Box<[u8; BLOCK]>,
    fill: usize,
    offset: u64,
    /// Raw bytes of the segment being built.
    pending: Vec<u8>,
    group_start: u64,
    ext_body: Vec<u8>,
    ext_header: RawHeader,
    local_pax: Option<PaxRecords>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    current: EntryHeader,
    crc: Crc64,
    segment: Entry,
    file: Entry,
    trailing: Vec<u8>,
    failed: bool,
    mapper: Option<SparseMapper>,
    logical_written: u64,
}

impl<P: Packer, F: FilePutter, V: EntryVisitor> DisasmEngine<P, F, V> {
    /// An engine recording entries to `packer`, bodies to `putter`, headers to `visitor`.
    pub fn new(packer: P, putter: F, visitor: V, opts: DisasmOptions) -> Self {
        DisasmEngine {
            packer,
            putter,
            visitor,
            opts,
            state: State::Header,
            block: Box::new([0; BLOCK]),
            fill: 0,
            offset: 0,
            pending: Vec::with_capacity(4 * BLOCK),
            group_start: 0,
            ext_body: Vec::new(),
            ext_header: RawHeader::default(),
            local_pax: None,
            long_name: None,
            long_link: None,
            current: EntryHeader::default(),
            crc: Crc64::new(),
            segment: Entry::segment(Vec::new()),
            file: Entry::file(Vec::new(), 0, None),
            trailing: Vec::new(),
            failed: false,
            mapper: None,
            logical_written: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Returns the packer, putter and visitor.
    pub fn into_parts(self) -> (P, F, V) {
        (self.packer, self.putter, self.visitor)
    }

    /// Feeds the next bytes of the archive.
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        if self.failed {
            return Err(Error::Io {
                context: "disassembling",
                source: io::Error::other("an earlier error stopped the disassembler"),
            });
        }
        let r = self.feed_inner(data);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// Whether the engine waits for a file body that goes to the putter.
    pub(crate) fn awaits_body(&self) -> bool {
        matches!(self.state, State::Body { remaining, .. } if remaining > 0)
    }

    /// Treats the file body the engine is waiting for as already consumed (used to walk
    /// headers from metadata, where bodies are absent). Returns false if no body was due.
    pub(crate) fn skip_body(&mut self) -> Result<bool> {
        match self.state {
            State::Body { remaining, pad } => {
                self.offset += remaining;
                self.body_done(pad)?;
                Ok(true)
            }
            State::RawBody { remaining, pad, .. } => {
                // Go-style sparse metadata walked in exact mode: a sized file entry right
                // after the header means the physical body is in no segment.
                self.offset += remaining;
                self.emit_pending()?;
                self.visitor.end_body()?;
                self.emit_file(None)?;
                self.after_body(pad);
                Ok(true)
            }
            State::ExpandBody { remaining, pad } => {
                // Go-style sparse metadata: the physical body is in no segment.
                self.offset += remaining;
                self.mapper = None;
                self.visitor.end_body()?;
                self.emit_file(None)?;
                self.after_body(pad);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Signals EOF: checks the archive ended cleanly and writes the last segments.
    pub fn finish(&mut self) -> Result<()> {
        if self.failed {
            return Err(Error::Io {
                context: "disassembling",
                source: io::Error::other("an earlier error stopped the disassembler"),
            });
        }
        let r = self.finish_inner();
        self.failed = r.is_err();
        self.state = State::Done;
        r
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            match self.state {
                State::Header | State::SecondZero | State::SparseExt => {
                    let take = (BLOCK - self.fill).min(data.len());
                    self.block[self.fill..self.fill + take].copy_from_slice(&data[..take]);
                    self.fill += take;
                    self.offset += take as u64;
                    data = &data[take..];
                    if self.fill == BLOCK {
                        self.fill = 0;
                        self.push_pending_block()?;
                        self.block_done()?;
                    }
                }
                State::ExtBody {
                    flag,
                    remaining,
                    pad,
                } => {
                    let take = remaining.min(data.len() as u64) as usize;
                    self.push_pending(&data[..take])?;
                    self.ext_body.extend_from_slice(&data[..take]);
                    self.offset += take as u64;
                    data = &data[take..];
                    let remaining = remaining - take as u64;
                    self.state = State::ExtBody {
                        flag,
                        remaining,
                        pad,
                    };
                    if remaining == 0 {
                        self.ext_done(flag, pad)?;
                    }
                }
                State::Body { remaining, pad } => {
                    let take = remaining.min(data.len() as u64) as usize;
                    let chunk = &data[..take];
                    self.crc.update(chunk);
                    self.putter
                        .write_chunk(chunk)
                        .map_err(|source| Error::Put {
                            name: self.current_name(),
                            source,
                        })?;
                    self.visitor.body(chunk)?;
                    self.offset += take as u64;
                    data = &data[take..];
                    let remaining = remaining - take as u64;
                    self.state = State::Body { remaining, pad };
                    if remaining == 0 {
                        self.body_done(pad)?;
                    }
                }
                State::RawBody {
                    remaining,
                    pad,
                    mut file_emitted,
                } => {
                    let take = remaining.min(data.len() as u64).min(TRAILING_CHUNK as u64) as usize;
                    let chunk = &data[..take];
                    self.pending.extend_from_slice(chunk);
                    self.visitor.body(chunk)?;
                    self.offset += take as u64;
                    data = &data[take..];
                    if self.pending.len() >= TRAILING_CHUNK {
                        self.emit_pending()?;
                        if !file_emitted {
                            self.emit_file(None)?;
                            file_emitted = true;
                        }
                    }
                    let remaining = remaining - take as u64;
                    self.state = State::RawBody {
                        remaining,
                        pad,
                        file_emitted,
                    };
                    if remaining == 0 {
                        self.raw_body_done(pad, file_emitted)?;
                    }
                }
                State::ExpandBody { remaining, pad } => {
                    let take = remaining.min(data.len() as u64) as usize;
                    let chunk = &data[..take];
                    self.visitor.body(chunk)?;
                    self.expand_chunk(chunk)?;
                    self.offset += take as u64;
                    data = &data[take..];
                    let remaining = remaining - take as u64;
                    self.state = State::ExpandBody { remaining, pad };
                    if remaining == 0 {
                        self.expand_done(pad)?;
                    }
                }
                State::Padding { remaining, total } => {
                    let take = remaining.min(data.len() as u64) as usize;
                    self.push_pending(&data[..take])?;
                    self.offset += take as u64;
                    data = &data[take..];
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::Header
                    } else {
                        State::Padding { remaining, total }
                    };
                }
                State::Trailing => {
                    if self.trailing.capacity() == 0 {
                        self.trailing.reserve_exact(TRAILING_CHUNK);
                    }
                    let take = (TRAILING_CHUNK - self.trailing.len()).min(data.len());
                    self.trailing.extend_from_slice(&data[..take]);
                    self.offset += take as u64;
                    data = &data[take..];
                    if self.trailing.len() == TRAILING_CHUNK {
                        self.emit_trailing()?;
                    }
                }
                State::Done => {
                    return Err(Error::Io {
                        context: "disassembling",
                        source: io::Error::other("data fed after finish"),
                    });
                }
            }
        }
        Ok(())
    }

    fn finish_inner(&mut self) -> Result<()> {
        let eof = |what: &'static str, name: Option<EntryName>| Error::UnexpectedEof {
            offset: self.offset,
            what,
            name,
        };
        match self.state {
            State::Header | State::SecondZero if self.fill == 0 => self.emit_pending()?,
            State::Header => return Err(eof("a header block", None)),
            State::SecondZero => return Err(eof("the end-of-archive blocks", None)),
            State::ExtBody { .. } => return Err(eof("an extension header body", None)),
            State::SparseExt => {
                return Err(eof("an old GNU sparse map", Some(self.current_name())));
            }
            State::Body { .. } | State::RawBody { .. } | State::ExpandBody { .. } => {
                return Err(eof("the body", Some(self.current_name())));
            }
            State::Padding { remaining, total } => {
                if remaining != total && !self.opts.keep_partial_padding {
                    return Err(eof("the padding after the body", Some(self.current_name())));
                }
                self.emit_pending()?;
            }
            State::Trailing => self.emit_trailing()?,
            State::Done => {}
        }
        self.packer.flush()
    }

    fn current_name(&self) -> EntryName {
        EntryName(self.current.header.name.clone())
    }

    fn push_pending(&mut self, data: &[u8]) -> Result<()> {
        if self.pending.is_empty() {
            self.group_start = self.offset;
        }
        if self.pending.len() + data.len() > self.opts.max_header_group {
            return Err(Error::HeaderGroupTooLarge {
                offset: self.group_start,
                limit: self.opts.max_header_group as u64,
            });
        }
        self.pending.extend_from_slice(data);
        Ok(())
    }

    fn push_pending_block(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            self.group_start = self.offset - BLOCK as u64;
        }
        if self.pending.len() + BLOCK > self.opts.max_header_group {
            return Err(Error::HeaderGroupTooLarge {
                offset: self.group_start,
                limit: self.opts.max_header_group as u64,
            });
        }
        let block = *self.block;
        self.pending.extend_from_slice(&block);
        Ok(())
    }

    fn emit_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let payload = self.segment.payload.get_or_insert_with(Vec::new);
        std::mem::swap(payload, &mut self.pending);
        let r = self.packer.add_entry(&self.segment);
        let payload = self.segment.payload.as_mut().expect("set above");
        std::mem::swap(payload, &mut self.pending);
        self.pending.clear();
        r.map(drop)
    }

    fn emit_trailing(&mut self) -> Result<()> {
        if self.trailing.is_empty() {
            return Ok(());
        }
        let payload = self.segment.payload.get_or_insert_with(Vec::new);
        std::mem::swap(payload, &mut self.trailing);
        let r = self.packer.add_entry(&self.segment);
        let payload = self.segment.payload.as_mut().expect("set above");
        std::mem::swap(payload, &mut self.trailing);
        self.trailing.clear();
        r.map(drop)
    }

    fn emit_file(&mut self, crc: Option<[u8; 8]>) -> Result<()> {
        self.file.kind = EntryKind::File;
        self.file.name.clear();
        self.file.name.extend_from_slice(&self.current.header.name);
        self.file.size = if self.current.is_sparse && self.opts.sparse != SparseMode::ExpandLikeGo {
            0
        } else {
            self.current.header.size
        };
        self.file.payload = crc.map(|c| c.to_vec());
        self.packer.add_entry(&self.file).map(drop)
    }

    fn invalid(&self, reason: &'static str) -> Error {
        Error::InvalidHeader {
            offset: self.offset - BLOCK as u64,
            reason,
        }
    }

    fn after_body(&mut self, pad: u64) {
        self.state = if pad == 0 {
            State::Header
        } else {
            State::Padding {
                remaining: pad,
                total: pad,
            }
        };
    }

    /// A complete block arrived in a block-filling state (already appended to `pending`).
    fn block_done(&mut self) -> Result<()> {
        match self.state {
            State::Header => {
                if is_zero_block(&self.block) {
                    self.state = State::SecondZero;
                    return Ok(());
                }
                let raw = header::parse_header(&self.block).map_err(|r| self.invalid(r))?;
                if !is_header_only(raw.typeflag) && raw.size < 0 {
                    return Err(self.invalid("negative size"));
                }
                match raw.typeflag {
                    typeflag::PAX_LOCAL
                    | typeflag::PAX_GLOBAL
                    | typeflag::GNU_LONG_NAME
                    | typeflag::GNU_LONG_LINK => {
                        let size = raw.size as u64;
                        if size > self.opts.max_extension_body {
                            return Err(Error::FieldTooLong {
                                offset: self.offset - BLOCK as u64,
                                size,
                                limit: self.opts.max_extension_body,
                            });
                        }
                        let (flag, pad) = (raw.typeflag, block_padding(size));
                        if raw.typeflag == typeflag::PAX_GLOBAL {
                            self.current.offset = self.group_start;
                        }
                        self.ext_header = raw;
                        self.ext_body.clear();
                        self.state = State::ExtBody {
                            flag,
                            remaining: size,
                            pad,
                        };
                        if size == 0 {
                            self.ext_done(flag, pad)?;
                        }
                        Ok(())
                    }
                    _ => self.real_header(raw),
                }
            }
            State::SecondZero => {
                if !is_zero_block(&self.block) {
                    return Err(self.invalid("a zero block followed by a non-zero block"));
                }
                self.emit_pending()?;
                self.state = State::Trailing;
                Ok(())
            }
            State::SparseExt => {
                let map = self.current.sparse_map.get_or_insert_with(Vec::new);
                let block = &self.block;
                header::old_gnu_sparse_entries(&block[..504], map).map_err(|r| {
                    Error::InvalidHeader {
                        offset: self.offset - BLOCK as u64,
                        reason: r,
                    }
                })?;
                if self.block[504] == 0 {
                    self.finish_real_header()?;
                }
                Ok(())
            }
            _ => unreachable!("block_done only in block states"),
        }
    }

    fn ext_done(&mut self, flag: u8, pad: u64) -> Result<()> {
        match flag {
            typeflag::PAX_LOCAL => {
                let records =
                    header::parse_pax(&self.ext_body).map_err(|r| Error::InvalidHeader {
                        offset: self.offset - self.ext_body.len() as u64,
                        reason: r,
                    })?;
                // As in Go, a later `x` header replaces an earlier one entirely.
                self.local_pax = Some(records);
            }
            typeflag::PAX_GLOBAL => {
                let records =
                    header::parse_pax(&self.ext_body).map_err(|r| Error::InvalidHeader {
                        offset: self.offset - self.ext_body.len() as u64,
                        reason: r,
                    })?;
                // Go returns a global header as an entry of its own: named by its `path`
                // record if any, size 0. Pending local extensions are dropped.
                let mut hdr = std::mem::take(&mut self.ext_header);
                if let Some(path) = records.get(pax::PATH).filter(|p| !p.is_empty()) {
                    hdr.name = path.to_vec();
                }
                hdr.size = 0;
                self.local_pax = None;
                self.long_name = None;
                self.long_link = None;
                let offset = self.current.offset;
                self.current = EntryHeader {
                    header: hdr,
                    pax: records,
                    offset,
                    ..EntryHeader::default()
                };
                self.visitor.header(&self.current)?;
                self.visitor.end_body()?;
                self.emit_pending()?;
                self.emit_file(None)?;
            }
            typeflag::GNU_LONG_NAME => self.long_name = Some(header::cstr(&self.ext_body).to_vec()),
            typeflag::GNU_LONG_LINK => self.long_link = Some(header::cstr(&self.ext_body).to_vec()),
            _ => unreachable!("only extension typeflags reach ext_done"),
        }
        self.ext_body.clear();
        self.after_body(pad);
        Ok(())
    }

    fn real_header(&mut self, mut raw: RawHeader) -> Result<()> {
        let pax = self.local_pax.take().unwrap_or_default();
        header::merge_pax(&mut raw, &pax).map_err(|r| self.invalid(r))?;
        if let Some(name) = self.long_name.take().filter(|n| !n.is_empty()) {
            raw.name = name;
        }
        if let Some(link) = self.long_link.take().filter(|l| !l.is_empty()) {
            raw.linkname = link;
        }
        if raw.typeflag == typeflag::REG_A {
            raw.typeflag = if raw.name.ends_with(b"/") {
                typeflag::DIR
            } else {
                typeflag::REG
            };
        }
        if !is_header_only(raw.typeflag) && raw.size < 0 {
            return Err(self.invalid("negative size"));
        }
        let physical_size = if is_header_only(raw.typeflag) {
            0
        } else {
            raw.size as u64
        };
        let mut entry = EntryHeader {
            physical_size,
            offset: self.group_start,
            ..EntryHeader::default()
        };

        if raw.typeflag == typeflag::GNU_SPARSE {
            if !raw.is_gnu {
                return Err(self.invalid("old GNU sparse header in a non-GNU archive"));
            }
            raw.size = header::parse_numeric(&self.block[483..495]).map_err(|r| self.invalid(r))?;
            let mut map = Vec::new();
            header::old_gnu_sparse_entries(&self.block[386..482], &mut map)
                .map_err(|r| self.invalid(r))?;
            entry.is_sparse = true;
            entry.sparse_map = Some(map);
            let extended = self.block[482] != 0;
            entry.header = raw;
            entry.pax = pax;
            self.current = entry;
            if extended {
                self.state = State::SparseExt;
                return Ok(());
            }
            return self.finish_real_header();
        }

        // PAX GNU sparse formats, identified as Go's readGNUSparsePAXHeaders does.
        let (major, minor) = (
            pax.get_or_empty(pax::SPARSE_MAJOR),
            pax.get_or_empty(pax::SPARSE_MINOR),
        );
        let sparse_version = match (major, minor) {
            (b"0", b"0" | b"1") => Some(false),
            (b"1", b"0") => Some(true),
            _ if !major.is_empty() || !minor.is_empty() => None,
            _ if !pax.get_or_empty(pax::SPARSE_MAP).is_empty() => Some(false),
            _ => None,
        };
        if let Some(is_1x0) = sparse_version {
            if let Some(name) = pax.get(pax::SPARSE_NAME).filter(|n| !n.is_empty()) {
                raw.name = name.to_vec();
            }
            let size = pax
                .get(pax::SPARSE_SIZE)
                .filter(|s| !s.is_empty())
                .or_else(|| pax.get(pax::SPARSE_REALSIZE));
            if let Some(size) = size.filter(|s| !s.is_empty()) {
                raw.size = header::parse_decimal(size)
                    .ok_or_else(|| self.invalid("bad GNU sparse size"))?;
            }
            entry.is_sparse = true;
            if !is_1x0 {
                entry.sparse_map = Some(header::sparse_map_0x1(&pax).map_err(|r| self.invalid(r))?);
            }
        }
        entry.header = raw;
        entry.pax = pax;
        self.current = entry;
        self.finish_real_header()
    }

    fn finish_real_header(&mut self) -> Result<()> {
        let physical = self.current.physical_size;
        let pad = block_padding(physical);
        if self.current.is_sparse {
            let valid = self
                .current
                .sparse_map
                .as_ref()
                .is_none_or(|m| header::valid_sparse_map(m, self.current.header.size));
            if is_header_only(self.current.header.typeflag)
                || !valid
                || self.current.header.size < 0
            {
                return Err(Error::InvalidHeader {
                    offset: self.current.offset,
                    reason: "invalid sparse map",
                });
            }
            if self.opts.sparse == SparseMode::Reject {
                return Err(Error::InvalidHeader {
                    offset: self.current.offset,
                    reason: "sparse files are not accepted",
                });
            }
            if self.opts.sparse == SparseMode::ExpandLikeGo {
                self.visitor.header(&self.current)?;
                self.emit_pending()?;
                self.mapper = SparseMapper::new(&self.current);
                self.logical_written = 0;
                if self.current.header.size > 0 {
                    self.putter
                        .begin(&self.current.header.name, self.current.header.size as u64)
                        .map_err(|source| Error::Put {
                            name: self.current_name(),
                            source,
                        })?;
                    self.crc.reset();
                }
                self.state = State::ExpandBody {
                    remaining: physical,
                    pad,
                };
                if physical == 0 {
                    self.expand_done(pad)?;
                }
                return Ok(());
            }
            self.visitor.header(&self.current)?;
            self.state = State::RawBody {
                remaining: physical,
                pad,
                file_emitted: false,
            };
            if physical == 0 {
                self.raw_body_done(pad, false)?;
            }
            return Ok(());
        }
        self.visitor.header(&self.current)?;
        self.emit_pending()?;
        if self.current.header.size > 0 {
            self.putter
                .begin(&self.current.header.name, physical)
                .map_err(|source| Error::Put {
                    name: self.current_name(),
                    source,
                })?;
            self.crc.reset();
            self.state = State::Body {
                remaining: physical,
                pad,
            };
            if physical == 0 {
                self.body_done(pad)?;
            }
        } else {
            self.visitor.end_body()?;
            self.emit_file(None)?;
            self.after_body(pad);
        }
        Ok(())
    }

    fn body_done(&mut self, pad: u64) -> Result<()> {
        self.putter.end().map_err(|source| Error::Put {
            name: self.current_name(),
            source,
        })?;
        self.visitor.end_body()?;
        let crc = self.crc.bytes();
        self.emit_file(Some(crc))?;
        self.after_body(pad);
        Ok(())
    }

    /// Expands one chunk of a sparse body into the CRC and the putter, zero-filling holes.
    fn expand_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        if self.current.header.size <= 0 {
            // Go never reads such a body; its bytes end up in the next segment.
            return self.push_pending(chunk);
        }
        let mut mapper = self.mapper.take().expect("set for sparse bodies");
        let name = EntryName(self.current.header.name.clone());
        let (crc, putter, written) = (&mut self.crc, &mut self.putter, &mut self.logical_written);
        let r = mapper.feed(chunk, |at, piece| {
            fill_zeros(crc, putter, written, at).map_err(|source| Error::Put {
                name: name.clone(),
                source,
            })?;
            crc.update(piece);
            putter.write_chunk(piece).map_err(|source| Error::Put {
                name: name.clone(),
                source,
            })?;
            *written += piece.len() as u64;
            Ok(())
        });
        self.mapper = Some(mapper);
        r
    }

    fn expand_done(&mut self, pad: u64) -> Result<()> {
        let mapper = self.mapper.take().expect("set for sparse bodies");
        if self.current.header.size > 0 {
            let logical = mapper.finish()?;
            fill_zeros(
                &mut self.crc,
                &mut self.putter,
                &mut self.logical_written,
                logical,
            )
            .map_err(|source| Error::Put {
                name: self.current_name(),
                source,
            })?;
            return self.body_done(pad);
        }
        self.visitor.end_body()?;
        self.emit_file(None)?;
        self.after_body(pad);
        Ok(())
    }

    fn raw_body_done(&mut self, pad: u64, file_emitted: bool) -> Result<()> {
        self.emit_pending()?;
        if !file_emitted {
            self.emit_file(None)?;
        }
        self.visitor.end_body()?;
        self.after_body(pad);
        Ok(())
    }
}

/// A `Read` adaptor: yields exactly the bytes of `source` while disassembling them.
///
/// Read it to EOF: the last segments are written when the source reports EOF, and only
/// then is the archive known to be complete. Errors (bad header, duplicate path, …) come
/// out of `read` as `io::Error`s wrapping [`Error`]; recover them with [`Error::from_io`].
#[derive(Debug)]
pub struct Disassembler<R, P, F, V = NoVisitor> {
    source: R,
    engine: DisasmEngine<P, F, V>,
    finished: bool,
}

impl<R: Read, P: Packer, F: FilePutter> Disassembler<R, P, F, NoVisitor> {
    /// Disassembles `source` into `packer` and `putter` with default options.
    pub fn new(source: R, packer: P, putter: F) -> Self {
        Self::with_visitor(source, packer, putter, NoVisitor, DisasmOptions::default())
    }
}

impl<R: Read, P: Packer, F: FilePutter, V: EntryVisitor> Disassembler<R, P, F, V> {
    /// Full control: a visitor that sees every header and body, and options.
    pub fn with_visitor(source: R, packer: P, putter: F, visitor: V, opts: DisasmOptions) -> Self {
        Disassembler {
            source,
            engine: DisasmEngine::new(packer, putter, visitor, opts),
            finished: false,
        }
    }

    /// Bytes passed through so far.
    pub fn bytes_read(&self) -> u64 {
        self.engine.offset()
    }

    /// Whether EOF was reached and the metadata completed.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Returns the source, packer, putter and visitor.
    pub fn into_parts(self) -> (R, P, F, V) {
        let (p, f, v) = self.engine.into_parts();
        (self.source, p, f, v)
    }
}

impl<R: Read, P: Packer, F: FilePutter, V: EntryVisitor> Read for Disassembler<R, P, F, V> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.finished || buf.is_empty() {
            return Ok(0);
        }
        let n = loop {
            match self.source.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.engine.finish().map_err(Error::into_io)?;
            self.finished = true;
            return Ok(0);
        }
        self.engine.feed(&buf[..n]).map_err(Error::into_io)?;
        Ok(n)
    }
}

/// Feeds zeros for a hole, from `*written` up to logical offset `to`.
fn fill_zeros<F: FilePutter>(
    crc: &mut Crc64,
    putter: &mut F,
    written: &mut u64,
    to: u64,
) -> io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    while *written < to {
        let n = (to - *written).min(ZEROS.len() as u64) as usize;
        crc.update(&ZEROS[..n]);
        putter.write_chunk(&ZEROS[..n])?;
        *written += n as u64;
    }
    Ok(())
}

/// Read size used by the drivers below: large reads mean few syscalls.
const READ_CHUNK: usize = 1 << 20;

/// Disassembles `source` to EOF, copying every byte to `sink`; returns the byte count.
pub fn disassemble_to<R: Read, W: Write, P: Packer, F: FilePutter, V: EntryVisitor>(
    mut source: R,
    mut sink: W,
    engine: &mut DisasmEngine<P, F, V>,
) -> Result<u64> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Io {
                    context: "reading the tar stream",
                    source: e,
                });
            }
        };
        engine.feed(&buf[..n])?;
        sink.write_all(&buf[..n])
            .map_err(Error::io("writing the tar stream"))?;
    }
    engine.finish()?;
    sink.flush().map_err(Error::io("writing the tar stream"))?;
    Ok(engine.offset())
}

/// Disassembles `source` to EOF with default options; returns the byte count.
pub fn disassemble<R: Read, P: Packer, F: FilePutter>(
    source: R,
    packer: P,
    putter: F,
) -> Result<u64> {
    let mut engine = DisasmEngine::new(packer, putter, NoVisitor, DisasmOptions::default());
    disassemble_to(source, io::sink(), &mut engine)
}
