//! The root's images (Docker's `image/<driver>/imagedb` and `repositories.json`) as the
//! reference graph sees them.
//!
//! Opening a root reads every image and takes a reference on its top layer, held for the
//! command's lifetime, as dockerd's image store does at start-up: the layer store's release,
//! gc and repair then count images among a layer's users, and a release that reaches zero
//! never deletes an image's layer. `rmi` hands its image's reference back to the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use anyhow::{Context as _, Result, bail};
use image_meta::{Image, ImageId, ImageStore, Reference, Repositories};
use layer_digest::{ChainId, chain_ids};
use layer_store::{LayerRef, Store};

/// The images of the open root.
#[derive(Debug)]
pub struct Images {
    pub store: ImageStore,
    /// Images that read, by ID.
    pub images: BTreeMap<ImageId, Image>,
    /// Images that did not read (kept, reported).
    pub broken: Vec<(ImageId, String)>,
    /// Images whose top layer is not in the layer store (docker skips them at start-up).
    pub missing_top: Vec<ImageId>,
    /// Why the image list could not be read at all, if it could not.
    pub unreadable: Option<String>,
    /// The top-layer references held, by image.
    held: Mutex<HashMap<ImageId, LayerRef>>,
}

impl Images {
    /// Reads the images of `store`'s root and takes a reference on each one's top layer.
    /// Nothing here fails the command: what does not read is recorded and logged.
    pub fn open(store: &Store) -> Images {
        let image_store = ImageStore::new(store.root(), store.driver_name());
        let mut images = Images {
            store: image_store,
            images: BTreeMap::new(),
            broken: Vec::new(),
            missing_top: Vec::new(),
            unreadable: None,
            held: Mutex::new(HashMap::new()),
        };
        let listing = match images.store.images() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "image metadata does not read");
                images.unreadable = Some(format!("{:#}", anyhow::Error::new(e)));
                return images;
            }
        };
        let mut held = HashMap::new();
        for image in listing.images {
            if let Some(top) = image.chain_id() {
                match store.get(&top) {
                    Ok(r) => {
                        held.insert(image.id.clone(), r);
                    }
                    Err(e) => {
                        tracing::warn!(image = %image.id, layer = %top, error = %e, "image's top layer is missing");
                        images.missing_top.push(image.id.clone());
                    }
                }
            }
            images.images.insert(image.id.clone(), image);
        }
        images.broken = listing
            .broken
            .into_iter()
            .map(|(id, e)| (id, format!("{:#}", anyhow::Error::new(e))))
            .collect();
        images.held = Mutex::new(held);
        images
    }

    /// `repositories.json`, read now.
    pub fn repositories(&self) -> Result<Repositories> {
        self.store
            .repositories()
            .context("read the image tags (repositories.json)")
    }

    /// Keeps `r` as image `id`'s reference on its top layer.
    pub fn hold(&self, id: &ImageId, r: LayerRef) {
        let mut held = self.held.lock().expect("image refs lock");
        if let Some(old) = held.insert(id.clone(), r) {
            // Two references on one layer for one image: the count lives only in this
            // process, so keeping both is harmless.
            std::mem::forget(old);
        }
    }

    /// Whether image `id` holds a reference.
    pub fn is_held(&self, id: &ImageId) -> bool {
        self.held.lock().expect("image refs lock").contains_key(id)
    }

    /// Hands back image `id`'s reference (for `rmi` to release).
    pub fn take(&self, id: &ImageId) -> Option<LayerRef> {
        self.held.lock().expect("image refs lock").remove(id)
    }

    /// Images whose chain holds `layer` (anywhere, not only on top).
    pub fn users_of(&self, layer: &ChainId) -> Vec<ImageId> {
        self.images
            .values()
            .filter(|i| chain_ids(&i.config.diff_ids).contains(layer))
            .map(|i| i.id.clone())
            .collect()
    }

    /// Finds an image as docker does: a full ID (`sha256:<hex>` or 64 hex), a tag (a bare
    /// name means `:latest`; `name@digest` a digest reference), else a unique ID prefix.
    pub fn resolve(&self, repos: &Repositories, name: &str) -> Result<ImageId> {
        if let Ok(id) = name.parse::<ImageId>() {
            return self.known(id, name);
        }
        if image_meta::reference::is_full_identifier(name) {
            return self.known(ImageId::from_hex(name).expect("64 hex digits"), name);
        }
        let named = Reference::parse_normalized(name);
        if let Ok(r) = &named
            && let Some(id) = repos.get(r)
        {
            return self.known(id, name);
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            let matches: Vec<&ImageId> = self
                .images
                .keys()
                .filter(|id| id.hex().starts_with(hex))
                .collect();
            match matches.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                many => bail!(
                    "image ID prefix {name} is ambiguous ({} images)",
                    many.len()
                ),
            }
        }
        if let Err(e) = named
            && !hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            bail!("invalid reference {name:?}: {e}");
        }
        bail!("no such image: {name}")
    }

    fn known(&self, id: ImageId, name: &str) -> Result<ImageId> {
        if self.images.contains_key(&id) {
            Ok(id)
        } else {
            bail!("no such image: {name}")
        }
    }

    /// How to name an image to a user: its first tag, else its short ID.
    pub fn label(&self, repos: &Repositories, id: &ImageId) -> String {
        repos
            .references(id)
            .into_iter()
            .find(|r| r.tag().is_some())
            .map(|r| r.familiar_string())
            .unwrap_or_else(|| id.short().to_owned())
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        // The references end with the process, as dockerd's do; releasing them would let a
        // count reach zero and delete an image's layers.
        if let Ok(mut held) = self.held.lock() {
            for (_, r) in held.drain() {
                std::mem::forget(r);
            }
        }
    }
}
