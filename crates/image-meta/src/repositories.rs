//! `image/<driver>/repositories.json`: Docker's reference store, tags and digests to image IDs.
//!
//! ```text
//! {"Repositories":{"busybox":{"busybox:latest":"sha256:…","busybox@sha256:…":"sha256:…"}}}
//! ```
//!
//! Keys are familiar names and familiar strings (`busybox`, `busybox:latest`); Go writes the
//! maps with sorted keys, compact, no newline, mode 0600. [`Repositories`] keeps the file's
//! values as they are (so a rewrite reproduces what it did not change) and changes it in
//! memory; [`Repositories::save`] writes it atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::fsio;
use crate::imagedb::ImageId;
use crate::reference::Reference;

/// Largest `repositories.json` read (a tag is at most ~400 bytes; this is ~100k tags).
const MAX_FILE: u64 = 64 << 20;

/// The reference store.
#[derive(Debug, Clone)]
pub struct Repositories {
    path: PathBuf,
    repos: BTreeMap<String, BTreeMap<String, String>>,
}

/// What [`Repositories::add_tag`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagChange {
    /// The tag is new.
    Added,
    /// It already named this image.
    Unchanged,
    /// It named another image (given), now untagged by it.
    Moved(String),
}

impl Repositories {
    /// Reads `path`; a missing file is an empty store (nothing is written until
    /// [`save`](Self::save)). Like Go's decoder, the first JSON value is read and anything
    /// after it ignored.
    pub fn load(path: impl Into<PathBuf>) -> Result<Repositories> {
        let path = path.into();
        let mut store = Repositories {
            path,
            repos: BTreeMap::new(),
        };
        let Some(bytes) = fsio::read_optional(&store.path, MAX_FILE)? else {
            return Ok(store);
        };
        let bad = |reason: String| Error::BadFile {
            path: store.path.clone(),
            reason,
        };
        let top = serde_json::Deserializer::from_slice(&bytes)
            .into_iter::<Value>()
            .next()
            .ok_or_else(|| bad("empty".into()))?
            .map_err(|e| bad(e.to_string()))?;
        let Value::Object(top) = top else {
            return Err(bad("not a JSON object".into()));
        };
        let repos = top.get("Repositories").or_else(|| {
            top.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("Repositories"))
                .map(|(_, v)| v)
        });
        match repos {
            None | Some(Value::Null) => {}
            Some(Value::Object(repos)) => {
                for (name, refs) in repos {
                    let entry = store.repos.entry(name.clone()).or_default();
                    match refs {
                        Value::Null => {}
                        Value::Object(refs) => {
                            for (r, id) in refs {
                                let Value::String(id) = id else {
                                    return Err(bad(format!("{r}: image ID is not a string")));
                                };
                                entry.insert(r.clone(), id.clone());
                            }
                        }
                        _ => return Err(bad(format!("{name}: not a JSON object"))),
                    }
                }
            }
            Some(_) => return Err(bad("Repositories is not a JSON object".into())),
        }
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image a reference names (Docker's `Get`: a bare name means `:latest`; a reference
    /// with tag and digest is looked up by digest).
    pub fn get(&self, r: &Reference) -> Option<ImageId> {
        let r = r.clone().favor_digest().with_default_tag();
        self.repos
            .get(&r.familiar_name())?
            .get(&r.familiar_string())?
            .parse()
            .ok()
    }

    /// Every (reference, image) pair, sorted by the full reference string. Entries docker
    /// itself could not parse are skipped, as its reload does.
    pub fn all(&self) -> Vec<(Reference, ImageId)> {
        let mut out: Vec<(Reference, ImageId)> = self
            .repos
            .values()
            .flat_map(|refs| refs.iter())
            .filter_map(|(r, id)| Some((Reference::parse_normalized(r).ok()?, id.parse().ok()?)))
            .collect();
        out.sort_by_key(|(r, _)| r.to_string());
        out
    }

    /// The references to one image, sorted (Docker's `References`).
    pub fn references(&self, id: &ImageId) -> Vec<Reference> {
        self.all()
            .into_iter()
            .filter(|(_, i)| i == id)
            .map(|(r, _)| r)
            .collect()
    }

    /// The references in the repository `name` names (Docker's `ReferencesByName`).
    pub fn by_name(&self, name: &Reference) -> Vec<(Reference, ImageId)> {
        let familiar = name.familiar_name();
        self.all()
            .into_iter()
            .filter(|(r, _)| r.familiar_name() == familiar)
            .collect()
    }

    /// Points tag `r` (`:latest` when it has none) at `id`. With `force` an existing tag
    /// moves (what `docker tag` and `docker load` do); without, it is a conflict. Digest
    /// references are refused, as is a repository named `sha256`.
    pub fn add_tag(&mut self, r: &Reference, id: &ImageId, force: bool) -> Result<TagChange> {
        if r.digest().is_some() {
            return Err(Error::BadTag {
                reference: r.familiar_string(),
                reason: "refusing to create a tag with a digest reference",
            });
        }
        self.add(r.clone().with_default_tag(), id, force)
    }

    /// Points digest reference `r` at `id`; a digest never moves.
    pub fn add_digest(&mut self, r: &Reference, id: &ImageId) -> Result<TagChange> {
        if r.digest().is_none() {
            return Err(Error::BadTag {
                reference: r.familiar_string(),
                reason: "not a digest reference",
            });
        }
        self.add(r.clone().favor_digest(), id, false)
    }

    fn add(&mut self, r: Reference, id: &ImageId, force: bool) -> Result<TagChange> {
        let name = r.familiar_name();
        let key = r.familiar_string();
        if name == "sha256" {
            return Err(Error::BadTag {
                reference: key,
                reason: "refusing to create an ambiguous tag using digest algorithm as name",
            });
        }
        let repo = self.repos.entry(name).or_default();
        let change = match repo.get(&key) {
            Some(old) if old == id.as_str() => return Ok(TagChange::Unchanged),
            Some(old) if r.digest().is_some() || !force => {
                return Err(Error::Conflict {
                    reference: key,
                    existing: old.clone(),
                });
            }
            Some(old) => TagChange::Moved(old.clone()),
            None => TagChange::Added,
        };
        repo.insert(key, id.to_string());
        Ok(change)
    }

    /// Removes a reference (a bare name means `:latest`); whether it existed.
    pub fn delete(&mut self, r: &Reference) -> bool {
        let r = r.clone().favor_digest().with_default_tag();
        let name = r.familiar_name();
        let Some(repo) = self.repos.get_mut(&name) else {
            return false;
        };
        let removed = repo.remove(&r.familiar_string()).is_some();
        if repo.is_empty() {
            self.repos.remove(&name);
        }
        removed
    }

    /// Removes every reference to `id`; returns them.
    pub fn delete_image(&mut self, id: &ImageId) -> Vec<Reference> {
        let refs = self.references(id);
        for r in &refs {
            self.delete(r);
        }
        refs
    }

    /// The file's bytes as Go's `json.Marshal` writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::from("{\"Repositories\":{");
        for (i, (name, refs)) in self.repos.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            crate::gojson::string(&mut s, name);
            s.push_str(":{");
            for (j, (r, id)) in refs.iter().enumerate() {
                if j > 0 {
                    s.push(',');
                }
                crate::gojson::string(&mut s, r);
                s.push(':');
                crate::gojson::string(&mut s, id);
            }
            s.push('}');
        }
        s.push_str("}}");
        s.into_bytes()
    }

    /// Writes the store atomically (mode 0600), creating its directory if needed.
    pub fn save(&self) -> Result<()> {
        let _span = tracing::info_span!("repositories_save", path = %self.path.display()).entered();
        if let Some(dir) = self.path.parent() {
            fsio::mkdir_all(dir, 0o700)?;
        }
        fsio::atomic_write(&self.path, &self.to_bytes(), 0o600)
    }
}
