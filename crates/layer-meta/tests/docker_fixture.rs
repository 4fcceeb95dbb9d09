//! Reads the layerdb of a real dockerd (20.10, overlay2) data-root, and writes the same layers
//! and mounts ourselves to compare bytes and modes with Docker's.
//!
//! The fixture is `../shared/fixtures/docker-root/` beside the workspace root; its README lists
//! the layers and mounts asserted here.

use testkit::meta as common;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{mode, names};
use flate2::read::MultiGzDecoder;
use layer_digest::ChainId;
use layer_meta::{MetaOptions, MetaStore, MountRecord};

const LAYERDB: &str = "image/overlay2/layerdb";

/// (chain ID, diff ID, cache ID, parent, size), from the fixture README.
const LAYERS: [(&str, &str, &str, Option<&str>, u64); 4] = [
    (
        "sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba",
        "sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba",
        "6751648a3fe3d48c497fddd21864dde0b08ebd8cbe61012810ee4289bab911f2",
        None,
        186928,
    ),
    (
        "sha256:2592871b4d224c41c4a6e7d9062857cae0dc936e517a14d53fafbb04a3ef0e4f",
        "sha256:afca7c3ccfb4f27af4c5231e2c2c8cc3a71f929f27390c7bdbd550317c2d21b3",
        "e07e7f89782ecd24c1069807bc43bcce9c5cfba842f8d631bd28fd52be848bc5",
        Some("sha256:e8926eb50b2368bbff0760f545fec1c0ff58fa5484644ce6c1309f2ed6e474b4"),
        63,
    ),
    (
        "sha256:5543758fe7a4c752a0e73eb3082271bcddb3d99a8a4f90e46c46635d2a888c34",
        "sha256:bdf2302fe11123b6bd601d6d86e638851bfb9a1450be92e608058b2d57733359",
        "49fd25ee53f1b2b6828017ee8d7941c359d24abdb3ab6b441e3a9aef60a6cfac",
        Some("sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba"),
        18,
    ),
    (
        "sha256:e8926eb50b2368bbff0760f545fec1c0ff58fa5484644ce6c1309f2ed6e474b4",
        "sha256:7f514e461dadbea3c700cab36992a8e1a837ac6d0b584e6debf67894d99238e1",
        "550d40ee11c02e8eaf48ba9ae543bb0d9981b53f1f6d990d134639c199865100",
        Some("sha256:5543758fe7a4c752a0e73eb3082271bcddb3d99a8a4f90e46c46635d2a888c34"),
        10,
    ),
];

/// (container ID = mount name, mount-id, parent), from the fixture README; init-id is
/// `<mount-id>-init`.
const MOUNTS: [(&str, &str, &str); 2] = [
    (
        "8c2350f3cc55172ab267d2a61b0eec349e8dade4905c568bb7643a229e386d34",
        "1de5bd2e7384d1735f8f63b5494461f202e34ba0b0c0d017eaeca6918e4a455e",
        "sha256:e8926eb50b2368bbff0760f545fec1c0ff58fa5484644ce6c1309f2ed6e474b4",
    ),
    (
        "dd8304d550fdf4c435359c0fcbb859897a4892a577bfea61caf38517673f680b",
        "c6adbf873cb76738a0df9813c26ecd93866aa9eb977b48ec32de788bdb820d3c",
        "sha256:e8926eb50b2368bbff0760f545fec1c0ff58fa5484644ce6c1309f2ed6e474b4",
    ),
];

fn fixture_tarball() -> PathBuf {
    // <workspace>/crates/layer-meta -> <workspace>/../shared
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/docker-root/docker-root.tar.gz");
    assert!(
        path.exists(),
        "fixture missing: {} (shared/ must sit beside the workspace)",
        path.display()
    );
    path
}

/// Extracts the fixture's layerdb into a fresh tempdir, as the fixture README says.
fn extract() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r");
    fs::create_dir(&r).unwrap();
    let status = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpzf"])
        .arg(fixture_tarball())
        .arg("-C")
        .arg(&r)
        .arg(LAYERDB)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar failed: {status}");
    let layerdb = r.join(LAYERDB);
    (dir, layerdb)
}

fn id(s: &str) -> ChainId {
    s.parse().unwrap()
}

/// Every path under `root` with its type, mode and content, for before/after comparisons.
fn snapshot(root: &Path) -> Vec<(PathBuf, u32, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).unwrap();
        let content = if meta.is_file() {
            Some(fs::read(&p).unwrap())
        } else {
            None
        };
        out.push((p.clone(), mode(&p), content));
        if meta.is_dir() {
            for name in names(&p) {
                stack.push(p.join(name));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn opens_docker_layerdb_and_returns_the_readme_contents() {
    let (_dir, layerdb) = extract();
    let before = snapshot(&layerdb);
    let store = MetaStore::open(&layerdb, MetaOptions::default()).unwrap();

    let listing = store.list_layers().unwrap();
    assert!(listing.broken.is_empty(), "{:?}", listing.broken);
    assert_eq!(listing.layers.len(), LAYERS.len());
    for (record, (chain, diff, cache, parent, size)) in listing.layers.iter().zip(LAYERS) {
        assert_eq!(record.chain_id, id(chain));
        assert_eq!(record.diff_id.as_str(), diff);
        assert_eq!(record.cache_id, cache);
        assert_eq!(record.parent, parent.map(id));
        assert_eq!(record.size as u64, size);
        assert_eq!(record.descriptor, None);
        // The tar-split stream decodes and is JSON lines.
        let mut json = String::new();
        store
            .tar_split_reader(&record.chain_id)
            .unwrap()
            .read_to_string(&mut json)
            .unwrap();
        assert!(json.lines().all(|l| l.starts_with("{\"type\":")), "{chain}");
    }

    let mounts = store.list_mounts().unwrap();
    assert!(mounts.broken.is_empty(), "{:?}", mounts.broken);
    let want: Vec<(String, MountRecord)> = MOUNTS
        .iter()
        .map(|(name, mount_id, parent)| {
            let record = MountRecord {
                mount_id: mount_id.to_string(),
                init_id: Some(format!("{mount_id}-init")),
                parent: Some(id(parent)),
            };
            (name.to_string(), record)
        })
        .collect();
    assert_eq!(mounts.mounts, want);

    assert!(store.orphans().unwrap().is_empty());
    let leftovers = store.leftovers().unwrap();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Reading changed nothing.
    assert_eq!(snapshot(&layerdb), before);
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    MultiGzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn writing_the_same_layers_gives_dockers_bytes_and_modes() {
    let (_dir, docker) = extract();
    let out = tempfile::tempdir().unwrap();
    let ours_root = out.path().join("layerdb");
    let ours = MetaStore::open(&ours_root, MetaOptions::default()).unwrap();

    for (chain, diff, cache, parent, size) in LAYERS {
        let chain = id(chain);
        let docker_dir = docker.join("sha256").join(chain.hex());
        let mut tx = ours.start_transaction().unwrap();
        tx.set_diff_id(&diff.parse().unwrap()).unwrap();
        tx.set_size(size).unwrap();
        tx.set_cache_id(cache).unwrap();
        if let Some(parent) = parent {
            tx.set_parent(&id(parent)).unwrap();
        }
        let mut w = tx.tar_split_writer().unwrap();
        let mut gz =
            MultiGzDecoder::new(fs::File::open(docker_dir.join("tar-split.json.gz")).unwrap());
        io::copy(&mut gz, &mut w).unwrap();
        tx.commit(&chain).unwrap();

        let our_dir = ours.layer_path(&chain).unwrap();
        assert_eq!(names(&our_dir), names(&docker_dir), "{chain}");
        assert_eq!(mode(&our_dir), mode(&docker_dir), "{chain}");
        for file in names(&docker_dir) {
            assert_eq!(
                mode(&our_dir.join(&file)),
                mode(&docker_dir.join(&file)),
                "{chain} {file}"
            );
            if file == "tar-split.json.gz" {
                assert_eq!(
                    gunzip(&our_dir.join(&file)),
                    gunzip(&docker_dir.join(&file)),
                    "{chain}"
                );
            } else {
                assert_eq!(
                    fs::read(our_dir.join(&file)).unwrap(),
                    fs::read(docker_dir.join(&file)).unwrap(),
                    "{file}"
                );
            }
        }
    }

    for (name, mount_id, parent) in MOUNTS {
        let record = MountRecord {
            mount_id: mount_id.into(),
            init_id: Some(format!("{mount_id}-init")),
            parent: Some(id(parent)),
        };
        ours.set_mount(name, &record).unwrap();
        let (our_dir, docker_dir) = (
            ours_root.join("mounts").join(name),
            docker.join("mounts").join(name),
        );
        assert_eq!(names(&our_dir), names(&docker_dir));
        assert_eq!(mode(&our_dir), mode(&docker_dir));
        for file in names(&docker_dir) {
            assert_eq!(
                mode(&our_dir.join(&file)),
                mode(&docker_dir.join(&file)),
                "{file}"
            );
            assert_eq!(
                fs::read(our_dir.join(&file)).unwrap(),
                fs::read(docker_dir.join(&file)).unwrap(),
                "{file}"
            );
        }
    }

    for shared in ["", "sha256", "mounts", "tmp"] {
        assert_eq!(
            mode(&ours_root.join(shared)),
            mode(&docker.join(shared)),
            "{shared:?}"
        );
    }
    assert_eq!(names(&ours_root), names(&docker));
    assert!(names(&ours_root.join("tmp")).is_empty());
}
