//! The bodies of the fuzz targets, as plain functions.
//!
//! Two callers share them: the cargo-fuzz crate in `fuzz/` (nightly, libFuzzer, run by
//! `cargo xtask fuzz`) includes this file with `#[path]`, and `tests/fuzz_corpus.rs` (stable,
//! part of `cargo test`) replays the committed seed corpus `fuzz/corpus/<target>/` through the
//! very same functions. Each function takes arbitrary bytes and panics only when a property
//! that must hold for *every* input is broken:
//!
//! * [`tar_disassemble`]: tar-split disassembly passes every byte through unchanged and,
//!   when it accepts an archive, reassembly from its metadata gives the same bytes back; the
//!   layer-archive tar reader never panics on the same bytes.
//! * [`tarsplit_json`]: the tar-split JSON unpacker (plain and gzip'd) and the assembler fed
//!   by it return errors, never panic, and allocate at most what the input holds.
//! * [`archive_apply`]: applying the bytes as a layer tar into a scratch root changes nothing
//!   outside that root (a sentinel file, a victim dir with a planted file, a sibling dir).
//! * [`meta_readers`]: every layer-meta reader over a layerdb whose files hold the bytes
//!   returns values or errors, never panics, and a gzip bomb in `tar-split.json.gz` streams.
//! * [`tar_differential`]: the three readers of a layer tar agree. The codec's
//!   [`layer_archive::TarReader`] and tarsplit's disassembler read the same entries (kind,
//!   name, link, size, mode, ids, mtime, and where tar-split reads it, the content and where
//!   it goes), or both refuse; the applier's entry sequence equals theirs when it accepts,
//!   and it refuses a layer they read only as an extraction refusal (an entry Docker does
//!   not extract) or for sparse data it reads and they do not.
//! * [`image_load`]: `layerctl load`'s archive reading (tar index, docker-save and OCI
//!   manifests, indexes, configs, member lookup through symlinks) errs, never panics, and a
//!   member it opens reads back exactly the size its index gave.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus runner and `cargo xtask fuzz`.
pub const TARGETS: &[(&str, Target)] = &[
    ("tar_disassemble", tar_disassemble),
    ("tarsplit_json", tarsplit_json),
    ("archive_apply", archive_apply),
    ("meta_readers", meta_readers),
    ("image_load", image_load),
    ("tar_differential", tar_differential),
];

/// A `Write` that counts and discards, with a cap so that a bug cannot fill the disk or RAM.
struct CappedSink {
    written: u64,
    cap: u64,
}

impl Write for CappedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len() as u64;
        if self.written > self.cap {
            return Err(io::Error::other("output cap reached"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// tar-split disassembly and reassembly, plus layer-archive's tar reader, over `data`.
pub fn tar_disassemble(data: &[u8]) {
    use tarsplit::asm::{Disassembler, assemble};
    use tarsplit::storage::{BufferFileGetPutter, JsonPacker, JsonUnpacker};

    let mut metadata = Vec::new();
    let mut bodies = BufferFileGetPutter::new();
    let mut passthrough = Vec::new();
    let result = Disassembler::new(data, JsonPacker::new(&mut metadata), &mut bodies)
        .read_to_end(&mut passthrough);
    // Whatever the verdict, the bytes handed on are a prefix of the input, unchanged.
    assert!(
        data.starts_with(&passthrough),
        "disassembly altered the bytes it passed through"
    );
    if result.is_ok() {
        assert_eq!(
            passthrough.len(),
            data.len(),
            "accepted but did not read to EOF"
        );
        let mut rebuilt = Vec::new();
        assemble(JsonUnpacker::new(&metadata[..]), &mut bodies, &mut rebuilt)
            .expect("metadata we wrote must reassemble");
        assert!(
            rebuilt == data,
            "reassembly differs from the input ({} vs {} bytes)",
            rebuilt.len(),
            data.len()
        );
    }

    // The extraction side parses the same bytes with its own reader: errors only.
    let mut reader = layer_archive::TarReader::new(data, layer_archive::Limits::default());
    for _ in 0..100_000 {
        match reader.next_entry() {
            Ok(Some(_)) => {
                if reader.drain().is_err() {
                    break;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
}

/// An unpacker that checks, entry by entry, that the entries never carry more bytes than the
/// metadata they came from (base64 only shrinks; names are copied from the text).
struct BoundedUnpacker<U> {
    inner: U,
    produced: usize,
    input_len: usize,
}

impl<U: tarsplit::storage::Unpacker> tarsplit::storage::Unpacker for BoundedUnpacker<U> {
    fn next_entry(&mut self) -> tarsplit::Result<Option<tarsplit::storage::Entry>> {
        let entry = self.inner.next_entry()?;
        if let Some(entry) = &entry {
            self.produced += entry.payload.as_ref().map_or(0, |p| p.len()) + entry.name.len();
            assert!(
                self.produced <= self.input_len,
                "unpacker produced more bytes than its input"
            );
        }
        Ok(entry)
    }
}

/// The tar-split JSON unpacker (plain and gzip) and the assembler it feeds.
///
/// The plain metadata is parsed once: the assembler pulls entries through a
/// [`BoundedUnpacker`], and whatever it leaves (it stops at the first missing body) is drained
/// afterwards, so every entry is checked.
pub fn tarsplit_json(data: &[u8]) {
    use tarsplit::asm::assemble;
    use tarsplit::storage::{BufferFileGetPutter, JsonUnpacker, Unpacker, gzip_unpacker};

    // Assembly with one known body: segments and "a", or a clear "missing file" error.
    let mut plain = BoundedUnpacker {
        inner: JsonUnpacker::new(data),
        produced: 0,
        input_len: data.len(),
    };
    let mut getter = BufferFileGetPutter::new();
    getter.insert("a", b"hello".to_vec());
    let mut sink = CappedSink {
        written: 0,
        cap: 64 << 20,
    };
    let _ = assemble(&mut plain, &mut getter, &mut sink);
    while let Ok(Some(_)) = plain.next_entry() {}

    let mut gz = gzip_unpacker(data);
    for _ in 0..100_000 {
        if !matches!(gz.next_entry(), Ok(Some(_))) {
            break;
        }
    }
}

/// What one path outside the root looks like: mode, size, mtime (s, ns), uid, inode, content.
type Seen = (u32, u64, i64, i64, u32, u64, Vec<u8>);

/// What sits outside a scratch root: one entry per path, with enough to see any change.
fn snapshot_outside(base: &Path, root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path == root {
                continue;
            }
            let Ok(md) = fs::symlink_metadata(&path) else {
                continue;
            };
            let content = if md.is_file() {
                fs::read(&path).unwrap_or_default()
            } else if md.file_type().is_symlink() {
                fs::read_link(&path)
                    .map(|t| t.into_os_string().into_encoded_bytes())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            out.insert(
                path.clone(),
                (
                    md.mode(),
                    md.size(),
                    md.mtime(),
                    md.mtime_nsec(),
                    md.uid(),
                    md.ino(),
                    content,
                ),
            );
            if md.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

/// Where scratch trees live: tmpfs when the machine has one (`/dev/shm`), else the temp dir.
///
/// Speed matters here: on ext4 every input's mkdir scans for a recently deleted inode, which
/// held `archive_apply` and `meta_readers` to ~200 executions per second; on tmpfs they run
/// at thousands. `FUZZ_SCRATCH` overrides the choice.
fn scratch_parent() -> PathBuf {
    if let Some(dir) = std::env::var_os("FUZZ_SCRATCH") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    match fs::metadata(shm) {
        Ok(md) if md.is_dir() && !md.permissions().readonly() => shm.to_path_buf(),
        _ => std::env::temp_dir(),
    }
}

/// A scratch directory for one thread, made once and reused by every input that thread runs.
///
/// libFuzzer leaves by `exit`, so `Drop` never runs; instead each new scratch dir removes the
/// ones left by processes that no longer exist (the pid is in the name).
fn thread_scratch(kind: &str) -> PathBuf {
    let parent = scratch_parent();
    let prefix = format!("layerstore-fuzz-{kind}-");
    if let Ok(entries) = fs::read_dir(&parent) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or("");
            if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir_in(&parent)
        .expect("scratch dir");
    dir.keep()
}

/// One thread's scratch for [`archive_apply`]: the dir, and what lies outside the root.
struct ApplyScratch {
    base: PathBuf,
    base_fd: rustix::fd::OwnedFd,
    outside: BTreeMap<PathBuf, Seen>,
}

impl ApplyScratch {
    fn new() -> Self {
        let base = thread_scratch("apply");
        let victim = base.join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("hello"), b"outside the root").unwrap();
        fs::write(base.join("sentinel"), b"do not touch").unwrap();
        let outside = snapshot_outside(&base, &base.join("root"));
        let base_fd = rustix::fs::open(
            &base,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .expect("open scratch dir");
        ApplyScratch {
            base,
            base_fd,
            outside,
        }
    }
}

impl Drop for ApplyScratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// A per-thread scratch dir removed when the thread ends (test threads; libFuzzer's main
/// thread exits without destructors and is cleaned up by the next run, see [`thread_scratch`]).
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

thread_local! {
    static APPLY_SCRATCH: ApplyScratch = ApplyScratch::new();
    static META_SCRATCH: ScratchDir = ScratchDir(thread_scratch("meta"));
    static IMAGE_SCRATCH: ScratchDir = ScratchDir(thread_scratch("image"));
}

/// Applies `data[1..]` as a layer tar into a scratch root (whiteout flavour from `data[0]`),
/// then checks that nothing outside the root changed and the root can be removed.
///
/// The scratch dir (sentinel file, victim dir with a planted file) is made once per thread;
/// each input gets a fresh `root` holding links to the victim, and the whole outside is
/// compared with the snapshot taken when the scratch was made, so a change left by any
/// earlier input is caught too.
pub fn archive_apply(data: &[u8]) {
    use layer_archive::{ApplyOptions, WhiteoutFormat, apply_layer};

    let Some((&selector, tar)) = data.split_first() else {
        return;
    };
    APPLY_SCRATCH.with(|scratch| {
        let base = &scratch.base;
        let root = base.join("root");
        fs::create_dir(&root).expect("fresh root (the previous input's root was removed)");
        std::os::unix::fs::symlink(base.join("victim"), root.join("planted-abs")).unwrap();
        std::os::unix::fs::symlink("../victim", root.join("planted-rel")).unwrap();

        let opts = ApplyOptions {
            whiteouts: if selector & 1 == 0 {
                WhiteoutFormat::Plain
            } else {
                WhiteoutFormat::Overlay
            },
            // Root can chown; elsewhere the fuzzer still exercises everything else.
            no_lchown: !rustix::process::geteuid().is_root(),
            best_effort_xattrs: true,
            layer: "fuzz".into(),
            ..ApplyOptions::default()
        };
        let _ = apply_layer(&root, &mut &tar[..], &opts);

        let after = snapshot_outside(base, &root);
        if scratch.outside != after {
            let changed: Vec<_> = after
                .keys()
                .chain(scratch.outside.keys())
                .filter(|k| scratch.outside.get(*k) != after.get(*k))
                .collect();
            panic!("applying the layer changed {changed:?} outside the root");
        }
        safe_root::remove_all_at(rustix::fd::AsFd::as_fd(&scratch.base_fd), c"root")
            .expect("the applied root must be removable");
    });
}

/// One entry as a reader saw it, for [`tar_differential`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReadEntry {
    kind: u8,
    name: Vec<u8>,
    link: Vec<u8>,
    size: i64,
    mode: i64,
    ids: (i64, i64),
    mtime: (i64, u32),
    /// Where the data went: runs of `(offset, length)` and a digest of the bytes, for the
    /// entries tar-split reads (a logical size > 0); `None` otherwise.
    content: Option<Placed>,
}

/// Runs of `(offset, length)` and the digest of their bytes.
type Placed = (Vec<(u64, u64)>, [u8; 32]);

impl ReadEntry {
    fn new(h: &layer_archive::Header) -> Self {
        ReadEntry {
            kind: h.kind.type_flag(),
            name: h.name.clone(),
            link: h.link_name.clone(),
            size: h.size,
            mode: h.mode,
            ids: (h.uid, h.gid),
            mtime: (h.mtime.sec, h.mtime.nsec),
            content: None,
        }
    }
}

/// Data placement in a canonical form, whatever the pieces it arrives in.
#[derive(Default)]
struct Placement {
    runs: Vec<(u64, u64)>,
    bytes: sha2::Sha256,
}

impl Placement {
    fn piece(&mut self, offset: u64, data: &[u8]) {
        use sha2::Digest;
        if data.is_empty() {
            return;
        }
        match self.runs.last_mut() {
            Some((start, len)) if *start + *len == offset => *len += data.len() as u64,
            _ => self.runs.push((offset, data.len() as u64)),
        }
        self.bytes.update(data);
    }

    fn finish(self) -> Placed {
        use sha2::Digest;
        (self.runs, self.bytes.finalize().into())
    }
}

/// What the codec's reader reads, with tar-split's rule for content (a logical size > 0).
fn codec_entries(
    data: &[u8],
) -> Result<(Vec<ReadEntry>, layer_archive::EntrySequence), layer_archive::TarError> {
    let mut reader = layer_archive::TarReader::new(data, layer_archive::Limits::default());
    let mut entries = Vec::new();
    let mut fold = layer_archive::EntryDigest::new();
    let mut buf = vec![0u8; 64 << 10];
    while let Some(h) = reader.next_entry()? {
        fold.push(&h);
        let mut e = ReadEntry::new(&h);
        if h.size > 0 && h.kind != layer_archive::EntryKind::GlobalExtension {
            let mut placement = Placement::default();
            while let Some((offset, n)) = reader.read_data(&mut buf)? {
                placement.piece(offset, &buf[..n]);
            }
            e.content = Some(placement.finish());
        }
        entries.push(e);
    }
    Ok((entries, fold.value()))
}

/// A visitor collecting what tarsplit's disassembler reads.
#[derive(Default)]
struct DisasmCollect {
    entries: Vec<ReadEntry>,
    mapper: Option<layer_archive::codec::sparse::BodyMapper>,
    placement: Option<Placement>,
    offset: u64,
}

impl tarsplit::asm::EntryVisitor for DisasmCollect {
    fn header(&mut self, h: &layer_archive::Header, _offset: u64) -> tarsplit::Result<()> {
        self.entries.push(ReadEntry::new(h));
        self.offset = 0;
        self.mapper = layer_archive::codec::sparse::BodyMapper::new(h, &Default::default());
        self.placement = (h.size > 0 && h.kind != layer_archive::EntryKind::GlobalExtension)
            .then(Placement::default);
        Ok(())
    }
    fn body(&mut self, data: &[u8]) -> tarsplit::Result<()> {
        let Some(placement) = &mut self.placement else {
            return Ok(());
        };
        match &mut self.mapper {
            // The engine itself refuses bad maps and data; here only placement matters.
            Some(mapper) => {
                let _ = mapper.feed(data, |offset, piece| {
                    placement.piece(offset, piece);
                    Ok::<(), std::convert::Infallible>(())
                });
            }
            None => {
                placement.piece(self.offset, data);
                self.offset += data.len() as u64;
            }
        }
        Ok(())
    }
    fn end_body(&mut self) -> tarsplit::Result<()> {
        if let Some(placement) = self.placement.take()
            && let Some(last) = self.entries.last_mut()
        {
            last.content = Some(placement.finish());
        }
        Ok(())
    }
}

/// Records nothing: the differential target needs the visitor's view, not the metadata
/// (and no duplicate-path check, which is tar-split's own rule, not the tar format's).
struct NullPacker;

impl tarsplit::storage::Packer for NullPacker {
    fn add_entry(&mut self, _entry: &tarsplit::storage::Entry) -> tarsplit::Result<i64> {
        Ok(0)
    }
}

/// What tarsplit's disassembler reads (partial padding kept, as Go's reader ends there).
fn disasm_entries(
    data: &[u8],
) -> Result<(Vec<ReadEntry>, layer_archive::EntrySequence), tarsplit::Error> {
    use tarsplit::asm::{DisasmEngine, DisasmOptions, disassemble_to};
    let opts = DisasmOptions {
        keep_partial_padding: true,
        ..DisasmOptions::default()
    };
    let mut engine = DisasmEngine::new(
        NullPacker,
        tarsplit::storage::DiscardFilePutter,
        DisasmCollect::default(),
        opts,
    );
    disassemble_to(data, io::sink(), &mut engine)?;
    let entries = engine.entries();
    let (_, _, visitor) = engine.into_parts();
    Ok((visitor.entries, entries))
}

/// The three readers of a layer tar agree (see the module doc): `data[0]` picks the
/// applier's whiteout flavour, `data[1..]` is the tar.
pub fn tar_differential(data: &[u8]) {
    use layer_archive::{ApplyOptions, WhiteoutFormat, apply_layer_report};

    let Some((&selector, tar)) = data.split_first() else {
        return;
    };
    let codec = codec_entries(tar);
    let disasm = disasm_entries(tar);
    match (&codec, &disasm) {
        (Ok((a, fold_a)), Ok((b, fold_b))) => {
            assert_eq!(
                a, b,
                "the codec's reader and the disassembler read different entries"
            );
            assert_eq!(fold_a, fold_b, "entry sequences differ");
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => panic!("the disassembler refuses what the codec's reader reads: {e}"),
        (Err(e), Ok(_)) => panic!("the codec's reader refuses what the disassembler reads: {e}"),
    }

    let applied = APPLY_SCRATCH.with(|scratch| {
        let root = scratch.base.join("root");
        fs::create_dir(&root).expect("fresh root");
        let opts = ApplyOptions {
            whiteouts: if selector & 1 == 0 {
                WhiteoutFormat::Plain
            } else {
                WhiteoutFormat::Overlay
            },
            no_lchown: !rustix::process::geteuid().is_root(),
            best_effort_xattrs: true,
            layer: "fuzz".into(),
            ..ApplyOptions::default()
        };
        let applied = apply_layer_report(&root, &mut &tar[..], &opts);
        safe_root::remove_all_at(rustix::fd::AsFd::as_fd(&scratch.base_fd), c"root")
            .expect("the applied root must be removable");
        applied
    });
    let sparse_data = |e: &str| e.contains("sparse file");
    match (&codec, applied) {
        (Ok((_, fold)), Ok(applied)) => {
            assert_eq!(&applied.entries, fold, "the applier read other entries");
        }
        // An entry Docker's extraction refuses: the archive itself was read alike.
        (Ok(_), Err(layer_archive::Error::BadEntry { .. })) => {}
        (Ok(_), Err(layer_archive::Error::BadTar { reason, .. })) => {
            // Docker reads every regular file's data; tar-split only a sized one's.
            assert!(
                sparse_data(&reason),
                "the applier refuses a tar both parsers read: {reason}"
            );
        }
        (Ok(_), Err(e)) => panic!("the applier failed on a readable tar: {e}"),
        (Err(_), Err(_)) => {}
        (Err(e), Ok(_)) => {
            // The applier skips the data of entries it does not extract (whiteouts).
            assert!(
                sparse_data(&e.to_string()),
                "the applier accepts a tar the codec refuses: {e}"
            );
        }
    }
}

/// Lays out a layerdb whose files hold pieces of `data` and runs every reader over it.
///
/// `data` is a sequence of pieces, each a little-endian `u32` length then that many bytes
/// (clamped to what is left; `0xFFFF_FFFF` means "no such file"). The pieces become, in
/// order, `diff`, `size`, `cache-id`, `parent`, `descriptor.json`, `tar-split.json.gz` of one
/// layer, then `mount-id`, `init-id`, `parent` of one mount; missing pieces are absent files.
/// The layerdb lives in a per-thread scratch dir and is removed after each input.
pub fn meta_readers(data: &[u8]) {
    use layer_meta::{MetaOptions, MetaStore};

    const CHAIN: &str = "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
    let base = META_SCRATCH.with(|dir| dir.0.clone());
    let layerdb = base.join("layerdb");
    let layer_dir = layerdb.join("sha256").join(CHAIN);
    let mount_dir = layerdb.join("mounts").join("fuzzmount");
    fs::create_dir_all(&layer_dir).unwrap();
    fs::create_dir_all(&mount_dir).unwrap();
    let files = [
        layer_dir.join("diff"),
        layer_dir.join("size"),
        layer_dir.join("cache-id"),
        layer_dir.join("parent"),
        layer_dir.join("descriptor.json"),
        layer_dir.join("tar-split.json.gz"),
        mount_dir.join("mount-id"),
        mount_dir.join("init-id"),
        mount_dir.join("parent"),
    ];
    let mut rest = data;
    for path in &files {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            break;
        };
        let len = u32::from_le_bytes(*len);
        if len == u32::MAX {
            rest = tail;
            continue;
        }
        let (piece, tail) = tail.split_at((len as usize).min(tail.len()));
        fs::write(path, piece).unwrap();
        rest = tail;
    }

    if let Ok(store) = MetaStore::open(&layerdb, MetaOptions::default()) {
        read_everything(&store, CHAIN);
    }
    fs::remove_dir_all(&layerdb).expect("the scratch layerdb must be removable");
}

/// Every reader of `store` over the one layer and mount [`meta_readers`] lays out.
fn read_everything(store: &layer_meta::MetaStore, chain: &str) {
    let id: layer_digest::ChainId = format!("sha256:{chain}").parse().expect("valid chain id");
    let _ = store.layer_exists(&id);
    let _ = store.diff_id(&id);
    let _ = store.size(&id);
    let _ = store.cache_id(&id);
    let _ = store.parent(&id);
    let _ = store.descriptor(&id);
    let _ = store.layer(&id);
    if let Ok(mut reader) = store.tar_split_reader(&id) {
        // Bounded read: a gzip bomb must stream, so reading in a fixed buffer is enough.
        let mut sink = CappedSink {
            written: 0,
            cap: 256 << 20,
        };
        let _ = io::copy(&mut reader, &mut sink);
    }
    let _ = store.list_layers();
    let _ = store.mount("fuzzmount");
    let _ = store.list_mounts();
}

/// Reads `data` as an image archive the way `layerctl load` does, short of registering:
/// indexes the tar, parses the docker-save or OCI manifests into plans, opens every planned
/// layer member and reads it (capped at 1 MiB). Members are read with positioned reads from
/// a file, so the bytes go to a per-thread scratch file first.
pub fn image_load(data: &[u8]) {
    use layerctl::image::plan;
    use layerctl::image::source::{Source, TarIndex};

    let path = IMAGE_SCRATCH.with(|dir| dir.0.join("image.tar"));
    fs::write(&path, data).expect("write the scratch archive");
    let file = fs::File::open(&path).expect("open the scratch archive");
    let Ok(index) = TarIndex::build(file, "fuzz") else {
        return;
    };
    let source = Source::Tar(index);
    let Ok(images) = plan(&source, "fuzz") else {
        return;
    };
    for image in images {
        for layer in &image.layers {
            let Ok((reader, size)) = source.open(&layer.path) else {
                continue;
            };
            let mut got = 0u64;
            let mut buf = [0u8; 8192];
            let mut reader = reader.take(1 << 20);
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n as u64,
                    Err(_) => return,
                }
            }
            // A member lies inside the archive (the index checked), so it reads back whole.
            assert_eq!(
                got,
                size.min(1 << 20),
                "member {} read back a different size than indexed",
                layer.path
            );
        }
    }
}

/// The seed-corpus directory of a target, `fuzz/corpus/<target>` in the workspace.
pub fn corpus_dir(workspace: &Path, target: &str) -> PathBuf {
    workspace.join("fuzz").join("corpus").join(target)
}
