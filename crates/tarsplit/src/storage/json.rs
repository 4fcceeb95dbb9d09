//! Go-compatible NDJSON encoding of entries: [`JsonPacker`] and [`JsonUnpacker`].
//!
//! The packer writes exactly what Go's `json.Encoder` writes for `storage.Entry` (key order,
//! omitempty rules, `null` payloads, HTML-safe escaping as go1.19 does it), so our output
//! gunzipped equals the v0.12.1 goldens byte for byte. The unpacker accepts everything Go's
//! decoder accepts here: any whitespace between objects, case-insensitive keys, unknown
//! keys, base64 with escaped CR/LF inside.

use std::io::{BufRead, Read, Write};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{Entry, EntryKind, Packer, Unpacker};
use crate::error::{Error, Result};
use crate::seen::SeenPaths;

/// Largest JSON object the unpacker buffers. Legitimate lines are at most a few MiB of
/// base64 (a 1 MiB trailing chunk, or a header group under the disassembler's cap).
pub const MAX_JSON_OBJECT: usize = 64 << 20;

/// Writes entries as Go tar-split JSON lines to `W` (Go `storage.NewJSONPacker`).
///
/// Rejects a second file entry whose cleaned name was seen before with
/// [`Error::DuplicatePath`], writing nothing and not using up a position.
#[derive(Debug)]
pub struct JsonPacker<W: Write> {
    out: W,
    line: Vec<u8>,
    position: i64,
    seen: SeenPaths,
}

impl<W: Write> JsonPacker<W> {
    /// A packer writing to `out` (wrap it in a `BufWriter` or gzip encoder).
    pub fn new(out: W) -> Self {
        JsonPacker {
            out,
            line: Vec::with_capacity(PACKER_BUFFER + 4096),
            position: 0,
            seen: SeenPaths::default(),
        }
    }

    /// Writes out buffered lines and returns the writer. Call [`Packer::flush`] first to
    /// see write errors; the disassembler does so when the archive ends.
    pub fn into_inner(mut self) -> W {
        let _ = self.write_buffered();
        self.out
    }

    /// The writer (lines may still be buffered in the packer until [`Packer::flush`]).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// Lines are collected up to this size before one write to the underlying writer.
const PACKER_BUFFER: usize = 64 << 10;

impl<W: Write> Packer for JsonPacker<W> {
    fn add_entry(&mut self, entry: &Entry) -> Result<i64> {
        if entry.kind == EntryKind::File {
            self.seen.insert(&entry.name)?;
        }
        encode_entry(&mut self.line, entry, self.position);
        if self.line.len() >= PACKER_BUFFER {
            self.write_buffered()?;
        }
        self.position += 1;
        Ok(self.position - 1)
    }

    fn flush(&mut self) -> Result<()> {
        self.write_buffered()?;
        self.out
            .flush()
            .map_err(Error::io("writing tar-split metadata"))
    }
}

impl<W: Write> JsonPacker<W> {
    fn write_buffered(&mut self) -> Result<()> {
        self.out
            .write_all(&self.line)
            .map_err(Error::io("writing tar-split metadata"))?;
        self.line.clear();
        Ok(())
    }
}

/// Appends one entry as Go's `json.Encoder.Encode` would write it, newline included.
pub fn encode_entry(out: &mut Vec<u8>, entry: &Entry, position: i64) {
    out.extend_from_slice(b"{\"type\":");
    push_int(out, entry.kind.code());
    if !entry.name.is_empty() {
        match std::str::from_utf8(&entry.name) {
            Ok(name) => {
                out.extend_from_slice(b",\"name\":\"");
                push_escaped(out, name);
                out.push(b'"');
            }
            Err(_) => {
                out.extend_from_slice(b",\"name_raw\":\"");
                push_base64(out, &entry.name);
                out.push(b'"');
            }
        }
    }
    if entry.size != 0 {
        out.extend_from_slice(b",\"size\":");
        push_int(out, entry.size);
    }
    out.extend_from_slice(b",\"payload\":");
    match &entry.payload {
        Some(p) => {
            out.push(b'"');
            push_base64(out, p);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"position\":");
    push_int(out, position);
    out.extend_from_slice(b"}\n");
}

fn push_int(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_base64(out: &mut Vec<u8>, data: &[u8]) {
    super::b64::encode_into(out, data);
}

/// The bytes [`push_escaped`] must look at: those it escapes, and 0xE2, which may start
/// U+2028 or U+2029.
static NEEDS_LOOK: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'&' as usize] = true;
    t[0xe2] = true;
    t
};

/// Go 1.19 `encodeState.string` with HTML escaping on a valid UTF-8 string.
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !NEEDS_LOOK[usize::from(b)] {
            // Most bytes of most names: one table look each.
            i += 1;
            continue;
        }
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f | b'<' | b'>' | b'&' => Some(b""),
            // U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR: E2 80 A8/A9.
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(if bytes[i + 2] == 0xa8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
                start = i;
                continue;
            }
            _ => None,
        };
        if let Some(esc) = escape {
            out.extend_from_slice(&bytes[start..i]);
            if esc.is_empty() {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            } else {
                out.extend_from_slice(esc);
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Reads Go tar-split JSON entries from `R` (Go `storage.NewJSONUnpacker`).
///
/// Applies the same duplicate-path rule as the packer, when the second entry is read.
#[derive(Debug)]
pub struct JsonUnpacker<R: BufRead> {
    input: R,
    buf: Vec<u8>,
    pos: usize,
    index: u64,
    seen: SeenPaths,
    eof: bool,
    /// Lines the general path copied out of the reader (checked by a test).
    #[cfg(test)]
    copied_lines: usize,
}

impl<R: BufRead> JsonUnpacker<R> {
    /// An unpacker over `input` (already decompressed; see [`super::gzip_reader`]).
    pub fn new(input: R) -> Self {
        JsonUnpacker {
            input,
            buf: Vec::with_capacity(1 << 16),
            pos: 0,
            index: 0,
            seen: SeenPaths::default(),
            eof: false,
            #[cfg(test)]
            copied_lines: 0,
        }
    }

    fn meta_err(&self, message: impl Into<String>) -> Error {
        Error::Metadata {
            index: self.index,
            message: message.into(),
        }
    }

    /// Reads one more line into the buffer; false at end of input.
    fn fill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let before = self.buf.len();
        // Read line by line, but never more than the object cap in one go.
        let mut limited = Read::take(
            &mut self.input,
            (MAX_JSON_OBJECT + 1 - before.min(MAX_JSON_OBJECT)) as u64,
        );
        let n = limited
            .read_until(b'\n', &mut self.buf)
            .map_err(Error::io("reading tar-split metadata"))?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        #[cfg(test)]
        {
            self.copied_lines += 1;
        }
        if self.buf.len() > MAX_JSON_OBJECT {
            return Err(self.meta_err(format!("JSON object larger than {MAX_JSON_OBJECT} bytes")));
        }
        Ok(true)
    }
}

impl<R: BufRead> JsonUnpacker<R> {
    /// The next entry straight from the reader's buffer, when nothing is carried over and
    /// the whole object is there in the layout [`encode_entry`] writes (the common case:
    /// no copy of the line). `None` leaves the rest to the general path.
    fn next_in_place(&mut self) -> Result<Option<Entry>> {
        // What the general path leaves behind is the newline after its object: without
        // this, one object that straddled the reader's buffer would send every later one
        // through the copying path too.
        if self.buf[self.pos..]
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.buf.clear();
            self.pos = 0;
        }
        if self.pos != self.buf.len() || self.eof {
            return Ok(None);
        }
        loop {
            let avail = self
                .input
                .fill_buf()
                .map_err(Error::io("reading tar-split metadata"))?;
            let ws = avail
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            if ws == 0 {
                break;
            }
            self.input.consume(ws);
        }
        let avail = self
            .input
            .fill_buf()
            .map_err(Error::io("reading tar-split metadata"))?;
        let Some((wire, used)) = fast_entry(avail) else {
            return Ok(None);
        };
        self.input.consume(used);
        let entry = wire.into_entry().map_err(|m| self.meta_err(m))?;
        if entry.kind == EntryKind::File {
            self.seen.insert(&entry.name)?;
        }
        self.index += 1;
        Ok(Some(entry))
    }
}

impl<R: BufRead> Unpacker for JsonUnpacker<R> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        if let Some(entry) = self.next_in_place()? {
            return Ok(Some(entry));
        }
        loop {
            let rest = &self.buf[self.pos..];
            let ws = rest
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            self.pos += ws;
            if self.pos == self.buf.len() {
                self.buf.clear();
                self.pos = 0;
                if !self.fill()? {
                    return Ok(None);
                }
                continue;
            }
            // Fast path for the exact shape Go and we write; anything else goes to serde.
            if let Some((wire, used)) = fast_entry(&self.buf[self.pos..]) {
                self.pos += used;
                let entry = wire.into_entry().map_err(|m| self.meta_err(m))?;
                if entry.kind == EntryKind::File {
                    self.seen.insert(&entry.name)?;
                }
                self.index += 1;
                return Ok(Some(entry));
            }
            let mut stream = serde_json::Deserializer::from_slice(&self.buf[self.pos..])
                .into_iter::<WireEntry>();
            match stream.next() {
                Some(Ok(wire)) => {
                    self.pos += stream.byte_offset();
                    let entry = wire.into_entry().map_err(|m| self.meta_err(m))?;
                    if entry.kind == EntryKind::File {
                        self.seen.insert(&entry.name)?;
                    }
                    self.index += 1;
                    return Ok(Some(entry));
                }
                Some(Err(e)) if e.is_eof() => {
                    // An object spread over many lines: read until the buffered text at least
                    // doubles before parsing again, so the parse attempts cost O(n), not one
                    // full re-parse per line (a fuzzer found the quadratic case).
                    let want = 2 * (self.buf.len() - self.pos).max(1 << 12);
                    let mut grew = false;
                    while self.buf.len() - self.pos < want && self.fill()? {
                        grew = true;
                    }
                    if !grew {
                        return Err(self.meta_err(format!("truncated JSON: {e}")));
                    }
                }
                Some(Err(e)) => return Err(self.meta_err(e.to_string())),
                None => return Ok(None),
            }
        }
    }
}

/// The fields as they appear on the wire, before the name rule is applied.
#[derive(Default)]
struct WireEntry {
    kind: i64,
    name: Option<String>,
    name_raw: Option<Vec<u8>>,
    size: i64,
    payload: Option<Vec<u8>>,
    position: i64,
}

impl WireEntry {
    fn into_entry(self) -> Result<Entry, String> {
        let name = match self.name_raw {
            Some(raw) if !raw.is_empty() => raw,
            _ => self.name.map(String::into_bytes).unwrap_or_default(),
        };
        Ok(Entry {
            kind: EntryKind::from_code(self.kind),
            name,
            size: self.size,
            payload: self.payload,
            position: self.position,
        })
    }
}

enum Key {
    Type,
    Name,
    NameRaw,
    Size,
    Payload,
    Position,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Key, E> {
                // The exact spelling is what every writer uses: no folding needed.
                match v {
                    "type" => return Ok(Key::Type),
                    "name" => return Ok(Key::Name),
                    "name_raw" => return Ok(Key::NameRaw),
                    "size" => return Ok(Key::Size),
                    "payload" => return Ok(Key::Payload),
                    "position" => return Ok(Key::Position),
                    _ => {}
                }
                // Go matches field names case-insensitively, with Unicode simple folding
                // (so the Kelvin sign matches k and the long s matches s).
                let folded: String = v
                    .chars()
                    .map(|c| match c {
                        '\u{212A}' => 'k',
                        '\u{017F}' => 's',
                        c => c.to_ascii_lowercase(),
                    })
                    .collect();
                Ok(match folded.as_str() {
                    "type" => Key::Type,
                    "name" => Key::Name,
                    "name_raw" => Key::NameRaw,
                    "size" => Key::Size,
                    "payload" => Key::Payload,
                    "position" => Key::Position,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// A base64 string (Go `[]byte`) or `null`.
struct GoBytes(Option<Vec<u8>>);

impl<'de> de::Deserialize<'de> for GoBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = GoBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string or null")
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<GoBytes, E> {
                Ok(GoBytes(None))
            }
            fn visit_none<E: de::Error>(self) -> std::result::Result<GoBytes, E> {
                Ok(GoBytes(None))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<GoBytes, E> {
                decode_go_base64(v.as_bytes())
                    .map(|b| GoBytes(Some(b)))
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(BytesVisitor)
    }
}

/// Decodes like Go's `base64.StdEncoding`, which skips CR and LF anywhere.
pub fn decode_go_base64(s: &[u8]) -> Result<Vec<u8>, String> {
    super::b64::decode(s)
}

/// Parses one object in exactly the layout [`encode_entry`] writes (no escapes, keys in
/// Go's order); returns `None` for anything else, which the general parser then handles.
fn fast_entry(input: &[u8]) -> Option<(WireEntry, usize)> {
    let mut p = Cursor { s: input, i: 0 };
    p.tag(b"{\"type\":")?;
    let mut e = WireEntry {
        kind: p.int()?,
        ..WireEntry::default()
    };
    if p.tag(b",\"name\":\"").is_some() {
        let raw = p.plain_string(false)?;
        e.name = Some(std::str::from_utf8(raw).ok()?.to_owned());
    }
    if p.tag(b",\"name_raw\":\"").is_some() {
        e.name_raw = Some(decode_go_base64(p.plain_string(true)?).ok()?);
    }
    if p.tag(b",\"size\":").is_some() {
        e.size = p.int()?;
    }
    p.tag(b",\"payload\":")?;
    if p.tag(b"null").is_none() {
        p.tag(b"\"")?;
        e.payload = Some(decode_go_base64(p.plain_string(true)?).ok()?);
    }
    p.tag(b",\"position\":")?;
    e.position = p.int()?;
    p.tag(b"}")?;
    Some((e, p.i))
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn tag(&mut self, t: &[u8]) -> Option<()> {
        if self.s[self.i..].starts_with(t) {
            self.i += t.len();
            Some(())
        } else {
            None
        }
    }

    fn int(&mut self) -> Option<i64> {
        let neg = self.tag(b"-").is_some();
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(&d) = self.s.get(self.i).filter(|d| d.is_ascii_digit()) {
            v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
            self.i += 1;
        }
        let len = self.i - start;
        // JSON forbids leading zeros; leave such oddities to serde.
        if len == 0 || (len > 1 && self.s[start] == b'0') {
            return None;
        }
        Some(if neg { -v } else { v })
    }

    /// The rest of a string whose opening quote was consumed; `None` if it has escapes
    /// or raw control characters (invalid JSON, left to serde to report).
    fn plain_string(&mut self, base64: bool) -> Option<&'a [u8]> {
        let rest = &self.s[self.i..];
        let end = memchr::memchr(b'"', rest)?;
        let body = &rest[..end];
        let suspicious = if base64 {
            // Long payloads: the decoder rejects every other control character itself.
            memchr::memchr3(b'\\', b'\n', b'\r', body).is_some()
        } else {
            body.iter().any(|&b| b == b'\\' || b < 0x20)
        };
        if suspicious {
            return None;
        }
        self.i += end + 1;
        Some(body)
    }
}

impl<'de> de::Deserialize<'de> for WireEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = WireEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a tar-split entry object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<WireEntry, A::Error> {
                let mut e = WireEntry::default();
                // Go leaves a field unchanged when its JSON value is null.
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Type => e.kind = map.next_value::<Option<i64>>()?.unwrap_or(e.kind),
                        Key::Size => e.size = map.next_value::<Option<i64>>()?.unwrap_or(e.size),
                        Key::Position => {
                            e.position = map.next_value::<Option<i64>>()?.unwrap_or(e.position)
                        }
                        Key::Name => {
                            if let Some(n) = map.next_value::<Option<String>>()? {
                                e.name = Some(n);
                            }
                        }
                        Key::NameRaw => e.name_raw = map.next_value::<GoBytes>()?.0,
                        Key::Payload => e.payload = map.next_value::<GoBytes>()?.0,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(e)
            }
        }
        d.deserialize_map(EntryVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn pack(entries: &[Entry]) -> String {
        let mut p = JsonPacker::new(Vec::new());
        for e in entries {
            p.add_entry(e).unwrap();
        }
        String::from_utf8(p.into_inner()).unwrap()
    }

    fn unpack(text: &str) -> Result<Vec<Entry>> {
        let mut u = JsonUnpacker::new(text.as_bytes());
        let mut out = Vec::new();
        while let Some(e) = u.next_entry()? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn go_wire_format() {
        let text = pack(&[
            Entry::segment(b"ab".to_vec()),
            Entry::file("dir/", 0, None),
            Entry::file(
                &b"dir/caf\xe9.txt"[..],
                7,
                Some(*b"a\x1d\x89\x88d\x1e\xd0\0"),
            ),
            Entry::file("q\"\\\u{1}\u{8}\u{c}\u{7f}\u{2028}<>&.txt", 1, Some([0; 8])),
        ]);
        let want = concat!(
            "{\"type\":2,\"payload\":\"YWI=\",\"position\":0}\n",
            "{\"type\":1,\"name\":\"dir/\",\"payload\":null,\"position\":1}\n",
            "{\"type\":1,\"name_raw\":\"ZGlyL2NhZukudHh0\",\"size\":7,\"payload\":\"YR2JiGQe0AA=\",\"position\":2}\n",
            "{\"type\":1,\"name\":\"q\\\"\\\\\\u0001\\u0008\\u000c\u{7f}\\u2028\\u003c\\u003e\\u0026.txt\",\"size\":1,\"payload\":\"AAAAAAAAAAA=\",\"position\":3}\n",
        );
        assert_eq!(text, want);
        let back = unpack(&text).unwrap();
        assert_eq!(back[2].name, b"dir/caf\xe9.txt");
        assert_eq!(
            back[3].name,
            "q\"\\\u{1}\u{8}\u{c}\u{7f}\u{2028}<>&.txt".as_bytes()
        );
        assert_eq!(back[1].payload, None);
    }

    /// Objects that straddle the reader's buffer go through the copying path, and the
    /// next ones are decoded in place again: the same entries, few lines copied.
    #[test]
    fn back_in_place_after_a_straddling_object() {
        let entries: Vec<Entry> = (0..2000u32)
            .map(|i| {
                if i % 2 == 0 {
                    Entry::segment(vec![i as u8; (i as usize * 7) % 1500])
                } else {
                    Entry::file(format!("d/f{i}"), i64::from(i), Some([i as u8; 8]))
                }
            })
            .collect();
        let text = pack(&entries);
        let capacity = 4096;
        let mut u = JsonUnpacker::new(io::BufReader::with_capacity(capacity, text.as_bytes()));
        let mut back = Vec::new();
        while let Some(e) = u.next_entry().unwrap() {
            back.push(e);
        }
        assert_eq!(back.len(), entries.len());
        for (i, (got, want)) in back.iter().zip(&entries).enumerate() {
            assert_eq!(
                (&got.kind, &got.name, got.size, &got.payload),
                (&want.kind, &want.name, want.size, &want.payload),
                "entry {i}"
            );
            assert_eq!(got.position, i as i64);
        }
        // At most one copied line per refill of the reader's buffer (the one straddling
        // its end), not every line after the first straddle.
        let refills = text.len() / capacity + 1;
        assert!(
            u.copied_lines <= refills,
            "{} lines copied for {refills} refills",
            u.copied_lines
        );
        assert!(u.copied_lines > 0, "the test must make objects straddle");
    }

    #[test]
    fn fast_path_agrees_with_serde() {
        let text = pack(&[
            Entry::segment(vec![0; 1500]),
            Entry::file("dir/", 0, None),
            Entry::file(&b"caf\xe9"[..], 7, Some([1; 8])),
            Entry::file("h\u{e9}llo <&>", -3, Some([0; 8])),
        ]);
        for line in text.lines() {
            let slow: WireEntry = serde_json::from_str(line).unwrap();
            match fast_entry(line.as_bytes()) {
                Some((fast, used)) => {
                    assert_eq!(used, line.len());
                    assert_eq!(fast.into_entry(), slow.into_entry(), "{line}");
                }
                // Only lines with escapes take the slow path.
                None => assert!(line.contains('\\'), "{line}"),
            }
        }
        for odd in [
            "{\"type\":01}",
            "{\"type\":1,\"size\":1.5,\"payload\":null,\"position\":0}",
            "{\"type\": 1}",
        ] {
            assert!(fast_entry(odd.as_bytes()).is_none(), "{odd}");
        }
    }

    #[test]
    fn duplicates_rejected_both_ways() {
        let mut p = JsonPacker::new(Vec::new());
        p.add_entry(&Entry::file("./hurr.txt", 0, None)).unwrap();
        let err = p.add_entry(&Entry::file("hurr.txt", 0, None)).unwrap_err();
        assert!(
            err.to_string()
                .contains("duplicates of file paths not supported"),
            "{err}"
        );
        // The rejected entry used no position.
        assert_eq!(p.add_entry(&Entry::segment(vec![1])).unwrap(), 1);
        let err = unpack("{\"type\":1,\"name\":\"d/\",\"payload\":null,\"position\":0}\n{\"type\":1,\"name\":\"d\",\"payload\":null,\"position\":1}")
            .unwrap_err();
        assert!(matches!(err, Error::DuplicatePath { .. }), "{err}");
    }

    #[test]
    fn objects_split_across_reads() {
        let text = pack(&[
            Entry::segment(vec![0; 1500]),
            Entry::file("dir/", 0, None),
            Entry::file(&b"caf\xe9"[..], 7, Some([1; 8])),
            Entry::file("q\"<&>", 3, Some([2; 8])),
            Entry::segment(b"tail".to_vec()),
        ]) + "  \n{\"TYPE\":2,\"payload\":\"QUI=\"}\n";
        let whole = unpack(&text).unwrap();
        assert_eq!(whole.len(), 6);
        // Every buffer size puts object and whitespace boundaries at every offset.
        for cap in 1..64 {
            let mut u = JsonUnpacker::new(std::io::BufReader::with_capacity(cap, text.as_bytes()));
            let mut got = Vec::new();
            while let Some(e) = u.next_entry().unwrap() {
                got.push(e);
            }
            assert_eq!(got, whole, "buffer of {cap} bytes");
        }
    }

    #[test]
    fn lenient_like_go() {
        let e = unpack("  {\"TYPE\":2,\"Payload\":\"QU\\nI=\",\"foo\":[1,{}],\"position\":0}{\"type\":1,\n \"name\":\"a\",\"payload\":null}\r\n")
            .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].payload.as_deref(), Some(&b"AB"[..]));
        assert_eq!(e[1].name, b"a");
        assert!(unpack("{\"type\":\"2\"}").is_err());
        assert!(unpack("{\"type\":2,\"payload\":\"QUI\"}").is_err());
        assert!(unpack("{\"type\":2,\"payload\":\"QUI=\"} x").is_err());
        assert!(unpack("{\"type\":2,\"payload\":\"QUI=\"").is_err());
        // name_raw wins over name.
        let e = unpack("{\"type\":1,\"name\":\"x\",\"name_raw\":\"eQ==\"}").unwrap();
        assert_eq!(e[0].name, b"y");
        assert_eq!(unpack("{\"type\":3}").unwrap()[0].kind, EntryKind::Other(3));
    }
}
