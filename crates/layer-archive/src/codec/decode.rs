//! [`Decoder`]: the one tar header parser, push-style and without I/O.
//!
//! It follows Go's `Reader.next` step by step: header blocks, PAX (`x`, `g`) and GNU (`L`,
//! `K`) extension headers, old GNU sparse extension blocks, the merge of PAX records and
//! long names into the entry's header, the legacy NUL type flag, and the detection of the
//! GNU sparse formats. The caller does the I/O: it feeds whole blocks and extension bodies
//! as the decoder asks for them ([`Step`]) and skips payloads and padding itself, so one
//! decoder serves both the pull-style [`super::TarReader`] and tarsplit's push-style
//! disassembler, byte for byte the same decisions.

use super::Limits;
use super::error::TarError;
use super::field::{
    Block, Format, cstr, format_of, is_ascii_cstring, is_zero_block, parse_decimal, parse_numeric,
};
use super::header::{EntryKind, Header, SparseRegion, Time, Xattrs};
use super::pax::{PaxRecords, key, parse_time};
use super::sparse::{map_from_records, push_old_gnu_regions, regions_are_valid};

/// What the decoder needs next, or what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Feed the next 512-byte block to [`Decoder::block`].
    NeedBlock,
    /// Read an extension header's body of this many bytes and feed it to
    /// [`Decoder::extension_body`]; its padding follows it in the archive.
    NeedExtensionBody(u64),
    /// A complete entry. Its stored payload ([`Header::stored_size`] bytes, then padding to
    /// the block) follows; for PAX 1.0 sparse files it starts with the map
    /// ([`super::sparse::MapReader`]).
    Entry(Box<Header>),
    /// The end-of-archive marker (two zero blocks).
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    SecondZero,
    ExtensionBody(u8),
    SparseBlock,
    End,
}

/// The push-style header parser. See the module doc.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    state: State,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<PaxRecords>,
    extensions: usize,
    /// The name of a pending `g` header (its own entry once its body is read).
    global_name: Vec<u8>,
    /// An old GNU sparse entry whose map continues in extension blocks.
    pending_sparse: Option<(Box<Header>, Vec<SparseRegion>)>,
}

impl Decoder {
    /// A decoder applying `limits`.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            state: State::Header,
            long_name: None,
            long_link: None,
            pax: None,
            extensions: 0,
            global_name: Vec::new(),
            pending_sparse: None,
        }
    }

    /// The caps in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the end-of-archive marker was seen.
    pub fn is_end(&self) -> bool {
        self.state == State::End
    }

    /// Whether the decoder stands between two entries (or after one zero block), where Go
    /// takes the end of the input for the end of the archive. Extension headers read
    /// since then are dropped, as Go drops them.
    pub fn at_entry_boundary(&self) -> bool {
        matches!(self.state, State::Header | State::SecondZero | State::End)
    }

    /// The input ended at a block boundary: `Ok` where Go ends the archive cleanly.
    pub fn eof(&mut self) -> Result<(), TarError> {
        match self.state {
            State::Header | State::SecondZero | State::End => {
                self.state = State::End;
                Ok(())
            }
            State::ExtensionBody(_) => Err(TarError::Truncated("an extension header's body")),
            State::SparseBlock => Err(TarError::Truncated("an old GNU sparse map")),
        }
    }

    /// Feeds the next block.
    pub fn block(&mut self, block: &Block) -> Result<Step, TarError> {
        match self.state {
            State::Header => {
                if is_zero_block(block) {
                    self.state = State::SecondZero;
                    return Ok(Step::NeedBlock);
                }
                self.header_block(block)
            }
            State::SecondZero => {
                if !is_zero_block(block) {
                    return Err(TarError::header(
                        "a zero block followed by a non-zero block",
                    ));
                }
                self.state = State::End;
                Ok(Step::End)
            }
            State::SparseBlock => {
                let (header, mut regions) = self.pending_sparse.take().expect("set with the state");
                push_old_gnu_regions(&block[..504], &mut regions, self.limits.max_sparse_regions)?;
                if block[504] != 0 {
                    self.pending_sparse = Some((header, regions));
                    return Ok(Step::NeedBlock);
                }
                self.state = State::Header;
                self.finish_sparse(header, regions)
            }
            State::ExtensionBody(_) => Err(TarError::header(
                "decoder misuse: a block fed where an extension body was due",
            )),
            State::End => Err(TarError::header(
                "decoder misuse: a block fed after the end",
            )),
        }
    }

    /// Feeds the body of the extension header announced by [`Step::NeedExtensionBody`].
    pub fn extension_body(&mut self, body: &[u8]) -> Result<Step, TarError> {
        let State::ExtensionBody(flag) = self.state else {
            return Err(TarError::header(
                "decoder misuse: an extension body fed where none was due",
            ));
        };
        self.state = State::Header;
        match flag {
            b'x' => {
                // A later `x` header replaces an earlier one whole, as in Go.
                self.pax = Some(PaxRecords::parse(body).map_err(TarError::header)?);
            }
            b'g' => {
                let records = PaxRecords::parse(body).map_err(TarError::header)?;
                return Ok(Step::Entry(Box::new(self.global_entry(records)?)));
            }
            b'L' => self.long_name = Some(cstr(body).to_vec()).filter(|n| !n.is_empty()),
            _ => self.long_link = Some(cstr(body).to_vec()).filter(|n| !n.is_empty()),
        }
        Ok(Step::NeedBlock)
    }

    /// A PAX global header: an entry of its own, named by its raw name or its `path`
    /// record, carrying only its records and xattrs (Go). Pending extensions are dropped.
    fn global_entry(&mut self, records: PaxRecords) -> Result<Header, TarError> {
        let mut name = std::mem::take(&mut self.global_name);
        if let Some(path) = records.get(key::PATH).filter(|p| !p.is_empty()) {
            name = path.to_vec();
        }
        let mut header = Header::new(name, EntryKind::GlobalExtension);
        header.mode = 0;
        header.mtime = Time::default();
        header.xattrs = xattrs_of(&records, &self.limits)?;
        header.pax = records;
        self.reset_extensions();
        Ok(header)
    }

    fn reset_extensions(&mut self) {
        self.long_name = None;
        self.long_link = None;
        self.pax = None;
        self.extensions = 0;
    }

    fn header_block(&mut self, block: &Block) -> Result<Step, TarError> {
        let format =
            format_of(block).ok_or(TarError::header("checksum mismatch: not a tar header"))?;
        let raw = RawFields::decode(block, format)?;
        let flag = block[156];
        // Go checks the raw size before anything else (`handleRegularFile`).
        if !is_header_only_flag(flag) && raw.size < 0 {
            return Err(TarError::header("negative size"));
        }
        match flag {
            b'x' | b'g' | b'L' | b'K' => {
                self.extensions += 1;
                if self.extensions > self.limits.max_extension_headers {
                    return Err(TarError::limit(format!(
                        "too many chained extension headers (more than {})",
                        self.limits.max_extension_headers
                    )));
                }
                let size = raw.size as u64;
                if size > self.limits.max_special_file_bytes {
                    return Err(TarError::FieldTooLong {
                        what: extension_name(flag),
                        size,
                        limit: self.limits.max_special_file_bytes,
                    });
                }
                if flag == b'g' {
                    self.global_name = raw.name;
                }
                self.state = State::ExtensionBody(flag);
                Ok(Step::NeedExtensionBody(size))
            }
            _ => self.entry(block, format, flag, raw),
        }
    }

    fn entry(
        &mut self,
        block: &Block,
        format: Format,
        flag: u8,
        raw: RawFields,
    ) -> Result<Step, TarError> {
        let pax = self.pax.take().unwrap_or_default();
        let long_name = self.long_name.take();
        let long_link = self.long_link.take();
        self.extensions = 0;
        let mut h = Header::new(Vec::new(), EntryKind::Regular);
        h.name = raw.name;
        h.link_name = raw.link_name;
        h.mode = raw.mode;
        h.uid = raw.uid;
        h.gid = raw.gid;
        h.uname = raw.uname;
        h.gname = raw.gname;
        h.size = raw.size;
        h.mtime = Time::from_secs(raw.mtime);
        h.atime = raw.atime.map(Time::from_secs);
        h.ctime = raw.ctime.map(Time::from_secs);
        h.dev_major = raw.dev_major;
        h.dev_minor = raw.dev_minor;
        merge_pax(&mut h, &pax, &self.limits)?;
        if let Some(name) = long_name {
            h.name = name;
        }
        if let Some(link) = long_link {
            h.link_name = link;
        }
        h.kind = EntryKind::from_type_flag(flag, &h.name);
        if h.kind.has_payload() && h.size < 0 {
            return Err(TarError::header("negative size"));
        }
        h.stored_size = if h.kind.has_payload() {
            h.size as u64
        } else {
            0
        };
        h.pax = pax;
        if flag == b'S' {
            if format != Format::Gnu {
                return Err(TarError::header("old GNU sparse header in a non-GNU block"));
            }
            h.size = parse_numeric(&block[483..495])
                .map_err(|_| TarError::header("bad sparse real size"))?;
            let mut regions = Vec::new();
            push_old_gnu_regions(
                &block[386..482],
                &mut regions,
                self.limits.max_sparse_regions,
            )?;
            let header = Box::new(h);
            if block[482] != 0 {
                self.pending_sparse = Some((header, regions));
                self.state = State::SparseBlock;
                return Ok(Step::NeedBlock);
            }
            return self.finish_sparse(header, regions);
        }
        match pax_sparse_version(&h.pax) {
            None => {
                self.check_names(&h)?;
                Ok(Step::Entry(Box::new(h)))
            }
            Some(version) => {
                if let Some(name) = h.pax.get(key::SPARSE_NAME).filter(|n| !n.is_empty()) {
                    h.name = name.to_vec();
                }
                let size = match h.pax.get_or_empty(key::SPARSE_SIZE) {
                    b"" => h.pax.get_or_empty(key::SPARSE_REALSIZE),
                    size => size,
                };
                if !size.is_empty() {
                    h.size = parse_decimal(size).ok_or(TarError::header("bad GNU sparse size"))?;
                }
                if version == SparseVersion::V1_0 {
                    // The map is the start of the payload: the reader reads and checks it.
                    h.sparse_map_in_payload = true;
                    self.check_names(&h)?;
                    return Ok(Step::Entry(Box::new(h)));
                }
                let regions = map_from_records(&h.pax, self.limits.max_sparse_regions)?;
                self.finish_sparse(Box::new(h), regions)
            }
        }
    }

    fn finish_sparse(
        &mut self,
        mut h: Box<Header>,
        regions: Vec<SparseRegion>,
    ) -> Result<Step, TarError> {
        check_sparse(&h, &regions)?;
        h.sparse = Some(regions);
        self.check_names(&h)?;
        Ok(Step::Entry(h))
    }

    fn check_names(&self, h: &Header) -> Result<(), TarError> {
        let cap = self.limits.max_path_bytes;
        for (what, value) in [("entry name", &h.name), ("link target", &h.link_name)] {
            if value.len() > cap {
                return Err(TarError::limit(format!(
                    "{what} of {} bytes (cap {cap})",
                    value.len()
                )));
            }
        }
        Ok(())
    }
}

/// Go's check of a sparse entry's map (`handleSparseFile`): a header-only kind cannot be
/// sparse; the regions must be valid for the logical size.
pub fn check_sparse(h: &Header, regions: &[SparseRegion]) -> Result<(), TarError> {
    if h.kind.is_header_only() || !regions_are_valid(regions, h.size) {
        return Err(TarError::header("invalid sparse map"));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SparseVersion {
    V0x,
    V1_0,
}

/// Which PAX sparse format the records announce (Go `readGNUSparsePAXHeaders`).
fn pax_sparse_version(pax: &PaxRecords) -> Option<SparseVersion> {
    let (major, minor) = (
        pax.get_or_empty(key::SPARSE_MAJOR),
        pax.get_or_empty(key::SPARSE_MINOR),
    );
    match (major, minor) {
        (b"0", b"0" | b"1") => Some(SparseVersion::V0x),
        (b"1", b"0") => Some(SparseVersion::V1_0),
        _ if !major.is_empty() || !minor.is_empty() => None,
        // 0.0 and 0.1 had no version records: a map says it.
        _ if !pax.get_or_empty(key::SPARSE_MAP).is_empty() => Some(SparseVersion::V0x),
        _ => None,
    }
}

/// Go `isHeaderOnlyType` on a raw flag byte (before the legacy NUL flag is resolved).
fn is_header_only_flag(flag: u8) -> bool {
    matches!(flag, b'1'..=b'6')
}

fn extension_name(flag: u8) -> &'static str {
    match flag {
        b'L' => "GNU long name",
        b'K' => "GNU long link",
        b'x' => "PAX header",
        _ => "PAX global header",
    }
}

/// Applies PAX records to a header (Go `mergePAX`): an empty value keeps the header's own
/// field; a numeric or time value that does not parse is an invalid header.
fn merge_pax(h: &mut Header, pax: &PaxRecords, limits: &Limits) -> Result<(), TarError> {
    let bad = |what| TarError::header(what);
    for (k, v) in pax.iter() {
        if v.is_empty() {
            continue;
        }
        match k {
            key::PATH => h.name = v.to_vec(),
            key::LINKPATH => h.link_name = v.to_vec(),
            key::UNAME => h.uname = v.to_vec(),
            key::GNAME => h.gname = v.to_vec(),
            key::UID => h.uid = parse_decimal(v).ok_or(bad("bad PAX uid"))?,
            key::GID => h.gid = parse_decimal(v).ok_or(bad("bad PAX gid"))?,
            key::SIZE => h.size = parse_decimal(v).ok_or(bad("bad PAX size"))?,
            key::MTIME => h.mtime = parse_time(v).ok_or(bad("bad PAX mtime"))?,
            key::ATIME => h.atime = Some(parse_time(v).ok_or(bad("bad PAX atime"))?),
            key::CTIME => h.ctime = Some(parse_time(v).ok_or(bad("bad PAX ctime"))?),
            _ => {}
        }
    }
    h.xattrs = xattrs_of(pax, limits)?;
    Ok(())
}

/// The `SCHILY.xattr.*` records with a value, within the caps.
fn xattrs_of(pax: &PaxRecords, limits: &Limits) -> Result<Xattrs, TarError> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for (k, v) in pax.iter() {
        let Some(name) = k.strip_prefix(key::XATTR_PREFIX) else {
            continue;
        };
        if v.is_empty() {
            continue;
        }
        if v.len() > limits.max_xattr_value_bytes {
            return Err(TarError::limit(format!(
                "xattr {} value of {} bytes (cap {})",
                String::from_utf8_lossy(name),
                v.len(),
                limits.max_xattr_value_bytes
            )));
        }
        total += name.len() + v.len();
        if out.len() >= limits.max_xattrs || total > limits.max_xattr_total_bytes {
            return Err(TarError::limit(format!(
                "more than {} xattrs or {} xattr bytes on one entry",
                limits.max_xattrs, limits.max_xattr_total_bytes
            )));
        }
        out.push((name.to_vec(), v.to_vec()));
    }
    Ok(out)
}

/// The fields of one header block before extensions apply (Go `readHeader`).
struct RawFields {
    name: Vec<u8>,
    link_name: Vec<u8>,
    size: i64,
    mode: i64,
    uid: i64,
    gid: i64,
    mtime: i64,
    uname: Vec<u8>,
    gname: Vec<u8>,
    dev_major: i64,
    dev_minor: i64,
    atime: Option<i64>,
    ctime: Option<i64>,
}

impl RawFields {
    fn decode(block: &Block, format: Format) -> Result<Self, TarError> {
        let mut bad = false;
        let mut num = |field: &[u8]| {
            parse_numeric(field).unwrap_or_else(|_| {
                bad = true;
                0
            })
        };
        let mut f = RawFields {
            name: cstr(&block[0..100]).to_vec(),
            link_name: cstr(&block[157..257]).to_vec(),
            size: num(&block[124..136]),
            mode: num(&block[100..108]),
            uid: num(&block[108..116]),
            gid: num(&block[116..124]),
            mtime: num(&block[136..148]),
            uname: Vec::new(),
            gname: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            atime: None,
            ctime: None,
        };
        if format != Format::V7 {
            f.uname = cstr(&block[265..297]).to_vec();
            f.gname = cstr(&block[297..329]).to_vec();
            f.dev_major = num(&block[329..337]);
            f.dev_minor = num(&block[337..345]);
            let prefix: &[u8] = match format {
                Format::Ustar => cstr(&block[345..500]),
                Format::Star => {
                    f.atime = Some(num(&block[476..488]));
                    f.ctime = Some(num(&block[488..500]));
                    cstr(&block[345..476])
                }
                Format::Gnu => {
                    // atime/ctime, parsed "skeptically": if either does not parse and the
                    // area reads as an ASCII string, it is a prefix from a pre-Go-1.8 writer.
                    let mut times_bad = false;
                    let mut time = |field: &[u8]| {
                        if field[0] == 0 {
                            return None;
                        }
                        match parse_numeric(field) {
                            Ok(v) => Some(v),
                            Err(_) => {
                                times_bad = true;
                                Some(0)
                            }
                        }
                    };
                    f.atime = time(&block[345..357]);
                    f.ctime = time(&block[357..369]);
                    let area = cstr(&block[345..500]);
                    if times_bad {
                        f.atime = None;
                        f.ctime = None;
                        if is_ascii_cstring(area) { area } else { &[] }
                    } else {
                        &[]
                    }
                }
                Format::V7 => &[],
            };
            if !prefix.is_empty() {
                let mut joined = Vec::with_capacity(prefix.len() + 1 + f.name.len());
                joined.extend_from_slice(prefix);
                joined.push(b'/');
                joined.extend_from_slice(&f.name);
                f.name = joined;
            }
        }
        if bad {
            return Err(TarError::header("bad numeric field"));
        }
        Ok(f)
    }
}
