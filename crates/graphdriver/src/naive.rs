//! `NaiveDiffDriver`: diff operations for any [`ProtoDriver`] by walking and comparing trees.
//!
//! A driver that can only create and mount directories (vfs) gets `diff`, `changes`,
//! `apply_diff` and `diff_size` from here (moby `fsdiff.go`):
//!
//! * `diff`: with no parent, the whole layer as a tar; otherwise the changes against the
//!   parent ([`layer_archive::changes::changes_dirs`]) exported with whiteouts. The tar is
//!   produced by a thread into a pipe, so memory stays bounded; the layer is released when
//!   the stream is finished or dropped.
//! * `changes`: the tree comparison itself, sorted by path.
//! * `apply_diff`: [`layer_archive::apply_layer`] with plain whiteouts; returns the sum of
//!   the header sizes.
//! * `diff_size`: [`layer_archive::changes::changes_size`] of the changes.
//!
//! moby sleeps until the next whole second when a diff stream is closed, to paper over
//! whole-second mtimes; we compare full-nanosecond mtimes and export them (PAX `mtime`), so
//! no sleep is needed. See [`layer_archive::changes`] for the reasoning.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::driver::{CreateOpts, DiffDriver, ProtoDriver, Status, TarStream};
use crate::error::{Error, Result};
use crate::ownership::Ownership;
use layer_archive::apply::apply_layer_report;
use layer_archive::change::Change;
use layer_archive::walk::{NoConversion, WalkOptions, tar_directory};
use layer_archive::{ApplyOptions, EntrySequence, changes, export};

/// Options of the naive differ.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NaiveOptions {
    /// Ignore unsupported xattrs when applying (moby `BestEffortXattrs`).
    pub best_effort_xattrs: bool,
    /// How exported tars record mtimes and xattrs.
    pub walk: WalkOptions,
    /// The owners' ID mapping: applied tars map container → host, produced ones back.
    pub ownership: Ownership,
}

/// A [`ProtoDriver`] plus tree-walking diff operations. See the module doc.
#[derive(Debug)]
pub struct NaiveDiffDriver<P> {
    inner: Arc<P>,
    options: NaiveOptions,
}

impl<P: ProtoDriver + 'static> NaiveDiffDriver<P> {
    /// Wraps `inner` with default options.
    pub fn new(inner: P) -> Self {
        Self::with_options(inner, NaiveOptions::default())
    }

    /// Wraps `inner`.
    pub fn with_options(inner: P, options: NaiveOptions) -> Self {
        NaiveDiffDriver {
            inner: Arc::new(inner),
            options,
        }
    }

    /// The wrapped driver.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// Gets `id`, runs `f` on its path, puts it back whatever happened.
    fn with_layer<T>(&self, id: &str, f: impl FnOnce(&PathBuf) -> Result<T>) -> Result<T> {
        let path = self.inner.get(id, "")?;
        let result = f(&path);
        let put = self.inner.put(id);
        let value = result?;
        put?;
        Ok(value)
    }

    fn changes_against(&self, layer: &PathBuf, parent: Option<&str>) -> Result<Vec<Change>> {
        match parent {
            None => {
                changes::changes_dirs(layer, None).map_err(|e| Error::io("compare trees", layer, e))
            }
            Some(p) => self.with_layer(p, |parent_path| {
                changes::changes_dirs(layer, Some(parent_path))
                    .map_err(|e| Error::io("compare trees", layer, e))
            }),
        }
    }
}

impl<P: ProtoDriver + 'static> ProtoDriver for NaiveDiffDriver<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.inner.create(id, parent, opts)
    }
    fn create_read_write(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.inner.create_read_write(id, parent, opts)
    }
    fn remove(&self, id: &str) -> Result<()> {
        self.inner.remove(id)
    }
    fn get(&self, id: &str, mount_label: &str) -> Result<PathBuf> {
        self.inner.get(id, mount_label)
    }
    fn put(&self, id: &str) -> Result<()> {
        self.inner.put(id)
    }
    fn exists(&self, id: &str) -> bool {
        self.inner.exists(id)
    }
    fn status(&self) -> Status {
        self.inner.status()
    }
    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>> {
        self.inner.metadata(id)
    }
    fn cleanup(&self) -> Result<()> {
        self.inner.cleanup()
    }
    fn list(&self) -> Result<Vec<String>> {
        self.inner.list()
    }
    fn full_tree_dir(&self, id: &str) -> Result<Option<PathBuf>> {
        self.inner.full_tree_dir(id)
    }
}

impl<P: ProtoDriver + 'static> DiffDriver for NaiveDiffDriver<P> {
    fn diff(&self, id: &str, parent: Option<&str>) -> Result<TarStream> {
        let span = tracing::info_span!("naive_diff", layer = id, parent = parent.unwrap_or(""));
        let _enter = span.enter();
        let layer = self.inner.get(id, "")?;
        let changes = match parent {
            None => None,
            Some(_) => match self.changes_against(&layer, parent) {
                Ok(c) => Some(c),
                Err(e) => {
                    let _ = self.inner.put(id);
                    return Err(e);
                }
            },
        };
        let (reader, writer) = match io::pipe() {
            Ok(p) => p,
            Err(e) => {
                let _ = self.inner.put(id);
                return Err(Error::io("pipe", &layer, e));
            }
        };
        let driver = Arc::clone(&self.inner);
        let walk = self.options.walk;
        let ownership = self.options.ownership.clone();
        let id = id.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("diff-{}", &id[..id.len().min(12)]))
            .spawn(move || {
                let out = BufWriter::with_capacity(256 * 1024, writer);
                let mut owners = ownership.converter(NoConversion);
                let result = match &changes {
                    None => tar_directory(&layer, out, &walk, &mut owners),
                    Some(c) => export::export_changes_with(&layer, c, out, &walk, &mut owners),
                }
                .and_then(|mut w| w.flush());
                let put = driver.put(&id).map_err(io::Error::other);
                result.and(put)
            });
        match spawned {
            Ok(handle) => Ok(Box::new(ProducedTar {
                pipe: Some(reader),
                producer: Some(handle),
            })),
            Err(e) => Err(Error::Other(format!("spawning the diff thread: {e}"))),
        }
    }

    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>> {
        self.with_layer(id, |layer| self.changes_against(layer, parent))
    }

    fn apply_diff(&self, id: &str, parent: Option<&str>, diff: &mut dyn Read) -> Result<u64> {
        self.apply_diff_listed(id, parent, diff)
            .map(|(size, _)| size)
    }

    fn apply_diff_listed(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
    ) -> Result<(u64, Option<EntrySequence>)> {
        let span = tracing::info_span!(
            "naive_apply_diff",
            layer = id,
            parent = parent.unwrap_or("")
        );
        let _enter = span.enter();
        let opts = self.options.ownership.apply_options(ApplyOptions {
            best_effort_xattrs: self.options.best_effort_xattrs,
            ..ApplyOptions::for_current_user().with_layer(id)
        });
        self.with_layer(id, |layer| {
            let applied = apply_layer_report(layer, diff, &opts)?;
            Ok((applied.size, Some(applied.entries)))
        })
    }

    /// The layer's full tree holds every file of its tar under the tar's name, so where the
    /// wrapped driver keeps one on disk (vfs), it serves tar-split reassembly directly.
    fn payload_root(&self, id: &str) -> Result<Option<PathBuf>> {
        self.inner.full_tree_dir(id)
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64> {
        self.with_layer(id, |layer| {
            let changes = self.changes_against(layer, parent)?;
            changes::changes_size(layer, &changes).map_err(|e| Error::io("size changes", layer, e))
        })
    }
}

/// The read end of a diff pipe; at EOF it reports the producer's error, if any, so a failed
/// export never looks like a short but valid tar.
struct ProducedTar {
    pipe: Option<io::PipeReader>,
    producer: Option<JoinHandle<io::Result<()>>>,
}

impl Read for ProducedTar {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(0);
        };
        let n = pipe.read(buf)?;
        if n == 0
            && !buf.is_empty()
            && let Some(handle) = self.producer.take()
        {
            match handle.join() {
                Ok(result) => result?,
                Err(_) => return Err(io::Error::other("the diff producer thread panicked")),
            }
        }
        Ok(n)
    }
}

impl Drop for ProducedTar {
    fn drop(&mut self) {
        // Close our end first so a producer blocked on a full pipe gets EPIPE and stops;
        // then wait for it, so the layer has been put back when the stream is gone.
        drop(self.pipe.take());
        if let Some(handle) = self.producer.take() {
            let _ = handle.join();
        }
    }
}
