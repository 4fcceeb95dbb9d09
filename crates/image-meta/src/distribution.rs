//! `image/<driver>/distribution`: what Docker remembers about where layers came from, so a
//! later pull can skip blobs it already has and a push can mount them.
//!
//! ```text
//! distribution/diffid-by-digest/sha256/<blob hex>      "sha256:<diff id>"           (0644)
//! distribution/v2metadata-by-diffid/sha256/<diff hex>  [{"Digest":…,"SourceRepository":…,"HMAC":""}]
//! ```
//!
//! Directories are 0755 (the top one 0700, as the daemon creates it). At most 50 metadata
//! entries are kept per DiffID, oldest dropped, as in Docker.

use std::path::{Path, PathBuf};

use layer_digest::{DiffId, Digest};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::fsio;

const DIFFID_BY_DIGEST: &str = "diffid-by-digest";
const V2METADATA_BY_DIFFID: &str = "v2metadata-by-diffid";
const MAX_METADATA: usize = 50;

/// Where one compressed blob of a layer was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Metadata {
    /// The blob's digest (compressed, as in a registry or an OCI layout).
    pub digest: Digest,
    /// The full repository name (`docker.io/library/busybox`).
    pub source_repository: String,
    /// Hex HMAC over the two fields with the credentials' key; empty without credentials.
    pub hmac: String,
}

/// The `distribution` directory.
#[derive(Debug, Clone)]
pub struct Distribution {
    dir: PathBuf,
}

impl Distribution {
    /// The store at `dir` (`<root>/image/<driver>/distribution`).
    pub fn new(dir: impl Into<PathBuf>) -> Distribution {
        Distribution { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, namespace: &str, d: &Digest) -> PathBuf {
        self.dir
            .join(namespace)
            .join(d.algorithm().name())
            .join(d.hex())
    }

    /// The DiffID a blob digest decompresses to, if recorded.
    pub fn diff_id(&self, blob: &Digest) -> Result<Option<DiffId>> {
        let path = self.path(DIFFID_BY_DIGEST, blob);
        let Some(bytes) = fsio::read_optional(&path, 1024)? else {
            return Ok(None);
        };
        String::from_utf8_lossy(&bytes)
            .parse()
            .map(Some)
            .map_err(|e| Error::BadFile {
                path,
                reason: format!("{e}"),
            })
    }

    /// The metadata recorded for a DiffID, oldest first.
    pub fn v2_metadata(&self, diff_id: &DiffId) -> Result<Vec<V2Metadata>> {
        let path = self.path(V2METADATA_BY_DIFFID, diff_id.as_digest());
        let Some(bytes) = fsio::read_optional(&path, 1 << 20)? else {
            return Ok(Vec::new());
        };
        let bad = |reason: String| Error::BadFile {
            path: path.clone(),
            reason,
        };
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let items = match value {
            Value::Null => return Ok(Vec::new()),
            Value::Array(items) => items,
            _ => return Err(bad("not a JSON array".into())),
        };
        items
            .iter()
            .map(|item| {
                let get = |key: &str| -> String {
                    item.as_object()
                        .and_then(|o| {
                            o.get(key).or_else(|| {
                                o.iter()
                                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                                    .map(|(_, v)| v)
                            })
                        })
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                Ok(V2Metadata {
                    digest: get("Digest")
                        .parse()
                        .map_err(|e| bad(format!("Digest: {e}")))?,
                    source_repository: get("SourceRepository"),
                    hmac: get("HMAC"),
                })
            })
            .collect()
    }

    /// Records that `meta.digest` is a blob of the layer `diff_id` (Docker's
    /// `V2MetadataService.Add`): the entry moves to the end of the DiffID's list, and the
    /// digest maps to the DiffID.
    pub fn add(&self, diff_id: &DiffId, meta: &V2Metadata) -> Result<()> {
        let _span =
            tracing::debug_span!("distribution_add", %diff_id, blob = %meta.digest).entered();
        let mut list = self.v2_metadata(diff_id).unwrap_or_default();
        list.retain(|m| m != meta);
        list.push(meta.clone());
        if list.len() > MAX_METADATA {
            list.drain(..list.len() - MAX_METADATA);
        }
        let mut json = String::from("[");
        for (i, m) in list.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str("{\"Digest\":");
            crate::gojson::string(&mut json, m.digest.as_str());
            json.push_str(",\"SourceRepository\":");
            crate::gojson::string(&mut json, &m.source_repository);
            json.push_str(",\"HMAC\":");
            crate::gojson::string(&mut json, &m.hmac);
            json.push('}');
        }
        json.push(']');
        self.write(
            &self.path(V2METADATA_BY_DIFFID, diff_id.as_digest()),
            json.as_bytes(),
        )?;
        self.set_diff_id(&meta.digest, diff_id)
    }

    /// Records only the blob digest → DiffID mapping.
    pub fn set_diff_id(&self, blob: &Digest, diff_id: &DiffId) -> Result<()> {
        self.write(
            &self.path(DIFFID_BY_DIGEST, blob),
            diff_id.as_str().as_bytes(),
        )
    }

    fn write(&self, path: &Path, data: &[u8]) -> Result<()> {
        fsio::mkdir_all(&self.dir, 0o700)?;
        if let Some(dir) = path.parent() {
            fsio::mkdir_all(dir, 0o755)?;
        }
        fsio::atomic_write(path, data, 0o644)
    }

    /// Temporary files an interrupted write left.
    pub fn leftovers(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for ns in [DIFFID_BY_DIGEST, V2METADATA_BY_DIFFID] {
            for alg in ["sha256", "sha384", "sha512"] {
                out.extend(crate::leftovers_in(&self.dir.join(ns).join(alg))?);
            }
        }
        Ok(out)
    }
}
