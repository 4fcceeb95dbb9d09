//! [`MetaStore`]: opening the layerdb, write-sets, and the layer readers.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use flate2::read::MultiGzDecoder;
use layer_digest::{ChainId, DiffId};
use rustix::fs::FileType;
use rustix::io::Errno;

use crate::error::{Corruption, Error, Result};
use crate::format::{self, DESCRIPTOR_LIMIT, Descriptor, SMALL_FILE_LIMIT};
use crate::fsio::{Fs, ReadSmall};
use crate::layout::{self, LAYERS_DIR, TMP_DIR, WRITE_SET_PREFIX, layer_file};
use crate::seam::FaultInjector;
use crate::transaction::Transaction;

/// When metadata reaches stable storage.
///
/// Crash *consistency* (never a half-visible layer) does not depend on this setting: commits are
/// a single rename in every mode. Durability decides what survives a power loss or kernel crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// fsync every file before the commit rename, fsync the write-set directory, then fsync the
    /// parent directory after it. A commit that returned `Ok` survives power loss. Costs a few
    /// fsyncs per layer (milliseconds on rotating disks, tens of microseconds on NVMe).
    #[default]
    Full,
    /// One `syncfs` of the layerdb filesystem just before the rename, nothing after. Cheaper
    /// when many files are written, but it flushes every dirty page on that filesystem (other
    /// programs' too), and the last commits before a power loss may be rolled back; they then
    /// show up as stale write-sets, never as partial layers.
    Batch,
    /// No syncing. Fastest; after a power loss (not a process crash) a committed layer may come
    /// back with empty files, which the readers report as corrupt. For throwaway stores and tests.
    None,
}

/// Options for [`MetaStore::open`].
#[derive(Debug, Clone, Default)]
pub struct MetaOptions {
    /// When metadata is synced to disk.
    pub durability: Durability,
    /// Test seam: consulted before every disk-changing step (see [`FaultInjector`]).
    pub fault_injector: Option<Arc<dyn FaultInjector>>,
}

/// Everything stored about one committed layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    /// The directory name, `sha256/<hex>`.
    pub chain_id: ChainId,
    /// `diff`.
    pub diff_id: DiffId,
    /// `size`, as Go's `strconv.ParseInt` reads it (Docker only writes non-negative values,
    /// but reads any `int64`).
    pub size: i64,
    /// `cache-id`: the graphdriver directory.
    pub cache_id: String,
    /// `parent`, absent for a base layer.
    pub parent: Option<ChainId>,
    /// `descriptor.json`, absent unless one was stored.
    pub descriptor: Option<Descriptor>,
}

/// What a record names through one of its files, as far as that file can be read.
///
/// An unloadable record still names things: a layer whose `size` is corrupt still owns the
/// driver directory its `cache-id` names and still sits on its `parent`. Whoever removes
/// anything must treat those names as references, and an [`Reference::Unreadable`] one as a
/// reference to anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference<T> {
    /// The file is absent: nothing is named (a record missing a required file loads in
    /// neither moby nor here, and names nothing through it).
    Absent,
    /// The file names this.
    Named(T),
    /// The file is there but does not read as a name (empty, corrupt, unsafe, unreadable):
    /// it may be a damaged name of anything.
    Unreadable,
}

impl<T> Reference<T> {
    /// The name, if the file gives one.
    pub fn named(&self) -> Option<&T> {
        match self {
            Reference::Named(v) => Some(v),
            _ => None,
        }
    }
}

/// A layer directory that exists but cannot be loaded.
#[derive(Debug)]
pub struct BrokenLayer {
    /// The chain ID its name spells.
    pub chain_id: ChainId,
    /// Its path.
    pub path: PathBuf,
    /// Why it cannot be loaded (names the file and the problem).
    pub error: Error,
    /// The driver directory its `cache-id` names.
    pub cache_id: Reference<String>,
    /// The parent layer its `parent` names.
    pub parent: Reference<ChainId>,
}

/// The result of [`MetaStore::list_layers`].
#[derive(Debug, Default)]
pub struct LayerListing {
    /// Layers whose metadata loaded, sorted by chain ID.
    pub layers: Vec<LayerRecord>,
    /// Layer directories whose metadata did not load. They still block commits to their ID.
    pub broken: Vec<BrokenLayer>,
}

impl LayerListing {
    /// The chain IDs of the loadable layers.
    pub fn ids(&self) -> Vec<ChainId> {
        self.layers.iter().map(|l| l.chain_id.clone()).collect()
    }
}

/// The layerdb metadata store. Cheap to clone; clones share the open root directory.
///
/// Open one store per layerdb per process and clone it: write-sets of live transactions are
/// known per store, and another store (or process) would report them as stale leftovers.
#[derive(Debug, Clone)]
pub struct MetaStore {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) fs: Arc<Fs>,
    pub(crate) durability: Durability,
    /// Write-sets in use by this process: never reported as stale.
    pub(crate) active: Mutex<HashSet<String>>,
}

impl MetaStore {
    /// Opens (creating if needed, mode 0700 like moby) the layerdb at `layerdb_root`, usually
    /// `<data-root>/image/<driver>/layerdb`. `tmp/`, `sha256/` and `mounts/` are created lazily,
    /// when first written, as moby does.
    pub fn open(layerdb_root: &Path, opts: MetaOptions) -> Result<MetaStore> {
        let io_err = |op, source| Error::Io {
            op,
            path: layerdb_root.to_owned(),
            source,
        };
        let existed = layerdb_root.exists();
        if !existed {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(layout::ROOT_MODE)
                .create(layerdb_root)
                .map_err(|e| io_err("create directory", e))?;
            // Pin the mode whatever the umask (moby runs with umask 0).
            rustix::fs::chmod(
                layerdb_root,
                rustix::fs::Mode::from_raw_mode(layout::ROOT_MODE),
            )
            .map_err(|e| io_err("chmod", e.into()))?;
        }
        let root_fd: OwnedFd = rustix::fs::open(
            layerdb_root,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| io_err("open directory", e.into()))?;
        if !existed
            && opts.durability == Durability::Full
            && let Some(parent) = layerdb_root.parent().filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err("fsync parent of", e))?;
        }
        let fs = Fs::new(layerdb_root.to_owned(), root_fd, opts.fault_injector);
        Ok(MetaStore {
            inner: Arc::new(Inner {
                fs: Arc::new(fs),
                durability: opts.durability,
                active: Mutex::default(),
            }),
        })
    }

    /// The layerdb root.
    pub fn root(&self) -> &Path {
        self.inner.fs.root()
    }

    /// The durability policy in force.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Path of a layer's directory (`<root>/sha256/<hex>`).
    pub fn layer_path(&self, chain_id: &ChainId) -> Result<PathBuf> {
        Ok(self.inner.fs.path(&layout::layer_dir(chain_id)?))
    }

    /// Starts a transaction: a fresh `tmp/write-set-<N>` directory (mode 0700).
    pub fn start_transaction(&self) -> Result<Transaction> {
        let ws = self.inner.new_write_set(layout::WRITE_SET_MODE)?;
        Ok(Transaction::new(Arc::clone(&self.inner), ws))
    }

    /// Whether a layer directory (loadable or not) exists for `chain_id`.
    pub fn layer_exists(&self, chain_id: &ChainId) -> Result<bool> {
        let dir = layout::layer_dir(chain_id)?;
        let file_type = self
            .inner
            .fs
            .file_type(&dir)
            .map_err(|e| self.inner.fs.io_error("stat", &dir, e))?;
        Ok(file_type.is_some())
    }

    /// `diff`.
    pub fn diff_id(&self, chain_id: &ChainId) -> Result<DiffId> {
        let (path, bytes) =
            self.inner
                .read_layer_file(chain_id, layer_file::DIFF, SMALL_FILE_LIMIT, true)?;
        parse_at(path, &bytes.unwrap_or_default(), format::parse_diff_id)
    }

    /// `size`.
    pub fn size(&self, chain_id: &ChainId) -> Result<i64> {
        let (path, bytes) =
            self.inner
                .read_layer_file(chain_id, layer_file::SIZE, SMALL_FILE_LIMIT, true)?;
        parse_at(path, &bytes.unwrap_or_default(), format::parse_size)
    }

    /// `cache-id`.
    pub fn cache_id(&self, chain_id: &ChainId) -> Result<String> {
        let (path, bytes) =
            self.inner
                .read_layer_file(chain_id, layer_file::CACHE_ID, SMALL_FILE_LIMIT, true)?;
        parse_at(path, &bytes.unwrap_or_default(), format::parse_cache_id)
    }

    /// `parent`; `None` for a base layer.
    pub fn parent(&self, chain_id: &ChainId) -> Result<Option<ChainId>> {
        let (path, bytes) =
            self.inner
                .read_layer_file(chain_id, layer_file::PARENT, SMALL_FILE_LIMIT, false)?;
        bytes
            .map(|b| parse_at(path, &b, format::parse_chain_id))
            .transpose()
    }

    /// `descriptor.json`; `None` when absent.
    pub fn descriptor(&self, chain_id: &ChainId) -> Result<Option<Descriptor>> {
        let (path, bytes) = self.inner.read_layer_file(
            chain_id,
            layer_file::DESCRIPTOR,
            DESCRIPTOR_LIMIT,
            false,
        )?;
        bytes
            .map(|b| parse_at(path, &b, format::parse_descriptor))
            .transpose()
    }

    /// The gunzipped tar-split stream of a layer (`tar-split.json.gz`), streamed.
    pub fn tar_split_reader(&self, chain_id: &ChainId) -> Result<TarSplitReader> {
        let dir = layout::layer_dir(chain_id)?;
        let rel = format!("{dir}/{}", layer_file::TAR_SPLIT);
        let path = self.inner.fs.path(&rel);
        match self.inner.fs.open_read(&rel) {
            Ok(Some(file)) => Ok(TarSplitReader::new(file, path)),
            Ok(None) => Err(self.inner.missing(chain_id, &dir, path)?),
            Err(e) => Err(self.inner.read_error(&dir, &rel, e)),
        }
    }

    /// Every field of a layer.
    pub fn layer(&self, chain_id: &ChainId) -> Result<LayerRecord> {
        self.inner.read_layer(chain_id)
    }

    /// Loads every layer in `sha256/`. Unloadable layer directories are returned in
    /// [`LayerListing::broken`] (and logged as warnings), never skipped silently. `-removing`
    /// directories are left to [`MetaStore::orphans`] and unknown names to
    /// [`MetaStore::leftovers`].
    pub fn list_layers(&self) -> Result<LayerListing> {
        let fs = &self.inner.fs;
        let entries = fs
            .read_dir(LAYERS_DIR)
            .map_err(|e| fs.io_error("read directory", LAYERS_DIR, e))?;
        let candidates: Vec<(ChainId, bool)> = entries
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| {
                let chain_id = entry.utf8_name().and_then(layout::parse_layer_dir_name)?;
                Some((chain_id, entry.file_type == FileType::Directory))
            })
            .collect();
        // Each layer is a handful of tiny files: opening a store of thousands of layers is
        // syscall-bound, so the layers are read on several threads (in order: the listing
        // stays sorted by chain ID).
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(LIST_THREADS)
            .min(candidates.len().div_ceil(LAYERS_PER_THREAD))
            .max(1);
        let loaded: Vec<Result<LayerRecord>> = if threads == 1 {
            candidates.iter().map(|c| self.load_listed(c)).collect()
        } else {
            let per = candidates.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let workers: Vec<_> = candidates
                    .chunks(per)
                    .map(|chunk| {
                        scope.spawn(move || {
                            chunk
                                .iter()
                                .map(|c| self.load_listed(c))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        };
        let mut listing = LayerListing::default();
        for ((chain_id, is_dir), loaded) in candidates.into_iter().zip(loaded) {
            match loaded {
                Ok(record) => listing.layers.push(record),
                Err(error) => {
                    tracing::warn!(layer = %chain_id, %error, "layer metadata cannot be loaded");
                    let dir = format!("{LAYERS_DIR}/{}", chain_id.hex());
                    let (cache_id, parent) = if is_dir {
                        (
                            self.inner.reference(
                                &format!("{dir}/{}", layer_file::CACHE_ID),
                                format::parse_cache_id,
                            ),
                            self.inner.reference(
                                &format!("{dir}/{}", layer_file::PARENT),
                                format::parse_chain_id,
                            ),
                        )
                    } else {
                        (Reference::Absent, Reference::Absent)
                    };
                    listing.broken.push(BrokenLayer {
                        chain_id,
                        path: fs.path(&dir),
                        error,
                        cache_id,
                        parent,
                    });
                }
            }
        }
        Ok(listing)
    }

    fn load_listed(&self, (chain_id, is_dir): &(ChainId, bool)) -> Result<LayerRecord> {
        if *is_dir {
            self.layer(chain_id)
        } else {
            let dir = format!("{LAYERS_DIR}/{}", chain_id.hex());
            Err(Error::Corrupt {
                path: self.inner.fs.path(&dir),
                problem: Corruption::NotADirectory,
            })
        }
    }
}

/// At most this many threads read layer metadata in [`MetaStore::list_layers`].
const LIST_THREADS: usize = 8;
/// A thread is worth starting for this many layers or more.
const LAYERS_PER_THREAD: usize = 256;

fn parse_at<T>(
    path: PathBuf,
    bytes: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<T, Corruption>,
) -> Result<T> {
    parse(bytes).map_err(|problem| Error::Corrupt { path, problem })
}

impl Inner {
    /// What the file at `rel` names, read on its own (see [`Reference`]).
    pub(crate) fn reference<T>(
        &self,
        rel: &str,
        parse: impl FnOnce(&[u8]) -> Result<T, Corruption>,
    ) -> Reference<T> {
        match self.fs.read_small(rel, SMALL_FILE_LIMIT) {
            Ok(ReadSmall::Data(bytes)) => match parse(&bytes) {
                Ok(v) => Reference::Named(v),
                Err(_) => Reference::Unreadable,
            },
            Ok(ReadSmall::Missing) => Reference::Absent,
            Ok(ReadSmall::TooLarge) | Err(_) => Reference::Unreadable,
        }
    }

    /// Creates `tmp/write-set-<random u32>` with `mode` (moby's `os.MkdirTemp`).
    pub(crate) fn new_write_set(self: &Arc<Self>, mode: u32) -> Result<WriteSet> {
        if self.fs.ensure_dir(TMP_DIR, layout::SHARED_DIR_MODE)?
            && self.durability == Durability::Full
        {
            self.fs.sync_dir("")?;
        }
        for _ in 0..10_000 {
            let name = self.claim_write_set_name();
            let rel = format!("{TMP_DIR}/{name}");
            match self.fs.create_dir(&rel, mode) {
                Ok(()) => {
                    return Ok(WriteSet {
                        store: Arc::clone(self),
                        name,
                        rel,
                        keep: false,
                    });
                }
                Err(e) => {
                    self.release_name(&name);
                    if e.errno() != Some(Errno::EXIST.raw_os_error()) {
                        return Err(e);
                    }
                }
            }
        }
        Err(self
            .fs
            .io_error("create write-set in", TMP_DIR, Errno::EXIST.into()))
    }

    /// Reserves an unused `tmp/write-set-<N>` name without creating it (a rename target).
    pub(crate) fn reserve_write_set_name(self: &Arc<Self>) -> Result<WriteSet> {
        if self.fs.ensure_dir(TMP_DIR, layout::SHARED_DIR_MODE)?
            && self.durability == Durability::Full
        {
            self.fs.sync_dir("")?;
        }
        let name = self.claim_write_set_name();
        let rel = format!("{TMP_DIR}/{name}");
        Ok(WriteSet {
            store: Arc::clone(self),
            name,
            rel,
            keep: false,
        })
    }

    /// A random `write-set-<u32>` name not in use by this process, marked in use.
    fn claim_write_set_name(&self) -> String {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let name = format!("{WRITE_SET_PREFIX}{}", rand::random::<u32>());
            if active.insert(name.clone()) {
                return name;
            }
        }
    }

    fn release_name(&self, name: &str) {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    pub(crate) fn is_active(&self, name: &str) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// Moves `rel` into `tmp/` (one atomic rename), then deletes it there. A crash at any point
    /// leaves either the original entry or a stale write-set, never a half-deleted entry in place.
    pub(crate) fn discard(self: &Arc<Self>, rel: &str, parent_rel: &str) -> Result<()> {
        for _ in 0..100 {
            let trash = self.reserve_write_set_name()?;
            match self.fs.rename_noreplace(rel, &trash.rel) {
                Ok(()) => {
                    if self.durability == Durability::Full
                        && let Err(error) = self.fs.sync_dir(parent_rel)
                    {
                        // An error must mean "unchanged": move the entry back.
                        if let Err(undo) = self.fs.rename_noreplace(&trash.rel, rel) {
                            tracing::error!(%error, %undo, path = rel, "cannot undo move into tmp/");
                        }
                        trash.forget();
                        return Err(error);
                    }
                    // The entry is gone from view; what remains in `tmp/` is only garbage.
                    if let Err(error) = trash.remove() {
                        tracing::warn!(%error, "discarded entry left in tmp/ as a stale write-set");
                    }
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => {
                    trash.forget();
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                    trash.forget();
                    return Ok(());
                }
                Err(e) => {
                    trash.forget();
                    return Err(self.fs.io_error("rename", rel, e));
                }
            }
        }
        Err(self.fs.io_error("rename", rel, Errno::EXIST.into()))
    }

    /// Every field of a layer. A store opens thousands of these, so the common case costs
    /// only an `openat`, two `read`s and a `close` per file present and one `openat` per
    /// optional file absent: whether the whole layer is missing is asked only when a required
    /// file is.
    pub(crate) fn read_layer(&self, chain_id: &ChainId) -> Result<LayerRecord> {
        let dir = layout::layer_dir(chain_id)?;
        // One path buffer for the five files, and a path for messages only on failure: a
        // store of 10⁴ layers reads 5·10⁴ of these files at open (issue #17).
        let mut rel = String::with_capacity(dir.len() + 1 + "descriptor.json".len());
        rel.push_str(&dir);
        rel.push('/');
        let dir_len = rel.len();
        let mut read = |name: &str, limit: u64| -> Result<Option<Vec<u8>>> {
            rel.truncate(dir_len);
            rel.push_str(name);
            match self.fs.read_small(&rel, limit) {
                Ok(ReadSmall::Data(bytes)) => Ok(Some(bytes)),
                Ok(ReadSmall::TooLarge) => Err(Error::Corrupt {
                    path: self.fs.path(&rel),
                    problem: Corruption::TooLarge { limit },
                }),
                Ok(ReadSmall::Missing) => Ok(None),
                Err(e) => Err(self.read_error(&dir, &rel, e)),
            }
        };
        let file_path = |name: &str| self.fs.path(&format!("{dir}/{name}"));
        fn parse<T>(
            path: impl FnOnce() -> PathBuf,
            bytes: &[u8],
            parse: impl FnOnce(&[u8]) -> Result<T, Corruption>,
        ) -> Result<T> {
            parse(bytes).map_err(|problem| Error::Corrupt {
                path: path(),
                problem,
            })
        }
        let mut required = |name: &str| -> Result<Vec<u8>> {
            match read(name, SMALL_FILE_LIMIT)? {
                Some(bytes) => Ok(bytes),
                None => Err(self.missing(chain_id, &dir, file_path(name))?),
            }
        };
        // `diff` first: a layer that is gone is reported as not found by its first file.
        let bytes = required(layer_file::DIFF)?;
        let diff_id = parse(
            || file_path(layer_file::DIFF),
            &bytes,
            format::parse_diff_id,
        )?;
        let bytes = required(layer_file::SIZE)?;
        let size = parse(|| file_path(layer_file::SIZE), &bytes, format::parse_size)?;
        let bytes = required(layer_file::CACHE_ID)?;
        let cache_id = parse(
            || file_path(layer_file::CACHE_ID),
            &bytes,
            format::parse_cache_id,
        )?;
        // The required files were just there: an optional one missing is absent.
        let parent = read(layer_file::PARENT, SMALL_FILE_LIMIT)?
            .map(|b| parse(|| file_path(layer_file::PARENT), &b, format::parse_chain_id))
            .transpose()?;
        let descriptor = read(layer_file::DESCRIPTOR, DESCRIPTOR_LIMIT)?
            .map(|b| {
                parse(
                    || file_path(layer_file::DESCRIPTOR),
                    &b,
                    format::parse_descriptor,
                )
            })
            .transpose()?;
        Ok(LayerRecord {
            chain_id: chain_id.clone(),
            diff_id,
            size,
            cache_id,
            parent,
            descriptor,
        })
    }

    /// Reads `<layer dir>/<name>`. A missing required file is `Corrupt(Missing)` if the layer
    /// directory exists, `LayerNotFound` otherwise; a missing optional file is `None`.
    pub(crate) fn read_layer_file(
        &self,
        chain_id: &ChainId,
        name: &str,
        limit: u64,
        required: bool,
    ) -> Result<(PathBuf, Option<Vec<u8>>)> {
        let dir = layout::layer_dir(chain_id)?;
        let rel = format!("{dir}/{name}");
        let path = self.fs.path(&rel);
        match self.fs.read_small(&rel, limit) {
            Ok(ReadSmall::Data(bytes)) => Ok((path, Some(bytes))),
            Ok(ReadSmall::TooLarge) => Err(Error::Corrupt {
                path,
                problem: Corruption::TooLarge { limit },
            }),
            Ok(ReadSmall::Missing) if required => Err(self.missing(chain_id, &dir, path)?),
            Ok(ReadSmall::Missing) => match self.missing(chain_id, &dir, path.clone())? {
                Error::Corrupt {
                    problem: Corruption::Missing,
                    ..
                } => Ok((path, None)),
                other => Err(other),
            },
            Err(e) => Err(self.read_error(&dir, &rel, e)),
        }
    }

    /// The error for a missing file: is the whole layer missing, or just the file?
    fn missing(&self, chain_id: &ChainId, dir: &str, path: PathBuf) -> Result<Error> {
        match self
            .fs
            .file_type(dir)
            .map_err(|e| self.fs.io_error("stat", dir, e))?
        {
            None => Ok(Error::LayerNotFound {
                chain_id: chain_id.clone(),
                path: self.fs.path(dir),
            }),
            Some(FileType::Directory) => Ok(Error::Corrupt {
                path,
                problem: Corruption::Missing,
            }),
            Some(_) => Ok(Error::Corrupt {
                path: self.fs.path(dir),
                problem: Corruption::NotADirectory,
            }),
        }
    }

    fn read_error(&self, dir: &str, rel: &str, e: io::Error) -> Error {
        if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) {
            Error::Corrupt {
                path: self.fs.path(dir),
                problem: Corruption::NotADirectory,
            }
        } else {
            self.fs.io_error("read", rel, e)
        }
    }
}

/// A `tmp/write-set-<N>` directory owned by this process. Dropping it removes it (best effort)
/// unless it was renamed away ([`WriteSet::forget`]).
#[derive(Debug)]
pub(crate) struct WriteSet {
    store: Arc<Inner>,
    pub(crate) name: String,
    pub(crate) rel: String,
    keep: bool,
}

impl WriteSet {
    /// The directory no longer exists under this name (renamed into place): don't remove it.
    pub(crate) fn forget(mut self) {
        self.keep = true;
    }

    /// Removes the write-set now, reporting failure.
    pub(crate) fn remove(mut self) -> Result<()> {
        self.keep = true;
        let result = self.store.fs.remove_tree(&self.rel, None);
        self.store.release_name(&self.name);
        result
    }
}

impl Drop for WriteSet {
    fn drop(&mut self) {
        if !self.keep
            && let Err(error) = self.store.fs.remove_tree(&self.rel, None)
        {
            tracing::warn!(%error, "cannot remove write-set; it will be reported as a leftover");
        }
        self.store.release_name(&self.name);
    }
}

/// Streams a layer's gunzipped tar-split JSON. Read errors name the file.
#[derive(Debug)]
pub struct TarSplitReader {
    inner: MultiGzDecoder<std::fs::File>,
    path: PathBuf,
}

impl TarSplitReader {
    pub(crate) fn new(file: std::fs::File, path: PathBuf) -> TarSplitReader {
        TarSplitReader {
            inner: MultiGzDecoder::new(file),
            path,
        }
    }
}

impl Read for TarSplitReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}
