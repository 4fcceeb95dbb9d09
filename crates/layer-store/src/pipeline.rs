//! The one-pass register pipeline: hash, split and apply a layer tar together.
//!
//! Two threads share the work. The *reader* pulls the input, hashes every byte (the DiffID)
//! and runs the tar-split disassembler, which gzips its JSON into the transaction's
//! `tar-split.json.gz`; the bytes it passes on travel in 1 MiB chunks over a bounded channel
//! to the *applier*, the calling thread, where the driver extracts them. Hashing and gzip thus
//! overlap with file creation, and memory stays bounded by the channel (at most
//! `CHUNKS_IN_FLIGHT` chunks) whatever the layer size.
//!
//! Each pipeline holds about 8 MiB (chunks in flight and spare, the apply buffer, the gzip
//! state), so at most `MAX_PIPELINES` run at once in a process; more registers at once wait
//! for a turn. Two threads per pipeline already keep two cores busy, so on the machines this
//! is tuned for the wait costs no throughput, and a process registering any number of layers
//! at once stays well under 64 MiB (eight unbounded pipelines measured 73 MiB).

use std::io::{self, BufWriter, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex};

use graphdriver::Driver;
use layer_archive::EntrySequence;
use layer_digest::{DiffId, DigestReader};
use layer_meta::{TarSplitWriter, Transaction};
use tarsplit::asm::Disassembler;
use tarsplit::storage::{DiscardFilePutter, JsonPacker};

use crate::error::{Error, Result};

const CHUNK: usize = 1 << 20;
const CHUNKS_IN_FLIGHT: usize = 4;
/// Pipelines that may run at once in one process (`register_chain` runs up to four).
const MAX_PIPELINES: usize = 4;

/// The pipelines running in this process, and a wake-up for those waiting for a turn.
static RUNNING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// A turn to run a pipeline; the next waiter's when dropped.
struct Turn;

impl Turn {
    fn take() -> Turn {
        let (count, freed) = &RUNNING;
        let mut running = count.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= MAX_PIPELINES {
            running = freed.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let (count, freed) = &RUNNING;
        *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        freed.notify_one();
    }
}

/// What applying a layer produced.
pub(crate) struct Applied {
    pub(crate) diff_id: DiffId,
    pub(crate) size: u64,
}

/// Reads `tar` once: hashes it, records its tar-split metadata into `tx` and has the driver
/// apply the same bytes into `cache_id`.
///
/// The driver may stop reading at the end-of-archive blocks; the reader thread still reads
/// to EOF so that trailing bytes reach the digest and the tar-split metadata (the DiffID
/// covers every byte, as moby's).
pub(crate) fn apply_and_split<R: Read + Send>(
    driver: &dyn Driver,
    tx: &mut Transaction,
    cache_id: &str,
    parent_cache: Option<&str>,
    tar: R,
) -> Result<Applied> {
    let _turn = {
        let _span = tracing::debug_span!("wait_for_turn", cache = cache_id).entered();
        Turn::take()
    };
    let tar_split = tx.tar_split_writer()?;
    let stop = AtomicBool::new(false);
    let (chunks_tx, chunks_rx) = sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT + 2);

    let (applied, split) = std::thread::scope(|s| {
        let reader =
            s.spawn(|| split_and_forward(tar, tar_split, chunks_tx, spare_rx, &stop, cache_id));
        let mut input = ChunkReader {
            rx: chunks_rx,
            spare: spare_tx,
            current: Vec::new(),
            pos: 0,
        };
        let applied = {
            let _span = tracing::info_span!("apply", cache = cache_id).entered();
            driver.apply_diff_listed(cache_id, parent_cache, &mut input)
        };
        if applied.is_err() {
            // No point reading a multi-gigabyte input to its end for a layer we will discard.
            stop.store(true, Ordering::Relaxed);
        }
        drop(input);
        let split = reader.join().unwrap_or_else(|_| {
            Err(Error::io(
                format!("layer {cache_id}: reader thread panicked"),
                io::Error::other("panic"),
            ))
        });
        (applied, split)
    });
    // A tar-split failure (malformed or truncated tar) explains an apply failure better than
    // the apply error does, so it wins; a reader stopped because the apply failed does not.
    match (split?, applied) {
        (Some((diff_id, split_entries)), Ok((size, applied_entries))) => {
            // Defence in depth: both readers decode with one codec, so they agree unless
            // something between them (or in the codec) is wrong; then refuse the layer.
            if let Some(applied_entries) = applied_entries
                && applied_entries != split_entries
            {
                return Err(Error::EntryMismatch {
                    layer: cache_id.to_owned(),
                    applier: applied_entries,
                    tarsplit: split_entries,
                });
            }
            Ok(Applied { diff_id, size })
        }
        (_, Err(e)) => Err(e.into()),
        (None, Ok(_)) => Err(Error::io(
            format!("layer {cache_id}: reading stopped before the end"),
            io::Error::other("stopped"),
        )),
    }
}

/// The reader thread: input → digest → disassembler → chunks for the applier.
fn split_and_forward<R: Read>(
    tar: R,
    tar_split: TarSplitWriter,
    chunks: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    stop: &AtomicBool,
    cache_id: &str,
) -> Result<Option<(DiffId, EntrySequence)>> {
    let packer = JsonPacker::new(BufWriter::with_capacity(256 << 10, tar_split));
    let mut disasm = Disassembler::new(DigestReader::new(tar), packer, DiscardFilePutter);
    let mut applier_gone = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut buf = spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        buf.resize(CHUNK, 0);
        let n = fill(&mut disasm, &mut buf).map_err(|e| split_error(cache_id, e))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        // Once the applier has stopped reading (end-of-archive reached), keep reading to EOF
        // for the digest and the metadata, but stop sending.
        if !applier_gone && chunks.send(buf).is_err() {
            applier_gone = true;
        }
    }
    drop(chunks);
    let entries = disasm.entries();
    let (hashed, packer, _, _) = disasm.into_parts();
    let mut buffered = packer.into_inner();
    buffered
        .flush()
        .map_err(|e| Error::io(format!("layer {cache_id}: write tar-split metadata"), e))?;
    let tar_split = buffered.into_inner().map_err(|e| {
        Error::io(
            format!("layer {cache_id}: write tar-split metadata"),
            e.into_error(),
        )
    })?;
    tar_split.finish()?;
    Ok(Some((DiffId::new(hashed.digest()), entries)))
}

/// Reads until `buf` is full or EOF.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The applier's view of the stream: chunks from the reader thread, buffers sent back for
/// reuse.
struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    spare: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(next) => {
                    let done = std::mem::replace(&mut self.current, next);
                    let _ = self.spare.try_send(done);
                    self.pos = 0;
                }
                // The reader thread finished (EOF) or failed; its error is reported by join.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Turns an I/O error from the disassembler back into the tar-split error it carries.
fn split_error(layer: &str, e: io::Error) -> Error {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<tarsplit::Error>())
    {
        let inner = e.into_inner().expect("checked above");
        let inner = inner.downcast::<tarsplit::Error>().expect("checked above");
        return Error::TarSplit {
            layer: layer.to_owned(),
            source: *inner,
        };
    }
    Error::io(format!("layer {layer}: read layer tar"), e)
}

#[cfg(test)]
mod turn_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{MAX_PIPELINES, Turn};

    /// However many registers start at once, at most `MAX_PIPELINES` run, and every one of
    /// them gets its turn.
    #[test]
    fn turns_bound_the_pipelines_and_serve_everyone() {
        let now = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..(3 * MAX_PIPELINES) {
                s.spawn(|| {
                    let _turn = Turn::take();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    now.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(done.load(Ordering::SeqCst), 3 * MAX_PIPELINES);
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=MAX_PIPELINES).contains(&peak), "peak {peak}");
    }
}
