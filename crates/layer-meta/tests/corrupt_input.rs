//! Random garbage in every metadata file: every reader returns a value or a typed error, never
//! panics, and listings report the damage instead of skipping it.

use testkit::meta as common;

use std::fs;

use common::*;
use layer_meta::{Error, MetaOptions, MetaStore, MountRecord};
use rand::Rng;
use rand::seq::IndexedRandom;

/// Pieces that make near-valid content more likely than pure noise.
const PIECES: &[&[u8]] = &[
    b"sha256:",
    b"sha512:",
    b"0123456789abcdef",
    b"ABCDEF",
    b"-init",
    b"\n",
    b" ",
    b"\t",
    b"0",
    b"-",
    b"+",
    b"{",
    b"}",
    b"\"digest\":",
    b"null",
    b"\xff\xfe",
    b"\0",
    b"/",
    b"..",
    b"\xc2\xa0",
];

fn garbage(rng: &mut impl Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.random_range(0..8) {
        if rng.random_bool(0.8) {
            out.extend_from_slice(PIECES.choose(rng).unwrap());
        } else {
            out.extend((0..rng.random_range(1..80)).map(|_| rng.random::<u8>()));
        }
    }
    out
}

#[test]
fn random_corruption_never_panics() {
    let mut rng = rand::rng();
    let dir = tempfile::tempdir().unwrap();
    let store = MetaStore::open(&dir.path().join("layerdb"), MetaOptions::default()).unwrap();
    let ids = chain(3);
    for n in 0..3 {
        commit_layer(&store, &ids, n).unwrap();
    }
    let rec = MountRecord {
        mount_id: "a".repeat(64),
        init_id: Some(format!("{}-init", "a".repeat(64))),
        parent: None,
    };
    store.set_mount("m", &rec).unwrap();
    let layer_dir = store.layer_path(&ids[1]).unwrap();
    let mount_dir = store.root().join("mounts/m");
    let files: Vec<_> = [
        "diff",
        "size",
        "cache-id",
        "parent",
        "descriptor.json",
        "tar-split.json.gz",
    ]
    .iter()
    .map(|f| layer_dir.join(f))
    .chain(
        ["mount-id", "init-id", "parent"]
            .iter()
            .map(|f| mount_dir.join(f)),
    )
    .collect();
    let originals: Vec<_> = files.iter().map(|f| fs::read(f).ok()).collect();
    let (mut errors, mut oks) = (0, 0);
    for _ in 0..1000 {
        let i = rng.random_range(0..files.len());
        let bytes = garbage(&mut rng);
        fs::write(&files[i], &bytes).unwrap();
        let layer = store.layer(&ids[1]);
        let mount = store.mount("m");
        let listing = store.list_layers().unwrap();
        let mounts = store.list_mounts().unwrap();
        // Damage is either harmless (a value that round-trips) or reported, never dropped.
        assert_eq!(listing.layers.len() + listing.broken.len(), 3);
        assert_eq!(mounts.mounts.len() + mounts.broken.len(), 1);
        assert_eq!(layer.is_err(), listing.broken.len() == 1);
        assert_eq!(mount.is_err(), mounts.broken.len() == 1);
        for result in [layer.map(drop), mount.map(drop)] {
            match result {
                Ok(()) => oks += 1,
                Err(Error::Corrupt { path, .. }) => {
                    assert_eq!(path, files[i], "error names the damaged file");
                    errors += 1;
                }
                Err(other) => panic!(
                    "unexpected error kind for {:?}: {other}",
                    String::from_utf8_lossy(&bytes)
                ),
            }
        }
        let _ = std::io::copy(
            &mut store.tar_split_reader(&ids[1]).unwrap(),
            &mut std::io::sink(),
        );
        store.leftovers().unwrap();
        match &originals[i] {
            Some(original) => fs::write(&files[i], original).unwrap(),
            None => fs::remove_file(&files[i]).unwrap(),
        }
    }
    eprintln!("{errors} corrupt files reported, {oks} readings unaffected");
    assert!(
        errors > 500,
        "the generator should mostly produce invalid content"
    );
    assert_layer_intact(&store, &ids, 1);
    assert_eq!(store.mount("m").unwrap(), rec);
}
