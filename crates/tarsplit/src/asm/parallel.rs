//! [`assemble_parallel`]: [`super::assemble`] with the metadata decoded and the files
//! opened on a second thread.
//!
//! Per entry, reassembly from a tree costs: inflating and parsing the metadata, opening
//! the file (a path lookup, `openat`, `fstat`), reading its bytes, the CRC-64, writing. On
//! archives of many small files the first two are more than half of it. Here a helper
//! thread decodes the metadata and opens the files that will be read (of the small ones
//! every other), in archive order, and hands batches of entries with their open files to the calling thread, which
//! opens the rest and reads, checks and writes exactly as [`super::assemble`] does: same
//! output, same checks, same errors in the same order.
//!
//! Bounded: at most [`QUEUE_DEPTH`] batches wait, each of at most [`BATCH_ENTRIES`]
//! entries, [`BATCH_FILES`] open files and about [`BATCH_BYTES`] of payload.

use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use layer_archive::codec::EntryKind as TarKind;
use layer_archive::codec::field::BLOCK;

use super::assemble::assemble;
use crate::crc::EMPTY_CRC;
use crate::error::{Error, Result};
use crate::storage::{Entry, EntryKind, FileBody, FileGetter, PathFileGetter, Unpacker};

/// Entries per batch.
const BATCH_ENTRIES: usize = 128;
/// Open files per batch (with [`QUEUE_DEPTH`], bounds the descriptors held open).
const BATCH_FILES: usize = 32;
/// Payload bytes per batch.
const BATCH_BYTES: usize = 64 << 10;
/// Batches that may wait between the threads.
const QUEUE_DEPTH: usize = 2;
/// Of files up to this size the helper opens only every other one while the reading
/// thread keeps up.
const SMALL_FILE: i64 = 16 << 10;

/// An entry and, when the assembler will read its body, the file opened for it.
type Item = (Entry, Option<io::Result<FileBody>>);

/// Whether the assembler reads a body for this entry: the rule of [`super::Assembler`].
struct BodyRule {
    last_typeflag: Option<u8>,
}

impl BodyRule {
    fn needs_body(&mut self, entry: &Entry) -> bool {
        match entry.kind {
            EntryKind::Segment => {
                if let Some(payload) = &entry.payload {
                    if payload.len() >= BLOCK {
                        self.last_typeflag = Some(payload[payload.len() - BLOCK + 156]);
                    } else if !payload.is_empty() {
                        self.last_typeflag = None;
                    }
                }
                false
            }
            EntryKind::File => {
                entry.size > 0
                    && !(entry.payload.as_deref() == Some(&EMPTY_CRC[..])
                        && self.last_typeflag.is_some_and(|flag| {
                            TarKind::from_type_flag(flag, b"").is_header_only()
                        }))
            }
            EntryKind::Other(_) => false,
        }
    }
}

fn produce<U: Unpacker>(
    mut unpacker: U,
    mut getter: PathFileGetter,
    tx: SyncSender<Result<Vec<Item>>>,
) {
    let mut rule = BodyRule {
        last_typeflag: None,
    };
    let (mut batch, mut files, mut bytes) = (Vec::with_capacity(BATCH_ENTRIES), 0, 0);
    // Which files are opened here adapts to which thread is behind. While the reading
    // thread keeps up (the queue to it is not full), files above SMALL_FILE are opened here
    // and of the smaller ones every other, the rest by the reading thread: for small files
    // decoding costs about what reading does. When the queue is full the reading thread is
    // the slower one, and everything is opened here. (perf: small.tar 66/34 % of the CPU
    // when the helper opened everything, 49/51 % with this; big.tar about 50/50.)
    let mut toggle = false;
    let mut open_all = false;
    loop {
        match unpacker.next_entry() {
            Ok(Some(entry)) => {
                let needs_body = rule.needs_body(&entry);
                let small = entry.size <= SMALL_FILE;
                toggle ^= needs_body && small;
                let open_here = needs_body && (open_all || !small || toggle);
                let body = open_here.then(|| getter.get(&entry.name));
                files += usize::from(body.is_some());
                bytes += entry.payload.as_ref().map_or(0, Vec::len) + entry.name.len();
                batch.push((entry, body));
                if batch.len() >= BATCH_ENTRIES || files >= BATCH_FILES || bytes >= BATCH_BYTES {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ENTRIES));
                    (files, bytes) = (0, 0);
                    let sent = match tx.try_send(Ok(full)) {
                        Ok(()) => {
                            open_all = false;
                            Ok(())
                        }
                        Err(TrySendError::Full(full)) => {
                            open_all = true;
                            tx.send(full).map_err(drop)
                        }
                        Err(TrySendError::Disconnected(_)) => Err(()),
                    };
                    if sent.is_err() {
                        return; // the assembler stopped
                    }
                }
            }
            Ok(None) => {
                if !batch.is_empty() {
                    let _ = tx.send(Ok(batch));
                }
                return;
            }
            Err(e) => {
                if !batch.is_empty() && tx.send(Ok(batch)).is_err() {
                    return;
                }
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// The calling thread's view: entries in order, the opened file parked for the getter.
struct Prefetched {
    rx: Receiver<Result<Vec<Item>>>,
    batch: std::vec::IntoIter<Item>,
    opened: Rc<RefCell<Option<io::Result<FileBody>>>>,
    done: bool,
}

impl Unpacker for Prefetched {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some((entry, body)) = self.batch.next() {
                *self.opened.borrow_mut() = body;
                return Ok(Some(entry));
            }
            if self.done {
                return Ok(None);
            }
            match self.rx.recv() {
                Ok(Ok(batch)) => self.batch = batch.into_iter(),
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }
}

/// Hands out the file the helper opened for the current entry, or opens it.
struct OpenedGetter {
    opened: Rc<RefCell<Option<io::Result<FileBody>>>>,
    /// For the entries the helper leaves to this thread.
    fallback: PathFileGetter,
}

impl FileGetter for OpenedGetter {
    type Body = FileBody;

    fn get(&mut self, name: &[u8]) -> io::Result<FileBody> {
        match self.opened.borrow_mut().take() {
            Some(body) => body,
            None => self.fallback.get(name),
        }
    }

    fn body_len(body: &FileBody) -> Option<u64> {
        PathFileGetter::body_len(body)
    }
}

/// [`super::assemble`] from an extracted tree, with the metadata decoded and the files
/// opened on a helper thread; returns the number of bytes written.
///
/// On archives of many small files, inflating and parsing the metadata and opening each
/// file (path lookup, `openat`, `fstat`) are more than half of the work; the helper decodes
/// and opens the files (of those up to 16 KiB every other one), in archive order, and hands batches of entries with their
/// open files to the calling thread, which opens the rest and reads, checks and writes
/// exactly as [`super::assemble`] does: same
/// output, same checks, the same errors in the same order. At most two batches wait, each
/// of at most 128 entries, 32 open files and about 64 KiB of payload. The helper stops at
/// its next batch once this returns, on success or error.
pub fn assemble_parallel<U: Unpacker + Send + 'static, W: Write>(
    unpacker: U,
    getter: PathFileGetter,
    out: W,
) -> Result<u64> {
    let helper_getter = getter
        .try_clone()
        .map_err(Error::io("opening the tree again"))?;
    let (tx, rx) = sync_channel(QUEUE_DEPTH);
    std::thread::Builder::new()
        .name("tarsplit-open".into())
        .spawn(move || produce(unpacker, helper_getter, tx))
        .map_err(Error::io("starting the metadata thread"))?;
    let opened = Rc::new(RefCell::new(None));
    let unpacker = Prefetched {
        rx,
        batch: Vec::new().into_iter(),
        opened: opened.clone(),
        done: false,
    };
    assemble(
        unpacker,
        OpenedGetter {
            opened,
            fallback: getter,
        },
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::disassemble;
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
        // More files than a batch holds, of sizes around the block and batch limits.
        for i in 0..700u32 {
            let len = [0, 1, 511, 512, 513, 70_000][i as usize % 6];
            add(&format!("d{}/f{i}", i % 7), vec![(i % 251) as u8; len]);
        }
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
        let parallel = |meta: &[u8]| {
            let mut out = Vec::new();
            let getter = PathFileGetter::new(tree.path()).unwrap();
            assemble_parallel(
                JsonUnpacker::new(io::Cursor::new(meta.to_vec())),
                getter,
                &mut out,
            )
            .map(|n| (n, out))
        };
        let sequential = |meta: &[u8]| {
            let mut out = Vec::new();
            let getter = PathFileGetter::new(tree.path()).unwrap();
            assemble(JsonUnpacker::new(meta), getter, &mut out).map(|n| (n, out))
        };
        let (n, out) = parallel(&meta).unwrap();
        assert_eq!((n, &out), (tar.len() as u64, &tar));

        // A changed body, a missing file, a body of another size: the same error.
        std::fs::write(tree.path().join("d3/f10"), vec![9u8; 513]).unwrap();
        let (p, s) = (parallel(&meta).unwrap_err(), sequential(&meta).unwrap_err());
        assert!(matches!(p, Error::ChecksumMismatch { .. }), "{p}");
        assert_eq!(p.to_string(), s.to_string());
        std::fs::remove_file(tree.path().join("d3/f10")).unwrap();
        let (p, s) = (parallel(&meta).unwrap_err(), sequential(&meta).unwrap_err());
        assert!(matches!(p, Error::Get { .. }), "{p}");
        assert_eq!(p.to_string(), s.to_string());
        std::fs::write(tree.path().join("d3/f10"), vec![9u8; 10]).unwrap();
        let (p, s) = (parallel(&meta).unwrap_err(), sequential(&meta).unwrap_err());
        assert!(matches!(p, Error::SizeMismatch { .. }), "{p}");
        assert_eq!(p.to_string(), s.to_string());

        // Bad metadata part-way: the error of the sequential assembler.
        let text = String::from_utf8(meta).unwrap();
        let cut = text.lines().take(300).collect::<Vec<_>>().join("\n") + "\n{\"type\":1,";
        let (p, s) = (
            parallel(cut.as_bytes()).unwrap_err(),
            sequential(cut.as_bytes()).unwrap_err(),
        );
        assert_eq!(p.to_string(), s.to_string());
    }
}
