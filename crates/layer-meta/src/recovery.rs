//! Layer removal (the `-removing` marker), orphans, and leftovers of interrupted work.
//!
//! This module only *finds* and *reports*; the layer store decides what to remove, because
//! only it knows about graphdriver directories and references.

use std::path::PathBuf;

use layer_digest::ChainId;
use rustix::fs::FileType;
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::format::{self, SMALL_FILE_LIMIT};
use crate::fsio::ReadSmall;
use crate::layout::{
    self, LAYERS_DIR, MOUNTS_DIR, REMOVING_SUFFIX, TMP_DIR, WRITE_SET_PREFIX, layer_file,
    mount_file,
};
use crate::store::{Durability, MetaStore};

/// The reason given for entries whose names are not UTF-8 (reported, never removed by us).
const NOT_UTF8: &str = "name is not UTF-8; remove it by hand";

/// A layer directory renamed to `<hex>-<random>-removing`: its driver directory may still
/// exist. Finish with [`MetaStore::finish_removal`] once the driver directory is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// The layer's chain ID (from the name).
    pub chain_id: ChainId,
    /// Its `cache-id`, `None` if unreadable or empty (then there is no driver directory to
    /// remove by this record; moby skips such directories forever).
    pub cache_id: Option<String>,
    /// The directory name inside `sha256/`.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
}

/// What kind of leftover an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftoverKind {
    /// `tmp/write-set-*` not in use by this process: an interrupted transaction, mount write or
    /// removal.
    StaleWriteSet,
    /// `mounts/<name>` without a (non-empty) `mount-id`: moby's non-atomic mount write was
    /// interrupted.
    HalfMount,
    /// `sha256/<hex>` that does not load (empty or partial directory, corrupt file, or not a
    /// directory). It blocks any commit of that chain ID (moby/moby#44909).
    BlockingLayer,
    /// An entry in `tmp/`, `mounts/` or `sha256/` that this store never creates (wrong name
    /// or type).
    Stray,
}

/// One leftover found by [`MetaStore::leftovers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// What it is.
    pub kind: LeftoverKind,
    /// Path relative to the layerdb root, e.g. `tmp/write-set-123`.
    pub rel_path: String,
    /// Full path.
    pub path: PathBuf,
    /// Why it is a leftover (for logs and reports).
    pub reason: String,
}

/// Everything interrupted work can leave behind.
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Stale write-sets in `tmp/`.
    pub stale_write_sets: Vec<Leftover>,
    /// Half-written mount directories.
    pub half_mounts: Vec<Leftover>,
    /// Unloadable layer directories that block commits.
    pub blocking_layers: Vec<Leftover>,
    /// Unknown entries in `tmp/`, `mounts/` and `sha256/`.
    pub strays: Vec<Leftover>,
    /// `-removing` directories (same as [`MetaStore::orphans`]).
    pub removing: Vec<Orphan>,
}

impl Leftovers {
    /// True if nothing was found.
    pub fn is_empty(&self) -> bool {
        self.stale_write_sets.is_empty()
            && self.half_mounts.is_empty()
            && self.blocking_layers.is_empty()
            && self.strays.is_empty()
            && self.removing.is_empty()
    }

    /// All [`Leftover`]s (not the orphans), in one list.
    pub fn all(&self) -> impl Iterator<Item = &Leftover> {
        self.stale_write_sets
            .iter()
            .chain(&self.half_mounts)
            .chain(&self.blocking_layers)
            .chain(&self.strays)
    }
}

impl MetaStore {
    /// Marks a layer for deletion: renames `sha256/<hex>` to `<hex>-<64 random hex>-removing`
    /// (never replacing anything). The layer is no longer listed; its metadata stays until
    /// [`MetaStore::finish_removal`], so a crash before the driver directory is removed is
    /// recoverable through [`MetaStore::orphans`].
    pub fn remove_layer(&self, chain_id: &ChainId) -> Result<Orphan> {
        let _span = tracing::debug_span!("layerdb_remove", layer = %chain_id).entered();
        let fs = &self.inner.fs;
        let dir = layout::layer_dir(chain_id)?;
        let cache_id = self.cache_id(chain_id).ok();
        for _ in 0..100 {
            let name = layout::new_removing_name(chain_id);
            let rel = format!("{LAYERS_DIR}/{name}");
            match fs.rename_noreplace(&dir, &rel) {
                Ok(()) => {
                    if self.inner.durability == Durability::Full
                        && let Err(error) = fs.sync_dir(LAYERS_DIR)
                    {
                        // An error must mean "unchanged": the layer goes back in place.
                        if let Err(undo) = fs.rename_noreplace(&rel, &dir) {
                            tracing::error!(layer = %chain_id, %error, %undo, "cannot undo removal marker");
                        }
                        return Err(error);
                    }
                    return Ok(Orphan {
                        chain_id: chain_id.clone(),
                        cache_id,
                        name,
                        path: fs.path(&rel),
                    });
                }
                Err(e) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => continue,
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                    return Err(Error::LayerNotFound {
                        chain_id: chain_id.clone(),
                        path: fs.path(&dir),
                    });
                }
                Err(e) => return Err(fs.io_error("rename", &dir, e)),
            }
        }
        Err(fs.io_error("rename", &dir, Errno::EXIST.into()))
    }

    /// Deletes a `-removing` directory (its `cache-id` last, so a crash part-way still leaves
    /// an identifiable orphan). Absent is success.
    pub fn finish_removal(&self, orphan: &Orphan) -> Result<()> {
        if layout::parse_removing_name(&orphan.name).as_ref() != Some(&orphan.chain_id) {
            return Err(Error::InvalidArgument {
                what: "removing directory",
                value: orphan.name.clone(),
                reason: "not <hex>-<random>-removing for this chain ID",
            });
        }
        let rel = format!("{LAYERS_DIR}/{}", orphan.name);
        self.inner
            .fs
            .remove_tree(&rel, Some(layer_file::CACHE_ID))?;
        if self.inner.durability == Durability::Full
            && let Err(error) = self.inner.fs.sync_dir(LAYERS_DIR)
        {
            // Not worth failing for: if the removal is lost, the orphan reappears and is
            // finished again.
            tracing::warn!(%error, "removal of {} may not be durable", orphan.path.display());
        }
        Ok(())
    }

    /// Every `-removing` directory in `sha256/`, with its cache ID when readable.
    pub fn orphans(&self) -> Result<Vec<Orphan>> {
        let fs = &self.inner.fs;
        let entries = fs
            .read_dir(LAYERS_DIR)
            .map_err(|e| fs.io_error("read directory", LAYERS_DIR, e))?;
        let mut orphans = Vec::new();
        for entry in entries.unwrap_or_default() {
            let Some(name) = entry.utf8_name() else {
                continue;
            };
            let Some(chain_id) = layout::parse_removing_name(name) else {
                continue;
            };
            if entry.file_type != FileType::Directory {
                continue;
            }
            let rel = format!("{LAYERS_DIR}/{name}/{}", layer_file::CACHE_ID);
            let cache_id = match fs.read_small(&rel, SMALL_FILE_LIMIT) {
                Ok(ReadSmall::Data(bytes)) => match format::parse_cache_id(&bytes) {
                    Ok(id) => Some(id),
                    Err(problem) => {
                        tracing::warn!(path = %fs.path(&rel).display(), %problem, "orphan has no usable cache-id");
                        None
                    }
                },
                Ok(other) => {
                    tracing::warn!(path = %fs.path(&rel).display(), state = ?other, "orphan has no usable cache-id");
                    None
                }
                Err(error) => {
                    tracing::warn!(path = %fs.path(&rel).display(), %error, "cannot read orphan cache-id");
                    None
                }
            };
            let rel_dir = format!("{LAYERS_DIR}/{name}");
            orphans.push(Orphan {
                chain_id,
                cache_id,
                name: name.to_owned(),
                path: fs.path(&rel_dir),
            });
        }
        Ok(orphans)
    }

    /// Scans for everything interrupted work can leave behind and logs each find as a warning.
    /// Nothing is removed; see [`MetaStore::remove_leftover`].
    pub fn leftovers(&self) -> Result<Leftovers> {
        self.scan(true)
    }

    /// What an interrupted transaction, mount or removal left: the stale write-sets, half
    /// mounts, `-removing` directories and strays of `tmp/` and `mounts/` that
    /// [`MetaStore::leftovers`] finds, without loading every layer to find the unloadable
    /// ones (`blocking_layers` holds only entries that are not directories; the store's
    /// open reports the rest). It reads directories only, not the layers' files: a command
    /// can afford it on every start.
    pub fn interrupted(&self) -> Result<Leftovers> {
        self.scan(false)
    }

    fn scan(&self, load_layers: bool) -> Result<Leftovers> {
        let fs = &self.inner.fs;
        let mut found = Leftovers::default();
        let push = |list: &mut Vec<Leftover>, kind, rel_path: String, reason: String| {
            tracing::warn!(?kind, path = %fs.path(&rel_path).display(), %reason, "layerdb leftover");
            list.push(Leftover {
                kind,
                path: fs.path(&rel_path),
                rel_path,
                reason,
            });
        };

        let tmp = fs
            .read_dir(TMP_DIR)
            .map_err(|e| fs.io_error("read directory", TMP_DIR, e))?;
        for entry in tmp.unwrap_or_default() {
            let Some(name) = entry.utf8_name() else {
                let rel = format!("{TMP_DIR}/{}", entry.name.to_string_lossy());
                push(&mut found.strays, LeftoverKind::Stray, rel, NOT_UTF8.into());
                continue;
            };
            if !name.starts_with(WRITE_SET_PREFIX) {
                let reason = "unexpected name in tmp/".to_owned();
                push(
                    &mut found.strays,
                    LeftoverKind::Stray,
                    format!("{TMP_DIR}/{name}"),
                    reason,
                );
            } else if !self.inner.is_active(name) {
                let reason = "write-set of an interrupted transaction".to_owned();
                push(
                    &mut found.stale_write_sets,
                    LeftoverKind::StaleWriteSet,
                    format!("{TMP_DIR}/{name}"),
                    reason,
                );
            }
        }

        let mounts = fs
            .read_dir(MOUNTS_DIR)
            .map_err(|e| fs.io_error("read directory", MOUNTS_DIR, e))?;
        for entry in mounts.unwrap_or_default() {
            let Some(name) = entry.utf8_name() else {
                let rel = format!("{MOUNTS_DIR}/{}", entry.name.to_string_lossy());
                push(&mut found.strays, LeftoverKind::Stray, rel, NOT_UTF8.into());
                continue;
            };
            if entry.file_type != FileType::Directory || layout::check_mount_name(name).is_err() {
                let reason = "not a mount directory".to_owned();
                push(
                    &mut found.strays,
                    LeftoverKind::Stray,
                    format!("{MOUNTS_DIR}/{name}"),
                    reason,
                );
                continue;
            }
            let rel = format!("{MOUNTS_DIR}/{name}/{}", mount_file::MOUNT_ID);
            let reason = match fs.read_small(&rel, SMALL_FILE_LIMIT) {
                Ok(ReadSmall::Missing) => Some("no mount-id"),
                Ok(ReadSmall::Data(bytes)) if bytes.iter().all(u8::is_ascii_whitespace) => {
                    Some("empty mount-id")
                }
                _ => None,
            };
            if let Some(reason) = reason {
                push(
                    &mut found.half_mounts,
                    LeftoverKind::HalfMount,
                    format!("{MOUNTS_DIR}/{name}"),
                    reason.into(),
                );
            }
        }

        let layers = fs
            .read_dir(LAYERS_DIR)
            .map_err(|e| fs.io_error("read directory", LAYERS_DIR, e))?;
        for entry in layers.unwrap_or_default() {
            let lossy = entry.name.to_string_lossy().into_owned();
            let rel = format!("{LAYERS_DIR}/{lossy}");
            match entry.utf8_name() {
                Some(name) if layout::parse_removing_name(name).is_some() => {}
                Some(MOUNTS_DIR) => {} // moby also ignores a historical `sha256/mounts`
                Some(name) => match layout::parse_layer_dir_name(name) {
                    Some(chain_id) => {
                        let loaded = if entry.file_type != FileType::Directory {
                            Err(Error::Corrupt {
                                path: fs.path(&rel),
                                problem: crate::Corruption::NotADirectory,
                            })
                        } else if load_layers {
                            self.layer(&chain_id).map(drop)
                        } else {
                            Ok(())
                        };
                        if let Err(error) = loaded {
                            push(
                                &mut found.blocking_layers,
                                LeftoverKind::BlockingLayer,
                                rel,
                                crate::error::with_causes(&error),
                            );
                        }
                    }
                    None => push(
                        &mut found.strays,
                        LeftoverKind::Stray,
                        rel,
                        "unexpected name".into(),
                    ),
                },
                None => push(&mut found.strays, LeftoverKind::Stray, rel, NOT_UTF8.into()),
            }
        }
        found.removing = self.orphans()?;
        for orphan in &found.removing {
            tracing::warn!(path = %orphan.path.display(), cache_id = ?orphan.cache_id, "layer removal was interrupted");
        }
        Ok(found)
    }

    /// Removes one leftover. Entries outside `tmp/` are first moved into `tmp/` with one rename,
    /// so a crash part-way never leaves a half-deleted layer or mount in place.
    pub fn remove_leftover(&self, leftover: &Leftover) -> Result<()> {
        let fs = &self.inner.fs;
        let bad = |reason| Error::InvalidArgument {
            what: "leftover",
            value: leftover.rel_path.clone(),
            reason,
        };
        let (parent, name) = leftover
            .rel_path
            .split_once('/')
            .ok_or_else(|| bad("not inside layerdb"))?;
        if name.contains('/') || name == "." || name == ".." {
            return Err(bad("not a direct child of tmp/, mounts/ or sha256/"));
        }
        if leftover.reason == NOT_UTF8 {
            return Err(bad("names that are not UTF-8 must be removed by hand"));
        }
        match (leftover.kind, parent) {
            (LeftoverKind::StaleWriteSet, TMP_DIR) if name.starts_with(WRITE_SET_PREFIX) => {
                if self.inner.is_active(name) {
                    return Err(bad("write-set is in use by a live transaction"));
                }
                fs.remove_tree(&leftover.rel_path, None)
            }
            (LeftoverKind::Stray, TMP_DIR) if !name.starts_with(WRITE_SET_PREFIX) => {
                fs.remove_tree(&leftover.rel_path, None)
            }
            (LeftoverKind::HalfMount | LeftoverKind::Stray, MOUNTS_DIR) => {
                self.inner.discard(&leftover.rel_path, MOUNTS_DIR)
            }
            (LeftoverKind::BlockingLayer | LeftoverKind::Stray, LAYERS_DIR)
                if !name.ends_with(REMOVING_SUFFIX) =>
            {
                self.inner.discard(&leftover.rel_path, LAYERS_DIR)
            }
            _ => Err(bad("kind does not match location")),
        }
    }
}
