//! `load`: every layer of a `docker save` archive, an OCI layout directory or an OCI archive,
//! registered as a chain and checked against the image config's DiffIDs.
//!
//! All or nothing: a layer whose DiffID (or OCI blob digest) does not match, or any other
//! failure, releases every layer this load created, so the store is left as it was. Layers
//! that existed before are pinned (a reference kept for the rest of the process) so that
//! releasing their new children can never cascade into deleting them. A kill undoes
//! nothing itself: the journal record written before the first layer (image-meta's
//! `Journal`) names the images and layers the load creates, and `gc` rolls them back unless
//! the tags were written (see `crate::recovery`).
//!
//! Streaming: an archive file is indexed in place and each layer read straight from it; stdin
//! and compressed archives are first spooled to an unnamed temporary file under the root.

mod record;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use image_meta::Operation;
use image_meta::journal::LoadRecord;
use layer_digest::{ChainId, DigestReader, chain_id, chain_ids};
use layer_store::LayerRef;

use crate::compression::{self, Compression};
use crate::context::Context;
use crate::progress;
use layerctl::image::source::{Source, TarIndex};
use layerctl::image::{self, LoadError, format::ImagePlan};

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// A `docker save` archive or OCI archive (tar, maybe gzip/zstd-compressed), an OCI layout
    /// directory, or `-` for an archive on stdin.
    input: String,
    /// Layers registered together in one chain: on overlay2 they are decompressed, hashed and
    /// applied at the same time (vfs applies them one after another anyway); 1 registers the
    /// layers one by one.
    #[arg(long, default_value_t = DEFAULT_CHAIN_WINDOW, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel_layers: u16,
}

pub fn run(ctx: &Context, args: LoadArgs) -> Result<()> {
    let source = open_source(ctx, &args.input)?;
    let plans =
        image::plan(&source, &args.input).with_context(|| format!("load {}", args.input))?;
    // Everything that can be checked without the layers' content is checked before the
    // first write: the configs and tags (in `plan`), the parent links, and the tag file.
    let parents = parent_links(&plans).with_context(|| format!("load {}", args.input))?;
    let repos = ctx.images.repositories()?;

    let mut loader = Loader::new(ctx, usize::from(args.parallel_layers));
    // Before the first write: what this load will create, so that a kill at any later point
    // is rolled back (or, once the tags are written, finished) by `gc`.
    let mut journal_record = plan_record(ctx, &plans, &loader.before);
    let in_flight = ctx
        .images
        .store
        .journal()
        .begin(&Operation::Load(journal_record.clone()))
        .with_context(|| format!("load {}", args.input))?;
    let result = loader.load_all(&source, &plans).and_then(|tops| {
        record::images(ctx, &plans, &tops, &parents, repos, || {
            journal_record.committed = true;
            in_flight
                .update(&Operation::Load(journal_record.clone()))
                .context("mark the load committed in its journal record")
        })
    });
    match result {
        Ok(loaded) => {
            loader.keep();
            in_flight
                .finish()
                .context("remove the load's journal record")?;
            record::print(ctx, &loaded)
        }
        Err(e) => {
            // Undone here; a record whose undo failed stays for `gc`.
            if loader.roll_back() {
                if let Err(e) = in_flight.finish() {
                    tracing::warn!(error = %e, "could not remove the load's journal record");
                }
            } else {
                eprintln!("warning: {}", crate::context::INTERRUPTED_HINT);
            }
            Err(e).with_context(|| format!("load {}", args.input))
        }
    }
}

/// The journal record of a load about to start: the images and layers (chain IDs, from the
/// configs' DiffIDs) not in the store yet, and the tags.
fn plan_record(ctx: &Context, plans: &[ImagePlan], before: &HashSet<ChainId>) -> LoadRecord {
    let db = ctx.images.store.imagedb();
    let mut record = LoadRecord::default();
    for plan in plans {
        if !db.exists(&plan.id) && !record.created_images.contains(&plan.id) {
            record.created_images.push(plan.id.clone());
        }
        let diffs: Vec<_> = plan.layers.iter().map(|l| l.diff_id.clone()).collect();
        for chain in chain_ids(&diffs) {
            if !before.contains(&chain) && !record.registered_layers.contains(&chain) {
                record.registered_layers.push(chain);
            }
        }
        for tag in &plan.tags {
            record.tags.push((tag.clone(), plan.id.clone()));
        }
    }
    record
}

/// The `Parent` links of a `docker save` manifest that docker keeps: a parent that is
/// another image of the same archive (others are dropped, as docker's
/// `validatedParentLinks` does) and whose history is the child's minus one entry (else the
/// archive is refused: docker fails on it, after writing).
fn parent_links(plans: &[ImagePlan]) -> Result<Vec<Option<usize>>> {
    let mut links = Vec::with_capacity(plans.len());
    for plan in plans {
        let Some(parent) = &plan.parent else {
            links.push(None);
            continue;
        };
        let Some(p) = plans
            .iter()
            .position(|o| &o.id == parent && o.id != plan.id)
        else {
            links.push(None);
            continue;
        };
        let child = image_meta::ImageConfig::parse(&plan.config, plan.id.as_str())?;
        let parent_config = image_meta::ImageConfig::parse(&plans[p].config, parent.as_str())?;
        if !child.is_valid_parent(&parent_config) {
            bail!("image {parent} is not a valid parent for {}", plan.id);
        }
        links.push(Some(p));
    }
    Ok(links)
}

/// Opens the input as a [`Source`]: a directory as is, a plain tar in place, stdin or a
/// compressed archive through an unnamed spool file under the root.
fn open_source(ctx: &Context, input: &str) -> Result<Source> {
    let path = Path::new(input);
    let mut file = if input == "-" {
        spool(ctx, io::stdin(), "stdin")?
    } else {
        let meta = std::fs::metadata(path).with_context(|| format!("open {input}"))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            return Ok(Source::Dir(path.to_path_buf()));
        }
        if kind.is_fifo() || kind.is_char_device() {
            // A stream the user named (`<(zcat image.tar.gz)`, a FIFO, /dev/stdin): read it
            // as stdin is read, waiting for its writer as `cat` would.
            let stream = File::open(path).with_context(|| format!("open {input}"))?;
            spool(ctx, stream, input)?
        } else {
            // Never blocks; anything but a regular file is refused before it is read.
            let real = std::fs::canonicalize(path).with_context(|| format!("open {input}"))?;
            image::source::open_regular(&real, input)?.0
        }
    };
    let mut head = [0u8; 4];
    let n = read_up_to(&mut file, &mut head).with_context(|| format!("read {input}"))?;
    file.rewind().with_context(|| format!("read {input}"))?;
    if Compression::detect(&head[..n]) != Compression::None {
        let (_, plain) = compression::decompress(file).with_context(|| format!("read {input}"))?;
        file = spool(ctx, plain, input)?;
    }
    Ok(Source::Tar(TarIndex::build(file, input)?))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Copies a stream to an unnamed file under the root (same filesystem as the layers, gone
/// when closed whatever happens) and rewinds it.
fn spool(ctx: &Context, mut input: impl Read, what: &str) -> Result<File> {
    let mut file = tempfile::tempfile_in(ctx.store.root())
        .with_context(|| format!("create a spool file under {}", ctx.store.root().display()))?;
    io::copy(&mut input, &mut file).with_context(|| format!("read {what}"))?;
    file.rewind()?;
    Ok(file)
}

/// How many layers of an image go to one `register_chain` call by default (the store applies
/// up to four at once on overlay2); bounds the threads and buffers a many-layer image takes.
const DEFAULT_CHAIN_WINDOW: u16 = 4;

/// Decompressed chunks queued between the inflate thread and the store: 2 × 1 MiB.
const INFLATED_IN_FLIGHT: usize = 2;
const INFLATE_CHUNK: usize = 1 << 20;

/// How a layer blob is compressed, from its first bytes.
fn sniff(source: &Source, path: &str) -> Result<Compression> {
    let (mut r, _) = source.open(path)?;
    let mut head = [0u8; 4];
    let n = read_up_to(&mut r, &mut head).map_err(|e| LoadError::io(path.to_owned(), e))?;
    Ok(Compression::detect(&head[..n]))
}

/// The inflate thread: decompresses `blob` into 1 MiB chunks for the store. Stops quietly
/// when the store stops reading (it failed, or reached the end-of-archive marker); a
/// decompression error is both sent to the store (which fails on it) and returned. Chunks
/// the store has read come back on `spare` and are refilled (a fresh 1 MiB buffer per chunk
/// would be an mmap, page faults and an munmap each).
fn inflate_into(
    blob: &mut (dyn Read + Send),
    tx: &SyncSender<io::Result<Vec<u8>>>,
    spare: &Receiver<Vec<u8>>,
) -> io::Result<()> {
    let (_, mut tar) = compression::decompress(blob)?;
    loop {
        let mut chunk = spare.try_recv().unwrap_or_default();
        chunk.resize(INFLATE_CHUNK, 0);
        let n = match read_up_to(&mut tar, &mut chunk) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                return Err(e);
            }
        };
        if n == 0 {
            return Ok(());
        }
        chunk.truncate(n);
        if tx.send(Ok(chunk)).is_err() {
            return Ok(());
        }
    }
}

/// The inflate thread's ends: where it sends chunks, where used ones come back.
type InflateEnds = (SyncSender<io::Result<Vec<u8>>>, Receiver<Vec<u8>>);

/// The two ends of an inflate thread's channels: the thread's, and the store's reader.
fn inflate_channels() -> (InflateEnds, ChunkReader) {
    let (tx, rx) = sync_channel(INFLATED_IN_FLIGHT);
    let (spare_tx, spare_rx) = sync_channel(INFLATED_IN_FLIGHT + 2);
    (
        (tx, spare_rx),
        ChunkReader {
            rx,
            spare: spare_tx,
            current: Vec::new(),
            pos: 0,
        },
    )
}

/// The store's view of the inflated stream.
struct ChunkReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    spare: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let used = std::mem::replace(&mut self.current, next);
                    if used.capacity() > 0 {
                        let _ = self.spare.try_send(used);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The inflate thread reached the end.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A layer blob as the store reads it: hashed while read when its digest must be checked.
enum Blob<R> {
    Hashed(Box<DigestReader<R>>),
    Plain(R),
}

impl<R: Read> Read for Blob<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Blob::Hashed(r) => r.read(buf),
            Blob::Plain(r) => r.read(buf),
        }
    }
}

/// Registers layers and remembers what it must undo.
struct Loader<'a> {
    ctx: &'a Context,
    /// Layers that existed before this load: never released by it.
    before: HashSet<ChainId>,
    /// References to layers this load created, in creation order.
    created: Vec<LayerRef>,
    /// Layers per `register_chain` call.
    window: usize,
}

impl<'a> Loader<'a> {
    fn new(ctx: &'a Context, window: usize) -> Self {
        Loader {
            ctx,
            before: ctx.store.map().into_keys().collect(),
            created: Vec::new(),
            window: window.max(1),
        }
    }

    /// Registers every image's layers; returns each image's top chain ID (`None` for an image
    /// without layers), in plan order.
    fn load_all(&mut self, source: &Source, plans: &[ImagePlan]) -> Result<Vec<Option<ChainId>>> {
        let mut total = 0;
        for plan in plans {
            for layer in &plan.layers {
                total += source.open(&layer.path)?.1;
            }
        }
        let bar = progress::bytes(self.ctx.progress, Some(total), "load");
        let mut tops = Vec::new();
        for plan in plans {
            let top = self.load_image(source, plan, &bar)?;
            if top.is_none() {
                tracing::warn!(image = plan.name, "image has no layers");
            }
            tops.push(top);
        }
        bar.finish_and_clear();
        Ok(tops)
    }

    /// Registers one image's layers: the ones already present are skipped (and pinned) without
    /// reading them, as `docker load` does; the rest go to
    /// [`layer_store::Store::register_chain`] `--parallel-layers` at a time, so that on
    /// overlay2 they are decompressed, hashed and applied at the same time (a layer that
    /// appears meanwhile is handed out and built on by the store). Returns the top layer's
    /// chain ID.
    fn load_image(
        &mut self,
        source: &Source,
        plan: &ImagePlan,
        bar: &indicatif::ProgressBar,
    ) -> Result<Option<ChainId>> {
        let mut parent: Option<ChainId> = None;
        let mut first_new = plan.layers.len();
        for (index, layer) in plan.layers.iter().enumerate() {
            let want = chain_id(parent.as_ref(), &layer.diff_id);
            if !self.ctx.store.map().contains_key(&want) {
                first_new = index;
                break;
            }
            // Same chain, same content: nothing to register.
            tracing::info!(layer = %want, "layer already present");
            if self.before.contains(&want) {
                self.ctx.pin(&want)?;
            }
            bar.inc(source.open(&layer.path)?.1);
            parent = Some(want);
        }
        let mut start = first_new;
        while start < plan.layers.len() {
            let end = (start + self.window).min(plan.layers.len());
            parent = Some(self.register_window(source, plan, start..end, parent.as_ref(), bar)?);
            start = end;
        }
        Ok(parent)
    }

    /// Registers `plan.layers[range]` on `parent` in one chain, each compressed layer inflated
    /// on a thread of its own, and checks every DiffID and blob digest. Returns the top chain.
    fn register_window(
        &mut self,
        source: &Source,
        plan: &ImagePlan,
        range: std::ops::Range<usize>,
        parent: Option<&ChainId>,
        bar: &indicatif::ProgressBar,
    ) -> Result<ChainId> {
        let layers = &plan.layers[range.clone()];
        let mut kinds = Vec::with_capacity(layers.len());
        let mut blobs = Vec::with_capacity(layers.len());
        for (index, layer) in range.clone().zip(layers) {
            let kind = sniff(source, &layer.path)?;
            tracing::info!(image = plan.name, index, path = layer.path, compression = ?kind, "registering layer");
            let (raw, _) = source.open(&layer.path)?;
            kinds.push(kind);
            // Only a blob with a recorded digest (OCI layouts) is hashed: a docker-save layer
            // has none, and the store already hashes its tar for the DiffID.
            let raw = bar.wrap_read(raw);
            blobs.push(match layer.blob_digest {
                Some(_) => Blob::Hashed(Box::new(DigestReader::new(raw))),
                None => Blob::Plain(raw),
            });
        }
        let (registered, inflated) = std::thread::scope(|s| {
            let mut inputs: Vec<Box<dyn Read + Send + '_>> = Vec::with_capacity(blobs.len());
            let mut inflaters = Vec::with_capacity(blobs.len());
            for (blob, kind) in blobs.iter_mut().zip(&kinds) {
                if *kind == Compression::None {
                    inputs.push(Box::new(blob));
                    inflaters.push(None);
                } else {
                    // Inflating on a thread of its own overlaps it with the store's hashing,
                    // splitting and applying instead of adding to its reader thread.
                    let ((tx, spare), reader) = inflate_channels();
                    inflaters.push(Some(s.spawn(move || inflate_into(blob, &tx, &spare))));
                    inputs.push(Box::new(reader));
                }
            }
            let registered = self.ctx.store.register_chain(parent, inputs);
            let inflated: Vec<io::Result<()>> = inflaters
                .into_iter()
                .map(|h| match h {
                    None => Ok(()),
                    Some(h) => h
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("inflate thread panicked"))),
                })
                .collect();
            (registered, inflated)
        });
        let refs = match registered {
            Ok(refs) => refs,
            Err(e) => {
                let failed = match &e {
                    layer_store::Error::RegisterChain { index, .. } => *index,
                    _ => 0,
                };
                let index = range.start + failed;
                let path = &plan.layers[index].path;
                // A corrupt compressed blob explains the failure better than the tar error.
                if let Some(Err(inflate)) = inflated.into_iter().nth(failed) {
                    return Err(LoadError::io(path.clone(), inflate).into());
                }
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("image {}: layer {index} ({path})", plan.name));
            }
        };
        let top = refs.last().map(|r| r.chain_id().clone());
        let got: Vec<_> = refs.iter().map(|r| r.diff_id().clone()).collect();
        for r in refs {
            self.track(r);
        }
        for ((index, layer), (got_diff, blob)) in
            range.zip(layers).zip(got.into_iter().zip(blobs.iter_mut()))
        {
            if got_diff != layer.diff_id {
                return Err(LoadError::DiffIdMismatch {
                    image: plan.name.clone(),
                    index,
                    path: layer.path.clone(),
                    expected: layer.diff_id.to_string(),
                    actual: got_diff.to_string(),
                }
                .into());
            }
            // Hashed exactly when a digest was recorded (above).
            if let (Some(expected), Blob::Hashed(blob)) = (&layer.blob_digest, blob) {
                // The tar is read to its end-of-archive marker; hash what follows too.
                io::copy(blob, &mut io::sink())
                    .map_err(|e| LoadError::io(layer.path.clone(), e))?;
                let actual = blob.digest();
                if &actual != expected {
                    return Err(LoadError::BlobDigest {
                        blob: layer.path.clone(),
                        expected: expected.to_string(),
                        actual: actual.to_string(),
                    }
                    .into());
                }
            }
        }
        Ok(top.expect("a window holds at least one layer"))
    }

    /// Keeps a reference for undo, unless the layer existed before (then it is pinned).
    fn track(&mut self, r: LayerRef) {
        if self.before.contains(r.chain_id()) {
            std::mem::forget(r);
        } else {
            self.created.push(r);
        }
    }

    /// Success: the layers stay (their counts live only in this process).
    fn keep(&mut self) {
        for r in self.created.drain(..) {
            std::mem::forget(r);
        }
    }

    /// Failure: releases what this load created, newest first, so each release finds its
    /// children already gone and deletes the layer. Returns whether every release worked.
    fn roll_back(&mut self) -> bool {
        let mut clean = true;
        while let Some(r) = self.created.pop() {
            let id = r.chain_id().clone();
            match self.ctx.store.release(r) {
                Ok(removed) => {
                    tracing::info!(layer = %id, removed = removed.len(), "rolled back layer")
                }
                Err(e) => {
                    clean = false;
                    tracing::error!(layer = %id, error = %e, "could not roll back layer")
                }
            }
        }
        clean
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn inflate_all(blob: Vec<u8>) -> (io::Result<Vec<u8>>, io::Result<()>) {
        let ((tx, spare), mut reader) = inflate_channels();
        std::thread::scope(|s| {
            let mut blob = &blob[..];
            let inflater = s.spawn(move || inflate_into(&mut blob, &tx, &spare));
            let mut out = Vec::new();
            let read = reader.read_to_end(&mut out).map(|_| out);
            drop(reader);
            (read, inflater.join().unwrap())
        })
    }

    /// The inflate thread hands the store every decompressed byte, across chunk borders.
    #[test]
    fn inflated_stream_is_whole() {
        let plain: Vec<u8> = (0..3 * INFLATE_CHUNK + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let (read, inflated) = inflate_all(gz.finish().unwrap());
        assert_eq!(read.unwrap(), plain);
        inflated.unwrap();
    }

    /// A corrupt or truncated blob fails the reader (so the register) and the thread.
    #[test]
    fn corrupt_blob_fails_both_sides() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[7u8; 100_000]).unwrap();
        let mut blob = gz.finish().unwrap();
        blob.truncate(blob.len() / 2);
        let (read, inflated) = inflate_all(blob);
        assert!(read.is_err());
        assert!(inflated.is_err());
    }
}
