//! Image commands: `images`, `tag`, `rmi` (and `save`, in its own module).
//!
//! Images are named as docker names them: a tag (`busybox` means `busybox:latest`), a full
//! ID (`sha256:<hex>` or the 64 hex digits) or a unique prefix of one.

use anyhow::{Context as _, Result, bail};
use clap::Args;
use image_meta::journal::RemoveRecord;
use image_meta::{ImageId, Operation, Reference};
use layer_digest::chain_ids;
use serde::Serialize;

use crate::context::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Show full IDs in the table.
    #[arg(long)]
    no_trunc: bool,
    /// Print each image (a row per tag, as the table) through a template: `{{.Repository}}:
    /// {{.Tag}} {{.ID}}` (the fields of `--json` plus `repository` and `tag`; `{{json .}}`
    /// for the whole row), `json` (a JSON object a line), or `table TEMPLATE` (with a header).
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image: tag, ID or unique ID prefix.
    source: String,
    /// The new tag (`name[:tag]`, `:latest` when omitted).
    target: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images: tags, IDs or unique ID prefixes.
    #[arg(required = true)]
    images: Vec<String>,
    /// Delete even while an RW layer is built on the image (its layers stay until that RW
    /// layer goes), or while it is tagged in several repositories.
    #[arg(short, long)]
    force: bool,
}

/// One image, as `images --json` prints it.
#[derive(Debug, Serialize)]
pub struct ImageJson {
    id: String,
    /// Familiar tags (`busybox:latest`).
    repo_tags: Vec<String>,
    /// Familiar digest references (`busybox@sha256:…`).
    repo_digests: Vec<String>,
    /// The top layer's chain ID (`null` for an image without layers).
    top_layer: Option<String>,
    /// Bytes of all its layers (the top layer's chain size).
    size: u64,
    /// The config's `created`.
    created: Option<String>,
    parent: Option<String>,
    /// False when the top layer is not in the store (docker would not list it).
    complete: bool,
}

pub fn images(ctx: &Context, args: ImagesArgs) -> Result<()> {
    let repos = ctx.images.repositories()?;
    let layers = ctx.store.map();
    let mut list: Vec<ImageJson> = ctx
        .images
        .images
        .values()
        .map(|image| {
            let refs = repos.references(&image.id);
            let top = image.chain_id();
            let size = top
                .as_ref()
                .and_then(|t| layers.get(t))
                .map_or(0, |l| l.size());
            ImageJson {
                id: image.id.to_string(),
                repo_tags: refs
                    .iter()
                    .filter(|r| r.tag().is_some())
                    .map(Reference::familiar_string)
                    .collect(),
                repo_digests: refs
                    .iter()
                    .filter(|r| r.digest().is_some())
                    .map(Reference::familiar_string)
                    .collect(),
                complete: top.as_ref().is_none_or(|t| layers.contains_key(t)),
                top_layer: top.map(|t| t.to_string()),
                size,
                created: image.config.created.clone(),
                parent: image.parent.as_ref().map(ToString::to_string),
            }
        })
        .collect();
    // Newest first, as docker lists them.
    list.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    for (id, why) in &ctx.images.broken {
        tracing::warn!(image = %id, error = why, "image does not read; not listed");
    }
    show_images(&list, &args, ctx.json)
}

/// Prints images as `images` does (`--json`, `--format` or a table).
pub fn show_images(list: &[ImageJson], args: &ImagesArgs, json: bool) -> Result<()> {
    if json {
        return output::json(&list);
    }
    if let Some(template) = &args.format {
        let mut rows = Vec::new();
        for image in list {
            let serde_json::Value::Object(fields) = serde_json::to_value(image)? else {
                unreachable!("an ImageJson is an object");
            };
            let tags: Vec<(String, String)> = if image.repo_tags.is_empty() {
                vec![("<none>".into(), "<none>".into())]
            } else {
                image.repo_tags.iter().map(|t| split_tag(t)).collect()
            };
            for (repository, tag) in tags {
                let mut row = fields.clone();
                row.insert("repository".into(), repository.into());
                row.insert("tag".into(), tag.into());
                rows.push(serde_json::Value::Object(row));
            }
        }
        return output::format_rows(template, &rows);
    }
    let mut rows = Vec::new();
    for image in list {
        let id = output::short(&image.id, args.no_trunc);
        let id = if args.no_trunc {
            id
        } else {
            id.trim_start_matches("sha256:").to_owned()
        };
        let top = image
            .top_layer
            .as_deref()
            .map_or("-".into(), |t| output::short(t, args.no_trunc));
        let created = image.created.clone().unwrap_or_else(|| "-".into());
        let size = output::human_size(image.size);
        let tags: Vec<(String, String)> = if image.repo_tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            image.repo_tags.iter().map(|t| split_tag(t)).collect()
        };
        for (name, tag) in tags {
            rows.push(vec![
                name,
                tag,
                id.clone(),
                top.clone(),
                created.clone(),
                size.clone(),
            ]);
        }
    }
    output::table(
        &[
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "TOP LAYER",
            "CREATED",
            "SIZE",
        ],
        &rows,
    )?;
    Ok(())
}

pub fn tag(ctx: &Context, args: TagArgs) -> Result<()> {
    let mut repos = ctx.images.repositories()?;
    let id = ctx.images.resolve(&repos, &args.source)?;
    let target = Reference::parse_normalized(&args.target)
        .with_context(|| format!("invalid reference {:?}", args.target))?;
    if target.digest().is_some() {
        bail!(
            "invalid tag {:?}: refusing to create a tag with a digest reference",
            args.target
        );
    }
    // docker tag moves a tag that names another image.
    repos.add_tag(&target, &id, true)?;
    repos.save().context("write the image tags")?;
    Ok(())
}

/// What one `rmi` argument does, decided before anything is written.
struct Removal {
    id: ImageId,
    /// The references to remove.
    untag: Vec<Reference>,
    /// Whether the image itself goes.
    delete: bool,
}

pub fn rmi(ctx: &Context, args: RmiArgs) -> Result<()> {
    let mut repos = ctx.images.repositories()?;
    // Every name is resolved and every conflict found first: a bad argument changes nothing.
    let mut plan: Vec<Removal> = Vec::new();
    for name in &args.images {
        let id = ctx.images.resolve(&repos, name)?;
        let refs: Vec<Reference> = repos
            .references(&id)
            .into_iter()
            .filter(|r| !plan.iter().any(|p| p.untag.contains(r)))
            .collect();
        let by_ref = Reference::parse_normalized(name)
            .ok()
            .filter(|r| repos.get(r).as_ref() == Some(&id))
            .map(|r| r.favor_digest().with_default_tag());
        let removal = match by_ref {
            Some(r) => {
                let key = r.to_string();
                // Removing the last tag deletes the image, except one that child images
                // name as parent: docker then only untags it (its delete is quiet about
                // that conflict, which no --force lifts), leaving the image dangling.
                let delete = refs.iter().all(|x| x.to_string() == key)
                    && ctx.images.store.children(&id)?.is_empty();
                Removal {
                    id,
                    untag: refs.into_iter().filter(|x| x.to_string() == key).collect(),
                    delete,
                }
            }
            None => {
                let mut repos_named: Vec<String> =
                    refs.iter().map(Reference::familiar_name).collect();
                repos_named.dedup();
                if repos_named.len() > 1 && !args.force {
                    bail!(
                        "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        id.short()
                    );
                }
                Removal {
                    id,
                    untag: refs,
                    delete: true,
                }
            }
        };
        if removal.delete {
            check_deletable(ctx, &removal.id, name, args.force)?;
        }
        plan.push(removal);
    }

    // The journal record first: a kill past the untag leaves untagged images that `gc` then
    // deletes (and their layers it releases), finishing the rmi.
    let in_flight = ctx
        .images
        .store
        .journal()
        .begin(&Operation::Remove(removal_record(ctx, &plan, args.force)))?;
    // Tags first (one atomic write), then the images and their layers.
    for r in &plan {
        for t in &r.untag {
            repos.delete(t);
        }
    }
    if let Err(e) = repos.save() {
        // Nothing changed: the record has nothing to finish.
        if let Err(e) = in_flight.finish() {
            tracing::warn!(error = %e, "could not remove the rmi's journal record");
        }
        return Err(e).context("write the image tags");
    }
    let result = delete_images(ctx, &plan);
    match result {
        Ok(()) => in_flight
            .finish()
            .context("remove the rmi's journal record"),
        Err(e) => {
            // Untagged but not all deleted: the record stays for `gc` to finish.
            eprintln!("warning: {}", crate::context::INTERRUPTED_HINT);
            drop(in_flight);
            Err(e)
        }
    }
}

/// What an rmi will delete: its images and every layer of their chains.
fn removal_record(ctx: &Context, plan: &[Removal], force: bool) -> RemoveRecord {
    let mut record = RemoveRecord {
        force,
        ..RemoveRecord::default()
    };
    for r in plan.iter().filter(|r| r.delete) {
        if record.images.contains(&r.id) {
            continue;
        }
        record.images.push(r.id.clone());
        if let Some(image) = ctx.images.images.get(&r.id) {
            for chain in chain_ids(&image.config.diff_ids) {
                if !record.layers.contains(&chain) {
                    record.layers.push(chain);
                }
            }
        }
    }
    record
}

/// The second half of `rmi`, once the tags are gone: reports the untags, deletes the images
/// and releases their layers.
fn delete_images(ctx: &Context, plan: &[Removal]) -> Result<()> {
    // What docker's API returns for an image delete: [{"Untagged": …}, {"Deleted": …}].
    let mut report: Vec<serde_json::Value> = Vec::new();
    let mut say = |kind: &str, what: String| -> Result<()> {
        if ctx.json {
            report.push(serde_json::json!({ kind: what }));
        } else {
            outln!("{kind}: {what}");
        }
        Ok(())
    };
    for r in plan {
        for t in &r.untag {
            say("Untagged", t.familiar_string())?;
        }
    }
    let mut deleted = std::collections::HashSet::new();
    for r in plan.iter().filter(|r| r.delete) {
        if !deleted.insert(r.id.clone()) {
            continue;
        }
        ctx.images
            .store
            .delete_image(&r.id)
            .with_context(|| format!("delete image {}", r.id))?;
        say("Deleted", r.id.to_string())?;
        if let Some(top) = ctx.images.take(&r.id) {
            let removed = ctx
                .store
                .release(top)
                .with_context(|| format!("release the layers of image {}", r.id))?;
            for md in removed {
                say("Deleted", md.chain_id.to_string())?;
            }
        }
    }
    if ctx.json {
        output::json(&report)?;
    }
    Ok(())
}

/// `name:tag` as its two halves (the tag after the last `:`).
fn split_tag(t: &str) -> (String, String) {
    let (name, tag) = t.rsplit_once(':').unwrap_or((t, ""));
    (name.to_owned(), tag.to_owned())
}

/// Refuses to delete an image that child images name as parent, or (without `force`) that
/// an RW layer is built on.
fn check_deletable(ctx: &Context, id: &ImageId, name: &str, force: bool) -> Result<()> {
    let children = ctx.images.store.children(id)?;
    if !children.is_empty() {
        bail!(
            "conflict: unable to delete {} (cannot be forced) - image has dependent child images",
            id.short()
        );
    }
    let Some(top) = ctx.images.images.get(id).and_then(|i| i.chain_id()) else {
        return Ok(());
    };
    let users: Vec<String> = ctx
        .store
        .rw_layers()
        .into_values()
        .filter(|m| m.parent().is_some_and(|p| p.chain_id() == &top))
        .map(|m| m.name().to_owned())
        .collect();
    if !users.is_empty() && !force {
        bail!(
            "conflict: unable to delete {name} (must be forced) - image is being used by RW layer(s) {}",
            users.join(", ")
        );
    }
    Ok(())
}
