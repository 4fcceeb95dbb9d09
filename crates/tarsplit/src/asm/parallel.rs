//! [`assemble_parallel`]: [`super::assemble`] on two threads.
//!
//! Per entry, reassembly from a tree costs: inflating and parsing the metadata, opening
//! the file (a path lookup, `openat`, `fstat`), reading its bytes, the CRC-64, closing it,
//! writing. On archives of many small files the per-file system calls are most of it.
//!
//! Here a helper thread decodes the metadata, in archive order, into batches of plain
//! steps: runs of archive bytes (segments, copied into the batch's byte buffer) and files
//! to read. While the writing thread is behind ([`BEHIND`] batches wait for it), the
//! helper also reads work of its own: small files whole (checked; their bytes join the
//! run), and [`PIECE`]-byte pieces of large files with each piece's CRC-64, which the
//! writing thread appends to the file's CRC ([`Appender`]) between the pieces it reads
//! itself. So the two threads share a large file instead of the helper idling while the
//! writing thread reads it. The writing thread writes the runs, and opens, reads, checks
//! and writes what is left to it: same output, same checks, the same errors in the same
//! order as [`super::assemble`].
//!
//! No file descriptor and no per-entry allocation crosses between the threads: each batch
//! is two buffers, recycled. Bounded: at most [`QUEUE_DEPTH`] batches wait, each of at
//! most [`BATCH_STEPS`] steps and about [`BATCH_BYTES`] of bytes and reads (exceeded by
//! at most one small file or one piece).

use std::io::{self, Write};
use std::ops::Range;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::assemble::{MIN_READ, OUT_BUFFER, Step, Steps, size_mismatch};
use crate::crc::{Appender, Crc64};
use crate::error::{EntryName, Error, Result};
use crate::storage::{FileBody, FileGetter, PathFileGetter, Unpacker};

/// Steps per batch.
const BATCH_STEPS: usize = 256;
/// Bytes (runs, names, CRCs) per batch, exceeded by at most one small file.
const BATCH_BYTES: usize = 16 << 10;
/// Batches that may wait between the threads.
const QUEUE_DEPTH: usize = 6;
/// Files up to this size the helper may read itself, whole; larger ones come in pieces.
const SMALL_FILE: u64 = 16 << 10;
/// The pieces of a large file the helper may read (the last, shorter one is always left to
/// the writing thread, so that all pieces the helper reads have one length).
const PIECE: u64 = 64 << 10;

/// The helper reads small files and pieces while at least this many batches wait for the
/// writing thread, which is then behind.
const BEHIND: usize = 2;

/// Continues a large file's CRC-64 over a piece whose CRC the helper computed.
static APPEND_PIECE: LazyLock<Appender> = LazyLock::new(|| Appender::new(PIECE));

/// One step of a batch; ranges index the batch's `bytes`.
enum Op {
    /// Archive bytes: segments, and bodies the helper read.
    Run(Range<usize>),
    /// A file for the writing thread: `size` bytes of `name`, with CRC-64 `want`.
    File {
        name: Range<usize>,
        size: u64,
        want: Option<Range<usize>>,
    },
    /// A file above [`SMALL_FILE`], which comes in pieces: the writing thread opens it.
    Large {
        name: Range<usize>,
        size: u64,
        want: Option<Range<usize>>,
    },
    /// The next bytes of the current large file, for the writing thread to read.
    Gap(u64),
    /// The next [`PIECE`] bytes of the current large file, read by the helper, and their
    /// CRC-64.
    Piece { run: Range<usize>, crc: u64 },
    /// The current large file is complete: check its CRC-64.
    LargeEnd,
    /// The error [`super::assemble`] stops with here.
    Fail(Error),
}

/// What travels between the threads. Recycled: `bytes` keeps its length (zeroed once) and
/// `end` marks what this batch uses, so filling it again writes no zeros first.
#[derive(Default)]
struct Batch {
    ops: Vec<Op>,
    bytes: Vec<u8>,
    end: usize,
    /// Bytes of large files the writing thread is to read.
    gaps: u64,
}

impl Batch {
    /// `want` bytes of room after `end`.
    fn room(&mut self, want: usize) -> &mut [u8] {
        let need = self.end + want;
        if self.bytes.len() < need {
            self.bytes.resize(need, 0);
        }
        &mut self.bytes[self.end..need]
    }

    fn push_bytes(&mut self, data: &[u8]) -> Range<usize> {
        let start = self.end;
        self.room(data.len()).copy_from_slice(data);
        self.end += data.len();
        start..self.end
    }

    /// Appends archive bytes.
    fn push_run(&mut self, data: &[u8]) {
        let start = self.push_bytes(data).start;
        self.extend_run(start);
    }

    /// Records `bytes[start..end]` as archive bytes, extending the last run when it ends
    /// where they start.
    fn extend_run(&mut self, start: usize) {
        match self.ops.last_mut() {
            Some(Op::Run(run)) if run.end == start => run.end = self.end,
            _ => self.ops.push(Op::Run(start..self.end)),
        }
    }

    fn push_gap(&mut self, len: u64) {
        self.gaps += len;
        match self.ops.last_mut() {
            Some(Op::Gap(gap)) => *gap += len,
            _ => self.ops.push(Op::Gap(len)),
        }
    }

    /// Full by steps, or by the bytes it carries or asks the writing thread to read.
    fn is_full(&self) -> bool {
        self.ops.len() >= BATCH_STEPS || self.end as u64 + self.gaps >= BATCH_BYTES as u64
    }

    fn clear(&mut self) {
        self.ops.clear();
        self.end = 0;
        self.gaps = 0;
    }
}

/// Opens the body `name` and checks its length against the recorded `size`, as
/// [`super::Assembler`] does before reading it.
fn open_body(getter: &mut PathFileGetter, name: &[u8], size: u64) -> Result<FileBody> {
    let body = getter.get(name).map_err(|source| Error::Get {
        name: EntryName(name.to_vec()),
        source,
    })?;
    if let Some(len) = PathFileGetter::body_len(&body)
        && len != size
    {
        return Err(size_mismatch(name.to_vec(), size, len));
    }
    Ok(body)
}

/// Whether the bytes read of `name` have the recorded CRC-64 `want`.
fn check_crc(name: &[u8], want: Option<&[u8]>, crc: &Crc64) -> Result<()> {
    if want != Some(&crc.bytes()[..]) {
        return Err(Error::ChecksumMismatch {
            name: EntryName(name.to_vec()),
        });
    }
    Ok(())
}

/// The helper reads the small file `name` whole to the end of the batch's bytes and checks
/// it; the batch takes the bytes only if every check passes.
fn read_whole(
    getter: &mut PathFileGetter,
    name: &[u8],
    size: u64,
    want: Option<&[u8]>,
    batch: &mut Batch,
) -> Result<()> {
    let body = open_body(getter, name, size)?;
    let room = batch.room(size as usize);
    read_exactly_at(&body, room, 0, name, size)?;
    let mut crc = Crc64::new();
    crc.update(room);
    check_crc(name, want, &crc)?;
    batch.end += size as usize;
    Ok(())
}

/// The writing thread reads a body into its output buffer.
struct OutSink<W> {
    out: W,
    buf: Vec<u8>,
    len: usize,
    written: u64,
}

impl<W: Write> OutSink<W> {
    fn flush(&mut self) -> Result<()> {
        if self.len > 0 {
            self.out
                .write_all(&self.buf[..self.len])
                .map_err(Error::io("writing the tar stream"))?;
            self.len = 0;
        }
        Ok(())
    }

    /// Archive bytes: copied into the buffer, or written as they are when large.
    fn run(&mut self, mut data: &[u8]) -> Result<()> {
        self.written += data.len() as u64;
        if data.len() >= MIN_READ {
            self.flush()?;
            return self
                .out
                .write_all(data)
                .map_err(Error::io("writing the tar stream"));
        }
        while !data.is_empty() {
            if self.len == OUT_BUFFER {
                self.flush()?;
            }
            let n = data.len().min(OUT_BUFFER - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
        }
        Ok(())
    }

    /// Room for up to `want` (> 0) bytes of a body.
    fn room(&mut self, want: usize) -> Result<&mut [u8]> {
        // Flushed once less than MIN_READ is free, so that body reads stay large.
        if OUT_BUFFER - self.len < MIN_READ {
            self.flush()?;
        }
        let end = self.len + want.min(OUT_BUFFER - self.len);
        Ok(&mut self.buf[self.len..end])
    }
    /// The first `n` bytes of the last room were filled.
    fn fill(&mut self, n: usize) {
        self.len += n;
        self.written += n as u64;
    }

    /// `len` bytes from `offset` of `body` (the file `name` of `size` bytes) into the
    /// output, fed to `crc`.
    fn read_file(
        &mut self,
        body: &FileBody,
        (offset, len): (u64, u64),
        (name, size): (&[u8], u64),
        crc: &mut Crc64,
    ) -> Result<()> {
        let mut done = 0;
        while done < len {
            let room = self.room(usize::try_from(len - done).unwrap_or(usize::MAX))?;
            read_exactly_at(body, room, offset + done, name, size)?;
            crc.update(room);
            let n = room.len();
            self.fill(n);
            done += n as u64;
        }
        Ok(())
    }
}

/// Which small files the helper reads (tests pin it to one side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    /// Those met while a batch waits for the writing thread.
    WhenBehind,
    /// All of them.
    #[cfg(test)]
    Helper,
    /// None.
    #[cfg(test)]
    Writer,
}

impl Share {
    fn helper_reads(self, queued: &AtomicUsize) -> bool {
        match self {
            Share::WhenBehind => queued.load(Ordering::Relaxed) >= BEHIND,
            #[cfg(test)]
            Share::Helper => true,
            #[cfg(test)]
            Share::Writer => false,
        }
    }
}

/// The helper's end of the queue.
struct Sender<'a> {
    tx: SyncSender<Batch>,
    spare: Receiver<Batch>,
    queued: &'a AtomicUsize,
    batch: Batch,
}

impl Sender<'_> {
    /// Sends the batch and starts the next; false once the writing thread has stopped.
    fn send(&mut self) -> bool {
        let next = self.spare.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut self.batch, next);
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(full).is_ok()
    }
}

/// The helper: decodes entries into batches, reading small files and pieces of large ones
/// when the writing thread is behind. `queued` counts the batches sent and not yet taken.
fn produce<U: Unpacker>(
    mut unpacker: U,
    mut getter: PathFileGetter,
    share: Share,
    tx: SyncSender<Batch>,
    spare: Receiver<Batch>,
    queued: &AtomicUsize,
) {
    let mut steps = Steps::default();
    let mut out = Sender {
        batch: spare.try_recv().unwrap_or_default(),
        tx,
        spare,
        queued,
    };
    loop {
        let step = match unpacker.next_entry() {
            Ok(None) => {
                if !out.batch.ops.is_empty() {
                    out.send();
                }
                return;
            }
            Ok(Some(entry)) => steps.step(entry),
            Err(e) => Err(e),
        };
        let done = match step {
            Ok(Step::Skip) => Ok(()),
            Ok(Step::Bytes(data)) => {
                out.batch.push_run(&data);
                Ok(())
            }
            Ok(Step::Body { name, size, want }) if size > SMALL_FILE => {
                match large_file(&mut out, &mut getter, share, &name, size, want.as_deref()) {
                    Some(done) => done,
                    None => return, // the writing thread stopped
                }
            }
            Ok(Step::Body { name, size, want }) => {
                let batch = &mut out.batch;
                if share.helper_reads(queued) {
                    let start = batch.end;
                    let read = read_whole(&mut getter, &name, size, want.as_deref(), batch);
                    if read.is_ok() {
                        batch.extend_run(start);
                    }
                    read
                } else {
                    let name = batch.push_bytes(&name);
                    let want = want.map(|w| batch.push_bytes(&w));
                    batch.ops.push(Op::File { name, size, want });
                    Ok(())
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            out.batch.ops.push(Op::Fail(e));
            out.send();
            return;
        }
        if out.batch.is_full() && !out.send() {
            return;
        }
    }
}

/// Queues a file above [`SMALL_FILE`] as its pieces, reading those of [`PIECE`] bytes
/// itself while the writing thread is behind. `None` once the writing thread has stopped.
fn large_file(
    out: &mut Sender<'_>,
    getter: &mut PathFileGetter,
    share: Share,
    name: &[u8],
    size: u64,
    want: Option<&[u8]>,
) -> Option<Result<()>> {
    let batch = &mut out.batch;
    let name_at = batch.push_bytes(name);
    let want = want.map(|w| batch.push_bytes(w));
    batch.ops.push(Op::Large {
        name: name_at,
        size,
        want,
    });
    // Opened here at the first piece read here. The writing thread opens the file itself
    // at `Large`, before any piece, and reports a missing file or another size exactly as
    // `assemble` does; errors here can then only come from a file changed meanwhile.
    let mut file = None;
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(PIECE);
        if len == PIECE && share.helper_reads(out.queued) {
            if let Err(e) = read_piece(getter, name, size, offset, &mut file, &mut out.batch) {
                return Some(Err(e));
            }
        } else {
            out.batch.push_gap(len);
        }
        offset += len;
        if out.batch.is_full() && !out.send() {
            return None;
        }
    }
    out.batch.ops.push(Op::LargeEnd);
    Some(Ok(()))
}

/// Reads the [`PIECE`] bytes at `offset` of the large file `name` into the batch.
fn read_piece(
    getter: &mut PathFileGetter,
    name: &[u8],
    size: u64,
    offset: u64,
    file: &mut Option<FileBody>,
    batch: &mut Batch,
) -> Result<()> {
    let body = match file {
        Some(body) => body,
        None => file.insert(open_body(getter, name, size)?),
    };
    let start = batch.end;
    let room = batch.room(PIECE as usize);
    read_exactly_at(body, room, offset, name, size)?;
    let mut crc = Crc64::new();
    crc.update(room);
    batch.end += room.len();
    batch.ops.push(Op::Piece {
        run: start..batch.end,
        crc: crc.sum(),
    });
    Ok(())
}

/// Fills `buf` from `offset` of `body`; the errors of a sequential read of the file.
fn read_exactly_at(
    body: &FileBody,
    buf: &mut [u8],
    offset: u64,
    name: &[u8],
    size: u64,
) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match body.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => return Err(size_mismatch(name.to_vec(), size, offset + filled as u64)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Get {
                    name: EntryName(name.to_vec()),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// The large file the writing thread is assembling.
struct Large {
    body: FileBody,
    name: Vec<u8>,
    size: u64,
    want: Option<Vec<u8>>,
    /// Bytes done so far, and their CRC-64.
    done: u64,
    crc: Crc64,
}

/// The writing thread: runs written, files read, errors returned, in batch order.
fn write_batches<W: Write>(
    rx: Receiver<Batch>,
    spare: SyncSender<Batch>,
    queued: &AtomicUsize,
    mut getter: PathFileGetter,
    out: W,
) -> Result<u64> {
    let mut sink = OutSink {
        out,
        buf: vec![0u8; OUT_BUFFER],
        len: 0,
        written: 0,
    };
    let mut large: Option<Large> = None;
    // The helper ends the stream by hanging up after its last batch (an error is a step).
    while let Ok(mut batch) = rx.recv() {
        queued.fetch_sub(1, Ordering::Relaxed);
        for op in batch.ops.drain(..) {
            match op {
                Op::Run(run) => sink.run(&batch.bytes[run])?,
                Op::File { name, size, want } => {
                    let name = &batch.bytes[name];
                    let body = open_body(&mut getter, name, size)?;
                    let mut crc = Crc64::new();
                    sink.read_file(&body, (0, size), (name, size), &mut crc)?;
                    check_crc(name, want.map(|w| &batch.bytes[w]), &crc)?;
                }
                Op::Large { name, size, want } => {
                    let name = batch.bytes[name].to_vec();
                    let body = open_body(&mut getter, &name, size)?;
                    large = Some(Large {
                        body,
                        name,
                        size,
                        want: want.map(|w| batch.bytes[w].to_vec()),
                        done: 0,
                        crc: Crc64::new(),
                    });
                }
                Op::Gap(len) => {
                    let file = large.as_mut().expect("a gap follows its large file");
                    let at = (file.done, len);
                    sink.read_file(&file.body, at, (&file.name, file.size), &mut file.crc)?;
                    file.done += len;
                }
                Op::Piece { run, crc } => {
                    let file = large.as_mut().expect("a piece follows its large file");
                    sink.run(&batch.bytes[run])?;
                    APPEND_PIECE.append(&mut file.crc, crc);
                    file.done += PIECE;
                }
                Op::LargeEnd => {
                    let file = large.take().expect("the end of a large file");
                    check_crc(&file.name, file.want.as_deref(), &file.crc)?;
                }
                Op::Fail(e) => return Err(e),
            }
        }
        batch.clear();
        let _ = spare.try_send(batch);
    }
    sink.flush()?;
    sink.out
        .flush()
        .map_err(Error::io("writing the tar stream"))?;
    Ok(sink.written)
}

/// [`super::assemble`] from an extracted tree on two threads; returns the number of bytes
/// written.
///
/// A helper thread decodes the metadata into batches of archive bytes and files to read,
/// and while the calling thread is behind reads small files (up to 16 KiB) and 64 KiB
/// pieces of larger ones itself; the calling thread writes, and reads the rest. Same
/// output, same checks, the same errors in the same order as [`super::assemble`]. At most
/// six batches wait, each of at most 256 steps and about 16 KiB of bytes and reads (plus
/// one small file or piece). The helper stops at its next batch once this returns an
/// error; a panic on it is raised here.
pub fn assemble_parallel<U: Unpacker + Send, W: Write>(
    unpacker: U,
    getter: PathFileGetter,
    out: W,
) -> Result<u64> {
    assemble_shared(unpacker, getter, out, Share::WhenBehind)
}

fn assemble_shared<U: Unpacker + Send, W: Write>(
    unpacker: U,
    getter: PathFileGetter,
    out: W,
    share: Share,
) -> Result<u64> {
    let helper_getter = getter
        .try_clone()
        .map_err(Error::io("opening the tree again"))?;
    let (tx, rx) = sync_channel(QUEUE_DEPTH);
    let (spare_tx, spare_rx) = sync_channel(QUEUE_DEPTH + 2);
    let queued = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("tarsplit-decode".into())
            .spawn_scoped(scope, || {
                produce(unpacker, helper_getter, share, tx, spare_rx, &queued)
            })
            .map_err(Error::io("starting the metadata thread"))?;
        write_batches(rx, spare_tx, &queued, getter, out)
    })
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::asm::{assemble, disassemble};
    use crate::storage::{DiscardFilePutter, JsonPacker, JsonUnpacker};

    fn archive() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: Vec<u8>| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        };
        // More files than a batch holds, of sizes around the block, small-file and batch
        // limits.
        for i in 0..700u32 {
            let len = [0, 1, 511, 512, 513, 16 << 10, (16 << 10) + 1, 70_000][i as usize % 8];
            add(&format!("d{}/f{i}", i % 7), vec![(i % 251) as u8; len]);
        }
        // Large files: pieces and a shorter tail, and exactly three pieces.
        add("big/a", (0..200_000u32).map(|i| (i % 253) as u8).collect());
        add(
            "big/b",
            (0..3 * 65_536u32).map(|i| (i % 249) as u8).collect(),
        );
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "hard", "d0/f0").unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn same_bytes_and_errors_as_assemble() {
        let tar = archive();
        let mut meta = Vec::new();
        disassemble(&tar[..], JsonPacker::new(&mut meta), DiscardFilePutter).unwrap();
        let tree = tempfile::tempdir().unwrap();
        tar::Archive::new(&tar[..]).unpack(tree.path()).unwrap();
        let shares = [Share::WhenBehind, Share::Helper, Share::Writer];
        let parallel = |meta: &[u8], share| {
            let mut out = Vec::new();
            let getter = PathFileGetter::new(tree.path()).unwrap();
            let unpacker = JsonUnpacker::new(io::Cursor::new(meta.to_vec()));
            assemble_shared(unpacker, getter, &mut out, share).map(|n| (n, out))
        };
        let sequential = |meta: &[u8]| {
            let mut out = Vec::new();
            let getter = PathFileGetter::new(tree.path()).unwrap();
            assemble(JsonUnpacker::new(meta), getter, &mut out).map(|n| (n, out))
        };
        for share in shares {
            let (n, out) = parallel(&meta, share).unwrap();
            assert_eq!((n, &out), (tar.len() as u64, &tar), "{share:?}");
        }

        // A changed body, a missing file, a body of another size (a small file and a
        // large one): the same error whichever thread reads it.
        let same_error = |what: &str, check: &dyn Fn(&Error) -> bool| {
            let s = sequential(&meta).unwrap_err();
            assert!(check(&s), "{what}: {s}");
            for share in shares {
                let p = parallel(&meta, share).unwrap_err();
                assert_eq!(p.to_string(), s.to_string(), "{what}, {share:?}");
            }
        };
        for file in ["d3/f10", "d5/f5", "d6/f6", "d2/f23", "big/a", "big/b"] {
            let path = tree.path().join(file);
            let original = std::fs::read(&path).unwrap();
            std::fs::write(&path, vec![9u8; original.len()]).unwrap();
            same_error("changed", &|e| matches!(e, Error::ChecksumMismatch { .. }));
            std::fs::remove_file(&path).unwrap();
            same_error("missing", &|e| matches!(e, Error::Get { .. }));
            std::fs::write(&path, vec![9u8; 10]).unwrap();
            same_error("resized", &|e| matches!(e, Error::SizeMismatch { .. }));
            std::fs::write(&path, original).unwrap();
        }

        // Bad metadata part-way: the error of the sequential assembler.
        let text = String::from_utf8(meta).unwrap();
        let cut = text.lines().take(300).collect::<Vec<_>>().join("\n") + "\n{\"type\":1,";
        let s = sequential(cut.as_bytes()).unwrap_err();
        for share in shares {
            let p = parallel(cut.as_bytes(), share).unwrap_err();
            assert_eq!(p.to_string(), s.to_string(), "{share:?}");
        }
    }
}
