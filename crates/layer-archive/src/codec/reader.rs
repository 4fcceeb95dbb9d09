//! A streaming tar reader with hard caps, for applying layers.
//!
//! Why not the `tar` crate's `Entries`: it reads GNU long names and PAX headers into memory
//! without a size cap (a 100 MB PAX header is 100 MB of RAM, CVE-2022-2879's shape), and
//! hides the end-of-archive position. This reader accepts what Go's `archive/tar` accepts for
//! layers (ustar, GNU, PAX, v7), caps every extension block, and never buffers a payload.
//!
//! Use: call [`TarReader::next_entry`], then read the entry's payload with
//! [`std::io::Read`] on the reader (it yields exactly the payload bytes, then EOF); the next
//! call skips whatever was not read.

use std::io::{self, Read};

use super::Limits;

/// One tar block.
const BLOCK: usize = 512;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (`0`, NUL, or contiguous `7`).
    Regular,
    /// A hard link to `link_name` (`1`).
    HardLink,
    /// A symbolic link to `link_name` (`2`).
    Symlink,
    /// A character device (`3`).
    CharDevice,
    /// A block device (`4`).
    BlockDevice,
    /// A directory (`5`, or a v7 regular entry whose name ends in `/`).
    Directory,
    /// A FIFO (`6`).
    Fifo,
    /// Any other type flag; appliers refuse these.
    Other(u8),
}

impl EntryKind {
    /// Whether the header's size describes payload bytes that follow. Like Go, links,
    /// devices, directories and FIFOs never carry a payload even if the size field says so.
    pub fn has_payload(self) -> bool {
        matches!(self, EntryKind::Regular | EntryKind::Other(_))
    }

    /// The type flag byte written for this kind.
    pub fn type_flag(self) -> u8 {
        match self {
            EntryKind::Regular => b'0',
            EntryKind::HardLink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::CharDevice => b'3',
            EntryKind::BlockDevice => b'4',
            EntryKind::Directory => b'5',
            EntryKind::Fifo => b'6',
            EntryKind::Other(b) => b,
        }
    }
}

/// A time as seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Time {
    /// Whole seconds (may be negative in hostile input).
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: u32,
}

/// A fully decoded entry header: GNU long names and PAX records already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// The name as written (not cleaned), raw bytes.
    pub name: Vec<u8>,
    /// Link target for hard links and symlinks, raw bytes.
    pub link_name: Vec<u8>,
    /// The entry's kind.
    pub kind: EntryKind,
    /// Permission and setuid/setgid/sticky bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// The size as recorded (PAX `size` wins). Counts toward the applied size even for
    /// header-only kinds, as moby does.
    pub size: u64,
    /// Modification time (PAX `mtime` gives nanoseconds).
    pub mtime: Time,
    /// Access time, only when a PAX `atime` record is present.
    pub atime: Option<Time>,
    /// Device major number.
    pub dev_major: u64,
    /// Device minor number.
    pub dev_minor: u64,
    /// Extended attributes from `SCHILY.xattr.<name>` PAX records, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Payload bytes stored in the archive for this entry (differs from `size` only for
    /// sparse files).
    pub stored_size: u64,
    /// For a sparse file (GNU `S`, or PAX `GNU.sparse.*` 0.0/0.1/1.0): where the payload's
    /// bytes go, in order. The payload is the regions' data back to back; `size` is the
    /// logical size (the file is that long, holes elsewhere).
    pub sparse: Option<Vec<SparseRegion>>,
}

/// One data region of a sparse file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseRegion {
    /// Offset in the file.
    pub offset: u64,
    /// Number of payload bytes stored for it.
    pub length: u64,
}

/// Why a tar stream could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// Reading the underlying stream failed.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    /// The stream ended inside a header or payload.
    #[error("unexpected end of archive ({0})")]
    Truncated(&'static str),
    /// A header is not valid tar.
    #[error("{0}")]
    Malformed(String),
    /// A header exceeds one of the [`Limits`].
    #[error("limit exceeded: {0}")]
    TooLarge(String),
    /// A valid tar feature that layers do not use and we do not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// The streaming reader. See the module doc.
#[derive(Debug)]
pub struct TarReader<R> {
    inner: R,
    limits: Limits,
    /// Payload bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current payload.
    padding: u64,
    /// Set once the end-of-archive marker (or a clean EOF) was seen.
    finished: bool,
    /// Bytes consumed from `inner`.
    position: u64,
}

impl<R: Read> TarReader<R> {
    /// A reader over `inner` with the given caps.
    pub fn new(inner: R, limits: Limits) -> Self {
        TarReader {
            inner,
            limits,
            remaining: 0,
            padding: 0,
            finished: false,
            position: 0,
        }
    }

    /// Bytes consumed from the input so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Reads the next entry header, skipping the unread rest of the previous entry.
    /// `Ok(None)` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<EntryHeader>, TarError> {
        if self.finished {
            return Ok(None);
        }
        self.skip_rest()?;
        if self.finished {
            return Ok(None);
        }
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<PaxRecords> = None;
        let mut block = [0u8; BLOCK];
        let mut extension_blocks = 0u32;
        loop {
            if !self.read_block_or_eof(&mut block)? {
                // Like Go, a clean EOF ends the archive even right after extension headers
                // (they then describe nothing).
                self.finished = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(TarError::Malformed(
                        "end-of-archive marker right after an extension header".into(),
                    ));
                }
                // The second zero block is optional in practice (Go accepts EOF there).
                let mut second = [0u8; BLOCK];
                if self.read_block_or_eof(&mut second)? && second.iter().any(|&b| b != 0) {
                    return Err(TarError::Malformed(
                        "data after a single zero block (corrupt end-of-archive marker)".into(),
                    ));
                }
                self.finished = true;
                return Ok(None);
            }
            verify_checksum(&block)?;
            let flag = block[156];
            let raw_size = parse_number(&block[124..136], "size")?;
            let size = u64::try_from(raw_size)
                .map_err(|_| TarError::Malformed(format!("negative size {raw_size}")))?;
            match flag {
                b'L' | b'K' | b'x' | b'g' => {
                    extension_blocks += 1;
                    if extension_blocks > 8 {
                        return Err(TarError::Malformed(
                            "too many chained extension headers".into(),
                        ));
                    }
                    let cap = if flag == b'x' || flag == b'g' {
                        self.limits.max_pax_bytes
                    } else {
                        self.limits.max_path_bytes as u64 + 1
                    };
                    if size > cap {
                        return Err(TarError::TooLarge(format!(
                            "{} header of {size} bytes (cap {cap})",
                            extension_name(flag)
                        )));
                    }
                    let data = self.read_small_payload(size)?;
                    // A repeated extension header replaces the earlier one, as in Go.
                    match flag {
                        b'L' => long_name = Some(cstr(&data).to_vec()),
                        b'K' => long_link = Some(cstr(&data).to_vec()),
                        b'x' => pax = Some(PaxRecords::parse(&data, &self.limits)?),
                        _ => {
                            // A global header is an entry of its own (Go returns it; moby
                            // skips it). Its records are validated but apply to nothing
                            // we use.
                            let records = PaxRecords::parse(&data, &self.limits)?;
                            let mut global = self.decode(&block, b'g', 0, None, None, None)?;
                            if let Some(path) = records.path {
                                global.name = path;
                            }
                            global.size = 0;
                            self.remaining = 0;
                            self.padding = 0;
                            return Ok(Some(global));
                        }
                    }
                    continue;
                }
                _ => {}
            }
            let pax_v1 = pax.as_ref().is_some_and(|p| p.sparse_major == Some(1));
            let mut header = self.decode(&block, flag, size, long_name, long_link, pax)?;
            // The payload as stored (for sparse files: packed data, not the logical size).
            let packed = header.stored_size;
            self.remaining = if header.kind.has_payload() || flag == b'S' {
                packed
            } else {
                0
            };
            self.padding = padding_for(self.remaining);
            if flag == b'S' {
                header.kind = EntryKind::Regular;
                header.size = non_negative(
                    parse_number(&block[483..495], "sparse realsize")?,
                    "realsize",
                )?;
                let mut regions = Vec::new();
                push_gnu_regions(&block[386..482], &mut regions, &self.limits)?;
                let mut extended = block[482] != 0;
                while extended {
                    let mut ext = [0u8; BLOCK];
                    if !self.read_block_or_eof(&mut ext)? {
                        return Err(TarError::Truncated("inside a GNU sparse map"));
                    }
                    push_gnu_regions(&ext[..504], &mut regions, &self.limits)?;
                    extended = ext[504] != 0;
                }
                header.sparse = Some(regions);
            } else if pax_v1 {
                header.sparse = Some(self.read_sparse_map_v1()?);
            }
            if let Some(regions) = &header.sparse {
                validate_sparse(regions, header.size, self.remaining)?;
            }
            return Ok(Some(header));
        }
    }

    /// PAX sparse 1.0 keeps its map at the start of the payload: decimal numbers, one per
    /// line (count, then offset/length pairs), padded to a block.
    fn read_sparse_map_v1(&mut self) -> Result<Vec<SparseRegion>, TarError> {
        let mut numbers: Vec<u64> = Vec::new();
        let mut current: Option<u64> = None;
        let mut wanted: Option<usize> = None;
        let mut consumed = 0u64;
        let mut block = [0u8; BLOCK];
        while wanted.is_none_or(|w| numbers.len() < w) {
            if self.remaining < BLOCK as u64 {
                return Err(TarError::Malformed(
                    "sparse map runs past the payload".into(),
                ));
            }
            read_exact_or_truncated(&mut self.inner, &mut block, "inside a sparse map")?;
            self.position += BLOCK as u64;
            self.remaining -= BLOCK as u64;
            consumed += BLOCK as u64;
            if consumed > self.limits.max_pax_bytes {
                return Err(TarError::TooLarge(
                    "sparse map larger than the PAX cap".into(),
                ));
            }
            for &b in &block {
                if wanted.is_some_and(|w| numbers.len() >= w) {
                    break;
                }
                match b {
                    b'0'..=b'9' => {
                        let v = current.unwrap_or(0);
                        current = Some(
                            v.checked_mul(10)
                                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                                .ok_or_else(|| {
                                    TarError::Malformed("sparse map number overflows".into())
                                })?,
                        );
                    }
                    b'\n' => {
                        let v = current.take().ok_or_else(|| {
                            TarError::Malformed("empty number in sparse map".into())
                        })?;
                        if wanted.is_none() {
                            let count = usize::try_from(v).unwrap_or(usize::MAX);
                            if count > self.limits.max_sparse_regions {
                                return Err(TarError::TooLarge(format!(
                                    "sparse map of {v} regions (cap {})",
                                    self.limits.max_sparse_regions
                                )));
                            }
                            wanted = Some(count * 2);
                        } else {
                            numbers.push(v);
                        }
                    }
                    _ => return Err(TarError::Malformed("invalid byte in sparse map".into())),
                }
            }
        }
        Ok(numbers
            .chunks(2)
            .map(|p| SparseRegion {
                offset: p[0],
                length: p[1],
            })
            .collect())
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

    fn decode(
        &self,
        block: &[u8; BLOCK],
        flag: u8,
        size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Option<PaxRecords>,
    ) -> Result<EntryHeader, TarError> {
        let mut name = cstr(&block[0..100]).to_vec();
        let prefix = header_prefix(block);
        if !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
        if let Some(n) = long_name {
            name = n;
        }
        let mut link_name = cstr(&block[157..257]).to_vec();
        if let Some(l) = long_link {
            link_name = l;
        }
        let mode = parse_number(&block[100..108], "mode")?;
        let mut uid = non_negative(parse_number(&block[108..116], "uid")?, "uid")?;
        let mut gid = non_negative(parse_number(&block[116..124], "gid")?, "gid")?;
        let mut mtime = Time {
            sec: parse_number(&block[136..148], "mtime")?,
            nsec: 0,
        };
        let (mut dev_major, mut dev_minor) = (0, 0);
        if matches!(flag, b'3' | b'4') {
            dev_major = non_negative(parse_number(&block[329..337], "devmajor")?, "devmajor")?;
            dev_minor = non_negative(parse_number(&block[337..345], "devminor")?, "devminor")?;
        }
        let mut size = size;
        let mut atime = None;
        let mut xattrs = Vec::new();
        let mut sparse = None;
        let mut logical_size = None;
        if let Some(pax) = pax {
            if let Some(n) = &pax.sparse_name {
                name = n.clone();
            }
            match (pax.sparse_major, pax.sparse_minor) {
                (Some(1), Some(0)) => logical_size = pax.sparse_realsize,
                (Some(1), other) => {
                    return Err(TarError::Unsupported(format!(
                        "PAX sparse format 1.{other:?}"
                    )));
                }
                _ if !pax.sparse_numbers.is_empty() => {
                    if pax.sparse_numbers.len() % 2 != 0 {
                        return Err(TarError::Malformed(
                            "odd number of values in a sparse map".into(),
                        ));
                    }
                    sparse = Some(
                        pax.sparse_numbers
                            .chunks(2)
                            .map(|p| SparseRegion {
                                offset: p[0],
                                length: p[1],
                            })
                            .collect::<Vec<_>>(),
                    );
                    logical_size = pax.sparse_realsize.or(pax.sparse_size);
                }
                _ => {}
            }
            if let Some(p) = pax.path {
                name = p;
            }
            if let Some(l) = pax.link_path {
                link_name = l;
            }
            if let Some(s) = pax.size {
                size = s;
            }
            if let Some(u) = pax.uid {
                uid = u;
            }
            if let Some(g) = pax.gid {
                gid = g;
            }
            if let Some(t) = pax.mtime {
                mtime = t;
            }
            atime = pax.atime;
            xattrs = pax.xattrs;
        }
        if name.len() > self.limits.max_path_bytes {
            return Err(TarError::TooLarge(format!(
                "entry name of {} bytes (cap {})",
                name.len(),
                self.limits.max_path_bytes
            )));
        }
        if link_name.len() > self.limits.max_path_bytes {
            return Err(TarError::TooLarge(format!(
                "link target of {} bytes (cap {})",
                link_name.len(),
                self.limits.max_path_bytes
            )));
        }
        if name.is_empty() && flag != b'g' {
            return Err(TarError::Malformed("entry with an empty name".into()));
        }
        let kind = match flag {
            b'0' | b'7' => EntryKind::Regular,
            // v7 archives mark directories only by the trailing slash.
            0 if name.ends_with(b"/") => EntryKind::Directory,
            0 => EntryKind::Regular,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            other => EntryKind::Other(other),
        };
        let stored_size = size;
        if let Some(logical) = logical_size {
            size = logical;
        } else if sparse.is_some() {
            return Err(TarError::Malformed(
                "sparse file without a real size".into(),
            ));
        }
        Ok(EntryHeader {
            stored_size,
            sparse,
            name,
            link_name,
            kind,
            mode: (mode & 0o7777) as u32,
            uid,
            gid,
            size,
            mtime,
            atime,
            dev_major,
            dev_minor,
            xattrs,
        })
    }

    fn skip_rest(&mut self) -> Result<(), TarError> {
        let (payload, padding) = (self.remaining, self.padding);
        self.remaining = 0;
        self.padding = 0;
        if !self.skip(payload)? {
            return Err(TarError::Truncated("inside an entry's payload"));
        }
        // Go accepts an archive that stops inside the padding after the last payload: that
        // is its end.
        if !self.skip(padding)? {
            self.finished = true;
        }
        Ok(())
    }

    /// Discards `n` bytes; `false` if the input ended first.
    fn skip(&mut self, n: u64) -> Result<bool, TarError> {
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
    fn read_block_or_eof(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < BLOCK {
            let n = read_some(&mut self.inner, &mut block[filled..])?;
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(TarError::Truncated("inside a header block"));
            }
            filled += n;
        }
        self.position += BLOCK as u64;
        Ok(true)
    }

    /// Reads an extension payload (already checked against a cap) plus its padding.
    fn read_small_payload(&mut self, size: u64) -> Result<Vec<u8>, TarError> {
        let mut data = vec![0u8; size as usize];
        read_exact_or_truncated(&mut self.inner, &mut data, "inside an extension header")?;
        self.position += size;
        self.remaining = 0;
        self.padding = padding_for(size);
        self.skip_rest()?;
        Ok(data)
    }
}

impl<R: Read> Read for TarReader<R> {
    /// Reads the current entry's payload; EOF at its end.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let n = read_some(&mut self.inner, &mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar stream ended inside an entry's payload",
            ));
        }
        self.remaining -= n as u64;
        self.position += n as u64;
        Ok(n)
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

fn read_exact_or_truncated<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), TarError> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = read_some(r, &mut buf[filled..])?;
        if n == 0 {
            return Err(TarError::Truncated(what));
        }
        filled += n;
    }
    Ok(())
}

fn padding_for(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Appends the regions of an old-GNU sparse map field (24-byte offset/length pairs; an
/// all-zero pair ends it).
fn push_gnu_regions(
    field: &[u8],
    out: &mut Vec<SparseRegion>,
    limits: &Limits,
) -> Result<(), TarError> {
    for pair in field.chunks_exact(24) {
        if pair[0] == 0 && pair[12] == 0 {
            break;
        }
        let offset = non_negative(parse_number(&pair[..12], "sparse offset")?, "sparse offset")?;
        let length = non_negative(parse_number(&pair[12..], "sparse length")?, "sparse length")?;
        if out.len() >= limits.max_sparse_regions {
            return Err(TarError::TooLarge(format!(
                "more than {} sparse regions",
                limits.max_sparse_regions
            )));
        }
        out.push(SparseRegion { offset, length });
    }
    Ok(())
}

/// Regions must be in order, not overlap, end within the file, and account for exactly
/// the stored payload.
fn validate_sparse(regions: &[SparseRegion], size: u64, stored: u64) -> Result<(), TarError> {
    let mut end = 0u64;
    let mut data = 0u64;
    for r in regions {
        let region_end = r
            .offset
            .checked_add(r.length)
            .ok_or_else(|| TarError::Malformed("sparse region overflows".into()))?;
        if r.offset < end || region_end > size {
            return Err(TarError::Malformed(
                "sparse regions out of order or past the file size".into(),
            ));
        }
        end = region_end;
        data += r.length;
    }
    if data != stored {
        return Err(TarError::Malformed(format!(
            "sparse map describes {data} bytes but {stored} are stored"
        )));
    }
    Ok(())
}

fn extension_name(flag: u8) -> &'static str {
    match flag {
        b'L' => "GNU long name",
        b'K' => "GNU long link",
        b'x' => "PAX",
        _ => "PAX global",
    }
}

/// The name prefix of a header, by format (as Go's reader decides it):
/// * ustar/PAX (`ustar\0` `00`): the 155-byte prefix field;
/// * star (ustar magic and a `tar\0` trailer): the 131-byte prefix field;
/// * GNU (`ustar  \0`): none, except for archives from pre-1.8 Go writers that put a prefix
///   where GNU keeps atime/ctime: if those fields do not parse as numbers and the bytes
///   are ASCII, they are the prefix.
fn header_prefix(block: &[u8; BLOCK]) -> &[u8] {
    let magic = &block[257..263];
    if magic == b"ustar\0" {
        if &block[508..512] == b"tar\0" {
            return cstr(&block[345..476]);
        }
        return cstr(&block[345..500]);
    }
    if magic == b"ustar " {
        let times_parse = parse_number(&block[345..357], "atime").is_ok()
            && parse_number(&block[357..369], "ctime").is_ok();
        let prefix = cstr(&block[345..500]);
        if !times_parse && prefix.is_ascii() {
            return prefix;
        }
    }
    &[]
}

/// The bytes of a NUL-terminated field.
fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(end) => &field[..end],
        None => field,
    }
}

fn non_negative(v: i64, what: &str) -> Result<u64, TarError> {
    u64::try_from(v).map_err(|_| TarError::Malformed(format!("negative {what} {v}")))
}

/// Parses a numeric field: octal text, or GNU base-256 when the high bit is set.
fn parse_number(field: &[u8], what: &str) -> Result<i64, TarError> {
    if let Some(&first) = field.first()
        && first & 0x80 != 0
    {
        // Base-256: big-endian two's complement with the marker bit masked off.
        let negative = first & 0x40 != 0;
        let mut value: i128 = if negative { -1 } else { 0 };
        for (i, &b) in field.iter().enumerate() {
            let byte = if i == 0 {
                if negative { b | 0x80 } else { b & 0x7f }
            } else {
                b
            };
            value = (value << 8) | i128::from(byte);
            if !(i64::MIN as i128..=i64::MAX as i128).contains(&value) {
                return Err(TarError::Malformed(format!("{what} field overflows")));
            }
        }
        return Ok(value as i64);
    }
    let text = cstr(field);
    let text = trim_spaces(text);
    if text.is_empty() {
        return Ok(0);
    }
    let mut value: i64 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return Err(TarError::Malformed(format!(
                "invalid octal digit {:?} in {what} field",
                b as char
            )));
        }
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(|| TarError::Malformed(format!("{what} field overflows")))?;
    }
    Ok(value)
}

fn trim_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ' | 0, rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | 0] = s {
        s = rest;
    }
    s
}

fn verify_checksum(block: &[u8; BLOCK]) -> Result<(), TarError> {
    let stored = parse_number(&block[148..156], "checksum")?;
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    if stored != unsigned && stored != signed {
        return Err(TarError::Malformed(format!(
            "header checksum mismatch (stored {stored}, computed {unsigned})"
        )));
    }
    Ok(())
}

/// The PAX records we act on.
#[derive(Debug, Default)]
struct PaxRecords {
    path: Option<Vec<u8>>,
    link_path: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Time>,
    atime: Option<Time>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse_major: Option<u64>,
    sparse_minor: Option<u64>,
    sparse_name: Option<Vec<u8>>,
    sparse_realsize: Option<u64>,
    sparse_size: Option<u64>,
    /// Offset/length values in order (0.0: repeated offset/numbytes; 0.1: the map).
    sparse_numbers: Vec<u64>,
}

impl PaxRecords {
    fn parse(mut data: &[u8], limits: &Limits) -> Result<Self, TarError> {
        let mut records = PaxRecords::default();
        let mut xattr_bytes = 0usize;
        while !data.is_empty() {
            let space = data
                .iter()
                .position(|&b| b == b' ')
                .ok_or_else(|| TarError::Malformed("PAX record without a length".into()))?;
            let len: usize = std::str::from_utf8(&data[..space])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| TarError::Malformed("PAX record with a bad length".into()))?;
            if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
                return Err(TarError::Malformed("PAX record length out of range".into()));
            }
            let record = &data[space + 1..len - 1];
            data = &data[len..];
            let eq = record
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| TarError::Malformed("PAX record without '='".into()))?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            if value.is_empty() && !key.starts_with(b"SCHILY.xattr.") {
                // An empty value keeps the header's own field (Go's mergePAX).
                continue;
            }
            match key {
                b"path" | b"linkpath" | b"uname" | b"gname" if value.contains(&0) => {
                    return Err(TarError::Malformed(format!(
                        "NUL byte in PAX {} record",
                        String::from_utf8_lossy(key)
                    )));
                }
                b"path" => records.path = Some(value.to_vec()),
                b"linkpath" => records.link_path = Some(value.to_vec()),
                b"size" => records.size = Some(pax_u64(value, "size")?),
                b"uid" => records.uid = Some(pax_u64(value, "uid")?),
                b"gid" => records.gid = Some(pax_u64(value, "gid")?),
                b"mtime" => records.mtime = Some(pax_time(value)?),
                b"atime" => records.atime = Some(pax_time(value)?),
                b"GNU.sparse.major" => records.sparse_major = Some(pax_u64(value, "sparse major")?),
                b"GNU.sparse.minor" => records.sparse_minor = Some(pax_u64(value, "sparse minor")?),
                b"GNU.sparse.name" => records.sparse_name = Some(value.to_vec()),
                b"GNU.sparse.realsize" => {
                    records.sparse_realsize = Some(pax_u64(value, "sparse realsize")?)
                }
                b"GNU.sparse.size" => records.sparse_size = Some(pax_u64(value, "sparse size")?),
                b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                    records
                        .sparse_numbers
                        .push(pax_u64(value, "sparse region")?);
                }
                b"GNU.sparse.map" => {
                    for part in value.split(|&b| b == b',') {
                        records.sparse_numbers.push(pax_u64(part, "sparse map")?);
                    }
                }
                _ if key.starts_with(b"GNU.sparse.") => {}
                _ if key.starts_with(b"SCHILY.xattr.") => {
                    let name = &key[b"SCHILY.xattr.".len()..];
                    if name.is_empty() || name.len() > 255 || name.contains(&0) {
                        return Err(TarError::Malformed(
                            "invalid xattr name in PAX record".into(),
                        ));
                    }
                    if value.len() > limits.max_xattr_value_bytes {
                        return Err(TarError::TooLarge(format!(
                            "xattr {} value of {} bytes (cap {})",
                            String::from_utf8_lossy(name),
                            value.len(),
                            limits.max_xattr_value_bytes
                        )));
                    }
                    xattr_bytes += name.len() + value.len();
                    if records.xattrs.len() >= limits.max_xattrs
                        || xattr_bytes > limits.max_xattr_total_bytes
                    {
                        return Err(TarError::TooLarge(format!(
                            "more than {} xattrs or {} xattr bytes on one entry",
                            limits.max_xattrs, limits.max_xattr_total_bytes
                        )));
                    }
                    records.xattrs.push((name.to_vec(), value.to_vec()));
                }
                _ => {}
            }
        }
        if records.sparse_numbers.len() / 2 > limits.max_sparse_regions {
            return Err(TarError::TooLarge(format!(
                "sparse map of {} regions (cap {})",
                records.sparse_numbers.len() / 2,
                limits.max_sparse_regions
            )));
        }
        Ok(records)
    }
}

fn pax_u64(value: &[u8], what: &str) -> Result<u64, TarError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            TarError::Malformed(format!(
                "invalid PAX {what} {:?}",
                String::from_utf8_lossy(value)
            ))
        })
}

/// Parses a PAX time, `[-]sec[.frac]`.
fn pax_time(value: &[u8]) -> Result<Time, TarError> {
    let bad = || {
        TarError::Malformed(format!(
            "invalid PAX time {:?}",
            String::from_utf8_lossy(value)
        ))
    };
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let sec: i64 = whole.parse().map_err(|_| bad())?;
    let mut nsec: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nsec += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    // A negative time with a fraction counts down from the whole second.
    if whole.starts_with('-') && nsec != 0 {
        return Ok(Time {
            sec: sec - 1,
            nsec: 1_000_000_000 - nsec,
        });
    }
    Ok(Time { sec, nsec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_base256_numbers() {
        assert_eq!(parse_number(b"0000644\0", "mode").unwrap(), 0o644);
        assert_eq!(parse_number(b"   755 \0", "mode").unwrap(), 0o755);
        assert_eq!(parse_number(b"\0\0\0\0", "mode").unwrap(), 0);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 0x01;
        big[10] = 0x02;
        assert_eq!(parse_number(&big, "size").unwrap(), 0x0201);
        assert!(parse_number(b"0009", "mode").is_err());
        assert_eq!(parse_number(&[0xff; 8], "mtime").unwrap(), -1);
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            pax_time(b"12.5").unwrap(),
            Time {
                sec: 12,
                nsec: 500_000_000
            }
        );
        assert_eq!(
            pax_time(b"12.123456789123").unwrap(),
            Time {
                sec: 12,
                nsec: 123_456_789
            }
        );
        assert_eq!(
            pax_time(b"-1.25").unwrap(),
            Time {
                sec: -2,
                nsec: 750_000_000
            }
        );
        assert!(pax_time(b"x").is_err());
    }
}
