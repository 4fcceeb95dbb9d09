//! Reassembly: metadata entries plus file bodies back into the original tar bytes.
//!
//! [`Assembler`] is a `Read` adaptor over an [`Unpacker`] and a [`FileGetter`];
//! [`assemble`] drives one into a `Write`. Segments are copied verbatim; each file entry
//! with a size pulls exactly that many bytes from the getter and checks them against the
//! recorded CRC-64 (Go: `file integrity checksum failed for "<name>"`). Unlike Go, the size
//! is checked too, and a header-only entry (hard link, symlink, …) whose header carries a
//! size — recorded by Go with the CRC of zero bytes — is reproduced without asking the
//! getter, so it round-trips even from an extracted tree.

use std::io::{self, Read, Write};

use crate::crc::{Crc64, EMPTY_CRC};
use crate::error::{EntryName, Error, Result};
use crate::storage::{Entry, EntryKind, FileGetter, Unpacker};
use layer_archive::codec::EntryKind as TarKind;
use layer_archive::codec::field::BLOCK;

/// What reassembly makes of one metadata entry: the rule [`Assembler`] and
/// [`super::assemble_parallel`] both follow.
pub(super) enum Step {
    /// Nothing to produce (an empty segment, a file of no size, a header-only entry).
    Skip,
    /// Raw archive bytes, verbatim.
    Bytes(Vec<u8>),
    /// `size` bytes of the file `name`, whose CRC-64 must be `want`.
    Body {
        name: Vec<u8>,
        size: u64,
        want: Option<Vec<u8>>,
    },
}

/// Classifies entries in stream order ([`Step`]).
#[derive(Debug, Default)]
pub(super) struct Steps {
    /// Typeflag of the header block that ends the latest segment, if it ends with one.
    last_typeflag: Option<u8>,
    /// Entries seen.
    index: u64,
}

impl Steps {
    /// The step for the next entry; an entry of unknown type is an error.
    pub(super) fn step(&mut self, entry: Entry) -> Result<Step> {
        self.index += 1;
        let Entry {
            kind,
            name,
            size,
            payload,
            ..
        } = entry;
        match kind {
            EntryKind::Segment => {
                let payload = payload.unwrap_or_default();
                if payload.len() >= BLOCK {
                    self.last_typeflag = Some(payload[payload.len() - BLOCK + 156]);
                } else if !payload.is_empty() {
                    self.last_typeflag = None;
                }
                Ok(if payload.is_empty() {
                    Step::Skip
                } else {
                    Step::Bytes(payload)
                })
            }
            // Go records header-only entries that carry a size with the CRC of no bytes;
            // their archive has no body, whatever the tree holds at `name`.
            EntryKind::File
                if size <= 0
                    || (payload.as_deref() == Some(&EMPTY_CRC[..])
                        && self.last_typeflag.is_some_and(|flag| {
                            TarKind::from_type_flag(flag, b"").is_header_only()
                        })) =>
            {
                Ok(Step::Skip)
            }
            EntryKind::File => Ok(Step::Body {
                name,
                size: size as u64,
                want: payload,
            }),
            EntryKind::Other(kind) => Err(Error::UnknownEntryType {
                index: self.index - 1,
                kind,
            }),
        }
    }
}

/// The error for a body of `actual` bytes where the metadata recorded `size`.
pub(super) fn size_mismatch(name: Vec<u8>, size: u64, actual: u64) -> Error {
    Error::SizeMismatch {
        name: EntryName(name),
        expected: size as i64,
        actual,
        more: false,
    }
}

struct FileState<B> {
    body: B,
    name: Vec<u8>,
    size: u64,
    remaining: u64,
    crc: Crc64,
    want: Option<Vec<u8>>,
    len_known: bool,
}

enum Current<B> {
    Idle,
    Segment { payload: Vec<u8>, pos: usize },
    File(Box<FileState<B>>),
    Done,
}

/// Yields the reassembled archive as a `Read`.
pub struct Assembler<U, G: FileGetter> {
    unpacker: U,
    getter: G,
    current: Current<G::Body>,
    steps: Steps,
    written: u64,
}

impl<U, G: FileGetter> std::fmt::Debug for Assembler<U, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assembler")
            .field("index", &self.steps.index)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl<U: Unpacker, G: FileGetter> Assembler<U, G> {
    /// Reassembles the entries of `unpacker`, taking file bodies from `getter`.
    pub fn new(unpacker: U, getter: G) -> Self {
        Assembler {
            unpacker,
            getter,
            current: Current::Idle,
            steps: Steps::default(),
            written: 0,
        }
    }

    /// Bytes produced so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Returns the unpacker and getter.
    pub fn into_parts(self) -> (U, G) {
        (self.unpacker, self.getter)
    }

    /// Moves to the next entry that produces bytes; false at the end.
    fn advance(&mut self) -> Result<bool> {
        loop {
            let Some(entry) = self.unpacker.next_entry()? else {
                self.current = Current::Done;
                return Ok(false);
            };
            match self.steps.step(entry)? {
                Step::Skip => continue,
                Step::Bytes(payload) => {
                    self.current = Current::Segment { payload, pos: 0 };
                    return Ok(true);
                }
                Step::Body { name, size, want } => {
                    let body = self.getter.get(&name).map_err(|source| Error::Get {
                        name: EntryName(name.clone()),
                        source,
                    })?;
                    let len = G::body_len(&body);
                    if let Some(len) = len
                        && len != size
                    {
                        return Err(size_mismatch(name, size, len));
                    }
                    self.current = Current::File(Box::new(FileState {
                        body,
                        name,
                        size,
                        remaining: size,
                        crc: Crc64::new(),
                        want,
                        len_known: len.is_some(),
                    }));
                    return Ok(true);
                }
            }
        }
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match &mut self.current {
                Current::Done => return Ok(0),
                Current::Idle => {
                    if !self.advance()? {
                        return Ok(0);
                    }
                }
                Current::Segment { payload, pos } => {
                    let n = (payload.len() - *pos).min(buf.len());
                    buf[..n].copy_from_slice(&payload[*pos..*pos + n]);
                    *pos += n;
                    if *pos == payload.len() {
                        self.current = Current::Idle;
                    }
                    return Ok(n);
                }
                Current::File(file) => {
                    let FileState {
                        body,
                        name,
                        size,
                        remaining,
                        crc,
                        want,
                        len_known,
                    } = &mut **file;
                    if *remaining == 0 {
                        // Make sure the body ends here, then check the checksum.
                        if !*len_known {
                            let mut probe = [0u8; 1];
                            let extra =
                                read_retry(body, &mut probe).map_err(|source| Error::Get {
                                    name: EntryName(name.clone()),
                                    source,
                                })?;
                            if extra > 0 {
                                return Err(Error::SizeMismatch {
                                    name: EntryName(std::mem::take(name)),
                                    expected: *size as i64,
                                    actual: *size + 1,
                                    more: true,
                                });
                            }
                        }
                        if want.as_deref() != Some(&crc.bytes()[..]) {
                            return Err(Error::ChecksumMismatch {
                                name: EntryName(std::mem::take(name)),
                            });
                        }
                        self.current = Current::Idle;
                        continue;
                    }
                    let want_n = (*remaining).min(buf.len() as u64) as usize;
                    let n = read_retry(body, &mut buf[..want_n]).map_err(|source| Error::Get {
                        name: EntryName(name.clone()),
                        source,
                    })?;
                    if n == 0 {
                        return Err(size_mismatch(
                            std::mem::take(name),
                            *size,
                            *size - *remaining,
                        ));
                    }
                    crc.update(&buf[..n]);
                    *remaining -= n as u64;
                    return Ok(n);
                }
            }
        }
    }
}

fn read_retry(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

impl<U: Unpacker, G: FileGetter> Read for Assembler<U, G> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.read_inner(buf) {
            Ok(n) => {
                self.written += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.current = Current::Done;
                Err(e.into_io())
            }
        }
    }
}

/// Size of [`assemble`]'s one output buffer: it stays in a core's L2 cache while the
/// CRC-64 reads back what was just read into it (the kernel's copy into a buffer of
/// 192 KiB or more costs 2-3 times that into one of 128 KiB on the bench machine; see
/// `READ_CHUNK` in the disassembler).
pub(super) const OUT_BUFFER: usize = 128 << 10;

/// [`assemble`] writes its buffer out once less than this is free, so that body reads
/// stay large.
pub(super) const MIN_READ: usize = 32 << 10;

/// Writes the reassembled archive to `out`; returns the number of bytes written.
///
/// Bodies are read straight into one output buffer and segments are copied into it once,
/// so many small headers and bodies go out in few large writes.
pub fn assemble<U: Unpacker, G: FileGetter, W: Write>(
    unpacker: U,
    getter: G,
    mut out: W,
) -> Result<u64> {
    let mut asm = Assembler::new(unpacker, getter);
    let mut buf = vec![0u8; OUT_BUFFER];
    let mut len = 0;
    loop {
        let n = asm.read_inner(&mut buf[len..])?;
        len += n;
        asm.written += n as u64;
        if n == 0 || OUT_BUFFER - len < MIN_READ {
            out.write_all(&buf[..len])
                .map_err(Error::io("writing the tar stream"))?;
            len = 0;
        }
        if n == 0 {
            break;
        }
    }
    out.flush().map_err(Error::io("writing the tar stream"))?;
    Ok(asm.written)
}
