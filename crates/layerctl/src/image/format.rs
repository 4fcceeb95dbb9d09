//! Reading what an archive says: `docker save`'s `manifest.json` and OCI's `index.json`,
//! image manifests and configs, turned into a list of images to load.

use std::io::Read;

use layer_digest::{DiffId, Digest, Digester};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::LoadError;
use super::source::Source;

/// Largest JSON document read from an archive (containerd's guard against CVE-2023-25153:
/// a huge manifest or config would otherwise be read whole into memory).
pub const MAX_JSON: u64 = 4 << 20;
/// Deepest nesting of OCI indexes followed.
const MAX_INDEX_DEPTH: usize = 4;

/// One image to load: its layers, bottom first, each with the DiffID its config promises.
#[derive(Debug)]
pub struct ImagePlan {
    /// How to call it in messages (a tag, or the config's digest).
    pub name: String,
    pub layers: Vec<LayerPlan>,
}

/// One layer of an image.
#[derive(Debug)]
pub struct LayerPlan {
    /// The member holding the (maybe compressed) layer tar.
    pub path: String,
    /// What the uncompressed tar must hash to (the config's `rootfs.diff_ids`).
    pub diff_id: DiffId,
    /// What the blob itself must hash to (OCI descriptors; docker-save names don't say).
    pub blob_digest: Option<Digest>,
}

/// Reads member `name` as JSON, refusing documents over [`MAX_JSON`]; returns the bytes'
/// digest too.
fn read_json<T: DeserializeOwned>(source: &Source, name: &str) -> Result<(T, Digest), LoadError> {
    let (reader, size) = source.open(name)?;
    if size > MAX_JSON {
        return Err(LoadError::TooLarge(name.to_owned(), size));
    }
    let mut bytes = Vec::new();
    reader
        .take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| LoadError::io(name.to_owned(), e))?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(LoadError::TooLarge(name.to_owned(), bytes.len() as u64));
    }
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| LoadError::BadJson(name.to_owned(), e.to_string()))?;
    Ok((value, Digester::sha256_of(&bytes)))
}

#[derive(Debug, Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    diff_ids: Vec<String>,
}

fn config_diff_ids(source: &Source, name: &str) -> Result<(Vec<DiffId>, Digest), LoadError> {
    let (config, digest): (ImageConfig, Digest) = read_json(source, name)?;
    if config.rootfs.kind != "layers" {
        return Err(LoadError::BadJson(
            name.to_owned(),
            format!("rootfs type is {:?}, not \"layers\"", config.rootfs.kind),
        ));
    }
    let ids = config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| {
            d.parse::<DiffId>()
                .map_err(|e| LoadError::BadJson(name.to_owned(), format!("diff_id {d:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok((ids, digest))
}

/// `docker save`'s `manifest.json` entry.
#[derive(Debug, Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The images of a `docker save` archive (legacy `<id>/layer.tar` members, or docker ≥ 25's
/// `blobs/sha256/<hex>`).
pub fn docker_save(source: &Source) -> Result<Vec<ImagePlan>, LoadError> {
    let (manifests, _): (Vec<DockerManifest>, _) = read_json(source, "manifest.json")?;
    if manifests.is_empty() {
        return Err(LoadError::BadJson(
            "manifest.json".into(),
            "no images listed".into(),
        ));
    }
    let mut plans = Vec::new();
    for m in manifests {
        let (diff_ids, config_digest) = config_diff_ids(source, &m.config)?;
        if diff_ids.len() != m.layers.len() {
            return Err(LoadError::LayerCount {
                image: m.config.clone(),
                layers: m.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let name = m
            .repo_tags
            .as_ref()
            .and_then(|t| t.first().cloned())
            .unwrap_or_else(|| config_digest.to_string());
        plans.push(ImagePlan {
            name,
            layers: m
                .layers
                .into_iter()
                .zip(diff_ids)
                .map(|(path, diff_id)| LayerPlan {
                    path,
                    diff_id,
                    blob_digest: None,
                })
                .collect(),
        });
    }
    Ok(plans)
}

/// An OCI descriptor (the fields used here).
#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

/// An image index or an image manifest: the same document shape, told apart by its fields.
#[derive(Debug, Deserialize)]
struct IndexOrManifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The blob path of a digest: `blobs/<algorithm>/<hex>`, with the digest checked first so a
/// crafted one cannot name another path.
fn blob_path(digest: &str) -> Result<(String, Digest), LoadError> {
    let d: Digest = digest
        .parse()
        .map_err(|e| LoadError::BadJson("descriptor".into(), format!("digest {digest:?}: {e}")))?;
    Ok((format!("blobs/{}/{}", d.algorithm(), d.hex()), d))
}

/// This machine's platform in OCI terms.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The images of an OCI layout (`index.json` + `blobs/`). Where an index lists several
/// platforms, the host's is taken.
pub fn oci(source: &Source) -> Result<Vec<ImagePlan>, LoadError> {
    let (index, _): (IndexOrManifest, _) = read_json(source, "index.json")?;
    let mut plans = Vec::new();
    walk_index(source, "index.json", &index, 0, &mut plans)?;
    if plans.is_empty() {
        return Err(LoadError::BadJson(
            "index.json".into(),
            format!("no image for linux/{}", host_arch()),
        ));
    }
    Ok(plans)
}

fn walk_index(
    source: &Source,
    what: &str,
    index: &IndexOrManifest,
    depth: usize,
    plans: &mut Vec<ImagePlan>,
) -> Result<(), LoadError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(LoadError::BadJson(
            what.into(),
            "image indexes nested too deep".into(),
        ));
    }
    let manifests = index.manifests.as_deref().unwrap_or_default();
    for desc in manifests {
        if let Some(p) = &desc.platform
            && (p.os != "linux" || p.architecture != host_arch())
        {
            continue;
        }
        let (path, digest) = blob_path(&desc.digest)?;
        let (doc, actual): (IndexOrManifest, Digest) = read_json(source, &path)?;
        if actual != digest {
            return Err(LoadError::BlobDigest {
                blob: path,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let is_index = INDEX_TYPES.contains(&desc.media_type.as_str())
            || INDEX_TYPES.contains(&doc.media_type.as_str())
            || (doc.manifests.is_some() && doc.config.is_none());
        if is_index {
            walk_index(source, &path, &doc, depth + 1, plans)?;
            continue;
        }
        let name = desc
            .annotations
            .as_ref()
            .and_then(|a| {
                a.get("io.containerd.image.name")
                    .or_else(|| a.get("org.opencontainers.image.ref.name"))
                    .cloned()
            })
            .unwrap_or_else(|| digest.to_string());
        plans.push(manifest_plan(source, &path, &doc, name)?);
    }
    Ok(())
}

fn manifest_plan(
    source: &Source,
    path: &str,
    manifest: &IndexOrManifest,
    name: String,
) -> Result<ImagePlan, LoadError> {
    let config = manifest
        .config
        .as_ref()
        .ok_or_else(|| LoadError::BadJson(path.into(), "manifest has no config".into()))?;
    let (config_path, config_digest) = blob_path(&config.digest)?;
    let (diff_ids, actual) = config_diff_ids(source, &config_path)?;
    if actual != config_digest {
        return Err(LoadError::BlobDigest {
            blob: config_path,
            expected: config_digest.to_string(),
            actual: actual.to_string(),
        });
    }
    let layers = manifest.layers.as_deref().unwrap_or_default();
    if layers.len() != diff_ids.len() {
        return Err(LoadError::LayerCount {
            image: name,
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let mut out = Vec::new();
    for (desc, diff_id) in layers.iter().zip(diff_ids) {
        if desc.media_type.contains("nondistributable") || desc.media_type.contains("foreign") {
            // A foreign layer's blob is not in the layout; it would be fetched from its URLs.
            return Err(LoadError::BadJson(
                path.into(),
                format!("foreign layer {} is not in the archive", desc.digest),
            ));
        }
        let (blob, digest) = blob_path(&desc.digest)?;
        out.push(LayerPlan {
            path: blob,
            diff_id,
            blob_digest: Some(digest),
        });
    }
    Ok(ImagePlan { name, layers: out })
}
