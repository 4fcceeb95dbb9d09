//! Owners through an ID mapping (Docker's `--userns-remap`) and recorded owners (a single-ID
//! user namespace): apply puts them on disk, a walk takes them back to the container's.
//!
//! Inputs are built and outputs read with the `tar` crate, an independent codec.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use layer_archive::idmap::{IdMapping, IdRange};
use layer_archive::owners::ContainerOwners;
use layer_archive::walk::{NoConversion, WalkOptions, XattrPolicy, tar_directory};
use layer_archive::{ApplyOptions, Error, WhiteoutFormat, apply_layer};

/// Container root is host 100000 (uids) and 200000 (gids), 65536 IDs each: distinct bases,
/// so a UID/GID mix-up shows.
fn remap() -> IdMapping {
    IdMapping::new(
        vec![IdRange::new(0, 100000, 65536)],
        vec![IdRange::new(0, 200000, 65536)],
    )
    .unwrap()
}

/// Tests that chown to other IDs need root; says so once and returns false elsewhere, and
/// fails under CI, where they must run.
fn need_root(test: &str) -> bool {
    testkit::gate::root(&format!("{test}: chown to other IDs")).is_ok()
}

enum Kind {
    Dir,
    File(&'static [u8]),
    Symlink(&'static str),
    Fifo,
}

fn layer(entries: &[(&str, Kind, u64, u64)]) -> Vec<u8> {
    let mut t = testkit::tar::Tar::new().mtime(1_700_000_000);
    for (name, kind, uid, gid) in entries {
        t = t.owner(*uid, *gid);
        t = match kind {
            Kind::Dir => t.dir(name),
            Kind::File(data) => t.file(name, data),
            Kind::Symlink(target) => t.symlink(name, target),
            Kind::Fifo => t.entry(tar::EntryType::Fifo, name, "", 0o600, b""),
        };
    }
    t.build()
}

fn owners_on_disk(root: &Path, rel: &str) -> (u32, u32) {
    let m = std::fs::symlink_metadata(root.join(rel)).unwrap();
    (m.uid(), m.gid())
}

/// `(name, uid, gid)` of every entry of a tar, in order.
fn tar_owners(tar: &[u8]) -> Vec<(String, u64, u64)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.uid().unwrap(),
                h.gid().unwrap(),
            )
        })
        .collect()
}

fn sample() -> Vec<u8> {
    layer(&[
        ("etc/", Kind::Dir, 0, 0),
        ("etc/passwd", Kind::File(b"root\n"), 0, 0),
        ("home/user/", Kind::Dir, 1000, 1000),
        ("home/user/notes", Kind::File(b"hi\n"), 1000, 100),
        ("home/user/link", Kind::Symlink("notes"), 1000, 1000),
        ("var/nobody", Kind::File(b"n\n"), 65534, 65534),
        ("var/pipe", Kind::Fifo, 65534, 0),
    ])
}

#[test]
fn remapped_apply_puts_host_owners_on_disk_and_the_walk_takes_them_back() {
    if !need_root("remapped_apply_puts_host_owners_on_disk") {
        return;
    }
    let ids = remap();
    for whiteouts in [WhiteoutFormat::Plain, WhiteoutFormat::Overlay] {
        let root = tempfile::tempdir().unwrap();
        let opts = ApplyOptions {
            whiteouts,
            id_map: ids.clone(),
            ..ApplyOptions::default()
        };
        apply_layer(root.path(), &mut &sample()[..], &opts).unwrap();
        let at = |rel| owners_on_disk(root.path(), rel);
        assert_eq!(at("etc"), (100000, 200000));
        assert_eq!(at("etc/passwd"), (100000, 200000));
        // Implied directories belong to the remapped root.
        assert_eq!(at("home"), (100000, 200000));
        assert_eq!(at("var"), (100000, 200000));
        assert_eq!(at("home/user"), (101000, 201000));
        assert_eq!(at("home/user/notes"), (101000, 200100));
        assert_eq!(at("home/user/link"), (101000, 201000));
        assert_eq!(at("var/nobody"), (165534, 265534));
        assert_eq!(at("var/pipe"), (165534, 200000));

        // Walked back through the mapping: the container's owners again.
        let mut owners = ContainerOwners::new(&ids, false, NoConversion);
        let tar = tar_directory(
            root.path(),
            Vec::new(),
            &WalkOptions::default(),
            &mut owners,
        )
        .unwrap();
        let got = tar_owners(&tar);
        let want = [
            ("etc/", 0, 0),
            ("etc/passwd", 0, 0),
            ("home/", 0, 0),
            ("home/user/", 1000, 1000),
            ("home/user/link", 1000, 1000),
            ("home/user/notes", 1000, 100),
            ("var/", 0, 0),
            ("var/nobody", 65534, 65534),
            ("var/pipe", 65534, 0),
        ];
        let want: Vec<(String, u64, u64)> = want
            .iter()
            .map(|(n, u, g)| (n.to_string(), *u, *g))
            .collect();
        assert_eq!(got, want, "{whiteouts:?}");
    }
}

#[test]
fn an_owner_outside_the_ranges_is_refused_naming_the_entry() {
    if !need_root("an_owner_outside_the_ranges_is_refused") {
        return;
    }
    let ids = IdMapping::new(
        vec![IdRange::new(0, 100000, 1000)],
        vec![IdRange::new(0, 100000, 1000)],
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let tar = layer(&[
        ("ok", Kind::File(b"x"), 999, 999),
        ("big", Kind::File(b"x"), 1000, 0),
    ]);
    let opts = ApplyOptions {
        id_map: ids,
        ..ApplyOptions::default()
    }
    .with_layer("L");
    let err = apply_layer(root.path(), &mut &tar[..], &opts).unwrap_err();
    match &err {
        Error::BadEntry {
            layer,
            entry,
            reason,
        } => {
            assert_eq!(layer, "L");
            assert_eq!(entry, "big");
            assert!(
                reason.contains("container ID 1000 cannot be mapped to a host ID"),
                "{reason}"
            );
        }
        other => panic!("want BadEntry, got {other:?}"),
    }
    // Refused before it was created.
    assert!(!root.path().join("big").exists());
    assert_eq!(owners_on_disk(root.path(), "ok"), (100999, 100999));
}

#[test]
fn a_host_owner_outside_the_ranges_fails_the_walk_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("stray"), "x").unwrap();
    // Our own IDs are not in these ranges (unless we happen to be 500000).
    let ids = IdMapping::new(
        vec![IdRange::new(0, 500000, 10)],
        vec![IdRange::new(0, 500000, 10)],
    )
    .unwrap();
    let mut owners = ContainerOwners::new(&ids, false, NoConversion);
    let err = tar_directory(
        root.path(),
        Vec::new(),
        &WalkOptions::default(),
        &mut owners,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("stray"), "{msg}");
    assert!(msg.contains("cannot be mapped to a container ID"), "{msg}");
}

fn xattr(path: &Path, name: &str) -> Option<String> {
    let mut buf = [0u8; 256];
    rustix::fs::lgetxattr(path, name, &mut buf[..])
        .ok()
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Recording owners (what a single-ID user namespace uses) without being in one: the same
/// code path, checked as root where user xattrs work on any filesystem we test on.
#[test]
fn recorded_owners_live_in_the_override_xattr_and_come_back_in_the_walk() {
    if !need_root("recorded_owners_live_in_the_override_xattr") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut input = sample();
    // A tar that tries to plant its own owner claim: the xattr is ours in this mode.
    let claims = testkit::tar::Tar::new()
        .pax(&[(
            "SCHILY.xattr.user.containers.override_stat",
            b"4242:4242:0644:file",
        )])
        .file("claims", b"")
        .build();
    input.truncate(input.len() - 1024);
    input.extend_from_slice(&claims);
    let opts = ApplyOptions {
        record_owners: true,
        ..ApplyOptions::default()
    };
    apply_layer(root.path(), &mut &input[..], &opts).unwrap();
    let me = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    for rel in [
        "etc/passwd",
        "home/user",
        "home/user/notes",
        "home/user/link",
        "var/pipe",
    ] {
        assert_eq!(owners_on_disk(root.path(), rel), me, "{rel}: no chown");
    }
    let x = |rel: &str| xattr(&root.path().join(rel), "user.containers.override_stat");
    assert_eq!(x("home/user").as_deref(), Some("1000:1000:0755:dir"));
    assert_eq!(x("home/user/notes").as_deref(), Some("1000:100:0644:file"));
    assert_eq!(x("var/nobody").as_deref(), Some("65534:65534:0644:file"));
    assert_eq!(
        x("etc/passwd"),
        None,
        "root's owner is the creator's: nothing to record"
    );
    assert_eq!(x("claims"), None, "the tar's claim is not applied");

    // Every xattr archived, still the override one stays out; owners come from it.
    let walk = WalkOptions {
        xattrs: XattrPolicy::All,
        ..WalkOptions::default()
    };
    let ids = IdMapping::identity();
    let mut owners = ContainerOwners::new(&ids, true, NoConversion);
    let tar = tar_directory(root.path(), Vec::new(), &walk, &mut owners).unwrap();
    let got = tar_owners(&tar);
    let find = |n: &str| got.iter().find(|(name, ..)| name == n).unwrap().clone();
    assert_eq!(find("home/user/"), ("home/user/".into(), 1000, 1000));
    assert_eq!(
        find("home/user/notes"),
        ("home/user/notes".into(), 1000, 100)
    );
    assert_eq!(find("var/nobody"), ("var/nobody".into(), 65534, 65534));
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if let Some(ext) = e.pax_extensions().unwrap() {
            for rec in ext {
                let key = rec.unwrap().key().unwrap().to_string();
                assert!(!key.contains("override_stat"), "{key} leaked into the tar");
            }
        }
    }

    // A directory re-applied as root's drops its stale record.
    let again = layer(&[("home/user/", Kind::Dir, 0, 0)]);
    apply_layer(root.path(), &mut &again[..], &opts).unwrap();
    assert_eq!(x("home/user"), None);
}
