//! `save`: images as a `docker save` archive (Docker 20.10's layout), which `docker load` and
//! `layerctl load` accept.
//!
//! ```text
//! <layer id>/VERSION  "1.0"            one directory per layer of the chain; the id is the
//! <layer id>/json     legacy v1 JSON   chain ID's hex (docker uses a v1 ID hash: any name
//! <layer id>/layer.tar                 works, the manifest names the files)
//! <config hex>.json                    the config's exact bytes
//! manifest.json                        [{"Config","RepoTags","Layers"[,"Parent"]}]
//! repositories                         {"name":{"tag":"<top layer id>"}}, when tagged
//! ```
//!
//! Each `layer.tar` is the layer's tar stream, the exact bytes `export` writes (verified
//! against the DiffID as it is read). A DiffID that appears again at another place in a
//! chain is a symlink to the first copy, as docker writes it. The archive is assembled in a
//! temporary file (the tar header of a layer is written once its size is known) that then
//! replaces `-o FILE` or is copied to stdout.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use image_meta::journal::SaveRecord;
use image_meta::{ImageId, Operation, Reference};
use layer_archive::codec::writer::encode_header;
use layer_archive::{EntryKind, Header, HeaderStyle, Time};
use layer_digest::chain_ids;

use crate::context::Context;
use crate::progress;
use crate::recovery::SAVE_TEMP_PREFIX;

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images: tags, repository names (every tag of it), IDs or unique ID prefixes.
    #[arg(required = true)]
    images: Vec<String>,
    /// Write to FILE (replaced only once the archive is complete), or `-` for stdout (the
    /// default; refused when stdout is a terminal, as docker's).
    #[arg(short, long, value_name = "FILE", default_value = "-")]
    output: String,
}

/// One image to save and the tags it is saved with.
struct Saved {
    id: ImageId,
    tags: Vec<Reference>,
}

pub fn run(ctx: &Context, args: SaveArgs) -> Result<()> {
    if args.output == "-" {
        crate::layer_cmd::refuse_terminal()?;
    }
    let repos = ctx.images.repositories()?;
    let mut images: Vec<Saved> = Vec::new();
    let mut add = |id: ImageId, tag: Option<Reference>| {
        let pos = match images.iter().position(|s| s.id == id) {
            Some(p) => p,
            None => {
                images.push(Saved {
                    id,
                    tags: Vec::new(),
                });
                images.len() - 1
            }
        };
        if let Some(t) = tag
            && !images[pos].tags.contains(&t)
        {
            images[pos].tags.push(t);
        }
    };
    // Names as docker's save takes them: a repository name means all its tags.
    for name in &args.images {
        let parsed = Reference::parse_normalized(name).ok();
        match parsed {
            Some(r) if r.is_name_only() && !repos.by_name(&r).is_empty() => {
                for (t, id) in repos.by_name(&r) {
                    if t.tag().is_some() {
                        add(ctx.images.resolve(&repos, id.as_str())?, Some(t));
                    }
                }
            }
            Some(r) if r.tag().is_some() && r.digest().is_none() && repos.get(&r).is_some() => {
                add(ctx.images.resolve(&repos, name)?, Some(r));
            }
            _ => add(ctx.images.resolve(&repos, name)?, None),
        }
    }

    let to_stdout = args.output == "-";
    let target = PathBuf::from(&args.output);
    let in_place =
        !to_stdout && std::fs::metadata(&target).is_ok_and(|m| !m.is_file() && !m.is_dir());
    let dir = if to_stdout || in_place {
        ctx.store.root().to_path_buf()
    } else {
        match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    // The temporary archive's name goes into the journal before the file exists, so a kill
    // at any point leaves nothing `gc` does not remove.
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let tmp_path = dir.join(format!(
        "{SAVE_TEMP_PREFIX}{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let in_flight = ctx
        .images
        .store
        .journal()
        .begin(&Operation::Save(SaveRecord {
            temp: tmp_path.clone(),
        }))
        .context("save")?;
    let result = write_and_place(ctx, &images, &tmp_path, &target, to_stdout || in_place);
    if let Err(e) = std::fs::remove_file(&tmp_path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %tmp_path.display(), error = %e, "could not remove the temporary archive");
        drop(in_flight);
        eprintln!("warning: {}", crate::context::INTERRUPTED_HINT);
        return result;
    }
    in_flight
        .finish()
        .context("remove the save's journal record")?;
    result
}

/// Writes the archive to `tmp_path`, then copies it out (`copy_out`: to stdout or into an
/// existing non-regular `target`) or renames it over `target` (0644, synced, as docker's).
fn write_and_place(
    ctx: &Context,
    images: &[Saved],
    tmp_path: &std::path::Path,
    target: &std::path::Path,
    copy_out: bool,
) -> Result<()> {
    let to_stdout = target == std::path::Path::new("-");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp_path)
        .with_context(|| format!("create the temporary archive {}", tmp_path.display()))?;
    write_archive(ctx, images, &mut file).context("save")?;
    let file = &mut file;
    if copy_out {
        file.seek(SeekFrom::Start(0))?;
        let out: Box<dyn Write> = if to_stdout {
            use std::os::fd::AsFd;
            Box::new(File::from(
                io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .context("duplicate stdout")?,
            ))
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(target)
                    .with_context(|| format!("open {}", target.display()))?,
            )
        };
        let mut out = io::BufWriter::with_capacity(256 * 1024, out);
        io::copy(file, &mut out)?;
        out.flush().context("write the archive")?;
    } else {
        crate::layer_cmd::set_output_mode(file, target)?;
        file.sync_all()
            .with_context(|| format!("sync {}", target.display()))?;
        std::fs::rename(tmp_path, target)
            .with_context(|| format!("rename into {}", target.display()))?;
        if let Some(dir) = tmp_path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("sync directory {}", dir.display()))?;
        }
    }
    Ok(())
}

/// A tar writer that can leave a member's header for later.
struct TarOut<'a> {
    file: &'a mut File,
    pos: u64,
    mtime: u64,
}

impl TarOut<'_> {
    /// One ustar header block (the names written here always fit: no PAX header).
    fn block(&self, mut h: Header) -> Result<[u8; 512]> {
        h.mtime = Time::from_unix(self.mtime as i64, 0);
        let mut out = Vec::with_capacity(512);
        encode_header(&h, HeaderStyle::Minimal, &mut out);
        <[u8; 512]>::try_from(out.as_slice()).map_err(|_| {
            anyhow::anyhow!(
                "tar name {} too long for one header",
                String::from_utf8_lossy(&h.name)
            )
        })
    }

    fn header(&self, path: &str, kind: EntryKind, size: u64, mode: u32) -> Result<[u8; 512]> {
        let mut h = Header::new(path, kind);
        h.size = size as i64;
        h.mode = i64::from(mode);
        self.block(h)
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file.write_all(data)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let rem = (self.pos % 512) as usize;
        if rem != 0 {
            self.write(&[0u8; 512][..512 - rem])?;
        }
        Ok(())
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        let h = self.header(&format!("{path}/"), EntryKind::Directory, 0, 0o755)?;
        self.write(&h)
    }

    fn file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let h = self.header(path, EntryKind::Regular, data.len() as u64, 0o644)?;
        self.write(&h)?;
        self.write(data)?;
        self.pad()
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let h = self.block(Header::symlink(path, target))?;
        self.write(&h)
    }

    /// A member whose content is streamed from `src`; its header is written afterwards.
    fn stream(
        &mut self,
        path: &str,
        src: &mut dyn io::Read,
        bar: &indicatif::ProgressBar,
    ) -> Result<u64> {
        let at = self.pos;
        self.write(&[0u8; 512])?;
        let mut out = io::BufWriter::with_capacity(1 << 20, &mut *self.file);
        let n = io::copy(&mut bar.wrap_read(src), &mut out)?;
        out.flush()?;
        drop(out);
        self.pos += n;
        self.pad()?;
        let h = self.header(path, EntryKind::Regular, n, 0o644)?;
        self.file.write_all_at(&h, at)?;
        Ok(n)
    }
}

/// Go's `json.Marshal` of a string list (`null` when empty, as docker writes `RepoTags`).
fn json_strings(items: &[String]) -> String {
    if items.is_empty() {
        return "null".into();
    }
    serde_json::to_string(items).expect("strings serialize")
}

fn write_archive(ctx: &Context, images: &[Saved], file: &mut File) -> Result<()> {
    let layers = ctx.store.map();
    let bar = progress::bytes(ctx.progress, None, "save");
    let mut out = TarOut {
        file,
        pos: 0,
        mtime: 0,
    };
    // Layer directories written so far (by name), and the first layer.tar of each DiffID.
    let mut written: HashMap<String, ()> = HashMap::new();
    let mut by_diff: HashMap<String, String> = HashMap::new();
    let mut manifest = String::from("[");
    let mut legacy_repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (i, saved) in images.iter().enumerate() {
        let image = ctx
            .images
            .images
            .get(&saved.id)
            .with_context(|| format!("no such image: {}", saved.id))?;
        if image.config.diff_ids.is_empty() {
            bail!("image {}: empty export - not implemented", saved.id);
        }
        let chains = chain_ids(&image.config.diff_ids);
        let mut layer_paths = Vec::new();
        let mut parent: Option<String> = None;
        for (diff, chain) in image.config.diff_ids.iter().zip(&chains) {
            let name = chain.hex().to_owned();
            let tar_path = format!("{name}/layer.tar");
            if written.insert(name.clone(), ()).is_none() {
                let layer = layers.get(chain).with_context(|| {
                    format!("image {}: layer {chain} is not in the store", saved.id)
                })?;
                out.dir(&name)?;
                out.file(&format!("{name}/VERSION"), b"1.0")?;
                out.file(
                    &format!("{name}/json"),
                    v1_json(&name, parent.as_deref()).as_bytes(),
                )?;
                match by_diff.get(diff.as_str()) {
                    Some(first) => out.symlink(&tar_path, &format!("../{first}"))?,
                    None => {
                        let mut stream = layer
                            .tar_stream()
                            .with_context(|| format!("export layer {chain}"))?;
                        out.stream(&tar_path, &mut stream, &bar)
                            .with_context(|| format!("export layer {chain}"))?;
                        by_diff.insert(diff.as_str().to_owned(), tar_path.clone());
                    }
                }
            }
            layer_paths.push(tar_path);
            parent = Some(name);
        }
        let config = ctx.images.store.imagedb().config_bytes(&saved.id)?;
        let config_name = format!("{}.json", saved.id.hex());
        if written.insert(config_name.clone(), ()).is_none() {
            out.file(&config_name, &config)?;
        }
        let tags: Vec<String> = saved.tags.iter().map(Reference::familiar_string).collect();
        for t in &saved.tags {
            legacy_repos.entry(t.familiar_name()).or_default().insert(
                t.tag().unwrap_or("latest").to_owned(),
                parent.clone().unwrap_or_default(),
            );
        }
        if i > 0 {
            manifest.push(',');
        }
        manifest.push_str(&format!(
            "{{\"Config\":{},\"RepoTags\":{},\"Layers\":{}",
            serde_json::to_string(&config_name)?,
            json_strings(&tags),
            json_strings(&layer_paths)
        ));
        // Docker keeps a parent link only to another image of the same archive.
        if let Some(p) = &image.parent
            && images.iter().any(|s| &s.id == p && s.id != saved.id)
        {
            manifest.push_str(&format!(
                ",\"Parent\":{}",
                serde_json::to_string(p.as_str())?
            ));
        }
        manifest.push('}');
    }
    manifest.push_str("]\n");
    if !legacy_repos.is_empty() {
        let mut text = serde_json::to_string(&legacy_repos)?;
        text.push('\n');
        out.file("repositories", text.as_bytes())?;
    }
    out.file("manifest.json", manifest.as_bytes())?;
    // The end-of-archive marker.
    out.write(&[0u8; 1024])?;
    out.file.flush()?;
    bar.finish_and_clear();
    Ok(())
}

/// The legacy per-layer JSON docker writes beside each `layer.tar` (read only by pre-1.10
/// loaders): the id, the parent's id, docker's zero container config.
fn v1_json(id: &str, parent: Option<&str>) -> String {
    let parent = parent
        .map(|p| format!(",\"parent\":\"{p}\""))
        .unwrap_or_default();
    format!(
        "{{\"id\":\"{id}\"{parent},\"created\":\"1970-01-01T00:00:00Z\",\"container_config\":{{\"Hostname\":\"\",\"Domainname\":\"\",\"User\":\"\",\"AttachStdin\":false,\"AttachStdout\":false,\"AttachStderr\":false,\"Tty\":false,\"OpenStdin\":false,\"StdinOnce\":false,\"Env\":null,\"Cmd\":null,\"Image\":\"\",\"Volumes\":null,\"WorkingDir\":\"\",\"Entrypoint\":null,\"OnBuild\":null,\"Labels\":null}},\"os\":\"linux\"}}"
    )
}
