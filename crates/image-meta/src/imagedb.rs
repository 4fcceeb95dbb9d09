//! `image/<driver>/imagedb`: image configs by ID and their metadata, as Docker's
//! `image.fs` store keeps them.
//!
//! ```text
//! imagedb/content/sha256/<id hex>              the config's exact bytes (0600)
//! imagedb/metadata/sha256/<id hex>/parent      "sha256:<parent id>" (0600, no newline)
//! imagedb/metadata/sha256/<id hex>/lastUpdated RFC 3339 nano time (0600, no newline)
//! ```
//!
//! Directories are 0700. A config is read only if its bytes hash to its name.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use layer_digest::{ChainId, Digest, Digester};

use crate::config::{ImageConfig, MAX_CONFIG};
use crate::error::{Error, Result};
use crate::fsio;

/// An image's ID: the sha256 of its config's bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(Digest);

impl ImageId {
    /// The ID of a config.
    pub fn of_config(config: &[u8]) -> ImageId {
        ImageId(Digester::sha256_of(config))
    }

    /// From 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<ImageId> {
        Digest::from_sha256_hex(hex).ok().map(ImageId)
    }

    /// The digest.
    pub fn digest(&self) -> &Digest {
        &self.0
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        self.0.hex()
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The 12 hex digits docker shows.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageId({})", self.0.as_str())
    }
}

impl FromStr for ImageId {
    type Err = layer_digest::DigestError;
    /// `sha256:<64 hex>` (only sha256 IDs exist).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d: Digest = s.parse()?;
        if d.algorithm() != layer_digest::Algorithm::Sha256 {
            return Err(layer_digest::DigestError::UnsupportedAlgorithm(
                s.to_owned(),
            ));
        }
        Ok(ImageId(d))
    }
}

/// One stored image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Its ID: the sha256 of its config.
    pub id: ImageId,
    /// What Docker reads from the config.
    pub config: ImageConfig,
    /// The config's size in bytes.
    pub config_size: u64,
    /// `metadata/…/parent`, when recorded.
    pub parent: Option<ImageId>,
    /// `metadata/…/lastUpdated`, when recorded (`docker commit`, `docker build`).
    pub last_updated: Option<String>,
}

impl Image {
    /// The top layer's chain ID (`None` for an image without layers).
    pub fn chain_id(&self) -> Option<ChainId> {
        self.config.chain_id()
    }
}

/// The metadata keys Docker writes.
pub const PARENT: &str = "parent";
/// See [`PARENT`].
pub const LAST_UPDATED: &str = "lastUpdated";

/// The `imagedb` directory.
#[derive(Debug, Clone)]
pub struct ImageDb {
    dir: PathBuf,
}

impl ImageDb {
    /// The imagedb at `dir` (`<root>/image/<driver>/imagedb`). Nothing is read or created
    /// until used.
    pub fn new(dir: impl Into<PathBuf>) -> ImageDb {
        ImageDb { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn content_dir(&self) -> PathBuf {
        self.dir.join("content/sha256")
    }

    fn content_file(&self, id: &ImageId) -> PathBuf {
        self.content_dir().join(id.hex())
    }

    fn metadata_dir(&self, id: &ImageId) -> PathBuf {
        self.dir.join("metadata/sha256").join(id.hex())
    }

    /// Every image ID with a content file, sorted. Names that are not 64 hex digits (such as
    /// an interrupted write's `.tmp-*`) are skipped, as Docker's walk does. A missing
    /// imagedb has no images.
    pub fn ids(&self) -> Result<Vec<ImageId>> {
        let dir = self.content_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read directory", dir, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
            if let Some(id) = entry.file_name().to_str().and_then(ImageId::from_hex) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The config's bytes, checked against the ID.
    pub fn config_bytes(&self, id: &ImageId) -> Result<Vec<u8>> {
        let path = self.content_file(id);
        let bytes = fsio::read_optional(&path, MAX_CONFIG)?.ok_or_else(|| {
            Error::io(
                "open",
                &path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        let actual = ImageId::of_config(&bytes);
        if &actual != id {
            return Err(Error::ContentMismatch {
                id: id.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Whether an image's content file exists.
    pub fn exists(&self, id: &ImageId) -> bool {
        self.content_file(id).is_file()
    }

    /// One image: its config (verified and parsed) and metadata.
    pub fn get(&self, id: &ImageId) -> Result<Image> {
        let bytes = self.config_bytes(id)?;
        let config = ImageConfig::parse(&bytes, id.as_str())?;
        // Docker treats an unreadable parent as none.
        let parent = self.parent(id).unwrap_or_else(|e| {
            tracing::warn!(image = %id, error = %e, "ignoring unreadable parent");
            None
        });
        let last_updated = self
            .metadata(id, LAST_UPDATED)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .filter(|s| !s.is_empty());
        Ok(Image {
            id: id.clone(),
            config,
            config_size: bytes.len() as u64,
            parent,
            last_updated,
        })
    }

    /// Stores a config (after checking it as Docker's `Store.Create` does) and returns its
    /// ID. Storing a config that is already there rewrites the same bytes.
    pub fn create(&self, config: &[u8]) -> Result<ImageId> {
        let id = ImageId::of_config(config);
        let _span = tracing::info_span!("image_create", image = %id).entered();
        ImageConfig::parse(config, id.as_str())?;
        let dir = self.content_dir();
        fsio::mkdir_all(&dir, 0o700)?;
        fsio::mkdir_all(&self.dir.join("metadata/sha256"), 0o700)?;
        fsio::atomic_write(&self.content_file(&id), config, 0o600)?;
        Ok(id)
    }

    /// A metadata value (`None` when not set).
    pub fn metadata(&self, id: &ImageId, key: &str) -> Result<Option<Vec<u8>>> {
        fsio::read_optional(&self.metadata_dir(id).join(key), MAX_CONFIG)
    }

    /// Sets a metadata value; the image must exist (as in Docker).
    pub fn set_metadata(&self, id: &ImageId, key: &str, value: &[u8]) -> Result<()> {
        if !self.exists(id) {
            return Err(Error::NoSuchImage(id.to_string()));
        }
        let dir = self.metadata_dir(id);
        fsio::mkdir_all(&dir, 0o700)?;
        fsio::atomic_write(&dir.join(key), value, 0o600)
    }

    /// Removes a metadata value.
    pub fn delete_metadata(&self, id: &ImageId, key: &str) -> Result<()> {
        let dir = self.metadata_dir(id);
        if fsio::remove_file(&dir.join(key))? {
            fsio::sync_dir(&dir)?;
        }
        Ok(())
    }

    /// The recorded parent image.
    pub fn parent(&self, id: &ImageId) -> Result<Option<ImageId>> {
        let path = self.metadata_dir(id).join(PARENT);
        let Some(bytes) = fsio::read_optional(&path, 1024)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        text.parse().map(Some).map_err(|e| Error::BadFile {
            path,
            reason: format!("{e}"),
        })
    }

    /// Records `parent` as `id`'s parent image.
    pub fn set_parent(&self, id: &ImageId, parent: &ImageId) -> Result<()> {
        if !self.exists(parent) {
            return Err(Error::UnknownParent(parent.to_string()));
        }
        self.set_metadata(id, PARENT, parent.as_str().as_bytes())
    }

    /// Records `t` as the image's last update (Go's RFC 3339 nano form, UTC).
    pub fn set_last_updated(&self, id: &ImageId, t: SystemTime) -> Result<()> {
        let text = crate::time::format_rfc3339_nano(t);
        self.set_metadata(id, LAST_UPDATED, text.as_bytes())
    }

    /// Deletes an image: its metadata first, then its content (Docker's order: a crash in
    /// between leaves an image without metadata, which reads fine). Children's `parent`
    /// links to it are the caller's (see [`crate::ImageStore::delete_image`]).
    pub fn delete(&self, id: &ImageId) -> Result<()> {
        let _span = tracing::info_span!("image_delete", image = %id).entered();
        if fsio::remove_dir_all(&self.metadata_dir(id))? {
            fsio::sync_dir(&self.dir.join("metadata/sha256"))?;
        }
        if fsio::remove_file(&self.content_file(id))? {
            fsio::sync_dir(&self.content_dir())?;
        }
        Ok(())
    }

    /// Temporary files an interrupted write left (`.tmp-*` in the content and metadata
    /// directories).
    pub fn leftovers(&self) -> Result<Vec<PathBuf>> {
        let mut out = crate::leftovers_in(&self.content_dir())?;
        let meta = self.dir.join("metadata/sha256");
        out.extend(crate::leftovers_in(&meta)?);
        if let Ok(entries) = std::fs::read_dir(&meta) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.extend(crate::leftovers_in(&e.path())?);
                }
            }
        }
        Ok(out)
    }
}
