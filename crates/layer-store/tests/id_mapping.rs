//! A remapped store (Docker's `--userns-remap`) on each driver: where it lives, who owns its
//! directories and files, and that every tar it hands out is the unmapped store's.

use testkit::store as common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{drivers, read_all};
use graphdriver::{IdMapping, IdRange};
use layer_store::{CreateRwOptions, Store, StoreOptions};

/// Container root is host 100000 for UIDs and 200000 for GIDs (distinct, so a mix-up shows).
fn remap() -> IdMapping {
    IdMapping::new(
        vec![IdRange::new(0, 100000, 65536)],
        vec![IdRange::new(0, 200000, 65536)],
    )
    .unwrap()
}

fn need_root(test: &str) -> bool {
    testkit::gate::root(&format!("{test}: a remapped store chowns to other IDs")).is_ok()
}

fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// A tempdir the remapped root may traverse (dockerd refuses a path it cannot).
fn data_root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    d
}

fn open(data: &Path, driver: &str) -> Store {
    let mut o = StoreOptions::new(data).driver(driver);
    o.id_mapping = remap();
    o.durability = layer_meta::Durability::None;
    Store::open(o).unwrap_or_else(|e| panic!("open remapped store on {driver}: {e}"))
}

/// Files owned by 0, 1000 and 65534 (and a symlink, a directory, an implied directory).
fn layer_tar() -> Vec<u8> {
    testkit::tar::Tar::new()
        .gnu()
        .mtime(1_600_000_000)
        .dir("etc/")
        .file("etc/hostname", b"box\n")
        .owner(1000, 1000)
        .dir("home/user/")
        .file("home/user/notes", b"hi\n")
        .symlink("home/user/link", "notes")
        .owner(65534, 65534)
        .file("var/nobody", b"x\n")
        .build()
}

#[test]
fn a_remapped_store_lives_under_the_remapped_root_pair() {
    if !need_root("a_remapped_store_lives_under_the_remapped_root_pair") {
        return;
    }
    for driver in drivers() {
        let data = data_root();
        let store = open(data.path(), driver);
        let root = data.path().join("100000.200000");
        assert_eq!(store.root(), root);
        assert_eq!(layer_store::store_root(data.path(), &remap()), root);
        assert_eq!(owner_mode(data.path()), (0, 200000, 0o710));
        assert_eq!(owner_mode(&root), (0, 200000, 0o710));
        assert_eq!(
            owner_mode(&root.join(driver)),
            (0, 200000, 0o710),
            "{driver} home"
        );
        if driver == "overlay2" {
            assert_eq!(owner_mode(&root.join("overlay2/l")), (0, 0, 0o700));
        } else {
            assert_eq!(owner_mode(&root.join("vfs/dir")), (0, 200000, 0o710));
        }
        assert!(root.join("image").join(driver).join("layerdb").is_dir());
        assert!(
            !data.path().join("image").exists(),
            "nothing of the store outside <uid>.<gid>"
        );
    }
}

#[test]
fn a_root_the_remapped_root_cannot_traverse_is_refused_as_dockerd_does() {
    if !need_root("a_root_the_remapped_root_cannot_traverse_is_refused") {
        return;
    }
    let outer = tempfile::tempdir().unwrap();
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = outer.path().join("data");
    let mut o = StoreOptions::new(&data).driver("vfs");
    o.id_mapping = remap();
    let err = Store::open(o).unwrap_err().to_string();
    assert!(
        err.contains("restricts access to the remapped root uid/gid") && err.contains("o+x"),
        "{err}"
    );
}

#[test]
fn layers_land_with_host_owners_and_every_tar_is_the_containers() {
    if !need_root("layers_land_with_host_owners") {
        return;
    }
    for driver in drivers() {
        let data = data_root();
        let store = open(data.path(), driver);
        let input = layer_tar();
        let layer = store.register(&input[..], None).unwrap();

        // On disk: host owners.
        let payload = store
            .driver()
            .payload_root(layer.cache_id())
            .unwrap()
            .expect("both drivers have a payload dir");
        let at = |rel: &str| {
            let (u, g, _) = owner_mode(&payload.join(rel));
            (u, g)
        };
        assert_eq!(at(""), (100000, 200000), "{driver}: layer root");
        assert_eq!(at("etc/hostname"), (100000, 200000), "{driver}");
        assert_eq!(at("home"), (100000, 200000), "{driver}: implied dir");
        assert_eq!(at("home/user"), (101000, 201000), "{driver}");
        assert_eq!(at("home/user/notes"), (101000, 201000), "{driver}");
        assert_eq!(at("home/user/link"), (101000, 201000), "{driver}");
        assert_eq!(at("var/nobody"), (165534, 265534), "{driver}");

        // The layer's tar: the input, byte for byte.
        assert_eq!(read_all(layer.tar_stream().unwrap()), input, "{driver}");

        // A container on top: its root is the remapped root's, with an init layer too.
        let init = |p: &Path| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            std::fs::write(p.join("etc/hostname"), "init\n")?;
            std::os::unix::fs::lchown(p.join("etc/hostname"), Some(100000), Some(200000))?;
            Ok(())
        };
        let opts = CreateRwOptions {
            init: Some(&init),
            ..CreateRwOptions::default()
        };
        let rw = store
            .create_rw_layer("c1", Some(layer.chain_id()), &opts)
            .unwrap();
        let mnt = rw.mount("").unwrap();
        let (u, g, _) = owner_mode(&mnt);
        assert_eq!((u, g), (100000, 200000), "{driver}: RW root");
        // The container writes as its user 1000 (host 101000) and as root.
        std::fs::write(mnt.join("home/user/new"), "new\n").unwrap();
        std::os::unix::fs::lchown(mnt.join("home/user/new"), Some(101000), Some(201000)).unwrap();
        std::fs::write(mnt.join("rootfile"), "r\n").unwrap();
        std::os::unix::fs::lchown(mnt.join("rootfile"), Some(100000), Some(200000)).unwrap();
        // A deletion: overlay2's whiteout is made by the kernel as the mounter (host root,
        // outside the ranges); as in moby it is not mapped, so it does not fail the diff.
        std::fs::remove_file(mnt.join("var/nobody")).unwrap();
        let changes: Vec<String> = rw
            .changes()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert!(
            changes.contains(&"A /home/user/new".to_string()),
            "{changes:?}"
        );
        assert!(changes.contains(&"A /rootfile".to_string()), "{changes:?}");

        // The RW layer's diff: container owners again.
        let diff = read_all(rw.tar_stream().unwrap());
        let mut owners = std::collections::BTreeMap::new();
        for e in tar::Archive::new(&diff[..]).entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            owners.insert(
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                (h.uid().unwrap(), h.gid().unwrap()),
            );
        }
        assert_eq!(
            owners.get("home/user/new"),
            Some(&(1000, 1000)),
            "{driver}: {owners:?}"
        );
        assert_eq!(
            owners.get("rootfile"),
            Some(&(0, 0)),
            "{driver}: {owners:?}"
        );
        assert_eq!(
            owners.get("home/user/"),
            Some(&(1000, 1000)),
            "{driver}: {owners:?}"
        );

        // Committed: its DiffID is the digest of that tar, and it streams back identical.
        let committed = store.register(&diff[..], Some(layer.chain_id())).unwrap();
        let digest = layer_digest::Digester::sha256_of(&diff);
        assert_eq!(committed.diff_id().to_string(), digest.to_string());
        assert_eq!(read_all(committed.tar_stream().unwrap()), diff);

        // A host file outside the ranges (host root) cannot be taken into a diff: moby's
        // "Host ID 0 cannot be mapped to a container ID".
        std::fs::write(mnt.join("stray"), "x").unwrap();
        std::os::unix::fs::lchown(mnt.join("stray"), Some(0), Some(0)).unwrap();
        let mut stream = rw.tar_stream().unwrap();
        let mut sink = Vec::new();
        let err = std::io::Read::read_to_end(&mut stream, &mut sink).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("stray") && msg.contains("host ID 0 cannot be mapped"),
            "{driver}: {msg}"
        );
        drop(stream);
        rw.unmount().unwrap();
        store.release_rw_layer(rw).unwrap();
        store.release(committed).unwrap();
        store.release(layer).unwrap();
    }
}

#[test]
fn a_layer_whose_owners_the_ranges_cannot_hold_is_refused_and_leaves_nothing() {
    if !need_root("a_layer_whose_owners_the_ranges_cannot_hold_is_refused") {
        return;
    }
    for driver in drivers() {
        let data = data_root();
        let mut o = StoreOptions::new(data.path()).driver(driver);
        o.id_mapping = IdMapping::new(
            vec![IdRange::new(0, 100000, 1000)],
            vec![IdRange::new(0, 100000, 1000)],
        )
        .unwrap();
        let store = Store::open(o).unwrap();
        let err = store.register(&layer_tar()[..], None).unwrap_err();
        // The error and its causes, as layerctl prints them (no message repeats its cause).
        let msg = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(": ");
        assert!(
            msg.contains("home/user/") && msg.contains("container ID 1000 cannot be mapped"),
            "{driver}: {msg}"
        );
        assert!(store.map().is_empty());
        let home = store.driver_home().to_path_buf();
        let left: Vec<_> = store.driver().list().unwrap();
        assert!(
            left.is_empty(),
            "{driver}: driver dirs left: {left:?} in {}",
            home.display()
        );
        assert!(store.collect_garbage().unwrap().is_empty());
    }
}
