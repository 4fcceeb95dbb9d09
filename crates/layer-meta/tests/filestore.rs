//! moby's `filestore_test.go` cases, plus the behaviour this crate adds (documented deviations
//! are marked "deviation").

use testkit::meta as common;

use std::fs;
use std::io::{Read, Write};

use common::*;
use layer_digest::ChainId;
use layer_meta::{
    Corruption, Descriptor, Durability, Error, LeftoverKind, MetaOptions, MetaStore, MountRecord,
    Reference, is_valid_mount_id,
};
use rustix::io::Errno;

fn open(dir: &std::path::Path) -> MetaStore {
    MetaStore::open(&dir.join("layerdb"), MetaOptions::default()).unwrap()
}

/// moby TestCommitFailure: a regular file named `sha256` makes Commit fail with ENOTDIR.
#[test]
fn commit_failure_enotdir() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fs::write(store.root().join("sha256"), b"was here first!").unwrap();
    let mut tx = store.start_transaction().unwrap();
    tx.set_size(0).unwrap();
    let err = tx.commit(&chain(1)[0]).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::NOTDIR.raw_os_error()), "{err}");
    // Nothing left behind: the failed transaction's write-set is gone.
    assert!(names(&store.root().join("tmp")).is_empty());
}

/// moby TestStartTransactionFailure: a regular file named `tmp` makes StartTransaction fail
/// with ENOTDIR; once removed, start and cancel succeed. (moby's prefix check on `tx.String()` is
/// inverted, a no-op; ours checks for real.)
#[test]
fn start_transaction_failure_enotdir() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fs::write(store.root().join("tmp"), b"was here first!").unwrap();
    let err = store.start_transaction().unwrap_err();
    assert_eq!(err.errno(), Some(Errno::NOTDIR.raw_os_error()), "{err}");
    fs::remove_file(store.root().join("tmp")).unwrap();
    let tx = store.start_transaction().unwrap();
    let ws = tx.path();
    assert!(ws.starts_with(store.root().join("tmp")));
    assert!(
        ws.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("write-set-")
    );
    assert!(ws.is_dir());
    tx.cancel().unwrap();
    assert!(!ws.exists());
}

/// moby TestGetOrphan: an empty committed layer with a cache-id is no orphan; renamed to
/// `<hex>-<64hex>-removing` it is one.
#[test]
fn get_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = &chain(1)[0];
    let tx = store.start_transaction().unwrap();
    tx.commit(id).unwrap();
    let layer_dir = store.layer_path(id).unwrap();
    fs::write(layer_dir.join("cache-id"), b"1").unwrap();
    assert!(store.orphans().unwrap().is_empty());
    let removing =
        store
            .root()
            .join("sha256")
            .join(format!("{}-{}-removing", id.hex(), "f".repeat(64)));
    fs::rename(&layer_dir, &removing).unwrap();
    let orphans = store.orphans().unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(&orphans[0].chain_id, id);
    assert_eq!(orphans[0].cache_id.as_deref(), Some("1"));
    assert_eq!(orphans[0].path, removing);
}

/// moby TestIsValidID.
#[test]
fn is_valid_id() {
    let hex = "1".repeat(64);
    assert!(is_valid_mount_id(&hex));
    assert!(is_valid_mount_id(&format!("{hex}-init")));
    for bad in [
        "1".repeat(63),
        "1".repeat(66),
        format!("{}F", "1".repeat(63)),
        format!("{}g", "1".repeat(63)),
        String::new(),
        "-init".into(),
    ] {
        assert!(!is_valid_mount_id(&bad), "{bad:?}");
    }
}

#[test]
fn roundtrip_every_field_and_docker_modes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("image/overlay2/layerdb");
    let store = MetaStore::open(&root, MetaOptions::default()).unwrap();
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&dir.path().join("image/overlay2")), 0o700);
    let ids = chain(3);
    for n in 0..3 {
        commit_layer(&store, &ids, n).unwrap();
    }
    for n in 0..3 {
        assert_layer_intact(&store, &ids, n);
    }
    let listing = store.list_layers().unwrap();
    assert!(listing.broken.is_empty());
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listing.ids(), want);
    assert_eq!(mode(&root.join("tmp")), 0o755);
    assert_eq!(mode(&root.join("sha256")), 0o755);
    let layer_dir = store.layer_path(&ids[1]).unwrap();
    assert_eq!(mode(&layer_dir), 0o700);
    assert_eq!(
        names(&layer_dir),
        ["cache-id", "diff", "parent", "size", "tar-split.json.gz"]
    );
    for f in names(&layer_dir) {
        assert_eq!(mode(&layer_dir.join(&f)), 0o644, "{f}");
    }
    // Exact bytes, no newline.
    assert_eq!(
        fs::read(layer_dir.join("diff")).unwrap(),
        diff(1).as_str().as_bytes()
    );
    assert_eq!(fs::read(layer_dir.join("size")).unwrap(), b"1000");
    assert_eq!(
        fs::read(layer_dir.join("parent")).unwrap(),
        ids[0].as_str().as_bytes()
    );
    assert_eq!(
        fs::read(layer_dir.join("cache-id")).unwrap(),
        cache_id(1).as_bytes()
    );
    // Go's gzip header: magic, deflate, no flags, mtime 0, OS unknown (255).
    let gz = fs::read(layer_dir.join("tar-split.json.gz")).unwrap();
    assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
    assert_eq!(&gz[4..8], &[0, 0, 0, 0]);
    assert_eq!(gz[9], 255);
    assert!(names(&root.join("tmp")).is_empty());
}

#[test]
fn descriptor_roundtrip_and_absent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = chain(2);
    commit_layer(&store, &ids, 0).unwrap();
    assert_eq!(store.descriptor(&ids[0]).unwrap(), None);
    let descriptor = Descriptor {
        media_type: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into(),
        size: 7,
        digest: Some(diff(9).into_digest()),
        urls: vec!["https://example.invalid/x".into()],
        ..Descriptor::default()
    };
    let mut tx = store.start_transaction().unwrap();
    fill(&mut tx, 1, Some(&ids[0])).unwrap();
    tx.set_descriptor(&descriptor).unwrap();
    tx.commit(&ids[1]).unwrap();
    assert_eq!(store.descriptor(&ids[1]).unwrap(), Some(descriptor.clone()));
    assert_eq!(store.layer(&ids[1]).unwrap().descriptor, Some(descriptor));
}

/// Metadata files are read whole up to their limit (4 KiB, 1 MiB for `descriptor.json`),
/// one byte more is `TooLarge`: the same through `layer` and the listing a store opens with,
/// however the read is chunked.
#[test]
fn metadata_files_read_whole_up_to_their_limit() {
    const SMALL: usize = 4096;
    const DESCRIPTOR: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = chain(2);
    commit_layer(&store, &ids, 0).unwrap();
    let descriptor = Descriptor {
        media_type: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into(),
        size: 7,
        digest: Some(diff(9).into_digest()),
        ..Descriptor::default()
    };
    let mut tx = store.start_transaction().unwrap();
    fill(&mut tx, 1, Some(&ids[0])).unwrap();
    tx.set_descriptor(&descriptor).unwrap();
    tx.commit(&ids[1]).unwrap();
    let layer_dir = store.layer_path(&ids[1]).unwrap();
    let listed = |store: &MetaStore| {
        let listing = store.list_layers().unwrap();
        let loaded = listing
            .layers
            .iter()
            .find(|r| r.chain_id == ids[1])
            .cloned();
        let broken = listing
            .broken
            .iter()
            .find(|b| b.chain_id == ids[1])
            .map(|b| b.error.to_string());
        (loaded, broken)
    };
    // `size` at its limit: 4,095 zeros then a digit (Go's ParseInt takes leading zeros).
    let mut size = vec![b'0'; SMALL - 1];
    size.push(b'7');
    fs::write(layer_dir.join("size"), &size).unwrap();
    assert_eq!(store.layer(&ids[1]).unwrap().size, 7);
    assert_eq!(listed(&store).0.expect("loads").size, 7);
    size.insert(0, b'0');
    fs::write(layer_dir.join("size"), &size).unwrap();
    let err = store.layer(&ids[1]).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { problem: Corruption::TooLarge { limit }, path }
            if *limit == SMALL as u64 && *path == layer_dir.join("size")),
        "{err:?}"
    );
    let (loaded, broken) = listed(&store);
    assert!(loaded.is_none());
    assert!(broken.expect("listed as broken").contains("size"));
    fs::write(layer_dir.join("size"), b"7").unwrap();
    // `descriptor.json` padded with JSON whitespace to exactly its limit, then one byte more.
    let mut json = fs::read(layer_dir.join("descriptor.json")).unwrap();
    assert!(json.len() < DESCRIPTOR);
    json.resize(DESCRIPTOR, b' ');
    fs::write(layer_dir.join("descriptor.json"), &json).unwrap();
    assert_eq!(
        store.layer(&ids[1]).unwrap().descriptor,
        Some(descriptor.clone())
    );
    assert_eq!(
        listed(&store).0.expect("loads").descriptor,
        Some(descriptor)
    );
    json.push(b' ');
    fs::write(layer_dir.join("descriptor.json"), &json).unwrap();
    let err = store.layer(&ids[1]).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { problem: Corruption::TooLarge { limit }, .. }
            if *limit == DESCRIPTOR as u64),
        "{err:?}"
    );
    assert!(listed(&store).0.is_none());
}

/// Go's os.Rename refuses an existing directory, even an empty one (moby/moby#44909).
#[test]
fn commit_never_replaces_existing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = chain(1);
    fs::create_dir_all(store.layer_path(&ids[0]).unwrap()).unwrap();
    let mut tx = store.start_transaction().unwrap();
    fill(&mut tx, 0, None).unwrap();
    let err = tx.commit(&ids[0]).unwrap_err();
    assert!(err.is_layer_exists(), "{err}");
    assert_eq!(err.errno(), Some(Errno::EXIST.raw_os_error()));
    assert!(err.to_string().contains(ids[0].hex()), "{err}");
    assert!(
        names(&store.layer_path(&ids[0]).unwrap()).is_empty(),
        "existing dir untouched"
    );
    assert!(
        names(&store.root().join("tmp")).is_empty(),
        "write-set removed"
    );
    // The empty directory is reported: as broken by the listing and as a blocking leftover.
    let listing = store.list_layers().unwrap();
    assert!(listing.layers.is_empty());
    assert_eq!(listing.broken.len(), 1);
    let leftovers = store.leftovers().unwrap();
    assert_eq!(leftovers.blocking_layers.len(), 1);
    assert!(
        leftovers.blocking_layers[0].reason.contains("missing"),
        "{}",
        leftovers.blocking_layers[0].reason
    );
    store
        .remove_leftover(&leftovers.blocking_layers[0])
        .unwrap();
    commit_layer(&store, &ids, 0).unwrap();
    assert_layer_intact(&store, &ids, 0);
    // Deviation: a regular file in the way is also EEXIST (Go would say ENOTDIR).
    let other = chain_id_of("other");
    fs::write(store.root().join("sha256").join(other.hex()), b"").unwrap();
    let err = store
        .start_transaction()
        .unwrap()
        .commit(&other)
        .unwrap_err();
    assert!(err.is_layer_exists(), "{err}");
}

fn chain_id_of(s: &str) -> ChainId {
    ChainId::new(layer_digest::Digester::sha256_of(s.as_bytes()))
}

#[test]
fn readers_report_path_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = chain(2);
    commit_layer(&store, &ids, 0).unwrap();
    commit_layer(&store, &ids, 1).unwrap();
    let layer_dir = store.layer_path(&ids[1]).unwrap();
    let corrupt = |file: &str, bytes: &[u8]| {
        let before = fs::read(layer_dir.join(file)).ok();
        fs::write(layer_dir.join(file), bytes).unwrap();
        let err = store.layer(&ids[1]).unwrap_err();
        match before {
            Some(b) => fs::write(layer_dir.join(file), b).unwrap(),
            None => fs::remove_file(layer_dir.join(file)).unwrap(),
        }
        assert!(
            err.to_string()
                .contains(&layer_dir.join(file).display().to_string()),
            "{err}"
        );
        err
    };
    let is = |err: Error, f: fn(&Corruption) -> bool| match err {
        Error::Corrupt { ref problem, .. } if f(problem) => {}
        other => panic!("unexpected {other:?}"),
    };
    is(corrupt("size", b"12\n"), |p| {
        matches!(p, Corruption::InvalidSize(_))
    });
    is(corrupt("size", b"1_000"), |p| {
        matches!(p, Corruption::InvalidSize(_))
    });
    // What Go's strconv.ParseInt accepts, moby loads, and so do we.
    for (odd, want) in [("00", 0), ("+7", 7), ("0012", 12), ("-1", -1)] {
        fs::write(layer_dir.join("size"), odd).unwrap();
        assert_eq!(store.layer(&ids[1]).unwrap().size, want, "size {odd:?}");
    }
    fs::write(layer_dir.join("size"), "0").unwrap();
    is(corrupt("size", b""), |p| matches!(p, Corruption::Empty));
    is(corrupt("diff", b"sha256:abc"), |p| {
        matches!(p, Corruption::InvalidDigest(_))
    });
    is(corrupt("diff", b"   "), |p| matches!(p, Corruption::Empty));
    is(corrupt("parent", b"md5:00"), |p| {
        matches!(p, Corruption::InvalidDigest(_))
    });
    is(corrupt("cache-id", b"\n"), |p| {
        matches!(p, Corruption::Empty)
    });
    is(corrupt("cache-id", b"../../etc"), |p| {
        matches!(p, Corruption::InvalidCacheId(_))
    });
    is(corrupt("cache-id", &[0xff; 10]), |p| {
        matches!(p, Corruption::NotUtf8)
    });
    is(corrupt("cache-id", &vec![b'a'; 5000]), |p| {
        matches!(p, Corruption::TooLarge { .. })
    });
    is(corrupt("descriptor.json", b"{not json"), |p| {
        matches!(p, Corruption::InvalidJson(_))
    });
    // Whitespace is trimmed, as moby does, except in `size`.
    fs::write(layer_dir.join("diff"), format!("{}\n", diff(1))).unwrap();
    assert_eq!(store.diff_id(&ids[1]).unwrap(), diff(1));
    // A missing required file names the file; a missing layer is LayerNotFound.
    fs::remove_file(layer_dir.join("size")).unwrap();
    match store.size(&ids[1]).unwrap_err() {
        Error::Corrupt {
            path,
            problem: Corruption::Missing,
        } => assert_eq!(path, layer_dir.join("size")),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        store
            .layer(&chain_id_of("nope"))
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .tar_split_reader(&chain_id_of("nope"))
            .unwrap_err()
            .is_not_found()
    );
    // A corrupt gzip stream is a read error naming the file, not a panic.
    fs::write(
        layer_dir.join("tar-split.json.gz"),
        b"\x1f\x8b\x08\x00garbage",
    )
    .unwrap();
    let mut out = Vec::new();
    let err = store
        .tar_split_reader(&ids[1])
        .unwrap()
        .read_to_end(&mut out)
        .unwrap_err();
    assert!(err.to_string().contains("tar-split.json.gz"), "{err}");
    // The broken layer is listed as broken, the good one as a layer.
    let listing = store.list_layers().unwrap();
    assert_eq!(listing.ids(), vec![ids[0].clone()]);
    assert_eq!(listing.broken.len(), 1);
    assert_eq!(listing.broken[0].chain_id, ids[1]);
}

#[test]
fn broken_layers_still_name_their_directory_and_parent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = chain(2);
    for n in 0..2 {
        commit_layer(&store, &ids, n).unwrap();
    }
    let layer_dir = store.layer_path(&ids[1]).unwrap();
    let cache = fs::read_to_string(layer_dir.join("cache-id")).unwrap();
    fs::write(layer_dir.join("size"), "12\n").unwrap();
    let listing = store.list_layers().unwrap();
    let b = &listing.broken[0];
    assert_eq!(b.chain_id, ids[1]);
    assert_eq!(b.cache_id, Reference::Named(cache));
    assert_eq!(b.parent, Reference::Named(ids[0].clone()));
    // A corrupt or empty name may be a damaged name of anything; a missing one names nothing.
    fs::write(layer_dir.join("parent"), "sha256:XYZ").unwrap();
    fs::write(layer_dir.join("cache-id"), " \n").unwrap();
    let listing = store.list_layers().unwrap();
    assert_eq!(listing.broken[0].cache_id, Reference::Unreadable);
    assert_eq!(listing.broken[0].parent, Reference::Unreadable);
    fs::remove_file(layer_dir.join("parent")).unwrap();
    fs::remove_file(layer_dir.join("cache-id")).unwrap();
    let listing = store.list_layers().unwrap();
    assert_eq!(listing.broken[0].parent, Reference::Absent);
    assert_eq!(listing.broken[0].cache_id, Reference::Absent);
}

#[test]
fn invalid_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tx = store.start_transaction().unwrap();
    for bad in ["", "a/b", "..", " x"] {
        assert!(
            matches!(tx.set_cache_id(bad), Err(Error::InvalidArgument { .. })),
            "{bad:?}"
        );
    }
    tx.set_cache_id("buildkit-any-string").unwrap();
    let sha512: ChainId = format!("sha512:{}", "a".repeat(128)).parse().unwrap();
    assert!(matches!(
        tx.commit(&sha512),
        Err(Error::UnsupportedAlgorithm(_))
    ));
    let rec = MountRecord {
        mount_id: "A".repeat(64),
        init_id: None,
        parent: None,
    };
    assert!(store.set_mount("m", &rec).is_err());
    let rec = MountRecord {
        mount_id: "a".repeat(64),
        init_id: None,
        parent: None,
    };
    assert!(store.set_mount("../x", &rec).is_err());
    assert!(store.set_mount("", &rec).is_err());
    assert!(names(&store.root().join("tmp")).is_empty());
}

#[test]
fn tar_split_writer_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = chain(1);
    let mut tx = store.start_transaction().unwrap();
    fill(&mut tx, 0, None).unwrap();
    assert!(
        matches!(tx.tar_split_writer(), Err(Error::TarSplit { .. })),
        "second writer refused"
    );
    tx.commit(&ids[0]).unwrap();
    assert_layer_intact(&store, &ids, 0);

    // Explicit finish, written from another thread.
    let store2 = open(&dir.path().join("two"));
    let mut tx = store2.start_transaction().unwrap();
    tx.set_diff_id(&diff(0)).unwrap();
    tx.set_size(0).unwrap();
    tx.set_cache_id(&cache_id(0)).unwrap();
    let mut w = tx.tar_split_writer().unwrap();
    std::thread::spawn(move || {
        w.write_all(&tar_split_json(0)).unwrap();
        w.finish().unwrap();
    })
    .join()
    .unwrap();
    tx.commit(&ids[0]).unwrap();
    let mut json = Vec::new();
    store2
        .tar_split_reader(&ids[0])
        .unwrap()
        .read_to_end(&mut json)
        .unwrap();
    assert_eq!(json, tar_split_json(0));

    // A writer outliving its transaction fails cleanly.
    let mut tx = store.start_transaction().unwrap();
    let mut w = tx.tar_split_writer().unwrap();
    let ws = tx.path();
    drop(tx);
    assert!(w.write_all(b"late").is_err());
    assert!(w.finish().is_err());
    assert!(!ws.exists(), "dropped transaction removes its write-set");
}

#[test]
fn mounts_roundtrip_atomic_replace_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = chain(1);
    let name = "8c2350f3cc55172ab267d2a61b0eec349e8dade4905c568bb7643a229e386d34";
    let m = "1de5bd2e7384d1735f8f63b5494461f202e34ba0b0c0d017eaeca6918e4a455e";
    let rec = MountRecord {
        mount_id: m.into(),
        init_id: Some(format!("{m}-init")),
        parent: Some(ids[0].clone()),
    };
    store.set_mount(name, &rec).unwrap();
    assert_eq!(store.mount(name).unwrap(), rec);
    let mdir = store.root().join("mounts").join(name);
    assert_eq!(mode(&store.root().join("mounts")), 0o755);
    assert_eq!(mode(&mdir), 0o755);
    assert_eq!(names(&mdir), ["init-id", "mount-id", "parent"]);
    assert_eq!(fs::read(mdir.join("mount-id")).unwrap(), m.as_bytes());
    assert_eq!(
        fs::read(mdir.join("init-id")).unwrap(),
        format!("{m}-init").as_bytes()
    );
    assert_eq!(
        fs::read(mdir.join("parent")).unwrap(),
        ids[0].as_str().as_bytes()
    );
    for f in names(&mdir) {
        assert_eq!(mode(&mdir.join(&f)), 0o644);
    }
    // Replace: the old optional files do not survive.
    let rec2 = MountRecord {
        mount_id: "b".repeat(64),
        init_id: None,
        parent: None,
    };
    store.set_mount(name, &rec2).unwrap();
    assert_eq!(store.mount(name).unwrap(), rec2);
    assert_eq!(names(&mdir), ["mount-id"]);
    let listing = store.list_mounts().unwrap();
    assert_eq!(listing.mounts, vec![(name.to_owned(), rec2)]);
    store.remove_mount(name).unwrap();
    store.remove_mount(name).unwrap(); // idempotent like os.RemoveAll
    assert!(store.mount(name).unwrap_err().is_not_found());
    assert!(names(&store.root().join("tmp")).is_empty());
    assert!(names(&store.root().join("mounts")).is_empty());
}

#[test]
fn half_written_and_corrupt_mounts_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mounts = store.root().join("mounts");
    fs::create_dir_all(mounts.join("empty")).unwrap();
    fs::create_dir_all(mounts.join("blank")).unwrap();
    fs::write(mounts.join("blank/mount-id"), b"").unwrap();
    fs::create_dir_all(mounts.join("bad")).unwrap();
    fs::write(mounts.join("bad/mount-id"), b"xyz").unwrap();
    fs::create_dir_all(mounts.join("badinit")).unwrap();
    fs::write(mounts.join("badinit/mount-id"), "a".repeat(64)).unwrap();
    fs::write(mounts.join("badinit/init-id"), "nope").unwrap();
    let listing = store.list_mounts().unwrap();
    assert!(listing.mounts.is_empty());
    let mut broken: Vec<_> = listing.broken.iter().map(|b| b.name.as_str()).collect();
    broken.sort();
    assert_eq!(broken, ["bad", "badinit", "blank", "empty"]);
    // What each still names: an unreadable mount-id may name any directory.
    let badinit = listing.broken.iter().find(|b| b.name == "badinit").unwrap();
    assert_eq!(badinit.mount_id, Reference::Named("a".repeat(64)));
    assert_eq!(badinit.init_id, Reference::Unreadable);
    assert_eq!(badinit.parent, Reference::Absent);
    let empty = listing.broken.iter().find(|b| b.name == "empty").unwrap();
    assert_eq!(empty.mount_id, Reference::Absent);
    let blank = listing.broken.iter().find(|b| b.name == "blank").unwrap();
    assert_eq!(blank.mount_id, Reference::Unreadable);
    let leftovers = store.leftovers().unwrap();
    let mut half: Vec<_> = leftovers
        .half_mounts
        .iter()
        .map(|l| l.rel_path.as_str())
        .collect();
    half.sort();
    assert_eq!(half, ["mounts/blank", "mounts/empty"]);
    for l in &leftovers.half_mounts {
        store.remove_leftover(l).unwrap();
    }
    assert_eq!(names(&mounts), ["bad", "badinit"]);
    assert!(names(&store.root().join("tmp")).is_empty());
}

#[test]
fn remove_layer_marker_and_finish() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = chain(2);
    commit_layer(&store, &ids, 0).unwrap();
    commit_layer(&store, &ids, 1).unwrap();
    let orphan = store.remove_layer(&ids[1]).unwrap();
    assert_eq!(orphan.cache_id.as_deref(), Some(cache_id(1).as_str()));
    let name = orphan
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(name.starts_with(&format!("{}-", ids[1].hex())) && name.ends_with("-removing"));
    assert_eq!(name.len(), 64 + 1 + 64 + "-removing".len());
    assert_eq!(store.list_layers().unwrap().ids(), vec![ids[0].clone()]);
    assert_eq!(store.orphans().unwrap(), vec![orphan.clone()]);
    assert_eq!(store.leftovers().unwrap().removing, vec![orphan.clone()]);
    store.finish_removal(&orphan).unwrap();
    assert!(store.orphans().unwrap().is_empty());
    assert!(store.remove_layer(&ids[1]).unwrap_err().is_not_found());
    // A -removing dir without cache-id is reported (deviation: moby skips it forever).
    let bare =
        store
            .root()
            .join("sha256")
            .join(format!("{}-{}-removing", ids[0].hex(), "0".repeat(64)));
    fs::create_dir(&bare).unwrap();
    let orphans = store.orphans().unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].cache_id, None);
    store.finish_removal(&orphans[0]).unwrap();
    assert!(!bare.exists());
}

#[test]
fn stale_write_sets_and_strays() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let live = store.start_transaction().unwrap();
    fs::create_dir_all(store.root().join("tmp/write-set-42")).unwrap();
    fs::write(store.root().join("tmp/write-set-42/diff"), b"x").unwrap();
    fs::create_dir_all(store.root().join("sha256/not-a-digest")).unwrap();
    fs::create_dir_all(store.root().join("sha256/mounts")).unwrap(); // ignored like moby
    let leftovers = store.leftovers().unwrap();
    assert_eq!(
        leftovers.stale_write_sets.len(),
        1,
        "the live transaction is not stale"
    );
    assert_eq!(leftovers.stale_write_sets[0].rel_path, "tmp/write-set-42");
    assert_eq!(
        leftovers.stale_write_sets[0].kind,
        LeftoverKind::StaleWriteSet
    );
    assert_eq!(leftovers.strays.len(), 1);
    assert_eq!(leftovers.strays[0].rel_path, "sha256/not-a-digest");
    // A leftover cannot be removed through the wrong kind or path.
    let mut forged = leftovers.stale_write_sets[0].clone();
    forged.rel_path = "sha256/../tmp/write-set-42".into();
    assert!(store.remove_leftover(&forged).is_err());
    for l in leftovers.all() {
        store.remove_leftover(l).unwrap();
    }
    let after = store.leftovers().unwrap();
    assert!(after.is_empty(), "{after:?}");
    assert!(live.path().exists());
    live.cancel().unwrap();
}

#[test]
fn every_durability_mode_commits() {
    for durability in [Durability::Full, Durability::Batch, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(
            &dir.path().join("l"),
            MetaOptions {
                durability,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(store.durability(), durability);
        let ids = chain(2);
        commit_layer(&store, &ids, 0).unwrap();
        commit_layer(&store, &ids, 1).unwrap();
        let rec = MountRecord {
            mount_id: "c".repeat(64),
            init_id: None,
            parent: Some(ids[1].clone()),
        };
        store.set_mount("x", &rec).unwrap();
        store.set_mount("x", &rec).unwrap();
        let reopened = MetaStore::open(&dir.path().join("l"), MetaOptions::default()).unwrap();
        assert_layer_intact(&reopened, &ids, 0);
        assert_layer_intact(&reopened, &ids, 1);
        assert_eq!(reopened.mount("x").unwrap(), rec);
        assert!(reopened.leftovers().unwrap().is_empty());
    }
}

#[test]
fn symlinked_subdirectory_is_refused_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, store.root().join("sha256")).unwrap();
    let mut tx = store.start_transaction().unwrap();
    fill(&mut tx, 0, None).unwrap();
    let err = tx.commit(&chain(1)[0]).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::NOTDIR.raw_os_error()), "{err}");
    assert!(
        names(&outside).is_empty(),
        "nothing written through the symlink"
    );
    assert!(
        store.list_layers().is_err(),
        "listing through a symlink is an error, not a silent empty list"
    );
}

#[test]
fn strays_in_tmp_and_mounts_are_reported_and_removable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fs::create_dir_all(store.root().join("tmp")).unwrap();
    fs::write(store.root().join("tmp/junk"), b"x").unwrap();
    fs::create_dir_all(store.root().join("mounts")).unwrap();
    fs::write(store.root().join("mounts/file"), b"x").unwrap();
    let leftovers = store.leftovers().unwrap();
    let mut strays: Vec<_> = leftovers
        .strays
        .iter()
        .map(|l| l.rel_path.as_str())
        .collect();
    strays.sort();
    assert_eq!(strays, ["mounts/file", "tmp/junk"]);
    assert_eq!(
        store.list_mounts().unwrap().broken.len(),
        1,
        "a file in mounts/ is a broken mount"
    );
    for l in &leftovers.strays {
        store.remove_leftover(l).unwrap();
    }
    assert!(store.leftovers().unwrap().is_empty());
}

#[test]
fn concurrent_commits_to_one_id_have_one_winner() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<MetaStore>();
    assert_send::<layer_meta::Transaction>();
    assert_send::<layer_meta::TarSplitWriter>();

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = chain(1);
    let results: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let ids = ids.clone();
            std::thread::spawn(move || commit_layer(&store, &ids, 0))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(Error::is_layer_exists)
    );
    assert_layer_intact(&store, &ids, 0);
    assert!(names(&store.root().join("tmp")).is_empty());
}

/// Stores of hundreds of layers are read on several threads: the listing is still complete,
/// sorted by chain ID, and a broken layer anywhere is reported as broken, not dropped.
#[test]
fn large_listing_is_complete_sorted_and_reports_broken() {
    let dir = tempfile::tempdir().unwrap();
    let store = MetaStore::open(
        &dir.path().join("layerdb"),
        MetaOptions {
            durability: Durability::None,
            ..MetaOptions::default()
        },
    )
    .unwrap();
    let n = 700;
    let ids = chain(n);
    for i in 0..n {
        commit_layer(&store, &ids, i).unwrap();
    }
    let mut sorted = ids.clone();
    sorted.sort();
    let broken = [&sorted[3], &sorted[350], &sorted[699]];
    for id in broken {
        fs::write(store.layer_path(id).unwrap().join("size"), b"x").unwrap();
    }
    let listing = store.list_layers().unwrap();
    let want: Vec<ChainId> = sorted
        .iter()
        .filter(|id| !broken.contains(id))
        .cloned()
        .collect();
    assert_eq!(listing.ids(), want);
    let got: Vec<&ChainId> = listing.broken.iter().map(|b| &b.chain_id).collect();
    assert_eq!(got, broken);
    for b in &listing.broken {
        assert!(b.error.to_string().contains("size"), "{}", b.error);
    }
    // Every record read through the threaded path equals a one-by-one read.
    for record in listing.layers.iter().step_by(97) {
        assert_eq!(record, &store.layer(&record.chain_id).unwrap());
    }
}

/// `interrupted()` (what every layerctl command checks on start) finds what an interrupted
/// transaction, mount or removal left, as `leftovers()` does, but loads no layer: an
/// unloadable layer directory is only `leftovers()`'s to report.
#[test]
fn interrupted_finds_leftovers_without_loading_layers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = chain(3);
    commit_layer(&store, &ids, 0).unwrap();
    let root = store.root().to_path_buf();
    fs::create_dir_all(root.join("tmp/write-set-123456789")).unwrap();
    fs::create_dir_all(root.join("mounts/half")).unwrap();
    fs::create_dir_all(root.join(format!(
        "sha256/{}-{}-removing",
        ids[1].hex(),
        "ab".repeat(32)
    )))
    .unwrap();
    // An empty layer directory: does not load.
    fs::create_dir_all(store.layer_path(&ids[2]).unwrap()).unwrap();

    let quick = store.interrupted().unwrap();
    let full = store.leftovers().unwrap();
    for found in [&quick, &full] {
        assert_eq!(found.stale_write_sets.len(), 1, "{found:?}");
        assert_eq!(found.half_mounts.len(), 1, "{found:?}");
        assert_eq!(found.removing.len(), 1, "{found:?}");
        assert_eq!(found.removing[0].chain_id, ids[1]);
    }
    assert!(quick.blocking_layers.is_empty(), "{quick:?}");
    assert_eq!(full.blocking_layers.len(), 1, "{full:?}");
    assert!(
        full.blocking_layers[0].rel_path.ends_with(ids[2].hex()),
        "{full:?}"
    );
}
