//! Docker's image metadata on a data-root, read and written byte for byte as Docker 20.10
//! does.
//!
//! A Docker data-root keeps its images beside the layer store, under `image/<driver>/`:
//!
//! ```text
//! image/<driver>/imagedb/content/sha256/<id>          an image config; the ID is its sha256
//! image/<driver>/imagedb/metadata/sha256/<id>/        parent, lastUpdated
//! image/<driver>/repositories.json                    tags and digests → image IDs
//! image/<driver>/distribution/                        blob digest ↔ DiffID (pull/push reuse)
//! image/<driver>/layerdb/                             the layers (the `layer-meta` crate)
//! ```
//!
//! An image is its config: `rootfs.diff_ids` lists its layers bottom first, and the chain ID
//! of the last ([`Image::chain_id`]) names the top layer in `layerdb`. This crate knows
//! nothing of layers beyond those IDs; a layer store takes references on those chain IDs.
//!
//! * [`ImageDb`]: configs and their metadata, each config checked against its ID on read and
//!   against Docker's rules ([`ImageConfig::parse`]) on write.
//! * [`Repositories`]: `repositories.json`, with Docker's reference grammar and
//!   normalisation ([`Reference`]: `busybox` is `docker.io/library/busybox`, stored and
//!   printed as `busybox:latest`).
//! * [`Distribution`]: `diffid-by-digest` and `v2metadata-by-diffid`.
//! * [`Journal`]: records of multi-step operations in flight (`load`, `rmi`, `save`), written
//!   before their first step and removed after their last, so that whoever finds one after a
//!   crash knows what to roll back or finish ([`journal`]).
//!
//! Every write goes to a temporary file that is fsynced and renamed over the target, then
//! the directory is fsynced (Docker's `AtomicWriteFile`, plus the directory sync): a crash
//! leaves the old or the new file, and at most a `.tmp-*` file that
//! [`ImageStore::remove_leftovers`] deletes. A command of several such writes is made
//! crash-safe as a whole by its [`Journal`] record. Errors keep I/O ([`Error::Io`]) apart from bad
//! input (every other variant).
//!
//! ```no_run
//! use image_meta::{ImageStore, Reference};
//!
//! # fn main() -> Result<(), image_meta::Error> {
//! let store = ImageStore::new("/var/lib/docker", "overlay2");
//! let repos = store.repositories()?;
//! for image in store.images()?.images {
//!     let tags: Vec<String> = repos.references(&image.id).iter().map(|r| r.familiar_string()).collect();
//!     println!("{} {:?} top layer {:?}", image.id.short(), tags, image.chain_id());
//! }
//!
//! // Store a config and tag it, as `docker load` would.
//! let config = std::fs::read("config.json").unwrap();
//! let id = store.imagedb().create(&config)?;
//! let mut repos = store.repositories()?;
//! repos.add_tag(&Reference::parse_normalized("myapp:v1").unwrap(), &id, true)?;
//! repos.save()?;
//! # Ok(()) }
//! ```

#![warn(missing_docs, unreachable_pub)]

mod config;
mod distribution;
mod error;
mod fsio;
mod gojson;
mod imagedb;
pub mod journal;
pub mod reference;
mod repositories;
pub mod time;

use std::path::{Path, PathBuf};

pub use config::{ImageConfig, MAX_CONFIG};
pub use distribution::{Distribution, V2Metadata};
pub use error::{Error, Result};
pub use imagedb::{Image, ImageDb, ImageId, LAST_UPDATED, PARENT};
pub use journal::{InFlight, Journal, Operation};
pub use reference::{Reference, ReferenceError};
pub use repositories::{Repositories, TagChange};

/// The image side of one driver's metadata: `<root>/image/<driver>`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
    imagedb: ImageDb,
    distribution: Distribution,
}

/// Every image of a store: those that read, and those that did not (with why).
#[derive(Debug, Default)]
pub struct Listing {
    /// Readable images, by ID.
    pub images: Vec<Image>,
    /// Images whose config is missing, corrupt or not what Docker accepts. Docker logs and
    /// skips these; they are reported, never deleted, by this crate.
    pub broken: Vec<(ImageId, Error)>,
}

impl ImageStore {
    /// The image metadata of `driver` on the data-root `root`. Nothing is read or created
    /// until used.
    pub fn new(root: impl AsRef<Path>, driver: &str) -> ImageStore {
        ImageStore::at(root.as_ref().join("image").join(driver))
    }

    /// The image metadata in `dir` (`<root>/image/<driver>`).
    pub fn at(dir: impl Into<PathBuf>) -> ImageStore {
        let dir = dir.into();
        ImageStore {
            imagedb: ImageDb::new(dir.join("imagedb")),
            distribution: Distribution::new(dir.join("distribution")),
            dir,
        }
    }

    /// `<root>/image/<driver>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configs and their metadata.
    pub fn imagedb(&self) -> &ImageDb {
        &self.imagedb
    }

    /// The blob ↔ DiffID records.
    pub fn distribution(&self) -> &Distribution {
        &self.distribution
    }

    /// The in-flight journal of multi-step operations (`load`, `rmi`, `save`).
    pub fn journal(&self) -> Journal {
        Journal::new(&self.dir)
    }

    /// `repositories.json`'s path.
    pub fn repositories_path(&self) -> PathBuf {
        self.dir.join("repositories.json")
    }

    /// Reads `repositories.json` (empty when missing).
    pub fn repositories(&self) -> Result<Repositories> {
        Repositories::load(self.repositories_path())
    }

    /// Reads every image. Only a failure to list the directory is an error; an image that
    /// does not read goes to [`Listing::broken`].
    pub fn images(&self) -> Result<Listing> {
        let mut listing = Listing::default();
        for id in self.imagedb.ids()? {
            match self.imagedb.get(&id) {
                Ok(image) => listing.images.push(image),
                Err(e) => {
                    tracing::warn!(image = %id, error = %e, "image does not read");
                    listing.broken.push((id, e));
                }
            }
        }
        Ok(listing)
    }

    /// Images whose recorded parent is `id`.
    pub fn children(&self, id: &ImageId) -> Result<Vec<ImageId>> {
        let mut out = Vec::new();
        for child in self.imagedb.ids()? {
            if self.imagedb.parent(&child).ok().flatten().as_ref() == Some(id) {
                out.push(child);
            }
        }
        Ok(out)
    }

    /// Deletes an image as Docker's `Store.Delete` does: children lose their `parent` link,
    /// then its metadata and config go. References to it are the caller's to remove first
    /// ([`Repositories::delete_image`]); its layers are the layer store's.
    pub fn delete_image(&self, id: &ImageId) -> Result<()> {
        for child in self.children(id)? {
            self.imagedb.delete_metadata(&child, PARENT)?;
        }
        self.imagedb.delete(id)
    }

    /// Temporary files that interrupted writes left, anywhere in the image metadata.
    pub fn leftovers(&self) -> Result<Vec<PathBuf>> {
        let mut out = leftovers_in(&self.dir)?;
        out.extend(self.imagedb.leftovers()?);
        out.extend(self.distribution.leftovers()?);
        Ok(out)
    }

    /// Removes [`leftovers`](Self::leftovers); returns what it removed. Only run while no
    /// other process writes this store (a write in progress has a `.tmp-*` file too).
    pub fn remove_leftovers(&self) -> Result<Vec<PathBuf>> {
        let found = self.leftovers()?;
        for path in &found {
            fsio::remove_file(path)?;
        }
        Ok(found)
    }
}

/// `.tmp-*` files directly in `dir` (none when it does not exist).
pub(crate) fn leftovers_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file
            && entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(fsio::TMP_PREFIX))
        {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}
