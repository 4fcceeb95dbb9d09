//! Reading a layer back: tar-split reassembly, verified against the DiffID.

use std::io::{self, BufReader, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use graphdriver::Driver;
use layer_digest::{DiffId, Digester};
use layer_meta::TarSplitReader;
use tarsplit::asm::Assembler;
use tarsplit::storage::{FileGetter, JsonUnpacker, PathFileGetter};

use crate::error::{Error, Result};
use crate::layer::Layer;

/// Where a layer's file bodies are read from: the driver's payload directory when it offers
/// one (no mount needed), else the mounted layer, put back when the stream is dropped.
struct LayerFiles {
    getter: PathFileGetter,
    mounted: Option<(Arc<dyn Driver>, String)>,
}

impl FileGetter for LayerFiles {
    type Body = <PathFileGetter as FileGetter>::Body;

    fn get(&mut self, name: &[u8]) -> io::Result<Self::Body> {
        self.getter.get(name)
    }

    fn body_len(body: &Self::Body) -> Option<u64> {
        PathFileGetter::body_len(body)
    }
}

impl Drop for LayerFiles {
    fn drop(&mut self) {
        if let Some((driver, id)) = self.mounted.take()
            && let Err(e) = driver.put(&id)
        {
            tracing::warn!(id, error = %crate::error::with_causes(&e), "unmount after tar stream failed");
        }
    }
}

fn open_files(layer: &Layer) -> Result<LayerFiles> {
    open_dir_files(
        layer.0.backend.driver.clone(),
        layer.cache_id(),
        layer.chain_id().as_ref(),
    )
}

fn open_dir_files(driver: Arc<dyn Driver>, id: &str, what: &str) -> Result<LayerFiles> {
    let (root, mounted) = match driver.payload_root(id)? {
        Some(root) => (root, None),
        None => (driver.get(id, "")?, Some((driver.clone(), id.to_owned()))),
    };
    let getter = PathFileGetter::new(&root).map_err(|e| {
        if let Some((d, id)) = &mounted {
            let _ = d.put(id);
        }
        Error::io(format!("layer {what}: open {}", root.display()), e)
    })?;
    Ok(LayerFiles { getter, mounted })
}

/// The tar that tar-split metadata `meta` and driver directory `cache_id` reassemble to,
/// unverified (whoever reads it hashes it): how a register hands its own copy of a layer
/// to another register.
pub(crate) fn reassemble(
    driver: Arc<dyn Driver>,
    cache_id: &str,
    meta: TarSplitReader,
) -> Result<impl Read + Send + use<>> {
    let files = open_dir_files(driver, cache_id, cache_id)?;
    Ok(Assembler::new(
        JsonUnpacker::new(BufReader::with_capacity(256 << 10, meta)),
        files,
    ))
}

/// The layer's original tar bytes, checked against its DiffID at EOF.
pub(crate) fn verified_stream(layer: &Layer) -> Result<Box<dyn Read + Send>> {
    let _span = tracing::debug_span!("tar_stream", layer = %layer.chain_id()).entered();
    let meta_reader = layer.0.backend.meta.tar_split_reader(layer.chain_id())?;
    let files = open_files(layer)?;
    let asm = Assembler::new(
        JsonUnpacker::new(BufReader::with_capacity(256 << 10, meta_reader)),
        files,
    );
    // Three stages, each on its own thread with at most `CHUNKS_AHEAD` 256 KiB chunks queued
    // after it (memory stays bounded; dropping the stream stops both threads at their next
    // chunk): reassembly (tar-split decoding, opening and reading the files), the DiffID
    // hash, and the caller. On big files reading and hashing cost about the same, so a
    // caller that only writes the stream out gets it at the pace of the slower of the two
    // instead of their sum.
    let what = layer.chain_id().to_string();
    let reassembled = Prefetch::spawn(asm, "tar-stream-read", what.clone());
    let verified = Verified {
        inner: reassembled,
        digester: Some(Digester::sha256()),
        layer: layer.clone(),
    };
    Ok(Box::new(Prefetch::spawn(verified, "tar-stream-hash", what)))
}

const CHUNKS_AHEAD: usize = 4;

/// A reader fed by a thread that reads `inner` ahead in `STREAM_BUFFER`-sized chunks.
///
/// Chunks travel back to the thread once read, so the stream reuses `CHUNKS_AHEAD + 2`
/// buffers instead of allocating (and, above glibc's mmap threshold, mapping, faulting in
/// and unmapping) one per chunk.
struct Prefetch {
    rx: Receiver<io::Result<Vec<u8>>>,
    spare: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Prefetch {
    fn spawn<R: Read + Send + 'static>(mut inner: R, thread: &str, what: String) -> Prefetch {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(CHUNKS_AHEAD);
        let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(CHUNKS_AHEAD + 2);
        let spawned = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                loop {
                    let mut buf = spare_rx
                        .try_recv()
                        .unwrap_or_else(|_| vec![0u8; STREAM_BUFFER]);
                    // Reused buffers keep their length (and contents, overwritten below).
                    buf.resize(STREAM_BUFFER, 0);
                    let mut n = 0;
                    let result = loop {
                        match inner.read(&mut buf[n..]) {
                            Ok(0) => break Ok(()),
                            Ok(k) => {
                                n += k;
                                if n == buf.len() {
                                    break Ok(());
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    buf.truncate(n);
                    let last = n == 0 || result.is_err();
                    if n > 0 && tx.send(Ok(buf)).is_err() {
                        return; // the reader went away
                    }
                    if let Err(e) = result {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    if last {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            let (tx, rx) = sync_channel(1);
            let _ = tx.send(Err(io::Error::other(format!(
                "{what}: start tar stream thread: {e}"
            ))));
            return Prefetch {
                rx,
                spare: spare_tx,
                current: Vec::new(),
                pos: 0,
                done: false,
            };
        }
        Prefetch {
            rx,
            spare: spare_tx,
            current: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for Prefetch {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.current, chunk);
                    if used.capacity() > 0 {
                        let _ = self.spare.try_send(used);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read size towards the layer's files, whatever the caller's buffer.
const STREAM_BUFFER: usize = 256 << 10;

/// Hashes what passes and turns EOF into an error when the digest is not the DiffID.
struct Verified<R> {
    inner: R,
    digester: Option<Digester>,
    layer: Layer,
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match &mut self.digester {
            Some(d) if n > 0 => d.update(&buf[..n]),
            Some(_) => {
                let actual = DiffId::new(self.digester.take().expect("present").finish());
                if &actual != self.layer.diff_id() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        Error::VerificationFailed {
                            chain_id: self.layer.chain_id().clone(),
                            expected: self.layer.diff_id().clone(),
                            actual,
                        },
                    ));
                }
            }
            None => {}
        }
        Ok(n)
    }
}
