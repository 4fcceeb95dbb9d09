//! moby's graphtest suite (spec §4.3) and the vfs-specific tests (spec §4.2 items 20–25)
//! against the vfs driver.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use graphdriver::graphtest::{self, Outcome, TempHome};
use graphdriver::{CreateOpts, Error, ProtoDriver};

fn vfs(
    tag: &str,
) -> (
    TempHome,
    graphdriver::naive::NaiveDiffDriver<graphdriver::vfs::VfsDriver>,
) {
    let home = TempHome::new(tag).unwrap();
    let driver = graphdriver::vfs::init(home.path(), &[]).unwrap();
    (home, driver)
}

fn report(name: &str, outcome: Outcome) {
    if let Outcome::Skipped(why) = outcome {
        // graphtest skips only what needs root (chown to other IDs) on vfs.
        let _ = testkit::gate::skip(testkit::gate::Reason::NotRoot, format!("{name}: {why}"));
    }
}

#[test]
fn vfs_setup_layout() {
    let (home, _d) = vfs("setup");
    let m = fs::metadata(home.path().join("vfs")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o710);
    let m = fs::metadata(home.path().join("vfs/dir")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o710);
}

#[test]
fn vfs_create_empty() {
    let (_h, d) = vfs("empty");
    report("create empty", graphtest::driver_test_create_empty(&d));
}

#[test]
fn vfs_create_base() {
    let (_h, d) = vfs("base");
    report("create base", graphtest::driver_test_create_base(&d));
}

#[test]
fn vfs_create_snap() {
    let (_h, d) = vfs("snap");
    report("create snap", graphtest::driver_test_create_snap(&d));
}

#[test]
fn vfs_deep_layer_read_32() {
    let (_h, d) = vfs("deep");
    report(
        "deep layer read",
        graphtest::driver_test_deep_layer_read(&d, 32),
    );
}

#[test]
fn vfs_diff_apply_10_files() {
    let (_h, d) = vfs("diffapply");
    report("diff apply", graphtest::driver_test_diff_apply(&d, 10));
}

#[test]
fn vfs_diff_apply_250_files() {
    let (_h, d) = vfs("diffapply250");
    report("diff apply", graphtest::driver_test_diff_apply(&d, 250));
}

#[test]
fn vfs_changes() {
    let (_h, d) = vfs("changes");
    report("changes", graphtest::driver_test_changes(&d));
}

#[test]
fn vfs_set_quota_is_skipped_not_failed() {
    let (_h, d) = vfs("quota");
    let outcome = graphtest::driver_test_set_quota(&d, false);
    // vfs never has quotas: the skip is the expected outcome here, not a case left unrun.
    assert!(
        matches!(outcome, Outcome::Skipped(_)),
        "vfs has no quota support: {outcome:?}"
    );
}

#[test]
fn vfs_options_like_moby() {
    let home = TempHome::new("opts").unwrap();
    let err = graphdriver::vfs::init(home.path(), &["vfs.xattrs=yes".into()]).unwrap_err();
    assert!(
        err.to_string()
            .contains("willing to accept the consequences"),
        "{err}"
    );
    let err = graphdriver::vfs::init(home.path(), &["bogus=1".into()]).unwrap_err();
    assert!(
        err.to_string().contains("unknown option bogus for vfs"),
        "{err}"
    );
    let d = graphdriver::vfs::init(home.path(), &["vfs.xattrs=i_want_broken_containers".into()])
        .unwrap();
    assert_eq!(
        d.status(),
        vec![(
            "Extended file attributes".to_string(),
            "best-effort".to_string()
        )]
    );
    let mut with_opt = CreateOpts::default();
    with_opt.storage_opt.insert("size".into(), "1G".into());
    assert!(matches!(
        d.create("x", None, &with_opt),
        Err(Error::InvalidOption(_))
    ));
    assert!(matches!(
        d.create_read_write("x", None, &with_opt),
        Err(Error::NotSupported(_))
    ));
    with_opt.storage_opt.clear();
    with_opt.storage_opt.insert("foo".into(), "1".into());
    assert!(matches!(
        d.create_read_write("x", None, &with_opt),
        Err(Error::InvalidOption(_))
    ));
    assert!(!d.exists("x"));
    assert!(matches!(
        d.create("../escape", None, &CreateOpts::default()),
        Err(Error::InvalidOption(_))
    ));
    assert!(matches!(d.get("missing", ""), Err(Error::NotFound(_))));
    d.remove("missing").unwrap();
}

#[test]
fn vfs_metadata_list_and_remove() {
    let (_h, d) = vfs("meta");
    d.create("a", None, &CreateOpts::default()).unwrap();
    d.create("b", Some("a"), &CreateOpts::default()).unwrap();
    assert_eq!(d.list().unwrap(), ["a", "b"]);
    assert!(d.metadata("a").unwrap()["SourceDir"].ends_with("vfs/dir/a"));
    assert!(matches!(
        d.create("c", Some("nope"), &CreateOpts::default()),
        Err(Error::NotFound(_))
    ));
    assert!(!d.exists("c"), "a failed create leaves nothing behind");
    // A read-only tree inside a layer is still removable.
    let dir = d.get("b", "").unwrap();
    fs::create_dir_all(dir.join("ro/deeper")).unwrap();
    fs::write(dir.join("ro/deeper/f"), "x").unwrap();
    fs::set_permissions(dir.join("ro/deeper"), fs::Permissions::from_mode(0o500)).unwrap();
    fs::set_permissions(dir.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
    d.put("b").unwrap();
    // A directory its owner cannot even read (as some images ship) too.
    fs::create_dir(dir.join("locked")).unwrap();
    fs::write(dir.join("locked/f"), "x").unwrap();
    fs::set_permissions(dir.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    d.remove("b").unwrap();
    assert!(!d.exists("b"));
}

/// moby TestXattrUnsupportedByBackingFS: on ramfs (no user xattrs) a layer carrying
/// `SCHILY.xattr.user.test` fails with EOPNOTSUPP, unless `vfs.xattrs=i_want_broken_containers`.
#[test]
fn vfs_xattr_unsupported_by_backing_fs() {
    use graphdriver::DiffDriver;
    use layer_archive::{Header, TarWriter};
    let home = TempHome::new("ramfs").unwrap();
    let mnt = home.path().join("ramfs");
    fs::create_dir(&mnt).unwrap();
    match rustix::mount::mount(
        "ramfs",
        &mnt,
        "ramfs",
        rustix::mount::MountFlags::empty(),
        None,
    ) {
        Ok(()) => {}
        Err(e) => {
            testkit::require!(testkit::gate::root("mounting a ramfs"));
            let _ = testkit::gate::lacking("ramfs", format!("cannot mount ramfs: {e}"));
            return;
        }
    }
    let run = || -> Result<(), String> {
        let mut tar = TarWriter::new(Vec::new());
        let mut h = Header::file("greeting", 12);
        h.xattrs.push((b"user.test".to_vec(), b"hello".to_vec()));
        tar.append(&h, Some(&mut &b"hello world\n"[..])).unwrap();
        let tar = tar.finish().unwrap();

        let strict = graphdriver::vfs::init(&mnt, &[]).map_err(|e| e.to_string())?;
        strict
            .create("strict", None, &CreateOpts::default())
            .unwrap();
        let err = strict
            .apply_diff("strict", None, &mut &tar[..])
            .unwrap_err()
            .to_string();
        if !err.contains("not supported") {
            return Err(format!("expected EOPNOTSUPP, got: {err}"));
        }
        strict.remove("strict").unwrap();
        drop(strict);

        let lenient =
            graphdriver::vfs::init(&mnt, &["vfs.xattrs=i_want_broken_containers".into()]).unwrap();
        lenient
            .create("lenient", None, &CreateOpts::default())
            .unwrap();
        let size = lenient
            .apply_diff("lenient", None, &mut &tar[..])
            .map_err(|e| e.to_string())?;
        assert_eq!(size, 12);
        let dir = lenient.get("lenient", "").unwrap();
        assert_eq!(fs::read(dir.join("greeting")).unwrap(), b"hello world\n");
        lenient.put("lenient").unwrap();
        Ok(())
    };
    let result = run();
    rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH).unwrap();
    result.unwrap();
}

/// vfs offers its layer directory as the payload root for tar-split reassembly.
#[test]
fn vfs_payload_root_is_the_layer_dir() {
    use graphdriver::DiffDriver;
    let (_h, d) = vfs("payload");
    d.create("l", None, &CreateOpts::default()).unwrap();
    let root = d
        .payload_root("l")
        .unwrap()
        .expect("vfs has a payload root");
    assert_eq!(root, d.get("l", "").unwrap());
    d.put("l").unwrap();
    assert!(d.payload_root("missing").is_err());
}
