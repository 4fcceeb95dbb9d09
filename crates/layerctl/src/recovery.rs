//! Resolving interrupted image operations: the records of image-meta's [`Journal`] that a
//! killed `load`, `rmi` or `save` left (`gc` resolves them, `check` reports them).
//!
//! A record is only ever found here with the root's lock held, so the process that wrote it
//! is gone: it is an interrupted operation, never one in flight. Per record:
//!
//! * `load` that committed (its record says so, or one of its tags names its image in
//!   `repositories.json`): rolled forward, the record is dropped. Otherwise rolled back: the
//!   images it created go when no tag, child image or RW layer holds them, and the layers it
//!   registered are released where nothing (image, child layer, RW layer) holds them.
//! * `rmi`: rolled forward: its images that are untagged (and have no children, and no RW
//!   layer unless it was `--force`) are deleted, and their layers released where nothing
//!   holds them. An image still tagged was not reached by the kill and stays.
//! * `save`: the temporary archive goes.
//!
//! Destroying only what nothing references: layers no record lists are pinned first, so a
//! release can never cascade below what the operation itself created; what does not read (a
//! record, an image config) is reported and kept.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use image_meta::journal::{LoadRecord, Record, RemoveRecord, SaveRecord};
use image_meta::{ImageId, Operation};
use layer_digest::ChainId;

use crate::context::Context;

/// The prefix of `save`'s temporary archives (only such files are removed for a record).
pub const SAVE_TEMP_PREFIX: &str = ".layerctl-save-";

/// What resolving the journal did.
#[derive(Debug, Default)]
pub struct Resolved {
    /// One line per resolved record: `rolled back load of …`.
    pub resolved: Vec<String>,
    /// Images and layers removed, and temporary files.
    pub removed: Vec<String>,
    /// What was kept because something holds it or it does not read.
    pub kept: Vec<String>,
    /// Records that could not be resolved (they stay for the next `gc`).
    pub failures: Vec<String>,
}

/// The user-facing line of each record that is there (for `check`): a leftover, not
/// corruption.
pub fn describe(ctx: &Context) -> Result<Vec<String>> {
    let listing = ctx
        .images
        .store
        .journal()
        .records()
        .context("read the image operation journal")?;
    let mut out: Vec<String> = listing
        .records
        .iter()
        .map(|r| {
            format!(
                "leftover: interrupted {} (record {}): run `layerctl gc`",
                r.operation,
                r.path.display()
            )
        })
        .collect();
    out.extend(listing.unreadable.iter().map(|(path, e)| {
        format!(
            "journal record {} does not read: {}; kept (`layerctl gc` will not act on it)",
            path.display(),
            error_chain(e)
        )
    }));
    Ok(out)
}

/// An error and its sources on one line (image-meta's `Display` leaves the source out).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cur = c.source();
    }
    text
}

/// Resolves every readable record (see the module docs); a record is removed only once its
/// operation is rolled back or finished.
pub fn resolve(ctx: &Context) -> Result<Resolved> {
    let journal = ctx.images.store.journal();
    let listing = journal
        .records()
        .context("read the image operation journal")?;
    let mut out = Resolved::default();
    for (path, e) in &listing.unreadable {
        out.kept.push(format!(
            "journal record {} (does not read: {}; resolve or remove it by hand)",
            path.display(),
            error_chain(e)
        ));
    }
    if listing.records.is_empty() {
        return Ok(out);
    }
    pin_unlisted(ctx, &listing.records)?;
    for record in &listing.records {
        let _span = tracing::info_span!("resolve", record = %record.path.display()).entered();
        let outcome = match &record.operation {
            Operation::Load(l) => resolve_load(ctx, l, &mut out),
            Operation::Remove(r) => resolve_rmi(ctx, r, &mut out),
            Operation::Save(s) => resolve_save(s, &mut out),
        };
        match outcome.and_then(|verb| {
            journal.remove(record)?;
            Ok(verb)
        }) {
            Ok(verb) => out
                .resolved
                .push(format!("{verb} interrupted {}", record.operation)),
            Err(e) => out.failures.push(format!(
                "interrupted {} (record {}): {e:#}",
                record.operation,
                record.path.display()
            )),
        }
    }
    Ok(out)
}

/// Keeps every layer no record lists for the rest of the process: releasing what a record
/// lists then stops at what existed before the operation.
fn pin_unlisted(ctx: &Context, records: &[Record]) -> Result<()> {
    let listed: BTreeSet<&ChainId> = records
        .iter()
        .flat_map(|r| match &r.operation {
            Operation::Load(l) => l.registered_layers.iter().collect::<Vec<_>>(),
            Operation::Remove(r) => r.layers.iter().collect(),
            Operation::Save(_) => Vec::new(),
        })
        .collect();
    for id in ctx.store.map().keys() {
        if !listed.contains(id) {
            ctx.pin(id)?;
        }
    }
    Ok(())
}

fn resolve_load(ctx: &Context, load: &LoadRecord, out: &mut Resolved) -> Result<&'static str> {
    let repos = ctx.images.repositories()?;
    let committed = load.committed
        || load
            .tags
            .iter()
            .any(|(tag, id)| repos.get(tag).as_ref() == Some(id));
    if committed {
        return Ok("finished");
    }
    let mut pending: Vec<&ImageId> = load.created_images.iter().collect();
    // Children first: an image another created image names as parent goes after it.
    loop {
        let mut progress = false;
        let mut waiting = Vec::new();
        for id in pending {
            match removable_image(ctx, &repos, id, false)? {
                Removable::Gone => {}
                Removable::Kept(why) => out.kept.push(format!("image {id} ({why})")),
                Removable::HasChildren => waiting.push(id),
                Removable::Yes => {
                    delete_image(ctx, id, out)?;
                    progress = true;
                }
            }
        }
        pending = waiting;
        if !progress || pending.is_empty() {
            break;
        }
    }
    for id in pending {
        out.kept
            .push(format!("image {id} (child images name it as parent)"));
    }
    release_unreferenced(ctx, &load.registered_layers, out)?;
    Ok("rolled back")
}

fn resolve_rmi(ctx: &Context, rmi: &RemoveRecord, out: &mut Resolved) -> Result<&'static str> {
    let repos = ctx.images.repositories()?;
    for id in &rmi.images {
        match removable_image(ctx, &repos, id, rmi.force)? {
            Removable::Gone => {}
            // Still tagged: the kill came before the untag, the image is as it was.
            Removable::Kept(why) => tracing::info!(image = %id, why, "image kept"),
            Removable::HasChildren => out
                .kept
                .push(format!("image {id} (child images name it as parent)")),
            Removable::Yes => delete_image(ctx, id, out)?,
        }
    }
    release_unreferenced(ctx, &rmi.layers, out)?;
    Ok("finished")
}

fn resolve_save(save: &SaveRecord, out: &mut Resolved) -> Result<&'static str> {
    let ours = save
        .temp
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(SAVE_TEMP_PREFIX));
    match std::fs::symlink_metadata(&save.temp) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("stat {}", save.temp.display()));
        }
        Ok(meta) if ours && meta.is_file() => {
            std::fs::remove_file(&save.temp)
                .with_context(|| format!("remove {}", save.temp.display()))?;
            out.removed
                .push(format!("temporary archive {}", save.temp.display()));
        }
        Ok(_) => out.kept.push(format!(
            "{} (not a temporary archive of save)",
            save.temp.display()
        )),
    }
    Ok("cleaned up")
}

enum Removable {
    Gone,
    Yes,
    HasChildren,
    Kept(&'static str),
}

/// Whether an image may go: it exists and reads, no tag names it, no image names it as
/// parent, and (unless `force`) no RW layer is built on its top layer.
fn removable_image(
    ctx: &Context,
    repos: &image_meta::Repositories,
    id: &ImageId,
    force: bool,
) -> Result<Removable> {
    let db = ctx.images.store.imagedb();
    if !db.exists(id) {
        return Ok(Removable::Gone);
    }
    let Some(image) = ctx.images.images.get(id) else {
        return Ok(Removable::Kept("does not read"));
    };
    if !repos.references(id).is_empty() {
        return Ok(Removable::Kept("tagged"));
    }
    if !ctx.images.store.children(id)?.is_empty() {
        return Ok(Removable::HasChildren);
    }
    if !force
        && let Some(top) = image.chain_id()
        && ctx
            .store
            .rw_layers()
            .values()
            .any(|m| m.parent().is_some_and(|p| p.chain_id() == &top))
    {
        return Ok(Removable::Kept("an RW layer is built on it"));
    }
    Ok(Removable::Yes)
}

/// Deletes an image and gives back its reference on its top layer.
fn delete_image(ctx: &Context, id: &ImageId, out: &mut Resolved) -> Result<()> {
    ctx.images
        .store
        .delete_image(id)
        .with_context(|| format!("delete image {id}"))?;
    out.removed.push(format!("image {id}"));
    if let Some(top) = ctx.images.take(id) {
        for md in ctx
            .store
            .release(top)
            .with_context(|| format!("release the layers of image {id}"))?
        {
            out.removed.push(format!("layer {}", md.chain_id));
        }
    }
    Ok(())
}

/// Releases each listed layer that nothing holds, the deepest first (its parents, when
/// listed and then unheld, go with it; unlisted ones are pinned).
fn release_unreferenced(ctx: &Context, listed: &[ChainId], out: &mut Resolved) -> Result<()> {
    let layers = ctx.store.map();
    let mut present: Vec<(usize, &ChainId)> = listed
        .iter()
        .filter_map(|id| layers.get(id).map(|l| (l.depth(), id)))
        .collect();
    present.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    for (_, id) in present {
        let Some(users) = ctx.store.users(id) else {
            continue; // went with a child released before it
        };
        if !users.is_empty() {
            tracing::debug!(layer = %id, %users, "layer held; kept");
            continue;
        }
        let r = ctx.store.get(id)?;
        for md in ctx
            .store
            .release(r)
            .with_context(|| format!("release layer {id}"))?
        {
            out.removed.push(format!("layer {}", md.chain_id));
        }
    }
    Ok(())
}
