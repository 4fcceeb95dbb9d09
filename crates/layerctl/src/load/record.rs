//! The second half of `load`: the images, once their layers are registered and verified.
//!
//! Order, for crash safety: configs (and distribution records) first, then parent links,
//! then `repositories.json` in one atomic write. A crash before the tags leaves images
//! without tags (docker's dangling images), never a tag naming an image that is not there;
//! the load's journal record (written before its first layer) lets `gc` roll those images
//! and the layers back. Once the tags are written the record is marked committed.

use std::collections::HashSet;

use anyhow::{Context as _, Result};
use image_meta::{ImageId, Repositories, TagChange, V2Metadata};
use layer_digest::ChainId;
use serde::Serialize;

use crate::context::Context;
use layerctl::image::format::ImagePlan;

/// One loaded image, as `load` reports it.
#[derive(Debug, Serialize)]
pub struct Loaded {
    pub id: String,
    /// Familiar tags (`busybox:latest`).
    pub tags: Vec<String>,
    /// The top layer's chain ID (`null` for an image without layers).
    pub top_layer: Option<String>,
    /// Tags moved here from another image: `[tag, previous image ID]`.
    #[serde(skip)]
    pub moved: Vec<(String, String)>,
}

/// Writes every image of `plans` and its tags, and takes the images' references on their top
/// layers; `committed` runs once the tags are written (the load's journal record says so). On
/// failure the images this call created are removed and no tag is written.
pub fn images(
    ctx: &Context,
    plans: &[ImagePlan],
    tops: &[Option<ChainId>],
    parents: &[Option<usize>],
    mut repos: Repositories,
    committed: impl FnOnce() -> Result<()>,
) -> Result<Vec<Loaded>> {
    let db = ctx.images.store.imagedb();
    let mut created: Vec<ImageId> = Vec::new();
    let result = (|| -> Result<Vec<Loaded>> {
        for plan in plans {
            let existed = db.exists(&plan.id);
            let id = db
                .create(&plan.config)
                .with_context(|| format!("store image {}", plan.name))?;
            if !existed {
                created.push(id);
            }
            record_blobs(ctx, plan)?;
        }
        for (plan, parent) in plans.iter().zip(parents) {
            if let Some(p) = parent {
                db.set_parent(&plan.id, &plans[*p].id)
                    .with_context(|| format!("record the parent of image {}", plan.name))?;
            }
        }
        let mut loaded = Vec::with_capacity(plans.len());
        for (plan, top) in plans.iter().zip(tops) {
            let mut moved = Vec::new();
            for tag in &plan.tags {
                if let TagChange::Moved(old) = repos.add_tag(tag, &plan.id, true)? {
                    moved.push((tag.familiar_string(), old));
                }
            }
            loaded.push(Loaded {
                id: plan.id.to_string(),
                tags: plan.tags.iter().map(|t| t.familiar_string()).collect(),
                top_layer: top.as_ref().map(ToString::to_string),
                moved,
            });
        }
        repos.save().context("write the image tags")?;
        Ok(loaded)
    })();
    // Past the tags the load is done: a failure to mark it so is only reported (a record
    // left unmarked still resolves as committed, by its tags, unless it has none).
    let result = result.inspect(|_| {
        if let Err(e) = committed() {
            tracing::warn!(error = %format!("{e:#}"), "journal record not marked committed");
        }
    });
    match result {
        Ok(loaded) => {
            let mut held = HashSet::new();
            for (plan, top) in plans.iter().zip(tops) {
                if let Some(top) = top
                    && held.insert(&plan.id)
                    && !ctx.images.is_held(&plan.id)
                {
                    ctx.images.hold(&plan.id, ctx.store.get(top)?);
                }
            }
            Ok(loaded)
        }
        Err(e) => {
            for id in created.iter().rev() {
                if let Err(e) = ctx.images.store.delete_image(id) {
                    tracing::error!(image = %id, error = %e, "could not remove a half-loaded image");
                }
            }
            Err(e)
        }
    }
}

/// For an OCI image, where each layer's blob digest is known: Docker's pull-reuse records
/// (`diffid-by-digest`, and `v2metadata-by-diffid` with the repository the tag names).
fn record_blobs(ctx: &Context, plan: &ImagePlan) -> Result<()> {
    let dist = ctx.images.store.distribution();
    let repository = plan.tags.first().map(|t| t.name());
    for layer in &plan.layers {
        let Some(blob) = &layer.blob_digest else {
            continue;
        };
        match &repository {
            Some(repo) => dist.add(
                &layer.diff_id,
                &V2Metadata {
                    digest: blob.clone(),
                    source_repository: repo.clone(),
                    hmac: String::new(),
                },
            ),
            None => dist.set_diff_id(blob, &layer.diff_id),
        }
        .with_context(|| format!("record blob {blob} of image {}", plan.name))?;
    }
    Ok(())
}

/// Prints what docker load prints: a line per tag, or the ID of an untagged image; a moved
/// tag says which image lost it. (Docker 20.10 prints the IDs of all images only when the
/// last image of the archive has no tag; an untagged image is always reported here.)
/// `--json`: the list of [`Loaded`].
pub fn print(ctx: &Context, loaded: &[Loaded]) -> Result<()> {
    if ctx.json {
        return crate::output::json(&loaded);
    }
    for image in loaded {
        for (tag, old) in &image.moved {
            outln!(
                "The image {tag} already exists, renaming the old one with ID {old} to empty string"
            );
        }
        if image.tags.is_empty() {
            outln!("Loaded image ID: {}", image.id);
        }
        for tag in &image.tags {
            outln!("Loaded image: {tag}");
        }
    }
    Ok(())
}
