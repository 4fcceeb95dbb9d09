//! The real Docker 20.10 data-root (`shared/fixtures/docker-root`): its images are read as
//! Docker lists them, and writing the same images into an empty root reproduces every file
//! byte for byte, with Docker's modes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use image_meta::{ImageId, ImageStore, Reference, TagChange};

const IMAGE_DIR: &str = "image/overlay2";
const V1: &str = "sha256:473def34baebdf86cfc9d587adb2466a9e442fc1adf0c0fe4691894f70702cbe";
const COMMITTED: &str = "sha256:f7cb1c1f6573e9b273a64270352e4682d96e3bf097173d901f5f8ff39b5792f3";
/// l3's chain ID: the top layer of peerchain:v1 (fixture README).
const V1_TOP: &str = "sha256:e8926eb50b2368bbff0760f545fec1c0ff58fa5484644ce6c1309f2ed6e474b4";
/// The commit layer's chain ID.
const COMMITTED_TOP: &str =
    "sha256:2592871b4d224c41c4a6e7d9062857cae0dc936e517a14d53fafbb04a3ef0e4f";

/// Extracts the fixture's image metadata (no layers, so no root needed).
fn extract() -> (tempfile::TempDir, PathBuf) {
    let tarball = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/docker-root/docker-root.tar.gz");
    assert!(
        tarball.exists(),
        "fixture missing: {} (shared/ must sit beside the workspace)",
        tarball.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .args(["--numeric-owner", "-xpzf"])
        .arg(&tarball)
        .arg("-C")
        .arg(dir.path())
        .arg(format!("{IMAGE_DIR}/imagedb"))
        .arg(format!("{IMAGE_DIR}/repositories.json"))
        .arg(format!("{IMAGE_DIR}/distribution"))
        .status()
        .expect("run tar");
    assert!(status.success(), "tar failed: {status}");
    let root = dir.path().to_owned();
    (dir, root)
}

/// Every file under `dir`: relative path → (mode, bytes); directories with their mode.
fn files(dir: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                stack.push(e.path());
                out.insert(rel, (mode, None));
            } else {
                out.insert(rel, (mode, Some(fs::read(e.path()).unwrap())));
            }
        }
    }
    out
}

#[test]
fn reads_the_fixture_as_docker_lists_it() {
    let (_tmp, root) = extract();
    let store = ImageStore::new(&root, "overlay2");
    let listing = store.images().unwrap();
    assert!(listing.broken.is_empty(), "{:?}", listing.broken);
    let ids: Vec<String> = listing.images.iter().map(|i| i.id.to_string()).collect();
    assert_eq!(ids, [V1, COMMITTED]);

    let v1 = &listing.images[0];
    assert_eq!(v1.config.diff_ids.len(), 3);
    assert_eq!(v1.chain_id().unwrap().as_str(), V1_TOP);
    assert_eq!(v1.parent, None);
    assert_eq!(v1.last_updated, None);
    assert_eq!(v1.config.created.as_deref(), Some("2024-01-01T00:00:00Z"));

    let committed = &listing.images[1];
    assert_eq!(committed.chain_id().unwrap().as_str(), COMMITTED_TOP);
    assert_eq!(
        committed
            .parent
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some(V1)
    );
    assert_eq!(
        committed.last_updated.as_deref(),
        Some("2026-11-28T02:32:02.021309492Z")
    );
    assert!(committed.config.is_valid_parent(&v1.config));
    assert_eq!(
        store.children(&v1.id).unwrap(),
        std::slice::from_ref(&committed.id)
    );

    let repos = store.repositories().unwrap();
    let tags: Vec<(String, String)> = repos
        .all()
        .iter()
        .map(|(r, id)| (r.familiar_string(), id.to_string()))
        .collect();
    assert_eq!(
        tags,
        [
            ("peerchain:committed".to_owned(), COMMITTED.to_owned()),
            ("peerchain:v1".to_owned(), V1.to_owned()),
        ]
    );
    let by_full = Reference::parse_normalized("docker.io/library/peerchain:v1").unwrap();
    assert_eq!(repos.get(&by_full).unwrap().to_string(), V1);
    assert!(store.leftovers().unwrap().is_empty());
}

/// What `docker load` + `docker commit` wrote, written again by this crate into an empty
/// root: the same files, the same bytes, the same modes.
#[test]
fn writes_the_fixture_byte_for_byte() {
    let (_tmp, root) = extract();
    let theirs = root.join(IMAGE_DIR);
    let fixture = ImageStore::new(&root, "overlay2");

    let out = tempfile::tempdir().unwrap();
    let ours = ImageStore::new(out.path(), "overlay2");
    // The daemon creates these at start-up.
    for d in [
        "imagedb/content/sha256",
        "imagedb/metadata/sha256",
        "distribution",
    ] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(ours.dir().join(d))
            .unwrap();
    }
    let v1: ImageId = V1.parse().unwrap();
    let committed: ImageId = COMMITTED.parse().unwrap();
    for id in [&v1, &committed] {
        let bytes = fixture.imagedb().config_bytes(id).unwrap();
        assert_eq!(&ours.imagedb().create(&bytes).unwrap(), id);
    }
    ours.imagedb().set_parent(&committed, &v1).unwrap();
    let when = fixture
        .imagedb()
        .metadata(&committed, image_meta::LAST_UPDATED)
        .unwrap()
        .unwrap();
    ours.imagedb()
        .set_metadata(&committed, image_meta::LAST_UPDATED, &when)
        .unwrap();
    let mut repos = ours.repositories().unwrap();
    let tag = |s: &str| Reference::parse_normalized(s).unwrap();
    assert_eq!(
        repos.add_tag(&tag("peerchain:v1"), &v1, true).unwrap(),
        TagChange::Added
    );
    assert_eq!(
        repos
            .add_tag(&tag("peerchain:committed"), &committed, true)
            .unwrap(),
        TagChange::Added
    );
    repos.save().unwrap();

    let mut want = files(&theirs);
    // The fixture's tarball holds only the data-root's image metadata; the layerdb is not
    // ours to write here.
    want.retain(|k, _| !k.starts_with("layerdb"));
    assert_eq!(files(ours.dir()), want);

    // And the lastUpdated we would write ourselves has Go's form.
    let t = image_meta::time::format_rfc3339_nano(std::time::SystemTime::now());
    assert!(image_meta::time::is_rfc3339(&t), "{t}");
}

#[test]
fn retag_moves_and_untag_removes() {
    let (_tmp, root) = extract();
    let store = ImageStore::new(&root, "overlay2");
    let mut repos = store.repositories().unwrap();
    let v1: ImageId = V1.parse().unwrap();
    let committed: ImageId = COMMITTED.parse().unwrap();
    let t = Reference::parse_normalized("peerchain:v1").unwrap();
    // Without force a moved tag is a conflict; with force it moves.
    assert!(repos.add_tag(&t, &committed, false).is_err());
    assert_eq!(
        repos.add_tag(&t, &committed, true).unwrap(),
        TagChange::Moved(V1.to_owned())
    );
    assert!(repos.references(&v1).is_empty());
    assert_eq!(repos.references(&committed).len(), 2);
    // Digest references never move and are not tags.
    let d = Reference::parse_normalized(&format!("peerchain@{COMMITTED}")).unwrap();
    assert!(repos.add_tag(&d, &v1, true).is_err());
    assert_eq!(repos.add_digest(&d, &committed).unwrap(), TagChange::Added);
    assert!(repos.add_digest(&d, &v1).is_err());
    assert!(
        repos
            .add_tag(&Reference::parse_normalized("sha256:x").unwrap(), &v1, true)
            .is_err()
    );
    assert_eq!(repos.delete_image(&committed).len(), 3);
    assert!(repos.all().is_empty());
    repos.save().unwrap();
    assert_eq!(
        fs::read(store.repositories_path()).unwrap(),
        br#"{"Repositories":{}}"#
    );

    // Deleting the parent image unlinks its child, as Docker does.
    store.delete_image(&v1).unwrap();
    assert_eq!(store.imagedb().parent(&committed).unwrap(), None);
    assert_eq!(store.imagedb().ids().unwrap(), [committed]);
}

#[test]
fn a_tampered_config_is_reported_not_read() {
    let (_tmp, root) = extract();
    let store = ImageStore::new(&root, "overlay2");
    let path = store
        .imagedb()
        .dir()
        .join("content/sha256")
        .join(&V1["sha256:".len()..]);
    let mut bytes = fs::read(&path).unwrap();
    bytes.push(b' ');
    fs::write(&path, bytes).unwrap();
    // A leftover of an interrupted write is skipped by the listing and found as a leftover.
    fs::write(path.with_file_name(".tmp-abc123"), b"x").unwrap();
    let listing = store.images().unwrap();
    assert_eq!(listing.images.len(), 1);
    assert_eq!(listing.broken.len(), 1);
    assert!(!listing.broken[0].1.is_io());
    assert_eq!(store.remove_leftovers().unwrap().len(), 1);
    assert!(store.leftovers().unwrap().is_empty());
}
