//! Transactions: fill a write-set, then publish it as `sha256/<hex>` with one atomic rename.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use flate2::Compression;
use flate2::write::GzEncoder;
use layer_digest::{ChainId, DiffId};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::format::{self, Descriptor};
use crate::fsio::SeamFile;
use crate::layout::{self, LAYERS_DIR, layer_file};
use crate::store::{Durability, Inner, TarSplitReader, WriteSet};

/// A layer being written. Nothing is visible under `sha256/` until [`Transaction::commit`].
///
/// Dropping an uncommitted transaction removes its write-set (best effort; a failure leaves a
/// stale write-set that [`crate::MetaStore::leftovers`] reports).
#[derive(Debug)]
pub struct Transaction {
    store: Arc<Inner>,
    ws: Option<WriteSet>,
    tar_split: Option<Arc<Mutex<TarSplitState>>>,
}

impl Transaction {
    pub(crate) fn new(store: Arc<Inner>, ws: WriteSet) -> Transaction {
        Transaction {
            store,
            ws: Some(ws),
            tar_split: None,
        }
    }

    fn ws(&self) -> &WriteSet {
        self.ws
            .as_ref()
            .expect("write-set present until commit or cancel")
    }

    /// The write-set directory (moby's `tx.String()`).
    pub fn path(&self) -> PathBuf {
        self.store.fs.path(&self.ws().rel)
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<()> {
        let rel = format!("{}/{name}", self.ws().rel);
        self.store.fs.write_file(
            &rel,
            data,
            layout::FILE_MODE,
            self.store.durability == Durability::Full,
        )
    }

    /// Writes `diff`: `sha256:<hex>`.
    pub fn set_diff_id(&mut self, diff_id: &DiffId) -> Result<()> {
        self.write(layer_file::DIFF, diff_id.as_str().as_bytes())
    }

    /// Writes `size` in decimal.
    pub fn set_size(&mut self, size: u64) -> Result<()> {
        if size > i64::MAX as u64 {
            return Err(Error::InvalidArgument {
                what: "size",
                value: size.to_string(),
                reason: "exceeds i64::MAX",
            });
        }
        self.write(layer_file::SIZE, size.to_string().as_bytes())
    }

    /// Writes `cache-id`, the graphdriver's directory for this layer.
    pub fn set_cache_id(&mut self, cache_id: &str) -> Result<()> {
        if let Some(reason) = layout::cache_id_problem(cache_id) {
            return Err(Error::InvalidArgument {
                what: "cache id",
                value: cache_id.to_owned(),
                reason,
            });
        }
        self.write(layer_file::CACHE_ID, cache_id.as_bytes())
    }

    /// Writes `parent`, the parent's chain ID.
    pub fn set_parent(&mut self, parent: &ChainId) -> Result<()> {
        self.write(layer_file::PARENT, parent.as_str().as_bytes())
    }

    /// Writes `descriptor.json` (moby does this only for descriptors with a digest).
    pub fn set_descriptor(&mut self, descriptor: &Descriptor) -> Result<()> {
        self.write(
            layer_file::DESCRIPTOR,
            &format::encode_descriptor(descriptor),
        )
    }

    /// Opens `tar-split.json.gz`; what is written to the returned writer is gzipped into it.
    ///
    /// The writer is `Send` and may outlive this borrow. Finish it with
    /// [`TarSplitWriter::finish`], or let [`Transaction::commit`] finish it. A write error
    /// poisons it, and the commit then fails rather than publish a truncated stream.
    pub fn tar_split_writer(&mut self) -> Result<TarSplitWriter> {
        let rel = format!("{}/{}", self.ws().rel, layer_file::TAR_SPLIT);
        let path = self.store.fs.path(&rel);
        if self.tar_split.is_some() {
            return Err(Error::TarSplit {
                path,
                reason: "already opened in this transaction",
            });
        }
        let file = self.store.fs.create_file(&rel, layout::FILE_MODE)?;
        let state = Arc::new(Mutex::new(TarSplitState::Open {
            // Level 1: the metadata is rewritten rarely and read back by gunzip, so the
            // smaller file of level 6 (Go's default) is not worth 3x the CPU on the register
            // path. Any level reads the same in Go and here.
            encoder: Box::new(GzEncoder::new(file, Compression::fast())),
            sync: self.store.durability == Durability::Full,
        }));
        self.tar_split = Some(Arc::clone(&state));
        Ok(TarSplitWriter { state, path })
    }

    /// Reads back the gunzipped `tar-split.json.gz` of this transaction, once its writer is
    /// finished: what the commit would publish.
    pub fn tar_split_reader(&self) -> Result<TarSplitReader> {
        let rel = format!("{}/{}", self.ws().rel, layer_file::TAR_SPLIT);
        let path = self.store.fs.path(&rel);
        let finished = self
            .tar_split
            .as_ref()
            .is_some_and(|s| matches!(*lock(s), TarSplitState::Finished));
        if !finished {
            return Err(Error::TarSplit {
                path,
                reason: "not finished",
            });
        }
        match self.store.fs.open_read(&rel) {
            Ok(Some(file)) => Ok(TarSplitReader::new(file, path)),
            Ok(None) => Err(Error::Corrupt {
                path,
                problem: crate::Corruption::Missing,
            }),
            Err(e) => Err(self.store.fs.io_error("open", &rel, e)),
        }
    }

    /// Publishes the write-set as the layer `chain_id`.
    ///
    /// Finishes the tar-split writer if still open, makes the files durable (per
    /// [`Durability`]), creates `sha256/` if needed (`ENOTDIR` if a file is in the way, as moby
    /// reports), then renames the write-set to `sha256/<hex>` without ever replacing anything:
    /// an existing entry, even an empty directory, gives [`Error::LayerExists`] (`EEXIST`). On
    /// any error the write-set is removed and nothing is visible under `sha256/`.
    pub fn commit(mut self, chain_id: &ChainId) -> Result<()> {
        let _span = tracing::debug_span!("layerdb_commit", layer = %chain_id).entered();
        let target = layout::layer_dir(chain_id)?;
        if let Some(state) = self.tar_split.take() {
            finish_state(&mut lock(&state), &self.store.fs.path(&self.ws().rel))?;
        }
        let fs = &self.store.fs;
        let ws_rel = self.ws().rel.clone();
        match self.store.durability {
            Durability::Full => fs.sync_dir(&ws_rel)?,
            Durability::Batch => fs.sync_fs(&ws_rel)?,
            Durability::None => {}
        }
        if fs.ensure_dir(LAYERS_DIR, layout::SHARED_DIR_MODE)?
            && self.store.durability == Durability::Full
        {
            fs.sync_dir("")?;
        }
        match fs.rename_noreplace(&ws_rel, &target) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => {
                return Err(Error::LayerExists {
                    chain_id: chain_id.clone(),
                    path: fs.path(&target),
                });
            }
            Err(e) => return Err(fs.io_error("rename", &ws_rel, e)),
        }
        if self.store.durability == Durability::Full
            && let Err(error) = fs.sync_dir(LAYERS_DIR)
        {
            // The caller will treat the layer as not registered (and may delete its driver
            // directory), so don't leave it visible: move it back into the write-set.
            match fs.rename_noreplace(&target, &ws_rel) {
                Ok(()) => {}
                Err(undo) => {
                    tracing::error!(layer = %chain_id, %error, %undo, "cannot undo commit after fsync failure");
                    if let Some(ws) = self.ws.take() {
                        ws.forget();
                    }
                }
            }
            return Err(error);
        }
        if let Some(ws) = self.ws.take() {
            ws.forget();
        }
        tracing::debug!(layer = %chain_id, "layer metadata committed");
        Ok(())
    }

    /// Abandons the transaction and removes its write-set.
    pub fn cancel(mut self) -> Result<()> {
        self.close_tar_split();
        match self.ws.take() {
            Some(ws) => ws.remove(),
            None => Ok(()),
        }
    }

    fn close_tar_split(&mut self) {
        if let Some(state) = self.tar_split.take() {
            // Drop the encoder without writing its trailer: the file is about to go.
            *lock(&state) = TarSplitState::Closed;
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.close_tar_split();
    }
}

#[derive(Debug)]
enum TarSplitState {
    Open {
        encoder: Box<GzEncoder<SeamFile>>,
        sync: bool,
    },
    Failed,
    Finished,
    Closed,
}

fn lock(state: &Mutex<TarSplitState>) -> MutexGuard<'_, TarSplitState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn finish_state(state: &mut TarSplitState, ws_path: &std::path::Path) -> Result<()> {
    let path = ws_path.join(layer_file::TAR_SPLIT);
    match std::mem::replace(state, TarSplitState::Failed) {
        TarSplitState::Open { encoder, sync } => {
            let mut file = encoder.finish().map_err(|e| Error::Io {
                op: "write",
                path: path.clone(),
                source: e,
            })?;
            if sync {
                file.sync()?;
            }
            tracing::trace!(file = file.rel(), "tar-split finished");
            *state = TarSplitState::Finished;
            Ok(())
        }
        TarSplitState::Finished => {
            *state = TarSplitState::Finished;
            Ok(())
        }
        TarSplitState::Failed => Err(Error::TarSplit {
            path,
            reason: "a write failed; the stream is incomplete",
        }),
        TarSplitState::Closed => Err(Error::TarSplit {
            path,
            reason: "the transaction has ended",
        }),
    }
}

/// Gzips the tar-split JSON stream into `tar-split.json.gz` of a transaction.
#[derive(Debug)]
pub struct TarSplitWriter {
    state: Arc<Mutex<TarSplitState>>,
    path: PathBuf,
}

impl TarSplitWriter {
    /// Writes the gzip trailer and (with [`Durability::Full`]) fsyncs the file.
    pub fn finish(self) -> Result<()> {
        let ws = self.path.parent().unwrap_or(&self.path).to_owned();
        finish_state(&mut lock(&self.state), &ws)
    }
}

impl Write for TarSplitWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = lock(&self.state);
        let result = match &mut *state {
            TarSplitState::Open { encoder, .. } => encoder.write(buf),
            _ => {
                return Err(io::Error::other(format!(
                    "{}: tar-split writer is no longer open",
                    self.path.display()
                )));
            }
        };
        result.map_err(|e| {
            // Poisoned: a gap in the stream must never be committed.
            *state = TarSplitState::Failed;
            io::Error::new(e.kind(), format!("write {}: {e}", self.path.display()))
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut state = lock(&self.state);
        let result = match &mut *state {
            TarSplitState::Open { encoder, .. } => encoder.flush(),
            _ => return Ok(()),
        };
        result.map_err(|e| {
            *state = TarSplitState::Failed;
            io::Error::new(e.kind(), format!("flush {}: {e}", self.path.display()))
        })
    }
}
