//! moby's layer package tests (moby-layer-spec §4.1), on every driver available here.

use testkit::store as common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use layer_digest::{ChainId, Digester, EMPTY_LAYER_DIFF_ID};
use layer_store::{CreateRwOptions, EmptyLayer, Error, InitFn, Store};

fn each_driver(test: impl Fn(&str)) {
    for d in drivers() {
        eprintln!("--- driver {d}");
        test(d);
    }
}

#[test]
fn mount_and_register() {
    each_driver(|d| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), d);
        let layer = create_layer(&store, None, |p| {
            write(p, "testfile.txt", b"some test data", 0o644)
        });
        let rw = store
            .create_rw_layer(
                "new-test-mount",
                Some(layer.chain_id()),
                &CreateRwOptions::default(),
            )
            .unwrap();
        let path = rw.mount("").unwrap();
        assert_eq!(
            std::fs::read(path.join("testfile.txt")).unwrap(),
            b"some test data"
        );
        rw.unmount().unwrap();
        store.release_rw_layer(rw).unwrap();
        store.release(layer).unwrap();
    });
}

#[test]
fn layer_release_cascades_in_order() {
    each_driver(|d| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), d);
        let l1 = create_layer(&store, None, |p| {
            write(p, "layer1.txt", b"layer 1 file", 0o644)
        });
        let l2 = create_layer(&store, Some(l1.chain_id()), |p| {
            write(p, "layer2.txt", b"layer 2 file", 0o644)
        });
        let (l1_md, l2_md) = (l1.metadata_record(), l2.metadata_record());
        assert!(store.release(l1).unwrap().is_empty());
        let l3a = create_layer(&store, Some(l2.chain_id()), |p| {
            write(p, "layer3.txt", b"layer 3a", 0o644)
        });
        let l3b = create_layer(&store, Some(l2.chain_id()), |p| {
            write(p, "layer3.txt", b"layer 3b", 0o644)
        });
        assert!(store.release(l2).unwrap().is_empty());
        assert_eq!(store.map().len(), 4);
        let l3b_md = l3b.metadata_record();
        assert_eq!(store.release(l3b).unwrap(), vec![l3b_md]);
        assert_eq!(store.map().len(), 3);
        let l3a_md = l3a.metadata_record();
        assert_eq!(store.release(l3a).unwrap(), vec![l3a_md, l2_md, l1_md]);
        assert!(store.map().is_empty());
    });
}

#[test]
fn store_restore() {
    each_driver(|d| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), d);
        let l1 = create_layer(&store, None, |p| {
            write(p, "layer1.txt", b"layer 1 file", 0o644)
        });
        let l2 = create_layer(&store, Some(l1.chain_id()), |p| {
            write(p, "layer2.txt", b"layer 2 file", 0o644)
        });
        let l3 = create_layer(&store, Some(l2.chain_id()), |p| {
            write(p, "layer3.txt", b"layer 3 file", 0o644)
        });
        store.release(l1).unwrap();
        store.release(l2).unwrap();
        let m = store
            .create_rw_layer(
                "some-mount_name",
                Some(l3.chain_id()),
                &CreateRwOptions::default(),
            )
            .unwrap();
        let path = m.mount("").unwrap();
        write(&path, "testfile.txt", b"nothing here", 0o644);
        m.unmount().unwrap();
        let (id3, diff3, size3, cache3) = (
            l3.chain_id().clone(),
            l3.diff_id().clone(),
            l3.size(),
            l3.cache_id().to_owned(),
        );
        let parents: Vec<ChainId> = std::iter::successors(l3.parent(), |l| l.parent())
            .map(|l| l.chain_id().clone())
            .collect();
        drop(store);

        let store = open(dir.path(), d);
        let l3b = store.get(&id3).unwrap();
        assert_eq!(
            (l3b.chain_id(), l3b.diff_id(), l3b.size(), l3b.cache_id()),
            (&id3, &diff3, size3, cache3.as_str())
        );
        let parents_b: Vec<ChainId> = std::iter::successors(l3b.parent(), |l| l.parent())
            .map(|l| l.chain_id().clone())
            .collect();
        assert_eq!(parents, parents_b);
        assert!(matches!(
            store.create_rw_layer("some-mount_name", Some(&id3), &CreateRwOptions::default()),
            Err(Error::MountNameConflict(_))
        ));
        let m2 = store.get_rw_layer("some-mount_name").unwrap();
        let p1 = m2.mount("").unwrap();
        let p2 = m2.mount("").unwrap();
        assert_eq!(p1, path);
        assert_eq!(p2, path);
        m2.unmount().unwrap();
        assert_eq!(
            std::fs::read(p1.join("testfile.txt")).unwrap(),
            b"nothing here"
        );
        m2.unmount().unwrap();
        assert!(store.release_rw_layer(m2).unwrap().is_empty());
        // Released again through a fresh handle: nothing left to release.
        assert!(matches!(
            store.get_rw_layer("some-mount_name"),
            Err(Error::MountDoesNotExist(_))
        ));
        let removed = store.release(l3b).unwrap();
        let ids: Vec<ChainId> = removed.iter().map(|m| m.chain_id.clone()).collect();
        let mut expect = vec![id3];
        expect.extend(parents);
        assert_eq!(ids, expect);
        // The previous store's handle was never released; it belongs to another store.
        drop(l3);
    });
}

#[test]
fn tar_stream_stability() {
    each_driver(|d| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), d);
        let tar1 = tar_of(&[
            ("etc/hosts", b"mydomain 10.0.0.1", 0o644),
            ("etc/profile", b"export PATH=/bin", 0o644),
        ]);
        let tar2 = tar_of(&[
            ("etc/hosts", b"mydomain 10.0.0.2", 0o644),
            ("etc/profile", b"export PATH=/bin:/usr/bin", 0o664),
            ("root/.bashrc", b"PATH=/usr/sbin:/usr/bin", 0o644),
        ]);
        let l1 = store.register(&tar1[..], None).unwrap();
        // A file added behind the store's back must not change the layer's stream.
        let home = store.driver_home().to_path_buf();
        let extra = if d == "vfs" {
            home.join("dir").join(l1.cache_id())
        } else {
            home.join(l1.cache_id()).join("diff")
        };
        write(&extra, "etc/shadow", b"root:::::::", 0o600);
        let l2 = store.register(&tar2[..], Some(l1.chain_id())).unwrap();
        let id1 = l1.chain_id().clone();
        store.release(l1).unwrap();
        assert_eq!(l2.diff_id().as_digest(), &Digester::sha256_of(&tar2));
        assert_eq!(read_all(l2.tar_stream().unwrap()), tar2);
        let l1 = store.get(&id1).unwrap();
        store.release(l2).unwrap();
        assert_eq!(read_all(l1.tar_stream().unwrap()), tar1);
        store.release(l1).unwrap();
    });
}

#[test]
fn register_existing_layer_returns_the_same_layer() {
    each_driver(|d| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), d);
        let base = create_layer(&store, None, |p| write(p, "testfile.txt", b"base", 0o644));
        let tar1 = tar_of(&[("etc/hosts", b"mydomain", 0o644)]);
        let a = store.register(&tar1[..], Some(base.chain_id())).unwrap();
        let b = store.register(&tar1[..], Some(base.chain_id())).unwrap();
        assert_eq!(a.layer(), b.layer());
        assert_eq!(store.reference_count(a.chain_id()), Some(2));
        // Base: its own reference + one child (the duplicate's parent count was given back).
        assert_eq!(store.reference_count(base.chain_id()), Some(2));
        // Exactly one driver directory per layer: the duplicate's was removed.
        let mut dirs = store.driver().list().unwrap();
        dirs.sort();
        let mut want = vec![base.cache_id().to_owned(), a.cache_id().to_owned()];
        want.sort();
        assert_eq!(dirs, want);
        store.release(a).unwrap();
        store.release(b).unwrap();
        store.release(base).unwrap();
        assert!(store.map().is_empty());
    });
}

#[test]
fn tar_stream_verification() {
    each_driver(|d| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), d);
        let tar1 = tar_of(&[("foo", b"abc", 0o644), ("bar", b"xyz", 0o644)]);
        let tar2 = tar_of(&[("foo", b"abc", 0o644), ("bar", b"xyz", 0o600)]);
        let l1 = store.register(&tar1[..], None).unwrap();
        let l2 = store.register(&tar2[..], None).unwrap();
        let ts = |l: &ChainId| {
            store
                .meta()
                .layer_path(l)
                .unwrap()
                .join("tar-split.json.gz")
        };
        std::fs::copy(ts(l1.chain_id()), ts(l2.chain_id())).unwrap();
        let mut s = l2.tar_stream().unwrap();
        let err = std::io::copy(&mut s, &mut std::io::sink()).unwrap_err();
        assert!(
            err.to_string().contains("could not verify layer data"),
            "{err}"
        );
        store.release(l1).unwrap();
        store.release(l2).unwrap();
    });
}

#[test]
fn mount_init_runs_in_the_init_layer() {
    each_driver(|d| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), d);
        let base = create_layer(&store, None, |p| {
            write(p, "testfile.txt", b"base data!", 0o644)
        });
        let init: &InitFn = &|root: &std::path::Path| {
            write(root, "testfile.txt", b"init data!", 0o777);
            Ok(())
        };
        let opts = CreateRwOptions {
            init: Some(init),
            ..Default::default()
        };
        let rw = store
            .create_rw_layer("fun-mount", Some(base.chain_id()), &opts)
            .unwrap();
        assert!(
            rw.init_id()
                .is_some_and(|i| i == format!("{}-init", rw.mount_id()))
        );
        let p = rw.mount("").unwrap();
        let meta = std::fs::metadata(p.join("testfile.txt")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o777);
        assert_eq!(
            std::fs::read(p.join("testfile.txt")).unwrap(),
            b"init data!"
        );
        rw.unmount().unwrap();
        store.release_rw_layer(rw).unwrap();
        store.release(base).unwrap();
        assert!(
            store.driver().list().unwrap().is_empty(),
            "init and RW dirs removed"
        );
    });
}

#[test]
fn mount_size_excludes_the_init_layer() {
    each_driver(|d| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), d);
        let base = create_layer(&store, None, |p| write(p, "file1", b"Base contents", 0o644));
        let init: &InitFn = &|root: &std::path::Path| {
            write(root, "file-init", "init content ✓".as_bytes(), 0o777);
            Ok(())
        };
        let opts = CreateRwOptions {
            init: Some(init),
            ..Default::default()
        };
        let rw = store
            .create_rw_layer("mount-size", Some(base.chain_id()), &opts)
            .unwrap();
        let p = rw.mount("").unwrap();
        write(&p, "file2", b"Mutable contents", 0o755);
        rw.unmount().unwrap();
        assert_eq!(rw.size().unwrap(), 16);
        store.release_rw_layer(rw).unwrap();
        store.release(base).unwrap();
    });
}

#[test]
fn mount_changes() {
    each_driver(|d| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), d);
        let base = create_layer(&store, None, |p| {
            write(p, "testfile1.txt", b"base data!", 0o644);
            write(p, "testfile2.txt", b"base data!", 0o644);
            write(p, "testfile3.txt", b"base data!", 0o644);
        });
        let init: &InitFn = &|root: &std::path::Path| {
            write(root, "testfile1.txt", b"init data!", 0o777);
            Ok(())
        };
        let opts = CreateRwOptions {
            init: Some(init),
            ..Default::default()
        };
        let rw = store
            .create_rw_layer("mount-changes", Some(base.chain_id()), &opts)
            .unwrap();
        let p = rw.mount("").unwrap();
        std::fs::set_permissions(
            p.join("testfile1.txt"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(p.join("testfile1.txt"), b"mount data!").unwrap();
        std::fs::remove_file(p.join("testfile2.txt")).unwrap();
        std::fs::set_permissions(
            p.join("testfile3.txt"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        write(&p, "testfile4.txt", b"mount data!", 0o644);
        let changes: Vec<String> = rw
            .changes()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            changes,
            [
                "C /testfile1.txt",
                "D /testfile2.txt",
                "C /testfile3.txt",
                "A /testfile4.txt"
            ]
        );
        rw.unmount().unwrap();
        store.release_rw_layer(rw).unwrap();
        store.release(base).unwrap();
    });
}

#[test]
fn mount_apply() {
    each_driver(|d| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), d);
        let base = create_layer(&store, None, |p| write(p, "file.txt", b"base", 0o644));
        let diff_layer = create_layer(&store, None, |p| {
            write(p, "newfile.txt", b"new data!", 0o644)
        });
        let rw = store
            .create_rw_layer(
                "mount-apply",
                Some(base.chain_id()),
                &CreateRwOptions::default(),
            )
            .unwrap();
        let mut ts = diff_layer.tar_stream().unwrap();
        rw.apply_diff(&mut ts).unwrap();
        let p = rw.mount("").unwrap();
        assert_eq!(std::fs::read(p.join("newfile.txt")).unwrap(), b"new data!");
        assert_eq!(std::fs::read(p.join("file.txt")).unwrap(), b"base");
        rw.unmount().unwrap();
        store.release_rw_layer(rw).unwrap();
        store.release(diff_layer).unwrap();
        store.release(base).unwrap();
    });
}

#[test]
fn empty_layer() {
    let e = EmptyLayer;
    assert_eq!(e.diff_id(), *EMPTY_LAYER_DIFF_ID);
    assert_eq!(e.chain_id().as_digest(), EMPTY_LAYER_DIFF_ID.as_digest());
    assert_eq!((e.size(), e.diff_size()), (0, 0));
    assert!(e.metadata().is_empty());
    assert_eq!(
        &Digester::sha256_of(&read_all(e.tar_stream())),
        EMPTY_LAYER_DIFF_ID.as_digest()
    );
    assert!(e.tar_stream_from(Some(&e.chain_id())).is_err());
}

#[test]
fn layer_size() {
    each_driver(|d| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), d);
        let l1 = create_layer(&store, None, |p| write(p, "file1", b"Base contents", 0o644));
        let l2 = create_layer(&store, Some(l1.chain_id()), |p| {
            write(p, "file2", b"Added contents", 0o644)
        });
        assert_eq!(store.driver().diff_size(l1.cache_id(), None).unwrap(), 13);
        assert_eq!(l1.size(), 13);
        assert_eq!(
            store
                .driver()
                .diff_size(l2.cache_id(), Some(l1.cache_id()))
                .unwrap(),
            14
        );
        assert_eq!(l2.size(), 27);
        store.release(l2).unwrap();
        store.release(l1).unwrap();
    });
}

#[test]
fn unknown_parent_and_max_depth() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = layer_store::StoreOptions::new(dir.path()).driver("vfs");
    o.max_depth = 3;
    let store = Store::open(o).unwrap();
    let missing: ChainId = format!("sha256:{}", "1".repeat(64)).parse().unwrap();
    let tar = tar_of(&[("a", b"a", 0o644)]);
    assert!(
        store
            .register(&tar[..], Some(&missing))
            .unwrap_err()
            .is_layer_does_not_exist()
    );
    let mut top = store.register(&tar[..], None).unwrap();
    for i in 0..2 {
        let t = tar_of(&[("a", format!("{i}").as_bytes(), 0o644)]);
        top = store.register(&t[..], Some(top.chain_id())).unwrap();
    }
    let t = tar_of(&[("b", b"b", 0o644)]);
    assert!(matches!(
        store.register(&t[..], Some(top.chain_id())),
        Err(Error::MaxDepthExceeded { .. })
    ));
    // The failed register left no driver directory behind.
    assert_eq!(store.driver().list().unwrap().len(), 3);
}
