//! [`TarWriter`]: writes [`Header`]s and payloads, in one of two [`HeaderStyle`]s.
//!
//! * [`HeaderStyle::Minimal`] (the default): ustar headers, with a PAX header only when a
//!   field does not fit (long names, big ids or sizes, sub-second mtimes, xattrs). Output
//!   depends only on the headers given: no user or group names, no access or change times,
//!   and a fixed PAX header name, so the same tree always gives the same bytes.
//! * [`HeaderStyle::Docker`]: what Go's `archive/tar` writes for Docker's `TarWithOptions`
//!   (PAX format requested): owner names, the mode with its file-type bits, the link name
//!   on any kind, sorted PAX records under `dir/PaxHeaders.0/name`, long names only as PAX
//!   records. overlay2's native diff uses it, so that its tars are Docker's byte for byte.

use std::io::{self, Read, Write};

use super::field::{BLOCK, padding};
use super::header::{EntryKind, Header, Time};

/// Largest value of an 8-byte octal field (7 digits).
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (11 digits).
const MAX_OCTAL_12: u64 = 0o77777777777;

/// How headers are laid out. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderStyle {
    /// Deterministic ustar + PAX when needed.
    #[default]
    Minimal,
    /// Go's `archive/tar` PAX format as Docker writes it.
    Docker,
}

/// Writes tar entries to `W`. Call [`TarWriter::finish`] to write the end-of-archive marker.
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
    style: HeaderStyle,
    header_buffer: Vec<u8>,
    copy_buffer: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    /// A writer over `out` in the [`HeaderStyle::Minimal`] style.
    pub fn new(out: W) -> Self {
        TarWriter::with_style(out, HeaderStyle::Minimal)
    }

    /// A writer over `out` in `style`.
    pub fn with_style(out: W, style: HeaderStyle) -> Self {
        TarWriter {
            out,
            style,
            header_buffer: Vec::with_capacity(4 * BLOCK),
            copy_buffer: Vec::new(),
        }
    }

    /// The underlying writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Writes one entry. For regular files `data` must yield at least `header.size` bytes
    /// (exactly that many are written); a shorter source is an error, since the header is
    /// already out.
    pub fn append(&mut self, header: &Header, data: Option<&mut dyn Read>) -> io::Result<()> {
        self.header_buffer.clear();
        encode_header(header, self.style, &mut self.header_buffer);
        self.out.write_all(&self.header_buffer)?;
        let size = payload_size(header);
        if size > 0 {
            let data = data.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "regular file without data")
            })?;
            self.copy_payload(data, size)?;
            self.out
                .write_all(&[0u8; BLOCK][..padding(size) as usize])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn copy_payload(&mut self, data: &mut dyn Read, size: u64) -> io::Result<()> {
        if self.copy_buffer.is_empty() {
            self.copy_buffer = vec![0u8; 256 * 1024];
        }
        let mut left = size;
        while left > 0 {
            let want = left.min(self.copy_buffer.len() as u64) as usize;
            let n = match data.read(&mut self.copy_buffer[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "file shrank while being archived ({left} of {size} bytes missing)"
                        ),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(&self.copy_buffer[..n])?;
            left -= n as u64;
        }
        Ok(())
    }
}

/// The payload bytes written after `header`: a regular file's size, nothing otherwise.
pub fn payload_size(header: &Header) -> u64 {
    if header.kind == EntryKind::Regular {
        header.size.max(0) as u64
    } else {
        0
    }
}

/// Appends `header`'s blocks (a PAX header and its records when needed, then the header
/// block) to `out`, in `style`. The payload and its padding are the caller's.
pub fn encode_header(header: &Header, style: HeaderStyle, out: &mut Vec<u8>) {
    match style {
        HeaderStyle::Minimal => encode_minimal(header, out),
        HeaderStyle::Docker => encode_docker(header, out),
    }
}

fn clamp(value: i64, max: u64) -> u64 {
    (value.max(0) as u64).min(max)
}

fn encode_minimal(h: &Header, out: &mut Vec<u8>) {
    let records = minimal_pax_records(h);
    if !records.is_empty() {
        let mut b = [0u8; BLOCK];
        put_bytes(&mut b[0..100], &minimal_pax_name(&h.name));
        put_octal(&mut b[100..108], 0o644);
        put_octal(&mut b[108..116], 0);
        put_octal(&mut b[116..124], 0);
        put_octal(&mut b[124..136], records.len() as u64);
        put_octal(&mut b[136..148], 0);
        b[156] = b'x';
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        finish_checksum(&mut b);
        out.extend_from_slice(&b);
        out.extend_from_slice(&records);
        out.resize(out.len() + padding(records.len() as u64) as usize, 0);
    }
    let mut b = [0u8; BLOCK];
    put_bytes(&mut b[0..100], &h.name);
    put_octal(&mut b[100..108], u64::from(h.permissions()));
    put_octal(&mut b[108..116], clamp(h.uid, MAX_OCTAL_8));
    put_octal(&mut b[116..124], clamp(h.gid, MAX_OCTAL_8));
    let size = if h.kind.has_payload() { h.size } else { 0 };
    put_octal(&mut b[124..136], clamp(size, MAX_OCTAL_12));
    put_octal(&mut b[136..148], clamp(h.mtime.sec, MAX_OCTAL_12));
    b[156] = h.kind.type_flag();
    put_bytes(&mut b[157..257], &h.link_name);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if matches!(h.kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
        put_octal(&mut b[329..337], clamp(h.dev_major, MAX_OCTAL_8));
        put_octal(&mut b[337..345], clamp(h.dev_minor, MAX_OCTAL_8));
    }
    finish_checksum(&mut b);
    out.extend_from_slice(&b);
}

/// The PAX records a header needs in the minimal style (empty when ustar can hold it).
fn minimal_pax_records(h: &Header) -> Vec<u8> {
    let mut out = Vec::new();
    if h.name.len() > 100 {
        push_record(&mut out, b"path", &h.name);
    }
    if h.link_name.len() > 100 {
        push_record(&mut out, b"linkpath", &h.link_name);
    }
    if h.uid < 0 || h.uid as u64 > MAX_OCTAL_8 {
        push_record(&mut out, b"uid", h.uid.to_string().as_bytes());
    }
    if h.gid < 0 || h.gid as u64 > MAX_OCTAL_8 {
        push_record(&mut out, b"gid", h.gid.to_string().as_bytes());
    }
    if h.kind.has_payload() && h.size as u64 > MAX_OCTAL_12 {
        push_record(&mut out, b"size", h.size.to_string().as_bytes());
    }
    if h.mtime.nsec != 0 || h.mtime.sec < 0 || h.mtime.sec as u64 > MAX_OCTAL_12 {
        push_record(&mut out, b"mtime", format_time(h.mtime).as_bytes());
    }
    for (k, v) in &h.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        push_record(&mut out, &key, v);
    }
    out
}

fn minimal_pax_name(name: &[u8]) -> Vec<u8> {
    let base = name
        .rsplit(|&b| b == b'/')
        .find(|c| !c.is_empty())
        .unwrap_or(b"entry");
    let mut out = b"PaxHeaders/".to_vec();
    out.extend_from_slice(&base[..base.len().min(80)]);
    out
}

/// Go's writer as Docker drives it: `Format: tar.FormatPAX`, mtimes already truncated to
/// the second by Docker, owner names looked up by the caller.
fn encode_docker(h: &Header, out: &mut Vec<u8>) {
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    // PAX format requested: a long or non-ASCII name is a PAX record, never a prefix split.
    if !h.name.is_ascii() || h.name.len() > 100 {
        pax.push((b"path".to_vec(), h.name.clone()));
    }
    if !h.link_name.is_ascii() || h.link_name.len() > 100 {
        pax.push((b"linkpath".to_vec(), h.link_name.clone()));
    }
    if h.size < 0 || h.size as u64 > MAX_OCTAL_12 {
        pax.push((b"size".to_vec(), h.size.to_string().into_bytes()));
    }
    if h.uid < 0 || h.uid as u64 > MAX_OCTAL_8 {
        pax.push((b"uid".to_vec(), h.uid.to_string().into_bytes()));
    }
    if h.gid < 0 || h.gid as u64 > MAX_OCTAL_8 {
        pax.push((b"gid".to_vec(), h.gid.to_string().into_bytes()));
    }
    if h.uname.len() > 32 || !h.uname.is_ascii() {
        pax.push((b"uname".to_vec(), h.uname.clone()));
    }
    if h.gname.len() > 32 || !h.gname.is_ascii() {
        pax.push((b"gname".to_vec(), h.gname.clone()));
    }
    for (k, v) in &h.xattrs {
        pax.push(([&b"SCHILY.xattr."[..], k].concat(), v.clone()));
    }
    if !pax.is_empty() {
        pax.sort();
        let mut records = Vec::new();
        for (k, v) in &pax {
            push_record(&mut records, k, v);
        }
        let (dir, file) = match h.name.iter().rposition(|&b| b == b'/') {
            Some(i) if i + 1 < h.name.len() => (&h.name[..=i], &h.name[i + 1..]),
            _ => (&h.name[..], &b""[..]),
        };
        let mut xname = [dir, b"PaxHeaders.0"].concat();
        if !file.is_empty() {
            xname.push(b'/');
            xname.extend_from_slice(file);
        }
        let mut b = [0u8; BLOCK];
        put_cstr(&mut b[0..100], &to_ascii(&xname));
        put_octal(&mut b[100..108], 0);
        put_octal(&mut b[108..116], 0);
        put_octal(&mut b[116..124], 0);
        put_octal(&mut b[124..136], records.len() as u64);
        put_octal(&mut b[136..148], 0);
        b[156] = b'x';
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        finish_checksum(&mut b);
        out.extend_from_slice(&b);
        out.extend_from_slice(&records);
        out.resize(out.len() + padding(records.len() as u64) as usize, 0);
    }
    let mut b = [0u8; BLOCK];
    put_cstr(&mut b[0..100], &to_ascii(&h.name));
    put_octal(&mut b[100..108], (h.mode as u64) & 0o7_777_777);
    put_octal(&mut b[108..116], non_fitting_as_zero(h.uid, MAX_OCTAL_8));
    put_octal(&mut b[116..124], non_fitting_as_zero(h.gid, MAX_OCTAL_8));
    put_octal(&mut b[124..136], non_fitting_as_zero(h.size, MAX_OCTAL_12));
    put_octal(&mut b[136..148], h.mtime.sec.max(0) as u64);
    b[156] = h.kind.type_flag();
    put_cstr(&mut b[157..257], &to_ascii(&h.link_name));
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    put_cstr(&mut b[265..297], &h.uname);
    put_cstr(&mut b[297..329], &h.gname);
    put_octal(&mut b[329..337], h.dev_major.max(0) as u64);
    put_octal(&mut b[337..345], h.dev_minor.max(0) as u64);
    finish_checksum(&mut b);
    out.extend_from_slice(&b);
}

/// A value the field cannot hold is written as 0 (its PAX record carries it).
fn non_fitting_as_zero(value: i64, max: u64) -> u64 {
    if value < 0 || value as u64 > max {
        0
    } else {
        value as u64
    }
}

/// Go's `toASCII`: drops NULs and non-ASCII bytes.
fn to_ascii(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(|&b| b != 0 && b < 0x80).collect()
}

fn format_time(t: Time) -> String {
    if t.nsec == 0 {
        return t.sec.to_string();
    }
    if t.sec < 0 {
        // -1.25 is sec -2, nsec 750_000_000.
        let frac = 1_000_000_000 - t.nsec;
        return format!("-{}.{:09}", -(t.sec + 1), frac)
            .trim_end_matches('0')
            .to_string();
    }
    format!("{}.{:09}", t.sec, t.nsec)
        .trim_end_matches('0')
        .to_string()
}

/// Appends `"<len> <key>=<value>\n"`, where len counts the whole record including itself.
fn push_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Copies `value` into the field, truncated, without a terminator.
fn put_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Copies `value` (truncated to the field) and NUL-terminates it when there is room, as Go.
fn put_cstr(field: &mut [u8], value: &[u8]) {
    put_bytes(field, value);
    if value.len() < field.len() {
        field[value.len()] = 0;
    }
}

/// Zero-padded octal, NUL-terminated, filling the field (Go `formatOctal`).
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

/// Fills in the checksum: six octal digits, NUL, space (Go's layout).
fn finish_checksum(b: &mut [u8; BLOCK]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    put_octal(&mut b[148..155], u64::from(sum));
    b[155] = b' ';
}

#[cfg(test)]
mod tests {
    use super::super::{Limits, TarReader};
    use super::*;

    #[test]
    fn round_trips_through_our_reader_with_pax() {
        let long = "d/".repeat(80) + "file";
        let mut h = Header::file(long.clone(), 3);
        h.mtime = Time {
            sec: 1_700_000_000,
            nsec: 123_456_789,
        };
        h.uid = 3_000_000;
        h.xattrs.push((b"user.k".to_vec(), b"v".to_vec()));
        let mut w = TarWriter::new(Vec::new());
        w.append(&h, Some(&mut &b"abc"[..])).unwrap();
        w.append(&Header::symlink("l", "/abs/target"), None)
            .unwrap();
        let bytes = w.finish().unwrap();
        let mut r = TarReader::new(&bytes[..], Limits::default());
        let got = r.next_entry().unwrap().unwrap();
        assert_eq!(got.name, long.as_bytes());
        assert_eq!(got.mtime, h.mtime);
        assert_eq!(got.uid, 3_000_000);
        assert_eq!(got.xattrs, h.xattrs);
        let mut data = Vec::new();
        r.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"abc");
        let l = r.next_entry().unwrap().unwrap();
        assert_eq!(
            (l.kind, &l.link_name[..]),
            (EntryKind::Symlink, &b"/abs/target"[..])
        );
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn the_tar_crate_reads_our_output() {
        let mut w = TarWriter::new(Vec::new());
        w.append(&Header::dir("a/"), None).unwrap();
        w.append(&Header::file("a/b", 5), Some(&mut &b"hello"[..]))
            .unwrap();
        let bytes = w.finish().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a/", "a/b"]);
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut out = Vec::new();
        push_record(&mut out, b"path", &[b'x'; 93]);
        let text = String::from_utf8(out.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), out.len());
    }
}
