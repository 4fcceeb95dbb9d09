//! Decoding metadata on a second thread, so that JSON parsing and base64 decoding overlap
//! with reading file bodies during reassembly.

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
}
