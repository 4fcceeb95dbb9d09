//! A real Docker 20.10 overlay2 data-root (`shared/fixtures/docker-root`) opened by the store.
//!
//! The expectations come from the fixture's own README (layer and container tables), from
//! `docker save` output (the layer tars) and from `docker diff` (`changes.txt`), never from our
//! own code. Needs root (whiteout devices and `trusted.*` xattrs survive extraction only as
//! root, and overlay2 mounts need it); as non-root every test prints why and skips.

use testkit::store as common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{read_all, tar_of};
use layer_digest::{ChainId, Digester};
use layer_store::{CheckOptions, Store, StoreOptions};
use testkit::store::assert_consistent;

fn fixture_dir() -> PathBuf {
    // <workspace>/crates/layer-store -> <workspace>/../shared
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/docker-root")
}

/// One row of the README's layer table.
#[derive(Debug, Clone)]
struct LayerRow {
    chain_id: ChainId,
    diff_id: String,
    cache_id: String,
    /// Abbreviated in the README (`sha256:e8926eb50b23…`): a prefix of the parent's chain ID.
    parent_prefix: Option<String>,
    size: u64,
}

/// One row of the README's container table.
#[derive(Debug, Clone)]
struct ContainerRow {
    name: String,
    mount_id: String,
    init_id: String,
    parent: ChainId,
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    layers: Vec<LayerRow>,
    containers: Vec<ContainerRow>,
    ran: String,
    created: String,
    /// `docker save` layer tars, base first.
    saved_layers: Vec<PathBuf>,
}

fn untick(cell: &str) -> String {
    cell.trim().trim_matches('`').to_owned()
}

fn parse_readme(readme: &str) -> (Vec<LayerRow>, Vec<ContainerRow>, String, String) {
    let mut layers = Vec::new();
    let mut containers = Vec::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').collect();
        if cells.len() != 7 && cells.len() != 6 {
            continue;
        }
        let first = untick(cells[1]);
        if cells.len() == 7 && first.starts_with("sha256:") {
            let parent = untick(cells[4]);
            layers.push(LayerRow {
                chain_id: first.parse().unwrap(),
                diff_id: untick(cells[2]),
                cache_id: untick(cells[3]),
                parent_prefix: (parent != "(base)")
                    .then(|| parent.trim_end_matches('…').to_owned()),
                size: untick(cells[5]).parse().unwrap(),
            });
        } else if cells.len() == 6 && first.len() == 64 && layer_meta::is_valid_mount_id(&first) {
            containers.push(ContainerRow {
                name: first,
                mount_id: untick(cells[2]),
                init_id: untick(cells[3]),
                parent: untick(cells[4]).parse().unwrap(),
            });
        }
    }
    let id_after = |key: &str| {
        let start = readme
            .find(key)
            .unwrap_or_else(|| panic!("README has no {key}"))
            + key.len();
        readme[start..].split('`').next().unwrap().to_owned()
    };
    (
        layers,
        containers,
        id_after("ran = `"),
        id_after("created = `"),
    )
}

fn tar_x(args: &[&str], archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let status = Command::new("tar")
        .args(args)
        .arg(archive)
        .arg("-C")
        .arg(into)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar {args:?} {}", archive.display());
}

/// Extracts the fixture as its README says, or `None` (with the reason printed) when not root.
fn fixture() -> Option<Fixture> {
    // The fixture's whiteout devices and trusted.* xattrs need root, its layers overlayfs.
    testkit::gate::overlay().ok()?;
    let dir = fixture_dir();
    assert!(
        dir.join("docker-root.tar.gz").exists(),
        "fixture missing: {}",
        dir.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    tar_x(
        &["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpzf"],
        &dir.join("docker-root.tar.gz"),
        &root,
    );
    let saved = tmp.path().join("saved");
    tar_x(&["-xzf"], &dir.join("saved-committed.tar.gz"), &saved);
    let manifest = std::fs::read_to_string(saved.join("manifest.json")).unwrap();
    let list = manifest
        .split("\"Layers\":[")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    let saved_layers: Vec<PathBuf> = list
        .split(',')
        .map(|s| saved.join(s.trim_matches('"')))
        .collect();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let (layers, containers, ran, created) = parse_readme(&readme);
    assert_eq!(layers.len(), 4, "README layer table: {layers:?}");
    assert_eq!(
        containers.len(),
        2,
        "README container table: {containers:?}"
    );
    assert_eq!(saved_layers.len(), 4);
    Some(Fixture {
        _tmp: tmp,
        root,
        layers,
        containers,
        ran,
        created,
        saved_layers,
    })
}

impl Fixture {
    fn open(&self, driver: Option<&str>) -> Store {
        let mut o = StoreOptions::new(&self.root);
        o.driver = driver.map(str::to_owned);
        Store::open(o).unwrap_or_else(|e| panic!("open the Docker root: {e}"))
    }

    /// The image chain, base first, by following parents.
    fn chain(&self) -> Vec<LayerRow> {
        let mut out: Vec<LayerRow> = Vec::new();
        loop {
            let next = self
                .layers
                .iter()
                .find(|r| match (&r.parent_prefix, out.last()) {
                    (None, None) => true,
                    (Some(p), Some(last)) => last.chain_id.as_str().starts_with(p.as_str()),
                    _ => false,
                });
            match next {
                Some(r) => out.push(r.clone()),
                None => break,
            }
        }
        assert_eq!(out.len(), 4, "README chain");
        out
    }
}

#[test]
fn restores_the_readme_layers_and_containers_with_either_driver_choice() {
    let Some(f) = fixture() else { return };
    for choice in [Some("overlay2"), None] {
        let store = f.open(choice);
        assert_eq!(store.driver_name(), "overlay2", "choice {choice:?}");
        assert_eq!(store.broken(), (vec![], vec![]));
        let map = store.map();
        assert_eq!(map.len(), 4);
        let chain = f.chain();
        for (depth, row) in chain.iter().enumerate() {
            let l = map
                .get(&row.chain_id)
                .unwrap_or_else(|| panic!("layer {} missing", row.chain_id));
            assert_eq!(l.diff_id().to_string(), row.diff_id);
            assert_eq!(l.cache_id(), row.cache_id);
            assert_eq!(l.diff_size(), row.size, "size of {}", row.chain_id);
            assert_eq!(l.depth(), depth + 1);
            assert_eq!(
                l.parent().map(|p| p.chain_id().clone()),
                depth.checked_sub(1).map(|i| chain[i].chain_id.clone())
            );
            assert_eq!(
                l.size(),
                chain[..=depth].iter().map(|r| r.size).sum::<u64>()
            );
        }
        let rw = store.rw_layers();
        assert_eq!(rw.len(), 2);
        for c in &f.containers {
            let m = rw
                .get(&c.name)
                .unwrap_or_else(|| panic!("RW layer {}", c.name));
            assert_eq!(m.mount_id(), c.mount_id);
            assert_eq!(m.init_id(), Some(c.init_id.as_str()));
            assert_eq!(m.parent().map(|p| p.chain_id()), Some(&c.parent));
            assert_eq!(store.get_mount_id(&c.name).unwrap(), c.mount_id);
        }
        // Counts after a restart: children and RW layers only (no image holds a reference).
        let top = &chain[2].chain_id;
        assert_eq!(store.reference_count(&chain[0].chain_id), Some(1));
        assert_eq!(store.reference_count(&chain[1].chain_id), Some(1));
        assert_eq!(store.reference_count(top), Some(3), "commit child + 2 RW");
        assert_eq!(store.reference_count(&chain[3].chain_id), Some(0));
        drop(store);
    }
}

#[test]
fn tar_streams_reassemble_dockers_bytes() {
    let Some(f) = fixture() else { return };
    let store = f.open(Some("overlay2"));
    let mut held = Vec::new();
    for (row, saved) in f.chain().iter().zip(&f.saved_layers) {
        let layer = store.get(&row.chain_id).unwrap();
        let bytes = read_all(layer.tar_stream().unwrap());
        assert_eq!(
            Digester::sha256_of(&bytes).to_string(),
            row.diff_id,
            "stream digest of {}",
            row.chain_id
        );
        let want = std::fs::read(saved).unwrap();
        assert!(
            bytes == want,
            "layer {}: stream ({} bytes) differs from docker save's {} ({} bytes)",
            row.chain_id,
            bytes.len(),
            saved.display(),
            want.len()
        );
        held.push(layer);
    }
    // The top layer holds no reference after a restart (as in moby, the image store would
    // take one), so releasing the references taken here deletes the whole chain.
    let top = held.pop().unwrap();
    assert_eq!(store.release(top).unwrap().len(), 4 - 3);
    assert_eq!(store.map().len(), 3);
}

#[test]
fn ran_container_mounts_with_what_it_did() {
    let Some(f) = fixture() else { return };
    let store = f.open(Some("overlay2"));
    let rw = store.get_rw_layer(&f.ran).unwrap();
    let root = rw.mount("").unwrap();
    let read = |p: &str| std::fs::read(root.join(p));
    assert_eq!(read("usr/share/data/new").unwrap(), b"new\n");
    let data: Vec<String> = std::fs::read_dir(root.join("usr/share/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        data,
        ["new"],
        "opaque /usr/share/data hides the image's files"
    );
    assert!(
        !root.join("etc/c.conf").exists(),
        "whiteout hides /etc/c.conf"
    );
    assert!(!root.join("opt/app/fresh").exists());
    assert_eq!(read("newdir/sub/f").unwrap(), b"x\n");
    assert_eq!(read("opt/app/ran").unwrap(), b"ran\n");
    assert_eq!(
        std::fs::read_link(root.join("etc/a.link")).unwrap(),
        Path::new("a.conf")
    );
    assert!(read("etc/a.conf").unwrap().ends_with(b"appended\n"));
    let d_conf = std::fs::metadata(root.join("etc/d.conf")).unwrap();
    assert_eq!(d_conf.permissions().mode() & 0o777, 0o600);
    // Docker's init layer is below: /etc/hostname and /etc/hosts exist.
    assert!(root.join("etc/hostname").exists() && root.join("etc/hosts").exists());
    rw.unmount().unwrap();

    // changes() equals `docker diff ran` (Docker prints in walk order; compare as sets).
    let changes_txt = std::fs::read_to_string(fixture_dir().join("changes.txt")).unwrap();
    let section = |name: &str| -> Vec<String> {
        let head = format!("## docker diff {name}\n");
        let rest = &changes_txt[changes_txt.find(&head).unwrap() + head.len()..];
        let mut v: Vec<String> = rest
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    let mut got: Vec<String> = rw
        .changes()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    got.sort();
    assert_eq!(got, section("ran"));
    store.release_rw_layer(rw).unwrap();

    let created = store.get_rw_layer(&f.created).unwrap();
    assert!(section("created").is_empty());
    assert!(created.changes().unwrap().is_empty());
    let p = created.mount("").unwrap();
    assert!(p.join("etc/c.conf").exists(), "the image's /etc/c.conf");
    assert!(p.join("usr/share/data").read_dir().unwrap().count() > 1);
    created.unmount().unwrap();
    store.release_rw_layer(created).unwrap();
}

#[test]
fn check_with_content_verification_is_clean() {
    let Some(f) = fixture() else { return };
    let store = f.open(Some("overlay2"));
    let report = store.check(&CheckOptions::default()).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!((report.layers_checked, report.mounts_checked), (4, 2));
    assert_consistent(&store, "fixture as Docker left it");
    // A tampered file is caught, so the clean report above meant something.
    let chain = f.chain();
    let l2 = store.map()[&chain[1].chain_id].clone();
    let diff = f.root.join("overlay2").join(l2.cache_id()).join("diff");
    let file = walk_first_file(&diff).expect("l2 has a regular file");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let report = store.check(&CheckOptions::default()).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.to_string().contains(chain[1].chain_id.as_str())),
        "{:#?}",
        report.problems
    );
}

fn walk_first_file(dir: &Path) -> Option<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let t = e.file_type().unwrap();
        if t.is_file() && e.metadata().unwrap().len() > 0 {
            return Some(e.path());
        }
        if t.is_dir()
            && let Some(f) = walk_first_file(&e.path())
        {
            return Some(f);
        }
    }
    None
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

#[test]
fn register_on_the_top_layer_writes_docker_format() {
    let Some(f) = fixture() else { return };
    let store = f.open(None);
    let chain = f.chain();
    let top = &chain[3];
    let tar = tar_of(&[
        ("etc/added.conf", b"added on top\n", 0o644),
        ("usr/bin/tool", b"replaced\n", 0o755),
    ]);
    let layer = store.register(&tar[..], Some(&top.chain_id)).unwrap();
    assert_eq!(layer.parent().unwrap().chain_id(), &top.chain_id);
    assert_eq!(read_all(layer.tar_stream().unwrap()), tar);
    assert_eq!(store.reference_count(&top.chain_id), Some(1));

    // layerdb: Docker's files, modes and contents (no trailing newline).
    let dir = store.meta().layer_path(layer.chain_id()).unwrap();
    assert_eq!(mode_of(&dir), 0o700);
    let file = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["cache-id", "diff", "parent", "size", "tar-split.json.gz"]
    );
    for n in &names {
        assert_eq!(mode_of(&dir.join(n)), 0o644, "{n}");
    }
    assert_eq!(file("cache-id"), layer.cache_id());
    assert_eq!(file("diff"), layer.diff_id().to_string());
    assert_eq!(file("parent"), top.chain_id.to_string());
    assert_eq!(file("size"), layer.diff_size().to_string());
    assert_eq!(
        &std::fs::read(dir.join("tar-split.json.gz")).unwrap()[..2],
        [0x1f, 0x8b]
    );

    // overlay2: the layer directory as Docker lays it out, linked into l/.
    let home = f.root.join("overlay2");
    let ldir = home.join(layer.cache_id());
    assert_eq!(mode_of(&ldir), 0o710);
    let link = std::fs::read_to_string(ldir.join("link")).unwrap();
    assert_eq!(link.len(), 26);
    assert!(
        link.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    );
    assert_eq!(
        std::fs::read_link(home.join("l").join(&link)).unwrap(),
        Path::new("..").join(layer.cache_id()).join("diff")
    );
    let lower = std::fs::read_to_string(ldir.join("lower")).unwrap();
    let parent_links: Vec<String> = chain
        .iter()
        .rev()
        .map(|r| {
            let l = std::fs::read_to_string(home.join(&r.cache_id).join("link")).unwrap();
            format!("l/{l}")
        })
        .collect();
    assert_eq!(lower, parent_links.join(":"), "lower: parent first");
    assert_eq!(
        std::fs::read(ldir.join("diff/etc/added.conf")).unwrap(),
        b"added on top\n"
    );
    assert!(ldir.join("work").is_dir());

    // The new layer survives a reopen like Docker's own, and releasing it leaves the fixture
    // exactly as it was.
    let id = layer.chain_id().clone();
    drop(layer);
    drop(store);
    let store = f.open(None);
    let layer = store.get(&id).unwrap();
    assert_eq!(read_all(layer.tar_stream().unwrap()), tar);
    // Hold the image's top as Docker's image store would; else it goes with its last child.
    let image = store.get(&top.chain_id).unwrap();
    let removed = store.release(layer).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(store.reference_count(&top.chain_id), Some(1));
    drop(image);
    assert!(!ldir.exists() && !home.join("l").join(&link).exists());
    assert_consistent(&store, "after releasing the new layer");
    assert_eq!(store.map().len(), 4);
}

#[test]
fn releasing_a_docker_container_removes_its_directories() {
    let Some(f) = fixture() else { return };
    let store = f.open(Some("overlay2"));
    let c = f
        .containers
        .iter()
        .find(|c| c.name == f.created)
        .unwrap()
        .clone();
    let rw = store.get_rw_layer(&c.name).unwrap();
    let removed = store.release_rw_layer(rw).unwrap();
    assert!(
        removed.is_empty(),
        "image layers stay: the commit layer holds them"
    );
    let home = f.root.join("overlay2");
    assert!(!home.join(&c.mount_id).exists() && !home.join(&c.init_id).exists());
    assert!(!store.meta().root().join("mounts").join(&c.name).exists());
    assert_eq!(store.reference_count(&c.parent), Some(2));
    assert_consistent(&store, "after releasing the created container");
    let counts: BTreeMap<_, _> = store
        .map()
        .keys()
        .map(|k| (k.clone(), store.reference_count(k).unwrap()))
        .collect();
    drop(store);
    let store = f.open(Some("overlay2"));
    for (k, n) in counts {
        assert_eq!(store.reference_count(&k), Some(n), "{k} after reopen");
    }
}

#[test]
fn registering_dockers_layer_tars_gives_dockers_ids() {
    let Some(f) = fixture() else { return };
    // A fresh store, each driver: the docker save tars register to Docker's DiffIDs, chain
    // IDs and sizes (all four, the commit layer included) and read back byte for byte.
    for driver in common::drivers() {
        let dir = tempfile::tempdir().unwrap();
        let store = common::open(dir.path(), driver);
        let mut parent: Option<ChainId> = None;
        let mut refs = Vec::new();
        for (row, saved) in f.chain().iter().zip(&f.saved_layers) {
            let tar = std::fs::read(saved).unwrap();
            let r = store
                .register(std::fs::File::open(saved).unwrap(), parent.as_ref())
                .unwrap();
            assert_eq!(r.diff_id().to_string(), row.diff_id, "[{driver}]");
            assert_eq!(r.chain_id(), &row.chain_id, "[{driver}]");
            // Docker's overlay2 reports the diff directory's size (symlink targets counted,
            // hard links once); vfs, moby's naive differ, the sum of the tar's entry sizes.
            let want = if driver == "overlay2" {
                row.size
            } else {
                tar::Archive::new(&tar[..])
                    .entries()
                    .unwrap()
                    .map(|e| e.unwrap().header().size().unwrap())
                    .sum()
            };
            assert_eq!(r.diff_size(), want, "[{driver}] size of {}", row.chain_id);
            assert_eq!(read_all(r.tar_stream().unwrap()), tar, "[{driver}]");
            parent = Some(r.chain_id().clone());
            refs.push(r);
        }
        assert_consistent(&store, &format!("[{driver}] Docker's chain registered"));
        for r in refs.into_iter().rev() {
            store.release(r).unwrap();
        }
        assert!(store.map().is_empty());
    }
}
