//! Maintenance: `check`, `gc`, `info`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use layer_store::CheckOptions;
use serde::Serialize;

use crate::context::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Collect leftovers (as gc) and list the broken layers nothing holds. Nothing else is
    /// removed: unloadable records, export defects and RW layers are kept. The exit status
    /// still says whether anything was wrong before the repair.
    #[arg(long)]
    repair: bool,
    /// With --repair, also remove the broken layers it lists (a layer whose driver directory
    /// is gone and that no reference, child, RW layer or unloadable record holds).
    #[arg(long, requires = "repair")]
    remove_broken: bool,
    /// Check metadata and directories only; don't reassemble every layer's tar.
    #[arg(long)]
    quick: bool,
}

impl CheckArgs {
    /// Whether this check changes the root.
    pub fn repairs(&self) -> bool {
        self.repair
    }
}

#[derive(Debug, Serialize)]
struct CheckJson {
    layers_checked: usize,
    rw_layers_checked: usize,
    clean: bool,
    problems: Vec<String>,
    removable: Vec<String>,
    repaired: Vec<String>,
    kept: Vec<String>,
    failures: Vec<String>,
}

pub fn check(ctx: &Context, args: CheckArgs) -> Result<()> {
    let content: u64 = ctx.store.map().values().map(|l| l.diff_size()).sum();
    let spinner = if ctx.progress && (content >= crate::progress::LARGE || args.repair) {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message(format!("checking {} layers", ctx.store.map().len()));
        s.enable_steady_tick(Duration::from_millis(120));
        Some(s)
    } else {
        None
    };
    let report = ctx.store.check(&CheckOptions {
        verify_content: !args.quick,
        repair: args.repair,
        remove_broken: args.remove_broken,
    });
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let report = report?;
    let (image_problems, image_repaired) = check_images(ctx, args.repair)?;
    let mut problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    problems.extend(image_problems);
    let mut repaired = report.repaired.clone();
    repaired.extend(image_repaired);
    let json = CheckJson {
        layers_checked: report.layers_checked,
        rw_layers_checked: report.mounts_checked,
        clean: problems.is_empty(),
        problems,
        removable: report.removable.clone(),
        repaired,
        kept: report.kept.clone(),
        failures: report.failures.clone(),
    };
    if ctx.json {
        output::json(&json)?;
    } else {
        outln!(
            "checked {} layers and {} RW layers",
            json.layers_checked,
            json.rw_layers_checked
        );
        for p in &json.problems {
            outln!("problem: {p}");
        }
        // What removal of broken layers takes, listed before anything is removed.
        for r in &json.removable {
            if args.remove_broken {
                outln!("removing broken {r} (nothing holds it)");
            } else {
                outln!("would remove broken {r} (nothing holds it; --remove-broken removes it)");
            }
        }
        for r in &json.repaired {
            outln!("repaired: removed {r}");
        }
        for k in &json.kept {
            outln!("kept: {k}");
        }
        for f in &json.failures {
            outln!("failed: {f}");
        }
        if json.clean {
            outln!("ok");
        }
    }
    if !json.failures.is_empty() {
        bail!(
            "check --repair could not remove {} item(s): {}",
            json.failures.len(),
            json.failures.join("; ")
        );
    }
    if !json.clean {
        let n = json.problems.len();
        if args.repair {
            bail!("check found {n} problem(s); leftovers collected, the rest is listed above");
        }
        bail!(
            "check found {n} problem(s); `layerctl check --repair` collects leftovers and lists broken layers"
        );
    }
    Ok(())
}

/// The image side of `check`: images that do not read or whose top layer is missing are
/// reported and kept (never deleted: what cannot be loaded is not known to be unused);
/// temporary files of interrupted image-metadata writes are reported, and removed by
/// `--repair`.
fn check_images(ctx: &Context, repair: bool) -> Result<(Vec<String>, Vec<String>)> {
    let images = &ctx.images;
    let mut problems = Vec::new();
    if let Some(why) = &images.unreadable {
        problems.push(format!("image metadata does not read: {why}"));
    }
    for (id, why) in &images.broken {
        problems.push(format!("image {id} does not read: {why}"));
    }
    for id in &images.missing_top {
        let top = images.images.get(id).and_then(|i| i.chain_id());
        problems.push(format!(
            "image {id}: top layer {} is not in the store",
            top.map(|t| t.to_string()).unwrap_or_default()
        ));
    }
    if let Err(e) = images.repositories() {
        problems.push(format!("{e:#}"));
    }
    // Interrupted load/rmi/save: leftovers `gc` resolves (not corruption).
    problems.extend(crate::recovery::describe(ctx)?);
    let leftovers = images.store.leftovers()?;
    for l in &leftovers {
        // "leftover:" as the layer store words its own (the crash campaign counts them).
        problems.push(format!(
            "leftover: temporary file of an interrupted image metadata write {}",
            l.display()
        ));
    }
    let mut repaired = Vec::new();
    if repair {
        // `--repair` collects leftovers as gc does, interrupted image operations included.
        let resolved = crate::recovery::resolve(ctx)?;
        repaired.extend(resolved.removed);
        problems.extend(
            resolved
                .failures
                .iter()
                .map(|f| format!("could not resolve {f}")),
        );
        repaired.extend(
            images
                .store
                .remove_leftovers()?
                .iter()
                .map(|p| p.display().to_string()),
        );
    }
    Ok((problems, repaired))
}

#[derive(Debug, Serialize)]
struct GcJson {
    /// Interrupted image operations resolved: `rolled back interrupted load of …`.
    interrupted: Vec<String>,
    /// What resolving them removed (images, layers, temporary archives).
    removed_by_interrupted: Vec<String>,
    finished_removals: Vec<String>,
    leftovers: Vec<String>,
    driver_dirs: Vec<String>,
    image_leftovers: Vec<String>,
    kept: Vec<String>,
    failures: Vec<String>,
}

/// Removes garbage only (stale write-sets, interrupted removals, driver directories nothing
/// names); goes on past what it cannot remove and exits 1 if anything failed.
pub fn gc(ctx: &Context) -> Result<()> {
    let mut report = ctx.store.collect_garbage()?;
    // Then the image operations a kill interrupted, on a layer store whose own interrupted
    // removals are finished: each rolled back or finished as its journal record says.
    let resolved = crate::recovery::resolve(ctx)?;
    report.kept.extend(resolved.kept);
    report.failures.extend(resolved.failures);
    // Interrupted image-metadata writes leave only `.tmp-*` files (the targets are renamed
    // over atomically); they are the image side's garbage.
    let image_leftovers: Vec<String> = ctx
        .images
        .store
        .remove_leftovers()?
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let failures = report.failures.clone();
    if ctx.json {
        output::json(&GcJson {
            interrupted: resolved.resolved,
            removed_by_interrupted: resolved.removed,
            finished_removals: report.finished_removals,
            leftovers: report.leftovers,
            driver_dirs: report.driver_dirs,
            image_leftovers,
            kept: report.kept,
            failures: report.failures,
        })?;
    } else {
        for r in &resolved.resolved {
            outln!("{r}");
        }
        for r in &resolved.removed {
            outln!("removed {r}");
        }
        for l in &image_leftovers {
            outln!("removed image metadata leftover {l}");
        }
        for r in &report.finished_removals {
            outln!("finished removal of layer {r}");
        }
        for l in &report.leftovers {
            outln!("removed metadata leftover {l}");
        }
        for d in &report.driver_dirs {
            outln!("removed driver directory {d}");
        }
        for k in &report.kept {
            outln!("kept: {k}");
        }
        for f in &report.failures {
            outln!("failed: {f}");
        }
        if report.is_empty() && image_leftovers.is_empty() && resolved.resolved.is_empty() {
            outln!("nothing to remove");
        }
    }
    if !failures.is_empty() {
        bail!(
            "gc could not remove {} item(s): {}",
            failures.len(),
            failures.join("; ")
        );
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct InfoJson {
    root: String,
    driver: String,
    layers: usize,
    rw_layers: usize,
    broken_layers: Vec<String>,
    broken_rw_layers: Vec<String>,
    status: BTreeMap<String, String>,
}

pub fn info(ctx: &Context) -> Result<()> {
    let (broken_layers, broken_rw_layers) = ctx.store.broken();
    let status_rows = ctx.store.driver_status();
    let info = InfoJson {
        root: ctx.store.root().display().to_string(),
        driver: ctx.store.driver_name().to_owned(),
        layers: ctx.store.map().len(),
        rw_layers: ctx.store.rw_layers().len(),
        broken_layers,
        broken_rw_layers,
        status: status_rows.iter().cloned().collect(),
    };
    if ctx.json {
        return output::json(&info);
    }
    let mut rows = vec![
        vec!["Root".to_owned(), info.root.clone()],
        vec!["Driver".to_owned(), info.driver.clone()],
        vec!["Layers".to_owned(), info.layers.to_string()],
        vec!["RW layers".to_owned(), info.rw_layers.to_string()],
        vec![
            "Broken layers".to_owned(),
            info.broken_layers.len().to_string(),
        ],
        vec![
            "Broken RW layers".to_owned(),
            info.broken_rw_layers.len().to_string(),
        ],
    ];
    for (k, v) in status_rows {
        rows.push(vec![format!("  {k}"), v]);
    }
    output::table(&["", ""], &rows)?;
    Ok(())
}
