//! Work on a second thread: decoding metadata ([`BackgroundUnpacker`]), so that JSON
//! parsing and base64 decoding overlap with reading file bodies during reassembly, and
//! writing it ([`BackgroundWriter`]), so that gzip compression overlaps with disassembly.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::{Entry, Unpacker};
use crate::error::{Error, Result};

/// Entries per batch sent between threads (batches amortise the channel cost).
const BATCH_ENTRIES: usize = 512;
/// Payload bytes per batch; with [`QUEUE_DEPTH`] this bounds the memory in flight.
const BATCH_BYTES: usize = 1 << 20;
/// Batches that may wait in the queue.
const QUEUE_DEPTH: usize = 2;

/// Runs any [`Unpacker`] on a background thread and yields its entries in order.
///
/// Memory in flight is bounded: at most `QUEUE_DEPTH` batches of about 1 MiB of payload
/// (plus one entry) wait between the threads.
#[derive(Debug)]
pub struct BackgroundUnpacker {
    rx: Receiver<Result<Vec<Entry>>>,
    batch: std::vec::IntoIter<Entry>,
    worker: Option<JoinHandle<()>>,
    done: bool,
}

impl BackgroundUnpacker {
    /// Starts decoding `inner` on a new thread.
    pub fn spawn<U: Unpacker + Send + 'static>(inner: U) -> Self {
        let (tx, rx) = sync_channel(QUEUE_DEPTH);
        let worker = std::thread::Builder::new()
            .name("tarsplit-unpack".into())
            .spawn(move || produce(inner, tx))
            .expect("spawning the metadata decoder thread");
        BackgroundUnpacker {
            rx,
            batch: Vec::new().into_iter(),
            worker: Some(worker),
            done: false,
        }
    }
}

fn produce<U: Unpacker>(mut inner: U, tx: SyncSender<Result<Vec<Entry>>>) {
    let mut batch = Vec::with_capacity(BATCH_ENTRIES);
    let mut bytes = 0;
    loop {
        match inner.next_entry() {
            Ok(Some(entry)) => {
                bytes += entry.payload.as_ref().map_or(0, Vec::len) + entry.name.len();
                batch.push(entry);
                if batch.len() >= BATCH_ENTRIES || bytes >= BATCH_BYTES {
                    bytes = 0;
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ENTRIES));
                    if tx.send(Ok(full)).is_err() {
                        return; // the consumer went away
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

impl Unpacker for BackgroundUnpacker {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(e) = self.batch.next() {
                return Ok(Some(e));
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
                    if let Some(w) = self.worker.take()
                        && w.join().is_err()
                    {
                        return Err(Error::Io {
                            context: "decoding tar-split metadata",
                            source: std::io::Error::other("decoder thread panicked"),
                        });
                    }
                    return Ok(None);
                }
            }
        }
    }
}

impl Drop for BackgroundUnpacker {
    fn drop(&mut self) {
        // Dropping the receiver makes the producer's next send fail, so it stops; the
        // thread is detached rather than joined so a slow reader never blocks a drop.
        self.worker.take();
    }
}

/// Bytes per chunk handed to the [`BackgroundWriter`] thread.
const WRITE_CHUNK: usize = 128 << 10;

/// A `Write` whose bytes are written to the inner writer on a thread of its own, in
/// 128 KiB chunks (the metadata's gzip encoder, typically: compression then overlaps with
/// disassembly on another core).
///
/// Memory is bounded: at most `QUEUE_DEPTH` chunks wait, and chunks go back to the writer
/// for reuse. Call [`BackgroundWriter::finish`] to flush and get the inner writer back with
/// any error; an error on the thread also fails the next `write`.
#[derive(Debug)]
pub struct BackgroundWriter<W: Write + Send + 'static> {
    current: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
    worker: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> BackgroundWriter<W> {
    /// Starts writing to `inner` on a new thread.
    pub fn spawn(inner: W) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE_DEPTH);
        let (spare_tx, spare) = sync_channel::<Vec<u8>>(QUEUE_DEPTH + 1);
        let worker = std::thread::Builder::new()
            .name("tarsplit-write".into())
            .spawn(move || {
                let mut inner = inner;
                for mut chunk in rx {
                    inner.write_all(&chunk)?;
                    chunk.clear();
                    let _ = spare_tx.try_send(chunk);
                }
                inner.flush()?;
                Ok(inner)
            })?;
        Ok(BackgroundWriter {
            current: Vec::with_capacity(WRITE_CHUNK),
            tx: Some(tx),
            spare,
            worker: Some(worker),
        })
    }

    fn send_current(&mut self) -> io::Result<()> {
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(WRITE_CHUNK));
        let full = std::mem::replace(&mut self.current, next);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(full).is_ok());
        if !sent {
            // The thread stopped: its error is the one to report.
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the metadata writer thread stopped early")));
        }
        Ok(())
    }

    fn join(&mut self) -> io::Result<W> {
        self.tx.take();
        match self.worker.take() {
            Some(worker) => worker
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the metadata writer thread panicked"))),
            None => Err(io::Error::other(
                "the metadata writer thread already stopped",
            )),
        }
    }

    /// Writes what is buffered, waits for the thread to flush the inner writer, and
    /// returns it.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.current.is_empty() {
            self.send_current()?;
        }
        self.join()
    }
}

impl<W: Write + Send + 'static> Write for BackgroundWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(WRITE_CHUNK - self.current.len());
        self.current.extend_from_slice(&data[..n]);
        if self.current.len() == WRITE_CHUNK {
            self.send_current()?;
        }
        Ok(n)
    }

    /// Hands the buffered bytes to the thread; they are written (and the inner writer
    /// flushed) by [`BackgroundWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        if !self.current.is_empty() {
            self.send_current()?;
        }
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for BackgroundWriter<W> {
    fn drop(&mut self) {
        // Closing the channel ends the thread after what was sent; not joined, so a slow
        // writer never blocks a drop.
        self.tx.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::JsonUnpacker;

    #[test]
    fn yields_the_same_entries_and_errors() {
        let mut text = String::new();
        for i in 0..3000 {
            text.push_str(&format!("{{\"type\":1,\"name\":\"f{i}\",\"size\":1,\"payload\":\"AAAAAAAAAAA=\",\"position\":{i}}}\n"));
        }
        text.push_str("{\"type\":1,\"name\":\"f7\"}\n");
        let mut bg =
            BackgroundUnpacker::spawn(JsonUnpacker::new(std::io::Cursor::new(text.into_bytes())));
        for i in 0..3000 {
            let e = bg.next_entry().unwrap().unwrap();
            assert_eq!(e.name, format!("f{i}").into_bytes());
        }
        assert!(matches!(bg.next_entry(), Err(Error::DuplicatePath { .. })));
        assert!(bg.next_entry().unwrap().is_none());
    }

    #[test]
    fn background_writer_keeps_order_and_reports_errors() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut w = BackgroundWriter::spawn(Vec::new()).unwrap();
        for piece in data.chunks(70_001) {
            w.write_all(piece).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(w.finish().unwrap(), data);

        #[derive(Debug)]
        struct Failing;
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = BackgroundWriter::spawn(Failing).unwrap();
        let mut failed = None;
        for _ in 0..64 {
            if let Err(e) = w.write_all(&[0u8; 100_000]) {
                failed = Some(e);
                break;
            }
        }
        let err = match failed {
            Some(e) => e,
            None => w.finish().unwrap_err(),
        };
        assert_eq!(err.to_string(), "disk full");
    }
}
