//! Read-only layer commands: `import`, `ls`, `inspect`, `export`, `rm`, `commit`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use layer_digest::ChainId;

use crate::compression;
use crate::context::Context;
use crate::output::{self, InspectJson, LayerJson};
use crate::progress;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The parent layer (chain ID or unique prefix).
    #[arg(long, value_name = "CHAIN")]
    parent: Option<String>,
    /// The layer tar (plain, gzip or zstd), `-` for stdin.
    file: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Show full IDs in the table.
    #[arg(long)]
    no_trunc: bool,
    /// Print each layer through a template instead of the table: `{{.ChainID}} {{.Size}}`
    /// (the fields of `--json`; `{{json .}}` for the whole row), `json` (a JSON object a
    /// line), or `table TEMPLATE` (with a header).
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Chain ID (or unique prefix).
    chain: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Chain ID (or unique prefix).
    chain: String,
    /// Write to FILE (replaced only when the whole tar is written and verified) instead of
    /// stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Chain ID (or unique prefix).
    chain: String,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The RW layer's name.
    name: String,
}

/// An input file or stdin, with its size when known (for the progress bar).
pub fn open_input(path: &str) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
    if path == "-" {
        return Ok((Box::new(io::stdin()), None));
    }
    let file = File::open(path).with_context(|| format!("open {path}"))?;
    let meta = file.metadata().with_context(|| format!("stat {path}"))?;
    if meta.is_dir() {
        bail!("{path} is a directory, not a layer tar");
    }
    Ok((Box::new(file), Some(meta.len())))
}

pub fn import(ctx: &Context, args: ImportArgs) -> Result<()> {
    let parent = args
        .parent
        .as_deref()
        .map(|p| ctx.resolve_layer(p))
        .transpose()?;
    let (input, total) = open_input(&args.file)?;
    let bar = progress::bytes(ctx.progress, total, "import");
    let (kind, tar) = compression::decompress(bar.wrap_read(input))
        .with_context(|| format!("read {}", args.file))?;
    tracing::info!(file = args.file, compression = ?kind, parent = ?parent.as_ref().map(|p| p.to_string()), "importing layer");
    let layer = ctx
        .store
        .register(tar, parent.as_ref())
        .with_context(|| format!("import {}", args.file))?;
    bar.finish_and_clear();
    if ctx.json {
        output::json(&LayerJson::from(layer.layer()))?;
    } else {
        outln!("{}", layer.chain_id());
    }
    // The layer stays on disk; the count lives only in this process.
    std::mem::forget(layer);
    Ok(())
}

pub fn ls(ctx: &Context, args: LsArgs) -> Result<()> {
    let layers: Vec<LayerJson> = ctx.store.map().values().map(LayerJson::from).collect();
    show_layers(&layers, &args, ctx.json)
}

/// Prints layers as `ls` does (`--json`, `--format` or a table).
pub fn show_layers(layers: &[LayerJson], args: &LsArgs, json: bool) -> Result<()> {
    if json {
        return output::json(&layers);
    }
    if let Some(template) = &args.format {
        let rows = layers
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()?;
        return output::format_rows(template, &rows);
    }
    let rows: Vec<Vec<String>> = layers
        .iter()
        .map(|l| {
            vec![
                output::short(&l.chain_id, args.no_trunc),
                output::short(&l.diff_id, args.no_trunc),
                l.parent
                    .as_deref()
                    .map_or("-".into(), |p| output::short(p, args.no_trunc)),
                output::human_size(l.diff_size),
                output::human_size(l.size),
                output::short(&l.cache_id, args.no_trunc),
            ]
        })
        .collect();
    output::table(
        &[
            "CHAIN ID",
            "DIFF ID",
            "PARENT",
            "DIFF SIZE",
            "SIZE",
            "CACHE ID",
        ],
        &rows,
    )?;
    Ok(())
}

pub fn inspect(ctx: &Context, args: InspectArgs) -> Result<()> {
    let id = ctx.resolve_layer(&args.chain)?;
    let layer = ctx.store.map().remove(&id).context("layer vanished")?;
    let metadata = layer
        .metadata()
        .with_context(|| format!("driver metadata of layer {id}"))?;
    output::json(&InspectJson {
        layer: LayerJson::from(&layer),
        metadata,
    })
}

/// Copies `src` to stdout (through a duplicate of fd 1: std's stdout is line-buffered) or
/// to a new file that replaces `path` only once everything was written and synced.
///
/// An existing `path` that is not a regular file (`/dev/null`, a FIFO, a terminal) is
/// written in place: replacing it with a file would destroy the device node.
pub fn write_output(
    mut src: impl Read,
    path: Option<&Path>,
    progress: &indicatif::ProgressBar,
) -> Result<u64> {
    match path {
        None => {
            refuse_terminal()?;
            let fd = io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("duplicate stdout")?;
            let mut out = io::BufWriter::with_capacity(256 * 1024, File::from(fd));
            let n = io::copy(&mut progress.wrap_read(&mut src), &mut out)?;
            out.flush().context("write stdout")?;
            Ok(n)
        }
        Some(path) if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("open {}", path.display()))?;
            let mut out = io::BufWriter::with_capacity(256 * 1024, file);
            let n = io::copy(&mut progress.wrap_read(&mut src), &mut out)?;
            out.flush()
                .with_context(|| format!("write {}", path.display()))?;
            Ok(n)
        }
        Some(path) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let mut tmp = tempfile::Builder::new()
                .prefix(".layerctl-")
                .tempfile_in(dir)
                .with_context(|| format!("create a temporary file in {}", dir.display()))?;
            let n = {
                let mut out = io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut());
                let n = io::copy(&mut progress.wrap_read(&mut src), &mut out)?;
                out.flush()
                    .with_context(|| format!("write {}", path.display()))?;
                n
            };
            set_output_mode(tmp.as_file(), path)?;
            tmp.as_file()
                .sync_all()
                .with_context(|| format!("sync {}", path.display()))?;
            tmp.persist(path)
                .with_context(|| format!("rename into {}", path.display()))?;
            Ok(n)
        }
    }
}

/// Refuses to write a tar to stdout when stdout is a terminal, as `docker save` and
/// `docker export` do: binary output would garble the terminal, and was surely not meant.
pub fn refuse_terminal() -> Result<()> {
    use std::io::IsTerminal;
    if io::stdout().is_terminal() {
        bail!("refusing to write a tar archive to a terminal: use -o FILE or redirect stdout");
    }
    Ok(())
}

/// `-o` files get mode 0644, as docker's (a temporary file is 0600 until then).
pub fn set_output_mode(file: &File, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("set the mode of {}", path.display()))
}

pub fn export(ctx: &Context, args: ExportArgs) -> Result<()> {
    let id = ctx.resolve_layer(&args.chain)?;
    let layer = ctx.store.map().remove(&id).context("layer vanished")?;
    // The tar is a little larger than the content; a spinner only when that is large.
    let bar = progress::bytes(
        ctx.progress && layer.diff_size() >= progress::LARGE,
        None,
        "export",
    );
    let stream = layer
        .tar_stream()
        .with_context(|| format!("export layer {id}"))?;
    write_output(stream, args.output.as_deref(), &bar)
        .with_context(|| format!("export layer {id}"))?;
    bar.finish_and_clear();
    Ok(())
}

/// Removes a layer nobody builds on, then whatever of its parents that leaves unused.
///
/// Refuses while an image holds it (anywhere in the image's chain), or while a child layer
/// or an RW layer uses it: in the store's moby-style counting
/// the release would only drop the child's count, and the user asked for a removal.
pub fn rm(ctx: &Context, args: RmArgs) -> Result<()> {
    let id = ctx.resolve_layer(&args.chain)?;
    let images = ctx.images.users_of(&id);
    if !images.is_empty() {
        let repos = ctx.images.repositories().ok();
        let names: Vec<String> = images
            .iter()
            .map(|i| match &repos {
                Some(r) => ctx.images.label(r, i),
                None => i.short().to_owned(),
            })
            .collect();
        bail!(
            "layer {id} is in use by image(s): {}; remove them first (layerctl rmi)",
            names.join(", ")
        );
    }
    let children: Vec<ChainId> = ctx
        .store
        .map()
        .into_values()
        .filter(|l| l.parent().is_some_and(|p| p.chain_id() == &id))
        .map(|l| l.chain_id().clone())
        .collect();
    if !children.is_empty() {
        bail!(
            "layer {id} is in use: {} child layer(s), e.g. {}",
            children.len(),
            children[0]
        );
    }
    let users: Vec<String> = ctx
        .store
        .rw_layers()
        .into_values()
        .filter(|m| m.parent().is_some_and(|p| p.chain_id() == &id))
        .map(|m| m.name().to_owned())
        .collect();
    if !users.is_empty() {
        bail!(
            "layer {id} is in use by RW layer(s): {}; remove them first (layerctl rw rm)",
            users.join(", ")
        );
    }
    let layer = ctx.store.get(&id)?;
    let removed = ctx
        .store
        .release(layer)
        .with_context(|| format!("remove layer {id}"))?;
    if removed.is_empty() {
        // Something else holds it: only possible if a count came from elsewhere.
        bail!("layer {id} is still referenced; nothing removed");
    }
    if ctx.json {
        let list: Vec<output::RemovedJson> =
            removed.iter().map(output::RemovedJson::from).collect();
        return output::json(&list);
    }
    for md in removed {
        outln!("{}", md.chain_id);
    }
    Ok(())
}

pub fn commit(ctx: &Context, args: CommitArgs) -> Result<()> {
    let rw = ctx
        .store
        .rw_layers()
        .remove(&args.name)
        .with_context(|| format!("mount does not exist: {}", args.name))?;
    let parent = rw.parent().map(|p| p.chain_id().clone());
    let tar = rw
        .tar_stream()
        .with_context(|| format!("diff of RW layer {}", args.name))?;
    let layer = ctx
        .store
        .register(tar, parent.as_ref())
        .with_context(|| format!("commit RW layer {}", args.name))?;
    if ctx.json {
        output::json(&LayerJson::from(layer.layer()))?;
    } else {
        outln!("{}", layer.chain_id());
    }
    std::mem::forget(layer);
    Ok(())
}
