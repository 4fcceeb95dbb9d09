//! Reading container image archives: `docker save` archives (legacy and docker >= 25 blob
//! layouts), OCI image layouts and OCI archives, as `layerctl load` does.
//!
//! [`source::Source`] gives access to an image's files, from a directory or from a tar archive
//! indexed in place (members are read with positioned reads; nothing is extracted). The
//! [`format`](mod@format) readers turn its manifests into [`format::ImagePlan`]s: per image, the layer
//! members in order with the DiffID each must hash to. Everything read from the archive is
//! untrusted: JSON documents are capped ([`format::MAX_JSON`]), member paths that climb out
//! are refused, symlinked members are followed a bounded number of times.
//!
//! ```no_run
//! use layerctl::image::{plan, source::{Source, TarIndex}};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let file = std::fs::File::open("image.tar")?;
//! let source = Source::Tar(TarIndex::build(file, "image.tar")?);
//! for image in plan(&source, "image.tar")? {
//!     for layer in &image.layers {
//!         println!("{}: {} must hash to {}", image.name, layer.path, layer.diff_id);
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod format;
pub mod source;

use std::io;

/// What goes wrong reading an image archive.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The archive is not a readable tar.
    #[error("{0}: corrupt archive: {1}")]
    Corrupt(String, String),
    /// A member the manifests name is not there.
    #[error("{0}: missing from the image: {1}")]
    Missing(String, String),
    /// A member path that climbs out of the image.
    #[error("{0:?}: path escapes the image")]
    BadPath(String),
    /// A JSON document over the size cap.
    #[error("{0}: JSON document of {1} bytes is over the {max} byte limit", max = format::MAX_JSON)]
    TooLarge(String, u64),
    /// A JSON document that does not parse or says something impossible.
    #[error("{0}: {1}")]
    BadJson(String, String),
    /// The manifest and the config disagree on the number of layers.
    #[error("image {image}: {layers} layers but {diff_ids} diff_ids in the config")]
    LayerCount {
        /// The image (its config file).
        image: String,
        /// Layers in the manifest.
        layers: usize,
        /// DiffIDs in the config.
        diff_ids: usize,
    },
    /// An OCI blob whose content does not hash to its descriptor's digest.
    #[error("blob {blob}: digest mismatch: expected {expected}, got {actual}")]
    BlobDigest {
        /// The blob's path.
        blob: String,
        /// The digest expected.
        expected: String,
        /// The digest of the content.
        actual: String,
    },
    /// A layer whose tar does not hash to the config's DiffID.
    #[error(
        "image {image}: layer {index} ({path}): DiffID mismatch: config says {expected}, content is {actual}"
    )]
    DiffIdMismatch {
        /// The image (its config file).
        image: String,
        /// The layer's index, bottom first.
        index: usize,
        /// The layer's path in the archive.
        path: String,
        /// The digest expected.
        expected: String,
        /// The digest of the content.
        actual: String,
    },
    /// A member that is not a regular file (a FIFO, a device, a directory…): refused before
    /// it is read, since reading it could block forever or never end.
    #[error("{0}: not a regular file but {1}")]
    NotRegular(String, &'static str),
    /// Neither format.
    #[error("{0}: not a docker-save archive or OCI layout (no manifest.json or index.json)")]
    UnknownFormat(String),
    /// I/O with context.
    #[error("{0}")]
    Io(String, #[source] io::Error),
}

impl LoadError {
    /// An I/O error, saying what was being done.
    pub fn io(what: String, e: io::Error) -> Self {
        LoadError::Io(what, e)
    }
}

/// The images in `source`: a docker-save archive when it has `manifest.json`, an OCI layout
/// when it has `index.json`. `what` names the input in the error when it is neither.
pub fn plan(source: &source::Source, what: &str) -> Result<Vec<format::ImagePlan>, LoadError> {
    if source.exists("manifest.json") {
        format::docker_save(source)
    } else if source.exists("index.json") {
        format::oci(source)
    } else {
        Err(LoadError::UnknownFormat(what.to_owned()))
    }
}
