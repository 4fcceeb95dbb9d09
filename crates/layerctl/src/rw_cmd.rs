//! `rw …`: read-write (container) layers.
//!
//! A mount made by `rw mount` outlives the process: overlay2 keeps its mount counts in memory
//! only, and recognises a mount left by an earlier process from `/proc/self/mountinfo`, so a
//! later `rw unmount` really unmounts it. On vfs a mount is just the directory.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use layer_store::{CreateRwOptions, RwLayer};

use crate::context::Context;
use crate::initlayer;
use crate::layer_cmd::write_output;
use crate::output::{self, ChangeJson, RwJson};
use crate::progress;

#[derive(Debug, Subcommand)]
pub enum RwCommand {
    /// Create an RW layer; prints its mount ID.
    Create(CreateArgs),
    /// List RW layers.
    Ls(LsArgs),
    /// Mount an RW layer; prints the path (the mount outlives the command).
    Mount(NameArg),
    /// Unmount an RW layer mounted by `rw mount`.
    Unmount(NameArg),
    /// The RW layer's changes against its parent, like `docker diff`.
    Changes(NameArg),
    /// The RW layer's changes as a layer tar.
    Diff(DiffArgs),
    /// Remove an RW layer (its parent layer stays).
    Rm(NameArg),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The name (a container ID, say).
    name: String,
    /// The image layer below (chain ID or unique prefix).
    #[arg(long, value_name = "CHAIN")]
    parent: Option<String>,
    /// Add Docker's init layer (/etc/hosts, /dev/console, /.dockerenv …) below the RW layer.
    #[arg(long)]
    init: bool,
    /// A driver option for this layer, as `docker run --storage-opt`: `size=…` (refused:
    /// limits need project quotas, which the drivers do not set up).
    #[arg(long, value_name = "KEY=VALUE")]
    storage_opt: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Show full IDs in the table.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// The RW layer's name.
    name: String,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The RW layer's name.
    name: String,
    /// Write to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(ctx: &Context, command: RwCommand) -> Result<()> {
    match command {
        RwCommand::Create(a) => create(ctx, a),
        RwCommand::Ls(a) => ls(ctx, a),
        RwCommand::Mount(a) => {
            let rw = find(ctx, &a.name)?;
            let path = rw
                .mount("")
                .with_context(|| format!("mount RW layer {}", a.name))?;
            if ctx.json {
                return output::json(&serde_json::json!({
                    "name": a.name,
                    "path": path,
                }));
            }
            outln!("{}", path.display());
            Ok(())
        }
        RwCommand::Unmount(a) => {
            let rw = find(ctx, &a.name)?;
            // As umount(8) and `podman unmount` of something not mounted: an error, not a no-op.
            if !rw.is_mounted() {
                anyhow::bail!("RW layer {} is not mounted", a.name);
            }
            rw.unmount()
                .with_context(|| format!("unmount RW layer {}", a.name))?;
            Ok(())
        }
        RwCommand::Changes(a) => changes(ctx, a),
        RwCommand::Diff(a) => {
            let rw = find(ctx, &a.name)?;
            let bar = progress::bytes(ctx.progress, None, "diff");
            let tar = rw
                .tar_stream()
                .with_context(|| format!("diff of RW layer {}", a.name))?;
            write_output(tar, a.output.as_deref(), &bar)
                .with_context(|| format!("diff of RW layer {}", a.name))?;
            bar.finish_and_clear();
            Ok(())
        }
        RwCommand::Rm(a) => rm(ctx, a),
    }
}

fn find(ctx: &Context, name: &str) -> Result<RwLayer> {
    ctx.store
        .rw_layers()
        .remove(name)
        .with_context(|| format!("mount does not exist: {name}"))
}

fn create(ctx: &Context, args: CreateArgs) -> Result<()> {
    let parent = args
        .parent
        .as_deref()
        .map(|p| ctx.resolve_layer(p))
        .transpose()?;
    let owner = ctx.id_mapping.root_pair();
    let init = move |root: &std::path::Path| initlayer::setup(root, owner);
    let storage_opt =
        graphdriver::options::parse_storage_opts(&args.storage_opt).context("--storage-opt")?;
    let opts = CreateRwOptions {
        init: args.init.then_some(&init as &layer_store::InitFn),
        storage_opt,
        ..CreateRwOptions::default()
    };
    let rw = ctx
        .store
        .create_rw_layer(&args.name, parent.as_ref(), &opts)
        .with_context(|| format!("create RW layer {}", args.name))?;
    if ctx.json {
        return output::json(&RwJson::from(&*rw));
    }
    outln!("{}", rw.mount_id());
    Ok(())
}

fn ls(ctx: &Context, args: LsArgs) -> Result<()> {
    let layers: Vec<RwJson> = ctx.store.rw_layers().values().map(RwJson::from).collect();
    show_rw_layers(&layers, &args, ctx.json)
}

/// Prints RW layers as `rw ls` does (`--json` or a table).
pub fn show_rw_layers(layers: &[RwJson], args: &LsArgs, json: bool) -> Result<()> {
    if json {
        return output::json(&layers);
    }
    let rows: Vec<Vec<String>> = layers
        .iter()
        .map(|m| {
            vec![
                output::short(&m.name, args.no_trunc),
                output::short(&m.mount_id, args.no_trunc),
                m.init_id.as_deref().map_or("-".into(), |i| {
                    if args.no_trunc {
                        i.to_owned()
                    } else {
                        format!("{}-init", output::short(i, false))
                    }
                }),
                m.parent
                    .as_deref()
                    .map_or("-".into(), |p| output::short(p, args.no_trunc)),
            ]
        })
        .collect();
    output::table(&["NAME", "MOUNT ID", "INIT ID", "PARENT"], &rows)?;
    Ok(())
}

fn changes(ctx: &Context, args: NameArg) -> Result<()> {
    let rw = find(ctx, &args.name)?;
    let changes = rw
        .changes()
        .with_context(|| format!("changes of RW layer {}", args.name))?;
    if ctx.json {
        let list: Vec<ChangeJson> = changes
            .iter()
            .map(|c| ChangeJson {
                kind: c.kind.letter().to_string(),
                path: c.path.to_string_lossy().into_owned(),
            })
            .collect();
        return output::json(&list);
    }
    let mut out = String::new();
    for c in &changes {
        out.push_str(&format!("{c}\n"));
    }
    std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())?;
    Ok(())
}

/// Removes the RW layer but never its parent: in moby's counting, releasing an RW layer
/// releases its parent, which would delete an image layer nothing else holds in this process.
/// A reference taken (and never given back) first keeps the parent.
fn rm(ctx: &Context, args: NameArg) -> Result<()> {
    let rw = find(ctx, &args.name)?;
    if let Some(p) = rw.parent() {
        ctx.pin(p.chain_id())?;
    }
    let r = ctx.store.get_rw_layer(&args.name)?;
    ctx.store
        .release_rw_layer(r)
        .with_context(|| format!("remove RW layer {}", args.name))?;
    Ok(())
}
