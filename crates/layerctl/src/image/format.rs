//! Reading what an archive says: `docker save`'s `manifest.json` and OCI's `index.json`,
//! image manifests and configs, turned into a list of images to load.

use std::io::Read;

use image_meta::{ImageConfig, ImageId, Reference};
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

/// One image to load: its config, tags and layers, bottom first, each with the DiffID its
/// config promises. Everything here was checked as Docker checks it before anything is
/// written: the config by Docker's rules, the tags by its reference grammar.
#[derive(Debug)]
pub struct ImagePlan {
    /// How to call it in messages (a tag, or the config's digest).
    pub name: String,
    /// The config's exact bytes (at most [`MAX_JSON`]).
    pub config: Vec<u8>,
    /// The image ID: the config's sha256.
    pub id: ImageId,
    /// The tags to point at it, normalised (`docker.io/library/busybox:latest`).
    pub tags: Vec<Reference>,
    /// The parent image a `docker save` manifest names (`Parent`), if any.
    pub parent: Option<ImageId>,
    /// Its layers, bottom first.
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

/// Reads member `name` whole, refusing documents over [`MAX_JSON`].
fn read_bytes(source: &Source, name: &str) -> Result<Vec<u8>, LoadError> {
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
    Ok(bytes)
}

/// Reads member `name` as JSON, refusing documents over [`MAX_JSON`]; returns the bytes'
/// digest too.
fn read_json<T: DeserializeOwned>(source: &Source, name: &str) -> Result<(T, Digest), LoadError> {
    let bytes = read_bytes(source, name)?;
    // Invalid UTF-8 in a string is U+FFFD to Go's decoder, as in image configs.
    let value = serde_json::from_str(&String::from_utf8_lossy(&bytes))
        .map_err(|e| LoadError::BadJson(name.to_owned(), e.to_string()))?;
    Ok((value, Digester::sha256_of(&bytes)))
}

/// Reads and checks an image config as Docker's load does: Docker's own rules (see
/// [`ImageConfig::parse`]), an OS this host runs (empty or `linux`), and, where the member is
/// named after a digest (`<hex>.json`, `blobs/sha256/<hex>`), content that hashes to it.
fn read_config(source: &Source, name: &str) -> Result<(ImageConfig, Vec<u8>, ImageId), LoadError> {
    let bytes = read_bytes(source, name)?;
    let config = ImageConfig::parse(&bytes, name)
        .map_err(|e| LoadError::BadJson(name.to_owned(), bad_config_reason(e)))?;
    if !config.os.is_empty() && config.os != "linux" {
        return Err(LoadError::BadJson(
            name.to_owned(),
            format!("cannot load {} image on linux", config.os),
        ));
    }
    let id = ImageId::of_config(&bytes);
    let base = name.rsplit('/').next().unwrap_or(name);
    let named_hex = base.strip_suffix(".json").unwrap_or(base);
    if named_hex.len() == 64
        && named_hex.bytes().all(|b| b.is_ascii_hexdigit())
        && named_hex != id.hex()
    {
        return Err(LoadError::BlobDigest {
            blob: name.to_owned(),
            expected: format!("sha256:{named_hex}"),
            actual: id.to_string(),
        });
    }
    Ok((config, bytes, id))
}

fn bad_config_reason(e: image_meta::Error) -> String {
    match e {
        image_meta::Error::BadConfig { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// A tag as `docker load` takes it from `RepoTags` (or an OCI name annotation): Docker's
/// normalised grammar, with a tag and without a digest.
fn parse_tag(what: &str, tag: &str) -> Result<Reference, LoadError> {
    let r = Reference::parse_normalized(tag)
        .map_err(|e| LoadError::BadJson(what.to_owned(), format!("invalid tag {tag:?}: {e}")))?;
    if r.tag().is_none() || r.digest().is_some() {
        return Err(LoadError::BadJson(
            what.to_owned(),
            format!("invalid tag {tag:?}: want name:tag"),
        ));
    }
    Ok(r)
}

/// Refuses a tag claimed twice in one archive (by one image or two).
fn check_unique_tags(plans: &[ImagePlan]) -> Result<(), LoadError> {
    let mut seen = std::collections::HashSet::new();
    for plan in plans {
        for t in &plan.tags {
            if !seen.insert(t.to_string()) {
                return Err(LoadError::BadJson(
                    "manifest".into(),
                    format!("tag {} is claimed twice", t.familiar_string()),
                ));
            }
        }
    }
    Ok(())
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
    #[serde(rename = "Parent", default)]
    parent: Option<String>,
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
        let (config, bytes, id) = read_config(source, &m.config)?;
        if config.diff_ids.len() != m.layers.len() {
            return Err(LoadError::LayerCount {
                image: m.config.clone(),
                layers: m.layers.len(),
                diff_ids: config.diff_ids.len(),
            });
        }
        let tags = m
            .repo_tags
            .iter()
            .flatten()
            .map(|t| parse_tag("manifest.json", t))
            .collect::<Result<Vec<_>, _>>()?;
        let parent = match m.parent.as_deref() {
            None | Some("") => None,
            Some(p) => Some(p.parse::<ImageId>().map_err(|e| {
                LoadError::BadJson("manifest.json".into(), format!("Parent {p:?}: {e}"))
            })?),
        };
        let name = tags
            .first()
            .map(Reference::familiar_string)
            .unwrap_or_else(|| id.to_string());
        plans.push(ImagePlan {
            name,
            config: bytes,
            id,
            tags,
            parent,
            layers: m
                .layers
                .into_iter()
                .zip(config.diff_ids)
                .map(|(path, diff_id)| LayerPlan {
                    path,
                    diff_id,
                    blob_digest: None,
                })
                .collect(),
        });
    }
    check_unique_tags(&plans)?;
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
    check_unique_tags(&plans)?;
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
        plans.push(manifest_plan(source, &path, &doc, oci_tag(desc)?)?);
    }
    Ok(())
}

/// The tag an OCI manifest descriptor names: containerd's `io.containerd.image.name` (a full
/// reference), else an `org.opencontainers.image.ref.name` that is a whole `name:tag` (a bare
/// tag such as `latest` names no repository and is ignored, as docker does).
fn oci_tag(desc: &Descriptor) -> Result<Option<Reference>, LoadError> {
    let Some(a) = desc.annotations.as_ref() else {
        return Ok(None);
    };
    if let Some(name) = a.get("io.containerd.image.name") {
        return parse_tag("index.json", name).map(Some);
    }
    Ok(a.get("org.opencontainers.image.ref.name")
        .filter(|n| n.contains(':'))
        .and_then(|n| parse_tag("index.json", n).ok()))
}

fn manifest_plan(
    source: &Source,
    path: &str,
    manifest: &IndexOrManifest,
    tag: Option<Reference>,
) -> Result<ImagePlan, LoadError> {
    let config_desc = manifest
        .config
        .as_ref()
        .ok_or_else(|| LoadError::BadJson(path.into(), "manifest has no config".into()))?;
    let (config_path, config_digest) = blob_path(&config_desc.digest)?;
    let (config, bytes, id) = read_config(source, &config_path)?;
    if id.digest() != &config_digest {
        return Err(LoadError::BlobDigest {
            blob: config_path,
            expected: config_digest.to_string(),
            actual: id.to_string(),
        });
    }
    let name = tag
        .as_ref()
        .map(Reference::familiar_string)
        .unwrap_or_else(|| id.to_string());
    let diff_ids = config.diff_ids;
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
    Ok(ImagePlan {
        name,
        config: bytes,
        id,
        tags: tag.into_iter().collect(),
        parent: None,
        layers: out,
    })
}
