//! Decoding of 512-byte tar header blocks and PAX records, with Go `archive/tar` semantics.
//!
//! tar-split's JSON records `hdr.Name` and `hdr.Size` exactly as Go's reader reports them,
//! and which archives it rejects is part of the observable behaviour, so the rules here
//! follow the Go 1.11 reader that tar-split forked: checksum (signed or unsigned), format
//! guessing from the magic, octal/base-256 numbers, NUL-terminated strings, the USTAR
//! prefix, the pre-Go-1.8 GNU fallback, PAX record syntax and which PAX keys override what.

/// Size of a tar block.
pub const BLOCK: usize = 512;

/// Typeflags with a meaning for the reader.
pub mod typeflag {
    /// Regular file (old form: NUL).
    pub const REG_A: u8 = 0;
    /// Regular file.
    pub const REG: u8 = b'0';
    /// Hard link.
    pub const LINK: u8 = b'1';
    /// Symbolic link.
    pub const SYMLINK: u8 = b'2';
    /// Character device.
    pub const CHAR: u8 = b'3';
    /// Block device.
    pub const BLOCK: u8 = b'4';
    /// Directory.
    pub const DIR: u8 = b'5';
    /// FIFO.
    pub const FIFO: u8 = b'6';
    /// PAX extended header for the next entry.
    pub const PAX_LOCAL: u8 = b'x';
    /// PAX global extended header.
    pub const PAX_GLOBAL: u8 = b'g';
    /// GNU long name for the next entry.
    pub const GNU_LONG_NAME: u8 = b'L';
    /// GNU long link target for the next entry.
    pub const GNU_LONG_LINK: u8 = b'K';
    /// Old GNU sparse file.
    pub const GNU_SPARSE: u8 = b'S';
}

/// Types whose header `size` is ignored by the reader: no body follows them.
pub fn is_header_only(flag: u8) -> bool {
    use typeflag::*;
    matches!(flag, LINK | SYMLINK | CHAR | BLOCK | DIR | FIFO)
}

/// Padding needed after `size` bytes of body to reach a block boundary.
pub fn block_padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Which header layout a block uses, as Go guesses it from the magic fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// No or unknown magic: pre-POSIX V7.
    V7,
    /// `ustar\0` + `00`: USTAR or PAX.
    Ustar,
    /// `ustar\0` with the `tar\0` trailer: Schily star.
    Star,
    /// `ustar ` + ` \0`: GNU.
    Gnu,
}

/// Why a block is not a valid header; becomes [`crate::Error::InvalidHeader`].
pub type Reason = &'static str;

/// The fields of one header block, decoded.
#[derive(Debug, Clone, Default)]
pub struct RawHeader {
    /// Typeflag byte.
    pub typeflag: u8,
    /// Name, prefix-joined for USTAR/star.
    pub name: Vec<u8>,
    /// Link target.
    pub linkname: Vec<u8>,
    /// The size field (physical body size unless overridden by PAX).
    pub size: i64,
    /// Permission and mode bits.
    pub mode: i64,
    /// Owner id.
    pub uid: i64,
    /// Group id.
    pub gid: i64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Owner name.
    pub uname: Vec<u8>,
    /// Group name.
    pub gname: Vec<u8>,
    /// Device major number.
    pub devmajor: i64,
    /// Device minor number.
    pub devminor: i64,
    /// True when the magic says GNU (needed for old GNU sparse).
    pub is_gnu: bool,
}

/// Whether a block is all zeros (an end-of-archive marker).
pub fn is_zero_block(block: &[u8; BLOCK]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// Cuts a field at its first NUL, like Go's `parser.parseString`.
pub fn cstr(field: &[u8]) -> &[u8] {
    match memchr(0, field) {
        Some(i) => &field[..i],
        None => field,
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

/// Parses an octal field after trimming spaces and NULs (Go `parseOctal`).
fn parse_octal(field: &[u8]) -> Result<i64, Reason> {
    let trimmed = trim(field, |b| b == b' ' || b == 0);
    if trimmed.is_empty() {
        return Ok(0);
    }
    let digits = cstr(trimmed);
    if digits.is_empty() {
        return Err("empty octal number");
    }
    let mut x: u64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return Err("bad octal digit in numeric field");
        }
        x = x
            .checked_mul(8)
            .and_then(|x| x.checked_add(u64::from(d - b'0')))
            .ok_or("numeric field overflows")?;
    }
    Ok(x as i64)
}

fn trim(mut s: &[u8], strip: impl Fn(u8) -> bool) -> &[u8] {
    while let [first, rest @ ..] = s {
        if strip(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if strip(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Parses a numeric field: base-256 when the high bit is set, else octal (Go `parseNumeric`).
pub fn parse_numeric(field: &[u8]) -> Result<i64, Reason> {
    match field.first() {
        Some(&first) if first & 0x80 != 0 => {
            let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
            let mut x: u64 = 0;
            for (i, &c) in field.iter().enumerate() {
                let mut c = c ^ inv;
                if i == 0 {
                    c &= 0x7f;
                }
                if x >> 56 > 0 {
                    return Err("base-256 field overflows");
                }
                x = x << 8 | u64::from(c);
            }
            if x >> 63 > 0 {
                return Err("base-256 field overflows");
            }
            Ok(if inv == 0xff { !(x as i64) } else { x as i64 })
        }
        _ => parse_octal(field),
    }
}

fn checksums(block: &[u8; BLOCK]) -> (i64, i64) {
    // Sum all bytes, then swap the checksum field's bytes for spaces. The signed sum is the
    // unsigned one minus 256 for every byte >= 0x80. Written as plain loops over the whole
    // block so the compiler vectorises them: this runs once per header.
    let field = &block[148..156];
    let all_unsigned: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let all_high = block.iter().filter(|&&b| b >= 0x80).count() as i64;
    let field_unsigned: u32 = field.iter().map(|&b| u32::from(b)).sum();
    let field_high = field.iter().filter(|&&b| b >= 0x80).count() as i64;
    let unsigned = i64::from(all_unsigned) - i64::from(field_unsigned) + 8 * i64::from(b' ');
    let signed = unsigned - 256 * (all_high - field_high);
    (unsigned, signed)
}

/// Verifies the checksum and guesses the format (Go `block.GetFormat`); `None` = invalid.
pub fn format_of(block: &[u8; BLOCK]) -> Option<Format> {
    let stored = parse_octal(&block[148..156]).ok()?;
    let (u, s) = checksums(block);
    if stored != u && stored != s {
        return None;
    }
    let magic = &block[257..263];
    let version = &block[263..265];
    let star_trailer = &block[508..512];
    Some(if magic == b"ustar\0" && star_trailer == b"tar\0" {
        Format::Star
    } else if magic == b"ustar\0" {
        Format::Ustar
    } else if magic == b"ustar " && version == b" \0" {
        Format::Gnu
    } else {
        Format::V7
    })
}

/// Decodes a non-zero header block (Go `Reader.readHeader` after the zero-block check).
pub fn parse_header(block: &[u8; BLOCK]) -> Result<RawHeader, Reason> {
    let format = format_of(block).ok_or("checksum mismatch or not a tar header")?;
    let mut first_err: Option<Reason> = None;
    let mut num = |field: &[u8]| match parse_numeric(field) {
        Ok(v) => v,
        Err(e) => {
            first_err.get_or_insert(e);
            0
        }
    };
    let mut h = RawHeader {
        typeflag: block[156],
        name: cstr(&block[0..100]).to_vec(),
        linkname: cstr(&block[157..257]).to_vec(),
        size: num(&block[124..136]),
        mode: num(&block[100..108]),
        uid: num(&block[108..116]),
        gid: num(&block[116..124]),
        mtime: num(&block[136..148]),
        is_gnu: format == Format::Gnu,
        ..RawHeader::default()
    };
    if format != Format::V7 {
        h.uname = cstr(&block[265..297]).to_vec();
        h.gname = cstr(&block[297..329]).to_vec();
        h.devmajor = num(&block[329..337]);
        h.devminor = num(&block[337..345]);
        let prefix: &[u8] = match format {
            Format::Ustar => cstr(&block[345..500]),
            Format::Star => cstr(&block[345..476]),
            Format::Gnu => {
                // Go parses atime/ctime "skeptically": if they do not parse and the field
                // looks like an ASCII prefix, it is one (headers from the pre-1.8 Go writer).
                let times_ok = (block[345] == 0 || parse_numeric(&block[345..357]).is_ok())
                    && (block[357] == 0 || parse_numeric(&block[357..369]).is_ok());
                let p = cstr(&block[345..500]);
                if !times_ok && p.is_ascii() { p } else { &[] }
            }
            Format::V7 => &[],
        };
        if !prefix.is_empty() {
            let mut joined = Vec::with_capacity(prefix.len() + 1 + h.name.len());
            joined.extend_from_slice(prefix);
            joined.push(b'/');
            joined.extend_from_slice(&h.name);
            h.name = joined;
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(h),
    }
}

/// PAX keys the reader acts on.
pub mod pax {
    /// Overrides the name.
    pub const PATH: &[u8] = b"path";
    /// Overrides the link target.
    pub const LINKPATH: &[u8] = b"linkpath";
    /// Overrides the size.
    pub const SIZE: &[u8] = b"size";
    /// Owner name.
    pub const UNAME: &[u8] = b"uname";
    /// Group name.
    pub const GNAME: &[u8] = b"gname";
    /// Owner id.
    pub const UID: &[u8] = b"uid";
    /// Group id.
    pub const GID: &[u8] = b"gid";
    /// Times.
    pub const MTIME: &[u8] = b"mtime";
    /// Access time.
    pub const ATIME: &[u8] = b"atime";
    /// Change time.
    pub const CTIME: &[u8] = b"ctime";
    /// GNU sparse 0.0 per-region keys, folded into `GNU.sparse.map`.
    pub const SPARSE_OFFSET: &[u8] = b"GNU.sparse.offset";
    /// See [`SPARSE_OFFSET`].
    pub const SPARSE_NUMBYTES: &[u8] = b"GNU.sparse.numbytes";
    /// GNU sparse 0.1 map.
    pub const SPARSE_MAP: &[u8] = b"GNU.sparse.map";
    /// GNU sparse real name.
    pub const SPARSE_NAME: &[u8] = b"GNU.sparse.name";
    /// GNU sparse format major version.
    pub const SPARSE_MAJOR: &[u8] = b"GNU.sparse.major";
    /// GNU sparse format minor version.
    pub const SPARSE_MINOR: &[u8] = b"GNU.sparse.minor";
    /// GNU sparse logical size (1.0).
    pub const SPARSE_REALSIZE: &[u8] = b"GNU.sparse.realsize";
    /// GNU sparse logical size (0.x).
    pub const SPARSE_SIZE: &[u8] = b"GNU.sparse.size";
    /// GNU sparse 0.1 region count.
    pub const SPARSE_NUMBLOCKS: &[u8] = b"GNU.sparse.numblocks";
}

/// PAX records of one extended header, in order; later duplicates win on lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaxRecords(pub Vec<(Vec<u8>, Vec<u8>)>);

impl PaxRecords {
    /// The last value recorded for `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The value for `key`, or empty (Go's map lookup of a missing key).
    pub fn get_or_empty(&self, key: &[u8]) -> &[u8] {
        self.get(key).unwrap_or(&[])
    }
}

/// Parses a PAX extended-header body (Go `parsePAX`).
pub fn parse_pax(mut body: &[u8]) -> Result<PaxRecords, Reason> {
    let mut records = Vec::new();
    let mut sparse_map: Vec<&[u8]> = Vec::new();
    while !body.is_empty() {
        let sp = memchr(b' ', body).ok_or("PAX record without a length")?;
        let n = parse_decimal(&body[..sp]).ok_or("bad PAX record length")?;
        if n < 5 || n as u64 > body.len() as u64 || (sp as i64 + 1) > n - 1 {
            return Err("bad PAX record length");
        }
        let n = n as usize;
        let (record, nl, rest) = (&body[sp + 1..n - 1], body[n - 1], &body[n..]);
        if nl != b'\n' {
            return Err("PAX record does not end in a newline");
        }
        let eq = memchr(b'=', record).ok_or("PAX record without '='")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let nul_checked = match key {
            pax::PATH | pax::LINKPATH | pax::UNAME | pax::GNAME => value,
            _ => key,
        };
        if key.is_empty() || memchr(0, nul_checked).is_some() {
            return Err("invalid PAX record key or value");
        }
        body = rest;
        if key == pax::SPARSE_OFFSET || key == pax::SPARSE_NUMBYTES {
            let expect_offset = sparse_map.len().is_multiple_of(2);
            if (expect_offset != (key == pax::SPARSE_OFFSET)) || memchr(b',', value).is_some() {
                return Err("invalid GNU sparse 0.0 records");
            }
            sparse_map.push(value);
        } else {
            records.push((key.to_vec(), value.to_vec()));
        }
    }
    if !sparse_map.is_empty() {
        records.push((pax::SPARSE_MAP.to_vec(), sparse_map.join(&b","[..])));
    }
    Ok(PaxRecords(records))
}

/// Go `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits, no overflow.
pub fn parse_decimal(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut x: i128 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        x = x * 10 + i128::from(d - b'0');
        if x > i128::from(i64::MAX) + 1 {
            return None;
        }
    }
    let x = if neg { -x } else { x };
    i64::try_from(x).ok()
}

/// Go `parsePAXTime` validation: decimal seconds, optional `.` and digits.
fn valid_pax_time(s: &[u8]) -> bool {
    let (secs, frac) = match memchr(b'.', s) {
        Some(p) => (&s[..p], Some(&s[p + 1..])),
        None => (s, None),
    };
    if parse_decimal(secs).is_none() {
        return false;
    }
    frac.is_none_or(|f| f.iter().all(u8::is_ascii_digit))
}

/// Applies PAX records to a header (Go `mergePAX`); records with empty values are ignored.
pub fn merge_pax(h: &mut RawHeader, records: &PaxRecords) -> Result<(), Reason> {
    // Go iterates a map, so for duplicate keys only the last value counts.
    for (i, (key, value)) in records.0.iter().enumerate() {
        if value.is_empty() || records.0[i + 1..].iter().any(|(k, _)| k == key) {
            continue;
        }
        let bad = "invalid PAX record value";
        match key.as_slice() {
            pax::PATH => h.name = value.clone(),
            pax::LINKPATH => h.linkname = value.clone(),
            pax::UNAME => h.uname = value.clone(),
            pax::GNAME => h.gname = value.clone(),
            pax::UID => h.uid = parse_decimal(value).ok_or(bad)?,
            pax::GID => h.gid = parse_decimal(value).ok_or(bad)?,
            pax::SIZE => h.size = parse_decimal(value).ok_or(bad)?,
            pax::MTIME => {
                if !valid_pax_time(value) {
                    return Err(bad);
                }
                if let Some(secs) = parse_decimal(value.split(|&b| b == b'.').next().unwrap_or(&[]))
                {
                    h.mtime = secs;
                }
            }
            pax::ATIME | pax::CTIME if !valid_pax_time(value) => return Err(bad),
            _ => {}
        }
    }
    Ok(())
}

/// One region of a sparse file's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseRegion {
    /// Logical offset of the data.
    pub offset: i64,
    /// Length of the data.
    pub length: i64,
}

/// Go `validateSparseEntries`: non-negative, in order, non-overlapping, within `size`.
pub fn valid_sparse_map(map: &[SparseRegion], size: i64) -> bool {
    if size < 0 {
        return false;
    }
    let mut prev_end = 0i64;
    for r in map {
        if r.offset < 0 || r.length < 0 {
            return false;
        }
        let Some(end) = r.offset.checked_add(r.length) else {
            return false;
        };
        if end > size || prev_end > r.offset {
            return false;
        }
        prev_end = end;
    }
    true
}

/// Parses the 0.0/0.1 sparse map from PAX records (Go `readGNUSparseMap0x1`).
pub fn sparse_map_0x1(records: &PaxRecords) -> Result<Vec<SparseRegion>, Reason> {
    let bad = "invalid GNU sparse map";
    let count = parse_decimal(records.get_or_empty(pax::SPARSE_NUMBLOCKS)).ok_or(bad)?;
    if count < 0 {
        return Err(bad);
    }
    let map = records.get_or_empty(pax::SPARSE_MAP);
    let fields: Vec<&[u8]> = if map.is_empty() {
        Vec::new()
    } else {
        map.split(|&b| b == b',').collect()
    };
    if fields.len() as i64 != count.saturating_mul(2) {
        return Err(bad);
    }
    fields
        .chunks(2)
        .map(|pair| {
            Ok(SparseRegion {
                offset: parse_decimal(pair[0]).ok_or(bad)?,
                length: parse_decimal(pair[1]).ok_or(bad)?,
            })
        })
        .collect()
}

/// Parses up to `max` sparse entries of 24 bytes each from an old-GNU area.
pub fn old_gnu_sparse_entries(area: &[u8], out: &mut Vec<SparseRegion>) -> Result<(), Reason> {
    for entry in area.chunks_exact(24) {
        if entry[0] == 0 {
            break;
        }
        out.push(SparseRegion {
            offset: parse_numeric(&entry[..12])?,
            length: parse_numeric(&entry[12..])?,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_the_definition() {
        let mut block = [0u8; BLOCK];
        for (i, b) in block.iter_mut().enumerate() {
            *b = (i * 131 % 256) as u8;
        }
        let (mut u, mut s) = (0i64, 0i64);
        for (i, &c) in block.iter().enumerate() {
            let c = if (148..156).contains(&i) { b' ' } else { c };
            u += i64::from(c);
            s += i64::from(c as i8);
        }
        assert_eq!(checksums(&block), (u, s));
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"0000644\0"), Ok(0o644));
        assert_eq!(parse_numeric(b"  12 \0"), Ok(0o12));
        assert_eq!(parse_numeric(b"\0\0\0\0"), Ok(0));
        assert!(parse_numeric(b"0009\0").is_err());
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Ok(1 << 32)
        );
        assert_eq!(parse_numeric(&[0xff; 8]), Ok(-1));
        assert!(parse_numeric(&[0x80, 0x80, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn decimal_like_go_parse_int() {
        assert_eq!(parse_decimal(b"123"), Some(123));
        assert_eq!(parse_decimal(b"-5"), Some(-5));
        assert_eq!(parse_decimal(b"+5"), Some(5));
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"1_0"), None);
        assert_eq!(parse_decimal(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_decimal(b"9223372036854775808"), None);
        assert_eq!(parse_decimal(b"-9223372036854775808"), Some(i64::MIN));
    }

    #[test]
    fn pax_records() {
        let r = parse_pax(b"30 mtime=1350244992.023960108\n6 a=b\n").unwrap();
        assert_eq!(r.get(b"mtime"), Some(&b"1350244992.023960108"[..]));
        assert_eq!(r.get(b"a"), Some(&b"b"[..]));
        assert!(parse_pax(b"13 path=a\0b\n").is_err());
        assert!(parse_pax(b"6 a=b").is_err());
        assert!(parse_pax(b"6 a=bX").is_err());
        let s = parse_pax(b"23 GNU.sparse.offset=0\n25 GNU.sparse.numbytes=5\n").unwrap();
        assert_eq!(s.get(pax::SPARSE_MAP), Some(&b"0,5"[..]));
    }
}
