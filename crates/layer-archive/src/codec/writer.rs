//! A small deterministic tar writer: ustar headers, with a PAX header only when a field does
//! not fit (long names, big ids or sizes, sub-second mtimes, xattrs).
//!
//! Output depends only on the headers given: no user or group names, no access or change
//! times, and a fixed PAX header name, so the same tree always gives the same bytes.

use std::io::{self, Read, Write};

use super::reader::{EntryKind, Time};

const BLOCK: usize = 512;
/// Largest value of an 8-byte octal field (7 digits).
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (11 digits).
const MAX_OCTAL_12: u64 = 0o77777777777;

/// One entry to write. Names are relative (`etc/hosts`; directories may end in `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarHeader {
    /// Entry name, raw bytes.
    pub name: Vec<u8>,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Payload size (regular files only; 0 otherwise).
    pub size: u64,
    /// Modification time. Sub-second parts are written as a PAX `mtime` record.
    pub mtime: Time,
    /// Link target for symlinks and hard links.
    pub link_name: Vec<u8>,
    /// Device major.
    pub dev_major: u64,
    /// Device minor.
    pub dev_minor: u64,
    /// xattrs, written as `SCHILY.xattr.<name>` PAX records in this order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl TarHeader {
    /// A header of `kind` named `name` with everything else zero (mode 0644 for files, 0755
    /// for directories).
    pub fn new(name: impl Into<Vec<u8>>, kind: EntryKind) -> Self {
        let mode = if kind == EntryKind::Directory {
            0o755
        } else {
            0o644
        };
        TarHeader {
            name: name.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: Time::default(),
            link_name: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        }
    }

    /// A regular file of `size` bytes.
    pub fn file(name: impl Into<Vec<u8>>, size: u64) -> Self {
        TarHeader {
            size,
            ..TarHeader::new(name, EntryKind::Regular)
        }
    }

    /// A directory.
    pub fn dir(name: impl Into<Vec<u8>>) -> Self {
        TarHeader::new(name, EntryKind::Directory)
    }

    /// A symlink to `target`.
    pub fn symlink(name: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Self {
        TarHeader {
            link_name: target.into(),
            mode: 0o777,
            ..TarHeader::new(name, EntryKind::Symlink)
        }
    }

    /// A hard link to `target`.
    pub fn hardlink(name: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Self {
        TarHeader {
            link_name: target.into(),
            ..TarHeader::new(name, EntryKind::HardLink)
        }
    }
}

/// Writes tar entries to `W`. Call [`TarWriter::finish`] to write the end-of-archive marker.
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
    copy_buffer: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    /// A writer over `out`.
    pub fn new(out: W) -> Self {
        TarWriter {
            out,
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
    pub fn append(&mut self, header: &TarHeader, data: Option<&mut dyn Read>) -> io::Result<()> {
        let records = pax_records(header);
        if !records.is_empty() {
            let mut pax = TarHeader::new(pax_name(&header.name), EntryKind::Other(b'x'));
            pax.size = records.len() as u64;
            self.write_header(&pax)?;
            self.out.write_all(&records)?;
            self.pad(records.len() as u64)?;
        }
        self.write_header(header)?;
        let size = if header.kind == EntryKind::Regular {
            header.size
        } else {
            0
        };
        if size > 0 {
            let data = data.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "regular file without data")
            })?;
            self.copy_payload(data, size)?;
            self.pad(size)?;
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

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn write_header(&mut self, h: &TarHeader) -> io::Result<()> {
        let mut b = [0u8; BLOCK];
        put_bytes(&mut b[0..100], &h.name);
        put_octal(&mut b[100..108], u64::from(h.mode & 0o7777));
        put_octal(&mut b[108..116], h.uid.min(MAX_OCTAL_8));
        put_octal(&mut b[116..124], h.gid.min(MAX_OCTAL_8));
        let size = if matches!(h.kind, EntryKind::Regular | EntryKind::Other(_)) {
            h.size
        } else {
            0
        };
        put_octal(&mut b[124..136], size.min(MAX_OCTAL_12));
        put_octal(
            &mut b[136..148],
            (h.mtime.sec.max(0) as u64).min(MAX_OCTAL_12),
        );
        b[156] = h.kind.type_flag();
        put_bytes(&mut b[157..257], &h.link_name);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        if matches!(h.kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
            put_octal(&mut b[329..337], h.dev_major.min(MAX_OCTAL_8));
            put_octal(&mut b[337..345], h.dev_minor.min(MAX_OCTAL_8));
        }
        b[148..156].fill(b' ');
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        put_octal(&mut b[148..155], u64::from(sum));
        b[155] = b' ';
        self.out.write_all(&b)
    }
}

/// The PAX records a header needs (empty when plain ustar can hold it).
fn pax_records(h: &TarHeader) -> Vec<u8> {
    let mut out = Vec::new();
    if h.name.len() > 100 {
        push_record(&mut out, b"path", &h.name);
    }
    if h.link_name.len() > 100 {
        push_record(&mut out, b"linkpath", &h.link_name);
    }
    if h.uid > MAX_OCTAL_8 {
        push_record(&mut out, b"uid", h.uid.to_string().as_bytes());
    }
    if h.gid > MAX_OCTAL_8 {
        push_record(&mut out, b"gid", h.gid.to_string().as_bytes());
    }
    if h.kind == EntryKind::Regular && h.size > MAX_OCTAL_12 {
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

fn pax_name(name: &[u8]) -> Vec<u8> {
    let base = name
        .rsplit(|&b| b == b'/')
        .find(|c| !c.is_empty())
        .unwrap_or(b"entry");
    let mut out = b"PaxHeaders/".to_vec();
    out.extend_from_slice(&base[..base.len().min(80)]);
    out
}

fn put_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal, NUL-terminated, filling the field.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::super::{Limits, TarReader};
    use super::*;

    #[test]
    fn round_trips_through_our_reader_with_pax() {
        let long = "d/".repeat(80) + "file";
        let mut h = TarHeader::file(long.clone(), 3);
        h.mtime = Time {
            sec: 1_700_000_000,
            nsec: 123_456_789,
        };
        h.uid = 3_000_000;
        h.xattrs.push((b"user.k".to_vec(), b"v".to_vec()));
        let mut w = TarWriter::new(Vec::new());
        w.append(&h, Some(&mut &b"abc"[..])).unwrap();
        w.append(&TarHeader::symlink("l", "/abs/target"), None)
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
        w.append(&TarHeader::dir("a/"), None).unwrap();
        w.append(&TarHeader::file("a/b", 5), Some(&mut &b"hello"[..]))
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
