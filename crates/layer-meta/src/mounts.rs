//! Mount (RW layer) records: `mounts/<name>/{mount-id,init-id,parent}`.
//!
//! moby writes these three files one by one, in place, without fsync. We build the directory as
//! a write-set and rename it into place (or swap it with the old one), so a crash leaves either
//! the old record, the new record, or a stale write-set, never a half-written mount.

use std::path::PathBuf;

use layer_digest::ChainId;
use rustix::fs::FileType;
use rustix::io::Errno;

use crate::error::{Corruption, Error, Result};
use crate::format::{self, SMALL_FILE_LIMIT};
use crate::fsio::ReadSmall;
use crate::layout::{self, MOUNTS_DIR, mount_file};
use crate::store::{Durability, MetaStore, Reference};

/// What is stored about one RW layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRecord {
    /// `mount-id`: the graphdriver directory of the RW layer (64 hex).
    pub mount_id: String,
    /// `init-id`: the init layer's driver directory, `<mount-id>-init`, if there is one.
    pub init_id: Option<String>,
    /// `parent`: the chain ID of the image layer below, if any.
    pub parent: Option<ChainId>,
}

/// A mount directory that exists but cannot be loaded.
#[derive(Debug)]
pub struct BrokenMount {
    /// The mount name (lossy if the name is not UTF-8).
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// Why it cannot be loaded.
    pub error: Error,
    /// The RW layer's driver directory its `mount-id` names.
    pub mount_id: Reference<String>,
    /// The init layer's driver directory its `init-id` names.
    pub init_id: Reference<String>,
    /// The image layer its `parent` names.
    pub parent: Reference<ChainId>,
}

/// The result of [`MetaStore::list_mounts`].
#[derive(Debug, Default)]
pub struct MountListing {
    /// Loadable mounts, `(name, record)`, sorted by name.
    pub mounts: Vec<(String, MountRecord)>,
    /// Mount directories that did not load (half-written ones included).
    pub broken: Vec<BrokenMount>,
}

impl MetaStore {
    /// Stores a mount record atomically and (per [`Durability`]) durably, replacing any old one.
    pub fn set_mount(&self, name: &str, record: &MountRecord) -> Result<()> {
        let _span = tracing::debug_span!("layerdb_set_mount", mount = name).entered();
        layout::check_mount_name(name)?;
        for (what, id) in [
            ("mount id", Some(&record.mount_id)),
            ("init id", record.init_id.as_ref()),
        ] {
            if let Some(id) = id.filter(|id| !layout::is_valid_mount_id(id)) {
                return Err(Error::InvalidArgument {
                    what,
                    value: id.clone(),
                    reason: "want 64 lowercase hex, optionally followed by -init",
                });
            }
        }
        let inner = &self.inner;
        let fs = &inner.fs;
        let full = inner.durability == Durability::Full;
        let ws = inner.new_write_set(layout::SHARED_DIR_MODE)?;
        let mut files = vec![(mount_file::MOUNT_ID, record.mount_id.as_str())];
        if let Some(init) = &record.init_id {
            files.push((mount_file::INIT_ID, init));
        }
        if let Some(parent) = &record.parent {
            files.push((mount_file::PARENT, parent.as_str()));
        }
        for (file, value) in files {
            fs.write_file(
                &format!("{}/{file}", ws.rel),
                value.as_bytes(),
                layout::FILE_MODE,
                full,
            )?;
        }
        match inner.durability {
            Durability::Full => fs.sync_dir(&ws.rel)?,
            Durability::Batch => fs.sync_fs(&ws.rel)?,
            Durability::None => {}
        }
        if fs.ensure_dir(MOUNTS_DIR, layout::SHARED_DIR_MODE)? && full {
            fs.sync_dir("")?;
        }
        let target = format!("{MOUNTS_DIR}/{name}");
        let replaced = match fs.rename_noreplace(&ws.rel, &target) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => {
                // Swap new and old in one step; the old record then sits in the write-set and
                // is removed with it.
                fs.exchange(&ws.rel, &target)
                    .map_err(|e| fs.io_error("exchange", &ws.rel, e))?;
                true
            }
            Err(e) => return Err(fs.io_error("rename", &ws.rel, e)),
        };
        if full && let Err(error) = fs.sync_dir(MOUNTS_DIR) {
            // An error must mean "unchanged": put the old state back before reporting it.
            let undo = if replaced {
                fs.exchange(&ws.rel, &target)
            } else {
                fs.rename_noreplace(&target, &ws.rel)
            };
            if let Err(undo) = undo {
                tracing::error!(mount = name, %error, %undo, "cannot undo mount write after fsync failure");
            }
            return Err(error);
        }
        if replaced {
            // The new record is in place; the old one left in `tmp/` is only garbage now.
            if let Err(error) = ws.remove() {
                tracing::warn!(mount = name, %error, "old mount record left in tmp/ as a stale write-set");
            }
        } else {
            ws.forget();
        }
        Ok(())
    }

    /// Reads a mount record. `mount-id` must exist and be valid; `init-id` and `parent` are
    /// optional but must be valid when present.
    pub fn mount(&self, name: &str) -> Result<MountRecord> {
        layout::check_mount_name(name)?;
        let fs = &self.inner.fs;
        let dir = format!("{MOUNTS_DIR}/{name}");
        match fs
            .file_type(&dir)
            .map_err(|e| fs.io_error("stat", &dir, e))?
        {
            None => {
                return Err(Error::MountNotFound {
                    name: name.to_owned(),
                    path: fs.path(&dir),
                });
            }
            Some(FileType::Directory) => {}
            Some(_) => {
                return Err(Error::Corrupt {
                    path: fs.path(&dir),
                    problem: Corruption::NotADirectory,
                });
            }
        }
        let read = |file: &str| -> Result<Option<(PathBuf, Vec<u8>)>> {
            let rel = format!("{dir}/{file}");
            let path = fs.path(&rel);
            match fs
                .read_small(&rel, SMALL_FILE_LIMIT)
                .map_err(|e| fs.io_error("read", &rel, e))?
            {
                ReadSmall::Data(bytes) => Ok(Some((path, bytes))),
                ReadSmall::Missing => Ok(None),
                ReadSmall::TooLarge => Err(Error::Corrupt {
                    path,
                    problem: Corruption::TooLarge {
                        limit: SMALL_FILE_LIMIT,
                    },
                }),
            }
        };
        let corrupt = |path: PathBuf| move |problem| Error::Corrupt { path, problem };
        let mount_id = match read(mount_file::MOUNT_ID)? {
            Some((path, bytes)) => format::parse_mount_id(&bytes).map_err(corrupt(path))?,
            None => {
                return Err(Error::Corrupt {
                    path: fs.path(&format!("{dir}/{}", mount_file::MOUNT_ID)),
                    problem: Corruption::Missing,
                });
            }
        };
        let init_id = match read(mount_file::INIT_ID)? {
            Some((path, bytes)) => Some(format::parse_mount_id(&bytes).map_err(corrupt(path))?),
            None => None,
        };
        let parent = match read(mount_file::PARENT)? {
            Some((path, bytes)) => Some(format::parse_chain_id(&bytes).map_err(corrupt(path))?),
            None => None,
        };
        Ok(MountRecord {
            mount_id,
            init_id,
            parent,
        })
    }

    /// Loads every mount in `mounts/`. Unloadable ones are returned in
    /// [`MountListing::broken`] (and logged as warnings).
    pub fn list_mounts(&self) -> Result<MountListing> {
        let fs = &self.inner.fs;
        let entries = fs
            .read_dir(MOUNTS_DIR)
            .map_err(|e| fs.io_error("read directory", MOUNTS_DIR, e))?;
        let mut listing = MountListing::default();
        for entry in entries.unwrap_or_default() {
            let lossy = entry.name.to_string_lossy().into_owned();
            let path = fs.root().join(MOUNTS_DIR).join(&entry.name);
            let loaded = match entry.utf8_name() {
                None => Err(Error::Corrupt {
                    path: path.clone(),
                    problem: Corruption::UnexpectedName,
                }),
                Some(name) => self.mount(name),
            };
            match loaded {
                Ok(record) => listing.mounts.push((lossy, record)),
                Err(error) => {
                    tracing::warn!(mount = %lossy, %error, "mount metadata cannot be loaded");
                    let (mount_id, init_id, parent) = match entry.utf8_name() {
                        _ if entry.file_type != FileType::Directory => {
                            (Reference::Absent, Reference::Absent, Reference::Absent)
                        }
                        Some(name) => {
                            let file = |f: &str| format!("{MOUNTS_DIR}/{name}/{f}");
                            let inner = &self.inner;
                            (
                                inner
                                    .reference(&file(mount_file::MOUNT_ID), format::parse_mount_id),
                                inner.reference(&file(mount_file::INIT_ID), format::parse_mount_id),
                                inner.reference(&file(mount_file::PARENT), format::parse_chain_id),
                            )
                        }
                        None => (
                            Reference::Unreadable,
                            Reference::Unreadable,
                            Reference::Unreadable,
                        ),
                    };
                    listing.broken.push(BrokenMount {
                        name: lossy,
                        path,
                        error,
                        mount_id,
                        init_id,
                        parent,
                    });
                }
            }
        }
        Ok(listing)
    }

    /// Removes a mount record atomically (moved into `tmp/`, then deleted). Absent is success,
    /// as with moby's `os.RemoveAll`.
    pub fn remove_mount(&self, name: &str) -> Result<()> {
        layout::check_mount_name(name)?;
        self.inner
            .discard(&format!("{MOUNTS_DIR}/{name}"), MOUNTS_DIR)
    }
}
