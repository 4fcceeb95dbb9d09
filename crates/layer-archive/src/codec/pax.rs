//! PAX extended headers: record syntax and keys, as Go's `archive/tar` parses them
//! (`parsePAX`, `parsePAXRecord`, `parsePAXTime`).

use super::field::parse_decimal;
use super::header::Time;

/// PAX keys with a meaning for the reader.
pub mod key {
    /// Overrides the name.
    pub const PATH: &[u8] = b"path";
    /// Overrides the link target.
    pub const LINKPATH: &[u8] = b"linkpath";
    /// Overrides the size.
    pub const SIZE: &[u8] = b"size";
    /// Overrides the owner name.
    pub const UNAME: &[u8] = b"uname";
    /// Overrides the group name.
    pub const GNAME: &[u8] = b"gname";
    /// Overrides the owner id.
    pub const UID: &[u8] = b"uid";
    /// Overrides the group id.
    pub const GID: &[u8] = b"gid";
    /// Overrides the modification time.
    pub const MTIME: &[u8] = b"mtime";
    /// Overrides the access time.
    pub const ATIME: &[u8] = b"atime";
    /// Overrides the change time.
    pub const CTIME: &[u8] = b"ctime";
    /// Prefix of extended attributes: `SCHILY.xattr.<name>`.
    pub const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
    /// GNU sparse 0.0, one record per region offset (folded into [`SPARSE_MAP`]).
    pub const SPARSE_OFFSET: &[u8] = b"GNU.sparse.offset";
    /// GNU sparse 0.0, one record per region length (folded into [`SPARSE_MAP`]).
    pub const SPARSE_NUMBYTES: &[u8] = b"GNU.sparse.numbytes";
    /// GNU sparse 0.1 map: `offset,length,...`.
    pub const SPARSE_MAP: &[u8] = b"GNU.sparse.map";
    /// GNU sparse 0.x region count.
    pub const SPARSE_NUMBLOCKS: &[u8] = b"GNU.sparse.numblocks";
    /// GNU sparse real name (honoured only on a sparse entry).
    pub const SPARSE_NAME: &[u8] = b"GNU.sparse.name";
    /// GNU sparse format major version.
    pub const SPARSE_MAJOR: &[u8] = b"GNU.sparse.major";
    /// GNU sparse format minor version.
    pub const SPARSE_MINOR: &[u8] = b"GNU.sparse.minor";
    /// GNU sparse logical size (0.x; wins over `realsize` when both are there).
    pub const SPARSE_SIZE: &[u8] = b"GNU.sparse.size";
    /// GNU sparse logical size (1.0).
    pub const SPARSE_REALSIZE: &[u8] = b"GNU.sparse.realsize";
}

/// The records of one extended header with Go's map semantics: one value per key, the last
/// duplicate wins. Keys keep the position of their first occurrence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaxRecords(Vec<(Vec<u8>, Vec<u8>)>);

impl PaxRecords {
    /// The value recorded for `key` (possibly empty: an empty value is a record too).
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The value for `key`, empty when absent (Go's lookup in a map).
    pub fn get_or_empty(&self, key: &[u8]) -> &[u8] {
        self.get(key).unwrap_or(&[])
    }

    /// Every `(key, value)`, each key once.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => {
                v.clear();
                v.extend_from_slice(value);
            }
            None => self.0.push((key.to_vec(), value.to_vec())),
        }
    }

    /// Parses an extended header's body (Go `parsePAX`). GNU sparse 0.0 `offset`/`numbytes`
    /// pairs are folded into one `GNU.sparse.map` record, replacing any explicit one.
    pub fn parse(mut body: &[u8]) -> Result<Self, &'static str> {
        let mut records = PaxRecords::default();
        let mut sparse_map: Vec<&[u8]> = Vec::new();
        while !body.is_empty() {
            let (key, value, rest) = parse_record(body)?;
            body = rest;
            if key == key::SPARSE_OFFSET || key == key::SPARSE_NUMBYTES {
                let want_offset = sparse_map.len().is_multiple_of(2);
                if want_offset != (key == key::SPARSE_OFFSET) || value.contains(&b',') {
                    return Err("invalid GNU sparse 0.0 records");
                }
                sparse_map.push(value);
            } else {
                records.insert(key, value);
            }
        }
        if !sparse_map.is_empty() {
            records.insert(key::SPARSE_MAP, &sparse_map.join(&b","[..]));
        }
        Ok(records)
    }
}

/// A record's key and value, and the rest of the body after it.
type Record<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// One `"<len> <key>=<value>\n"` record (Go `parsePAXRecord`): the length counts the whole
/// record; keys may not be empty or hold NUL; the values of `path`, `linkpath`, `uname`
/// and `gname` may not hold NUL either.
fn parse_record(s: &[u8]) -> Result<Record<'_>, &'static str> {
    let space = s
        .iter()
        .position(|&b| b == b' ')
        .ok_or("PAX record without a length")?;
    let len = parse_decimal(&s[..space]).ok_or("bad PAX record length")?;
    if len < 5 || len > s.len() as i64 || len - (space as i64 + 1) <= 0 {
        return Err("bad PAX record length");
    }
    let len = len as usize;
    let (record, newline, rest) = (&s[space + 1..len - 1], s[len - 1], &s[len..]);
    if newline != b'\n' {
        return Err("PAX record does not end in a newline");
    }
    let eq = record
        .iter()
        .position(|&b| b == b'=')
        .ok_or("PAX record without '='")?;
    let (k, v) = (&record[..eq], &record[eq + 1..]);
    let nul_checked = match k {
        key::PATH | key::LINKPATH | key::UNAME | key::GNAME => v,
        _ => k,
    };
    if k.is_empty() || nul_checked.contains(&0) {
        return Err("invalid PAX record key or value");
    }
    Ok((k, v, rest))
}

/// A PAX time, `[-]sec[.frac]` (Go `parsePAXTime`): fractions past nanoseconds are cut; a
/// negative time with a fraction counts back from the whole second.
pub fn parse_time(value: &[u8]) -> Option<Time> {
    let (whole, frac) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &[][..]),
    };
    let sec = parse_decimal(whole)?;
    if frac.is_empty() {
        return Some(Time { sec, nsec: 0 });
    }
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nsec: i64 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    if whole.first() == Some(&b'-') {
        return Some(Time::from_unix(sec, -nsec));
    }
    Some(Time::from_unix(sec, nsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_duplicates() {
        let r = PaxRecords::parse(b"30 mtime=1350244992.023960108\n6 a=b\n6 a=c\n5 a=\n").unwrap();
        assert_eq!(r.get(b"mtime"), Some(&b"1350244992.023960108"[..]));
        // The last duplicate wins, even when it is empty.
        assert_eq!(r.get(b"a"), Some(&b""[..]));
        assert!(PaxRecords::parse(b"13 path=a\0b\n").is_err());
        assert!(PaxRecords::parse(b"6 a=b").is_err());
        assert!(PaxRecords::parse(b"6 a=bX").is_err());
        assert!(PaxRecords::parse(b"5 =b\n").is_err());
        assert!(PaxRecords::parse(b"+7 a=b\n").is_ok());
        let s = PaxRecords::parse(b"23 GNU.sparse.offset=0\n25 GNU.sparse.numbytes=5\n").unwrap();
        assert_eq!(s.get(key::SPARSE_MAP), Some(&b"0,5"[..]));
        assert!(PaxRecords::parse(b"25 GNU.sparse.numbytes=5\n").is_err());
    }

    #[test]
    fn times() {
        let t = |s: &[u8]| parse_time(s).map(|t| (t.sec, t.nsec));
        assert_eq!(t(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(t(b"12.123456789123"), Some((12, 123_456_789)));
        assert_eq!(t(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t(b"-0.5"), Some((-1, 500_000_000)));
        assert_eq!(t(b"5."), Some((5, 0)));
        assert_eq!(t(b"+5"), Some((5, 0)));
        assert_eq!(t(b"x"), None);
        assert_eq!(t(b".5"), None);
        assert_eq!(t(b"1.5x"), None);
    }
}
